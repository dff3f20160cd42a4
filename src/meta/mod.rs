//! The metadata seam: `MetadataStore` (reads, each one statement) and `MetaTx` (a write
//! transaction of locked reads and writes that ends with its ledger events), the rows they
//! return and `MetaError`. SQL lives only in this module's backends (`sqlite.rs` and
//! `sqlite/`, `postgres.rs` and `postgres/`); [`open`] picks one by the URL. May import `oci` and the pure `audit` chain; must not import
//! `api`, `service`, `policy` or `blob`. `copy.rs` lists the tables that `cairn migrate
//! --copy-to` copies from one database into another (and the statements both backends share).

/// The contract suite every backend passes (public, hidden, for the PostgreSQL test target).
#[doc(hidden)]
pub mod contract;
pub mod copy;
mod postgres;
mod sqlite;
mod sqlite_faults;
mod timed;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::audit::{Checkpoint, Event, NewEvent};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// True when `url` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Opens the store `url` names, running its migrations: PostgreSQL for `postgres://` and
/// `postgresql://` URLs, SQLite otherwise; its calls are timed into the metrics.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn MetadataStore>, MetaError> {
    let store: std::sync::Arc<dyn MetadataStore> = if is_postgres_url(url) {
        std::sync::Arc::new(PostgresStore::open(url).await?)
    } else {
        std::sync::Arc::new(SqliteStore::open(url).await?)
    };
    // Every call timed into the database metrics (`timed.rs`).
    Ok(std::sync::Arc::new(timed::Timed::new(store)))
}

/// Refuses a database whose schema a newer Cairn migrated (`applied`, the highest migration
/// it records, is beyond the last one this build knows): this build would misread it.
fn refuse_newer_schema(shown: &str, applied: Option<i64>, migrator: &sqlx::migrate::Migrator) -> Result<(), MetaError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match applied {
        Some(v) if v > known => Err(MetaError::Unusable(format!(
            "the database {shown} has schema version {v}, newer than this Cairn {} knows (up to {known}): a newer \
             Cairn migrated it. Run that newer Cairn (or later), or restore a backup taken before the upgrade",
            env!("CARGO_PKG_VERSION")
        ))),
        _ => Ok(()),
    }
}

/// One item of a backend's change feed (`MetadataStore::change_feed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A committed transaction changed a manifest or tag of this repository.
    Repository(String),
    /// Changes may have been missed (the feed's connection was lost and made again).
    Gap,
}

/// A backend's change feed: every committed change to a repository's manifests or tags,
/// by any process, soon after it commits. Ends only when the store is dropped.
pub type ChangeFeed = futures::stream::BoxStream<'static, Change>;

/// How a backend fails, the same way for every backend.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// The database could not be reached, is busy beyond its timeout, or cannot write for
    /// now (I/O error, read-only file). Nothing was written; a retry may succeed.
    #[error("metadata store unavailable: {0}")]
    Unavailable(String),
    /// The disk under the database is full. Nothing was written; a retry succeeds once
    /// space is freed.
    #[error("metadata store full: {0}")]
    Full(String),
    /// The database file is not one Cairn can use (empty, not SQLite, another program's
    /// tables, read-only). Only `open` returns it; the message says what to do.
    #[error("{0}")]
    Unusable(String),
    /// A concurrent writer got there first: a uniqueness race (two nodes inserting the same
    /// tag or row) or a serialization failure. Nothing was written; the caller runs the whole
    /// operation again, which then sees the other writer's result (503 once retries are
    /// spent).
    #[error("conflict with a concurrent write: {0}")]
    Conflict(String),
    /// The row an operation targets does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
    /// Any other database error.
    #[error(transparent)]
    Other(sqlx::Error),
    /// Stored data that cannot be decoded (for example a hand-edited row).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

impl MetaError {
    /// What `MetaTx::insert_manifest` returns when the schema's foreign keys refuse one of
    /// the manifest's references (a blob or child `repo` does not have): `NotFound`.
    pub(crate) fn dangling_reference(repo: &RepoName, manifest: &Digest) -> MetaError {
        MetaError::NotFound(format!(
            "a blob or manifest that manifest {manifest} of {repo} references is not in the repository"
        ))
    }
}

/// One written piece of an upload: an opaque name chosen by `blob/` and its length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Name of the segment within its upload (`blob/` maps it to an object key).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// Where a committed blob's bytes are: the upload it came from and its objects, in order.
/// `blob/` turns this into object keys; a blob Cairn commits now is one object (the upload's
/// only segment, or the one its segments were composed into), an older one may be several.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BlobLocation {
    /// The upload session id whose segments hold the bytes.
    pub upload: String,
    /// Segments in order; their lengths add up to the blob size.
    pub segments: Vec<Segment>,
}

/// A committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRecord {
    /// Its verified digest.
    pub digest: Digest,
    /// Its verified size.
    pub size: u64,
    /// Where its bytes are.
    pub location: BlobLocation,
}

/// An upload session in progress.
#[derive(Debug, Clone)]
pub struct UploadSession {
    /// Random id, part of the upload URL.
    pub id: String,
    /// The repository the upload is for.
    pub repo: RepoName,
    /// Bytes received so far (sum of `segments`).
    pub len: u64,
    /// The segments written so far.
    pub segments: Vec<Segment>,
    /// The digest algorithm the session hashes with.
    pub algorithm: Algorithm,
    /// Saved hash state after `len` bytes; `None` before any byte.
    pub hash_state: Option<Vec<u8>>,
    /// Last activity, for expiry.
    pub updated_at: SystemTime,
}

/// A stored manifest.
#[derive(Debug, Clone)]
pub struct ManifestRecord {
    /// Its digest (sha256 of `body`).
    pub digest: Digest,
    /// The media type it was pushed with.
    pub media_type: String,
    /// The exact bytes pushed.
    pub body: bytes::Bytes,
    /// `artifactType` (or config media type), for the referrers API.
    pub artifact_type: Option<String>,
    /// The manifest it refers to, if any.
    pub subject: Option<Digest>,
    /// Annotations, for the referrers API.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Who made a change, as recorded in tag history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// A user or robot name, or `anonymous`.
    pub name: String,
    /// The client's address, when known.
    pub address: Option<String>,
}

/// A manifest (or index) that references something, and a tag that keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The referencing manifest.
    pub manifest: Digest,
    /// A tag on it, or on an index that lists it.
    pub tag: Option<Tag>,
}

/// What kind of reference a lookup of holders follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    /// A manifest uses a blob (config or layer).
    Blob,
    /// An index lists a manifest.
    Child,
}

/// Which ledger events to read, in seq order; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Events after this seq (the cursor).
    pub after: Option<i64>,
    /// Events up to and including this seq.
    pub until: Option<i64>,
    /// Of this repository.
    pub repository: Option<String>,
    /// Of this tag.
    pub tag: Option<String>,
    /// Whose digest or previous digest is this one.
    pub digest: Option<String>,
    /// By this actor.
    pub actor: Option<String>,
    /// Of this action (dotted name).
    pub action: Option<String>,
    /// At or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Before this time (ms since the epoch).
    pub before_ms: Option<i64>,
}

/// An archive cut: events up to `seq` moved to `file` (under the archive directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerArchive {
    /// The last archived seq.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
    /// The archive file's name.
    pub file: String,
    /// When the cut was made.
    pub at: SystemTime,
}

/// How often a manifest was pulled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    /// Pulls counted (GET of the manifest by tag or digest).
    pub count: u64,
    /// The last one.
    pub last_pulled: SystemTime,
}

/// What happened to a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TagAction {
    /// It was created.
    Create,
    /// It moved to another digest.
    Move,
    /// It was deleted.
    Delete,
}

/// One entry of a tag's history.
#[derive(Debug, Clone)]
pub struct TagEvent {
    /// Increasing id, the pagination cursor.
    pub id: i64,
    /// When.
    pub at: SystemTime,
    /// What.
    pub action: TagAction,
    /// The digest before (none for a create).
    pub from: Option<Digest>,
    /// The digest after (none for a delete).
    pub to: Option<Digest>,
    /// Who.
    pub actor: Actor,
}

/// A repository with its counts, for `/api/v1/repositories`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositorySummary {
    /// Its name.
    pub name: String,
    /// How many tags it has.
    pub tag_count: u64,
    /// How many manifests (images, indexes, artifacts) it stores.
    pub manifest_count: u64,
    /// Bytes it holds: its manifests plus every blob linked to it, each blob counted once
    /// however many manifests share it.
    pub size: u64,
    /// The newest manifest stored or tag set in it, if any.
    pub last_push: Option<SystemTime>,
}

/// The whole registry's storage figures, for `/api/v1/repositories`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageTotals {
    /// Repositories that hold a blob or a manifest.
    pub repositories: u64,
    /// Tags in all repositories.
    pub tag_count: u64,
    /// Manifest rows in all repositories (one pushed to two repositories counts twice).
    pub manifest_count: u64,
    /// Distinct blobs stored (linked or waiting for GC).
    pub blob_count: u64,
    /// Their bytes, each blob once however many repositories link it.
    pub blob_bytes: u64,
    /// Bytes of every manifest row (a manifest is stored once per repository).
    pub manifest_bytes: u64,
    /// Bytes of blobs no manifest references (GC frees them once their grace has passed).
    pub unreferenced_bytes: u64,
}

/// A repository link the first GC stage may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkCandidate {
    /// The repository.
    pub repo: RepoName,
    /// The linked blob.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

/// One tag history entry, with the tag it is about.
#[derive(Debug, Clone)]
pub struct DigestTagEvent {
    /// The tag.
    pub tag: Tag,
    /// What happened to it.
    pub event: TagEvent,
}

/// One tag history row, as retention reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagChange {
    /// The tag.
    pub tag: Tag,
    /// The digest before (none for a create).
    pub from: Option<Digest>,
    /// The digest after (none for a delete).
    pub to: Option<Digest>,
    /// When.
    pub at: SystemTime,
}

/// What [`MetaTx::ensure_repository_and_insert_manifest`] did, and where the tag it was
/// asked about points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestInsert {
    /// The repository row was created by this call.
    pub repository_created: bool,
    /// The manifest was stored by this call (false: it was already there).
    pub inserted: bool,
    /// The tag's target as it stands in this transaction, locked as by
    /// [`MetaTx::tag_for_update`]; `None` when the tag does not exist or none was asked about.
    pub tag: Option<Digest>,
}

/// A stored manifest without its body, as retention reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredManifest {
    /// Its digest.
    pub digest: Digest,
    /// Its body size.
    pub size: u64,
    /// The manifest it refers to, if any.
    pub subject: Option<Digest>,
    /// When it was stored in the repository.
    pub pushed_at: SystemTime,
}

/// What retention needs of one repository, read in one transaction (a consistent snapshot).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionSnapshot {
    /// Every tag: where it points and when it was last set, by name.
    pub tags: Vec<(Tag, Digest, SystemTime)>,
    /// Every tag history row of the repository, newest first.
    pub history: Vec<TagChange>,
    /// Every manifest, by digest.
    pub manifests: Vec<StoredManifest>,
    /// `(index, child)`: what each index lists.
    pub children: Vec<(Digest, Digest)>,
    /// `(manifest, blob, blob size)`: what each manifest uses.
    pub blobs: Vec<(Digest, Digest, u64)>,
    /// Pull counters by manifest.
    pub pulls: Vec<(Digest, PullStats)>,
}

/// Outcome of `commit_upload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitUpload {
    /// The blob is new and now points at this upload's segments.
    Created,
    /// The digest was already stored; this upload's segments are now garbage.
    AlreadyStored,
    /// The session no longer has the expected length: it ended (finished, cancelled or
    /// expired meanwhile; `len` is `None`) or a racing chunk moved it on to `len` bytes, as
    /// seen inside the same transaction (a racing writer whose commit is still pending
    /// counts: a read outside it could see the session as it was).
    UploadGone { len: Option<u64> },
}

/// One entry of the referrers API.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The referrer's digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its annotations.
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A robot's own grant: actions on a repository glob.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RobotGrant {
    /// Repository glob.
    pub repositories: String,
    /// Action names.
    pub actions: Vec<String>,
}

/// A robot token as stored (the secret only as a hash).
#[derive(Clone)]
pub struct RobotRecord {
    /// Its login name.
    pub name: String,
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
    /// Role names.
    pub roles: Vec<String>,
    /// Its own grants.
    pub grants: Vec<RobotGrant>,
    /// When it was created.
    pub created_at: SystemTime,
    /// When it stops working, if ever.
    pub expires_at: Option<SystemTime>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<SystemTime>,
}

impl std::fmt::Debug for RobotRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RobotRecord")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .field("grants", &self.grants)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

/// One write transaction: locked reads and writes, and the ledger append that ends every
/// state change. The service decides between the calls (`policy::writes`); the backend only
/// stores. Dropping it without `commit` rolls everything back.
///
/// Order and hash under concurrency: `append_events` reads the ledger head, links the events
/// after it and updates the head row, as the last statement before `commit`. SQLite runs every
/// write transaction as a savepoint of a group transaction (`BEGIN IMMEDIATE`) on one
/// connection and appends the group's events together before its `COMMIT`, so appends are
/// serialized (`sqlite/group.rs`); a backend with concurrent writers (PostgreSQL) locks the
/// head row (`FOR UPDATE`), which serializes appends for the rest of the transaction only.
#[async_trait]
pub trait MetaTx: Send {
    /// Creates the repository row if missing; true when it was created.
    async fn ensure_repository(&mut self, repo: &RepoName) -> Result<bool, MetaError>;
    /// The first of `digests` that `repo` does not have, as a blob (`RefKind::Blob`) or as a
    /// manifest (`RefKind::Child`).
    async fn first_missing(
        &mut self,
        repo: &RepoName,
        kind: RefKind,
        digests: &[Digest],
    ) -> Result<Option<Digest>, MetaError>;
    /// Stores a manifest with its references (blobs it uses, children it lists); false when it
    /// was already stored (nothing changes then). A blob or child `repo` does not have is
    /// refused by the references' foreign keys: `NotFound`, and the caller rolls back
    /// (`first_missing` then says which one).
    async fn insert_manifest(
        &mut self,
        repo: &RepoName,
        m: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
    ) -> Result<bool, MetaError>;
    /// [`MetaTx::ensure_repository`], [`MetaTx::insert_manifest`], then, given a tag,
    /// [`MetaTx::tag_for_update`], with the errors of `insert_manifest`. A backend whose
    /// writes share one serial connection (SQLite) makes it one round trip; the default makes
    /// the calls.
    async fn ensure_repository_and_insert_manifest(
        &mut self,
        repo: &RepoName,
        m: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
        tag: Option<&Tag>,
    ) -> Result<ManifestInsert, MetaError> {
        let repository_created = self.ensure_repository(repo).await?;
        let inserted = self.insert_manifest(repo, m, blobs, children).await?;
        let tag = match tag {
            Some(t) => self.tag_for_update(repo, t).await?,
            None => None,
        };
        Ok(ManifestInsert { repository_created, inserted, tag })
    }
    /// True if the manifest is stored in `repo`.
    async fn manifest_exists(&mut self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;
    /// Where a tag points, locked for the rest of the transaction.
    async fn tag_for_update(&mut self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError>;
    /// Every tag pointing at `digest`, sorted, locked.
    async fn tags_of(&mut self, repo: &RepoName, digest: &Digest) -> Result<Vec<Tag>, MetaError>;
    /// Points a tag at `to` (it pointed at `from`), recording the change in tag history.
    async fn set_tag(
        &mut self,
        repo: &RepoName,
        tag: &Tag,
        from: Option<&Digest>,
        to: &Digest,
        actor: &Actor,
    ) -> Result<(), MetaError>;
    /// Deletes a tag that points at `from`, recording it in tag history.
    async fn remove_tag(&mut self, repo: &RepoName, tag: &Tag, from: &Digest, actor: &Actor) -> Result<(), MetaError>;
    /// A manifest of `repo` that references `digest` the way `kind` says (tagged holders
    /// first), if any.
    async fn holder(&mut self, repo: &RepoName, kind: RefKind, digest: &Digest) -> Result<Option<Holder>, MetaError>;
    /// Deletes a manifest (its tags and its own references go with it). The schema refuses
    /// when an index still lists it (`MetaError::Corrupt`: a caller skipped `holder`).
    async fn remove_manifest(&mut self, repo: &RepoName, digest: &Digest) -> Result<(), MetaError>;
    /// Links a stored blob to `repo` (no-op if linked) and marks it touched at `at` (its GC
    /// grace runs from the latest touch).
    async fn link_blob(&mut self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<(), MetaError>;
    /// True if `repo` links the blob.
    async fn blob_linked(&mut self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError>;
    /// Unlinks a blob from `repo` and marks it touched at `at` (so the GC grace of a blob that
    /// lost its last link runs from now); false if it was not linked. The schema refuses while
    /// a manifest references it.
    async fn unlink_blob(&mut self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<bool, MetaError>;
    /// GC: deletes the blob row only if, checked now under the write lock, no repository links
    /// it and it was not touched since `cutoff`; then records its upload as garbage (its objects
    /// are removed after commit). Returns the deleted blob.
    async fn delete_unlinked_blob(
        &mut self,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<Option<BlobRecord>, MetaError>;
    /// GC, first stage: unlinks `digest` from `repo` only if, checked now under the write lock,
    /// no manifest of `repo` references it and the blob was not touched since `cutoff`. The
    /// mark stays as it was (so the same run may collect the blob). True when it was unlinked.
    async fn unlink_unreferenced(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool, MetaError>;
    /// Ends an upload session (only if it still has `expected_len` bytes) and stores the blob
    /// unless it exists, linked to the session's repository.
    async fn commit_upload(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
    ) -> Result<(CommitUpload, Option<RepoName>), MetaError>;
    /// [`MetaTx::commit_upload`], then for the session's repository
    /// [`MetaTx::ensure_repository`] and [`MetaTx::link_blob`] (at `at`): the outcome, and the
    /// repository with whether it was created (`None` when the session was gone). A backend
    /// whose writes share one serial connection (SQLite) makes it two round trips; the
    /// default makes the calls.
    async fn commit_upload_and_link(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
        at: SystemTime,
    ) -> Result<(CommitUpload, Option<(RepoName, bool)>), MetaError> {
        let (outcome, owner) = self.commit_upload(id, expected_len, blob).await?;
        let Some(owner) = owner else { return Ok((outcome, None)) };
        let created = self.ensure_repository(&owner).await?;
        self.link_blob(&owner, &blob.digest, at).await?;
        Ok((outcome, Some((owner, created))))
    }
    /// The repository's state for retention, read under this transaction's lock (so a deleting
    /// transaction re-checks its decisions against what is there now).
    async fn retention_snapshot(&mut self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError>;
    /// The last `limit` distinct digests `tag` pointed to, newest first (its current one first
    /// when it exists), from tag history.
    async fn tag_targets(&mut self, repo: &RepoName, tag: &Tag, limit: u32) -> Result<Vec<Digest>, MetaError>;
    /// Stores a new robot; false if the name is taken.
    async fn create_robot(&mut self, robot: &RobotRecord) -> Result<bool, MetaError>;
    /// Marks a robot revoked at `at`; false if there is no such (unrevoked) robot.
    async fn revoke_robot(&mut self, name: &str, at: SystemTime) -> Result<bool, MetaError>;
    /// Appends events to the ledger at `at`, linked after the current head. Call it last.
    async fn append_events(&mut self, events: Vec<NewEvent>, at: SystemTime) -> Result<(), MetaError>;
    /// Makes everything durable and visible.
    async fn commit(self: Box<Self>) -> Result<(), MetaError>;
    /// Discards everything.
    async fn rollback(self: Box<Self>) -> Result<(), MetaError>;
}

/// The metadata operations Cairn needs. Reads are one statement each; every change goes
/// through a [`MetaTx`] from [`MetadataStore::begin`].
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), MetaError>;
    /// Opens a write transaction whose rows are stamped `now` (the caller's clock: every
    /// row written in one transaction carries the same time as its ledger events).
    async fn begin(&self, now: SystemTime) -> Result<Box<dyn MetaTx>, MetaError>;
    /// Checks that the database can commit a write (for `/readyz`): one tiny durable write
    /// that holds no data.
    async fn check_write(&self) -> Result<(), MetaError>;
    /// The feed of repositories whose manifests or tags any process changed (see [`Change`]),
    /// for read caches to drop; `None` where the backend has none (SQLite: the cache's
    /// expiry bounds what another process's write leaves stale).
    async fn change_feed(&self) -> Result<Option<ChangeFeed>, MetaError> {
        Ok(None)
    }
    /// The signing key (PKCS#8) every process on this database shares under `name`: the
    /// stored one, or `candidate` once stored if there was none (the first writer wins; a
    /// racing process gets the winner's). `None` where the backend keeps no keys (SQLite: one
    /// node, whose keys are files in its data directory).
    async fn shared_key(&self, name: &str, candidate: &[u8], now: SystemTime) -> Result<Option<Vec<u8>>, MetaError> {
        let _ = (name, candidate, now);
        Ok(None)
    }

    /// Repository names after `last`, sorted, at most `n`.
    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError>;
    /// True if the repository has any blob or manifest.
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError>;

    /// The blob if it is linked to `repo`.
    async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>, MetaError>;
    /// Repositories that link the blob, sorted, at most `limit`.
    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<String>, MetaError>;

    /// Opens an upload session that hashes with `algorithm`.
    async fn create_upload(
        &self,
        repo: &RepoName,
        id: &str,
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<UploadSession, MetaError>;
    /// The session, if it exists for `repo`.
    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadSession>, MetaError>;
    /// Records one more segment, only if the session still has `expected_len` bytes
    /// (so two racing PATCHes cannot both count). False when the session moved on or is gone.
    async fn record_segment(
        &self,
        id: &str,
        expected_len: u64,
        segment: &Segment,
        hash_state: &[u8],
        now: SystemTime,
    ) -> Result<bool, MetaError>;
    /// Deletes a session; returns it if it existed. Its objects become garbage as of `now`.
    async fn delete_upload(&self, id: &str, now: SystemTime) -> Result<Option<UploadSession>, MetaError>;
    /// Deletes and returns every session idle since before `cutoff`; their objects become
    /// garbage as of `now`.
    async fn expire_uploads(&self, cutoff: SystemTime, now: SystemTime) -> Result<Vec<UploadSession>, MetaError>;

    /// A manifest by tag or digest.
    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, MetaError>;
    /// History of one tag, newest first, with ids below `before` (all when `None`).
    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TagEvent>, MetaError>;
    /// A robot by name (revoked and expired ones included).
    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError>;
    /// Every robot, by name.
    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError>;
    /// The last event of a tag at or before `at`.
    async fn tag_event_at(&self, repo: &RepoName, tag: &Tag, at: SystemTime) -> Result<Option<TagEvent>, MetaError>;
    /// Every tag of `repo`, sorted.
    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, MetaError>;
    /// Manifests whose subject is `subject`, by digest.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>, MetaError>;
    /// The indexes of `repo` that list the manifest `child`, by digest, at most `limit`.
    async fn parents(&self, repo: &RepoName, child: &Digest, limit: u32) -> Result<Vec<Digest>, MetaError>;

    /// Ledger events matching `filter`, in seq order, at most `limit`.
    async fn events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError>;
    /// The ledger head `(seq, hash)`, or `None` before the first event.
    async fn ledger_head(&self) -> Result<Option<(i64, String)>, MetaError>;
    /// The last archive cut `(seq, hash)`: events up to it were moved to an archive file.
    async fn ledger_archive_cut(&self) -> Result<Option<(i64, String)>, MetaError>;
    /// Every archive cut, oldest first.
    async fn ledger_archives(&self) -> Result<Vec<LedgerArchive>, MetaError>;
    /// Records that events up to `seq` (whose last hash is `hash`) moved to `file`, and deletes
    /// them from the database, in one transaction.
    async fn archive_ledger(&self, seq: i64, hash: &str, file: &str, at: SystemTime) -> Result<u64, MetaError>;
    /// Stores a signed checkpoint.
    async fn add_checkpoint(&self, cp: &Checkpoint) -> Result<(), MetaError>;
    /// Checkpoints after `after` (seq), in seq order, at most `limit`.
    async fn checkpoints(&self, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, MetaError>;
    /// The newest checkpoint.
    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, MetaError>;
    /// Adds counted pulls: `(repo, digest, count, last pulled)`; manifests deleted meanwhile
    /// are skipped.
    async fn add_pulls(&self, pulls: &[(RepoName, Digest, u64, SystemTime)]) -> Result<(), MetaError>;
    /// Pull count and last pull of a manifest.
    async fn pulls(&self, repo: &RepoName, digest: &Digest) -> Result<Option<PullStats>, MetaError>;

    /// Marks blobs touched (a HEAD): `touched_at` becomes the later of its value and the time.
    async fn touch_blobs(&self, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError>;
    /// GC candidates: blobs no repository links, not touched since `cutoff`, by digest after
    /// `after`, at most `limit`. Only a hint: the deleting transaction checks again.
    async fn gc_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError>;
    /// GC, first stage: repository links no manifest of their repository references, whose
    /// blob was not touched since `cutoff`, by (repository, digest) after `after`, at most
    /// `limit`. Only a hint: the unlinking transaction checks again.
    async fn gc_link_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<(&str, &Digest)>,
        limit: u32,
    ) -> Result<Vec<LinkCandidate>, MetaError>;
    /// For a dry run: blobs that no manifest of any repository references and that were not
    /// touched since `cutoff` (what a run would free once it unlinked them), by digest after
    /// `after`, at most `limit`.
    async fn gc_unreferenced(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError>;
    /// The blob if it is linked to `repo`, with its GC mark (`touched_at`).
    async fn blob_with_mark(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(BlobRecord, SystemTime)>, MetaError>;
    /// Marks a blob touched at `at` at once, only while `repo` links it; false when it does not
    /// (any more). For a HEAD of a blob whose mark is close to its grace.
    async fn touch_linked_blob(&self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<bool, MetaError>;
    /// Takes (or renews) the collector lock for `holder` until `until`, unless another holder
    /// has it and its expiry is after `now`. True when `holder` has it.
    async fn gc_lock(&self, holder: &str, now: SystemTime, until: SystemTime) -> Result<bool, MetaError>;
    /// The collector lock's holder and expiry, if anyone holds it.
    async fn gc_lock_holder(&self) -> Result<Option<(String, SystemTime)>, MetaError>;
    /// Takes the collector lock from `dead` (a holder known to have died) for `holder` until
    /// `until`, only if `dead` still has it. True when `holder` has it.
    async fn gc_lock_take_over(&self, holder: &str, dead: &str, until: SystemTime) -> Result<bool, MetaError>;
    /// Releases the collector lock if `holder` has it.
    async fn gc_unlock(&self, holder: &str) -> Result<(), MetaError>;
    /// Upload ids whose objects may remain although nothing names them, at most `limit`.
    async fn upload_garbage(&self, limit: u32) -> Result<Vec<String>, MetaError>;
    /// Forgets garbage uploads whose objects were removed.
    async fn forget_upload_garbage(&self, ids: &[String]) -> Result<(), MetaError>;
    /// Repositories after `after` (by name) with their counts, sorted, at most `limit`; only
    /// repositories that hold a blob or a manifest.
    async fn repository_summaries(&self, after: Option<&str>, limit: u32) -> Result<Vec<RepositorySummary>, MetaError>;
    /// The whole registry's figures: every stored blob once, every manifest row.
    async fn storage_totals(&self) -> Result<StorageTotals, MetaError>;
    /// The tags of `repo` that point at `digest` now, by name, with when each was last set.
    async fn tags_pointing_at(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<(Tag, SystemTime)>, MetaError>;
    /// Tag history entries of `repo` that moved a tag to or away from `digest`, oldest first,
    /// at most `limit`.
    async fn digest_tag_history(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: u32,
    ) -> Result<Vec<DigestTagEvent>, MetaError>;
    /// When the manifest was stored in `repo`, if it is.
    async fn manifest_stored_at(&self, repo: &RepoName, digest: &Digest) -> Result<Option<SystemTime>, MetaError>;
    /// The repository's state for retention: several statements in one read transaction, so
    /// the rows agree with each other.
    async fn retention_snapshot(&self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError>;

    /// For `cairn migrate --copy-to`: a consistent, read-only view of every table, read in
    /// batches ([`copy::Dump`]).
    async fn dump(&self) -> Result<Box<dyn copy::Dump>, MetaError>;
    /// For `cairn migrate --copy-to`: one write transaction that loads copied rows into this
    /// database, which must be empty ([`copy::Load`]).
    async fn load(&self) -> Result<Box<dyn copy::Load>, MetaError>;
    /// For `cairn migrate --copy-to` into this database while it is empty (so the key it holds
    /// has signed nothing kept): replaces the shared signing key `name` (see `shared_key`) with
    /// `pkcs8`, the source's. False where the backend keeps no keys (SQLite).
    async fn replace_shared_key(&self, name: &str, pkcs8: &[u8], now: SystemTime) -> Result<bool, MetaError> {
        let _ = (name, pkcs8, now);
        Ok(false)
    }
}

/// Milliseconds since the epoch, the time format of every row.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The inverse of [`millis`].
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}
