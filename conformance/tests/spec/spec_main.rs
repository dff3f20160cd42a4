//! Rules of the distribution spec's main branch (newer than v1.1), each named `spec_main_…`:
//! - "Pushing a blob in chunks": a closing PUT whose `Content-Range` does not start where the
//!   upload stands MUST answer 416, and a client gets the session's state with GET afterwards;
//! - "Pushing Manifests with tags": a registry that supports `?tag=` MUST answer with an
//!   `OCI-Tag` header for each accepted tag;
//! - end-4c: a chunked upload of a blob with a digest algorithm other than sha256 opens its
//!   session with `?digest-algorithm=<algorithm>`.
//!
//! Also the v1.1 rule that a mount the registry cannot do falls back to an upload session (202).

use reqwest::{Method, StatusCode};
use serde_json::json;
use sha2::{Digest as _, Sha512};

use crate::helpers::*;

#[tokio::test]
async fn spec_main_closing_put_out_of_order_returns_416_and_the_session_stays() {
    let r = Reg::start();
    let repo = unique_repo("main");
    let data = random_bytes(3_000);
    let digest = digest_of(&data);
    let location = r.start_upload(&repo).await;
    let resp = r
        .req_url(Method::PATCH, location)
        .header("content-type", OCTET_STREAM)
        .header("content-range", "0-999")
        .body(data[..1_000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = r.location(&resp);
    for (start, end) in [(500, 2_499), (2_000, 3_999)] {
        let resp = r
            .req_url(Method::PUT, with_query(location.clone(), "digest", &digest))
            .header("content-type", OCTET_STREAM)
            .header("content-range", format!("{start}-{end}"))
            .body(data[1_000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "closing PUT at {start}");
        // "To get the current status after a 416 error, issue a GET request".
        let status = r.req_url(Method::GET, location.clone()).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::NO_CONTENT, "the session survives the 416");
        assert_eq!(header(&status, "range").as_deref(), Some("0-999"));
    }
    assert_eq!(r.head_blob(&repo, &digest).await, StatusCode::NOT_FOUND, "nothing half-written is visible");
    let resp = r
        .req_url(Method::PUT, with_query(location, "digest", &digest))
        .header("content-type", OCTET_STREAM)
        .header("content-range", "1000-2999")
        .body(data[1_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn spec_main_put_manifest_with_tag_query_returns_oci_tag_per_tag() {
    let r = Reg::start();
    let repo = unique_repo("main");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));
    let digest = digest_of(&body);
    let mut url = r.url(&format!("/v2/{repo}/manifests/{digest}"));
    for t in ["1.2.3", "1.2", "latest"] {
        url = with_query(url, "tag", t);
    }
    let resp = r.req_url(Method::PUT, url).header("content-type", OCI_MANIFEST).body(body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    // RFC 9110 §5: several header lines or one comma-separated line mean the same.
    let mut tags: Vec<String> = resp
        .headers()
        .get_all("oci-tag")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(',').map(|t| t.trim().to_string()).collect::<Vec<_>>())
        .collect();
    tags.sort();
    let applied = r.tags(&repo).await.unwrap_or_default();
    if !r.is_cairn() && applied.is_empty() {
        assert!(tags.is_empty(), "a registry without ?tag= support must not claim tags: {tags:?}");
        return;
    }
    assert_eq!(tags, vec!["1.2", "1.2.3", "latest"], "one OCI-Tag per accepted tag");
}

fn sha512(data: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(data)))
}

#[tokio::test]
async fn spec_main_chunked_upload_with_digest_algorithm_sha512() {
    let r = Reg::start();
    let repo = unique_repo("main");
    let data = random_bytes(5_000);
    let digest = sha512(&data);
    let resp = r
        .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest-algorithm=sha512"))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    if !r.is_cairn() && resp.status() == StatusCode::BAD_REQUEST {
        // sha512 is optional: a registry without it SHOULD answer 400.
        return;
    }
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r
        .req_url(Method::PATCH, r.location(&resp))
        .header("content-type", OCTET_STREAM)
        .header("content-range", "0-4999")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r.finish_upload(r.location(&resp), &digest, b"").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let got = r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap()[..] == data[..], "sha512 blob bytes");
}

#[tokio::test]
async fn sha512_manifest_pushed_and_pulled_by_digest() {
    let r = Reg::start();
    let repo = unique_repo("sha512");
    let config = random_config();
    let layer = random_bytes(200);
    let mut descs = vec![];
    for (mt, data) in [(OCI_CONFIG, &config), (OCI_LAYER, &layer)] {
        let d = sha512(data);
        let resp = r.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}")).body(data.clone()).send();
        let resp = resp.await.unwrap();
        if !r.is_cairn() && resp.status() == StatusCode::BAD_REQUEST {
            return;
        }
        assert_eq!(resp.status(), StatusCode::CREATED, "single-POST sha512 blob");
        descs.push(json!({ "mediaType": mt, "digest": d, "size": data.len() }));
    }
    let body = image_manifest(&descs[0], &descs[1..], json!({}));
    let digest = sha512(&body);
    let resp = r.put_manifest(&repo, &digest, OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let got = r.get_manifest(&repo, &digest).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap()[..] == body[..]);
}

#[tokio::test]
async fn mount_from_an_unusable_repository_returns_202_and_an_upload_session() {
    let r = Reg::start();
    let repo = unique_repo("mount");
    let blob = r.push_blob(&repo, &random_bytes(100)).await;
    for from in ["Invalid..Name", "conformance/does-not-exist-anywhere"] {
        let resp = r
            .req(Method::POST, &format!("/v2/{repo}-target/blobs/uploads/?mount={blob}&from={from}"))
            .header("content-length", "0")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "from={from}");
        let status = r.req_url(Method::GET, r.location(&resp)).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::NO_CONTENT, "from={from}: a usable upload session");
    }
}
