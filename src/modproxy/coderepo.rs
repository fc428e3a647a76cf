//! One module in one repository, answered the way the go command answers it in direct mode
//! (`cmd/go/internal/modfetch/coderepo.go` over `codehost/git.go`): which tags are versions,
//! what a revision resolves to (a tag or a pseudo-version), which directory holds the module
//! at a version, its go.mod and the files of its zip.
//!
//! Everything here reads git objects through [`Git`] and is synchronous (the object database
//! reads blocks from the store on a blocking thread).

use super::attributes::Attributes;
use super::gomodfile;
use super::module;
use super::modzip::{self, Candidate, Kind, ZipWriter};
use super::semver;
use crate::odb::OdbError;
use sha2::Digest;
use std::collections::{BTreeMap, HashMap};

/// Shortest hex prefix the go command takes as a commit id (`minHashDigits`).
const MIN_HASH_DIGITS: usize = 7;

/// A file or tree entry of a commit, as `git archive` would list it.
#[derive(Debug, Clone)]
pub struct TreeFile {
    /// Path below the listed directory.
    pub path: String,
    /// Regular file or symlink (gitlinks are not listed: archive writes them as directories).
    pub kind: Kind,
    /// Blob id (hex).
    pub blob: String,
}

/// Read access to one repository's git objects and refs, as the go command's git layer sees them.
pub trait Git {
    /// `HEAD`, `refs/heads/*` and `refs/tags/*`, each with the commit it peels to (hex).
    fn refs(&self) -> &BTreeMap<String, String>;
    /// The committer time (Unix seconds) of a commit; `None` when `id` is no commit we have.
    fn commit_time(&self, id: &str) -> Result<Option<i64>, OdbError>;
    /// The commits whose id starts with `prefix` (at most two are needed to tell ambiguity).
    fn commits_with_prefix(&self, prefix: &str) -> Result<Vec<String>, OdbError>;
    /// `git cat-file blob <commit>:<path>`: a blob's bytes (a symlink's target text), `None`
    /// when the path is missing or names a tree.
    fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, OdbError>;
    /// Whether `ancestor` is `commit` or one of its ancestors.
    fn is_ancestor(&self, ancestor: &str, commit: &str) -> Result<bool, OdbError>;
    /// Every regular file and symlink below `dir` (`""`: the whole tree) at `commit`, in tree
    /// order; `None` when `dir` is not a directory there.
    fn list_files(&self, commit: &str, dir: &str) -> Result<Option<Vec<TreeFile>>, OdbError>;
    /// A blob's bytes.
    fn read_blob(&self, id: &str) -> Result<Vec<u8>, OdbError>;
    /// About to read these blobs: a store far away loads them in parallel now rather than one
    /// after another on each read. Nothing by default.
    fn prefetch_blobs(&self, _ids: &[&str]) {}
}

/// Files whose blobs are loaded ahead together ([`Git::prefetch_blobs`]) while a zip is built:
/// enough for a few parallel rounds, few enough that the block cache holds them until read.
const PREFETCH_FILES: usize = 2048;

/// Why a request cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum ModError {
    /// The module or version does not exist, or is not valid (404/410): the text is the
    /// go command's kind of message, shown to the user.
    #[error("{0}")]
    NotFound(String),
    /// A revision this mirror does not know: upstream may have it by now.
    #[error("{0}")]
    UnknownRevision(String),
    /// The object database failed (a 5xx).
    #[error("reading git objects")]
    Odb(#[from] OdbError),
    /// The zip could not be written out (its destination failed: a 5xx).
    #[error("writing the module zip")]
    Write(#[source] std::io::Error),
}

type Result<T, E = ModError> = std::result::Result<T, E>;

/// A commit as the go command's git layer describes it (`codehost.RevInfo`).
#[derive(Debug, Clone)]
pub struct Commit {
    /// Full commit id.
    pub name: String,
    /// First 12 hex digits.
    pub short: String,
    /// Committer time, Unix seconds.
    pub time: i64,
    /// The tag it was asked for by, else the commit id.
    pub version: String,
    /// Every tag on the commit, sorted.
    pub tags: Vec<String>,
    /// The ref the revision was found through (`refs/tags/v1.0.0`, `HEAD`), if any.
    pub reference: Option<String>,
}

/// What `.info` and `@latest` answer.
#[derive(Debug, Clone)]
pub struct RevInfo {
    /// The canonical version (a tag's version or a pseudo-version).
    pub version: String,
    /// Committer time, Unix seconds.
    pub time: i64,
    /// Full commit id.
    pub name: String,
    /// The ref it was found through, for `Origin.Ref`.
    pub reference: Option<String>,
}

/// A built zip's content hash and size.
#[derive(Debug, Clone)]
pub struct ZipSummary {
    /// `h1:` hash of the files, as go.sum records it.
    pub h1: String,
    /// Files in the zip.
    pub files: usize,
    /// The commit it was built from.
    pub commit: String,
}

/// One module path in one repository.
#[derive(Debug, Clone)]
pub struct CodeRepo {
    mod_path: String,
    code_root: String,
    code_dir: String,
    path_prefix: String,
    path_major: String,
    pseudo_major: String,
}

impl CodeRepo {
    /// The module `mod_path` in the repository whose import path is `code_root`.
    pub fn new(mod_path: &str, code_root: &str) -> Result<Self> {
        if !has_path_prefix(mod_path, code_root) {
            return Err(ModError::NotFound(format!(
                "mismatched repo: found {code_root} for {mod_path}"
            )));
        }
        let (mut path_prefix, path_major, ok) = module::split_path_version(mod_path);
        if !ok {
            return Err(ModError::NotFound(format!(
                "invalid module path {mod_path:?}"
            )));
        }
        if code_root == mod_path {
            path_prefix = mod_path.to_string();
        }
        let mut code_dir = String::new();
        if code_root != mod_path {
            if !has_path_prefix(&path_prefix, code_root) {
                return Err(ModError::NotFound(format!(
                    "repository rooted at {code_root} cannot contain module {mod_path}"
                )));
            }
            code_dir = path_prefix[code_root.len()..].trim_matches('/').to_string();
        }
        Ok(CodeRepo {
            mod_path: mod_path.to_string(),
            code_root: code_root.to_string(),
            pseudo_major: module::path_major_prefix(&path_major),
            code_dir,
            path_prefix,
            path_major,
        })
    }

    /// The same module in a repository whose import path root lies in directory `subdir`
    /// (go-import's fourth field, already clean): the module's directory is `subdir` joined
    /// after the one its path gives, as the go command joins them (`newCodeRepo`).
    pub fn in_subdir(mut self, subdir: &str) -> Self {
        if !subdir.is_empty() {
            self.code_dir = if self.code_dir.is_empty() {
                subdir.to_string()
            } else {
                format!("{}/{subdir}", self.code_dir)
            };
        }
        self
    }

    /// The module path.
    pub fn module_path(&self) -> &str {
        &self.mod_path
    }

    /// The module's directory in the repository (`""`: the root), without a major-version
    /// subdirectory.
    pub fn code_dir(&self) -> &str {
        &self.code_dir
    }

    fn tag_prefix(&self) -> String {
        if self.code_dir.is_empty() {
            String::new()
        } else {
            format!("{}/", self.code_dir)
        }
    }

    fn not_found(&self, version: &str, why: impl std::fmt::Display) -> ModError {
        ModError::NotFound(format!(
            "{}@{version}: invalid version: {why}",
            self.mod_path
        ))
    }

    /// The tags of the repository that start with `prefix`, sorted, without `refs/tags/`.
    fn tags<'a>(&self, g: &'a dyn Git, prefix: &str) -> Vec<(&'a str, &'a str)> {
        g.refs()
            .range(format!("refs/tags/{prefix}")..)
            .take_while(|(k, _)| k.starts_with(&format!("refs/tags/{prefix}")))
            .map(|(k, v)| (&k["refs/tags/".len()..], v.as_str()))
            .collect()
    }

    /// `@v/list`: the tags that are versions of this module (`codeRepo.Versions`).
    pub fn versions(&self, g: &dyn Git) -> Result<Vec<String>> {
        if self.mod_path.starts_with("gopkg.in/") && self.mod_path.ends_with("-unstable") {
            return Ok(Vec::new());
        }
        let prefix = self.tag_prefix();
        let mut list = Vec::new();
        let mut incompatible = Vec::new();
        for (tag, _) in self.tags(g, &prefix) {
            let v = &tag[prefix.len()..];
            if v.is_empty() || v != semver::canonical(v) || module::is_pseudo_version(v) {
                continue;
            }
            if module::check_path_major(v, &self.path_major).is_err() {
                if self.code_dir.is_empty()
                    && self.path_major.is_empty()
                    && semver::major(v).as_str() > "v1"
                {
                    incompatible.push(v.to_string());
                }
                continue;
            }
            list.push(v.to_string());
        }
        semver::sort(&mut list);
        semver::sort(&mut incompatible);
        self.append_incompatible(g, list, incompatible)
    }

    fn append_incompatible(
        &self,
        g: &dyn Git,
        mut list: Vec<String>,
        incompatible: Vec<String>,
    ) -> Result<Vec<String>> {
        if incompatible.is_empty() || !self.path_major.is_empty() {
            return Ok(list);
        }
        let has_go_mod = |tag: &str| -> Result<bool> {
            let Some(commit) = g.refs().get(&format!("refs/tags/{tag}")) else {
                return Ok(false);
            };
            Ok(g.read_file(commit, "go.mod")?.is_some())
        };
        if let Some(last) = list.last()
            && has_go_mod(last)?
        {
            return Ok(list);
        }
        let mut last_major = String::new();
        let mut last_has_go_mod = false;
        for (i, v) in incompatible.iter().enumerate() {
            let major = semver::major(v);
            if major != last_major {
                let latest = incompatible[i..]
                    .iter()
                    .take_while(|w| semver::major(w) == major)
                    .last()
                    .unwrap_or(v);
                last_has_go_mod = has_go_mod(latest)?;
                last_major = major;
            }
            if !last_has_go_mod {
                list.push(format!("{v}+incompatible"));
            }
        }
        Ok(list)
    }

    /// The commit a revision names (`gitRepo.stat`): a tag, a branch, `HEAD` or a hex prefix
    /// of a commit id.
    pub fn code_stat(&self, g: &dyn Git, rev: &str) -> Result<Commit> {
        let refs = g.refs();
        let hexlike = (MIN_HASH_DIGITS..=40).contains(&rev.len())
            && rev.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some(hash) = refs.get(&format!("refs/tags/{rev}")) {
            return self.stat_local(g, rev, hash, Some(format!("refs/tags/{rev}")));
        }
        if let Some(hash) = refs.get(&format!("refs/heads/{rev}")) {
            return self.stat_local(g, hash, hash, Some(format!("refs/heads/{rev}")));
        }
        if rev == "HEAD"
            && let Some(hash) = refs.get("HEAD")
        {
            return self.stat_local(g, hash, hash, Some("HEAD".into()));
        }
        if hexlike {
            let lower = rev.to_ascii_lowercase();
            let found = g.commits_with_prefix(&lower)?;
            match found.as_slice() {
                [one] => {
                    let reference = refs
                        .iter()
                        .filter(|(_, h)| *h == one)
                        .map(|(k, _)| k.clone())
                        .min();
                    return self.stat_local(g, one, one, reference);
                }
                [] => {}
                _ => {
                    return Err(ModError::NotFound(format!("ambiguous revision {rev}")));
                }
            }
        }
        Err(ModError::UnknownRevision(format!("unknown revision {rev}")))
    }

    fn stat_local(
        &self,
        g: &dyn Git,
        version: &str,
        hash: &str,
        reference: Option<String>,
    ) -> Result<Commit> {
        let Some(time) = g.commit_time(hash)? else {
            return Err(ModError::UnknownRevision(format!(
                "unknown revision {version}"
            )));
        };
        let mut tags: Vec<String> = g
            .refs()
            .iter()
            .filter(|(k, h)| *h == hash && k.starts_with("refs/tags/"))
            .map(|(k, _)| k["refs/tags/".len()..].to_string())
            .collect();
        tags.sort();
        tags.dedup();
        let version = if tags.iter().any(|t| t == version) {
            version.to_string()
        } else {
            hash.to_string()
        };
        Ok(Commit {
            name: hash.to_string(),
            short: hash.chars().take(12).collect(),
            time,
            version,
            tags,
            reference,
        })
    }

    /// `.info` of a version or a query (`codeRepo.Stat`).
    pub fn stat(&self, g: &dyn Git, rev: &str) -> Result<RevInfo> {
        if rev == "latest" {
            return self.latest(g);
        }
        let code_rev = self.rev_to_rev(rev);
        let info = self.code_stat(g, &code_rev).map_err(|e| match e {
            ModError::UnknownRevision(why) => ModError::UnknownRevision(format!(
                "{}@{rev}: invalid version: {why}",
                self.mod_path
            )),
            ModError::NotFound(why) => self.not_found(rev, why),
            e => e,
        })?;
        self.convert(g, &info, rev)
    }

    /// `@latest`: the default branch's head as its tag or a pseudo-version.
    pub fn latest(&self, g: &dyn Git) -> Result<RevInfo> {
        let Some(head) = g.refs().get("HEAD") else {
            return Err(ModError::NotFound(format!(
                "{}@latest: no commits",
                self.mod_path
            )));
        };
        let mut info = self.code_stat(g, head)?;
        info.reference = Some("HEAD".into());
        self.convert(g, &info, "")
    }

    fn rev_to_rev(&self, rev: &str) -> String {
        if !semver::is_valid(rev) {
            return rev.to_string();
        }
        if module::is_pseudo_version(rev) {
            return module::pseudo_version_rev(rev).unwrap_or_default();
        }
        let rev = rev.strip_suffix("+incompatible").unwrap_or(rev);
        format!("{}{rev}", self.tag_prefix())
    }

    fn retracted(&self, g: &dyn Git) -> Box<dyn Fn(&str) -> bool> {
        let none: Box<dyn Fn(&str) -> bool> = Box::new(|_| false);
        let Ok(mut versions) = self.versions(g) else {
            return none;
        };
        if let Some(i) = versions.iter().position(|v| v.ends_with("+incompatible")) {
            versions.truncate(i);
        }
        let Some(highest) = versions
            .iter()
            .rev()
            .find(|v| semver::prerelease(v).is_empty())
            .or(versions.last())
            .cloned()
        else {
            return none;
        };
        match self.go_mod(g, &highest) {
            Ok(data) => {
                let r = gomodfile::retractions(&data);
                Box::new(move |v| r.iter().any(|x| x.covers(v)))
            }
            Err(_) => none,
        }
    }

    fn tag_to_version(&self, tag: &str) -> (String, bool) {
        let prefix = self.tag_prefix();
        let Some(trimmed) = tag.strip_prefix(&prefix) else {
            return (String::new(), false);
        };
        if module::is_pseudo_version(tag) {
            return (String::new(), false);
        }
        let v = semver::canonical(trimmed);
        if v.is_empty() || !trimmed.starts_with(&v) {
            return (String::new(), false);
        }
        let canonical = v == trimmed;
        (v, canonical)
    }

    /// Whether a `+incompatible` version may stand for `v` at `commit`.
    fn can_use_incompatible(
        &self,
        g: &dyn Git,
        commit: &str,
        stat_vers: &str,
        v: &str,
        memo: &mut HashMap<String, bool>,
    ) -> Result<bool> {
        if !self.code_dir.is_empty() || !self.path_major.is_empty() {
            return Ok(false);
        }
        let mut no_file = |file: String| -> Result<bool> {
            if let Some(&ok) = memo.get(&file) {
                return Ok(ok);
            }
            let ok = g.read_file(commit, &file)?.is_none();
            memo.insert(file, ok);
            Ok(ok)
        };
        if !no_file("go.mod".into())? {
            return Ok(false);
        }
        if !v.is_empty() && !stat_vers.ends_with("+incompatible") {
            return no_file(format!("{}/go.mod", semver::major(v)));
        }
        Ok(true)
    }

    fn check_canonical(
        &self,
        g: &dyn Git,
        info: &Commit,
        stat_vers: &str,
        v: &str,
        memo: &mut HashMap<String, bool>,
    ) -> Result<RevInfo> {
        self.find_dir_at(g, &info.name, v)
            .map_err(|e| self.not_found(v, e))?;
        let mut v = v.to_string();
        if v == stat_vers.strip_suffix("+incompatible").unwrap_or(stat_vers) {
            v = stat_vers.to_string();
        }
        let base = v.strip_suffix("+incompatible").unwrap_or(&v).to_string();
        let mut err_incompatible = None;
        if !module::match_path_major(&base, &self.path_major) {
            if self.can_use_incompatible(g, &info.name, stat_vers, &base, memo)? {
                v = format!("{base}+incompatible");
            } else if !self.path_major.is_empty() {
                err_incompatible = Some(self.not_found(
                    &v,
                    "module path includes a major version suffix, so major version must match",
                ));
            } else {
                err_incompatible = Some(self.not_found(
                    &v,
                    format!(
                        "module contains a go.mod file, so module path must match major version (\"{}/{}\")",
                        self.path_prefix,
                        semver::major(&v)
                    ),
                ));
            }
        } else if v.ends_with("+incompatible") {
            err_incompatible = Some(self.not_found(
                &v,
                format!(
                    "+incompatible suffix not allowed: major version {} is compatible",
                    semver::major(&v)
                ),
            ));
        }
        if !stat_vers.is_empty() && stat_vers == canonical_version(stat_vers) {
            let stat_base = stat_vers.strip_suffix("+incompatible").unwrap_or(stat_vers);
            if stat_base != base {
                return Err(self.not_found(
                    stat_vers,
                    format!("resolves to version {v} ({stat_base} is not a tag)"),
                ));
            }
        }
        if let Some(e) = err_incompatible {
            return Err(e);
        }
        Ok(RevInfo {
            version: v,
            time: info.time,
            name: info.name.clone(),
            reference: info.reference.clone(),
        })
    }

    /// `codeRepo.convert`: the canonical version for a commit reached by `stat_vers`.
    fn convert(&self, g: &dyn Git, info: &Commit, stat_vers: &str) -> Result<RevInfo> {
        let mut memo = HashMap::new();
        if module::is_pseudo_version(stat_vers) {
            let mut r = self.check_canonical(g, info, stat_vers, stat_vers, &mut memo)?;
            self.validate_pseudo_version(g, info, stat_vers)?;
            r.reference = None;
            return Ok(r);
        }
        // Read only when needed (a canonical tag on the commit answers without it).
        let retracted = std::cell::OnceCell::new();
        let is_retracted = |v: &str| retracted.get_or_init(|| self.retracted(g))(v);
        let (v, canonical) = self.tag_to_version(&info.version);
        if canonical && let Ok(r) = self.check_canonical(g, info, stat_vers, &v, &mut memo) {
            return Ok(r);
        }
        let mut highest = String::new();
        let mut pseudo_base = String::new();
        for tag in &info.tags {
            let (v, canonical) = self.tag_to_version(tag);
            if !stat_vers.is_empty() && semver::compare(&v, stat_vers).is_eq() {
                if canonical {
                    return self.check_canonical(g, info, stat_vers, &v, &mut memo);
                }
                pseudo_base = v.clone();
            }
            if canonical
                && semver::compare(&highest, &v).is_lt()
                && !is_retracted(&v)
                && (module::match_path_major(&v, &self.path_major)
                    || self.can_use_incompatible(g, &info.name, stat_vers, &v, &mut memo)?)
            {
                highest = v;
            }
        }
        if !highest.is_empty() {
            return self.check_canonical(g, info, stat_vers, &highest, &mut memo);
        }
        if pseudo_base.is_empty() {
            let prefix = self.tag_prefix();
            let mut candidates: Vec<(String, &str)> = Vec::new();
            for (tag, commit) in self.tags(g, &prefix) {
                let (v, _) = self.tag_to_version(tag);
                if v.is_empty() || is_retracted(&v) {
                    continue;
                }
                if !module::match_path_major(&v, &self.path_major)
                    && !self.can_use_incompatible(g, &info.name, stat_vers, &v, &mut memo)?
                {
                    continue;
                }
                candidates.push((tag[prefix.len()..].to_string(), commit));
            }
            // The highest tag merged into the commit (`git for-each-ref --merged`). The go
            // command asks its local clone first, which a fresh process has fetched shallowly:
            // it holds the tags on the commit itself (auto-followed), and only when none of
            // those will do does it fetch everything and look at the whole history.
            candidates.sort_by(|a, b| semver::compare(&b.0, &a.0));
            let on_commit = candidates
                .iter()
                .find(|(_, c)| *c == info.name)
                .map(|(semtag, _)| semtag.clone());
            if let Some(semtag) = on_commit {
                pseudo_base = self.tag_to_version(&format!("{prefix}{semtag}")).0;
            }
            for (semtag, commit) in candidates {
                if !pseudo_base.is_empty() {
                    break;
                }
                if g.is_ancestor(commit, &info.name)? {
                    pseudo_base = self.tag_to_version(&format!("{prefix}{semtag}")).0;
                    break;
                }
            }
        }
        let pv = module::pseudo_version(&self.pseudo_major, &pseudo_base, info.time, &info.short);
        let mut r = self.check_canonical(g, info, stat_vers, &pv, &mut memo)?;
        r.reference = None;
        Ok(r)
    }

    fn validate_pseudo_version(&self, g: &dyn Git, info: &Commit, version: &str) -> Result<()> {
        let bad = |why: String| self.not_found(version, why);
        let rev = module::pseudo_version_rev(version).map_err(&bad)?;
        if rev != info.short {
            return Err(bad(if rev.starts_with(&info.short) {
                format!(
                    "revision is longer than canonical (expected {})",
                    info.short
                )
            } else if info.short.starts_with(&rev) {
                format!(
                    "revision is shorter than canonical (expected {})",
                    info.short
                )
            } else {
                format!(
                    "does not match short name of revision (expected {})",
                    info.short
                )
            }));
        }
        let t = module::pseudo_version_time(version).map_err(&bad)?;
        if t != info.time {
            return Err(bad(format!(
                "does not match version-control timestamp (expected {})",
                module::format_pseudo_timestamp(info.time)
            )));
        }
        let prefix = self.tag_prefix();
        let base =
            module::pseudo_version_base(version.strip_suffix("+incompatible").unwrap_or(version))
                .map_err(&bad)?;
        if base.is_empty() {
            if self.pseudo_major.is_empty() && semver::major(version) == "v1" {
                return Err(bad(
                    "major version without preceding tag must be v0, not v1".into(),
                ));
            }
            return Ok(());
        }
        for tag in &info.tags {
            if tag.strip_prefix(&prefix).unwrap_or(tag) == base {
                return Err(bad(format!(
                    "tag ({tag}) found on revision {rev} is already canonical, so should not be replaced with a pseudo-version derived from that tag"
                )));
            }
        }
        let mut last_tag = None;
        for (tag, commit) in self.tags(g, &format!("{prefix}{base}")) {
            let only = tag.strip_prefix(&prefix).unwrap_or(tag);
            if semver::compare(only, &base).is_eq() {
                last_tag = Some(tag.to_string());
                if g.is_ancestor(commit, &info.name)? {
                    return Ok(());
                }
            }
        }
        match last_tag {
            None => Err(bad(format!("preceding tag ({base}) not found"))),
            Some(t) => Err(bad(format!(
                "revision {rev} is not a descendent of preceding tag ({t})"
            ))),
        }
    }

    /// The commit a canonical version names, for `.mod` and `.zip` (pseudo-versions are
    /// validated first, as the go command does).
    fn version_commit(&self, g: &dyn Git, version: &str) -> Result<String> {
        if version != canonical_version(version) {
            return Err(self.not_found(version, format!("version {version} is not canonical")));
        }
        if module::is_pseudo_version(version) {
            return Ok(self.stat(g, version)?.name);
        }
        let rev = self.rev_to_rev(version);
        match self.code_stat(g, &rev) {
            Ok(c) => Ok(c.name),
            Err(ModError::UnknownRevision(why)) => Err(ModError::UnknownRevision(format!(
                "{}@{version}: invalid version: {why}",
                self.mod_path
            ))),
            Err(e) => Err(e),
        }
    }

    /// `findDir`: the module's directory at a commit and its go.mod, if any.
    fn find_dir_at(
        &self,
        g: &dyn Git,
        commit: &str,
        version: &str,
    ) -> std::result::Result<ModuleDir, String> {
        if !semver::is_valid(version) {
            return Err("syntax error".into());
        }
        let file1 = join(&self.code_dir, "go.mod");
        let gomod1 = g.read_file(commit, &file1).map_err(|e| e.to_string())?;
        let mpath1 = gomod1
            .as_deref()
            .map(gomodfile::module_path)
            .unwrap_or_default();
        let found1 = gomod1.is_some()
            && (is_major(&mpath1, &self.path_major)
                || (self.path_major.is_empty() && mpath1.starts_with("gopkg.in/")));
        // A `/vN` module of a repository may also live in its `vN` subdirectory.
        let major_subdir = !self.path_major.is_empty()
            && self.code_root != self.mod_path
            && !self.path_major.starts_with('.');
        if major_subdir && let Some(found) = self.find_major_subdir(g, commit, found1, &file1)? {
            return Ok(found);
        }
        if found1 {
            return Ok((self.code_dir.clone(), gomod1));
        }
        if gomod1.is_some() {
            return Err(self.wrong_module_path(&file1, &mpath1, major_subdir, version, commit));
        }
        if self.code_dir.is_empty()
            && (self.path_major.is_empty() || self.path_major.starts_with('.'))
        {
            return Ok((String::new(), None));
        }
        if major_subdir {
            return Err(format!(
                "missing {}/go.mod and ...{}/go.mod at revision {commit}",
                self.path_prefix, self.path_major
            ));
        }
        Err(format!(
            "missing {}/go.mod at revision {commit}",
            self.path_prefix
        ))
    }

    /// The `vN` subdirectory's go.mod (`findDir`'s second candidate): the directory and its
    /// go.mod when it declares the module; `None` when it does not exist (the first candidate,
    /// `file1`, decides); an error when both declare the module or it declares another.
    fn find_major_subdir(
        &self,
        g: &dyn Git,
        commit: &str,
        found1: bool,
        file1: &str,
    ) -> std::result::Result<Option<ModuleDir>, String> {
        let dir2 = join(&self.code_dir, &self.path_major[1..]);
        let file2 = join(&dir2, "go.mod");
        let gomod2 = g.read_file(commit, &file2).map_err(|e| e.to_string())?;
        let mpath2 = gomod2
            .as_deref()
            .map(gomodfile::module_path)
            .unwrap_or_default();
        let found2 = gomod2.is_some() && is_major(&mpath2, &self.path_major);
        if found1 && found2 {
            return Err(format!(
                "{}/{file1} and ...{}/go.mod both have ...{} module paths at revision {commit}",
                self.path_prefix, self.path_major, self.path_major
            ));
        }
        if found2 {
            return Ok(Some((dir2, gomod2)));
        }
        if gomod2.is_some() {
            if mpath2.is_empty() {
                return Err(format!(
                    "{}/{file2} is missing module path at revision {commit}",
                    self.code_root
                ));
            }
            return Err(format!(
                "{}/{file2} has non-...{} module path {mpath2:?} at revision {commit}",
                self.code_root, self.path_major
            ));
        }
        Ok(None)
    }

    /// Why the go.mod at `file1`, which exists, does not declare the module (its module path
    /// is `mpath1`; `major_subdir`: the `vN` subdirectory was looked at too, and has none).
    fn wrong_module_path(
        &self,
        file1: &str,
        mpath1: &str,
        major_subdir: bool,
        version: &str,
        commit: &str,
    ) -> String {
        let suffix = if major_subdir {
            format!(" (and ...{}/go.mod does not exist)", self.path_major)
        } else {
            String::new()
        };
        if mpath1.is_empty() {
            return format!("{file1} is missing module path{suffix} at revision {commit}");
        }
        if !self.path_major.is_empty() {
            return format!(
                "{file1} has non-...{} module path {mpath1:?}{suffix} at revision {commit}",
                self.path_major
            );
        }
        if !module::split_path_version(mpath1).2 {
            return format!(
                "{file1} has malformed module path {mpath1:?}{suffix} at revision {commit}"
            );
        }
        format!(
            "{file1} has post-{} module path {mpath1:?}{suffix} at revision {commit}",
            semver::major(version)
        )
    }

    /// `.mod`: the go.mod at the version's module directory, unchanged, or `module <path>\n`.
    pub fn go_mod(&self, g: &dyn Git, version: &str) -> Result<Vec<u8>> {
        let commit = self.version_commit(g, version)?;
        let (dir, gomod) = self
            .find_dir_at(g, &commit, version)
            .map_err(|e| self.not_found(version, e))?;
        if let Some(m) = gomod {
            return Ok(m);
        }
        match g.read_file(&commit, &join(&dir, "go.mod"))? {
            Some(m) => Ok(m),
            None => Ok(format!("module {}\n", self.mod_path).into_bytes()),
        }
    }

    /// `.zip`: writes the module zip of `version` to `out` and returns its h1. The files are
    /// read twice (sizes and hashes first, so that a version that cannot be zipped fails
    /// before a byte is written), never held all at once.
    pub fn zip<W: std::io::Write>(
        &self,
        g: &dyn Git,
        version: &str,
        out: W,
    ) -> Result<(ZipSummary, W)> {
        self.zip_to(g, version, |_| Ok(out))
    }

    /// [`CodeRepo::zip`], opening the output only once the files are checked and hashed:
    /// `open` gets the h1 (a content-addressed destination can be named by it).
    pub fn zip_to<W: std::io::Write>(
        &self,
        g: &dyn Git,
        version: &str,
        open: impl FnOnce(&str) -> std::io::Result<W>,
    ) -> Result<(ZipSummary, W)> {
        let commit = self.version_commit(g, version)?;
        let (dir, _) = self
            .find_dir_at(g, &commit, version)
            .map_err(|e| self.not_found(version, e))?;
        let Some(listed) = g.list_files(&commit, &dir)? else {
            return Err(self.not_found(version, format!("no directory {dir} at {commit}")));
        };
        let attrs = self.attributes(g, &commit, &dir, &listed)?;
        let files = ZipFiles {
            g,
            attrs: &attrs,
            dir: &dir,
            files: with_root_license(g, &commit, &dir, listed)?,
        };
        // Pass 1: sizes and content hashes.
        let FirstPass {
            candidates,
            hashes,
            root_go_mod,
        } = self.size_and_hash(&files, version)?;
        let included = modzip::check_files(&candidates, root_go_mod.as_deref())
            .map_err(|e| self.not_found(version, e))?;
        let prefix = format!("{}@{version}/", self.mod_path);
        let mut named: Vec<(String, String)> = included
            .iter()
            .map(|&i| (format!("{prefix}{}", candidates[i].path), hashes[i].clone()))
            .collect();
        let h1 = modzip::hash1(&mut named).map_err(|e| self.not_found(version, e))?;
        // Pass 2: the zip.
        let out = open(&h1).map_err(ModError::Write)?;
        let out = files.write_zip(&included, &hashes, &prefix, out)?;
        Ok((
            ZipSummary {
                h1,
                files: included.len(),
                commit,
            },
            out,
        ))
    }

    /// The zip's first pass over the files. Fails on a file whose `.gitattributes` conversion
    /// is not supported.
    fn size_and_hash(&self, files: &ZipFiles<'_>, version: &str) -> Result<FirstPass> {
        let n_files = files.files.len();
        let mut candidates = Vec::with_capacity(n_files);
        let mut hashes = Vec::with_capacity(n_files);
        let mut root_go_mod = None;
        for (n, (f, extra)) in files.files.iter().enumerate() {
            files.prefetch(n, &mut (n..n_files));
            if !matches!(f.kind, Kind::Regular) {
                candidates.push(Candidate {
                    path: f.path.clone(),
                    kind: clone_kind(&f.kind),
                    size: 0,
                });
                hashes.push(String::new());
                continue;
            }
            if let Some(why) = extra
                .is_none()
                .then(|| files.attrs.unsupported(&join(files.dir, &f.path)))
                .flatten()
            {
                return Err(self.not_found(version, why));
            }
            let data = files.content(f, extra)?;
            if f.path == "go.mod" {
                root_go_mod = Some(data.clone());
            }
            candidates.push(Candidate {
                path: f.path.clone(),
                kind: Kind::Regular,
                size: data.len() as u64,
            });
            hashes.push(hex::encode(sha2::Sha256::digest(&data)));
        }
        Ok(FirstPass {
            candidates,
            hashes,
            root_go_mod,
        })
    }

    /// The `.gitattributes` files that apply to the module's files: those on the path from the
    /// repository root to the module directory, and those inside it.
    fn attributes(
        &self,
        g: &dyn Git,
        commit: &str,
        dir: &str,
        listed: &[TreeFile],
    ) -> Result<Attributes> {
        let mut files = Vec::new();
        // The directories above the module directory ("" for the root, then "a" for "a/b");
        // the module directory's own file is among the listed ones.
        if !dir.is_empty() {
            let parts: Vec<&str> = dir.split('/').collect();
            for i in 0..parts.len() {
                let at = parts[..i].join("/");
                if let Some(d) = g.read_file(commit, &join(&at, ".gitattributes"))? {
                    files.push((at, d));
                }
            }
        }
        for f in listed {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            // A symlinked .gitattributes counts too (git reads its target text).
            if name == ".gitattributes" && matches!(f.kind, Kind::Regular | Kind::Symlink) {
                let parent = f.path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                files.push((join(dir, parent), g.read_blob(&f.blob)?));
            }
        }
        Ok(Attributes::new(files))
    }
}

/// The module's directory in the repository and its go.mod, if any (`findDir`).
type ModuleDir = (String, Option<Vec<u8>>);

/// What the first pass of [`CodeRepo::zip_to`] learns of the files.
struct FirstPass {
    /// Every file as a candidate for the zip, with its size.
    candidates: Vec<Candidate>,
    /// The SHA-256 of each (hex; empty for a symlink).
    hashes: Vec<String>,
    /// The root's go.mod.
    root_go_mod: Option<Vec<u8>>,
}

/// A module's files at a commit, as they go into its zip ([`CodeRepo::zip_to`]).
struct ZipFiles<'a> {
    g: &'a dyn Git,
    /// The `.gitattributes` rules that apply.
    attrs: &'a Attributes,
    /// The module's directory in the repository.
    dir: &'a str,
    /// The listed files, each with its bytes when they are not its blob's (the root's LICENSE
    /// of a module below the root).
    files: Vec<(TreeFile, Option<Vec<u8>>)>,
}

/// The files listed in the module's directory, and the repository root's LICENSE when the
/// module is below the root and has none (the raw blob, as the go command adds it).
fn with_root_license(
    g: &dyn Git,
    commit: &str,
    dir: &str,
    listed: Vec<TreeFile>,
) -> Result<Vec<(TreeFile, Option<Vec<u8>>)>> {
    let mut files: Vec<(TreeFile, Option<Vec<u8>>)> =
        listed.into_iter().map(|f| (f, None)).collect();
    if !dir.is_empty()
        && !files.iter().any(|(f, _)| f.path == "LICENSE")
        && let Some(data) = g.read_file(commit, "LICENSE")?
    {
        let file = TreeFile {
            path: "LICENSE".into(),
            kind: Kind::Regular,
            blob: String::new(),
        };
        files.push((file, Some(data)));
    }
    Ok(files)
}

impl ZipFiles<'_> {
    /// A file's bytes as the zip holds them (after the `.gitattributes` conversions).
    fn content(&self, f: &TreeFile, extra: &Option<Vec<u8>>) -> Result<Vec<u8>> {
        if let Some(d) = extra {
            return Ok(d.clone());
        }
        let data = self.g.read_blob(&f.blob)?;
        Ok(
            match self.attrs.convert(&join(self.dir, &f.path), &f.blob, &data) {
                Some(c) => c,
                None => data,
            },
        )
    }

    /// At every [`PREFETCH_FILES`]th file read (`from`), load the blobs of the next files in
    /// `order` ahead.
    fn prefetch(&self, from: usize, order: &mut dyn Iterator<Item = usize>) {
        if from.is_multiple_of(PREFETCH_FILES) {
            let ids: Vec<&str> = order
                .take(PREFETCH_FILES)
                .filter_map(|i| self.files.get(i))
                .filter(|(f, extra)| extra.is_none() && !f.blob.is_empty())
                .map(|(f, _)| f.blob.as_str())
                .collect();
            self.g.prefetch_blobs(&ids);
        }
    }

    /// The zip's second pass: the `included` files, named below `prefix`, each read again and
    /// checked against its first-pass hash, written as a zip to `out`.
    fn write_zip<W: std::io::Write>(
        &self,
        included: &[usize],
        hashes: &[String],
        prefix: &str,
        out: W,
    ) -> Result<W> {
        let mut w = ZipWriter::new(out);
        for (n, &i) in included.iter().enumerate() {
            self.prefetch(n, &mut included[n..].iter().copied());
            let (f, extra) = &self.files[i];
            let data = self.content(f, extra)?;
            if hex::encode(sha2::Sha256::digest(&data)) != hashes[i] {
                return Err(ModError::Odb(OdbError::Corrupt(format!(
                    "{} changed between two reads",
                    f.path
                ))));
            }
            w.add(&format!("{prefix}{}", f.path), &data)
                .map_err(ModError::Write)?;
        }
        let (out, _) = w.finish().map_err(ModError::Write)?;
        Ok(out)
    }
}

fn clone_kind(k: &Kind) -> Kind {
    match k {
        Kind::Regular => Kind::Regular,
        Kind::Symlink => Kind::Symlink,
        Kind::Other => Kind::Other,
    }
}

/// `module.CanonicalVersion`: semver's canonical form, keeping `+incompatible`.
pub fn canonical_version(v: &str) -> String {
    let c = semver::canonical(v);
    if semver::build(v) == "+incompatible" {
        format!("{c}+incompatible")
    } else {
        c
    }
}

fn is_major(mpath: &str, path_major: &str) -> bool {
    if mpath.is_empty() {
        return false;
    }
    let (_, mpath_major, ok) = module::split_path_version(mpath);
    if !ok {
        return false;
    }
    if path_major.is_empty() {
        return matches!(
            module::path_major_prefix(&mpath_major).as_str(),
            "" | "v0" | "v1"
        );
    }
    if mpath_major.is_empty() {
        return false;
    }
    path_major[1..] == mpath_major[1..]
}

fn has_path_prefix(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn join(dir: &str, name: &str) -> String {
    match (dir.is_empty(), name.is_empty()) {
        (true, _) => name.to_string(),
        (_, true) => dir.to_string(),
        _ => format!("{dir}/{name}"),
    }
}
