//! From an import path to its repository root and upstream URL: `--upstream` rules (longest
//! prefix wins), the well-known hosts, then `?go-get=1` discovery.

use crate::path::{first_elems, known_host_depth};

/// One `--upstream PREFIX=URL` rule, or (`discover`) one `--discover PREFIX=URL` rule:
/// import paths under PREFIX are looked up with `GET URL/<path>?go-get=1` (a vanity server
/// the operator names, trusted as given: http and private addresses allowed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The import-path prefix (a trailing `/` matches only paths below it).
    pub prefix: String,
    /// The upstream URL (or the discovery base URL), possibly with userinfo until
    /// credentials are split off at start-up.
    pub url: String,
    /// A `--discover` rule rather than an `--upstream` one.
    pub discover: bool,
}

impl Rule {
    /// A `--discover PREFIX=URL` rule from its text.
    pub fn discovery(s: &str) -> Result<Rule, String> {
        let r: Rule = s
            .parse()
            .map_err(|e: String| e.replace("--upstream", "--discover"))?;
        if r.url.starts_with("file://") {
            return Err(format!("--discover {s:?}: URL must be http(s)://"));
        }
        Ok(Rule {
            discover: true,
            url: r.url.trim_end_matches('/').to_string(),
            ..r
        })
    }

    /// Whether `path` is under this rule's prefix.
    fn covers(&self, path: &str) -> bool {
        match self.prefix.strip_suffix('/') {
            Some(_) => path.starts_with(&self.prefix),
            None => path == self.prefix || path.starts_with(&format!("{}/", self.prefix)),
        }
    }
}

impl std::str::FromStr for Rule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Error texts show the rule without its credentials.
        let shown = crate::upstream::policy::redact(s);
        let (prefix, url) = s
            .split_once('=')
            .ok_or_else(|| format!("--upstream {shown:?}: expected PREFIX=URL"))?;
        let check = prefix.trim_end_matches('/');
        crate::path::validate(check).map_err(|e| format!("--upstream {shown:?}: {e}"))?;
        if !(url.starts_with("http://")
            || url.starts_with("https://")
            || url.starts_with("file://"))
        {
            return Err(format!(
                "--upstream {shown:?}: URL must be http(s):// or file://"
            ));
        }
        Ok(Rule {
            prefix: prefix.to_string(),
            url: url.to_string(),
            discover: false,
        })
    }
}

/// A resolved repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The repository's import-path root.
    pub root: String,
    /// Its upstream URL.
    pub upstream: String,
    /// The directory in the repository that holds the import path root (the go-import tag's
    /// fourth field, Go 1.25); empty: the repository's root.
    pub subdir: String,
}

/// Why an import path (first field) could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// No repository for it: a path too short for a well-known host, no suitable go-import
    /// tag, an invalid subdirectory.
    #[error("no repository found for {0}: {1}")]
    NotFound(String, String),
    /// The discovery request failed (timeout, HTTP error, unreadable page).
    #[error("discovery for {0} failed: {1}")]
    Discovery(String, String),
    /// The upstream policy refused the host or URL ([`crate::upstream::policy`]).
    #[error(transparent)]
    Refused(#[from] crate::upstream::policy::Refused),
}

/// Longest wait for a `?go-get=1` discovery page (connect, redirects and body).
pub const DISCOVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest discovery page read (the rest is ignored; go-import tags live in the head).
pub const DISCOVERY_MAX_BYTES: usize = 256 << 10;
/// Most redirects followed during discovery (each hop is checked again).
pub const DISCOVERY_MAX_REDIRECTS: usize = 3;

/// How long a discovered go-import answer is used before discovery runs again (it is still
/// used after that when discovery fails).
pub const DISCOVERY_TTL: std::time::Duration = std::time::Duration::from_secs(600);
/// Most discovered answers remembered (the oldest are forgotten first).
const DISCOVERY_CACHE_ENTRIES: usize = 10_000;

/// Maps import paths to repositories ([`Target`]): rules, well-known hosts, discovery.
#[derive(Debug, Clone, Default)]
pub struct Resolver {
    rules: Vec<Rule>,
    /// Trusted rule URLs and CA roots (discovery's client, the repositories it names).
    trust: std::sync::Arc<crate::upstream::creds::Trust>,
    /// Discovered targets by import path, with when they were discovered: a module download
    /// asks for one path several times, and a vanity host that goes down must not take the
    /// modules already mirrored from it down with it.
    discovered: std::sync::Arc<
        std::sync::Mutex<std::collections::HashMap<String, (Target, std::time::Instant)>>,
    >,
}

impl Resolver {
    /// A resolver with these rules (the longest matching prefix wins).
    pub fn new(mut rules: Vec<Rule>) -> Self {
        rules.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        Resolver {
            rules,
            trust: Default::default(),
            discovered: Default::default(),
        }
    }

    /// The same rules, talking to upstreams with `trust`.
    pub fn with_trust(mut self, trust: std::sync::Arc<crate::upstream::creds::Trust>) -> Self {
        self.trust = trust;
        self
    }

    fn remembered(&self, path: &str) -> Option<(Target, std::time::Instant)> {
        self.discovered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(path)
            .cloned()
    }

    fn remember(&self, path: &str, t: &Target) {
        let mut m = self.discovered.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= DISCOVERY_CACHE_ENTRIES
            && let Some(oldest) = m
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
        {
            m.remove(&oldest);
        }
        m.insert(path.to_string(), (t.clone(), std::time::Instant::now()));
    }

    /// Resolve without network access: rules and well-known hosts. `None` means discovery
    /// is needed.
    pub fn resolve_static(&self, path: &str) -> Option<Target> {
        for r in &self.rules {
            if r.discover {
                if r.covers(path) {
                    return None;
                }
                continue;
            }
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
                    subdir: String::new(),
                });
            }
            if path == r.prefix || path.starts_with(&format!("{}/", r.prefix)) {
                return Some(Target {
                    root: r.prefix.clone(),
                    upstream: r.url.clone(),
                    subdir: String::new(),
                });
            }
        }
        let host = path.split('/').next()?;
        let depth = known_host_depth(host)?;
        let root = first_elems(path, depth + 1)?;
        Some(Target {
            upstream: format!("https://{root}"),
            root,
            subdir: String::new(),
        })
    }

    /// Resolve, falling back to `https://PATH?go-get=1` discovery. Upstreams that no explicit
    /// rule names are checked against the upstream policy ([`crate::upstream::policy`]): `https` only,
    /// public addresses only.
    pub async fn resolve(&self, path: &str) -> Result<Target, ResolveError> {
        let vanity = self
            .rules
            .iter()
            .find(|r| r.covers(path))
            .filter(|r| r.discover);
        if let Some(r) = vanity {
            return self.discover_remembered(path, Some(&r.url)).await;
        }
        if let Some(t) = self.resolve_static(path) {
            // A well-known host: its name is checked again when the fetch resolves it.
            if !self.is_rule_target(&t) {
                crate::upstream::policy::check_url(&t.upstream)?;
            }
            return Ok(t);
        }
        let host = path.split('/').next().unwrap_or_default();
        if known_host_depth(host).is_some() {
            return Err(ResolveError::NotFound(
                path.into(),
                "path too short for this host".into(),
            ));
        }
        crate::upstream::policy::check_host(host)?;
        self.discover_remembered(path, None).await
    }

    /// Discovery (from `https://PATH`, or from the `--discover` rule's `base` URL), with its
    /// answers remembered for [`DISCOVERY_TTL`] and used after that while discovery fails.
    async fn discover_remembered(
        &self,
        path: &str,
        base: Option<&str>,
    ) -> Result<Target, ResolveError> {
        let known = self.remembered(path);
        if let Some((t, at)) = &known
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(t.clone());
        }
        let found = match discover(path, base, &self.trust).await {
            Ok(t) if self.trust.is_trusted(&t.upstream) => Ok(t),
            Ok(t) => check_untrusted(&t.upstream)
                .await
                .map(|_| t)
                .map_err(Into::into),
            Err(e) => Err(e),
        };
        match (found, known) {
            (Ok(t), _) => {
                self.remember(path, &t);
                Ok(t)
            }
            // The host is down or unreachable: what it said last time still holds.
            (Err(ResolveError::Discovery(..)), Some((t, _))) => {
                tracing::warn!(path, root = %t.root, "discovery failed; using its last answer");
                Ok(t)
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Whether `t` came from one of the explicit rules (trusted as given).
    fn is_rule_target(&self, t: &Target) -> bool {
        self.rules.iter().any(|r| {
            t.upstream == r.url
                || (r.prefix.ends_with('/') && t.upstream.starts_with(r.url.as_str()))
        })
    }
}

/// Check an untrusted upstream URL: scheme and host as written, then its addresses.
async fn check_untrusted(url: &str) -> Result<(), crate::upstream::policy::Refused> {
    let u = crate::upstream::policy::check_url(url)?;
    let host = u.host_str().unwrap_or_default();
    crate::upstream::policy::resolve_public(host, u.port_or_known_default().unwrap_or(443)).await?;
    Ok(())
}

/// Fetch `https://PATH?go-get=1` (or `BASE/PATH?go-get=1` for a `--discover` rule) and read
/// the `go-import` meta tag. Without a rule every hop (redirects included) must be `https` to
/// a public address; the page is read up to [`DISCOVERY_MAX_BYTES`] within
/// [`DISCOVERY_TIMEOUT`]. Error texts never carry what the server answered.
async fn discover(
    path: &str,
    base: Option<&str>,
    trust: &crate::upstream::creds::Trust,
) -> Result<Target, ResolveError> {
    let url = match base {
        Some(b) => format!("{b}/{path}?go-get=1"),
        None => format!("https://{path}?go-get=1"),
    };
    let trusted = base.is_some();
    if !trusted {
        crate::upstream::policy::check_url(&url)?;
    }
    let discovery = |why: String| ResolveError::Discovery(path.into(), why);
    let client = discovery_client(trusted, trust).map_err(|e| discovery(e.to_string()))?;
    let body = tokio::time::timeout(DISCOVERY_TIMEOUT, fetch_page(&client, &url, path))
        .await
        .map_err(|_| discovery(format!("timed out after {DISCOVERY_TIMEOUT:?}")))??;
    let body = String::from_utf8_lossy(&body);
    git_import(path, &url, &body)
}

/// The HTTP client of discovery: its time limits, the agent, at most
/// [`DISCOVERY_MAX_REDIRECTS`] redirects, and unless `trusted` (a `--discover` rule) only
/// `https` hops to public addresses.
fn discovery_client(
    trusted: bool,
    trust: &crate::upstream::creds::Trust,
) -> reqwest::Result<reqwest::Client> {
    let mut builder = trust
        .with_roots(reqwest::Client::builder())
        .timeout(DISCOVERY_TIMEOUT)
        .connect_timeout(std::time::Duration::from_secs(5))
        .user_agent(crate::AGENT)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > DISCOVERY_MAX_REDIRECTS {
                return attempt.error(format!("more than {DISCOVERY_MAX_REDIRECTS} redirects"));
            }
            if trusted {
                return attempt.follow();
            }
            match crate::upstream::policy::check_url(attempt.url().as_str()) {
                Ok(_) => attempt.follow(),
                Err(e) => attempt.error(e),
            }
        }));
    if !trusted {
        builder = builder.dns_resolver(crate::upstream::policy::public_resolver());
    }
    builder.build()
}

/// GET the discovery page `url` (for import path `path`): its first
/// [`DISCOVERY_MAX_BYTES`] bytes.
async fn fetch_page(
    client: &reqwest::Client,
    url: &str,
    path: &str,
) -> Result<Vec<u8>, ResolveError> {
    let discovery = |why: String| ResolveError::Discovery(path.into(), why);
    let mut resp = client.get(url).send().await.map_err(|e| {
        // A refusal by the policy (a redirect hop or a resolved address) is said as such.
        let mut src: Option<&dyn std::error::Error> = Some(&e);
        while let Some(s) = src {
            if let Some(r) = s.downcast_ref::<crate::upstream::policy::Refused>() {
                return ResolveError::Refused(r.clone());
            }
            src = s.source();
        }
        discovery(describe_reqwest(&e))
    })?;
    if !resp.status().is_success() {
        return Err(discovery(format!(
            "{url} answered HTTP {}",
            resp.status().as_u16()
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| discovery(describe_reqwest(&e)))?
    {
        body.extend_from_slice(&chunk);
        if body.len() >= DISCOVERY_MAX_BYTES {
            body.truncate(DISCOVERY_MAX_BYTES);
            break;
        }
    }
    Ok(body)
}

/// The repository of `path` from the first `go-import` tag of the page at `url` (`body`)
/// with vcs `git` whose prefix is `path` or one of its parents.
fn git_import(path: &str, url: &str, body: &str) -> Result<Target, ResolveError> {
    for tag in parse_go_import(body) {
        if tag.vcs == "git" && (path == tag.prefix || path.starts_with(&format!("{}/", tag.prefix)))
        {
            let subdir = clean_subdir(&tag.subdir).ok_or_else(|| {
                ResolveError::NotFound(
                    path.into(),
                    format!("{url}: invalid go-import subdirectory {:?}", tag.subdir),
                )
            })?;
            return Ok(Target {
                root: tag.prefix,
                upstream: tag.repo,
                subdir,
            });
        }
    }
    Err(ResolveError::NotFound(
        path.into(),
        format!("no go-import meta tag with vcs git at {url}"),
    ))
}

/// A reqwest error as a short text without anything the server sent.
fn describe_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else if e.is_redirect() {
        "redirect refused".into()
    } else if e.is_body() || e.is_decode() {
        "error reading the page".into()
    } else {
        "request failed".into()
    }
}

/// One `<meta name="go-import" content="prefix vcs url [subdir]">` tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoImport {
    /// The import-path prefix the tag is for.
    pub prefix: String,
    /// The version control system (`git`, `mod`, ...).
    pub vcs: String,
    /// The repository URL.
    pub repo: String,
    /// The fourth field (Go 1.25): the directory in the repository holding `prefix`; empty
    /// when absent.
    pub subdir: String,
}

/// A go-import subdirectory as a clean relative path (`""` for none), or `None` when the go
/// command would refuse it (a leading `/` or `-`) or it leaves the repository (`..`).
pub fn clean_subdir(subdir: &str) -> Option<String> {
    if subdir.starts_with('/') || subdir.starts_with('-') || subdir.contains('\\') {
        return None;
    }
    let mut parts = Vec::new();
    for p in subdir.split('/') {
        match p {
            "" | "." => {}
            ".." => return None,
            p => parts.push(p),
        }
    }
    Some(parts.join("/"))
}

/// All `<meta name="go-import" content="prefix vcs url [subdir]">` tags in an HTML page.
pub fn parse_go_import(html: &str) -> Vec<GoImport> {
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
        if let [p, v, u, ..] = parts[..]
            && parts.len() <= 4
        {
            out.push(GoImport {
                prefix: p.to_string(),
                vcs: v.to_string(),
                repo: u.to_string(),
                subdir: parts.get(3).map(|s| s.to_string()).unwrap_or_default(),
            });
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
                upstream: "https://github.com/rsc/quote".into(),
                subdir: String::new(),
            })
        );
        assert_eq!(res.resolve_static("rsc.io/quotex"), None);
        assert_eq!(
            res.resolve_static("example.test/mod/sub/pkg"),
            Some(Target {
                root: "example.test/mod".into(),
                upstream: "http://127.0.0.1:9000/x/mod".into(),
                subdir: String::new(),
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
                upstream: "https://gitlab.com/o/r".into(),
                subdir: String::new(),
            })
        );
        assert_eq!(plain.resolve_static("github.com/o"), None);
        assert_eq!(plain.resolve_static("example.org/x"), None);
        assert!("nope".parse::<Rule>().is_err());
        assert!("a.b/x=ftp://x".parse::<Rule>().is_err());
    }

    #[test]
    fn discovered_urls_must_be_https_and_public() {
        // What a hostile go-get page could name as the repository: all refused before any
        // connection (check_url decides on the text alone).
        for repo in [
            "file:///srv/git/secret.git",
            "file://localhost/etc",
            "git://internal.example:9418/x",
            "ssh://git@internal.example/x",
            "git+ssh://internal.example/x",
            "http://example.org/x",
            "ext::sh -c id",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://10.0.0.1/x",
            "https://169.254.169.254/x",
            "https://[fd00::1]/x",
        ] {
            let html = format!(r#"<meta name="go-import" content="example.org/x git {repo}">"#);
            let tags = parse_go_import(&html);
            let url = tags
                .first()
                .map(|t| t.repo.clone())
                .unwrap_or(repo.to_string());
            assert!(
                crate::upstream::policy::check_url(&url).is_err(),
                "{url} accepted as an upstream"
            );
        }
        // The same schemes are refused for well-known hosts without a rule (never happens
        // today, but the check runs on every derived URL).
        assert!(crate::upstream::policy::check_url("https://github.com/a/b").is_ok());
    }

    #[tokio::test]
    async fn refused_import_path_hosts() {
        let r = Resolver::new(vec![]);
        for p in [
            "127.0.0.1/x",
            "localhost/x",
            "127.1.2.3/x",
            "169.254.169.254/x",
        ] {
            match r.resolve(p).await {
                Err(ResolveError::Refused(_)) => {}
                other => panic!("{p}: {other:?}"),
            }
        }
    }

    #[test]
    fn meta_parsing() {
        let html = r#"<html><head><meta name="go-import" content="example.org/x git https://git.example.org/x">
        <meta name="go-source" content="a b c d"></head></html>"#;
        assert_eq!(
            parse_go_import(html),
            vec![GoImport {
                prefix: "example.org/x".into(),
                vcs: "git".into(),
                repo: "https://git.example.org/x".into(),
                subdir: String::new(),
            }]
        );
        // Go 1.25's fourth field; five fields are not a go-import tag.
        let html = r#"<meta name="go-import" content="example.org/y git https://git.example.org/r go/y">
        <meta name="go-import" content="example.org/z git https://git.example.org/r a b">"#;
        let tags = parse_go_import(html);
        assert_eq!(tags.len(), 1, "{tags:?}");
        assert_eq!(tags[0].subdir, "go/y");
        for (given, clean) in [
            ("", Some("")),
            ("go/y", Some("go/y")),
            ("./go//y/", Some("go/y")),
            ("/abs", None),
            ("-flag", None),
            ("a/../../etc", None),
        ] {
            assert_eq!(clean_subdir(given).as_deref(), clean, "{given:?}");
        }
    }

    #[test]
    fn discover_rules_take_their_prefix_from_static_rules() {
        let r = Resolver::new(vec![
            r("example.org/=http://127.0.0.1:1/"),
            Rule::discovery("example.org/vanity=http://127.0.0.1:2/").expect("rule"),
        ]);
        assert_eq!(r.resolve_static("example.org/vanity/pkg"), None);
        assert!(r.resolve_static("example.org/other").is_some());
        assert!(Rule::discovery("example.org/x=file:///srv").is_err());
        let d = Rule::discovery("example.org/x=http://h:1/").expect("rule");
        assert_eq!((d.url.as_str(), d.discover), ("http://h:1", true));
    }
}
