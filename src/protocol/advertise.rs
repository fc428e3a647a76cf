//! Ref advertisement (v0/v1), the v2 capability list, and v2 `ls-refs`.

use super::pktline::{write_flush, write_line};
use super::request::LsRefsRequest;
use crate::refs::RefIndex;

const ZERO: &str = "0000000000000000000000000000000000000000";

/// v0/v1 capabilities: only what upload_pack implements, in the order C git's upload-pack
/// (2.47, `send_ref`) lists them, so that a byte-for-byte comparison differs only in `agent=`.
pub fn v0_capabilities(index: &RefIndex) -> String {
    let mut caps: Vec<String> = [
        "multi_ack",
        "thin-pack",
        "side-band",
        "side-band-64k",
        "ofs-delta",
        "shallow",
        "deepen-since",
        "deepen-not",
        "deepen-relative",
        "no-progress",
        "include-tag",
        "multi_ack_detailed",
        "allow-tip-sha1-in-want",
        "allow-reachable-sha1-in-want",
        "no-done",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let (Some(t), Some(_)) = (&index.head_symref, index.head()) {
        caps.push(format!("symref=HEAD:{t}"));
    }
    caps.push("filter".into());
    caps.push("object-format=sha1".into());
    caps.push(format!("agent={}", crate::AGENT));
    caps.join(" ")
}

/// The v0/v1 advertisement (without the smart-HTTP `# service=` preamble).
pub fn v0_refs(index: &RefIndex) -> Vec<u8> {
    let caps = v0_capabilities(index);
    let mut out = Vec::new();
    let mut first = true;
    let mut line = |out: &mut Vec<u8>, oid: &dyn std::fmt::Display, name: &str| {
        if std::mem::take(&mut first) {
            write_line(out, format_args!("{oid} {name}\0{caps}"));
        } else {
            write_line(out, format_args!("{oid} {name}"));
        }
    };
    if let Some(h) = index.head() {
        line(&mut out, &h, "HEAD");
    }
    for (name, r) in &index.refs {
        line(&mut out, &r.oid, name);
        if let Some(p) = &r.peeled {
            line(&mut out, p, &format!("{name}^{{}}"));
        }
    }
    if index.head().is_none() && index.refs.is_empty() {
        line(&mut out, &ZERO, "capabilities^{}");
    }
    write_flush(&mut out);
    out
}

/// The v2 capability advertisement.
pub fn v2_capabilities() -> Vec<u8> {
    let mut out = Vec::new();
    write_line(&mut out, "version 2");
    write_line(&mut out, format_args!("agent={}", crate::AGENT));
    write_line(&mut out, "ls-refs=unborn");
    write_line(&mut out, "fetch=shallow wait-for-done filter ref-in-want");
    write_line(&mut out, "server-option");
    write_line(&mut out, "object-format=sha1");
    write_flush(&mut out);
    out
}

/// v2 `ls-refs`.
pub fn ls_refs(index: &RefIndex, req: &LsRefsRequest) -> Vec<u8> {
    let wanted = |name: &str| {
        req.ref_prefixes.is_empty()
            || req
                .ref_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    };
    let mut out = Vec::new();
    if wanted("HEAD") {
        match (index.head(), &index.head_symref) {
            (Some(oid), Some(t)) if req.symrefs => {
                write_line(&mut out, format_args!("{oid} HEAD symref-target:{t}"))
            }
            (Some(oid), _) => write_line(&mut out, format_args!("{oid} HEAD")),
            (None, Some(t)) if req.unborn => {
                write_line(&mut out, format_args!("unborn HEAD symref-target:{t}"))
            }
            (None, _) => {}
        }
    }
    for (name, r) in &index.refs {
        if !wanted(name) {
            continue;
        }
        match (&r.peeled, req.peel) {
            (Some(p), true) => write_line(&mut out, format_args!("{} {name} peeled:{p}", r.oid)),
            _ => write_line(&mut out, format_args!("{} {name}", r.oid)),
        }
    }
    write_flush(&mut out);
    out
}
