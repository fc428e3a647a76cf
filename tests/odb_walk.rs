//! The object database and negotiator against real git: a repository built with the `git`
//! binary is packed, indexed with goprox's fill indexer, put in a memory store, and the object
//! sets goprox computes are compared with `git rev-list --objects`; the packs goprox writes are
//! checked with `git index-pack` and `git fsck`.

use gix_hash::ObjectId;
use goprox::fill::fetch::index_pack;
use goprox::odb::pack::Pack;
use goprox::odb::walk::{Deepen, PackPlan, Walker};
use goprox::odb::{Io, Odb, writer};
use goprox::store::{DynStore, PutMode, memory::MemoryStore};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// `git` in `dir` with an isolated configuration and a fixed identity.
fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.test")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.test");
    c
}

fn run(mut c: Command) -> String {
    let out = c.output().expect("run git");
    assert!(
        out.status.success(),
        "{c:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let mut c = git_cmd(dir);
    c.args(args);
    run(c)
}

fn git_available() -> bool {
    let ok = Command::new("git")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok && std::env::var("GOPROX_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("git is required (GOPROX_REQUIRE_TOOLS=1)");
    }
    ok
}

struct Fixture {
    dir: PathBuf,
    odb: Odb,
    _rt: tokio::runtime::Runtime,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn commit_at(dir: &Path, i: u32, msg: &str) {
    let date = format!("{} +0000", 1_600_000_000 + i * 3600);
    let mut c = git_cmd(dir);
    c.args(["commit", "-q", "-m", msg])
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_DATE", &date);
    run(c);
}

/// A fresh scratch directory for a fixture repository.
fn scratch() -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("goprox-odbwalk-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("mkdir");
    dir
}

/// 40 commits on `main` with a merged side branch, a tag of a tag, deltas between versions.
fn fixture() -> Fixture {
    let dir = scratch();
    git(&dir, &["init", "-q", "-b", "main"]);
    let mut text = String::new();
    for i in 0..40u32 {
        for l in 0..40 {
            text.push_str(&format!("line {l} of revision {i}\n"));
        }
        std::fs::write(dir.join("big.txt"), &text).expect("write");
        std::fs::create_dir_all(dir.join(format!("d{}", i % 4))).expect("mkdir");
        std::fs::write(
            dir.join(format!("d{}/f{i}.txt", i % 4)),
            format!("file {i}\n"),
        )
        .expect("write");
        git(&dir, &["add", "-A"]);
        commit_at(&dir, i, &format!("c{i}"));
        if i == 20 {
            git(&dir, &["checkout", "-q", "-b", "side", "HEAD~3"]);
            std::fs::write(dir.join("side.txt"), "side\n").expect("write");
            git(&dir, &["add", "-A"]);
            commit_at(&dir, 100, "side");
            git(&dir, &["checkout", "-q", "main"]);
            git(&dir, &["merge", "-q", "--no-edit", "side"]);
        }
    }
    git(&dir, &["tag", "-a", "-m", "one", "v1", "HEAD~10"]);
    git(&dir, &["tag", "-a", "-m", "outer", "v1-outer", "v1"]);
    git(&dir, &["tag", "light", "HEAD~2"]);
    load(dir)
}

/// `git repack -ad` the repository at `dir` and open its pack as an [`Odb`] over a memory store.
fn load(dir: PathBuf) -> Fixture {
    git(&dir, &["repack", "-adq"]);
    let packdir = dir.join(".git/objects/pack");
    let pack_path = std::fs::read_dir(&packdir)
        .expect("pack dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "pack"))
        .expect("a pack");
    let pack = std::fs::read(pack_path).expect("read pack");
    let indexed = index_pack(&pack).expect("index pack");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let store: DynStore = Arc::new(MemoryStore::default());
    let key = format!("r/pack-{}.pack", indexed.name);
    rt.block_on(store.put(&key, pack.clone().into(), PutMode::CreateOnly))
        .expect("put");
    let p = Pack::from_index_bytes(
        indexed.name.clone(),
        Arc::from(key.as_str()),
        pack.len() as u64,
        indexed.idx,
    )
    .expect("pack");
    let io = Arc::new(Io::new(store, rt.handle().clone(), 8 << 20));
    Fixture {
        dir,
        odb: Odb::new(vec![Arc::new(p)], io),
        _rt: rt,
    }
}

fn oid(s: &str) -> ObjectId {
    ObjectId::from_hex(s.trim().as_bytes()).expect("oid")
}

fn rev_list(dir: &Path, args: &[&str]) -> BTreeSet<ObjectId> {
    let mut a = vec!["rev-list", "--objects"];
    a.extend_from_slice(args);
    git(dir, &a)
        .lines()
        .map(|l| oid(l.split(' ').next().unwrap_or_default()))
        .collect()
}

/// Write a pack of `ids` with goprox and index it with git in a fresh repository.
/// `strict`: the pack is closed under reachability (a full clone), so git can check links.
fn check_pack_with_git(f: &Fixture, ids: &[ObjectId], name: &str, strict: bool) {
    let plan = writer::plan(&f.odb, ids).expect("plan");
    let mut out = Vec::new();
    let stats =
        writer::write_pack(&f.odb, &plan, Default::default(), &mut out).expect("write pack");
    assert_eq!(stats.objects as usize, ids.len());
    let dest = f.dir.join(name);
    std::fs::create_dir_all(&dest).expect("mkdir");
    git(&dest, &["init", "-q", "--bare"]);
    let args: &[&str] = if strict {
        &["index-pack", "--stdin", "--strict"]
    } else {
        &["index-pack", "--stdin"]
    };
    index_pack_with_git(&dest, args, &out);
}

/// Feed `pack` to `git ARGS` (an `index-pack --stdin ...`) in `dir`; panic unless it succeeds.
fn index_pack_with_git(dir: &Path, args: &[&str], pack: &[u8]) {
    use std::io::Write;
    let mut child = git_cmd(dir)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("index-pack");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(pack)
        .expect("feed pack");
    let res = child.wait_with_output().expect("index-pack");
    assert!(
        res.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn negotiator_matches_git_rev_list() {
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    let f = fixture();
    let dir = f.dir.clone();
    let all_refs: Vec<ObjectId> = git(&dir, &["for-each-ref", "--format=%(objectname)"])
        .lines()
        .map(oid)
        .collect();
    let mut w = Walker::new(&f.odb);

    // Full clone: every object of every ref.
    let full: BTreeSet<ObjectId> = w
        .objects_to_send(&PackPlan {
            wants: &all_refs,
            ..Default::default()
        })
        .expect("count")
        .ids
        .into_iter()
        .collect();
    assert_eq!(full, rev_list(&dir, &["--all"]));
    check_pack_with_git(
        &f,
        &full.iter().copied().collect::<Vec<_>>(),
        "full.git",
        true,
    );

    // Incremental: main with the client at main~7 (crossing the merge).
    let tip = oid(&git(&dir, &["rev-parse", "main"]));
    let old = oid(&git(&dir, &["rev-parse", "main~7"]));
    let inc_sent = w
        .objects_to_send(&PackPlan {
            wants: &[tip],
            haves: &[old],
            ..Default::default()
        })
        .expect("count");
    let inc: BTreeSet<ObjectId> = inc_sent.ids.iter().copied().collect();
    let expect = rev_list(&dir, &["main", "^main~7"]);
    assert_eq!(
        inc, expect,
        "incremental object set differs from git rev-list --objects main ^main~7"
    );
    assert!(inc.len() < full.len());

    // The same as a thin pack: deltas against what the client has stay deltas (REF_DELTA);
    // git completes it from the objects it has (`--fix-thin` in the full repository).
    let thin_bases = inc_sent.client_has.clone();
    assert!(!thin_bases.is_empty());
    let ids: Vec<ObjectId> = inc.iter().copied().collect();
    let plan = writer::plan(&f.odb, &ids).expect("plan");
    let mut thin = Vec::new();
    let opts = writer::WriteOptions {
        ofs_delta: true,
        thin_bases: Some(&thin_bases),
        ..Default::default()
    };
    let stats = writer::write_pack(&f.odb, &plan, opts, &mut thin).expect("thin pack");
    eprintln!("thin pack: {stats:?}");
    index_pack_with_git(
        &dir,
        &["index-pack", "--stdin", "--fix-thin", "--strict"],
        &thin,
    );

    // include-tag: asking for main~10 with include-tag brings v1 and v1-outer.
    let v1 = oid(&git(&dir, &["rev-parse", "v1"]));
    let outer = oid(&git(&dir, &["rev-parse", "v1-outer"]));
    let c10 = oid(&git(&dir, &["rev-parse", "main~10"]));
    let tags = [(outer, c10), (v1, c10)];
    let with_tags = w
        .objects_to_send(&PackPlan {
            wants: &[c10],
            include_tags: &tags,
            ..Default::default()
        })
        .expect("count")
        .ids;
    assert!(with_tags.contains(&v1) && with_tags.contains(&outer));
    check_pack_with_git(&f, &with_tags, "tags.git", false);

    // Depth 1: the boundary is the want itself.
    let s = w
        .shallow(
            &[tip],
            &[],
            &Deepen {
                depth: Some(1),
                ..Default::default()
            },
        )
        .expect("shallow");
    assert_eq!(s.shallow, vec![tip]);
    let shallow_set = w
        .objects_to_send(&PackPlan {
            wants: &[tip],
            grafts: Some(&s.grafts),
            ..Default::default()
        })
        .expect("count")
        .ids;
    let tree = oid(&git(&dir, &["rev-parse", "main^{tree}"]));
    let expect_depth1: BTreeSet<ObjectId> = rev_list(&dir, &["--no-walk", "main"]);
    assert!(shallow_set.contains(&tree));
    assert_eq!(
        shallow_set.iter().copied().collect::<BTreeSet<_>>(),
        expect_depth1
    );
    check_pack_with_git(&f, &shallow_set, "shallow.git", false);

    // Deepen by 3 more from the depth-1 boundary: the old boundary is unshallowed.
    let d = w
        .shallow(
            &[tip],
            &[tip],
            &Deepen {
                depth: Some(3),
                relative: true,
                ..Default::default()
            },
        )
        .expect("deepen");
    assert_eq!(d.unshallow, vec![tip]);
    assert!(!d.shallow.is_empty());
    for b in &d.shallow {
        let n: usize = git(
            &dir,
            &[
                "rev-list",
                "--count",
                &format!("{tip}...{b}"),
                "--left-only",
                "--ancestry-path",
            ],
        )
        .trim()
        .parse()
        .unwrap_or(0);
        assert!(n <= 4, "boundary {b} too deep ({n})");
    }

    // ok_to_give_up: main reaches main~7.
    let common = [old].into_iter().collect();
    assert!(w.all_wants_reach(&[tip], &common).expect("reach"));
    let side = oid(&git(&dir, &["rev-parse", "side"]));
    let later = [tip].into_iter().collect();
    assert!(!w.all_wants_reach(&[old], &later).expect("reach"));
    let _ = side;
}

#[test]
fn blob_limit_matches_git_rev_list() {
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    let f = fixture();
    let all_refs: Vec<ObjectId> = git(&f.dir, &["for-each-ref", "--format=%(objectname)"])
        .lines()
        .map(oid)
        .collect();
    // `big.txt` grows by 40 lines per revision and is stored as deltas: the limit falls in the
    // middle of its versions, whose sizes come from the deltas' headers.
    // And a limit equal to a blob's exact size: git leaves out blobs of *at least* the limit.
    let exact: u64 = git(&f.dir, &["cat-file", "-s", "HEAD:big.txt"])
        .trim()
        .parse()
        .expect("size");
    for limit in [0u64, 1000, 10_000, 30_000, exact] {
        let mut w = Walker::new(&f.odb);
        let got: BTreeSet<ObjectId> = w
            .objects_to_send(&PackPlan {
                wants: &all_refs,
                filter: Some(goprox::odb::walk::Filter::BlobLimit(limit)),
                ..Default::default()
            })
            .expect("count")
            .ids
            .into_iter()
            .collect();
        let want = rev_list(&f.dir, &["--all", &format!("--filter=blob:limit={limit}")]);
        assert_eq!(got, want, "blob:limit={limit}");
    }
}

#[test]
fn corrupted_stored_entry_fails_loudly() {
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    let f = fixture();
    let pack = &f.odb.packs[0];
    // Flip one byte in the middle of the pack (inside some entry's compressed data).
    let rt = &f.odb.io.rt;
    let store = f.odb.io.store.clone();
    let mut bytes = rt
        .block_on(store.get(&pack.key))
        .expect("get")
        .expect("pack present")
        .data
        .to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    rt.block_on(store.put(&pack.key, bytes.into(), PutMode::Overwrite))
        .expect("overwrite");
    // A fresh cache, so the corrupted bytes are what is read.
    let io = Arc::new(Io::new(store, rt.clone(), 8 << 20));
    let odb = Odb::new(f.odb.packs.clone(), io);
    let ids: Vec<ObjectId> = pack.oids().collect();
    let plan = writer::plan(&odb, &ids).expect("plan");
    let err = writer::write_pack(&odb, &plan, Default::default(), &mut std::io::sink())
        .expect_err("a corrupted entry was sent");
    let msg = err.to_string();
    assert!(
        msg.contains("CRC mismatch") || msg.contains("corrupt") || msg.contains("inflate"),
        "unexpected error: {msg}"
    );
    let err = writer::write_whole_packs(&odb, &mut std::io::sink())
        .expect_err("a corrupted pack was streamed whole");
    assert!(err.to_string().contains("CRC mismatch"), "{err}");
}

#[test]
fn fetch_updating_many_branches_matches_git() {
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    // 40 branches, each with its own big file; each branch then gets one commit that edits its
    // file slightly. A client that has every old tip fetches every new one: every old tip is an
    // edge, and the new blobs are the only new objects besides commits and trees.
    let dir = scratch();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("README"), "base\n").expect("write");
    git(&dir, &["add", "-A"]);
    commit_at(&dir, 0, "base");
    let mut old = Vec::new();
    let mut new = Vec::new();
    for b in 0..40u32 {
        git(&dir, &["checkout", "-q", "-b", &format!("b{b}"), "main"]);
        let text: String = (0..200).map(|l| format!("branch {b} line {l}\n")).collect();
        std::fs::write(dir.join(format!("f{b}.txt")), &text).expect("write");
        // A file of this branch alone, left unchanged: the client has it through this
        // branch's old tip only, so it must not be sent again.
        std::fs::write(
            dir.join(format!("g{b}.txt")),
            format!("kept {b}\n").repeat(50),
        )
        .expect("write");
        git(&dir, &["add", "-A"]);
        commit_at(&dir, 1 + b, &format!("b{b} one"));
        old.push(oid(&git(&dir, &["rev-parse", "HEAD"])));
        std::fs::write(
            dir.join(format!("f{b}.txt")),
            format!("{text}one more line\n"),
        )
        .expect("write");
        git(&dir, &["add", "-A"]);
        commit_at(&dir, 100 + b, &format!("b{b} two"));
        new.push(oid(&git(&dir, &["rev-parse", "HEAD"])));
    }
    git(&dir, &["checkout", "-q", "main"]);
    let f = load(dir);
    let mut w = Walker::new(&f.odb);
    let got: BTreeSet<ObjectId> = w
        .objects_to_send(&PackPlan {
            wants: &new,
            haves: &old,
            ..Default::default()
        })
        .expect("count")
        .ids
        .into_iter()
        .collect();
    let mut args: Vec<String> = new.iter().map(|o| o.to_string()).collect();
    args.push("--not".into());
    args.extend(old.iter().map(|o| o.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = rev_list(&f.dir, &refs);
    assert_eq!(
        got.len(),
        want.len(),
        "goprox sends {} objects, git {}",
        got.len(),
        want.len()
    );
    assert_eq!(got, want);
}

/// Objects whose stored delta cannot be reused (its base is not sent) get a new delta
/// against an object of the same name that is sent, instead of going out whole: fewer bytes,
/// and git accepts the pack (`index-pack --strict`, every object id checked).
#[test]
fn delta_search_replaces_unusable_stored_deltas() {
    if !git_available() {
        return;
    }
    let f = fixture();
    // The 20 oldest versions of big.txt: git stores older versions as deltas against newer
    // ones, which are not sent here.
    let commits = git(
        &f.dir,
        &["log", "--format=%H", "--reverse", "--", "big.txt"],
    );
    let mut ids: Vec<ObjectId> = commits
        .lines()
        .take(20)
        .map(|c| oid(&git(&f.dir, &["rev-parse", &format!("{c}:big.txt")])))
        .collect();
    ids.dedup();
    let plan = writer::plan(&f.odb, &ids).expect("plan");
    let write = |names: Option<&std::collections::HashMap<ObjectId, u32>>| {
        let mut out = Vec::new();
        let opts = writer::WriteOptions {
            names,
            ..Default::default()
        };
        let stats = writer::write_pack(&f.odb, &plan, opts, &mut out).expect("write pack");
        (stats, out)
    };
    let (plain, plain_pack) = write(None);
    let h = goprox::odb::walk::name_hash(b"big.txt");
    let names = ids.iter().map(|id| (*id, h)).collect();
    let (searched, pack) = write(Some(&names));
    eprintln!(
        "without delta search: {plain:?}\nwith delta search:    {searched:?}\n{} -> {} bytes",
        plain_pack.len(),
        pack.len()
    );
    assert!(
        plain.recompressed > 0,
        "the fixture must have unusable deltas"
    );
    assert!(searched.new_deltas > 0, "{searched:?}");
    // At least a quarter smaller (git's own repack of the fixture is multi-threaded, so which
    // deltas are unusable varies a little from run to run: 40-50 % smaller in practice).
    assert!(
        pack.len() * 4 < plain_pack.len() * 3,
        "{} bytes with delta search, {} without",
        pack.len(),
        plain_pack.len()
    );
    let dest = f.dir.join("delta-search");
    std::fs::create_dir_all(&dest).expect("mkdir");
    git(&dest, &["init", "-q", "--bare"]);
    index_pack_with_git(&dest, &["index-pack", "--stdin", "--strict"], &pack);
    for id in &ids {
        let got = git(&dest, &["cat-file", "-p", &id.to_string()]);
        let want = git(&f.dir, &["cat-file", "-p", &id.to_string()]);
        assert_eq!(got, want, "object {id}");
    }
}

#[test]
fn tree_of_a_walked_client_commit_is_not_sent() {
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    // The client has H (A - X - H). New: B (an old-dated topic commit on A), N = merge(H, B),
    // R = N with X's tree restored. The date-ordered walk passes X (the client's, not an
    // edge) before it reaches B; R's root tree is X's. git without bitmaps sends that tree
    // again (it only knows the edges' trees); with bitmaps, and goprox, it is left out.
    let dir = scratch();
    git(&dir, &["init", "-q", "-b", "main"]);
    let file = |name: &str, text: &str| std::fs::write(dir.join(name), text).expect("write");
    file("a.txt", "a\n");
    git(&dir, &["add", "-A"]);
    commit_at(&dir, 10, "A");
    file("x.txt", "x\n");
    git(&dir, &["add", "-A"]);
    commit_at(&dir, 20, "X");
    let x = git(&dir, &["rev-parse", "HEAD"]);
    file("h.txt", "h\n");
    git(&dir, &["add", "-A"]);
    commit_at(&dir, 50, "H");
    let h = oid(&git(&dir, &["rev-parse", "HEAD"]));
    git(&dir, &["checkout", "-q", "-b", "topic", "HEAD~2"]);
    file("b.txt", "b\n");
    git(&dir, &["add", "-A"]);
    commit_at(&dir, 15, "B");
    git(&dir, &["checkout", "-q", "main"]);
    git(&dir, &["merge", "-q", "--no-ff", "--no-commit", "topic"]);
    commit_at(&dir, 60, "N");
    git(&dir, &["read-tree", "-u", "--reset", x.trim()]);
    commit_at(&dir, 70, "R");
    let r = oid(&git(&dir, &["rev-parse", "HEAD"]));
    let tx = oid(&git(
        &dir,
        &["rev-parse", &format!("{}^{{tree}}", x.trim())],
    ));
    assert_eq!(oid(&git(&dir, &["rev-parse", "HEAD^{tree}"])), tx);
    let f = load(dir);

    let mut w = Walker::new(&f.odb);
    let got: BTreeSet<ObjectId> = w
        .objects_to_send(&PackPlan {
            wants: &[r],
            haves: &[h],
            ..Default::default()
        })
        .expect("count")
        .ids
        .into_iter()
        .collect();
    let mut want = rev_list(&f.dir, &[&r.to_string(), "--not", &h.to_string()]);
    assert!(want.remove(&tx), "git sends the restored tree: {want:?}");
    assert_eq!(got, want);
}

/// A reader that hands out at most `step` bytes per call (buffer boundaries everywhere).
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl std::io::Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.step.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// The streaming indexer writes the same `.idx` as `git index-pack`, byte for byte, whatever
/// its cache budget (0: every delta is resolved by the second, stored-pack pass) and however
/// the stream is cut, for OFS_DELTA and REF_DELTA packs; the bytes it passes on are the pack.
#[test]
fn streaming_indexer_writes_git_index() {
    use goprox::odb::ingest;
    if !git_available() {
        return;
    }
    let f = fixture();
    let packs = [
        // What upstreams send with ofs-delta, and the same objects with REF_DELTAs only.
        vec![
            "pack-objects",
            "--all",
            "--revs",
            "--stdout",
            "--delta-base-offset",
        ],
        vec!["pack-objects", "--all", "--revs", "--stdout"],
    ];
    for args in packs {
        let mut c = git_cmd(&f.dir);
        c.args(&args).stdin(std::process::Stdio::null());
        let out = c.output().expect("pack-objects");
        assert!(out.status.success());
        let pack = out.stdout;
        let dest = f.dir.join(format!("ix-{}", args.len()));
        std::fs::create_dir_all(&dest).expect("mkdir");
        git(&dest, &["init", "-q", "--bare"]);
        std::fs::write(dest.join("p.pack"), &pack).expect("write");
        git(&dest, &["index-pack", "-o", "p.idx", "p.pack"]);
        let want = std::fs::read(dest.join("p.idx")).expect("idx");
        for (budget, step) in [(0, 7), (300, 1 << 20), (4 << 10, 1), (64 << 20, 4096)] {
            let mut passed = Vec::new();
            let received = ingest::receive(
                &mut Trickle { data: &pack, step },
                &mut |b| {
                    passed.extend_from_slice(b);
                    Ok(())
                },
                budget,
                u64::MAX,
            )
            .expect("receive");
            assert_eq!(passed, pack, "the bytes passed on are the pack");
            if budget == 0 {
                assert!(
                    received.pending() > 0,
                    "budget 0 leaves the deltas for pass two"
                );
            }
            let indexed = received.finish(&mut &pack[..], budget).expect("finish");
            assert_eq!(indexed.objects as usize, want_objects(&want));
            assert!(
                indexed.idx == want,
                "idx differs ({args:?}, budget {budget})"
            );
        }
        // Damage: a flipped byte, a cut, junk after the trailer, a size limit.
        let mut bad = pack.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(ingest::index_in_memory(&bad, 1 << 20).is_err());
        assert!(ingest::index_in_memory(&pack[..pack.len() - 1], 1 << 20).is_err());
        assert!(ingest::index_in_memory(&pack[..pack.len() / 3], 1 << 20).is_err());
        let mut junk = pack.clone();
        junk.push(0);
        assert!(ingest::index_in_memory(&junk, 1 << 20).is_err());
        let limited = ingest::receive(&mut &pack[..], &mut |_| Ok(()), 0, 100);
        assert!(matches!(limited, Err(ingest::IngestError::TooLarge(100))));
    }
}

/// The object count of a version 2 `.idx` (the last fan-out entry).
fn want_objects(idx: &[u8]) -> usize {
    let at = 8 + 255 * 4;
    u32::from_be_bytes(idx[at..at + 4].try_into().expect("fan-out")) as usize
}

/// Object ids of the positions in `set` (pack order) of the fixture's only pack.
fn ids_at(f: &Fixture, set: &roaring::RoaringBitmap) -> BTreeSet<ObjectId> {
    set.iter()
        .map(|i| f.odb.packs[0].entry_at_position(i).expect("position").1)
        .collect()
}

/// Bitmaps built for some tips give, for any commit (bitmapped or not: the rest is walked),
/// exactly `git rev-list --objects`; a selection from them is exactly what git would send; and
/// they survive serialization, while damaged or foreign bitmaps are refused.
#[test]
fn bitmaps_match_git_rev_list() {
    use goprox::odb::bitmap::{self, Bitmaps};
    if !git_available() {
        eprintln!("SKIP: git not found");
        return;
    }
    let mut f = fixture();
    // Tags of a tree and of a blob, packed with the rest.
    git(&f.dir, &["tag", "tree-tag", "main~3^{tree}"]);
    git(
        &f.dir,
        &["tag", "-a", "-m", "blob", "blob-tag", "main:big.txt"],
    );
    let f = load(std::mem::take(&mut f.dir));
    let rev = |r: &str| oid(&git(&f.dir, &["rev-parse", r]));
    // Bitmaps for an old tag and a lightweight tag only: main, side and the others are
    // completed by walking at query time.
    let tips = [rev("v1"), rev("light"), rev("main~30")];
    let built = bitmap::build(&f.odb, 0, &tips)
        .expect("build")
        .expect("the pack is closed");
    assert_eq!(built.len(), 3);
    let checksum = f.odb.packs[0].checksum();
    let bytes = built.to_bytes(&checksum);
    let objects = f.odb.packs[0].num_objects();
    let bitmaps = Bitmaps::parse(&bytes, &checksum, objects).expect("parse");
    assert_eq!(bitmaps.len(), 3);

    for r in [
        "main",
        "side",
        "v1^{commit}",
        "light",
        "main~5",
        "main~15",
        "main~30",
        "main~39",
    ] {
        let c = rev(r);
        let set = bitmap::closure_of(&f.odb, 0, &bitmaps, &[c])
            .expect("closure")
            .expect("inside the pack");
        assert_eq!(ids_at(&f, &set), rev_list(&f.dir, &[r]), "closure of {r}");
        if let Some(stored) = bitmaps.closure(&c) {
            assert_eq!(stored, set, "stored closure of {r}");
        }
    }

    let cases: [(&[&str], &[&str]); 6] = [
        (&["main", "tree-tag", "blob-tag"], &["main~3"]),
        (&["tree-tag", "blob-tag"], &["main~30"]),
        (&["main"], &["main~10"]),
        (&["main", "side"], &["v1^{commit}"]),
        (&["v1-outer"], &["main~35"]),
        (&["main"], &["light", "side"]),
    ];
    for (wants, haves) in cases {
        let w: Vec<ObjectId> = wants.iter().map(|r| rev(r)).collect();
        let h: Vec<ObjectId> = haves.iter().map(|r| rev(r)).collect();
        let client = bitmap::ClientClosure::of(&f.odb, 0, &bitmaps, &h).expect("client");
        assert!(client.exact, "have {haves:?}");
        let entries = bitmap::select(&f.odb, &bitmaps, &w, &client, &[])
            .expect("select")
            .expect("answerable");
        let got: BTreeSet<ObjectId> = entries.iter().map(|e| e.1).collect();
        assert_eq!(got.len(), entries.len(), "no duplicates");
        // What a bitmapped C git sends: the wants' closure minus the haves' (plain
        // `rev-list --objects A --not B` only subtracts the trees of the boundary commits, so
        // for a tag of a tree it sends objects the client has through older history).
        let expected: BTreeSet<ObjectId> = rev_list(&f.dir, wants)
            .difference(&rev_list(&f.dir, haves))
            .copied()
            .collect();
        assert_eq!(got, expected, "want {wants:?} have {haves:?}");
        assert_eq!(
            ids_at(&f, &client.set),
            rev_list(&f.dir, haves),
            "client closure of {haves:?}"
        );
        // The pack written from it indexes (thin: against the client's objects).
        let mut thin = Vec::new();
        let opts = writer::WriteOptions {
            client_closure: Some(&client),
            ..Default::default()
        };
        writer::write_pack(&f.odb, &entries, opts, &mut thin).expect("write");
        let dest = f.dir.join(format!(
            "bm-{}",
            wants.join("-").replace(['^', '{', '}', '~'], "_")
        ));
        std::fs::create_dir_all(&dest).expect("mkdir");
        git(&dest, &["init", "-q", "--bare"]);
        let alt = f.dir.join(".git/objects");
        std::fs::write(
            dest.join("objects/info/alternates"),
            format!("{}\n", alt.display()),
        )
        .expect("alternates");
        index_pack_with_git(
            &dest,
            &["index-pack", "--stdin", "--fix-thin", "--strict"],
            &thin,
        );
    }

    // Damage is refused, never misread.
    assert!(
        Bitmaps::parse(&bytes, &[0u8; 20], objects).is_err(),
        "foreign pack"
    );
    assert!(
        Bitmaps::parse(&bytes, &checksum, 3).is_err(),
        "positions past the pack"
    );
    for cut in 0..bytes.len() {
        assert!(
            Bitmaps::parse(&bytes[..cut], &checksum, objects).is_err(),
            "cut at {cut}"
        );
    }
    let mut extra = bytes.clone();
    extra.push(0);
    assert!(
        Bitmaps::parse(&extra, &checksum, objects).is_err(),
        "trailing bytes"
    );
}

/// 400 files, each rewritten in 3 commits: git stores the older versions as deltas of the
/// newest, so the first commit's objects alone (a depth-1 pack of it) hold hundreds of deltas
/// whose base is not sent. They go out whole, decoded and deflated by the writer's
/// worker threads ahead of it: the pack indexes with git and holds exactly those objects.
#[test]
fn an_old_commits_pack_with_many_whole_objects() {
    if !git_available() {
        return;
    }
    let dir = scratch();
    git(&dir, &["init", "-q", "-b", "main"]);
    for rev in 0..3u32 {
        for f in 0..400u32 {
            let mut text = String::new();
            for l in 0..60 {
                text.push_str(&format!(
                    "file {f} line {l} {}\n",
                    if l == rev * 7 { "changed" } else { "same" }
                ));
            }
            std::fs::create_dir_all(dir.join(format!("d{}", f % 10))).expect("mkdir");
            std::fs::write(dir.join(format!("d{}/f{f}.txt", f % 10)), text).expect("write");
        }
        git(&dir, &["add", "-A"]);
        commit_at(&dir, rev, &format!("rev {rev}"));
    }
    let f = load(dir);
    let old: Vec<ObjectId> = rev_list(&f.dir, &["--no-walk", "main~2"])
        .into_iter()
        .collect();
    assert!(old.len() > 400);
    let plan = writer::plan(&f.odb, &old).expect("plan");
    let mut out = Vec::new();
    let stats = writer::write_pack(&f.odb, &plan, Default::default(), &mut out).expect("write");
    assert_eq!(stats.objects as usize, old.len());
    assert!(
        stats.recompressed >= 100,
        "the fixture makes deltas whose base is not sent: {stats:?}"
    );
    let dest = f.dir.join("old");
    std::fs::create_dir_all(&dest).expect("mkdir");
    git(&dest, &["init", "-q", "--bare"]);
    let mut c = git_cmd(&dest);
    c.args(["index-pack", "--stdin", "--fix-thin"]);
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("index-pack");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&out)
            .expect("write pack");
    }
    let o = child.wait_with_output().expect("index-pack");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let listed: BTreeSet<ObjectId> = git(
        &dest,
        &[
            "cat-file",
            "--batch-all-objects",
            "--batch-check=%(objectname)",
        ],
    )
    .lines()
    .map(oid)
    .collect();
    assert_eq!(listed, old.iter().copied().collect::<BTreeSet<_>>());
}
