//! `MetadataStore` on SQLite in WAL mode: the embedded default. Reads use a small pool;
//! writes go through one connection, so write transactions never fight over the lock
//! (SQLite has one writer at a time anyway) and `BEGIN` never fails with SQLITE_BUSY.
//! Concurrent write transactions share one outer transaction and one fsync (group commit,
//! `sqlite/group.rs`); each is durable when its commit returns (`synchronous = FULL`). How
//! the backend meets a full disk, a failed commit and a foreign or read-only file is in
//! `sqlite_faults.rs`.
//!
//! Memory: each connection keeps its own page cache, which fills up to its `cache_size` as
//! queries touch pages and stays full while the connection lives. Cairn sets it per
//! connection rather than taking SQLite's default (2,000 KiB on every connection): the
//! writer keeps [`WRITE_CACHE_KIB`], each of the [`READ_POOL`] readers [`READ_CACHE_KIB`],
//! so the page caches together stay under 2 MiB + 8 × 512 KiB = 6 MiB (was 9 × 2,000 KiB,
//! about 17.6 MiB, which a soak of 30,000 distinct tags resolved with HEAD filled within
//! seconds; bench/README.md). A reader's page that is not cached is one `pread` of a file
//! the kernel keeps in its own page cache.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::migrate::Migrator;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row, SqlitePool};

mod copy;
mod gc;
mod group;
#[cfg(test)]
mod group_tests;
mod ledger;
mod retention;
mod summary;
mod tx;

use super::sqlite_faults::{applied_version, open_error, pool_options, refuse_foreign, write_check};
use super::{
    Actor, BlobRecord, DigestTagEvent, EventFilter, LedgerArchive, LinkCandidate, ManifestRecord, MetaError, MetaTx,
    MetadataStore, PullStats, Referrer, RepositorySummary, RetentionSnapshot, RobotRecord, Segment, StorageTotals,
    TagAction, TagEvent, UploadSession, from_millis, millis,
};
use crate::audit::{Checkpoint, Event};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

/// Cairn's schema migrations.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/sqlite");

/// Connections in the read pool.
const READ_POOL: u32 = 8;

/// The write connection's page cache, in KiB (`PRAGMA cache_size`): SQLite's default,
/// stated here so the bound is written down. Group commits insert into the same indexes
/// over and over, and their pages stay cached.
const WRITE_CACHE_KIB: u32 = 2000;

/// Each reader's page cache, in KiB (`PRAGMA cache_size`): enough for the upper levels of
/// the tag and manifest indexes a lookup walks; leaf pages come from the kernel's cache.
const READ_CACHE_KIB: u32 = 512;

/// The SQLite backend.
pub struct SqliteStore {
    read: SqlitePool,
    /// The write connection, behind the group committer: every write goes through it.
    group: group::Group,
}

impl SqliteStore {
    /// Opens the database at `url` (a missing file is created) and runs the migrations.
    /// Refuses, with a message that says what to do, a file that is not a Cairn database
    /// (zero bytes, not SQLite, or another program's tables and no Cairn migrations) and a
    /// database Cairn cannot write. WAL with `synchronous = FULL`: the WAL is fsynced at
    /// every commit, so a committed write survives a power loss (NORMAL may lose the last
    /// commits, which would break the promise of a 201).
    pub async fn open(url: &str) -> Result<SqliteStore, MetaError> {
        SqliteStore::open_with(url, group::Limits::default()).await
    }

    /// `open`, with the group committer's limits.
    async fn open_with(url: &str, limits: group::Limits) -> Result<SqliteStore, MetaError> {
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let file = opts.get_filename().to_path_buf();
        refuse_foreign(&file).await?;
        // The writer keeps its savepoint and statement journals in memory: every transaction
        // is a savepoint of a group (`sqlite/group.rs`), and with files SQLite would create
        // and unlink a temporary file for most of them.
        let write_opts =
            opts.clone().pragma("temp_store", "memory").pragma("cache_size", format!("-{WRITE_CACHE_KIB}"));
        let mut write = SqliteConnection::connect_with(&write_opts).await.map_err(|e| open_error(&file, e))?;
        let applied = applied_version(&mut write).await.map_err(|e| open_error(&file, e))?;
        super::refuse_newer_schema(&file.display().to_string(), applied, &MIGRATOR)?;
        MIGRATOR.run(&mut write).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => open_error(&file, e),
            e => MetaError::Unusable(format!("{}: migrations failed: {e}", file.display())),
        })?;
        // Autocommit: this one statement is its own durable transaction.
        match write_check(&mut write).await.map_err(|e| open_error(&file, e)) {
            Ok(()) => {}
            // Serve anyway: reads work, writes answer 507 and /readyz says not ready.
            Err(MetaError::Full(e)) => {
                tracing::warn!(file = %file.display(), error = %e, "the disk under the database is full");
            }
            Err(e) => return Err(e),
        }
        if let Err(e) = key_ledger(&mut write).await {
            // Queries stay right without the keys (they scan what is not keyed), only slower;
            // the next group that passes the batch size keys everything behind it.
            tracing::warn!(file = %file.display(), error = %e, "could not key the ledger's unkeyed events");
        }
        let read_opts = opts.clone().pragma("cache_size", format!("-{READ_CACHE_KIB}"));
        let read = pool_options(READ_POOL).connect_with(read_opts).await.map_err(|e| open_error(&file, e))?;
        Ok(SqliteStore { read, group: group::Group::new(write, write_opts, limits) })
    }
}

/// Keys every ledger event not keyed yet (`ledger_keys`: a database from before migration
/// 0008, or a copied ledger), 50,000 per transaction, with a log line when there were any.
async fn key_ledger(write: &mut SqliteConnection) -> Result<(), MetaError> {
    let mut total = 0;
    loop {
        let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
        let n = ledger::key_some(&mut tx, 50_000).await?;
        tx.commit().await?;
        if n == 0 {
            break;
        }
        total += n;
    }
    if total > 0 {
        tracing::info!(events = total, "keyed the ledger's events for lookups by repository and digest");
    }
    Ok(())
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

#[async_trait]
impl MetadataStore for SqliteStore {
    async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn begin(&self, now: SystemTime) -> Result<Box<dyn MetaTx>, MetaError> {
        let tx = self.group.begin().await?;
        Ok(Box::new(tx::SqliteTx { tx, now: millis(now), events: Vec::new() }))
    }

    async fn check_write(&self) -> Result<(), MetaError> {
        let mut w = self.group.begin().await?;
        let out = write_check(&mut w).await.map_err(MetaError::from);
        w.finish(out).await
    }

    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar(
            // repo_blobs first: its rows are narrow, so the links of a page of repositories
            // sit on a few index pages, while manifests rows carry their bodies (measured by
            // bench/scale: the catalog page cost 2.5-6x more the other way round).
            "SELECT name FROM repositories r WHERE name > ?
               AND (EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo = r.name)
                 OR EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name))
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
            // repo_blobs first, as in `repositories`: its rows are narrow.
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM repo_blobs WHERE repo = ?1)
                         OR EXISTS (SELECT 1 FROM manifests WHERE repo = ?1)",
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

    async fn blob_with_mark(&self, repo: &RepoName, d: &Digest) -> Result<Option<(BlobRecord, SystemTime)>, MetaError> {
        let row = sqlx::query(
            "SELECT b.size, b.location, b.touched_at FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = ? AND rb.digest = ?",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let location: String = r.get("location");
            let blob =
                BlobRecord { digest: d.clone(), size: r.get::<i64, _>("size") as u64, location: json(&location)? };
            Ok((blob, from_millis(r.get("touched_at"))))
        })
        .transpose()
    }

    async fn touch_linked_blob(&self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        let mut w = self.group.begin().await?;
        let out = gc::touch_linked(&mut w, repo, d, at).await;
        w.finish(out).await
    }

    async fn blob_repositories(&self, d: &Digest, limit: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar("SELECT repo FROM repo_blobs WHERE digest = ? ORDER BY repo LIMIT ?")
            .bind(d.as_str())
            .bind(limit as i64)
            .fetch_all(&self.read)
            .await?;
        Ok(rows)
    }

    async fn create_upload(
        &self,
        repo: &RepoName,
        id: &str,
        algorithm: Algorithm,
        now: SystemTime,
    ) -> Result<UploadSession, MetaError> {
        let t = millis(now);
        let insert =
            sqlx::query("INSERT INTO uploads (id, repo, algorithm, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
                .bind(id.to_string())
                .bind(repo.as_str().to_string())
                .bind(algorithm.as_str())
                .bind(t)
                .bind(t);
        self.group.write_one(insert).await?;
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
        // A client that just PATCHed sees its own write: the PATCH returned after its commit.
        let row = sqlx::query("SELECT * FROM uploads WHERE id = ? AND repo = ?")
            .bind(id)
            .bind(repo.as_str())
            .fetch_optional(&self.read)
            .await?;
        row.map(upload_row).transpose()
    }

    async fn record_segment(
        &self,
        id: &str,
        expected_len: u64,
        segment: &Segment,
        hash_state: &[u8],
        now: SystemTime,
    ) -> Result<bool, MetaError> {
        let seg = serde_json::to_string(segment).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let update = sqlx::query(
            "UPDATE uploads SET len = len + ?1, segments = json_insert(segments, '$[#]', json(?6)),
                    hash_state = ?2, updated_at = ?3
             WHERE id = ?4 AND len = ?5 RETURNING 1",
        )
        .bind(segment.len as i64)
        .bind(hash_state.to_vec())
        .bind(millis(now))
        .bind(id.to_string())
        .bind(expected_len as i64)
        .bind(seg);
        Ok(self.group.write_one(update).await? == 1)
    }

    async fn delete_upload(&self, id: &str, now: SystemTime) -> Result<Option<UploadSession>, MetaError> {
        // The ended session's objects are recorded as garbage in the same transaction, so GC
        // removes them if the caller's own removal never happens (a crash).
        let mut w = self.group.begin().await?;
        let out = async {
            let row =
                sqlx::query("DELETE FROM uploads WHERE id = ? RETURNING *").bind(id).fetch_optional(&mut *w).await?;
            if row.is_some() {
                sqlx::query("INSERT INTO upload_garbage (upload, since) VALUES (?, ?) ON CONFLICT DO NOTHING")
                    .bind(id)
                    .bind(millis(now))
                    .execute(&mut *w)
                    .await?;
            }
            Ok(row)
        }
        .await;
        let row = w.finish(out).await?;
        row.map(upload_row).transpose()
    }

    async fn expire_uploads(&self, cutoff: SystemTime, now: SystemTime) -> Result<Vec<UploadSession>, MetaError> {
        let mut w = self.group.begin().await?;
        let out = async {
            let rows = sqlx::query("DELETE FROM uploads WHERE updated_at < ? RETURNING *")
                .bind(millis(cutoff))
                .fetch_all(&mut *w)
                .await?;
            let ids: Vec<String> = rows.iter().map(|r| r.get("id")).collect();
            if !ids.is_empty() {
                sqlx::query(
                    "INSERT INTO upload_garbage (upload, since) SELECT value, ? FROM json_each(?) WHERE true
                     ON CONFLICT DO NOTHING",
                )
                .bind(millis(now))
                .bind(serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into()))
                .execute(&mut *w)
                .await?;
            }
            Ok(rows)
        }
        .await;
        let rows = w.finish(out).await?;
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

    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError> {
        let row = sqlx::query("SELECT * FROM robots WHERE name = ?").bind(name).fetch_optional(&self.read).await?;
        row.map(robot_row).transpose()
    }

    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError> {
        let rows = sqlx::query("SELECT * FROM robots ORDER BY name").fetch_all(&self.read).await?;
        rows.into_iter().map(robot_row).collect()
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

    async fn parents(&self, repo: &RepoName, child: &Digest, limit: u32) -> Result<Vec<Digest>, MetaError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT manifest FROM manifest_children WHERE repo = ?1 AND child = ?2 ORDER BY manifest LIMIT ?3",
        )
        .bind(repo.as_str())
        .bind(child.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.into_iter().map(digest).collect()
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

    async fn events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
        ledger::events(&self.read, filter, limit).await
    }

    async fn ledger_head(&self) -> Result<Option<(i64, String)>, MetaError> {
        // The read pool sees only committed data (never a pending group's head).
        ledger::head(&self.read).await
    }

    async fn ledger_archive_cut(&self) -> Result<Option<(i64, String)>, MetaError> {
        ledger::archive_cut(&self.read).await
    }

    async fn ledger_archives(&self) -> Result<Vec<LedgerArchive>, MetaError> {
        ledger::archives(&self.read).await
    }

    async fn archive_ledger(&self, seq: i64, hash: &str, file: &str, at: SystemTime) -> Result<u64, MetaError> {
        let mut w = self.group.begin().await?;
        let out = ledger::archive(&mut w, seq, hash, file, millis(at)).await;
        w.finish(out).await
    }

    async fn add_checkpoint(&self, cp: &Checkpoint) -> Result<(), MetaError> {
        let mut w = self.group.begin().await?;
        let out = ledger::add_checkpoint(&mut w, cp).await;
        w.finish(out).await
    }

    async fn checkpoints(&self, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, MetaError> {
        ledger::checkpoints(&self.read, after, limit).await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, MetaError> {
        ledger::last_checkpoint(&self.read).await
    }

    async fn add_pulls(&self, pulls: &[(RepoName, Digest, u64, SystemTime)]) -> Result<(), MetaError> {
        if pulls.is_empty() {
            return Ok(());
        }
        let mut w = self.group.begin().await?;
        let out = ledger::add_pulls(&mut w, pulls).await;
        w.finish(out).await
    }

    async fn pulls(&self, repo: &RepoName, digest: &Digest) -> Result<Option<PullStats>, MetaError> {
        ledger::pulls(&self.read, repo, digest).await
    }

    async fn touch_blobs(&self, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError> {
        if touches.is_empty() {
            return Ok(());
        }
        let mut w = self.group.begin().await?;
        let out = gc::touch(&mut w, touches).await;
        w.finish(out).await
    }

    async fn gc_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        gc::candidates(&self.read, cutoff, after, limit).await
    }

    async fn gc_link_candidates(
        &self,
        cutoff: SystemTime,
        after: Option<(&str, &Digest)>,
        limit: u32,
    ) -> Result<Vec<LinkCandidate>, MetaError> {
        gc::link_candidates(&self.read, cutoff, after, limit).await
    }

    async fn gc_unreferenced(
        &self,
        cutoff: SystemTime,
        after: Option<&Digest>,
        limit: u32,
    ) -> Result<Vec<BlobRecord>, MetaError> {
        gc::unreferenced(&self.read, cutoff, after, limit).await
    }

    async fn gc_lock(&self, holder: &str, now: SystemTime, until: SystemTime) -> Result<bool, MetaError> {
        let mut w = self.group.begin().await?;
        let out = gc::lock(&mut w, holder, now, until).await;
        w.finish(out).await
    }

    async fn gc_lock_holder(&self) -> Result<Option<(String, SystemTime)>, MetaError> {
        gc::lock_holder(&self.read).await
    }

    async fn gc_lock_take_over(&self, holder: &str, dead: &str, until: SystemTime) -> Result<bool, MetaError> {
        let mut w = self.group.begin().await?;
        let out = gc::take_over(&mut w, holder, dead, until).await;
        w.finish(out).await
    }

    async fn gc_unlock(&self, holder: &str) -> Result<(), MetaError> {
        let mut w = self.group.begin().await?;
        let out = gc::unlock(&mut w, holder).await;
        w.finish(out).await
    }

    async fn upload_garbage(&self, limit: u32) -> Result<Vec<String>, MetaError> {
        gc::garbage(&self.read, limit).await
    }

    async fn forget_upload_garbage(&self, ids: &[String]) -> Result<(), MetaError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut w = self.group.begin().await?;
        let out = gc::forget(&mut w, ids).await;
        w.finish(out).await
    }

    async fn repository_summaries(&self, after: Option<&str>, limit: u32) -> Result<Vec<RepositorySummary>, MetaError> {
        summary::repository_summaries(&self.read, after, limit).await
    }

    async fn storage_totals(&self) -> Result<StorageTotals, MetaError> {
        summary::storage_totals(&self.read).await
    }

    async fn tags_pointing_at(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<(Tag, SystemTime)>, MetaError> {
        summary::tags_pointing_at(&self.read, repo, digest).await
    }

    async fn digest_tag_history(
        &self,
        repo: &RepoName,
        digest: &Digest,
        limit: u32,
    ) -> Result<Vec<DigestTagEvent>, MetaError> {
        summary::digest_tag_history(&self.read, repo, digest, limit).await
    }

    async fn manifest_stored_at(&self, repo: &RepoName, digest: &Digest) -> Result<Option<SystemTime>, MetaError> {
        summary::manifest_stored_at(&self.read, repo, digest).await
    }

    async fn dump(&self) -> Result<Box<dyn super::copy::Dump>, MetaError> {
        copy::dump(&self.read).await
    }

    async fn load(&self) -> Result<Box<dyn super::copy::Load>, MetaError> {
        copy::load(&self.group).await
    }

    async fn retention_snapshot(&self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        // A read transaction: in WAL mode every statement sees the same snapshot.
        let mut tx = self.read.begin().await?;
        let snap = retention::snapshot(&mut tx, repo).await?;
        tx.commit().await?;
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `MetadataStore` contract suite on SQLite (a fresh database per case).
    #[tokio::test]
    async fn contract_suite() {
        crate::meta::contract::run_all(|| async {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("t.db").display());
            let store: std::sync::Arc<dyn MetadataStore> = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
            (store, Box::new(dir) as Box<dyn std::any::Any + Send>)
        })
        .await;
    }

    /// Two stores on one file, as the server and the command line are.
    #[tokio::test]
    async fn two_handles_append_to_one_chain() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let a = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
        let b = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
        crate::meta::contract::two_handles_append_to_one_chain(a, b).await;
    }

    /// Two stores on one file create the same tags at once: one wins each.
    #[tokio::test]
    async fn two_handles_create_one_tag() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let a = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
        let b = std::sync::Arc::new(SqliteStore::open(&url).await.unwrap());
        crate::meta::contract::two_handles_create_one_tag(a, b).await;
    }
}

#[cfg(test)]
mod migration_tests {
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    /// A database a newer Cairn migrated (a migration this build does not know) is refused at
    /// open, and the message says so, before anything is written.
    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        SqliteStore::open(&url).await.unwrap();
        let pool = SqlitePoolOptions::new().connect(&url).await.unwrap();
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
             VALUES (9999, 'from the future', 1, X'00', 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
        let refused = SqliteStore::open(&url).await.err().expect("a newer schema is refused");
        assert!(matches!(refused, MetaError::Unusable(_)), "{refused:?}");
        assert!(refused.to_string().contains("schema version 9999, newer than this Cairn"), "{refused}");
    }

    /// A database in `dir` with the migrations before `version` applied only; its URL and a
    /// one-connection pool on it.
    async fn old_schema(dir: &tempfile::TempDir, version: i64) -> (String, sqlx::SqlitePool) {
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        let opts = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true).foreign_keys(true);
        let pool = SqlitePoolOptions::new().max_connections(1).connect_with(opts).await.unwrap();
        let all = sqlx::migrate!("migrations/sqlite");
        let mut old = sqlx::migrate!("migrations/sqlite");
        old.migrations =
            std::borrow::Cow::Owned(all.migrations.iter().filter(|m| m.version < version).cloned().collect());
        old.run(&pool).await.unwrap();
        (url, pool)
    }

    /// A database made by the schema before references were enforced, where a DELETE had
    /// unlinked a layer that a tagged manifest used, is repaired by the migration.
    #[tokio::test]
    async fn migration_relinks_a_layer_the_old_schema_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let (url, pool) = old_schema(&dir, 4).await;
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
        let mut tx = s.begin(SystemTime::now()).await.unwrap();
        assert!(tx.holder(&repo, crate::meta::RefKind::Blob, &layer).await.unwrap().is_some());
        assert!(tx.unlink_blob(&repo, &layer, SystemTime::now()).await.is_err(), "the schema refuses");
        tx.rollback().await.unwrap();
        let m = s.manifest(&repo, &Reference::Digest(manifest)).await.unwrap().unwrap();
        assert_eq!(m.artifact_type, None, "an empty artifactType with no config counts as missing");
    }

    /// A ledger from before migration 0008 (events, no lookup keys) is keyed when the store
    /// opens, and repository and digest filters find its events.
    #[tokio::test]
    async fn a_ledger_from_before_lookup_keys_is_keyed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (url, pool) = old_schema(&dir, 8).await;
        let d = Digest::of(b"m");
        let events = (0..30u8)
            .map(|i| {
                let e = crate::audit::NewEvent::new(crate::audit::EventKind::TagCreate, "ci", None)
                    .repository(if i % 2 == 0 { "team/even" } else { "team/odd" })
                    .digest(if i % 3 == 0 { d.to_string() } else { Digest::of(&[i]).to_string() });
                (e, 0)
            })
            .collect();
        // The old schema's append (rows and head), as a server before 0008 left them.
        let mut conn = pool.acquire().await.unwrap();
        ledger::append(&mut conn, events, None).await.unwrap();
        drop(conn);
        pool.close().await;
        let s = SqliteStore::open(&url).await.unwrap();
        let keyed: i64 = sqlx::query_scalar("SELECT seq FROM ledger_keyed").fetch_one(&s.read).await.unwrap();
        assert_eq!(keyed, 30, "every event is keyed");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger_keys").fetch_one(&s.read).await.unwrap();
        assert_eq!(n, 60, "a repository key and a digest key per event");
        let f = EventFilter { digest: Some(d.to_string()), ..Default::default() };
        let seqs: Vec<i64> = s.events(&f, 100).await.unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=30).filter(|s| (s - 1) % 3 == 0).collect::<Vec<_>>());
        let f = EventFilter { repository: Some("team/odd".into()), ..Default::default() };
        assert_eq!(s.events(&f, 100).await.unwrap().len(), 15);
    }
}
