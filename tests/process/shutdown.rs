//! Graceful shutdown (DESIGN §9): on SIGTERM the server stops accepting connections at
//! once, lets an upload whose body is still trickling in finish (201, blob stored and
//! readable after a restart), does not wait on idle keep-alive connections, and exits 0.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_running_upload_finish_then_exits_0() {
    let (_root, data) = workdir();
    let repo = "shutdown/app";
    let blob = random_bytes(256 << 10);
    let digest = sha256(&blob);
    let pieces: Vec<&[u8]> = blob.chunks(32 << 10).collect();

    let mut srv = Server::start(&data).await;
    let http = client();
    // An idle keep-alive connection from another client must not hold shutdown up.
    let idle = client();
    let r = idle.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let loc = start_upload(&http, &srv, repo).await;
    let id = upload_id(&loc);
    let mut put = Stalled::start(
        http.put(srv.url(&with_digest(&loc, &digest))).header("content-type", "application/octet-stream"),
        pieces[0],
    );
    put.send(pieces[1]);
    let dir = srv.upload_dir(&id);
    assert!(
        wait_until(Duration::from_secs(10), || !staging_files(&dir).is_empty()).await,
        "the server never started writing the body"
    );

    srv.terminate();
    let sent_at = Instant::now();
    // New connections are refused soon after the signal, while the upload still runs.
    let refused = wait_until(Duration::from_secs(5), || {
        TcpStream::connect_timeout(&srv.addr, Duration::from_millis(200)).is_err()
    })
    .await;
    assert!(refused, "still accepting connections 5 s after SIGTERM");
    assert!(
        srv.try_status().is_none(),
        "the process exited with an upload still running: {:?}\n{}",
        srv.try_status(),
        srv.stderr()
    );

    for p in &pieces[2..] {
        tokio::time::sleep(Duration::from_millis(100)).await;
        put.send(p);
    }
    let r = put.finish(Duration::from_secs(20)).await.expect("the running upload failed during graceful shutdown");
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.headers());
    assert_eq!(header(&r, "docker-content-digest"), digest);
    assert_eq!(header(&r, "location"), format!("/v2/{repo}/blobs/{digest}"));

    let status = srv
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("still running 10 s after the last request finished"));
    assert_eq!(status.code(), Some(0), "exit status {status:?}\n{}", srv.stderr());
    assert!(
        sent_at.elapsed() < Duration::from_secs(20),
        "shutdown waited for the grace period instead of the running request"
    );

    let srv = Server::start(&data).await;
    assert_blob(&client(), &srv, repo, &digest, &blob).await;
}

#[tokio::test]
async fn sigterm_on_an_idle_server_exits_0_promptly() {
    let (_root, data) = workdir();
    let mut srv = Server::start(&data).await;
    let http = client();
    // Make sure the server is fully up (signal handlers installed) before the signal.
    let r = http.get(srv.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.terminate();
    let status =
        srv.wait_exit(Duration::from_secs(10)).await.expect("an idle server did not exit within 10 s of SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", srv.stderr());
}
