//! The bucket's shared, mutable records of a repository, and where its objects lie (`Keys`):
//! the ref index (this module: one JSON object per repository naming its refs, HEAD, and the
//! packs that hold its objects; created with `If-None-Match: *`, replaced only through
//! [`update`] with `If-Match: <etag>`, and written only after every pack it names is complete
//! in the store), the [`lease`] of the instance working on it, and the [`catalog`] of every
//! repository (what the status page and the hooks read).

pub mod catalog;
pub mod lease;

use crate::store::{DynStore, ETag, PutMode, StoreError};
use bytes::Bytes;
use gix_hash::ObjectId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The ref index format this version writes and reads (`RefIndex::version`).
pub const FORMAT_VERSION: u32 = 1;

/// One ref of a ref index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefEntry {
    /// Object id the ref points to (hex in the stored form).
    #[serde(with = "hex_oid")]
    pub oid: ObjectId,
    /// For annotated tags: the object the tag chain finally points to.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_oid_opt")]
    pub peeled: Option<ObjectId>,
}

/// Object ids stored as hex strings (what `refs.json` has always held).
pub(crate) mod hex_oid {
    use gix_hash::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &ObjectId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&id.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectId, D::Error> {
        let hex = String::deserialize(d)?;
        ObjectId::from_hex(hex.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// [`hex_oid`] for an optional id.
pub(crate) mod hex_oid_opt {
    use gix_hash::ObjectId;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(id: &Option<ObjectId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(&id.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObjectId>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(hex) => ObjectId::from_hex(hex.as_bytes())
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// One pack a ref index names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// The objects are `pack-<name>.pack` and `pack-<name>.idx`: the pack checksum (hex), or
    /// for a pack streamed into the store before its checksum was known, a fresh unique name.
    pub name: String,
    /// Pack checksum (hex) when it is not the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Size of the `.pack` object in bytes.
    pub size: u64,
    /// Objects in the pack.
    pub objects: u32,
    /// End of the pack's commits, trees and tags (written before its blobs): loaded into the
    /// block cache when a process first opens the pack, so history walks do not miss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk_end: Option<u64>,
    /// `pack-<name>.bitmap` holds its reachability bitmaps (see `odb::bitmap`); written
    /// before this is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bitmap: bool,
}

impl PackEntry {
    /// The pack's trailer checksum (hex).
    pub fn checksum(&self) -> &str {
        self.checksum.as_deref().unwrap_or(&self.name)
    }
}

/// A pack the ref index no longer names (merged away by compaction), kept until `goprox gc`
/// deletes it once it has been retired for longer than the grace period (readers that loaded
/// the previous ref index may still be streaming from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// The pack's name in its keys, as in [`PackEntry::name`].
    pub name: String,
    /// Unix seconds when it stopped being named.
    pub at: u64,
}

/// A repository's ref index (`<root>/@git/refs.json`): its refs, HEAD and packs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefIndex {
    /// Format version ([`FORMAT_VERSION`]).
    pub version: u32,
    /// Incremented on every replacement.
    pub generation: u64,
    /// The repository's import-path root.
    pub root: String,
    /// Where it was fetched from.
    pub upstream: String,
    /// The directory in the repository that holds the import path root, as go-import
    /// discovery said (kept so that the module front answers the same while discovery is
    /// down); empty: the repository's root.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subdir: String,
    /// Unix seconds of the last successful fetch.
    pub fetched_at: u64,
    /// Target of the HEAD symref (e.g. `refs/heads/main`), possibly unborn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_symref: Option<String>,
    /// Object id of a detached HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "hex_oid_opt")]
    pub head_oid: Option<ObjectId>,
    /// Every ref by full name (`refs/heads/main`, `refs/tags/v1`); HEAD is not among them.
    pub refs: BTreeMap<String, RefEntry>,
    /// The packs that hold the repository's objects.
    pub packs: Vec<PackEntry>,
    /// Packs no longer named, waiting for `goprox gc`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Retired>,
    /// The packs together hold exactly the objects reachable from the refs (and a detached
    /// HEAD), each once: a clone that wants every ref is answered by streaming them whole.
    /// Set by a fill; kept by a refresh only when it just adds history (every ref it moves
    /// moves forward, none is deleted, nothing is fetched by sha); kept by compaction.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl RefIndex {
    /// What the catalog keeps of this version.
    pub(crate) fn noted(&self) -> crate::refs::catalog::Noted {
        let count = |p: &str| self.refs.keys().filter(|r| r.starts_with(p)).count() as u32;
        crate::refs::catalog::Noted {
            root: self.root.clone(),
            upstream: self.upstream.clone(),
            generation: self.generation,
            refs: self.refs.len() as u32,
            branches: count("refs/heads/"),
            tags: count("refs/tags/"),
            packs: self.packs.len() as u32,
            objects: self.packs.iter().map(|p| u64::from(p.objects)).sum(),
            bytes: self.packs.iter().map(|p| p.size).sum(),
            fetched_at: self.fetched_at,
        }
    }

    /// The object id HEAD resolves to, if any.
    pub fn head(&self) -> Option<ObjectId> {
        if let Some(t) = &self.head_symref {
            return self.refs.get(t).map(|r| r.oid);
        }
        self.head_oid
    }

    /// Every object a ref names (tags, not their peeled targets), and a detached HEAD.
    pub fn tips(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.refs.values().map(|r| r.oid).chain(self.head_oid)
    }
}

/// Store keys of a repository, all under `<root>/@git/` (`@` cannot occur in an import path,
/// so no repository's keys can collide with another's).
#[derive(Debug, Clone)]
pub struct Keys {
    base: String,
}

impl Keys {
    /// The keys of the repository with import-path root `root`.
    pub fn new(root: &str) -> Self {
        Keys {
            base: format!("{root}/@git"),
        }
    }
    /// The ref index.
    pub fn ref_index(&self) -> String {
        format!("{}/refs.json", self.base)
    }
    /// Pack `name` ([`PackEntry::name`]).
    pub fn pack(&self, name: &str) -> String {
        format!("{}/packs/pack-{name}.pack", self.base)
    }
    /// The index of pack `name`.
    pub fn idx(&self, name: &str) -> String {
        format!("{}/packs/pack-{name}.idx", self.base)
    }
    /// The reachability bitmaps of pack `name`.
    pub fn bitmap(&self, name: &str) -> String {
        format!("{}/packs/pack-{name}.bitmap", self.base)
    }
    /// A generated pack kept for the next identical request (see `odb::pack_cache`), made
    /// from the pack set with [`packset_fingerprint`] `fp`.
    pub fn pack_cache(&self, fp: &str, digest: &str) -> String {
        format!("{}/cache/{fp}-{digest}.pack", self.base)
    }
    /// The repository's lease object (see [`lease`]).
    pub fn lease(&self) -> String {
        format!("{}/lease.json", self.base)
    }
    /// The record of a fill whose pack `name` was completely received (see
    /// `fill::received`): what it was fetched for, so that any instance can finish it.
    pub fn received(&self, name: &str) -> String {
        format!("{}/received/{name}.json", self.base)
    }
    /// Prefix of the repository's received-fill records.
    pub fn received_prefix(&self) -> String {
        format!("{}/received/", self.base)
    }
    /// Prefix of every pack and index object of the repository.
    pub fn packs_prefix(&self) -> String {
        format!("{}/packs/", self.base)
    }
}

/// The marker between a repository root and its objects in every store key.
pub const GIT_DIR: &str = "/@git/";
/// How every ref index key ends.
pub const REF_INDEX_SUFFIX: &str = "/@git/refs.json";

/// What a store key is, as far as repositories go (the inverse of [`Keys`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyKind {
    /// `refs.json`
    RefIndex,
    /// `lease.json`
    Lease,
    /// `pack-<name>.pack`
    Pack(String),
    /// `pack-<name>.idx`
    Idx(String),
    /// `pack-<name>.bitmap`
    Bitmap(String),
    /// `cache/<fingerprint>-<digest>.pack`: a cached generated pack, with the fingerprint of
    /// the pack set it was made from.
    PackCache(String),
    /// `received/<name>.json`: the record of a received fill of pack `<name>`.
    Received(String),
    /// Anything else under `<root>/@git/`.
    Other,
}

/// Split a store key into its repository root and what it is; `None` for keys outside any
/// repository (no `/@git/`).
pub(crate) fn parse_key(key: &str) -> Option<(&str, KeyKind)> {
    // `@` never occurs in an import path, so the first `/@git/` ends the root.
    let i = key.find(GIT_DIR)?;
    let (root, rest) = (&key[..i], &key[i + GIT_DIR.len()..]);
    if root.is_empty() {
        return None;
    }
    let kind = match rest {
        "refs.json" => KeyKind::RefIndex,
        "lease.json" => KeyKind::Lease,
        _ => match rest.strip_prefix("packs/pack-") {
            Some(file) => {
                let named = |ext| {
                    file.strip_suffix(ext)
                        .filter(|n| n.len() == 40 && n.bytes().all(|c| c.is_ascii_hexdigit()))
                        .map(str::to_string)
                };
                if let Some(n) = named(".pack") {
                    KeyKind::Pack(n)
                } else if let Some(n) = named(".idx") {
                    KeyKind::Idx(n)
                } else if let Some(n) = named(".bitmap") {
                    KeyKind::Bitmap(n)
                } else {
                    KeyKind::Other
                }
            }
            None if rest.starts_with("received/") => match rest
                .strip_prefix("received/")
                .and_then(|f| f.strip_suffix(".json"))
            {
                Some(n) if n.len() == 40 && n.bytes().all(|c| c.is_ascii_hexdigit()) => {
                    KeyKind::Received(n.to_string())
                }
                _ => KeyKind::Other,
            },
            None => match rest
                .strip_prefix("cache/")
                .and_then(|f| f.strip_suffix(".pack"))
                .and_then(|f| f.split_once('-'))
            {
                Some((fp, digest))
                    if fp.len() == 16
                        && digest.len() == 64
                        && (fp.bytes().chain(digest.bytes())).all(|c| c.is_ascii_hexdigit()) =>
                {
                    KeyKind::PackCache(fp.to_string())
                }
                _ => KeyKind::Other,
            },
        },
    };
    Some((root, kind))
}

/// 16 hex digits naming a set of packs (by their names, in order): a cached generated pack
/// is only valid for the pack set it was made from.
pub fn packset_fingerprint<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for n in names {
        h.update(n.as_bytes());
        h.update(b"\n");
    }
    hex::encode(&h.finalize()[..8])
}

/// Why a ref index could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RefsError {
    /// The store failed (including [`StoreError::PreconditionFailed`] from [`store`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The ref index at the key (first) does not parse, has an unsupported version, or
    /// could not be serialized; the second string says why.
    #[error("corrupt ref index {0}: {1}")]
    Corrupt(String, String),
    /// [`update`] lost the race every time: the index kept changing under it.
    #[error("the ref index {0} kept changing")]
    Contended(String),
}

/// What an update does with the ref index it finds ([`update`]).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a return value, moved once
pub enum Change {
    /// Replace it with this one ([`update`] sets its generation: one more than the index it
    /// replaces, 1 for a repository's first).
    Write(RefIndex),
    /// Leave it as it is: the change is made already, or no longer applies to what is there.
    Keep,
}

/// The outcome of [`update`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a return value, moved once
pub enum Updated {
    /// The new index is stored; with its version tag.
    Written(RefIndex, ETag),
    /// The change kept the index it found (`None`: there was none).
    Kept(Option<(RefIndex, ETag)>),
}

/// Attempts of [`update`] when the ref index changes under it.
const UPDATE_ATTEMPTS: usize = 8;

/// The one way a repository's ref index is replaced. `change` maps the index found (or its
/// absence) to the new one, and the write is conditional on it (`If-Match` its version tag,
/// `If-None-Match: *` when there was none): another instance's write in between is never
/// overwritten. Losing that race reads the index again and asks `change` again (which decides
/// whether its change still applies, on top of the other one), at most [`UPDATE_ATTEMPTS`]
/// times. `seen` is the index as the caller last read it: the first attempt starts from it
/// without reading again.
pub async fn update(
    store: &DynStore,
    keys: &Keys,
    seen: Option<(RefIndex, ETag)>,
    mut change: impl FnMut(Option<&RefIndex>) -> Change,
) -> Result<Updated, RefsError> {
    let mut now = seen;
    for _ in 0..UPDATE_ATTEMPTS {
        let mut next = match change(now.as_ref().map(|(i, _)| i)) {
            Change::Keep => return Ok(Updated::Kept(now)),
            Change::Write(next) => next,
        };
        next.generation = now.as_ref().map_or(1, |(i, _)| i.generation + 1);
        match self::store(store, keys, &next, now.as_ref().map(|(_, e)| e)).await {
            Ok(etag) => return Ok(Updated::Written(next, etag)),
            Err(RefsError::Store(StoreError::PreconditionFailed)) => {
                now = load(store, keys).await?
            }
            Err(e) => return Err(e),
        }
    }
    Err(RefsError::Contended(keys.ref_index()))
}

/// Load a repository's ref index and its version tag.
pub async fn load(store: &DynStore, keys: &Keys) -> Result<Option<(RefIndex, ETag)>, RefsError> {
    let key = keys.ref_index();
    let Some(got) = store.get(&key).await? else {
        return Ok(None);
    };
    parse(keys, got).map(Some)
}

/// Parse a ref index read from the store.
pub fn parse(keys: &Keys, got: crate::store::GetOutput) -> Result<(RefIndex, ETag), RefsError> {
    let key = keys.ref_index();
    let idx: RefIndex = serde_json::from_slice(&got.data)
        .map_err(|e| RefsError::Corrupt(key.clone(), e.to_string()))?;
    if idx.version != FORMAT_VERSION {
        return Err(RefsError::Corrupt(
            key,
            format!("unsupported version {}", idx.version),
        ));
    }
    Ok((idx, got.etag))
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
    let etag = store
        .put(&keys.ref_index(), Bytes::from(body), mode)
        .await?;
    // The catalog follows the ref index (in the background; gc repairs a lost note).
    crate::refs::catalog::note_index(store, idx.noted());
    Ok(etag)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn empty(root: &str) -> RefIndex {
        RefIndex {
            version: FORMAT_VERSION,
            generation: 0,
            root: root.into(),
            upstream: "https://example.com/r".into(),
            subdir: String::new(),
            fetched_at: 0,
            head_symref: None,
            head_oid: None,
            refs: BTreeMap::new(),
            packs: Vec::new(),
            retired: Vec::new(),
            closed: false,
        }
    }

    /// The one ref-index write: generations counted, a stale start read again and the change
    /// asked again, another writer's change never lost, `Keep` reported with what is there.
    #[tokio::test]
    async fn update_is_a_compare_and_swap_with_retries() {
        let store: DynStore = std::sync::Arc::new(crate::store::memory::MemoryStore::new());
        let keys = Keys::new("example.com/r");
        let first = update(&store, &keys, None, |now| {
            assert!(now.is_none());
            Change::Write(empty("example.com/r"))
        })
        .await
        .expect("create");
        let Updated::Written(one, one_etag) = first else {
            panic!("not written")
        };
        assert_eq!(one.generation, 1);
        // Another writer moves it on; a change that started from generation 1 is asked again
        // with generation 2 and adds to it.
        let mut theirs = one.clone();
        theirs.closed = true;
        let Updated::Written(two, _) =
            update(&store, &keys, Some((one.clone(), one_etag.clone())), |_| {
                Change::Write(theirs.clone())
            })
            .await
            .expect("theirs")
        else {
            panic!("not written")
        };
        assert_eq!(two.generation, 2);
        let mut asked = Vec::new();
        let ours = update(&store, &keys, Some((one.clone(), one_etag)), |now| {
            let now = now.expect("index");
            asked.push(now.generation);
            let mut next = now.clone();
            next.head_symref = Some("refs/heads/main".into());
            Change::Write(next)
        })
        .await
        .expect("ours");
        assert_eq!(asked, [1, 2]);
        let Updated::Written(three, etag) = ours else {
            panic!("not written")
        };
        assert_eq!(three.generation, 3);
        assert!(three.closed, "the other writer's change was lost");
        assert_eq!(
            load(&store, &keys).await.expect("load").map(|x| x.1),
            Some(etag)
        );
        // Keep: nothing written, the current index returned.
        match update(&store, &keys, None, |_| Change::Keep)
            .await
            .expect("keep")
        {
            Updated::Kept(None) => {}
            other => panic!("{other:?}"),
        }
        let stale = Some((one, ETag("\"stale\"".into())));
        match update(&store, &keys, stale, |now| match now {
            Some(i) if i.generation == 1 => Change::Write(i.clone()),
            _ => Change::Keep,
        })
        .await
        .expect("stale")
        {
            Updated::Kept(Some((i, _))) => assert_eq!(i.generation, 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_and_their_inverse() {
        let k = Keys::new("example.com/a/b");
        assert_eq!(k.lease(), "example.com/a/b/@git/lease.json");
        assert_eq!(k.packs_prefix(), "example.com/a/b/@git/packs/");
        assert!(k.ref_index().ends_with(REF_INDEX_SUFFIX));
        let root = "example.com/a/b";
        assert_eq!(parse_key(&k.ref_index()), Some((root, KeyKind::RefIndex)));
        let fp = packset_fingerprint([SHA]);
        assert_eq!(
            parse_key(&k.pack_cache(&fp, &"ab".repeat(32))),
            Some((root, KeyKind::PackCache(fp.clone())))
        );
        assert_eq!(
            parse_key(&format!("{root}/@git/cache/{fp}-xyz.pack")),
            Some((root, KeyKind::Other))
        );
        assert_eq!(parse_key(&k.lease()), Some((root, KeyKind::Lease)));
        assert_eq!(
            parse_key(&k.received(SHA)),
            Some((root, KeyKind::Received(SHA.into())))
        );
        assert_eq!(
            parse_key(&format!("{root}/@git/received/x.json")),
            Some((root, KeyKind::Other))
        );
        assert_eq!(
            parse_key(&k.pack(SHA)),
            Some((root, KeyKind::Pack(SHA.into())))
        );
        assert_eq!(
            parse_key(&k.idx(SHA)),
            Some((root, KeyKind::Idx(SHA.into())))
        );
        assert_eq!(
            parse_key("example.com/a/@git/packs/pack-xyz.pack"),
            Some(("example.com/a", KeyKind::Other))
        );
        assert_eq!(
            parse_key("example.com/a/@git/packs/.tmp"),
            Some(("example.com/a", KeyKind::Other))
        );
        assert_eq!(parse_key(".goprox/probe/abc"), None);
        assert_eq!(parse_key("@git/refs.json"), None);
    }

    #[test]
    fn retired_is_optional_in_json() {
        let mut idx = RefIndex {
            version: FORMAT_VERSION,
            generation: 1,
            root: "example.com/x".into(),
            upstream: "http://127.0.0.1/x".into(),
            subdir: String::new(),
            fetched_at: 5,
            head_symref: None,
            head_oid: None,
            refs: BTreeMap::new(),
            packs: vec![],
            retired: vec![],
            closed: false,
        };
        let json = serde_json::to_string(&idx).unwrap();
        assert!(!json.contains("retired"), "{json}");
        assert_eq!(serde_json::from_str::<RefIndex>(&json).unwrap(), idx);
        idx.retired.push(Retired {
            name: SHA.into(),
            at: 7,
        });
        let json = serde_json::to_string(&idx).unwrap();
        assert!(json.contains(r#""retired":[{"name":""#), "{json}");
        assert_eq!(serde_json::from_str::<RefIndex>(&json).unwrap(), idx);
    }
}
