//! A received pack's way into the store, in bounded memory: its bytes are uploaded as they
//! arrive (under a fresh name: the checksum is only known at the end) while
//! [`crate::odb::ingest`] indexes them; the deltas it could not resolve on the way are resolved
//! by reading the stored pack back in large ranged GETs, a few at a time; then the index is
//! written. Pack and index exist before any ref index names them.

use super::FillError;
use super::fetch::FetchError;
use crate::odb::ingest::{self, PackSource, Received};
use crate::refs::{Keys, PackEntry};
use crate::store::{Chunk, DynStore, ETag, PutMode, StoreError};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Decoded objects the indexer may hold at once (each of its two passes).
pub const INDEX_CACHE_BYTES: usize = 64 << 20;
/// Bytes handed to the upload at a time.
const CHUNK_BYTES: usize = 4 << 20;
/// Chunks queued for the upload (besides the parts it has in flight).
const QUEUED_CHUNKS: usize = 2;
/// Ranged GETs of the second pass: their size, and how many are in flight.
const READ_WINDOW: u64 = 8 << 20;
const READ_GAP: u64 = 1 << 20;
const READS_AHEAD: usize = 3;

/// The blocking side of an upload: pack bytes in, chunks out to the store.
pub struct PackSink {
    tx: mpsc::Sender<Chunk>,
    /// Set when the upload was given up ([`Upload::abandon`]): nothing may be published.
    abandoned: Arc<AtomicBool>,
    buf: BytesMut,
    /// Bytes taken so far.
    pub written: u64,
}

impl PackSink {
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
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

    /// The pack is complete: publish it.
    pub fn finish(mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = self.buf.split().freeze();
            self.send(Chunk::Data(chunk))?;
        }
        self.send(Chunk::End)
    }
}

/// The async side of an upload.
pub struct Upload {
    abandoned: Arc<AtomicBool>,
    started: std::time::Instant,
    name: String,
    key: String,
    task: JoinHandle<Result<ETag, StoreError>>,
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

/// Start uploading a pack of `keys`' repository; the sink feeds it.
pub fn begin(
    rt: &tokio::runtime::Handle,
    store: &DynStore,
    keys: &Keys,
    root: &str,
) -> (PackSink, Upload) {
    let (tx, rx) = mpsc::channel(QUEUED_CHUNKS);
    let name = fresh_name(root);
    let key = keys.pack(&name);
    let (store, k) = (store.clone(), key.clone());
    let task = rt.spawn(async move { store.put_stream(&k, rx, PutMode::CreateOnly).await });
    let abandoned = Arc::new(AtomicBool::new(false));
    (
        PackSink {
            tx,
            abandoned: abandoned.clone(),
            buf: BytesMut::new(),
            written: 0,
        },
        Upload {
            abandoned,
            started: std::time::Instant::now(),
            name,
            key,
            task,
        },
    )
}

impl Upload {
    /// No pack came, receiving it failed or took too long: publish nothing. (The sink may
    /// still be on a blocking thread that has not noticed yet; it can no longer end the
    /// upload, and a store write in progress is aborted.)
    pub fn abandon(self) {
        self.abandoned.store(true, Ordering::Release);
        self.task.abort();
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
        })
    }
}

type Read = JoinHandle<Result<Bytes, StoreError>>;

/// The stored pack for the indexer's second pass: the planned ranges are read in windows of
/// up to [`READ_WINDOW`] bytes, [`READS_AHEAD`] GETs ahead; anything else by a GET of its own.
struct StoreSource {
    store: DynStore,
    rt: tokio::runtime::Handle,
    key: String,
    size: u64,
    windows: VecDeque<(u64, u64)>,
    /// GETs in flight: (start, end, the read).
    ahead: VecDeque<(u64, u64, Read)>,
    current: Option<(u64, Bytes)>,
}

impl StoreSource {
    fn new(store: DynStore, rt: tokio::runtime::Handle, key: String, size: u64) -> Self {
        StoreSource {
            store,
            rt,
            key,
            size,
            windows: VecDeque::new(),
            ahead: VecDeque::new(),
            current: None,
        }
    }

    fn top_up(&mut self) {
        while self.ahead.len() < READS_AHEAD {
            let Some((s, e)) = self.windows.pop_front() else {
                break;
            };
            let (store, key) = (self.store.clone(), self.key.clone());
            let task = self
                .rt
                .spawn(async move { store.get_range(&key, s, e - s).await });
            self.ahead.push_back((s, e, task));
        }
    }

    fn get(&self, start: u64, end: u64) -> std::io::Result<Bytes> {
        let data = self
            .rt
            .block_on(self.store.get_range(&self.key, start, end - start))
            .map_err(std::io::Error::other)?;
        crate::metrics::STORE_RANGE_GETS.inc();
        Ok(data)
    }
}

impl PackSource for StoreSource {
    fn plan(&mut self, ranges: &[(u64, u64)]) {
        self.windows.clear();
        for &(s, e) in ranges {
            match self.windows.back_mut() {
                Some((ws, we)) if s >= *we && s - *we <= READ_GAP && e - *ws <= READ_WINDOW => {
                    *we = e
                }
                _ => self.windows.push_back((s, e.min(self.size))),
            }
        }
        self.top_up();
    }

    fn read(&mut self, start: u64, end: u64) -> std::io::Result<Bytes> {
        loop {
            if let Some((at, data)) = &self.current
                && start >= *at
                && end <= at + data.len() as u64
            {
                return Ok(data.slice((start - at) as usize..(end - at) as usize));
            }
            // The next window, if it is ahead of `start`: drop those that end before it.
            while self.ahead.front().is_some_and(|(_, e, _)| *e <= start) {
                if let Some((_, _, t)) = self.ahead.pop_front() {
                    t.abort();
                }
                self.top_up();
            }
            let covers = self
                .ahead
                .front()
                .is_some_and(|(s, e, _)| *s <= start && end <= *e);
            match self.ahead.pop_front() {
                Some((s, _, task)) if covers => {
                    let data = self
                        .rt
                        .block_on(task)
                        .map_err(std::io::Error::other)?
                        .map_err(std::io::Error::other)?;
                    crate::metrics::STORE_RANGE_GETS.inc();
                    self.current = Some((s, data));
                    self.top_up();
                }
                Some(other) => {
                    self.ahead.push_front(other);
                    return self.get(start, end);
                }
                // Not planned (a base read again, out of order): on its own.
                None => return self.get(start, end),
            }
        }
    }
}
