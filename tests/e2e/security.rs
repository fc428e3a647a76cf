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
