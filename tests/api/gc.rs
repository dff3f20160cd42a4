//! Online garbage collection: what goes, what stays (grace, re-link, HEAD, manifests, links no
//! manifest uses), dry run, the lock, upload leftovers, storage figures. Time is moved with a
//! `ManualClock`, never slept. The stress run is in `gc_stress.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cairn::clock::ManualClock;
use cairn::meta::EventFilter;
use cairn::oci::{Digest, RepoName};
use cairn::service::{GcOptions, GcReport};
use reqwest::StatusCode;

use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);
const MIN: Duration = Duration::from_secs(60);

async fn spawn_clocked() -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    // Mutable tags, so tests can delete the manifests they pushed.
    let app = spawn_with_clock(clock.clone(), |c| {
        c.immutability.rules = vec![rule(None, "**", &["*"], cairn::policy::Mode::Mutable)]
    })
    .await;
    (app, clock)
}

/// A counter of this process's metrics, parsed from the Prometheus page (`label` `("", "")`: any).
fn counter(name: &str, label: (&str, &str)) -> f64 {
    let page = cairn::metrics::render();
    let scrape = prometheus_parse::Scrape::parse(page.lines().map(|l| Ok(l.to_string()))).unwrap();
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && (label.0.is_empty() || s.labels.get(label.0) == Some(label.1)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

async fn gc(app: &TestApp, dry_run: bool) -> GcReport {
    app.state.registry.collect_garbage(&GcOptions { grace: HOUR, dry_run }, |_| {}).await.unwrap()
}

/// True if some stored object (a file of the blob directory, an object in the bucket) holds
/// exactly `bytes`.
async fn stored(app: &TestApp, bytes: &[u8]) -> bool {
    app.objects().await.iter().any(|(_, b)| b == bytes)
}

/// The blob's GC mark (`touched_at`) as the metadata store has it, in milliseconds.
async fn mark_millis(app: &TestApp, repo: &str, d: &str) -> i64 {
    let (repo, d) = (RepoName::parse(repo).unwrap(), Digest::parse(d).unwrap());
    let (_, mark) = app.state.meta.blob_with_mark(&repo, &d).await.unwrap().expect("the blob is linked");
    mark.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

async fn unlink(app: &TestApp, repo: &str, d: &str) {
    let r = app.delete(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
}

async fn mount(app: &TestApp, repo: &str, d: &str, from: &str) {
    let r = app.post(&format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}")).await;
    assert_eq!(r.status(), StatusCode::CREATED, "mount {d} from {from} into {repo}");
}

#[tokio::test]
async fn an_unlinked_blob_past_the_grace_is_collected_and_ledgered() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(3000);
    let d = app.push_blob("gc/a", &bytes).await;
    unlink(&app, "gc/a", &d).await;
    assert!(stored(&app, &bytes).await);
    clock.advance(HOUR + MIN);
    let before = (counter("cairn_gc_runs_total", ("outcome", "done")), counter("cairn_gc_freed_bytes_total", ("", "")));
    let r = gc(&app, false).await;
    assert_eq!((r.blobs, r.bytes, r.digests.clone()), (1, 3000, vec![d.clone()]));
    assert!(!stored(&app, &bytes).await, "its bytes are gone from the store");
    // Counted in the metrics (other tests in this process collect too: at least this run).
    assert!(counter("cairn_gc_runs_total", ("outcome", "done")) >= before.0 + 1.0);
    assert!(counter("cairn_gc_freed_bytes_total", ("", "")) >= before.1 + 3000.0);
    assert_eq!(app.get(&format!("/v2/gc/a/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
    let filter = EventFilter { action: Some("gc.delete".into()), ..Default::default() };
    let events = app.state.meta.events(&filter, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].detail["digests"][0], d.as_str());
    assert_eq!(events[0].detail["bytes"], 3000);
    // The same bytes can be pushed again afterwards.
    assert_eq!(app.push_blob("gc/a", &bytes).await, d);
    assert_eq!(app.get(&format!("/v2/gc/a/blobs/{d}")).await.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn an_unlinked_blob_within_the_grace_is_kept() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(1000);
    let d = app.push_blob("gc/b", &bytes).await;
    clock.advance(2 * HOUR); // old upload, but the grace runs from the unlink
    unlink(&app, "gc/b", &d).await;
    clock.advance(59 * MIN);
    let r = gc(&app, false).await;
    assert_eq!(r.blobs, 0);
    assert!(stored(&app, &bytes).await);
    clock.advance(2 * MIN);
    assert_eq!(gc(&app, false).await.blobs, 1);
    assert!(!stored(&app, &bytes).await);
}

#[tokio::test]
async fn a_blob_mounted_meanwhile_is_kept() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(1000);
    let d = app.push_blob("gc/c1", &bytes).await;
    mount(&app, "gc/c2", &d, "gc/c1").await;
    unlink(&app, "gc/c1", &d).await;
    clock.advance(50 * MIN);
    mount(&app, "gc/c3", &d, "gc/c2").await;
    unlink(&app, "gc/c2", &d).await;
    let config = app.push_blob("gc/c3", b"{}").await;
    let m = image_manifest(&config, 2, &[(&d, 1000)], None);
    assert_eq!(app.put_manifest("gc/c3", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    clock.advance(2 * HOUR);
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs), (0, 0), "linked in gc/c3, where a manifest uses it");
    assert!(stored(&app, &bytes).await);
    assert_eq!(app.get(&format!("/v2/gc/c3/blobs/{d}")).await.bytes().await.unwrap().as_ref(), &bytes[..]);
}

#[tokio::test]
async fn the_deleting_transaction_checks_again() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(1000);
    let d = app.push_blob("gc/r", &bytes).await;
    unlink(&app, "gc/r", &d).await;
    clock.advance(2 * HOUR);
    let cutoff = clock_now(&app) - HOUR;
    let candidates = app.state.meta.gc_candidates(cutoff, None, 10).await.unwrap();
    assert_eq!(candidates.len(), 1, "a candidate");
    // Uploaded again between the candidate list and the deleting transaction.
    app.push_blob("gc/r2", &bytes).await;
    let mut tx = app.state.meta.begin(std::time::SystemTime::now()).await.unwrap();
    assert!(tx.delete_unlinked_blob(&candidates[0].digest, cutoff).await.unwrap().is_none(), "re-linked: kept");
    tx.rollback().await.unwrap();
    let r = gc(&app, false).await;
    assert_eq!(r.blobs, 0);
    assert!(stored(&app, &bytes).await);
}

fn clock_now(app: &TestApp) -> SystemTime {
    app.state.registry.clock().now()
}

#[tokio::test]
async fn a_head_moves_the_mark_within_a_second() {
    let (app, clock) = spawn_clocked().await;
    let d = app.push_blob("gc/h", &random_bytes(500)).await;
    clock.advance(50 * MIN);
    assert_eq!(app.head(&format!("/v2/gc/h/blobs/{d}")).await.status(), StatusCode::OK);
    let expected = clock_now(&app).duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    // The server's 1-second task writes the touch; wait for it (at most a few seconds).
    let mut touched = 0i64;
    for _ in 0..40 {
        touched = mark_millis(&app, "gc/h", &d).await;
        if touched == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(touched, expected, "the HEAD's time is the blob's GC mark");
}

#[tokio::test]
async fn a_blob_a_manifest_uses_is_never_collected() {
    let (app, clock) = spawn_clocked().await;
    let (_, m) = app.push_image("gc/m", "v1").await;
    let before = app.object_keys().await.len();
    clock.advance(100 * HOUR);
    assert_eq!(gc(&app, false).await.blobs, 0);
    assert_eq!(app.object_keys().await.len(), before);
    let body: serde_json::Value = app.get(&format!("/v2/gc/m/manifests/{m}")).await.json().await.unwrap();
    for d in std::iter::once(&body["config"]["digest"])
        .chain(body["layers"].as_array().unwrap().iter().map(|l| &l["digest"]))
    {
        let d = d.as_str().unwrap();
        let got = app.get(&format!("/v2/gc/m/blobs/{d}")).await.bytes().await.unwrap();
        assert_eq!(digest(&got), d, "pulls complete");
    }
}

#[tokio::test]
async fn a_dry_run_deletes_nothing() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(2048);
    let d = app.push_blob("gc/d", &bytes).await;
    unlink(&app, "gc/d", &d).await;
    clock.advance(2 * HOUR);
    let r = gc(&app, true).await;
    assert!(r.dry_run);
    assert_eq!((r.blobs, r.bytes), (1, 2048));
    assert!(stored(&app, &bytes).await, "nothing deleted");
    let filter = EventFilter { action: Some("gc.delete".into()), ..Default::default() };
    assert!(app.state.meta.events(&filter, 10).await.unwrap().is_empty(), "nothing ledgered");
    assert_eq!(gc(&app, false).await.blobs, 1);
}

#[tokio::test]
async fn only_one_collector_at_a_time() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(100);
    let d = app.push_blob("gc/l", &bytes).await;
    unlink(&app, "gc/l", &d).await;
    clock.advance(2 * HOUR);
    let now = clock_now(&app);
    assert!(app.state.meta.gc_lock("other-node", now, now + 5 * MIN).await.unwrap());
    let r = gc(&app, false).await;
    assert!(r.busy);
    assert_eq!(r.blobs, 0);
    assert!(stored(&app, &bytes).await);
    clock.advance(6 * MIN); // the other holder died: its lock expires
    let r = gc(&app, false).await;
    assert!(!r.busy);
    assert_eq!(r.blobs, 1);
}

#[tokio::test]
async fn upload_leftovers_are_removed_from_what_the_database_knows() {
    let (app, _clock) = spawn_clocked().await;
    let bytes = random_bytes(700);
    let loc = app.start_upload("gc/u").await;
    assert_eq!(app.patch_chunk(&loc, 0, &bytes).await.status(), StatusCode::ACCEPTED);
    assert!(stored(&app, &bytes).await);
    // The session ends but its objects are left behind (as if the process died right after).
    let id = loc.trim_end_matches('/').rsplit('/').next().unwrap().split('?').next().unwrap().to_string();
    assert!(app.state.meta.delete_upload(&id, std::time::SystemTime::now()).await.unwrap().is_some());
    assert!(stored(&app, &bytes).await);
    let r = gc(&app, false).await;
    assert!(r.uploads >= 1);
    assert!(!stored(&app, &bytes).await, "the leftover segment is gone");
    assert!(app.state.meta.upload_garbage(10).await.unwrap().is_empty());
}

/// The config and layer of a manifest, as (digest, bytes).
async fn push_image_blobs(app: &TestApp, repo: &str, tag: &str) -> (String, Vec<(String, Vec<u8>)>) {
    let config = format!("{{\"repo\":\"{repo}\",\"tag\":\"{tag}\",\"n\":\"{}\"}}", uniq()).into_bytes();
    let layer = random_bytes(1500);
    let (cd, ld) = (app.push_blob(repo, &config).await, app.push_blob(repo, &layer).await);
    let m = image_manifest(&cd, config.len() as u64, &[(&ld, 1500)], None);
    let r = app.put_manifest(repo, tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    (digest(&m), vec![(cd, config), (ld, layer)])
}

#[tokio::test]
async fn a_deleted_manifests_blobs_are_unlinked_and_freed_in_one_run_after_the_grace() {
    let (app, clock) = spawn_clocked().await;
    let (m, blobs) = push_image_blobs(&app, "gc/del", "v1").await;
    let bytes: u64 = blobs.iter().map(|(_, b)| b.len() as u64).sum();
    assert_eq!(app.delete(&format!("/v2/gc/del/manifests/{m}")).await.status(), StatusCode::ACCEPTED);
    clock.advance(HOUR + MIN);
    let dry = gc(&app, true).await;
    assert_eq!((dry.links, dry.link_bytes, dry.blobs, dry.bytes), (2, bytes, 2, bytes), "dry run: {dry:?}");
    assert!(dry.unlinked.iter().all(|l| l.starts_with("gc/del@sha256:")), "{:?}", dry.unlinked);
    let objects = app.objects().await;
    assert!(blobs.iter().all(|(_, b)| objects.iter().any(|(_, o)| o == b)), "a dry run deletes nothing");
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs, r.bytes), (2, 2, bytes), "one run unlinks and frees: {r:?}");
    for (d, b) in &blobs {
        assert!(!stored(&app, b).await, "{d}: bytes gone from the store");
        assert_eq!(app.head(&format!("/v2/gc/del/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
    }
    let filter = EventFilter { action: Some("blob.unlink".into()), actor: Some("gc".into()), ..Default::default() };
    let events = app.state.meta.events(&filter, 10).await.unwrap();
    let mut got: Vec<(String, String)> = events
        .iter()
        .map(|e| (e.repository.clone().unwrap_or_default(), e.digest.clone().unwrap_or_default()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = blobs.iter().map(|(d, _)| ("gc/del".to_string(), d.clone())).collect();
    want.sort();
    assert_eq!(got, want, "each unlink is ledgered with actor gc");
    assert_eq!(gc(&app, false).await, GcReport::default(), "nothing left");
}

#[tokio::test]
async fn a_link_no_manifest_uses_is_kept_within_the_grace() {
    let (app, clock) = spawn_clocked().await;
    let bytes = random_bytes(900);
    let d = app.push_blob("gc/wait", &bytes).await;
    clock.advance(HOUR - MIN);
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs), (0, 0), "uploaded within the grace: its manifest may still come");
    clock.advance(2 * MIN);
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs, r.bytes), (1, 1, 900));
    assert!(!stored(&app, &bytes).await);
    assert_eq!(r.unlinked, vec![format!("gc/wait@{d}")]);
}

#[tokio::test]
async fn a_layer_another_repository_uses_stays() {
    let (app, clock) = spawn_clocked().await;
    let (m, blobs) = push_image_blobs(&app, "gc/one", "v1").await;
    let (cd, ld) = (&blobs[0].0, &blobs[1].0);
    mount(&app, "gc/two", ld, "gc/one").await;
    mount(&app, "gc/two", cd, "gc/one").await;
    let body = image_manifest(cd, blobs[0].1.len() as u64, &[(ld, 1500)], None);
    assert_eq!(app.put_manifest("gc/two", "v1", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    assert_eq!(app.delete(&format!("/v2/gc/one/manifests/{m}")).await.status(), StatusCode::ACCEPTED);
    clock.advance(3 * HOUR);
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs), (2, 0), "unlinked from gc/one only: {r:?}");
    for (d, b) in &blobs {
        assert_eq!(app.head(&format!("/v2/gc/one/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
        let got = app.get(&format!("/v2/gc/two/blobs/{d}")).await.bytes().await.unwrap();
        assert_eq!(got.as_ref(), &b[..], "gc/two still pulls {d}");
    }
}

#[tokio::test]
async fn a_head_close_to_the_grace_keeps_the_link_for_a_late_manifest() {
    let (app, clock) = spawn_clocked().await;
    let config = app.push_blob("gc/late", b"{}").await;
    let layer = app.push_blob("gc/late", &random_bytes(700)).await;
    clock.advance(HOUR - Duration::from_secs(2));
    // Docker's flow: HEAD each blob, then PUT the manifest without uploading them again. The
    // marks are 2 s from the grace, so the HEAD writes them at once (no tally to wait for).
    for d in [&config, &layer] {
        assert_eq!(app.head(&format!("/v2/gc/late/blobs/{d}")).await.status(), StatusCode::OK);
    }
    let expected = clock_now(&app).duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(mark_millis(&app, "gc/late", &layer).await, expected, "written by the HEAD itself");
    clock.advance(30 * MIN); // past the upload's grace, within the HEAD's
    let r = gc(&app, false).await;
    assert_eq!((r.links, r.blobs), (0, 0), "{r:?}");
    let m = image_manifest(&config, 2, &[(&layer, 700)], None);
    let r = app.put_manifest("gc/late", "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "no MANIFEST_BLOB_UNKNOWN: {:?}", r.text().await);
}

#[tokio::test]
async fn the_unlinking_transaction_checks_again() {
    let (app, clock) = spawn_clocked().await;
    let config = app.push_blob("gc/re", b"{}").await;
    let layer = app.push_blob("gc/re", &random_bytes(600)).await;
    clock.advance(2 * HOUR);
    let cutoff = clock_now(&app) - HOUR;
    let candidates = app.state.meta.gc_link_candidates(cutoff, None, 10).await.unwrap();
    assert_eq!(candidates.len(), 2);
    // The manifest arrives between the candidate list and the unlinking transaction.
    let m = image_manifest(&config, 2, &[(&layer, 600)], None);
    assert_eq!(app.put_manifest("gc/re", "v1", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    let mut tx = app.state.meta.begin(clock_now(&app)).await.unwrap();
    for c in &candidates {
        assert!(!tx.unlink_unreferenced(&c.repo, &c.digest, cutoff).await.unwrap(), "referenced now: kept");
    }
    tx.rollback().await.unwrap();
    assert_eq!(gc(&app, false).await.links, 0);
}

#[tokio::test]
async fn storage_figures_count_shared_blobs_once() {
    let (app, _clock) = spawn_clocked().await;
    let shared = random_bytes(4000);
    let config = app.push_blob("fig/a", b"{}").await;
    let s = app.push_blob("fig/a", &shared).await;
    let mut manifest_bytes = 0;
    for (i, own) in [random_bytes(100), random_bytes(200)].iter().enumerate() {
        let o = app.push_blob("fig/a", own).await;
        let m = image_manifest(&config, 2, &[(&s, 4000), (&o, own.len() as u64)], None);
        manifest_bytes += m.len() as u64;
        let r = app.put_manifest("fig/a", &format!("v{i}"), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    mount(&app, "fig/b", &s, "fig/a").await;
    let v: serde_json::Value = app.get("/api/v1/repositories").await.json().await.unwrap();
    let a = &v["repositories"][0];
    assert_eq!(
        (a["name"].as_str(), a["tag_count"].as_u64(), a["manifest_count"].as_u64()),
        (Some("fig/a"), Some(2), Some(2))
    );
    assert_eq!(a["size_bytes"], 2 + 4000 + 100 + 200 + manifest_bytes, "the shared layer and config once: {a}");
    assert_eq!(v["repositories"][1]["size_bytes"], 4000);
    let t = &v["total"];
    assert_eq!(t["repositories"], 2);
    assert_eq!(t["tag_count"], 2);
    assert_eq!(t["manifest_count"], 2);
    assert_eq!(t["blob_count"], 4, "{t}");
    assert_eq!(t["blob_bytes"], 2 + 4000 + 100 + 200, "a blob in two repositories counts once");
    assert_eq!(t["manifest_bytes"], manifest_bytes);
    assert_eq!(t["size_bytes"], 2 + 4000 + 100 + 200 + manifest_bytes);
    assert_eq!(t["unreferenced_bytes"], 0);
}
