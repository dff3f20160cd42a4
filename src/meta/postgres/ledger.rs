//! The ledger on PostgreSQL: appending linked events inside a write transaction, and the
//! reads (filtered events, head, checkpoints, archive cuts, pull counters).
//!
//! Order and hash with several nodes: the first statement of an append locks the one
//! `ledger_head` row (`FOR UPDATE`; the row exists from the first migration on, seq 0 meaning
//! no event yet). A second appender waits there until the first commits or rolls back, then
//! reads the head it left, so appends are serialized and each links after the last committed
//! event. The lock is held from the append to commit only, the last statements of a write.

use sqlx::{PgPool, Postgres, QueryBuilder, Row, Transaction};

use super::{from_millis, millis};
use crate::audit::{Checkpoint, Event, NewEvent};
use crate::meta::{EventFilter, LedgerArchive, MetaError, PullStats};
use crate::oci::{Digest, RepoName};

/// The columns of linked events, one array each, for one `unnest` insert.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    time: Vec<String>,
    actor: Vec<String>,
    address: Vec<Option<String>>,
    action: Vec<String>,
    repository: Vec<Option<String>>,
    tag: Vec<Option<String>>,
    digest: Vec<Option<String>>,
    previous_digest: Vec<Option<String>>,
    detail: Vec<String>,
    prev_hash: Vec<String>,
    hash: Vec<String>,
}

/// Links `events` after the head and stores them, then moves the head: two statements, the
/// first of which takes the head's lock.
pub(super) async fn append(
    tx: &mut Transaction<'static, Postgres>,
    events: Vec<NewEvent>,
    at_ms: i64,
) -> Result<(), MetaError> {
    if events.is_empty() {
        return Ok(());
    }
    let head: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM ledger_head WHERE id = 1 FOR UPDATE").fetch_optional(&mut **tx).await?;
    let (seq, hash) =
        head.ok_or_else(|| MetaError::Corrupt("the ledger head row is missing (see migrations/postgres)".into()))?;
    let mut prev = (seq > 0).then_some((seq, hash));
    let n = events.len();
    let mut c = Columns::default();
    for e in events {
        let l = e.link(prev.as_ref().map(|(s, h)| (*s, h.as_str())), at_ms);
        prev = Some((l.seq, l.hash.clone()));
        c.seq.push(l.seq);
        c.time.push(l.time);
        c.actor.push(l.actor);
        c.address.push(l.address);
        c.action.push(l.action);
        c.repository.push(l.repository);
        c.tag.push(l.tag);
        c.digest.push(l.digest);
        c.previous_digest.push(l.previous_digest);
        c.detail.push(l.detail.to_string());
        c.prev_hash.push(l.prev_hash);
        c.hash.push(l.hash);
    }
    let Some((head_seq, head_hash)) = prev else { return Ok(()) };
    let done = sqlx::query(
        "WITH ins AS (
            INSERT INTO ledger (seq, time, actor, address, action, repository, tag, digest, previous_digest,
                                detail, prev_hash, hash, at_ms)
            SELECT *, $13 FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                                      $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
            RETURNING 1)
         UPDATE ledger_head SET seq = $14, hash = $15 WHERE id = 1 AND (SELECT count(*) FROM ins) = $16",
    )
    .bind(c.seq)
    .bind(c.time)
    .bind(c.actor)
    .bind(c.address)
    .bind(c.action)
    .bind(c.repository)
    .bind(c.tag)
    .bind(c.digest)
    .bind(c.previous_digest)
    .bind(c.detail)
    .bind(c.prev_hash)
    .bind(c.hash)
    .bind(at_ms)
    .bind(head_seq)
    .bind(head_hash)
    .bind(n as i64)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(MetaError::Corrupt(format!("a ledger append of {n} events did not move the head")));
    }
    Ok(())
}

fn event_row(row: sqlx::postgres::PgRow) -> Result<Event, MetaError> {
    let detail: String = row.try_get("detail")?;
    let seq: i64 = row.try_get("seq")?;
    Ok(Event {
        seq,
        time: row.try_get("time")?,
        actor: row.try_get("actor")?,
        address: row.try_get("address")?,
        action: row.try_get("action")?,
        repository: row.try_get("repository")?,
        tag: row.try_get("tag")?,
        digest: row.try_get("digest")?,
        previous_digest: row.try_get("previous_digest")?,
        detail: serde_json::from_str(&detail)
            .map_err(|e| MetaError::Corrupt(format!("seq {seq}: the ledger's detail is not JSON ({e})")))?,
        prev_hash: row.try_get("prev_hash")?,
        hash: row.try_get("hash")?,
    })
}

pub(super) async fn events(pool: &PgPool, f: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new("SELECT * FROM ledger WHERE seq > ");
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

/// The head, or `None` before the first event (the row's seq is 0 then).
pub(super) async fn head(pool: &PgPool) -> Result<Option<(i64, String)>, MetaError> {
    Ok(sqlx::query_as("SELECT seq, hash FROM ledger_head WHERE id = 1 AND seq > 0").fetch_optional(pool).await?)
}

pub(super) async fn archive_cut(pool: &PgPool) -> Result<Option<(i64, String)>, MetaError> {
    Ok(sqlx::query_as("SELECT seq, hash FROM ledger_archives ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?)
}

pub(super) async fn archives(pool: &PgPool) -> Result<Vec<LedgerArchive>, MetaError> {
    let rows: Vec<(i64, String, String, i64)> =
        sqlx::query_as("SELECT seq, hash, file, at_ms FROM ledger_archives ORDER BY seq").fetch_all(pool).await?;
    Ok(rows.into_iter().map(|(seq, hash, file, at)| LedgerArchive { seq, hash, file, at: from_millis(at) }).collect())
}

pub(super) async fn archive(write: &PgPool, seq: i64, hash: &str, file: &str, at_ms: i64) -> Result<u64, MetaError> {
    let mut tx = write.begin().await?;
    sqlx::query("INSERT INTO ledger_archives (seq, hash, file, at_ms) VALUES ($1, $2, $3, $4)")
        .bind(seq)
        .bind(hash)
        .bind(file)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM ledger WHERE seq <= $1").bind(seq).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(done.rows_affected())
}

fn checkpoint_row(row: sqlx::postgres::PgRow) -> Result<Checkpoint, MetaError> {
    Ok(Checkpoint {
        seq: row.try_get("seq")?,
        hash: row.try_get("hash")?,
        time: row.try_get("time")?,
        signature: row.try_get("signature")?,
    })
}

pub(super) async fn add_checkpoint(write: &PgPool, cp: &Checkpoint) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO ledger_checkpoints (seq, hash, time, signature) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(cp.seq)
    .bind(&cp.hash)
    .bind(&cp.time)
    .bind(&cp.signature)
    .execute(write)
    .await?;
    Ok(())
}

pub(super) async fn checkpoints(pool: &PgPool, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, MetaError> {
    let rows = sqlx::query("SELECT * FROM ledger_checkpoints WHERE seq > $1 ORDER BY seq LIMIT $2")
        .bind(after.unwrap_or(0))
        .bind(limit as i64)
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(checkpoint_row).collect()
}

pub(super) async fn last_checkpoint(pool: &PgPool) -> Result<Option<Checkpoint>, MetaError> {
    let row = sqlx::query("SELECT * FROM ledger_checkpoints ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?;
    row.map(checkpoint_row).transpose()
}

/// Adds pull counts in one transaction, in key order (so two nodes flushing at once lock rows
/// in the same order and cannot deadlock).
pub(super) async fn add_pulls(
    write: &PgPool,
    pulls: &[(RepoName, Digest, u64, std::time::SystemTime)],
) -> Result<(), MetaError> {
    if pulls.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<_> = pulls.iter().collect();
    sorted.sort_by(|a, b| (a.0.as_str(), a.1.as_str()).cmp(&(b.0.as_str(), b.1.as_str())));
    let mut tx = write.begin().await?;
    for (repo, d, n, at) in sorted {
        sqlx::query(
            "INSERT INTO manifest_pulls (repo, digest, count, last_pulled)
             SELECT $1, $2, $3, $4 WHERE EXISTS (SELECT 1 FROM manifests WHERE repo = $1 AND digest = $2)
             ON CONFLICT (repo, digest) DO UPDATE
               SET count = manifest_pulls.count + excluded.count,
                   last_pulled = greatest(manifest_pulls.last_pulled, excluded.last_pulled)",
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

pub(super) async fn pulls(pool: &PgPool, repo: &RepoName, d: &Digest) -> Result<Option<PullStats>, MetaError> {
    let row: Option<(i64, i64)> =
        sqlx::query_as("SELECT count, last_pulled FROM manifest_pulls WHERE repo = $1 AND digest = $2")
            .bind(repo.as_str())
            .bind(d.as_str())
            .fetch_optional(pool)
            .await?;
    Ok(row.map(|(count, last)| PullStats { count: count as u64, last_pulled: from_millis(last) }))
}
