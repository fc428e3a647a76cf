//! A repository as one request sees it: one version of its ref index and the object database
//! of the packs that version names. What the git front (`protocol`) and the module front
//! (`modproxy`) serve from; `repo` opens and caches them (filling and refreshing on the way).

use crate::odb::Odb;
use crate::refs::RefIndex;
use crate::store::ETag;
use std::sync::Arc;

/// A repository as of one version of its ref index.
pub struct Repo {
    /// The import-path root.
    pub root: String,
    /// The ref index as read.
    pub index: RefIndex,
    /// The ref index's version tag in the store.
    pub etag: ETag,
    /// The objects of the packs `index` names.
    pub odb: Arc<Odb>,
}
