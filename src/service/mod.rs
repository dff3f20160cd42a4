//! The registry's rules over the two seams: uploads, blobs, manifests, listings. No HTTP
//! types here; handlers in `api/` translate. Calls `meta`, `blob` and `oci`; never `api`.

mod audit;
pub mod backup;
mod blobs;
mod cache;
pub mod copy;
mod gc;
mod history;
pub mod ledger_files;
mod listing;
mod manifests;
mod provenance;
mod pulls;
mod retention;
pub mod scrub;
mod signatures;
mod uploads;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;

use crate::blob::BlobStore;
use crate::clock::Clock;
use crate::error::Error;
use crate::meta::MetadataStore;
use crate::oci::RepoName;
use crate::policy::ImmutabilityPolicy;

pub use crate::audit::VerifyError;
pub use crate::meta::{Actor, DigestTagEvent, PullStats, Referrer, RepositorySummary, StorageTotals, TagEvent};
pub use crate::policy::Precondition;
pub use crate::signatures::ReferrerKind;
pub use backup::{BackupManifest, BackupProgress, BackupReport};
pub use blobs::{BlobRead, BlobWant};
pub use cache::CacheSize;
pub use gc::{GcOptions, GcProgress, GcReport, collectable, tally_suffices, unlinkable};
pub use history::HistoryPage;
pub use ledger_files::{LedgerError, VerifyReport};
pub use listing::Page;
pub use manifests::{ManifestPut, PutOutcome};
pub use provenance::{ConfigInfo, IndexChild, Provenance, Pushed};
pub use retention::{ApplyReport, Plan, RollbackOutcome, Trigger};
pub use scrub::{Finding, Problem, ScrubProgress, ScrubReport};
pub use signatures::{Document, KindedReferrer, Trust};
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
    readiness: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
    touches: Arc<gc::TouchTally>,
    gc_grace: Duration,
    retention: Arc<crate::policy::retention::RetentionPolicy>,
    trust: Arc<signatures::Trust>,
}

/// The outcome of a readiness check: `Err` names the part that cannot work.
pub type Readiness = Result<(), Arc<NotReady>>;

/// Why the registry is not ready (for `/readyz`).
#[derive(Debug)]
pub struct NotReady {
    /// The part that failed, in words: "database cannot write", ...
    pub what: &'static str,
    /// How it failed (logged, never sent).
    pub error: Error,
}

/// How long a readiness check may take before it counts as failed.
const READY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a readiness answer is reused: `/readyz` needs no credentials and writes, so a
/// flood of probes costs at most one check per second (concurrent probes share one).
const READY_REUSE: Duration = Duration::from_secs(1);

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
            cache: Arc::new(cache::ReadCache::new(clock.clone(), cache::DEFAULT_TTL)),
            clock,
            pulls: Arc::default(),
            denials: Arc::default(),
            readiness: Arc::default(),
            touches: Arc::default(),
            gc_grace: gc::DEFAULT_GRACE,
            retention: Arc::default(),
            trust: Arc::default(),
        }
    }

    /// Turns the read cache off: every read goes to the database (see `service/cache.rs`).
    pub fn without_read_cache(mut self) -> Registry {
        self.cache = Arc::new(cache::ReadCache::off());
        self
    }

    /// Bounds the read cache to `bytes` (`[server] cache_size`; 0 turns it off). Call
    /// before `follow_changes`.
    pub fn with_read_cache_budget(mut self, bytes: u64) -> Registry {
        self.cache = Arc::new(cache::ReadCache::with_budget(self.clock.clone(), cache::DEFAULT_TTL, bytes));
        self
    }

    /// What the read cache holds now (bytes, entries, budget), for tests and benchmarks.
    pub fn read_cache_size(&self) -> cache::CacheSize {
        self.cache.size()
    }

    /// Lets the read cache follow the database's change feed, if the backend has one
    /// (PostgreSQL: LISTEN/NOTIFY), so that another node's write drops what this node
    /// cached at once rather than when the entry expires (see `service/cache.rs`).
    pub async fn follow_changes(self) -> Result<Registry, crate::meta::MetaError> {
        if let Some(feed) = self.meta.change_feed().await? {
            self.cache.follow(feed);
        }
        Ok(self)
    }

    /// The `[gc] grace` collectors use: a HEAD of a blob whose mark is close to it is written
    /// at once instead of tallied (see `service/gc.rs`).
    pub fn with_gc_grace(mut self, grace: Duration) -> Registry {
        self.gc_grace = grace;
        self
    }

    /// The registry's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Drops what the read cache holds for `repo` after a change (or a rolled-back attempt).
    fn invalidate(&self, repo: &RepoName) {
        self.cache.invalidate(repo);
    }

    /// Checks, for `/readyz`, that the database answers and can commit a write and that
    /// the blob store can store a small object: a full disk, a read-only or unreachable
    /// database or store makes the registry not ready until it recovers.
    pub async fn ready(&self) -> Readiness {
        let mut last = self.readiness.lock().await;
        if let Some((at, r)) = &*last
            && at.elapsed() < READY_REUSE
        {
            return r.clone();
        }
        let r = self.check_ready().await.map_err(Arc::new);
        *last = Some((Instant::now(), r.clone()));
        r
    }

    async fn check_ready(&self) -> Result<(), NotReady> {
        /// Runs one check under the timeout; a failure or a timeout is `what`.
        async fn check<E: Into<Error>>(
            what: &'static str,
            f: impl Future<Output = Result<(), E>>,
        ) -> Result<(), NotReady> {
            match tokio::time::timeout(READY_TIMEOUT, f).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(NotReady { what, error: e.into() }),
                Err(_) => Err(NotReady {
                    what,
                    error: Error::internal(anyhow::anyhow!("no answer within {READY_TIMEOUT:?}")),
                }),
            }
        }
        check("database does not answer", self.meta.ping()).await?;
        check("database cannot write", self.meta.check_write()).await?;
        check("blob storage cannot write", self.blobs.check_write()).await
    }
}
