//! `cairn gc` killed with SIGKILL in the middle of a run (issue 10): nothing referenced is
//! lost, and the next run finishes the job: the rest of the garbage is freed and the objects
//! of blobs whose rows the killed run already deleted are removed.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;

use crate::support::*;

/// Blobs pushed without a manifest, and images pushed by digest and deleted: the garbage.
const LOOSE_BLOBS: usize = 800;
const DELETED_IMAGES: usize = 60;

/// sha256 of every file under the blob directory (one object per stored blob).
fn stored(data: &Path) -> Vec<String> {
    let mut out: Vec<String> =
        files_under(&data.join("blobs")).iter().filter_map(|p| std::fs::read(p).ok()).map(|b| sha256(&b)).collect();
    out.sort();
    out
}

fn gc_command(data: &Path) -> std::process::Command {
    let mut c = cairn();
    c.args(["gc", "--grace", "0s", "--data-dir"]).arg(data);
    c
}

#[tokio::test]
async fn kill_9_during_gc_loses_nothing_referenced_and_the_next_run_finishes() {
    let (_root, data) = workdir();
    let http = client();
    let srv = Server::start(&data).await;

    // Kept: two tagged images sharing a layer.
    let shared = random_bytes(5000);
    let mut kept = Vec::new();
    for tag in ["v1", "v2"] {
        let config = format!("{{\"tag\":\"{tag}\"}}").into_bytes();
        let own = random_bytes(3000);
        let (c, s, o) = (
            push_blob(&http, &srv, "keep/app", &config).await,
            push_blob(&http, &srv, "keep/app", &shared).await,
            push_blob(&http, &srv, "keep/app", &own).await,
        );
        let m = image_manifest((&c, config.len()), &[(&s, shared.len()), (&o, own.len())]);
        put_manifest(&http, &srv, "keep/app", tag, &m).await;
        kept.push((tag, m, vec![(c, config), (s, shared.clone()), (o, own)]));
    }
    let referenced: BTreeSet<String> = kept.iter().flat_map(|(_, _, b)| b.iter().map(|(d, _)| d.clone())).collect();

    // Garbage: loose blobs, and deleted images that also used the kept shared layer.
    let loose = futures::stream::iter(0..LOOSE_BLOBS)
        .map(|i| {
            let (http, srv) = (&http, &srv);
            async move { push_blob(http, srv, &format!("junk/r{}", i % 10), &random_bytes(64 + i % 100)).await }
        })
        .buffer_unordered(8)
        .collect::<Vec<String>>()
        .await;
    let mut garbage: Vec<String> = loose;
    futures::stream::iter(0..DELETED_IMAGES)
        .map(|i| {
            let (http, srv, shared) = (&http, &srv, &shared);
            async move {
                let config = format!("{{\"deleted\":{i}}}").into_bytes();
                let c = push_blob(http, srv, "keep/app", &config).await;
                let s = push_blob(http, srv, "keep/app", shared).await;
                let m = image_manifest((&c, config.len()), &[(&s, shared.len())]);
                let d = put_manifest(http, srv, "keep/app", &sha256(&m), &m).await;
                let r = http.delete(srv.url(&format!("/v2/keep/app/manifests/{d}"))).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                c
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<String>>()
        .await
        .into_iter()
        .for_each(|c| garbage.push(c));
    drop(srv); // SIGKILL: the server is gone; `cairn gc` runs alone on the data directory
    let before = stored(&data);
    assert_eq!(before.len(), referenced.len() + garbage.len(), "one object per blob before GC");

    // Kill `cairn gc` as soon as its first deleting transaction committed, long before it is
    // done (the database is watched, not the directory: listing it is too slow to catch a run).
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", data.join("cairn.db").display())).await.unwrap();
    let count = || async { sqlx::query_scalar::<_, i64>("SELECT count(*) FROM blobs").fetch_one(&db).await.unwrap() };
    let rows = count().await as usize;
    assert_eq!(rows, before.len());
    let mut child = gc_command(&data).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn cairn gc");
    let started = Instant::now();
    while count().await as usize == rows {
        assert!(child.try_wait().unwrap().is_none(), "cairn gc finished before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60), "cairn gc deleted nothing within 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "killed, not finished: {status:?}");
    let after_kill = stored(&data);
    let left = after_kill.iter().filter(|d| !referenced.contains(*d)).count();
    assert!(left > 0, "the killed run left garbage behind (else this test proves nothing)");
    // Some blob rows are gone (that is when it was killed); their objects may still be there.
    assert!(count().await < rows as i64);
    db.close().await;

    // Restart: every tagged image pulls complete.
    let srv = Server::start(&data).await;
    for (tag, m, blobs) in &kept {
        assert_manifest(&http, &srv, "keep/app", tag, m).await;
        for (d, bytes) in blobs {
            assert_blob(&http, &srv, "keep/app", d, bytes).await;
        }
    }

    // The next run, online, finishes the job.
    let out = gc_command(&data).output().expect("run cairn gc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("freed"), "the report says what was freed: {stdout}");
    let after = stored(&data);
    assert_eq!(after, referenced.iter().cloned().collect::<Vec<_>>(), "exactly the referenced blobs remain");
    for d in garbage.iter().take(20) {
        let r = http.head(srv.url(&format!("/v2/junk/r0/blobs/{d}"))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    for (tag, m, blobs) in &kept {
        assert_manifest(&http, &srv, "keep/app", tag, m).await;
        for (d, bytes) in blobs {
            assert_blob(&http, &srv, "keep/app", d, bytes).await;
        }
    }
    let again = gc_command(&data).output().expect("run cairn gc");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("gc: 0 repository links") && stdout.contains("0 blobs, 0 bytes freed"), "{stdout}");
}
