//! A repository that changes during a test: a work tree pushed to a bare repository that the
//! upstream server serves as `example.test/live`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::TempDir;
use super::git::GitEnv;

/// A repository that changes during the test: a work tree, pushed to a bare repository that
/// the upstream server serves as `example.test/live`.
pub struct Live {
    pub env: GitEnv,
    pub work: PathBuf,
    pub bare: PathBuf,
    n: std::cell::Cell<u32>,
}

impl Live {
    pub fn new(tmp: &TempDir) -> Live {
        let env = GitEnv::new();
        let work = tmp.join("work");
        let bare = tmp.join("up/live");
        std::fs::create_dir_all(&work).expect("mkdir");
        let l = Live {
            env,
            work,
            bare,
            n: std::cell::Cell::new(0),
        };
        l.git(&["init", "-q", "-b", "main"]);
        std::fs::write(
            l.work.join("go.mod"),
            "module example.test/live\n\ngo 1.19\n",
        )
        .expect("write go.mod");
        l.commit("first");
        l.git(&["tag", "-a", "-m", "v1.0.0", "v1.0.0"]);
        l.git(&["tag", "light"]);
        let parent = l.bare.parent().expect("parent").to_path_buf();
        std::fs::create_dir_all(&parent).expect("mkdir");
        l.env.run(
            &parent,
            &[
                "clone",
                "-q",
                "--bare",
                &l.work.to_string_lossy(),
                &l.bare.to_string_lossy(),
            ],
        );
        l
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.env.run(&self.work, args).trim().to_string()
    }

    /// A new commit on the current branch; returns its id.
    pub fn commit(&self, msg: &str) -> String {
        let n = self.n.get() + 1;
        self.n.set(n);
        std::fs::write(
            self.work.join("live.go"),
            format!("package live\n\n// N is {n}.\nconst N = {n}\n"),
        )
        .expect("write");
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    /// `git push --force` of `refspecs` to the upstream's bare repository.
    pub fn push(&self, refspecs: &[&str]) {
        let bare = self.bare.to_string_lossy().into_owned();
        let mut args = vec!["push", "-q", "--force", bare.as_str()];
        args.extend_from_slice(refspecs);
        self.git(&args);
    }

    /// A new commit adding `bytes` of incompressible data in a new file; returns its id.
    pub fn commit_big(&self, msg: &str, bytes: usize) -> String {
        let n = self.n.get() + 1;
        std::fs::write(
            self.work.join(format!("blob-{n}.bin")),
            super::fixtures::pseudo_random(u64::from(n) * 7919, bytes),
        )
        .expect("write");
        self.commit(msg)
    }

    pub fn upstream_ref(&self, name: &str) -> String {
        self.env
            .run(&self.bare, &["rev-parse", name])
            .trim()
            .to_string()
    }
}

/// `ls-remote` through goprox, as `name -> oid`.
pub fn ls_remote(env: &GitEnv, url: &str) -> std::collections::BTreeMap<String, String> {
    env.ls_remote(2, url)
        .lines()
        .filter_map(|l| {
            let (oid, name) = l.split_once('\t')?;
            Some((name.to_string(), oid.to_string()))
        })
        .collect()
}

pub fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
