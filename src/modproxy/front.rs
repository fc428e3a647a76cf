//! GOPROXY requests over HTTP: resolve the module's repository (the same rules, policy and
//! fill as the git front), open it, answer from its objects on a blocking thread.
//!
//! Status codes follow what the go command does with them: 404 for anything this proxy
//! cannot serve (unknown module, invalid or unknown version, a version that cannot be
//! zipped), so that a client with `GOPROXY=goprox,direct` goes on to the next entry; 5xx only
//! for faults that a retry may fix. Error bodies are `text/plain; charset=utf-8` (the go
//! command shows them) and name no store internals.

use super::Request;
use super::coderepo::{CodeRepo, ModError, RevInfo, canonical_version};
use super::ledger::{Ledger, LedgerError, ZipEntry};
use super::semver;
use super::source::Stored;
use super::sumdb::{Hashed, Verdict, Verifier};
use crate::access::Access;
use crate::fill::Failure;
use crate::refs::lease::{Acquire, Renewal};
use crate::repo::{Repo, Repos};
use crate::store::{Chunk, DynStore, PutMode, StoreError};
use crate::upstream::resolve::{ResolveError, Resolver, Target};
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
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
    /// Turns for zip builds (CPU-bound and holding a streamed upload each: fewer at once).
    pub zip_builds: &'a Arc<tokio::sync::Semaphore>,
    /// `--verify-sumdb`: a version's zip and go.mod hashes are checked against the checksum
    /// database before they are first recorded.
    pub verify: Option<&'a Verifier>,
}

/// Who builds a version's zip ([`Front::zip_turn`]).
enum ZipTurn {
    /// This request, holding the build lease (none when leases are off or unavailable).
    Build(Option<Renewal>),
    /// Another request built and recorded it meanwhile.
    Recorded(ZipEntry),
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
        let target = match self.module_target(module).await {
            Ok(t) => t,
            Err(resp) => return resp,
        };
        let code = match CodeRepo::new(module, &target.root) {
            Ok(c) => c.in_subdir(&target.subdir),
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
            match self.check_ledger(module, l, &req, headers).await {
                Ok(zip) => recorded_zip = zip,
                Err(resp) => return resp,
            }
        }
        // A zip nobody has recorded yet is built by one instance at a time; the others wait
        // for its record and serve that.
        let mut building = None;
        if let (Request::Zip(_), Some(l), None) = (&req, &ledger, &recorded_zip) {
            // The repository opens (ref index, pack index: store round trips) while the build
            // lease is taken; the build below then finds it open.
            let (turn, _) = tokio::join!(self.zip_turn(l), self.repos.open(&target));
            match turn {
                ZipTurn::Recorded(entry) => {
                    if let Ok(Some(resp)) = self.stored_zip(l, &entry, headers).await {
                        crate::metrics::MODULE_ANSWERS_STORED.inc();
                        return resp;
                    }
                }
                ZipTurn::Build(lease) => building = lease,
            }
        }
        let computed = self.compute(&target, &code, &req, ledger.as_ref()).await;
        let resp = self
            .finish(
                module,
                &target,
                &code,
                req,
                headers,
                ledger,
                recorded_zip,
                computed,
            )
            .await;
        if let Some(renewal) = building {
            // Off the response path: the zip is recorded, the lease only makes others wait.
            let store = self.repos.store.clone();
            let ttl = self.repos.filler.coordination().ttl;
            let module = module.to_string();
            crate::background::spawn(&tokio::runtime::Handle::current(), async move {
                end_zip_build(&store, ttl, &module, renewal).await;
            });
        }
        resp
    }

    /// The repository holding `module`, or the answer when there is none to serve it from
    /// (toolchains, modules refused by `--allow`/`--deny`, unknown modules: 404; discovery
    /// failing for a module not stored: 502).
    async fn module_target(&self, module: &str) -> Result<Target, Response> {
        if module == "golang.org/toolchain" || module.starts_with("golang.org/toolchain/") {
            return Err(not_found(format!(
                "{module}: toolchains are not served by this proxy"
            )));
        }
        if let Err(why) = self.access.check(module) {
            return Err(not_found(why));
        }
        match self.resolver.resolve(module).await {
            Ok(t) => Ok(t),
            Err(e @ ResolveError::NotFound(..)) => Err(not_found(e)),
            Err(e @ ResolveError::Refused(_)) => Err(not_found(e)),
            Err(e @ ResolveError::Discovery(..)) => match self.repos.stored_target(module).await {
                Some(t) => Ok(t),
                None => {
                    tracing::warn!(module, error = %e, "module discovery failed");
                    Err(plain(
                        StatusCode::BAD_GATEWAY,
                        format!("{module}: discovery failed"),
                    ))
                }
            },
        }
    }

    /// What the ledger holds for the request: Err with the recorded answer; Ok with a zip
    /// whose record outlived its bytes (to rebuild and check against), or with nothing (an
    /// unreadable ledger too: the answer is then built).
    async fn check_ledger(
        &self,
        module: &str,
        l: &Ledger<'_>,
        req: &Request,
        headers: &HeaderMap,
    ) -> Result<Option<ZipEntry>, Response> {
        match self.recorded(l, req, headers).await {
            Ok(Recorded::Answer(resp)) => {
                crate::metrics::MODULE_ANSWERS_STORED.inc();
                Err(resp)
            }
            Ok(Recorded::ZipToRebuild(e)) => Ok(Some(e)),
            Ok(Recorded::Nothing) => Ok(None),
            Err(e) => {
                tracing::warn!(module, error = %e, source = ?std::error::Error::source(&e), "module ledger unreadable; building");
                Ok(None)
            }
        }
    }

    /// Whose turn it is to build a version's zip: this request's (holding the build lease
    /// when leases are on), or another's that recorded it while this one waited. Waiting is
    /// bounded by `--lease-max-wait` (then the zip is built here too: the ledger keeps the
    /// first record and checks the second against it).
    async fn zip_turn(&self, l: &Ledger<'_>) -> ZipTurn {
        let coord = self.repos.filler.coordination();
        if !coord.leases {
            return ZipTurn::Build(None);
        }
        let store = &self.repos.store;
        let key = l.build_lease_key();
        let deadline = tokio::time::Instant::now() + coord.max_wait;
        let mut pause = std::time::Duration::from_millis(50);
        let mut waited = false;
        loop {
            match crate::refs::lease::try_acquire(store, &key, &coord.holder, coord.ttl).await {
                Ok(Acquire::Acquired(lease)) => {
                    // Built and recorded between our read of the ledger and now?
                    if let Ok(Some(entry)) = l.zip_entry().await {
                        let _ = lease.remove(store, coord.ttl).await;
                        return ZipTurn::Recorded(entry);
                    }
                    let renewal =
                        crate::refs::lease::spawn_renewal(store.clone(), lease, coord.ttl);
                    crate::fill::pause_point("zip-build").await;
                    return ZipTurn::Build(Some(renewal));
                }
                Ok(Acquire::Held { holder, .. }) => {
                    if !waited {
                        waited = true;
                        crate::metrics::MODULE_ZIP_BUILD_WAITS.inc();
                        tracing::info!(lease = %key, holder = %holder, "another request is building this zip; waiting for its record");
                    }
                }
                Err(e) => {
                    tracing::warn!(lease = %key, error = %e, "zip build lease unavailable; building without it");
                    return ZipTurn::Build(None);
                }
            }
            if tokio::time::Instant::now() + pause > deadline {
                return ZipTurn::Build(None);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(500));
            if let Ok(Some(entry)) = l.zip_entry().await {
                return ZipTurn::Recorded(entry);
            }
        }
    }

    /// The answer to a computed request: recorded in the ledger when it has one (checked
    /// against the checksum database first with `--verify-sumdb`), then sent.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        module: &str,
        target: &Target,
        code: &CodeRepo,
        req: Request,
        headers: &HeaderMap,
        ledger: Option<Ledger<'_>>,
        recorded_zip: Option<ZipEntry>,
        computed: Result<Answer, Response>,
    ) -> Response {
        let answer = match computed {
            Ok(a) => a,
            Err(resp) => return resp,
        };
        let Some(l) = ledger else {
            return respond(answer, &target.upstream, code, headers);
        };
        if recorded_zip.is_none()
            && let Some(refused) = self.verified(module, &revision_of(&req), &answer).await
        {
            return refused;
        }
        match self
            .record(&l, answer, recorded_zip.as_ref(), &target.upstream, code)
            .await
        {
            Ok(Answer::Recorded(entry)) => match self.stored_zip(&l, &entry, headers).await {
                Ok(Some(resp)) => resp,
                Ok(None) | Err(_) => plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("{module}: the module zip was built but cannot be read back"),
                ),
            },
            Ok(a) => respond(a, &target.upstream, code, headers),
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

    /// With `--verify-sumdb`, check a version's first zip or go.mod against the checksum
    /// database; the refusal to send when it must not be recorded: 410 for a hash the database
    /// records differently, 502 when the database cannot say (never served unverified).
    async fn verified(&self, module: &str, version: &str, answer: &Answer) -> Option<Response> {
        let verifier = self.verify?;
        let (what, built) = match answer {
            Answer::Built(entry) => (Hashed::Zip, entry.h1.clone()),
            Answer::Mod(data) => (Hashed::GoMod, super::modzip::go_mod_hash(data)),
            _ => return None,
        };
        let label = match what {
            Hashed::Zip => "module",
            Hashed::GoMod => "go.mod",
        };
        let db = verifier.database();
        match verifier.verify(module, version, what, &built).await {
            Verdict::Private | Verdict::Match => None,
            Verdict::Unknown => {
                tracing::info!(
                    module,
                    version,
                    db,
                    what = label,
                    "the checksum database has no record of this version; serving it"
                );
                None
            }
            Verdict::Mismatch(recorded) => {
                tracing::error!(module, version, db, what = label, built = %built, recorded = %recorded, "checksum database mismatch: refusing to serve this version");
                Some(plain(
                    StatusCode::GONE,
                    format!(
                        "verifying {label}: checksum mismatch: built {built}, checksum database {recorded}"
                    ),
                ))
            }
            Verdict::Error(why) => {
                tracing::warn!(module, version, db, what = label, reason = %why, "cannot verify against the checksum database: not served");
                Some(plain(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "{module}@{version}: cannot verify against checksum database {db}: {why}"
                    ),
                ))
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
                return Ok(match self.stored_zip(l, &entry, headers).await? {
                    Some(resp) => Recorded::Answer(resp),
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
            Answer::Built(entry) => {
                if let Some(first) = recorded_zip {
                    l.check(first, &entry.h1)?;
                }
                l.record_zip(&entry).await?;
                Ok(Answer::Recorded(entry))
            }
            other => Ok(other),
        }
    }

    /// The stored zip of a ledger entry as a response streamed from the store (whole or the
    /// requested range); `None` when the zip is not in the store.
    async fn stored_zip(
        &self,
        l: &Ledger<'_>,
        entry: &ZipEntry,
        headers: &HeaderMap,
    ) -> Result<Option<Response>, LedgerError> {
        let etag = format!("\"{}\"", entry.sha256);
        let range = requested_range(headers, &etag, entry.size);
        let (start, end) = range.unwrap_or((0, entry.size.saturating_sub(1)));
        let first_len = (end + 1 - start).min(ZIP_CHUNK);
        let Some(first) = l.zip_range(entry, start, first_len).await? else {
            return Ok(None);
        };
        let store = self.repos.store.clone();
        let key = l.zip_key(&entry.h1);
        let next = start + first.len() as u64;
        let rest = futures::stream::unfold(next, move |at| {
            let (store, key) = (store.clone(), key.clone());
            async move {
                if at > end {
                    return None;
                }
                let len = (end + 1 - at).min(ZIP_CHUNK);
                match store.get_range(&key, at, len).await {
                    Ok(b) if !b.is_empty() => Some((Ok(b), at + len)),
                    Ok(_) => Some((
                        Err(std::io::Error::other("stored zip ended early")),
                        end + 1,
                    )),
                    Err(e) => {
                        tracing::warn!(key = %key, error = %e, "reading a stored module zip failed mid-stream");
                        Some((Err(std::io::Error::other("store read failed")), end + 1))
                    }
                }
            }
        });
        let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(rest);
        let mut resp = Body::from_stream(body).into_response();
        if range.is_some() {
            *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{}", entry.size)) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
        }
        zip_headers(&mut resp, &etag, end + 1 - start);
        Ok(Some(resp))
    }

    /// Open the repository (filling it on a miss) and answer from its objects; a revision it
    /// lacks triggers one refresh.
    async fn compute(
        &self,
        target: &Target,
        code: &CodeRepo,
        req: &Request,
        ledger: Option<&Ledger<'_>>,
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
                    Failure::StoreUnavailable => plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{module}: the store is unavailable, try again later"),
                    ),
                });
            }
        };
        let mut refreshed = false;
        loop {
            match self.answer(&repo, code, req, ledger).await {
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
                Err(e @ ModError::Write(_)) => {
                    tracing::warn!(module, error = %e, source = ?std::error::Error::source(&e), "module zip not stored");
                    return Err(plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{module}: the store is unavailable"),
                    ));
                }
                Ok(a) => return Ok(a),
            }
        }
    }

    /// One answer from one version of the repository, on a blocking thread. A zip with a
    /// ledger is streamed into the store as it is written (bounded memory), under the key its
    /// h1 names; without one it is built in memory.
    async fn answer(
        &self,
        repo: &Arc<Repo>,
        code: &CodeRepo,
        req: &Request,
        ledger: Option<&Ledger<'_>>,
    ) -> Result<Answer, ModError> {
        let turns = match req {
            Request::Zip(_) => self.zip_builds,
            _ => self.turns,
        };
        let _turn = turns.clone().acquire_owned().await.ok();
        let git = Stored::new(&repo.index, repo.odb.clone());
        let (code, req) = (code.clone(), req.clone());
        if let (Request::Zip(v), Some(l)) = (&req, ledger) {
            let v = v.clone();
            let (h1_tx, h1_rx) = tokio::sync::oneshot::channel::<String>();
            let (tx, rx) = tokio::sync::mpsc::channel::<Chunk>(4);
            let build = tokio::task::spawn_blocking(move || -> Result<ZipEntry, ModError> {
                let (summary, out) = code.zip_to(&git, &v, |h1| {
                    let _ = h1_tx.send(h1.to_string());
                    Ok(ChunkWriter::new(tx))
                })?;
                let (sha256, size) = out.finish().map_err(ModError::Write)?;
                crate::metrics::MODULE_ZIPS_BUILT.inc();
                tracing::info!(module = code.module_path(), version = %v, files = summary.files, bytes = size, h1 = %summary.h1, "module zip built");
                Ok(ZipEntry {
                    h1: summary.h1,
                    commit: summary.commit,
                    sha256,
                    size,
                })
            });
            let store = &self.repos.store;
            let put = async move {
                let h1 = h1_rx.await.ok()?;
                Some(
                    store
                        .put_stream(&l.zip_key(&h1), rx, PutMode::CreateOnly)
                        .await,
                )
            };
            let (built, put) = tokio::join!(build, put);
            let entry = match built {
                Ok(r) => r?,
                Err(e) => return Err(ModError::Write(std::io::Error::other(e.to_string()))),
            };
            return match put {
                Some(Ok(_)) | Some(Err(StoreError::PreconditionFailed)) => Ok(Answer::Built(entry)),
                Some(Err(e)) => Err(ModError::Write(std::io::Error::other(e))),
                None => Err(ModError::Write(std::io::Error::other(
                    "the zip was never opened",
                ))),
            };
        }
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
                    Answer::Zip(bytes)
                }
            })
        })
        .await;
        match done {
            Ok(a) => a,
            Err(e) => Err(ModError::Write(std::io::Error::other(format!(
                "module task failed: {e}"
            )))),
        }
    }
}

/// A zip on its way into the store: chunks of about 1 MiB to a streamed write, hashed as
/// they go (the SHA-256 is the zip's ETag).
struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Chunk>,
    buf: Vec<u8>,
    hash: sha2::Sha256,
    size: u64,
}

impl ChunkWriter {
    const CHUNK: usize = 1 << 20;

    fn new(tx: tokio::sync::mpsc::Sender<Chunk>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(Self::CHUNK),
            hash: sha2::Sha256::new(),
            size: 0,
        }
    }

    fn send(&mut self, chunk: Chunk) -> std::io::Result<()> {
        self.tx
            .blocking_send(chunk)
            .map_err(|_| std::io::Error::other("the store stopped taking the zip"))
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(Self::CHUNK));
        self.send(Chunk::Data(bytes::Bytes::from(data)))
    }

    /// Send the rest and the end; the SHA-256 (hex) and size of what was written.
    fn finish(mut self) -> std::io::Result<(String, u64)> {
        self.flush_buf()?;
        self.send(Chunk::End)?;
        Ok((hex::encode(self.hash.finalize_reset()), self.size))
    }
}

impl std::io::Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.hash.update(data);
        self.size += data.len() as u64;
        self.buf.extend_from_slice(data);
        if self.buf.len() >= Self::CHUNK {
            self.flush_buf()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
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
    /// A zip built in memory (no ledger).
    Zip(Vec<u8>),
    /// A zip built into the store, not yet recorded.
    Built(ZipEntry),
    /// Recorded bytes of an `info` or `mod`.
    Raw(&'static str, bytes::Bytes),
    /// A recorded zip, in the store.
    Recorded(ZipEntry),
}

/// Give up a zip build lease: stop renewing it and remove it.
async fn end_zip_build(store: &DynStore, ttl: std::time::Duration, module: &str, renewal: Renewal) {
    if let Some(lease) = renewal.stop().await
        && let Err(e) = lease.remove(store, ttl).await
    {
        tracing::debug!(module, error = %e, "zip build lease not removed; it expires");
    }
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
        Answer::Zip(bytes) => zip_response(bytes::Bytes::from(bytes), headers),
        Answer::Raw(ext, b) => stored_response(ext, b),
        Answer::Built(_) | Answer::Recorded(_) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a stored module zip is served from the ledger",
        ),
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

/// Largest piece of a stored zip read from the store at once while streaming it.
const ZIP_CHUNK: u64 = 4 << 20;

/// The range a request asks for (`Range`, honoured only when `If-Range` is absent or names
/// `etag`), within `len`.
fn requested_range(headers: &HeaderMap, etag: &str, len: u64) -> Option<(u64, u64)> {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .filter(|_| {
            headers
                .get(header::IF_RANGE)
                .is_none_or(|v| v.as_bytes() == etag.as_bytes())
        })
        .and_then(|r| parse_range(r, len))
}

/// The headers of every zip answer: type, length, a strong ETag and byte ranges.
fn zip_headers(resp: &mut Response, etag: &str, len: u64) {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
}

/// A zip held in memory, whole or the requested range.
fn zip_response(bytes: bytes::Bytes, headers: &HeaderMap) -> Response {
    let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&bytes)));
    let len = bytes.len() as u64;
    let (mut resp, sent) = match requested_range(headers, &etag, len) {
        Some((start, end)) => {
            let part = bytes.slice(start as usize..=end as usize);
            let mut r = (StatusCode::PARTIAL_CONTENT, Body::from(part)).into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            (r, end + 1 - start)
        }
        None => (Body::from(bytes).into_response(), len),
    };
    zip_headers(&mut resp, &etag, sent);
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
