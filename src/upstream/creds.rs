//! Upstream credentials, kept apart from upstream URLs so that URLs can be logged, stored in
//! `refs.json` and sent back in error texts without leaking anything.
//!
//! Two sources: the userinfo of `--upstream PREFIX=https://user:token@host/...` rules (taken
//! out of the URL at start-up; it applies to upstreams under that rule's URL), and a netrc
//! file (`--netrc FILE`, default `$NETRC`, else `~/.netrc`) matched by host name. netrc's
//! `default` entry is ignored: credentials only go to hosts that are named.

use std::collections::HashMap;

/// A user name and password (or token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// The user name.
    pub user: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({:?}, <redacted>)", self.user)
    }
}

/// The credentials goprox presents to upstreams, and the extra CA roots it trusts.
#[derive(Debug, Default, Clone)]
pub struct Credentials {
    /// (upstream URL prefix without userinfo, credentials), from rules.
    pub by_prefix: Vec<(String, Secret)>,
    /// host name (lower case) → credentials, from netrc.
    pub by_host: HashMap<String, Secret>,
    /// Extra certificate authorities for upstream TLS (`--upstream-ca`): a private GitLab's
    /// company CA, say. Added to the built-in roots, never replacing them.
    pub roots: Vec<reqwest::Certificate>,
}

/// Parse a PEM bundle of CA certificates (`--upstream-ca`).
pub fn parse_roots(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    let roots = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| e.to_string())?;
    if roots.is_empty() {
        return Err("no PEM certificate in it".into());
    }
    Ok(roots)
}

fn percent_decode_lossy(s: &str) -> String {
    crate::path::percent_decode(s).unwrap_or_else(|_| s.to_string())
}

/// Split `scheme://user:pass@host/...` into the URL without userinfo and the credentials.
pub fn split_userinfo(url: &str) -> (String, Option<Secret>) {
    let clean = crate::upstream::policy::redact(url);
    if clean == url {
        return (clean, None);
    }
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or_default();
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let userinfo = rest[..auth_end]
        .rfind('@')
        .map(|at| &rest[..at])
        .unwrap_or_default();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        clean,
        Some(Secret {
            user: percent_decode_lossy(user),
            password: percent_decode_lossy(password),
        }),
    )
}

/// Parse a netrc file: `machine HOST login USER password PASS` (tokens separated by any
/// whitespace; `default` and `macdef` entries are skipped).
pub fn parse_netrc(text: &str) -> HashMap<String, Secret> {
    let mut out = HashMap::new();
    let mut toks = text.split_whitespace().peekable();
    let mut host: Option<String> = None;
    let mut login = String::new();
    let mut password: Option<String> = None;
    let mut flush =
        |host: &mut Option<String>, login: &mut String, password: &mut Option<String>| {
            if let (Some(h), Some(p)) = (host.take(), password.take()) {
                out.entry(h.to_ascii_lowercase()).or_insert(Secret {
                    user: std::mem::take(login),
                    password: p,
                });
            }
            login.clear();
        };
    while let Some(t) = toks.next() {
        match t {
            "machine" => {
                flush(&mut host, &mut login, &mut password);
                host = toks.next().map(str::to_string);
            }
            "default" => {
                flush(&mut host, &mut login, &mut password);
                host = None;
            }
            "login" => login = toks.next().unwrap_or_default().to_string(),
            "password" => password = toks.next().map(str::to_string),
            "account" => {
                toks.next();
            }
            "macdef" => {
                // A macro runs to the next blank line; with whitespace tokens, skip its name.
                toks.next();
            }
            _ => {}
        }
    }
    flush(&mut host, &mut login, &mut password);
    out
}

/// Where to read netrc from: `--netrc`, else `$NETRC`, else `~/.netrc` (if it exists).
pub fn netrc_path(explicit: Option<&std::path::Path>) -> Option<std::path::PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("NETRC").filter(|p| !p.is_empty()) {
        return Some(p.into());
    }
    let home = std::env::var_os("HOME")?;
    let p = std::path::Path::new(&home).join(".netrc");
    p.is_file().then_some(p)
}

/// What goprox trusts and presents to upstreams, made once at start-up and passed to what
/// talks to them (discovery, fills, the checksum-database relay): the URLs of the explicit
/// `--upstream`/`--discover` rules (trusted as given: http and private addresses allowed; every
/// other upstream goes through [`crate::upstream::policy`]), and the credentials and extra CA roots.
#[derive(Debug, Default, Clone)]
pub struct Trust {
    /// Credentials and CA roots.
    pub credentials: Credentials,
    /// URL prefixes of the explicit rules.
    pub trusted: Vec<String>,
}

impl Trust {
    /// Whether `url` is (under) the URL of an explicit rule.
    pub fn is_trusted(&self, url: &str) -> bool {
        self.trusted.iter().any(|r| {
            url == r
                || (r.ends_with('/') && url.starts_with(r.as_str()))
                || url
                    .strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Credentials for an upstream URL ([`Credentials::for_url`]).
    pub fn secret_for(&self, url: &str) -> Option<Secret> {
        self.credentials.for_url(url)
    }

    /// Add the `--upstream-ca` roots to an HTTP client configuration for upstreams.
    pub fn with_roots(&self, mut b: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        for c in &self.credentials.roots {
            b = b.add_root_certificate(c.clone());
        }
        b
    }

    /// [`Trust::with_roots`] for the blocking client the git transport uses.
    pub fn with_roots_blocking(
        &self,
        mut b: reqwest::blocking::ClientBuilder,
    ) -> reqwest::blocking::ClientBuilder {
        for c in &self.credentials.roots {
            b = b.add_root_certificate(c.clone());
        }
        b
    }
}

impl Credentials {
    /// Credentials for an upstream URL (without userinfo): the longest rule prefix it is
    /// under, else its host's netrc entry.
    pub fn for_url(&self, url: &str) -> Option<Secret> {
        let under = |p: &str| {
            url == p
                || (p.ends_with('/') && url.starts_with(p))
                || url.strip_prefix(p).is_some_and(|r| r.starts_with('/'))
        };
        if let Some((_, s)) = self
            .by_prefix
            .iter()
            .filter(|(p, _)| under(p))
            .max_by_key(|(p, _)| p.len())
        {
            return Some(s.clone());
        }
        let host = reqwest::Url::parse(url)
            .ok()?
            .host_str()?
            .to_ascii_lowercase();
        self.by_host.get(&host).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_covers_rule_urls_and_what_is_under_them() {
        let t = Trust {
            credentials: Credentials::default(),
            trusted: vec![
                "http://127.0.0.1:9/x/".into(),
                "http://git.internal/r".into(),
            ],
        };
        assert!(t.is_trusted("http://127.0.0.1:9/x/mod"));
        assert!(t.is_trusted("http://git.internal/r"));
        assert!(t.is_trusted("http://git.internal/r/sub"));
        assert!(!t.is_trusted("http://git.internal/repo"));
        assert!(!t.is_trusted("http://127.0.0.1:9/y"));
        assert!(!Trust::default().is_trusted("http://127.0.0.1:9/x/mod"));
    }

    #[test]
    fn userinfo() {
        let (u, s) = split_userinfo("https://bot:t%40ken@git.example.com/x/");
        assert_eq!(u, "https://git.example.com/x/");
        assert_eq!(
            s,
            Some(Secret {
                user: "bot".into(),
                password: "t@ken".into()
            })
        );
        assert_eq!(
            split_userinfo("https://git.example.com/a@b"),
            ("https://git.example.com/a@b".into(), None)
        );
        assert!(!format!("{s:?}").contains("t@ken"));
    }

    #[test]
    fn netrc() {
        let n = parse_netrc(
            "machine git.example.com login bot password s1\n\
             default login any password nope\n\
             machine GitHub.com\n  login x\n  password s2\n",
        );
        assert_eq!(n.len(), 2);
        assert_eq!(n["git.example.com"].password, "s1");
        assert_eq!(n["github.com"].user, "x");
        let c = Credentials {
            by_prefix: vec![(
                "https://git.example.com/team/".into(),
                Secret {
                    user: "r".into(),
                    password: "rule".into(),
                },
            )],
            by_host: n,
            roots: Vec::new(),
        };
        assert_eq!(
            c.for_url("https://git.example.com/team/x")
                .map(|s| s.password),
            Some("rule".into())
        );
        assert_eq!(
            c.for_url("https://git.example.com/other")
                .map(|s| s.password),
            Some("s1".into())
        );
        assert_eq!(
            c.for_url("https://github.com/o/r").map(|s| s.password),
            Some("s2".into())
        );
        assert_eq!(c.for_url("https://elsewhere.example/x"), None);
    }

    #[test]
    fn roots_need_a_certificate() {
        assert!(parse_roots(b"").is_err());
        assert!(parse_roots(b"not pem at all").is_err());
    }
}
