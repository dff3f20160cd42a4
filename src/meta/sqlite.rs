//! `MetadataStore` on SQLite in WAL mode: the embedded default. Reads use a small pool;
//! writes go through one connection, so write transactions never fight over the lock
//! (SQLite has one writer at a time anyway) and `BEGIN` never fails with SQLITE_BUSY.
//! Commits are durable when they return (`synchronous = FULL`); how the backend meets a
//! full disk, a failed commit and a foreign or read-only file is in `sqlite_faults.rs`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use super::sqlite_faults::{open_error, pool_options, refuse_foreign, write_check};
use super::{
    Actor, BlobRecord, CommitUpload, Deleted, ManifestRecord, MetaError, MetadataStore, NewManifest, Precondition,
    PutManifest, Referrer, RobotRecord, Segment, TagAction, TagEvent, TagGuard, UploadSession, from_millis, millis,
};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

/// Cairn's schema migrations.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// The SQLite backend.
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
}

impl SqliteStore {
    /// Opens the database at `url` (a missing file is created) and runs the migrations.
    /// Refuses, with a message that says what to do, a file that is not a Cairn database
    /// (zero bytes, not SQLite, or another program's tables and no Cairn migrations) and a
    /// database Cairn cannot write. WAL with `synchronous = FULL`: the WAL is fsynced at
    /// every commit, so a committed write survives a power loss (NORMAL may lose the last
    /// commits, which would break the promise of a 201).
    pub async fn open(url: &str) -> Result<SqliteStore, MetaError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let file = opts.get_filename().to_path_buf();
        refuse_foreign(&file).await?;
        let write = pool_options(1).connect_with(opts.clone()).await.map_err(|e| open_error(&file, e))?;
        MIGRATOR.run(&write).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => open_error(&file, e),
            e => MetaError::Unusable(format!("{}: migrations failed: {e}", file.display())),
        })?;
        let read = pool_options(8).connect_with(opts).await.map_err(|e| open_error(&file, e))?;
        let store = SqliteStore { read, write };
        match write_check(&store.write).await.map_err(|e| open_error(&file, e)) {
            Ok(()) => {}
            // Serve anyway: reads work, writes answer 507 and /readyz says not ready.
            Err(MetaError::Full(e)) => {
                tracing::warn!(file = %file.display(), error = %e, "the disk under the database is full");
            }
            Err(e) => return Err(e),
        }
        Ok(store)
    }
}

fn now() -> i64 {
    millis(SystemTime::now())
}

fn digest(s: String) -> Result<Digest, MetaError> {
    Digest::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

/// A JSON array of digests, for `json_each` (one statement instead of one per item).
fn digest_list(list: &[Digest]) -> String {
    serde_json::to_string(&list.iter().map(Digest::as_str).collect::<Vec<_>>()).unwrap_or_else(|_| "[]".into())
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn upload_row(row: sqlx::sqlite::SqliteRow) -> Result<UploadSession, MetaError> {
    let repo: String = row.get("repo");
    let segments: String = row.get("segments");
    let algorithm: String = row.get("algorithm");
    Ok(UploadSession {
        algorithm: Algorithm::parse(&algorithm)
            .ok_or_else(|| MetaError::Corrupt(format!("unknown digest algorithm {algorithm:?}")))?,
        id: row.get("id"),
        repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
        len: row.get::<i64, _>("len") as u64,
        segments: json(&segments)?,
        hash_state: row.get("hash_state"),
        updated_at: from_millis(row.get("updated_at")),
    })
}

fn manifest_row(row: sqlx::sqlite::SqliteRow) -> Result<ManifestRecord, MetaError> {
    let annotations: Option<String> = row.get("annotations");
    let subject: Option<String> = row.get("subject");
    let body: Vec<u8> = row.get("body");
    Ok(ManifestRecord {
        digest: digest(row.get("digest"))?,
        media_type: row.get("media_type"),
        body: body.into(),
        artifact_type: row.get("artifact_type"),
        subject: subject.map(digest).transpose()?,
        annotations: annotations.as_deref().map(json).transpose()?,
    })
}

#[expect(clippy::too_many_arguments, reason = "one row of tag history")]
async fn record_tag_event(
    tx: &mut sqlx::SqliteConnection,
    repo: &RepoName,
    tag: &Tag,
    action: TagAction,
    from: Option<&Digest>,
    to: Option<&Digest>,
    actor: &Actor,
    at: i64,
) -> Result<(), MetaError> {
    let action = match action {
        TagAction::Create => "create",
        TagAction::Move => "move",
        TagAction::Delete => "delete",
    };
    sqlx::query(
        "INSERT INTO tag_history (repo, tag, action, from_digest, to_digest, actor, address, at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(repo.as_str())
    .bind(tag.as_str())
    .bind(action)
    .bind(from.map(Digest::as_str))
    .bind(to.map(Digest::as_str))
    .bind(&actor.name)
    .bind(&actor.address)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

fn robot_row(row: sqlx::sqlite::SqliteRow) -> Result<RobotRecord, MetaError> {
    let roles: String = row.get("roles");
    let grants: String = row.get("grants");
    let expires: Option<i64> = row.get("expires_at");
    let revoked: Option<i64> = row.get("revoked_at");
    Ok(RobotRecord {
        name: row.get("name"),
        secret_sha256: row.get("secret_sha256"),
        roles: json(&roles)?,
        grants: json(&grants)?,
        created_at: from_millis(row.get("created_at")),
        expires_at: expires.map(from_millis),
        revoked_at: revoked.map(from_millis),
    })
}

fn tag_event_row(row: sqlx::sqlite::SqliteRow) -> Result<TagEvent, MetaError> {
    let action: String = row.get("action");
    let action = match action.as_str() {
        "create" => TagAction::Create,
        "move" => TagAction::Move,
        "delete" => TagAction::Delete,
        other => return Err(MetaError::Corrupt(format!("unknown tag action {other}"))),
    };
    let from: Option<String> = row.get("from_digest");
    let to: Option<String> = row.get("to_digest");
    Ok(TagEvent {
        id: row.get("id"),
        at: from_millis(row.get("at")),
        action,
        from: from.map(digest).transpose()?,
        to: to.map(digest).transpose()?,
        actor: Actor { name: row.get("actor"), address: row.get("address") },
    })
}

async fn ensure_repo(tx: &mut sqlx::SqliteConnection, repo: &RepoName) -> Result<(), MetaError> {
    sqlx::query("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING")
        .bind(repo.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn link(tx: &mut sqlx::SqliteConnection, repo: &RepoName, digest: &Digest) -> Result<(), MetaError> {
    ensure_repo(tx, repo).await?;
    sqlx::query("INSERT INTO repo_blobs (repo, digest, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")
        .bind(repo.as_str())
        .bind(digest.as_str())
        .bind(now())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// A tag that points at `manifest`, or else at an index that lists it.
async fn holder_tag(
    tx: &mut sqlx::SqliteConnection,
    repo: &RepoName,
    manifest: &str,
) -> Result<Option<Tag>, MetaError> {
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
    .fetch_optional(&mut *tx)
    .await?;
    name.map(|n| Tag::parse(&n).map_err(|e| MetaError::Corrupt(e.to_string()))).transpose()
}

/// `Deleted::Referenced` for the first manifest (tagged ones first) found by `sql`, which
/// selects manifest digests given `?1` = repo and `?2` = the referenced digest.
async fn referenced_by(
    tx: &mut sqlx::SqliteConnection,
    repo: &RepoName,
    d: &Digest,
    sql: &str,
) -> Result<Option<Deleted>, MetaError> {
    let holders: Vec<String> = sqlx::query_scalar(sql).bind(repo.as_str()).bind(d.as_str()).fetch_all(&mut *tx).await?;
    let mut first = None;
    for h in holders {
        let tag = holder_tag(tx, repo, &h).await?;
        let found = Deleted::Referenced { holder: digest(h)?, tag: tag.clone() };
        if tag.is_some() {
            return Ok(Some(found));
        }
        first.get_or_insert(found);
    }
    Ok(first)
}

const BLOB_HOLDERS: &str =
    "SELECT manifest FROM manifest_blobs WHERE repo = ?1 AND blob = ?2 ORDER BY manifest LIMIT 16";
const CHILD_HOLDERS: &str =
    "SELECT manifest FROM manifest_children WHERE repo = ?1 AND child = ?2 ORDER BY manifest LIMIT 16";

/// True for SQLite's "FOREIGN KEY constraint failed": the schema refused to orphan a reference.
fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.kind() == sqlx::error::ErrorKind::ForeignKeyViolation
        || d.message().contains("FOREIGN KEY constraint failed"))
}

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn check_write(&self) -> Result<(), MetaError> {
        Ok(write_check(&self.write).await?)
    }

    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar(
            "SELECT name FROM repositories r WHERE name > ?
               AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name)
                 OR EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo = r.name))
             ORDER BY name LIMIT ?",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo = ?1)
                         OR EXISTS (SELECT 1 FROM repo_blobs WHERE repo = ?1)",
        )
        .bind(repo.as_str())
        .fetch_optional(&self.read)
        .await?;
        Ok(found.is_some())
    }

    async fn blob(&self, repo: &RepoName, d: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT b.size, b.location FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = ? AND rb.digest = ?",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let location: String = r.get("location");
            Ok(BlobRecord { digest: d.clone(), size: r.get::<i64, _>("size") as u64, location: json(&location)? })
        })
        .transpose()
    }

    async fn mount_blob(&self, repo: &RepoName, d: &Digest, from: &RepoName) -> Result<bool, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM repo_blobs WHERE repo = ? AND digest = ?")
            .bind(from.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if found.is_none() {
            return Ok(false);
        }
        link(&mut tx, repo, d).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn blob_repositories(&self, d: &Digest, limit: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar("SELECT repo FROM repo_blobs WHERE digest = ? ORDER BY repo LIMIT ?")
            .bind(d.as_str())
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        Ok(rows)
    }

    async fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> Result<Deleted, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        if let Some(refused) = referenced_by(&mut tx, repo, d, BLOB_HOLDERS).await? {
            return Ok(refused);
        }
        let done = sqlx::query("DELETE FROM repo_blobs WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .execute(&mut *tx)
            .await;
        let done = match done {
            Ok(done) => done,
            Err(e) if is_foreign_key_violation(&e) => {
                return Err(MetaError::Corrupt(format!("blob {d} of {repo} is referenced by a row no query found")));
            }
            Err(e) => return Err(e.into()),
        };
        tx.commit().await?;
        Ok(if done.rows_affected() > 0 { Deleted::Deleted } else { Deleted::NotFound })
    }

    async fn create_upload(&self, repo: &RepoName, id: &str, algorithm: Algorithm) -> Result<UploadSession, MetaError> {
        let t = now();
        sqlx::query("INSERT INTO uploads (id, repo, algorithm, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
            .bind(id)
            .bind(repo.as_str())
            .bind(algorithm.as_str())
            .bind(t)
            .bind(t)
            .execute(&self.write)
            .await?;
        Ok(UploadSession {
            id: id.to_string(),
            repo: repo.clone(),
            len: 0,
            segments: vec![],
            algorithm,
            hash_state: None,
            updated_at: from_millis(t),
        })
    }

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadSession>, MetaError> {
        // Read through the writer so a client that just PATCHed sees its own write.
        let row = sqlx::query("SELECT * FROM uploads WHERE id = ? AND repo = ?")
            .bind(id)
            .bind(repo.as_str())
            .fetch_optional(&self.write)
            .await?;
        row.map(upload_row).transpose()
    }

    async fn record_segment(
        &self,
        id: &str,
        expected_len: u64,
        segment: &Segment,
        hash_state: &[u8],
    ) -> Result<bool, MetaError> {
        let seg = serde_json::to_string(segment).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE uploads SET len = len + ?1, segments = json_insert(segments, '$[#]', json(?6)),
                    hash_state = ?2, updated_at = ?3
             WHERE id = ?4 AND len = ?5",
        )
        .bind(segment.len as i64)
        .bind(hash_state)
        .bind(now())
        .bind(id)
        .bind(expected_len as i64)
        .bind(seg)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn commit_upload(&self, id: &str, expected_len: u64, blob: &BlobRecord) -> Result<CommitUpload, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let repo: Option<String> = sqlx::query_scalar("DELETE FROM uploads WHERE id = ? AND len = ? RETURNING repo")
            .bind(id)
            .bind(expected_len as i64)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(repo) = repo else {
            return Ok(CommitUpload::UploadGone);
        };
        let repo = RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let location = serde_json::to_string(&blob.location).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let inserted = sqlx::query(
            "INSERT INTO blobs (digest, size, location, created_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(blob.digest.as_str())
        .bind(blob.size as i64)
        .bind(location)
        .bind(now())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        link(&mut tx, &repo, &blob.digest).await?;
        tx.commit().await?;
        Ok(if inserted == 1 { CommitUpload::Created } else { CommitUpload::AlreadyStored })
    }

    async fn delete_upload(&self, id: &str) -> Result<Option<UploadSession>, MetaError> {
        let row =
            sqlx::query("DELETE FROM uploads WHERE id = ? RETURNING *").bind(id).fetch_optional(&self.write).await?;
        row.map(upload_row).transpose()
    }

    async fn expire_uploads(&self, cutoff: SystemTime) -> Result<Vec<UploadSession>, MetaError> {
        let rows = sqlx::query("DELETE FROM uploads WHERE updated_at < ? RETURNING *")
            .bind(millis(cutoff))
            .fetch_all(&self.write)
            .await?;
        rows.into_iter().map(upload_row).collect()
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, MetaError> {
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query("SELECT * FROM manifests WHERE repo = ? AND digest = ?")
                    .bind(repo.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&self.read)
                    .await?
            }
            Reference::Tag(t) => {
                sqlx::query(
                    "SELECT m.* FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest
                     WHERE t.repo = ? AND t.name = ?",
                )
                .bind(repo.as_str())
                .bind(t.as_str())
                .fetch_optional(&self.read)
                .await?
            }
        };
        row.map(manifest_row).transpose()
    }

    async fn put_manifest(&self, repo: &RepoName, m: &NewManifest) -> Result<PutManifest, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        // One query per kind, whatever the number of layers: the first reference missing.
        let checks = [
            (
                &m.blobs,
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS
                 (SELECT 1 FROM repo_blobs WHERE repo = ?2 AND digest = j.value) LIMIT 1",
            ),
            (
                &m.manifests,
                "SELECT j.value FROM json_each(?1) j WHERE NOT EXISTS
                 (SELECT 1 FROM manifests WHERE repo = ?2 AND digest = j.value) LIMIT 1",
            ),
        ];
        for (list, sql) in checks {
            if list.is_empty() {
                continue;
            }
            let missing: Option<String> =
                sqlx::query_scalar(sql).bind(digest_list(list)).bind(repo.as_str()).fetch_optional(&mut *tx).await?;
            if let Some(d) = missing {
                return Ok(PutManifest::Missing(digest(d)?));
            }
        }
        ensure_repo(&mut tx, repo).await?;
        let r = &m.record;
        let annotations = r.annotations.as_ref().map(|a| serde_json::to_string(a).unwrap_or_default());
        let t = now();
        let inserted = sqlx::query(
            "INSERT INTO manifests (repo, digest, media_type, size, body, artifact_type, subject, annotations, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(repo.as_str())
        .bind(r.digest.as_str())
        .bind(&r.media_type)
        .bind(r.body.len() as i64)
        .bind(r.body.as_ref())
        .bind(&r.artifact_type)
        .bind(r.subject.as_ref().map(Digest::as_str))
        .bind(annotations)
        .bind(t)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            let inserts = [
                (&m.blobs, "INSERT INTO manifest_blobs (repo, manifest, blob) SELECT ?1, ?2, value FROM json_each(?3)"),
                (
                    &m.manifests,
                    "INSERT INTO manifest_children (repo, manifest, child) SELECT ?1, ?2, value FROM json_each(?3)",
                ),
            ];
            for (list, sql) in inserts {
                if list.is_empty() {
                    continue;
                }
                sqlx::query(sql)
                    .bind(repo.as_str())
                    .bind(r.digest.as_str())
                    .bind(digest_list(list))
                    .execute(&mut *tx)
                    .await?;
            }
        }
        for w in &m.tags {
            let current: Option<String> = sqlx::query_scalar("SELECT digest FROM tags WHERE repo = ? AND name = ?")
                .bind(repo.as_str())
                .bind(w.tag.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            let current = current.map(digest).transpose()?;
            let failed = match (&m.precondition, &current) {
                (Precondition::Absent, Some(_)) => true,
                (Precondition::PointsTo(want), cur) => cur.as_ref() != Some(want),
                _ => false,
            };
            if failed {
                return Ok(PutManifest::PreconditionFailed { tag: w.tag.clone(), current });
            }
            match current {
                Some(cur) if cur == r.digest => {}
                Some(cur) => {
                    if let Some(rule) = &w.immutable {
                        return Ok(PutManifest::Immutable { tag: w.tag.clone(), current: cur, rule: rule.clone() });
                    }
                    sqlx::query("UPDATE tags SET digest = ?, updated_at = ? WHERE repo = ? AND name = ?")
                        .bind(r.digest.as_str())
                        .bind(t)
                        .bind(repo.as_str())
                        .bind(w.tag.as_str())
                        .execute(&mut *tx)
                        .await?;
                    record_tag_event(&mut tx, repo, &w.tag, TagAction::Move, Some(&cur), Some(&r.digest), &m.actor, t)
                        .await?;
                }
                None => {
                    sqlx::query("INSERT INTO tags (repo, name, digest, updated_at) VALUES (?, ?, ?, ?)")
                        .bind(repo.as_str())
                        .bind(w.tag.as_str())
                        .bind(r.digest.as_str())
                        .bind(t)
                        .execute(&mut *tx)
                        .await?;
                    record_tag_event(&mut tx, repo, &w.tag, TagAction::Create, None, Some(&r.digest), &m.actor, t)
                        .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(PutManifest::Stored)
    }

    async fn delete_manifest(
        &self,
        repo: &RepoName,
        d: &Digest,
        guard: TagGuard<'_>,
        actor: &Actor,
    ) -> Result<Deleted, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM manifests WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(Deleted::NotFound);
        }
        if let Some(refused) = referenced_by(&mut tx, repo, d, CHILD_HOLDERS).await? {
            return Ok(refused);
        }
        let names: Vec<String> =
            sqlx::query_scalar("SELECT name FROM tags WHERE repo = ? AND digest = ? ORDER BY name")
                .bind(repo.as_str())
                .bind(d.as_str())
                .fetch_all(&mut *tx)
                .await?;
        let tags = names
            .iter()
            .map(|n| Tag::parse(n).map_err(|e| MetaError::Corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        for tag in &tags {
            if let Some(rule) = guard(tag) {
                return Ok(Deleted::Protected { tag: tag.clone(), current: d.clone(), rule });
            }
        }
        let t = now();
        for tag in &tags {
            record_tag_event(&mut tx, repo, tag, TagAction::Delete, Some(d), None, actor, t).await?;
        }
        let done = sqlx::query("DELETE FROM manifests WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .execute(&mut *tx)
            .await;
        if let Err(e) = done {
            return Err(match is_foreign_key_violation(&e) {
                true => MetaError::Corrupt(format!("manifest {d} of {repo} is referenced by a row no query found")),
                false => e.into(),
            });
        }
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    async fn delete_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        guard: TagGuard<'_>,
        actor: &Actor,
    ) -> Result<Deleted, MetaError> {
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        let current: Option<String> = sqlx::query_scalar("SELECT digest FROM tags WHERE repo = ? AND name = ?")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(current) = current.map(digest).transpose()? else {
            return Ok(Deleted::NotFound);
        };
        if let Some(rule) = guard(tag) {
            return Ok(Deleted::Protected { tag: tag.clone(), current, rule });
        }
        sqlx::query("DELETE FROM tags WHERE repo = ? AND name = ?")
            .bind(repo.as_str())
            .bind(tag.as_str())
            .execute(&mut *tx)
            .await?;
        record_tag_event(&mut tx, repo, tag, TagAction::Delete, Some(&current), None, actor, now()).await?;
        tx.commit().await?;
        Ok(Deleted::Deleted)
    }

    async fn tag_history(
        &self,
        repo: &RepoName,
        tag: &Tag,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<TagEvent>, MetaError> {
        let rows =
            sqlx::query("SELECT * FROM tag_history WHERE repo = ? AND tag = ? AND id < ? ORDER BY id DESC LIMIT ?")
                .bind(repo.as_str())
                .bind(tag.as_str())
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&self.read)
                .await?;
        rows.into_iter().map(tag_event_row).collect()
    }

    async fn create_robot(&self, r: &RobotRecord) -> Result<bool, MetaError> {
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
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError> {
        let row = sqlx::query("SELECT * FROM robots WHERE name = ?").bind(name).fetch_optional(&self.read).await?;
        row.map(robot_row).transpose()
    }

    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError> {
        let rows = sqlx::query("SELECT * FROM robots ORDER BY name").fetch_all(&self.read).await?;
        rows.into_iter().map(robot_row).collect()
    }

    async fn revoke_robot(&self, name: &str) -> Result<bool, MetaError> {
        let done = sqlx::query("UPDATE robots SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL")
            .bind(now())
            .bind(name)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn tag_event_at(&self, repo: &RepoName, tag: &Tag, at: SystemTime) -> Result<Option<TagEvent>, MetaError> {
        let row = sqlx::query(
            "SELECT * FROM tag_history WHERE repo = ? AND tag = ? AND at <= ? ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(millis(at))
        .fetch_optional(&self.read)
        .await?;
        row.map(tag_event_row).transpose()
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar("SELECT name FROM tags WHERE repo = ? ORDER BY name")
            .bind(repo.as_str())
            .fetch_all(&self.read)
            .await?;
        Ok(rows)
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Referrer>, MetaError> {
        let rows = sqlx::query(
            "SELECT digest, media_type, size, artifact_type, annotations FROM manifests
             WHERE repo = ? AND subject = ? ORDER BY digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|r| {
                let annotations: Option<String> = r.get("annotations");
                Ok(Referrer {
                    digest: digest(r.get("digest"))?,
                    media_type: r.get("media_type"),
                    size: r.get::<i64, _>("size") as u64,
                    artifact_type: r.get("artifact_type"),
                    annotations: annotations.as_deref().map(json).transpose()?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{BlobLocation, ManifestRecord, TagWrite};

    fn d(n: u8) -> Digest {
        Digest::of(&[n])
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        (dir, SqliteStore::open(&url).await.unwrap())
    }

    async fn add_blob(s: &SqliteStore, repo: &RepoName, n: u8) {
        let id = format!("u{n}");
        s.create_upload(repo, &id, Algorithm::Sha256).await.unwrap();
        let blob =
            BlobRecord { digest: d(n), size: 1, location: BlobLocation { upload: id.clone(), segments: vec![] } };
        assert_eq!(s.commit_upload(&id, 0, &blob).await.unwrap(), CommitUpload::Created);
    }

    fn manifest(blobs: Vec<Digest>, tag: &str) -> NewManifest {
        let body = bytes::Bytes::from(format!("{blobs:?}"));
        NewManifest {
            record: ManifestRecord {
                digest: Digest::of(&body),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                body,
                artifact_type: None,
                subject: None,
                annotations: None,
            },
            blobs,
            manifests: vec![],
            tags: vec![TagWrite { tag: Tag::parse(tag).unwrap(), immutable: None }],
            precondition: Precondition::None,
            actor: Actor { name: "t".into(), address: None },
        }
    }

    #[tokio::test]
    async fn references_are_checked_and_recorded_in_one_statement_each() {
        let (_dir, s) = store().await;
        let repo = RepoName::parse("r").unwrap();
        for n in 1..=3 {
            add_blob(&s, &repo, n).await;
        }
        let mut missing = vec![d(1), d(9), d(2), d(8)];
        missing.sort();
        let first_missing = missing.iter().find(|x| **x == d(8) || **x == d(9)).unwrap().clone();
        assert_eq!(
            s.put_manifest(&repo, &manifest(missing, "bad")).await.unwrap(),
            PutManifest::Missing(first_missing)
        );
        assert!(s.tags(&repo).await.unwrap().is_empty(), "nothing stored");
        let m = manifest(vec![d(1), d(2), d(3)], "good");
        assert_eq!(s.put_manifest(&repo, &m).await.unwrap(), PutManifest::Stored);
        let refs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM manifest_blobs WHERE repo = 'r' AND manifest = ?")
            .bind(m.record.digest.as_str())
            .fetch_one(&s.read)
            .await
            .unwrap();
        assert_eq!(refs, 3);
    }
}

#[cfg(test)]
mod migration_tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// A database made by the schema before references were enforced, where a DELETE had
    /// unlinked a layer that a tagged manifest used, is repaired by the migration.
    #[tokio::test]
    async fn migration_relinks_a_layer_the_old_schema_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let opts = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
        let all = sqlx::migrate!("migrations/sqlite");
        let mut old = sqlx::migrate!("migrations/sqlite");
        old.migrations = std::borrow::Cow::Owned(all.migrations.iter().filter(|m| m.version < 4).cloned().collect());
        old.run(&pool).await.unwrap();
        let (layer, manifest) = (Digest::of(b"layer"), Digest::of(b"manifest"));
        for sql in [
            "INSERT INTO repositories VALUES ('r', 0)",
            "INSERT INTO blobs VALUES (?1, 5, '{\"upload\":\"u\",\"segments\":[]}', 0)",
            "INSERT INTO manifests (repo, digest, media_type, size, body, artifact_type, created_at)
             VALUES ('r', ?2, 'application/vnd.oci.image.manifest.v1+json', 2, X'7B7D', '', 0)",
            "INSERT INTO manifest_refs VALUES ('r', ?2, ?1, 'blob')",
            "INSERT INTO tags VALUES ('r', 'v1', ?2, 0)",
        ] {
            sqlx::query(sql).bind(layer.as_str()).bind(manifest.as_str()).execute(&pool).await.unwrap();
        }
        pool.close().await;
        let s = SqliteStore::open(&url).await.unwrap();
        let repo = RepoName::parse("r").unwrap();
        assert!(s.blob(&repo, &layer).await.unwrap().is_some(), "the layer is linked again");
        assert!(matches!(s.unlink_blob(&repo, &layer).await.unwrap(), Deleted::Referenced { .. }));
        let m = s.manifest(&repo, &Reference::Digest(manifest)).await.unwrap().unwrap();
        assert_eq!(m.artifact_type, None, "an empty artifactType with no config counts as missing");
    }
}
