//! Prometheus metrics, rendered in the text format at `GET /metrics` (served by [`crate::http`]).
//!
//! Everything is recorded through the `metrics` facade into a `metrics-exporter-prometheus`
//! recorder. That recorder is installed as the process's global recorder exactly once, lazily (by
//! the first recording or render, or by [`install`] at start-up), and it is used only to render:
//! the exporter runs no HTTP listener of its own.
//!
//! Names follow Prometheus conventions: `goprox_` prefix, base units (seconds, bytes), `_total`
//! on counters. Labels come only from small fixed sets ([`Route`], status class, [`StoreOp`],
//! [`StoreOutcome`], fill and refresh outcomes); never from repository paths.

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use axum::http::Uri;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// A counter without labels: its Prometheus name and help text.
pub(crate) struct Counter {
    name: &'static str,
    help: &'static str,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Counter { name, help }
    }
    /// Add one.
    pub(crate) fn inc(&self) {
        self.add(1)
    }
    /// Add `n`.
    pub(crate) fn add(&self, n: u64) {
        install();
        counter!(self.name).increment(n);
    }
}

/// Pack indexes evicted from the in-memory index cache.
pub(crate) static PACK_INDEXES_EVICTED: Counter = Counter::new(
    "goprox_pack_indexes_evicted_total",
    "Pack indexes dropped from memory to stay within --index-cache-size (loaded again when \
     needed).",
);
/// HTTP requests, counted when they arrive.
pub(crate) static HTTP_REQUESTS: Counter = Counter::new(
    "goprox_http_requests_total",
    "HTTP requests received (counted on arrival; see goprox_http_request_duration_seconds for \
     finished ones by route and status).",
);
/// Requests answered with a 4xx/5xx status or a git `ERR` line.
pub(crate) static REQUEST_ERRORS: Counter = Counter::new(
    "goprox_request_errors_total",
    "Requests answered with an error (4xx/5xx status or a git ERR line).",
);
/// Packs streamed to clients.
pub(crate) static PACKS_SERVED: Counter =
    Counter::new("goprox_packs_served_total", "Packs streamed to clients.");
/// First clones answered with a fill's pack as it arrived from upstream.
pub(crate) static PACKS_PASSED_THROUGH: Counter = Counter::new(
    "goprox_packs_passed_through_total",
    "Clones answered with a fill's pack while it arrived from upstream (first clones).",
);
/// Fetches whose objects were chosen from reachability bitmaps rather than a walk.
pub(crate) static BITMAP_ANSWERS: Counter = Counter::new(
    "goprox_bitmap_answers_total",
    "Fetches whose objects were chosen from reachability bitmaps instead of a history walk.",
);
/// Objects in the packs streamed to clients.
pub(crate) static OBJECTS_SERVED: Counter = Counter::new(
    "goprox_objects_served_total",
    "Objects in packs streamed to clients.",
);
/// Pack bytes streamed to clients.
pub(crate) static PACK_BYTES_SERVED: Counter = Counter::new(
    "goprox_pack_bytes_served_total",
    "Pack bytes streamed to clients.",
);
/// Ranged reads of pack bytes from the store (block-cache misses and prefetches).
pub(crate) static STORE_RANGE_GETS: Counter = Counter::new(
    "goprox_store_range_gets_total",
    "Ranged reads of pack bytes from the store on block-cache misses (and prefetches).",
);
/// Bytes read by [`STORE_RANGE_GETS`].
pub(crate) static STORE_RANGE_BYTES: Counter = Counter::new(
    "goprox_store_range_bytes_total",
    "Bytes read from the store by ranged reads of pack bytes.",
);
/// Repositories filled from upstream (or by another instance while this one waited).
pub(crate) static FILLS: Counter = Counter::new(
    "goprox_fills_total",
    "Repositories filled from upstream (or by another instance while waiting for its lease).",
);
/// Received-but-unpublished fills of a stopped instance that this instance finished.
pub(crate) static FILLS_ADOPTED: Counter = Counter::new(
    "goprox_fills_adopted_total",
    "Received fills (pack stored whole, not yet published) finished by this instance without \
     asking upstream: the instance that received them was stopped or died.",
);
/// Failed fills.
pub(crate) static FILL_ERRORS: Counter = Counter::new("goprox_fill_errors_total", "Failed fills.");
/// Ref indexes replaced after a refresh from upstream.
pub(crate) static REFRESHES: Counter = Counter::new(
    "goprox_refreshes_total",
    "Ref indexes replaced after a refresh from upstream.",
);
/// Refreshes that failed.
pub(crate) static REFRESH_ERRORS: Counter = Counter::new(
    "goprox_refresh_errors_total",
    "Refreshes that failed (upstream down, slow or refusing).",
);
/// Requests served from the last ref index because upstream did not answer in time.
pub(crate) static STALE_SERVES: Counter = Counter::new(
    "goprox_stale_serves_total",
    "Requests served from the last ref index because upstream did not answer in time.",
);
/// Pack merges published by compaction.
pub(crate) static COMPACTIONS: Counter = Counter::new(
    "goprox_compactions_total",
    "Pack merges published by compaction.",
);
/// Fills and refreshes that waited for another instance's lease on the repository.
pub(crate) static LEASE_WAITS: Counter = Counter::new(
    "goprox_lease_waits_total",
    "Fills and refreshes that waited for another instance holding the repository's lease.",
);
/// Module zips built from git objects (the first request of a version, or a rebuild).
pub(crate) static MODULE_ZIPS_BUILT: Counter = Counter::new(
    "goprox_module_zips_built_total",
    "Module zips built from git objects (a version's first request, or a rebuild of a zip missing from the bucket).",
);
/// Zip requests that waited for another request (on any instance) building the same version.
pub(crate) static MODULE_ZIP_BUILD_WAITS: Counter = Counter::new(
    "goprox_module_zip_build_waits_total",
    "Module zip requests that waited for another request, on this or another instance, building the same version, and served its record.",
);
/// Module answers served from the bucket's ledger without opening the repository.
pub(crate) static MODULE_ANSWERS_STORED: Counter = Counter::new(
    "goprox_module_answers_stored_total",
    "Module .info, .mod and .zip answers served as recorded in the bucket.",
);

/// Every unlabelled counter: described and shown (at 0) from the start.
static COUNTERS: [&Counter; 21] = [
    &PACK_INDEXES_EVICTED,
    &HTTP_REQUESTS,
    &REQUEST_ERRORS,
    &PACKS_SERVED,
    &PACKS_PASSED_THROUGH,
    &BITMAP_ANSWERS,
    &OBJECTS_SERVED,
    &PACK_BYTES_SERVED,
    &STORE_RANGE_GETS,
    &STORE_RANGE_BYTES,
    &FILLS,
    &FILLS_ADOPTED,
    &FILL_ERRORS,
    &REFRESHES,
    &REFRESH_ERRORS,
    &STALE_SERVES,
    &COMPACTIONS,
    &LEASE_WAITS,
    &MODULE_ZIPS_BUILT,
    &MODULE_ANSWERS_STORED,
    &MODULE_ZIP_BUILD_WAITS,
];

// Labelled metrics (their help texts are in `describe`).
/// Histogram: HTTP request latency in seconds, by route and status class.
const HTTP_REQUEST_SECONDS: &str = "goprox_http_request_duration_seconds";
/// Counter: object-store calls, by operation and outcome.
const STORE_REQUESTS: &str = "goprox_store_requests_total";
/// Counter: failed object-store attempts that were retried, by operation and cause.
const STORE_RETRIES: &str = "goprox_store_retries_total";
/// Counter: object-store calls that failed on their last attempt, by operation and cause.
const STORE_RETRIES_EXHAUSTED: &str = "goprox_store_retries_exhausted_total";
/// Counter: push hooks, by sender and outcome.
const HOOKS: &str = "goprox_hooks_total";
/// Histogram: object-store call latency in seconds, by operation and outcome.
const STORE_REQUEST_SECONDS: &str = "goprox_store_request_duration_seconds";
/// Histogram: fill duration in seconds, by outcome.
const FILL_SECONDS: &str = "goprox_fill_duration_seconds";
/// Histogram: refresh duration in seconds, by outcome.
const REFRESH_SECONDS: &str = "goprox_refresh_duration_seconds";
/// Histogram: seconds spent generating and streaming one pack.
const PACK_SECONDS: &str = "goprox_pack_generation_duration_seconds";
/// Counter: relayed checksum-database requests, by outcome.
const SUMDB_REQUESTS: &str = "goprox_sumdb_requests_total";
/// Counter: module hashes checked against the checksum database, by outcome.
const SUMDB_VERIFICATIONS: &str = "goprox_sumdb_verifications_total";

/// Requests and store calls: 1 ms .. 60 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Fills and refreshes (bounded by the 30 min fetch deadline): 100 ms .. 30 min.
const LONG_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
];
/// Pack generation and streaming: 5 ms .. 30 min.
const PACK_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];

fn builder() -> Result<PrometheusBuilder, BuildError> {
    let full = |n: &str| Matcher::Full(n.to_string());
    PrometheusBuilder::new()
        .set_buckets_for_metric(full(HTTP_REQUEST_SECONDS), REQUEST_BUCKETS)?
        .set_buckets_for_metric(full(STORE_REQUEST_SECONDS), REQUEST_BUCKETS)?
        .set_buckets_for_metric(full(FILL_SECONDS), LONG_BUCKETS)?
        .set_buckets_for_metric(full(REFRESH_SECONDS), LONG_BUCKETS)?
        .set_buckets_for_metric(full(PACK_SECONDS), PACK_BUCKETS)
}

// Long because it is a flat list: one description per metric.
fn describe() {
    for c in COUNTERS {
        describe_counter!(c.name, c.help);
        counter!(c.name).increment(0);
    }
    describe_counter!(
        STORE_REQUESTS,
        "Object-store calls by operation and outcome."
    );
    describe_counter!(
        STORE_RETRIES,
        "Object-store attempts that failed and were tried again (reads resumed where they \
         broke), by operation and cause: throttled, server_error, connection, timeout, body."
    );
    describe_counter!(
        STORE_RETRIES_EXHAUSTED,
        "Object-store calls that failed after their last attempt (or their deadline), by \
         operation and the last cause: what clients and fills saw as store errors."
    );
    describe_counter!(
        HOOKS,
        "Push hooks received, by sender (github, gitlab, gitea, refresh) and outcome: accepted \
         (a stored repository refreshed), unknown (no stored repository matches; ignored), \
         ignored (an event that changes no ref), replayed (a delivery id already handled), \
         refused (bad signature or token), ping."
    );
    describe_counter!(
        SUMDB_REQUESTS,
        "Checksum-database requests relayed (lookup, tile, latest) by outcome: stored (answered \
         from the bucket), relayed (the database's answer), stale (the last kept copy, the \
         database unreachable), error."
    );
    describe_counter!(
        SUMDB_VERIFICATIONS,
        "Module versions checked against the checksum database before they were first served \
         (--verify-sumdb), by outcome: match, mismatch (refused), unknown (the database has no \
         record; served), error (no usable answer; refused)."
    );
    for v in SumdbVerification::ALL {
        counter!(SUMDB_VERIFICATIONS, "outcome" => v.as_str()).increment(0);
    }
    describe_histogram!(
        HTTP_REQUEST_SECONDS,
        ::metrics::Unit::Seconds,
        "HTTP request latency until the response body is finished (or the client went away), \
         by route and status class."
    );
    describe_histogram!(
        STORE_REQUEST_SECONDS,
        ::metrics::Unit::Seconds,
        "Object-store call latency by operation and outcome."
    );
    describe_histogram!(
        FILL_SECONDS,
        ::metrics::Unit::Seconds,
        "Time to fill a repository from upstream (including waits for a lease), by outcome."
    );
    describe_histogram!(
        REFRESH_SECONDS,
        ::metrics::Unit::Seconds,
        "Time to refresh a repository from upstream (including compaction), by outcome."
    );
    describe_histogram!(
        PACK_SECONDS,
        ::metrics::Unit::Seconds,
        "Time spent generating and streaming packs to clients."
    );
    for (name, help) in CACHE_COUNTERS {
        describe_counter!(name, help);
    }
    describe_gauge!(
        "goprox_block_cache_bytes",
        ::metrics::Unit::Bytes,
        "Bytes held by the block cache."
    );
    describe_gauge!(
        "goprox_pack_index_bytes",
        ::metrics::Unit::Bytes,
        "Bytes of the pack indexes (with reverse indexes and bitmaps) held in memory, within \
         --index-cache-size."
    );
    describe_gauge!("goprox_pack_indexes", "Pack indexes held in memory.");
    describe_gauge!(
        "goprox_block_cache_capacity_bytes",
        ::metrics::Unit::Bytes,
        "The block cache's budget (three quarters of --cache-size)."
    );
}

const CACHE_COUNTERS: [(&str, &str); 4] = [
    ("goprox_block_cache_hits_total", "Block cache hits."),
    ("goprox_block_cache_misses_total", "Block cache misses."),
    (
        "goprox_object_cache_hits_total",
        "Decoded-object cache hits.",
    ),
    (
        "goprox_object_cache_misses_total",
        "Decoded-object cache misses.",
    ),
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Install the recorder as the process's global one (once; later calls return the same handle).
/// `None` when another recorder was installed first (goprox embedded in a program that has its
/// own): then recordings go there and [`render`] has nothing of its own to show.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = match builder() {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; histograms become summaries");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            if ::metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics stays empty");
                return None;
            }
            describe();
            // Histogram samples pile up until drained: drain them every few seconds even if
            // nobody scrapes (the exporter's own upkeep task only runs with its listener).
            let h = handle.clone();
            let upkeep = std::thread::Builder::new()
                .name("goprox-metrics".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        h.run_upkeep();
                    }
                });
            if let Err(e) = upkeep {
                tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
            }
            Some(handle)
        })
        .as_ref()
}

/// The fixed set of routes HTTP requests are labelled with (never the raw path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `?go-get=1` pages.
    GoGet,
    /// `…/info/refs` (the ref advertisement).
    InfoRefs,
    /// `…/git-upload-pack`.
    UploadPack,
    /// `/<module>/@v/list` (the module proxy).
    GoproxyList,
    /// `/<module>/@v/<version>.info` and `/<module>/@latest`.
    GoproxyInfo,
    /// `/<module>/@v/<version>.mod`.
    GoproxyMod,
    /// `/<module>/@v/<version>.zip`.
    GoproxyZip,
    /// `/sumdb/…` (the checksum database relay).
    Sumdb,
    /// `/metrics`.
    Metrics,
    /// `/healthz`, `/readyz`.
    Health,
    /// `/`, `/-/status`, `/-/status.json` (the operators' page).
    Status,
    /// `/-/hooks/…` (push hooks).
    Hook,
    /// Anything else (`/`, unknown paths, `git-receive-pack`, …).
    Other,
}

impl Route {
    /// Classify a request by its URI alone (before any routing or authentication).
    pub(crate) fn of(uri: &Uri) -> Route {
        let path = uri.path();
        let trimmed = path.trim_end_matches('/');
        let go_get = uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "go-get=1"));
        if trimmed.ends_with("/info/refs") {
            Route::InfoRefs
        } else if trimmed.ends_with("/git-upload-pack") {
            Route::UploadPack
        } else if trimmed.starts_with("/sumdb/") {
            Route::Sumdb
        } else if trimmed.ends_with("/@v/list") {
            Route::GoproxyList
        } else if trimmed.ends_with("/@latest")
            || (trimmed.contains("/@v/") && trimmed.ends_with(".info"))
        {
            Route::GoproxyInfo
        } else if trimmed.contains("/@v/") && trimmed.ends_with(".mod") {
            Route::GoproxyMod
        } else if trimmed.contains("/@v/") && trimmed.ends_with(".zip") {
            Route::GoproxyZip
        } else if trimmed == "/metrics" {
            Route::Metrics
        } else if trimmed == "/healthz" || trimmed == "/readyz" {
            Route::Health
        } else if trimmed.is_empty() || trimmed == "/-/status" || trimmed == "/-/status.json" {
            Route::Status
        } else if trimmed.starts_with("/-/hooks/") {
            Route::Hook
        } else if go_get {
            Route::GoGet
        } else {
            Route::Other
        }
    }

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Route::GoGet => "go_get",
            Route::InfoRefs => "info_refs",
            Route::UploadPack => "upload_pack",
            Route::GoproxyList => "goproxy_list",
            Route::GoproxyInfo => "goproxy_info",
            Route::GoproxyMod => "goproxy_mod",
            Route::GoproxyZip => "goproxy_zip",
            Route::Sumdb => "sumdb",
            Route::Metrics => "metrics",
            Route::Health => "health",
            Route::Status => "status",
            Route::Hook => "hook",
            Route::Other => "other",
        }
    }
}

/// `2xx`, `3xx`, `4xx` or `5xx` (`1xx` for informational answers, anything odd as `5xx`).
pub(crate) fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

/// A finished HTTP request.
pub(crate) fn http_request(route: Route, status: u16, elapsed: Duration) {
    install();
    histogram!(HTTP_REQUEST_SECONDS, "route" => route.as_str(), "status" => status_class(status))
        .record(elapsed.as_secs_f64());
}

/// Object-store operations (the label `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOp {
    Get,
    GetIfChanged,
    GetRange,
    Head,
    Put,
    PutIfAbsent,
    PutIfMatch,
    Delete,
    List,
    ListMeta,
    AbortStaleUploads,
}

impl StoreOp {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoreOp::Get => "get",
            StoreOp::GetIfChanged => "get_if_changed",
            StoreOp::GetRange => "get_range",
            StoreOp::Head => "head",
            StoreOp::Put => "put",
            StoreOp::PutIfAbsent => "put_if_absent",
            StoreOp::PutIfMatch => "put_if_match",
            StoreOp::Delete => "delete",
            StoreOp::List => "list",
            StoreOp::ListMeta => "list_meta",
            StoreOp::AbortStaleUploads => "abort_stale_uploads",
        }
    }
}

/// How an object-store call ended (the label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreOutcome {
    Ok,
    NotFound,
    PreconditionFailed,
    Error,
}

impl StoreOutcome {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            StoreOutcome::Ok => "ok",
            StoreOutcome::NotFound => "not_found",
            StoreOutcome::PreconditionFailed => "precondition_failed",
            StoreOutcome::Error => "error",
        }
    }
}

/// A finished object-store call.
pub(crate) fn store_request(op: StoreOp, outcome: StoreOutcome, elapsed: Duration) {
    install();
    let (op, outcome) = (op.as_str(), outcome.as_str());
    counter!(STORE_REQUESTS, "op" => op, "outcome" => outcome).increment(1);
    histogram!(STORE_REQUEST_SECONDS, "op" => op, "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// A failed store attempt: retried (`again`) or the call's last.
pub(crate) fn store_retry(op: StoreOp, cause: &'static str, again: bool) {
    install();
    let name = if again {
        STORE_RETRIES
    } else {
        STORE_RETRIES_EXHAUSTED
    };
    counter!(name, "op" => op.as_str(), "cause" => cause).increment(1);
}

/// A push hook, by sender and outcome (see [`HOOKS`]).
pub(crate) fn hook(sender: &'static str, outcome: &'static str) {
    install();
    counter!(HOOKS, "sender" => sender, "outcome" => outcome).increment(1);
}

/// How a checksum-database request was answered (the label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SumdbOutcome {
    /// From the bucket (an answer that never changes).
    Stored,
    /// The database's answer, passed on.
    Relayed,
    /// The last kept copy, because the database could not be reached.
    Stale,
    /// goprox's own error (a malformed request, the database unreachable).
    Error,
}

/// A relayed checksum-database request.
pub(crate) fn sumdb_request(outcome: SumdbOutcome) {
    install();
    let outcome = match outcome {
        SumdbOutcome::Stored => "stored",
        SumdbOutcome::Relayed => "relayed",
        SumdbOutcome::Stale => "stale",
        SumdbOutcome::Error => "error",
    };
    counter!(SUMDB_REQUESTS, "outcome" => outcome).increment(1);
}

/// What checking a built module hash against the checksum database found (the label
/// `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SumdbVerification {
    /// The database records the same hash.
    Match,
    /// The database records another hash.
    Mismatch,
    /// The database has no record of the version.
    Unknown,
    /// No usable answer from the database.
    Error,
}

impl SumdbVerification {
    const ALL: [SumdbVerification; 4] = [
        SumdbVerification::Match,
        SumdbVerification::Mismatch,
        SumdbVerification::Unknown,
        SumdbVerification::Error,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SumdbVerification::Match => "match",
            SumdbVerification::Mismatch => "mismatch",
            SumdbVerification::Unknown => "unknown",
            SumdbVerification::Error => "error",
        }
    }
}

/// A module hash checked against the checksum database (`--verify-sumdb`).
pub(crate) fn sumdb_verification(outcome: SumdbVerification) {
    install();
    counter!(SUMDB_VERIFICATIONS, "outcome" => outcome.as_str()).increment(1);
}

/// A finished fill: counts it in `goprox_fills_total` or `goprox_fill_errors_total` and records
/// its duration.
pub(crate) fn fill(ok: bool, elapsed: Duration) {
    if ok {
        FILLS.inc();
    } else {
        FILL_ERRORS.inc();
    }
    let outcome = if ok { "ok" } else { "error" };
    histogram!(FILL_SECONDS, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// How a refresh ended (the label `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RefreshOutcome {
    /// A new ref index (ours, or another instance's).
    Updated,
    /// Upstream had nothing new.
    Unchanged,
    /// The refresh failed.
    Error,
}

/// A finished refresh (its counters are separate: [`REFRESHES`], [`REFRESH_ERRORS`]).
pub(crate) fn refresh(outcome: RefreshOutcome, elapsed: Duration) {
    install();
    let outcome = match outcome {
        RefreshOutcome::Updated => "updated",
        RefreshOutcome::Unchanged => "unchanged",
        RefreshOutcome::Error => "error",
    };
    histogram!(REFRESH_SECONDS, "outcome" => outcome).record(elapsed.as_secs_f64());
}

/// Time spent generating (and streaming) one pack.
pub(crate) fn pack_generation(elapsed: Duration) {
    install();
    histogram!(PACK_SECONDS).record(elapsed.as_secs_f64());
}

/// The pack indexes held in memory: their bytes and number.
pub(crate) fn pack_indexes(bytes: u64, count: usize) {
    install();
    gauge!("goprox_pack_index_bytes").set(bytes as f64);
    gauge!("goprox_pack_indexes").set(count as f64);
}

/// The object database's caches as the metrics show them (read when they are rendered).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CacheFigures {
    /// Block-cache lookups answered from memory.
    pub(crate) block_hits: u64,
    /// Block-cache lookups that had to read the store.
    pub(crate) block_misses: u64,
    /// Decoded-object cache hits.
    pub(crate) object_hits: u64,
    /// Decoded-object cache misses.
    pub(crate) object_misses: u64,
    /// Bytes held by the block cache.
    pub(crate) block_bytes: usize,
    /// The block cache's budget, in bytes.
    pub(crate) block_capacity: usize,
}

/// The Prometheus text exposition of every metric, with the caches' figures as given.
pub(crate) fn render(caches: CacheFigures) -> String {
    let Some(handle) = install() else {
        return String::new();
    };
    let [bh, bm, oh, om] = CACHE_COUNTERS.map(|(name, _)| name);
    counter!(bh).absolute(caches.block_hits);
    counter!(bm).absolute(caches.block_misses);
    counter!(oh).absolute(caches.object_hits);
    counter!(om).absolute(caches.object_misses);
    gauge!("goprox_block_cache_bytes").set(caches.block_bytes as f64);
    gauge!("goprox_block_cache_capacity_bytes").set(caches.block_capacity as f64);
    handle.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(uri: &str) -> &'static str {
        Route::of(&uri.parse::<Uri>().expect("uri")).as_str()
    }

    #[test]
    fn routes_come_from_a_fixed_set() {
        assert_eq!(
            route("/example.test/rich/info/refs?service=git-upload-pack"),
            "info_refs"
        );
        assert_eq!(route("/example.test/rich.git/info/refs"), "info_refs");
        assert_eq!(route("/example.test/rich/git-upload-pack"), "upload_pack");
        assert_eq!(
            route("http://github.com/a/b/git-upload-pack"),
            "upload_pack"
        );
        assert_eq!(route("/example.test/rich?go-get=1"), "go_get");
        assert_eq!(route("/example.test/rich/sub/pkg?x=1&go-get=1"), "go_get");
        assert_eq!(route("/metrics"), "metrics");
        assert_eq!(route("/healthz"), "health");
        assert_eq!(route("/readyz"), "health");
        assert_eq!(route("/"), "status");
        assert_eq!(route("/-/status.json?q=x"), "status");
        assert_eq!(route("/-/hooks/github"), "hook");
        assert_eq!(route("/example.test/rich"), "other");
        assert_eq!(route("/example.test/rich?go-get=0"), "other");
        assert_eq!(route("/example.test/rich/git-receive-pack"), "other");
        assert_eq!(route("/example.test/metrics"), "other");
        assert_eq!(route("/example.test/m/@v/list"), "goproxy_list");
        assert_eq!(route("/example.test/m/@v/v1.0.0.info"), "goproxy_info");
        assert_eq!(route("/example.test/m/@latest"), "goproxy_info");
        assert_eq!(route("/example.test/m/@v/v1.0.0.mod"), "goproxy_mod");
        assert_eq!(
            route("/example.test/m/@v/v2.0.0+incompatible.zip"),
            "goproxy_zip"
        );
        assert_eq!(route("/sumdb/sum.golang.org/supported"), "sumdb");
        assert_eq!(route("/x/info/refs/more"), "other");
    }

    #[test]
    fn status_classes() {
        assert_eq!(status_class(200), "2xx");
        assert_eq!(status_class(304), "3xx");
        assert_eq!(status_class(401), "4xx");
        assert_eq!(status_class(503), "5xx");
        assert_eq!(status_class(101), "1xx");
    }

    /// Recording and rendering install the recorder once; repeated installs (as from many tests
    /// in one process) neither panic nor lose what was recorded.
    #[test]
    fn records_render_in_prometheus_format() {
        assert!(install().is_some());
        assert!(install().is_some());
        http_request(Route::UploadPack, 200, Duration::from_millis(3));
        store_request(
            StoreOp::PutIfAbsent,
            StoreOutcome::PreconditionFailed,
            Duration::ZERO,
        );
        fill(true, Duration::from_secs(2));
        PACKS_SERVED.inc();
        let Some(h) = install() else {
            panic!("no recorder")
        };
        let text = h.render();
        assert!(
            text.contains(
                "goprox_http_request_duration_seconds_bucket{route=\"upload_pack\",status=\"2xx\",le=\"0.005\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "goprox_store_requests_total{op=\"put_if_absent\",outcome=\"precondition_failed\"}"
            ),
            "{text}"
        );
        assert!(
            text.contains("goprox_fill_duration_seconds_bucket{outcome=\"ok\",le=\"1800\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE goprox_packs_served_total counter"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE goprox_compactions_total counter"),
            "{text}"
        );
    }
}
