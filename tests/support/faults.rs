//! An HTTP proxy in front of an S3 server (SeaweedFS on loopback) that injects the faults a
//! real S3 shows: 503 SlowDown, 500, a connection reset before the answer, an answer lost
//! after the request was applied, a body cut short, a stall, and the whole store gone.
//! Optionally it delays every request (a store in another zone).
//!
//! Faults are drawn from a seeded generator; the rate and the kinds can change while the
//! proxy runs (faults off after a stormy phase; S3 gone and back). Every request is
//! forwarded on a new connection to the target, headers untouched (SigV4 signs them).
//! Listens on 127.0.0.1 only and connects to 127.0.0.1 only.
//!
//! Depends on tokio, hyper, hyper-util and http-body-util only, so that a test binary and
//! the bench's proxy (`examples/s3_fault_proxy.rs`) can both include it.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// 503 with S3's `SlowDown` error, the request not forwarded.
    SlowDown,
    /// 500 `InternalError`, the request not forwarded.
    ServerError,
    /// The connection closed before the request is forwarded.
    Reset,
    /// The request is forwarded and applied, then the connection closes without an answer.
    LostAnswer,
    /// The answer's head and part of its body, then the connection closes.
    CutBody,
    /// The request waits (the plan's stall) before it is forwarded.
    Stall,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::SlowDown,
        Fault::ServerError,
        Fault::Reset,
        Fault::LostAnswer,
        Fault::CutBody,
        Fault::Stall,
    ];
}

/// Which requests may be faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// GET and HEAD.
    Reads,
    /// Every request.
    All,
}

/// What the proxy does, changeable while it runs.
pub struct Plan {
    /// Faults per million eligible requests.
    per_million: AtomicU32,
    scope: Mutex<Scope>,
    kinds: Mutex<Vec<Fault>>,
    stall: Mutex<Duration>,
    latency: Mutex<Duration>,
    /// Every connection is closed at once (the store is gone).
    down: AtomicBool,
    /// The next requests of a method get this fault, whatever is drawn.
    lose: Mutex<Option<(String, Fault, u32)>>,
    rng: AtomicU64,
}

/// What the proxy saw and did.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Requests by method.
    pub requests: BTreeMap<String, u64>,
    pub faults: BTreeMap<String, u64>,
    /// Faults by method and kind (`PUT LostAnswer`).
    pub by_method: BTreeMap<String, u64>,
    /// Connections refused while down.
    pub refused: u64,
}

impl Counts {
    pub fn total_requests(&self) -> u64 {
        self.requests.values().sum()
    }
    pub fn reads(&self) -> u64 {
        self.requests.get("GET").copied().unwrap_or(0)
            + self.requests.get("HEAD").copied().unwrap_or(0)
    }
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
    pub fn faults_of(&self, f: Fault) -> u64 {
        self.faults.get(&format!("{f:?}")).copied().unwrap_or(0)
    }
}

struct Shared {
    target: u16,
    plan: Plan,
    counts: Mutex<Counts>,
}

/// A running fault proxy; stopped on drop.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub port: u16,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy to `127.0.0.1:target` on a free port, injecting nothing until told to.
    pub fn start(target: u16, seed: u64) -> FaultProxy {
        Self::start_on(0, target, seed)
    }

    /// The same on a given port (0: any free port).
    pub fn start_on(port: u16, target: u16, seed: u64) -> FaultProxy {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let port = listener.local_addr().expect("local addr").port();
        let shared = Arc::new(Shared {
            target,
            plan: Plan {
                per_million: AtomicU32::new(0),
                scope: Mutex::new(Scope::All),
                kinds: Mutex::new(Fault::ALL.to_vec()),
                stall: Mutex::new(Duration::from_secs(3)),
                latency: Mutex::new(Duration::ZERO),
                down: AtomicBool::new(false),
                lose: Mutex::new(None),
                rng: AtomicU64::new(seed.max(1)),
            },
            counts: Mutex::new(Counts::default()),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = stopped => {}
                    _ = accept_loop(listener, s) => {}
                }
            });
            rt.shutdown_timeout(Duration::from_millis(200));
        });
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Fault `rate` (0.0..=1.0) of the requests in `scope`, with one of `kinds` each.
    pub fn faults(&self, rate: f64, scope: Scope, kinds: &[Fault]) {
        let p = &self.shared.plan;
        *lock(&p.scope) = scope;
        *lock(&p.kinds) = kinds.to_vec();
        p.per_million
            .store((rate.clamp(0.0, 1.0) * 1e6) as u32, Ordering::SeqCst);
    }

    /// No more faults.
    pub fn calm(&self) {
        self.shared.plan.per_million.store(0, Ordering::SeqCst);
        *lock(&self.shared.plan.lose) = None;
    }

    /// The next `n` requests with `method` are applied and their answers lost.
    pub fn lose_answers(&self, method: &str, n: u32) {
        self.force(method, Fault::LostAnswer, n);
    }

    /// The next `n` requests with `method` get `fault`, whatever is drawn.
    pub fn force(&self, method: &str, fault: Fault, n: u32) {
        *lock(&self.shared.plan.lose) = Some((method.to_string(), fault, n));
    }

    pub fn set_stall(&self, d: Duration) {
        *lock(&self.shared.plan.stall) = d;
    }

    /// Delay every request by `d` before it is forwarded.
    pub fn set_latency(&self, d: Duration) {
        *lock(&self.shared.plan.latency) = d;
    }

    /// The store is gone (`true`: every connection closed at once) or back.
    pub fn set_down(&self, down: bool) {
        self.shared.plan.down.store(down, Ordering::SeqCst);
    }

    pub fn counts(&self) -> Counts {
        lock(&self.shared.counts).clone()
    }

    /// Zero the counters.
    pub fn reset_counts(&self) {
        *lock(&self.shared.counts) = Counts::default();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if shared.plan.down.load(Ordering::SeqCst) {
            lock(&shared.counts).refused += 1;
            // Close at once.
            drop(conn);
            continue;
        }
        let _ = conn.set_nodelay(true);
        let shared = shared.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(conn), svc)
                .await;
        });
    }
}

/// The next fault for a request of `method`, if one is drawn.
fn draw(shared: &Shared, method: &str) -> Option<Fault> {
    let p = &shared.plan;
    {
        let mut lose = lock(&p.lose);
        if let Some((m, f, n)) = lose.as_mut()
            && m == method
            && *n > 0
        {
            *n -= 1;
            return Some(*f);
        }
    }
    let rate = p.per_million.load(Ordering::SeqCst);
    if rate == 0 {
        return None;
    }
    if *lock(&p.scope) == Scope::Reads && method != "GET" && method != "HEAD" {
        return None;
    }
    let r = next(&p.rng);
    if (r % 1_000_000) as u32 >= rate {
        return None;
    }
    let kinds = lock(&p.kinds).clone();
    if kinds.is_empty() {
        return None;
    }
    let mut f = kinds[(next(&p.rng) % kinds.len() as u64) as usize];
    // A HEAD has no body to cut.
    if f == Fault::CutBody && method == "HEAD" {
        f = Fault::Reset;
    }
    Some(f)
}

/// xorshift64*, shared by all connections.
fn next(state: &AtomicU64) -> u64 {
    let mut x = state.load(Ordering::SeqCst);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    state.store(x, Ordering::SeqCst);
    x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11
}

#[derive(Debug)]
struct Injected(&'static str);
impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "injected fault: {}", self.0)
    }
}
impl std::error::Error for Injected {}

fn s3_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
    );
    let mut r = Response::new(Full::new(Bytes::from(body)).map_err(|e| match e {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/xml"),
    );
    r
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Box<dyn std::error::Error + Send + Sync>> {
    let method = req.method().as_str().to_string();
    if shared.plan.down.load(Ordering::SeqCst) {
        // Connections opened before the store went away die too.
        lock(&shared.counts).refused += 1;
        return Err(Box::new(Injected("store gone")));
    }
    *lock(&shared.counts)
        .requests
        .entry(method.clone())
        .or_default() += 1;
    let latency = *lock(&shared.plan.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let fault = draw(&shared, &method);
    if let Some(f) = fault {
        let mut c = lock(&shared.counts);
        *c.faults.entry(format!("{f:?}")).or_default() += 1;
        *c.by_method.entry(format!("{method} {f:?}")).or_default() += 1;
    }
    match fault {
        Some(Fault::SlowDown) => {
            return Ok(s3_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "SlowDown",
                "Please reduce your request rate.",
            ));
        }
        Some(Fault::ServerError) => {
            return Ok(s3_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "We encountered an internal error. Please try again.",
            ));
        }
        Some(Fault::Reset) => return Err(Box::new(Injected("reset"))),
        Some(Fault::Stall) => {
            let d = *lock(&shared.plan.stall);
            tokio::time::sleep(d).await;
        }
        _ => {}
    }
    let resp = forward(shared.target, req).await?;
    match fault {
        Some(Fault::LostAnswer) => {
            // Let the target finish with the request (it is applied), then say nothing.
            let _ = resp.into_body().collect().await;
            Err(Box::new(Injected("answer lost")))
        }
        Some(Fault::CutBody) => {
            let (parts, body) = resp.into_parts();
            let all = body.collect().await?.to_bytes();
            if all.len() < 2 {
                return Err(Box::new(Injected("answer lost")));
            }
            let half = all.slice(..all.len() / 2);
            let frames: Vec<Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>> =
                vec![Ok(Frame::data(half)), Err(Box::new(Injected("body cut")))];
            let body = StreamBody::new(futures::stream::iter(frames));
            Ok(Response::from_parts(parts, BodyExt::boxed(body)))
        }
        _ => {
            let (parts, body) = resp.into_parts();
            Ok(Response::from_parts(
                parts,
                body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                    .boxed(),
            ))
        }
    }
}

/// Send `req` to the target on a new connection, headers as they are.
async fn forward(
    target: u16,
    req: Request<Incoming>,
) -> Result<Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", target)).await?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender.send_request(req).await?)
}
