//! The content conversion `git archive` applies to blobs, driven by `.gitattributes`.
//!
//! The go command builds module zips with
//! `git -c core.autocrlf=input -c core.eol=lf archive --format=zip <commit> [subdir]` after
//! putting `* -export-subst -export-ignore` in `$GIT_DIR/info/attributes`. Every regular file
//! then goes through git's "convert to working tree" step, with attributes read from the
//! `.gitattributes` files of the archived commit's tree (the whole tree, also when a
//! subdirectory is archived). Under those settings, and with no filter drivers configured,
//! only three things can change the bytes, applied in this order:
//!
//! 1. `ident`: `$Id$` (and an already expanded `$Id: ... $`) becomes `$Id: <blob id> $`;
//! 2. end-of-line conversion: LF becomes CRLF only when the `eol` attribute is `crlf` and
//!    the `text` attribute (or, when `text` says nothing usable, the legacy `crlf`
//!    attribute) is not unset. With `text=auto` the blob must also look like text and hold
//!    no CR at all. `text`, `text=auto` or `crlf` alone never convert, because
//!    `core.autocrlf=input` makes LF the output line ending;
//! 3. `working-tree-encoding`: UTF-8 is re-encoded (git uses iconv). The UTF-16 and UTF-32
//!    families are reproduced here, with glibc's choices on a little-endian machine; any
//!    other encoding is reported by [`Attributes::unsupported`].
//!
//! `export-subst` is overridden by the go command's `info/attributes` line, so `$Format:$`
//! is never expanded. System and global attribute files (`/etc/gitattributes`,
//! `core.attributesFile`) of the machine that would run git are not modelled.
//!
//! Blobs larger than git's `core.bigFileThreshold` (512 MiB) are streamed by git archive
//! without conversion; such a file is beyond the module zip's size limit anyway, so this
//! module converts them like any other.

use std::borrow::Cow;
use std::collections::HashMap;

/// The attribute names the conversion reads, interned first so they have fixed ids.
const TEXT: usize = 0;
const CRLF: usize = 1;
const EOL: usize = 2;
const IDENT: usize = 3;
const ENCODING: usize = 4;
const BINARY: usize = 5;
const FIXED_NAMES: [&str; 6] = [
    "text",
    "crlf",
    "eol",
    "ident",
    "working-tree-encoding",
    "binary",
];
/// How many of the fixed names the conversion reads (all but `binary`).
const RELEVANT: usize = 5;

/// Lines this long or longer are ignored, as git does.
const MAX_LINE: usize = 2048;
/// Attribute files this large or larger are ignored, as git does.
const MAX_FILE: usize = 100 * 1024 * 1024;
/// The separators between a line's fields.
const BLANK: &[u8] = b" \t\r\n";
const MACRO_PREFIX: &[u8] = b"[attr]";

/// The state one line gives an attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Value {
    /// `attr`
    Set,
    /// `-attr`
    Unset,
    /// `!attr`: back to unspecified, and no lower-priority line may change that.
    Unspecified,
    /// `attr=value`
    Text(Vec<u8>),
}

#[derive(Clone, Debug)]
struct State {
    attr: usize,
    value: Value,
}

/// A parsed pattern, with the properties git derives from it.
#[derive(Debug)]
struct Pattern {
    /// Without the trailing '/' (if any).
    text: Vec<u8>,
    /// No '/' in the pattern: it is matched against the basename.
    basename_only: bool,
    /// The pattern ended with '/': it only matches directories, so never a file.
    dir_only: bool,
    /// `*literal`: the basename only has to end with the literal.
    ends_with: bool,
    /// How many leading bytes hold no glob character.
    literal_len: usize,
}

#[derive(Debug)]
struct Rule {
    pattern: Pattern,
    states: Vec<State>,
}

/// The `.gitattributes` files of one tree, by the directory that holds them ("" for the root, "a/b" otherwise, no trailing slash).
#[derive(Debug)]
pub struct Attributes {
    /// Attribute names by id.
    names: Vec<String>,
    ids: HashMap<String, usize>,
    /// Macro definitions by the id of the attribute they define (root file over builtin).
    macros: Vec<Option<Vec<State>>>,
    /// The rules of each file, by directory.
    files: HashMap<String, Vec<Rule>>,
    inert: bool,
}

/// What the conversion does to one path.
#[derive(Debug, Default, PartialEq, Eq)]
struct Plan {
    ident: bool,
    /// LF to CRLF; `Some(true)` for the `text=auto` kind, which first checks the content.
    to_crlf: Option<bool>,
    encoding: Option<Vec<u8>>,
    /// Why the result cannot be reproduced, if it cannot.
    problem: Option<String>,
}

/// The target encodings reproduced here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    Utf16 { little: bool, bom: bool },
    Utf32 { little: bool, bom: bool },
}

impl Attributes {
    /// Parses each file (bad lines are ignored, as git does). Directories may be added in any order.
    ///
    /// Pass each `.gitattributes` blob as git would read it: git also reads a symbolic link
    /// named `.gitattributes` (its target text is parsed as attribute lines). When one
    /// directory is given twice, the last one counts.
    pub fn new(files: Vec<(String, Vec<u8>)>) -> Self {
        let mut me = Attributes {
            names: Vec::new(),
            ids: HashMap::new(),
            macros: Vec::new(),
            files: HashMap::new(),
            inert: true,
        };
        for name in FIXED_NAMES {
            me.intern(name.as_bytes());
        }
        me.macros[BINARY] = Some(vec![
            State {
                attr: me.intern(b"diff"),
                value: Value::Unset,
            },
            State {
                attr: me.intern(b"merge"),
                value: Value::Unset,
            },
            State {
                attr: TEXT,
                value: Value::Unset,
            },
        ]);
        let mut by_dir: HashMap<String, Vec<u8>> = HashMap::new();
        for (dir, data) in files {
            by_dir.insert(dir.trim_end_matches('/').to_string(), data);
        }
        // Parse in a fixed order so that interning (and so everything) is deterministic.
        let mut dirs: Vec<String> = by_dir.keys().cloned().collect();
        dirs.sort();
        for dir in dirs {
            let Some(data) = by_dir.get(&dir) else {
                continue;
            };
            let rules = me.parse_file(data, dir.is_empty());
            me.files.insert(dir, rules);
        }
        me.inert = !me.can_change_content();
        me
    }

    /// True when no file sets anything that can change content under archive's settings (fast path: callers skip conversion).
    pub fn is_inert(&self) -> bool {
        self.inert
    }

    /// The bytes git archive writes for the blob at `path` (full path from the repository root, "a/b/c.go"), whose object id (hex, for `ident`) is `blob_hex`. Returns None when the content is unchanged (the common case; avoid copying).
    ///
    /// When [`Attributes::unsupported`] reports a problem for `path`, the result is the
    /// content after the conversions that could be reproduced.
    pub fn convert(&self, path: &str, blob_hex: &str, data: &[u8]) -> Option<Vec<u8>> {
        if self.inert {
            return None;
        }
        let plan = self.plan(path);
        let mut cur: Cow<[u8]> = Cow::Borrowed(data);
        if plan.ident
            && let Some(v) = expand_ident(&cur, blob_hex)
        {
            cur = Cow::Owned(v);
        }
        if let Some(auto) = plan.to_crlf
            && let Some(v) = lf_to_crlf(&cur, auto)
        {
            cur = Cow::Owned(v);
        }
        if let Some(enc) = plan.encoding.as_deref().and_then(encoding_of)
            && let Some(v) = encode(&cur, enc)
        {
            cur = Cow::Owned(v);
        }
        match cur {
            Cow::Borrowed(_) => None,
            Cow::Owned(v) if v == data => None,
            Cow::Owned(v) => Some(v),
        }
    }

    /// Why [`Attributes::convert`] cannot reproduce git's bytes for `path`, if it cannot.
    ///
    /// This is about `working-tree-encoding` only: set without a value, git archive dies (so
    /// the whole archive fails); set to an encoding other than the UTF-8, UTF-16 and UTF-32
    /// families, the bytes depend on the machine's iconv.
    pub fn unsupported(&self, path: &str) -> Option<String> {
        if self.inert {
            return None;
        }
        self.plan(path).problem
    }

    fn intern(&mut self, name: &[u8]) -> usize {
        let name = String::from_utf8_lossy(name).into_owned();
        if let Some(&id) = self.ids.get(&name) {
            return id;
        }
        let id = self.names.len();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        self.macros.push(None);
        id
    }

    /// Parses one file's lines. Macro definitions go to `self.macros` when `root`, and are
    /// rejected (the whole line) elsewhere.
    fn parse_file(&mut self, data: &[u8], root: bool) -> Vec<Rule> {
        let mut rules = Vec::new();
        if data.len() >= MAX_FILE {
            return rules;
        }
        // git reads the blob as a C string: nothing after a NUL counts.
        let data = match data.iter().position(|&b| b == 0) {
            Some(n) => &data[..n],
            None => data,
        };
        for line in data.split(|&b| b == b'\n') {
            if let Some(rule) = self.parse_line(line, root) {
                rules.push(rule);
            }
        }
        rules
    }

    fn parse_line(&mut self, line: &[u8], root: bool) -> Option<Rule> {
        let start = skip_blank(line, 0);
        if start >= line.len() || line[start] == b'#' {
            return None;
        }
        if line.len() >= MAX_LINE {
            return None;
        }
        let rest = &line[start..];
        let (name, states_at): (Vec<u8>, usize) = match unquote(rest) {
            Some((unquoted, used)) => (unquoted, start + used),
            None => {
                let n = field_len(rest);
                (rest[..n].to_vec(), start + n)
            }
        };
        // The macro test sees the whole name; everything after it stops at a NUL.
        let is_macro = name.len() > MACRO_PREFIX.len() && name.starts_with(MACRO_PREFIX);
        let name = match name.iter().position(|&b| b == 0) {
            Some(n) => name[..n].to_vec(),
            None => name,
        };
        let states = parse_states(line, skip_blank(line, states_at))?;
        if is_macro {
            if !root {
                return None;
            }
            let after = &name[MACRO_PREFIX.len()..];
            let after = &after[skip_blank(after, 0)..];
            let macro_name = &after[..field_len(after)];
            if !valid_attr_name(macro_name) || reserved_attr_name(macro_name) {
                return None;
            }
            let id = self.intern(macro_name);
            let states = self.intern_states(states);
            self.macros[id] = Some(states);
            return None;
        }
        if name.first() == Some(&b'!') {
            // Negative patterns are not allowed in attribute files.
            return None;
        }
        let pattern = Pattern::new(name);
        let states = self.intern_states(states);
        Some(Rule { pattern, states })
    }

    fn intern_states(&mut self, states: Vec<(Vec<u8>, Value)>) -> Vec<State> {
        states
            .into_iter()
            .map(|(name, value)| State {
                attr: self.intern(&name),
                value,
            })
            .collect()
    }

    /// Whether any rule or macro could make a conversion happen: `eol=crlf`, `ident`, or a
    /// `working-tree-encoding` that is not UTF-8.
    fn can_change_content(&self) -> bool {
        let root_macros = self.macros.iter().flatten().flat_map(|m| m.iter());
        let rules = self
            .files
            .values()
            .flat_map(|rules| rules.iter().flat_map(|r| r.states.iter()));
        root_macros.chain(rules).any(|s| match (s.attr, &s.value) {
            (EOL, Value::Text(v)) => v == b"crlf",
            (IDENT, Value::Set) => true,
            (ENCODING, Value::Set) => true,
            (ENCODING, Value::Text(v)) => !v.is_empty() && !is_utf8_name(v),
            _ => false,
        })
    }

    /// The attribute values git computes for `path` (only the ones the conversion reads).
    fn lookup(&self, path: &str) -> [Option<&Value>; RELEVANT] {
        let values = self.values(path, true);
        let mut out = [None; RELEVANT];
        out.copy_from_slice(&values[..RELEVANT]);
        out
    }

    /// The value of every attribute (by id) for `path`. With `relevant_only`, stops once the
    /// attributes the conversion reads are all decided.
    fn values(&self, path: &str, relevant_only: bool) -> Vec<Option<&Value>> {
        let bytes = path.as_bytes();
        // The directory part ends at the last '/' that is not the last byte.
        let last_slash = bytes
            .iter()
            .enumerate()
            .rev()
            .find(|&(i, &b)| b == b'/' && i + 1 < bytes.len())
            .map(|(i, _)| i);
        let (dir_len, base_at) = match last_slash {
            Some(i) => (i, i + 1),
            None => (0, 0),
        };
        // The attribute files that apply: the root's, then each directory down to the path's.
        let dirs = std::iter::once(0)
            .chain((1..dir_len).filter(|&i| bytes[i] == b'/'))
            .chain((dir_len > 0).then_some(dir_len));
        let frames: Vec<(&str, &[Rule])> = dirs
            .filter_map(|n| {
                let dir = &path[..n];
                self.files.get(dir).map(|rules| (dir, rules.as_slice()))
            })
            .collect();
        let mut values: Vec<Option<&Value>> = vec![None; self.names.len()];
        // Deeper files first, later lines first; the first value found for an attribute wins.
        'frames: for (base, rules) in frames.iter().rev() {
            for rule in rules.iter().rev() {
                if rule.pattern.matches(bytes, base_at, base.as_bytes()) {
                    self.fill(&rule.states, &mut values);
                    if relevant_only && values[..RELEVANT].iter().all(Option::is_some) {
                        break 'frames;
                    }
                }
            }
        }
        values
    }

    /// Gives each state of one line (last first) to an attribute that has none yet, and
    /// expands a macro that this sets.
    fn fill<'a>(&'a self, states: &'a [State], values: &mut [Option<&'a Value>]) {
        for st in states.iter().rev() {
            if values[st.attr].is_some() {
                continue;
            }
            values[st.attr] = Some(&st.value);
            if st.value == Value::Set
                && let Some(m) = &self.macros[st.attr]
            {
                self.fill(m, values);
            }
        }
    }

    /// Turns the attributes of `path` into what the conversion does, following git's
    /// `convert_attrs` under `core.autocrlf=input`.
    fn plan(&self, path: &str) -> Plan {
        let v = self.lookup(path);
        let mut plan = Plan {
            ident: v[IDENT] == Some(&Value::Set),
            ..Plan::default()
        };
        let mut action = text_action(v[TEXT]);
        if action == TextAction::Undefined {
            action = text_action(v[CRLF]);
        }
        if action != TextAction::Binary {
            let crlf = matches!(v[EOL], Some(Value::Text(e)) if e == b"crlf");
            if crlf {
                plan.to_crlf = Some(action == TextAction::Auto);
            }
        }
        match v[ENCODING] {
            // git reads an unset attribute as an empty value: no encoding.
            None | Some(Value::Unspecified) | Some(Value::Unset) => {}
            Some(Value::Set) => {
                plan.problem = Some(format!(
                    "{path}: working-tree-encoding is set without a value; git archive fails"
                ));
            }
            Some(Value::Text(e)) => {
                if !e.is_empty() && !is_utf8_name(e) {
                    if encoding_of(e).is_none() {
                        plan.problem = Some(format!(
                            "{path}: working-tree-encoding={} is not reproduced",
                            String::from_utf8_lossy(e)
                        ));
                    }
                    plan.encoding = Some(e.clone());
                }
            }
        }
        plan
    }
}

/// What the `text` (or legacy `crlf`) attribute says, as far as archive cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextAction {
    /// Unspecified, or a value git does not know.
    Undefined,
    /// Unset: never convert.
    Binary,
    /// `auto`: convert only what looks like text with LF-only line endings.
    Auto,
    /// Set, or `input`.
    Text,
}

fn text_action(v: Option<&Value>) -> TextAction {
    match v {
        Some(Value::Set) => TextAction::Text,
        Some(Value::Unset) => TextAction::Binary,
        Some(Value::Text(t)) if t == b"input" => TextAction::Text,
        Some(Value::Text(t)) if t == b"auto" => TextAction::Auto,
        _ => TextAction::Undefined,
    }
}

fn is_blank(b: u8) -> bool {
    BLANK.contains(&b)
}

fn skip_blank(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && is_blank(s[i]) {
        i += 1;
    }
    i
}

fn field_len(s: &[u8]) -> usize {
    s.iter().position(|&b| is_blank(b)).unwrap_or(s.len())
}

/// A C-style quoted string at the start of `s`: its bytes and how many bytes of `s` it
/// took, or None when `s` does not start with a well-formed one.
fn unquote(s: &[u8]) -> Option<(Vec<u8>, usize)> {
    if s.first() != Some(&b'"') {
        return None;
    }
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        let c = *s.get(i)?;
        i += 1;
        match c {
            b'"' => return Some((out, i)),
            b'\\' => {
                let e = *s.get(i)?;
                i += 1;
                let byte = match e {
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b't' => b'\t',
                    b'v' => 0x0b,
                    b'\\' | b'"' => e,
                    b'0'..=b'3' => {
                        let d2 = *s.get(i)?;
                        let d3 = *s.get(i + 1)?;
                        if !(b'0'..=b'7').contains(&d2) || !(b'0'..=b'7').contains(&d3) {
                            return None;
                        }
                        i += 2;
                        ((e - b'0') << 6) | ((d2 - b'0') << 3) | (d3 - b'0')
                    }
                    _ => return None,
                };
                out.push(byte);
            }
            _ => out.push(c),
        }
    }
}

/// Parses the attribute states of a line from `at`. None when any of them is invalid
/// (git then ignores the whole line).
fn parse_states(line: &[u8], mut at: usize) -> Option<Vec<(Vec<u8>, Value)>> {
    let mut out = Vec::new();
    while at < line.len() {
        let token = &line[at..at + field_len(&line[at..])];
        let (name, value) = match token.iter().position(|&b| b == b'=') {
            Some(eq) => (&token[..eq], Some(&token[eq + 1..])),
            None => (token, None),
        };
        let (name, value) = match name.first() {
            Some(b'-') => (&name[1..], Value::Unset),
            Some(b'!') => (&name[1..], Value::Unspecified),
            _ => match value {
                Some(v) => (name, Value::Text(v.to_vec())),
                None => (name, Value::Set),
            },
        };
        if !valid_attr_name(name) || reserved_attr_name(name) {
            return None;
        }
        out.push((name.to_vec(), value));
        at = skip_blank(line, at + token.len());
    }
    Some(out)
}

fn valid_attr_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name[0] != b'-'
        && name
            .iter()
            .all(|&c| c == b'-' || c == b'.' || c == b'_' || c.is_ascii_alphanumeric())
}

fn reserved_attr_name(name: &[u8]) -> bool {
    name.starts_with(b"builtin_")
}

/// git's `same_utf_encoding(a, b)`: both start with "utf" (any case), and the rests, each
/// without one leading '-', are equal ignoring case.
fn same_utf(a: &[u8], b: &[u8]) -> bool {
    fn rest(s: &[u8]) -> Option<&[u8]> {
        if s.len() < 3 || !s[..3].eq_ignore_ascii_case(b"utf") {
            return None;
        }
        let r = &s[3..];
        Some(r.strip_prefix(b"-").unwrap_or(r))
    }
    match (rest(a), rest(b)) {
        (Some(x), Some(y)) => x.eq_ignore_ascii_case(y),
        _ => false,
    }
}

/// Whether git treats `name` as the default encoding (no re-encoding at all).
fn is_utf8_name(name: &[u8]) -> bool {
    same_utf(name, b"UTF-8") || name.eq_ignore_ascii_case(b"UTF-8")
}

/// The encodings reproduced here, by the names git and glibc's iconv accept for them.
fn encoding_of(name: &[u8]) -> Option<Encoding> {
    if same_utf(name, b"UTF-16LE-BOM") {
        return Some(Encoding::Utf16 {
            little: true,
            bom: true,
        });
    }
    if same_utf(name, b"UTF-16BE-BOM") {
        return Some(Encoding::Utf16 {
            little: false,
            bom: true,
        });
    }
    let upper = name.to_ascii_uppercase();
    // glibc writes a byte order mark and its own (little-endian here) byte order for
    // plain "UTF-16" and "UTF-32".
    Some(match upper.as_slice() {
        b"UTF-16" | b"UTF16" => Encoding::Utf16 {
            little: true,
            bom: true,
        },
        b"UTF-16LE" | b"UTF16LE" => Encoding::Utf16 {
            little: true,
            bom: false,
        },
        b"UTF-16BE" | b"UTF16BE" => Encoding::Utf16 {
            little: false,
            bom: false,
        },
        b"UTF-32" | b"UTF32" => Encoding::Utf32 {
            little: true,
            bom: true,
        },
        b"UTF-32LE" | b"UTF32LE" => Encoding::Utf32 {
            little: true,
            bom: false,
        },
        b"UTF-32BE" | b"UTF32BE" => Encoding::Utf32 {
            little: false,
            bom: false,
        },
        _ => return None,
    })
}

/// Re-encodes UTF-8 `data`. None when there is nothing to do, or when `data` is not valid
/// UTF-8 (git then reports an error and keeps the content as it was).
fn encode(data: &[u8], enc: Encoding) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let text = std::str::from_utf8(data).ok()?;
    let mut out = Vec::with_capacity(data.len() * 2 + 4);
    match enc {
        Encoding::Utf16 { little, bom } => {
            let put = |out: &mut Vec<u8>, u: u16| {
                out.extend_from_slice(&if little {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                });
            };
            if bom {
                put(&mut out, 0xfeff);
            }
            for u in text.encode_utf16() {
                put(&mut out, u);
            }
        }
        Encoding::Utf32 { little, bom } => {
            let put = |out: &mut Vec<u8>, u: u32| {
                out.extend_from_slice(&if little {
                    u.to_le_bytes()
                } else {
                    u.to_be_bytes()
                });
            };
            if bom {
                put(&mut out, 0xfeff);
            }
            for c in text.chars() {
                put(&mut out, u32::from(c));
            }
        }
    }
    Some(out)
}

/// git's content statistics for end-of-line decisions.
#[derive(Debug, Default)]
struct Stats {
    nul: u64,
    lone_cr: u64,
    lone_lf: u64,
    crlf: u64,
    printable: u64,
    nonprintable: u64,
}

fn stats(buf: &[u8]) -> Stats {
    let mut s = Stats::default();
    let mut i = 0;
    while i < buf.len() {
        let c = buf[i];
        i += 1;
        match c {
            b'\r' => {
                if buf.get(i) == Some(&b'\n') {
                    s.crlf += 1;
                    i += 1;
                } else {
                    s.lone_cr += 1;
                }
            }
            b'\n' => s.lone_lf += 1,
            0x7f => s.nonprintable += 1,
            // Backspace, tab, escape and form feed count as printable.
            0x08 | b'\t' | 0x1b | 0x0c => s.printable += 1,
            0 => {
                s.nul += 1;
                s.nonprintable += 1;
            }
            c if c < 0x20 => s.nonprintable += 1,
            _ => s.printable += 1,
        }
    }
    // A trailing Ctrl-Z (DOS end of file) does not count.
    if buf.last() == Some(&0x1a) {
        s.nonprintable = s.nonprintable.saturating_sub(1);
    }
    s
}

fn looks_binary(s: &Stats) -> bool {
    s.lone_cr > 0 || s.nul > 0 || (s.printable >> 7) < s.nonprintable
}

/// Turns each LF not preceded by CR into CRLF. With `auto`, content that holds any CR or
/// looks binary is left alone. None when nothing changes.
fn lf_to_crlf(data: &[u8], auto: bool) -> Option<Vec<u8>> {
    if data.is_empty() {
        return None;
    }
    let s = stats(data);
    if s.lone_lf == 0 {
        return None;
    }
    if auto && (s.lone_cr > 0 || s.crlf > 0 || looks_binary(&s)) {
        return None;
    }
    let extra = usize::try_from(s.lone_lf).unwrap_or(0);
    let mut out = Vec::with_capacity(data.len() + extra);
    let mut prev = 0u8;
    for &b in data {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    Some(out)
}

/// git's `ident` expansion: `$Id$`, and `$Id:...$` without a line break inside and without
/// a space except right after the colon and right before the closing '$', become
/// `$Id: <hex> $`. None when nothing was expanded.
fn expand_ident(src: &[u8], hex: &str) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::new();
    let mut expanded = false;
    let mut at = 0;
    while let Some(off) = src[at..].iter().position(|&b| b == b'$') {
        let dollar = at + off;
        out.extend_from_slice(&src[at..=dollar]);
        at = dollar + 1;
        let rest = &src[at..];
        if rest.len() < 3 || &rest[..2] != b"Id" {
            continue;
        }
        match rest[2] {
            b'$' => at += 3,
            b':' => {
                let Some(close) = rest[3..].iter().position(|&b| b == b'$').map(|p| p + 3) else {
                    // No closing '$' anywhere after: git stops looking.
                    break;
                };
                if rest[3..close].contains(&b'\n') {
                    continue;
                }
                // A space between the byte after the colon and the byte before the closing
                // '$' marks another system's keyword: keep it. ("$Id:$" has no such span;
                // git expands it.)
                if close > 4 && rest[4..close - 1].contains(&b' ') {
                    continue;
                }
                at += close + 1;
            }
            _ => continue,
        }
        out.extend_from_slice(b"Id: ");
        out.extend_from_slice(hex.as_bytes());
        out.extend_from_slice(b" $");
        expanded = true;
    }
    if !expanded {
        return None;
    }
    out.extend_from_slice(&src[at..]);
    Some(out)
}

impl Pattern {
    fn new(mut text: Vec<u8>) -> Pattern {
        // The literal prefix and the `*literal` test look at the pattern before the
        // trailing '/' is dropped, as git does.
        let literal_full = text.iter().take_while(|&&c| !is_glob_special(c)).count();
        let ends_with =
            text.first() == Some(&b'*') && !text[1..].iter().any(|&c| is_glob_special(c));
        let dir_only = text.last() == Some(&b'/');
        if dir_only {
            text.pop();
        }
        let basename_only = !text.contains(&b'/');
        let literal_len = literal_full.min(text.len());
        Pattern {
            text,
            basename_only,
            dir_only,
            ends_with,
            literal_len,
        }
    }

    /// git's `path_matches` for a file `path` (never a directory here), the pattern coming
    /// from the attribute file of directory `base`.
    fn matches(&self, path: &[u8], base_at: usize, base: &[u8]) -> bool {
        if self.dir_only {
            return false;
        }
        if self.basename_only {
            self.matches_basename(&path[base_at..])
        } else {
            self.matches_pathname(path, base)
        }
    }

    fn matches_basename(&self, name: &[u8]) -> bool {
        let pat = &self.text[..];
        if self.literal_len == pat.len() {
            pat == name
        } else if self.ends_with {
            name.ends_with(&pat[1..])
        } else {
            wildmatch(pat, name, false)
        }
    }

    fn matches_pathname(&self, path: &[u8], base: &[u8]) -> bool {
        let mut pat = &self.text[..];
        let mut literal = self.literal_len;
        if pat.first() == Some(&b'/') {
            pat = &pat[1..];
            literal = literal.saturating_sub(1);
        }
        // The path must lie below the attribute file's directory.
        if path.len() < base.len() + 1
            || (!base.is_empty() && path[base.len()] != b'/')
            || &path[..base.len()] != base
        {
            return false;
        }
        let mut name = if base.is_empty() {
            path
        } else {
            &path[base.len() + 1..]
        };
        if literal > 0 {
            if literal > name.len() || pat[..literal] != name[..literal] {
                return false;
            }
            pat = &pat[literal..];
            name = &name[literal..];
            if pat.is_empty() && name.is_empty() {
                return true;
            }
        }
        // What follows the literal prefix is matched as a pattern of its own (which matters
        // for a "**" right after it).
        wildmatch(pat, name, true)
    }
}

/// git's glob characters: `*`, `?`, `[` and `\`.
fn is_glob_special(c: u8) -> bool {
    matches!(c, b'*' | b'?' | b'[' | b'\\')
}

/// The outcome of matching a pattern (or the rest of one) against text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wild {
    Match,
    NoMatch,
    /// No later start position can match either.
    AbortAll,
    /// Only a `**` further out could still match.
    AbortToDoubleStar,
}

/// git's `wildmatch`: `?`, `*`, `[...]` (with `!`/`^`, ranges and `[:class:]`) and `\`
/// escapes. With `pathname`, `?`, `*` and classes do not match '/', and a `**` that fills a
/// whole path component matches across directories.
fn wildmatch(pattern: &[u8], text: &[u8], pathname: bool) -> bool {
    wild(pattern, text, pathname) == Wild::Match
}

/// The byte at `i`, or 0 past the end (git works on C strings; neither patterns nor paths
/// hold NUL bytes here).
fn at(s: &[u8], i: usize) -> u8 {
    s.get(i).copied().unwrap_or(0)
}

fn wild(pat: &[u8], text: &[u8], pathname: bool) -> Wild {
    let mut p = 0;
    let mut t = 0;
    while p < pat.len() {
        let pc = pat[p];
        let tc = at(text, t);
        if tc == 0 && pc != b'*' {
            return Wild::AbortAll;
        }
        match pc {
            b'?' => {
                if pathname && tc == b'/' {
                    return Wild::NoMatch;
                }
            }
            b'*' => return star(pat, p, text, t, pathname),
            b'[' => match class(pat, p, tc, pathname) {
                Ok(next) => p = next,
                Err(w) => return w,
            },
            _ => {
                let want = if pc == b'\\' {
                    p += 1;
                    at(pat, p)
                } else {
                    pc
                };
                if tc != want {
                    return Wild::NoMatch;
                }
            }
        }
        p += 1;
        t += 1;
    }
    if t < text.len() {
        Wild::NoMatch
    } else {
        Wild::Match
    }
}

/// Matches from a `*` at `pat[p]` against `text[t..]`.
fn star(pat: &[u8], mut p: usize, text: &[u8], mut t: usize, pathname: bool) -> Wild {
    p += 1;
    let any_depth = if at(pat, p) == b'*' {
        let second = p;
        while at(pat, p) == b'*' {
            p += 1;
        }
        if !pathname {
            true
        } else if (second < 2 || pat[second - 2] == b'/')
            && (p == pat.len() || pat[p] == b'/' || (pat[p] == b'\\' && at(pat, p + 1) == b'/'))
        {
            // A whole-component "**/": first try it as matching no directory at all.
            if at(pat, p) == b'/' && wild(&pat[p + 1..], &text[t..], pathname) == Wild::Match {
                return Wild::Match;
            }
            true
        } else {
            false
        }
    } else {
        !pathname
    };
    if p == pat.len() {
        // A trailing "*" matches the rest unless that crosses a '/'.
        if !any_depth && text[t..].contains(&b'/') {
            return Wild::AbortToDoubleStar;
        }
        return Wild::Match;
    }
    if !any_depth && pat[p] == b'/' {
        // "*/" matches the rest of this path component.
        let Some(off) = text[t..].iter().position(|&c| c == b'/') else {
            return Wild::AbortAll;
        };
        t += off;
        return wild(&pat[p + 1..], &text[t + 1..], pathname);
    }
    let mut tc = at(text, t);
    loop {
        if tc == 0 {
            break;
        }
        let next = pat[p];
        if !is_glob_special(next) {
            // Skip ahead to the next occurrence of the literal that follows.
            loop {
                tc = at(text, t);
                if tc == 0 || (!any_depth && tc == b'/') || tc == next {
                    break;
                }
                t += 1;
            }
            if tc != next {
                return if any_depth {
                    Wild::AbortAll
                } else {
                    Wild::AbortToDoubleStar
                };
            }
        }
        let m = wild(&pat[p..], &text[t..], pathname);
        if m != Wild::NoMatch {
            if !any_depth || m != Wild::AbortToDoubleStar {
                return m;
            }
        } else if !any_depth && tc == b'/' {
            return Wild::AbortToDoubleStar;
        }
        t += 1;
        tc = at(text, t);
    }
    Wild::AbortAll
}

/// Matches the bracket expression at `pat[open]` against `tc`. Ok(index of its closing
/// ']') when it matches.
fn class(pat: &[u8], open: usize, tc: u8, pathname: bool) -> Result<usize, Wild> {
    let mut p = open + 1;
    let mut pc = at(pat, p);
    if pc == b'^' {
        pc = b'!';
    }
    let negated = pc == b'!';
    if negated {
        p += 1;
        pc = at(pat, p);
    }
    let mut prev = 0u8;
    let mut matched = false;
    loop {
        if pc == 0 {
            return Err(Wild::AbortAll);
        }
        if pc == b'\\' {
            p += 1;
            pc = at(pat, p);
            if pc == 0 {
                return Err(Wild::AbortAll);
            }
            if tc == pc {
                matched = true;
            }
        } else if pc == b'-' && prev != 0 && at(pat, p + 1) != 0 && at(pat, p + 1) != b']' {
            p += 1;
            pc = at(pat, p);
            if pc == b'\\' {
                p += 1;
                pc = at(pat, p);
                if pc == 0 {
                    return Err(Wild::AbortAll);
                }
            }
            if tc <= pc && tc >= prev {
                matched = true;
            }
            pc = 0;
        } else if pc == b'[' && at(pat, p + 1) == b':' {
            let s = p + 2;
            let mut e = s;
            while at(pat, e) != 0 && at(pat, e) != b']' {
                e += 1;
            }
            if at(pat, e) == 0 {
                return Err(Wild::AbortAll);
            }
            if e < s + 1 || pat[e - 1] != b':' {
                // No ":]": the '[' is an ordinary member.
                pc = b'[';
                if tc == pc {
                    matched = true;
                }
            } else {
                p = e;
                match named_class(&pat[s..e - 1], tc) {
                    Some(true) => matched = true,
                    Some(false) => {}
                    None => return Err(Wild::AbortAll),
                }
                pc = 0;
            }
        } else if tc == pc {
            matched = true;
        }
        prev = pc;
        p += 1;
        pc = at(pat, p);
        if pc == b']' {
            break;
        }
    }
    if matched == negated || (pathname && tc == b'/') {
        return Err(Wild::NoMatch);
    }
    Ok(p)
}

/// Membership of `c` in a `[:name:]` class, with git's ASCII-only character types. None for
/// an unknown class name.
fn named_class(name: &[u8], c: u8) -> Option<bool> {
    Some(match name {
        b"alnum" => c.is_ascii_alphanumeric(),
        b"alpha" => c.is_ascii_alphabetic(),
        b"blank" => c == b' ' || c == b'\t',
        b"cntrl" => c < 0x20 || c == 0x7f,
        b"digit" => c.is_ascii_digit(),
        b"graph" => (0x21..=0x7e).contains(&c),
        b"lower" => c.is_ascii_lowercase(),
        b"print" => (0x20..=0x7e).contains(&c),
        b"punct" => c.is_ascii_punctuation(),
        // git's isspace: no vertical tab, no form feed.
        b"space" => matches!(c, b' ' | b'\t' | b'\n' | b'\r'),
        b"upper" => c.is_ascii_uppercase(),
        b"xdigit" => c.is_ascii_hexdigit(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::io::Write;
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const HEX: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn inert_without_content_attributes() {
        let a = Attributes::new(vec![
            (
                "".into(),
                b"* text=auto\n*.go text\n*.png binary\n".to_vec(),
            ),
            ("sub".into(), b"*.txt -text crlf eol=lf\n".to_vec()),
        ]);
        assert!(a.is_inert());
        assert_eq!(a.convert("sub/a.txt", HEX, b"a\nb\n"), None);
        let b = Attributes::new(vec![("sub".into(), b"*.bat eol=crlf\n".to_vec())]);
        assert!(!b.is_inert());
        assert_eq!(
            b.convert("sub/x/a.bat", HEX, b"a\nb\r\n"),
            Some(b"a\r\nb\r\n".to_vec())
        );
        assert_eq!(b.convert("a.bat", HEX, b"a\nb\n"), None);
        // Macros are only honoured in the root file.
        let c = Attributes::new(vec![("sub".into(), b"[attr]w eol=crlf\n* w\n".to_vec())]);
        assert!(c.is_inert());
    }

    #[test]
    fn ident_forms() {
        let x = |s: &[u8]| expand_ident(s, HEX);
        let id = format!("$Id: {HEX} $");
        assert_eq!(x(b"$Id$"), Some(id.clone().into_bytes()));
        assert_eq!(x(b"a $Id: old $ b"), Some(format!("a {id} b").into_bytes()));
        assert_eq!(x(b"$Id: a b $"), None);
        assert_eq!(x(b"$Id:\n$"), None);
        assert_eq!(x(b"$Id"), None);
        assert_eq!(x(b"$Id:$"), Some(id.into_bytes()));
    }

    #[test]
    fn wildmatch_basics() {
        assert!(wildmatch(b"*.c", b"a.c", true));
        assert!(!wildmatch(b"*.c", b"x/a.c", true));
        assert!(wildmatch(b"**/a.c", b"x/y/a.c", true));
        assert!(wildmatch(b"**/a.c", b"a.c", true));
        assert!(wildmatch(b"x/**", b"x/y/z", true));
        assert!(!wildmatch(b"x/**", b"x", true));
        assert!(wildmatch(b"x/**/z", b"x/z", true));
        assert!(wildmatch(b"[a-c]?[!x]", b"bqy", true));
        assert!(!wildmatch(b"[a-c]?[!x]", b"bqx", true));
        assert!(wildmatch(b"[[:digit:]]*", b"1abc", true));
        assert!(!wildmatch(b"a?b", b"a/b", true));
        assert!(wildmatch(b"\\*", b"*", true));
    }

    // ---- The real oracle: git archive. ----

    fn require_tools() -> bool {
        std::env::var("GOPROX_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
    }

    fn have_git() -> bool {
        let ok = Command::new("git")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            if require_tools() {
                panic!("git is required (GOPROX_REQUIRE_TOOLS=1) but not runnable");
            }
            eprintln!("note: git not found; skipping the git archive comparison");
        }
        ok
    }

    fn unique_dir(tag: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!(
            "goprox-attrs-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        dir
    }

    /// A bare repository in a temp dir, with git isolated from the machine's configuration.
    struct Repo {
        top: PathBuf,
        git_dir: PathBuf,
    }

    impl Drop for Repo {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.top);
        }
    }

    impl Repo {
        fn new(tag: &str) -> Repo {
            let top = unique_dir(tag);
            std::fs::create_dir_all(top.join("home")).expect("home");
            let repo = Repo {
                git_dir: top.join("repo.git"),
                top,
            };
            let out = repo.cmd(&["init", "-q", "--bare"], None, &[]);
            assert!(out.status.success(), "git init: {out:?}");
            repo
        }

        fn cmd(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &Path)]) -> Output {
            let home = self.top.join("home");
            let mut c = Command::new("git");
            for v in [
                "GIT_DIR",
                "GIT_WORK_TREE",
                "GIT_INDEX_FILE",
                "GIT_OBJECT_DIRECTORY",
                "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                "GIT_CONFIG",
                "GIT_CONFIG_GLOBAL",
                "GIT_CONFIG_PARAMETERS",
                "GIT_CONFIG_COUNT",
                "GIT_ATTR_SOURCE",
                "GIT_NAMESPACE",
                "GIT_CEILING_DIRECTORIES",
            ] {
                c.env_remove(v);
            }
            c.env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_ATTR_NOSYSTEM", "1")
                .env("HOME", &home)
                .env("XDG_CONFIG_HOME", home.join(".config"))
                .env("LC_ALL", "C")
                .arg("--git-dir")
                .arg(&self.git_dir)
                .args([
                    "-c",
                    "user.name=goprox test",
                    "-c",
                    "user.email=test@example.com",
                ])
                .args(args)
                .stdin(if stdin.is_some() {
                    Stdio::piped()
                } else {
                    Stdio::null()
                })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            for (k, v) in env {
                c.env(k, v);
            }
            let mut child = c.spawn().expect("spawn git");
            if let Some(input) = stdin {
                let mut w = child.stdin.take().expect("stdin");
                let input = input.to_vec();
                // Write from a thread so a large output cannot deadlock us.
                let t = std::thread::spawn(move || {
                    let _ = w.write_all(&input);
                });
                let out = child.wait_with_output().expect("wait git");
                let _ = t.join();
                out
            } else {
                child.wait_with_output().expect("wait git")
            }
        }

        fn ok(&self, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &Path)]) -> Vec<u8> {
            let out = self.cmd(args, stdin, env);
            assert!(
                out.status.success(),
                "git {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        }

        /// Stores the entries (path, mode, content) as a commit; returns its id and each
        /// entry's blob id.
        fn commit(&self, entries: &[(String, &str, Vec<u8>)]) -> (String, Vec<String>) {
            let blobs_dir = self.top.join("blobs");
            std::fs::create_dir_all(&blobs_dir).expect("blobs dir");
            let mut list = String::new();
            for (i, (_, _, data)) in entries.iter().enumerate() {
                let p = blobs_dir.join(i.to_string());
                std::fs::write(&p, data).expect("write blob");
                list.push_str(&p.to_string_lossy());
                list.push('\n');
            }
            let out = self.ok(
                &["hash-object", "-w", "--no-filters", "--stdin-paths"],
                Some(list.as_bytes()),
                &[],
            );
            let ids: Vec<String> = String::from_utf8_lossy(&out)
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(ids.len(), entries.len());
            let mut info = String::new();
            for ((path, mode, _), id) in entries.iter().zip(&ids) {
                info.push_str(&format!("{mode} {id}\t{path}\n"));
            }
            let index = self.top.join("index");
            let env = [("GIT_INDEX_FILE", index.as_path())];
            self.ok(
                &["update-index", "--add", "--index-info"],
                Some(info.as_bytes()),
                &env,
            );
            let tree = String::from_utf8_lossy(&self.ok(&["write-tree"], None, &env))
                .trim()
                .to_string();
            let commit =
                String::from_utf8_lossy(&self.ok(&["commit-tree", "-m", "t", &tree], None, &[]))
                    .trim()
                    .to_string();
            (commit, ids)
        }

        /// What the go command does before archiving.
        fn go_info_attributes(&self) {
            let info = self.git_dir.join("info");
            std::fs::create_dir_all(&info).expect("info dir");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(info.join("attributes"))
                .expect("info/attributes");
            f.write_all(b"* -export-subst -export-ignore\n")
                .expect("write info/attributes");
        }

        fn archive(&self, commit: &str, subdir: Option<&str>) -> Output {
            let mut args = vec![
                "-c",
                "core.autocrlf=input",
                "-c",
                "core.eol=lf",
                "archive",
                "--format=tar",
                commit,
            ];
            if let Some(s) = subdir {
                args.push(s);
            }
            self.cmd(&args, None, &[])
        }
    }

    fn octal(field: &[u8]) -> usize {
        field
            .iter()
            .skip_while(|&&b| b == b' ')
            .take_while(|&&b| (b'0'..=b'7').contains(&b))
            .fold(0, |n, &b| n * 8 + usize::from(b - b'0'))
    }

    fn cstr(field: &[u8]) -> String {
        let n = field.iter().position(|&b| b == 0).unwrap_or(field.len());
        String::from_utf8_lossy(&field[..n]).into_owned()
    }

    /// A minimal ustar/pax reader: (path, type flag, content) of each entry.
    fn read_tar(data: &[u8]) -> Vec<(String, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        let mut pax_path: Option<String> = None;
        while off + 512 <= data.len() {
            let h = &data[off..off + 512];
            if h.iter().all(|&b| b == 0) {
                break;
            }
            let size = octal(&h[124..136]);
            let typ = h[156];
            let body = data[off + 512..off + 512 + size].to_vec();
            off += 512 + size.div_ceil(512) * 512;
            match typ {
                b'g' => continue,
                b'x' => {
                    let mut rest = &body[..];
                    while let Some(sp) = rest.iter().position(|&b| b == b' ') {
                        let len: usize = String::from_utf8_lossy(&rest[..sp])
                            .parse()
                            .expect("pax len");
                        let rec = &rest[sp + 1..len - 1];
                        if let Some(v) = rec.strip_prefix(b"path=") {
                            pax_path = Some(String::from_utf8_lossy(v).into_owned());
                        }
                        rest = &rest[len..];
                    }
                    continue;
                }
                _ => {}
            }
            let name = cstr(&h[0..100]);
            let prefix = if &h[257..262] == b"ustar" {
                cstr(&h[345..500])
            } else {
                String::new()
            };
            let path = pax_path.take().unwrap_or_else(|| {
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            out.push((path, typ, body));
        }
        out
    }

    fn contents() -> Vec<(&'static str, Vec<u8>)> {
        let mut ctrl_text = vec![b'a'; 200];
        ctrl_text.extend_from_slice(b"\x01\n");
        let mut ctrl_bin = vec![b'a'; 100];
        ctrl_bin.extend_from_slice(b"\x01\n");
        let mut big = Vec::new();
        for i in 0..300 {
            big.extend_from_slice(format!("line {i} of a longer text file\n").as_bytes());
        }
        vec![
            ("lf", b"one\ntwo\n".to_vec()),
            ("crlf", b"one\r\ntwo\r\n".to_vec()),
            ("mixed", b"one\r\ntwo\nthree\n".to_vec()),
            ("lonecr", b"one\rtwo\nthree\n".to_vec()),
            ("onlycr", b"one\rtwo\r".to_vec()),
            ("crcrlf", b"a\r\r\nb\n".to_vec()),
            ("lfcr", b"a\n\rb\n".to_vec()),
            ("nul", b"a\0b\nc\n".to_vec()),
            ("empty", Vec::new()),
            ("nonl", b"no newline".to_vec()),
            ("nonl2", b"line\nno newline".to_vec()),
            ("onlylf", b"\n".to_vec()),
            ("ctrl", b"\x01\x02\x03\n".to_vec()),
            ("ctrltext", ctrl_text),
            ("ctrlbin", ctrl_bin),
            ("eof", b"a\nb\n\x1a".to_vec()),
            ("del", b"\x7f\x7f\nx".to_vec()),
            ("tabs", b"\x08\t\x1b\x0c\n".to_vec()),
            (
                "utf8",
                "h\u{e9}llo w\u{f6}rld\n\u{20ac} \u{1d11e} \u{feff}\n"
                    .as_bytes()
                    .to_vec(),
            ),
            ("badutf8", b"a\xff\nb\n".to_vec()),
            ("surrogate", b"a\xed\xa0\x80\n".to_vec()),
            ("overlong", b"a\xc0\xaf\n".to_vec()),
            ("trunc", b"a\n\xe2\x82".to_vec()),
            ("big", big),
            ("id1", b"$Id$\n".to_vec()),
            ("id2", b"x $Id: 0123 $ y\n$Id$\n".to_vec()),
            ("id3", b"$Id: a b $\n$Id:\n$ $Id\n$$Id$".to_vec()),
            ("id4", b"$Id:$ tail\n".to_vec()),
            ("id5", b"$Id:$".to_vec()),
            ("id6", b"$Id: foo $ $Id: bar$\r\n$Id:  $\n".to_vec()),
            ("id7", b"$Id$$Id$Id$\n$Id:".to_vec()),
            ("id8", b"$Id$\r\n$Id$\n$Id:x\r$".to_vec()),
            ("id9", b"$I$Id:$d$ $Id:a $Id$\n".to_vec()),
            ("format", b"$Format:%H$\n".to_vec()),
        ]
    }

    const NAMES: &[&str] = &[
        "{}.txt",
        "{}.bat",
        "{}.bin",
        "{}.md",
        "{}.c",
        "{}",
        "sub/{}.txt",
        "sub/{}.bat",
        "sub/{}.bin",
        "sub/{}.md",
        "sub/deep/{}.txt",
        "sub/deep/{}.bat",
        "sub/deep/{}.bin",
        "docs/x/y/{}.md",
    ];

    struct Case {
        name: &'static str,
        /// (directory, content, mode) of each attribute file.
        attrs: Vec<(&'static str, Vec<u8>, &'static str)>,
        /// File name templates ("{}" is the content's name); NAMES when empty.
        names: Vec<&'static str>,
        /// Further (path, content) files.
        extra: Vec<(&'static str, Vec<u8>)>,
        /// Subdirectories also archived on their own.
        subdirs: Vec<&'static str>,
        /// Whether some file must come out changed.
        changes: bool,
        /// Paths (suffixes) for which `unsupported` must report a problem; not compared.
        unsupported: Vec<&'static str>,
    }

    fn case(name: &'static str, attrs: &[(&'static str, &str)], changes: bool) -> Case {
        Case {
            name,
            attrs: attrs
                .iter()
                .map(|(d, t)| (*d, t.as_bytes().to_vec(), "100644"))
                .collect(),
            names: Vec::new(),
            extra: Vec::new(),
            subdirs: Vec::new(),
            changes,
            unsupported: Vec::new(),
        }
    }

    /// Builds the repository of `c`, archives it as the go command does and compares every
    /// file with `convert`. Returns how many files differ from their blob.
    fn run_case(c: &Case) -> usize {
        let repo = Repo::new(c.name);
        let mut entries: Vec<(String, &str, Vec<u8>)> = Vec::new();
        let names: &[&str] = if c.names.is_empty() { NAMES } else { &c.names };
        for (cname, data) in contents() {
            for n in names {
                entries.push((n.replace("{}", cname), "100644", data.clone()));
            }
        }
        for (p, data) in &c.extra {
            entries.push((p.to_string(), "100644", data.clone()));
        }
        let mut attr_files = Vec::new();
        for (dir, data, mode) in &c.attrs {
            let p = if dir.is_empty() {
                ".gitattributes".to_string()
            } else {
                format!("{dir}/.gitattributes")
            };
            entries.push((p, mode, data.clone()));
            attr_files.push((dir.to_string(), data.clone()));
        }
        let (commit, ids) = repo.commit(&entries);
        repo.go_info_attributes();
        let attrs = Attributes::new(attr_files);
        let by_path: BTreeMap<&str, (&str, &[u8], &str)> = entries
            .iter()
            .zip(&ids)
            .map(|((p, m, d), id)| (p.as_str(), (*m, d.as_slice(), id.as_str())))
            .collect();
        let mut changed = 0;
        let mut failures = Vec::new();
        let mut archives: Vec<Option<&str>> = vec![None];
        archives.extend(c.subdirs.iter().map(|s| Some(*s)));
        for sub in archives {
            let out = repo.archive(&commit, sub);
            assert!(
                out.status.success(),
                "{}: git archive failed: {}",
                c.name,
                String::from_utf8_lossy(&out.stderr)
            );
            let tar = read_tar(&out.stdout);
            let mut seen = BTreeSet::new();
            for (path, typ, got) in tar {
                if typ != b'0' && typ != 0 {
                    continue;
                }
                let Some(&(mode, blob, id)) = by_path.get(path.as_str()) else {
                    panic!("{}: unexpected archive entry {path}", c.name);
                };
                seen.insert(path.clone());
                if mode != "100644" {
                    continue;
                }
                if c.unsupported.iter().any(|s| path.ends_with(s)) {
                    assert!(
                        attrs.unsupported(&path).is_some(),
                        "{}: {path}: expected a problem report",
                        c.name
                    );
                    continue;
                }
                if let Some(p) = attrs.unsupported(&path) {
                    failures.push(format!("{path}: unexpected problem report: {p}"));
                }
                let mine = attrs.convert(&path, id, blob);
                if mine.as_deref() == Some(blob) {
                    failures.push(format!("{path}: Some(unchanged) instead of None"));
                }
                let mine = mine.unwrap_or_else(|| blob.to_vec());
                if got != blob {
                    changed += 1;
                    assert!(!attrs.is_inert(), "{}: inert but {path} changed", c.name);
                }
                if mine != got {
                    failures.push(format!(
                        "{path}:\n   blob {:?}\n    git {:?}\n   mine {:?}",
                        String::from_utf8_lossy(blob),
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&mine)
                    ));
                }
            }
            if sub.is_none() {
                for (p, (mode, _, _)) in &by_path {
                    if *mode == "100644" {
                        assert!(
                            seen.contains(*p),
                            "{}: {p} missing from the archive",
                            c.name
                        );
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{}: {} mismatches:\n{}",
            c.name,
            failures.len(),
            failures.join("\n")
        );
        assert_eq!(
            c.changes,
            changed > 0,
            "{}: {changed} files changed",
            c.name
        );
        changed
    }

    fn cases() -> Vec<Case> {
        let mut v = vec![
            case("bat-text-eol-crlf", &[("", "*.bat text eol=crlf\n")], true),
            case("auto-eol-crlf", &[("", "* text=auto eol=crlf\n")], true),
            case("auto", &[("", "* text=auto\n")], false),
            case(
                "text-crlf-alone",
                &[("", "* text\n*.bat crlf\n*.c eol=lf\n")],
                false,
            ),
            case("txt-eol-crlf", &[("", "*.txt eol=crlf\n")], true),
            case(
                "legacy-crlf",
                &[
                    (
                        "",
                        "*.txt crlf\n*.bat crlf eol=crlf\n*.bin -crlf eol=crlf\n\
                         *.md crlf=input eol=crlf\n*.c crlf=auto eol=crlf\n",
                    ),
                    (
                        "sub",
                        "*.txt text=bogus crlf=auto eol=crlf\n*.bat text=input -crlf eol=crlf\n\
                         *.md text=auto -crlf eol=crlf\n",
                    ),
                ],
                true,
            ),
            case(
                "minus-text-binary",
                &[(
                    "",
                    "* eol=crlf\n*.bin -text\n*.md binary\n*.c binary text\n*.txt text binary\n\
                     *.bat binary\nsub/*.bat -binary\nsub/deep/*.bat binary=yes\n",
                )],
                true,
            ),
            case(
                "nested",
                &[
                    ("", "* text=auto eol=crlf\n*.bat -text\n"),
                    ("sub", "*.txt -text\n*.bat text\n*.md eol=lf\n"),
                    (
                        "sub/deep",
                        "*.txt text eol=crlf\n*.bat !text\n*.bin eol=crlf\n",
                    ),
                    ("docs/x", "*.md eol=lf\n"),
                ],
                true,
            ),
            case(
                "slashes",
                &[
                    (
                        "",
                        "sub/*.txt eol=crlf\n/lf.bat eol=crlf\ndocs/**/*.md eol=crlf\n\
                         **/deep/*.bat eol=crlf\nsub/ eol=crlf\nsub/deep/ eol=crlf\n\
                         sub/deep eol=crlf\n/mixed.bin eol=crlf\n",
                    ),
                    (
                        "sub",
                        "deep/*.txt ident\n/crlf.bat eol=crlf\n*/lf.bin eol=crlf\n/sub/lf.md eol=crlf\n",
                    ),
                ],
                true,
            ),
            case(
                "doublestar",
                &[(
                    "",
                    "**/lf.txt eol=crlf\nsub/** ident\n**/deep/** eol=crlf\ns**/mixed.txt eol=crlf\n\
                     d*s/**/y/*.md eol=crlf\ndocs/** text=auto\n**/big eol=crlf\n**.bat eol=crlf\n",
                )],
                true,
            ),
            case(
                "ident",
                &[(
                    "",
                    "* ident\n*.bat ident eol=crlf\n*.md -ident\n*.c ident=yes\n",
                )],
                true,
            ),
            case(
                "macros",
                &[
                    (
                        "",
                        "[attr]win text eol=crlf\n[attr]kw ident\n[attr]both win kw\n\
                         *.txt win\n*.bat both\n*.md binary\n*.c win -text\n*.bin -win\n",
                    ),
                    (
                        "sub",
                        "[attr]evil eol=crlf\n*.txt evil\n*.bin evil\n*.md win\n*.c !win\n",
                    ),
                ],
                true,
            ),
            case(
                "binary-redefined",
                &[(
                    "",
                    "*.txt binary\n[attr]binary eol=crlf\n[attr]binary ident\n*.bat binary eol=crlf\n",
                )],
                true,
            ),
            case(
                "negation-and-unspecified",
                &[(
                    "",
                    "* eol=crlf\n*.txt !eol\n!*.bat -text\n*.md eol=crlf -text\n\
                     *.bin -text=foo eol=crlf\n*.c eol=CRLF\n",
                )],
                true,
            ),
            case(
                "wildcards",
                &[(
                    "",
                    "[a-c]*.txt eol=crlf\n?f.bat eol=crlf\n*.[mM][dD] eol=crlf\n\
                     [[:upper:]]* eol=crlf\n[!l]*.bin eol=crlf\nc*f.c eol=crlf\n*\\.c ident\n\
                     [[:bogus:]]* eol=crlf\n[]-]* eol=crlf\n*[[:digit:]] eol=crlf\n\
                     id[[:digit:]x] ident\n[[:alpha:].txt eol=crlf\n",
                )],
                true,
            ),
            case(
                "export-subst",
                &[("", "* export-subst\n*.txt export-ignore\n")],
                false,
            ),
        ];
        // Odd syntax: CRLF lines, a byte order mark, quoting, bad and long lines.
        let mut odd = case("odd-syntax", &[], true);
        let mut root = b"\xef\xbb\xbf*.txt eol=crlf\r\n\"lf sp.txt\" eol=crlf\r\n".to_vec();
        root.extend_from_slice(b"*.bat eol=crlf bad@attr\r\n*.md builtin_x eol=crlf\r\n");
        root.extend_from_slice(b"  # comment\r\n\t*.c\teol=crlf \r\n\"l\\146.bin\" eol=crlf\r\n");
        root.extend_from_slice(b"\"bad\\q.txt\" eol=crlf\r\n\"mixed.md\"ident\r\n");
        // 2047 bytes before the newline: read; 2048: ignored.
        for (pattern, len) in [(&b"crlf.txt"[..], 2047), (&b"lf.md"[..], 2048)] {
            let mut line = pattern.to_vec();
            line.resize(len - b" eol=crlf".len(), b' ');
            line.extend_from_slice(b" eol=crlf");
            assert_eq!(line.len(), len);
            line.push(b'\n');
            root.extend_from_slice(&line);
        }
        root.extend_from_slice(b"big eol=crlf\0\n*.bin ident\n");
        odd.attrs.push(("", root, "100644"));
        odd.extra.push(("lf sp.txt", b"a\nb\n".to_vec()));
        v.push(odd);

        let mut sym = case("symlinked-attributes", &[("", "*.bat eol=crlf\n")], true);
        sym.attrs
            .push(("sub", b"*.txt eol=crlf".to_vec(), "120000"));
        v.push(sym);

        let mut sub = case(
            "subdir-archive",
            &[
                ("", "*.txt eol=crlf\nsub/deep/*.bat ident\n"),
                ("sub", "*.bin text=auto eol=crlf\n"),
            ],
            true,
        );
        sub.subdirs = vec!["sub", "sub/deep"];
        v.push(sub);

        let mut enc = case(
            "encodings",
            &[(
                "",
                "*.u16 working-tree-encoding=UTF-16\n*.u16le working-tree-encoding=utf-16le-bom\n\
                 *.u16be working-tree-encoding=UTF-16BE\n*.u32 working-tree-encoding=UTF-32\n\
                 *.u32be working-tree-encoding=utf32be\n*.u8 working-tree-encoding=UTF8\n\
                 *.crlf16 working-tree-encoding=UTF-16LE text eol=crlf\n\
                 *.id16 ident working-tree-encoding=UTF16BE-BOM\n*.plain working-tree-encoding=\n\
                 *.un !working-tree-encoding\n*.neg -working-tree-encoding\n",
            )],
            true,
        );
        enc.names = vec![
            "{}.u16",
            "{}.u16le",
            "{}.u16be",
            "{}.u32",
            "{}.u32be",
            "{}.u8",
            "{}.crlf16",
            "{}.id16",
            "{}.plain",
            "{}.un",
            "{}.neg",
        ];
        v.push(enc);

        let mut other = case(
            "other-encoding",
            &[(
                "",
                "*.sjis working-tree-encoding=SHIFT-JIS\n*.txt eol=crlf\n",
            )],
            true,
        );
        other.names = vec!["{}.sjis", "{}.txt"];
        other.unsupported = vec![".sjis"];
        v.push(other);
        v
    }

    #[test]
    fn matches_git_archive() {
        if !have_git() {
            return;
        }
        let mut total = 0;
        for c in cases() {
            let n = run_case(&c);
            eprintln!("{}: {n} files converted, all equal to git archive", c.name);
            total += n;
        }
        assert!(total > 0);
    }

    /// `working-tree-encoding` set without a value makes git archive die; `unsupported` says
    /// so. (Unset, it means no encoding.)
    #[test]
    fn encoding_without_value_fails_archive() {
        if !have_git() {
            return;
        }
        for line in [
            "*.txt working-tree-encoding\n",
            "[attr]enc working-tree-encoding\n*.txt enc\n",
        ] {
            let repo = Repo::new("wte-die");
            let entries = vec![
                (
                    ".gitattributes".to_string(),
                    "100644",
                    line.as_bytes().to_vec(),
                ),
                ("a.txt".to_string(), "100644", b"a\n".to_vec()),
            ];
            let (commit, _) = repo.commit(&entries);
            repo.go_info_attributes();
            let out = repo.archive(&commit, None);
            assert!(
                !out.status.success(),
                "git archive should fail for {line:?}"
            );
            let attrs = Attributes::new(vec![("".into(), line.as_bytes().to_vec())]);
            assert!(!attrs.is_inert());
            assert!(attrs.unsupported("a.txt").is_some());
            assert!(attrs.unsupported("a.go").is_none());
        }
    }

    /// All attribute values for `path`, as `git check-attr -a` lists them.
    fn all_values(a: &Attributes, path: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for (id, v) in a.values(path, false).iter().enumerate() {
            let s = match v {
                None | Some(Value::Unspecified) => continue,
                Some(Value::Set) => "set".to_string(),
                Some(Value::Unset) => "unset".to_string(),
                Some(Value::Text(t)) => String::from_utf8_lossy(t).into_owned(),
            };
            out.insert(a.names[id].clone(), s);
        }
        out
    }

    /// Pattern matching and macro expansion against `git check-attr`, which reads the
    /// same files the same way.
    #[test]
    fn matching_agrees_with_check_attr() {
        if !have_git() {
            return;
        }
        let patterns = [
            "*",
            "*.c",
            "a*",
            "a/b",
            "/a",
            "a/",
            "a/**",
            "**/b",
            "a/**/b",
            "**",
            "a**",
            "a**/b",
            "**b",
            "a/*/b",
            "a/*",
            "*/b",
            "[ab]*",
            "[!ab]*",
            "[^ab]*",
            "[]a]*",
            "[a-]*",
            "[[:alpha:]]*",
            "[[:digit:]x]*",
            "[[:bogus:]]*",
            "[[:alpha:]",
            "\\*",
            "\\[a",
            "?",
            "??",
            "a?b",
            "a/?",
            "*/*/*",
            "***",
            "a/***",
            "a/**/**/b",
            "**/",
            "/**",
            "x[/]y",
            "*[/]*",
            "a\\/b",
            "**/a/**",
            "a/**/",
            "/*",
            "/*/b",
            "x/y/**/z",
            "*c",
            "*.[ch]",
            "[a-c]/*",
            "[[:space:]]*",
            "[[:punct:]]*",
            "a*c/**",
            "\\a",
            "[\\]]*",
            "[a-\\z]*",
            "[z-a]*",
            "**/*.c",
            "a/**/*.c",
            "x*/**",
            "[[:upper:][:digit:]]*",
        ];
        let paths = [
            "a",
            "b",
            "ab",
            "ba",
            "abc",
            "a.c",
            "a.h",
            "x.c",
            "a/b",
            "a/c/b",
            "a/b/c",
            "a/x/y/b",
            "x/y",
            "x/y/z",
            "x/y/q/z",
            "x/a.c",
            "aXb",
            "a/b.c",
            "c/a",
            "b/a/b",
            "*",
            "[a",
            "]a",
            "-a",
            "1",
            "A",
            " a",
            "!a",
            "a/a",
            "xy/a",
            "z/b/c",
            "sub/a",
            "sub/a/b",
            "sub/b",
            "sub/x/y/z",
            "sub/sub/a",
            "sub/a.c",
            "sub/[a",
            "x/y/zz/z",
            "\x0ba",
            "\x0ca",
            "\ta",
            "\ra",
            "\u{e9}a",
            "sub/\u{e9}",
        ];
        let mut root = String::new();
        let mut subf = String::new();
        for (i, p) in patterns.iter().enumerate() {
            root.push_str(&format!("{p} r{i}\n"));
            subf.push_str(&format!("{p} s{i}=v{i}\n"));
        }
        root.push_str("[attr]m1 m2 -x1 y1=z\n[attr]m2 q1\nsub/* m1\n*.c -m1\nb m2 q1=w\n");
        root.push_str("[attr]m4 a4\nab m4 m5\n[attr]m4 b4\n[attr]m5 m4 c5 -a4\n");
        subf.push_str("a* m1\n[attr]m3 q3\n*.c m3 binary\na binary text\n");
        let repo = Repo::new("check-attr");
        let entries = vec![
            (
                ".gitattributes".to_string(),
                "100644",
                root.clone().into_bytes(),
            ),
            (
                "sub/.gitattributes".to_string(),
                "100644",
                subf.clone().into_bytes(),
            ),
        ];
        let (commit, _) = repo.commit(&entries);
        let mut input = Vec::new();
        for p in paths {
            input.extend_from_slice(p.as_bytes());
            input.push(0);
        }
        let out = repo.ok(
            &["check-attr", "--source", &commit, "-z", "-a", "--stdin"],
            Some(&input),
            &[],
        );
        let mut git: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let fields: Vec<&[u8]> = out.split(|&b| b == 0).collect();
        for rec in fields.chunks(3) {
            if rec.len() < 3 {
                continue;
            }
            let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            git.entry(s(rec[0]))
                .or_default()
                .insert(s(rec[1]), s(rec[2]));
        }
        let attrs = Attributes::new(vec![
            ("".into(), root.into_bytes()),
            ("sub".into(), subf.into_bytes()),
        ]);
        let mut failures = Vec::new();
        for p in paths {
            let mine = all_values(&attrs, p);
            let theirs = git.get(p).cloned().unwrap_or_default();
            if mine != theirs {
                failures.push(format!("{p}:\n   git  {theirs:?}\n   mine {mine:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}
