//! The `BlobStore` contract on S3, each case in a bucket of its own.

use std::any::Any;

use crate::bucket::TempBucket;
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[
    S3Test { name: "contract_suite", run: contract_suite },
    S3Test { name: "check_write_leaves_nothing", run: check_write_leaves_nothing },
    S3Test { name: "compose_leaves_exactly_one_object", run: compose_leaves_exactly_one_object },
    S3Test { name: "a_segment_under_one_part_is_one_put", run: a_segment_under_one_part_is_one_put },
];

fn contract_suite(endpoint: &str) {
    block_on(cairn::blob::contract::run_all(|| async {
        let bucket = TempBucket::create(endpoint).await;
        (bucket.store(), Box::new(bucket) as Box<dyn Any + Send>)
    }));
}

/// The readiness check writes and deletes its object; `remove_strays` removes the racing
/// writer's object that was not committed (listing the upload's prefix on S3); a deleted
/// upload leaves no key.
fn check_write_leaves_nothing(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let s = bucket.store();
        s.check_write().await.unwrap();
        assert_eq!(bucket.keys().await, Vec::<String>::new());
        cairn::blob::contract::racing_writers_of_one_segment_keep_their_own_bytes(&s).await;
        let keys = bucket.keys().await;
        assert_eq!(keys.len(), 1, "two racing writers, the stray one removed after the commit: {keys:?}");
        s.delete_upload("up-race").await.unwrap();
        assert_eq!(bucket.keys().await, Vec::<String>::new());
    });
}

/// Three segments composed: after `remove_strays` the upload holds exactly the composed
/// object; a compose that fails midway (a segment missing) leaves no object behind.
fn compose_leaves_exactly_one_object(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let s = bucket.store();
        let parts: [&[u8]; 3] = [b"first ", b"second ", b"third"];
        let mut segments = Vec::new();
        for (seq, p) in parts.iter().enumerate() {
            let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(p))]);
            segments.push(s.write_segment("up-c", seq, body, |_| {}).await.unwrap().unwrap());
        }
        let location = cairn::meta::BlobLocation { upload: "up-c".into(), segments };
        assert_eq!(bucket.keys().await.len(), 3);
        let composed = s.compose(&location).await.unwrap();
        s.remove_strays(&composed).await;
        let keys = bucket.keys().await;
        assert_eq!(keys, vec![format!("uploads/up-c/{}", composed.segments[0].name)], "exactly one object");
        let missing = cairn::meta::BlobLocation {
            upload: "up-c".into(),
            segments: vec![composed.segments[0].clone(), location.segments[1].clone()],
        };
        assert!(s.compose(&missing).await.is_err());
        assert_eq!(bucket.keys().await, keys, "a failed compose leaves nothing");
        s.delete_upload("up-c").await.unwrap();
        assert_eq!(bucket.keys().await, Vec::<String>::new());
    });
}

/// A segment smaller than one part (8 MiB) is written with one PUT, not a multipart upload
/// (three requests); a larger one is still a multipart upload. Both read back whole. The
/// ETag tells them apart: a completed multipart upload's ends in `-<parts>`.
fn a_segment_under_one_part_is_one_put(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let s = bucket.store();
        let small: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let large: Vec<u8> = (0..(8 << 20) + 4321u32).map(|i| (i % 241) as u8).collect();
        let mut written = Vec::new();
        for (seq, data) in [&small, &large].into_iter().enumerate() {
            // Several frames, as a request body arrives.
            let frames: Vec<Result<bytes::Bytes, std::io::Error>> =
                data.chunks(16 << 10).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
            let seg = s.write_segment("up-p", seq, futures::stream::iter(frames), |_| {}).await.unwrap().unwrap();
            assert_eq!(seg.len, data.len() as u64);
            written.push(seg);
        }
        let objects = bucket.objects().await;
        let etag = |name: &str| {
            let key = format!("uploads/up-p/{name}");
            objects.iter().find(|(k, _)| *k == key).and_then(|(_, e)| e.clone()).unwrap_or_else(|| panic!("{key}"))
        };
        let (small_tag, large_tag) = (etag(&written[0].name), etag(&written[1].name));
        assert!(!small_tag.contains('-'), "the small segment was a multipart upload: ETag {small_tag}");
        assert!(large_tag.trim_matches('"').ends_with("-2"), "the large segment: ETag {large_tag}");
        for (seg, data) in written.iter().zip([&small, &large]) {
            let location = cairn::meta::BlobLocation { upload: "up-p".into(), segments: vec![seg.clone()] };
            let body = s.read(&location, 0..data.len() as u64).await.unwrap();
            let pieces: Vec<bytes::Bytes> = futures::TryStreamExt::try_collect(body).await.unwrap();
            let got = pieces.concat();
            assert!(got == *data, "segment {} read back differently", seg.name);
        }
        s.delete_upload("up-p").await.unwrap();
    });
}
