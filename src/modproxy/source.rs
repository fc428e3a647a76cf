//! [`Git`] over a stored repository: its ref index and its object database. Synchronous: call
//! it on a blocking thread.

use super::coderepo::{Git, TreeFile};
use super::modzip::Kind as FileKind;
use crate::odb::{Odb, OdbError};
use crate::refs::RefIndex;
use gix_hash::ObjectId;
use gix_object::Kind;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Most commits one ancestry question walks (a bound on a hostile or enormous history).
const MAX_WALK: usize = 2_000_000;

/// One version of a repository's refs and objects.
pub struct Stored {
    refs: BTreeMap<String, String>,
    odb: Arc<Odb>,
    /// Ancestor sets computed by this request (pseudo-version bases ask several questions of
    /// the same commit).
    ancestors: Mutex<HashMap<ObjectId, Arc<HashSet<ObjectId>>>>,
}

impl Stored {
    /// The branches, tags and HEAD of `index` (peeled) over `odb`. Refs outside
    /// `refs/heads/` and `refs/tags/` are left out: the go command resolves revisions
    /// against branches and tags only.
    pub fn new(index: &RefIndex, odb: Arc<Odb>) -> Self {
        let mut refs = BTreeMap::new();
        for (name, r) in &index.refs {
            if name.starts_with("refs/heads/") || name.starts_with("refs/tags/") {
                refs.insert(name.clone(), r.peeled.unwrap_or(r.oid).to_string());
            }
        }
        if let Some(head) = index.head() {
            let peeled = index
                .head_symref
                .as_ref()
                .and_then(|t| index.refs.get(t))
                .and_then(|r| r.peeled)
                .unwrap_or(head);
            refs.insert("HEAD".into(), peeled.to_string());
        }
        Stored {
            refs,
            odb,
            ancestors: Mutex::new(HashMap::new()),
        }
    }

    fn object(&self, id: &ObjectId) -> Result<Option<Arc<crate::odb::Object>>, OdbError> {
        if !self.odb.contains(id) {
            return Ok(None);
        }
        self.odb.object(id).map(Some)
    }

    fn commit(&self, id: &ObjectId) -> Result<Option<(ObjectId, Vec<ObjectId>, i64)>, OdbError> {
        let Some(obj) = self.object(id)? else {
            return Ok(None);
        };
        if obj.kind != Kind::Commit {
            return Ok(None);
        }
        let c = gix_object::CommitRef::from_bytes(&obj.data, gix_hash::Kind::Sha1)
            .map_err(|e| OdbError::Corrupt(format!("commit {id}: {e}")))?;
        let time = c.time().map(|t| t.seconds).unwrap_or(0);
        Ok(Some((c.tree(), c.parents().collect(), time)))
    }

    /// The entry `path` below `tree` (`""`: the tree itself, as a tree).
    fn lookup(
        &self,
        tree: ObjectId,
        path: &str,
    ) -> Result<Option<(gix_object::tree::EntryMode, ObjectId)>, OdbError> {
        let mut mode = gix_object::tree::EntryKind::Tree.into();
        let mut id = tree;
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !gix_object::tree::EntryMode::is_tree(&mode) {
                return Ok(None);
            }
            let Some(obj) = self.object(&id)? else {
                return Ok(None);
            };
            if obj.kind != Kind::Tree {
                return Ok(None);
            }
            let mut found = None;
            for e in gix_object::TreeRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1) {
                let e = e.map_err(|e| OdbError::Corrupt(format!("tree {id}: {e}")))?;
                if e.filename == part.as_bytes() {
                    found = Some((e.mode, e.oid.to_owned()));
                    break;
                }
            }
            let Some((m, o)) = found else {
                return Ok(None);
            };
            mode = m;
            id = o;
        }
        Ok(Some((mode, id)))
    }

    /// The entry `path` of `commit`'s tree (`""`: the tree itself); `None` when `commit` is
    /// no commit we have or the path is missing.
    fn entry_at(
        &self,
        commit: &str,
        path: &str,
    ) -> Result<Option<(gix_object::tree::EntryMode, ObjectId)>, OdbError> {
        let Some(c) = parse(commit) else {
            return Ok(None);
        };
        match self.commit(&c)? {
            Some((tree, _, _)) => self.lookup(tree, path),
            None => Ok(None),
        }
    }

    fn ancestors_of(&self, commit: ObjectId) -> Result<Arc<HashSet<ObjectId>>, OdbError> {
        if let Some(s) = lock(&self.ancestors).get(&commit) {
            return Ok(s.clone());
        }
        let mut seen = HashSet::new();
        let mut stack = vec![commit];
        while let Some(c) = stack.pop() {
            if seen.len() >= MAX_WALK {
                return Err(OdbError::Corrupt(format!(
                    "history of {commit} has over {MAX_WALK} commits"
                )));
            }
            if !seen.insert(c) {
                continue;
            }
            // A shallow or partial history ends where the objects end.
            if let Some((_, parents, _)) = self.commit(&c)? {
                stack.extend(parents.into_iter().filter(|p| !seen.contains(p)));
            }
        }
        let s = Arc::new(seen);
        lock(&self.ancestors).insert(commit, s.clone());
        Ok(s)
    }
}

impl Stored {
    /// Load every tree below `root` a level at a time (one round of parallel reads per level
    /// and delta-chain step) before the depth-first walk reads them one by one.
    fn prefetch_trees(&self, root: ObjectId) {
        let mut level = vec![root];
        // Bounded: git trees are rarely deeper than a few dozen levels.
        for _ in 0..256 {
            if level.is_empty() {
                return;
            }
            let locs: Vec<_> = level.iter().filter_map(|id| self.odb.locate(id)).collect();
            self.odb.prefetch_chains(&locs);
            let mut next = Vec::new();
            for t in &level {
                let Ok(obj) = self.odb.object(t) else {
                    continue;
                };
                if obj.kind != Kind::Tree {
                    continue;
                }
                for e in
                    gix_object::TreeRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1).flatten()
                {
                    if e.mode.is_tree() {
                        next.push(e.oid.to_owned());
                    }
                }
            }
            level = next;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn parse(id: &str) -> Option<ObjectId> {
    ObjectId::from_hex(id.as_bytes()).ok()
}

impl Git for Stored {
    fn refs(&self) -> &BTreeMap<String, String> {
        &self.refs
    }

    fn commit_time(&self, id: &str) -> Result<Option<i64>, OdbError> {
        let Some(id) = parse(id) else {
            return Ok(None);
        };
        Ok(self.commit(&id)?.map(|(_, _, t)| t))
    }

    fn commits_with_prefix(&self, prefix: &str) -> Result<Vec<String>, OdbError> {
        let mut found: Vec<ObjectId> = Vec::new();
        for p in &self.odb.packs {
            for id in p.oids_with_prefix(prefix, 3) {
                if !found.contains(&id) {
                    found.push(id);
                }
            }
        }
        let mut commits = Vec::new();
        for id in found {
            if self.commit(&id)?.is_some() {
                commits.push(id.to_string());
            }
        }
        Ok(commits)
    }

    fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, OdbError> {
        let Some((mode, id)) = self.entry_at(commit, path)? else {
            return Ok(None);
        };
        if mode.is_tree() || mode.is_commit() {
            return Ok(None);
        }
        Ok(self.object(&id)?.map(|o| o.data.clone()))
    }

    fn is_ancestor(&self, ancestor: &str, commit: &str) -> Result<bool, OdbError> {
        let (Some(a), Some(c)) = (parse(ancestor), parse(commit)) else {
            return Ok(false);
        };
        Ok(self.ancestors_of(c)?.contains(&a))
    }

    fn list_files(&self, commit: &str, dir: &str) -> Result<Option<Vec<TreeFile>>, OdbError> {
        let Some((mode, root)) = self.entry_at(commit, dir)? else {
            return Ok(None);
        };
        if !mode.is_tree() {
            return Ok(None);
        }
        self.prefetch_trees(root);
        let mut out = Vec::new();
        // Depth first, in tree order (as `git archive` writes entries).
        let mut stack = vec![(String::new(), root)];
        while let Some((prefix, t)) = stack.pop() {
            let Some(obj) = self.object(&t)? else {
                return Err(OdbError::NotFound(t));
            };
            if obj.kind != Kind::Tree {
                return Err(OdbError::Corrupt(format!("{t} is not a tree")));
            }
            let mut subtrees = Vec::new();
            for e in gix_object::TreeRefIter::from_bytes(&obj.data, gix_hash::Kind::Sha1) {
                let e = e.map_err(|e| OdbError::Corrupt(format!("tree {t}: {e}")))?;
                let name = String::from_utf8_lossy(e.filename);
                let path = if prefix.is_empty() {
                    name.into_owned()
                } else {
                    format!("{prefix}/{name}")
                };
                if e.mode.is_tree() {
                    subtrees.push((path, e.oid.to_owned()));
                } else if e.mode.is_commit() {
                    // A submodule: archive writes a directory entry, which the go command drops.
                } else {
                    let kind = if e.mode.is_link() {
                        FileKind::Symlink
                    } else {
                        FileKind::Regular
                    };
                    out.push(TreeFile {
                        path,
                        kind,
                        blob: e.oid.to_string(),
                    });
                }
            }
            stack.extend(subtrees.into_iter().rev());
        }
        Ok(Some(out))
    }

    fn prefetch_blobs(&self, ids: &[&str]) {
        let locs: Vec<_> = ids
            .iter()
            .filter_map(|id| parse(id))
            .filter_map(|id| self.odb.locate(&id))
            .collect();
        self.odb.prefetch_chains(&locs);
    }

    fn read_blob(&self, id: &str) -> Result<Vec<u8>, OdbError> {
        let oid = parse(id).ok_or_else(|| OdbError::Corrupt(format!("bad object id {id}")))?;
        let obj = self.odb.object(&oid)?;
        Ok(obj.data.clone())
    }
}
