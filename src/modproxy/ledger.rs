//! What the module front has served, kept in the bucket so that a version never changes and
//! a warm request costs one GET.
//!
//! Keys, all under the repository's root (beside its `@git/`, never touched by git gc):
//! * `<root>/@mod/<escaped module>/@v/<escaped version>.info`, `.mod`: the bytes first served
//!   for a canonical version;
//! * `<root>/@mod/<escaped module>/@v/<escaped version>.zip.json`: the ledger entry of a zip
//!   (its h1, the commit it was built from, the SHA-256 and size of its bytes);
//! * `<root>/@mod/<escaped module>/@v/<escaped version>.zip.lease`: while a zip is built, the
//!   lease of the instance building it (removed after; `goprox gc` removes a stale one);
//! * `<root>/@mod/zip/<sha256 of the h1>.zip`: the zip bytes, addressed by their content's
//!   hash (the same files make the same zip: the writer is deterministic).
//!
//! Every object is written create-only (`If-None-Match: *`): the first build wins, and a
//! later build that hashes differently is an error, never a different answer.

use crate::store::{DynStore, PutMode, StoreError};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Where a repository's module zips are kept (`<root>/@mod/zip`).
pub fn zips_prefix(root: &str) -> String {
    format!("{root}/@mod/zip")
}

/// The store key of the zip, among `<zips>`, whose files hash to `h1`.
pub fn zip_key_in(zips: &str, h1: &str) -> String {
    use sha2::Digest;
    format!(
        "{zips}/{}.zip",
        hex::encode(sha2::Sha256::digest(h1.as_bytes()))
    )
}

/// The record of one module zip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZipEntry {
    /// `h1:` hash of the files (what go.sum records).
    pub h1: String,
    /// The commit the zip was built from.
    pub commit: String,
    /// SHA-256 (hex) of the zip bytes: the content key.
    pub sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
}

/// Why the ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store failed.
    #[error("module ledger store access")]
    Store(#[from] StoreError),
    /// A stored entry is unreadable.
    #[error("module ledger entry {0} is malformed")]
    Malformed(String),
    /// A new build hashes differently from what was served before.
    #[error("{what} was first served as {recorded}, and now builds as {built}")]
    Mismatch {
        /// Module and version.
        what: String,
        /// The recorded hash.
        recorded: String,
        /// The hash just built.
        built: String,
    },
}

/// The ledger of one module version.
pub struct Ledger<'a> {
    store: &'a DynStore,
    root: String,
    base: String,
    zips: String,
    what: String,
}

impl<'a> Ledger<'a> {
    /// The entries of `module@version` in the repository rooted at `root`; `None` when the
    /// path or version cannot be escaped (they were validated before, so this does not happen).
    pub fn new(store: &'a DynStore, root: &str, module: &str, version: &str) -> Option<Self> {
        let m = super::module::escape_path(module).ok()?;
        let v = super::module::escape_version(version).ok()?;
        Some(Ledger {
            store,
            root: root.to_string(),
            base: format!("{root}/@mod/{m}/@v/{v}"),
            zips: zips_prefix(root),
            what: format!("{module}@{version}"),
        })
    }

    /// The stored `.info` or `.mod` (`ext` is `info` or `mod`).
    pub async fn get(&self, ext: &str) -> Result<Option<Bytes>, LedgerError> {
        Ok(self
            .store
            .get(&format!("{}.{ext}", self.base))
            .await?
            .map(|o| o.data))
    }

    /// Record the `.info` or `.mod` served; returns what is recorded (the first writer's
    /// bytes, when another request won the race).
    pub async fn put(&self, ext: &str, data: Bytes) -> Result<Bytes, LedgerError> {
        let key = format!("{}.{ext}", self.base);
        match self
            .store
            .put(&key, data.clone(), PutMode::CreateOnly)
            .await
        {
            Ok(_) => Ok(data),
            Err(StoreError::PreconditionFailed) => match self.store.get(&key).await? {
                Some(o) => Ok(o.data),
                None => Ok(data),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// The zip's ledger entry.
    pub async fn zip_entry(&self) -> Result<Option<ZipEntry>, LedgerError> {
        let key = format!("{}.zip.json", self.base);
        match self.store.get(&key).await? {
            None => Ok(None),
            Some(o) => serde_json::from_slice(&o.data)
                .map(Some)
                .map_err(|_| LedgerError::Malformed(key)),
        }
    }

    /// The lease taken while this version's zip is built (`<version>.zip.lease`), so that
    /// instances sharing the bucket build a version once: the others wait for its record.
    pub fn build_lease_key(&self) -> String {
        format!("{}.zip.lease", self.base)
    }

    /// The store key of the zip whose files hash to `h1`.
    pub fn zip_key(&self, h1: &str) -> String {
        zip_key_in(&self.zips, h1)
    }

    /// `len` bytes of an entry's zip from `offset` (`None`: the zip is not stored, e.g. it
    /// was removed).
    pub async fn zip_range(
        &self,
        entry: &ZipEntry,
        offset: u64,
        len: u64,
    ) -> Result<Option<Bytes>, LedgerError> {
        match self
            .store
            .get_range(&self.zip_key(&entry.h1), offset, len)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Record a zip whose bytes are stored (at [`Ledger::zip_key`]): the entry is written
    /// after the bytes, so an entry never names a zip that was never stored. A build that
    /// disagrees with the entry already recorded is a [`LedgerError::Mismatch`].
    pub async fn record_zip(&self, entry: &ZipEntry) -> Result<(), LedgerError> {
        let key = format!("{}.zip.json", self.base);
        let json = serde_json::to_vec(entry).map_err(|_| LedgerError::Malformed(key.clone()))?;
        match self
            .store
            .put(&key, Bytes::from(json), PutMode::CreateOnly)
            .await
        {
            Ok(_) => {
                crate::refs::catalog::note_zip(self.store, &self.root, entry.size);
                Ok(())
            }
            Err(StoreError::PreconditionFailed) => match self.zip_entry().await? {
                Some(first) => self.check(&first, &entry.h1),
                None => Ok(()),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// A build's h1 against the recorded one.
    pub fn check(&self, recorded: &ZipEntry, built_h1: &str) -> Result<(), LedgerError> {
        if recorded.h1 == built_h1 {
            Ok(())
        } else {
            Err(LedgerError::Mismatch {
                what: self.what.clone(),
                recorded: recorded.h1.clone(),
                built: built_h1.to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> DynStore {
        std::sync::Arc::new(crate::store::memory::MemoryStore::new())
    }

    fn entry(h1: &str, data: &[u8]) -> ZipEntry {
        use sha2::Digest;
        ZipEntry {
            h1: h1.into(),
            commit: "c".repeat(40),
            sha256: hex::encode(sha2::Sha256::digest(data)),
            size: data.len() as u64,
        }
    }

    #[tokio::test]
    async fn first_build_wins_and_a_different_one_is_refused() {
        let s = store();
        let l = Ledger::new(&s, "example.com/r", "example.com/r/Sub", "v1.0.0").expect("ledger");
        assert!(l.zip_entry().await.expect("get").is_none());
        let e = entry("h1:one", b"zip one");
        assert!(l.zip_range(&e, 0, 4).await.expect("range").is_none());
        s.put(
            &l.zip_key("h1:one"),
            Bytes::from_static(b"zip one"),
            PutMode::CreateOnly,
        )
        .await
        .expect("put zip");
        l.record_zip(&e).await.expect("record");
        assert_eq!(l.zip_entry().await.expect("get"), Some(e.clone()));
        assert_eq!(
            l.zip_range(&e, 4, 3).await.expect("range").as_deref(),
            Some(&b"one"[..])
        );
        // The same build again is fine; a different one is refused, and nothing changes.
        l.record_zip(&e).await.expect("same again");
        let other = entry("h1:two", b"zip two");
        let err = l.record_zip(&other).await.expect_err("mismatch");
        assert!(matches!(err, LedgerError::Mismatch { .. }), "{err}");
        assert_eq!(l.zip_entry().await.expect("get"), Some(e));
        // Keys are escaped (lowercase only).
        let keys = s.list("example.com/r/@mod/").await.expect("list");
        assert!(
            keys.iter()
                .any(|k| k.contains("example.com/r/!sub/@v/v1.0.0.zip.json")),
            "{keys:?}"
        );
    }

    #[tokio::test]
    async fn info_and_mod_keep_the_first_bytes() {
        let s = store();
        let l = Ledger::new(&s, "example.com/r", "example.com/r", "v1.0.0").expect("ledger");
        assert!(l.get("mod").await.expect("get").is_none());
        let first = l
            .put("mod", Bytes::from_static(b"module a\n"))
            .await
            .expect("put");
        assert_eq!(&first[..], b"module a\n");
        let again = l
            .put("mod", Bytes::from_static(b"module b\n"))
            .await
            .expect("put");
        assert_eq!(&again[..], b"module a\n");
    }
}
