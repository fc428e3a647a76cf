//! One stored pack: its key in the store, its size, and its index (held whole in memory).

use gix_hash::ObjectId;
use std::sync::Arc;

/// A pack in the store plus its parsed `.idx`.
pub struct Pack {
    /// The pack's name in its keys (`pack-<name>.pack`): its checksum (hex), or a unique name
    /// for a pack streamed in before its checksum was known ([`crate::refs::PackEntry::name`]).
    pub name: String,
    /// Store key of the `.pack` object.
    pub key: Arc<str>,
    /// Size of the `.pack` object in bytes.
    pub size: u64,
    idx: gix_pack::index::File<Vec<u8>>,
    /// Entry start offsets in pack order, to find where each entry ends.
    sorted_offsets: Vec<u64>,
    /// Index positions in pack order (parallel to `sorted_offsets`): offset → object id.
    by_offset: Vec<u32>,
    /// The index's CRC-32s in pack order, made on first use (streaming a pack whole checks
    /// every entry; looking each up in the index's order is a cache miss per entry).
    /// `None` for an index without CRCs (version 1).
    crc_in_pack_order: std::sync::OnceLock<Option<Vec<u32>>>,
    /// Its reachability bitmaps, once loaded (`None` inside: unusable, not asked again).
    bitmaps: std::sync::OnceLock<Option<Arc<super::bitmap::Bitmaps>>>,
    /// Held while the bitmaps load: one load however many requests want them.
    bitmaps_loading: std::sync::Mutex<()>,
    /// Every entry was read and checked against the index's CRC-32 once (streaming the pack
    /// whole); stored objects never change, so later streams skip the check.
    pub checked_whole: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Pack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pack")
            .field("key", &self.key)
            .field("size", &self.size)
            .field("objects", &self.num_objects())
            .finish()
    }
}

impl Pack {
    /// The pack `name` at store key `key` of `size` bytes, with its `.idx` contents `idx`;
    /// fails when the index does not parse or points past the end of the pack.
    pub fn from_index_bytes(
        name: String,
        key: Arc<str>,
        size: u64,
        idx: Vec<u8>,
    ) -> Result<Self, String> {
        let idx = gix_pack::index::File::from_data(idx, Default::default(), gix_hash::Kind::Sha1)
            .map_err(|e| format!("invalid pack index for {key}: {e}"))?;
        let mut pairs: Vec<(u64, u32)> = (0..idx.num_objects())
            .map(|i| (idx.pack_offset_at_index(i), i))
            .collect();
        pairs.sort_unstable();
        let (sorted_offsets, by_offset): (Vec<u64>, Vec<u32>) = pairs.into_iter().unzip();
        if sorted_offsets.last().is_some_and(|&o| o + 20 > size) {
            return Err(format!(
                "pack index for {key} points past the end of the pack"
            ));
        }
        Ok(Pack {
            name,
            key,
            size,
            idx,
            sorted_offsets,
            by_offset,
            crc_in_pack_order: std::sync::OnceLock::new(),
            bitmaps: std::sync::OnceLock::new(),
            bitmaps_loading: std::sync::Mutex::new(()),
            checked_whole: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Objects in the pack (from its index).
    pub fn num_objects(&self) -> u32 {
        self.idx.num_objects()
    }

    /// Offset of `oid` in this pack.
    pub fn offset_of(&self, oid: &gix_hash::oid) -> Option<u64> {
        self.idx
            .lookup(oid)
            .map(|i| self.idx.pack_offset_at_index(i))
    }

    /// Up to `most` objects whose id starts with the hex digits `prefix` (lowercase).
    pub fn oids_with_prefix(&self, prefix: &str, most: usize) -> Vec<ObjectId> {
        let n = self.idx.num_objects();
        // Ids are sorted in the index: find the first one not below the prefix.
        let (mut lo, mut hi) = (0u32, n);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let hex = self.idx.oid_at_index(mid).to_hex().to_string();
            if hex.as_str() < prefix {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        (lo..n)
            .map(|i| self.idx.oid_at_index(i).to_owned())
            .take_while(|id| id.to_hex().to_string().starts_with(prefix))
            .take(most)
            .collect()
    }

    /// Bytes of memory the pack's index and what is made from it (reverse index, CRCs in
    /// pack order, bitmaps) hold, approximately: what the pack index budget counts.
    pub fn memory_bytes(&self) -> u64 {
        let n = u64::from(self.num_objects());
        // A version-2 index: fan-out, ids, CRCs, offsets (large ones left out), checksums.
        let idx = 1072 + n * 28;
        let reverse = n * 12;
        let crcs = self
            .crc_in_pack_order
            .get()
            .and_then(|c| c.as_ref())
            .map_or(0, |c| c.len() as u64 * 4);
        let bitmaps = self
            .bitmaps
            .get()
            .and_then(|b| b.as_ref())
            .map_or(0, |b| b.memory_bytes());
        idx + reverse + crcs + bitmaps
    }

    /// Start offsets of the entries, in pack order.
    pub fn entry_offsets(&self) -> &[u64] {
        &self.sorted_offsets
    }

    /// The CRC-32 the index records for the entry starting at `offset` (header and compressed
    /// data), if any.
    pub fn crc32_at_offset(&self, offset: u64) -> Option<u32> {
        let i = self.sorted_offsets.binary_search(&offset).ok()?;
        self.idx.crc32_at_index(self.by_offset[i])
    }

    /// The CRC-32 the index records for the `i`-th entry in pack order.
    pub fn crc32_at_position(&self, i: usize) -> Option<u32> {
        self.crc_in_pack_order
            .get_or_init(|| {
                self.by_offset
                    .iter()
                    .map(|&k| self.idx.crc32_at_index(k))
                    .collect()
            })
            .as_ref()?
            .get(i)
            .copied()
    }

    /// The object whose entry starts at `offset`.
    pub fn oid_at_offset(&self, offset: u64) -> Option<ObjectId> {
        let i = self.sorted_offsets.binary_search(&offset).ok()?;
        Some(self.idx.oid_at_index(self.by_offset[i]).to_owned())
    }

    /// Where the entry starting at `offset` ends (the next entry, or the trailer).
    pub fn entry_end(&self, offset: u64) -> u64 {
        match self.sorted_offsets.binary_search(&offset) {
            Ok(i) | Err(i) => {
                let next = if self.sorted_offsets.get(i) == Some(&offset) {
                    i + 1
                } else {
                    i
                };
                self.sorted_offsets
                    .get(next)
                    .copied()
                    .unwrap_or(self.size.saturating_sub(20))
            }
        }
    }

    /// Position in pack order of the entry starting at `offset`.
    pub fn position_of_offset(&self, offset: u64) -> Option<u32> {
        self.sorted_offsets
            .binary_search(&offset)
            .ok()
            .map(|i| i as u32)
    }

    /// Start offset and object id of the entry at position `i` in pack order.
    pub fn entry_at_position(&self, i: u32) -> Option<(u64, ObjectId)> {
        let offset = *self.sorted_offsets.get(i as usize)?;
        let k = *self.by_offset.get(i as usize)?;
        Some((offset, self.idx.oid_at_index(k).to_owned()))
    }

    /// The pack's trailer checksum, as its index records it.
    pub fn checksum(&self) -> [u8; 20] {
        let mut out = [0u8; 20];
        let c = self.idx.pack_checksum();
        let b = c.as_bytes();
        if b.len() == 20 {
            out.copy_from_slice(b);
        }
        out
    }

    /// The pack's bitmaps: loaded by `load` on first use (`Err`: a transient failure, tried
    /// again next time; `Ok(None)`: none usable, not tried again).
    pub fn bitmaps(
        &self,
        load: impl FnOnce() -> Result<Option<Arc<super::bitmap::Bitmaps>>, ()>,
    ) -> Option<Arc<super::bitmap::Bitmaps>> {
        if let Some(b) = self.bitmaps.get() {
            return b.clone();
        }
        let _one = self
            .bitmaps_loading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = self.bitmaps.get() {
            return b.clone();
        }
        let loaded = load().ok()?;
        let _ = self.bitmaps.set(loaded.clone());
        loaded
    }

    /// Store key of the pack's bitmaps (beside the pack).
    pub fn bitmap_key(&self) -> String {
        match self.key.strip_suffix(".pack") {
            Some(stem) => format!("{stem}.bitmap"),
            None => format!("{}.bitmap", self.key),
        }
    }

    /// All object ids in the pack.
    pub fn oids(&self) -> impl Iterator<Item = ObjectId> + '_ {
        self.idx.iter().map(|e| e.oid)
    }
}
