//! Object-store abstraction: a flat keyspace of immutable blobs plus a few
//! compare-and-swap objects (the ref index). Implementations: local directory
//! (the embedded default), S3, and memory (tests).

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::SystemTime;

pub mod local;
pub mod memory;
pub mod metered;
pub mod probe;
pub mod retry;
pub mod s3;

pub use probe::{ProbeError, probe, ready};

/// Opaque version tag of a stored object, as returned by the store.
/// For S3 it is the ETag exactly as returned (quotes included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ETag(pub String);

/// Precondition for a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutMode {
    /// Unconditional overwrite.
    Overwrite,
    /// Create only: fails with [`StoreError::PreconditionFailed`] if the key exists (`If-None-Match: *`).
    CreateOnly,
    /// Replace only if the current version has this tag (`If-Match: <etag>`).
    IfMatch(ETag),
}

/// Why a store call failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A conditional write's condition did not hold ([`PutMode::CreateOnly`] on an existing
    /// key, [`PutMode::IfMatch`] on another version or a missing key).
    #[error("precondition failed")]
    PreconditionFailed,
    /// A ranged read of a key that does not exist (whole reads answer `Ok(None)` instead), or
    /// an S3 multipart upload that vanished before it was completed.
    #[error("object not found: {0}")]
    NotFound(String),
    /// The key fails [`check_key`].
    #[error("invalid store key: {0}")]
    InvalidKey(String),
    /// A local file-system error.
    #[error("store I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Any other backend failure that retrying will not cure (refused requests, corrupt
    /// stored data, an abandoned streamed write).
    #[error("store backend error: {0}")]
    Backend(String),
    /// A failure a later attempt may not meet (throttling, 5xx, connection, timeout, a body
    /// cut short), left after the backend's retries.
    #[error("object store unavailable ({cause}): {detail}")]
    Unavailable {
        /// The kind of the last failure.
        cause: retry::Cause,
        /// The backend's description of it.
        detail: String,
    },
}

impl StoreError {
    /// The short, stable line a client may see for this error: no keys, no backend text.
    pub fn public_message(&self) -> &'static str {
        match self {
            StoreError::PreconditionFailed => "object store write conflict",
            StoreError::NotFound(_) => "object missing from the object store",
            StoreError::InvalidKey(_) => "invalid object store key",
            StoreError::Io(_) | StoreError::Backend(_) => "object store error",
            StoreError::Unavailable { .. } => "object store unavailable, try again later",
        }
    }

    /// A failure that may pass (see [`StoreError::Unavailable`]).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}

/// A result with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A piece of a streamed write ([`ObjectStore::put_stream`]).
#[derive(Debug, Clone)]
pub enum Chunk {
    /// The next bytes of the object.
    Data(Bytes),
    /// The object is complete: publish it.
    End,
}

/// The receiving side of a streamed write.
pub type Chunks = tokio::sync::mpsc::Receiver<Chunk>;

/// One object of a listing with its metadata ([`ObjectStore::list_meta`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// When the object was last written (S3 `LastModified`, file mtime, write time in memory).
    pub modified: SystemTime,
}

/// A whole object read from the store.
#[derive(Debug, Clone)]
pub struct GetOutput {
    /// The object's contents.
    pub data: Bytes,
    /// The version read.
    pub etag: ETag,
}

/// The answer to [`ObjectStore::get_if_changed`].
#[derive(Debug, Clone)]
pub enum Revalidated {
    /// The object still has the given tag.
    Unchanged,
    /// The object has another tag now: its contents and new tag.
    Changed(GetOutput),
    /// The object no longer exists.
    Missing,
}

/// A store backend: a flat keyspace of objects with conditional writes.
#[async_trait]
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Human-readable description (for logs).
    fn describe(&self) -> String;

    /// Read a whole object; `Ok(None)` if it does not exist.
    async fn get(&self, key: &str) -> Result<Option<GetOutput>>;

    /// Read a whole object unless it still has tag `etag` (S3: `If-None-Match`, answered by a
    /// 304 without a body). The default reads it and compares.
    async fn get_if_changed(&self, key: &str, etag: &ETag) -> Result<Revalidated> {
        Ok(match self.get(key).await? {
            None => Revalidated::Missing,
            Some(got) if &got.etag == etag => Revalidated::Unchanged,
            Some(got) => Revalidated::Changed(got),
        })
    }

    /// Read `len` bytes at `offset`. Reading past the end returns the bytes that exist
    /// (possibly fewer than `len`); a missing key is [`StoreError::NotFound`].
    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes>;

    /// [`ObjectStore::get_range`] as the pieces it arrived in (no copy into one buffer): for
    /// large reads that are only passed on.
    async fn get_range_pieces(&self, key: &str, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        Ok(vec![self.get_range(key, offset, len).await?])
    }

    /// Size of an object, `Ok(None)` if it does not exist.
    async fn head(&self, key: &str) -> Result<Option<u64>>;

    /// Write a whole object. Large objects may be uploaded in parts by the implementation
    /// (S3 multipart, parts >= 5 MiB); the object becomes visible atomically, whole.
    /// Returns the new version's tag.
    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag>;

    /// Write an object from chunks as they arrive, in bounded memory where the backend allows
    /// (S3: multipart parts uploaded as they fill; local: a temporary file). The object is
    /// published, whole and atomically, only when [`Chunk::End`] arrives; if the sender goes
    /// away without it (the producer failed), nothing is published. The default collects the
    /// chunks and calls [`ObjectStore::put`].
    async fn put_stream(&self, key: &str, mut chunks: Chunks, mode: PutMode) -> Result<ETag> {
        let mut all = bytes::BytesMut::new();
        loop {
            match chunks.recv().await {
                Some(Chunk::Data(b)) => all.extend_from_slice(&b),
                Some(Chunk::End) => return self.put(key, all.freeze(), mode).await,
                None => return Err(abandoned(key)),
            }
        }
    }

    /// Delete an object; deleting a missing key is not an error.
    async fn delete(&self, key: &str) -> Result<()>;

    /// All keys starting with `prefix`, sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>>;

    /// Like [`ObjectStore::list`], with each object's size and last-modified time; sorted by key.
    async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>>;

    /// Remove what interrupted writes left behind that is older than `older_than`: incomplete
    /// S3 multipart uploads (under the store's prefix), or the local store's temporary files.
    /// Returns how many were removed. Stores that leave nothing behind return 0.
    async fn abort_stale_uploads(&self, _older_than: SystemTime) -> Result<u32> {
        Ok(0)
    }
}

/// A shared store of any backend.
pub type DynStore = Arc<dyn ObjectStore>;

/// The error of a streamed write whose producer went away before the end.
pub fn abandoned(key: &str) -> StoreError {
    StoreError::Backend(format!("streamed write of {key} abandoned before its end"))
}

/// Validate a store key: relative, `/`-separated, no empty, `.` or `..` segments,
/// no backslash or NUL or control characters.
pub fn check_key(key: &str) -> Result<()> {
    let bad = key.is_empty()
        || key.starts_with('/')
        || key.contains('\\')
        || key.chars().any(|c| c.is_control())
        || key
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..");
    if bad {
        Err(StoreError::InvalidKey(key.to_string()))
    } else {
        Ok(())
    }
}

/// Open a store from a `--store` URL: a path or `file:///abs`, `s3://bucket[/prefix]`, `memory://`.
/// Every call of the store is measured ([`metered`]).
pub async fn open(url: &str, s3: &s3::S3Options) -> anyhow::Result<DynStore> {
    Ok(metered::metered(open_backend(url, s3).await?))
}

async fn open_backend(url: &str, s3: &s3::S3Options) -> anyhow::Result<DynStore> {
    if url == "memory://" || url == "memory" {
        return Ok(Arc::new(memory::MemoryStore::default()));
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, prefix) = match rest.split_once('/') {
            Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
            None => (rest.to_string(), String::new()),
        };
        if bucket.is_empty() {
            anyhow::bail!("--store s3:// needs a bucket name");
        }
        return Ok(Arc::new(s3::S3Store::new(&bucket, &prefix, s3).await?));
    }
    let path = if let Some(p) = url.strip_prefix("file://") {
        p.to_string()
    } else if url.contains("://") {
        anyhow::bail!(
            "unsupported --store URL {url:?} (use a path, file:///dir, s3://bucket/prefix or memory://)"
        );
    } else {
        url.to_string()
    };
    Ok(Arc::new(local::LocalStore::new(path.into())?))
}

// Not part of the API: public only so that integration tests (`tests/store_s3.rs`)
// can run the same suite against a real S3 server.
#[doc(hidden)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test suite, only run by tests: a failed store call is a failed test"
)]
pub mod conformance {
    //! Shared behavioural tests every store must pass (panics on failure).
    use super::*;

    pub async fn run(store: &dyn ObjectStore) {
        let k = "t/a/obj";
        assert!(store.get(k).await.unwrap().is_none());
        assert!(store.head(k).await.unwrap().is_none());
        let e1 = store
            .put(k, Bytes::from_static(b"hello world"), PutMode::CreateOnly)
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(k, Bytes::from_static(b"x"), PutMode::CreateOnly)
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        let got = store.get(k).await.unwrap().unwrap();
        assert_eq!(&got.data[..], b"hello world");
        assert_eq!(got.etag, e1);
        assert_eq!(store.head(k).await.unwrap(), Some(11));
        assert_eq!(&store.get_range(k, 6, 5).await.unwrap()[..], b"world");
        assert_eq!(&store.get_range(k, 6, 100).await.unwrap()[..], b"world");
        let e2 = store
            .put(k, Bytes::from_static(b"v2"), PutMode::IfMatch(e1.clone()))
            .await
            .unwrap();
        assert!(matches!(
            store
                .put(k, Bytes::from_static(b"v3"), PutMode::IfMatch(e1))
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        assert_eq!(&store.get(k).await.unwrap().unwrap().data[..], b"v2");
        store
            .put(k, Bytes::from_static(b"v4"), PutMode::IfMatch(e2))
            .await
            .unwrap();
        store
            .put("t/b", Bytes::from_static(b"b"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(
            store.list("t/").await.unwrap(),
            vec!["t/a/obj".to_string(), "t/b".to_string()]
        );
        store.delete("t/b").await.unwrap();
        store.delete("t/b").await.unwrap();
        assert_eq!(store.list("t/").await.unwrap(), vec!["t/a/obj".to_string()]);
        assert!(matches!(
            store.get_range("t/missing", 0, 1).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(check_key("../x").is_err());
        list_meta(store).await;
        put_stream(store).await;
        // Nothing was interrupted: nothing to clean up, whatever the age limit.
        let later = SystemTime::now() + std::time::Duration::from_secs(3600);
        assert_eq!(store.abort_stale_uploads(later).await.unwrap(), 0);
    }

    /// Streamed writes: small (one request) and large (several S3 parts, the last short, in
    /// chunks that do not line up with parts); nothing published without the end marker; and
    /// create-only holds.
    async fn put_stream(store: &dyn ObjectStore) {
        let stream = |chunks: Vec<Bytes>, end: bool| {
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tokio::spawn(async move {
                for c in chunks {
                    let _ = tx.send(Chunk::Data(c)).await;
                }
                if end {
                    let _ = tx.send(Chunk::End).await;
                }
            });
            rx
        };
        let small = vec![Bytes::from_static(b"he"), Bytes::from_static(b"llo")];
        let e = store
            .put_stream("s/small", stream(small.clone(), true), PutMode::CreateOnly)
            .await
            .unwrap();
        let got = store.get("s/small").await.unwrap().unwrap();
        assert_eq!((&got.data[..], got.etag), (&b"hello"[..], e));
        assert!(matches!(
            store
                .put_stream("s/small", stream(small, true), PutMode::CreateOnly)
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        let big: Vec<Bytes> = (0..7u8)
            .map(|i| Bytes::from(vec![i; 3 << 20 | usize::from(i)]))
            .collect();
        let all: Vec<u8> = big.iter().flat_map(|b| b.iter().copied()).collect();
        store
            .put_stream("s/big", stream(big.clone(), true), PutMode::CreateOnly)
            .await
            .unwrap();
        let got = store.get("s/big").await.unwrap().unwrap();
        assert!(got.data[..] == all[..], "streamed object differs");
        // The producer goes away without the end marker: nothing appears.
        for (k, chunks) in [
            ("s/cut-big", big),
            ("s/cut-small", vec![Bytes::from_static(b"x")]),
        ] {
            assert!(
                store
                    .put_stream(k, stream(chunks, false), PutMode::CreateOnly)
                    .await
                    .is_err()
            );
            assert!(store.head(k).await.unwrap().is_none(), "{k} was published");
        }
        for k in ["s/small", "s/big"] {
            store.delete(k).await.unwrap();
        }
    }

    /// `list_meta` agrees with `list` and reports sizes and plausible modification times.
    async fn list_meta(store: &dyn ObjectStore) {
        // Object stores keep whole seconds at best: allow for truncation and small skew.
        let slack = std::time::Duration::from_secs(5);
        let before = SystemTime::now() - slack;
        for (k, v) in [("m/a", &b"12345"[..]), ("m/b/c", b""), ("mz", b"x")] {
            store
                .put(k, Bytes::copy_from_slice(v), PutMode::Overwrite)
                .await
                .unwrap();
        }
        let after = SystemTime::now() + slack;
        let listed = store.list_meta("m/").await.unwrap();
        let keys: Vec<_> = listed.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["m/a", "m/b/c"]);
        assert_eq!(keys, store.list("m/").await.unwrap());
        assert_eq!(listed[0].size, 5);
        assert_eq!(listed[1].size, 0);
        for e in &listed {
            assert!(
                e.modified >= before && e.modified <= after,
                "{}: modified {:?} not within the write window",
                e.key,
                e.modified
            );
        }
        assert!(store.list_meta("nothing/").await.unwrap().is_empty());
        for k in ["m/a", "m/b/c", "mz"] {
            store.delete(k).await.unwrap();
        }
        assert!(store.list_meta("m").await.unwrap().is_empty());
    }

    /// 16 concurrent create-only writes of one key: exactly one wins, and it is what is stored.
    /// `make` gives each writer its store handle (shared, or one per writer like processes).
    pub async fn create_only_race(make: impl Fn() -> DynStore) {
        let key = "race/key";
        let mut tasks = Vec::new();
        for i in 0..16u32 {
            let store = make();
            tasks.push(tokio::spawn(async move {
                store
                    .put(key, Bytes::from(format!("writer {i}")), PutMode::CreateOnly)
                    .await
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(etag) => winners.push(etag),
                Err(StoreError::PreconditionFailed) => {}
                Err(e) => panic!("unexpected error in create-only race: {e}"),
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "create-only race must have exactly one winner"
        );
        let got = make().get(key).await.unwrap().unwrap();
        assert_eq!(got.etag, winners[0]);
        assert!(got.data.starts_with(b"writer "));
        assert_eq!(make().list("race/").await.unwrap(), vec![key.to_string()]);
    }

    /// 16 concurrent read-modify-`If-Match` increments of a counter lose none; returns the
    /// total number of attempts.
    pub async fn compare_and_swap_race(make: impl Fn() -> DynStore) -> u32 {
        let key = "cas/counter";
        make()
            .put(key, Bytes::from_static(b"0"), PutMode::CreateOnly)
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let store = make();
            tasks.push(tokio::spawn(async move {
                for attempt in 1..=200u32 {
                    let cur = store.get(key).await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.data).unwrap().parse().unwrap();
                    match store
                        .put(
                            key,
                            Bytes::from((n + 1).to_string()),
                            PutMode::IfMatch(cur.etag),
                        )
                        .await
                    {
                        Ok(_) => return attempt,
                        Err(StoreError::PreconditionFailed) => {
                            tokio::time::sleep(std::time::Duration::from_millis(u64::from(
                                attempt % 7,
                            )))
                            .await
                        }
                        Err(e) => panic!("unexpected error in CAS loop: {e}"),
                    }
                }
                panic!("CAS increment gave up after 200 attempts");
            }));
        }
        let mut attempts = 0;
        for t in tasks {
            attempts += t.await.unwrap();
        }
        assert_eq!(&make().get(key).await.unwrap().unwrap().data[..], b"16");
        attempts
    }
}
