//! Reachability bitmaps of one pack (`pack-<name>.bitmap`, beside the pack and its index).
//!
//! For selected commits (the ref tips when the pack was filled), the set of the pack's objects
//! reachable from each: commits, trees and blobs, as positions in pack order (neighbours in
//! history are neighbours in the pack, so the sets compress well). Each set is stored as the
//! objects it adds to an older selected commit's set (a chain at most [`MAX_CHAIN`] long), so a
//! repository with a thousand tags costs a few MB, not a thousand full sets.
//!
//! A pack only gets bitmaps when it holds the whole closure of its tips (a repository's first
//! fill). They answer "does the client have this object?" without walking the client's
//! history: a stored delta whose base is in the client's closure goes out as a thin delta
//! instead of being searched for a new base.
//!
//! The format is goprox's own (not git's `.bitmap`): magic `GPBM`, version, the pack's
//! checksum, then per entry the commit id, its base entry (or none) and a portable roaring
//! bitmap.

use super::{Location, Odb, OdbError, Result};
use gix_hash::{ObjectId, oid};
use gix_object::Kind;
use roaring::RoaringBitmap;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"GPBM";
const VERSION: u32 = 1;
const NO_BASE: u32 = u32::MAX;
/// Longest chain of stored differences: an entry deeper than this is stored whole.
pub const MAX_CHAIN: u32 = 16;
/// Commits walked from a have with no bitmap before giving up on finding bitmapped ancestors.
pub const HAVE_WALK_BUDGET: usize = 2_000;

struct Entry {
    commit: ObjectId,
    base: Option<u32>,
    /// Depth of the chain of bases under this entry (0: stored whole).
    depth: u32,
    /// Positions this entry adds to its base's set.
    bits: RoaringBitmap,
}

/// The bitmaps of one pack.
pub struct Bitmaps {
    by_commit: HashMap<ObjectId, u32>,
    entries: Vec<Entry>,
}

impl std::fmt::Debug for Bitmaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitmaps")
            .field("commits", &self.entries.len())
            .finish()
    }
}

impl Bitmaps {
    /// Bytes of memory these bitmaps hold (approximately; for the pack index budget).
    pub fn memory_bytes(&self) -> u64 {
        let entries: usize = self
            .entries
            .iter()
            .map(|e| std::mem::size_of::<Entry>() + e.bits.serialized_size())
            .sum();
        (entries + self.by_commit.len() * 32) as u64
    }

    /// Number of commits with a bitmap.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No commit has a bitmap.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The closure of `commit` (positions in pack order), if it has a bitmap.
    pub fn closure(&self, commit: &oid) -> Option<RoaringBitmap> {
        self.by_commit.get(commit).map(|&i| self.materialize(i))
    }

    fn materialize(&self, mut i: u32) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        // Chains are at most MAX_CHAIN long and bases always come first (checked on parse).
        loop {
            let e = &self.entries[i as usize];
            out |= &e.bits;
            match e.base {
                Some(b) => i = b,
                None => return out,
            }
        }
    }

    /// Serialize, bound to the pack with `checksum` (its trailer).
    pub fn to_bytes(&self, checksum: &[u8; 20]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(checksum);
        out.extend_from_slice(&(self.entries.len() as u32).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(e.commit.as_bytes());
            out.extend_from_slice(&e.base.unwrap_or(NO_BASE).to_be_bytes());
            out.extend_from_slice(&(e.bits.serialized_size() as u32).to_be_bytes());
            // Writing to a Vec cannot fail.
            let _ = e.bits.serialize_into(&mut out);
        }
        out
    }

    /// Parse what [`Bitmaps::to_bytes`] wrote for the pack with `checksum` holding `objects`
    /// objects; anything else is an error (never a wrong answer).
    pub fn parse(
        data: &[u8],
        checksum: &[u8; 20],
        objects: u32,
    ) -> std::result::Result<Self, String> {
        let mut r = data;
        let mut take = |n: usize| -> std::result::Result<&[u8], String> {
            if r.len() < n {
                return Err("truncated".into());
            }
            let (a, b) = r.split_at(n);
            r = b;
            Ok(a)
        };
        let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        if take(4)? != MAGIC {
            return Err("not a goprox bitmap".into());
        }
        let version = u32_at(take(4)?);
        if version != VERSION {
            return Err(format!("unsupported bitmap version {version}"));
        }
        if take(20)? != checksum {
            return Err("bitmap belongs to another pack".into());
        }
        let n = u32_at(take(4)?);
        let mut entries: Vec<Entry> = Vec::with_capacity(n.min(1 << 16) as usize);
        let mut by_commit = HashMap::with_capacity(n.min(1 << 16) as usize);
        for i in 0..n {
            let commit =
                ObjectId::try_from(take(20)?).map_err(|e| format!("entry {i}: commit: {e}"))?;
            let base = match u32_at(take(4)?) {
                NO_BASE => None,
                b if b < i => Some(b),
                b => return Err(format!("entry {i}: base {b} is not an earlier entry")),
            };
            let len = u32_at(take(4)?) as usize;
            let bits = RoaringBitmap::deserialize_from(take(len)?)
                .map_err(|e| format!("entry {i}: {e}"))?;
            if bits.max().is_some_and(|m| m >= objects) {
                return Err(format!("entry {i}: position past the pack's objects"));
            }
            let depth = match base {
                Some(b) => entries[b as usize].depth + 1,
                None => 0,
            };
            if depth > MAX_CHAIN {
                return Err(format!("entry {i}: chain longer than {MAX_CHAIN}"));
            }
            by_commit.insert(commit, i);
            entries.push(Entry {
                commit,
                base,
                depth,
                bits,
            });
        }
        if !r.is_empty() {
            return Err("trailing bytes".into());
        }
        Ok(Bitmaps { by_commit, entries })
    }
}

/// Positions of a pack's objects, for a bitmap over that pack.
struct Positions<'a> {
    odb: &'a Odb,
    pack: u32,
    /// Every object's position, for a build (which looks up every entry of every tree it
    /// walks); without it, the index is searched.
    all: Option<gix_hashtable::HashMap<ObjectId, u32>>,
}

impl<'a> Positions<'a> {
    fn new(odb: &'a Odb, pack: u32) -> Self {
        Positions {
            odb,
            pack,
            all: None,
        }
    }

    /// With every position in a hash table (about 40 bytes per object).
    fn with_table(odb: &'a Odb, pack: u32) -> Self {
        let all = odb.packs.get(pack as usize).map(|p| {
            let n = p.num_objects();
            let mut m =
                gix_hashtable::HashMap::with_capacity_and_hasher(n as usize, Default::default());
            for i in 0..n {
                if let Some((_, id)) = p.entry_at_position(i) {
                    m.insert(id, i);
                }
            }
            m
        });
        Positions { odb, pack, all }
    }

    /// `None`: the object is not in the pack.
    fn of(&self, id: &oid) -> Option<u32> {
        if let Some(m) = &self.all {
            return m.get(id).copied();
        }
        let p = self.odb.packs.get(self.pack as usize)?;
        p.position_of_offset(p.offset_of(id)?)
    }
}

/// A set of pack positions being filled by a walk.
trait Bits: Sized {
    fn contains(&self, i: u32) -> bool;
    /// Whether `i` was not in the set yet.
    fn insert(&mut self, i: u32) -> bool;
    fn union_with(&mut self, other: &Self);
    fn count(&self) -> u64;
    /// The whole set of entry `e`.
    fn of_entry(bitmaps: &Bitmaps, e: u32, objects: u32) -> Self;
}

impl Bits for RoaringBitmap {
    fn contains(&self, i: u32) -> bool {
        RoaringBitmap::contains(self, i)
    }
    fn insert(&mut self, i: u32) -> bool {
        RoaringBitmap::insert(self, i)
    }
    fn union_with(&mut self, other: &Self) {
        *self |= other;
    }
    fn count(&self) -> u64 {
        self.len()
    }
    fn of_entry(bitmaps: &Bitmaps, e: u32, _objects: u32) -> Self {
        bitmaps.materialize(e)
    }
}

/// One bit per object of the pack: what a build fills (an insert is a bit operation, where a
/// roaring insert into a sorted array moves memory).
#[derive(Clone)]
struct Dense(Vec<u64>);

impl Dense {
    fn new(objects: u32) -> Self {
        Dense(vec![0; (objects as usize).div_ceil(64)])
    }

    /// The positions in `self` and not in `base`, compressed.
    fn minus(&self, base: Option<&Dense>) -> RoaringBitmap {
        let words = self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let bits = bits & !base.and_then(|b| b.0.get(w)).copied().unwrap_or(0);
            (0..64)
                .filter(move |b| bits & (1u64 << b) != 0)
                .map(move |b| (w * 64 + b) as u32)
        });
        RoaringBitmap::from_sorted_iter(words).unwrap_or_default()
    }
}

impl Bits for Dense {
    fn contains(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
    fn insert(&mut self, i: u32) -> bool {
        match self.0.get_mut(i as usize / 64) {
            Some(w) => {
                let bit = 1u64 << (i % 64);
                let new = *w & bit == 0;
                *w |= bit;
                new
            }
            None => false,
        }
    }
    fn union_with(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }
    fn count(&self) -> u64 {
        self.0.iter().map(|w| u64::from(w.count_ones())).sum()
    }
    fn of_entry(bitmaps: &Bitmaps, e: u32, objects: u32) -> Self {
        let mut d = Dense::new(objects);
        for i in &bitmaps.materialize(e) {
            d.insert(i);
        }
        d
    }
}

/// Closures over one pack, made from stored bitmaps plus a walk of what they do not cover
/// (git's `fill_bitmap_commit`).
struct Closer<'a, S: Bits> {
    odb: &'a Odb,
    pos: Positions<'a>,
    walker: super::walk::Walker<'a>,
    objects: u32,
    /// Whole sets of recently used entries: the next tip usually builds on the one just made.
    recent: lru::LruCache<u32, Arc<S>>,
}

/// How [`Closer::extend`] ended.
enum Extended {
    /// Done; the largest stored set used whose chain may grow, with its size.
    Done(Option<(u32, u64)>),
    /// An object outside the pack, or the walk budget ran out.
    Incomplete,
}

impl<'a, S: Bits> Closer<'a, S> {
    fn new(odb: &'a Odb, pos: Positions<'a>) -> Self {
        let objects = odb
            .packs
            .get(pos.pack as usize)
            .map(|p| p.num_objects())
            .unwrap_or(0);
        Closer {
            odb,
            pos,
            walker: super::walk::Walker::new(odb),
            objects,
            recent: lru::LruCache::new(
                std::num::NonZeroUsize::new(32).unwrap_or(std::num::NonZeroUsize::MIN),
            ),
        }
    }

    fn whole(&mut self, bitmaps: &Bitmaps, e: u32) -> Arc<S> {
        if let Some(s) = self.recent.get(&e) {
            return s.clone();
        }
        let s = Arc::new(S::of_entry(bitmaps, e, self.objects));
        self.recent.put(e, s.clone());
        s
    }

    /// Add the closure of the commits `starts` to `set`: stored sets where `bitmaps` has
    /// them, a walk of commits (newest first) and their trees where not, stopping at anything
    /// already in `set`. At most `budget` commits are walked.
    fn extend(
        &mut self,
        bitmaps: &Bitmaps,
        starts: &[ObjectId],
        set: &mut S,
        mut budget: usize,
    ) -> Result<Extended> {
        let mut base: Option<(u32, u64)> = None;
        let mut heap: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
        for s in starts {
            heap.push((self.walker.commit(s)?.time, *s));
        }
        while let Some((_, c)) = heap.pop() {
            let Some(p) = self.pos.of(&c) else {
                return Ok(Extended::Incomplete);
            };
            if set.contains(p) {
                continue;
            }
            if let Some(&e) = bitmaps.by_commit.get(&c) {
                let whole = self.whole(bitmaps, e);
                set.union_with(&whole);
                let len = whole.count();
                if bitmaps.entries[e as usize].depth < MAX_CHAIN && base.is_none_or(|b| len > b.1) {
                    base = Some((e, len));
                }
                continue;
            }
            if budget == 0 {
                return Ok(Extended::Incomplete);
            }
            budget -= 1;
            set.insert(p);
            let info = self.walker.commit(&c)?;
            if !add_tree(self.odb, &self.pos, info.tree, set)? {
                return Ok(Extended::Incomplete);
            }
            for parent in info.parents.iter() {
                let t = self.walker.commit(parent)?.time;
                heap.push((t, *parent));
            }
        }
        Ok(Extended::Done(base))
    }
}

/// Build bitmaps over pack `pack` of `odb` for the commits `tips` point at (tags peeled;
/// tips that are not commits are skipped). `Ok(None)` when the pack does not hold the whole
/// closure of every tip (bitmaps of a pack must not depend on other packs).
pub fn build(odb: &Odb, pack: u32, tips: &[ObjectId]) -> Result<Option<Bitmaps>> {
    let mut closer: Closer<'_, Dense> = Closer::new(odb, Positions::with_table(odb, pack));
    let mut commits: Vec<(i64, ObjectId)> = Vec::new();
    for t in tips {
        if let Some(c) = closer.walker.peel_commit(t)? {
            commits.push((closer.walker.commit(&c)?.time, c));
        }
    }
    commits.sort();
    commits.dedup_by_key(|c| c.1);

    let mut out = Bitmaps {
        by_commit: HashMap::new(),
        entries: Vec::new(),
    };
    for &(_, tip) in &commits {
        let mut set = Dense::new(closer.objects);
        let base = match closer.extend(&out, &[tip], &mut set, usize::MAX)? {
            Extended::Done(base) => base,
            Extended::Incomplete => return Ok(None),
        };
        let i = out.entries.len() as u32;
        let (base, depth, mut bits) = match base {
            Some((b, _)) => {
                let whole = closer.whole(&out, b);
                (
                    Some(b),
                    out.entries[b as usize].depth + 1,
                    set.minus(Some(&whole)),
                )
            }
            None => (None, 0, set.minus(None)),
        };
        bits.optimize();
        closer.recent.put(i, Arc::new(set));
        out.by_commit.insert(tip, i);
        out.entries.push(Entry {
            commit: tip,
            base,
            depth,
            bits,
        });
    }
    Ok(Some(out))
}

/// Commits walked to complete a closure at request time before giving up (the request is then
/// answered by walking, as without bitmaps).
pub const REQUEST_WALK_BUDGET: usize = 10_000;

/// The exact closure of `commits` over pack `pack`, from its bitmaps plus a walk of what they
/// do not cover; `None` when part of it is outside the pack or the walk is too long.
pub fn closure_of(
    odb: &Odb,
    pack: u32,
    bitmaps: &Bitmaps,
    commits: &[ObjectId],
) -> Result<Option<RoaringBitmap>> {
    let mut closer: Closer<'_, RoaringBitmap> = Closer::new(odb, Positions::new(odb, pack));
    let mut set = RoaringBitmap::new();
    match closer.extend(bitmaps, commits, &mut set, REQUEST_WALK_BUDGET)? {
        Extended::Done(_) => Ok(Some(set)),
        Extended::Incomplete => Ok(None),
    }
}

/// Add `tree` and everything under it to `set`, skipping subtrees already in it. `Ok(false)`:
/// an object is not in the pack.
fn add_tree<S: Bits>(odb: &Odb, pos: &Positions<'_>, tree: ObjectId, set: &mut S) -> Result<bool> {
    let mut stack = vec![tree];
    while let Some(t) = stack.pop() {
        let Some(p) = pos.of(&t) else {
            return Ok(false);
        };
        if !set.insert(p) {
            continue;
        }
        let obj = odb.object(&t)?;
        if obj.kind != Kind::Tree {
            return Err(OdbError::Corrupt(format!("{t} is not a tree")));
        }
        for e in gix_object::TreeRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1) {
            let e = e.map_err(|e| OdbError::Corrupt(format!("tree {t}: {e}")))?;
            if e.mode.is_commit() {
                continue; // a submodule: not in this repository
            }
            if e.mode.is_tree() {
                stack.push(e.oid.to_owned());
            } else {
                let Some(p) = pos.of(e.oid) else {
                    return Ok(false);
                };
                set.insert(p);
            }
        }
    }
    Ok(true)
}

/// What the client is known to have of one bitmapped pack: a subset of its closure.
#[derive(Debug)]
pub struct ClientClosure {
    /// The pack, as an index into [`Odb::packs`].
    pub pack: u32,
    /// The objects, as positions in pack order.
    pub set: RoaringBitmap,
    /// The whole closure of the client's haves (not only part of it): a fetch can then be
    /// answered from it ([`select`]).
    pub exact: bool,
}

impl ClientClosure {
    /// What the client has, given its `haves` (it has their whole history: not shallow):
    /// their exact closure when it can be made from the bitmaps and a short walk; otherwise
    /// the union of the closures of their nearest bitmapped ancestors (found within
    /// [`HAVE_WALK_BUDGET`] commits), which never claims more than the client has. `None`
    /// when nothing was found.
    pub fn of(odb: &Odb, pack: u32, bitmaps: &Bitmaps, haves: &[ObjectId]) -> Option<Self> {
        let mut walker = super::walk::Walker::new(odb);
        let commits: Vec<ObjectId> = haves
            .iter()
            .filter_map(|h| walker.peel_commit(h).ok().flatten())
            .collect();
        if commits.is_empty() {
            return None;
        }
        if let Ok(Some(set)) = closure_of(odb, pack, bitmaps, &commits) {
            return Some(ClientClosure {
                pack,
                set,
                exact: true,
            });
        }
        let mut set = RoaringBitmap::new();
        let mut seen: std::collections::HashSet<ObjectId> = std::collections::HashSet::new();
        let mut heap: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
        for c in commits {
            if seen.insert(c)
                && let Ok(info) = walker.commit(&c)
            {
                heap.push((info.time, c));
            }
        }
        let mut budget = HAVE_WALK_BUDGET;
        while let Some((_, c)) = heap.pop() {
            if budget == 0 {
                break;
            }
            budget -= 1;
            if let Some(s) = bitmaps.closure(&c) {
                set |= s;
                continue;
            }
            let Ok(info) = walker.commit(&c) else {
                continue;
            };
            for p in info.parents.iter() {
                if seen.insert(*p)
                    && let Ok(pi) = walker.commit(p)
                {
                    heap.push((pi.time, *p));
                }
            }
        }
        (!set.is_empty()).then_some(ClientClosure {
            pack,
            set,
            exact: false,
        })
    }

    /// Whether the object at `loc` is in the client's closure.
    pub fn contains(&self, odb: &Odb, loc: Location) -> bool {
        loc.pack == self.pack
            && odb
                .packs
                .get(loc.pack as usize)
                .and_then(|p| p.position_of_offset(loc.offset))
                .is_some_and(|i| self.set.contains(i))
    }

    /// Whether object `id` is in the client's closure.
    pub fn contains_id(&self, odb: &Odb, id: &oid) -> bool {
        odb.packs
            .get(self.pack as usize)
            .and_then(|p| p.offset_of(id))
            .is_some_and(|offset| {
                self.contains(
                    odb,
                    Location {
                        pack: self.pack,
                        offset,
                    },
                )
            })
    }
}

/// The objects a client lacks for `wants` (commits, trees or blobs, or annotated tags of
/// them), in pack order, from the bitmaps of its pack: closure(wants) minus what the client
/// has (`client`, which must be exact), plus the tags passed through and those of
/// `include_tags` whose object is sent. `None` when the bitmaps cannot answer exactly (an
/// object outside the pack, a long walk): the caller walks instead.
pub fn select(
    odb: &Odb,
    bitmaps: &Bitmaps,
    wants: &[ObjectId],
    client: &ClientClosure,
    include_tags: &[(ObjectId, ObjectId)],
) -> Result<Option<Vec<(Location, ObjectId)>>> {
    if !client.exact {
        return Ok(None);
    }
    let pack = client.pack;
    let pos = Positions::new(odb, pack);
    let mut walker = super::walk::Walker::new(odb);
    let mut want_commits = Vec::new();
    let mut want_trees = Vec::new();
    let mut tags = RoaringBitmap::new();
    for w in wants {
        let p = walker.peel(w)?;
        match p.kind {
            Kind::Commit => want_commits.push(p.id),
            // A tag of a tree or a blob: that object, and everything under a tree.
            Kind::Tree | Kind::Blob => want_trees.push((p.kind, p.id)),
            Kind::Tag => return Ok(None),
        }
        for t in &p.tags {
            let Some(i) = pos.of(t) else {
                return Ok(None);
            };
            tags.insert(i);
        }
    }
    let Some(mut send) = closure_of(odb, pack, bitmaps, &want_commits)? else {
        return Ok(None);
    };
    for (kind, id) in want_trees {
        let complete = match kind {
            Kind::Tree => add_tree(odb, &pos, id, &mut send)?,
            _ => pos.of(&id).map(|i| send.insert(i)).is_some(),
        };
        if !complete {
            return Ok(None);
        }
    }
    send -= &client.set;
    send |= &tags;
    for (tag, peeled) in include_tags {
        let (Some(t), Some(p)) = (pos.of(tag), pos.of(peeled)) else {
            continue;
        };
        if send.contains(p) && !send.contains(t) {
            for chain in walker.peel(tag)?.tags {
                let Some(i) = pos.of(&chain) else {
                    return Ok(None);
                };
                send.insert(i);
            }
        }
    }
    let Some(p) = odb.packs.get(pack as usize) else {
        return Ok(None);
    };
    let mut entries = Vec::with_capacity(send.len() as usize);
    for i in &send {
        let Some((offset, id)) = p.entry_at_position(i) else {
            return Ok(None);
        };
        entries.push((Location { pack, offset }, id));
    }
    Ok(Some(entries))
}
