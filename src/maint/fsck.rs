//! `goprox fsck [ROOT...]`: check that ref indexes are fully backed by the store.
//!
//! For every ref index (or the named repositories): each pack and index it names exists; the
//! pack's size is the recorded size; its header is a pack with the recorded object count and its
//! trailer checksum is its recorded checksum (its name, unless the pack was streamed in under a
//! fresh name); the index parses, is intact (its own checksum), belongs to the
//! pack (the pack checksum in its trailer) and has the recorded object count; every ref's
//! object (and peeled object) and a detached HEAD are in one of the indexes; the HEAD symref
//! names an existing ref (unless the repository has no refs at all, an unborn HEAD).

use crate::refs::{self, Keys, RefIndex, RefsError};
use crate::store::{DynStore, StoreError};
use gix_hash::ObjectId;
use sha1::{Digest, Sha1};

/// Result of a check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsckReport {
    /// Repositories checked.
    pub repositories: usize,
    /// One line per problem: `<root>: <problem>`.
    pub problems: Vec<String>,
}

impl FsckReport {
    /// No problems found.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Check the named repository roots, or every repository with a ref index if `roots` is empty.
/// Fails only when the store cannot be listed; everything about one repository (unreadable
/// objects included) is a problem line.
pub async fn check(store: &DynStore, roots: &[String]) -> Result<FsckReport, StoreError> {
    let roots = if roots.is_empty() {
        super::repository_roots(store).await?
    } else {
        roots
            .iter()
            .map(|r| r.trim_matches('/').to_string())
            .collect()
    };
    let mut report = FsckReport::default();
    for root in &roots {
        report.repositories += 1;
        let problems = match crate::path::validate(root) {
            Err(e) => vec![e.to_string()],
            Ok(()) => check_repo(store, root).await,
        };
        report
            .problems
            .extend(problems.into_iter().map(|p| format!("{root}: {p}")));
    }
    Ok(report)
}

/// The problems of one repository (empty when it is sound).
pub async fn check_repo(store: &DynStore, root: &str) -> Vec<String> {
    let keys = Keys::new(root);
    let idx = match refs::load(store, &keys).await {
        Ok(Some((idx, _))) => idx,
        Ok(None) => return vec![format!("no ref index ({})", keys.ref_index())],
        Err(RefsError::Corrupt(_, e)) => return vec![format!("corrupt ref index: {e}")],
        Err(e @ (RefsError::Store(_) | RefsError::Contended(_))) => {
            return vec![format!("cannot read the ref index: {e}")];
        }
    };
    let mut problems = Vec::new();
    if idx.root != root {
        problems.push(format!("ref index is for {:?}", idx.root));
    }
    let mut indexes = Vec::new();
    for pack in &idx.packs {
        match check_pack(store, &keys, pack).await {
            Ok((index, mut p)) => {
                problems.append(&mut p);
                if let Some(index) = index {
                    indexes.push(index);
                }
            }
            Err(e) => problems.push(format!("pack {}: {e}", pack.name)),
        }
    }
    // Reachability is only meaningful when every index could be read.
    if indexes.len() == idx.packs.len() {
        problems.extend(check_refs(&idx, &indexes));
    }
    problems
}

type Index = gix_pack::index::File<Vec<u8>>;

/// Checks of one pack and its index; the parsed index when it could be read.
// Long because it is a flat list of checks (pack header, trailer, index checksum, index
// contents, bitmaps), each adding its own problem line.
async fn check_pack(
    store: &DynStore,
    keys: &Keys,
    pack: &refs::PackEntry,
) -> Result<(Option<Index>, Vec<String>), StoreError> {
    let name = &pack.name;
    let pack_key = keys.pack(name);
    let idx_key = keys.idx(name);
    let mut problems = Vec::new();
    match store.head(&pack_key).await? {
        None => problems.push(format!("pack {name} is missing ({pack_key})")),
        Some(size) if size != pack.size => problems.push(format!(
            "pack {name} is {size} bytes, the ref index says {}",
            pack.size
        )),
        Some(size) if size < 32 => problems.push(format!(
            "pack {name} is too small to be a pack ({size} bytes)"
        )),
        Some(size) => {
            let header = store.get_range(&pack_key, 0, 12).await?;
            if header.len() != 12
                || &header[..4] != b"PACK"
                || !matches!(
                    u32::from_be_bytes([header[4], header[5], header[6], header[7]]),
                    2 | 3
                )
            {
                problems.push(format!("pack {name} does not start with a pack header"));
            } else {
                let count = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
                if count != pack.objects {
                    problems.push(format!(
                        "pack {name} holds {count} objects, the ref index says {}",
                        pack.objects
                    ));
                }
            }
            let trailer = store.get_range(&pack_key, size - 20, 20).await?;
            if hex::encode(&trailer) != pack.checksum() {
                problems.push(format!(
                    "pack {name} has trailer checksum {}",
                    hex::encode(&trailer)
                ));
            }
        }
    }
    let Some(got) = store.get(&idx_key).await? else {
        problems.push(format!("index of pack {name} is missing ({idx_key})"));
        return Ok((None, problems));
    };
    let data = got.data.to_vec();
    if data.len() < 40 || Sha1::digest(&data[..data.len() - 20])[..] != data[data.len() - 20..] {
        problems.push(format!(
            "index of pack {name} is damaged (its checksum does not match)"
        ));
        return Ok((None, problems));
    }
    let index =
        match gix_pack::index::File::from_data(data, Default::default(), gix_hash::Kind::Sha1) {
            Ok(i) => i,
            Err(e) => {
                problems.push(format!("index of pack {name} does not parse: {e}"));
                return Ok((None, problems));
            }
        };
    let belongs_to = index.pack_checksum().to_hex().to_string();
    if belongs_to != pack.checksum() {
        problems.push(format!(
            "index of pack {name} is the index of pack {belongs_to}"
        ));
    }
    if index.num_objects() != pack.objects {
        problems.push(format!(
            "index of pack {name} lists {} objects, the ref index says {}",
            index.num_objects(),
            pack.objects
        ));
    }
    if pack.bitmap {
        let key = keys.bitmap(name);
        match store.get(&key).await? {
            None => problems.push(format!("bitmaps of pack {name} are missing ({key})")),
            Some(got) => {
                let checksum = <[u8; 20]>::try_from(index.pack_checksum().as_bytes())
                    .map_err(|_| "not a SHA-1 pack".to_string());
                if let Err(e) = checksum.and_then(|c| {
                    crate::odb::bitmap::Bitmaps::parse(&got.data, &c, index.num_objects())
                }) {
                    problems.push(format!("bitmaps of pack {name} are unusable: {e}"));
                }
            }
        }
    }
    Ok((Some(index), problems))
}

fn check_refs(idx: &RefIndex, indexes: &[Index]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut check = |what: String, oid: &ObjectId| {
        if !indexes.iter().any(|i| i.lookup(oid).is_some()) {
            problems.push(format!("{what} points at {oid}, which no pack holds"));
        }
    };
    for (name, r) in &idx.refs {
        check(format!("ref {name}"), &r.oid);
        if let Some(p) = &r.peeled {
            check(format!("ref {name} (peeled)"), p);
        }
    }
    if let Some(oid) = &idx.head_oid {
        check("detached HEAD".to_string(), oid);
    }
    if let Some(target) = &idx.head_symref
        && !idx.refs.is_empty()
        && !idx.refs.contains_key(target)
    {
        problems.push(format!("HEAD points at {target}, which is not a ref"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::{PackEntry, RefEntry};
    use crate::store::PutMode;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// A real one-object pack (a blob) and its index (made by the fill's indexer):
    /// (name, pack, idx, blob id).
    fn blob_pack(content: &[u8]) -> (String, Vec<u8>, Vec<u8>, String) {
        use std::io::Write;
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        crate::odb::writer::entry_header(
            crate::odb::writer::EntryKind::Blob,
            content.len() as u64,
            &mut pack,
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(content).unwrap();
        pack.extend(z.finish().unwrap());
        let sum = Sha1::digest(&pack);
        pack.extend_from_slice(&sum);
        let indexed = crate::fill::fetch::index_pack(&pack).unwrap();
        let mut h = Sha1::new();
        h.update(format!("blob {}\0", content.len()));
        h.update(content);
        let oid = hex::encode(h.finalize());
        (indexed.name, pack, indexed.idx, oid)
    }

    async fn sound_repo(store: &DynStore, root: &str) -> (RefIndex, String) {
        let (name, pack, idx, oid) = blob_pack(b"hello fsck\n");
        let keys = Keys::new(root);
        let size = pack.len() as u64;
        store
            .put(&keys.pack(&name), Bytes::from(pack), PutMode::CreateOnly)
            .await
            .unwrap();
        store
            .put(&keys.idx(&name), Bytes::from(idx), PutMode::CreateOnly)
            .await
            .unwrap();
        let mut refs_map = BTreeMap::new();
        refs_map.insert(
            "refs/tags/blob".to_string(),
            RefEntry {
                oid: ObjectId::from_hex(oid.as_bytes()).unwrap(),
                peeled: None,
            },
        );
        let index = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 1,
            root: root.into(),
            upstream: "http://127.0.0.1/x".into(),
            subdir: String::new(),
            fetched_at: 0,
            head_symref: Some("refs/heads/main".into()),
            head_oid: None,
            refs: refs_map,
            packs: vec![PackEntry {
                checksum: None,
                name: name.clone(),
                size,
                objects: 1,
                walk_end: None,
                bitmap: false,
            }],
            retired: vec![],
            closed: false,
        };
        refs::store(store, &keys, &index, None).await.unwrap();
        (index, name)
    }

    #[tokio::test]
    async fn sound_and_broken_repositories() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let root = "example.com/r";
        let keys = Keys::new(root);
        let (index, name) = sound_repo(&store, root).await;
        // HEAD -> refs/heads/main, which does not exist while refs/tags/blob does.
        let report = check(&store, &[]).await.unwrap();
        assert_eq!(report.repositories, 1);
        assert_eq!(
            report.problems,
            vec![format!(
                "{root}: HEAD points at refs/heads/main, which is not a ref"
            )]
        );
        let mut fixed = index.clone();
        fixed.head_symref = Some("refs/tags/blob".into());
        let etag = refs::load(&store, &keys).await.unwrap().unwrap().1;
        refs::store(&store, &keys, &fixed, Some(&etag))
            .await
            .unwrap();
        let report = check(&store, &[]).await.unwrap();
        assert!(report.ok(), "{:?}", report.problems);

        // A ref to an object no pack holds; a wrong recorded size and count.
        let mut bad = fixed.clone();
        bad.refs.insert(
            "refs/heads/ghost".into(),
            RefEntry {
                oid: ObjectId::from_hex(b"1111111111111111111111111111111111111111").unwrap(),
                peeled: None,
            },
        );
        bad.packs[0].size += 1;
        bad.packs[0].objects = 2;
        let etag = refs::load(&store, &keys).await.unwrap().unwrap().1;
        refs::store(&store, &keys, &bad, Some(&etag)).await.unwrap();
        let problems = check(&store, &[root.to_string()]).await.unwrap().problems;
        let want_size = format!("{root}: pack {name} is ");
        assert!(
            problems.iter().any(|p| p.starts_with(&want_size)),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("lists 1 objects, the ref index says 2")),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("ref refs/heads/ghost points at 1111")),
            "{problems:#?}"
        );

        // The pack object disappears.
        let etag = refs::load(&store, &keys).await.unwrap().unwrap().1;
        refs::store(&store, &keys, &fixed, Some(&etag))
            .await
            .unwrap();
        store.delete(&keys.pack(&name)).await.unwrap();
        let problems = check(&store, &[]).await.unwrap().problems;
        assert_eq!(
            problems,
            vec![format!(
                "{root}: pack {name} is missing ({})",
                keys.pack(&name)
            )]
        );

        // A damaged index.
        let (_, pack, mut idx, _) = blob_pack(b"hello fsck\n");
        store
            .put(&keys.pack(&name), Bytes::from(pack), PutMode::Overwrite)
            .await
            .unwrap();
        let mid = idx.len() / 2;
        idx[mid] ^= 0xff;
        store
            .put(&keys.idx(&name), Bytes::from(idx), PutMode::Overwrite)
            .await
            .unwrap();
        let problems = check(&store, &[]).await.unwrap().problems;
        assert_eq!(
            problems,
            vec![format!(
                "{root}: index of pack {name} is damaged (its checksum does not match)"
            )]
        );

        // Named repositories that have no ref index, or are not import paths.
        let problems = check(&store, &["example.com/none".into(), "../x".into()])
            .await
            .unwrap()
            .problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("example.com/none: no ref index"));
        assert!(problems[1].starts_with("../x: invalid import path"));
    }

    #[tokio::test]
    async fn an_index_of_another_pack_is_reported() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let root = "example.com/r";
        let keys = Keys::new(root);
        let (_, name) = sound_repo(&store, root).await;
        let (other, _, other_idx, _) = blob_pack(b"something else\n");
        assert_ne!(other, name);
        store
            .put(&keys.idx(&name), Bytes::from(other_idx), PutMode::Overwrite)
            .await
            .unwrap();
        let problems = check(&store, &[]).await.unwrap().problems;
        assert!(
            problems
                .iter()
                .any(|p| *p == format!("{root}: index of pack {name} is the index of pack {other}")),
            "{problems:#?}"
        );
    }
}
