//! (b) Shallow clone, `--deepen`, `--unshallow` through goprox, step by step against the same
//! steps straight from upstream.

use crate::support::Harness;
use crate::support::fixtures::{RICH_LINEAR_TAIL, fixtures};
use crate::support::git::assert_same;
use crate::support::goprox::StoreKind;

fn shallow(kind: StoreKind, proto: u8) {
    let Some(mut h) = Harness::start(kind, &format!("shallow-v{proto}")) else {
        return;
    };
    const {
        assert!(
            RICH_LINEAR_TAIL > 6,
            "the fixture must keep the last 6 commits linear"
        )
    };
    let full: usize = fixtures()
        .git("rich", &["rev-list", "--count", "refs/heads/trunk"])
        .trim()
        .parse()
        .expect("count");
    let tip = fixtures()
        .git("rich", &["rev-parse", "refs/heads/trunk"])
        .trim()
        .to_string();
    let gp_url = h.url("example.test/rich");
    let up_url = format!("{}/rich", h.up.url());
    let gp = h.tmp.join("through-goprox");
    let up = h.tmp.join("from-upstream");
    let g = &h.git;

    // Step 1: --depth=1
    g.clone(proto, &up_url, &up, &["--depth=1"]);
    g.clone(proto, &gp_url, &gp, &["--depth=1"]);
    assert_eq!(
        g.count(&gp, "HEAD"),
        1,
        "depth=1 clone: rev-list --count HEAD"
    );
    assert_eq!(g.rev_parse(&gp, "HEAD"), tip);
    assert_eq!(
        g.shallow_lines(&gp),
        vec![tip.clone()],
        ".git/shallow after --depth=1"
    );
    assert_eq!(g.shallow_lines(&gp), g.shallow_lines(&up));
    assert_same("after clone --depth=1", &g.snapshot(&gp), &g.snapshot(&up));

    // Step 2: --deepen=5
    for dir in [&up, &gp] {
        g.run_proto(proto, dir, &["fetch", "-q", "--deepen=5"]);
    }
    assert_eq!(
        g.count(&gp, "HEAD"),
        6,
        "after --deepen=5: rev-list --count HEAD"
    );
    let sh = g.shallow_lines(&gp);
    assert_eq!(sh.len(), 1, ".git/shallow after --deepen=5: {sh:?}");
    assert_eq!(sh, vec![g.rev_parse(&gp, "HEAD~5")]);
    assert_eq!(sh, g.shallow_lines(&up));
    assert_same("after fetch --deepen=5", &g.snapshot(&gp), &g.snapshot(&up));

    // Step 3: --unshallow
    for dir in [&up, &gp] {
        g.run_proto(proto, dir, &["fetch", "-q", "--unshallow"]);
    }
    assert_eq!(
        g.count(&gp, "HEAD"),
        full,
        "after --unshallow: rev-list --count HEAD"
    );
    assert!(
        g.shallow_lines(&gp).is_empty(),
        ".git/shallow must be gone after --unshallow"
    );
    assert_same(
        "after fetch --unshallow",
        &g.snapshot(&gp),
        &g.snapshot(&up),
    );
    g.fsck(&gp);
    h.gp.assert_alive();
}

#[test]
fn shallow_local_v0() {
    shallow(StoreKind::Local, 0);
}

#[test]
fn shallow_local_v2() {
    shallow(StoreKind::Local, 2);
}

#[test]
fn shallow_s3_v2() {
    shallow(StoreKind::S3, 2);
}

/// The pack cache: with every generated pack kept (`--pack-cache-min-cost 0s`), a second
/// identical shallow clone is answered from the store, with the same objects as upstream's; a
/// damaged cached pack fails its request loudly (never a silently wrong clone), is deleted,
/// and the next request makes the pack again.
fn pack_cache(kind: StoreKind) {
    let Some(mut h) = Harness::start_with(kind, "pack-cache", &["--pack-cache-min-cost", "0s"])
    else {
        return;
    };
    let gp_url = h.url("example.test/rich");
    let up_url = format!("{}/rich", h.up.url());
    let g = &h.git;
    let up = h.tmp.join("from-upstream");
    g.clone(2, &up_url, &up, &["--depth=1"]);
    let cached = |store: &crate::support::goprox::Store| -> Vec<String> {
        store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("example.test/rich/@git/cache/"))
            .collect()
    };
    // The pack is kept in the background: wait (bounded) for it after the first clone.
    for i in 0..3 {
        let gp = h.tmp.join(format!("through-goprox-{i}"));
        g.clone(2, &gp_url, &gp, &["--depth=1"]);
        assert_same(
            &format!("depth=1 clone {i}"),
            &g.snapshot(&gp),
            &g.snapshot(&up),
        );
        g.fsck(&gp);
        for _ in 0..100 {
            if !cached(&h.store).is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    let keys = cached(&h.store);
    assert_eq!(
        keys.len(),
        1,
        "one request shape, one cached pack: {keys:?}"
    );
    let log = h.gp.log_text();
    assert!(
        log.contains("cached pack sent"),
        "no clone was answered from the cache:\n{log}"
    );
    // Damage the cached pack: the next such clone fails, and the pack is made again after.
    let mut data = h.store.get_object(&keys[0]).expect("cached pack");
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    h.store.put_object(&keys[0], &data);
    let bad = h.tmp.join("damaged");
    let out = g.output(
        h.tmp.path(),
        &[
            "-c",
            "protocol.version=2",
            "clone",
            "--depth=1",
            &gp_url,
            &bad.to_string_lossy(),
        ],
    );
    assert!(!out.ok(), "a clone from a damaged cached pack succeeded");
    let again = h.tmp.join("again");
    g.clone(2, &gp_url, &again, &["--depth=1"]);
    assert_same(
        "after the damaged pack",
        &g.snapshot(&again),
        &g.snapshot(&up),
    );
    g.fsck(&again);
    h.gp.assert_alive();
}

#[test]
fn pack_cache_local() {
    pack_cache(StoreKind::Local);
}

#[test]
fn pack_cache_s3() {
    pack_cache(StoreKind::S3);
}

/// Made ahead: after a fill, the pack of the newest release's shallow fetch (what the go
/// command's `GOPROXY=direct` download and `git clone --depth=1 --branch` ask for first) is
/// kept in the store, before any client asks. A new instance, with upstream stopped, answers
/// exactly that fetch from the kept pack, with the objects and refs upstream gives it.
fn keep_ahead(kind: StoreKind) {
    let args = ["--pack-cache-min-objects", "0"];
    let Some(mut h) = Harness::start_with(kind, "keep-ahead", &args) else {
        return;
    };
    let g = &h.git;
    let up_url = format!("{}/rich", h.up.url());
    // The go command's fetch of one version into a new module cache (a new bare repository).
    let go_fetch = |url: &str, dir: &std::path::Path| {
        g.run(
            h.tmp.path(),
            &["init", "-q", "--bare", &dir.to_string_lossy()],
        );
        g.run_proto(
            2,
            dir,
            &[
                "fetch",
                "-f",
                "--depth=1",
                url,
                "refs/tags/v2.0.0:refs/tags/v2.0.0",
            ],
        );
    };
    let from_up = h.tmp.join("from-upstream");
    go_fetch(&up_url, &from_up);

    // The fill (a first clone); v2.0.0 is the highest release tag (v1.1.0-rc1 is a prerelease).
    g.clone(2, &h.url("example.test/rich"), &h.tmp.join("first"), &[]);
    let limit = std::time::Duration::from_secs(30);
    assert!(
        h.gp.wait_log("made ahead and kept", limit),
        "nothing was made ahead after the fill:\n{}",
        h.gp.log_text()
    );
    let log = h.gp.log_text();
    let made = log
        .lines()
        .find(|l| l.contains("made ahead and kept"))
        .unwrap_or_default();
    assert!(
        made.contains("refs/tags/v2.0.0"),
        "made ahead for another version:\n{log}"
    );
    let bytes = made
        .split_whitespace()
        .find(|w| w.starts_with("bytes="))
        .expect("bytes in the log line")
        .to_string();
    let cached = || -> Vec<String> {
        h.store
            .keys()
            .into_iter()
            .filter(|k| k.starts_with("example.test/rich/@git/cache/"))
            .collect()
    };
    crate::support::wait_for("the kept pack in the store", limit, || {
        (!cached().is_empty()).then_some(())
    });
    assert_eq!(cached().len(), 1, "one pack made ahead: {:?}", cached());

    // A new instance, upstream gone.
    h.gp.stop();
    h.up.stop();
    let gp2 = crate::support::goprox::Goprox::start_with(&h.store, &h.up.goprox_args(), &args);
    let through = h.tmp.join("through-goprox");
    go_fetch(&gp2.repo_url("example.test/rich"), &through);
    assert_same(
        "go's shallow fetch of v2.0.0 from the kept pack",
        &g.snapshot(&through),
        &g.snapshot(&from_up),
    );
    g.fsck(&through);
    // The fetch's pack is the one made ahead (git then asks again for the tags that point
    // into what it got: a pack of its own).
    let log2 = gp2.log_text();
    assert!(
        log2.contains(&format!("cached pack sent repo=example.test/rich {bytes}")),
        "the new instance did not answer with the pack made ahead ({bytes}):\n{log2}"
    );
    assert_eq!(cached().len(), 1, "the new instance made another pack");
}

#[test]
fn keep_ahead_local() {
    keep_ahead(StoreKind::Local);
}

#[test]
fn keep_ahead_s3() {
    keep_ahead(StoreKind::S3);
}
