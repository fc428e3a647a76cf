//! The operators' page at 10,000 repositories (`http::status`): generated catalog entries in
//! 64 shards, as `goprox serve` holds them after reading the catalog.
//!
//! - `build_render_default`: filter, sort and page the catalog, render the HTML (page 1 of
//!   200, sorted by import path): the work a page view does in memory.
//! - `build_render_filtered_by_size`: the same with a filter matching a tenth and the size sort.
//! - `build_json`: the JSON twin of the default page.
//! - `report_cold`: a whole page view on a new process, from a memory store: the 64 shards
//!   read and parsed, 50 lease objects looked up, the page rendered.
//! - `report_warm`: the same with the shards already read (revalidation skipped within its
//!   second), leases looked up, page rendered.
//!
//! Run: `cargo bench --bench status_page` (`-- --quick` for a short run).

use criterion::{Criterion, criterion_group, criterion_main};
use goprox::activity::Activity;
use goprox::http::status::{Query, Status, build, render_html, report};
use goprox::refs::catalog::{Catalog, Entry, Outcome, SHARDS, Shard, shard_key, shard_of};
use goprox::store::{DynStore, PutMode};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

const REPOS: usize = 10_000;

fn shards() -> Vec<Arc<Shard>> {
    let mut maps: Vec<BTreeMap<String, Entry>> = vec![BTreeMap::new(); SHARDS];
    for i in 0..REPOS {
        let root = format!("github.com/org{}/repo-{i}", i % 97);
        let outcome = match i % 50 {
            0 => Outcome::Failed,
            1..=10 => Outcome::Updated,
            _ => Outcome::Unchanged,
        };
        maps[shard_of(&root)].insert(
            root.clone(),
            Entry {
                upstream: format!("https://{root}"),
                generation: (i % 40) as u64 + 1,
                refs: (i % 300) as u32 + 1,
                branches: (i % 7) as u32 + 1,
                tags: (i % 290) as u32,
                packs: (i % 3) as u32 + 1,
                objects: (i as u64 * 37) % 400_000,
                bytes: (i as u64 * 7919) % 300_000_000,
                fetched_at: 1_790_000_000 + i as u64,
                checked_at: 1_790_000_000 + 2 * i as u64,
                outcome,
                error: (outcome == Outcome::Failed)
                    .then(|| format!("upstream https://{root}: HTTP 503 Service Unavailable")),
                error_at: 1_790_000_000,
                versions: (i % 5) as u32,
                zip_bytes: (i as u64 * 131) % 5_000_000,
            },
        );
    }
    maps.into_iter()
        .map(|repos| Arc::new(Shard { version: 1, repos }))
        .collect()
}

fn query(json: &str) -> Query {
    serde_json::from_str(json).expect("query")
}

fn bench(c: &mut Criterion) {
    let shards = shards();
    let activity = Activity::new();
    for i in 0..2_000 {
        activity.hit(&format!("github.com/org{}/repo-{i}", i % 97));
    }
    let default = query("{}");
    let filtered = query(r#"{"q":"org1","sort":"size"}"#);
    let mut g = c.benchmark_group("status_page_10k");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    g.bench_function("build_render_default", |b| {
        b.iter(|| {
            let (totals, page) = build(black_box(&shards), &activity, &[], &default);
            black_box((totals, render_len(page)))
        })
    });
    g.bench_function("build_render_filtered_by_size", |b| {
        b.iter(|| {
            let (totals, page) = build(black_box(&shards), &activity, &[], &filtered);
            black_box((totals, render_len(page)))
        })
    });
    g.bench_function("build_json", |b| {
        b.iter(|| {
            let (totals, page) = build(black_box(&shards), &activity, &[], &default);
            black_box(serde_json::to_vec(&(totals, page)).expect("json").len())
        })
    });

    // Whole page views against a memory store holding the shards and some leases.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store: DynStore = Arc::new(goprox::store::memory::MemoryStore::new());
    rt.block_on(async {
        for (n, s) in shards.iter().enumerate() {
            store
                .put(
                    &shard_key(n),
                    bytes::Bytes::from(serde_json::to_vec(&**s).expect("json")),
                    PutMode::Overwrite,
                )
                .await
                .expect("put shard");
        }
    });
    let status = Status::new(&store, vec![("refresh-after", "1m".into())]);
    g.bench_function("report_cold", |b| {
        b.iter(|| {
            rt.block_on(async {
                let fresh = Status {
                    catalog: Catalog::new(store.clone(), Duration::from_secs(1)),
                    ..Status::new(&store, Vec::new())
                };
                let r = report(&fresh, &store, &activity, Vec::new(), &default).await;
                black_box(render_html(&r).len())
            })
        })
    });
    // Warm the reader once; within a minute it does not revalidate.
    let warm = Status {
        catalog: Catalog::new(store.clone(), Duration::from_secs(60)),
        ..status
    };
    rt.block_on(async { warm.catalog.read().await.expect("read") });
    g.bench_function("report_warm", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = report(&warm, &store, &activity, Vec::new(), &default).await;
                black_box(render_html(&r).len())
            })
        })
    });
    g.finish();
}

fn render_len(page: goprox::http::status::Page) -> usize {
    let r = goprox::http::status::Report {
        instance: goprox::http::status::Instance {
            version: goprox::AGENT,
            holder: "bench".into(),
            started_at: 0,
            uptime_secs: 0,
            store: "memory".into(),
            settings: Vec::new(),
        },
        totals: Default::default(),
        repositories: page,
        in_progress: Vec::new(),
        top: Vec::new(),
        errors: Vec::new(),
        catalog_error: None,
    };
    render_html(&r).len()
}

criterion_group!(benches, bench);
criterion_main!(benches);
