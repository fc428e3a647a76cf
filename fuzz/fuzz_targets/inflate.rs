//! zlib inflation of pack entries with a declared size: the first three bytes (little
//! endian, at most 1 MiB) are the declared size, the rest the compressed stream.
#![no_main]

use libfuzzer_sys::fuzz_target;

const MAX_DECLARED: u32 = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let Some((size, compressed)) = data.split_first_chunk::<3>() else {
        return;
    };
    let declared = u32::from_le_bytes([size[0], size[1], size[2], 0]) % (MAX_DECLARED + 1);
    if let Ok(out) = goprox::odb::inflate(compressed, declared as u64) {
        assert_eq!(out.len() as u64, declared as u64);
    }
});
