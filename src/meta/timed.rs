//! A `MetadataStore` (and its transactions) that times every call of the store it wraps
//! and counts its failures (`cairn_database_operation_duration_seconds` and
//! `cairn_database_errors_total`, labelled by `operation`: the method's name, so a few
//! dozen fixed values). `begin` is the wait for a write connection (SQLite's one writer,
//! PostgreSQL's pool); `commit` is the commit. A refusal the caller expects (a conflict, a
//! precondition) is an answer, not a failure: only `MetaError`s that say the database
//! misbehaved are counted.
//!
//! Every method forwards to the wrapped store and nothing else; a method added to either
//! trait is added here too (the compiler says so: there are no default bodies to inherit).

use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use super::*;
use crate::metrics::{DATABASE_DURATION, DATABASE_ERRORS};

/// The store wrapper ([`open`](super::open) returns one).
pub struct Timed {
    inner: std::sync::Arc<dyn MetadataStore>,
}

impl Timed {
    /// Wraps `inner`.
    pub fn new(inner: std::sync::Arc<dyn MetadataStore>) -> Timed {
        Timed { inner }
    }
}

/// A transaction of a [`Timed`] store.
struct TimedTx {
    inner: Box<dyn MetaTx>,
}

async fn timed<R>(operation: &'static str, call: impl Future<Output = Result<R, MetaError>>) -> Result<R, MetaError> {
    let started = Instant::now();
    let r = call.await;
    metrics::histogram!(DATABASE_DURATION, "operation" => operation).record(started.elapsed().as_secs_f64());
    if let Err(e) = &r
        && !matches!(e, MetaError::Conflict(_) | MetaError::NotFound(_))
    {
        metrics::counter!(DATABASE_ERRORS, "operation" => operation).increment(1);
    }
    r
}

#[async_trait]
impl MetadataStore for Timed {
    async fn ping(&self) -> Result<(), MetaError> {
        timed("ping", self.inner.ping()).await
    }

    async fn begin(&self, now: SystemTime) -> Result<Box<dyn MetaTx>, MetaError> {
        timed("begin", self.inner.begin(now)).await.map(|tx| Box::new(TimedTx { inner: tx }) as Box<dyn MetaTx>)
    }

    async fn check_write(&self) -> Result<(), MetaError> {
        timed("check_write", self.inner.check_write()).await
    }

    async fn change_feed(&self) -> Result<Option<ChangeFeed>, MetaError> {
        timed("change_feed", self.inner.change_feed()).await
    }

    async fn shared_key(&self, name: &str, candidate: &[u8], now: SystemTime) -> Result<Option<Vec<u8>>, MetaError> {
        timed("shared_key", self.inner.shared_key(name, candidate, now)).await
    }

    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError> {
        timed("repositories", self.inner.repositories(last, n)).await
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        timed("repository_exists", self.inner.repository_exists(repo)).await
    }

    async fn blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        timed("blob", self.inner.blob(repo, digest)).await
    }

    async fn blob_repositories(&self, digest: &Digest, limit: u32) -> Result<Vec<String>, MetaError> {
        timed("blob_repositories", self.inner.blob_repositories(digest, limit)).await
    }

    async fn create_upload(
        &self,
        repo: &RepoName,
        id: &str,
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<UploadSession, MetaError> {
        timed("create_upload", self.inner.create_upload(repo, id, algorithm, now)).await
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadSession>, MetaError> {
        timed("upload", self.inner.upload(repo, id)).await
    }

    async fn record_segment(
        &self,
        id: &str,
        expected_len: u64,
        segment: &Segment,
        hash_state: &[u8],
        now: SystemTime,
    ) -> Result<bool, MetaError> {
        timed("record_segment", self.inner.record_segment(id, expected_len, segment, hash_state, now)).await
    }

    async fn delete_upload(&self, id: &str, now: SystemTime) -> Result<Option<UploadSession>, MetaError> {
        timed("delete_upload", self.inner.delete_upload(id, now)).await
    }

    async fn expire_uploads(&self, cutoff: SystemTime, now: SystemTime) -> Result<Vec<UploadSession>, MetaError> {
        timed("expire_uploads", self.inner.expire_uploads(cutoff, now)).await
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, MetaError> {
        timed("manifest", self.inner.manifest(repo, reference)).await
    }

    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TagEvent>, MetaError> {
        timed("tag_history", self.inner.tag_history(repo, tag, before, limit)).await
    }

    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError> {
        timed("robot", self.inner.robot(name)).await
    }

    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError> {
        timed("robots", self.inner.robots()).await
    }

    async fn tag_event_at(&self, repo: &RepoName, tag: &Tag, at: SystemTime) -> Result<Option<TagEvent>, MetaError> {
        timed("tag_event_at", self.inner.tag_event_at(repo, tag, at)).await
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, MetaError> {
        timed("tags", self.inner.tags(repo)).await
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>, MetaError> {
        timed("referrers", self.inner.referrers(repo, subject)).await
    }

    async fn parents(&self, repo: &RepoName, child: &Digest, limit: u32) -> Result<Vec<Digest>, MetaError> {
        timed("parents", self.inner.parents(repo, child, limit)).await
    }

    async fn events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
        timed("events", self.inner.events(filter, limit)).await
    }

    async fn ledger_head(&self) -> Result<Option<(i64, String)>, MetaError> {
        timed("ledger_head", self.inner.ledger_head()).await
    }

    async fn ledger_archive_cut(&self) -> Result<Option<(i64, String)>, MetaError> {
        timed("ledger_archive_cut", self.inner.ledger_archive_cut()).await
    }

    async fn ledger_archives(&self) -> Result<Vec<LedgerArchive>, MetaError> {
        timed("ledger_archives", self.inner.ledger_archives()).await
    }

    async fn archive_ledger(&self, seq: i64, hash: &str, file: &str, at: SystemTime) -> Result<u64, MetaError> {
        timed("archive_ledger", self.inner.archive_ledger(seq, hash, file, at)).await
    }

    async fn add_checkpoint(&self, cp: &Checkpoint) -> Result<(), MetaError> {
        timed("add_checkpoint", self.inner.add_checkpoint(cp)).await
    }

    async fn checkpoints(&self, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, MetaError> {
        timed("checkpoints", self.inner.checkpoints(after, limit)).await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, MetaError> {
        timed("last_checkpoint", self.inner.last_checkpoint()).await
    }

    async fn add_pulls(&self, pulls: &[(RepoName, Digest, u64, SystemTime)]) -> Result<(), MetaError> {
        timed("add_pulls", self.inner.add_pulls(pulls)).await
    }

    async fn pulls(&self, repo: &RepoName, digest: &Digest) -> Result<Option<PullStats>, MetaError> {
        timed("pulls", self.inner.pulls(repo, digest)).await
    }

    async fn touch_blobs(&self, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError> {
        timed("touch_blobs", self.inner.touch_blobs(touches)).await
    }

    async fn gc_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        timed("gc_candidates", self.inner.gc_candidates(cutoff, after, limit)).await
    }

    async fn gc_link_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<(&str, &Digest)>,
        limit: u32,
    ) -> Result<Vec<LinkCandidate>, MetaError> {
        timed("gc_link_candidates", self.inner.gc_link_candidates(cutoff, after, limit)).await
    }

    async fn gc_unreferenced(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        timed("gc_unreferenced", self.inner.gc_unreferenced(cutoff, after, limit)).await
    }

    async fn blob_with_mark(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> Result<Option<(BlobRecord, SystemTime)>, MetaError> {
        timed("blob_with_mark", self.inner.blob_with_mark(repo, digest)).await
    }

    async fn touch_linked_blob(&self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        timed("touch_linked_blob", self.inner.touch_linked_blob(repo, digest, at)).await
    }

    async fn gc_lock(&self, holder: &str, now: SystemTime, until: SystemTime) -> Result<bool, MetaError> {
        timed("gc_lock", self.inner.gc_lock(holder, now, until)).await
    }

    async fn gc_lock_holder(&self) -> Result<Option<(String, SystemTime)>, MetaError> {
        timed("gc_lock_holder", self.inner.gc_lock_holder()).await
    }

    async fn gc_lock_take_over(&self, holder: &str, dead: &str, until: SystemTime) -> Result<bool, MetaError> {
        timed("gc_lock_take_over", self.inner.gc_lock_take_over(holder, dead, until)).await
    }

    async fn gc_unlock(&self, holder: &str) -> Result<(), MetaError> {
        timed("gc_unlock", self.inner.gc_unlock(holder)).await
    }

    async fn upload_garbage(&self, limit: u32) -> Result<Vec<String>, MetaError> {
        timed("upload_garbage", self.inner.upload_garbage(limit)).await
    }

    async fn forget_upload_garbage(&self, ids: &[String]) -> Result<(), MetaError> {
        timed("forget_upload_garbage", self.inner.forget_upload_garbage(ids)).await
    }

    async fn repository_summaries(&self, after: Option<&str>, limit: u32) -> Result<Vec<RepositorySummary>, MetaError> {
        timed("repository_summaries", self.inner.repository_summaries(after, limit)).await
    }

    async fn storage_totals(&self) -> Result<StorageTotals, MetaError> {
        timed("storage_totals", self.inner.storage_totals()).await
    }

    async fn tags_pointing_at(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<(Tag, SystemTime)>, MetaError> {
        timed("tags_pointing_at", self.inner.tags_pointing_at(repo, digest)).await
    }

    async fn digest_tag_history(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: u32,
    ) -> Result<Vec<DigestTagEvent>, MetaError> {
        timed("digest_tag_history", self.inner.digest_tag_history(repo, digest, limit)).await
    }

    async fn manifest_stored_at(&self, repo: &RepoName, digest: &Digest) -> Result<Option<SystemTime>, MetaError> {
        timed("manifest_stored_at", self.inner.manifest_stored_at(repo, digest)).await
    }

    async fn retention_snapshot(&self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        timed("retention_snapshot", self.inner.retention_snapshot(repo)).await
    }

    async fn dump(&self) -> Result<Box<dyn copy::Dump>, MetaError> {
        timed("dump", self.inner.dump()).await
    }

    async fn load(&self) -> Result<Box<dyn copy::Load>, MetaError> {
        timed("load", self.inner.load()).await
    }

    async fn replace_shared_key(&self, name: &str, pkcs8: &[u8], now: SystemTime) -> Result<bool, MetaError> {
        timed("replace_shared_key", self.inner.replace_shared_key(name, pkcs8, now)).await
    }
}

#[async_trait]
impl MetaTx for TimedTx {
    async fn ensure_repository(&mut self, repo: &RepoName) -> Result<bool, MetaError> {
        timed("ensure_repository", self.inner.ensure_repository(repo)).await
    }

    async fn first_missing(
        &mut self,
        repo: &RepoName,
        kind: RefKind,
        digests: &[Digest],
    ) -> Result<Option<Digest>, MetaError> {
        timed("first_missing", self.inner.first_missing(repo, kind, digests)).await
    }

    async fn insert_manifest(
        &mut self,
        repo: &RepoName,
        m: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
    ) -> Result<bool, MetaError> {
        timed("insert_manifest", self.inner.insert_manifest(repo, m, blobs, children)).await
    }

    async fn ensure_repository_and_insert_manifest(
        &mut self,
        repo: &RepoName,
        m: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
        tag: Option<&Tag>,
    ) -> Result<ManifestInsert, MetaError> {
        timed("insert_manifest", self.inner.ensure_repository_and_insert_manifest(repo, m, blobs, children, tag)).await
    }

    async fn manifest_exists(&mut self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        timed("manifest_exists", self.inner.manifest_exists(repo, digest)).await
    }

    async fn tag_for_update(&mut self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, MetaError> {
        timed("tag_for_update", self.inner.tag_for_update(repo, tag)).await
    }

    async fn tags_of(&mut self, repo: &RepoName, digest: &Digest) -> Result<Vec<Tag>, MetaError> {
        timed("tags_of", self.inner.tags_of(repo, digest)).await
    }

    async fn set_tag(
        &mut self,
        repo: &RepoName,
        tag: &Tag,
        from: Option<&Digest>,
        to: &Digest,
        actor: &Actor,
    ) -> Result<(), MetaError> {
        timed("set_tag", self.inner.set_tag(repo, tag, from, to, actor)).await
    }

    async fn remove_tag(&mut self, repo: &RepoName, tag: &Tag, from: &Digest, actor: &Actor) -> Result<(), MetaError> {
        timed("remove_tag", self.inner.remove_tag(repo, tag, from, actor)).await
    }

    async fn holder(&mut self, repo: &RepoName, kind: RefKind, digest: &Digest) -> Result<Option<Holder>, MetaError> {
        timed("holder", self.inner.holder(repo, kind, digest)).await
    }

    async fn remove_manifest(&mut self, repo: &RepoName, digest: &Digest) -> Result<(), MetaError> {
        timed("remove_manifest", self.inner.remove_manifest(repo, digest)).await
    }

    async fn link_blob(&mut self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<(), MetaError> {
        timed("link_blob", self.inner.link_blob(repo, digest, at)).await
    }

    async fn blob_linked(&mut self, repo: &RepoName, digest: &Digest) -> Result<bool, MetaError> {
        timed("blob_linked", self.inner.blob_linked(repo, digest)).await
    }

    async fn unlink_blob(&mut self, repo: &RepoName, digest: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        timed("unlink_blob", self.inner.unlink_blob(repo, digest, at)).await
    }

    async fn delete_unlinked_blob(
        &mut self,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<Option<BlobRecord>, MetaError> {
        timed("delete_unlinked_blob", self.inner.delete_unlinked_blob(digest, cutoff)).await
    }

    async fn unlink_unreferenced(
        &mut self,
        repo: &RepoName,
        digest: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool, MetaError> {
        timed("unlink_unreferenced", self.inner.unlink_unreferenced(repo, digest, cutoff)).await
    }

    async fn commit_upload_and_link(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
        at: SystemTime,
    ) -> Result<(CommitUpload, Option<(RepoName, bool)>), MetaError> {
        timed("commit_upload", self.inner.commit_upload_and_link(id, expected_len, blob, at)).await
    }

    async fn commit_upload(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
    ) -> Result<(CommitUpload, Option<RepoName>), MetaError> {
        timed("commit_upload", self.inner.commit_upload(id, expected_len, blob)).await
    }

    async fn retention_snapshot(&mut self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        timed("retention_snapshot", self.inner.retention_snapshot(repo)).await
    }

    async fn tag_targets(&mut self, repo: &RepoName, tag: &Tag, limit: u32) -> Result<Vec<Digest>, MetaError> {
        timed("tag_targets", self.inner.tag_targets(repo, tag, limit)).await
    }

    async fn create_robot(&mut self, robot: &RobotRecord) -> Result<bool, MetaError> {
        timed("create_robot", self.inner.create_robot(robot)).await
    }

    async fn revoke_robot(&mut self, name: &str, at: SystemTime) -> Result<bool, MetaError> {
        timed("revoke_robot", self.inner.revoke_robot(name, at)).await
    }

    async fn append_events(&mut self, events: Vec<NewEvent>, at: SystemTime) -> Result<(), MetaError> {
        timed("append_events", self.inner.append_events(events, at)).await
    }

    async fn commit(self: Box<Self>) -> Result<(), MetaError> {
        timed("commit", self.inner.commit()).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        timed("rollback", self.inner.rollback()).await
    }
}
