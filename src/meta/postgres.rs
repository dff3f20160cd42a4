//! `MetadataStore` on PostgreSQL: the backend for several nodes on one database
//! (DESIGN §2). Reads use one pool and write transactions another, so a transaction that
//! reads through the store meanwhile never waits for its own pool. Transactions run at READ
//! COMMITTED with row locks (`tx.rs`); the ledger head row serializes appends (`ledger.rs`);
//! SQLSTATEs are sorted into `MetaError` in `postgres/faults.rs`.

use std::str::FromStr;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};

mod copy;
mod faults;
mod gc;
mod ledger;
mod notify;
mod retention;
mod summary;
mod tx;

pub(super) use faults::classify;

use super::{
    Actor, BlobRecord, DigestTagEvent, EventFilter, LedgerArchive, LinkCandidate, ManifestRecord, MetaError, MetaTx,
    MetadataStore, PullStats, Referrer, RepositorySummary, RetentionSnapshot, RobotRecord, Segment, StorageTotals,
    TagAction, TagEvent, UploadSession, from_millis, millis,
};
use crate::audit::{Checkpoint, Event};
use crate::oci::{Algorithm, Digest, Reference, RepoName, Tag};

/// Cairn's schema migrations for PostgreSQL.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("migrations/postgres");

/// Connections for write transactions (each holds one until it commits).
const WRITE_CONNECTIONS: u32 = 16;
/// Connections for single-statement reads.
const READ_CONNECTIONS: u32 = 8;

/// The PostgreSQL backend.
pub struct PostgresStore {
    read: PgPool,
    write: PgPool,
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host:port/db`) and runs the
    /// migrations (sqlx holds an advisory lock meanwhile, so nodes starting at once migrate
    /// once). Refuses a database whose schema is newer than this Cairn knows, and a URL or
    /// server it cannot use, with a message that says what to do.
    pub async fn open(url: &str) -> Result<PostgresStore, MetaError> {
        let shown = crate::config::redact_url(url);
        let opts = PgConnectOptions::from_str(url).map_err(|e| faults_open(&shown, e))?;
        let pool = |n: u32| PgPoolOptions::new().max_connections(n).acquire_timeout(Duration::from_secs(10));
        let write = pool(WRITE_CONNECTIONS).connect_with(opts.clone()).await.map_err(|e| faults_open(&shown, e))?;
        let applied: Option<i64> = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success")
            .fetch_optional(&write)
            .await
            .or_else(|e| match &e {
                // No migration table yet: a new database.
                sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(None),
                _ => Err(faults_open(&shown, e)),
            })?
            .flatten();
        super::refuse_newer_schema(&shown, applied, &MIGRATOR)?;
        MIGRATOR.run(&write).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => faults_open(&shown, e),
            e => MetaError::Unusable(format!("{shown}: migrations failed: {e}")),
        })?;
        let read = pool(READ_CONNECTIONS).connect_with(opts).await.map_err(|e| faults_open(&shown, e))?;
        let store = PostgresStore { read, write };
        match store.check_write().await {
            Ok(()) => {}
            // Serve anyway: reads work, writes answer 507 and /readyz says not ready.
            Err(MetaError::Full(e)) => tracing::warn!(database = %shown, error = %e, "the database's disk is full"),
            Err(e) => return Err(e),
        }
        Ok(store)
    }
}

fn faults_open(shown: &str, e: sqlx::Error) -> MetaError {
    faults::open_error(shown, e)
}

fn digest(s: String) -> Result<Digest, MetaError> {
    Digest::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

/// Digests as a TEXT[] parameter (one statement instead of one per item).
fn digest_array(list: &[Digest]) -> Vec<String> {
    list.iter().map(|d| d.as_str().to_string()).collect()
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, MetaError> {
    serde_json::from_str(s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn upload_row(row: PgRow) -> Result<UploadSession, MetaError> {
    let repo: String = row.try_get("repo")?;
    let segments: String = row.try_get("segments")?;
    let algorithm: String = row.try_get("algorithm")?;
    Ok(UploadSession {
        algorithm: Algorithm::parse(&algorithm)
            .ok_or_else(|| MetaError::Corrupt(format!("unknown digest algorithm {algorithm:?}")))?,
        id: row.try_get("id")?,
        repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
        len: row.try_get::<i64, _>("len")? as u64,
        segments: json(&segments)?,
        hash_state: row.try_get("hash_state")?,
        updated_at: from_millis(row.try_get("updated_at")?),
    })
}

fn manifest_row(row: PgRow) -> Result<ManifestRecord, MetaError> {
    let annotations: Option<String> = row.try_get("annotations")?;
    let subject: Option<String> = row.try_get("subject")?;
    let body: Vec<u8> = row.try_get("body")?;
    Ok(ManifestRecord {
        digest: digest(row.try_get("digest")?)?,
        media_type: row.try_get("media_type")?,
        body: body.into(),
        artifact_type: row.try_get("artifact_type")?,
        subject: subject.map(digest).transpose()?,
        annotations: annotations.as_deref().map(json).transpose()?,
    })
}

fn robot_row(row: PgRow) -> Result<RobotRecord, MetaError> {
    let roles: String = row.try_get("roles")?;
    let grants: String = row.try_get("grants")?;
    let expires: Option<i64> = row.try_get("expires_at")?;
    let revoked: Option<i64> = row.try_get("revoked_at")?;
    Ok(RobotRecord {
        name: row.try_get("name")?,
        secret_sha256: row.try_get("secret_sha256")?,
        roles: json(&roles)?,
        grants: json(&grants)?,
        created_at: from_millis(row.try_get("created_at")?),
        expires_at: expires.map(from_millis),
        revoked_at: revoked.map(from_millis),
    })
}

fn tag_event_row(row: PgRow) -> Result<TagEvent, MetaError> {
    let action: String = row.try_get("action")?;
    let action = match action.as_str() {
        "create" => TagAction::Create,
        "move" => TagAction::Move,
        "delete" => TagAction::Delete,
        other => return Err(MetaError::Corrupt(format!("unknown tag action {other}"))),
    };
    let from: Option<String> = row.try_get("from_digest")?;
    let to: Option<String> = row.try_get("to_digest")?;
    Ok(TagEvent {
        id: row.try_get("id")?,
        at: from_millis(row.try_get("at")?),
        action,
        from: from.map(digest).transpose()?,
        to: to.map(digest).transpose()?,
        actor: Actor { name: row.try_get("actor")?, address: row.try_get("address")? },
    })
}

#[async_trait]
impl MetadataStore for PostgresStore {
    async fn ping(&self) -> Result<(), MetaError> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    async fn begin(&self, now: SystemTime) -> Result<Box<dyn MetaTx>, MetaError> {
        let tx = self.write.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
        Ok(Box::new(tx::PgTx { tx, now: millis(now), changed: Default::default() }))
    }

    async fn shared_key(&self, name: &str, candidate: &[u8], now: SystemTime) -> Result<Option<Vec<u8>>, MetaError> {
        let key: Option<Vec<u8>> = sqlx::query_scalar(
            "WITH ins AS (INSERT INTO signing_keys (name, pkcs8, created_at) VALUES ($1, $2, $3)
                          ON CONFLICT DO NOTHING RETURNING pkcs8)
             SELECT pkcs8 FROM ins UNION ALL SELECT pkcs8 FROM signing_keys WHERE name = $1 LIMIT 1",
        )
        .bind(name)
        .bind(candidate)
        .bind(millis(now))
        .fetch_optional(&self.write)
        .await?;
        match key {
            Some(key) => Ok(Some(key)),
            // Another node inserted it after this statement's snapshot: read it now.
            None => Ok(Some(
                sqlx::query_scalar("SELECT pkcs8 FROM signing_keys WHERE name = $1")
                    .bind(name)
                    .fetch_one(&self.write)
                    .await?,
            )),
        }
    }

    async fn change_feed(&self) -> Result<Option<super::ChangeFeed>, MetaError> {
        Ok(Some(notify::feed(&self.read).await?))
    }

    async fn check_write(&self) -> Result<(), MetaError> {
        sqlx::query(
            "INSERT INTO write_check (id, checked_at) VALUES (1, $1)
             ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
        )
        .bind(millis(SystemTime::now()))
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn repositories(&self, last: Option<&str>, n: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar(
            // repo_blobs first: its rows are narrow, so the links of a page of repositories
            // sit on a few index pages, while manifests rows carry their bodies (measured by
            // bench/scale: the catalog page cost 2.5-6x more the other way round).
            "SELECT name FROM repositories r WHERE name > $1
               AND (EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo = r.name)
                 OR EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name))
             ORDER BY name LIMIT $2",
        )
        .bind(last.unwrap_or(""))
        .bind(n as i64)
        .fetch_all(&self.read)
        .await?;
        Ok(rows)
    }

    async fn repository_exists(&self, repo: &RepoName) -> Result<bool, MetaError> {
        let found: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM repo_blobs WHERE repo = $1) OR EXISTS (SELECT 1 FROM manifests WHERE repo = $1)",
        )
        .bind(repo.as_str())
        .fetch_one(&self.read)
        .await?;
        Ok(found)
    }

    async fn blob(&self, repo: &RepoName, d: &Digest) -> Result<Option<BlobRecord>, MetaError> {
        let row = sqlx::query(
            "SELECT b.size, b.location FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let location: String = r.try_get("location")?;
            Ok(BlobRecord { digest: d.clone(), size: r.try_get::<i64, _>("size")? as u64, location: json(&location)? })
        })
        .transpose()
    }

    async fn blob_with_mark(&self, repo: &RepoName, d: &Digest) -> Result<Option<(BlobRecord, SystemTime)>, MetaError> {
        let row = sqlx::query(
            "SELECT b.size, b.location, b.touched_at FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
             WHERE rb.repo = $1 AND rb.digest = $2",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .fetch_optional(&self.read)
        .await?;
        row.map(|r| {
            let location: String = r.try_get("location")?;
            let blob =
                BlobRecord { digest: d.clone(), size: r.try_get::<i64, _>("size")? as u64, location: json(&location)? };
            Ok((blob, from_millis(r.try_get("touched_at")?)))
        })
        .transpose()
    }

    async fn touch_linked_blob(&self, repo: &RepoName, d: &Digest, at: SystemTime) -> Result<bool, MetaError> {
        gc::touch_linked(&self.write, repo, d, at).await
    }

    async fn blob_repositories(&self, d: &Digest, limit: u32) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar("SELECT repo FROM repo_blobs WHERE digest = $1 ORDER BY repo LIMIT $2")
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
        sqlx::query("INSERT INTO uploads (id, repo, algorithm, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)")
            .bind(id)
            .bind(repo.as_str())
            .bind(algorithm.as_str())
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
        let row = sqlx::query("SELECT * FROM uploads WHERE id = $1 AND repo = $2")
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
        // One conditional UPDATE: of two racing PATCHes (on any nodes) the second finds the
        // length moved on (READ COMMITTED re-checks the condition on the row it waited for).
        let seg = serde_json::to_string(&[segment]).map_err(|e| MetaError::Corrupt(e.to_string()))?;
        let done = sqlx::query(
            "UPDATE uploads SET len = len + $1, segments = (segments::jsonb || $6::jsonb)::text,
                    hash_state = $2, updated_at = $3
             WHERE id = $4 AND len = $5",
        )
        .bind(segment.len as i64)
        .bind(hash_state)
        .bind(millis(now))
        .bind(id)
        .bind(expected_len as i64)
        .bind(seg)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn delete_upload(&self, id: &str, now: SystemTime) -> Result<Option<UploadSession>, MetaError> {
        // The ended session's objects are recorded as garbage in the same statement, so GC
        // removes them if the caller's own removal never happens (a crash).
        let row = sqlx::query(
            "WITH gone AS (DELETE FROM uploads WHERE id = $1 RETURNING *),
                  garbage AS (INSERT INTO upload_garbage (upload, since) SELECT id, $2 FROM gone
                              ON CONFLICT DO NOTHING)
             SELECT * FROM gone",
        )
        .bind(id)
        .bind(millis(now))
        .fetch_optional(&self.write)
        .await?;
        row.map(upload_row).transpose()
    }

    async fn expire_uploads(&self, cutoff: SystemTime, now: SystemTime) -> Result<Vec<UploadSession>, MetaError> {
        let rows = sqlx::query(
            "WITH gone AS (DELETE FROM uploads WHERE updated_at < $1 RETURNING *),
                  garbage AS (INSERT INTO upload_garbage (upload, since) SELECT id, $2 FROM gone
                              ON CONFLICT DO NOTHING)
             SELECT * FROM gone",
        )
        .bind(millis(cutoff))
        .bind(millis(now))
        .fetch_all(&self.write)
        .await?;
        rows.into_iter().map(upload_row).collect()
    }

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, MetaError> {
        let row = match reference {
            Reference::Digest(d) => {
                sqlx::query("SELECT * FROM manifests WHERE repo = $1 AND digest = $2")
                    .bind(repo.as_str())
                    .bind(d.as_str())
                    .fetch_optional(&self.read)
                    .await?
            }
            Reference::Tag(t) => {
                sqlx::query(
                    "SELECT m.* FROM tags t JOIN manifests m ON m.repo = t.repo AND m.digest = t.digest
                     WHERE t.repo = $1 AND t.name = $2",
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
            sqlx::query("SELECT * FROM tag_history WHERE repo = $1 AND tag = $2 AND id < $3 ORDER BY id DESC LIMIT $4")
                .bind(repo.as_str())
                .bind(tag.as_str())
                .bind(before.unwrap_or(i64::MAX))
                .bind(limit as i64)
                .fetch_all(&self.read)
                .await?;
        rows.into_iter().map(tag_event_row).collect()
    }

    async fn robot(&self, name: &str) -> Result<Option<RobotRecord>, MetaError> {
        let row = sqlx::query("SELECT * FROM robots WHERE name = $1").bind(name).fetch_optional(&self.read).await?;
        row.map(robot_row).transpose()
    }

    async fn robots(&self) -> Result<Vec<RobotRecord>, MetaError> {
        let rows = sqlx::query("SELECT * FROM robots ORDER BY name").fetch_all(&self.read).await?;
        rows.into_iter().map(robot_row).collect()
    }

    async fn tag_event_at(&self, repo: &RepoName, tag: &Tag, at: SystemTime) -> Result<Option<TagEvent>, MetaError> {
        let row = sqlx::query(
            "SELECT * FROM tag_history WHERE repo = $1 AND tag = $2 AND at <= $3 ORDER BY at DESC, id DESC LIMIT 1",
        )
        .bind(repo.as_str())
        .bind(tag.as_str())
        .bind(millis(at))
        .fetch_optional(&self.read)
        .await?;
        row.map(tag_event_row).transpose()
    }

    async fn tags(&self, repo: &RepoName) -> Result<Vec<String>, MetaError> {
        let rows = sqlx::query_scalar("SELECT name FROM tags WHERE repo = $1 ORDER BY name")
            .bind(repo.as_str())
            .fetch_all(&self.read)
            .await?;
        Ok(rows)
    }

    async fn parents(&self, repo: &RepoName, child: &Digest, limit: u32) -> Result<Vec<Digest>, MetaError> {
        let rows: Vec<String> = sqlx::query_scalar(
            "SELECT manifest FROM manifest_children WHERE repo = $1 AND child = $2 ORDER BY manifest LIMIT $3",
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
             WHERE repo = $1 AND subject = $2 ORDER BY digest",
        )
        .bind(repo.as_str())
        .bind(subject.as_str())
        .fetch_all(&self.read)
        .await?;
        rows.into_iter()
            .map(|r| {
                let annotations: Option<String> = r.try_get("annotations")?;
                Ok(Referrer {
                    digest: digest(r.try_get("digest")?)?,
                    media_type: r.try_get("media_type")?,
                    size: r.try_get::<i64, _>("size")? as u64,
                    artifact_type: r.try_get("artifact_type")?,
                    annotations: annotations.as_deref().map(json).transpose()?,
                })
            })
            .collect()
    }

    async fn events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
        ledger::events(&self.read, filter, limit).await
    }

    async fn ledger_head(&self) -> Result<Option<(i64, String)>, MetaError> {
        ledger::head(&self.read).await
    }

    async fn ledger_archive_cut(&self) -> Result<Option<(i64, String)>, MetaError> {
        ledger::archive_cut(&self.read).await
    }

    async fn ledger_archives(&self) -> Result<Vec<LedgerArchive>, MetaError> {
        ledger::archives(&self.read).await
    }

    async fn archive_ledger(&self, seq: i64, hash: &str, file: &str, at: SystemTime) -> Result<u64, MetaError> {
        ledger::archive(&self.write, seq, hash, file, millis(at)).await
    }

    async fn add_checkpoint(&self, cp: &Checkpoint) -> Result<(), MetaError> {
        ledger::add_checkpoint(&self.write, cp).await
    }

    async fn checkpoints(&self, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, MetaError> {
        ledger::checkpoints(&self.read, after, limit).await
    }

    async fn last_checkpoint(&self) -> Result<Option<Checkpoint>, MetaError> {
        ledger::last_checkpoint(&self.read).await
    }

    async fn add_pulls(&self, pulls: &[(RepoName, Digest, u64, SystemTime)]) -> Result<(), MetaError> {
        ledger::add_pulls(&self.write, pulls).await
    }

    async fn pulls(&self, repo: &RepoName, digest: &Digest) -> Result<Option<PullStats>, MetaError> {
        ledger::pulls(&self.read, repo, digest).await
    }

    async fn touch_blobs(&self, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError> {
        gc::touch(&self.write, touches).await
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
        gc::lock(&self.write, holder, now, until).await
    }

    async fn gc_lock_holder(&self) -> Result<Option<(String, SystemTime)>, MetaError> {
        gc::lock_holder(&self.write).await
    }

    async fn gc_lock_take_over(&self, holder: &str, dead: &str, until: SystemTime) -> Result<bool, MetaError> {
        gc::take_over(&self.write, holder, dead, until).await
    }

    async fn gc_unlock(&self, holder: &str) -> Result<(), MetaError> {
        gc::unlock(&self.write, holder).await
    }

    async fn upload_garbage(&self, limit: u32) -> Result<Vec<String>, MetaError> {
        gc::garbage(&self.read, limit).await
    }

    async fn forget_upload_garbage(&self, ids: &[String]) -> Result<(), MetaError> {
        gc::forget(&self.write, ids).await
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
        copy::load(&self.write).await
    }

    async fn replace_shared_key(&self, name: &str, pkcs8: &[u8], now: SystemTime) -> Result<bool, MetaError> {
        copy::replace_shared_key(&self.write, name, pkcs8, millis(now)).await?;
        Ok(true)
    }

    async fn retention_snapshot(&self, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
        // One statement, so one snapshot (postgres/retention.rs).
        retention::snapshot(&self.read, repo).await
    }
}
