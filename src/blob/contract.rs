//! The contract every `BlobStore` backend passes (STYLE §10, distribution's driver
//! testsuites): each case gets a fresh store from the factory. The filesystem runs it in
//! `cargo test --lib` (below); S3 in tests/s3 against a real S3-compatible server (moto).

use std::any::Any;
use std::future::Future;

use bytes::Bytes;
use futures::TryStreamExt;
use futures::stream;
use object_store::ObjectStoreExt;

use crate::blob::{BlobStore, PART_SIZE, WriteError};
use crate::meta::{BlobLocation, Segment};

/// A fresh store and whatever must live as long as it (a temp dir, a bucket).
pub type Fresh = (BlobStore, Box<dyn Any + Send>);

/// Runs every case, each on a fresh store.
pub async fn run_all<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Fresh>,
{
    let (s, _keep) = fresh().await;
    segments_read_whole_and_ranged_across_boundaries(&s).await;
    let (s, _keep) = fresh().await;
    an_empty_body_writes_nothing_and_a_failed_body_is_an_error(&s).await;
    let (s, _keep) = fresh().await;
    a_large_segment_is_exact_and_a_failed_one_leaves_no_file(&s).await;
    let (s, _keep) = fresh().await;
    a_missing_object_is_not_found(&s).await;
    let (s, _keep) = fresh().await;
    delete_upload_removes_its_segments_only(&s).await;
    let (s, _keep) = fresh().await;
    racing_writers_of_one_segment_keep_their_own_bytes(&s).await;
    let (s, _keep) = fresh().await;
    compose_makes_one_object_and_strays_go(&s).await;
    let (s, _keep) = fresh().await;
    s.check_write().await.expect("the readiness write check passes on a writable store");
    let ((s, _keep), (other, _keep_other)) = (fresh().await, fresh().await);
    copy_to_another_store_sends_what_is_missing(&s, &other).await;
}

/// `n` bytes of a pattern seeded by `seed`, so that segments differ.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8 ^ seed).collect()
}

async fn write(s: &BlobStore, upload: &str, seq: usize, bytes: &[u8]) -> Segment {
    // Several frames per segment, as a request body arrives.
    let frames: Vec<Result<Bytes, std::io::Error>> =
        bytes.chunks(300_000).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let mut seen = 0usize;
    let seg = s.write_segment(upload, seq, stream::iter(frames), |b| seen += b.len()).await.unwrap().unwrap();
    assert_eq!(seen, bytes.len(), "observe sees every byte");
    assert_eq!(seg.len, bytes.len() as u64);
    seg
}

async fn read(s: &BlobStore, location: &BlobLocation, range: std::ops::Range<u64>) -> Vec<u8> {
    let chunks: Vec<Bytes> = s.read(location, range).await.unwrap().try_collect().await.unwrap();
    chunks.concat()
}

/// Three segments (the first larger than one multipart part) read back whole, and in
/// ranges inside one segment, across each boundary, and across all three.
pub async fn segments_read_whole_and_ranged_across_boundaries(s: &BlobStore) {
    let parts = [pattern(PART_SIZE + 4321, 1), pattern(1000, 2), pattern(70_000, 3)];
    let mut segments = Vec::new();
    for (seq, p) in parts.iter().enumerate() {
        segments.push(write(s, "up-ranged", seq, p).await);
    }
    let location = BlobLocation { upload: "up-ranged".into(), segments };
    let whole = parts.concat();
    let n = whole.len() as u64;
    assert_eq!(read(s, &location, 0..n).await, whole, "whole blob");
    let b1 = parts[0].len() as u64;
    let b2 = b1 + parts[1].len() as u64;
    for r in [0..10, 5..b1, b1 - 7..b1 + 9, b1..b2, b2 - 1..b2 + 1, b1 - 100..n, 17..n - 3, n - 1..n, 3..3] {
        assert_eq!(read(s, &location, r.clone()).await, &whole[r.start as usize..r.end as usize], "range {r:?}");
    }
}

/// An empty body writes no object; a body that fails midway is `WriteError::Body`.
pub async fn an_empty_body_writes_nothing_and_a_failed_body_is_an_error(s: &BlobStore) {
    let empty: Vec<Result<Bytes, std::io::Error>> = vec![Ok(Bytes::new())];
    assert!(s.write_segment("up-empty", 0, stream::iter(empty), |_| {}).await.unwrap().is_none());
    let broken: Vec<Result<Bytes, std::io::Error>> =
        vec![Ok(Bytes::from(pattern(1000, 4))), Err(std::io::Error::other("client went away"))];
    match s.write_segment("up-broken", 0, stream::iter(broken), |_| {}).await {
        Err(WriteError::Body(m)) => assert!(m.contains("client went away"), "{m}"),
        other => panic!("expected a body error, got {:?}", other.map(|o| o.map(|seg| seg.name))),
    }
}

/// The names under an upload: files in its directory on the filesystem (object_store's and
/// direct writes' staged files included), objects on S3.
async fn names_under(s: &BlobStore, upload: &str) -> Vec<String> {
    match s.upload_dir(upload) {
        Some(dir) => match std::fs::read_dir(&dir) {
            Ok(entries) => {
                entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            }
            Err(_) => Vec::new(),
        },
        None => {
            let prefix = object_store::path::Path::from(format!("uploads/{upload}"));
            let metas: Vec<_> = s.store.list(Some(&prefix)).try_collect().await.unwrap();
            metas.into_iter().map(|m| m.location.to_string()).collect()
        }
    }
}

/// A segment of several megabytes (written with O_DIRECT on a local disk) is exactly its
/// bytes, its file exactly its length (the padded last block cut off), with nothing staged
/// left beside it; one whose body fails after megabytes leaves no file at all.
pub async fn a_large_segment_is_exact_and_a_failed_one_leaves_no_file(s: &BlobStore) {
    let bytes = pattern(2 * PART_SIZE + 777, 5);
    let seg = write(s, "up-large", 0, &bytes).await;
    let location = BlobLocation { upload: "up-large".into(), segments: vec![seg.clone()] };
    assert_eq!(read(s, &location, 0..bytes.len() as u64).await, bytes);
    assert_eq!(names_under(s, "up-large").await.len(), 1, "only the segment: {:?}", names_under(s, "up-large").await);
    if let Some(dir) = s.upload_dir("up-large") {
        assert_eq!(std::fs::metadata(dir.join(&seg.name)).unwrap().len(), bytes.len() as u64, "no padding left");
    }
    let mut frames: Vec<Result<Bytes, std::io::Error>> =
        bytes.chunks(1 << 20).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    frames.push(Err(std::io::Error::other("client went away")));
    match s.write_segment("up-broken-large", 0, stream::iter(frames), |_| {}).await {
        Err(WriteError::Body(m)) => assert!(m.contains("client went away"), "{m}"),
        other => panic!("expected a body error, got {:?}", other.map(|o| o.map(|seg| seg.name))),
    }
    let left = names_under(s, "up-broken-large").await;
    assert!(left.is_empty(), "a failed write leaves nothing: {left:?}");
}

/// Reading a segment that is not there fails at once with `NotFound` (before any byte, so
/// the caller can still answer with a status).
pub async fn a_missing_object_is_not_found(s: &BlobStore) {
    let location = BlobLocation { upload: "up-none".into(), segments: vec![Segment { name: "0-aaaa".into(), len: 5 }] };
    match s.read(&location, 0..5).await {
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("expected NotFound, got a stream"),
    }
}

/// Deleting an upload removes all its segments, leaves other uploads alone, and deleting it
/// again (or one that never existed) is not an error.
pub async fn delete_upload_removes_its_segments_only(s: &BlobStore) {
    let (a0, a1) = (write(s, "up-a", 0, b"first segment").await, write(s, "up-a", 1, b"second").await);
    // An upload whose id starts with the other's: a prefix of keys, not of a path.
    let b0 = write(s, "up-ab", 0, b"other upload").await;
    s.delete_upload("up-a").await.unwrap();
    for seg in [a0, a1] {
        let gone = BlobLocation { upload: "up-a".into(), segments: vec![seg] };
        assert!(matches!(s.read(&gone, 0..1).await, Err(object_store::Error::NotFound { .. })), "segment left behind");
    }
    let kept = BlobLocation { upload: "up-ab".into(), segments: vec![b0] };
    assert_eq!(read(s, &kept, 0..12).await, b"other upload");
    s.delete_upload("up-a").await.unwrap();
    s.delete_upload("up-never").await.unwrap();
}

/// Two writers of the same segment number of one upload at once (a client retrying a PATCH
/// while the first is still streaming) each get an object of their own with their own bytes.
pub async fn racing_writers_of_one_segment_keep_their_own_bytes(s: &BlobStore) {
    let (x, y) = (pattern(600_000, 5), pattern(600_000, 6));
    let (sx, sy) = tokio::join!(write(s, "up-race", 0, &x), write(s, "up-race", 0, &y));
    assert_ne!(sx.name, sy.name, "two writers share an object");
    let lx = BlobLocation { upload: "up-race".into(), segments: vec![sx] };
    let ly = BlobLocation { upload: "up-race".into(), segments: vec![sy] };
    assert_eq!(read(s, &lx, 0..x.len() as u64).await, x);
    assert_eq!(read(s, &ly, 0..y.len() as u64).await, y);
    s.remove_strays(&lx).await;
    assert_eq!(read(s, &lx, 0..x.len() as u64).await, x, "remove_strays keeps the committed segments");
}

/// Composing: a location of one segment (or none) comes back as it is, nothing copied; three
/// segments (the first larger than a part) become one `composed-` object of the same upload
/// that reads back whole and in ranges; `remove_strays` then removes the three and keeps it;
/// a segment missing midway fails the compose.
pub async fn compose_makes_one_object_and_strays_go(s: &BlobStore) {
    let single = BlobLocation { upload: "up-one".into(), segments: vec![write(s, "up-one", 0, b"only").await] };
    assert_eq!(s.compose(&single).await.unwrap(), single, "one segment is already one object");
    let empty = BlobLocation { upload: "up-empty".into(), segments: vec![] };
    assert_eq!(s.compose(&empty).await.unwrap(), empty, "an empty blob is no object");
    let parts = [pattern(PART_SIZE + 777, 7), pattern(1000, 8), pattern(70_000, 9)];
    let mut segments = Vec::new();
    for (seq, p) in parts.iter().enumerate() {
        segments.push(write(s, "up-three", seq, p).await);
    }
    let location = BlobLocation { upload: "up-three".into(), segments };
    let whole = parts.concat();
    let n = whole.len() as u64;
    let composed = s.compose(&location).await.unwrap();
    assert_eq!(composed.upload, "up-three");
    let [one] = composed.segments.as_slice() else { panic!("not one object: {composed:?}") };
    assert!(one.name.starts_with("composed-") && one.len == n, "{one:?}");
    assert_eq!(read(s, &composed, 0..n).await, whole, "the composed object holds the segments in order");
    let b1 = parts[0].len() as u64;
    for r in [0..10, b1 - 7..b1 + 9, n - 1..n] {
        assert_eq!(read(s, &composed, r.clone()).await, &whole[r.start as usize..r.end as usize], "range {r:?}");
    }
    assert_eq!(read(s, &location, 0..n).await, whole, "the segments stay until removed");
    s.remove_strays(&composed).await;
    for seg in &location.segments {
        let gone = BlobLocation { upload: "up-three".into(), segments: vec![seg.clone()] };
        assert!(matches!(s.read(&gone, 0..1).await, Err(object_store::Error::NotFound { .. })), "{seg:?} left");
    }
    assert_eq!(read(s, &composed, 0..n).await, whole, "remove_strays keeps the composed object");
    let broken = BlobLocation { upload: "up-three".into(), segments: vec![one.clone(), location.segments[1].clone()] };
    assert!(s.compose(&broken).await.is_err(), "a missing segment fails the compose");
    s.delete_upload("up-three").await.unwrap();
    assert!(matches!(s.read(&composed, 0..1).await, Err(object_store::Error::NotFound { .. })));
}

/// `copy_to` another store (`cairn migrate --copy-to`): the same keys and bytes there, every
/// byte reported; run again, objects of the right size are kept and a missing or short one is
/// sent again; a segment missing at the source is `NotFound`.
pub async fn copy_to_another_store_sends_what_is_missing(s: &BlobStore, other: &BlobStore) {
    let parts = [pattern(PART_SIZE + 100, 7), pattern(5000, 8)];
    let mut segments = Vec::new();
    for (seq, p) in parts.iter().enumerate() {
        segments.push(write(s, "up-copy", seq, p).await);
    }
    let location = BlobLocation { upload: "up-copy".into(), segments };
    let whole = parts.concat();
    let n = whole.len() as u64;
    let mut seen = 0u64;
    let done = s.copy_to(other, &location, &mut |b| seen += b).await.unwrap();
    assert_eq!((done.objects, done.bytes, done.kept_objects), (2, n, 0));
    assert_eq!(seen, n, "progress saw every byte");
    assert_eq!(read(other, &location, 0..n).await, whole, "the same bytes under the same keys");

    let again = s.copy_to(other, &location, &mut |_| {}).await.unwrap();
    assert_eq!((again.objects, again.kept_objects, again.kept_bytes), (0, 2, n), "nothing sent twice");

    // A short object at the target (a write cut off) is sent again; the other is kept.
    let first = crate::blob::segment_key("up-copy", &location.segments[0].name);
    other.store.put(&first, Bytes::from_static(b"cut off").into()).await.unwrap();
    let fixed = s.copy_to(other, &location, &mut |_| {}).await.unwrap();
    assert_eq!((fixed.objects, fixed.bytes, fixed.kept_objects), (1, parts[0].len() as u64, 1));
    assert_eq!(read(other, &location, 0..n).await, whole);

    let missing = BlobLocation { upload: "up-gone".into(), segments: vec![Segment { name: "0-bbbb".into(), len: 3 }] };
    match s.copy_to(other, &missing, &mut |_| {}).await {
        Err(object_store::Error::NotFound { .. }) => {}
        other => panic!("expected NotFound, got {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn filesystem_passes_the_contract() {
        run_all(|| async {
            let dir = tempfile::tempdir().unwrap();
            let s = BlobStore::filesystem(dir.path().canonicalize().unwrap()).unwrap();
            (s, Box::new(dir) as Box<dyn Any + Send>)
        })
        .await;
    }

    #[tokio::test]
    async fn filesystem_without_direct_writes_passes_the_contract() {
        run_all(|| async {
            let dir = tempfile::tempdir().unwrap();
            let s = BlobStore::filesystem(dir.path().canonicalize().unwrap()).unwrap().without_direct();
            (s, Box::new(dir) as Box<dyn Any + Send>)
        })
        .await;
    }

    #[tokio::test]
    async fn memory_passes_the_contract() {
        run_all(|| async {
            (
                BlobStore::new(std::sync::Arc::new(object_store::memory::InMemory::new())),
                Box::new(()) as Box<dyn Any + Send>,
            )
        })
        .await;
    }
}
