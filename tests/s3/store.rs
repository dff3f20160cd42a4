//! The `BlobStore` contract on S3, each case in a bucket of its own.

use std::any::Any;

use crate::bucket::TempBucket;
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[
    S3Test { name: "contract_suite", run: contract_suite },
    S3Test { name: "check_write_leaves_nothing", run: check_write_leaves_nothing },
];

fn contract_suite(endpoint: &str) {
    block_on(cairn::blob::contract::run_all(|| async {
        let bucket = TempBucket::create(endpoint).await;
        (bucket.store(), Box::new(bucket) as Box<dyn Any + Send>)
    }));
}

/// The readiness check writes and deletes its object; a deleted upload leaves no key.
fn check_write_leaves_nothing(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let s = bucket.store();
        s.check_write().await.unwrap();
        assert_eq!(bucket.keys().await, Vec::<String>::new());
        cairn::blob::contract::racing_writers_of_one_segment_keep_their_own_bytes(&s).await;
        assert_eq!(bucket.keys().await.len(), 2, "two racing writers, two objects: {:?}", bucket.keys().await);
        s.delete_upload("up-race").await.unwrap();
        assert_eq!(bucket.keys().await, Vec::<String>::new());
    });
}
