//! The upstream client: list refs and fetch everything with gix-protocol (v2, falling back to
//! whatever the server speaks), then index the received pack in memory with gix-pack.
//! Blocking: run on a blocking thread.

use crate::refs::RefEntry;
use gix_hash::ObjectId;
use gix_protocol::handshake::Ref;
use gix_protocol::transport::{Protocol, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

/// What an upstream had.
#[derive(Debug, Default)]
pub struct Fetched {
    pub refs: BTreeMap<String, RefEntry>,
    pub head_symref: Option<String>,
    pub head_oid: Option<String>,
    /// The received pack, `None` for an empty repository.
    pub pack: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("upstream {0} has no such repository")]
    NotFound(String),
    #[error("upstream {0}: {1}")]
    Upstream(String, String),
    #[error("received pack from {0} is invalid: {1}")]
    BadPack(String, String),
}

fn upstream_err(url: &str, e: impl std::fmt::Display) -> FetchError {
    let msg = format!("{e:#}");
    let lower = msg.to_ascii_lowercase();
    if lower.contains("404") || lower.contains("not found") {
        FetchError::NotFound(url.to_string())
    } else {
        FetchError::Upstream(url.to_string(), msg)
    }
}

/// List the upstream's refs and fetch all of their objects.
pub fn fetch_all(url: &str) -> Result<Fetched, FetchError> {
    let mut transport = gix_transport::client::blocking_io::connect::connect(
        url,
        gix_transport::client::blocking_io::connect::Options {
            version: Protocol::V2,
            ..Default::default()
        },
    )
    .map_err(|e| upstream_err(url, e))?;
    let mut progress = gix_utils::progress::Discard;
    let hs = gix_protocol::handshake(
        &mut transport,
        Service::UploadPack,
        |_| Ok(None),
        vec![],
        &mut progress,
    )
    .map_err(|e| upstream_err(url, e))?;
    let version = hs.server_protocol_version;
    let remote_refs = match hs.refs.clone() {
        Some(r) => r,
        None => gix_protocol::LsRefsCommand::new(
            None,
            &hs.capabilities,
            ("agent", Some(crate::AGENT.into())),
        )
        .invoke_blocking(&mut transport, &mut progress, false)
        .map_err(|e| upstream_err(url, e))?,
    };

    let mut out = Fetched::default();
    let mut wants: BTreeSet<ObjectId> = BTreeSet::new();
    for r in remote_refs {
        match r {
            Ref::Direct {
                full_ref_name,
                object,
            } => {
                wants.insert(object);
                if full_ref_name == "HEAD" {
                    out.head_oid = Some(object.to_string());
                } else {
                    out.refs.insert(
                        full_ref_name.to_string(),
                        RefEntry {
                            oid: object.to_string(),
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
                wants.insert(tag);
                out.refs.insert(
                    full_ref_name.to_string(),
                    RefEntry {
                        oid: tag.to_string(),
                        peeled: Some(object.to_string()),
                    },
                );
            }
            Ref::Symbolic {
                full_ref_name,
                target,
                tag,
                object,
            } => {
                wants.insert(tag.unwrap_or(object));
                if full_ref_name == "HEAD" {
                    out.head_symref = Some(target.to_string());
                } else {
                    out.refs.insert(
                        full_ref_name.to_string(),
                        RefEntry {
                            oid: tag.unwrap_or(object).to_string(),
                            peeled: tag.map(|_| object.to_string()),
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
    if out.head_symref.is_some() {
        out.head_oid = None;
    }
    if wants.is_empty() {
        return Ok(out);
    }

    let features = gix_protocol::Command::Fetch.default_features(version, &hs.capabilities);
    let mut args = gix_protocol::fetch::Arguments::new(version, features, false);
    for w in &wants {
        args.want(w);
    }
    let mut reader = args
        .send(&mut transport, true)
        .map_err(|e| upstream_err(url, e))?;
    let _response =
        gix_protocol::fetch::Response::from_line_reader(version, &mut reader, true, false)
            .map_err(|e| upstream_err(url, e))?;
    // Setting a progress handler switches the reader to side-band decoding.
    reader.set_progress_handler(Some(Box::new(|_is_err: bool, _data: &[u8]| {
        std::ops::ControlFlow::Continue(())
    })));
    let mut pack = Vec::new();
    reader
        .read_to_end(&mut pack)
        .map_err(|e| FetchError::Upstream(url.to_string(), format!("reading pack: {e}")))?;
    out.pack = Some(pack);
    Ok(out)
}

/// An in-memory pack index.
#[derive(Debug)]
pub struct Indexed {
    /// Pack checksum, hex.
    pub name: String,
    pub idx: Vec<u8>,
    pub objects: u32,
}

/// Verify a pack (trailer checksum, every object hashed) and write its `.idx` in memory.
pub fn index_pack(pack: &[u8]) -> Result<Indexed, String> {
    use gix_pack::data::input;
    let mut entries = input::BytesToEntriesIter::new_from_header(
        std::io::BufReader::with_capacity(1 << 16, pack),
        input::Mode::Verify,
        input::EntryDataMode::Crc32,
        gix_hash::Kind::Sha1,
    )
    .map_err(|e| format!("{e:#}"))?;
    let mut idx = Vec::new();
    let interrupt = std::sync::atomic::AtomicBool::new(false);
    let outcome = gix_pack::index::write_data_iter_to_stream(
        gix_pack::index::Version::V2,
        || {
            Ok((
                resolve_in_slice
                    as for<'r> fn(gix_pack::data::EntryRange, &'r &[u8]) -> Option<&'r [u8]>,
                pack,
            ))
        },
        &mut entries,
        Some(1),
        &mut gix_utils::progress::Discard,
        &mut idx,
        &interrupt,
        gix_hash::Kind::Sha1,
        Some(1 << 30),
        gix_pack::data::Version::V2,
    )
    .map_err(|e| format!("{e:#}"))?;
    Ok(Indexed {
        name: outcome.data_hash.to_string(),
        idx,
        objects: outcome.num_objects,
    })
}

fn resolve_in_slice<'r>(range: gix_pack::data::EntryRange, data: &'r &[u8]) -> Option<&'r [u8]> {
    data.get(range.start as usize..range.end as usize)
}
