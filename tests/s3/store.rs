//! The `BlobStore` contract on S3, each case in a bucket of its own.

use std::any::Any;

use crate::bucket::TempBucket;
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[
    S3Test { name: "contract_suite", run: contract_suite },
    S3Test { name: "check_write_leaves_nothing", run: check_write_leaves_nothing },
    S3Test { name: "compose_leaves_exactly_one_object", run: compose_leaves_exactly_one_object },
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
