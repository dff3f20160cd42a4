//! What a registry answers when it will not do something, or when nothing can be found:
//! - "Content Management": a delete the registry will not carry out MUST answer 400 or 405
//!   (end-9, end-10), never 409 or 403 for a refusal by policy.
//! - "Pulling manifests" / "Pulling blobs": what is not found MUST answer 404, including a
//!   reference that could never name a manifest and a digest of an algorithm the registry
//!   holds nothing under.
//!
//! Cairn refuses to delete an immutable tag, a manifest such a tag points to, and a blob that a
//! manifest of the repository uses (DESIGN §4); another registry may delete them, so for it the
//! delete checks accept 202 as well.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

/// A refusal must be 400 or 405 with a spec error body; anything else but 202 is wrong.
async fn assert_delete_refused_or_done(r: &Reg, path: &str) {
    let resp = r.req(Method::DELETE, path).send().await.unwrap();
    let status = resp.status();
    if !r.is_cairn() && status == StatusCode::ACCEPTED {
        return;
    }
    let want = if r.is_cairn() { StatusCode::METHOD_NOT_ALLOWED } else { status };
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::METHOD_NOT_ALLOWED,
        "DELETE {path}: a refused delete must be 400 or 405, got {status}"
    );
    assert_error(resp, want, &["DENIED", "UNSUPPORTED"]).await;
}

#[tokio::test]
async fn refused_delete_of_a_tag_returns_400_or_405() {
    let r = Reg::start();
    let repo = unique_repo("refuse");
    r.push_image(&repo, Some("v1")).await;
    assert_delete_refused_or_done(&r, &format!("/v2/{repo}/manifests/v1")).await;
}

#[tokio::test]
async fn refused_delete_of_a_manifest_returns_400_or_405() {
    let r = Reg::start();
    let repo = unique_repo("refuse");
    let img = r.push_image(&repo, Some("v1")).await;
    assert_delete_refused_or_done(&r, &format!("/v2/{repo}/manifests/{}", img.digest)).await;
}

#[tokio::test]
async fn refused_delete_of_a_referenced_blob_returns_400_or_405() {
    let r = Reg::start();
    let repo = unique_repo("refuse");
    let config = random_config();
    let layer = random_bytes(300);
    let c = r.push_blob_desc(&repo, OCI_CONFIG, &config).await;
    let l = r.push_blob_desc(&repo, OCI_LAYER, &layer).await;
    r.push_manifest(&repo, Some("v1"), OCI_MANIFEST, &image_manifest(&c, &[l], json!({}))).await;
    assert_delete_refused_or_done(&r, &format!("/v2/{repo}/blobs/{}", digest_of(&layer))).await;
    if r.is_cairn() {
        // Cairn: the image stays complete.
        assert_eq!(r.head_blob(&repo, &digest_of(&layer)).await, StatusCode::OK);
        assert_eq!(r.head_blob(&repo, &digest_of(&config)).await, StatusCode::OK);
    }
}

#[tokio::test]
async fn get_head_delete_of_a_reference_that_is_not_a_tag_or_digest_return_404() {
    let r = Reg::start();
    let repo = unique_repo("notfound");
    r.push_image(&repo, Some("v1")).await;
    for reference in [".INVALID_MANIFEST_NAME".to_string(), "a".repeat(200), "-starts-with-dash".to_string()] {
        let path = format!("/v2/{repo}/manifests/{reference}");
        for method in [Method::GET, Method::DELETE] {
            let resp = r.req(method.clone(), &path).header("accept", ACCEPT_MANIFESTS).send().await.unwrap();
            assert_error(resp, StatusCode::NOT_FOUND, &["MANIFEST_UNKNOWN"]).await;
        }
        let resp = r.req(Method::HEAD, &path).header("accept", ACCEPT_MANIFESTS).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }
}

#[tokio::test]
async fn get_head_of_a_blob_by_a_digest_of_an_unheld_algorithm_return_404() {
    let r = Reg::start();
    let repo = unique_repo("notfound");
    r.push_blob(&repo, &random_bytes(10)).await;
    let digest = format!("sha384:{}", "0".repeat(96));
    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["BLOB_UNKNOWN"]).await;
    assert_eq!(r.head_blob(&repo, &digest).await, StatusCode::NOT_FOUND);
}
