//! (a) Full clones through goprox, plain and `--mirror`, protocol v0 and v2, local-dir store and
//! SeaweedFS: refs, objects and HEAD identical to a clone straight from upstream; fsck clean;
//! `ls-remote --symref` identical.

use crate::support::Harness;
use crate::support::git::CloneKind;
use crate::support::goprox::StoreKind;

fn clone_matrix(kind: StoreKind, proto: u8) {
    let Some(mut h) = Harness::start(kind, &format!("clone-v{proto}")) else {
        return;
    };
    let mut repos = vec!["example.test/rich", "example.test/empty"];
    if proto == 2 {
        // The > 20 MiB pack (multipart upload on S3) only where it matters.
        repos.push("example.test/big");
    }
    for repo in repos {
        for ck in [CloneKind::Mirror, CloneKind::Plain] {
            h.clone_and_compare(repo, proto, ck);
        }
    }
    // The `.git` suffix names the same repository.
    let url = format!("{}.git", h.url("example.test/rich"));
    crate::support::git::clone_and_compare(
        &h.git,
        &h.tmp,
        &url,
        "example.test/rich",
        proto,
        CloneKind::Mirror,
    );
    if kind == StoreKind::S3 && proto == 2 {
        assert_multipart(&h);
    }
    // Mirror clones want every ref of a freshly filled repository: answered by streaming its
    // pack whole (the comparisons above checked the result).
    assert!(
        h.gp.log_text().contains("whole packs sent"),
        "no full clone was answered from the stored packs whole"
    );
    h.gp.assert_alive();
}

/// The `big` pack (> 20 MiB) went up as one multipart upload of several parts: its ETag is
/// `"<md5 of part md5s>-<parts>"`.
fn assert_multipart(h: &Harness) {
    let objects = h.store.s3_objects();
    let large: Vec<_> = objects.iter().filter(|o| o.1 > 20 << 20).collect();
    assert!(
        !large.is_empty(),
        "no object over 20 MiB in the bucket after filling `big`: {objects:#?}"
    );
    for (key, size, etag) in large {
        let parts = etag
            .trim_matches('"')
            .rsplit_once('-')
            .and_then(|(_, n)| n.parse::<u32>().ok());
        assert!(
            parts.is_some_and(|n| n >= 2),
            "{key} ({size} bytes) has ETag {etag}: not a multipart upload of several parts"
        );
        eprintln!("{key}: {size} bytes, ETag {etag}");
    }
}

#[test]
fn clone_local_v0() {
    clone_matrix(StoreKind::Local, 0);
}

#[test]
fn clone_local_v2() {
    clone_matrix(StoreKind::Local, 2);
}

#[test]
fn clone_s3_v0() {
    clone_matrix(StoreKind::S3, 0);
}

#[test]
fn clone_s3_v2() {
    clone_matrix(StoreKind::S3, 2);
}
