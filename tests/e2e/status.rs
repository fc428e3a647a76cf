//! The operators' page and push hooks.
//! - The status page in a real browser (headless Chromium over CDP, `tests/browser/cdp_page.py`):
//!   a stored repository's row with upstream's ref count, a fill in progress that appears and
//!   disappears, every outside text escaped (a catalog entry whose import path holds
//!   `<script>`), no console errors; screenshots (desktop and phone) saved in the test output
//!   directory. Its JSON twin agrees.
//! - A signed GitHub push hook makes a new tag visible to `git ls-remote` and to
//!   `go mod download` (GOPROXY=goprox) at once with `--refresh-after 1h`; a wrong signature, a
//!   replayed delivery and an unknown repository change nothing; GitLab, Gitea and the generic
//!   bearer hook work too.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::git::GitEnv;
use crate::support::goprox::{Goprox, Store, StoreKind};
use crate::support::gotool::{self, Route};
use crate::support::http::request;
use crate::support::live::{Live, ls_remote};
use crate::support::upstream::Upstream;
use crate::support::{TempDir, have_bin, have_git, have_go, run, skip, wait_for};

const LIVE: &str = "example.test/live";

/// The status JSON of goprox on `port` (with `query`).
fn status_json(port: u16, query: &str) -> serde_json::Value {
    let r = request(port, "GET", &format!("/-/status.json{query}"), &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).expect("status JSON")
}

/// The row of `root` in a status JSON document.
fn row<'a>(doc: &'a serde_json::Value, root: &str) -> Option<&'a serde_json::Value> {
    doc["repositories"]["rows"]
        .as_array()?
        .iter()
        .find(|r| r["root"] == root)
}

/// Upstream's refs (no HEAD, no peeled lines), as the catalog counts them.
fn upstream_ref_count(live: &Live, bare: &Path) -> usize {
    live.env
        .run(bare, &["for-each-ref", "--format=%(refname)"])
        .lines()
        .filter(|l| !l.is_empty())
        .count()
}

fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The upstream URL goprox stored for `root` (waiting for its fill to publish it).
fn stored_upstream(store: &Store, root: &str) -> String {
    let data = wait_for("the ref index", Duration::from_secs(30), || {
        store.get_object(&format!("{root}/@git/refs.json"))
    });
    let index: goprox::refs::RefIndex = serde_json::from_slice(&data).expect("parse ref index");
    index.upstream
}

fn github_push(upstream: &str, tag: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/tags/{tag}"),
        "created": true,
        "repository": {
            "full_name": "acme/live",
            "clone_url": format!("{upstream}.git"),
            "html_url": upstream,
        },
    }))
    .expect("json")
}

/// Where a test's files outlive it (screenshots): `target/tmp/status-page/`.
fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status-page");
    std::fs::create_dir_all(&dir).expect("mkdir artifacts");
    dir
}

/// Headless Chromium and the CDP driver's Python, or a skip (a failure in CI).
fn browser() -> Option<PathBuf> {
    let chromium = ["chromium", "chromium-browser"]
        .iter()
        .find(|b| have_bin(b))
        .map(PathBuf::from);
    let websockets = Command::new("python3")
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    match chromium {
        Some(c) if websockets => Some(c),
        _ => {
            skip("chromium or python3's websockets not found");
            None
        }
    }
}

/// Load `url` in headless Chromium with `args` (see tests/browser/README.md); its report.
fn browse(chromium: &Path, url: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/cdp_page.py");
    let out = run(
        Command::new("python3")
            .arg(&script)
            .arg("--chromium")
            .arg(chromium)
            .args(["--url", url, "--timeout", "60"])
            .args(args),
        None,
        Duration::from_secs(90),
    );
    let report: serde_json::Value = serde_json::from_str(out.stdout_str().trim())
        .unwrap_or_else(|e| panic!("cdp_page.py printed no JSON ({e}): {}", out.describe()));
    assert_eq!(report["ok"], true, "browser run failed: {report:#}");
    assert!(
        report["navigation_error"].is_null(),
        "navigation failed: {report:#}"
    );
    let errors: Vec<&serde_json::Value> = report["console"]
        .as_array()
        .map(|c| c.iter().filter(|m| m["level"] == "error").collect())
        .unwrap_or_default();
    assert!(errors.is_empty(), "console errors: {report:#}");
    assert_eq!(
        report["exceptions"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    assert_eq!(
        report["failed_requests"].as_array().map(Vec::len),
        Some(0),
        "{report:#}"
    );
    report
}

#[test]
fn status_page_in_a_browser() {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(chromium) = browser() else {
        return;
    };
    let Some(mut store) = Store::new(StoreKind::Local, "status-page") else {
        return;
    };
    let tmp = TempDir::new("status-page");
    let live = Live::new(&tmp);
    // A second repository, filled while the page is watched.
    let second_bare = tmp.join("up/second");
    live.env.run(
        &tmp.join("up"),
        &[
            "clone",
            "-q",
            "--bare",
            &live.bare.to_string_lossy(),
            &second_bare.to_string_lossy(),
        ],
    );
    let up = Upstream::start(&tmp.join("up"));
    // Fills wait 4 s before indexing: long enough to watch one in progress.
    store
        .env
        .push(("GOPROX_PAUSE_AT".into(), "fill-before-index:4000".into()));
    let gp = Goprox::start_with(&store, &up.goprox_args(), &["--refresh-after", "1h"]);
    ls_remote(&live.env, &gp.repo_url(LIVE));

    // An entry no fill could make (import paths hold no `<`): what a hostile bucket could
    // hold, in a shard of its own.
    let live_shard = goprox::refs::catalog::shard_of(LIVE);
    let evil = (0..1000)
        .map(|i| format!("evil.example/<script>window.pwned=1</script>/{i}"))
        .find(|r| {
            let s = goprox::refs::catalog::shard_of(r);
            s != live_shard && s != goprox::refs::catalog::shard_of("example.test/second")
        })
        .expect("a root in another shard");
    let shard = serde_json::json!({
        "version": 1,
        "repos": { evil.clone(): {
            "upstream": "https://evil.example/\"><img src=x onerror=window.pwned=2>",
            "generation": 1, "refs": 1, "branches": 1, "tags": 0, "packs": 1,
            "objects": 3, "bytes": 100, "fetched_at": 1, "checked_at": 2,
            "outcome": "failed", "error": "<script>window.pwned=3</script>", "error_at": 2,
        }},
    });
    store.put_object(
        &goprox::refs::catalog::shard_key(goprox::refs::catalog::shard_of(&evil)),
        &serde_json::to_vec(&shard).expect("json"),
    );

    // The stored repository, as a browser sees it.
    let url = format!("{}/", gp.url());
    let want_refs = upstream_ref_count(&live, &live.bare);
    let shot = artifacts().join("status-page.png");
    let report = browse(
        &chromium,
        &url,
        &[
            "--reload-until",
            &format!("document.querySelector('#repositories tr[data-root=\"{LIVE}\"]') !== null"),
            "--eval",
            &format!(
                "document.querySelector('#repositories tr[data-root=\"{LIVE}\"] td.refs').textContent"
            ),
            "--eval",
            "document.querySelectorAll('script').length",
            "--eval",
            "String(window.pwned)",
            "--eval",
            "document.querySelectorAll('img').length",
            "--eval",
            "document.body.innerText.includes('<script>window.pwned=1</script>')",
            "--eval",
            "document.body.innerText.includes('<script>window.pwned=3</script>')",
        ],
    );
    let evals = report["evals"].as_array().expect("evals");
    assert_eq!(
        evals[0].as_str().map(str::trim),
        Some(want_refs.to_string().as_str()),
        "the row's ref count is upstream's: {report:#}"
    );
    assert_eq!(evals[1], 0, "no script element on the page");
    assert_eq!(evals[2], "undefined", "no injected script ran");
    assert_eq!(evals[3], 0, "no injected element");
    assert_eq!(evals[4], true, "the import path shows as text");
    assert_eq!(evals[5], true, "the error shows as text");
    assert_eq!(report["title"], "goprox status");

    // A phone: the page fits its width (tables scroll inside their boxes).
    let phone = artifacts().join("status-page-phone.png");
    let report = browse(
        &chromium,
        &url,
        &[
            "--mobile",
            "--eval",
            "document.documentElement.scrollWidth <= window.innerWidth + 1",
            "--screenshot",
            &phone.to_string_lossy(),
        ],
    );
    assert_eq!(
        report["evals"][0], true,
        "no page-wide horizontal scroll on a phone"
    );

    // A fill in progress appears, then is gone and the repository is listed.
    let second_url = gp.repo_url("example.test/second");
    let dest = tmp.join("second-clone");
    let cloner = std::thread::spawn(move || GitEnv::new().clone(2, &second_url, &dest, &[]));
    let report = browse(
        &chromium,
        &url,
        &[
            "--reload-until",
            "document.querySelector('#in-progress tr[data-root=\"example.test/second\"]') !== null",
            "--eval",
            "document.querySelector('#in-progress tr[data-root=\"example.test/second\"]').textContent",
            "--screenshot",
            &shot.to_string_lossy(),
        ],
    );
    assert!(std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000));
    println!("status page screenshot: {}", shot.display());
    assert!(
        report["evals"][0]
            .as_str()
            .is_some_and(|t| t.contains("fill")),
        "{report:#}"
    );
    cloner.join().expect("clone thread").check();
    let report = browse(
        &chromium,
        &url,
        &[
            "--reload-until",
            "document.querySelector('#in-progress') === null && document.querySelector('#repositories tr[data-root=\"example.test/second\"]') !== null",
            "--eval",
            "document.querySelector('#repositories tr[data-root=\"example.test/second\"] td.refs').textContent",
        ],
    );
    assert_eq!(
        report["evals"][0].as_str().map(str::trim),
        Some(upstream_ref_count(&live, &second_bare).to_string().as_str())
    );

    // The JSON twin says the same.
    let doc = status_json(gp.port, "?q=example.test");
    assert_eq!(doc["repositories"]["matched"], 2, "{doc:#}");
    let r = row(&doc, LIVE).expect("live row");
    assert_eq!(r["refs"], want_refs, "{doc:#}");
    assert_eq!(r["upstream"], stored_upstream(&store, LIVE));
    assert!(r["bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(r["hits_last_hour"].as_u64().is_some_and(|h| h >= 1));
    assert_eq!(doc["totals"]["repositories"], 3, "{doc:#}");
    assert_eq!(doc["totals"]["failing"], 1);
    let doc = status_json(gp.port, "?status=failed");
    assert_eq!(doc["repositories"]["rows"][0]["root"], evil.as_str());
    // A bad query is a 400 with a reason.
    let r = request(gp.port, "GET", "/-/status.json?page=x", &[], b"");
    assert_eq!(r.status, 400, "{}", r.text());
}

fn hooks(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "hooks") else {
        return;
    };
    let tmp = TempDir::new("hooks");
    let live = Live::new(&tmp);
    let up = Upstream::start(&tmp.join("up"));
    let secret = "hook-s3cret";
    let gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &[
            "--refresh-after",
            "1h",
            "--webhook-secret",
            secret,
            "--webhook-token",
            "tok-123",
        ],
    );
    let url = gp.repo_url(LIVE);
    let env = &live.env;
    ls_remote(env, &url);
    let upstream = stored_upstream(&store, LIVE);

    let hook = |path: &str, headers: &[(&str, &str)], body: &[u8]| {
        let mut h = vec![("Content-Type", "application/json")];
        h.extend_from_slice(headers);
        request(gp.port, "POST", path, &h, body)
    };

    // A new tag upstream: with --refresh-after 1h, goprox does not look.
    live.git(&["tag", "-a", "-m", "v1.1.0", "v1.1.0"]);
    live.push(&["refs/tags/v1.1.0"]);
    let v110 = live.upstream_ref("refs/tags/v1.1.0");
    assert_eq!(ls_remote(env, &url).get("refs/tags/v1.1.0"), None);

    // A signed GitHub push event with delivery id `delivery`.
    let github = |delivery: &str, body: &[u8]| {
        hook(
            "/-/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", delivery),
                ("X-Hub-Signature-256", &sign(secret, body)),
            ],
            body,
        )
    };

    // A wrong signature: 401, nothing refreshed.
    let body = github_push(&upstream, "v1.1.0");
    let r = hook(
        "/-/hooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "d-0"),
            ("X-Hub-Signature-256", &sign("wrong", &body)),
        ],
        &body,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    // No signature at all.
    let r = hook("/-/hooks/github", &[("X-GitHub-Event", "push")], &body);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(ls_remote(env, &url).get("refs/tags/v1.1.0"), None);

    // A repository goprox does not hold: 202, and it is not filled.
    let other = github_push(&format!("{}/other", up.url()), "v1");
    let r = github("d-other", &other);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(!store.keys().iter().any(|k| k.contains("/other/")));

    // The signed push: the tag is visible as soon as the hook is answered.
    let started = Instant::now();
    let r = github("d-1", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("refreshed"), "{}", r.text());
    let refs = ls_remote(env, &url);
    let visible = started.elapsed();
    assert_eq!(refs.get("refs/tags/v1.1.0"), Some(&v110), "{refs:?}");
    println!("hook to tag visible in git ls-remote: {visible:?}");
    if have_go() {
        let started = Instant::now();
        let got = gotool::download(&format!("{LIVE}@v1.1.0"), &Route::Goproxy(gp.url()));
        assert_eq!(got.version, "v1.1.0", "{}", got.json);
        println!(
            "go mod download of the new tag through GOPROXY=goprox: {:?}",
            started.elapsed()
        );
    } else {
        skip("go not found");
    }

    // The same delivery again: ignored (upstream is not asked).
    up.clear_requests();
    let r = github("d-1", &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("already handled"), "{}", r.text());
    assert!(up.requests().is_empty(), "{:?}", up.requests());
    // A ping is answered; an event that changes no ref is ignored.
    let ping = br#"{"zen":"hi","hook_id":1}"#;
    let r = hook(
        "/-/hooks/github",
        &[
            ("X-GitHub-Event", "ping"),
            ("X-Hub-Signature-256", &sign(secret, ping)),
        ],
        ping,
    );
    assert_eq!((r.status, r.text().trim()), (200, "pong"));
    let r = hook(
        "/-/hooks/github",
        &[
            ("X-GitHub-Event", "issues"),
            ("X-Hub-Signature-256", &sign(secret, &body)),
        ],
        &body,
    );
    assert_eq!(r.status, 202, "{}", r.text());

    // GitLab (a token), Gitea (its own signature header), the generic hook (a bearer token).
    live.git(&["tag", "-a", "-m", "v1.2.0", "v1.2.0"]);
    live.push(&["refs/tags/v1.2.0"]);
    let gl = serde_json::to_vec(&serde_json::json!({
        "object_kind": "tag_push",
        "ref": "refs/tags/v1.2.0",
        "project": { "git_http_url": format!("{upstream}.git"), "web_url": upstream },
    }))
    .expect("json");
    let r = hook(
        "/-/hooks/gitlab",
        &[
            ("X-Gitlab-Event", "Tag Push Hook"),
            ("X-Gitlab-Token", "nope"),
        ],
        &gl,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    let r = hook(
        "/-/hooks/gitlab",
        &[
            ("X-Gitlab-Event", "Tag Push Hook"),
            ("X-Gitlab-Token", secret),
        ],
        &gl,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ls_remote(env, &url).contains_key("refs/tags/v1.2.0"));

    live.git(&["tag", "-a", "-m", "v1.3.0", "v1.3.0"]);
    live.push(&["refs/tags/v1.3.0"]);
    let gitea = github_push(&upstream, "v1.3.0");
    let sig = sign(secret, &gitea);
    let r = hook(
        "/-/hooks/gitea",
        &[
            ("X-Gitea-Event", "push"),
            ("X-Gitea-Delivery", "g-1"),
            ("X-Gitea-Signature", sig.trim_start_matches("sha256=")),
        ],
        &gitea,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ls_remote(env, &url).contains_key("refs/tags/v1.3.0"));

    live.git(&["tag", "-a", "-m", "v1.4.0", "v1.4.0"]);
    live.push(&["refs/tags/v1.4.0"]);
    let path = format!("/-/hooks/refresh?repo={LIVE}");
    let r = hook(&path, &[("Authorization", "Bearer wrong")], b"");
    assert_eq!(r.status, 401, "{}", r.text());
    let r = hook(&path, &[("Authorization", "Bearer tok-123")], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(ls_remote(env, &url).contains_key("refs/tags/v1.4.0"));
    // Not a stored repository: ignored, not filled.
    let r = hook(
        "/-/hooks/refresh?repo=example.test/other",
        &[("Authorization", "Bearer tok-123")],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(!store.keys().iter().any(|k| k.contains("/other/")));
    // An oversized body is refused before anything is parsed.
    let big = vec![b' '; goprox::http::hooks::MAX_BODY + 1];
    let r = hook("/-/hooks/github", &[("X-GitHub-Event", "push")], &big);
    assert_eq!(r.status, 413, "{}", r.text());

    // The status page knows: the tags upstream has, the last look updated.
    let doc = status_json(gp.port, "");
    let r = row(&doc, LIVE).expect("row");
    assert_eq!(r["refs"], upstream_ref_count(&live, &live.bare), "{doc:#}");
    assert_eq!(r["outcome"], "updated", "{doc:#}");
    if have_go() {
        assert!(
            r["versions"].as_u64().is_some_and(|v| v >= 1),
            "the module zip built for go mod download is counted: {doc:#}"
        );
    }
    let metrics = request(gp.port, "GET", "/metrics", &[], b"").text();
    for outcome in [
        "accepted", "refused", "unknown", "replayed", "ignored", "ping",
    ] {
        assert!(
            metrics.contains(&format!("outcome=\"{outcome}\"")),
            "no {outcome} hook counted"
        );
    }
}

#[test]
fn hooks_local() {
    hooks(StoreKind::Local);
}

#[test]
fn hooks_s3() {
    hooks(StoreKind::S3);
}

/// With `--auth-file`, the page needs credentials; hooks carry their own.
#[test]
fn status_page_needs_credentials_hooks_do_not() {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(StoreKind::Local, "status-auth") else {
        return;
    };
    let tmp = TempDir::new("status-auth");
    let htpasswd = tmp.join("htpasswd");
    let hash = bcrypt::hash("pw", 4).expect("bcrypt");
    std::fs::write(&htpasswd, format!("ops:{hash}\n")).expect("write htpasswd");
    let up = Upstream::start(&tmp.join("up"));
    let gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &[
            "--auth-file",
            &htpasswd.to_string_lossy(),
            "--webhook-token",
            "t",
        ],
    );
    for page in ["/", "/-/status", "/-/status.json"] {
        let r = request(gp.port, "GET", page, &[], b"");
        assert_eq!(r.status, 401, "{page}: {}", r.text());
    }
    use base64::Engine;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ops:pw")
    );
    let r = request(gp.port, "GET", "/", &[("Authorization", &basic)], b"");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<title>goprox status</title>"));
    assert!(
        r.header("content-security-policy")
            .is_some_and(|c| c.contains("default-src 'none'"))
    );
    // The hook is not behind basic auth: its token decides (an unknown repository: 202).
    let r = request(
        gp.port,
        "POST",
        "/-/hooks/refresh?repo=example.test/nothing",
        &[("Authorization", "Bearer t")],
        b"",
    );
    assert_eq!(r.status, 202, "{}", r.text());
}
