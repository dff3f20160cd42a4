//! Tag history (DESIGN §4): every create, move and delete recorded with time and actor,
//! served newest first with cursor pagination, and "what did this tag point to at T".

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use cairn::clock::Clock as _;

use crate::helpers::*;

async fn push_n(app: &TestApp, repo: &str, tag: &str, n: u32) -> String {
    let cfg = app.push_blob(repo, b"{}").await;
    let mut m: Value = serde_json::from_slice(&image_manifest(&cfg, 2, &[], None)).unwrap();
    m["annotations"] = json!({ "n": n.to_string() });
    let body = serde_json::to_vec(&m).unwrap();
    let r = app.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    digest(&body)
}

#[tokio::test]
async fn a_moving_tag_records_create_move_and_delete_newest_first() {
    let app = spawn_mutable().await;
    let a = push_n(&app, "hist/app", "latest", 1).await;
    push_n(&app, "hist/app", "latest", 1).await; // identical re-push: no event
    let b = push_n(&app, "hist/app", "latest", 2).await;
    assert_eq!(app.delete("/v2/hist/app/manifests/latest").await.status(), StatusCode::ACCEPTED);
    let v: Value = app.get("/api/v1/repositories/hist/app/tags/latest/history").await.json().await.unwrap();
    assert_eq!(v["repository"], "hist/app");
    assert_eq!(v["tag"], "latest");
    let events = v["events"].as_array().unwrap();
    let summary: Vec<(Value, Value, Value)> =
        events.iter().map(|e| (e["action"].clone(), e["from"].clone(), e["to"].clone())).collect();
    assert_eq!(
        summary,
        vec![
            (json!("delete"), json!(b), Value::Null),
            (json!("move"), json!(a), json!(b)),
            (json!("create"), Value::Null, json!(a)),
        ]
    );
    for e in events {
        assert_eq!(e["actor"], "anonymous");
        assert_eq!(e["address"], "127.0.0.1");
        assert!(
            time::OffsetDateTime::parse(e["time"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
                .is_ok()
        );
    }
    assert_eq!(v["next_cursor"], Value::Null);
}

#[tokio::test]
async fn deleting_a_manifest_records_the_deletion_of_its_tags() {
    let app = spawn_mutable().await;
    let d = push_n(&app, "hist/cascade", "one", 1).await;
    assert_eq!(app.delete(&format!("/v2/hist/cascade/manifests/{d}")).await.status(), StatusCode::ACCEPTED);
    let v: Value = app.get("/api/v1/repositories/hist/cascade/tags/one/history").await.json().await.unwrap();
    assert_eq!(v["events"][0]["action"], "delete");
    assert_eq!(v["events"][0]["from"], d);
}

#[tokio::test]
async fn history_paginates_with_a_cursor() {
    let app = spawn_mutable().await;
    let mut digests = vec![];
    for n in 0..5 {
        digests.push(push_n(&app, "hist/page", "t", n).await);
    }
    let mut seen = vec![];
    let mut url = "/api/v1/repositories/hist/page/tags/t/history?limit=2".to_string();
    loop {
        let r = app.get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        let events = v["events"].as_array().unwrap();
        assert!(events.len() <= 2);
        seen.extend(events.iter().map(|e| e["to"].as_str().unwrap().to_string()));
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert!(link.unwrap().contains(&format!("cursor={c}")));
                url = format!("/api/v1/repositories/hist/page/tags/t/history?limit=2&cursor={c}");
            }
            None => break,
        }
    }
    digests.reverse();
    assert_eq!(seen, digests, "every event once, newest first");
    assert_problem(
        app.get("/api/v1/repositories/hist/page/tags/t/history?limit=0").await,
        StatusCode::BAD_REQUEST,
        "UNSUPPORTED",
    )
    .await;
    assert_problem(
        app.get("/api/v1/repositories/hist/page/tags/t/history?cursor=x").await,
        StatusCode::BAD_REQUEST,
        "UNSUPPORTED",
    )
    .await;
    assert_problem(
        app.get("/api/v1/repositories/hist/page/tags/never/history").await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn tag_at_a_moment_answers_what_it_pointed_to_then() {
    let clock = std::sync::Arc::new(cairn::clock::ManualClock::new(std::time::SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |c| {
        c.immutability.rules = vec![rule(None, "**", &["*"], cairn::policy::Mode::Mutable)]
    })
    .await;
    let before = time::OffsetDateTime::from(clock.now()).format(&time::format_description::well_known::Rfc3339);
    let before = before.unwrap();
    clock.advance(Duration::from_secs(5));
    let a = push_n(&app, "hist/at", "prod", 1).await;
    clock.advance(Duration::from_secs(5));
    let between = time::OffsetDateTime::from(clock.now());
    clock.advance(Duration::from_secs(5));
    let b = push_n(&app, "hist/at", "prod", 2).await;
    let at = |t: String| {
        let url = app.url(&format!("/api/v1/repositories/hist/at/tags/prod?at={}", urlencode(&t)));
        app.http.get(url).send()
    };
    let v: Value = at(before).await.unwrap().json().await.unwrap();
    assert_eq!(v["digest"], Value::Null, "did not exist yet");
    let fmt = &time::format_description::well_known::Rfc3339;
    let v: Value = at(between.format(fmt).unwrap()).await.unwrap().json().await.unwrap();
    assert_eq!(v["digest"], a);
    // The same moment written with another offset gives the same answer.
    let shifted = between.to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap()).format(fmt).unwrap();
    let v: Value = at(shifted).await.unwrap().json().await.unwrap();
    assert_eq!(v["digest"], a);
    let v: Value = app.get("/api/v1/repositories/hist/at/tags/prod").await.json().await.unwrap();
    assert_eq!(v["digest"], b, "without `at`: now");
    assert_eq!(v["mode"], "mutable");
    assert_problem(at("yesterday".into()).await.unwrap(), StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert_problem(app.get("/api/v1/repositories/Bad/tags/prod").await, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
