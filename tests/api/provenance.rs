//! `/api/v1/repositories/{name}/artifacts/{digest}` (DESIGN §7): the provenance of one
//! manifest — media type, size, config labels, tags now and before with actors, who pushed
//! it, referrers by kind, pulls, ledger events — and who may read it.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::audit_api::{AUDIT, push_blob_as, push_image_as, put_manifest_as};
use crate::auth::{Cred, call, spawn_auth, user};
use crate::helpers::*;

async fn provenance(app: &TestApp, cred: Cred<'_>, repo: &str, digest: &str) -> Value {
    let r = call(app, Method::GET, &format!("/api/v1/repositories/{repo}/artifacts/{digest}"), cred).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// A manifest with `subject` and `artifactType`, pushed by digest as `cred`; returns its digest.
async fn push_referrer(
    app: &TestApp,
    cred: Cred<'_>,
    repo: &str,
    subject: &str,
    artifact_type: &str,
    tag: Option<&str>,
) -> String {
    let empty = push_blob_as(app, cred, repo, b"{}").await;
    let payload = push_blob_as(app, cred, repo, format!("payload of {artifact_type}").as_bytes()).await;
    let m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": artifact_type, "digest": payload, "size": 16 + artifact_type.len() }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": 100 },
        "annotations": { "org.opencontainers.image.created": "2026-02-01T00:00:00Z" },
    });
    let body = serde_json::to_vec(&m).unwrap();
    let d = digest(&body);
    let r = put_manifest_as(app, cred, repo, tag.unwrap_or(&d), &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    d
}

#[tokio::test]
async fn the_provenance_of_an_image_tells_its_whole_story() {
    let app = spawn_auth(AUDIT).await;
    let repo = "apps/web";
    let config = json!({
        "architecture": "arm64", "os": "linux", "created": "2026-01-31T12:00:00Z",
        "config": { "Labels": {
            "org.opencontainers.image.source": "https://git.example.com/web",
            "org.opencontainers.image.revision": "0123abcd",
            "maintainer": "team-web",
        } },
        "rootfs": { "type": "layers", "diff_ids": [] },
    });
    let config = serde_json::to_vec(&config).unwrap();
    let cfg = push_blob_as(&app, user("wri"), repo, &config).await;
    let layer = random_bytes(2048);
    let l = push_blob_as(&app, user("wri"), repo, &layer).await;
    let image = image_manifest(&cfg, config.len() as u64, &[(&l, 2048)], None);
    let d = digest(&image);
    // Pushed as v1 by wri, tagged latest by root, then latest moves on (by root).
    assert_eq!(put_manifest_as(&app, user("wri"), repo, "v1", &image).await.status(), StatusCode::CREATED);
    assert_eq!(put_manifest_as(&app, user("root"), repo, "latest", &image).await.status(), StatusCode::CREATED);
    let newer = push_image_as(&app, user("root"), repo, "latest", 2).await;
    // An SBOM and a signature as referrers; an attestation by cosign's tag scheme.
    let sbom = push_referrer(&app, user("wri"), repo, &d, "application/spdx+json", None).await;
    let sig = push_referrer(&app, user("wri"), repo, &d, "application/vnd.dev.cosign.artifact.sig.v1+json", None).await;
    let att_tag = format!("sha256-{}.att", d.trim_start_matches("sha256:"));
    let att = push_referrer(&app, user("wri"), repo, &d, "application/vnd.in-toto+json", Some(&att_tag)).await;
    let other = push_referrer(&app, user("wri"), repo, &d, "example/thing", None).await;
    // Two pulls (HEAD is not a pull), counted after a flush.
    for _ in 0..2 {
        assert_eq!(
            call(&app, Method::GET, &format!("/v2/{repo}/manifests/v1"), user("dave")).await.status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        call(&app, Method::HEAD, &format!("/v2/{repo}/manifests/v1"), user("dave")).await.status(),
        StatusCode::OK
    );
    app.state.registry.flush_pulls().await.unwrap();

    let v = provenance(&app, user("aud"), repo, &d).await;
    assert_eq!(v["repository"], repo);
    assert_eq!(v["digest"], d);
    assert_eq!(v["media_type"], OCI_MANIFEST);
    assert_eq!(v["size"], image.len());
    assert_eq!(v["total_size"], image.len() + config.len() + 2048);
    assert_eq!(v["artifact_type"], "application/vnd.oci.image.config.v1+json");
    assert_eq!(v["subject"], Value::Null);

    let c = &v["config"];
    assert_eq!(c["digest"], cfg);
    assert_eq!(c["source"], "https://git.example.com/web");
    assert_eq!(c["revision"], "0123abcd");
    assert_eq!(c["created"], "2026-01-31T12:00:00Z");
    assert_eq!((c["os"].as_str(), c["architecture"].as_str()), (Some("linux"), Some("arm64")));
    assert_eq!(c["labels"]["maintainer"], "team-web", "every label");
    assert_eq!(c["labels"].as_object().unwrap().len(), 3);
    assert_eq!(c["note"], Value::Null);

    // Tags now (v1, set by wri) and before (latest, set by root, moved away by root).
    let tags = v["tags"].as_array().unwrap();
    assert_eq!(tags.len(), 1, "{}", json!(tags));
    assert_eq!((tags[0]["tag"].as_str(), tags[0]["actor"].as_str()), (Some("v1"), Some("wri")));
    let history: Vec<(String, String, String)> = v["tag_history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["tag"].as_str().unwrap().into(),
                h["action"].as_str().unwrap().into(),
                h["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let own = |t: &str, a: &str, who: &str| (t.to_string(), a.to_string(), who.to_string());
    assert_eq!(history, [own("v1", "create", "wri"), own("latest", "create", "root"), own("latest", "move", "root")]);
    let moved = &v["tag_history"][2];
    assert_eq!((&moved["from"], &moved["to"]), (&json!(d), &json!(newer)));
    assert!(moved["time"].as_str().unwrap() >= v["tag_history"][1]["time"].as_str().unwrap());

    // Who pushed it: the manifest.put event.
    let pushed = &v["pushed"];
    assert_eq!((pushed["actor"].as_str(), pushed["address"].as_str()), (Some("wri"), Some("127.0.0.1")));
    let put = v["events"].as_array().unwrap().iter().find(|e| e["action"] == "manifest.put").unwrap();
    assert_eq!(pushed["seq"], put["seq"]);
    assert_eq!(pushed["time"], put["time"]);

    // Referrers by kind.
    let kinds = &v["referrers"];
    let digests = |k: &str| {
        kinds[k].as_array().unwrap().iter().map(|r| r["digest"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(digests("sboms"), std::slice::from_ref(&sbom));
    assert_eq!(digests("signatures"), [sig]);
    assert_eq!(digests("other"), [other]);
    // The attestation has a subject and a cosign-style tag: found both ways.
    assert!(digests("attestations").iter().all(|a| a == &att) && !digests("attestations").is_empty());
    assert!(kinds["attestations"].as_array().unwrap().iter().any(|r| r["tag"] == att_tag));
    assert_eq!(kinds["sboms"][0]["artifact_type"], "application/spdx+json");
    assert_eq!(kinds["sboms"][0]["annotations"]["org.opencontainers.image.created"], "2026-02-01T00:00:00Z");

    // Pulls.
    assert_eq!(v["pulls"]["count"], 2);
    assert!(v["pulls"]["last"].as_str().is_some_and(|t| t > pushed["time"].as_str().unwrap()));

    // The ledger events that concern it, in seq order.
    let events: Vec<(&str, &str)> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["actor"].as_str().unwrap()))
        .collect();
    assert_eq!(events, [("manifest.put", "wri"), ("tag.create", "wri"), ("tag.create", "root"), ("tag.move", "root")]);
    assert_eq!(v["events_complete"], true);

    // The SBOM's own provenance names its subject.
    let s = provenance(&app, user("aud"), repo, &sbom).await;
    assert_eq!(s["subject"], d);
    assert_eq!(s["config"]["note"].as_str().map(|n| n.contains("not an image config")), Some(true), "{s}");
    assert_eq!(s["pulls"], json!({ "count": 0, "last": null }));
}

#[tokio::test]
async fn an_index_lists_its_platforms_and_a_huge_config_is_not_read() {
    let app = spawn_auth(AUDIT).await;
    let repo = "apps/multi";
    let big =
        format!(r#"{{"architecture":"amd64","os":"linux","config":{{"Labels":{{"x":"{}"}}}}}}"#, "y".repeat(1 << 20));
    let cfg = push_blob_as(&app, user("root"), repo, big.as_bytes()).await;
    let image = image_manifest(&cfg, big.len() as u64, &[], None);
    let d = digest(&image);
    assert_eq!(put_manifest_as(&app, user("root"), repo, &d, &image).await.status(), StatusCode::CREATED);
    let v = provenance(&app, user("aud"), repo, &d).await;
    assert!(v["config"]["note"].as_str().unwrap().contains("over the 1048576-byte limit"), "{}", v["config"]);
    assert_eq!(v["config"]["labels"], json!({}));

    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [{ "mediaType": OCI_MANIFEST, "digest": d, "size": image.len(),
                        "platform": { "os": "linux", "architecture": "arm", "variant": "v7" } }],
    });
    let body = serde_json::to_vec(&index).unwrap();
    let r = req_put(&app, repo, "multi", OCI_INDEX, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v = provenance(&app, user("aud"), repo, &digest(&body)).await;
    assert_eq!(v["config"], Value::Null);
    assert_eq!(v["total_size"], Value::Null);
    assert_eq!(
        v["manifests"],
        json!([{ "digest": d, "media_type": OCI_MANIFEST, "size": image.len(), "platform": "linux/arm/v7" }])
    );
    assert_eq!(v["tags"][0]["tag"], "multi");
}

async fn req_put(app: &TestApp, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> reqwest::Response {
    crate::auth::req(app, Method::PUT, &format!("/v2/{repo}/manifests/{reference}"), user("root"))
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn readers_see_the_provenance_of_repositories_they_may_pull() {
    let app = spawn_auth(AUDIT).await;
    let mine = push_image_as(&app, user("root"), "apps/web", "v1", 1).await;
    let theirs = push_image_as(&app, user("root"), "other/db", "v1", 2).await;
    let path = |repo: &str, d: &str| format!("/api/v1/repositories/{repo}/artifacts/{d}");
    // dave may pull apps/*: yes there, no elsewhere; the same for tag history.
    assert_eq!(call(&app, Method::GET, &path("apps/web", &mine), user("dave")).await.status(), StatusCode::OK);
    let p = assert_problem(
        call(&app, Method::GET, &path("other/db", &theirs), user("dave")).await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("other/db"), "{p}");
    assert_eq!(
        call(&app, Method::GET, "/api/v1/repositories/apps/web/tags/v1/history", user("dave")).await.status(),
        StatusCode::OK
    );
    assert_problem(
        call(&app, Method::GET, "/api/v1/repositories/other/db/tags/v1/history", user("dave")).await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    // The answer is the same whether or not the repository exists.
    let missing = digest(b"nothing");
    assert_problem(
        call(&app, Method::GET, &path("other/none", &missing), user("dave")).await,
        StatusCode::FORBIDDEN,
        "DENIED",
    )
    .await;
    // Roles: reader, writer, auditor and admin read both; anonymous must sign in.
    for who in ["rea", "wri", "aud", "root"] {
        assert_eq!(
            call(&app, Method::GET, &path("other/db", &theirs), user(who)).await.status(),
            StatusCode::OK,
            "{who}"
        );
    }
    let r = call(&app, Method::GET, &path("apps/web", &mine), Cred::Anon).await;
    assert!(header(&r, "www-authenticate").is_some());
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // A reader's bearer token reads the repositories its scope covers.
    let (t, _) = crate::auth::token_for(&app, user("rea"), &["repository:apps/web:pull"]).await;
    assert_eq!(call(&app, Method::GET, &path("apps/web", &mine), Cred::Bearer(&t)).await.status(), StatusCode::OK);
    let r = call(&app, Method::GET, &path("other/db", &theirs), Cred::Bearer(&t)).await;
    assert!(header(&r, "www-authenticate").is_some_and(|c| c.contains("insufficient_scope")));
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn unknown_and_malformed_artifacts_are_problems() {
    let app = spawn_auth(AUDIT).await;
    let d = push_image_as(&app, user("root"), "apps/web", "v1", 1).await;
    let layerless = image_manifest(&digest(b"x"), 1, &[], None);
    for (path, status, code) in [
        (
            format!("/api/v1/repositories/apps/web/artifacts/{}", digest(&layerless)),
            StatusCode::NOT_FOUND,
            "MANIFEST_UNKNOWN",
        ),
        (format!("/api/v1/repositories/apps/other/artifacts/{d}"), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        ("/api/v1/repositories/apps/web/artifacts/sha256:abc".into(), StatusCode::BAD_REQUEST, "DIGEST_INVALID"),
        (format!("/api/v1/repositories/Apps/artifacts/{d}"), StatusCode::BAD_REQUEST, "NAME_INVALID"),
    ] {
        let p = assert_problem(call(&app, Method::GET, &path, user("aud")).await, status, code).await;
        assert!(p["detail"].as_str().unwrap().len() > 10, "{path}: {p}");
    }
    // A blob's digest is not an artifact.
    let blob = push_blob_as(&app, user("root"), "apps/web", b"a blob").await;
    let r = call(&app, Method::GET, &format!("/api/v1/repositories/apps/web/artifacts/{blob}"), user("aud")).await;
    assert_problem(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}
