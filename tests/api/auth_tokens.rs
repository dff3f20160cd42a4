//! The token endpoint and robot tokens (DESIGN §8): GET and POST `/token`, the JWT's claims
//! and its access being the intersection of what was asked and what is allowed, tokens
//! too narrow for a request (401 with a wider challenge) or for a user (403), the registry
//! scopes of the catalog (`registry:catalog:*`) and of `/api/v1` (`registry:api:read`),
//! every tampering refused, and robots created, used, listed, revoked and expired via the
//! CLI, and not locked out by failures elsewhere.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::{Method, Response, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::*;
use crate::helpers::*;

/// Repository -> granted actions, as `access_map` gives it.
type Access = BTreeMap<String, Vec<String>>;

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

// ---------------------------------------------------------------------------------------
// GET /token: body and claims.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn get_token_answers_a_signed_jwt_with_the_spec_claims() {
    let app = spawn_auth(STANDARD).await;
    let before = now_secs();
    let r = get_token(&app, user("rea"), &["repository:apps/web:pull"]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let t = body["token"].as_str().expect("token").to_string();
    assert_eq!(body["access_token"], body["token"], "access_token repeats token");
    assert_eq!(body["expires_in"], 300, "token_ttl = 5m");
    let issued = OffsetDateTime::parse(body["issued_at"].as_str().expect("issued_at"), &Rfc3339).expect("RFC 3339");
    assert!((issued.unix_timestamp() - before).abs() <= 60, "issued_at is now: {issued}");

    assert_eq!(t.split('.').count(), 3);
    let head = jwt_part(&t, 0);
    assert_eq!(head["alg"], "ES256", "{head}");
    let c = jwt_part(&t, 1);
    assert_eq!(c["iss"], "cairn", "{c}");
    assert!(c["aud"] == "cairn" || c["aud"] == json!(["cairn"]), "aud is the service: {c}");
    assert_eq!(c["sub"], "rea");
    let (iat, exp, nbf) = (c["iat"].as_i64().unwrap(), c["exp"].as_i64().unwrap(), c["nbf"].as_i64().unwrap());
    assert!((iat - before).abs() <= 60, "iat is now: {c}");
    assert_eq!(exp - iat, 300, "{c}");
    assert!(nbf <= iat, "{c}");
    assert!(c["jti"].as_str().is_some_and(|j| !j.is_empty()), "{c}");
    assert_eq!(c["access"], json!([{ "type": "repository", "name": "apps/web", "actions": ["pull"] }]));

    let (t2, c2) = token_for(&app, user("rea"), &["repository:apps/web:pull"]).await;
    assert_ne!(c2["jti"], c["jti"], "every token has its own id");
    assert_ne!(t2, t);
}

#[tokio::test]
async fn the_token_grants_only_the_intersection_of_asked_and_allowed() {
    let app = spawn_auth(STANDARD).await;
    let cases: Vec<(&str, Vec<&str>, Access)> = vec![
        ("rea", vec!["repository:apps/web:pull,push"], access(&[("apps/web", &["pull"])])),
        ("aud", vec!["repository:apps/web:pull,push,delete"], access(&[])),
        (
            "bob",
            vec!["repository:apps/web:pull,push,delete", "repository:other/db:pull", "repository:apps/team/api:push"],
            access(&[("apps/team/api", &["push"]), ("apps/web", &["pull", "push"])]),
        ),
        ("dave", vec!["repository:apps/web:pull", "repository:apps/team/api:pull"], access(&[("apps/web", &["pull"])])),
        ("wri", vec!["repository:other:delete,push", "repository:x:delete"], access(&[("other", &["delete", "push"])])),
        ("root", vec!["repository:x/y:push,pull,delete"], access(&[("x/y", &["delete", "pull", "push"])])),
        ("anonymous", vec!["repository:public/img:pull,push", "repository:apps/web:pull"], {
            access(&[("public/img", &["pull"])])
        }),
        // Unknown or garbled scopes are ignored; an unknown action does not spoil the others.
        (
            "bob",
            vec![
                "garbage",
                "repository:apps/web",
                "repository:apps/web:frobnicate,pull",
                "repository:Not A Name:pull",
                "repository::pull",
                "",
            ],
            access(&[("apps/web", &["pull"])]),
        ),
        ("bob", vec![], access(&[])),
    ];
    for (who, scopes, want) in cases {
        let (_, claims) = token_for(&app, user(who), &scopes).await;
        assert_eq!(claims["sub"], who);
        assert_eq!(access_map(&claims), want, "{who} asking {scopes:?}: {claims}");
    }
}

#[tokio::test]
async fn in_open_mode_anonymous_gets_what_it_asks() {
    let app = spawn_app().await;
    let (t, claims) = token_for(&app, Cred::Anon, &["repository:x/y:pull,push,delete"]).await;
    assert_eq!(claims["sub"], "anonymous");
    assert_eq!(access_map(&claims), access(&[("x/y", &["delete", "pull", "push"])]));
    push_small_image(&app, Cred::Bearer(&t), "x/y", "v1", "1").await;
}

#[tokio::test]
async fn wrong_credentials_at_the_token_endpoint_are_401() {
    let app = spawn_auth(STANDARD).await;
    for cred in [Cred::Basic("bob", "wrong"), Cred::Basic("nobody", PW)] {
        let r = get_token(&app, cred, &["repository:public/img:pull"]).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

// ---------------------------------------------------------------------------------------
// POST /token (OAuth2 password grant).
// ---------------------------------------------------------------------------------------

async fn post_token(app: &TestApp, form: &[(&str, &str)]) -> Response {
    app.http.post(app.url("/token")).form(form).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn post_token_supports_the_password_grant_and_refuses_refresh_tokens() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let form = [
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", PW),
        ("scope", "repository:apps/web:pull,push,delete"),
        ("service", "cairn"),
        ("client_id", "tests"),
    ];
    let r = post_token(&app, &form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 300, "{body}");
    assert!(OffsetDateTime::parse(body["issued_at"].as_str().expect("issued_at"), &Rfc3339).is_ok());
    let t = body["access_token"].as_str().expect("access_token");
    let claims = jwt_part(t, 1);
    assert_eq!(claims["sub"], "bob");
    assert_eq!(access_map(&claims), access(&[("apps/web", &["pull", "push"])]));
    let r = call(&app, Method::GET, "/v2/apps/web/manifests/v1", Cred::Bearer(t)).await;
    assert_eq!(r.status(), StatusCode::OK);

    let mut wrong = form;
    wrong[2] = ("password", "wrong");
    assert_eq!(post_token(&app, &wrong).await.status(), StatusCode::UNAUTHORIZED);

    let r = post_token(
        &app,
        &[("grant_type", "refresh_token"), ("refresh_token", "x"), ("service", "cairn"), ("client_id", "tests")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_grant_type", "{body}");
}

// ---------------------------------------------------------------------------------------
// Using tokens on /v2.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_too_narrow_for_an_allowed_user_gets_a_wider_challenge() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let (t, _) = token_for(&app, user("bob"), &["repository:apps/web:pull"]).await;
    let bearer = Cred::Bearer(&t);
    assert_eq!(call(&app, Method::GET, "/v2/apps/web/manifests/v1", bearer).await.status(), StatusCode::OK);
    // bob may push to apps/web and pull apps/team/api, but the token does not say so.
    assert_insufficient_scope(
        call(&app, Method::POST, "/v2/apps/web/blobs/uploads/", bearer).await,
        &app,
        "apps/web",
        "pull,push",
    )
    .await;
    let r = call(&app, Method::GET, "/v2/apps/team/api/manifests/v1", bearer).await;
    assert_insufficient_scope(r, &app, "apps/team/api", "pull").await;
    // bob may never pull other/db: 403, whatever the token.
    assert_denied(call(&app, Method::GET, "/v2/other/db/manifests/v1", bearer).await, "pull", "other/db").await;
    // The client then fetches the wider token and succeeds.
    let (wide, _) = token_for(&app, user("bob"), &["repository:apps/web:pull,push"]).await;
    let r = call(&app, Method::POST, "/v2/apps/web/blobs/uploads/", Cred::Bearer(&wide)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_anonymous_token_pulls_what_anonymous_may() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let (t, _) = token_for(&app, Cred::Anon, &["repository:public/img:pull"]).await;
    assert_eq!(call(&app, Method::GET, "/v2/public/img/manifests/v1", Cred::Bearer(&t)).await.status(), StatusCode::OK);
    // Anonymous cannot get a wider token, so the challenge asks for credentials, without
    // `insufficient_scope` (clients then say "authentication required").
    let r = call(&app, Method::POST, "/v2/public/img/blobs/uploads/", Cred::Bearer(&t)).await;
    assert_challenge(r, &app, "public/img", "pull,push").await;
    let r = call(&app, Method::GET, "/v2/apps/web/manifests/v1", Cred::Bearer(&t)).await;
    assert_challenge(r, &app, "apps/web", "pull").await;
}

// ---------------------------------------------------------------------------------------
// Registry scopes: the catalog and /api/v1.
// ---------------------------------------------------------------------------------------

/// The `registry` entries of a token's access claim, as `name:action` strings.
fn registry_access(claims: &Value) -> Vec<String> {
    let entries = claims["access"].as_array().expect("access claim is an array");
    let mut out: Vec<String> = entries
        .iter()
        .filter(|e| e["type"] == "registry")
        .flat_map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            e["actions"].as_array().unwrap().iter().map(move |a| format!("{name}:{}", a.as_str().unwrap()))
        })
        .collect();
    out.sort();
    out
}

/// 401 with the challenge for `scope`, marked `insufficient_scope` if `insufficient`.
async fn assert_scope_challenge(r: Response, app: &TestApp, scope: &str, insufficient: bool) {
    let mut want = expected_challenge(&app.base, "cairn", Some(scope));
    if insufficient {
        want.push_str(r#",error="insufficient_scope""#);
    }
    assert_eq!(challenge(&r), want);
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_needs_a_token_with_the_catalog_scope() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    for (who, scopes) in [("bob", vec![]), ("root", vec!["repository:apps/web:pull"])] {
        let (t, claims) = token_for(&app, user(who), &scopes).await;
        assert!(registry_access(&claims).is_empty(), "{claims}");
        let r = call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await;
        assert_scope_challenge(r, &app, "registry:catalog:*", true).await;
    }
    // With the scope, the catalog lists what the subject may pull, as with Basic.
    let (t, claims) = token_for(&app, user("bob"), &["registry:catalog:*"]).await;
    assert_eq!(registry_access(&claims), ["catalog:*"]);
    let r = call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["apps/team/api", "apps/web", "public/img"]));
    let (t, _) = token_for(&app, Cred::Anon, &["registry:catalog:*"]).await;
    let v: Value = call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["public/img"]));
    // An anonymous token without it: a plain challenge (anonymous cannot do better).
    let (t, _) = token_for(&app, Cred::Anon, &[]).await;
    assert_scope_challenge(
        call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await,
        &app,
        "registry:catalog:*",
        false,
    )
    .await;
    // Basic credentials and no credentials work as before.
    assert_eq!(call(&app, Method::GET, "/v2/_catalog", user("bob")).await.status(), StatusCode::OK);
    assert_eq!(call(&app, Method::GET, "/v2/_catalog", Cred::Anon).await.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_rest_api_needs_a_token_with_the_api_read_scope() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let paths = ["/api/v1/policies/immutability", "/api/v1/repositories/apps/web/tags/v1/history"];
    let (narrow, _) = token_for(&app, user("aud"), &[]).await;
    for path in paths {
        let r = call(&app, Method::GET, path, Cred::Bearer(&narrow)).await;
        assert_scope_challenge(r, &app, "registry:api:read", true).await;
    }
    for who in ["aud", "rea", "root"] {
        let (t, claims) = token_for(&app, user(who), &["registry:api:read"]).await;
        assert_eq!(registry_access(&claims), ["api:read"], "{who}");
        for path in paths {
            assert_eq!(call(&app, Method::GET, path, Cred::Bearer(&t)).await.status(), StatusCode::OK, "{who} {path}");
        }
    }
    // Subjects whose roles do not allow it are not granted the scope, and stay refused.
    for who in ["bob", "wri"] {
        let (t, claims) = token_for(&app, user(who), &["registry:api:read"]).await;
        assert!(registry_access(&claims).is_empty(), "{who}: {claims}");
        let r = call(&app, Method::GET, paths[0], Cred::Bearer(&t)).await;
        assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let (t, claims) = token_for(&app, Cred::Anon, &["registry:api:read"]).await;
    assert!(registry_access(&claims).is_empty(), "{claims}");
    let r = call(&app, Method::GET, paths[0], Cred::Bearer(&t)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // Basic credentials work as before.
    assert_eq!(call(&app, Method::GET, paths[0], user("aud")).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn in_open_mode_tokens_get_the_registry_scopes_they_ask_for() {
    let app = spawn_app().await;
    let (t, claims) = token_for(&app, Cred::Anon, &["registry:catalog:*", "registry:api:read"]).await;
    assert_eq!(registry_access(&claims), ["api:read", "catalog:*"]);
    assert_eq!(call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await.status(), StatusCode::OK);
    let r = call(&app, Method::GET, "/api/v1/policies/immutability", Cred::Bearer(&t)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let (t, _) = token_for(&app, Cred::Anon, &[]).await;
    let r = call(&app, Method::GET, "/v2/_catalog", Cred::Bearer(&t)).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a token covers only its scopes, even in open mode");
}

// ---------------------------------------------------------------------------------------
// Tampering.
// ---------------------------------------------------------------------------------------

fn parts(t: &str) -> Vec<String> {
    t.split('.').map(str::to_string).collect()
}

/// The token with one bit of its signature flipped.
fn flip_signature(t: &str) -> String {
    let p = parts(t);
    let mut sig = b64url_decode(&p[2]);
    sig[7] ^= 0x01;
    format!("{}.{}.{}", p[0], p[1], b64url_encode(&sig))
}

/// The token with its claims edited by `edit` and re-encoded, keeping the old signature.
fn edit_claims(t: &str, edit: impl FnOnce(&mut Value)) -> String {
    let p = parts(t);
    let mut claims = jwt_part(t, 1);
    edit(&mut claims);
    format!("{}.{}.{}", p[0], b64url_encode(&serde_json::to_vec(&claims).unwrap()), p[2])
}

/// The token's claims under `{"alg":"none"}` and no signature.
fn alg_none(t: &str) -> String {
    let p = parts(t);
    format!("{}.{}.", b64url_encode(br#"{"alg":"none","typ":"JWT"}"#), p[1])
}

#[test]
fn base64url_round_trips() {
    for n in 0..40usize {
        let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
        assert_eq!(b64url_decode(&b64url_encode(&bytes)), bytes);
    }
    assert_eq!(b64url_encode(b"\xfb\xff"), "-_8");
    assert_eq!(b64url_decode("eyJhIjoxfQ"), br#"{"a":1}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tampered_tokens_are_refused() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let (t, _) = token_for(&app, user("bob"), &["repository:apps/web:pull"]).await;
    let pull = "/v2/apps/web/manifests/v1";
    assert_eq!(call(&app, Method::GET, pull, Cred::Bearer(&t)).await.status(), StatusCode::OK, "the genuine one");
    let cases: Vec<(&str, String, &str, Method)> = vec![
        ("flipped signature", flip_signature(&t), pull, Method::GET),
        (
            "widened access",
            edit_claims(&t, |c| {
                c["access"] = json!([{ "type": "repository", "name": "apps/web", "actions": ["pull", "push"] }])
            }),
            "/v2/apps/web/blobs/uploads/",
            Method::POST,
        ),
        (
            "access moved to another repository",
            edit_claims(&t, |c| c["access"][0]["name"] = json!("other/db")),
            "/v2/other/db/manifests/v1",
            Method::GET,
        ),
        ("subject changed to an admin", edit_claims(&t, |c| c["sub"] = json!("root")), pull, Method::GET),
        ("expiry pushed back", edit_claims(&t, |c| c["exp"] = json!(now_secs() + 86400)), pull, Method::GET),
        ("alg none", alg_none(&t), pull, Method::GET),
        ("signature stripped", format!("{}.{}.", parts(&t)[0], parts(&t)[1]), pull, Method::GET),
        ("two parts", format!("{}.{}", parts(&t)[0], parts(&t)[1]), pull, Method::GET),
    ];
    for (what, forged, path, method) in cases {
        let r = call(&app, method, path, Cred::Bearer(&forged)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn a_token_from_another_registry_is_refused() {
    let a = spawn_auth(STANDARD).await;
    let b = spawn_auth(STANDARD).await; // same service name, its own signing key
    let (t, _) = token_for(&b, user("rea"), &["repository:apps/web:pull"]).await;
    let r = call(&b, Method::GET, "/v2/apps/web/tags/list", Cred::Bearer(&t)).await;
    assert!(r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN, "valid where issued");
    let r = call(&a, Method::GET, "/v2/apps/web/tags/list", Cred::Bearer(&t)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    // Two registries on one data directory share the signing key but not the service name.
    let a = spawn_auth(STANDARD).await;
    let (own, _) = token_for(&a, user("rea"), &["repository:apps/web:pull"]).await;
    let dir = data_dir(&a);
    let b = spawn_auth_with(&STANDARD.replace("service = \"cairn\"", "service = \"elsewhere\""), move |c| {
        c.server.data_dir = dir;
    })
    .await;
    let r = b
        .http
        .get(b.url("/token"))
        .query(&[("service", "elsewhere"), ("scope", "repository:apps/web:pull")])
        .basic_auth("rea", Some(PW))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let foreign = v["token"].as_str().unwrap().to_string();
    let claims = jwt_part(&foreign, 1);
    assert!(claims["aud"] == "elsewhere" || claims["aud"] == json!(["elsewhere"]), "{claims}");
    let r = call(&b, Method::GET, "/v2/apps/web/tags/list", Cred::Bearer(&foreign)).await;
    assert!(r.status() != StatusCode::UNAUTHORIZED, "valid where issued (same key): {}", r.status());
    let r = call(&a, Method::GET, "/v2/apps/web/tags/list", Cred::Bearer(&foreign)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = call(&b, Method::GET, "/v2/apps/web/tags/list", Cred::Bearer(&own)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

/// A JWT with `claims`, signed ES256 with `app`'s own token signing key: genuine in every
/// respect except the claims this test chose.
/// The key is where `cairn::keys` keeps it: a file under the data directory on SQLite, the
/// database on PostgreSQL.
async fn forge(app: &TestApp, claims: &Value) -> String {
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
    let pkcs8 = cairn::keys::load(&app.state.config, app.state.meta.as_ref(), cairn::keys::KeyKind::Token)
        .await
        .expect("the token signing key");
    let rng = ring::rand::SystemRandom::new();
    let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng).expect("PKCS#8 P-256 key");
    let head = json!({ "typ": "JWT", "alg": "ES256" });
    let msg = format!(
        "{}.{}",
        b64url_encode(&serde_json::to_vec(&head).unwrap()),
        b64url_encode(&serde_json::to_vec(claims).unwrap())
    );
    let sig = pair.sign(&rng, msg.as_bytes()).unwrap();
    format!("{msg}.{}", b64url_encode(sig.as_ref()))
}

#[tokio::test]
async fn expired_not_yet_valid_and_foreign_claims_are_refused_even_when_signed() {
    let app = spawn_auth(STANDARD).await;
    token_for(&app, Cred::Anon, &[]).await; // the key exists by now
    let now = now_secs();
    let genuine = json!({
        "iss": "cairn", "aud": "cairn", "sub": "rea", "iat": now, "nbf": now - 5, "exp": now + 300,
        "jti": "forged-by-the-tests",
        "access": [{ "type": "repository", "name": "public/img", "actions": ["pull"] }],
    });
    let path = "/v2/public/img/tags/list";
    // Control: the forging itself is sound, so the refusals below are about the claims.
    let r = call(&app, Method::GET, path, Cred::Bearer(&forge(&app, &genuine).await)).await;
    assert!(r.status() != StatusCode::UNAUTHORIZED && r.status() != StatusCode::FORBIDDEN, "{}", r.status());
    let edits: Vec<(&str, Value)> = vec![
        ("expired an hour ago", json!({ "iat": now - 3900, "nbf": now - 3900, "exp": now - 3600 })),
        ("expired ten seconds ago", json!({ "iat": now - 310, "nbf": now - 310, "exp": now - 10 })),
        ("not valid for an hour", json!({ "nbf": now + 3600 })),
        ("another audience", json!({ "aud": "elsewhere" })),
        ("another issuer", json!({ "iss": "someone-else" })),
    ];
    for (what, edit) in edits {
        let mut claims = genuine.clone();
        for (k, v) in edit.as_object().unwrap() {
            claims[k] = v.clone();
        }
        let r = call(&app, Method::GET, path, Cred::Bearer(&forge(&app, &claims).await)).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}

// ---------------------------------------------------------------------------------------
// Robot tokens (CLI).
// ---------------------------------------------------------------------------------------

/// `cairn token create ...` against `app`'s data dir; returns the secret.
async fn create_robot(app: &TestApp, args: &[&str]) -> String {
    let dir = data_dir(app);
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", arg(&dir)]);
    let (ok, out, err) = cairn_cli_async(&all, None).await;
    assert!(ok, "token create {args:?} failed:\n{out}\n{err}");
    let secrets: Vec<&str> = out.lines().filter_map(|l| l.trim().strip_prefix("secret: ")).collect();
    assert_eq!(secrets.len(), 1, "one `secret: ` line in:\n{out}");
    let s = secrets[0].trim().to_string();
    assert!(s.len() >= 20, "a long random secret: {s}");
    s
}

async fn robot_cli(app: &TestApp, args: &[&str]) -> (bool, String, String) {
    let dir = data_dir(app);
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    all.extend(["--data-dir", arg(&dir)]);
    cairn_cli_async(&all, None).await
}

/// STANDARD plus a config grant naming the robot `deploy`.
fn robot_config() -> String {
    format!("{STANDARD}\n[[auth.grants]]\nsubjects = [\"deploy\"]\nrepositories = \"other\"\nactions = [\"pull\"]\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_robot_with_a_pull_grant_pulls_but_cannot_push() {
    let (app, _, _dir) = spawn_seeded(&robot_config()).await;
    let secret = create_robot(&app, &["--name", "deploy", "--grant", "apps/**=pull"]).await;
    let robot = Cred::Basic("deploy", &secret);
    for repo in ["apps/web", "apps/team/api", "other"] {
        let r = call(&app, Method::GET, &format!("/v2/{repo}/manifests/v1"), robot).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}");
    }
    let msg =
        assert_denied(call(&app, Method::POST, "/v2/apps/web/blobs/uploads/", robot).await, "push", "apps/web").await;
    assert!(msg.contains("deploy"), "{msg}");
    assert_denied(call(&app, Method::GET, "/v2/other/db/manifests/v1", robot).await, "pull", "other/db").await;
    assert_error(
        call(&app, Method::GET, "/api/v1/policies/immutability", robot).await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    // A wrong secret for the robot is a bad login.
    let r = call(&app, Method::GET, "/v2/apps/web/manifests/v1", Cred::Basic("deploy", "x")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // The token endpoint takes the robot's credentials too.
    let (t, claims) = token_for(&app, robot, &["repository:apps/web:pull,push", "repository:other/db:pull"]).await;
    assert_eq!(claims["sub"], "deploy");
    assert_eq!(access_map(&claims), access(&[("apps/web", &["pull"])]));
    assert_eq!(call(&app, Method::GET, "/v2/apps/web/manifests/v1", Cred::Bearer(&t)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_revoked_robot_is_refused() {
    let app = spawn_auth(STANDARD).await;
    let secret = create_robot(&app, &["--name", "deploy", "--grant", "public/**=pull,push"]).await;
    let robot = Cred::Basic("deploy", &secret);
    push_small_image(&app, robot, "public/rev", "v1", "1").await;
    let (t, _) = token_for(&app, robot, &["repository:public/rev:pull,push"]).await;
    let (ok, out, err) = robot_cli(&app, &["revoke", "deploy"]).await;
    assert!(ok, "revoke failed:\n{out}\n{err}");
    let r = call(&app, Method::POST, "/v2/public/rev/blobs/uploads/", robot).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = get_token(&app, robot, &["repository:public/rev:pull"]).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // A token issued before the revocation no longer pushes either.
    let r = call(&app, Method::POST, "/v2/public/rev/blobs/uploads/", Cred::Bearer(&t)).await;
    assert!(
        r.status() == StatusCode::UNAUTHORIZED || r.status() == StatusCode::FORBIDDEN,
        "token of a revoked robot still works: {}",
        r.status()
    );
}

#[tokio::test]
async fn an_expired_robot_is_refused() {
    let started = std::time::Instant::now();
    let clock = std::sync::Arc::new(cairn::clock::ManualClock::new(SystemTime::now()));
    let app = spawn_auth_with_clock(STANDARD, clock.clone(), |_| {}).await;
    let secret = create_robot(&app, &["--name", "brief", "--grant", "apps/**=pull", "--expires", "1h"]).await;
    let r = call(&app, Method::GET, "/v2/apps/web/tags/list", Cred::Basic("brief", &secret)).await;
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED, "live for its first hour");
    // The command dated the expiry by the real clock, after the server's clock was made (a
    // second or two later on PostgreSQL: a fresh database, migrations, the command itself).
    clock.advance(Duration::from_secs(3601) + started.elapsed());
    let r = call(&app, Method::GET, "/v2/apps/web/tags/list", Cred::Basic("brief", &secret)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = get_token(&app, Cred::Basic("brief", &secret), &["repository:apps/web:pull"]).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_secrets_for_a_robot_from_elsewhere_do_not_lock_the_robot_out() {
    let app = spawn_auth(STANDARD).await;
    let secret = create_robot(&app, &["--name", "deploy", "--grant", "public/**=pull"]).await;
    let attacker = client_from("127.0.0.50");
    for i in 0..8 {
        let r =
            attacker.get(app.url("/v2/public/img/tags/list")).basic_auth("deploy", Some(format!("cairn_{i}"))).send();
        let status = r.await.unwrap().status();
        assert!([StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&status), "{status}");
    }
    let ci = client_from("127.0.0.51");
    let r = ci.get(app.url("/v2/public/img/tags/list")).basic_auth("deploy", Some(&secret)).send().await.unwrap();
    assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS, "the robot from its own address");
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED);
    let (_, claims) = token_for_from(&app, &ci, "deploy", &secret, &["repository:public/img:pull"]).await;
    assert_eq!(claims["sub"], "deploy");
}

/// `token_for` from a given client.
async fn token_for_from(
    app: &TestApp,
    client: &reqwest::Client,
    name: &str,
    secret: &str,
    scopes: &[&str],
) -> (String, Value) {
    let mut q: Vec<(&str, &str)> = vec![("service", "cairn")];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    let r = client.get(app.url("/token")).query(&q).basic_auth(name, Some(secret)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let t = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_string();
    let claims = jwt_part(&t, 1);
    (t, claims)
}

#[tokio::test]
async fn token_list_shows_name_grants_and_expiry_but_never_the_secret() {
    let app = spawn_auth(STANDARD).await;
    let s1 = create_robot(&app, &["--name", "deploy", "--grant", "apps/**=pull,push", "--expires", "30d"]).await;
    let s2 = create_robot(&app, &["--name", "auditbot", "--role", "auditor"]).await;
    assert_ne!(s1, s2);
    let (ok, out, err) = robot_cli(&app, &["list"]).await;
    assert!(ok, "list failed: {err}");
    assert!(!out.contains(&s1) && !out.contains(&s2), "secret listed:\n{out}");
    assert!(!err.contains(&s1) && !err.contains(&s2), "secret on stderr:\n{err}");
    let line = out.lines().find(|l| l.contains("deploy")).unwrap_or_else(|| panic!("deploy not listed:\n{out}"));
    assert!(line.contains("apps/**") && line.contains("pull") && line.contains("push"), "grants: {line}");
    let expiry_dates: Vec<String> = [29i64, 30, 31]
        .iter()
        .map(|d| (OffsetDateTime::now_utc() + time::Duration::days(*d)).date().to_string())
        .collect();
    assert!(expiry_dates.iter().any(|d| line.contains(d.as_str())), "expiry ({expiry_dates:?}) in: {line}");
    assert!(out.contains("auditbot"), "{out}");
    // Stored hashed: the secret is in no file of the data directory.
    for entry in std::fs::read_dir(data_dir(&app)).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(s1.len()).any(|w| w == s1.as_bytes());
            assert!(!found, "secret stored in clear in {}", path.display());
        }
    }
    // On PostgreSQL the database is not a file of the data directory: its rows, then.
    if let Some(rows) = app.postgres_rows().await {
        assert!(rows.lines().any(|r| r.starts_with("robots: ") && r.contains("deploy")), "the robot's row:\n{rows}");
        assert!(!rows.contains(&s1) && !rows.contains(&s2), "secret stored in clear in the database");
    }
}

#[tokio::test]
async fn a_robot_push_is_recorded_with_its_name() {
    let app = spawn_auth(STANDARD).await;
    let secret = create_robot(&app, &["--name", "ci-bot", "--role", "writer"]).await;
    push_small_image(&app, Cred::Basic("ci-bot", &secret), "apps/robo", "v1", "1").await;
    let r = call(&app, Method::GET, "/api/v1/repositories/apps/robo/tags/v1/history", user("aud")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["events"][0]["actor"], "ci-bot", "{v}");
    assert_eq!(v["events"][0]["address"], "127.0.0.1");
    let (t, _) = token_for(&app, Cred::Basic("ci-bot", &secret), &["repository:apps/robo:pull,push"]).await;
    push_small_image(&app, Cred::Bearer(&t), "apps/robo", "v2", "2").await;
    let r = call(&app, Method::GET, "/api/v1/repositories/apps/robo/tags/v2/history", user("aud")).await;
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["events"][0]["actor"], "ci-bot", "{v}");
}

#[tokio::test]
async fn a_robot_ends_open_mode() {
    let app = spawn_app().await;
    assert_eq!(app.post("/v2/x/blobs/uploads/").await.status(), StatusCode::ACCEPTED, "open");
    let secret = create_robot(&app, &["--name", "only", "--grant", "x=pull,push"]).await;
    // The server notices the new robot within a moment (it rechecks about once a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let r = loop {
        let r = app.post("/v2/x/blobs/uploads/").await;
        if r.status() != StatusCode::ACCEPTED || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_challenge(r, &app, "x", "pull,push").await;
    assert_eq!(app.get("/v2/").await.status(), StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::POST, "/v2/x/blobs/uploads/", Cred::Basic("only", &secret)).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

// ---------------------------------------------------------------------------------------
// Scopes with a resource class, as Docker sends for plugins.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn a_scope_with_a_resource_class_is_granted_like_a_repository_scope() {
    let app = spawn_auth(STANDARD).await;
    let (t, claims) = token_for(&app, user("bob"), &["repository(plugin):apps/web:push,pull"]).await;
    assert_eq!(access_map(&claims), access(&[("apps/web", &["pull", "push"])]), "{claims}");
    // The token works for the push Docker makes with it.
    push_small_image(&app, Cred::Bearer(&t), "apps/web", "plugin-1", "1").await;
    // The class does not widen anything: what bob may not do stays refused.
    let (_, claims) = token_for(&app, user("bob"), &["repository(plugin):other/db:pull"]).await;
    assert_eq!(access_map(&claims), access(&[]), "{claims}");
    // A garbled class is ignored like any garbled scope.
    for bad in ["repository():apps/web:pull", "repository(plug in):apps/web:pull", "repository(plugin:apps/web:pull"] {
        let (_, claims) = token_for(&app, user("bob"), &[bad]).await;
        assert_eq!(access_map(&claims), access(&[]), "{bad}: {claims}");
    }
}
