//! Push hooks: upstream says a repository changed, goprox refreshes it at once instead of
//! waiting for `--refresh-after`.
//!
//! - `POST /-/hooks/github`: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body with
//!   `--webhook-secret`; events `push`, `create`, `delete` (`ping` is answered).
//! - `POST /-/hooks/gitea` (also Forgejo, Gogs): `X-Gitea-Signature: <hex>` (or GitHub's
//!   header), the same HMAC; events `push`, `create`, `delete`.
//! - `POST /-/hooks/gitlab`: `X-Gitlab-Token` equal to `--webhook-secret`; `Push Hook`,
//!   `Tag Push Hook`.
//! - `POST /-/hooks/refresh?repo=<import path>`: `Authorization: Bearer <--webhook-token>`.
//!
//! The payload's repository URL is mapped to the stored repositories whose upstream it is
//! (from the catalog, and the import path the URL spells): a hook never fills a repository
//! goprox does not hold (202, ignored). A delivery id seen within the last hour is ignored;
//! each repository is refreshed at most every [`MIN_INTERVAL`], and a push that arrives
//! while its refresh runs gets one more refresh after it (never lost, never piled up).

use crate::refs::catalog::Catalog;
use crate::repo::{Pushed, Repos};
use crate::upstream::resolve::Target;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest hook body (GitHub's push payloads stay far below; they list at most 20 commits).
pub const MAX_BODY: usize = 4 << 20;
/// A repository is refreshed at most this often by hooks.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// Delivery ids are remembered this long (a replay within it is ignored).
const REPLAY_WINDOW: Duration = Duration::from_secs(3600);
/// Most delivery ids remembered.
const MAX_DELIVERIES: usize = 20_000;
/// How long a hook's answer waits for its refresh (GitHub gives up after 10 s).
const ANSWER_WITHIN: Duration = Duration::from_secs(8);

/// Which sender a hook route is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sender {
    GitHub,
    GitLab,
    Gitea,
    /// `/-/hooks/refresh?repo=`.
    Generic,
}

impl Sender {
    /// The sender of the route `/-/hooks/<p>`.
    pub(crate) fn from_path(p: &str) -> Option<Sender> {
        match p {
            "github" => Some(Sender::GitHub),
            "gitlab" => Some(Sender::GitLab),
            "gitea" => Some(Sender::Gitea),
            "refresh" => Some(Sender::Generic),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Sender::GitHub => "github",
            Sender::GitLab => "gitlab",
            Sender::Gitea => "gitea",
            Sender::Generic => "refresh",
        }
    }

    /// The event a request announces (`refresh` on the generic route; empty when none).
    fn event(self, headers: &HeaderMap) -> String {
        let h = |name: &str| header(headers, name);
        match self {
            Sender::GitHub => h("x-github-event"),
            Sender::Gitea => h("x-gitea-event")
                .or_else(|| h("x-gogs-event"))
                .or_else(|| h("x-github-event")),
            Sender::GitLab => h("x-gitlab-event"),
            Sender::Generic => Some("refresh"),
        }
        .unwrap_or("")
        .to_string()
    }

    /// Whether `event` may have changed refs (the events a refresh is for).
    fn changes_refs(self, event: &str) -> bool {
        match self {
            Sender::GitHub | Sender::Gitea => matches!(event, "push" | "create" | "delete"),
            Sender::GitLab => matches!(event, "Push Hook" | "Tag Push Hook" | "System Hook"),
            Sender::Generic => true,
        }
    }

    /// The delivery's id, when the sender gives one (replays are recognized by it).
    fn delivery(self, headers: &HeaderMap) -> Option<&str> {
        let h = |name: &str| header(headers, name);
        match self {
            Sender::GitHub => h("x-github-delivery"),
            Sender::Gitea => h("x-gitea-delivery").or_else(|| h("x-gogs-delivery")),
            Sender::GitLab => h("x-gitlab-event-uuid").or_else(|| h("idempotency-key")),
            Sender::Generic => None,
        }
    }
}

/// A request header's value, when present and visible ASCII.
fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The stored repositories a hook is about and the client may see: the generic route's
/// `?repo=`, or those whose upstream is one of the URLs the payload names. Err: a 400 for a
/// request that names none.
async fn hook_targets(
    sender: Sender,
    st: &super::AppState,
    query_repo: Option<&str>,
    body: &[u8],
) -> Result<Vec<Target>, Answer> {
    let (repos, catalog, access) = (&st.repos, &st.status.catalog, &st.access);
    let targets = match sender {
        Sender::Generic => {
            let Some(root) = query_repo.filter(|r| !r.is_empty()) else {
                return Err(answer(
                    StatusCode::BAD_REQUEST,
                    "?repo=<import path> is required",
                ));
            };
            match repos.stored_target(root).await {
                Some(t) if t.root == root => vec![t],
                _ => Vec::new(),
            }
        }
        _ => {
            let payload: serde_json::Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    return Err(answer(
                        StatusCode::BAD_REQUEST,
                        format!("payload is not JSON: {e}"),
                    ));
                }
            };
            // `clone_url` and `html_url` usually normalize alike: each is looked up once.
            let mut urls: Vec<String> = payload_urls(&payload)
                .iter()
                .filter_map(|u| normalize_url(u))
                .collect();
            urls.sort();
            urls.dedup();
            if urls.is_empty() {
                return Err(answer(
                    StatusCode::BAD_REQUEST,
                    "payload names no repository URL",
                ));
            }
            stored_targets(repos, catalog, &urls).await
        }
    };
    Ok(targets
        .into_iter()
        .filter(|t| access.check(&t.root).is_ok())
        .collect())
}

/// The hooks' secrets and memory.
pub struct Hooks {
    /// `--webhook-secret`: HMAC key (GitHub, Gitea) and GitLab's token.
    secret: Option<Vec<u8>>,
    /// `--webhook-token`: the generic route's bearer token.
    token: Option<Vec<u8>>,
    deliveries: Mutex<HashMap<String, Instant>>,
    slots: Mutex<HashMap<String, Slot>>,
}

/// The refresh state of one repository.
#[derive(Default)]
struct Slot {
    running: bool,
    /// A push arrived while the refresh ran: run once more.
    again: bool,
    last: Option<Instant>,
}

/// A hook's answer: an HTTP status and a one-line text body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

fn answer(status: StatusCode, message: impl Into<String>) -> Answer {
    Answer {
        status,
        message: message.into(),
    }
}

/// Equal, in time that does not depend on where they differ (only on their lengths).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `sig_hex` is the HMAC-SHA256 of `body` under `key` (constant-time).
pub fn hmac_ok(key: &[u8], body: &[u8], sig_hex: &str) -> bool {
    use hmac::{KeyInit, Mac};
    let Ok(sig) = hex::decode(sig_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `host/path` of a repository URL, lowercased, without scheme, user, port, `.git` or a
/// trailing slash: `https://u@GitHub.com:443/o/r.git/` → `github.com/o/r`. `None` when it
/// does not look like a repository URL.
pub fn normalize_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (rest, scp) = match url.split_once("://") {
        Some((_, r)) => (r, false),
        // scp-like `git@host:o/r.git`.
        None => (url, true),
    };
    let rest = match rest.split_once('@') {
        Some((user, r)) if !user.contains('/') => r,
        _ => rest,
    };
    let (host, path) = match (scp, rest.split_once(':'), rest.split_once('/')) {
        (true, Some((h, p)), _) if !h.contains('/') => (h, p),
        (_, _, Some((h, p))) => (h, p),
        _ => return None,
    };
    // A default port says nothing; another one names another server.
    let host = host
        .strip_suffix(":443")
        .or_else(|| host.strip_suffix(":80"))
        .unwrap_or(host);
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let path = path.trim_end_matches('/');
    let path = path
        .strip_suffix(".git")
        .unwrap_or(path)
        .trim_end_matches('/');
    if host.is_empty() || path.is_empty() || path.contains("..") {
        return None;
    }
    Some(format!("{host}/{path}").to_ascii_lowercase())
}

/// The repository URLs a payload names (GitHub, Gitea, GitLab shapes).
pub fn payload_urls(payload: &serde_json::Value) -> Vec<String> {
    let mut urls = Vec::new();
    for obj in ["repository", "project"] {
        let Some(r) = payload.get(obj) else { continue };
        for field in [
            "clone_url",
            "html_url",
            "git_http_url",
            "http_url",
            "web_url",
            "homepage",
            "ssh_url",
            "git_ssh_url",
            "url",
        ] {
            if let Some(u) = r.get(field).and_then(|v| v.as_str())
                && !urls.iter().any(|x| x == u)
            {
                urls.push(u.to_string());
            }
        }
    }
    urls
}

impl Hooks {
    /// Hooks with `--webhook-secret` and `--webhook-token` (empty or `None`: that kind of hook
    /// is refused as not configured).
    pub fn new(secret: Option<String>, token: Option<String>) -> Self {
        Hooks {
            secret: secret.filter(|s| !s.is_empty()).map(String::into_bytes),
            token: token.filter(|s| !s.is_empty()).map(String::into_bytes),
            deliveries: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// Check the request's credentials for `sender`.
    fn authenticate(&self, sender: Sender, headers: &HeaderMap, body: &[u8]) -> Result<(), Answer> {
        let h = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let not_configured = |flag: &str| {
            answer(
                StatusCode::NOT_FOUND,
                format!("{} hooks are not configured ({flag})", sender.name()),
            )
        };
        let refused = |why: &str| answer(StatusCode::UNAUTHORIZED, why.to_string());
        if sender == Sender::Generic {
            let token = self
                .token
                .as_deref()
                .ok_or_else(|| not_configured("--webhook-token"))?;
            let given = h("authorization")
                .and_then(|v| {
                    v.strip_prefix("Bearer ")
                        .or_else(|| v.strip_prefix("bearer "))
                })
                .ok_or_else(|| refused("a bearer token is required"))?;
            return if same(given.trim().as_bytes(), token) {
                Ok(())
            } else {
                Err(refused("wrong token"))
            };
        }
        let secret = self
            .secret
            .as_deref()
            .ok_or_else(|| not_configured("--webhook-secret"))?;
        match sender {
            Sender::GitLab => {
                let given =
                    h("x-gitlab-token").ok_or_else(|| refused("X-Gitlab-Token is required"))?;
                if same(given.as_bytes(), secret) {
                    Ok(())
                } else {
                    Err(refused("wrong X-Gitlab-Token"))
                }
            }
            _ => {
                let sig = match sender {
                    Sender::Gitea => h("x-gitea-signature")
                        .or_else(|| h("x-forgejo-signature"))
                        .or_else(|| h("x-gogs-signature"))
                        .or_else(|| {
                            h("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256="))
                        }),
                    _ => h("x-hub-signature-256").and_then(|s| s.strip_prefix("sha256=")),
                }
                .ok_or_else(|| refused("a signature header is required"))?;
                if hmac_ok(secret, body, sig) {
                    Ok(())
                } else {
                    Err(refused("bad signature"))
                }
            }
        }
    }

    /// Whether a delivery id was seen within the window (and remember it).
    fn replayed(&self, id: &str) -> bool {
        let mut d = self.deliveries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = d.get(id)
            && at.elapsed() < REPLAY_WINDOW
        {
            return true;
        }
        if d.len() >= MAX_DELIVERIES {
            d.retain(|_, at| at.elapsed() < REPLAY_WINDOW);
            if d.len() >= MAX_DELIVERIES {
                // Still full of recent ids: forget the oldest half.
                let mut ages: Vec<Instant> = d.values().copied().collect();
                ages.sort();
                let cut = ages[ages.len() / 2];
                d.retain(|_, at| *at > cut);
            }
        }
        d.insert(id.to_string(), Instant::now());
        false
    }

    /// Handle one hook request.
    pub(crate) async fn handle(
        self: &Arc<Self>,
        sender: Sender,
        st: &super::AppState,
        headers: &HeaderMap,
        query_repo: Option<&str>,
        body: &[u8],
    ) -> Answer {
        if body.len() > MAX_BODY {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("hook body too large (limit {MAX_BODY} bytes)"),
            );
        }
        if let Err(a) = self.authenticate(sender, headers, body) {
            crate::metrics::hook(sender.name(), "refused");
            return a;
        }
        let event = sender.event(headers);
        if event == "ping" {
            crate::metrics::hook(sender.name(), "ping");
            return answer(StatusCode::OK, "pong");
        }
        if !sender.changes_refs(&event) {
            crate::metrics::hook(sender.name(), "ignored");
            return answer(StatusCode::ACCEPTED, format!("event {event:?} ignored"));
        }
        if let Some(id) = sender.delivery(headers)
            && self.replayed(&format!("{}:{id}", sender.name()))
        {
            crate::metrics::hook(sender.name(), "replayed");
            return answer(StatusCode::OK, format!("delivery {id} already handled"));
        }
        let targets = match hook_targets(sender, st, query_repo, body).await {
            Ok(t) => t,
            Err(a) => return a,
        };
        if targets.is_empty() {
            crate::metrics::hook(sender.name(), "unknown");
            return answer(
                StatusCode::ACCEPTED,
                "no repository goprox holds matches this hook; ignored",
            );
        }
        crate::metrics::hook(sender.name(), "accepted");
        self.refresh_all(&st.repos, targets).await
    }

    /// Refresh each target, waiting up to [`ANSWER_WITHIN`] for each, and say how each went:
    /// 200, unless a refresh was queued or is still running (202) or failed (502), the last
    /// such target deciding.
    async fn refresh_all(self: &Arc<Self>, repos: &Arc<Repos>, targets: Vec<Target>) -> Answer {
        let mut lines = Vec::new();
        let mut status = StatusCode::OK;
        for t in targets {
            let line = match self.trigger(repos, t.clone()) {
                None => {
                    status = StatusCode::ACCEPTED;
                    format!("{}: refresh queued behind the one running", t.root)
                }
                Some(rx) => match tokio::time::timeout(ANSWER_WITHIN, rx).await {
                    Ok(Ok(Ok(Some(Pushed::Updated { generation })))) => {
                        format!("{}: refreshed (generation {generation})", t.root)
                    }
                    Ok(Ok(Ok(Some(Pushed::Unchanged)))) => {
                        format!("{}: refreshed, nothing new upstream", t.root)
                    }
                    Ok(Ok(Ok(None))) => format!("{}: not stored; ignored", t.root),
                    Ok(Ok(Err(e))) => {
                        status = StatusCode::BAD_GATEWAY;
                        repos.activity.error(&t.root, "hook", &e);
                        format!("{}: refresh failed: {e}", t.root)
                    }
                    Ok(Err(_)) | Err(_) => {
                        status = StatusCode::ACCEPTED;
                        format!("{}: refresh continues in the background", t.root)
                    }
                },
            };
            lines.push(line);
        }
        answer(status, lines.join("\n"))
    }

    /// Start the repository's refresh worker (returning the first refresh's result), or, when
    /// it runs, ask it for one more refresh (`None`).
    fn trigger(
        self: &Arc<Self>,
        repos: &Arc<Repos>,
        target: Target,
    ) -> Option<tokio::sync::oneshot::Receiver<Result<Option<Pushed>, String>>> {
        {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            let slot = slots.entry(target.root.clone()).or_default();
            if slot.running {
                slot.again = true;
                return None;
            }
            slot.running = true;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (this, repos) = (self.clone(), repos.clone());
        tokio::spawn(async move {
            let mut tx = Some(tx);
            loop {
                let last = {
                    let mut slots = this.slots.lock().unwrap_or_else(|e| e.into_inner());
                    let slot = slots.entry(target.root.clone()).or_default();
                    slot.again = false;
                    slot.last
                };
                if let Some(wait) = last.map(|l| MIN_INTERVAL.saturating_sub(l.elapsed())) {
                    tokio::time::sleep(wait).await;
                }
                {
                    let mut slots = this.slots.lock().unwrap_or_else(|e| e.into_inner());
                    slots.entry(target.root.clone()).or_default().last = Some(Instant::now());
                }
                let r = repos.refresh_pushed(&target).await;
                if let Err(e) = &r {
                    tracing::warn!(root = %target.root, error = %e, "hook refresh failed");
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(r);
                }
                let mut slots = this.slots.lock().unwrap_or_else(|e| e.into_inner());
                let slot = slots.entry(target.root.clone()).or_default();
                if !slot.again {
                    slot.running = false;
                    // Forget quiet repositories (the map stays as small as the hooks' set).
                    if slots.len() > 10_000 {
                        slots.retain(|_, s| {
                            s.running || s.last.is_some_and(|l| l.elapsed() < MIN_INTERVAL)
                        });
                    }
                    break;
                }
            }
        });
        Some(rx)
    }
}

/// The stored repositories a hook's URLs (normalized) name: those whose upstream is one of
/// them (the catalog), and a root spelled by one of them when the store holds it.
async fn stored_targets(repos: &Repos, catalog: &Catalog, urls: &[String]) -> Vec<Target> {
    let mut found: Vec<Target> = Vec::new();
    match catalog.read().await {
        Ok(shards) => {
            for shard in &shards {
                for (root, e) in &shard.repos {
                    if normalize_url(&e.upstream).is_some_and(|u| urls.contains(&u))
                        && !found.iter().any(|t| &t.root == root)
                    {
                        found.push(Target {
                            root: root.clone(),
                            upstream: e.upstream.clone(),
                            subdir: String::new(),
                        });
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "hook: cannot read the catalog"),
    }
    // The catalog may lag a fill: try the import path the URL spells.
    for u in urls {
        if found.iter().any(|t| t.root.eq_ignore_ascii_case(u)) {
            continue;
        }
        if crate::path::validate(u).is_err() {
            continue;
        }
        if let Some(t) = repos.stored_target(u).await
            && t.root.eq_ignore_ascii_case(u)
            && normalize_url(&t.upstream).is_some_and(|x| urls.contains(&x))
        {
            found.push(t);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(key: &[u8], body: &[u8]) -> String {
        use hmac::{KeyInit, Mac};
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn hmac_is_checked() {
        // RFC 4231 test case 2.
        assert!(hmac_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        ));
        let body = br#"{"ref":"refs/tags/v1.0.0"}"#;
        let sig = sign(b"s3cret", body);
        assert!(hmac_ok(b"s3cret", body, &sig));
        assert!(!hmac_ok(b"s3cret", b"{}", &sig));
        assert!(!hmac_ok(b"other", body, &sig));
        assert!(!hmac_ok(b"s3cret", body, "zz"));
        assert!(!hmac_ok(b"s3cret", body, &sig[..10]));
    }

    #[test]
    fn urls_are_normalized() {
        for (u, want) in [
            (
                "https://github.com/Acme/Tool.git",
                Some("github.com/acme/tool"),
            ),
            (
                "https://user:pw@github.com:443/acme/tool/",
                Some("github.com/acme/tool"),
            ),
            ("git@github.com:acme/tool.git", Some("github.com/acme/tool")),
            (
                "ssh://git@gitlab.example.com/g/sub/p.git",
                Some("gitlab.example.com/g/sub/p"),
            ),
            (
                "http://127.0.0.1:9000/acme/tool",
                Some("127.0.0.1:9000/acme/tool"),
            ),
            ("https://github.com", None),
            ("https://x/../etc", None),
        ] {
            assert_eq!(normalize_url(u).as_deref(), want, "{u}");
        }
    }

    #[test]
    fn payload_urls_of_each_sender() {
        let gh: serde_json::Value = serde_json::from_str(
            r#"{"ref":"refs/tags/v1","repository":{"full_name":"a/b","clone_url":"https://github.com/a/b.git","html_url":"https://github.com/a/b"}}"#,
        )
        .unwrap();
        assert_eq!(
            payload_urls(&gh),
            ["https://github.com/a/b.git", "https://github.com/a/b"]
        );
        let gl: serde_json::Value = serde_json::from_str(
            r#"{"object_kind":"tag_push","project":{"git_http_url":"https://gl.example/g/p.git","web_url":"https://gl.example/g/p"},"repository":{"homepage":"https://gl.example/g/p"}}"#,
        )
        .unwrap();
        assert_eq!(
            payload_urls(&gl),
            ["https://gl.example/g/p", "https://gl.example/g/p.git",]
        );
    }

    #[test]
    fn credentials_by_sender() {
        let hooks = Hooks::new(Some("s3cret".into()), Some("tok".into()));
        let body = br#"{"repository":{}}"#;
        let mut h = HeaderMap::new();
        assert_eq!(
            hooks
                .authenticate(Sender::GitHub, &h, body)
                .unwrap_err()
                .status,
            StatusCode::UNAUTHORIZED
        );
        h.insert(
            "x-hub-signature-256",
            format!("sha256={}", sign(b"s3cret", body)).parse().unwrap(),
        );
        assert!(hooks.authenticate(Sender::GitHub, &h, body).is_ok());
        assert!(hooks.authenticate(Sender::GitHub, &h, b"{}").is_err());
        // Gitea accepts its own header or GitHub's.
        assert!(hooks.authenticate(Sender::Gitea, &h, body).is_ok());
        let mut g = HeaderMap::new();
        g.insert("x-gitea-signature", sign(b"s3cret", body).parse().unwrap());
        assert!(hooks.authenticate(Sender::Gitea, &g, body).is_ok());
        let mut l = HeaderMap::new();
        l.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(hooks.authenticate(Sender::GitLab, &l, body).is_ok());
        l.insert("x-gitlab-token", "s3cre".parse().unwrap());
        assert!(hooks.authenticate(Sender::GitLab, &l, body).is_err());
        let mut b = HeaderMap::new();
        b.insert("authorization", "Bearer tok".parse().unwrap());
        assert!(hooks.authenticate(Sender::Generic, &b, b"").is_ok());
        b.insert("authorization", "Bearer tok2".parse().unwrap());
        assert!(hooks.authenticate(Sender::Generic, &b, b"").is_err());
        // Not configured: 404.
        let none = Hooks::new(None, None);
        assert_eq!(
            none.authenticate(Sender::GitHub, &h, body)
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
    }

    #[test]
    fn deliveries_are_remembered() {
        let hooks = Hooks::new(Some("s".into()), None);
        assert!(!hooks.replayed("github:1"));
        assert!(hooks.replayed("github:1"));
        assert!(!hooks.replayed("github:2"));
    }
}
