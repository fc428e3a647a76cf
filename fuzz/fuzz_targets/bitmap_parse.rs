//! Parsing stored reachability bitmaps (read back from the bucket): the first 4 bytes (little
//! endian) give the pack's object count, the rest is the file, bound to an all-zero checksum.
//! Must not panic (nor allocate without bound).
#![no_main]

use goprox::odb::bitmap::Bitmaps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((n, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let objects = u32::from_le_bytes(*n) % (1 << 20);
    let checksum = [0u8; 20];
    if let Ok(b) = Bitmaps::parse(rest, &checksum, objects) {
        let _ = b.to_bytes(&checksum);
    }
});
