//! Push workflow (distribution-spec v1.1 "Push"): monolithic uploads (POST then PUT, single
//! POST), chunked uploads (PATCH with `Content-Range`, 416 out of order, status, cancel),
//! cross-repository and automatic mounts, manifest PUT by tag and digest with `subject` and
//! `?tag=`, and the refusals (bad digest, missing blob, invalid or oversize manifest) that
//! must leave nothing visible.

use reqwest::{Method, Response, StatusCode, Url};
use serde_json::json;

use crate::helpers::*;

/// PATCH one chunk starting at `start` (end-5).
async fn patch_chunk(r: &Reg, location: Url, start: usize, chunk: &[u8]) -> Response {
    let end = start + chunk.len() - 1;
    r.req_url(Method::PATCH, location)
        .header("content-type", OCTET_STREAM)
        .header("content-range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .expect("PATCH chunk")
}

/// Asserts a blob is pullable from `url` with exactly `data`.
async fn assert_blob_at(r: &Reg, url: Url, data: &[u8]) {
    let resp = r.req_url(Method::GET, url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    assert!(resp.bytes().await.unwrap()[..] == data[..], "blob at {url} differs");
}

#[tokio::test]
async fn post_then_put_monolithic_upload_returns_201_with_location_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(50_000);
    let digest = digest_of(&data);

    let location = r.start_upload(&repo).await;
    let resp = r.finish_upload(location, &digest, &data).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let blob_url = r.location(&resp);
    assert_blob_at(&r, blob_url, &data).await;
    assert_eq!(r.head_blob(&repo, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn single_post_with_digest_returns_201_with_location() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(20_000);
    let digest = digest_of(&data);

    let url = with_query(r.url(&format!("/v2/{repo}/blobs/uploads/")), "digest", &digest);
    let resp =
        r.req_url(Method::POST, url).header("content-type", OCTET_STREAM).body(data.clone()).send().await.unwrap();
    if r.is_cairn() || resp.status() != StatusCode::ACCEPTED {
        assert_eq!(resp.status(), StatusCode::CREATED);
        let blob_url = r.location(&resp);
        assert_blob_at(&r, blob_url, &data).await;
    } else {
        // A registry without single-POST uploads answers 202 and the client PUTs.
        let location = r.location(&resp);
        let resp = r.finish_upload(location, &digest, &data).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT after 202 single POST");
    }
    assert_eq!(r.head_blob(&repo, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn chunk_patch_returns_202_with_range_and_location() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let location = r.start_upload(&repo).await;

    let resp = patch_chunk(&r, location, 0, &random_bytes(1_000)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-999"));
    r.location(&resp);
}

#[tokio::test]
async fn chunked_upload_of_several_chunks_then_put_creates_the_blob() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(9_000);
    let digest = digest_of(&data);

    let mut location = r.start_upload(&repo).await;
    let mut offset = 0;
    for size in [1_000, 5_000, 3_000] {
        let resp = patch_chunk(&r, location, offset, &data[offset..offset + size]).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH at {offset}");
        offset += size;
        assert_eq!(header(&resp, "range"), Some(format!("0-{}", offset - 1)), "Range");
        location = r.location(&resp);
    }
    let resp = r
        .req_url(Method::PUT, with_query(location, "digest", &digest))
        .header("content-length", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "closing PUT");
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let blob_url = r.location(&resp);
    assert_blob_at(&r, blob_url, &data).await;
}

#[tokio::test]
async fn chunked_upload_final_chunk_in_closing_put_creates_the_blob() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(4_000);
    let digest = digest_of(&data);

    let location = r.start_upload(&repo).await;
    let resp = patch_chunk(&r, location, 0, &data[..2_500]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = r.finish_upload(r.location(&resp), &digest, &data[2_500..]).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "closing PUT with the last chunk");
    assert_blob_at(&r, r.url(&format!("/v2/{repo}/blobs/{digest}")), &data).await;
}

#[tokio::test]
async fn out_of_order_chunk_returns_416() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(3_000);
    let location = r.start_upload(&repo).await;
    let resp = patch_chunk(&r, location, 0, &data[..1_000]).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = r.location(&resp);

    // Skips bytes 1000..2000.
    let resp = patch_chunk(&r, location.clone(), 2_000, &data[2_000..]).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "gap");
    // Overlaps what was already sent.
    let resp = patch_chunk(&r, location, 500, &data[500..1_500]).await;
    assert_eq!(resp.status(), StatusCode::RANGE_NOT_SATISFIABLE, "overlap");
}

#[tokio::test]
async fn streamed_patch_without_content_range_then_put_creates_the_blob() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(6_000);
    let digest = digest_of(&data);

    let location = r.start_upload(&repo).await;
    let resp = r
        .req_url(Method::PATCH, location)
        .header("content-type", OCTET_STREAM)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-5999"));
    let resp = r.finish_upload(r.location(&resp), &digest, b"").await;
    assert_eq!(resp.status(), StatusCode::CREATED, "closing PUT");
    assert_blob_at(&r, r.url(&format!("/v2/{repo}/blobs/{digest}")), &data).await;
}

#[tokio::test]
async fn get_upload_status_returns_204_with_range_and_location() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let location = r.start_upload(&repo).await;
    let resp = patch_chunk(&r, location, 0, &random_bytes(1_234)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = r.location(&resp);

    let resp = r.req_url(Method::GET, location).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&resp, "range").as_deref(), Some("0-1233"));
    let location = r.location(&resp);

    // The status location continues the same upload.
    let resp = patch_chunk(&r, location, 1_234, &random_bytes(10)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "PATCH at the reported offset");
    assert_eq!(header(&resp, "range").as_deref(), Some("0-1243"));
}

#[tokio::test]
async fn delete_upload_returns_204_then_status_is_404_blob_upload_unknown() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let location = r.start_upload(&repo).await;
    let resp = patch_chunk(&r, location, 0, &random_bytes(100)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = r.location(&resp);

    let resp = r.req_url(Method::DELETE, location.clone()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = r.req_url(Method::GET, location).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, &["BLOB_UPLOAD_UNKNOWN"]).await;
}

#[tokio::test]
async fn unknown_upload_returns_404_blob_upload_unknown() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_blob(&repo, &random_bytes(10)).await;
    let id = "0f9a1c3e-4b2d-4e6f-8a7b-9c0d1e2f3a4b";
    let url = r.url(&format!("/v2/{repo}/blobs/uploads/{id}"));

    // The code is a MAY in the spec's table; Cairn uses BLOB_UPLOAD_UNKNOWN.
    let codes: &[&str] =
        if r.is_cairn() { &["BLOB_UPLOAD_UNKNOWN"] } else { &["BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID"] };
    let resp = r.req_url(Method::GET, url.clone()).send().await.unwrap();
    assert_error(resp, StatusCode::NOT_FOUND, codes).await;
    let resp = patch_chunk(&r, url.clone(), 0, b"abc").await;
    assert_error(resp, StatusCode::NOT_FOUND, codes).await;
    let resp = r.finish_upload(url, &digest_of(b"abc"), b"abc").await;
    assert_error(resp, StatusCode::NOT_FOUND, codes).await;
    assert_eq!(r.head_blob(&repo, &digest_of(b"abc")).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_with_wrong_digest_returns_400_digest_invalid_and_stores_nothing() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_blob(&repo, &random_bytes(10)).await;
    let data = random_bytes(2_000);
    let claimed = unknown_digest();

    let location = r.start_upload(&repo).await;
    let resp = r.finish_upload(location, &claimed, &data).await;
    assert_error(resp, StatusCode::BAD_REQUEST, &["DIGEST_INVALID"]).await;
    assert_eq!(r.head_blob(&repo, &claimed).await, StatusCode::NOT_FOUND, "claimed digest");
    assert_eq!(r.head_blob(&repo, &digest_of(&data)).await, StatusCode::NOT_FOUND, "real digest");
}

#[tokio::test]
async fn cross_repository_mount_returns_201_with_location_and_digest() {
    let r = Reg::start();
    let from = unique_repo("push-from");
    let to = unique_repo("push-to");
    let data = random_bytes(5_000);
    let digest = r.push_blob(&from, &data).await;

    let url = with_query(with_query(r.url(&format!("/v2/{to}/blobs/uploads/")), "mount", &digest), "from", &from);
    let resp = r.req_url(Method::POST, url).header("content-length", "0").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let blob_url = r.location(&resp);
    assert_blob_at(&r, blob_url, &data).await;
    assert_eq!(r.head_blob(&to, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn mount_of_unknown_blob_returns_202_and_starts_an_upload() {
    let r = Reg::start();
    let from = unique_repo("push-from");
    let to = unique_repo("push-to");
    r.push_blob(&from, &random_bytes(10)).await;
    let data = random_bytes(700);
    let digest = digest_of(&data);

    let url = with_query(with_query(r.url(&format!("/v2/{to}/blobs/uploads/")), "mount", &digest), "from", &from);
    let resp = r.req_url(Method::POST, url).header("content-length", "0").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let location = r.location(&resp);
    let resp = r.finish_upload(location, &digest, &data).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT to the fallback upload");
    assert_eq!(r.head_blob(&to, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn mount_without_from_of_a_known_blob_returns_201() {
    let r = Reg::start();
    let from = unique_repo("push-from");
    let to = unique_repo("push-to");
    let data = random_bytes(900);
    let digest = r.push_blob(&from, &data).await;

    let url = with_query(r.url(&format!("/v2/{to}/blobs/uploads/")), "mount", &digest);
    let resp = r.req_url(Method::POST, url).header("content-length", "0").send().await.unwrap();
    if r.is_cairn() {
        assert_eq!(resp.status(), StatusCode::CREATED, "Cairn mounts automatically");
    }
    // The spec leaves automatic mounting to the registry (MAY): 201, or 202 with an upload.
    match resp.status() {
        StatusCode::CREATED => {
            assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
            let blob_url = r.location(&resp);
            assert_blob_at(&r, blob_url, &data).await;
        }
        StatusCode::ACCEPTED => {
            let location = r.location(&resp);
            let resp = r.finish_upload(location, &digest, &data).await;
            assert_eq!(resp.status(), StatusCode::CREATED, "PUT to the fallback upload");
        }
        other => panic!("mount without from: {other}"),
    }
    assert_eq!(r.head_blob(&to, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn zero_length_blob_push_and_pull() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let digest = r.push_blob(&repo, b"").await;
    assert_eq!(digest, "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

    let resp = r.req(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-length").as_deref(), Some("0"));
    assert!(resp.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn pushing_the_same_blob_and_manifest_again_succeeds() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let data = random_bytes(100);
    let digest = r.push_blob(&repo, &data).await;
    assert_eq!(r.push_blob(&repo, &data).await, digest);

    let img = r.push_image(&repo, Some("again")).await;
    let resp = r.put_manifest(&repo, "again", img.media_type, &img.body).await;
    assert_eq!(resp.status(), StatusCode::CREATED, "same manifest to the same tag");
    assert_eq!(header(&resp, "docker-content-digest"), Some(img.digest));
}

#[tokio::test]
async fn names_and_tags_of_the_spec_grammar_are_accepted() {
    let r = Reg::start();
    // `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` components, several of them.
    let repo = format!("conformance/a--b__c.d_e-f/x9-{}", random_suffix());
    let long_tag = format!("T{}", "a_.-".repeat(32)).chars().take(128).collect::<String>();
    for tag in ["V1.0_rc-1", "_private", long_tag.as_str()] {
        let img = r.push_image(&repo, Some(tag)).await;
        let resp = r.get_manifest(&repo, tag).await;
        assert_eq!(resp.status(), StatusCode::OK, "GET {repo}:{tag}");
        assert_eq!(header(&resp, "docker-content-digest"), Some(img.digest));
    }
    let tags = r.tags(&repo).await.expect("tags of the repository");
    assert!(tags.contains(&long_tag), "128-character tag missing: {tags:?}");
}

async fn assert_manifest_created(r: &Reg, resp: Response, repo: &str, body: &[u8]) {
    let digest = digest_of(body);
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    let location = r.location(&resp);
    let resp = r.req_url(Method::GET, location.clone()).header("accept", ACCEPT_MANIFESTS).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "GET Location {location}");
    assert!(resp.bytes().await.unwrap()[..] == body[..], "manifest at Location differs");
    assert_eq!(r.head_manifest(repo, &digest).await, StatusCode::OK);
}

#[tokio::test]
async fn put_manifest_by_tag_returns_201_with_location_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));

    let resp = r.put_manifest(&repo, "v1.0", OCI_MANIFEST, &body).await;
    assert_manifest_created(&r, resp, &repo, &body).await;
    assert_eq!(r.head_manifest(&repo, "v1.0").await, StatusCode::OK);
    assert!(r.tags(&repo).await.unwrap_or_default().contains(&"v1.0".to_string()));
}

#[tokio::test]
async fn put_manifest_by_digest_returns_201_with_location_and_digest() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));

    let resp = r.put_manifest(&repo, &digest_of(&body), OCI_MANIFEST, &body).await;
    assert_manifest_created(&r, resp, &repo, &body).await;
}

#[tokio::test]
async fn put_manifest_referencing_missing_blob_returns_400_manifest_blob_unknown() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_image(&repo, Some("existing")).await;
    let tags_before = r.tags(&repo).await;
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let missing_layer = descriptor(OCI_LAYER, &random_bytes(64));
    let body = image_manifest(&config, &[missing_layer], json!({}));

    let resp = r.put_manifest(&repo, "broken", OCI_MANIFEST, &body).await;
    assert_error(resp, StatusCode::BAD_REQUEST, &["MANIFEST_BLOB_UNKNOWN"]).await;
    assert_eq!(r.head_manifest(&repo, &digest_of(&body)).await, StatusCode::NOT_FOUND);
    r.assert_tag_absent(&repo, "broken").await;
    assert_eq!(r.tags(&repo).await, tags_before, "tags/list changed");
}

#[tokio::test]
async fn put_invalid_manifest_returns_400_manifest_invalid() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_image(&repo, Some("existing")).await;
    let tags_before = r.tags(&repo).await;

    let not_json = b"{\"schemaVersion\": 2, \"mediaType\": ".to_vec();
    let wrong_shape = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": "not a descriptor",
        "layers": 7,
    }))
    .unwrap();
    for (tag, body) in [("not-json", not_json), ("wrong-shape", wrong_shape)] {
        let resp = r.put_manifest(&repo, tag, OCI_MANIFEST, &body).await;
        assert_error(resp, StatusCode::BAD_REQUEST, &["MANIFEST_INVALID"]).await;
        assert_eq!(r.head_manifest(&repo, &digest_of(&body)).await, StatusCode::NOT_FOUND);
        r.assert_tag_absent(&repo, tag).await;
    }
    assert_eq!(r.tags(&repo).await, tags_before, "tags/list changed");
}

#[tokio::test]
async fn put_manifest_under_mismatched_digest_returns_400_digest_invalid() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));
    let wrong = unknown_digest();
    let tags_before = r.tags(&repo).await;

    let resp = r.put_manifest(&repo, &wrong, OCI_MANIFEST, &body).await;
    assert_error(resp, StatusCode::BAD_REQUEST, &["DIGEST_INVALID"]).await;
    assert_eq!(r.tags(&repo).await, tags_before, "tags/list changed");
    assert_eq!(r.head_manifest(&repo, &wrong).await, StatusCode::NOT_FOUND);
    assert_eq!(r.head_manifest(&repo, &digest_of(&body)).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_manifest_with_subject_returns_201_with_oci_subject() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let subject = r.push_image(&repo, Some("subject")).await;
    let config = r.push_blob_desc(&repo, OCI_EMPTY, b"{}").await;
    let layer = r.push_blob_desc(&repo, "application/vnd.example.sig", &random_bytes(64)).await;
    let body = image_manifest(
        &config,
        &[layer],
        json!({
            "artifactType": "application/vnd.example.sig",
            "subject": descriptor(OCI_MANIFEST, &subject.body),
        }),
    );

    let resp = r.put_manifest(&repo, &digest_of(&body), OCI_MANIFEST, &body).await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "oci-subject"), Some(subject.digest));
}

#[tokio::test]
async fn put_manifest_by_digest_with_tag_query_creates_every_tag() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));
    let digest = digest_of(&body);

    let url = with_query(with_query(r.url(&format!("/v2/{repo}/manifests/{digest}")), "tag", "t1"), "tag", "t2");
    let resp =
        r.req_url(Method::PUT, url).header("content-type", OCI_MANIFEST).body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()));
    assert_eq!(r.head_manifest(&repo, &digest).await, StatusCode::OK);
    // `?tag=` is optional in the spec; Cairn implements it.
    if r.is_cairn() {
        for tag in ["t1", "t2"] {
            let resp = r.get_manifest(&repo, tag).await;
            assert_eq!(resp.status(), StatusCode::OK, "GET {tag}");
            assert_eq!(header(&resp, "docker-content-digest"), Some(digest.clone()), "{tag}");
        }
        assert_eq!(r.tags(&repo).await, Some(vec!["t1".to_string(), "t2".to_string()]));
    }
}

#[tokio::test]
async fn put_manifest_with_an_invalid_tag_query_stores_nothing() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_image(&repo, Some("existing")).await;
    let tags_before = r.tags(&repo).await;
    let config = r.push_blob_desc(&repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(&repo, OCI_LAYER, &random_bytes(100)).await;
    let body = image_manifest(&config, &[layer], json!({}));
    let digest = digest_of(&body);

    // A tag may not start with '-'.
    let url = with_query(with_query(r.url(&format!("/v2/{repo}/manifests/{digest}")), "tag", "good"), "tag", "-bad");
    let resp =
        r.req_url(Method::PUT, url).header("content-type", OCI_MANIFEST).body(body.clone()).send().await.unwrap();
    if !r.is_cairn() && resp.status() == StatusCode::CREATED {
        // The other outcome the spec allows: a registry without `?tag=` support ignores the
        // query, so the manifest is stored by digest and no tag at all changes.
        let stored = r.get_manifest(&repo, &digest).await;
        assert_eq!(stored.status(), StatusCode::OK, "201 for a manifest that GET by digest does not find");
        assert!(stored.bytes().await.unwrap()[..] == body[..], "the manifest stored differs from the one sent");
    } else {
        // Cairn applies `?tag=` all or nothing.
        assert_error(resp, StatusCode::BAD_REQUEST, &SPEC_ERROR_CODES).await;
        assert_eq!(r.head_manifest(&repo, &digest).await, StatusCode::NOT_FOUND);
    }
    r.assert_tag_absent(&repo, "good").await;
    assert_eq!(r.tags(&repo).await, tags_before, "tags/list changed");
}

/// An image manifest of exactly `size` bytes (padded with an annotation).
async fn manifest_of_size(r: &Reg, repo: &str, size: usize) -> Vec<u8> {
    let config = r.push_blob_desc(repo, OCI_CONFIG, &random_config()).await;
    let layer = r.push_blob_desc(repo, OCI_LAYER, &random_bytes(100)).await;
    let build = |pad: usize| {
        image_manifest(
            &config,
            std::slice::from_ref(&layer),
            json!({ "annotations": { "org.example.padding": "x".repeat(pad) } }),
        )
    };
    let body = build(size - build(0).len());
    assert_eq!(body.len(), size);
    body
}

#[tokio::test]
async fn put_manifest_of_4_megabytes_is_accepted() {
    let r = Reg::start();
    let repo = unique_repo("push");
    let body = manifest_of_size(&r, &repo, 4_000_000).await;
    let digest = r.push_manifest(&repo, Some("large"), OCI_MANIFEST, &body).await;
    let resp = r.get_manifest(&repo, &digest).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.bytes().await.unwrap()[..] == body[..], "large manifest differs");
}

#[tokio::test]
async fn put_manifest_larger_than_4_mib_returns_413_and_stores_nothing() {
    let r = Reg::start();
    let repo = unique_repo("push");
    r.push_image(&repo, Some("existing")).await;
    let tags_before = r.tags(&repo).await;
    let body = manifest_of_size(&r, &repo, (4 << 20) + 1).await;

    let resp = r
        .req(Method::PUT, &format!("/v2/{repo}/manifests/oversize"))
        .header("content-type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no response to the oversize PUT, the connection broke while the client was \
                 still sending the body (the registry must read or drain the body and answer \
                 413): {e:?}"
            )
        });
    if !r.is_cairn() && resp.status() == StatusCode::CREATED {
        // Accepting more than the minimum is allowed by the spec (Cairn caps at 4 MiB); then
        // the manifest must be served whole, by digest and by its tag.
        for reference in [digest_of(&body).as_str(), "oversize"] {
            let stored = r.get_manifest(&repo, reference).await;
            assert_eq!(stored.status(), StatusCode::OK, "GET {reference} after a 201 for the large manifest");
            assert!(stored.bytes().await.unwrap()[..] == body[..], "GET {reference}: the large manifest differs");
        }
    } else {
        assert_error(resp, StatusCode::PAYLOAD_TOO_LARGE, &["SIZE_INVALID", "MANIFEST_INVALID"]).await;
        assert_eq!(r.head_manifest(&repo, &digest_of(&body)).await, StatusCode::NOT_FOUND);
        r.assert_tag_absent(&repo, "oversize").await;
        assert_eq!(r.tags(&repo).await, tags_before, "tags/list changed");
    }
}
