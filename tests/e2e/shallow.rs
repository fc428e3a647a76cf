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
