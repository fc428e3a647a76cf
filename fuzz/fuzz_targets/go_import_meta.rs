//! `<meta name="go-import">` discovery pages fetched from arbitrary hosts.
#![no_main]

use goprox::upstream::resolve::{clean_subdir, parse_go_import};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let html = String::from_utf8_lossy(data);
    for tag in parse_go_import(&html) {
        for part in [&tag.prefix, &tag.vcs, &tag.repo] {
            assert!(!part.is_empty());
            assert!(!part.contains(char::is_whitespace), "{part:?}");
        }
        assert!(!tag.subdir.contains(char::is_whitespace));
        if let Some(clean) = clean_subdir(&tag.subdir) {
            assert!(!clean.starts_with('/') && !clean.split('/').any(|p| p == ".."));
        }
    }
});
