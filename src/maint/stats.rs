//! `goprox stats [ROOT...]`: what the store holds, per repository and in total.
//!
//! Everything comes from one listing (sizes of the index objects and of everything else under
//! the repository's keys, the module front's ledger entries and zips), the ref index (refs, packs with their sizes and object counts,
//! retired packs, `closed`, the last fetch) and, where one exists, the lease object. Nothing is
//! written and no pack is read.

use crate::refs::lease;
use crate::refs::{self, Keys, RefsError};
use crate::store::{DynStore, ListEntry, StoreError};
use serde::Serialize;
use std::collections::BTreeMap;

/// One repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepoStats {
    /// Import-path root.
    pub root: String,
    /// Where it is fetched from (from the ref index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Refs in the ref index (HEAD not counted).
    pub refs: usize,
    /// Packs the ref index names.
    pub packs: usize,
    /// Their total size, as recorded in the ref index.
    pub pack_bytes: u64,
    /// Total size of their `.idx` objects (from the listing).
    pub idx_bytes: u64,
    /// Objects in the packs (the sum of the recorded counts, which `goprox fsck` checks against
    /// every pack header and index).
    pub objects: u64,
    /// Packs merged away by compaction and waiting for `goprox gc`.
    pub retired: usize,
    /// Every object under the repository's keys: named, retired and unreferenced packs and
    /// indexes, the ref index and the lease, and the module front's records and zips.
    pub stored_bytes: u64,
    /// Ref index generation (incremented on every replacement).
    pub generation: u64,
    /// Unix seconds of the last fill or refresh that changed the ref index (a refresh that
    /// finds upstream unchanged writes nothing).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<u64>,
    /// The packs hold exactly what the refs reach (whole-pack clones).
    pub closed: bool,
    /// Another process is working on the repository (its lease has not expired or been released).
    pub lease_held: bool,
    /// The holder named in the lease object, while it is held.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    /// Unix milliseconds at which the held lease expires unless renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_ms: Option<u64>,
    /// Module versions whose zip the module front has recorded (ledger entries).
    pub module_versions: usize,
    /// Module zips stored (`@mod/zip/`).
    pub module_zips: usize,
    /// Total size of those zips, in bytes.
    pub module_zip_bytes: u64,
    /// Why the numbers above are missing (no, unreadable or corrupt ref index).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The sums over all repositories (each field sums the [`RepoStats`] field of that name).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Repositories reported.
    pub repositories: usize,
    /// Refs.
    pub refs: usize,
    /// Packs named by ref indexes.
    pub packs: usize,
    /// Bytes of those packs.
    pub pack_bytes: u64,
    /// Bytes of their `.idx` objects.
    pub idx_bytes: u64,
    /// Objects in those packs.
    pub objects: u64,
    /// Retired packs waiting for `goprox gc`.
    pub retired: usize,
    /// Bytes of everything stored under the repositories' keys.
    pub stored_bytes: u64,
    /// Repositories that are `closed`.
    pub closed: usize,
    /// Repositories whose lease is held.
    pub leases_held: usize,
    /// Repositories with an `error`.
    pub errors: usize,
    /// Module versions with a recorded zip.
    pub module_versions: usize,
    /// Module zips stored.
    pub module_zips: usize,
    /// Bytes of those zips.
    pub module_zip_bytes: u64,
}

/// What `goprox stats` prints (as a table, or as JSON with `--json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatsReport {
    /// One entry per repository.
    pub repositories: Vec<RepoStats>,
    /// The sums.
    pub total: Totals,
}

/// Statistics of the named roots, or of every repository with a ref index when `roots` is
/// empty. Fails only when the store cannot be listed; a problem with one repository is its
/// `error`.
pub async fn collect(store: &DynStore, roots: &[String]) -> Result<StatsReport, StoreError> {
    let mut listed: BTreeMap<String, Vec<ListEntry>> = BTreeMap::new();
    // The module front's keys of each repository (`<root>/@mod/...`).
    let mut modules: BTreeMap<String, Vec<ListEntry>> = BTreeMap::new();
    let roots: Vec<String> = if roots.is_empty() {
        // One listing of the whole store; the repositories are the roots with a ref index.
        let mut with_index = Vec::new();
        for e in store.list_meta("").await? {
            if let Some((root, kind)) = refs::parse_key(&e.key) {
                if kind == refs::KeyKind::RefIndex {
                    with_index.push(root.to_string());
                }
                listed.entry(root.to_string()).or_default().push(e);
            } else if let Some((root, _)) = e.key.split_once(MOD_DIR) {
                modules.entry(root.to_string()).or_default().push(e);
            }
        }
        with_index.sort();
        with_index.dedup();
        with_index
    } else {
        let mut out = Vec::new();
        for r in roots {
            let root = r.trim_matches('/').to_string();
            if crate::path::validate(&root).is_ok() && !listed.contains_key(&root) {
                let entries = store.list_meta(&format!("{root}{}", refs::GIT_DIR)).await?;
                listed.insert(root.clone(), entries);
                let entries = store.list_meta(&format!("{root}{MOD_DIR}")).await?;
                modules.insert(root.clone(), entries);
            }
            out.push(root);
        }
        out
    };
    let mut report = StatsReport::default();
    let empty = Vec::new();
    for root in roots {
        let entries = listed.get(&root).unwrap_or(&empty);
        let mut s = repo_stats(store, &root, entries).await;
        module_stats(&mut s, modules.get(&root).unwrap_or(&empty));
        let t = &mut report.total;
        t.repositories += 1;
        t.refs += s.refs;
        t.packs += s.packs;
        t.pack_bytes += s.pack_bytes;
        t.idx_bytes += s.idx_bytes;
        t.objects += s.objects;
        t.retired += s.retired;
        t.stored_bytes += s.stored_bytes;
        t.closed += usize::from(s.closed);
        t.leases_held += usize::from(s.lease_held);
        t.errors += usize::from(s.error.is_some());
        t.module_versions += s.module_versions;
        t.module_zips += s.module_zips;
        t.module_zip_bytes += s.module_zip_bytes;
        report.repositories.push(s);
    }
    Ok(report)
}

/// Where a repository's module-front keys start (see `modproxy::ledger`).
const MOD_DIR: &str = "/@mod/";

/// The module front's records of one repository, from the listing of its `@mod/` keys.
fn module_stats(s: &mut RepoStats, entries: &[ListEntry]) {
    for e in entries {
        if e.key.ends_with(".zip.json") {
            s.module_versions += 1;
        } else if e.key.contains("/@mod/zip/") && e.key.ends_with(".zip") {
            s.module_zips += 1;
            s.module_zip_bytes += e.size;
        }
        s.stored_bytes += e.size;
    }
}

/// One repository, given the listing of its keys.
async fn repo_stats(store: &DynStore, root: &str, entries: &[ListEntry]) -> RepoStats {
    let mut s = RepoStats {
        root: root.to_string(),
        ..RepoStats::default()
    };
    if let Err(e) = crate::path::validate(root) {
        s.error = Some(e.to_string());
        return s;
    }
    let keys = Keys::new(root);
    let sizes: BTreeMap<&str, u64> = entries.iter().map(|e| (e.key.as_str(), e.size)).collect();
    s.stored_bytes = sizes.values().sum();
    match refs::load(store, &keys).await {
        Ok(Some((idx, _))) => {
            s.upstream = Some(idx.upstream.clone());
            s.refs = idx.refs.len();
            s.packs = idx.packs.len();
            for p in &idx.packs {
                s.pack_bytes += p.size;
                s.objects += u64::from(p.objects);
                s.idx_bytes += sizes.get(keys.idx(&p.name).as_str()).copied().unwrap_or(0);
            }
            s.retired = idx.retired.len();
            s.generation = idx.generation;
            s.fetched_at = Some(idx.fetched_at);
            s.closed = idx.closed;
        }
        Ok(None) => s.error = Some(format!("no ref index ({})", keys.ref_index())),
        Err(RefsError::Corrupt(_, e)) => s.error = Some(format!("corrupt ref index: {e}")),
        Err(e @ (RefsError::Store(_) | RefsError::Contended(_))) => {
            s.error = Some(format!("cannot read the ref index: {e}"))
        }
    }
    if sizes.contains_key(keys.lease().as_str()) {
        match store.get(&keys.lease()).await {
            Ok(Some(got)) => {
                if let Some(rec) = lease::decode(&got.data)
                    && !rec.takeable(lease::now_ms())
                {
                    s.lease_held = true;
                    s.lease_holder = Some(rec.holder);
                    s.lease_expires_at_ms = Some(rec.expires_at_ms);
                }
            }
            Ok(None) => {}
            Err(e) => {
                s.error.get_or_insert(format!("cannot read the lease: {e}"));
            }
        }
    }
    s
}

/// `YYYY-MM-DD HH:MM:SSZ` of Unix seconds (UTC, proleptic Gregorian calendar).
pub fn utc(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date: count in 400-year eras starting on 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Bytes for people: `512 B`, `1.5 KiB`, `23.0 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// The report as a table, one line per repository and a total line.
// Long because it is a flat table: one cell per column for error rows, repository rows and
// the total line, then the column alignment.
pub fn table(report: &StatsReport) -> String {
    let header = [
        "ROOT",
        "REFS",
        "PACKS",
        "OBJECTS",
        "PACKS+IDX",
        "STORED",
        "MODULES",
        "ZIPS",
        "RETIRED",
        "CLOSED",
        "LEASE",
        "FETCHED",
    ];
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    for s in &report.repositories {
        if let Some(e) = &s.error {
            rows.push(vec![
                s.root.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                bytes(s.stored_bytes),
                s.module_versions.to_string(),
                bytes(s.module_zip_bytes),
                "-".into(),
                "-".into(),
                if s.lease_held { "held" } else { "-" }.into(),
                format!("error: {e}"),
            ]);
            continue;
        }
        rows.push(vec![
            s.root.clone(),
            s.refs.to_string(),
            s.packs.to_string(),
            s.objects.to_string(),
            bytes(s.pack_bytes + s.idx_bytes),
            bytes(s.stored_bytes),
            s.module_versions.to_string(),
            bytes(s.module_zip_bytes),
            s.retired.to_string(),
            if s.closed { "yes" } else { "no" }.into(),
            match &s.lease_holder {
                Some(h) if s.lease_held => format!("held by {h}"),
                _ => "-".into(),
            },
            s.fetched_at.map(utc).unwrap_or_else(|| "-".into()),
        ]);
    }
    let t = &report.total;
    rows.push(vec![
        format!("total ({} repositories)", t.repositories),
        t.refs.to_string(),
        t.packs.to_string(),
        t.objects.to_string(),
        bytes(t.pack_bytes + t.idx_bytes),
        bytes(t.stored_bytes),
        t.module_versions.to_string(),
        bytes(t.module_zip_bytes),
        t.retired.to_string(),
        t.closed.to_string(),
        format!("{} held", t.leases_held),
        if t.errors > 0 {
            format!("{} errors", t.errors)
        } else {
            String::new()
        },
    ]);
    let mut widths = vec![0; header.len()];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(&widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            // Names and free text left-aligned, numbers right-aligned.
            if i == 0 || i >= 9 {
                line.push_str(&format!("{c:<w$}"));
            } else {
                line.push_str(&format!("{c:>w$}"));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refs::{FORMAT_VERSION, PackEntry, RefEntry, RefIndex, Retired};
    use crate::store::PutMode;
    use crate::store::memory::MemoryStore;
    use bytes::Bytes;
    use std::sync::Arc;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    async fn put(store: &DynStore, key: &str, len: usize) {
        store
            .put(key, Bytes::from(vec![0u8; len]), PutMode::Overwrite)
            .await
            .unwrap();
    }

    fn index(root: &str) -> RefIndex {
        let mut refs_map = BTreeMap::new();
        for r in ["refs/heads/main", "refs/tags/v1.0.0"] {
            refs_map.insert(
                r.to_string(),
                RefEntry {
                    oid: gix_hash::ObjectId::from_hex(A.as_bytes()).unwrap(),
                    peeled: None,
                },
            );
        }
        RefIndex {
            version: FORMAT_VERSION,
            generation: 3,
            root: root.into(),
            upstream: "http://127.0.0.1/x".into(),
            subdir: String::new(),
            fetched_at: 1_700_000_000,
            head_symref: Some("refs/heads/main".into()),
            head_oid: None,
            refs: refs_map,
            packs: vec![
                PackEntry {
                    checksum: None,
                    name: A.into(),
                    size: 1000,
                    objects: 10,
                    walk_end: None,
                    bitmap: false,
                },
                PackEntry {
                    checksum: None,
                    name: B.into(),
                    size: 500,
                    objects: 4,
                    walk_end: None,
                    bitmap: false,
                },
            ],
            retired: vec![Retired {
                name: "c".repeat(40),
                at: 5,
            }],
            closed: true,
        }
    }

    #[tokio::test]
    async fn counts_from_the_index_and_the_listing() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let root = "example.com/r";
        let keys = Keys::new(root);
        refs::store(&store, &keys, &index(root), None)
            .await
            .unwrap();
        // The ref index's recorded sizes count for packs; the listing for indexes.
        put(&store, &keys.pack(A), 1000).await;
        put(&store, &keys.idx(A), 100).await;
        put(&store, &keys.pack(B), 500).await;
        put(&store, &keys.idx(B), 50).await;
        put(&store, &keys.pack(&"c".repeat(40)), 7).await;
        // A repository with packs but no ref index is not a repository (as for fsck).
        put(&store, &Keys::new("example.com/ghost").pack(A), 3).await;
        // A held lease on a second repository.
        let other = "example.com/s";
        let okeys = Keys::new(other);
        let mut oidx = index(other);
        oidx.packs.truncate(1);
        oidx.retired.clear();
        oidx.closed = false;
        refs::store(&store, &okeys, &oidx, None).await.unwrap();
        let lease = match lease::try_acquire(
            &store,
            &okeys.lease(),
            "host-1",
            std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        {
            lease::Acquire::Acquired(l) => l,
            lease::Acquire::Held { .. } => panic!("held"),
        };

        let report = collect(&store, &[]).await.unwrap();
        assert_eq!(report.repositories.len(), 2, "{report:#?}");
        let r = &report.repositories[0];
        assert_eq!(r.root, root);
        assert_eq!(
            (r.refs, r.packs, r.pack_bytes, r.idx_bytes, r.objects),
            (2, 2, 1500, 150, 14)
        );
        assert_eq!((r.retired, r.closed, r.generation), (1, true, 3));
        assert_eq!(r.fetched_at, Some(1_700_000_000));
        assert!(!r.lease_held && r.error.is_none());
        let index_size = store.head(&keys.ref_index()).await.unwrap().unwrap();
        assert_eq!(r.stored_bytes, 1000 + 100 + 500 + 50 + 7 + index_size);
        let o = &report.repositories[1];
        assert_eq!(o.root, other);
        assert!(o.lease_held);
        assert_eq!(o.lease_holder.as_deref(), Some("host-1"));
        assert_eq!((o.packs, o.idx_bytes, o.closed), (1, 0, false));
        let t = &report.total;
        assert_eq!(
            (
                t.repositories,
                t.refs,
                t.packs,
                t.objects,
                t.closed,
                t.leases_held
            ),
            (2, 4, 3, 24, 1, 1)
        );

        // Named roots: only those, and one that does not exist is an error line.
        let named = collect(&store, &[format!("{other}/"), "example.com/none".into()])
            .await
            .unwrap();
        assert_eq!(named.repositories.len(), 2);
        assert_eq!(named.repositories[0], report.repositories[1]);
        assert!(
            named.repositories[1]
                .error
                .as_deref()
                .is_some_and(|e| e.starts_with("no ref index")),
            "{named:#?}"
        );
        assert_eq!(named.total.errors, 1);

        // A released lease is not held.
        lease.release(&store).await.unwrap();
        let report = collect(&store, &[other.to_string()]).await.unwrap();
        assert!(!report.repositories[0].lease_held);

        // JSON and table.
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["repositories"][0]["root"], other);
        assert_eq!(json["total"]["packs"], 1);
        let text = table(&collect(&store, &[]).await.unwrap());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("ROOT "), "{text}");
        assert!(lines[1].starts_with("example.com/r "), "{text}");
        assert!(lines[1].contains("2023-11-14 22:13:20Z"), "{text}");
        assert!(lines[3].starts_with("total (2 repositories)"), "{text}");
    }

    #[tokio::test]
    async fn corrupt_index_and_bad_root() {
        let store: DynStore = Arc::new(MemoryStore::new());
        let keys = Keys::new("example.com/bad");
        store
            .put(
                &keys.ref_index(),
                Bytes::from_static(b"{"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let report = collect(&store, &[]).await.unwrap();
        assert_eq!(report.repositories.len(), 1);
        let e = report.repositories[0].error.clone().unwrap_or_default();
        assert!(e.starts_with("corrupt ref index"), "{e}");
        let report = collect(&store, &["../x".into()]).await.unwrap();
        assert!(
            report.repositories[0]
                .error
                .as_deref()
                .is_some_and(|e| e.contains("invalid import path")),
            "{report:#?}"
        );
        assert!(table(&report).contains("error: invalid import path"));
    }

    #[test]
    fn dates_and_sizes() {
        assert_eq!(utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20Z");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59Z");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 << 20), "5.0 MiB");
    }
}
