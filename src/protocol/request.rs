//! Parsing of upload-pack requests (v0/v1 POST bodies and v2 commands) into plain structs.
//! Everything here touches network input and is fuzzed (see fuzz/).

use super::pktline::{Pkt, PktError, PktReader};
use gix_hash::ObjectId;

/// A request body that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The body is not a sequence of pkt-lines.
    #[error("{0}")]
    Pkt(#[from] PktError),
    /// The pkt-lines are not a valid request (unknown line, bad object id, missing flush...).
    #[error("protocol error: {0}")]
    Protocol(String),
}

fn perr(msg: impl Into<String>) -> RequestError {
    RequestError::Protocol(msg.into())
}

/// What the client asked `fetch` / upload-pack for, in either protocol version.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FetchRequest {
    /// `want <oid>` lines.
    pub wants: Vec<ObjectId>,
    /// `want-ref <ref>` lines (v2).
    pub want_refs: Vec<String>,
    /// `have <oid>` lines.
    pub haves: Vec<ObjectId>,
    /// `shallow <oid>`: the client's shallow boundary.
    pub shallows: Vec<ObjectId>,
    /// `deepen <n>` (n > 0).
    pub depth: Option<u32>,
    /// `deepen-since <unix seconds>`.
    pub deepen_since: Option<i64>,
    /// `deepen-not <ref>` lines.
    pub deepen_not: Vec<String>,
    /// `deepen-relative`.
    pub deepen_relative: bool,
    /// `filter <spec>` (partial clone).
    pub filter: Option<String>,
    /// `done`: negotiation is over, send the pack.
    pub done: bool,
    /// `thin-pack`: deltas against objects the client has are allowed.
    pub thin_pack: bool,
    /// `no-progress`: no progress messages on the side band.
    pub no_progress: bool,
    /// `include-tag`: send annotated tags pointing at objects sent.
    pub include_tag: bool,
    /// `ofs-delta`: the client understands OFS_DELTA entries.
    pub ofs_delta: bool,
    /// `side-band-64k` (v0 capability; always set for v2, which always multiplexes).
    pub side_band_64k: bool,
    /// `side-band` (v0 capability: 1000-byte packets).
    pub side_band: bool,
    /// `multi_ack_detailed` (v0 capability).
    pub multi_ack_detailed: bool,
    /// `multi_ack` (v0 capability).
    pub multi_ack: bool,
    /// `no-done` (v0 capability).
    pub no_done: bool,
    /// `wait-for-done` (v2): do not send the pack before `done`.
    pub wait_for_done: bool,
    /// v0 only: the body had a have section (ended by a flush or `done`). A stateless
    /// deepening client first sends only its wants and reads just the shallow list.
    /// Anything after the first flush of the have section is ignored, as C git does.
    pub have_section: bool,
}

impl FetchRequest {
    /// The `fetch` that `git fetch --depth=1 <url> <ref>` sends for a ref pointing at `want` in
    /// a repository that has nothing yet: the go command's `GOPROXY=direct` fetch of one
    /// version into a new module cache (`git fetch -f --depth=1 origin
    /// refs/tags/v1.2.3:refs/tags/v1.2.3`), and `git clone --depth=1 --branch`.
    pub fn shallow_tip(want: ObjectId) -> Self {
        FetchRequest {
            wants: vec![want],
            depth: Some(1),
            done: true,
            thin_pack: true,
            no_progress: true,
            include_tag: true,
            ofs_delta: true,
            side_band_64k: true,
            ..FetchRequest::default()
        }
    }

    /// Whether the request asks for any kind of deepening.
    pub fn deepens(&self) -> bool {
        self.depth.is_some() || self.deepen_since.is_some() || !self.deepen_not.is_empty()
    }
}

fn parse_oid(s: &[u8]) -> Result<ObjectId, RequestError> {
    let s = std::str::from_utf8(s).map_err(|_| perr("object id is not UTF-8"))?;
    if s.len() != 40 {
        return Err(perr(format!("invalid object id {s:?}")));
    }
    ObjectId::from_hex(s.as_bytes()).map_err(|_| perr(format!("invalid object id {s:?}")))
}

fn utf8(s: &[u8]) -> Result<&str, RequestError> {
    std::str::from_utf8(s).map_err(|_| perr("request line is not UTF-8"))
}

/// Applies one shared argument line (`want`, `have`, `shallow`, `deepen*`, `filter`); returns
/// `Ok(false)` when the line is not one of them.
fn shared_arg(req: &mut FetchRequest, line: &[u8]) -> Result<bool, RequestError> {
    let line = utf8(line)?;
    let (key, val) = line.split_once(' ').unwrap_or((line, ""));
    match key {
        "want" => req.wants.push(parse_oid(val.as_bytes())?),
        "have" => req.haves.push(parse_oid(val.as_bytes())?),
        "shallow" => req.shallows.push(parse_oid(val.as_bytes())?),
        "deepen" => {
            let d: u64 = val
                .parse()
                .map_err(|_| perr(format!("invalid deepen {val:?}")))?;
            if d == 0 {
                return Err(perr("deepen 0 is not allowed"));
            }
            req.depth = Some(d.min(i32::MAX as u64) as u32);
        }
        "deepen-since" => {
            req.deepen_since = Some(
                val.parse()
                    .map_err(|_| perr(format!("invalid deepen-since {val:?}")))?,
            )
        }
        "deepen-not" => {
            if val.is_empty() {
                return Err(perr("deepen-not needs a ref"));
            }
            req.deepen_not.push(val.to_string())
        }
        "filter" => req.filter = Some(val.to_string()),
        _ => return Ok(false),
    }
    Ok(true)
}

/// Parse a v0/v1 upload-pack POST body (stateless RPC): wants (the first with capabilities),
/// shallow/deepen lines, flush, then batches of haves each ended by a flush, optionally `done`.
pub fn parse_v0(body: &[u8]) -> Result<FetchRequest, RequestError> {
    let mut r = PktReader::new(body);
    let mut req = FetchRequest::default();
    let mut first = true;
    // Phase 1: wants and deepening, up to the first flush.
    loop {
        let line = match r.next_pkt()? {
            None => {
                if req.wants.is_empty() {
                    // An empty body: the client wants nothing.
                    return Ok(req);
                }
                return Err(perr("request ended before flush"));
            }
            Some(Pkt::Flush) => break,
            Some(p @ Pkt::Data(_)) => p.text().unwrap_or_default(),
            Some(other) => return Err(perr(format!("unexpected {other:?} in want list"))),
        };
        if first && line.starts_with(b"want ") {
            first = false;
            let text = utf8(line)?;
            let mut parts = text.splitn(3, ' ');
            parts.next();
            let oid = parts.next().unwrap_or_default();
            req.wants.push(parse_oid(oid.as_bytes())?);
            for cap in parts.next().unwrap_or_default().split(' ') {
                apply_v0_capability(&mut req, cap);
            }
            continue;
        }
        if line.starts_with(b"have ") || !shared_arg(&mut req, line)? {
            return Err(perr(format!(
                "unexpected line {:?} in want list",
                String::from_utf8_lossy(line)
            )));
        }
    }
    if req.wants.is_empty() {
        return Err(perr("no want lines before flush"));
    }
    // Phase 2: haves, up to the first flush (one stateless round: C git's upload-pack answers
    // that batch and exits) or `done`.
    loop {
        match r.next_pkt()? {
            None => break,
            Some(Pkt::Flush) => {
                req.have_section = true;
                break;
            }
            Some(Pkt::Data(d)) => {
                let line = d.strip_suffix(b"\n").unwrap_or(d);
                if line == b"done" {
                    req.done = true;
                    req.have_section = true;
                    break;
                }
                let Some(oid) = line.strip_prefix(b"have ") else {
                    return Err(perr(format!(
                        "expected have or done, got {:?}",
                        String::from_utf8_lossy(line)
                    )));
                };
                req.haves.push(parse_oid(oid)?);
            }
            Some(other) => return Err(perr(format!("unexpected {other:?} in have list"))),
        }
    }
    Ok(req)
}

fn apply_v0_capability(req: &mut FetchRequest, cap: &str) {
    match cap {
        "multi_ack_detailed" => req.multi_ack_detailed = true,
        "multi_ack" => req.multi_ack = true,
        "no-done" => req.no_done = true,
        "side-band-64k" => req.side_band_64k = true,
        "side-band" => req.side_band = true,
        "thin-pack" => req.thin_pack = true,
        "no-progress" => req.no_progress = true,
        "include-tag" => req.include_tag = true,
        "ofs-delta" => req.ofs_delta = true,
        "deepen-relative" => req.deepen_relative = true,
        _ => {}
    }
}

/// Arguments of a v2 `ls-refs` command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LsRefsRequest {
    /// `symrefs`: show symbolic refs' targets.
    pub symrefs: bool,
    /// `peel`: show annotated tags' peeled objects.
    pub peel: bool,
    /// `unborn`: show an unborn HEAD.
    pub unborn: bool,
    /// `ref-prefix <p>` lines (none: every ref).
    pub ref_prefixes: Vec<String>,
}

/// A v2 command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V2Request {
    /// `command=ls-refs`.
    LsRefs(LsRefsRequest),
    /// `command=fetch`.
    Fetch(FetchRequest),
    /// `object-info` and others we do not advertise.
    Unknown(String),
}

/// Parse a v2 request: `command=X`, capability lines, delimiter, arguments, flush.
pub fn parse_v2(body: &[u8]) -> Result<V2Request, RequestError> {
    let mut r = PktReader::new(body);
    let mut command = None;
    // Capability section.
    loop {
        match r.next_pkt()? {
            None => return Err(perr("request ended in capability section")),
            Some(Pkt::Delim) => break,
            Some(Pkt::Flush) => {
                // No arguments at all.
                let cmd = command.ok_or_else(|| perr("no command"))?;
                return finish_v2(cmd, Vec::new());
            }
            Some(p @ Pkt::Data(_)) => {
                let line = utf8(p.text().unwrap_or_default())?;
                if let Some(c) = line.strip_prefix("command=") {
                    command = Some(c.to_string());
                } else if let Some(fmt) = line.strip_prefix("object-format=")
                    && fmt != "sha1"
                {
                    return Err(perr(format!("unsupported object-format {fmt:?}")));
                }
                // agent=, server-option=, session-id= are informational.
            }
            Some(Pkt::ResponseEnd) => return Err(perr("unexpected response-end")),
        }
    }
    let cmd = command.ok_or_else(|| perr("no command"))?;
    let mut args = Vec::new();
    loop {
        match r.next_pkt()? {
            None => return Err(perr("request ended before flush")),
            Some(Pkt::Flush) => break,
            Some(p @ Pkt::Data(_)) => args.push(p.text().unwrap_or_default()),
            Some(other) => return Err(perr(format!("unexpected {other:?} in arguments"))),
        }
    }
    finish_v2(cmd, args)
}

fn finish_v2(cmd: String, args: Vec<&[u8]>) -> Result<V2Request, RequestError> {
    match cmd.as_str() {
        "ls-refs" => {
            let mut req = LsRefsRequest::default();
            for a in args {
                let a = utf8(a)?;
                match a {
                    "symrefs" => req.symrefs = true,
                    "peel" => req.peel = true,
                    "unborn" => req.unborn = true,
                    _ => {
                        if let Some(p) = a.strip_prefix("ref-prefix ") {
                            req.ref_prefixes.push(p.to_string());
                        } else {
                            return Err(perr(format!("unexpected ls-refs argument {a:?}")));
                        }
                    }
                }
            }
            Ok(V2Request::LsRefs(req))
        }
        "fetch" => {
            let mut req = FetchRequest {
                side_band_64k: true,
                ..Default::default()
            };
            for a in args {
                if shared_arg(&mut req, a)? {
                    continue;
                }
                let a = utf8(a)?;
                match a {
                    "done" => req.done = true,
                    "thin-pack" => req.thin_pack = true,
                    "no-progress" => req.no_progress = true,
                    "include-tag" => req.include_tag = true,
                    "ofs-delta" => req.ofs_delta = true,
                    "deepen-relative" => req.deepen_relative = true,
                    "wait-for-done" => req.wait_for_done = true,
                    "sideband-all" => {}
                    _ => {
                        if let Some(r) = a.strip_prefix("want-ref ") {
                            req.want_refs.push(r.to_string());
                        } else if a.starts_with("packfile-uris ") {
                            // Not advertised; ignore politely.
                        } else {
                            return Err(perr(format!("unexpected fetch argument {a:?}")));
                        }
                    }
                }
            }
            Ok(V2Request::Fetch(req))
        }
        other => Ok(V2Request::Unknown(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::pktline::{write_delim, write_flush, write_line};

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn v0_full() {
        let mut b = Vec::new();
        write_line(
            &mut b,
            format!(
                "want {A} multi_ack_detailed side-band-64k thin-pack ofs-delta deepen-relative agent=git/2"
            ),
        );
        write_line(&mut b, format!("want {B}"));
        write_line(&mut b, format!("shallow {B}"));
        write_line(&mut b, "deepen 3");
        write_flush(&mut b);
        write_line(&mut b, format!("have {A}"));
        write_line(&mut b, "done");
        let r = parse_v0(&b).unwrap();
        assert_eq!(r.wants.len(), 2);
        assert_eq!(r.shallows.len(), 1);
        assert_eq!(r.depth, Some(3));
        assert!(
            r.multi_ack_detailed
                && r.side_band_64k
                && r.thin_pack
                && r.ofs_delta
                && r.deepen_relative
        );
        assert_eq!(r.haves.len(), 1);
        assert!(r.done);
    }

    #[test]
    fn v0_stops_at_the_first_have_flush() {
        let mut b = Vec::new();
        write_line(&mut b, format!("want {A} multi_ack_detailed"));
        write_flush(&mut b);
        write_line(&mut b, format!("have {A}"));
        write_flush(&mut b);
        write_line(&mut b, format!("have {B}"));
        write_line(&mut b, "done");
        let r = parse_v0(&b).unwrap();
        assert_eq!(r.haves.len(), 1);
        assert!(r.have_section && !r.done);
    }

    #[test]
    fn v0_errors() {
        assert!(parse_v0(b"zzzz").is_err());
        let mut b = Vec::new();
        write_line(&mut b, "want nothex");
        write_flush(&mut b);
        assert!(parse_v0(&b).is_err());
        let mut b = Vec::new();
        write_line(&mut b, format!("want {A}"));
        assert!(parse_v0(&b).is_err());
    }

    #[test]
    fn v2_fetch_and_ls_refs() {
        let mut b = Vec::new();
        write_line(&mut b, "command=fetch");
        write_line(&mut b, "agent=git/2.47");
        write_line(&mut b, "object-format=sha1");
        write_delim(&mut b);
        write_line(&mut b, "thin-pack");
        write_line(&mut b, "ofs-delta");
        write_line(&mut b, "deepen 1");
        write_line(&mut b, format!("want {A}"));
        write_line(&mut b, format!("have {B}"));
        write_line(&mut b, "done");
        write_flush(&mut b);
        let V2Request::Fetch(f) = parse_v2(&b).unwrap() else {
            panic!()
        };
        assert_eq!(f.depth, Some(1));
        assert!(f.done && f.thin_pack && f.ofs_delta);
        let mut b = Vec::new();
        write_line(&mut b, "command=ls-refs");
        write_delim(&mut b);
        write_line(&mut b, "peel");
        write_line(&mut b, "symrefs");
        write_line(&mut b, "ref-prefix refs/heads/");
        write_flush(&mut b);
        let V2Request::LsRefs(l) = parse_v2(&b).unwrap() else {
            panic!()
        };
        assert!(l.peel && l.symrefs);
        assert_eq!(l.ref_prefixes, vec!["refs/heads/".to_string()]);
    }
}
