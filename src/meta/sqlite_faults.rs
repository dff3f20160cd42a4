//! How the SQLite backend meets faults: database errors sorted into a full disk (507), a
//! busy or failing database (503) and the rest; a pool connection that a failed commit
//! left inside a transaction is replaced rather than reused (the write connection is reset,
//! or replaced, by the group committer: `sqlite/group.rs`); at open, a file that is not a
//! Cairn database (empty, not SQLite, another program's) or that Cairn cannot write is
//! refused with a message that says what to do; and the one-row write that proves the
//! database can commit (for `/readyz`).

use std::path::Path;
use std::time::SystemTime;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqlitePoolOptions, SqliteTransactionManager};
use sqlx::{Connection, TransactionManager};

use super::sqlite::MIGRATOR;
use super::{MetaError, millis};

/// Both pools: a connection is checked before each use (see `no_open_transaction`).
pub(super) fn pool_options(max: u32) -> SqlitePoolOptions {
    SqlitePoolOptions::new()
        .max_connections(max)
        .test_before_acquire(true)
        .before_acquire(|conn, _| Box::pin(async move { Ok(no_open_transaction(conn)) }))
}

/// False for a connection left inside a transaction, which the pool then closes and
/// replaces. When a statement or COMMIT fails with SQLITE_FULL or an I/O error, SQLite
/// rolls the transaction back by itself; sqlx's own ROLLBACK then fails and its
/// transaction depth stays at 1, so every later `BEGIN` on that connection would fail
/// until a restart. The pool pings a connection before this check, which runs the
/// rollback a dropped transaction queued, so the depth read here is settled.
fn no_open_transaction(conn: &SqliteConnection) -> bool {
    let depth = SqliteTransactionManager::get_transaction_depth(conn);
    if depth > 0 {
        tracing::warn!(depth, "replacing a database connection that a failed transaction left open");
    }
    depth == 0
}

/// SQLite's primary result code of an error, if it came from SQLite.
fn sqlite_code(e: &sqlx::Error) -> Option<i32> {
    match e {
        sqlx::Error::Database(d) if d.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() => {
            d.code().and_then(|c| c.parse::<i32>().ok()).map(|c| c & 0xff)
        }
        _ => None,
    }
}

const SQLITE_PERM: i32 = 3;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;

/// Sorts a database error into the kinds callers answer differently: a full disk (507),
/// a busy or failing database (503), anything else (500). PostgreSQL's SQLSTATEs are sorted
/// by `postgres/faults.rs`.
impl From<sqlx::Error> for MetaError {
    fn from(e: sqlx::Error) -> MetaError {
        if let Some(sorted) = super::postgres::classify(&e) {
            return sorted;
        }
        let io_full = |io: &std::io::Error| {
            matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        };
        match (&e, sqlite_code(&e)) {
            (_, Some(SQLITE_FULL)) => MetaError::Full(e.to_string()),
            (_, Some(SQLITE_BUSY | SQLITE_LOCKED | SQLITE_READONLY | SQLITE_IOERR | SQLITE_CANTOPEN)) => {
                MetaError::Unavailable(e.to_string())
            }
            (sqlx::Error::Io(io), _) if io_full(io) => MetaError::Full(e.to_string()),
            (sqlx::Error::Database(d), _) if d.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                MetaError::Conflict(e.to_string())
            }
            (
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed,
                _,
            ) => MetaError::Unavailable(e.to_string()),
            _ => MetaError::Other(e),
        }
    }
}

/// Refuses an existing file that is not a Cairn database, before anything writes to it: a
/// zero-byte file (SQLite would take it for a new database and Cairn would start an empty
/// registry over it), a file that is not SQLite, and an SQLite file that holds another
/// program's tables and no Cairn migrations. A missing file is fine: `open` creates it.
pub(super) async fn refuse_foreign(file: &Path) -> Result<(), MetaError> {
    match std::fs::metadata(file) {
        Ok(m) if m.is_file() && m.len() == 0 => {
            return Err(MetaError::Unusable(format!(
                "{} is an empty file (0 bytes), not a Cairn database; Cairn will not start an empty registry \
                 over it. Restore the database from a backup, or delete the file to start a new, empty registry",
                file.display()
            )));
        }
        Ok(m) if m.is_file() => {}
        _ => return Ok(()),
    }
    // Read-only and without `journal_mode`: looking must not change another program's file.
    let look = SqliteConnectOptions::new().filename(file).read_only(true);
    let mut conn = SqliteConnection::connect_with(&look).await.map_err(|e| open_error(file, e))?;
    let found = foreign_tables(&mut conn).await.map_err(|e| open_error(file, e));
    conn.close().await.ok();
    let Some(what) = found? else { return Ok(()) };
    Err(MetaError::Unusable(format!(
        "{} is an SQLite database of another program: it has {what}. Point database.url (or --data-dir) at \
         Cairn's database, or move this file away to start a new, empty registry",
        file.display()
    )))
}

/// What makes a database another program's, if anything: tables besides sqlx's migration
/// log and no Cairn migration, or a migration log whose first migration is not Cairn's.
/// An empty database, or one whose migration log is still empty, is Cairn's to fill.
async fn foreign_tables(conn: &mut SqliteConnection) -> Result<Option<String>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name",
    )
    .fetch_all(&mut *conn)
    .await?;
    let others: Vec<&str> = tables.iter().map(String::as_str).filter(|t| *t != "_sqlx_migrations").collect();
    let mut applied = 0i64;
    if others.len() < tables.len() {
        let first: Option<Vec<u8>> = sqlx::query_scalar("SELECT checksum FROM _sqlx_migrations WHERE version = 1")
            .fetch_optional(&mut *conn)
            .await?;
        if MIGRATOR.migrations.first().is_some_and(|m| first.as_deref() == Some(&m.checksum[..])) {
            return Ok(None);
        }
        applied = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations").fetch_one(&mut *conn).await?;
    }
    Ok(if applied > 0 {
        Some("migrations that are not Cairn's".into())
    } else if others.is_empty() {
        None
    } else {
        let more = if others.len() > 5 { format!(" and {} more", others.len() - 5) } else { String::new() };
        Some(format!(
            "tables that are not Cairn's ({}{more}) and no Cairn migrations",
            others[..others.len().min(5)].join(", ")
        ))
    })
}

/// The highest migration the database records as applied, if it has any.
pub(super) async fn applied_version(conn: &mut SqliteConnection) -> Result<Option<i64>, sqlx::Error> {
    let has_log: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !has_log {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(conn).await
}

/// An error while opening: a file that is not SQLite, or one Cairn cannot write, gets a
/// message that says so; anything else is sorted as usual.
pub(super) fn open_error(file: &Path, e: sqlx::Error) -> MetaError {
    match sqlite_code(&e) {
        Some(SQLITE_NOTADB) => MetaError::Unusable(format!(
            "{} is not an SQLite database ({e}). Restore Cairn's database from a backup, or point database.url \
             (or --data-dir) at the right file; move this file away to start a new, empty registry",
            file.display()
        )),
        Some(SQLITE_READONLY | SQLITE_CANTOPEN | SQLITE_PERM) => read_only(file, &e.to_string()),
        _ => e.into(),
    }
}

/// Rewrites the one row of `write_check`: a write that holds no data (committed by itself in
/// autocommit mode, or by the caller's transaction).
pub(super) async fn write_check(write: &mut SqliteConnection) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO write_check (id, checked_at) VALUES (1, ?)
         ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
    )
    .bind(millis(SystemTime::now()))
    .execute(write)
    .await?;
    Ok(())
}

fn read_only(file: &Path, e: &str) -> MetaError {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    MetaError::Unusable(format!(
        "cannot write the database {} ({e}): Cairn needs to write that file and to create its -wal and -shm \
         files in {}; check the owner and permissions of both and that the filesystem is not mounted read-only",
        file.display(),
        dir.display()
    ))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    /// A uniqueness race (two writers inserting the same key) is a `Conflict`, which the
    /// service retries and, once retries are spent, answers 503 with Retry-After.
    #[tokio::test]
    async fn a_uniqueness_violation_is_a_conflict() {
        let pool = pool_options(1).connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE t (k TEXT PRIMARY KEY, v TEXT UNIQUE)").execute(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES ('a', 'x')").execute(&pool).await.unwrap();
        for dup in ["INSERT INTO t VALUES ('a', 'y')", "INSERT INTO t VALUES ('b', 'x')"] {
            let e = MetaError::from(sqlx::query(dup).execute(&pool).await.unwrap_err());
            assert!(matches!(e, MetaError::Conflict(_)), "{dup}: {e:?}");
            let e = crate::error::Error::from(e);
            assert!(e.is_conflict());
            assert_eq!(e.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        }
        let other = MetaError::from(sqlx::query("INSERT INTO nope VALUES (1)").execute(&pool).await.unwrap_err());
        assert!(matches!(other, MetaError::Other(_)), "{other:?}");
        assert!(!crate::error::Error::from(other).is_conflict());
    }

    /// SQLite rolls a transaction back by itself when a statement in it fails with
    /// SQLITE_FULL (here: the connection's `max_page_count`); the next transaction on the
    /// one-connection pool must still begin, on a fresh connection.
    #[tokio::test]
    async fn a_transaction_that_failed_full_does_not_wedge_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let opts = SqliteConnectOptions::from_str(&url).unwrap().create_if_missing(true);
        let pool = pool_options(1).connect_with(opts).await.unwrap();
        sqlx::query("CREATE TABLE t (x BLOB)").execute(&pool).await.unwrap();
        let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await.unwrap();
        sqlx::query(&format!("PRAGMA max_page_count = {pages}")).execute(&pool).await.unwrap();

        let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        let err = sqlx::query("INSERT INTO t VALUES (zeroblob(100000))").execute(&mut *tx).await.unwrap_err();
        assert!(matches!(MetaError::from(err), MetaError::Full(_)));
        drop(tx);

        for _ in 0..2 {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await.expect("the next transaction begins");
            sqlx::query("INSERT INTO t VALUES (zeroblob(100000))").execute(&mut *tx).await.unwrap();
            tx.commit().await.unwrap();
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t").fetch_one(&pool).await.unwrap();
        assert_eq!(rows, 2, "nothing of the failed transaction is visible");
    }
}
