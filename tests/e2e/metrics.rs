//! `/metrics` after a clone through goprox: Prometheus names, labels from fixed sets only
//! (route and status class, store operation and outcome), and no repository path anywhere.

use crate::support::git::CloneKind;
use crate::support::goprox::StoreKind;
use crate::support::{Harness, http};
use std::time::Duration;

/// The value of every sample line of `name` whose labels include all of `labels`
/// (`key="value"` strings).
fn samples(text: &str, name: &str, labels: &[&str]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let set = rest.strip_suffix('}')?;
            let have: Vec<&str> = set.split(',').collect();
            (n == name && labels.iter().all(|want| have.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .collect()
}

fn total(text: &str, name: &str, labels: &[&str]) -> f64 {
    samples(text, name, labels).iter().sum()
}

#[test]
fn metrics_after_a_clone() {
    let Some(mut h) = Harness::start(StoreKind::Local, "metrics") else {
        return;
    };
    h.clone_and_compare("example.test/rich", 2, CloneKind::Plain);
    let port = h.gp.port;
    let scrape = || {
        let r = http::get(port, "/metrics");
        assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
        assert!(
            r.header("content-type")
                .is_some_and(|c| c.starts_with("text/plain")),
            "{:?}",
            r.headers
        );
        r.text()
    };
    // A response is measured when its body is dropped, just after the client has read it.
    let mut text = String::new();
    crate::support::live::wait_until(
        "upload-pack requests in goprox_http_request_duration_seconds",
        Duration::from_secs(10),
        || {
            text = scrape();
            total(
                &text,
                "goprox_http_request_duration_seconds_count",
                &["route=\"upload_pack\"", "status=\"2xx\""],
            ) > 0.0
        },
    );
    let upload = ["route=\"upload_pack\"", "status=\"2xx\""];
    assert!(
        !samples(
            &text,
            "goprox_http_request_duration_seconds_bucket",
            &upload
        )
        .is_empty(),
        "no upload_pack 2xx buckets:\n{text}"
    );
    assert!(
        total(
            &text,
            "goprox_http_request_duration_seconds_count",
            &["route=\"info_refs\"", "status=\"2xx\""]
        ) > 0.0,
        "no info_refs requests:\n{text}"
    );
    // Every labelled request series uses only the fixed routes and status classes.
    for l in text
        .lines()
        .filter(|l| l.starts_with("goprox_http_request_duration_seconds_count{"))
    {
        let route_ok = [
            "go_get",
            "info_refs",
            "upload_pack",
            "metrics",
            "health",
            "status",
            "hook",
            "other",
        ]
        .iter()
        .any(|r| l.contains(&format!("route=\"{r}\"")));
        let status_ok = ["2xx", "3xx", "4xx", "5xx"]
            .iter()
            .any(|s| l.contains(&format!("status=\"{s}\"")));
        assert!(route_ok && status_ok, "unexpected labels: {l}");
    }
    // The fill wrote packs and the ref index (create-only) and read them back.
    assert!(
        total(
            &text,
            "goprox_store_requests_total",
            &["op=\"put_if_absent\"", "outcome=\"ok\""]
        ) > 0.0,
        "no create-only puts counted:\n{text}"
    );
    assert!(
        total(&text, "goprox_store_requests_total", &["op=\"get\""]) > 0.0,
        "no store gets counted:\n{text}"
    );
    assert!(
        !samples(
            &text,
            "goprox_store_request_duration_seconds_bucket",
            &["op=\"put_if_absent\"", "outcome=\"ok\""]
        )
        .is_empty(),
        "no store latency buckets:\n{text}"
    );
    assert!(
        total(
            &text,
            "goprox_fill_duration_seconds_count",
            &["outcome=\"ok\""]
        ) >= 1.0,
        "no fill recorded:\n{text}"
    );
    assert!(total(&text, "goprox_fills_total", &[]) >= 1.0, "{text}");
    assert!(
        total(&text, "goprox_packs_served_total", &[]) >= 1.0,
        "{text}"
    );
    assert!(
        total(&text, "goprox_pack_bytes_served_total", &[]) > 0.0,
        "{text}"
    );
    assert!(
        total(&text, "goprox_pack_generation_duration_seconds_count", &[]) >= 1.0,
        "{text}"
    );
    for gauge in [
        "goprox_block_cache_bytes",
        "goprox_block_cache_capacity_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {gauge} gauge")),
            "{gauge}:\n{text}"
        );
    }
    assert!(text.contains("# TYPE goprox_block_cache_hits_total counter"));
    // Counters that nothing has touched yet are there, at 0.
    assert!(
        text.lines().any(|l| l == "goprox_compactions_total 0"),
        "{text}"
    );
    // No repository path (nor any part of one) in any series.
    for word in ["example.test", "rich"] {
        assert!(!text.contains(word), "{word:?} in the metrics:\n{text}");
    }
    // The scrape itself is measured under the fixed route `metrics`.
    let again = scrape();
    assert!(
        total(
            &again,
            "goprox_http_request_duration_seconds_count",
            &["route=\"metrics\"", "status=\"2xx\""]
        ) >= 1.0,
        "{again}"
    );
    h.gp.assert_alive();
}
