//! Garbage-collection queries on PostgreSQL: touches, candidates, the collector lock and the
//! upload-garbage list (migrations/sqlite/0007_gc.sql explains the columns).

use std::collections::BTreeMap;
use std::time::SystemTime;

use sqlx::{PgPool, Row};

use super::{digest, json, millis};
use crate::meta::{BlobRecord, LinkCandidate, MetaError, from_millis};
use crate::oci::{Digest, RepoName};

/// `touched_at = greatest(touched_at, at)` for each blob, in one transaction and in digest
/// order (two nodes flushing at once lock rows in the same order and cannot deadlock).
pub(super) async fn touch(pool: &PgPool, touches: &[(Digest, SystemTime)]) -> Result<(), MetaError> {
    if touches.is_empty() {
        return Ok(());
    }
    let mut latest: BTreeMap<&str, i64> = BTreeMap::new();
    for (d, at) in touches {
        let at = millis(*at);
        latest.entry(d.as_str()).and_modify(|t| *t = (*t).max(at)).or_insert(at);
    }
    let mut tx = pool.begin().await?;
    for (d, at) in latest {
        sqlx::query("UPDATE blobs SET touched_at = greatest(touched_at, $1) WHERE digest = $2")
            .bind(at)
            .bind(d)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Unlinked blobs not touched since `cutoff`, by digest.
pub(super) async fn candidates(
    pool: &PgPool,
    cutoff: SystemTime,
    after: Option<&Digest>,
    limit: u32,
) -> Result<Vec<BlobRecord>, MetaError> {
    let rows = sqlx::query(
        "SELECT digest, size, location FROM blobs b
         WHERE touched_at < $1 AND digest > $2
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb WHERE rb.digest = b.digest)
         ORDER BY digest LIMIT $3",
    )
    .bind(millis(cutoff))
    .bind(after.map(Digest::as_str).unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let location: String = r.try_get("location")?;
            Ok(BlobRecord {
                digest: digest(r.try_get("digest")?)?,
                size: r.try_get::<i64, _>("size")? as u64,
                location: json(&location)?,
            })
        })
        .collect()
}

/// Links no manifest of their repository references, whose blob is not touched since `cutoff`,
/// by (repository, digest).
pub(super) async fn link_candidates(
    pool: &PgPool,
    cutoff: SystemTime,
    after: Option<(&str, &Digest)>,
    limit: u32,
) -> Result<Vec<LinkCandidate>, MetaError> {
    let (after_repo, after_digest) = after.map(|(r, d)| (r, d.as_str())).unwrap_or(("", ""));
    let rows = sqlx::query(
        "SELECT rb.repo, rb.digest, b.size FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
         WHERE b.touched_at < $1 AND (rb.repo, rb.digest) > ($2, $3)
           AND NOT EXISTS (SELECT 1 FROM manifest_blobs mb WHERE mb.repo = rb.repo AND mb.blob = rb.digest)
         ORDER BY rb.repo, rb.digest LIMIT $4",
    )
    .bind(millis(cutoff))
    .bind(after_repo)
    .bind(after_digest)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let repo: String = r.try_get("repo")?;
            Ok(LinkCandidate {
                repo: RepoName::parse(&repo).map_err(|e| MetaError::Corrupt(e.to_string()))?,
                digest: digest(r.try_get("digest")?)?,
                size: r.try_get::<i64, _>("size")? as u64,
            })
        })
        .collect()
}

/// Blobs no manifest references anywhere, not touched since `cutoff`, by digest (a dry run's
/// "would free": the first stage would unlink every link they have).
pub(super) async fn unreferenced(
    pool: &PgPool,
    cutoff: SystemTime,
    after: Option<&Digest>,
    limit: u32,
) -> Result<Vec<BlobRecord>, MetaError> {
    let rows = sqlx::query(
        "SELECT digest, size, location FROM blobs b
         WHERE touched_at < $1 AND digest > $2
           AND NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN manifest_blobs mb
                           ON mb.repo = rb.repo AND mb.blob = rb.digest WHERE rb.digest = b.digest)
         ORDER BY digest LIMIT $3",
    )
    .bind(millis(cutoff))
    .bind(after.map(Digest::as_str).unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let location: String = r.try_get("location")?;
            Ok(BlobRecord {
                digest: digest(r.try_get("digest")?)?,
                size: r.try_get::<i64, _>("size")? as u64,
                location: json(&location)?,
            })
        })
        .collect()
}

/// `touched_at = greatest(touched_at, at)` only while `repo` links the blob; one statement.
/// The link row is locked (`FOR KEY SHARE`) while it is checked: a GC unlink of it either
/// committed before (no link, false) or waits for this touch and then sees the new mark
/// (`unlink_unreferenced` locks the link before it checks the mark).
pub(super) async fn touch_linked(
    pool: &PgPool,
    repo: &RepoName,
    d: &Digest,
    at: SystemTime,
) -> Result<bool, MetaError> {
    let done = sqlx::query(
        "UPDATE blobs SET touched_at = greatest(touched_at, $1)
         WHERE digest = $2
           AND EXISTS (SELECT 1 FROM repo_blobs WHERE repo = $3 AND digest = $2 FOR KEY SHARE)",
    )
    .bind(millis(at))
    .bind(d.as_str())
    .bind(repo.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The lock row's holder and expiry.
pub(super) async fn lock_holder(pool: &PgPool) -> Result<Option<(String, SystemTime)>, MetaError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT holder, expires_at FROM gc_lock WHERE id = 1").fetch_optional(pool).await?;
    Ok(row.map(|(h, at)| (h, from_millis(at))))
}

/// Moves the lock from `dead` to `holder`, only if `dead` still has it; one statement (an
/// UPDATE re-checks `holder` on the row's latest version after waiting for a concurrent one,
/// so of two nodes taking over at once only one gets it).
pub(super) async fn take_over(pool: &PgPool, holder: &str, dead: &str, until: SystemTime) -> Result<bool, MetaError> {
    let done = sqlx::query("UPDATE gc_lock SET holder = $1, expires_at = $2 WHERE id = 1 AND holder = $3")
        .bind(holder)
        .bind(millis(until))
        .bind(dead)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes or renews the single lock row in one statement: `ON CONFLICT DO UPDATE` locks the
/// row and checks the condition on its latest version, so of two nodes only one gets it.
pub(super) async fn lock(pool: &PgPool, holder: &str, now: SystemTime, until: SystemTime) -> Result<bool, MetaError> {
    let done = sqlx::query(
        "INSERT INTO gc_lock (id, holder, expires_at) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET holder = $1, expires_at = $2
         WHERE gc_lock.holder = $1 OR gc_lock.expires_at <= $3",
    )
    .bind(holder)
    .bind(millis(until))
    .bind(millis(now))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Releases the lock if `holder` has it.
pub(super) async fn unlock(pool: &PgPool, holder: &str) -> Result<(), MetaError> {
    sqlx::query("DELETE FROM gc_lock WHERE id = 1 AND holder = $1").bind(holder).execute(pool).await?;
    Ok(())
}

/// Upload ids recorded as garbage, oldest first.
pub(super) async fn garbage(pool: &PgPool, limit: u32) -> Result<Vec<String>, MetaError> {
    let rows = sqlx::query_scalar("SELECT upload FROM upload_garbage ORDER BY since, upload LIMIT $1")
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows)
}

/// Forgets garbage uploads whose objects are gone.
pub(super) async fn forget(pool: &PgPool, ids: &[String]) -> Result<(), MetaError> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query("DELETE FROM upload_garbage WHERE upload = ANY($1)").bind(ids).execute(pool).await?;
    Ok(())
}
