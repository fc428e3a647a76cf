//! Semantic versions as the go command understands them (`golang.org/x/mod/semver`).
//!
//! A version is `vMAJOR[.MINOR[.PATCH[-PRERELEASE][+BUILD]]]`: the leading `v` is required,
//! numbers carry no superfluous leading zeros, and the shorthands `vMAJOR` and `vMAJOR.MINOR`
//! (with neither prerelease nor build suffix) stand for `vMAJOR.0.0` and `vMAJOR.MINOR.0`.
//! Prerelease and build suffixes are non-empty dot-separated identifiers over `[0-9A-Za-z-]`,
//! and numeric prerelease identifiers must not have leading zeros. Everything else is invalid;
//! invalid strings sort below every valid version and equal to each other.

use std::cmp::Ordering;

/// The pieces of a valid version, borrowed from the input.
struct Parts<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    /// What `canonical` appends to a shorthand (`".0.0"`, `".0"` or `""`).
    fill: &'static str,
    /// `"-…"` or `""`.
    prerelease: &'a str,
    /// `"+…"` or `""`.
    build: &'a str,
}

/// Splits a leading run of decimal digits off `s`, rejecting an empty run and a
/// multi-digit run that starts with `0`.
fn take_number(s: &str) -> Option<(&str, &str)> {
    let len = s.bytes().take_while(u8::is_ascii_digit).count();
    if len == 0 || (len > 1 && s.as_bytes()[0] == b'0') {
        return None;
    }
    Some(s.split_at(len))
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-'
}

/// An all-digit identifier longer than one digit that starts with `0`.
fn has_leading_zero(ident: &str) -> bool {
    ident.len() > 1 && ident.starts_with('0') && ident.bytes().all(|b| b.is_ascii_digit())
}

fn all_digits(ident: &str) -> bool {
    ident.bytes().all(|b| b.is_ascii_digit())
}

/// Checks that `body` is a non-empty list of non-empty dot-separated identifiers; with
/// `numeric_rule`, all-digit identifiers must also lack leading zeros.
fn valid_idents(body: &str, numeric_rule: bool) -> bool {
    body.split('.').all(|id| {
        !id.is_empty() && id.bytes().all(is_ident_byte) && !(numeric_rule && has_leading_zero(id))
    })
}

fn parse(v: &str) -> Option<Parts<'_>> {
    let rest = v.strip_prefix('v')?;
    let (major, rest) = take_number(rest)?;
    if rest.is_empty() {
        return Some(Parts {
            major,
            minor: "0",
            patch: "0",
            fill: ".0.0",
            prerelease: "",
            build: "",
        });
    }
    let (minor, rest) = take_number(rest.strip_prefix('.')?)?;
    if rest.is_empty() {
        return Some(Parts {
            major,
            minor,
            patch: "0",
            fill: ".0",
            prerelease: "",
            build: "",
        });
    }
    let (patch, rest) = take_number(rest.strip_prefix('.')?)?;
    let (prerelease, rest) = if rest.starts_with('-') {
        let end = rest.find('+').unwrap_or(rest.len());
        let (pre, after) = rest.split_at(end);
        if !valid_idents(&pre[1..], true) {
            return None;
        }
        (pre, after)
    } else {
        ("", rest)
    };
    let build = if rest.is_empty() {
        ""
    } else {
        // Anything left must be a well-formed build suffix running to the end.
        let body = rest.strip_prefix('+')?;
        if !valid_idents(body, false) {
            return None;
        }
        rest
    };
    Some(Parts {
        major,
        minor,
        patch,
        fill: "",
        prerelease,
        build,
    })
}

/// Whether `v` is a valid semantic version (shorthands such as `v1` and `v1.2` included).
pub fn is_valid(v: &str) -> bool {
    parse(v).is_some()
}

/// The canonical form of `v`: shorthands filled out to `vX.Y.Z`, build metadata dropped,
/// and `""` for an invalid version. Two versions compare equal exactly when their canonical
/// forms are the same string.
pub fn canonical(v: &str) -> String {
    match parse(v) {
        None => String::new(),
        Some(p) if !p.build.is_empty() => v[..v.len() - p.build.len()].to_string(),
        Some(p) => format!("{v}{}", p.fill),
    }
}

/// The major-version prefix of `v` (`"v2"` for `"v2.1.0"`), or `""` when `v` is invalid.
pub fn major(v: &str) -> String {
    match parse(v) {
        Some(p) => v[..1 + p.major.len()].to_string(),
        None => String::new(),
    }
}

/// The `vMAJOR.MINOR` prefix of `v` (`"v2.1"` for `"v2.1.0"`, `"v2.0"` for `"v2"`), or `""`
/// when `v` is invalid.
pub fn major_minor(v: &str) -> String {
    let Some(p) = parse(v) else {
        return String::new();
    };
    let after_major = 1 + p.major.len();
    let end = after_major + 1 + p.minor.len();
    if v.len() >= end && v.as_bytes()[after_major] == b'.' && &v[after_major + 1..end] == p.minor {
        v[..end].to_string()
    } else {
        format!("{}.{}", &v[..after_major], p.minor)
    }
}

/// The prerelease suffix of `v` including its `-` (`"-rc.1"`), or `""` when there is none or
/// `v` is invalid.
pub fn prerelease(v: &str) -> String {
    parse(v)
        .map(|p| p.prerelease.to_string())
        .unwrap_or_default()
}

/// The build suffix of `v` including its `+` (`"+incompatible"`), or `""` when there is none
/// or `v` is invalid.
pub fn build(v: &str) -> String {
    parse(v).map(|p| p.build.to_string()).unwrap_or_default()
}

/// Compares two decimal strings without leading zeros by numeric value.
fn compare_decimal(x: &str, y: &str) -> Ordering {
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// Semantic-version precedence of two prerelease suffixes (each `""` or `"-…"`): no suffix
/// ranks above any suffix; otherwise identifiers are compared in turn, numbers numerically and
/// below words, words by bytes, and a longer list wins a tie.
fn compare_prerelease(x: &str, y: &str) -> Ordering {
    if x == y {
        return Ordering::Equal;
    }
    match (x.is_empty(), y.is_empty()) {
        (true, _) => return Ordering::Greater,
        (_, true) => return Ordering::Less,
        _ => {}
    }
    let mut xs = x[1..].split('.');
    let mut ys = y[1..].split('.');
    loop {
        match (xs.next(), ys.next()) {
            (Some(a), Some(b)) => {
                if a == b {
                    continue;
                }
                let order = match (all_digits(a), all_digits(b)) {
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (true, true) => compare_decimal(a, b),
                    (false, false) => a.cmp(b),
                };
                return order;
            }
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
        }
    }
}

/// Semantic-version precedence of `v` and `w`. Build metadata is ignored; an invalid version
/// is below every valid one, and two invalid versions are equal.
pub fn compare(v: &str, w: &str) -> Ordering {
    match (parse(v), parse(w)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(a), Some(b)) => compare_decimal(a.major, b.major)
            .then_with(|| compare_decimal(a.minor, b.minor))
            .then_with(|| compare_decimal(a.patch, b.patch))
            .then_with(|| compare_prerelease(a.prerelease, b.prerelease)),
    }
}

/// Sorts `list` by [`compare`], ordering versions of equal precedence (including invalid
/// strings) by plain byte-wise string order, as the go command's `semver.Sort` does.
pub fn sort(list: &mut [String]) {
    list.sort_by(|a, b| compare(a, b).then_with(|| a.cmp(b)));
}

/// The canonical form of whichever of `v` and `w` has the higher precedence (`w`'s on a tie).
pub fn max(v: &str, w: &str) -> String {
    let v = canonical(v);
    let w = canonical(w);
    if compare(&v, &w) == Ordering::Greater {
        v
    } else {
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Inputs in ascending precedence, each with its canonical form ("" when invalid).
    /// Neighbours with the same canonical form are equal.
    const ORDERED: &[(&str, &str)] = &[
        ("bad", ""),
        ("v1-alpha.beta.gamma", ""),
        ("v1-pre", ""),
        ("v1+meta", ""),
        ("v1-pre+meta", ""),
        ("v1.2-pre", ""),
        ("v1.2+meta", ""),
        ("v1.2-pre+meta", ""),
        ("v1.0.0-alpha", "v1.0.0-alpha"),
        ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
        ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
        ("v1.0.0-beta", "v1.0.0-beta"),
        ("v1.0.0-beta.2", "v1.0.0-beta.2"),
        ("v1.0.0-beta.11", "v1.0.0-beta.11"),
        ("v1.0.0-rc.1", "v1.0.0-rc.1"),
        ("v1", "v1.0.0"),
        ("v1.0", "v1.0.0"),
        ("v1.0.0", "v1.0.0"),
        ("v1.2", "v1.2.0"),
        ("v1.2.0", "v1.2.0"),
        ("v1.2.3-456", "v1.2.3-456"),
        ("v1.2.3-456.789", "v1.2.3-456.789"),
        ("v1.2.3-456-789", "v1.2.3-456-789"),
        ("v1.2.3-456a", "v1.2.3-456a"),
        ("v1.2.3-pre", "v1.2.3-pre"),
        ("v1.2.3-pre+meta", "v1.2.3-pre"),
        ("v1.2.3-pre.1", "v1.2.3-pre.1"),
        ("v1.2.3-zzz", "v1.2.3-zzz"),
        ("v1.2.3", "v1.2.3"),
        ("v1.2.3+meta", "v1.2.3"),
        ("v1.2.3+meta-pre", "v1.2.3"),
        ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
    ];

    #[test]
    fn validity_and_canonical_form() {
        for &(input, want) in ORDERED {
            assert_eq!(is_valid(input), !want.is_empty(), "is_valid({input:?})");
            assert_eq!(canonical(input), want, "canonical({input:?})");
        }
    }

    #[test]
    fn more_invalid_versions() {
        for bad in [
            "",
            "v",
            "1.2.3",
            "V1.2.3",
            "v01.2.3",
            "v1.02.3",
            "v1.2.03",
            "v1.2.3.4",
            "v1.2.3-",
            "v1.2.3-01",
            "v1.2.3-a..b",
            "v1.2.3-a.",
            "v1.2.3+",
            "v1.2.3+a..b",
            "v1.2.3+a.",
            "v1.2.3+a+b",
            "v1.2.3-a_b",
            "v1.2.3 ",
            "v1.",
            "v1.2.",
            "v-1",
            "v1.2.3-é",
        ] {
            assert!(!is_valid(bad), "{bad:?} should be invalid");
            assert_eq!(canonical(bad), "");
            assert_eq!(major(bad), "");
            assert_eq!(major_minor(bad), "");
            assert_eq!(prerelease(bad), "");
            assert_eq!(build(bad), "");
        }
        for good in [
            "v0",
            "v0.0.0",
            "v1.2.3-0",
            "v1.2.3-0a",
            "v1.2.3-00a",
            "v1.2.3-a-.-b",
            "v1.2.3+01",
            "v1.2.3-x+y.z",
            "v18446744073709551616.0.0",
        ] {
            assert!(is_valid(good), "{good:?} should be valid");
        }
    }

    #[test]
    fn major_and_major_minor() {
        for &(input, canon) in ORDERED {
            let want_major = canon.split('.').next().filter(|_| !canon.is_empty());
            assert_eq!(major(input), want_major.unwrap_or(""), "major({input:?})");
            let want_mm = if canon.is_empty() {
                String::new()
            } else {
                let mut it = canon.split('.');
                format!("{}.{}", it.next().unwrap(), it.next().unwrap())
            };
            assert_eq!(major_minor(input), want_mm, "major_minor({input:?})");
        }
        assert_eq!(major("v2.1.0"), "v2");
        assert_eq!(major("v10"), "v10");
        assert_eq!(major_minor("v2"), "v2.0");
        assert_eq!(major_minor("v2.13"), "v2.13");
        assert_eq!(major_minor("v2.13.4-pre+b"), "v2.13");
    }

    #[test]
    fn prerelease_and_build() {
        for &(input, canon) in ORDERED {
            let want_pre = canon.find('-').map(|i| &canon[i..]).unwrap_or("");
            assert_eq!(prerelease(input), want_pre, "prerelease({input:?})");
            let want_build = if canon.is_empty() {
                ""
            } else {
                input.find('+').map(|i| &input[i..]).unwrap_or("")
            };
            assert_eq!(build(input), want_build, "build({input:?})");
        }
        assert_eq!(prerelease("v2.1.0-pre+meta"), "-pre");
        assert_eq!(build("v2.1.0-pre+meta"), "+meta");
        assert_eq!(build("v2.0.0+incompatible"), "+incompatible");
    }

    #[test]
    fn compare_follows_table_order() {
        for (i, &(a, ca)) in ORDERED.iter().enumerate() {
            for (j, &(b, cb)) in ORDERED.iter().enumerate() {
                let want = if ca == cb { Ordering::Equal } else { i.cmp(&j) };
                assert_eq!(compare(a, b), want, "compare({a:?}, {b:?})");
            }
        }
    }

    #[test]
    fn compare_numbers_numerically() {
        assert_eq!(compare("v1.10.0", "v1.9.0"), Ordering::Greater);
        assert_eq!(compare("v10.0.0", "v9.99.99"), Ordering::Greater);
        assert_eq!(compare("v1.0.0-10", "v1.0.0-9"), Ordering::Greater);
        assert_eq!(compare("v1.0.0-9", "v1.0.0-a"), Ordering::Less);
        assert_eq!(compare("v1.0.0-B", "v1.0.0-a"), Ordering::Less);
        assert_eq!(compare("v1.0.0-a.b", "v1.0.0-a"), Ordering::Greater);
        assert_eq!(
            compare("v99999999999999999999.0.0", "v99999999999999999998.0.0"),
            Ordering::Greater
        );
        assert_eq!(compare("v1.0.0+a", "v1.0.0+b"), Ordering::Equal);
        assert_eq!(compare("x", "y"), Ordering::Equal);
        assert_eq!(compare("x", "v0.0.0"), Ordering::Less);
        assert_eq!(compare("v0.0.0", ""), Ordering::Greater);
    }

    /// A small deterministic generator, so the shuffle needs no crate.
    fn shuffled(items: &[&str], mut seed: u64) -> Vec<String> {
        let mut out: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        for i in (1..out.len()).rev() {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let j = (seed >> 33) as usize % (i + 1);
            out.swap(i, j);
        }
        out
    }

    #[test]
    fn sort_matches_golden_order() {
        // Ties (same precedence) are broken by plain string order.
        let golden = [
            "bad",
            "v1+meta",
            "v1-alpha.beta.gamma",
            "v1-pre",
            "v1-pre+meta",
            "v1.2+meta",
            "v1.2-pre",
            "v1.2-pre+meta",
            "v1.0.0-alpha",
            "v1.0.0-alpha.1",
            "v1.0.0-alpha.beta",
            "v1.0.0-beta",
            "v1.0.0-beta.2",
            "v1.0.0-beta.11",
            "v1.0.0-rc.1",
            "v1",
            "v1.0",
            "v1.0.0",
            "v1.2",
            "v1.2.0",
            "v1.2.3-456",
            "v1.2.3-456.789",
            "v1.2.3-456-789",
            "v1.2.3-456a",
            "v1.2.3-pre",
            "v1.2.3-pre+meta",
            "v1.2.3-pre.1",
            "v1.2.3-zzz",
            "v1.2.3",
            "v1.2.3+meta",
            "v1.2.3+meta-pre",
            "v1.2.3+meta-pre.sha.256a",
        ];
        let inputs: Vec<&str> = ORDERED.iter().map(|&(s, _)| s).collect();
        for seed in 0..20 {
            let mut list = shuffled(&inputs, seed);
            sort(&mut list);
            assert_eq!(list, golden, "seed {seed}");
        }
    }

    #[test]
    fn max_returns_canonical_higher() {
        for (i, &(a, ca)) in ORDERED.iter().enumerate() {
            for (j, &(b, cb)) in ORDERED.iter().enumerate() {
                let want = if i < j { cb } else { ca };
                assert_eq!(max(a, b), want, "max({a:?}, {b:?})");
            }
        }
        assert_eq!(max("v1.2", "v1.1.9"), "v1.2.0");
        assert_eq!(max("bad", "worse"), "");
    }
}
