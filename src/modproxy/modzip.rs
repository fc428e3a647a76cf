//! Module zip construction rules, the `h1:` directory hash, and a streaming,
//! deterministic zip writer.
//!
//! The selection rules reproduce `checkFiles` from `golang.org/x/mod/zip`
//! (see NOTES-goproxy.md §4.2): which files of a module tree end up in the
//! module zip, which are silently dropped, and which make the whole version
//! unservable. The hash is `dirhash.Hash1` from `golang.org/x/mod/sumdb/dirhash`
//! (§4.5, §5).
//!
//! The zip bytes themselves need not match what proxy.golang.org serves; only
//! the `h1:` hash over file names and contents does (§4.4). [`ZipWriter`] still
//! produces the same bytes for the same input so that ETags and ranged
//! downloads stay stable.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io::{self, Write};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What a tree entry is, as git archive sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A blob with mode 100644 or 100755.
    Regular,
    /// A blob with mode 120000.
    Symlink,
    /// Gitlinks (submodules) and anything else. `git archive` lists these as
    /// directory entries, which the go command skips before any check, so
    /// [`check_files`] ignores them entirely (even with invalid names).
    Other,
}

/// One candidate file, path relative to the module root ("a/b.go"), as listed
/// from the git tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Slash-separated path relative to the module root.
    pub path: String,
    /// Entry type.
    pub kind: Kind,
    /// Content size in bytes, as it will be written to the zip (that is,
    /// after any git-archive conversion). Ignored for symlinks and `Other`.
    pub size: u64,
}

/// Why a module zip cannot be made (the version is then not servable: the
/// proxy answers 404/410 with this text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipError {
    /// A file that may not appear in a module zip (bad name, collision, ...).
    InvalidFile {
        /// Path of the offending file, relative to the module root.
        path: String,
        /// Human-readable reason, worded like the go command's.
        reason: String,
    },
    /// A size limit was exceeded.
    TooLarge {
        /// What is too large ("module source tree", "go.mod file", "LICENSE file").
        what: String,
        /// The limit in bytes.
        limit: u64,
    },
}

impl fmt::Display for ZipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ZipError::InvalidFile { path, reason } => write!(f, "{path}: {reason}"),
            ZipError::TooLarge { what, limit } => {
                write!(f, "{what} too large (max size is {limit} bytes)")
            }
        }
    }
}

impl std::error::Error for ZipError {}

/// Largest allowed module zip, and largest allowed total of the included
/// files' sizes (500 MiB).
pub const MAX_ZIP_FILE: u64 = 500 << 20;
/// Largest allowed root `go.mod` (16 MiB).
pub const MAX_GO_MOD: u64 = 16 << 20;
/// Largest allowed root `LICENSE` (16 MiB).
pub const MAX_LICENSE: u64 = 16 << 20;

// ---------------------------------------------------------------------------
// File selection (checkFiles)
// ---------------------------------------------------------------------------

const OMIT_VENDOR: &str = "file is in vendor directory";
const OMIT_SUBMODULE: &str = "file is in another module";
const OMIT_HG_ARCHIVAL: &str = "file is inserted by 'hg archive' and is always omitted";
const OMIT_SYMLINK: &str = "file is a symbolic link";

/// The full outcome of classifying a candidate list, in the shape of Go's
/// `CheckedFiles` (used by [`check_files`] and by the conformance tests).
#[derive(Debug, Default)]
struct Checked {
    /// Indices of the files that go into the zip, in input order.
    valid: Vec<usize>,
    /// Indices of silently dropped files, with the reason.
    omitted: Vec<(usize, &'static str)>,
    /// Files that make the zip impossible.
    invalid: Vec<(usize, ZipError)>,
    /// Set when the included files add up to more than [`MAX_ZIP_FILE`].
    too_large: Option<ZipError>,
}

/// checkFiles: which candidates go into the zip. `root_go_mod` is the content
/// of the module root's go.mod if the candidates have one (it decides the
/// vendor rule through its `go` directive).
///
/// `root_go_mod` is only consulted when `files` holds a [`Kind::Regular`]
/// entry named exactly `go.mod` (the go command does not read a symlinked
/// root go.mod). [`Kind::Other`] entries are skipped before any check.
///
/// Returns indices into `files` of the included files, in input order; Err on
/// the first invalid file (case-fold collisions, file/dir collisions, bad
/// names, GO.MOD at root, sizes over the limits, total over MAX_ZIP_FILE).
/// As in the go command, an oversized total wins over any other error.
pub fn check_files(
    files: &[Candidate],
    root_go_mod: Option<&[u8]>,
) -> Result<Vec<usize>, ZipError> {
    let checked = classify(files, root_go_mod);
    if let Some(e) = checked.too_large {
        return Err(e);
    }
    if let Some((_, e)) = checked.invalid.into_iter().next() {
        return Err(e);
    }
    Ok(checked.valid)
}

/// Splits a slash path into (directory including its trailing slash, base).
fn split_path(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..=i], &p[i + 1..]),
        None => ("", p),
    }
}

/// Records that a file is dropped, unless its path already has a record.
fn note_omit<'a>(
    out: &mut Checked,
    reported: &mut HashSet<&'a str>,
    p: &'a str,
    i: usize,
    reason: &'static str,
) {
    if reported.insert(p) {
        out.omitted.push((i, reason));
    }
}

/// Records that a file is invalid, unless its path already has a record.
fn note_invalid<'a>(
    out: &mut Checked,
    reported: &mut HashSet<&'a str>,
    p: &'a str,
    i: usize,
    err: ZipError,
) {
    if reported.insert(p) {
        out.invalid.push((i, err));
    }
}

/// What [`classify`] does with one file that does not go into the zip.
enum Verdict {
    /// Silently left out, for this reason.
    Omit(&'static str),
    /// Makes the zip impossible.
    Invalid(ZipError),
}

fn classify(files: &[Candidate], root_go_mod: Option<&[u8]>) -> Checked {
    let mut out = Checked::default();
    let (module_dirs, root_go_mod_regular) = nested_modules(files);
    let lang = if root_go_mod_regular {
        root_go_mod.and_then(go_lang)
    } else {
        None
    };

    // Like the go command, only the first problem per path is recorded: a
    // later problem for a path that was already omitted or rejected is
    // dropped (this can hide duplicate symlinks, which git cannot produce).
    let mut reported: HashSet<&str> = HashSet::new();
    let mut collisions = CollisionChecker::default();
    let mut budget = MAX_ZIP_FILE;

    for (i, f) in files.iter().enumerate() {
        if f.kind == Kind::Other {
            continue;
        }
        let p = f.path.as_str();
        let checked = check_name(f, lang.as_deref(), &module_dirs, &mut collisions);
        match checked {
            Ok(()) => {}
            Err(Verdict::Omit(reason)) => {
                note_omit(&mut out, &mut reported, p, i, reason);
                continue;
            }
            Err(Verdict::Invalid(e)) => {
                note_invalid(&mut out, &mut reported, p, i, e);
                continue;
            }
        }
        if f.size <= budget {
            budget -= f.size;
        } else if out.too_large.is_none() {
            out.too_large = Some(ZipError::TooLarge {
                what: "module source tree".into(),
                limit: MAX_ZIP_FILE,
            });
        }
        if let Err(e) = check_size(p, f.size) {
            note_invalid(&mut out, &mut reported, p, i, e);
            continue;
        }
        out.valid.push(i);
    }
    out
}

/// The directories holding a regular file whose base name is go.mod in any
/// letter case (nested modules; "" stands for the root itself), and whether
/// the root's go.mod is a regular file named exactly `go.mod`.
/// (Only 'k' and 's' have non-ASCII case partners, so an ASCII
/// case-insensitive comparison is exactly Unicode case folding here.)
fn nested_modules(files: &[Candidate]) -> (HashSet<&str>, bool) {
    let mut module_dirs: HashSet<&str> = HashSet::new();
    let mut root_go_mod_regular = false;
    for f in files {
        if f.kind != Kind::Regular {
            continue;
        }
        let (dir, base) = split_path(&f.path);
        if base.eq_ignore_ascii_case("go.mod") {
            module_dirs.insert(dir);
            if dir.is_empty() && base == "go.mod" {
                root_go_mod_regular = true;
            }
        }
    }
    (module_dirs, root_go_mod_regular)
}

/// Whether `p` lies below a nested module's directory (one of `module_dirs`).
fn in_submodule(module_dirs: &HashSet<&str>, p: &str) -> bool {
    let mut rest = p;
    loop {
        let (dir, _) = split_path(rest);
        if dir.is_empty() {
            return false;
        }
        if module_dirs.contains(dir) {
            return true;
        }
        rest = &dir[..dir.len() - 1];
    }
}

/// The checks of a file before its size counts, in the go command's order: a
/// clean relative path, not vendored, not in a nested module, not
/// `.hg_archival.txt`, a valid file path, a lowercase go.mod, no collision
/// (which records the path), not a symlink.
fn check_name(
    f: &Candidate,
    lang: Option<&str>,
    module_dirs: &HashSet<&str>,
    collisions: &mut CollisionChecker,
) -> Result<(), Verdict> {
    let p = f.path.as_str();
    let bad = |reason: String| {
        Verdict::Invalid(ZipError::InvalidFile {
            path: p.to_string(),
            reason,
        })
    };
    if go_path_clean(p) != p {
        return Err(bad("file path is not clean".into()));
    }
    if p.starts_with('/') {
        return Err(bad("file path is not relative".into()));
    }
    if is_vendored_package(p, lang) {
        return Err(Verdict::Omit(OMIT_VENDOR));
    }
    if in_submodule(module_dirs, p) {
        return Err(Verdict::Omit(OMIT_SUBMODULE));
    }
    if p == ".hg_archival.txt" {
        return Err(Verdict::Omit(OMIT_HG_ARCHIVAL));
    }
    super::module::check_file_path(p).map_err(bad)?;
    // strings.ToLower maps no non-ASCII rune onto a letter of "go.mod".
    if p.eq_ignore_ascii_case("go.mod") && p != "go.mod" {
        return Err(bad("go.mod files must have lowercase names".into()));
    }
    collisions.check(p, false).map_err(bad)?;
    if f.kind == Kind::Symlink {
        return Err(Verdict::Omit(OMIT_SYMLINK));
    }
    Ok(())
}

/// The size limits of the root's go.mod and LICENSE.
fn check_size(p: &str, size: u64) -> Result<(), ZipError> {
    if p == "go.mod" && size > MAX_GO_MOD {
        return Err(ZipError::TooLarge {
            what: "go.mod file".into(),
            limit: MAX_GO_MOD,
        });
    }
    if p == "LICENSE" && size > MAX_LICENSE {
        return Err(ZipError::TooLarge {
            what: "LICENSE file".into(),
            limit: MAX_LICENSE,
        });
    }
    Ok(())
}

/// isVendoredPackage with both the pre-1.24 and 1.24 rules (exposed for tests).
///
/// `go_lang` is the root go.mod's language version as returned by [`go_lang`]
/// ("1.24"; a "go" prefix is tolerated). `None` or an unparseable value
/// selects the pre-1.24 rules, which keep `vendor/modules.txt` and, through a
/// long-standing offset bug, drop almost everything below a nested `vendor/`
/// directory (golang/go#37397).
pub fn is_vendored_package(name: &str, go_lang: Option<&str>) -> bool {
    let new_rules = go_lang.is_some_and(|v| {
        let v = v.strip_prefix("go").unwrap_or(v);
        gover_compare(v, "1.24") != std::cmp::Ordering::Less
    });
    if new_rules && name == "vendor/modules.txt" {
        return true;
    }
    let start = if name.starts_with("vendor/") {
        "vendor/".len()
    } else if let Some(j) = name.find("/vendor/") {
        if new_rules {
            j + "/vendor/".len()
        } else {
            // The historical rule measures from the start of the name, not
            // from where "/vendor/" was found; hashes depend on it.
            "/vendor/".len()
        }
    } else {
        return false;
    };
    name.as_bytes()
        .get(start..)
        .is_some_and(|rest| rest.contains(&b'/'))
}

/// Go's `path.Clean`, on bytes (the path may hold any UTF-8).
fn go_path_clean(p: &str) -> Cow<'_, str> {
    let b = p.as_bytes();
    if b.is_empty() {
        return Cow::Borrowed(".");
    }
    let rooted = b[0] == b'/';
    let n = b.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let mut r = 0;
    let mut dotdot = 0;
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if b[r] == b'/' || (b[r] == b'.' && (r + 1 == n || b[r + 1] == b'/')) {
            // An empty or "." element.
            r += 1;
        } else if b[r] == b'.' && b[r + 1] == b'.' && (r + 2 == n || b[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                out.pop();
                while out.len() > dotdot && out.last() != Some(&b'/') {
                    out.pop();
                }
                // Drop the separating slash too (unless it is the root).
                if out.len() > dotdot && out.last() == Some(&b'/') {
                    out.pop();
                }
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && b[r] != b'/' {
                out.push(b[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return Cow::Borrowed(".");
    }
    if out == b {
        return Cow::Borrowed(p);
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Finds case-insensitive name collisions and paths used both as a file and
/// as a directory, like x/mod's collisionChecker.
#[derive(Default)]
struct CollisionChecker {
    /// Folded path → (original path, is a directory).
    seen: HashMap<String, (String, bool)>,
}

impl CollisionChecker {
    fn check(&mut self, path: &str, is_dir: bool) -> Result<(), String> {
        let mut p = path;
        let mut dir = is_dir;
        loop {
            let key = str_to_fold(p);
            match self.seen.get(key.as_ref()) {
                Some((other, other_dir)) => {
                    if other != p {
                        return Err(format!(
                            "case-insensitive file name collision: {} and {}",
                            go_quote(other),
                            go_quote(p)
                        ));
                    }
                    if *other_dir != dir {
                        return Err(format!(
                            "entry {} is both a file and a directory",
                            go_quote(p)
                        ));
                    }
                    if !dir {
                        return Err(format!("multiple entries for file {}", go_quote(p)));
                    }
                }
                None => {
                    self.seen.insert(key.into_owned(), (p.to_string(), dir));
                }
            }
            match p.rfind('/') {
                Some(i) => {
                    p = &p[..i];
                    dir = true;
                }
                None => return Ok(()),
            }
        }
    }
}

/// A key such that two strings have equal keys exactly when Go's
/// `strings.EqualFold` considers them equal (simple Unicode case folding).
fn str_to_fold(s: &str) -> Cow<'_, str> {
    if s.bytes().all(|c| c.is_ascii() && !c.is_ascii_uppercase()) {
        return Cow::Borrowed(s);
    }
    Cow::Owned(s.chars().map(fold_char).collect())
}

fn single_char(mut it: impl Iterator<Item = char>) -> Option<char> {
    let c = it.next()?;
    if it.next().is_some() { None } else { Some(c) }
}

/// Maps a character to a representative of its simple case-folding orbit.
/// Checked against Go's `unicode.SimpleFold` orbits over all code points; the
/// explicit cases are where Rust's case mappings and Go's orbits disagree.
fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    match c {
        // Dotless i has no simple folding partner in Go.
        '\u{0131}' => return c,
        // Pairs joined by CaseFolding.txt but not by the case mappings.
        '\u{1FD3}' => return '\u{0390}',
        '\u{1FE3}' => return '\u{03B0}',
        '\u{FB06}' => return '\u{FB05}',
        _ => {}
    }
    let upper = single_char(c.to_uppercase()).unwrap_or(c);
    single_char(upper.to_lowercase()).unwrap_or(upper)
}

/// Quotes a string the way Go's `%q` does for the names that reach the
/// collision checker (printable text; control characters escaped).
fn go_quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            '\r' => q.push_str("\\r"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                q.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

// ---------------------------------------------------------------------------
// go.mod `go` directive (modfile.ParseLax + go/version.Lang)
// ---------------------------------------------------------------------------

/// The go directive's language version of a go.mod ("1.24" for `go 1.24.1`),
/// None if absent or unparseable (lax, as modfile.ParseLax then version.Lang).
///
/// As with ParseLax, any syntax error, or an error in a `go`, `module`,
/// `require` or `ignore` statement, makes the whole file unparseable (None),
/// while unknown statements and blocks are ignored. Known gap: identifier
/// characters are judged without Unicode's unassigned-code-point table, so a
/// bare unassigned code point outside strings and comments is accepted here
/// but rejected by Go.
pub fn go_lang(go_mod: &[u8]) -> Option<String> {
    let version = gomod::lax_go_version(go_mod)?;
    let v = gover_parse(&version)?;
    if v.major == "1" && v.minor == "0" {
        Some(v.major.to_string())
    } else {
        Some(format!("{}.{}", v.major, v.minor))
    }
}

/// A parsed Go toolchain version (`internal/gover`): decimal strings kept as
/// text so that arbitrarily long numbers compare correctly.
#[derive(Debug, Default, PartialEq, Eq)]
struct GoVer<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    kind: &'a str,
    pre: &'a str,
}

/// Splits off a leading decimal number without superfluous leading zeros.
fn cut_int(x: &str) -> Option<(&str, &str)> {
    let n = x.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || (x.as_bytes()[0] == b'0' && n != 1) {
        return None;
    }
    Some((&x[..n], &x[n..]))
}

fn gover_parse(x: &str) -> Option<GoVer<'_>> {
    let mut v = GoVer::default();
    let (major, rest) = cut_int(x)?;
    v.major = major;
    if rest.is_empty() {
        v.minor = "0";
        v.patch = "0";
        return Some(v);
    }
    let rest = rest.strip_prefix('.')?;
    let (minor, rest) = cut_int(rest)?;
    v.minor = minor;
    if rest.is_empty() {
        if cmp_int(minor, "21") == std::cmp::Ordering::Less {
            v.patch = "0";
        }
        return Some(v);
    }
    if let Some(p) = rest.strip_prefix('.') {
        let (patch, rest) = cut_int(p)?;
        if !rest.is_empty() {
            return None;
        }
        v.patch = patch;
        return Some(v);
    }
    let letters = rest.bytes().take_while(u8::is_ascii_lowercase).count();
    let after = &rest[letters..];
    if letters == 0 || after.bytes().next().is_some_and(|c| !c.is_ascii_digit()) {
        return None;
    }
    v.kind = &rest[..letters];
    if after.is_empty() {
        return Some(v);
    }
    let (pre, tail) = cut_int(after)?;
    if !tail.is_empty() {
        return None;
    }
    v.pre = pre;
    Some(v)
}

/// Compares decimal strings without leading zeros (or empty strings).
fn cmp_int(x: &str, y: &str) -> std::cmp::Ordering {
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// `gover.Compare`: invalid versions sort before all valid ones.
fn gover_compare(x: &str, y: &str) -> std::cmp::Ordering {
    let vx = gover_parse(x).unwrap_or_default();
    let vy = gover_parse(y).unwrap_or_default();
    cmp_int(vx.major, vy.major)
        .then_with(|| cmp_int(vx.minor, vy.minor))
        .then_with(|| cmp_int(vx.patch, vy.patch))
        .then_with(|| vx.kind.cmp(vy.kind))
        .then_with(|| cmp_int(vx.pre, vy.pre))
}

/// A small re-implementation of the parts of `golang.org/x/mod/modfile`'s
/// lax parser that decide whether a go.mod parses and what its `go`
/// directive says.
mod gomod {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Tk {
        Eof,
        /// A comment following other tokens on its line (ends the line).
        EolComment,
        /// A comment alone on its line.
        Comment,
        Newline,
        LParen,
        RParen,
        Punct,
        Str,
        Ident,
    }

    impl Tk {
        fn is_eol(self) -> bool {
            matches!(self, Tk::Eof | Tk::EolComment | Tk::Newline)
        }
    }

    type Tok<'a> = (Tk, &'a [u8]);

    /// Parse failure; the details do not matter to callers.
    struct Bad;

    /// Decodes one UTF-8 sequence; invalid input yields U+FFFD over one byte.
    fn decode(b: &[u8]) -> (char, usize) {
        let Some(&first) = b.first() else {
            return ('\0', 0);
        };
        let len = match first {
            0x00..=0x7f => 1,
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => return ('\u{FFFD}', 1),
        };
        match b.get(..len).and_then(|s| std::str::from_utf8(s).ok()) {
            Some(s) => (s.chars().next().unwrap_or('\u{FFFD}'), len),
            None => ('\u{FFFD}', 1),
        }
    }

    /// Unicode format characters (category Cf), which Go does not consider
    /// printable.
    fn is_format(c: char) -> bool {
        matches!(c as u32,
            0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2
            | 0x180E | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064
            | 0x2066..=0x206F | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD
            | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A
            | 0xE0001 | 0xE0020..=0xE007F)
    }

    fn is_private_use(c: char) -> bool {
        matches!(c as u32, 0xE000..=0xF8FF | 0xF0000..=0xFFFFD | 0x100000..=0x10FFFD)
    }

    /// modfile's identifier rune test: printable, not space, not punctuation.
    fn is_ident(c: char) -> bool {
        match c {
            ' ' | '(' | ')' | '[' | ']' | '{' | '}' | ',' => false,
            c => {
                !c.is_whitespace()
                    && !c.is_control()
                    && !is_format(c)
                    && !is_private_use(c)
                    && !matches!(c as u32, 0xFFFE | 0xFFFF)
            }
        }
    }

    struct Lexer<'a> {
        data: &'a [u8],
        pos: usize,
    }

    impl<'a> Lexer<'a> {
        fn rest(&self) -> &'a [u8] {
            &self.data[self.pos..]
        }

        fn token(&mut self) -> Result<Tok<'a>, Bad> {
            if let Some(comment) = self.skip_blanks()? {
                return Ok(comment);
            }
            let start = self.pos;
            let Some(&c) = self.data.get(self.pos) else {
                return Ok((Tk::Eof, &[]));
            };
            let punct = match c {
                b'\n' => Some(Tk::Newline),
                b'(' => Some(Tk::LParen),
                b')' => Some(Tk::RParen),
                b'[' | b']' | b'{' | b'}' | b',' => Some(Tk::Punct),
                _ => None,
            };
            if let Some(kind) = punct {
                self.pos += 1;
                return Ok((kind, &self.data[start..self.pos]));
            }
            if c == b'"' || c == b'`' {
                return self.quoted(c);
            }
            self.ident()
        }

        /// Skips spaces, tabs and carriage returns; a `//` comment met on the way is the
        /// token (`None`: the next token starts here).
        fn skip_blanks(&mut self) -> Result<Option<Tok<'a>>, Bad> {
            while let Some(&c) = self.data.get(self.pos) {
                if c == b' ' || c == b'\t' || c == b'\r' {
                    self.pos += 1;
                    continue;
                }
                if self.rest().starts_with(b"//") {
                    let start = self.pos;
                    let line_start = self.data[..start]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |i| i + 1);
                    let alone = self.data[line_start..start]
                        .iter()
                        .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
                    let end = self
                        .rest()
                        .iter()
                        .position(|&b| b == b'\n')
                        .map_or(self.data.len(), |i| self.pos + i + 1);
                    self.pos = end;
                    let kind = if alone { Tk::Comment } else { Tk::EolComment };
                    return Ok(Some((kind, &self.data[start..end])));
                }
                if self.rest().starts_with(b"/*") {
                    return Err(Bad);
                }
                break;
            }
            Ok(None)
        }

        /// A string quoted with `quote` (`"` or a backquote), on one line.
        fn quoted(&mut self, quote: u8) -> Result<Tok<'a>, Bad> {
            let start = self.pos;
            self.pos += 1;
            loop {
                let Some(&d) = self.data.get(self.pos) else {
                    return Err(Bad);
                };
                if d == b'\n' {
                    return Err(Bad);
                }
                self.pos += 1;
                if d == quote {
                    break;
                }
                if d == b'\\' && quote != b'`' {
                    if self.pos >= self.data.len() {
                        return Err(Bad);
                    }
                    self.pos += 1;
                }
            }
            Ok((Tk::Str, &self.data[start..self.pos]))
        }

        /// An identifier: identifier runes up to a non-identifier rune or a comment.
        fn ident(&mut self) -> Result<Tok<'a>, Bad> {
            let start = self.pos;
            let (first, _) = decode(self.rest());
            if !is_ident(first) {
                return Err(Bad);
            }
            loop {
                let (r, size) = decode(self.rest());
                if size == 0 || !is_ident(r) {
                    break;
                }
                if self.rest().starts_with(b"//") {
                    break;
                }
                if self.rest().starts_with(b"/*") {
                    return Err(Bad);
                }
                self.pos += size;
            }
            Ok((Tk::Ident, &self.data[start..self.pos]))
        }
    }

    enum Stmt<'a> {
        Line(Vec<&'a [u8]>),
        Block(Vec<&'a [u8]>, Vec<Vec<&'a [u8]>>),
    }

    struct Parser<'a> {
        lx: Lexer<'a>,
        peeked: Tok<'a>,
    }

    impl<'a> Parser<'a> {
        fn lex(&mut self) -> Result<Tok<'a>, Bad> {
            let t = self.peeked;
            self.peeked = self.lx.token()?;
            Ok(t)
        }

        fn file(&mut self) -> Result<Vec<Stmt<'a>>, Bad> {
            let mut stmts = Vec::new();
            loop {
                match self.peeked.0 {
                    Tk::Newline | Tk::Comment => {
                        self.lex()?;
                    }
                    Tk::Eof => return Ok(stmts),
                    _ => stmts.push(self.stmt()?),
                }
            }
        }

        fn stmt(&mut self) -> Result<Stmt<'a>, Bad> {
            let first = self.lex()?;
            let mut tokens = vec![first.1];
            loop {
                let tok = self.lex()?;
                if tok.0.is_eol() {
                    return Ok(Stmt::Line(tokens));
                }
                if tok.0 == Tk::LParen {
                    if self.peeked.0.is_eol() {
                        let lines = self.block()?;
                        return Ok(Stmt::Block(tokens, lines));
                    }
                    if self.peeked.0 == Tk::RParen {
                        let rparen = self.lex()?;
                        if self.peeked.0.is_eol() {
                            self.lex()?;
                            return Ok(Stmt::Block(tokens, Vec::new()));
                        }
                        tokens.push(tok.1);
                        tokens.push(rparen.1);
                        continue;
                    }
                }
                tokens.push(tok.1);
            }
        }

        fn block(&mut self) -> Result<Vec<Vec<&'a [u8]>>, Bad> {
            let mut lines = Vec::new();
            loop {
                match self.peeked.0 {
                    Tk::EolComment | Tk::Newline | Tk::Comment => {
                        self.lex()?;
                    }
                    Tk::Eof => return Err(Bad),
                    Tk::RParen => {
                        self.lex()?;
                        if !self.peeked.0.is_eol() {
                            return Err(Bad);
                        }
                        self.lex()?;
                        return Ok(lines);
                    }
                    _ => {
                        let mut line = Vec::new();
                        loop {
                            let tok = self.lex()?;
                            if tok.0.is_eol() {
                                break;
                            }
                            line.push(tok.1);
                        }
                        lines.push(line);
                    }
                }
            }
        }
    }

    /// The (possibly lax-corrected) `go` directive version, or None when the
    /// file has no go directive or does not parse in lax mode.
    pub(super) fn lax_go_version(data: &[u8]) -> Option<String> {
        let mut lx = Lexer { data, pos: 0 };
        let peeked = lx.token().ok()?;
        let mut p = Parser { lx, peeked };
        let stmts = p.file().ok()?;
        let mut st = State::default();
        for s in &stmts {
            match s {
                Stmt::Line(toks) => {
                    if let Some((verb, args)) = toks.split_first() {
                        st.add(verb, args).ok()?;
                    }
                }
                Stmt::Block(head, lines) => {
                    if head.len() != 1 {
                        continue;
                    }
                    let verb = head[0];
                    if !matches!(
                        verb,
                        b"module"
                            | b"godebug"
                            | b"require"
                            | b"exclude"
                            | b"replace"
                            | b"retract"
                            | b"tool"
                            | b"ignore"
                    ) {
                        continue;
                    }
                    for l in lines {
                        st.add(verb, l).ok()?;
                    }
                }
            }
        }
        st.go
    }

    #[derive(Default)]
    struct State {
        go: Option<String>,
        module_seen: bool,
    }

    impl State {
        fn add(&mut self, verb: &[u8], args: &[&[u8]]) -> Result<(), Bad> {
            match verb {
                b"go" => {
                    if self.go.is_some() || args.len() != 1 {
                        return Err(Bad);
                    }
                    let a = args[0];
                    let v = if strict_go_version(a) {
                        a
                    } else {
                        lax_go_version_fix(a).ok_or(Bad)?
                    };
                    self.go = Some(String::from_utf8_lossy(v).into_owned());
                }
                b"module" => {
                    if self.module_seen {
                        return Err(Bad);
                    }
                    self.module_seen = true;
                    if args.len() != 1 {
                        return Err(Bad);
                    }
                    parse_string(args[0])?;
                }
                b"require" => {
                    if args.len() != 2 {
                        return Err(Bad);
                    }
                    let path = parse_string(args[0])?;
                    let ver = parse_string(args[1])?;
                    let ver = std::str::from_utf8(&ver).map_err(|_| Bad)?;
                    let canonical = super::canonical_version(ver).ok_or(Bad)?;
                    let major = split_path_major(&path).ok_or(Bad)?;
                    if !check_path_major(&canonical, major) {
                        return Err(Bad);
                    }
                }
                b"ignore" => {
                    if args.len() != 1 {
                        return Err(Bad);
                    }
                    parse_string(args[0])?;
                }
                // Lax mode drops every other statement; retract errors are
                // only reported for the main module.
                _ => {}
            }
            Ok(())
        }
    }

    /// Consumes `[1-9][0-9]*` or, when `zero_ok`, also a lone `0`.
    fn number(s: &[u8], i: usize, zero_ok: bool) -> Option<usize> {
        match s.get(i) {
            Some(b'0') if zero_ok => Some(i + 1),
            Some(b'1'..=b'9') => {
                Some(i + 1 + s[i + 1..].iter().take_while(|b| b.is_ascii_digit()).count())
            }
            _ => None,
        }
    }

    /// `^([1-9][0-9]*)\.(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))?([a-z]+[0-9]+)?$`
    fn strict_go_version(s: &[u8]) -> bool {
        let Some(mut i) = number(s, 0, false) else {
            return false;
        };
        if s.get(i) != Some(&b'.') {
            return false;
        }
        let Some(j) = number(s, i + 1, true) else {
            return false;
        };
        i = j;
        if s.get(i) == Some(&b'.') {
            let Some(j) = number(s, i + 1, true) else {
                return false;
            };
            i = j;
        }
        if s.get(i).is_some_and(u8::is_ascii_lowercase) {
            let letters = s[i..].iter().take_while(|b| b.is_ascii_lowercase()).count();
            let digits = s[i + letters..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if digits == 0 {
                return false;
            }
            i += letters + digits;
        }
        i == s.len()
    }

    /// `^v?(([1-9][0-9]*)\.(0|[1-9][0-9]*))([^0-9].*)$`, returning group 1.
    fn lax_go_version_fix(s: &[u8]) -> Option<&[u8]> {
        let start = usize::from(s.first() == Some(&b'v'));
        let i = number(s, start, false)?;
        if s.get(i) != Some(&b'.') {
            return None;
        }
        let end = number(s, i + 1, true)?;
        match s.get(end) {
            Some(c) if !c.is_ascii_digit() => Some(&s[start..end]),
            _ => None,
        }
    }

    /// modfile's parseString: Go-quoted strings are unquoted; unquoted text
    /// may not contain any quote character.
    fn parse_string(tok: &[u8]) -> Result<Vec<u8>, Bad> {
        if tok.first() == Some(&b'"') {
            return unquote(tok);
        }
        if tok.iter().any(|b| matches!(b, b'"' | b'\'' | b'`')) {
            return Err(Bad);
        }
        Ok(tok.to_vec())
    }

    fn hex_val(b: u8) -> Option<u32> {
        (b as char).to_digit(16)
    }

    /// strconv.Unquote for a double-quoted token (the lexer guarantees the
    /// surrounding quotes and the absence of raw newlines).
    fn unquote(tok: &[u8]) -> Result<Vec<u8>, Bad> {
        if tok.len() < 2 || tok[tok.len() - 1] != b'"' {
            return Err(Bad);
        }
        let s = &tok[1..tok.len() - 1];
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            if c == b'"' || c == b'\n' {
                return Err(Bad);
            }
            if c >= 0x80 {
                let (r, size) = decode(&s[i..]);
                let mut buf = [0u8; 4];
                out.extend_from_slice(r.encode_utf8(&mut buf).as_bytes());
                i += size;
                continue;
            }
            if c != b'\\' {
                out.push(c);
                i += 1;
                continue;
            }
            let e = *s.get(i + 1).ok_or(Bad)?;
            i += 2;
            match e {
                b'a' => out.push(7),
                b'b' => out.push(8),
                b'f' => out.push(12),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'v' => out.push(11),
                b'\\' => out.push(b'\\'),
                b'"' => out.push(b'"'),
                b'x' | b'u' | b'U' => {
                    let n = match e {
                        b'x' => 2,
                        b'u' => 4,
                        _ => 8,
                    };
                    let digits = s.get(i..i + n).ok_or(Bad)?;
                    let mut v: u32 = 0;
                    for &d in digits {
                        v = (v << 4) | hex_val(d).ok_or(Bad)?;
                    }
                    i += n;
                    if e == b'x' {
                        out.push(v as u8);
                    } else {
                        let r = char::from_u32(v).ok_or(Bad)?;
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(r.encode_utf8(&mut buf).as_bytes());
                    }
                }
                b'0'..=b'7' => {
                    let digits = s.get(i..i + 2).ok_or(Bad)?;
                    let mut v = u32::from(e - b'0');
                    for &d in digits {
                        if !(b'0'..=b'7').contains(&d) {
                            return Err(Bad);
                        }
                        v = (v << 3) | u32::from(d - b'0');
                    }
                    if v > 255 {
                        return Err(Bad);
                    }
                    i += 2;
                    out.push(v as u8);
                }
                _ => return Err(Bad),
            }
        }
        Ok(out)
    }

    /// module.SplitPathVersion, returning only the path-major suffix
    /// ("", "/v2", ".v1", ".v2-unstable"); None if the path is malformed.
    fn split_path_major(path: &[u8]) -> Option<&str> {
        if path.starts_with(b"gopkg.in/") {
            let mut i = path.len();
            if path.ends_with(b"-unstable") {
                i -= "-unstable".len();
            }
            while i > 0 && path[i - 1].is_ascii_digit() {
                i -= 1;
            }
            if i <= 1 || path[i - 1] != b'v' || path[i - 2] != b'.' {
                return None;
            }
            let major = std::str::from_utf8(&path[i - 2..]).ok()?;
            let mb = major.as_bytes();
            if mb.len() <= 2 || (mb[2] == b'0' && major != ".v0") {
                return None;
            }
            return Some(major);
        }
        let mut i = path.len();
        let mut dot = false;
        while i > 0 && (path[i - 1].is_ascii_digit() || path[i - 1] == b'.') {
            if path[i - 1] == b'.' {
                dot = true;
            }
            i -= 1;
        }
        if i <= 1 || i == path.len() || path[i - 1] != b'v' || path[i - 2] != b'/' {
            return Some("");
        }
        let major = std::str::from_utf8(&path[i - 2..]).ok()?;
        let mb = major.as_bytes();
        if dot || mb.len() <= 2 || mb[2] == b'0' || major == "/v1" {
            return None;
        }
        Some(major)
    }

    /// module.CheckPathMajor for a canonical version.
    fn check_path_major(v: &str, path_major: &str) -> bool {
        let mut pm = path_major;
        if pm.starts_with(".v") {
            pm = pm.strip_suffix("-unstable").unwrap_or(pm);
        }
        if v.starts_with("v0.0.0-") && pm == ".v1" {
            return true;
        }
        let major = super::semver_major(v);
        if pm.is_empty() {
            return major == "v0" || major == "v1" || v.ends_with("+incompatible");
        }
        pm.len() > 1 && major == pm[1..]
    }
}

/// The components of a valid semantic version.
struct Semver<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    prerelease: &'a str,
    build: &'a str,
}

/// `golang.org/x/mod/semver`'s parser (accepts the "v1" and "v1.2" shorthands).
fn semver_parse(v: &str) -> Option<Semver<'_>> {
    fn num(s: &str) -> Option<(&str, &str)> {
        let n = s.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || (n > 1 && s.starts_with('0')) {
            return None;
        }
        Some((&s[..n], &s[n..]))
    }
    fn idents(s: &str, numeric_rule: bool) -> bool {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !(numeric_rule
                    && id.len() > 1
                    && id.starts_with('0')
                    && id.bytes().all(|b| b.is_ascii_digit()))
        })
    }
    let rest = v.strip_prefix('v')?;
    let (major, rest) = num(rest)?;
    let mut sv = Semver {
        major,
        minor: "0",
        patch: "0",
        prerelease: "",
        build: "",
    };
    if rest.is_empty() {
        return Some(sv);
    }
    let (minor, rest) = num(rest.strip_prefix('.')?)?;
    sv.minor = minor;
    if rest.is_empty() {
        return Some(sv);
    }
    let (patch, mut rest) = num(rest.strip_prefix('.')?)?;
    sv.patch = patch;
    if rest.starts_with('-') {
        let end = rest.find('+').unwrap_or(rest.len());
        if !idents(&rest[1..end], true) {
            return None;
        }
        sv.prerelease = &rest[..end];
        rest = &rest[end..];
    }
    if rest.starts_with('+') {
        if !idents(&rest[1..], false) {
            return None;
        }
        sv.build = rest;
        rest = "";
    }
    if !rest.is_empty() {
        return None;
    }
    Some(sv)
}

/// module.CanonicalVersion: "v1.2" → "v1.2.0"; keeps "+incompatible".
fn canonical_version(v: &str) -> Option<String> {
    let sv = semver_parse(v)?;
    let mut c = format!("v{}.{}.{}{}", sv.major, sv.minor, sv.patch, sv.prerelease);
    if sv.build == "+incompatible" {
        c.push_str("+incompatible");
    }
    Some(c)
}

/// semver.Major ("v2" for "v2.1.0"), "" if invalid.
fn semver_major(v: &str) -> String {
    semver_parse(v).map_or_else(String::new, |sv| format!("v{}", sv.major))
}

// ---------------------------------------------------------------------------
// dirhash
// ---------------------------------------------------------------------------

/// Lowercase hex SHA-256 of `data`, the per-file digest [`hash1`] expects.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// h1: dirhash.Hash1 over (full zip name, lowercase hex sha256 of content)
/// pairs; sorts itself; Err if a name has '\n'.
///
/// Names sort bytewise, as Go's `sort.Strings` does. The digest is
/// `sha256` over one line per file, `"<hex>  <name>\n"`, encoded as padded
/// standard base64 after the `h1:` prefix.
// The signature is shared with other modules; sorting in place is the point.
#[allow(clippy::ptr_arg)]
pub fn hash1(files: &mut Vec<(String, String)>) -> Result<String, String> {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Sha256::new();
    for (name, digest) in files.iter() {
        if name.contains('\n') {
            return Err("dirhash: filenames with newlines are not supported".into());
        }
        h.update(digest.as_bytes());
        h.update(b"  ");
        h.update(name.as_bytes());
        h.update(b"\n");
    }
    Ok(format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(h.finalize())
    ))
}

/// The go.mod hash as go.sum records it for `<v>/go.mod` (name "go.mod").
pub fn go_mod_hash(data: &[u8]) -> String {
    let mut files = vec![("go.mod".to_string(), sha256_hex(data))];
    // The only failure is a newline in a name, and "go.mod" has none.
    hash1(&mut files).unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Zip writer
// ---------------------------------------------------------------------------

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_END: u32 = 0x0605_4b50;
const SIG_END64: u32 = 0x0606_4b50;
const SIG_LOCATOR64: u32 = 0x0706_4b50;
const VERSION_20: u16 = 20;
const VERSION_45: u16 = 45;
const FLAG_UTF8: u16 = 0x0800;
const METHOD_STORE: u16 = 0;
const METHOD_DEFLATE: u16 = 8;
const EXTRA_ZIP64: u16 = 0x0001;
const U32_MAX: u64 = 0xFFFF_FFFF;
const U16_MAX: u64 = 0xFFFF;
/// Smallest entry the writer tries to deflate.
const MIN_DEFLATE: usize = 64;

/// A deterministic zip writer: entries in the order added, Deflate (level 6)
/// or Store when deflating does not make the entry smaller (and always for
/// entries under 64 bytes), zero modification time and date fields (what Go's
/// `zip.Writer.Create` writes; tools show it as 1980-00-00 00:00), no
/// directory entries, the UTF-8 flag for names outside printable ASCII (Go's
/// rule, which also covers `~` and `\`), ZIP64 records when there are 65,535
/// or more entries or when sizes or offsets reach 4 GiB.
///
/// Writes straight to `W` as files are added (streams; it keeps only the
/// central directory in memory).
pub struct ZipWriter<W: Write> {
    out: W,
    /// Bytes written so far (the offset of the next record).
    offset: u64,
    /// Central directory records, ready to be written by `finish`.
    central: Vec<u8>,
    entries: u64,
    /// Raw-deflate state, reset and reused for every entry.
    deflater: flate2::Compress,
}

fn put16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

/// Clamps a 64-bit size to a 32-bit header field (0xFFFFFFFF means "see the
/// ZIP64 extra field").
fn field32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Go's archive/zip sets the UTF-8 flag for anything outside 0x20..=0x7d
/// and for a backslash.
fn needs_utf8_flag(name: &str) -> bool {
    name.bytes()
        .any(|b| !(0x20..=0x7d).contains(&b) || b == b'\\')
}

/// What an entry's local header and central directory record both say.
struct EntryFields<'a> {
    name: &'a str,
    name_len: u16,
    flags: u16,
    method: u16,
    crc: u32,
    /// Uncompressed size.
    usize64: u64,
    /// Compressed size.
    csize64: u64,
}

impl EntryFields<'_> {
    /// Whether a size needs the ZIP64 extra field.
    fn sizes_need_zip64(&self) -> bool {
        self.usize64 >= U32_MAX || self.csize64 >= U32_MAX
    }
}

/// An entry's local file header (with its ZIP64 extra field when a size needs it).
fn local_header(e: &EntryFields<'_>) -> Vec<u8> {
    let local_zip64 = e.sizes_need_zip64();
    let mut local = Vec::with_capacity(30 + e.name.len() + 20);
    put32(&mut local, SIG_LOCAL);
    put16(
        &mut local,
        if local_zip64 { VERSION_45 } else { VERSION_20 },
    );
    put16(&mut local, e.flags);
    put16(&mut local, e.method);
    put16(&mut local, 0); // modification time
    put16(&mut local, 0); // modification date
    put32(&mut local, e.crc);
    if local_zip64 {
        put32(&mut local, u32::MAX);
        put32(&mut local, u32::MAX);
    } else {
        put32(&mut local, field32(e.csize64));
        put32(&mut local, field32(e.usize64));
    }
    put16(&mut local, e.name_len);
    put16(&mut local, if local_zip64 { 20 } else { 0 });
    local.extend_from_slice(e.name.as_bytes());
    if local_zip64 {
        put16(&mut local, EXTRA_ZIP64);
        put16(&mut local, 16);
        put64(&mut local, e.usize64);
        put64(&mut local, e.csize64);
    }
    local
}

/// Appends an entry's central directory record to `c`; its local header is at
/// `header_offset`.
fn central_record(c: &mut Vec<u8>, e: &EntryFields<'_>, header_offset: u64) {
    // As Go does, a ZIP64 central record carries all three 64-bit values.
    let zip64 = e.sizes_need_zip64() || header_offset >= U32_MAX;
    put32(c, SIG_CENTRAL);
    put16(c, if zip64 { VERSION_45 } else { VERSION_20 }); // made by (MS-DOS)
    put16(c, if zip64 { VERSION_45 } else { VERSION_20 }); // needed
    put16(c, e.flags);
    put16(c, e.method);
    put16(c, 0);
    put16(c, 0);
    put32(c, e.crc);
    if zip64 {
        put32(c, u32::MAX);
        put32(c, u32::MAX);
    } else {
        put32(c, field32(e.csize64));
        put32(c, field32(e.usize64));
    }
    put16(c, e.name_len);
    put16(c, if zip64 { 28 } else { 0 });
    put16(c, 0); // comment length
    put16(c, 0); // disk number
    put16(c, 0); // internal attributes
    put32(c, 0); // external attributes
    put32(
        c,
        if zip64 {
            u32::MAX
        } else {
            field32(header_offset)
        },
    );
    c.extend_from_slice(e.name.as_bytes());
    if zip64 {
        put16(c, EXTRA_ZIP64);
        put16(c, 24);
        put64(c, e.usize64);
        put64(c, e.csize64);
        put64(c, header_offset);
    }
}

impl<W: Write> ZipWriter<W> {
    /// Starts a zip that will be written to `out`.
    pub fn new(out: W) -> Self {
        ZipWriter {
            out,
            offset: 0,
            central: Vec::new(),
            entries: 0,
            deflater: flate2::Compress::new(flate2::Compression::new(6), false),
        }
    }

    /// Raw-deflates `data` at level 6, giving up (None) as soon as the
    /// output would not be smaller than the input. Inputs under
    /// [`MIN_DEFLATE`] bytes are always stored: the gain is a few bytes at
    /// best, and resetting the deflate state costs more than that.
    fn deflate(&mut self, data: &[u8]) -> io::Result<Option<Vec<u8>>> {
        if data.len() < MIN_DEFLATE {
            return Ok(None);
        }
        let d = &mut self.deflater;
        d.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        loop {
            let consumed = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
            let input = data.get(consumed..).unwrap_or_default();
            if out.len() == out.capacity() {
                out.reserve(out.capacity());
            }
            let status = d
                .compress_vec(input, &mut out, flate2::FlushCompress::Finish)
                .map_err(io::Error::other)?;
            if out.len() >= data.len() {
                return Ok(None);
            }
            if status == flate2::Status::StreamEnd {
                return Ok(Some(out));
            }
        }
    }

    fn emit(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Adds one file with its whole content. Sizes and CRC are known up
    /// front, so the local header carries them (no data descriptor).
    pub fn add(&mut self, name: &str, data: &[u8]) -> io::Result<()> {
        let name_len = u16::try_from(name.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "zip entry name too long"))?;
        let crc = crc32fast::hash(data);
        let deflated = self.deflate(data)?;
        let (method, payload): (u16, &[u8]) = match &deflated {
            Some(d) => (METHOD_DEFLATE, d),
            None => (METHOD_STORE, data),
        };
        let e = EntryFields {
            name,
            name_len,
            flags: if needs_utf8_flag(name) { FLAG_UTF8 } else { 0 },
            method,
            crc,
            usize64: data.len() as u64,
            csize64: payload.len() as u64,
        };
        let header_offset = self.offset;
        self.emit(&local_header(&e))?;
        self.emit(payload)?;
        central_record(&mut self.central, &e, header_offset);
        self.entries += 1;
        Ok(())
    }

    /// Writes the central directory and end records; returns the writer and
    /// the total bytes written.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        let cd_offset = self.offset;
        let central = std::mem::take(&mut self.central);
        self.emit(&central)?;
        let cd_size = central.len() as u64;
        let mut end = Vec::with_capacity(56 + 20 + 22);
        let zip64 = self.entries >= U16_MAX || cd_size >= U32_MAX || cd_offset >= U32_MAX;
        if zip64 {
            let end64_offset = cd_offset + cd_size;
            put32(&mut end, SIG_END64);
            put64(&mut end, 44); // size of the rest of this record
            put16(&mut end, VERSION_45);
            put16(&mut end, VERSION_45);
            put32(&mut end, 0);
            put32(&mut end, 0);
            put64(&mut end, self.entries);
            put64(&mut end, self.entries);
            put64(&mut end, cd_size);
            put64(&mut end, cd_offset);
            put32(&mut end, SIG_LOCATOR64);
            put32(&mut end, 0);
            put64(&mut end, end64_offset);
            put32(&mut end, 1);
        }
        let count16 = if zip64 {
            u16::MAX
        } else {
            u16::try_from(self.entries).unwrap_or(u16::MAX)
        };
        put32(&mut end, SIG_END);
        put16(&mut end, 0);
        put16(&mut end, 0);
        put16(&mut end, count16);
        put16(&mut end, count16);
        put32(&mut end, if zip64 { u32::MAX } else { field32(cd_size) });
        put32(&mut end, if zip64 { u32::MAX } else { field32(cd_offset) });
        put16(&mut end, 0);
        self.emit(&end)?;
        self.out.flush()?;
        Ok((self.out, self.offset))
    }
}

#[cfg(test)]
impl<W: Write> ZipWriter<W> {
    /// Pretends `offset` bytes were already written (for ZIP64 offset tests).
    fn with_offset(out: W, offset: u64) -> Self {
        let mut w = ZipWriter::new(out);
        w.offset = offset;
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    // -- helpers ------------------------------------------------------------

    fn c(path: &str, kind: Kind, size: u64) -> Candidate {
        Candidate {
            path: path.to_string(),
            kind,
            size,
        }
    }

    fn reg(path: &str) -> Candidate {
        c(path, Kind::Regular, 1)
    }

    /// Paths of the included files.
    fn included(files: &[Candidate], go_mod: Option<&[u8]>) -> Vec<String> {
        let idx = check_files(files, go_mod).unwrap();
        idx.into_iter().map(|i| files[i].path.clone()).collect()
    }

    fn err_of(files: &[Candidate], go_mod: Option<&[u8]>) -> ZipError {
        check_files(files, go_mod).unwrap_err()
    }

    fn require_tools() -> bool {
        std::env::var("GOPROX_REQUIRE_TOOLS").as_deref() == Ok("1")
    }

    /// Reports a missing external tool: a panic under GOPROX_REQUIRE_TOOLS=1,
    /// a note otherwise.
    fn missing(what: &str) {
        if require_tools() {
            panic!("{what} is required (GOPROX_REQUIRE_TOOLS=1) but unavailable");
        }
        eprintln!("note: {what} unavailable; skipping that part");
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("modzip-test-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// One entry as read back from a zip.
    #[derive(Debug)]
    struct Entry {
        name: String,
        data: Vec<u8>,
        method: u16,
        flags: u16,
        zip64: bool,
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes([b[at], b[at + 1]])
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn le64(b: &[u8], at: usize) -> u64 {
        u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
    }

    /// A strict little zip reader for what ZipWriter produces. `base` is the
    /// logical offset of `z[0]` (non-zero only for `with_offset` output).
    fn read_zip(z: &[u8], base: u64) -> Vec<Entry> {
        let pos = |abs: u64| usize::try_from(abs - base).unwrap();
        assert!(z.len() >= 22);
        let eocd = z.len() - 22; // ZipWriter writes no comment
        assert_eq!(le32(z, eocd), SIG_END);
        let mut count = u64::from(le16(z, eocd + 10));
        let mut cd_size = u64::from(le32(z, eocd + 12));
        let mut cd_off = u64::from(le32(z, eocd + 16));
        assert_eq!(le16(z, eocd + 8), le16(z, eocd + 10));
        let zip64 = count == U16_MAX || cd_size == U32_MAX || cd_off == U32_MAX;
        if zip64 {
            let loc = eocd - 20;
            assert_eq!(le32(z, loc), SIG_LOCATOR64);
            assert_eq!(le32(z, loc + 16), 1);
            let e64 = pos(le64(z, loc + 8));
            assert_eq!(le32(z, e64), SIG_END64);
            assert_eq!(le64(z, e64 + 4), 44);
            assert_eq!(le64(z, e64 + 24), le64(z, e64 + 32));
            count = le64(z, e64 + 32);
            cd_size = le64(z, e64 + 40);
            cd_off = le64(z, e64 + 48);
            assert_eq!(e64, pos(cd_off + cd_size));
        } else {
            assert_eq!(pos(cd_off + cd_size), eocd);
        }
        let mut out = Vec::new();
        let mut p = pos(cd_off);
        for _ in 0..count {
            assert_eq!(le32(z, p), SIG_CENTRAL);
            let flags = le16(z, p + 8);
            let method = le16(z, p + 10);
            assert_eq!((le16(z, p + 12), le16(z, p + 14)), (0, 0), "mod time/date");
            let crc = le32(z, p + 16);
            let mut csize = u64::from(le32(z, p + 20));
            let mut usize_ = u64::from(le32(z, p + 24));
            let nlen = usize::from(le16(z, p + 28));
            let xlen = usize::from(le16(z, p + 30));
            assert_eq!(le16(z, p + 32), 0);
            let mut off = u64::from(le32(z, p + 42));
            let name = std::str::from_utf8(&z[p + 46..p + 46 + nlen])
                .unwrap()
                .to_string();
            let extra = &z[p + 46 + nlen..p + 46 + nlen + xlen];
            let mut entry_zip64 = false;
            if xlen > 0 {
                assert_eq!(le16(extra, 0), EXTRA_ZIP64);
                assert_eq!(usize::from(le16(extra, 2)), xlen - 4);
                let mut q = 4;
                if usize_ == U32_MAX {
                    usize_ = le64(extra, q);
                    q += 8;
                }
                if csize == U32_MAX {
                    csize = le64(extra, q);
                    q += 8;
                }
                if off == U32_MAX {
                    off = le64(extra, q);
                    q += 8;
                }
                assert_eq!(q, xlen);
                entry_zip64 = true;
            }
            p += 46 + nlen + xlen;

            let l = pos(off);
            assert_eq!(le32(z, l), SIG_LOCAL);
            assert_eq!(le16(z, l + 6), flags);
            assert_eq!(flags & 0x0008, 0, "no data descriptor");
            assert_eq!(le16(z, l + 8), method);
            assert_eq!(le32(z, l + 14), crc);
            let lnlen = usize::from(le16(z, l + 26));
            let lxlen = usize::from(le16(z, l + 28));
            assert_eq!(&z[l + 30..l + 30 + lnlen], name.as_bytes());
            if lxlen == 0 {
                assert_eq!(u64::from(le32(z, l + 18)), csize);
                assert_eq!(u64::from(le32(z, l + 22)), usize_);
            }
            let d = l + 30 + lnlen + lxlen;
            let raw = &z[d..d + usize::try_from(csize).unwrap()];
            let data = match method {
                METHOD_STORE => raw.to_vec(),
                METHOD_DEFLATE => {
                    let mut v = Vec::new();
                    flate2::read::DeflateDecoder::new(raw)
                        .read_to_end(&mut v)
                        .unwrap();
                    v
                }
                m => panic!("unexpected method {m}"),
            };
            assert_eq!(data.len() as u64, usize_);
            assert_eq!(crc32fast::hash(&data), crc);
            out.push(Entry {
                name,
                data,
                method,
                flags,
                zip64: entry_zip64,
            });
        }
        assert_eq!(p, pos(cd_off + cd_size));
        out
    }

    fn write_zip(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut w = ZipWriter::new(Vec::new());
        for (n, d) in entries {
            w.add(n, d).unwrap();
        }
        let (buf, n) = w.finish().unwrap();
        assert_eq!(n, buf.len() as u64);
        buf
    }

    // -- vendor rules ---------------------------------------------------------

    #[test]
    fn vendor_rules_old_and_new() {
        // (name, pre-1.24, 1.24+)
        let table = [
            ("vendor/foo/foo.go", true, true),
            ("pkg/vendor/foo/foo.go", true, true),
            ("longpackagename/vendor/foo/foo.go", true, true),
            ("vendor/vendor.go", false, false),
            ("vendor/modules.txt", false, true),
            ("pkg/vendor/vendor.go", true, false),
            ("longpackagename/vendor/vendor.go", true, false),
            ("sub/vendor/sub.txt", true, false),
            ("vendor/example.com/x/x.go", true, true),
            ("a.go", false, false),
            ("vendored/x/y.go", false, false),
            ("x/vendor", false, false),
            ("p/vendor/modules.txt", true, false),
        ];
        for (name, old, new) in table {
            for lang in [
                None,
                Some("1.13"),
                Some("1.23"),
                Some("bad"),
                Some("1"),
                Some(""),
            ] {
                assert_eq!(is_vendored_package(name, lang), old, "{name} {lang:?}");
            }
            for lang in [
                Some("1.24"),
                Some("1.25"),
                Some("go1.24"),
                Some("2.0"),
                Some("1.100"),
            ] {
                assert_eq!(is_vendored_package(name, lang), new, "{name} {lang:?}");
            }
        }
        // A non-ASCII byte at the historical offset must not panic.
        assert!(is_vendored_package("aaaaaaaé/vendor/x", None));
        assert!(!is_vendored_package("aaaaaaaé/vendor/x", Some("1.24")));
    }

    #[test]
    fn vendor_rules_in_check_files() {
        let files = [
            reg("go.mod"),
            reg("vendor/modules.txt"),
            reg("vendor/example.com/x/x.go"),
            reg("sub/vendor/sub.txt"),
            reg("pkg/vendor/vendor.go"),
            reg("vendor/top.go"),
        ];
        let old = included(&files, Some(b"module example.com/m\n\ngo 1.23\n"));
        assert_eq!(old, ["go.mod", "vendor/modules.txt", "vendor/top.go"]);
        let new = included(&files, Some(b"module example.com/m\n\ngo 1.24.1\n"));
        assert_eq!(
            new,
            [
                "go.mod",
                "sub/vendor/sub.txt",
                "pkg/vendor/vendor.go",
                "vendor/top.go"
            ]
        );
        // No go directive, or no go.mod content given: old rules.
        assert_eq!(included(&files, Some(b"module example.com/m\n")), old);
        assert_eq!(included(&files, None), old);
        // A symlinked root go.mod is not read.
        let mut linked = files.to_vec();
        linked[0].kind = Kind::Symlink;
        let got = included(&linked, Some(b"go 1.24\n"));
        assert_eq!(got, ["vendor/modules.txt", "vendor/top.go"]);
        // Content passed without any go.mod candidate is ignored too.
        assert_eq!(included(&files[1..], Some(b"go 1.24\n")), old[1..]);
    }

    // -- go directive -----------------------------------------------------------

    #[test]
    fn go_lang_parsing() {
        let cases: &[(&str, Option<&str>)] = &[
            ("module m\n\ngo 1.24.1\n", Some("1.24")),
            ("go 1.24", Some("1.24")),
            ("go 1.21rc2\n", Some("1.21")),
            ("go 1.13\n", Some("1.13")),
            ("go 1.0\n", Some("1")),
            ("go 2.0\n", Some("2.0")),
            ("go 1.24 // comment\n", Some("1.24")),
            ("// leading comment\ngo 1.24\n", Some("1.24")),
            ("go 1.24-foo\n", Some("1.24")),
            ("go v1.24x\n", Some("1.24")),
            ("go 1.24.x\n", Some("1.24")),
            ("module \"example.com/m\"\ngo 1.24\n", Some("1.24")),
            (
                "module example.com/m\ngo 1.25\nrequire (\n\texample.com/a v1.2.3 // indirect\n\texample.com/b/v2 v2.0.0\n\tgopkg.in/yaml.v2 v2.4.0\n\texample.com/c v3.0.0+incompatible\n\tgopkg.in/check.v1 v0.0.0-20161208181325-20d25e280405\n\texample.com/d v1.2\n)\n",
                Some("1.25"),
            ),
            (
                "go 1.24\ntoolchain go1.24.1\ngodebug x=1\ntool example.com/t\nexclude example.com/x master\nreplace a => b\nfoo bar baz\n",
                Some("1.24"),
            ),
            (
                "go 1.24\nretract [v1.0.0, bad]\nretract v9 // nope\n",
                Some("1.24"),
            ),
            (
                "go 1.24\nunknown (\n\tanything ( goes\n)\nfoo bar (\n)\n",
                Some("1.24"),
            ),
            (
                "go 1.24\nignore ./foo\nignore (\n\t\"./bar\"\n)\n",
                Some("1.24"),
            ),
            ("go 1.24\r\nmodule m\r\n", Some("1.24")),
            ("go 1.24\nrequire example.com/a \"v1.0.0\"\n", Some("1.24")),
            ("go 1.24\nmodule \"a\\u00e9\\x41\\101\"\n", Some("1.24")),
            ("go 1.24\nmodule é\n", Some("1.24")),
            // No directive or unparseable files.
            ("module m\n", None),
            ("", None),
            ("go 1\n", None),
            ("go 1.24\ngo 1.24\n", None),
            ("go 1.24 1.25\n", None),
            ("go\n", None),
            ("go 01.24\n", None),
            ("go 1.21.0rc1\n", None),
            ("go \"1.24\"\n", None),
            ("go 1.24\n/* block */\n", None),
            ("go 1.24\nmodule `m`\n", None),
            ("go 1.24\nmodule m'\n", None),
            ("go 1.24\nmodule a\nmodule b\n", None),
            ("go 1.24\nmodule a b\n", None),
            ("go 1.24\nmodule \"a\\q\"\n", None),
            ("go 1.24\nmodule \"a\\400\"\n", None),
            ("go 1.24\nmodule \"a\n", None),
            ("go 1.24\nrequire example.com/a master\n", None),
            ("go 1.24\nrequire example.com/a\n", None),
            ("go 1.24\nrequire example.com/a v2.0.0\n", None),
            ("go 1.24\nrequire example.com/a/v2 v1.0.0\n", None),
            ("go 1.24\nrequire example.com/a/v1 v1.0.0\n", None),
            ("go 1.24\nrequire gopkg.in/yaml v1.0.0\n", None),
            ("go 1.24\nrequire (\n\texample.com/a\n)\n", None),
            ("go 1.24\nignore a b\n", None),
            ("go 1.24\nrequire (\n\texample.com/a v1.0.0\n", None),
            ("go 1.24\nfoo (\n) x\n", None),
            ("\u{feff}go 1.24\n", None),
            ("go 1.24\nx\u{7}\n", None),
            ("go 1.24\nx\u{a0}y\n", None),
        ];
        for (src, want) in cases {
            assert_eq!(go_lang(src.as_bytes()).as_deref(), *want, "{src:?}");
        }
        // Invalid UTF-8 in an identifier is accepted, as by Go.
        assert_eq!(
            go_lang(b"go 1.24\nmodule a\xffb\n").as_deref(),
            Some("1.24")
        );
    }

    #[test]
    fn gover_ordering() {
        use std::cmp::Ordering::*;
        assert_eq!(gover_compare("1.24", "1.24"), Equal);
        assert_eq!(gover_compare("1.23", "1.24"), Less);
        assert_eq!(gover_compare("1.100", "1.24"), Greater);
        assert_eq!(gover_compare("1.24rc1", "1.24"), Greater);
        assert_eq!(gover_compare("1.24.0", "1.24rc1"), Greater);
        assert_eq!(gover_compare("bad", "1.0"), Less);
        assert_eq!(gover_compare("", "bad"), Equal);
        assert_eq!(gover_compare("1.3", "1.3.0"), Equal);
    }

    // -- check_files rules ------------------------------------------------------

    #[test]
    fn nested_modules_are_omitted() {
        let files = [
            reg("go.mod"),
            reg("a.go"),
            reg("sub/go.mod"),
            reg("sub/x.go'"), // invalid name, but never examined
            reg("sub/deeper/y.go"),
            reg("b/GO.MOD"),
            reg("b/b.go"),
            reg("subx/z.go"),
            c("l/go.mod", Kind::Symlink, 5),
            reg("l/l.go"),
            reg("d/go.mod/x.go"), // a directory named go.mod marks nothing
        ];
        let got = included(&files, None);
        assert_eq!(
            got,
            ["go.mod", "a.go", "subx/z.go", "l/l.go", "d/go.mod/x.go"]
        );
        let checked = classify(&files, None);
        let omitted: Vec<_> = checked
            .omitted
            .iter()
            .map(|&(i, r)| (files[i].path.as_str(), r))
            .collect();
        assert!(omitted.contains(&("sub/go.mod", OMIT_SUBMODULE)));
        assert!(omitted.contains(&("b/GO.MOD", OMIT_SUBMODULE)));
        assert!(omitted.contains(&("l/go.mod", OMIT_SYMLINK)));
    }

    #[test]
    fn hg_archival_only_at_root() {
        let files = [
            reg(".hg_archival.txt"),
            reg("x/.hg_archival.txt"),
            reg(".HG_ARCHIVAL.txt"),
        ];
        assert_eq!(
            included(&files, None),
            ["x/.hg_archival.txt", ".HG_ARCHIVAL.txt"]
        );
    }

    #[test]
    fn vcs_directories_are_kept() {
        let files = [
            reg(".hg/x"),
            reg(".svn/y"),
            reg(".bzr/z"),
            reg(".gitignore"),
        ];
        assert_eq!(included(&files, None).len(), 4);
    }

    #[test]
    fn symlinks_and_other_are_omitted() {
        let files = [
            reg("a.go"),
            c("link.go", Kind::Symlink, 10),
            c("sub", Kind::Other, 0),
            c("bad'name", Kind::Other, 0), // skipped before any check
            c("A.GO", Kind::Other, 0),     // no collision either
        ];
        assert_eq!(check_files(&files, None).unwrap(), [0]);
        // Symlinks are still checked for their names and collisions.
        let e = err_of(&[c("bad'link", Kind::Symlink, 1)], None);
        assert!(
            matches!(&e, ZipError::InvalidFile { path, .. } if path == "bad'link"),
            "{e}"
        );
        let e = err_of(&[c("GO.MOD", Kind::Symlink, 1)], None);
        assert_eq!(
            e.to_string(),
            "GO.MOD: go.mod files must have lowercase names"
        );
        let e = err_of(&[reg("a.go"), c("A.go", Kind::Symlink, 1)], None);
        assert_eq!(
            e.to_string(),
            "A.go: case-insensitive file name collision: \"a.go\" and \"A.go\""
        );
        // Symlink sizes do not count.
        let files = [c("big", Kind::Symlink, MAX_ZIP_FILE + 1), reg("a")];
        assert_eq!(check_files(&files, None).unwrap(), [1]);
    }

    #[test]
    fn case_fold_collisions() {
        let e = err_of(&[reg("m.go"), reg("M.GO")], None);
        assert_eq!(
            e,
            ZipError::InvalidFile {
                path: "M.GO".into(),
                reason: "case-insensitive file name collision: \"m.go\" and \"M.GO\"".into()
            }
        );
        // Directories collide too.
        let e = err_of(&[reg("Dir/a.go"), reg("dir/b.go")], None);
        assert_eq!(
            e.to_string(),
            "dir/b.go: case-insensitive file name collision: \"Dir\" and \"dir\""
        );
        // Unicode simple folding: Kelvin sign vs k, long s vs s, sigma forms.
        assert!(check_files(&[reg("\u{212a}.go"), reg("k.go")], None).is_err());
        assert!(check_files(&[reg("\u{17f}.go"), reg("S.go")], None).is_err());
        assert!(check_files(&[reg("\u{3c2}"), reg("\u{3a3}")], None).is_err());
        assert!(check_files(&[reg("\u{1fd3}"), reg("\u{390}")], None).is_err());
        // Dotless i and I are distinct in Go's folding; so are ß and "ss".
        assert!(check_files(&[reg("\u{131}"), reg("I")], None).is_ok());
        assert!(check_files(&[reg("\u{df}"), reg("ss")], None).is_ok());
        assert!(check_files(&[reg("\u{df}"), reg("\u{1e9e}")], None).is_err());
    }

    #[test]
    fn file_dir_collisions_and_duplicates() {
        let e = err_of(&[reg("a.go"), reg("a.go/b.go")], None);
        assert_eq!(
            e.to_string(),
            "a.go/b.go: entry \"a.go\" is both a file and a directory"
        );
        let e = err_of(&[reg("x/y"), reg("x")], None);
        assert_eq!(
            e.to_string(),
            "x: entry \"x\" is both a file and a directory"
        );
        let e = err_of(&[reg("dup.go"), reg("dup.go")], None);
        assert_eq!(
            e.to_string(),
            "dup.go: multiple entries for file \"dup.go\""
        );
        // A go.mod directory at the root is fine.
        assert_eq!(included(&[reg("go.mod/a.go")], None), ["go.mod/a.go"]);
    }

    #[test]
    fn root_go_mod_case() {
        let e = err_of(&[reg("GO.MOD")], None);
        assert_eq!(
            e.to_string(),
            "GO.MOD: go.mod files must have lowercase names"
        );
        assert!(check_files(&[reg("Go.mod")], None).is_err());
        assert_eq!(included(&[reg("go.mod")], None), ["go.mod"]);
        // Elsewhere, any case marks a nested module instead.
        assert!(included(&[reg("x/Go.Mod")], None).is_empty());
    }

    #[test]
    fn unclean_and_absolute_paths() {
        for p in [
            "", "./a", "a/", "a//b", "a/./b", "a/../b", "/a/../b", "a/..", "./",
        ] {
            let e = err_of(&[reg(p)], None);
            assert_eq!(
                e.to_string(),
                format!("{p}: file path is not clean"),
                "{p:?}"
            );
        }
        let e = err_of(&[reg("/a")], None);
        assert_eq!(e.to_string(), "/a: file path is not relative");
        // Clean but rejected by check_file_path.
        for p in [".", "..", "../a", "a/.../b", "a.", "x/con.txt", "b'c"] {
            assert!(
                matches!(err_of(&[reg(p)], None), ZipError::InvalidFile { .. }),
                "{p:?}"
            );
        }
    }

    #[test]
    fn path_clean_matches_go() {
        let table = [
            ("", "."),
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
        ];
        for (p, want) in table {
            assert_eq!(go_path_clean(p), want, "{p:?}");
        }
    }

    #[test]
    fn size_limits() {
        let one = |p: &str, n: u64| vec![c(p, Kind::Regular, n)];
        assert!(check_files(&one("large.go", MAX_ZIP_FILE), None).is_ok());
        let total = ZipError::TooLarge {
            what: "module source tree".into(),
            limit: MAX_ZIP_FILE,
        };
        assert_eq!(err_of(&one("large.go", MAX_ZIP_FILE + 1), None), total);
        assert_eq!(
            total.to_string(),
            "module source tree too large (max size is 524288000 bytes)"
        );
        let two = |a: u64, b: u64| {
            vec![
                c("small.go", Kind::Regular, a),
                c("large.go", Kind::Regular, b),
            ]
        };
        assert!(check_files(&two(10, MAX_ZIP_FILE - 10), None).is_ok());
        assert_eq!(err_of(&two(10, MAX_ZIP_FILE - 9), None), total);
        assert_eq!(err_of(&one("neg.go", 0x8000_0000_0000_0000), None), total);
        assert_eq!(err_of(&one("huge", u64::MAX), None), total);

        assert!(check_files(&one("go.mod", MAX_GO_MOD), None).is_ok());
        let e = err_of(&one("go.mod", MAX_GO_MOD + 1), None);
        assert_eq!(
            e.to_string(),
            "go.mod file too large (max size is 16777216 bytes)"
        );
        assert!(check_files(&one("LICENSE", MAX_LICENSE), None).is_ok());
        let e = err_of(&one("LICENSE", MAX_LICENSE + 1), None);
        assert_eq!(
            e.to_string(),
            "LICENSE file too large (max size is 16777216 bytes)"
        );
        // Only the root files have the small limits.
        assert!(check_files(&one("x/LICENSE", MAX_LICENSE + 1), None).is_ok());
        assert!(check_files(&one("license", MAX_LICENSE + 1), None).is_ok());
        // The total limit wins over other errors, wherever it occurs.
        let files = [reg("bad'"), c("big", Kind::Regular, MAX_ZIP_FILE + 1)];
        assert_eq!(err_of(&files, None), total);
        // Omitted files do not count toward the total.
        let files = [c("vendor/x/big", Kind::Regular, MAX_ZIP_FILE), reg("a")];
        assert_eq!(included(&files, None), ["a"]);
    }

    #[test]
    fn first_invalid_file_is_reported_and_order_kept() {
        let files = [reg("b.go"), reg("bad'"), reg("a.go"), reg("GO.MOD")];
        assert!(
            matches!(err_of(&files, None), ZipError::InvalidFile { path, .. } if path == "bad'")
        );
        let files = [reg("z.go"), reg("a.go"), reg("m/x.go")];
        assert_eq!(check_files(&files, None).unwrap(), [0, 1, 2]);
    }

    // -- hashing ----------------------------------------------------------------

    #[test]
    fn hash1_basics() {
        assert_eq!(
            hash1(&mut Vec::new()).unwrap(),
            "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert!(hash1(&mut vec![("a\nb".into(), sha256_hex(b""))]).is_err());
        // Order of input does not matter; the vector ends up sorted.
        let mut a = vec![
            ("m@v1.0.0/b".to_string(), sha256_hex(b"b")),
            ("m@v1.0.0/a".to_string(), sha256_hex(b"a")),
        ];
        let mut b = a.clone();
        b.reverse();
        assert_eq!(hash1(&mut a).unwrap(), hash1(&mut b).unwrap());
        assert_eq!(a[0].0, "m@v1.0.0/a");
        // Bytewise order: "B" < "a" < "é".
        let mut c = vec![
            ("é".to_string(), sha256_hex(b"")),
            ("a".to_string(), sha256_hex(b"")),
            ("B".to_string(), sha256_hex(b"")),
        ];
        hash1(&mut c).unwrap();
        assert_eq!(
            c.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            ["B", "a", "é"]
        );
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn go_mod_hash_known_values() {
        // go.sum: golang.org/x/text v0.3.0/go.mod (synthesized go.mod).
        assert_eq!(
            go_mod_hash(b"module golang.org/x/text\n"),
            "h1:NqM8EUOU14njkJ3fqMW+pc6Ldnwhi/IjpwHt7yyuwOQ="
        );
        assert_eq!(
            go_mod_hash(b""),
            "h1:G7mAYYxgmS0lVkHyy2hEOLQCFB0DlQFTMLWggykrydY="
        );
    }

    // -- zip writer ---------------------------------------------------------------

    fn sample_entries() -> Vec<(String, Vec<u8>)> {
        let mut noise = Vec::with_capacity(4096);
        let mut x: u32 = 12345;
        for _ in 0..4096 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            noise.push((x >> 16) as u8);
        }
        vec![
            ("m@v1.0.0/go.mod".into(), b"module m\n\ngo 1.22\n".to_vec()),
            ("m@v1.0.0/empty".into(), Vec::new()),
            (
                "m@v1.0.0/big.txt".into(),
                "hello, world\n".repeat(5000).into_bytes(),
            ),
            ("m@v1.0.0/noise.bin".into(), noise),
            ("m@v1.0.0/dir/ünï.go".into(), b"package dir\n".to_vec()),
            ("m@v1.0.0/~tilde".into(), b"x".to_vec()),
        ]
    }

    #[test]
    fn zip_round_trip_and_determinism() {
        let entries = sample_entries();
        let z1 = write_zip(&entries);
        let z2 = write_zip(&entries);
        assert_eq!(z1, z2, "same input, same bytes");
        let got = read_zip(&z1, 0);
        assert_eq!(got.len(), entries.len());
        for (e, (n, d)) in got.iter().zip(&entries) {
            assert_eq!(&e.name, n);
            assert_eq!(&e.data, d);
            assert!(!e.zip64);
            assert!(!e.name.ends_with('/'));
        }
        let by_name = |n: &str| got.iter().find(|e| e.name.ends_with(n)).unwrap();
        assert_eq!(by_name("big.txt").method, METHOD_DEFLATE);
        assert_eq!(by_name("noise.bin").method, METHOD_STORE);
        assert_eq!(by_name("empty").method, METHOD_STORE);
        assert_eq!(by_name("ünï.go").flags, FLAG_UTF8);
        assert_eq!(by_name("~tilde").flags, FLAG_UTF8);
        assert_eq!(by_name("go.mod").flags, 0);
        // Empty archive: just the end record.
        let empty = write_zip(&[]);
        assert_eq!(empty.len(), 22);
        assert!(read_zip(&empty, 0).is_empty());
    }

    #[test]
    fn zip64_many_entries() {
        let n = 70_000;
        let entries: Vec<(String, Vec<u8>)> = (0..n)
            .map(|i| (format!("m@v1.0.0/f/{i}"), i.to_string().into_bytes()))
            .collect();
        let z = write_zip(&entries);
        let got = read_zip(&z, 0);
        assert_eq!(got.len(), n);
        assert_eq!(got[69_999].name, "m@v1.0.0/f/69999");
        assert_eq!(got[69_999].data, b"69999");
        // Below the threshold there are no ZIP64 records.
        let few = write_zip(&entries[..1000]);
        assert_eq!(le32(&few, few.len() - 22), SIG_END);
        assert_ne!(le32(&few, few.len() - 42), SIG_LOCATOR64);
        python_check(&[("zip64", z)]);
    }

    #[test]
    fn zip64_offsets() {
        let base = (5u64 << 30) - 10; // the second entry starts beyond 4 GiB
        let mut w = ZipWriter::with_offset(Vec::new(), base);
        w.add("m@v1.0.0/a", b"first file").unwrap();
        w.add("m@v1.0.0/b", b"second file").unwrap();
        let (buf, total) = w.finish().unwrap();
        assert_eq!(total, base + buf.len() as u64);
        let got = read_zip(&buf, base);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|e| e.zip64));
        assert_eq!(got[1].data, b"second file");
    }

    #[test]
    fn zip_rejects_overlong_names() {
        let mut w = ZipWriter::new(Vec::new());
        assert!(w.add(&"a".repeat(70_000), b"").is_err());
    }

    /// Validates zips with Python's zipfile (CRC and structure) and, for
    /// non-empty ones, `unzip -t`. Returns false if the tools are missing.
    fn python_check(zips: &[(&str, Vec<u8>)]) -> bool {
        let dir = temp_dir("py");
        let mut paths = Vec::new();
        for (tag, z) in zips {
            let p = dir.join(format!("{tag}.zip"));
            std::fs::write(&p, z).unwrap();
            paths.push(p);
        }
        let script = "import sys, zipfile\n\
            for p in sys.argv[1:]:\n\
            \x20   with zipfile.ZipFile(p) as z:\n\
            \x20       assert z.testzip() is None, p\n\
            \x20       print(len(z.infolist()))\n";
        let ok = match Command::new("python3")
            .arg("-c")
            .arg(script)
            .args(&paths)
            .output()
        {
            Ok(o) if o.status.success() => {
                let counts = String::from_utf8_lossy(&o.stdout).to_string();
                let n = counts.lines().count();
                assert_eq!(n, zips.len(), "python output: {counts}");
                true
            }
            Ok(o) => panic!(
                "python3 zipfile rejected a zip: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => {
                missing("python3");
                false
            }
        };
        for (p, (_, z)) in paths.iter().zip(zips) {
            if read_zip(z, 0).is_empty() {
                continue; // unzip reports an empty archive as a warning
            }
            match Command::new("unzip").arg("-tqq").arg(p).status() {
                Ok(s) => assert!(s.success(), "unzip -t failed for {}", p.display()),
                Err(_) => {
                    missing("unzip");
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        ok
    }

    // -- conformance with x/mod's test data --------------------------------------

    struct Txtar {
        comment: Vec<u8>,
        files: Vec<(String, Vec<u8>)>,
    }

    /// Splits a txtar archive: `-- name --` lines start files.
    fn parse_txtar(data: &[u8]) -> Txtar {
        fn marker(line: &[u8]) -> Option<String> {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let inner = line.strip_prefix(b"-- ")?.strip_suffix(b" --")?;
            Some(String::from_utf8_lossy(inner).trim().to_string())
        }
        let mut comment = Vec::new();
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let end = rest
                .iter()
                .position(|&b| b == b'\n')
                .map_or(rest.len(), |i| i + 1);
            let (line, tail) = rest.split_at(end);
            rest = tail;
            let bare = line.strip_suffix(b"\n").unwrap_or(line);
            if let Some(name) = marker(bare).filter(|n| !n.is_empty()) {
                files.push((name, Vec::new()));
                continue;
            }
            match files.last_mut() {
                Some((_, d)) => d.extend_from_slice(line),
                None => comment.extend_from_slice(line),
            }
        }
        // txtar terminates a final line that lacks its newline.
        if let Some((_, d)) = files.last_mut()
            && !d.is_empty()
            && !d.ends_with(b"\n")
        {
            d.push(b'\n');
        }
        Txtar { comment, files }
    }

    fn header(t: &Txtar) -> HashMap<String, String> {
        let mut h = HashMap::new();
        for line in String::from_utf8_lossy(&t.comment).lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            if let Some((k, v)) = line.split_once('=') {
                h.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        h
    }

    fn testdata_dir() -> Option<PathBuf> {
        let mut dirs = Vec::new();
        if let Ok(d) = std::env::var("GOPROX_XMOD_ZIP_TESTDATA") {
            dirs.push(PathBuf::from(d));
        }
        dirs.push(PathBuf::from(
            "/usr/share/gocode/src/golang.org/x/mod/zip/testdata",
        ));
        dirs.into_iter().find(|d| d.join("create").is_dir())
    }

    fn txt_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "txt"))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// Whether a fixture is about module path/version validation, which is
    /// not part of check_files (the proxy validates those elsewhere).
    fn module_identity_fixture(name: &str) -> bool {
        matches!(
            name,
            "bad_mod_path"
                | "bad_mod_path_version_suffix"
                | "bad_version"
                | "invalid_utf8_mod_path"
        )
    }

    /// Whether an error text came from check_file_path (whose wording
    /// belongs to the sibling module, so only the path is compared).
    fn from_check_file_path(path: &str, reason: &str) -> bool {
        super::super::module::check_file_path(path).err().as_deref() == Some(reason)
    }

    /// The outcome of replaying one create fixture.
    enum Replay {
        /// Hash or error matched; for successes, the zip and its hash.
        Matched(Option<(Vec<u8>, String)>),
        NotApplicable(&'static str),
    }

    fn replay_create(name: &str, data: &[u8], from_dir: bool) -> Replay {
        if module_identity_fixture(name) {
            return Replay::NotApplicable("module path/version validation, not file selection");
        }
        let t = parse_txtar(data);
        let h = header(&t);
        let files: Vec<Candidate> = t
            .files
            .iter()
            .map(|(n, d)| c(n, Kind::Regular, d.len() as u64))
            .collect();
        let go_mod = t
            .files
            .iter()
            .find(|(n, _)| n == "go.mod")
            .map(|(_, d)| d.as_slice());
        let result = check_files(&files, go_mod);
        let prefix = format!("{}@{}/", h["path"], h["version"]);
        if from_dir && name == "exclude_vcs" {
            // CreateFromDir skips .git/.hg/.svn/.bzr; git-sourced zips keep
            // them (NOTES §4.3), so the hash must differ here.
            let idx = result.unwrap();
            assert_eq!(idx.len(), files.len(), "{name}: VCS files are kept");
            return Replay::NotApplicable("directory walk skips VCS dirs; git archive does not");
        }
        if let Some(want) = h.get("wantErr") {
            let e = result.expect_err(name);
            let ok = match &e {
                ZipError::InvalidFile { path, reason }
                    if want.starts_with("malformed file path") =>
                {
                    from_check_file_path(path, reason) && want.contains(&go_quote(path))
                }
                _ => e.to_string().contains(want.as_str()),
            };
            assert!(ok, "{name}: got {e}; want error containing {want}");
            return Replay::Matched(None);
        }
        let want = h.get("hash").unwrap_or_else(|| panic!("{name}: no hash"));
        let idx = result.unwrap_or_else(|e| panic!("{name}: unexpected error {e}"));
        let entries: Vec<(String, Vec<u8>)> = idx
            .iter()
            .map(|&i| (format!("{prefix}{}", t.files[i].0), t.files[i].1.clone()))
            .collect();
        let mut sums: Vec<(String, String)> = entries
            .iter()
            .map(|(n, d)| (n.clone(), sha256_hex(d)))
            .collect();
        let got = hash1(&mut sums).unwrap();
        assert_eq!(&got, want, "{name}: hash");
        let z = write_zip(&entries);
        let back = read_zip(&z, 0);
        assert_eq!(back.len(), entries.len());
        for (e, (n, d)) in back.iter().zip(&entries) {
            assert_eq!((&e.name, &e.data), (n, d), "{name}");
        }
        Replay::Matched(Some((z, got)))
    }

    /// Zips (and expected hashes) produced by the conformance replay, for the
    /// external-tool checks.
    fn conformance_zips() -> Option<Vec<(String, Vec<u8>, String)>> {
        let dir = testdata_dir()?;
        let mut zips = Vec::new();
        for (sub, from_dir) in [("create", false), ("create_from_dir", true)] {
            for p in txt_files(&dir.join(sub)) {
                let name = p.file_stem().unwrap().to_string_lossy().to_string();
                let data = std::fs::read(&p).unwrap();
                if let Replay::Matched(Some((z, h))) = replay_create(&name, &data, from_dir) {
                    zips.push((format!("{sub}-{name}"), z, h));
                }
            }
        }
        Some(zips)
    }

    #[test]
    fn conformance_create_fixtures() {
        let Some(dir) = testdata_dir() else {
            if require_tools() {
                panic!("x/mod zip testdata not found (GOPROX_REQUIRE_TOOLS=1)");
            }
            eprintln!("note: x/mod zip testdata not found; install golang-golang-x-mod-dev");
            return;
        };
        let mut matched = Vec::new();
        let mut not_applicable = Vec::new();
        for (sub, from_dir) in [("create", false), ("create_from_dir", true)] {
            let list = txt_files(&dir.join(sub));
            assert!(!list.is_empty() || from_dir, "no fixtures in {sub}");
            for p in list {
                let name = p.file_stem().unwrap().to_string_lossy().to_string();
                let data = std::fs::read(&p).unwrap();
                match replay_create(&name, &data, from_dir) {
                    Replay::Matched(_) => matched.push(format!("{sub}/{name}")),
                    Replay::NotApplicable(why) => {
                        not_applicable.push(format!("{sub}/{name} ({why})"))
                    }
                }
            }
        }
        println!(
            "x/mod create fixtures matched: {} {:?}",
            matched.len(),
            matched
        );
        println!(
            "not applicable: {} {:?}",
            not_applicable.len(),
            not_applicable
        );
        assert!(matched.len() >= 10);

        // Validate the written zips with external readers.
        let zips = conformance_zips().unwrap();
        let named: Vec<(&str, Vec<u8>)> = zips
            .iter()
            .map(|(n, z, _)| (n.as_str(), z.clone()))
            .collect();
        python_check(&named);
    }

    /// x/mod's newest create/exclude_vendor_go124.txt (after commits 9cd0e4c
    /// and c8a7319), which the Debian package predates.
    const CREATE_VENDOR_GO124: &str = "path=example.com/m
version=v1.0.0
hash=h1:mJR1q75yiMK6+CDw6DuhMS4v4hNoLXqkyk2Cph4VS8Q=
-- go.mod --
module example.com/m

go 1.24
modules.txt is excluded in 1.24+. See golang.org/issue/63395
-- vendor/modules.txt --
excluded
see comment in isVendoredPackage and golang.org/issue/31562.
-- vendor/example.com/x/x.go --
excluded
-- sub/vendor/sub.txt --
excluded
-- pkg/vendor/vendor.go --
included
see comment in isVendoredPackage and golang.org/issue/37397
";

    /// x/mod's newest create/exclude_vendor.txt (pre-1.24 rules).
    const CREATE_VENDOR_OLD_EXTRA: &str = "-- pkg/vendor/vendor.go --
included
see comment in isVendoredPackage and golang.org/issue/37397
";

    #[test]
    fn conformance_go124_vendor_fixture() {
        assert!(matches!(
            replay_create(
                "exclude_vendor_go124",
                CREATE_VENDOR_GO124.as_bytes(),
                false
            ),
            Replay::Matched(Some(_))
        ));
        // Under the old rules pkg/vendor/vendor.go is dropped, so adding it
        // to the old fixture must not change its hash.
        let old = format!(
            "path=example.com/m\nversion=v1.0.0\nhash=h1:5u93LDLN0Me+NGfZtRpA5mHxY8svfykHpq4CMSaBZyc=\n\
             -- go.mod --\nmodule example.com/m\n\ngo 1.13\n\
             -- vendor/modules.txt --\nincluded\nsee comment in isVendoredPackage and golang.org/issue/31562.\n\
             -- vendor/example.com/x/x.go --\nexcluded\n-- sub/vendor/sub.txt --\nexcluded\n{CREATE_VENDOR_OLD_EXTRA}"
        );
        assert!(matches!(
            replay_create("exclude_vendor", old.as_bytes(), false),
            Replay::Matched(Some(_))
        ));
    }

    /// Formats a classification like x/mod's check_files test expectations.
    fn format_checked(files: &[Candidate], ch: &Checked) -> String {
        let mut s = String::from("valid:\n");
        for &i in &ch.valid {
            s += &format!("{}\n", files[i].path);
        }
        s += "\nomitted:\n";
        for &(i, r) in &ch.omitted {
            s += &format!("{}: {r}\n", files[i].path);
        }
        s += "\ninvalid:\n";
        for (i, e) in &ch.invalid {
            let p = &files[*i].path;
            match e {
                ZipError::InvalidFile { reason, .. } if from_check_file_path(p, reason) => {
                    s += &format!("{p}: <check_file_path>\n");
                }
                e => s += &format!("{e}\n"),
            }
        }
        s
    }

    fn normalize_want(want: &str) -> String {
        want.lines()
            .map(|l| match l.split_once(": malformed file path ") {
                Some((p, _)) => format!("{p}: <check_file_path>\n"),
                None => format!("{l}\n"),
            })
            .collect()
    }

    fn replay_check_files(name: &str, data: &[u8]) {
        let t = parse_txtar(data);
        let mut want = String::new();
        let mut files = Vec::new();
        let mut go_mod = None;
        for (n, d) in &t.files {
            if n == "want" {
                want = String::from_utf8_lossy(d).to_string();
                continue;
            }
            if n == "go.mod" && go_mod.is_none() {
                go_mod = Some(d.as_slice());
            }
            files.push(c(n, Kind::Regular, d.len() as u64));
        }
        let got = format_checked(&files, &classify(&files, go_mod));
        assert_eq!(got, normalize_want(&want), "{name}");
    }

    const CHECK_GO123: &str = "-- want --
valid:
valid.go
go.mod
vendor/modules.txt

omitted:
vendor/x/y: file is in vendor directory
sub/go.mod: file is in another module
.hg_archival.txt: file is inserted by 'hg archive' and is always omitted
pkg/vendor/vendor.go: file is in vendor directory

invalid:
not/../clean: file path is not clean
invalid.go': malformed file path \"invalid.go'\": invalid char '\\''
valid.go: multiple entries for file \"valid.go\"
-- valid.go --
-- not/../clean --
-- go.mod --
go 1.23
-- invalid.go' --
-- vendor/x/y --
-- vendor/modules.txt --
-- sub/go.mod --
-- .hg_archival.txt --
-- valid.go --
duplicate
-- valid.go --
another duplicate
-- pkg/vendor/vendor.go --
";

    const CHECK_GO124: &str = "-- want --
valid:
valid.go
go.mod
pkg/vendor/vendor.go

omitted:
vendor/x/y: file is in vendor directory
vendor/modules.txt: file is in vendor directory
sub/go.mod: file is in another module
.hg_archival.txt: file is inserted by 'hg archive' and is always omitted

invalid:
not/../clean: file path is not clean
invalid.go': malformed file path \"invalid.go'\": invalid char '\\''
valid.go: multiple entries for file \"valid.go\"
-- valid.go --
-- not/../clean --
-- go.mod --
go 1.24
-- invalid.go' --
-- vendor/x/y --
-- vendor/modules.txt --
-- sub/go.mod --
go 1.23
-- .hg_archival.txt --
-- valid.go --
duplicate
-- valid.go --
another duplicate
-- pkg/vendor/vendor.go --
";

    #[test]
    fn conformance_check_files_fixtures() {
        let mut n = 0;
        if let Some(dir) = testdata_dir() {
            for p in txt_files(&dir.join("check_files")) {
                let name = p.file_stem().unwrap().to_string_lossy().to_string();
                replay_check_files(&name, &std::fs::read(&p).unwrap());
                n += 1;
            }
        } else if require_tools() {
            panic!("x/mod zip testdata not found (GOPROX_REQUIRE_TOOLS=1)");
        }
        // x/mod's newest various_go123/various_go124 fixtures, inline.
        replay_check_files("various_go123", CHECK_GO123.as_bytes());
        replay_check_files("various_go124", CHECK_GO124.as_bytes());
        println!("x/mod check_files fixtures matched: {} + 2 inline", n);
    }

    // -- Go cross-check -------------------------------------------------------------

    fn go_binary() -> Option<PathBuf> {
        let mut cands = vec![PathBuf::from("/usr/bin/go")];
        cands.push(PathBuf::from("go"));
        cands.into_iter().find(|g| {
            Command::new(g)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    const GO_CHECK: &str = r#"package main

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb/dirhash"
	modzip "golang.org/x/mod/zip"
)

// Arguments come in triples: zip file, module path, version ("-" for hash only).
func main() {
	a := os.Args[1:]
	for i := 0; i+2 < len(a); i += 3 {
		h, err := dirhash.HashZip(a[i], dirhash.Hash1)
		if err != nil {
			fmt.Println("ERR", err)
			continue
		}
		if a[i+2] != "-" {
			m := module.Version{Path: a[i+1], Version: a[i+2]}
			if _, err := modzip.CheckZip(m, a[i]); err != nil {
				fmt.Println("ERR", err)
				continue
			}
			dir := filepath.Join(os.TempDir(), fmt.Sprintf("unzip-%d-%d", os.Getpid(), i))
			err := modzip.Unzip(dir, m, a[i])
			os.RemoveAll(dir)
			if err != nil {
				fmt.Println("ERR", err)
				continue
			}
		}
		fmt.Println(h)
	}
}
"#;

    #[test]
    fn go_dirhash_agrees() {
        let Some(go) = go_binary() else {
            missing("go toolchain");
            return;
        };
        let gopath = Path::new("/usr/share/gocode");
        if !gopath.join("src/golang.org/x/mod/sumdb/dirhash").is_dir() {
            missing("golang.org/x/mod sources in /usr/share/gocode");
            return;
        }
        let dir = temp_dir("go");
        std::fs::write(dir.join("main.go"), GO_CHECK).unwrap();

        // (zip, module path, version or "-", expected h1)
        let mut jobs: Vec<(PathBuf, String, String, String)> = Vec::new();
        let mut add_job = |tag: &str, z: &[u8], path: &str, ver: &str, h: String| {
            let p = dir.join(format!("{tag}.zip"));
            std::fs::write(&p, z).unwrap();
            jobs.push((p, path.to_string(), ver.to_string(), h));
        };

        let sample = sample_entries();
        let z = write_zip(&sample);
        let mut sums: Vec<_> = sample
            .iter()
            .map(|(n, d)| (n.clone(), sha256_hex(d)))
            .collect();
        add_job("sample", &z, "m", "-", hash1(&mut sums).unwrap());

        let module_files: Vec<(String, Vec<u8>)> = vec![
            (
                "go.mod".into(),
                b"module example.com/mz\n\ngo 1.22\n".to_vec(),
            ),
            ("LICENSE".into(), b"Permission is granted.\n".to_vec()),
            (
                "mz.go".into(),
                "package mz\n\n// Big is big.\n".repeat(300).into_bytes(),
            ),
            ("internal/ünï/x.go".into(), b"package x\n".to_vec()),
            ("empty.txt".into(), Vec::new()),
            ("~tilde/a b.txt".into(), b"space\n".to_vec()),
        ];
        let prefix = "example.com/mz@v1.2.3/";
        let entries: Vec<(String, Vec<u8>)> = module_files
            .iter()
            .map(|(n, d)| (format!("{prefix}{n}"), d.clone()))
            .collect();
        let mut sums: Vec<_> = entries
            .iter()
            .map(|(n, d)| (n.clone(), sha256_hex(d)))
            .collect();
        add_job(
            "module",
            &write_zip(&entries),
            "example.com/mz",
            "v1.2.3",
            hash1(&mut sums).unwrap(),
        );

        let many: Vec<(String, Vec<u8>)> = (0..66_000)
            .map(|i| (format!("m@v1.0.0/f{i}"), vec![b'x'; i % 7]))
            .collect();
        let mut sums: Vec<_> = many
            .iter()
            .map(|(n, d)| (n.clone(), sha256_hex(d)))
            .collect();
        add_job(
            "zip64",
            &write_zip(&many),
            "m",
            "-",
            hash1(&mut sums).unwrap(),
        );

        if let Some(zips) = conformance_zips() {
            for (tag, z, h) in zips {
                add_job(&tag, &z, "m", "-", h);
            }
        }

        let mut cmd = Command::new(&go);
        cmd.current_dir(&dir)
            .env("GOPATH", gopath)
            .env("GO111MODULE", "off")
            .env("GOFLAGS", "")
            .env("GOTOOLCHAIN", "local")
            .arg("run")
            .arg("main.go");
        for (p, path, ver, _) in &jobs {
            cmd.arg(p).arg(path).arg(ver);
        }
        let out = match cmd.output() {
            Ok(o) if o.status.success() => o,
            Ok(o) => {
                let msg = format!("go run failed: {}", String::from_utf8_lossy(&o.stderr));
                if require_tools() {
                    panic!("{msg}");
                }
                eprintln!("note: {msg}");
                return;
            }
            Err(e) => {
                missing(&format!("go ({e})"));
                return;
            }
        };
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), jobs.len(), "{stdout}");
        for (line, (p, _, _, want)) in lines.iter().zip(&jobs) {
            assert_eq!(line, want, "{}", p.display());
        }
        println!("Go dirhash.HashZip agreed on {} zips", jobs.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
