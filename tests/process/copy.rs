//! `cairn migrate --copy-to NEW_CONFIG` (README "Moving to PostgreSQL + S3"): a source served
//! and pushed to (images, a layer pushed in several chunks, a mutable tag moved, a referrer,
//! a second repository sharing a layer, pulls, an upload left unfinished), stopped, given a
//! robot token, then copied. The target, served, gives back every blob and manifest
//! byte-identical, the same tags, tag history, referrers, pull counts, ledger events and
//! checkpoints as the source, accepts the robot and a bearer token the source issued,
//! `cairn audit verify` passes on it, and it keeps working (a tag move continues the history
//! ids and the ledger chain). The keys a `cairn migrate` of the empty target made are replaced
//! by the source's. Refused (exit 3, with a message): a target that is not empty or whose
//! `[audit] key_file` holds another key, a source whose GC lock another node holds, a source
//! with nothing in it. A copy run again after a failure keeps the objects already there (and
//! shows its progress on a terminal); audit archive files go along and verify on the target.
//!
//! Here both sides are SQLite + filesystem; tests/postgres runs the same `round_trip` into and
//! out of PostgreSQL + S3 (with TEST_DATABASE_URL and TEST_S3_ENDPOINT). This file is shared
//! with that target, so it leans on `support.rs` alone.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::support::*;

/// The rules and ledger settings both installations share: `prod` is mutable, and a checkpoint
/// is signed every 5 events (at least every second while events arrive).
const COMMON: &str = r#"
[audit]
checkpoint_every = 5
checkpoint_interval = "1s"

[[immutability.rules]]
repositories = "**"
tags = ["prod"]
mode = "mutable"
"#;

/// Writes a config for an installation in `data` with extra sections (`[database]`,
/// `[storage]`; none: SQLite and filesystem under `data`).
pub fn write_config(path: &Path, data: &Path, sections: &str) -> PathBuf {
    let body = format!("[server]\ndata_dir = {:?}\n{COMMON}\n{sections}\n", data.display().to_string());
    std::fs::write(path, body).unwrap();
    path.to_path_buf()
}

/// Runs `cairn ARGS` from `cwd`.
fn run(args: &[&str], cwd: &Path) -> Output {
    cairn().args(args).current_dir(cwd).output().expect("run cairn")
}

/// `cairn migrate --config SOURCE --copy-to TARGET`.
pub fn copy(source: &Path, target: &Path) -> Output {
    let cwd = source.parent().unwrap();
    run(&["migrate", "--config", source.to_str().unwrap(), "--copy-to", target.to_str().unwrap()], cwd)
}

/// `cairn audit verify --config CONFIG`, asserted to pass; returns the last verified seq.
pub fn assert_audit_verifies(config: &Path) -> i64 {
    let out = run(&["audit", "verify", "--config", config.to_str().unwrap()], config.parent().unwrap());
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "audit verify failed\nstdout: {stdout}\nstderr: {stderr}");
    // "audit ledger verified: seq 1..N, ..."
    let range = stdout.split("seq ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    let last = range.split("..").nth(1).and_then(|n| n.parse().ok());
    last.unwrap_or_else(|| panic!("no verified seq range in: {stdout}"))
}

/// A client that signs every request in as `user` (HTTP Basic, which /v2 and /api/v1 take).
fn client_as(user: &str, secret: &str) -> Client {
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{secret}"));
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, HeaderValue::from_str(&format!("Basic {basic}")).unwrap());
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .default_headers(h)
        .build()
        .unwrap()
}

/// GET a JSON document, asserting 200.
async fn get_json(http: &Client, srv: &Server, path: &str) -> Value {
    let r = http.get(srv.url(path)).send().await.unwrap();
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// PUTs a manifest body (OCI image manifest media type) under `reference`, asserting 201.
async fn put(http: &Client, srv: &Server, repo: &str, reference: &str, body: &[u8]) -> String {
    put_manifest(http, srv, repo, reference, body).await
}

/// What was pushed to the source, to be found again on the target.
pub struct Pushed {
    /// (repository, digest, bytes) of every blob.
    pub blobs: Vec<(String, String, Vec<u8>)>,
    /// (repository, reference, body) of every manifest, by tag and by digest.
    pub manifests: Vec<(String, String, Vec<u8>)>,
    /// The first image's manifest digest (the referrer's subject, `prod`'s first target).
    pub first: String,
    /// Its body.
    pub first_body: Vec<u8>,
    /// The referrer's digest.
    pub referrer: String,
}

/// Pushes the source's content to a running server (see the module header).
pub async fn push_everything(http: &Client, srv: &Server) -> Pushed {
    let web = "apps/web";
    let mut blobs = Vec::new();
    let mut manifests = Vec::new();
    let config1 = br#"{"architecture":"amd64","os":"linux","n":1}"#.to_vec();
    let layer1 = random_bytes(2000);
    let c1 = push_blob(http, srv, web, &config1).await;
    let l1 = push_blob(http, srv, web, &layer1).await;
    let m1 = image_manifest((&c1, config1.len()), &[(&l1, layer1.len())]);
    let d1 = put(http, srv, web, "v1", &m1).await;

    // A layer in three PATCH chunks (kept as its 3 segments on the filesystem, composed into one object on S3).
    let config2 = br#"{"architecture":"amd64","os":"linux","n":2}"#.to_vec();
    let layer2 = random_bytes(300_000);
    let c2 = push_blob(http, srv, web, &config2).await;
    let l2 = push_blob_chunked(http, srv, web, &layer2, 100_000).await;
    let m2 = image_manifest((&c2, config2.len()), &[(&l1, layer1.len()), (&l2, layer2.len())]);
    let d2 = put(http, srv, web, "v2", &m2).await;

    // A mutable tag created, then moved: two history rows.
    put(http, srv, web, "prod", &m1).await;
    put(http, srv, web, "prod", &m2).await;

    // An SBOM referring to the first image, pushed by digest.
    let empty = b"{}".to_vec();
    let ce = push_blob(http, srv, web, &empty).await;
    let sbom = random_bytes(500);
    let ls = push_blob(http, srv, web, &sbom).await;
    let referrer = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/spdx+json",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": ce, "size": empty.len()},
        "layers": [{"mediaType": "application/spdx+json", "digest": ls, "size": sbom.len()}],
        "subject": {"mediaType": OCI_MANIFEST, "digest": d1, "size": m1.len()},
        "annotations": {"org.example.kind": "sbom"},
    }))
    .unwrap();
    let dr = sha256(&referrer);
    let r = http
        .put(srv.url(&format!("/v2/{web}/manifests/{dr}")))
        .header("content-type", OCI_MANIFEST)
        .body(referrer.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "referrer: {}", r.text().await.unwrap());

    // A second repository that shares the first layer (one blob, linked twice).
    let cli = "tools/cli";
    let l1_again = push_blob(http, srv, cli, &layer1).await;
    assert_eq!(l1_again, l1);
    let c3 = push_blob(http, srv, cli, &config1).await;
    let m3 = image_manifest((&c3, config1.len()), &[(&l1, layer1.len())]);
    let d3 = put(http, srv, cli, "1.0", &m3).await;

    // Pulls (counted), and an upload left unfinished (not copied).
    for _ in 0..2 {
        assert_manifest(http, srv, web, "v1", &m1).await;
    }
    let loc = start_upload(http, srv, web).await;
    patch_chunk(http, srv, &loc, 0, b"never finished").await;

    for (d, b) in [(&c1, &config1), (&l1, &layer1), (&c2, &config2), (&l2, &layer2), (&ce, &empty), (&ls, &sbom)] {
        blobs.push((web.to_string(), d.clone(), b.clone()));
    }
    blobs.push((cli.to_string(), l1.clone(), layer1.clone()));
    blobs.push((cli.to_string(), c3.clone(), config1.clone()));
    for (reference, body) in
        [("v1", &m1), ("v2", &m2), ("prod", &m2), (d1.as_str(), &m1), (d2.as_str(), &m2), (dr.as_str(), &referrer)]
    {
        manifests.push((web.to_string(), reference.to_string(), body.clone()));
    }
    manifests.push((cli.to_string(), "1.0".into(), m3.clone()));
    manifests.push((cli.to_string(), d3, m3));
    Pushed { blobs, manifests, first: d1, first_body: m1, referrer: dr }
}

/// Stops a server gracefully and asserts it exited cleanly.
async fn stop(mut srv: Server) {
    srv.terminate();
    let status = srv.wait_exit(Duration::from_secs(20)).await;
    assert!(status.is_some_and(|s| s.success()), "server did not stop cleanly: {}", srv.stderr());
}

/// `cairn token create --role admin` on a stopped installation; returns the secret.
fn create_robot(config: &Path, name: &str) -> String {
    let out = run(
        &["token", "create", "--name", name, "--role", "admin", "--config", config.to_str().unwrap()],
        config.parent().unwrap(),
    );
    assert_eq!(out.status.code(), Some(0), "token create: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let secret = stdout.lines().find_map(|l| l.strip_prefix("secret: ")).map(str::to_string);
    secret.unwrap_or_else(|| panic!("no secret in: {stdout}"))
}

/// A source installation in `root/source` (`sections` as in [`write_config`]), served, pushed
/// to, stopped, with a robot `ci`. Returns its config, what was pushed and the robot's secret.
pub async fn prepared_source(root: &Path, sections: &str) -> (PathBuf, Pushed, String) {
    let data = root.join("source");
    let config = write_config(&root.join("source.toml"), &data, sections);
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    let http = client();
    let pushed = push_everything(&http, &srv).await;
    // Wait for a signed checkpoint, so that the copy has signatures to carry.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while get_json(&http, &srv, "/api/v1/audit/checkpoints").await["checkpoints"]
        .as_array()
        .is_none_or(|c| c.is_empty())
    {
        assert!(std::time::Instant::now() < deadline, "no checkpoint signed within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop(srv).await;
    let secret = create_robot(&config, "ci");
    (config, pushed, secret)
}

/// The ids of a tag history page.
fn history_ids(page: &Value) -> Vec<i64> {
    let events = page["events"].as_array().cloned().unwrap_or_default();
    events.iter().filter_map(|e| e["id"].as_i64()).collect()
}

/// Every (repository, tag) whose history is compared.
const TAGS: &[(&str, &str)] = &[("apps/web", "prod"), ("apps/web", "v1"), ("apps/web", "v2"), ("tools/cli", "1.0")];

/// The whole scenario from the installation `source_sections` describes into the one
/// `target_sections` describes (`[database]` and `[storage]`; empty: SQLite + filesystem
/// under `root/source` and `root/target`).
pub async fn round_trip(root: &Path, source_sections: &str, target_sections: &str) {
    let (source, pushed, secret) = prepared_source(root, source_sections).await;
    let target_data = root.join("target");
    let target = write_config(&root.join("target.toml"), &target_data, target_sections);

    // As the README says to: the target's schema first. That also makes it keys of its own,
    // which the copy replaces with the source's.
    let out = run(&["migrate", "--config", target.to_str().unwrap()], root);
    assert_eq!(out.status.code(), Some(0), "migrate the target: {}", text(&out.stderr));
    let out = copy(&source, &target);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "copy failed\nstdout: {stdout}\nstderr: {stderr}");
    for key in ["audit signing key", "token signing key"] {
        assert!(stderr.contains(&format!("the {key} the empty target had")), "{key} replaced: {stderr}");
    }
    // 6 distinct blobs, each one object, but for the chunked one on a filesystem source: the
    // filesystem keeps its 3 segments as they are (S3 composes them: src/blob/mod.rs).
    let objects = if source_sections.contains("\"s3\"") { 6 } else { 8 };
    assert!(stdout.contains(&format!("copied 6 blobs ({objects} objects,")), "6 blobs in {objects} objects: {stdout}");
    for table in ["repositories", "manifests", "tag_history", "ledger", "ledger_checkpoints", "robots"] {
        assert!(stdout.lines().any(|l| l.trim_start().starts_with(table)), "no row count for {table}: {stdout}");
    }
    assert!(stderr.contains("1 upload session(s) in progress were not copied"), "{stderr}");
    assert!(!stderr.contains("blobs:"), "no progress bar when stderr is not a terminal: {stderr}");

    // The ledger verifies on the target with the copied key, up to the source's head.
    let head = assert_audit_verifies(&target);
    let source_head = assert_audit_verifies(&source);
    assert_eq!(head, source_head, "the target's ledger ends where the source's does");

    // Both served: the target answers as the source does.
    let src = Server::start_with(&root.join("source"), Some(&source), &[]).await;
    let tgt = Server::start_with(&target_data, Some(&target), &[]).await;
    let http = client_as("ci", &secret);
    let anonymous = client().get(tgt.url("/v2/apps/web/tags/list")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED, "the robot was copied, so the target is not open");
    // The token signing key came along: a bearer token the source issued works on the target.
    let issued = http
        .get(src.url("/token"))
        .query(&[("service", "cairn"), ("scope", "repository:apps/web:pull")])
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), StatusCode::OK);
    let token = issued.json::<Value>().await.unwrap()["token"].as_str().expect("a token").to_string();
    let r = client().get(tgt.url("/v2/apps/web/tags/list")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the source's token on the target: {}", r.text().await.unwrap());
    // Pull counts first: the pulls below count too.
    let artifact = format!("/api/v1/repositories/apps/web/artifacts/{}", pushed.first);
    let (a, b) = (get_json(&http, &tgt, &artifact).await, get_json(&http, &src, &artifact).await);
    assert_eq!(a["pulls"], b["pulls"], "pull counts: {a}");
    assert_eq!(a["pulls"]["count"], 2, "two pulls of v1: {a}");
    for (repo, digest, bytes) in &pushed.blobs {
        assert_blob(&http, &tgt, repo, digest, bytes).await;
    }
    for (repo, reference, body) in &pushed.manifests {
        assert_manifest(&http, &tgt, repo, reference, body).await;
    }
    for repo in ["apps/web", "tools/cli"] {
        assert_eq!(tags(&http, &tgt, repo).await, tags(&http, &src, repo).await, "tags of {repo}");
    }
    for (repo, tag) in TAGS {
        let path = format!("/api/v1/repositories/{repo}/tags/{tag}/history");
        assert_eq!(get_json(&http, &tgt, &path).await, get_json(&http, &src, &path).await, "history of {repo}:{tag}");
    }
    let prod = get_json(&http, &tgt, "/api/v1/repositories/apps/web/tags/prod/history").await;
    let old_ids = history_ids(&prod);
    assert_eq!(old_ids.len(), 2, "prod was created and moved once: {prod}");
    let referrers = format!("/v2/apps/web/referrers/{}", pushed.first);
    let listed = get_json(&http, &tgt, &referrers).await;
    assert_eq!(listed, get_json(&http, &src, &referrers).await, "referrers");
    assert!(listed.to_string().contains(&pushed.referrer), "{listed}");
    let events = |v: Value| -> Vec<Value> {
        let all = v["events"].as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|e| e["seq"].as_i64().is_some_and(|s| s <= head)).collect()
    };
    let (te, se) = (
        events(get_json(&http, &tgt, "/api/v1/audit/events?limit=1000").await),
        events(get_json(&http, &src, "/api/v1/audit/events?limit=1000").await),
    );
    assert_eq!(te.len() as i64, head, "every event up to the head");
    assert_eq!(te, se, "ledger events");
    let checkpoints = |v: Value| -> Vec<Value> {
        let all = v["checkpoints"].as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|c| c["seq"].as_i64().is_some_and(|s| s <= head)).collect()
    };
    let tc = checkpoints(get_json(&http, &tgt, "/api/v1/audit/checkpoints?limit=1000").await);
    assert!(!tc.is_empty(), "checkpoints were copied");
    assert_eq!(tc, checkpoints(get_json(&http, &src, "/api/v1/audit/checkpoints?limit=1000").await));
    stop(src).await;

    // The target goes on: a tag move continues the history ids, a push works, the chain grows.
    put(&http, &tgt, "apps/web", "prod", &pushed.first_body).await;
    let moved = get_json(&http, &tgt, "/api/v1/repositories/apps/web/tags/prod/history").await;
    let ids = history_ids(&moved);
    assert_eq!(ids.len(), 3, "{moved}");
    assert!(
        ids.iter().max() > old_ids.iter().max(),
        "a new history id follows the copied ones: {ids:?} after {old_ids:?}"
    );
    push_blob(&http, &tgt, "apps/web", b"pushed to the target").await;
    stop(tgt).await;
    assert!(assert_audit_verifies(&target) > head, "the target's chain continued");

    // Copying again into the (now used) target is refused, and changes nothing.
    let out = copy(&source, &target);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("the target database is not empty"), "{stderr}");
    assert!(stderr.contains("tags has rows"), "names what holds rows: {stderr}");
}

#[tokio::test]
async fn sqlite_fs_into_sqlite_fs_gives_back_everything() {
    let root = tempfile::tempdir().unwrap();
    round_trip(root.path(), "", "").await;
}

#[tokio::test]
async fn a_copy_run_again_after_a_failure_keeps_the_objects_already_copied() {
    let root = tempfile::tempdir().unwrap();
    let (source, pushed, secret) = prepared_source(root.path(), "").await;
    let target_data = root.path().join("target");
    let target = write_config(&root.path().join("target.toml"), &target_data, "");
    let out = copy(&source, &target);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // As if the rows had failed to load: the target's database is gone, its objects stay.
    for f in ["cairn.db", "cairn.db-wal", "cairn.db-shm"] {
        let _ = std::fs::remove_file(target_data.join(f));
    }
    // Again, on a terminal this time: progress shows, blob bytes and then rows per table.
    let shown = on_a_terminal(&format!("{BIN} migrate --config {} --copy-to {}", source.display(), target.display()));
    assert!(shown.contains("(0 objects, 0 bytes written; 8 objects,"), "every object was already there: {shown}");
    assert!(shown.contains("blobs: ") && shown.contains("rows: manifests"), "no progress shown: {shown}");
    let tgt = Server::start_with(&target_data, Some(&target), &[]).await;
    let http = client_as("ci", &secret);
    for (repo, digest, bytes) in &pushed.blobs {
        assert_blob(&http, &tgt, repo, digest, bytes).await;
    }
    stop(tgt).await;
    assert_audit_verifies(&target);
}

#[tokio::test]
async fn a_different_key_in_the_targets_audit_key_file_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (source, _, _) = prepared_source(root.path(), "").await;
    let target_data = root.path().join("target");
    let key_file = root.path().join("operator-audit.p8");
    std::fs::write(&key_file, b"another key").unwrap();
    let target = root.path().join("target.toml");
    let body = format!("[server]\ndata_dir = {:?}\n\n[audit]\nkey_file = {:?}\n", target_data, key_file);
    std::fs::write(&target, body).unwrap();
    let out = copy(&source, &target);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("key_file") && stderr.contains("different audit signing key"), "{stderr}");
    assert_eq!(std::fs::read(&key_file).unwrap(), b"another key", "the operator's file is left alone");
    let copied = files_under(&target_data.join("blobs"));
    assert!(copied.is_empty(), "no object was copied: {copied:?}");
}

#[tokio::test]
async fn audit_archive_files_go_along_and_verify_on_the_target() {
    let root = tempfile::tempdir().unwrap();
    let (source, _, _) = prepared_source(root.path(), "").await;
    let out = run(&["audit", "archive", "--before", "6", "--config", source.to_str().unwrap()], root.path());
    assert_eq!(out.status.code(), Some(0), "archive: {}", text(&out.stderr));
    let source_head = assert_audit_verifies(&source);
    let target = write_config(&root.path().join("target.toml"), &root.path().join("target"), "");
    let out = copy(&source, &target);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("1 audit archive file(s) copied"), "{stdout}");
    let archived = files_under(&root.path().join("source").join("audit-archive"));
    assert_eq!(archived.len(), 1, "{archived:?}");
    let name = archived[0].file_name().unwrap();
    let copied = root.path().join("target").join("audit-archive").join(name);
    assert_eq!(std::fs::read(&copied).unwrap(), std::fs::read(&archived[0]).unwrap(), "the archive file, as it was");
    assert_eq!(assert_audit_verifies(&target), source_head, "the archive and the database verify on the target");
}

#[tokio::test]
async fn a_source_whose_gc_lock_another_node_holds_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (source, _, _) = prepared_source(root.path(), "").await;
    let until = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 3_600_000;
    let db = root.path().join("source").join("cairn.db");
    let held = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg(format!("INSERT INTO gc_lock (id, holder, expires_at) VALUES (1, 'another-node/ns/1/x', {until})"))
        .status()
        .unwrap_or_else(|e| panic!("this test takes the GC lock with the sqlite3 command line ({e}): install it"));
    assert!(held.success());
    let target = write_config(&root.path().join("target.toml"), &root.path().join("target"), "");
    let out = copy(&source, &target);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("holds the source's GC lock") && stderr.contains("Stop every server"), "{stderr}");
    let copied = files_under(&root.path().join("target").join("blobs"));
    assert!(copied.is_empty(), "no object was copied: {copied:?}");
}

#[test]
fn an_empty_source_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let source = write_config(&root.path().join("source.toml"), &root.path().join("source"), "");
    let target = write_config(&root.path().join("target.toml"), &root.path().join("target"), "");
    let out = copy(&source, &target);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("holds nothing to copy"), "{stderr}");
}

#[test]
fn help_says_to_stop_the_source_first() {
    let out = cairn().args(["migrate", "--help"]).output().unwrap();
    let help = text(&out.stdout);
    assert!(help.contains("--copy-to <NEW_CONFIG>"), "{help}");
    assert!(help.contains("Stop every server on the source first"), "{help}");
}
