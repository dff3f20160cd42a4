//! A bucket of its own per test on the S3 server, and a listing of it through object_store
//! (tests only: Cairn itself never lists the store to decide anything).

use std::sync::Arc;

use cairn::blob::{BlobStore, S3Settings};
use futures::TryStreamExt;
use object_store::ObjectStore;

#[path = "../common/backend.rs"]
pub mod backend;

/// A fresh, empty bucket on the server at `endpoint`.
pub struct TempBucket {
    pub settings: S3Settings,
}

impl TempBucket {
    /// Creates a bucket with a unique name (tests/common/backend.rs).
    pub async fn create(endpoint: &str) -> TempBucket {
        let settings = S3Settings {
            bucket: backend::create_bucket(endpoint).await,
            region: Some(backend::S3_REGION.into()),
            endpoint: Some(endpoint.to_string()),
            path_style: true,
            keys: Some((backend::S3_ACCESS_KEY_ID.into(), backend::S3_SECRET_ACCESS_KEY.into())),
        };
        TempBucket { settings }
    }

    /// A `BlobStore` on this bucket.
    pub fn store(&self) -> BlobStore {
        BlobStore::s3(&self.settings).unwrap()
    }

    /// Every key in the bucket, sorted.
    pub async fn keys(&self) -> Vec<String> {
        self.objects().await.into_iter().map(|(k, _)| k).collect()
    }

    /// Every key in the bucket with its ETag, sorted by key. A multipart upload's ETag ends in
    /// `-<parts>`; a single PUT's is the plain MD5.
    pub async fn objects(&self) -> Vec<(String, Option<String>)> {
        let s = &self.settings;
        let (id, secret) = s.keys.clone().unwrap();
        let store: Arc<dyn ObjectStore> = Arc::new(
            object_store::aws::AmazonS3Builder::new()
                .with_bucket_name(&s.bucket)
                .with_region(backend::S3_REGION)
                .with_endpoint(s.endpoint.clone().unwrap())
                .with_allow_http(true)
                .with_virtual_hosted_style_request(false)
                .with_access_key_id(id)
                .with_secret_access_key(secret)
                .build()
                .unwrap(),
        );
        let mut objects: Vec<(String, Option<String>)> =
            store.list(None).map_ok(|m| (m.location.to_string(), m.e_tag)).try_collect().await.unwrap();
        objects.sort();
        objects
    }
}
