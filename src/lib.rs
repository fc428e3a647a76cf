//! goprox: a read-only git smart-HTTP server and Go import-path host that answers from
//! packs kept in an object store (S3 or a local directory), filling it from upstream on a miss.
//!
//! Data path: [`http`] → [`protocol`] → [`odb`] → [`store`]; beside it [`refs`] (the ref
//! index with compare-and-swap) and [`fill`] (upstream resolution and fetch).

#![warn(missing_docs)]
// Outside tests nothing unwraps: errors are handled, and a value that is provably present
// is taken with an `#[allow]`ed `expect` whose message states why.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod access;
pub mod activity;
pub mod background;
pub mod duration;
pub mod fill;
pub mod gomod;
pub mod http;
pub mod maint;
pub mod metrics;
pub mod modproxy;
pub mod odb;
pub mod path;
pub mod protocol;
pub mod refs;
pub mod repo;
pub mod snapshot;
pub mod store;
#[doc(hidden)]
pub mod testdata;
pub mod upstream;

/// Agent string sent to clients and upstreams.
pub const AGENT: &str = concat!("goprox/", env!("CARGO_PKG_VERSION"));
