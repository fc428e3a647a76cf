//! No fill is lost (issue 22): a fill whose pack was received whole but not yet indexed or
//! published, when its process is stopped (SIGTERM) or dies (kill -9), is finished by the next
//! instance from the bucket alone: upstream is stopped before that instance starts, and the
//! repository must still clone equal to upstream and `fsck` clean. After SIGTERM the lease is
//! handed off (the next instance does not wait for it to expire); after kill -9 it expires.
//! The window (the pack stored, not yet indexed) is held open with `GOPROX_PAUSE_AT`.

use std::time::{Duration, Instant};

use crate::support::git::{self, CloneKind, GitEnv};
use crate::support::goprox::{Goprox, Store, StoreKind, command};
use crate::support::upstream::Upstream;
use crate::support::{TempDir, fixtures, have_git, skip, wait_for};

const RICH: &str = "example.test/rich";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Stop {
    Term,
    Kill,
}

fn adopted_after(kind: StoreKind, how: Stop) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "handoff") else {
        return;
    };
    let mut up = Upstream::start(&fixtures::fixtures().root);
    let env = GitEnv::new();
    let tmp = TempDir::new("handoff");
    // SIGTERM: a long lease, to see it handed off rather than expire; kill -9: a short one.
    let ttl = if how == Stop::Term { "60s" } else { "3s" };
    let mut paused = store.share();
    paused
        .env
        .push(("GOPROX_PAUSE_AT".into(), "fill-before-index:120000".into()));
    let mut a = Goprox::start_with(
        &paused,
        &up.goprox_args(),
        &["--lease-ttl", ttl, "--shutdown-grace", "5s"],
    );
    // The first clone follows the fill's pack as it arrives: it completes while the fill
    // waits before indexing.
    git::clone_and_compare(&env, &tmp, &a.repo_url(RICH), RICH, 2, CloneKind::Mirror);
    let prefix = format!("{RICH}/@git/");
    wait_for(
        "the received-fill record and its pack",
        Duration::from_secs(30),
        || {
            let keys = store.keys();
            let record = keys
                .iter()
                .any(|k| k.starts_with(&format!("{prefix}received/")));
            let pack = keys
                .iter()
                .any(|k| k.ends_with(".pack") && k.starts_with(&prefix));
            (record && pack).then_some(())
        },
    );
    assert!(
        !store.keys().iter().any(|k| k.ends_with("refs.json")),
        "published before the pause point"
    );
    match how {
        Stop::Term => {
            a.terminate();
            let t0 = Instant::now();
            let exit = a
                .wait_exit(Duration::from_secs(20))
                .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", a.log_text()));
            let took = t0.elapsed();
            eprintln!("exited {exit} {took:?} after SIGTERM (grace 5 s)");
            // The contract: the process exits within --shutdown-grace (5 s), with slack.
            assert!(took < Duration::from_secs(7), "took {took:?} (grace 5 s)");
            let log = a.log_text();
            assert!(
                log.contains("lease handed off"),
                "the fill's lease was not handed off:\n{log}"
            );
        }
        Stop::Kill => a.stop(),
    }
    // Upstream is gone: only the bucket can answer now.
    up.stop();
    let b = Goprox::start_with(&store, &up.goprox_args(), &["--lease-ttl", ttl]);
    let t0 = Instant::now();
    git::clone_and_compare(&env, &tmp, &b.repo_url(RICH), RICH, 2, CloneKind::Mirror);
    let took = t0.elapsed();
    eprintln!("{how:?}: the next instance served the repository in {took:?}");
    let log = b.log_text();
    assert!(
        log.contains("adopted a received fill"),
        "not adopted:\n{log}"
    );
    if how == Stop::Term {
        // Handed off: no wait for the 60 s lease.
        assert!(
            took < Duration::from_secs(30),
            "waited {took:?} for the lease"
        );
    }
    for proto in [0u8, 2] {
        git::clone_and_compare(&env, &tmp, &b.repo_url(RICH), RICH, proto, CloneKind::Plain);
    }
    assert!(
        !store.keys().iter().any(|k| k.contains("/@git/received/")),
        "the received-fill record was left behind"
    );
    let o = command(&store, &["fsck"]);
    assert!(o.ok(), "goprox fsck: {}", o.describe());
}

#[test]
fn received_fill_is_adopted_after_sigterm_local() {
    adopted_after(StoreKind::Local, Stop::Term);
}

#[test]
fn received_fill_is_adopted_after_sigterm_s3() {
    adopted_after(StoreKind::S3, Stop::Term);
}

#[test]
fn received_fill_is_adopted_after_kill9_local() {
    adopted_after(StoreKind::Local, Stop::Kill);
}

#[test]
fn received_fill_is_adopted_after_kill9_s3() {
    adopted_after(StoreKind::S3, Stop::Kill);
}

/// `goprox mirror` stopped by SIGTERM exits non-zero, promptly, handing its lease off, and the
/// store stays consistent (`goprox fsck`).
#[test]
fn mirror_stops_cleanly_on_sigterm() {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let store = Store::local();
    let up = Upstream::start(&fixtures::fixtures().root);
    let mut paused = store.share();
    paused
        .env
        .push(("GOPROX_PAUSE_AT".into(), "fill-before-index:120000".into()));
    let mut args: Vec<String> = vec!["mirror".into()];
    args.extend(up.goprox_args());
    args.push(RICH.into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = crate::support::goprox::spawn_command(&paused, &argv);
    wait_for("the mirror's pack", Duration::from_secs(60), || {
        store
            .keys()
            .iter()
            .any(|k| k.contains("/@git/received/"))
            .then_some(())
    });
    let pid = child.id().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "mirror still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("mirror exited {status} {:?} after SIGTERM", t0.elapsed());
    assert!(!status.success(), "an interrupted mirror exited 0");
    let o = command(&store, &["fsck"]);
    assert!(
        o.ok(),
        "goprox fsck after an interrupted mirror: {}",
        o.describe()
    );
    // Running it again finishes the work (adopting what was received).
    let again = command(&store, &argv[..]);
    assert!(again.ok(), "mirror again: {}", again.describe());
}

/// A holder that makes no progress does not keep its lease alive: instance A's fill hangs on
/// an upstream that accepts and never answers (its idle limit set far away), and instance B,
/// on the same bucket with a working upstream, fills the repository once A's lease lapses
/// (no progress for three lease periods), instead of waiting for A without end.
#[test]
fn a_stuck_holder_loses_its_lease() {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let store = Store::local();
    let hung = Upstream::start(&fixtures::fixtures().root);
    let good = Upstream::start(&fixtures::fixtures().root);
    let a = Goprox::start_with(
        &store,
        &hung.goprox_args(),
        &["--lease-ttl", "1s", "--fill-idle-timeout", "10m"],
    );
    hung.hang(true);
    let port = a.port;
    let waiting = std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(|| {
            crate::support::http::request(
                port,
                "GET",
                &format!("/{RICH}/info/refs?service=git-upload-pack"),
                &[],
                b"",
            )
        });
    });
    assert!(
        a.wait_log("filling from upstream", Duration::from_secs(20)),
        "A's fill did not start:\n{}",
        a.log_text()
    );
    let b = Goprox::start_with(&store.share(), &good.goprox_args(), &["--lease-ttl", "1s"]);
    let env = GitEnv::new();
    let tmp = TempDir::new("stuck");
    let t0 = Instant::now();
    let dest = tmp.join("c");
    let url = b.repo_url(RICH);
    let o = crate::support::run(
        env.cmd(tmp.path())
            .args(["-c", "protocol.version=2", "clone", "--mirror", "-q", &url])
            .arg(&dest),
        None,
        Duration::from_secs(60),
    );
    let took = t0.elapsed();
    assert!(
        o.ok(),
        "B could not fill while A's fill hung: {}\n--- A ---\n{}\n--- B ---\n{}",
        o.describe(),
        a.log_text(),
        b.log_text()
    );
    eprintln!("B filled {took:?} after A's fill hung");
    git::assert_same(
        "clone through B",
        &env.snapshot(&dest),
        &git::reference(RICH, 2, CloneKind::Mirror).snapshot,
    );
    assert!(
        a.log_text().contains("made no progress"),
        "A did not give its lease up:\n{}",
        a.log_text()
    );
    hung.hang(false);
    drop(a);
    let _ = waiting.join();
}

/// SIGTERM while a refresh (`refresh-before-publish`) or a compaction
/// (`compaction-before-publish`) has stored its pack but not yet replaced the ref index: the
/// process exits within the grace, handing its lease off; `goprox fsck` is clean; and a new
/// instance serves the repository equal to upstream (after a refresh cut short it refreshes
/// again; after a compaction cut short it serves what the refresh published, without asking
/// upstream, and the merged pack is left for gc).
fn sigterm_during(point: &str, kind: StoreKind) {
    use crate::support::live::{Live, ls_remote};
    const LIVE: &str = "example.test/live";
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let tmp = TempDir::new("sigterm-work");
    let repo = Live::new(&tmp);
    repo.commit_big("one", 300_000);
    repo.push(&["refs/heads/main"]);
    let up = Upstream::start(&tmp.join("up"));
    let Some(store) = Store::new(kind, "sigterm-work") else {
        return;
    };
    let mut paused = store.share();
    paused
        .env
        .push(("GOPROX_PAUSE_AT".into(), format!("{point}:120000")));
    let mut a = Goprox::start_with(
        &paused,
        &up.goprox_args(),
        &[
            "--refresh-after",
            "0s",
            "--upstream-wait",
            "60s",
            "--shutdown-grace",
            "4s",
            "--lease-ttl",
            "60s",
        ],
    );
    let env = GitEnv::new();
    let dest = tmp.join("first");
    env.clone(2, &a.repo_url(LIVE), &dest, &["--mirror"]);
    // A second pack with more objects than the first: compaction (by object counts) merges
    // the two after the refresh.
    for i in 0..5 {
        repo.commit(&format!("more {i}"));
    }
    repo.push(&["refs/heads/main"]);
    let url = a.repo_url(LIVE);
    let waiting = std::thread::spawn(move || {
        let _ = std::panic::catch_unwind(|| ls_remote(&GitEnv::new(), &url));
    });
    assert!(
        a.wait_log("pausing (GOPROX_PAUSE_AT)", Duration::from_secs(60)),
        "{point} was not reached:\n{}",
        a.log_text()
    );
    a.terminate();
    let t0 = Instant::now();
    let exit = a
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|| panic!("still running 20 s after SIGTERM:\n{}", a.log_text()));
    let took = t0.elapsed();
    eprintln!("{point}: exited {exit} {took:?} after SIGTERM (grace 4 s)");
    // The contract: the process exits within --shutdown-grace (4 s), with slack.
    assert!(took < Duration::from_secs(6), "took {took:?} (grace 4 s)");
    assert!(
        a.log_text().contains("lease handed off"),
        "{}",
        a.log_text()
    );
    let _ = waiting.join();
    let o = command(&store, &["fsck"]);
    assert!(
        o.ok(),
        "goprox fsck after SIGTERM at {point}: {}",
        o.describe()
    );
    // The next instance serves what upstream has, at once (the lease was handed off).
    let b = Goprox::start_with(&store, &up.goprox_args(), &["--refresh-after", "0s"]);
    let t0 = Instant::now();
    let served = ls_remote(&env, &b.repo_url(LIVE));
    assert_eq!(
        served.get("refs/heads/main"),
        Some(&repo.upstream_ref("refs/heads/main")),
        "after SIGTERM at {point}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "waited {:?}",
        t0.elapsed()
    );
    let c = tmp.join("after");
    env.clone(2, &b.repo_url(LIVE), &c, &["--mirror"]);
    env.fsck(&c);
}

#[test]
fn sigterm_during_a_refresh_local() {
    sigterm_during("refresh-before-publish", StoreKind::Local);
}

#[test]
fn sigterm_during_a_compaction_s3() {
    sigterm_during("compaction-before-publish", StoreKind::S3);
}
