//! v0/v1 upload-pack request bodies (stateless RPC POST) from the network.
#![no_main]

use goprox::protocol::request::parse_v0;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = parse_v0(data) {
        assert!(req.depth.is_none_or(|d| d > 0), "deepen 0 accepted");
        assert!(req.deepen_not.iter().all(|r| !r.is_empty()));
    }
});
