//! Byte-level fidelity with C git: the same requests go to goprox and to `git http-backend`
//! (C git's upload-pack), and the responses must be the same pkt-line for pkt-line up to the
//! pack data: same lines, same trailing LFs (or none), same order, same flushes and delimiters.
//! Only the value of `agent=` is masked. The table of what is checked is in
//! `src/protocol/mod.rs`.

use crate::support::Harness;
use crate::support::fixtures::fixtures;
use crate::support::goprox::StoreKind;
use crate::support::http::{self, HttpResponse};
use crate::support::upstream::Upstream;

const UNKNOWN_1: &str = "1111111111111111111111111111111111111111";
const UNKNOWN_2: &str = "2222222222222222222222222222222222222222";
const UNKNOWN_3: &str = "3333333333333333333333333333333333333333";

/// A request body built from pkt-lines.
#[derive(Default, Clone)]
struct Body(Vec<u8>);

impl Body {
    /// A data line, written exactly as given (add `\n` yourself).
    fn raw(mut self, s: &str) -> Self {
        self.0
            .extend_from_slice(format!("{:04x}", s.len() + 4).as_bytes());
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    /// A data line with a trailing LF.
    fn line(self, s: &str) -> Self {
        self.raw(&format!("{s}\n"))
    }
    fn flush(mut self) -> Self {
        self.0.extend_from_slice(b"0000");
        self
    }
    fn delim(mut self) -> Self {
        self.0.extend_from_slice(b"0001");
        self
    }
    /// A v2 command with its arguments.
    fn v2(command: &str, args: &[String]) -> Body {
        let mut b = Body::default()
            .line(&format!("command={command}"))
            .line("agent=git/2.47.3")
            .line("object-format=sha1")
            .delim();
        for a in args {
            b = b.line(a);
        }
        b.flush()
    }
}

/// The response's pkt-lines up to the pack data (the first side-band packet, raw `PACK`, or
/// the line after v2's `packfile`), each as a Rust string literal so that a missing or extra
/// LF shows; `agent=<anything>` is masked.
fn lines(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut b = body;
    while !b.is_empty() {
        if b.starts_with(b"PACK") {
            out.push("<raw pack data>".into());
            break;
        }
        let Some(n) = b
            .get(..4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| usize::from_str_radix(h, 16).ok())
        else {
            out.push(format!(
                "<not a pkt-line: {:?}>",
                String::from_utf8_lossy(b)
            ));
            break;
        };
        match n {
            0 => out.push("flush".into()),
            1 => out.push("delim".into()),
            2 => out.push("response-end".into()),
            _ if n < 4 || n > b.len() => {
                out.push(format!("<bad length {n} of {}>", b.len()));
                break;
            }
            _ => {
                let data = &b[4..n];
                if matches!(data.first(), Some(1 | 2)) {
                    out.push("<side-band data>".into());
                    break;
                }
                out.push(format!("{:?}", mask_agent(&String::from_utf8_lossy(data))));
                if data == b"packfile\n" {
                    break;
                }
            }
        }
        b = &b[n.max(4)..];
    }
    out
}

fn mask_agent(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("agent=") {
        out.push_str(&rest[..i + 6]);
        out.push('*');
        rest = &rest[i + 6..];
        let end = rest.find([' ', '\n', '\0']).unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

struct Wire<'a> {
    h: &'a Harness,
    /// C git with `uploadpack.allowRefInWant`, as goprox advertises `ref-in-want`.
    c_git: &'a Upstream,
    /// goprox's root and the upstream's path for the same repository.
    root: &'a str,
    up_path: &'a str,
    failures: Vec<String>,
    checked: usize,
}

impl Wire<'_> {
    /// The same request to goprox and to upstream; `version` is the `Git-Protocol` header
    /// value, if not empty.
    fn both(&self, method: &str, suffix: &str, version: &str, body: &[u8]) -> [HttpResponse; 2] {
        let mut headers = vec![];
        if method == "POST" {
            headers.push(("Content-Type", "application/x-git-upload-pack-request"));
        }
        if !version.is_empty() {
            headers.push(("Git-Protocol", version));
        }
        let gp = http::request(
            self.h.gp.port,
            method,
            &format!("/{}{suffix}", self.root),
            &headers,
            body,
        );
        let up = http::request(
            self.c_git.port,
            method,
            &format!("/{}{suffix}", self.up_path),
            &headers,
            body,
        );
        [gp, up]
    }

    /// Send `body` to both servers' upload-pack and record any difference.
    fn check(&mut self, what: &str, v2: bool, body: &Body) -> Vec<String> {
        let version = if v2 { "version=2" } else { "" };
        let [gp, up] = self.both("POST", "/git-upload-pack", version, &body.0);
        self.compare(what, &gp, &up)
    }

    fn compare(&mut self, what: &str, gp: &HttpResponse, up: &HttpResponse) -> Vec<String> {
        self.checked += 1;
        let (gl, ul) = (lines(&gp.body), lines(&up.body));
        let ct = |r: &HttpResponse| r.header("content-type").map(str::to_string);
        if gp.status != up.status || ct(gp) != ct(up) || gl != ul {
            self.failures.push(format!(
                "{what}:\n  goprox   {} {:?}\n  {}\n  C git    {} {:?}\n  {}",
                gp.status,
                ct(gp),
                gl.join("\n  "),
                up.status,
                ct(up),
                ul.join("\n  ")
            ));
        }
        gl
    }
}

fn rev(name: &str) -> String {
    fixtures()
        .git("rich", &["rev-parse", name])
        .trim()
        .to_string()
}

#[test]
fn responses_match_c_git_line_for_line() {
    let Some(h) = Harness::start(StoreKind::Local, "wire") else {
        return;
    };
    let tip = rev("refs/heads/trunk");
    let t1 = rev("refs/heads/trunk~1");
    let t2 = rev("refs/heads/trunk~2");
    let t5 = rev("refs/heads/trunk~5");
    let release = rev("refs/heads/release-1.x");
    let t5_time = fixtures()
        .git("rich", &["log", "-1", "--format=%ct", "refs/heads/trunk~5"])
        .trim()
        .to_string();
    let c_git = Upstream::start_with(&fixtures().root, true);
    let mut w = Wire {
        h: &h,
        c_git: &c_git,
        root: "example.test/rich",
        up_path: "rich",
        failures: Vec::new(),
        checked: 0,
    };

    // Advertisements (the first request also fills goprox).
    for version in ["", "version=1", "version=2"] {
        let [gp, up] = w.both("GET", "/info/refs?service=git-upload-pack", version, b"");
        let got = w.compare(&format!("info/refs {version}"), &gp, &up);
        assert!(got.len() > 3, "advertisement too short: {got:?}");
    }

    // ---- v2 ----
    let s = |x: &str| x.to_string();
    let v2_cases: Vec<(&str, Body)> = vec![
        (
            "ls-refs peel symrefs unborn",
            Body::v2("ls-refs", &[s("peel"), s("symrefs"), s("unborn")]),
        ),
        (
            "ls-refs ref-prefix",
            Body::v2(
                "ls-refs",
                &[s("ref-prefix refs/tags/"), s("ref-prefix HEAD")],
            ),
        ),
        (
            "ls-refs without arguments",
            Body::default().line("command=ls-refs").flush(),
        ),
        (
            "fetch deepen 1",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    s("deepen 1"),
                    format!("want {tip}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch deepen from a shallow client (unshallow)",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    format!("shallow {t1}"),
                    s("deepen 3"),
                    format!("want {tip}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch want-ref",
            Body::v2(
                "fetch",
                &[s("no-progress"), s("want-ref refs/heads/trunk"), s("done")],
            ),
        ),
        (
            "fetch haves, ready",
            Body::v2(
                "fetch",
                &[
                    format!("want {tip}"),
                    format!("have {UNKNOWN_1}"),
                    format!("have {t2}"),
                    format!("have {t2}"),
                    format!("have {t5}"),
                ],
            ),
        ),
        (
            "fetch a have on a diverged branch",
            Body::v2("fetch", &[format!("want {tip}"), format!("have {release}")]),
        ),
        (
            "fetch unknown haves only",
            Body::v2(
                "fetch",
                &[format!("want {tip}"), format!("have {UNKNOWN_1}")],
            ),
        ),
        (
            "fetch wait-for-done",
            Body::v2(
                "fetch",
                &[
                    s("wait-for-done"),
                    format!("want {tip}"),
                    format!("have {t2}"),
                ],
            ),
        ),
        (
            "fetch haves with done",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    format!("want {tip}"),
                    format!("have {t2}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch unknown want",
            Body::v2("fetch", &[format!("want {UNKNOWN_3}"), s("done")]),
        ),
        ("fetch without wants", Body::v2("fetch", &[s("done")])),
        (
            "fetch deepen-since",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    format!("deepen-since {t5_time}"),
                    format!("want {tip}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch deepen-not",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    s("deepen-not refs/tags/v1.0.0"),
                    format!("want {tip}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch shallow without deepen (empty shallow-info)",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    format!("shallow {t1}"),
                    format!("want {tip}"),
                    format!("have {t5}"),
                    s("done"),
                ],
            ),
        ),
        (
            "fetch filter blob:none",
            Body::v2(
                "fetch",
                &[
                    s("no-progress"),
                    s("filter blob:none"),
                    format!("want {tip}"),
                    s("done"),
                ],
            ),
        ),
    ];
    let mut seen = Vec::new();
    for (what, body) in &v2_cases {
        seen.extend(w.check(&format!("v2 {what}"), true, body));
    }

    // ---- v0 (stateless, as over smart HTTP) ----
    let caps = "multi_ack_detailed no-done side-band-64k thin-pack include-tag ofs-delta deepen-since deepen-not agent=git/2.47.3";
    let want = |c: &str| Body::default().line(&format!("want {tip} {c}"));
    let v0_cases: Vec<(&str, Body)> = vec![
        ("deepen 1, first round", want(caps).line("deepen 1").flush()),
        (
            "deepen from a shallow client (unshallow)",
            want(caps)
                .line(&format!("shallow {t1}"))
                .line("deepen 3")
                .flush(),
        ),
        (
            "deepen 2, haves, done",
            want(caps)
                .line("deepen 2")
                .flush()
                .line(&format!("have {t5}"))
                .line("done"),
        ),
        (
            "deepen-since, first round",
            want(caps).line(&format!("deepen-since {t5_time}")).flush(),
        ),
        (
            "deepen-not, first round",
            want(caps).line("deepen-not refs/tags/v1.0.0").flush(),
        ),
        (
            "haves, ready mid-batch (no-done)",
            want(caps)
                .flush()
                .line(&format!("have {UNKNOWN_1}"))
                .line(&format!("have {t2}"))
                .line(&format!("have {UNKNOWN_2}"))
                .flush(),
        ),
        (
            "haves all known, ready at the flush (no-done)",
            want(caps)
                .flush()
                .line(&format!("have {t1}"))
                .line(&format!("have {t2}"))
                .flush(),
        ),
        (
            "have on a diverged branch",
            want(caps).flush().line(&format!("have {release}")).flush(),
        ),
        (
            "unknown haves only",
            want(caps)
                .flush()
                .line(&format!("have {UNKNOWN_1}"))
                .flush(),
        ),
        (
            "multi_ack (not detailed)",
            want("multi_ack side-band-64k ofs-delta")
                .flush()
                .line(&format!("have {UNKNOWN_1}"))
                .line(&format!("have {t2}"))
                .line(&format!("have {UNKNOWN_2}"))
                .flush(),
        ),
        (
            "multi_ack, done",
            want("multi_ack side-band-64k ofs-delta")
                .flush()
                .line(&format!("have {t2}"))
                .line("done"),
        ),
        (
            "no multi_ack, done (a parent of an earlier have)",
            want("side-band-64k ofs-delta")
                .flush()
                .line(&format!("have {t1}"))
                .line(&format!("have {t2}"))
                .line("done"),
        ),
        ("done without haves", want(caps).flush().line("done")),
        (
            "side-band (1000-byte packets)",
            want("side-band ofs-delta").flush().line("done"),
        ),
        ("no side-band", want("ofs-delta").flush().line("done")),
        (
            "unknown want",
            Body::default()
                .line(&format!("want {UNKNOWN_3} {caps}"))
                .flush()
                .line("done"),
        ),
        ("empty body", Body::default()),
    ];
    for (what, body) in &v0_cases {
        seen.extend(w.check(&format!("v0 {what}"), false, body));
    }

    // The empty repository.
    w.root = "example.test/empty";
    w.up_path = "empty";
    for version in ["", "version=2"] {
        let [gp, up] = w.both("GET", "/info/refs?service=git-upload-pack", version, b"");
        w.compare(&format!("empty: info/refs {version}"), &gp, &up);
    }
    w.check(
        "empty: v2 ls-refs unborn",
        true,
        &Body::v2("ls-refs", &[s("symrefs"), s("unborn")]),
    );

    // The cases must cover what they claim to (guards against a silently empty comparison).
    let has = |p: &str| seen.iter().any(|l| l.starts_with(p));
    for p in [
        "\"shallow ",
        "\"unshallow ",
        "\"ACK ",
        "\"NAK\\n\"",
        "\"ready\\n\"",
        "\"wanted-refs\\n\"",
        "\"shallow-info\\n\"",
        "\"ERR ",
    ] {
        assert!(has(p), "no response line starting with {p} was compared");
    }
    assert!(
        w.failures.is_empty(),
        "{} of {} responses differ from C git's:\n\n{}",
        w.failures.len(),
        w.checked,
        w.failures.join("\n\n")
    );
}
