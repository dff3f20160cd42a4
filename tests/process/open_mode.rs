//! Open mode (no users, grants or robots: anyone may push) ends with the first robot
//! token, and nobody is left to guess (issue 7, item 11): `cairn token create` says so on
//! stderr and in its log, and the server logs it when it notices robots, at start or
//! while it runs.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::cli::text;
use crate::support::*;

fn token_create(data: &std::path::Path, name: &str) -> std::process::Output {
    cairn()
        .args(["token", "create", "--name", name, "--role", "writer", "--data-dir"])
        .arg(data)
        .output()
        .expect("run cairn token create")
}

#[tokio::test]
async fn token_create_on_an_open_registry_says_that_open_mode_ends() {
    let (_root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();
    push_blob(&http, &srv, "open/app", b"anyone may push").await;

    let out = token_create(&data, "ci");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(text(&out.stdout).contains("secret: cairn_"), "{}", text(&out.stdout));
    assert!(err.contains("this registry was open") && err.contains("Robot \"ci\" ends that"), "{err}");
    assert!(err.contains("[[auth.grants]]") && err.contains("\"anonymous\""), "no way forward in: {err}");
    let logged = err.lines().any(|l| l.contains("WARN") && l.contains("open mode ended") && l.contains("ci"));
    assert!(logged, "no warning logged: {err}");

    // The running server notices, closes, and says why in its log.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(srv.url("/v2/")).send().await.unwrap();
        if r.status() == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(Instant::now() < deadline, "anonymous /v2/ still answers {} after the robot exists", r.status());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = srv.stderr();
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains("robot tokens exist")), "server log:\n{log}");

    // A second robot changes nothing, so nothing is said.
    let out = token_create(&data, "cd");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("open"), "{}", text(&out.stderr));
}

#[tokio::test]
async fn serve_logs_at_start_that_robots_end_open_mode() {
    let (_root, data) = workdir();
    let out = token_create(&data, "ci");
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let srv = Server::start(&data).await;
    let log = srv.stderr();
    assert!(log.lines().any(|l| l.contains("WARN") && l.contains("robot tokens exist")), "server log:\n{log}");
    assert!(!log.contains("ANYONE who can reach"), "server log:\n{log}");
    let r = client().get(srv.url("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}
