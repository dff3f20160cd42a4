//! Manifests: the four media types, PUT/GET/HEAD/DELETE by tag and digest, references that
//! must exist, `?tag=`, `subject`, size cap, and every refusal storing nothing.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn put_by_tag_then_get_and_head_by_tag_and_digest() {
    let app = spawn_app().await;
    let (m, d) = app.push_image("img/app", "v1").await;
    for reference in ["v1", d.as_str()] {
        let r = app.get(&format!("/v2/img/app/manifests/{reference}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "content-type").as_deref(), Some(OCI_MANIFEST));
        assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
        assert_eq!(header(&r, "etag"), Some(format!("\"{d}\"")));
        assert_eq!(r.bytes().await.unwrap().as_ref(), m.as_slice());
        let h = app.head(&format!("/v2/img/app/manifests/{reference}")).await;
        assert_eq!(h.status(), StatusCode::OK);
        assert_eq!(header(&h, "content-length"), Some(m.len().to_string()));
        assert_eq!(header(&h, "docker-content-digest").as_deref(), Some(d.as_str()));
    }
}

#[tokio::test]
async fn put_by_digest_returns_location_and_digest() {
    let app = spawn_app().await;
    let c = app.push_blob("bd", b"{}").await;
    let m = image_manifest(&c, 2, &[], None);
    let d = digest(&m);
    let r = app.put_manifest("bd", &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/bd/manifests/{d}"));
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
    assert!(app.tags("bd").await.is_empty());
}

#[tokio::test]
async fn every_supported_media_type_round_trips() {
    let app = spawn_app().await;
    let repo = "types";
    let cfg = app.push_blob(repo, b"{\"os\":\"linux\"}").await;
    let layer = app.push_blob(repo, &random_bytes(64)).await;
    let docker = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": cfg, "size": 15},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": layer, "size": 64}]
    }))
    .unwrap();
    let oci = image_manifest(&cfg, 15, &[(&layer, 64)], None);
    for (tag, mt, body) in [("docker", DOCKER_MANIFEST, &docker), ("oci", OCI_MANIFEST, &oci)] {
        assert_eq!(app.put_manifest(repo, tag, mt, body).await.status(), StatusCode::CREATED);
    }
    let list = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": DOCKER_LIST,
        "manifests": [{"mediaType": DOCKER_MANIFEST, "digest": digest(&docker), "size": docker.len(),
                        "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(&oci), "size": oci.len(),
                        "platform": {"architecture": "arm64", "os": "linux"}}]
    }))
    .unwrap();
    for (tag, mt, body) in [("list", DOCKER_LIST, &list), ("index", OCI_INDEX, &index)] {
        assert_eq!(app.put_manifest(repo, tag, mt, body).await.status(), StatusCode::CREATED);
    }
    for (tag, mt, body) in [
        ("docker", DOCKER_MANIFEST, &docker),
        ("oci", OCI_MANIFEST, &oci),
        ("list", DOCKER_LIST, &list),
        ("index", OCI_INDEX, &index),
    ] {
        let r = app.get(&format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(header(&r, "content-type").as_deref(), Some(mt));
        assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());
    }
}

#[tokio::test]
async fn missing_blob_is_manifest_blob_unknown_and_nothing_is_stored() {
    let app = spawn_app().await;
    let cfg = app.push_blob("mbu", b"{}").await;
    let missing = digest(b"not pushed");
    let m = image_manifest(&cfg, 2, &[(&missing, 10)], None);
    let body = assert_error(
        app.put_manifest("mbu", "v1", OCI_MANIFEST, &m).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert_eq!(body["errors"][0]["detail"]["digest"], missing);
    assert_error(app.get("/v2/mbu/manifests/v1").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(
        app.get(&format!("/v2/mbu/manifests/{}", digest(&m))).await,
        StatusCode::NOT_FOUND,
        "MANIFEST_UNKNOWN",
    )
    .await;
    assert!(app.tags("mbu").await.is_empty());
    // A blob in another repository does not count either.
    let elsewhere = app.push_blob("other", b"layer").await;
    let m = image_manifest(&cfg, 2, &[(&elsewhere, 5)], None);
    assert_error(
        app.put_manifest("mbu", "v1", OCI_MANIFEST, &m).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn index_with_a_missing_child_is_refused() {
    let app = spawn_app().await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": digest(b"nope"), "size": 4}]
    }))
    .unwrap();
    assert_error(
        app.put_manifest("idx", "multi", OCI_INDEX, &index).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
    assert!(app.tags("idx").await.is_empty());
}

#[tokio::test]
async fn invalid_manifests_are_manifest_invalid() {
    let app = spawn_app().await;
    let cfg = app.push_blob("bad", b"{}").await;
    let good = image_manifest(&cfg, 2, &[], None);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (OCI_MANIFEST, b"{not json".to_vec()),
        (OCI_MANIFEST, br#"{"schemaVersion":2}"#.to_vec()),
        (OCI_INDEX, good.clone()),
        ("application/vnd.docker.distribution.manifest.v1+prettyjws", br#"{"schemaVersion":1,"name":"bad","tag":"x","fsLayers":[]}"#.to_vec()),
        ("text/plain", good.clone()),
        (OCI_MANIFEST, br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"x","digest":"sha256:nothex","size":1},"layers":[]}"#.to_vec()),
    ];
    for (mt, body) in cases {
        let r = app.put_manifest("bad", "t", mt, &body).await;
        assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_INVALID").await;
    }
    assert!(app.tags("bad").await.is_empty());
}

#[tokio::test]
async fn digest_in_url_must_match_the_body() {
    let app = spawn_app().await;
    let cfg = app.push_blob("dm", b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    let wrong = digest(b"other");
    assert_error(app.put_manifest("dm", &wrong, OCI_MANIFEST, &m).await, StatusCode::BAD_REQUEST, "DIGEST_INVALID")
        .await;
    assert_error(app.get(&format!("/v2/dm/manifests/{}", digest(&m))).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        .await;
}

#[tokio::test]
async fn oversize_manifest_is_413_and_not_stored() {
    let app = spawn_app().await;
    let cfg = app.push_blob("big", b"{}").await;
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(&cfg, 2, &[], None)).unwrap();
    m["annotations"] = json!({ "pad": "x".repeat(4 * 1024 * 1024) });
    let body = serde_json::to_vec(&m).unwrap();
    let r = app.put_manifest("big", "huge", OCI_MANIFEST, &body).await;
    assert_error(r, StatusCode::PAYLOAD_TOO_LARGE, "SIZE_INVALID").await;
    assert!(app.tags("big").await.is_empty());
    // Just under the cap is accepted.
    m["annotations"] = json!({ "pad": "x".repeat(4 * 1024 * 1024 - 400) });
    let body = serde_json::to_vec(&m).unwrap();
    assert!(body.len() <= 4 << 20);
    assert_eq!(app.put_manifest("big", "almost", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn query_tags_apply_all_or_nothing() {
    let app = spawn_app().await;
    let cfg = app.push_blob("qt", b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    let d = digest(&m);
    let r = app
        .http
        .put(app.url(&format!("/v2/qt/manifests/{d}?tag=a&tag=b&tag=c")))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.tags("qt").await, ["a", "b", "c"]);
    let m2 = image_manifest(&cfg, 2, &[], Some(&d));
    let r = app
        .http
        .put(app.url("/v2/qt/manifests/d?tag=e&tag=-bad"))
        .header("Content-Type", OCI_MANIFEST)
        .body(m2)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    assert_eq!(app.tags("qt").await, ["a", "b", "c"]);
}

#[tokio::test]
async fn subject_gives_oci_subject_even_when_absent() {
    let app = spawn_app().await;
    let cfg = app.push_blob("subj", b"{}").await;
    let absent = digest(b"subject not pushed yet");
    let m = image_manifest(&cfg, 2, &[], Some(&absent));
    let r = app.put_manifest("subj", &digest(&m), OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "oci-subject").as_deref(), Some(absent.as_str()));
}

#[tokio::test]
async fn delete_by_digest_removes_its_tags_and_by_tag_only_the_tag() {
    let app = spawn_mutable().await;
    let (_, d) = app.push_image("del", "one").await;
    let r = app
        .http
        .put(app.url(&format!("/v2/del/manifests/{d}?tag=two")))
        .header("Content-Type", OCI_MANIFEST)
        .body(app.get(&format!("/v2/del/manifests/{d}")).await.bytes().await.unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.tags("del").await, ["one", "two"]);
    assert_eq!(app.delete("/v2/del/manifests/one").await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.tags("del").await, ["two"]);
    assert_eq!(app.get(&format!("/v2/del/manifests/{d}")).await.status(), StatusCode::OK);
    assert_eq!(app.delete(&format!("/v2/del/manifests/{d}")).await.status(), StatusCode::ACCEPTED);
    assert_error(app.get(&format!("/v2/del/manifests/{d}")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(app.get("/v2/del/manifests/two").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(app.delete(&format!("/v2/del/manifests/{d}")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(app.delete("/v2/del/manifests/nope").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn bad_references_in_the_url() {
    let app = spawn_app().await;
    // A reference that is neither a tag nor a digest names no manifest: 404 on reads.
    assert_error(app.get("/v2/r/manifests/-x").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(app.get("/v2/r/manifests/sha256:12").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_error(app.get("/v2/R/manifests/latest").await, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    assert_error(app.get("/v2/r/manifests/latest").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn identical_repush_is_accepted() {
    let app = spawn_app().await;
    let (m, d) = app.push_image("again", "v1").await;
    let r = app.put_manifest("again", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
}
