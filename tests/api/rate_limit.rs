//! Request rate limits (`[rate_limit]`): a client over its burst gets 429 TOOMANYREQUESTS
//! with Retry-After, in the format of its API; moving the registry's clock refills the
//! bucket (never a sleep); loopback clients are exempt unless told otherwise; health,
//! readiness and metrics are never limited. Per user: each signed-in user has a budget of
//! their own, whatever address they come from and whether they show a password or a
//! token; only verified credentials spend it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::config::RateLimitConfig;
use reqwest::StatusCode;

use crate::auth::{Cred, PW, call, client_from, spawn_auth_with_clock, token_for};
use crate::helpers::*;

/// A server limiting every client (loopback too: the tests run there) to `burst` requests,
/// refilled at one per second by `clock`.
async fn limited(burst: u32, exempt_loopback: bool) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |c| {
        c.rate_limit = RateLimitConfig { per_client: 1.0, burst, exempt_loopback, ..RateLimitConfig::default() };
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
        c.rate_limit =
            RateLimitConfig { per_client: 0.1, burst: 1, exempt_loopback: false, ..RateLimitConfig::default() };
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
    assert_eq!(defaults.per_user, 0.0, "the user limit is off by default");
}

#[tokio::test]
async fn off_by_default() {
    let app = spawn_app().await;
    for _ in 0..200 {
        assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    }
}

/// Two readers, `alice` and `bob` (password `PW`).
const READERS: &str = r#"
[[auth.users]]
name = "alice"
password_hash = "{HASH}"
roles = ["reader"]

[[auth.users]]
name = "bob"
password_hash = "{HASH}"
roles = ["reader"]
"#;

/// A server limiting each user (not each client) to `user_burst` requests, refilled at one
/// per second by `clock`; loopback is limited unless `exempt_loopback`.
async fn per_user(user_burst: u32, exempt_loopback: bool) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_auth_with_clock(READERS, clock.clone(), |c| {
        c.rate_limit = RateLimitConfig { per_user: 1.0, user_burst, exempt_loopback, ..RateLimitConfig::default() };
    })
    .await;
    (app, clock)
}

#[tokio::test]
async fn each_user_has_a_budget_of_their_own_answered_429_on_both_apis() {
    let (app, clock) = per_user(2, false).await;
    let (alice, bob) = (Cred::Basic("alice", PW), Cred::Basic("bob", PW));
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", alice).await.status(), StatusCode::OK);
    assert_eq!(call(&app, reqwest::Method::GET, "/api/v1/repositories", alice).await.status(), StatusCode::OK);
    // Alice's budget is spent, on /v2 and /api/v1 alike.
    let r = call(&app, reqwest::Method::GET, "/v2/", alice).await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"), "one request back per second");
    assert_eq!(header(&r, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    let body = assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    assert_eq!(body["errors"][0]["detail"]["retry_after"], 1, "{body}");
    app.state.registry.flush_denials().await.unwrap();
    let r = call(&app, reqwest::Method::GET, "/api/v1/repositories", alice).await;
    assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
    let body = assert_problem(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    assert!(body["detail"].as_str().unwrap().contains("rate_limit.per_user"), "says which limit: {body}");
    // Alice logged in fine: the ledger gets no failed login for it.
    assert_eq!(app.state.registry.flush_denials().await.unwrap(), 0, "no login.fail written for a rate-limited user");
    // Bob, from the same address, still has his.
    for _ in 0..2 {
        assert_eq!(call(&app, reqwest::Method::GET, "/v2/", bob).await.status(), StatusCode::OK);
    }
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", bob).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // Anonymous requests are not limited per user (the client limit, off here, covers them).
    for _ in 0..10 {
        assert_eq!(call(&app, reqwest::Method::GET, "/v2/", Cred::Anon).await.status(), StatusCode::UNAUTHORIZED);
    }
    // Health and the token endpoint are never limited.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    token_for(&app, alice, &[]).await;
    // One second later one request fits again, and only one.
    clock.advance(Duration::from_secs(1));
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", alice).await.status(), StatusCode::OK);
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", alice).await.status(), StatusCode::TOO_MANY_REQUESTS);
    // A long pause refills the whole burst, no more.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..2 {
        assert_eq!(call(&app, reqwest::Method::GET, "/v2/", alice).await.status(), StatusCode::OK);
    }
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", alice).await.status(), StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_user_budget_follows_them_across_addresses_and_credentials() {
    let (app, clock) = per_user(3, false).await;
    let (here, there) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let base = app.url("/v2/");
    let (token, _) = token_for(&app, Cred::Basic("alice", PW), &[]).await;
    let r = here.get(&base).basic_auth("alice", Some(PW)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = there.get(&base).basic_auth("alice", Some(PW)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = there.get(&base).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "her token spends the same budget as her password");
    for r in [
        here.get(&base).basic_auth("alice", Some(PW)).send().await.unwrap(),
        there.get(&base).bearer_auth(&token).send().await.unwrap(),
    ] {
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
        assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    }
    let r = here.get(&base).basic_auth("bob", Some(PW)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the address is not what is limited");
    clock.advance(Duration::from_secs(1));
    let r = there.get(&base).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn bad_credentials_never_spend_the_named_user_budget() {
    let (app, _clock) = per_user(1, false).await;
    // Wrong passwords (fewer than the login limiter allows) and a token Cairn did not sign,
    // both naming alice: 401, and her bucket stays full.
    for _ in 0..3 {
        let r = call(&app, reqwest::Method::GET, "/v2/", Cred::Basic("alice", "wrong")).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let b64 = |v: &str| base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, v);
    let forged = format!(
        "{}.{}.{}",
        b64(r#"{"alg":"ES256","typ":"JWT"}"#),
        b64(r#"{"sub":"alice","iss":"cairn","aud":"cairn","exp":9999999999,"access":[]}"#),
        b64("not a signature")
    );
    for path in ["/v2/", "/api/v1/repositories"] {
        let r = call(&app, reqwest::Method::GET, path, Cred::Bearer(&forged)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    let r = call(&app, reqwest::Method::GET, "/api/v1/repositories", Cred::Basic("alice", "wrong")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(call(&app, reqwest::Method::GET, "/v2/", Cred::Basic("alice", PW)).await.status(), StatusCode::OK);
    assert_eq!(
        call(&app, reqwest::Method::GET, "/v2/", Cred::Basic("alice", PW)).await.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "her one request was hers alone"
    );
}

#[tokio::test]
async fn users_on_loopback_are_exempt_by_default() {
    let (app, _clock) = per_user(1, true).await;
    for _ in 0..20 {
        assert_eq!(call(&app, reqwest::Method::GET, "/v2/", Cred::Basic("alice", PW)).await.status(), StatusCode::OK);
    }
}
