//! The upstream side: which repository an import path names ([`resolve`]: rules, well-known
//! hosts, `?go-get=1` discovery), which upstreams goprox may contact on its own ([`policy`]),
//! and what it trusts and presents to them ([`creds`]). The fetch client itself lives with
//! the fill it feeds (`fill::fetch`).

pub mod creds;
pub mod policy;
pub mod resolve;
