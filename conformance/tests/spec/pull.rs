//! Pull workflow (distribution-spec v1.1 "Pull"): the `/v2/` version check, fetching and
//! checking blobs (end-2, with `Range`) and manifests (end-3) by tag and digest, the four
//! manifest media types, and the errors for unknown content and malformed names and digests.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn api_version_check_returns_200() {
    let r = Reg::start();
    let resp = r.req(Method::GET, "/v2/").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    if r.is_cairn() {
        assert_eq!(header(&resp, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    }
}

#[tokio::test]
async fn get_blob_returns_200_with_exact_bytes_length_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let data = random_bytes(70_000);
    let digest = r.push_blob(&repo, &data).await;

    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), Some(data.len().to_string()));
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let body = resp.bytes().await.unwrap();
    assert_eq!(digest_of(&body), digest, "body digest");
    assert!(body[..] == data[..], "body differs from the pushed blob");
}

#[tokio::test]
async fn head_blob_returns_200_with_length_and_digest_and_no_body() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let data = random_bytes(3_000);
    let digest = r.push_blob(&repo, &data).await;

    let resp = r.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length"), Some(data.len().to_string()));
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest));
    assert!(resp.bytes().await.unwrap().is_empty(), "HEAD carried a body");
}

#[tokio::test]
async fn get_blob_with_range_returns_206_with_content_range() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let data = random_bytes(10_000);
    let digest = r.push_blob(&repo, &data).await;

    let resp = r
        .req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
        .header("range", "bytes=100-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes 100-1099/10000"));
    assert_eq!(header(&resp, "content-length").as_deref(), Some("1000"));
    let body = resp.bytes().await.unwrap();
    assert!(body[..] == data[100..1100], "range body differs");

    let resp =
        r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).header("range", "bytes=9000-").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::PARTIAL_CONTENT, "open-ended range");
    assert_eq!(header(&resp, "content-range").as_deref(), Some("bytes 9000-9999/10000"));
    assert!(resp.bytes().await.unwrap()[..] == data[9000..], "open-ended range body differs");
}

#[tokio::test]
async fn get_blob_with_unsatisfiable_range_returns_416() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let data = random_bytes(1_000);
    let digest = r.push_blob(&repo, &data).await;

    let resp = r
        .req(Method::GET, &format!("/v2/{repo}/blobs/{digest}"))
        .header("range", "bytes=5000-6000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

#[tokio::test]
async fn get_unknown_blob_returns_404_blob_unknown() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    r.push_blob(&repo, &random_bytes(10)).await;
    let missing = unknown_digest();

    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/{missing}")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["BLOB_UNKNOWN"]).await;
    assert_eq!(r.head_blob(&repo, &missing).await, StatusCode::NOT_FOUND, "HEAD");
}

#[tokio::test]
async fn get_manifest_by_tag_returns_pushed_bytes_type_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let img = r.push_image(&repo, Some("v1")).await;

    let resp = r.get_manifest(&repo, "v1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type").as_deref(), Some(img.media_type));
    assert_eq!(header(&resp, "docker-content-digest"), Some(img.digest.clone()));
    assert!(resp.bytes().await.unwrap()[..] == img.body[..], "manifest body differs");
}

#[tokio::test]
async fn get_manifest_by_digest_returns_pushed_bytes_type_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let img = r.push_image(&repo, None).await;

    let resp = r.get_manifest(&repo, &img.digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type").as_deref(), Some(img.media_type));
    assert_eq!(header(&resp, "docker-content-digest"), Some(img.digest.clone()));
    assert!(resp.bytes().await.unwrap()[..] == img.body[..], "manifest body differs");
}

#[tokio::test]
async fn head_manifest_by_tag_and_digest_returns_200_with_digest_type_and_length() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let img = r.push_image(&repo, Some("v1")).await;

    for reference in ["v1", img.digest.as_str()] {
        let resp = r
            .req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "HEAD {reference}");
        assert_eq!(header(&resp, "docker-content-digest"), Some(img.digest.clone()), "{reference}");
        assert_eq!(header(&resp, "content-type").as_deref(), Some(img.media_type), "{reference}");
        assert_eq!(header(&resp, "content-length"), Some(img.body.len().to_string()), "{reference}");
        assert!(resp.bytes().await.unwrap().is_empty(), "HEAD {reference} carried a body");
    }
}

#[tokio::test]
async fn get_unknown_manifest_returns_404_manifest_unknown() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    r.push_image(&repo, Some("present")).await;

    let missing = unknown_digest();
    for reference in ["absent", missing.as_str()] {
        let resp = r.get_manifest(&repo, reference).await;
        assert_error(resp, StatusCode::NOT_FOUND, &["MANIFEST_UNKNOWN"]).await;
        assert_eq!(r.head_manifest(&repo, reference).await, StatusCode::NOT_FOUND, "HEAD");
    }
}

#[tokio::test]
async fn get_blob_with_invalid_digest_returns_400_digest_invalid() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    r.push_blob(&repo, &random_bytes(10)).await;

    // A sha256 digest must have 64 hex characters.
    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/sha256:abc123")).send().await.unwrap();
    assert_error(resp, StatusCode::BAD_REQUEST, &["DIGEST_INVALID"]).await;
}

/// A malformed name is refused with 400 NAME_INVALID, or 404 NAME_UNKNOWN as the spec allows.
async fn assert_name_refused(resp: reqwest::Response) {
    if resp.status() == StatusCode::NOT_FOUND {
        assert_error(resp, StatusCode::NOT_FOUND, &["NAME_UNKNOWN"]).await;
    } else {
        assert_error(resp, StatusCode::BAD_REQUEST, &["NAME_INVALID"]).await;
    }
}

#[tokio::test]
async fn invalid_repository_name_returns_name_invalid() {
    let r = Reg::start();
    // Upper case is outside `[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*`.
    let name = format!("Conformance/Bad-{}", random_suffix());
    assert_name_refused(r.get_manifest(&name, "latest").await).await;
    let resp =
        r.req(Method::POST, &format!("/v2/{name}/blobs/uploads/")).header("content-length", "0").send().await.unwrap();
    assert_name_refused(resp).await;
    let resp = r.req(Method::GET, &format!("/v2/{name}/tags/list")).send().await.unwrap();
    assert_name_refused(resp).await;
}

async fn assert_round_trip(r: &Reg, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
    let digest = r.push_manifest(repo, Some(tag), media_type, body).await;
    for reference in [tag, digest.as_str()] {
        let resp = r.get_manifest(repo, reference).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {media_type} by {reference}");
        assert_eq!(header(&resp, "content-type").as_deref(), Some(media_type), "{reference}");
        assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()), "{reference}");
        assert!(resp.bytes().await.unwrap()[..] == body[..], "{media_type} body changed");
    }
}

#[tokio::test]
async fn oci_image_manifest_round_trips() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let l1 = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let l2 = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(200)).await;
    let body = image_manifest(
        &config,
        &[l1, l2],
        json!({ "annotations": { "org.opencontainers.image.title": "round trip" } }),
    );
    assert_round_trip(&r, &repo, "oci-image", OCI_MANIFEST, &body).await;
}

#[tokio::test]
async fn oci_image_index_round_trips() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let img = r.push_image(&repo, None).await;
        let mut d = descriptor(OCI_MANIFEST, &img.body);
        d["platform"] = json!({ "os": "linux", "architecture": arch });
        children.push(d);
    }
    let body = index_manifest(OCI_INDEX, &children, json!({}));
    assert_round_trip(&r, &repo, "oci-index", OCI_INDEX, &body).await;
}

async fn push_docker_manifest(r: &Reg, repo: &str) -> Vec<u8> {
    let config = r.push_blob_desc(repo, DOCKER_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(repo, DOCKER_LAYER, &random_bytes(300)).await;
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config,
        "layers": [layer],
    }))
    .unwrap()
}

#[tokio::test]
async fn docker_schema2_manifest_round_trips() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let body = push_docker_manifest(&r, &repo).await;
    assert_round_trip(&r, &repo, "docker-image", DOCKER_MANIFEST, &body).await;
}

#[tokio::test]
async fn docker_manifest_list_round_trips() {
    let r = Reg::start();
    let repo = unique_repo("pull");
    let mut children = Vec::new();
    for arch in ["amd64", "arm64"] {
        let body = push_docker_manifest(&r, &repo).await;
        r.push_manifest(&repo, None, DOCKER_MANIFEST, &body).await;
        let mut d = descriptor(DOCKER_MANIFEST, &body);
        d["platform"] = json!({ "os": "linux", "architecture": arch });
        children.push(d);
    }
    let body = index_manifest(DOCKER_LIST, &children, json!({}));
    assert_round_trip(&r, &repo, "docker-list", DOCKER_LIST, &body).await;
}
