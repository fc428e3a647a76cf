//! Start-up probe and readiness check of a store.
//!
//! Several goprox instances can share one bucket only if the store honours conditional writes:
//! `If-None-Match: *` (a second create-only write of a key is refused) and `If-Match: <etag>`
//! (a write against a stale tag is refused). [`probe`] checks both on a scratch object under
//! [`PROBE_PREFIX`] and removes it again. [`ready`] is the cheap check behind `GET /readyz`.
//!
//! Scratch keys live under [`RESERVED_PREFIX`] (`.goprox/`): repository keys are import paths,
//! whose elements never start with a dot, so they can never collide with it.

use super::{ETag, ObjectStore, PutMode, StoreError};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Keys of goprox's own bookkeeping (never a repository: import-path elements cannot start
/// with a dot).
pub const RESERVED_PREFIX: &str = ".goprox/";
/// Scratch objects written by [`probe`] (deleted again; `goprox gc` removes crash leftovers).
pub const PROBE_PREFIX: &str = ".goprox/probe/";
/// What [`ready`] lists (normally nothing is there: only the answer matters).
const READY_PREFIX: &str = ".goprox/ready/";
/// How long [`ready`] waits for the store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// Why [`probe`] failed: the store could not be used, or it does not honour conditional
/// writes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A store call of the probe failed.
    #[error("store {store}: probe {op} of {key} failed: {source}")]
    Store {
        /// The store's description.
        store: String,
        /// The call that failed (`put`, `get`, ...).
        op: &'static str,
        /// The scratch key.
        key: String,
        /// The store's error.
        source: StoreError,
    },
    /// A second create-only write of the scratch key was accepted.
    #[error(
        "store {store} ignores create-only writes (If-None-Match: *): a second create of {key} \
         succeeded, so several goprox instances could overwrite each other's ref indexes \
         (use --single-instance if only this process writes to it)"
    )]
    CreateOnlyIgnored {
        /// The store's description.
        store: String,
        /// The scratch key.
        key: String,
    },
    /// A write with a stale `If-Match` tag was accepted.
    #[error(
        "store {store} ignores If-Match: a write of {key} with a stale version tag succeeded, \
         so compare-and-swap of ref indexes is not safe (use --single-instance if only this \
         process writes to it)"
    )]
    IfMatchIgnored {
        /// The store's description.
        store: String,
        /// The scratch key.
        key: String,
    },
    /// The scratch object read back differs from what was written.
    #[error("store {store}: probe object {key} read back with the wrong content")]
    WrongContent {
        /// The store's description.
        store: String,
        /// The scratch key.
        key: String,
    },
}

/// Why `/readyz` fails: a line for anyone (`public`), the whole story for the log.
#[derive(Debug)]
pub struct NotReady {
    /// The `/readyz` body.
    pub public: &'static str,
    /// The whole error, for the log.
    pub detail: String,
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl ProbeError {
    /// The `/readyz` body: what is wrong, without store names, keys or backend text (the
    /// endpoint is open to anyone; the log has the whole error).
    pub fn public_message(&self) -> &'static str {
        match self {
            ProbeError::Store { source, .. } if source.is_unavailable() => {
                "not ready: object store unavailable"
            }
            ProbeError::Store { .. } => "not ready: object store error",
            _ => "not ready: the object store does not honour conditional writes (see the log)",
        }
    }
}

/// A token no other process (or call) picks: hex of `bytes` bytes of a hash of `salt`, the
/// time, the pid, a counter and an address. Used for probe keys and lease nonces.
pub fn unique_token(salt: &str, bytes: usize) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let local = 0u8;
    let seed = format!(
        "{salt}-{nanos}-{}-{}-{:p}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed),
        &local
    );
    let digest = Sha1::digest(seed.as_bytes());
    hex::encode(&digest[..bytes.min(digest.len())])
}

/// A key under [`PROBE_PREFIX`] that no other process picks.
fn probe_key() -> String {
    format!("{PROBE_PREFIX}{}", unique_token("probe", 12))
}

/// Check that `store` honours create-only and `If-Match` writes, on a scratch object that is
/// deleted again (also when a check fails).
pub async fn probe(store: &dyn ObjectStore) -> Result<(), ProbeError> {
    let key = probe_key();
    let result = probe_key_checks(store, &key).await;
    let cleanup = store.delete(&key).await;
    result?;
    cleanup.map_err(|source| ProbeError::Store {
        store: store.describe(),
        op: "delete",
        key: key.clone(),
        source,
    })
}

async fn probe_key_checks(store: &dyn ObjectStore, key: &str) -> Result<(), ProbeError> {
    let fail = |op, source| ProbeError::Store {
        store: store.describe(),
        op,
        key: key.to_string(),
        source,
    };
    let put = |body: &'static [u8], mode| store.put(key, Bytes::from_static(body), mode);
    let first = put(b"probe 1", PutMode::CreateOnly)
        .await
        .map_err(|e| fail("create", e))?;
    let create_ignored = || ProbeError::CreateOnlyIgnored {
        store: store.describe(),
        key: key.to_string(),
    };
    let if_match_ignored = || ProbeError::IfMatchIgnored {
        store: store.describe(),
        key: key.to_string(),
    };
    match put(b"probe 2", PutMode::CreateOnly).await {
        Err(StoreError::PreconditionFailed) => {}
        Ok(_) => return Err(create_ignored()),
        Err(e) => return Err(fail("second create", e)),
    }
    // A tag that never named any version must be refused...
    let bogus = ETag("\"goprox-probe-no-such-version\"".to_string());
    match put(b"probe 3", PutMode::IfMatch(bogus)).await {
        Err(StoreError::PreconditionFailed) => {}
        Ok(_) => return Err(if_match_ignored()),
        Err(e) => return Err(fail("If-Match write with a bogus tag", e)),
    }
    // ...the current one accepted...
    put(b"probe 4", PutMode::IfMatch(first.clone()))
        .await
        .map_err(|e| fail("If-Match write with the current tag", e))?;
    // ...and then it is stale.
    match put(b"probe 5", PutMode::IfMatch(first)).await {
        Err(StoreError::PreconditionFailed) => {}
        Ok(_) => return Err(if_match_ignored()),
        Err(e) => return Err(fail("If-Match write with a stale tag", e)),
    }
    let got = store.get(key).await.map_err(|e| fail("read", e))?;
    if got.as_ref().map(|g| &g.data[..]) != Some(&b"probe 4"[..]) {
        return Err(ProbeError::WrongContent {
            store: store.describe(),
            key: key.to_string(),
        });
    }
    Ok(())
}

/// Whether the store answers: one small listing under a reserved prefix, bounded by
/// [`READY_TIMEOUT`]; with `check_writes`, also that it still honours conditional writes (the
/// start-up [`probe`], re-run when the last passing one is older than [`REPROBE_AFTER`]).
pub async fn ready(store: &dyn ObjectStore, check_writes: bool) -> Result<(), NotReady> {
    let timed_out = || NotReady {
        public: "not ready: object store unavailable",
        detail: format!(
            "store {} did not answer within {} s",
            store.describe(),
            READY_TIMEOUT.as_secs()
        ),
    };
    match tokio::time::timeout(READY_TIMEOUT, store.list(READY_PREFIX)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(NotReady {
                public: if e.is_unavailable() {
                    "not ready: object store unavailable"
                } else {
                    "not ready: object store error"
                },
                detail: format!("store {} is not answering: {e}", store.describe()),
            });
        }
        Err(_) => return Err(timed_out()),
    }
    if !check_writes {
        return Ok(());
    }
    // When the probe last passed, by store.
    static PASSED: std::sync::Mutex<Vec<(String, std::time::Instant)>> =
        std::sync::Mutex::new(Vec::new());
    let name = store.describe();
    let fresh = PASSED
        .lock()
        .map(|p| {
            p.iter()
                .any(|(n, t)| *n == name && t.elapsed() < REPROBE_AFTER)
        })
        .unwrap_or(false);
    if fresh {
        return Ok(());
    }
    match tokio::time::timeout(READY_TIMEOUT, probe(store)).await {
        Ok(Ok(())) => {
            if let Ok(mut p) = PASSED.lock() {
                p.retain(|(n, _)| *n != name);
                p.push((name, std::time::Instant::now()));
            }
            Ok(())
        }
        Ok(Err(e)) => Err(NotReady {
            public: e.public_message(),
            detail: e.to_string(),
        }),
        Err(_) => Err(timed_out()),
    }
}

/// How long a passing conditional-write probe counts for `/readyz`.
pub const REPROBE_AFTER: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{GetOutput, ListEntry, Result};
    use async_trait::async_trait;

    /// A memory store that turns some conditional writes into plain overwrites, or fails.
    #[derive(Debug, Default)]
    struct Lax {
        inner: MemoryStore,
        ignore_create_only: bool,
        ignore_if_match: bool,
        broken: bool,
    }

    #[async_trait]
    impl ObjectStore for Lax {
        fn describe(&self) -> String {
            "lax://".into()
        }
        async fn get(&self, key: &str) -> Result<Option<GetOutput>> {
            self.inner.get(key).await
        }
        async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
            self.inner.get_range(key, offset, len).await
        }
        async fn head(&self, key: &str) -> Result<Option<u64>> {
            self.inner.head(key).await
        }
        async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag> {
            let mode = match mode {
                PutMode::CreateOnly if self.ignore_create_only => PutMode::Overwrite,
                PutMode::IfMatch(_) if self.ignore_if_match => PutMode::Overwrite,
                m => m,
            };
            self.inner.put(key, data, mode).await
        }
        async fn delete(&self, key: &str) -> Result<()> {
            self.inner.delete(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>> {
            if self.broken {
                return Err(StoreError::Backend("connection refused".into()));
            }
            self.inner.list(prefix).await
        }
        async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>> {
            self.inner.list_meta(prefix).await
        }
    }

    #[tokio::test]
    async fn honest_store_passes_and_is_left_clean() {
        let store = MemoryStore::new();
        probe(&store).await.unwrap();
        probe(&store).await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
        ready(&store, false).await.unwrap();
        ready(&store, true).await.unwrap();
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn ready_checks_conditional_writes_unless_single_instance() {
        let store = Lax {
            ignore_if_match: true,
            ..Lax::default()
        };
        ready(&store, false).await.unwrap();
        let err = ready(&store, true).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("If-Match"), "{msg}");
        assert!(!err.public.contains("lax://"), "{}", err.public);
    }

    #[tokio::test]
    async fn store_ignoring_create_only_fails() {
        let store = Lax {
            ignore_create_only: true,
            ..Lax::default()
        };
        let err = probe(&store).await.unwrap_err();
        assert!(
            matches!(err, ProbeError::CreateOnlyIgnored { .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains("If-None-Match"), "{msg}");
        assert!(msg.contains("lax://"), "{msg}");
        assert!(msg.contains(PROBE_PREFIX), "{msg}");
        // The scratch object is removed even when the check fails.
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn store_ignoring_if_match_fails() {
        let store = Lax {
            ignore_if_match: true,
            ..Lax::default()
        };
        let err = probe(&store).await.unwrap_err();
        assert!(matches!(err, ProbeError::IfMatchIgnored { .. }), "{err:?}");
        assert!(err.to_string().contains("If-Match"), "{err}");
        assert!(store.list("").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn store_ignoring_both_fails_on_the_first() {
        let store = Lax {
            ignore_create_only: true,
            ignore_if_match: true,
            ..Lax::default()
        };
        assert!(matches!(
            probe(&store).await,
            Err(ProbeError::CreateOnlyIgnored { .. })
        ));
    }

    #[tokio::test]
    async fn ready_reports_a_failing_store() {
        let store = Lax {
            broken: true,
            ..Lax::default()
        };
        let err = ready(&store, false).await.unwrap_err();
        assert_eq!(err.public, "not ready: object store error");
        let msg = err.to_string();
        assert!(msg.contains("lax://"), "{msg}");
        assert!(msg.contains("connection refused"), "{msg}");
    }

    #[test]
    fn probe_keys_are_reserved_and_unique() {
        let a = probe_key();
        let b = probe_key();
        assert_ne!(a, b);
        assert!(a.starts_with(PROBE_PREFIX));
        crate::store::check_key(&a).unwrap();
        // No import path can produce a key under the reserved prefix.
        assert!(crate::path::validate(".goprox/probe").is_err());
        assert!(!a.contains("/@git/"));
    }
}
