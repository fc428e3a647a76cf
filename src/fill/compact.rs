//! Geometric compaction: every refresh adds a small pack; merging packs so that each pack holds
//! at least twice the objects of the next smaller one keeps a repository at O(log n) packs
//! (the idea of `git repack --geometric=2`, and of JGit DFS's compactor).
//!
//! A merge concatenates the entries of its packs verbatim (each pack is self-contained, so an
//! `OFS_DELTA`'s distance to its base stays valid inside its block, and `REF_DELTA`s name their
//! base by id), writes a new header and trailer, and indexes the result (which also verifies
//! every object). The merged pack and its index are written create-only, then the ref index is
//! replaced with `If-Match`; the merged-away packs move to `retired`, where `goprox gc` finds
//! them after the grace period. A lost race leaves the merged pack unreferenced (gc's too).

use super::{FillError, inbound, now};
use crate::odb::ingest;
use crate::refs::{self, Keys, PackEntry, RefIndex, Retired};
use crate::store::{DynStore, ETag, StoreError};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use tokio::sync::mpsc;

/// Each pack should hold at least `FACTOR` times the objects of the next smaller one.
pub const FACTOR: u64 = 2;

/// Which packs (indexes into `weights`, object counts) to merge into one so that the packs
/// left, plus the merged one, form a geometric progression with `factor`. Empty when the packs
/// already do (or there is at most one).
///
/// Sorted by weight, the largest prefix of small packs that breaks the progression is rolled
/// up; then larger packs join while the rolled-up pack would not be `factor` times smaller
/// than them.
pub fn plan(weights: &[u64], factor: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (weights[i], i));
    let w = |k: usize| weights[order[k]].max(1);
    // The highest position where the progression breaks: everything up to it is merged.
    let Some(split) = (1..order.len())
        .rev()
        .find(|&k| w(k) < factor.saturating_mul(w(k - 1)))
    else {
        return Vec::new();
    };
    let mut total: u64 = (0..=split).map(w).sum();
    let mut end = split + 1;
    while end < order.len() && w(end) < factor.saturating_mul(total) {
        total += w(end);
        end += 1;
    }
    let mut pick: Vec<usize> = order[..end].to_vec();
    pick.sort_unstable();
    pick
}

/// Self-contained packs read from the store as one pack: a header with the total count, the
/// entries of each pack verbatim (an `OFS_DELTA`'s distance stays valid inside its block), and
/// a trailer of what came before. The store is read [`WINDOW`] bytes at a time, one ahead.
pub struct Concatenation {
    rx: mpsc::Receiver<Result<Bytes, StoreError>>,
    current: Bytes,
    hash: Sha1,
    trailer: Option<Bytes>,
}

impl Concatenation {
    /// `packs`: store keys and sizes; `count`: their objects in all.
    pub fn new(
        rt: &tokio::runtime::Handle,
        store: &DynStore,
        packs: Vec<(String, u64)>,
        count: u32,
    ) -> Self {
        let (tx, rx) = mpsc::channel(1);
        let store = store.clone();
        rt.spawn(async move {
            let mut header = b"PACK\0\0\0\x02".to_vec();
            header.extend_from_slice(&count.to_be_bytes());
            if tx.send(Ok(Bytes::from(header))).await.is_err() {
                return;
            }
            // Each pack's entries: without its header and trailer.
            let entries = packs
                .into_iter()
                .map(|(key, size)| (key, 12, size.saturating_sub(20)))
                .collect();
            super::stored::send_windows(&store, entries, &tx).await;
        });
        Concatenation {
            rx,
            current: Bytes::new(),
            hash: Sha1::new(),
            trailer: None,
        }
    }
}

impl std::io::Read for Concatenation {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if let Some(t) = self.trailer.as_mut() {
                let n = buf.len().min(t.len());
                buf[..n].copy_from_slice(&t.split_to(n));
                return Ok(n);
            }
            match self.rx.blocking_recv() {
                Some(Ok(b)) => {
                    self.hash.update(&b);
                    self.current = b;
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    let sum: [u8; 20] = self.hash.clone().finalize().into();
                    self.trailer = Some(Bytes::copy_from_slice(&sum));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Merge the packs [`plan`] picks, publish the new ref index (`If-Match: etag`) and return it;
/// `None` when there is nothing to merge, the packs cannot be merged verbatim (an object in two
/// of them), or another writer replaced the ref index first.
// Long because it is one compaction from plan to publish, in order: each step (merge, upload,
// new index, conditional publish) uses the previous one's result and can give up.
pub async fn compact(
    store: &DynStore,
    keys: &Keys,
    index: &RefIndex,
    etag: &ETag,
) -> Result<Option<(RefIndex, ETag)>, FillError> {
    let weights: Vec<u64> = index.packs.iter().map(|p| u64::from(p.objects)).collect();
    let pick = plan(&weights, FACTOR);
    if pick.len() < 2 {
        return Ok(None);
    }
    let expected: u64 = pick.iter().map(|&i| weights[i]).sum();
    let Ok(count) = u32::try_from(expected) else {
        return Ok(None);
    };
    // The packs' entries stream from the store through the indexer into the merged pack's
    // upload: memory does not grow with the packs.
    let rt = tokio::runtime::Handle::current();
    let parts: Vec<(String, u64)> = pick
        .iter()
        .map(|&i| (keys.pack(&index.packs[i].name), index.packs[i].size))
        .collect();
    let mut input = Concatenation::new(&rt, store, parts, count);
    let (mut sink, upload) = inbound::begin(&rt, store, keys, &index.root, None);
    let received = tokio::task::spawn_blocking(move || {
        let r = ingest::receive(
            &mut input,
            &mut |b| sink.write(b),
            super::stored::INDEX_CACHE_BYTES,
            u64::MAX,
        )?;
        sink.finish()?;
        Ok::<_, ingest::IngestError>(r)
    })
    .await
    .map_err(|e| FillError::Internal(e.to_string()))?;
    let received = match received {
        Ok(r) if u64::from(r.objects()) == expected => r,
        Ok(_) => {
            upload.abandon();
            tracing::warn!(root = %index.root, "pack object counts disagree with the ref index; not compacting");
            return Ok(None);
        }
        Err(e) => {
            upload.abandon();
            tracing::warn!(root = %index.root, error = %e, "not compacting");
            return Ok(None);
        }
    };
    let merged = match upload.complete(store, keys, "compaction", received).await {
        Ok(m) => m,
        Err(e @ FillError::Fetch(_)) => {
            // Not mergeable as is (an object in two of the packs).
            tracing::warn!(root = %index.root, error = %e, "not compacting");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let at = now();
    let mut packs: Vec<PackEntry> = Vec::with_capacity(index.packs.len() - pick.len() + 1);
    let mut retired = index.retired.clone();
    for (i, p) in index.packs.iter().enumerate() {
        if pick.contains(&i) {
            retired.push(Retired {
                name: p.name.clone(),
                at,
            });
        } else {
            packs.push(p.clone());
        }
    }
    let objects = merged.objects;
    packs.push(merged);
    let next = RefIndex {
        packs,
        retired,
        ..index.clone()
    };
    super::pause_point("compaction-before-publish").await;
    // Only over the index the merge was planned from: anything else is left for next time.
    let merged_into = refs::update(
        store,
        keys,
        Some((index.clone(), etag.clone())),
        |now| match now {
            Some(now) if now.generation == index.generation => refs::Change::Write(next.clone()),
            _ => refs::Change::Keep,
        },
    )
    .await?;
    match merged_into {
        refs::Updated::Written(next, etag) => {
            crate::metrics::COMPACTIONS.inc();
            tracing::info!(
                root = %index.root,
                merged = pick.len(),
                objects,
                packs = next.packs.len(),
                "compacted packs"
            );
            Ok(Some((next, etag)))
        }
        refs::Updated::Kept(_) => {
            tracing::info!(root = %index.root, "ref index replaced during compaction; the merged pack is left for gc");
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes_after(weights: &[u64]) -> Vec<u64> {
        let pick = plan(weights, FACTOR);
        let mut out: Vec<u64> = weights
            .iter()
            .enumerate()
            .filter(|(i, _)| !pick.contains(i))
            .map(|(_, w)| *w)
            .collect();
        if !pick.is_empty() {
            out.push(pick.iter().map(|&i| weights[i]).sum());
        }
        out.sort_unstable();
        out
    }

    fn geometric(sorted: &[u64]) -> bool {
        sorted.windows(2).all(|w| w[1] >= FACTOR * w[0].max(1))
    }

    #[test]
    fn nothing_to_do() {
        assert!(plan(&[], 2).is_empty());
        assert!(plan(&[5], 2).is_empty());
        assert!(plan(&[100, 10, 1], 2).is_empty());
        assert!(plan(&[1, 2, 4, 8], 2).is_empty());
    }

    #[test]
    fn merges_small_packs_only() {
        // A big pack and two small ones: the small ones merge; the big one is left alone.
        assert_eq!(plan(&[1000, 3, 3], 2), vec![1, 2]);
        // Equal packs merge.
        assert_eq!(plan(&[10, 10], 2), vec![0, 1]);
        // Rolling up can pull in a larger pack that the merged one would not be 2x below.
        assert_eq!(plan(&[1, 10, 11], 2), vec![0, 1, 2]);
    }

    #[test]
    fn refreshes_stay_logarithmic() {
        // A fill then many small refreshes: the pack count stays small and the result is
        // always a geometric progression.
        let mut packs = vec![5000u64];
        let mut max = 0;
        for round in 0..200u64 {
            packs.push(1 + round % 7);
            packs = sizes_after(&packs);
            assert!(geometric(&packs), "round {round}: {packs:?}");
            max = max.max(packs.len());
        }
        assert!(max <= 8, "{max} packs");
    }

    #[test]
    fn concatenated_packs_index() {
        // Two tiny packs with one blob each, concatenated, index to two objects.
        fn one_blob(content: &[u8]) -> Vec<u8> {
            let mut p = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
            crate::odb::writer::entry_header(
                crate::odb::writer::EntryKind::Blob,
                content.len() as u64,
                &mut p,
            );
            p.extend_from_slice(&crate::odb::deflate(content));
            let d = Sha1::digest(&p);
            p.extend_from_slice(&d);
            p
        }
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::default());
        let mut sizes = Vec::new();
        for (k, content) in [("a", &b"hello\n"[..]), ("b", b"world\n")] {
            let p = one_blob(content);
            sizes.push((k.to_string(), p.len() as u64));
            rt.block_on(store.put(k, Bytes::from(p), crate::store::PutMode::CreateOnly))
                .expect("put");
        }
        let read_all = |packs: Vec<(String, u64)>| {
            use std::io::Read;
            let mut c = Concatenation::new(rt.handle(), &store, packs, 2);
            let mut out = Vec::new();
            c.read_to_end(&mut out).expect("read");
            out
        };
        let pack = read_all(sizes.clone());
        let indexed = crate::odb::ingest::index_in_memory(&pack, 1 << 20).expect("index");
        assert_eq!(indexed.objects, 2);
        let dup = read_all(vec![sizes[0].clone(), sizes[0].clone()]);
        assert!(crate::odb::ingest::index_in_memory(&dup, 1 << 20).is_err());
        // A pack missing from the store: the stream fails.
        let mut c = Concatenation::new(rt.handle(), &store, vec![("nope".into(), 40)], 1);
        assert!(std::io::Read::read_to_end(&mut c, &mut Vec::new()).is_err());
    }
}
