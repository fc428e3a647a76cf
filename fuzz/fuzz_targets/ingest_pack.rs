//! The streaming pack indexer (upstream packs are network input): the input is a pack
//! without its trailer, which is appended (so the fuzzer gets past the checksum); the first
//! byte picks the cache budget (0: every delta goes to the second pass). Must not panic; an
//! index it writes has the version 2 layout for as many objects as the pack holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha1::{Digest, Sha1};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut pack = body.to_vec();
    let sum = Sha1::digest(&pack);
    pack.extend_from_slice(&sum);
    let budget = if mode & 1 == 0 { 0 } else { 1 << 10 };
    if let Ok(indexed) = goprox::odb::ingest::index_in_memory(&pack, budget) {
        let (idx, n) = (&indexed.idx, indexed.objects as usize);
        assert_eq!(&idx[..8], b"\xfftOc\0\0\0\x02");
        let last = u32::from_be_bytes(idx[1028..1032].try_into().expect("fan-out"));
        assert_eq!(last as usize, n);
        assert!(idx.len() >= 8 + 1024 + n * 28 + 40);
        assert_eq!(&idx[idx.len() - 40..idx.len() - 20], &pack[pack.len() - 20..]);
    }
});
