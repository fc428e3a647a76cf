//! Process counters, rendered in the Prometheus text format at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.add(1)
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_ms(&self, ms: u64) {
        self.add(ms)
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Default for Counter {
    fn default() -> Self {
        Self::new()
    }
}

pub static HTTP_REQUESTS: Counter = Counter::new();
pub static REQUEST_ERRORS: Counter = Counter::new();
pub static PACKS_SERVED: Counter = Counter::new();
pub static OBJECTS_SERVED: Counter = Counter::new();
pub static PACK_BYTES_SERVED: Counter = Counter::new();
/// Milliseconds spent generating packs.
pub static PACK_SECONDS: Counter = Counter::new();
/// Ranged GETs of pack bytes from the store (block-cache misses), and their bytes.
pub static STORE_RANGE_GETS: Counter = Counter::new();
pub static STORE_RANGE_BYTES: Counter = Counter::new();
pub static FILLS: Counter = Counter::new();
pub static FILL_ERRORS: Counter = Counter::new();
/// Ref-index replacements after a refresh, failed refreshes, and requests served from the last
/// ref index because upstream did not answer in time.
pub static REFRESHES: Counter = Counter::new();
pub static REFRESH_ERRORS: Counter = Counter::new();
pub static STALE_SERVES: Counter = Counter::new();
/// Pack merges published by compaction; waits for another instance's lease.
pub static COMPACTIONS: Counter = Counter::new();
pub static LEASE_WAITS: Counter = Counter::new();

pub fn render(io: &crate::odb::Io) -> String {
    let mut s = String::new();
    let mut c = |name: &str, help: &str, v: u64| {
        s.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    c(
        "goprox_http_requests_total",
        "HTTP requests received.",
        HTTP_REQUESTS.get(),
    );
    c(
        "goprox_request_errors_total",
        "Requests answered with an error.",
        REQUEST_ERRORS.get(),
    );
    c(
        "goprox_packs_served_total",
        "Packs streamed to clients.",
        PACKS_SERVED.get(),
    );
    c(
        "goprox_objects_served_total",
        "Objects in packs streamed to clients.",
        OBJECTS_SERVED.get(),
    );
    c(
        "goprox_pack_bytes_served_total",
        "Pack bytes streamed to clients.",
        PACK_BYTES_SERVED.get(),
    );
    c(
        "goprox_pack_generation_milliseconds_total",
        "Time spent generating packs.",
        PACK_SECONDS.get(),
    );
    c(
        "goprox_fills_total",
        "Repositories filled from upstream.",
        FILLS.get(),
    );
    c(
        "goprox_fill_errors_total",
        "Failed fills.",
        FILL_ERRORS.get(),
    );
    c(
        "goprox_compactions_total",
        "Pack merges published by compaction.",
        COMPACTIONS.get(),
    );
    c(
        "goprox_lease_waits_total",
        "Fills and refreshes that waited for another instance holding the repository's lease.",
        LEASE_WAITS.get(),
    );
    c(
        "goprox_refreshes_total",
        "Ref indexes replaced after a refresh from upstream.",
        REFRESHES.get(),
    );
    c(
        "goprox_refresh_errors_total",
        "Refreshes that failed (upstream down, slow or refusing).",
        REFRESH_ERRORS.get(),
    );
    c(
        "goprox_stale_serves_total",
        "Requests served from the last ref index because upstream did not answer in time.",
        STALE_SERVES.get(),
    );
    c(
        "goprox_block_cache_hits_total",
        "Block cache hits.",
        io.blocks.hits(),
    );
    c(
        "goprox_block_cache_misses_total",
        "Block cache misses.",
        io.blocks.misses(),
    );
    c(
        "goprox_object_cache_hits_total",
        "Decoded-object cache hits.",
        io.objects.hits(),
    );
    c(
        "goprox_object_cache_misses_total",
        "Decoded-object cache misses.",
        io.objects.misses(),
    );
    s.push_str(&format!(
        "# HELP goprox_block_cache_bytes Bytes held by the block cache.\n# TYPE goprox_block_cache_bytes gauge\ngoprox_block_cache_bytes {}\n",
        io.blocks.used()
    ));
    s
}
