//! pkt-line framing: reading arbitrary bytes must not panic, and every data line read
//! re-encodes (with `write_data`) to the same framing and payload.
#![no_main]

use goprox::protocol::pktline::{MAX_DATA_LEN, Pkt, PktReader, write_data};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = PktReader::new(data);
    // Every successful pkt consumes at least 4 bytes, so this bound is never the limit.
    for _ in 0..=data.len() / 4 + 1 {
        let start = r.position();
        match r.next_pkt() {
            Ok(None) | Err(_) => break,
            Ok(Some(Pkt::Data(payload))) => {
                let raw = &data[start..r.position()];
                assert_eq!(raw.len(), payload.len() + 4);
                let mut out = Vec::new();
                write_data(&mut out, payload);
                if payload.len() <= MAX_DATA_LEN {
                    // One line: identical up to the case of the hex digits.
                    assert!(out.eq_ignore_ascii_case(raw), "{out:?} vs {raw:?}");
                }
                // In any case the encoding reads back as the same payload, in lines
                // no longer than the maximum.
                let mut back = PktReader::new(&out);
                let mut joined = Vec::new();
                while let Some(p) = back.next_pkt().expect("re-encoded pkt-lines parse") {
                    let Pkt::Data(d) = p else {
                        panic!("write_data produced {p:?}")
                    };
                    assert!(d.len() <= MAX_DATA_LEN);
                    joined.extend_from_slice(d);
                }
                assert_eq!(joined, payload);
            }
            Ok(Some(_)) => assert_eq!(r.position(), start + 4),
        }
    }
});
