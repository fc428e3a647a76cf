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

/// Upstream failures are told from missing repositories by HTTP status, not by text: a 500
/// whose body says "repository not found", and a connection refused by an upstream whose URL
/// has "404" and "not-found" in it, are upstream failures (502, not cached: the repository
/// fills as soon as upstream answers); only upstream's 404 is "not found" (404, cached for
/// `--negative-ttl`).
#[test]
fn upstream_failures_are_classified_by_status() {
    use crate::support::http::request;
    let Some(h) = Harness::start_with(StoreKind::Local, "status", &["--negative-ttl", "1h"]) else {
        return;
    };
    let refs = |gp: &Goprox, root: &str| {
        request(
            gp.port,
            "GET",
            &format!("/{root}/info/refs?service=git-upload-pack"),
            &[],
            b"",
        )
    };
    h.up.fail_with(Some((500, "repository not found (404)")));
    let r = refs(&h.gp, "example.test/rich");
    assert_eq!(r.status, 502, "upstream 500: {}", r.text());
    h.up.fail_with(None);
    // Not negatively cached: filled at once.
    h.clone_and_compare("example.test/rich", 2, CloneKind::Mirror);
    // A real 404 is a missing repository.
    let r = refs(&h.gp, "example.test/no-such-repo");
    assert_eq!(r.status, 404, "{}", r.text());

    // An upstream that cannot be reached, at a URL full of "404" and "not found".
    let dead = crate::support::free_port();
    let rule = format!("example.test/=http://127.0.0.1:{dead}/not-found-404/");
    let gp = Goprox::start_with(&h.store.share(), &["--upstream".to_string(), rule], &[]);
    let r = refs(&gp, "example.test/vmod");
    assert_eq!(r.status, 502, "unreachable upstream: {}", r.text());
}
