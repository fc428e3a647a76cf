//! HTTP front: go-get meta pages, smart-HTTP upload-pack (read-only), health (`/healthz`:
//! the process is up; `/readyz`: the store answers), metrics, the operators' page
//! ([`status`]) and push hooks ([`hooks`]).
//! Repository paths are free-form import paths, so routing is done by hand in [`dispatch`].

use crate::metrics;
use crate::path;
use crate::protocol::request::{self, V2Request};
use crate::protocol::{advertise, pktline, upload_pack};
use crate::repo::{OpenError, Opened, Repo, Repos};
use crate::upstream::resolve::{ResolveError, Resolver, Target};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::io::Read;
use std::sync::Arc;

pub mod auth;
pub mod hooks;
pub mod server;
pub mod status;

/// Default largest accepted request body (also after gzip decoding).
pub const MAX_BODY: usize = 64 << 20;

/// Per-request limits (`--max-request-bytes`, `--max-wants`, `--max-haves`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body, before and after gzip decoding (413 beyond it).
    pub max_request_bytes: usize,
    /// Most `want` lines in one upload-pack request (a clean `ERR` beyond it).
    pub max_wants: usize,
    /// Most `have` lines in one upload-pack request (a clean `ERR` beyond it).
    pub max_haves: usize,
    /// A request body must arrive within this (408 beyond it), so a client trickling a body
    /// cannot hold a connection and its buffer.
    pub body_timeout: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: MAX_BODY,
            max_wants: 10_000,
            max_haves: 100_000,
            body_timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// Everything a request handler needs, shared by all requests.
pub struct AppState {
    /// The repositories: open snapshots, fills and refreshes.
    pub repos: Arc<Repos>,
    /// Maps import paths to their upstream repositories.
    pub resolver: Resolver,
    /// Base URL for go-import tags; `None`: from the request.
    pub public_url: Option<String>,
    /// Our own address, used for proxy (absolute-form) requests when no public URL is set.
    pub listen_url: String,
    /// goprox serves TLS itself (`--tls-cert`): go-import tags say `https://`.
    pub tls: bool,
    /// `--auth-file`: clients must authenticate (HTTP basic) on every route but `/healthz`,
    /// `/readyz` and the push hooks (`POST /-/hooks/…`, which carry their own credentials).
    pub auth: Option<Arc<crate::http::auth::Users>>,
    /// Request size limits.
    pub limits: Limits,
    /// `--allow` / `--deny`: which import paths may be served and filled.
    pub access: crate::access::Access,
    /// The store failed the start-up probe (conditional writes not honoured) and goprox runs
    /// with `--single-instance`: cross-instance protection (leases, compare-and-swap) cannot
    /// be relied on, so in-process locking has to stand in for it.
    pub single_instance: bool,
    /// `--trust-forwarded-headers`: the go-get page believes `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` (set it only behind a proxy that sets them itself).
    pub trust_forwarded: bool,
    /// Turns for negotiation and pack generation (`--max-pack-generations`).
    pub pack_generations: Arc<tokio::sync::Semaphore>,
    /// Turns for module zip builds (`--max-zip-builds`).
    pub zip_builds: Arc<tokio::sync::Semaphore>,
    /// `--sumdb`: the checksum-database relay (`/sumdb/<name>/…`); `None` with `--sumdb off`.
    pub sumdb: Option<Arc<crate::modproxy::sumdb::Relay>>,
    /// `--verify-sumdb`: module versions are checked against the checksum database before
    /// they are first served.
    pub verify: Option<Arc<crate::modproxy::sumdb::Verifier>>,
    /// `--go-import`: what go-get pages point the go command at.
    pub go_import: GoImport,
    /// The operators' page (`/`, `/-/status`, `/-/status.json`).
    pub status: Arc<status::Status>,
    /// Push hooks (`/-/hooks/…`).
    pub hooks: Arc<hooks::Hooks>,
}

/// What a `?go-get=1` page's go-import tag names (`--go-import`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GoImport {
    /// `<root> git <base>/<root>`: the repository, over git smart HTTP.
    #[default]
    Git,
    /// `<root> mod <base>`: goprox as the module's proxy (the GOPROXY protocol), also for a
    /// go command with `GOPROXY=direct`.
    Mod,
}

impl AppState {
    /// Whether an absolute-form request names goprox's own address (rather than an import
    /// path's host): our listen or public address, or any IP literal / `localhost`, which are
    /// never Go import-path hosts.
    fn is_self(&self, a: &axum::http::uri::Authority) -> bool {
        let host = a.host().trim_start_matches('[').trim_end_matches(']');
        if host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok() {
            return true;
        }
        let ours = |url: &str| {
            url.split_once("://")
                .map(|(_, rest)| {
                    rest.split('/')
                        .next()
                        .unwrap_or_default()
                        .eq_ignore_ascii_case(a.as_str())
                })
                .unwrap_or(false)
        };
        ours(&self.listen_url) || self.public_url.as_deref().is_some_and(ours)
    }
}

/// The axum router for every route goprox serves (git, go-get, module proxy, sumdb, status,
/// hooks, metrics, health), with authentication and body limits applied.
pub fn router(state: Arc<AppState>) -> Router {
    let auth = state.auth.clone();
    let max_body = state.limits.max_request_bytes;
    let limits = state.limits;
    let r = Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(axum::middleware::from_fn_with_state(limits, read_body))
        .with_state(state);
    let r = match auth {
        Some(users) => r.layer(axum::middleware::from_fn_with_state(
            users,
            crate::http::auth::require_auth,
        )),
        None => r,
    };
    // Outermost: every request (also one refused by auth) gets an id and a span, and is
    // measured.
    r.layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::from_fn(measure))
}

/// Count the request and record its latency by route and status class once the response body
/// is finished (or dropped: the client went away).
async fn measure(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = metrics::Route::of(req.uri());
    metrics::HTTP_REQUESTS.inc();
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    resp.map(|body| {
        Body::new(Timed {
            body,
            route,
            status,
            started,
        })
    })
}

/// A response body that records its request's latency when it is dropped.
struct Timed {
    body: Body,
    route: metrics::Route,
    status: u16,
    started: std::time::Instant,
}

impl Drop for Timed {
    fn drop(&mut self) {
        metrics::http_request(self.route, self.status, self.started.elapsed());
    }
}

impl axum::body::HttpBody for Timed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Give the request an id (the client's `X-Request-Id` if it is short and plain, else a new
/// one), run it inside a tracing span carrying the id, method and path, and return the id in
/// the response's `X-Request-Id`.
async fn request_id(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use std::sync::atomic::{AtomicU64, Ordering};
    use tracing::Instrument;
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let given = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string);
    let id = given.unwrap_or_else(|| {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        format!(
            "{:x}-{:x}-{}",
            start,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        )
    });
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %req.method(),
        path = %req.uri().path()
    );
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// Read a request body whole, within [`Limits::body_timeout`] and [`Limits::max_request_bytes`]:
/// 413 before reading anything when `Content-Length` is already too large, 413 as soon as the
/// bytes read pass the limit, 408 when the body is not complete in time.
async fn read_body(
    State(limits): State<Limits>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    use futures::StreamExt;
    let max = limits.max_request_bytes;
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body too large (limit {max} bytes, --max-request-bytes)"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return too_large();
    }
    if declared == Some(0) || req.method() == Method::GET || req.method() == Method::HEAD {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = bytes::BytesMut::new();
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| None)?;
            if buf.len() + chunk.len() > max {
                return Err(Some(()));
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(limits.body_timeout, read).await {
        Ok(Ok(())) => {}
        Ok(Err(Some(()))) => return too_large(),
        Ok(Err(None)) => return text(StatusCode::BAD_REQUEST, "cannot read the request body"),
        Err(_) => {
            return text(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "request body not received within {:?} (--body-timeout)",
                    limits.body_timeout
                ),
            );
        }
    }
    let req = axum::extract::Request::from_parts(parts, Body::from(buf.freeze()));
    next.run(req).await
}

/// The operators' page, or its JSON twin.
async fn status_page(st: &AppState, uri: &Uri, json: bool) -> Response {
    let query = match axum::extract::Query::<status::Query>::try_from_uri(uri) {
        Ok(q) => q.0,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("bad query: {e}")),
    };
    let report = status::report(
        &st.status,
        &st.repos.store,
        &st.repos.activity,
        st.repos.in_progress(),
        &query,
    )
    .await;
    let mut resp = if json {
        match serde_json::to_vec_pretty(&report) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    } else {
        (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            status::render_html(&report),
        )
            .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut m: String = msg.into();
    if !m.ends_with('\n') {
        m.push('\n');
    }
    if status.is_client_error() || status.is_server_error() {
        metrics::REQUEST_ERRORS.inc();
    }
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        m,
    )
        .into_response()
}

fn git_body(content_type: &'static str, body: Body) -> Response {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

const ADVERTISEMENT: &str = "application/x-git-upload-pack-advertisement";
const RESULT: &str = "application/x-git-upload-pack-result";

enum Action {
    InfoRefs { service: String },
    UploadPack,
    ReceivePack,
    GoGet,
}

/// What goprox serves of a repository ([`admit_action`]).
enum Served {
    /// `GET …/info/refs?service=git-upload-pack`.
    Advertisement,
    /// `POST …/git-upload-pack`.
    UploadPack,
    /// `GET …?go-get=1`.
    GoGet,
}

fn query_param<'a>(uri: &'a Uri, name: &str) -> Option<&'a str> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then_some(v)
    })
}

/// goprox's own routes (health, metrics, the operators' page, hooks, and the rest of `/-/`):
/// `None` for everything else (repositories and modules).
async fn own_route(
    st: &Arc<AppState>,
    method: &Method,
    raw: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> Option<Response> {
    Some(match (method.clone(), raw) {
        (Method::GET, "healthz") => text(StatusCode::OK, "ok"),
        (Method::GET, "readyz") => {
            match crate::store::ready(st.repos.store.as_ref(), !st.single_instance).await {
                Ok(()) => text(StatusCode::OK, "ready"),
                Err(e) => {
                    tracing::warn!(error = %e, "not ready");
                    text(StatusCode::SERVICE_UNAVAILABLE, e.public)
                }
            }
        }
        (Method::GET, "metrics") => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics::render(st.repos.io.figures()),
        )
            .into_response(),
        (Method::GET | Method::HEAD, "" | "-/status" | "-/status.json") => {
            status_page(st, uri, raw.ends_with(".json")).await
        }
        (Method::POST, hook) if hook.starts_with("-/hooks/") => {
            let Some(sender) = hooks::Sender::from_path(&hook["-/hooks/".len()..]) else {
                return Some(text(
                    StatusCode::NOT_FOUND,
                    "no such hook (github, gitlab, gitea, refresh)",
                ));
            };
            let repo = query_param(uri, "repo").and_then(|r| path::percent_decode(r).ok());
            let a = st
                .hooks
                .handle(sender, st, headers, repo.as_deref(), body)
                .await;
            text(a.status, a.message)
        }
        (_, other) if other == "-" || other.starts_with("-/") => text(
            StatusCode::NOT_FOUND,
            "not found (goprox's own pages: /-/status, /-/status.json, POST /-/hooks/…)",
        ),
        _ => return None,
    })
}

async fn dispatch(
    State(st): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (raw, absolute) = request_path(&st, &uri);
    if !absolute && let Some(resp) = own_route(&st, &method, &raw, &uri, &headers, &body).await {
        return resp;
    }
    let decoded = match path::percent_decode(&raw) {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    // The checksum-database relay: `sumdb` (no dot) is never an import path's first element.
    if let Some(tail) = decoded.strip_prefix("sumdb/").filter(|_| !absolute) {
        return sumdb(&st, &method, tail).await;
    }
    // The module front: `@` never occurs in an import path, so these never name a
    // repository.
    if let Some(parsed) = crate::modproxy::parse_request(&decoded) {
        return module_front(&st, &method, parsed, &headers).await;
    }
    let (repo_path, served, target) = match repository_request(&st, &method, &uri, &decoded).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    match served {
        Served::GoGet => go_get(&st, &target, &headers, &uri, absolute),
        Served::Advertisement => advertisement(&st, &target, repo_path, &headers).await,
        Served::UploadPack => upload_pack_post(&st, &target, repo_path, &headers, body).await,
    }
}

/// The request's path without its leading and trailing `/`, and whether it came as a proxy
/// request naming an import path's host (then the path's first element).
fn request_path(st: &AppState, uri: &Uri) -> (String, bool) {
    let raw_path = uri.path().trim_start_matches('/');
    // Proxy requests (absolute-form request line) carry the import path's host in the URI.
    // Requests addressed to goprox itself through a proxy are ordinary requests.
    let (raw, absolute) = match uri.authority() {
        Some(a) if !st.is_self(a) => (format!("{}/{raw_path}", a.host()), true),
        _ => (raw_path.to_string(), false),
    };
    (raw.trim_end_matches('/').to_string(), absolute)
}

/// The checksum-database relay (`/sumdb/<name>/…`); `tail` is the path after `sumdb/`.
async fn sumdb(st: &AppState, method: &Method, tail: &str) -> Response {
    if *method != Method::GET && *method != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "the checksum database takes GET",
        );
    }
    let (name, rest) = tail.split_once('/').unwrap_or((tail, ""));
    match &st.sumdb {
        Some(relay) => relay.serve(name, rest).await,
        None => text(
            StatusCode::NOT_FOUND,
            "goprox does not proxy checksum databases (--sumdb off)",
        ),
    }
}

/// The module front (the GOPROXY protocol), for a path [`crate::modproxy::parse_request`]
/// recognised.
async fn module_front(
    st: &AppState,
    method: &Method,
    parsed: Result<(String, crate::modproxy::Request), String>,
    headers: &HeaderMap,
) -> Response {
    if *method != Method::GET && *method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "the module proxy takes GET");
    }
    match parsed {
        Err(why) => text(StatusCode::BAD_REQUEST, why),
        Ok((module, req)) => {
            let front = crate::modproxy::front::Front {
                repos: &st.repos,
                resolver: &st.resolver,
                access: &st.access,
                turns: &st.pack_generations,
                zip_builds: &st.zip_builds,
                verify: st.verify.as_deref(),
            };
            front.serve(&module, req, headers).await
        }
    }
}

/// A request for a repository (git smart HTTP or a go-get page), checked: the repository
/// path (without `.git`), what is asked of it, and where it comes from. A refusal is the
/// response to send.
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
async fn repository_request<'a>(
    st: &AppState,
    method: &Method,
    uri: &Uri,
    decoded: &'a str,
) -> Result<(&'a str, Served, Target), Response> {
    let (repo_path, action) = classify(decoded, uri)?;
    let repo_path = admit_path(st, repo_path)?;
    let served = admit_action(action, method)?;
    let target = resolve_target(st, repo_path).await?;
    Ok((repo_path, served, target))
}

/// Which git smart-HTTP request (or go-get page) a decoded path is, and the repository path
/// it names; any other path is refused (400 when it is no valid path, else 404).
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
fn classify<'a>(decoded: &'a str, uri: &Uri) -> Result<(&'a str, Action), Response> {
    if let Some(p) = decoded.strip_suffix("/info/refs") {
        let service = query_param(uri, "service").unwrap_or_default().to_string();
        Ok((p, Action::InfoRefs { service }))
    } else if let Some(p) = decoded.strip_suffix("/git-upload-pack") {
        Ok((p, Action::UploadPack))
    } else if let Some(p) = decoded.strip_suffix("/git-receive-pack") {
        Ok((p, Action::ReceivePack))
    } else if query_param(uri, "go-get") == Some("1") {
        Ok((decoded, Action::GoGet))
    } else {
        if let Err(e) = path::validate(decoded) {
            return Err(text(StatusCode::BAD_REQUEST, e.to_string()));
        }
        Err(text(
            StatusCode::NOT_FOUND,
            format!("not found: /{decoded} (goprox serves git smart HTTP and ?go-get=1)"),
        ))
    }
}

/// The repository path without `.git`, once it is a valid path that `--allow` / `--deny`
/// let through.
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
fn admit_path<'a>(st: &AppState, repo_path: &'a str) -> Result<&'a str, Response> {
    let repo_path = repo_path.strip_suffix(".git").unwrap_or(repo_path);
    if let Err(e) = path::validate(repo_path) {
        return Err(text(StatusCode::BAD_REQUEST, e.to_string()));
    }
    // Before anything else looks at the path (and long before any upstream contact).
    if let Err(why) = st.access.check(repo_path) {
        return Err(text(StatusCode::FORBIDDEN, why));
    }
    Ok(repo_path)
}

/// What goprox serves of a repository request: pushes and dumb HTTP are refused (403), and
/// each kind takes only its own method (405).
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
fn admit_action(action: Action, method: &Method) -> Result<Served, Response> {
    let served = match action {
        Action::ReceivePack => {
            return Err(text(StatusCode::FORBIDDEN, "goprox is a read-only mirror"));
        }
        Action::InfoRefs { ref service } if service == "git-receive-pack" => {
            return Err(text(StatusCode::FORBIDDEN, "goprox is a read-only mirror"));
        }
        Action::InfoRefs { ref service } if service != "git-upload-pack" => {
            return Err(text(
                StatusCode::FORBIDDEN,
                "goprox serves only smart HTTP git-upload-pack (dumb HTTP is not supported)",
            ));
        }
        Action::InfoRefs { .. } => Served::Advertisement,
        Action::UploadPack => Served::UploadPack,
        Action::GoGet => Served::GoGet,
    };
    if *method != Method::GET && !matches!(served, Served::UploadPack) {
        return Err(text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"));
    }
    if *method != Method::POST && matches!(served, Served::UploadPack) {
        return Err(text(
            StatusCode::METHOD_NOT_ALLOWED,
            "git-upload-pack takes POST",
        ));
    }
    Ok(served)
}

/// The repository `repo_path` is in (through the resolver, or what the store has when the
/// vanity host is down).
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
async fn resolve_target(st: &AppState, repo_path: &str) -> Result<Target, Response> {
    match st.resolver.resolve(repo_path).await {
        Ok(t) => Ok(t),
        Err(e @ ResolveError::NotFound(..)) => Err(text(StatusCode::NOT_FOUND, e.to_string())),
        Err(e @ ResolveError::Discovery(..)) => match st.repos.stored_target(repo_path).await {
            // The vanity host is down: serve what the store has for the path.
            Some(t) => Ok(t),
            None => Err(text(StatusCode::BAD_GATEWAY, e.to_string())),
        },
        Err(ResolveError::Refused(r)) => {
            tracing::info!(path = %repo_path, refused = %r, "upstream refused by policy");
            Err(text(StatusCode::FORBIDDEN, r.to_string()))
        }
    }
}

/// Open the repository for a git request, which must name its root (404 otherwise); a fill
/// may still be under way.
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
async fn open_root(st: &AppState, target: &Target, repo_path: &str) -> Result<Opened, Response> {
    if target.root != repo_path {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "{repo_path} is not a repository root; the repository is {}",
                target.root
            ),
        ));
    }
    st.repos
        .open_early(target)
        .await
        .map_err(|e| open_error(target, e))
}

/// `GET …/info/refs?service=git-upload-pack`: the advertisement ([`info_refs`]).
async fn advertisement(
    st: &AppState,
    target: &Target,
    repo_path: &str,
    headers: &HeaderMap,
) -> Response {
    let version = protocol_version(headers);
    let opened = match open_root(st, target, repo_path).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    git_body(
        ADVERTISEMENT,
        Body::from(info_refs(opened.index(), version)),
    )
}

/// `POST …/git-upload-pack`: v2's `ls-refs`, or a fetch ([`serve_fetch`]).
async fn upload_pack_post(
    st: &AppState,
    target: &Target,
    repo_path: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let v2 = protocol_version(headers) == 2;
    let opened = match open_root(st, target, repo_path).await {
        Ok(o) => o,
        Err(resp) => return resp,
    };
    match parse_upload(st, v2, headers, body) {
        Err(resp) => resp,
        Ok(Parsed::LsRefs(ls)) => {
            git_body(RESULT, Body::from(advertise::ls_refs(opened.index(), &ls)))
        }
        Ok(Parsed::Fetch(req, version)) => serve_fetch(st, target, opened, req, version).await,
    }
}

/// Answer a fetch from the stored repository, or, while it is being filled, from the fill's
/// pack as it arrives (a clone of everything) or once the fill is done.
async fn serve_fetch(
    st: &AppState,
    target: &Target,
    opened: Opened,
    req: request::FetchRequest,
    version: upload_pack::Version,
) -> Response {
    let repo = match opened {
        Opened::Ready(repo) => repo,
        Opened::Filling(f) => {
            // A clone of everything follows the fill's pack as it arrives.
            if let Some(head) = upload_pack::fill_pack_head(&req, version, &f.index)
                && let Some(feed) = f.follow()
            {
                return pass_through(req, version, head, feed);
            }
            if let Err(e) = f.wait().await {
                // The client has the refs already: say why on the git level,
                // which it shows (it does not show the body of a failed POST).
                tracing::warn!(root = %target.root, error = %e, "fill failed");
                return err_response(&format!(
                    "cannot fill {}: {}",
                    target.root,
                    e.public_message()
                ));
            }
            match st.repos.open(target).await {
                Ok(r) => r,
                Err(e) => return open_error(target, e),
            }
        }
    };
    upload(st, target, repo, req, version).await
}

/// The `info/refs` advertisement: v2's capabilities, or v0's (v1's) refs.
fn info_refs(index: &crate::refs::RefIndex, version: u8) -> Vec<u8> {
    if version == 2 {
        return advertise::v2_capabilities();
    }
    let mut b = Vec::new();
    pktline::write_line(&mut b, "# service=git-upload-pack");
    pktline::write_flush(&mut b);
    if version == 1 {
        // Protocol v1 is v0 with this line first (C git does the same).
        pktline::write_line(&mut b, "version 1");
    }
    b.extend_from_slice(&advertise::v0_refs(index));
    b
}

/// The protocol version the client asked for with `Git-Protocol: version=N` (the highest
/// one goprox speaks: 2, 1, or 0 when absent).
fn protocol_version(headers: &HeaderMap) -> u8 {
    let asked = |n: &str| {
        headers
            .get_all("git-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(':').any(|p| p.trim() == format!("version={n}")))
    };
    if asked("2") {
        2
    } else if asked("1") {
        1
    } else {
        0
    }
}

fn open_error(target: &Target, e: OpenError) -> Response {
    tracing::warn!(root = %target.root, error = %e, "open failed");
    use crate::fill::Failure;
    match e.failure() {
        Failure::NotFound => text(
            StatusCode::NOT_FOUND,
            format!(
                "repository {} not found (upstream {} has no such repository)",
                target.root, target.upstream
            ),
        ),
        Failure::Upstream => text(
            StatusCode::BAD_GATEWAY,
            format!("cannot fill {}: {e}", target.root),
        ),
        Failure::Timeout => text(
            StatusCode::GATEWAY_TIMEOUT,
            format!("cannot fill {}: {e}", target.root),
        ),
        Failure::StoreUnavailable => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot open {}: {}", target.root, e.public_message()),
        ),
        Failure::Internal => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot open {}: {}", target.root, e.public_message()),
        ),
    }
}

fn err_response(msg: &str) -> Response {
    metrics::REQUEST_ERRORS.inc();
    git_body(RESULT, Body::from(pktline::err_line(msg)))
}

/// An upload-pack request body, decoded and parsed.
enum Parsed {
    LsRefs(request::LsRefsRequest),
    Fetch(request::FetchRequest, upload_pack::Version),
}

/// Decode (gzip), parse and check an upload-pack request against the limits; a refusal is
/// the response to send.
#[allow(clippy::result_large_err)] // the refusal is the response, sent at once
fn parse_upload(
    st: &AppState,
    v2: bool,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Parsed, Response> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip"));
    let body = if gzip {
        let mut out = Vec::new();
        let max = st.limits.max_request_bytes;
        let r = flate2::read::GzDecoder::new(&body[..])
            .take(max as u64 + 1)
            .read_to_end(&mut out);
        if r.is_err() {
            return Err(text(
                StatusCode::BAD_REQUEST,
                "request body is not valid gzip",
            ));
        }
        if out.len() > max {
            return Err(text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body too large after gzip decoding (limit {max} bytes, --max-request-bytes)"
                ),
            ));
        }
        Bytes::from(out)
    } else {
        body
    };
    let (req, version) = if v2 {
        match request::parse_v2(&body) {
            Ok(V2Request::LsRefs(ls)) => return Ok(Parsed::LsRefs(ls)),
            Ok(V2Request::Fetch(f)) => (f, upload_pack::Version::V2),
            Ok(V2Request::Unknown(c)) => {
                return Err(err_response(&format!("unknown command {c:?}")));
            }
            Err(e) => return Err(err_response(&e.to_string())),
        }
    } else {
        match request::parse_v0(&body) {
            Ok(f) => (f, upload_pack::Version::V0),
            Err(e) => return Err(err_response(&e.to_string())),
        }
    };
    let wants = req.wants.len() + req.want_refs.len();
    if wants > st.limits.max_wants {
        return Err(err_response(&format!(
            "upload-pack: too many wants ({wants} > {}, --max-wants)",
            st.limits.max_wants
        )));
    }
    if req.haves.len() > st.limits.max_haves {
        return Err(err_response(&format!(
            "upload-pack: too many haves ({} > {}, --max-haves)",
            req.haves.len(),
            st.limits.max_haves
        )));
    }
    Ok(Parsed::Fetch(req, version))
}

/// Answer a clone with a fill's pack as it arrives ([`upload_pack::respond_pass_through`]).
fn pass_through(
    req: request::FetchRequest,
    version: upload_pack::Version,
    head: Vec<u8>,
    mut feed: crate::fill::tap::Feed,
) -> Response {
    let rx = upload_pack::respond_pass_through(req, version, head, move || feed.next_bytes());
    git_body(
        RESULT,
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

async fn upload(
    st: &AppState,
    target: &Target,
    repo: Arc<Repo>,
    req: request::FetchRequest,
    version: upload_pack::Version,
) -> Response {
    // Wants the store lacks (a commit pushed after the last refresh): look upstream first.
    let missing: Vec<_> = req
        .wants
        .iter()
        .filter(|w| !repo.odb.contains(w))
        .copied()
        .collect();
    let repo = if missing.is_empty() {
        repo
    } else {
        st.repos.refresh_for_wants(target, repo, &missing).await
    };
    let rx = upload_pack::respond(repo, req, version, st.pack_generations.clone());
    git_body(
        RESULT,
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The `go-source` home, directory and file templates for an upstream whose browsing pages
/// are known (GitHub, GitLab, Bitbucket); `None` for any other host (goprox serves no such
/// pages itself).
pub fn go_source(upstream: &str) -> Option<(String, String, String)> {
    let rest = upstream.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let path = path.trim_end_matches('/');
    let path = path.strip_suffix(".git").unwrap_or(path);
    if path.is_empty() || path.contains(['?', '#', '@']) {
        return None;
    }
    let home = format!("https://{host}/{path}");
    let (dir, file) = match host {
        "github.com" => (
            format!("{home}/tree/HEAD{{/dir}}"),
            format!("{home}/blob/HEAD{{/dir}}/{{file}}#L{{line}}"),
        ),
        "gitlab.com" => (
            format!("{home}/-/tree/HEAD{{/dir}}"),
            format!("{home}/-/blob/HEAD{{/dir}}/{{file}}#L{{line}}"),
        ),
        "bitbucket.org" => (
            format!("{home}/src/HEAD{{/dir}}"),
            format!("{home}/src/HEAD{{/dir}}/{{file}}#lines-{{line}}"),
        ),
        _ => return None,
    };
    Some((home, dir, file))
}

fn go_get(
    st: &AppState,
    target: &Target,
    headers: &HeaderMap,
    uri: &Uri,
    absolute: bool,
) -> Response {
    let base = match &st.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None if absolute => st.listen_url.clone(),
        None => {
            // HTTP/2 carries the host as the URI's authority, not as a Host header.
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .or_else(|| uri.authority().map(|a| a.as_str()))
                .unwrap_or("localhost");
            // Forwarded headers only from a proxy the operator vouches for.
            let forwarded = |name: &str| {
                headers
                    .get(name)
                    .and_then(|h| h.to_str().ok())
                    .filter(|_| st.trust_forwarded)
            };
            let host = forwarded("x-forwarded-host").unwrap_or(host);
            let proto = if st.tls {
                "https"
            } else {
                forwarded("x-forwarded-proto")
                    .filter(|p| *p == "https" || *p == "http")
                    .unwrap_or("http")
            };
            format!("{proto}://{host}")
        }
    };
    let page = go_get_page(target, &base, st.go_import);
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response()
}

/// The go-get page of the repository rooted at `root` (its upstream `upstream`), with goprox at
/// `base` (scheme and host, without a trailing `/`). The go-import prefix is the repository
/// root in both modes (the go command requires a prefix of the import path): with
/// [`GoImport::Mod`] the go command asks `base` for every module under it with the GOPROXY
/// protocol, with [`GoImport::Git`] it clones `base/root` (and looks in the subdirectory that
/// the upstream's go-import tag named, passed on as the fourth field).
fn go_get_page(target: &Target, base: &str, mode: GoImport) -> String {
    let (root, upstream) = (target.root.as_str(), target.upstream.as_str());
    let import = match mode {
        GoImport::Git if target.subdir.is_empty() => format!("{root} git {base}/{root}"),
        GoImport::Git => format!("{root} git {base}/{root} {}", target.subdir),
        GoImport::Mod => format!("{root} mod {base}"),
    };
    let source = go_source(upstream)
        .map(|(home, dir, file)| {
            format!(
                "<meta name=\"go-source\" content=\"{} {} {} {}\">\n",
                html_escape(root),
                html_escape(&home),
                html_escape(&dir),
                html_escape(&file)
            )
        })
        .unwrap_or_default();
    format!(
        "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"go-import\" content=\"{i}\">\n{source}</head>\n<body>go get {r}</body>\n</html>\n",
        i = html_escape(&import),
        r = html_escape(root),
    )
}

#[cfg(test)]
mod go_source_tests {
    use super::{GoImport, go_get_page, go_source};
    use crate::upstream::resolve::Target;

    fn t(root: &str, upstream: &str) -> Target {
        Target {
            root: root.into(),
            upstream: upstream.into(),
            subdir: String::new(),
        }
    }

    #[test]
    fn go_import_pages() {
        let git = go_get_page(
            &t("example.test/vmod", "https://git.example.test/vmod"),
            "https://goprox.internal",
            GoImport::Git,
        );
        assert!(
            git.contains("<meta name=\"go-import\" content=\"example.test/vmod git https://goprox.internal/example.test/vmod\">\n"),
            "{git}"
        );
        // A subdirectory the upstream's tag named is passed on (Go 1.25's fourth field).
        let mut sub = t("example.test/vsub", "https://git.example.test/r");
        sub.subdir = "go/vsub".into();
        let page = go_get_page(&sub, "https://goprox.internal", GoImport::Git);
        assert!(
            page.contains("content=\"example.test/vsub git https://goprox.internal/example.test/vsub go/vsub\""),
            "{page}"
        );
        let m = go_get_page(
            &t("example.test/vmod", "https://git.example.test/vmod"),
            "http://127.0.0.1:8080",
            GoImport::Mod,
        );
        assert_eq!(
            m,
            "<!DOCTYPE html>\n<html>\n<head>\n\
             <meta name=\"go-import\" content=\"example.test/vmod mod http://127.0.0.1:8080\">\n\
             </head>\n<body>go get example.test/vmod</body>\n</html>\n"
        );
        // The go-source tag is the same in both modes; names are escaped.
        let gh = go_get_page(
            &t("github.com/a/b", "https://github.com/a/b"),
            "https://g.internal/x\"y",
            GoImport::Mod,
        );
        assert!(
            gh.contains("content=\"github.com/a/b mod https://g.internal/x&quot;y\""),
            "{gh}"
        );
        assert!(
            gh.contains(
                "<meta name=\"go-source\" content=\"github.com/a/b https://github.com/a/b "
            ),
            "{gh}"
        );
    }

    #[test]
    fn known_hosts_point_at_their_own_pages() {
        let (home, dir, file) = go_source("https://github.com/rsc/quote.git").expect("github");
        assert_eq!(home, "https://github.com/rsc/quote");
        assert_eq!(dir, "https://github.com/rsc/quote/tree/HEAD{/dir}");
        assert_eq!(
            file,
            "https://github.com/rsc/quote/blob/HEAD{/dir}/{file}#L{line}"
        );
        let (_, dir, file) = go_source("https://gitlab.com/a/b").expect("gitlab");
        assert_eq!(dir, "https://gitlab.com/a/b/-/tree/HEAD{/dir}");
        assert_eq!(
            file,
            "https://gitlab.com/a/b/-/blob/HEAD{/dir}/{file}#L{line}"
        );
        let (_, _, file) = go_source("https://bitbucket.org/a/b").expect("bitbucket");
        assert_eq!(
            file,
            "https://bitbucket.org/a/b/src/HEAD{/dir}/{file}#lines-{line}"
        );
    }

    #[test]
    fn other_hosts_get_no_tag() {
        assert!(go_source("https://git.example.com/a/b").is_none());
        assert!(go_source("http://github.com/a/b").is_none());
        assert!(go_source("https://github.com/").is_none());
        assert!(go_source("file:///srv/git/a").is_none());
    }
}
