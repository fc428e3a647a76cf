//! Applying git deltas: the first two bytes (little endian) give the base length, the base
//! follows, the rest is the delta. Must not panic; a result has the size the delta declares.
#![no_main]

use goprox::odb::delta::{apply, sizes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let base_len = (u16::from_le_bytes(*len) as usize).min(rest.len());
    let (base, delta) = rest.split_at(base_len);
    if let Ok(out) = apply(base, delta) {
        let (base_size, result_size) = sizes(delta).expect("sizes of an applied delta");
        assert_eq!(base_size, base.len() as u64);
        assert_eq!(out.len() as u64, result_size);
    }
});
