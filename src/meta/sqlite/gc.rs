//! Garbage-collection queries on SQLite: touches, candidates, the collector lock and the
//! upload-garbage list (migrations/sqlite/0006_gc.sql explains the columns).

use std::time::SystemTime;

use sqlx::{Row, SqliteConnection, SqlitePool};

use super::{digest, json, millis};
use crate::meta::from_millis;
use crate::meta::{BlobRecord, LinkCandidate, MetaError};
use crate::oci::{Digest, RepoName};

/// `touched_at = max(touched_at, at)` for each blob (on the write connection, inside a
/// transaction).
pub(super) async fn touch(tx: &mut SqliteConnection, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError> {
    for (d, at) in touches {
        sqlx::query("UPDATE blobs SET touched_at = max(touched_at, ?) WHERE digest = ?")
            .bind(millis(*at))
            .bind(d.as_str())
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// Unlinked blobs not touched since `cutoff`, by digest.
pub(super) async fn candidates(
    pool: &SqlitePool,
    cutoff: SystemTime,
    after: Option<&Digest>,
    limit: u32,
) -> Result<Vec<BlobRecord>, MetaError> {
    let rows = sqlx::query(
        "SELECT digest, size, location FROM blobs b
         WHERE touched_at < ?1 AND digest > ?2
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
         ORDER BY digest LIMIT ?3",
    )
    .bind(millis(cutoff))
    .bind(after.map(Digest::as_str).unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let location: String = r.get("location");
            Ok(BlobRecord {
                digest: digest(r.get("digest"))?,
                size: r.get::<i64, _>("size") as u64,
                location: json(&location)?,
            })
        })
        .collect()
}

/// Links no manifest of their repository references, whose blob is not touched since `cutoff`,
/// by (repository, digest).
pub(super) async fn link_candidates(
    pool: &SqlitePool,
    cutoff: SystemTime,
    after: Option<(&str, &Digest)>,
    limit: u32,
) -> Result<Vec<LinkCandidate>, MetaError> {
    let (after_repo, after_digest) = after.map(|(r, d)| (r, d.as_str())).unwrap_or(("", ""));
    let rows = sqlx::query(
        "SELECT rb.repo, rb.digest, b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE b.touched_at < ?1 AND (rb.repo, rb.digest) > (?2, ?3)
           AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.repo = rb.repo AND mb.blob = rb.digest)
         ORDER BY rb.repo, rb.digest LIMIT ?4",
    )
    .bind(millis(cutoff))
    .bind(after_repo)
    .bind(after_digest)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let repo: String = r.get("repo");
            Ok(LinkCandidate {
                repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
                digest: digest(r.get("digest"))?,
                size: r.get::<i64, _>("size") as u64,
            })
        })
        .collect()
}

/// Blobs no manifest references anywhere, not touched since `cutoff`, by digest (a dry run's
/// "would free": the first stage would unlink every link they have).
pub(super) async fn unreferenced(
    pool: &SqlitePool,
    cutoff: SystemTime,
    after: Option<&Digest>,
    limit: u32,
) -> Result<Vec<BlobRecord>, MetaError> {
    let rows = sqlx::query(
        "SELECT digest, size, location FROM blobs b
         WHERE touched_at < ?1 AND digest > ?2
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN manifest_blobs mb
                           ON mb.repo = rb.repo AND mb.blob = rb.digest WHERE rb.digest = b.digest)
         ORDER BY digest LIMIT ?3",
    )
    .bind(millis(cutoff))
    .bind(after.map(Digest::as_str).unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let location: String = r.get("location");
            Ok(BlobRecord {
                digest: digest(r.get("digest"))?,
                size: r.get::<i64, _>("size") as u64,
                location: json(&location)?,
            })
        })
        .collect()
}

/// `touched_at = max(touched_at, at)` only while `repo` links the blob; one statement.
pub(super) async fn touch_linked(
    conn: &mut SqliteConnection,
    repo: &RepoName,
    d: &Digest,
    at: SystemTime,
) -> Result<bool, MetaError> {
    let done = sqlx::query(
        "UPDATE blobs SET touched_at = max(touched_at, ?1)
         WHERE digest = ?2 AND EXISTS (SELECT 1 FROM repo_blobs WHERE repo = ?3 AND digest = ?2)",
    )
    .bind(millis(at))
    .bind(d.as_str())
    .bind(repo.as_str())
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes or renews the single lock row; one statement, so atomic on the write connection and
/// serialized with other processes by SQLite's write lock.
pub(super) async fn lock(
    conn: &mut SqliteConnection,
    holder: &str,
    now: SystemTime,
    until: SystemTime,
) -> Result<bool, MetaError> {
    let done = sqlx::query(
        "INSERT INTO gc_lock (id, holder, expires_at) VALUES (1, ?1, ?2)
         ON CONFLICT (id) DO UPDATE SET holder = ?1, expires_at = ?2
         WHERE gc_lock.holder = ?1 OR gc_lock.expires_at <= ?3",
    )
    .bind(holder)
    .bind(millis(until))
    .bind(millis(now))
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The lock row's holder and expiry.
pub(super) async fn lock_holder(pool: &SqlitePool) -> Result<Option<(String, SystemTime)>, MetaError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT holder, expires_at FROM gc_lock WHERE id = 1").fetch_optional(pool).await?;
    Ok(row.map(|(h, at)| (h, from_millis(at))))
}

/// Moves the lock from `dead` to `holder`, only if `dead` still has it; one statement.
pub(super) async fn take_over(
    conn: &mut SqliteConnection,
    holder: &str,
    dead: &str,
    until: SystemTime,
) -> Result<bool, MetaError> {
    let done = sqlx::query("UPDATE gc_lock SET holder = ?1, expires_at = ?2 WHERE id = 1 AND holder = ?3")
        .bind(holder)
        .bind(millis(until))
        .bind(dead)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases the lock if `holder` has it.
pub(super) async fn unlock(conn: &mut SqliteConnection, holder: &str) -> Result<(), MetaError> {
    sqlx::query("DELETE FROM gc_lock WHERE id = 1 AND holder = ?").bind(holder).execute(conn).await?;
    Ok(())
}

/// Upload ids recorded as garbage, oldest first.
pub(super) async fn garbage(pool: &SqlitePool, limit: u32) -> Result<Vec<String>, MetaError> {
    let rows = sqlx::query_scalar("SELECT upload FROM upload_garbage ORDER BY since, upload LIMIT ?")
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// Forgets garbage uploads whose objects are gone.
pub(super) async fn forget(conn: &mut SqliteConnection, ids: &[String]) -> Result<(), MetaError> {
    if ids.is_empty() {
        return Ok(());
    }
    let list = serde_json::to_string(ids).unwrap_or_else(|_| "[]".into());
    sqlx::query("DELETE FROM upload_garbage WHERE upload IN (SELECT value FROM json_each(?))")
        .bind(list)
        .execute(conn)
        .await?;
    Ok(())
}
