//! `MetaTx` on PostgreSQL: a READ COMMITTED transaction whose decisions rest on row locks.
//! `tag_for_update` and `tags_of` lock the tag rows they read (`FOR UPDATE`); a tag that does
//! not exist yet cannot be locked, so creating one is a plain INSERT and of two nodes creating
//! it at once the second fails with a unique violation (`Conflict`: the service runs again and
//! finds the tag). Writes that depend on what was read carry it as a condition (`set_tag` moves
//! only from `from`), so a row changed or gone meanwhile is `NotFound`, never overwritten.
//! References are foreign keys: a concurrent delete and a new reference meet in the key locks
//! and one of them fails (`Conflict`).

use std::time::SystemTime;

use async_trait::async_trait;
use sqlx::{Postgres, Row, Transaction};

use super::faults::is_foreign_key_violation;
use super::{digest, digest_array, json, ledger, millis, retention};
use crate::audit::NewEvent;
use crate::meta::{
    Actor, BlobLocation, BlobRecord, CommitUpload, Holder, ManifestRecord, MetaError, MetaTx, RefKind,
    RetentionSnapshot, RobotRecord, TagAction,
};
use crate::oci::{Digest, RepoName, Tag};

/// Appended to a statement on `tags` (a CTE named `changed` that returns a row when the tag
/// changed): the tag history row, written only when the change happened. Parameters: `$1`
/// repo, `$2` tag, `$3` action, `$4` from, `$5` to, `$6` actor, `$7` address, `$8` time.
const RECORD_TAG_HISTORY: &str =
    "INSERT INTO tag_history (repo, tag, action, from_digest, to_digest, actor, address, at)
     SELECT $1, $2, $3, $4, $5, $6, $7, $8 FROM changed";

/// A write transaction.
pub(super) struct PgTx {
    pub(super) tx: Transaction<'static, Postgres>,
    /// The time every row of this transaction is stamped with (ms since the epoch).
    pub(super) now: i64,
    /// Repositories whose manifests or tags this transaction changed: announced on the
    /// change feed's channel as it commits (`super::notify`).
    pub(super) changed: std::collections::BTreeSet<String>,
}

fn tag(s: String) -> Result<Tag, MetaError> {
    Tag::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn action_name(a: TagAction) -> &'static str {
    match a {
        TagAction::Create => "create",
        TagAction::Move => "move",
        TagAction::Delete => "delete",
    }
}

impl PgTx {
    /// Moves a blob's GC mark forward to `at` (never back).
    async fn touch(&mut self, d: &Digest, at: SystemTime) -> Result<(), MetaError> {
        sqlx::query("UPDATE blobs SET touched_at = greatest(touched_at, $1) WHERE digest = $2")
            .bind(millis(at))
            .bind(d.as_str())
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Runs `changed` (a statement on `tags`, with the parameters of `RECORD_TAG_HISTORY`, that
    /// returns a row when it changed the tag) and the history row in one statement; a tag that did not
    /// change (gone, or moved by another writer) is `NotFound` and nothing is recorded.
    async fn change_tag(
        &mut self,
        changed: &str,
        repo: &RepoName,
        t: &Tag,
        action: TagAction,
        (from, to): (Option<&Digest>, Option<&Digest>),
        actor: &Actor,
    ) -> Result<(), MetaError> {
        self.changed.insert(repo.as_str().to_owned());
        let sql = format!("WITH changed AS ({changed}) {RECORD_TAG_HISTORY}");
        let done = sqlx::query(&sql)
            .bind(repo.as_str())
            .bind(t.as_str())
            .bind(action_name(action))
            .bind(from.map(Digest::as_str))
            .bind(to.map(Digest::as_str))
            .bind(&actor.name)
            .bind(&actor.address)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        if done.rows_affected() == 0 {
            return Err(MetaError::NotFound(format!("tag {t} of {repo}")));
        }
        Ok(())
    }

    /// A tag that points at `manifest`, or else at an index that lists it.
    async fn holder_tag(&mut self, repo: &RepoName, manifest: &str) -> Result<Option<Tag>, MetaError> {
        let name: Option<String> = sqlx::query_scalar(
            "SELECT name FROM (
                SELECT name, 0 AS via FROM tags WHERE repo = $1 AND digest = $2
                UNION ALL
                SELECT t.name, 1 FROM manifest_children c JOIN tags t ON t.repo = c.repo AND t.digest = c.manifest
                 WHERE c.repo = $1 AND c.child = $2) h
             ORDER BY via, name LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(manifest)
        .fetch_optional(&mut *self.tx)
        .await?;
        name.map(tag).transpose()
    }
}

#[async_trait]
impl MetaTx for PgTx {
    async fn ensure_repository(&mut self, repo: &RepoName) -> Result<bool, MetaError> {
        let done = sqlx::query("INSERT INTO repositories (name, created_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
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
        // One statement whatever the number of layers, in the order given.
        let sql = match kind {
            RefKind::Blob => {
                "SELECT j.d FROM unnest($1::text[]) WITH ORDINALITY j(d, i) WHERE NOT EXISTS
                 (SELECT 1 FROM repo_blobs WHERE repo = $2 AND digest = j.d) ORDER BY j.i LIMIT 1"
            }
            RefKind::Child => {
                "SELECT j.d FROM unnest($1::text[]) WITH ORDINALITY j(d, i) WHERE NOT EXISTS
                 (SELECT 1 FROM manifests WHERE repo = $2 AND digest = j.d) ORDER BY j.i LIMIT 1"
            }
        };
        let missing: Option<String> = sqlx::query_scalar(sql)
            .bind(digest_array(digests))
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
        self.changed.insert(repo.as_str().to_owned());
        let annotations = r.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        // The manifest and its references in one statement; the references' foreign keys lock
        // what they point at (KEY SHARE) until commit, so a concurrent unlink or delete waits
        // and then fails instead of orphaning them.
        let inserted = sqlx::query(
            "WITH m AS (
                INSERT INTO manifests (repo, digest, media_type, size, body, artifact_type, subject, annotations, created_at)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING repo, digest),
             b AS (INSERT INTO manifest_blobs (repo, manifest, blob)
                   SELECT m.repo, m.digest, x FROM m, unnest($10::text[]) x ON CONFLICT DO NOTHING),
             c AS (INSERT INTO manifest_children (repo, manifest, child)
                   SELECT m.repo, m.digest, x FROM m, unnest($11::text[]) x ON CONFLICT DO NOTHING)
             SELECT count(*) FROM m",
        )
        .bind(repo.as_str())
        .bind(r.digest.as_str())
        .bind(&r.media_type)
        .bind(r.body.len() as i64)
        .bind(r.body.as_ref())
        .bind(&r.artifact_type)
        .bind(r.subject.as_ref().map(Digest::as_str))
        .bind(annotations)
        .bind(self.now)
        .bind(digest_array(blobs))
        .bind(digest_array(children))
        .fetch_one(&mut *self.tx)
        .await;
        match inserted {
            Ok(row) => Ok(row.try_get::<i64, _>(0)? == 1),
            Err(e) if is_foreign_key_violation(&e) => Err(MetaError::dangling_reference(repo, &r.digest)),
            Err(e) => Err(e.into()),
        }
    }

    async fn manifest_exists(&mut self, repo: &RepoName, d: &Digest) -> Result<bool, MetaError> {
        let found: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2)")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_one(&mut *self.tx)
            .await?;
        Ok(found)
    }

    async fn tag_for_update(&mut self, repo: &RepoName, t: &Tag) -> Result<Option<Digest>, MetaError> {
        // Locked until commit: another node's move or delete of this tag waits for us, and we
        // see the latest committed digest (READ COMMITTED re-reads a row it waited for).
        let current: Option<String> =
            sqlx::query_scalar("SELECT digest FROM tags WHERE repo = $1 AND name = $2 FOR UPDATE")
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        current.map(digest).transpose()
    }

    async fn tags_of(&mut self, repo: &RepoName, d: &Digest) -> Result<Vec<Tag>, MetaError> {
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tags WHERE repo = $1 AND digest = $2 ORDER BY name FOR UPDATE")
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
        match from {
            // A new tag: a plain INSERT, so a concurrent create of the same tag is a unique
            // violation (`Conflict`) and never an overwrite.
            None => {
                self.change_tag(
                    "INSERT INTO tags (repo, name, digest, updated_at) VALUES ($1, $2, $5, $8) RETURNING 1",
                    repo,
                    t,
                    TagAction::Create,
                    (None, Some(to)),
                    actor,
                )
                .await
            }
            // A move only from the digest the caller decided on.
            Some(from) => {
                self.change_tag(
                    "UPDATE tags SET digest = $5, updated_at = $8 WHERE repo = $1 AND name = $2 AND digest = $4
                     RETURNING 1",
                    repo,
                    t,
                    TagAction::Move,
                    (Some(from), Some(to)),
                    actor,
                )
                .await
            }
        }
    }

    async fn remove_tag(&mut self, repo: &RepoName, t: &Tag, from: &Digest, actor: &Actor) -> Result<(), MetaError> {
        self.change_tag(
            "DELETE FROM tags WHERE repo = $1 AND name = $2 AND digest = $4 RETURNING 1",
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
                "SELECT manifest FROM manifest_blobs WHERE repo = $1 AND blob = $2 ORDER BY manifest LIMIT 16"
            }
            RefKind::Child => {
                "SELECT manifest FROM manifest_children WHERE repo = $1 AND child = $2 ORDER BY manifest LIMIT 16"
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
        self.changed.insert(repo.as_str().to_owned());
        let done = sqlx::query("DELETE FROM manifests WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(d.as_str())
            .execute(&mut *self.tx)
            .await;
        match done {
            Ok(done) if done.rows_affected() == 0 => Err(MetaError::NotFound(format!("manifest {d} of {repo}"))),
            Ok(_) => Ok(()),
            // The caller checked `holder` in this transaction; on PostgreSQL another node can
            // add a reference after that read, so the refusal is a race (`Conflict`: the next
            // attempt sees the reference), not a 500.
            Err(e) if is_foreign_key_violation(&e) => Err(MetaError::Conflict(format!(
                "manifest {d} of {repo} is still referenced; the schema refused ({e})"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    async fn link_blob(&mut self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<(), MetaError> {
        sqlx::query("INSERT INTO repo_blobs (repo, digest, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
            .bind(repo.as_str())
            .bind(d.as_str())
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        self.touch(d, at).await
    }

    async fn blob_linked(&mut self, repo: &RepoName, d: &Digest) -> Result<bool, MetaError> {
        let found: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2)")
                .bind(repo.as_str())
                .bind(d.as_str())
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(found)
    }

    async fn unlink_blob(&mut self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2")
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
            // As in `remove_manifest`: a manifest stored by another node after `holder` read.
            Err(e) if is_foreign_key_violation(&e) => {
                Err(MetaError::Conflict(format!("blob {d} of {repo} is still referenced; the schema refused ({e})")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_unlinked_blob(&mut self, d: &Digest, cutoff: SystemTime) -> Result<Option<BlobRecord>, MetaError> {
        // `touched_at` is re-checked on the row's latest version after any wait; a link made
        // meanwhile by another node makes the delete fail its foreign key (`Conflict`).
        let row = sqlx::query(
            "DELETE FROM blobs WHERE digest = $1 AND touched_at < $2
               AND NOT EXISTS (SELECT 1 FROM repo_blobs WHERE digest = $1)
             RETURNING size, location",
        )
        .bind(d.as_str())
        .bind(millis(cutoff))
        .fetch_optional(&mut *self.tx)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let location: String = row.try_get("location")?;
        let location: BlobLocation = json(&location)?;
        sqlx::query("INSERT INTO upload_garbage (upload, since) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(&location.upload)
            .bind(self.now)
            .execute(&mut *self.tx)
            .await?;
        Ok(Some(BlobRecord { digest: d.clone(), size: row.try_get::<i64, _>("size")? as u64, location }))
    }

    async fn unlink_unreferenced(
        &mut self,
        repo: &RepoName,
        d: &Digest,
        cutoff: SystemTime,
    ) -> Result<bool, MetaError> {
        // Lock the link first: a manifest PUT that references the blob holds a KEY SHARE lock
        // on it (its foreign key) until it commits, so this waits for it, and one that comes
        // later waits for this transaction (then fails its foreign key: `Conflict`). The check
        // is a second statement, so its snapshot is taken after the lock and sees every
        // reference committed before it. `touch_linked_blob` locks the link too, so a touch
        // either committed before (its mark is seen) or finds no link.
        let linked: Option<i32> =
            sqlx::query_scalar("SELECT 1 FROM repo_blobs WHERE repo = $1 AND digest = $2 FOR UPDATE")
                .bind(repo.as_str())
                .bind(d.as_str())
                .fetch_optional(&mut *self.tx)
                .await?;
        if linked.is_none() {
            return Ok(false);
        }
        let done = sqlx::query(
            "DELETE FROM repo_blobs WHERE repo = $1 AND digest = $2
               AND NOT EXISTS (SELECT 1 FROM manifest_blobs WHERE repo = $1 AND blob = $2)
               AND EXISTS (SELECT 1 FROM blobs WHERE digest = $2 AND touched_at < $3)",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .bind(millis(cutoff))
        .execute(&mut *self.tx)
        .await;
        match done {
            Ok(done) => Ok(done.rows_affected() > 0),
            Err(e) if is_foreign_key_violation(&e) => {
                Err(MetaError::Conflict(format!("blob {d} of {repo} is still referenced; the schema refused ({e})")))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn commit_upload(
        &mut self,
        id: &str,
        expected_len: u64,
        blob: &BlobRecord,
    ) -> Result<(CommitUpload, Option<RepoName>), MetaError> {
        let repo: Option<String> = sqlx::query_scalar("DELETE FROM uploads WHERE id = $1 AND len = $2 RETURNING repo")
            .bind(id)
            .bind(expected_len as i64)
            .fetch_optional(&mut *self.tx)
            .await?;
        let Some(repo) = repo else {
            let len: Option<i64> = sqlx::query_scalar("SELECT len FROM uploads WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *self.tx)
                .await?;
            return Ok((CommitUpload::UploadGone { len: len.map(|n| n as u64) }, None));
        };
        let repo = RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let location = serde_json::to_string(&blob.location).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        // Stored, or else this upload's objects duplicate a stored blob and are garbage.
        let created: bool = sqlx::query_scalar(
            "WITH b AS (INSERT INTO blobs (digest, size, location, created_at)
                        VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1),
                  g AS (INSERT INTO upload_garbage (upload, since) SELECT $5, $4 WHERE NOT EXISTS (SELECT 1 FROM b)
                        ON CONFLICT DO NOTHING)
             SELECT EXISTS (SELECT 1 FROM b)",
        )
        .bind(blob.digest.as_str())
        .bind(blob.size as i64)
        .bind(location)
        .bind(self.now)
        .bind(id)
        .fetch_one(&mut *self.tx)
        .await?;
        let outcome = if created { CommitUpload::Created } else { CommitUpload::AlreadyStored };
        Ok((outcome, Some(repo)))
    }

    async fn retention_snapshot(&mut self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        // The tags locked, then one statement (postgres/retention.rs says why that is enough).
        retention::lock_tags(&mut self.tx, repo).await?;
        retention::snapshot(&mut *self.tx, repo).await
    }

    async fn tag_targets(&mut self, repo: &RepoName, t: &Tag, limit: u32) -> Result<Vec<Digest>, MetaError> {
        retention::tag_targets(&mut self.tx, repo, t, limit).await
    }

    async fn create_robot(&mut self, r: &RobotRecord) -> Result<bool, MetaError> {
        let done = sqlx::query(
            "INSERT INTO robots (name, secret_sha256, roles, grants, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
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
        let done = sqlx::query("UPDATE robots SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL")
            .bind(millis(at))
            .bind(name)
            .execute(&mut *self.tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn append_events(&mut self, events: Vec<NewEvent>, at: SystemTime) -> Result<(), MetaError> {
        ledger::append(&mut self.tx, events, millis(at)).await
    }

    async fn commit(mut self: Box<Self>) -> Result<(), MetaError> {
        // Delivered to listeners only if and when the transaction commits.
        super::notify::announce(&mut self.tx, &self.changed).await?;
        self.tx.commit().await?;
        Ok(())
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        self.tx.rollback().await?;
        Ok(())
    }
}
