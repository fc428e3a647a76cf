//! Go module fixtures: small git repositories with fixed commit dates, built with the real
//! `git` and published bare under a root that an upstream server serves; and the go command's
//! version.

use super::TempDir;
use std::path::Path;
use std::process::Command;

/// The go command's version as (major, minor), if it runs.
pub fn go_version() -> Option<(u32, u32)> {
    let out = Command::new("go")
        .arg("env")
        .arg("GOVERSION")
        .env("GOTOOLCHAIN", "local")
        .env("HOME", std::env::temp_dir())
        .output()
        .ok()?;
    let v = String::from_utf8(out.stdout).ok()?;
    let mut it = v.trim().strip_prefix("go")?.split('.');
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// A working repository whose commits have fixed dates, published bare under a root.
pub struct Work {
    /// The working tree.
    pub dir: std::path::PathBuf,
    home: std::path::PathBuf,
    clock: i64,
}

impl Work {
    pub fn new(tmp: &TempDir, name: &str) -> Work {
        let dir = tmp.join("work").join(name);
        let home = tmp.join("home");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::create_dir_all(&home).expect("mkdir");
        let w = Work {
            dir,
            home,
            clock: 1_577_836_800, // 2020-01-01
        };
        w.git(&["init", "-q", "-b", "main"]);
        w
    }

    pub fn git(&self, args: &[&str]) -> String {
        let date = format!("@{} +0000", self.clock);
        let out = Command::new("git")
            .current_dir(&self.dir)
            .args([
                "-c",
                "user.name=Mod Test",
                "-c",
                "user.email=mod@example.test",
            ])
            .args(args)
            .env_clear()
            .env("PATH", super::path_var())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_DATE", &date)
            .env("GIT_COMMITTER_DATE", &date)
            .output()
            .expect("run git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn write(&self, rel: &str, data: impl AsRef<[u8]>) {
        let p = self.dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, data).expect("write");
    }

    pub fn symlink(&self, target: &str, rel: &str) {
        std::os::unix::fs::symlink(target, self.dir.join(rel)).expect("symlink");
    }

    /// Commit everything, one day after the previous commit; returns the commit id.
    pub fn commit(&mut self, msg: &str) -> String {
        self.clock += 86_400 * 31;
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", msg]);
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn publish(&self, root: &Path, name: &str) {
        let dest = root.join(name);
        let out = Command::new("git")
            .args(["clone", "-q", "--bare"])
            .arg(&self.dir)
            .arg(&dest)
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("clone --bare");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
