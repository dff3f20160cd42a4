//! An `ObjectStore` that times every call of the store it wraps and counts its failures
//! (`cairn_storage_operation_duration_seconds` and `cairn_storage_errors_total`, labelled
//! by `operation`); everything else passes through unchanged, so a filesystem read is
//! still an open file. A read is timed to its first byte (the response's headers on S3,
//! the opened file on disk), a multipart write to its start; a missing object
//! (`NotFound`) or a failed precondition is an answer, not a failure.

use std::fmt;
use std::ops::Range;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

use crate::metrics::{STORAGE_DURATION, STORAGE_ERRORS};

/// The wrapper.
#[derive(Debug)]
pub struct Instrumented<T> {
    inner: T,
}

impl<T> Instrumented<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Instrumented<T> {
        Instrumented { inner }
    }
}

impl<T: fmt::Display> fmt::Display for Instrumented<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Records one call of `operation` that started at `started`.
fn record<R>(operation: &'static str, started: Instant, result: &Result<R>) {
    metrics::histogram!(STORAGE_DURATION, "operation" => operation).record(started.elapsed().as_secs_f64());
    if let Err(e) = result
        && !matches!(
            e,
            object_store::Error::NotFound { .. }
                | object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. }
                | object_store::Error::NotModified { .. }
        )
    {
        metrics::counter!(STORAGE_ERRORS, "operation" => operation).increment(1);
    }
}

async fn timed<R>(operation: &'static str, call: impl Future<Output = Result<R>>) -> Result<R> {
    let started = Instant::now();
    let r = call.await;
    record(operation, started, &r);
    r
}

#[async_trait]
impl<T: ObjectStore> ObjectStore for Instrumented<T> {
    async fn put_opts(&self, location: &Path, payload: PutPayload, opts: PutOptions) -> Result<PutResult> {
        timed("put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(&self, location: &Path, opts: PutMultipartOptions) -> Result<Box<dyn MultipartUpload>> {
        timed("put_multipart", self.inner.put_multipart_opts(location, opts)).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let operation = if options.head { "head" } else { "get" };
        timed(operation, self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed("get_ranges", self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(&self, locations: BoxStream<'static, Result<Path>>) -> BoxStream<'static, Result<Path>> {
        let mut last = Instant::now();
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                record("delete", last, &r);
                last = Instant::now();
                r
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list(prefix)
            .inspect(|r| {
                if r.is_err() {
                    metrics::counter!(STORAGE_ERRORS, "operation" => "list").increment(1);
                }
            })
            .boxed()
    }

    fn list_with_offset(&self, prefix: Option<&Path>, offset: &Path) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner
            .list_with_offset(prefix, offset)
            .inspect(|r| {
                if r.is_err() {
                    metrics::counter!(STORAGE_ERRORS, "operation" => "list").increment(1);
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed("list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed("copy", self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        timed("rename", self.inner.rename_opts(from, to, options)).await
    }
}
