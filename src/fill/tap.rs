//! A fill's pack passed through to clients while it arrives, so that the very first clone of a
//! repository costs about what cloning upstream directly costs.
//!
//! A fill started by a request carries a [`Tap`]. It publishes upstream's ref listing as soon
//! as it is known (the ref advertisement can be answered from it before the pack is stored),
//! and hands every received pack byte to its subscribers. A client that wants exactly what the
//! fill fetches (a clone of everything) subscribes and gets upstream's pack byte for byte: the
//! same bytes that are stored.
//!
//! Memory stays bounded:
//! - the bytes received so far are kept only while the pack is young ([`JOIN_WINDOW`]); a
//!   client that comes later waits for the fill and is served from the store;
//! - each subscriber has a bounded queue; one that falls behind is dropped from the broadcast
//!   and reads the rest of the pack from the store once the pack is there.
//!
//! A client slower than upstream (one resolving what it receives on a small machine) is not
//! dropped at once, or it would wait for the whole pack to be stored: the copy waits for room
//! in its queue, holding upstream back to the client's pace, while no request waits for the
//! fill's end, for at most [`MAX_HOLD`] in all and [`FOLLOWER_STALL`] at a time.
//!
//! The indexer is one more follower, but it yields to the clients ([`Tap::yield_to_clients`]):
//! while one is receiving the pack, and for about as long again as the client needs to resolve
//! what it received, the indexer waits and later reads the pack back from the store. On a
//! small machine the client's bytes (and its own delta resolution) come first; a request that
//! waits for the fill's result ends the wait at once, and so does [`MAX_YIELD`].

use super::stored::{READ_WINDOW, StoreSource};
use super::upstream::Listing;
use crate::odb::ingest::PackSource;
use crate::store::DynStore;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Bytes of a pack kept for subscribers that join after it started.
pub const JOIN_WINDOW: usize = 32 << 20;
/// Bytes handed to subscribers at a time.
const CHUNK_BYTES: usize = 256 << 10;
/// Chunks a subscriber may have queued before it is left to catch up from the store.
const QUEUED_CHUNKS: usize = 64;
/// The longest the copy waits for clients' queues in all.
pub const MAX_HOLD: Duration = Duration::from_secs(60);
/// The longest the copy waits for room in one client's queue at a time.
const FOLLOWER_STALL: Duration = Duration::from_secs(5);
/// The longest an indexer yields to clients in all.
pub const MAX_YIELD: Duration = Duration::from_secs(60);
/// How fast a client is assumed to resolve a received pack's deltas: after its last byte, the
/// indexer yields for the pack's size at this rate.
const CLIENT_RESOLVE_BYTES_PER_SEC: u64 = 16 << 20;
/// How often a yielding indexer looks again.
const YIELD_POLL: Duration = Duration::from_millis(50);

/// Where the pack is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Bytes are arriving.
    Receiving,
    /// The whole pack arrived (its trailer checked): so many bytes.
    Received(u64),
    /// The pack is in the store.
    Stored {
        /// The pack's store key.
        key: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The fill failed or ended without a pack.
    Failed(Arc<str>),
}

struct Broadcast {
    /// Every byte emitted so far, while subscribers may still join.
    prefix: Option<Vec<Bytes>>,
    prefix_bytes: usize,
    /// Received, not yet emitted.
    pending: BytesMut,
    subscribers: Vec<Subscriber>,
    total: u64,
    /// Subscribers joined so far (their ids).
    joined: u64,
    /// How long the copy has waited for clients' queues.
    held: Duration,
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Bytes>,
    /// A client (the copy may wait for it), not the indexer.
    client: bool,
}

/// A chunk a client's full queue could not take at once: sent after the broadcast's lock is
/// released.
type Blocked = Vec<(u64, mpsc::Sender<Bytes>, Bytes)>;

/// One fill's ref listing and pack bytes, shared with the requests that follow the fill.
pub struct Tap {
    store: DynStore,
    rt: tokio::runtime::Handle,
    listing: watch::Sender<Option<Arc<Listing>>>,
    outcome: watch::Sender<Outcome>,
    state: Mutex<Broadcast>,
    demand: Arc<Demand>,
}

/// Who needs the fill now: clients following its pack, and requests waiting for its end.
#[derive(Default)]
struct Demand {
    following: AtomicUsize,
    waiting: AtomicUsize,
    /// When the last client stopped following, and the bytes it had taken.
    last_followed: Mutex<Option<(Instant, u64)>>,
}

impl Demand {
    /// Whether the indexer should leave the CPU to clients now.
    fn clients_first(&self) -> bool {
        if self.waiting.load(Ordering::Acquire) > 0 {
            return false;
        }
        if self.following.load(Ordering::Acquire) > 0 {
            return true;
        }
        let last = *self.last_followed.lock().unwrap_or_else(|e| e.into_inner());
        last.is_some_and(|(at, bytes)| {
            at.elapsed() < Duration::from_millis(bytes * 1000 / CLIENT_RESOLVE_BYTES_PER_SEC)
        })
    }
}

/// A request waiting for the fill's end (see [`Tap::waiting`]).
pub struct Waiting(Arc<Demand>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Tap {
    /// A tap for a fill into `store`; its blocking readers wait on `rt` (for the fill's
    /// outcome, and for store reads of a pack they fell behind on).
    pub fn new(store: DynStore, rt: tokio::runtime::Handle) -> Self {
        Tap {
            store,
            rt,
            listing: watch::Sender::new(None),
            outcome: watch::Sender::new(Outcome::Receiving),
            state: Mutex::new(Broadcast {
                prefix: Some(Vec::new()),
                prefix_bytes: 0,
                pending: BytesMut::new(),
                subscribers: Vec::new(),
                total: 0,
                joined: 0,
                held: Duration::ZERO,
            }),
            demand: Arc::default(),
        }
    }

    /// A request waits for the fill's result (while the value is held): the indexer stops
    /// yielding.
    pub fn waiting(&self) -> Waiting {
        self.demand.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(self.demand.clone())
    }

    /// Called by the indexer between chunks: wait (on this blocking thread) while clients come
    /// first, up to [`MAX_YIELD`] in all (counted in `yielded`).
    pub fn yield_to_clients(&self, yielded: &mut Duration) {
        while *yielded < MAX_YIELD && self.demand.clients_first() {
            std::thread::sleep(YIELD_POLL);
            *yielded += YIELD_POLL;
        }
    }

    /// Like [`Tap::subscribe`], for a client: the indexer yields to it.
    pub fn follow(&self, rt: tokio::runtime::Handle) -> Option<Feed> {
        let mut feed = self.join(rt, true)?;
        self.demand.following.fetch_add(1, Ordering::AcqRel);
        feed.follower = Some(self.demand.clone());
        Some(feed)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Broadcast> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Upstream's refs are known.
    pub fn listed(&self, listing: &Listing) {
        self.listing.send_replace(Some(Arc::new(listing.clone())));
    }

    /// Wait for upstream's refs (`None`: the fill ended without listing them).
    pub async fn listing(&self) -> Option<Arc<Listing>> {
        let mut rx = self.listing.subscribe();
        let r = rx.wait_for(Option::is_some).await.ok()?;
        r.clone()
    }

    /// Pack bytes received so far.
    pub fn received_bytes(&self) -> u64 {
        self.state().total
    }

    /// Pack bytes arrived (called from the fill's blocking thread, which may wait here for
    /// slow clients).
    pub fn push(&self, data: &[u8]) {
        let blocked = {
            let mut b = self.state();
            b.pending.extend_from_slice(data);
            if b.pending.len() < CHUNK_BYTES {
                return;
            }
            let hold = self.may_hold(&b);
            emit(&mut b, hold)
        };
        self.send_blocked(blocked);
    }

    /// The whole pack arrived: subscribers that kept up are done.
    pub fn received(&self) {
        let blocked = {
            let mut b = self.state();
            let hold = self.may_hold(&b);
            emit(&mut b, hold)
        };
        self.send_blocked(blocked);
        let mut b = self.state();
        let total = b.total;
        self.end(&mut b, Outcome::Received(total));
    }

    /// Whether the copy may wait for slow clients now.
    fn may_hold(&self, b: &Broadcast) -> bool {
        b.held < MAX_HOLD && self.demand.waiting.load(Ordering::Acquire) == 0
    }

    /// Wait for room in slow clients' queues; drop those that stall.
    fn send_blocked(&self, blocked: Blocked) {
        if blocked.is_empty() {
            return;
        }
        let started = Instant::now();
        let mut stalled = Vec::new();
        for (id, tx, chunk) in blocked {
            // The timer is made inside the runtime (this thread may not be one of its own).
            let sent = self
                .rt
                .block_on(async { tokio::time::timeout(FOLLOWER_STALL, tx.send(chunk)).await });
            if !matches!(sent, Ok(Ok(()))) {
                stalled.push(id);
            }
        }
        let mut b = self.state();
        b.held += started.elapsed();
        if !stalled.is_empty() {
            b.subscribers.retain(|s| !stalled.contains(&s.id));
        }
    }

    /// The pack is stored under `key`: subscribers that fell behind read the rest from there.
    pub fn stored(&self, key: &str) {
        let _b = self.state();
        let received = match *self.outcome.borrow() {
            Outcome::Received(size) => Some(size),
            _ => None,
        };
        if let Some(size) = received {
            self.outcome.send_replace(Outcome::Stored {
                key: key.to_string(),
                size,
            });
        }
    }

    /// The fill failed: subscribers end with `why`.
    pub fn failed(&self, why: &str) {
        let mut b = self.state();
        if !matches!(*self.outcome.borrow(), Outcome::Failed(_)) {
            self.end(&mut b, Outcome::Failed(why.into()));
        }
    }

    /// The fill is over: if the pack never got to the store, subscribers still waiting fail.
    pub fn close(&self) {
        let mut b = self.state();
        if matches!(
            *self.outcome.borrow(),
            Outcome::Receiving | Outcome::Received(_)
        ) {
            self.end(
                &mut b,
                Outcome::Failed("the fill ended without storing a pack".into()),
            );
        }
    }

    /// Set the outcome, then let go of the subscribers (so one that sees its queue closed
    /// finds the outcome set) and of the kept bytes.
    fn end(&self, b: &mut Broadcast, outcome: Outcome) {
        self.outcome.send_replace(outcome);
        b.subscribers.clear();
        b.prefix = None;
        b.prefix_bytes = 0;
    }

    /// Follow the pack from its first byte; `None` once it is too late to join (the pack is
    /// past [`JOIN_WINDOW`] or no longer arriving).
    pub fn subscribe(&self, rt: tokio::runtime::Handle) -> Option<Feed> {
        self.join(rt, false)
    }

    fn join(&self, rt: tokio::runtime::Handle, client: bool) -> Option<Feed> {
        let mut b = self.state();
        if *self.outcome.borrow() != Outcome::Receiving {
            return None;
        }
        let prefix: VecDeque<Bytes> = b.prefix.as_ref()?.iter().cloned().collect();
        let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
        b.joined += 1;
        let id = b.joined;
        b.subscribers.push(Subscriber { id, tx, client });
        Some(Feed {
            prefix,
            rx,
            outcome: self.outcome.subscribe(),
            sent: 0,
            store: self.store.clone(),
            rt,
            stored: None,
            follower: None,
        })
    }
}

/// Hand the pending bytes to every subscriber. One whose queue is gone, or full, is dropped;
/// with `hold`, a client with a full queue is returned instead, for the caller to wait on.
fn emit(b: &mut Broadcast, hold: bool) -> Blocked {
    let mut blocked = Vec::new();
    if b.pending.is_empty() {
        return blocked;
    }
    let chunk = b.pending.split().freeze();
    b.total += chunk.len() as u64;
    if let Some(prefix) = &mut b.prefix {
        if b.prefix_bytes + chunk.len() > JOIN_WINDOW {
            b.prefix = None;
            b.prefix_bytes = 0;
        } else {
            b.prefix_bytes += chunk.len();
            prefix.push(chunk.clone());
        }
    }
    b.subscribers
        .retain(|s| match s.tx.try_send(chunk.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(c)) if hold && s.client => {
                blocked.push((s.id, s.tx.clone(), c));
                true
            }
            Err(_) => false,
        });
    blocked
}

/// One client's view of a fill's pack: every byte once, in order. Blocking: use it on a
/// blocking thread.
pub struct Feed {
    prefix: VecDeque<Bytes>,
    rx: mpsc::Receiver<Bytes>,
    outcome: watch::Receiver<Outcome>,
    sent: u64,
    store: DynStore,
    rt: tokio::runtime::Handle,
    /// Reading on from the stored pack (read ahead), once fallen behind.
    stored: Option<StoreSource>,
    /// A client's feed: counted while it lives.
    follower: Option<Arc<Demand>>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(d) = self.follower.take() {
            *d.last_followed.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((Instant::now(), self.sent));
            d.following.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Feed {
    /// The next bytes of the pack; `Ok(None)` after its last byte; an error when the fill
    /// failed.
    pub fn next_bytes(&mut self) -> io::Result<Option<Bytes>> {
        let next = match self.prefix.pop_front() {
            Some(b) => Some(b),
            None => self.rx.blocking_recv(),
        };
        if let Some(b) = next {
            self.sent += b.len() as u64;
            return Ok(Some(b));
        }
        // Let go: from here on it is the outcome (or the store) that says what comes.
        let sent = self.sent;
        let outcome = self
            .rt
            .block_on(self.outcome.wait_for(|o| match o {
                Outcome::Receiving => false,
                Outcome::Received(total) => *total == sent,
                Outcome::Stored { .. } | Outcome::Failed(_) => true,
            }))
            .map(|o| o.clone())
            .map_err(|_| io::Error::other("the fill went away"))?;
        match outcome {
            Outcome::Received(_) => Ok(None),
            Outcome::Stored { size, .. } if sent >= size => Ok(None),
            Outcome::Stored { key, size } => {
                let src = self.stored.get_or_insert_with(|| {
                    let mut src = StoreSource::new(self.store.clone(), self.rt.clone(), key, size);
                    let windows: Vec<(u64, u64)> = (sent..size)
                        .step_by(READ_WINDOW as usize)
                        .map(|s| (s, (s + READ_WINDOW).min(size)))
                        .collect();
                    src.plan(&windows);
                    src
                });
                let data = src.read(sent, (sent + READ_WINDOW).min(size))?;
                if data.is_empty() {
                    return Err(io::Error::other("the stored pack ends early"));
                }
                self.sent += data.len() as u64;
                Ok(Some(data))
            }
            Outcome::Failed(why) => Err(io::Error::other(why.to_string())),
            Outcome::Receiving => Err(io::Error::other("the fill went away")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{PutMode, memory::MemoryStore};

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn pack(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn drain(mut f: Feed) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = f.next_bytes()? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Subscribers that join early, late, or fall behind all get the same bytes; a joiner
    /// past the window is refused.
    #[test]
    fn every_subscriber_gets_the_whole_pack() {
        let rt = rt();
        let store: DynStore = Arc::new(MemoryStore::new());
        let tap = Arc::new(Tap::new(store.clone(), rt.handle().clone()));
        let data = pack(JOIN_WINDOW + 40 * CHUNK_BYTES + 12_345);
        let first = tap.subscribe(rt.handle().clone()).expect("joins at once");
        // A slow reader: never reads until the end, so it overflows its queue.
        let slow = tap.subscribe(rt.handle().clone()).expect("joins at once");
        // A reader on its own thread that keeps up.
        let reader = std::thread::spawn(move || drain(first));
        let mut joined_late = None;
        for (i, piece) in data.chunks(100_003).enumerate() {
            tap.push(piece);
            if i == 3 {
                joined_late = tap.subscribe(rt.handle().clone());
            }
        }
        assert!(
            tap.subscribe(rt.handle().clone()).is_none(),
            "joined past the window"
        );
        let late = joined_late.expect("joins within the window");
        let late_reader = std::thread::spawn(move || drain(late));
        tap.received();
        // The stored pack, for those that fell behind.
        rt.block_on(store.put("p.pack", Bytes::from(data.clone()), PutMode::Overwrite))
            .expect("put");
        tap.stored("p.pack");
        assert_eq!(reader.join().expect("reader").expect("feed"), data);
        assert_eq!(late_reader.join().expect("reader").expect("feed"), data);
        assert_eq!(drain(slow).expect("slow feed"), data);
    }

    /// A failed fill ends every feed with its reason, also one that fell behind.
    #[test]
    fn a_failed_fill_fails_its_feeds() {
        let rt = rt();
        let store: DynStore = Arc::new(MemoryStore::new());
        let tap = Tap::new(store, rt.handle().clone());
        let feed = tap.subscribe(rt.handle().clone()).expect("joins");
        let slow = tap.subscribe(rt.handle().clone()).expect("joins");
        let reader = std::thread::spawn(move || drain(feed));
        tap.push(&pack(QUEUED_CHUNKS * CHUNK_BYTES * 2));
        for _ in 0..QUEUED_CHUNKS * 2 + 2 {
            tap.push(&pack(CHUNK_BYTES));
        }
        tap.failed("upstream sent a broken pack");
        let e = reader.join().expect("reader").expect_err("must fail");
        assert!(e.to_string().contains("broken pack"), "{e}");
        let e = drain(slow).expect_err("must fail");
        assert!(e.to_string().contains("broken pack"), "{e}");
        // Nothing can join a failed fill; received after a failure changes nothing.
        assert!(tap.subscribe(rt.handle().clone()).is_none());
        tap.close();
        assert!(matches!(*tap.outcome.borrow(), Outcome::Failed(_)));
    }

    /// A fill that received its pack but never stored it (the store failed) fails feeds that
    /// still need the store.
    #[test]
    fn closing_without_a_stored_pack_fails_laggards() {
        let rt = rt();
        let tap = Tap::new(Arc::new(MemoryStore::new()), rt.handle().clone());
        let slow = tap.subscribe(rt.handle().clone()).expect("joins");
        for _ in 0..QUEUED_CHUNKS + 4 {
            tap.push(&pack(CHUNK_BYTES));
        }
        tap.received();
        tap.close();
        assert!(drain(slow).is_err());
    }

    /// A client slower than upstream holds the copy back instead of being dropped: it gets
    /// the whole pack from the broadcast (this pack is never stored).
    #[test]
    fn a_slow_client_holds_the_copy_back() {
        let rt = rt();
        let tap = Tap::new(Arc::new(MemoryStore::new()), rt.handle().clone());
        let data = pack(QUEUED_CHUNKS * CHUNK_BYTES * 2 + 777);
        let mut feed = tap.follow(rt.handle().clone()).expect("joins");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            while let Some(b) = feed.next_bytes()? {
                std::thread::sleep(Duration::from_millis(2));
                out.extend_from_slice(&b);
            }
            Ok::<_, io::Error>(out)
        });
        for piece in data.chunks(CHUNK_BYTES / 3) {
            tap.push(piece);
        }
        assert_eq!(tap.state().subscribers.len(), 1, "the client was dropped");
        assert!(tap.state().held > Duration::ZERO, "the copy never waited");
        tap.received();
        assert_eq!(reader.join().expect("reader").expect("feed"), data);
        tap.close();
    }

    /// While a request waits for the fill's end, nobody holds the copy back: a client that
    /// falls behind is left to catch up from the store (here: never stored, so it fails).
    #[test]
    fn a_waiting_request_ends_holding() {
        let rt = rt();
        let tap = Tap::new(Arc::new(MemoryStore::new()), rt.handle().clone());
        let slow = tap.follow(rt.handle().clone()).expect("joins");
        let waiting = tap.waiting();
        for _ in 0..QUEUED_CHUNKS + 4 {
            tap.push(&pack(CHUNK_BYTES));
        }
        tap.received();
        tap.close();
        drop(waiting);
        assert!(drain(slow).is_err(), "a laggard was held for");
        assert_eq!(tap.state().held, Duration::ZERO);
    }

    /// The indexer yields while a client follows the pack and for a while after (by the
    /// bytes it took), not while a request waits for the fill's end.
    #[test]
    fn the_indexer_yields_to_clients_only() {
        let rt = rt();
        let tap = Tap::new(Arc::new(MemoryStore::new()), rt.handle().clone());
        assert!(!tap.demand.clients_first(), "nobody follows yet");
        let feed = tap.follow(rt.handle().clone()).expect("joins");
        assert!(tap.demand.clients_first());
        let waiting = tap.waiting();
        assert!(!tap.demand.clients_first(), "a request waits");
        drop(waiting);
        assert!(tap.demand.clients_first());
        let mut feed = feed;
        // The client took 64 MiB: it is given about four seconds to resolve them.
        feed.sent = 64 << 20;
        drop(feed);
        assert!(
            tap.demand.clients_first(),
            "right after the client's last byte"
        );
        let mut yielded = MAX_YIELD - YIELD_POLL;
        tap.yield_to_clients(&mut yielded);
        assert_eq!(yielded, MAX_YIELD, "bounded by MAX_YIELD");
        let short = tap.follow(rt.handle().clone()).expect("joins");
        drop(short);
        assert!(!tap.demand.clients_first(), "a client that took nothing");
    }
}
