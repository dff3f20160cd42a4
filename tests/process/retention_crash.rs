//! `cairn retention apply` killed with SIGKILL in the middle of a run (issue 10): every
//! deletion is all or nothing (a tag and its manifest go in one transaction with their ledger
//! events), nothing a policy keeps is lost, and the next run finishes the job.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;

use crate::support::*;

/// Tags pushed; the policy keeps the newest `KEEP`. Apply deletes in batches of 200, so a run
/// takes several transactions and can be killed between them.
const TAGS: usize = 600;
const KEEP: usize = 2;

const CONFIG: &str = r#"
[[retention.policies]]
name = "crash"
repositories = "apps/**"
keep_last = 2
rollback_window = 0
"#;

fn apply(config: &Path, data: &Path) -> std::process::Command {
    let mut c = cairn();
    c.args(["retention", "apply", "--config"]).arg(config).arg("--data-dir").arg(data);
    c
}

#[tokio::test]
async fn kill_9_during_retention_apply_loses_nothing_kept_and_the_next_run_finishes() {
    let (root, data) = workdir();
    let config = root.path().join("cairn.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let http = client();
    let srv = Server::start_with(&data, Some(&config), &[]).await;

    // Every tag its own manifest (its own config blob) over one shared layer.
    let layer = random_bytes(4000);
    let l = push_blob(&http, &srv, "apps/web", &layer).await;
    let push = |i: usize| {
        let (http, srv, l, layer) = (&http, &srv, &l, &layer);
        async move {
            let config = format!("{{\"n\":{i}}}").into_bytes();
            let c = push_blob(http, srv, "apps/web", &config).await;
            let m = image_manifest((&c, config.len()), &[(l, layer.len())]);
            put_manifest(http, srv, "apps/web", &format!("v{i}"), &m).await;
            (format!("v{i}"), m, c, config)
        }
    };
    futures::stream::iter(0..TAGS - KEEP).map(push).buffer_unordered(8).collect::<Vec<_>>().await;
    // The newest two, pushed last (keep_last counts by the time a tag was set).
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut kept = Vec::new();
    for i in TAGS - KEEP..TAGS {
        kept.push(push(i).await);
    }
    drop(srv); // SIGKILL; `cairn retention apply` runs alone on the data directory

    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", data.join("cairn.db").display())).await.unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&db).await.unwrap() as usize }
    };
    assert_eq!(count("SELECT count(*) FROM tags").await, TAGS);
    let mut child = apply(&config, &data).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn apply");
    let started = Instant::now();
    while count("SELECT count(*) FROM tags").await == TAGS {
        assert!(child.try_wait().unwrap().is_none(), "retention apply finished before it could be killed");
        assert!(started.elapsed() < Duration::from_secs(60), "retention apply deleted nothing within 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    child.kill().unwrap();
    assert!(!child.wait().unwrap().success(), "killed, not finished");
    let tags_left = count("SELECT count(*) FROM tags").await;
    assert!(tags_left > KEEP, "the killed run left work behind (else this test proves nothing): {tags_left}");
    // All or nothing: every tag left points at a stored manifest, every deleted tag's
    // manifest went with it, and each deletion is in the ledger.
    let manifests_left = count("SELECT count(*) FROM manifests").await;
    assert_eq!(manifests_left, tags_left, "a tag and its manifest go together");
    let deleted_events = count("SELECT count(*) FROM ledger WHERE action = 'retention.delete'").await;
    assert_eq!(deleted_events, 2 * (TAGS - tags_left), "one event per deleted tag and manifest");
    db.close().await;

    // Restart: what the policy keeps pulls complete; what is left pulls too.
    let srv = Server::start_with(&data, Some(&config), &[]).await;
    for (tag, m, c, config) in &kept {
        assert_manifest(&http, &srv, "apps/web", tag, m).await;
        assert_blob(&http, &srv, "apps/web", c, config).await;
        assert_blob(&http, &srv, "apps/web", &l, &layer).await;
    }

    // The next run finishes the job, and a third finds nothing to do.
    let out = apply(&config, &data).output().expect("run retention apply");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let want = format!("deleted {} tags and {} manifests", tags_left - KEEP, tags_left - KEEP);
    assert!(stdout.contains(&want), "{want} in: {stdout}");
    let r = http.get(srv.url("/v2/apps/web/tags/list?n=1000")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed: serde_json::Value = r.json().await.unwrap();
    let tags: BTreeSet<String> =
        listed["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
    assert_eq!(tags, kept.iter().map(|(t, ..)| t.clone()).collect::<BTreeSet<_>>());
    let again = apply(&config, &data).output().expect("run retention apply");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("deleted 0 tags and 0 manifests"), "{stdout}");
    // The ledger, with the killed run's events and the rest, still verifies.
    let verify = cairn().args(["audit", "verify", "--data-dir"]).arg(&data).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}
