//! GOPROXY request paths: percent-decoding, then the module front's path and version decoding
//! (`!`-escapes, the go command's path rules). A decoded module path becomes part of store keys
//! and a version part of ledger keys, so what is accepted must be tame and must round-trip.
#![no_main]

use goprox::modproxy::{Request, module, parse_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Ok(path) = goprox::path::percent_decode(&raw) else {
        return;
    };
    let Some(Ok((m, req))) = parse_request(&path) else {
        return;
    };
    assert!(module::check_path(&m).is_ok(), "{m:?}");
    let escaped = module::escape_path(&m).expect("a valid path escapes");
    assert_eq!(module::unescape_path(&escaped).as_deref(), Ok(m.as_str()));
    assert!(goprox::store::check_key(&escaped).is_ok(), "{escaped:?}");
    if let Request::Info(v) | Request::Mod(v) | Request::Zip(v) = req {
        assert!(!v.contains('/') && !v.contains('\\') && v != "." && v != "..", "{v:?}");
        let e = module::escape_version(&v).expect("a decoded version escapes");
        assert_eq!(module::unescape_version(&e).as_deref(), Ok(v.as_str()));
        assert!(goprox::store::check_key(&format!("{escaped}/@v/{e}.zip")).is_ok());
    }
});
