//! The few facts the module front reads from a `go.mod`: the module path (as the go command's
//! `modfile.ModulePath` finds it, ignoring everything else in the file) and the `retract`
//! directives (read laxly: a malformed line is skipped, never an error).

use super::semver;

/// The path on the first `module` line, `""` when there is none or it is malformed.
pub fn module_path(go_mod: &[u8]) -> String {
    for raw in go_mod.split(|&b| b == b'\n') {
        let line = strip_comment(raw);
        let line = trim(line);
        let Some(rest) = line.strip_prefix(b"module") else {
            continue;
        };
        let trimmed = trim(rest);
        // `module` must be followed by white space and something.
        if trimmed.len() == rest.len() || trimmed.is_empty() {
            continue;
        }
        return match trimmed[0] {
            b'"' | b'`' => unquote(trimmed).unwrap_or_default(),
            _ => String::from_utf8_lossy(trimmed).into_owned(),
        };
    }
    String::new()
}

/// A retracted interval `[low, high]` (one version: `low == high`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// Lowest retracted version.
    pub low: String,
    /// Highest retracted version.
    pub high: String,
}

impl Retraction {
    /// Whether `v` lies in the interval.
    pub fn covers(&self, v: &str) -> bool {
        semver::compare(&self.low, v).is_le() && semver::compare(v, &self.high).is_le()
    }
}

/// Every `retract` of a go.mod: single lines and blocks, versions and `[low, high]` intervals.
pub fn retractions(go_mod: &[u8]) -> Vec<Retraction> {
    let mut out = Vec::new();
    let mut in_block = false;
    for raw in go_mod.split(|&b| b == b'\n') {
        let line = String::from_utf8_lossy(trim(strip_comment(raw))).into_owned();
        if in_block {
            if line.starts_with(')') {
                in_block = false;
            } else if let Some(r) = parse_retraction(&line) {
                out.push(r);
            }
            continue;
        }
        let Some(rest) = line.strip_prefix("retract") else {
            continue;
        };
        if !rest.starts_with([' ', '\t', '(']) {
            continue;
        }
        let rest = rest.trim();
        if rest == "(" {
            in_block = true;
        } else if let Some(r) = parse_retraction(rest) {
            out.push(r);
        }
    }
    out
}

fn parse_retraction(s: &str) -> Option<Retraction> {
    let s = s.trim();
    if let Some(inner) = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        let (low, high) = inner.split_once(',')?;
        let (low, high) = (unquote_str(low.trim())?, unquote_str(high.trim())?);
        if !semver::is_valid(&low) || !semver::is_valid(&high) {
            return None;
        }
        return Some(Retraction { low, high });
    }
    let v = unquote_str(s)?;
    semver::is_valid(&v).then(|| Retraction {
        low: v.clone(),
        high: v,
    })
}

fn unquote_str(s: &str) -> Option<String> {
    if s.starts_with('"') || s.starts_with('`') {
        unquote(s.as_bytes())
    } else if s.is_empty() || s.contains(char::is_whitespace) {
        None
    } else {
        Some(s.to_string())
    }
}

/// A Go string literal: back-quoted (raw) or double-quoted with the common escapes.
fn unquote(s: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(s).ok()?;
    if let Some(raw) = s.strip_prefix('`').and_then(|x| x.strip_suffix('`')) {
        return (!raw.contains('`')).then(|| raw.to_string());
    }
    let inner = s.strip_prefix('"')?.strip_suffix('"')?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return None,
            '\\' => match chars.next()? {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                't' => out.push('\t'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    Some(out)
}

fn strip_comment(line: &[u8]) -> &[u8] {
    match line.windows(2).position(|w| w == b"//") {
        Some(i) => &line[..i],
        None => line,
    }
}

fn trim(s: &[u8]) -> &[u8] {
    let start = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let end = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_path_as_the_go_command_reads_it() {
        assert_eq!(
            module_path(b"module example.com/m\n\ngo 1.21\n"),
            "example.com/m"
        );
        assert_eq!(
            module_path(b"// c\nmodule \"example.com/q\" // x\n"),
            "example.com/q"
        );
        assert_eq!(module_path(b"module `example.com/r`\n"), "example.com/r");
        assert_eq!(module_path(b"modulex example.com/m\n"), "");
        assert_eq!(module_path(b"module\n"), "");
        assert_eq!(module_path(b"go 1.21\n"), "");
        assert_eq!(module_path(b"  module   a.b/c  \r\n"), "a.b/c");
    }

    #[test]
    fn retractions_lines_blocks_and_intervals() {
        let m = b"module a.b/c\nretract v1.0.1 // oops\nretract [v1.1.0, v1.1.5]\nretract (\n\tv0.9.0\n\t[v0.1.0, v0.2.0] // r\n)\nretract bad\n";
        let r = retractions(m);
        assert_eq!(r.len(), 4);
        assert!(r.iter().any(|x| x.covers("v1.1.3")));
        assert!(r.iter().any(|x| x.covers("v1.0.1")));
        assert!(r.iter().any(|x| x.covers("v0.9.0")));
        assert!(r.iter().any(|x| x.covers("v0.1.5")));
        assert!(!r.iter().any(|x| x.covers("v1.0.2")));
    }
}
