//! The ledger on SQLite: appending linked events inside a write transaction, and the reads
//! (filtered events, head, checkpoints, archive cuts, pull counters).

use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{from_millis, millis};
use crate::audit::{Checkpoint, Event, NewEvent};
use crate::meta::{EventFilter, LedgerArchive, MetaError, PullStats};
use crate::oci::{Digest, RepoName};

/// Links `events` after the head and stores them, then moves the head: the last statements
/// of the transaction, so the write lock orders every append (see `MetaTx`).
pub(super) async fn append(tx: &mut SqliteConnection, events: Vec<NewEvent>, at_ms: i64) -> Result<(), MetaError> {
    if events.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(&mut *tx).await?;
    let mut prev = head;
    for e in events {
        let linked = e.link(prev.as_ref().map(|(s, h)| (*s, h.as_str())), at_ms);
        sqlx::query(
            "INSERT INTO ledger (seq, time, at_ms, actor, address, action, repository, tag, digest,
                                 previous_digest, detail, prev_hash, hash)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(linked.seq)
        .bind(&linked.time)
        .bind(at_ms)
        .bind(&linked.actor)
        .bind(&linked.address)
        .bind(&linked.action)
        .bind(&linked.repository)
        .bind(&linked.tag)
        .bind(&linked.digest)
        .bind(&linked.previous_digest)
        .bind(linked.detail.to_string())
        .bind(&linked.prev_hash)
        .bind(&linked.hash)
        .execute(&mut *tx)
        .await?;
        prev = Some((linked.seq, linked.hash));
    }
    if let Some((seq, hash)) = prev {
        sqlx::query(
            "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?1, ?2)
             ON CONFLICT (id) DO UPDATE SET seq = ?1, hash = ?2",
        )
        .bind(seq)
        .bind(hash)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

fn event_row(row: sqlx::sqlite::SqliteRow) -> Result<Event, MetaError> {
    let detail: String = row.get("detail");
    let seq: i64 = row.get("seq");
    Ok(Event {
        seq,
        time: row.get("time"),
        actor: row.get("actor"),
        address: row.get("address"),
        action: row.get("action"),
        repository: row.get("repository"),
        tag: row.get("tag"),
        digest: row.get("digest"),
        previous_digest: row.get("previous_digest"),
        detail: serde_json::from_str(&detail)
            .map_err(|e| MetaError::Corrupt(format!("seq {seq}: the ledger's detail is not JSON ({e})")))?,
        prev_hash: row.get("prev_hash"),
        hash: row.get("hash"),
    })
}

pub(super) async fn events(pool: &SqlitePool, f: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM ledger WHERE seq > ");
    q.push_bind(f.after.unwrap_or(0));
    if let Some(u) = f.until {
        q.push(" AND seq <= ").push_bind(u);
    }
    for (col, v) in [("repository", &f.repository), ("tag", &f.tag), ("actor", &f.actor), ("action", &f.action)] {
        if let Some(v) = v {
            q.push(format!(" AND {col} = ")).push_bind(v.clone());
        }
    }
    if let Some(d) = &f.digest {
        q.push(" AND (digest = ").push_bind(d.clone()).push(" OR previous_digest = ").push_bind(d.clone()).push(")");
    }
    if let Some(t) = f.since_ms {
        q.push(" AND at_ms >= ").push_bind(t);
    }
    if let Some(t) = f.before_ms {
        q.push(" AND at_ms < ").push_bind(t);
    }
    q.push(" ORDER BY seq LIMIT ").push_bind(limit as i64);
    let rows = q.build().fetch_all(pool).await?;
    rows.into_iter().map(event_row).collect()
}

pub(super) async fn head(pool: &SqlitePool) -> Result<Option<(i64, String)>, MetaError> {
    Ok(sqlx::query_as("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(pool).await?)
}

pub(super) async fn archive_cut(pool: &SqlitePool) -> Result<Option<(i64, String)>, MetaError> {
    Ok(sqlx::query_as("SELECT seq, hash FROM ledger_archives ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?)
}

pub(super) async fn archives(pool: &SqlitePool) -> Result<Vec<LedgerArchive>, MetaError> {
    let rows: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT seq, hash, file, at_ms FROM ledger_archives ORDER BY seq").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(seq, hash, file, at)| LedgerArchive { seq, hash, file, at: from_millis(at) }).collect())
}

pub(super) async fn archive(
    write: &SqlitePool,
    seq: i64,
    hash: &str,
    file: &str,
    at_ms: i64,
) -> Result<u64, MetaError> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
    sqlx::query("INSERT INTO ledger_archives (seq, hash, file, at_ms) VALUES (?, ?, ?, ?)")
        .bind(seq)
        .bind(hash)
        .bind(file)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM ledger WHERE seq <= ?").bind(seq).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

fn checkpoint_row(row: sqlx::sqlite::SqliteRow) -> Checkpoint {
    Checkpoint { seq: row.get("seq"), hash: row.get("hash"), time: row.get("time"), signature: row.get("signature") }
}

pub(super) async fn add_checkpoint(write: &SqlitePool, cp: &Checkpoint) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO ledger_checkpoints (seq, hash, time, signature) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
    )
    .bind(cp.seq)
    .bind(&cp.hash)
    .bind(&cp.time)
    .bind(&cp.signature)
    .execute(write)
    .await?;
    Ok(())
}

pub(super) async fn checkpoints(
    pool: &SqlitePool,
    after: Option<i64>,
    limit: u32,
) -> Result<Vec<Checkpoint>, MetaError> {
    let rows = sqlx::query("SELECT * FROM ledger_checkpoints WHERE seq > ? ORDER BY seq LIMIT ?")
        .bind(after.unwrap_or(0))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(checkpoint_row).collect())
}

pub(super) async fn last_checkpoint(pool: &SqlitePool) -> Result<Option<Checkpoint>, MetaError> {
    let row = sqlx::query("SELECT * FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?;
    Ok(row.map(checkpoint_row))
}

pub(super) async fn add_pulls(
    write: &SqlitePool,
    pulls: &[(RepoName, Digest, u64, std::time::SystemTime)],
) -> Result<(), MetaError> {
    if pulls.is_empty() {
        return Ok(());
    }
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await?;
    for (repo, d, n, at) in pulls {
        sqlx::query(
            "INSERT INTO manifest_pulls (repo, digest, count, last_pulled)
             SELECT ?1, ?2, ?3, ?4 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo = ?1 AND digest = ?2)
             ON CONFLICT (repo, digest) DO UPDATE SET count = count + ?3, last_pulled = max(last_pulled, ?4)",
        )
        .bind(repo.as_str())
        .bind(d.as_str())
        .bind(*n as i64)
        .bind(millis(*at))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub(super) async fn pulls(pool: &SqlitePool, repo: &RepoName, d: &Digest) -> Result<Option<PullStats>, MetaError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT count, last_pulled FROM manifest_pulls WHERE repo = ? AND digest = ?")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(count, last)| PullStats { count: count as u64, last_pulled: from_millis(last) }))
}
