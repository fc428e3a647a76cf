//! Operator commands with the real binary, on the local-dir store and SeaweedFS:
//! `goprox mirror --from-go-mod` (a go.mod and a go.sum in; each repository of their modules
//! fetched once; a second run finds them present; failures, refusals and a malformed file
//! reported) and `goprox stats` (both repositories, with the refs upstream has).

use crate::support::goprox::{Store, StoreKind, command};
use crate::support::upstream::Upstream;
use crate::support::{Output, TempDir, fixtures::fixtures, have_git, skip};
use std::path::Path;

const VMOD: &str = "example.test/vmod";
const WIDGET: &str = "github.com/acme/widget";

const GO_MOD: &str = "module example.test/app

go 1.21

require (
\texample.test/vmod v1.1.0
\tgithub.com/acme/widget v1.2.3 // indirect
)

// Another major version of the same repository.
require example.test/vmod/v2 v2.0.0

require example.test/local v0.0.0-00010101000000-000000000000

replace example.test/local => ../local
";

const GO_SUM: &str =
    "example.test/vmod v1.0.0/go.mod h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
example.test/vmod v1.1.0 h1:BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB=
example.test/vmod v1.1.0/go.mod h1:CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCC=
example.test/vmod/sub v1.1.0/go.mod h1:DDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDDD=
github.com/acme/widget v1.2.3 h1:EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE=
github.com/acme/widget v1.2.3/go.mod h1:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF=
";

/// `goprox mirror --ref-prefix '*' <upstream rules> EXTRA... --from-go-mod FILES...`.
fn mirror_from(store: &Store, up: &Upstream, extra: &[&str], files: &[&Path]) -> Output {
    let mut args: Vec<String> = vec!["mirror".into(), "--ref-prefix".into(), "*".into()];
    args.extend(up.goprox_args());
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--from-go-mod".into());
    args.extend(files.iter().map(|f| f.to_string_lossy().into_owned()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    command(store, &argv)
}

/// Upstream requests that fetched objects (not ref listings) of the repository at `path`
/// (`/vmod`, `/gh/acme/widget`).
fn fetches(up: &Upstream, path: &str) -> usize {
    up.requests()
        .iter()
        .filter(|r| {
            r.starts_with(&format!("POST {path}/git-upload-pack")) && !r.contains("command=ls-refs")
        })
        .count()
}

/// The refs of a fixture repository (what `--ref-prefix '*'` mirrors).
fn upstream_refs(fixture: &str) -> usize {
    fixtures()
        .git(fixture, &["for-each-ref", "--format=%(refname)"])
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count()
}

fn stats_json(store: &Store, roots: &[&str]) -> serde_json::Value {
    let mut args = vec!["stats", "--json"];
    args.extend(roots);
    let o = command(store, &args);
    assert!(o.ok(), "{}", o.describe());
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()))
}

fn ops(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "ops") else {
        return;
    };
    let up = Upstream::start(&fixtures().root);
    let tmp = TempDir::new("ops");
    let go_mod = tmp.join("go.mod");
    let go_sum = tmp.join("go.sum");
    std::fs::write(&go_mod, GO_MOD).expect("write go.mod");
    std::fs::write(&go_sum, GO_SUM).expect("write go.sum");

    // An empty store: both repositories filled, each fetched once although five module paths
    // (a /v2, a subdirectory, go.mod and go.sum lines) name them.
    let o = mirror_from(&store, &up, &[], &[&go_mod, &go_sum]);
    assert!(o.ok(), "{}", o.describe());
    let out = o.stdout_str();
    for line in [
        format!("{VMOD}@v1.0.0,v1.1.0: filled ({VMOD})"),
        format!("{VMOD}/sub@v1.1.0: filled ({VMOD})"),
        format!("{VMOD}/v2@v2.0.0: filled ({VMOD})"),
        format!("{WIDGET}@v1.2.3: filled ({WIDGET})"),
        "example.test/local@v0.0.0-00010101000000-000000000000: skipped: replaced by directory ../local"
            .to_string(),
        "modules: 4 in 2 repositories: 4 filled, 0 already present, 0 refused, 0 failed, 1 skipped"
            .to_string(),
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "no line {line:?}: {}",
            o.describe()
        );
    }
    for root in [VMOD, WIDGET] {
        assert!(
            store
                .get_object(&format!("{root}/@git/refs.json"))
                .is_some(),
            "no ref index for {root}: {:?}",
            store.keys()
        );
    }
    assert_eq!(fetches(&up, "/vmod"), 1, "{:#?}", up.requests());
    assert_eq!(fetches(&up, "/gh/acme/widget"), 1, "{:#?}", up.requests());
    assert!(
        !up.requests().iter().any(|r| r.contains("local")),
        "a directory replacement reached upstream: {:#?}",
        up.requests()
    );

    // Again: already present, refreshed against upstream (ref listings, no fetch), no failure.
    up.clear_requests();
    let o = mirror_from(&store, &up, &[], &[&go_mod, &go_sum]);
    assert!(o.ok(), "{}", o.describe());
    let out = o.stdout_str();
    assert!(
        out.lines().any(|l| l
            .starts_with(&format!("{VMOD}@v1.0.0,v1.1.0: already present ({VMOD}: "))
            && l.ends_with("refs, unchanged)")),
        "{}",
        o.describe()
    );
    assert!(
        out.contains(
            "modules: 4 in 2 repositories: 0 filled, 4 already present, 0 refused, 0 failed, 1 skipped"
        ),
        "{}",
        o.describe()
    );
    assert_eq!(fetches(&up, "/vmod") + fetches(&up, "/gh/acme/widget"), 0);
    assert!(
        up.requests()
            .iter()
            .any(|r| r.starts_with("POST /vmod/git-upload-pack") && r.contains("ls-refs")),
        "{:#?}",
        up.requests()
    );

    // stats: both repositories, with upstream's refs.
    let v = stats_json(&store, &[]);
    let repos = v["repositories"].as_array().expect("repositories array");
    let roots: Vec<&str> = repos.iter().filter_map(|r| r["root"].as_str()).collect();
    assert_eq!(roots, [VMOD, WIDGET], "{v:#}");
    for (r, fixture) in repos.iter().zip(["vmod", "gh/acme/widget"]) {
        let want = upstream_refs(fixture);
        assert!(want >= 2, "fixture {fixture} has {want} refs");
        assert_eq!(r["refs"].as_u64(), Some(want as u64), "{r:#}");
        assert!(r["packs"].as_u64().is_some_and(|n| n >= 1), "{r:#}");
        assert!(r["pack_bytes"].as_u64().is_some_and(|n| n > 32), "{r:#}");
        assert!(r["idx_bytes"].as_u64().is_some_and(|n| n > 0), "{r:#}");
        assert!(r["objects"].as_u64().is_some_and(|n| n > 0), "{r:#}");
        assert!(r["fetched_at"].as_u64().is_some_and(|n| n > 0), "{r:#}");
        assert_eq!(r["closed"], true, "{r:#}");
        assert_eq!(r["lease_held"], false, "{r:#}");
        assert!(r.get("error").is_none(), "{r:#}");
    }
    assert_eq!(v["total"]["repositories"], 2, "{v:#}");
    assert_eq!(
        v["total"]["refs"].as_u64(),
        Some((upstream_refs("vmod") + upstream_refs("gh/acme/widget")) as u64),
        "{v:#}"
    );
    // One named root; the table.
    let v = stats_json(&store, &[WIDGET]);
    assert_eq!(v["total"]["repositories"], 1, "{v:#}");
    assert_eq!(v["repositories"][0]["root"], WIDGET, "{v:#}");
    let o = command(&store, &["stats"]);
    assert!(o.ok(), "{}", o.describe());
    let table = o.stdout_str();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("ROOT"), "{table}");
    assert!(lines[1].starts_with(VMOD), "{table}");
    assert!(lines[2].starts_with(WIDGET), "{table}");
    assert!(lines[3].starts_with("total (2 repositories)"), "{table}");

    // Failures and refusals are reported per module; any failure makes the exit status non-zero.
    up.clear_requests();
    let bad = tmp.join("bad/go.mod");
    std::fs::create_dir_all(tmp.join("bad")).expect("mkdir");
    std::fs::write(
        &bad,
        "module example.test/bad\n\nrequire (\n\texample.test/vmod v1.1.0\n\
         \texample.test/nosuch v1.0.0\n\texample.test/rich v1.0.0\n\t127.0.0.1/x v1.0.0\n)\n",
    )
    .expect("write go.mod");
    let o = mirror_from(&store, &up, &["--deny", "example.test/rich"], &[&bad]);
    assert_eq!(o.status.code(), Some(1), "{}", o.describe());
    let out = o.stdout_str();
    for prefix in [
        format!("{VMOD}@v1.1.0: already present ({VMOD}: "),
        "example.test/nosuch@v1.0.0: failed (example.test/nosuch): ".to_string(),
        "example.test/rich@v1.0.0: refused: example.test/rich is denied".to_string(),
        "127.0.0.1/x@v1.0.0: refused: ".to_string(),
        "modules: 4 in 2 repositories: 0 filled, 1 already present, 2 refused, 1 failed, 0 skipped"
            .to_string(),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&prefix)),
            "no line starting {prefix:?}: {}",
            o.describe()
        );
    }
    assert!(
        o.stderr_str()
            .contains("1 of 4 requested import paths and modules failed"),
        "{}",
        o.describe()
    );
    assert!(
        !up.requests().iter().any(|r| r.contains("/rich")),
        "a denied module reached upstream: {:#?}",
        up.requests()
    );
    // Nothing of the denied repository; no ref index or pack of the missing one (its fill
    // leaves at most its released lease).
    let keys = store.keys();
    assert!(
        !keys.iter().any(|k| k.starts_with("example.test/rich/")
            || (k.starts_with("example.test/nosuch/") && !k.ends_with("/@git/lease.json"))),
        "{keys:#?}"
    );

    // A malformed file stops everything before upstream is contacted, naming file and line.
    up.clear_requests();
    let broken = tmp.join("broken.mod");
    std::fs::write(&broken, "module x\n\nrequire example.test/vmod\n").expect("write");
    let o = mirror_from(&store, &up, &[], &[&go_mod, &broken]);
    assert_eq!(o.status.code(), Some(1), "{}", o.describe());
    assert!(
        o.stderr_str().contains(&format!(
            "--from-go-mod {}: line 3: require: expected MODULE VERSION",
            broken.display()
        )),
        "{}",
        o.describe()
    );
    assert!(up.requests().is_empty(), "{:#?}", up.requests());
    // The store is as the fills left it: stats unchanged, fsck clean.
    let o = command(&store, &["fsck"]);
    assert!(o.ok(), "{}", o.describe());
    assert_eq!(
        o.stdout_str().trim(),
        "ok: 2 repositories",
        "{}",
        o.describe()
    );
}

#[test]
fn mirror_from_go_mod_and_stats_local() {
    ops(StoreKind::Local);
}

#[test]
fn mirror_from_go_mod_and_stats_s3() {
    ops(StoreKind::S3);
}
