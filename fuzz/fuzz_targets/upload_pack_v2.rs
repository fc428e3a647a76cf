//! v2 upload-pack commands (`ls-refs`, `fetch`, ...) from the network.
#![no_main]

use goprox::protocol::request::{V2Request, parse_v2};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(V2Request::Fetch(req)) = parse_v2(data) {
        assert!(req.depth.is_none_or(|d| d > 0), "deepen 0 accepted");
        assert!(req.deepen_not.iter().all(|r| !r.is_empty()));
    }
});
