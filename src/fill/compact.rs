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

use super::{FillError, fetch, now, put_immutable};
use crate::refs::{self, Keys, PackEntry, RefIndex, Retired};
use crate::store::{DynStore, ETag, StoreError};
use bytes::Bytes;
use sha1::{Digest, Sha1};

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

/// Concatenate self-contained packs into one (header, every entry of every pack, trailer).
/// Returns the pack and its total object count.
pub fn concatenate(packs: &[Bytes]) -> Result<(Vec<u8>, u32), String> {
    let mut count: u32 = 0;
    let mut body = 0usize;
    for p in packs {
        if p.len() < 32 || &p[..4] != b"PACK" {
            return Err("not a pack".into());
        }
        let version = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        if version != 2 && version != 3 {
            return Err(format!("unsupported pack version {version}"));
        }
        let n = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
        count = count
            .checked_add(n)
            .ok_or_else(|| "too many objects".to_string())?;
        body += p.len() - 32;
    }
    let mut out = Vec::with_capacity(12 + body + 20);
    out.extend_from_slice(b"PACK");
    out.extend_from_slice(&2u32.to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    for p in packs {
        out.extend_from_slice(&p[12..p.len() - 20]);
    }
    let digest = Sha1::digest(&out);
    out.extend_from_slice(&digest);
    Ok((out, count))
}

/// Merge the packs [`plan`] picks, publish the new ref index (`If-Match: etag`) and return it;
/// `None` when there is nothing to merge, the packs cannot be merged verbatim (an object in two
/// of them), or another writer replaced the ref index first.
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
    let mut datas = Vec::with_capacity(pick.len());
    for &i in &pick {
        let key = keys.pack(&index.packs[i].name);
        let got = store
            .get(&key)
            .await
            .map_err(|e| FillError::Store(key.clone(), e))?
            .ok_or_else(|| FillError::Store(key.clone(), StoreError::NotFound(key.clone())))?;
        datas.push(got.data);
    }
    let expected: u64 = pick.iter().map(|&i| weights[i]).sum();
    let merged = tokio::task::spawn_blocking(move || {
        let (pack, count) = concatenate(&datas)?;
        let indexed = fetch::index_pack(&pack)?;
        if u64::from(indexed.objects) != u64::from(count) || !unique_ids(&indexed.idx) {
            return Err("an object is in more than one of the packs".to_string());
        }
        Ok((pack, indexed))
    })
    .await
    .map_err(|e| FillError::Internal(e.to_string()))?;
    let (pack, indexed) = match merged {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(root = %index.root, error = %e, "not compacting");
            return Ok(None);
        }
    };
    if u64::from(indexed.objects) != expected {
        tracing::warn!(root = %index.root, "pack object counts disagree with the ref index; not compacting");
        return Ok(None);
    }
    let size = pack.len() as u64;
    put_immutable(store, &keys.pack(&indexed.name), Bytes::from(pack)).await?;
    put_immutable(store, &keys.idx(&indexed.name), Bytes::from(indexed.idx)).await?;
    let at = now();
    let mut packs: Vec<PackEntry> = Vec::with_capacity(index.packs.len() - pick.len() + 1);
    let mut retired = index.retired.clone();
    for (i, p) in index.packs.iter().enumerate() {
        if pick.contains(&i) {
            if p.name != indexed.name {
                retired.push(Retired {
                    name: p.name.clone(),
                    at,
                });
            }
        } else {
            packs.push(p.clone());
        }
    }
    packs.push(PackEntry {
        name: indexed.name.clone(),
        size,
        objects: indexed.objects,
        walk_end: Some(indexed.walk_end),
    });
    let next = RefIndex {
        generation: index.generation + 1,
        packs,
        retired,
        ..index.clone()
    };
    match refs::store(store, keys, &next, Some(etag)).await {
        Ok(etag) => {
            crate::metrics::COMPACTIONS.inc();
            tracing::info!(
                root = %index.root,
                merged = pick.len(),
                objects = indexed.objects,
                packs = next.packs.len(),
                "compacted packs"
            );
            Ok(Some((next, etag)))
        }
        Err(refs::RefsError::Store(StoreError::PreconditionFailed)) => {
            tracing::info!(root = %index.root, "ref index replaced during compaction; the merged pack is left for gc");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether the object ids of a v2 idx are strictly increasing (no object twice).
fn unique_ids(idx: &[u8]) -> bool {
    if idx.len() < 8 + 1024 {
        return false;
    }
    let n = u32::from_be_bytes([idx[1028], idx[1029], idx[1030], idx[1031]]) as usize;
    let ids = &idx[1032..];
    if ids.len() < n * 20 {
        return false;
    }
    (1..n).all(|i| ids[(i - 1) * 20..i * 20] < ids[i * 20..(i + 1) * 20])
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
            crate::odb::writer::entry_header(3, content.len() as u64, &mut p);
            p.extend_from_slice(&crate::odb::deflate(content));
            let d = Sha1::digest(&p);
            p.extend_from_slice(&d);
            p
        }
        let a = Bytes::from(one_blob(b"hello\n"));
        let b = Bytes::from(one_blob(b"world\n"));
        let (pack, n) = concatenate(&[a.clone(), b]).expect("concatenate");
        assert_eq!(n, 2);
        let indexed = fetch::index_pack(&pack).expect("index");
        assert_eq!(indexed.objects, 2);
        assert!(unique_ids(&indexed.idx));
        let (dup, _) = concatenate(&[a.clone(), a]).expect("concatenate");
        let indexed = fetch::index_pack(&dup);
        assert!(indexed.is_err() || !unique_ids(&indexed.expect("indexed").idx));
    }
}
