//! The upstream client: list refs and fetch everything with gix-protocol (v2, falling back to
//! whatever the server speaks), receiving the pack straight into the store
//! ([`super::inbound`]). Blocking: run on a blocking thread.

use super::inbound::PackSink;
use crate::odb::ingest::{self, IngestError, Received};
use crate::refs::RefEntry;
use gix_hash::ObjectId;
use gix_protocol::handshake::Ref;
use gix_protocol::transport::{Protocol, Service};
use std::collections::{BTreeMap, BTreeSet};

/// What an upstream had (refs and HEAD as in [`Listing`]).
#[derive(Debug, Default)]
pub(crate) struct Fetched {
    pub refs: BTreeMap<String, RefEntry>,
    pub head_symref: Option<String>,
    pub head_oid: Option<gix_hash::ObjectId>,
    /// The received pack, `None` for an empty repository.
    pub pack: Option<Received>,
}

pub use super::upstream::{FetchError, Listing};

/// An upstream failure: [`FetchError::NotFound`] only when upstream answered HTTP 404 (found
/// in the error's chain as the status of the HTTP client's error, never guessed from text: an
/// upstream's 500 whose body says "not found", or a host name with 404 in it, is an upstream
/// failure, which is not cached as a missing repository).
fn upstream_err<E: std::error::Error + 'static>(url: &str, e: E) -> FetchError {
    if http_status(&e) == Some(404) {
        FetchError::NotFound(url.to_string())
    } else {
        FetchError::Upstream(url.to_string(), format!("{e:#}"))
    }
}

/// The HTTP status of the first HTTP client error in `e`'s chain (through I/O errors' inner
/// errors and gitoxide's error trees).
fn http_status(e: &(dyn std::error::Error + 'static)) -> Option<u16> {
    let mut todo: Vec<&(dyn std::error::Error + 'static)> = vec![e];
    let mut seen = 0;
    while let Some(err) = todo.pop() {
        seen += 1;
        if seen > 256 {
            break;
        }
        if let Some(r) = err.downcast_ref::<reqwest::Error>()
            && let Some(s) = r.status()
        {
            return Some(s.as_u16());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            todo.push(inner);
        }
        if let Some(g) = err.downcast_ref::<gix_error::Error>() {
            todo.extend(g.iter_errors());
        }
        if let Some(src) = err.source() {
            todo.push(src);
        }
    }
    None
}

/// Which refs to mirror: those starting with one of the prefixes (all when empty). Sent to
/// the upstream as `ref-prefix` in protocol v2, and applied again to what comes back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefPrefixes(pub Vec<String>);

impl Default for RefPrefixes {
    /// `HEAD`, branches and tags: what `go get` and `git clone` need; not GitHub's
    /// `refs/pull/*` and the like.
    fn default() -> Self {
        RefPrefixes(vec![
            "HEAD".into(),
            "refs/heads/".into(),
            "refs/tags/".into(),
        ])
    }
}

impl RefPrefixes {
    /// Whether ref `name` is mirrored.
    pub fn matches(&self, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|p| name.starts_with(p.as_str()))
    }
}

/// Time limits for talking to an upstream (HTTP transports).
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// Longest wait for a connection to be established.
    pub connect: std::time::Duration,
    /// A transfer slower than 1 KiB/s for this long is aborted (a trickling upstream).
    pub idle: std::time::Duration,
    /// The longest a whole fill or refresh may talk to upstream.
    pub total: std::time::Duration,
    /// The largest pack a fill or refresh accepts (`--max-fill-bytes`).
    pub max_pack_bytes: u64,
}

impl Default for Deadlines {
    fn default() -> Self {
        Deadlines {
            connect: std::time::Duration::from_secs(10),
            idle: std::time::Duration::from_secs(30),
            total: std::time::Duration::from_secs(30 * 60),
            max_pack_bytes: u64::MAX,
        }
    }
}

/// A connection to an upstream, whatever its transport.
type Transport = Box<dyn gix_transport::client::blocking_io::Transport + Send>;

/// The HTTP transport's settings: the time limits, the agent, and for an upstream no rule
/// trusts, no redirects and only public addresses (the policy's resolver, no proxy).
fn http_options(
    deadlines: Deadlines,
    trusted: bool,
    trust: &std::sync::Arc<crate::upstream::creds::Trust>,
) -> gix_transport::client::blocking_io::http::Options {
    let roots = trust.clone();
    gix_transport::client::blocking_io::http::Options {
        connect_timeout: Some(deadlines.connect),
        low_speed_limit_bytes_per_second: 1024,
        low_speed_time_seconds: deadlines.idle.as_secs().max(1),
        user_agent: Some(crate::AGENT.into()),
        follow_redirects: if trusted {
            Default::default()
        } else {
            gix_transport::client::blocking_io::http::options::FollowRedirects::None
        },
        backend: Some({
            let opts = gix_transport::client::blocking_io::http::reqwest::Options {
                configure_client: Some(Box::new(move |b: reqwest::blocking::ClientBuilder| {
                    let b = roots.with_roots_blocking(b);
                    Ok(if trusted {
                        b
                    } else {
                        b.dns_resolver(crate::upstream::policy::public_resolver())
                            .no_proxy()
                    })
                })),
                configure_request: None,
            };
            std::sync::Arc::new(std::sync::Mutex::new(opts))
                as std::sync::Arc<std::sync::Mutex<dyn std::any::Any + Send + Sync>>
        }),
        ..Default::default()
    }
}

/// Give the transport the upstream's credentials, if any. They live apart from the URL
/// (which is logged and stored): rule userinfo or the netrc entry of the host. They are only
/// ever sent over https (gix refuses clear-text credentials anyway).
fn send_credentials(transport: &mut Transport, trust: &crate::upstream::creds::Trust, url: &str) {
    if let Some(s) = trust.secret_for(url) {
        if url.starts_with("https://") {
            let _ = transport.set_identity(gix_sec::identity::Account {
                username: s.user,
                password: s.password,
                oauth_refresh_token: None,
            });
        } else {
            tracing::warn!(upstream = %url, "upstream credentials configured but not sent over plain http");
        }
    }
}

/// The handshake, and the refs under `prefixes`: those the handshake listed (protocol v0/v1),
/// or an `ls-refs` command's (v2).
fn handshake_and_list(
    transport: &mut Transport,
    prefixes: &RefPrefixes,
    url: &str,
) -> Result<(gix_protocol::Handshake, Vec<Ref>), FetchError> {
    let mut progress = gix_utils::progress::Discard;
    let hs = gix_protocol::handshake(
        &mut *transport,
        Service::UploadPack,
        |_| Ok(None),
        vec![],
        &mut progress,
    )
    .map_err(|e| upstream_err(url, e))?;
    let remote_refs = match hs.refs.clone() {
        Some(r) => r,
        None => {
            let mut p = gix_protocol::ls_refs::RefPrefixes::new();
            p.extend(prefixes.0.iter().map(|s| s.as_str().into()));
            gix_protocol::LsRefsCommand::new(
                (!prefixes.0.is_empty()).then_some(p),
                &hs.capabilities,
                ("agent", Some(crate::AGENT.into())),
            )
            .invoke_blocking(&mut *transport, &mut progress, false)
            .map_err(|e| upstream_err(url, e))?
        }
    };
    Ok((hs, remote_refs))
}

/// A connection to an upstream after the handshake and ref listing.
pub struct Session {
    url: String,
    transport: Transport,
    version: Protocol,
    capabilities: gix_transport::client::Capabilities,
    max_pack_bytes: u64,
}

impl Session {
    /// Connect, handshake and list the refs under `prefixes`.
    pub fn connect(
        url: &str,
        prefixes: &RefPrefixes,
        deadlines: Deadlines,
        trust: &std::sync::Arc<crate::upstream::creds::Trust>,
    ) -> Result<(Session, Listing), FetchError> {
        // Upstreams no explicit `--upstream` rule names: https to public addresses only (the
        // HTTP client's resolver refuses the rest), and no redirects (a redirect could lead
        // to an address that was never checked).
        let trusted = trust.is_trusted(url);
        if !trusted {
            crate::upstream::policy::check_url(url).map_err(|e| {
                FetchError::Upstream(crate::upstream::policy::redact(url), e.to_string())
            })?;
        }
        let mut transport = gix_transport::client::blocking_io::connect::connect(
            url,
            gix_transport::client::blocking_io::connect::Options {
                version: Protocol::V2,
                ..Default::default()
            },
        )
        .map_err(|e| upstream_err(url, e))?;
        // Non-HTTP transports ignore the options (and only http(s) upstreams are used).
        let http = http_options(deadlines, trusted, trust);
        if let Err(e) = transport.configure(&http)
            && !trusted
        {
            // Without the policy's resolver the connection must not be made.
            return Err(FetchError::Upstream(
                crate::upstream::policy::redact(url),
                format!("cannot configure the HTTP transport: {e}"),
            ));
        }
        send_credentials(&mut transport, trust, url);
        let (hs, remote_refs) = handshake_and_list(&mut transport, prefixes, url)?;
        let listing = listing(remote_refs, prefixes);
        Ok((
            Session {
                url: url.to_string(),
                max_pack_bytes: deadlines.max_pack_bytes,
                transport,
                version: hs.server_protocol_version,
                capabilities: hs.capabilities,
            },
            listing,
        ))
    }

    /// Fetch the objects reachable from `wants` but not from `haves` as one pack (never a thin
    /// one: every delta base is in the pack, so it can be indexed on its own), passing its
    /// bytes to `sink` as they arrive (on success the sink is finished: the pack is published).
    pub fn fetch_pack(
        &mut self,
        wants: &BTreeSet<ObjectId>,
        haves: &BTreeSet<ObjectId>,
        mut sink: PackSink,
    ) -> Result<Received, FetchError> {
        let url = self.url.clone();
        let mut reader = match self.version {
            Protocol::V2 => {
                let mut args: Vec<bstr::BString> = vec!["ofs-delta".into(), "no-progress".into()];
                args.extend(wants.iter().map(|w| format!("want {w}").into()));
                args.extend(haves.iter().map(|h| format!("have {h}").into()));
                args.push("done".into());
                use gix_transport::client::blocking_io::TransportV2Ext;
                self.transport
                    .invoke(
                        "fetch",
                        [("agent", Some(std::borrow::Cow::Borrowed(crate::AGENT)))].into_iter(),
                        Some(args.into_iter()),
                        false,
                    )
                    .map_err(|e| upstream_err(&url, e))?
            }
            v => {
                let mut features =
                    gix_protocol::Command::Fetch.default_features(v, &self.capabilities);
                features.retain(|(f, _)| *f != "thin-pack");
                let mut args = gix_protocol::fetch::Arguments::new(v, features, false);
                for w in wants {
                    args.want(w);
                }
                for h in haves {
                    args.have(h);
                }
                args.send(&mut self.transport, true)
                    .map_err(|e| upstream_err(&url, e))?
            }
        };
        let _response =
            gix_protocol::fetch::Response::from_line_reader(self.version, &mut reader, true, false)
                .map_err(|e| upstream_err(&url, e))?;
        // Setting a progress handler switches the reader to side-band decoding.
        reader.set_progress_handler(Some(Box::new(|_is_err: bool, _data: &[u8]| {
            std::ops::ControlFlow::Continue(())
        })));
        let as_fetch = |e| match e {
            IngestError::TooLarge(max) => FetchError::TooLarge(url.clone(), max),
            IngestError::Io(e) => FetchError::Upstream(url.clone(), format!("reading pack: {e}")),
            e @ IngestError::Invalid(_) => FetchError::BadPack(url.clone(), e.to_string()),
        };
        if sink.tap().is_some() {
            // Clients follow this pack: copy it on at upstream's pace, index it beside.
            return super::inbound::receive_through(&mut reader, sink, self.max_pack_bytes)
                .map_err(as_fetch);
        }
        let received = ingest::receive(
            &mut reader,
            &mut |b| sink.write(b),
            super::stored::INDEX_CACHE_BYTES,
            self.max_pack_bytes,
        )
        .map_err(as_fetch)?;
        sink.finish()
            .map_err(|e| FetchError::Upstream(url.clone(), format!("storing pack: {e}")))?;
        Ok(received)
    }
}

/// The advertised refs under `prefixes`, with HEAD split out.
fn listing(remote_refs: Vec<Ref>, prefixes: &RefPrefixes) -> Listing {
    let mut out = Listing::default();
    for r in remote_refs {
        match r {
            Ref::Direct {
                full_ref_name,
                object,
            } => {
                if full_ref_name == "HEAD" {
                    out.head_oid = Some(object);
                } else {
                    out.refs.insert(
                        full_ref_name.to_string(),
                        RefEntry {
                            oid: object,
                            peeled: None,
                        },
                    );
                }
            }
            Ref::Peeled {
                full_ref_name,
                tag,
                object,
            } => {
                out.refs.insert(
                    full_ref_name.to_string(),
                    RefEntry {
                        oid: tag,
                        peeled: Some(object),
                    },
                );
            }
            Ref::Symbolic {
                full_ref_name,
                target,
                tag,
                object,
            } => {
                if full_ref_name == "HEAD" {
                    out.head_symref = Some(target.to_string());
                    out.head_oid = Some(tag.unwrap_or(object));
                } else {
                    out.refs.insert(
                        full_ref_name.to_string(),
                        RefEntry {
                            oid: tag.unwrap_or(object),
                            peeled: tag.map(|_| object),
                        },
                    );
                }
            }
            Ref::Unborn {
                full_ref_name,
                target,
            } => {
                if full_ref_name == "HEAD" {
                    out.head_symref = Some(target.to_string());
                }
            }
        }
    }
    out.refs.retain(|name, _| prefixes.matches(name));
    // A symbolic HEAD is stored as its target; its oid is the target ref's.
    if out.head_symref.is_some() {
        out.head_oid = None;
    }
    out
}

/// List the upstream's refs (telling `tap`) and fetch all of their objects.
pub(crate) fn fetch_all(
    url: &str,
    prefixes: &RefPrefixes,
    deadlines: Deadlines,
    trust: &std::sync::Arc<crate::upstream::creds::Trust>,
    sink: PackSink,
    tap: Option<&super::tap::Tap>,
) -> Result<Fetched, FetchError> {
    let (mut session, listing) = Session::connect(url, prefixes, deadlines, trust)?;
    if let Some(t) = tap {
        t.listed(&listing);
    }
    let mut sink = sink;
    sink.listed(url, &listing);
    let wants = listing.tips();
    let pack = if wants.is_empty() {
        None
    } else {
        Some(session.fetch_pack(&wants, &BTreeSet::new(), sink)?)
    };
    Ok(Fetched {
        refs: listing.refs,
        head_symref: listing.head_symref,
        head_oid: listing.head_oid,
        pack,
    })
}

pub use ingest::Indexed;

/// Verify a pack held in memory (trailer checksum, every object hashed) and write its `.idx`.
pub fn index_pack(pack: &[u8]) -> Result<Indexed, String> {
    ingest::index_in_memory(pack, super::stored::INDEX_CACHE_BYTES).map_err(|e| e.to_string())
}
