//! End-to-end tests: real `git` and `go` against a real goprox process, on a local-dir store and
//! on SeaweedFS, compared with the same operations straight against an upstream `git
//! http-backend`. Harness in `tests/support/`; test groups in `tests/e2e/`.
//!
//! Tools: git (with http-backend), go, weed. Missing ones make the affected tests print
//! `SKIP: ...` and pass, unless `GOPROX_REQUIRE_TOOLS=1` (CI), which turns that into a failure.

mod support;

#[path = "e2e/bad_input.rs"]
mod bad_input;
#[path = "e2e/clients.rs"]
mod clients;
#[path = "e2e/clone.rs"]
mod clone;
#[path = "e2e/coordination.rs"]
mod coordination;
#[path = "e2e/down.rs"]
mod down;
#[path = "e2e/faults.rs"]
mod faults;
#[path = "e2e/fetch.rs"]
mod fetch;
#[path = "e2e/go.rs"]
mod go;
#[path = "e2e/goproxy.rs"]
mod goproxy;
#[path = "e2e/handoff.rs"]
mod handoff;
#[path = "e2e/maint.rs"]
mod maint;
#[path = "e2e/metrics.rs"]
mod metrics;
#[path = "e2e/mirror.rs"]
mod mirror;
#[path = "e2e/ops.rs"]
mod ops;
#[path = "e2e/partial.rs"]
mod partial;
#[path = "e2e/refresh.rs"]
mod refresh;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/selftest.rs"]
mod selftest;
#[path = "e2e/shallow.rs"]
mod shallow;
#[path = "e2e/status.rs"]
mod status;
#[path = "e2e/sumdb.rs"]
mod sumdb;
#[path = "e2e/wire.rs"]
mod wire;
