//! A living mirror: goprox follows an upstream that moves. New commits and tags appear after
//! `--refresh-after`; a just-pushed sha is fetched on demand even when the refs are "fresh";
//! mirrored tags keep their first target (and stay when deleted upstream) while branches follow
//! force-pushes; an upstream that hangs does not hold clients up.

use std::time::{Duration, Instant};

use crate::support::goprox::{Goprox, Store, StoreKind};
use crate::support::live::{Live, ls_remote, wait_until};
use crate::support::upstream::Upstream;
use crate::support::{TempDir, gotool, have_git, have_go, skip};

fn live(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "refresh") else {
        return;
    };
    let tmp = TempDir::new("refresh");
    let repo = Live::new(&tmp);
    let up = Upstream::start(&tmp.join("up"));
    let gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &[
            "--refresh-after",
            "1s",
            "--upstream-wait",
            "10s",
            "--pack-cache-min-objects",
            "0",
        ],
    );
    let url = gp.repo_url("example.test/live");
    let env = &repo.env;
    let first = repo.upstream_ref("refs/heads/main");
    let v100 = repo.upstream_ref("refs/tags/v1.0.0");

    // Fill.
    let refs = ls_remote(env, &url);
    assert_eq!(refs.get("refs/heads/main"), Some(&first), "{refs:?}");
    assert_eq!(refs.get("refs/tags/v1.0.0"), Some(&v100));

    // Upstream moves: a commit and a new tag; v1.0.0 is deleted, `light` force-moved.
    let second = repo.commit("second");
    repo.git(&["tag", "-a", "-m", "v1.1.0", "v1.1.0"]);
    repo.git(&["tag", "-f", "light"]);
    repo.push(&["refs/heads/main", "refs/tags/v1.1.0", "refs/tags/light"]);
    repo.push(&[":refs/tags/v1.0.0"]);
    let v110 = repo.upstream_ref("refs/tags/v1.1.0");
    wait_until(
        "the new tag through goprox",
        Duration::from_secs(30),
        || ls_remote(env, &url).get("refs/tags/v1.1.0") == Some(&v110),
    );
    let refs = ls_remote(env, &url);
    assert_eq!(refs.get("refs/heads/main"), Some(&second), "branch follows");
    assert_eq!(
        refs.get("refs/tags/v1.0.0"),
        Some(&v100),
        "a mirrored tag deleted upstream stays"
    );
    assert_eq!(
        refs.get("refs/tags/light"),
        Some(&first),
        "a mirrored tag moved upstream keeps its first target"
    );
    assert!(
        gp.log_text().contains("keeping the mirrored tag"),
        "kept tags are logged"
    );
    // The refresh brought a newer release: its shallow fetch is made ahead too.
    wait_until(
        "v1.1.0's shallow fetch made ahead after the refresh",
        Duration::from_secs(30),
        || {
            gp.log_text()
                .lines()
                .any(|l| l.contains("made ahead and kept") && l.contains("refs/tags/v1.1.0"))
        },
    );
    if have_go() {
        let got = gotool::download(
            "example.test/live@v1.1.0",
            &gotool::goprox_route("example.test/live", gp.port),
        );
        assert_eq!(got.version, "v1.1.0", "{}", got.json);
    } else {
        skip("go not found");
    }

    // A branch force-push (backwards) is followed.
    repo.git(&["branch", "-f", "side", "HEAD"]);
    repo.push(&["refs/heads/side"]);
    wait_until("side through goprox", Duration::from_secs(30), || {
        ls_remote(env, &url).get("refs/heads/side") == Some(&second)
    });
    repo.push(&[&format!("{first}:refs/heads/side")]);
    wait_until(
        "the force-pushed side through goprox",
        Duration::from_secs(30),
        || ls_remote(env, &url).get("refs/heads/side") == Some(&first),
    );
    // A ref moved backwards: the packs now hold objects no ref reaches, so full clones are
    // computed, not streamed from the packs whole; they still match upstream.
    let index: goprox::refs::RefIndex = serde_json::from_slice(
        &store
            .get_object("example.test/live/@git/refs.json")
            .expect("ref index"),
    )
    .expect("parse ref index");
    assert!(!index.closed, "closed after a force-push: {index:?}");
    let dest = tmp.join("after-force-push");
    env.clone(2, &url, &dest, &["--mirror"]).check();
    env.fsck(&dest);
    assert_eq!(env.count(&dest, "--all"), env.count(&repo.bare, "--all"));

    // A second instance on the same store that considers its refs fresh for an hour still
    // fetches a just-pushed sha on demand.
    let gp2 = Goprox::start_with(
        &store.share(),
        &up.goprox_args(),
        &["--refresh-after", "1h"],
    );
    let url2 = gp2.repo_url("example.test/live");
    ls_remote(env, &url2);
    let third = repo.commit("third");
    repo.push(&["refs/heads/main"]);
    let client = tmp.join("client");
    std::fs::create_dir_all(&client).expect("mkdir");
    env.run(&client, &["init", "-q"]);
    env.run_proto(2, &client, &["fetch", "-q", "--depth=1", &url2, &third]);
    assert_eq!(env.rev_parse(&client, "FETCH_HEAD"), third);

    // A sha upstream does not have either: a clean error, and asked upstream only once.
    let bogus = "0123456789012345678901234567890123456789";
    let fail = env.output(
        &client,
        &["-c", "protocol.version=2", "fetch", "-q", &url2, bogus],
    );
    let err = fail.stderr_str();
    assert!(!fail.ok(), "fetch of a bogus sha succeeded");
    assert!(err.contains("not our ref"), "unclear error: {err}");
    assert!(
        !err.contains("protocol error") && !err.contains("early EOF"),
        "not a clean error: {err}"
    );
    up.clear_requests();
    let again = env.output(&client, &["fetch", "-q", &url2, bogus]);
    assert!(!again.ok());
    let upstream_fetches: Vec<String> = up
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("POST"))
        .collect();
    assert!(
        upstream_fetches.is_empty(),
        "the bogus sha was looked for upstream again: {upstream_fetches:?}"
    );

    // Upstream hangs: clones are served from the last ref index, promptly.
    up.hang(true);
    let gp3 = Goprox::start_with(
        &store.share(),
        &up.goprox_args(),
        &["--refresh-after", "0s", "--upstream-wait", "2s"],
    );
    let t0 = Instant::now();
    let dest = tmp.join("while-hung");
    env.clone(2, &gp3.repo_url("example.test/live"), &dest, &["--bare"])
        .check();
    let took = t0.elapsed();
    assert_eq!(env.rev_parse(&dest, "refs/heads/main"), third);
    env.fsck(&dest);
    // The contract: --upstream-wait (2 s) bounds the wait for the hung upstream; the rest is
    // the clone itself (generous for a slow machine).
    assert!(
        took < Duration::from_secs(30),
        "clone while upstream hangs took {took:?}"
    );
    assert!(gp3.log_text().contains("serving the last ref index"));
    up.hang(false);
}

#[test]
fn living_mirror_local() {
    live(StoreKind::Local);
}

#[test]
fn living_mirror_s3() {
    live(StoreKind::S3);
}
