//! Many instances, one bucket, a long life: three `goprox serve` processes on one store make one
//! upstream fetch for 30 concurrent first clones; 30 refreshes leave a handful of packs (geometric
//! compaction) that `gc` and `fsck` agree on; `kill -9` in the middle of fills, refreshes and
//! compactions never leaves a bucket that serves a broken repository.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::git::{self, CloneKind, GitEnv, assert_same};
use crate::support::goprox::{Goprox, Store, StoreKind, command, spawn_command};
use crate::support::live::{Live, ls_remote, wait_until};
use crate::support::upstream::Upstream;
use crate::support::{TempDir, fixtures, have_git, skip};
use goprox::refs::RefIndex;

const RICH: &str = "example.test/rich";
const LIVE: &str = "example.test/live";

/// Upstream requests that fetched objects (not ref listings).
fn upstream_fetches(up: &Upstream) -> Vec<String> {
    up.requests()
        .into_iter()
        .filter(|r| {
            r.starts_with("POST") && r.contains("git-upload-pack") && !r.contains("command=ls-refs")
        })
        .collect()
}

fn ref_index(store: &Store, root: &str) -> RefIndex {
    let data = store
        .get_object(&format!("{root}/@git/refs.json"))
        .unwrap_or_else(|| panic!("no ref index for {root}"));
    serde_json::from_slice(&data).expect("parse ref index")
}

/// Waits until `root`'s lease can be taken over (absent, released or expired), judged as an
/// instance starting now would: a killed holder's lease has to run out its TTL.
fn wait_lease_takeable(store: &Store, root: &str, limit: Duration) {
    use goprox::refs::lease;
    let key = format!("{root}/@git/lease.json");
    wait_until(&format!("{key} to be takeable"), limit, || {
        store
            .get_object(&key)
            .and_then(|data| lease::decode(&data))
            .is_none_or(|rec| rec.takeable(lease::now_ms()))
    });
}

fn fsck_ok(store: &Store) {
    let o = command(store, &["fsck"]);
    assert!(o.ok(), "fsck: {}", o.describe());
}

fn one_fill(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "instances") else {
        return;
    };
    let up = Upstream::start(&fixtures::fixtures().root);
    let gps: Vec<Goprox> = (0..3)
        .map(|_| Goprox::start_with(&store.share(), &up.goprox_args(), &[]))
        .collect();
    let expected = git::reference(RICH, 2, CloneKind::Mirror);
    up.clear_requests();
    let env = GitEnv::new();
    let tmp = TempDir::new("instances");
    let start = std::sync::Barrier::new(30);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for i in 0..30 {
            let (env, tmp, start) = (&env, &tmp, &start);
            let url = gps[i % 3].repo_url(RICH);
            let expected = &expected;
            s.spawn(move || {
                let dest = tmp.join(format!("clone-{i}"));
                start.wait();
                env.clone(2, &url, &dest, CloneKind::Mirror.args()).check();
                assert_same(
                    &format!("clone {i} through {url}"),
                    &env.snapshot(&dest),
                    &expected.snapshot,
                );
            });
        }
    });
    let took = t0.elapsed();
    for c in (0..30).step_by(7) {
        env.fsck(&tmp.join(format!("clone-{c}")));
    }
    let fetches = upstream_fetches(&up);
    let waited = gps
        .iter()
        .filter(|g| g.log_text().contains("waiting for it"))
        .count();
    eprintln!(
        "one_fill({kind:?}): 30 concurrent first clones over 3 instances in {took:?}: {} upstream fetch(es); {waited} instance(s) waited for another's lease",
        fetches.len()
    );
    assert_eq!(
        fetches.len(),
        1,
        "30 first clones over 3 instances: upstream fetches {fetches:#?}"
    );
    fsck_ok(&store);
}

#[test]
fn instances_share_one_fill_local() {
    one_fill(StoreKind::Local);
}

#[test]
fn instances_share_one_fill_s3() {
    one_fill(StoreKind::S3);
}

fn bare_clone(env: &GitEnv, url: &str, dest: &Path) -> Duration {
    let t0 = Instant::now();
    env.clone(2, url, dest, &["--bare"]).check();
    let took = t0.elapsed();
    env.fsck(dest);
    took
}

fn compaction(kind: StoreKind) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "compaction") else {
        return;
    };
    let tmp = TempDir::new("compaction");
    let repo = Live::new(&tmp);
    let up = Upstream::start(&tmp.join("up"));
    let gp = Goprox::start_with(
        &store,
        &up.goprox_args(),
        &["--refresh-after", "0s", "--upstream-wait", "60s"],
    );
    let url = gp.repo_url(LIVE);
    let env = &repo.env;
    ls_remote(env, &url);
    let after_fill = bare_clone(env, &url, &tmp.join("after-fill"));

    let mut latencies = Vec::new();
    let mut max_packs = 0;
    for i in 0..30 {
        let sha = if i % 5 == 4 {
            repo.commit_big(&format!("refresh {i}"), 200 << 10)
        } else {
            repo.commit(&format!("refresh {i}"))
        };
        repo.push(&["refs/heads/main"]);
        let t0 = Instant::now();
        let refs = ls_remote(env, &url);
        latencies.push(t0.elapsed());
        assert_eq!(refs.get("refs/heads/main"), Some(&sha), "refresh {i}");
        max_packs = max_packs.max(ref_index(&store, LIVE).packs.len());
    }
    let index = ref_index(&store, LIVE);
    let dest = tmp.join("after-refreshes");
    let after_refreshes = bare_clone(env, &url, &dest);
    assert_eq!(
        env.rev_parse(&dest, "refs/heads/main"),
        repo.upstream_ref("refs/heads/main")
    );
    assert_eq!(
        env.count(&dest, "--all"),
        env.count(&repo.bare, "--all"),
        "commits after 30 refreshes"
    );
    latencies.sort();
    eprintln!(
        "compaction({kind:?}): after 30 refreshes {} packs (at most {max_packs} at any time), {} retired; \
         ls-remote with refresh of a one-commit push: median {:?}, max {:?}; \
         bare clone right after the fill {after_fill:?}, after 30 refreshes {after_refreshes:?}",
        index.packs.len(),
        index.retired.len(),
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    assert!(
        index.packs.len() <= 8,
        "{} packs after 30 refreshes",
        index.packs.len()
    );
    assert!(max_packs <= 8, "{max_packs} packs at some point");
    // Every refresh only moved main forward: the packs still hold exactly what the refs reach,
    // and a full clone is answered by streaming them whole.
    assert!(index.closed, "the ref index is no longer closed: {index:?}");
    assert!(
        gp.log_text().contains("whole packs sent"),
        "full clones did not stream the packs whole"
    );
    assert!(!index.retired.is_empty(), "compaction retired no pack");

    // gc --grace 0s leaves exactly the packs the ref index names.
    fsck_ok(&store);
    let o = command(&store, &["gc", "--grace", "0s"]);
    assert!(o.ok(), "gc: {}", o.describe());
    let index = ref_index(&store, LIVE);
    assert!(index.retired.is_empty(), "gc left retired entries");
    let mut named: Vec<String> = index
        .packs
        .iter()
        .flat_map(|p| ["pack", "idx"].map(|ext| format!("{LIVE}/@git/packs/pack-{}.{ext}", p.name)))
        .collect();
    named.sort();
    let packs: Vec<String> = store
        .keys()
        .into_iter()
        .filter(|k| k.starts_with(&format!("{LIVE}/@git/packs/")))
        .collect();
    assert_eq!(
        packs, named,
        "gc --grace 0s must leave exactly the named packs"
    );
    fsck_ok(&store);
    bare_clone(env, &url, &tmp.join("after-gc"));

    // A named pack deleted by hand: fsck fails and says which.
    let victim = format!("{LIVE}/@git/packs/pack-{}.pack", index.packs[0].name);
    store.delete_object(&victim);
    let o = command(&store, &["fsck"]);
    assert!(
        !o.ok(),
        "fsck passed with {victim} missing: {}",
        o.describe()
    );
    assert!(
        o.stdout_str().contains(&index.packs[0].name)
            || o.stderr_str().contains(&index.packs[0].name),
        "fsck does not name the missing pack: {}",
        o.describe()
    );
}

#[test]
fn compaction_gc_fsck_local() {
    compaction(StoreKind::Local);
}

#[test]
fn compaction_gc_fsck_s3() {
    compaction(StoreKind::S3);
}

/// xorshift64*: reproducible "random" moments from a printed seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

fn crash(kind: StoreKind, rounds: u32) {
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(kind, "crash") else {
        return;
    };
    let tmp = TempDir::new("crash");
    let repo = Live::new(&tmp);
    let up = Upstream::start(&tmp.join("up"));
    let seed = std::env::var("GOPROX_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        });
    let rounds = std::env::var("GOPROX_CRASH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(rounds);
    eprintln!("crash({kind:?}): GOPROX_CRASH_SEED={seed} GOPROX_CRASH_ROUNDS={rounds}");
    let mut rng = seed;
    let writer_args = [
        "--refresh-after",
        "0s",
        "--upstream-wait",
        "120s",
        "--lease-ttl",
        "2s",
    ];
    let reader_args = ["--refresh-after", "1h", "--lease-ttl", "2s"];
    let env = &repo.env;
    let mut previous: Option<String> = None;
    let mut uninterrupted = Duration::from_millis(900);
    for round in 0..rounds {
        if round > 0 {
            repo.commit_big(&format!("big {round}"), 3 << 20);
            repo.push(&["refs/heads/main"]);
        }
        let current = repo.upstream_ref("refs/heads/main");
        // A writer starts a fill (round 0) or a refresh carrying a multi-megabyte push, and is
        // killed at a random moment.
        let mut writer = Goprox::start_with(&store.share(), &up.goprox_args(), &writer_args);
        let url = writer.repo_url(LIVE);
        let client_env = GitEnv::new();
        let trigger =
            std::thread::spawn(move || client_env.output(Path::new("/"), &["ls-remote", &url]));
        // Even rounds: a random moment within the time an uninterrupted refresh took last round
        // (a bit beyond). Odd rounds: the moment a new pack object appears in the store, that is
        // between writing a pack and publishing the ref index that names it.
        let how = if round % 2 == 0 {
            let window = u64::try_from(uninterrupted.as_millis() * 5 / 4)
                .unwrap_or(1000)
                .max(50);
            let delay = Duration::from_millis(next_random(&mut rng) % window);
            std::thread::sleep(delay);
            format!("after {delay:?}")
        } else {
            let t0 = Instant::now();
            let packs = |keys: Vec<String>| -> Vec<String> {
                keys.into_iter()
                    .filter(|k| k.contains("/@git/packs/"))
                    .collect()
            };
            let before = packs(store.keys());
            while t0.elapsed() < Duration::from_secs(20)
                && packs(store.keys()).iter().all(|k| before.contains(k))
            {
                std::thread::sleep(Duration::from_millis(1));
            }
            format!("when a new pack object appeared, after {:?}", t0.elapsed())
        };
        writer.stop();
        let _ = trigger.join();
        let state = store.keys();
        // Another instance serves a complete repository: the old state or the new one.
        let reader = Goprox::start_with(&store.share(), &up.goprox_args(), &reader_args);
        let dest = tmp.join(format!("round-{round}"));
        env.clone(2, &reader.repo_url(LIVE), &dest, &["--bare"])
            .check();
        env.fsck(&dest);
        let served = env.rev_parse(&dest, "refs/heads/main");
        let ok: Vec<&String> = previous.iter().chain([&current]).collect();
        assert!(
            ok.contains(&&served),
            "round {round} (killed {how}): served main {served}, expected one of {ok:?}; store: {state:#?}"
        );
        let named: Vec<String> = store
            .get_object(&format!("{LIVE}/@git/refs.json"))
            .and_then(|d| serde_json::from_slice::<RefIndex>(&d).ok())
            .map(|i| {
                let retired = i.retired.into_iter().map(|r| r.name);
                i.packs.into_iter().map(|p| p.name).chain(retired).collect()
            })
            .unwrap_or_default();
        let strays = state
            .iter()
            .filter(|k| k.contains("/@git/packs/") && !named.iter().any(|n| k.contains(n.as_str())))
            .count();
        eprintln!(
            "crash({kind:?}) round {round}: killed {how}, leaving {strays} pack/idx objects the ref index neither names nor retires; a second instance served {}",
            if served == current {
                "the new state"
            } else {
                "the old state"
            }
        );
        fsck_ok(&store);
        // Let the dead writer's lease expire (2 s TTL); then the next instance that refreshes
        // finishes the job. Its time, not counting a wait for the lease, is the next round's
        // window for the kill.
        wait_lease_takeable(&store, LIVE, Duration::from_secs(60));
        let finisher = Goprox::start_with(&store.share(), &up.goprox_args(), &writer_args);
        let t0 = Instant::now();
        let url = finisher.repo_url(LIVE);
        wait_until("the finisher refreshes", Duration::from_secs(120), || {
            ls_remote(env, &url).get("refs/heads/main") == Some(&current)
        });
        uninterrupted = t0.elapsed();
        previous = Some(current);
    }
    // The next instance that refreshes finishes the job.
    let gp = Goprox::start_with(&store.share(), &up.goprox_args(), &writer_args);
    let url = gp.repo_url(LIVE);
    let newest = repo.upstream_ref("refs/heads/main");
    wait_until(
        "the newest main after the crashes",
        Duration::from_secs(120),
        || ls_remote(env, &url).get("refs/heads/main") == Some(&newest),
    );
    bare_clone(env, &url, &tmp.join("final"));
    fsck_ok(&store);
    // gc killed at random moments: the bucket still serves; the next gc finishes the job.
    for attempt in 0..3 {
        let mut child = spawn_command(&store, &["gc", "--grace", "0s"]);
        let delay = Duration::from_millis(next_random(&mut rng) % 300);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        fsck_ok(&store);
        bare_clone(env, &url, &tmp.join(format!("gc-killed-{attempt}")));
    }
    let o = command(&store, &["gc", "--grace", "0s"]);
    assert!(o.ok(), "gc: {}", o.describe());
    fsck_ok(&store);
    bare_clone(env, &url, &tmp.join("after-gc"));
}

#[test]
fn kill_9_mid_operation_s3() {
    crash(StoreKind::S3, 6);
}

#[test]
fn kill_9_mid_operation_local() {
    crash(StoreKind::Local, 4);
}

/// A full clone answered with the stored packs whole waits for its client without holding a
/// thread or a turn: with `--max-pack-generations 1`, a client that asked for a 24 MiB clone
/// and reads nothing does not keep the next clone from being answered.
#[test]
fn a_stalled_clone_holds_no_turn() {
    use std::io::Write;
    if !have_git() {
        skip("git http-backend not found");
        return;
    }
    let Some(store) = Store::new(StoreKind::Local, "stalled-clone") else {
        return;
    };
    let tmp = TempDir::new("stalled-clone");
    let repo = Live::new(&tmp);
    for i in 0..3 {
        repo.commit_big(&format!("big {i}"), 8 << 20);
    }
    repo.push(&["refs/heads/main"]);
    let up = Upstream::start(&tmp.join("up"));
    let mut gp = Goprox::start_with(&store, &up.goprox_args(), &["--max-pack-generations", "1"]);
    let url = gp.repo_url(LIVE);
    let env = &repo.env;
    // Filled and stored (a later clone is answered from the store, streaming its pack whole).
    bare_clone(env, &url, &tmp.join("first"));
    wait_until("the ref index", Duration::from_secs(30), || {
        store
            .get_object(&format!("{LIVE}/@git/refs.json"))
            .is_some()
    });
    let refs = ls_remote(env, &url);
    let mut body = Vec::new();
    for l in [
        "command=fetch\n".to_string(),
        "object-format=sha1\n".to_string(),
    ] {
        body.extend_from_slice(format!("{:04x}{l}", l.len() + 4).as_bytes());
    }
    body.extend_from_slice(b"0001");
    let mut wants: Vec<&String> = refs.values().collect();
    wants.sort();
    wants.dedup();
    for w in wants {
        let l = format!("want {w}\n");
        body.extend_from_slice(format!("{:04x}{l}", l.len() + 4).as_bytes());
    }
    for l in ["ofs-delta\n", "done\n"] {
        body.extend_from_slice(format!("{:04x}{l}", l.len() + 4).as_bytes());
    }
    body.extend_from_slice(b"0000");
    // The stalled client: asks, reads the start of the answer, then nothing more.
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", gp.port)).expect("connect");
    write!(
        stalled,
        "POST /{LIVE}/git-upload-pack HTTP/1.1\r\nHost: x\r\nGit-Protocol: version=2\r\n\
         Content-Type: application/x-git-upload-pack-request\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("write head");
    stalled.write_all(&body).expect("write body");
    stalled
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut start = vec![0u8; 64 << 10];
    std::io::Read::read_exact(&mut stalled, &mut start).expect("the answer starts");
    // Meanwhile another clone is answered (on a thread: with the stalled one holding the only
    // turn it would wait for as long as the stalled client does), and matches upstream.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (url2, dest) = (url.clone(), tmp.join("second"));
    std::thread::spawn(move || {
        let env = GitEnv::new();
        env.clone(2, &url2, &dest, &["--bare"]).check();
        env.fsck(&dest);
        let _ = done_tx.send(());
    });
    let answered = done_rx.recv_timeout(Duration::from_secs(60));
    drop(stalled);
    assert!(
        answered.is_ok(),
        "a second clone was not answered while a stalled one streamed"
    );
    gp.assert_alive();
}
