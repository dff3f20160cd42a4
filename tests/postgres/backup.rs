//! `cairn backup DIR` and `cairn restore DIR` on PostgreSQL + S3, with the real binary (README
//! "Backup and restore"). A registry on a database and a bucket of its own is pushed to (the
//! images of tests/process/copy.rs: a chunked layer, a moved tag, a referrer, a layer shared by
//! two repositories, an upload left unfinished) and backed up while it serves and a client keeps
//! pushing. The backup is a SQLite + filesystem installation whose ledger verifies; it copied
//! every blob out of the bucket (nothing to hard-link) and its notes name pg_dump and bucket
//! versioning. Restored into a fresh database + bucket, and into SQLite + filesystem, each
//! served: every blob and manifest byte-identical, the same tags, an image pushed during the
//! backup whole or not at all, one pushed after it absent; `cairn audit verify` passes up to
//! the backup's head and `cairn scrub` finds every blob healthy. A second restore into the
//! now-used database is refused (exit 3).
//!
//! Needs `TEST_DATABASE_URL` and `TEST_S3_ENDPOINT` both: main.rs reports this test as ignored
//! when either is missing (failed under `CI=true`).

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

use crate::db::TempDb;
use crate::process_copy::{Pushed, push_everything, write_config};
use crate::support::*;
use crate::{PgTest, block_on};

pub const TESTS: &[PgTest] = &[PgTest {
    name: "a_backup_taken_while_serving_restores_into_postgres_s3_and_sqlite_fs",
    run: a_backup_taken_while_serving_restores_into_postgres_s3_and_sqlite_fs,
}];

/// An image pushed during the backup: (tag, manifest body, (digest, bytes) of its blobs).
type Raced = (String, Vec<u8>, Vec<(String, Vec<u8>)>);

fn a_backup_taken_while_serving_restores_into_postgres_s3_and_sqlite_fs(url: &str) {
    block_on(async {
        let endpoint = std::env::var("TEST_S3_ENDPOINT").expect("main.rs runs this test only with TEST_S3_ENDPOINT");
        let root = tempfile::tempdir().unwrap();
        let source = PgS3::create(url, &endpoint).await;
        let config = write_config(&root.path().join("source.toml"), &root.path().join("source"), &source.toml());
        let srv = Server::start_with(&root.path().join("source"), Some(&config), &[]).await;
        let http = client();
        let pushed = push_everything(&http, &srv).await;
        wait_for_a_checkpoint(&http, &srv).await;

        // The backup runs while a client keeps pushing images to the serving registry.
        let dir = root.path().join("backup");
        let mut child = cairn()
            .args(["backup", dir.to_str().unwrap(), "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut raced = Vec::new();
        while child.try_wait().unwrap().is_none() {
            let tag = format!("race-{}", raced.len());
            let (manifest, blobs) = push_small_image(&http, &srv, "apps/race", &tag).await;
            raced.push((tag, manifest, blobs));
        }
        let out = child.wait_with_output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "backup failed\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains(&format!("into {}", dir.display())), "{stdout}");
        assert!(stdout.contains("(0 objects, 0 bytes hard-linked;"), "S3 objects are copied, never linked: {stdout}");
        assert!(stdout.lines().any(|l| l.trim_start().starts_with("ledger")), "rows per table: {stdout}");
        assert!(stderr.contains("pg_dump or pg_basebackup"), "the PostgreSQL note: {stderr}");
        assert!(stderr.contains("copied out of the S3 bucket") && stderr.contains("versioning"), "{stderr}");
        assert!(stderr.contains("upload session(s) in progress were not copied"), "the unfinished upload: {stderr}");
        let manifest: Value = serde_json::from_slice(&std::fs::read(dir.join("cairn-backup.json")).unwrap()).unwrap();
        assert!(manifest["source_database"].as_str().is_some_and(|d| d.starts_with("postgres")), "{manifest}");
        assert!(manifest["source_storage"].to_string().contains(&source.bucket), "{manifest}");
        for file in ["cairn.db", "audit-signing-key.p8", "token-signing-key.p8"] {
            assert!(dir.join(file).is_file(), "a SQLite installation with the keys from the database as files: {file}");
        }
        // The source keeps serving; what it takes now is not in the backup.
        push_small_image(&http, &srv, "apps/after", "1").await;
        let backup_head = audit_verifies(&["--data-dir", dir.to_str().unwrap()]);
        assert!(!files_under(&dir.join("blobs")).is_empty(), "the blobs came out of the bucket into the backup");

        // Restored into a fresh database and bucket.
        let target = PgS3::create(url, &endpoint).await;
        let target_config = write_config(&root.path().join("target.toml"), &root.path().join("target"), &target.toml());
        let restore_into = ["--config", target_config.to_str().unwrap()];
        let out = restore(&dir, &restore_into);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "restore failed\nstdout: {stdout}\nstderr: {stderr}");
        assert!(stdout.contains("restored") && stdout.contains(&target.bucket), "{stdout}");
        assert_eq!(audit_verifies(&restore_into), backup_head, "the restored ledger ends where the backup's does");
        scrub_is_clean(&restore_into);
        let tgt = Server::start_with(&root.path().join("target"), Some(&target_config), &[]).await;
        assert_restored(&http, &tgt, &srv, &pushed, &raced).await;
        // It takes pushes, and its ledger continues the backed-up chain.
        push_small_image(&http, &tgt, "apps/web", "restored").await;
        drop(tgt);
        assert!(audit_verifies(&restore_into) > backup_head, "the restored chain continued");

        // A second restore into that database, which now holds data, is refused.
        let out = restore(&dir, &restore_into);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
        assert!(stderr.contains("is not empty (") && stderr.contains("has rows"), "{stderr}");

        // Restored into SQLite + filesystem as well: the same registry.
        let local = root.path().join("local");
        let restore_into = ["--data-dir", local.to_str().unwrap()];
        let out = restore(&dir, &restore_into);
        assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", text(&out.stdout), text(&out.stderr));
        assert_eq!(audit_verifies(&restore_into), backup_head);
        scrub_is_clean(&restore_into);
        let tgt = Server::start(&local).await;
        assert_restored(&http, &tgt, &srv, &pushed, &raced).await;
        drop(tgt);
        drop(srv);
        drop((source, target));
    });
}

/// A fresh database and bucket, for one installation.
struct PgS3 {
    db: TempDb,
    bucket: String,
    endpoint: String,
}

impl PgS3 {
    /// A new database on `url`'s server and a new bucket at `endpoint`.
    async fn create(url: &str, endpoint: &str) -> PgS3 {
        let db = TempDb::create(url).await;
        let bucket = format!("cairn-backup-{}", uuid::Uuid::new_v4().simple());
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
        assert!(r.status().is_success(), "cannot create bucket {bucket} at {endpoint}: {}", r.status());
        PgS3 { db, bucket, endpoint }
    }

    /// The `[database]` and `[storage]` sections that name them (moto takes any credentials).
    fn toml(&self) -> String {
        format!(
            "[database]\nurl = {:?}\n\n[storage]\nkind = \"s3\"\nbucket = {:?}\nregion = \"us-east-1\"\n\
             endpoint = {:?}\npath_style = true\naccess_key_id = \"cairn-test\"\n\
             secret_access_key = \"cairn-test-secret\"\n",
            self.db.url, self.bucket, self.endpoint
        )
    }
}

/// Runs `cairn ARGS`.
fn run(args: &[&str]) -> Output {
    cairn().args(args).output().expect("run cairn")
}

/// `cairn restore DIR` into the installation `into` (`--config FILE` or `--data-dir DIR`).
fn restore(dir: &Path, into: &[&str]) -> Output {
    let mut args = vec!["restore", dir.to_str().unwrap()];
    args.extend_from_slice(into);
    run(&args)
}

/// `cairn audit verify` on the installation `on`, asserted to pass; returns the last verified seq.
fn audit_verifies(on: &[&str]) -> i64 {
    let mut args = vec!["audit", "verify"];
    args.extend_from_slice(on);
    let out = run(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "audit verify {on:?}\nstdout: {stdout}\nstderr: {stderr}");
    // "audit ledger verified: seq 1..N, ..."
    let range = stdout.split("seq ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    range.split("..").nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no seq range in: {stdout}"))
}

/// `cairn scrub` on the installation `on`, asserted to find every blob healthy.
fn scrub_is_clean(on: &[&str]) {
    let mut args = vec!["scrub"];
    args.extend_from_slice(on);
    let out = run(&args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "scrub {on:?}\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("0 damaged, 0 missing"), "{stdout}");
}

/// Waits (up to 30 s) until the server has signed a ledger checkpoint, so that the backup has
/// signatures to carry.
async fn wait_for_a_checkpoint(http: &Client, srv: &Server) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = http.get(srv.url("/api/v1/audit/checkpoints")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        if body["checkpoints"].as_array().is_some_and(|c| !c.is_empty()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint signed within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The restored registry `tgt` serves everything pushed before the backup byte-identical,
/// with the source's tags; of the images pushed during it, each one it lists whole; not the
/// one pushed after it.
async fn assert_restored(http: &Client, tgt: &Server, src: &Server, pushed: &Pushed, raced: &[Raced]) {
    for (repo, digest, bytes) in &pushed.blobs {
        assert_blob(http, tgt, repo, digest, bytes).await;
    }
    for (repo, reference, body) in &pushed.manifests {
        assert_manifest(http, tgt, repo, reference, body).await;
    }
    for repo in ["apps/web", "tools/cli"] {
        assert_eq!(tags(http, tgt, repo).await, tags(http, src, repo).await, "tags of {repo}");
    }
    let listed = match http.get(tgt.url("/v2/apps/race/tags/list")).send().await.unwrap() {
        r if r.status() == StatusCode::OK => r.json::<Value>().await.unwrap()["tags"].clone(),
        _ => json!([]),
    };
    for (tag, manifest, blobs) in raced {
        if listed.as_array().is_some_and(|t| t.iter().any(|x| x == tag.as_str())) {
            assert_manifest(http, tgt, "apps/race", tag, manifest).await;
            for (digest, bytes) in blobs {
                assert_blob(http, tgt, "apps/race", digest, bytes).await;
            }
        }
    }
    let r = http.get(tgt.url("/v2/apps/after/manifests/1")).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "pushed after the backup: not in it");
}
