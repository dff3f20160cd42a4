//! What the process writes where (issue 7, item 11): log lines carry ANSI colours only on
//! a terminal; with JSON logs, stdout holds nothing but JSON lines (the address line is a
//! JSON event); a closed stdout does not stop the server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::cli::text;
use crate::support::*;

/// Waits for `cairn listening on http://ADDR` in the log file and returns ADDR.
async fn address_from_log(child: &mut Child, log: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some((_, rest)) = text.split_once("cairn listening on http://") {
            return rest.split(|c: char| c.is_whitespace() || c == '"').next().unwrap_or("").to_string();
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("cairn serve exited ({status}) before listening; log:\n{text}");
        }
        assert!(Instant::now() < deadline, "no address in the log within 30 s:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn log_lines_have_no_colours_when_stderr_is_not_a_terminal() {
    let (_root, data) = workdir();
    // Open mode warns at start, so the log has at least one line.
    let srv = Server::start(&data).await;
    let log = srv.stderr();
    assert!(log.contains("WARN"), "expected a warning in:\n{log}");
    assert!(!log.contains('\u{1b}'), "ANSI escapes in a log written to a file:\n{log:?}");
}

#[tokio::test]
async fn json_logs_leave_nothing_but_json_on_stdout() {
    let (root, data) = workdir();
    let log = root.path().join("serve.log");
    let mut child = cairn()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("CAIRN_LOG__FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    let read = tokio::task::spawn_blocking(move || stdout.read_line(&mut first).map(|_| (first, stdout)));
    let (first, mut stdout) = tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .expect("no line on stdout within 30 s")
        .unwrap()
        .unwrap();
    let event: Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("stdout line {first:?} is not JSON: {e}"));
    let addr = event["fields"]["address"].as_str().unwrap_or_else(|| panic!("no fields.address in {first}"));
    assert_eq!(event["fields"]["message"], format!("cairn listening on http://{addr}"));
    let r = client().get(format!("http://{addr}/v2/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let term = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let rest = tokio::task::spawn_blocking(move || {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).map(|_| rest)
    });
    let rest = tokio::time::timeout(Duration::from_secs(30), rest).await.expect("stdout still open").unwrap().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    for line in rest.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "stdout line is not JSON: {line:?}");
    }
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.lines().count() >= 2, "expected log lines:\n{log}");
    for line in log.lines() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "stderr line is not JSON: {line:?}");
    }

    // `migrate` answers on stdout with a JSON event too.
    let out = cairn().args(["migrate", "--data-dir"]).arg(&data).env("CAIRN_LOG__FORMAT", "json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.trim().is_empty());
    for line in stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("migrate stdout {line:?}: {e}"));
        assert_eq!(v["fields"]["message"], "database schema is up to date");
    }
}

#[tokio::test]
async fn serve_keeps_running_when_stdout_is_closed() {
    let (root, data) = workdir();
    let log = root.path().join("serve.log");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = cairn()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(std::fs::File::create(&log).unwrap()))
        .spawn()
        .unwrap();
    let addr = address_from_log(&mut child, &log).await;
    let r = client().get(format!("http://{addr}/v2/")).send().await;
    let alive = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(alive, "serve exited after failing to print its address; log:\n{log}");
    assert_eq!(r.map(|r| r.status()).ok(), Some(StatusCode::OK), "log:\n{log}");
    assert!(!log.contains("panicked"), "{log}");
}
