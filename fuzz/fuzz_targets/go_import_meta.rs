//! `<meta name="go-import">` discovery pages fetched from arbitrary hosts.
#![no_main]

use goprox::fill::resolve::parse_go_import;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let html = String::from_utf8_lossy(data);
    for (prefix, vcs, url) in parse_go_import(&html) {
        for part in [&prefix, &vcs, &url] {
            assert!(!part.is_empty());
            assert!(!part.contains(char::is_whitespace), "{part:?}");
        }
    }
});
