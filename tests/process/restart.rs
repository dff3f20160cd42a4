//! A chunked upload survives a SIGKILL: the session (offset, hash state, segments) lives in
//! the database and the blob directory, so after a restart on the same data directory the
//! client asks where it stands, resumes from the recorded offset against the new process
//! (new port, same relative Location) and finishes with a byte-identical blob.

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test]
async fn chunked_upload_survives_sigkill_and_restart() {
    let (_root, data) = workdir();
    let http = client();
    let repo = "restart/app";
    let blob = random_bytes(300_000);
    let digest = sha256(&blob);
    let split = 100_000;

    let mut srv = Server::start(&data).await;
    let loc = start_upload(&http, &srv, repo).await;
    let id = upload_id(&loc);
    let loc = patch_chunk(&http, &srv, &loc, 0, &blob[..split]).await;
    assert_eq!(upload_id(&loc), id);
    srv.kill();

    let srv2 = Server::start(&data).await;
    assert_ne!(srv2.addr, srv.addr, "expected a new ephemeral port");
    assert_eq!(
        upload_range(&http, &srv2, &loc).await,
        format!("0-{}", split - 1),
        "the restarted server must report the bytes received before the kill"
    );

    // A chunk that does not start at the recorded offset is refused and changes nothing.
    let r = http.patch(srv2.url(&loc)).headers(chunk_headers(0, 10)).body(blob[..10].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(upload_range(&http, &srv2, &loc).await, format!("0-{}", split - 1));

    let loc = patch_chunk(&http, &srv2, &loc, split as u64, &blob[split..]).await;
    assert_eq!(upload_range(&http, &srv2, &loc).await, format!("0-{}", blob.len() - 1));
    finish_upload(&http, &srv2, repo, &loc, &digest, &[]).await;
    assert_blob(&http, &srv2, repo, &digest, &blob).await;

    // The finished session is gone.
    let r = http.get(srv2.url(&loc)).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}
