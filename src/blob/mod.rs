//! The blob seam: `BlobStore` over `object_store` (local filesystem, S3, in-memory) and
//! the only code that knows object keys.
//!
//! Key layout, the same on every backend (relative to the blob directory, or the bucket's
//! root on S3). This is the one place it is written down:
//! - `uploads/<upload-id>/<seq>-<nonce>`: segment `seq` of an upload (one per PATCH, plus the
//!   closing PUT's body); the nonce keeps two racing writers of the same segment from
//!   sharing an object.
//! - `uploads/<upload-id>/composed-<nonce>`: the whole blob of an upload that had two or more
//!   segments, written once at commit ([`BlobStore::compose`]).
//! - `write-check-<nonce>`: the short-lived object of a readiness check.
//!
//! On S3 every committed blob is exactly one object (`BlobLocation` with one segment): the
//! upload's only segment when it had one (a monolithic push, or a chunked push whose bytes
//! came in one request: never copied), else its `composed-` object. Composing happens when
//! the digest is already verified and before the commit transaction, which records the
//! one-object location; so no reader ever sees a blob stored as several objects, and the old
//! segments are removed right after the commit ([`BlobStore::remove_strays`]). The copy
//! streams through Cairn with bounded memory (the same multipart writer as an upload) and is
//! not hashed again. On the filesystem a chunked upload of up to [`MAX_KEPT_SEGMENTS`]
//! segments is committed as those segments, never copied (DESIGN §2 says one object per
//! blob; on a local disk the copy doubled what a chunked push writes, and redirects do not
//! apply; scrub, backup and copies read a blob's segments in order); more are composed. Only
//! an empty blob is no object at all; reads serve several segments in order (never
//! redirected).
//!
//! Everything of an upload lives under `uploads/<upload-id>/`: cancelling or expiring it,
//! committing it as a duplicate, or GC deleting its blob removes that whole prefix, which the
//! database has already decided is dead; a composed object left by a crash or a lost race
//! goes the same way. Nothing else is ever written, and nothing lists the store to decide what
//! is live (listing one upload's own prefix to delete it is not deciding).
//!
//! Reads: each object is one ranged read (a ranged GET on S3; an opened file with a seek
//! on the filesystem). Writes stream through `WriteMultipart` (a multipart upload on S3,
//! except a segment smaller than one part, which is one PUT). An
//! S3 store with redirect on ([`BlobStore::with_redirect`]) also hands out presigned GET URLs
//! of a blob's object ([`BlobStore::redirect_url`]), so pulls bypass Cairn.
//!
//! Durability: an object write returns only once its bytes are on stable storage. The
//! filesystem backend is a `LocalFileSystem` with fsync on ([`BlobStore::filesystem`]):
//! the written file is fsynced before it is renamed into place, then its directory (and
//! any directory created for it) is fsynced; nothing is synced per part, only at the end.
//! Segments are written with O_DIRECT under the same contract (`direct.rs`), which spares
//! the page cache's growth (slow on the VMs measured) and holds two 4 MiB buffers per write.
//! May import `meta` row types and `oci`; must not import `api` or `service`.

use std::io::{Seek, SeekFrom};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{GetOptions, GetRange, GetResultPayload, ObjectStore, ObjectStoreExt, WriteMultipart};

use crate::meta::{BlobLocation, Segment};

/// The contract suite every backend passes (public, hidden, for the S3 test target).
#[doc(hidden)]
pub mod contract;
mod direct;
mod instrumented;
mod maintenance;

pub use maintenance::{LinkError, Linked, StoredObject};

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
/// Segments a filesystem blob may be committed as without composing them
/// ([`BlobStore::commit_location`]): a client sending many small chunks still gets one file.
pub const MAX_KEPT_SEGMENTS: usize = 64;
/// Bytes per read when streaming a blob out of a local file ([`file_chunks`]); two such
/// pieces per pull are in memory at most.
const READ_CHUNK: usize = 1 << 20;

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
    /// For the S3 backend, what presigns URLs of its objects.
    signer: Option<Arc<dyn Signer>>,
    /// With redirect on ([`BlobStore::with_redirect`]): how long a presigned URL is valid.
    redirect: Option<Duration>,
    /// Segments are written to `local_root` with O_DIRECT (`direct.rs`) rather than
    /// through `store`: only for the store [`BlobStore::filesystem`] builds itself, and
    /// until the filesystem first refuses O_DIRECT (then this turns false for good).
    direct: Arc<std::sync::atomic::AtomicBool>,
}

fn instrument(store: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
    Arc::new(instrumented::Instrumented::new(store))
}

fn segment_key(upload: &str, name: &str) -> Path {
    Path::from(format!("uploads/{upload}/{name}"))
}

/// A short random suffix that keeps concurrent writers of one key apart.
fn nonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

impl BlobStore {
    /// Wraps an object store (timed into the storage metrics: `instrumented.rs`).
    pub fn new(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore { store: instrument(store), local_root: None, signer: None, redirect: None, direct: Arc::default() }
    }

    /// Wraps a `LocalFileSystem` store rooted at `root`.
    pub fn local(store: Arc<dyn ObjectStore>, root: std::path::PathBuf) -> BlobStore {
        BlobStore {
            store: instrument(store),
            local_root: Some(root),
            signer: None,
            redirect: None,
            direct: Arc::default(),
        }
    }

    /// The filesystem backend over the existing directory `root` (canonical): files and
    /// their directories are fsynced before a write returns, and directories left empty
    /// by a delete are removed.
    pub fn filesystem(root: std::path::PathBuf) -> Result<BlobStore, object_store::Error> {
        let store = LocalFileSystem::new_with_prefix(&root)?.with_automatic_cleanup(true).with_fsync(true);
        // `uploads/`, durably, once: then a segment write makes at most its upload's directory
        // (`direct.rs`). A directory Cairn cannot write is not a start error (readiness says
        // so, and writes fail with their own errors).
        if let Err(e) = direct::ensure_dir(&root.join("uploads")) {
            tracing::warn!(dir = %root.display(), error = %e, "could not make the blob directory's uploads/");
        }
        Ok(BlobStore { direct: Arc::new(true.into()), ..BlobStore::local(Arc::new(store), root) })
    }

    /// The filesystem backend writing every segment through object_store, as where the
    /// filesystem refuses O_DIRECT (for the contract suite).
    #[cfg(test)]
    fn without_direct(self) -> BlobStore {
        BlobStore { direct: Arc::default(), ..self }
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
        // CompleteMultipartUpload of a large object can take longer than the client's default
        // 30 s (S3 documents minutes; moto assembling 1 GiB under load took 30 s here). A
        // timed-out complete is retried against an upload the server may be finishing, and
        // the push fails; give requests 5 minutes unless `AWS_TIMEOUT` says otherwise.
        if std::env::var_os("AWS_TIMEOUT").is_none() {
            use object_store::ClientConfigKey;
            use object_store::aws::AmazonS3ConfigKey;
            b = b.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "300s");
        }
        let s3 = Arc::new(b.build()?);
        let store: Arc<dyn ObjectStore> = s3.clone();
        Ok(BlobStore {
            store: instrument(store),
            local_root: None,
            signer: Some(s3),
            redirect: None,
            direct: Arc::default(),
        })
    }

    /// Turns redirect on: [`BlobStore::redirect_url`] presigns GET URLs valid for `expiry`.
    /// Only the S3 backend can presign; on another backend this changes nothing (the
    /// configuration refuses `redirect` there).
    pub fn with_redirect(mut self, expiry: Duration) -> BlobStore {
        self.redirect = self.signer.is_some().then_some(expiry);
        self
    }

    /// With redirect on, a presigned GET URL of the blob at `location`, valid for the
    /// configured expiry, when the blob is exactly one object; `None` otherwise (redirect
    /// off, an empty blob, or one an older Cairn stored as several segments): then the caller
    /// serves the bytes itself. Signing sends no request to the store (only credentials that
    /// expire, such as an instance profile's, may be refreshed).
    pub async fn redirect_url(&self, location: &BlobLocation) -> Result<Option<String>, object_store::Error> {
        let (Some(signer), Some(expiry)) = (&self.signer, self.redirect) else { return Ok(None) };
        let [seg] = location.segments.as_slice() else { return Ok(None) };
        let url = signer.signed_url(Method::GET, &segment_key(&location.upload, &seg.name), expiry).await?;
        Ok(Some(url.to_string()))
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
        let name = format!("{seq}-{}", nonce());
        let key = segment_key(upload, &name);
        let mut out: Option<WriteMultipart> = None;
        // On S3 the first part's worth is held back: a segment that ends within it is one
        // PUT instead of create + part + complete (three requests; a small blob's whole
        // cost against a slow store). The filesystem starts its (fsynced) file at once,
        // written with O_DIRECT (`direct.rs`), or through object_store where the filesystem
        // refuses that.
        let mut held: Vec<Bytes> = Vec::new();
        let mut held_len = 0usize;
        let hold = self.local_root.is_none();
        let direct_on = self.direct.load(std::sync::atomic::Ordering::Relaxed);
        let mut direct_dest = self.upload_dir(upload).filter(|_| direct_on).map(|d| d.join(&name));
        let mut direct: Option<direct::DirectFile> = None;
        let mut n = 0u64;
        while let Some(frame) = body.next().await {
            let bytes = match frame {
                Ok(b) => b,
                Err(e) => {
                    if let Some(w) = out {
                        w.abort().await.ok();
                    }
                    if let Some(d) = direct {
                        d.abandon().await;
                    }
                    return Err(WriteError::Body(e.to_string()));
                }
            };
            if bytes.is_empty() {
                continue;
            }
            observe(&bytes);
            n += bytes.len() as u64;
            // On the filesystem, the first bytes open the direct file (or find O_DIRECT refused).
            if let Some(dest) = direct_dest.take() {
                let started = std::time::Instant::now();
                let created = direct::DirectFile::create(dest).await;
                record_direct(started, created.is_err());
                match created {
                    Ok(d) => direct = d,
                    Err(e) => return Err(local_error(e).into()),
                }
                if direct.is_none() && self.direct.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        "the blob directory's filesystem refuses O_DIRECT: blobs are written through the \
                         page cache from now on (slower on some VMs, just as durable)"
                    );
                }
            }
            if let Some(d) = &mut direct {
                if let Err(e) = feed(d, &bytes).await {
                    if let Some(d) = direct {
                        d.abandon().await;
                    }
                    return Err(local_error(e).into());
                }
                continue;
            }
            if out.is_none() && hold && held_len + bytes.len() < PART_SIZE {
                held_len += bytes.len();
                held.push(bytes);
                continue;
            }
            let w = match &mut out {
                Some(w) => w,
                None => {
                    let w = out
                        .insert(WriteMultipart::new_with_chunk_size(self.store.put_multipart(&key).await?, PART_SIZE));
                    for b in held.drain(..) {
                        w.put(b);
                    }
                    w
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
        if let Some(d) = direct {
            let started = std::time::Instant::now();
            let finished = d.finish(n).await;
            record_direct(started, finished.is_err());
            finished.map_err(local_error)?;
            return Ok(Some(Segment { name, len: n }));
        }
        match out {
            Some(w) => {
                w.finish().await?;
                Ok(Some(Segment { name, len: n }))
            }
            None if held.is_empty() => Ok(None),
            None => {
                self.store.put(&key, object_store::PutPayload::from_iter(held)).await?;
                Ok(Some(Segment { name, len: n }))
            }
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

    /// What a verified upload at `location` is committed as: on the filesystem, its segments
    /// as they are when there are at most [`MAX_KEPT_SEGMENTS`] (copying them into one file
    /// would write every byte to the disk a second time, and a local read opens a few files
    /// as cheaply as one); otherwise, and always on S3 (one object to presign and one GET per
    /// read), one object ([`BlobStore::compose`]). Errors as `compose`.
    pub async fn commit_location(&self, location: &BlobLocation) -> Result<BlobLocation, object_store::Error> {
        if self.local_root.is_some() && location.segments.len() <= MAX_KEPT_SEGMENTS {
            return Ok(location.clone());
        }
        self.compose(location).await
    }

    /// Makes the blob at `location` one object: with two or more segments, streams them in
    /// order into a new object `uploads/<upload>/composed-<nonce>` and returns its location
    /// (one segment); with one or none, returns `location` as it is and copies nothing. The
    /// bytes are not hashed again (the caller verified the digest while they streamed in);
    /// memory stays bounded as in [`BlobStore::write_segment`]. The segments stay until the
    /// caller removes them ([`BlobStore::remove_strays`] once the commit holds the new
    /// location). Nothing is left under the new key if the copy fails.
    pub async fn compose(&self, location: &BlobLocation) -> Result<BlobLocation, object_store::Error> {
        if location.segments.len() < 2 {
            return Ok(location.clone());
        }
        let size: u64 = location.segments.iter().map(|s| s.len).sum();
        let name = format!("composed-{}", nonce());
        let mut bytes = self.read(location, 0..size).await?;
        let mut out = WriteMultipart::new_with_chunk_size(
            self.store.put_multipart(&segment_key(&location.upload, &name)).await?,
            PART_SIZE,
        );
        let mut n = 0u64;
        let copied: Result<(), object_store::Error> = async {
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk?;
                n += chunk.len() as u64;
                out.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                out.put(chunk);
            }
            Ok(())
        }
        .await;
        let failed = match copied {
            Err(e) => Some(e),
            Ok(()) if n != size => Some(object_store::Error::Generic {
                store: "BlobStore",
                source: format!("the segments of upload {} held {n} bytes, not the {size} recorded", location.upload)
                    .into(),
            }),
            Ok(()) => None,
        };
        if let Some(e) = failed {
            out.abort().await.ok();
            return Err(e);
        }
        out.finish().await?;
        Ok(BlobLocation { upload: location.upload.clone(), segments: vec![Segment { name, len: size }] })
    }

    /// Removes these objects of `upload` (a composed object whose commit lost a race).
    /// Best effort: what stays under the upload goes when the upload's prefix is removed.
    pub async fn delete_segments(&self, upload: &str, segments: &[Segment]) {
        for seg in segments {
            match self.store.delete(&segment_key(upload, &seg.name)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => tracing::warn!(upload, segment = %seg.name, error = %e, "could not remove an upload object"),
            }
        }
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
    /// segments: the segments a composed object replaced, and writes cut off by a crash or
    /// lost in a race. Best effort (what stays goes with the blob). On the filesystem this
    /// also sees object_store's temporary files; on S3 it lists the upload's own prefix
    /// (incomplete multipart uploads are not objects: a bucket lifecycle rule expires them).
    pub async fn remove_strays(&self, location: &BlobLocation) {
        let keep = |name: &str| location.segments.iter().any(|s| s.name == name);
        let Some(dir) = self.upload_dir(&location.upload) else {
            let prefix = Path::from(format!("uploads/{}", location.upload));
            let listed: Result<Vec<Path>, _> =
                self.store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await;
            let keys = match listed {
                Ok(keys) => keys,
                Err(e) => {
                    tracing::warn!(upload = %location.upload, error = %e, "could not list an upload's objects");
                    return;
                }
            };
            for k in keys.into_iter().filter(|k| !k.filename().is_some_and(keep)) {
                match self.store.delete(&k).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => tracing::warn!(key = %k, error = %e, "could not remove a stray upload object"),
                }
            }
            return;
        };
        let Ok(mut entries) = tokio::fs::read_dir(&dir).await else {
            return;
        };
        while let Ok(Some(e)) = entries.next_entry().await {
            let name = e.file_name();
            if !name.to_str().is_some_and(keep)
                && let Err(err) = tokio::fs::remove_file(e.path()).await
            {
                tracing::warn!(path = %e.path().display(), error = %err, "could not remove a stray upload file");
            }
        }
    }
}

/// Copies `data` into `d`'s buffers, writing each one that fills.
async fn feed(d: &mut direct::DirectFile, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        let k = d.block.fill(data);
        data = &data[k..];
        if d.block.is_full() {
            d.submit().await?;
        }
    }
    Ok(())
}

/// Times a step of a direct write (its start, its finish with the fsyncs) into the storage
/// metrics as operation `put_direct`, as `instrumented.rs` times object_store's calls.
fn record_direct(started: std::time::Instant, failed: bool) {
    metrics::histogram!(crate::metrics::STORAGE_DURATION, "operation" => "put_direct")
        .record(started.elapsed().as_secs_f64());
    if failed {
        metrics::counter!(crate::metrics::STORAGE_ERRORS, "operation" => "put_direct").increment(1);
    }
}

/// An I/O error of the filesystem backend's own writes, as object_store reports its own (a
/// full disk stays recognisable in the chain of causes).
fn local_error(e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) }
}

/// One ranged read of one object. Local files are read by [`file_chunks`] rather than
/// object_store's 8 KiB blocking chunks.
async fn read_object(
    store: Arc<dyn ObjectStore>,
    key: Path,
    r: Range<u64>,
) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, object_store::Error> {
    let opts = GetOptions { range: Some(GetRange::Bounded(r.clone())), ..Default::default() };
    let got = store.get_opts(&key, opts).await?;
    match got.payload {
        GetResultPayload::File(mut file, _) => {
            let io = |e: std::io::Error| object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(e) };
            file.seek(SeekFrom::Start(got.range.start)).map_err(io)?;
            Ok(file_chunks(file, got.range.end - got.range.start).map_err(io).boxed())
        }
        GetResultPayload::Stream(s) => Ok(s),
    }
}

/// Streams the next `len` bytes of `file` (from its current position) in [`READ_CHUNK`]
/// pieces. Each piece is read on the blocking pool straight into the buffer that goes out
/// on the socket (no staging buffer and copy, as `tokio::fs::File` makes), the next piece
/// is read while the previous one is being sent, and a buffer the socket is done with is
/// read into again (fresh pages would cost a page fault and a zeroing each): about three
/// pieces per pull are in memory at most. A file shorter than `len` ends the stream with
/// `UnexpectedEof` (the response is cut short: the client sees a broken download, never a
/// wrong blob).
fn file_chunks(file: std::fs::File, len: u64) -> BoxStream<'static, std::io::Result<Bytes>> {
    type Pending = tokio::task::JoinHandle<std::io::Result<(std::fs::File, Bytes)>>;
    let spares = Arc::new(Spares::default());
    fn read_next(mut file: std::fs::File, left: u64, spares: Arc<Spares>) -> Pending {
        tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let n = left.min(READ_CHUNK as u64);
            let mut buf = spares.take().unwrap_or_else(|| Vec::with_capacity(n as usize));
            // `read_to_end` fills the spare capacity without zeroing it first.
            (&mut file).take(n).read_to_end(&mut buf)?;
            if (buf.len() as u64) < n {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the blob's file is shorter than its recorded size",
                ));
            }
            Ok((file, Bytes::from_owner(Pooled { buf, spares })))
        })
    }
    let first = (len > 0).then(|| read_next(file, len, spares.clone()));
    stream::unfold((first, len, spares), |(pending, left, spares)| async move {
        let read = match pending?.await {
            Ok(read) => read,
            Err(join) => Err(std::io::Error::other(join)),
        };
        match read {
            Ok((file, bytes)) => {
                let left = left - bytes.len() as u64;
                let next = (left > 0).then(|| read_next(file, left, spares.clone()));
                Some((Ok(bytes), (next, left, spares)))
            }
            Err(e) => Some((Err(e), (None, 0, spares))),
        }
    })
    .boxed()
}

/// Read buffers of one [`file_chunks`] stream that the socket is done with (at most two).
#[derive(Default)]
struct Spares(std::sync::Mutex<Vec<Vec<u8>>>);

impl Spares {
    fn take(&self) -> Option<Vec<u8>> {
        let mut buf = self.0.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        buf.clear();
        Some(buf)
    }
}

/// A piece of a blob being sent; its buffer goes back to the stream's [`Spares`] once sent.
struct Pooled {
    buf: Vec<u8>,
    spares: Arc<Spares>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut spares = self.spares.0.lock().unwrap_or_else(|e| e.into_inner());
        if spares.len() < 2 {
            spares.push(std::mem::take(&mut self.buf));
        }
    }
}

/// What [`BlobStore::copy_to`] did with one blob's objects.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Objects written to the target.
    pub objects: u64,
    /// Bytes written to the target.
    pub bytes: u64,
    /// Objects already at the target with the right size, left as they were.
    pub kept_objects: u64,
    /// Bytes in those.
    pub kept_bytes: u64,
}

impl BlobStore {
    /// Copies the objects that hold a blob stored at `location` into `target` under the same
    /// keys (`cairn migrate --copy-to`): each is streamed (never whole in memory, parts bounded
    /// as in a segment write) and its size is checked at the target once written. An object
    /// already at the target with the right size is kept, so a copy run again after an
    /// interruption sends only what is missing. `progress` gets the bytes as they are written.
    pub async fn copy_to(
        &self,
        target: &BlobStore,
        location: &BlobLocation,
        progress: &mut (dyn FnMut(u64) + Send),
    ) -> Result<Copied, object_store::Error> {
        let mut done = Copied::default();
        for seg in location.segments.iter().filter(|s| s.len > 0) {
            let key = segment_key(&location.upload, &seg.name);
            match target.store.head(&key).await {
                Ok(meta) if meta.size == seg.len => {
                    done.kept_objects += 1;
                    done.kept_bytes += seg.len;
                    progress(seg.len);
                    continue;
                }
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            let mut body = read_object(self.store.clone(), key.clone(), 0..seg.len).await?;
            let mut w = WriteMultipart::new_with_chunk_size(target.store.put_multipart(&key).await?, PART_SIZE);
            let mut n = 0u64;
            let streamed: Result<(), object_store::Error> = async {
                while let Some(bytes) = body.next().await {
                    let bytes = bytes?;
                    w.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                    n += bytes.len() as u64;
                    progress(bytes.len() as u64);
                    w.put(bytes);
                }
                Ok(())
            }
            .await;
            if let Err(e) = streamed {
                w.abort().await.ok();
                return Err(e);
            }
            w.finish().await?;
            let written = target.store.head(&key).await?.size;
            if n != seg.len || written != seg.len {
                let why =
                    format!("{key}: {} bytes expected, {n} read from the source, {written} at the target", seg.len);
                return Err(object_store::Error::Generic { store: "copy", source: why.into() });
            }
            done.objects += 1;
            done.bytes += seg.len;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(names: &[&str]) -> BlobLocation {
        let segments = names.iter().map(|n| Segment { name: n.to_string(), len: 3 }).collect();
        BlobLocation { upload: "up-1".into(), segments }
    }

    #[tokio::test]
    async fn only_an_s3_store_with_redirect_presigns_and_only_one_object() {
        let settings = S3Settings {
            bucket: "blobs".into(),
            region: Some("eu-west-1".into()),
            endpoint: Some("http://127.0.0.1:9".into()),
            path_style: true,
            keys: Some(("AKID".into(), "secret".into())),
        };
        let one = location(&["composed-abc"]);
        let s3 = BlobStore::s3(&settings).unwrap();
        assert_eq!(s3.redirect_url(&one).await.unwrap(), None, "redirect is off until asked for");
        let s3 = s3.with_redirect(Duration::from_secs(90));
        let url = s3.redirect_url(&one).await.unwrap().expect("a presigned URL");
        assert!(url.starts_with("http://127.0.0.1:9/blobs/uploads/up-1/composed-abc?"), "{url}");
        for part in ["X-Amz-Expires=90", "X-Amz-Signature=", "X-Amz-Credential=AKID%2F", "eu-west-1"] {
            assert!(url.contains(part), "{part} missing from {url}");
        }
        assert_eq!(s3.redirect_url(&location(&["0-a", "1-b"])).await.unwrap(), None, "several objects");
        assert_eq!(s3.redirect_url(&location(&[])).await.unwrap(), None, "the empty blob");
        let memory =
            BlobStore::new(Arc::new(object_store::memory::InMemory::new())).with_redirect(Duration::from_secs(90));
        assert_eq!(memory.redirect_url(&one).await.unwrap(), None, "only S3 presigns");
    }

    /// A file of `len` bytes whose byte `i` is `i % 251`, opened for reading.
    fn patterned(len: usize) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        std::fs::write(&path, (0..len).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        (dir, file)
    }

    #[tokio::test]
    async fn a_file_streams_in_pieces_from_where_it_was_opened() {
        let len = 2 * READ_CHUNK + READ_CHUNK / 2 + 7;
        let (_dir, mut file) = patterned(len + 3);
        file.seek(SeekFrom::Start(3)).unwrap();
        let pieces: Vec<Bytes> = file_chunks(file, len as u64).try_collect().await.unwrap();
        assert_eq!(pieces.iter().map(Bytes::len).collect::<Vec<_>>(), [READ_CHUNK, READ_CHUNK, READ_CHUNK / 2 + 7]);
        let all: Vec<u8> = pieces.concat();
        assert!(all.iter().enumerate().all(|(i, b)| *b == ((i + 3) % 251) as u8), "bytes in order from offset 3");
        let (_dir, file) = patterned(10);
        assert!(file_chunks(file, 0).next().await.is_none(), "nothing asked, nothing read");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_record_cuts_the_stream_with_an_error() {
        let (_dir, file) = patterned(READ_CHUNK + 100);
        let mut s = file_chunks(file, (2 * READ_CHUNK) as u64);
        assert_eq!(s.next().await.unwrap().unwrap().len(), READ_CHUNK);
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("shorter than its recorded size"), "{e}");
        assert!(s.next().await.is_none(), "nothing after the error");
    }

    #[test]
    fn a_sent_piece_gives_its_buffer_back_and_at_most_two_are_kept() {
        let spares = Arc::new(Spares::default());
        let pieces: Vec<Bytes> =
            (0..3).map(|i| Bytes::from_owner(Pooled { buf: vec![i; 4096], spares: spares.clone() })).collect();
        assert!(spares.take().is_none(), "all in flight");
        let clone = pieces[0].clone();
        drop(pieces);
        assert_eq!(spares.0.lock().unwrap().len(), 2, "two kept");
        drop(clone);
        assert_eq!(spares.0.lock().unwrap().len(), 2, "never more than two");
        let reused = spares.take().unwrap();
        assert!(reused.is_empty() && reused.capacity() >= 4096, "cleared, capacity kept");
    }
}
