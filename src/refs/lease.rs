//! Leases: a small JSON object per repository (`<root>/@git/lease.json`, see
//! [`crate::refs::Keys::lease`]) saying which instance is working on the repository (refreshing,
//! compacting, collecting garbage) and until when.
//!
//! ```json
//! {"holder":"host-1234","expires_at_ms":1767225600000,"generation":7,"nonce":"9f0c…","released":false}
//! ```
//!
//! * Acquire: create it with `If-None-Match: *`; if one exists and has expired (or was
//!   released), take it over with `If-Match: <its etag>`. Losing either race means another
//!   instance holds it ([`Acquire::Held`]).
//! * Renew: rewrite it with `If-Match: <our etag>` and a later expiry; a refused write means
//!   someone took it over after it expired ([`Lease::renew`] returns `false`).
//! * Release: rewrite it (again `If-Match`) as released, so anyone can take it at once; a lease
//!   that is no longer ours is left alone.
//!
//! A lease is an optimisation (one instance does the work, the others wait or serve what is
//! there), not what keeps the bucket consistent: that is the ref index's compare-and-swap.
//!
//! **Clock assumption.** Expiry is wall-clock milliseconds since the Unix epoch, compared by
//! every instance against its own clock. Instances' clocks must agree to well within the TTL
//! (NTP-synchronised hosts differ by milliseconds; use TTLs of tens of seconds or more). A
//! clock that runs ahead makes its owner take over leases early; a holder protects itself by
//! renewing well before expiry (every TTL/3 in [`spawn_renewal`]) and by treating a lease it
//! could not renew before its expiry as lost.

use crate::store::{DynStore, ETag, PutMode, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attempts of [`try_acquire`] when the object changes under it (created, released, deleted).
const ACQUIRE_ATTEMPTS: usize = 4;

/// The stored form of a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// Who holds it: an instance name such as [`default_holder`]'s `<hostname>-<pid>`.
    pub holder: String,
    /// Wall-clock Unix milliseconds after which the lease may be taken over.
    pub expires_at_ms: u64,
    /// Incremented on every write of the lease object.
    pub generation: u64,
    /// Random per acquisition: two acquisitions never write the same bytes.
    pub nonce: String,
    /// Given up by its holder: takeable at once whatever the clocks say.
    #[serde(default)]
    pub released: bool,
}

impl LeaseRecord {
    /// Whether it can be taken over at `now_ms`.
    pub fn takeable(&self, now_ms: u64) -> bool {
        self.released || now_ms >= self.expires_at_ms
    }
}

/// A lease this process holds.
#[derive(Debug)]
pub struct Lease {
    key: String,
    holder: String,
    nonce: String,
    generation: u64,
    etag: ETag,
    expires_at_ms: u64,
    /// The time its expiry is computed from (the system clock outside unit tests).
    clock: Clock,
}

/// Outcome of [`try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// It is ours until [`Lease::expires_at_ms`]: renew it to keep it, release it when done.
    Acquired(Lease),
    /// Someone else holds it (as far as we could tell: `holder` is empty if the lease changed
    /// hands too often to read it).
    Held {
        /// The holder's name, as written in the lease (empty if unknown).
        holder: String,
        /// When that holder's lease expires unless renewed (wall-clock Unix milliseconds; 0
        /// if unknown).
        expires_at_ms: u64,
    },
}

/// Wall-clock Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where a lease reads the time its expiry is computed from and compared with: the system
/// clock ([`now_ms`]), or in unit tests a clock the test sets, so that expiry is tested
/// without sleeping.
#[derive(Debug, Clone, Default)]
enum Clock {
    #[default]
    System,
    #[cfg(test)]
    Manual(std::sync::Arc<std::sync::atomic::AtomicU64>),
}

impl Clock {
    fn now_ms(&self) -> u64 {
        match self {
            Clock::System => now_ms(),
            #[cfg(test)]
            Clock::Manual(t) => t.load(Ordering::SeqCst),
        }
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

fn new_nonce(holder: &str) -> String {
    crate::store::probe::unique_token(holder, 8)
}

fn encode(rec: &LeaseRecord) -> Bytes {
    // Serialising a struct of strings and integers cannot fail; fall back to a minimal body
    // rather than panic on a request path.
    Bytes::from(serde_json::to_vec(rec).unwrap_or_else(|_| b"{}".to_vec()))
}

/// Parse a stored lease; an unreadable one is treated as expired (anyone may take it over).
pub fn decode(data: &[u8]) -> Option<LeaseRecord> {
    serde_json::from_slice(data).ok()
}

/// A name for this process as a lease holder: `<hostname>-<pid>`.
pub fn default_holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "goprox".to_string());
    format!("{host}-{}", std::process::id())
}

/// Take the lease at `key` for `ttl` unless someone else holds an unexpired one.
pub async fn try_acquire(
    store: &DynStore,
    key: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Acquire, StoreError> {
    acquire_with(store, key, holder, ttl, Clock::System).await
}

/// [`try_acquire`] with the time read from `clock`.
async fn acquire_with(
    store: &DynStore,
    key: &str,
    holder: &str,
    ttl: Duration,
    clock: Clock,
) -> Result<Acquire, StoreError> {
    let nonce = new_nonce(holder);
    let mut last_seen: Option<LeaseRecord> = None;
    for _ in 0..ACQUIRE_ATTEMPTS {
        let now = clock.now_ms();
        let current = store.get(key).await?;
        let (mode, generation) = match &current {
            None => (PutMode::CreateOnly, 1),
            Some(got) => match decode(&got.data) {
                Some(rec) if !rec.takeable(now) => {
                    return Ok(Acquire::Held {
                        holder: rec.holder,
                        expires_at_ms: rec.expires_at_ms,
                    });
                }
                Some(rec) => {
                    let generation = rec.generation + 1;
                    last_seen = Some(rec);
                    (PutMode::IfMatch(got.etag.clone()), generation)
                }
                None => {
                    tracing::warn!(key, "unreadable lease object: taking it over");
                    (PutMode::IfMatch(got.etag.clone()), 1)
                }
            },
        };
        let rec = LeaseRecord {
            holder: holder.to_string(),
            expires_at_ms: now.saturating_add(ttl_ms(ttl)),
            generation,
            nonce: nonce.clone(),
            released: false,
        };
        match store.put(key, encode(&rec), mode).await {
            Ok(etag) => {
                return Ok(Acquire::Acquired(Lease {
                    key: key.to_string(),
                    holder: rec.holder,
                    nonce: rec.nonce,
                    generation: rec.generation,
                    etag,
                    expires_at_ms: rec.expires_at_ms,
                    clock,
                }));
            }
            // Someone else created or took it over first: look again (normally it is now held).
            Err(StoreError::PreconditionFailed) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(match last_seen {
        Some(rec) => Acquire::Held {
            holder: rec.holder,
            expires_at_ms: rec.expires_at_ms,
        },
        None => Acquire::Held {
            holder: String::new(),
            expires_at_ms: 0,
        },
    })
}

impl Lease {
    /// Name of the holder (this process), as written in the lease.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Store key of the lease object.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// When it expires unless renewed (wall-clock Unix milliseconds).
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    fn record(&self, expires_at_ms: u64, released: bool) -> LeaseRecord {
        LeaseRecord {
            holder: self.holder.clone(),
            expires_at_ms,
            generation: self.generation + 1,
            nonce: self.nonce.clone(),
            released,
        }
    }

    /// Extend the lease to `now + ttl`. `Ok(false)`: it is no longer ours (it expired and
    /// someone took it over, or it was deleted); stop working on the repository.
    pub async fn renew(&mut self, store: &DynStore, ttl: Duration) -> Result<bool, StoreError> {
        let rec = self.record(self.clock.now_ms().saturating_add(ttl_ms(ttl)), false);
        match store
            .put(&self.key, encode(&rec), PutMode::IfMatch(self.etag.clone()))
            .await
        {
            Ok(etag) => {
                self.etag = etag;
                self.generation = rec.generation;
                self.expires_at_ms = rec.expires_at_ms;
                Ok(true)
            }
            Err(StoreError::PreconditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Give the lease up so that anyone can take it at once. Only if it is still ours
    /// (`If-Match`): another holder's lease is never overwritten.
    pub async fn release(self, store: &DynStore) -> Result<(), StoreError> {
        // Expiry "now" (not 0) so that `goprox gc` ages released leases from their release.
        let rec = self.record(self.clock.now_ms(), true);
        match store
            .put(&self.key, encode(&rec), PutMode::IfMatch(self.etag.clone()))
            .await
        {
            Ok(_) | Err(StoreError::PreconditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl Lease {
    /// Delete the lease object, if it is still ours. The store has no conditional delete, so
    /// ownership is confirmed by a renewal (`If-Match`) just before the delete: after it nobody
    /// else can take the lease for `ttl`. Returns false (and deletes nothing) if it was lost.
    pub async fn remove(mut self, store: &DynStore, ttl: Duration) -> Result<bool, StoreError> {
        if !self.renew(store, ttl).await? {
            return Ok(false);
        }
        store.delete(&self.key).await?;
        Ok(true)
    }
}

/// Work's heartbeat, by lease key: when it last moved (Unix ms).
static BEATS: std::sync::Mutex<Option<std::collections::HashMap<String, u64>>> =
    std::sync::Mutex::new(None);

/// The work on the repository whose store key `key` is (any key under `<root>/@git/`) moved:
/// bytes came from upstream, or were read back from the store. A lease renewed with
/// [`spawn_renewal_while_progressing`] is only renewed while such beats come.
pub fn beat_for(key: &str) {
    let Some((root, _)) = crate::refs::parse_key(key) else {
        return;
    };
    let lease = crate::refs::Keys::new(root).lease();
    let mut g = BEATS.lock().unwrap_or_else(|e| e.into_inner());
    g.get_or_insert_with(Default::default)
        .insert(lease, now_ms());
}

fn last_beat(lease_key: &str) -> Option<u64> {
    let g = BEATS.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref().and_then(|m| m.get(lease_key).copied())
}

fn forget_beats(lease_key: &str) {
    let mut g = BEATS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(m) = g.as_mut() {
        m.remove(lease_key);
    }
}

/// How long work may go without a beat before its lease is left to expire: three TTLs
/// (longer than the fill's own idle limit, so only work stuck past its own timeouts loses it).
pub fn stall_limit(ttl: Duration) -> Duration {
    ttl.saturating_mul(3)
}

/// Leases this process holds now (renewal tasks running).
static HELD: AtomicUsize = AtomicUsize::new(0);
/// Leases given back by [`hand_off`].
static HANDED_OFF: AtomicUsize = AtomicUsize::new(0);

/// Set when the process stops: every renewal gives its lease back.
fn stopping() -> &'static tokio::sync::watch::Sender<bool> {
    static TX: OnceLock<tokio::sync::watch::Sender<bool>> = OnceLock::new();
    TX.get_or_init(|| tokio::sync::watch::channel(false).0)
}

/// Resolves once the process is stopping.
async fn until_stopping(rx: &mut tokio::sync::watch::Receiver<bool>) {
    loop {
        let now = *rx.borrow_and_update();
        if now {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Counts a renewal task while it runs.
struct Holding;
impl Holding {
    fn new() -> Self {
        HELD.fetch_add(1, Ordering::SeqCst);
        Holding
    }
}
impl Drop for Holding {
    fn drop(&mut self) {
        HELD.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How many leases this process holds now (fills, refreshes, compactions, gc at work).
pub fn held() -> usize {
    HELD.load(Ordering::SeqCst)
}

/// Wait until this process holds no lease (its work is done), at most until `deadline`;
/// true if none is held.
pub async fn quiesce(deadline: std::time::Instant) -> bool {
    while held() > 0 {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The process stops: every lease it holds is released (`If-Match`, so only if still ours)
/// so that another instance takes the work over at once instead of after the lease expires.
/// Waits at most `limit`; returns how many were handed off. The work itself is not
/// stopped here (the runtime's shutdown cuts it): what it stored stays usable (a received
/// fill is adopted by the next holder, see `fill::received`).
pub async fn hand_off(limit: Duration) -> usize {
    let before = HANDED_OFF.load(Ordering::SeqCst);
    stopping().send_replace(true);
    let _ = quiesce(std::time::Instant::now() + limit).await;
    HANDED_OFF.load(Ordering::SeqCst) - before
}

/// A lease renewed in the background by [`spawn_renewal`].
#[derive(Debug)]
pub struct Renewal {
    stop: tokio::sync::oneshot::Sender<()>,
    lost: tokio::sync::watch::Receiver<bool>,
    task: tokio::task::JoinHandle<Option<Lease>>,
}

impl Renewal {
    /// True once the lease is known to be lost (taken over, or not renewable before expiry).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lease is lost (never, while renewals succeed).
    pub async fn lost(&mut self) {
        // An error means the task ended: then `stop` decides.
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Stop renewing; gives the lease back unless it was lost.
    pub async fn stop(self) -> Option<Lease> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// Renew `lease` every `ttl / 3` (each time for `ttl`) until [`Renewal::stop`]. A renewal
/// refused because someone took the lease over, or failing until the lease has expired,
/// marks it lost.
pub fn spawn_renewal(store: DynStore, lease: Lease, ttl: Duration) -> Renewal {
    renewal(store, lease, ttl, None)
}

/// [`spawn_renewal`] for work that beats ([`beat_for`]): the lease is renewed only while the
/// work moves. Work silent for [`stall_limit`] (blocked, or stuck past its own timeouts) stops
/// renewing, so that another instance takes the repository over when the lease expires.
pub fn spawn_renewal_while_progressing(store: DynStore, lease: Lease, ttl: Duration) -> Renewal {
    forget_beats(&lease.key);
    renewal(store, lease, ttl, Some(stall_limit(ttl)))
}

fn renewal(store: DynStore, mut lease: Lease, ttl: Duration, stall: Option<Duration>) -> Renewal {
    let since = now_ms();
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel();
    let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
    let every = (ttl / 3).max(Duration::from_millis(10));
    let mut down = stopping().subscribe();
    let holding = Holding::new();
    let task = tokio::spawn(async move {
        let _holding = holding;
        loop {
            tokio::select! {
                _ = &mut stop_rx => return Some(lease),
                () = until_stopping(&mut down) => {
                    let key = lease.key.clone();
                    match lease.release(&store).await {
                        Ok(()) => {
                            HANDED_OFF.fetch_add(1, Ordering::SeqCst);
                            tracing::info!(key = %key, "stopping: lease handed off to the next instance");
                        }
                        Err(e) => tracing::warn!(key = %key, error = %e, "stopping: releasing the lease failed; it will expire"),
                    }
                    let _ = lost_tx.send(true);
                    return None;
                }
                _ = tokio::time::sleep(every) => {}
            }
            if let Some(stall) = stall {
                let last = last_beat(&lease.key).unwrap_or(since).max(since);
                if now_ms().saturating_sub(last) > ttl_ms(stall) {
                    tracing::warn!(key = %lease.key, silent = ?stall, "the work holding this lease made no progress: no longer renewed, another instance may take over when it expires");
                    forget_beats(&lease.key);
                    let _ = lost_tx.send(true);
                    return None;
                }
            }
            match lease.renew(&store, ttl).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(key = %lease.key, "lease taken over by another instance");
                    let _ = lost_tx.send(true);
                    return None;
                }
                Err(e) if lease.clock.now_ms() >= lease.expires_at_ms => {
                    tracing::warn!(key = %lease.key, error = %e, "lease expired: renewals failed");
                    let _ = lost_tx.send(true);
                    return None;
                }
                Err(e) => {
                    tracing::warn!(key = %lease.key, error = %e, "lease renewal failed, retrying");
                }
            }
        }
    });
    Renewal {
        stop: stop_tx,
        lost: lost_rx,
        task,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    const KEY: &str = "example.com/r/@git/lease.json";

    fn store() -> DynStore {
        Arc::new(MemoryStore::new())
    }

    fn acquired(a: Acquire) -> Lease {
        match a {
            Acquire::Acquired(l) => l,
            Acquire::Held { holder, .. } => panic!("expected to acquire, held by {holder:?}"),
        }
    }

    fn held_by(a: Acquire) -> String {
        match a {
            Acquire::Held { holder, .. } => holder,
            Acquire::Acquired(l) => panic!("expected Held, acquired by {}", l.holder()),
        }
    }

    async fn stored(store: &DynStore) -> LeaseRecord {
        decode(&store.get(KEY).await.unwrap().unwrap().data).unwrap()
    }

    const MIN: Duration = Duration::from_secs(60);

    /// The time as the test sets it: leases acquired with it expire when the test says, not
    /// when the machine gets round to it.
    struct TestClock(Arc<AtomicU64>);

    impl TestClock {
        fn new() -> TestClock {
            TestClock(Arc::new(AtomicU64::new(1_767_225_600_000)))
        }
        fn clock(&self) -> Clock {
            Clock::Manual(self.0.clone())
        }
        fn now(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
        fn advance(&self, ms: u64) {
            self.0.fetch_add(ms, Ordering::SeqCst);
        }
    }

    /// [`try_acquire`] of `KEY` on the test's clock.
    async fn acquire_at(s: &DynStore, holder: &str, ttl: Duration, t: &TestClock) -> Acquire {
        acquire_with(s, KEY, holder, ttl, t.clock()).await.unwrap()
    }

    /// Waits until the stored lease expires at `at` (a renewal on the current time landed).
    /// The bound is real time and generous: renewals come every few tens of milliseconds.
    async fn renewed_to(s: &DynStore, at: u64) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while stored(s).await.expires_at_ms != at {
            assert!(
                std::time::Instant::now() < deadline,
                "not renewed to {at} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn acquire_then_second_is_held() {
        let s = store();
        let t = TestClock::new();
        let a = acquired(acquire_at(&s, "a", MIN, &t).await);
        assert_eq!(a.holder(), "a");
        assert_eq!(a.expires_at_ms(), t.now() + 60_000);
        let rec = stored(&s).await;
        assert_eq!(rec.holder, "a");
        assert_eq!(rec.expires_at_ms, a.expires_at_ms());
        assert!(!rec.released);
        match acquire_at(&s, "b", MIN, &t).await {
            Acquire::Held {
                holder,
                expires_at_ms,
            } => {
                assert_eq!(holder, "a");
                assert_eq!(expires_at_ms, a.expires_at_ms());
            }
            Acquire::Acquired(_) => panic!("second acquire succeeded"),
        }
        // The holder itself cannot acquire twice either.
        assert_eq!(held_by(acquire_at(&s, "a", MIN, &t).await), "a");
        // Still held on the last millisecond before its expiry.
        t.advance(59_999);
        assert_eq!(held_by(acquire_at(&s, "b", MIN, &t).await), "a");
    }

    #[tokio::test]
    async fn expired_lease_is_taken_over_and_old_holder_loses_renewal() {
        let s = store();
        let t = TestClock::new();
        let mut a = acquired(acquire_at(&s, "a", Duration::from_millis(30), &t).await);
        t.advance(29);
        assert_eq!(held_by(acquire_at(&s, "b", MIN, &t).await), "a");
        // At its expiry it is takeable.
        t.advance(1);
        let b = acquired(acquire_at(&s, "b", MIN, &t).await);
        assert_eq!(b.holder(), "b");
        assert_eq!(stored(&s).await.holder, "b");
        assert_eq!(stored(&s).await.generation, 2);
        assert!(!a.renew(&s, MIN).await.unwrap(), "renewal after takeover");
        // The loser's release leaves the new holder's lease alone.
        a.release(&s).await.unwrap();
        let rec = stored(&s).await;
        assert_eq!(rec.holder, "b");
        assert!(!rec.released);
        assert_eq!(held_by(acquire_at(&s, "c", MIN, &t).await), "b");
    }

    #[tokio::test]
    async fn renewal_extends() {
        let s = store();
        let t = TestClock::new();
        let ttl = Duration::from_millis(80);
        let mut a = acquired(acquire_at(&s, "a", ttl, &t).await);
        let first = a.expires_at_ms();
        assert_eq!(first, t.now() + 80);
        t.advance(50);
        assert!(a.renew(&s, ttl).await.unwrap());
        assert_eq!(a.expires_at_ms(), t.now() + 80);
        assert_eq!(stored(&s).await.expires_at_ms, a.expires_at_ms());
        // 100 ms after acquiring: past the first expiry, within the renewed one.
        t.advance(50);
        assert!(t.now() >= first && t.now() < a.expires_at_ms());
        assert_eq!(held_by(acquire_at(&s, "b", ttl, &t).await), "a");
        assert!(a.renew(&s, MIN).await.unwrap());
        assert_eq!(held_by(acquire_at(&s, "b", ttl, &t).await), "a");
        // Not renewed again: once that expires, it is taken over and the renewal is refused.
        t.advance(60_000);
        assert_eq!(acquired(acquire_at(&s, "b", ttl, &t).await).holder(), "b");
        assert!(!a.renew(&s, MIN).await.unwrap());
    }

    #[tokio::test]
    async fn release_makes_it_immediately_takeable() {
        let s = store();
        let a = acquired(try_acquire(&s, KEY, "a", MIN).await.unwrap());
        a.release(&s).await.unwrap();
        assert!(stored(&s).await.released);
        let b = acquired(try_acquire(&s, KEY, "b", MIN).await.unwrap());
        assert_eq!(b.holder(), "b");
        let rec = stored(&s).await;
        assert_eq!((rec.holder.as_str(), rec.released), ("b", false));
    }

    #[tokio::test]
    async fn remove_deletes_only_our_own_lease() {
        let s = store();
        let a = acquired(try_acquire(&s, KEY, "a", MIN).await.unwrap());
        assert!(a.remove(&s, MIN).await.unwrap());
        assert!(s.get(KEY).await.unwrap().is_none());
        let t = TestClock::new();
        let a = acquired(acquire_at(&s, "a", Duration::from_millis(1), &t).await);
        t.advance(1);
        let _b = acquired(acquire_at(&s, "b", MIN, &t).await);
        assert!(!a.remove(&s, MIN).await.unwrap());
        assert_eq!(stored(&s).await.holder, "b");
    }

    #[tokio::test]
    async fn deleted_lease_means_lost() {
        let s = store();
        let mut a = acquired(try_acquire(&s, KEY, "a", MIN).await.unwrap());
        s.delete(KEY).await.unwrap();
        assert!(!a.renew(&s, MIN).await.unwrap());
        // Releasing a lease that is gone does not recreate it.
        a.release(&s).await.unwrap();
        assert!(s.get(KEY).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn unreadable_lease_is_taken_over() {
        let s = store();
        s.put(KEY, Bytes::from_static(b"not json"), PutMode::Overwrite)
            .await
            .unwrap();
        let a = acquired(try_acquire(&s, KEY, "a", MIN).await.unwrap());
        assert_eq!(stored(&s).await.holder, a.holder());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixteen_concurrent_acquirers_one_wins() {
        let s = store();
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                try_acquire(&s, KEY, &format!("h{i}"), MIN).await.unwrap()
            }));
        }
        let mut winners = Vec::new();
        let mut held = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Acquire::Acquired(l) => winners.push(l.holder().to_string()),
                Acquire::Held { holder, .. } => held.push(holder),
            }
        }
        assert_eq!(winners.len(), 1, "winners: {winners:?}");
        assert_eq!(held.len(), 15);
        assert!(
            held.iter().all(|h| *h == winners[0]),
            "{held:?} vs {winners:?}"
        );
        assert_eq!(stored(&s).await.holder, winners[0]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixteen_concurrent_takeovers_of_an_expired_lease_one_wins() {
        let s = store();
        let t = TestClock::new();
        let old = acquired(acquire_at(&s, "old", Duration::from_millis(1), &t).await);
        t.advance(1);
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (s, clock) = (s.clone(), t.clock());
            tasks.push(tokio::spawn(async move {
                acquire_with(&s, KEY, &format!("h{i}"), MIN, clock)
                    .await
                    .unwrap()
            }));
        }
        let mut winners = 0;
        for t in tasks {
            if let Acquire::Acquired(_) = t.await.unwrap() {
                winners += 1;
            }
        }
        assert_eq!(winners, 1);
        assert_ne!(stored(&s).await.holder, old.holder());
    }

    #[tokio::test]
    async fn background_renewal_keeps_it_and_reports_loss() {
        let s = store();
        // Renewals run every 30 ms of real time, but the lease's time only moves when the test
        // moves it: however late a renewal runs, the lease cannot expire before it.
        let t = TestClock::new();
        let ttl = Duration::from_millis(90);
        let a = acquired(acquire_at(&s, "a", ttl, &t).await);
        let first = a.expires_at_ms();
        let r = spawn_renewal(s.clone(), a, ttl);
        t.advance(60);
        renewed_to(&s, t.now() + 90).await;
        // Past the first expiry: the renewal kept it.
        t.advance(60);
        assert!(t.now() > first);
        assert!(!r.is_lost());
        assert_eq!(held_by(acquire_at(&s, "b", ttl, &t).await), "a");
        renewed_to(&s, t.now() + 90).await;
        let a = r.stop().await.expect("still ours");
        assert!(stored(&s).await.generation >= 3, "renewed at least twice");
        assert_eq!(a.expires_at_ms(), stored(&s).await.expires_at_ms);
        a.release(&s).await.unwrap();

        // Someone deletes it: the next renewal notices (the bound is only a generous limit).
        let a = acquired(acquire_at(&s, "a", ttl, &t).await);
        let mut r = spawn_renewal(s.clone(), a, ttl);
        s.delete(KEY).await.unwrap();
        tokio::time::timeout(Duration::from_secs(30), r.lost())
            .await
            .expect("loss reported");
        assert!(r.is_lost());
        assert!(r.stop().await.is_none());
    }
}
