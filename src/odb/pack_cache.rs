//! Generated packs kept in the store, so that a popular request (the same `go get` of a tag by
//! a whole build farm, the same shallow clone) costs its walk, delta search and compression
//! once. A cached pack is keyed by everything that determines it (the pack set, the wants,
//! the client's commits, shallow boundaries, filter, tags, delta and thin-pack options) and
//! written create-only like any immutable object; `goprox gc` drops those of an older pack
//! set. A pack is cached when making it took at least `Io::pack_cache_min_cost` (default
//! [`MIN_COST`], `--pack-cache-min-cost`) and it is at most [`MAX_BYTES`].
//!
//! A cached pack is checked while it is streamed (its trailer against its bytes); a damaged
//! one fails the request loudly and is deleted.

use super::{Io, OdbError, Result};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use std::io::Write;
use std::time::Duration;

/// Largest pack kept.
pub const MAX_BYTES: usize = 64 << 20;
/// Packs cheaper than this to make are not kept (by default).
pub const MIN_COST: Duration = Duration::from_millis(100);
/// Bytes per ranged GET when a cached pack is streamed.
const CHUNK: u64 = 8 << 20;
/// Keys this process knows to be in the store (it wrote or read them).
const KNOWN_KEYS: usize = 4096;

/// Builds the digest of a request's pack: feed every input that determines it.
pub struct KeyBuilder(sha2::Sha256);

impl Default for KeyBuilder {
    fn default() -> Self {
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        sha2::Digest::update(&mut h, b"goprox generated pack v1\n");
        KeyBuilder(h)
    }
}

impl KeyBuilder {
    /// A named list of object ids, sorted first (their order does not matter).
    pub fn ids(&mut self, label: &str, ids: impl IntoIterator<Item = gix_hash::ObjectId>) {
        let mut v: Vec<_> = ids.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        self.text(&format!("{label} {}", v.len()));
        for id in v {
            sha2::Digest::update(&mut self.0, id.as_slice());
        }
    }

    pub fn text(&mut self, s: &str) {
        sha2::Digest::update(&mut self.0, s.as_bytes());
        sha2::Digest::update(&mut self.0, b"\n");
    }

    /// The digest, hex.
    pub fn finish(self) -> String {
        hex::encode(sha2::Digest::finalize(self.0))
    }
}

impl Io {
    fn known(&self, key: &str) -> bool {
        self.cached_packs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .is_some()
    }

    fn remember(&self, key: &str, present: bool) {
        let mut m = self.cached_packs.lock().unwrap_or_else(|e| e.into_inner());
        if present {
            m.put(key.to_string(), ());
        } else {
            m.pop(key);
        }
    }
}

/// The bounded set of cached-pack keys one process knows about.
pub fn known_keys() -> std::sync::Mutex<lru::LruCache<String, ()>> {
    std::sync::Mutex::new(lru::LruCache::new(
        std::num::NonZeroUsize::new(KNOWN_KEYS).unwrap_or(std::num::NonZeroUsize::MIN),
    ))
}

/// Repositories of fewer objects do not look for kept packs they do not know of (their packs
/// are cheap to make), and get none made ahead (by default).
pub const MIN_OBJECTS: u64 = 50_000;

/// Whether looking `key` up in the store is worth a request: this process knows it is there,
/// or the repository is large enough that its packs are costly to make
/// (`Io::pack_cache_min_objects`).
pub fn worth_looking(io: &Io, key: &str, repo_objects: u64) -> bool {
    repo_objects >= io.pack_cache_min_objects || io.known(key)
}

/// Whether the store keeps a pack under `key` (one HEAD request; remembered either way).
pub fn is_kept(io: &Io, key: &str) -> Result<bool> {
    let present = io.rt.block_on(io.store.head(key))?.is_some();
    io.remember(key, present);
    Ok(present)
}

/// Stream the cached pack `key` to `out`. `Ok(None)`: there is none (nothing was written);
/// `Ok(Some(bytes))`: it was sent. An error after bytes went out is the caller's to report.
pub fn serve(io: &Io, key: &str, out: &mut dyn Write) -> Result<Option<u64>> {
    let first = match io.rt.block_on(io.store.get_range(key, 0, CHUNK)) {
        Ok(b) => b,
        Err(crate::store::StoreError::NotFound(_)) => {
            io.remember(key, false);
            return Ok(None);
        }
        Err(e) => {
            tracing::warn!(key, error = %e, "reading a cached pack failed; generating instead");
            return Ok(None);
        }
    };
    crate::metrics::STORE_RANGE_GETS.inc();
    if first.len() < 32 || &first[..4] != b"PACK" {
        return Err(damaged(io, key));
    }
    io.remember(key, true);
    let mut hash = Sha1::new();
    // The last 20 bytes seen so far are held back: they may be the trailer.
    let mut tail: Vec<u8> = Vec::with_capacity(20);
    let mut sent = 0u64;
    let mut chunk = first;
    let mut at = 0u64;
    loop {
        let full = chunk.len() as u64 == CHUNK;
        at += chunk.len() as u64;
        // The next read in flight while this chunk is written.
        let next = full.then(|| {
            let (store, key) = (io.store.clone(), key.to_string());
            io.rt
                .spawn(async move { store.get_range(&key, at, CHUNK).await })
        });
        let mut data = std::mem::take(&mut tail);
        data.extend_from_slice(&chunk);
        let keep = data.len().min(20);
        let (body, held) = data.split_at(data.len() - keep);
        hash.update(body);
        out.write_all(body).map_err(io_err)?;
        sent += body.len() as u64;
        tail = held.to_vec();
        match next {
            None => break,
            Some(t) => {
                chunk = io
                    .rt
                    .block_on(t)
                    .map_err(|e| OdbError::Task("read", e.to_string()))??;
                crate::metrics::STORE_RANGE_GETS.inc();
                if chunk.is_empty() {
                    break;
                }
            }
        }
    }
    if tail.len() != 20 || hash.finalize()[..] != tail[..] {
        return Err(damaged(io, key));
    }
    out.write_all(&tail).map_err(io_err)?;
    Ok(Some(sent + 20))
}

fn io_err(e: std::io::Error) -> OdbError {
    OdbError::Output(e)
}

/// A cached pack that is not what it should be: deleted (the next request makes it again).
fn damaged(io: &Io, key: &str) -> OdbError {
    io.remember(key, false);
    let (store, k) = (io.store.clone(), key.to_string());
    io.rt.spawn(async move {
        let _ = store.delete(&k).await;
    });
    tracing::error!(key, "damaged cached pack deleted");
    OdbError::Corrupt(format!("cached pack {key} is damaged"))
}

/// Keep `pack` under `key` (in the background; an existing one is the same pack). Its bytes
/// stay charged to [`COPIES_BUDGET`] until the upload is done.
pub fn keep(io: &Io, key: String, mut pack: PackCopy) {
    io.remember(&key, true);
    let store = io.store.clone();
    // Tracked: a shutdown lets it land (the next instance answers the same request from it).
    crate::background::spawn(&io.rt, async move {
        let data = Bytes::from(std::mem::take(&mut pack.data));
        match store
            .put(&key, data, crate::store::PutMode::CreateOnly)
            .await
        {
            Ok(_) | Err(crate::store::StoreError::PreconditionFailed) => {}
            Err(e) => tracing::warn!(key, error = %e, "keeping a generated pack failed"),
        }
        drop(pack);
    });
}

/// Bytes of pack copies all requests of the process may hold at once (being made, or waiting
/// for their upload): many concurrent requests must not each hold up to [`MAX_BYTES`].
pub const COPIES_BUDGET: usize = 128 << 20;

static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Bytes counted against [`COPIES_BUDGET`], given back on drop.
pub struct PackCopy {
    pub data: Vec<u8>,
    charged: usize,
}

impl PackCopy {
    /// Charge `n` more bytes; false (nothing charged) if the budget does not have them.
    fn charge(&mut self, n: usize) -> bool {
        let ok = COPIES
            .fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |used| (used + n <= COPIES_BUDGET).then_some(used + n),
            )
            .is_ok();
        if ok {
            self.charged += n;
        }
        ok
    }
}

impl Drop for PackCopy {
    fn drop(&mut self) {
        COPIES.fetch_sub(self.charged, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Passes writes on and keeps a copy of the first [`MAX_BYTES`] (none once more was written,
/// or when the process-wide [`COPIES_BUDGET`] is used up).
pub struct Tee<'w> {
    inner: &'w mut dyn Write,
    copy: Option<PackCopy>,
}

impl<'w> Tee<'w> {
    pub fn new(inner: &'w mut dyn Write) -> Self {
        Tee {
            inner,
            copy: Some(PackCopy {
                data: Vec::new(),
                charged: 0,
            }),
        }
    }

    /// Everything written, if it was at most [`MAX_BYTES`] and the budget allowed.
    pub fn into_copy(self) -> Option<PackCopy> {
        self.copy
    }
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(c) = &mut self.copy {
            if c.data.len() + n > MAX_BYTES || !c.charge(n) {
                self.copy = None;
            } else {
                c.data.extend_from_slice(&buf[..n]);
            }
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies are charged to the process-wide budget while held and given back when dropped;
    /// a tee that would pass the budget keeps no copy.
    #[test]
    fn copies_stay_within_the_budget() {
        let mut sink = Vec::new();
        let mut a = Tee::new(&mut sink);
        a.write_all(&[1u8; 1000]).unwrap();
        let a = a.into_copy().expect("a copy within the budget");
        assert_eq!(a.data.len(), 1000);
        assert!(COPIES.load(std::sync::atomic::Ordering::Acquire) >= 1000);
        // Take most of the budget, as concurrent requests would.
        let mut big = PackCopy {
            data: Vec::new(),
            charged: 0,
        };
        assert!(big.charge(COPIES_BUDGET - 1000 - (1 << 20)));
        let mut sink2 = Vec::new();
        let mut b = Tee::new(&mut sink2);
        b.write_all(&vec![2u8; 2 << 20]).unwrap();
        assert!(b.into_copy().is_none(), "a copy past the budget was kept");
        assert_eq!(sink2.len(), 2 << 20, "the tee still passed everything on");
        drop(big);
        drop(a);
    }
}
