//! Connections (`[server]` timeouts and cap) over raw sockets and real uploads: headers
//! that never complete, idle keep-alive connections, request bodies that stall (while a
//! slow but steady one completes), downloads the client stops reading, and the connection
//! cap (busy connections hold it; idle ones make room). Timeouts are configured short.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A server with these timeouts (ms) and cap.
async fn spawn_limited(header: u64, keepalive: u64, body: u64, max_connections: usize) -> TestApp {
    spawn_with(move |c| {
        c.server.header_timeout = MS(header);
        c.server.keepalive_timeout = MS(keepalive);
        c.server.body_timeout = MS(body);
        c.server.max_connections = max_connections;
    })
    .await
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.base.trim_start_matches("http://")).await.unwrap()
}

/// Reads until the server closes the connection (EOF or reset) and returns what came and
/// how long it took; `None` if it was still open after `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> Option<(Vec<u8>, Duration)> {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 64 << 10];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((got, start.elapsed())),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a GET and reads one complete response with a `Content-Length` body.
async fn get_on(s: &mut TcpStream, path: &str) -> String {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: cairn\r\n\r\n").as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("response").unwrap();
        assert!(n > 0, "the connection closed before the response was complete");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
                .unwrap_or(0);
            if body.len() >= len {
                return head.lines().next().unwrap().to_string();
            }
        }
    }
}

#[tokio::test]
async fn headers_that_do_not_arrive_in_time_close_the_connection() {
    let app = spawn_limited(400, 30_000, 30_000, 100).await;
    // Nothing at all.
    let mut silent = connect(&app).await;
    // Slowloris: a byte of headers every 100 ms, never the blank line.
    let mut slow = connect(&app).await;
    slow.write_all(b"GET /v2/ HTTP/1.1\r\nHost: cairn\r\n").await.unwrap();
    let drip = async {
        for _ in 0..40 {
            tokio::time::sleep(MS(100)).await;
            if slow.write_all(b"x").await.is_err() {
                return true;
            }
        }
        false
    };
    let (gone, closed) = tokio::join!(closed_within(&mut silent, Duration::from_secs(3)), drip);
    let (_, after) = gone.expect("a connection that sent nothing is still open after 3 s (header_timeout 400 ms)");
    assert!(after >= MS(300), "closed after {after:?}, before the timeout");
    assert!(closed, "a connection dripping header bytes was still open after 4 s (header_timeout 400 ms)");
    // A normal request on a new connection is served.
    let mut ok = connect(&app).await;
    assert_eq!(get_on(&mut ok, "/healthz").await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout() {
    // The header timeout is shorter than the keep-alive one and does not apply while idle.
    let app = spawn_limited(300, 1000, 30_000, 100).await;
    let mut s = connect(&app).await;
    assert_eq!(get_on(&mut s, "/healthz").await, "HTTP/1.1 200 OK");
    tokio::time::sleep(MS(600)).await;
    assert_eq!(get_on(&mut s, "/healthz").await, "HTTP/1.1 200 OK", "reused after 600 ms idle");
    let (rest, after) = closed_within(&mut s, Duration::from_secs(4))
        .await
        .expect("an idle keep-alive connection is still open after 4 s (keepalive_timeout 1 s)");
    assert!(rest.is_empty(), "unexpected bytes: {:?}", String::from_utf8_lossy(&rest));
    assert!(after >= MS(900), "closed after {after:?}, before the keep-alive timeout");
}

/// A streaming request body fed through a channel.
fn channel_body() -> (mpsc::UnboundedSender<Result<Bytes, std::io::Error>>, reqwest::Body) {
    let (tx, rx) = mpsc::unbounded();
    (tx, reqwest::Body::wrap_stream(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_fails_while_a_slow_steady_one_completes() {
    let app = spawn_limited(30_000, 30_000, 500, 100).await;
    // Slow but steady: 12 pieces 150 ms apart, 1.8 s in all (more than the 500 ms timeout).
    let blob = random_bytes(12 << 10);
    let d = digest(&blob);
    let loc = app.start_upload("conn/slow").await;
    let (tx, body) = channel_body();
    let put = app.http.put(app.url(&format!("{loc}?digest={d}"))).body(body).send();
    let feed = async move {
        for piece in blob.chunks(1 << 10) {
            tokio::time::sleep(MS(150)).await;
            tx.unbounded_send(Ok(Bytes::copy_from_slice(piece))).unwrap();
        }
    };
    let (r, ()) = tokio::join!(put, feed);
    let r = r.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    assert_eq!(app.get(&format!("/v2/conn/slow/blobs/{d}")).await.status(), StatusCode::OK);

    // Stalled: one piece, then nothing (the sender stays open).
    let loc = app.start_upload("conn/stalled").await;
    let (tx, body) = channel_body();
    tx.unbounded_send(Ok(Bytes::from_static(b"first bytes"))).unwrap();
    let started = Instant::now();
    let put = app.http.put(app.url(&format!("{loc}?digest={d}"))).body(body).send();
    let r = tokio::time::timeout(Duration::from_secs(5), put)
        .await
        .expect("a stalled body was still being waited for after 5 s (body_timeout 500 ms)");
    assert!(started.elapsed() >= MS(400), "answered after {:?}", started.elapsed());
    if let Ok(r) = r {
        let body: Value = assert_error(r, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;
        let msg = body["errors"][0]["message"].as_str().unwrap();
        assert!(msg.contains("body_timeout"), "{msg}");
    }
    drop(tx);
    assert_eq!(app.head(&format!("/v2/conn/stalled/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_the_client_stops_reading_is_cut_off() {
    let app = spawn_limited(30_000, 30_000, 500, 100).await;
    // Larger than the socket buffers; filled cheaply (random bytes are slow in debug builds).
    let mut blob = vec![0x5a; 24 << 20];
    blob[..16].copy_from_slice(&random_bytes(16));
    let d = app.push_blob("conn/big", &blob).await;
    let mut s = connect(&app).await;
    s.write_all(format!("GET /v2/conn/big/blobs/{d} HTTP/1.1\r\nHost: cairn\r\n\r\n").as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading for a while: the socket buffers fill and the server's writes stall.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Then read on: the connection ends before the whole blob arrives.
    let mut total = n;
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(10);
    while total < blob.len() {
        match tokio::time::timeout_at(deadline.into(), s.read(&mut buf)).await {
            Err(_) => panic!("neither the blob nor the end of the connection came within 10 s"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(k)) => total += k,
        }
    }
    assert!(
        total < blob.len(),
        "the whole blob arrived ({total} bytes) although the client stopped reading for 2 s (body_timeout 500 ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_busy_connections_hold_and_idle_ones_make_room() {
    let app = spawn_limited(30_000, 30_000, 30_000, 3).await;
    // Three uploads in progress take every slot.
    // The sessions are opened first, on the test client's one pooled connection: opened
    // between the PUTs, that connection could be the idle one the server closes to make room
    // for the next PUT just as the client sends on it (hyper IncompleteMessage, seen in CI).
    let mut locations = Vec::new();
    for i in 0..3 {
        locations.push(app.start_upload(&format!("conn/cap{i}")).await);
    }
    let mut feeds = Vec::new();
    let mut puts = Vec::new();
    for loc in locations {
        let (tx, body) = channel_body();
        tx.unbounded_send(Ok(Bytes::from_static(b"busy"))).unwrap();
        let c = reqwest::Client::new();
        puts.push(tokio::spawn(c.put(app.url(&format!("{loc}?digest={}", digest(b"busy")))).body(body).send()));
        feeds.push(tx);
    }
    tokio::time::sleep(MS(300)).await;
    let waiting = tokio::spawn(reqwest::Client::new().get(app.url("/healthz")).send());
    tokio::time::sleep(MS(800)).await;
    assert!(!waiting.is_finished(), "a fourth connection was served while three uploads held the cap of 3");
    // One upload ends; the waiting connection gets its slot.
    feeds.pop();
    let r = puts.pop().unwrap().await.unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.expect("still waiting").unwrap().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(feeds);
    for p in puts {
        let _ = p.await;
    }

    // Three idle keep-alive connections fill the cap; a new client gets in by closing the
    // one idle longest.
    let mut idle = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&app).await;
        assert_eq!(get_on(&mut s, "/healthz").await, "HTTP/1.1 200 OK");
        idle.push(s);
        tokio::time::sleep(MS(50)).await;
    }
    let r = tokio::time::timeout(Duration::from_secs(3), reqwest::Client::new().get(app.url("/healthz")).send())
        .await
        .expect("a new connection waited although every open one was idle");
    assert_eq!(r.unwrap().status(), StatusCode::OK);
    assert!(closed_within(&mut idle[0], Duration::from_secs(2)).await.is_some(), "the oldest idle one was closed");
}
