//! Writes that run after their request has been answered and should still land before the
//! process exits: catalog notes ([`crate::refs::catalog`]) and generated packs kept for the next
//! identical request ([`crate::odb::pack_cache`]). `goprox serve` waits for them (within its
//! shutdown grace) after the last response.

use std::sync::LazyLock;
use std::time::Instant;
use tokio_util::task::TaskTracker;

static TRACKER: LazyLock<TaskTracker> = LazyLock::new(TaskTracker::new);

/// Run `work` on `rt`, tracked.
pub fn spawn<F>(rt: &tokio::runtime::Handle, work: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    TRACKER.spawn_on(work, rt);
}

/// Background writes not finished yet.
pub fn pending() -> usize {
    TRACKER.len()
}

/// Wait until every background write started so far has finished, or `deadline`; whether they
/// all did.
pub async fn settle(deadline: Instant) -> bool {
    TRACKER.close();
    let done = tokio::time::timeout_at(deadline.into(), TRACKER.wait())
        .await
        .is_ok();
    TRACKER.reopen();
    done || TRACKER.is_empty()
}
