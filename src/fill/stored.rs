//! Reading stored packs back: the indexer's second pass and the followers of a fill catching
//! up ([`StoreSource`]), and whole packs sent on in windows ([`send_windows`]: adoption of a
//! received fill, compaction).

use crate::odb::ingest::PackSource;
use crate::store::{DynStore, StoreError};
use bytes::Bytes;
use std::collections::VecDeque;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Decoded objects the indexer may hold at once (each of its two passes).
pub const INDEX_CACHE_BYTES: usize = 64 << 20;
/// Ranged GETs of the second pass (and of followers catching up): their size, and how many
/// are in flight.
pub(super) const READ_WINDOW: u64 = 8 << 20;
const READ_GAP: u64 = 1 << 20;
const READS_AHEAD: usize = 3;

type Read = JoinHandle<Result<Bytes, StoreError>>;

/// The stored pack for the indexer's second pass: the planned ranges are read in windows of
/// up to [`READ_WINDOW`] bytes, [`READS_AHEAD`] GETs ahead; anything else by a GET of its own.
pub(super) struct StoreSource {
    store: DynStore,
    rt: tokio::runtime::Handle,
    key: String,
    size: u64,
    windows: VecDeque<(u64, u64)>,
    /// GETs in flight: (start, end, the read).
    ahead: VecDeque<(u64, u64, Read)>,
    current: Option<(u64, Bytes)>,
}

impl StoreSource {
    pub(super) fn new(store: DynStore, rt: tokio::runtime::Handle, key: String, size: u64) -> Self {
        StoreSource {
            store,
            rt,
            key,
            size,
            windows: VecDeque::new(),
            ahead: VecDeque::new(),
            current: None,
        }
    }

    fn top_up(&mut self) {
        while self.ahead.len() < READS_AHEAD {
            let Some((s, e)) = self.windows.pop_front() else {
                break;
            };
            let (store, key) = (self.store.clone(), self.key.clone());
            let task = self
                .rt
                .spawn(async move { store.get_range(&key, s, e - s).await });
            self.ahead.push_back((s, e, task));
        }
    }

    fn get(&self, start: u64, end: u64) -> std::io::Result<Bytes> {
        let data = self
            .rt
            .block_on(self.store.get_range(&self.key, start, end - start))
            .map_err(std::io::Error::other)?;
        crate::metrics::STORE_RANGE_GETS.inc();
        Ok(data)
    }
}

impl PackSource for StoreSource {
    fn plan(&mut self, ranges: &[(u64, u64)]) {
        self.windows.clear();
        for &(s, e) in ranges {
            match self.windows.back_mut() {
                Some((ws, we)) if s >= *we && s - *we <= READ_GAP && e - *ws <= READ_WINDOW => {
                    *we = e
                }
                _ => self.windows.push_back((s, e.min(self.size))),
            }
        }
        self.top_up();
    }

    fn read(&mut self, start: u64, end: u64) -> std::io::Result<Bytes> {
        crate::refs::lease::beat_for(&self.key);
        loop {
            if let Some((at, data)) = &self.current
                && start >= *at
                && end <= at + data.len() as u64
            {
                return Ok(data.slice((start - at) as usize..(end - at) as usize));
            }
            // The next window, if it is ahead of `start`: drop those that end before it.
            while self.ahead.front().is_some_and(|(_, e, _)| *e <= start) {
                if let Some((_, _, t)) = self.ahead.pop_front() {
                    t.abort();
                }
                self.top_up();
            }
            let covers = self
                .ahead
                .front()
                .is_some_and(|(s, e, _)| *s <= start && end <= *e);
            match self.ahead.pop_front() {
                Some((s, _, task)) if covers => {
                    let data = self
                        .rt
                        .block_on(task)
                        .map_err(std::io::Error::other)?
                        .map_err(std::io::Error::other)?;
                    crate::metrics::STORE_RANGE_GETS.inc();
                    self.current = Some((s, data));
                    self.top_up();
                }
                Some(other) => {
                    self.ahead.push_front(other);
                    return self.get(start, end);
                }
                // Not planned (a base read again, out of order): on its own.
                None => return self.get(start, end),
            }
        }
    }
}

const WINDOW: u64 = 8 << 20;

/// Send bytes `[start, end)` of each stored object in `ranges`, in order, as ranged GETs of
/// [`WINDOW`] bytes (the work's lease beats on each); a failed or short read is sent as an
/// error and ends it. False when it ended early (an error, or the receiver went away).
pub(super) async fn send_windows(
    store: &DynStore,
    ranges: Vec<(String, u64, u64)>,
    tx: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> bool {
    for (key, start, end) in ranges {
        let mut at = start;
        while at < end {
            let len = WINDOW.min(end - at);
            crate::refs::lease::beat_for(&key);
            let got = match store.get_range(&key, at, len).await {
                Ok(b) if b.len() as u64 == len => Ok(b),
                Ok(_) => Err(StoreError::Backend(format!("short read of {key}"))),
                Err(e) => Err(e),
            };
            let failed = got.is_err();
            if tx.send(got).await.is_err() || failed {
                return false;
            }
            at += len;
        }
    }
    true
}
