//! (h) `goprox mirror` fills a local-dir store without serving; `goprox serve` on it answers with
//! upstream stopped.

use crate::support::git::{CloneKind, GitEnv, clone_and_compare};
use crate::support::goprox::{Goprox, Store, mirror};
use crate::support::gotool::download_and_compare;
use crate::support::{TempDir, fixtures::fixtures, have_git, have_go, skip, upstream::Upstream};

#[test]
fn mirror_then_serve_offline() {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let store = Store::local();
    let mut up = Upstream::start(&fixtures().root);
    mirror(
        &store,
        &up,
        &[
            "example.test/rich",
            "example.test/empty",
            "example.test/vmod",
            "github.com/acme/widget",
        ],
    );
    up.stop();
    // The catalog knows every mirrored repository once `goprox mirror` has exited (its notes
    // are written before it exits).
    let mut catalogued: Vec<String> = store
        .all_keys()
        .iter()
        .filter(|k| k.starts_with(goprox::refs::catalog::PREFIX))
        .flat_map(|k| {
            let shard: goprox::refs::catalog::Shard =
                serde_json::from_slice(&store.get_object(k).expect("shard")).expect("shard JSON");
            shard.repos.into_keys().collect::<Vec<_>>()
        })
        .collect();
    catalogued.sort();
    assert_eq!(
        catalogued,
        [
            "example.test/empty",
            "example.test/rich",
            "example.test/vmod",
            "github.com/acme/widget"
        ]
    );
    let mut gp = Goprox::start(&store, &up);
    let git = GitEnv::new();
    let tmp = TempDir::new("mirror");
    for (proto, ck) in [
        (2u8, CloneKind::Mirror),
        (2, CloneKind::Plain),
        (0, CloneKind::Mirror),
    ] {
        for repo in ["example.test/rich", "example.test/empty"] {
            clone_and_compare(&git, &tmp, &gp.repo_url(repo), repo, proto, ck);
        }
    }
    if have_go() {
        for m in super::go::MODULES {
            download_and_compare(m, gp.port);
        }
    } else {
        skip("go not installed (go part of the mirror test)");
    }
    gp.assert_alive();
}
