//! Pack ingestion in bounded memory (what `git index-pack` does, without the pack on disk).
//!
//! [`receive`] reads a pack as it streams in, hands every byte on (to a store upload) as it
//! passes, checks the trailer checksum and hashes each object whose data it can produce right
//! there: whole objects, and deltas whose base is still in a byte-bounded cache of recently
//! decoded objects. The rest (deltas whose base left the cache) is resolved by
//! [`Received::finish`] in one forward read of the *stored* pack: it decodes exactly the pending
//! entries and the bases they need, holding each decoded base only until its last pending child
//! is done. Then it writes the `.idx` (version 2) in memory.
//!
//! Memory is the cache budget plus about 50 bytes per object, whatever the pack's size.

use super::cache::{ByteLru, Weigh};
use super::delta;
use bytes::Bytes;
use gix_hash::ObjectId;
use gix_pack::data::entry::Header;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

/// Why a pack could not be received or indexed.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Reading the pack's bytes failed.
    #[error("reading the pack: {0}")]
    Io(#[from] std::io::Error),
    /// The pack does not verify (bad header or trailer, corrupt entry, unresolvable delta).
    #[error("invalid pack: {0}")]
    Invalid(String),
    /// The pack exceeded the byte limit given.
    #[error("pack larger than the limit of {0} bytes")]
    TooLarge(u64),
}

fn invalid(msg: impl Into<String>) -> IngestError {
    IngestError::Invalid(msg.into())
}

type Result<T, E = IngestError> = std::result::Result<T, E>;

/// The largest object (or delta) a pack may hold: an entry or a delta declaring more is refused
/// before anything is allocated for it (a few hundred compressed bytes can declare gigabytes).
pub const MAX_OBJECT_BYTES: u64 = 1 << 30;

/// Apply a delta whose declared result is within [`MAX_OBJECT_BYTES`].
fn apply_delta(base: &[u8], delta: &[u8], offset: u64) -> Result<Vec<u8>> {
    let (_, result) =
        delta::sizes(delta).map_err(|e| invalid(format!("delta at {offset}: {e}")))?;
    if result > MAX_OBJECT_BYTES {
        return Err(invalid(format!(
            "delta at {offset} makes an object of {result} bytes, larger than {MAX_OBJECT_BYTES}"
        )));
    }
    delta::apply(base, delta).map_err(|e| invalid(format!("delta at {offset}: {e}")))
}

/// No base (a whole object), or a REF_DELTA's base whose offset is not known yet.
const NONE: u64 = u64::MAX;

/// What is known of one entry.
#[derive(Clone, Copy)]
struct Rec {
    offset: u64,
    /// OFS_DELTA: the base's offset. REF_DELTA: the base's offset once found, else [`NONE`].
    base: u64,
    crc: u32,
    /// Object type (1 commit, 2 tree, 3 blob, 4 tag); 0 while a delta is unresolved.
    kind: u8,
    oid: [u8; 20],
}

impl Rec {
    fn resolved(&self) -> bool {
        self.kind != 0
    }
}

/// A decoded object in a cache.
#[derive(Clone)]
struct Decoded(u8, Arc<Vec<u8>>);

impl Weigh for Decoded {
    fn weight(&self) -> usize {
        self.1.len()
    }
}

fn kind_name(kind: u8) -> &'static [u8] {
    match kind {
        1 => b"commit",
        2 => b"tree",
        3 => b"blob",
        _ => b"tag",
    }
}

fn hash_object(kind: u8, data: &[u8]) -> [u8; 20] {
    let mut h = Sha1::new();
    h.update(kind_name(kind));
    h.update(format!(" {}\0", data.len()).as_bytes());
    h.update(data);
    h.finalize().into()
}

/// Object hashing on a second thread (it is half the work of indexing): objects go to it in
/// batches (one hand-over per [`HASH_BATCH_BYTES`], not one per object: a thread switch per
/// object cost more than hashing a small one) through a short queue; their ids come back when
/// it is joined. Large objects are hashed in place, so the queue holds at most
/// [`HASH_QUEUE`] × ([`HASH_BATCH_BYTES`] + [`HASH_AWAY_MAX`]) bytes.
struct Hasher {
    tx: Option<std::sync::mpsc::SyncSender<Vec<ToHash>>>,
    thread: Option<std::thread::JoinHandle<Vec<Hashed>>>,
    batch: Vec<ToHash>,
    batch_bytes: usize,
}

/// An object for the hashing thread: (entry, type, data).
type ToHash = (u32, u8, Arc<Vec<u8>>);
/// Its answer: (entry, object id).
type Hashed = (u32, [u8; 20]);

const HASH_QUEUE: usize = 4;
const HASH_AWAY_MAX: usize = 4 << 20;
const HASH_BATCH_BYTES: usize = 1 << 20;
const HASH_BATCH_OBJECTS: usize = 1024;

impl Hasher {
    fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<ToHash>>(HASH_QUEUE);
        let thread = std::thread::Builder::new()
            .name("goprox-hash".into())
            .spawn(move || {
                rx.iter()
                    .flatten()
                    .map(|(i, kind, data)| (i, hash_object(kind, &data)))
                    .collect()
            })
            .ok();
        Hasher {
            tx: thread.as_ref().map(|_| tx),
            thread,
            batch: Vec::new(),
            batch_bytes: 0,
        }
    }

    fn hash(&mut self, i: usize, kind: u8, data: &Arc<Vec<u8>>, recs: &mut [Rec]) {
        recs[i].kind = kind;
        if data.len() <= HASH_AWAY_MAX && self.tx.is_some() {
            self.batch.push((i as u32, kind, data.clone()));
            self.batch_bytes += data.len();
            if self.batch_bytes >= HASH_BATCH_BYTES || self.batch.len() >= HASH_BATCH_OBJECTS {
                self.send(recs);
            }
            return;
        }
        recs[i].oid = hash_object(kind, data);
    }

    /// Hand the batch over (or, if the thread is gone, hash it here).
    fn send(&mut self, recs: &mut [Rec]) {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return;
        }
        let refused = match &self.tx {
            Some(tx) => match tx.send(batch) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => batch,
        };
        for (i, kind, data) in refused {
            recs[i as usize].oid = hash_object(kind, &data);
        }
    }

    /// Wait for the queued objects and record their ids.
    fn join(mut self, recs: &mut [Rec]) -> Result<()> {
        self.send(recs);
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let ids = t.join().map_err(|_| invalid("the hashing thread failed"))?;
            for (i, oid) in ids {
                recs[i as usize].oid = oid;
            }
        }
        Ok(())
    }
}

/// The input side of [`receive`]: a buffer over the stream that hashes what was consumed
/// (the pack checksum) and passes it on to the sink.
struct Input<'a> {
    inner: &'a mut dyn Read,
    sink: &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    buf: Vec<u8>,
    /// Consumed up to here; `buf[passed..pos]` is consumed but not yet hashed and passed on.
    pos: usize,
    passed: usize,
    end: usize,
    eof: bool,
    /// Pack offset of `buf[pos]`.
    offset: u64,
    /// Bytes read from the stream, and the most it may have.
    read: u64,
    limit: u64,
    pack_hash: Sha1,
    crc: crc32fast::Hasher,
}

impl<'a> Input<'a> {
    /// Reading a pack of at most `limit` bytes from `inner`, passing what is consumed on to
    /// `sink`.
    fn new(
        inner: &'a mut dyn Read,
        sink: &'a mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        limit: u64,
    ) -> Self {
        Input {
            inner,
            sink,
            buf: vec![0; 256 << 10],
            pos: 0,
            passed: 0,
            end: 0,
            eof: false,
            offset: 0,
            read: 0,
            limit,
            pack_hash: Sha1::new(),
            crc: crc32fast::Hasher::new(),
        }
    }

    /// Consume the pack header (`PACK`, version 2 or 3); returns the object count it declares.
    fn pack_header(&mut self) -> Result<u32> {
        let head = self.want(12)?;
        if head.len() < 12 || &head[..4] != b"PACK" {
            return Err(invalid("not a pack (no PACK header)"));
        }
        let version = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if version != 2 && version != 3 {
            return Err(invalid(format!("unsupported pack version {version}")));
        }
        let count = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        self.consume(12);
        Ok(count)
    }

    /// After the last entry: consume the trailer, which must be the checksum of everything
    /// before it and the end of the stream; returns that checksum.
    fn trailer(&mut self) -> Result<ObjectId> {
        self.pass_on()?;
        let computed: [u8; 20] = self.pack_hash.clone().finalize().into();
        let trailer = self.want(20)?;
        if trailer.len() < 20 {
            return Err(invalid("pack ends before its trailer"));
        }
        if trailer[..20] != computed {
            return Err(invalid("pack checksum mismatch"));
        }
        let checksum = ObjectId::from_bytes_or_panic(&computed);
        self.pos += 20;
        self.offset += 20;
        let trailer_bytes = self.buf[self.passed..self.pos].to_vec();
        (self.sink)(&trailer_bytes)?;
        self.passed = self.pos;
        if self.pos < self.end || self.fill()? {
            return Err(invalid("data after the pack trailer"));
        }
        Ok(checksum)
    }

    fn pass_on(&mut self) -> Result<()> {
        let done = &self.buf[self.passed..self.pos];
        if !done.is_empty() {
            self.pack_hash.update(done);
            (self.sink)(done)?;
        }
        self.passed = self.pos;
        Ok(())
    }

    /// Read more, keeping the unconsumed bytes; false at the end of the stream (or when the
    /// buffer is full of unconsumed bytes, which no caller needs).
    fn fill(&mut self) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        self.pass_on()?;
        self.buf.copy_within(self.pos..self.end, 0);
        self.end -= self.pos;
        self.pos = 0;
        self.passed = 0;
        if self.end == self.buf.len() {
            return Ok(false);
        }
        let n = loop {
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        };
        if n == 0 {
            self.eof = true;
            return Ok(false);
        }
        self.end += n;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(IngestError::TooLarge(self.limit));
        }
        Ok(true)
    }

    /// At least `n` bytes available unless the stream ends first.
    fn want(&mut self, n: usize) -> Result<&[u8]> {
        while self.end - self.pos < n && self.fill()? {}
        Ok(&self.buf[self.pos..self.end])
    }

    fn consume(&mut self, n: usize) {
        self.crc.update(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.offset += n as u64;
    }

    /// Parse one entry's header and inflate its data: (header, data, CRC-32 of the entry).
    fn entry(&mut self) -> Result<(Header, Vec<u8>, u32)> {
        self.crc = crc32fast::Hasher::new();
        let start = self.offset;
        let avail = self.want(32)?;
        let e = gix_pack::data::Entry::from_bytes(avail, start, gix_hash::Kind::Sha1)
            .map_err(|e| invalid(format!("entry at {start}: {e}")))?;
        let header_size = (e.data_offset - start) as usize;
        if header_size > avail.len() {
            return Err(invalid(format!("truncated entry at {start}")));
        }
        self.consume(header_size);
        let size = e.decompressed_size;
        if size > MAX_OBJECT_BYTES {
            return Err(invalid(format!(
                "entry at {start} declares {size} bytes, larger than {MAX_OBJECT_BYTES}"
            )));
        }
        let mut out = Vec::with_capacity(size.min(64 << 20) as usize);
        super::with_inflater(|z| -> Result<()> {
            loop {
                if self.pos == self.end && !self.fill()? {
                    return Err(invalid("pack ends inside an entry"));
                }
                if out.len() == out.capacity() {
                    out.reserve(out.capacity().clamp(4096, 64 << 20));
                }
                let (in0, out0) = (z.total_in(), out.len());
                let status = z
                    .decompress_vec(
                        &self.buf[self.pos..self.end],
                        &mut out,
                        flate2::FlushDecompress::None,
                    )
                    .map_err(|e| invalid(format!("zlib at {}: {e}", self.offset)))?;
                let used = (z.total_in() - in0) as usize;
                self.consume(used);
                if out.len() as u64 > size {
                    return Err(invalid(format!(
                        "entry at {} inflates past its size {size}",
                        start
                    )));
                }
                if status == flate2::Status::StreamEnd {
                    return Ok(());
                }
                // No progress with input and room available: more input is needed.
                let stuck = used == 0 && out.len() == out0 && out.len() < out.capacity();
                if stuck && !self.fill()? {
                    return Err(invalid("pack ends inside an entry"));
                }
            }
        })?;
        if out.len() as u64 != size {
            return Err(invalid(format!(
                "entry at {} inflates to {} bytes, its header says {size}",
                start,
                out.len()
            )));
        }
        Ok((e.header, out, self.crc.clone().finalize()))
    }
}

/// A pack that has streamed past: every entry's offset and CRC, the object ids of those
/// already resolved, and the deltas still to resolve.
pub struct Received {
    recs: Vec<Rec>,
    /// REF_DELTA base ids by entry.
    ref_bases: HashMap<u32, ObjectId>,
    pending: usize,
    /// The pack's trailer checksum.
    pub checksum: ObjectId,
    /// Bytes, trailer included.
    pub size: u64,
}

/// An indexed pack.
#[derive(Debug)]
pub struct Indexed {
    /// Pack checksum, hex.
    pub name: String,
    /// The pack index (`.idx`, version 2).
    pub idx: Vec<u8>,
    /// Objects in the pack.
    pub objects: u32,
    /// End of the last commit, tree or tag entry: git writes those before the blobs, so
    /// `[12, walk_end)` is what history walks read.
    pub walk_end: u64,
}

/// Random access to the stored pack for [`Received::finish`].
pub trait PackSource {
    /// These ranges will be read, in this order (a hint to read ahead).
    fn plan(&mut self, _ranges: &[(u64, u64)]) {}
    /// Bytes `[start, end)` of the pack.
    fn read(&mut self, start: u64, end: u64) -> std::io::Result<Bytes>;
}

impl PackSource for &[u8] {
    fn read(&mut self, start: u64, end: u64) -> std::io::Result<Bytes> {
        self.get(start as usize..end as usize)
            .map(Bytes::copy_from_slice)
            .ok_or_else(|| std::io::Error::other("read past the end of the pack"))
    }
}

/// Read a pack from `input`, passing every byte to `sink` as it is consumed, and resolve what
/// can be resolved on the way with at most `cache_bytes` of decoded objects. Fails on a pack
/// longer than `limit` bytes, a bad trailer checksum, or data after the trailer.
pub fn receive(
    input: &mut dyn Read,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    cache_bytes: usize,
    limit: u64,
) -> Result<Received> {
    let mut inp = Input::new(input, sink, limit);
    let count = inp.pack_header()?;
    let cache: ByteLru<u64, Decoded> = ByteLru::new(cache_bytes);
    // Reserve for the declared count only as far as the bytes could hold (an entry is at
    // least 2 bytes): a lying header must not allocate.
    let mut recs = Vec::with_capacity((count as usize).min(1 << 20));
    let mut ref_bases = HashMap::new();
    let mut pending = 0usize;
    let mut hasher = Hasher::new();
    for i in 0..count {
        let offset = inp.offset;
        let (header, data, crc) = inp.entry()?;
        let mut rec = Rec {
            offset,
            base: NONE,
            crc,
            kind: 0,
            oid: [0; 20],
        };
        let whole = match header {
            Header::Commit => Some(1),
            Header::Tree => Some(2),
            Header::Blob => Some(3),
            Header::Tag => Some(4),
            Header::OfsDelta { base_distance } => {
                rec.base = offset
                    .checked_sub(base_distance)
                    .filter(|&b| b >= 12)
                    .ok_or_else(|| {
                        invalid(format!("delta at {offset} has its base before the pack"))
                    })?;
                None
            }
            Header::RefDelta { base_id } => {
                ref_bases.insert(i, base_id);
                None
            }
        };
        let decoded = match whole {
            Some(kind) => Some((kind, data)),
            None if rec.base != NONE => match cache.get(&rec.base) {
                Some(Decoded(kind, base)) => Some((kind, apply_delta(&base, &data, offset)?)),
                None => None,
            },
            None => None,
        };
        recs.push(rec);
        match decoded {
            Some((kind, data)) => {
                let data = Arc::new(data);
                hasher.hash(i as usize, kind, &data, &mut recs);
                cache.insert(offset, Decoded(kind, data));
            }
            None => pending += 1,
        }
    }
    hasher.join(&mut recs)?;
    let checksum = inp.trailer()?;
    Ok(Received {
        recs,
        ref_bases,
        pending,
        checksum,
        size: inp.offset,
    })
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("checksum", &self.checksum)
            .field("size", &self.size)
            .field("objects", &self.recs.len())
            .field("pending", &self.pending)
            .finish()
    }
}

impl Received {
    /// Objects in the pack.
    pub fn objects(&self) -> u32 {
        self.recs.len() as u32
    }

    /// Deltas left for [`Received::finish`].
    pub fn pending(&self) -> usize {
        self.pending
    }

    fn index_of(&self, offset: u64) -> Result<usize> {
        self.recs
            .binary_search_by_key(&offset, |r| r.offset)
            .map_err(|_| invalid(format!("delta base offset {offset} is not an entry")))
    }

    /// Where entry `i` ends.
    fn end_of(&self, i: usize) -> u64 {
        self.recs
            .get(i + 1)
            .map(|r| r.offset)
            .unwrap_or(self.size - 20)
    }

    /// Give REF_DELTAs whose base id is now known their base's offset.
    fn locate_ref_bases(&mut self) {
        let open: Vec<u32> = self
            .ref_bases
            .keys()
            .copied()
            .filter(|&i| self.recs[i as usize].base == NONE)
            .collect();
        if open.is_empty() {
            return;
        }
        let mut by_id: Vec<([u8; 20], u64)> = self
            .recs
            .iter()
            .filter(|r| r.resolved())
            .map(|r| (r.oid, r.offset))
            .collect();
        by_id.sort_unstable();
        for i in open {
            let want = self.ref_bases[&i];
            if let Ok(k) = by_id.binary_search_by(|(id, _)| id[..].cmp(want.as_slice())) {
                self.recs[i as usize].base = by_id[k].1;
            }
        }
    }

    /// Decode entry `i` from `data` (its stored bytes) given its base.
    fn decode(&self, i: usize, stored: &[u8], base: Option<&Decoded>) -> Result<Decoded> {
        let rec = self.recs[i];
        let e = gix_pack::data::Entry::from_bytes(stored, rec.offset, gix_hash::Kind::Sha1)
            .map_err(|e| invalid(format!("entry at {}: {e}", rec.offset)))?;
        let at = (e.data_offset - rec.offset) as usize;
        if e.decompressed_size > MAX_OBJECT_BYTES {
            return Err(invalid(format!("entry at {} is too large", rec.offset)));
        }
        let data = super::inflate(stored.get(at..).unwrap_or_default(), e.decompressed_size)
            .map_err(|e| invalid(format!("entry at {}: {e}", rec.offset)))?;
        Ok(match (e.header, base) {
            (Header::Commit, _) => Decoded(1, Arc::new(data)),
            (Header::Tree, _) => Decoded(2, Arc::new(data)),
            (Header::Blob, _) => Decoded(3, Arc::new(data)),
            (Header::Tag, _) => Decoded(4, Arc::new(data)),
            (_, Some(Decoded(kind, b))) => {
                Decoded(*kind, Arc::new(apply_delta(b, &data, rec.offset)?))
            }
            (_, None) => return Err(invalid(format!("delta at {} without base", rec.offset))),
        })
    }

    /// Entry `i` decoded by reading it and its bases one by one (for a base that is no longer
    /// held: rare).
    fn decode_alone(&self, i: usize, src: &mut dyn PackSource) -> Result<Decoded> {
        let mut chain = vec![i];
        loop {
            let r = self.recs[*chain.last().unwrap_or(&i)];
            if r.base == NONE {
                break;
            }
            if chain.len() > 10_000 {
                return Err(invalid("delta chain too long"));
            }
            chain.push(self.index_of(r.base)?);
        }
        let mut cur = None;
        for &k in chain.iter().rev() {
            let stored = src.read(self.recs[k].offset, self.end_of(k))?;
            cur = Some(self.decode(k, &stored, cur.as_ref())?);
        }
        cur.ok_or_else(|| invalid("empty delta chain"))
    }

    /// Resolve the pending deltas by reading the stored pack through `src`, holding at most
    /// about `budget` bytes of decoded bases, and write the index.
    pub fn finish(mut self, src: &mut dyn PackSource, budget: usize) -> Result<Indexed> {
        // Each round resolves every pending delta whose base is known; REF_DELTAs whose base
        // is itself a pending delta become resolvable in a later round.
        while self.pending > 0 {
            self.locate_ref_bases();
            let before = self.pending;
            self.round(src, budget)?;
            if self.pending == before {
                return Err(invalid(format!(
                    "{} deltas have a base that is not in the pack",
                    self.pending
                )));
            }
        }
        self.write_index()
    }

    fn round(&mut self, src: &mut dyn PackSource, budget: usize) -> Result<()> {
        let n = self.recs.len();
        // Needed: the resolvable pending entries and the bases they need, transitively.
        let mut needed = vec![false; n];
        let mut children = vec![0u32; n];
        for i in 0..n {
            let r = self.recs[i];
            if r.resolved() || r.base == NONE {
                continue;
            }
            let mut k = i;
            loop {
                if needed[k] {
                    break;
                }
                needed[k] = true;
                let b = self.recs[k].base;
                if b == NONE {
                    break;
                }
                let bi = self.index_of(b)?;
                children[bi] += 1;
                k = bi;
            }
        }
        let ranges: Vec<(u64, u64)> = (0..n)
            .filter(|&i| needed[i])
            .map(|i| (self.recs[i].offset, self.end_of(i)))
            .collect();
        src.plan(&ranges);
        // Decoded bases with children still to come, oldest first.
        let mut live: lru::LruCache<usize, Decoded> = lru::LruCache::unbounded();
        let mut live_bytes = 0usize;
        let mut hasher = Hasher::new();
        for i in 0..n {
            if !needed[i] {
                continue;
            }
            let r = self.recs[i];
            let stored = src.read(r.offset, self.end_of(i))?;
            let base = if r.base == NONE {
                None
            } else {
                let bi = self.index_of(r.base)?;
                let held = if children[bi] == 1 {
                    live.pop(&bi).inspect(|d| live_bytes -= d.1.len())
                } else {
                    live.get(&bi).cloned()
                };
                children[bi] -= 1;
                Some(match held {
                    Some(d) => d,
                    None => self.decode_alone(bi, src)?,
                })
            };
            let d = self.decode(i, &stored, base.as_ref())?;
            if !r.resolved() {
                hasher.hash(i, d.0, &d.1, &mut self.recs);
                self.pending -= 1;
            }
            if children[i] > 0 {
                live_bytes += d.1.len();
                live.put(i, d);
                while live_bytes > budget && live.len() > 1 {
                    if let Some((_, old)) = live.pop_lru() {
                        live_bytes -= old.1.len();
                    }
                }
            }
        }
        hasher.join(&mut self.recs)
    }

    /// The `.idx` (version 2) of the resolved pack.
    fn write_index(self) -> Result<Indexed> {
        let n = self.recs.len();
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_unstable_by(|&a, &b| self.recs[a as usize].oid.cmp(&self.recs[b as usize].oid));
        if order
            .windows(2)
            .any(|w| self.recs[w[0] as usize].oid == self.recs[w[1] as usize].oid)
        {
            return Err(invalid("an object occurs twice in the pack"));
        }
        let mut idx = Vec::with_capacity(8 + 1024 + n * 28 + 40);
        idx.extend_from_slice(b"\xfftOc");
        idx.extend_from_slice(&2u32.to_be_bytes());
        let mut fanout = [0u32; 256];
        for r in &self.recs {
            fanout[r.oid[0] as usize] += 1;
        }
        let mut sum = 0u32;
        for f in fanout {
            sum += f;
            idx.extend_from_slice(&sum.to_be_bytes());
        }
        for &i in &order {
            idx.extend_from_slice(&self.recs[i as usize].oid);
        }
        for &i in &order {
            idx.extend_from_slice(&self.recs[i as usize].crc.to_be_bytes());
        }
        let mut large = Vec::new();
        for &i in &order {
            let off = self.recs[i as usize].offset;
            if off < 0x8000_0000 {
                idx.extend_from_slice(&(off as u32).to_be_bytes());
            } else {
                idx.extend_from_slice(&(0x8000_0000 | large.len() as u32).to_be_bytes());
                large.push(off);
            }
        }
        for off in large {
            idx.extend_from_slice(&off.to_be_bytes());
        }
        idx.extend_from_slice(self.checksum.as_slice());
        let own: [u8; 20] = Sha1::digest(&idx).into();
        idx.extend_from_slice(&own);
        let walk_end = (0..n)
            .filter(|&i| self.recs[i].base == NONE && matches!(self.recs[i].kind, 1 | 2 | 4))
            .map(|i| self.end_of(i))
            .max()
            .unwrap_or(0);
        Ok(Indexed {
            name: self.checksum.to_string(),
            idx,
            objects: n as u32,
            walk_end,
        })
    }
}

/// Index a pack held in memory (tests, small packs): [`receive`] then [`Received::finish`].
pub fn index_in_memory(pack: &[u8], cache_bytes: usize) -> Result<Indexed> {
    let received = receive(&mut &pack[..], &mut |_| Ok(()), cache_bytes, u64::MAX)?;
    received.finish(&mut &pack[..], cache_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pack of `entries` (each a header and its uncompressed data), with its trailer.
    fn pack(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut p = b"PACK\0\0\0\x02".to_vec();
        p.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (header, data) in entries {
            p.extend_from_slice(header);
            p.extend_from_slice(&super::super::deflate(data));
        }
        let sum = Sha1::digest(&p);
        p.extend_from_slice(&sum);
        p
    }

    fn header(kind: super::super::writer::EntryKind, size: u64) -> Vec<u8> {
        let mut h = Vec::new();
        super::super::writer::entry_header(kind, size, &mut h);
        h
    }

    /// Sizes beyond the limit are refused before anything is allocated for them: an entry
    /// declaring 2 GiB, and a small delta declaring a 2 GiB result.
    #[test]
    fn oversized_objects_are_refused() {
        let blob = b"abc".to_vec();
        let ok = pack(&[(
            header(super::super::writer::EntryKind::Blob, 3),
            blob.clone(),
        )]);
        assert_eq!(index_in_memory(&ok, 1 << 20).expect("index").objects, 1);
        let huge = pack(&[(
            header(super::super::writer::EntryKind::Blob, 2 << 30),
            blob.clone(),
        )]);
        let err = index_in_memory(&huge, 1 << 20).expect_err("2 GiB entry");
        assert!(err.to_string().contains("larger than"), "{err}");
        // OFS_DELTA on the blob: base size 3, result 2 GiB, one copy of the base.
        let mut d = vec![3u8];
        let mut n: u64 = 2 << 30;
        while n >= 0x80 {
            d.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        d.push(n as u8);
        d.extend_from_slice(&[0x91, 0, 3]);
        let mut h = header(super::super::writer::EntryKind::OfsDelta, d.len() as u64);
        let base_distance = 12
            + header(super::super::writer::EntryKind::Blob, 3).len() as u64
            + super::super::deflate(&blob).len() as u64
            - 12;
        super::super::writer::ofs_distance(base_distance, &mut h);
        for budget in [0, 1 << 20] {
            let bomb = pack(&[
                (
                    header(super::super::writer::EntryKind::Blob, 3),
                    blob.clone(),
                ),
                (h.clone(), d.clone()),
            ]);
            let err = index_in_memory(&bomb, budget).expect_err("2 GiB delta result");
            assert!(err.to_string().contains("larger than"), "{err}");
        }
    }
}
