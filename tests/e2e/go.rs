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
