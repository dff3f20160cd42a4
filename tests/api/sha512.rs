//! sha512, the image spec's second registered digest algorithm: blobs and manifests addressed by
//! `sha512:` digests are stored, verified and served like sha256 ones. A chunked upload picks
//! its algorithm with `?digest-algorithm=sha512` (spec main, end-4c); a monolithic one from its
//! `?digest=`.

use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest as _, Sha512};

use crate::helpers::*;

fn sha512(bytes: &[u8]) -> String {
    format!("sha512:{}", hex::encode(Sha512::digest(bytes)))
}

#[tokio::test]
async fn a_sha512_blob_pushed_in_one_request_is_served_by_its_digest() {
    let app = spawn_app().await;
    let data = random_bytes(10_000);
    let d = sha512(&data);
    let r = app.http.post(app.url(&format!("/v2/s5/mono/blobs/uploads/?digest={d}"))).body(data.clone()).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
    let got = app.get(&format!("/v2/s5/mono/blobs/{d}")).await;
    assert_eq!(header(&got, "docker-content-digest").as_deref(), Some(d.as_str()));
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
    // The sha256 of the same bytes names nothing here: the blob is stored under its sha512.
    assert_eq!(app.head(&format!("/v2/s5/mono/blobs/{}", digest(&data))).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_chunked_upload_hashes_with_the_algorithm_it_was_opened_with() {
    let app = spawn_app().await;
    let data = random_bytes(300_000);
    let d = sha512(&data);
    let r = app.post("/v2/s5/chunked/blobs/uploads/?digest-algorithm=sha512").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    for (i, chunk) in data.chunks(100_000).enumerate() {
        assert_eq!(app.patch_chunk(&loc, (i * 100_000) as u64, chunk).await.status(), StatusCode::ACCEPTED);
    }
    // Closing with the sha256 digest of the same bytes cannot be verified: refused, the session stays.
    let r = app.finish_upload(&loc, &digest(&data), b"").await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert!(body.to_string().contains("digest-algorithm=sha256"), "{body}");
    assert_eq!(app.get(&loc).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.finish_upload(&loc, &d, b"").await.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/s5/chunked/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data);
}

#[tokio::test]
async fn a_sha256_chunked_upload_explains_how_to_push_sha512() {
    let app = spawn_app().await;
    let data = random_bytes(2_000);
    let loc = app.start_upload("s5/wrongalg").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data).await.status(), StatusCode::ACCEPTED);
    let r = app.finish_upload(&loc, &sha512(&data), b"").await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert!(body.to_string().contains("?digest-algorithm=sha512"), "{body}");
    // A POST then a single PUT (nothing hashed before the digest is known) works with either.
    let loc = app.start_upload("s5/wrongalg").await;
    assert_eq!(app.finish_upload(&loc, &sha512(&data), &data).await.status(), StatusCode::CREATED);
    let r = app.post("/v2/s5/wrongalg/blobs/uploads/?digest-algorithm=md5").await;
    assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
}

#[tokio::test]
async fn sha512_manifests_referrers_and_mounts() {
    let app = spawn_mutable().await;
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let layer = random_bytes(700);
    for bytes in [&config[..], &layer] {
        let d = sha512(bytes);
        let r = app.http.post(app.url(&format!("/v2/s5/img/blobs/uploads/?digest={d}"))).body(bytes.to_vec()).send();
        assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    }
    let m = image_manifest(&sha512(config), config.len() as u64, &[(&sha512(&layer), 700)], None);
    let md = sha512(&m);
    let r = app.http.put(app.url(&format!("/v2/s5/img/manifests/{md}?tag=v1")));
    let r = r.header("Content-Type", OCI_MANIFEST).body(m.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(md.as_str()));
    for reference in [md.as_str(), "v1"] {
        let got = app.get(&format!("/v2/s5/img/manifests/{reference}")).await;
        assert_eq!(header(&got, "docker-content-digest").as_deref(), Some(md.as_str()), "{reference}");
        assert_eq!(got.bytes().await.unwrap().as_ref(), m.as_slice());
    }
    // A manifest PUT whose URL digest does not match its sha512 is refused.
    let wrong = sha512(b"other");
    let r = app.put_manifest("s5/img", &wrong, OCI_MANIFEST, &m).await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    // A referrer of the sha512 manifest.
    let sig = image_manifest(&sha512(config), config.len() as u64, &[], Some(&md));
    let sd = sha512(&sig);
    assert_eq!(app.put_manifest("s5/img", &sd, OCI_MANIFEST, &sig).await.status(), StatusCode::CREATED);
    let v: serde_json::Value = app.get(&format!("/v2/s5/img/referrers/{md}")).await.json().await.unwrap();
    assert_eq!(v["manifests"][0]["digest"], json!(sd));
    // Mount a sha512 blob into another repository.
    let r = app.post(&format!("/v2/s5/other/blobs/uploads/?mount={}&from=s5/img", sha512(&layer))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/s5/other/blobs/{}", sha512(&layer))).await.bytes().await.unwrap(), layer);
    // And the layer is protected like any referenced blob.
    let r = app.delete(&format!("/v2/s5/img/blobs/{}", sha512(&layer))).await;
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
}
