//! The catalog: one line per stored repository (its upstream, refs, packs, size, and how its
//! last look upstream went), so that the status page and the push hooks never list the bucket.
//!
//! It lives in [`SHARDS`] objects `.goprox/catalog/<nn>.json`, a repository in the shard its
//! root hashes to. A shard is replaced with `If-Match` (created with `If-None-Match: *`), so
//! any number of instances update it safely. The ref index stays the truth: every ref index
//! write (`refs::store`) notes the new version here afterwards, in the background
//! ([`note_index`]); a note lost to a crash is repaired by the next write of that repository
//! or by `goprox gc` ([`reconcile`]). An entry is only replaced by a newer generation, so
//! notes arriving out of order do no harm.

use crate::store::{DynStore, ETag, PutMode, Revalidated, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the shards live (outside every repository: `.goprox/` is never an import path).
pub const PREFIX: &str = ".goprox/catalog/";
/// How many shards: a page view revalidates each (a conditional GET), and concurrent writers
/// of different repositories rarely meet in one.
pub const SHARDS: usize = 64;
const FORMAT_VERSION: u32 = 1;
/// Compare-and-swap attempts for one update before it is given up (the next write of the
/// repository, or `goprox gc`, puts it right).
const ATTEMPTS: u32 = 12;
/// An unchanged outcome ("still up to date") is written at most this often per repository
/// and process: every look upstream is not worth a bucket write.
const OUTCOME_EVERY: Duration = Duration::from_secs(600);
/// Longest error text kept.
const MAX_ERROR: usize = 300;

/// How the last look upstream went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Never looked at since the catalog knew it.
    #[default]
    Unknown,
    /// Filled for the first time.
    Filled,
    /// Refreshed: something changed.
    Updated,
    /// Looked upstream: nothing changed.
    Unchanged,
    /// The look failed (the error says why); the stored state is served.
    Failed,
}

impl Outcome {
    /// The name used in JSON and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Unknown => "unknown",
            Outcome::Filled => "filled",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Failed => "failed",
        }
    }
}

/// One repository, as the catalog knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Entry {
    /// The upstream URL the repository is fetched from.
    pub upstream: String,
    /// The ref index generation this entry was taken from.
    pub generation: u64,
    /// Refs in the ref index.
    pub refs: u32,
    /// Refs under `refs/heads/`.
    pub branches: u32,
    /// Refs under `refs/tags/`.
    pub tags: u32,
    /// Packs the ref index names.
    pub packs: u32,
    /// Objects in those packs.
    pub objects: u64,
    /// Bytes of the packs the ref index names.
    pub bytes: u64,
    /// Unix seconds of the last fetch that changed the repository.
    pub fetched_at: u64,
    /// Unix seconds of the last look upstream (any outcome; unchanged ones are noted at most
    /// every ten minutes).
    #[serde(default)]
    pub checked_at: u64,
    /// How the last look upstream went.
    #[serde(default)]
    pub outcome: Outcome,
    /// The last failed look's error (a line a client could have seen: no store internals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix seconds of that error.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub error_at: u64,
    /// Module versions whose zip the module proxy has built and recorded.
    #[serde(default)]
    pub versions: u32,
    /// Bytes of those zips.
    #[serde(default)]
    pub zip_bytes: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the catalog keeps of one version of a repository's ref index (made by
/// `RefIndex::noted`; the catalog does not read ref indexes itself). The counts mean what the
/// [`Entry`] fields of the same names mean.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Noted {
    pub root: String,
    pub upstream: String,
    pub generation: u64,
    pub refs: u32,
    pub branches: u32,
    pub tags: u32,
    pub packs: u32,
    pub objects: u64,
    pub bytes: u64,
    pub fetched_at: u64,
}

impl Entry {
    /// Take the counts of a ref index (when it is not older than what the entry has).
    fn apply(&mut self, idx: &Noted) -> bool {
        if idx.generation < self.generation && !self.upstream.is_empty() {
            return false;
        }
        let next = Entry {
            upstream: idx.upstream.clone(),
            generation: idx.generation,
            refs: idx.refs,
            branches: idx.branches,
            tags: idx.tags,
            packs: idx.packs,
            objects: idx.objects,
            bytes: idx.bytes,
            fetched_at: idx.fetched_at,
            checked_at: self.checked_at.max(idx.fetched_at),
            outcome: self.outcome,
            error: self.error.clone(),
            error_at: self.error_at,
            versions: self.versions,
            zip_bytes: self.zip_bytes,
        };
        let changed = next != *self;
        *self = next;
        changed
    }
}

/// One shard object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shard {
    /// Format version of the shard (1).
    pub version: u32,
    /// Entries by repository root.
    pub repos: BTreeMap<String, Entry>,
}

/// The shard a repository belongs to.
pub fn shard_of(root: &str) -> usize {
    use sha2::Digest;
    let h = sha2::Sha256::digest(root.as_bytes());
    usize::from(h[0]) % SHARDS
}

/// The key of shard `n`.
pub fn shard_key(n: usize) -> String {
    format!("{PREFIX}{n:02x}.json")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse(data: &[u8]) -> Result<Shard, StoreError> {
    let shard: Shard = serde_json::from_slice(data)
        .map_err(|e| StoreError::Backend(format!("corrupt catalog shard: {e}")))?;
    if shard.version != FORMAT_VERSION {
        return Err(StoreError::Backend(format!(
            "catalog shard of unsupported version {}",
            shard.version
        )));
    }
    Ok(shard)
}

/// Read shard `n`, change it with `f` (which says whether it changed anything), and write it
/// back with compare-and-swap, again from a fresh read whenever another writer got there
/// first.
pub async fn update(
    store: &DynStore,
    n: usize,
    mut f: impl FnMut(&mut BTreeMap<String, Entry>) -> bool,
) -> Result<(), StoreError> {
    let key = shard_key(n);
    for attempt in 0..ATTEMPTS {
        let (mut shard, etag) = match store.get(&key).await? {
            Some(got) => (parse(&got.data)?, Some(got.etag)),
            None => (
                Shard {
                    version: FORMAT_VERSION,
                    repos: BTreeMap::new(),
                },
                None,
            ),
        };
        if !f(&mut shard.repos) {
            return Ok(());
        }
        let body = serde_json::to_vec(&shard)
            .map_err(|e| StoreError::Backend(format!("catalog shard: {e}")))?;
        let mode = match etag {
            Some(e) => PutMode::IfMatch(e),
            None => PutMode::CreateOnly,
        };
        match store.put(&key, Bytes::from(body), mode).await {
            Ok(_) => return Ok(()),
            Err(StoreError::PreconditionFailed) => {
                // Another writer: back off a little (with jitter) and start from its version.
                let base = 10u64 << attempt.min(6);
                tokio::time::sleep(Duration::from_millis(base + random() % base)).await;
            }
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::PreconditionFailed)
}

/// A number no two callers are likely to share (for backoff jitter).
fn random() -> u64 {
    use sha2::Digest;
    let h = sha2::Sha256::digest(crate::store::probe::unique_token("jitter", 8).as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&h[..8]);
    u64::from_le_bytes(b)
}

/// What this process last wrote of each repository's outcome, and when (so an unchanged look
/// is not a write every time).
static OUTCOMES: Mutex<Option<HashMap<String, NotedOutcome>>> = Mutex::new(None);

/// An outcome as last noted: what, its error, when.
type NotedOutcome = (Outcome, Option<String>, Instant);

/// Run a catalog update in the background (when there is a runtime to run it on).
fn spawn(
    store: &DynStore,
    n: usize,
    f: impl FnMut(&mut BTreeMap<String, Entry>) -> bool + Send + 'static,
) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let store = store.clone();
    crate::background::spawn(&rt, async move {
        if let Err(e) = update(&store, n, f).await {
            tracing::warn!(shard = n, error = %e, "catalog not updated (repaired by the next write or by gc)");
        }
    });
}

/// A ref index was written: note its counts in the catalog (in the background).
pub(crate) fn note_index(store: &DynStore, idx: Noted) {
    spawn(store, shard_of(&idx.root), move |repos| {
        repos.entry(idx.root.clone()).or_default().apply(&idx)
    });
}

/// A look upstream ended with `outcome` (and `error` when it failed): note it for a stored
/// repository (an unknown one is not added). Unchanged repeats are noted at most every ten
/// minutes per process.
pub fn note_outcome(store: &DynStore, root: &str, outcome: Outcome, error: Option<&str>) {
    let error = error.map(|e| {
        let mut e = e.replace(['\n', '\r'], " ");
        if e.len() > MAX_ERROR {
            let mut cut = MAX_ERROR;
            while !e.is_char_boundary(cut) {
                cut -= 1;
            }
            e.truncate(cut);
            e.push('…');
        }
        e
    });
    {
        let mut g = OUTCOMES.lock().unwrap_or_else(|e| e.into_inner());
        let m = g.get_or_insert_with(HashMap::new);
        if let Some((o, e, at)) = m.get(root)
            && *o == outcome
            && *e == error
            && at.elapsed() < OUTCOME_EVERY
        {
            return;
        }
        if m.len() > 100_000 {
            m.retain(|_, (_, _, at)| at.elapsed() < OUTCOME_EVERY);
        }
        m.insert(root.to_string(), (outcome, error.clone(), Instant::now()));
    }
    let root = root.to_string();
    let at = now();
    spawn(store, shard_of(&root), move |repos| {
        let Some(e) = repos.get_mut(&root) else {
            return false;
        };
        e.checked_at = at;
        e.outcome = outcome;
        if let Some(err) = &error {
            e.error = Some(err.clone());
            e.error_at = at;
        }
        true
    });
}

/// The module proxy recorded the zip of one more version of `root` (`size` bytes).
pub fn note_zip(store: &DynStore, root: &str, size: u64) {
    let root = root.to_string();
    spawn(store, shard_of(&root), move |repos| {
        let Some(e) = repos.get_mut(&root) else {
            return false;
        };
        e.versions += 1;
        e.zip_bytes += size;
        true
    });
}

/// Make the catalog agree with the ref indexes `goprox gc` read (`indexes`, every repository
/// it found): their entries are set (unless a newer generation is already noted), and an
/// entry whose repository gc did not find is removed when its ref index is really gone.
/// Returns (entries written or changed, entries removed).
pub(crate) async fn reconcile(
    store: &DynStore,
    indexes: &[Noted],
    zips: &HashMap<String, (u32, u64)>,
    ref_index_key: impl Fn(&str) -> String,
) -> Result<(u32, u32), StoreError> {
    let mut by_shard: Vec<Vec<&Noted>> = vec![Vec::new(); SHARDS];
    for idx in indexes {
        by_shard[shard_of(&idx.root)].push(idx);
    }
    let (mut set, mut removed) = (0u32, 0u32);
    for (n, idxs) in by_shard.iter().enumerate() {
        // Entries gc did not find: are their ref indexes gone?
        let current = match store.get(&shard_key(n)).await? {
            Some(got) => parse(&got.data)?.repos,
            None => BTreeMap::new(),
        };
        let mut gone = Vec::new();
        for root in current.keys() {
            if idxs.iter().any(|i| &i.root == root) {
                continue;
            }
            let key = ref_index_key(root);
            if store.head(&key).await?.is_none() {
                gone.push(root.clone());
            }
        }
        let (mut s, mut r) = (0u32, 0u32);
        update(store, n, |repos| {
            (s, r) = (0, 0);
            for idx in idxs {
                let e = repos.entry(idx.root.clone()).or_default();
                let mut changed = e.apply(idx);
                let (versions, bytes) = zips.get(&idx.root).copied().unwrap_or_default();
                if (e.versions, e.zip_bytes) != (versions, bytes) {
                    (e.versions, e.zip_bytes) = (versions, bytes);
                    changed = true;
                }
                if changed {
                    s += 1;
                }
            }
            for root in &gone {
                if repos.remove(root).is_some() {
                    r += 1;
                }
            }
            s + r > 0
        })
        .await?;
        set += s;
        removed += r;
    }
    Ok((set, removed))
}

/// The catalog as this process last read it: each shard revalidated (a conditional GET) when
/// it is older than `max_age`, so a page view costs at most [`SHARDS`] small requests, and
/// none within `max_age` of the last.
pub struct Catalog {
    store: DynStore,
    max_age: Duration,
    shards: Mutex<Vec<Option<CachedShard>>>,
}

/// A shard as read: its version tag, its contents, when it was read or revalidated.
type CachedShard = (ETag, Arc<Shard>, Instant);
/// A shard's read: unchanged (its tag), changed (tag and contents), or missing (`None`).
type ShardRead = Option<(ETag, Option<Arc<Shard>>)>;

impl Catalog {
    /// The catalog in `store`; a shard read within `max_age` is not revalidated.
    pub fn new(store: DynStore, max_age: Duration) -> Self {
        Catalog {
            store,
            max_age,
            shards: Mutex::new(vec![None; SHARDS]),
        }
    }

    /// Every shard, fresh within `max_age`.
    pub async fn read(&self) -> Result<Vec<Arc<Shard>>, StoreError> {
        use futures::StreamExt;
        let stale: Vec<(usize, Option<ETag>)> = {
            let g = self.shards.lock().unwrap_or_else(|e| e.into_inner());
            g.iter()
                .enumerate()
                .filter_map(|(n, s)| match s {
                    Some((_, _, at)) if at.elapsed() < self.max_age => None,
                    Some((etag, _, _)) => Some((n, Some(etag.clone()))),
                    None => Some((n, None)),
                })
                .collect()
        };
        let fetched: Vec<Result<(usize, ShardRead), StoreError>> = futures::stream::iter(stale)
            .map(|(n, etag)| async move {
                let key = shard_key(n);
                let got = match etag {
                    Some(etag) => match self.store.get_if_changed(&key, &etag).await? {
                        Revalidated::Unchanged => Some((etag, None)),
                        Revalidated::Changed(got) => {
                            Some((got.etag, Some(Arc::new(parse(&got.data)?))))
                        }
                        Revalidated::Missing => None,
                    },
                    None => match self.store.get(&key).await? {
                        Some(got) => Some((got.etag, Some(Arc::new(parse(&got.data)?)))),
                        None => None,
                    },
                };
                Ok((n, got))
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut g = self.shards.lock().unwrap_or_else(|e| e.into_inner());
        let empty = Arc::new(Shard::default());
        for r in fetched {
            let (n, got) = r?;
            let at = Instant::now();
            g[n] = match got {
                Some((etag, Some(shard))) => Some((etag, shard, at)),
                Some((etag, None)) => g[n].take().map(|(_, s, _)| (etag, s, at)),
                // No such shard yet: an empty one, read again after max_age.
                None => Some((ETag(String::new()), empty.clone(), at)),
            };
        }
        Ok(g.iter()
            .map(|s| {
                s.as_ref()
                    .map(|(_, s, _)| s.clone())
                    .unwrap_or_else(|| empty.clone())
            })
            .collect())
    }

    /// The entry of one repository (fresh within `max_age`).
    pub async fn get(&self, root: &str) -> Result<Option<Entry>, StoreError> {
        let shards = self.read().await?;
        Ok(shards[shard_of(root)].repos.get(root).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with a main branch, `tags` tags and one pack.
    fn index(root: &str, generation: u64, tags: u32) -> Noted {
        Noted {
            root: root.into(),
            upstream: format!("https://{root}"),
            generation,
            refs: 1 + tags,
            branches: 1,
            tags,
            packs: 1,
            objects: 10,
            bytes: 1000,
            fetched_at: 100 + generation,
        }
    }

    fn ref_index_key(root: &str) -> String {
        format!("{root}/index")
    }

    fn memory() -> DynStore {
        Arc::new(crate::store::memory::MemoryStore::new())
    }

    #[tokio::test]
    async fn notes_are_kept_newest_generation_first_and_read_back() {
        let store = memory();
        let cat = Catalog::new(store.clone(), Duration::ZERO);
        note_index(&store, index("example.com/a/b", 2, 3));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        // An older generation arriving late changes nothing.
        note_index(&store, index("example.com/a/b", 1, 0));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        let e = cat.get("example.com/a/b").await.unwrap().unwrap();
        assert_eq!((e.generation, e.refs, e.tags, e.branches), (2, 4, 3, 1));
        assert_eq!((e.packs, e.objects, e.bytes), (1, 10, 1000));
        assert_eq!(e.upstream, "https://example.com/a/b");

        note_outcome(
            &store,
            "example.com/a/b",
            Outcome::Failed,
            Some("upstream said\nno"),
        );
        // Unknown repositories are not added by outcomes.
        note_outcome(&store, "example.com/not/stored", Outcome::Failed, Some("x"));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        let e = cat.get("example.com/a/b").await.unwrap().unwrap();
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!(e.error.as_deref(), Some("upstream said no"));
        assert!(e.error_at > 0 && e.checked_at == e.error_at);
        assert!(cat.get("example.com/not/stored").await.unwrap().is_none());
        // A new generation keeps the outcome fields.
        note_index(&store, index("example.com/a/b", 3, 4));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        let e = cat.get("example.com/a/b").await.unwrap().unwrap();
        assert_eq!((e.generation, e.tags), (3, 4));
        assert_eq!(e.outcome, Outcome::Failed);
    }

    #[tokio::test]
    async fn concurrent_writers_of_one_shard_lose_nothing() {
        let store = memory();
        // Roots of one shard.
        let roots: Vec<String> = (0..2000)
            .map(|i| format!("example.com/r/{i}"))
            .filter(|r| shard_of(r) == 7)
            .take(12)
            .collect();
        assert!(roots.len() >= 8);
        let tasks: Vec<_> = roots
            .iter()
            .map(|r| {
                let (store, idx) = (store.clone(), index(r, 1, 1));
                tokio::spawn(async move {
                    update(&store, 7, |repos| {
                        repos.entry(idx.root.clone()).or_default().apply(&idx)
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let cat = Catalog::new(store.clone(), Duration::from_secs(60));
        let shards = cat.read().await.unwrap();
        assert_eq!(shards[7].repos.len(), roots.len());
        assert_eq!(
            shards.iter().map(|s| s.repos.len()).sum::<usize>(),
            roots.len()
        );
    }

    #[tokio::test]
    async fn reconcile_adds_missing_and_drops_gone_repositories() {
        let store = memory();
        let kept = index("example.com/kept/one", 5, 2);
        store
            .put(
                &ref_index_key(&kept.root),
                bytes::Bytes::from_static(b"{}"),
                PutMode::CreateOnly,
            )
            .await
            .unwrap();
        note_index(&store, kept.clone());
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        // A stale entry of a repository whose ref index is gone, and one that was never noted.
        note_index(&store, index("example.com/gone/two", 1, 0));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        let unnoted = index("example.com/unnoted/three", 1, 1);
        let zips = HashMap::from([("example.com/unnoted/three".to_string(), (2, 300))]);
        let (set, removed) = reconcile(&store, &[kept.clone(), unnoted], &zips, ref_index_key)
            .await
            .unwrap();
        assert_eq!((set, removed), (1, 1));
        let cat = Catalog::new(store.clone(), Duration::ZERO);
        let all: Vec<String> = cat
            .read()
            .await
            .unwrap()
            .iter()
            .flat_map(|s| s.repos.keys().cloned().collect::<Vec<_>>())
            .collect();
        let mut all = all;
        all.sort();
        assert_eq!(all, ["example.com/kept/one", "example.com/unnoted/three"]);
        let e = cat.get("example.com/unnoted/three").await.unwrap().unwrap();
        assert_eq!((e.versions, e.zip_bytes), (2, 300));
        note_zip(&store, "example.com/kept/one", 50);
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        let e = cat.get("example.com/kept/one").await.unwrap().unwrap();
        assert_eq!((e.versions, e.zip_bytes), (1, 50));
    }

    #[tokio::test]
    async fn the_reader_revalidates_only_after_max_age() {
        let store = memory();
        let cat = Catalog::new(store.clone(), Duration::from_secs(3600));
        assert!(cat.get("example.com/x/y").await.unwrap().is_none());
        note_index(&store, index("example.com/x/y", 1, 0));
        assert!(crate::background::settle(Instant::now() + Duration::from_secs(5)).await);
        assert!(
            cat.get("example.com/x/y").await.unwrap().is_none(),
            "cached"
        );
        let fresh = Catalog::new(store.clone(), Duration::ZERO);
        assert!(fresh.get("example.com/x/y").await.unwrap().is_some());
    }
}
