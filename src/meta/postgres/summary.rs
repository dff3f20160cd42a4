//! Read-only summaries for the REST API on PostgreSQL: repositories with their counts and
//! size, and what the tags of one manifest did (for its provenance).

use std::time::SystemTime;

use sqlx::{PgPool, Row};

use super::tag_event_row;
use crate::meta::{DigestTagEvent, MetaError, RepositorySummary, StorageTotals, from_millis};
use crate::oci::{Digest, RepoName, Tag};

pub(super) async fn repository_summaries(
    pool: &PgPool,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<RepositorySummary>, MetaError> {
    // Each blob is counted once per repository (repo_blobs has one row per pair); manifests
    // are stored per repository, so their bodies count in each.
    let rows = sqlx::query(
        "SELECT r.name,
                (SELECT count(*) FROM tags t WHERE t.repo = r.name) AS tag_count,
                (SELECT count(*) FROM manifests m WHERE m.repo = r.name) AS manifest_count,
                ((SELECT coalesce(sum(m.size), 0) FROM manifests m WHERE m.repo = r.name)
                  + (SELECT coalesce(sum(b.size), 0) FROM repo_blobs rb JOIN blobs b ON b.digest = rb.digest
                     WHERE rb.repo = r.name))::bigint AS size,
                greatest(coalesce((SELECT max(m.created_at) FROM manifests m WHERE m.repo = r.name), 0),
                         coalesce((SELECT max(t.updated_at) FROM tags t WHERE t.repo = r.name), 0)) AS last_push
         FROM repositories r
         WHERE r.name > $1
           AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name)
             OR EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo = r.name))
         ORDER BY r.name LIMIT $2",
    )
    .bind(after.unwrap_or(""))
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let last: i64 = r.try_get("last_push")?;
            Ok(RepositorySummary {
                name: r.try_get("name")?,
                tag_count: r.try_get::<i64, _>("tag_count")? as u64,
                manifest_count: r.try_get::<i64, _>("manifest_count")? as u64,
                size: r.try_get::<i64, _>("size")?.max(0) as u64,
                last_push: (last > 0).then(|| from_millis(last)),
            })
        })
        .collect()
}

pub(super) async fn tags_pointing_at(
    pool: &PgPool,
    repo: &RepoName,
    d: &Digest,
) -> Result<Vec<(Tag, SystemTime)>, MetaError> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT name, updated_at FROM tags WHERE repo = $1 AND digest = $2 ORDER BY name")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(name, at)| Ok((Tag::parse(&name).map_err(|e| MetaError::Corrupt(e.to_string()))?, from_millis(at))))
        .collect()
}

pub(super) async fn digest_tag_history(
    pool: &PgPool,
    repo: &RepoName,
    d: &Digest,
    limit: u32,
) -> Result<Vec<DigestTagEvent>, MetaError> {
    let rows = sqlx::query(
        "SELECT * FROM tag_history WHERE repo = $1 AND (to_digest = $2 OR from_digest = $2) ORDER BY id LIMIT $3",
    )
    .bind(repo.as_str())
    .bind(d.as_str())
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            let tag: String = row.try_get("tag")?;
            let tag = Tag::parse(&tag).map_err(|e| MetaError::Corrupt(e.to_string()))?;
            Ok(DigestTagEvent { tag, event: tag_event_row(row)? })
        })
        .collect()
}

pub(super) async fn manifest_stored_at(
    pool: &PgPool,
    repo: &RepoName,
    d: &Digest,
) -> Result<Option<SystemTime>, MetaError> {
    let at: Option<i64> = sqlx::query_scalar("SELECT created_at FROM manifests WHERE repo = $1 AND digest = $2")
        .bind(repo.as_str())
        .bind(d.as_str())
        .fetch_optional(pool)
        .await?;
    Ok(at.map(from_millis))
}

/// The whole registry's figures in one statement (one snapshot): every stored blob once,
/// however many repositories link it, and every manifest row.
pub(super) async fn storage_totals(pool: &PgPool) -> Result<StorageTotals, MetaError> {
    let r = sqlx::query(
        "SELECT (SELECT count(*) FROM repositories r
                  WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name)
                     OR EXISTS (SELECT 1 FROM repo_blobs b WHERE b.repo = r.name)) AS repositories,
                (SELECT count(*) FROM tags) AS tag_count,
                (SELECT count(*) FROM manifests) AS manifest_count,
                (SELECT count(*) FROM blobs) AS blob_count,
                (SELECT coalesce(sum(size), 0) FROM blobs)::bigint AS blob_bytes,
                (SELECT coalesce(sum(size), 0) FROM manifests)::bigint AS manifest_bytes,
                (SELECT coalesce(sum(size), 0) FROM blobs b
                  WHERE NOT EXISTS (SELECT 1 FROM repo_blobs rb JOIN manifest_blobs mb
                                    ON mb.repo = rb.repo AND mb.blob = rb.digest WHERE rb.digest = b.digest))::bigint
                  AS unreferenced_bytes",
    )
    .fetch_one(pool)
    .await?;
    let n = |c: &str| -> Result<u64, MetaError> { Ok(r.try_get::<i64, _>(c)?.max(0) as u64) };
    Ok(StorageTotals {
        repositories: n("repositories")?,
        tag_count: n("tag_count")?,
        manifest_count: n("manifest_count")?,
        blob_count: n("blob_count")?,
        blob_bytes: n("blob_bytes")?,
        manifest_bytes: n("manifest_bytes")?,
        unreferenced_bytes: n("unreferenced_bytes")?,
    })
}
