//! `go mod download -json` with an isolated environment (fresh GOPATH/GOMODCACHE/GOCACHE/HOME per
//! call, `GOPROXY=direct`, `GOSUMDB=off`), routed either through an HTTP proxy (vanity paths under
//! `GOINSECURE`) or through a git `insteadOf` rewrite (github.com).

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::TempDir;

pub const GO_TIMEOUT: Duration = Duration::from_secs(120);

/// How `go` reaches the module's repository.
#[derive(Clone, Debug)]
pub enum Route {
    /// `GOINSECURE=example.test`, `HTTP_PROXY`/`HTTPS_PROXY` = `http://127.0.0.1:PORT`: the server
    /// on PORT answers `GET http://example.test/...?go-get=1` (absolute form) and refuses
    /// `CONNECT`, so Go falls back from https to http without any DNS lookup.
    Proxy(u16),
    /// git config `url.<BASE>.insteadOf = https://github.com/`.
    InsteadOf(String),
    /// `GOPROXY=<URL>`: the module proxy protocol (goprox's module front).
    Goproxy(String),
}

/// The interesting fields of `go mod download -json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    pub path: String,
    pub version: String,
    pub sum: String,
    pub go_mod_sum: String,
    pub json: String,
    pub stderr: String,
}

/// `go mod download -json MODULE@VERSION` in a fresh, empty module cache (panics on failure, with
/// go's stdout and stderr).
pub fn download(module_at_version: &str, route: &Route) -> Download {
    download_with_netrc(module_at_version, route, None)
}

/// [`download`] with a netrc file (`NETRC`, and `$HOME/.netrc` for git) holding `netrc`.
pub fn download_with_netrc(
    module_at_version: &str,
    route: &Route,
    netrc: Option<&str>,
) -> Download {
    let tmp = TempDir::new("go");
    let mut cmd = command(&tmp, route, netrc);
    cmd.args(["mod", "download", "-json", module_at_version]);
    let out = super::run(&mut cmd, None, GO_TIMEOUT);
    let json = out.stdout_str();
    let stderr = out.stderr_str();
    let fail = |why: &str| -> ! {
        panic!(
            "go mod download -json {module_at_version} via {route:?}: {why}\n--- stdout ---\n{json}\n--- stderr ---\n{}",
            super::tail(&stderr, 20_000)
        )
    };
    if !out.ok() {
        fail(&format!("exit {}", out.status));
    }
    let v: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| fail(&format!("bad JSON: {e}")));
    if let Some(e) = v.get("Error") {
        fail(&format!("Error: {e}"));
    }
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or_else(|| fail(&format!("no {k} in output")))
            .to_string()
    };
    let d = Download {
        path: field("Path"),
        version: field("Version"),
        sum: field("Sum"),
        go_mod_sum: field("GoModSum"),
        json: json.clone(),
        stderr: stderr.clone(),
    };
    assert!(
        d.sum.starts_with("h1:") && d.go_mod_sum.starts_with("h1:"),
        "odd sums: {d:?}"
    );
    d
}

/// `go` with an isolated environment in `tmp` (its own HOME, GOPATH, module and build caches,
/// `GOPROXY=direct` unless the route says otherwise, `GOSUMDB=off`); the caller adds the
/// arguments and runs it in `tmp/work`.
pub fn command(tmp: &TempDir, route: &Route, netrc: Option<&str>) -> Command {
    command_of(std::path::Path::new("go"), tmp, route, netrc)
}

/// [`command`] with another go binary (an older client).
pub fn command_of(
    go: &std::path::Path,
    tmp: &TempDir,
    route: &Route,
    netrc: Option<&str>,
) -> Command {
    for d in ["home", "gopath", "modcache", "gocache", "work"] {
        std::fs::create_dir_all(tmp.join(d)).expect("mkdir");
    }
    let netrc_path = tmp.join("home").join(".netrc");
    if let Some(text) = netrc {
        std::fs::write(&netrc_path, text).expect("write netrc");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&netrc_path, std::fs::Permissions::from_mode(0o600))
            .expect("chmod netrc");
    }
    let gitconfig = tmp.join("gitconfig");
    let mut cfg = String::from("[user]\n\tname = Go Test\n\temail = go@example.test\n");
    if let Route::InsteadOf(base) = route {
        cfg.push_str(&format!(
            "[url \"{base}\"]\n\tinsteadOf = https://github.com/\n"
        ));
    }
    std::fs::write(&gitconfig, cfg).expect("write gitconfig");
    let mut cmd = Command::new(go);
    cmd.current_dir(tmp.join("work"))
        .env_clear()
        .env("PATH", super::path_var())
        .env("HOME", tmp.join("home"))
        .env("GOPATH", tmp.join("gopath"))
        .env("GOMODCACHE", tmp.join("modcache"))
        .env("GOCACHE", tmp.join("gocache"))
        .env("GOENV", "off")
        .env("GO111MODULE", "on")
        .env("GOTOOLCHAIN", "local")
        .env("GOTELEMETRY", "off")
        .env("GOPROXY", "direct")
        .env("GOSUMDB", "off")
        .env("GONOSUMDB", "*")
        .env("GOPRIVATE", "")
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("CGO_ENABLED", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", &gitconfig)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C");
    if netrc.is_some() {
        cmd.env("NETRC", &netrc_path);
    }
    if let Route::Goproxy(url) = route {
        cmd.env("GOPROXY", url);
    }
    if let Route::Proxy(port) = route {
        let p = format!("http://127.0.0.1:{port}");
        cmd.env("GOINSECURE", "example.test,gopkg.in")
            .env("HTTP_PROXY", &p)
            .env("http_proxy", &p)
            .env("HTTPS_PROXY", &p)
            .env("https_proxy", &p)
            .env("NO_PROXY", "")
            .env("no_proxy", "");
    }
    cmd
}

/// `go ARGS` in a fresh isolated environment (see [`command`]); the output, unchecked.
pub fn go(args: &[&str], route: &Route) -> super::Output {
    let tmp = TempDir::new("go");
    let mut cmd = command(&tmp, route, None);
    cmd.args(args);
    super::run(&mut cmd, None, GO_TIMEOUT)
}

/// The route for `module` straight to the upstream server on `upstream_port`.
pub fn upstream_route(module: &str, upstream_port: u16) -> Route {
    if module.starts_with("github.com/") {
        Route::InsteadOf(format!("http://127.0.0.1:{upstream_port}/gh/"))
    } else {
        Route::Proxy(upstream_port)
    }
}

/// The route for `module` through goprox on `port`.
pub fn goprox_route(module: &str, port: u16) -> Route {
    if module.starts_with("github.com/") {
        Route::InsteadOf(format!("http://127.0.0.1:{port}/github.com/"))
    } else {
        Route::Proxy(port)
    }
}

/// `go mod download` of `module_at_version` straight from the reference upstream, once per
/// process.
pub fn reference(module_at_version: &str) -> Download {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<OnceLock<Download>>>>> = OnceLock::new();
    let slot = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(module_at_version.to_string())
        .or_default()
        .clone();
    slot.get_or_init(|| {
        let up = super::git::reference_upstream();
        let module = module_at_version.split('@').next().expect("module");
        download(module_at_version, &upstream_route(module, up.port))
    })
    .clone()
}

/// Download through goprox on `port` and assert Path, Version, Sum and GoModSum equal the
/// reference.
pub fn download_and_compare(module_at_version: &str, port: u16) -> Download {
    let module = module_at_version.split('@').next().expect("module");
    let expected = reference(module_at_version);
    let got = download(module_at_version, &goprox_route(module, port));
    assert_eq!(
        (&got.path, &got.version, &got.sum, &got.go_mod_sum),
        (
            &expected.path,
            &expected.version,
            &expected.sum,
            &expected.go_mod_sum
        ),
        "go mod download {module_at_version} through goprox differs from upstream\n--- goprox json ---\n{}\n--- go stderr ---\n{}",
        got.json,
        got.stderr
    );
    got
}
