//! S3 as it really behaves (issue 23), through a seeded fault-injecting proxy in front of
//! SeaweedFS (`tests/support/faults.rs`): 503 SlowDown, 500, resets, answers lost after a write
//! was applied, bodies cut short, stalls longer than `--s3-read-timeout`, and the store gone.
//!
//! (a) Reads with 5% faults, a new goprox process for every round (empty caches, every object
//!     read from S3), upstream stopped: every clone and depth-1 fetch succeeds and equals
//!     upstream (a small block cache, so that packs are read in many ranges).
//! (b) Fills with 10% faults on every request (conditional writes included), two instances:
//!     every client succeeds; after the faults stop every repository clones equal to upstream
//!     and `fsck --strict` clean through a new instance, `goprox fsck` is clean, and upstream
//!     was fetched once per repository.
//! (c) The store gone: one short error line for the client (no keys, no SDK dump), `/readyz`
//!     503; back: served again without a restart.

use std::time::{Duration, Instant};

use crate::support::faults::{Counts, Fault, FaultProxy, Scope};
use crate::support::git::{self, CloneKind, GitEnv};
use crate::support::goprox::{Goprox, Store, command};
use crate::support::http::request;
use crate::support::upstream::Upstream;
use crate::support::{TempDir, fixtures, have_git, skip};

const REPOS: &[&str] = &[
    "example.test/rich",
    "example.test/vmod",
    "example.test/big",
    "example.test/empty",
];

/// The S3 store and a proxy in front of its server, or `None` (skipped). The seed can be
/// changed with `GOPROX_FAULT_SEED` (to run the storm again differently).
fn setup(label: &str, seed: u64) -> Option<(Store, FaultProxy)> {
    let seed = std::env::var("GOPROX_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| s ^ seed)
        .unwrap_or(seed);
    eprintln!("fault seed {seed:#x}");
    if !have_git() {
        skip("git http-backend not found");
        return None;
    }
    let store = Store::s3(label)?;
    let endpoint = store.s3_endpoint().expect("S3 endpoint");
    let port: u16 = endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("S3 port");
    Some((store, FaultProxy::start(port, seed)))
}

/// `git clone` that may fail (its output says how).
fn try_clone(
    env: &GitEnv,
    url: &str,
    dest: &std::path::Path,
    extra: &[&str],
) -> crate::support::Output {
    let dest_s = dest.to_string_lossy().into_owned();
    let mut args = vec!["-c", "protocol.version=2", "clone", "--no-progress"];
    args.extend_from_slice(extra);
    args.push(url);
    args.push(&dest_s);
    env.output(dest.parent().expect("dest parent"), &args)
}

/// The sum of a counter's series in goprox's `/metrics`.
fn metric_sum(port: u16, name: &str) -> f64 {
    let r = request(port, "GET", "/metrics", &[], b"");
    r.text()
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn report(what: &str, c: &Counts) {
    eprintln!(
        "{what}: {} S3 requests ({} reads) {:?}, {} faults {:?}",
        c.total_requests(),
        c.reads(),
        c.requests,
        c.total_faults(),
        c.by_method
    );
}

/// Fill every repository through a goprox on the plain store.
fn fill(store: &Store, up: &Upstream, env: &GitEnv, tmp: &TempDir) {
    let gp = Goprox::start(store, up);
    for repo in REPOS {
        git::clone_and_compare(env, tmp, &gp.repo_url(repo), repo, 2, CloneKind::Mirror);
    }
    // A first clone follows the fill's pack as it arrives; the fill publishes after it.
    for repo in REPOS {
        crate::support::wait_for(
            &format!("{repo}'s ref index"),
            Duration::from_secs(60),
            || store.get_object(&format!("{repo}/@git/refs.json")),
        );
    }
}

#[test]
fn s3_reads_under_faults() {
    let Some((store, proxy)) = setup("faults-reads", 0x5eed_0001) else {
        return;
    };
    let mut up = Upstream::start(&fixtures::fixtures().root);
    let env = GitEnv::new();
    let tmp = TempDir::new("faults-reads");
    fill(&store, &up, &env, &tmp);
    // Everything must now come from the bucket.
    up.stop();
    let faulty = store.via(&proxy.endpoint);
    proxy.set_stall(Duration::from_millis(1500));
    // Bodies cut short weigh three times (they were every failure before reads resumed).
    let mut kinds = Fault::ALL.to_vec();
    kinds.extend([Fault::CutBody, Fault::CutBody]);
    proxy.faults(0.05, Scope::Reads, &kinds);
    let mut fetches = 0;
    let mut retried = 0.0;
    for round in 0..8u32 {
        // A small cache: more of each pack is read from S3, in more requests.
        let gp = Goprox::start_with(
            &faulty,
            &up.goprox_args(),
            &[
                "--s3-read-timeout",
                "1s",
                "--refresh-after",
                "1h",
                "--cache-size",
                "1048576",
            ],
        );
        let proto = if round % 2 == 0 { 2 } else { 0 };
        for repo in REPOS {
            let url = gp.repo_url(repo);
            git::clone_and_compare(&env, &tmp, &url, repo, proto, CloneKind::Mirror);
            if *repo != "example.test/empty" {
                // What `go get` does: a depth-1 fetch of the default branch's tip.
                let dest = tmp.join(format!("shallow-{round}-{}", repo.replace('/', "_")));
                env.clone(2, &url, &dest, &["--depth=1", "--no-checkout"])
                    .check();
                env.fsck(&dest);
                assert_eq!(
                    env.rev_parse(&dest, "HEAD"),
                    git::reference(repo, 2, CloneKind::Mirror)
                        .ls_remote
                        .lines()
                        .filter(|l| !l.starts_with("ref: "))
                        .find_map(|l| l.strip_suffix("\tHEAD"))
                        .expect("HEAD in ls-remote")
                        .to_string(),
                    "{repo}: depth-1 HEAD"
                );
            }
            fetches += 2;
        }
        retried += metric_sum(gp.port, "goprox_store_retries_total");
    }
    let c = proxy.counts();
    report("reads under 5% faults", &c);
    assert!(
        c.reads() >= 200,
        "too few S3 reads to mean much: {}",
        c.reads()
    );
    assert!(c.total_faults() >= 5, "too few faults injected: {c:?}");
    // What was hidden from the clients shows in the metrics.
    assert!(retried >= 5.0, "goprox_store_retries_total only {retried}");
    eprintln!("{fetches} git operations, all served; {retried} store retries");
}

#[test]
fn s3_fills_under_faults_two_instances() {
    let Some((store, proxy)) = setup("faults-fills", 0x5eed_0002) else {
        return;
    };
    let up = Upstream::start(&fixtures::fixtures().root);
    let env = GitEnv::new();
    let tmp = TempDir::new("faults-fills");
    let faulty = store.via(&proxy.endpoint);
    let extra = ["--s3-read-timeout", "1s"];
    let a = Goprox::start_with(&faulty.share(), &up.goprox_args(), &extra);
    let b = Goprox::start_with(&faulty.share(), &up.goprox_args(), &extra);
    up.clear_requests();
    proxy.reset_counts();
    proxy.set_stall(Duration::from_millis(1500));
    proxy.faults(0.10, Scope::All, &Fault::ALL);
    // Whatever the draw: the first writes (leases, the first pack parts or objects) are
    // applied and their answers lost.
    proxy.lose_answers("PUT", 4);
    // Two first clones of every repository at once, one through each instance.
    let outcomes: Vec<(String, bool, String)> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, repo) in REPOS.iter().enumerate() {
            for (j, gp) in [&a, &b].into_iter().enumerate() {
                let (env, tmp) = (&env, &tmp);
                let url = gp.repo_url(repo);
                handles.push(s.spawn(move || {
                    let dest = tmp.join(format!("first-{i}-{j}"));
                    let o = try_clone(env, &url, &dest, CloneKind::Mirror.args());
                    (url, o.ok(), o.describe())
                }));
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("clone thread"))
            .collect()
    });
    proxy.calm();
    let c = proxy.counts();
    report("fills under 10% faults", &c);
    let failed: Vec<_> = outcomes.iter().filter(|o| !o.1).collect();
    assert!(
        failed.is_empty(),
        "{} of {} first clones failed under faults:\n{failed:#?}\n--- a ---\n{}\n--- b ---\n{}",
        failed.len(),
        outcomes.len(),
        crate::support::tail(&a.log_text(), 6000),
        crate::support::tail(&b.log_text(), 6000)
    );
    assert!(
        c.total_faults() >= 3,
        "too few faults injected to mean much: {c:?}"
    );
    // The lost answers of conditional writes were settled, not taken for losses.
    let settled = a.log_text().matches("settled: it was applied").count()
        + b.log_text().matches("settled: it was applied").count();
    assert!(settled >= 1, "no lost answer was settled: {c:?}");
    // The clients' clones equal upstream.
    for (i, repo) in REPOS.iter().enumerate() {
        let expected = git::reference(repo, 2, CloneKind::Mirror);
        for j in 0..2 {
            let dest = tmp.join(format!("first-{i}-{j}"));
            env.fsck(&dest);
            git::assert_same(
                &format!("first clone {j} of {repo} under faults"),
                &env.snapshot(&dest),
                &expected.snapshot,
            );
        }
    }
    // Upstream was fetched once per repository across both instances (the empty repository
    // has nothing to fetch).
    let posts = up.requests();
    for repo in REPOS.iter().filter(|r| **r != "example.test/empty") {
        let path = git::upstream_path(repo);
        let n = posts
            .iter()
            .filter(|r| {
                r.starts_with("POST")
                    && r.contains(&format!("{path}/git-upload-pack"))
                    && !r.contains("command=ls-refs")
            })
            .count();
        assert_eq!(n, 1, "{repo}: upstream fetches {n}:\n{posts:#?}");
    }
    drop((a, b));
    // After the storm: a new instance on the plain store serves every repository clean.
    let c2 = Goprox::start(&store, &up);
    for repo in REPOS {
        git::clone_and_compare(&env, &tmp, &c2.repo_url(repo), repo, 2, CloneKind::Mirror);
    }
    let o = command(&store, &["fsck"]);
    assert!(o.ok(), "goprox fsck after faults: {}", o.describe());
}

#[test]
fn s3_gone_then_back() {
    let Some((store, proxy)) = setup("faults-gone", 0x5eed_0003) else {
        return;
    };
    let up = Upstream::start(&fixtures::fixtures().root);
    let env = GitEnv::new();
    let tmp = TempDir::new("faults-gone");
    fill(&store, &up, &env, &tmp);
    let faulty = store.via(&proxy.endpoint);
    let gp = Goprox::start_with(
        &faulty,
        &up.goprox_args(),
        &["--s3-timeout", "3s", "--refresh-after", "1h"],
    );
    proxy.set_down(true);
    let t = Instant::now();
    let o = try_clone(
        &env,
        &gp.repo_url("example.test/rich"),
        &tmp.join("down"),
        &[],
    );
    let took = t.elapsed();
    assert!(!o.ok(), "clone succeeded with S3 gone");
    let err = o.stderr_str();
    assert!(
        err.contains("object store unavailable, try again later"),
        "no clear message: {err}"
    );
    for internal in [
        "s3://",
        "GetObject",
        "refs.json",
        "@git",
        "Error {",
        "dispatch",
    ] {
        assert!(
            !err.contains(internal),
            "{internal:?} reached the client: {err}"
        );
    }
    // The contract: --s3-timeout (3 s: no store retry starts later) bounds the client's wait.
    assert!(took < Duration::from_secs(30), "the client waited {took:?}");
    let r = request(gp.port, "GET", "/readyz", &[], b"");
    assert_eq!(
        (r.status, r.text()),
        (503, "not ready: object store unavailable\n".to_string())
    );
    assert!(proxy.counts().refused > 0);

    proxy.set_down(false);
    let back = Instant::now();
    loop {
        if request(gp.port, "GET", "/readyz", &[], b"").status == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(20),
            "not ready 20 s after S3 came back"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "S3 gone: client answered in {took:?}; ready again {:?} after S3 came back",
        back.elapsed()
    );
    git::clone_and_compare(
        &env,
        &tmp,
        &gp.repo_url("example.test/rich"),
        "example.test/rich",
        2,
        CloneKind::Mirror,
    );
}

/// A generated pack kept for the next identical request is stored after its answer: SIGTERM
/// right after the answer still lets it land whole (every S3 request 1 s slow, so that the
/// upload is still running when the signal comes).
#[test]
fn a_kept_pack_lands_before_the_process_exits() {
    let Some((store, proxy)) = setup("kept-pack", 0x6b) else {
        return;
    };
    let up = Upstream::start(&fixtures::fixtures().root);
    let env = GitEnv::new();
    let tmp = TempDir::new("kept-pack");
    let repo = "example.test/rich";
    let cached = || -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with(&format!("{repo}/@git/cache/")))
            .collect()
    };
    // Fill (and open once) through S3 directly, keeping no generated pack.
    {
        let gp = Goprox::start_with(&store, &up.goprox_args(), &["--pack-cache-min-cost", "1h"]);
        env.clone(2, &gp.repo_url(repo), &tmp.join("fill"), &[])
            .check();
    }
    let before = cached();
    let slow = store.via(&proxy.endpoint);
    let mut a = Goprox::start_with(
        &slow,
        &up.goprox_args(),
        &["--pack-cache-min-cost", "0s", "--shutdown-grace", "20s"],
    );
    proxy.set_latency(Duration::from_millis(1000));
    env.clone(2, &a.repo_url(repo), &tmp.join("a"), &["--depth=1"])
        .check();
    a.terminate();
    let status = a
        .wait_exit(Duration::from_secs(30))
        .expect("exits within its grace");
    assert!(status.success(), "{status}\n{}", a.log_text());
    let kept: Vec<String> = cached()
        .into_iter()
        .filter(|k| !before.contains(k))
        .collect();
    assert_eq!(kept.len(), 1, "the kept pack landed:\n{}", a.log_text());
    // Whole: a pack whose trailer is the SHA-1 of what precedes it.
    let data = store.get_object(&kept[0]).expect("kept pack");
    assert!(data.starts_with(b"PACK") && data.len() > 32);
    let (body, trailer) = data.split_at(data.len() - 20);
    let sum = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(body));
    assert_eq!(&sum[..], trailer);
    proxy.set_latency(Duration::ZERO);
}
