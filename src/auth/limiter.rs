//! Login limiting. Each login counts against two keys: its client address, and the pair
//! (client address, name). A key is over its limit when its failures within the window
//! plus its logins still being checked reach the limit, so a burst of simultaneous
//! attempts gets no more checks than a slow sequence would. No key is ever a name alone:
//! failures from one address never lock a user (or robot) out of another address.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::clock::Clock;

/// Keys tracked at most. Past it, expired keys are swept; if none are, new keys are
/// refused (fail closed) until some expire.
const MAX_KEYS: usize = 100_000;

/// What a limit is counted on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// A client address (IPv6 addresses by their /64 network).
    Address(IpAddr),
    /// A client address and a login name.
    AddressName(IpAddr, String),
}

impl LimitKey {
    /// The two keys of a login by `name` from `addr`, with their limits.
    pub fn for_login(addr: IpAddr, name: &str, per_name: u32, per_address: u32) -> Vec<(LimitKey, u32)> {
        let addr = network(addr);
        vec![(LimitKey::Address(addr), per_address), (LimitKey::AddressName(addr, name.to_string()), per_name)]
    }
}

/// IPv4 addresses as they are; IPv6 by /64 (one site usually holds a whole /64).
fn network(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

#[derive(Default)]
struct Entry {
    failures: VecDeque<SystemTime>,
    in_flight: u32,
}

impl Entry {
    fn expire(&mut self, now: SystemTime, window: Duration) {
        while self.failures.front().is_some_and(|t| now.duration_since(*t).unwrap_or_default() >= window) {
            self.failures.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.failures.is_empty() && self.in_flight == 0
    }

    /// Seconds until this key may try again, counting attempts in flight if `running`.
    fn wait(&self, max: u32, now: SystemTime, window: Duration, running: bool) -> Option<u64> {
        let used = self.failures.len() as u64 + if running { u64::from(self.in_flight) } else { 0 };
        if used < u64::from(max) {
            return None;
        }
        // Over the limit on failures alone: until the oldest leaves the window. Only
        // because of checks in flight: they finish within about a second.
        let wait = match self.failures.len() >= max as usize {
            true => self
                .failures
                .front()
                .map_or(Duration::ZERO, |t| window.saturating_sub(now.duration_since(*t).unwrap_or_default())),
            false => Duration::ZERO,
        };
        Some(wait.as_secs_f64().ceil().max(1.0) as u64)
    }
}

/// Failures and running attempts per key.
pub struct LoginLimiter {
    window: Duration,
    entries: Mutex<HashMap<LimitKey, Entry>>,
    clock: Arc<dyn Clock>,
}

/// One admitted login attempt. Unless `succeeded` or `abandoned` is called, dropping it
/// (the check failed, or the request went away) counts a failure on its keys.
pub struct Attempt {
    limiter: Arc<LoginLimiter>,
    keys: Vec<(LimitKey, u32)>,
    settled: bool,
}

impl LoginLimiter {
    /// Limits counted over `window` of `clock`'s time (tests move a `ManualClock`).
    pub fn new(window: Duration, clock: Arc<dyn Clock>) -> LoginLimiter {
        LoginLimiter { window, entries: Mutex::new(HashMap::new()), clock }
    }

    /// `Some(seconds to wait)` if any key is over its limit on failures alone (for a login
    /// that will not run a check of its own).
    pub fn blocked(&self, keys: &[(LimitKey, u32)]) -> Option<u64> {
        let mut map = self.entries.lock().ok()?;
        let now = self.clock.now();
        keys.iter()
            .filter_map(|(k, max)| {
                let e = map.get_mut(k)?;
                e.expire(now, self.window);
                e.wait(*max, now, self.window, false)
            })
            .max()
    }

    /// Admits one attempt on every key (counting failures and attempts in flight), or
    /// says how many seconds to wait.
    pub fn begin(self: &Arc<Self>, keys: &[(LimitKey, u32)]) -> Result<Attempt, u64> {
        let mut map = self.entries.lock().map_err(|_| 1u64)?;
        let now = self.clock.now();
        if map.len() + keys.len() > MAX_KEYS {
            map.retain(|_, e| {
                e.expire(now, self.window);
                !e.is_empty()
            });
            if map.len() + keys.len() > MAX_KEYS && keys.iter().any(|(k, _)| !map.contains_key(k)) {
                return Err(self.window.as_secs().max(1));
            }
        }
        let wait = keys
            .iter()
            .filter_map(|(k, max)| {
                let e = map.get_mut(k)?;
                e.expire(now, self.window);
                e.wait(*max, now, self.window, true)
            })
            .max();
        if let Some(w) = wait {
            return Err(w);
        }
        for (k, _) in keys {
            map.entry(k.clone()).or_default().in_flight += 1;
        }
        Ok(Attempt { limiter: self.clone(), keys: keys.to_vec(), settled: false })
    }

    fn settle(&self, keys: &[(LimitKey, u32)], failed: bool) {
        let Ok(mut map) = self.entries.lock() else { return };
        let now = self.clock.now();
        for (k, max) in keys {
            let Some(e) = map.get_mut(k) else { continue };
            e.in_flight = e.in_flight.saturating_sub(1);
            if failed {
                e.failures.push_back(now);
                // Only the newest `max` failures decide when the key is free again.
                while e.failures.len() > *max as usize {
                    e.failures.pop_front();
                }
            }
            e.expire(now, self.window);
            if e.is_empty() {
                map.remove(k);
            }
        }
    }
}

impl Attempt {
    /// The credentials were right: nothing is counted.
    pub fn succeeded(mut self) {
        self.settled = true;
        self.limiter.settle(&self.keys, false);
    }

    /// The check could not run (server busy, store failure): nothing is counted.
    pub fn abandoned(self) {
        self.succeeded()
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.settle(&self.keys, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(addr: &str, name: &str) -> Vec<(LimitKey, u32)> {
        LimitKey::for_login(addr.parse().unwrap(), name, 2, 3)
    }

    #[test]
    fn attempts_in_flight_count_and_successes_do_not() {
        let l = Arc::new(LoginLimiter::new(Duration::from_secs(60), Arc::new(crate::clock::SystemClock)));
        let a = l.begin(&keys("10.0.0.1", "bob")).unwrap();
        let b = l.begin(&keys("10.0.0.1", "bob")).unwrap();
        assert_eq!(l.begin(&keys("10.0.0.1", "bob")).err(), Some(1), "two in flight fill the per-name limit");
        assert!(l.blocked(&keys("10.0.0.1", "bob")).is_none(), "nothing has failed yet");
        a.succeeded();
        let c = l.begin(&keys("10.0.0.1", "bob")).unwrap();
        drop(b);
        drop(c);
        let wait = l.begin(&keys("10.0.0.1", "bob")).err().expect("two failures");
        assert!((55..=60).contains(&wait), "{wait}");
        assert!(l.blocked(&keys("10.0.0.1", "bob")).is_some());
        // The address has one slot left for another name; other addresses are untouched.
        l.begin(&keys("10.0.0.1", "carol")).unwrap().succeeded();
        l.begin(&keys("10.0.0.2", "bob")).unwrap().succeeded();
        drop(l.begin(&keys("10.0.0.1", "carol")).unwrap());
        assert!(l.begin(&keys("10.0.0.1", "dave")).is_err(), "three failures fill the per-address limit");
    }

    #[test]
    fn failures_leave_the_window() {
        let clock = Arc::new(crate::clock::ManualClock::new(SystemTime::now()));
        let l = Arc::new(LoginLimiter::new(Duration::from_secs(60), clock.clone()));
        drop(l.begin(&keys("10.0.0.1", "bob")).unwrap());
        drop(l.begin(&keys("10.0.0.1", "bob")).unwrap());
        assert!(l.begin(&keys("10.0.0.1", "bob")).is_err());
        clock.advance(Duration::from_secs(59));
        assert!(l.begin(&keys("10.0.0.1", "bob")).is_err(), "still inside the window");
        clock.advance(Duration::from_secs(2));
        l.begin(&keys("10.0.0.1", "bob")).unwrap().succeeded();
        assert!(l.entries.lock().unwrap().is_empty(), "settled keys are dropped");
    }

    #[test]
    fn ipv6_counts_per_64() {
        let a = LimitKey::for_login("2001:db8:1:2::1".parse().unwrap(), "x", 1, 1);
        let b = LimitKey::for_login("2001:db8:1:2:ffff::9".parse().unwrap(), "x", 1, 1);
        let c = LimitKey::for_login("2001:db8:1:3::1".parse().unwrap(), "x", 1, 1);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = LimitKey::for_login("::ffff:10.0.0.1".parse().unwrap(), "x", 1, 1);
        assert_eq!(mapped, LimitKey::for_login("10.0.0.1".parse().unwrap(), "x", 1, 1));
    }
}
