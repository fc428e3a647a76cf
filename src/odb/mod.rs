//! The object database: a repository's packs in the store, read by byte ranges through the
//! shared block cache, with delta resolution and a decoded-object cache.
//!
//! Reads are synchronous and must run on blocking threads (`spawn_blocking`): missing blocks
//! are fetched from the store through the tokio runtime handle. The exceptions run on the
//! runtime: the background loads of [`Io::warm`] and [`Odb::prefetch`], and
//! [`writer::stream_whole_packs`] (async).

pub mod bitmap;
pub(crate) mod cache;
pub mod delta;
pub mod delta_encode;
pub mod ingest;
pub mod pack;
pub(crate) mod pack_cache;
pub mod walk;
pub mod writer;

use crate::store::{DynStore, StoreError};
use bytes::Bytes;
use cache::{BlockCache, BlockKey, ObjectKey, Weigh};
use gix_hash::{ObjectId, oid};
use gix_object::Kind;
use gix_pack::data::entry::Header;
use pack::Pack;
use std::sync::Arc;

/// Bytes per block of the block cache (pack reads are rounded out to whole blocks).
pub const BLOCK_SIZE: u64 = 64 * 1024;
/// Largest ranged GET of [`Odb::prefetch`].
pub const PREFETCH_RUN: u64 = 8 << 20;
/// Blocks between two needed ones are read too when the gap is at most this.
pub const PREFETCH_GAP: u64 = 256 << 10;
/// Ranged GETs of one prefetch in flight at once.
pub const PREFETCH_PARALLEL: usize = 16;

/// Why reading objects or writing a pack failed.
#[derive(Debug, thiserror::Error)]
pub enum OdbError {
    /// No pack of the repository has the object.
    #[error("object {0} not found")]
    NotFound(ObjectId),
    /// The stored pack, index or bitmap data is inconsistent (bad entry, inflate error, range
    /// outside the pack, CRC mismatch, ...).
    #[error("corrupt pack data: {0}")]
    Corrupt(String),
    /// The request asks for something these objects cannot give (the client's request, not
    /// the data, is at fault): said to the client as it is.
    #[error("{0}")]
    Unanswerable(String),
    /// Writing the pack out failed: the client (or whatever reads the pack) went away.
    #[error("writing the pack: {0}")]
    Output(std::io::Error),
    /// A task doing part of the work (a read ahead, a check) failed or was cancelled.
    #[error("{0} task failed: {1}")]
    Task(&'static str, String),
    /// Reading from the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A result with [`OdbError`].
pub type Result<T, E = OdbError> = std::result::Result<T, E>;

impl OdbError {
    /// What a client may be told: store failures as one short line without keys or backend
    /// text (the log has the whole error).
    pub fn public_message(&self) -> std::borrow::Cow<'static, str> {
        match self {
            OdbError::Store(e) => e.public_message().into(),
            OdbError::Task(..) => "internal error (logged with this request's id)".into(),
            e => e.to_string().into(),
        }
    }
}

fn corrupt(msg: impl Into<String>) -> OdbError {
    OdbError::Corrupt(msg.into())
}

/// A decoded git object.
#[derive(Debug)]
pub struct Object {
    /// Commit, tree, blob or tag.
    pub kind: Kind,
    /// The object's content (without the `<kind> <size>\0` header).
    pub data: Vec<u8>,
}

impl Weigh for Arc<Object> {
    fn weight(&self) -> usize {
        self.data.len()
    }
}

/// Process-wide I/O context: the store, the runtime handle used to reach it from blocking
/// threads, and the caches.
pub struct Io {
    /// The store the packs are read from.
    pub store: DynStore,
    /// The runtime store calls run on (blocking threads wait with `block_on`).
    pub rt: tokio::runtime::Handle,
    /// Raw pack blocks of [`BLOCK_SIZE`] bytes, by pack key and block number.
    pub(crate) blocks: BlockCache,
    /// Decoded objects (delta chains resolved), by pack key and offset.
    pub(crate) objects: cache::ByteLru<ObjectKey, Arc<Object>>,
    /// Parsed commits by id (an in-memory commit graph, filled by walks).
    pub(crate) commits: cache::ByteLru<ObjectId, Arc<walk::CommitInfo>>,
    /// Keys of generated packs this process knows the store keeps ([`pack_cache`]).
    cached_packs: std::sync::Mutex<lru::LruCache<String, ()>>,
    /// A generated pack that took at least this long to make is kept ([`pack_cache`]).
    pub pack_cache_min_cost: std::time::Duration,
    /// Repositories of at least this many objects look for kept packs of requests this
    /// process has not seen, and get the pack of their newest version's shallow fetch made
    /// ahead after a fill or a refresh bringing a new release ([`pack_cache::MIN_OBJECTS`] by
    /// default).
    pub pack_cache_min_objects: u64,
    /// zlib level (0–9) of what a generated pack deflates anew: objects whose stored delta
    /// cannot be sent (their base is neither sent nor the client's) and new deltas. Stored
    /// entries that go out as they are keep their compression. Git's `pack.compression`;
    /// git's level by default. Lower levels trade bytes for request-path CPU: on git/git's
    /// newest tag at depth 1 (4,885 objects, 2,733 deflated anew) level 3 makes a first fetch
    /// 9–12% faster for 3.9% more bytes (level 2: 18% faster, 10.7% more), but a non-thin
    /// fetch one release behind grows from 1.19× to 1.26× C git's bytes at level 3
    /// (`benches/bytes_vs_git.sh`).
    pub pack_compression: u32,
    /// Block runs a background load ([`Io::warm`]) will put in the cache: readers of those
    /// blocks wait for it instead of asking the store again, one block at a time.
    loading: std::sync::Mutex<Vec<Loading>>,
}

/// Blocks `first..=last` of `pack`, being loaded; `done` turns true when they are in the cache
/// (or the load failed).
struct Loading {
    pack: Arc<str>,
    first: u64,
    last: u64,
    done: tokio::sync::watch::Receiver<bool>,
}

impl Io {
    /// `cache_bytes` is split: three quarters for raw blocks, a quarter for decoded objects
    /// (of which a sixteenth of the whole for parsed commits).
    pub fn new(store: DynStore, rt: tokio::runtime::Handle, cache_bytes: usize) -> Self {
        Io {
            store,
            rt,
            blocks: BlockCache::new(cache_bytes / 4 * 3),
            objects: cache::ByteLru::new(cache_bytes / 4 - cache_bytes / 16),
            commits: cache::ByteLru::new(cache_bytes / 16),
            cached_packs: pack_cache::known_keys(),
            pack_cache_min_cost: pack_cache::MIN_COST,
            pack_cache_min_objects: pack_cache::MIN_OBJECTS,
            pack_compression: DEFAULT_COMPRESSION,
            loading: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The caches' figures, for the metrics.
    pub(crate) fn figures(&self) -> crate::metrics::CacheFigures {
        crate::metrics::CacheFigures {
            block_hits: self.blocks.hits(),
            block_misses: self.blocks.misses(),
            object_hits: self.objects.hits(),
            object_misses: self.objects.misses(),
            block_bytes: self.blocks.used(),
            block_capacity: self.blocks.budget(),
        }
    }

    /// Load `[12, end)` of `pack` (its commits and trees, see `PackEntry::walk_end`) into the
    /// block cache in the background, in [`PREFETCH_RUN`]-byte GETs, [`PREFETCH_PARALLEL`] at a
    /// time, at most half the block budget: a new process's first history walk then does not
    /// wait for one block at a time.
    pub fn warm(self: &Arc<Self>, pack: &Arc<pack::Pack>, end: u64) {
        self.warm_up_to(
            pack,
            end,
            (self.blocks.budget() / 2) as u64,
            PREFETCH_PARALLEL,
        );
    }

    /// [`Io::warm`], loading at most `cap` bytes, `parallel` GETs at a time (each buffers
    /// [`PREFETCH_RUN`] bytes until its blocks are in the cache).
    pub fn warm_up_to(
        self: &Arc<Self>,
        pack: &Arc<pack::Pack>,
        end: u64,
        cap: u64,
        parallel: usize,
    ) {
        let end = end.min(pack.size.saturating_sub(20)).min(12 + cap);
        if end <= 12 {
            return;
        }
        let (io, key, size) = (self.clone(), pack.key.clone(), pack.size);
        // Every run is announced now, so that a request that needs one of its blocks waits for
        // it rather than reading the block on its own.
        let runs: Vec<(u64, u64, tokio::sync::watch::Sender<bool>)> = (0..end
            .div_ceil(PREFETCH_RUN))
            .map(|i| {
                let from = i * PREFETCH_RUN;
                // Whole blocks only (the last one may end at the pack's end).
                let to = (from + PREFETCH_RUN)
                    .min(end)
                    .div_ceil(BLOCK_SIZE)
                    .saturating_mul(BLOCK_SIZE)
                    .min(size);
                let (tx, rx) = tokio::sync::watch::channel(false);
                self.loading_list().push(Loading {
                    pack: key.clone(),
                    first: from / BLOCK_SIZE,
                    last: (to - 1) / BLOCK_SIZE,
                    done: rx,
                });
                (from, to, tx)
            })
            .collect();
        self.rt.spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(runs)
                .map(|(from, to, tx)| {
                    let (io, key) = (io.clone(), key.clone());
                    async move {
                        if let Ok(data) = io.store.get_range(&key, from, to - from).await {
                            crate::metrics::STORE_RANGE_GETS.inc();
                            crate::metrics::STORE_RANGE_BYTES.add(data.len() as u64);
                            if data.len() as u64 == to - from {
                                io.insert_blocks(&key, from / BLOCK_SIZE, &data);
                            }
                        }
                        io.loading_list()
                            .retain(|l| !(l.pack == key && l.first == from / BLOCK_SIZE));
                        let _ = tx.send(true);
                    }
                })
                .buffer_unordered(parallel.max(1))
                .collect::<Vec<()>>()
                .await;
        });
    }

    fn loading_list(&self) -> std::sync::MutexGuard<'_, Vec<Loading>> {
        self.loading.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// If a background load will bring `block` of `pack`, wait for it; whether one did.
    fn wait_for_load(&self, pack: &Arc<str>, block: u64) -> bool {
        let done = self
            .loading_list()
            .iter()
            .find(|l| &l.pack == pack && l.first <= block && block <= l.last)
            .map(|l| l.done.clone());
        match done {
            Some(mut rx) => {
                let _ = self.rt.block_on(rx.wait_for(|d| *d));
                true
            }
            None => false,
        }
    }

    /// Cache `data`, read from `key` at block `first`, as blocks; returns them.
    fn insert_blocks(&self, key: &Arc<str>, first: u64, data: &Bytes) -> Vec<Bytes> {
        let mut out = Vec::with_capacity(data.len().div_ceil(BLOCK_SIZE as usize));
        let mut off = 0usize;
        let mut block = first;
        while off < data.len() {
            let blk = data.slice(off..(off + BLOCK_SIZE as usize).min(data.len()));
            self.blocks.insert(
                BlockKey {
                    pack: key.clone(),
                    block,
                },
                blk.clone(),
            );
            out.push(blk);
            off += BLOCK_SIZE as usize;
            block += 1;
        }
        out
    }

    /// Read `[start, end)` of a pack through the block cache, loading missing blocks with one
    /// ranged GET per run of consecutive missing blocks.
    pub fn read(&self, pack: &Pack, start: u64, end: u64) -> Result<Bytes> {
        if end > pack.size || start > end {
            return Err(corrupt(format!(
                "range {start}..{end} outside pack {} of {} bytes",
                pack.key, pack.size
            )));
        }
        if start == end {
            return Ok(Bytes::new());
        }
        let first = start / BLOCK_SIZE;
        let last = (end - 1) / BLOCK_SIZE;
        let mut blocks: Vec<Option<Bytes>> = (first..=last)
            .map(|b| {
                self.blocks.get(&BlockKey {
                    pack: pack.key.clone(),
                    block: b,
                })
            })
            .collect();
        let mut i = 0;
        while i < blocks.len() {
            if blocks[i].is_some() {
                i += 1;
                continue;
            }
            // A background load brings it: wait, then look again.
            if self.wait_for_load(&pack.key, first + i as u64) {
                for (k, slot) in blocks.iter_mut().enumerate().skip(i) {
                    if slot.is_none() {
                        *slot = self.blocks.get(&BlockKey {
                            pack: pack.key.clone(),
                            block: first + k as u64,
                        });
                    }
                }
                if blocks[i].is_some() {
                    continue;
                }
            }
            let mut j = i;
            while j < blocks.len() && blocks[j].is_none() {
                j += 1;
            }
            let from = (first + i as u64) * BLOCK_SIZE;
            let to = ((first + j as u64) * BLOCK_SIZE).min(pack.size);
            tracing::debug!(pack = %pack.key, from, len = to - from, "block miss");
            let data = self
                .rt
                .block_on(self.store.get_range(&pack.key, from, to - from))?;
            crate::metrics::STORE_RANGE_GETS.inc();
            crate::metrics::STORE_RANGE_BYTES.add(data.len() as u64);
            if data.len() as u64 != to - from {
                return Err(corrupt(format!("short read of {} at {from}", pack.key)));
            }
            let loaded = self.insert_blocks(&pack.key, first + i as u64, &data);
            for (slot, blk) in blocks[i..j].iter_mut().zip(loaded) {
                *slot = Some(blk);
            }
            i = j;
        }
        let rel_start = (start - first * BLOCK_SIZE) as usize;
        let len = (end - start) as usize;
        if let [Some(b)] = &blocks[..] {
            return Ok(b.slice(rel_start..rel_start + len));
        }
        let mut out = Vec::with_capacity(len);
        for b in blocks.iter().flatten() {
            out.extend_from_slice(b);
        }
        Ok(Bytes::from(out).slice(rel_start..rel_start + len))
    }
}

/// Where an object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Index of the pack in [`Odb::packs`].
    pub pack: u32,
    /// Byte offset of the entry in that pack.
    pub offset: u64,
}

/// A pack entry as stored: its header and its raw bytes (header + compressed data).
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The entry's kind (with the delta base, for deltas).
    pub header: Header,
    /// Size of the inflated data (the object, or the delta).
    pub decompressed_size: u64,
    /// Length of the entry header (type/size varint and delta base) at the start of `raw`.
    pub header_len: usize,
    /// The whole entry as stored.
    pub raw: Bytes,
}

impl RawEntry {
    /// The zlib-compressed data after the entry header.
    pub fn compressed(&self) -> &[u8] {
        &self.raw[self.header_len..]
    }
}

/// The packs of one repository.
pub struct Odb {
    /// The packs ([`Location::pack`] indexes this).
    pub packs: Vec<Arc<Pack>>,
    /// The process's store access and caches.
    pub io: Arc<Io>,
    /// Which packs have reachability bitmaps in the store (as the ref index says).
    bitmapped: Vec<bool>,
}

impl Odb {
    /// The objects of `packs` (none marked as having bitmaps), read through `io`.
    pub fn new(packs: Vec<Arc<Pack>>, io: Arc<Io>) -> Self {
        Odb {
            packs,
            io,
            bitmapped: Vec::new(),
        }
    }

    /// The same, knowing which packs have bitmaps (parallel to `packs`).
    pub fn with_bitmapped(mut self, bitmapped: Vec<bool>) -> Self {
        self.bitmapped = bitmapped;
        self
    }

    /// The first pack with bitmaps, and its bitmaps (loaded from the store on first use, on
    /// the calling thread: never call this on an async worker).
    pub fn bitmaps(&self) -> Option<(u32, Arc<bitmap::Bitmaps>)> {
        let i = self.bitmapped.iter().position(|&b| b)?;
        let pack = self.packs.get(i)?;
        let got = pack.bitmaps(|| {
            let key = pack.bitmap_key();
            let data = match self.io.rt.block_on(self.io.store.get(&key)) {
                Ok(Some(d)) => d.data,
                Ok(None) => {
                    tracing::warn!(key = %key, "bitmaps named by the ref index are missing");
                    return Ok(None);
                }
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "cannot load bitmaps");
                    return Err(());
                }
            };
            match bitmap::Bitmaps::parse(&data, &pack.checksum(), pack.num_objects()) {
                Ok(b) => Ok(Some(Arc::new(b))),
                Err(e) => {
                    tracing::warn!(key = %key, error = %e, "unusable bitmaps");
                    Ok(None)
                }
            }
        })?;
        Some((i as u32, got))
    }

    /// Where object `id` is: the first pack whose index has it.
    pub fn locate(&self, id: &oid) -> Option<Location> {
        self.packs.iter().enumerate().find_map(|(i, p)| {
            p.offset_of(id).map(|offset| Location {
                pack: i as u32,
                offset,
            })
        })
    }

    /// The object id of the entry at `loc` (reverse index lookup).
    pub fn oid_at(&self, loc: Location) -> Option<ObjectId> {
        self.packs.get(loc.pack as usize)?.oid_at_offset(loc.offset)
    }

    /// Load the delta chains under `bases` (locations whose objects will be decoded) into the
    /// block cache: one round of parallel, coalesced GETs per chain level, instead of one
    /// block miss after another down each chain. Stops at decoded objects already cached.
    pub fn prefetch_chains(&self, bases: &[Location]) {
        let mut seen: std::collections::HashSet<Location> = std::collections::HashSet::new();
        let cached = |l: Location| {
            self.pack(l).is_ok_and(|p| {
                self.io
                    .objects
                    .get(&ObjectKey {
                        pack: p.key.clone(),
                        offset: l.offset,
                    })
                    .is_some()
            })
        };
        let mut level: Vec<Location> = bases
            .iter()
            .copied()
            .filter(|&l| seen.insert(l) && !cached(l))
            .collect();
        // Chains are at most 10,000 long (see `object_at`); git makes them at most 50.
        for _ in 0..64 {
            if level.is_empty() {
                return;
            }
            if let Some(h) = self.prefetch(&level) {
                let _ = self.io.rt.block_on(h);
            }
            let mut next = Vec::new();
            for l in level {
                let Ok(e) = self.raw_entry(l) else { continue };
                if let Ok(Some(b)) = self.base_location(l, &e.header)
                    && seen.insert(b)
                    && !cached(b)
                {
                    next.push(b);
                }
            }
            level = next;
        }
    }

    /// Start loading the blocks that hold the entries at `locs` and are not cached: coalesced
    /// into ranged GETs of up to [`PREFETCH_RUN`] bytes (small gaps read through), at most
    /// [`PREFETCH_PARALLEL`] at a time. The handle resolves once they are cached (`None`:
    /// nothing to load); errors are left for the reader, which loads what is still missing
    /// itself.
    pub fn prefetch(&self, locs: &[Location]) -> Option<tokio::task::JoinHandle<()>> {
        let gap = PREFETCH_GAP / BLOCK_SIZE;
        let max_run = PREFETCH_RUN / BLOCK_SIZE;
        // (pack, first block, last block)
        let mut runs: Vec<(Arc<Pack>, u64, u64)> = Vec::new();
        for loc in locs {
            let Ok(pack) = self.pack(*loc) else { continue };
            let end = pack.entry_end(loc.offset);
            if end <= loc.offset {
                continue;
            }
            for b in loc.offset / BLOCK_SIZE..=(end - 1) / BLOCK_SIZE {
                let key = BlockKey {
                    pack: pack.key.clone(),
                    block: b,
                };
                if self.io.blocks.get(&key).is_some() {
                    continue;
                }
                match runs.last_mut() {
                    Some((p, first, last))
                        if Arc::ptr_eq(p, pack)
                            && b >= *first
                            && b <= *last + gap + 1
                            && b - *first < max_run =>
                    {
                        *last = (*last).max(b);
                    }
                    _ => runs.push((pack.clone(), b, b)),
                }
            }
        }
        if runs.is_empty() {
            return None;
        }
        let io = self.io.clone();
        Some(self.io.rt.spawn(async move {
            use futures::StreamExt;
            futures::stream::iter(runs)
                .map(|(pack, first, last)| {
                    let io = io.clone();
                    async move {
                        let from = first * BLOCK_SIZE;
                        let to = ((last + 1) * BLOCK_SIZE).min(pack.size);
                        if let Ok(data) = io.store.get_range(&pack.key, from, to - from).await {
                            crate::metrics::STORE_RANGE_GETS.inc();
                            crate::metrics::STORE_RANGE_BYTES.add(data.len() as u64);
                            if data.len() as u64 == to - from {
                                io.insert_blocks(&pack.key, first, &data);
                            }
                        }
                    }
                })
                .buffer_unordered(PREFETCH_PARALLEL)
                .collect::<Vec<()>>()
                .await;
        }))
    }

    /// Whether any pack has object `id`.
    pub fn contains(&self, id: &oid) -> bool {
        self.locate(id).is_some()
    }

    fn pack(&self, loc: Location) -> Result<&Arc<Pack>> {
        self.packs
            .get(loc.pack as usize)
            .ok_or_else(|| corrupt("location names an unknown pack"))
    }

    /// Read the whole stored entry at `loc`.
    pub fn raw_entry(&self, loc: Location) -> Result<RawEntry> {
        let pack = self.pack(loc)?;
        let end = pack.entry_end(loc.offset);
        if end <= loc.offset {
            return Err(corrupt(format!(
                "empty entry at {} in {}",
                loc.offset, pack.key
            )));
        }
        let raw = self.io.read(pack, loc.offset, end)?;
        let entry = gix_pack::data::Entry::from_bytes(&raw, loc.offset, gix_hash::Kind::Sha1)
            .map_err(|e| corrupt(format!("entry at {} in {}: {e}", loc.offset, pack.key)))?;
        let header_len = (entry.data_offset - loc.offset) as usize;
        if header_len > raw.len() {
            return Err(corrupt("entry header longer than entry"));
        }
        Ok(RawEntry {
            header: entry.header,
            decompressed_size: entry.decompressed_size,
            header_len,
            raw,
        })
    }

    /// Location of the delta base of an entry, if the base is in this database.
    pub fn base_location(&self, loc: Location, header: &Header) -> Result<Option<Location>> {
        match header {
            Header::OfsDelta { base_distance } => {
                let offset = loc
                    .offset
                    .checked_sub(*base_distance)
                    .ok_or_else(|| corrupt("ofs-delta base before start of pack"))?;
                Ok(Some(Location {
                    pack: loc.pack,
                    offset,
                }))
            }
            Header::RefDelta { base_id } => Ok(self.locate(base_id)),
            _ => Ok(None),
        }
    }

    /// Decode object `id` ([`OdbError::NotFound`] when no pack has it).
    pub fn object(&self, id: &oid) -> Result<Arc<Object>> {
        let loc = self
            .locate(id)
            .ok_or_else(|| OdbError::NotFound(id.to_owned()))?;
        self.object_at(loc)
    }

    /// Decode the object at `loc`, resolving delta chains (with the decoded-object cache).
    pub fn object_at(&self, loc: Location) -> Result<Arc<Object>> {
        let key = |l: Location| -> Result<ObjectKey> {
            Ok(ObjectKey {
                pack: self.pack(l)?.key.clone(),
                offset: l.offset,
            })
        };
        if let Some(o) = self.io.objects.get(&key(loc)?) {
            return Ok(o);
        }
        // Walk down the chain until a base (or a cached object) is found.
        let mut chain: Vec<(Location, Vec<u8>)> = Vec::new();
        let mut cur = loc;
        let mut base: Arc<Object>;
        loop {
            if chain.len() > 10_000 {
                return Err(corrupt("delta chain too long"));
            }
            if !chain.is_empty()
                && let Some(o) = self.io.objects.get(&key(cur)?)
            {
                base = o;
                break;
            }
            let e = self.raw_entry(cur)?;
            let data = inflate(e.compressed(), e.decompressed_size)?;
            match e.header {
                Header::Commit | Header::Tree | Header::Blob | Header::Tag => {
                    let kind = match e.header {
                        Header::Commit => Kind::Commit,
                        Header::Tree => Kind::Tree,
                        Header::Blob => Kind::Blob,
                        _ => Kind::Tag,
                    };
                    base = Arc::new(Object { kind, data });
                    // Delta bases, and what walks read again and again (commits, trees, tags):
                    // a whole blob is read once per pack written, not worth the space.
                    if !chain.is_empty() || kind != Kind::Blob {
                        self.io.objects.insert(key(cur)?, base.clone());
                    }
                    break;
                }
                ref h => {
                    let next = self.base_location(cur, h)?.ok_or_else(|| match h {
                        Header::RefDelta { base_id } => OdbError::NotFound(*base_id),
                        _ => corrupt("missing delta base"),
                    })?;
                    chain.push((cur, data));
                    cur = next;
                }
            }
        }
        while let Some((l, d)) = chain.pop() {
            let data = delta::apply(&base.data, &d).map_err(|e| corrupt(e.to_string()))?;
            base = Arc::new(Object {
                kind: base.kind,
                data,
            });
            self.io.objects.insert(key(l)?, base.clone());
        }
        Ok(base)
    }
}

thread_local! {
    /// One decompressor per thread, reset between streams: setting one up costs more than
    /// inflating a small object.
    static INFLATER: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(true));
    /// Compressors by window size (9..=15 bits), likewise reused.
    static DEFLATERS: std::cell::RefCell<[Option<(u32, flate2::Compress)>; 7]> =
        const { std::cell::RefCell::new([const { None }; 7]) };
}

/// Run `f` with this thread's decompressor, reset for a new zlib stream.
pub(crate) fn with_inflater<T>(f: impl FnOnce(&mut flate2::Decompress) -> T) -> T {
    INFLATER.with(|z| {
        let mut z = z.borrow_mut();
        z.reset(true);
        f(&mut z)
    })
}

/// Inflate a zlib stream whose output size is known.
pub fn inflate(compressed: &[u8], size: u64) -> Result<Vec<u8>> {
    // The declared size is untrusted: reserve at most 1 GiB up front (plus one byte, to see a
    // stream longer than declared).
    let mut out = Vec::with_capacity(size.min(1 << 30) as usize + 1);
    with_inflater(|z| -> Result<()> {
        loop {
            let consumed = z.total_in() as usize;
            let produced = z.total_out();
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(4096));
            }
            let status = z
                .decompress_vec(
                    compressed.get(consumed..).unwrap_or_default(),
                    &mut out,
                    flate2::FlushDecompress::Finish,
                )
                .map_err(|e| corrupt(format!("zlib: {e}")))?;
            if out.len() as u64 > size {
                break;
            }
            match status {
                flate2::Status::StreamEnd => break,
                _ if z.total_in() as usize == consumed && z.total_out() == produced => {
                    return Err(corrupt("zlib: truncated stream".to_string()));
                }
                _ => {}
            }
        }
        Ok(())
    })?;
    if out.len() as u64 != size {
        return Err(corrupt(format!(
            "inflated {} bytes, expected {size}",
            out.len()
        )));
    }
    Ok(out)
}

/// Git's default zlib level for pack entries (`core.compression` unset): what goprox stores.
pub const DEFAULT_COMPRESSION: u32 = 6;

/// Default of [`Io::pack_cache_min_objects`].
pub const PACK_CACHE_MIN_OBJECTS: u64 = pack_cache::MIN_OBJECTS;

/// Deflate an object for a pack entry at git's default level, with the smallest window that
/// covers it (the same bytes out for small objects, a fraction of the set-up cost).
pub fn deflate(data: &[u8]) -> Vec<u8> {
    deflate_at(data, DEFAULT_COMPRESSION)
}

/// [`deflate`] at zlib level `level` (0–9; higher is clamped to 9).
pub fn deflate_at(data: &[u8], level: u32) -> Vec<u8> {
    let level = level.min(9);
    let bits = (usize::BITS - (data.len() + 262).leading_zeros()).clamp(9, 15) as u8;
    DEFLATERS.with(|d| {
        let mut d = d.borrow_mut();
        let slot = &mut d[usize::from(bits - 9)];
        if slot.as_ref().is_some_and(|(l, _)| *l != level) {
            *slot = None;
        }
        let (_, z) = slot.get_or_insert_with(|| {
            (
                level,
                flate2::Compress::new_with_window_bits(flate2::Compression::new(level), true, bits),
            )
        });
        z.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(64));
            }
            let consumed = z.total_in() as usize;
            match z.compress_vec(
                data.get(consumed..).unwrap_or_default(),
                &mut out,
                flate2::FlushCompress::Finish,
            ) {
                Ok(flate2::Status::StreamEnd) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflate_roundtrip() {
        let data = b"some data some data some data".repeat(100);
        let c = deflate(&data);
        assert_eq!(inflate(&c, data.len() as u64).unwrap(), data);
        assert!(inflate(&c, 5).is_err());
        assert!(inflate(&c[..c.len() / 2], data.len() as u64).is_err());
        assert_eq!(inflate(&deflate(b""), 0).unwrap(), b"");
    }

    /// A memory store whose ranged GETs are slow and counted.
    #[derive(Debug)]
    struct SlowStore(
        crate::store::memory::MemoryStore,
        std::sync::atomic::AtomicUsize,
    );

    #[async_trait::async_trait]
    impl crate::store::ObjectStore for SlowStore {
        fn describe(&self) -> String {
            "slow".into()
        }
        async fn get(&self, key: &str) -> crate::store::Result<Option<crate::store::GetOutput>> {
            self.0.get(key).await
        }
        async fn get_range(&self, key: &str, offset: u64, len: u64) -> crate::store::Result<Bytes> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            self.0.get_range(key, offset, len).await
        }
        async fn head(&self, key: &str) -> crate::store::Result<Option<u64>> {
            self.0.head(key).await
        }
        async fn put(
            &self,
            key: &str,
            data: Bytes,
            mode: crate::store::PutMode,
        ) -> crate::store::Result<crate::store::ETag> {
            self.0.put(key, data, mode).await
        }
        async fn delete(&self, key: &str) -> crate::store::Result<()> {
            self.0.delete(key).await
        }
        async fn list(&self, prefix: &str) -> crate::store::Result<Vec<String>> {
            self.0.list(prefix).await
        }
        async fn list_meta(
            &self,
            prefix: &str,
        ) -> crate::store::Result<Vec<crate::store::ListEntry>> {
            self.0.list_meta(prefix).await
        }
    }

    /// A read of blocks a background load ([`Io::warm`]) is bringing waits for it: one GET,
    /// not two.
    #[test]
    fn readers_wait_for_the_background_load() {
        // A one-blob pack of 300 KiB of incompressible bytes, and its index.
        let blob = crate::testdata::Rng(7).bytes(300 << 10);
        let mut pack = b"PACK\0\0\0\x02\0\0\0\x01".to_vec();
        writer::entry_header(writer::EntryKind::Blob, blob.len() as u64, &mut pack);
        pack.extend_from_slice(&deflate(&blob));
        let sum = sha1::Digest::finalize(<sha1::Sha1 as sha1::Digest>::new_with_prefix(&pack));
        pack.extend_from_slice(&sum);
        let indexed = ingest::index_in_memory(&pack, 1 << 20).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let slow = Arc::new(SlowStore(Default::default(), Default::default()));
        let store: DynStore = slow.clone();
        rt.block_on(store.put(
            "p.pack",
            Bytes::from(pack.clone()),
            crate::store::PutMode::CreateOnly,
        ))
        .unwrap();
        let p = Arc::new(
            Pack::from_index_bytes(
                indexed.name,
                Arc::from("p.pack"),
                pack.len() as u64,
                indexed.idx,
            )
            .unwrap(),
        );
        let io = Arc::new(Io::new(store, rt.handle().clone(), 64 << 20));
        io.warm(&p, pack.len() as u64);
        let (io2, p2) = (io.clone(), p.clone());
        let got = std::thread::spawn(move || io2.read(&p2, 100, 200_000).unwrap())
            .join()
            .unwrap();
        assert_eq!(&got[..], &pack[100..200_000]);
        assert_eq!(
            slow.1.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "the reader read on its own"
        );
    }
}
