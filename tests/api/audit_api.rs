//! `/api/v1/audit` (DESIGN §7): every ledger event kind appears after the action that causes
//! it with the right actor; filters, cursor pagination with `next_cursor` and `Link`;
//! checkpoints that verify offline with the served public key; problem+json errors; only
//! auditors and admins may read it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::auth::{Cred, PW, call, req, spawn_auth, spawn_auth_with, user};
use crate::helpers::*;

/// Users: root (admin), aud (auditor), rea (reader), wri (writer), dave (pull on `apps/*`);
/// `latest` is mutable, every other tag immutable.
pub const AUDIT: &str = r#"
[auth]
service = "cairn"

[[auth.users]]
name = "root"
password_hash = "{HASH}"
roles = ["admin"]

[[auth.users]]
name = "aud"
password_hash = "{HASH}"
roles = ["auditor"]

[[auth.users]]
name = "rea"
password_hash = "{HASH}"
roles = ["reader"]

[[auth.users]]
name = "wri"
password_hash = "{HASH}"
roles = ["writer"]

[[auth.users]]
name = "dave"
password_hash = "{HASH}"

[[auth.grants]]
subjects = ["dave"]
repositories = "apps/*"
actions = ["pull"]

[[immutability.rules]]
repositories = "**"
tags = ["latest"]
mode = "mutable"
"#;

/// POST+PUT a blob as `cred`; returns its digest.
pub async fn push_blob_as(app: &TestApp, cred: Cred<'_>, repo: &str, bytes: &[u8]) -> String {
    let d = digest(bytes);
    let r = req(app, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), cred)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "blob push: {:?}", r.text().await);
    d
}

/// PUT a manifest as `cred`.
pub async fn put_manifest_as(
    app: &TestApp,
    cred: Cred<'_>,
    repo: &str,
    reference: &str,
    body: &[u8],
) -> reqwest::Response {
    req(app, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), cred)
        .header("Content-Type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Pushes a small image (its own config, no layers) as `cred` under `reference`; returns
/// its digest.
pub async fn push_image_as(app: &TestApp, cred: Cred<'_>, repo: &str, reference: &str, n: u32) -> String {
    let cfg_bytes = format!(r#"{{"architecture":"amd64","os":"linux","n":{n}}}"#).into_bytes();
    let cfg = push_blob_as(app, cred, repo, &cfg_bytes).await;
    let m = image_manifest(&cfg, cfg_bytes.len() as u64, &[], None);
    let r = put_manifest_as(app, cred, repo, reference, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    digest(&m)
}

/// Every event after `*cursor` (reading every page as the auditor); moves the cursor on.
pub async fn events_after(app: &TestApp, cursor: &mut i64) -> Vec<Value> {
    let mut out = vec![];
    loop {
        let r = call(app, Method::GET, &format!("/api/v1/audit/events?cursor={cursor}&limit=1000"), user("aud")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let v: Value = r.json().await.unwrap();
        let events = v["events"].as_array().unwrap().clone();
        if let Some(last) = events.last() {
            *cursor = last["seq"].as_i64().unwrap();
        }
        out.extend(events);
        if v["next_cursor"].is_null() {
            return out;
        }
    }
}

/// Asserts that `events` hold one of `action` by `actor` (and, when given, with `digest` or
/// `tag`), and returns it.
fn find<'a>(events: &'a [Value], action: &str, actor: &str, what: &[(&str, &str)]) -> &'a Value {
    events
        .iter()
        .find(|e| e["action"] == action && e["actor"] == actor && what.iter().all(|(k, v)| e[*k] == *v))
        .unwrap_or_else(|| panic!("no {action} by {actor} with {what:?} in {}", json!(events)))
}

#[tokio::test]
async fn every_event_kind_appears_after_the_action_that_causes_it_with_its_actor() {
    let app = spawn_auth(AUDIT).await;
    let mut cursor = 0;
    let first = events_after(&app, &mut cursor).await;
    assert_eq!(first[0]["action"], "config.load", "the start is ledgered first: {}", json!(first));
    assert_eq!(first[0]["actor"], "cairn");
    assert!(first[0]["detail"]["immutability"].as_str().unwrap().starts_with("sha256:"));

    // Blob commit, into a new repository.
    let blob = push_blob_as(&app, user("wri"), "apps/a", b"loose blob").await;
    let ev = events_after(&app, &mut cursor).await;
    let created = find(&ev, "repository.create", "wri", &[("repository", "apps/a")]);
    assert_eq!(created["address"], "127.0.0.1");
    find(&ev, "blob.commit", "wri", &[("repository", "apps/a"), ("digest", &blob)]);

    // Blob mount into another repository.
    let r = call(&app, Method::POST, &format!("/v2/apps/b/blobs/uploads/?mount={blob}&from=apps/a"), user("wri")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "blob.mount", "wri", &[("repository", "apps/b"), ("digest", &blob)]);

    // Blob unlink.
    let r = call(&app, Method::DELETE, &format!("/v2/apps/b/blobs/{blob}"), user("root")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "blob.unlink", "root", &[("repository", "apps/b"), ("digest", &blob)]);

    // Manifest put with a tag create; a tag move.
    let one = push_image_as(&app, user("wri"), "apps/a", "latest", 1).await;
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "manifest.put", "wri", &[("digest", &one)]);
    find(&ev, "tag.create", "wri", &[("tag", "latest"), ("digest", &one)]);
    let two = push_image_as(&app, user("root"), "apps/a", "latest", 2).await;
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "tag.move", "root", &[("tag", "latest"), ("digest", &two), ("previous_digest", &one)]);

    // A refused overwrite of an immutable tag leaves its event though nothing changed.
    let v1 = push_image_as(&app, user("wri"), "apps/a", "v1", 3).await;
    let cfg = push_blob_as(&app, user("wri"), "apps/a", b"{\"n\":4}").await;
    let other = image_manifest(&cfg, 7, &[], None);
    let r = put_manifest_as(&app, user("wri"), "apps/a", "v1", &other).await;
    assert_error(r, StatusCode::CONFLICT, "DENIED").await;
    let ev = events_after(&app, &mut cursor).await;
    let refused = find(&ev, "write.refuse", "wri", &[("digest", &digest(&other))]);
    assert_eq!(refused["detail"]["reason"], "immutable");
    assert_eq!(refused["detail"]["current"], v1);

    // A refused delete of an immutable tag.
    let r = call(&app, Method::DELETE, "/v2/apps/a/manifests/v1", user("root")).await;
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "delete.refuse", "root", &[("tag", "v1"), ("digest", &v1)]);

    // Tag delete, then manifest delete (with the deletion of its remaining tags).
    let r = call(&app, Method::DELETE, "/v2/apps/a/manifests/latest", user("root")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "tag.delete", "root", &[("tag", "latest"), ("previous_digest", &two)]);
    let r = call(&app, Method::DELETE, &format!("/v2/apps/a/manifests/{one}"), user("root")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "manifest.delete", "root", &[("digest", &one)]);

    // Denied requests and failed logins are counted and written by the flush (every second
    // in the server; called here so the test does not wait).
    for _ in 0..3 {
        let r = call(&app, Method::POST, "/v2/apps/a/blobs/uploads/", user("rea")).await;
        assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let r = call(&app, Method::GET, "/v2/apps/a/tags/list", Cred::Basic("mallory", "guess")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    app.state.registry.flush_denials().await.unwrap();
    let ev = events_after(&app, &mut cursor).await;
    let denied = find(&ev, "request.deny", "rea", &[("repository", "apps/a"), ("address", "127.0.0.1")]);
    assert_eq!(denied["detail"]["count"], 3, "repeats from one client are one event: {denied}");
    find(&ev, "login.fail", "mallory", &[("address", "127.0.0.1")]);

    // Robot tokens created and revoked with the command line's functions.
    let robot = cairn::auth::NewRobot {
        name: "deploy".into(),
        roles: vec![],
        grants: vec!["apps/**=pull".into()],
        expires_in: None,
    };
    let secret = cairn::auth::create_robot(app.state.meta.as_ref(), &robot, &[]).await.unwrap();
    let ev = events_after(&app, &mut cursor).await;
    let created = find(&ev, "token.create", "cli", &[]);
    assert_eq!(created["detail"]["robot"], "deploy");
    assert!(!json!(ev).to_string().contains(&secret), "never a secret in an event");
    assert!(cairn::auth::revoke_robot(app.state.meta.as_ref(), "deploy").await.unwrap());
    let ev = events_after(&app, &mut cursor).await;
    assert_eq!(find(&ev, "token.revoke", "cli", &[])["detail"]["robot"], "deploy");
    assert!(!json!(ev).to_string().contains(PW), "never a password in an event");
}

/// A server with a small ledger: pushes by two users into two repositories, a tag move.
async fn busy() -> (TestApp, String, String) {
    let app = spawn_auth(AUDIT).await;
    let a = push_image_as(&app, user("wri"), "apps/one", "latest", 1).await;
    let b = push_image_as(&app, user("root"), "apps/one", "latest", 2).await;
    push_image_as(&app, user("root"), "apps/two", "v1", 3).await;
    (app, a, b)
}

async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let r = call(app, Method::GET, &format!("/api/v1/audit/events?{query}"), user("aud")).await;
    assert_eq!(r.status(), StatusCode::OK, "{query}");
    let v: Value = r.json().await.unwrap();
    v["events"].as_array().unwrap().clone()
}

#[tokio::test]
async fn filters_narrow_the_events() {
    let (app, a, b) = busy().await;
    let all = events(&app, "").await;
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>(), "seq order from 1 without gaps");

    let only = |list: &[Value], key: &str, want: &str| list.iter().all(|e| e[key] == want) && !list.is_empty();
    assert!(only(&events(&app, "repository=apps/two").await, "repository", "apps/two"));
    assert!(only(&events(&app, "actor=wri").await, "actor", "wri"));
    assert!(only(&events(&app, "action=tag.move").await, "action", "tag.move"));
    assert!(only(&events(&app, "tag=latest&repository=apps/one").await, "tag", "latest"));
    // A digest filter matches the digest or the previous digest: `a` was pushed, tagged, and
    // then `latest` moved away from it.
    let of_a = events(&app, &format!("digest={a}")).await;
    let actions: Vec<&str> = of_a.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["manifest.put", "tag.create", "tag.move"], "{}", json!(of_a));
    assert_eq!(of_a[2]["digest"], b);
    assert_eq!(of_a[2]["previous_digest"], a);
    let moves = events(&app, "action=tag.move&actor=root&repository=apps/one").await;
    assert_eq!(moves.len(), 1);

    // Time range: since is inclusive, until exclusive.
    let t = moves[0]["time"].as_str().unwrap();
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let since = events(&app, &format!("since={}", enc(t))).await;
    assert!(
        since.iter().all(|e| e["time"].as_str().unwrap() >= t) && since.iter().any(|e| e["seq"] == moves[0]["seq"])
    );
    let until = events(&app, &format!("until={}", enc(t))).await;
    assert!(until.iter().all(|e| e["time"].as_str().unwrap() < t) && !until.is_empty());
    assert!(events(&app, "since=2999-01-01T00:00:00Z").await.is_empty());
    assert_eq!(events(&app, "until=2999-01-01T00:00:00%2B01:00").await.len(), all.len());

    for (query, code) in [
        ("action=tag.teleport", "UNSUPPORTED"),
        ("digest=sha256:nothex", "DIGEST_INVALID"),
        ("repository=Bad", "NAME_INVALID"),
        ("tag=-x", "NAME_INVALID"),
        ("since=yesterday", "UNSUPPORTED"),
        ("until=2026-13-01T00:00:00Z", "UNSUPPORTED"),
        ("actor=", "UNSUPPORTED"),
        ("limit=0", "UNSUPPORTED"),
        ("limit=1001", "UNSUPPORTED"),
        ("cursor=x", "UNSUPPORTED"),
    ] {
        let r = call(&app, Method::GET, &format!("/api/v1/audit/events?{query}"), user("aud")).await;
        let p = assert_problem(r, StatusCode::BAD_REQUEST, code).await;
        assert!(p["type"].as_str().unwrap().starts_with("urn:cairn:problem:invalid-"), "{query}: {p}");
    }
}

#[tokio::test]
async fn events_paginate_with_next_cursor_and_a_link_that_keeps_the_filters() {
    let (app, _, _) = busy().await;
    let all = events(&app, "repository=apps/one").await;
    assert!(all.len() >= 5, "{}", json!(all));
    let mut seen = vec![];
    let mut url = "/api/v1/audit/events?repository=apps/one&limit=2".to_string();
    loop {
        let r = call(&app, Method::GET, &url, user("aud")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        let page = v["events"].as_array().unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.iter().cloned());
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(c, page.last().unwrap()["seq"].to_string(), "the cursor is the last seq");
                let link = link.expect("a Link header on every page but the last");
                assert_eq!(
                    link,
                    format!("</api/v1/audit/events?repository=apps%2Fone&limit=2&cursor={c}>; rel=\"next\""),
                    "a path when public_url is unset, with the filters"
                );
                url = link.trim_start_matches('<').split('>').next().unwrap().to_string();
            }
            None => {
                assert!(link.is_none(), "no Link on the last page");
                break;
            }
        }
    }
    assert_eq!(seen, all, "every event once, in seq order");

    // With public_url set, the Link is absolute.
    let app = spawn_auth_with(AUDIT, |c| c.server.public_url = Some("https://registry.example.com/".into())).await;
    push_image_as(&app, user("root"), "apps/x", "v1", 1).await;
    let r = call(&app, Method::GET, "/api/v1/audit/events?limit=1", user("aud")).await;
    let link = header(&r, "link").unwrap();
    assert_eq!(link, "<https://registry.example.com/api/v1/audit/events?limit=1&cursor=1>; rel=\"next\"");
}

#[tokio::test]
async fn checkpoints_verify_offline_with_the_served_public_key() {
    // The server signs on its own only the first checkpoint; the test signs the others.
    let app = spawn_auth_with(AUDIT, |c| {
        c.audit.checkpoint_every = 1_000_000;
        c.audit.checkpoint_interval = std::time::Duration::from_secs(86_400);
    })
    .await;
    let key = &app.state.audit_key;
    let hour = std::time::Duration::from_secs(3600);
    for n in 0..3 {
        push_image_as(&app, user("root"), "apps/cp", &format!("v{n}"), n).await;
        app.state.registry.checkpoint_if_due(key, 1, hour).await.unwrap();
    }

    let r = call(&app, Method::GET, "/api/v1/audit/public-key", user("aud")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/x-pem-file"));
    let pem = r.text().await.unwrap();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{pem}");
    let raw = cairn::audit::checkpoint::public_key_from_pem(&pem).unwrap();

    let mut cps: Vec<Value> = vec![];
    let mut url = "/api/v1/audit/checkpoints?limit=1".to_string();
    let head = loop {
        let r = call(&app, Method::GET, &url, user("aud")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "link");
        let page: Value = r.json().await.unwrap();
        assert_eq!(page["checkpoints"].as_array().unwrap().len(), 1, "{page}");
        cps.push(page["checkpoints"][0].clone());
        match page["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(link.unwrap(), format!("</api/v1/audit/checkpoints?limit=1&cursor={c}>; rel=\"next\""));
                url = format!("/api/v1/audit/checkpoints?limit=1&cursor={c}");
            }
            None => break page["head"].clone(),
        }
    };
    assert!(cps.len() >= 3, "{}", json!(cps));
    let last = cps.last().unwrap();
    assert_eq!((&last["seq"], &last["hash"]), (&head["seq"], &head["hash"]), "the last checkpoint covers the head");
    let events = events(&app, "limit=1000").await;
    for cp in &cps {
        let parsed: cairn::audit::Checkpoint = serde_json::from_value(cp.clone()).unwrap();
        assert!(parsed.verify(&raw), "the signature verifies with the PEM alone: {cp}");
        let e = events.iter().find(|e| e["seq"] == cp["seq"]).unwrap();
        assert_eq!(e["hash"], cp["hash"], "it signs the event's hash");
        let mut forged = parsed.clone();
        forged.seq += 1;
        assert!(!forged.verify(&raw));
    }
    // The events themselves chain: each hash recomputes from the previous one.
    let typed: Vec<cairn::audit::Event> = serde_json::from_value(json!(events)).unwrap();
    assert!(cairn::audit::chain::verify(None, &typed).is_ok());
}

#[tokio::test]
async fn only_auditors_and_admins_read_the_audit_api() {
    let app = spawn_auth(AUDIT).await;
    for path in ["/api/v1/audit/events", "/api/v1/audit/checkpoints", "/api/v1/audit/public-key"] {
        for who in ["aud", "root"] {
            assert_eq!(call(&app, Method::GET, path, user(who)).await.status(), StatusCode::OK, "{who} {path}");
        }
        for who in ["rea", "wri", "dave"] {
            let p =
                assert_problem(call(&app, Method::GET, path, user(who)).await, StatusCode::FORBIDDEN, "DENIED").await;
            assert!(p["detail"].as_str().unwrap().contains("auditor or admin"), "{p}");
            assert_eq!(p["type"], "urn:cairn:problem:forbidden");
        }
        let r = call(&app, Method::GET, path, Cred::Anon).await;
        assert!(header(&r, "www-authenticate").is_some_and(|c| c.starts_with("Bearer realm=")), "{path}");
        assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        let r = call(&app, Method::GET, path, Cred::Basic("aud", "wrong")).await;
        assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    // A refused reader is ledgered like a refused pull.
    app.state.registry.flush_denials().await.unwrap();
    let mut cursor = 0;
    let ev = events_after(&app, &mut cursor).await;
    find(&ev, "request.deny", "rea", &[]);
    find(&ev, "login.fail", "aud", &[]);
    // Bearer tokens: a reader's token covering a repository reads it, not the ledger.
    let (t, _) = crate::auth::token_for(&app, user("rea"), &["repository:apps/x:pull"]).await;
    let r = call(&app, Method::GET, "/api/v1/audit/events", Cred::Bearer(&t)).await;
    assert_problem(r, StatusCode::FORBIDDEN, "DENIED").await;
}
