//! Durations on the command line: `0s`, `30s`, `5m`, `1h`, `2d`, `250ms`, and sums such as
//! `1h30m`. A bare `0` is accepted; any other number needs a unit.

use std::time::Duration;

/// A duration [`parse_duration`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (examples: 0s, 30s, 5m, 1h, 2d, 1h30m)")]
pub struct DurationError {
    /// The text as given.
    pub input: String,
    /// What is wrong with it.
    pub why: &'static str,
}

/// Parse a duration such as `30s`, `5m`, `1h`, `2d` or `1h30m` (units: `ms`, `s`, `m`, `h`,
/// `d`). Usable directly as a clap `value_parser`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let bad = |why| DurationError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(bad("empty"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = rest.split_at(unit_len);
        let part = match unit {
            "ms" => Some(Duration::from_millis(n)),
            "s" => Some(Duration::from_secs(n)),
            "m" => n.checked_mul(60).map(Duration::from_secs),
            "h" => n.checked_mul(3600).map(Duration::from_secs),
            "d" => n.checked_mul(86_400).map(Duration::from_secs),
            "" => return Err(bad("missing unit after a number")),
            _ => return Err(bad("unknown unit")),
        }
        .ok_or_else(|| bad("too large"))?;
        total = total.checked_add(part).ok_or_else(|| bad("too large"))?;
        rest = tail;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        let ok = |s| parse_duration(s).unwrap();
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("2d"), Duration::from_secs(172_800));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("1d2h3m4s"), Duration::from_secs(93_784));
        assert_eq!(ok(" 10s "), Duration::from_secs(10));
    }

    #[test]
    fn refused() {
        for (s, why) in [
            ("", "empty"),
            ("10", "missing unit"),
            ("s", "expected a number"),
            ("5x", "unknown unit"),
            ("5 m", "missing unit"),
            ("-5s", "expected a number"),
            ("1.5h", "missing unit"),
            ("99999999999999999999s", "number too large"),
            ("999999999999999999d", "too large"),
            ("1h5", "missing unit"),
        ] {
            let e = parse_duration(s).unwrap_err();
            assert!(e.why.contains(why), "{s:?}: {e}");
            assert!(e.to_string().contains("examples"), "{e}");
        }
    }
}
