//! The checksum-database relay (`--sumdb NAME=URL`) against the go command: with
//! `GOPROXY=goprox` and `GOSUMDB=<name>+<key>`, `go mod download` verifies modules against a
//! local checksum database (`tests/sumdb_server`, x/mod's own server over an in-memory tree)
//! through goprox; a wrong record is a SECURITY ERROR; with the database stopped, what was
//! seen before still verifies from the bucket; malformed suffixes are refused before anything
//! goes upstream or into the store.

use crate::support::goprox::{Goprox, Store, StoreKind};
use crate::support::gotool::{self, Route};
use crate::support::modwork::{Work, go_version};
use crate::support::upstream::Upstream;
use crate::support::{Output, TempDir, have_git, http, skip};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// The checksum database's name (and its key's).
const DB: &str = "sumdb.test";
/// Debian's golang-golang-x-mod-dev, which the test database is built against.
const X_MOD_GOPATH: &str = "/usr/share/gocode";

/// `tests/sumdb_server` built once per process (in GOPATH mode against Debian's x/mod);
/// `None` after a skip when x/mod is not installed. A failing build with x/mod present panics.
fn sumdb_server() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        if !Path::new(X_MOD_GOPATH)
            .join("src/golang.org/x/mod/sumdb/server.go")
            .is_file()
        {
            skip("Debian's golang.org/x/mod sources (apt-get install golang-golang-x-mod-dev)");
            return None;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("sumdb_server");
        std::fs::create_dir_all(dir.join("home")).expect("mkdir");
        let bin = dir.join("sumdbd");
        let mut cmd = Command::new("go");
        cmd.args(["build", "-o"])
            .arg(&bin)
            .arg("./tests/sumdb_server")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", crate::support::path_var())
            .env("HOME", dir.join("home"))
            .env("GOPATH", X_MOD_GOPATH)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .env("GOTELEMETRY", "off")
            .env("GOCACHE", dir.join("gocache"))
            .env("CGO_ENABLED", "0");
        let out = crate::support::run(&mut cmd, None, Duration::from_secs(600));
        assert!(out.ok(), "building tests/sumdb_server: {}", out.describe());
        Some(bin)
    })
    .clone()
}

/// A running `tests/sumdb_server` on 127.0.0.1; killed on drop.
struct SumDb {
    child: Option<Child>,
    /// The verifier key: a `GOSUMDB` value.
    vkey: String,
    port: u16,
    dir: TempDir,
}

impl SumDb {
    /// A database of the records in `go_sum` (go.sum lines; one record per module version, in
    /// order).
    fn start(bin: &Path, go_sum: &str) -> SumDb {
        let dir = TempDir::new("sumdb-server");
        let records = dir.join("records");
        std::fs::write(&records, go_sum).expect("write records");
        let stderr = std::fs::File::create(dir.join("stderr")).expect("stderr file");
        let mut child = Command::new(bin)
            .args(["-name", DB, "-addr", "127.0.0.1:0"])
            .arg("-records")
            .arg(&records)
            .arg("-log")
            .arg(dir.join("requests"))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut db = SumDb {
            child: Some(child),
            vkey: String::new(),
            port: 0,
            dir,
        };
        while db.vkey.is_empty() || db.port == 0 {
            let Ok(line) = rx.recv_timeout(Duration::from_secs(60)) else {
                panic!(
                    "sumdb_server did not start: {}",
                    std::fs::read_to_string(db.dir.join("stderr")).unwrap_or_default()
                );
            };
            if let Some(k) = line.strip_prefix("vkey ") {
                db.vkey = k.to_string();
            } else if let Some(a) = line.strip_prefix("addr 127.0.0.1:") {
                db.port = a.parse().expect("port");
            }
        }
        db
    }

    /// `METHOD PATH` of every request so far.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("requests"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SumDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// go.sum lines of a made-up module version (the database does not look at the hashes).
fn filler(i: usize) -> String {
    format!(
        "example.test/filler{i:03} v1.0.0 h1:{i:A>43}=\nexample.test/filler{i:03} v1.0.0/go.mod h1:{i:B>43}=\n"
    )
}

/// The value of a metric line (`name{labels} value`), 0 when absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn relay(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    if go_version().is_none_or(|v| v < (1, 24)) {
        skip("the checksum-database relay is checked against go >= 1.24");
        return;
    }
    let Some(bin) = sumdb_server() else {
        return;
    };
    let Some(store) = Store::new(kind, "sumdb") else {
        return;
    };
    let tmp = TempDir::new("sumdb");
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut w = Work::new(&tmp, "sumfix");
    w.write("go.mod", "module example.test/sumfix\n\ngo 1.21\n");
    w.write("s.go", "package sumfix\n\nconst V = 1\n");
    w.commit("one");
    w.git(&["tag", "v1.0.0"]);
    w.write("s.go", "package sumfix\n\nconst V = 2\n");
    w.commit("two");
    w.git(&["tag", "v1.1.0"]);
    w.publish(&root, "sumfix");
    let up = Upstream::start(&root);

    // The real hashes, straight from the repository.
    let good = gotool::download("example.test/sumfix@v1.0.0", &Route::Proxy(up.port));
    let other = gotool::download("example.test/sumfix@v1.1.0", &Route::Proxy(up.port));
    assert_ne!(good.sum, other.sum);
    // 303 records, so that the proofs need full tiles as well as partial ones: v1.0.0 as it
    // is (record 100), v1.1.0 with v1.0.0's zip hash (a wrong record).
    let mut records: String = (0..100).map(filler).collect();
    records.push_str(&format!(
        "example.test/sumfix v1.0.0 {}\nexample.test/sumfix v1.0.0/go.mod {}\n",
        good.sum, good.go_mod_sum
    ));
    records.push_str(&format!(
        "example.test/sumfix v1.1.0 {}\nexample.test/sumfix v1.1.0/go.mod {}\n",
        good.sum, other.go_mod_sum
    ));
    records.extend((100..301).map(filler));
    let mut db = SumDb::start(&bin, &records);
    let mut gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &["--sumdb", &format!("{DB}=http://127.0.0.1:{}", db.port)],
    );
    let route = Route::Goproxy(gp.url());
    let port = gp.port;
    let vkey = db.vkey.clone();
    // `go mod download -json M@V` in a fresh module cache, verified against the database.
    let download = |module_at: &str| -> Output {
        let env = TempDir::new("go-sumdb");
        let mut c = gotool::command(&env, &route, None);
        c.env("GOSUMDB", &vkey)
            .env("GONOSUMDB", "")
            .env("GOPRIVATE", "")
            .args(["mod", "download", "-json", module_at]);
        crate::support::run(&mut c, None, gotool::GO_TIMEOUT)
    };
    let sum_of = |out: &Output| -> String {
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str())
            .unwrap_or_else(|e| panic!("go mod download JSON: {e}: {}", out.describe()));
        v["Sum"].as_str().unwrap_or_default().to_string()
    };
    let lookups = |db: &SumDb, module_at: &str| {
        let want = format!("GET /lookup/{module_at}");
        db.requests().iter().filter(|r| **r == want).count()
    };
    let metrics = || http::get(port, "/metrics").text();

    // Verified through goprox: the database saw the lookup and tiles (from goprox, the only
    // client it has), and the answers that never change were kept.
    let out = download("example.test/sumfix@v1.0.0");
    assert!(
        out.ok(),
        "go mod download via the relay: {}",
        out.describe()
    );
    assert_eq!(sum_of(&out), good.sum);
    assert_eq!(
        lookups(&db, "example.test/sumfix@v1.0.0"),
        1,
        "{:?}",
        db.requests()
    );
    assert!(
        db.requests()
            .iter()
            .any(|r| r.starts_with("GET /tile/8/0/")),
        "{:?}",
        db.requests()
    );
    let keys = store.keys();
    for kept in [
        format!("@sumdb/{DB}/lookup/example.test/sumfix@v1.0.0"),
        format!("@sumdb/{DB}/tile/8/0/000"),
    ] {
        assert!(keys.contains(&kept), "{kept} not kept: {keys:?}");
    }
    assert!(
        keys.iter()
            .any(|k| k.starts_with(&format!("@sumdb/{DB}/last/tile/"))),
        "no partial tile kept: {keys:?}"
    );
    // Again, in a fresh module cache: the lookup comes from the bucket.
    let out = download("example.test/sumfix@v1.0.0");
    assert!(out.ok(), "second download: {}", out.describe());
    assert_eq!(
        lookups(&db, "example.test/sumfix@v1.0.0"),
        1,
        "{:?}",
        db.requests()
    );
    let m = metrics();
    assert!(
        metric(&m, "goprox_sumdb_requests_total{outcome=\"relayed\"}") > 0.0,
        "{m}"
    );
    assert!(
        metric(&m, "goprox_sumdb_requests_total{outcome=\"stored\"}") > 0.0,
        "{m}"
    );

    // A record that disagrees with the module: the go command refuses it.
    let out = download("example.test/sumfix@v1.1.0");
    let text = format!("{}{}", out.stdout_str(), out.stderr_str());
    assert!(
        !out.ok() && text.contains("SECURITY ERROR") && text.contains("checksum mismatch"),
        "a wrong record went unnoticed: {}",
        out.describe()
    );
    assert_eq!(
        lookups(&db, "example.test/sumfix@v1.1.0"),
        1,
        "{:?}",
        db.requests()
    );

    // `/latest` is relayed (and its last copy kept).
    let latest = http::get(port, &format!("/sumdb/{DB}/latest"));
    assert_eq!(latest.status, 200, "{}", latest.text());
    assert!(
        latest.text().contains("go.sum database tree"),
        "{}",
        latest.text()
    );

    // Malformed or foreign requests: refused with a reason, nothing upstream, nothing stored.
    let keys = store.keys();
    let asked = db.requests().len();
    let supported = http::get(port, &format!("/sumdb/{DB}/supported"));
    assert_eq!((supported.status, supported.body.len()), (200, 0));
    for (path, status) in [
        (format!("/sumdb/{DB}/tile/../../x"), 400),
        (format!("/sumdb/{DB}/tile/8/0/000.p/256"), 400),
        (format!("/sumdb/{DB}/tile/8/0/x000/000"), 400),
        (format!("/sumdb/{DB}/tile/8/0/..%2F..%2F..%2Fx"), 400),
        (format!("/sumdb/{DB}/lookup/Bad@v1"), 400),
        (format!("/sumdb/{DB}/lookup/example.test/sumfix@v1"), 400),
        (
            format!("/sumdb/{DB}/lookup/example.test/sumfix@v1.0.0%2F..%2F..%2Fx"),
            400,
        ),
        (format!("/sumdb/{DB}/lookup/..%2Fx@v1.0.0"), 400),
        (format!("/sumdb/{DB}/other"), 404),
        ("/sumdb/other/supported".to_string(), 404),
        (
            "/sumdb/other/lookup/example.test/sumfix@v1.0.0".to_string(),
            404,
        ),
        ("/sumdb/..%2F..%2Fx/latest".to_string(), 404),
    ] {
        let r = http::get(port, &path);
        assert_eq!(r.status, status, "{path}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{path}"
        );
        let t = r.text();
        assert!(
            !t.trim().is_empty() && t.trim().lines().count() == 1,
            "{path}: {t:?}"
        );
        assert!(!t.contains("@sumdb"), "{path}: a store key in {t:?}");
    }
    let post = http::request(port, "POST", &format!("/sumdb/{DB}/latest"), &[], b"x");
    assert_eq!(post.status, 405, "{}", post.text());
    assert_eq!(store.keys(), keys, "a refused request changed the store");
    assert_eq!(
        db.requests().len(),
        asked,
        "a refused request went upstream"
    );

    // The database goes away: what was seen still verifies, from the bucket (the lookup and
    // full tiles) and the last copies (partial tiles); the wrong record still fails.
    db.stop();
    let out = download("example.test/sumfix@v1.0.0");
    assert!(
        out.ok(),
        "download with the database down: {}",
        out.describe()
    );
    assert_eq!(sum_of(&out), good.sum);
    let out = download("example.test/sumfix@v1.1.0");
    assert!(
        !out.ok() && format!("{}{}", out.stdout_str(), out.stderr_str()).contains("SECURITY ERROR"),
        "{}",
        out.describe()
    );
    let m = metrics();
    assert!(
        metric(&m, "goprox_sumdb_requests_total{outcome=\"stale\"}") > 0.0,
        "{m}"
    );
    let latest = http::get(port, &format!("/sumdb/{DB}/latest"));
    assert_eq!(latest.status, 200, "{}", latest.text());
    // Something never seen: a short 502.
    let r = http::get(
        port,
        &format!("/sumdb/{DB}/lookup/example.test/never@v1.0.0"),
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("unreachable"), "{}", r.text());
    gp.assert_alive();
}

#[test]
fn sumdb_relay_local() {
    relay(StoreKind::Local);
}

#[test]
fn sumdb_relay_s3() {
    relay(StoreKind::S3);
}

/// `--verify-sumdb`: a version is checked against the checksum database before its zip (or
/// go.mod) is first recorded. A hash the database records differently is a 410 and nothing is
/// recorded; a version it does not know is served; a `--nosumdb` path is never looked up; with
/// the database down, kept records still decide and anything else is a 502.
fn verify(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    if go_version().is_none() {
        skip("go not installed");
        return;
    }
    let Some(bin) = sumdb_server() else {
        return;
    };
    let Some(store) = Store::new(kind, "sumdb-verify") else {
        return;
    };
    let tmp = TempDir::new("sumdb-verify");
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let mut w = Work::new(&tmp, "verfix");
    w.write("go.mod", "module example.test/verfix\n\ngo 1.21\n");
    for (i, tag) in ["v1.0.0", "v1.1.0", "v1.2.0"].iter().enumerate() {
        w.write("v.go", format!("package verfix\n\nconst V = {i}\n"));
        w.commit(tag);
        w.git(&["tag", tag]);
    }
    w.publish(&root, "verfix");
    let mut p = Work::new(&tmp, "verpriv");
    p.write("go.mod", "module example.test/verpriv\n\ngo 1.21\n");
    p.write("p.go", "package verpriv\n");
    p.commit("one");
    p.git(&["tag", "v1.0.0"]);
    p.publish(&root, "verpriv");
    let up = Upstream::start(&root);

    let good = gotool::download("example.test/verfix@v1.0.0", &Route::Proxy(up.port));
    let other = gotool::download("example.test/verfix@v1.1.0", &Route::Proxy(up.port));
    assert_ne!(good.sum, other.sum);
    // v1.0.0 as it is; v1.1.0 with v1.0.0's zip hash; v1.2.0 unknown; the private module with
    // wrong hashes (it would be refused if it were ever looked up).
    let records = format!(
        "example.test/verfix v1.0.0 {gs}\nexample.test/verfix v1.0.0/go.mod {gm}\n\
         example.test/verfix v1.1.0 {gs}\nexample.test/verfix v1.1.0/go.mod {om}\n\
         example.test/verpriv v1.0.0 {gs}\nexample.test/verpriv v1.0.0/go.mod {gm}\n",
        gs = good.sum,
        gm = good.go_mod_sum,
        om = other.go_mod_sum,
    );
    let mut db = SumDb::start(&bin, &records);
    let mut gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &[
            "--sumdb",
            &format!("{DB}=http://127.0.0.1:{}", db.port),
            "--verify-sumdb",
            "--nosumdb",
            "example.test/verpriv,*.private.test",
        ],
    );
    let port = gp.port;
    let get = |path: &str| http::get(port, path);
    let ledger = |m: &str, v: &str, ext: &str| {
        let key = format!("{m}/@mod/{m}/@v/{v}.{ext}");
        store.keys().contains(&key)
    };
    let one_line = |r: &http::HttpResponse| {
        let t = r.text();
        assert!(
            r.header("content-type") == Some("text/plain; charset=utf-8"),
            "{:?}",
            r.headers
        );
        assert_eq!(t.trim().lines().count(), 1, "{t:?}");
        assert!(!t.contains("@sumdb") && !t.contains("@mod"), "{t:?}");
        t
    };

    // A version the database agrees with: served and recorded.
    let r = get("/example.test/verfix/@v/v1.0.0.zip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.starts_with(b"PK"), "not a zip");
    let r = get("/example.test/verfix/@v/v1.0.0.mod");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ledger("example.test/verfix", "v1.0.0", "zip.json"));
    assert!(ledger("example.test/verfix", "v1.0.0", "mod"));

    // A zip the database records differently: 410 naming both hashes, nothing recorded.
    let r = get("/example.test/verfix/@v/v1.1.0.zip");
    assert_eq!(r.status, 410, "{}", r.text());
    let t = one_line(&r);
    assert!(
        t.contains("checksum mismatch")
            && t.contains(&format!("built {}", other.sum))
            && t.contains(&format!("checksum database {}", good.sum)),
        "{t}"
    );
    assert!(
        !ledger("example.test/verfix", "v1.1.0", "zip.json"),
        "a refused version was recorded: {:?}",
        store.keys()
    );
    assert!(gp.wait_log("checksum database mismatch", Duration::from_secs(5)));
    // Its go.mod is what the database records: served.
    let r = get("/example.test/verfix/@v/v1.1.0.mod");
    assert_eq!(r.status, 200, "{}", r.text());
    // Asked again: refused again (the record is kept; nothing was recorded).
    let r = get("/example.test/verfix/@v/v1.1.0.zip");
    assert_eq!(r.status, 410, "{}", r.text());
    let lookups = |m: &str| {
        db.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("GET /lookup/{m}@")))
            .count()
    };
    assert_eq!(lookups("example.test/verfix"), 2, "{:?}", db.requests());

    // A version the database does not know: served and recorded.
    let r = get("/example.test/verfix/@v/v1.2.0.zip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ledger("example.test/verfix", "v1.2.0", "zip.json"));

    // A --nosumdb module is never looked up (its record here is wrong).
    for ext in ["info", "mod", "zip"] {
        let r = get(&format!("/example.test/verpriv/@v/v1.0.0.{ext}"));
        assert_eq!(r.status, 200, "{ext}: {}", r.text());
    }
    assert!(
        !db.requests().iter().any(|r| r.contains("verpriv")),
        "a private module went to the database: {:?}",
        db.requests()
    );

    // The go command gets the verified module through goprox and falls through on the refused
    // one (a 410 is "not found" to it).
    let env = TempDir::new("go-verify");
    let route = Route::Goproxy(gp.url());
    let mut c = gotool::command(&env, &route, None);
    c.args(["mod", "download", "-json", "example.test/verfix@v1.0.0"]);
    let out = crate::support::run(&mut c, None, gotool::GO_TIMEOUT);
    assert!(out.ok(), "{}", out.describe());
    assert!(out.stdout_str().contains(&good.sum), "{}", out.describe());
    let mut c = gotool::command(&env, &route, None);
    c.args(["mod", "download", "-json", "example.test/verfix@v1.1.0"]);
    let out = crate::support::run(&mut c, None, gotool::GO_TIMEOUT);
    assert!(
        !out.ok()
            && format!("{}{}", out.stdout_str(), out.stderr_str()).contains("checksum mismatch"),
        "{}",
        out.describe()
    );

    // The database goes away: the kept record still decides; a version never looked up
    // cannot be verified (502) and is not served.
    db.stop();
    let r = get("/example.test/verfix/@v/v1.1.0.zip");
    assert_eq!(r.status, 410, "{}", r.text());
    let r = get("/example.test/verfix/@v/v1.2.0.mod");
    assert_eq!(r.status, 502, "{}", r.text());
    let t = one_line(&r);
    assert!(t.contains("cannot verify"), "{t}");
    assert!(!ledger("example.test/verfix", "v1.2.0", "mod"));
    // Recorded versions are answered from the ledger, without the database.
    let r = get("/example.test/verfix/@v/v1.0.0.zip");
    assert_eq!(r.status, 200, "{}", r.text());

    let m = http::get(port, "/metrics").text();
    for (outcome, want) in [
        ("match", 3.0),
        ("mismatch", 4.0),
        ("unknown", 1.0),
        ("error", 1.0),
    ] {
        assert_eq!(
            metric(
                &m,
                &format!("goprox_sumdb_verifications_total{{outcome=\"{outcome}\"}}")
            ),
            want,
            "{outcome}: {m}"
        );
    }
    gp.assert_alive();
}

#[test]
fn sumdb_verify_local() {
    verify(StoreKind::Local);
}

#[test]
fn sumdb_verify_s3() {
    verify(StoreKind::S3);
}

/// `--verify-sumdb` needs a database to ask.
#[test]
fn sumdb_verify_needs_a_database() {
    let Some(store) = Store::new(StoreKind::Local, "sumdb-verify-off") else {
        return;
    };
    let out = crate::support::goprox::command(
        &store,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--sumdb",
            "off",
            "--verify-sumdb",
        ],
    );
    assert!(!out.ok(), "started: {}", out.describe());
    assert!(
        out.stderr_str().contains("--verify-sumdb"),
        "{}",
        out.describe()
    );
}

/// `--sumdb off`: `/supported` is a 404, so the go command goes to the database itself.
#[test]
fn sumdb_off() {
    let Some(store) = Store::new(StoreKind::Local, "sumdb-off") else {
        return;
    };
    let gp = Goprox::start_with(&store, &[], &["--sumdb", "off"]);
    let r = http::get(gp.port, "/sumdb/sum.golang.org/supported");
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(!r.text().trim().is_empty());
    // The default relays sum.golang.org (nothing is asked upstream for /supported).
    let gp = Goprox::start_with(&store, &[], &[]);
    let r = http::get(gp.port, "/sumdb/sum.golang.org/supported");
    assert_eq!(r.status, 200, "{}", r.text());
}
