//! A received pack's way into the store, in bounded memory: its bytes are uploaded as they
//! arrive (under a fresh name: the checksum is only known at the end) while
//! [`crate::odb::ingest`] indexes them; the deltas it could not resolve on the way are resolved
//! by reading the stored pack back in large ranged GETs, a few at a time; then the index is
//! written. Pack and index exist before any ref index names them.

use super::FillError;
use super::stored::{INDEX_CACHE_BYTES, StoreSource};
use super::tap::{Feed, Tap};
use super::upstream::FetchError;
use crate::odb::ingest::{self, IngestError, Received};
use crate::refs::{Keys, PackEntry};
use crate::store::{Chunk, DynStore, ETag, PutMode, StoreError};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes handed to the upload at a time.
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks queued for the upload (besides the parts it has in flight).
const QUEUED_CHUNKS: usize = 2;

/// The blocking side of an upload: pack bytes in, chunks out to the store.
pub struct PackSink {
    tx: mpsc::Sender<Chunk>,
    /// Set when the upload was given up ([`Upload::abandon`]): nothing may be published.
    abandoned: Arc<AtomicBool>,
    buf: BytesMut,
    /// Bytes taken so far.
    pub written: u64,
    /// Clients following the pack as it arrives ([`super::tap`]).
    tap: Option<Arc<Tap>>,
    rt: tokio::runtime::Handle,
    /// Where this pack's received-fill record goes, and what it says
    /// ([`super::received`]); written just before the pack is published.
    record: Record,
}

/// The received-fill record of a fill's pack, once it is known what the pack is for.
struct Record {
    store: DynStore,
    key: String,
    pack: String,
    /// Set by [`PackSink::record_as`]: the fill wants a record.
    holder: Option<String>,
    body: Option<Bytes>,
}

impl PackSink {
    /// The next received pack bytes: passed to the tap, and sent to the store upload in
    /// chunks (blocking while the upload is behind). Fails once the upload stopped.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        crate::refs::lease::beat_for(&self.record.key);
        if let Some(t) = &self.tap {
            t.push(data);
        }
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= CHUNK_BYTES {
            let chunk = self.buf.split().freeze();
            self.send(Chunk::Data(chunk))?;
        }
        Ok(())
    }

    fn send(&self, c: Chunk) -> std::io::Result<()> {
        if self.abandoned.load(Ordering::Acquire) {
            return Err(std::io::Error::other("the store upload was abandoned"));
        }
        self.tx
            .blocking_send(c)
            .map_err(|_| std::io::Error::other("the store upload stopped"))
    }

    /// Record the fill this pack is received for (by `holder`), so that another instance can
    /// finish it ([`super::received`]); without this no record is written (refreshes).
    pub fn record_as(&mut self, holder: String) {
        self.record.holder = Some(holder);
    }

    /// What the pack is fetched for: the upstream and its listing (every ref wanted).
    pub fn listed(&mut self, upstream: &str, listing: &super::upstream::Listing) {
        let Some(holder) = self.record.holder.clone() else {
            return;
        };
        let rec = super::received::Record {
            pack: self.record.pack.clone(),
            upstream: upstream.to_string(),
            refs: listing.refs.clone(),
            head_symref: listing.head_symref.clone(),
            head_oid: listing.head_oid,
            listed_at: super::now(),
            holder,
        };
        self.record.body = Some(rec.encode());
    }

    /// The pack is complete: publish it (its received-fill record first).
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Chunk::Data(chunk))?;
        }
        if let Some(body) = self.record.body.take() {
            let r = &self.record;
            // Without the record the fill still completes; only its adoption by another
            // instance (should this one stop before publishing) is lost.
            if let Err(e) = self
                .rt
                .block_on(r.store.put(&r.key, body, PutMode::Overwrite))
            {
                tracing::warn!(key = %r.key, error = %e, "writing the received-fill record failed");
            }
        }
        // Received first: the upload may complete (and say where the pack is) at once.
        if let Some(t) = &self.tap {
            t.received();
        }
        self.send(Chunk::End)
    }

    /// The broadcast this pack goes to, if clients follow it.
    pub fn tap(&self) -> Option<Arc<Tap>> {
        self.tap.clone()
    }
}

/// The async side of an upload.
pub struct Upload {
    store: DynStore,
    abandoned: Arc<AtomicBool>,
    started: std::time::Instant,
    name: String,
    key: String,
    task: JoinHandle<Result<ETag, StoreError>>,
    tap: Option<Arc<Tap>>,
}

/// A fresh pack name: 40 hex digits, unique across instances (process id, time, counter and
/// the repository hashed together).
fn fresh_name(root: &str) -> String {
    use sha1::{Digest, Sha1};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = Sha1::new();
    h.update(format!(
        "{root}\0{}\0{nanos}\0{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    hex::encode(h.finalize())
}

/// Start uploading a pack of `keys`' repository; the sink feeds it (and `tap`'s clients).
pub fn begin(
    rt: &tokio::runtime::Handle,
    store: &DynStore,
    keys: &Keys,
    root: &str,
    tap: Option<Arc<Tap>>,
) -> (PackSink, Upload) {
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    let name = fresh_name(root);
    let key = keys.pack(&name);
    let (s2, k, t2) = (store.clone(), key.clone(), tap.clone());
    let task = rt.spawn(async move {
        let r = s2.put_stream(&k, rx, PutMode::CreateOnly).await;
        // Clients (and an indexer) that fell behind the broadcast read on from here.
        if r.is_ok()
            && let Some(t) = t2
        {
            t.stored(&k);
        }
        r
    });
    let abandoned = Arc::new(AtomicBool::new(false));
    (
        PackSink {
            tx,
            abandoned: abandoned.clone(),
            buf: BytesMut::new(),
            written: 0,
            tap: tap.clone(),
            rt: rt.clone(),
            record: Record {
                store: store.clone(),
                key: keys.received(&name),
                pack: name.clone(),
                holder: None,
                body: None,
            },
        },
        Upload {
            store: store.clone(),
            abandoned,
            started: std::time::Instant::now(),
            name,
            key,
            task,
            tap,
        },
    )
}

impl Upload {
    /// The pack's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// No pack came, receiving it failed or took too long: publish nothing. (The sink may
    /// still be on a blocking thread that has not noticed yet; it can no longer end the
    /// upload, and a store write in progress is aborted.)
    pub fn abandon(self) {
        if let Some(t) = &self.tap {
            t.failed("the fill was given up");
        }
        self.abandoned.store(true, Ordering::Release);
        if !self.task.is_finished() {
            self.task.abort();
        } else if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Published before the pack was refused (its indexer runs behind the upload):
            // nothing names it; delete it now rather than leave it to gc.
            let (store, key) = (self.store, self.key);
            rt.spawn(async move {
                let _ = store.delete(&key).await;
            });
        }
    }

    /// Wait for the upload of a received pack, resolve its remaining deltas from the store,
    /// store its index. On failure the pack is deleted again.
    pub async fn complete(
        self,
        store: &DynStore,
        keys: &Keys,
        upstream: &str,
        received: Received,
    ) -> Result<PackEntry, FillError> {
        self.task
            .await
            .map_err(|e| FillError::Internal(e.to_string()))?
            .map_err(|e| FillError::Store(self.key.clone(), e))?;
        let (size, objects, pending) = (received.size, received.objects(), received.pending());
        let received_in = self.started.elapsed();
        let (s2, key) = (store.clone(), self.key.clone());
        let rt = tokio::runtime::Handle::current();
        let indexed = tokio::task::spawn_blocking(move || {
            let mut src = StoreSource::new(s2, rt, key, size);
            received.finish(&mut src, INDEX_CACHE_BYTES)
        })
        .await
        .map_err(|e| FillError::Internal(e.to_string()));
        let indexed = match indexed {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => {
                let _ = store.delete(&self.key).await;
                return Err(match e {
                    ingest::IngestError::Io(e) => {
                        FillError::Internal(format!("reading back {}: {e}", self.key))
                    }
                    e => FetchError::BadPack(upstream.to_string(), e.to_string()).into(),
                });
            }
            Err(e) => {
                let _ = store.delete(&self.key).await;
                return Err(e);
            }
        };
        super::put_immutable(store, &keys.idx(&self.name), Bytes::from(indexed.idx)).await?;
        tracing::info!(
            pack = %self.name,
            objects,
            bytes = size,
            received_secs = received_in.as_secs_f64(),
            deltas_resolved_after = pending,
            indexed_secs = (self.started.elapsed() - received_in).as_secs_f64(),
            "pack stored"
        );
        Ok(PackEntry {
            name: self.name,
            checksum: Some(indexed.name),
            size,
            objects,
            walk_end: Some(indexed.walk_end),
            bitmap: false,
        })
    }
}

/// Receive a pack that clients follow ([`super::tap`]): this thread copies upstream's bytes to
/// the store and to the clients as fast as they come (checking the pack's trailer checksum:
/// nothing is published without it), while a second thread indexes them as one more follower
/// of the broadcast. Upstream, the clients and the store are thus never held back by the
/// indexer; an indexer that falls behind reads on from the stored pack (as a slow client
/// does). A pack the indexer refuses stops the copy.
pub fn receive_through(
    input: &mut dyn std::io::Read,
    mut sink: PackSink,
    limit: u64,
) -> Result<Received, IngestError> {
    let tap = sink.tap();
    let Some(feed) = tap.as_ref().and_then(|t| t.subscribe(sink.rt.clone())) else {
        return Err(IngestError::Io(std::io::Error::other(
            "the pack's broadcast started without its indexer",
        )));
    };
    let refused = Arc::new(AtomicBool::new(false));
    let (r2, tap2) = (refused.clone(), tap.clone());
    let indexer = std::thread::Builder::new()
        .name("goprox-index".into())
        .spawn(move || {
            background_priority();
            let mut input = FeedRead {
                feed,
                current: Bytes::new(),
                yields_to: tap2,
                yielded: std::time::Duration::ZERO,
            };
            let r = ingest::receive(&mut input, &mut |_| Ok(()), INDEX_CACHE_BYTES, limit);
            if !input.yielded.is_zero() {
                tracing::info!(
                    secs = input.yielded.as_secs_f64(),
                    "the indexer yielded to clients following the pack"
                );
            }
            if r.is_err() {
                r2.store(true, Ordering::Release);
            }
            r
        })
        .map_err(IngestError::Io)?;
    let copied = copy_checked(input, &mut sink, limit, &refused).and_then(|()| {
        sink.finish()
            .map_err(|e| IngestError::Io(std::io::Error::other(format!("storing the pack: {e}"))))
    });
    if let (Err(e), Some(t)) = (&copied, &tap) {
        t.failed(&e.to_string());
    }
    let indexed = indexer
        .join()
        .map_err(|_| IngestError::Invalid("the indexing thread failed".into()));
    match (copied, indexed) {
        // The copy stopped because the indexer refused the pack: the indexer's reason.
        (Err(IngestError::Invalid(m)), Ok(Err(e))) if m == REFUSED => Err(e),
        // Otherwise the copy's (the indexer only saw the broadcast fail).
        (Err(e), _) => Err(e),
        (Ok(()), Ok(r)) => r,
        (Ok(()), Err(e)) => Err(e),
    }
}

/// Let this thread (and the threads it starts) yield the CPU to serving: the indexer of a
/// followed pack is background work (it catches up from the store when it falls behind), and
/// so is a bitmap build. Only for threads of their own (never a pool's: the next task would
/// inherit it).
pub(crate) fn background_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on the calling thread's own id, no memory is shared.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// [`copy_checked`] stopped because the indexer refused the pack.
const REFUSED: &str = "refused by the indexer";

/// Copy a pack from `input` to `sink`, hashing all but its last 20 bytes, which must be that
/// hash; stop early when `stop` is set.
fn copy_checked(
    input: &mut dyn std::io::Read,
    sink: &mut PackSink,
    limit: u64,
    stop: &AtomicBool,
) -> Result<(), IngestError> {
    use sha1::{Digest, Sha1};
    let mut buf = vec![0u8; 256 << 10];
    let mut hash = Sha1::new();
    // The last (up to) 20 bytes seen, not hashed yet: the trailer, once the input ends.
    let mut tail: Vec<u8> = Vec::with_capacity(40);
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Acquire) {
            return Err(IngestError::Invalid(REFUSED.into()));
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(IngestError::Io(e)),
        };
        total += n as u64;
        if total > limit {
            return Err(IngestError::TooLarge(limit));
        }
        let data = &buf[..n];
        sink.write(data)?;
        if n >= 20 {
            hash.update(&tail);
            hash.update(&data[..n - 20]);
            tail.clear();
            tail.extend_from_slice(&data[n - 20..]);
        } else {
            tail.extend_from_slice(data);
            let excess = tail.len().saturating_sub(20);
            hash.update(&tail[..excess]);
            tail.drain(..excess);
        }
    }
    if total < 32 || hash.finalize()[..] != tail[..] {
        return Err(IngestError::Invalid(
            "the pack is truncated or its checksum does not match".into(),
        ));
    }
    Ok(())
}

/// A [`Feed`] as a reader; an indexer's yields to the clients of `yields_to`.
struct FeedRead {
    feed: Feed,
    current: Bytes,
    yields_to: Option<Arc<Tap>>,
    yielded: std::time::Duration,
}

impl std::io::Read for FeedRead {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if let Some(t) = &self.yields_to {
                t.yield_to_clients(&mut self.yielded);
            }
            match self.feed.next_bytes()? {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use sha1::{Digest, Sha1};

    /// A pack of `n` blobs of `size` hard-to-compress bytes each, with its trailer.
    fn pack(n: usize, size: usize) -> Vec<u8> {
        let mut p = b"PACK\0\0\0\x02".to_vec();
        p.extend_from_slice(&(n as u32).to_be_bytes());
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..n {
            let data: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            crate::odb::writer::entry_header(
                crate::odb::writer::EntryKind::Blob,
                size as u64,
                &mut p,
            );
            p.extend_from_slice(&crate::odb::deflate(&data));
        }
        let sum = Sha1::digest(&p);
        p.extend_from_slice(&sum);
        p
    }

    fn with_trailer(mut body: Vec<u8>) -> Vec<u8> {
        body.truncate(body.len() - 20);
        let sum = Sha1::digest(&body);
        body.extend_from_slice(&sum);
        body
    }

    fn drain(mut f: Feed) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(b) = f.next_bytes()? {
            out.extend_from_slice(&b);
        }
        Ok(out)
    }

    /// Receive `data` the way a fill that clients follow does; returns the result, what a
    /// client following from the start got, and the packs left in the store once the upload
    /// is completed (on success) or abandoned (on failure).
    fn run(data: Vec<u8>) -> (Result<u32, String>, std::io::Result<Vec<u8>>, Vec<String>) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let store: DynStore = Arc::new(MemoryStore::new());
        let keys = Keys::new("example.test/r");
        let tap = Arc::new(Tap::new(store.clone(), rt.handle().clone()));
        let (sink, upload) = rt.block_on(async {
            begin(
                &tokio::runtime::Handle::current(),
                &store,
                &keys,
                "example.test/r",
                Some(tap.clone()),
            )
        });
        let client = tap.subscribe(rt.handle().clone()).expect("joins");
        let client = std::thread::spawn(move || drain(client));
        let received = {
            let mut input = std::io::Cursor::new(data);
            receive_through(&mut input, sink, u64::MAX)
        };
        let result = match received {
            Ok(r) => rt
                .block_on(upload.complete(&store, &keys, "up", r))
                .map(|e| e.objects)
                .map_err(|e| e.to_string()),
            Err(e) => {
                tap.failed(&e.to_string());
                let _guard = rt.enter();
                upload.abandon();
                Err(e.to_string())
            }
        };
        let got = client.join().expect("client thread");
        // The deletion of an abandoned upload runs in the background: wait for it, up to a
        // limit generous enough for a loaded machine (it normally takes milliseconds).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let left = loop {
            let left: Vec<String> = rt
                .block_on(store.list("example.test/r/"))
                .expect("list")
                .into_iter()
                .filter(|k| k.ends_with(".pack"))
                .collect();
            if result.is_ok() || left.is_empty() || std::time::Instant::now() >= deadline {
                break left;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        (result, got, left)
    }

    /// A good pack: indexed, stored, and a follower got it byte for byte.
    #[test]
    fn followed_pack_is_stored_and_passed_on() {
        let data = pack(24, 1 << 20);
        let (r, got, left) = run(data.clone());
        assert_eq!(r, Ok(24));
        assert!(
            got.expect("client feed") == data,
            "the client got other bytes"
        );
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// A pack whose trailer does not match is never published; its followers fail.
    #[test]
    fn bad_trailer_publishes_nothing() {
        let mut data = pack(3, 1000);
        let last = data.len() - 1;
        data[last] ^= 1;
        let (r, got, left) = run(data);
        assert!(r.expect_err("must fail").contains("checksum"));
        assert!(got.is_err());
        assert!(left.is_empty(), "{left:?}");
    }

    /// A pack the indexer refuses (a broken entry under a matching trailer) fails with the
    /// indexer's reason, and the already published pack is deleted again.
    #[test]
    fn refused_pack_is_deleted() {
        let mut data = pack(3, 1000);
        // Corrupt the first entry's zlib stream (after its 2-byte header and zlib header).
        data[12 + 2 + 4] ^= 0xff;
        let data_copy = data.clone();
        let (r, got, left) = run(with_trailer(data));
        let e = r.expect_err("must fail");
        assert!(e.contains("invalid pack"), "{e}");
        // A follower gets an error, or (when the copy ended first) upstream's broken pack as
        // it is, which its own index-pack refuses: never anything else.
        if let Ok(got) = got {
            assert!(got == with_trailer(data_copy), "the client got other bytes");
        }
        assert!(left.is_empty(), "{left:?}");
    }
}
