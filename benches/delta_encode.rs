//! Delta encoder benchmarks (`odb::delta_encode`), and a size comparison with git's own deltas.
//!
//! Cases, each as `index` (building the base's `DeltaIndex`), `encode` (one target against a
//! prebuilt index) and `both`; throughput is in bytes of the base for `index`, of the target
//! otherwise:
//! - `text_1mib`: a 1 MiB text-like buffer and a copy with ten small edits.
//! - `source_64kib`: 64 KiB of this crate's own sources and a copy with a few lines changed.
//! - `repetitive_1mib`: a period of 17 bytes and an edit every 20 bytes (over-full buckets and
//!   short matches everywhere: the slowest kind of input).
//! - `random_256kib`: 256 KiB of random bytes against an unrelated 256 KiB, with git's usual
//!   limit (half the target) so the encoder gives up early (`encode`), and without a limit
//!   (`encode_unlimited`).
//!
//! Before measuring, when `git` and this repository's history are available, pairs of versions
//! of a few files (`HEAD~N:path` vs `HEAD:path`) are delta-compressed by `git repack` in a
//! scratch repository and by this encoder in the same direction, and the sizes are printed.
//!
//! Run: `cargo bench --bench delta_encode` (`-- --quick` for a short run).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use goprox::odb::delta::apply;
use goprox::odb::delta_encode::DeltaIndex;
use goprox::odb::writer::{entry_header, ofs_distance};
use std::hint::black_box;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use goprox::testdata::Rng;

fn text_case() -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(1);
    let base = r.text(1 << 20);
    let mut t = base.clone();
    for i in 0..10 {
        let at = r.below(t.len() - 100);
        match i % 3 {
            0 => t[at] ^= 0x20,
            1 => {
                t.splice(at..at, *b"an inserted phrase ");
            }
            _ => {
                t.drain(at..at + 40);
            }
        }
    }
    (base, t)
}

fn source_case() -> (Vec<u8>, Vec<u8>) {
    let mut base: Vec<u8> = [
        &include_bytes!("../src/odb/walk.rs")[..],
        include_bytes!("../src/odb/writer.rs"),
        include_bytes!("../src/odb/mod.rs"),
        include_bytes!("../src/odb/delta.rs"),
        include_bytes!("../src/odb/pack.rs"),
        include_bytes!("../src/odb/cache.rs"),
    ]
    .concat();
    base.truncate(64 << 10);
    let mut lines: Vec<Vec<u8>> = base.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
    let n = lines.len();
    lines[n / 7] = b"    let changed = 1; // a changed line".to_vec();
    lines[n / 3].extend_from_slice(b" // with a comment");
    lines.insert(n / 2, b"    // an added line".to_vec());
    lines.remove(2 * n / 3);
    lines[5 * n / 6] = lines[5 * n / 6].to_ascii_uppercase();
    (base, lines.join(&b'\n'))
}

/// A bad case for any block-hash encoder: a period of 17 bytes makes 17 distinct blocks, each
/// with thousands of occurrences (over-full buckets), and the target has an edit every 20
/// bytes, so every match is short.
fn repetitive_case() -> (Vec<u8>, Vec<u8>) {
    let base: Vec<u8> = b"abcdefghijklmnopq"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    let mut t = base.clone();
    for i in (0..t.len()).step_by(20) {
        t[i] = b'!';
    }
    (base, t)
}

fn random_case() -> (Vec<u8>, Vec<u8>) {
    let mut r = Rng(3);
    (r.bytes(256 << 10), r.bytes(256 << 10))
}

fn zlib(data: &[u8]) -> usize {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib").len()
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn git_bytes(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    o.status.success().then_some(o.stdout)
}

/// git's delta between `a` and `b` (`git repack` picks the direction):
/// `(target is a, delta size, compressed delta size)`.
fn git_delta(a: &[u8], b: &[u8]) -> Option<(bool, usize, usize)> {
    let dir = std::env::temp_dir().join(format!("goprox-delta-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).ok()?;
    let result = (|| {
        git(&dir, &["init", "-q"])?;
        std::fs::write(dir.join("a"), a).ok()?;
        std::fs::write(dir.join("b"), b).ok()?;
        let ids = git(&dir, &["hash-object", "-w", "a", "b"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        git(&dir, &["tag", "a", ids[0]])?;
        git(&dir, &["tag", "b", ids[1]])?;
        git(&dir, &["repack", "-adfq", "--window=10", "--depth=50"])?;
        let packs = std::fs::read_dir(dir.join(".git/objects/pack")).ok()?;
        let idx = packs
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "idx"))?;
        let v = git(&dir, &["verify-pack", "-v", idx.to_str()?])?;
        // <id> blob <delta size> <size in pack> <offset> <depth> <base id>
        let rows: Vec<Vec<&str>> = v.lines().map(|l| l.split_whitespace().collect()).collect();
        let delta = rows.iter().find(|f| f.len() == 7)?;
        let base = rows.iter().find(|f| f.len() == 5 && f[0] == delta[6])?;
        let size: usize = delta[2].parse().ok()?;
        let in_pack: usize = delta[3].parse().ok()?;
        let (off, base_off): (u64, u64) = (delta[4].parse().ok()?, base[4].parse().ok()?);
        let mut hdr = Vec::new();
        entry_header(
            goprox::odb::writer::EntryKind::OfsDelta,
            size as u64,
            &mut hdr,
        );
        ofs_distance(off.checked_sub(base_off)?, &mut hdr);
        Some((delta[0] == ids[0], size, in_pack.checked_sub(hdr.len())?))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn compare_with_git() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    if git(repo, &["--version"]).is_none() {
        eprintln!("SKIP comparison with git: git not installed");
        return;
    }
    let files = [
        "README.md",
        "src/main.rs",
        "src/http.rs",
        "src/fill/mod.rs",
        "src/fill/fetch.rs",
        "src/repo.rs",
        "src/odb/walk.rs",
        "src/odb/writer.rs",
        "src/odb/mod.rs",
        "src/protocol/upload_pack.rs",
        "tests/e2e/security.rs",
    ];
    println!(
        "{:<40} {:>7} {:>7} | {:>6} {:>6} {:>5} | {:>6} {:>6} {:>5}",
        "pair (target vs base)",
        "base",
        "target",
        "git",
        "ours",
        "ratio",
        "git.z",
        "ours.z",
        "ratio"
    );
    let (mut sum_git, mut sum_ours, mut sum_git_z, mut sum_ours_z) = (0, 0, 0, 0);
    for rev in ["HEAD~3", "HEAD~10", "HEAD~25", "HEAD~40"] {
        for f in files {
            let (Some(old), Some(new)) = (
                git_bytes(repo, &["show", &format!("{rev}:{f}")]),
                git_bytes(repo, &["show", &format!("HEAD:{f}")]),
            ) else {
                continue;
            };
            if old == new {
                continue;
            }
            let Some((old_is_target, git_size, git_z)) = git_delta(&old, &new) else {
                eprintln!("{rev}:{f}: git made no delta");
                continue;
            };
            let (base, target) = if old_is_target {
                (&new, &old)
            } else {
                (&old, &new)
            };
            let d = DeltaIndex::new(base)
                .encode(target, usize::MAX)
                .expect("delta");
            assert_eq!(&apply(base, &d).expect("apply"), target);
            let ours_z = zlib(&d);
            let name = format!("{}{f}", if old_is_target { "old " } else { "new " });
            println!(
                "{:<40} {:>7} {:>7} | {:>6} {:>6} {:>5.2} | {:>6} {:>6} {:>5.2}",
                format!("{name} {rev}"),
                base.len(),
                target.len(),
                git_size,
                d.len(),
                d.len() as f64 / git_size as f64,
                git_z,
                ours_z,
                ours_z as f64 / git_z as f64
            );
            sum_git += git_size;
            sum_ours += d.len();
            sum_git_z += git_z;
            sum_ours_z += ours_z;
        }
    }
    if sum_git > 0 {
        println!(
            "total: git {sum_git} ours {sum_ours} ({:.3}x); compressed: git {sum_git_z} ours {sum_ours_z} ({:.3}x)",
            sum_ours as f64 / sum_git as f64,
            sum_ours_z as f64 / sum_git_z as f64
        );
    }
}

fn bench_case(c: &mut Criterion, name: &str, base: &[u8], target: &[u8], limit: bool) {
    let max = if limit { target.len() / 2 } else { usize::MAX };
    let idx = DeltaIndex::new(base);
    let d = idx.encode(target, usize::MAX).expect("delta");
    assert_eq!(apply(base, &d).expect("apply"), target);
    println!(
        "{name}: base {} target {} delta {} ({:.3}%), index {} bytes",
        base.len(),
        target.len(),
        d.len(),
        100.0 * d.len() as f64 / target.len() as f64,
        idx.memory_size()
    );
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(base.len() as u64));
    g.bench_function("index", |b| b.iter(|| DeltaIndex::new(black_box(base))));
    g.throughput(Throughput::Bytes(target.len() as u64));
    g.bench_function("encode", |b| b.iter(|| idx.encode(black_box(target), max)));
    if limit {
        g.bench_function("encode_unlimited", |b| {
            b.iter(|| idx.encode(black_box(target), usize::MAX))
        });
    }
    g.bench_function("both", |b| {
        b.iter(|| DeltaIndex::new(black_box(base)).encode(black_box(target), max))
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    compare_with_git();
    let (base, target) = text_case();
    bench_case(c, "text_1mib", &base, &target, false);
    let (base, target) = source_case();
    bench_case(c, "source_64kib", &base, &target, false);
    let (base, target) = repetitive_case();
    bench_case(c, "repetitive_1mib", &base, &target, false);
    let (base, target) = random_case();
    bench_case(c, "random_256kib", &base, &target, true);
}

criterion_group! {
    name = delta_encode;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(delta_encode);
