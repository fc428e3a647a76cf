//! The "upstream" git server: `git http-backend` behind a small axum server on 127.0.0.1.
//!
//! Every request (origin-form or absolute-form, as an HTTP proxy receives it) is run through
//! `git http-backend` as CGI with `GIT_PROJECT_ROOT` = the fixture root, except `?go-get=1`
//! requests, which get a `go-import` meta tag pointing back at this server, and `CONNECT`, which is
//! refused (so that Go, given `HTTPS_PROXY` = this server, falls back to plain http for
//! `GOINSECURE` hosts without any DNS lookup).
//!
//! [`Upstream::stop`] (or drop) shuts the runtime down: the listener closes and later connections
//! are refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Response, StatusCode};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

struct Inner {
    root: PathBuf,
    backend: PathBuf,
    port: u16,
    log: Mutex<Vec<String>>,
    /// Serve with `uploadpack.allowRefInWant` (only for tests/e2e/wire.rs: C git 2.47's
    /// upload-pack then breaks `git clone --depth=1`, see src/protocol/mod.rs).
    ref_in_want: bool,
    /// While set, every request hangs (accepted, never answered), like a stopped process.
    hang: std::sync::atomic::AtomicBool,
    /// While not `u64::MAX`: a pack response (to a request with wants) stops after this many
    /// bytes until it is set back ([`Upstream::hold_packs_after`]).
    hold_after: Arc<std::sync::atomic::AtomicU64>,
    /// `Authorization` header value every request must carry (else 401).
    basic: Option<String>,
    /// While set, every request is answered with this status and text body.
    fail_with: Mutex<Option<(u16, String)>>,
}

/// How [`Upstream::start_opts`] serves.
#[derive(Default)]
pub struct Options {
    /// `uploadpack.allowRefInWant` (see [`Upstream::start_with`]).
    pub ref_in_want: bool,
    /// Serve https with this PEM certificate chain and key instead of plain http.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require HTTP basic auth with this `user:password` on every request.
    pub basic: Option<String>,
}

pub struct Upstream {
    pub port: u16,
    tls: bool,
    inner: Arc<Inner>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Upstream {
    /// Serve the bare repositories under `root` (panics if `git http-backend` is missing).
    pub fn start(root: &Path) -> Upstream {
        Self::start_with(root, false)
    }

    /// [`Upstream::start`], optionally with `uploadpack.allowRefInWant`.
    pub fn start_with(root: &Path, ref_in_want: bool) -> Upstream {
        Self::start_opts(
            root,
            Options {
                ref_in_want,
                ..Options::default()
            },
        )
    }

    /// Serve the bare repositories under `root` as `opts` says.
    pub fn start_opts(root: &Path, opts: Options) -> Upstream {
        let Options {
            ref_in_want,
            tls,
            basic,
        } = opts;
        let basic = basic.map(|up| {
            use base64::Engine;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(up)
            )
        });
        let acceptor = tls.map(|(cert, key)| {
            goprox::http::server::tls_acceptor(&cert, &key).expect("upstream TLS configuration")
        });
        let backend = super::git_http_backend().expect("git http-backend not found");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("upstream")
            .enable_all()
            .build()
            .expect("tokio runtime");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local_addr").port();
        let inner = Arc::new(Inner {
            root: root.to_path_buf(),
            backend,
            port,
            log: Mutex::new(Vec::new()),
            hang: std::sync::atomic::AtomicBool::new(false),
            hold_after: Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX)),
            ref_in_want,
            basic,
            fail_with: Mutex::new(None),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let tls = acceptor.is_some();
        match acceptor {
            None => {
                rt.spawn(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    let _ = axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .await;
                });
            }
            Some(acceptor) => {
                rt.spawn(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    // Runs until the runtime shuts down (every accept is bounded by the test).
                    let never = std::future::pending::<()>();
                    let _ = goprox::http::server::serve(
                        listener,
                        app,
                        goprox::http::server::ServerLimits::default(),
                        Some(acceptor),
                        never,
                    )
                    .await;
                });
            }
        }
        Upstream {
            port,
            tls,
            inner,
            rt: Some(rt),
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The `--upstream` arguments that map `example.test/NAME` and `github.com/OWNER/REPO` here.
    pub fn goprox_args(&self) -> Vec<String> {
        vec![
            "--upstream".into(),
            format!("example.test/={}/", self.url()),
            "--upstream".into(),
            format!("github.com/={}/gh/", self.url()),
        ]
    }

    /// Stop serving: drops every connection and closes the listener (idempotent).
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
        // Bounded check that the port really refuses connections now.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if std::time::Instant::now() > deadline {
                panic!("upstream on port {} still accepts after stop", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Make every request hang without an answer (`true`), as an upstream under SIGSTOP
    /// would, or answer again (`false`).
    pub fn hang(&self, on: bool) {
        self.inner
            .hang
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    /// `Some(n)`: pack responses stop after `n` bytes (of the HTTP body) until this is called
    /// with `None` (for at most 60 s), so a test can look at goprox mid-fill.
    pub fn hold_packs_after(&self, n: Option<u64>) {
        self.inner
            .hold_after
            .store(n.unwrap_or(u64::MAX), std::sync::atomic::Ordering::SeqCst);
    }

    pub fn is_running(&self) -> bool {
        self.rt.is_some()
    }

    /// "METHOD URI [Git-Protocol] -> STATUS" for every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn clear_requests(&self) {
        self.inner
            .log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Upstream {
    /// Answer every request with `status` and a text `body` (`None`: serve again).
    pub fn fail_with(&self, answer: Option<(u16, &str)>) {
        *self
            .inner
            .fail_with
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = answer.map(|(s, b)| (s, b.to_string()));
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.requests();
            let n = log.len();
            let skip = n.saturating_sub(60);
            eprintln!(
                "--- upstream 127.0.0.1:{} requests ({n}, last {}) ---",
                self.port,
                n - skip
            );
            for l in &log[skip..] {
                eprintln!("  {l}");
            }
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn record(inner: &Inner, line: String) {
    inner
        .log
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(line);
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Body::from(body.into()))
        .expect("response")
}

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response<Body> {
    let failing = inner
        .fail_with
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if let Some((status, body)) = failing {
        record(
            &inner,
            format!("{} {} -> {status} (fail_with)", req.method(), req.uri()),
        );
        return text(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body,
        );
    }
    if inner.hang.load(std::sync::atomic::Ordering::SeqCst) {
        record(&inner, format!("{} {} -> (hung)", req.method(), req.uri()));
        // Ends when the test drops the upstream (its runtime shuts down).
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if let Some(want) = &inner.basic {
        let given = req.headers().get("authorization").map(|v| v.as_bytes());
        if given != Some(want.as_bytes()) {
            let why = if given.is_some() {
                "wrong credentials"
            } else {
                "no credentials"
            };
            record(
                &inner,
                format!("{} {} -> 401 ({why})", req.method(), req.uri()),
            );
            let mut r = text(StatusCode::UNAUTHORIZED, "authentication required\n");
            r.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"upstream\""),
            );
            return r;
        }
    }
    let method = req.method().clone();
    let uri = req.uri().clone();
    let proto = req
        .headers()
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (req, body_summary) = if method == Method::POST {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 256 << 20)
            .await
            .unwrap_or_default();
        let gz = parts
            .headers
            .get("content-encoding")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let summary = if gz {
            " {gzip body}".to_string()
        } else {
            summarize_pkt_lines(&bytes)
        };
        (Request::from_parts(parts, Body::from(bytes)), summary)
    } else {
        (req, String::new())
    };
    let resp = if method == Method::CONNECT {
        text(StatusCode::METHOD_NOT_ALLOWED, "no CONNECT here\n")
    } else if uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "go-get=1"))
    {
        go_get(&inner, &req)
    } else {
        match cgi(&inner, req).await {
            Ok(r) => r,
            Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("cgi: {e}\n")),
        }
    };
    record(
        &inner,
        format!(
            "{method} {uri}{}{body_summary} -> {}",
            proto
                .map(|p| format!(" [Git-Protocol: {p}]"))
                .unwrap_or_default(),
            resp.status().as_u16()
        ),
    );
    resp
}

/// A one-line summary of a pkt-line request body: the command and arguments, with `want`/`have`
/// lines counted rather than listed.
pub fn summarize_pkt_lines(mut b: &[u8]) -> String {
    let mut args = Vec::new();
    let (mut wants, mut haves) = (0, 0);
    while b.len() >= 4 {
        let Some(n) = std::str::from_utf8(&b[..4])
            .ok()
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            args.push("<not pkt-lines>".to_string());
            break;
        };
        if n < 4 {
            b = &b[4..];
            if n == 1 {
                args.push("|".into());
            }
            continue;
        }
        if n > b.len() {
            args.push("<truncated>".into());
            break;
        }
        let line = String::from_utf8_lossy(&b[4..n]).trim_end().to_string();
        b = &b[n..];
        if line.starts_with("want ") {
            wants += 1;
            if wants == 1 {
                // v0 puts the capabilities on the first want line.
                if let Some(caps) = line.get(46..).filter(|c| !c.trim().is_empty()) {
                    args.push(format!("caps:{}", caps.trim()));
                }
            }
        } else if line.starts_with("have ") {
            haves += 1;
        } else if !line.starts_with("agent=") && !line.starts_with("session-id=") {
            args.push(line);
        }
    }
    format!(" {{{} wants={wants} haves={haves}}}", args.join(" "))
}

/// `<meta name="go-import" ...>` for `example.test/NAME/...` (→ `/NAME`) and
/// `github.com/OWNER/REPO/...` (→ `/gh/OWNER/REPO`).
fn go_get(inner: &Inner, req: &Request) -> Response<Body> {
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|h| h.to_str().ok())
                .map(|h| h.split(':').next().unwrap_or(h).to_string())
        })
        .unwrap_or_default();
    let host = if host == "127.0.0.1" || host == "localhost" || host.is_empty() {
        "example.test".to_string()
    } else {
        host
    };
    let mut parts: Vec<&str> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // Origin form with the import path's host first (a `--discover` rule's base URL).
    let host = match parts.first() {
        Some(h)
            if host == "example.test"
                && (*h == "example.test" || *h == "github.com" || *h == "gopkg.in") =>
        {
            let h = h.to_string();
            parts.remove(0);
            h
        }
        _ => host,
    };
    let (root, target) = if host == "github.com" {
        if parts.len() < 2 {
            return text(StatusCode::NOT_FOUND, "need github.com/OWNER/REPO\n");
        }
        (
            format!("github.com/{}/{}", parts[0], parts[1]),
            format!(
                "http://127.0.0.1:{}/gh/{}/{}",
                inner.port, parts[0], parts[1]
            ),
        )
    } else {
        let Some(name) = parts.first() else {
            return text(StatusCode::NOT_FOUND, "need HOST/NAME\n");
        };
        (
            format!("{host}/{name}"),
            format!("http://127.0.0.1:{}/{name}", inner.port),
        )
    };
    // A file `NAME.subdir` beside repository NAME names the subdirectory that holds the
    // import path root: go-import's fourth field (Go 1.25).
    let name = root.rsplit('/').next().unwrap_or_default();
    let subdir = std::fs::read_to_string(inner.root.join(format!("{name}.subdir")))
        .map(|s| format!(" {}", s.trim()))
        .unwrap_or_default();
    let html = format!(
        "<!DOCTYPE html>\n<html><head>\n<meta name=\"go-import\" content=\"{root} git {target}{subdir}\">\n</head><body>go get {root}</body></html>\n"
    );
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/html; charset=utf-8")
        .body(Body::from(html))
        .expect("response")
}

async fn cgi(inner: &Inner, req: Request) -> Result<Response<Body>, String> {
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = axum::body::to_bytes(body, 256 << 20)
        .await
        .map_err(|e| format!("read request body: {e}"))?;
    let wants = body.windows(5).any(|w| w == b"want ");
    let mut cmd = tokio::process::Command::new(&inner.backend);
    cmd.env_clear()
        .env("PATH", super::path_var())
        .env("HOME", &inner.root)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", &inner.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("SERVER_PROTOCOL", "HTTP/1.1")
        .env("SERVER_NAME", "127.0.0.1")
        .env("SERVER_PORT", inner.port.to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or(""))
        .env("CONTENT_LENGTH", body.len().to_string())
        // Serve what goprox serves (filters, wants of any reachable sha, want-ref), so that
        // tests/e2e/wire.rs can compare the two byte for byte.
        .env(
            "GIT_CONFIG_COUNT",
            if inner.ref_in_want { "4" } else { "3" },
        )
        .env("GIT_CONFIG_KEY_0", "uploadpack.allowFilter")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("GIT_CONFIG_KEY_1", "uploadpack.allowTipSHA1InWant")
        .env("GIT_CONFIG_VALUE_1", "true")
        .env("GIT_CONFIG_KEY_2", "uploadpack.allowReachableSHA1InWant")
        .env("GIT_CONFIG_VALUE_2", "true")
        .env("GIT_CONFIG_KEY_3", "uploadpack.allowRefInWant")
        .env("GIT_CONFIG_VALUE_3", "true")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ct) = header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(p) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", p);
    }
    if let Some(enc) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", enc);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("spawn http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("stdin")?;
    tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
        let _ = stdin.shutdown().await;
    });
    let mut stderr = child.stderr.take().ok_or("stderr")?;
    let stdout = child.stdout.take().ok_or("stdout")?;
    let mut out = BufReader::new(stdout);
    // CGI header block.
    let mut status = StatusCode::OK;
    let mut builder = Response::builder();
    loop {
        let mut line = String::new();
        let n = out
            .read_line(&mut line)
            .await
            .map_err(|e| format!("read cgi headers: {e}"))?;
        let line = line.trim_end_matches(['\r', '\n']);
        if n == 0 || line.is_empty() {
            break;
        }
        let Some((k, v)) = line.split_once(':') else {
            return Err(format!("bad CGI header line {line:?}"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split_whitespace().next().unwrap_or("500");
            status = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .ok_or_else(|| format!("bad CGI status {v:?}"))?;
        } else {
            builder = builder.header(
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(v).map_err(|e| e.to_string())?,
            );
        }
    }
    // Reap the child and keep whatever it says on stderr out of the way.
    tokio::spawn(async move {
        let mut e = Vec::new();
        let _ = stderr.read_to_end(&mut e).await;
        let _ = child.wait().await;
        if !e.is_empty() {
            eprintln!(
                "upstream http-backend: {}",
                String::from_utf8_lossy(&e).trim_end()
            );
        }
    });
    let stream = tokio_util::io::ReaderStream::with_capacity(out, 64 << 10);
    let hold = inner.hold_after.clone();
    let body = if wants && hold.load(std::sync::atomic::Ordering::SeqCst) != u64::MAX {
        Body::from_stream(held(stream, hold))
    } else {
        Body::from_stream(stream)
    };
    builder.status(status).body(body).map_err(|e| e.to_string())
}

/// `stream`, stopped after `hold` bytes while `hold` is set (re-read every 10 ms, at most 60 s).
fn held<S>(
    stream: S,
    hold: Arc<std::sync::atomic::AtomicU64>,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>>
where
    S: futures::Stream<Item = std::io::Result<bytes::Bytes>> + Unpin,
{
    use futures::StreamExt;
    futures::stream::unfold(
        (stream, hold, 0u64, Vec::<bytes::Bytes>::new()),
        |(mut stream, hold, mut sent, mut queue)| async move {
            let next = match queue.pop() {
                Some(b) => Some(Ok(b)),
                None => stream.next().await,
            };
            let Some(Ok(mut chunk)) = next else {
                return next.map(|n| (n, (stream, hold, sent, queue)));
            };
            let limit = hold.load(std::sync::atomic::Ordering::SeqCst);
            if limit != u64::MAX && sent >= limit {
                let mut waited = 0;
                while hold.load(std::sync::atomic::Ordering::SeqCst) != u64::MAX && waited < 6000 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    waited += 1;
                }
            } else if limit != u64::MAX && sent + chunk.len() as u64 > limit {
                // Up to the limit now, the rest once released.
                let rest = chunk.split_off((limit - sent) as usize);
                queue.push(rest);
            }
            sent += chunk.len() as u64;
            Some((Ok(chunk), (stream, hold, sent, queue)))
        },
    )
}
