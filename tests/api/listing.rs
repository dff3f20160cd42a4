//! Tags list, catalog and referrers: sorting, pagination with `Link`, filtering.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn tag_many(app: &TestApp, repo: &str, tags: &[&str]) {
    let cfg = app.push_blob(repo, b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    for t in tags {
        assert_eq!(app.put_manifest(repo, t, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    }
}

#[tokio::test]
async fn tags_are_sorted_and_paginated_with_link() {
    let app = spawn_app().await;
    tag_many(&app, "pg", &["b", "a", "C", "v1.10", "v1.9", "_x"]).await;
    assert_eq!(app.tags("pg").await, ["C", "_x", "a", "b", "v1.10", "v1.9"]);
    let mut seen = vec![];
    let mut next = Some("/v2/pg/tags/list?n=4".to_string());
    while let Some(url) = next.take() {
        let r = app.get(&url).await;
        assert_eq!(r.status(), StatusCode::OK);
        if let Some(link) = header(&r, "link") {
            assert!(link.ends_with("; rel=\"next\""), "{link}");
            next = Some(link[1..link.find('>').unwrap()].to_string());
        }
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["name"], "pg");
        seen.extend(v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()));
    }
    assert_eq!(seen, ["C", "_x", "a", "b", "v1.10", "v1.9"]);
    let v: Value = app.get("/v2/pg/tags/list?n=2&last=a").await.json().await.unwrap();
    assert_eq!(v["tags"], json!(["b", "v1.10"]));
    let r = app.get("/v2/pg/tags/list?n=0").await;
    assert!(header(&r, "link").is_none());
    assert_eq!(r.json::<Value>().await.unwrap()["tags"], json!([]));
    let r = app.get("/v2/pg/tags/list?n=6").await;
    assert!(header(&r, "link").is_none(), "no Link when nothing follows");
}

#[tokio::test]
async fn tags_of_unknown_repository_and_bad_n() {
    let app = spawn_app().await;
    assert_error(app.get("/v2/nobody/tags/list").await, StatusCode::NOT_FOUND, "NAME_UNKNOWN").await;
    tag_many(&app, "n", &["x"]).await;
    assert_error(app.get("/v2/n/tags/list?n=abc").await, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert_error(app.get("/v2/n/tags/list?n=-1").await, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
}

#[tokio::test]
async fn catalog_is_sorted_and_paginated() {
    let app = spawn_app().await;
    for repo in ["zeta", "alpha/one", "alpha/two", "mid"] {
        app.push_blob(repo, b"x").await;
    }
    // An upload that never finished does not create a repository.
    app.start_upload("ghost").await;
    let v: Value = app.get("/v2/_catalog").await.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["alpha/one", "alpha/two", "mid", "zeta"]));
    let r = app.get("/v2/_catalog?n=3").await;
    let link = header(&r, "link").unwrap();
    assert_eq!(link, "</v2/_catalog?n=3&last=mid>; rel=\"next\"");
    let v: Value = app.get("/v2/_catalog?n=3&last=mid").await.json().await.unwrap();
    assert_eq!(v["repositories"], json!(["zeta"]));
}

#[tokio::test]
async fn referrers_list_filter_and_annotations() {
    let app = spawn_app().await;
    let (_, subject) = app.push_image("ref", "v1").await;
    let empty = app.push_blob("ref", b"{}").await;
    let mut pushed = vec![];
    for (artifact_type, note) in
        [("application/spdx+json", "sbom"), ("application/vnd.dev.cosign.artifact.sig.v1+json", "sig")]
    {
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": 1},
            "annotations": {"note": note}
        }))
        .unwrap();
        let r = app.put_manifest("ref", &digest(&m), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "oci-subject").as_deref(), Some(subject.as_str()));
        pushed.push((digest(&m), m.len()));
    }
    // A referrer without artifactType is listed with its config media type.
    let cfg_typed = app.push_blob("ref", b"{\"k\":1}").await;
    let mut m: Value = serde_json::from_slice(&image_manifest(&cfg_typed, 7, &[], Some(&subject))).unwrap();
    m["config"]["mediaType"] = json!("application/x.custom.config");
    let m = serde_json::to_vec(&m).unwrap();
    assert_eq!(app.put_manifest("ref", &digest(&m), OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);

    let r = app.get(&format!("/v2/ref/referrers/{subject}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_INDEX));
    assert!(header(&r, "oci-filters-applied").is_none());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["schemaVersion"], 2);
    assert_eq!(v["mediaType"], OCI_INDEX);
    let list = v["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    for (d, size) in &pushed {
        let e = list.iter().find(|e| e["digest"] == *d).expect("referrer listed");
        assert_eq!(e["size"], *size as u64);
        assert_eq!(e["mediaType"], OCI_MANIFEST);
        assert!(e["annotations"]["note"].is_string());
    }
    assert!(list.iter().any(|e| e["artifactType"] == "application/x.custom.config"));

    let r = app.get(&format!("/v2/ref/referrers/{subject}?artifactType=application/spdx%2Bjson")).await;
    assert_eq!(header(&r, "oci-filters-applied").as_deref(), Some("artifactType"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(v["manifests"][0]["annotations"]["note"], "sbom");
}

#[tokio::test]
async fn referrers_of_a_digest_without_any_is_an_empty_index() {
    let app = spawn_app().await;
    let r = app.get(&format!("/v2/none/referrers/{}", digest(b"x"))).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["manifests"], json!([]));
    assert_error(app.get("/v2/none/referrers/sha256:zz").await, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}
