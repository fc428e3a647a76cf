//! What this process has seen lately, for the status page: requests per repository over the
//! last hour (in minute buckets) and the most recent errors. Memory is bounded; nothing here
//! is shared between instances (the catalog is).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most repositories whose traffic is counted (the quietest are forgotten first).
const MAX_REPOS: usize = 50_000;
/// Most recent errors kept.
const MAX_ERRORS: usize = 50;

/// Requests of one repository in the last 60 minutes.
struct Minutes {
    counts: [u32; 60],
    /// The minute (since this process started) of the newest count.
    last: u64,
}

impl Minutes {
    fn advance(&mut self, minute: u64) {
        if minute >= self.last + 60 {
            self.counts = [0; 60];
        } else {
            for m in self.last + 1..=minute {
                self.counts[(m % 60) as usize] = 0;
            }
        }
        self.last = self.last.max(minute);
    }

    fn total(&self, minute: u64) -> u32 {
        if minute >= self.last + 60 {
            return 0;
        }
        // Buckets older than an hour at `minute` have not been cleared yet.
        (minute.saturating_sub(59)..=minute)
            .filter(|m| *m <= self.last && *m + 60 > self.last)
            .map(|m| self.counts[(m % 60) as usize])
            .sum()
    }
}

/// An error a request or a background look upstream met.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecentError {
    /// Unix seconds.
    pub at: u64,
    /// The repository's import path.
    pub root: String,
    /// What was being done: `fill`, `refresh`, `hook`, ...
    pub during: &'static str,
    /// The line a client could see (no store internals).
    pub message: String,
}

/// This process's recent traffic per repository and its recent errors (shared by requests).
pub struct Activity {
    started: Instant,
    traffic: Mutex<HashMap<String, Minutes>>,
    errors: Mutex<VecDeque<RecentError>>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity::new()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Activity {
    /// No traffic and no errors yet; uptime counts from now.
    pub fn new() -> Self {
        Activity {
            started: Instant::now(),
            traffic: Mutex::new(HashMap::new()),
            errors: Mutex::new(VecDeque::new()),
        }
    }

    /// How long this process has been up.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn minute(&self) -> u64 {
        self.started.elapsed().as_secs() / 60
    }

    /// A request opened repository `root`.
    pub fn hit(&self, root: &str) {
        let minute = self.minute();
        let mut t = lock(&self.traffic);
        if !t.contains_key(root) && t.len() >= MAX_REPOS {
            t.retain(|_, m| m.total(minute) > 0);
            if t.len() >= MAX_REPOS {
                return;
            }
        }
        let m = t.entry(root.to_string()).or_insert(Minutes {
            counts: [0; 60],
            last: minute,
        });
        m.advance(minute);
        let slot = &mut m.counts[(minute % 60) as usize];
        *slot = slot.saturating_add(1);
    }

    /// Requests of `root` in the last hour.
    pub fn hits(&self, root: &str) -> u32 {
        let minute = self.minute();
        lock(&self.traffic)
            .get(root)
            .map(|m| m.total(minute))
            .unwrap_or(0)
    }

    /// The `n` busiest repositories of the last hour, busiest first.
    pub fn top(&self, n: usize) -> Vec<(String, u32)> {
        let minute = self.minute();
        let mut all: Vec<(String, u32)> = lock(&self.traffic)
            .iter()
            .map(|(r, m)| (r.clone(), m.total(minute)))
            .filter(|(_, n)| *n > 0)
            .collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }

    /// Note an error.
    pub fn error(&self, root: &str, during: &'static str, message: &str) {
        let mut e = lock(&self.errors);
        if e.len() >= MAX_ERRORS {
            e.pop_front();
        }
        e.push_back(RecentError {
            at: unix_now(),
            root: root.to_string(),
            during,
            message: message.to_string(),
        });
    }

    /// The recent errors, newest first.
    pub fn errors(&self) -> Vec<RecentError> {
        lock(&self.errors).iter().rev().cloned().collect()
    }

    /// The newest error of `root`, if it is among the recent ones.
    pub fn last_error(&self, root: &str) -> Option<RecentError> {
        lock(&self.errors)
            .iter()
            .rev()
            .find(|e| e.root == root)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_buckets_forget_what_is_older_than_an_hour() {
        let mut m = Minutes {
            counts: [0; 60],
            last: 0,
        };
        m.advance(0);
        m.counts[0] += 3;
        m.advance(10);
        m.counts[10] += 2;
        assert_eq!(m.total(10), 5);
        assert_eq!(m.total(59), 5);
        assert_eq!(m.total(60), 2, "minute 0 is an hour old");
        assert_eq!(m.total(70), 0);
        m.advance(65);
        m.counts[5] += 1;
        assert_eq!(m.total(65), 3);
        m.advance(1000);
        assert_eq!(m.total(1000), 0);
    }

    #[test]
    fn top_and_errors_are_bounded_and_ordered() {
        let a = Activity::new();
        for _ in 0..3 {
            a.hit("example.com/a/b");
        }
        a.hit("example.com/c/d");
        assert_eq!(a.hits("example.com/a/b"), 3);
        assert_eq!(
            a.top(1),
            vec![("example.com/a/b".to_string(), 3)],
            "busiest first"
        );
        for i in 0..(MAX_ERRORS + 5) {
            a.error("example.com/a/b", "fill", &format!("e{i}"));
        }
        let e = a.errors();
        assert_eq!(e.len(), MAX_ERRORS);
        assert_eq!(e[0].message, format!("e{}", MAX_ERRORS + 4));
        assert!(a.last_error("example.com/a/b").is_some());
        assert!(a.last_error("example.com/c/d").is_none());
    }
}
