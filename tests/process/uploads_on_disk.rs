//! Upload bytes on disk: PATCHed chunks land as segment files under
//! `<data_dir>/blobs/uploads/<id>/`; cancelling an upload (DELETE, the same removal the
//! expiry sweeper performs) deletes them and the session answers `BLOB_UPLOAD_UNKNOWN`;
//! the periodic sweep (`expire_after = "1m"`, `sweep_interval = "1s"`) leaves a fresh
//! upload alone; a duplicate commit removes its own copy; and the partial bytes of a
//! PATCH cut off by a crash are removed too when that session is later cancelled.

use std::time::Duration;

use reqwest::StatusCode;

use crate::support::*;

fn file_bytes(dir: &std::path::Path) -> u64 {
    files_under(dir).iter().map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)).sum()
}

#[tokio::test]
async fn cancelled_upload_removes_its_segment_files() {
    let (root, data) = workdir();
    let cfg = root.path().join("cairn.toml");
    std::fs::write(&cfg, "[uploads]\nexpire_after = \"1m\"\nsweep_interval = \"1s\"\n").unwrap();
    let srv = Server::start_with(&data, Some(&cfg), &[]).await;
    let http = client();
    let repo = "disk/app";
    let bytes = random_bytes(120_000);

    let loc = start_upload(&http, &srv, repo).await;
    let id = upload_id(&loc);
    let loc = patch_chunk(&http, &srv, &loc, 0, &bytes[..50_000]).await;
    let loc = patch_chunk(&http, &srv, &loc, 50_000, &bytes[50_000..]).await;
    let dir = srv.upload_dir(&id);
    let files = files_under(&dir);
    assert_eq!(files.len(), 2, "expected one file per chunk: {files:?}");
    assert_eq!(file_bytes(&dir), bytes.len() as u64);

    // A sweep runs every second; a fresh upload is not expired by it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(upload_range(&http, &srv, &loc).await, "0-119999");
    assert_eq!(files_under(&dir).len(), 2);

    let r = http.delete(srv.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(files_under(&dir), Vec::<std::path::PathBuf>::new(), "cancelled upload left bytes on disk");
    let r = http.get(srv.url(&loc)).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = http.patch(srv.url(&loc)).headers(chunk_headers(120_000, 10)).body(vec![0u8; 10]).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    let r = http.delete(srv.url(&loc)).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_no_blob(&http, &srv, repo, &sha256(&bytes)).await;
}

#[tokio::test]
async fn duplicate_commit_removes_its_own_copy() {
    let (_root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();
    let bytes = random_bytes(70_000);
    let d = push_blob(&http, &srv, "disk/one", &bytes).await;

    let loc = start_upload(&http, &srv, "disk/two").await;
    let id = upload_id(&loc);
    let loc = patch_chunk(&http, &srv, &loc, 0, &bytes).await;
    assert_eq!(files_under(&srv.upload_dir(&id)).len(), 1);
    finish_upload(&http, &srv, "disk/two", &loc, &d, &[]).await;
    assert_eq!(
        files_under(&srv.upload_dir(&id)),
        Vec::<std::path::PathBuf>::new(),
        "the second copy of an already stored blob was kept"
    );
    assert_blob(&http, &srv, "disk/two", &d, &bytes).await;
    assert_blob(&http, &srv, "disk/one", &d, &bytes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_after_a_crash_removes_the_cut_off_bytes() {
    let (_root, data) = workdir();
    let http = client();
    let mut srv = Server::start(&data).await;
    let bytes = random_bytes(200_000);
    let loc = start_upload(&http, &srv, "disk/crash").await;
    let id = upload_id(&loc);
    let loc = patch_chunk(&http, &srv, &loc, 0, &bytes[..100_000]).await;
    let stalled =
        Stalled::start(http.patch(srv.url(&loc)).headers(chunk_headers(100_000, 100_000)), &bytes[100_000..150_000]);
    let dir = srv.upload_dir(&id);
    assert!(
        wait_until(Duration::from_secs(10), || !staging_files(&dir).is_empty()).await,
        "the server never started writing the second chunk"
    );
    srv.kill();
    stalled.expect_failure(Duration::from_secs(10)).await;

    let srv = Server::start(&data).await;
    assert_eq!(upload_range(&http, &srv, &loc).await, "0-99999");
    let r = http.delete(srv.url(&loc)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        files_under(&dir),
        Vec::<std::path::PathBuf>::new(),
        "bytes of the PATCH cut off by the crash stay on disk after the upload was cancelled"
    );
}
