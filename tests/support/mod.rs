//! Shared harness for goprox's integration tests.
//!
//! * [`upstream`]: an HTTP server on 127.0.0.1 that runs `git http-backend` as CGI (the "upstream git
//!   server") and answers `?go-get=1` itself.
//! * [`fixtures`]: deterministic bare repositories built with the real `git` once per test process.
//! * [`goprox`]: launches the goprox binary on a local-dir store or on SeaweedFS.
//! * [`git`]: git with an isolated environment, snapshots of refs/objects and comparisons.
//! * [`gotool`]: `go mod download` with an isolated environment.
//! * [`http`]: a tiny raw HTTP/1.1 client over `std::net::TcpStream`.
//!
//! Everything talks to 127.0.0.1 only; every wait is bounded; every child process is killed on drop.
#![allow(dead_code)]

pub mod faults;
pub mod fixtures;
pub mod git;
pub mod goprox;
pub mod gotool;
pub mod http;
pub mod live;
pub mod modwork;
pub mod seaweed;
pub mod upstream;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// True when CI asked that missing tools fail the tests instead of skipping them.
pub fn tools_required() -> bool {
    std::env::var("GOPROX_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Report a missing tool: panics under `GOPROX_REQUIRE_TOOLS=1`, otherwise prints `SKIP: ...`.
pub fn skip(msg: &str) {
    if tools_required() {
        panic!("required tool missing (GOPROX_REQUIRE_TOOLS=1): {msg}");
    }
    eprintln!("SKIP: {msg}");
}

/// `return` from the calling test (after printing `SKIP: ...`) unless the tool is available.
#[macro_export]
macro_rules! require {
    ($ok:expr, $msg:expr) => {
        if !$ok {
            $crate::support::skip($msg);
            return;
        }
    };
}

/// `git --exec-path`/git-http-backend, if git and its http-backend are installed.
pub fn git_http_backend() -> Option<PathBuf> {
    static CELL: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    CELL.get_or_init(|| {
        let out = Command::new("git")
            .arg("--exec-path")
            .env_clear()
            .env("PATH", path_var())
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let dir = String::from_utf8(out.stdout).ok()?;
        let p = Path::new(dir.trim()).join("git-http-backend");
        p.is_file().then_some(p)
    })
    .clone()
}

pub fn have_git() -> bool {
    git_http_backend().is_some()
}

/// `go version` works.
pub fn have_go() -> bool {
    static CELL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CELL.get_or_init(|| {
        Command::new("go")
            .arg("version")
            .env_clear()
            .env("PATH", path_var())
            .env("HOME", std::env::temp_dir())
            .env("GOTOOLCHAIN", "local")
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// The PATH to give children (the test process's own).
pub fn path_var() -> String {
    std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_string())
}

/// A directory under `std::env::temp_dir()`, removed on drop unless the thread is panicking
/// (then it is kept and its path printed, for inspection).
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(label: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let label: String = label
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path =
            std::env::temp_dir().join(format!("goprox-e2e-{}-{}-{}", std::process::id(), n, label));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("create temp dir {}: {e}", path.display()));
        TempDir { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("keeping temp dir for inspection: {}", self.path.display());
            return;
        }
        remove_tree(&self.path);
    }
}

/// `rm -rf`, making read-only directories writable first if needed (Go's module cache).
pub fn remove_tree(path: &Path) {
    if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    let _ = Command::new("chmod")
        .args(["-R", "u+rwx"])
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = std::fs::remove_dir_all(path);
}

/// What a finished child produced.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// `Debug` of the command, for messages.
    pub what: String,
}

impl Output {
    pub fn ok(&self) -> bool {
        self.status.success()
    }
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Panic with the command, status, stdout and stderr unless it exited 0.
    /// The command, its status and its output, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{} ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.status,
            self.stdout_str(),
            self.stderr_str()
        )
    }

    pub fn check(self) -> Output {
        if !self.ok() {
            panic!(
                "command failed ({}): {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.status,
                self.what,
                tail(&self.stdout_str(), 20_000),
                tail(&self.stderr_str(), 20_000)
            );
        }
        self
    }
}

/// The last `max` bytes of `s` (on a char boundary).
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Run `cmd` to completion with stdin from `input` (or /dev/null), capturing stdout and stderr;
/// kill it and panic if it runs longer than `timeout`.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let what = format!("{cmd:?}");
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {what}: {e}"));
    let writer = input.map(|data| {
        let data = data.to_vec();
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        })
    });
    let mut so = child.stdout.take().expect("stdout");
    let mut se = child.stderr.take().expect("stderr");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = so.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = se.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break st,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                let stdout = t_out.join().unwrap_or_default();
                let stderr = t_err.join().unwrap_or_default();
                panic!(
                    "command timed out after {timeout:?}: {what}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    tail(&String::from_utf8_lossy(&stdout), 20_000),
                    tail(&String::from_utf8_lossy(&stderr), 20_000)
                );
            }
            Err(e) => panic!("wait {what}: {e}"),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Output {
        status,
        stdout,
        stderr,
        what,
    }
}

/// A free TCP port on 127.0.0.1 (bound, read and released; a tiny race is possible).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// Poll `f` every 50 ms until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The usual set-up of one test: an upstream server on the shared fixtures, a fresh store of the
/// requested kind, goprox serving it, an isolated git environment and a scratch dir.
/// Fields drop in order: goprox first (its log is printed if the test panicked), then upstream,
/// store, scratch dir.
pub struct Harness {
    pub gp: goprox::Goprox,
    pub up: upstream::Upstream,
    pub store: goprox::Store,
    pub git: git::GitEnv,
    pub tmp: TempDir,
}

impl Harness {
    /// `None` (after `SKIP: ...`) when git's http-backend or the store's tools are missing.
    pub fn start(kind: goprox::StoreKind, label: &str) -> Option<Harness> {
        Self::start_with(kind, label, &[])
    }

    /// [`Harness::start`] with extra goprox arguments.
    pub fn start_with(kind: goprox::StoreKind, label: &str, extra: &[&str]) -> Option<Harness> {
        if !have_git() {
            skip("git http-backend not found (git --exec-path)");
            return None;
        }
        let store = goprox::Store::new(kind, label)?;
        let up = upstream::Upstream::start(&fixtures::fixtures().root);
        let gp = goprox::Goprox::start_with(&store, &up.goprox_args(), extra);
        Some(Harness {
            gp,
            up,
            store,
            git: git::GitEnv::new(),
            tmp: TempDir::new(label),
        })
    }

    /// goprox's git URL for a repo root such as `example.test/rich`.
    pub fn url(&self, repo_root: &str) -> String {
        self.gp.repo_url(repo_root)
    }

    /// Clone `repo_root` through goprox and assert it is identical to upstream (see
    /// [`git::clone_and_compare`]).
    pub fn clone_and_compare(&self, repo_root: &str, proto: u8, kind: git::CloneKind) -> PathBuf {
        git::clone_and_compare(
            &self.git,
            &self.tmp,
            &self.url(repo_root),
            repo_root,
            proto,
            kind,
        )
    }
}

/// Whether `bin --version` runs.
pub fn have_bin(bin: &str) -> bool {
    Command::new(bin)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok()
}

/// Test TLS material made with `openssl` in `tmp`: a CA (`ca.pem`) and a server certificate
/// for `127.0.0.1` it signed (`cert.pem`, key `key.pem`).
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// [`TestCerts`]; `None` (after [`skip`]) without `openssl`.
pub fn test_certs(tmp: &TempDir) -> Option<TestCerts> {
    if !have_bin("openssl") {
        skip("openssl missing (TLS test)");
        return None;
    }
    let p = |f: &str| tmp.join(f).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| {
        run(
            Command::new("openssl").args(args),
            None,
            Duration::from_secs(30),
        )
        .check();
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    let (ca_key, ca_pem) = (p("ca-key.pem"), p("ca.pem"));
    ca.extend([
        "-days",
        "2",
        "-subj",
        "/CN=goprox test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
    ]);
    openssl(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    let (key, csr_path, cert) = (p("key.pem"), p("server.csr"), p("cert.pem"));
    csr.extend(["-subj", "/CN=127.0.0.1", "-keyout", &key, "-out", &csr_path]);
    openssl(&csr);
    let ext = p("server.ext");
    std::fs::write(
        &ext,
        "basicConstraints=critical,CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        &csr_path,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        &ext,
        "-out",
        &cert,
    ]);
    Some(TestCerts {
        ca: ca_pem.into(),
        cert: cert.into(),
        key: key.into(),
    })
}

/// A TCP relay on 127.0.0.1 that passes server-to-client bytes at a bounded rate: a slow
/// client, so a transfer is still running when the test acts. Counts the bytes it passed.
pub struct SlowRelay {
    pub port: u16,
    passed: std::sync::Arc<AtomicU64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SlowRelay {
    /// Relay connections to `127.0.0.1:target`, at most `bytes_per_sec` towards the client.
    pub fn start(target: u16, bytes_per_sec: u64) -> SlowRelay {
        use std::io::Write;
        use std::sync::atomic::AtomicBool;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        let port = listener.local_addr().expect("addr").port();
        let passed = std::sync::Arc::new(AtomicU64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (passed2, stop2) = (passed.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = std::net::TcpStream::connect(("127.0.0.1", target)) else {
                    continue;
                };
                let (mut c_read, mut s_write) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let (passed, stop) = (passed2.clone(), stop2.clone());
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let start = Instant::now();
                    let mut sent = 0u64;
                    let mut buf = vec![0u8; 16 << 10];
                    while !stop.load(Ordering::SeqCst) {
                        let n = match s_read.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        sent += n as u64;
                        passed.fetch_add(n as u64, Ordering::SeqCst);
                        let due = Duration::from_secs_f64(sent as f64 / bytes_per_sec as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        SlowRelay { port, passed, stop }
    }

    /// Bytes passed from the server to clients so far.
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}
