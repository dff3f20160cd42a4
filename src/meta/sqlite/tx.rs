//! `MetaTx` on SQLite: one member (a savepoint) of a group transaction on the single write
//! connection (`group.rs`). Each method is one or two statements; the decisions between them
//! are the service's.

use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::{Row, Sqlite};

use super::{digest, digest_list, group, json, millis, retention};
use crate::audit::NewEvent;
use crate::meta::{
    Actor, BlobLocation, BlobRecord, CommitUpload, Holder, ManifestInsert, ManifestRecord, MetaError, MetaTx, RefKind,
    RetentionSnapshot, RobotRecord, TagAction,
};
use crate::oci::{Digest, RepoName, Tag};

/// The statement that records a tag change (`change_tag` binds its values).
macro_rules! record_tag_history {
    () => {
        "INSERT INTO tag_history (repo, tag, action, from_digest, to_digest, actor, address, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    };
}

/// A query on SQLite.
type SqliteQuery<'q> = sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>;

/// A write transaction.
pub(super) struct SqliteTx {
    /// Its turn on the write connection (derefs to the connection).
    pub(super) tx: group::Turn,
    /// The time every row of this transaction is stamped with (ms since the epoch).
    pub(super) now: i64,
    /// Its ledger events (each with its time), appended with its group's (`group.rs`).
    pub(super) events: Vec<(NewEvent, i64)>,
}

/// True for SQLite's "FOREIGN KEY constraint failed": the schema refused to orphan a reference.
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
        || d.message().contains("FOREIGN KEY constraint failed"))
}

fn tag(s: String) -> Result<Tag, MetaError> {
    Tag::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

impl SqliteTx {
    /// Moves a blob's GC mark forward to `at` (never back).
    async fn touch(&mut self, d: &Digest, at: SystemTime) -> Result<(), MetaError> {
        sqlx::query("UPDATE blobs SET touched_at = max(touched_at, ?) WHERE digest = ?")
            .bind(millis(at))
            .bind(d.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Runs `sql`: a statement on `tags` (whose values `bind` adds) followed by
    /// `record_tag_history!()`, so the change and its history row take one round trip.
    #[allow(clippy::too_many_arguments)]
    async fn change_tag<'q>(
        &mut self,
        sql: &'q str,
        bind: impl FnOnce(SqliteQuery<'q>) -> SqliteQuery<'q>,
        repo: &'q RepoName,
        tag: &'q Tag,
        action: TagAction,
        (from, to): (Option<&'q Digest>, Option<&'q Digest>),
        actor: &'q Actor,
    ) -> Result<(), MetaError> {
        let action = match action {
            TagAction::Create => "create",
            TagAction::Move => "move",
            TagAction::Delete => "delete",
        };
        let done = bind(sqlx::query(sql))
            .bind(repo.as_str())
            .bind(tag.as_str())
            .bind(action)
            .bind(from.map(Digest::as_str))
            .bind(to.map(Digest::as_str))
            .bind(&actor.name)
            .bind(&actor.address)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        // The change and the history row; a tag already gone changed nothing (a concurrent
        // writer removed it) and the caller's transaction rolls the history row back.
        if done.rows_affected() < 2 {
            return Err(MetaError::NotFound(format!("tag {tag} of {repo}")));
        }
        Ok(())
    }

    /// The manifest and its references (and, with `repository_at`, the repository row first)
    /// in one round trip to the write connection (the serial path every write shares):
    /// (repository created, manifest stored). The reference inserts run whether or not the
    /// manifest was new: for a manifest already stored they find their rows and change
    /// nothing. Their foreign keys refuse a blob or child the repository lacks: `NotFound`.
    async fn store_manifest(
        &mut self,
        repository_at: Option<i64>,
        repo: &RepoName,
        r: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
        tag: Option<&Tag>,
    ) -> Result<ManifestInsert, MetaError> {
        let annotations = r.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        // Numbered: ?1 repo, ?2 the tag (NULL: none), ?3 repository time, ?4 digest, ?5 blobs,
        // ?6 children, ?7..?13 the manifest's columns. sqlx binds every number a statement
        // skips below its highest positionally, from a counter that runs on across the batch,
        // and stops binding a statement at the first that would pass the last value: so the
        // skipped numbers of all statements together (10 here) must not exceed the values
        // (13), or a later statement's parameters go unbound (NULL); the contract suite fails
        // if the tag's is. The tag's read is locked: BEGIN IMMEDIATE holds the write lock.
        let sql = concat!(
            "SELECT 'tag', digest FROM tags WHERE repo = ?1 AND name = ?2;",
            "INSERT INTO repositories (name, created_at) SELECT ?1, ?3 WHERE ?3 IS NOT NULL
             ON CONFLICT DO NOTHING RETURNING 'repository';",
            "INSERT INTO manifests (repo, digest, media_type, size, body, artifact_type, subject, annotations, created_at)
             VALUES (?1, ?4, ?7, ?8, ?9, ?10, ?11, ?12, ?13) ON CONFLICT DO NOTHING RETURNING 'manifest';",
            "INSERT INTO manifest_blobs (repo, manifest, blob)
             SELECT ?1, ?4, value FROM json_each(?5) WHERE true ON CONFLICT DO NOTHING;",
            "INSERT INTO manifest_children (repo, manifest, child)
             SELECT ?1, ?4, value FROM json_each(?6) WHERE true ON CONFLICT DO NOTHING"
        );
        let rows = sqlx::query(sql)
            .bind(repo.as_str())
            .bind(tag.map(Tag::as_str))
            .bind(repository_at)
            .bind(r.digest.as_str())
            .bind(digest_list(blobs))
            .bind(digest_list(children))
            .bind(&r.media_type)
            .bind(r.body.len() as i64)
            .bind(r.body.as_ref())
            .bind(&r.artifact_type)
            .bind(r.subject.as_ref().map(Digest::as_str))
            .bind(annotations)
            .bind(self.now)
            .fetch_all(&mut *self.tx)
            .await;
        let rows = match rows {
            Ok(rows) => rows,
            Err(e) if is_foreign_key_violation(&e) => return Err(MetaError::dangling_reference(repo, &r.digest)),
            Err(e) => return Err(e.into()),
        };
        let said = |what: &str| labelled(&rows, what);
        let tag = match said("tag") {
            Some(row) => Some(digest(row.try_get(1)?)?),
            None => None,
        };
        Ok(ManifestInsert {
            repository_created: said("repository").is_some(),
            inserted: said("manifest").is_some(),
            tag,
        })
    }

    /// A tag that points at `manifest`, or else at an index that lists it.
    async fn holder_tag(&mut self, repo: &RepoName, manifest: &str) -> Result<Option<Tag>, MetaError> {
        let name: Option<String> = sqlx::query_scalar(
            "SELECT name FROM (
                SELECT name, 0 AS via FROM tags WHERE repo = ?1 AND digest = ?2
                UNION ALL
                SELECT t.name, 1 FROM manifest_children c JOIN tags t ON t.repo = c.repo AND t.digest = c.manifest
                 WHERE c.repo = ?1 AND c.child = ?2)
             ORDER BY via, name LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(manifest)
        .fetch_optional(&mut *self.tx)
        .await?;
        name.map(tag).transpose()
    }
}

/// The row of a statement batch's results whose first column is `what`: the batches here
/// label each statement's rows (`RETURNING 'manifest'`, `SELECT 'tag', digest …`).
fn labelled<'r>(rows: &'r [sqlx::sqlite::SqliteRow], what: &str) -> Option<&'r sqlx::sqlite::SqliteRow> {
    rows.iter().find(|row| row.try_get::<String, _>(0).is_ok_and(|w| w == what))
}

#[async_trait]
impl MetaTx for SqliteTx {
    async fn ensure_repository(&mut self, repo: &RepoName) -> Result<bool, MetaError> {
        let done = sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn first_missing(
        &mut self,
        repo: &RepoName,
        kind: RefKind,
        digests: &[Digest],
    ) -> Result<Option<Digest>, MetaError> {
        if digests.is_empty() {
            return Ok(None);
        }
        // One statement whatever the number of layers.
        let sql = match kind {
            RefKind::Blob => {
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS
                 (SELECT 1 FROM repo_blobs WHERE repo = ?2 AND digest = j.value) LIMIT 1"
            }
            RefKind::Child => {
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS
                 (SELECT 1 FROM manifests WHERE repo = ?2 AND digest = j.value) LIMIT 1"
            }
        };
        let missing: Option<String> = sqlx::query_scalar(sql)
            .bind(digest_list(digests))
            .bind(repo.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        missing.map(digest).transpose()
    }

    async fn insert_manifest(
        &mut self,
        repo: &RepoName,
        r: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
    ) -> Result<bool, MetaError> {
        Ok(self.store_manifest(None, repo, r, blobs, children, None).await?.inserted)
    }

    async fn ensure_repository_and_insert_manifest(
        &mut self,
        repo: &RepoName,
        r: &ManifestRecord,
        blobs: &[Digest],
        children: &[Digest],
        tag: Option<&Tag>,
    ) -> Result<ManifestInsert, MetaError> {
        self.store_manifest(Some(self.now), repo, r, blobs, children, tag).await
    }

    async fn manifest_exists(&mut self, repo: &RepoName, d: &Digest) -> Result<bool, MetaError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(found.is_some())
    }

    async fn tag_for_update(&mut self, repo: &RepoName, t: &Tag) -> Result<Option<Digest>, MetaError> {
        // BEGIN IMMEDIATE holds the database's write lock: every read here is locked.
        let current: Option<String> = sqlx::query_scalar("SELECT digest FROM tags WHERE repo = ? AND name = ?")
            .bind(repo.as_str())
            .bind(t.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        current.map(digest).transpose()
    }

    async fn tags_of(&mut self, repo: &RepoName, d: &Digest) -> Result<Vec<Tag>, MetaError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tags WHERE repo = ? AND digest = ? ORDER BY name")
                .bind(repo.as_str())
                .bind(d.as_str())
                .fetch_all(&mut *self.tx)
                .await?;
        names.into_iter().map(tag).collect()
    }

    async fn set_tag(
        &mut self,
        repo: &RepoName,
        t: &Tag,
        from: Option<&Digest>,
        to: &Digest,
        actor: &Actor,
    ) -> Result<(), MetaError> {
        let now = self.now;
        let action = if from.is_some() { TagAction::Move } else { TagAction::Create };
        self.change_tag(
            concat!(
                "INSERT INTO tags (repo, name, digest, updated_at) VALUES (?, ?, ?, ?)
                 ON CONFLICT (repo, name) DO UPDATE SET digest = excluded.digest, updated_at = excluded.updated_at;",
                record_tag_history!()
            ),
            |q| q.bind(repo.as_str()).bind(t.as_str()).bind(to.as_str()).bind(now),
            repo,
            t,
            action,
            (from, Some(to)),
            actor,
        )
        .await
    }

    async fn remove_tag(&mut self, repo: &RepoName, t: &Tag, from: &Digest, actor: &Actor) -> Result<(), MetaError> {
        self.change_tag(
            concat!("DELETE FROM tags WHERE repo = ? AND name = ?;", record_tag_history!()),
            |q| q.bind(repo.as_str()).bind(t.as_str()),
            repo,
            t,
            TagAction::Delete,
            (Some(from), None),
            actor,
        )
        .await
    }

    async fn holder(&mut self, repo: &RepoName, kind: RefKind, d: &Digest) -> Result<Option<Holder>, MetaError> {
        let sql = match kind {
            RefKind::Blob => {
                "SELECT manifest FROM manifest_blobs WHERE repo = ?1 AND blob = ?2 ORDER BY manifest LIMIT 16"
            }
            RefKind::Child => {
                "SELECT manifest FROM manifest_children WHERE repo = ?1 AND child = ?2 ORDER BY manifest LIMIT 16"
            }
        };
        let holders: Vec<String> =
            sqlx::query_scalar(sql).bind(repo.as_str()).bind(d.as_str()).fetch_all(&mut *self.tx).await?;
        let mut first = None;
        for h in holders {
            let tag = self.holder_tag(repo, &h).await?;
            let found = Holder { manifest: digest(h)?, tag: tag.clone() };
            if tag.is_some() {
                return Ok(Some(found));
            }
            first.get_or_insert(found);
        }
        Ok(first)
    }

    async fn remove_manifest(&mut self, repo: &RepoName, d: &Digest) -> Result<(), MetaError> {
        let done = sqlx::query("DELETE FROM manifests WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .execute(&mut *self.tx)
            .await;
        match done {
            Ok(done) if done.rows_affected() == 0 => Err(MetaError::NotFound(format!("manifest {d} of {repo}"))),
            Ok(_) => Ok(()),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(MetaError::Corrupt(format!("manifest {d} of {repo} is still referenced; the schema refused")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn link_blob(&mut self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<(), MetaError> {
        sqlx::query("INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(d.as_str())
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        self.touch(d, at).await
    }

    async fn blob_linked(&mut self, repo: &RepoName, d: &Digest) -> Result<bool, MetaError> {
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM repo_blobs WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(found.is_some())
    }

    async fn unlink_blob(&mut self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .execute(&mut *self.tx)
            .await;
        match done {
            Ok(done) if done.rows_affected() > 0 => {
                self.touch(d, at).await?;
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(MetaError::Corrupt(format!("blob {d} of {repo} is still referenced; the schema refused")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_unlinked_blob(&mut self, d: &Digest, cutoff: SystemTime) -> Result<Option<BlobRecord>, MetaError> {
        let row = sqlx::query(
            "DELETE FROM blobs WHERE digest = ?1 AND touched_at < ?2
               AND NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = ?1)
             RETURNING size, location",
        )
        .bind(d.as_str())
        .bind(millis(cutoff))
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let location: String = row.get("location");
        let location: BlobLocation = json(&location)?;
        sqlx::query("INSERT INTO upload_garbage (upload, since) VALUES (?, ?) ON CONFLICT DO NOTHING")
            .bind(&location.upload)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(BlobRecord { digest: d.clone(), size: row.get::<i64, _>("size") as u64, location }))
    }

    async fn unlink_unreferenced(
        &mut self,
        repo: &RepoName,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2
               AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE repo = ?1 AND blob = ?2)
               AND EXISTS (SELECT 1 FROM blobs WHERE digest = ?2 AND touched_at < ?3)",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .bind(millis(cutoff))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit_upload(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
    ) -> Result<(CommitUpload, Option<RepoName>), MetaError> {
        let repo: Option<String> = sqlx::query_scalar("DELETE FROM uploads WHERE id = ? AND len = ? RETURNING repo")
            .bind(id)
            .bind(expected_len as i64)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(repo) = repo else {
            let len: Option<i64> = sqlx::query_scalar("SELECT len FROM uploads WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
            return Ok((CommitUpload::UploadGone { len: len.map(|n| n as u64) }, None));
        };
        let repo = RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let location = serde_json::to_string(&blob.location).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO blobs (digest, size, location, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(blob.digest.as_str())
        .bind(blob.size as i64)
        .bind(location)
        .bind(self.now)
        .execute(&mut *self.tx)
        .await?
        .rows_affected();
        let outcome = if inserted == 1 { CommitUpload::Created } else { CommitUpload::AlreadyStored };
        if outcome == CommitUpload::AlreadyStored {
            // This upload's objects duplicate a stored blob: garbage (removed now, or by GC).
            sqlx::query("INSERT INTO upload_garbage (upload, since) VALUES (?, ?) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(self.now)
                .execute(&mut *self.tx)
                .await?;
        }
        Ok((outcome, Some(repo)))
    }

    async fn commit_upload_and_link(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
        at: SystemTime,
    ) -> Result<(CommitUpload, Option<(RepoName, bool)>), MetaError> {
        // The session, and its length if it is still there but moved on.
        let rows = sqlx::query(
            "DELETE FROM uploads WHERE id = ?1 AND len = ?2 RETURNING 'owner', repo;
             SELECT 'len', len FROM uploads WHERE id = ?1",
        )
        .bind(id)
        .bind(expected_len as i64)
        .fetch_all(&mut *self.tx)
        .await?;
        let said = |what: &str| labelled(&rows, what);
        let Some(owner) = said("owner") else {
            let len = said("len").map(|row| row.try_get::<i64, _>(1)).transpose()?;
            return Ok((CommitUpload::UploadGone { len: len.map(|n| n as u64) }, None));
        };
        let owner = RepoName::parse(&owner.try_get::<String, _>(1)?).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let location = serde_json::to_string(&blob.location).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        // What `commit_upload`, `ensure_repository` and `link_blob` do, in one batch. Plain
        // `?`s: sqlx binds them in order across the batch.
        let rows = sqlx::query(
            "SELECT 'duplicate' FROM blobs WHERE digest = ?;
             INSERT INTO upload_garbage (upload, since) SELECT ?, ? WHERE EXISTS (SELECT 1 FROM blobs WHERE digest = ?)
               ON CONFLICT DO NOTHING;
             INSERT INTO blobs (digest, size, location, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING;
             INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING RETURNING 'repository';
             INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING;
             UPDATE blobs SET touched_at = max(touched_at, ?) WHERE digest = ?",
        )
        .bind(blob.digest.as_str())
        .bind(id)
        .bind(self.now)
        .bind(blob.digest.as_str())
        .bind(blob.digest.as_str())
        .bind(blob.size as i64)
        .bind(location)
        .bind(self.now)
        .bind(owner.as_str())
        .bind(self.now)
        .bind(owner.as_str())
        .bind(blob.digest.as_str())
        .bind(self.now)
        .bind(millis(at))
        .bind(blob.digest.as_str())
        .fetch_all(&mut *self.tx)
        .await?;
        let said = |what: &str| labelled(&rows, what).is_some();
        let outcome = if said("duplicate") { CommitUpload::AlreadyStored } else { CommitUpload::Created };
        let created = said("repository");
        Ok((outcome, Some((owner, created))))
    }

    async fn retention_snapshot(&mut self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        retention::snapshot(&mut self.tx, repo).await
    }

    async fn tag_targets(&mut self, repo: &RepoName, t: &Tag, limit: u32) -> Result<Vec<Digest>, MetaError> {
        retention::tag_targets(&mut self.tx, repo, t, limit).await
    }

    async fn create_robot(&mut self, r: &RobotRecord) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "INSERT INTO robots (name, secret_sha256, roles, grants, created_at, expires_at)
             VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(&r.name)
        .bind(&r.secret_sha256)
        .bind(serde_json::to_string(&r.roles).map_err(|e| MetaError::Corrupt(e.to_string()))?)
        .bind(serde_json::to_string(&r.grants).map_err(|e| MetaError::Corrupt(e.to_string()))?)
        .bind(millis(r.created_at))
        .bind(r.expires_at.map(millis))
        .execute(&mut *self.tx)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_robot(&mut self, name: &str, at: SystemTime) -> Result<bool, MetaError> {
        let done = sqlx::query("UPDATE robots SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
            .bind(millis(at))
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_events(&mut self, events: Vec<NewEvent>, at: SystemTime) -> Result<(), MetaError> {
        // Linked and stored with the group's, as the last statements before its COMMIT: in
        // release order, so one transaction's events stay adjacent.
        let at = millis(at);
        self.events.extend(events.into_iter().map(|e| (e, at)));
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), MetaError> {
        self.tx.commit(self.events).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        self.tx.rollback().await
    }
}
