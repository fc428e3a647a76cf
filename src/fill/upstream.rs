//! What an upstream said, for every part of a fill to share: its ref listing, and how
//! talking to it failed. The client that asks ([`super::fetch`]) and the code that stores what
//! it sends ([`super::inbound`], [`super::tap`]) both use them; neither imports the other for it.

use crate::refs::RefEntry;
use gix_hash::ObjectId;
use std::collections::{BTreeMap, BTreeSet};

/// The refs an upstream advertises (those under the mirrored prefixes).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The refs by full name (HEAD not among them).
    pub refs: BTreeMap<String, RefEntry>,
    /// The target of a symbolic HEAD.
    pub head_symref: Option<String>,
    /// A detached HEAD's object (`None` when HEAD is symbolic).
    pub head_oid: Option<ObjectId>,
}

impl Listing {
    /// Every object a ref names (tags, not their peeled targets), HEAD included.
    pub fn tips(&self) -> BTreeSet<ObjectId> {
        self.refs
            .values()
            .map(|r| r.oid)
            .chain(self.head_oid)
            .collect()
    }
}

/// Why talking to an upstream (its URL first in every variant) failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Upstream answered HTTP 404.
    #[error("upstream {0} has no such repository")]
    NotFound(String),
    /// Any other upstream failure: refused by policy, connection, protocol, an HTTP error.
    #[error("upstream {0}: {1}")]
    Upstream(String, String),
    /// The pack received does not verify (bad checksum, corrupt objects, unresolvable deltas).
    #[error("received pack from {0} is invalid: {1}")]
    BadPack(String, String),
    /// The pack exceeded `--max-fill-bytes` (the limit, in bytes).
    #[error("upstream {0} sent more than {1} bytes (--max-fill-bytes): not stored")]
    TooLarge(String, u64),
}
