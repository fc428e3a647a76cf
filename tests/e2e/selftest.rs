//! Self-tests of the harness (no goprox needed): the upstream CGI server, the fixtures, and the
//! reference paths for git and go.

use crate::require;
use crate::support::git::{CloneKind, GitEnv, assert_same, reference, reference_upstream};
use crate::support::{TempDir, fixtures::fixtures, have_git, have_go, http, upstream::Upstream};

#[test]
fn selftest_upstream_clone_matches_fixture() {
    require!(have_git(), "git http-backend not installed");
    let fx = fixtures();
    for proto in [0u8, 2] {
        for name in ["rich", "big", "empty"] {
            let r = reference(&format!("example.test/{name}"), proto, CloneKind::Mirror);
            // A mirror clone has exactly the bare fixture's refs and objects.
            let refs = fx.git(
                name,
                &[
                    "for-each-ref",
                    "--format=%(objectname) %(objecttype) %(refname) %(symref)",
                ],
            );
            let mut objects: Vec<String> = fx
                .git(name, &["rev-list", "--objects", "--all"])
                .lines()
                .map(str::to_string)
                .collect();
            objects.sort();
            objects.dedup();
            assert_eq!(r.snapshot.refs, refs, "{name} v{proto} refs");
            assert_eq!(r.snapshot.objects, objects, "{name} v{proto} objects");
        }
    }
    let rich = reference("example.test/rich", 2, CloneKind::Mirror);
    assert_eq!(rich.snapshot.head, "refs/heads/trunk");
    for r in [
        "refs/heads/master",
        "refs/heads/release-1.x",
        "refs/notes/commits",
        "refs/pull/1/head",
        " tag refs/tags/v1.0.0-signed",
        " blob refs/tags/blob-tag",
        " tag refs/tags/tree-tag",
        " commit refs/tags/latest",
    ] {
        assert!(
            rich.snapshot.refs.contains(r),
            "rich lacks {r}:\n{}",
            rich.snapshot.refs
        );
    }
    assert!(rich.ls_remote.starts_with("ref: refs/heads/trunk\tHEAD\n"));
    // v0 and v2 agree for non-empty repos; for the empty repo v2 learns the unborn HEAD.
    for name in ["rich", "big"] {
        for kind in [CloneKind::Plain, CloneKind::Mirror] {
            let root = format!("example.test/{name}");
            assert_same(
                &format!("{name} {kind:?} v0 vs v2"),
                &reference(&root, 0, kind).snapshot,
                &reference(&root, 2, kind).snapshot,
            );
        }
    }
    eprintln!(
        "fixture packs: rich {} bytes, big {} bytes; rich objects {}",
        fx.pack_bytes("rich"),
        fx.pack_bytes("big"),
        rich.object_count
    );
    assert!(
        fx.pack_bytes("big") > 20 << 20,
        "big pack must exceed 20 MiB"
    );
}

#[test]
fn selftest_upstream_shallow_and_stop() {
    require!(have_git(), "git http-backend not installed");
    let fx = fixtures();
    let mut up = Upstream::start(&fx.root);
    let env = GitEnv::new();
    let tmp = TempDir::new("selftest-shallow");
    let full = fx
        .git("rich", &["rev-list", "--count", "trunk"])
        .trim()
        .parse::<usize>()
        .unwrap();
    for proto in [0u8, 2] {
        let dest = tmp.join(format!("v{proto}"));
        env.clone(proto, &format!("{}/rich", up.url()), &dest, &["--depth=1"]);
        assert_eq!(env.count(&dest, "HEAD"), 1);
        assert_eq!(env.shallow_lines(&dest), vec![env.rev_parse(&dest, "HEAD")]);
        env.run_proto(proto, &dest, &["fetch", "-q", "--deepen=5"]);
        assert_eq!(env.count(&dest, "HEAD"), 6);
        env.run_proto(proto, &dest, &["fetch", "-q", "--unshallow"]);
        assert_eq!(env.count(&dest, "HEAD"), full);
        assert!(env.shallow_lines(&dest).is_empty());
        env.fsck(&dest);
    }
    let log = up.requests();
    assert!(
        log.iter().any(|l| l.contains("[Git-Protocol: version=2]")),
        "{log:#?}"
    );
    up.stop();
    let out = env.output(tmp.path(), &["ls-remote", &format!("{}/rich", up.url())]);
    assert!(!out.ok(), "ls-remote against a stopped upstream must fail");
    assert!(std::net::TcpStream::connect(("127.0.0.1", up.port)).is_err());
}

#[test]
fn selftest_upstream_go_get_meta() {
    require!(have_git(), "git http-backend not installed");
    let up = reference_upstream();
    let r = http::request(
        up.port,
        "GET",
        "http://example.test/vmod/sub?go-get=1",
        &[("Host", "example.test")],
        b"",
    );
    assert_eq!(r.status, 200);
    let want = format!(
        "<meta name=\"go-import\" content=\"example.test/vmod git http://127.0.0.1:{}/vmod\">",
        up.port
    );
    assert!(r.text().contains(&want), "{}", r.text());
    let r = http::get(up.port, "/nosuch/info/refs?service=git-upload-pack");
    assert_eq!(r.status, 404, "{}", r.text());
    let r = http::get(up.port, "/rich/info/refs?service=git-upload-pack");
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with(b"001e# service=git-upload-pack\n0000"));
}

#[test]
fn selftest_go_direct() {
    require!(have_git(), "git http-backend not installed");
    require!(have_go(), "go not installed");
    let a = crate::support::gotool::reference("example.test/vmod@v1.0.0");
    let b = crate::support::gotool::reference("github.com/acme/widget@v1.2.3");
    let c = crate::support::gotool::reference("example.test/vmod@latest");
    assert_eq!(c.version, "v1.1.0");
    assert_ne!(a.sum, c.sum);
    eprintln!("{}\n{}\n{}", a.json, b.json, c.json);
}
