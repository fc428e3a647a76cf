//! The checksum-database relay: `/sumdb/<name>/supported`, `/lookup/…`, `/tile/…` and
//! `/latest`, relayed to the database configured for `<name>` (`--sumdb NAME=URL`).
//!
//! A 200 on `/supported` commits the go command to goprox for all of that database's traffic
//! (no direct fallback), so the relay passes status and bytes on unchanged: the client checks
//! signatures and proofs itself. What can never change is kept in the bucket and served from
//! there first, so that verifying modules already seen keeps working while the database is
//! unreachable:
//!
//! * `@sumdb/<name>/lookup/<escaped path>@<escaped version>`: a lookup answered with 200 (a
//!   record and a signed tree head; a client accepts an older head as long as it is consistent
//!   with the newest it knows). Negative answers (404, 410) are relayed, never kept.
//! * `@sumdb/<name>/tile/<H>/<L>/<N>`: a full tile.
//!
//! Partial tiles and `/latest` are relayed live. The last copy of each is kept (overwritten)
//! under `@sumdb/<name>/last/…` and served only when the database cannot be reached. The hashes
//! of a partial hash tile never change as the tile grows, so a wider copy also answers a
//! narrower request (its first `W` hashes); a partial data tile answers only its own width.
//!
//! Every suffix is checked strictly before anything goes upstream or into a key, and the only
//! URL ever contacted is the configured one (redirects only to the same scheme, host and port).

use super::{module, semver};
use crate::metrics::{self, SumdbOutcome, SumdbVerification};
use crate::store::{DynStore, PutMode, StoreError};
use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

/// The `--sumdb` default: the Go project's checksum database.
pub const DEFAULT: &str = "sum.golang.org=https://sum.golang.org";
/// Longest wait for a connection to the database.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time for a whole upstream request, body included.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest upstream answer accepted.
pub const MAX_BODY: usize = 16 << 20;
/// Most redirects followed (all to the configured scheme, host and port).
const MAX_REDIRECTS: usize = 5;
/// Size of one hash in a hash tile (`tlog.HashSize`).
const HASH_SIZE: usize = 32;
/// Store key prefix of everything the relay keeps.
const KEY_PREFIX: &str = "@sumdb";

const TEXT: &str = "text/plain; charset=utf-8";
const OCTETS: &str = "application/octet-stream";

/// One tile of a tiled transparency log (`tlog.Tile`), as named in `/tile/` paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    /// Tile height (1..=30).
    pub h: u32,
    /// Level, or `None` for a record-data tile (`data`).
    pub l: Option<u32>,
    /// Index within the level.
    pub n: u64,
    /// Width of a partial tile (`.p/W`), `None` for a full one.
    pub w: Option<u32>,
}

impl Tile {
    /// The canonical path below `tile/` (`tlog.Tile.Path` without its `tile/`).
    pub fn path(&self) -> String {
        format!("{}{}", self.base(), self.partial_suffix())
    }

    /// `H/L/N`: the path without the width.
    fn base(&self) -> String {
        let mut n = self.n;
        let mut s = format!("{:03}", n % 1000);
        while n >= 1000 {
            n /= 1000;
            s = format!("x{:03}/{s}", n % 1000);
        }
        let l = match self.l {
            Some(l) => l.to_string(),
            None => "data".to_string(),
        };
        format!("{}/{l}/{s}", self.h)
    }

    fn partial_suffix(&self) -> String {
        self.w.map(|w| format!(".p/{w}")).unwrap_or_default()
    }
}

/// A request below `/sumdb/<name>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `supported`.
    Supported,
    /// `latest`.
    Latest,
    /// `lookup/<escaped path>@<escaped version>`.
    Lookup {
        /// The module path, unescaped.
        path: String,
        /// The version, unescaped.
        version: String,
        /// `<escaped path>@<escaped version>`, as requested (and as forwarded and stored).
        escaped: String,
    },
    /// `tile/…`.
    Tile(Tile),
}

/// Decode the part of a (percent-decoded) request path after `/sumdb/<name>/`: `Ok(None)`
/// for an endpoint a checksum database does not have (a 404), `Err(reason)` for a malformed
/// lookup or tile (a 400).
pub fn parse_endpoint(rest: &str) -> Result<Option<Endpoint>, String> {
    match rest {
        "supported" => return Ok(Some(Endpoint::Supported)),
        "latest" => return Ok(Some(Endpoint::Latest)),
        _ => {}
    }
    if let Some(m) = rest.strip_prefix("lookup/") {
        return parse_lookup(m).map(Some);
    }
    if let Some(t) = rest.strip_prefix("tile/") {
        return parse_tile(t).map(|t| Some(Endpoint::Tile(t)));
    }
    Ok(None)
}

/// `<escaped path>@<escaped version>`, with a canonical semantic version (as the checksum
/// database itself requires).
fn parse_lookup(s: &str) -> Result<Endpoint, String> {
    let Some((ep, ev)) = s.split_once('@') else {
        return Err("invalid lookup: want <module>@<version>".into());
    };
    let path = module::unescape_path(ep).map_err(|e| format!("invalid lookup: {e}"))?;
    if ev.contains('@') {
        return Err("invalid lookup: more than one @".into());
    }
    let version = module::unescape_version(ev).map_err(|e| format!("invalid lookup: {e}"))?;
    let canonical = semver::canonical(&version);
    if canonical.is_empty()
        || (version != canonical && version != format!("{canonical}+incompatible"))
    {
        return Err("invalid lookup: the version is not a canonical semantic version".into());
    }
    Ok(Endpoint::Lookup {
        path,
        version,
        escaped: s.to_string(),
    })
}

/// A decimal number written without leading zeros (as Go's `strconv.Itoa` writes it), at most
/// `max`.
fn number(s: &str, max: u64) -> Option<u64> {
    let canonical = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    canonical
        .then(|| s.parse::<u64>().ok())
        .flatten()
        .filter(|n| *n <= max)
}

/// `H/L/N[.p/W]`: `H` in 1..=30, `L` in 0..=63 or `data`, `N` in groups `x123/…/456`, `W`
/// in 1..=255 and below 2^H. Only the canonical form (`tlog.Tile.Path`) is accepted.
pub fn parse_tile(s: &str) -> Result<Tile, String> {
    let bad = |why: &str| Err(format!("invalid tile path: {why}"));
    let parts: Vec<&str> = s.split('/').collect();
    if parts.len() < 3 {
        return bad("want <H>/<L>/<N>[.p/<W>]");
    }
    let Some(h) = number(parts[0], 30).filter(|h| *h >= 1) else {
        return bad("the height must be 1 to 30");
    };
    let l = match parts[1] {
        "data" => None,
        l => match number(l, 63) {
            Some(l) => Some(l as u32),
            None => return bad("the level must be 0 to 63 or data"),
        },
    };
    let (leading, last, w) = match &parts[2..] {
        [rest @ .., last, width] if last.ends_with(".p") => {
            let Some(width) = number(width, 255).filter(|x| *x >= 1 && *x < (1u64 << h)) else {
                return bad("the width of a partial tile must be 1 to 255 and below 2^H");
            };
            (rest, &last[..last.len() - 2], Some(width as u32))
        }
        [rest @ .., last] => (rest, *last, None),
        [] => return bad("no tile index"),
    };
    let mut n: u64 = 0;
    for g in leading
        .iter()
        .map(|g| g.strip_prefix('x'))
        .chain([Some(last)])
    {
        let Some(g) = g.filter(|g| g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit())) else {
            return bad("the index must be written as x123/…/456");
        };
        let Some(next) = n
            .checked_mul(1000)
            .and_then(|n| n.checked_add(u64::from(g.parse::<u16>().unwrap_or(0))))
        else {
            return bad("the index is too large");
        };
        n = next;
    }
    let tile = Tile {
        h: h as u32,
        l,
        n,
        w,
    };
    if tile.path() != s {
        return bad("not in canonical form");
    }
    Ok(tile)
}

/// A checksum database name: what `--sumdb NAME=` and `/sumdb/<name>/` may say (a host name,
/// as checksum databases are named).
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_')
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
}

/// Parse one `--sumdb` value, `NAME=URL` (http or https, no credentials, query or fragment).
/// Returns the name and the URL without a trailing `/`.
pub fn parse_spec(spec: &str) -> Result<(String, String), String> {
    let Some((name, url)) = spec.split_once('=') else {
        return Err(format!("--sumdb {spec:?}: want NAME=URL (or off)"));
    };
    let (name, url) = (name.trim(), url.trim());
    if !valid_name(name) {
        return Err(format!(
            "--sumdb {name:?}: a database name is a host name (letters, digits, . - _)"
        ));
    }
    let u = reqwest::Url::parse(url).map_err(|e| format!("--sumdb {name}: bad URL: {e}"))?;
    if u.scheme() != "https" && u.scheme() != "http" {
        return Err(format!("--sumdb {name}: the URL must be http or https"));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("--sumdb {name}: the URL has no host"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(format!(
            "--sumdb {name}: credentials in the URL are not supported"
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "--sumdb {name}: the URL must not have a query or fragment"
        ));
    }
    Ok((
        name.to_string(),
        u.as_str().trim_end_matches('/').to_string(),
    ))
}

/// One configured database.
#[derive(Debug)]
struct Db {
    /// Base URL, without a trailing `/`.
    url: String,
}

/// What the database answered, or why it could not be asked.
enum Fetched {
    Answer {
        status: StatusCode,
        content_type: Option<HeaderValue>,
        body: Bytes,
    },
    /// Not reachable (or no usable answer): a short reason for the client.
    Unreachable(&'static str),
}

/// The relay for the configured checksum databases.
#[derive(Debug)]
pub struct Relay {
    dbs: BTreeMap<String, Db>,
    /// The first database on the command line (the one `--verify-sumdb` asks).
    first: String,
    store: DynStore,
    client: reqwest::Client,
}

/// A lookup or full tile: a copy kept in the bucket, or what asking the database gave.
enum Immutable {
    Kept(Bytes),
    Fetched(Fetched),
}

/// What the first checksum database says about a module version ([`Relay::lookup_record`]).
pub enum Lookup {
    /// Its record (a kept copy or the database's 200): the lookup body.
    Record(Bytes),
    /// The database has no record of it (404 or 410).
    NotFound,
    /// No usable answer (unreachable, another status, an answer that is not its record): a
    /// short reason.
    Failed(String),
}

/// Which of a module version's hashes is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hashed {
    /// The zip's (`<path> <version> h1:…`).
    Zip,
    /// The go.mod's (`<path> <version>/go.mod h1:…`).
    GoMod,
}

/// What checking a built hash against the checksum database found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not checked: the path matches `--nosumdb` (never sent to the database).
    Private,
    /// The database records the same hash.
    Match,
    /// The database records another hash (this one).
    Mismatch(String),
    /// The database has no record of the version.
    Unknown,
    /// The database could not be asked, or its answer is unusable: a short reason.
    Error(String),
}

/// `--verify-sumdb`: module versions are checked against the first `--sumdb` database before
/// they are first recorded, except paths matching `--nosumdb`.
#[derive(Debug)]
pub struct Verifier {
    relay: std::sync::Arc<Relay>,
    /// Comma-separated globs (GOPRIVATE syntax).
    nosumdb: String,
}

impl Verifier {
    /// A verifier asking `relay`'s first database, except for paths matching `nosumdb`.
    pub fn new(relay: std::sync::Arc<Relay>, nosumdb: &[String]) -> Verifier {
        Verifier {
            relay,
            nosumdb: nosumdb.join(","),
        }
    }

    /// The database asked.
    pub fn database(&self) -> &str {
        &self.relay.first
    }

    /// Whether `path` matches `--nosumdb` (it is never looked up).
    pub fn is_private(&self, path: &str) -> bool {
        crate::access::match_prefix_patterns(&self.nosumdb, path)
    }

    /// Check `built` (an `h1:` hash) of `path@version` against the database's record.
    pub async fn verify(&self, path: &str, version: &str, what: Hashed, built: &str) -> Verdict {
        if self.is_private(path) {
            return Verdict::Private;
        }
        let verdict = match self.relay.lookup_record(path, version).await {
            Lookup::Record(body) => match record_hash(&body, path, version, what) {
                Some(h) if h == built => Verdict::Match,
                Some(h) => Verdict::Mismatch(h),
                None => Verdict::Error("its answer has no such hash".into()),
            },
            Lookup::NotFound => Verdict::Unknown,
            Lookup::Failed(why) => Verdict::Error(why),
        };
        metrics::sumdb_verification(match verdict {
            Verdict::Match => SumdbVerification::Match,
            Verdict::Mismatch(_) => SumdbVerification::Mismatch,
            Verdict::Unknown => SumdbVerification::Unknown,
            Verdict::Private | Verdict::Error(_) => SumdbVerification::Error,
        });
        verdict
    }
}

/// The hash a lookup answer records for `path@version` (its zip's or its go.mod's).
fn record_hash(body: &[u8], path: &str, version: &str, what: Hashed) -> Option<String> {
    if !lookup_names(body, path, version) {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    let want = match what {
        Hashed::Zip => version.to_string(),
        Hashed::GoMod => format!("{version}/go.mod"),
    };
    text.lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .find_map(|l| match l.split(' ').collect::<Vec<_>>()[..] {
            [p, v, h] if p == path && v == want && h.starts_with("h1:") => Some(h.to_string()),
            _ => None,
        })
}

impl Relay {
    /// The relay for the `--sumdb` values (`NAME=URL`, repeatable); `Ok(None)` for `off` (no
    /// relay: `/sumdb/…` is 404 and clients go to the database directly).
    pub fn from_specs(
        specs: &[String],
        store: DynStore,
        trust: &crate::upstream::creds::Trust,
    ) -> Result<Option<Relay>, String> {
        let specs: Vec<&str> = specs
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if specs.iter().any(|s| s.eq_ignore_ascii_case("off")) {
            if specs.len() > 1 {
                return Err("--sumdb off cannot be combined with databases".into());
            }
            return Ok(None);
        }
        if specs.is_empty() {
            return Ok(None);
        }
        let mut dbs = BTreeMap::new();
        let mut first = None;
        for spec in specs {
            let (name, url) = parse_spec(spec)?;
            first.get_or_insert_with(|| name.clone());
            if dbs.insert(name.clone(), Db { url }).is_some() {
                return Err(format!("--sumdb {name}: given twice"));
            }
        }
        let Some(first) = first else {
            return Ok(None);
        };
        let client = trust
            .with_roots(reqwest::Client::builder())
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .user_agent(crate::AGENT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                // Every request starts at a configured URL; a redirect may only stay there.
                let to = attempt.url();
                let same = attempt.previous().first().is_some_and(|first| {
                    first.scheme() == to.scheme()
                        && first.host_str() == to.host_str()
                        && first.port_or_known_default() == to.port_or_known_default()
                });
                if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else if same {
                    attempt.follow()
                } else {
                    attempt.error("redirect to another host refused")
                }
            }))
            .build()
            .map_err(|e| format!("--sumdb: cannot build the HTTP client: {e}"))?;
        Ok(Some(Relay {
            dbs,
            first,
            store,
            client,
        }))
    }

    /// The configured databases as `NAME=URL`, for logs.
    pub fn describe(&self) -> String {
        self.dbs
            .iter()
            .map(|(n, d)| format!("{n}={}", d.url))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Answer `/sumdb/<name>/<rest>` (`rest` percent-decoded).
    pub async fn serve(&self, name: &str, rest: &str) -> Response {
        let Some(db) = self.dbs.get(name) else {
            let shown = if valid_name(name) {
                name
            } else {
                "(invalid name)"
            };
            return error(
                StatusCode::NOT_FOUND,
                &format!("checksum database {shown} is not proxied by goprox"),
            );
        };
        let endpoint = match parse_endpoint(rest) {
            Ok(Some(e)) => e,
            Ok(None) => {
                return error(
                    StatusCode::NOT_FOUND,
                    "not found (a checksum database serves supported, lookup/, tile/ and latest)",
                );
            }
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        };
        match endpoint {
            Endpoint::Supported => {
                (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], "").into_response()
            }
            Endpoint::Lookup {
                path,
                version,
                escaped,
            } => {
                let (suffix, key, check) = lookup_parts(name, &path, &version, &escaped);
                self.immutable(name, db, &suffix, &key, TEXT, &check).await
            }
            Endpoint::Tile(t) if t.w.is_none() => {
                let key = format!("{KEY_PREFIX}/{name}/tile/{}", t.path());
                let check = move |body: &[u8]| match t.l {
                    Some(_) => body.len() == HASH_SIZE << t.h,
                    None => !body.is_empty(),
                };
                self.immutable(
                    name,
                    db,
                    &format!("tile/{}", t.path()),
                    &key,
                    tile_type(&t),
                    &check,
                )
                .await
            }
            Endpoint::Tile(t) => self.partial(name, db, &t).await,
            Endpoint::Latest => {
                let key = format!("{KEY_PREFIX}/{name}/last/latest");
                match self.fetch(name, db, "latest").await {
                    Fetched::Answer {
                        status,
                        content_type,
                        body,
                    } if !status.is_server_error() => {
                        if status == StatusCode::OK && !body.is_empty() {
                            self.keep(&key, body.clone(), PutMode::Overwrite).await;
                        }
                        relayed(status, content_type, TEXT, body)
                    }
                    failed => match self.stored(&key).await {
                        Some(body) => {
                            tracing::info!(
                                db = name,
                                "checksum database unreachable: last latest served"
                            );
                            answer(SumdbOutcome::Stale, TEXT, body)
                        }
                        None => unreachable(name, failed),
                    },
                }
            }
        }
    }

    /// A lookup or a full tile: from the store if kept, else relayed (and kept when it is a 200
    /// that passes `check`).
    async fn immutable(
        &self,
        name: &str,
        db: &Db,
        suffix: &str,
        key: &str,
        content_type: &'static str,
        check: &(dyn Fn(&[u8]) -> bool + Send + Sync),
    ) -> Response {
        match self.immutable_bytes(name, db, suffix, key, check).await {
            Immutable::Kept(body) => answer(SumdbOutcome::Stored, content_type, body),
            Immutable::Fetched(Fetched::Answer {
                status,
                content_type: ct,
                body,
            }) => relayed(status, ct, content_type, body),
            Immutable::Fetched(failed) => unreachable(name, failed),
        }
    }

    /// [`Relay::immutable`]'s bytes: the kept copy, or the database's answer (kept when it is
    /// a 200 that passes `check`).
    async fn immutable_bytes(
        &self,
        name: &str,
        db: &Db,
        suffix: &str,
        key: &str,
        check: &(dyn Fn(&[u8]) -> bool + Send + Sync),
    ) -> Immutable {
        if let Some(body) = self.stored(key).await {
            return Immutable::Kept(body);
        }
        let fetched = self.fetch(name, db, suffix).await;
        if let Fetched::Answer { status, body, .. } = &fetched
            && *status == StatusCode::OK
        {
            if check(body) {
                self.keep(key, body.clone(), PutMode::CreateOnly).await;
            } else {
                tracing::warn!(
                    db = name,
                    path = suffix,
                    "unexpected checksum database answer: relayed, not kept"
                );
            }
        }
        Immutable::Fetched(fetched)
    }

    /// The record of `path@version` (a canonical version) in the first configured database,
    /// asked the way a client's lookup through the relay is: a kept copy first, else the
    /// database (a record it answers is kept, so it also answers while the database is down).
    pub async fn lookup_record(&self, path: &str, version: &str) -> Lookup {
        let name = self.first.as_str();
        let Some(db) = self.dbs.get(name) else {
            return Lookup::Failed("no checksum database".into());
        };
        let (Ok(ep), Ok(ev)) = (module::escape_path(path), module::escape_version(version)) else {
            return Lookup::Failed("the module path or version cannot be looked up".into());
        };
        let escaped = format!("{ep}@{ev}");
        let (suffix, key, check) = lookup_parts(name, path, version, &escaped);
        match self.immutable_bytes(name, db, &suffix, &key, &check).await {
            Immutable::Kept(body) => Lookup::Record(body),
            Immutable::Fetched(Fetched::Answer { status, body, .. }) => match status {
                StatusCode::OK if lookup_names(&body, path, version) => Lookup::Record(body),
                StatusCode::OK => Lookup::Failed("it answered with another record".into()),
                StatusCode::NOT_FOUND | StatusCode::GONE => Lookup::NotFound,
                s => Lookup::Failed(format!("it answered {}", s.as_u16())),
            },
            Immutable::Fetched(Fetched::Unreachable(why)) => {
                Lookup::Failed(format!("unreachable: {why}"))
            }
        }
    }

    /// A partial tile: relayed live; the last copy kept, served when the database cannot be
    /// reached.
    async fn partial(&self, name: &str, db: &Db, t: &Tile) -> Response {
        let Some(w) = t.w else {
            return error(StatusCode::INTERNAL_SERVER_ERROR, "not a partial tile");
        };
        let key = format!("{KEY_PREFIX}/{name}/last/tile/{}", t.base());
        let ct = tile_type(t);
        let failed = match self.fetch(name, db, &format!("tile/{}", t.path())).await {
            Fetched::Answer {
                status,
                content_type,
                body,
            } if !status.is_server_error() => {
                let fits = match t.l {
                    Some(_) => body.len() == HASH_SIZE * w as usize,
                    None => !body.is_empty(),
                };
                if status == StatusCode::OK && fits {
                    // Keep the widest copy seen: it answers every narrower hash tile.
                    let wider = match self
                        .stored(&key)
                        .await
                        .and_then(|b| split_partial(&b).map(|(kept, _)| kept))
                    {
                        Some(kept) => w >= kept,
                        None => true,
                    };
                    if wider {
                        let mut v = format!("{w}\n").into_bytes();
                        v.extend_from_slice(&body);
                        self.keep(&key, Bytes::from(v), PutMode::Overwrite).await;
                    }
                }
                return relayed(status, content_type, ct, body);
            }
            failed => failed,
        };
        let kept = self
            .stored(&key)
            .await
            .and_then(|b| split_partial(&b).map(|(kw, body)| (kw, b.slice_ref(body))));
        match kept {
            Some((kw, body)) if kw == w => {
                tracing::info!(db = name, tile = %t.path(), "checksum database unreachable: kept tile served");
                answer(SumdbOutcome::Stale, ct, body)
            }
            Some((kw, body)) if kw > w && t.l.is_some() => {
                tracing::info!(db = name, tile = %t.path(), "checksum database unreachable: kept tile served");
                answer(
                    SumdbOutcome::Stale,
                    ct,
                    body.slice(..HASH_SIZE * w as usize),
                )
            }
            _ => unreachable(name, failed),
        }
    }

    /// GET `<url>/<suffix>` from the database, reading at most [`MAX_BODY`] bytes.
    async fn fetch(&self, name: &str, db: &Db, suffix: &str) -> Fetched {
        let url = format!("{}/{suffix}", db.url);
        let mut resp = match self.client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(db = name, path = suffix, error = %chain(&e), "checksum database request failed");
                return Fetched::Unreachable(describe(&e));
            }
        };
        let status = resp.status();
        let content_type = resp.headers().get(header::CONTENT_TYPE).cloned();
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            tracing::warn!(
                db = name,
                path = suffix,
                "checksum database answer too large"
            );
            return Fetched::Unreachable("answer too large");
        }
        let mut body = bytes::BytesMut::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if body.len() + c.len() > MAX_BODY {
                        tracing::warn!(
                            db = name,
                            path = suffix,
                            "checksum database answer too large"
                        );
                        return Fetched::Unreachable("answer too large");
                    }
                    body.extend_from_slice(&c);
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(db = name, path = suffix, error = %chain(&e), "reading a checksum database answer failed");
                    return Fetched::Unreachable(describe(&e));
                }
            }
        }
        tracing::debug!(
            db = name,
            path = suffix,
            status = status.as_u16(),
            "checksum database answered"
        );
        Fetched::Answer {
            status,
            content_type,
            body: body.freeze(),
        }
    }

    /// A kept object, or `None` (also when the store fails: then the database is asked).
    async fn stored(&self, key: &str) -> Option<Bytes> {
        match self.store.get(key).await {
            Ok(o) => o.map(|o| o.data),
            Err(e) => {
                tracing::warn!(error = %chain(&e), "reading a kept checksum database answer failed");
                None
            }
        }
    }

    /// Keep an answer; failures are logged (the answer is relayed anyway).
    async fn keep(&self, key: &str, body: Bytes, mode: PutMode) {
        match self.store.put(key, body, mode).await {
            Ok(_) | Err(StoreError::PreconditionFailed) => {}
            Err(e) => {
                tracing::warn!(error = %chain(&e), "keeping a checksum database answer failed");
            }
        }
    }
}

/// A lookup's upstream suffix, store key and the check its answer must pass to be kept.
fn lookup_parts(
    name: &str,
    path: &str,
    version: &str,
    escaped: &str,
) -> (String, String, impl Fn(&[u8]) -> bool + Send + Sync + use<>) {
    let (path, version) = (path.to_string(), version.to_string());
    (
        format!("lookup/{escaped}"),
        format!("{KEY_PREFIX}/{name}/lookup/{escaped}"),
        move |body: &[u8]| lookup_names(body, &path, &version),
    )
}

/// Whether a lookup answer is a record of `path@version`: a record id, then its go.sum lines.
fn lookup_names(body: &[u8], path: &str, version: &str) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let mut lines = text.lines();
    let id_ok = lines
        .next()
        .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
    let zip = format!("{path} {version} h1:");
    let gomod = format!("{path} {version}/go.mod h1:");
    id_ok
        && lines
            .take_while(|l| !l.is_empty())
            .any(|l| l.starts_with(&zip) || l.starts_with(&gomod))
}

/// A kept partial tile, `<W>\n<bytes>`: its width and bytes.
fn split_partial(kept: &[u8]) -> Option<(u32, &[u8])> {
    let nl = kept.iter().position(|b| *b == b'\n')?;
    let w = std::str::from_utf8(&kept[..nl]).ok()?.parse().ok()?;
    Some((w, &kept[nl + 1..]))
}

fn tile_type(t: &Tile) -> &'static str {
    if t.l.is_none() { TEXT } else { OCTETS }
}

fn answer(outcome: SumdbOutcome, content_type: &'static str, body: Bytes) -> Response {
    metrics::sumdb_request(outcome);
    let mut r = Response::new(Body::from(body));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// The database's answer as it came (its content type, or `fallback` without one).
fn relayed(
    status: StatusCode,
    content_type: Option<HeaderValue>,
    fallback: &'static str,
    body: Bytes,
) -> Response {
    metrics::sumdb_request(SumdbOutcome::Relayed);
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static(fallback)),
    );
    r
}

fn unreachable(name: &str, failed: Fetched) -> Response {
    match failed {
        Fetched::Unreachable(why) => error(
            StatusCode::BAD_GATEWAY,
            &format!("checksum database {name} unreachable: {why}"),
        ),
        Fetched::Answer {
            status,
            content_type,
            body,
        } => relayed(status, content_type, TEXT, body),
    }
}

/// One short text line, counted as an error.
fn error(status: StatusCode, msg: &str) -> Response {
    metrics::sumdb_request(SumdbOutcome::Error);
    metrics::REQUEST_ERRORS.inc();
    (status, [(header::CONTENT_TYPE, TEXT)], format!("{msg}\n")).into_response()
}

/// A reqwest error as a short text with nothing the server sent.
fn describe(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_redirect() {
        "redirect refused"
    } else if e.is_body() || e.is_decode() {
        "error reading the answer"
    } else {
        "request failed"
    }
}

/// An error and its sources, for logs.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tile(s: &str) -> Result<Tile, String> {
        parse_tile(s)
    }

    #[test]
    fn tiles_parse_in_canonical_form_only() {
        assert_eq!(
            tile("8/0/000"),
            Ok(Tile {
                h: 8,
                l: Some(0),
                n: 0,
                w: None
            })
        );
        assert_eq!(
            tile("8/1/x001/234.p/17"),
            Ok(Tile {
                h: 8,
                l: Some(1),
                n: 1234,
                w: Some(17)
            })
        );
        assert_eq!(
            tile("8/data/x123/x456/789"),
            Ok(Tile {
                h: 8,
                l: None,
                n: 123_456_789,
                w: None
            })
        );
        assert_eq!(
            tile("30/63/999.p/255").map(|t| t.path()),
            Ok("30/63/999.p/255".to_string())
        );
        for bad in [
            "",
            "8",
            "8/0",
            "8/0/",
            "8/0/1",
            "8/0/0001",
            "8/0/x000/001", // not canonical: 001
            "8/0/x001",
            "8/0/001/x002",
            "08/0/000",
            "0/0/000",
            "31/0/000",
            "8/64/000",
            "8/01/000",
            "8/Data/000",
            "8/-1/000",
            "8/0/000.p/0",
            "8/0/000.p/256",
            "8/0/000.p/01",
            "2/0/000.p/4",
            "8/0/000.p/",
            "8/0/000.p",
            "8/0/000.p/5/6",
            "../../x",
            "8/0/../000",
            "8/0/./000",
            "8/0/000/",
            "8/0/00a",
            "8/0/x1/000",
            "8/0/+12",
            "8/0/١٢٣",
            "8/0/x001/x002/x003/x004/x005/x006/x007/000",
        ] {
            assert!(tile(bad).is_err(), "{bad:?} accepted: {:?}", tile(bad));
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(parse_endpoint("supported"), Ok(Some(Endpoint::Supported)));
        assert_eq!(parse_endpoint("latest"), Ok(Some(Endpoint::Latest)));
        assert_eq!(
            parse_endpoint("lookup/github.com/!burnt!sushi/toml@v1.2.0-!r!c1"),
            Ok(Some(Endpoint::Lookup {
                path: "github.com/BurntSushi/toml".into(),
                version: "v1.2.0-RC1".into(),
                escaped: "github.com/!burnt!sushi/toml@v1.2.0-!r!c1".into(),
            }))
        );
        assert!(matches!(
            parse_endpoint("lookup/example.com/m@v2.0.0+incompatible"),
            Ok(Some(Endpoint::Lookup { .. }))
        ));
        assert!(matches!(
            parse_endpoint("tile/8/0/000.p/3"),
            Ok(Some(Endpoint::Tile(_)))
        ));
        assert_eq!(parse_endpoint("other"), Ok(None));
        assert_eq!(parse_endpoint(""), Ok(None));
        for bad in [
            "lookup/Bad@v1",
            "lookup/Bad@v1.0.0",
            "lookup/example.com/m",
            "lookup/example.com/m@",
            "lookup/example.com/m@v1",
            "lookup/example.com/m@v1.0",
            "lookup/example.com/m@v1.0.0+build",
            "lookup/example.com/m@v1.0.0@v1.0.0",
            "lookup/example.com/m@v1.0.0/../x",
            "lookup/example.com/m@v1.0.0/go.mod",
            "lookup/../x@v1.0.0",
            "lookup/example.com/../m@v1.0.0",
            "lookup/example.com/m@v1.0.0-!",
            "lookup/example.com/m@v1.0.0-!1",
            "lookup/example.com/m@v1.0.0-X",
            "lookup/example.com/m@latest",
            "lookup/@v1.0.0",
            "lookup/example.com/m@v1.0.0\n",
            "tile/../../x",
            "tile/",
        ] {
            assert!(
                parse_endpoint(bad).is_err(),
                "{bad:?} accepted: {:?}",
                parse_endpoint(bad)
            );
        }
    }

    #[test]
    fn specs() {
        assert_eq!(
            parse_spec("sum.golang.org=https://sum.golang.org/"),
            Ok(("sum.golang.org".into(), "https://sum.golang.org".into()))
        );
        assert_eq!(
            parse_spec("sumdb.test=http://127.0.0.1:8081/base/"),
            Ok(("sumdb.test".into(), "http://127.0.0.1:8081/base".into()))
        );
        for bad in [
            "sum.golang.org",
            "=https://sum.golang.org",
            "../x=https://sum.golang.org",
            "a/b=https://sum.golang.org",
            "x=ftp://sum.golang.org",
            "x=https://user:pw@sum.golang.org",
            "x=https://sum.golang.org/?q=1",
            "x=https://sum.golang.org/#f",
            "x=not a url",
        ] {
            assert!(parse_spec(bad).is_err(), "{bad:?} accepted");
        }
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::default());
        assert!(matches!(
            Relay::from_specs(&["off".into()], store.clone(), &Default::default()),
            Ok(None)
        ));
        assert!(
            Relay::from_specs(
                &["off".into(), DEFAULT.into()],
                store.clone(),
                &Default::default()
            )
            .is_err()
        );
        assert!(
            Relay::from_specs(
                &[DEFAULT.into(), DEFAULT.into()],
                store.clone(),
                &Default::default()
            )
            .is_err()
        );
        let r = Relay::from_specs(&[DEFAULT.into()], store, &Default::default());
        assert!(matches!(r, Ok(Some(_))));
    }

    #[test]
    fn lookup_answers_must_name_the_module() {
        let body = b"12\nexample.com/m v1.0.0 h1:abc=\nexample.com/m v1.0.0/go.mod h1:def=\n\ngo.sum database tree\n";
        assert!(lookup_names(body, "example.com/m", "v1.0.0"));
        assert!(!lookup_names(body, "example.com/m", "v1.0.1"));
        assert!(!lookup_names(body, "example.com/other", "v1.0.0"));
        assert!(!lookup_names(
            b"x\nexample.com/m v1.0.0 h1:abc=\n",
            "example.com/m",
            "v1.0.0"
        ));
        assert!(!lookup_names(b"", "example.com/m", "v1.0.0"));
    }

    #[test]
    fn record_hashes() {
        let body = b"12\nexample.com/m v1.0.0 h1:abc=\nexample.com/m v1.0.0/go.mod h1:def=\n\nexample.com/m v1.0.0 h1:tree=\n";
        let h = |p, v, w| record_hash(body, p, v, w);
        assert_eq!(
            h("example.com/m", "v1.0.0", Hashed::Zip).as_deref(),
            Some("h1:abc=")
        );
        assert_eq!(
            h("example.com/m", "v1.0.0", Hashed::GoMod).as_deref(),
            Some("h1:def=")
        );
        assert_eq!(h("example.com/m", "v1.0.1", Hashed::Zip), None);
        assert_eq!(h("example.com/other", "v1.0.0", Hashed::Zip), None);
        assert_eq!(
            record_hash(
                b"1\nexample.com/m v1.0.0/go.mod h1:def=\n",
                "example.com/m",
                "v1.0.0",
                Hashed::Zip
            ),
            None
        );
    }

    #[tokio::test]
    async fn verification_asks_the_first_database_and_keeps_its_records() {
        use std::sync::atomic::Ordering;
        let record: &'static [u8] =
            b"5\nexample.com/m v1.0.0 h1:zip=\nexample.com/m v1.0.0/go.mod h1:mod=\n\nsigned\n";
        let (url, hits, task) = fake_db(vec![
            ("/lookup/example.com/m@v1.0.0", 200, record),
            ("/lookup/example.com/!m@v1.0.0", 200, record),
            ("/lookup/example.com/broken@v1.0.0", 500, b"oops"),
        ])
        .await;
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::default());
        let relay = Relay::from_specs(
            &[
                format!("z.test={url}"),
                "a.test=http://127.0.0.1:9".to_string(),
            ],
            store.clone(),
            &Default::default(),
        )
        .unwrap()
        .unwrap();
        let v = Verifier::new(std::sync::Arc::new(relay), &["example.com/priv*".into()]);
        assert_eq!(v.database(), "z.test");
        let m = "example.com/m";
        assert_eq!(
            v.verify(m, "v1.0.0", Hashed::Zip, "h1:zip=").await,
            Verdict::Match
        );
        assert_eq!(
            v.verify(m, "v1.0.0", Hashed::GoMod, "h1:mod=").await,
            Verdict::Match
        );
        assert_eq!(
            v.verify(m, "v1.0.0", Hashed::Zip, "h1:other=").await,
            Verdict::Mismatch("h1:zip=".into())
        );
        // Kept after the first answer.
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        assert_eq!(
            v.verify(m, "v1.0.1", Hashed::Zip, "h1:zip=").await,
            Verdict::Unknown
        );
        // An answer naming another module is no record of this one.
        assert!(matches!(
            v.verify("example.com/M", "v1.0.0", Hashed::Zip, "h1:zip=")
                .await,
            Verdict::Error(_)
        ));
        assert!(matches!(
            v.verify("example.com/broken", "v1.0.0", Hashed::Zip, "h1:x=")
                .await,
            Verdict::Error(_)
        ));
        let asked = hits.load(Ordering::SeqCst);
        assert_eq!(
            v.verify("example.com/private/x", "v1.0.0", Hashed::Zip, "h1:x=")
                .await,
            Verdict::Private
        );
        assert_eq!(hits.load(Ordering::SeqCst), asked);
        // The database goes away: the kept record still answers, the rest is an error.
        task.abort();
        let _ = task.await;
        assert_eq!(
            v.verify(m, "v1.0.0", Hashed::GoMod, "h1:mod=").await,
            Verdict::Match
        );
        assert!(matches!(
            v.verify(m, "v1.0.1", Hashed::Zip, "h1:zip=").await,
            Verdict::Error(_)
        ));
        assert!(
            store
                .list("")
                .await
                .unwrap()
                .contains(&"@sumdb/z.test/lookup/example.com/m@v1.0.0".to_string())
        );
    }

    #[test]
    fn kept_partial_tiles() {
        assert_eq!(split_partial(b"3\nabc"), Some((3, &b"abc"[..])));
        assert_eq!(split_partial(b"x\nabc"), None);
        assert_eq!(split_partial(b"abc"), None);
    }

    /// A database on 127.0.0.1 that answers from a table, counting requests.
    async fn fake_db(
        answers: Vec<(&'static str, u16, &'static [u8])>,
    ) -> (
        String,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
        tokio::task::JoinHandle<()>,
    ) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let hits = std::sync::Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let answers = answers.clone();
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                match answers.iter().find(|(p, _, _)| *p == uri.path()) {
                    Some((_, s, b)) => (
                        StatusCode::from_u16(*s).unwrap_or(StatusCode::OK),
                        b.to_vec(),
                    ),
                    None => (StatusCode::NOT_FOUND, b"not found".to_vec()),
                }
            }
        });
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(l, app).await;
        });
        (url, hits, task)
    }

    async fn body(r: Response) -> (u16, Vec<u8>) {
        let s = r.status().as_u16();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        (s, b.to_vec())
    }

    #[tokio::test]
    async fn keeps_what_never_changes_and_falls_back() {
        use std::sync::atomic::Ordering;
        let full: &'static [u8] = Box::leak(vec![7u8; 32 << 2].into_boxed_slice());
        let partial3: &'static [u8] = Box::leak(vec![9u8; 32 * 3].into_boxed_slice());
        let lookup: &'static [u8] =
            b"5\nexample.com/m v1.0.0 h1:abc=\nexample.com/m v1.0.0/go.mod h1:def=\n\nsigned\n";
        let (url, hits, task) = fake_db(vec![
            ("/lookup/example.com/m@v1.0.0", 200, lookup),
            ("/lookup/example.com/gone@v1.0.0", 410, b"gone"),
            ("/tile/2/0/000", 200, full),
            ("/tile/2/0/001.p/3", 200, partial3),
            ("/latest", 200, b"tree head"),
        ])
        .await;
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::default());
        let relay = Relay::from_specs(
            &[format!("db.test={url}")],
            store.clone(),
            &Default::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            body(relay.serve("db.test", "supported").await).await,
            (200, vec![])
        );
        assert_eq!(body(relay.serve("other", "supported").await).await.0, 404);
        for p in [
            "lookup/example.com/m@v1.0.0",
            "tile/2/0/000",
            "tile/2/0/001.p/3",
            "latest",
        ] {
            let (s, _) = body(relay.serve("db.test", p).await).await;
            assert_eq!(s, 200, "{p}");
        }
        assert_eq!(
            body(
                relay
                    .serve("db.test", "lookup/example.com/gone@v1.0.0")
                    .await
            )
            .await
            .0,
            410
        );
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        // Kept answers are served without asking.
        assert_eq!(
            body(relay.serve("db.test", "lookup/example.com/m@v1.0.0").await).await,
            (200, lookup.to_vec())
        );
        assert_eq!(
            body(relay.serve("db.test", "tile/2/0/000").await).await.1,
            full
        );
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        let mut keys = store.list("").await.unwrap();
        keys.sort();
        assert_eq!(
            keys,
            [
                "@sumdb/db.test/last/latest",
                "@sumdb/db.test/last/tile/2/0/001",
                "@sumdb/db.test/lookup/example.com/m@v1.0.0",
                "@sumdb/db.test/tile/2/0/000",
            ]
        );
        // The database goes away: partial tiles (also narrower ones) and latest from the last
        // copies, the rest a 502.
        task.abort();
        let _ = task.await;
        assert_eq!(
            body(relay.serve("db.test", "tile/2/0/001.p/3").await).await,
            (200, partial3.to_vec())
        );
        assert_eq!(
            body(relay.serve("db.test", "tile/2/0/001.p/2").await).await,
            (200, partial3[..64].to_vec())
        );
        assert_eq!(
            body(relay.serve("db.test", "latest").await).await,
            (200, b"tree head".to_vec())
        );
        let (s, b) = body(relay.serve("db.test", "tile/2/0/002.p/1").await).await;
        assert_eq!(s, 502, "{}", String::from_utf8_lossy(&b));
        assert_eq!(
            body(relay.serve("db.test", "lookup/example.com/x@v1.0.0").await)
                .await
                .0,
            502
        );
        // Bad suffixes never reach the store.
        assert_eq!(
            body(relay.serve("db.test", "tile/../../x").await).await.0,
            400
        );
        assert_eq!(store.list("").await.unwrap().len(), 4);
    }
}
