//! Upstream policy: which upstream URLs goprox may contact on its own initiative.
//!
//! Explicit `--upstream PREFIX=URL` rules are trusted as given (they may name `http`,
//! loopback or private hosts). Everything else (the well-known hosts, `?go-get=1` discovery
//! and the repository URLs that discovery returns) must be `https` and resolve only to public
//! addresses: loopback, private, link-local, unique-local, multicast, unspecified, broadcast,
//! shared (CGNAT) and documentation addresses are refused, including IPv4-mapped and
//! IPv4-compatible IPv6 forms and odd IPv4 spellings (`0x7f000001`, `2130706433`, `0177.0.0.1`,
//! `127.1`, read the way `inet_aton` reads them).
//!
//! Host names are checked when they are resolved: [`PublicResolver`] is the DNS resolver of
//! every HTTP client that talks to an untrusted upstream, so the addresses that are checked are
//! the ones connected to (no second lookup in between).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Why an upstream was refused; the text is what clients see (`refusing upstream HOST: WHY`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refusing upstream {what}: {why}")]
pub struct Refused {
    /// The host or URL refused (without credentials).
    pub what: String,
    /// Why (a loopback name, a private address, not https, ...).
    pub why: String,
}

fn refused(what: impl Into<String>, why: impl Into<String>) -> Refused {
    Refused {
        what: what.into(),
        why: why.into(),
    }
}

/// Why `ip` is not a public address, or `None` when it is.
pub fn classify_ip(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified address")
    } else if ip.is_loopback() {
        Some("loopback address")
    } else if ip.is_private() {
        Some("private address")
    } else if ip.is_link_local() {
        Some("link-local address")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        Some("shared (CGNAT) address")
    } else if ip.is_broadcast() {
        Some("broadcast address")
    } else if ip.is_multicast() {
        Some("multicast address")
    } else if o[0] >= 240 {
        Some("reserved address")
    } else if (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
        || (o[0] == 198 && (o[1] & 0xfe) == 18)
        || (o[0] == 198 && o[1] == 51 && o[2] == 100)
        || (o[0] == 203 && o[1] == 0 && o[2] == 113)
        || (o[0] == 192 && o[1] == 88 && o[2] == 99)
    {
        Some("special-purpose address")
    } else {
        None
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d), IPv4-translated
    // (::ffff:0:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) forms: classify the IPv4 address.
    let v4 = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    if s[..5] == [0; 5] && (s[5] == 0xffff || s[5] == 0) {
        return Some(classify_v4(v4(s[6], s[7])).unwrap_or("IPv4-embedded address"));
    }
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return Some(classify_v4(v4(s[6], s[7])).unwrap_or("IPv4-embedded address"));
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some(classify_v4(v4(s[6], s[7])).unwrap_or("IPv4-embedded address"));
    }
    if (s[0] & 0xfe00) == 0xfc00 {
        return Some("unique-local address");
    }
    if (s[0] & 0xffc0) == 0xfe80 {
        return Some("link-local address");
    }
    if (s[0] & 0xffc0) == 0xfec0 {
        return Some("site-local address");
    }
    if (s[0] & 0xff00) == 0xff00 {
        return Some("multicast address");
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return Some("documentation address");
    }
    if s[0] == 0x0100 && s[1..4] == [0; 3] {
        return Some("discard-only address");
    }
    // 6to4 (2002::/16) embeds an IPv4 address too.
    if s[0] == 0x2002 {
        return classify_v4(v4(s[1], s[2]));
    }
    None
}

/// Read `host` the way `inet_aton(3)` does: one to four parts separated by dots, each
/// decimal, octal (leading `0`) or hexadecimal (`0x`); the last part fills the remaining
/// bytes (`127.1` is 127.0.0.1, `2130706433` and `0x7f000001` are 127.0.0.1 too).
/// `None` when `host` is not such a number.
pub fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let parts: Vec<&str> = host.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"))
        {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        if p.is_empty() || (digits.is_empty() && radix != 16) {
            return None;
        }
        // `0x` alone is 0 for inet_aton.
        let v = if digits.is_empty() {
            0
        } else {
            if !digits.chars().all(|c| c.is_digit(radix)) {
                return None;
            }
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(v);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    let last_bits = 8 * (4 - init.len() as u32);
    if last_bits < 64 && *last >= (1u64 << last_bits) {
        return None;
    }
    let mut v: u32 = 0;
    for (i, n) in init.iter().enumerate() {
        v |= (*n as u32) << (24 - 8 * i as u32);
    }
    v |= *last as u32;
    Some(Ipv4Addr::from(v))
}

/// An IP address spelled in `host` (IPv6 in brackets or not, or any inet_aton spelling).
pub fn host_ip(host: &str) -> Option<IpAddr> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip);
    }
    parse_inet_aton(h).map(IpAddr::V4)
}

/// Check a host name or address as written (no DNS): IP literals in any spelling are
/// classified, `localhost` and `*.localhost` are loopback names.
pub fn check_host(host: &str) -> Result<(), Refused> {
    let lower = host.to_ascii_lowercase();
    let lower = lower.trim_end_matches('.');
    if lower.is_empty() {
        return Err(refused("(empty host)", "no host"));
    }
    if lower == "localhost" || lower.ends_with(".localhost") {
        return Err(refused(host, "loopback name"));
    }
    if let Some(why) = host_ip(lower).and_then(classify_ip) {
        return Err(refused(host, why));
    }
    Ok(())
}

/// Check an untrusted upstream URL as written: `https` only, no userinfo, and its host passes
/// [`check_host`]. Returns the parsed URL.
pub fn check_url(url: &str) -> Result<reqwest::Url, Refused> {
    let u = reqwest::Url::parse(url).map_err(|_| refused(redact(url), "not a valid URL"))?;
    if u.scheme() != "https" {
        return Err(refused(
            redact(url),
            format!("scheme {}: is not allowed (only https)", u.scheme()),
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(refused(redact(url), "credentials in the URL"));
    }
    let host = u
        .host_str()
        .ok_or_else(|| refused(redact(url), "no host"))?;
    check_host(host)?;
    Ok(u)
}

/// `url` without its userinfo (`https://user:pw@host/x` → `https://host/x`), for logs,
/// error texts and anything stored.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..auth_end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Resolve `host` and refuse it unless every address is public.
pub async fn resolve_public(host: &str, port: u16) -> Result<Vec<SocketAddr>, Refused> {
    check_host(host)?;
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port)),
    )
    .await
    .map_err(|_| refused(host, "name resolution timed out"))?
    .map_err(|_| refused(host, "name does not resolve"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    if addrs.is_empty() {
        return Err(refused(host, "name does not resolve"));
    }
    for a in &addrs {
        if let Some(why) = classify_ip(a.ip()) {
            return Err(refused(host, format!("resolves to a {why}")));
        }
    }
    Ok(addrs)
}

/// A DNS resolver for reqwest clients that only ever yields public addresses (an answer with
/// any non-public address is an error).
#[derive(Debug, Clone, Default)]
pub struct PublicResolver;

impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs = resolve_public(&host, 0)
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The reqwest client configuration for untrusted upstreams: public addresses only.
pub fn public_resolver() -> Arc<PublicResolver> {
    Arc::new(PublicResolver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(s: &str) -> Option<&'static str> {
        classify_ip(s.parse().unwrap())
    }

    #[test]
    fn classifier() {
        for (a, w) in [
            ("127.0.0.1", "loopback address"),
            ("127.1.2.3", "loopback address"),
            ("10.0.0.1", "private address"),
            ("172.16.5.4", "private address"),
            ("192.168.1.1", "private address"),
            ("169.254.169.254", "link-local address"),
            ("100.64.0.1", "shared (CGNAT) address"),
            ("100.127.255.255", "shared (CGNAT) address"),
            ("0.0.0.0", "unspecified address"),
            ("0.1.2.3", "unspecified address"),
            ("255.255.255.255", "broadcast address"),
            ("224.0.0.1", "multicast address"),
            ("240.0.0.1", "reserved address"),
            ("192.0.2.1", "special-purpose address"),
            ("::1", "loopback address"),
            ("::", "unspecified address"),
            ("fd00::1", "unique-local address"),
            ("fc00::1", "unique-local address"),
            ("fe80::1", "link-local address"),
            ("ff02::1", "multicast address"),
            ("::ffff:127.0.0.1", "loopback address"),
            ("::ffff:169.254.169.254", "link-local address"),
            ("::ffff:10.1.2.3", "private address"),
            ("::127.0.0.1", "loopback address"),
            ("::ffff:0:192.168.0.1", "private address"),
            ("64:ff9b::10.0.0.1", "private address"),
            ("2002:7f00:1::", "loopback address"),
            ("2001:db8::1", "documentation address"),
        ] {
            assert_eq!(why(a), Some(w), "{a}");
        }
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "100.128.0.1",
            "172.32.0.1",
            "2606:4700::1111",
        ] {
            assert_eq!(why(a), None, "{a}");
        }
    }

    #[test]
    fn inet_aton_spellings() {
        let lo = Some(Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(parse_inet_aton("0x7f000001"), lo);
        assert_eq!(parse_inet_aton("2130706433"), lo);
        assert_eq!(parse_inet_aton("0177.0.0.1"), lo);
        assert_eq!(parse_inet_aton("127.1"), lo);
        assert_eq!(parse_inet_aton("127.0.1"), lo);
        assert_eq!(parse_inet_aton("0x7f.1"), lo);
        assert_eq!(parse_inet_aton("017700000001"), lo);
        assert_eq!(parse_inet_aton("127.0.0.1."), lo);
        assert_eq!(
            parse_inet_aton("0xa9.0xfe.0xa9.0xfe"),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(parse_inet_aton("example.com"), None);
        assert_eq!(parse_inet_aton("1.2.3.4.5"), None);
        assert_eq!(parse_inet_aton("256.1.1.1"), None);
        assert_eq!(parse_inet_aton("1.2.3.256"), None);
        assert_eq!(parse_inet_aton("4294967296"), None);
        assert_eq!(parse_inet_aton("08.1.1.1"), None);
        assert_eq!(parse_inet_aton("1..1"), None);
        for h in [
            "localhost",
            "LOCALHOST",
            "foo.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "0x7f000001",
            "2130706433",
            "0177.0.0.1",
            "127.1",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "10.0.0.1",
            "169.254.169.254",
            "[fd00::1]",
            "0",
        ] {
            assert!(check_host(h).is_err(), "{h} passed");
        }
        assert!(check_host("example.com").is_ok());
        assert!(check_host("8.8.8.8").is_ok());
        let e = check_host("127.0.0.1").unwrap_err();
        assert_eq!(
            e.to_string(),
            "refusing upstream 127.0.0.1: loopback address"
        );
    }

    #[test]
    fn schemes_and_urls() {
        for u in [
            "file:///etc",
            "file://localhost/srv/git/x",
            "git://example.com/x",
            "git://example.com:9418/x",
            "ssh://git@example.com/x",
            "http://example.com/x",
            "ftp://example.com/x",
            "ext::sh -c touch% /tmp/pwned",
            "git@example.com:x/y",
            "https://127.0.0.1/x",
            "https://0x7f000001/x",
            "https://2130706433/x",
            "https://127.1/x",
            "https://[::1]/x",
            "https://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data",
            "https://localhost/x",
            "https://user:pw@example.com/x",
        ] {
            assert!(check_url(u).is_err(), "{u} passed");
        }
        assert!(
            check_url("file:///etc/passwd")
                .unwrap_err()
                .to_string()
                .contains("scheme file")
        );
        assert!(check_url("https://example.com/x").is_ok());
        assert!(check_url("https://github.com/rsc/quote").is_ok());
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("https://u:secret@example.com/x?a@b"),
            "https://example.com/x?a@b"
        );
        assert_eq!(redact("https://example.com/x"), "https://example.com/x");
        assert_eq!(redact("http://tok@127.0.0.1:9/x"), "http://127.0.0.1:9/x");
    }

    #[tokio::test]
    async fn resolving_refuses_loopback() {
        // Resolution of a literal does not leave the machine.
        assert!(resolve_public("127.0.0.1", 443).await.is_err());
        assert!(resolve_public("localhost", 443).await.is_err());
    }
}
