//! Opening repositories: ref index (filled from upstream on a miss) plus the packs it names,
//! whose indexes are loaded once per process and shared.

use crate::fill::resolve::Target;
use crate::fill::{FillError, Filler};
use crate::odb::pack::Pack;
use crate::odb::{Io, Odb};
use crate::refs::{self, Keys, RefIndex};
use crate::store::{DynStore, ETag};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A repository as of one version of its ref index.
pub struct Repo {
    pub root: String,
    pub index: RefIndex,
    pub etag: ETag,
    pub odb: Arc<Odb>,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Fill(#[from] FillError),
    #[error("{0}")]
    Refs(#[from] refs::RefsError),
    #[error("pack {0}: {1}")]
    Pack(String, String),
}

/// Everything needed to open repositories.
pub struct Repos {
    pub store: DynStore,
    pub io: Arc<Io>,
    pub filler: Filler,
    packs: Mutex<HashMap<String, Arc<Pack>>>,
}

impl Repos {
    pub fn new(store: DynStore, io: Arc<Io>, filler: Filler) -> Self {
        Repos {
            store,
            io,
            filler,
            packs: Mutex::new(HashMap::new()),
        }
    }

    /// Open a repository, filling it from upstream if the store does not have it.
    pub async fn open(&self, target: &Target) -> Result<Arc<Repo>, OpenError> {
        let keys = Keys::new(&target.root);
        let (index, etag) = match refs::load(&self.store, &keys).await? {
            Some(x) => x,
            None => self.filler.fill(target).await?,
        };
        let mut packs = Vec::with_capacity(index.packs.len());
        for p in &index.packs {
            packs.push(self.pack(&keys, &p.name, p.size).await?);
        }
        Ok(Arc::new(Repo {
            root: target.root.clone(),
            index,
            etag,
            odb: Arc::new(Odb::new(packs, self.io.clone())),
        }))
    }

    async fn pack(&self, keys: &Keys, name: &str, size: u64) -> Result<Arc<Pack>, OpenError> {
        let key = keys.pack(name);
        if let Some(p) = self.packs.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(p);
        }
        let idx_key = keys.idx(name);
        let idx = self
            .store
            .get(&idx_key)
            .await
            .map_err(|e| OpenError::Pack(idx_key.clone(), e.to_string()))?
            .ok_or_else(|| OpenError::Pack(idx_key.clone(), "missing from the store".into()))?;
        let pack = Pack::from_index_bytes(
            name.to_string(),
            Arc::from(key.as_str()),
            size,
            idx.data.to_vec(),
        )
        .map_err(|e| OpenError::Pack(idx_key, e))?;
        let pack = Arc::new(pack);
        if let Ok(mut m) = self.packs.lock() {
            m.insert(key, pack.clone());
        }
        Ok(pack)
    }
}
