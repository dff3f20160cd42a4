//! Reads for retention on PostgreSQL: one repository's tags, tag history, manifests, index
//! children, blobs used and pull counters, and the recent targets of one tag (rollback
//! windows).
//!
//! The snapshot is ONE statement (each part aggregated as a JSON array), because a statement
//! sees one snapshot even at READ COMMITTED: the parts agree with each other without a
//! REPEATABLE READ transaction, on the read pool and inside a write transaction alike. Inside
//! a write transaction the repository's tag rows are locked first (`FOR UPDATE`, by name, the
//! order `tags_of` uses), so no tag it read moves or goes before the transaction ends; new tags
//! and manifests are not locked out, which the deleting code re-checks with its own locks
//! (`tags_of`, `tag_for_update`, `holder`) and the schema's foreign keys.

use sqlx::{PgConnection, Row};

use super::digest;
use crate::meta::{MetaError, PullStats, RetentionSnapshot, StoredManifest, TagChange, from_millis};
use crate::oci::{Digest, RepoName, Tag};

fn tag(s: String) -> Result<Tag, MetaError> {
    Tag::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

fn parts<T: serde::de::DeserializeOwned>(row: &sqlx::postgres::PgRow, column: &str) -> Result<Vec<T>, MetaError> {
    let text: String = row.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| MetaError::Corrupt(format!("retention snapshot {column}: {e}")))
}

/// Locks the repository's tag rows for the rest of the transaction `conn` is in.
pub(super) async fn lock_tags(conn: &mut PgConnection, repo: &RepoName) -> Result<(), MetaError> {
    sqlx::query("SELECT name FROM tags WHERE repo = $1 ORDER BY name FOR UPDATE")
        .bind(repo.as_str())
        .fetch_all(&mut *conn)
        .await?;
    Ok(())
}

/// Reads the snapshot in one statement.
pub(super) async fn snapshot<'e>(
    conn: impl sqlx::PgExecutor<'e>,
    repo: &RepoName,
) -> Result<RetentionSnapshot, MetaError> {
    let row = sqlx::query(
        "SELECT
           (SELECT coalesce(json_agg(json_build_array(name, digest, updated_at) ORDER BY name), '[]')
              FROM tags WHERE repo = $1)::text AS tags,
           (SELECT coalesce(json_agg(json_build_array(tag, from_digest, to_digest, at) ORDER BY id DESC), '[]')
              FROM tag_history WHERE repo = $1)::text AS history,
           (SELECT coalesce(json_agg(json_build_array(digest, size, subject, created_at) ORDER BY digest), '[]')
              FROM manifests WHERE repo = $1)::text AS manifests,
           (SELECT coalesce(json_agg(json_build_array(manifest, child) ORDER BY manifest, child), '[]')
              FROM manifest_children WHERE repo = $1)::text AS children,
           (SELECT coalesce(json_agg(json_build_array(mb.manifest, mb.blob, b.size) ORDER BY mb.manifest, mb.blob), '[]')
              FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob WHERE mb.repo = $1)::text AS blobs,
           (SELECT coalesce(json_agg(json_build_array(digest, count, last_pulled) ORDER BY digest), '[]')
              FROM manifest_pulls WHERE repo = $1)::text AS pulls",
    )
    .bind(repo.as_str())
    .fetch_one(conn)
    .await?;
    let mut out = RetentionSnapshot::default();
    for (name, d, at) in parts::<(String, String, i64)>(&row, "tags")? {
        out.tags.push((tag(name)?, digest(d)?, from_millis(at)));
    }
    for (t, from, to, at) in parts::<(String, Option<String>, Option<String>, i64)>(&row, "history")? {
        out.history.push(TagChange {
            tag: tag(t)?,
            from: from.map(digest).transpose()?,
            to: to.map(digest).transpose()?,
            at: from_millis(at),
        });
    }
    for (d, size, subject, at) in parts::<(String, i64, Option<String>, i64)>(&row, "manifests")? {
        out.manifests.push(StoredManifest {
            digest: digest(d)?,
            size: size as u64,
            subject: subject.map(digest).transpose()?,
            pushed_at: from_millis(at),
        });
    }
    for (m, c) in parts::<(String, String)>(&row, "children")? {
        out.children.push((digest(m)?, digest(c)?));
    }
    for (m, b, size) in parts::<(String, String, i64)>(&row, "blobs")? {
        out.blobs.push((digest(m)?, digest(b)?, size as u64));
    }
    for (d, count, last) in parts::<(String, i64, i64)>(&row, "pulls")? {
        out.pulls.push((digest(d)?, PullStats { count: count as u64, last_pulled: from_millis(last) }));
    }
    Ok(out)
}

/// The last `limit` distinct digests `tag` pointed to, newest first.
pub(super) async fn tag_targets(
    conn: &mut PgConnection,
    repo: &RepoName,
    t: &Tag,
    limit: u32,
) -> Result<Vec<Digest>, MetaError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT to_digest FROM tag_history WHERE repo = $1 AND tag = $2 AND to_digest IS NOT NULL
         GROUP BY to_digest ORDER BY max(id) DESC LIMIT $3",
    )
    .bind(repo.as_str())
    .bind(t.as_str())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(digest).collect()
}
