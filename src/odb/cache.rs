//! Byte-bounded LRU caches shared by every repository of a process: raw pack blocks keyed by
//! (pack key, block number) and decoded objects keyed by (pack key, offset).

use bytes::Bytes;
use lru::LruCache;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Something with a size in bytes, for budget accounting.
pub trait Weigh {
    fn weight(&self) -> usize;
}

impl Weigh for Bytes {
    fn weight(&self) -> usize {
        self.len()
    }
}

/// An LRU cache whose budget is counted in bytes of its values (plus a small per-entry cost).
pub struct ByteLru<K: Hash + Eq, V: Weigh + Clone> {
    budget: usize,
    inner: Mutex<(LruCache<K, V>, usize)>,
    hits: AtomicU64,
    misses: AtomicU64,
}

const ENTRY_OVERHEAD: usize = 64;

impl<K: Hash + Eq, V: Weigh + Clone> ByteLru<K, V> {
    pub fn new(budget: usize) -> Self {
        ByteLru {
            budget,
            inner: Mutex::new((LruCache::unbounded(), 0)),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The budget in bytes.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// The value of `k`, if cached (counted as a hit or a miss).
    pub fn get(&self, k: &K) -> Option<V> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let v = g.0.get(k).cloned();
        if v.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// Cache `v` under `k`, evicting the least recently used beyond the budget (a value
    /// larger than the whole budget is not cached).
    pub fn insert(&self, k: K, v: V) {
        let w = v.weight() + ENTRY_OVERHEAD;
        if w > self.budget {
            return;
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = g.0.put(k, v) {
            g.1 -= old.weight() + ENTRY_OVERHEAD;
        }
        g.1 += w;
        while g.1 > self.budget {
            match g.0.pop_lru() {
                Some((_, old)) => g.1 -= old.weight() + ENTRY_OVERHEAD,
                None => break,
            }
        }
    }

    /// Bytes currently held.
    pub fn used(&self) -> usize {
        self.inner.lock().map(|g| g.1).unwrap_or(0)
    }

    /// Lookups that found their key.
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Lookups that did not.
    pub fn misses(&self) -> u64 {
        self.misses.load(Ordering::Relaxed)
    }
}

/// Key of a raw pack block.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlockKey {
    pub pack: Arc<str>,
    pub block: u64,
}

pub type BlockCache = ByteLru<BlockKey, Bytes>;

/// Key of a decoded object.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    pub pack: Arc<str>,
    pub offset: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_by_bytes() {
        let c: ByteLru<u32, Bytes> = ByteLru::new(3 * (100 + ENTRY_OVERHEAD));
        for i in 0..5 {
            c.insert(i, Bytes::from(vec![0u8; 100]));
        }
        assert!(c.get(&0).is_none());
        assert!(c.get(&1).is_none());
        assert!(c.get(&4).is_some());
        assert!(c.used() <= 3 * (100 + ENTRY_OVERHEAD));
        c.insert(9, Bytes::from(vec![0u8; 10_000]));
        assert!(c.get(&9).is_none(), "larger than the budget is not cached");
    }
}
