//! Pack generation: streams a pack of the given objects, copying stored compressed entries
//! verbatim where the delta base is also sent (rewriting OFS_DELTA distances), and inflating,
//! resolving and recompressing only deltas whose base the client will not have.

use super::{Location, Odb, OdbError, RawEntry, Result};
use gix_hash::ObjectId;
use gix_object::Kind;
use gix_pack::data::entry::Header;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

/// Counters of one generated pack.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Objects in the pack.
    pub objects: u64,
    /// Entries copied verbatim (whole objects and deltas).
    pub reused: u64,
    /// Deltas sent verbatim.
    pub reused_deltas: u64,
    /// Deltas resolved and recompressed because their base is not in the pack.
    pub recompressed: u64,
    /// Deltas sent against a base the client has (thin pack).
    pub thin_deltas: u64,
    /// Of the objects whose stored delta could not be reused: sent as a new delta computed
    /// against another object of the same name (in the pack, or the client's for thin packs).
    pub new_deltas: u64,
    /// Bytes written, header and trailer included.
    pub bytes: u64,
}

/// How to write a pack for one client.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions<'a> {
    /// The client understands OFS_DELTA; otherwise such entries become REF_DELTA.
    pub ofs_delta: bool,
    /// Thin pack: objects the client is known to have. A stored delta whose base is among
    /// them is sent verbatim as a REF_DELTA against it instead of being resolved.
    pub thin_bases: Option<&'a HashSet<ObjectId>>,
    /// Name hashes of the trees and blobs sent ([`super::walk::name_hash`]): with them, an
    /// object whose stored delta cannot be reused gets a new delta against an object of the
    /// same name instead of going out whole.
    pub names: Option<&'a HashMap<ObjectId, u32>>,
    /// Thin pack: the client's objects by name hash, as further delta bases.
    pub client_names: Option<&'a HashMap<u32, Vec<ObjectId>>>,
    /// Thin pack: (part of) the client's closure from reachability bitmaps. A stored delta
    /// whose base is in it goes out as it is, as a thin delta.
    pub client_closure: Option<&'a super::bitmap::ClientClosure>,
}

impl Default for WriteOptions<'_> {
    fn default() -> Self {
        WriteOptions {
            ofs_delta: true,
            thin_bases: None,
            names: None,
            client_names: None,
            client_closure: None,
        }
    }
}

impl WriteOptions<'_> {
    /// A base the client has, for a thin pack.
    #[inline]
    fn thin_base(&self, base_id: Option<ObjectId>) -> Option<ObjectId> {
        base_id.filter(|b| self.thin_bases.is_some_and(|t| t.contains(b)))
    }
}

/// Delta search limits: candidates tried per object, the longest delta chain made, objects
/// too small or too large to bother with, and the bytes (base + target) one pack may search
/// in all (beyond it, objects go out whole: the search must not make a request slow).
const DELTA_WINDOW: usize = 10;
const DELTA_MAX_DEPTH: u8 = 50;
const DELTA_MIN_SIZE: usize = 64;
const DELTA_MAX_SIZE: usize = 16 << 20;
const DELTA_SEARCH_BUDGET: u64 = 1 << 30;

/// Where a new delta's base is.
enum NewBase {
    /// Written earlier in this pack: (its location, its offset in the output).
    InPack(Location, u64),
    /// Not sent; the client has it (thin pack).
    Client(ObjectId),
}

/// Delta search state of one pack: recently written trees and blobs by name hash.
#[derive(Default)]
struct DeltaSearch {
    recent: HashMap<u32, std::collections::VecDeque<(Location, ObjectId)>>,
    searched: u64,
}

impl DeltaSearch {
    fn remember(&mut self, name: u32, loc: Location, id: ObjectId) {
        let q = self.recent.entry(name).or_default();
        if q.len() == DELTA_WINDOW {
            q.pop_front();
        }
        q.push_back((loc, id));
    }

    /// The smallest delta of `target` against a candidate base, if it is at most half of
    /// `target`'s size: (base, delta, base depth).
    #[allow(clippy::too_many_arguments)]
    fn find(
        &mut self,
        odb: &Odb,
        kind: EntryKind,
        name: u32,
        target: &[u8],
        written_at: &HashMap<Location, u64>,
        depth: &HashMap<Location, u8>,
        client: Option<&Vec<ObjectId>>,
    ) -> Option<(NewBase, Vec<u8>, u8)> {
        if target.len() < DELTA_MIN_SIZE
            || target.len() > DELTA_MAX_SIZE
            || self.searched > DELTA_SEARCH_BUDGET
        {
            return None;
        }
        let mut best: Option<(NewBase, Vec<u8>, u8)> = None;
        let mut limit = target.len() / 2;
        // A delta this small is not worth bettering: stop searching.
        let good_enough = target.len() / 32;
        let mut try_base = |this: &mut Self, base: &[u8], at: NewBase, d: u8| {
            // Sizes too far apart make poor deltas (git's heuristic).
            if base.len() < target.len() / 8 || base.len() > target.len().saturating_mul(8) {
                return false;
            }
            this.searched += (base.len() + target.len()) as u64;
            let index = super::delta_encode::DeltaIndex::new(base);
            if let Some(delta) = index.encode(target, limit)
                && delta.len() < limit
            {
                limit = delta.len();
                best = Some((at, delta, d));
                return limit <= good_enough;
            }
            false
        };
        // The client's object of the same name first (thin packs): usually the same path one
        // version back, the best base there is.
        for id in client.map(|v| v.as_slice()).unwrap_or_default() {
            if let Ok(b) = odb.object(id)
                && EntryKind::from(b.kind) == kind
                && try_base(self, &b.data, NewBase::Client(*id), 0)
            {
                return best;
            }
        }
        let in_pack: Vec<(Location, ObjectId)> = self
            .recent
            .get(&name)
            .map(|q| q.iter().rev().copied().collect())
            .unwrap_or_default();
        for (loc, _) in in_pack {
            let d = depth.get(&loc).copied().unwrap_or(0);
            let Some(&out) = written_at.get(&loc) else {
                continue;
            };
            if d + 1 >= DELTA_MAX_DEPTH {
                continue;
            }
            if let Ok(b) = odb.object_at(loc)
                && EntryKind::from(b.kind) == kind
                && try_base(self, &b.data, NewBase::InPack(loc, out), d)
            {
                break;
            }
        }
        best
    }
}

struct HashingWriter<'w> {
    inner: &'w mut dyn Write,
    hasher: Sha1,
    written: u64,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The type of a pack entry, as its header gives it (gitformat-pack: 5 is reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EntryKind {
    /// A whole commit.
    Commit = 1,
    /// A whole tree.
    Tree = 2,
    /// A whole blob.
    Blob = 3,
    /// A whole annotated tag.
    Tag = 4,
    /// A delta against an earlier entry of the pack, named by its distance back.
    OfsDelta = 6,
    /// A delta against an object named by its id.
    RefDelta = 7,
}

impl From<Kind> for EntryKind {
    fn from(kind: Kind) -> Self {
        match kind {
            Kind::Commit => EntryKind::Commit,
            Kind::Tree => EntryKind::Tree,
            Kind::Blob => EntryKind::Blob,
            Kind::Tag => EntryKind::Tag,
        }
    }
}

/// Encode a pack entry header: type and inflated size.
pub fn entry_header(kind: EntryKind, size: u64, out: &mut Vec<u8>) {
    let mut s = size;
    let mut b = ((kind as u8) << 4) | (s & 0x0f) as u8;
    s >>= 4;
    while s != 0 {
        out.push(b | 0x80);
        b = (s & 0x7f) as u8;
        s >>= 7;
    }
    out.push(b);
}

/// Encode an OFS_DELTA base distance (git's offset varint, with the +1 bias per byte).
pub fn ofs_distance(mut n: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 10];
    let mut pos = buf.len() - 1;
    buf[pos] = (n & 0x7f) as u8;
    n >>= 7;
    while n != 0 {
        n -= 1;
        pos -= 1;
        buf[pos] = 0x80 | (n & 0x7f) as u8;
        n >>= 7;
    }
    out.extend_from_slice(&buf[pos..]);
}

fn io_err(e: std::io::Error) -> OdbError {
    OdbError::Output(e)
}

/// Resolve the objects to their stored locations, in the order they will be written
/// (pack order, so OFS_DELTA bases precede their deltas).
pub fn plan(odb: &Odb, ids: &[ObjectId]) -> Result<Vec<(Location, ObjectId)>> {
    let mut v = Vec::with_capacity(ids.len());
    for id in ids {
        let loc = odb.locate(id).ok_or(OdbError::NotFound(*id))?;
        v.push((loc, *id));
    }
    v.sort_unstable();
    v.dedup_by(|a, b| a.1 == b.1);
    Ok(v)
}

/// Compressed bytes per read-ahead window of [`write_pack`].
const WINDOW_BYTES: u64 = 16 << 20;

/// `entries` cut into consecutive windows of about [`WINDOW_BYTES`] stored bytes: (index of
/// the window's first entry, its locations).
fn prefetch_windows(odb: &Odb, entries: &[(Location, ObjectId)]) -> Vec<(usize, Vec<Location>)> {
    let mut out: Vec<(usize, Vec<Location>)> = Vec::new();
    let mut bytes = WINDOW_BYTES;
    for (n, &(loc, _)) in entries.iter().enumerate() {
        let size = odb
            .packs
            .get(loc.pack as usize)
            .map(|p| p.entry_end(loc.offset).saturating_sub(loc.offset))
            .unwrap_or(0);
        if bytes >= WINDOW_BYTES {
            out.push((n, Vec::new()));
            bytes = 0;
        }
        bytes += size;
        if let Some(w) = out.last_mut() {
            w.1.push(loc);
        }
    }
    out
}

/// Objects that will go out whole (deltas whose base is neither sent nor the client's):
/// decoded and deflated ahead by worker threads while the writer streams the entries before
/// them, so that their CPU (inflating the chain, deflating the result) runs on every core.
/// Workers take the pack's entries in the writer's order and skip those that go out as they
/// are stored; what a worker has not started when the writer needs it, the writer does itself
/// (the same bytes either way).
struct Ahead {
    state: std::sync::Mutex<AheadState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct AheadState {
    /// Windows of entries, the writer's current one first; workers take each from its end
    /// (the writer goes from its start: they meet in the middle instead of waiting for one
    /// another entry by entry).
    queue: std::collections::VecDeque<Vec<Location>>,
    /// Taken over by the writer before a worker got to them.
    claimed: HashSet<Location>,
    done: HashMap<Location, (Arc<super::Object>, Vec<u8>)>,
    /// Bytes held in `done` (decoded and deflated).
    held: usize,
    /// Being looked at or made by a worker (the writer waits for these).
    busy: HashSet<Location>,
    closed: bool,
}

/// Most bytes (decoded and deflated) the workers of all packs being made hold ahead of their
/// writers, process-wide (a worker finding it used up waits).
const AHEAD_BYTES: usize = 64 << 20;
static AHEAD_HELD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

fn ahead_held() -> usize {
    AHEAD_HELD.load(std::sync::atomic::Ordering::Acquire)
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // What the writer never took (it failed, or took another path) is given back.
        let held = self.lock().held;
        AHEAD_HELD.fetch_sub(held, std::sync::atomic::Ordering::AcqRel);
    }
}
/// Packs of fewer entries are written without workers.
const AHEAD_MIN_ENTRIES: usize = 256;

impl Ahead {
    fn new() -> Self {
        Ahead {
            state: std::sync::Mutex::new(AheadState::default()),
            changed: std::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, locs: impl IntoIterator<Item = Location>) {
        self.lock().queue.push_back(locs.into_iter().collect());
        self.changed.notify_all();
    }

    fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_all();
    }

    /// A worker: take entries in order; decode and deflate those that `whole` says go out
    /// whole; until closed.
    fn work(&self, odb: &Odb, whole: &(dyn Fn(Location) -> bool + Sync)) {
        loop {
            let loc = {
                let mut st = self.lock();
                loop {
                    if st.closed {
                        return;
                    }
                    if ahead_held() < AHEAD_BYTES
                        && let Some(window) = st.queue.front_mut()
                    {
                        let Some(l) = window.pop() else {
                            st.queue.pop_front();
                            continue;
                        };
                        if st.claimed.remove(&l) {
                            continue;
                        }
                        st.busy.insert(l);
                        break l;
                    }
                    // Room is also made by other packs' writers: look again now and then.
                    st = self
                        .changed
                        .wait_timeout(st, std::time::Duration::from_millis(20))
                        .map(|(g, _)| g)
                        .unwrap_or_else(|e| e.into_inner().0);
                }
            };
            let made = if whole(loc) {
                odb.object_at(loc).ok().map(|obj| {
                    let z = super::deflate_at(&obj.data, odb.io.pack_compression);
                    (obj, z)
                })
            } else {
                None
            };
            let mut st = self.lock();
            st.busy.remove(&loc);
            if let Some((obj, z)) = made {
                let n = obj.data.len() + z.len();
                st.held += n;
                AHEAD_HELD.fetch_add(n, std::sync::atomic::Ordering::AcqRel);
                st.done.insert(loc, (obj, z));
            }
            drop(st);
            self.changed.notify_all();
        }
    }

    /// The object at `loc` and its deflated bytes if a worker made them (waiting for one that
    /// is at it); `None`: the writer makes them (no worker will).
    fn take(&self, loc: Location) -> Option<(Arc<super::Object>, Vec<u8>)> {
        let mut st = self.lock();
        while st.busy.contains(&loc) {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        let got = st.done.remove(&loc);
        match &got {
            Some((obj, z)) => {
                let n = obj.data.len() + z.len();
                st.held -= n;
                AHEAD_HELD.fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
            }
            None => {
                st.claimed.insert(loc);
            }
        }
        drop(st);
        self.changed.notify_all();
        got
    }
}

/// Worker threads for [`Ahead`]: every core but the writer's, at most four.
fn ahead_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .clamp(1, 4)
}

/// Whether the entry at `loc` goes out whole: a delta whose base is neither in the pack nor
/// one the client has (see the decisions in [`PackWriter::reuse_header`]).
fn goes_out_whole(
    odb: &Odb,
    loc: Location,
    in_pack: &HashSet<ObjectId>,
    in_pack_at: &HashMap<Location, ObjectId>,
    opts: &WriteOptions<'_>,
) -> bool {
    let Ok(e) = odb.raw_entry(loc) else {
        return false;
    };
    match e.header {
        Header::OfsDelta { .. } => {
            let Ok(Some(b)) = odb.base_location(loc, &e.header) else {
                return false;
            };
            if in_pack_at.contains_key(&b) {
                return false;
            }
            let id = odb.oid_at(b);
            let thin = id.is_some_and(|i| opts.thin_bases.is_some_and(|t| t.contains(&i)))
                || opts.client_closure.is_some_and(|c| c.contains(odb, b));
            !thin
        }
        Header::RefDelta { base_id } => {
            !in_pack.contains(&base_id)
                && !opts.thin_bases.is_some_and(|t| t.contains(&base_id))
                && !opts
                    .client_closure
                    .is_some_and(|c| c.contains_id(odb, &base_id))
        }
        _ => false,
    }
}

/// Write a complete pack (header, entries, SHA-1 trailer) of `entries` (from [`plan`]).
pub fn write_pack(
    odb: &Odb,
    entries: &[(Location, ObjectId)],
    opts: WriteOptions<'_>,
    out: &mut dyn Write,
) -> Result<PackStats> {
    let ahead = Ahead::new();
    if entries.len() < AHEAD_MIN_ENTRIES {
        ahead.close();
        return write_pack_with(odb, entries, opts, out, &ahead);
    }
    let in_pack: HashSet<ObjectId> = entries.iter().map(|e| e.1).collect();
    let at: HashMap<Location, ObjectId> = entries.iter().map(|&(l, id)| (l, id)).collect();
    let whole = |l: Location| goes_out_whole(odb, l, &in_pack, &at, &opts);
    std::thread::scope(|scope| {
        for _ in 0..ahead_workers() {
            scope.spawn(|| ahead.work(odb, &whole));
        }
        let r = write_pack_with(odb, entries, opts, out, &ahead);
        ahead.close();
        r
    })
}

/// [`write_pack`], with `ahead`'s workers making whole objects in parallel.
fn write_pack_with(
    odb: &Odb,
    entries: &[(Location, ObjectId)],
    opts: WriteOptions<'_>,
    out: &mut dyn Write,
    ahead: &Ahead,
) -> Result<PackStats> {
    let mut w = HashingWriter {
        inner: out,
        hasher: Sha1::new(),
        written: 0,
    };
    write_header(&mut w, entries.len())?;
    let mut pack = PackWriter::new(odb, entries, opts, w);
    let mut read_ahead = ReadAhead::new(odb, entries);
    for (n, &(loc, id)) in entries.iter().enumerate() {
        read_ahead.enter(n, &pack, ahead);
        pack.write_object(loc, id, ahead)?;
    }
    pack.write_trailer()
}

/// The pack header: version 2, `count` entries.
fn write_header(w: &mut HashingWriter<'_>, count: usize) -> Result<()> {
    let mut hdr = Vec::with_capacity(12);
    hdr.extend_from_slice(b"PACK");
    hdr.extend_from_slice(&2u32.to_be_bytes());
    hdr.extend_from_slice(&(count as u32).to_be_bytes());
    w.write_all(&hdr).map_err(io_err)
}

/// Read ahead: while one window of entries is written, the next one's blocks load.
struct ReadAhead {
    /// From [`prefetch_windows`].
    windows: Vec<(usize, Vec<Location>)>,
    /// Loading the blocks of the window after the current one.
    next: Option<tokio::task::JoinHandle<()>>,
    /// The window to be entered next.
    window: usize,
}

impl ReadAhead {
    fn new(odb: &Odb, entries: &[(Location, ObjectId)]) -> Self {
        let windows = prefetch_windows(odb, entries);
        let next = windows.first().and_then(|w| odb.prefetch(&w.1));
        ReadAhead {
            windows,
            next,
            window: 0,
        }
    }

    /// Before the `n`th entry is written.
    #[inline]
    fn enter(&mut self, n: usize, pack: &PackWriter<'_>, ahead: &Ahead) {
        // Entering window `window` (windows are consecutive runs of `entries`).
        if self.windows.get(self.window).is_some_and(|w| w.0 == n) {
            self.enter_window(pack, ahead);
        }
    }

    /// Wait for the window being entered to load, start loading the next one, and hand the
    /// next one to `ahead`'s workers.
    fn enter_window(&mut self, pack: &PackWriter<'_>, ahead: &Ahead) {
        let odb = pack.odb;
        let window = self.window;
        // Blocks of this window were missing: the process is cold for it.
        let cold = self.next.is_some();
        if let Some(h) = self.next.take() {
            let _ = odb.io.rt.block_on(h);
        }
        self.next = self
            .windows
            .get(window + 1)
            .and_then(|w| odb.prefetch(&w.1));
        // The chains of this window's deltas that will be decoded (base neither sent nor
        // the client's), loaded level by level in parallel. Skipped when the window was
        // cached (no second pass over its headers on a warm process).
        if cold && let Some(w) = self.windows.get(window) {
            pack.prefetch_decoded_chains(&w.1);
        }
        // The workers look one window ahead of the writer.
        if window == 0
            && let Some(win) = self.windows.first()
        {
            ahead.push(win.1.iter().copied());
        }
        if let Some(win) = self.windows.get(window + 1) {
            ahead.push(win.1.iter().copied());
        }
        self.window += 1;
    }
}

/// The writing of one pack's entries: where each went, and the delta search.
struct PackWriter<'a> {
    odb: &'a Odb,
    opts: WriteOptions<'a>,
    w: HashingWriter<'a>,
    in_pack: HashSet<ObjectId>,
    id_at: HashMap<Location, ObjectId>,
    written_at: HashMap<Location, u64>,
    /// Delta chain length of written deltas (absent: a whole object, or unknown).
    depth: HashMap<Location, u8>,
    search: DeltaSearch,
    /// The header of the entry being written.
    buf: Vec<u8>,
    stats: PackStats,
}

impl<'a> PackWriter<'a> {
    fn new(
        odb: &'a Odb,
        entries: &[(Location, ObjectId)],
        opts: WriteOptions<'a>,
        w: HashingWriter<'a>,
    ) -> Self {
        PackWriter {
            odb,
            opts,
            w,
            in_pack: entries.iter().map(|e| e.1).collect(),
            id_at: entries.iter().map(|&(l, id)| (l, id)).collect(),
            written_at: HashMap::with_capacity(entries.len()),
            depth: HashMap::new(),
            search: DeltaSearch::default(),
            buf: Vec::with_capacity(32),
            stats: PackStats::default(),
        }
    }

    /// Load the delta chains of the entries at `locs` that will be decoded: those whose base
    /// is neither sent nor the client's.
    fn prefetch_decoded_chains(&self, locs: &[Location]) {
        let (odb, opts) = (self.odb, &self.opts);
        let bases: Vec<Location> = locs
            .iter()
            .filter_map(|&l| {
                let e = odb.raw_entry(l).ok()?;
                let b = odb.base_location(l, &e.header).ok()??;
                let base_id = odb.oid_at(b)?;
                let kept = self.in_pack.contains(&base_id)
                    || opts.thin_bases.is_some_and(|t| t.contains(&base_id))
                    || opts.client_closure.is_some_and(|c| c.contains(odb, b));
                (!kept).then_some(b)
            })
            .collect();
        odb.prefetch_chains(&bases);
    }

    /// Write the entry at `loc` (git's write_object): as it is stored where that can be,
    /// otherwise resolved.
    #[inline]
    fn write_object(&mut self, loc: Location, id: ObjectId, ahead: &Ahead) -> Result<()> {
        let here = self.w.written;
        let e = self.odb.raw_entry(loc)?;
        self.buf.clear();
        if self.reuse_header(loc, &e, here)? {
            self.write_reuse_object(loc, &e)?;
        } else {
            self.write_no_reuse_object(loc, id, here, ahead)?;
        }
        if let Some(&name) = self.opts.names.and_then(|m| m.get(&id)) {
            self.search.remember(name, loc, id);
        }
        self.written_at.insert(loc, here);
        self.stats.objects += 1;
        Ok(())
    }

    /// Whether the stored entry `e` at `loc` (to be written at `here`) can go out with its
    /// data as it is: a whole object, or a delta whose base is in the pack or the client's.
    /// If so, its header (the delta base rewritten for the output) is put in `buf`.
    #[inline]
    fn reuse_header(&mut self, loc: Location, e: &RawEntry, here: u64) -> Result<bool> {
        let odb = self.odb;
        let buf = &mut self.buf;
        match e.header {
            Header::OfsDelta { .. } => {
                let base = odb.base_location(loc, &e.header)?;
                let thin = match base {
                    Some(b) if !self.written_at.contains_key(&b) => {
                        let id = odb.oid_at(b);
                        self.opts.thin_base(id).or_else(|| {
                            id.filter(|_| {
                                self.opts.client_closure.is_some_and(|c| c.contains(odb, b))
                            })
                        })
                    }
                    _ => None,
                };
                if let Some(base_id) = thin {
                    entry_header(EntryKind::RefDelta, e.decompressed_size, buf);
                    buf.extend_from_slice(base_id.as_bytes());
                    self.stats.thin_deltas += 1;
                    self.depth.insert(loc, 1);
                } else {
                    match base.and_then(|b| self.written_at.get(&b).map(|o| (b, *o))) {
                        Some((b, base_out)) if self.opts.ofs_delta => {
                            entry_header(EntryKind::OfsDelta, e.decompressed_size, buf);
                            ofs_distance(here - base_out, buf);
                            self.stats.reused_deltas += 1;
                            self.depth
                                .insert(loc, self.depth.get(&b).copied().unwrap_or(0) + 1);
                        }
                        Some((b, _)) => {
                            self.depth
                                .insert(loc, self.depth.get(&b).copied().unwrap_or(0) + 1);
                            let base_id = self
                                .id_at
                                .get(&b)
                                .ok_or_else(|| OdbError::Corrupt("base id".into()))?;
                            entry_header(EntryKind::RefDelta, e.decompressed_size, buf);
                            buf.extend_from_slice(base_id.as_bytes());
                            self.stats.reused_deltas += 1;
                        }
                        None => return Ok(false),
                    }
                }
            }
            Header::RefDelta { base_id } => {
                if self.in_pack.contains(&base_id) {
                    buf.extend_from_slice(&e.raw[..e.header_len]);
                    self.stats.reused_deltas += 1;
                } else if self.opts.thin_base(Some(base_id)).is_some()
                    || self
                        .opts
                        .client_closure
                        .is_some_and(|c| c.contains_id(odb, &base_id))
                {
                    buf.extend_from_slice(&e.raw[..e.header_len]);
                    self.stats.thin_deltas += 1;
                } else {
                    return Ok(false);
                }
            }
            _ => buf.extend_from_slice(&e.raw[..e.header_len]),
        }
        Ok(true)
    }

    /// Write the header in `buf` and the stored data of `e`, at `loc` (git's
    /// write_reuse_object).
    #[inline]
    fn write_reuse_object(&mut self, loc: Location, e: &RawEntry) -> Result<()> {
        let odb = self.odb;
        // A stored entry goes out as it is only if it is what was indexed: a corrupted
        // object in the bucket fails the request loudly instead of reaching the client.
        if let Some(want) = odb
            .packs
            .get(loc.pack as usize)
            .and_then(|p| p.crc32_at_offset(loc.offset))
            && crc32fast::hash(&e.raw) != want
        {
            return Err(OdbError::Corrupt(format!(
                "CRC mismatch for the entry at {} in {}",
                loc.offset,
                odb.packs
                    .get(loc.pack as usize)
                    .map(|p| &*p.key)
                    .unwrap_or("?")
            )));
        }
        self.w.write_all(&self.buf).map_err(io_err)?;
        self.w.write_all(e.compressed()).map_err(io_err)?;
        self.stats.reused += 1;
        Ok(())
    }

    /// Write the object at `loc` resolved (git's write_no_reuse_object): as a new delta
    /// against an object of the same name if the search finds one, otherwise whole (deflated
    /// by `ahead`'s workers if they got to it).
    fn write_no_reuse_object(
        &mut self,
        loc: Location,
        id: ObjectId,
        here: u64,
        ahead: &Ahead,
    ) -> Result<()> {
        let odb = self.odb;
        let (obj, deflated) = match ahead.take(loc) {
            Some((obj, z)) => (obj, Some(z)),
            None => (odb.object_at(loc)?, None),
        };
        let kind = EntryKind::from(obj.kind);
        let name = self.opts.names.and_then(|m| m.get(&id)).copied();
        let found = name.and_then(|name| {
            let client = self.opts.client_names.and_then(|c| c.get(&name));
            self.search.find(
                odb,
                kind,
                name,
                &obj.data,
                &self.written_at,
                &self.depth,
                client,
            )
        });
        let (w, buf) = (&mut self.w, &mut self.buf);
        match found {
            Some((NewBase::InPack(b, base_out), delta, d)) => {
                if self.opts.ofs_delta {
                    entry_header(EntryKind::OfsDelta, delta.len() as u64, buf);
                    ofs_distance(here - base_out, buf);
                } else {
                    let base_id = self
                        .id_at
                        .get(&b)
                        .ok_or_else(|| OdbError::Corrupt("base id".into()))?;
                    entry_header(EntryKind::RefDelta, delta.len() as u64, buf);
                    buf.extend_from_slice(base_id.as_bytes());
                }
                w.write_all(buf).map_err(io_err)?;
                w.write_all(&super::deflate_at(&delta, odb.io.pack_compression))
                    .map_err(io_err)?;
                self.depth.insert(loc, d + 1);
                self.stats.new_deltas += 1;
            }
            Some((NewBase::Client(base_id), delta, _)) => {
                entry_header(EntryKind::RefDelta, delta.len() as u64, buf);
                buf.extend_from_slice(base_id.as_bytes());
                w.write_all(buf).map_err(io_err)?;
                w.write_all(&super::deflate_at(&delta, odb.io.pack_compression))
                    .map_err(io_err)?;
                self.depth.insert(loc, 1);
                self.stats.new_deltas += 1;
            }
            None => {
                entry_header(kind, obj.data.len() as u64, buf);
                w.write_all(buf).map_err(io_err)?;
                match deflated {
                    Some(z) => w.write_all(&z).map_err(io_err)?,
                    None => w
                        .write_all(&super::deflate_at(&obj.data, odb.io.pack_compression))
                        .map_err(io_err)?,
                }
                self.stats.recompressed += 1;
            }
        }
        Ok(())
    }

    /// The pack's SHA-1 trailer; the pack's counters.
    fn write_trailer(mut self) -> Result<PackStats> {
        let digest = self.w.hasher.clone().finalize();
        self.w.write_all(&digest).map_err(io_err)?;
        self.w.flush().map_err(io_err)?;
        self.stats.bytes = self.w.written;
        Ok(self.stats)
    }
}

/// Bytes per ranged GET when packs are streamed whole.
const WHOLE_CHUNK: u64 = 8 << 20;
/// Ranged GETs of one whole-pack stream in flight at once.
const WHOLE_AHEAD: usize = 4;

/// MiB of whole-pack chunks in memory at once across all requests (read and not yet written):
/// many concurrent full clones share it instead of each holding two chunks.
const WHOLE_BUDGET_MIB: u32 = 192;

fn whole_budget() -> &'static std::sync::Arc<tokio::sync::Semaphore> {
    static B: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> =
        std::sync::OnceLock::new();
    B.get_or_init(|| std::sync::Arc::new(tokio::sync::Semaphore::new(WHOLE_BUDGET_MIB as usize)))
}

/// Stream every entry of `packs` as one pack (a new header and trailer around their entries,
/// copied verbatim in store order): the answer to a clone that wants exactly what the packs
/// hold (see `RefIndex::closed`). The stored packs are self-contained and disjoint, so each
/// `OFS_DELTA`'s distance to its base stays valid. Reads bypass the block cache, in large
/// ranged GETs with the next one in flight while the current one is written, within a
/// process-wide memory budget. Each pack's entries are checked against its index's CRC-32s
/// the first time this process streams it whole (stored packs never change; a byte that
/// changed later still fails the client's check of the pack's own trailer).
pub fn write_whole_packs(odb: &Odb, out: &mut dyn Write) -> Result<PackStats> {
    struct Blocking<'w>(&'w mut dyn Write);
    impl WholeSink for Blocking<'_> {
        async fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
            self.0.write_all(data)
        }
    }
    odb.io
        .rt
        .block_on(stream_whole_packs(odb, &mut Blocking(out)))
}

/// Where [`stream_whole_packs`] writes, in order.
pub trait WholeSink {
    /// Write all of `data` (the next bytes of the pack).
    fn write(&mut self, data: &[u8]) -> impl std::future::Future<Output = std::io::Result<()>>;
}

/// The header of a pack of `count` entries (version 2).
fn whole_header(count: u32) -> Vec<u8> {
    let mut hdr = Vec::with_capacity(12);
    hdr.extend_from_slice(b"PACK");
    hdr.extend_from_slice(&2u32.to_be_bytes());
    hdr.extend_from_slice(&count.to_be_bytes());
    hdr
}

/// Every (pack, start, end) range of at most `WHOLE_CHUNK` bytes to copy, in order: whole
/// packs when `verbatim`, otherwise their entries only (no header, no trailer).
fn whole_ranges(odb: &Odb, verbatim: bool) -> Result<Vec<(Arc<super::pack::Pack>, u64, u64)>> {
    let mut ranges = Vec::new();
    for p in &odb.packs {
        if p.size < 32 {
            return Err(OdbError::Corrupt(format!("pack {} is too small", p.key)));
        }
        let (mut at, end) = if verbatim {
            (0, p.size)
        } else {
            (12, p.size - 20)
        };
        while at < end {
            let to = (at + WHOLE_CHUNK).min(end);
            ranges.push((p.clone(), at, to));
            at = to;
        }
    }
    Ok(ranges)
}

/// [`write_whole_packs`] from async code: waiting for the reads and for the client holds no
/// thread; the CPU work (each entry's CRC-32 on a pack's first stream, the trailer's SHA-1 of
/// several packs) runs on blocking threads a chunk at a time.
///
/// Long because its loop is one pipeline whose state (reads in flight with their budget
/// permits, the running CRC and SHA-1 moved to and from blocking threads) would otherwise be
/// threaded through every step; the set-up is in [`whole_header`] and [`whole_ranges`].
pub async fn stream_whole_packs<S: WholeSink>(odb: &Odb, out: &mut S) -> Result<PackStats> {
    let objects: u64 = odb.packs.iter().map(|p| u64::from(p.num_objects())).sum();
    let count = u32::try_from(objects).map_err(|_| OdbError::Corrupt("too many objects".into()))?;
    // One pack goes out byte for byte, its own header and trailer included (nothing to hash);
    // several get a new header and trailer around their entries.
    let verbatim = odb.packs.len() == 1;
    let mut hasher = Sha1::new();
    let mut written = 0u64;
    if !verbatim {
        let hdr = whole_header(count);
        hasher.update(&hdr);
        out.write(&hdr).await.map_err(io_err)?;
        written += 12;
    }
    let ranges = whole_ranges(odb, verbatim)?;
    let io = &odb.io;
    let mut crc = EntryCrc::default();
    let budget = whole_budget();
    // Up to WHOLE_AHEAD reads in flight (a store's latency hides behind the transfer), in
    // order. Each holds its share of the process-wide budget until its chunk is written. Only
    // a stream with nothing in flight waits for budget; one with reads in flight reads ahead
    // only with budget to spare, so streams never wait on each other in a circle.
    let mut ranges = ranges.into_iter().peekable();
    let mut inflight = std::collections::VecDeque::new();
    loop {
        while inflight.len() < WHOLE_AHEAD {
            let Some((_, from, to)) = ranges.peek() else {
                break;
            };
            let mib = u32::try_from((to - from).div_ceil(1 << 20))
                .unwrap_or(WHOLE_BUDGET_MIB)
                .min(WHOLE_BUDGET_MIB);
            let permit = if inflight.is_empty() {
                budget
                    .clone()
                    .acquire_many_owned(mib)
                    .await
                    .map_err(|e| OdbError::Corrupt(e.to_string()))?
            } else {
                match budget.clone().try_acquire_many_owned(mib) {
                    Ok(p) => p,
                    Err(_) => break,
                }
            };
            let Some((pack, from, to)) = ranges.next() else {
                break;
            };
            let (key, store) = (pack.key.clone(), io.store.clone());
            inflight.push_back(io.rt.spawn(async move {
                let data = store.get_range_pieces(&key, from, to - from).await?;
                Ok::<_, OdbError>((pack, from, data, to - from, permit))
            }));
        }
        let Some(pending) = inflight.pop_front() else {
            break;
        };
        let (pack, from, data, want, _permit) = pending
            .await
            .map_err(|e| OdbError::Task("read", e.to_string()))??;
        let got: u64 = data.iter().map(|p| p.len() as u64).sum();
        crate::metrics::STORE_RANGE_GETS.inc();
        crate::metrics::STORE_RANGE_BYTES.add(got);
        if got != want {
            return Err(OdbError::Corrupt(
                "short read while streaming a pack".into(),
            ));
        }
        // The entries are checked against the index, once per pack and process.
        let check = !pack
            .checked_whole
            .load(std::sync::atomic::Ordering::Acquire);
        let data = if check || !verbatim {
            let (c, h, data, checked) = tokio::task::spawn_blocking(move || {
                let (mut crc, mut hasher) = (crc, hasher);
                let hash = (!verbatim).then_some(&mut hasher);
                let checked = check_chunk(&mut crc, &pack, from, &data, check, hash);
                (crc, hasher, data, checked)
            })
            .await
            .map_err(|e| OdbError::Task("check", e.to_string()))?;
            (crc, hasher) = (c, h);
            checked?;
            data
        } else {
            data
        };
        for piece in &data {
            out.write(piece).await.map_err(io_err)?;
            written += piece.len() as u64;
        }
    }
    if !verbatim {
        let digest = hasher.finalize();
        out.write(&digest).await.map_err(io_err)?;
        written += 20;
    }
    for p in &odb.packs {
        p.checked_whole
            .store(true, std::sync::atomic::Ordering::Release);
    }
    Ok(PackStats {
        objects,
        reused: objects,
        bytes: written,
        ..PackStats::default()
    })
}

/// Check one chunk of a whole-pack stream read at `from` (its entries against the index when
/// `check`) and add it to `hasher`, if any.
fn check_chunk(
    crc: &mut EntryCrc,
    pack: &std::sync::Arc<super::pack::Pack>,
    from: u64,
    data: &[bytes::Bytes],
    check: bool,
    mut hasher: Option<&mut Sha1>,
) -> Result<()> {
    let mut at = from;
    for piece in data {
        let end = at + piece.len() as u64;
        let (body_from, body_to) = (at.max(12), end.min(pack.size - 20));
        if check && body_from < body_to {
            let slice = &piece[(body_from - at) as usize..(body_to - at) as usize];
            crc.check(pack, body_from, slice)?;
        }
        if let Some(h) = hasher.as_deref_mut() {
            h.update(piece);
        }
        at = end;
    }
    Ok(())
}

/// CRC-32 of each entry of a pack streamed in consecutive chunks, checked against its index.
#[derive(Default)]
struct EntryCrc {
    pack: Option<std::sync::Arc<super::pack::Pack>>,
    /// Position in the pack's entry offsets of the entry being hashed.
    entry: usize,
    hasher: crc32fast::Hasher,
}

impl EntryCrc {
    /// Feed `data`, read at `from` in `pack` (right after the previous chunk of that pack, or
    /// at its first entry); fail on the first entry whose CRC is not the index's.
    fn check(
        &mut self,
        pack: &std::sync::Arc<super::pack::Pack>,
        from: u64,
        data: &[u8],
    ) -> Result<()> {
        if !self
            .pack
            .as_ref()
            .is_some_and(|p| std::sync::Arc::ptr_eq(p, pack))
        {
            self.pack = Some(pack.clone());
            self.entry = 0;
            self.hasher = crc32fast::Hasher::new();
        }
        let offsets = pack.entry_offsets();
        let body_end = pack.size - 20;
        let (mut pos, to) = (from, from + data.len() as u64);
        while pos < to {
            let Some(&start) = offsets.get(self.entry) else {
                return Err(OdbError::Corrupt(format!(
                    "bytes after the last entry of {}",
                    pack.key
                )));
            };
            let end = offsets.get(self.entry + 1).copied().unwrap_or(body_end);
            if pos < start || end <= pos {
                return Err(OdbError::Corrupt(format!(
                    "entry offsets of {} out of order",
                    pack.key
                )));
            }
            let upto = end.min(to);
            self.hasher
                .update(&data[(pos - from) as usize..(upto - from) as usize]);
            pos = upto;
            if pos == end {
                let got = std::mem::take(&mut self.hasher).finalize();
                if pack
                    .crc32_at_position(self.entry)
                    .is_some_and(|want| want != got)
                {
                    return Err(OdbError::Corrupt(format!(
                        "CRC mismatch for the entry at {start} in {}",
                        pack.key
                    )));
                }
                self.entry += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encoding() {
        let mut v = Vec::new();
        entry_header(EntryKind::Blob, 10, &mut v);
        assert_eq!(v, [0x3a]);
        v.clear();
        entry_header(EntryKind::Commit, 300, &mut v);
        // 300 = 0b1_0010_1100: low nibble 0xc, rest 18
        assert_eq!(v, [0x80 | 0x10 | 0x0c, 18]);
        v.clear();
        ofs_distance(127, &mut v);
        assert_eq!(v, [127]);
        v.clear();
        ofs_distance(128, &mut v);
        assert_eq!(v, [0x80, 0x00]);
    }
}
