//! `cairn backup DIR` and `cairn restore DIR` (SQLite + filesystem): a backup taken while the
//! server serves and clients keep pushing is an installation of its own whose ledger verifies;
//! restored into a new data directory and served, it gives back every manifest (an index
//! included) and blob byte-identical, and its ledger verifies up to the backup's head. Blob
//! files are hard-linked (same filesystem) unless --no-hard-links. Refused, with a message
//! that says what to do (exit 3): a backup into a directory that is not empty, a restore into
//! an installation that holds data, a restore from a directory that is not a finished backup.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Output;

use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::copy::{push_everything, write_config};
use crate::support::*;

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Runs `cairn ARGS`.
fn run(args: &[&str]) -> Output {
    cairn().args(args).output().expect("run cairn")
}

/// `cairn audit verify --data-dir DIR`, asserted to pass; returns the last verified seq.
fn audit_verifies(dir: &Path) -> i64 {
    let out = run(&["audit", "verify", "--data-dir", dir.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "audit verify {}\nstdout: {stdout}\nstderr: {stderr}", dir.display());
    let range = stdout.split("seq ").nth(1).and_then(|r| r.split(',').next()).unwrap_or_default();
    range.split("..").nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("no seq range in: {stdout}"))
}

/// An image index over two manifests of `repo`, pushed under `tag`; returns its body.
async fn push_index(http: &Client, srv: &Server, repo: &str, tag: &str, children: &[&[u8]]) -> Vec<u8> {
    let manifests: Vec<_> = children
        .iter()
        .map(|m| json!({"mediaType": OCI_MANIFEST, "digest": sha256(m), "size": m.len(), "platform": {"os": "linux", "architecture": "amd64"}}))
        .collect();
    let body =
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests})).unwrap();
    let r = http
        .put(srv.url(&format!("/v2/{repo}/manifests/{tag}")))
        .header("content-type", OCI_INDEX)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "index: {}", r.text().await.unwrap());
    body
}

/// GETs a manifest of any media type, asserting 200 and the exact bytes.
async fn assert_any_manifest(http: &Client, srv: &Server, repo: &str, reference: &str, want: &[u8]) {
    let r = http
        .get(srv.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", format!("{OCI_MANIFEST}, {OCI_INDEX}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET manifest {repo}:{reference}");
    assert!(r.bytes().await.unwrap()[..] == want[..], "manifest {repo}:{reference} bytes differ");
}

#[tokio::test]
async fn a_backup_taken_while_serving_and_pushing_restores_every_image_byte_identical() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("source");
    let config = write_config(&root.path().join("source.toml"), &data, "");
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    let http = client();
    let pushed = push_everything(&http, &srv).await;
    let v1 = pushed.manifests.iter().find(|(_, r, _)| r == "v1").unwrap().2.clone();
    let v2 = pushed.manifests.iter().find(|(_, r, _)| r == "v2").unwrap().2.clone();
    let index = push_index(&http, &srv, "apps/web", "multi", &[&v1, &v2]).await;

    // The backup runs while a client keeps pushing images to the serving registry.
    let dir = root.path().join("backup");
    let mut child = cairn()
        .args(["backup", dir.to_str().unwrap(), "--config", config.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut racing = Vec::new();
    while child.try_wait().unwrap().is_none() {
        let tag = format!("race-{}", racing.len());
        racing.push((tag.clone(), push_small_image(&http, &srv, "apps/race", &tag).await));
    }
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "backup failed\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(&format!("into {}", dir.display())), "{stdout}");
    assert!(stdout.contains("objects") && stdout.contains("hard-linked"), "{stdout}");
    assert!(stdout.lines().any(|l| l.trim_start().starts_with("ledger")), "rows per table: {stdout}");
    assert!(stderr.contains("upload session(s) in progress were not copied"), "the unfinished upload: {stderr}");
    assert!(dir.join("cairn-backup.json").is_file(), "the manifest marks a finished backup");
    // On one filesystem the backup's blob files are the source's (hard links, no bytes copied).
    let linked = files_under(&dir.join("blobs")).into_iter().filter(|f| f.metadata().unwrap().nlink() > 1).count();
    assert!(linked >= 6, "the six blobs pushed before the backup are hard-linked: {linked}");
    // The source keeps serving and its ledger goes on.
    push_small_image(&http, &srv, "apps/after", "1").await;
    let backup_head = audit_verifies(&dir);

    // Restored into a new data directory, served: everything as it was pushed.
    let restored = root.path().join("restored");
    let out = run(&["restore", dir.to_str().unwrap(), "--data-dir", restored.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "restore failed\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("restored"), "{stdout}");
    assert_eq!(audit_verifies(&restored), backup_head, "the restored ledger ends where the backup's does");
    let tgt = Server::start(&restored).await;
    for (repo, digest, bytes) in &pushed.blobs {
        assert_blob(&http, &tgt, repo, digest, bytes).await;
    }
    for (repo, reference, body) in &pushed.manifests {
        assert_manifest(&http, &tgt, repo, reference, body).await;
    }
    assert_any_manifest(&http, &tgt, "apps/web", "multi", &index).await;
    assert_any_manifest(&http, &tgt, "apps/web", &sha256(&index), &index).await;
    for repo in ["apps/web", "tools/cli"] {
        assert_eq!(tags(&http, &tgt, repo).await, tags(&http, &srv, repo).await, "tags of {repo}");
    }
    // An image pushed during the backup is in it whole or not at all.
    let race_tags = match http.get(tgt.url("/v2/apps/race/tags/list")).send().await.unwrap() {
        r if r.status() == StatusCode::OK => r.json::<serde_json::Value>().await.unwrap()["tags"].clone(),
        _ => json!([]),
    };
    for (tag, (manifest, blobs)) in &racing {
        if race_tags.as_array().is_some_and(|t| t.iter().any(|x| x == tag.as_str())) {
            assert_manifest(&http, &tgt, "apps/race", tag, manifest).await;
            for (digest, bytes) in blobs {
                assert_blob(&http, &tgt, "apps/race", digest, bytes).await;
            }
        }
    }
    let after = http.get(tgt.url("/v2/apps/after/manifests/1")).header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(after.status(), StatusCode::NOT_FOUND, "pushed after the backup: not in it");
    // The restored registry takes pushes and its ledger continues the backed-up chain.
    push_small_image(&http, &tgt, "apps/web", "restored").await;
    drop(tgt);
    drop(srv);
    assert!(audit_verifies(&restored) > backup_head);
}

#[tokio::test]
async fn refusals_say_what_is_in_the_way() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("source");
    let srv = Server::start(&data).await;
    let http = client();
    let (manifest, blobs) = push_small_image(&http, &srv, "apps/one", "1").await;
    let data_arg = data.to_str().unwrap();

    // A backup into a directory that holds something.
    let busy = root.path().join("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("notes.txt"), b"mine").unwrap();
    let out = run(&["backup", busy.to_str().unwrap(), "--data-dir", data_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("is not empty (it holds notes.txt)") && stderr.contains("Choose another"), "{stderr}");
    assert_eq!(files_under(&busy), vec![busy.join("notes.txt")], "nothing was written there");

    // A restore from a directory that is not a finished backup.
    let out = run(&["restore", busy.to_str().unwrap(), "--data-dir", root.path().join("new").to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("not a finished Cairn backup") && stderr.contains("cairn-backup.json"), "{stderr}");

    // A restore into an installation that holds data (the source itself, serving).
    let dir = root.path().join("backup");
    // (On a terminal: progress shows, blob bytes and then rows per table.)
    let shown = on_a_terminal(&format!("{BIN} backup {} --data-dir {data_arg} --no-hard-links", dir.display()));
    assert!(shown.contains("(0 objects, 0 bytes hard-linked; 2 objects"), "{shown}");
    assert!(shown.contains("blobs: ") && shown.contains("rows: manifests"), "no progress shown: {shown}");
    let copies = files_under(&dir.join("blobs"));
    assert!(copies.iter().all(|f| f.metadata().unwrap().nlink() == 1), "copied, not linked: {copies:?}");
    let out = run(&["restore", dir.to_str().unwrap(), "--data-dir", data_arg]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stdout: {}\nstderr: {stderr}", text(&out.stdout));
    assert!(stderr.contains("is not empty (") && stderr.contains("repositories has rows"), "{stderr}");
    assert!(stderr.contains("--data-dir") && stderr.contains("move the data"), "{stderr}");

    // The source still serves what it had.
    assert_manifest(&http, &srv, "apps/one", "1", &manifest).await;
    for (digest, bytes) in &blobs {
        assert_blob(&http, &srv, "apps/one", digest, bytes).await;
    }
    drop(srv);
}
