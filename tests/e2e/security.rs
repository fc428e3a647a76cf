//! Safe to expose: the upstream policy (no SSRF to loopback in any spelling), `--allow` /
//! `--deny`, client authentication and request limits.

use crate::support::Harness;
use crate::support::goprox::StoreKind;
use crate::support::http::{self, HttpResponse};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

fn show(r: &HttpResponse) -> String {
    format!("status {} headers {:?}\n{}", r.status, r.headers, r.text())
}

/// A listener on 127.0.0.1 that counts the connections it accepts (in a thread), until dropped.
struct Trap {
    port: u16,
    hits: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Trap {
    fn bind(port: u16) -> Option<Trap> {
        let l = TcpListener::bind(("127.0.0.1", port)).ok()?;
        l.set_nonblocking(true).ok()?;
        let port = l.local_addr().ok()?.port();
        let hits = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, s) = (hits.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok(_) => {
                        h.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Some(Trap {
            port,
            hits,
            stop,
            thread: Some(thread),
        })
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Import paths naming loopback in several spellings: go-get pages and clones get a 4xx, and a
/// listener on 127.0.0.1:443 (where discovery of `https://127.0.0.1/x?go-get=1` would go)
/// sees no connection.
#[test]
fn ssrf_loopback_spellings_refused() {
    let Some(mut h) = Harness::start(StoreKind::Local, "ssrf") else {
        return;
    };
    // 443 is where goprox would connect for `https://127.0.0.1/...`. Without it (no
    // privilege to bind it), the trap on a free port still shows that nothing wanders off,
    // and the unit tests of the classifier carry the rest.
    let trap = match Trap::bind(443) {
        Some(t) => t,
        None => {
            eprintln!("cannot bind 127.0.0.1:443; trap on a free port instead");
            Trap::bind(0).expect("bind a free port")
        }
    };
    eprintln!("trap on 127.0.0.1:{}", trap.port);
    let port = h.gp.port;
    let paths = [
        "localhost/x",
        "127.0.0.1/x",
        "127.1.2.3/x",
        "0x7f000001/x",
        "2130706433/x",
        "127.1/x",
        "0177.0.0.1/x",
        "foo.localhost/x",
        "169.254.169.254/latest",
    ];
    let mut timings = Vec::new();
    for p in paths {
        for target in [
            format!("/{p}?go-get=1"),
            format!("/{p}/info/refs?service=git-upload-pack"),
        ] {
            let t0 = Instant::now();
            let r = http::get(port, &target);
            timings.push(t0.elapsed());
            assert!(
                (400..500).contains(&r.status),
                "GET {target}: want a 4xx, got {}",
                show(&r)
            );
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("text/")),
                "GET {target}: text body expected: {}",
                show(&r)
            );
        }
        // The real git client too.
        let dest = h.tmp.join(format!("clone-{}", p.replace('/', "_")));
        let out = h.git.output(
            h.tmp.path(),
            &[
                "clone",
                &format!("http://127.0.0.1:{port}/{p}"),
                &dest.to_string_lossy(),
            ],
        );
        assert!(!out.ok(), "clone of {p} must fail");
    }
    // The refusal says what was refused.
    let r = http::get(port, "/127.0.0.1/x?go-get=1");
    assert_eq!(r.status, 403, "{}", show(&r));
    assert!(
        r.text()
            .contains("refusing upstream 127.0.0.1: loopback address"),
        "{}",
        show(&r)
    );
    let r = http::get(port, "/localhost/x?go-get=1");
    assert_eq!(r.status, 403, "{}", show(&r));
    assert!(r.text().contains("loopback"), "{}", show(&r));
    // Give a late connection attempt a moment to land, then check the trap.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        trap.hits(),
        0,
        "goprox connected to 127.0.0.1:{}",
        trap.port
    );
    let max = timings.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{} refusals, slowest {:?} (includes the test's own connect)",
        timings.len(),
        max
    );
    // The contract: refused before any connection attempt, so never as slow as the 5 s
    // connect timeout of discovery.
    assert!(
        max < Duration::from_secs(5),
        "refusals should be quick: {max:?}"
    );
    // goprox still serves the real repositories.
    h.gp.assert_alive();
    let dest = h.clone_and_compare(
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
}

/// `--allow example.test/rich --deny example.test/rich/forbidden`: that repository clones;
/// other paths get 403 with a text body on every route (go-get page, info/refs, upload-pack),
/// the upstream sees no request for them, and `goprox mirror` refuses them too.
#[test]
fn allow_and_deny_patterns() {
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    let store = crate::support::goprox::Store::local();
    let up = crate::support::upstream::Upstream::start(&crate::support::fixtures::fixtures().root);
    let gp = crate::support::goprox::Goprox::start_with(
        &store,
        &up.goprox_args(),
        &[
            "--allow",
            "example.test/rich,github.com/acme/*",
            "--deny",
            "github.com/acme/secret",
        ],
    );
    let git = crate::support::git::GitEnv::new();
    let tmp = crate::support::TempDir::new("allow");
    let dest = crate::support::git::clone_and_compare(
        &git,
        &tmp,
        &gp.repo_url("example.test/rich"),
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    up.clear_requests();
    let port = gp.port;
    for (method, target) in [
        ("GET", "/example.test/vmod?go-get=1"),
        ("GET", "/example.test/vmod/sub/pkg?go-get=1"),
        (
            "GET",
            "/example.test/vmod/info/refs?service=git-upload-pack",
        ),
        ("POST", "/example.test/vmod/git-upload-pack"),
        (
            "GET",
            "/example.test/richer/info/refs?service=git-upload-pack",
        ),
        (
            "GET",
            "/github.com/acme/secret/info/refs?service=git-upload-pack",
        ),
        ("GET", "/github.com/other/widget?go-get=1"),
        ("GET", "/127.0.0.1/x?go-get=1"),
    ] {
        let r = http::request(
            port,
            method,
            target,
            &[("Content-Type", "application/x-git-upload-pack-request")],
            b"",
        );
        assert_eq!(r.status, 403, "{method} {target}: {}", show(&r));
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{method} {target}: {}",
            show(&r)
        );
        assert!(
            r.text().contains("not allowed") || r.text().contains("denied"),
            "{method} {target}: {}",
            show(&r)
        );
    }
    // A proxied (absolute-form) go-get request as the go command sends it.
    let r = http::request(
        port,
        "GET",
        "http://example.test/vmod?go-get=1",
        &[("Host", "example.test")],
        b"",
    );
    assert_eq!(r.status, 403, "proxied: {}", show(&r));
    let out = git.output(
        tmp.path(),
        &[
            "clone",
            &gp.repo_url("example.test/vmod"),
            &tmp.join("vmod").to_string_lossy(),
        ],
    );
    assert!(!out.ok(), "clone of a path not allowed must fail");
    assert!(
        out.stderr_str().contains("403") || out.stderr_str().contains("not allowed"),
        "{}",
        out.stderr_str()
    );
    let seen = up.requests();
    assert!(
        seen.is_empty(),
        "upstream saw requests for refused paths: {seen:?}"
    );
    // The allowed repository still works after all that, the denied one in mirror fails.
    let mut args: Vec<String> = vec![
        "mirror".into(),
        "--allow".into(),
        "example.test/rich".into(),
    ];
    args.extend(up.goprox_args());
    args.push("example.test/vmod".into());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::support::goprox::command(&store, &argv);
    assert!(!out.ok(), "mirror of a refused path must fail");
    assert!(
        format!("{}{}", out.stdout_str(), out.stderr_str()).contains("not allowed"),
        "{}\n{}",
        out.stdout_str(),
        out.stderr_str()
    );
    assert!(
        up.requests().is_empty(),
        "mirror contacted upstream: {:?}",
        up.requests()
    );
    assert!(
        !store.keys().iter().any(|k| k.contains("vmod")),
        "{:?}",
        store.keys()
    );
}

fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    )
}

/// `--auth-file` with a bcrypt htpasswd: 401 + `WWW-Authenticate: Basic` without or with
/// wrong credentials; git with credentials in the URL and go with a NETRC file work;
/// `/healthz` and `/readyz` stay open; the file is re-read when it changes; the password is
/// never logged.
#[test]
fn client_auth_htpasswd() {
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    const PASS: &str = "pw-Zq8-unlogged";
    let store = crate::support::goprox::Store::local();
    let up = crate::support::upstream::Upstream::start(&crate::support::fixtures::fixtures().root);
    let tmp = crate::support::TempDir::new("auth");
    let htpasswd = tmp.join("htpasswd");
    // htpasswd -B writes $2y$ with cost 5.
    let hash = bcrypt::hash(PASS, 5)
        .expect("bcrypt")
        .replacen("$2b$", "$2y$", 1);
    std::fs::write(&htpasswd, format!("# users\nalice:{hash}\n")).expect("write htpasswd");
    let mut gp = crate::support::goprox::Goprox::start_with(
        &store,
        &up.goprox_args(),
        &["--auth-file", &htpasswd.to_string_lossy()],
    );
    let port = gp.port;
    for open in ["/healthz", "/readyz"] {
        let r = http::get(port, open);
        assert_eq!(r.status, 200, "{open} without credentials: {}", show(&r));
    }
    let refs = "/example.test/rich/info/refs?service=git-upload-pack";
    for (what, headers) in [
        ("no credentials", vec![]),
        (
            "wrong password",
            vec![("Authorization", basic("alice", "nope"))],
        ),
        (
            "unknown user",
            vec![("Authorization", basic("mallory", PASS))],
        ),
        (
            "not basic",
            vec![("Authorization", "Bearer abc".to_string())],
        ),
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for target in [refs, "/example.test/rich?go-get=1", "/metrics", "/"] {
            let r = http::request(port, "GET", target, &h, b"");
            assert_eq!(r.status, 401, "{what} {target}: {}", show(&r));
            assert!(
                r.header("www-authenticate")
                    .is_some_and(|v| v.starts_with("Basic realm=\"goprox\"")),
                "{what} {target}: {}",
                show(&r)
            );
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("text/plain"))
                    && !r.body.is_empty(),
                "{what}: {}",
                show(&r)
            );
        }
        let r = http::request(
            port,
            "POST",
            "/example.test/rich/git-upload-pack",
            &h,
            b"0000",
        );
        assert_eq!(r.status, 401, "{what} upload-pack: {}", show(&r));
    }
    assert!(
        up.requests().is_empty(),
        "refused requests reached upstream"
    );
    // Right credentials: the first check runs bcrypt, later ones are remembered.
    let good = basic("alice", PASS);
    let mut times = Vec::new();
    for _ in 0..20 {
        let t0 = Instant::now();
        let r = http::request(port, "GET", refs, &[("Authorization", &good)], b"");
        times.push(t0.elapsed());
        assert_eq!(r.status, 200, "{}", show(&r));
    }
    eprintln!(
        "authenticated info/refs: first {:?}, median of the rest {:?}",
        times[0],
        {
            let mut t = times[1..].to_vec();
            t.sort();
            t[t.len() / 2]
        }
    );
    // git: credentials in the URL (sent after the 401 challenge).
    let git = crate::support::git::GitEnv::new();
    let url = format!("http://alice:{PASS}@127.0.0.1:{port}/example.test/rich");
    let dest = crate::support::git::clone_and_compare(
        &git,
        &tmp,
        &url,
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    let out = git.output(
        tmp.path(),
        &[
            "clone",
            &gp.repo_url("example.test/rich"),
            &tmp.join("noauth").to_string_lossy(),
        ],
    );
    assert!(!out.ok(), "clone without credentials must fail");
    // go: credentials from NETRC, used by the git it runs (github.com needs no go-get page;
    // the go command itself sends netrc credentials only over https).
    if crate::support::have_go() {
        let module = "github.com/acme/widget@v1.2.3";
        let expected = crate::support::gotool::reference(module);
        let netrc = format!("machine 127.0.0.1 login alice password {PASS}\n");
        let got = crate::support::gotool::download_with_netrc(
            module,
            &crate::support::gotool::goprox_route("github.com/acme/widget", port),
            Some(&netrc),
        );
        assert_eq!(
            (&got.sum, &got.go_mod_sum),
            (&expected.sum, &expected.go_mod_sum)
        );
    } else {
        crate::support::skip("go not installed (NETRC part of the auth test)");
    }
    // Reload: replace alice by bob; within a few seconds bob works and alice is refused.
    let hash2 = bcrypt::hash("bobs-pw", 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("bob:{hash2}\n")).expect("rewrite htpasswd");
    crate::support::wait_for("auth file reload", Duration::from_secs(10), || {
        let r = http::request(
            port,
            "GET",
            refs,
            &[("Authorization", &basic("bob", "bobs-pw"))],
            b"",
        );
        (r.status == 200).then_some(())
    });
    let r = http::request(port, "GET", refs, &[("Authorization", &good)], b"");
    assert_eq!(r.status, 401, "alice after reload: {}", show(&r));
    gp.assert_alive();
    let log = gp.log_text();
    assert!(!log.contains(PASS), "password in goprox's log");
    assert!(!log.contains("bobs-pw"), "password in goprox's log");
}

/// Request limits: a body above `--max-request-bytes` gets 413 (also when it only grows that
/// large when gunzipped); too many haves get a clean `ERR`; connections that send half a
/// request head are cut off after `--header-timeout` while clones go on.
#[test]
fn request_limits_and_slow_headers() {
    use std::io::{Read, Write};
    let Some(mut h) = Harness::start(StoreKind::Local, "limits") else {
        return;
    };
    // Restart goprox with small limits on the same store and upstream.
    let extra = [
        "--max-request-bytes",
        "1048576",
        "--body-timeout",
        "2s",
        "--max-haves",
        "1000",
        "--max-wants",
        "50",
        "--header-timeout",
        "2s",
    ];
    h.gp.stop();
    h.gp = crate::support::goprox::Goprox::start_with(&h.store, &h.up.goprox_args(), &extra);
    let port = h.gp.port;
    let up_pack = "/example.test/rich/git-upload-pack";
    let ct = ("Content-Type", "application/x-git-upload-pack-request");
    // Fill the repository first (and learn a real oid).
    let r = http::get(port, "/example.test/rich/info/refs?service=git-upload-pack");
    assert_eq!(r.status, 200, "{}", show(&r));
    let head = crate::support::fixtures::fixtures().git("rich", &["rev-parse", "HEAD"]);
    let head = head.trim();

    // Plain body above the limit (refused before it is read, so the client may see its
    // write fail: post_streaming reads the answer meanwhile).
    let t0 = Instant::now();
    let (answer, _) = post_streaming(port, up_pack, 2 << 20, false, None);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("content-type: text/") && lower.contains("too large"),
        "413 needs a text body: {answer}"
    );
    eprintln!("2 MiB body refused in {:?}", t0.elapsed());
    // A small gzip body that inflates beyond the limit.
    let mut bomb = Vec::new();
    {
        let mut enc = flate2::write::GzEncoder::new(&mut bomb, flate2::Compression::best());
        enc.write_all(&vec![b'0'; 8 << 20]).expect("gzip");
        enc.finish().expect("gzip");
    }
    assert!(bomb.len() < 1 << 20, "gzip body {} bytes", bomb.len());
    let r = http::request(
        port,
        "POST",
        up_pack,
        &[ct, ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(r.status, 413, "gzip bomb: {}", show(&r));
    assert!(r.text().contains("too large"), "{}", show(&r));

    // Too many haves: a clean ERR pkt-line, v0 and v2.
    let mut body = http::pkt(&format!(
        "want {head} multi_ack_detailed side-band-64k ofs-delta\n"
    ));
    body.extend_from_slice(b"0000");
    for i in 0..1500u32 {
        body.extend_from_slice(&http::pkt(&format!("have {:040x}\n", i + 1)));
    }
    body.extend_from_slice(b"0000");
    body.extend_from_slice(&http::pkt("done\n"));
    let r = http::request(port, "POST", up_pack, &[ct], &body);
    assert_eq!(r.status, 200, "{}", show(&r));
    assert!(
        r.text()
            .contains("ERR upload-pack: too many haves (1500 > 1000"),
        "{}",
        show(&r)
    );
    let mut body = http::pkt("command=fetch\n");
    body.extend_from_slice(b"0001");
    for i in 0..60u32 {
        body.extend_from_slice(&http::pkt(&format!("want {:040x}\n", i + 1)));
    }
    body.extend_from_slice(&http::pkt("done\n"));
    body.extend_from_slice(b"0000");
    let r = http::request(
        port,
        "POST",
        up_pack,
        &[ct, ("Git-Protocol", "version=2")],
        &body,
    );
    assert!(
        r.text()
            .contains("ERR upload-pack: too many wants (60 > 50"),
        "{}",
        show(&r)
    );

    // 300 MB bodies: refused with 413 long before they are sent, declared or chunked.
    for chunked in [false, true] {
        let t0 = Instant::now();
        let (head, sent) = post_streaming(port, up_pack, 300 << 20, chunked, None);
        eprintln!(
            "300 MB body (chunked: {chunked}): {:?} after {} KiB sent, in {:?}",
            head.lines().next(),
            sent >> 10,
            t0.elapsed()
        );
        assert!(head.starts_with("HTTP/1.1 413"), "{head}");
        assert!(head.contains("too large"), "{head}");
        assert!(sent < 100 << 20, "{sent} bytes accepted before the 413");
    }
    // A body that trickles: 408 after --body-timeout (2 s).
    let t0 = Instant::now();
    let (head, _) = post_streaming(port, up_pack, 1000, false, Some(10));
    let took = t0.elapsed();
    eprintln!("stalled body: {:?} after {took:?}", head.lines().next());
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("--body-timeout"), "{head}");
    // The contract: --body-timeout (2 s) bounds the wait, with slack for a slow machine.
    assert!(took < Duration::from_secs(10), "{took:?}");
    h.gp.assert_alive();

    // Slow headers: many connections each send half a request head and stall.
    let rss = |pid: Option<u32>| -> u64 {
        pid.and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    };
    let rss_before = rss(h.gp.pid());
    const SLOW: usize = 300;
    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.write_all(b"GET /example.test/rich/info/refs?service=git-upload-pack HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .expect("write half a head");
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        slow.push(s);
    }
    let rss_during = rss(h.gp.pid());
    let t0 = Instant::now();
    // A clone still works meanwhile.
    let dest = h.clone_and_compare(
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    let clone_time = t0.elapsed();
    // Each stalled connection is closed by goprox (EOF or reset) after about 2 s.
    let mut closed_after = Vec::new();
    for s in &mut slow {
        let mut buf = [0u8; 512];
        let r = s.read(&mut buf);
        closed_after.push(t0.elapsed());
        match r {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                // hyper may answer 408 before closing; then EOF must follow.
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                assert!(
                    text.starts_with("HTTP/1.1 408"),
                    "unexpected answer: {text}"
                );
                let mut rest = Vec::new();
                let _ = s.read_to_end(&mut rest);
            }
        }
    }
    let last = closed_after.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{SLOW} stalled connections; clone meanwhile took {clone_time:?}; all stalled connections closed within {last:?}; goprox RSS {rss_before} KiB before, {rss_during} KiB with them open"
    );
    // The contract: the 2 s header timeout closes them, whatever the clone meanwhile costs
    // (12 s: slack for a slow machine).
    assert!(
        last < Duration::from_secs(12),
        "stalled connections held for {last:?}"
    );
    h.gp.assert_alive();
    let r = http::get(port, "/healthz");
    assert_eq!(r.status, 200);
}

/// POST `total` body bytes (`Content-Length` or chunked) from a writer thread while reading the
/// answer; with `stall_after`, send only that many bytes and then wait. Returns the response
/// head and first body bytes, and how many body bytes were written before goprox answered.
fn post_streaming(
    port: u16,
    path: &str,
    total: usize,
    chunked: bool,
    stall_after: Option<usize>,
) -> (String, usize) {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_string()
    } else {
        format!("Content-Length: {total}")
    };
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-git-upload-pack-request\r\n{framing}\r\n\r\n"
    )
    .expect("write head");
    let sent = std::sync::Arc::new(AtomicUsize::new(0));
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let mut w = s.try_clone().expect("clone socket");
    let (sent2, done2) = (sent.clone(), done.clone());
    let writer = std::thread::spawn(move || {
        let chunk = vec![b'0'; 64 << 10];
        let limit = stall_after.unwrap_or(total);
        while sent2.load(Ordering::Relaxed) < limit && !done2.load(Ordering::Relaxed) {
            let n = chunk.len().min(limit - sent2.load(Ordering::Relaxed));
            let r = if chunked {
                write!(w, "{n:x}\r\n")
                    .and_then(|_| w.write_all(&chunk[..n]))
                    .and_then(|_| w.write_all(b"\r\n"))
            } else {
                w.write_all(&chunk[..n])
            };
            if r.is_err() {
                return;
            }
            sent2.fetch_add(n, Ordering::Relaxed);
        }
        if chunked && stall_after.is_none() {
            let _ = w.write_all(b"0\r\n\r\n");
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&got);
                // The head and a short text body.
                if let Some(i) = text.find("\r\n\r\n")
                    && text[i..].contains('\n')
                    && text[i + 4..].contains('\n')
                {
                    break;
                }
            }
            Err(e) => {
                assert!(!got.is_empty(), "no answer: {e}");
                break;
            }
        }
    }
    let at_answer = sent.load(Ordering::Relaxed);
    done.store(true, Ordering::Relaxed);
    let _ = s.shutdown(std::net::Shutdown::Both);
    let _ = writer.join();
    (String::from_utf8_lossy(&got).into_owned(), at_answer)
}

/// No object in `store` contains `secret`.
fn assert_not_stored(store: &crate::support::goprox::Store, secret: &str) {
    for k in store.keys() {
        if let Some(b) = store.get_object(&k) {
            assert!(
                !b.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "credentials in stored object {k}"
            );
        }
    }
}

/// Credentials in an `--upstream` URL are used but never shown: not in refs.json, the log,
/// error bodies or metrics.
#[test]
fn upstream_credentials_never_leak() {
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    const SECRET: &str = "tok-Vx93-never-shown";
    let store = crate::support::goprox::Store::local();
    let up = crate::support::upstream::Upstream::start(&crate::support::fixtures::fixtures().root);
    let rule = format!("example.test/=http://bot:{SECRET}@127.0.0.1:{}/", up.port);
    let mut gp =
        crate::support::goprox::Goprox::start_with(&store, &["--upstream".to_string(), rule], &[]);
    let git = crate::support::git::GitEnv::new();
    let tmp = crate::support::TempDir::new("creds");
    let dest = crate::support::git::clone_and_compare(
        &git,
        &tmp,
        &gp.repo_url("example.test/rich"),
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    // The clone followed the fill's pack; the fill may still be indexing it.
    let refs = crate::support::wait_for("refs.json", std::time::Duration::from_secs(30), || {
        store.get_object("example.test/rich/@git/refs.json")
    });
    let refs = String::from_utf8_lossy(&refs);
    assert!(!refs.contains(SECRET) && !refs.contains("bot@"), "{refs}");
    assert!(
        refs.contains(&format!("\"http://127.0.0.1:{}/rich\"", up.port)),
        "{refs}"
    );
    let port = gp.port;
    let mut bodies = Vec::new();
    for target in [
        "/example.test/nosuch/info/refs?service=git-upload-pack",
        "/example.test/nosuch?go-get=1",
        "/metrics",
    ] {
        let r = http::get(port, target);
        bodies.push(format!("{target}: {}", show(&r)));
    }
    let all = bodies.join("\n");
    assert!(!all.contains(SECRET), "{all}");
    assert!(
        all.contains(&format!("http://127.0.0.1:{}/nosuch", up.port)),
        "the error names the upstream (without credentials): {all}"
    );
    gp.assert_alive();
    let log = gp.log_text();
    assert!(!log.contains(SECRET), "credentials in goprox's log");
    assert_not_stored(&store, SECRET);
}

/// A private upstream: https with a company CA (`--upstream-ca`) and HTTP basic auth from a
/// netrc file (`--netrc`). The fill works only with both; the password is sent (the upstream
/// checks it) but appears in no log line, response body or stored object.
#[test]
fn private_upstream_https_netrc() {
    use crate::support::upstream::{Options, Upstream};
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    const SECRET: &str = "pw-Qm7z-private-upstream";
    let tmp = crate::support::TempDir::new("private-up");
    let Some(certs) = crate::support::test_certs(&tmp) else {
        return;
    };
    let up = Upstream::start_opts(
        &crate::support::fixtures::fixtures().root,
        Options {
            tls: Some((certs.cert.clone(), certs.key.clone())),
            basic: Some(format!("bot:{SECRET}")),
            ..Options::default()
        },
    );
    assert!(up.url().starts_with("https://"));
    let netrc = tmp.join("netrc");
    std::fs::write(
        &netrc,
        format!("machine 127.0.0.1\n  login bot\n  password {SECRET}\n"),
    )
    .expect("netrc");
    let wrong = tmp.join("netrc-wrong");
    std::fs::write(&wrong, "machine 127.0.0.1 login bot password nope\n").expect("netrc");
    let rule = vec![
        "--upstream".to_string(),
        format!("example.test/={}/", up.url()),
    ];
    let cert_s = certs.ca.to_string_lossy().into_owned();
    let (netrc_s, wrong_s) = (
        netrc.to_string_lossy().into_owned(),
        wrong.to_string_lossy().into_owned(),
    );
    let info_refs = "/example.test/rich/info/refs?service=git-upload-pack";

    // Without the CA the TLS handshake fails, and the error says so.
    let store = crate::support::goprox::Store::local();
    let mut gp = crate::support::goprox::Goprox::start_with(
        &store,
        &rule,
        &["--netrc", &netrc_s, "--single-instance"],
    );
    let r = http::get(gp.port, info_refs);
    assert_eq!(r.status, 502, "{}", show(&r));
    assert!(
        r.text().to_ascii_lowercase().contains("certificate"),
        "the error names the certificate problem: {}",
        show(&r)
    );
    let mut texts = vec![show(&r), gp.log_text()];
    gp.stop();

    // With the CA but wrong credentials: the upstream answers 401 and the fill fails cleanly.
    up.clear_requests();
    let mut gp = crate::support::goprox::Goprox::start_with(
        &store,
        &rule,
        &[
            "--netrc",
            &wrong_s,
            "--upstream-ca",
            &cert_s,
            "--single-instance",
        ],
    );
    let r = http::get(gp.port, info_refs);
    assert!(r.status >= 400, "{}", show(&r));
    assert!(
        up.requests()
            .iter()
            .any(|l| l.contains("401 (wrong credentials)")),
        "goprox sent the (wrong) netrc credentials: {:?}",
        up.requests()
    );
    texts.push(show(&r));
    texts.push(gp.log_text());
    gp.stop();
    assert!(
        !store.keys().iter().any(|k| k.ends_with("refs.json")),
        "a failed fill names nothing: {:?}",
        store.keys()
    );

    // CA and the right credentials: the clone matches upstream.
    up.clear_requests();
    let mut gp = crate::support::goprox::Goprox::start_with(
        &store,
        &rule,
        &[
            "--netrc",
            &netrc_s,
            "--upstream-ca",
            &cert_s,
            "--single-instance",
        ],
    );
    let git = crate::support::git::GitEnv::new();
    let dest = crate::support::git::clone_and_compare(
        &git,
        &tmp,
        &gp.repo_url("example.test/rich"),
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    let log = up.requests();
    assert!(
        log.iter()
            .any(|l| l.contains("git-upload-pack") && l.ends_with("-> 200")),
        "authenticated upstream requests: {log:?}"
    );
    // A missing repository on the private upstream: an error body without the password.
    let r = http::get(
        gp.port,
        "/example.test/nosuch/info/refs?service=git-upload-pack",
    );
    assert!(r.status >= 400, "{}", show(&r));
    texts.push(show(&r));
    texts.push(http::get(gp.port, "/metrics").text());
    gp.assert_alive();
    texts.push(gp.log_text());
    for t in &texts {
        assert!(!t.contains(SECRET), "the password leaked: {t}");
    }
    assert_not_stored(&store, SECRET);
}

/// `--tls-cert/--tls-key` with a self-signed certificate: git clones over https (trusting
/// that certificate), the go-get page says `https://`, and plain HTTP is not answered.
#[test]
fn tls_serving() {
    use std::process::{Command, Stdio};
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    if !crate::support::have_bin("curl") {
        crate::support::skip("curl missing (TLS test)");
        return;
    }
    let tmp = crate::support::TempDir::new("tls");
    let Some(certs) = crate::support::test_certs(&tmp) else {
        return;
    };
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let store = crate::support::goprox::Store::local();
    let up = crate::support::upstream::Upstream::start(&crate::support::fixtures::fixtures().root);
    let port = crate::support::free_port();
    let log = tmp.join("goprox.log");
    let logf = std::fs::File::create(&log).expect("log");
    let mut child = Command::new(crate::support::goprox::goprox_bin())
        .env_clear()
        .env("PATH", crate::support::path_var())
        .env("HOME", tmp.path())
        .env("RUST_LOG", "info")
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--store", &store.arg])
        .args(["--ref-prefix", "*"])
        .args(up.goprox_args())
        .args(["--tls-cert", &cert.to_string_lossy()])
        .args(["--tls-key", &key.to_string_lossy()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(logf.try_clone().expect("dup")))
        .stderr(Stdio::from(logf))
        .spawn()
        .expect("spawn goprox");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    crate::support::wait_for("goprox TLS listener", Duration::from_secs(30), || {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "goprox exited ({st}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("listening on https://")
            .then_some(())
    });
    let _guard = Kill(child);
    let base = format!("https://127.0.0.1:{port}");
    let curl = |path: &str| {
        crate::support::run(
            Command::new("curl").args([
                "-sS",
                "--max-time",
                "20",
                "--cacert",
                &certs.ca.to_string_lossy(),
                &format!("{base}{path}"),
            ]),
            None,
            Duration::from_secs(30),
        )
    };
    let page = curl("/example.test/rich?go-get=1").check().stdout_str();
    assert!(
        page.contains(&format!(
            "content=\"example.test/rich git https://127.0.0.1:{port}/example.test/rich\""
        )),
        "{page}"
    );
    assert_eq!(curl("/healthz").check().stdout_str().trim(), "ok");
    let git = crate::support::git::GitEnv::with_config(&format!(
        "[http]\n\tsslCAInfo = {}\n",
        certs.ca.display()
    ));
    let dest = crate::support::git::clone_and_compare(
        &git,
        &tmp,
        &format!("{base}/example.test/rich"),
        "example.test/rich",
        2,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
    // Without trusting the certificate, git refuses.
    let plain = crate::support::git::GitEnv::new();
    let out = plain.output(
        tmp.path(),
        &["ls-remote", &format!("{base}/example.test/rich")],
    );
    assert!(!out.ok(), "an untrusted certificate must be refused by git");
}

/// 50,000 haves in one request (below the default `--max-haves`) are answered well within
/// 30 s, and goprox keeps serving.
#[test]
fn fifty_thousand_haves() {
    let Some(mut h) = Harness::start(StoreKind::Local, "haves") else {
        return;
    };
    let port = h.gp.port;
    let r = http::get(port, "/example.test/rich/info/refs?service=git-upload-pack");
    assert_eq!(r.status, 200, "{}", show(&r));
    let head = crate::support::fixtures::fixtures().git("rich", &["rev-parse", "HEAD"]);
    let mut body = http::pkt(&format!(
        "want {} multi_ack_detailed side-band-64k ofs-delta\n",
        head.trim()
    ));
    body.extend_from_slice(b"0000");
    for i in 0..50_000u32 {
        body.extend_from_slice(&http::pkt(&format!(
            "have {:040x}\n",
            u64::from(i) * 7919 + 1
        )));
    }
    body.extend_from_slice(&http::pkt("done\n"));
    let t0 = Instant::now();
    let r = http::request(
        port,
        "POST",
        "/example.test/rich/git-upload-pack",
        &[("Content-Type", "application/x-git-upload-pack-request")],
        &body,
    );
    let took = t0.elapsed();
    eprintln!(
        "50,000 haves ({} byte request): status {} in {took:?}, {} byte answer",
        body.len(),
        r.status,
        r.body.len()
    );
    assert_eq!(r.status, 200, "{}", show(&r));
    // A guard against work quadratic in the haves (minutes), not a speed benchmark: the bound
    // is the 30 s promised above, generous for a debug build on a loaded machine.
    assert!(took < Duration::from_secs(30), "50k haves took {took:?}");
    assert!(
        r.body.windows(4).any(|w| w == b"PACK") || r.text().contains("ERR"),
        "neither a pack nor an ERR: {}",
        crate::support::tail(&r.text(), 500)
    );
    h.gp.assert_alive();
    let dest = h.clone_and_compare(
        "example.test/rich",
        0,
        crate::support::git::CloneKind::Mirror,
    );
    crate::support::remove_tree(&dest);
}

fn fill_size_cap(kind: StoreKind) {
    use crate::support::goprox::{Goprox, Store};
    use crate::support::{TempDir, fixtures, git::GitEnv, upstream::Upstream};
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "fillcap") else {
        return;
    };
    let up = Upstream::start(&fixtures::fixtures().root);
    let gp = Goprox::start_with(&store, &up.goprox_args(), &["--max-fill-bytes", "4K"]);
    let env = GitEnv::new();
    let tmp = TempDir::new("fillcap");
    let dest = tmp.join("c").to_string_lossy().into_owned();
    let url = gp.repo_url("example.test/rich");
    let out = env.output(tmp.path(), &["clone", "-q", "--bare", &url, &dest]);
    assert!(!out.ok(), "a clone beyond --max-fill-bytes succeeded");
    // The clone followed the fill's pack as it arrived; the fill's error ended it, and says
    // why (on the error band).
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains("--max-fill-bytes"), "{err}");
    let keys: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with("example.test/rich/"))
        .collect();
    assert!(
        !keys
            .iter()
            .any(|k| k.ends_with("refs.json") || k.contains("/packs/")),
        "a refused fill left objects in the store: {keys:?}"
    );
    // Without the cap the same repository fills and clones.
    let gp2 = Goprox::start_with(&store.share(), &up.goprox_args(), &[]);
    env.clone(
        2,
        &gp2.repo_url("example.test/rich"),
        &tmp.join("c2"),
        &["--bare"],
    )
    .check();
    env.fsck(&tmp.join("c2"));
}

/// `--max-fill-time`: a fill from an upstream that accepts and never answers fails after that
/// long with a clear error, stores nothing, and the instance keeps serving.
#[test]
fn fill_time_cap() {
    use crate::support::goprox::{Goprox, Store};
    use crate::support::{fixtures, upstream::Upstream};
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    let store = Store::local();
    let up = Upstream::start(&fixtures::fixtures().root);
    let mut gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &["--max-fill-time", "2s", "--fill-idle-timeout", "3s"],
    );
    up.hang(true);
    let t0 = Instant::now();
    let r = http::get(
        gp.port,
        "/example.test/rich/info/refs?service=git-upload-pack",
    );
    let took = t0.elapsed();
    eprintln!(
        "fill from a hung upstream answered {} after {took:?}",
        r.status
    );
    assert_eq!(r.status, 504, "{}", show(&r));
    assert!(r.text().contains("--max-fill-time"), "{}", show(&r));
    // The contract: --max-fill-time (2 s) bounds the wait, with slack for a slow machine.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(
        !store.keys().iter().any(|k| k.ends_with("refs.json")),
        "{:?}",
        store.keys()
    );
    up.hang(false);
    gp.assert_alive();
    assert_eq!(http::get(gp.port, "/healthz").status, 200);
}

#[test]
fn fill_size_cap_local() {
    fill_size_cap(StoreKind::Local);
}

#[test]
fn fill_size_cap_s3() {
    fill_size_cap(StoreKind::S3);
}

/// Request ids: the client's `X-Request-Id` is echoed (a new one is made otherwise) and log
/// lines of the request carry it; `--log-format json` writes one JSON object per line.
#[test]
fn request_ids_and_json_logs() {
    use crate::support::goprox::{Goprox, Store};
    use crate::support::{TempDir, fixtures, git::GitEnv, upstream::Upstream};
    if !crate::support::have_git() {
        crate::support::skip("git http-backend not found");
        return;
    }
    let store = Store::local();
    let up = Upstream::start(&fixtures::fixtures().root);
    let gp = Goprox::start_with(&store, &up.goprox_args(), &["--log-format", "json"]);
    let r = http::request(
        gp.port,
        "GET",
        "/example.test/rich/info/refs?service=git-upload-pack",
        &[("X-Request-Id", "trace-abc-123")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", show(&r));
    assert_eq!(
        r.header("x-request-id"),
        Some("trace-abc-123"),
        "{}",
        show(&r)
    );
    let r = http::get(gp.port, "/healthz");
    let made = r.header("x-request-id").unwrap_or_default().to_string();
    assert!(!made.is_empty(), "no request id made: {}", show(&r));
    // A clone through it works, and every log line is JSON; the fill's lines name the id.
    let env = GitEnv::new();
    let tmp = TempDir::new("reqid");
    env.clone(
        2,
        &gp.repo_url("example.test/rich"),
        &tmp.join("c"),
        &["--bare"],
    );
    let log = gp.log_text();
    let mut with_id = 0;
    // (The start-up banner goes to stdout, which the harness writes to the same file.)
    for line in log
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("goprox listening on "))
    {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v.to_string().contains("trace-abc-123") {
            with_id += 1;
        }
    }
    assert!(with_id > 0, "no log line carries the request id:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("\"pack sent\"") && l.contains("\"span\":{\"id\":")),
        "the clone's pack was not logged under a request id:\n{log}"
    );
}
