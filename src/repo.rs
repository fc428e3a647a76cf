//! Opening repositories: ref index (filled from upstream on a miss) plus the packs it names,
//! whose indexes are loaded once per process and shared.

use crate::fill::fetch::{FetchError, Listing};
use crate::fill::tap::{Feed, Tap};
use crate::fill::{FillError, Filler, Refreshed};
use crate::metrics;
use crate::odb::pack::Pack;
use crate::odb::{Io, Odb};
use crate::protocol::upload_pack::KeptAhead;
use crate::refs::catalog::Outcome;
use crate::refs::{self, Keys, PackEntry, RefIndex};
use crate::store::{DynStore, ETag, Revalidated};
use crate::upstream::resolve::Target;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use gix_hash::ObjectId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Cache budget of a bitmap build (blocks, objects and commits it reads).
const BITMAP_CACHE_BYTES: usize = 40 << 20;

pub use crate::snapshot::Repo;

/// Why a repository could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// Filling or refreshing it failed.
    #[error(transparent)]
    Fill(#[from] FillError),
    /// Its ref index could not be read.
    #[error("{0}")]
    Refs(#[from] refs::RefsError),
    /// A pack index (key first) could not be read or parsed, or is missing.
    #[error("pack {0}: {1}")]
    Pack(String, String),
    /// A fill this request joined failed (its error, as text, for every request that waited).
    #[error("{1}")]
    Joined(crate::fill::Failure, Arc<str>),
}

impl OpenError {
    /// What a client may be told: upstream's side of the story as it is, our own side as
    /// one short line without store keys or backend text (the log has the whole error).
    pub fn public_message(&self) -> String {
        match self {
            OpenError::Fill(e) => e.public_message(),
            _ => crate::fill::Failure::public_message(self.failure(), self),
        }
    }

    /// What the failure means for the client (see [`crate::fill::Failure`]).
    pub fn failure(&self) -> crate::fill::Failure {
        match self {
            OpenError::Fill(e) => e.failure(),
            OpenError::Refs(refs::RefsError::Store(e)) if e.is_unavailable() => {
                crate::fill::Failure::StoreUnavailable
            }
            OpenError::Refs(_) | OpenError::Pack(..) => crate::fill::Failure::Internal,
            OpenError::Joined(f, _) => *f,
        }
    }
}

/// When to look upstream again.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// A ref index older than this is checked against upstream on the next request
    /// (`Duration::ZERO`: on every request).
    pub refresh_after: Duration,
    /// How long a request waits for upstream before it is served from the last ref index
    /// (the refresh goes on in the background).
    pub upstream_wait: Duration,
    /// How long a sha upstream did not have, or a repository upstream does not know, is not
    /// asked for again.
    pub negative_ttl: Duration,
    /// A repository opened less than this ago is served from memory without reading its ref
    /// index again; after it, the ref index is revalidated (a conditional GET).
    pub ref_ttl: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            refresh_after: Duration::from_secs(60),
            upstream_wait: Duration::from_secs(3),
            negative_ttl: Duration::from_secs(60),
            ref_ttl: Duration::from_secs(2),
        }
    }
}

/// Commits walked at most to decide that a ref moved forward.
const ANCESTRY_BUDGET: usize = 100_000;

/// The result of one refresh, shared by every request that joined it.
type RefreshResult = Result<Option<(RefIndex, ETag)>, Arc<str>>;
type SharedRefresh = Shared<BoxFuture<'static, RefreshResult>>;

/// The result of one fill, shared by every request that joined it.
type FillResult = Result<(RefIndex, ETag), (crate::fill::Failure, Arc<str>)>;

/// A fill under way in this process: requests join it.
struct FillRun {
    tap: Arc<Tap>,
    started: Instant,
    done: Shared<BoxFuture<'static, FillResult>>,
}

impl FillRun {
    /// Wait for the fill's end, as a request that needs its result (the indexer stops
    /// yielding to clients that follow the pack).
    async fn wait(&self) -> Result<(RefIndex, ETag), OpenError> {
        let _waiting = self.tap.waiting();
        self.ended().await
    }

    /// The fill's end.
    async fn ended(&self) -> Result<(RefIndex, ETag), OpenError> {
        self.done
            .clone()
            .await
            .map_err(|(f, why)| OpenError::Joined(f, why))
    }
}

/// What [`Repos::refresh_pushed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Upstream had nothing new.
    Unchanged,
    /// The ref index moved.
    Updated {
        /// Its new generation.
        generation: u64,
    },
}

/// A fill or refresh under way in this process ([`Repos::in_progress`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Work {
    /// The repository's import path.
    pub root: String,
    /// `fill` or `refresh`.
    pub kind: &'static str,
    /// Time since it started (serialized as seconds, one decimal).
    #[serde(serialize_with = "as_secs")]
    pub running_for: Duration,
    /// Pack bytes received so far (fills clients can follow).
    pub bytes: Option<u64>,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 10.0).round() / 10.0)
}

/// What [`Repos::open_early`] found.
#[allow(clippy::large_enum_variant)] // a return value, moved once
pub enum Opened {
    /// The repository, stored.
    Ready(Arc<Repo>),
    /// Not stored yet, but a fill is under way and upstream's refs are known.
    Filling(Filling),
}

impl Opened {
    /// The refs to advertise: the stored ones, or upstream's listing while filling.
    pub fn index(&self) -> &RefIndex {
        match self {
            Opened::Ready(repo) => &repo.index,
            Opened::Filling(f) => &f.index,
        }
    }
}

/// A repository being filled: its refs as upstream listed them (no packs yet), and the fill's
/// pack as it arrives ([`Tap`]).
pub struct Filling {
    /// The ref index the fill will publish, without its packs.
    pub index: RefIndex,
    run: Arc<FillRun>,
}

impl Filling {
    /// Follow the fill's pack from its first byte (`None` when it is too late for that).
    pub fn follow(&self) -> Option<Feed> {
        self.run.tap.follow(tokio::runtime::Handle::current())
    }

    /// Wait until the fill is over (then open the repository as usual).
    pub async fn wait(&self) -> Result<(), OpenError> {
        self.run.wait().await.map(|_| ())
    }
}

/// Everything needed to open repositories.
pub struct Repos {
    /// The store the repositories live in.
    pub store: DynStore,
    /// Pack reads and caches shared by every repository.
    pub io: Arc<Io>,
    /// Fills and refreshes.
    pub filler: Filler,
    /// Opened packs by store key (one load per pack however many requests open it at once),
    /// under a byte budget.
    packs: Mutex<PackIndexes>,
    /// The budget of `packs` (`--index-cache-size`).
    index_budget: u64,
    policy: RefreshPolicy,
    /// When this process last started a refresh of each repository.
    checked: Mutex<HashMap<String, Instant>>,
    /// Refreshes under way, one per repository; requests join them.
    inflight: Mutex<HashMap<String, SharedRefresh>>,
    /// Fills under way, one per repository; requests join them.
    filling: Mutex<HashMap<String, Arc<FillRun>>>,
    /// Negative cache: `root` (upstream has no such repository) or `root sha` (upstream did
    /// not send that object), with the time it was recorded.
    negative: Mutex<HashMap<String, Instant>>,
    /// The newest version of each repository this process has opened, and when its ref index
    /// was last read or revalidated.
    opened: Mutex<HashMap<String, (Arc<Repo>, Instant)>>,
    /// Bitmap builds started after fills ([`Repos::finish_background`] waits for them).
    background: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// One bitmap build at a time: each walks a whole repository's history.
    bitmap_turn: Arc<tokio::sync::Semaphore>,
    /// Packs this process has started a bitmap build for (once each).
    bitmaps_tried: Mutex<std::collections::HashSet<String>>,
    /// Recent traffic and errors, for the status page.
    pub activity: crate::activity::Activity,
    /// Serving clients (not a batch like `goprox mirror`): warm the block cache when a pack is
    /// opened, and start a bitmap build only after a first clone's client has had time to
    /// resolve its deltas.
    serving: bool,
}

impl Repos {
    /// Repositories in `store`, read through `io` and filled by `filler`, with the default
    /// index budget and refresh policy.
    pub fn new(store: DynStore, io: Arc<Io>, filler: Filler) -> Self {
        Repos {
            store,
            io,
            filler,
            packs: Mutex::new(PackIndexes::default()),
            index_budget: DEFAULT_INDEX_BUDGET,
            policy: RefreshPolicy::default(),
            checked: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            filling: Mutex::new(HashMap::new()),
            negative: Mutex::new(HashMap::new()),
            opened: Mutex::new(HashMap::new()),
            background: Mutex::new(Vec::new()),
            bitmap_turn: Arc::new(tokio::sync::Semaphore::new(1)),
            bitmaps_tried: Mutex::new(std::collections::HashSet::new()),
            activity: crate::activity::Activity::new(),
            serving: true,
        }
    }

    /// Keep opened pack indexes (with their reverse indexes and bitmaps) within `bytes`: the
    /// least recently used are dropped beyond it, and loaded again when needed.
    pub fn with_index_budget(mut self, bytes: u64) -> Self {
        self.index_budget = bytes;
        self
    }

    /// Bytes and number of the pack indexes held (see [`Repos::with_index_budget`]).
    pub fn index_usage(&self) -> (u64, usize) {
        let p = lock(&self.packs);
        (p.bytes, p.lru.len())
    }

    /// Use refresh policy `policy`.
    pub fn with_policy(mut self, policy: RefreshPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// For a process that does not serve (`goprox mirror`): packs are opened without warming
    /// the block cache, and bitmaps are built at once.
    pub fn for_batch(mut self) -> Self {
        self.serving = false;
        self
    }

    /// Open a repository: fill it from upstream if the store does not have it; refresh it
    /// (waiting at most `upstream_wait`) if its ref index is older than `refresh_after`.
    pub async fn open(self: &Arc<Self>, target: &Target) -> Result<Arc<Repo>, OpenError> {
        self.activity.hit(&target.root);
        let repo = self.current(target).await?;
        Ok(self.fresh(target, repo).await)
    }

    /// `repo`, or its refreshed version when a refresh is due.
    async fn fresh(self: &Arc<Self>, target: &Target, repo: Arc<Repo>) -> Arc<Repo> {
        if !self.refresh_due(&repo) {
            return repo;
        }
        self.refresh_bounded(target, repo, Vec::new()).await
    }

    /// Like [`Repos::open`], but when the repository has to be filled first, return as soon
    /// as upstream's refs are known (a ref advertisement can be answered from them, and a
    /// clone of everything can follow the fill's pack as it arrives).
    pub async fn open_early(self: &Arc<Self>, target: &Target) -> Result<Opened, OpenError> {
        self.activity.hit(&target.root);
        let running = lock(&self.filling).get(&target.root).cloned();
        let run = match running {
            Some(run) => run,
            None => match self.stored(target).await? {
                Some(repo) => return Ok(Opened::Ready(self.fresh(target, repo).await)),
                None => self.start_fill(target, true)?,
            },
        };
        tokio::select! {
            biased;
            // Not yet waiting for the result: only for the refs (or the end, if that comes
            // first).
            done = run.ended() => Ok(Opened::Ready(self.build(target, done?).await?)),
            Some(listing) = run.tap.listing() => Ok(Opened::Filling(Filling {
                index: listed_index(target, &listing),
                run,
            })),
        }
    }

    /// The repository as the store has it now (within `ref_ttl`), filled if the store does not
    /// have it.
    async fn current(self: &Arc<Self>, target: &Target) -> Result<Arc<Repo>, OpenError> {
        if let Some(repo) = self.stored(target).await? {
            return Ok(repo);
        }
        let loaded = self.fill(target).await?;
        self.build(target, loaded).await
    }

    /// The repository as the store has it now (within `ref_ttl`); `None` when it is not
    /// stored.
    async fn stored(self: &Arc<Self>, target: &Target) -> Result<Option<Arc<Repo>>, OpenError> {
        let keys = Keys::new(&target.root);
        let cached = lock(&self.opened).get(&target.root).cloned();
        let loaded = match cached {
            Some((repo, at)) if at.elapsed() < self.policy.ref_ttl => {
                self.touch(&repo);
                return Ok(Some(repo));
            }
            Some((repo, _)) => {
                match self
                    .store
                    .get_if_changed(&keys.ref_index(), &repo.etag)
                    .await
                    .map_err(refs::RefsError::from)?
                {
                    Revalidated::Unchanged => {
                        self.remember(&repo);
                        self.touch(&repo);
                        return Ok(Some(repo));
                    }
                    Revalidated::Changed(got) => Some(refs::parse(&keys, got)?),
                    Revalidated::Missing => None,
                }
            }
            None => refs::load(&self.store, &keys).await?,
        };
        match loaded {
            Some(x) => {
                let repo = self.build(target, x).await?;
                // A repository filled before bitmaps existed (or by an instance that stopped
                // before building them) gets them now.
                self.start_bitmaps(target, &repo.index);
                Ok(Some(repo))
            }
            None => Ok(None),
        }
    }

    /// Keep `repo` as the newest known version of its repository (unless a newer one is).
    fn remember(&self, repo: &Arc<Repo>) {
        let mut m = lock(&self.opened);
        match m.get(&repo.root) {
            Some((r, _)) if r.index.generation > repo.index.generation => {}
            _ => {
                m.insert(repo.root.clone(), (repo.clone(), Instant::now()));
            }
        }
    }

    /// A client wants objects the store lacks: refresh first (asking upstream for those
    /// objects too), unless they were looked for within `negative_ttl`. Returns the repository
    /// to serve (the old one when nothing new could be had in time).
    pub async fn refresh_for_wants(
        self: &Arc<Self>,
        target: &Target,
        repo: Arc<Repo>,
        missing: &[ObjectId],
    ) -> Arc<Repo> {
        let key = |m: &ObjectId| format!("{} {m}", target.root);
        let fresh: Vec<ObjectId> = missing
            .iter()
            .filter(|m| !self.is_negative(&key(m)))
            .copied()
            .collect();
        if fresh.is_empty() {
            return repo;
        }
        let mut repo = self.refresh_bounded(target, repo, fresh.clone()).await;
        // The refresh joined may have been one started without these wants: one more try.
        if fresh.iter().any(|m| !repo.odb.contains(m)) {
            repo = self.refresh_bounded(target, repo, fresh.clone()).await;
        }
        for m in fresh.iter().filter(|m| !repo.odb.contains(m)) {
            self.set_negative(key(m));
        }
        repo
    }

    /// The repository the store holds for an import path, found without upstream: the
    /// longest prefix of `path` (two elements at least) with a ref index, which names its
    /// root and upstream. For when discovery fails (a vanity host that is down) and nothing
    /// in this process remembers its answer.
    pub async fn stored_target(&self, path: &str) -> Option<Target> {
        let parts: Vec<&str> = path.split('/').collect();
        for n in (2..=parts.len()).rev() {
            let prefix = parts[..n].join("/");
            if let Ok(Some((index, _))) = refs::load(&self.store, &Keys::new(&prefix)).await
                && index.root == prefix
            {
                return Some(Target {
                    root: index.root,
                    upstream: index.upstream,
                    subdir: index.subdir,
                });
            }
        }
        None
    }

    /// A module request named a revision the store lacks (a tag or commit pushed since the
    /// last refresh): refresh, waiting at most `upstream_wait`. `None` when the same revision
    /// was looked for within `negative_ttl` (see [`Repos::forget_revision`]).
    pub async fn refresh_for_revision(
        self: &Arc<Self>,
        target: &Target,
        repo: Arc<Repo>,
        rev: &str,
    ) -> Option<Arc<Repo>> {
        if self.is_negative(&format!("{} rev {rev}", target.root)) {
            return None;
        }
        Some(self.refresh_bounded(target, repo, Vec::new()).await)
    }

    /// Upstream did not have `rev` either: do not ask again within `negative_ttl`.
    pub fn forget_revision(&self, target: &Target, rev: &str) {
        self.set_negative(format!("{} rev {rev}", target.root));
    }

    /// Upstream says it changed (a push hook): refresh a stored repository now, whatever
    /// `refresh_after` says, joining a refresh only if it starts after this call (one already
    /// under way may have missed the push). The lease keeps it to one refresh across
    /// instances. `Ok(None)`: the store does not hold the repository (nothing is filled).
    pub async fn refresh_pushed(
        self: &Arc<Self>,
        target: &Target,
    ) -> Result<Option<Pushed>, String> {
        let running = lock(&self.inflight).get(&target.root).cloned();
        if let Some(earlier) = running {
            let _ = earlier.await;
        }
        // Read the ref index again (not the copy in memory): another instance may have
        // refreshed meanwhile.
        lock(&self.opened).remove(&target.root);
        let Some(repo) = self.stored(target).await.map_err(|e| e.public_message())? else {
            return Ok(None);
        };
        let before = repo.index.generation;
        match self.start_refresh(target, repo, Vec::new()).await {
            Ok(None) => Ok(Some(Pushed::Unchanged)),
            Ok(Some(loaded)) => {
                let generation = loaded.0.generation;
                self.build(target, loaded)
                    .await
                    .map_err(|e| e.public_message())?;
                Ok(Some(if generation > before {
                    Pushed::Updated { generation }
                } else {
                    Pushed::Unchanged
                }))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Refresh now, without a time bound, reporting errors (`goprox mirror`).
    pub async fn refresh_now(
        self: &Arc<Self>,
        target: &Target,
        repo: &Repo,
    ) -> Result<Refreshed, FillError> {
        let odb = repo.odb.clone();
        let has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync> =
            Arc::new(move |o: &ObjectId| odb.contains(o));
        let current = (repo.index.clone(), repo.etag.clone());
        let r = self.filler.refresh(target, &current, has, &[]).await;
        self.note_refresh(&target.root, &r);
        match r? {
            Refreshed::Updated(i, e, closing) => {
                let (i, e) = self.close(target, i, e, closing).await;
                self.start_keep_ahead(target, (i.clone(), e.clone()), Some(&repo.index));
                Ok(Refreshed::Updated(i, e, None))
            }
            r => Ok(r),
        }
    }

    /// Fill a repository the store does not have (or join the fill under way).
    async fn fill(self: &Arc<Self>, target: &Target) -> Result<(RefIndex, ETag), OpenError> {
        self.start_fill(target, false)?.wait().await
    }

    /// Start a fill, detached from the request (a client that hangs up does not cancel it;
    /// later requests join it), or join the one under way. With `follow`, clients may follow
    /// its pack as it arrives ([`Tap`]; a fill nobody can follow, `goprox mirror`'s, indexes
    /// the pack inline instead, in less memory).
    fn start_fill(
        self: &Arc<Self>,
        target: &Target,
        follow: bool,
    ) -> Result<Arc<FillRun>, OpenError> {
        if self.is_negative(&target.root) {
            return Err(OpenError::Fill(FillError::Fetch(FetchError::NotFound(
                target.upstream.clone(),
            ))));
        }
        let mut filling = lock(&self.filling);
        if let Some(run) = filling.get(&target.root) {
            return Ok(run.clone());
        }
        let tap = Arc::new(Tap::new(
            self.store.clone(),
            tokio::runtime::Handle::current(),
        ));
        let (this, t, tap2) = (self.clone(), target.clone(), tap.clone());
        // Detached, but logged under the request that started it.
        let task = tokio::spawn(
            async move {
                let r = this.filler.fill(&t, follow.then(|| tap2.clone())).await;
                tap2.close();
                match &r {
                    Ok((index, etag)) => {
                        this.start_bitmaps(&t, index);
                        this.start_keep_ahead(&t, (index.clone(), etag.clone()), None);
                        crate::refs::catalog::note_outcome(
                            &this.store,
                            &t.root,
                            Outcome::Filled,
                            None,
                        );
                    }
                    Err(e) => this.activity.error(&t.root, "fill", &e.public_message()),
                }
                if let Err(FillError::Fetch(FetchError::NotFound(_))) = &r {
                    this.set_negative(t.root.clone());
                }
                lock(&this.filling).remove(&t.root);
                r.map_err(|e| (e.failure(), Arc::<str>::from(e.to_string())))
            }
            .in_current_span(),
        );
        let done = async move {
            task.await.unwrap_or_else(|e| {
                Err((
                    crate::fill::Failure::Internal,
                    Arc::from(format!("fill task failed: {e}")),
                ))
            })
        }
        .boxed()
        .shared();
        let run = Arc::new(FillRun {
            tap,
            started: Instant::now(),
            done,
        });
        filling.insert(target.root.clone(), run.clone());
        Ok(run)
    }

    /// After a first fill (or on opening a repository without them): build reachability
    /// bitmaps of its pack in the background, store them beside it, then mark the pack in the
    /// ref index (`If-Match`; the bitmaps are written before the ref index names them). Only a repository of one pack holding the closure of
    /// its refs gets them; anything else is served by walking, as before.
    fn start_bitmaps(self: &Arc<Self>, target: &Target, index: &RefIndex) {
        if !index.closed || index.packs.len() != 1 || index.packs.iter().any(|p| p.bitmap) {
            return;
        }
        if !lock(&self.bitmaps_tried).insert(index.packs[0].name.clone()) {
            return;
        }
        let (this, t, index) = (self.clone(), target.clone(), index.clone());
        let delay = self.after_first_clone(&index);
        let task = tokio::spawn(
            async move {
                tokio::time::sleep(delay).await;
                let _turn = this.bitmap_turn.clone().acquire_owned().await;
                if let Err(e) = this.build_bitmaps(&t, index).await {
                    tracing::warn!(root = %t.root, error = %e, "no bitmaps for this repository");
                }
            }
            .in_current_span(),
        );
        let mut bg = lock(&self.background);
        bg.retain(|h| !h.is_finished());
        bg.push(task);
    }

    /// How long background work after a first fill of `index` waits: the client of a first
    /// clone resolves the pack's deltas after the fill has stored it, with every core it has,
    /// and CPU-bound work (even at low priority) on a shared machine would slow it down. About
    /// 1 s per 10 MB of pack, at most a minute; none in a batch (`goprox mirror`).
    fn after_first_clone(&self, index: &RefIndex) -> Duration {
        match index.packs.first() {
            Some(p) if self.serving => Duration::from_millis((p.size / 10_000).min(60_000)),
            _ => Duration::ZERO,
        }
    }

    /// After a fill (`before`: `None`) or a refresh that brought a new release (`before`: the
    /// ref index it started from): make and keep, in the background, the pack of the newest
    /// version's shallow fetch ([`crate::protocol::upload_pack::keep_ahead`]): the request the
    /// go command (`GOPROXY=direct`) and
    /// `git clone --depth=1 --branch` send first for a new release, which on a large
    /// repository costs a second of walking, delta resolving and compressing to make. Every
    /// instance then answers it from the kept pack. Only for repositories of at least
    /// `Io::pack_cache_min_objects` objects (smaller ones make it fast on demand); one such
    /// job at a time, after a first fill's client has had time to resolve its pack (as
    /// bitmaps).
    fn start_keep_ahead(
        self: &Arc<Self>,
        target: &Target,
        loaded: (RefIndex, ETag),
        before: Option<&RefIndex>,
    ) {
        let objects: u64 = loaded.0.packs.iter().map(|p| u64::from(p.objects)).sum();
        if objects < self.io.pack_cache_min_objects {
            return;
        }
        let Some((version, want)) = newest_version(&loaded.0) else {
            return;
        };
        // After a refresh, only for a new release: every refresh with news changes the pack
        // set (and so the key), and a pack per refresh of an active repository would fill
        // the bucket until gc. A version made ahead before is made again on request once.
        if !new_release(before, &version) {
            return;
        }
        let delay = match before {
            None => self.after_first_clone(&loaded.0),
            Some(_) => Duration::ZERO,
        };
        let (this, t) = (self.clone(), target.clone());
        let task = tokio::spawn(
            async move {
                tokio::time::sleep(delay).await;
                let _turn = this.bitmap_turn.clone().acquire_owned().await;
                let repo = match this.build(&t, loaded).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(root = %t.root, error = %e, "cannot open the repository to make its newest version's pack ahead");
                        return;
                    }
                };
                let started = Instant::now();
                let made = on_background_thread("goprox-keep-ahead", move || {
                    let req = crate::protocol::request::FetchRequest::shallow_tip(want);
                    crate::protocol::upload_pack::keep_ahead(&repo, &req)
                })
                .await;
                let ms = || started.elapsed().as_millis() as u64;
                match made {
                    Ok(Ok(KeptAhead::Made { objects, bytes })) => {
                        tracing::info!(root = %t.root, version, objects, bytes, ms = ms(),
                            "newest version's shallow fetch made ahead and kept");
                    }
                    Ok(Ok(other)) => {
                        tracing::debug!(root = %t.root, version, outcome = ?other, "newest version's shallow fetch not made ahead");
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(root = %t.root, version, error = %e, "making the newest version's shallow fetch ahead failed");
                    }
                    Err(e) => {
                        tracing::warn!(root = %t.root, version, error = %e, "cannot make a pack ahead");
                    }
                }
            }
            .in_current_span(),
        );
        let mut bg = lock(&self.background);
        bg.retain(|h| !h.is_finished());
        bg.push(task);
    }

    /// Wait for background work started by fills (bitmap builds): `goprox mirror` does before
    /// it exits.
    pub async fn finish_background(&self) {
        let tasks: Vec<_> = std::mem::take(&mut *lock(&self.background));
        for t in tasks {
            let _ = t.await;
        }
    }

    // Long because it is one background job in sequence (open, warm up, build on its own
    // thread, store, name in the ref index), each step using the previous one's result.
    async fn build_bitmaps(&self, target: &Target, index: RefIndex) -> Result<(), String> {
        let started = Instant::now();
        let Some(entry) = index.packs.first().cloned() else {
            return Ok(());
        };
        // Opened without warming the shared block cache (the build reads through its own).
        let pack = self
            .pack(&Keys::new(&target.root), &entry, false)
            .await
            .map_err(|e| e.to_string())?;
        let tips: Vec<ObjectId> = index
            .refs
            .values()
            .map(|r| r.peeled.unwrap_or(r.oid))
            .collect();
        // Through caches of its own: a build reads every commit and tree once, which would
        // only push what requests use out of the shared caches (and grow a process that has
        // not served anything yet, like `goprox mirror`, to their whole budget).
        let io = Arc::new(crate::odb::Io::new(
            self.store.clone(),
            tokio::runtime::Handle::current(),
            BITMAP_CACHE_BYTES,
        ));
        // Its commits and trees, in a few large GETs (most of the cache), instead of one block
        // miss after another as the walk goes.
        if let Some(end) = entry.walk_end {
            io.warm_up_to(
                &pack,
                end,
                (BITMAP_CACHE_BYTES / 4 * 3 - (8 << 20)) as u64,
                2,
            );
        }
        let odb = Arc::new(Odb::new(vec![pack], io));
        // Background work on a thread of its own at low priority: a first clone's client is
        // usually still resolving deltas on the same machine when the fill ends.
        let built = on_background_thread("goprox-bitmaps", move || {
            let pack = odb.packs.first().ok_or("no pack")?.clone();
            let b = crate::odb::bitmap::build(&odb, 0, &tips).map_err(|e| e.to_string())?;
            Ok::<_, String>(b.map(|b| (b.len(), b.to_bytes(&pack.checksum()))))
        })
        .await??;
        let Some((commits, bytes)) = built else {
            return Err("the pack does not hold the closure of its refs".into());
        };
        let keys = Keys::new(&target.root);
        let size = bytes.len();
        match self
            .store
            .put(
                &keys.bitmap(&entry.name),
                bytes.into(),
                crate::store::PutMode::CreateOnly,
            )
            .await
        {
            Ok(_) | Err(crate::store::StoreError::PreconditionFailed) => {}
            Err(e) => return Err(e.to_string()),
        }
        // Name them in the ref index, unless it moved on without this pack.
        let seen = refs::load(&self.store, &keys)
            .await
            .map_err(|e| e.to_string())?;
        let named = refs::update(&self.store, &keys, seen, |now| {
            let Some(mut next) = now.cloned() else {
                return refs::Change::Keep;
            };
            match next.packs.iter_mut().find(|p| p.name == entry.name) {
                Some(p) if !p.bitmap => {
                    p.bitmap = true;
                    refs::Change::Write(next)
                }
                _ => refs::Change::Keep,
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        if let refs::Updated::Written(index, etag) = named {
            tracing::info!(root = %target.root, commits, bytes = size,
                ms = started.elapsed().as_millis() as u64, "bitmaps stored");
            // This process serves with them from now on (others within `ref_ttl`).
            let _ = self.build(target, (index, etag)).await;
        }
        Ok(())
    }

    fn refresh_due(&self, repo: &Repo) -> bool {
        let after = self.policy.refresh_after;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if now.saturating_sub(repo.index.fetched_at) < after.as_secs() && !after.is_zero() {
            return false;
        }
        let checked = lock(&self.checked).get(&repo.root).copied();
        checked.is_none_or(|t| after.is_zero() || t.elapsed() >= after)
    }

    /// Start (or join) a refresh and wait for it at most `upstream_wait`.
    async fn refresh_bounded(
        self: &Arc<Self>,
        target: &Target,
        repo: Arc<Repo>,
        extra: Vec<ObjectId>,
    ) -> Arc<Repo> {
        let fut = self.start_refresh(target, repo.clone(), extra);
        // A request joining a refresh that has already run `upstream_wait` does not wait again
        // (a hung upstream costs each repository one wait, not one per request).
        let started = lock(&self.checked).get(&target.root).copied();
        let wait = self
            .policy
            .upstream_wait
            .saturating_sub(started.map(|t| t.elapsed()).unwrap_or_default());
        match tokio::time::timeout(wait, fut).await {
            Ok(Ok(Some(loaded))) => match self.build(target, loaded).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(root = %target.root, error = %e, "cannot open the refreshed repository; serving the last ref index");
                    repo
                }
            },
            Ok(Ok(None)) => repo,
            Ok(Err(e)) => {
                metrics::STALE_SERVES.inc();
                tracing::warn!(root = %target.root, error = %e, "refresh failed; serving the last ref index");
                repo
            }
            Err(_) => {
                metrics::STALE_SERVES.inc();
                tracing::warn!(root = %target.root, wait = ?wait, "upstream did not answer in time; serving the last ref index (the refresh goes on in the background)");
                repo
            }
        }
    }

    fn start_refresh(
        self: &Arc<Self>,
        target: &Target,
        repo: Arc<Repo>,
        extra: Vec<ObjectId>,
    ) -> SharedRefresh {
        let mut inflight = lock(&self.inflight);
        if let Some(f) = inflight.get(&target.root) {
            return f.clone();
        }
        lock(&self.checked).insert(target.root.clone(), Instant::now());
        let this = self.clone();
        let t = target.clone();
        let task = tokio::spawn(
            async move {
                let odb = repo.odb.clone();
                let has: Arc<dyn Fn(&ObjectId) -> bool + Send + Sync> =
                    Arc::new(move |o: &ObjectId| odb.contains(o));
                let current = (repo.index.clone(), repo.etag.clone());
                let r = this.filler.refresh(&t, &current, has, &extra).await;
                lock(&this.inflight).remove(&t.root);
                this.note_refresh(&t.root, &r);
                match r {
                    Ok(Refreshed::Unchanged) => Ok(None),
                    Ok(Refreshed::Updated(i, e, closing)) => {
                        let closed = this.close(&t, i, e, closing).await;
                        this.start_keep_ahead(&t, closed.clone(), Some(&current.0));
                        Ok(Some(closed))
                    }
                    Err(e) => {
                        metrics::REFRESH_ERRORS.inc();
                        tracing::info!(root = %t.root, error = %e, "refresh failed");
                        // What callers pass on (to a client, a hook, the status page).
                        Err(Arc::<str>::from(e.public_message()))
                    }
                }
            }
            .in_current_span(),
        );
        let shared = async move {
            task.await
                .unwrap_or_else(|e| Err(Arc::from(format!("refresh task failed: {e}"))))
        }
        .boxed()
        .shared();
        inflight.insert(target.root.clone(), shared.clone());
        shared
    }

    /// Mark a refreshed ref index closed ([`RefIndex::closed`]) when every ref it moved moved
    /// forward: one more `If-Match` replacement (a lost race keeps the other writer's index).
    async fn close(
        &self,
        target: &Target,
        index: RefIndex,
        etag: ETag,
        closing: crate::fill::Closing,
    ) -> (RefIndex, ETag) {
        let Some(moves) = closing else {
            return (index, etag);
        };
        if index.closed {
            return (index, etag);
        }
        let repo = match self.build(target, (index.clone(), etag.clone())).await {
            Ok(r) => r,
            Err(_) => return (index, etag),
        };
        let odb = repo.odb.clone();
        let forward = tokio::task::spawn_blocking(move || {
            moves
                .iter()
                .all(|(old, new)| crate::odb::walk::is_ancestor(&odb, old, new, ANCESTRY_BUDGET))
        })
        .await
        .unwrap_or(false);
        if !forward {
            return (index, etag);
        }
        let keys = Keys::new(&target.root);
        let seen = Some((index.clone(), etag.clone()));
        let closed = refs::update(&self.store, &keys, seen, |now| match now {
            Some(now) if now.generation == index.generation => refs::Change::Write(RefIndex {
                closed: true,
                ..index.clone()
            }),
            _ => refs::Change::Keep,
        })
        .await;
        match closed {
            Ok(refs::Updated::Written(next, e)) => (next, e),
            _ => (index, etag),
        }
    }

    /// Note how a look upstream went: in the catalog, and among the recent errors.
    fn note_refresh(&self, root: &str, r: &Result<Refreshed, FillError>) {
        let (outcome, error) = match r {
            Ok(Refreshed::Unchanged) => (Outcome::Unchanged, None),
            Ok(Refreshed::Updated(..)) => (Outcome::Updated, None),
            Err(e) => {
                let m = e.public_message();
                self.activity.error(root, "refresh", &m);
                (Outcome::Failed, Some(m))
            }
        };
        crate::refs::catalog::note_outcome(&self.store, root, outcome, error.as_deref());
    }

    /// Fills and refreshes this process has under way.
    pub fn in_progress(&self) -> Vec<Work> {
        let mut work: Vec<Work> = lock(&self.filling)
            .iter()
            .map(|(root, run)| Work {
                root: root.clone(),
                kind: "fill",
                running_for: run.started.elapsed(),
                bytes: Some(run.tap.received_bytes()),
            })
            .collect();
        let checked = lock(&self.checked);
        work.extend(lock(&self.inflight).keys().map(|root| Work {
            root: root.clone(),
            kind: "refresh",
            running_for: checked.get(root).map(|t| t.elapsed()).unwrap_or_default(),
            bytes: None,
        }));
        work.sort_by(|a, b| a.root.cmp(&b.root).then(a.kind.cmp(b.kind)));
        work
    }

    fn is_negative(&self, key: &str) -> bool {
        let mut m = lock(&self.negative);
        match m.get(key) {
            Some(t) if t.elapsed() < self.policy.negative_ttl => true,
            Some(_) => {
                m.remove(key);
                false
            }
            None => false,
        }
    }

    fn set_negative(&self, key: String) {
        let mut m = lock(&self.negative);
        // Bounded: forget expired entries before the map grows large.
        if m.len() > 10_000 {
            let ttl = self.policy.negative_ttl;
            m.retain(|_, t| t.elapsed() < ttl);
        }
        m.insert(key, Instant::now());
    }

    /// A [`Repo`] for one version of the ref index.
    async fn build(
        &self,
        target: &Target,
        (index, etag): (RefIndex, ETag),
    ) -> Result<Arc<Repo>, OpenError> {
        let keys = Keys::new(&target.root);
        let mut packs = Vec::with_capacity(index.packs.len());
        for p in &index.packs {
            packs.push(self.pack(&keys, p, self.serving).await?);
        }
        let bitmapped = index.packs.iter().map(|p| p.bitmap).collect();
        let repo = Arc::new(Repo {
            root: target.root.clone(),
            index,
            etag,
            odb: Arc::new(Odb::new(packs, self.io.clone()).with_bitmapped(bitmapped)),
        });
        self.remember(&repo);
        Ok(repo)
    }

    /// Pack `entry`, its index loaded once per process; with `warm`, a first load also starts
    /// loading its commits and trees into the block cache.
    async fn pack(
        &self,
        keys: &Keys,
        entry: &PackEntry,
        warm: bool,
    ) -> Result<Arc<Pack>, OpenError> {
        let (name, size) = (entry.name.as_str(), entry.size);
        let key = keys.pack(name);
        let cell = lock(&self.packs)
            .cells
            .entry(key.clone())
            .or_default()
            .clone();
        let pack = cell
            .get_or_try_init(|| async {
                let idx_key = keys.idx(name);
                let idx = self
                    .store
                    .get(&idx_key)
                    .await
                    .map_err(|e| OpenError::Pack(idx_key.clone(), e.to_string()))?
                    .ok_or_else(|| {
                        OpenError::Pack(idx_key.clone(), "missing from the store".into())
                    })?;
                // Parsing and sorting a large index is CPU work: not on a runtime worker.
                let (name, pack_key) = (name.to_string(), Arc::<str>::from(key.as_str()));
                let parsed = tokio::task::spawn_blocking(move || {
                    Pack::from_index_bytes(name, pack_key, size, idx.data.to_vec())
                })
                .await
                .map_err(|e| OpenError::Pack(idx_key.clone(), e.to_string()))?
                .map_err(|e| OpenError::Pack(idx_key, e))?;
                let pack = Arc::new(parsed);
                if let Some(end) = entry.walk_end.filter(|_| warm) {
                    self.io.warm(&pack, end);
                }
                Ok::<_, OpenError>(pack)
            })
            .await?
            .clone();
        self.account(&key, &pack);
        Ok(pack)
    }

    /// `repo`'s pack indexes were just used (a repository served from memory stays the most
    /// recently used, and is not the first evicted).
    fn touch(&self, repo: &Repo) {
        let mut p = lock(&self.packs);
        for pack in &repo.odb.packs {
            let _ = p.lru.get(&*pack.key);
        }
    }

    /// Count `pack` as just used; drop the least recently used indexes beyond the budget (and
    /// the opened repositories that hold them: their next request opens them again).
    fn account(&self, key: &str, pack: &Arc<Pack>) {
        let bytes = pack.memory_bytes();
        let evicted: Vec<String> = {
            let mut p = lock(&self.packs);
            let old = p.lru.put(key.to_string(), bytes).unwrap_or(0);
            p.bytes = (p.bytes + bytes).saturating_sub(old);
            let mut evicted = Vec::new();
            // The pack just used stays, whatever its size.
            while p.bytes > self.index_budget && p.lru.len() > 1 {
                let Some((k, b)) = p.lru.pop_lru() else { break };
                p.bytes = p.bytes.saturating_sub(b);
                p.cells.remove(&k);
                evicted.push(k);
            }
            evicted
        };
        if !evicted.is_empty() {
            metrics::PACK_INDEXES_EVICTED.add(evicted.len() as u64);
            lock(&self.opened).retain(|_, (repo, _)| {
                !repo
                    .odb
                    .packs
                    .iter()
                    .any(|p| evicted.iter().any(|k| **k == *p.key))
            });
        }
        let (held, n) = self.index_usage();
        metrics::pack_indexes(held, n);
    }
}

/// Default of `--index-cache-size`.
pub const DEFAULT_INDEX_BUDGET: u64 = 512 << 20;

/// Opened pack indexes, least recently used first.
struct PackIndexes {
    cells: HashMap<String, Arc<tokio::sync::OnceCell<Arc<Pack>>>>,
    /// Loaded ones, with the bytes each holds.
    lru: lru::LruCache<String, u64>,
    bytes: u64,
}

impl Default for PackIndexes {
    fn default() -> Self {
        PackIndexes {
            cells: HashMap::new(),
            lru: lru::LruCache::unbounded(),
            bytes: 0,
        }
    }
}

/// The ref index a fill will publish for `listing`, without its packs.
fn listed_index(target: &Target, listing: &Listing) -> RefIndex {
    RefIndex {
        version: refs::FORMAT_VERSION,
        generation: 0,
        root: target.root.clone(),
        upstream: target.upstream.clone(),
        subdir: target.subdir.clone(),
        fetched_at: 0,
        head_symref: listing.head_symref.clone(),
        head_oid: listing.head_oid,
        refs: listing.refs.clone(),
        packs: Vec::new(),
        retired: Vec::new(),
        closed: false,
    }
}

/// Lock a mutex, ignoring poisoning (the maps stay consistent: every update is one insert or
/// remove).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Run `work` on a thread of its own at background priority (CPU-bound work after a fill:
/// bitmaps, packs made ahead), after giving back the memory the fill freed; its result.
async fn on_background_thread<T: Send + 'static>(
    name: &str,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            crate::fill::inbound::background_priority();
            // The fill just freed its buffers; glibc keeps them in the arenas of the threads
            // that used them, where this thread's allocations cannot reuse them.
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: no arguments but a size; only returns free memory to the system.
            unsafe {
                libc::malloc_trim(0);
            }
            let _ = tx.send(work());
        })
        .map_err(|e| e.to_string())?;
    rx.await.map_err(|e| e.to_string())
}

/// The version a new client most likely fetches first: the highest release tag (`vX.Y.Z`,
/// canonical semver, no prerelease) with the object it names, else `HEAD`'s commit (what the
/// go command fetches for a repository without release tags).
fn newest_version(index: &RefIndex) -> Option<(String, ObjectId)> {
    use crate::modproxy::semver;
    let release = index
        .refs
        .iter()
        .filter_map(|(name, r)| {
            let v = name.strip_prefix("refs/tags/")?;
            (semver::canonical(v) == v && semver::prerelease(v).is_empty()).then_some((v, r.oid))
        })
        .max_by(|a, b| semver::compare(a.0, b.0));
    match release {
        Some((v, oid)) => Some((format!("refs/tags/{v}"), oid)),
        None => index.head().map(|oid| ("HEAD".to_string(), oid)),
    }
}

/// Whether `version` (from [`newest_version`] of a new ref index) is worth making ahead: after a
/// fill (`before` is `None`) always; after a refresh only when it is a release tag that was not
/// the newest in `before`.
fn new_release(before: Option<&RefIndex>, version: &str) -> bool {
    match before {
        None => true,
        Some(b) => version != "HEAD" && newest_version(b).is_none_or(|(v, _)| v != version),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The version made ahead: the highest release tag by semver (not by name, not a
    /// prerelease, not a non-canonical or nested tag); HEAD when there is none.
    #[test]
    fn newest_version_is_the_highest_release() {
        let id = |n: u8| ObjectId::from_bytes_or_panic(&[n; 20]);
        let mut index = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 1,
            root: "example.test/x".into(),
            upstream: "https://git.example/x".into(),
            subdir: String::new(),
            fetched_at: 1,
            head_symref: Some("refs/heads/main".into()),
            head_oid: None,
            refs: Default::default(),
            packs: vec![],
            retired: vec![],
            closed: false,
        };
        let add = |index: &mut RefIndex, name: &str, n: u8| {
            index.refs.insert(
                name.to_string(),
                refs::RefEntry {
                    oid: id(n),
                    peeled: None,
                },
            );
        };
        add(&mut index, "refs/heads/main", 1);
        add(&mut index, "refs/tags/latest", 2);
        add(&mut index, "refs/tags/v1.2", 3);
        add(&mut index, "refs/tags/v1.10.0-rc1", 4);
        add(&mut index, "refs/tags/sub/v9.0.0", 5);
        add(&mut index, "refs/tags/v1.9.0", 6);
        assert_eq!(
            newest_version(&index),
            Some(("refs/tags/v1.9.0".to_string(), id(6)))
        );
        add(&mut index, "refs/tags/v1.10.0", 7);
        assert_eq!(
            newest_version(&index),
            Some(("refs/tags/v1.10.0".to_string(), id(7)))
        );
        let with_releases = index.clone();
        index
            .refs
            .retain(|name, _| !name.starts_with("refs/tags/v1."));
        assert_eq!(newest_version(&index), Some(("HEAD".to_string(), id(1))));
        // Made ahead after a fill always; after a refresh only for a new release.
        assert!(new_release(None, "HEAD"));
        assert!(new_release(Some(&index), "refs/tags/v1.10.0"));
        assert!(new_release(Some(&with_releases), "refs/tags/v1.11.0"));
        assert!(!new_release(Some(&with_releases), "refs/tags/v1.10.0"));
        assert!(!new_release(Some(&index), "HEAD"));
    }

    #[tokio::test]
    async fn stored_target_finds_the_longest_stored_root() {
        let store: DynStore = Arc::new(crate::store::memory::MemoryStore::new());
        let index = RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 1,
            root: "vanity.example/x/tools".into(),
            upstream: "https://git.example/tools".into(),
            subdir: String::new(),
            fetched_at: 1,
            head_symref: None,
            head_oid: None,
            refs: Default::default(),
            packs: vec![],
            retired: vec![],
            closed: false,
        };
        let key = Keys::new(&index.root).ref_index();
        let json = serde_json::to_vec(&index).expect("json");
        store
            .put(
                &key,
                bytes::Bytes::from(json),
                crate::store::PutMode::CreateOnly,
            )
            .await
            .expect("put");
        let io = Arc::new(Io::new(
            store.clone(),
            tokio::runtime::Handle::current(),
            1 << 20,
        ));
        let repos = Repos::new(store.clone(), io, Filler::new(store));
        let t = repos
            .stored_target("vanity.example/x/tools/gopls/internal")
            .await
            .expect("found");
        assert_eq!(t.root, "vanity.example/x/tools");
        assert_eq!(t.upstream, "https://git.example/tools");
        assert!(
            repos
                .stored_target("vanity.example/x/other")
                .await
                .is_none()
        );
        assert!(repos.stored_target("vanity.example").await.is_none());
    }

    /// A one-blob pack (of `blob`) and its index: (name, pack bytes, index bytes).
    fn one_blob_pack(blob: &[u8]) -> (String, Vec<u8>, Vec<u8>) {
        use std::io::Write;
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        crate::odb::writer::entry_header(
            crate::odb::writer::EntryKind::Blob,
            blob.len() as u64,
            &mut pack,
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        z.write_all(blob).expect("deflate");
        pack.extend_from_slice(&z.finish().expect("deflate"));
        let sum = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(&pack));
        pack.extend_from_slice(&sum);
        let indexed = crate::odb::ingest::index_in_memory(&pack, 1 << 20).expect("index");
        (indexed.name, pack, indexed.idx)
    }

    /// A repository compacted 200 times (each time a new pack, the old one retired): the pack
    /// indexes held stay within the budget, and every version opens and reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pack_indexes_stay_within_their_budget_over_many_compactions() {
        use crate::store::PutMode;
        use bytes::Bytes;
        let store: DynStore = Arc::new(crate::store::memory::MemoryStore::new());
        let target = Target {
            root: "example.com/compacted/often".into(),
            upstream: "https://example.com/compacted/often".into(),
            subdir: String::new(),
        };
        let keys = Keys::new(&target.root);
        let io = Arc::new(Io::new(
            store.clone(),
            tokio::runtime::Handle::current(),
            1 << 20,
        ));
        // Room for about four one-object indexes.
        let budget = 4 * (1072 + 28 + 12) + 100;
        let repos = Arc::new(
            Repos::new(store.clone(), io, Filler::new(store.clone()))
                .with_policy(RefreshPolicy {
                    refresh_after: Duration::from_secs(3600),
                    ref_ttl: Duration::ZERO,
                    ..RefreshPolicy::default()
                })
                .with_index_budget(budget),
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let mut etag: Option<ETag> = None;
        let mut previous: Option<String> = None;
        for round in 0..200u32 {
            let blob = format!("version {round} of the only file");
            let (name, pack, idx) = one_blob_pack(blob.as_bytes());
            let size = pack.len() as u64;
            store
                .put(&keys.pack(&name), Bytes::from(pack), PutMode::CreateOnly)
                .await
                .expect("put pack");
            store
                .put(&keys.idx(&name), Bytes::from(idx), PutMode::CreateOnly)
                .await
                .expect("put idx");
            let index = RefIndex {
                version: refs::FORMAT_VERSION,
                generation: u64::from(round) + 1,
                root: target.root.clone(),
                upstream: target.upstream.clone(),
                subdir: String::new(),
                fetched_at: now,
                head_symref: None,
                head_oid: None,
                refs: Default::default(),
                packs: vec![PackEntry {
                    name: name.clone(),
                    checksum: None,
                    size,
                    objects: 1,
                    walk_end: None,
                    bitmap: false,
                }],
                retired: previous
                    .iter()
                    .map(|n| refs::Retired {
                        name: n.clone(),
                        at: now,
                    })
                    .collect(),
                closed: false,
            };
            etag = Some(
                refs::store(&store, &keys, &index, etag.as_ref())
                    .await
                    .expect("publish"),
            );
            let repo = repos.open(&target).await.expect("open");
            assert_eq!(repo.index.generation, u64::from(round) + 1);
            let id = gix_object::compute_hash(
                gix_hash::Kind::Sha1,
                gix_object::Kind::Blob,
                blob.as_bytes(),
            )
            .expect("hash");
            assert!(repo.odb.contains(&id), "round {round}");
            let (bytes, count) = repos.index_usage();
            assert!(bytes <= budget, "round {round}: {bytes} bytes held");
            assert!(count <= 4, "round {round}: {count} indexes held");
            previous = Some(name);
        }
        assert!(lock(&repos.packs).cells.len() <= 4);
    }
}
