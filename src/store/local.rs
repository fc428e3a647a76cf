//! Object store in a local directory: key `a/b/c` is the file `<root>/a/b/c`.
//!
//! Several processes may share one directory safely:
//! - every write goes to a uniquely named temporary file in the target directory,
//!   is fsynced, then published atomically (rename, or hard link for create-only);
//! - conditional replacement ([`PutMode::IfMatch`]), unconditional overwrite and delete
//!   hold an exclusive `flock` on a per-directory lock file while they check and publish,
//!   so a compare-and-swap never loses a concurrent write.
//!
//! Tags are the hex SHA-1 of the content, so every process computes the same tag.
//!
//! Names starting with [`RESERVED_PREFIX`] are the store's own (temporary files, locks):
//! they are never listed, and keys with such a segment are refused.
//! As on any file system, a key cannot be both an object and a "directory" of other keys
//! (`a` and `a/b`): the second write fails with an I/O error.

use super::retry::Cause;
use super::{
    Chunk, Chunks, ETag, GetOutput, ListEntry, ObjectStore, PutMode, Result, StoreError, check_key,
};
use crate::metrics::StoreOp;
use async_trait::async_trait;
use bytes::Bytes;
use sha1::{Digest, Sha1};
use std::fs::{self, File, OpenOptions};
use std::io::{self, ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// File names starting with this are internal to the store.
pub const RESERVED_PREFIX: &str = ".goprox-";
/// Temporary files (a write in progress, or left by a crashed writer) start with this.
const TMP_PREFIX: &str = ".goprox-tmp-";
/// Per-directory lock file taken for overwrite, compare-and-swap and delete.
const LOCK_NAME: &str = ".goprox-lock";
/// Upper bound of directory entries visited by one `list` (guards against runaway walks).
const MAX_LIST_ENTRIES: usize = 50_000_000;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A store in a local directory (see the module documentation).
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    /// Reads are retried when the system runs short of a resource for a moment (no file
    /// descriptor, no memory, an interrupted call); anything else fails at once.
    retrier: super::retry::Retrier,
}

impl LocalStore {
    /// Open (creating it if needed) a store rooted at `root`.
    pub fn new(root: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&root)?;
        Ok(Self {
            root,
            retrier: super::retry::Retrier::new(super::retry::RetryPolicy {
                max_attempts: 6,
                deadline: std::time::Duration::from_secs(10),
                ..Default::default()
            }),
        })
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A read on the blocking pool, tried again while it fails for a passing reason
    /// ([`transient`]).
    async fn reading<T, F>(&self, op: StoreOp, f: F) -> Result<T>
    where
        F: Fn() -> Result<T> + Clone + Send + 'static,
        T: Send + 'static,
    {
        let mut attempts = self.retrier.start(op);
        loop {
            match blocking(f.clone()).await {
                Err(StoreError::Io(e)) if transient(&e).is_some() => {
                    let cause = transient(&e).unwrap_or(Cause::Connection);
                    if !attempts.again(cause).await {
                        return Err(StoreError::Unavailable {
                            cause,
                            detail: format!("local store: {e}"),
                        });
                    }
                }
                r => return r,
            }
        }
    }

    fn path_for(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(RESERVED_PREFIX)) {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(key))
    }
}

/// Why a failed file-system call may succeed later: the process or system ran short of file
/// descriptors or memory (throttled: back off), or the call was interrupted or timed out.
fn transient(e: &io::Error) -> Option<Cause> {
    match e.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN | libc::ENOBUFS) => {
            return Some(Cause::Throttled);
        }
        Some(libc::EINTR) => return Some(Cause::Connection),
        Some(libc::ETIMEDOUT) => return Some(Cause::Timeout),
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::Interrupted => Some(Cause::Connection),
        io::ErrorKind::TimedOut => Some(Cause::Timeout),
        _ => None,
    }
}

/// Run blocking file-system work off the async threads.
async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("local store worker failed: {e}")))?
}

fn etag_of(data: &[u8]) -> ETag {
    ETag(hex::encode(Sha1::digest(data)))
}

/// "Does not exist" for our purposes: also a path whose parent is a regular file.
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

/// Open an existing regular file for reading; `None` if there is none.
fn open_object(path: &Path) -> io::Result<Option<File>> {
    match File::open(path) {
        Ok(f) => {
            if f.metadata()?.is_file() {
                Ok(Some(f))
            } else {
                Ok(None)
            }
        }
        Err(e) if is_missing(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

fn read_object(path: &Path) -> io::Result<Option<Bytes>> {
    let Some(mut f) = open_object(path)? else {
        return Ok(None);
    };
    let mut buf = Vec::new();
    f.read_to_end(&mut buf)?;
    Ok(Some(Bytes::from(buf)))
}

fn parent_of(path: &Path) -> io::Result<&Path> {
    path.parent().ok_or_else(|| {
        io::Error::new(
            ErrorKind::InvalidInput,
            "store path has no parent directory",
        )
    })
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A temporary file next to its final place; removed on drop unless published.
struct TempFile {
    path: PathBuf,
    published: bool,
}

impl TempFile {
    /// A new empty temporary file in `dir`, open for writing.
    fn create(dir: &Path) -> io::Result<(Self, File)> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let name = format!(
            "{TMP_PREFIX}{}-{}-{nanos}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = dir.join(name);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((
            TempFile {
                path,
                published: false,
            },
            f,
        ))
    }

    fn write(dir: &Path, data: &[u8]) -> io::Result<Self> {
        let (tmp, mut f) = Self::create(dir)?;
        f.write_all(data)?;
        f.sync_all()?;
        Ok(tmp)
    }

    fn rename_to(mut self, dest: &Path) -> io::Result<()> {
        fs::rename(&self.path, dest)?;
        self.published = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Exclusive lock on a directory's lock file, released on drop (closing the file).
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join(LOCK_NAME))?;
        file.lock()?;
        Ok(DirLock { _file: file })
    }
}

fn put_blocking(path: &Path, data: &[u8], mode: &PutMode) -> Result<ETag> {
    let dir = parent_of(path)?;
    fs::create_dir_all(dir)?;
    let tmp = TempFile::write(dir, data)?;
    publish(tmp, path, mode, etag_of(data))
}

/// [`ObjectStore::put_stream`]: the chunks into a temporary file, published at the end.
fn put_stream_blocking(
    path: &Path,
    key: &str,
    chunks: &mut Chunks,
    mode: &PutMode,
) -> Result<ETag> {
    let dir = parent_of(path)?;
    fs::create_dir_all(dir)?;
    let (tmp, f) = TempFile::create(dir)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, f);
    let mut hash = Sha1::new();
    loop {
        match chunks.blocking_recv() {
            Some(Chunk::Data(b)) => {
                hash.update(&b);
                w.write_all(&b)?;
            }
            Some(Chunk::End) => break,
            None => return Err(super::abandoned(key)),
        }
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    publish(tmp, path, mode, ETag(hex::encode(hash.finalize())))
}

/// Move a complete temporary file to `path` under `mode`'s condition.
fn publish(tmp: TempFile, path: &Path, mode: &PutMode, etag: ETag) -> Result<ETag> {
    let dir = parent_of(path)?;
    match mode {
        PutMode::Overwrite => {
            let _lock = DirLock::acquire(dir)?;
            tmp.rename_to(path)?;
        }
        PutMode::CreateOnly => match fs::hard_link(&tmp.path, path) {
            // The link is the published object; dropping `tmp` removes the temporary name.
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(StoreError::PreconditionFailed);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Unsupported | ErrorKind::PermissionDenied
                ) =>
            {
                // File systems without hard links: check-then-rename under the lock.
                let _lock = DirLock::acquire(dir)?;
                if fs::symlink_metadata(path).is_ok() {
                    return Err(StoreError::PreconditionFailed);
                }
                tmp.rename_to(path)?;
            }
            Err(e) => return Err(e.into()),
        },
        PutMode::IfMatch(want) => {
            let _lock = DirLock::acquire(dir)?;
            let current = read_object(path)?.ok_or(StoreError::PreconditionFailed)?;
            if etag_of(&current) != *want {
                return Err(StoreError::PreconditionFailed);
            }
            tmp.rename_to(path)?;
        }
    }
    sync_dir(dir)?;
    Ok(etag)
}

fn get_range_blocking(path: &Path, key: &str, offset: u64, len: u64) -> Result<Bytes> {
    let mut f = open_object(path)?.ok_or_else(|| StoreError::NotFound(key.to_string()))?;
    let size = f.metadata()?.len();
    let want = len.min(size.saturating_sub(offset));
    if want == 0 {
        return Ok(Bytes::new());
    }
    f.seek(SeekFrom::Start(offset))?;
    // `want` is at most the file size, so the capacity is bounded by what exists;
    // the file may still shrink or grow meanwhile, `take` caps what we read.
    let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    f.take(want).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// What [`walk`] finds.
enum Found<'a> {
    /// A regular file (or a link to one) whose key starts with the prefix.
    Object { key: String, path: PathBuf },
    /// A store-internal file (temporary file, lock) in a directory the walk visited.
    Internal { name: &'a str, path: PathBuf },
}

/// Visit every object under `root` whose key starts with `prefix` (and the internal files next
/// to them), in no particular order.
fn walk(root: &Path, prefix: &str, visit: &mut dyn FnMut(Found<'_>)) -> Result<()> {
    // Start at the deepest directory the prefix fully names, e.g. `refs/heads` for `refs/heads/ma`.
    let start_rel = match prefix.rfind('/') {
        Some(i) if check_key(&prefix[..i]).is_ok() => &prefix[..i],
        _ => "",
    };
    let mut stack: Vec<(PathBuf, String)> = vec![(root.join(start_rel), start_rel.to_string())];
    let mut visited = 0usize;
    while let Some((dir, rel)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if is_missing(&e) => continue,
            Err(e) => return Err(e.into()),
        };
        for entry in entries {
            visited += 1;
            if visited > MAX_LIST_ENTRIES {
                return Err(StoreError::Backend(format!(
                    "listing {prefix:?}: more than {MAX_LIST_ENTRIES} entries"
                )));
            }
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: cannot be a key
            };
            if name.starts_with(RESERVED_PREFIX) {
                visit(Found::Internal {
                    name: &name,
                    path: entry.path(),
                });
                continue;
            }
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Prune directories that cannot contain a match.
            let could_match = key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"));
            if !could_match {
                continue;
            }
            let mut ft = entry.file_type()?;
            if ft.is_symlink() {
                // Follow links to files; never descend into linked directories (no cycles).
                match fs::metadata(entry.path()) {
                    Ok(m) if m.is_file() => ft = m.file_type(),
                    _ => continue,
                }
            }
            if ft.is_dir() {
                stack.push((entry.path(), key));
            } else if ft.is_file() && key.starts_with(prefix) {
                visit(Found::Object {
                    key,
                    path: entry.path(),
                });
            }
        }
    }
    Ok(())
}

/// Keys under `root` starting with `prefix`, sorted.
fn list_blocking(root: &Path, prefix: &str) -> Result<Vec<String>> {
    let mut keys = Vec::new();
    walk(root, prefix, &mut |found| {
        if let Found::Object { key, .. } = found {
            keys.push(key);
        }
    })?;
    keys.sort();
    Ok(keys)
}

/// [`list_blocking`] with sizes and modification times; objects deleted meanwhile are skipped.
fn list_meta_blocking(root: &Path, prefix: &str) -> Result<Vec<ListEntry>> {
    let mut out = Vec::new();
    let mut failure = None;
    walk(root, prefix, &mut |found| {
        if let Found::Object { key, path } = found {
            match fs::metadata(&path).and_then(|m| Ok((m.len(), m.modified()?))) {
                Ok((size, modified)) => out.push(ListEntry {
                    key,
                    size,
                    modified,
                }),
                Err(e) if is_missing(&e) => {}
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    })?;
    if let Some(e) = failure {
        return Err(e.into());
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Remove temporary files (left by writers that crashed) last modified before `older_than`.
fn remove_stale_temp_files(root: &Path, older_than: SystemTime) -> Result<u32> {
    let mut stale = Vec::new();
    walk(root, "", &mut |found| {
        if let Found::Internal { name, path } = found
            && name.starts_with(TMP_PREFIX)
            && fs::metadata(&path)
                .and_then(|m| m.modified())
                .is_ok_and(|t| t < older_than)
        {
            stale.push(path);
        }
    })?;
    let mut removed = 0;
    for path in stale {
        match fs::remove_file(&path) {
            Ok(()) => removed += 1,
            Err(e) if is_missing(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

#[async_trait]
impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    async fn get(&self, key: &str) -> Result<Option<GetOutput>> {
        let path = self.path_for(key)?;
        self.reading(StoreOp::Get, move || {
            Ok(read_object(&path)?.map(|data| {
                let etag = etag_of(&data);
                GetOutput { data, etag }
            }))
        })
        .await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Bytes> {
        let path = self.path_for(key)?;
        let key = key.to_string();
        self.reading(StoreOp::GetRange, move || {
            get_range_blocking(&path, &key, offset, len)
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path_for(key)?;
        self.reading(StoreOp::Head, move || match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<ETag> {
        let path = self.path_for(key)?;
        blocking(move || put_blocking(&path, &data, &mode)).await
    }

    async fn put_stream(&self, key: &str, mut chunks: Chunks, mode: PutMode) -> Result<ETag> {
        let path = self.path_for(key)?;
        let key = key.to_string();
        blocking(move || put_stream_blocking(&path, &key, &mut chunks, &mode)).await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let path = self.path_for(key)?;
        blocking(move || {
            let dir = parent_of(&path)?;
            if !dir.is_dir() {
                return Ok(());
            }
            let _lock = DirLock::acquire(dir)?;
            match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        self.reading(StoreOp::List, move || list_blocking(&root, &prefix))
            .await
    }

    async fn list_meta(&self, prefix: &str) -> Result<Vec<ListEntry>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        self.reading(StoreOp::ListMeta, move || {
            list_meta_blocking(&root, &prefix)
        })
        .await
    }

    /// The local store has no multipart uploads; what a crashed writer leaves behind is its
    /// temporary file next to the object it was writing.
    async fn abort_stale_uploads(&self, older_than: SystemTime) -> Result<u32> {
        let root = self.root.clone();
        blocking(move || remove_stale_temp_files(&root, older_than)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DynStore;
    use std::sync::Arc;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(tag: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos();
            let p = std::env::temp_dir().join(format!(
                "goprox-local-{tag}-{}-{}-{nanos}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            TestDir(p)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn passing_failures_are_told_from_lasting_ones() {
        let os = io::Error::from_raw_os_error;
        assert_eq!(transient(&os(libc::EMFILE)), Some(Cause::Throttled));
        assert_eq!(transient(&os(libc::ENOMEM)), Some(Cause::Throttled));
        assert_eq!(transient(&os(libc::EINTR)), Some(Cause::Connection));
        assert_eq!(transient(&os(libc::ETIMEDOUT)), Some(Cause::Timeout));
        assert_eq!(transient(&os(libc::EACCES)), None);
        assert_eq!(transient(&os(libc::ENOSPC)), None);
        assert_eq!(transient(&os(libc::EIO)), None);
    }

    #[tokio::test]
    async fn conformance() {
        let dir = TestDir::new("conf");
        let store = LocalStore::new(dir.0.clone()).unwrap();
        crate::store::conformance::run(&store).await;
        // Nothing internal leaks into listings, and no temporary file is left behind.
        assert_eq!(store.list("").await.unwrap(), vec!["t/a/obj".to_string()]);
        let leftovers: Vec<_> = fs::read_dir(dir.0.join("t/a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn reserved_names_and_odd_paths() {
        let dir = TestDir::new("odd");
        let store = LocalStore::new(dir.0.clone()).unwrap();
        assert!(matches!(
            store
                .put("a/.goprox-lock", Bytes::new(), PutMode::Overwrite)
                .await,
            Err(StoreError::InvalidKey(_))
        ));
        store
            .put("a/b", Bytes::from_static(b"x"), PutMode::Overwrite)
            .await
            .unwrap();
        // A "directory" is not an object; a path through a file is simply missing.
        assert!(store.get("a").await.unwrap().is_none());
        assert!(store.head("a").await.unwrap().is_none());
        assert!(store.get("a/b/c").await.unwrap().is_none());
        assert!(matches!(
            store.get_range("a/b/c", 0, 1).await,
            Err(StoreError::NotFound(_))
        ));
        store.delete("a/b/c").await.unwrap();
        store.delete("zz/top").await.unwrap();
        assert_eq!(&store.get_range("a/b", 1, 10).await.unwrap()[..], b"");
        assert_eq!(
            &store.get_range("a/b", 0, u64::MAX).await.unwrap()[..],
            b"x"
        );
        store
            .put("ab", Bytes::new(), PutMode::Overwrite)
            .await
            .unwrap();
        store
            .put("a/c/d", Bytes::new(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(store.list("a").await.unwrap(), vec!["a/b", "a/c/d", "ab"]);
        assert_eq!(store.list("a/").await.unwrap(), vec!["a/b", "a/c/d"]);
        assert_eq!(store.list("a/c/").await.unwrap(), vec!["a/c/d"]);
        assert_eq!(store.list("a/c/d").await.unwrap(), vec!["a/c/d"]);
        assert!(store.list("nope/").await.unwrap().is_empty());
        assert!(store.list("../").await.unwrap().is_empty());
        // Tags are content hashes: stable across store instances (processes).
        let other = LocalStore::new(dir.0.clone()).unwrap();
        let e = store.get("a/b").await.unwrap().unwrap().etag;
        assert_eq!(other.get("a/b").await.unwrap().unwrap().etag, e);
        other
            .put("a/b", Bytes::from_static(b"y"), PutMode::IfMatch(e))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn stale_temp_files_are_removed_and_fresh_ones_kept() {
        let dir = TestDir::new("stale");
        let store = LocalStore::new(dir.0.clone()).unwrap();
        store
            .put(
                "r/@git/packs/x",
                Bytes::from_static(b"x"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        // What a writer killed between writing and publishing leaves behind.
        let packs = dir.0.join("r/@git/packs");
        let crashed = packs.join(format!("{TMP_PREFIX}1-2-3"));
        fs::write(&crashed, b"partial").unwrap();
        let old = SystemTime::now() - std::time::Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&crashed)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let fresh = packs.join(format!("{TMP_PREFIX}4-5-6"));
        fs::write(&fresh, b"in progress").unwrap();
        let hour_ago = SystemTime::now() - std::time::Duration::from_secs(3600);
        assert_eq!(store.abort_stale_uploads(hour_ago).await.unwrap(), 1);
        assert!(!crashed.exists());
        assert!(fresh.exists(), "a fresh temporary file was removed");
        // The lock file (made by the overwrite) and objects are never touched.
        assert!(packs.join(LOCK_NAME).exists());
        assert_eq!(
            store.list("").await.unwrap(),
            vec!["r/@git/packs/x".to_string()]
        );
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(store.abort_stale_uploads(later).await.unwrap(), 1);
        assert!(!fresh.exists());
        assert!(packs.join(LOCK_NAME).exists());
        assert_eq!(
            store.list("").await.unwrap(),
            vec!["r/@git/packs/x".to_string()]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_create_only_has_one_winner() {
        let dir = TestDir::new("race");
        let store: DynStore = Arc::new(LocalStore::new(dir.0.clone()).unwrap());
        crate::store::conformance::create_only_race(|| store.clone()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn racing_compare_and_swap_loses_no_increment() {
        let dir = TestDir::new("cas");
        // One store instance per writer, like separate processes sharing the directory.
        crate::store::conformance::compare_and_swap_race(|| {
            Arc::new(LocalStore::new(dir.0.clone()).unwrap()) as DynStore
        })
        .await;
    }
}
