//! The client matrix: the git implementations users run, against goprox on both stores.
//!
//! Clients: C git (protocol v0, v1 and v2), libgit2 (pygit2), dulwich, and gitoxide (the `gix`
//! crate, in-process). For each: a full clone, a `depth=1` clone and an incremental fetch after
//! the local repository was rewound (branches back 3 commits, tags deleted, objects pruned).
//! The oracle is the same client doing the same steps straight against the upstream
//! `git http-backend`: same refs (tags included), same objects (`git rev-list --objects --all`),
//! same HEAD, and `git fsck --strict` clean.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::support::git::{GitEnv, assert_same};
use crate::support::goprox::StoreKind;
use crate::support::{self, Harness};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Client {
    Git(u8),
    Pygit2,
    Dulwich,
    Gix,
}

const ALL: [Client; 6] = [
    Client::Git(0),
    Client::Git(1),
    Client::Git(2),
    Client::Pygit2,
    Client::Dulwich,
    Client::Gix,
];

/// The real interpreter behind `python3` (pyenv shims need the caller's HOME, which the
/// isolated environment replaces).
fn python() -> Option<&'static Path> {
    static CELL: OnceLock<Option<PathBuf>> = OnceLock::new();
    CELL.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .ok()?;
        let p = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
        (out.status.success() && p.is_file()).then_some(p)
    })
    .as_deref()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/pyclient.py")
}

const TIMEOUT: Duration = Duration::from_secs(300);

impl Client {
    fn name(self) -> String {
        match self {
            Client::Git(v) => format!("git-v{v}"),
            Client::Pygit2 => "pygit2".into(),
            Client::Dulwich => "dulwich".into(),
            Client::Gix => "gix".into(),
        }
    }

    fn python_cmd(self, env: &GitEnv, args: &[&str]) -> Option<Command> {
        let module = match self {
            Client::Pygit2 => "pygit2",
            Client::Dulwich => "dulwich",
            _ => return None,
        };
        let mut c = Command::new(python()?);
        c.arg(script())
            .arg(module)
            .args(args)
            .env_clear()
            .env("PATH", support::path_var())
            .env("HOME", env.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &env.config)
            .env("LC_ALL", "C");
        Some(c)
    }

    /// The client's version, or why it cannot run here.
    fn version(self, env: &GitEnv) -> Result<String, String> {
        match self {
            Client::Git(_) => Ok(env.run(env.home.path(), &["version"]).trim().to_string()),
            Client::Gix => Ok("gix 0.90 (gitoxide, in-process)".into()),
            Client::Pygit2 | Client::Dulwich => {
                let mut c = self
                    .python_cmd(env, &["version"])
                    .ok_or_else(|| "python3 not found".to_string())?;
                let out = support::run(&mut c, None, TIMEOUT);
                if out.ok() {
                    Ok(out.stdout_str().trim().to_string())
                } else {
                    Err(format!(
                        "{} not importable (pip install {}): {}",
                        self.name(),
                        self.name(),
                        out.stderr_str().trim()
                    ))
                }
            }
        }
    }

    fn clone(self, env: &GitEnv, url: &str, dest: &Path, depth: Option<u32>) {
        let what = format!("{} clone {url} depth={depth:?}", self.name());
        match self {
            Client::Git(v) => {
                let mut args = vec![];
                let d = depth.map(|d| format!("--depth={d}"));
                if let Some(d) = &d {
                    args.push(d.as_str());
                }
                env.clone(v, url, dest, &args).check();
            }
            Client::Pygit2 | Client::Dulwich => {
                let d = depth.map(|d| d.to_string());
                let dest_s = dest.to_string_lossy();
                let mut args = vec!["clone", url, &dest_s];
                if let Some(d) = &d {
                    args.push(d);
                }
                let mut c = self.python_cmd(env, &args).expect("python client");
                let out = support::run(&mut c, None, TIMEOUT);
                assert!(
                    out.ok(),
                    "{what} failed ({}):\n{}",
                    out.status,
                    support::tail(&out.stderr_str(), 10_000)
                );
            }
            Client::Gix => gix_clone(url, dest, depth).unwrap_or_else(|e| panic!("{what}: {e}")),
        }
    }

    fn fetch(self, env: &GitEnv, dir: &Path) {
        let what = format!("{} fetch in {}", self.name(), dir.display());
        match self {
            Client::Git(v) => {
                env.run_proto(v, dir, &["fetch", "-q", "origin"]);
            }
            Client::Pygit2 | Client::Dulwich => {
                let dir_s = dir.to_string_lossy();
                let mut c = self
                    .python_cmd(env, &["fetch", &dir_s])
                    .expect("python client");
                let out = support::run(&mut c, None, TIMEOUT);
                assert!(
                    out.ok(),
                    "{what} failed ({}):\n{}",
                    out.status,
                    support::tail(&out.stderr_str(), 10_000)
                );
            }
            Client::Gix => gix_fetch(dir).unwrap_or_else(|e| panic!("{what}: {e}")),
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A bare clone with gitoxide, isolated from the machine's git configuration.
fn gix_clone(url: &str, dest: &Path, depth: Option<u32>) -> Result<(), BoxError> {
    let mut prep = gix::clone::PrepareFetch::new(
        url,
        dest,
        gix::create::Kind::Bare,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )?;
    if let Some(d) = depth.and_then(NonZeroU32::new) {
        prep = prep.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(d));
    }
    let interrupt = AtomicBool::new(false);
    let (_repo, _outcome) = prep.fetch_only(gix::progress::Discard, &interrupt)?;
    Ok(())
}

/// `fetch origin` with gitoxide.
fn gix_fetch(dir: &Path) -> Result<(), BoxError> {
    let repo = gix::open_opts(dir, gix::open::Options::isolated())?;
    // A bare clone made by gix records no fetch refspec: name the usual ones.
    let remote = repo.find_remote("origin")?.with_refspecs(
        [
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ],
        gix::remote::Direction::Fetch,
    )?;
    let interrupt = AtomicBool::new(false);
    remote
        .connect(gix::remote::Direction::Fetch)?
        .prepare_fetch(gix::progress::Discard, Default::default())?
        .receive(gix::progress::Discard, &interrupt)?;
    Ok(())
}

/// Move every branch and remote-tracking branch back 3 commits, delete every tag, and prune
/// what is no longer reachable: the next fetch has to negotiate and send the difference.
fn rewind(env: &GitEnv, dir: &Path) {
    let refs = env.run(dir, &["for-each-ref", "--format=%(refname) %(symref)"]);
    for line in refs.lines() {
        let (name, symref) = line.split_once(' ').unwrap_or((line, ""));
        if !symref.is_empty() {
            continue;
        }
        if name.starts_with("refs/tags/") {
            env.run(dir, &["update-ref", "-d", name]);
        } else if env
            .output(
                dir,
                &[
                    "rev-parse",
                    "-q",
                    "--verify",
                    &format!("{name}~3^{{commit}}"),
                ],
            )
            .ok()
        {
            env.run(dir, &["update-ref", name, &format!("{name}~3")]);
        }
    }
    env.run(dir, &["reflog", "expire", "--expire=now", "--all"]);
    env.run(dir, &["gc", "-q", "--prune=now"]);
}

fn tags(env: &GitEnv, dir: &Path) -> Vec<String> {
    env.run(dir, &["for-each-ref", "--format=%(refname)", "refs/tags/"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn matrix(kind: StoreKind) {
    let Some(h) = Harness::start(kind, "clients") else {
        return;
    };
    let root = "example.test/rich";
    let gp_url = h.url(root);
    let up_url = format!("{}/rich", h.up.url());
    let env = &h.git;
    let tip = crate::support::fixtures::fixtures()
        .git("rich", &["rev-parse", "refs/heads/trunk"])
        .trim()
        .to_string();
    for client in ALL {
        let version = match client.version(env) {
            Ok(v) => v,
            Err(why) => {
                support::skip(&why);
                continue;
            }
        };
        let name = client.name();
        eprintln!("client matrix ({kind:?}): {name}: {version}");
        let dir = |step: &str, side: &str| h.tmp.join(format!("{name}-{step}-{side}"));

        // Full clone.
        let (gp, up) = (dir("full", "goprox"), dir("full", "upstream"));
        client.clone(env, &gp_url, &gp, None);
        client.clone(env, &up_url, &up, None);
        env.fsck(&gp);
        assert_same(
            &format!("{name}: full clone"),
            &env.snapshot(&gp),
            &env.snapshot(&up),
        );
        let t = tags(env, &gp);
        assert!(
            t.iter().any(|t| t == "refs/tags/v1.0.0"),
            "{name}: full clone has no annotated tag v1.0.0: {t:?}"
        );

        // Incremental fetch after the local repository fell behind.
        rewind(env, &gp);
        rewind(env, &up);
        assert!(tags(env, &gp).is_empty());
        client.fetch(env, &gp);
        client.fetch(env, &up);
        env.fsck(&gp);
        assert_same(
            &format!("{name}: fetch after rewind"),
            &env.snapshot(&gp),
            &env.snapshot(&up),
        );
        assert!(
            !tags(env, &gp).is_empty(),
            "{name}: the fetch brought no tags back"
        );

        // depth=1 (every client here supports shallow clones).
        let (gp, up) = (dir("depth1", "goprox"), dir("depth1", "upstream"));
        client.clone(env, &gp_url, &gp, Some(1));
        client.clone(env, &up_url, &up, Some(1));
        env.fsck(&gp);
        assert_same(
            &format!("{name}: depth=1 clone"),
            &env.snapshot(&gp),
            &env.snapshot(&up),
        );
        assert_eq!(
            env.shallow_lines(&gp),
            env.shallow_lines(&up),
            "{name}: depth=1 shallow file"
        );
        assert!(
            env.shallow_lines(&gp).contains(&tip),
            "{name}: depth=1 clone is not shallow at trunk's tip"
        );
        assert_eq!(env.count(&gp, &tip), 1, "{name}: depth=1 history length");
    }
}

#[test]
fn clients_local() {
    matrix(StoreKind::Local);
}

#[test]
fn clients_s3() {
    matrix(StoreKind::S3);
}
