//! The metadata seam: `MetadataStore`, the rows it returns and `MetaError`. Every method is
//! one transaction. SQL lives only in this module's backends (`sqlite.rs`; PostgreSQL
//! later). May import `oci`; must not import `api`, `service` or `blob`.

mod sqlite;
mod sqlite_faults;

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

pub use sqlite::SqliteStore;

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
    /// Any other database error.
    #[error(transparent)]
    Other(sqlx::Error),
    /// Stored data that cannot be decoded (for example a hand-edited row).
    #[error("corrupt metadata: {0}")]
    Corrupt(String),
}

/// One written piece of an upload: an opaque name chosen by `blob/` and its length.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Segment {
    /// Name of the segment within its upload (`blob/` maps it to an object key).
    pub name: String,
    /// Its length in bytes.
    pub len: u64,
}

/// Where a committed blob's bytes are: the upload it came from and that upload's
/// segments, in order. `blob/` turns this into object keys.
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

/// A tag a manifest PUT points at the manifest.
#[derive(Debug, Clone)]
pub struct TagWrite {
    /// The tag.
    pub tag: Tag,
    /// `Some(rule)` when the tag is immutable: it may be created, or re-pointed at the
    /// digest it already has, but never moved.
    pub immutable: Option<String>,
}

/// A conditional-write requirement, checked against every tag of the PUT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition.
    None,
    /// `If-None-Match: *`: the tag must not exist.
    Absent,
    /// `If-Match: "<digest>"`: the tag must point at this digest now.
    PointsTo(Digest),
}

/// What a manifest PUT needs the store to check and write in one transaction.
#[derive(Debug, Clone)]
pub struct NewManifest {
    /// The manifest itself.
    pub record: ManifestRecord,
    /// Blobs that must be linked to the repository.
    pub blobs: Vec<Digest>,
    /// Manifests that must exist in the repository.
    pub manifests: Vec<Digest>,
    /// Tags to point at it.
    pub tags: Vec<TagWrite>,
    /// Condition every tag must meet.
    pub precondition: Precondition,
    /// Who is writing.
    pub actor: Actor,
}

/// Outcome of `put_manifest`. Anything but `Stored` wrote nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutManifest {
    /// Stored (or already there) and tags applied.
    Stored,
    /// A referenced blob or manifest is missing.
    Missing(Digest),
    /// An immutable tag points elsewhere.
    Immutable {
        /// The tag.
        tag: Tag,
        /// What it points to.
        current: Digest,
        /// The rule that makes it immutable.
        rule: String,
    },
    /// A tag failed the request's precondition.
    PreconditionFailed {
        /// The tag.
        tag: Tag,
        /// What it points to now, if anything.
        current: Option<Digest>,
    },
}

/// Decides, inside a delete transaction, whether a tag is protected: `Some(rule)` if so.
pub type TagGuard<'a> = &'a (dyn Fn(&Tag) -> Option<String> + Send + Sync);

/// Outcome of deleting a tag or a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deleted {
    /// Done.
    Deleted,
    /// There was nothing to delete.
    NotFound,
    /// A manifest of the repository still references what would be deleted (a blob it uses,
    /// or an index's child); nothing was deleted.
    Referenced {
        /// The manifest that holds the reference.
        holder: Digest,
        /// A tag that points at the holder (or at an index that lists it), if any.
        tag: Option<Tag>,
    },
    /// A protected tag stands in the way; nothing was deleted.
    Protected {
        /// The tag.
        tag: Tag,
        /// What it points to.
        current: Digest,
        /// The rule protecting it.
        rule: String,
    },
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

/// Outcome of `commit_upload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitUpload {
    /// The blob is new and now points at this upload's segments.
    Created,
    /// The digest was already stored; this upload's segments are now garbage.
    AlreadyStored,
    /// The session no longer exists (finished, cancelled or expired meanwhile).
    UploadGone,
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

/// The metadata operations Cairn needs, each one transaction.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), MetaError>;
    /// Checks that the database can commit a write (for `/readyz`): one tiny durable write
    /// that holds no data.
    async fn check_write(&self) -> Result<(), MetaError>;

    /// Repository names after `last`, sorted, at most `n`.
    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError>;
    /// True if the repository has any blob or manifest.
    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError>;

    /// The blob if it is linked to `repo`.
    async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>, MetaError>;
    /// Links a blob of `from` to `repo` too; false if `from` does not have it.
    async fn mount_blob(&self, repo: &RepoName, digest: &Digest, from: &RepoName) -> Result<bool, MetaError>;
    /// Repositories that link the blob, sorted, at most `limit`.
    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<String>, MetaError>;
    /// Unlinks a blob from `repo` unless a manifest of `repo` references it (`Referenced`);
    /// `NotFound` if it was not linked. The schema refuses the unlink of a referenced blob
    /// whatever the caller checked before.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Deleted, MetaError>;

    /// Opens an upload session that hashes with `algorithm`.
    async fn create_upload(&self, repo: &RepoName, id: &str, algorithm: Algorithm) -> Result<UploadSession, MetaError>;
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
    ) -> Result<bool, MetaError>;
    /// Ends the session (only if it still has `expected_len` bytes) and stores the blob
    /// (unless it exists) linked to the session's repository, in one transaction.
    async fn commit_upload(&self, id: &str, expected_len: u64, blob: &BlobRecord) -> Result<CommitUpload, MetaError>;
    /// Deletes a session; returns it if it existed.
    async fn delete_upload(&self, id: &str) -> Result<Option<UploadSession>, MetaError>;
    /// Deletes and returns every session idle since before `cutoff`.
    async fn expire_uploads(&self, cutoff: SystemTime) -> Result<Vec<UploadSession>, MetaError>;

    /// A manifest by tag or digest.
    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, MetaError>;
    /// Checks references and stores the manifest and its tags, all or nothing.
    async fn put_manifest(&self, repo: &RepoName, m: &NewManifest) -> Result<PutManifest, MetaError>;
    /// Deletes a manifest and the tags pointing at it, unless an index of `repo` lists it
    /// (`Referenced`) or `guard` protects one of those tags; records each tag deletion.
    async fn delete_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        guard: TagGuard<'_>,
        actor: &Actor,
    ) -> Result<Deleted, MetaError>;
    /// Deletes a tag unless `guard` protects it; records the deletion.
    async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: TagGuard<'_>,
        actor: &Actor,
    ) -> Result<Deleted, MetaError>;
    /// History of one tag, newest first, with ids below `before` (all when `None`).
    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TagEvent>, MetaError>;
    /// Stores a new robot; false if the name is taken.
    async fn create_robot(&self, robot: &RobotRecord) -> Result<bool, MetaError>;
    /// A robot by name (revoked and expired ones included).
    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError>;
    /// Every robot, by name.
    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError>;
    /// Marks a robot revoked; false if there is no such (unrevoked) robot.
    async fn revoke_robot(&self, name: &str) -> Result<bool, MetaError>;
    /// The last event of a tag at or before `at`.
    async fn tag_event_at(&self, repo: &RepoName, tag: &Tag, at: SystemTime) -> Result<Option<TagEvent>, MetaError>;
    /// Every tag of `repo`, sorted.
    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, MetaError>;
    /// Manifests whose subject is `subject`, by digest.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>, MetaError>;
}

/// Milliseconds since the epoch, the time format of every row.
pub(crate) fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The inverse of [`millis`].
pub(crate) fn from_millis(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64)
}
