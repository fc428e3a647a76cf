//! Pack generation benchmarks over a deterministic fixture repository.
//!
//! Setup (once): `git fast-import` builds a repository of 300 commits on `main` touching ~100
//! text files with small edits, a few binary files, a side branch and tags; `git repack -adf`
//! packs it (so the pack has deltas); the pack is indexed with goprox's own indexer and put in a
//! `MemoryStore`, from which an `Odb` reads it through the block cache.
//!
//! Benchmarks (all on a WARM cache unless named `cold`: the 256 MiB block and object caches
//! already hold the whole fixture after the first iteration):
//! - `count_full_clone`: the object walk of a full clone (wants = every ref tip).
//! - `write_full_pack`: planning + writing the full-clone pack into `io::sink()` (throughput in
//!   bytes of generated pack).
//! - `whole_pack/cold`: a full clone of a closed repository: the stored pack streamed whole
//!   (header, entries, trailer) with no counting, from a fresh `Io`.
//! - `incremental`: walk + plan + write for wants = tip of `main`, haves = `main~20`.
//! - `*_cold`: the same with a fresh `Io` (empty caches) per iteration, so every block is read
//!   from the (in-memory) store and every object inflated again.
//!
//! Before measuring, the generated full and incremental packs are checked with
//! `git index-pack --stdin` in fresh bare repositories (the bench panics otherwise).
//!
//! Run: `cargo bench --bench pack_generation`.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use gix_hash::ObjectId;
use goprox::odb::pack::Pack;
use goprox::odb::walk::{PackPlan, Walker};
use goprox::odb::writer::{self, WriteOptions};
use goprox::odb::{Io, Odb};
use goprox::store::memory::MemoryStore;
use goprox::store::{DynStore, PutMode};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const COMMITS: usize = 300;
const TEXT_FILES: usize = 100;
const BINARY_FILES: usize = 4;
const CACHE_BYTES: usize = 256 << 20;

// Deterministic, so the fixture is the same on every run.
use goprox::testdata::Rng;

/// A temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let p =
            std::env::temp_dir().join(format!("goprox-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `git` command isolated from the user's and system configuration.
fn git(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.test")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.test")
        .env("GIT_AUTHOR_DATE", "1700000000 +0000")
        .env("GIT_COMMITTER_DATE", "1700000000 +0000");
    c
}

fn run(dir: &Path, args: &[&str]) -> String {
    let out = git(dir).args(args).output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git output is UTF-8")
}

fn run_with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> String {
    let mut child = git(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn git");
    // Feed stdin from a thread so a chatty child cannot deadlock us.
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("wait for git");
    feeder.join().expect("stdin feeder");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("git output is UTF-8")
}

fn data_cmd(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("data {}\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.push(b'\n');
}

fn text_file(lines: &[String]) -> Vec<u8> {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s.into_bytes()
}

/// The `git fast-import` stream of the fixture history.
fn fast_import_stream() -> Vec<u8> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let word = |rng: &mut Rng| -> String {
        const WORDS: &[&str] = &[
            "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
            "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
            "sierra", "tango",
        ];
        WORDS[rng.below(WORDS.len())].to_string()
    };
    let line = |rng: &mut Rng, n: usize| -> String {
        let mut s = format!("{n:05}:");
        for _ in 0..8 {
            s.push(' ');
            s.push_str(&word(rng));
        }
        s
    };
    let mut texts: Vec<Vec<String>> = (0..TEXT_FILES)
        .map(|f| (0..60 + f % 40).map(|i| line(&mut rng, i)).collect())
        .collect();
    let mut binaries: Vec<Vec<u8>> = (0..BINARY_FILES)
        .map(|i| {
            (0..(16 << 10) * (i + 1))
                .map(|_| rng.next() as u8)
                .collect()
        })
        .collect();
    let text_path = |f: usize| format!("pkg{}/file{f:03}.txt", f % 10);
    let bin_path = |b: usize| format!("assets/blob{b}.bin");

    let mut s = Vec::new();
    let mut time = 1_700_000_000u64;
    let commit =
        |s: &mut Vec<u8>, branch: &str, mark: usize, from: Option<usize>, msg: &str, time: u64| {
            s.extend_from_slice(format!("commit refs/heads/{branch}\nmark :{mark}\n").as_bytes());
            s.extend_from_slice(
                format!("author Bench <bench@example.test> {time} +0000\n").as_bytes(),
            );
            s.extend_from_slice(
                format!("committer Bench <bench@example.test> {time} +0000\n").as_bytes(),
            );
            data_cmd(s, msg.as_bytes());
            if let Some(f) = from {
                s.extend_from_slice(format!("from :{f}\n").as_bytes());
            }
        };
    let modify = |s: &mut Vec<u8>, path: &str, data: &[u8]| {
        s.extend_from_slice(format!("M 100644 inline {path}\n").as_bytes());
        data_cmd(s, data);
    };

    for n in 1..=COMMITS {
        time += 3600;
        commit(
            &mut s,
            "main",
            n,
            (n > 1).then(|| n - 1),
            &format!("commit {n}\n"),
            time,
        );
        if n == 1 {
            for (f, t) in texts.iter().enumerate() {
                modify(&mut s, &text_path(f), &text_file(t));
            }
            for (b, d) in binaries.iter().enumerate() {
                modify(&mut s, &bin_path(b), d);
            }
            continue;
        }
        // Small edits to a few text files: change a line, sometimes append one.
        for _ in 0..1 + rng.below(4) {
            let f = rng.below(TEXT_FILES);
            let i = rng.below(texts[f].len());
            texts[f][i] = line(&mut rng, i);
            if rng.below(3) == 0 {
                let len = texts[f].len();
                texts[f].push(line(&mut rng, len));
            }
            modify(&mut s, &text_path(f), &text_file(&texts[f]));
        }
        // Now and then a binary file changes a little.
        if n % 25 == 0 {
            let b = rng.below(BINARY_FILES);
            for _ in 0..16 {
                let i = rng.below(binaries[b].len());
                binaries[b][i] = rng.next() as u8;
            }
            modify(&mut s, &bin_path(b), &binaries[b].clone());
        }
    }
    // A side branch forked 50 commits back.
    let mut mark = COMMITS;
    for k in 0..10 {
        mark += 1;
        time += 60;
        let from = if k == 0 { COMMITS - 50 } else { mark - 1 };
        commit(
            &mut s,
            "feature",
            mark,
            Some(from),
            &format!("feature {k}\n"),
            time,
        );
        let f = rng.below(TEXT_FILES);
        texts[f].push(format!("feature line {k}"));
        modify(&mut s, &text_path(f), &text_file(&texts[f]));
    }
    // An annotated tag and a lightweight one.
    s.extend_from_slice(
        format!(
            "tag v1.0.0\nfrom :{}\ntagger Bench <bench@example.test> {time} +0000\n",
            COMMITS - 100
        )
        .as_bytes(),
    );
    data_cmd(&mut s, b"release 1.0.0\n");
    s.extend_from_slice(format!("reset refs/tags/v0.9.0\nfrom :{}\n\n", COMMITS - 150).as_bytes());
    s
}

/// Everything the benchmarks need. Field order matters for drop: the runtime goes last.
struct Fixture {
    odb: Odb,
    pack: Arc<Pack>,
    store: DynStore,
    /// Every ref tip (annotated tags as the tag object).
    tips: Vec<ObjectId>,
    main: ObjectId,
    main_minus_20: ObjectId,
    /// Number of objects reachable from all refs, per `git rev-list --objects --all`.
    expected_objects: usize,
    _dir: TempDir,
    rt: tokio::runtime::Runtime,
}

fn oid(hex: &str) -> ObjectId {
    ObjectId::from_hex(hex.trim().as_bytes()).expect("object id")
}

fn fixture() -> Fixture {
    let dir = TempDir::new("fixture");
    let repo = dir.0.join("repo.git");
    std::fs::create_dir_all(&repo).expect("mkdir");
    run(&repo, &["init", "-q", "--bare", "--initial-branch=main"]);
    run_with_stdin(&repo, &["fast-import", "--quiet"], &fast_import_stream());
    run(&repo, &["repack", "-adfq"]);
    let pack_dir = repo.join("objects/pack");
    let pack_path = std::fs::read_dir(&pack_dir)
        .expect("read pack dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "pack"))
        .expect("a .pack after repack");
    let pack_bytes = std::fs::read(&pack_path).expect("read pack");

    let tips: Vec<ObjectId> = run(&repo, &["for-each-ref", "--format=%(objectname)"])
        .lines()
        .map(oid)
        .collect();
    let main = oid(&run(&repo, &["rev-parse", "refs/heads/main"]));
    let main_minus_20 = oid(&run(&repo, &["rev-parse", "refs/heads/main~20"]));
    let expected_objects = run(&repo, &["rev-list", "--objects", "--all"])
        .lines()
        .count();

    let indexed = goprox::fill::fetch::index_pack(&pack_bytes).expect("index_pack");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store: DynStore = Arc::new(MemoryStore::new());
    let key = format!(
        "bench.example.test/repo/@git/packs/pack-{}.pack",
        indexed.name
    );
    let size = pack_bytes.len() as u64;
    rt.block_on(store.put(&key, pack_bytes.into(), PutMode::Overwrite))
        .expect("put pack");
    rt.block_on(store.put(
        &format!(
            "bench.example.test/repo/@git/packs/pack-{}.idx",
            indexed.name
        ),
        indexed.idx.clone().into(),
        PutMode::Overwrite,
    ))
    .expect("put idx");
    let pack = Arc::new(
        Pack::from_index_bytes(
            indexed.name.clone(),
            Arc::from(key.as_str()),
            size,
            indexed.idx,
        )
        .expect("pack index"),
    );
    let odb = new_odb(&pack, &store, &rt);
    eprintln!(
        "fixture: {} objects, pack {} bytes, {} refs",
        indexed.objects,
        size,
        tips.len()
    );
    Fixture {
        odb,
        pack,
        store,
        tips,
        main,
        main_minus_20,
        expected_objects,
        _dir: dir,
        rt,
    }
}

/// An `Odb` over the fixture pack with fresh (empty) caches.
fn new_odb(pack: &Arc<Pack>, store: &DynStore, rt: &tokio::runtime::Runtime) -> Odb {
    let io = Io::new(store.clone(), rt.handle().clone(), CACHE_BYTES);
    Odb::new(vec![pack.clone()], Arc::new(io))
}

fn objects(odb: &Odb, wants: &[ObjectId], haves: &[ObjectId]) -> Vec<ObjectId> {
    Walker::new(odb)
        .objects_to_send(&PackPlan {
            wants,
            haves,
            ..Default::default()
        })
        .expect("objects_to_send")
        .ids
}

/// Walk, plan and write a pack; returns the pack and the number of objects in it.
fn generate(
    odb: &Odb,
    wants: &[ObjectId],
    haves: &[ObjectId],
    out: &mut dyn Write,
) -> writer::PackStats {
    let ids = objects(odb, wants, haves);
    let entries = writer::plan(odb, &ids).expect("plan");
    writer::write_pack(odb, &entries, WriteOptions::default(), out).expect("write_pack")
}

/// `git index-pack --stdin --strict` must accept each pack in turn in one fresh bare
/// repository (so a later, incremental pack may refer to objects of an earlier one), and each
/// pack must hold the expected number of objects.
fn check_with_git(packs: &[(&str, &[u8], usize)]) {
    let dir = TempDir::new("check");
    run(&dir.0, &["init", "-q", "--bare"]);
    let mut total = 0;
    for &(what, pack, objects) in packs {
        run_with_stdin(&dir.0, &["index-pack", "--stdin", "--strict"], pack);
        total += objects;
        let count = run(&dir.0, &["count-objects", "-v"]);
        let in_pack: usize = count
            .lines()
            .find_map(|l| l.strip_prefix("in-pack: "))
            .and_then(|v| v.trim().parse().ok())
            .expect("in-pack count");
        assert_eq!(in_pack, total, "{what}: objects in the generated pack");
        eprintln!(
            "check: git index-pack --strict accepted the {what} pack ({} bytes, {objects} objects)",
            pack.len()
        );
    }
}

fn benches(c: &mut Criterion) {
    let fx = fixture();

    // Correctness first: the generated packs must be valid for git.
    let mut full = Vec::new();
    let full_stats = generate(&fx.odb, &fx.tips, &[], &mut full);
    assert_eq!(
        full_stats.objects as usize, fx.expected_objects,
        "full pack object count"
    );
    check_with_git(&[("full clone", &full, fx.expected_objects)]);
    // The incremental pack (not thin) on top of a clone of main~20.
    let mut older = Vec::new();
    let older_stats = generate(&fx.odb, &[fx.main_minus_20], &[], &mut older);
    let mut incr = Vec::new();
    let incr_stats = generate(&fx.odb, &[fx.main], &[fx.main_minus_20], &mut incr);
    check_with_git(&[
        ("main~20 clone", &older, older_stats.objects as usize),
        ("incremental", &incr, incr_stats.objects as usize),
    ]);
    eprintln!("full pack: {full_stats:?}");
    eprintln!("incremental pack: {incr_stats:?}");

    let full_ids = objects(&fx.odb, &fx.tips, &[]);

    c.bench_function("count_full_clone", |b| {
        b.iter(|| black_box(objects(&fx.odb, &fx.tips, &[]).len()))
    });
    c.bench_function("count_full_clone_cold", |b| {
        b.iter_batched(
            || new_odb(&fx.pack, &fx.store, &fx.rt),
            |odb| black_box(objects(&odb, &fx.tips, &[]).len()),
            BatchSize::PerIteration,
        )
    });

    let mut g = c.benchmark_group("write_full_pack");
    g.throughput(Throughput::Bytes(full_stats.bytes));
    g.bench_function("warm", |b| {
        b.iter(|| {
            let entries = writer::plan(&fx.odb, &full_ids).expect("plan");
            writer::write_pack(
                &fx.odb,
                &entries,
                WriteOptions::default(),
                &mut std::io::sink(),
            )
            .expect("write_pack")
        })
    });
    g.bench_function("cold", |b| {
        b.iter_batched(
            || new_odb(&fx.pack, &fx.store, &fx.rt),
            |odb| {
                let entries = writer::plan(&odb, &full_ids).expect("plan");
                writer::write_pack(
                    &odb,
                    &entries,
                    WriteOptions::default(),
                    &mut std::io::sink(),
                )
                .expect("write_pack")
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();

    // A full clone of a closed repository: its single pack streamed whole (no counting).
    let mut whole = Vec::new();
    let whole_stats = writer::write_whole_packs(&fx.odb, &mut whole).expect("write_whole_packs");
    assert_eq!(
        whole_stats.objects,
        full_ids.len() as u64,
        "whole pack object count"
    );
    let mut g = c.benchmark_group("whole_pack");
    g.throughput(Throughput::Bytes(whole_stats.bytes));
    g.bench_function("cold", |b| {
        b.iter_batched(
            || new_odb(&fx.pack, &fx.store, &fx.rt),
            |odb| writer::write_whole_packs(&odb, &mut std::io::sink()).expect("whole"),
            BatchSize::PerIteration,
        )
    });
    g.finish();

    let mut g = c.benchmark_group("incremental");
    g.throughput(Throughput::Bytes(incr_stats.bytes));
    g.bench_function("warm", |b| {
        b.iter(|| {
            generate(
                &fx.odb,
                &[fx.main],
                &[fx.main_minus_20],
                &mut std::io::sink(),
            )
        })
    });
    g.finish();
}

criterion_group! {
    name = pack_generation;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(pack_generation);
