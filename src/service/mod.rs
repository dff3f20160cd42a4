//! The registry's rules over the two seams: uploads, blobs, manifests, listings. No HTTP
//! types here; handlers in `api/` translate. Calls `meta`, `blob` and `oci`; never `api`.

mod audit;
mod blobs;
mod cache;
mod history;
mod listing;
mod manifests;
mod provenance;
mod pulls;
mod uploads;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::blob::BlobStore;
use crate::clock::Clock;
use crate::error::Error;
use crate::meta::MetadataStore;
use crate::oci::RepoName;
use crate::policy::ImmutabilityPolicy;

pub use crate::meta::{Actor, DigestTagEvent, PullStats, Referrer, RepositorySummary, TagEvent};
pub use crate::policy::Precondition;
pub use audit::{VerifyError, VerifyReport};
pub use blobs::BlobRead;
pub use history::HistoryPage;
pub use listing::Page;
pub use manifests::{ManifestPut, PutOutcome};
pub use provenance::{ConfigInfo, IndexChild, KindedReferrer, Provenance, Pushed, ReferrerKind};
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
    clock: Arc<dyn Clock>,
    pulls: Arc<pulls::PullTally>,
    denials: Arc<audit::DenialTally>,
}

impl Registry {
    /// Builds the service over a metadata store, a blob store, the tag rules and a clock.
    pub fn new(
        meta: Arc<dyn MetadataStore>,
        blobs: BlobStore,
        immutability: Arc<ImmutabilityPolicy>,
        clock: Arc<dyn Clock>,
    ) -> Registry {
        Registry {
            meta,
            blobs,
            immutability,
            cache: Arc::default(),
            clock,
            pulls: Arc::default(),
            denials: Arc::default(),
        }
    }

    /// The registry's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Drops what the read cache holds for `repo` after a change (or a rolled-back attempt).
    fn invalidate(&self, repo: &RepoName) {
        self.cache.invalidate(repo);
    }

    /// Checks that the database and the object store answer (for `/readyz`).
    pub async fn ready(&self) -> Result<(), Error> {
        self.meta.ping().await?;
        self.blobs.ping().await?;
        Ok(())
    }
}
