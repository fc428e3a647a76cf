//! `goprox serve`, `goprox mirror`, `goprox gc`, `goprox fsck` and `goprox stats`.

// Outside tests nothing unwraps: errors are handled, and a value that is provably present
// is taken with an `#[allow]`ed `expect` whose message states why.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

use clap::{Args, Parser, Subcommand};
use goprox::fill::fetch::RefPrefixes;
use goprox::fill::{Coordination, FillProgress, Filler, MirrorOptions, Refreshed};
use goprox::http::{AppState, router};
use goprox::odb::Io;
use goprox::refs::Keys;
use goprox::repo::{RefreshPolicy, Repos};
use goprox::store::{self, s3::S3Options};
use goprox::upstream::resolve::{ResolveError, Resolver, Rule, Target};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "goprox",
    version,
    about = "A read-only git server and go-get host that answers from an object store, filling it from upstream on a miss."
)]
struct Cli {
    /// Log lines as text (`text`) or one JSON object per line (`json`).
    #[arg(long, global = true, env = "GOPROX_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once at start-up
enum Cmd {
    /// Serve git smart HTTP (upload-pack) and ?go-get=1 pages.
    Serve(ServeArgs),
    /// Fill (or refresh) repositories into the store without serving.
    Mirror(MirrorArgs),
    /// Delete retired and unreferenced packs, expired leases and stale uploads.
    Gc(GcArgs),
    /// Check that every ref index is fully backed by its packs (exit 1 on problems).
    Fsck(FsckArgs),
    /// Show what the store holds: refs, packs, bytes, objects, leases per repository.
    Stats(StatsArgs),
}

#[derive(Args)]
struct StoreArgs {
    /// Storage: a directory (`./goprox-data`, `file:///abs/dir`), `s3://bucket[/prefix]`, or `memory://`.
    #[arg(long, env = "GOPROX_STORE", default_value = "./goprox-data")]
    store: String,
    /// Upstream rule PREFIX=URL (repeatable; comma-separated in the env var). A PREFIX ending in `/`
    /// covers many repositories (PREFIX + the host's usual number of path elements, appended to URL).
    #[arg(long = "upstream", env = "GOPROX_UPSTREAM", value_delimiter = ',')]
    upstreams: Vec<Rule>,
    /// Discovery rule PREFIX=URL (repeatable; comma-separated in the env var): import paths under
    /// PREFIX are looked up with `GET URL/<path>?go-get=1`, an internal vanity server trusted as
    /// given (http and private addresses allowed). Its go-import tags may name a subdirectory
    /// (Go 1.25's fourth field). The repositories it names follow the upstream policy unless an
    /// `--upstream` rule's URL covers them.
    #[arg(long = "discover", env = "GOPROX_DISCOVER", value_delimiter = ',', value_parser = Rule::discovery)]
    discover: Vec<Rule>,
    /// netrc file with upstream credentials by host (`machine HOST login USER password PW`).
    /// Default: $NETRC, else ~/.netrc if it exists.
    #[arg(long, env = "GOPROX_NETRC")]
    netrc: Option<std::path::PathBuf>,
    /// PEM file of extra certificate authorities trusted for upstream https (e.g. a private
    /// GitLab's company CA); added to the built-in web roots.
    #[arg(long, env = "GOPROX_UPSTREAM_CA")]
    upstream_ca: Option<std::path::PathBuf>,
    /// S3 endpoint URL (default: AWS_ENDPOINT_URL or AWS).
    #[arg(long, env = "GOPROX_S3_ENDPOINT")]
    s3_endpoint: Option<String>,
    /// Use path-style S3 addressing (needed by most S3-compatible servers).
    #[arg(long, env = "GOPROX_S3_PATH_STYLE")]
    s3_path_style: bool,
    /// S3 region (default: from the AWS configuration, else us-east-1).
    #[arg(long, env = "GOPROX_S3_REGION")]
    s3_region: Option<String>,
    /// Attempts in all for one S3 call that fails for a passing reason (throttling, 5xx,
    /// connection, timeout, a body cut short); a read that broke after making progress is
    /// resumed and counts afresh.
    #[arg(long, env = "GOPROX_S3_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    s3_max_attempts: u32,
    /// Deadline of one S3 call's retries: no new attempt starts after it.
    #[arg(long, env = "GOPROX_S3_TIMEOUT", default_value = "60s", value_parser = goprox::duration::parse_duration)]
    s3_timeout: Duration,
    /// Time to open a connection to S3.
    #[arg(long, env = "GOPROX_S3_CONNECT_TIMEOUT", default_value = "3s", value_parser = goprox::duration::parse_duration)]
    s3_connect_timeout: Duration,
    /// An S3 answer whose head, or whose body's next bytes, take longer than this is given up
    /// and tried again (a body is resumed where it stopped).
    #[arg(long, env = "GOPROX_S3_READ_TIMEOUT", default_value = "20s", value_parser = goprox::duration::parse_duration)]
    s3_read_timeout: Duration,
    /// Block and object cache budget in bytes.
    #[arg(long, env = "GOPROX_CACHE_SIZE", default_value_t = 256 << 20)]
    cache_size: usize,
    /// Memory for pack indexes (with their reverse indexes and bitmaps) in bytes: the least
    /// recently used are dropped beyond it and loaded again when needed.
    #[arg(long, env = "GOPROX_INDEX_CACHE_SIZE", default_value_t = goprox::repo::DEFAULT_INDEX_BUDGET)]
    index_cache_size: u64,
    /// Ref prefixes to mirror (comma-separated; `*` for every ref upstream has).
    #[arg(
        long = "ref-prefix",
        env = "GOPROX_REF_PREFIXES",
        value_delimiter = ',',
        default_value = "HEAD,refs/heads/,refs/tags/"
    )]
    ref_prefixes: Vec<String>,
    /// Plain mirror semantics for tags: follow upstream when it moves or deletes a tag
    /// (default: a mirrored tag keeps its first target, and stays).
    #[arg(long, env = "GOPROX_MIRROR_TAGS")]
    mirror_tags: bool,
    /// Time to live of a repository's lease object (renewed every third of it while an
    /// instance fills, refreshes or compacts the repository; a crashed holder's lease is
    /// taken over after it).
    #[arg(long, env = "GOPROX_LEASE_TTL", default_value = "30s", value_parser = goprox::duration::parse_duration)]
    lease_ttl: Duration,
    /// The largest pack a fill or refresh accepts from upstream (bytes; suffixes K, M, G for
    /// KiB, MiB, GiB): beyond it the fill fails with a clear error and stores nothing.
    #[arg(long, env = "GOPROX_MAX_FILL_BYTES", value_parser = parse_size)]
    max_fill_bytes: Option<u64>,
    /// Longest a fill or refresh may talk to its upstream in all (it also fails when the
    /// transfer stays below 1 KiB/s for --fill-idle-timeout).
    #[arg(long, env = "GOPROX_MAX_FILL_TIME", default_value = "30m", value_parser = goprox::duration::parse_duration)]
    max_fill_time: Duration,
    /// A fill or refresh fails when upstream sends less than 1 KiB/s for this long.
    #[arg(long, env = "GOPROX_FILL_IDLE_TIMEOUT", default_value = "30s", value_parser = goprox::duration::parse_duration)]
    fill_idle_timeout: Duration,
    /// Fills and refreshes talking to upstreams at once; more wait their turn.
    #[arg(long, env = "GOPROX_MAX_CONCURRENT_FILLS", default_value_t = 8)]
    max_concurrent_fills: usize,
}

/// `1048576`, `512K`, `300M`, `2G` (binary units).
fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map_err(|_| format!("invalid size {s:?} (e.g. 1048576, 512K, 300M, 2G)"))?
        .checked_mul(mul)
        .ok_or_else(|| format!("size {s:?} too large"))
}

impl StoreArgs {
    fn mirror_options(&self, trust: &Arc<goprox::upstream::creds::Trust>) -> MirrorOptions {
        let prefixes = if self.ref_prefixes.iter().any(|p| p == "*") {
            Vec::new()
        } else {
            self.ref_prefixes.clone()
        };
        MirrorOptions {
            prefixes: RefPrefixes(prefixes),
            mirror_tags: self.mirror_tags,
            deadlines: goprox::fill::fetch::Deadlines {
                max_pack_bytes: self.max_fill_bytes.unwrap_or(u64::MAX),
                total: self.max_fill_time.max(Duration::from_secs(1)),
                idle: self.fill_idle_timeout.max(Duration::from_secs(1)),
                ..Default::default()
            },
            trust: trust.clone(),
        }
    }

    fn coordination(&self, single_instance: bool) -> Coordination {
        Coordination {
            leases: !single_instance,
            ttl: self.lease_ttl.max(Duration::from_secs(1)),
            max_concurrent: self.max_concurrent_fills.max(1),
            ..Default::default()
        }
    }
}

/// `--allow` / `--deny` (serve and mirror).
#[derive(Args)]
struct AccessArgs {
    /// Only serve and fill import paths matching these comma-separated glob patterns
    /// (matched against path prefixes like GOPRIVATE: `*.corp.example.com,github.com/acme`).
    /// Default: every path.
    #[arg(long, env = "GOPROX_ALLOW", value_delimiter = ',')]
    allow: Vec<String>,
    /// Never serve or fill import paths matching these patterns (same syntax as --allow;
    /// --deny wins).
    #[arg(long, env = "GOPROX_DENY", value_delimiter = ',')]
    deny: Vec<String>,
}

impl AccessArgs {
    fn access(&self) -> goprox::access::Access {
        goprox::access::Access::new(&self.allow, &self.deny)
    }
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    access: AccessArgs,
    /// Address to listen on.
    #[arg(long, env = "GOPROX_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Upload-pack requests negotiating or generating a pack at once, each on a blocking
    /// thread; later ones wait their turn. A clone answered with the stored packs whole holds
    /// a turn only while it negotiates. 0: eight per CPU core.
    #[arg(long, env = "GOPROX_MAX_PACK_GENERATIONS", default_value_t = 0)]
    max_pack_generations: usize,
    /// On SIGTERM or SIGINT: stop accepting connections, let in-flight requests finish, and
    /// exit within this whatever is still running (keep it under the container's termination
    /// grace period: Kubernetes' default is 30 s). A second signal exits at once.
    #[arg(long, env = "GOPROX_SHUTDOWN_GRACE", default_value = "25s", value_parser = goprox::duration::parse_duration)]
    shutdown_grace: Duration,
    /// Module zips built at once (each reads a version's files twice and streams the zip
    /// into the store; CPU-bound); later builds wait their turn. 0: two per CPU core.
    #[arg(long, env = "GOPROX_MAX_ZIP_BUILDS", default_value_t = 0)]
    max_zip_builds: usize,
    /// Base URL written into go-import meta tags (default: from the request's Host).
    #[arg(long, env = "GOPROX_PUBLIC_URL")]
    public_url: Option<String>,
    /// Check upstream for new refs when a repository's ref index is older than this
    /// (`0s`: on every request). Durations: `30s`, `5m`, `1h`.
    #[arg(long, env = "GOPROX_REFRESH_AFTER", default_value = "1m", value_parser = goprox::duration::parse_duration)]
    refresh_after: Duration,
    /// How long a request waits for a slow or unreachable upstream before it is served from the
    /// last ref index.
    #[arg(long, env = "GOPROX_UPSTREAM_WAIT", default_value = "3s", value_parser = goprox::duration::parse_duration)]
    upstream_wait: Duration,
    /// How long a sha (or a repository) upstream does not have is not asked for again.
    #[arg(long, env = "GOPROX_NEGATIVE_TTL", default_value = "1m", value_parser = goprox::duration::parse_duration)]
    negative_ttl: Duration,
    /// How long a repository's ref index is used from memory before it is revalidated against
    /// the store (a conditional GET); another instance's changes show after at most this.
    #[arg(long, env = "GOPROX_REF_CACHE_TTL", default_value = "2s", value_parser = goprox::duration::parse_duration)]
    ref_cache_ttl: Duration,
    /// Keep a generated pack in the store (for the next identical request) when making it took
    /// at least this long; packs over 64 MiB are not kept.
    #[arg(long, env = "GOPROX_PACK_CACHE_MIN_COST", default_value = "100ms", value_parser = goprox::duration::parse_duration)]
    pack_cache_min_cost: Duration,
    /// Repositories of at least this many objects: a new instance looks for kept packs of
    /// requests it has not seen, and after a fill (or a refresh bringing a new release) the
    /// pack of the newest version's shallow fetch (`git fetch --depth=1` of the highest release
    /// tag, else of HEAD; the go command's GOPROXY=direct fetch) is made ahead and kept.
    /// Smaller ones make their packs on demand (cheap).
    #[arg(long, env = "GOPROX_PACK_CACHE_MIN_OBJECTS", default_value_t = goprox::odb::PACK_CACHE_MIN_OBJECTS)]
    pack_cache_min_objects: u64,
    /// zlib level (0-9) for what a generated pack compresses anew (objects whose stored delta
    /// cannot be sent, new deltas): git's `pack.compression`. Lower costs less CPU per
    /// shallow or partial fetch and sends more bytes; stored entries keep their compression.
    #[arg(long, env = "GOPROX_PACK_COMPRESSION", default_value_t = goprox::odb::DEFAULT_COMPRESSION,
        value_parser = clap::value_parser!(u32).range(0..=9))]
    pack_compression: u32,
    /// Largest upload-pack request body, also after gzip decoding (413 beyond it).
    #[arg(long, env = "GOPROX_MAX_REQUEST_BYTES", default_value_t = goprox::http::MAX_BODY)]
    max_request_bytes: usize,
    /// Most `want` lines in one upload-pack request.
    #[arg(long, env = "GOPROX_MAX_WANTS", default_value_t = 10_000)]
    max_wants: usize,
    /// Most `have` lines in one upload-pack request.
    #[arg(long, env = "GOPROX_MAX_HAVES", default_value_t = 100_000)]
    max_haves: usize,
    /// A client must send a complete request head within this (also the longest a keep-alive
    /// connection may sit idle between requests).
    #[arg(long, env = "GOPROX_HEADER_TIMEOUT", default_value = "10s", value_parser = goprox::duration::parse_duration)]
    header_timeout: Duration,
    /// A client must send the whole request body within this (408 beyond it).
    #[arg(long, env = "GOPROX_BODY_TIMEOUT", default_value = "60s", value_parser = goprox::duration::parse_duration)]
    body_timeout: Duration,
    /// Serve HTTPS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "GOPROX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "GOPROX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// htpasswd file with bcrypt hashes (`htpasswd -B`): clients must authenticate with HTTP
    /// basic auth on every route but /healthz, /readyz and the push hooks (which carry their
    /// own signature or token). Re-read when it changes.
    #[arg(long, env = "GOPROX_AUTH_FILE")]
    auth_file: Option<std::path::PathBuf>,
    /// Believe `X-Forwarded-Proto` and `X-Forwarded-Host` on go-get pages (only behind a
    /// TLS-terminating proxy that sets them; without `--public-url`).
    #[arg(long, env = "GOPROX_TRUST_FORWARDED_HEADERS")]
    trust_forwarded_headers: bool,
    /// Start even if the store does not honour conditional writes (only safe when this is the
    /// only process writing to the store).
    #[arg(long, env = "GOPROX_SINGLE_INSTANCE")]
    single_instance: bool,
    /// Checksum databases relayed at /sumdb/NAME/ (NAME=URL, repeatable; comma-separated in the
    /// env var), answers that never change kept in the store; `off`: none (clients go to the
    /// database directly).
    #[arg(long = "sumdb", env = "GOPROX_SUMDB", value_delimiter = ',', default_value = goprox::modproxy::sumdb::DEFAULT)]
    sumdb: Vec<String>,
    /// Check each module version's zip and go.mod hashes against the first --sumdb database
    /// before they are first served: a mismatch is a 410 (and nothing is recorded), a version
    /// the database does not know is served, a database that cannot be asked is a 502.
    #[arg(long, env = "GOPROX_VERIFY_SUMDB")]
    verify_sumdb: bool,
    /// Module paths never looked up in the checksum database by --verify-sumdb
    /// (comma-separated globs, GOPRIVATE syntax: `*.corp.example.com,github.com/acme`).
    #[arg(long, env = "GOPROX_NOSUMDB", value_delimiter = ',')]
    nosumdb: Vec<String>,
    /// What go-get pages answer: `git` (`<root> git <url>/<root>`, the repository) or `mod`
    /// (`<root> mod <url>`: goprox as the module proxy, also with GOPROXY=direct).
    #[arg(long, env = "GOPROX_GO_IMPORT", default_value = "git", value_parser = ["git", "mod"])]
    go_import: String,
    /// Push hooks (`POST /-/hooks/github`, `/-/hooks/gitea`, `/-/hooks/gitlab`): the HMAC key
    /// GitHub and Gitea sign with, and GitLab's secret token. Without it those hooks are off.
    #[arg(long, env = "GOPROX_WEBHOOK_SECRET", hide_env_values = true)]
    webhook_secret: Option<String>,
    /// Bearer token of `POST /-/hooks/refresh?repo=<import path>` (scripts, CI). Without it
    /// that hook is off.
    #[arg(long, env = "GOPROX_WEBHOOK_TOKEN", hide_env_values = true)]
    webhook_token: Option<String>,
}

#[derive(Args)]
struct GcArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Only delete what has been unreferenced, retired or expired for at least this long
    /// (e.g. 30s, 5m, 1h, 2d). Keep it above the longest fill and clone.
    #[arg(long, env = "GOPROX_GC_GRACE", default_value = "1h", value_parser = goprox::duration::parse_duration)]
    grace: std::time::Duration,
}

#[derive(Args)]
struct FsckArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Repository roots to check (default: every repository with a ref index).
    roots: Vec<String>,
}

#[derive(Args)]
struct StatsArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON document instead of a table.
    #[arg(long)]
    json: bool,
    /// Repository roots to show (default: every repository with a ref index).
    roots: Vec<String>,
}

#[derive(Args)]
struct MirrorArgs {
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    access: AccessArgs,
    /// Also fill (or refresh) the repositories of the modules a go.mod (its `require` and
    /// `replace` directives) or go.sum (a file whose name ends in `.sum`) names. Repeatable, or
    /// several files after one flag.
    #[arg(long = "from-go-mod", value_name = "FILE", num_args = 1..)]
    from_go_mod: Vec<std::path::PathBuf>,
    /// With `--from-go-mod`: also build and record every listed module version's `.info`,
    /// `.mod` and `.zip` (the module proxy's ledger), so that a new bucket answers a whole
    /// build warm.
    #[arg(long, requires = "from_go_mod")]
    modules: bool,
    /// Import paths to fill or refresh.
    #[arg(required_unless_present = "from_go_mod")]
    paths: Vec<String>,
}

async fn open_store(a: &StoreArgs) -> anyhow::Result<store::DynStore> {
    let opts = S3Options {
        endpoint: a.s3_endpoint.clone(),
        path_style: a.s3_path_style,
        region: a.s3_region.clone(),
        retry: goprox::store::retry::RetryPolicy {
            max_attempts: a.s3_max_attempts,
            deadline: a.s3_timeout,
            read_timeout: a.s3_read_timeout.max(Duration::from_millis(100)),
            ..Default::default()
        },
        connect_timeout: Some(a.s3_connect_timeout),
    };
    store::open(&a.store, &opts).await
}

/// Take credentials out of the rules' URLs (they must never be logged or stored), read the
/// netrc file, and trust the explicit `--upstream` rules as given (they may name http and
/// private hosts; every other upstream goes through the policy in `goprox::upstream::policy`). Returns
/// the rules without userinfo.
fn prepare_upstreams(
    a: &StoreArgs,
) -> anyhow::Result<(Vec<Rule>, Arc<goprox::upstream::creds::Trust>)> {
    let mut creds = goprox::upstream::creds::Credentials::default();
    let mut rules = Vec::new();
    for r in &a.upstreams {
        let (url, secret) = goprox::upstream::creds::split_userinfo(&r.url);
        if let Some(s) = secret {
            creds.by_prefix.push((url.clone(), s));
        }
        rules.push(Rule {
            prefix: r.prefix.clone(),
            url,
            discover: false,
        });
    }
    rules.extend(a.discover.iter().cloned());
    if let Some(p) = goprox::upstream::creds::netrc_path(a.netrc.as_deref()) {
        match std::fs::read_to_string(&p) {
            Ok(text) => {
                creds.by_host = goprox::upstream::creds::parse_netrc(&text);
                tracing::info!(file = %p.display(), hosts = creds.by_host.len(), "upstream credentials from netrc");
            }
            Err(e) if a.netrc.is_some() => {
                anyhow::bail!("--netrc {}: {e}", p.display());
            }
            Err(e) => tracing::warn!(file = %p.display(), error = %e, "cannot read netrc"),
        }
    }
    if let Some(p) = &a.upstream_ca {
        let pem =
            std::fs::read(p).map_err(|e| anyhow::anyhow!("--upstream-ca {}: {e}", p.display()))?;
        creds.roots = goprox::upstream::creds::parse_roots(&pem)
            .map_err(|e| anyhow::anyhow!("--upstream-ca {}: {e}", p.display()))?;
        tracing::info!(file = %p.display(), certificates = creds.roots.len(), "extra upstream CA roots");
    }
    let trust = goprox::upstream::creds::Trust {
        credentials: creds,
        trusted: rules.iter().map(|r| r.url.clone()).collect(),
    };
    Ok((rules, Arc::new(trust)))
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).init();
    } else {
        logs.init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("goprox: cannot start runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Serve(a) => serve(a).await,
            Cmd::Mirror(a) => interruptible("mirror", mirror(a)).await,
            Cmd::Gc(a) => interruptible("gc", gc(a)).await,
            Cmd::Fsck(a) => fsck(a).await,
            Cmd::Stats(a) => stats(a).await,
        }
    });
    // Dropping the runtime would wait for every blocking task without bound, and a task
    // blocked on the runtime it is shutting down (a fill's store write) never ends: the
    // process hung after "stopped". Whatever is still running now is cut short.
    rt.shutdown_timeout(RUNTIME_SHUTDOWN);
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("goprox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The start-up probe, retried for a while when the store itself fails (an S3 server still
/// allocating a new bucket answers 500 for a moment); a store that ignores conditional writes
/// fails at once.
async fn probe_with_retries(store: &dyn store::ObjectStore) -> Result<(), store::ProbeError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut pause = Duration::from_millis(250);
    loop {
        match store::probe(store).await {
            Err(e @ store::ProbeError::Store { .. }) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "store probe failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            r => return r,
        }
    }
}

// Long because it is the server's start-up wiring, run once: each step turns flags into a
// part the next needs (store, filler, repositories, state), then it serves and winds down.
async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    // The Prometheus recorder behind `/metrics` (installed lazily anyway; here before any
    // store call or request is measured).
    goprox::metrics::install();
    let (rules, trust) = prepare_upstreams(&a.store)?;
    let tls = match (&a.tls_cert, &a.tls_key) {
        (Some(c), Some(k)) => Some(goprox::http::server::tls_acceptor(c, k)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let auth = match &a.auth_file {
        Some(f) => {
            let users = goprox::http::auth::Users::open(f)?;
            tracing::info!(file = %f.display(), "client authentication required (--auth-file)");
            Some(Arc::new(users))
        }
        None => None,
    };
    let store = open_store(&a.store).await?;
    let single_instance = match probe_with_retries(store.as_ref()).await {
        Ok(()) => {
            if a.single_instance {
                tracing::info!("--single-instance given; the store would also allow sharing");
            }
            a.single_instance
        }
        Err(e) if a.single_instance => {
            tracing::warn!(
                error = %e,
                "store probe failed; continuing because of --single-instance \
                 (do not let another goprox write to this store)"
            );
            true
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(
                "store probe failed: refusing to start (pass --single-instance if this is the \
                 only goprox writing to the store)",
            ));
        }
    };
    let mut io = Io::new(
        store.clone(),
        tokio::runtime::Handle::current(),
        a.store.cache_size,
    );
    io.pack_cache_min_cost = a.pack_cache_min_cost;
    io.pack_cache_min_objects = a.pack_cache_min_objects;
    io.pack_compression = a.pack_compression;
    let io = Arc::new(io);
    let filler = Filler::new(store.clone())
        .with_options(a.store.mirror_options(&trust))
        .with_coordination(a.store.coordination(single_instance));
    let policy = RefreshPolicy {
        refresh_after: a.refresh_after,
        upstream_wait: a.upstream_wait,
        negative_ttl: a.negative_ttl,
        ref_ttl: a.ref_cache_ttl,
    };
    let repos = Arc::new(
        Repos::new(store.clone(), io, filler)
            .with_policy(policy)
            .with_index_budget(a.store.index_cache_size),
    );
    let sumdb = goprox::modproxy::sumdb::Relay::from_specs(&a.sumdb, store.clone(), &trust)
        .map_err(anyhow::Error::msg)?
        .map(Arc::new);
    match &sumdb {
        Some(r) => tracing::info!(sumdb = %r.describe(), "checksum databases relayed"),
        None => tracing::info!("no checksum database relayed (--sumdb off)"),
    }
    let verify = match (&sumdb, a.verify_sumdb) {
        (_, false) => None,
        (None, true) => anyhow::bail!("--verify-sumdb needs a checksum database (--sumdb is off)"),
        (Some(r), true) => {
            let v = goprox::modproxy::sumdb::Verifier::new(r.clone(), &a.nosumdb);
            tracing::info!(db = v.database(), nosumdb = %a.nosumdb.join(","), "module versions verified against the checksum database before they are first served");
            Some(Arc::new(v))
        }
    };
    let go_import = match a.go_import.as_str() {
        "mod" => goprox::http::GoImport::Mod,
        _ => goprox::http::GoImport::Git,
    };
    let listener = tokio::net::TcpListener::bind(&a.listen).await?;
    let addr = listener.local_addr()?;
    let on_off = |b: bool| if b { "on" } else { "off" }.to_string();
    let settings = vec![
        ("refresh-after", format!("{:?}", a.refresh_after)),
        ("upstream-wait", format!("{:?}", a.upstream_wait)),
        ("negative-ttl", format!("{:?}", a.negative_ttl)),
        ("ref-cache-ttl", format!("{:?}", a.ref_cache_ttl)),
        ("cache-size", a.store.cache_size.to_string()),
        ("index-cache-size", a.store.index_cache_size.to_string()),
        ("shutdown-grace", format!("{:?}", a.shutdown_grace)),
        ("go-import", a.go_import.clone()),
        ("sumdb", a.sumdb.join(",")),
        ("verify-sumdb", on_off(a.verify_sumdb)),
        ("auth-file", on_off(auth.is_some())),
        ("single-instance", on_off(single_instance)),
        ("webhook-secret", on_off(a.webhook_secret.is_some())),
        ("webhook-token", on_off(a.webhook_token.is_some())),
    ];
    let status = Arc::new(goprox::http::status::Status::new(&store, settings));
    let hooks = Arc::new(goprox::http::hooks::Hooks::new(
        a.webhook_secret.clone(),
        a.webhook_token.clone(),
    ));
    let state = Arc::new(AppState {
        repos,
        resolver: Resolver::new(rules).with_trust(trust),
        public_url: a.public_url.clone(),
        access: a.access.access(),
        auth,
        limits: goprox::http::Limits {
            max_request_bytes: a.max_request_bytes,
            max_wants: a.max_wants,
            max_haves: a.max_haves,
            body_timeout: a.body_timeout.max(Duration::from_millis(100)),
        },
        listen_url: format!("{scheme}://{addr}"),
        tls: tls.is_some(),
        single_instance,
        trust_forwarded: a.trust_forwarded_headers,
        pack_generations: Arc::new(tokio::sync::Semaphore::new(match a.max_pack_generations {
            0 => 8 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        })),
        zip_builds: Arc::new(tokio::sync::Semaphore::new(match a.max_zip_builds {
            0 => 2 * std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        })),
        sumdb,
        verify,
        go_import,
        status,
        hooks,
    });
    println!(
        "goprox listening on {scheme}://{addr} (store: {})",
        store.describe()
    );
    tracing::info!(%addr, store = %store.describe(), "listening");
    let limits = goprox::http::server::ServerLimits {
        header_timeout: a.header_timeout.max(Duration::from_millis(100)),
        // The rest of the grace is for the runtime's own shutdown (see `main`).
        drain_timeout: a
            .shutdown_grace
            .saturating_sub(RUNTIME_SHUTDOWN + HAND_OFF)
            .max(Duration::from_millis(100)),
    };
    let signalled = Arc::new(std::sync::OnceLock::new());
    let s2 = signalled.clone();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = s2.set(std::time::Instant::now());
    };
    goprox::http::server::serve(listener, router(state), limits, tls, shutdown).await?;
    // Work still going on without a client (fills, refreshes, compactions) may finish in
    // the rest of the grace; what cannot is handed off: its leases are released, so another
    // instance takes it over at once (a fill received whole is adopted, not fetched again).
    let since = signalled
        .get()
        .copied()
        .unwrap_or_else(std::time::Instant::now);
    let finished = goprox::refs::lease::quiesce(since + limits.drain_timeout).await;
    // Writes that follow answered requests: catalog notes, generated packs kept for the next
    // identical request (a lost one only costs that request its shortcut).
    let settle_by =
        (since + limits.drain_timeout).max(std::time::Instant::now() + Duration::from_millis(200));
    if goprox::background::pending() > 0 && !goprox::background::settle(settle_by).await {
        tracing::warn!(
            pending = goprox::background::pending(),
            "background writes cut short by the shutdown grace"
        );
    }
    if !finished {
        let held = goprox::refs::lease::held();
        let n = goprox::refs::lease::hand_off(HAND_OFF).await;
        tracing::warn!(
            held,
            handed_off = n,
            "work still running at the end of the shutdown grace: leases handed off, the rest is cut short"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// How long, at most, the runtime waits for its remaining tasks once the command is done.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(2);
/// How long, at most, leases still held at the end of the grace take to be given back.
const HAND_OFF: Duration = Duration::from_secs(1);

/// Run a writing command (`mirror`, `gc`) until it ends or a signal comes: then its leases
/// are handed off and it fails. What it stored stays consistent: every object is written
/// before the ref index that names it, and a repository's work is finished by whoever takes
/// its lease next.
async fn interruptible(
    what: &str,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        r = work => r,
        () = one_signal() => {
            tracing::warn!("{what}: stopping on a signal");
            let n = goprox::refs::lease::hand_off(HAND_OFF).await;
            anyhow::bail!("{what} interrupted by a signal ({n} lease(s) handed off); the store is consistent, run it again to finish")
        }
    }
}

/// The next Ctrl-C or SIGTERM.
async fn one_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

/// Ctrl-C or SIGTERM (a second one exits at once).
async fn shutdown_signal() {
    one_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    tokio::spawn(async {
        one_signal().await;
        eprintln!("goprox: second signal: exiting now");
        std::process::exit(1);
    });
}

struct Bar(indicatif::ProgressBar);

impl FillProgress for Bar {
    fn fetched(&self, root: &str, bytes: u64) {
        self.0
            .set_message(format!("{root}: fetched {}", indicatif::HumanBytes(bytes)));
    }
    fn stored(&self, root: &str, objects: u32, bytes: u64) {
        say(
            &self.0,
            &format!(
                "{root}: stored {objects} objects, {}",
                indicatif::HumanBytes(bytes)
            ),
        );
    }
}

/// Print a line above the progress bar (also when the bar is hidden because stderr is not a
/// terminal, unlike `ProgressBar::println`).
fn say(bar: &indicatif::ProgressBar, line: &str) {
    bar.suspend(|| println!("{line}"));
}

/// One thing `goprox mirror` is asked for: an import path on the command line, or a module a
/// go.mod or go.sum names.
struct Wanted {
    path: String,
    /// The versions the files name (empty for a command-line path).
    versions: Vec<String>,
    /// Named by a file: a refusal by `--allow`/`--deny` is reported but is not a failure.
    from_file: bool,
}

/// What became of a repository, or of a wanted path.
#[derive(Debug, Clone)]
enum Outcome {
    /// The store did not have the repository; it does now.
    Filled(String),
    /// The store had it; it was refreshed (or found unchanged).
    Present(String),
    /// `--allow`/`--deny` or the upstream policy refused it.
    Refused(String),
    Failed(String),
}

/// `goprox mirror`: resolve import paths, then fill or refresh their repositories.
struct Mirrorer {
    store: store::DynStore,
    resolver: Resolver,
    repos: Arc<Repos>,
    access: goprox::access::Access,
    bar: indicatif::ProgressBar,
}

impl Mirrorer {
    /// `--modules`: answer each listed module version's `.info`, `.mod` and `.zip` through
    /// the module front (which records them in the bucket). Returns how many failed.
    async fn record_modules(&self, wanted: &[Wanted]) -> usize {
        use goprox::modproxy::Request;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let turns = Arc::new(tokio::sync::Semaphore::new(8 * cores));
        let zip_builds = Arc::new(tokio::sync::Semaphore::new(2 * cores));
        let front = goprox::modproxy::front::Front {
            repos: &self.repos,
            resolver: &self.resolver,
            access: &self.access,
            turns: &turns,
            zip_builds: &zip_builds,
            verify: None,
        };
        let headers = axum::http::HeaderMap::new();
        let (mut recorded, mut failed) = (0, 0);
        for w in wanted.iter().filter(|w| w.from_file) {
            if self.access.check(&w.path).is_err() {
                continue; // reported above
            }
            for v in &w.versions {
                let mut problem = None;
                for req in [
                    Request::Info(v.clone()),
                    Request::Mod(v.clone()),
                    Request::Zip(v.clone()),
                ] {
                    let resp = front.serve(&w.path, req, &headers).await;
                    let status = resp.status();
                    // Read the answer through: a zip is only recorded once it is stored.
                    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await;
                    if !status.is_success() {
                        let text = body
                            .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                            .unwrap_or_default();
                        problem = Some(format!("{status}: {text}"));
                        break;
                    }
                }
                match problem {
                    None => recorded += 1,
                    Some(why) => {
                        failed += 1;
                        println!("{}@{v}: module not recorded: {why}", w.path);
                    }
                }
            }
        }
        println!("module versions: {recorded} recorded, {failed} failed");
        failed
    }

    async fn new(a: &MirrorArgs) -> anyhow::Result<Mirrorer> {
        let store = open_store(&a.store).await?;
        let (rules, trust) = prepare_upstreams(&a.store)?;
        let resolver = Resolver::new(rules).with_trust(trust.clone());
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} repos {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let filler = Filler::new(store.clone())
            .with_options(a.store.mirror_options(&trust))
            .with_coordination(a.store.coordination(false))
            .with_progress(Arc::new(Bar(bar.clone())));
        let io = Arc::new(Io::new(
            store.clone(),
            tokio::runtime::Handle::current(),
            a.store.cache_size,
        ));
        // Never refresh inside `open`: a repository that exists is refreshed below, with errors
        // reported rather than served around.
        let policy = RefreshPolicy {
            refresh_after: Duration::MAX,
            ..Default::default()
        };
        let repos = Arc::new(
            Repos::new(store.clone(), io, filler)
                .with_policy(policy)
                .with_index_budget(a.store.index_cache_size)
                .for_batch(),
        );
        Ok(Mirrorer {
            store,
            resolver,
            repos,
            access: a.access.access(),
            bar,
        })
    }

    /// The repository of an import path, or why it is not mirrored.
    async fn target(&self, path: &str) -> Result<Target, Outcome> {
        goprox::path::validate(path).map_err(|e| Outcome::Failed(e.to_string()))?;
        self.access.check(path).map_err(Outcome::Refused)?;
        self.resolver.resolve(path).await.map_err(|e| match e {
            ResolveError::Refused(_) => Outcome::Refused(e.to_string()),
            _ => Outcome::Failed(e.to_string()),
        })
    }

    /// Fill a repository the store lacks, or refresh one it has; prints one line.
    async fn fill(&self, target: &Target) -> Outcome {
        let existed = match goprox::refs::load(&self.store, &Keys::new(&target.root)).await {
            Ok(x) => x.is_some(),
            Err(e) => return self.report(target, Outcome::Failed(e.to_string())),
        };
        let result = match self.repos.open(target).await {
            Ok(repo) if existed => self
                .repos
                .refresh_now(target, &repo)
                .await
                .map(|r| match r {
                    Refreshed::Unchanged => format!("{} refs, unchanged", repo.index.refs.len()),
                    Refreshed::Updated(i, _, _) => format!(
                        "{} refs, refreshed (generation {}, {} packs)",
                        i.refs.len(),
                        i.generation,
                        i.packs.len()
                    ),
                })
                .map_err(|e| e.to_string()),
            Ok(repo) => Ok(format!("{} refs, filled", repo.index.refs.len())),
            Err(e) => Err(e.to_string()),
        };
        let outcome = match result {
            Ok(msg) if existed => Outcome::Present(msg),
            Ok(msg) => Outcome::Filled(msg),
            Err(e) => Outcome::Failed(e),
        };
        self.report(target, outcome)
    }

    fn report(&self, target: &Target, outcome: Outcome) -> Outcome {
        match &outcome {
            Outcome::Filled(m) | Outcome::Present(m) => {
                say(
                    &self.bar,
                    &format!("{}: {m} from {}", target.root, target.upstream),
                );
            }
            Outcome::Refused(e) | Outcome::Failed(e) => {
                say(&self.bar, &format!("{}: {e}", target.root));
            }
        }
        outcome
    }
}

/// A module a `--from-go-mod` file names but does not fetch: `(path@version, why)`.
type SkippedModule = (String, String);

/// The modules the `--from-go-mod` files name, by path, and those they name but replace with
/// a directory.
fn modules_from_files(
    files: &[std::path::PathBuf],
) -> anyhow::Result<(Vec<Wanted>, Vec<SkippedModule>)> {
    let mut wanted = Vec::new();
    let mut skipped = Vec::new();
    for f in files {
        let data =
            std::fs::read(f).map_err(|e| anyhow::anyhow!("--from-go-mod {}: {e}", f.display()))?;
        let text = String::from_utf8(data)
            .map_err(|_| anyhow::anyhow!("--from-go-mod {}: not UTF-8 text", f.display()))?;
        let m = goprox::gomod::modules_of_file(&f.to_string_lossy(), &text)
            .map_err(|e| anyhow::anyhow!("--from-go-mod {}: {e}", f.display()))?;
        wanted.extend(m.wanted);
        skipped.extend(m.skipped);
    }
    let by_path = goprox::gomod::by_path(&wanted);
    let skipped = skipped
        .into_iter()
        .filter(|s| !by_path.contains_key(&s.module.path))
        .map(|s| (format!("{}@{}", s.module.path, s.module.version), s.why))
        .collect();
    let wanted = by_path
        .into_iter()
        .map(|(path, versions)| Wanted {
            path,
            versions: versions.into_iter().collect(),
            from_file: true,
        })
        .collect();
    Ok((wanted, skipped))
}

// Long because its report walks the requested paths in order against three parallel lists
// of the resolution (outcomes, targets, which target is whose), kept together here.
async fn mirror(a: MirrorArgs) -> anyhow::Result<()> {
    // Read the files first: a bad one stops everything before any upstream is contacted.
    let (from_files, skipped) = modules_from_files(&a.from_go_mod)?;
    let mut wanted: Vec<Wanted> = a
        .paths
        .iter()
        .map(|p| Wanted {
            path: p.clone(),
            versions: Vec::new(),
            from_file: false,
        })
        .collect();
    wanted.extend(from_files);
    let m = Mirrorer::new(&a).await?;

    // Resolve everything, then fill each repository once (modules `/v2`, subdirectories and
    // several paths of one repository share it).
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(wanted.len());
    let mut targets: Vec<Target> = Vec::new();
    let mut target_of: Vec<Option<usize>> = Vec::with_capacity(wanted.len());
    for w in &wanted {
        match m.target(&w.path).await {
            Ok(t) => {
                let i = match targets.iter().position(|x| x.root == t.root) {
                    Some(i) => i,
                    None => {
                        targets.push(t);
                        targets.len() - 1
                    }
                };
                target_of.push(Some(i));
                outcomes.push(None);
            }
            Err(o) => {
                if !w.from_file
                    && let Outcome::Refused(why) | Outcome::Failed(why) = &o
                {
                    m.bar.suspend(|| eprintln!("goprox: {why}"));
                }
                target_of.push(None);
                outcomes.push(Some(o));
            }
        }
    }
    m.bar.set_length(targets.len() as u64);
    let mut filled = Vec::with_capacity(targets.len());
    for t in &targets {
        filled.push(m.fill(t).await);
        m.bar.inc(1);
    }
    m.bar.finish_and_clear();
    // Bitmaps of what was just filled are built in the background: wait for them, and for
    // the catalog notes of what was published.
    m.repos.finish_background().await;
    goprox::background::settle(std::time::Instant::now() + Duration::from_secs(30)).await;

    let (mut n_filled, mut n_present, mut n_refused, mut n_failed) = (0, 0, 0, 0);
    let mut failed = 0;
    for ((w, o), t) in wanted.iter().zip(outcomes).zip(&target_of) {
        let (outcome, root) = match (o, t) {
            (Some(o), _) => (o, None),
            (None, Some(i)) => (filled[*i].clone(), Some(targets[*i].root.as_str())),
            (None, None) => (Outcome::Failed("not resolved".into()), None),
        };
        let is_failure = match &outcome {
            Outcome::Failed(_) => true,
            Outcome::Refused(_) => !w.from_file,
            _ => false,
        };
        failed += usize::from(is_failure);
        if !w.from_file {
            continue;
        }
        let name = format!("{}@{}", w.path, w.versions.join(","));
        let root = root.unwrap_or_default();
        let line = match &outcome {
            Outcome::Filled(_) => {
                n_filled += 1;
                format!("{name}: filled ({root})")
            }
            Outcome::Present(msg) => {
                n_present += 1;
                format!("{name}: already present ({root}: {msg})")
            }
            Outcome::Refused(why) => {
                n_refused += 1;
                format!("{name}: refused: {why}")
            }
            Outcome::Failed(why) => {
                n_failed += 1;
                if root.is_empty() {
                    format!("{name}: failed: {why}")
                } else {
                    format!("{name}: failed ({root}): {why}")
                }
            }
        };
        println!("{line}");
    }
    for (name, why) in &skipped {
        println!("{name}: skipped: {why}");
    }
    if a.modules {
        failed += m.record_modules(&wanted).await;
    }
    if !a.from_go_mod.is_empty() {
        println!(
            "modules: {} in {} repositories: {n_filled} filled, {n_present} already present, \
             {n_refused} refused, {n_failed} failed, {} skipped",
            n_filled + n_present + n_refused + n_failed,
            targets.len(),
            skipped.len()
        );
    }
    if failed > 0 {
        anyhow::bail!(
            "{failed} of {} requested import paths and modules failed",
            wanted.len()
        );
    }
    Ok(())
}

async fn gc(a: GcArgs) -> anyhow::Result<()> {
    let store = open_store(&a.store).await?;
    let holder = format!("gc@{}", goprox::refs::lease::default_holder());
    let mut print = |line: String| println!("{line}");
    let s = goprox::maint::gc::run(&store, a.grace, &holder, &mut print).await?;
    goprox::background::settle(std::time::Instant::now() + Duration::from_secs(30)).await;
    println!(
        "gc: {} repositories, deleted {} objects ({} bytes), dropped {} retired entries, \
         aborted {} uploads, skipped {}, {} errors",
        s.repositories,
        s.deleted,
        s.deleted_bytes,
        s.retired_dropped,
        s.uploads_aborted,
        s.skipped,
        s.errors
    );
    if s.errors > 0 {
        anyhow::bail!("gc finished with {} errors", s.errors);
    }
    Ok(())
}

async fn fsck(a: FsckArgs) -> anyhow::Result<()> {
    let store = open_store(&a.store).await?;
    let report = goprox::maint::fsck::check(&store, &a.roots).await?;
    for p in &report.problems {
        println!("{p}");
    }
    if !report.ok() {
        anyhow::bail!(
            "{} problems in {} repositories",
            report.problems.len(),
            report.repositories
        );
    }
    println!("ok: {} repositories", report.repositories);
    Ok(())
}

async fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let store = open_store(&a.store).await?;
    let report = goprox::maint::stats::collect(&store, &a.roots).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", goprox::maint::stats::table(&report));
    }
    Ok(())
}
