//! git with an isolated environment, snapshots of a clone, and comparisons against upstream.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::{Output, TempDir};

/// Default limit for one git command.
pub const GIT_TIMEOUT: Duration = Duration::from_secs(300);

/// An isolated git environment: temporary `HOME`, `GIT_CONFIG_GLOBAL` file of our own,
/// `GIT_CONFIG_NOSYSTEM=1`, `GIT_TERMINAL_PROMPT=0`, no proxy variables (the environment is
/// cleared), `LC_ALL=C`.
pub struct GitEnv {
    pub home: TempDir,
    pub config: PathBuf,
}

impl GitEnv {
    pub fn new() -> GitEnv {
        Self::with_config("")
    }

    /// Like [`GitEnv::new`] with extra lines appended to the global config file.
    pub fn with_config(extra: &str) -> GitEnv {
        let home = TempDir::new("git-home");
        let config = home.join("gitconfig");
        std::fs::write(
            &config,
            format!(
                "[user]\n\tname = Test User\n\temail = test@example.test\n\
                 [init]\n\tdefaultBranch = master\n\
                 [advice]\n\tdetachedHead = false\n\
                 [gc]\n\tauto = 0\n\
                 [maintenance]\n\tauto = false\n\
                 [fetch]\n\twriteCommitGraph = false\n\
                 {extra}"
            ),
        )
        .expect("write gitconfig");
        GitEnv { home, config }
    }

    /// A `git` command in `dir` with the isolated environment.
    pub fn cmd(&self, dir: &Path) -> Command {
        let mut c = Command::new("git");
        c.current_dir(dir)
            .env_clear()
            .env("PATH", super::path_var())
            .env("HOME", self.home.path())
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", &self.config)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_ASKPASS", "/bin/false")
            .env("LC_ALL", "C")
            .env("TZ", "UTC");
        c
    }

    /// Run git; whatever the outcome.
    pub fn output(&self, dir: &Path, args: &[&str]) -> Output {
        super::run(self.cmd(dir).args(args), None, GIT_TIMEOUT)
    }

    /// Run git; panic (with stderr) unless it succeeds; return stdout.
    pub fn run(&self, dir: &Path, args: &[&str]) -> String {
        self.output(dir, args).check().stdout_str()
    }

    /// `git -c protocol.version=N clone [extra...] URL DEST` (panics on failure).
    pub fn clone(&self, proto: u8, url: &str, dest: &Path, extra: &[&str]) -> Output {
        let pv = format!("protocol.version={proto}");
        let dest_s = dest.to_string_lossy().into_owned();
        let mut args = vec!["-c", &pv, "clone", "--no-progress"];
        args.extend_from_slice(extra);
        args.push(url);
        args.push(&dest_s);
        self.output(dest.parent().expect("dest parent"), &args)
            .check()
    }

    /// `git -c protocol.version=N ARGS...` in `dir` (panics on failure).
    pub fn run_proto(&self, proto: u8, dir: &Path, args: &[&str]) -> String {
        let pv = format!("protocol.version={proto}");
        let mut a = vec!["-c", pv.as_str()];
        a.extend_from_slice(args);
        self.run(dir, &a)
    }

    /// `git ls-remote --symref URL` with the given protocol version.
    pub fn ls_remote(&self, proto: u8, url: &str) -> String {
        self.run_proto(proto, self.home.path(), &["ls-remote", "--symref", url])
    }

    /// `git fsck --strict --full`: exit 0 and nothing on stderr (except the `notice:` lines fsck
    /// prints for an empty repository).
    pub fn fsck(&self, dir: &Path) {
        let out = self.output(dir, &["fsck", "--strict", "--full", "--no-progress"]);
        let err = out.stderr_str();
        let noisy = err
            .lines()
            .any(|l| !l.trim().is_empty() && !l.starts_with("notice: "));
        assert!(
            out.ok() && !noisy,
            "git fsck --strict --full in {} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            dir.display(),
            out.status,
            super::tail(&out.stdout_str(), 10_000),
            super::tail(&err, 10_000)
        );
    }

    /// `git rev-list --count REV`.
    pub fn count(&self, dir: &Path, rev: &str) -> usize {
        self.run(dir, &["rev-list", "--count", rev])
            .trim()
            .parse()
            .expect("rev-list --count output")
    }

    pub fn rev_parse(&self, dir: &Path, rev: &str) -> String {
        self.run(dir, &["rev-parse", rev]).trim().to_string()
    }

    /// Contents of the shallow file (sorted lines), empty if the repo is not shallow.
    pub fn shallow_lines(&self, dir: &Path) -> Vec<String> {
        let gd = self.run(dir, &["rev-parse", "--absolute-git-dir"]);
        let mut v: Vec<String> = std::fs::read_to_string(Path::new(gd.trim()).join("shallow"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Take a [`Snapshot`] of the repository at `dir`.
    pub fn snapshot(&self, dir: &Path) -> Snapshot {
        let refs = self.run(
            dir,
            &[
                "for-each-ref",
                "--format=%(objectname) %(objecttype) %(refname) %(symref)",
            ],
        );
        let mut objects: Vec<String> = self
            .run(dir, &["rev-list", "--objects", "--all"])
            .lines()
            .map(str::to_string)
            .collect();
        objects.sort();
        objects.dedup();
        let head = self.output(dir, &["symbolic-ref", "HEAD"]);
        let head = if head.ok() {
            head.stdout_str().trim().to_string()
        } else {
            "(detached or missing)".to_string()
        };
        Snapshot {
            refs,
            objects,
            head,
        }
    }
}

impl Default for GitEnv {
    fn default() -> Self {
        Self::new()
    }
}

/// What must be equal between a clone through goprox and one straight from upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// `git for-each-ref --format='%(objectname) %(objecttype) %(refname) %(symref)'`
    pub refs: String,
    /// sorted, deduplicated `git rev-list --objects --all`
    pub objects: Vec<String>,
    /// `git symbolic-ref HEAD`
    pub head: String,
}

/// Lines only in `a` and lines only in `b` (at most `max` each), for messages.
pub fn line_diff(a: &str, b: &str, max: usize) -> String {
    let sa: std::collections::BTreeSet<&str> = a.lines().collect();
    let sb: std::collections::BTreeSet<&str> = b.lines().collect();
    let only_a: Vec<&&str> = sa.difference(&sb).take(max).collect();
    let only_b: Vec<&&str> = sb.difference(&sa).take(max).collect();
    let mut s = String::new();
    for l in only_a {
        s.push_str(&format!("  - {l}\n"));
    }
    for l in only_b {
        s.push_str(&format!("  + {l}\n"));
    }
    if s.is_empty() && a != b {
        s.push_str("  (same lines, different order or duplicates)\n");
    }
    s
}

/// Assert two snapshots are equal, with a readable diff (`-` expected/upstream, `+` actual).
pub fn assert_same(what: &str, actual: &Snapshot, expected: &Snapshot) {
    let mut problems = String::new();
    if actual.refs != expected.refs {
        problems.push_str(&format!(
            "refs differ:\n{}",
            line_diff(&expected.refs, &actual.refs, 40)
        ));
    }
    if actual.objects != expected.objects {
        problems.push_str(&format!(
            "objects differ (expected {}, got {}):\n{}",
            expected.objects.len(),
            actual.objects.len(),
            line_diff(&expected.objects.join("\n"), &actual.objects.join("\n"), 40)
        ));
    }
    if actual.head != expected.head {
        problems.push_str(&format!(
            "HEAD differs: expected {:?}, got {:?}\n",
            expected.head, actual.head
        ));
    }
    assert!(
        problems.is_empty(),
        "{what}: not identical to upstream:\n{problems}"
    );
    assert!(
        !actual.refs.is_empty() || actual.objects.is_empty(),
        "{what}: no refs but objects?"
    );
}

/// How a clone is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloneKind {
    /// `git clone URL`
    Plain,
    /// `git clone --mirror URL`
    Mirror,
}

impl CloneKind {
    pub fn args(self) -> &'static [&'static str] {
        match self {
            CloneKind::Plain => &[],
            CloneKind::Mirror => &["--mirror"],
        }
    }
}

/// The process-wide upstream that reference data is taken from (never stopped).
pub fn reference_upstream() -> &'static super::upstream::Upstream {
    static CELL: OnceLock<super::upstream::Upstream> = OnceLock::new();
    CELL.get_or_init(|| super::upstream::Upstream::start(&super::fixtures::fixtures().root))
}

/// Reference data for one fixture repo, from a clone straight from upstream.
#[derive(Clone, Debug)]
pub struct Reference {
    pub snapshot: Snapshot,
    /// `git ls-remote --symref` output
    pub ls_remote: String,
    /// objects in the clone (`count-objects -v`: count + in-pack)
    pub object_count: usize,
}

/// Upstream path of a repo root: `example.test/NAME` → `/NAME`, `github.com/O/R` → `/gh/O/R`.
pub fn upstream_path(repo_root: &str) -> String {
    if let Some(rest) = repo_root.strip_prefix("github.com/") {
        format!("/gh/{rest}")
    } else if let Some(rest) = repo_root.strip_prefix("example.test/") {
        format!("/{rest}")
    } else {
        panic!("no upstream mapping for {repo_root}")
    }
}

/// Reference for (`repo_root`, protocol, clone kind), computed once per process.
pub fn reference(repo_root: &str, proto: u8, kind: CloneKind) -> Reference {
    type Key = (String, u8, CloneKind);
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<OnceLock<Reference>>>>> = OnceLock::new();
    let slot = {
        let mut m = CACHE
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        m.entry((repo_root.to_string(), proto, kind))
            .or_default()
            .clone()
    };
    slot.get_or_init(|| {
        let up = reference_upstream();
        let url = format!("{}{}", up.url(), upstream_path(repo_root));
        let env = GitEnv::new();
        let tmp = TempDir::new("reference");
        let dest = tmp.join("clone");
        env.clone(proto, &url, &dest, kind.args());
        env.fsck(&dest);
        Reference {
            snapshot: env.snapshot(&dest),
            ls_remote: env.ls_remote(proto, &url),
            object_count: count_objects(&env, &dest).total(),
        }
    })
    .clone()
}

/// `git count-objects -v` numbers.
#[derive(Clone, Copy, Debug, Default)]
pub struct ObjectCounts {
    pub loose: usize,
    pub in_pack: usize,
}

impl ObjectCounts {
    pub fn total(&self) -> usize {
        self.loose + self.in_pack
    }
}

pub fn count_objects(env: &GitEnv, dir: &Path) -> ObjectCounts {
    let out = env.run(dir, &["count-objects", "-v"]);
    let mut c = ObjectCounts::default();
    for l in out.lines() {
        if let Some(v) = l.strip_prefix("count: ") {
            c.loose = v.trim().parse().expect("count");
        } else if let Some(v) = l.strip_prefix("in-pack: ") {
            c.in_pack = v.trim().parse().expect("in-pack");
        }
    }
    c
}

/// Clone `url` (a goprox URL for `repo_root`) the given way and assert the clone is identical to
/// a clone straight from upstream, fsck-clean, and that `ls-remote --symref` says the same.
/// Returns the clone's directory inside `tmp`.
pub fn clone_and_compare(
    env: &GitEnv,
    tmp: &TempDir,
    url: &str,
    repo_root: &str,
    proto: u8,
    kind: CloneKind,
) -> PathBuf {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let expected = reference(repo_root, proto, kind);
    let dest = tmp.join(format!(
        "clone-{n}-{}-v{proto}-{kind:?}",
        repo_root.replace('/', "_")
    ));
    let what = format!("{kind:?} clone of {url} with protocol.version={proto}");
    env.clone(proto, url, &dest, kind.args());
    env.fsck(&dest);
    assert_same(&what, &env.snapshot(&dest), &expected.snapshot);
    let ls = env.ls_remote(proto, url);
    assert_eq!(
        ls,
        expected.ls_remote,
        "{what}: ls-remote --symref differs:\n{}",
        line_diff(&expected.ls_remote, &ls, 40)
    );
    dest
}
