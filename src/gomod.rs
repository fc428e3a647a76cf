//! Module requirements read from `go.mod` and `go.sum` files, for `goprox mirror --from-go-mod`.
//!
//! * `go.mod`: `require` lines and blocks (`// indirect` and other comments are ignored, the
//!   modules are kept), `replace` lines and blocks: a replacement that is a module (path and
//!   version) is wanted too; a requirement replaced by a local directory is skipped (it is not
//!   fetched from anywhere). `module`, `go`, `toolchain`, `godebug`, `exclude`, `retract`, `tool`
//!   and `ignore` are recognised and ignored; any other directive is an error, so that a file of
//!   another kind is not silently read as having no requirements.
//! * `go.sum`: `<module> <version>[/go.mod] <hash>` lines.
//!
//! The files are operator input: every problem is an error naming the line, never a panic.

use std::collections::{BTreeMap, BTreeSet};

/// A module at a version, and the line (1-based) that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The module path.
    pub path: String,
    /// The version, as written (`v1.2.3`, a pseudo-version, ...).
    pub version: String,
    /// 1-based line of the file.
    pub line: usize,
}

/// What a `replace` directive substitutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Replacement {
    /// Another module at a version (fetched like any other).
    Module { path: String, version: String },
    /// A directory on the build machine.
    Dir(String),
}

/// One `replace` directive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replace {
    /// The module replaced.
    pub path: String,
    /// Only this version of it (`None`: every version).
    pub version: Option<String>,
    /// What replaces it.
    pub with: Replacement,
    /// 1-based line of the directive.
    pub line: usize,
}

/// The parts of a `go.mod` that name other modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct GoMod {
    /// The `module` directive.
    pub module: Option<String>,
    pub require: Vec<Requirement>,
    pub replace: Vec<Replace>,
}

/// A requirement that is not fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The requirement.
    pub module: Requirement,
    /// Why it is not fetched (e.g. replaced by a directory).
    pub why: String,
}

/// What a file asks to mirror.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modules {
    /// Modules to fetch (requirements and module replacements).
    pub wanted: Vec<Requirement>,
    /// Requirements that are not fetched.
    pub skipped: Vec<Skipped>,
}

/// A problem in a `go.mod` or `go.sum` file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    /// 1-based line of the problem.
    pub line: usize,
    /// What is wrong.
    pub msg: String,
}

fn err<T>(line: usize, msg: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError {
        line,
        msg: msg.into(),
    })
}

/// Directives of `go.mod` that do not name modules to fetch.
const IGNORED: &[&str] = &[
    "module",
    "go",
    "toolchain",
    "godebug",
    "exclude",
    "retract",
    "tool",
    "ignore",
];

/// A module version as the go command writes it: `v` and a digit, then letters, digits and
/// `.-+` (semantic versions, `+incompatible`, pseudo-versions).
pub(crate) fn valid_version(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() >= 2
        && b[0] == b'v'
        && b[1].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b".-+".contains(c))
}

/// Whether a `replace` target is a directory (Go's `modfile.IsDirectoryPath`): rooted, or
/// starting with `./` or `../` (either slash), or a Windows drive path.
fn is_dir_path(p: &str) -> bool {
    let b = p.as_bytes();
    p == "."
        || p == ".."
        || p.starts_with("./")
        || p.starts_with("../")
        || p.starts_with(".\\")
        || p.starts_with("..\\")
        || p.starts_with('/')
        || p.starts_with('\\')
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// The tokens of one `go.mod` line: words, `(`, `)`, `=>`, and quoted strings (`"..."` with
/// `\"` and `\\` escapes, or `` `...` ``); a `//` at the start of a token begins a comment.
fn tokens(text: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() || rest.starts_with("//") {
            return Ok(out);
        }
        if let Some(r) = rest.strip_prefix("=>") {
            out.push("=>".to_string());
            rest = r;
            continue;
        }
        let mut chars = rest.char_indices();
        let Some((_, first)) = chars.next() else {
            return Ok(out);
        };
        match first {
            '(' | ')' => {
                out.push(first.to_string());
                rest = &rest[1..];
            }
            '"' => {
                let mut s = String::new();
                let mut end = None;
                let mut escaped = false;
                for (i, c) in chars {
                    if escaped {
                        s.push(c);
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        end = Some(i);
                        break;
                    } else {
                        s.push(c);
                    }
                }
                let Some(end) = end else {
                    return err(line, "unterminated quoted string");
                };
                out.push(s);
                rest = &rest[end + 1..];
            }
            '`' => {
                let Some(end) = rest[1..].find('`') else {
                    return err(line, "unterminated quoted string");
                };
                out.push(rest[1..1 + end].to_string());
                rest = &rest[end + 2..];
            }
            _ => {
                let end = rest
                    .char_indices()
                    .find(|&(i, c)| {
                        c.is_whitespace() || c == '(' || c == ')' || rest[i..].starts_with("=>")
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(rest.len());
                out.push(rest[..end].to_string());
                rest = &rest[end..];
            }
        }
    }
}

/// Parse a `go.mod` file.
pub(crate) fn parse_go_mod(text: &str) -> Result<GoMod, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut m = GoMod::default();
    // The verb of the open block and the line it opened on.
    let mut block: Option<(String, usize)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let toks = tokens(raw, line)?;
        if toks.is_empty() {
            continue;
        }
        if let Some((verb, _)) = &block {
            if toks[0] == ")" {
                if toks.len() > 1 {
                    return err(line, "unexpected text after `)`");
                }
                block = None;
                continue;
            }
            if toks.iter().any(|t| t == "(") {
                return err(line, format!("`(` inside a {verb} block"));
            }
            let verb = verb.clone();
            directive(&mut m, &verb, &toks, line)?;
            continue;
        }
        let verb = toks[0].as_str();
        if verb == ")" || verb == "(" {
            return err(line, format!("unexpected `{verb}`"));
        }
        if !(verb == "require" || verb == "replace" || IGNORED.contains(&verb)) {
            return err(line, format!("unknown directive {verb:?}"));
        }
        match &toks[1..] {
            [open] if open == "(" => block = Some((verb.to_string(), line)),
            [open, close] if open == "(" && close == ")" => {}
            [] => return err(line, format!("{verb}: missing arguments")),
            args => {
                if args.iter().any(|t| t == "(" || t == ")") {
                    return err(line, format!("{verb}: unexpected parenthesis"));
                }
                if verb == "module" {
                    m.module = args.first().cloned();
                }
                directive(&mut m, verb, args, line)?;
            }
        }
    }
    if let Some((verb, opened)) = block {
        return err(opened, format!("{verb} block is never closed with `)`"));
    }
    Ok(m)
}

/// One `require` or `replace` (the words after the verb); other verbs are ignored.
fn directive(m: &mut GoMod, verb: &str, args: &[String], line: usize) -> Result<(), ParseError> {
    match verb {
        "require" => {
            let [path, version] = args else {
                return err(line, "require: expected MODULE VERSION");
            };
            check_version(version, line)?;
            m.require.push(Requirement {
                path: path.clone(),
                version: version.clone(),
                line,
            });
        }
        "replace" => {
            let Some(arrow) = args.iter().position(|t| t == "=>") else {
                return err(
                    line,
                    "replace: expected MODULE [VERSION] => TARGET [VERSION]",
                );
            };
            let (old, new) = (&args[..arrow], &args[arrow + 1..]);
            let (path, version) = match old {
                [p] => (p.clone(), None),
                [p, v] => {
                    check_version(v, line)?;
                    (p.clone(), Some(v.clone()))
                }
                _ => return err(line, "replace: expected MODULE [VERSION] before `=>`"),
            };
            let with = match new {
                [dir] if is_dir_path(dir) => Replacement::Dir(dir.clone()),
                [p] => {
                    return err(
                        line,
                        format!(
                            "replace: {p:?} has no version, so it must be a directory \
                             (starting with ./, ../ or /)"
                        ),
                    );
                }
                [dir, _] if is_dir_path(dir) => {
                    return err(
                        line,
                        format!("replace: directory {dir:?} cannot have a version"),
                    );
                }
                [p, v] => {
                    check_version(v, line)?;
                    Replacement::Module {
                        path: p.clone(),
                        version: v.clone(),
                    }
                }
                _ => return err(line, "replace: expected TARGET [VERSION] after `=>`"),
            };
            m.replace.push(Replace {
                path,
                version,
                with,
                line,
            });
        }
        _ => {}
    }
    Ok(())
}

fn check_version(v: &str, line: usize) -> Result<(), ParseError> {
    if valid_version(v) {
        Ok(())
    } else {
        err(
            line,
            format!("invalid version {v:?} (want vMAJOR.MINOR.PATCH or a pseudo-version)"),
        )
    }
}

impl GoMod {
    /// The modules to fetch: every requirement not replaced, and every replacement that is a
    /// module; requirements replaced by a directory are skipped. (A `replace` for a version
    /// that is not required does nothing, as in the go command.)
    pub fn modules(&self) -> Modules {
        let mut out = Modules::default();
        for r in &self.require {
            // A version-specific replace wins over a whole-module one.
            let rep = self
                .replace
                .iter()
                .rev()
                .find(|p| p.path == r.path && p.version.as_deref() == Some(r.version.as_str()))
                .or_else(|| {
                    self.replace
                        .iter()
                        .rev()
                        .find(|p| p.path == r.path && p.version.is_none())
                });
            match rep.map(|p| &p.with) {
                None => out.wanted.push(r.clone()),
                Some(Replacement::Module { path, version }) => {
                    out.wanted.push(Requirement {
                        path: path.clone(),
                        version: version.clone(),
                        line: rep.map(|p| p.line).unwrap_or(r.line),
                    });
                }
                Some(Replacement::Dir(dir)) => out.skipped.push(Skipped {
                    module: r.clone(),
                    why: format!("replaced by directory {dir}"),
                }),
            }
        }
        out
    }
}

/// Parse a `go.sum` file: `<module> <version>[/go.mod] <hash>` per line (blank lines allowed).
pub(crate) fn parse_go_sum(text: &str) -> Result<Vec<Requirement>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let fields: Vec<&str> = raw.split_whitespace().collect();
        let [path, version, hash] = fields[..] else {
            if fields.is_empty() {
                continue;
            }
            return err(
                line,
                format!(
                    "expected MODULE VERSION[/go.mod] HASH, found {} fields",
                    fields.len()
                ),
            );
        };
        let version = version.strip_suffix("/go.mod").unwrap_or(version);
        check_version(version, line)?;
        if !hash
            .split_once(':')
            .is_some_and(|(alg, sum)| !alg.is_empty() && !sum.is_empty())
        {
            return err(line, format!("invalid hash {hash:?} (want h1:...)"));
        }
        out.push(Requirement {
            path: path.to_string(),
            version: version.to_string(),
            line,
        });
    }
    Ok(out)
}

/// Whether `name` (a file name or path) is a `go.sum` (else it is read as a `go.mod`).
pub(crate) fn is_go_sum(name: &str) -> bool {
    name.rsplit(['/', '\\'])
        .next()
        .is_some_and(|base| base.ends_with(".sum"))
}

/// What the file `name` with contents `text` asks to mirror (a `go.sum` by its name, else a
/// `go.mod`).
pub fn modules_of_file(name: &str, text: &str) -> Result<Modules, ParseError> {
    if is_go_sum(name) {
        Ok(Modules {
            wanted: parse_go_sum(text)?,
            skipped: Vec::new(),
        })
    } else {
        Ok(parse_go_mod(text)?.modules())
    }
}

/// Module paths and the versions named for each, sorted and without duplicates.
pub fn by_path<'a>(
    reqs: impl IntoIterator<Item = &'a Requirement>,
) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in reqs {
        out.entry(r.path.clone())
            .or_default()
            .insert(r.version.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, version: &str, line: usize) -> Requirement {
        Requirement {
            path: path.into(),
            version: version.into(),
            line,
        }
    }

    #[test]
    fn go_mod_with_blocks_comments_and_replaces() {
        let text = "\u{feff}// The app.
module example.com/app // trailing comment

go 1.22
toolchain go1.22.3

require example.com/single v1.0.0

require (
\t// A comment line in a block.
\texample.com/a v1.2.3
\texample.com/b/v2 v2.0.1 // indirect
\tgithub.com/old/thing v2.3.4+incompatible // indirect
\tgolang.org/x/text v0.0.0-20191109021931-daa7c04131f5
\t\"example.com/quoted\" v1.0.0
\texample.com/local v0.0.0-00010101000000-000000000000
\texample.com/pinned v1.1.0
\texample.com/other-version v1.5.0
)

require ()

exclude example.com/a v1.2.2
retract [v1.0.0, v1.0.5] // broken
retract (
\tv0.9.0 // oops
)
godebug (
\tdefault=go1.21
)
tool example.com/a/cmd/gen

replace example.com/local => ../local
replace (
\texample.com/a => example.com/fork/a v1.2.4
\texample.com/pinned v1.1.0=>example.com/pinned-fork v1.1.1
\texample.com/other-version v1.4.0 => ./never-used
\texample.com/not-required => example.com/elsewhere v1.0.0
)
";
        let m = parse_go_mod(text).unwrap();
        assert_eq!(m.module.as_deref(), Some("example.com/app"));
        assert_eq!(
            m.require,
            vec![
                req("example.com/single", "v1.0.0", 7),
                req("example.com/a", "v1.2.3", 11),
                req("example.com/b/v2", "v2.0.1", 12),
                req("github.com/old/thing", "v2.3.4+incompatible", 13),
                req(
                    "golang.org/x/text",
                    "v0.0.0-20191109021931-daa7c04131f5",
                    14
                ),
                req("example.com/quoted", "v1.0.0", 15),
                req(
                    "example.com/local",
                    "v0.0.0-00010101000000-000000000000",
                    16
                ),
                req("example.com/pinned", "v1.1.0", 17),
                req("example.com/other-version", "v1.5.0", 18),
            ]
        );
        assert_eq!(m.replace.len(), 5);
        assert_eq!(
            m.replace[2],
            Replace {
                path: "example.com/pinned".into(),
                version: Some("v1.1.0".into()),
                with: Replacement::Module {
                    path: "example.com/pinned-fork".into(),
                    version: "v1.1.1".into()
                },
                line: 36,
            }
        );
        let mods = m.modules();
        assert_eq!(
            mods.wanted,
            vec![
                req("example.com/single", "v1.0.0", 7),
                req("example.com/fork/a", "v1.2.4", 35),
                req("example.com/b/v2", "v2.0.1", 12),
                req("github.com/old/thing", "v2.3.4+incompatible", 13),
                req(
                    "golang.org/x/text",
                    "v0.0.0-20191109021931-daa7c04131f5",
                    14
                ),
                req("example.com/quoted", "v1.0.0", 15),
                req("example.com/pinned-fork", "v1.1.1", 36),
                req("example.com/other-version", "v1.5.0", 18),
            ]
        );
        assert_eq!(
            mods.skipped,
            vec![Skipped {
                module: req(
                    "example.com/local",
                    "v0.0.0-00010101000000-000000000000",
                    16
                ),
                why: "replaced by directory ../local".into()
            }]
        );
    }

    #[test]
    fn go_mod_errors_name_the_line() {
        let cases: &[(&str, usize, &str)] = &[
            (
                "module x\nrequire example.com/a\n",
                2,
                "expected MODULE VERSION",
            ),
            (
                "require example.com/a v1 extra\n",
                1,
                "expected MODULE VERSION",
            ),
            (
                "require example.com/a master\n",
                1,
                "invalid version \"master\"",
            ),
            ("require (\n  example.com/a v1.0.0\n", 1, "never closed"),
            ("require (\n  example.com/a v1.0.0 (\n)\n", 2, "`(` inside"),
            ("\n\n)\n", 3, "unexpected `)`"),
            (
                "requires example.com/a v1.0.0\n",
                1,
                "unknown directive \"requires\"",
            ),
            ("example.com/a v1.0.0 h1:abc=\n", 1, "unknown directive"),
            (
                "replace example.com/a example.com/b v1.0.0\n",
                1,
                "expected MODULE [VERSION] =>",
            ),
            (
                "replace example.com/a => example.com/b\n",
                1,
                "must be a directory",
            ),
            (
                "replace example.com/a => ./b v1.0.0\n",
                1,
                "cannot have a version",
            ),
            ("replace a b c => d v1.0.0\n", 1, "before `=>`"),
            ("replace a => \n", 1, "after `=>`"),
            ("replace a vX => b v1.0.0\n", 1, "invalid version"),
            ("require \"example.com/a v1.0.0\n", 1, "unterminated"),
            ("require `example.com/a v1.0.0\n", 1, "unterminated"),
            ("require\n", 1, "missing arguments"),
            (
                "require ( example.com/a v1.0.0 )\n",
                1,
                "unexpected parenthesis",
            ),
            ("require (\n)x\n", 2, "after `)`"),
        ];
        for (text, line, want) in cases {
            match parse_go_mod(text) {
                Err(e) => {
                    assert_eq!(e.line, *line, "{text:?}: {e}");
                    assert!(e.to_string().contains(want), "{text:?}: {e}");
                    assert!(e.to_string().starts_with(&format!("line {line}: ")), "{e}");
                }
                Ok(m) => panic!("{text:?} parsed: {m:?}"),
            }
        }
    }

    #[test]
    fn go_sum_lines() {
        let text = "example.com/a v1.2.3 h1:abcdefgh=\n\
                    example.com/a v1.2.3/go.mod h1:ijklmnop=\n\
                    \n\
                    example.com/b/v2 v2.0.0+incompatible/go.mod h1:q=\r\n\
                    golang.org/x/text v0.0.0-20191109021931-daa7c04131f5 h1:r=\n";
        let reqs = parse_go_sum(text).unwrap();
        assert_eq!(
            reqs,
            vec![
                req("example.com/a", "v1.2.3", 1),
                req("example.com/a", "v1.2.3", 2),
                req("example.com/b/v2", "v2.0.0+incompatible", 4),
                req("golang.org/x/text", "v0.0.0-20191109021931-daa7c04131f5", 5),
            ]
        );
        let paths = by_path(&reqs);
        assert_eq!(paths.len(), 3);
        assert_eq!(paths["example.com/a"].len(), 1);

        for (text, line, want) in [
            (
                "example.com/a v1.0.0 h1:x=\nexample.com/b v1.0.0\n",
                2,
                "found 2 fields",
            ),
            ("example.com/a v1.0.0 h1:x= extra\n", 1, "found 4 fields"),
            ("example.com/a latest h1:x=\n", 1, "invalid version"),
            ("example.com/a v1.0.0/go.sum h1:x=\n", 1, "invalid version"),
            ("example.com/a v1.0.0 nohash\n", 1, "invalid hash"),
            ("example.com/a v1.0.0 h1:\n", 1, "invalid hash"),
        ] {
            let e = parse_go_sum(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn files_by_name() {
        assert!(is_go_sum("go.sum"));
        assert!(is_go_sum("/src/app/go.sum"));
        assert!(is_go_sum("deps.sum"));
        assert!(!is_go_sum("go.mod"));
        assert!(!is_go_sum("sum/go.mod"));
        let m = modules_of_file("x/go.sum", "example.com/a v1.0.0 h1:x=\n").unwrap();
        assert_eq!(m.wanted, vec![req("example.com/a", "v1.0.0", 1)]);
        let m = modules_of_file("go.mod", "require example.com/a v1.0.0\n").unwrap();
        assert_eq!(m.wanted, vec![req("example.com/a", "v1.0.0", 1)]);
        // A go.sum read as a go.mod (or any other text) is refused, not read as empty.
        assert!(modules_of_file("go.mod", "example.com/a v1.0.0 h1:x=\n").is_err());
        assert_eq!(modules_of_file("go.mod", "").unwrap(), Modules::default());
    }

    #[test]
    fn versions() {
        for v in [
            "v1.0.0",
            "v0.0.0-20191109021931-daa7c04131f5",
            "v2.3.4+incompatible",
            "v1.2.3-pre.0.20200101000000-abcdefabcdef",
        ] {
            assert!(valid_version(v), "{v}");
        }
        for v in ["", "v", "1.0.0", "vX", "v1.0.0 ", "v1/x", "master"] {
            assert!(!valid_version(v), "{v}");
        }
    }

    /// Arbitrary bytes never panic the parsers (a small deterministic sweep).
    #[test]
    fn no_panics_on_garbage() {
        let pieces = [
            "require",
            "replace",
            "(",
            ")",
            "=>",
            "\"",
            "`",
            "//",
            "v1.0.0",
            "\n",
            " ",
            "\t",
            "example.com/a",
            "./d",
            "é",
            "\\",
            "/go.mod",
            "h1:x",
            "\u{feff}",
            "=",
            ">",
        ];
        let mut x: u64 = 0x1234_5678;
        for _ in 0..3000 {
            let mut s = String::new();
            for _ in 0..(x % 17) {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                s.push_str(pieces[(x >> 33) as usize % pieces.len()]);
            }
            x = x.wrapping_add(1);
            let _ = parse_go_mod(&s).map(|m| m.modules());
            let _ = parse_go_sum(&s);
        }
    }
}
