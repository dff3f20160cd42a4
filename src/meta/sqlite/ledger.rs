//! The ledger on SQLite: appending linked events inside a write transaction, the lookup keys
//! built behind it in batches (`ledger_keys`, migration 0008), and the reads (filtered events,
//! head, checkpoints, archive cuts, pull counters).

use std::sync::Mutex;

use sha2::{Digest as _, Sha256};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{from_millis, millis};
use crate::audit::{Checkpoint, Event, NewEvent};
use crate::meta::{EventFilter, LedgerArchive, MetaError, PullStats};
use crate::oci::{Digest, RepoName};

/// The ledger head `(seq, hash)` as this process last committed it, so an append needs no
/// read of `ledger_head`. It is a hint, never trusted: every append checks it in SQL and
/// reads the real head when another process (the CLI, another node) appended meanwhile, or
/// when a failed group commit cleared it.
#[derive(Default)]
pub(super) struct HeadCache(Mutex<Option<(i64, String)>>);

impl HeadCache {
    pub(super) fn get(&self) -> Option<(i64, String)> {
        self.0.lock().ok().and_then(|g| g.clone())
    }

    /// Remembers the head a group committed.
    pub(super) fn set(&self, head: (i64, String)) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(head);
        }
    }

    /// Forgets the head (a group commit failed): the next append reads it.
    pub(super) fn clear(&self) {
        if let Ok(mut g) = self.0.lock() {
            *g = None;
        }
    }
}

const LEDGER_COLUMNS: &str = "seq, time, at_ms, actor, address, action, repository, tag, digest, previous_digest, \
                              detail, prev_hash, hash";

/// Events per statement (13 values each, well below SQLite's limit on bound values).
const CHUNK: usize = 1000;

/// Links `events` (each with its time, ms since the epoch) after the head and stores them,
/// then moves the head: the last statements before the group's `COMMIT`, so the write lock
/// orders every append (see `MetaTx` and `group.rs`). Returns the new head, for `HeadCache`
/// once the transaction commits.
///
/// One round trip per [`CHUNK`] events when `cached` is the head: the rows and the head move
/// in one batch whose statements all check that the head is still `cached`. When it is not
/// (or nothing is cached), nothing was written; the head is read and the batch runs again.
pub(super) async fn append(
    tx: &mut SqliteConnection,
    mut events: Vec<(NewEvent, i64)>,
    mut cached: Option<(i64, String)>,
) -> Result<Option<(i64, String)>, MetaError> {
    let mut head = None;
    while !events.is_empty() {
        let rest = events.split_off(events.len().min(CHUNK));
        head = Some(append_chunk(tx, std::mem::replace(&mut events, rest), cached.take()).await?);
        cached = head.clone();
    }
    Ok(head)
}

async fn append_chunk(
    tx: &mut SqliteConnection,
    events: Vec<(NewEvent, i64)>,
    cached: Option<(i64, String)>,
) -> Result<(i64, String), MetaError> {
    if let Some(base) = cached
        && let Some(head) = write_after(tx, events.clone(), Some(base)).await?
    {
        return Ok(head);
    }
    let base: Option<(i64, String)> =
        sqlx::query_as("SELECT seq, hash FROM ledger_head WHERE id = 1").fetch_optional(&mut *tx).await?;
    match write_after(tx, events, base).await? {
        Some(head) => Ok(head),
        None => Err(MetaError::Corrupt("the ledger head changed inside a write transaction".into())),
    }
}

/// Writes `events` linked after `base` if the head is still `base`; `None` if it is not.
async fn write_after(
    tx: &mut SqliteConnection,
    events: Vec<(NewEvent, i64)>,
    base: Option<(i64, String)>,
) -> Result<Option<(i64, String)>, MetaError> {
    let guard = match base {
        Some(_) => "EXISTS (SELECT 1 FROM ledger_head WHERE id = 1 AND seq = ? AND hash = ?)",
        None => "NOT EXISTS (SELECT 1 FROM ledger_head WHERE id = 1)",
    };
    let n = events.len();
    let mut prev = base.clone();
    let mut linked = Vec::with_capacity(n);
    for (e, at_ms) in events {
        let l = e.link(prev.as_ref().map(|(s, h)| (*s, h.as_str())), at_ms);
        prev = Some((l.seq, l.hash.clone()));
        linked.push((l, at_ms));
    }
    let Some(head) = prev else { return Ok(None) };
    let rows = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
    let sql = format!(
        "INSERT INTO ledger ({LEDGER_COLUMNS}) SELECT * FROM (VALUES {rows}) WHERE {guard};
         INSERT INTO ledger_head (id, seq, hash) SELECT 1, ?, ? WHERE {guard}
           ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash;"
    );
    let mut q = sqlx::query(&sql);
    for (l, at_ms) in &linked {
        q = q
            .bind(l.seq)
            .bind(&l.time)
            .bind(*at_ms)
            .bind(&l.actor)
            .bind(&l.address)
            .bind(&l.action)
            .bind(&l.repository)
            .bind(&l.tag)
            .bind(&l.digest)
            .bind(&l.previous_digest)
            .bind(l.detail.to_string())
            .bind(&l.prev_hash)
            .bind(&l.hash);
    }
    // The first statement's guard, then the second's head and guard.
    if let Some((seq, hash)) = &base {
        q = q.bind(*seq).bind(hash.clone());
    }
    q = q.bind(head.0).bind(head.1.clone());
    if let Some((seq, hash)) = &base {
        q = q.bind(*seq).bind(hash.clone());
    }
    let written = q.execute(&mut *tx).await?.rows_affected();
    if written == 0 {
        return Ok(None);
    }
    if written != n as u64 + 1 {
        return Err(MetaError::Corrupt(format!("a ledger append wrote {written} rows for {n} events")));
    }
    Ok(Some(head))
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

/// Events the write that passes this many unkeyed events keys (with every other unkeyed one):
/// the bound on the tail a filtered query scans, and the batch whose key inserts share pages.
pub(super) const KEY_BATCH: i64 = 1024;

/// Keys at most this many events per statement (three keys, six values, each).
const KEY_CHUNK: usize = 150;

/// The `ledger_keys` key of a repository (`kind` `b'r'`) or a digest (`b'd'`, for `digest`
/// and `previous_digest` alike): the first 8 bytes of sha256(kind, 0, value), big-endian, as
/// a signed integer. Stable across versions: it is stored.
fn lookup_key(kind: u8, value: &str) -> i64 {
    let mut h = Sha256::new();
    h.update([kind, 0]);
    h.update(value.as_bytes());
    let d = h.finalize();
    i64::from_be_bytes(d[..8].try_into().expect("sha256 has 32 bytes"))
}

/// Keys the events after `ledger_keyed.seq` when the head `head` is [`KEY_BATCH`] or more past
/// it (all of them, in the caller's transaction); returns how many it keyed (0: not yet).
pub(super) async fn key_if_behind(tx: &mut SqliteConnection, head: i64) -> Result<u64, MetaError> {
    let keyed: i64 = sqlx::query_scalar("SELECT seq FROM ledger_keyed WHERE id = 1").fetch_one(&mut *tx).await?;
    if head - keyed < KEY_BATCH {
        return Ok(0);
    }
    key_after(tx, keyed, i64::MAX).await
}

/// Keys at most `max` events after `ledger_keyed.seq`, whatever the distance to the head (the
/// catch-up at open); returns how many.
pub(super) async fn key_some(tx: &mut SqliteConnection, max: i64) -> Result<u64, MetaError> {
    let keyed: i64 = sqlx::query_scalar("SELECT seq FROM ledger_keyed WHERE id = 1").fetch_one(&mut *tx).await?;
    key_after(tx, keyed, max).await
}

/// An event's seq, repository, digest and previous digest: what its lookup keys are made of.
type KeyedColumns = (i64, Option<String>, Option<String>, Option<String>);

async fn key_after(tx: &mut SqliteConnection, keyed: i64, max: i64) -> Result<u64, MetaError> {
    let rows: Vec<KeyedColumns> = sqlx::query_as(
        "SELECT seq, repository, digest, previous_digest FROM ledger WHERE seq > ? ORDER BY seq LIMIT ?",
    )
    .bind(keyed)
    .bind(max)
    .fetch_all(&mut *tx)
    .await?;
    let Some(&(last, ..)) = rows.last() else { return Ok(0) };
    for chunk in rows.chunks(KEY_CHUNK) {
        let mut pairs = Vec::with_capacity(chunk.len() * 3);
        for (seq, repository, digest, previous) in chunk {
            pairs.extend(repository.as_deref().map(|r| (lookup_key(b'r', r), *seq)));
            pairs.extend(digest.as_deref().map(|d| (lookup_key(b'd', d), *seq)));
            if previous.is_some() && previous != digest {
                pairs.extend(previous.as_deref().map(|d| (lookup_key(b'd', d), *seq)));
            }
        }
        if pairs.is_empty() {
            continue;
        }
        let mut q = QueryBuilder::<Sqlite>::new("INSERT OR IGNORE INTO ledger_keys (key, seq) ");
        q.push_values(pairs, |mut b, (k, s)| {
            b.push_bind(k).push_bind(s);
        });
        q.build().execute(&mut *tx).await?;
    }
    sqlx::query("UPDATE ledger_keyed SET seq = ? WHERE id = 1").bind(last).execute(&mut *tx).await?;
    Ok(rows.len() as u64)
}

pub(super) async fn events(pool: &SqlitePool, f: &EventFilter, limit: u32) -> Result<Vec<Event>, MetaError> {
    let after = f.after.unwrap_or(0);
    // A digest or repository filter reads the keyed events through `ledger_keys` and scans the
    // tail not keyed yet; both parts are read in one statement, so from one snapshot.
    let key = match (&f.digest, &f.repository) {
        (Some(d), _) => Some(lookup_key(b'd', d)),
        (None, Some(r)) => Some(lookup_key(b'r', r)),
        (None, None) => None,
    };
    let mut q: QueryBuilder<Sqlite> = QueryBuilder::new("SELECT * FROM ");
    match key {
        Some(k) => {
            // `k.seq`, not `l.seq`: then SQLite sees the keyed part come in seq order from the
            // key's index and merges it with the tail without sorting it first.
            let keyed: Vec<String> = LEDGER_COLUMNS
                .split(", ")
                .map(|c| match c {
                    "seq" => "k.seq AS seq".to_string(),
                    c => format!("l.{c}"),
                })
                .collect();
            q.push(format!(
                "(SELECT {} FROM ledger_keys k JOIN ledger l ON l.seq = k.seq WHERE k.key = ",
                keyed.join(", ")
            ))
            .push_bind(k)
            .push(" AND k.seq > ")
            .push_bind(after)
            .push(format!(" UNION ALL SELECT {LEDGER_COLUMNS} FROM ledger WHERE seq > max("))
            .push_bind(after)
            .push(", (SELECT seq FROM ledger_keyed WHERE id = 1)))");
        }
        None => {
            q.push("ledger");
        }
    }
    q.push(" WHERE seq > ").push_bind(after);
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

/// Records an archive cut and deletes the events it covers (on the write connection, inside a
/// transaction).
pub(super) async fn archive(
    tx: &mut SqliteConnection,
    seq: i64,
    hash: &str,
    file: &str,
    at_ms: i64,
) -> Result<u64, MetaError> {
    sqlx::query("INSERT INTO ledger_archives (seq, hash, file, at_ms) VALUES (?, ?, ?, ?)")
        .bind(seq)
        .bind(hash)
        .bind(file)
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
    let done = sqlx::query("DELETE FROM ledger WHERE seq <= ?").bind(seq).execute(&mut *tx).await?;
    sqlx::query("DELETE FROM ledger_keys WHERE seq <= ?").bind(seq).execute(&mut *tx).await?;
    Ok(done.rows_affected())
}

fn checkpoint_row(row: sqlx::sqlite::SqliteRow) -> Checkpoint {
    Checkpoint { seq: row.get("seq"), hash: row.get("hash"), time: row.get("time"), signature: row.get("signature") }
}

pub(super) async fn add_checkpoint(write: &mut SqliteConnection, cp: &Checkpoint) -> Result<(), MetaError> {
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

/// Adds pull counts (on the write connection, inside a transaction).
pub(super) async fn add_pulls(
    tx: &mut SqliteConnection,
    pulls: &[(RepoName, Digest, u64, std::time::SystemTime)],
) -> Result<(), MetaError> {
    if pulls.is_empty() {
        return Ok(());
    }
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
