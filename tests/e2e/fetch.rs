//! (c) Incremental fetch: a mirror clone rewound (branches back 5 commits, tags/notes/pull refs
//! deleted, unreachable objects pruned) fetches through goprox and receives fewer objects than a
//! full clone, ending identical to upstream.

use std::path::Path;

use crate::support::Harness;
use crate::support::git::{CloneKind, GitEnv, assert_same, count_objects, reference};
use crate::support::goprox::StoreKind;

/// Move every branch back 5 first-parent commits (or delete it), delete all other refs, drop
/// reflogs and prune everything unreachable.
fn rewind(g: &GitEnv, dir: &Path) {
    let refs = g.run(dir, &["for-each-ref", "--format=%(refname)"]);
    for r in refs.lines() {
        if r.starts_with("refs/heads/") && g.count(dir, r) > 5 {
            let back = g.rev_parse(dir, &format!("{r}~5"));
            g.run(dir, &["update-ref", r, &back]);
        } else {
            g.run(dir, &["update-ref", "-d", r]);
        }
    }
    g.run(dir, &["reflog", "expire", "--expire=now", "--all"]);
    g.run(dir, &["gc", "-q", "--prune=now"]);
}

/// Objects in the pack the last fetch received, from index-pack's `Receiving objects: ... (N/N)`.
fn received_objects(stderr: &str) -> Option<usize> {
    stderr
        .split(['\r', '\n'])
        .filter(|l| l.starts_with("Receiving objects:") || l.starts_with("Unpacking objects:"))
        .filter_map(|l| {
            let inner = l.split('(').nth(1)?.split(')').next()?;
            inner.split('/').nth(1)?.trim().parse().ok()
        })
        .next_back()
}

/// Reachable objects (`rev-list --objects --all`).
fn reachable(g: &GitEnv, dir: &Path) -> usize {
    g.run(dir, &["rev-list", "--objects", "--all"])
        .lines()
        .count()
}

/// Numbers from one rewind-and-fetch.
#[derive(Debug)]
struct Counts {
    /// reachable objects in the full mirror clone
    full: usize,
    /// objects in the pack the incremental fetch received
    received: usize,
    /// objects that were missing after the rewind
    missing: usize,
}

/// Mirror-clone `url`, rewind, fetch again with `fetch.unpackLimit=1` (the pack is kept and
/// index-pack reports how many objects it holds; counting loose objects after unpack-objects
/// would only count the *new* ones, however many the server sent).
fn rewind_and_fetch(
    g: &GitEnv,
    proto: u8,
    url: &str,
    dir: &Path,
    before_fetch: &dyn Fn(),
) -> Counts {
    g.clone(proto, url, dir, &["--mirror"]);
    before_fetch();
    let full = reachable(g, dir);
    rewind(g, dir);
    let before = reachable(g, dir);
    assert!(before < full, "rewind removed nothing ({before} of {full})");
    assert_eq!(count_objects(g, dir).loose, 0, "gc left loose objects");
    let pv = format!("protocol.version={proto}");
    let mut cmd = g.cmd(dir);
    cmd.env("GIT_PROGRESS_DELAY", "0").args([
        "-c",
        &pv,
        "-c",
        "fetch.unpackLimit=1",
        "fetch",
        "--progress",
        "origin",
    ]);
    let out = crate::support::run(&mut cmd, None, crate::support::git::GIT_TIMEOUT).check();
    let received = received_objects(&out.stderr_str())
        .unwrap_or_else(|| panic!("no object count in fetch output:\n{}", out.stderr_str()));
    assert_eq!(
        reachable(g, dir),
        full,
        "fetch did not restore every object"
    );
    Counts {
        full,
        received,
        missing: full - before,
    }
}

fn incremental(kind: StoreKind, proto: u8) {
    let Some(mut h) = Harness::start(kind, &format!("fetch-v{proto}")) else {
        return;
    };
    let g = &h.git;
    let up = rewind_and_fetch(
        g,
        proto,
        &format!("{}/rich", h.up.url()),
        &h.tmp.join("from-upstream"),
        &|| {},
    );
    let dir = h.tmp.join("through-goprox");
    // The clone filled the repository; its bitmaps are built in the background. The fetch
    // waits for them, so it is answered from them (a fetch with haves, thin, whole history).
    let gp_ref = &h.gp;
    let gp = rewind_and_fetch(g, proto, &h.url("example.test/rich"), &dir, &|| {
        assert!(
            gp_ref.wait_log("bitmaps stored", std::time::Duration::from_secs(60)),
            "no bitmaps within 60 s:\n{}",
            gp_ref.log_text()
        );
    });
    let log = h.gp.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("pack sent") && l.contains("bitmaps=true")),
        "the incremental fetch was not answered from bitmaps:\n{log}"
    );
    eprintln!("incremental fetch v{proto}: goprox {gp:?}; upstream {up:?}");
    assert_eq!(gp.full, up.full, "full mirror clone object counts differ");
    assert_eq!(
        gp.missing, up.missing,
        "rewind removed different object sets"
    );
    assert!(gp.received > 0, "fetch received nothing");
    assert!(
        gp.received >= gp.missing,
        "received {} objects but {} were missing",
        gp.received,
        gp.missing
    );
    assert!(
        gp.received < gp.full,
        "incremental fetch received {} objects, not fewer than a full clone's {}",
        gp.received,
        gp.full
    );
    let expected = reference("example.test/rich", proto, CloneKind::Mirror);
    assert_same(
        "mirror after incremental fetch",
        &g.snapshot(&dir),
        &expected.snapshot,
    );
    g.fsck(&dir);
    h.gp.assert_alive();
}

#[test]
fn incremental_fetch_local_v0() {
    incremental(StoreKind::Local, 0);
}

#[test]
fn incremental_fetch_local_v2() {
    incremental(StoreKind::Local, 2);
}

#[test]
fn incremental_fetch_s3_v2() {
    incremental(StoreKind::S3, 2);
}

#[test]
fn received_objects_parses_progress() {
    let s = "remote: Enumerating objects: 5\rReceiving objects:  50% (1/2)\rReceiving objects: 100% (2/2), 1.2 KiB | 1 MiB/s, done.\nResolving deltas: 100% (9/9)\n";
    assert_eq!(received_objects(s), Some(2));
    assert_eq!(received_objects("remote: Total 3\n"), None);
}
