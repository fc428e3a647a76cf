//! A store wrapper that counts and times every call of the store it wraps, by operation and
//! outcome (`goprox_store_requests_total`, `goprox_store_request_duration_seconds`). Applied
//! once by [`super::open`], so local, S3 and memory stores are measured alike. Keys are never
//! recorded.

use super::{
    Chunks, DynStore, ETag, GetOutput, ListEntry, ObjectStore, PutMode, Result, Revalidated,
    StoreError,
};
use crate::metrics::{StoreOp, StoreOutcome, store_request};
use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// A store whose calls are counted and timed ([`metered`]).
#[derive(Debug)]
struct Metered {
    inner: DynStore,
}

/// Wrap `store` so that its calls are measured.
pub fn metered(store: DynStore) -> DynStore {
    Arc::new(Metered { inner: store })
}

fn outcome<T>(r: &Result<T>) -> StoreOutcome {
    match r {
        Ok(_) => StoreOutcome::Ok,
        Err(StoreError::NotFound(_)) => StoreOutcome::NotFound,
        Err(StoreError::PreconditionFailed) => StoreOutcome::PreconditionFailed,
        Err(_) => StoreOutcome::Error,
    }
}

/// Like [`outcome`], with `Ok(None)` (a missing object) as `not_found`.
fn outcome_opt<T>(r: &Result<Option<T>>) -> StoreOutcome {
    match r {
        Ok(None) => StoreOutcome::NotFound,
        r => outcome(r),
    }
}

fn put_op(mode: &PutMode) -> StoreOp {
    match mode {
        PutMode::Overwrite => StoreOp::Put,
        PutMode::CreateOnly => StoreOp::PutIfAbsent,
        PutMode::IfMatch(_) => StoreOp::PutIfMatch,
    }
}

#[async_trait]
impl ObjectStore for Metered {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn get(&self, key: &str) -> Result<Option<GetOutput>> {
        let t = Instant::now();
        let r = self.inner.get(key).await;
        store_request(StoreOp::Get, outcome_opt(&r), t.elapsed());
        tracing::trace!(key, ms = t.elapsed().as_millis() as u64, "read");
        r
    }

    // Passed through (not the trait's default), so S3 keeps answering with a bodiless 304.
    async fn get_if_changed(&self, key: &str, etag: &ETag) -> Result<Revalidated> {
        let t = Instant::now();
        let r = self.inner.get_if_changed(key, etag).await;
        let o = match &r {
            Ok(Revalidated::Missing) => StoreOutcome::NotFound,
            r => outcome(r),
        };
        store_request(StoreOp::GetIfChanged, o, t.elapsed());
        r
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let t = Instant::now();
        let r = self.inner.get_range(key, offset, len).await;
        store_request(StoreOp::GetRange, outcome(&r), t.elapsed());
        tracing::trace!(
            key,
            offset,
            len,
            ms = t.elapsed().as_millis() as u64,
            "ranged read"
        );
        r
    }

    async fn get_range_pieces(&self, key: &str, offset: u64, len: u64) -> Result<Vec<Bytes>> {
        let t = Instant::now();
        let r = self.inner.get_range_pieces(key, offset, len).await;
        store_request(StoreOp::GetRange, outcome(&r), t.elapsed());
        r
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let t = Instant::now();
        let r = self.inner.head(key).await;
        store_request(StoreOp::Head, outcome_opt(&r), t.elapsed());
        r
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag> {
        let op = put_op(&mode);
        let t = Instant::now();
        let r = self.inner.put(key, data, mode).await;
        store_request(op, outcome(&r), t.elapsed());
        r
    }

    async fn put_stream(&self, key: &str, chunks: Chunks, mode: PutMode) -> Result<ETag> {
        let op = put_op(&mode);
        let t = Instant::now();
        let r = self.inner.put_stream(key, chunks, mode).await;
        store_request(op, outcome(&r), t.elapsed());
        r
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let t = Instant::now();
        let r = self.inner.delete(key).await;
        store_request(StoreOp::Delete, outcome(&r), t.elapsed());
        r
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let t = Instant::now();
        let r = self.inner.list(prefix).await;
        store_request(StoreOp::List, outcome(&r), t.elapsed());
        r
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let t = Instant::now();
        let r = self.inner.list_meta(prefix).await;
        store_request(StoreOp::ListMeta, outcome(&r), t.elapsed());
        r
    }

    async fn abort_stale_uploads(&self, older_than: SystemTime) -> Result<u32> {
        let t = Instant::now();
        let r = self.inner.abort_stale_uploads(older_than).await;
        store_request(StoreOp::AbortStaleUploads, outcome(&r), t.elapsed());
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn wrapped_store_passes_the_conformance_suite() {
        let store = metered(Arc::new(MemoryStore::default()));
        crate::store::conformance::run(store.as_ref()).await;
        let text = crate::metrics::install()
            .map(|h| h.render())
            .unwrap_or_default();
        for line in [
            "goprox_store_requests_total{op=\"put_if_absent\",outcome=\"precondition_failed\"}",
            "goprox_store_requests_total{op=\"put_if_match\",outcome=\"ok\"}",
            "goprox_store_requests_total{op=\"get\",outcome=\"not_found\"}",
            "goprox_store_requests_total{op=\"get_range\",outcome=\"not_found\"}",
            "goprox_store_request_duration_seconds_bucket{op=\"list_meta\",outcome=\"ok\",le=\"0.001\"}",
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        assert!(!text.contains("t/a/obj"), "a store key in the metrics");
    }
}
