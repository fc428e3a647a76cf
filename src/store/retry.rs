//! Retries of store calls that failed for a reason a later attempt may not meet: throttling,
//! a 5xx, a broken or refused connection, a timeout, a body cut short.
//!
//! A backend classifies its failures into a [`Cause`] and asks an [`Attempts`] (one per call)
//! whether to go on. Backoff is capped exponential with full jitter; a throttling answer also
//! pauses every other call of the same store for a while (adaptive: a store that says
//! "slow down" gets fewer requests, not more). No new attempt starts after the call's
//! deadline. Retries and give-ups are counted by operation and cause
//! (`goprox_store_retries_total`, `goprox_store_retries_exhausted_total`).
//!
//! Which calls are retried is the backend's business: reads, listings, deletes and
//! unconditional writes always; conditional writes only once the backend has settled that
//! the failed attempt was not applied (see `s3.rs`).

use crate::metrics::StoreOp;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why an attempt failed, when another attempt may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The store asked us to slow down (503 SlowDown, 429, Throttling…).
    Throttled,
    /// A 5xx other than throttling.
    ServerError,
    /// The connection could not be made, or broke before an answer.
    Connection,
    /// No answer, or no more bytes, within the timeout.
    Timeout,
    /// The answer's body broke off before its end.
    Body,
}

impl Cause {
    /// The metrics label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Cause::Throttled => "throttled",
            Cause::ServerError => "server_error",
            Cause::Connection => "connection",
            Cause::Timeout => "timeout",
            Cause::Body => "body",
        }
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Throttled => "throttled",
            Cause::ServerError => "server error",
            Cause::Connection => "connection failed",
            Cause::Timeout => "timed out",
            Cause::Body => "response cut short",
        })
    }
}

/// How hard a store call is retried.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all for one call (1: no retry). A read that made progress before it broke
    /// starts counting again (it is resumed, not repeated).
    pub max_attempts: u32,
    /// First backoff; doubled after each failure up to `cap` (the wait is drawn from 0 to it).
    pub base: Duration,
    /// Longest backoff, and longest throttling pause.
    pub cap: Duration,
    /// No new attempt starts this long after the call began.
    pub deadline: Duration,
    /// A response (its head, or the next piece of its body) that takes longer than this is
    /// given up and retried (resumed).
    pub read_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_millis(50),
            cap: Duration::from_secs(5),
            deadline: Duration::from_secs(60),
            read_timeout: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// No retries at all (unit tests of failure paths).
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }
}

/// The retry state one store shares between its calls: the policy and the throttling pause.
#[derive(Debug)]
pub(crate) struct Retrier {
    pub(crate) policy: RetryPolicy,
    /// Calls wait until then before an attempt (set by throttling answers).
    pause_until: Mutex<Option<Instant>>,
    /// Consecutive throttling answers, for the length of the pause.
    throttled: AtomicU64,
    rng: AtomicU64,
}

impl Retrier {
    pub(crate) fn new(policy: RetryPolicy) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15)
            | 1;
        Self {
            policy,
            pause_until: Mutex::new(None),
            throttled: AtomicU64::new(0),
            rng: AtomicU64::new(seed),
        }
    }

    /// Begin one call.
    pub fn start(&self, op: StoreOp) -> Attempts<'_> {
        Attempts {
            retrier: self,
            op,
            started: Instant::now(),
            failed: 0,
        }
    }

    /// A number in `0..=max` (xorshift64*, shared; quality is irrelevant, spread is all).
    fn jitter(&self, max: Duration) -> Duration {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(r % (nanos + 1))
    }

    /// A value no other write of any instance will use (a write's settle token).
    pub fn token(&self) -> String {
        super::probe::unique_token("write", 16)
    }

    fn lock_pause(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.pause_until.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store throttled us: pause every call for a growing while.
    fn throttle(&self) {
        let n = self.throttled.fetch_add(1, Ordering::Relaxed).min(10) as u32;
        let pause = self.policy.base.saturating_mul(1 << n).min(self.policy.cap);
        let until = Instant::now() + self.jitter(pause);
        let mut g = self.lock_pause();
        if g.is_none_or(|t| t < until) {
            *g = Some(until);
        }
    }

    /// An attempt succeeded: the store is not throttling us (any more).
    pub fn succeeded(&self) {
        if self.throttled.load(Ordering::Relaxed) != 0 {
            self.throttled.store(0, Ordering::Relaxed);
        }
    }

    /// Wait out a throttling pause, if one is on.
    pub async fn paced(&self) {
        let until = *self.lock_pause();
        if let Some(t) = until {
            tokio::time::sleep_until(t.into()).await;
        }
    }
}

/// The attempts of one call.
pub(crate) struct Attempts<'r> {
    retrier: &'r Retrier,
    op: StoreOp,
    started: Instant,
    /// Failed attempts since the last progress.
    failed: u32,
}

impl Attempts<'_> {
    /// Before each attempt: wait out a throttling pause.
    pub async fn paced(&self) {
        self.retrier.paced().await;
    }

    /// The attempt before made progress (a resumed read got bytes): count failures afresh.
    pub fn progressed(&mut self) {
        self.failed = 0;
    }

    /// An attempt failed for `cause`: wait, and say whether to try again. Counted in the
    /// metrics either way.
    pub async fn again(&mut self, cause: Cause) -> bool {
        self.failed += 1;
        let p = &self.retrier.policy;
        if cause == Cause::Throttled {
            self.retrier.throttle();
        }
        if self.failed >= p.max_attempts || self.started.elapsed() >= p.deadline {
            crate::metrics::store_retry(self.op, cause.as_str(), false);
            return false;
        }
        crate::metrics::store_retry(self.op, cause.as_str(), true);
        let exp = p
            .base
            .saturating_mul(1u32 << (self.failed - 1).min(16))
            .min(p.cap);
        let wait = self.retrier.jitter(exp);
        let left = p.deadline.saturating_sub(self.started.elapsed());
        tokio::time::sleep(wait.min(left)).await;
        self.retrier.paced().await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(max_attempts: u32, deadline: Duration) -> Retrier {
        Retrier::new(RetryPolicy {
            max_attempts,
            base: Duration::from_millis(1),
            cap: Duration::from_millis(4),
            deadline,
            read_timeout: Duration::from_secs(1),
        })
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts() {
        let r = quick(3, Duration::from_secs(10));
        let mut a = r.start(StoreOp::Get);
        assert!(a.again(Cause::ServerError).await);
        assert!(a.again(Cause::Connection).await);
        assert!(!a.again(Cause::Timeout).await);
    }

    #[tokio::test]
    async fn progress_resets_the_count() {
        let r = quick(2, Duration::from_secs(10));
        let mut a = r.start(StoreOp::GetRange);
        for _ in 0..10 {
            assert!(a.again(Cause::Body).await);
            a.progressed();
        }
        assert!(a.again(Cause::Body).await);
        assert!(!a.again(Cause::Body).await);
    }

    #[tokio::test]
    async fn no_attempt_after_the_deadline() {
        let r = quick(100, Duration::from_millis(20));
        let mut a = r.start(StoreOp::Head);
        let t = Instant::now();
        while a.again(Cause::ServerError).await {
            // The contract: no retry after the 20 ms deadline (5 s: slack for a slow machine).
            assert!(t.elapsed() < Duration::from_secs(5), "deadline not kept");
        }
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let r = quick(1, Duration::from_secs(1));
        for _ in 0..1000 {
            assert!(r.jitter(Duration::from_millis(7)) <= Duration::from_millis(7));
        }
        assert_eq!(r.jitter(Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test]
    async fn throttling_pauses_other_calls() {
        let r = quick(5, Duration::from_secs(10));
        let mut a = r.start(StoreOp::Get);
        assert!(a.again(Cause::Throttled).await);
        assert!(r.lock_pause().is_some());
        r.succeeded();
        assert_eq!(r.throttled.load(Ordering::Relaxed), 0);
    }
}
