//! A repository as one request sees it: one version of its ref index and the object database
//! of the packs that version names. What the git front (`protocol`) and the module front
//! (`modproxy`) serve from; `repo` opens and caches them (filling and refreshing on the way).

use crate::odb::Odb;
use crate::refs::RefIndex;
use crate::store::ETag;
use std::sync::Arc;

/// A repository as of one version of its ref index.
pub struct Repo {
    pub root: String,
    pub index: RefIndex,
    pub etag: ETag,
    pub odb: Arc<Odb>,
}
