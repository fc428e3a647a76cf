//! Fill on miss: fetch a repository from its upstream, store pack and index, then publish the
//! ref index (create-only). Concurrent fills of one repository in a process share one fetch;
//! across processes the first ref index wins and the others adopt it.

pub mod fetch;
pub mod lease;
pub mod resolve;

use crate::refs::{self, Keys, PackEntry, RefIndex};
use crate::store::{DynStore, ETag, PutMode, StoreError};
use bytes::Bytes;
use resolve::Target;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("storing {0}: {1}")]
    Store(String, StoreError),
    #[error("{0}")]
    Refs(#[from] refs::RefsError),
    #[error("internal: {0}")]
    Internal(String),
}

/// Progress of a fill, for `goprox mirror`.
pub trait FillProgress: Send + Sync {
    fn fetched(&self, _root: &str, _bytes: u64) {}
    fn stored(&self, _root: &str, _objects: u32, _bytes: u64) {}
}

struct NoProgress;
impl FillProgress for NoProgress {}

pub struct Filler {
    store: DynStore,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    progress: Arc<dyn FillProgress>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Filler {
    pub fn new(store: DynStore) -> Self {
        Filler {
            store,
            locks: Mutex::new(HashMap::new()),
            progress: Arc::new(NoProgress),
        }
    }

    pub fn with_progress(mut self, p: Arc<dyn FillProgress>) -> Self {
        self.progress = p;
        self
    }

    /// Fill `target` unless its ref index already exists; returns the ref index in the store.
    pub async fn fill(&self, target: &Target) -> Result<(RefIndex, ETag), FillError> {
        let lock = {
            let mut m = self
                .locks
                .lock()
                .map_err(|_| FillError::Internal("lock poisoned".into()))?;
            m.entry(target.root.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        let keys = Keys::new(&target.root);
        if let Some(x) = refs::load(&self.store, &keys).await? {
            return Ok(x);
        }
        let result = self.fetch_and_store(target, &keys).await;
        match &result {
            Ok(_) => crate::metrics::FILLS.inc(),
            Err(_) => crate::metrics::FILL_ERRORS.inc(),
        }
        if let Ok(mut m) = self.locks.lock()
            && Arc::strong_count(&lock) <= 2
        {
            m.remove(&target.root);
        }
        result
    }

    /// Fetch from upstream and store, even if a ref index exists (used by `goprox mirror`).
    pub async fn fetch_and_store(
        &self,
        target: &Target,
        keys: &Keys,
    ) -> Result<(RefIndex, ETag), FillError> {
        let url = target.upstream.clone();
        tracing::info!(root = %target.root, upstream = %url, "filling from upstream");
        let fetched = tokio::task::spawn_blocking(move || fetch::fetch_all(&url))
            .await
            .map_err(|e| FillError::Internal(e.to_string()))??;
        let mut packs = Vec::new();
        if let Some(pack) = fetched.pack {
            self.progress.fetched(&target.root, pack.len() as u64);
            let pack = Bytes::from(pack);
            let p2 = pack.clone();
            let indexed = tokio::task::spawn_blocking(move || fetch::index_pack(&p2))
                .await
                .map_err(|e| FillError::Internal(e.to_string()))?
                .map_err(|e| fetch::FetchError::BadPack(target.upstream.clone(), e))?;
            // Pack first, then its index: a reader only follows the ref index, written last.
            let pack_key = keys.pack(&indexed.name);
            let size = pack.len() as u64;
            put_immutable(&self.store, &pack_key, pack).await?;
            put_immutable(
                &self.store,
                &keys.idx(&indexed.name),
                Bytes::from(indexed.idx),
            )
            .await?;
            self.progress.stored(&target.root, indexed.objects, size);
            packs.push(PackEntry {
                name: indexed.name,
                size,
                objects: indexed.objects,
            });
        }
        let prev = refs::load(&self.store, keys).await?;
        let index = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: prev.as_ref().map(|p| p.0.generation + 1).unwrap_or(1),
            root: target.root.clone(),
            upstream: target.upstream.clone(),
            fetched_at: now(),
            head_symref: fetched.head_symref,
            head_oid: fetched.head_oid,
            refs: fetched.refs,
            packs,
            retired: prev
                .as_ref()
                .map(|p| p.0.retired.clone())
                .unwrap_or_default(),
        };
        match refs::store(&self.store, keys, &index, prev.as_ref().map(|p| &p.1)).await {
            Ok(etag) => Ok((index, etag)),
            Err(refs::RefsError::Store(StoreError::PreconditionFailed)) => {
                // Another instance published first: use its index.
                tracing::info!(root = %target.root, "another instance filled this repository first");
                refs::load(&self.store, keys).await?.ok_or_else(|| {
                    FillError::Internal("ref index vanished after a conflict".into())
                })
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Write an immutable, content-named object; an existing object under the name is the same.
async fn put_immutable(store: &DynStore, key: &str, data: Bytes) -> Result<(), FillError> {
    match store.put(key, data, PutMode::CreateOnly).await {
        Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
        Err(e) => Err(FillError::Store(key.to_string(), e)),
    }
}
