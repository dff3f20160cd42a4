//! `cairn audit verify` and `export` on a ledger written by the real server (DESIGN §7):
//! verification passes on a busy database, also while the server appends, and fails, naming
//! the first bad seq, after each kind of tampering done with the `sqlite3` command line (an
//! edited field, a deleted row, two rows' contents swapped, the tail cut back past a
//! checkpoint, a row appended, a forged checkpoint). An export verifies with the public key
//! alone, in a directory with no database; an edited one does not. Progress shows only on a
//! terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::cli::run;
use crate::support::*;

/// Servers sign a checkpoint every 5 events, and at least every second while events arrive.
pub(crate) const AUDIT_ENV: [(&str, &str); 2] =
    [("CAIRN_AUDIT__CHECKPOINT_EVERY", "5"), ("CAIRN_AUDIT__CHECKPOINT_INTERVAL", "1s")];

/// The `sqlite3` command line; the tests that tamper with the database need it.
pub(crate) fn sqlite3(db: &Path, sql: &str) -> String {
    let out = Command::new("sqlite3").arg(db).arg(sql).output().unwrap_or_else(|e| {
        panic!(
            "these tests tamper with the database through the sqlite3 command line, which could not be run \
             ({e}): install it (Debian: apt-get install sqlite3)"
        )
    });
    assert!(out.status.success(), "sqlite3 {sql:?} failed: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

pub(crate) fn db(data: &Path) -> PathBuf {
    data.join("cairn.db")
}

/// The head seq and the highest checkpointed seq.
pub(crate) fn head_and_checkpoint(data: &Path) -> (i64, i64) {
    let row = sqlite3(
        &db(data),
        "SELECT (SELECT coalesce(max(seq), 0) FROM ledger_head), (SELECT coalesce(max(seq), 0) FROM ledger_checkpoints)",
    );
    let (h, c) = row.split_once('|').expect("two columns");
    (h.parse().unwrap(), c.parse().unwrap())
}

/// Waits (polling the database) until the server signed a checkpoint at the head.
pub(crate) async fn wait_for_checkpoint_at_head(data: &Path) -> i64 {
    let mut last = (0, 0);
    let signed = wait_until(Duration::from_secs(30), || {
        last = head_and_checkpoint(data);
        last.0 > 0 && last.0 == last.1
    })
    .await;
    assert!(signed, "no checkpoint at the head within 30 s (head, checkpoint) = {last:?}");
    last.0
}

/// Pushes image `n`: a config, a layer, a manifest tagged `v<n>` (5 ledger events in a new
/// repository: repository.create, 2 blob.commit, manifest.put, tag.create).
pub(crate) async fn push_image(http: &Client, srv: &Server, repo: &str, n: usize) {
    let config = format!("{{\"n\":{n}}}").into_bytes();
    let layer = random_bytes(1000 + n);
    let c = push_blob(http, srv, repo, &config).await;
    let l = push_blob(http, srv, repo, &layer).await;
    let m = image_manifest((&c, config.len()), &[(&l, layer.len())]);
    put_manifest(http, srv, repo, &format!("v{n}"), &m).await;
}

/// A stopped server's data directory with a few images pushed, a refused tag move, and a
/// checkpoint at the head.
pub(crate) async fn busy_ledger() -> (tempfile::TempDir, PathBuf, i64) {
    let (root, data) = workdir();
    let http = client();
    let mut srv = Server::start_with(&data, None, &AUDIT_ENV).await;
    for n in 0..4 {
        push_image(&http, &srv, &format!("ledger/app{n}"), n).await;
    }
    // An immutable tag refuses to move: a write.refuse event.
    let other = image_manifest((&push_blob(&http, &srv, "ledger/app0", b"{}").await, 2), &[]);
    let r = http
        .put(srv.url("/v2/ledger/app0/manifests/v0"))
        .header("content-type", OCI_MANIFEST)
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let head = wait_for_checkpoint_at_head(&data).await;
    srv.terminate();
    assert!(srv.wait_exit(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", srv.stderr());
    assert_eq!(head_and_checkpoint(&data), (head, head), "stopping wrote no event");
    assert!(head >= 22, "expected 4 images' events and more, head is {head}");
    (root, data, head)
}

/// `cairn audit verify --data-dir DATA` (from a neutral working directory).
pub(crate) fn verify(data: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["audit", "verify", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args, &[], data.parent().unwrap())
}

pub(crate) fn assert_verified(out: &Output, needle: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains(needle), "expected {needle:?} in: {stdout}");
    assert!(!stderr.contains("verifying"), "no progress bar when stderr is not a terminal: {stderr}");
}

/// Asserts exit 1 and that stderr starts its finding with `needle` (e.g. "seq 7: hash").
pub(crate) fn assert_not_verified(out: &Output, needle: &str) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "expected exit 1 (does not verify)\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stderr.contains(needle), "expected {needle:?} in stderr: {stderr}");
}

/// A copy of the database (and the signing key) in a fresh data directory.
fn copy_ledger(data: &Path, name: &str) -> PathBuf {
    let to = data.parent().unwrap().join(name);
    std::fs::create_dir_all(&to).unwrap();
    sqlite3(&db(data), &format!(".backup '{}'", db(&to).display()));
    std::fs::copy(data.join("audit-signing-key.p8"), to.join("audit-signing-key.p8")).unwrap();
    to
}

#[tokio::test]
async fn verify_passes_on_a_busy_ledger_and_names_the_seq_after_each_kind_of_tampering() {
    let (_root, data, head) = busy_ledger().await;
    assert_verified(&verify(&data, &[]), &format!("audit ledger verified: seq 1..{head}, {head} events"));

    // On a terminal (a pty from script(1)) it shows progress on stderr.
    let shown = on_a_terminal(&format!("{BIN} audit verify --data-dir {}", data.display()));
    assert!(shown.contains("verifying the audit ledger: seq"), "no progress on a terminal: {shown}");
    assert!(shown.contains("audit ledger verified"), "{shown}");

    // Each tampering on its own copy; the untouched copy verifies, so the copy is not the cause.
    assert_verified(&verify(&copy_ledger(&data, "control"), &[]), &format!("the last at seq {head}"));
    let cases: Vec<(&str, String, String)> = vec![
        ("edit", "UPDATE ledger SET actor = 'mallory' WHERE seq = 7".into(), "seq 7: hash does not match".into()),
        (
            "edit-detail",
            "UPDATE ledger SET detail = '{\"size\":' WHERE seq = 8".into(),
            "seq 8: the ledger's detail is not JSON".into(),
        ),
        ("delete", "DELETE FROM ledger WHERE seq = 9".into(), "seq 9: missing".into()),
        (
            "swap",
            "UPDATE ledger SET seq = -10 WHERE seq = 10; UPDATE ledger SET seq = 10 WHERE seq = 11; \
             UPDATE ledger SET seq = 11 WHERE seq = -10"
                .into(),
            "seq 10: prev_hash is not the hash of the event before it".into(),
        ),
        (
            "truncate",
            format!(
                "DELETE FROM ledger WHERE seq > {k}; \
                 UPDATE ledger_head SET seq = {k}, hash = (SELECT hash FROM ledger WHERE seq = {k})",
                k = head - 3
            ),
            format!(
                "seq {}: missing: the ledger ends at seq {} but a signed checkpoint covers seq {head}",
                head - 2,
                head - 3
            ),
        ),
        (
            "truncate-rows-only",
            format!("DELETE FROM ledger WHERE seq > {}", head - 3),
            format!("seq {}: the ledger head row says seq {head}", head - 2),
        ),
        (
            "append",
            format!(
                "INSERT INTO ledger (seq, time, at_ms, actor, address, action, repository, tag, digest, \
                 previous_digest, detail, prev_hash, hash) SELECT seq + 1, time, at_ms, 'mallory', address, action, \
                 repository, tag, digest, previous_digest, detail, hash, hash FROM ledger WHERE seq = {head}; \
                 UPDATE ledger_head SET seq = {n}, hash = (SELECT hash FROM ledger WHERE seq = {n})",
                n = head + 1
            ),
            format!("seq {}: hash does not match", head + 1),
        ),
        (
            "forged-checkpoint",
            format!("UPDATE ledger_checkpoints SET time = '2000-01-01T00:00:00.000Z' WHERE seq = {head}"),
            format!("checkpoint at seq {head}: the signature does not verify"),
        ),
    ];
    for (name, sql, needle) in &cases {
        let copy = copy_ledger(&data, name);
        sqlite3(&db(&copy), sql);
        let out = verify(&copy, &[]);
        assert_not_verified(&out, needle);
        assert!(text(&out.stdout).is_empty(), "{name}: nothing on stdout: {}", text(&out.stdout));
    }

    // Another key's public key does not verify the checkpoints.
    let other = data.parent().unwrap().join("other");
    let pem = run(&["audit", "public-key", "--data-dir", other.to_str().unwrap()], &[], other.parent().unwrap());
    assert!(pem.status.success(), "{}", text(&pem.stderr));
    let pem_file = write_file(&other, "other.pem", &pem.stdout);
    assert_not_verified(
        &verify(&data, &["--public-key", &pem_file]),
        "the signature does not verify with the public key",
    );
}

#[tokio::test]
async fn verify_passes_while_the_server_appends() {
    let (_root, data) = workdir();
    let http = client();
    let srv = Server::start_with(&data, None, &AUDIT_ENV).await;
    push_image(&http, &srv, "busy/first", 0).await;
    wait_for_checkpoint_at_head(&data).await;
    let pushes = {
        let (http, base_srv) = (http.clone(), srv.base.clone());
        tokio::spawn(async move {
            for n in 1..6 {
                let r = http.post(format!("{base_srv}/v2/busy/app{n}/blobs/uploads/")).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                let loc = header(&r, "location");
                let bytes = random_bytes(64);
                let r = http
                    .put(format!("{base_srv}{}", with_digest(&loc, &sha256(&bytes))))
                    .header("content-type", "application/octet-stream")
                    .body(bytes)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
            }
        })
    };
    for _ in 0..3 {
        let d = data.clone();
        let out = tokio::task::spawn_blocking(move || verify(&d, &[])).await.unwrap();
        assert_verified(&out, "audit ledger verified: seq 1..");
    }
    pushes.await.unwrap();
    let head = wait_for_checkpoint_at_head(&data).await;
    assert_verified(&verify(&data, &[]), &format!("audit ledger verified: seq 1..{head}, {head} events"));
}

#[tokio::test]
async fn an_export_verifies_with_the_public_key_alone_and_a_tampered_one_fails() {
    let (root, data, head) = busy_ledger().await;
    let data_arg = data.to_str().unwrap();
    let auditor = root.path().join("auditor");
    std::fs::create_dir_all(&auditor).unwrap();
    let pem = run(&["audit", "public-key", "--data-dir", data_arg], &[], root.path());
    assert!(pem.status.success(), "{}", text(&pem.stderr));
    assert!(text(&pem.stdout).starts_with("-----BEGIN PUBLIC KEY-----\n"), "{}", text(&pem.stdout));
    write_file(&auditor, "cairn.pem", &pem.stdout);

    // The whole ledger to stdout.
    let out = run(&["audit", "export", "--data-dir", data_arg], &[], root.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    let events: Vec<&Value> = lines.iter().filter(|l| l.get("checkpoint").is_none()).collect();
    assert_eq!(events.len() as i64, head);
    let keys = [
        "action",
        "actor",
        "address",
        "detail",
        "digest",
        "hash",
        "prev_hash",
        "previous_digest",
        "repository",
        "seq",
        "tag",
        "time",
    ];
    for (i, e) in events.iter().enumerate() {
        let mut got: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        got.sort();
        assert_eq!(got, keys, "event line {i} has exactly the event's fields");
        assert_eq!(e["seq"], i as i64 + 1);
    }
    assert_eq!(
        events[head as usize - 1]["hash"],
        sqlite3(&db(&data), &format!("SELECT hash FROM ledger WHERE seq = {head}"))
    );
    // Each checkpoint line follows the event it covers, and the last line is one.
    for w in lines.windows(2) {
        if let Some(cp) = w[1].get("checkpoint") {
            assert_eq!(cp["seq"], w[0]["seq"], "{cp}");
            assert_eq!(cp["hash"], w[0]["hash"], "{cp}");
        }
    }
    assert_eq!(lines.last().unwrap()["checkpoint"]["seq"], head);
    let all = write_file(&auditor, "all.jsonl", &out.stdout);

    // Verified in a directory with no data, config or database: the file and the key alone.
    let ok = run(&["audit", "verify", "--export", "all.jsonl", "--public-key", "cairn.pem"], &[], &auditor);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains(&format!("all.jsonl: verified seq 1..{head}, {head} events")),
        "{}",
        text(&ok.stdout)
    );
    assert!(text(&ok.stdout).contains("from the start of the ledger"), "{}", text(&ok.stdout));
    assert_eq!(std::fs::read_dir(&auditor).unwrap().count(), 2, "offline verification wrote nothing");

    // A range ending where no checkpoint was: one is signed for it, and the range verifies.
    let part = auditor.join("part.jsonl");
    let out = run(
        &[
            "audit",
            "export",
            "--data-dir",
            data_arg,
            "--since",
            "4",
            "--until",
            "9",
            "--output",
            part.to_str().unwrap(),
        ],
        &[],
        root.path(),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("exported seq 4..9: 6 events"), "{}", text(&out.stdout));
    let body = std::fs::read_to_string(&part).unwrap();
    assert!(body.starts_with("{\"seq\":4,"), "{body}");
    assert!(body.lines().last().unwrap().starts_with("{\"checkpoint\":{\"seq\":9,"), "{body}");
    let ok = run(&["audit", "verify", "--export", "part.jsonl", "--public-key", "cairn.pem"], &[], &auditor);
    assert_eq!(ok.status.code(), Some(0), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("verified seq 4..9, 6 events"), "{}", text(&ok.stdout));
    assert!(text(&ok.stdout).contains("vouched for by the checkpoint at seq 9"), "{}", text(&ok.stdout));
    // The database still verifies with the new checkpoint in it.
    assert_verified(&verify(&data, &[]), &format!("seq 1..{head}"));

    // Tampered exports.
    let full = std::fs::read_to_string(&all).unwrap();
    let edited: String =
        full.lines()
            .map(|l| {
                if l.starts_with("{\"seq\":6,") { l.replacen("\"anonymous\"", "\"mallory\"", 1) } else { l.to_string() }
            })
            .map(|l| l + "\n")
            .collect();
    assert_ne!(edited, full, "seq 6 has an actor to edit");
    let dropped: String = full
        .lines()
        .filter(|l| !l.starts_with("{\"seq\":12,") && !l.starts_with("{\"checkpoint\":{\"seq\":12,"))
        .map(|l| format!("{l}\n"))
        .collect();
    let uncovered: String =
        full.lines().take_while(|l| !l.starts_with("{\"checkpoint\"")).map(|l| format!("{l}\n")).collect();
    let extra: String = full
        .lines()
        .map(|l| if l.starts_with("{\"seq\":3,") { l.replacen("{", "{\"note\":\"x\",", 1) } else { l.to_string() })
        .map(|l| l + "\n")
        .collect();
    for (name, body, needle) in [
        ("edited.jsonl", edited, "edited.jsonl: seq 6: hash does not match"),
        ("dropped.jsonl", dropped, "dropped.jsonl: seq 12: missing"),
        ("uncovered.jsonl", uncovered, "not covered by a checkpoint"),
        ("extra.jsonl", extra, "unexpected key \"note\""),
    ] {
        write_file(&auditor, name, body.as_bytes());
        let out = run(&["audit", "verify", "--export", name, "--public-key", "cairn.pem"], &[], &auditor);
        assert_not_verified(&out, needle);
    }
    // Without the public key there is no offline verification.
    let out = run(&["audit", "verify", "--export", "all.jsonl"], &[], &auditor);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--public-key"), "{}", text(&out.stderr));
}

pub(crate) fn write_file(dir: &Path, name: &str, body: &[u8]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.display().to_string()
}
