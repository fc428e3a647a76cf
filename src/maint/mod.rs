//! Bucket maintenance: `goprox gc` (delete what no ref index needs any more), `goprox fsck`
//! (check that every ref index is fully backed by its packs) and `goprox stats` (what the store
//! holds).

pub mod fsck;
pub mod gc;
pub mod stats;

use crate::refs::{self, REF_INDEX_SUFFIX};
use crate::store::{DynStore, StoreError};

/// Repository roots that have a ref index, sorted.
pub async fn repository_roots(store: &DynStore) -> Result<Vec<String>, StoreError> {
    Ok(store
        .list("")
        .await?
        .into_iter()
        .filter_map(|k| {
            let root = k.strip_suffix(REF_INDEX_SUFFIX)?;
            // Only keys that really are a ref index (not `a/@git/x/@git/refs.json`).
            matches!(refs::parse_key(&k), Some((r, refs::KeyKind::RefIndex)) if r == root)
                .then(|| root.to_string())
        })
        .collect())
}
