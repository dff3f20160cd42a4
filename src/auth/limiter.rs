//! Failed-login limiting: at most N failures per key (client address, user name) within a
//! window; a key over the limit is refused until its oldest failure leaves the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys tracked at most; beyond that the oldest state is dropped wholesale.
const MAX_KEYS: usize = 100_000;

/// Failure counts per key.
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl FailureLimiter {
    /// At most `max` failures per key within `window`.
    pub fn new(max: u32, window: Duration) -> FailureLimiter {
        FailureLimiter { max: max.max(1), window, failures: Mutex::new(HashMap::new()) }
    }

    /// `Some(seconds to wait)` if `key` is over the limit now.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let mut map = self.failures.lock().ok()?;
        let q = map.get_mut(key)?;
        let now = Instant::now();
        while q.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
            q.pop_front();
        }
        if q.len() < self.max as usize {
            return None;
        }
        let oldest = *q.front()?;
        let wait = self.window.saturating_sub(now.duration_since(oldest));
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Counts one failure for `key`.
    pub fn record_failure(&self, key: &str) {
        let Ok(mut map) = self.failures.lock() else { return };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            map.clear();
        }
        let q = map.entry(key.to_string()).or_default();
        q.push_back(Instant::now());
        while q.len() > self.max as usize {
            q.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_max_and_lifts_after_window() {
        let l = FailureLimiter::new(3, Duration::from_millis(200));
        for _ in 0..2 {
            l.record_failure("a");
        }
        assert!(l.blocked("a").is_none());
        l.record_failure("a");
        assert!(l.blocked("a").is_some());
        assert!(l.blocked("b").is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(l.blocked("a").is_none());
    }
}
