//! A full disk (issue 8): the real binary serves a data directory on a small tmpfs that the
//! test fills to the last byte. While it is full, every kind of write answers 507 with code
//! `UNKNOWN` and stores nothing (a manifest PUT and a closing PUT fail inside their
//! transaction, a PATCH fails writing blob bytes, a POST fails writing its row), reads still
//! work, an upload session keeps its offset and `/readyz` says not ready. Manifest PUTs sent
//! at once (which share group commits) all answer 507 and none is stored. Once space is
//! freed, the same process takes writes again, without a restart, and the refused ones
//! succeed when retried, at once too. Needs root (it mounts a tmpfs); CI runs as root.

use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::faults::{Tmpfs, fill, readyz, wait_readyz};
use crate::support::*;

const REPO: &str = "full/app";
const CONFIG: &[u8] = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;

async fn put_manifest_status(http: &Client, srv: &Server, tag: &str, body: &[u8]) -> reqwest::Response {
    http.put(srv.url(&format!("/v2/{REPO}/manifests/{tag}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// `m` with an annotation that makes it the `n`th of a set of distinct manifests.
fn numbered(m: &[u8], n: usize) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(m).unwrap();
    v["annotations"] = json!({ "n": n.to_string() });
    serde_json::to_vec(&v).unwrap()
}

/// PUTs every manifest at once, the `i`th as tag `many-<i>`; the responses, in order.
async fn put_all_at_once(http: &Client, srv: &Server, manifests: &[Vec<u8>]) -> Vec<reqwest::Response> {
    let tags: Vec<String> = (0..manifests.len()).map(|i| format!("many-{i}")).collect();
    let puts = tags.iter().zip(manifests).map(|(t, m)| put_manifest_status(http, srv, t, m));
    futures::future::join_all(puts).await
}

#[tokio::test]
async fn a_full_disk_answers_507_stores_nothing_and_writes_resume_when_space_returns() {
    let fs = Tmpfs::mount("16m");
    // The mount point is the data directory, so the server's log (beside it) is not on the tmpfs.
    let srv = Server::start(&fs.path).await;
    let http = client();

    let cfg = push_blob(&http, &srv, REPO, CONFIG).await;
    let layer = random_bytes(256 << 10);
    let l = push_blob(&http, &srv, REPO, &layer).await;
    let m1 = image_manifest((&cfg, CONFIG.len()), &[(&l, layer.len())]);
    put_manifest(&http, &srv, REPO, "v1", &m1).await;
    let m2 = image_manifest((&cfg, CONFIG.len()), &[]);
    let many: Vec<Vec<u8>> = (0..16).map(|i| numbered(&m2, i)).collect();

    // An upload with all its bytes, to be closed while the disk is full (a commit transaction).
    let closing_bytes = random_bytes(64 << 10);
    let closing_digest = sha256(&closing_bytes);
    let closing = start_upload(&http, &srv, REPO).await;
    let closing = patch_chunk(&http, &srv, &closing, 0, &closing_bytes).await;
    // An upload that gets a chunk while the disk is full (blob bytes that cannot be written).
    let first = random_bytes(32 << 10);
    let growing = start_upload(&http, &srv, REPO).await;
    let growing = patch_chunk(&http, &srv, &growing, 0, &first).await;
    let second = random_bytes(256 << 10);
    let mut whole = first.clone();
    whole.extend_from_slice(&second);

    let filler = fs.path.join("filler");
    fill(&filler);

    // Refused writes, each twice: the second answer shows the first left nothing stuck.
    for _ in 0..2 {
        let r = put_manifest_status(&http, &srv, "v2", &m2).await;
        assert_error(r, StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN").await;

        let r = http.put(srv.url(&with_digest(&closing, &closing_digest))).send().await.unwrap();
        assert_error(r, StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN").await;

        let r = http
            .patch(srv.url(&growing))
            .headers(chunk_headers(first.len() as u64, second.len() as u64))
            .body(second.clone())
            .send()
            .await
            .unwrap();
        assert_error(r, StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN").await;
        assert_eq!(upload_range(&http, &srv, &growing).await, format!("0-{}", first.len() - 1), "offset kept");

        let r = http.post(srv.url(&format!("/v2/{REPO}/blobs/uploads/"))).send().await.unwrap();
        assert_error(r, StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN").await;

        // Sent at once, they share group commits: a failed COMMIT fails every member alike.
        for r in put_all_at_once(&http, &srv, &many).await {
            assert_error(r, StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN").await;
        }
    }
    let (status, body) = readyz(&http, &srv).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz while the disk is full: {body}");
    assert!(body.contains("not ready") && body.contains("storage full"), "{body}");

    // Reads work; nothing refused is visible.
    assert_manifest(&http, &srv, REPO, "v1", &m1).await;
    assert_blob(&http, &srv, REPO, &l, &layer).await;
    assert_eq!(tags(&http, &srv, REPO).await["tags"], json!(["v1"]), "none of the refused PUTs is stored");
    let r = http.get(srv.url(&format!("/v2/{REPO}/manifests/v2"))).header("accept", OCI_MANIFEST).send().await;
    assert_error(r.unwrap(), StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert_no_blob(&http, &srv, REPO, &closing_digest).await;

    std::fs::remove_file(&filler).unwrap();

    // The same process recovers by itself.
    let (status, body) = wait_readyz(&http, &srv, StatusCode::OK).await;
    assert_eq!(status, StatusCode::OK, "/readyz did not recover after space was freed: {body}");
    put_manifest(&http, &srv, REPO, "v2", &m2).await;
    finish_upload(&http, &srv, REPO, &closing, &closing_digest, &[]).await;
    assert_blob(&http, &srv, REPO, &closing_digest, &closing_bytes).await;
    let growing = patch_chunk(&http, &srv, &growing, first.len() as u64, &second).await;
    let whole_digest = sha256(&whole);
    finish_upload(&http, &srv, REPO, &growing, &whole_digest, &[]).await;
    assert_blob(&http, &srv, REPO, &whole_digest, &whole).await;
    let fresh = random_bytes(100 << 10);
    let d = push_blob(&http, &srv, REPO, &fresh).await;
    assert_blob(&http, &srv, REPO, &d, &fresh).await;
    for (i, r) in put_all_at_once(&http, &srv, &many).await.into_iter().enumerate() {
        assert_eq!(r.status(), StatusCode::CREATED, "many-{i}: {}", r.text().await.unwrap_or_default());
    }
    let mut want: Vec<String> = (0..16).map(|i| format!("many-{i}")).collect();
    want.extend(["v1".to_string(), "v2".to_string()]);
    want.sort();
    assert_eq!(tags(&http, &srv, REPO).await["tags"], json!(want));
    assert_manifest(&http, &srv, REPO, "v2", &m2).await;
    for (i, m) in many.iter().enumerate() {
        assert_manifest(&http, &srv, REPO, &format!("many-{i}"), m).await;
    }
    let log = srv.stderr();
    assert!(!log.contains("non-zero transaction depth"), "a write hit the wedged connection:\n{log}");
}
