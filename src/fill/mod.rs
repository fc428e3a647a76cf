//! Fill on miss: fetch a repository from its upstream, store pack and index, then publish the
//! ref index (create-only); refresh: fetch what is new, add a pack, replace the ref index
//! (`If-Match`), then compact.
//!
//! One instance works on a repository at a time: concurrent requests in a process share one
//! fill (an in-process lock), and instances sharing a store take the repository's lease object
//! ([`lease`]) first; the others wait for the ref index to appear or change and serve it. The
//! lease only saves work: what keeps the bucket consistent is that packs are written before the
//! ref index names them and the ref index is replaced by compare-and-swap.

pub mod compact;
pub mod fetch;
pub mod inbound;
pub mod received;
pub mod stored;
pub mod tap;
pub mod upstream;

use crate::refs::lease;
use crate::refs::{self, Keys, PackEntry, RefIndex};
use crate::store::{DynStore, ETag, PutMode, StoreError};
use crate::upstream::resolve::Target;
use bytes::Bytes;
use gix_hash::ObjectId;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a fill or refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum FillError {
    /// Talking to upstream failed: no such repository, a refusal, a bad or oversized pack.
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    /// A store call on the key (first) failed.
    #[error("storing {0}: {1}")]
    Store(String, StoreError),
    /// Reading or writing the ref index failed.
    #[error("{0}")]
    Refs(#[from] refs::RefsError),
    /// Anything else on our side (e.g. waiting too long for another instance's lease).
    #[error("internal: {0}")]
    Internal(String),
    /// The fetch ran past `--max-fill-time`.
    #[error("upstream did not finish within {0:?} (--max-fill-time)")]
    TimedOut(Duration),
}

/// What a failed fill means for the client, for a front end to map to its status codes
/// without knowing fill's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Upstream has no such repository.
    NotFound,
    /// Upstream answered badly or refused (or the pack was too large).
    Upstream,
    /// Upstream took too long.
    Timeout,
    /// Our own side failed (store, index, bug).
    Internal,
    /// The object store could not be reached (after retries): try again later.
    StoreUnavailable,
}

impl Failure {
    /// The line a client (or the status page) may see for a failure whose full error is
    /// `e`: upstream's answers as they are, our own side's without internals.
    pub fn public_message(self, e: &dyn std::fmt::Display) -> String {
        match self {
            Failure::NotFound | Failure::Upstream | Failure::Timeout => e.to_string(),
            Failure::StoreUnavailable => "object store unavailable, try again later".into(),
            Failure::Internal => "internal error (logged with this request's id)".into(),
        }
    }
}

impl FillError {
    /// See [`Failure::public_message`].
    pub fn public_message(&self) -> String {
        self.failure().public_message(self)
    }

    /// What the error means for the client.
    pub fn failure(&self) -> Failure {
        match self {
            FillError::Fetch(fetch::FetchError::NotFound(_)) => Failure::NotFound,
            FillError::Fetch(_) => Failure::Upstream,
            FillError::TimedOut(_) => Failure::Timeout,
            FillError::Store(_, e) | FillError::Refs(refs::RefsError::Store(e))
                if e.is_unavailable() =>
            {
                Failure::StoreUnavailable
            }
            FillError::Store(..) | FillError::Refs(_) | FillError::Internal(_) => Failure::Internal,
        }
    }
}

/// Progress of a fill, for `goprox mirror`.
pub trait FillProgress: Send + Sync {
    /// The pack of `root` was received whole from upstream: `bytes` bytes.
    fn fetched(&self, _root: &str, _bytes: u64) {}
    /// The pack of `root` and its index are stored: `objects` objects, `bytes` pack bytes.
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
    /// Time limits of upstream fetches.
    pub deadlines: fetch::Deadlines,
    /// Trusted rule URLs, credentials and CA roots for talking to upstreams.
    pub trust: Arc<crate::upstream::creds::Trust>,
}

/// How instances sharing a store take turns on a repository.
#[derive(Debug, Clone)]
pub struct Coordination {
    /// Take the repository's lease object before working on it. Off with `--single-instance`
    /// (a store whose conditional writes cannot be trusted): in-process locks only.
    pub leases: bool,
    /// This instance's name in lease objects.
    pub holder: String,
    /// Lease time to live; renewed every third of it while working.
    pub ttl: Duration,
    /// Longest a fill or refresh waits for another instance's lease.
    pub max_wait: Duration,
    /// Fills and refreshes of this process talking to upstreams at once.
    pub max_concurrent: usize,
}

impl Default for Coordination {
    fn default() -> Self {
        Coordination {
            leases: true,
            holder: lease::default_holder(),
            ttl: Duration::from_secs(30),
            max_wait: Duration::from_secs(30 * 60),
            max_concurrent: 8,
        }
    }
}

/// Whose turn it is on a repository ([`Filler::take_turn`]).
#[allow(clippy::large_enum_variant)] // a return value, moved once
enum Turn {
    /// Ours; the lease (if leases are used) is renewed in the background until released.
    Ours(Option<lease::Renewal>),
    /// Another instance changed the ref index while we waited: its new state.
    Changed(Option<(RefIndex, ETag)>),
}

/// Fills and refreshes repositories in a store from their upstreams (shared by every request;
/// one fill per repository at a time).
pub struct Filler {
    store: DynStore,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    progress: Arc<dyn FillProgress>,
    options: MirrorOptions,
    coord: Coordination,
    /// Turns to talk to upstreams ([`Coordination::max_concurrent`]).
    upstream_turns: Arc<tokio::sync::Semaphore>,
}

/// The outcome of [`Filler::refresh`].
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // a return value, moved once
pub enum Refreshed {
    /// Upstream has nothing the ref index lacks.
    Unchanged,
    /// A new ref index (and possibly a new pack) was published, by us or by another instance.
    Updated(RefIndex, ETag, Closing),
}

/// After a refresh of a closed repository ([`RefIndex::closed`]): the ref moves `(old, new)`
/// that must each go forward (old an ancestor of new) for the new ref index to be closed too;
/// `None` when it cannot be (a ref deleted, or objects fetched by sha).
pub type Closing = Option<Vec<(ObjectId, ObjectId)>>;

/// The moves from `old`'s refs to `new` ([`Closing`]).
fn ref_moves(
    old: &RefIndex,
    new: &std::collections::BTreeMap<String, refs::RefEntry>,
    new_head_oid: Option<ObjectId>,
) -> Closing {
    let mut moves = Vec::new();
    for (name, entry) in &old.refs {
        let now = new.get(name)?;
        if now.oid != entry.oid {
            moves.push((entry.oid, now.oid));
        }
    }
    match (old.head_oid, new_head_oid) {
        (Some(a), Some(b)) if a != b => moves.push((a, b)),
        (Some(_), None) => return None,
        _ => {}
    }
    Some(moves)
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
    /// A filler for `store` with default options and coordination, and no progress output.
    pub fn new(store: DynStore) -> Self {
        Filler {
            store,
            locks: Mutex::new(HashMap::new()),
            progress: Arc::new(NoProgress),
            options: MirrorOptions::default(),
            coord: Coordination::default(),
            upstream_turns: Arc::new(tokio::sync::Semaphore::new(8)),
        }
    }

    /// Use `coord` (also sizes the upstream concurrency limit).
    pub fn with_coordination(mut self, coord: Coordination) -> Self {
        self.upstream_turns = Arc::new(tokio::sync::Semaphore::new(coord.max_concurrent.max(1)));
        self.coord = coord;
        self
    }

    /// How this instance takes turns with the others sharing the store.
    pub fn coordination(&self) -> &Coordination {
        &self.coord
    }

    /// Wait for a turn to talk to an upstream (at most `max_concurrent` at once).
    async fn upstream_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, FillError> {
        self.upstream_turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| FillError::Internal(e.to_string()))
    }

    /// Take the repository's lease, or, while another instance holds it, wait (bounded
    /// polling) until the ref index differs from `seen` and return that.
    async fn take_turn(&self, keys: &Keys, seen: Option<&ETag>) -> Result<Turn, FillError> {
        if !self.coord.leases {
            return Ok(Turn::Ours(None));
        }
        let key = keys.lease();
        let t0 = Instant::now();
        let mut poll = Duration::from_millis(100);
        let mut waited = false;
        loop {
            match lease::try_acquire(&self.store, &key, &self.coord.holder, self.coord.ttl)
                .await
                .map_err(|e| FillError::Store(key.clone(), e))?
            {
                lease::Acquire::Acquired(l) => {
                    return Ok(Turn::Ours(Some(lease::spawn_renewal_while_progressing(
                        self.store.clone(),
                        l,
                        self.coord.ttl,
                    ))));
                }
                lease::Acquire::Held { holder, .. } if !waited => {
                    waited = true;
                    crate::metrics::LEASE_WAITS.inc();
                    tracing::info!(key = %key, holder = %holder, "another instance is working on this repository; waiting for it");
                }
                lease::Acquire::Held { .. } => {}
            }
            tokio::time::sleep(poll).await;
            poll = (poll * 2).min(Duration::from_secs(1));
            let now = refs::load(&self.store, keys).await?;
            if now.as_ref().map(|n| &n.1) != seen {
                return Ok(Turn::Changed(now));
            }
            if t0.elapsed() > self.coord.max_wait {
                return Err(FillError::Internal(format!(
                    "timed out after {:?} waiting for another instance's lease {key}",
                    self.coord.max_wait
                )));
            }
        }
    }

    /// Give a turn back (release the lease so the next instance need not wait for expiry).
    async fn end_turn(&self, renewal: Option<lease::Renewal>) {
        if let Some(r) = renewal
            && let Some(l) = r.stop().await
            && let Err(e) = l.release(&self.store).await
        {
            tracing::warn!(error = %e, "releasing a lease failed; it will expire");
        }
    }

    /// Use `options`.
    pub fn with_options(mut self, options: MirrorOptions) -> Self {
        self.options = options;
        self
    }

    /// Report progress to `p`.
    pub fn with_progress(mut self, p: Arc<dyn FillProgress>) -> Self {
        self.progress = p;
        self
    }

    /// Fill `target` unless its ref index already exists; returns the ref index in the store.
    /// `tap` is told upstream's refs and handed the pack as it arrives, when this fill is the
    /// one that fetches it.
    pub async fn fill(
        &self,
        target: &Target,
        tap: Option<Arc<tap::Tap>>,
    ) -> Result<(RefIndex, ETag), FillError> {
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
        let started = Instant::now();
        let result = match self.take_turn(&keys, None).await {
            Ok(Turn::Changed(Some(x))) => Ok(x),
            Ok(Turn::Changed(None)) => Err(FillError::Internal("ref index vanished".into())),
            Ok(Turn::Ours(renewal)) => {
                // Another instance may have published between our look and the lease.
                let r = match refs::load(&self.store, &keys).await {
                    Ok(Some(x)) => Ok(x),
                    // A fill another instance received but did not finish is finished here;
                    // else upstream is asked.
                    Ok(None) => match received::adopt(&self.store, &keys, target).await {
                        Ok(Some(x)) => {
                            if let Some(t) = &tap {
                                t.failed("the repository was published from a received fill");
                            }
                            Ok(x)
                        }
                        Ok(None) => match self.upstream_turn().await {
                            Ok(_turn) => self.fetch_and_store(target, &keys, tap).await,
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e.into()),
                };
                self.end_turn(renewal).await;
                r
            }
            Err(e) => Err(e),
        };
        crate::metrics::fill(result.is_ok(), started.elapsed());
        if let Ok(mut m) = self.locks.lock()
            && Arc::strong_count(&lock) <= 2
        {
            m.remove(&target.root);
        }
        result
    }
}

/// Test hook: with `GOPROX_PAUSE_AT=<point>:<milliseconds>` in the environment, work waits
/// that long at the named point, so that tests can stop a process in a window that is
/// otherwise too short to hit. Points: `fill-before-index` (a fill's pack is received and
/// stored, not yet indexed or published), `refresh-before-publish` (a refresh's pack and
/// index are stored, its ref index not yet written), `compaction-before-publish` (the merged
/// pack and index are stored, the ref index not yet replaced), `zip-build` (a module zip's
/// build lease is taken, the build not yet started).
pub async fn pause_point(point: &str) {
    static SPEC: std::sync::OnceLock<Option<(String, u64)>> = std::sync::OnceLock::new();
    let spec = SPEC.get_or_init(|| {
        let v = std::env::var("GOPROX_PAUSE_AT").ok()?;
        let (p, ms) = v.rsplit_once(':')?;
        Some((p.to_string(), ms.parse().ok()?))
    });
    if let Some((p, ms)) = spec
        && p == point
    {
        tracing::info!(point, ms, "pausing (GOPROX_PAUSE_AT)");
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}

impl Filler {
    /// Fetch from upstream and store, even if a ref index exists (used by `goprox mirror`).
    pub async fn fetch_and_store(
        &self,
        target: &Target,
        keys: &Keys,
        tap: Option<Arc<tap::Tap>>,
    ) -> Result<(RefIndex, ETag), FillError> {
        let (mut fetched, upload, received_key) =
            self.fetch_into_store(target, keys, tap.as_ref()).await?;
        let mut packs = Vec::new();
        match fetched.pack.take() {
            Some(received) => match async {
                pause_point("fill-before-index").await;
                self.store_pack(target, keys, upload, received).await
            }
            .await
            {
                Ok(p) => packs.push(p),
                Err(e) => {
                    if let Some(t) = &tap {
                        t.failed(&e.to_string());
                    }
                    // The pack was refused or is gone: nothing to adopt.
                    let _ = self.store.delete(&received_key).await;
                    return Err(e);
                }
            },
            None => upload.abandon(),
        }
        self.publish_fill(target, keys, fetched, packs, &received_key)
            .await
    }

    /// List the upstream's refs and fetch everything into a pack upload (within
    /// `--max-fill-time`); returns what was fetched, the upload and the key of its
    /// received-fill record. On failure the upload is abandoned.
    async fn fetch_into_store(
        &self,
        target: &Target,
        keys: &Keys,
        tap: Option<&Arc<tap::Tap>>,
    ) -> Result<(fetch::Fetched, inbound::Upload, String), FillError> {
        let url = target.upstream.clone();
        tracing::info!(root = %target.root, upstream = %url, "filling from upstream");
        let (prefixes, deadlines) = (self.options.prefixes.clone(), self.options.deadlines);
        let trust = self.options.trust.clone();
        let (mut sink, upload) = inbound::begin(
            &tokio::runtime::Handle::current(),
            &self.store,
            keys,
            &target.root,
            tap.cloned(),
        );
        sink.record_as(self.coord.holder.clone());
        let received_key = keys.received(upload.name());
        let t2 = tap.cloned();
        let fetched = with_deadline(
            deadlines.total,
            tokio::task::spawn_blocking(move || {
                fetch::fetch_all(&url, &prefixes, deadlines, &trust, sink, t2.as_deref())
            }),
        )
        .await;
        match fetched.and_then(|r| r.map_err(FillError::from)) {
            Ok(f) => Ok((f, upload, received_key)),
            Err(e) => {
                if let Some(t) = tap {
                    t.failed(&e.to_string());
                }
                upload.abandon();
                Err(e)
            }
        }
    }

    /// Publish the ref index of a fill (its refs as `fetched` listed them, its `packs`) unless
    /// another instance published one first (then that one is returned); the received-fill
    /// record is deleted once the index is written.
    async fn publish_fill(
        &self,
        target: &Target,
        keys: &Keys,
        fetched: fetch::Fetched,
        packs: Vec<PackEntry>,
        received_key: &str,
    ) -> Result<(RefIndex, ETag), FillError> {
        let prev = refs::load(&self.store, keys).await?;
        let seen = prev.as_ref().map(|p| p.0.generation);
        let index = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 0, // set by `refs::update`
            root: target.root.clone(),
            upstream: target.upstream.clone(),
            subdir: target.subdir.clone(),
            fetched_at: now(),
            head_symref: fetched.head_symref,
            head_oid: fetched.head_oid,
            refs: fetched.refs,
            packs,
            retired: prev
                .as_ref()
                .map(|p| p.0.retired.clone())
                .unwrap_or_default(),
            // Everything upstream listed was wanted, nothing was had: the pack is the closure.
            closed: true,
        };
        let empty = index.packs.is_empty();
        // Published unless another instance published first (then its index is used).
        let published = refs::update(&self.store, keys, prev, |now| {
            if now.map(|i| i.generation) == seen {
                refs::Change::Write(index.clone())
            } else {
                refs::Change::Keep
            }
        })
        .await;
        if matches!(published, Ok(refs::Updated::Written(..))) || empty {
            // Published (or nothing was received): the record has done its work.
            if let Err(e) = self.store.delete(received_key).await {
                tracing::warn!(key = %received_key, error = %e, "deleting a received-fill record failed; gc will");
            }
        }
        match published? {
            refs::Updated::Written(index, etag) => Ok((index, etag)),
            refs::Updated::Kept(theirs) => {
                tracing::info!(root = %target.root, "another instance filled this repository first");
                theirs.ok_or_else(|| {
                    FillError::Internal("ref index vanished after a conflict".into())
                })
            }
        }
    }
}

impl Filler {
    /// Finish storing a received pack (its bytes are uploaded as they arrive; its index is
    /// written after them: a reader only follows the ref index, written after both).
    async fn store_pack(
        &self,
        target: &Target,
        keys: &Keys,
        upload: inbound::Upload,
        received: crate::odb::ingest::Received,
    ) -> Result<PackEntry, FillError> {
        self.progress.fetched(&target.root, received.size);
        let entry = upload
            .complete(&self.store, keys, &target.upstream, received)
            .await?;
        self.progress
            .stored(&target.root, entry.objects, entry.size);
        Ok(entry)
    }

    /// Bring a stored repository up to date with its upstream: list refs; when they changed
    /// (after the tag policy), fetch only what is new (the stored tips as haves) into one new
    /// pack and replace the ref index with `If-Match`. `extra_wants` are objects a client asked
    /// for that the store lacks (fetched too if upstream will send them); `has` tells which
    /// objects the store has.
    ///
    /// Takes the repository's lease first; if another instance holds it, waits for its result
    /// instead. After publishing a new pack, merges packs ([`compact`]) under the same lease.
    pub async fn refresh(
        &self,
        target: &Target,
        current: &(RefIndex, ETag),
        has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync>,
        extra_wants: &[ObjectId],
    ) -> Result<Refreshed, FillError> {
        use crate::metrics::RefreshOutcome;
        let started = Instant::now();
        let r = self
            .refresh_unmeasured(target, current, has, extra_wants)
            .await;
        let outcome = match &r {
            Ok(Refreshed::Updated(..)) => RefreshOutcome::Updated,
            Ok(Refreshed::Unchanged) => RefreshOutcome::Unchanged,
            Err(_) => RefreshOutcome::Error,
        };
        crate::metrics::refresh(outcome, started.elapsed());
        r
    }

    /// [`Filler::refresh`] without the measuring.
    async fn refresh_unmeasured(
        &self,
        target: &Target,
        current: &(RefIndex, ETag),
        has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync>,
        extra_wants: &[ObjectId],
    ) -> Result<Refreshed, FillError> {
        let keys = Keys::new(&target.root);
        let renewal = match self.take_turn(&keys, Some(&current.1)).await? {
            Turn::Changed(Some((i, e))) => return Ok(Refreshed::Updated(i, e, None)),
            Turn::Changed(None) => return Err(FillError::Internal("ref index vanished".into())),
            Turn::Ours(r) => r,
        };
        let r = match self.upstream_turn().await {
            Ok(_turn) => {
                self.refresh_turn(target, &keys, current, has, extra_wants)
                    .await
            }
            Err(e) => Err(e),
        };
        let r = match r {
            Ok(Refreshed::Updated(i, e, c)) => {
                match compact::compact(&self.store, &keys, &i, &e).await {
                    Ok(Some((i, e))) => Ok(Refreshed::Updated(i, e, c)),
                    Ok(None) => Ok(Refreshed::Updated(i, e, c)),
                    Err(err) => {
                        tracing::warn!(root = %target.root, error = %err, "compaction failed");
                        Ok(Refreshed::Updated(i, e, c))
                    }
                }
            }
            other => other,
        };
        self.end_turn(renewal).await;
        r
    }

    async fn refresh_turn(
        &self,
        target: &Target,
        keys: &Keys,
        current: &(RefIndex, ETag),
        has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync>,
        extra_wants: &[ObjectId],
    ) -> Result<Refreshed, FillError> {
        // The ref index may have changed between our look and the lease: start from the latest.
        let latest = self.latest_index(keys, current).await?;
        let (old, etag) = match &latest {
            Some((i, e)) => (i, e),
            None => (&current.0, &current.1),
        };
        let incoming = self.fetch_news(target, keys, old, has, extra_wants).await?;
        let closing = if old.closed && !incoming.by_sha {
            ref_moves(old, &incoming.refs, incoming.listing.head_oid)
        } else {
            None
        };
        if incoming.is_nothing_new(old) {
            // Nothing new upstream; but the caller's version may be older than the store's.
            return Ok(if etag == &current.1 {
                Refreshed::Unchanged
            } else {
                Refreshed::Updated(old.clone(), etag.clone(), None)
            });
        }
        let index = self.next_index(target, keys, old, incoming).await?;
        pause_point("refresh-before-publish").await;
        self.publish_refresh(target, keys, old, etag, index, closing)
            .await
    }

    /// The stored ref index when it is no longer the caller's `current` (`None`: `current`
    /// is the latest, or the index is gone).
    async fn latest_index(
        &self,
        keys: &Keys,
        current: &(RefIndex, ETag),
    ) -> Result<Option<(RefIndex, ETag)>, FillError> {
        Ok(refs::load(&self.store, keys)
            .await?
            .filter(|x| x.1 != current.1))
    }

    /// List upstream's refs, merge them with `old`'s and fetch what is new (plus the extra
    /// wants the store lacks) into one pack received straight into the store.
    async fn fetch_news(
        &self,
        target: &Target,
        keys: &Keys,
        old: &RefIndex,
        has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync>,
        extra_wants: &[ObjectId],
    ) -> Result<Incoming, FillError> {
        let link = RefreshLink {
            url: target.upstream.clone(),
            prefixes: self.options.prefixes.clone(),
            deadlines: self.options.deadlines,
            trust: self.options.trust.clone(),
            mirror_tags: self.options.mirror_tags,
            root: target.root.clone(),
            store: self.store.clone(),
            keys: keys.clone(),
            rt: tokio::runtime::Handle::current(),
        };
        let old_refs = old.refs.clone();
        let extra: Vec<ObjectId> = extra_wants.to_vec();
        // Everything upstream-facing runs on one blocking thread (one connection).
        let total = link.deadlines.total;
        Ok(with_deadline(
            total,
            tokio::task::spawn_blocking(move || link.run(&old_refs, &extra, &*has)),
        )
        .await??)
    }

    /// The ref index to publish: `old` with upstream's refs and HEAD, and the received pack
    /// (if any) stored and added.
    async fn next_index(
        &self,
        target: &Target,
        keys: &Keys,
        old: &RefIndex,
        incoming: Incoming,
    ) -> Result<RefIndex, FillError> {
        let mut packs = old.packs.clone();
        if let Some((received, upload)) = incoming.pack {
            packs.push(self.store_pack(target, keys, upload, received).await?);
        }
        Ok(RefIndex {
            generation: 0, // set by `refs::update`
            fetched_at: now(),
            head_symref: incoming.listing.head_symref,
            head_oid: incoming.listing.head_oid,
            refs: incoming.refs,
            packs,
            // Until the moves are checked ([`Closing`]).
            closed: false,
            ..old.clone()
        })
    }

    /// Replace `old` (at `etag`) with `index` unless another instance replaced it first (then
    /// serve theirs).
    async fn publish_refresh(
        &self,
        target: &Target,
        keys: &Keys,
        old: &RefIndex,
        etag: &ETag,
        index: RefIndex,
        closing: Closing,
    ) -> Result<Refreshed, FillError> {
        let ours = index.packs[old.packs.len()..].to_vec();
        let result = refs::update(
            &self.store,
            keys,
            Some((old.clone(), etag.clone())),
            |now| match now {
                Some(now) if now.generation == old.generation => refs::Change::Write(index.clone()),
                // Only a pack's flags changed meanwhile (bitmaps were named): keep them, and
                // add ours.
                Some(now) if same_but_flags(now, old) => {
                    let mut next = index.clone();
                    next.packs = now.packs.clone();
                    next.packs.extend(ours.iter().cloned());
                    refs::Change::Write(next)
                }
                _ => refs::Change::Keep,
            },
        )
        .await?;
        match result {
            refs::Updated::Written(index, etag) => {
                crate::metrics::REFRESHES.inc();
                tracing::info!(root = %target.root, generation = index.generation, packs = index.packs.len(), "refreshed from upstream");
                Ok(Refreshed::Updated(index, etag, closing))
            }
            refs::Updated::Kept(theirs) => {
                // Another instance replaced it first: serve theirs; our pack (if any) is
                // unreferenced garbage for `goprox gc`.
                tracing::info!(root = %target.root, "another instance refreshed this repository first");
                let (i, e) = theirs.ok_or_else(|| {
                    FillError::Internal("ref index vanished after a conflict".into())
                })?;
                Ok(Refreshed::Updated(i, e, None))
            }
        }
    }
}

/// A pack received from upstream into the store, not yet complete there
/// ([`Filler::store_pack`] finishes it).
type ReceivedPack = (crate::odb::ingest::Received, inbound::Upload);

/// What a refresh got from upstream ([`RefreshLink::run`]).
struct Incoming {
    /// Upstream's refs and HEAD.
    listing: fetch::Listing,
    /// The refs to publish ([`merge_refs`]).
    refs: std::collections::BTreeMap<String, refs::RefEntry>,
    /// The new objects, if any were wanted.
    pack: Option<ReceivedPack>,
    /// The pack holds objects fetched by sha (the extra wants).
    by_sha: bool,
}

impl Incoming {
    /// No pack, and the refs and HEAD are `old`'s.
    fn is_nothing_new(&self, old: &RefIndex) -> bool {
        let head_same =
            self.listing.head_symref == old.head_symref && self.listing.head_oid == old.head_oid;
        self.pack.is_none() && self.refs == old.refs && head_same
    }
}

/// What a refresh asks upstream for.
struct Wants {
    /// The new tips and the extra wants, those the store lacks.
    all: BTreeSet<ObjectId>,
    /// The new tips alone (asked for again when upstream refuses the extra wants).
    tips: BTreeSet<ObjectId>,
    /// The stored tips the store has.
    haves: BTreeSet<ObjectId>,
}

impl Wants {
    /// Want what the new refs and HEAD name and the store lacks, then the extra wants it lacks;
    /// have what the old refs name and the store has.
    fn new(
        new_refs: &std::collections::BTreeMap<String, refs::RefEntry>,
        head_oid: Option<ObjectId>,
        old_refs: &std::collections::BTreeMap<String, refs::RefEntry>,
        extra: &[ObjectId],
        has: &dyn Fn(&ObjectId) -> bool,
    ) -> Self {
        let mut all: BTreeSet<ObjectId> = new_refs
            .values()
            .map(|r| r.oid)
            .chain(head_oid)
            .filter(|o| !has(o))
            .collect();
        let haves: BTreeSet<ObjectId> = old_refs
            .values()
            .map(|r| r.oid)
            .filter(|o| has(o))
            .collect();
        let tips = all.clone();
        all.extend(extra.iter().filter(|o| !has(o)));
        Wants { all, tips, haves }
    }

    /// Objects beyond the tips are wanted (by sha).
    fn by_sha(&self) -> bool {
        self.all.len() > self.tips.len()
    }
}

/// A refresh's conversation with upstream, on a blocking thread: what it needs to connect and
/// to receive a pack into the store.
struct RefreshLink {
    url: String,
    prefixes: fetch::RefPrefixes,
    deadlines: fetch::Deadlines,
    trust: Arc<crate::upstream::creds::Trust>,
    mirror_tags: bool,
    root: String,
    store: DynStore,
    keys: Keys,
    rt: tokio::runtime::Handle,
}

impl RefreshLink {
    /// List upstream's refs, merge them with `old_refs`, decide the wants and haves, and fetch
    /// the pack.
    fn run(
        self,
        old_refs: &std::collections::BTreeMap<String, refs::RefEntry>,
        extra: &[ObjectId],
        has: &dyn Fn(&ObjectId) -> bool,
    ) -> Result<Incoming, fetch::FetchError> {
        let (mut session, listing) = self.connect()?;
        let refs = self.merge(old_refs, &listing);
        let wants = Wants::new(&refs, listing.head_oid, old_refs, extra, has);
        let (pack, by_sha) = self.fetch_pack(&mut session, &wants)?;
        Ok(Incoming {
            listing,
            refs,
            pack,
            by_sha,
        })
    }

    /// Connect, handshake and list the refs.
    fn connect(&self) -> Result<(fetch::Session, fetch::Listing), fetch::FetchError> {
        fetch::Session::connect(&self.url, &self.prefixes, self.deadlines, &self.trust)
    }

    /// The refs to publish ([`merge_refs`]), logging the tags kept against upstream.
    fn merge(
        &self,
        old_refs: &std::collections::BTreeMap<String, refs::RefEntry>,
        listing: &fetch::Listing,
    ) -> std::collections::BTreeMap<String, refs::RefEntry> {
        let (new_refs, kept) = merge_refs(old_refs, &listing.refs, self.mirror_tags);
        for k in &kept {
            tracing::warn!(root = %self.root, tag = %k, "keeping the mirrored tag");
        }
        new_refs
    }

    /// Fetch the wanted objects in one pack (`None` when nothing is wanted), and whether it
    /// holds objects fetched by sha.
    fn fetch_pack(
        &self,
        session: &mut fetch::Session,
        wants: &Wants,
    ) -> Result<(Option<ReceivedPack>, bool), fetch::FetchError> {
        if wants.all.is_empty() {
            return Ok((None, false));
        }
        match self.receive(session, &wants.all, &wants.haves) {
            Ok(p) => Ok((Some(p), wants.by_sha())),
            // Upstream refused the extra wants (not reachable there): fetch the tips.
            Err(e) if wants.by_sha() => {
                tracing::info!(root = %self.root, error = %e, "upstream refused wants by sha");
                if wants.tips.is_empty() {
                    Ok((None, false))
                } else {
                    let (mut s2, _) = self.connect()?;
                    Ok((
                        Some(self.receive(&mut s2, &wants.tips, &wants.haves)?),
                        false,
                    ))
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Receive one pack straight into the store (nothing is published if it fails).
    fn receive(
        &self,
        session: &mut fetch::Session,
        wants: &BTreeSet<ObjectId>,
        haves: &BTreeSet<ObjectId>,
    ) -> Result<ReceivedPack, fetch::FetchError> {
        let (sink, upload) = inbound::begin(&self.rt, &self.store, &self.keys, &self.root, None);
        match session.fetch_pack(wants, haves, sink) {
            Ok(r) => Ok((r, upload)),
            Err(e) => {
                upload.abandon();
                Err(e)
            }
        }
    }
}

/// Whether `now` is `old` but for the flags of its packs (their names, order, sizes and every
/// ref are the same): a change that a refresh of `old` can be re-applied on.
fn same_but_flags(now: &RefIndex, old: &RefIndex) -> bool {
    now.refs == old.refs
        && now.head_symref == old.head_symref
        && now.head_oid == old.head_oid
        && now.retired == old.retired
        && now.packs.len() == old.packs.len()
        && now
            .packs
            .iter()
            .zip(&old.packs)
            .all(|(a, b)| a.name == b.name && a.size == b.size && a.objects == b.objects)
}

/// Await an upstream operation on a blocking thread for at most `total` (the thread itself
/// ends by the transport's idle deadline).
async fn with_deadline<T>(
    total: Duration,
    task: tokio::task::JoinHandle<Result<T, fetch::FetchError>>,
) -> Result<Result<T, fetch::FetchError>, FillError> {
    match tokio::time::timeout(total, task).await {
        Ok(joined) => joined.map_err(|e| FillError::Internal(e.to_string())),
        Err(_) => Err(FillError::TimedOut(total)),
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
                        // Test names ("a", "t1") as distinct ids.
                        oid: ObjectId::from_bytes_or_panic(&{
                            let mut b = [0u8; 20];
                            for (i, c) in o.bytes().enumerate().take(20) {
                                b[i] = c;
                            }
                            b
                        }),
                        peeled: None,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_refresh_reapplies_over_flag_changes_only() {
        let pack = |name: &str, bitmap: bool| PackEntry {
            name: name.into(),
            checksum: None,
            size: 100,
            objects: 3,
            walk_end: None,
            bitmap,
        };
        let old = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 1,
            root: "example.test/x".into(),
            upstream: "http://127.0.0.1/x".into(),
            subdir: String::new(),
            fetched_at: 5,
            head_symref: None,
            head_oid: None,
            refs: refs(&[("refs/heads/main", "a")]),
            packs: vec![pack("p1", false)],
            retired: vec![],
            closed: true,
        };
        let mut bitmapped = old.clone();
        bitmapped.packs[0].bitmap = true;
        bitmapped.generation = 2;
        assert!(same_but_flags(&bitmapped, &old));
        let mut moved = bitmapped.clone();
        moved.refs = refs(&[("refs/heads/main", "b")]);
        assert!(!same_but_flags(&moved, &old), "another refresh moved a ref");
        let mut more = bitmapped.clone();
        more.packs.push(pack("p2", false));
        assert!(!same_but_flags(&more, &old), "another refresh added a pack");
        let mut merged = bitmapped;
        merged.packs[0].name = "p3".into();
        assert!(
            !same_but_flags(&merged, &old),
            "compaction replaced the pack"
        );
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
