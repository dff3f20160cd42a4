//! `Dump` and `Load` on SQLite (`meta/copy.rs`): the dump is one read transaction on a
//! reader connection (WAL: a snapshot that writers do not disturb); the load is one
//! `BEGIN IMMEDIATE` transaction on the write connection, so nothing else writes the target
//! meanwhile. An explicit `tag_history.id` moves the AUTOINCREMENT counter by itself.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool, Transaction};

use crate::meta::MetaError;
use crate::meta::copy::{
    Dump, Kind, Load, MUST_BE_EMPTY, Row, TABLES, Table, Value, collect_batch, count_sql, exists_sql, insert_sql,
    select_sql,
};

/// Opens the dump: a read transaction whose snapshot starts now.
pub(super) async fn dump(read: &SqlitePool) -> Result<Box<dyn Dump>, MetaError> {
    let mut tx = read.begin().await?;
    // A deferred transaction takes its snapshot at its first read: take it now.
    sqlx::query("SELECT count(*) FROM repositories").execute(&mut *tx).await?;
    Ok(Box::new(SqliteDump { tx }))
}

/// Opens the load: the write lock, held until commit or rollback.
pub(super) async fn load(write: &SqlitePool) -> Result<Box<dyn Load>, MetaError> {
    let tx = write.begin_with("BEGIN IMMEDIATE").await?;
    Ok(Box::new(SqliteLoad { tx }))
}

struct SqliteDump {
    tx: Transaction<'static, Sqlite>,
}

struct SqliteLoad {
    tx: Transaction<'static, Sqlite>,
}

fn decode(table: &Table, row: SqliteRow) -> Result<Row, MetaError> {
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        out.push(match kind {
            Kind::Int => row.try_get::<Option<i64>, _>(i)?.map_or(Value::Null, Value::Int),
            Kind::Text => row.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
            Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map_or(Value::Null, Value::Bytes),
        });
    }
    Ok(out)
}

/// Binds `v` as a `kind` value (a NULL keeps its column's type).
fn bind<'q>(
    q: sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>,
    v: &Value,
    kind: Kind,
) -> sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>> {
    match (v, kind) {
        (Value::Int(n), _) => q.bind(*n),
        (Value::Text(s), _) => q.bind(s.clone()),
        (Value::Bytes(b), _) => q.bind(b.clone()),
        (Value::Null, Kind::Int) => q.bind(None::<i64>),
        (Value::Null, Kind::Text) => q.bind(None::<String>),
        (Value::Null, Kind::Bytes) => q.bind(None::<Vec<u8>>),
    }
}

#[async_trait]
impl Dump for SqliteDump {
    async fn rows(&mut self, table: &Table, after: Option<&[Value]>) -> Result<Vec<Row>, MetaError> {
        let sql = select_sql(table, after.is_some(), |_| "?".to_string());
        let mut q = sqlx::query(&sql);
        for (v, i) in after.unwrap_or_default().iter().zip(table.key_positions()) {
            q = bind(q, v, table.columns[i].1);
        }
        collect_batch(q.fetch(&mut *self.tx), |r| decode(table, r)).await
    }

    async fn count(&mut self, table: &Table) -> Result<u64, MetaError> {
        let n: i64 = sqlx::query_scalar(&count_sql(table)).fetch_one(&mut *self.tx).await?;
        Ok(n as u64)
    }

    async fn finish(self: Box<Self>) -> Result<(), MetaError> {
        Ok(self.tx.rollback().await?)
    }
}

#[async_trait]
impl Load for SqliteLoad {
    async fn occupied(&mut self) -> Result<Vec<&'static str>, MetaError> {
        let mut out = Vec::new();
        for name in TABLES.iter().map(|t| t.name).chain(MUST_BE_EMPTY.iter().copied()) {
            let any: i64 = sqlx::query_scalar(&exists_sql(name)).fetch_one(&mut *self.tx).await?;
            if any != 0 {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn insert(&mut self, table: &Table, rows: &[Row]) -> Result<(), MetaError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (head, tail) = insert_sql(table, false);
        let mut qb = QueryBuilder::<Sqlite>::new(head);
        qb.push_values(rows, |mut b, row| {
            for (v, (_, kind)) in row.iter().zip(table.columns) {
                match (v, kind) {
                    (Value::Int(n), _) => b.push_bind(*n),
                    (Value::Text(s), _) => b.push_bind(s.clone()),
                    (Value::Bytes(x), _) => b.push_bind(x.clone()),
                    (Value::Null, Kind::Int) => b.push_bind(None::<i64>),
                    (Value::Null, Kind::Text) => b.push_bind(None::<String>),
                    (Value::Null, Kind::Bytes) => b.push_bind(None::<Vec<u8>>),
                };
            }
        });
        qb.push(tail);
        let done = qb.build().execute(&mut *self.tx).await?;
        if done.rows_affected() != rows.len() as u64 {
            return Err(MetaError::Corrupt(format!(
                "{}: inserted {} of {} rows",
                table.name,
                done.rows_affected(),
                rows.len()
            )));
        }
        Ok(())
    }

    async fn commit(self: Box<Self>) -> Result<(), MetaError> {
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        Ok(self.tx.rollback().await?)
    }
}
