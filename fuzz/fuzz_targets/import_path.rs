//! Import paths from request URLs: percent-decoding then validation. A path that validates
//! becomes part of store keys and upstream URLs, so it must be tame.
#![no_main]

use goprox::path::{percent_decode, validate};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let raw = String::from_utf8_lossy(data);
    let Ok(path) = percent_decode(&raw) else {
        return;
    };
    if validate(&path).is_err() {
        return;
    }
    assert!(!path.is_empty() && path.len() <= 512, "{path:?}");
    assert!(!path.contains('\\'), "backslash in {path:?}");
    assert!(!path.contains('\0'), "NUL in {path:?}");
    assert!(
        path.is_ascii() && !path.chars().any(|c| c.is_ascii_control()),
        "{path:?}"
    );
    for seg in path.split('/') {
        assert!(!seg.is_empty(), "empty segment in {path:?}");
        // No traversal: `.` and `..` segments (and any leading dot) are refused. The
        // substring ".." inside an element (`a..b`) is allowed by `validate` and harmless.
        assert!(!seg.starts_with('.'), "dot segment in {path:?}");
    }
    assert!(!path.split('/').any(|s| s == ".."), "{path:?}");
    // Everything that validates is usable as a store key prefix.
    assert!(
        goprox::store::check_key(&path).is_ok(),
        "not a valid store key: {path:?}"
    );
});
