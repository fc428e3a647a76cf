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
    // (Whether a first clone here follows its fill depends on timing: a small pack may be
    // stored before the client asks. `first_clone_streams_through` holds upstream back to
    // test that deterministically.)
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

/// The very first clone of a repository streams through: while upstream's pack is still
/// arriving (the upstream holds it back after 1 MiB), each of `clients` concurrent clients
/// already has pack bytes (in index-pack's temporary pack, or objects unpack-objects wrote)
/// and the store has no ref index yet; once upstream goes on, every clone completes, equal to
/// upstream's and fsck-clean, upstream was asked for the pack once, and the repository is
/// stored.
fn first_clone_streams_through(kind: StoreKind, proto: u8, clients: usize) {
    let Some(mut h) = Harness::start(kind, &format!("stream-v{proto}")) else {
        return;
    };
    let repo = "example.test/big";
    h.up.hold_packs_after(Some(1 << 20));
    // Clone destinations (directories of the scratch dir) holding pack bytes.
    let with_bytes = || {
        let mut n = 0;
        for dest in std::fs::read_dir(h.tmp.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let mut stack = vec![dest.path()];
            let mut found = false;
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                    let p = e.path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if e.metadata().is_ok_and(|m| m.len() > 0) {
                        // index-pack's temporary pack, or (a pack of few objects, v0)
                        // objects unpack-objects already wrote.
                        let name = e.file_name().to_string_lossy().into_owned();
                        let dir = dir.file_name().map(|d| d.to_string_lossy().into_owned());
                        let loose = dir.is_some_and(|d| {
                            d.len() == 2 && d.bytes().all(|b| b.is_ascii_hexdigit())
                        });
                        found |= name.starts_with("tmp_pack_") || loose;
                    }
                }
            }
            n += usize::from(found);
        }
        n
    };
    std::thread::scope(|s| {
        let clones: Vec<_> = (0..clients)
            .map(|_| s.spawn(|| h.clone_and_compare(repo, proto, CloneKind::Mirror)))
            .collect();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let mut seen = 0;
        while std::time::Instant::now() < deadline && !clones.iter().any(|c| c.is_finished()) {
            seen = with_bytes();
            if seen == clients {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let stored_early = h
            .store
            .keys()
            .iter()
            .any(|k| k.starts_with(repo) && k.ends_with("refs.json"));
        h.up.hold_packs_after(None);
        for c in clones {
            c.join().expect("a clone");
        }
        assert_eq!(
            seen, clients,
            "clients with pack bytes while upstream held its pack back"
        );
        assert!(
            !stored_early,
            "the fill completed while upstream held its pack back"
        );
    });
    let passed =
        h.gp.log_text()
            .matches("upstream's pack passed through")
            .count();
    assert_eq!(
        passed, clients,
        "first clones answered with the fill's pack"
    );
    let fetches =
        h.up.requests()
            .iter()
            .filter(|r| r.contains("command=fetch"))
            .count();
    assert_eq!(fetches, 1, "upstream pack requests: {:#?}", h.up.requests());
    // The fill completed: later clones are served from the store.
    crate::support::wait_for("the ref index", std::time::Duration::from_secs(30), || {
        h.store
            .keys()
            .iter()
            .any(|k| k.starts_with(repo) && k.ends_with("refs.json"))
            .then_some(())
    });
    h.clone_and_compare(repo, proto, CloneKind::Plain);
    h.gp.assert_alive();
}

#[test]
fn first_clone_streams_through_local_v0() {
    first_clone_streams_through(StoreKind::Local, 0, 1);
}

#[test]
fn first_clone_streams_through_s3_v2() {
    first_clone_streams_through(StoreKind::S3, 2, 1);
}

/// Four clients cloning a repository nobody cloned before all follow one fill.
#[test]
fn first_clones_follow_one_fill() {
    first_clone_streams_through(StoreKind::Local, 2, 4);
}
