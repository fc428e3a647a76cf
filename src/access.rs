//! `--allow` / `--deny`: which import paths goprox serves and fills, as comma-separated glob
//! patterns matched against import-path prefixes the way the go command matches `GOPRIVATE`:
//! a pattern with N path elements is matched against the first N elements of the path, with
//! `*`, `?` and `[...]` within an element (Go's `path.Match`).

/// Whether `target` has a prefix (of whole path elements) matched by one of the
/// comma-separated `globs` (Go's `module.MatchPrefixPatterns`).
pub fn match_prefix_patterns(globs: &str, target: &str) -> bool {
    for glob in globs.split(',') {
        let glob = glob.trim().trim_end_matches('/');
        if glob.is_empty() {
            continue;
        }
        let mut n = glob.matches('/').count();
        let mut prefix = target;
        for (i, c) in target.char_indices() {
            if c == '/' {
                if n == 0 {
                    prefix = &target[..i];
                    break;
                }
                n -= 1;
            }
        }
        if n > 0 {
            continue; // fewer elements than the pattern
        }
        if path_match(glob, prefix).unwrap_or(false) {
            return true;
        }
    }
    false
}

/// Go's `path.Match`: `*` any run of non-`/` characters, `?` one non-`/` character,
/// `[abc]`, `[a-z]`, `[^a-z]` classes, `\` escapes. `None` for a malformed pattern.
pub fn path_match(pattern: &str, name: &str) -> Option<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    match_from(&p, &s)
}

fn match_from(p: &[char], s: &[char]) -> Option<bool> {
    if p.is_empty() {
        return Some(s.is_empty());
    }
    match p[0] {
        '*' => {
            // Collapse consecutive stars; try every split within the element.
            let rest = &p[1..];
            let mut i = 0;
            loop {
                if match_from(rest, &s[i..])? {
                    return Some(true);
                }
                if i >= s.len() || s[i] == '/' {
                    // Check the rest of the pattern is well-formed before failing.
                    validate(rest)?;
                    return Some(false);
                }
                i += 1;
            }
        }
        '?' => {
            if s.first().is_some_and(|&c| c != '/') {
                match_from(&p[1..], &s[1..])
            } else {
                validate(&p[1..])?;
                Some(false)
            }
        }
        '[' => {
            let (matched, used) = class(&p[1..], s.first().copied())?;
            if matched {
                match_from(&p[1 + used..], &s[1..])
            } else {
                validate(&p[1 + used..])?;
                Some(false)
            }
        }
        '\\' => {
            let c = *p.get(1)?;
            if s.first() == Some(&c) {
                match_from(&p[2..], &s[1..])
            } else {
                validate(&p[2..])?;
                Some(false)
            }
        }
        c => {
            if s.first() == Some(&c) {
                match_from(&p[1..], &s[1..])
            } else {
                validate(&p[1..])?;
                Some(false)
            }
        }
    }
}

/// A character class after its `[`: whether `c` is in it and how many pattern chars it used
/// (through the closing `]`).
fn class(p: &[char], c: Option<char>) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        if (lo == ']' || lo == '-') && ch != '\\' {
            return None;
        }
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') {
            i += 1;
            let h = *p.get(i)?;
            hi = if h == '\\' {
                i += 1;
                *p.get(i)?
            } else if h == ']' {
                return None;
            } else {
                h
            };
            i += 1;
        }
        if let Some(c) = c
            && lo <= c
            && c <= hi
        {
            matched = true;
        }
    }
    let ok = c.is_some_and(|c| c != '/') && (matched != negate);
    Some((ok, i))
}

/// Whether the remaining pattern is well-formed.
fn validate(p: &[char]) -> Option<()> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1)?;
                i += 2;
            }
            '[' => {
                let (_, used) = class(&p[i + 1..], None)?;
                i += 1 + used;
            }
            _ => i += 1,
        }
    }
    Some(())
}

/// The `--allow` / `--deny` decision.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Comma-separated patterns; empty: everything is allowed.
    pub allow: String,
    /// Comma-separated patterns; empty: nothing is denied.
    pub deny: String,
}

impl Access {
    /// From the patterns of every `--allow` and `--deny` flag.
    pub fn new(allow: &[String], deny: &[String]) -> Access {
        Access {
            allow: allow.join(","),
            deny: deny.join(","),
        }
    }

    /// `Err(reason)` when `path` may not be served or filled.
    pub fn check(&self, path: &str) -> Result<(), String> {
        if match_prefix_patterns(&self.deny, path) {
            return Err(format!("{path} is denied by this goprox (--deny)"));
        }
        if self.allow.split(',').any(|g| !g.trim().is_empty())
            && !match_prefix_patterns(&self.allow, path)
        {
            return Err(format!("{path} is not allowed by this goprox (--allow)"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_patterns_like_goprivate() {
        // Cases modelled on the go command's documented GOPRIVATE behaviour.
        let m = match_prefix_patterns;
        assert!(m("*.corp.example.com", "git.corp.example.com/x/y"));
        assert!(!m("*.corp.example.com", "corp.example.com/x"));
        assert!(m("github.com/acme", "github.com/acme/widget/sub"));
        assert!(m("github.com/acme", "github.com/acme"));
        assert!(!m("github.com/acme", "github.com/acmex/w"));
        assert!(!m("github.com/acme", "github.com"));
        assert!(m("github.com/acme/*", "github.com/acme/w/x"));
        assert!(!m("github.com/acme/*", "github.com/acme"));
        assert!(m("example.test/rich", "example.test/rich"));
        assert!(!m("example.test/rich", "example.test/rich2"));
        assert!(m("example.test/rich/", "example.test/rich/x"));
        assert!(m("a.b,example.test/r?ch", "example.test/rich"));
        assert!(m(",,example.test", "example.test/anything"));
        assert!(m("*", "example.test/anything"));
        assert!(!m("", "example.test/anything"));
        assert!(m("example.test/[a-r]ich", "example.test/rich"));
        assert!(!m("example.test/[^r]ich", "example.test/rich"));
        assert!(!m("example.test/[", "example.test/["));
        assert!(m("*/rich", "example.test/rich"));
        assert!(m("*", ""));
    }

    #[test]
    fn go_path_match() {
        assert_eq!(path_match("abc", "abc"), Some(true));
        assert_eq!(path_match("*", "abc"), Some(true));
        assert_eq!(path_match("*c", "abc"), Some(true));
        assert_eq!(path_match("a*", "a"), Some(true));
        assert_eq!(path_match("a*/b", "abc/b"), Some(true));
        assert_eq!(path_match("a*", "ab/c"), Some(false));
        assert_eq!(path_match("a*b*c*d*e*/f", "axbxcxdxe/f"), Some(true));
        assert_eq!(path_match("a?c", "abc"), Some(true));
        assert_eq!(path_match("a[b-d]c", "acc"), Some(true));
        assert_eq!(path_match("a[^b-d]c", "aec"), Some(true));
        assert_eq!(path_match("a\\*b", "a*b"), Some(true));
        assert_eq!(path_match("a\\*b", "axb"), Some(false));
        assert_eq!(path_match("[", "a"), None);
        assert_eq!(path_match("a[", "b"), None);
    }

    #[test]
    fn allow_and_deny() {
        let a = Access::new(&["example.test/rich".into()], &[]);
        assert!(a.check("example.test/rich").is_ok());
        assert!(a.check("example.test/rich/sub/pkg").is_ok());
        assert!(a.check("example.test/vmod").is_err());
        let d = Access::new(&["example.test".into()], &["example.test/secret*".into()]);
        assert!(d.check("example.test/rich").is_ok());
        assert!(d.check("example.test/secret2/x").is_err());
        assert!(Access::default().check("anything.example/x").is_ok());
    }
}
