//! Partial clone (`--filter=blob:none`, `blob:limit`) and one shared fill for concurrent first
//! requests.

use crate::support::Harness;
use crate::support::git::{CloneKind, reference};
use crate::support::goprox::StoreKind;

/// Objects the clone lacks, from `rev-list --objects --all --missing=print` (`?<oid>` lines).
fn missing(h: &Harness, dir: &std::path::Path) -> usize {
    h.git
        .run(dir, &["rev-list", "--objects", "--all", "--missing=print"])
        .lines()
        .filter(|l| l.starts_with('?'))
        .count()
}

#[test]
fn partial_clone_local() {
    let Some(h) = Harness::start(StoreKind::Local, "partial") else {
        return;
    };
    let root = "example.test/rich";
    let full = reference(root, 2, CloneKind::Plain);
    for proto in [0u8, 2] {
        // blob:none: commits and trees only; every blob is fetched lazily later.
        let dest = h.tmp.join(format!("none-v{proto}"));
        h.git.clone(
            proto,
            &h.url(root),
            &dest,
            &["--filter=blob:none", "--no-checkout"],
        );
        let absent = missing(&h, &dest);
        assert!(absent > 0, "v{proto}: blob:none clone has every object");
        // Lazy fetches of the missing blobs go through goprox too; afterwards nothing is missing
        // and the repository is identical to upstream.
        h.git.run_proto(proto, &dest, &["checkout", "-q", "HEAD"]);
        h.git
            .run_proto(proto, &dest, &["log", "-p", "--all", "-q", "--format=%H"]);
        assert_eq!(
            missing(&h, &dest),
            0,
            "v{proto}: blobs still missing after lazy fetches"
        );
        h.git.fsck(&dest);
        let snap = h.git.snapshot(&dest);
        assert_eq!(
            snap.objects, full.snapshot.objects,
            "v{proto}: objects differ from upstream"
        );

        // blob:limit=1k: large blobs are left out, small ones come along.
        let dest = h.tmp.join(format!("limit-v{proto}"));
        h.git.clone(
            proto,
            &h.url(root),
            &dest,
            &["--filter=blob:limit=1k", "--no-checkout", "--bare"],
        );
        let absent_limit = missing(&h, &dest);
        assert!(
            absent_limit > 0 && absent_limit < absent,
            "v{proto}: blob:limit left out {absent_limit} (blob:none: {absent})"
        );
    }
}

#[test]
fn concurrent_first_requests_share_one_fill() {
    let Some(h) = Harness::start(StoreKind::Local, "onefill") else {
        return;
    };
    let root = "example.test/rich";
    let url = h.url(root);
    h.up.clear_requests();
    std::thread::scope(|s| {
        for i in 0..4 {
            let (h, url) = (&h, &url);
            s.spawn(move || {
                let dest = h.tmp.join(format!("c{i}"));
                h.git.clone(2, url, &dest, &["--mirror"]);
            });
        }
    });
    let handshakes =
        h.up.requests()
            .iter()
            .filter(|l| l.contains("info/refs"))
            .count();
    assert_eq!(
        handshakes,
        1,
        "upstream saw {handshakes} fills: {:#?}",
        h.up.requests()
    );
    let expect = reference(root, 2, CloneKind::Mirror);
    for i in 0..4 {
        let snap = h.git.snapshot(&h.tmp.join(format!("c{i}")));
        assert_eq!(snap.objects, expect.snapshot.objects);
    }
}
