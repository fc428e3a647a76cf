//! (d) `go mod download` through goprox (vanity path via HTTP_PROXY + GOINSECURE; github.com via
//! git insteadOf) gives the same Sum/GoModSum as straight from upstream.

use crate::support::goprox::StoreKind;
use crate::support::gotool::download_and_compare;
use crate::support::{Harness, have_go, skip};

pub const MODULES: &[&str] = &[
    "example.test/vmod@v1.0.0",
    "example.test/vmod@v1.1.0",
    "example.test/vmod@latest",
    "github.com/acme/widget@v1.2.3",
];

fn go_download(kind: StoreKind) {
    if !have_go() {
        skip("go not installed");
        return;
    }
    let Some(mut h) = Harness::start(kind, "go") else {
        return;
    };
    for m in MODULES {
        download_and_compare(m, h.gp.port);
    }
    h.gp.assert_alive();
}

#[test]
fn go_mod_download_local() {
    go_download(StoreKind::Local);
}

#[test]
fn go_mod_download_s3() {
    go_download(StoreKind::S3);
}

/// `--go-import mod`: go-get pages name goprox as the module's proxy, so `go mod download`
/// with `GOPROXY=direct` fetches through the module front (not git) and gets the same sums.
fn go_import_mod(kind: StoreKind) {
    if !have_go() {
        skip("go not installed");
        return;
    }
    let Some(mut h) = Harness::start_with(kind, "go-import-mod", &["--go-import", "mod"]) else {
        return;
    };
    let page = crate::support::http::request(
        h.gp.port,
        "GET",
        "http://example.test/vmod/sub?go-get=1",
        &[("Host", "example.test")],
        b"",
    );
    assert_eq!(page.status, 200, "{}", page.text());
    assert!(
        page.text().contains(&format!(
            "<meta name=\"go-import\" content=\"example.test/vmod mod {}\">",
            h.gp.url()
        )),
        "{}",
        page.text()
    );
    // example.test goes through goprox as an HTTP proxy: the go-get page says `mod`.
    download_and_compare("example.test/vmod@v1.0.0", h.gp.port);
    // Through the module front, not git.
    let m = crate::support::http::get(h.gp.port, "/metrics").text();
    let count = |route: &str| -> f64 {
        let series = format!(
            "goprox_http_request_duration_seconds_count{{route=\"{route}\",status=\"2xx\"}}"
        );
        m.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse().ok())
            .unwrap_or(0.0)
    };
    for route in ["go_get", "goproxy_info", "goproxy_mod", "goproxy_zip"] {
        assert!(count(route) >= 1.0, "no {route} request: {m}");
    }
    for route in ["info_refs", "upload_pack"] {
        assert_eq!(count(route), 0.0, "a git request ({route}): {m}");
    }
    h.gp.assert_alive();
}

#[test]
fn go_import_mod_local() {
    go_import_mod(StoreKind::Local);
}

#[test]
fn go_import_mod_s3() {
    go_import_mod(StoreKind::S3);
}
