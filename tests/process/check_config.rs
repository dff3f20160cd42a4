//! `cairn check-config` as a new user meets it (issue 7, items 11 and 12): a mistake made
//! in an environment variable names the variable; environment values take the type of
//! their key; a bad duration gets an example; every bad glob of every rule is reported;
//! the non-loopback-without-users check of `serve` applies; a closed stdout is no panic;
//! `--data-dir` works as for `serve`; variables Kubernetes sets are a note, not an error.

use std::process::{Command, Output, Stdio};

use crate::cli::{assert_problems, run, text, write};
use crate::support::*;

/// Runs `cmd` with a stdout whose reading end is already closed, as in
/// `cairn check-config | head -1` once `head` has exited.
fn run_with_closed_stdout(cmd: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    cmd.stdout(Stdio::from(writer)).stderr(Stdio::piped()).output().expect("run cairn")
}

#[test]
fn check_config_names_the_environment_variable_of_a_mistake() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "[server]\nlisen = \"also wrong, from the file\"\n");
    let out = run(
        &["check-config", "--config", &f],
        &[("CAIRN_SERVER__LISEN", "x"), ("CAIRN_UPLOADS__SWEEP_INTERVAL", "0s"), ("CAIRN_LISTEN", "nowhere")],
        dir.path(),
    );
    assert_problems(
        &out,
        &[
            "CAIRN_SERVER__LISEN (server.lisen): unknown key",
            "CAIRN_UPLOADS__SWEEP_INTERVAL (uploads.sweep_interval) must be at least 1s",
            "CAIRN_LISTEN (server.listen) = \"nowhere\" is not an address",
        ],
    );
    // The flag wins over the variable, and is named instead.
    let out = run(&["check-config", "--listen", "nowhere:1"], &[("CAIRN_LISTEN", "127.0.0.1:1")], dir.path());
    assert_problems(&out, &["--listen (server.listen) = \"nowhere:1\" is not an address"]);
}

#[test]
fn check_config_keeps_environment_values_as_strings_where_keys_take_strings() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &["check-config"],
        &[
            ("CAIRN_AUTH__SERVICE", "2024"),
            ("CAIRN_LOG__LEVEL", "true"),
            ("CAIRN_AUTH__MAX_FAILED_LOGINS", "9"),
            ("CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE", "false"),
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn check_config_gives_an_example_for_a_bad_duration() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), "c.toml", "[auth]\ntoken_ttl = \"five minutes\"\n");
    let out = run(&["check-config", "--config", &f], &[("CAIRN_UPLOADS__EXPIRE_AFTER", "90")], dir.path());
    assert_problems(
        &out,
        &[
            "auth.token_ttl = \"five minutes\": expected a duration such as \"30s\", \"5m\", \"24h\"",
            "CAIRN_UPLOADS__EXPIRE_AFTER (uploads.expire_after) = 90: expected a duration such as \"30s\"",
        ],
    );
}

#[test]
fn check_config_reports_every_bad_glob_of_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "c.toml",
        r#"
[[immutability.rules]]
repositories = "apps/[web"
tags = ["v[", "latest", "{dev"]
mode = "sometimes"

[[immutability.rules]]
repositories = "**"
tags = ["ok-*", "rc-["]
mode = "mutable"

[[auth.grants]]
subjects = ["anonymous"]
repositories = "pub/[x"
actions = ["pull", "fly"]
"#,
    );
    let out = run(&["check-config", "--config", &f], &[], dir.path());
    assert_problems(
        &out,
        &[
            "immutability.rules[0].mode: unknown variant `sometimes`",
            "immutability.rules[0].repositories = \"apps/[web\"",
            "immutability.rules[0].tags[0] = \"v[\"",
            "immutability.rules[0].tags[2] = \"{dev\"",
            "immutability.rules[1].tags[1] = \"rc-[\"",
            "auth.grants[0].repositories = \"pub/[x\"",
            "auth.grants[0].actions[1] = \"fly\"",
        ],
    );
    assert!(text(&out.stderr).starts_with("7 configuration problem(s)"), "{}", text(&out.stderr));
}

/// DESIGN §8: the check `serve` makes before it listens, made by `check-config` too.
#[test]
fn check_config_refuses_a_non_loopback_address_without_users_like_serve() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check-config"], &[("CAIRN_SERVER__LISTEN", "0.0.0.0:5000")], dir.path());
    assert_problems(
        &out,
        &["CAIRN_SERVER__LISTEN (server.listen)", "refusing to listen on 0.0.0.0:5000", "allow_anonymous_write"],
    );
    let out = run(&["check-config", "--listen", "0.0.0.0:5000"], &[], dir.path());
    assert_problems(&out, &["--listen (server.listen)", "refusing to listen on 0.0.0.0:5000"]);
    let allowed = [("CAIRN_SERVER__LISTEN", "0.0.0.0:5000"), ("CAIRN_AUTH__ALLOW_ANONYMOUS_WRITE", "true")];
    let out = run(&["check-config"], &allowed, dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
}

#[test]
fn check_config_with_a_closed_stdout_exits_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_closed_stdout(cairn().arg("check-config").current_dir(dir.path()));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
    // The same for the other commands that print on stdout.
    let data = dir.path().join("data");
    let data_s = data.display().to_string();
    let out = run_with_closed_stdout(cairn().args(["migrate", "--data-dir", &data_s]).current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let out = run_with_closed_stdout(cairn().args(["token", "list", "--data-dir", &data_s]).current_dir(dir.path()));
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let mut hash = cairn();
    hash.arg("hash-password").stdin(Stdio::piped());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = hash.stdout(Stdio::from(writer)).stderr(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), b"pw\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
}

#[test]
fn check_config_and_migrate_take_a_data_dir_flag() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("flag-data");
    let data_s = data.display().to_string();
    let out = run(&["check-config", "--data-dir", &data_s], &[("CAIRN_DATA_DIR", "/srv/env")], dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(&format!("data dir: {data_s}")), "{stdout}");
    assert!(stdout.contains(&format!("database: sqlite://{data_s}/cairn.db")), "{stdout}");

    let out = run(&["check-config"], &[("CAIRN_DATA_DIR", &data_s)], dir.path());
    assert!(text(&out.stdout).contains(&format!("data dir: {data_s}")), "{}", text(&out.stdout));

    let elsewhere = dir.path().join("env-data");
    let out =
        run(&["migrate", "--data-dir", &data_s], &[("CAIRN_DATA_DIR", &elsewhere.display().to_string())], dir.path());
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    assert!(data.join("cairn.db").exists(), "migrate --data-dir did not create {}", data.display());
    assert!(!elsewhere.exists(), "migrate used CAIRN_DATA_DIR although --data-dir was given");
}

/// Issue 7, item 12: the variables Kubernetes sets for a Service named `cairn`.
const KUBERNETES: [(&str, &str); 6] = [
    ("CAIRN_PORT", "tcp://10.0.0.1:5000"),
    ("CAIRN_SERVICE_HOST", "10.0.0.1"),
    ("CAIRN_SERVICE_PORT", "5000"),
    ("CAIRN_PORT_5000_TCP", "tcp://10.0.0.1:5000"),
    ("CAIRN_PORT_5000_TCP_ADDR", "10.0.0.1"),
    ("CAIRN_PORT_5000_TCP_PROTO", "tcp"),
];

#[test]
fn check_config_lists_kubernetes_service_variables_as_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&["check-config"], &KUBERNETES, dir.path());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {err}");
    assert!(text(&out.stdout).contains("configuration is valid"), "{}", text(&out.stdout));
    let note = err.lines().find(|l| l.starts_with("note: ")).unwrap_or_else(|| panic!("no note in {err}"));
    for (k, _) in KUBERNETES {
        assert!(note.contains(k), "{k} not in {note}");
    }
    // A misspelt CAIRN_<SECTION>__<KEY> next to them is still an error.
    let mut env = KUBERNETES.to_vec();
    env.push(("CAIRN_SERVER__LISTN", "0.0.0.0:5000"));
    let out = run(&["check-config"], &env, dir.path());
    assert_problems(&out, &["CAIRN_SERVER__LISTN (server.listn): unknown key", "note: ignored", "CAIRN_PORT"]);
}

#[tokio::test]
async fn serve_starts_with_kubernetes_service_variables() {
    let (_root, data) = workdir();
    let srv = Server::start_with(&data, None, &KUBERNETES).await;
    let http = client();
    let digest = push_blob(&http, &srv, "k8s/app", b"pod").await;
    assert_blob(&http, &srv, "k8s/app", &digest, b"pod").await;
}
