//! Commit-graph walks over an [`Odb`]: peeling, the shallow boundary for `deepen*` requests,
//! the "can we stop negotiating" test, and the list of objects a client lacks.

use super::{Odb, OdbError, Result};
use gix_hash::{ObjectId, oid};
use gix_object::Kind;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The parts of a commit the walks need.
#[derive(Debug, Clone)]
pub(crate) struct CommitInfo {
    /// The root tree.
    pub tree: ObjectId,
    /// Parent commits, in order.
    pub parents: Vec<ObjectId>,
    /// Committer time, seconds since the epoch.
    pub time: i64,
}

impl super::cache::Weigh for Arc<CommitInfo> {
    fn weight(&self) -> usize {
        48 + 20 * self.parents.len()
    }
}

/// An object with its chain of annotated tags peeled off.
#[derive(Debug, Clone)]
pub struct Peeled {
    /// The tag objects passed through, outermost first.
    pub tags: Vec<ObjectId>,
    /// The first object that is not a tag.
    pub id: ObjectId,
    /// Its kind.
    pub kind: Kind,
}

/// What deepening produced: lines for the client and grafts for the walk.
#[derive(Debug, Clone, Default)]
pub struct ShallowOutcome {
    /// New shallow boundary commits to announce (`shallow <oid>`).
    pub shallow: Vec<ObjectId>,
    /// Client shallow commits that are no longer shallow (`unshallow <oid>`).
    pub unshallow: Vec<ObjectId>,
    /// Commits whose parents the walk must not follow (the client's view).
    pub grafts: HashSet<ObjectId>,
    /// Parents of unshallowed commits: the client now wants them.
    pub extra_wants: Vec<ObjectId>,
    /// Unshallowed commits: the client has them, their trees bound the pack.
    pub extra_edges: Vec<ObjectId>,
}

/// Parameters of a deepening request.
#[derive(Debug, Clone, Default)]
pub struct Deepen {
    /// `deepen <n>`: history depth in commits.
    pub depth: Option<u32>,
    /// `deepen-relative`: count the depth from the client's shallow boundary, not the wants.
    pub relative: bool,
    /// `deepen-since`: only commits whose committer time (Unix seconds) is at least this.
    pub since: Option<i64>,
    /// Already resolved to commit ids.
    pub not: Vec<ObjectId>,
}

/// Blob filter for partial clones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `blob:none`: no blobs.
    BlobNone,
    /// `blob:limit=<n>`: no blobs of `n` bytes or more.
    BlobLimit(u64),
    /// `tree:0`: commits and tags only.
    TreeZero,
}

impl Filter {
    /// A `filter` argument (`blob:none`, `blob:limit=<n>[kmg]`, `tree:0`); `None` for any
    /// other filter.
    pub fn parse(spec: &str) -> Option<Filter> {
        if spec == "blob:none" {
            return Some(Filter::BlobNone);
        }
        if spec == "tree:0" {
            return Some(Filter::TreeZero);
        }
        let n = spec.strip_prefix("blob:limit=")?;
        let (num, mul) = match n.as_bytes().last()? {
            b'k' | b'K' => (&n[..n.len() - 1], 1024),
            b'm' | b'M' => (&n[..n.len() - 1], 1024 * 1024),
            b'g' | b'G' => (&n[..n.len() - 1], 1024 * 1024 * 1024),
            _ => (n, 1),
        };
        num.parse::<u64>()
            .ok()
            .map(|v| Filter::BlobLimit(v.saturating_mul(mul)))
    }
}

/// What to put in a pack.
#[derive(Debug, Clone, Default)]
pub struct PackPlan<'a> {
    /// Objects the client asked for.
    pub wants: &'a [ObjectId],
    /// Objects the client has (common haves, unshallowed commits).
    pub haves: &'a [ObjectId],
    /// Commits whose parents are not followed (the client's shallow view).
    pub grafts: Option<&'a HashSet<ObjectId>>,
    /// Annotated tags as (tag object, peeled object) for `include-tag`.
    pub include_tags: &'a [(ObjectId, ObjectId)],
    /// Partial-clone filter.
    pub filter: Option<Filter>,
}

/// Walks over one [`Odb`], remembering the commits it has parsed.
pub struct Walker<'a> {
    odb: &'a Odb,
    commits: HashMap<ObjectId, Arc<CommitInfo>>,
}

/// What [`Walker::objects_to_send`] found: the objects, and what the pack writer's delta
/// search uses.
#[derive(Debug, Default)]
pub struct ToSend {
    /// The objects the client lacks, in no particular order.
    pub ids: Vec<ObjectId>,
    /// Trees and blobs the client has (those of the edge commits), usable as thin-pack delta
    /// bases.
    pub client_has: HashSet<ObjectId>,
    /// The name hash ([`name_hash`] of the tree entry name) of every tree and blob to send.
    pub names: HashMap<ObjectId, u32>,
    /// Some trees and blobs of the client's edge commits by name hash (at most
    /// [`CLIENT_NAMES_PER_HASH`] each, newest edge first): thin-pack delta base candidates.
    pub client_names: HashMap<u32, Vec<ObjectId>>,
}

/// Client-side delta base candidates kept per name hash.
pub const CLIENT_NAMES_PER_HASH: usize = 4;

/// git's pack name hash: the last (about 16) non-whitespace characters of a name, weighted
/// towards its end, so files with the same name (and suffix) sort and pair together.
pub fn name_hash(name: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &c in name {
        if c.is_ascii_whitespace() {
            continue;
        }
        h = (h >> 2).wrapping_add(u32::from(c) << 24);
    }
    h
}

/// Whether `old` is `new` or one of its ancestors, walking at most `budget` commits newest
/// first (false when the budget runs out, or either is not a commit: "not known to be").
pub fn is_ancestor(odb: &Odb, old: &oid, new: &oid, budget: usize) -> bool {
    if old == new {
        return true;
    }
    let mut walker = Walker::new(odb);
    let Ok(target) = walker.commit(old) else {
        return false;
    };
    let mut seen: HashSet<ObjectId> = HashSet::new();
    let mut queue: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
    let Ok(start) = walker.commit(new) else {
        return false;
    };
    queue.push((start.time, new.to_owned()));
    seen.insert(new.to_owned());
    while let Some((time, id)) = queue.pop() {
        if id == old {
            return true;
        }
        // Everything left is older than `old` by more than a day of clock skew: not found.
        if seen.len() > budget || time < target.time - 86_400 {
            return false;
        }
        let Ok(c) = walker.commit(&id) else {
            return false;
        };
        for p in &c.parents {
            if seen.insert(*p)
                && let Ok(pc) = walker.commit(p)
            {
                queue.push((pc.time, *p));
            }
        }
    }
    false
}

/// Client haves used as extra edges besides the real ones (see `objects_to_send`).
const MAX_HAVE_HINTS: usize = 64;

/// Flags of one commit in [`Walker::limit_list`].
#[derive(Default, Clone, Copy)]
struct RevFlags {
    uninteresting: bool,
    in_heap: bool,
    popped: bool,
}

/// The wants and haves of a [`PackPlan`], peeled (see [`Walker::add_pending`]).
#[derive(Default)]
struct Pending {
    /// Starts of the commit walk, each with whether it is uninteresting (a have).
    starts: Vec<(ObjectId, bool)>,
    /// The haves that peel to commits.
    have_commits: Vec<ObjectId>,
    /// Trees and blobs wanted directly (through tags).
    tree_roots: Vec<ObjectId>,
    blob_roots: Vec<ObjectId>,
}

/// The objects [`Walker::objects_to_send`] has chosen so far, in order, each once.
#[derive(Default)]
struct ToPack {
    out: Vec<ObjectId>,
    added: HashSet<ObjectId>,
}

impl ToPack {
    /// Add `id` unless it is in already; whether it was new.
    fn add(&mut self, id: ObjectId) -> bool {
        let new = self.added.insert(id);
        if new {
            self.out.push(id);
        }
        new
    }
}

impl<'a> Walker<'a> {
    /// A walker over `odb`.
    pub fn new(odb: &'a Odb) -> Self {
        Walker {
            odb,
            commits: HashMap::new(),
        }
    }

    /// Commit `id`, parsed (from the walker's, then the process's commit cache, else decoded).
    pub(crate) fn commit(&mut self, id: &oid) -> Result<Arc<CommitInfo>> {
        if let Some(c) = self.commits.get(id) {
            return Ok(c.clone());
        }
        if let Some(c) = self.odb.io.commits.get(&id.to_owned()) {
            self.commits.insert(id.to_owned(), c.clone());
            return Ok(c);
        }
        let obj = self.odb.object(id)?;
        if obj.kind != Kind::Commit {
            return Err(OdbError::Corrupt(format!(
                "{id} is a {}, not a commit",
                obj.kind
            )));
        }
        let c = gix_object::CommitRef::from_bytes(&obj.data, gix_hash::Kind::Sha1)
            .map_err(|e| OdbError::Corrupt(format!("commit {id}: {e}")))?;
        let info = Arc::new(CommitInfo {
            tree: c.tree(),
            parents: c.parents().collect(),
            time: c.time().map(|t| t.seconds).unwrap_or(0),
        });
        self.commits.insert(id.to_owned(), info.clone());
        self.odb.io.commits.insert(id.to_owned(), info.clone());
        Ok(info)
    }

    fn parents(&mut self, id: &oid, grafts: Option<&HashSet<ObjectId>>) -> Result<Vec<ObjectId>> {
        if grafts.is_some_and(|g| g.contains(id)) {
            return Ok(Vec::new());
        }
        Ok(self.commit(id)?.parents.clone())
    }

    /// Follow annotated tags down to the first non-tag object.
    pub fn peel(&mut self, id: &oid) -> Result<Peeled> {
        let mut tags = Vec::new();
        let mut cur = id.to_owned();
        for _ in 0..64 {
            if self.commits.contains_key(&cur) {
                return Ok(Peeled {
                    tags,
                    id: cur,
                    kind: Kind::Commit,
                });
            }
            let obj = self.odb.object(&cur)?;
            if obj.kind != Kind::Tag {
                return Ok(Peeled {
                    tags,
                    id: cur,
                    kind: obj.kind,
                });
            }
            let t = gix_object::TagRef::from_bytes(&obj.data, gix_hash::Kind::Sha1)
                .map_err(|e| OdbError::Corrupt(format!("tag {cur}: {e}")))?;
            tags.push(cur);
            cur = t.target();
        }
        Err(OdbError::Corrupt(format!("tag chain from {id} too long")))
    }

    /// Peel to a commit, if the object is (or points to) one.
    pub fn peel_commit(&mut self, id: &oid) -> Result<Option<ObjectId>> {
        let p = self.peel(id)?;
        Ok((p.kind == Kind::Commit).then_some(p.id))
    }

    /// Whether every want commit reaches one of `common` (git's `ok_to_give_up`).
    pub fn all_wants_reach(
        &mut self,
        wants: &[ObjectId],
        common: &HashSet<ObjectId>,
    ) -> Result<bool> {
        if common.is_empty() {
            return Ok(false);
        }
        let mut oldest = i64::MAX;
        for c in common {
            if let Ok(info) = self.commit(c) {
                oldest = oldest.min(info.time);
            }
        }
        // Allow for some clock skew below the oldest common commit.
        let cutoff = oldest.saturating_sub(86_400);
        let mut reaches: HashSet<ObjectId> = common.clone();
        for w in wants {
            let Some(w) = self.peel_commit(w)? else {
                continue;
            };
            if reaches.contains(&w) {
                continue;
            }
            // Breadth-first towards a commit known to reach; on success every commit on the
            // path found is known to reach too, so later wants stop as soon as they meet it.
            let mut came_from: HashMap<ObjectId, ObjectId> = HashMap::new();
            let mut queue = VecDeque::from([w]);
            came_from.insert(w, w);
            let mut found = None;
            while let Some(c) = queue.pop_front() {
                if reaches.contains(&c) {
                    found = Some(c);
                    break;
                }
                let info = self.commit(&c)?;
                if info.time < cutoff {
                    continue;
                }
                for p in &info.parents {
                    if !came_from.contains_key(p) {
                        came_from.insert(*p, c);
                        queue.push_back(*p);
                    }
                }
            }
            let Some(mut c) = found else {
                return Ok(false);
            };
            while c != w {
                reaches.insert(c);
                match came_from.get(&c) {
                    Some(prev) => c = *prev,
                    None => break,
                }
            }
            reaches.insert(w);
        }
        Ok(true)
    }

    /// Compute the shallow boundary for a deepening request (git's `deepen`,
    /// `deepen_by_rev_list`, `send_shallow` and `send_unshallow`).
    pub fn shallow(
        &mut self,
        want_commits: &[ObjectId],
        client_shallows: &[ObjectId],
        deepen: &Deepen,
    ) -> Result<ShallowOutcome> {
        let client: HashSet<ObjectId> = client_shallows
            .iter()
            .filter(|s| self.commit(s).is_ok())
            .copied()
            .collect();
        let mut boundary: Vec<ObjectId> = Vec::new();
        let mut not_shallow: HashSet<ObjectId> = HashSet::new();
        if let Some(depth) = deepen.depth {
            let (starts, limit): (Vec<ObjectId>, u64) = if deepen.relative {
                (client.iter().copied().collect(), depth as u64 + 1)
            } else {
                (want_commits.to_vec(), depth as u64)
            };
            self.deepen(starts, limit, &mut boundary, &mut not_shallow)?;
        } else if deepen.since.is_some() || !deepen.not.is_empty() {
            self.deepen_by_rev_list(want_commits, deepen, &mut boundary, &mut not_shallow)?;
        }
        self.send_shallow_and_unshallow(&client, &boundary, &not_shallow)
    }

    /// git's `deepen`: a breadth-first walk from `starts`, whose commits at distance
    /// `limit - 1` are the boundary and those closer are not shallow.
    fn deepen(
        &mut self,
        starts: Vec<ObjectId>,
        limit: u64,
        boundary: &mut Vec<ObjectId>,
        not_shallow: &mut HashSet<ObjectId>,
    ) -> Result<()> {
        let mut seen: HashSet<ObjectId> = HashSet::new();
        let mut queue: VecDeque<(ObjectId, u64)> = VecDeque::new();
        for s in starts {
            if seen.insert(s) {
                queue.push_back((s, 0));
            }
        }
        while let Some((c, d)) = queue.pop_front() {
            if d + 1 >= limit {
                boundary.push(c);
                continue;
            }
            not_shallow.insert(c);
            for p in self.commit(&c)?.parents.clone() {
                if seen.insert(p) {
                    queue.push_back((p, d + 1));
                }
            }
        }
        Ok(())
    }

    /// git's `deepen_by_rev_list` (`deepen-since`, `deepen-not`): the commits reachable from
    /// the wants through selected commits are not shallow; those of them with a parent left
    /// out are the boundary.
    fn deepen_by_rev_list(
        &mut self,
        want_commits: &[ObjectId],
        deepen: &Deepen,
        boundary: &mut Vec<ObjectId>,
        not_shallow: &mut HashSet<ObjectId>,
    ) -> Result<()> {
        let excluded = self.ancestors(&deepen.not)?;
        let included = |w: &mut Self, c: &ObjectId| -> Result<bool> {
            Ok(!excluded.contains(c)
                && deepen
                    .since
                    .is_none_or(|s| w.commit(c).map(|i| i.time >= s).unwrap_or(false)))
        };
        let mut queue: VecDeque<ObjectId> = VecDeque::new();
        for w in want_commits {
            if !included(self, w)? {
                return Err(OdbError::Unanswerable(
                    "no commits selected for shallow requests".into(),
                ));
            }
            if not_shallow.insert(*w) {
                queue.push_back(*w);
            }
        }
        let mut members = Vec::new();
        while let Some(c) = queue.pop_front() {
            members.push(c);
            for p in self.commit(&c)?.parents.clone() {
                if included(self, &p)? && not_shallow.insert(p) {
                    queue.push_back(p);
                }
            }
        }
        for c in members {
            let parents = self.commit(&c)?.parents.clone();
            if parents.iter().any(|p| !not_shallow.contains(p)) {
                boundary.push(c);
            }
        }
        Ok(())
    }

    /// git's `send_shallow` and `send_unshallow`: the boundary commits the client does not
    /// have as shallow yet, and the client's shallow commits that are no longer shallow (with
    /// their parents, which it now wants).
    fn send_shallow_and_unshallow(
        &mut self,
        client: &HashSet<ObjectId>,
        boundary: &[ObjectId],
        not_shallow: &HashSet<ObjectId>,
    ) -> Result<ShallowOutcome> {
        let mut out = ShallowOutcome::default();
        for b in boundary {
            out.grafts.insert(*b);
            if !client.contains(b) {
                out.shallow.push(*b);
            }
        }
        let mut client_sorted: Vec<ObjectId> = client.iter().copied().collect();
        client_sorted.sort();
        for s in client_sorted {
            out.grafts.insert(s);
            if not_shallow.contains(&s) && !boundary.contains(&s) {
                out.unshallow.push(s);
                out.extra_wants
                    .extend(self.commit(&s)?.parents.iter().copied());
                out.extra_edges.push(s);
            }
        }
        Ok(out)
    }

    /// All commits reachable from `starts` (peeled).
    fn ancestors(&mut self, starts: &[ObjectId]) -> Result<HashSet<ObjectId>> {
        let mut seen = HashSet::new();
        let mut stack: Vec<ObjectId> = Vec::new();
        for s in starts {
            if let Some(c) = self.peel_commit(s)? {
                stack.push(c);
            }
        }
        while let Some(c) = stack.pop() {
            if seen.insert(c) {
                stack.extend(self.commit(&c)?.parents.iter().copied());
            }
        }
        Ok(seen)
    }

    /// The objects a client lacks: everything reachable from the wants that is not reachable
    /// from the haves (within the shallow grafts), plus included tags. In no particular order.
    pub fn objects_to_send(&mut self, plan: &PackPlan<'_>) -> Result<ToSend> {
        let mut pack = ToPack::default();
        let pending = self.add_pending(plan, &mut pack)?;
        let (commits, flags) = self.limit_list(pending.starts, plan.grafts)?;
        let edges = self.find_edges(&commits, &flags, pending.have_commits, plan.grafts)?;
        // The edges' trees are walked only when there are commits or trees they can hide.
        let hides = !commits.is_empty() || !pending.tree_roots.is_empty();
        let (client_has, client_names) =
            self.mark_edges_uninteresting(if hides { &edges } else { &[] })?;
        for c in &commits {
            pack.add(*c);
        }
        let mut sent = ToSend {
            client_names,
            ..Default::default()
        };
        if plan.filter != Some(Filter::TreeZero) {
            let roots = pending.tree_roots;
            sent.names = self.traverse_trees(
                &commits,
                roots,
                &flags,
                client_has.clone(),
                plan.filter,
                &mut pack,
            )?;
            sent.client_has = client_has;
            for b in pending.blob_roots {
                pack.add(b);
            }
        }
        self.add_tag_chains(plan.include_tags, &mut pack)?;
        sent.ids = pack.out;
        Ok(sent)
    }

    /// Peel the wants and the haves (git's pending objects): the tags passed through on the
    /// way to a wanted object go into the pack; wanted commits and the haves' commits become
    /// the starts of the commit walk, wanted trees and blobs roots of the tree walk.
    fn add_pending(&mut self, plan: &PackPlan<'_>, pack: &mut ToPack) -> Result<Pending> {
        let mut pending = Pending::default();
        for w in plan.wants {
            let p = self.peel(w)?;
            for t in &p.tags {
                pack.add(*t);
            }
            match p.kind {
                Kind::Commit => pending.starts.push((p.id, false)),
                Kind::Tree => pending.tree_roots.push(p.id),
                Kind::Blob => pending.blob_roots.push(p.id),
                Kind::Tag => {}
            }
        }
        for h in plan.haves {
            if let Ok(Some(c)) = self.peel_commit(h) {
                pending.starts.push((c, true));
                pending.have_commits.push(c);
            }
        }
        Ok(pending)
    }

    /// Date-ordered walk with uninteresting propagation (git's limit_list): the commits to
    /// send, in walk order, and the flags of every commit the walk met.
    fn limit_list(
        &mut self,
        starts: Vec<(ObjectId, bool)>,
        grafts: Option<&HashSet<ObjectId>>,
    ) -> Result<(Vec<ObjectId>, HashMap<ObjectId, RevFlags>)> {
        let mut state: HashMap<ObjectId, RevFlags> = HashMap::new();
        let mut heap: BinaryHeap<(i64, ObjectId)> = BinaryHeap::new();
        let mut interesting_in_heap = 0usize;
        for (c, unint) in starts {
            let time = self.commit(&c)?.time;
            let st = state.entry(c).or_default();
            if st.in_heap {
                if unint && !st.uninteresting {
                    st.uninteresting = true;
                    interesting_in_heap -= 1;
                }
                continue;
            }
            st.in_heap = true;
            st.uninteresting |= unint;
            if !st.uninteresting {
                interesting_in_heap += 1;
            }
            heap.push((time, c));
        }
        let mut order: Vec<ObjectId> = Vec::new();
        while interesting_in_heap > 0 {
            let Some((_, c)) = heap.pop() else { break };
            let st = state.entry(c).or_default();
            st.in_heap = false;
            st.popped = true;
            let unint = st.uninteresting;
            if !unint {
                interesting_in_heap -= 1;
                order.push(c);
            }
            for p in self.parents(&c, grafts)? {
                let time = self.commit(&p)?.time;
                let pst = state.entry(p).or_default();
                if unint && !pst.uninteresting {
                    if pst.in_heap {
                        interesting_in_heap -= 1;
                    }
                    pst.uninteresting = true;
                    if pst.popped {
                        // Clock skew: already walked as interesting; propagate down.
                        self.mark_parents_uninteresting(
                            p,
                            grafts,
                            &mut state,
                            &mut interesting_in_heap,
                        )?;
                    }
                }
                let pst = state.entry(p).or_default();
                if !pst.in_heap && !pst.popped {
                    pst.in_heap = true;
                    if !pst.uninteresting {
                        interesting_in_heap += 1;
                    }
                    heap.push((time, p));
                }
            }
        }
        let commits: Vec<ObjectId> = order
            .into_iter()
            .filter(|c| state.get(c).is_some_and(|s| !s.uninteresting))
            .collect();
        Ok((commits, state))
    }

    /// Mark the ancestors of `commit`, already walked, uninteresting, as far as they were
    /// walked (git's mark_parents_uninteresting), keeping `interesting_in_heap` in step.
    fn mark_parents_uninteresting(
        &mut self,
        commit: ObjectId,
        grafts: Option<&HashSet<ObjectId>>,
        state: &mut HashMap<ObjectId, RevFlags>,
        interesting_in_heap: &mut usize,
    ) -> Result<()> {
        let mut stack = vec![commit];
        while let Some(x) = stack.pop() {
            for xp in self.parents(&x, grafts)? {
                let s = state.entry(xp).or_default();
                if !s.uninteresting {
                    if s.in_heap {
                        *interesting_in_heap -= 1;
                    }
                    s.uninteresting = true;
                    if s.popped {
                        stack.push(xp);
                    }
                }
            }
        }
        Ok(())
    }

    /// The commits that bound the pack, newest first, with their times: the uninteresting
    /// parents of sent commits, and the newest few haves.
    fn find_edges(
        &mut self,
        commits: &[ObjectId],
        state: &HashMap<ObjectId, RevFlags>,
        have_commits: Vec<ObjectId>,
        grafts: Option<&HashSet<ObjectId>>,
    ) -> Result<Vec<(i64, ObjectId)>> {
        // Edges: uninteresting parents of sent commits.
        let mut edges: Vec<(i64, ObjectId)> = Vec::new();
        let mut edge_seen = HashSet::new();
        for c in commits {
            for p in self.parents(c, grafts)? {
                if state.get(&p).is_some_and(|s| s.uninteresting) && edge_seen.insert(p) {
                    edges.push((self.commit(&p)?.time, p));
                }
            }
        }
        // The client's own haves bound the pack too (git's aggressive edge hint): this hides
        // trees and blobs wanted directly (tags of trees or blobs) that the client already has.
        // Only the newest few: a client listing thousands of haves must not cost a tree walk
        // per have.
        let mut hinted: Vec<(i64, ObjectId)> = Vec::new();
        for c in have_commits {
            if edge_seen.insert(c) {
                hinted.push((self.commit(&c)?.time, c));
            }
        }
        hinted.sort_by(|a, b| b.cmp(a));
        hinted.truncate(MAX_HAVE_HINTS);
        edges.extend(hinted);
        // Every edge bounds the pack, as git marks every edge uninteresting (a cap here made a
        // fetch that moves many branches resend what the client has).
        edges.sort_by(|a, b| b.cmp(a));
        Ok(edges)
    }

    /// The trees and blobs of the `edges` (git's mark_edges_uninteresting): what the client
    /// has, and some of them by name hash ([`ToSend::client_names`]).
    #[allow(clippy::type_complexity)]
    fn mark_edges_uninteresting(
        &mut self,
        edges: &[(i64, ObjectId)],
    ) -> Result<(HashSet<ObjectId>, HashMap<u32, Vec<ObjectId>>)> {
        let mut client_has: HashSet<ObjectId> = HashSet::new();
        let mut client_names: HashMap<u32, Vec<ObjectId>> = HashMap::new();
        for (_, e) in edges {
            let tree = self.commit(e)?.tree;
            self.collect_tree(tree, &mut client_has, None, &mut |id, name| {
                let v = client_names.entry(name).or_default();
                if v.len() < CLIENT_NAMES_PER_HASH {
                    v.push(id);
                }
            })?;
        }
        Ok((client_has, client_names))
    }

    /// Add the trees and blobs of the sent `commits` and the wanted `tree_roots` that the
    /// client lacks to the pack (git's traverse_commit_list); returns their name hashes.
    /// `client_has`: what the edges hold.
    fn traverse_trees(
        &mut self,
        commits: &[ObjectId],
        tree_roots: Vec<ObjectId>,
        state: &HashMap<ObjectId, RevFlags>,
        client_has: HashSet<ObjectId>,
        filter: Option<Filter>,
        pack: &mut ToPack,
    ) -> Result<HashMap<ObjectId, u32>> {
        let mut roots: Vec<ObjectId> = Vec::with_capacity(commits.len() + tree_roots.len());
        for c in commits {
            roots.push(self.commit(c)?.tree);
        }
        roots.extend(tree_roots);
        let mut seen = client_has;
        // The root tree of every commit the walk found the client to have (not only the
        // edges'): a sent commit whose tree equals one of them (a revert, a merge) needs no
        // tree at all, as with git's bitmaps. Ids only: their contents are not walked.
        for (c, st) in state {
            if st.uninteresting && st.popped {
                seen.insert(self.commit(c)?.tree);
            }
        }
        let mut names = HashMap::new();
        for r in roots {
            self.collect_tree(r, &mut seen, filter, &mut |id, name| {
                if pack.add(id) {
                    names.insert(id, name);
                }
            })?;
        }
        Ok(names)
    }

    /// include-tag: annotated tags whose peeled object is in the pack, with the tags their
    /// chain passes through (git's add_tag_chain).
    fn add_tag_chains(
        &mut self,
        include_tags: &[(ObjectId, ObjectId)],
        pack: &mut ToPack,
    ) -> Result<()> {
        for (tag, peeled) in include_tags {
            if pack.added.contains(peeled) && !pack.added.contains(tag) {
                let p = self.peel(tag)?;
                for t in p.tags {
                    pack.add(t);
                }
            }
        }
        Ok(())
    }

    /// Walk a tree, reporting every tree and blob not yet in `seen` (and adding them to it),
    /// with the [`name_hash`] of its entry name (0 for the root).
    fn collect_tree(
        &mut self,
        root: ObjectId,
        seen: &mut HashSet<ObjectId>,
        filter: Option<Filter>,
        emit: &mut dyn FnMut(ObjectId, u32),
    ) -> Result<()> {
        if !seen.insert(root) {
            return Ok(());
        }
        emit(root, 0);
        // Level by level: each level's trees (and their delta chains) load in parallel.
        let mut level = vec![root];
        while !level.is_empty() {
            let locs: Vec<_> = level.iter().filter_map(|t| self.odb.locate(t)).collect();
            self.odb.prefetch_chains(&locs);
            let mut next = Vec::new();
            for t in std::mem::take(&mut level) {
                self.tree_entries(t, seen, filter, emit, &mut next)?;
            }
            level = next;
        }
        Ok(())
    }

    /// Emit the entries of tree `t` not `seen` yet; its subtrees go to `subtrees`.
    fn tree_entries(
        &mut self,
        t: ObjectId,
        seen: &mut HashSet<ObjectId>,
        filter: Option<Filter>,
        emit: &mut dyn FnMut(ObjectId, u32),
        subtrees: &mut Vec<ObjectId>,
    ) -> Result<()> {
        {
            let obj = self.odb.object(&t)?;
            if obj.kind != Kind::Tree {
                return Err(OdbError::Corrupt(format!(
                    "{t} is a {}, not a tree",
                    obj.kind
                )));
            }
            for entry in gix_object::TreeRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1) {
                let entry = entry.map_err(|e| OdbError::Corrupt(format!("tree {t}: {e}")))?;
                if entry.mode.is_commit() {
                    continue; // submodule: not in this repository
                }
                let id = entry.oid.to_owned();
                if seen.contains(&id) {
                    continue;
                }
                if entry.mode.is_tree() {
                    seen.insert(id);
                    emit(id, name_hash(entry.filename));
                    subtrees.push(id);
                } else {
                    match filter {
                        Some(Filter::BlobNone) => continue,
                        // git omits blobs of at least the limit, and marks them seen so that
                        // other trees naming them do not ask for their size again.
                        Some(Filter::BlobLimit(limit)) if self.blob_size(&id)? >= limit => {
                            seen.insert(id);
                            continue;
                        }
                        _ => {}
                    }
                    seen.insert(id);
                    emit(id, name_hash(entry.filename));
                }
            }
        }
        Ok(())
    }

    /// Size of a blob without inflating it when it is stored whole.
    fn blob_size(&mut self, id: &oid) -> Result<u64> {
        let loc = self
            .odb
            .locate(id)
            .ok_or_else(|| OdbError::NotFound(id.to_owned()))?;
        let e = self.odb.raw_entry(loc)?;
        if e.header.is_base() {
            return Ok(e.decompressed_size);
        }
        // A delta records its result's size up front: no need to resolve it.
        if let Some(n) = super::delta::result_size_of_compressed(e.compressed()) {
            return Ok(n);
        }
        Ok(self.odb.object_at(loc)?.data.len() as u64)
    }
}
