//! What a chunked upload is committed as (the key layout in `src/blob/mod.rs`): on S3, an
//! upload of several segments is composed into one `uploads/<id>/composed-<nonce>` object at
//! commit and its segments removed; on the filesystem up to `MAX_KEPT_SEGMENTS` segments stay
//! as they are (never copied) and more are composed; an upload whose bytes came in one
//! request is never copied; a duplicate leaves only the first blob's objects; GC leaves the
//! store empty. Each test runs on whichever backend the pass uses and expects its rule.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::service::GcOptions;
use reqwest::StatusCode;

use crate::helpers::*;

const HOUR: Duration = Duration::from_secs(3600);

/// Whether this pass's blob store is the filesystem (segments kept) rather than S3 (composed).
fn keeps_segments() -> bool {
    matches!(Backend::current(), Backend::SqliteFs)
}

/// Asserts that upload `id` is stored as `n` segments (`<seq>-<nonce>`, in order) on the
/// filesystem, or as one composed object on S3; `stored` are the store's keys.
fn assert_committed_as(stored: &[String], id: &str, n: usize) {
    if keeps_segments() {
        let mut seqs: Vec<usize> = stored
            .iter()
            .map(|k| {
                let name = k.strip_prefix(&format!("uploads/{id}/")).unwrap_or_else(|| panic!("{k} outside {id}"));
                name.split('-').next().unwrap().parse().unwrap_or_else(|_| panic!("{k} is not a segment"))
            })
            .collect();
        seqs.sort();
        assert_eq!(seqs, (0..n).collect::<Vec<_>>(), "the {n} segments, never copied: {stored:?}");
    } else {
        assert_eq!(stored.len(), 1, "one object for the blob, its segments removed: {stored:?}");
        assert!(stored[0].starts_with(&format!("uploads/{id}/composed-")), "{stored:?}");
    }
}

fn upload_id(loc: &str) -> String {
    loc.split('?').next().unwrap().trim_end_matches('/').rsplit('/').next().unwrap().to_string()
}

/// POST, one PATCH per chunk, then a PUT carrying `last` (maybe empty); returns the digest and
/// the upload id.
async fn push_in_chunks(app: &TestApp, repo: &str, chunks: &[&[u8]], last: &[u8]) -> (String, String) {
    let whole = [chunks.concat(), last.to_vec()].concat();
    let d = digest(&whole);
    let mut loc = app.start_upload(repo).await;
    let id = upload_id(&loc);
    let mut offset = 0u64;
    for c in chunks {
        let r = app.patch_chunk(&loc, offset, c).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        loc = location(&r);
        offset += c.len() as u64;
    }
    let r = app.finish_upload(&loc, &d, last).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    (d, id)
}

async fn pull(app: &TestApp, repo: &str, d: &str) -> Vec<u8> {
    let r = app.get(&format!("/v2/{repo}/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK, "a filesystem store never redirects");
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d));
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn a_blob_pushed_in_three_patches_is_committed_by_the_backend_rule_and_gc_leaves_nothing() {
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |_| {}).await;
    let parts = [random_bytes(300_000), random_bytes(1), random_bytes(70_001)];
    let whole = parts.concat();
    let (d, id) = push_in_chunks(&app, "compose/a", &[&parts[0], &parts[1], &parts[2]], b"").await;

    assert_committed_as(&app.object_keys().await, &id, 3);
    let mut objects = app.objects().await;
    objects.sort_by_key(|(k, _)| k.rsplit('/').next().unwrap().split('-').next().unwrap().parse::<usize>().ok());
    assert!(objects.iter().flat_map(|(_, b)| b.clone()).collect::<Vec<u8>>() == whole, "the bytes in order");

    assert!(pull(&app, "compose/a", &d).await == whole, "served byte-identical");
    let r = app.http.get(app.url(&format!("/v2/compose/a/blobs/{d}"))).header("Range", "bytes=299990-300010").send();
    let r = r.await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &whole[299_990..=300_010]);
    let r = app.head(&format!("/v2/compose/a/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some(whole.len().to_string()));

    // Unlinked and collected after the grace: its objects go, nothing is left.
    let r = app.delete(&format!("/v2/compose/a/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    clock.advance(HOUR + Duration::from_secs(60));
    let report = app.state.registry.collect_garbage(&GcOptions { grace: HOUR, dry_run: false }, |_| {}).await.unwrap();
    assert_eq!(report.digests, vec![d.clone()]);
    assert_eq!(app.object_keys().await, Vec::<String>::new(), "GC left objects behind");
    assert_eq!(app.get(&format!("/v2/compose/a/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn patches_and_a_closing_chunk_count_as_segments_too() {
    let app = spawn_app().await;
    let parts = [random_bytes(10_000), random_bytes(20_000), random_bytes(5)];
    let (d, id) = push_in_chunks(&app, "compose/b", &[&parts[0], &parts[1]], &parts[2]).await;
    assert_committed_as(&app.object_keys().await, &id, 3);
    assert!(pull(&app, "compose/b", &d).await == parts.concat());
}

#[tokio::test]
async fn more_segments_than_the_filesystem_keeps_are_composed_on_every_backend() {
    let app = spawn_app().await;
    let n = cairn::blob::MAX_KEPT_SEGMENTS + 1;
    let parts: Vec<Vec<u8>> = (0..n).map(|_| random_bytes(100)).collect();
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let (d, id) = push_in_chunks(&app, "compose/many", &refs, b"").await;
    let stored = app.object_keys().await;
    assert_eq!(stored.len(), 1, "one object, the {n} segments removed: {stored:?}");
    assert!(stored[0].starts_with(&format!("uploads/{id}/composed-")), "{stored:?}");
    assert!(pull(&app, "compose/many", &d).await == parts.concat());
}

#[tokio::test]
async fn bytes_that_came_in_one_request_are_not_copied() {
    let app = spawn_app().await;
    // Monolithic (POST + PUT with the body).
    let mono = random_bytes(40_000);
    let d1 = app.push_blob("compose/c", &mono).await;
    // Chunked, all bytes in one PATCH, closed by an empty PUT.
    let one = random_bytes(50_000);
    let (d2, id2) = push_in_chunks(&app, "compose/c", &[&one], b"").await;
    let stored = app.object_keys().await;
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert!(stored.iter().all(|k| !k.contains("composed-")), "nothing was copied: {stored:?}");
    assert!(stored.iter().any(|k| k.starts_with(&format!("uploads/{id2}/0-"))), "{stored:?}");
    assert!(pull(&app, "compose/c", &d1).await == mono);
    assert!(pull(&app, "compose/c", &d2).await == one);
}

#[tokio::test]
async fn a_duplicate_chunked_push_leaves_only_the_first_object() {
    let app = spawn_app().await;
    let parts = [random_bytes(30_000), random_bytes(30_000)];
    let (d, id) = push_in_chunks(&app, "compose/d", &[&parts[0], &parts[1]], b"").await;
    let first = app.object_keys().await;
    assert_committed_as(&first, &id, 2);
    let (again, id2) = push_in_chunks(&app, "compose/e", &[&parts[0], &parts[1]], b"").await;
    assert_eq!(again, d);
    assert_ne!(id2, id);
    assert_eq!(app.object_keys().await, first, "the duplicate's segments (and copy) are removed");
    assert!(pull(&app, "compose/e", &d).await == parts.concat());
}
