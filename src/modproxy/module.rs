//! Module paths, versions and pseudo-versions as the go command checks them
//! (`golang.org/x/mod/module`, including its pseudo-version rules).
//!
//! Three kinds of path share one element grammar but allow different characters:
//! module paths (ASCII letters, digits and `-._~`, plus rules for the first element and the
//! major-version suffix), import paths (module-path characters plus `+`) and file paths
//! (many more: see [`check_file_path`]). Errors are plain strings worded like the go
//! command's own messages, because they end up in front of users.
//!
//! Escaping (for URLs and the module cache) writes each ASCII capital as `!` followed by the
//! lowercase letter, so that a case-insensitive store never needs two spellings of a path.

use super::semver;

// ---------------------------------------------------------------------------------------------
// Go-style quoting for error messages
// ---------------------------------------------------------------------------------------------

/// Format characters (category Cf) that Go's `%q` escapes although they are not controls.
fn is_format_char(c: char) -> bool {
    matches!(
        c as u32,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Appends `c` to `out` the way Go's `strconv` quoting does, with `quote` as the delimiter
/// that needs a backslash.
fn push_quoted_char(out: &mut String, c: char, quote: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\x07' => out.push_str("\\a"),
        '\x08' => out.push_str("\\b"),
        '\x0C' => out.push_str("\\f"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\x0B' => out.push_str("\\v"),
        c if c == quote => {
            out.push('\\');
            out.push(c);
        }
        ' '..='~' => out.push(c),
        c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
        c if !c.is_control() && !c.is_whitespace() && !is_format_char(c) => out.push(c),
        c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
        c => out.push_str(&format!("\\U{:08x}", c as u32)),
    }
}

/// `s` in double quotes, escaped like Go's `%q` of a string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        push_quoted_char(&mut out, c, '"');
    }
    out.push('"');
    out
}

/// `c` in single quotes, escaped like Go's `%q` of a rune.
fn quote_char(c: char) -> String {
    let mut out = String::with_capacity(4);
    out.push('\'');
    push_quoted_char(&mut out, c, '\'');
    out.push('\'');
    out
}

/// The go command's wording for a bad version (`version "x" invalid: why`), or for a bad
/// pseudo-version when `pseudo` is set.
fn invalid_version(v: &str, pseudo: bool, why: &str) -> String {
    let noun = if pseudo { "pseudo-version" } else { "version" };
    format!("{noun} {} invalid: {why}", quote(v))
}

// ---------------------------------------------------------------------------------------------
// Path checks
// ---------------------------------------------------------------------------------------------

/// Which rules a path is checked against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Module,
    Import,
    File,
}

/// Characters allowed in the first element of a module path (a lowercase LDH domain).
fn first_element_char_ok(c: char) -> bool {
    matches!(c, '-' | '.' | '0'..='9' | 'a'..='z')
}

/// Characters allowed in any module path element.
fn module_char_ok(c: char) -> bool {
    matches!(c, '-' | '.' | '_' | '~' | '0'..='9' | 'A'..='Z' | 'a'..='z')
}

/// Characters allowed in an import path element: the module set plus `+`.
fn import_char_ok(c: char) -> bool {
    module_char_ok(c) || c == '+'
}

/// Characters allowed in a file name: ASCII letters and digits, the space, the punctuation
/// in `!#$%&()+,-.=@[]^_{}~`, and any non-ASCII Unicode letter.
fn file_char_ok(c: char) -> bool {
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&()+,-.=@[]^_{}~ ".contains(c)
    } else {
        is_unicode_letter(c)
    }
}

/// Element names Windows reserves (compared case-insensitively with the part before the
/// first dot).
const WINDOWS_RESERVED: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

/// Checks one slash-free path element against the rules for `kind`.
fn check_element(elem: &str, kind: Kind) -> Result<(), String> {
    if elem.is_empty() {
        return Err("empty path element".to_string());
    }
    if elem.bytes().all(|b| b == b'.') {
        return Err(format!("invalid path element {}", quote(elem)));
    }
    if kind == Kind::Module && elem.starts_with('.') {
        return Err("leading dot in path element".to_string());
    }
    if elem.ends_with('.') {
        return Err("trailing dot in path element".to_string());
    }
    let char_ok: fn(char) -> bool = match kind {
        Kind::Module => module_char_ok,
        Kind::Import => import_char_ok,
        Kind::File => file_char_ok,
    };
    if let Some(bad) = elem.chars().find(|&c| !char_ok(c)) {
        return Err(format!("invalid char {}", quote_char(bad)));
    }

    // The part before the first dot must not be a reserved Windows device name. (Only the
    // Kelvin sign and the long s fold to ASCII letters outside ASCII, and no reserved name
    // contains a K or an S, so an ASCII case-insensitive comparison is exact.)
    let short = elem.split('.').next().unwrap_or(elem);
    if WINDOWS_RESERVED
        .iter()
        .any(|name| name.eq_ignore_ascii_case(short))
    {
        return Err(format!(
            "{} disallowed as path element component on Windows",
            quote(short)
        ));
    }

    // Outside file paths, that same part must not end in `~` and digits, which is how
    // Windows spells 8.3 short names (`PROGRA~1`).
    if kind != Kind::File
        && let Some(tilde) = short.rfind('~')
    {
        let digits = &short[tilde + 1..];
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err("trailing tilde and digits in path element".to_string());
        }
    }
    Ok(())
}

/// Checks a slash-separated path against the rules for `kind`, returning the bare reason.
fn check_general(path: &str, kind: Kind) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty string".to_string());
    }
    if kind != Kind::File && path.starts_with('-') {
        return Err("leading dash".to_string());
    }
    if path.contains("//") {
        return Err("double slash".to_string());
    }
    if path.ends_with('/') {
        return Err("trailing slash".to_string());
    }
    path.split('/')
        .try_for_each(|elem| check_element(elem, kind))
}

/// Checks that `path` is a valid module path (`module.CheckPath`).
///
/// Beyond the import-path rules, the first element must be a lowercase domain name
/// (letters, digits, `-` and `.`, containing a dot and not starting with `-`), no element
/// may start with a dot, and a trailing major-version element must be well formed: `/vN`
/// with N ≥ 2 and no leading zero or dots, or for `gopkg.in/` paths the `.vN` /
/// `.vN-unstable` form that server uses.
pub fn check_path(path: &str) -> Result<(), String> {
    check_module_path(path).map_err(|why| format!("malformed module path {}: {why}", quote(path)))
}

fn check_module_path(path: &str) -> Result<(), String> {
    check_general(path, Kind::Module)?;
    let first = path.split('/').next().unwrap_or(path);
    if first.is_empty() {
        return Err("leading slash".to_string());
    }
    if !first.contains('.') {
        return Err("missing dot in first path element".to_string());
    }
    if first.starts_with('-') {
        return Err("leading dash in first path element".to_string());
    }
    if let Some(bad) = first.chars().find(|&c| !first_element_char_ok(c)) {
        return Err(format!(
            "invalid char {} in first path element",
            quote_char(bad)
        ));
    }
    if !split_path_version(path).2 {
        return Err("invalid version".to_string());
    }
    Ok(())
}

/// Checks that `path` is a valid package import path (`module.CheckImportPath`): one or more
/// non-empty elements joined by single slashes, each made of ASCII letters, digits and
/// `-._~+`, not all dots, not ending in a dot, whose part before the first dot is neither a
/// reserved Windows device name nor ends in `~` followed by digits.
pub fn check_import_path(path: &str) -> Result<(), String> {
    check_general(path, Kind::Import)
        .map_err(|why| format!("malformed import path {}: {why}", quote(path)))
}

/// Checks that `path` is a valid slash-separated file path inside a module
/// (`module.CheckFilePath`, applied to every module zip entry).
///
/// The element rules are those of import paths except that the character set is wider (all
/// Unicode letters, ASCII digits, the space and `!#$%&()+,-.=@[]^_{}~`), a leading `-` is
/// allowed, and the `~digits` short-name rule does not apply.
pub fn check_file_path(path: &str) -> Result<(), String> {
    check_general(path, Kind::File)
        .map_err(|why| format!("malformed file path {}: {why}", quote(path)))
}

// ---------------------------------------------------------------------------------------------
// Major-version suffixes
// ---------------------------------------------------------------------------------------------

/// Whether `path` is served by gopkg.in (starts with `gopkg.in/`), whose major versions are
/// spelled `.vN` in the path.
pub fn is_gopkgin(path: &str) -> bool {
    path.starts_with("gopkg.in/")
}

/// Splits `path` into its prefix and major-version suffix (`module.SplitPathVersion`).
///
/// Returns `(prefix, path_major, ok)` with `prefix + path_major == path`. `path_major` is
/// `"/vN"` (N ≥ 2) for ordinary paths, `".vN"` or `".vN-unstable"` (any N, `.v0` included)
/// for gopkg.in paths, and `""` when there is no suffix. `ok` is false when the last element
/// looks like a major version but is not an acceptable one (`/v1`, `/v0`, `/v02`, `/v2.0`),
/// or when a gopkg.in path lacks its `.vN`; `prefix` is then the whole path.
pub fn split_path_version(path: &str) -> (String, String, bool) {
    if is_gopkgin(path) {
        return split_gopkgin(path);
    }
    let bytes = path.as_bytes();
    let mut start = bytes.len();
    let mut saw_dot = false;
    while start > 0 && (bytes[start - 1].is_ascii_digit() || bytes[start - 1] == b'.') {
        saw_dot |= bytes[start - 1] == b'.';
        start -= 1;
    }
    if start <= 1 || start == bytes.len() || bytes[start - 1] != b'v' || bytes[start - 2] != b'/' {
        return (path.to_string(), String::new(), true);
    }
    let (prefix, suffix) = path.split_at(start - 2);
    let sb = suffix.as_bytes();
    if saw_dot || sb.len() <= 2 || sb[2] == b'0' || suffix == "/v1" {
        return (path.to_string(), String::new(), false);
    }
    (prefix.to_string(), suffix.to_string(), true)
}

/// [`split_path_version`] for `gopkg.in/` paths.
fn split_gopkgin(path: &str) -> (String, String, bool) {
    let bytes = path.as_bytes();
    let mut start = path.strip_suffix("-unstable").unwrap_or(path).len();
    while start > 0 && bytes[start - 1].is_ascii_digit() {
        start -= 1;
    }
    if start <= 1 || bytes[start - 1] != b'v' || bytes[start - 2] != b'.' {
        return (path.to_string(), String::new(), false);
    }
    let (prefix, suffix) = path.split_at(start - 2);
    let sb = suffix.as_bytes();
    if sb.len() <= 2 || (sb[2] == b'0' && suffix != ".v0") {
        return (path.to_string(), String::new(), false);
    }
    (prefix.to_string(), suffix.to_string(), true)
}

/// Checks that version `v` may be used with a path whose major suffix is `path_major`
/// (`module.CheckPathMajor`).
///
/// With no suffix, `v` must be v0, v1 or carry `+incompatible`; with `/vN` or `.vN` (a
/// gopkg.in `-unstable` tail is ignored) its major must be vN. As an old compatibility
/// exception, gopkg.in `.v1` also accepts `v0.0.0-…` pseudo-versions.
pub fn check_path_major(v: &str, path_major: &str) -> Result<(), String> {
    let mut path_major = path_major;
    if path_major.starts_with(".v") {
        path_major = path_major.strip_suffix("-unstable").unwrap_or(path_major);
    }
    if v.starts_with("v0.0.0-") && path_major == ".v1" {
        return Ok(());
    }
    let m = semver::major(v);
    let wanted = if path_major.is_empty() {
        if m == "v0" || m == "v1" || semver::build(v) == "+incompatible" {
            return Ok(());
        }
        "v0 or v1"
    } else if path_major.starts_with('/') || path_major.starts_with('.') {
        if m == path_major[1..] {
            return Ok(());
        }
        &path_major[1..]
    } else {
        path_major
    };
    Err(invalid_version(
        v,
        false,
        &format!("should be {wanted}, not {m}"),
    ))
}

/// Whether version `v` is allowed with the major suffix `path_major`: exactly when
/// [`check_path_major`] succeeds.
pub fn match_path_major(v: &str, path_major: &str) -> bool {
    check_path_major(v, path_major).is_ok()
}

/// The major-version tag prefix a suffix implies (`module.PathMajorPrefix`): `"/v2"` gives
/// `"v2"`, `".v1"` and `".v1-unstable"` give `"v1"`, and `""` gives `""` (either v0 or v1).
/// A malformed suffix (no leading `/` or `.`, or not `vN`) also gives `""`, where the Go
/// function would panic.
pub fn path_major_prefix(path_major: &str) -> String {
    let mut pm = path_major;
    if pm.starts_with(".v") {
        pm = pm.strip_suffix("-unstable").unwrap_or(pm);
    }
    let Some(m) = pm.strip_prefix('/').or_else(|| pm.strip_prefix('.')) else {
        return String::new();
    };
    if semver::major(m) != m {
        return String::new();
    }
    m.to_string()
}

// ---------------------------------------------------------------------------------------------
// Escaping
// ---------------------------------------------------------------------------------------------

/// Replaces each ASCII capital with `!` and its lowercase form; `s` must already be free of
/// `!` and non-ASCII characters.
fn escape_capitals(s: &str) -> Result<String, String> {
    if s.chars().any(|c| c == '!' || !c.is_ascii()) {
        return Err("internal error: inconsistency in EscapePath".to_string());
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// Reverses [`escape_capitals`]; `None` for a capital letter, a `!` not followed by a
/// lowercase ASCII letter, or any non-ASCII character.
fn unescape_capitals(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        match c {
            '!' => match chars.next() {
                Some(l) if l.is_ascii_lowercase() => out.push(l.to_ascii_uppercase()),
                _ => return None,
            },
            c if !c.is_ascii() || c.is_ascii_uppercase() => return None,
            c => out.push(c),
        }
    }
    Some(out)
}

/// The escaped form of module path `path` for URLs and file systems
/// (`github.com/BurntSushi/toml` → `github.com/!burnt!sushi/toml`). Fails when `path` is not
/// a valid module path.
pub fn escape_path(path: &str) -> Result<String, String> {
    check_path(path)?;
    escape_capitals(path)
}

/// The module path that `escaped` stands for. Fails on capitals, on a `!` not followed by a
/// lowercase letter, on non-ASCII characters, and when the result is not a valid module path.
pub fn unescape_path(escaped: &str) -> Result<String, String> {
    let Some(path) = unescape_capitals(escaped) else {
        return Err(format!("invalid escaped module path {}", quote(escaped)));
    };
    check_path(&path)
        .map_err(|why| format!("invalid escaped module path {}: {why}", quote(escaped)))?;
    Ok(path)
}

/// The escaped form of version `v` (`v1.0.0-RC1` → `v1.0.0-!r!c1`). The version need not be
/// semantic, but it must be a valid file-name element and must not contain `!`.
pub fn escape_version(v: &str) -> Result<String, String> {
    if check_element(v, Kind::File).is_err() || v.contains('!') {
        return Err(invalid_version(v, false, "disallowed version string"));
    }
    escape_capitals(v)
}

/// The version that `escaped` stands for. Fails on bad escapes (as [`unescape_path`]) and
/// when the result is not a valid file-name element, so a version can never contain `/`.
pub fn unescape_version(escaped: &str) -> Result<String, String> {
    let Some(v) = unescape_capitals(escaped) else {
        return Err(format!("invalid escaped version {}", quote(escaped)));
    };
    check_element(&v, Kind::File)
        .map_err(|why| format!("invalid escaped version {}: {why}", quote(&v)))?;
    Ok(v)
}

// ---------------------------------------------------------------------------------------------
// Pseudo-versions
// ---------------------------------------------------------------------------------------------
//
// Three shapes, each optionally followed by the base version's build suffix (in practice only
// `+incompatible`):
//   vX.0.0-yyyymmddhhmmss-rev          no earlier tag
//   vX.Y.(Z+1)-0.yyyymmddhhmmss-rev    after release vX.Y.Z
//   vX.Y.Z-pre.0.yyyymmddhhmmss-rev    after prerelease vX.Y.Z-pre

/// Matches `\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?` against all of `s`.
fn is_pseudo_tail(s: &[u8]) -> bool {
    if s.len() < 16 || !s[..14].iter().all(u8::is_ascii_digit) || s[14] != b'-' {
        return false;
    }
    let rest = &s[15..];
    let rev_len = rest
        .iter()
        .take_while(|b| b.is_ascii_alphanumeric())
        .count();
    if rev_len == 0 {
        return false;
    }
    let after = &rest[rev_len..];
    if after.is_empty() {
        return true;
    }
    let Some(build) = after.strip_prefix(b"+") else {
        return false;
    };
    build
        .split(|&b| b == b'.')
        .all(|id| !id.is_empty() && id.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// Length of the run of ASCII digits at the start of `s`.
fn digit_run(s: &[u8]) -> usize {
    s.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// Whether `v` has the overall shape of a pseudo-version: the whole of
/// `v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)` followed by [`is_pseudo_tail`].
fn matches_pseudo_shape(v: &str) -> bool {
    let b = v.as_bytes();
    let Some(rest) = b.strip_prefix(b"v") else {
        return false;
    };
    let n = digit_run(rest);
    if n == 0 || rest.get(n) != Some(&b'.') {
        return false;
    }
    let rest = &rest[n + 1..];

    // vX.0.0-<tail>
    if let Some(tail) = rest.strip_prefix(b"0.0-")
        && is_pseudo_tail(tail)
    {
        return true;
    }

    // vX.Y.Z-[anything without '+', ending in '.']0.<tail>
    let minor = digit_run(rest);
    if minor == 0 || rest.get(minor) != Some(&b'.') {
        return false;
    }
    let rest = &rest[minor + 1..];
    let patch = digit_run(rest);
    if patch == 0 || rest.get(patch) != Some(&b'-') {
        return false;
    }
    let pre = &rest[patch + 1..];
    // The optional `[^+]*\.` part cannot reach past the first '+'.
    let limit = pre.iter().position(|&c| c == b'+').unwrap_or(pre.len());
    (0..=limit.min(pre.len())).any(|k| {
        (k == 0 || pre[k - 1] == b'.')
            && pre[k..].starts_with(b"0.")
            && is_pseudo_tail(&pre[k + 2..])
    })
}

/// Whether `v` is a pseudo-version: a valid semantic version with at least two `-` in one of
/// the three pseudo-version shapes (`vX.0.0-yyyymmddhhmmss-rev`,
/// `vX.Y.Z-0.yyyymmddhhmmss-rev`, `vX.Y.Z-pre.0.yyyymmddhhmmss-rev`, any of them optionally
/// followed by a build suffix).
pub fn is_pseudo_version(v: &str) -> bool {
    v.matches('-').count() >= 2 && semver::is_valid(v) && matches_pseudo_shape(v)
}

/// Whether `v` is the placeholder pseudo-version with no base, the zero time and an all-zero
/// revision (`vX.0.0-00010101000000-000000000000`, X being v's own major or v0).
pub fn is_zero_pseudo_version(v: &str) -> bool {
    let m = semver::major(v);
    let m = if m.is_empty() { "v0" } else { m.as_str() };
    v.strip_prefix(m) == Some(".0.0-00010101000000-000000000000")
}

/// Adds one to a decimal digit string (`"9"` → `"10"`, `"129"` → `"130"`).
fn inc_decimal(decimal: &str) -> String {
    let mut digits = decimal.as_bytes().to_vec();
    let mut i = digits.len();
    while i > 0 && digits[i - 1] == b'9' {
        digits[i - 1] = b'0';
        i -= 1;
    }
    if i > 0 {
        digits[i - 1] += 1;
    } else {
        digits.insert(0, b'1');
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// Subtracts one from a decimal digit string, dropping a leading zero that the borrow
/// creates (`"10"` → `"9"`); `""` when the value is zero.
fn dec_decimal(decimal: &str) -> String {
    let mut digits = decimal.as_bytes().to_vec();
    let mut i = digits.len();
    while i > 0 && digits[i - 1] == b'0' {
        digits[i - 1] = b'9';
        i -= 1;
    }
    if i == 0 {
        return String::new();
    }
    if i == 1 && digits[0] == b'1' && digits.len() > 1 {
        digits.remove(0);
    } else {
        digits[i - 1] -= 1;
    }
    String::from_utf8(digits).unwrap_or_default()
}

/// Builds a pseudo-version (`module.PseudoVersion`).
///
/// `major` (`"v2"`; `""` means `"v0"`) is used only when there is no `older` tag. `older` is
/// the closest earlier tag (`""`, `"v1.2.3"`, `"v1.2.3-pre"`, possibly with a build suffix
/// such as `+incompatible`, which is carried over to the result). `time` is the commit time
/// in Unix seconds and `rev` the 12-hex-digit short commit id. So `older = "v1.2.9"` gives
/// `v1.2.10-0.<time>-<rev>` and `older = "v1.2.3-rc.1"` gives `v1.2.3-rc.1.0.<time>-<rev>`.
pub fn pseudo_version(major: &str, older: &str, time: i64, rev: &str) -> String {
    let major = if major.is_empty() { "v0" } else { major };
    let segment = format!("{}-{rev}", format_pseudo_timestamp(time));
    let build = semver::build(older);
    let older = semver::canonical(older);
    if older.is_empty() {
        return format!("{major}.0.0-{segment}");
    }
    if !semver::prerelease(&older).is_empty() {
        return format!("{older}.0.{segment}{build}");
    }
    let cut = older.rfind('.').map_or(0, |i| i + 1);
    let (major_minor, patch) = older.split_at(cut);
    format!("{major_minor}{}-0.{segment}{build}", inc_decimal(patch))
}

/// The pieces of a pseudo-version: base (`vX.0.0`, `vX.Y.Z-0` or `vX.Y.Z-pre.0`), the
/// 14-digit timestamp, the revision and the build suffix.
struct PseudoParts<'a> {
    base: &'a str,
    timestamp: &'a str,
    rev: &'a str,
    build: String,
}

fn parse_pseudo(v: &str) -> Result<PseudoParts<'_>, String> {
    let syntax = || invalid_version(v, true, "syntax error");
    if !is_pseudo_version(v) {
        return Err(syntax());
    }
    let build = semver::build(v);
    let body = &v[..v.len() - build.len()];
    let (body, rev) = body.rsplit_once('-').ok_or_else(syntax)?;
    let last_dash = body.rfind('-').ok_or_else(syntax)?;
    let (base, timestamp) = match body.rfind('.') {
        Some(dot) if dot > last_dash => (&body[..dot], &body[dot + 1..]),
        _ => (&body[..last_dash], &body[last_dash + 1..]),
    };
    Ok(PseudoParts {
        base,
        timestamp,
        rev,
        build,
    })
}

/// The tagged version a pseudo-version was built on (`module.PseudoVersionBase`): `""` for
/// the `vX.0.0-…` form, `vX.Y.Z` for `vX.Y.(Z+1)-0.…`, `vX.Y.Z-pre` for `vX.Y.Z-pre.0.…`, with
/// the build suffix kept. Fails for non-pseudo-versions, for `vX.0.0-…` with a build suffix
/// and for `vX.Y.0-0.…` (whose base would have a negative patch number).
pub fn pseudo_version_base(v: &str) -> Result<String, String> {
    let p = parse_pseudo(v)?;
    let pre = semver::prerelease(p.base);
    match pre.as_str() {
        "" => {
            if p.build.is_empty() {
                Ok(String::new())
            } else {
                let why = format!(
                    "lacks base version, but has build metadata {}",
                    quote(&p.build)
                );
                Err(invalid_version(v, true, &why))
            }
        }
        "-0" => {
            let release = &p.base[..p.base.len() - 2];
            let cut = release.rfind('.').map_or(0, |i| i + 1);
            let patch = dec_decimal(&release[cut..]);
            if patch.is_empty() {
                let why = format!("version before {release} would have negative patch number");
                return Err(invalid_version(v, true, &why));
            }
            Ok(format!("{}{patch}{}", &release[..cut], p.build))
        }
        _ => match p.base.strip_suffix(".0") {
            Some(prerelease_base) => Ok(format!("{prerelease_base}{}", p.build)),
            None => Err(invalid_version(v, true, "syntax error")),
        },
    }
}

/// The commit time recorded in pseudo-version `v`, in Unix seconds (UTC). Fails when `v` is
/// not a pseudo-version or its timestamp is not a real date and time.
pub fn pseudo_version_time(v: &str) -> Result<i64, String> {
    let p = parse_pseudo(v)?;
    parse_pseudo_timestamp(p.timestamp)
        .ok_or_else(|| invalid_version(v, true, &format!("malformed time {}", quote(p.timestamp))))
}

/// The revision (short commit id) recorded in pseudo-version `v`.
pub fn pseudo_version_rev(v: &str) -> Result<String, String> {
    parse_pseudo(v).map(|p| p.rev.to_string())
}

// ---------------------------------------------------------------------------------------------
// Dates
// ---------------------------------------------------------------------------------------------

const SECONDS_PER_DAY: i64 = 86_400;

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    // Count from 0000-03-01 so that the leap day ends each 400-year era's years.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let m = i64::from(month);
    let shifted_month = if m > 2 { m - 3 } else { m + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date (year, month, day) `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are in range by construction (1..=12 and 1..=31).
    (year, month as u32, day as u32)
}

fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Splits Unix seconds into a UTC date and time of day.
fn split_unix(unix: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = unix.div_euclid(SECONDS_PER_DAY);
    let secs = unix.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    // `secs` is below 86 400, so these fit.
    let (hour, minute, second) = (
        (secs / 3600) as u32,
        (secs % 3600 / 60) as u32,
        (secs % 60) as u32,
    );
    (year, month, day, hour, minute, second)
}

/// A year as Go prints it with at least four digits (`0001`, `-0001`, `12345`).
fn format_year(year: i64) -> String {
    if year < 0 {
        format!("-{:04}", year.unsigned_abs())
    } else {
        format!("{year:04}")
    }
}

/// The UTC `yyyymmddhhmmss` form of Unix seconds used in pseudo-versions
/// (Go's `t.UTC().Format("20060102150405")`).
pub fn format_pseudo_timestamp(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = split_unix(unix);
    format!("{}{mo:02}{d:02}{h:02}{mi:02}{s:02}", format_year(y))
}

/// The RFC 3339 UTC form of Unix seconds, `2006-01-02T15:04:05Z`: what Go's JSON encoding of
/// a UTC `time.Time` with whole seconds gives (for years 0 through 9999).
pub fn format_rfc3339(unix: i64) -> String {
    let (y, mo, d, h, mi, s) = split_unix(unix);
    format!("{}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z", format_year(y))
}

/// Reads a 14-digit `yyyymmddhhmmss` UTC timestamp into Unix seconds, rejecting impossible
/// dates and times as Go's `time.Parse` does.
fn parse_pseudo_timestamp(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() != 14 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |from: usize, to: usize| {
        b[from..to]
            .iter()
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (i64::from(num(0, 4)), num(4, 6), num(6, 8));
    let (hour, minute, second) = (num(8, 10), num(10, 12), num(12, 14));
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let secs = i64::from(hour * 3600 + minute * 60 + second);
    Some(days_from_civil(year, month, day) * SECONDS_PER_DAY + secs)
}

// ---------------------------------------------------------------------------------------------
// Unicode letters
// ---------------------------------------------------------------------------------------------

/// Whether `c` is in Unicode general category L (Lu, Ll, Lt, Lm or Lo), as Go's
/// `unicode.IsLetter` decides. Rust's `char::is_alphabetic` is wider (it also takes letter
/// numbers and many combining marks), so a table is needed.
fn is_unicode_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    let c = c as u32;
    let ranges = NON_ASCII_LETTERS.len() / 2;
    // The first range whose end is at or after `c`.
    let (mut lo, mut hi) = (0, ranges);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if NON_ASCII_LETTERS[2 * mid + 1] < c {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo < ranges && NON_ASCII_LETTERS[2 * lo] <= c
}

/// Non-ASCII code points of general category L, Unicode 15.1.0 (the edition of Go's current
/// `unicode` tables), as sorted, disjoint, inclusive `[first, last]` pairs.
#[rustfmt::skip]
const NON_ASCII_LETTERS: &[u32] = &[
    0x000AA, 0x000AA, 0x000B5, 0x000B5, 0x000BA, 0x000BA, 0x000C0, 0x000D6, 0x000D8, 0x000F6,
    0x000F8, 0x002C1, 0x002C6, 0x002D1, 0x002E0, 0x002E4, 0x002EC, 0x002EC, 0x002EE, 0x002EE,
    0x00370, 0x00374, 0x00376, 0x00377, 0x0037A, 0x0037D, 0x0037F, 0x0037F, 0x00386, 0x00386,
    0x00388, 0x0038A, 0x0038C, 0x0038C, 0x0038E, 0x003A1, 0x003A3, 0x003F5, 0x003F7, 0x00481,
    0x0048A, 0x0052F, 0x00531, 0x00556, 0x00559, 0x00559, 0x00560, 0x00588, 0x005D0, 0x005EA,
    0x005EF, 0x005F2, 0x00620, 0x0064A, 0x0066E, 0x0066F, 0x00671, 0x006D3, 0x006D5, 0x006D5,
    0x006E5, 0x006E6, 0x006EE, 0x006EF, 0x006FA, 0x006FC, 0x006FF, 0x006FF, 0x00710, 0x00710,
    0x00712, 0x0072F, 0x0074D, 0x007A5, 0x007B1, 0x007B1, 0x007CA, 0x007EA, 0x007F4, 0x007F5,
    0x007FA, 0x007FA, 0x00800, 0x00815, 0x0081A, 0x0081A, 0x00824, 0x00824, 0x00828, 0x00828,
    0x00840, 0x00858, 0x00860, 0x0086A, 0x00870, 0x00887, 0x00889, 0x0088E, 0x008A0, 0x008C9,
    0x00904, 0x00939, 0x0093D, 0x0093D, 0x00950, 0x00950, 0x00958, 0x00961, 0x00971, 0x00980,
    0x00985, 0x0098C, 0x0098F, 0x00990, 0x00993, 0x009A8, 0x009AA, 0x009B0, 0x009B2, 0x009B2,
    0x009B6, 0x009B9, 0x009BD, 0x009BD, 0x009CE, 0x009CE, 0x009DC, 0x009DD, 0x009DF, 0x009E1,
    0x009F0, 0x009F1, 0x009FC, 0x009FC, 0x00A05, 0x00A0A, 0x00A0F, 0x00A10, 0x00A13, 0x00A28,
    0x00A2A, 0x00A30, 0x00A32, 0x00A33, 0x00A35, 0x00A36, 0x00A38, 0x00A39, 0x00A59, 0x00A5C,
    0x00A5E, 0x00A5E, 0x00A72, 0x00A74, 0x00A85, 0x00A8D, 0x00A8F, 0x00A91, 0x00A93, 0x00AA8,
    0x00AAA, 0x00AB0, 0x00AB2, 0x00AB3, 0x00AB5, 0x00AB9, 0x00ABD, 0x00ABD, 0x00AD0, 0x00AD0,
    0x00AE0, 0x00AE1, 0x00AF9, 0x00AF9, 0x00B05, 0x00B0C, 0x00B0F, 0x00B10, 0x00B13, 0x00B28,
    0x00B2A, 0x00B30, 0x00B32, 0x00B33, 0x00B35, 0x00B39, 0x00B3D, 0x00B3D, 0x00B5C, 0x00B5D,
    0x00B5F, 0x00B61, 0x00B71, 0x00B71, 0x00B83, 0x00B83, 0x00B85, 0x00B8A, 0x00B8E, 0x00B90,
    0x00B92, 0x00B95, 0x00B99, 0x00B9A, 0x00B9C, 0x00B9C, 0x00B9E, 0x00B9F, 0x00BA3, 0x00BA4,
    0x00BA8, 0x00BAA, 0x00BAE, 0x00BB9, 0x00BD0, 0x00BD0, 0x00C05, 0x00C0C, 0x00C0E, 0x00C10,
    0x00C12, 0x00C28, 0x00C2A, 0x00C39, 0x00C3D, 0x00C3D, 0x00C58, 0x00C5A, 0x00C5D, 0x00C5D,
    0x00C60, 0x00C61, 0x00C80, 0x00C80, 0x00C85, 0x00C8C, 0x00C8E, 0x00C90, 0x00C92, 0x00CA8,
    0x00CAA, 0x00CB3, 0x00CB5, 0x00CB9, 0x00CBD, 0x00CBD, 0x00CDD, 0x00CDE, 0x00CE0, 0x00CE1,
    0x00CF1, 0x00CF2, 0x00D04, 0x00D0C, 0x00D0E, 0x00D10, 0x00D12, 0x00D3A, 0x00D3D, 0x00D3D,
    0x00D4E, 0x00D4E, 0x00D54, 0x00D56, 0x00D5F, 0x00D61, 0x00D7A, 0x00D7F, 0x00D85, 0x00D96,
    0x00D9A, 0x00DB1, 0x00DB3, 0x00DBB, 0x00DBD, 0x00DBD, 0x00DC0, 0x00DC6, 0x00E01, 0x00E30,
    0x00E32, 0x00E33, 0x00E40, 0x00E46, 0x00E81, 0x00E82, 0x00E84, 0x00E84, 0x00E86, 0x00E8A,
    0x00E8C, 0x00EA3, 0x00EA5, 0x00EA5, 0x00EA7, 0x00EB0, 0x00EB2, 0x00EB3, 0x00EBD, 0x00EBD,
    0x00EC0, 0x00EC4, 0x00EC6, 0x00EC6, 0x00EDC, 0x00EDF, 0x00F00, 0x00F00, 0x00F40, 0x00F47,
    0x00F49, 0x00F6C, 0x00F88, 0x00F8C, 0x01000, 0x0102A, 0x0103F, 0x0103F, 0x01050, 0x01055,
    0x0105A, 0x0105D, 0x01061, 0x01061, 0x01065, 0x01066, 0x0106E, 0x01070, 0x01075, 0x01081,
    0x0108E, 0x0108E, 0x010A0, 0x010C5, 0x010C7, 0x010C7, 0x010CD, 0x010CD, 0x010D0, 0x010FA,
    0x010FC, 0x01248, 0x0124A, 0x0124D, 0x01250, 0x01256, 0x01258, 0x01258, 0x0125A, 0x0125D,
    0x01260, 0x01288, 0x0128A, 0x0128D, 0x01290, 0x012B0, 0x012B2, 0x012B5, 0x012B8, 0x012BE,
    0x012C0, 0x012C0, 0x012C2, 0x012C5, 0x012C8, 0x012D6, 0x012D8, 0x01310, 0x01312, 0x01315,
    0x01318, 0x0135A, 0x01380, 0x0138F, 0x013A0, 0x013F5, 0x013F8, 0x013FD, 0x01401, 0x0166C,
    0x0166F, 0x0167F, 0x01681, 0x0169A, 0x016A0, 0x016EA, 0x016F1, 0x016F8, 0x01700, 0x01711,
    0x0171F, 0x01731, 0x01740, 0x01751, 0x01760, 0x0176C, 0x0176E, 0x01770, 0x01780, 0x017B3,
    0x017D7, 0x017D7, 0x017DC, 0x017DC, 0x01820, 0x01878, 0x01880, 0x01884, 0x01887, 0x018A8,
    0x018AA, 0x018AA, 0x018B0, 0x018F5, 0x01900, 0x0191E, 0x01950, 0x0196D, 0x01970, 0x01974,
    0x01980, 0x019AB, 0x019B0, 0x019C9, 0x01A00, 0x01A16, 0x01A20, 0x01A54, 0x01AA7, 0x01AA7,
    0x01B05, 0x01B33, 0x01B45, 0x01B4C, 0x01B83, 0x01BA0, 0x01BAE, 0x01BAF, 0x01BBA, 0x01BE5,
    0x01C00, 0x01C23, 0x01C4D, 0x01C4F, 0x01C5A, 0x01C7D, 0x01C80, 0x01C88, 0x01C90, 0x01CBA,
    0x01CBD, 0x01CBF, 0x01CE9, 0x01CEC, 0x01CEE, 0x01CF3, 0x01CF5, 0x01CF6, 0x01CFA, 0x01CFA,
    0x01D00, 0x01DBF, 0x01E00, 0x01F15, 0x01F18, 0x01F1D, 0x01F20, 0x01F45, 0x01F48, 0x01F4D,
    0x01F50, 0x01F57, 0x01F59, 0x01F59, 0x01F5B, 0x01F5B, 0x01F5D, 0x01F5D, 0x01F5F, 0x01F7D,
    0x01F80, 0x01FB4, 0x01FB6, 0x01FBC, 0x01FBE, 0x01FBE, 0x01FC2, 0x01FC4, 0x01FC6, 0x01FCC,
    0x01FD0, 0x01FD3, 0x01FD6, 0x01FDB, 0x01FE0, 0x01FEC, 0x01FF2, 0x01FF4, 0x01FF6, 0x01FFC,
    0x02071, 0x02071, 0x0207F, 0x0207F, 0x02090, 0x0209C, 0x02102, 0x02102, 0x02107, 0x02107,
    0x0210A, 0x02113, 0x02115, 0x02115, 0x02119, 0x0211D, 0x02124, 0x02124, 0x02126, 0x02126,
    0x02128, 0x02128, 0x0212A, 0x0212D, 0x0212F, 0x02139, 0x0213C, 0x0213F, 0x02145, 0x02149,
    0x0214E, 0x0214E, 0x02183, 0x02184, 0x02C00, 0x02CE4, 0x02CEB, 0x02CEE, 0x02CF2, 0x02CF3,
    0x02D00, 0x02D25, 0x02D27, 0x02D27, 0x02D2D, 0x02D2D, 0x02D30, 0x02D67, 0x02D6F, 0x02D6F,
    0x02D80, 0x02D96, 0x02DA0, 0x02DA6, 0x02DA8, 0x02DAE, 0x02DB0, 0x02DB6, 0x02DB8, 0x02DBE,
    0x02DC0, 0x02DC6, 0x02DC8, 0x02DCE, 0x02DD0, 0x02DD6, 0x02DD8, 0x02DDE, 0x02E2F, 0x02E2F,
    0x03005, 0x03006, 0x03031, 0x03035, 0x0303B, 0x0303C, 0x03041, 0x03096, 0x0309D, 0x0309F,
    0x030A1, 0x030FA, 0x030FC, 0x030FF, 0x03105, 0x0312F, 0x03131, 0x0318E, 0x031A0, 0x031BF,
    0x031F0, 0x031FF, 0x03400, 0x04DBF, 0x04E00, 0x0A48C, 0x0A4D0, 0x0A4FD, 0x0A500, 0x0A60C,
    0x0A610, 0x0A61F, 0x0A62A, 0x0A62B, 0x0A640, 0x0A66E, 0x0A67F, 0x0A69D, 0x0A6A0, 0x0A6E5,
    0x0A717, 0x0A71F, 0x0A722, 0x0A788, 0x0A78B, 0x0A7CA, 0x0A7D0, 0x0A7D1, 0x0A7D3, 0x0A7D3,
    0x0A7D5, 0x0A7D9, 0x0A7F2, 0x0A801, 0x0A803, 0x0A805, 0x0A807, 0x0A80A, 0x0A80C, 0x0A822,
    0x0A840, 0x0A873, 0x0A882, 0x0A8B3, 0x0A8F2, 0x0A8F7, 0x0A8FB, 0x0A8FB, 0x0A8FD, 0x0A8FE,
    0x0A90A, 0x0A925, 0x0A930, 0x0A946, 0x0A960, 0x0A97C, 0x0A984, 0x0A9B2, 0x0A9CF, 0x0A9CF,
    0x0A9E0, 0x0A9E4, 0x0A9E6, 0x0A9EF, 0x0A9FA, 0x0A9FE, 0x0AA00, 0x0AA28, 0x0AA40, 0x0AA42,
    0x0AA44, 0x0AA4B, 0x0AA60, 0x0AA76, 0x0AA7A, 0x0AA7A, 0x0AA7E, 0x0AAAF, 0x0AAB1, 0x0AAB1,
    0x0AAB5, 0x0AAB6, 0x0AAB9, 0x0AABD, 0x0AAC0, 0x0AAC0, 0x0AAC2, 0x0AAC2, 0x0AADB, 0x0AADD,
    0x0AAE0, 0x0AAEA, 0x0AAF2, 0x0AAF4, 0x0AB01, 0x0AB06, 0x0AB09, 0x0AB0E, 0x0AB11, 0x0AB16,
    0x0AB20, 0x0AB26, 0x0AB28, 0x0AB2E, 0x0AB30, 0x0AB5A, 0x0AB5C, 0x0AB69, 0x0AB70, 0x0ABE2,
    0x0AC00, 0x0D7A3, 0x0D7B0, 0x0D7C6, 0x0D7CB, 0x0D7FB, 0x0F900, 0x0FA6D, 0x0FA70, 0x0FAD9,
    0x0FB00, 0x0FB06, 0x0FB13, 0x0FB17, 0x0FB1D, 0x0FB1D, 0x0FB1F, 0x0FB28, 0x0FB2A, 0x0FB36,
    0x0FB38, 0x0FB3C, 0x0FB3E, 0x0FB3E, 0x0FB40, 0x0FB41, 0x0FB43, 0x0FB44, 0x0FB46, 0x0FBB1,
    0x0FBD3, 0x0FD3D, 0x0FD50, 0x0FD8F, 0x0FD92, 0x0FDC7, 0x0FDF0, 0x0FDFB, 0x0FE70, 0x0FE74,
    0x0FE76, 0x0FEFC, 0x0FF21, 0x0FF3A, 0x0FF41, 0x0FF5A, 0x0FF66, 0x0FFBE, 0x0FFC2, 0x0FFC7,
    0x0FFCA, 0x0FFCF, 0x0FFD2, 0x0FFD7, 0x0FFDA, 0x0FFDC, 0x10000, 0x1000B, 0x1000D, 0x10026,
    0x10028, 0x1003A, 0x1003C, 0x1003D, 0x1003F, 0x1004D, 0x10050, 0x1005D, 0x10080, 0x100FA,
    0x10280, 0x1029C, 0x102A0, 0x102D0, 0x10300, 0x1031F, 0x1032D, 0x10340, 0x10342, 0x10349,
    0x10350, 0x10375, 0x10380, 0x1039D, 0x103A0, 0x103C3, 0x103C8, 0x103CF, 0x10400, 0x1049D,
    0x104B0, 0x104D3, 0x104D8, 0x104FB, 0x10500, 0x10527, 0x10530, 0x10563, 0x10570, 0x1057A,
    0x1057C, 0x1058A, 0x1058C, 0x10592, 0x10594, 0x10595, 0x10597, 0x105A1, 0x105A3, 0x105B1,
    0x105B3, 0x105B9, 0x105BB, 0x105BC, 0x10600, 0x10736, 0x10740, 0x10755, 0x10760, 0x10767,
    0x10780, 0x10785, 0x10787, 0x107B0, 0x107B2, 0x107BA, 0x10800, 0x10805, 0x10808, 0x10808,
    0x1080A, 0x10835, 0x10837, 0x10838, 0x1083C, 0x1083C, 0x1083F, 0x10855, 0x10860, 0x10876,
    0x10880, 0x1089E, 0x108E0, 0x108F2, 0x108F4, 0x108F5, 0x10900, 0x10915, 0x10920, 0x10939,
    0x10980, 0x109B7, 0x109BE, 0x109BF, 0x10A00, 0x10A00, 0x10A10, 0x10A13, 0x10A15, 0x10A17,
    0x10A19, 0x10A35, 0x10A60, 0x10A7C, 0x10A80, 0x10A9C, 0x10AC0, 0x10AC7, 0x10AC9, 0x10AE4,
    0x10B00, 0x10B35, 0x10B40, 0x10B55, 0x10B60, 0x10B72, 0x10B80, 0x10B91, 0x10C00, 0x10C48,
    0x10C80, 0x10CB2, 0x10CC0, 0x10CF2, 0x10D00, 0x10D23, 0x10E80, 0x10EA9, 0x10EB0, 0x10EB1,
    0x10F00, 0x10F1C, 0x10F27, 0x10F27, 0x10F30, 0x10F45, 0x10F70, 0x10F81, 0x10FB0, 0x10FC4,
    0x10FE0, 0x10FF6, 0x11003, 0x11037, 0x11071, 0x11072, 0x11075, 0x11075, 0x11083, 0x110AF,
    0x110D0, 0x110E8, 0x11103, 0x11126, 0x11144, 0x11144, 0x11147, 0x11147, 0x11150, 0x11172,
    0x11176, 0x11176, 0x11183, 0x111B2, 0x111C1, 0x111C4, 0x111DA, 0x111DA, 0x111DC, 0x111DC,
    0x11200, 0x11211, 0x11213, 0x1122B, 0x1123F, 0x11240, 0x11280, 0x11286, 0x11288, 0x11288,
    0x1128A, 0x1128D, 0x1128F, 0x1129D, 0x1129F, 0x112A8, 0x112B0, 0x112DE, 0x11305, 0x1130C,
    0x1130F, 0x11310, 0x11313, 0x11328, 0x1132A, 0x11330, 0x11332, 0x11333, 0x11335, 0x11339,
    0x1133D, 0x1133D, 0x11350, 0x11350, 0x1135D, 0x11361, 0x11400, 0x11434, 0x11447, 0x1144A,
    0x1145F, 0x11461, 0x11480, 0x114AF, 0x114C4, 0x114C5, 0x114C7, 0x114C7, 0x11580, 0x115AE,
    0x115D8, 0x115DB, 0x11600, 0x1162F, 0x11644, 0x11644, 0x11680, 0x116AA, 0x116B8, 0x116B8,
    0x11700, 0x1171A, 0x11740, 0x11746, 0x11800, 0x1182B, 0x118A0, 0x118DF, 0x118FF, 0x11906,
    0x11909, 0x11909, 0x1190C, 0x11913, 0x11915, 0x11916, 0x11918, 0x1192F, 0x1193F, 0x1193F,
    0x11941, 0x11941, 0x119A0, 0x119A7, 0x119AA, 0x119D0, 0x119E1, 0x119E1, 0x119E3, 0x119E3,
    0x11A00, 0x11A00, 0x11A0B, 0x11A32, 0x11A3A, 0x11A3A, 0x11A50, 0x11A50, 0x11A5C, 0x11A89,
    0x11A9D, 0x11A9D, 0x11AB0, 0x11AF8, 0x11C00, 0x11C08, 0x11C0A, 0x11C2E, 0x11C40, 0x11C40,
    0x11C72, 0x11C8F, 0x11D00, 0x11D06, 0x11D08, 0x11D09, 0x11D0B, 0x11D30, 0x11D46, 0x11D46,
    0x11D60, 0x11D65, 0x11D67, 0x11D68, 0x11D6A, 0x11D89, 0x11D98, 0x11D98, 0x11EE0, 0x11EF2,
    0x11F02, 0x11F02, 0x11F04, 0x11F10, 0x11F12, 0x11F33, 0x11FB0, 0x11FB0, 0x12000, 0x12399,
    0x12480, 0x12543, 0x12F90, 0x12FF0, 0x13000, 0x1342F, 0x13441, 0x13446, 0x14400, 0x14646,
    0x16800, 0x16A38, 0x16A40, 0x16A5E, 0x16A70, 0x16ABE, 0x16AD0, 0x16AED, 0x16B00, 0x16B2F,
    0x16B40, 0x16B43, 0x16B63, 0x16B77, 0x16B7D, 0x16B8F, 0x16E40, 0x16E7F, 0x16F00, 0x16F4A,
    0x16F50, 0x16F50, 0x16F93, 0x16F9F, 0x16FE0, 0x16FE1, 0x16FE3, 0x16FE3, 0x17000, 0x187F7,
    0x18800, 0x18CD5, 0x18D00, 0x18D08, 0x1AFF0, 0x1AFF3, 0x1AFF5, 0x1AFFB, 0x1AFFD, 0x1AFFE,
    0x1B000, 0x1B122, 0x1B132, 0x1B132, 0x1B150, 0x1B152, 0x1B155, 0x1B155, 0x1B164, 0x1B167,
    0x1B170, 0x1B2FB, 0x1BC00, 0x1BC6A, 0x1BC70, 0x1BC7C, 0x1BC80, 0x1BC88, 0x1BC90, 0x1BC99,
    0x1D400, 0x1D454, 0x1D456, 0x1D49C, 0x1D49E, 0x1D49F, 0x1D4A2, 0x1D4A2, 0x1D4A5, 0x1D4A6,
    0x1D4A9, 0x1D4AC, 0x1D4AE, 0x1D4B9, 0x1D4BB, 0x1D4BB, 0x1D4BD, 0x1D4C3, 0x1D4C5, 0x1D505,
    0x1D507, 0x1D50A, 0x1D50D, 0x1D514, 0x1D516, 0x1D51C, 0x1D51E, 0x1D539, 0x1D53B, 0x1D53E,
    0x1D540, 0x1D544, 0x1D546, 0x1D546, 0x1D54A, 0x1D550, 0x1D552, 0x1D6A5, 0x1D6A8, 0x1D6C0,
    0x1D6C2, 0x1D6DA, 0x1D6DC, 0x1D6FA, 0x1D6FC, 0x1D714, 0x1D716, 0x1D734, 0x1D736, 0x1D74E,
    0x1D750, 0x1D76E, 0x1D770, 0x1D788, 0x1D78A, 0x1D7A8, 0x1D7AA, 0x1D7C2, 0x1D7C4, 0x1D7CB,
    0x1DF00, 0x1DF1E, 0x1DF25, 0x1DF2A, 0x1E030, 0x1E06D, 0x1E100, 0x1E12C, 0x1E137, 0x1E13D,
    0x1E14E, 0x1E14E, 0x1E290, 0x1E2AD, 0x1E2C0, 0x1E2EB, 0x1E4D0, 0x1E4EB, 0x1E7E0, 0x1E7E6,
    0x1E7E8, 0x1E7EB, 0x1E7ED, 0x1E7EE, 0x1E7F0, 0x1E7FE, 0x1E800, 0x1E8C4, 0x1E900, 0x1E943,
    0x1E94B, 0x1E94B, 0x1EE00, 0x1EE03, 0x1EE05, 0x1EE1F, 0x1EE21, 0x1EE22, 0x1EE24, 0x1EE24,
    0x1EE27, 0x1EE27, 0x1EE29, 0x1EE32, 0x1EE34, 0x1EE37, 0x1EE39, 0x1EE39, 0x1EE3B, 0x1EE3B,
    0x1EE42, 0x1EE42, 0x1EE47, 0x1EE47, 0x1EE49, 0x1EE49, 0x1EE4B, 0x1EE4B, 0x1EE4D, 0x1EE4F,
    0x1EE51, 0x1EE52, 0x1EE54, 0x1EE54, 0x1EE57, 0x1EE57, 0x1EE59, 0x1EE59, 0x1EE5B, 0x1EE5B,
    0x1EE5D, 0x1EE5D, 0x1EE5F, 0x1EE5F, 0x1EE61, 0x1EE62, 0x1EE64, 0x1EE64, 0x1EE67, 0x1EE6A,
    0x1EE6C, 0x1EE72, 0x1EE74, 0x1EE77, 0x1EE79, 0x1EE7C, 0x1EE7E, 0x1EE7E, 0x1EE80, 0x1EE89,
    0x1EE8B, 0x1EE9B, 0x1EEA1, 0x1EEA3, 0x1EEA5, 0x1EEA9, 0x1EEAB, 0x1EEBB, 0x20000, 0x2A6DF,
    0x2A700, 0x2B739, 0x2B740, 0x2B81D, 0x2B820, 0x2CEA1, 0x2CEB0, 0x2EBE0, 0x2EBF0, 0x2EE5D,
    0x2F800, 0x2FA1D, 0x30000, 0x3134A, 0x31350, 0x323AF,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// (path, valid module path, valid import path, valid file path).
    const PATHS: &[(&str, bool, bool, bool)] = &[
        ("x.y/z", true, true, true),
        ("x.y", true, true, true),
        ("", false, false, false),
        ("/x.y/z", false, false, false),
        ("x./z", false, false, false),
        (".x/z", false, true, true),
        ("-x/z", false, false, true),
        ("x..y/z", true, true, true),
        ("x.y/z/../../w", false, false, false),
        ("x.y//z", false, false, false),
        ("x.y/z//w", false, false, false),
        ("x.y/z/", false, false, false),
        ("x.y/z/v0", false, true, true),
        ("x.y/z/v1", false, true, true),
        ("x.y/z/v2", true, true, true),
        ("x.y/z/v2.0", false, true, true),
        ("X.y/z", false, true, true),
        ("!x.y/z", false, false, true),
        ("_x.y/z", false, true, true),
        ("x.y!/z", false, false, true),
        ("x.y\"/z", false, false, false),
        ("x.y#/z", false, false, true),
        ("x.y$/z", false, false, true),
        ("x.y%/z", false, false, true),
        ("x.y&/z", false, false, true),
        ("x.y'/z", false, false, false),
        ("x.y(/z", false, false, true),
        ("x.y)/z", false, false, true),
        ("x.y*/z", false, false, false),
        ("x.y+/z", false, true, true),
        ("x.y,/z", false, false, true),
        ("x.y-/z", true, true, true),
        ("x.y./zt", false, false, false),
        ("x.y:/z", false, false, false),
        ("x.y;/z", false, false, false),
        ("x.y</z", false, false, false),
        ("x.y=/z", false, false, true),
        ("x.y>/z", false, false, false),
        ("x.y?/z", false, false, false),
        ("x.y@/z", false, false, true),
        ("x.y[/z", false, false, true),
        ("x.y\\/z", false, false, false),
        ("x.y]/z", false, false, true),
        ("x.y^/z", false, false, true),
        ("x.y_/z", false, true, true),
        ("x.y`/z", false, false, false),
        ("x.y{/z", false, false, true),
        ("x.y}/z", false, false, true),
        ("x.y~/z", false, true, true),
        ("x.y/z!", false, false, true),
        ("x.y/z\"", false, false, false),
        ("x.y/z#", false, false, true),
        ("x.y/z$", false, false, true),
        ("x.y/z%", false, false, true),
        ("x.y/z&", false, false, true),
        ("x.y/z'", false, false, false),
        ("x.y/z(", false, false, true),
        ("x.y/z)", false, false, true),
        ("x.y/z*", false, false, false),
        ("x.y/z++", false, true, true),
        ("x.y/z,", false, false, true),
        ("x.y/z-", true, true, true),
        ("x.y/z.t", true, true, true),
        ("x.y/z/t", true, true, true),
        ("x.y/z:", false, false, false),
        ("x.y/z;", false, false, false),
        ("x.y/z<", false, false, false),
        ("x.y/z=", false, false, true),
        ("x.y/z>", false, false, false),
        ("x.y/z?", false, false, false),
        ("x.y/z@", false, false, true),
        ("x.y/z[", false, false, true),
        ("x.y/z\\", false, false, false),
        ("x.y/z]", false, false, true),
        ("x.y/z^", false, false, true),
        ("x.y/z_", true, true, true),
        ("x.y/z`", false, false, false),
        ("x.y/z{", false, false, true),
        ("x.y/z}", false, false, true),
        ("x.y/z~", true, true, true),
        ("x.y/x.foo", true, true, true),
        ("x.y/aux.foo", false, false, false),
        ("x.y/prn", false, false, false),
        ("x.y/prn2", true, true, true),
        ("x.y/com", true, true, true),
        ("x.y/com1", false, false, false),
        ("x.y/com1.txt", false, false, false),
        ("x.y/calm1", true, true, true),
        ("x.y/z~0", false, false, true),
        ("x.y/z~09", false, false, true),
        ("x.y/z09", true, true, true),
        ("x.y/z09~", true, true, true),
        ("x.y/z09~09z", true, true, true),
        ("x.y/z09~09z~09", false, false, true),
        ("github.com/!123/logrus", false, false, true),
        ("github.com/user/unicode/испытание", false, false, true),
        ("../x", false, false, false),
        ("./y", false, false, false),
        ("x:y", false, false, false),
        ("\\temp\\foo", false, false, false),
        (".gitignore", false, true, true),
        (".github/ISSUE_TEMPLATE", false, true, true),
        ("x☺y", false, false, false),
        // Further cases: the short-name rule looks only before the first dot, reserved
        // names ignore case, and marks, letter numbers and symbols are not letters.
        ("x.y/z~1.txt", false, false, true),
        ("x.y/z.a~1", true, true, true),
        ("x.y/NuL", false, false, false),
        ("x.y/Lpt9.go", false, false, false),
        ("x.y/lpt10", true, true, true),
        ("x.y/conx", true, true, true),
        ("x.y/a b", false, false, true),
        ("x.y/é", false, false, true),
        ("x.y/e\u{301}", false, false, false),
        ("x.y/Ⅻ", false, false, false),
        ("x.y/Ⓐ", false, false, false),
        ("x.y/中文", false, false, true),
        ("x.y/a\u{0}b", false, false, false),
        ("x.y/-x", true, true, true),
        ("x.y/.x", false, true, true),
        ("x.y/...", false, false, false),
        ("example.com/a/b/c/v3", true, true, true),
        ("example.com/v2", true, true, true),
        ("example.com/v02", false, true, true),
        ("example.com/v2.1", false, true, true),
        ("example.com/x/v2/y", true, true, true),
        ("Example.com/x", false, true, true),
        ("exa_mple.com/x", false, true, true),
        ("example/x.y", false, true, true),
        ("gopkg.in/yaml.v2", true, true, true),
        ("gopkg.in/yaml", false, true, true),
        ("gopkg.in/yaml.v02", false, true, true),
        ("gopkg.in/yaml.v0", true, true, true),
        ("gopkg.in/yaml.v1-unstable", true, true, true),
        ("gopkg.in/user/pkg.v3", true, true, true),
    ];

    #[test]
    fn path_checks() {
        for &(path, module_ok, import_ok, file_ok) in PATHS {
            assert_eq!(check_path(path).is_ok(), module_ok, "check_path({path:?})");
            assert_eq!(
                check_import_path(path).is_ok(),
                import_ok,
                "check_import_path({path:?})"
            );
            assert_eq!(
                check_file_path(path).is_ok(),
                file_ok,
                "check_file_path({path:?})"
            );
        }
    }

    #[test]
    fn path_error_messages() {
        type Checker = fn(&str) -> Result<(), String>;
        let cases: &[(Checker, &str, &str)] = &[
            (check_path, "", "malformed module path \"\": empty string"),
            (
                check_path,
                "-x.y/z",
                "malformed module path \"-x.y/z\": leading dash",
            ),
            (
                check_path,
                "x.y//z",
                "malformed module path \"x.y//z\": double slash",
            ),
            (
                check_path,
                "x.y/z/",
                "malformed module path \"x.y/z/\": trailing slash",
            ),
            (
                check_path,
                "/x.y",
                "malformed module path \"/x.y\": empty path element",
            ),
            (
                check_path,
                "x.y/..",
                "malformed module path \"x.y/..\": invalid path element \"..\"",
            ),
            (
                check_path,
                "x.y/.z",
                "malformed module path \"x.y/.z\": leading dot in path element",
            ),
            (
                check_path,
                "x.y/z.",
                "malformed module path \"x.y/z.\": trailing dot in path element",
            ),
            (
                check_path,
                "x.y/z\"",
                "malformed module path \"x.y/z\\\"\": invalid char '\"'",
            ),
            (
                check_path,
                "x.y/z'",
                "malformed module path \"x.y/z'\": invalid char '\\''",
            ),
            (
                check_path,
                "x.y/a\u{1}",
                "malformed module path \"x.y/a\\x01\": invalid char '\\x01'",
            ),
            (
                check_path,
                "x.y/☺",
                "malformed module path \"x.y/☺\": invalid char '☺'",
            ),
            (
                check_path,
                "x.y/Com1.txt",
                "malformed module path \"x.y/Com1.txt\": \"Com1\" disallowed as path element \
                 component on Windows",
            ),
            (
                check_path,
                "x.y/z~1",
                "malformed module path \"x.y/z~1\": trailing tilde and digits in path element",
            ),
            (
                check_path,
                "xy/z",
                "malformed module path \"xy/z\": missing dot in first path element",
            ),
            (
                check_path,
                "X.y/z",
                "malformed module path \"X.y/z\": invalid char 'X' in first path element",
            ),
            (
                check_path,
                "x.y/z/v1",
                "malformed module path \"x.y/z/v1\": invalid version",
            ),
            (
                check_import_path,
                "a/b:c",
                "malformed import path \"a/b:c\": invalid char ':'",
            ),
            (
                check_file_path,
                "a/b\tc",
                "malformed file path \"a/b\\tc\": invalid char '\\t'",
            ),
        ];
        for &(f, input, want) in cases {
            assert_eq!(f(input), Err(want.to_string()), "input {input:?}");
        }
    }

    /// `module.Check`: a valid path plus a semantic version matching its major suffix.
    fn check(path: &str, version: &str) -> bool {
        check_path(path).is_ok()
            && semver::is_valid(version)
            && check_path_major(version, &split_path_version(path).1).is_ok()
    }

    #[test]
    fn path_and_version_agree() {
        let cases = [
            ("rsc.io/quote", "0.1.0", false),
            ("rsc io/quote", "v1.0.0", false),
            ("github.com/go-yaml/yaml", "v0.8.0", true),
            ("github.com/go-yaml/yaml", "v1.0.0", true),
            ("github.com/go-yaml/yaml", "v2.0.0", false),
            ("github.com/go-yaml/yaml", "v2.1.5", false),
            ("github.com/go-yaml/yaml", "v3.0.0", false),
            ("github.com/go-yaml/yaml/v2", "v1.0.0", false),
            ("github.com/go-yaml/yaml/v2", "v2.0.0", true),
            ("github.com/go-yaml/yaml/v2", "v2.1.5", true),
            ("github.com/go-yaml/yaml/v2", "v3.0.0", false),
            ("gopkg.in/yaml.v0", "v0.8.0", true),
            ("gopkg.in/yaml.v0", "v1.0.0", false),
            ("gopkg.in/yaml.v0", "v2.0.0", false),
            ("gopkg.in/yaml.v0", "v2.1.5", false),
            ("gopkg.in/yaml.v0", "v3.0.0", false),
            ("gopkg.in/yaml.v1", "v0.8.0", false),
            ("gopkg.in/yaml.v1", "v1.0.0", true),
            ("gopkg.in/yaml.v1", "v2.0.0", false),
            ("gopkg.in/yaml.v1", "v2.1.5", false),
            ("gopkg.in/yaml.v1", "v3.0.0", false),
            ("gopkg.in/check.v1", "v0.0.0", false),
            (
                "gopkg.in/check.v1",
                "v0.0.0-20160102150405-abcdef123456",
                true,
            ),
            ("gopkg.in/yaml.v2", "v1.0.0", false),
            ("gopkg.in/yaml.v2", "v2.0.0", true),
            ("gopkg.in/yaml.v2", "v2.1.5", true),
            ("gopkg.in/yaml.v2", "v3.0.0", false),
            ("rsc.io/quote", "v17.0.0", false),
            ("rsc.io/quote", "v17.0.0+incompatible", true),
            ("gopkg.in/yaml.v1-unstable", "v1.2.0", true),
            ("gopkg.in/yaml.v1-unstable", "v2.2.0", false),
        ];
        for (path, version, want) in cases {
            assert_eq!(check(path, version), want, "check({path:?}, {version:?})");
        }
    }

    #[test]
    fn split_path_version_cases() {
        let good = [
            ("x.y/z", ""),
            ("x.y/z", "/v2"),
            ("x.y/z", "/v3"),
            ("x.y/v", ""),
            ("x.y/z", "/v10"),
            ("gopkg.in/yaml", ".v0"),
            ("gopkg.in/yaml", ".v1"),
            ("gopkg.in/yaml", ".v2"),
            ("gopkg.in/yaml", ".v3"),
            ("gopkg.in/yaml", ".v1-unstable"),
            ("gopkg.in/user/pkg", ".v10"),
        ];
        for (prefix, major) in good {
            let path = format!("{prefix}{major}");
            assert_eq!(
                split_path_version(&path),
                (prefix.to_string(), major.to_string(), true),
                "split_path_version({path:?})"
            );
        }
        let bad = [
            "x.y/z/v1",
            "x.y/z/v0",
            "x.y/z/v01",
            "x.y/z/v2.0",
            "x.y/z/v1.2",
            "gopkg.in/yaml",
            "gopkg.in/yaml.v01",
            "gopkg.in/yaml.v",
            "gopkg.in/v2",
        ];
        for path in bad {
            assert_eq!(
                split_path_version(path),
                (path.to_string(), String::new(), false),
                "split_path_version({path:?})"
            );
        }
        // Not a major suffix at all.
        for path in ["x.y/z/2", "x.y/zv2", "v2", "x.y/z/v", "x.y/z/v2x"] {
            assert_eq!(
                split_path_version(path),
                (path.to_string(), String::new(), true),
                "split_path_version({path:?})"
            );
        }
        for &(path, ..) in PATHS {
            let (prefix, major, _) = split_path_version(path);
            assert_eq!(format!("{prefix}{major}"), path);
        }
    }

    #[test]
    fn path_major_matching() {
        let cases = [
            ("v0.0.0", "", true),
            ("v0.0.0", "/v2", false),
            ("v0.0.0", ".v0", true),
            ("v0.0.0-20190510104115-cbcb75029529", ".v1", true),
            ("v0.0.0-20190510104115-cbcb75029529", ".v1-unstable", true),
            ("v0.0.0-20190510104115-cbcb75029529", ".v2", false),
            ("v1.0.0", "/v2", false),
            ("v1.0.0", ".v1", true),
            ("v1.0.0", ".v1-unstable", true),
            ("v2.0.0+incompatible", "", true),
            ("v2.0.0", "", false),
            ("v2.0.0", "/v2", true),
            ("v2.0.0", ".v2", true),
            ("v2.0.0+incompatible", "/v2", true),
            ("bad", "", false),
        ];
        for (v, pm, want) in cases {
            assert_eq!(
                match_path_major(v, pm),
                want,
                "match_path_major({v:?}, {pm:?})"
            );
            assert_eq!(check_path_major(v, pm).is_ok(), want);
        }
        assert_eq!(
            check_path_major("v2.0.0", ""),
            Err("version \"v2.0.0\" invalid: should be v0 or v1, not v2".to_string())
        );
        assert_eq!(
            check_path_major("v1.0.0", "/v3"),
            Err("version \"v1.0.0\" invalid: should be v3, not v1".to_string())
        );
        assert_eq!(
            check_path_major("v1.0.0", ".v2-unstable"),
            Err("version \"v1.0.0\" invalid: should be v2, not v1".to_string())
        );
    }

    #[test]
    fn path_major_prefixes() {
        let cases = [
            ("", ""),
            ("/v2", "v2"),
            ("/v10", "v10"),
            (".v0", "v0"),
            (".v1", "v1"),
            (".v1-unstable", "v1"),
            ("v2", ""),
            ("/v2.1", ""),
            ("/x", ""),
        ];
        for (pm, want) in cases {
            assert_eq!(path_major_prefix(pm), want, "path_major_prefix({pm:?})");
        }
    }

    #[test]
    fn gopkgin_paths() {
        assert!(is_gopkgin("gopkg.in/yaml.v2"));
        assert!(is_gopkgin("gopkg.in/user/pkg.v1"));
        assert!(!is_gopkgin("gopkg.in"));
        assert!(!is_gopkgin("github.com/go-yaml/yaml"));
        assert!(!is_gopkgin("xgopkg.in/yaml.v2"));
    }

    #[test]
    fn path_escaping() {
        let cases = [
            (
                "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
                "ascii.com/abcdefghijklmnopqrstuvwxyz.-/~_0123456789",
            ),
            (
                "github.com/GoogleCloudPlatform/omega",
                "github.com/!google!cloud!platform/omega",
            ),
            ("github.com/BurntSushi/toml", "github.com/!burnt!sushi/toml"),
            (
                "github.com/Azure/azure-sdk-for-go",
                "github.com/!azure/azure-sdk-for-go",
            ),
        ];
        for (path, escaped) in cases {
            assert_eq!(
                escape_path(path).as_deref(),
                Ok(escaped),
                "escape_path({path:?})"
            );
            assert_eq!(
                unescape_path(escaped).as_deref(),
                Ok(path),
                "unescape_path({escaped:?})"
            );
        }
        for &(path, module_ok, ..) in PATHS {
            if !module_ok {
                assert!(escape_path(path).is_err(), "escape_path({path:?})");
                assert!(unescape_path(path).is_err(), "unescape_path({path:?})");
            }
        }
        for bad in [
            "github.com/GoogleCloudPlatform/omega",
            "github.com/!google!cloud!platform!/omega",
            "github.com/!0google!cloud!platform/omega",
            "github.com/!_google!cloud!platform/omega",
            "github.com/!!google!cloud!platform/omega",
            "github.com/!google!cloud!platform/omega!",
            "github.com/é",
            "",
        ] {
            assert!(unescape_path(bad).is_err(), "unescape_path({bad:?})");
        }
        assert_eq!(
            unescape_path("github.com/!Google"),
            Err("invalid escaped module path \"github.com/!Google\"".to_string())
        );
        assert_eq!(
            unescape_path("github.com/x/v1"),
            Err(
                "invalid escaped module path \"github.com/x/v1\": malformed module path \
                 \"github.com/x/v1\": invalid version"
                    .to_string()
            )
        );
        // The first element stays lowercase even after unescaping.
        assert!(unescape_path("!github.com/x").is_err());
    }

    #[test]
    fn version_escaping() {
        let cases = [
            ("v1.0.0", "v1.0.0"),
            ("v1.0.0-RC1", "v1.0.0-!r!c1"),
            ("v2.0.0+incompatible", "v2.0.0+incompatible"),
            ("master", "master"),
            ("Feature-X", "!feature-!x"),
            ("with space", "with space"),
        ];
        for (v, escaped) in cases {
            assert_eq!(
                escape_version(v).as_deref(),
                Ok(escaped),
                "escape_version({v:?})"
            );
            assert_eq!(
                unescape_version(escaped).as_deref(),
                Ok(v),
                "unescape_version({escaped:?})"
            );
        }
        for bad in ["", "a/b", "a!b", "..", "x.", "con", "a:b", "a*b", "é!"] {
            assert!(escape_version(bad).is_err(), "escape_version({bad:?})");
        }
        assert_eq!(
            escape_version("a/b"),
            Err("version \"a/b\" invalid: disallowed version string".to_string())
        );
        for bad in [
            "feature/x",
            "V1.0.0",
            "v1.0.0-!",
            "v1.0.0-!1",
            "é",
            "",
            "x.",
            "aux",
        ] {
            assert!(unescape_version(bad).is_err(), "unescape_version({bad:?})");
        }
        assert_eq!(
            unescape_version("feature/x"),
            Err("invalid escaped version \"feature/x\": invalid char '/'".to_string())
        );
        assert_eq!(
            unescape_version("V1"),
            Err("invalid escaped version \"V1\"".to_string())
        );
        // Versions follow file-name rules, so `~digits` is fine.
        assert_eq!(unescape_version("x~1").as_deref(), Ok("x~1"));
    }

    /// 2006-01-02T15:04:05Z.
    const REF_TIME: i64 = 1_136_214_245;

    /// (major, older tag, resulting pseudo-version with revision "hash").
    const PSEUDO: &[(&str, &str, &str)] = &[
        ("", "", "v0.0.0-20060102150405-hash"),
        ("v0", "", "v0.0.0-20060102150405-hash"),
        ("v1", "", "v1.0.0-20060102150405-hash"),
        ("v2", "", "v2.0.0-20060102150405-hash"),
        ("unused", "v0.0.0", "v0.0.1-0.20060102150405-hash"),
        ("unused", "v1.2.3", "v1.2.4-0.20060102150405-hash"),
        (
            "unused",
            "v1.2.99999999999999999",
            "v1.2.100000000000000000-0.20060102150405-hash",
        ),
        ("unused", "v1.2.3-pre", "v1.2.3-pre.0.20060102150405-hash"),
        ("unused", "v1.3.0-pre", "v1.3.0-pre.0.20060102150405-hash"),
        ("unused", "v0.0.0--", "v0.0.0--.0.20060102150405-hash"),
        (
            "unused",
            "v1.0.0+metadata",
            "v1.0.1-0.20060102150405-hash+metadata",
        ),
        (
            "unused",
            "v2.0.0+incompatible",
            "v2.0.1-0.20060102150405-hash+incompatible",
        ),
        (
            "unused",
            "v2.3.0-pre+incompatible",
            "v2.3.0-pre.0.20060102150405-hash+incompatible",
        ),
        ("unused", "v1.2.9", "v1.2.10-0.20060102150405-hash"),
        ("unused", "v1.2", "v1.2.1-0.20060102150405-hash"),
        ("unused", "v3", "v3.0.1-0.20060102150405-hash"),
    ];

    #[test]
    fn pseudo_version_construction() {
        for &(major, older, want) in PSEUDO {
            assert_eq!(
                pseudo_version(major, older, REF_TIME, "hash"),
                want,
                "pseudo_version({major:?}, {older:?})"
            );
        }
        assert_eq!(
            pseudo_version("v2", "", 1_721_652_034, "6ceadc6b1c4a"),
            "v2.0.0-20240722124034-6ceadc6b1c4a"
        );
    }

    #[test]
    fn pseudo_version_parsing() {
        for &(_, older, v) in PSEUDO {
            assert!(is_pseudo_version(v), "is_pseudo_version({v:?})");
            assert!(!is_pseudo_version(older), "is_pseudo_version({older:?})");
            assert_eq!(pseudo_version_time(v), Ok(REF_TIME), "time of {v:?}");
            assert!(pseudo_version_time(older).is_err());
            assert_eq!(pseudo_version_rev(v).as_deref(), Ok("hash"), "rev of {v:?}");
            assert!(pseudo_version_rev(older).is_err());
            // `older` shorthands come back canonical.
            let base = semver::canonical(older) + &semver::build(older);
            let base = if older.is_empty() {
                String::new()
            } else {
                base
            };
            assert_eq!(pseudo_version_base(v), Ok(base), "base of {v:?}");
        }
        assert!(pseudo_version_time("---").is_err());
        assert_eq!(
            pseudo_version_rev("v1.0.0"),
            Err("pseudo-version \"v1.0.0\" invalid: syntax error".to_string())
        );
    }

    #[test]
    fn pseudo_version_shapes() {
        let yes = [
            "v0.0.0-20191109021931-daa7c04131f5",
            "v1.2.4-0.20191109021931-daa7c04131f5",
            "v1.2.4-0.20191109021931-daa7c04131f5+incompatible",
            "v1.2.3-rc.1.0.20191109021931-daa7c04131f5",
            "v1.2.3-rc.0.0.20191109021931-daa7c04131f5",
            "v1.2.3-0.0.20191109021931-daa7c04131f5",
            "v1.2.3-a.b.c.0.20191109021931-daa7c04131f5",
            "v5.0.0-20191109021931-daa7c04131f5",
            "v5.0.0-20191109021931-X+a.b-c",
            "v0.0.0-00010101000000-000000000000",
            // Odd but matching: the timestamp need not be a real time.
            "v0.0.0-99999999999999-abc",
        ];
        for v in yes {
            assert!(is_pseudo_version(v), "{v:?} should be a pseudo-version");
        }
        let no = [
            "",
            "v1.2.3",
            "v1.2.3-pre",
            "v1.2.3-20191109021931-daa7c04131f5",
            "v1.2.3-0.2019110902193-daa7c04131f5",
            "v1.2.3-0.201911090219311-daa7c04131f5",
            "v1.2.3-0.20191109021931-",
            "v1.2.3-0.20191109021931",
            "v1.2.3-0.20191109021931-daa7c04131f5+",
            "v1.2.3-0.20191109021931-daa7c04131f5+a..b",
            "v1.2.3-pre0.20191109021931-daa7c04131f5",
            "v1.2.3-1.20191109021931-daa7c04131f5",
            "v1.1.0-20191109021931-daa7c04131f5",
            "v1.2-0.20191109021931-daa7c04131f5",
            "1.2.3-0.20191109021931-daa7c04131f5",
            "v1.2.3-0.20191109021931-daa7c04131f5-x",
            "v1.2.3-0.20191109021931-daa7c04131f5.x",
            "v1.2.3-0.20191109021931-dAA7_04131f5",
            "v0.0.0-20191109021931-daa7c04131f5-",
            "v01.0.0-20191109021931-daa7c04131f5",
        ];
        for v in no {
            assert!(
                !is_pseudo_version(v),
                "{v:?} should not be a pseudo-version"
            );
        }
    }

    #[test]
    fn pseudo_version_bad_bases() {
        for v in [
            "v0.0.0",
            "v0.0.0-",
            "v0.0.0-0.20060102150405-hash",
            "v0.1.0-0.20060102150405-hash",
            "v1.0.0-0.20060102150405-hash",
            "v0.0.0-20060102150405-hash+incompatible",
            "v0.0.0-20060102150405-hash+metadata",
        ] {
            assert!(
                pseudo_version_base(v).is_err(),
                "pseudo_version_base({v:?})"
            );
        }
        assert_eq!(
            pseudo_version_base("v1.0.0-0.20060102150405-hash"),
            Err(
                "pseudo-version \"v1.0.0-0.20060102150405-hash\" invalid: version before \
                 v1.0.0 would have negative patch number"
                    .to_string()
            )
        );
        assert_eq!(
            pseudo_version_base("v2.0.0-20060102150405-hash+incompatible"),
            Err(
                "pseudo-version \"v2.0.0-20060102150405-hash+incompatible\" invalid: lacks \
                 base version, but has build metadata \"+incompatible\""
                    .to_string()
            )
        );
        assert_eq!(
            pseudo_version_base("v1.2.10-0.20060102150405-hash").as_deref(),
            Ok("v1.2.9")
        );
        assert_eq!(
            pseudo_version_base("v1.2.100-0.20060102150405-hash").as_deref(),
            Ok("v1.2.99")
        );
        assert_eq!(
            pseudo_version_base("v1.2.3-rc.0.0.20060102150405-hash").as_deref(),
            Ok("v1.2.3-rc.0")
        );
    }

    #[test]
    fn pseudo_version_times() {
        let ok = [
            ("v0.0.0-19700101000000-abc", 0),
            ("v0.0.0-20380119031407-abc", 2_147_483_647),
            ("v0.0.0-20240229235959-abc", 1_709_251_199),
            ("v0.0.0-20000229000000-abc", 951_782_400),
            ("v0.0.0-00010101000000-abc", -62_135_596_800),
            ("v0.0.0-99991231235959-abc", 253_402_300_799),
            ("v0.0.0-19691231235959-abc", -1),
        ];
        for (v, want) in ok {
            assert_eq!(
                pseudo_version_time(v),
                Ok(want),
                "pseudo_version_time({v:?})"
            );
        }
        for v in [
            "v0.0.0-20231301000000-abc",
            "v0.0.0-20230001000000-abc",
            "v0.0.0-20230100000000-abc",
            "v0.0.0-20230132000000-abc",
            "v0.0.0-20230229000000-abc",
            "v0.0.0-19000229000000-abc",
            "v0.0.0-20230431000000-abc",
            "v0.0.0-20230101240000-abc",
            "v0.0.0-20230101006000-abc",
            "v0.0.0-20230101000060-abc",
        ] {
            assert!(
                pseudo_version_time(v).is_err(),
                "pseudo_version_time({v:?})"
            );
        }
        assert_eq!(
            pseudo_version_time("v0.0.0-20230229000000-abc"),
            Err(
                "pseudo-version \"v0.0.0-20230229000000-abc\" invalid: malformed time \
                 \"20230229000000\""
                    .to_string()
            )
        );
    }

    #[test]
    fn zero_pseudo_versions() {
        assert!(is_zero_pseudo_version("v0.0.0-00010101000000-000000000000"));
        assert!(is_zero_pseudo_version("v2.0.0-00010101000000-000000000000"));
        assert!(!is_zero_pseudo_version(
            "v0.0.0-00010101000000-000000000001"
        ));
        assert!(!is_zero_pseudo_version(
            "v0.0.0-20060102150405-000000000000"
        ));
        assert!(!is_zero_pseudo_version(
            "v0.0.1-0.00010101000000-000000000000"
        ));
        assert!(!is_zero_pseudo_version(""));
        assert_eq!(
            pseudo_version("v3", "", -62_135_596_800, "000000000000"),
            "v3.0.0-00010101000000-000000000000"
        );
    }

    #[test]
    fn decimal_steps() {
        for (input, want) in [
            ("0", "1"),
            ("1", "2"),
            ("9", "10"),
            ("99", "100"),
            ("100", "101"),
        ] {
            assert_eq!(inc_decimal(input), want, "inc_decimal({input:?})");
        }
        for (input, want) in [
            ("", ""),
            ("0", ""),
            ("00", ""),
            ("1", "0"),
            ("2", "1"),
            ("10", "9"),
            ("99", "98"),
            ("100", "99"),
            ("101", "100"),
        ] {
            assert_eq!(dec_decimal(input), want, "dec_decimal({input:?})");
        }
    }

    #[test]
    fn civil_dates() {
        let known = [
            (1970, 1, 1, 0),
            (1969, 12, 31, -1),
            (2000, 1, 1, 10_957),
            (2000, 2, 29, 11_016),
            (2000, 3, 1, 11_017),
            (1900, 3, 1, -25_508),
            (2038, 1, 19, 24_855),
            (2100, 3, 1, 47_541),
            (1, 1, 1, -719_162),
            (0, 3, 1, -719_468),
            (9999, 12, 31, 2_932_896),
        ];
        for (y, m, d, days) in known {
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        }
        // Every day from year 0 to past 2400 round-trips, and consecutive days are
        // consecutive dates.
        let mut prev = civil_from_days(-719_529);
        for days in -719_528..=160_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
            assert!((1..=12).contains(&m) && d >= 1 && d <= days_in_month(y, m));
            let next_day = if prev.2 == days_in_month(prev.0, prev.1) {
                if prev.1 == 12 {
                    (prev.0 + 1, 1, 1)
                } else {
                    (prev.0, prev.1 + 1, 1)
                }
            } else {
                (prev.0, prev.1, prev.2 + 1)
            };
            assert_eq!((y, m, d), next_day, "day {days}");
            prev = (y, m, d);
        }
        assert!(is_leap_year(2000) && is_leap_year(2024) && is_leap_year(2400));
        assert!(!is_leap_year(1900) && !is_leap_year(2100) && !is_leap_year(2023));
    }

    #[test]
    fn timestamp_formats() {
        let cases = [
            (0, "19700101000000", "1970-01-01T00:00:00Z"),
            (REF_TIME, "20060102150405", "2006-01-02T15:04:05Z"),
            (1_721_652_034, "20240722124034", "2024-07-22T12:40:34Z"),
            (951_782_400, "20000229000000", "2000-02-29T00:00:00Z"),
            (2_147_483_647, "20380119031407", "2038-01-19T03:14:07Z"),
            (2_147_483_648, "20380119031408", "2038-01-19T03:14:08Z"),
            (4_107_542_399, "21000228235959", "2100-02-28T23:59:59Z"),
            (4_107_542_400, "21000301000000", "2100-03-01T00:00:00Z"),
            (-1, "19691231235959", "1969-12-31T23:59:59Z"),
            (-62_135_596_800, "00010101000000", "0001-01-01T00:00:00Z"),
            (253_402_300_799, "99991231235959", "9999-12-31T23:59:59Z"),
            (253_402_300_800, "100000101000000", "10000-01-01T00:00:00Z"),
            (-62_167_219_201, "-00011231235959", "-0001-12-31T23:59:59Z"),
        ];
        for (unix, pseudo, rfc) in cases {
            assert_eq!(format_pseudo_timestamp(unix), pseudo, "{unix}");
            assert_eq!(format_rfc3339(unix), rfc, "{unix}");
            if (0..=9999).contains(&civil_from_days(unix.div_euclid(SECONDS_PER_DAY)).0) {
                assert_eq!(parse_pseudo_timestamp(pseudo), Some(unix), "{pseudo}");
            }
        }
        // Round trip through pseudo-versions at a spread of instants.
        let mut t: i64 = -62_135_596_800;
        while t < 253_402_300_799 {
            let v = pseudo_version("v1", "", t, "abcdef123456");
            assert_eq!(pseudo_version_time(&v), Ok(t), "{v}");
            t += 7_777_777;
        }
    }

    #[test]
    fn unicode_letters() {
        for c in [
            'a',
            'Z',
            'é',
            'ß',
            'Ж',
            'ж',
            'א',
            'ع',
            '中',
            'ー',
            'ǅ',
            'ʰ',
            '𝒜',
            '\u{2EBF0}',
        ] {
            assert!(is_unicode_letter(c), "{c:?} is a letter");
        }
        for c in [
            '1',
            '_',
            ' ',
            '\u{301}',
            '\u{93E}',
            'Ⅻ',
            'Ⓐ',
            '½',
            '٣',
            '€',
            '☺',
            '\u{200B}',
            '\u{E000}',
            '\u{10FFFF}',
            '\u{2FFFF}',
        ] {
            assert!(!is_unicode_letter(c), "{c:?} is not a letter");
        }
        assert!(NON_ASCII_LETTERS.len().is_multiple_of(2));
        assert!(NON_ASCII_LETTERS.windows(2).all(|w| w[0] <= w[1]));
        assert!(
            NON_ASCII_LETTERS
                .chunks(2)
                .zip(NON_ASCII_LETTERS.chunks(2).skip(1))
                .all(|(a, b)| a[1] + 1 < b[0])
        );
        // Every Unicode letter is alphabetic in Rust's (wider) sense.
        for pair in NON_ASCII_LETTERS.chunks(2) {
            for cp in pair[0]..=pair[1] {
                if let Some(c) = char::from_u32(cp) {
                    assert!(c.is_alphabetic(), "U+{cp:04X}");
                }
            }
        }
    }

    #[test]
    fn go_quoting() {
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("é\u{7f}\u{85}\u{200b}"), "\"é\\x7f\\u0085\\u200b\"");
        assert_eq!(quote_char('\''), "'\\''");
        assert_eq!(quote_char('"'), "'\"'");
        assert_eq!(quote_char('\n'), "'\\n'");
    }
}
