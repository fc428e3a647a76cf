//! Push-hook input (`POST /-/hooks/…`): the repository URLs a JSON payload names, their
//! normalized form, and the signature check, on arbitrary bytes. Also the status page's query
//! string and a catalog shard read back from the bucket. Must not panic.
#![no_main]

use goprox::http::hooks::{hmac_ok, normalize_url, payload_urls};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(n) = normalize_url(&text) {
        assert!(!n.is_empty() && n.contains('/'));
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        for u in payload_urls(&v) {
            let _ = normalize_url(&u);
        }
    }
    let (sig, body) = data.split_at(data.len().min(64));
    let _ = hmac_ok(b"secret", body, &String::from_utf8_lossy(sig));
    if let Ok(uri) = format!("/-/status.json?{text}").parse::<axum::http::Uri>() {
        let _ = axum::extract::Query::<goprox::http::status::Query>::try_from_uri(&uri);
    }
    let _ = serde_json::from_slice::<goprox::refs::catalog::Shard>(data);
});
