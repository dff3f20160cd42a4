//! Content management workflow (distribution-spec v1.1 "Content Management"): deleting
//! manifests by digest and tags (end-9), deleting blobs (end-10), and the 404s for deleting
//! what is not there.

use reqwest::{Method, StatusCode};

use crate::helpers::*;

#[tokio::test]
async fn delete_manifest_by_digest_returns_202_then_manifest_is_unknown() {
    let r = Reg::start();
    let repo = unique_repo("manage");
    r.push_image(&repo, Some("kept")).await;
    // Untagged, so that no (immutable) tag protects it.
    let img = r.push_image(&repo, None).await;

    let resp = r.req(Method::DELETE, &format!("/v2/{repo}/manifests/{}", img.digest)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r.get_manifest(&repo, &img.digest).await;
    assert_error(resp, StatusCode::NOT_FOUND, &["MANIFEST_UNKNOWN"]).await;
    assert_eq!(r.head_manifest(&repo, &img.digest).await, StatusCode::NOT_FOUND);
    assert_eq!(r.head_manifest(&repo, "kept").await, StatusCode::OK, "other manifest");
}

#[tokio::test]
async fn delete_tag_returns_202_and_removes_only_the_tag() {
    // Cairn's tags are immutable by default (DESIGN §4): this check runs it with a rule
    // making every tag mutable.
    let r = Reg::start_with_mutable_tags();
    let repo = unique_repo("manage");
    let img = r.push_image(&repo, Some("keep")).await;
    r.push_manifest(&repo, Some("drop"), img.media_type, &img.body).await;

    let resp = r.req(Method::DELETE, &format!("/v2/{repo}/manifests/drop")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r.get_manifest(&repo, "drop").await;
    assert_error(resp, StatusCode::NOT_FOUND, &["MANIFEST_UNKNOWN"]).await;
    assert_eq!(r.tags(&repo).await, Some(vec!["keep".to_string()]), "tags/list");
    assert_eq!(r.head_manifest(&repo, &img.digest).await, StatusCode::OK, "manifest by digest");
    assert_eq!(r.head_manifest(&repo, "keep").await, StatusCode::OK, "other tag");
}

#[tokio::test]
async fn delete_blob_returns_202_then_blob_is_unknown() {
    let r = Reg::start();
    let repo = unique_repo("manage");
    let kept = r.push_blob(&repo, &random_bytes(100)).await;
    let digest = r.push_blob(&repo, &random_bytes(1_000)).await;

    let resp = r.req(Method::DELETE, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["BLOB_UNKNOWN"]).await;
    assert_eq!(r.head_blob(&repo, &digest).await, StatusCode::NOT_FOUND);
    assert_eq!(r.head_blob(&repo, &kept).await, StatusCode::OK, "other blob");
}

#[tokio::test]
async fn delete_unknown_manifest_returns_404_manifest_unknown() {
    let r = Reg::start();
    let repo = unique_repo("manage");
    r.push_image(&repo, Some("present")).await;

    let missing = unknown_digest();
    let resp = r.req(Method::DELETE, &format!("/v2/{repo}/manifests/{missing}")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["MANIFEST_UNKNOWN"]).await;
}

#[tokio::test]
async fn delete_unknown_blob_returns_404_blob_unknown() {
    let r = Reg::start();
    let repo = unique_repo("manage");
    r.push_blob(&repo, &random_bytes(10)).await;

    let missing = unknown_digest();
    let resp = r.req(Method::DELETE, &format!("/v2/{repo}/blobs/{missing}")).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["BLOB_UNKNOWN"]).await;
}
