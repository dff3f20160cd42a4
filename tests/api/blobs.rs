//! Blob GET/HEAD with Range, and DELETE.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn head_and_get_carry_size_and_digest() {
    let app = spawn_app().await;
    let data = random_bytes(12_345);
    let d = app.push_blob("b", &data).await;
    let h = app.head(&format!("/v2/b/blobs/{d}")).await;
    assert_eq!(h.status(), StatusCode::OK);
    assert_eq!(header(&h, "content-length").as_deref(), Some("12345"));
    assert_eq!(header(&h, "docker-content-digest").as_deref(), Some(d.as_str()));
    assert_eq!(header(&h, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
    assert!(h.bytes().await.unwrap().is_empty());
    let g = app.get(&format!("/v2/b/blobs/{d}")).await;
    assert_eq!(digest(&g.bytes().await.unwrap()), d);
}

#[tokio::test]
async fn ranges_give_206_and_the_right_bytes() {
    let app = spawn_app().await;
    let data = random_bytes(10_000);
    let d = app.push_blob("r", &data).await;
    for (range, want) in [
        ("bytes=0-99", 0..100),
        ("bytes=9990-", 9990..10_000),
        ("bytes=-10", 9990..10_000),
        ("bytes=5000-20000", 5000..10_000),
    ] {
        let r = app.http.get(app.url(&format!("/v2/r/blobs/{d}"))).header("Range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(header(&r, "content-range").unwrap(), format!("bytes {}-{}/10000", want.start, want.end - 1));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &data[want]);
    }
}

#[tokio::test]
async fn ranges_across_chunk_boundaries() {
    let app = spawn_app().await;
    let data = random_bytes(30_000);
    let mut loc = app.start_upload("seg").await;
    for (i, c) in data.chunks(7_000).enumerate() {
        let r = app.patch_chunk(&loc, (i * 7_000) as u64, c).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        loc = location(&r);
    }
    let d = digest(&data);
    assert_eq!(app.finish_upload(&loc, &d, &[]).await.status(), StatusCode::CREATED);
    let r =
        app.http.get(app.url(&format!("/v2/seg/blobs/{d}"))).header("Range", "bytes=6990-21010").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[6990..21011]);
    assert_eq!(app.get(&format!("/v2/seg/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let app = spawn_app().await;
    let d = app.push_blob("r416", &random_bytes(100)).await;
    for range in ["bytes=100-", "bytes=-0"] {
        let r = app.http.get(app.url(&format!("/v2/r416/blobs/{d}"))).header("Range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */100"));
    }
    // An invalid range is ignored (RFC 9110): the whole blob, 200.
    let r = app.http.get(app.url(&format!("/v2/r416/blobs/{d}"))).header("Range", "bytes=50-10").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    // Any range of an empty blob is unsatisfiable.
    let empty = app.push_blob("r416", b"").await;
    let r = app.http.get(app.url(&format!("/v2/r416/blobs/{empty}"))).header("Range", "bytes=-5").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */0"));
}

#[tokio::test]
async fn unknown_blob_and_bad_digest() {
    let app = spawn_app().await;
    let d = app.push_blob("here", b"content").await;
    assert_error(app.get(&format!("/v2/elsewhere/blobs/{d}")).await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert_eq!(app.head(&format!("/v2/elsewhere/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
    let missing = digest(b"missing");
    let body =
        assert_error(app.get(&format!("/v2/here/blobs/{missing}")).await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert_eq!(body["errors"][0]["detail"]["digest"], missing);
    assert_error(app.get("/v2/here/blobs/sha256:abc").await, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // A well-formed digest of an algorithm Cairn holds nothing under is simply not found.
    assert_error(app.get("/v2/here/blobs/md5:abc").await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn delete_blob_unlinks_it_from_one_repository() {
    let app = spawn_app().await;
    let data = random_bytes(500);
    let d = app.push_blob("del/a", &data).await;
    app.push_blob("del/b", &data).await;
    let r = app.delete(&format!("/v2/del/a/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_error(app.get(&format!("/v2/del/a/blobs/{d}")).await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    assert_eq!(app.get(&format!("/v2/del/b/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
    assert_error(app.delete(&format!("/v2/del/a/blobs/{d}")).await, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

#[tokio::test]
async fn unsupported_methods_and_unknown_paths() {
    let app = spawn_app().await;
    let d = app.push_blob("m", b"x").await;
    let r = app.http.post(app.url(&format!("/v2/m/blobs/{d}"))).send().await.unwrap();
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    let r = app.get("/v2/m/nothing/here").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz").await.status(), StatusCode::OK);
    let base = app.get("/v2/").await;
    assert_eq!(base.status(), StatusCode::OK);
    assert_eq!(header(&base, "docker-distribution-api-version").as_deref(), Some("registry/2.0"));
}
