//! Received fills: a fill whose pack arrived whole (its trailer checksum good) can be finished
//! by any instance — verified, indexed and published — without asking upstream again.
//!
//! Just before a fill's pack is published (the last step of its upload), the fill records
//! under `<root>/@git/received/<pack>.json` what the pack was fetched for: the upstream and
//! the ref listing it wanted everything of. If the instance then dies, or is shut down before
//! the pack is indexed and the ref index written, the next instance that holds the
//! repository's lease and finds no ref index adopts it: it reads the stored pack back, checks
//! every object (exactly as a pack from upstream is checked), writes its index, and publishes
//! the ref index from the record. Upstream is fetched once in all, and the repository is served
//! even if upstream is gone by then.
//!
//! A pack that was not received whole is never published (a streamed upload publishes only at
//! its end), so it has no record; a record whose pack is missing or does not verify is deleted
//! and the fill goes to upstream. `goprox gc` deletes records that were published since, or
//! that nobody adopted within its grace period (their packs go as unreferenced packs).

use super::stored::{INDEX_CACHE_BYTES, StoreSource};
use super::{FillError, put_immutable};
use crate::odb::ingest;
use crate::refs::{self, Keys, PackEntry, RefEntry, RefIndex};
use crate::store::{DynStore, ETag, StoreError};
use crate::upstream::resolve::Target;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tokio::sync::mpsc;

/// What a received pack was fetched for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The pack's name (`packs/pack-<name>.pack`).
    pub pack: String,
    /// The upstream URL it was fetched from.
    pub upstream: String,
    /// Upstream's refs (under the mirrored prefixes): every one of them was wanted.
    pub refs: BTreeMap<String, RefEntry>,
    /// Upstream's symbolic HEAD target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_symref: Option<String>,
    /// Upstream's detached HEAD.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::refs::hex_oid_opt"
    )]
    pub head_oid: Option<gix_hash::ObjectId>,
    /// Unix seconds when the listing was taken.
    pub listed_at: u64,
    /// The instance that received it.
    pub holder: String,
}

impl Record {
    /// The record as stored (JSON).
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// Reads in flight.
const AHEAD: usize = 2;

/// A stored pack as a byte stream, read in large ranges a little ahead (on a blocking thread).
struct StoredPack {
    rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
}

impl StoredPack {
    fn new(rt: &tokio::runtime::Handle, store: DynStore, key: String, size: u64) -> Self {
        let (tx, rx) = mpsc::channel(AHEAD);
        rt.spawn(async move {
            super::stored::send_windows(&store, vec![(key, 0, size)], &tx).await;
        });
        StoredPack {
            rx,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for StoredPack {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.current = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Finish a received fill of `target`'s repository if one is recorded: `Ok(Some)` with the
/// published ref index, `Ok(None)` if there is none to adopt (records of missing or broken
/// packs are deleted on the way). The caller holds the repository's lease and found no ref
/// index.
pub async fn adopt(
    store: &DynStore,
    keys: &Keys,
    target: &Target,
) -> Result<Option<(RefIndex, ETag)>, FillError> {
    let prefix = keys.received_prefix();
    let listed = store
        .list(&prefix)
        .await
        .map_err(|e| FillError::Store(prefix.clone(), e))?;
    let mut records = Vec::new();
    for key in listed {
        let Some(got) = store
            .get(&key)
            .await
            .map_err(|e| FillError::Store(key.clone(), e))?
        else {
            continue;
        };
        match serde_json::from_slice::<Record>(&got.data) {
            Ok(r) if r.upstream == target.upstream => records.push((key, r)),
            Ok(r) => {
                tracing::info!(root = %target.root, recorded = %r.upstream, upstream = %target.upstream, "received fill is of another upstream; not adopted");
                forget(store, &key).await;
            }
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "unreadable received-fill record; deleted");
                forget(store, &key).await;
            }
        }
    }
    // The newest listing first.
    records.sort_by_key(|r| std::cmp::Reverse(r.1.listed_at));
    for (key, rec) in records {
        match finish(store, keys, target, &rec).await {
            Ok(Some(done)) => {
                forget(store, &key).await;
                crate::metrics::FILLS_ADOPTED.inc();
                tracing::info!(root = %target.root, pack = %rec.pack, holder = %rec.holder, "adopted a received fill: published without asking upstream");
                return Ok(Some(done));
            }
            Ok(None) => forget(store, &key).await,
            Err(e) => {
                tracing::warn!(root = %target.root, pack = %rec.pack, error = %e, "received fill not adopted; fetching from upstream");
                forget(store, &key).await;
            }
        }
    }
    Ok(None)
}

async fn forget(store: &DynStore, key: &str) {
    if let Err(e) = store.delete(key).await {
        tracing::warn!(key, error = %e, "deleting a received-fill record failed; gc will");
    }
}

/// Verify and index a recorded pack, then publish the ref index; `Ok(None)` when its pack is
/// not in the store.
async fn finish(
    store: &DynStore,
    keys: &Keys,
    target: &Target,
    rec: &Record,
) -> Result<Option<(RefIndex, ETag)>, FillError> {
    let pack_key = keys.pack(&rec.pack);
    let Some(size) = store
        .head(&pack_key)
        .await
        .map_err(|e| FillError::Store(pack_key.clone(), e))?
    else {
        return Ok(None);
    };
    let rt = tokio::runtime::Handle::current();
    let (s2, k2) = (store.clone(), pack_key.clone());
    let indexed = tokio::task::spawn_blocking(move || {
        let mut input = StoredPack::new(&rt, s2.clone(), k2.clone(), size);
        let received = ingest::receive(&mut input, &mut |_| Ok(()), INDEX_CACHE_BYTES, u64::MAX)?;
        let objects = received.objects();
        let mut src = StoreSource::new(s2, rt, k2, size);
        received
            .finish(&mut src, INDEX_CACHE_BYTES)
            .map(|i| (i, objects))
    })
    .await
    .map_err(|e| FillError::Internal(e.to_string()))?;
    let (indexed, objects) = indexed.map_err(|e| {
        FillError::Internal(format!("verifying the received pack {}: {e}", rec.pack))
    })?;
    put_immutable(store, &keys.idx(&rec.pack), Bytes::from(indexed.idx)).await?;
    let index = RefIndex {
        version: refs::FORMAT_VERSION,
        generation: 1,
        root: target.root.clone(),
        upstream: rec.upstream.clone(),
        subdir: target.subdir.clone(),
        fetched_at: rec.listed_at,
        head_symref: rec.head_symref.clone(),
        head_oid: rec.head_oid,
        refs: rec.refs.clone(),
        packs: vec![PackEntry {
            name: rec.pack.clone(),
            checksum: Some(indexed.name),
            size,
            objects,
            walk_end: Some(indexed.walk_end),
            bitmap: false,
        }],
        retired: Vec::new(),
        closed: true,
    };
    // Published unless another instance published first (then its index is used).
    let published = refs::update(store, keys, None, |now| match now {
        None => refs::Change::Write(index.clone()),
        Some(_) => refs::Change::Keep,
    })
    .await?;
    Ok(match published {
        refs::Updated::Written(index, etag) => Some((index, etag)),
        refs::Updated::Kept(theirs) => theirs,
    })
}
