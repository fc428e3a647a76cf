//! The operators' page: `GET /` and `/-/status` (HTML, server-rendered, no script) and its
//! JSON twin `/-/status.json`. What it reads:
//! - the catalog ([`crate::refs::catalog`]): per repository its upstream, refs, packs, size, last
//!   fetch and last look upstream: at most one conditional GET per shard per page view, none
//!   within a second of the last; never a bucket listing;
//! - the lease object of each repository on the page shown (who is working on it, on any
//!   instance);
//! - this process's own activity: fills and refreshes under way, requests per repository in
//!   the last hour, recent errors.
//!
//! Every text that comes from outside (import paths, upstream URLs, error lines) is escaped.

use crate::activity::{Activity, RecentError};
use crate::refs::catalog::{Catalog, Entry, Outcome, Shard};
use crate::repo::Work;
use crate::store::DynStore;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// Rows per page unless `per` says otherwise (at most [`MAX_PER_PAGE`]).
pub const PER_PAGE: usize = 50;
/// Most rows per page, whatever `per` asks for.
pub const MAX_PER_PAGE: usize = 500;

/// What the page knows about this process (set at start-up).
pub struct Status {
    /// Reader of the repository catalog in the store.
    pub catalog: Catalog,
    /// The store, described without secrets.
    pub store: String,
    /// Settings that matter to an operator, by flag name.
    pub settings: Vec<(&'static str, String)>,
    /// This process's lease holder name.
    pub holder: String,
    /// Unix seconds of the start.
    pub started_at: u64,
}

impl Status {
    /// The status of a process using `store`, with the operator `settings` to show; the
    /// catalog is revalidated at most once a second.
    pub fn new(store: &DynStore, settings: Vec<(&'static str, String)>) -> Self {
        Status {
            catalog: Catalog::new(store.clone(), Duration::from_secs(1)),
            store: store.describe(),
            settings,
            holder: crate::refs::lease::default_holder(),
            started_at: unix_now(),
        }
    }
}

/// The page's query: `?q=<text>&status=failed&sort=size&page=2&per=100`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct Query {
    /// Substring of the import path or upstream (case-insensitive).
    pub q: String,
    /// `failed`: only repositories whose last look upstream failed; `busy`: only those being
    /// filled or refreshed.
    pub status: String,
    /// `root` (default), `size`, `refs`, `fetched`, `checked`, `hits`.
    pub sort: String,
    /// 1-based.
    pub page: usize,
    /// Rows per page: 0 means [`PER_PAGE`]; capped at [`MAX_PER_PAGE`].
    pub per: usize,
}

/// Everything one page view shows (the JSON document of `/-/status.json`).
#[derive(Debug, Serialize)]
pub struct Report {
    /// This process.
    pub instance: Instance,
    /// Sums over every repository in the catalog (not only the matching ones).
    pub totals: Totals,
    /// The page of repositories matching the query.
    pub repositories: Page,
    /// Fills and refreshes under way on this instance.
    pub in_progress: Vec<Work>,
    /// The busiest repositories of the last hour on this instance.
    pub top: Vec<Top>,
    /// Recent errors on this instance, newest first.
    pub errors: Vec<RecentError>,
    /// Set when the catalog could not be read (the rest of the page is this process's own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_error: Option<String>,
}

/// The process answering the page.
#[derive(Debug, Serialize)]
pub struct Instance {
    /// The agent string ([`crate::AGENT`]).
    pub version: &'static str,
    /// This process's lease holder name.
    pub holder: String,
    /// Unix seconds of the start.
    pub started_at: u64,
    /// Seconds since the start.
    pub uptime_secs: u64,
    /// The store, described without secrets.
    pub store: String,
    /// Settings that matter to an operator, by flag name.
    pub settings: Vec<(&'static str, String)>,
}

/// Sums over the catalog's entries.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Repositories in the catalog.
    pub repositories: u64,
    /// Refs over all repositories.
    pub refs: u64,
    /// Tags over all repositories.
    pub tags: u64,
    /// Packs over all repositories.
    pub packs: u64,
    /// Objects in those packs.
    pub objects: u64,
    /// Bytes of those packs.
    pub bytes: u64,
    /// Repositories whose last look upstream failed.
    pub failing: u64,
    /// Module versions whose zips are built and recorded.
    pub module_versions: u64,
    /// Bytes of those zips.
    pub zip_bytes: u64,
}

/// One page of the repositories matching a query.
#[derive(Debug, Serialize)]
pub struct Page {
    /// The query, with `page` clamped to the pages there are and `per` resolved.
    pub query: Query,
    /// Repositories matching the query.
    pub matched: usize,
    /// Pages there are (at least 1).
    pub pages: usize,
    /// The rows of this page.
    pub rows: Vec<Row>,
}

/// One repository on the page.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The import path.
    pub root: String,
    /// Its catalog entry.
    #[serde(flatten)]
    pub entry: Entry,
    /// Who holds the repository's lease now (any instance), if anyone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<LeaseView>,
    /// Requests that opened it on this instance in the last hour.
    pub hits_last_hour: u32,
    /// `fill` or `refresh` when this instance is working on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub busy: Option<&'static str>,
}

/// A lease held on a repository, as of the page view.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseView {
    /// The holder's name (instance).
    pub holder: String,
    /// Milliseconds until the lease expires unless renewed.
    pub expires_in_ms: u64,
}

/// One of the busiest repositories on this instance.
#[derive(Debug, Serialize)]
pub struct Top {
    /// The import path.
    pub root: String,
    /// Requests that opened it on this instance in the last hour.
    pub hits: u32,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Filter, sort and page the catalog (no I/O): the part of a page view that grows with the
/// number of repositories.
pub fn build(
    shards: &[Arc<Shard>],
    activity: &Activity,
    in_progress: &[Work],
    query: &Query,
) -> (Totals, Page) {
    let busy = |root: &str| in_progress.iter().find(|w| w.root == root).map(|w| w.kind);
    let (totals, mut matched) = tally_and_filter(shards, query, busy);
    sort_matched(&mut matched, &query.sort, activity);
    let per = match query.per {
        0 => PER_PAGE,
        n => n.min(MAX_PER_PAGE),
    };
    let pages = matched.len().div_ceil(per).max(1);
    let page = query.page.clamp(1, pages);
    let rows = matched
        .iter()
        .skip((page - 1) * per)
        .take(per)
        .map(|(root, e)| Row {
            root: (*root).clone(),
            entry: (*e).clone(),
            lease: None,
            hits_last_hour: activity.hits(root),
            busy: busy(root),
        })
        .collect();
    let mut q = query.clone();
    q.page = page;
    q.per = per;
    (
        totals,
        Page {
            query: q,
            matched: matched.len(),
            pages,
            rows,
        },
    )
}

/// The sums over every repository, and the repositories matching the query's text and status
/// filters (unsorted).
fn tally_and_filter<'a>(
    shards: &'a [Arc<Shard>],
    query: &Query,
    busy: impl Fn(&str) -> Option<&'static str>,
) -> (Totals, Vec<(&'a String, &'a Entry)>) {
    let mut totals = Totals::default();
    let needle = query.q.trim().to_lowercase();
    let mut matched: Vec<(&String, &Entry)> = Vec::new();
    for shard in shards {
        for (root, e) in &shard.repos {
            totals.repositories += 1;
            totals.refs += u64::from(e.refs);
            totals.tags += u64::from(e.tags);
            totals.packs += u64::from(e.packs);
            totals.objects += e.objects;
            totals.bytes += e.bytes;
            totals.module_versions += u64::from(e.versions);
            totals.zip_bytes += e.zip_bytes;
            if e.outcome == Outcome::Failed {
                totals.failing += 1;
            }
            if !needle.is_empty()
                && !root.to_lowercase().contains(&needle)
                && !e.upstream.to_lowercase().contains(&needle)
            {
                continue;
            }
            match query.status.as_str() {
                "failed" if e.outcome != Outcome::Failed => continue,
                "busy" if busy(root).is_none() => continue,
                _ => {}
            }
            matched.push((root, e));
        }
    }
    (totals, matched)
}

/// Order the matching repositories by the query's `sort` (ties, and the default, by import
/// path).
fn sort_matched(matched: &mut Vec<(&String, &Entry)>, sort: &str, activity: &Activity) {
    match sort {
        "size" => matched.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0))),
        "refs" => matched.sort_by(|a, b| b.1.refs.cmp(&a.1.refs).then(a.0.cmp(b.0))),
        "fetched" => matched.sort_by(|a, b| b.1.fetched_at.cmp(&a.1.fetched_at).then(a.0.cmp(b.0))),
        "checked" => matched.sort_by(|a, b| b.1.checked_at.cmp(&a.1.checked_at).then(a.0.cmp(b.0))),
        "hits" => {
            let mut keyed: Vec<(u32, &String, &Entry)> = matched
                .iter()
                .map(|(r, e)| (activity.hits(r), *r, *e))
                .collect();
            keyed.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            *matched = keyed.into_iter().map(|(_, r, e)| (r, e)).collect();
        }
        _ => matched.sort_by(|a, b| a.0.cmp(b.0)),
    }
}

/// The whole report for one page view.
pub async fn report(
    status: &Status,
    store: &DynStore,
    activity: &Activity,
    in_progress: Vec<Work>,
    query: &Query,
) -> Report {
    use futures::StreamExt;
    let (shards, catalog_error) = match status.catalog.read().await {
        Ok(s) => (s, None),
        Err(e) => {
            tracing::warn!(error = %e, "status page: cannot read the catalog");
            (Vec::new(), Some(e.public_message().to_string()))
        }
    };
    let (totals, mut page) = build(&shards, activity, &in_progress, query);
    // Who works on the repositories shown, on any instance.
    let now_ms = crate::refs::lease::now_ms();
    let keys: Vec<String> = page
        .rows
        .iter()
        .map(|row| crate::refs::Keys::new(&row.root).lease())
        .collect();
    let leases: Vec<Option<LeaseView>> = futures::stream::iter(keys)
        .map(|key| {
            let store = store.clone();
            async move { lease_view(&store, &key, now_ms).await }
        })
        .buffered(16)
        .collect()
        .await;
    for (row, lease) in page.rows.iter_mut().zip(leases) {
        row.lease = lease;
    }
    Report {
        instance: Instance {
            version: crate::AGENT,
            holder: status.holder.clone(),
            started_at: status.started_at,
            uptime_secs: activity.uptime().as_secs(),
            store: status.store.clone(),
            settings: status.settings.clone(),
        },
        totals,
        repositories: page,
        in_progress,
        top: activity
            .top(10)
            .into_iter()
            .map(|(root, hits)| Top { root, hits })
            .collect(),
        errors: activity.errors(),
        catalog_error,
    }
}

/// Who holds the lease at `key` now, if anyone.
async fn lease_view(store: &DynStore, key: &str, now_ms: u64) -> Option<LeaseView> {
    let got = store.get(key).await.ok().flatten()?;
    let rec = crate::refs::lease::decode(&got.data)?;
    (!rec.takeable(now_ms)).then(|| LeaseView {
        holder: rec.holder,
        expires_in_ms: rec.expires_at_ms.saturating_sub(now_ms),
    })
}

/// `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `s` for a URL query value.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `1.2 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `3 min ago`, for a Unix time.
fn ago(then: u64, now: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    let d = now.saturating_sub(then);
    match d {
        0..=59 => format!("{d} s ago"),
        60..=3599 => format!("{} min ago", d / 60),
        3600..=86_399 => format!("{} h ago", d / 3600),
        86_400..=2_591_999 => format!("{} d ago", d / 86_400),
        // Long ago: the date says more.
        _ => utc(then).get(..10).unwrap_or_default().to_string(),
    }
}

fn utc(secs: u64) -> String {
    if secs == 0 {
        return String::new();
    }
    crate::maint::stats::utc(secs)
}

fn duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

const STYLE: &str = "
:root{color-scheme:light dark;--line:#8884;--muted:#777;--bad:#c0392b;--ok:#2e7d32;--busy:#b26a00}
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;padding:12px;max-width:1400px}
h1{font-size:20px;margin:4px 0 2px}h2{font-size:16px;margin:20px 0 6px}
.muted{color:var(--muted)}.bad{color:var(--bad)}.ok{color:var(--ok)}.busy{color:var(--busy)}
.cards{display:flex;flex-wrap:wrap;gap:8px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:6px;padding:6px 10px;min-width:110px}
.card b{display:block;font-size:18px}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
td.n,th.n{text-align:right;white-space:nowrap}
td.path{word-break:break-all;min-width:14em}
th a{color:inherit}
form{display:flex;flex-wrap:wrap;gap:6px;align-items:center}
input,select,button{font:inherit;padding:4px 6px}
input[type=search]{flex:1 1 14em;min-width:10em}
code{font-size:13px}
@media (max-width:700px){.wide{display:none}td.path{min-width:10em}}
details summary{cursor:pointer}
";

/// The page as HTML.
pub fn render_html(r: &Report) -> String {
    let now = unix_now();
    let mut h = String::with_capacity(16 * 1024 + r.repositories.rows.len() * 600);
    html_head(&mut h, r);
    html_totals(&mut h, r);
    html_in_progress(&mut h, r);
    html_repositories(&mut h, r, now);
    html_pages(&mut h, r);
    html_top(&mut h, r);
    html_errors(&mut h, r, now);
    html_settings(&mut h, r);
    html_footer(&mut h, r, now);
    h
}

/// The document head, the instance line and the catalog error, if any.
fn html_head(h: &mut String, r: &Report) {
    h.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    h.push_str("<title>goprox status</title><style>");
    h.push_str(STYLE);
    h.push_str("</style></head><body>\n");
    let _ = writeln!(
        h,
        "<h1>goprox</h1><div class=\"muted\">{} · {} · up {} · store <code>{}</code></div>",
        escape(r.instance.version),
        escape(&r.instance.holder),
        duration(r.instance.uptime_secs),
        escape(&r.instance.store)
    );
    if let Some(e) = &r.catalog_error {
        let _ = writeln!(
            h,
            "<p class=\"bad\" id=\"catalog-error\">cannot read the catalog: {}</p>",
            escape(e)
        );
    }
}

/// The cards with the catalog's totals.
fn html_totals(h: &mut String, r: &Report) {
    let t = &r.totals;
    h.push_str("<div class=\"cards\" id=\"totals\">");
    for (label, value, id) in [
        (
            "repositories",
            t.repositories.to_string(),
            "total-repositories",
        ),
        ("stored", human_bytes(t.bytes), "total-bytes"),
        ("packs", t.packs.to_string(), "total-packs"),
        ("objects", t.objects.to_string(), "total-objects"),
        ("refs", t.refs.to_string(), "total-refs"),
        ("tags", t.tags.to_string(), "total-tags"),
        (
            "module versions",
            t.module_versions.to_string(),
            "total-module-versions",
        ),
        ("module zips", human_bytes(t.zip_bytes), "total-zip-bytes"),
        ("failing", t.failing.to_string(), "total-failing"),
        (
            "busy here",
            r.in_progress.len().to_string(),
            "total-in-progress",
        ),
    ] {
        let _ = write!(
            h,
            "<div class=\"card\"><b id=\"{id}\">{}</b><span class=\"muted\">{label}</span></div>",
            escape(&value)
        );
    }
    h.push_str("</div>\n");
}

/// Fills and refreshes under way on this instance.
fn html_in_progress(h: &mut String, r: &Report) {
    h.push_str("<h2>In progress on this instance</h2>\n");
    if r.in_progress.is_empty() {
        h.push_str("<p class=\"muted\" id=\"in-progress-none\">nothing</p>\n");
    } else {
        h.push_str("<div class=\"scroll\"><table id=\"in-progress\"><tr><th>repository</th><th>work</th><th class=\"n\">running for</th><th class=\"n\">received</th></tr>\n");
        for w in &r.in_progress {
            let _ = writeln!(
                h,
                "<tr data-root=\"{0}\"><td class=\"path\">{0}</td><td class=\"busy\">{1}</td><td class=\"n\">{2:.1} s</td><td class=\"n\">{3}</td></tr>",
                escape(&w.root),
                w.kind,
                w.running_for.as_secs_f64(),
                w.bytes.map(human_bytes).unwrap_or_default()
            );
        }
        h.push_str("</table></div>\n");
    }
}

/// The link to page `page` of the repositories sorted by `sort`, with the query's filters.
fn page_link(q: &Query, sort: &str, page: usize) -> String {
    format!(
        "/-/status?q={}&amp;status={}&amp;sort={}&amp;page={page}&amp;per={}",
        query_escape(&q.q),
        query_escape(&q.status),
        query_escape(sort),
        q.per
    )
}

/// A column header that sorts the repositories by `sort`.
fn sort_header(q: &Query, label: &str, sort: &str, class: &str) -> String {
    format!(
        "<th{class}><a href=\"{}\">{label}</a></th>",
        page_link(q, sort, 1),
        class = if class.is_empty() {
            String::new()
        } else {
            format!(" class=\"{class}\"")
        }
    )
}

/// The repositories heading, the filter form and the table of the page's repositories.
fn html_repositories(h: &mut String, r: &Report, now: u64) {
    let q = &r.repositories.query;
    let _ = writeln!(
        h,
        "<h2>Repositories <span class=\"muted\" id=\"matched\">{} of {}</span></h2>",
        r.repositories.matched, r.totals.repositories
    );
    let _ = writeln!(
        h,
        "<form method=\"get\" action=\"/-/status\"><input type=\"search\" name=\"q\" value=\"{}\" placeholder=\"filter by import path or upstream\" aria-label=\"filter\">\
         <select name=\"status\" aria-label=\"status\"><option value=\"\">all</option><option value=\"failed\"{}>failing</option><option value=\"busy\"{}>busy here</option></select>\
         <input type=\"hidden\" name=\"sort\" value=\"{}\"><button type=\"submit\">filter</button></form>",
        escape(&q.q),
        if q.status == "failed" {
            " selected"
        } else {
            ""
        },
        if q.status == "busy" { " selected" } else { "" },
        escape(&q.sort),
    );
    h.push_str("<div class=\"scroll\"><table id=\"repositories\"><thead><tr>");
    h.push_str(&sort_header(q, "import path", "root", ""));
    h.push_str("<th class=\"wide\">upstream</th>");
    h.push_str(&sort_header(q, "refs", "refs", "n"));
    h.push_str("<th class=\"n wide\">tags</th><th class=\"n wide\">packs</th>");
    h.push_str(&sort_header(q, "size", "size", "n"));
    h.push_str(&sort_header(q, "fetched", "fetched", "wide"));
    h.push_str(&sort_header(q, "last look", "checked", ""));
    h.push_str("<th class=\"wide\">lease</th>");
    h.push_str(&sort_header(q, "hits/h", "hits", "n wide"));
    h.push_str("</tr></thead><tbody>\n");
    for row in &r.repositories.rows {
        html_repository_row(h, row, now);
    }
    h.push_str("</tbody></table></div>\n");
}

/// One repository's table row.
fn html_repository_row(h: &mut String, row: &Row, now: u64) {
    let e = &row.entry;
    let outcome_class = match e.outcome {
        Outcome::Failed => "bad",
        Outcome::Unknown => "muted",
        _ => "ok",
    };
    let _ = writeln!(
        h,
        "<tr data-root=\"{root}\"><td class=\"path\">{root}{busy}</td><td class=\"path muted wide\">{up}</td>\
         <td class=\"n refs\">{refs}</td><td class=\"n wide\">{tags}</td><td class=\"n wide\">{packs}</td><td class=\"n\" title=\"{bytes} bytes, {objects} objects\">{size}</td>\
         <td class=\"wide\" title=\"{fetched_utc}\">{fetched}</td><td><span class=\"{outcome_class} outcome\">{outcome}</span> <span class=\"muted\" title=\"{checked_utc}\">{checked}</span>{error}</td>\
         <td class=\"wide\">{lease}</td><td class=\"n wide\">{hits}</td></tr>",
        root = escape(&row.root),
        busy = row
            .busy
            .map(|k| format!(" <span class=\"busy\">({k})</span>"))
            .unwrap_or_default(),
        up = escape(&e.upstream),
        refs = e.refs,
        tags = e.tags,
        packs = e.packs,
        bytes = e.bytes,
        objects = e.objects,
        size = human_bytes(e.bytes),
        fetched_utc = utc(e.fetched_at),
        fetched = ago(e.fetched_at, now),
        outcome = e.outcome.as_str(),
        checked_utc = utc(e.checked_at),
        checked = ago(e.checked_at, now),
        error = e
            .error
            .as_deref()
            .filter(|_| e.outcome == Outcome::Failed)
            .map(|m| format!(
                "<div class=\"bad error\">{} <span class=\"muted\">({})</span></div>",
                escape(m),
                ago(e.error_at, now)
            ))
            .unwrap_or_default(),
        lease = row
            .lease
            .as_ref()
            .map(|l| format!(
                "<span class=\"busy\">{}</span> <span class=\"muted\">{} s</span>",
                escape(&l.holder),
                l.expires_in_ms.div_ceil(1000)
            ))
            .unwrap_or_default(),
        hits = row.hits_last_hour,
    );
}

/// Links to the previous and next page, when there is more than one.
fn html_pages(h: &mut String, r: &Report) {
    let q = &r.repositories.query;
    if r.repositories.pages > 1 {
        let p = q.page;
        h.push_str("<p id=\"pages\">");
        if p > 1 {
            let _ = write!(
                h,
                "<a href=\"{}\">← previous</a> ",
                page_link(q, &q.sort, p - 1)
            );
        }
        let _ = write!(h, "page {p} of {} ", r.repositories.pages);
        if p < r.repositories.pages {
            let _ = write!(h, "<a href=\"{}\">next →</a>", page_link(q, &q.sort, p + 1));
        }
        h.push_str("</p>\n");
    }
}

/// The busiest repositories of the last hour.
fn html_top(h: &mut String, r: &Report) {
    h.push_str("<h2>Busiest in the last hour (this instance)</h2>\n");
    if r.top.is_empty() {
        h.push_str("<p class=\"muted\">no requests</p>\n");
    } else {
        h.push_str("<div class=\"scroll\"><table id=\"top\"><tr><th>repository</th><th class=\"n\">requests</th></tr>\n");
        for t in &r.top {
            let _ = writeln!(
                h,
                "<tr><td class=\"path\">{}</td><td class=\"n\">{}</td></tr>",
                escape(&t.root),
                t.hits
            );
        }
        h.push_str("</table></div>\n");
    }
}

/// This instance's recent errors.
fn html_errors(h: &mut String, r: &Report, now: u64) {
    h.push_str("<h2>Recent errors (this instance)</h2>\n");
    if r.errors.is_empty() {
        h.push_str("<p class=\"muted\" id=\"errors-none\">none</p>\n");
    } else {
        h.push_str("<div class=\"scroll\"><table id=\"errors\"><tr><th>when</th><th>repository</th><th>during</th><th>error</th></tr>\n");
        for e in &r.errors {
            let _ = writeln!(
                h,
                "<tr><td title=\"{}\">{}</td><td class=\"path\">{}</td><td>{}</td><td class=\"bad\">{}</td></tr>",
                utc(e.at),
                ago(e.at, now),
                escape(&e.root),
                e.during,
                escape(&e.message)
            );
        }
        h.push_str("</table></div>\n");
    }
}

/// The settings that matter, folded.
fn html_settings(h: &mut String, r: &Report) {
    h.push_str(
        "<h2>Settings</h2><details><summary>flags that matter</summary><table id=\"settings\">",
    );
    for (k, v) in &r.instance.settings {
        let _ = write!(
            h,
            "<tr><td><code>--{}</code></td><td><code>{}</code></td></tr>",
            escape(k),
            escape(v)
        );
    }
    h.push_str("</table></details>\n");
}

/// The generation time, the links to the JSON twin and the metrics, and the document's end.
fn html_footer(h: &mut String, r: &Report, now: u64) {
    let q = &r.repositories.query;
    let _ = writeln!(
        h,
        "<p class=\"muted\">Generated {} UTC · <a href=\"/-/status.json?q={}&amp;status={}&amp;sort={}&amp;page={}&amp;per={}\">JSON</a> · <a href=\"/metrics\">metrics</a></p>",
        utc(now),
        query_escape(&q.q),
        query_escape(&q.status),
        query_escape(&q.sort),
        q.page,
        q.per
    );
    h.push_str("</body></html>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn shard(entries: &[(&str, u64, Outcome)]) -> Arc<Shard> {
        let mut repos = BTreeMap::new();
        for (root, bytes, outcome) in entries {
            repos.insert(
                root.to_string(),
                Entry {
                    upstream: format!("https://{root}"),
                    generation: 1,
                    refs: 3,
                    tags: 2,
                    branches: 1,
                    packs: 1,
                    objects: 10,
                    bytes: *bytes,
                    fetched_at: 1,
                    checked_at: 1,
                    outcome: *outcome,
                    error: (*outcome == Outcome::Failed).then(|| "<b>upstream</b> said no".into()),
                    error_at: 1,
                    versions: 0,
                    zip_bytes: 0,
                },
            );
        }
        Arc::new(Shard { version: 1, repos })
    }

    #[test]
    fn filter_sort_and_page() {
        let shards = vec![
            shard(&[("a.example/x/one", 10, Outcome::Unchanged)]),
            shard(&[
                ("b.example/y/two", 30, Outcome::Failed),
                ("a.example/x/three", 20, Outcome::Updated),
            ]),
        ];
        let activity = Activity::new();
        let q = |s: &str| serde_json::from_str::<Query>(s).unwrap();
        let (totals, page) = build(&shards, &activity, &[], &q("{}"));
        assert_eq!(
            (totals.repositories, totals.bytes, totals.failing),
            (3, 60, 1)
        );
        let roots: Vec<&str> = page.rows.iter().map(|r| r.root.as_str()).collect();
        assert_eq!(
            roots,
            ["a.example/x/one", "a.example/x/three", "b.example/y/two"]
        );
        let (_, page) = build(&shards, &activity, &[], &q(r#"{"sort":"size","per":2}"#));
        let roots: Vec<&str> = page.rows.iter().map(|r| r.root.as_str()).collect();
        assert_eq!(roots, ["b.example/y/two", "a.example/x/three"]);
        assert_eq!((page.pages, page.matched), (2, 3));
        let (_, page) = build(
            &shards,
            &activity,
            &[],
            &q(r#"{"sort":"size","per":2,"page":9}"#),
        );
        assert_eq!(page.query.page, 2, "clamped");
        assert_eq!(page.rows.len(), 1);
        let (_, page) = build(&shards, &activity, &[], &q(r#"{"q":"X/T"}"#));
        assert_eq!(page.matched, 1);
        let (_, page) = build(&shards, &activity, &[], &q(r#"{"status":"failed"}"#));
        assert_eq!(page.rows[0].root, "b.example/y/two");
    }

    #[test]
    fn everything_from_outside_is_escaped() {
        let evil = "evil.example/<script>alert(1)</script>/x\"'&";
        let shards = vec![shard(&[(evil, 1, Outcome::Failed)])];
        let activity = Activity::new();
        activity.error(evil, "fill", "<img src=x onerror=alert(2)>");
        activity.hit(evil);
        let (totals, repositories) = build(&shards, &activity, &[], &Query::default());
        let report = Report {
            instance: Instance {
                version: crate::AGENT,
                holder: "h<1>".into(),
                started_at: 0,
                uptime_secs: 5,
                store: "s3://b<>".into(),
                settings: vec![("refresh-after", "<1m>".into())],
            },
            totals,
            repositories,
            in_progress: vec![Work {
                root: evil.into(),
                kind: "fill",
                running_for: Duration::from_secs(1),
                bytes: Some(10),
            }],
            top: vec![Top {
                root: evil.into(),
                hits: 1,
            }],
            errors: activity.errors(),
            catalog_error: None,
        };
        let html = render_html(&report);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<img"));
        assert!(!html.contains("<b>upstream"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&quot;&#39;&amp;"));
        assert!(html.contains("q=&amp;status="), "links are escaped too");
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(ago(0, 100), "never");
        assert_eq!(ago(100, 160), "1 min ago");
        assert_eq!(ago(1, 100_000_000), "1970-01-01");
        assert_eq!(query_escape("a b&c/d"), "a%20b%26c/d");
    }
}
