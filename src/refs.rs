//! The ref index: one JSON object per repository naming its refs, HEAD, and the packs that
//! hold its objects. It is the only mutable object of a repository: created with
//! `If-None-Match: *`, replaced with `If-Match: <etag>`, and written only after every pack
//! it names is complete in the store.

use crate::store::{DynStore, ETag, PutMode, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// Object id (hex) the ref points to.
    pub oid: String,
    /// For annotated tags: the object the tag chain finally points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peeled: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Pack checksum (hex); the objects are `pack-<name>.pack` and `pack-<name>.idx`.
    pub name: String,
    pub size: u64,
    pub objects: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefIndex {
    pub version: u32,
    /// Incremented on every replacement.
    pub generation: u64,
    /// The repository's import-path root.
    pub root: String,
    /// Where it was fetched from.
    pub upstream: String,
    /// Unix seconds of the last successful fetch.
    pub fetched_at: u64,
    /// Target of the HEAD symref (e.g. `refs/heads/main`), possibly unborn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_symref: Option<String>,
    /// Object id of a detached HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_oid: Option<String>,
    pub refs: BTreeMap<String, RefEntry>,
    pub packs: Vec<PackEntry>,
}

impl RefIndex {
    /// The object id HEAD resolves to, if any.
    pub fn head(&self) -> Option<&str> {
        if let Some(t) = &self.head_symref {
            return self.refs.get(t).map(|r| r.oid.as_str());
        }
        self.head_oid.as_deref()
    }
}

/// Store keys of a repository, all under `<root>/@git/` (`@` cannot occur in an import path,
/// so no repository's keys can collide with another's).
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    pub fn new(root: &str) -> Self {
        Keys {
            base: format!("{root}/@git"),
        }
    }
    pub fn ref_index(&self) -> String {
        format!("{}/refs.json", self.base)
    }
    pub fn pack(&self, name: &str) -> String {
        format!("{}/packs/pack-{name}.pack", self.base)
    }
    pub fn idx(&self, name: &str) -> String {
        format!("{}/packs/pack-{name}.idx", self.base)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RefsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("corrupt ref index {0}: {1}")]
    Corrupt(String, String),
}

/// Load a repository's ref index and its version tag.
pub async fn load(store: &DynStore, keys: &Keys) -> Result<Option<(RefIndex, ETag)>, RefsError> {
    let key = keys.ref_index();
    let Some(got) = store.get(&key).await? else {
        return Ok(None);
    };
    let idx: RefIndex = serde_json::from_slice(&got.data)
        .map_err(|e| RefsError::Corrupt(key.clone(), e.to_string()))?;
    if idx.version != FORMAT_VERSION {
        return Err(RefsError::Corrupt(
            key,
            format!("unsupported version {}", idx.version),
        ));
    }
    Ok(Some((idx, got.etag)))
}

/// Create (`prev == None`, `If-None-Match: *`) or replace (`If-Match`) the ref index.
/// Fails with [`StoreError::PreconditionFailed`] when another writer got there first.
pub async fn store(
    store: &DynStore,
    keys: &Keys,
    idx: &RefIndex,
    prev: Option<&ETag>,
) -> Result<ETag, RefsError> {
    let body = serde_json::to_vec_pretty(idx)
        .map_err(|e| RefsError::Corrupt(keys.ref_index(), e.to_string()))?;
    let mode = match prev {
        None => PutMode::CreateOnly,
        Some(e) => PutMode::IfMatch(e.clone()),
    };
    Ok(store
        .put(&keys.ref_index(), Bytes::from(body), mode)
        .await?)
}
