//! "Listing Referrers" (distribution-spec v1.1): "If the `artifactType` is empty or missing in
//! the image manifest, the value of `artifactType` MUST be set to the config descriptor
//! `mediaType` value. If the `artifactType` is empty or missing in an index, the
//! `artifactType` MUST be omitted."

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::*;

async fn referrers(r: &Reg, repo: &str, subject: &str) -> Vec<serde_json::Value> {
    let resp = r.req(Method::GET, &format!("/v2/{repo}/referrers/{subject}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    json_body(resp).await["manifests"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn referrer_manifest_with_empty_artifact_type_lists_the_config_media_type() {
    let r = Reg::start();
    let repo = unique_repo("atype");
    let subject = r.push_image(&repo, None).await;
    let config = r.push_blob_desc(&repo, "application/vnd.example.sbom.config", b"{}").await;
    let body = image_manifest(
        &config,
        &[],
        json!({ "artifactType": "", "subject": { "mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.body.len() } }),
    );
    let digest = r.push_manifest(&repo, None, OCI_MANIFEST, &body).await;
    let list = referrers(&r, &repo, &subject.digest).await;
    let entry = list.iter().find(|m| m["digest"] == digest.as_str()).expect("the referrer is listed");
    assert_eq!(entry["artifactType"], "application/vnd.example.sbom.config");
}

#[tokio::test]
async fn referrer_index_with_empty_artifact_type_omits_it() {
    let r = Reg::start();
    let repo = unique_repo("atype");
    let subject = r.push_image(&repo, None).await;
    let child = r.push_image(&repo, None).await;
    let body = index_manifest(
        OCI_INDEX,
        &[json!({ "mediaType": OCI_MANIFEST, "digest": child.digest, "size": child.body.len() })],
        json!({ "artifactType": "", "subject": { "mediaType": OCI_MANIFEST, "digest": subject.digest, "size": subject.body.len() } }),
    );
    let digest = r.push_manifest(&repo, None, OCI_INDEX, &body).await;
    let list = referrers(&r, &repo, &subject.digest).await;
    let entry = list.iter().find(|m| m["digest"] == digest.as_str()).expect("the referrer is listed");
    assert!(entry.get("artifactType").is_none(), "artifactType must be omitted: {entry}");
}
