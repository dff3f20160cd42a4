//! `/readyz` checks writes, not only answers (issue 8): with the database and the blob
//! store each on its own small tmpfs, filling one makes `/readyz` answer 503 naming it
//! while reads still work, and freeing it makes the same process ready again. Needs root
//! (it mounts tmpfs); CI runs as root.

use reqwest::StatusCode;

use crate::faults::{Tmpfs, fill, readyz, wait_readyz};
use crate::support::*;

const REPO: &str = "ready/app";

#[tokio::test]
async fn readyz_is_503_while_the_database_or_the_blob_store_cannot_write() {
    let db = Tmpfs::mount("4m");
    let blobs = Tmpfs::mount("8m");
    let (root, data) = workdir();
    let config = root.path().join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "[database]\nurl = \"sqlite://{}/cairn.db\"\n\n[storage]\npath = \"{}\"\n",
            db.path.display(),
            blobs.path.display()
        ),
    )
    .unwrap();
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    let http = client();
    let bytes = random_bytes(10 << 10);
    let d = push_blob(&http, &srv, REPO, &bytes).await;
    assert_eq!(readyz(&http, &srv).await, (StatusCode::OK, "ready\n".to_string()));

    for (fs, part) in [(&db, "database cannot write"), (&blobs, "blob storage cannot write")] {
        let filler = fs.path.join("filler");
        fill(&filler);
        let (status, body) = wait_readyz(&http, &srv, StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "/readyz with a full {part:?} disk: {body}");
        assert_eq!(body, format!("not ready: {part} (storage full)\n"));
        assert_blob(&http, &srv, REPO, &d, &bytes).await;

        std::fs::remove_file(&filler).unwrap();
        let (status, body) = wait_readyz(&http, &srv, StatusCode::OK).await;
        assert_eq!(status, StatusCode::OK, "/readyz after space was freed under {part:?}: {body}");
    }
    push_blob(&http, &srv, REPO, &random_bytes(10 << 10)).await;
}
