//! `cairn scrub` (filesystem blobs) while the server serves: a healthy registry scrubs clean
//! (exit 0); then one blob file is changed in place, one cut short and one deleted, and scrub
//! names each of them by digest with what is wrong and the repository that links it, exits 1,
//! and says the same as JSON with --json. On a terminal it shows its progress.

use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::support::*;

/// Runs `cairn scrub --data-dir DATA [extra]`.
fn scrub(data: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = cairn().args(["scrub", "--data-dir", data.to_str().unwrap()]).args(extra).output().unwrap();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

/// The blob file whose bytes are `want` (found by content: keys are the registry's business).
fn file_of(data: &Path, want: &[u8]) -> PathBuf {
    let files = files_under(&data.join("blobs"));
    let found = files.iter().find(|f| std::fs::read(f).is_ok_and(|b| b == want));
    found.unwrap_or_else(|| panic!("no blob file holds these {} bytes among {files:?}", want.len())).clone()
}

#[tokio::test]
async fn scrub_names_damaged_and_missing_blobs_by_digest() {
    let (_root, data) = workdir();
    let srv = Server::start(&data).await;
    let http = client();
    let repo = "apps/scrubbed";
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let (a, b, c) = (random_bytes(70_000), random_bytes(3_000), random_bytes(300_000));
    let dc = push_blob(&http, &srv, repo, &config).await;
    let da = push_blob(&http, &srv, repo, &a).await;
    let db = push_blob(&http, &srv, repo, &b).await;
    let dcc = push_blob_chunked(&http, &srv, repo, &c, 100_000).await;
    let m = image_manifest((&dc, config.len()), &[(&da, a.len()), (&db, b.len()), (&dcc, c.len())]);
    put_manifest(&http, &srv, repo, "1", &m).await;

    let (code, stdout, stderr) = scrub(&data, &[]);
    assert_eq!(code, Some(0), "healthy\nstdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("scrub: 4 blobs, 373") && stdout.contains("4 healthy, 0 damaged, 0 missing"), "{stdout}");
    let shown = on_a_terminal(&format!("{BIN} scrub --data-dir {}", data.display()));
    assert!(shown.contains("B/s") && shown.contains("4 healthy"), "progress on a terminal: {shown}");

    // Bit rot in `a` (same size), `c` cut short, `b` gone.
    let fa = file_of(&data, &a);
    let mut f = std::fs::OpenOptions::new().write(true).open(&fa).unwrap();
    f.seek(SeekFrom::Start(1234)).unwrap();
    f.write_all(&[a[1234] ^ 0xff]).unwrap();
    drop(f);
    // `c` came in 3 PATCHes, which the filesystem keeps as 3 files: cut the last one short.
    let fc = file_of(&data, &c[200_000..]);
    std::fs::OpenOptions::new().write(true).open(&fc).unwrap().set_len(99_000).unwrap();
    std::fs::remove_file(file_of(&data, &b)).unwrap();

    let (code, stdout, stderr) = scrub(&data, &[]);
    assert_eq!(code, Some(1), "damage found\nstdout: {stdout}\nstderr: {stderr}");
    let line = |d: &str| stdout.lines().find(|l| l.starts_with(d)).unwrap_or_else(|| panic!("{d} not named: {stdout}"));
    assert!(line(&da).contains("damaged: the stored bytes hash to sha256:"), "{stdout}");
    assert!(line(&da).contains(&format!("in {repo}")), "names the repository: {stdout}");
    assert!(line(&dcc).contains("damaged: 299000 bytes stored, 300000 recorded"), "{stdout}");
    assert!(line(&db).contains("missing: object uploads/"), "{stdout}");
    assert!(!stdout.contains(&dc), "the healthy config blob is not named: {stdout}");
    assert!(stdout.contains("1 healthy, 2 damaged, 1 missing"), "{stdout}");
    assert!(stderr.contains("push the damaged and missing blobs again"), "{stderr}");

    let (code, stdout, _) = scrub(&data, &["--json"]);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(report["blobs"], 4);
    assert_eq!(report["healthy"], 1);
    let digests = |k: &str| -> Vec<String> {
        report[k].as_array().unwrap().iter().map(|f| f["digest"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(digests("missing"), vec![db.clone()]);
    let mut damaged = digests("damaged");
    damaged.sort();
    let mut want = vec![da.clone(), dcc.clone()];
    want.sort();
    assert_eq!(damaged, want);
    assert_eq!(report["missing"][0]["problem"], "missing");
    assert_eq!(report["missing"][0]["repositories"][0], repo);

    // The server served throughout; the healthy blob is still served.
    assert_blob(&http, &srv, repo, &dc, &config).await;
}
