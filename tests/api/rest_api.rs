//! The rest of `/api/v1`: the repositories list (counts, size, last push, paging, what the
//! caller may read), unknown paths and methods as problem+json, and the OpenAPI document.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::audit_api::{AUDIT, push_blob_as, push_image_as, put_manifest_as};
use crate::auth::{Cred, call, spawn_auth, user};
use crate::helpers::*;

#[tokio::test]
async fn unknown_paths_and_methods_are_problems_too() {
    let app = spawn_auth(AUDIT).await;
    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nope",
        "/api/v1/audit",
        "/api/v1/repositories/apps/x",
        "/api/v1/audit/events/1",
    ] {
        let p = assert_problem(call(&app, Method::GET, path, user("aud")).await, StatusCode::NOT_FOUND, "UNSUPPORTED")
            .await;
        assert_eq!(p["type"], "urn:cairn:problem:no-such-endpoint", "{path}");
    }
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let r = call(&app, method.clone(), "/api/v1/audit/events", user("aud")).await;
        assert_eq!(header(&r, "allow").as_deref(), Some("GET, HEAD"), "{method}");
        assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    }
    let r = call(&app, Method::GET, "/api/v1/repositories/apps/x/tags/%FF", user("aud")).await;
    assert_problem(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    let r = call(&app, Method::HEAD, "/api/v1/audit/events", user("aud")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn repositories_list_counts_size_and_last_push_for_what_the_caller_may_read() {
    let app = spawn_auth(AUDIT).await;
    let before = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    // apps/web: two images sharing one layer, three tags; a loose blob.
    let layer = random_bytes(1000);
    let l = push_blob_as(&app, user("root"), "apps/web", &layer).await;
    let mut manifests = vec![];
    for (n, tags) in [(1, vec!["v1", "latest"]), (2, vec!["v2"])] {
        let cfg_bytes = format!(r#"{{"n":{n}}}"#).into_bytes();
        let cfg = push_blob_as(&app, user("root"), "apps/web", &cfg_bytes).await;
        let m = image_manifest(&cfg, cfg_bytes.len() as u64, &[(&l, 1000)], None);
        for t in tags {
            assert_eq!(put_manifest_as(&app, user("root"), "apps/web", t, &m).await.status(), StatusCode::CREATED);
        }
        manifests.push((m, cfg_bytes.len() as u64));
    }
    push_blob_as(&app, user("root"), "apps/web", b"loose").await;
    push_image_as(&app, user("root"), "other/db", "v1", 7).await;
    push_image_as(&app, user("root"), "apps/api", "v1", 8).await;

    let r = call(&app, Method::GET, "/api/v1/repositories", user("aud")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    let names: Vec<&str> = v["repositories"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["apps/api", "apps/web", "other/db"]);
    let web = &v["repositories"][1];
    assert_eq!(web["tag_count"], 3);
    assert_eq!(web["manifest_count"], 2);
    let want: u64 = manifests.iter().map(|(m, c)| m.len() as u64 + c).sum::<u64>() + 1000 + 5;
    assert_eq!(web["size_bytes"], want, "manifests, configs, the shared layer once, the loose blob");
    let last =
        time::OffsetDateTime::parse(web["last_push"].as_str().unwrap(), &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(last >= before && last <= time::OffsetDateTime::now_utc(), "{last}");

    // Readers see what they may pull: dave pulls apps/*; anonymous must sign in.
    let v: Value = call(&app, Method::GET, "/api/v1/repositories", user("dave")).await.json().await.unwrap();
    let names: Vec<&str> = v["repositories"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["apps/api", "apps/web"]);
    assert_problem(
        call(&app, Method::GET, "/api/v1/repositories", Cred::Anon).await,
        StatusCode::UNAUTHORIZED,
        "UNAUTHORIZED",
    )
    .await;

    // Pages of one, with next_cursor and Link.
    let mut url = "/api/v1/repositories?limit=1".to_string();
    let mut seen = vec![];
    loop {
        let r = call(&app, Method::GET, &url, user("root")).await;
        let link = header(&r, "link");
        let v: Value = r.json().await.unwrap();
        seen.push(v["repositories"][0]["name"].as_str().unwrap().to_string());
        match v["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(c, seen.last().unwrap());
                let link = link.unwrap();
                assert_eq!(
                    link,
                    format!("</api/v1/repositories?limit=1&cursor={}>; rel=\"next\"", c.replace('/', "%2F"))
                );
                url = format!("/api/v1/repositories?limit=1&cursor={c}");
            }
            None => break,
        }
    }
    assert_eq!(seen, ["apps/api", "apps/web", "other/db"]);
    let r = call(&app, Method::GET, "/api/v1/repositories?cursor=Not_A_Name", user("root")).await;
    assert_problem(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
}

#[tokio::test]
async fn the_openapi_document_is_public_and_describes_every_endpoint() {
    let app = spawn_auth(AUDIT).await;
    let r = app.get("/api/v1/openapi.json").await;
    assert_eq!(r.status(), StatusCode::OK);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/api/v1/repositories",
        "/api/v1/repositories/{name}/tags/{tag}/history",
        "/api/v1/repositories/{name}/tags/{tag}",
        "/api/v1/repositories/{name}/artifacts/{digest}",
        "/api/v1/audit/events",
        "/api/v1/audit/checkpoints",
        "/api/v1/audit/public-key",
        "/api/v1/policies/immutability",
        "/api/v1/openapi.json",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    let problem = &doc["components"]["schemas"]["Problem"]["properties"];
    for field in ["type", "title", "status", "detail"] {
        assert!(problem.get(field).is_some(), "Problem lacks {field}");
    }
}
