//! From an import path to its repository root and upstream URL: `--upstream` rules (longest
//! prefix wins), the well-known hosts, then `?go-get=1` discovery.

use crate::path::{first_elems, known_host_depth};

/// One `--upstream PREFIX=URL` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub prefix: String,
    pub url: String,
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prefix, url) = s
            .split_once('=')
            .ok_or_else(|| format!("--upstream {s:?}: expected PREFIX=URL"))?;
        let check = prefix.trim_end_matches('/');
        crate::path::validate(check).map_err(|e| format!("--upstream {s:?}: {e}"))?;
        if !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("file://"))
        {
            return Err(format!(
                "--upstream {s:?}: URL must be http(s):// or file://"
            ));
        }
        Ok(Rule {
            prefix: prefix.to_string(),
            url: url.to_string(),
        })
    }
}

/// A resolved repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub root: String,
    pub upstream: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no repository found for {0}: {1}")]
    NotFound(String, String),
    #[error("discovery for {0} failed: {1}")]
    Discovery(String, String),
}

#[derive(Debug, Clone, Default)]
pub struct Resolver {
    rules: Vec<Rule>,
}

impl Resolver {
    pub fn new(mut rules: Vec<Rule>) -> Self {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Resolver { rules }
    }

    /// Resolve without network access: rules and well-known hosts. `None` means discovery
    /// is needed.
    pub fn resolve_static(&self, path: &str) -> Option<Target> {
        for r in &self.rules {
            if let Some(dir) = r.prefix.strip_suffix('/') {
                let Some(rest) = path.strip_prefix(&r.prefix) else {
                    continue;
                };
                let host = dir.split('/').next().unwrap_or_default();
                let prefix_elems = dir.split('/').count();
                let need = match known_host_depth(host) {
                    Some(d) => (1 + d).saturating_sub(prefix_elems).max(1),
                    None => 1,
                };
                let Some(rel) = first_elems(rest, need) else {
                    continue;
                };
                let sep = if r.url.ends_with('/') { "" } else { "/" };
                return Some(Target {
                    root: format!("{}{rel}", r.prefix),
                    upstream: format!("{}{sep}{rel}", r.url),
                });
            }
            if path == r.prefix || path.starts_with(&format!("{}/", r.prefix)) {
                return Some(Target {
                    root: r.prefix.clone(),
                    upstream: r.url.clone(),
                });
            }
        }
        let host = path.split('/').next()?;
        let depth = known_host_depth(host)?;
        let root = first_elems(path, depth + 1)?;
        Some(Target {
            upstream: format!("https://{root}"),
            root,
        })
    }

    /// Resolve, falling back to `https://PATH?go-get=1` discovery.
    pub async fn resolve(&self, path: &str) -> Result<Target, ResolveError> {
        if let Some(t) = self.resolve_static(path) {
            return Ok(t);
        }
        let host = path.split('/').next().unwrap_or_default();
        if known_host_depth(host).is_some() {
            return Err(ResolveError::NotFound(
                path.into(),
                "path too short for this host".into(),
            ));
        }
        discover(path).await
    }
}

/// Fetch `https://PATH?go-get=1` and read the `go-import` meta tag.
async fn discover(path: &str) -> Result<Target, ResolveError> {
    let url = format!("https://{path}?go-get=1");
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .user_agent(crate::AGENT)
        .build()
        .map_err(|e| ResolveError::Discovery(path.into(), e.to_string()))?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| ResolveError::Discovery(path.into(), e.to_string()))?;
    let body = resp
        .text()
        .await
        .map_err(|e| ResolveError::Discovery(path.into(), e.to_string()))?;
    for (prefix, vcs, repo) in parse_go_import(&body) {
        if vcs == "git" && (path == prefix || path.starts_with(&format!("{prefix}/"))) {
            return Ok(Target {
                root: prefix,
                upstream: repo,
            });
        }
    }
    Err(ResolveError::NotFound(
        path.into(),
        format!("no go-import meta tag with vcs git at {url}"),
    ))
}

/// All `<meta name="go-import" content="prefix vcs url">` tags in an HTML page.
pub fn parse_go_import(html: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(i) = lower[from..].find("<meta") {
        let start = from + i;
        let end = lower[start..]
            .find('>')
            .map(|e| start + e)
            .unwrap_or(lower.len());
        let tag = &html[start..end];
        from = end;
        let tl = tag.to_ascii_lowercase();
        if !(tl.contains("name=\"go-import\"") || tl.contains("name='go-import'")) {
            continue;
        }
        let Some(ci) = tl.find("content=") else {
            continue;
        };
        let rest = &tag[ci + 8..];
        let Some(q) = rest.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(close) = rest[1..].find(q) else {
            continue;
        };
        let parts: Vec<&str> = rest[1..1 + close].split_whitespace().collect();
        if let [p, v, u] = parts[..] {
            out.push((p.to_string(), v.to_string(), u.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Rule {
        s.parse().unwrap()
    }

    #[test]
    fn rules() {
        let res = Resolver::new(vec![
            r("rsc.io/quote=https://github.com/rsc/quote"),
            r("example.test/=http://127.0.0.1:9000/x/"),
            r("github.com/=http://127.0.0.1:9000/gh"),
            r("github.com/acme/=http://127.0.0.1:9001/acme/"),
        ]);
        assert_eq!(
            res.resolve_static("rsc.io/quote/v3/x"),
            Some(Target {
                root: "rsc.io/quote".into(),
                upstream: "https://github.com/rsc/quote".into()
            })
        );
        assert_eq!(res.resolve_static("rsc.io/quotex"), None);
        assert_eq!(
            res.resolve_static("example.test/mod/sub/pkg"),
            Some(Target {
                root: "example.test/mod".into(),
                upstream: "http://127.0.0.1:9000/x/mod".into()
            })
        );
        assert_eq!(
            res.resolve_static("github.com/a/b/c/d")
                .map(|t| (t.root, t.upstream)),
            Some((
                "github.com/a/b".into(),
                "http://127.0.0.1:9000/gh/a/b".into()
            ))
        );
        assert_eq!(
            res.resolve_static("github.com/acme/w/pkg")
                .map(|t| (t.root, t.upstream)),
            Some((
                "github.com/acme/w".into(),
                "http://127.0.0.1:9001/acme/w".into()
            ))
        );
        let plain = Resolver::new(vec![]);
        assert_eq!(
            plain.resolve_static("gitlab.com/o/r/x"),
            Some(Target {
                root: "gitlab.com/o/r".into(),
                upstream: "https://gitlab.com/o/r".into()
            })
        );
        assert_eq!(plain.resolve_static("github.com/o"), None);
        assert_eq!(plain.resolve_static("example.org/x"), None);
        assert!("nope".parse::<Rule>().is_err());
        assert!("a.b/x=ftp://x".parse::<Rule>().is_err());
    }

    #[test]
    fn meta_parsing() {
        let html = r#"<html><head><meta name="go-import" content="example.org/x git https://git.example.org/x">
        <meta name="go-source" content="a b c d"></head></html>"#;
        assert_eq!(
            parse_go_import(html),
            vec![(
                "example.org/x".into(),
                "git".into(),
                "https://git.example.org/x".into()
            )]
        );
    }
}
