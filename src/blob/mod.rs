//! The blob seam: `BlobStore` over `object_store` (local filesystem, S3, in-memory) and
//! the only code that knows object keys. Upload segments are written once and never
//! moved: a committed blob is the ordered list of its upload's segments (`BlobLocation`),
//! so commit is a metadata transaction, not a copy or rename.
//!
//! Key layout, the same on every backend (relative to the blob directory, or the bucket's
//! root on S3):
//! - `uploads/<upload-id>/<seq>-<nonce>`: segment `seq` of an upload; the nonce keeps two
//!   racing writers of the same segment from sharing an object. A committed blob keeps its
//!   upload's segments; deleting a blob (GC) or an upload deletes everything under
//!   `uploads/<upload-id>/`, which the database has already decided is dead.
//! - `write-check-<nonce>`: the short-lived object of a readiness check.
//!
//! Nothing else is ever written, and nothing lists the store to decide what is live.
//!
//! Reads: each segment is one ranged read (a ranged GET on S3; an opened file with a seek
//! on the filesystem). Writes stream through `WriteMultipart` (a multipart upload on S3).
//!
//! Durability: a segment write returns only once its bytes are on stable storage. The
//! filesystem backend is a `LocalFileSystem` with fsync on ([`BlobStore::filesystem`]):
//! the written file is fsynced before it is renamed into place, then its directory (and
//! any directory created for it) is fsynced; nothing is synced per part, only at the end.
//! May import `meta` row types and `oci`; must not import `api` or `service`.

use std::io::SeekFrom;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::meta::{BlobLocation, Segment};

/// The contract suite every backend passes (public, hidden, for the S3 test target).
#[doc(hidden)]
pub mod contract;

/// Where an S3-compatible bucket is and how to sign for it (`BlobStore::s3`).
#[derive(Clone, Default)]
pub struct S3Settings {
    /// The bucket, which must exist.
    pub bucket: String,
    /// The region; `None` takes `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// An S3-compatible server's URL; `None` for AWS.
    pub endpoint: Option<String>,
    /// Path-style requests (`<endpoint>/<bucket>/<key>`) rather than virtual-hosted.
    pub path_style: bool,
    /// An access key id and secret; `None` takes the usual `AWS_*` environment variables.
    pub keys: Option<(String, String)>,
}

/// Bytes per part handed to the object store while writing a segment.
const PART_SIZE: usize = 8 << 20;
/// Parts in flight per segment write; bounds memory per upload to about `PART_SIZE * (1 + this)`.
const PARTS_IN_FLIGHT: usize = 2;
/// Read buffer for streaming blobs out of local files.
const READ_BUF: usize = 256 << 10;

/// Why a segment write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client's body stream failed (disconnect, bad framing).
    #[error("request body interrupted: {0}")]
    Body(String),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] object_store::Error),
}

/// Object storage for blob bytes. Cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// For the filesystem backend, its root directory: object_store writes each object
    /// to a temporary `<key>#<n>` file first and never lists those, so a write cut off by
    /// a crash can only be cleaned up through the directory itself.
    local_root: Option<std::path::PathBuf>,
}

fn segment_key(upload: &str, name: &str) -> Path {
    Path::from(format!("uploads/{upload}/{name}"))
}

impl BlobStore {
    /// Wraps an object store.
    pub fn new(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore { store, local_root: None }
    }

    /// Wraps a `LocalFileSystem` store rooted at `root`.
    pub fn local(store: Arc<dyn ObjectStore>, root: std::path::PathBuf) -> BlobStore {
        BlobStore { store, local_root: Some(root) }
    }

    /// The filesystem backend over the existing directory `root` (canonical): files and
    /// their directories are fsynced before a write returns, and directories left empty
    /// by a delete are removed.
    pub fn filesystem(root: std::path::PathBuf) -> Result<BlobStore, object_store::Error> {
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true).with_fsync(true);
        Ok(BlobStore::local(Arc::new(store), root))
    }

    /// The S3 backend: the bucket named in `s3`, configured from the usual `AWS_*`
    /// environment variables first and then from `s3` (which wins). Blob reads are ranged
    /// GETs; segment writes are multipart uploads; nothing here lists or walks directories.
    pub fn s3(s3: &S3Settings) -> Result<BlobStore, object_store::Error> {
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&s3.bucket)
            .with_virtual_hosted_style_request(!s3.path_style);
        if let Some(region) = &s3.region {
            b = b.with_region(region);
        }
        if let Some(endpoint) = &s3.endpoint {
            b = b.with_endpoint(endpoint).with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some((id, secret)) = &s3.keys {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        Ok(BlobStore::new(Arc::new(b.build()?)))
    }

    fn upload_dir(&self, upload: &str) -> Option<std::path::PathBuf> {
        self.local_root.as_ref().map(|r| r.join("uploads").join(upload))
    }

    /// Checks that the store can store (for `/readyz`): writes a small object durably and
    /// deletes it. Fails on a full disk, a read-only or unreachable store.
    pub async fn check_write(&self) -> Result<(), object_store::Error> {
        let key = Path::from(format!("write-check-{}", uuid::Uuid::new_v4().simple()));
        self.store.put(&key, Bytes::from_static(b"cairn write check\n").into()).await?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Streams `body` into a new segment number `seq` of `upload`, calling `observe` on
    /// every chunk before it is written (the caller hashes there). Nothing is left under
    /// the key if the body or the store fails. An empty body writes no object and returns
    /// `None`.
    pub async fn write_segment<S, E>(
        &self,
        upload: &str,
        seq: usize,
        body: S,
        mut observe: impl FnMut(&[u8]),
    ) -> Result<Option<Segment>, WriteError>
    where
        S: futures::Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut body = body;
        let name = format!("{seq}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let key = segment_key(upload, &name);
        let mut out: Option<WriteMultipart> = None;
        let mut n = 0u64;
        while let Some(frame) = body.next().await {
            let bytes = match frame {
                Ok(b) => b,
                Err(e) => {
                    if let Some(w) = out {
                        w.abort().await.ok();
                    }
                    return Err(WriteError::Body(e.to_string()));
                }
            };
            if bytes.is_empty() {
                continue;
            }
            observe(&bytes);
            n += bytes.len() as u64;
            let w = match &mut out {
                Some(w) => w,
                None => {
                    out.insert(WriteMultipart::new_with_chunk_size(self.store.put_multipart(&key).await?, PART_SIZE))
                }
            };
            if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                if let Some(w) = out {
                    w.abort().await.ok();
                }
                return Err(e.into());
            }
            w.put(bytes);
        }
        match out {
            Some(w) => {
                w.finish().await?;
                Ok(Some(Segment { name, len: n }))
            }
            None => Ok(None),
        }
    }

    /// Streams `range` (or all) of a blob stored at `location`. The first object is opened
    /// before this returns, so a missing object is an error the caller can still answer
    /// with a status, not a response cut off after its headers.
    pub async fn read(
        &self,
        location: &BlobLocation,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
        let mut parts = Vec::new();
        let mut start = 0u64;
        for seg in &location.segments {
            let end = start + seg.len;
            let (a, b) = (range.start.max(start), range.end.min(end));
            if a < b {
                parts.push((segment_key(&location.upload, &seg.name), (a - start)..(b - start)));
            }
            start = end;
        }
        let mut parts = parts.into_iter();
        let Some((key, r)) = parts.next() else { return Ok(stream::empty().boxed()) };
        let first = read_object(self.store.clone(), key, r).await?;
        let store = self.store.clone();
        let rest = stream::iter(parts)
            .then(move |(key, r)| {
                let store = store.clone();
                async move { read_object(store, key, r).await }
            })
            .try_flatten();
        Ok(first.chain(rest).boxed())
    }

    /// Removes every segment of an upload (cancelled, expired, failed, or committed as a
    /// duplicate of a blob that was already stored).
    pub async fn delete_upload(&self, upload: &str) -> Result<(), object_store::Error> {
        if let Some(dir) = self.upload_dir(upload) {
            return match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) }),
            };
        }
        let prefix = Path::from(format!("uploads/{upload}"));
        let keys: Vec<Path> = self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
        for k in keys {
            match self.store.delete(&k).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl BlobStore {
    /// After a commit, removes whatever else lies under the upload besides `location`'s
    /// segments: writes cut off by a crash or lost in a race. Best effort; only the
    /// filesystem backend can see such leftovers (S3 expires incomplete uploads itself).
    pub async fn remove_strays(&self, location: &BlobLocation) {
        let Some(dir) = self.upload_dir(&location.upload) else {
            return;
        };
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name();
            let keep = location.segments.iter().any(|s| name.to_str() == Some(s.name.as_str()));
            if !keep && let Err(err) = tokio::fs::remove_file(e.path()).await {
                tracing::warn!(path = %e.path().display(), error = %err, "could not remove a stray upload file");
            }
        }
    }
}

/// One ranged read of one object. Local files are streamed with a large buffer rather
/// than object_store's 8 KiB blocking chunks.
async fn read_object(
    store: Arc<dyn ObjectStore>,
    key: Path,
    r: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
    let opts = GetOptions { range: Some(GetRange::Bounded(r.clone())), ..Default::default() };
    let got = store.get_opts(&key, opts).await?;
    match got.payload {
        GetResultPayload::File(file, _) => {
            let mut file = tokio::fs::File::from_std(file);
            let io = |e: std::io::Error| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) };
            file.seek(SeekFrom::Start(got.range.start)).await.map_err(io)?;
            let reader = file.take(got.range.end - got.range.start);
            Ok(tokio_util::io::ReaderStream::with_capacity(reader, READ_BUF).map_err(io).boxed())
        }
        GetResultPayload::Stream(s) => Ok(s),
    }
}
