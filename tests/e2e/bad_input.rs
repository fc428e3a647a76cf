//! (g) Bad input: each answer checked (status + body), each followed by a good clone through the
//! same goprox.

use crate::support::Harness;
use crate::support::git::CloneKind;
use crate::support::goprox::StoreKind;
use crate::support::http::{self, HttpResponse, pkt};

const UPLOAD_REQ: &str = "application/x-git-upload-pack-request";

fn still_works(h: &mut Harness, after: &str) {
    h.gp.assert_alive();
    let dest = h.clone_and_compare("example.test/rich", 2, CloneKind::Mirror);
    crate::support::remove_tree(&dest);
    eprintln!("ok after: {after}");
}

fn show(r: &HttpResponse) -> String {
    format!(
        "status {} headers {:?}\n{}",
        r.status,
        r.headers,
        crate::support::tail(&r.text(), 2000)
    )
}

#[test]
fn bad_input_local() {
    let Some(mut h) = Harness::start(StoreKind::Local, "bad") else {
        return;
    };
    let port = h.gp.port;

    // Unknown repository.
    let out = h.git.output(
        h.tmp.path(),
        &[
            "clone",
            &h.url("example.test/nosuch"),
            &h.tmp.join("nosuch").to_string_lossy(),
        ],
    );
    assert!(!out.ok(), "cloning an unknown repo must fail");
    assert!(
        out.stderr_str().contains("not found") || out.stderr_str().contains("404"),
        "git's message for an unknown repo: {}",
        out.stderr_str()
    );
    let r = http::get(
        port,
        "/example.test/nosuch/info/refs?service=git-upload-pack",
    );
    assert_eq!(r.status, 404, "{}", show(&r));
    assert!(!r.body.is_empty(), "404 needs a text body: {}", show(&r));
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/")),
        "404 body should be text: {}",
        show(&r)
    );
    still_works(&mut h, "unknown repo");

    // Path tricks → 400.
    for target in [
        "/example.test/%2e%2e/x/info/refs?service=git-upload-pack",
        "/example.test/%2E%2E/x/info/refs?service=git-upload-pack",
        "/example.test/../x/info/refs?service=git-upload-pack",
        "/example.test/rich/../../etc/info/refs?service=git-upload-pack",
        "/example.test/a\\b/info/refs?service=git-upload-pack",
        "/example.test/a%5cb/info/refs?service=git-upload-pack",
        "/example.test/%2e%2e?go-get=1",
    ] {
        let r = http::get(port, target);
        assert_eq!(r.status, 400, "GET {target}: {}", show(&r));
        still_works(&mut h, target);
    }

    // Garbage pkt-lines in a POST body → 200 with an ERR pkt-line (v0 and v2).
    for proto in [None, Some("version=2")] {
        let mut headers = vec![("Content-Type", UPLOAD_REQ)];
        if let Some(p) = proto {
            headers.push(("Git-Protocol", p));
        }
        let r = http::request(
            port,
            "POST",
            "/example.test/rich/git-upload-pack",
            &headers,
            b"zzzz",
        );
        assert_eq!(r.status, 200, "garbage body ({proto:?}): {}", show(&r));
        assert!(
            r.text().contains("ERR"),
            "garbage body ({proto:?}): {}",
            show(&r)
        );
        still_works(&mut h, "garbage POST body");
    }

    // A want of an object that does not exist → ERR (v2 and v0).
    let bogus = "0123456789abcdef0123456789abcdef01234567";
    let mut v2 = Vec::new();
    v2.extend(pkt("command=fetch\n"));
    v2.extend(pkt("object-format=sha1\n"));
    v2.extend(b"0001");
    v2.extend(pkt(&format!("want {bogus}\n")));
    v2.extend(pkt("ofs-delta\n"));
    v2.extend(pkt("done\n"));
    v2.extend(b"0000");
    let r = http::request(
        port,
        "POST",
        "/example.test/rich/git-upload-pack",
        &[("Content-Type", UPLOAD_REQ), ("Git-Protocol", "version=2")],
        &v2,
    );
    assert_eq!(r.status, 200, "v2 unknown want: {}", show(&r));
    assert!(r.text().contains("ERR"), "v2 unknown want: {}", show(&r));
    still_works(&mut h, "v2 unknown want");
    let mut v0 = Vec::new();
    v0.extend(pkt(&format!(
        "want {bogus} multi_ack_detailed side-band-64k ofs-delta\n"
    )));
    v0.extend(b"0000");
    v0.extend(pkt("done\n"));
    let r = http::request(
        port,
        "POST",
        "/example.test/rich/git-upload-pack",
        &[("Content-Type", UPLOAD_REQ)],
        &v0,
    );
    assert_eq!(r.status, 200, "v0 unknown want: {}", show(&r));
    assert!(r.text().contains("ERR"), "v0 unknown want: {}", show(&r));
    still_works(&mut h, "v0 unknown want");

    // receive-pack is refused.
    for (method, target) in [
        (
            "GET",
            "/example.test/rich/info/refs?service=git-receive-pack",
        ),
        ("POST", "/example.test/rich/git-receive-pack"),
    ] {
        let r = http::request(
            port,
            method,
            target,
            &[("Content-Type", "application/x-git-receive-pack-request")],
            b"",
        );
        assert_eq!(r.status, 403, "{method} {target}: {}", show(&r));
        assert!(
            r.text().contains("goprox is a read-only mirror"),
            "{method} {target}: {}",
            show(&r)
        );
    }
    let dest = h.clone_and_compare("example.test/rich", 2, CloneKind::Plain);
    let out = h
        .git
        .output(&dest, &["push", "origin", "HEAD:refs/heads/pushed"]);
    assert!(!out.ok(), "git push to goprox must fail");
    assert!(
        out.stderr_str().contains("403"),
        "push: {}",
        out.stderr_str()
    );
    still_works(&mut h, "receive-pack");

    // go-get meta: github.com takes two path elements, absolute-form requests work.
    let r = http::get(port, "/github.com/a/b/c/d?go-get=1");
    assert_eq!(r.status, 200, "{}", show(&r));
    let want = format!(
        "<meta name=\"go-import\" content=\"github.com/a/b git http://127.0.0.1:{port}/github.com/a/b\">"
    );
    assert!(r.text().contains(&want), "want {want}\n{}", show(&r));
    // goprox serves no source-browsing pages: a go-source tag may only point at an upstream
    // host whose pages are known (this upstream is the test's 127.0.0.1 server).
    assert!(!r.text().contains("go-source"), "{}", show(&r));
    for (target, host) in [
        ("http://example.test/vmod/sub?go-get=1", "example.test"),
        ("/example.test/vmod/sub?go-get=1", "127.0.0.1"),
    ] {
        let r = http::request(port, "GET", target, &[("Host", host)], b"");
        assert_eq!(r.status, 200, "GET {target}: {}", show(&r));
        let want = format!(
            "<meta name=\"go-import\" content=\"example.test/vmod git http://127.0.0.1:{port}/example.test/vmod\">"
        );
        assert!(
            r.text().contains(&want),
            "GET {target}: want {want}\n{}",
            show(&r)
        );
    }
    still_works(&mut h, "go-get");
}
