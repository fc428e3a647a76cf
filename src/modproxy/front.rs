//! GOPROXY requests over HTTP: resolve the module's repository (the same rules, policy and
//! fill as the git front), open it, answer from its objects on a blocking thread.
//!
//! Status codes follow what the go command does with them: 404 for anything this proxy
//! cannot serve (unknown module, invalid or unknown version, a version that cannot be
//! zipped), so that a client with `GOPROXY=goprox,direct` goes on to the next entry; 5xx only
//! for faults that a retry may fix. Error bodies are `text/plain; charset=utf-8` (the go
//! command shows them) and name no store internals.

use super::Request;
use super::coderepo::{CodeRepo, ModError, RevInfo, ZipSummary, canonical_version};
use super::ledger::{Ledger, LedgerError, ZipEntry};
use super::semver;
use super::source::Stored;
use crate::access::Access;
use crate::fill::Failure;
use crate::fill::resolve::{ResolveError, Resolver, Target};
use crate::repo::{Repo, Repos};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::Digest;
use std::sync::Arc;

/// What the module front needs of the server.
pub struct Front<'a> {
    /// Repositories (open, fill, refresh).
    pub repos: &'a Arc<Repos>,
    /// Import path → repository.
    pub resolver: &'a Resolver,
    /// `--allow` / `--deny`.
    pub access: &'a Access,
    /// Turns for work on blocking threads (shared with pack generation).
    pub turns: &'a Arc<tokio::sync::Semaphore>,
}

fn plain(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m: String = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    if status.is_client_error() || status.is_server_error() {
        crate::metrics::REQUEST_ERRORS.inc();
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

fn not_found(msg: impl std::fmt::Display) -> Response {
    plain(StatusCode::NOT_FOUND, format!("not found: {msg}"))
}

impl Front<'_> {
    /// Answer one GOPROXY request for `module`.
    pub async fn serve(&self, module: &str, req: Request, headers: &HeaderMap) -> Response {
        if module == "golang.org/toolchain" || module.starts_with("golang.org/toolchain/") {
            return not_found(format!("{module}: toolchains are not served by this proxy"));
        }
        if let Err(why) = self.access.check(module) {
            return not_found(why);
        }
        let target = match self.resolver.resolve(module).await {
            Ok(t) => t,
            Err(e @ ResolveError::NotFound(..)) => return not_found(e),
            Err(e @ ResolveError::Refused(_)) => return not_found(e),
            Err(e @ ResolveError::Discovery(..)) => {
                tracing::warn!(module, error = %e, "module discovery failed");
                return plain(
                    StatusCode::BAD_GATEWAY,
                    format!("{module}: discovery failed"),
                );
            }
        };
        let code = match CodeRepo::new(module, &target.root) {
            Ok(c) => c,
            Err(e) => return not_found(e),
        };
        // A canonical version's answers are recorded in the bucket the first time: later
        // requests (on any instance) are answered from there without opening the repository.
        let ledger = match &req {
            Request::Info(v) | Request::Mod(v) | Request::Zip(v)
                if semver::is_valid(v) && *v == canonical_version(v) =>
            {
                Ledger::new(&self.repos.store, &target.root, module, v)
            }
            _ => None,
        };
        let mut recorded_zip = None;
        if let Some(l) = &ledger {
            match self.recorded(l, &req, headers).await {
                Ok(Recorded::Answer(resp)) => {
                    crate::metrics::MODULE_ANSWERS_STORED.inc();
                    return resp;
                }
                Ok(Recorded::ZipToRebuild(e)) => recorded_zip = Some(e),
                Ok(Recorded::Nothing) => {}
                Err(e) => {
                    tracing::warn!(module, error = %e, source = ?std::error::Error::source(&e), "module ledger unreadable; building");
                }
            }
        }
        let answer = match self.compute(&target, &code, &req).await {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let Some(l) = ledger else {
            return respond(answer, &target.upstream, &code, headers);
        };
        match self
            .record(&l, answer, recorded_zip.as_ref(), &target.upstream, &code)
            .await
        {
            Ok(Answer::Stored(bytes)) => zip_response(bytes, headers),
            Ok(a) => respond(a, &target.upstream, &code, headers),
            Err(e @ LedgerError::Mismatch { .. }) => {
                crate::metrics::REQUEST_ERRORS.inc();
                tracing::error!(module, error = %e, "module version changed since it was first served; refusing to serve a different zip");
                plain(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{e}: refusing to serve a different zip"),
                )
            }
            Err(e) => {
                tracing::warn!(module, error = %e, source = ?std::error::Error::source(&e), "module ledger not written");
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{module}: the store is unavailable"),
                )
            }
        }
    }

    /// What the ledger already has for this request.
    async fn recorded(
        &self,
        l: &Ledger<'_>,
        req: &Request,
        headers: &HeaderMap,
    ) -> Result<Recorded, LedgerError> {
        let ext = match req {
            Request::Info(_) => "info",
            Request::Mod(_) => "mod",
            Request::Zip(_) => {
                let Some(entry) = l.zip_entry().await? else {
                    return Ok(Recorded::Nothing);
                };
                return Ok(match l.zip_bytes(&entry).await? {
                    Some(bytes) if hex::encode(sha2::Sha256::digest(&bytes)) == entry.sha256 => {
                        Recorded::Answer(zip_response(bytes, headers))
                    }
                    Some(_) => {
                        tracing::error!(sha256 = %entry.sha256, "a stored module zip does not match its content key; rebuilding");
                        Recorded::ZipToRebuild(entry)
                    }
                    None => Recorded::ZipToRebuild(entry),
                });
            }
            Request::List | Request::Latest => return Ok(Recorded::Nothing),
        };
        Ok(match l.get(ext).await? {
            Some(b) => Recorded::Answer(stored_response(ext, b)),
            None => Recorded::Nothing,
        })
    }

    /// Record a computed answer; returns what is recorded (the first answer wins).
    async fn record(
        &self,
        l: &Ledger<'_>,
        answer: Answer,
        recorded_zip: Option<&ZipEntry>,
        upstream: &str,
        code: &CodeRepo,
    ) -> Result<Answer, LedgerError> {
        match answer {
            Answer::Info(info) => {
                let json = info_json(&info, upstream, code.code_dir());
                let got = l.put("info", bytes::Bytes::from(json)).await?;
                Ok(Answer::Raw("info", got))
            }
            Answer::Mod(data) => {
                let got = l.put("mod", bytes::Bytes::from(data)).await?;
                Ok(Answer::Raw("mod", got))
            }
            Answer::Zip(bytes, summary) => {
                if let Some(first) = recorded_zip {
                    l.check(first, &summary.h1)?;
                }
                let entry = ZipEntry {
                    h1: summary.h1.clone(),
                    commit: summary.commit.clone(),
                    sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                    size: bytes.len() as u64,
                };
                let shared = bytes::Bytes::from(bytes);
                l.record_zip(&entry, shared.clone()).await?;
                Ok(Answer::Stored(shared))
            }
            other => Ok(other),
        }
    }

    /// Open the repository (filling it on a miss) and answer from its objects; a revision it
    /// lacks triggers one refresh.
    async fn compute(
        &self,
        target: &Target,
        code: &CodeRepo,
        req: &Request,
    ) -> Result<Answer, Response> {
        let module = code.module_path();
        let mut repo = match self.repos.open(target).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(root = %target.root, error = %e, "open failed");
                return Err(match e.failure() {
                    Failure::NotFound => {
                        not_found(format!("{module}: repository {} not found", target.root))
                    }
                    Failure::Upstream | Failure::Timeout => plain(
                        StatusCode::BAD_GATEWAY,
                        format!("{module}: upstream {} failed", target.upstream),
                    ),
                    Failure::Internal => plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{module}: cannot open the stored repository"),
                    ),
                });
            }
        };
        let mut refreshed = false;
        loop {
            match self.answer(&repo, code, req).await {
                Err(ModError::UnknownRevision(why)) if !refreshed => {
                    refreshed = true;
                    let rev = revision_of(req);
                    match self
                        .repos
                        .refresh_for_revision(target, repo.clone(), &rev)
                        .await
                    {
                        Some(r) => repo = r,
                        None => return Err(not_found(why)),
                    }
                }
                Err(ModError::UnknownRevision(why)) => {
                    self.repos.forget_revision(target, &revision_of(req));
                    return Err(not_found(why));
                }
                Err(ModError::NotFound(why)) => return Err(not_found(why)),
                Err(e @ ModError::Odb(_)) => {
                    tracing::warn!(module, error = %e, source = ?std::error::Error::source(&e), "module request failed");
                    return Err(plain(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("{module}: reading the stored repository failed"),
                    ));
                }
                Ok(a) => return Ok(a),
            }
        }
    }

    /// One answer from one version of the repository, on a blocking thread.
    async fn answer(
        &self,
        repo: &Arc<Repo>,
        code: &CodeRepo,
        req: &Request,
    ) -> Result<Answer, ModError> {
        let _turn = self.turns.clone().acquire_owned().await.ok();
        let git = Stored::new(&repo.index, repo.odb.clone());
        let (code, req) = (code.clone(), req.clone());
        let done = tokio::task::spawn_blocking(move || -> Result<Answer, ModError> {
            Ok(match req {
                Request::List => Answer::List(code.versions(&git)?),
                Request::Info(v) => Answer::Info(code.stat(&git, &v)?),
                Request::Latest => Answer::Info(code.latest(&git)?),
                Request::Mod(v) => Answer::Mod(code.go_mod(&git, &v)?),
                Request::Zip(v) => {
                    let (summary, bytes) = code.zip(&git, &v, Vec::new())?;
                    crate::metrics::MODULE_ZIPS_BUILT.inc();
                    tracing::info!(module = code.module_path(), version = %v, files = summary.files, bytes = bytes.len(), h1 = %summary.h1, "module zip built");
                    Answer::Zip(bytes, summary)
                }
            })
        })
        .await;
        match done {
            Ok(a) => a,
            Err(e) => Err(ModError::Odb(crate::odb::OdbError::Corrupt(format!(
                "module task failed: {e}"
            )))),
        }
    }
}

/// What the ledger holds for a request.
enum Recorded {
    /// The recorded answer.
    Answer(Response),
    /// A zip is recorded but its bytes are gone: rebuild, and check against this.
    ZipToRebuild(ZipEntry),
    /// Nothing yet.
    Nothing,
}

enum Answer {
    List(Vec<String>),
    Info(RevInfo),
    Mod(Vec<u8>),
    Zip(Vec<u8>, ZipSummary),
    /// Recorded bytes of an `info` or `mod`.
    Raw(&'static str, bytes::Bytes),
    /// A recorded zip.
    Stored(bytes::Bytes),
}

fn respond(answer: Answer, upstream: &str, code: &CodeRepo, headers: &HeaderMap) -> Response {
    match answer {
        Answer::List(list) => {
            let mut body = String::new();
            for v in list {
                body.push_str(&v);
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
        }
        Answer::Info(info) => (
            [(header::CONTENT_TYPE, "application/json")],
            info_json(&info, upstream, code.code_dir()),
        )
            .into_response(),
        Answer::Mod(data) => stored_response("mod", bytes::Bytes::from(data)),
        Answer::Zip(bytes, _) => zip_response(bytes::Bytes::from(bytes), headers),
        Answer::Raw(ext, b) => stored_response(ext, b),
        Answer::Stored(bytes) => zip_response(bytes, headers),
    }
}

fn stored_response(ext: &str, b: bytes::Bytes) -> Response {
    let ct = if ext == "info" {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, ct)], Body::from(b)).into_response()
}

/// The revision a request names (for the negative cache).
fn revision_of(req: &Request) -> String {
    match req {
        Request::Info(v) | Request::Mod(v) | Request::Zip(v) => v.clone(),
        Request::List | Request::Latest => String::new(),
    }
}

/// `.info` as the go command writes it: `Version`, `Time`, then `Origin`.
fn info_json(info: &RevInfo, upstream: &str, code_dir: &str) -> String {
    let q = |s: &str| serde_json::Value::from(s).to_string();
    let mut origin = format!("{{\"VCS\":\"git\",\"URL\":{}", q(upstream));
    if !code_dir.is_empty() {
        origin.push_str(&format!(",\"Subdir\":{}", q(code_dir)));
    }
    origin.push_str(&format!(",\"Hash\":{}", q(&info.name)));
    if let Some(r) = &info.reference {
        origin.push_str(&format!(",\"Ref\":{}", q(r)));
    }
    origin.push('}');
    format!(
        "{{\"Version\":{},\"Time\":{},\"Origin\":{origin}}}",
        q(&info.version),
        q(&super::module::format_rfc3339(info.time))
    )
}

/// A zip with `Content-Length`, a strong `ETag` and single-range support (`Range`,
/// `If-Range`), so that an interrupted download can be resumed.
fn zip_response(bytes: bytes::Bytes, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&bytes)));
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            headers
                .get(header::IF_RANGE)
                .is_none_or(|v| v.as_bytes() == etag.as_bytes())
        })
        .and_then(|r| parse_range(r, len));
    let mut resp = match range {
        Some((start, end)) => {
            let part = bytes.slice(start as usize..=end as usize);
            let mut r = (StatusCode::PARTIAL_CONTENT, Body::from(part)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            r
        }
        None => Body::from(bytes).into_response(),
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    resp
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `len`; anything else is ignored
/// (the whole body is sent).
fn parse_range(r: &str, len: u64) -> Option<(u64, u64)> {
    let spec = r.trim().strip_prefix("bytes=")?;
    if spec.contains(',') || len == 0 {
        return None;
    }
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (len.saturating_sub(n), len - 1)
        }
        (a, "") => (a.parse().ok()?, len - 1),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(len - 1)),
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn info_has_the_go_commands_field_order() {
        let info = RevInfo {
            version: "v1.0.0".into(),
            time: 1_700_000_000,
            name: "a".repeat(40),
            reference: Some("refs/tags/v1.0.0".into()),
        };
        let j = info_json(&info, "https://example.com/r", "");
        assert!(j.starts_with("{\"Version\":\"v1.0.0\",\"Time\":\"2023-11-14T22:13:20Z\",\"Origin\":{\"VCS\":\"git\""), "{j}");
    }
}
