//! Deterministic fixture repositories, built with the real `git` once and shared read-only.
//!
//! Layout of the root (`GIT_PROJECT_ROOT` of the upstream server):
//! * `rich`: HEAD → `trunk`; ≥ 30 linear commits plus merges (a two-parent and an octopus merge),
//!   branches `master`, `feature-*`, `release-1.x`; lightweight and annotated tags, a tag of a tag,
//!   a tag of a tree and one of a blob, `refs/notes/commits`, `refs/pull/1/head` (reachable from
//!   nothing else); binary files, a 5.5 MiB incompressible file changed once (a large delta), an
//!   executable, a symlink, an empty file, a rename and a deletion. The last [`RICH_LINEAR_TAIL`]
//!   commits of `trunk` are linear.
//! * `big`: three commits, each adding 8 MiB of incompressible data (pack ≈ 24 MiB).
//! * `empty`: `git init --bare` (HEAD → `refs/heads/main`, unborn).
//! * `vmod`: Go module `example.test/vmod`, tags `v1.0.0` (annotated) and `v1.1.0` (lightweight).
//! * `gh/acme/widget`: Go module `github.com/acme/widget`, tag `v1.2.3` (annotated).
//!
//! The result is cached in `temp_dir()/goprox-e2e-fixtures-<hash of this file>` (built in a
//! staging directory and renamed into place, so concurrent test processes are safe) and reused by
//! later runs; change this file and the key changes.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// Number of commits at the tip of `rich`'s `trunk` that have exactly one parent.
pub const RICH_LINEAR_TAIL: usize = 12;

pub struct Fixtures {
    /// The project root: `<root>/rich`, `<root>/big`, ...
    pub root: PathBuf,
}

impl Fixtures {
    pub fn repo(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `git --git-dir=<repo> args...` in the fixture repo (read-only use).
    pub fn git(&self, name: &str, args: &[&str]) -> String {
        let mut c = Command::new("git");
        c.arg("--git-dir")
            .arg(self.repo(name))
            .args(args)
            .env_clear()
            .env("PATH", super::path_var())
            .env("HOME", &self.root)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        super::run(&mut c, None, Duration::from_secs(120))
            .check()
            .stdout_str()
    }

    /// Size in bytes of all packs of a fixture repo.
    pub fn pack_bytes(&self, name: &str) -> u64 {
        let dir = self.repo(name).join("objects/pack");
        std::fs::read_dir(&dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".pack"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// The shared fixtures (built on first use).
pub fn fixtures() -> &'static Fixtures {
    static CELL: OnceLock<Fixtures> = OnceLock::new();
    CELL.get_or_init(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        include_str!("fixtures.rs").hash(&mut h);
        let key = format!("{:016x}", h.finish());
        let root = std::env::temp_dir().join(format!("goprox-e2e-fixtures-{key}"));
        if !root.join(".complete").is_file() {
            let staging = std::env::temp_dir().join(format!(
                "goprox-e2e-fixtures-{key}.tmp-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&staging);
            let t0 = std::time::Instant::now();
            build_all(&staging);
            std::fs::write(staging.join(".complete"), b"ok\n").expect("write marker");
            if std::fs::rename(&staging, &root).is_err() {
                // Someone else won the race (or a stale incomplete dir is in the way).
                if root.join(".complete").is_file() {
                    super::remove_tree(&staging);
                } else {
                    super::remove_tree(&root);
                    std::fs::rename(&staging, &root).expect("rename fixtures into place");
                }
            }
            remove_stale_caches(&key);
            eprintln!("built fixtures in {:?} at {}", t0.elapsed(), root.display());
        }
        Fixtures { root }
    })
}

/// Remove fixture caches left by older versions of this file (same prefix, other key).
fn remove_stale_caches(key: &str) {
    let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(k) = name.strip_prefix("goprox-e2e-fixtures-")
            && k.len() == 16
            && k.chars().all(|c| c.is_ascii_hexdigit())
            && k != key
        {
            super::remove_tree(&e.path());
        }
    }
}

/// Deterministic incompressible bytes (splitmix64).
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        out.extend_from_slice(&z.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A non-bare work repository with a deterministic clock: every git call advances it 61 s.
struct Work {
    dir: PathBuf,
    home: PathBuf,
    clock: u64,
}

impl Work {
    fn init(dir: &Path, home: &Path, branch: &str) -> Work {
        std::fs::create_dir_all(dir).expect("mkdir work");
        let mut w = Work {
            dir: dir.to_path_buf(),
            home: home.to_path_buf(),
            clock: 1_600_000_000,
        };
        w.git(&["init", "-q", "-b", branch]);
        w
    }

    fn git(&mut self, args: &[&str]) -> String {
        self.clock += 61;
        let date = format!("@{} +0000", self.clock);
        let mut c = Command::new("git");
        c.current_dir(&self.dir)
            .args([
                "-c",
                "advice.nestedTag=false",
                "-c",
                "advice.detachedHead=false",
            ])
            .args(args)
            .env_clear()
            .env("PATH", super::path_var())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "Fixture Author")
            .env("GIT_AUTHOR_EMAIL", "author@example.test")
            .env("GIT_COMMITTER_NAME", "Fixture Committer")
            .env("GIT_COMMITTER_EMAIL", "committer@example.test")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .env("TZ", "UTC")
            .env("LC_ALL", "C");
        super::run(&mut c, None, Duration::from_secs(300))
            .check()
            .stdout_str()
            .trim()
            .to_string()
    }

    fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, data).expect("write file");
    }

    fn commit(&mut self, msg: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// Copy the work repo into `<root>/<name>` as a bare repository with all refs, one pack.
    fn publish(&mut self, root: &Path, name: &str, head: &str) {
        let dest = root.join(name);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let src = self.dir.to_string_lossy().into_owned();
        let dst = dest.to_string_lossy().into_owned();
        self.git(&[
            "clone",
            "-q",
            "--mirror",
            "--no-local",
            "--no-hardlinks",
            &src,
            &dst,
        ]);
        let b = |w: &mut Work, args: &[&str]| {
            let mut a = vec!["--git-dir", dst.as_str()];
            a.extend_from_slice(args);
            w.git(&a)
        };
        b(self, &["config", "--remove-section", "remote.origin"]);
        b(self, &["symbolic-ref", "HEAD", head]);
        b(
            self,
            &[
                "repack",
                "-q",
                "-a",
                "-d",
                "-f",
                "--window=50",
                "--depth=50",
            ],
        );
        b(self, &["pack-refs", "--all"]);
        b(self, &["fsck", "--strict", "--full", "--no-progress"]);
    }
}

fn lines(seed: usize, n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "line {i:04} of seed {seed}: {}\n",
                "lorem ipsum ".repeat(i % 7 + 1)
            )
        })
        .collect()
}

fn build_all(root: &Path) {
    std::fs::create_dir_all(root).expect("mkdir fixture root");
    let work = root.join(".work");
    let home = root.join(".home");
    std::fs::create_dir_all(&home).expect("mkdir home");
    build_rich(&work.join("rich"), &home, root);
    build_big(&work.join("big"), &home, root);
    build_go_module(
        &work.join("vmod"),
        &home,
        root,
        "vmod",
        "example.test/vmod",
        &[("v1.0.0", true), ("v1.1.0", false)],
    );
    build_go_module(
        &work.join("widget"),
        &home,
        root,
        "gh/acme/widget",
        "github.com/acme/widget",
        &[("v1.2.3", true)],
    );
    // Empty bare repo.
    let mut c = Command::new("git");
    c.args(["init", "-q", "--bare", "-b", "main"])
        .arg(root.join("empty"))
        .env_clear()
        .env("PATH", super::path_var())
        .env("HOME", &home)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    super::run(&mut c, None, Duration::from_secs(60)).check();
    super::remove_tree(&work);
    super::remove_tree(&home);
}

fn build_rich(dir: &Path, home: &Path, root: &Path) {
    let mut w = Work::init(dir, home, "trunk");
    let mut small = pseudo_random(1, 64 << 10);
    let mut large = pseudo_random(2, 5 * (1 << 20) + (1 << 19));
    let mut lib = lines(0, 200);
    let mut trunk = Vec::new();

    // c1: a bit of everything.
    w.write("README.md", "# rich\n\nA fixture repository.\n");
    w.write("src/lib.txt", &lib);
    w.write("bin/small.bin", &small);
    w.write("docs/a/b/c/deep.txt", lines(1, 20));
    w.write("empty.txt", "");
    w.write("script.sh", "#!/bin/sh\necho hello\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("script.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod script.sh");
    }
    std::os::unix::fs::symlink("README.md", dir.join("link-to-readme")).expect("symlink");
    trunk.push(w.commit("c1: initial import"));
    let c1_readme_blob = w.git(&["rev-parse", "HEAD:README.md"]);

    let edit_lib = |lib: &mut String, i: usize| {
        let mut ls: Vec<String> = lib.lines().map(str::to_string).collect();
        let at = (i * 37) % ls.len();
        ls[at] = format!(
            "edited in step {i}: {}",
            "dolor sit amet ".repeat(i % 5 + 1)
        );
        ls.push(format!("appended in step {i}"));
        *lib = ls.join("\n") + "\n";
    };

    for i in 2..=9 {
        edit_lib(&mut lib, i);
        w.write("src/lib.txt", &lib);
        if i % 3 == 0 {
            for b in &mut small[i * 100..i * 100 + 50] {
                *b = b.wrapping_add(i as u8);
            }
            w.write("bin/small.bin", &small);
        }
        if i == 4 {
            w.write("bin/large.bin", &large);
        }
        if i == 6 {
            w.git(&["mv", "docs/a/b/c/deep.txt", "docs/deep.txt"]);
        }
        if i == 7 {
            w.git(&["rm", "-q", "empty.txt"]);
        }
        trunk.push(w.commit(&format!("c{i}: step {i}")));
        if i == 3 {
            w.git(&["branch", "master"]);
        }
        if i == 5 {
            w.git(&["tag", "v0.1.0"]);
        }
    }

    // feature-a off c9, merged with --no-ff after three trunk commits.
    w.git(&["checkout", "-q", "-b", "feature-a"]);
    for j in 1..=3 {
        w.write("feature-a.txt", lines(100 + j, 10 + j));
        w.commit(&format!("feature-a {j}"));
    }
    w.git(&["checkout", "-q", "trunk"]);
    for i in 10..=12 {
        edit_lib(&mut lib, i);
        w.write("src/lib.txt", &lib);
        trunk.push(w.commit(&format!("c{i}: step {i}")));
    }
    w.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "c13: merge feature-a",
        "feature-a",
    ]);
    trunk.push(w.git(&["rev-parse", "HEAD"]));
    let c10_tree = w.git(&["rev-parse", &format!("{}^{{tree}}", trunk[9])]);

    // feature-b and feature-c, merged together (octopus).
    for name in ["feature-b", "feature-c"] {
        w.git(&["checkout", "-q", "-b", name, "trunk"]);
        for j in 1..=2 {
            w.write(&format!("{name}/file{j}.txt"), lines(200 + j, 15));
            w.commit(&format!("{name} {j}"));
        }
    }
    w.git(&["checkout", "-q", "trunk"]);
    for i in 14..=15 {
        edit_lib(&mut lib, i);
        w.write("src/lib.txt", &lib);
        trunk.push(w.commit(&format!("c{i}: step {i}")));
    }
    w.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "c16: octopus",
        "feature-b",
        "feature-c",
    ]);
    trunk.push(w.git(&["rev-parse", "HEAD"]));

    // release-1.x diverges and is never merged; its tag is not reachable from trunk.
    w.git(&["checkout", "-q", "-b", "release-1.x"]);
    for j in 1..=3 {
        w.write("RELEASE.txt", lines(300 + j, 5 + j));
        w.commit(&format!("release-1.x {j}"));
    }
    w.git(&["tag", "-a", "-m", "release candidate", "v1.1.0-rc1"]);
    w.git(&["checkout", "-q", "trunk"]);

    for i in 17..=22 {
        edit_lib(&mut lib, i);
        w.write("src/lib.txt", &lib);
        if i == 20 {
            for b in &mut large[3_000_000..3_001_000] {
                *b ^= 0x5a;
            }
            large.extend_from_slice(b"tail added in c20\n");
            w.write("bin/large.bin", &large);
        }
        trunk.push(w.commit(&format!("c{i}: step {i}")));
        if i == 20 {
            w.git(&["tag", "-a", "-m", "version 1.0.0", "v1.0.0"]);
            w.git(&["tag", "-a", "-m", "tag of a tag", "v1.0.0-signed", "v1.0.0"]);
        }
    }

    // feature-d, merged right back.
    w.git(&["checkout", "-q", "-b", "feature-d"]);
    for j in 1..=2 {
        w.write("feature-d.txt", lines(400 + j, 8));
        w.commit(&format!("feature-d {j}"));
    }
    w.git(&["checkout", "-q", "trunk"]);
    w.git(&[
        "merge",
        "-q",
        "--no-ff",
        "-m",
        "c23: merge feature-d",
        "feature-d",
    ]);
    trunk.push(w.git(&["rev-parse", "HEAD"]));

    // A pull-request ref whose commit only it reaches.
    w.git(&["checkout", "-q", "-b", "pr-1"]);
    w.write("pr.txt", "proposed change\n");
    let pr = w.commit("pr-1: proposal");
    w.git(&["checkout", "-q", "trunk"]);
    w.git(&["update-ref", "refs/pull/1/head", &pr]);
    w.git(&["branch", "-q", "-D", "pr-1"]);

    // Linear tail.
    for i in 24..=(23 + RICH_LINEAR_TAIL) {
        edit_lib(&mut lib, i);
        w.write("src/lib.txt", &lib);
        if i % 4 == 0 {
            w.write(&format!("more/file{i}.txt"), lines(500 + i, 30));
        }
        trunk.push(w.commit(&format!("c{i}: step {i}")));
        if i == 30 {
            w.git(&["tag", "-a", "-m", "version 2.0.0", "v2.0.0"]);
            w.git(&["notes", "add", "-m", "a note on c30", "HEAD"]);
        }
    }
    w.git(&["tag", "latest"]);
    w.git(&["tag", "blob-tag", &c1_readme_blob]);
    w.git(&["tag", "-a", "-m", "a tag of a tree", "tree-tag", &c10_tree]);
    assert!(trunk.len() >= 30, "rich trunk has {} commits", trunk.len());
    w.publish(root, "rich", "refs/heads/trunk");
}

fn build_big(dir: &Path, home: &Path, root: &Path) {
    let mut w = Work::init(dir, home, "main");
    for i in 1..=3u64 {
        w.write(&format!("blob{i}.bin"), pseudo_random(1000 + i, 8 << 20));
        w.commit(&format!("big {i}"));
    }
    w.publish(root, "big", "refs/heads/main");
}

fn build_go_module(
    dir: &Path,
    home: &Path,
    root: &Path,
    name: &str,
    module: &str,
    tags: &[(&str, bool)],
) {
    let mut w = Work::init(dir, home, "main");
    let pkg = module.rsplit('/').next().expect("pkg name");
    w.write("go.mod", format!("module {module}\n\ngo 1.19\n"));
    w.write(
        "sub/sub.go",
        "package sub\n\n// Name is used by the go-get meta tests.\nconst Name = \"sub\"\n",
    );
    for (tag, annotated) in tags {
        w.write(
            &format!("{pkg}.go"),
            format!(
                "// Package {pkg} is a fixture module.\npackage {pkg}\n\n// Version returns the release.\nfunc Version() string {{ return \"{tag}\" }}\n"
            ),
        );
        w.commit(&format!("release {tag}"));
        if *annotated {
            w.git(&["tag", "-a", "-m", &format!("release {tag}"), tag]);
        } else {
            w.git(&["tag", tag]);
        }
    }
    w.write("NEXT.md", "work after the last release\n");
    w.commit("post-release work");
    w.publish(root, name, "refs/heads/main");
}
