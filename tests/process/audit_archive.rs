//! `cairn audit archive` (DESIGN §7): old events move to a verifiable file under
//! `<data_dir>/audit-archive/` while the server keeps appending, and `cairn audit verify` walks
//! the archive files and then the database as one chain. An archive verifies offline like an
//! export, and an export of the rest continues it. Tampering on either side of the boundary
//! (the file edited, cut short or gone; the first event after the cut deleted; the recorded
//! cut edited) fails, naming the seq.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::{
    AUDIT_ENV, assert_not_verified, assert_verified, db, push_image, sqlite3, verify, wait_for_checkpoint_at_head,
    write_file,
};
use crate::cli::{run, text};
use crate::support::*;

fn archive(data: &Path, before: &str) -> std::process::Output {
    run(&["audit", "archive", "--data-dir", data.to_str().unwrap(), "--before", before], &[], data.parent().unwrap())
}

/// A copy of the database, the key and the archive files in a fresh data directory.
fn copy_all(data: &Path, name: &str) -> PathBuf {
    let to = data.parent().unwrap().join(name);
    std::fs::create_dir_all(to.join("audit-archive")).unwrap();
    sqlite3(&db(data), &format!(".backup '{}'", db(&to).display()));
    std::fs::copy(data.join("audit-signing-key.p8"), to.join("audit-signing-key.p8")).unwrap();
    for f in std::fs::read_dir(data.join("audit-archive")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join("audit-archive").join(f.file_name().unwrap())).unwrap();
    }
    to
}

/// Rewrites the lines of a file.
fn edit_lines(path: &Path, f: impl Fn(&str) -> Option<String>) {
    let body: String = std::fs::read_to_string(path).unwrap().lines().filter_map(f).map(|l| l + "\n").collect();
    std::fs::write(path, body).unwrap();
}

#[tokio::test]
async fn verification_spans_an_archive_made_while_the_server_runs() {
    let (root, data) = workdir();
    let data_arg = data.to_str().unwrap().to_string();
    let http = client();
    let mut srv = Server::start_with(&data, None, &AUDIT_ENV).await;
    for n in 0..3 {
        push_image(&http, &srv, &format!("archive/app{n}"), n).await;
    }
    wait_for_checkpoint_at_head(&data).await;

    // By seq, while the server runs.
    let out = archive(&data, "8");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("archived seq 1..7 (7 events"), "{}", text(&out.stdout));
    let first_file = data.join("audit-archive").join("1-7.jsonl");
    assert!(first_file.is_file(), "{} exists", first_file.display());
    assert_eq!(sqlite3(&db(&data), "SELECT count(*), min(seq) FROM ledger WHERE seq <= 7 OR seq = 8"), "1|8");
    assert_eq!(
        sqlite3(&db(&data), "SELECT count(*) FROM ledger_checkpoints WHERE seq = 7"),
        "1",
        "it ends at a checkpoint"
    );
    let last_line = std::fs::read_to_string(&first_file).unwrap().lines().last().unwrap().to_string();
    assert!(last_line.starts_with("{\"checkpoint\":{\"seq\":7,"), "{last_line}");

    // The server appends after the cut; verification walks the archive, then the database.
    push_image(&http, &srv, "archive/late", 9).await;
    let head = wait_for_checkpoint_at_head(&data).await;
    assert_verified(&verify(&data, &[]), &format!("seq 1..{head}, {head} events (7 in 1 archive file(s))"));

    // By time: the events before the first one at or after seq 12's time.
    let time = sqlite3(&db(&data), "SELECT time FROM ledger WHERE seq = 12");
    let last: i64 = sqlite3(
        &db(&data),
        "SELECT min(seq) - 1 FROM ledger WHERE seq > 7 AND at_ms >= (SELECT at_ms FROM ledger WHERE seq = 12)",
    )
    .parse()
    .unwrap();
    assert!(last >= 8, "seq 8 is older than seq 12's time (last = {last})");
    let out = archive(&data, &time);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("archived seq 8..{last} ")), "{}", text(&out.stdout));
    let second_file = data.join("audit-archive").join(format!("8-{last}.jsonl"));
    assert!(second_file.is_file());
    assert_verified(&verify(&data, &[]), &format!("seq 1..{head}, {head} events ({last} in 2 archive file(s))"));
    let out = archive(&data, "2000-01-01T00:00:00Z");
    assert!(out.status.success() && text(&out.stdout).contains("nothing to archive"), "{}", text(&out.stdout));

    // Offline: the archives and an export of the rest verify as one chain with the public key.
    let auditor = root.path().join("auditor");
    let pem = run(&["audit", "public-key", "--data-dir", &data_arg], &[], root.path());
    write_file(&auditor, "cairn.pem", &pem.stdout);
    let rest = auditor.join("rest.jsonl");
    let out = run(&["audit", "export", "--data-dir", &data_arg, "-o", rest.to_str().unwrap()], &[], root.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(
        &[
            "audit",
            "verify",
            "--public-key",
            "cairn.pem",
            "--export",
            first_file.to_str().unwrap(),
            "--export",
            second_file.to_str().unwrap(),
            "--export",
            "rest.jsonl",
        ],
        &[],
        &auditor,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("1-7.jsonl: verified seq 1..7, 7 events") && stdout.contains("from the start"), "{stdout}");
    assert_eq!(stdout.matches("continues the file before it").count(), 2, "{stdout}");
    // Archived seqs are exported from their archive file, not the database.
    let out = run(&["audit", "export", "--data-dir", &data_arg, "--since", "3"], &[], root.path());
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&format!("events up to seq {last} were archived")), "{}", text(&out.stderr));

    srv.terminate();
    assert!(srv.wait_exit(Duration::from_secs(20)).await.is_some_and(|s| s.success()), "{}", srv.stderr());
    assert_verified(&verify(&copy_all(&data, "control"), &[]), &format!("seq 1..{head}"));

    let archive_of = |d: &Path| d.join("audit-archive").join("1-7.jsonl");
    let edited = copy_all(&data, "edited");
    edit_lines(&archive_of(&edited), |l| Some(l.replacen("\"anonymous\"", "\"mallory\"", 1)));
    assert_not_verified(&verify(&edited, &[]), "1-7.jsonl: seq 2: hash does not match");

    let cut_short = copy_all(&data, "cut-short");
    edit_lines(&archive_of(&cut_short), |l| (!l.contains("{\"seq\":7,\"")).then(|| l.to_string()));
    assert_not_verified(&verify(&cut_short, &[]), "1-7.jsonl: seq 7: the archive");
    assert_not_verified(&verify(&cut_short, &[]), "ends at seq 6");

    let gone = copy_all(&data, "gone");
    std::fs::remove_file(archive_of(&gone)).unwrap();
    assert_not_verified(&verify(&gone, &[]), "1-7.jsonl is missing");
    // Moved elsewhere, it verifies with --archive-dir.
    let moved = copy_all(&data, "moved");
    let elsewhere = root.path().join("cold-storage");
    std::fs::rename(moved.join("audit-archive"), &elsewhere).unwrap();
    assert_verified(&verify(&moved, &["--archive-dir", elsewhere.to_str().unwrap()]), &format!("seq 1..{head}"));

    let after_cut = copy_all(&data, "after-cut");
    sqlite3(&db(&after_cut), &format!("DELETE FROM ledger WHERE seq = {}", last + 1));
    assert_not_verified(&verify(&after_cut, &[]), &format!("seq {}: missing", last + 1));

    let cut_row = copy_all(&data, "cut-row");
    sqlite3(&db(&cut_row), &format!("UPDATE ledger_archives SET hash = '{}' WHERE seq = 7", "0".repeat(64)));
    assert_not_verified(&verify(&cut_row, &[]), &format!("seq 7: the archive {}", archive_of(&cut_row).display()));
    assert_not_verified(&verify(&cut_row, &[]), &format!("recorded its cut at seq 7 (hash {})", "0".repeat(64)));
}
