//! In-memory object store, for tests and throw-away servers (`--store memory://`).
//!
//! Every write gets a fresh tag from a per-store counter, so two writes of the same
//! content still get different tags (like S3 versions, unlike content hashes).

use super::{ETag, GetOutput, ListEntry, ObjectStore, PutMode, Result, StoreError, check_key};
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

#[derive(Debug)]
struct Object {
    data: Bytes,
    etag: ETag,
    /// When it was written.
    modified: SystemTime,
}

#[derive(Debug, Default)]
struct Inner {
    objects: BTreeMap<String, Object>,
    next_version: u64,
}

/// A store that keeps everything in a map behind a mutex.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The map never holds a half-done update (each operation is one insert or remove),
    /// so a poisoned lock is still consistent: recover it instead of failing forever.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    fn describe(&self) -> String {
        "memory://".to_string()
    }

    async fn get(&self, key: &str) -> Result<Option<GetOutput>> {
        check_key(key)?;
        Ok(self.lock().objects.get(key).map(|o| GetOutput {
            data: o.data.clone(),
            etag: o.etag.clone(),
        }))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        check_key(key)?;
        let inner = self.lock();
        let data = &inner
            .objects
            .get(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?
            .data;
        let size = data.len() as u64;
        let start = offset.min(size);
        let end = offset.saturating_add(len).min(size);
        // Both bounds are <= data.len(), which is a usize.
        Ok(data.slice(start as usize..end as usize))
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        check_key(key)?;
        Ok(self.lock().objects.get(key).map(|o| o.data.len() as u64))
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag> {
        check_key(key)?;
        let mut inner = self.lock();
        let current = inner.objects.get(key).map(|o| &o.etag);
        let allowed = match &mode {
            PutMode::Overwrite => true,
            PutMode::CreateOnly => current.is_none(),
            PutMode::IfMatch(want) => current == Some(want),
        };
        if !allowed {
            return Err(StoreError::PreconditionFailed);
        }
        inner.next_version += 1;
        let etag = ETag(format!("\"m{}\"", inner.next_version));
        inner.objects.insert(
            key.to_string(),
            Object {
                data,
                etag: etag.clone(),
                modified: SystemTime::now(),
            },
        );
        Ok(etag)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        check_key(key)?;
        self.lock().objects.remove(key);
        Ok(())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let inner = self.lock();
        // BTreeMap iterates in byte order of the keys, which is the sorted order we return.
        Ok(inner
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let inner = self.lock();
        Ok(inner
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, o)| ListEntry {
                key: k.clone(),
                size: o.data.len() as u64,
                modified: o.modified,
            })
            .collect())
    }
}

impl MemoryStore {
    /// Pretend `key` was last written at `when` (tests of age-based clean-up).
    /// Returns false if there is no such object.
    pub fn set_modified(&self, key: &str, when: SystemTime) -> bool {
        match self.lock().objects.get_mut(key) {
            Some(o) => {
                o.modified = when;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let store = MemoryStore::default();
        crate::store::conformance::run(&store).await;
    }

    #[tokio::test]
    async fn same_content_gets_new_tag() {
        let store = MemoryStore::default();
        let a = store
            .put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        let b = store
            .put("k", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_ne!(a, b);
        assert!(matches!(
            store
                .put("k", Bytes::from_static(b"y"), PutMode::IfMatch(a))
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        assert!(matches!(
            store
                .put("missing", Bytes::from_static(b"y"), PutMode::IfMatch(b))
                .await,
            Err(StoreError::PreconditionFailed)
        ));
        assert_eq!(&store.get_range("k", 5, 10).await.unwrap()[..], b"");
        assert!(matches!(
            store.get("../k").await,
            Err(StoreError::InvalidKey(_))
        ));
    }

    #[tokio::test]
    async fn list_prefix_is_not_a_directory() {
        let store = MemoryStore::default();
        for k in ["a", "ab/c", "b"] {
            store
                .put(k, Bytes::new(), PutMode::Overwrite)
                .await
                .unwrap();
        }
        assert_eq!(
            store.list("a").await.unwrap(),
            vec!["a".to_string(), "ab/c".to_string()]
        );
        assert_eq!(store.list("").await.unwrap().len(), 3);
    }
}
