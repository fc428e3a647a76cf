//! Client authentication: HTTP basic auth against an htpasswd file with bcrypt hashes
//! (`htpasswd -B`: `user:$2y$...`), as a middleware on every git and go-get route.
//!
//! - The file is re-read when its modification time or size changes (checked at most once
//!   per [`RELOAD_CHECK`]); a file that becomes unreadable or empty keeps the last good set.
//! - bcrypt is slow on purpose, so a successful check is remembered for [`CACHE_TTL`], keyed
//!   by a salted SHA-1 of user and password (the password itself is never kept); a reload
//!   forgets every remembered check.
//! - Unknown users cost one bcrypt check too (against a fixed dummy hash), so timing does not
//!   tell which user names exist; bcrypt compares its digests in constant time.
//! - Nothing about credentials is logged: refusals log the user name at most.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha1::Digest;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a successful verification is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(60);
/// How often the file's modification time is looked at, at most.
pub const RELOAD_CHECK: Duration = Duration::from_secs(1);
/// Most remembered verifications (the cache is cleared when full).
const CACHE_MAX: usize = 10_000;

/// Why the `--auth-file` could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum AuthFileError {
    /// The file (named first) could not be read.
    #[error("reading {0}: {1}")]
    Read(String, std::io::Error),
    /// A line (file, 1-based line number, what is wrong) is not `user:bcrypt-hash`.
    #[error("{0} line {1}: {2}")]
    Syntax(String, usize, &'static str),
    /// The file names no users.
    #[error("{0}: no users")]
    Empty(String),
}

struct Loaded {
    users: HashMap<String, String>,
    stamp: Option<(SystemTime, u64)>,
    checked: Instant,
    /// Salted digests of verified user:password pairs, with when they were verified.
    verified: HashMap<[u8; 20], Instant>,
}

/// The users of an `--auth-file`.
pub struct Users {
    path: PathBuf,
    salt: [u8; 16],
    /// A hash of a random password at the file's cost, verified against for unknown users.
    dummy: String,
    inner: Mutex<Loaded>,
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Parse htpasswd text: `user:hash` lines, `#` comments and blank lines ignored; only bcrypt
/// hashes (`$2a$`, `$2b$`, `$2x$`, `$2y$`) are accepted.
pub fn parse(name: &str, text: &str) -> Result<HashMap<String, String>, AuthFileError> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (user, hash) = line.split_once(':').ok_or(AuthFileError::Syntax(
            name.into(),
            i + 1,
            "expected user:hash",
        ))?;
        if user.is_empty() {
            return Err(AuthFileError::Syntax(name.into(), i + 1, "empty user name"));
        }
        if !["$2a$", "$2b$", "$2x$", "$2y$"]
            .iter()
            .any(|p| hash.starts_with(p))
        {
            return Err(AuthFileError::Syntax(
                name.into(),
                i + 1,
                "only bcrypt hashes are supported (htpasswd -B)",
            ));
        }
        users.insert(user.to_string(), hash.to_string());
    }
    if users.is_empty() {
        return Err(AuthFileError::Empty(name.into()));
    }
    Ok(users)
}

fn load(path: &Path) -> Result<HashMap<String, String>, AuthFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| AuthFileError::Read(name.clone(), e))?;
    parse(&name, &text)
}

impl Users {
    /// Load the file (an error when it is missing, malformed or empty).
    pub fn open(path: &Path) -> Result<Users, AuthFileError> {
        let st = stamp(path);
        let users = load(path)?;
        let mut salt = [0u8; 16];
        let seed = format!(
            "{:?}{:?}{}",
            SystemTime::now(),
            Instant::now(),
            std::process::id()
        );
        let rs = std::collections::hash_map::RandomState::new();
        for (i, chunk) in salt.chunks_mut(8).enumerate() {
            use std::hash::{BuildHasher, Hasher};
            let mut h = rs.build_hasher();
            h.write(seed.as_bytes());
            h.write_usize(i);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        let cost = users
            .values()
            .next()
            .and_then(|h| h.get(4..6))
            .and_then(|c| c.parse::<u32>().ok())
            .unwrap_or(bcrypt::DEFAULT_COST)
            .clamp(4, 14);
        let dummy = bcrypt::hash(hex::encode(salt), cost)
            .unwrap_or_else(|_| format!("$2b$04${}", "A".repeat(53)));
        Ok(Users {
            path: path.to_path_buf(),
            salt,
            dummy,
            inner: Mutex::new(Loaded {
                users,
                stamp: st,
                checked: Instant::now(),
                verified: HashMap::new(),
            }),
        })
    }

    fn key(&self, user: &str, pass: &str) -> [u8; 20] {
        let mut h = sha1::Sha1::new();
        h.update(self.salt);
        h.update((user.len() as u64).to_le_bytes());
        h.update(user.as_bytes());
        h.update(pass.as_bytes());
        h.finalize().into()
    }

    /// Re-read the file if it changed (checked at most once per [`RELOAD_CHECK`]).
    fn maybe_reload(&self, l: &mut Loaded) {
        if l.checked.elapsed() < RELOAD_CHECK {
            return;
        }
        l.checked = Instant::now();
        let st = stamp(&self.path);
        if st == l.stamp {
            return;
        }
        match load(&self.path) {
            Ok(users) => {
                tracing::info!(file = %self.path.display(), users = users.len(), "auth file reloaded");
                l.users = users;
                l.stamp = st;
                l.verified.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, "auth file changed but cannot be used; keeping the previous users");
                l.stamp = st;
            }
        }
    }

    /// Whether `user:pass` is valid. Runs bcrypt on a blocking thread when not remembered.
    pub async fn verify(self: &Arc<Self>, user: &str, pass: &str) -> bool {
        let key = self.key(user, pass);
        let hash = {
            let mut l = match self.inner.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            self.maybe_reload(&mut l);
            if l.verified
                .get(&key)
                .is_some_and(|t| t.elapsed() < CACHE_TTL)
            {
                return true;
            }
            l.users.get(user).cloned()
        };
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| self.dummy.clone());
        let pass_owned = pass.to_string();
        let ok = tokio::task::spawn_blocking(move || {
            bcrypt::verify(pass_owned.as_bytes(), &hash).unwrap_or(false)
        })
        .await
        .unwrap_or(false)
            && known;
        if ok {
            let mut l = match self.inner.lock() {
                Ok(l) => l,
                Err(p) => p.into_inner(),
            };
            if l.verified.len() >= CACHE_MAX {
                l.verified.clear();
            }
            l.verified.insert(key, Instant::now());
        }
        ok
    }
}

/// User and password of an `Authorization: Basic ...` header.
pub fn basic_credentials(v: &HeaderValue) -> Option<(String, String)> {
    let s = v.to_str().ok()?;
    let (scheme, b64) = s.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// Paths that stay open without credentials: load-balancer probes, and push hooks (which
/// carry their own signature or token).
fn is_open(req: &Request) -> bool {
    let path = req.uri().path();
    req.uri().authority().is_none()
        && ((req.method() == axum::http::Method::GET && matches!(path, "/healthz" | "/readyz"))
            || (req.method() == axum::http::Method::POST && path.starts_with("/-/hooks/")))
}

fn unauthorized(msg: &str) -> Response {
    crate::metrics::REQUEST_ERRORS.inc();
    (
        StatusCode::UNAUTHORIZED,
        [
            (
                header::WWW_AUTHENTICATE,
                "Basic realm=\"goprox\", charset=\"UTF-8\"",
            ),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
        ],
        format!("{msg}\n"),
    )
        .into_response()
}

/// The middleware: every request but `/healthz`, `/readyz` and push hooks needs valid
/// credentials.
pub async fn require_auth(State(users): State<Arc<Users>>, req: Request, next: Next) -> Response {
    if is_open(&req) {
        return next.run(req).await;
    }
    let Some((user, pass)) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(basic_credentials)
    else {
        return unauthorized("authentication required");
    };
    if !users.verify(&user, &pass).await {
        tracing::info!(user = %user.escape_debug(), path = %req.uri().path(), "authentication failed");
        return unauthorized("authentication failed");
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn htpasswd_parsing() {
        let u = parse(
            "f",
            "# comment\n\nalice:$2y$05$abcdefghijklmnopqrstuu5Zbq1z0aYJ6Dj2/vv2vS8a9fYVbY2W\n",
        )
        .unwrap();
        assert!(u.contains_key("alice"));
        assert!(parse("f", "bob:{SHA}abc").is_err());
        assert!(parse("f", "bob:$apr1$x$y").is_err());
        assert!(parse("f", "nocolon").is_err());
        assert!(parse("f", "# only comments\n").is_err());
    }

    #[test]
    fn basic_header() {
        let v = HeaderValue::from_static("Basic dXNlcjpwYTpzcw==");
        assert_eq!(basic_credentials(&v), Some(("user".into(), "pa:ss".into())));
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Bearer x")),
            None
        );
        assert_eq!(
            basic_credentials(&HeaderValue::from_static("Basic !!!")),
            None
        );
    }

    #[tokio::test]
    async fn verify_cache_and_reload() {
        let dir = std::env::temp_dir().join(format!("goprox-auth-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let f = dir.join("htpasswd");
        let h = bcrypt::hash("s3cret", 4)
            .unwrap()
            .replacen("$2b$", "$2y$", 1);
        std::fs::write(&f, format!("alice:{h}\n")).unwrap();
        let users = Arc::new(Users::open(&f).unwrap());
        assert!(users.verify("alice", "s3cret").await);
        assert!(users.verify("alice", "s3cret").await); // cached
        assert!(!users.verify("alice", "wrong").await);
        assert!(!users.verify("bob", "s3cret").await);
        // Replace the file: the new user works after the reload check interval.
        let h2 = bcrypt::hash("pw2", 4).unwrap();
        std::fs::write(&f, format!("bob:{h2}\n# changed\n")).unwrap();
        tokio::time::sleep(RELOAD_CHECK + Duration::from_millis(50)).await;
        assert!(users.verify("bob", "pw2").await);
        assert!(
            !users.verify("alice", "s3cret").await,
            "cache survives reload"
        );
        assert!(users.dummy.starts_with("$2b$04$"), "{}", users.dummy);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
