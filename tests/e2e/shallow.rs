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
