//! Request rate limits (`[rate_limit]`): a client over its burst gets 429 TOOMANYREQUESTS
//! with Retry-After, in the format of its API; moving the registry's clock refills the
//! bucket (never a sleep); loopback clients are exempt unless told otherwise; health,
//! readiness and metrics are never limited.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::config::RateLimitConfig;
use reqwest::StatusCode;

use crate::helpers::*;

/// A server limiting every client (loopback too: the tests run there) to `burst` requests,
/// refilled at one per second by `clock`.
async fn limited(burst: u32, exempt_loopback: bool) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |c| {
        c.rate_limit = RateLimitConfig { per_client: 1.0, burst, exempt_loopback };
    })
    .await;
    (app, clock)
}

#[tokio::test]
async fn over_the_burst_is_429_with_retry_after_until_the_clock_moves() {
    let (app, clock) = limited(3, false).await;
    for i in 0..3 {
        assert_eq!(app.get("/v2/").await.status(), StatusCode::OK, "request {i} is within the burst");
    }
    let r = app.get("/v2/").await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"), "one request back per second");
    assert_eq!(header(&r, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    let body = assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    assert_eq!(body["errors"][0]["detail"]["retry_after"], 1, "{body}");
    // Every /v2 route counts, HEAD too, and /api/v1 shares the client's bucket.
    assert_eq!(app.head("/v2/a/manifests/latest").await.status(), StatusCode::TOO_MANY_REQUESTS);
    let r = app.get("/api/v1/repositories").await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    // Health, readiness and metrics are never limited.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
    // One second later one request fits again, and only one.
    clock.advance(Duration::from_secs(1));
    assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v2/").await.status(), StatusCode::TOO_MANY_REQUESTS);
    // A long pause refills the whole burst, no more.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    }
    assert_eq!(app.get("/v2/").await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn the_wait_grows_with_the_debt() {
    // Refused requests take no token: the wait says when the next one fits.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |c| {
        c.rate_limit = RateLimitConfig { per_client: 0.1, burst: 1, exempt_loopback: false };
    })
    .await;
    assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    let r = app.get("/v2/").await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("10"), "one request per 10 s");
    clock.advance(Duration::from_secs(4));
    let r = app.get("/v2/").await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("6"));
    clock.advance(Duration::from_secs(6));
    assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn loopback_clients_are_exempt_by_default() {
    let (app, _clock) = limited(1, true).await;
    for _ in 0..20 {
        assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    }
    let defaults = cairn::Config::default().rate_limit;
    assert!(defaults.exempt_loopback, "loopback is exempt by default");
    assert_eq!(defaults.per_client, 0.0, "the limit is off by default");
}

#[tokio::test]
async fn off_by_default() {
    let app = spawn_app().await;
    for _ in 0..200 {
        assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    }
}
