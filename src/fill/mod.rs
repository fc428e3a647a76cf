//! Fill on miss: fetch a repository from its upstream, store pack and index, then publish the
//! ref index (create-only). Concurrent fills of one repository in a process share one fetch;
//! across processes the first ref index wins and the others adopt it.

pub mod fetch;
pub mod resolve;

use crate::refs::{self, Keys, PackEntry, RefIndex};
use crate::store::{DynStore, ETag, PutMode, StoreError};
use bytes::Bytes;
use gix_hash::ObjectId;
use resolve::Target;
use std::collections::{BTreeSet, HashMap};
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

/// How repositories are mirrored.
#[derive(Debug, Clone, Default)]
pub struct MirrorOptions {
    /// The refs to mirror.
    pub prefixes: fetch::RefPrefixes,
    /// Plain mirror semantics for tags (follow upstream moves and deletions). Off by default:
    /// a mirrored tag keeps its first target and stays when upstream deletes it.
    pub mirror_tags: bool,
    pub deadlines: fetch::Deadlines,
}

pub struct Filler {
    store: DynStore,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    progress: Arc<dyn FillProgress>,
    options: MirrorOptions,
}

/// The outcome of [`Filler::refresh`].
#[derive(Debug)]
pub enum Refreshed {
    /// Upstream has nothing the ref index lacks.
    Unchanged,
    /// A new ref index (and possibly a new pack) was published, by us or by another instance.
    Updated(RefIndex, ETag),
}

/// The refs to publish after a refresh: branches and HEAD follow upstream; tags keep their
/// first mirrored target (and stay when deleted upstream) unless `mirror_tags`. Returns the
/// new refs and, for logging, the tags upstream moved or deleted that were kept.
pub fn merge_refs(
    old: &std::collections::BTreeMap<String, refs::RefEntry>,
    upstream: &std::collections::BTreeMap<String, refs::RefEntry>,
    mirror_tags: bool,
) -> (
    std::collections::BTreeMap<String, refs::RefEntry>,
    Vec<String>,
) {
    let mut out = upstream.clone();
    let mut kept = Vec::new();
    if mirror_tags {
        return (out, kept);
    }
    for (name, entry) in old {
        if !name.starts_with("refs/tags/") {
            continue;
        }
        match upstream.get(name) {
            Some(u) if u == entry => {}
            Some(_) => kept.push(format!("{name} (moved upstream)")),
            None => kept.push(format!("{name} (deleted upstream)")),
        }
        out.insert(name.clone(), entry.clone());
    }
    (out, kept)
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
            options: MirrorOptions::default(),
        }
    }

    pub fn with_options(mut self, options: MirrorOptions) -> Self {
        self.options = options;
        self
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
        let (prefixes, deadlines) = (self.options.prefixes.clone(), self.options.deadlines);
        let fetched =
            tokio::task::spawn_blocking(move || fetch::fetch_all(&url, &prefixes, deadlines))
                .await
                .map_err(|e| FillError::Internal(e.to_string()))??;
        let mut packs = Vec::new();
        if let Some(pack) = fetched.pack {
            packs.push(self.store_pack(target, keys, pack).await?);
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

impl Filler {
    /// Verify and index a received pack, then store pack and index (in that order: a reader
    /// only follows the ref index, written after both).
    async fn store_pack(
        &self,
        target: &Target,
        keys: &Keys,
        pack: Vec<u8>,
    ) -> Result<PackEntry, FillError> {
        self.progress.fetched(&target.root, pack.len() as u64);
        let pack = Bytes::from(pack);
        let p2 = pack.clone();
        let indexed = tokio::task::spawn_blocking(move || fetch::index_pack(&p2))
            .await
            .map_err(|e| FillError::Internal(e.to_string()))?
            .map_err(|e| fetch::FetchError::BadPack(target.upstream.clone(), e))?;
        let size = pack.len() as u64;
        put_immutable(&self.store, &keys.pack(&indexed.name), pack).await?;
        put_immutable(
            &self.store,
            &keys.idx(&indexed.name),
            Bytes::from(indexed.idx),
        )
        .await?;
        self.progress.stored(&target.root, indexed.objects, size);
        Ok(PackEntry {
            name: indexed.name,
            size,
            objects: indexed.objects,
        })
    }

    /// Bring a stored repository up to date with its upstream: list refs; when they changed
    /// (after the tag policy), fetch only what is new (the stored tips as haves) into one new
    /// pack and replace the ref index with `If-Match`. `extra_wants` are objects a client asked
    /// for that the store lacks (fetched too if upstream will send them); `has` tells which
    /// objects the store has.
    pub async fn refresh(
        &self,
        target: &Target,
        current: &(RefIndex, ETag),
        has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync>,
        extra_wants: &[ObjectId],
    ) -> Result<Refreshed, FillError> {
        let keys = Keys::new(&target.root);
        let (old, etag) = current;
        let url = target.upstream.clone();
        let (prefixes, deadlines) = (self.options.prefixes.clone(), self.options.deadlines);
        let mirror_tags = self.options.mirror_tags;
        let old_refs = old.refs.clone();
        let extra: Vec<ObjectId> = extra_wants.to_vec();
        let root = target.root.clone();
        // Everything upstream-facing runs on one blocking thread (one connection).
        let (listing, new_refs, pack) = tokio::task::spawn_blocking(move || {
            let (mut session, listing) = fetch::Session::connect(&url, &prefixes, deadlines)?;
            let (new_refs, kept) = merge_refs(&old_refs, &listing.refs, mirror_tags);
            for k in &kept {
                tracing::warn!(root = %root, tag = %k, "keeping the mirrored tag");
            }
            let mut wants: BTreeSet<ObjectId> = new_refs
                .values()
                .map(|r| r.oid.as_str())
                .chain(listing.head_oid.as_deref())
                .filter_map(|h| ObjectId::from_hex(h.as_bytes()).ok())
                .filter(|o| !has(o))
                .collect();
            let haves: BTreeSet<ObjectId> = old_refs
                .values()
                .filter_map(|r| ObjectId::from_hex(r.oid.as_bytes()).ok())
                .filter(|o| has(o))
                .collect();
            let tips_only = wants.clone();
            wants.extend(extra.iter().filter(|o| !has(o)));
            let pack = if wants.is_empty() {
                None
            } else {
                match session.fetch_pack(&wants, &haves) {
                    Ok(p) => Some(p),
                    // Upstream refused the extra wants (not reachable there): fetch the tips.
                    Err(e) if wants.len() > tips_only.len() => {
                        tracing::info!(root = %root, error = %e, "upstream refused wants by sha");
                        if tips_only.is_empty() {
                            None
                        } else {
                            let (mut s2, _) = fetch::Session::connect(&url, &prefixes, deadlines)?;
                            Some(s2.fetch_pack(&tips_only, &haves)?)
                        }
                    }
                    Err(e) => return Err(e),
                }
            };
            Ok::<_, fetch::FetchError>((listing, new_refs, pack))
        })
        .await
        .map_err(|e| FillError::Internal(e.to_string()))??;

        let head_same = listing.head_symref == old.head_symref && listing.head_oid == old.head_oid;
        if pack.is_none() && new_refs == old.refs && head_same {
            return Ok(Refreshed::Unchanged);
        }
        let mut packs = old.packs.clone();
        if let Some(pack) = pack {
            packs.push(self.store_pack(target, &keys, pack).await?);
        }
        let index = RefIndex {
            generation: old.generation + 1,
            fetched_at: now(),
            head_symref: listing.head_symref,
            head_oid: listing.head_oid,
            refs: new_refs,
            packs,
            ..old.clone()
        };
        match refs::store(&self.store, &keys, &index, Some(etag)).await {
            Ok(etag) => {
                crate::metrics::REFRESHES.inc();
                tracing::info!(root = %target.root, generation = index.generation, packs = index.packs.len(), "refreshed from upstream");
                Ok(Refreshed::Updated(index, etag))
            }
            Err(refs::RefsError::Store(StoreError::PreconditionFailed)) => {
                // Another instance replaced it first: serve theirs; our pack (if any) is
                // unreferenced garbage for `goprox gc`.
                tracing::info!(root = %target.root, "another instance refreshed this repository first");
                let (i, e) = refs::load(&self.store, &keys).await?.ok_or_else(|| {
                    FillError::Internal("ref index vanished after a conflict".into())
                })?;
                Ok(Refreshed::Updated(i, e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::RefEntry;
    use std::collections::BTreeMap;

    fn refs(list: &[(&str, &str)]) -> BTreeMap<String, RefEntry> {
        list.iter()
            .map(|(n, o)| {
                (
                    n.to_string(),
                    RefEntry {
                        oid: o.to_string(),
                        peeled: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn tags_are_immutable_branches_follow() {
        let old = refs(&[
            ("refs/heads/main", "a"),
            ("refs/heads/gone", "a"),
            ("refs/tags/v1", "t1"),
            ("refs/tags/moved", "a"),
        ]);
        let up = refs(&[
            ("refs/heads/main", "b"),
            ("refs/tags/moved", "b"),
            ("refs/tags/v2", "t2"),
        ]);
        let (merged, kept) = merge_refs(&old, &up, false);
        assert_eq!(
            merged,
            refs(&[
                ("refs/heads/main", "b"),
                ("refs/tags/moved", "a"),
                ("refs/tags/v1", "t1"),
                ("refs/tags/v2", "t2"),
            ])
        );
        assert_eq!(
            kept,
            vec![
                "refs/tags/moved (moved upstream)".to_string(),
                "refs/tags/v1 (deleted upstream)".to_string()
            ]
        );
        let (plain, kept) = merge_refs(&old, &up, true);
        assert_eq!(plain, up);
        assert!(kept.is_empty());
    }
}
