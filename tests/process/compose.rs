//! `docker-compose.yml`, `deploy/nginx.conf` and the `Dockerfile`, checked without an image
//! (none can be pulled here): `docker-compose config` (Debian's `docker-compose`, 1.29)
//! parses and resolves the compose file, and the tests read its output. The services exist and
//! start in order (healthy PostgreSQL and MinIO, the bucket, `cairn migrate`, the nodes, the
//! proxy); both nodes have the same PostgreSQL URL, S3 settings and signing keys on one shared
//! volume; the real `cairn check-config` accepts each Cairn service's environment as it would
//! run (no invented key); the proxy publishes port 5000 to nginx's listen port, with a config
//! file that exists, streams bodies unbuffered and names both nodes. The Dockerfile is a
//! multi-stage build whose every `COPY` source exists and is not left out by `.dockerignore`.
//!
//! Without `docker-compose` the compose tests fail with the command that installs it, like
//! the other tests here that need a tool (`scripts/install-test-deps` installs it; CI runs
//! that); this harness cannot report a test as ignored at run time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::cli::text;
use crate::support::*;

/// Every service, so that a rename or a removal is noticed.
const SERVICES: [&str; 7] = ["postgres", "minio", "minio-setup", "cairn-migrate", "cairn-1", "cairn-2", "proxy"];
const NODES: [&str; 2] = ["cairn-1", "cairn-2"];
/// What the nodes run with: the image's `CMD` (`serve --listen 0.0.0.0:5000`).
const NODE_LISTEN: &str = "0.0.0.0:5000";
/// Variables the compose file interpolates: unset, so that the file's defaults are checked.
const INTERPOLATED: [&str; 4] = ["POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD", "PUBLIC_URL"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(repo().join(name)).unwrap_or_else(|e| panic!("read {name}: {e}"))
}

/// The interpreter docker-compose 1.x runs on (its `#!` line), which has PyYAML: the
/// `python3` first on PATH may be another one.
fn compose_python() -> Command {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let script = std::env::split_paths(&path).map(|d| d.join("docker-compose")).find(|p| p.is_file());
    let first = script.and_then(|s| std::fs::read(s).ok()).and_then(|b| {
        let line = b.split(|c| *c == b'\n').next()?.to_vec();
        String::from_utf8(line).ok()?.strip_prefix("#!").map(str::to_string)
    });
    let words: Vec<String> = first.unwrap_or_default().split_whitespace().map(str::to_string).collect();
    match words.split_first() {
        Some((program, args)) if program.contains("python") || program.ends_with("/env") => {
            let mut c = Command::new(program);
            c.args(args);
            c
        }
        _ => Command::new("python3"),
    }
}

/// `docker-compose -f docker-compose.yml config`, as JSON (the YAML it prints, converted by
/// the python3 docker-compose runs on).
fn compose_config() -> Value {
    let file = repo().join("docker-compose.yml");
    let mut cmd = Command::new("docker-compose");
    cmd.arg("-f").arg(&file).arg("config").current_dir(repo());
    for v in INTERPOLATED {
        cmd.env_remove(v);
    }
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "docker-compose could not be run ({e}); it checks docker-compose.yml: install it \
             (Debian: apt-get install docker-compose; scripts/install-test-deps does)"
        )
    });
    assert!(out.status.success(), "docker-compose config rejects docker-compose.yml:\n{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let mut py = compose_python()
        .args(["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run the python3 docker-compose runs on");
    use std::io::Write as _;
    py.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let json = py.wait_with_output().unwrap();
    assert!(json.status.success(), "python3 cannot read the YAML of docker-compose config:\n{}", text(&json.stderr));
    serde_json::from_slice(&json.stdout).unwrap()
}

fn service<'a>(config: &'a Value, name: &str) -> &'a Value {
    config["services"].get(name).unwrap_or_else(|| panic!("no service {name} in docker-compose.yml"))
}

/// A service's environment; `env["KEY"]` panics naming the service and the key.
#[derive(Debug, PartialEq)]
struct Env {
    service: String,
    vars: BTreeMap<String, String>,
}

impl std::ops::Index<&str> for Env {
    type Output = String;
    fn index(&self, key: &str) -> &String {
        self.vars
            .get(key)
            .unwrap_or_else(|| panic!("{} has no {key} in its environment: {:?}", self.service, self.vars))
    }
}

/// A service's environment (docker-compose prints it as a map).
fn env(config: &Value, name: &str) -> Env {
    let e = service(config, name)["environment"].as_object().unwrap_or_else(|| panic!("{name} has no environment"));
    let vars =
        e.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))).collect();
    Env { service: name.to_string(), vars }
}

/// `service` waits for `other` to reach `condition`.
fn assert_waits(config: &Value, name: &str, other: &str, condition: &str) {
    let got = &service(config, name)["depends_on"][other]["condition"];
    assert_eq!(got, condition, "{name} must wait for {other} to be {condition}; depends_on: {}", service(config, name));
}

/// `(source, target)` of each volume of a service, from `source:target[:mode]`.
fn mounts(config: &Value, name: &str) -> Vec<(String, String)> {
    let volumes = service(config, name)["volumes"].as_array().unwrap_or_else(|| panic!("{name} has no volumes"));
    volumes
        .iter()
        .map(|v| match v {
            Value::String(s) => {
                let parts: Vec<&str> = s.split(':').collect();
                (parts[0].to_string(), parts[1].to_string())
            }
            long => (long["source"].as_str().unwrap().to_string(), long["target"].as_str().unwrap().to_string()),
        })
        .collect()
}

/// `(published, target)` host and container ports of a service.
fn ports(config: &Value, name: &str) -> Vec<(u16, u16)> {
    let ports = service(config, name)["ports"].as_array().unwrap_or_else(|| panic!("{name} publishes no port"));
    ports
        .iter()
        .map(|p| match p {
            // [ip:]published:target[/protocol]
            Value::String(s) => {
                let s = s.split('/').next().unwrap();
                let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                (parts[1].parse().unwrap(), parts[0].parse().unwrap())
            }
            long => {
                let num = |v: &Value| v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap() as u16;
                (num(&long["published"]), num(&long["target"]))
            }
        })
        .collect()
}

/// nginx's directives, `;`-ended, `{` and `}` as their own entries, comments left out, and
/// whitespace collapsed: `["worker_processes auto", "events", "{", ...]`.
fn nginx_directives(conf: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in conf.lines() {
        let line = line.split('#').next().unwrap();
        for c in line.chars().chain([' ']) {
            match c {
                ';' | '{' | '}' => {
                    let d = current.split_whitespace().collect::<Vec<_>>().join(" ");
                    if !d.is_empty() {
                        out.push(d);
                    }
                    if c != ';' {
                        out.push(c.to_string());
                    }
                    current.clear();
                }
                c => current.push(c),
            }
        }
    }
    out
}

fn nginx_listen_port() -> u16 {
    let directives = nginx_directives(&read("deploy/nginx.conf"));
    let listen: Vec<&String> = directives.iter().filter(|d| d.starts_with("listen ")).collect();
    assert_eq!(listen.len(), 1, "deploy/nginx.conf should listen once: {listen:?}");
    let port = listen[0].trim_start_matches("listen ").rsplit(':').next().unwrap();
    port.parse().unwrap_or_else(|_| panic!("listen port of {:?}", listen[0]))
}

#[test]
fn compose_runs_two_nodes_on_postgres_and_s3_behind_the_proxy() {
    let config = compose_config();
    let services: Vec<&String> = config["services"].as_object().unwrap().keys().collect();
    let mut want: Vec<&str> = SERVICES.to_vec();
    want.sort();
    assert_eq!(services, want, "the services of docker-compose.yml");

    // Both nodes and the migration: one PostgreSQL, one bucket, the same settings.
    let node = env(&config, "cairn-1");
    assert_eq!(env(&config, "cairn-2").vars, node.vars, "cairn-2 must be configured like cairn-1");
    assert_eq!(env(&config, "cairn-migrate").vars, node.vars, "cairn-migrate must migrate the nodes' database");
    let url = &node["CAIRN_DATABASE_URL"];
    assert!(url.starts_with("postgres://") && url.contains("@postgres:5432/"), "CAIRN_DATABASE_URL = {url}");
    let postgres = env(&config, "postgres");
    let db_password = &postgres["POSTGRES_PASSWORD"];
    let db_user = &postgres["POSTGRES_USER"];
    let db_name = &postgres["POSTGRES_DB"];
    assert_eq!(url, &format!("postgres://{db_user}:{db_password}@postgres:5432/{db_name}"));
    assert_eq!(node["CAIRN_STORAGE__KIND"], "s3");
    assert_eq!(node["CAIRN_STORAGE__ENDPOINT"], "http://minio:9000");
    assert_eq!(node["CAIRN_STORAGE__PATH_STYLE"], "true");
    let minio = env(&config, "minio");
    assert_eq!(node["CAIRN_STORAGE__ACCESS_KEY_ID"], minio["MINIO_ROOT_USER"]);
    assert_eq!(node["CAIRN_STORAGE__SECRET_ACCESS_KEY"], minio["MINIO_ROOT_PASSWORD"]);
    let bucket = &node["CAIRN_STORAGE__BUCKET"];
    let setup = service(&config, "minio-setup");
    assert!(
        setup["command"].as_array().unwrap().iter().any(|a| a.as_str() == Some(&format!("store/{bucket}"))),
        "minio-setup must create the nodes' bucket {bucket}: {setup}"
    );

    // Built from this repository's Dockerfile.
    for name in ["cairn-migrate", "cairn-1", "cairn-2"] {
        let context = service(&config, name)["build"]["context"].as_str().unwrap_or_else(|| panic!("{name}: build"));
        assert_eq!(
            Path::new(context).canonicalize().unwrap(),
            repo().canonicalize().unwrap(),
            "{name}'s build context"
        );
    }
    assert!(repo().join("Dockerfile").is_file());

    // One signing key pair for every node: the key files live on one volume they all mount.
    for key in ["CAIRN_AUTH__KEY_FILE", "CAIRN_AUDIT__KEY_FILE"] {
        let dir = Path::new(&node[key]).parent().unwrap().to_str().unwrap().to_string();
        let sources: Vec<String> = ["cairn-migrate", "cairn-1", "cairn-2"]
            .iter()
            .map(|n| {
                let m = mounts(&config, n);
                m.iter()
                    .find(|(_, t)| *t == dir)
                    .unwrap_or_else(|| panic!("{n} does not mount {dir} ({key})"))
                    .0
                    .clone()
            })
            .collect();
        assert!(sources.iter().all(|s| *s == sources[0]), "{dir} must be one volume for every node: {sources:?}");
        assert!(config["volumes"].get(&sources[0]).is_some(), "{} must be a named volume", sources[0]);
    }
    let data = |n: &str| mounts(&config, n).into_iter().find(|(_, t)| t == "/data").map(|(s, _)| s);
    assert_ne!(data("cairn-1"), data("cairn-2"), "each node has its own /data");

    // Start order.
    assert_waits(&config, "minio-setup", "minio", "service_healthy");
    assert_waits(&config, "cairn-migrate", "postgres", "service_healthy");
    assert_waits(&config, "cairn-migrate", "minio-setup", "service_completed_successfully");
    assert_eq!(service(&config, "cairn-migrate")["command"], serde_json::json!(["migrate"]));
    for n in NODES {
        assert_waits(&config, n, "cairn-migrate", "service_completed_successfully");
        assert_waits(&config, "proxy", n, "service_healthy");
        assert!(service(&config, n)["healthcheck"].is_null(), "{n}: the image's HEALTHCHECK is the one to use");
    }
    let pg_check = service(&config, "postgres")["healthcheck"]["test"].to_string();
    assert!(pg_check.contains("pg_isready"), "postgres healthcheck: {pg_check}");
    assert!(!service(&config, "minio")["healthcheck"]["test"].is_null(), "minio needs a healthcheck");

    // The proxy: port 5000 to nginx's listen port, and the config file that exists.
    let published = ports(&config, "proxy");
    assert_eq!(published, vec![(5000, nginx_listen_port())], "the proxy's ports");
    let conf = mounts(&config, "proxy")
        .into_iter()
        .find(|(_, t)| t == "/etc/nginx/nginx.conf")
        .expect("the proxy mounts /etc/nginx/nginx.conf")
        .0;
    assert_eq!(
        Path::new(&conf).canonicalize().unwrap_or_else(|e| panic!("{conf}: {e}")),
        repo().join("deploy/nginx.conf").canonicalize().unwrap()
    );
}

#[test]
fn every_cairn_service_environment_is_a_valid_configuration() {
    let config = compose_config();
    let (root, _) = workdir();
    for name in ["cairn-migrate", "cairn-1", "cairn-2"] {
        let vars = env(&config, name);
        let mut cmd = cairn();
        // As in the container: the image sets CAIRN_DATA_DIR, the node's CMD the address.
        cmd.args(["check-config", "--listen", NODE_LISTEN]).current_dir(root.path()).env("CAIRN_DATA_DIR", "/data");
        cmd.envs(&vars.vars);
        let out = cmd.output().expect("run cairn check-config");
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert!(out.status.success(), "{name}'s environment is not a valid configuration:\n{stderr}");
        assert!(!stderr.contains("note:"), "{name}: variables cairn ignores:\n{stderr}");
        let bucket = &vars["CAIRN_STORAGE__BUCKET"];
        for needle in [
            "configuration is valid".to_string(),
            format!("listen:   {NODE_LISTEN}"),
            "database: postgres://".to_string(),
            format!("storage:  s3 bucket {bucket} "),
            "endpoint http://minio:9000 path-style".to_string(),
        ] {
            assert!(stdout.contains(&needle), "{name}: check-config does not say {needle:?}:\n{stdout}");
        }
    }
}

#[test]
fn the_nginx_config_streams_unbuffered_to_both_nodes() {
    let d = nginx_directives(&read("deploy/nginx.conf"));
    let has = |want: &str| d.iter().any(|x| x == want);
    for n in NODES {
        assert!(has(&format!("server {n}:5000")), "deploy/nginx.conf has no upstream server {n}:5000: {d:?}");
    }
    for want in [
        "upstream cairn",
        "proxy_pass http://cairn",
        "client_max_body_size 0",
        "proxy_request_buffering off",
        "proxy_buffering off",
        "proxy_http_version 1.1",
        "proxy_set_header Host $http_host",
        "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for",
        "proxy_set_header X-Forwarded-Proto $scheme",
    ] {
        assert!(has(want), "deploy/nginx.conf lacks `{want};`: {d:?}");
    }
    // Timeouts long enough for a big push: at least 5 minutes between two reads or writes.
    for key in ["client_body_timeout", "proxy_send_timeout", "proxy_read_timeout", "send_timeout"] {
        let value = d
            .iter()
            .find_map(|x| x.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("deploy/nginx.conf does not set {key}"));
        // nginx reads a bare number as seconds.
        let t = match value.parse::<u64>() {
            Ok(secs) => std::time::Duration::from_secs(secs),
            Err(_) => humantime::parse_duration(value).unwrap_or_else(|e| panic!("{key} {value}: {e}")),
        };
        assert!(t >= std::time::Duration::from_secs(300), "{key} {value} is short for a big push");
    }
    assert_eq!(d.iter().filter(|x| *x == "{").count(), d.iter().filter(|x| *x == "}").count(), "unbalanced braces");
}

/// The Dockerfile's instructions, continuation lines joined, comments left out.
fn dockerfile_instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in read("Dockerfile").lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && current.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(t);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

#[test]
fn the_dockerfile_is_multi_stage_and_copies_only_what_exists() {
    let instructions = dockerfile_instructions();
    let words = |i: &String| i.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    let from: Vec<Vec<String>> = instructions.iter().map(words).filter(|w| w[0] == "FROM").collect();
    assert!(from.len() >= 2, "the Dockerfile is not a multi-stage build: {from:?}");
    let stage = match from[0].as_slice() {
        [_, _, as_, name] if as_.eq_ignore_ascii_case("AS") => name.clone(),
        other => panic!("the first stage has no name (FROM image AS name): {other:?}"),
    };
    let from_stage = format!("--from={stage}");
    assert!(
        instructions.iter().any(|i| i.starts_with("COPY") && i.contains(&from_stage)),
        "the last stage copies nothing {from_stage}"
    );
    assert!(
        instructions.iter().any(|i| i.starts_with("RUN") && i.contains("cargo build --release --locked")),
        "the build stage must run cargo build --release --locked"
    );
    for want in ["ENTRYPOINT [\"cairn\"]", "EXPOSE 5000"] {
        assert!(instructions.iter().any(|i| i == want), "the Dockerfile lacks {want}");
    }
    let user = instructions.iter().rev().find_map(|i| i.strip_prefix("USER ")).expect("the image sets a USER");
    assert!(!matches!(user.trim(), "root" | "0"), "the image runs as {user}");

    // Every COPY from the build context: its sources exist and .dockerignore keeps them.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(|l| l.trim().trim_matches('/').to_string())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target", ".git", "data"] {
        assert!(ignored.iter().any(|l| l == must), ".dockerignore should leave out {must}");
    }
    let mut copied = 0;
    for w in instructions.iter().map(words).filter(|w| w[0] == "COPY" || w[0] == "ADD") {
        let args: Vec<&String> = w[1..].iter().filter(|a| !a.starts_with("--")).collect();
        if w.iter().any(|a| a.starts_with("--from=")) {
            continue;
        }
        assert!(args.len() >= 2, "{w:?}: source and destination");
        for src in &args[..args.len() - 1] {
            let src = src.trim_start_matches("./").trim_end_matches('/');
            assert!(!src.contains(['*', '?', '[']), "{w:?}: name paths, not patterns, so that this check works");
            assert!(repo().join(src).exists(), "the Dockerfile copies {src}, which is not in the repository");
            assert!(
                !ignored.iter().any(|l| l == src || src.starts_with(&format!("{l}/"))),
                "the Dockerfile copies {src}, which .dockerignore leaves out"
            );
            copied += 1;
        }
    }
    assert!(copied >= 3, "the Dockerfile copies too little from the context: {copied} sources");
}
