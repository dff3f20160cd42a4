//! The registry's rules over the two seams: uploads, blobs, manifests, listings. No HTTP
//! types here; handlers in `api/` translate. Calls `meta`, `blob` and `oci`; never `api`.

mod blobs;
mod cache;
mod history;
mod listing;
mod manifests;
mod uploads;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::blob::BlobStore;
use crate::error::Error;
use crate::meta::MetadataStore;
use crate::policy::ImmutabilityPolicy;

pub use crate::meta::{Actor, Precondition, TagEvent};
pub use blobs::BlobRead;
pub use history::HistoryPage;
pub use listing::Page;
pub use manifests::{ManifestPut, PutOutcome};
pub use uploads::{BlobCommitted, UploadState};

/// A request or response body as a stream of byte chunks.
pub type ByteStream = BoxStream<'static, std::io::Result<Bytes>>;

/// The largest manifest accepted (the spec asks registries to take at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The service handle every handler calls. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    meta: Arc<dyn MetadataStore>,
    blobs: BlobStore,
    immutability: Arc<ImmutabilityPolicy>,
    cache: Arc<cache::ReadCache>,
}

impl Registry {
    /// Builds the service over a metadata store, a blob store and the tag rules.
    pub fn new(meta: Arc<dyn MetadataStore>, blobs: BlobStore, immutability: Arc<ImmutabilityPolicy>) -> Registry {
        Registry { meta, blobs, immutability, cache: Arc::default() }
    }

    /// Checks that the database and the object store answer (for `/readyz`).
    pub async fn ready(&self) -> Result<(), Error> {
        self.meta.ping().await?;
        self.blobs.ping().await?;
        Ok(())
    }
}
