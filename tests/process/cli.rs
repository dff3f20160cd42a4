//! The command line (DESIGN §9): `check-config` lists every configuration problem at once
//! (exit 2) or summarises a valid config (exit 0); `serve` with a bad config exits
//! without listening or touching the data directory; `CAIRN_*` environment overrides take
//! effect and unknown ones are reported; `migrate` creates the schema on a fresh data
//! directory and can be run again. More of `check-config` is in `check_config.rs`.

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use crate::support::*;

pub(crate) fn run(args: &[&str], env: &[(&str, &str)], cwd: &Path) -> Output {
    let mut c = cairn();
    c.args(args).current_dir(cwd);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run cairn")
}

pub(crate) use crate::support::text;

pub(crate) fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}

const VALID: &str = r#"
[server]
listen = "127.0.0.1:5123"
data_dir = "/var/lib/cairn-test"
shutdown_grace = "5s"

[database]
url = "sqlite:///var/lib/cairn-test/meta.db"

[storage]
kind = "filesystem"

[uploads]
expire_after = "2h"
sweep_interval = "30s"

[log]
format = "json"
level = "info,cairn=debug"
"#;

/// Asserts exit code 2 and that stderr names every needle.
pub(crate) fn assert_problems(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stdout: {}\nstderr: {err}", text(&out.stdout));
    let missing: Vec<&&str> = needles.iter().filter(|n| !err.contains(**n)).collect();
    assert!(missing.is_empty(), "stderr does not name {missing:?}; it was:\n{err}");
}

#[test]
fn check_config_reports_every_problem_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.toml",
        r#"
[server]
listen = "not-an-address"
colour = "blue"

[storage]
kind = "floppy"

[uploads]
expire_sooner = "1h"

[log]
level = "[[nope"
"#,
    );
    let out = run(&["check-config", "--config", &f], &[], dir.path());
    assert_problems(&out, &["server.colour", "uploads.expire_sooner", "server.listen", "storage.kind", "log.level"]);
}

#[test]
fn check_config_reports_unknown_keys_and_bad_values_together() {
    // The same as above without a bad enum value.
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "bad.toml",
        r#"
[server]
listen = "not-an-address"
colour = "blue"

[uploads]
expire_sooner = "1h"
expire_after = "10s"

[log]
level = "[[nope"
"#,
    );
    let out = run(&["check-config", "--config", &f], &[], dir.path());
    assert_problems(
        &out,
        &["server.colour", "uploads.expire_sooner", "server.listen", "uploads.expire_after", "log.level"],
    );
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "ok.toml", VALID);
    let out = run(&["check-config", "--config", &f], &[], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:5123"), "{stdout}");
    assert!(stdout.contains("/var/lib/cairn-test"), "{stdout}");
    assert!(stdout.contains("sqlite:///var/lib/cairn-test/meta.db"), "{stdout}");
}

#[test]
fn env_overrides_take_effect() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "ok.toml", VALID);
    let out = run(&["check-config", "--config", &f], &[("CAIRN_SERVER__LISTEN", "127.0.0.1:7001")], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("listen:   127.0.0.1:7001"), "{stdout}");

    // Aliases, and CAIRN_CONFIG instead of --config.
    let out = run(
        &["check-config"],
        &[("CAIRN_CONFIG", &f), ("CAIRN_LISTEN", "127.0.0.1:7002"), ("CAIRN_DATA_DIR", "/srv/other")],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("listen:   127.0.0.1:7002"), "{stdout}");
    assert!(stdout.contains("data dir: /srv/other"), "{stdout}");

    // An override that is itself invalid is reported under its key.
    let out = run(&["check-config", "--config", &f], &[("CAIRN_SERVER__LISTEN", "nowhere")], dir.path());
    assert_problems(&out, &["server.listen", "nowhere"]);
}

#[test]
fn unknown_environment_variables_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check-config"], &[("CAIRN_FOO", "1"), ("CAIRN_BOGUS__KEY", "x")], dir.path());
    // A CAIRN_<SECTION>__<KEY> that is no key is an error; CAIRN_FOO cannot be a key at all
    // (it could be a Kubernetes service variable), so it is a note.
    assert_problems(&out, &["CAIRN_BOGUS__KEY (bogus.key): unknown key", "note: ignored", "CAIRN_FOO"]);
}

#[test]
fn serve_with_a_bad_config_exits_without_listening() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "bad.toml", "[server]\ncolour = \"blue\"\n[log]\nlevel = \"[[nope\"\n");
    let data = dir.path().join("data");
    let mut child = cairn()
        .args(["serve", "--listen", "127.0.0.1:0", "--config", &f, "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve with a bad config was still running after 15 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(!text(&out.stdout).contains("listening"), "{}", text(&out.stdout));
    assert_problems(&out, &["server.colour", "log.level"]);
    assert!(!data.exists(), "serve created the data directory before rejecting its config");
}

#[test]
fn migrate_creates_the_schema_on_a_fresh_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh");
    let data_s = data.display().to_string();
    for attempt in 1..=2 {
        let out = run(&["migrate"], &[("CAIRN_DATA_DIR", &data_s)], dir.path());
        assert_eq!(
            out.status.code(),
            Some(0),
            "migrate #{attempt}: stdout {} stderr {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let db = data.join("cairn.db");
        let len = std::fs::metadata(&db)
            .unwrap_or_else(|e| panic!("migrate #{attempt} did not create {}: {e}", db.display()))
            .len();
        assert!(len > 0, "cairn.db is empty");
    }
}

#[tokio::test]
async fn serve_takes_its_data_dir_from_the_environment() {
    let (root, data) = workdir();
    let other = root.path().join("from-env");
    let other_s = other.display().to_string();
    // `--data-dir` (flag) wins over CAIRN_DATA_DIR; check the variable alone via a
    // config-less `migrate`, then that the flag overrides it for `serve`.
    let out = run(&["migrate"], &[("CAIRN_DATA_DIR", &other_s)], root.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(other.join("cairn.db").exists());
    let srv = Server::start_with(&data, None, &[("CAIRN_DATA_DIR", &other_s)]).await;
    let http = client();
    let digest = push_blob(&http, &srv, "env/app", b"hello").await;
    assert_blob(&http, &srv, "env/app", &digest, b"hello").await;
    assert!(data.join("cairn.db").exists(), "--data-dir did not win over CAIRN_DATA_DIR");
}

/// DESIGN §8: on a non-loopback address with no users, `serve` refuses to start and says
/// why, unless the config allows anonymous writes.
#[test]
fn serve_refuses_a_non_loopback_address_without_users() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = cairn()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    assert!(err.contains("refusing to listen on 0.0.0.0:0") && err.contains("allow_anonymous_write"), "{err}");
    assert!(!text(&out.stdout).contains("listening"));

    let mut child = cairn()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(&data)
        .env("CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE", "true")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("cairn listening on http://0.0.0.0:"), "{line:?}");
}
