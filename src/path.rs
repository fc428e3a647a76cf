//! Import paths: validation (they become store keys and upstream URLs) and the repo-root rules.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid import path {path:?}: {why}")]
pub struct BadPath {
    /// The path as given.
    pub path: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Decode `%XX` escapes (the raw request path may carry them); invalid escapes are refused.
pub fn percent_decode(s: &str) -> Result<String, BadPath> {
    let bad = |why| BadPath {
        path: s.to_string(),
        why,
    };
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .ok_or_else(|| bad("truncated %-escape"))?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(bad("bad %-escape"));
            }
            let hex = std::str::from_utf8(hex).map_err(|_| bad("bad %-escape"))?;
            let v = u8::from_str_radix(hex, 16).map_err(|_| bad("bad %-escape"))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| bad("not UTF-8"))
}

/// Check an import path (already percent-decoded): `host/elem/...`, each element made of
/// letters, digits and `-._~+`, not `.`/`..`, not starting with `.` or `-`... the host
/// must contain a dot or be `localhost`-like; no backslash, NUL or other bytes.
pub fn validate(path: &str) -> Result<(), BadPath> {
    let bad = |why| {
        Err(BadPath {
            path: path.to_string(),
            why,
        })
    };
    if path.is_empty() {
        return bad("empty");
    }
    if path.len() > 512 {
        return bad("too long");
    }
    for elem in path.split('/') {
        if elem.is_empty() {
            return bad("empty path element");
        }
        if elem == "." || elem == ".." {
            return bad("dot path element");
        }
        if elem.starts_with('.') {
            return bad("path element starts with a dot");
        }
        if !elem
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~+".contains(&c))
        {
            return bad("disallowed character (allowed: letters, digits, - . _ ~ +)");
        }
    }
    let host = path.split('/').next().unwrap_or_default();
    if !host.contains('.') && host != "localhost" {
        return bad("first element must be a host name with a dot");
    }
    Ok(())
}

/// Number of path elements below the host that make a repository root on well-known hosts.
pub fn known_host_depth(host: &str) -> Option<usize> {
    match host {
        "github.com" | "gitlab.com" | "bitbucket.org" => Some(2),
        _ => None,
    }
}

/// First `n` elements of a path.
pub fn first_elems(path: &str, n: usize) -> Option<String> {
    let v: Vec<&str> = path.split('/').collect();
    (v.len() >= n).then(|| v[..n].join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation() {
        assert!(validate("github.com/a/b").is_ok());
        assert!(validate("example.test/mod/v2").is_ok());
        assert!(validate("example.test/../x").is_err());
        assert!(validate("example.test/a\\b").is_err());
        assert!(validate("example.test/a\0b").is_err());
        assert!(validate("example.test//b").is_err());
        assert!(validate("example.test/a/@git").is_err());
        assert!(validate("nohost/a").is_err());
        assert_eq!(
            percent_decode("example.test/%2e%2e/x").unwrap(),
            "example.test/../x"
        );
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%+f").is_err());
        assert!(validate(&percent_decode("example.test/%2e%2e/x").unwrap()).is_err());
    }
}
