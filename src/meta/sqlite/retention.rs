//! Reads for retention: one repository's tags, tag history, manifests, index children, blobs
//! used and pull counters, on one connection inside one transaction (a snapshot), and the recent
//! targets of one tag (rollback windows).

use sqlx::{Row, SqliteConnection};

use super::digest;
use crate::meta::{MetaError, PullStats, RetentionSnapshot, StoredManifest, TagChange, from_millis};
use crate::oci::{Digest, RepoName, Tag};

fn tag(s: String) -> Result<Tag, MetaError> {
    Tag::parse(&s).map_err(|e| MetaError::Corrupt(e.to_string()))
}

/// Reads the snapshot on `conn`, which must be inside a transaction.
pub(super) async fn snapshot(conn: &mut SqliteConnection, repo: &RepoName) -> Result<RetentionSnapshot, MetaError> {
    let r = repo.as_str();
    let mut out = RetentionSnapshot::default();
    let rows = sqlx::query("SELECT name, digest, updated_at FROM tags WHERE repo = ? ORDER BY name")
        .bind(r)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        out.tags.push((tag(row.get("name"))?, digest(row.get("digest"))?, from_millis(row.get("updated_at"))));
    }
    let rows = sqlx::query("SELECT tag, from_digest, to_digest, at FROM tag_history WHERE repo = ? ORDER BY id DESC")
        .bind(r)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let from: Option<String> = row.get("from_digest");
        let to: Option<String> = row.get("to_digest");
        out.history.push(TagChange {
            tag: tag(row.get("tag"))?,
            from: from.map(digest).transpose()?,
            to: to.map(digest).transpose()?,
            at: from_millis(row.get("at")),
        });
    }
    let rows = sqlx::query("SELECT digest, size, subject, created_at FROM manifests WHERE repo = ? ORDER BY digest")
        .bind(r)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let subject: Option<String> = row.get("subject");
        out.manifests.push(StoredManifest {
            digest: digest(row.get("digest"))?,
            size: row.get::<i64, _>("size") as u64,
            subject: subject.map(digest).transpose()?,
            pushed_at: from_millis(row.get("created_at")),
        });
    }
    let rows = sqlx::query("SELECT manifest, child FROM manifest_children WHERE repo = ? ORDER BY manifest, child")
        .bind(r)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        out.children.push((digest(row.get("manifest"))?, digest(row.get("child"))?));
    }
    let rows = sqlx::query(
        "SELECT mb.manifest, mb.blob, b.size FROM manifest_blobs mb JOIN blobs b ON b.digest = mb.blob
         WHERE mb.repo = ? ORDER BY mb.manifest, mb.blob",
    )
    .bind(r)
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        out.blobs.push((digest(row.get("manifest"))?, digest(row.get("blob"))?, row.get::<i64, _>("size") as u64));
    }
    let rows = sqlx::query("SELECT digest, count, last_pulled FROM manifest_pulls WHERE repo = ? ORDER BY digest")
        .bind(r)
        .fetch_all(&mut *conn)
        .await?;
    for row in rows {
        let stats =
            PullStats { count: row.get::<i64, _>("count") as u64, last_pulled: from_millis(row.get("last_pulled")) };
        out.pulls.push((digest(row.get("digest"))?, stats));
    }
    Ok(out)
}

/// The last `limit` distinct digests `tag` pointed to, newest first.
pub(super) async fn tag_targets(
    conn: &mut SqliteConnection,
    repo: &RepoName,
    t: &Tag,
    limit: u32,
) -> Result<Vec<Digest>, MetaError> {
    let rows: Vec<String> = sqlx::query_scalar(
        "SELECT to_digest FROM tag_history WHERE repo = ? AND tag = ? AND to_digest IS NOT NULL
         GROUP BY to_digest ORDER BY max(id) DESC LIMIT ?",
    )
    .bind(repo.as_str())
    .bind(t.as_str())
    .bind(limit as i64)
    .fetch_all(&mut *conn)
    .await?;
    rows.into_iter().map(digest).collect()
}
