//! Creating git deltas: the first two bytes (little endian) give the base length, the base
//! follows, the rest is the target. The delta must declare both sizes, apply to the target, and
//! respect a size limit (byte 2 of the input picks one).
#![no_main]

use goprox::odb::delta::{apply, sizes};
use goprox::odb::delta_encode::DeltaIndex;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(([l0, l1, limit], rest)) = data.split_first_chunk::<3>() else {
        return;
    };
    let base_len = (u16::from_le_bytes([*l0, *l1]) as usize).min(rest.len());
    let (base, target) = rest.split_at(base_len);
    let index = DeltaIndex::new(base);
    let delta = index.encode(target, usize::MAX).expect("delta of a small base");
    assert_eq!(
        sizes(&delta).expect("sizes"),
        (base.len() as u64, target.len() as u64)
    );
    assert_eq!(apply(base, &delta).expect("apply"), target);
    // With a limit: a delta within it, or none when the unlimited one exceeds it.
    let max = delta.len() * usize::from(*limit) / 128;
    match index.encode(target, max) {
        Some(d) => {
            assert!(d.len() <= max);
            assert_eq!(apply(base, &d).expect("apply limited"), target);
        }
        None => assert!(delta.len() > max),
    }
});
