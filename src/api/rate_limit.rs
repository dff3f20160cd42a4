//! Request rate limits (`[rate_limit]`): token buckets over `/v2` and `/api/v1` (GCRA, by
//! `governor`), one per client address and one per signed-in user, answered 429
//! `TOOMANYREQUESTS` with `Retry-After` seconds: the distribution-spec error body under
//! `/v2`, problem+json under `/api/v1`. `/healthz`, `/readyz`, `/metrics` and `/token` are
//! never limited (logins have their own limiter, `auth/limiter.rs`).
//!
//! - Per client: the connection's address, IPv6 by its /64 (one site usually holds a whole
//!   /64, so a client cannot rotate addresses within it to escape), charged by the
//!   middleware [`limit`] before any other work.
//! - Per user: the verified subject (a user or robot whose password, secret or Cairn-signed
//!   token checked out), charged by `access::identify` through [`RateLimits::charge_user`] right after
//!   authentication, so a name taken from unverified credentials never spends anyone's
//!   budget, and the budget follows the user across addresses. Anonymous requests are
//!   limited per client only. One [`RateLimits`] per server, held in `AppState`
//!   (`rate_limits`): the middleware and `identify` (which only `/v2` and `/api/v1` call)
//!   charge the same buckets.
//! - Loopback clients (127.0.0.0/8, ::1) are exempt from both unless
//!   `exempt_loopback = false`. With `per_client = 0`, `false` limits each user behind a
//!   proxy on the same machine without limiting the proxy.
//! - Memory: each limit's buckets live in a bounded map ([`MAX_KEYS`], least recently used
//!   evicted first; a bucket idle long enough to be full again is dropped, which changes
//!   nothing), keyed by fixed-size keys (an address; the SHA-256 of a subject's name), so
//!   entries and bytes are both bounded. An evicted bucket starts full again, so past the
//!   bound a limit errs on letting requests through: a client needs more than [`MAX_KEYS`]
//!   /64s or addresses for that, and then each of them had its own budget anyway; users
//!   are verified identities, fewer than the bound unless robots are minted in bulk.
//! - Time: the registry's `Clock` (tests move a `ManualClock`), read as a monotonic count
//!   of its forward steps: a wall clock stepped back does not freeze every bucket.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{NotUntil, Quota, RateLimiter};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::config::RateLimitConfig;

/// Buckets kept at most by each limit (each costs ~250 bytes: ~16 MiB at the bound).
pub const MAX_KEYS: u64 = 65_536;

/// The registry's clock as governor's: nanoseconds of forward movement since the limiter
/// was built. A step back of the wall clock counts as no time passing (not as a debt).
struct MonotonicOf {
    clock: Arc<dyn crate::clock::Clock>,
    /// (last wall reading, forward time accumulated until it).
    last: Mutex<(SystemTime, Duration)>,
}

impl MonotonicOf {
    fn new(clock: Arc<dyn crate::clock::Clock>) -> MonotonicOf {
        let now = clock.now();
        MonotonicOf { clock, last: Mutex::new((now, Duration::ZERO)) }
    }
}

impl governor::clock::Clock for MonotonicOf {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        let wall = self.clock.now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let step = wall.duration_since(last.0).unwrap_or_default();
        *last = (wall, last.1 + step);
        Nanos::from(last.1)
    }
}

/// The buckets: per key the GCRA's theoretical arrival time (nanoseconds since the
/// limiter's start; 0 for none), in a bounded map.
struct Buckets<K>(moka::sync::Cache<K, Arc<AtomicU64>>);

impl<K: Hash + Eq + Clone + Send + Sync + 'static> StateStore for Buckets<K> {
    type Key = K;

    fn measure_and_replace<T, F, E>(&self, key: &K, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let cell = self.0.get_with_by_ref(key, || Arc::new(AtomicU64::new(0)));
        // As governor's `InMemoryState`: compare-and-swap until no other request raced.
        let mut prev = cell.load(Ordering::Acquire);
        loop {
            let (result, next) = f((prev != 0).then(|| Nanos::from(prev)))?;
            match cell.compare_exchange_weak(prev, next.as_u64(), Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(result),
                Err(now) => prev = now,
            }
        }
    }
}

type Limiter<K> = RateLimiter<K, Buckets<K>, MonotonicOf, governor::middleware::NoOpMiddleware<Nanos>>;

/// A user's bucket key: the SHA-256 of the subject's name (the same size for any name).
type UserKey = [u8; 32];

/// A limiter of `rate` requests per second and `burst` at once on `clock`; `None` when
/// `rate` is 0 (off).
fn limiter<K: Hash + Eq + Clone + Send + Sync + 'static>(
    rate: f64,
    burst: u32,
    clock: Arc<dyn crate::clock::Clock>,
) -> Option<Limiter<K>> {
    let quota = (rate > 0.0)
        .then(|| Quota::with_period(Duration::from_secs_f64(1.0 / rate)))
        .flatten()
        .zip(NonZeroU32::new(burst))
        .map(|(q, burst)| q.allow_burst(burst))?;
    // A bucket idle for this long is full again: dropping it changes nothing.
    let refill = quota.burst_size_replenished_in().max(Duration::from_secs(60));
    let map = moka::sync::Cache::builder()
        .max_capacity(MAX_KEYS)
        .eviction_policy(moka::policy::EvictionPolicy::lru())
        .time_to_idle(refill)
        .build();
    Some(RateLimiter::new(quota, Buckets(map), MonotonicOf::new(clock)))
}

/// Whole seconds (at least 1) until `limiter` lets the refused request through.
fn wait_secs<K: Hash + Eq + Clone + Send + Sync + 'static>(limiter: &Limiter<K>, not_until: NotUntil<Nanos>) -> u64 {
    let wait = not_until.wait_time_from(governor::clock::Clock::now(limiter.clock()));
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The request rate limits of one server.
pub struct RateLimits {
    /// `None` when `per_client` is 0 (off).
    per_client: Option<Limiter<IpAddr>>,
    /// `None` when `per_user` is 0 (off).
    per_user: Option<Limiter<UserKey>>,
    exempt_loopback: bool,
}

impl RateLimits {
    /// The limits `config` describes (validated by `Config::problems`), on `clock`.
    pub fn new(config: &RateLimitConfig, clock: Arc<dyn crate::clock::Clock>) -> Arc<RateLimits> {
        Arc::new(RateLimits {
            per_client: limiter(config.per_client, config.burst, clock.clone()),
            per_user: limiter(config.per_user, config.user_burst, clock),
            exempt_loopback: config.exempt_loopback,
        })
    }

    /// True when requests from `addr` are never limited.
    fn exempt(&self, addr: IpAddr) -> bool {
        self.exempt_loopback && addr.to_canonical().is_loopback()
    }

    /// `Err(seconds to wait)` when `addr` is over its limit; counts the request otherwise.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.per_client else { return Ok(()) };
        if self.exempt(addr) {
            return Ok(());
        }
        limiter.check_key(&network(addr.to_canonical())).map_err(|not_until| wait_secs(limiter, not_until))
    }

    /// Charges one request to `subject`, an identity whose credentials were verified (never a
    /// name read from credentials that were not), asking from `addr`: [`RateLimits::check_user`],
    /// with a refusal counted (`cairn_rate_limited_total{by="user"}`) and logged.
    pub fn charge_user(&self, subject: &str, addr: IpAddr) -> Result<(), u64> {
        let verdict = self.check_user(subject, addr);
        if let Err(retry_after) = verdict {
            metrics::counter!(crate::metrics::RATE_LIMITED, "by" => "user").increment(1);
            tracing::warn!(user = %subject, client = %addr, retry_after, "request refused: user over the request rate limit");
        }
        verdict
    }

    /// `Err(seconds to wait)` when the verified subject named `subject`, asking from
    /// `addr`, is over its limit; counts the request otherwise. Always `Ok` with the
    /// per-user limit off or for an exempt (loopback) address.
    pub fn check_user(&self, subject: &str, addr: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.per_user else { return Ok(()) };
        if self.exempt(addr) {
            return Ok(());
        }
        let key: UserKey = Sha256::digest(subject.as_bytes()).into();
        limiter.check_key(&key).map_err(|not_until| wait_secs(limiter, not_until))
    }
}

/// IPv4 addresses as they are; IPv6 by /64.
fn network(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Which API a path belongs to, for the error format; `None`: never limited.
fn api_of(path: &str) -> Option<Api> {
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if under("/v2") {
        Some(Api::V2)
    } else if under("/api/v1") {
        Some(Api::Rest)
    } else {
        None
    }
}

#[derive(Clone, Copy)]
enum Api {
    V2,
    Rest,
}

/// The middleware: answers 429 to a client over its limit; otherwise runs the request.
pub async fn limit(State(limits): State<Arc<RateLimits>>, req: Request, next: Next) -> Response {
    if limits.per_client.is_none() && limits.per_user.is_none() {
        return next.run(req).await;
    }
    let Some(api) = api_of(req.uri().path()) else { return next.run(req).await };
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(addr) = peer
        && let Err(retry_after) = limits.check(addr)
    {
        metrics::counter!(crate::metrics::RATE_LIMITED, "by" => "client").increment(1);
        tracing::warn!(client = %addr, retry_after, "request refused: over the request rate limit");
        return too_many(api, retry_after);
    }
    next.run(req).await
}

/// 429 with `Retry-After`, in the format of `api`.
fn too_many(api: Api, retry_after: u64) -> Response {
    let message = format!("too many requests from this client; retry in {retry_after} seconds");
    let mut resp = match api {
        Api::V2 => {
            let body = json!({ "errors": [{
                "code": "TOOMANYREQUESTS",
                "message": message,
                "detail": { "retry_after": retry_after },
            }] });
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            resp.headers_mut().insert(
                HeaderName::from_static("docker-distribution-api-version"),
                HeaderValue::from_static("registry/2.0"),
            );
            resp
        }
        Api::Rest => {
            let body = json!({
                "type": "urn:cairn:problem:too-many-requests",
                "title": "Too many requests",
                "status": 429,
                "detail": message,
                "code": "TOOMANYREQUESTS",
            });
            let mut resp = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
            resp
        }
    };
    resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn limits(per_client: f64, burst: u32, exempt_loopback: bool) -> (Arc<RateLimits>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)));
        let config = RateLimitConfig { per_client, burst, exempt_loopback, ..RateLimitConfig::default() };
        (RateLimits::new(&config, clock.clone()), clock)
    }

    fn user_limits(per_user: f64, user_burst: u32, exempt_loopback: bool) -> (Arc<RateLimits>, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)));
        let config = RateLimitConfig { per_user, user_burst, exempt_loopback, ..RateLimitConfig::default() };
        (RateLimits::new(&config, clock.clone()), clock)
    }

    #[test]
    fn a_user_budget_is_its_own_and_follows_it_across_addresses() {
        let (l, clock) = user_limits(1.0, 2, true);
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "2001:db8:7::1".parse().unwrap());
        assert_eq!(l.check_user("alice", a), Ok(()));
        assert_eq!(l.check_user("alice", b), Ok(()), "another address, the same budget");
        assert_eq!(l.check_user("alice", "198.51.100.9".parse().unwrap()), Err(1), "spent, wherever she asks from");
        assert_eq!(l.check_user("bob", a), Ok(()), "another user from the same address has his own");
        assert_eq!(l.check_user("bob", a), Ok(()));
        assert_eq!(l.check(a), Ok(()), "the client limit is off");
        clock.advance(Duration::from_secs(1));
        assert_eq!(l.check_user("alice", b), Ok(()));
        assert!(l.check_user("alice", a).is_err());
        // Names are hashed, so a long one costs what a short one does, and differs from its prefix.
        let long = "r".repeat(10_000);
        assert_eq!(l.check_user(&long, a), Ok(()));
        assert_eq!(l.check_user(&long[..9_999], a), Ok(()));
    }

    #[test]
    fn users_on_loopback_follow_exempt_loopback() {
        let (l, _clock) = user_limits(1.0, 1, true);
        for _ in 0..10 {
            assert_eq!(l.check_user("alice", "127.0.0.1".parse().unwrap()), Ok(()));
            assert_eq!(l.check_user("alice", "::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        }
        let (l, _clock) = user_limits(1.0, 1, false);
        assert_eq!(l.check_user("alice", "127.0.0.1".parse().unwrap()), Ok(()));
        assert!(l.check_user("alice", "127.0.0.2".parse().unwrap()).is_err(), "limited when not exempt");
    }

    #[test]
    fn a_burst_then_the_rate_by_the_clock() {
        let (l, clock) = limits(2.0, 3, true);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check(a), Ok(()));
        }
        assert_eq!(l.check(a), Err(1), "the burst is spent; one more token in 0.5 s");
        assert_eq!(l.check("192.0.2.2".parse().unwrap()), Ok(()), "another client has its own bucket");
        clock.advance(Duration::from_millis(500));
        assert_eq!(l.check(a), Ok(()));
        assert!(l.check(a).is_err());
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_and_loopback_is_exempt() {
        let (l, _clock) = limits(1.0, 1, true);
        assert_eq!(l.check("2001:db8::1".parse().unwrap()), Ok(()));
        assert!(l.check("2001:db8::ffff:1".parse().unwrap()).is_err(), "same /64");
        assert_eq!(l.check("2001:db8:0:1::1".parse().unwrap()), Ok(()), "another /64");
        for _ in 0..10 {
            assert_eq!(l.check("127.0.0.1".parse().unwrap()), Ok(()));
            assert_eq!(l.check("::1".parse().unwrap()), Ok(()));
            assert_eq!(l.check("::ffff:127.0.0.1".parse().unwrap()), Ok(()));
        }
        let (l, _clock) = limits(1.0, 1, false);
        assert_eq!(l.check("127.0.0.1".parse().unwrap()), Ok(()));
        assert!(l.check("127.0.0.1".parse().unwrap()).is_err(), "loopback limited when not exempt");
    }

    #[test]
    fn a_wall_clock_stepped_back_freezes_nothing() {
        let clock = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)));
        let m = MonotonicOf::new(clock.clone());
        use governor::clock::Clock as _;
        clock.advance(Duration::from_secs(5));
        assert_eq!(Duration::from(m.now()), Duration::from_secs(5));
        // A ManualClock cannot go back; a fresh one standing earlier plays the stepped clock.
        let earlier = Arc::new(ManualClock::new(SystemTime::UNIX_EPOCH));
        let m2 = MonotonicOf {
            clock: earlier.clone(),
            last: Mutex::new((crate::clock::Clock::now(&*clock), Duration::from_secs(5))),
        };
        assert_eq!(Duration::from(m2.now()), Duration::from_secs(5), "a step back counts as nothing");
        earlier.advance(Duration::from_secs(1));
        assert_eq!(Duration::from(m2.now()), Duration::from_secs(6), "and time moves on from there");
    }

    #[test]
    fn off_by_default() {
        let l = RateLimits::new(&RateLimitConfig::default(), Arc::new(crate::clock::SystemClock));
        assert!(l.per_client.is_none() && l.per_user.is_none());
        for _ in 0..1000 {
            assert_eq!(l.check("192.0.2.1".parse().unwrap()), Ok(()));
            assert_eq!(l.check_user("alice", "192.0.2.1".parse().unwrap()), Ok(()));
        }
    }

    #[test]
    fn only_v2_and_the_rest_api_are_limited() {
        for (path, limited) in [
            ("/v2", true),
            ("/v2/", true),
            ("/v2/a/manifests/x", true),
            ("/api/v1", true),
            ("/api/v1/repositories", true),
            ("/healthz", false),
            ("/readyz", false),
            ("/metrics", false),
            ("/token", false),
            ("/v20", false),
            ("/api/v10", false),
        ] {
            assert_eq!(api_of(path).is_some(), limited, "{path}");
        }
    }
}
