//! (e) Upstream down: after goprox has filled a repo, clones and `go mod download` keep working
//! (identical results) with upstream stopped. (f) Two goprox processes on one bucket.

use crate::support::git::CloneKind;
use crate::support::goprox::{Goprox, Store, StoreKind};
use crate::support::gotool::download_and_compare;
use crate::support::{Harness, have_go, skip};

fn upstream_down(kind: StoreKind) {
    let Some(mut h) = Harness::start(kind, "down") else {
        return;
    };
    let go = have_go();
    if !go {
        skip("go not installed (go part of the upstream-down test)");
    }
    // Fill.
    h.clone_and_compare("example.test/rich", 2, CloneKind::Mirror);
    h.clone_and_compare("example.test/empty", 2, CloneKind::Mirror);
    if go {
        for m in super::go::MODULES {
            download_and_compare(m, h.gp.port);
        }
    }
    // Upstream goes away.
    h.up.stop();
    for proto in [2u8, 0] {
        for ck in [CloneKind::Mirror, CloneKind::Plain] {
            h.clone_and_compare("example.test/rich", proto, ck);
        }
    }
    h.clone_and_compare("example.test/empty", 2, CloneKind::Mirror);
    if go {
        // Fresh GOMODCACHE each time (download() makes one).
        for m in super::go::MODULES {
            download_and_compare(m, h.gp.port);
        }
    }
    h.gp.assert_alive();
}

#[test]
fn upstream_down_local() {
    upstream_down(StoreKind::Local);
}

#[test]
fn upstream_down_s3() {
    upstream_down(StoreKind::S3);
}

/// (f) A fills through process A; upstream stops; process B (same bucket) serves it.
#[test]
fn two_goprox_share_bucket_s3() {
    let Some(mut h) = Harness::start(StoreKind::S3, "two") else {
        return;
    };
    let second: Store = h.store.share();
    let mut b = Goprox::start(&second, &h.up);
    h.clone_and_compare("example.test/rich", 2, CloneKind::Mirror);
    h.up.stop();
    for (proto, ck) in [
        (2u8, CloneKind::Mirror),
        (2, CloneKind::Plain),
        (0, CloneKind::Mirror),
    ] {
        crate::support::git::clone_and_compare(
            &h.git,
            &h.tmp,
            &b.repo_url("example.test/rich"),
            "example.test/rich",
            proto,
            ck,
        );
    }
    b.assert_alive();
    h.gp.assert_alive();
}
