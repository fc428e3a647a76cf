//! The module zip's file rules (`modproxy::modzip::check_files`, which calls the go command's
//! file path check) over arbitrary tree listings: never a panic, and what is included is a set
//! of valid, distinct (also case-insensitively) paths.
#![no_main]

use goprox::modproxy::modzip::{Candidate, Kind, check_files};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Lines: a kind byte ('r' regular, 's' symlink, else other), then the path; the size is the
    // line's length.
    let text = String::from_utf8_lossy(data);
    let mut files = Vec::new();
    let mut go_mod = None;
    for line in text.split('\n').take(256) {
        let mut chars = line.chars();
        let kind = match chars.next() {
            Some('r') => Kind::Regular,
            Some('s') => Kind::Symlink,
            _ => Kind::Other,
        };
        let path: String = chars.collect();
        if path == "go.mod" {
            go_mod = Some(line.as_bytes().to_vec());
        }
        files.push(Candidate {
            path,
            kind,
            size: line.len() as u64,
        });
    }
    let Ok(included) = check_files(&files, go_mod.as_deref()) else {
        return;
    };
    let mut seen = std::collections::HashSet::new();
    for i in included {
        let f = &files[i];
        assert!(matches!(f.kind, Kind::Regular), "{:?}", f.path);
        assert!(goprox::modproxy::module::check_file_path(&f.path).is_ok(), "{:?}", f.path);
        assert!(
            seen.insert(f.path.to_ascii_lowercase()),
            "case collision kept: {:?}",
            f.path
        );
    }
});
