//! `goprox gc --grace DURATION`: delete what no current ref index needs.
//!
//! Deleted, once older than the grace period:
//! * packs and indexes a ref index lists as `retired` (by the time they were retired), then
//!   the `retired` entries themselves (an `If-Match` replacement of the ref index; losing that
//!   race leaves them for the next run);
//! * pack and index objects no ref index names or retires (crash leftovers, or packs a refresh
//!   replaced), by their last-modified time, also for repositories with no ref index at all;
//!   the grace protects a fill in progress, which uploads packs before naming them;
//! * lease objects expired (or released) longer ago than the grace;
//! * scratch objects of the start-up probe, and incomplete multipart uploads (S3) or
//!   temporary files (local directory);
//! * module zips (`<root>/@mod/zip/`) that no ledger entry of the module front names (a
//!   build that lost a race, a version refused by the checksum database), by their
//!   last-modified time: the grace protects a build in progress, which stores the zip before
//!   it records it. A repository with an unreadable ledger entry keeps all its zips.
//!
//! Never deleted: anything the current ref index names. Deciding is a pure function
//! ([`plan_repo`]); before deleting a repository's objects gc takes the repository's lease
//! (skipping repositories another instance is working on), re-reads the ref index and plans
//! again, deletes only what both plans agree on, and finally removes its lease object.

use crate::refs::lease::{self, Acquire, LeaseRecord};
use crate::refs::{self, KeyKind, Keys, RefIndex, RefsError};
use crate::store::probe::PROBE_PREFIX;
use crate::store::{DynStore, ListEntry, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Time to live of gc's lease on a repository, renewed while it deletes (a gc killed mid-run
/// holds up the repository's refreshes for at most this long).
const GC_LEASE_TTL: Duration = Duration::from_secs(30);

/// Why an object is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reason {
    /// Listed in the ref index's `retired` since `at` (Unix seconds).
    Retired { at: u64 },
    /// Not named by the repository's ref index.
    Unreferenced,
    /// The repository has no ref index.
    NoRefIndex,
    /// A lease that expired (or was released) at `expired_at_ms`.
    ExpiredLease { expired_at_ms: u64 },
    /// A lease object that does not parse.
    UnreadableLease,
    /// A start-up probe's scratch object left by a crashed process.
    ProbeLeftover,
    /// A cached generated pack made from packs the repository no longer has.
    StaleCache,
    /// A module zip that no ledger entry names.
    UnrecordedZip,
    /// A zip build's lease left by a build that never finished (its holder died).
    StaleBuildLease,
    /// The record of a received fill that was published since, or never finished.
    ReceivedRecord,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Retired { at } => write!(f, "retired at {at}"),
            Reason::Unreferenced => f.write_str("not named by the ref index"),
            Reason::NoRefIndex => f.write_str("repository has no ref index"),
            Reason::ExpiredLease { expired_at_ms } => {
                write!(f, "lease expired at {}", expired_at_ms / 1000)
            }
            Reason::UnreadableLease => f.write_str("unreadable lease"),
            Reason::ProbeLeftover => f.write_str("probe leftover"),
            Reason::StaleCache => f.write_str("cached pack of an older pack set"),
            Reason::UnrecordedZip => f.write_str("module zip no ledger entry names"),
            Reason::StaleBuildLease => f.write_str("zip build lease of a build that never ended"),
            Reason::ReceivedRecord => f.write_str("received-fill record, published or abandoned"),
        }
    }
}

/// One object gc deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Deletion {
    /// The store key.
    pub(crate) key: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Why it goes.
    pub(crate) reason: Reason,
}

/// The state of a repository's ref index when planning.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IndexState<'a> {
    /// The repository has no ref index.
    Missing,
    /// Present but unreadable: nothing of the repository is touched.
    Corrupt,
    /// The ref index as read.
    Present(&'a RefIndex),
}

/// The state of a repository's lease object when planning.
#[derive(Debug, Clone, Copy)]
pub(crate) enum LeaseState<'a> {
    /// No lease object.
    Missing,
    /// A lease object that does not parse.
    Unreadable,
    /// The lease as read.
    Present(&'a LeaseRecord),
}

/// What gc will do to one repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RepoPlan {
    /// The repository's import path.
    pub(crate) root: String,
    /// Packs and indexes to delete.
    pub(crate) objects: Vec<Deletion>,
    /// The lease object, if it is to be deleted.
    pub(crate) lease: Option<Deletion>,
    /// Names to drop from the ref index's `retired` list (once their objects are gone).
    pub(crate) drop_retired: Vec<String>,
}

impl RepoPlan {
    /// Nothing to delete and nothing to drop.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.lease.is_none() && self.drop_retired.is_empty()
    }
}

/// `now - then`, zero when `then` is in the future.
fn age(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// Decide what to delete of repository `root`, given the listing of its keys (`entries`, other
/// keys are ignored), its ref index and lease, the time and the grace period.
// Long because it is a flat table of cases: one rule per kind of key (packs, lease, cached
// packs, received-fill records).
pub(crate) fn plan_repo(
    root: &str,
    entries: &[ListEntry],
    index: IndexState<'_>,
    lease: LeaseState<'_>,
    now: SystemTime,
    grace: Duration,
) -> RepoPlan {
    let mut plan = RepoPlan {
        root: root.to_string(),
        ..RepoPlan::default()
    };
    let old_enough = |then: SystemTime| age(now, then) >= grace;
    let current_fp = match index {
        IndexState::Present(idx) => Some(refs::packset_fingerprint(
            idx.packs.iter().map(|p| p.name.as_str()),
        )),
        _ => None,
    };
    let (named, retired): (BTreeSet<&str>, BTreeMap<&str, u64>) = match index {
        IndexState::Corrupt => return plan,
        IndexState::Missing => (BTreeSet::new(), BTreeMap::new()),
        IndexState::Present(idx) => (
            idx.packs.iter().map(|p| p.name.as_str()).collect(),
            idx.retired
                .iter()
                .map(|r| (r.name.as_str(), r.at))
                .collect(),
        ),
    };
    let retired_expired = |at: u64| old_enough(UNIX_EPOCH + Duration::from_secs(at));
    for e in entries {
        let Some((r, kind)) = refs::parse_key(&e.key) else {
            continue;
        };
        if r != root {
            continue;
        }
        let reason = match kind {
            KeyKind::Pack(name) | KeyKind::Idx(name) | KeyKind::Bitmap(name) => {
                if named.contains(name.as_str()) {
                    None
                } else if let Some(&at) = retired.get(name.as_str()) {
                    retired_expired(at).then_some(Reason::Retired { at })
                } else if !old_enough(e.modified) {
                    None
                } else if matches!(index, IndexState::Missing) {
                    Some(Reason::NoRefIndex)
                } else {
                    Some(Reason::Unreferenced)
                }
            }
            KeyKind::Lease => {
                let reason = match lease {
                    LeaseState::Present(rec) => {
                        let expired = UNIX_EPOCH + Duration::from_millis(rec.expires_at_ms);
                        (now >= expired && old_enough(expired)).then_some(Reason::ExpiredLease {
                            expired_at_ms: rec.expires_at_ms,
                        })
                    }
                    LeaseState::Unreadable => {
                        old_enough(e.modified).then_some(Reason::UnreadableLease)
                    }
                    // Appeared after we read the leases: leave it for the next run.
                    LeaseState::Missing => None,
                };
                if let Some(reason) = reason {
                    plan.lease = Some(Deletion {
                        key: e.key.clone(),
                        size: e.size,
                        reason,
                    });
                }
                None
            }
            KeyKind::PackCache(fp) => (current_fp.as_deref() != Some(fp.as_str())
                && old_enough(e.modified))
            .then_some(Reason::StaleCache),
            // Published (the ref index names its pack), or not adopted within the grace
            // (its pack goes the way of unreferenced packs).
            KeyKind::Received(name) => (named.contains(name.as_str()) || old_enough(e.modified))
                .then_some(Reason::ReceivedRecord),
            KeyKind::RefIndex | KeyKind::Other => None,
        };
        if let Some(reason) = reason {
            plan.objects.push(Deletion {
                key: e.key.clone(),
                size: e.size,
                reason,
            });
        }
    }
    if let IndexState::Present(idx) = index {
        plan.drop_retired = idx
            .retired
            .iter()
            .filter(|r| !named.contains(r.name.as_str()) && retired_expired(r.at))
            .map(|r| r.name.clone())
            .collect();
    }
    plan
}

/// Probe scratch objects older than the grace period.
pub(crate) fn plan_probe_leftovers(
    entries: &[ListEntry],
    now: SystemTime,
    grace: Duration,
) -> Vec<Deletion> {
    entries
        .iter()
        .filter(|e| e.key.starts_with(PROBE_PREFIX) && age(now, e.modified) >= grace)
        .map(|e| Deletion {
            key: e.key.clone(),
            size: e.size,
            reason: Reason::ProbeLeftover,
        })
        .collect()
}

/// Module zips of one repository (the listing of its `@mod/` keys) that none of the zip keys
/// its ledger entries name (`recorded`) refers to, older than the grace period; and zip build
/// leases not written for the grace period (a live build rewrites its lease every few
/// seconds, a finished one removes it).
pub(crate) fn plan_module_zips(
    entries: &[ListEntry],
    recorded: &BTreeSet<String>,
    now: SystemTime,
    grace: Duration,
) -> Vec<Deletion> {
    entries
        .iter()
        .filter(|e| {
            e.key.contains("/@mod/zip/")
                && e.key.ends_with(".zip")
                && !recorded.contains(&e.key)
                && age(now, e.modified) >= grace
        })
        .map(|e| Deletion {
            key: e.key.clone(),
            size: e.size,
            reason: Reason::UnrecordedZip,
        })
        .chain(
            entries
                .iter()
                .filter(|e| {
                    e.key.contains("/@mod/")
                        && e.key.ends_with(".zip.lease")
                        && age(now, e.modified) >= grace
                })
                .map(|e| Deletion {
                    key: e.key.clone(),
                    size: e.size,
                    reason: Reason::StaleBuildLease,
                }),
        )
        .collect()
}

/// The module zips of one repository that no ledger entry names, deleted.
async fn module_zips(
    store: &DynStore,
    root: &str,
    entries: &[ListEntry],
    grace: Duration,
    out: &mut (dyn FnMut(String) + Send),
    summary: &mut GcSummary,
) {
    use crate::modproxy::ledger::{ZipEntry, zip_key_in, zips_prefix};
    let zips = zips_prefix(root);
    let mut recorded = BTreeSet::new();
    for e in entries.iter().filter(|e| e.key.ends_with(".zip.json")) {
        let entry = match store.get(&e.key).await {
            Ok(Some(got)) => serde_json::from_slice::<ZipEntry>(&got.data),
            Ok(None) => continue, // gone meanwhile
            Err(err) => {
                summary.errors += 1;
                out(format!(
                    "error: reading {}: {err}; keeping {root}'s module zips",
                    e.key
                ));
                return;
            }
        };
        match entry {
            Ok(entry) => {
                recorded.insert(zip_key_in(&zips, &entry.h1));
            }
            Err(_) => {
                summary.skipped += 1;
                out(format!(
                    "skipped {root}'s module zips: unreadable ledger entry {}",
                    e.key
                ));
                return;
            }
        }
    }
    for d in plan_module_zips(entries, &recorded, SystemTime::now(), grace) {
        delete(store, &d, out, summary).await;
    }
}

/// Counts of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Repositories (roots with keys under `<root>/@git/`) looked at.
    pub repositories: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// Bytes of those objects.
    pub deleted_bytes: u64,
    /// Entries dropped from ref indexes' `retired` lists.
    pub retired_dropped: usize,
    /// Incomplete multipart uploads (or temporary files) removed.
    pub uploads_aborted: u32,
    /// Repositories (or their module zips) left alone: lease held elsewhere, ref index or
    /// ledger entry unreadable.
    pub skipped: usize,
    /// Store errors met (each also reported as an `error:` line).
    pub errors: usize,
}

/// Why gc could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// The store could not be listed.
    #[error("listing the store: {0}")]
    List(StoreError),
}

/// Everything gc reads about one repository before planning.
struct Loaded {
    index: Option<Result<(RefIndex, crate::store::ETag), String>>,
    lease: Option<Option<LeaseRecord>>,
}

async fn load_index(
    store: &DynStore,
    root: &str,
) -> Option<Result<(RefIndex, crate::store::ETag), String>> {
    match refs::load(store, &Keys::new(root)).await {
        Ok(None) => None,
        Ok(Some(x)) => Some(Ok(x)),
        Err(RefsError::Corrupt(k, e)) => Some(Err(format!("corrupt ref index {k}: {e}"))),
        Err(e @ (RefsError::Store(_) | RefsError::Contended(_))) => {
            Some(Err(format!("cannot read the ref index: {e}")))
        }
    }
}

fn index_state(loaded: &Option<Result<(RefIndex, crate::store::ETag), String>>) -> IndexState<'_> {
    match loaded {
        None => IndexState::Missing,
        Some(Err(_)) => IndexState::Corrupt,
        Some(Ok((idx, _))) => IndexState::Present(idx),
    }
}

fn lease_state(loaded: &Option<Option<LeaseRecord>>) -> LeaseState<'_> {
    match loaded {
        None => LeaseState::Missing,
        Some(None) => LeaseState::Unreadable,
        Some(Some(rec)) => LeaseState::Present(rec),
    }
}

async fn load_lease(
    store: &DynStore,
    key: &str,
) -> Result<Option<Option<LeaseRecord>>, StoreError> {
    Ok(store.get(key).await?.map(|got| lease::decode(&got.data)))
}

/// Run gc over the whole store with grace period `grace`; `out` receives one line per
/// deletion, skip or error. `holder` names this process in the leases it takes.
pub async fn run(
    store: &DynStore,
    grace: Duration,
    holder: &str,
    out: &mut (dyn FnMut(String) + Send),
) -> Result<GcSummary, GcError> {
    let mut summary = GcSummary::default();
    let entries = store.list_meta("").await.map_err(GcError::List)?;
    let mut by_root: BTreeMap<String, Vec<ListEntry>> = BTreeMap::new();
    let mut mods: BTreeMap<String, Vec<ListEntry>> = BTreeMap::new();
    for e in &entries {
        if let Some((root, _)) = refs::parse_key(&e.key) {
            by_root.entry(root.to_string()).or_default().push(e.clone());
        } else if let Some((root, _)) = e.key.split_once("/@mod/") {
            mods.entry(root.to_string()).or_default().push(e.clone());
        }
    }
    for (root, entries) in &by_root {
        summary.repositories += 1;
        repo(store, root, entries, grace, holder, out, &mut summary).await;
    }
    for (root, entries) in &mods {
        module_zips(store, root, entries, grace, out, &mut summary).await;
    }
    // The catalog (what the status page and the hooks read) made to agree with the ref
    // indexes as they are now.
    let mut indexes = Vec::new();
    for root in by_root.keys() {
        if let Some(Ok((idx, _))) = load_index(store, root).await {
            indexes.push(idx);
        }
    }
    // Module versions recorded, and their zips' bytes, per repository.
    let mut zips: std::collections::HashMap<String, (u32, u64)> = Default::default();
    for (root, entries) in &mods {
        let z = zips.entry(root.clone()).or_default();
        for e in entries {
            if e.key.ends_with(".zip.json") {
                z.0 += 1;
            } else if e.key.ends_with(".zip") && e.key.contains("/@mod/zip/") {
                z.1 += e.size;
            }
        }
    }
    let noted: Vec<_> = indexes.iter().map(RefIndex::noted).collect();
    match crate::refs::catalog::reconcile(store, &noted, &zips, |root| Keys::new(root).ref_index())
        .await
    {
        Ok((0, 0)) => {}
        Ok((set, removed)) => out(format!(
            "catalog: {set} entries brought up to date, {removed} removed"
        )),
        Err(e) => {
            summary.errors += 1;
            out(format!("error: updating the catalog: {e}"));
        }
    }
    let now = SystemTime::now();
    for d in plan_probe_leftovers(&entries, now, grace) {
        delete(store, &d, out, &mut summary).await;
    }
    match store
        .abort_stale_uploads(now.checked_sub(grace).unwrap_or(UNIX_EPOCH))
        .await
    {
        Ok(n) => {
            if n > 0 {
                out(format!(
                    "aborted {n} incomplete uploads older than the grace period"
                ));
            }
            summary.uploads_aborted = n;
        }
        Err(e) => {
            summary.errors += 1;
            out(format!("error: aborting incomplete uploads: {e}"));
        }
    }
    Ok(summary)
}

async fn delete(
    store: &DynStore,
    d: &Deletion,
    out: &mut (dyn FnMut(String) + Send),
    summary: &mut GcSummary,
) -> bool {
    match store.delete(&d.key).await {
        Ok(()) => {
            summary.deleted += 1;
            summary.deleted_bytes += d.size;
            out(format!(
                "deleted {} ({}, {} bytes)",
                d.key, d.reason, d.size
            ));
            true
        }
        Err(e) => {
            summary.errors += 1;
            out(format!("error: deleting {}: {e}", d.key));
            false
        }
    }
}

async fn load(store: &DynStore, root: &str) -> Result<Loaded, StoreError> {
    Ok(Loaded {
        index: load_index(store, root).await,
        lease: load_lease(store, &Keys::new(root).lease()).await?,
    })
}

// Long because it is one repository's gc in order (plan, lease, plan again, delete, drop
// retired names, remove the lease), each step deciding whether the next runs.
async fn repo(
    store: &DynStore,
    root: &str,
    entries: &[ListEntry],
    grace: Duration,
    holder: &str,
    out: &mut (dyn FnMut(String) + Send),
    summary: &mut GcSummary,
) {
    let keys = Keys::new(root);
    let first = match load(store, root).await {
        Ok(l) => l,
        Err(e) => {
            summary.errors += 1;
            out(format!("error: {root}: reading the lease: {e}"));
            return;
        }
    };
    if let Some(Err(e)) = &first.index {
        summary.skipped += 1;
        out(format!("skipped {root}: {e}"));
        return;
    }
    let plan = plan_repo(
        root,
        entries,
        index_state(&first.index),
        lease_state(&first.lease),
        SystemTime::now(),
        grace,
    );
    if plan.objects.is_empty() && plan.drop_retired.is_empty() {
        if let Some(d) = &plan.lease {
            // Re-check right before deleting: a lease taken over meanwhile is kept.
            let again = load_lease(store, &keys.lease()).await;
            let still = match &again {
                Ok(l) => {
                    let p = plan_repo(
                        root,
                        entries,
                        index_state(&first.index),
                        lease_state(l),
                        SystemTime::now(),
                        grace,
                    );
                    p.lease.is_some()
                }
                Err(_) => false,
            };
            if still {
                delete(store, d, out, summary).await;
            }
        }
        return;
    }
    // Work on the repository's packs: exclude refreshes and compactions of other instances.
    let held = match lease::try_acquire(store, &keys.lease(), holder, GC_LEASE_TTL).await {
        Ok(Acquire::Acquired(l)) => lease::spawn_renewal(store.clone(), l, GC_LEASE_TTL),
        Ok(Acquire::Held { holder, .. }) => {
            summary.skipped += 1;
            out(format!("skipped {root}: its lease is held by {holder:?}"));
            return;
        }
        Err(e) => {
            summary.errors += 1;
            out(format!("error: {root}: taking the lease: {e}"));
            return;
        }
    };
    // Re-read the ref index and plan again: delete only what both plans agree on.
    let fresh = load_index(store, root).await;
    let ok = match &fresh {
        Some(Err(e)) => {
            summary.skipped += 1;
            out(format!("skipped {root}: {e}"));
            false
        }
        _ => true,
    };
    if ok {
        let second = plan_repo(
            root,
            entries,
            index_state(&fresh),
            LeaseState::Missing,
            SystemTime::now(),
            grace,
        );
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for d in plan.objects.iter().filter(|d| second.objects.contains(*d)) {
            if !delete(store, d, out, summary).await
                && let Some((_, KeyKind::Pack(n) | KeyKind::Idx(n))) = refs::parse_key(&d.key)
            {
                failed.insert(n);
            }
        }
        let drop: Vec<String> = second
            .drop_retired
            .iter()
            .filter(|n| plan.drop_retired.contains(*n) && !failed.contains(*n))
            .cloned()
            .collect();
        if let (false, Some(Ok((idx, etag)))) = (drop.is_empty(), &fresh) {
            let seen = Some((idx.clone(), etag.clone()));
            let dropped = refs::update(store, &keys, seen, |now| match now {
                // Only from the index both plans were made from.
                Some(now) if now.generation == idx.generation => {
                    let mut next = now.clone();
                    next.retired.retain(|r| !drop.contains(&r.name));
                    refs::Change::Write(next)
                }
                _ => refs::Change::Keep,
            })
            .await;
            match dropped {
                Ok(refs::Updated::Written(..)) => {
                    summary.retired_dropped += drop.len();
                    out(format!(
                        "{root}: dropped {} retired packs from the ref index",
                        drop.len()
                    ));
                }
                Ok(refs::Updated::Kept(_)) => out(format!(
                    "{root}: ref index changed meanwhile; its retired list is left for the next run"
                )),
                Err(e) => {
                    summary.errors += 1;
                    out(format!("error: {root}: updating the ref index: {e}"));
                }
            }
        }
    }
    // Remove (rather than release) the lease: gc leaves no lease objects behind.
    let removed = match held.stop().await {
        Some(l) => l.remove(store, GC_LEASE_TTL).await,
        None => Ok(false),
    };
    match removed {
        Ok(true) => {}
        Ok(false) => out(format!(
            "{root}: gc's lease was taken over before it finished (renewals failed for {} s)",
            GC_LEASE_TTL.as_secs()
        )),
        Err(e) => {
            summary.errors += 1;
            out(format!("error: {root}: removing the lease: {e}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::{PackEntry, Retired};

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const C: &str = "cccccccccccccccccccccccccccccccccccccccc";
    const ROOT: &str = "example.com/r";
    const HOUR: Duration = Duration::from_secs(3600);

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn entry(key: String, modified: u64) -> ListEntry {
        ListEntry {
            key,
            size: 10,
            modified: t(modified),
        }
    }

    fn index(packs: &[&str], retired: &[(&str, u64)]) -> RefIndex {
        RefIndex {
            version: refs::FORMAT_VERSION,
            generation: 1,
            root: ROOT.into(),
            upstream: "http://127.0.0.1/r".into(),
            subdir: String::new(),
            fetched_at: 0,
            head_symref: None,
            head_oid: None,
            refs: BTreeMap::new(),
            packs: packs
                .iter()
                .map(|n| PackEntry {
                    checksum: None,
                    name: n.to_string(),
                    size: 10,
                    objects: 1,
                    walk_end: None,
                    bitmap: false,
                })
                .collect(),
            retired: retired
                .iter()
                .map(|(n, at)| Retired {
                    name: n.to_string(),
                    at: *at,
                })
                .collect(),
            closed: false,
        }
    }

    /// pack + idx of each name, all written at `modified`, plus the ref index.
    fn listing(names: &[&str], modified: u64) -> Vec<ListEntry> {
        let k = Keys::new(ROOT);
        let mut v = vec![entry(k.ref_index(), modified)];
        for n in names {
            v.push(entry(k.pack(n), modified));
            v.push(entry(k.idx(n), modified));
        }
        v
    }

    fn deleted(plan: &RepoPlan) -> Vec<(String, Reason)> {
        plan.objects
            .iter()
            .map(|d| (d.key.clone(), d.reason.clone()))
            .collect()
    }

    #[test]
    fn named_packs_are_never_deleted() {
        let idx = index(&[A, B], &[]);
        // Even ancient, even with a zero grace period.
        let plan = plan_repo(
            ROOT,
            &listing(&[A, B], 0),
            IndexState::Present(&idx),
            LeaseState::Missing,
            t(1_000_000),
            Duration::ZERO,
        );
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn stray_packs_go_after_the_grace_period() {
        let k = Keys::new(ROOT);
        let idx = index(&[A], &[]);
        let mut entries = listing(&[A], 0);
        entries.push(entry(k.pack(B), 10_000));
        entries.push(entry(k.idx(B), 10_000));
        let at = |now| {
            plan_repo(
                ROOT,
                &entries,
                IndexState::Present(&idx),
                LeaseState::Missing,
                t(now),
                HOUR,
            )
        };
        assert!(at(10_000).is_empty());
        assert!(at(10_000 + 3599).is_empty());
        assert_eq!(
            deleted(&at(10_000 + 3600)),
            vec![
                (k.pack(B), Reason::Unreferenced),
                (k.idx(B), Reason::Unreferenced)
            ]
        );
        // A clock behind the store's: the object looks brand new, it is kept.
        assert!(at(5_000).is_empty());
    }

    #[test]
    fn cached_packs_of_an_older_pack_set_go_after_the_grace_period() {
        let k = Keys::new(ROOT);
        let idx = index(&[A, B], &[]);
        let current = refs::packset_fingerprint([A, B]);
        let older = refs::packset_fingerprint([A]);
        let mut entries = listing(&[A, B], 0);
        entries.push(entry(k.pack_cache(&current, &"1".repeat(64)), 10_000));
        entries.push(entry(k.pack_cache(&older, &"2".repeat(64)), 10_000));
        let at = |now| {
            plan_repo(
                ROOT,
                &entries,
                IndexState::Present(&idx),
                LeaseState::Missing,
                t(now),
                HOUR,
            )
        };
        assert!(at(10_000 + 3599).is_empty());
        assert_eq!(
            deleted(&at(1_000_000)),
            vec![(k.pack_cache(&older, &"2".repeat(64)), Reason::StaleCache)]
        );
    }

    #[test]
    fn retired_packs_go_by_retirement_time_not_mtime() {
        let k = Keys::new(ROOT);
        // B was written long ago but retired only at 50_000.
        let idx = index(&[A], &[(B, 50_000), (C, 1_000)]);
        let entries = listing(&[A, B], 0);
        let plan = |now| {
            plan_repo(
                ROOT,
                &entries,
                IndexState::Present(&idx),
                LeaseState::Missing,
                t(now),
                HOUR,
            )
        };
        let early = plan(50_000 + 60);
        assert!(early.objects.is_empty(), "{early:?}");
        // C's objects are already gone: its entry can go.
        assert_eq!(early.drop_retired, vec![C.to_string()]);
        let late = plan(50_000 + 3600);
        assert_eq!(
            deleted(&late),
            vec![
                (k.pack(B), Reason::Retired { at: 50_000 }),
                (k.idx(B), Reason::Retired { at: 50_000 })
            ]
        );
        assert_eq!(late.drop_retired, vec![B.to_string(), C.to_string()]);
    }

    #[test]
    fn a_pack_both_named_and_retired_is_kept() {
        let idx = index(&[A], &[(A, 0)]);
        let plan = plan_repo(
            ROOT,
            &listing(&[A], 0),
            IndexState::Present(&idx),
            LeaseState::Missing,
            t(1_000_000),
            Duration::ZERO,
        );
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn repositories_without_ref_index_and_corrupt_ones() {
        let k = Keys::new(ROOT);
        let entries: Vec<ListEntry> = listing(&[A], 100).into_iter().skip(1).collect();
        let plan = |index, now| plan_repo(ROOT, &entries, index, LeaseState::Missing, t(now), HOUR);
        assert!(plan(IndexState::Missing, 100 + 3599).is_empty());
        assert_eq!(
            deleted(&plan(IndexState::Missing, 100 + 3600)),
            vec![
                (k.pack(A), Reason::NoRefIndex),
                (k.idx(A), Reason::NoRefIndex)
            ]
        );
        // An unreadable ref index might name anything: touch nothing.
        assert!(plan(IndexState::Corrupt, 1_000_000).is_empty());
    }

    #[test]
    fn leases_go_when_expired_longer_than_grace() {
        let k = Keys::new(ROOT);
        let idx = index(&[A], &[]);
        let mut entries = listing(&[A], 0);
        entries.push(entry(k.lease(), 0));
        let rec = LeaseRecord {
            holder: "x".into(),
            expires_at_ms: 10_000_000,
            generation: 1,
            nonce: "n".into(),
            released: false,
        };
        let plan = |lease, now| {
            plan_repo(
                ROOT,
                &entries,
                IndexState::Present(&idx),
                lease,
                t(now),
                HOUR,
            )
            .lease
        };
        assert_eq!(plan(LeaseState::Present(&rec), 9_000), None);
        assert_eq!(plan(LeaseState::Present(&rec), 10_000 + 3599), None);
        assert_eq!(
            plan(LeaseState::Present(&rec), 10_000 + 3600).map(|d| d.reason),
            Some(Reason::ExpiredLease {
                expired_at_ms: 10_000_000
            })
        );
        assert_eq!(
            plan(LeaseState::Unreadable, 3600).map(|d| d.reason),
            Some(Reason::UnreadableLease)
        );
        assert_eq!(plan(LeaseState::Missing, 1_000_000), None);
    }

    #[test]
    fn other_repositories_and_unknown_keys_are_ignored() {
        let idx = index(&[], &[]);
        let entries = vec![
            entry(Keys::new("example.com/other").pack(A), 0),
            entry(format!("{ROOT}/@git/packs/notes.txt"), 0),
            entry(format!("{ROOT}/@git/something-else"), 0),
            entry(".goprox/probe/abc".into(), 0),
        ];
        let plan = plan_repo(
            ROOT,
            &entries,
            IndexState::Present(&idx),
            LeaseState::Missing,
            t(1_000_000),
            Duration::ZERO,
        );
        assert!(plan.is_empty(), "{plan:?}");
        let probes = plan_probe_leftovers(&entries, t(3600), HOUR);
        assert_eq!(probes.len(), 1);
        assert_eq!(probes[0].key, ".goprox/probe/abc");
        assert!(plan_probe_leftovers(&entries, t(3599), HOUR).is_empty());
    }

    #[test]
    fn module_zips_no_ledger_entry_names_go_after_the_grace() {
        use crate::modproxy::ledger::{zip_key_in, zips_prefix};
        let zips = zips_prefix(ROOT);
        let named = zip_key_in(&zips, "h1:named");
        let orphan = zip_key_in(&zips, "h1:orphan");
        let young = zip_key_in(&zips, "h1:young");
        let entries = vec![
            entry(format!("{ROOT}/@mod/{ROOT}/@v/v1.0.0.zip.json"), 0),
            entry(format!("{ROOT}/@mod/{ROOT}/@v/v1.0.0.mod"), 0),
            entry(named.clone(), 0),
            entry(orphan.clone(), 0),
            entry(young.clone(), 3000),
            entry(format!("{ROOT}/@mod/{ROOT}/@v/v1.0.1.zip.lease"), 0),
            entry(format!("{ROOT}/@mod/{ROOT}/@v/v1.0.2.zip.lease"), 3000),
        ];
        let recorded: BTreeSet<String> = [named].into();
        let plan = plan_module_zips(&entries, &recorded, t(3600), HOUR);
        let stale = format!("{ROOT}/@mod/{ROOT}/@v/v1.0.1.zip.lease");
        assert_eq!(
            plan.iter()
                .map(|d| (d.key.as_str(), &d.reason))
                .collect::<Vec<_>>(),
            [
                (orphan.as_str(), &Reason::UnrecordedZip),
                (stale.as_str(), &Reason::StaleBuildLease)
            ]
        );
    }

    #[tokio::test]
    async fn run_on_a_memory_store() {
        use crate::store::PutMode;
        use crate::store::memory::MemoryStore;
        use bytes::Bytes;
        use std::sync::Arc;
        let mem = Arc::new(MemoryStore::new());
        let store: DynStore = mem.clone();
        let k = Keys::new(ROOT);
        let put = |key: String| {
            let store = store.clone();
            async move {
                store
                    .put(&key, Bytes::from_static(b"0123456789"), PutMode::CreateOnly)
                    .await
                    .unwrap();
            }
        };
        for n in [A, B, C] {
            put(k.pack(n)).await;
            put(k.idx(n)).await;
        }
        // A named, B retired two hours ago, C a fresh stray.
        let two_hours_ago = SystemTime::now() - 2 * HOUR;
        let at = two_hours_ago.duration_since(UNIX_EPOCH).unwrap().as_secs();
        let idx = index(&[A], &[(B, at)]);
        refs::store(&store, &k, &idx, None).await.unwrap();
        // An old stray in a repository without a ref index.
        let orphan = Keys::new("example.com/orphan");
        put(orphan.pack(A)).await;
        assert!(mem.set_modified(&orphan.pack(A), two_hours_ago));

        let mut lines = Vec::new();
        let s = run(&store, HOUR, "gc-test", &mut |l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(s.deleted, 3, "{lines:#?}");
        assert_eq!(s.retired_dropped, 1);
        assert_eq!(s.errors, 0);
        // No lease objects are left behind either.
        let (left, catalog): (Vec<String>, Vec<String>) = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .partition(|k| !k.starts_with(crate::refs::catalog::PREFIX));
        let mut want = vec![k.ref_index(), k.pack(A), k.idx(A), k.pack(C), k.idx(C)];
        want.sort();
        assert_eq!(left, want, "{lines:#?}");
        assert_eq!(catalog.len(), 1, "one catalog shard: {catalog:?}");
        let (after, _) = refs::load(&store, &k).await.unwrap().unwrap();
        // The catalog agrees with the ref index gc left.
        let cat = crate::refs::catalog::Catalog::new(store.clone(), Duration::ZERO);
        let entry = cat.get(&after.root).await.unwrap().expect("catalogued");
        assert_eq!(entry.generation, after.generation);
        assert!(cat.get("example.com/orphan").await.unwrap().is_none());
        assert!(after.retired.is_empty());
        assert_eq!(after.packs, idx.packs);
        assert_eq!(after.generation, 2);
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("deleted {}", k.pack(B))))
        );

        // With no grace period the fresh stray goes too; A stays.
        let mut lines = Vec::new();
        run(&store, Duration::ZERO, "gc-test", &mut |l| lines.push(l))
            .await
            .unwrap();
        let mut want = vec![k.ref_index(), k.pack(A), k.idx(A)];
        want.sort();
        let left: Vec<String> = store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .filter(|k| !k.starts_with(crate::refs::catalog::PREFIX))
            .collect();
        assert_eq!(left, want, "{lines:#?}");
    }

    #[tokio::test]
    async fn a_held_lease_makes_gc_skip_the_repository() {
        use crate::store::PutMode;
        use crate::store::memory::MemoryStore;
        use bytes::Bytes;
        use std::sync::Arc;
        let store: DynStore = Arc::new(MemoryStore::new());
        let k = Keys::new(ROOT);
        store
            .put(&k.pack(B), Bytes::from_static(b"x"), PutMode::CreateOnly)
            .await
            .unwrap();
        refs::store(&store, &k, &index(&[], &[]), None)
            .await
            .unwrap();
        let _busy = lease::try_acquire(&store, &k.lease(), "filler", HOUR)
            .await
            .unwrap();
        let mut lines = Vec::new();
        let s = run(&store, Duration::ZERO, "gc-test", &mut |l| lines.push(l))
            .await
            .unwrap();
        assert_eq!(s.deleted, 0);
        assert_eq!(s.skipped, 1);
        assert!(lines.iter().any(|l| l.contains("filler")), "{lines:?}");
        assert!(store.head(&k.pack(B)).await.unwrap().is_some());
    }
}
