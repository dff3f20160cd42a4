//! `Dump` and `Load` on PostgreSQL (`meta/copy.rs`): the dump is one REPEATABLE READ, READ
//! ONLY transaction (one snapshot for every table); the load is one transaction that first
//! locks the ledger head (every writing transaction of a node appends to the ledger, so none
//! can commit in between), inserts `tag_history` ids with `OVERRIDING SYSTEM VALUE` and, before
//! it commits, moves the identity sequence past the highest copied id (`setval`). Also the
//! replacement of a shared signing key in a target that is still empty.

use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row as _, Transaction};

use crate::meta::MetaError;
use crate::meta::copy::{
    Dump, Kind, Load, MUST_BE_EMPTY, Row, TABLES, Table, Value, collect_batch, count_sql, exists_sql, insert_sql,
    select_sql,
};

/// Opens the dump: a snapshot of the whole database as of now.
pub(super) async fn dump(read: &PgPool) -> Result<Box<dyn Dump>, MetaError> {
    let mut tx = read.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY").await?;
    // The snapshot is taken at the first statement: take it now.
    sqlx::query("SELECT 1").execute(&mut *tx).await?;
    Ok(Box::new(PgDump { tx }))
}

/// Opens the load, holding the ledger head's row lock until commit or rollback.
pub(super) async fn load(write: &PgPool) -> Result<Box<dyn Load>, MetaError> {
    let mut tx = write.begin_with("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
    sqlx::query("SELECT seq FROM ledger_head WHERE id = 1 FOR UPDATE").execute(&mut *tx).await?;
    Ok(Box::new(PgLoad { tx }))
}

/// Stores `pkcs8` as the shared signing key `name`, replacing the one stored.
pub(super) async fn replace_shared_key(write: &PgPool, name: &str, pkcs8: &[u8], now: i64) -> Result<(), MetaError> {
    sqlx::query(
        "INSERT INTO signing_keys (name, pkcs8, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET pkcs8 = excluded.pkcs8, created_at = excluded.created_at",
    )
    .bind(name)
    .bind(pkcs8)
    .bind(now)
    .execute(write)
    .await?;
    Ok(())
}

struct PgDump {
    tx: Transaction<'static, Postgres>,
}

struct PgLoad {
    tx: Transaction<'static, Postgres>,
}

fn decode(table: &Table, row: PgRow) -> Result<Row, MetaError> {
    let mut out = Vec::with_capacity(table.columns.len());
    for (i, (_, kind)) in table.columns.iter().enumerate() {
        out.push(match kind {
            // BIGINT, or INTEGER for the one-row tables' `id`.
            Kind::Int => match row.try_get::<Option<i64>, _>(i) {
                Ok(v) => v,
                Err(sqlx::Error::ColumnDecode { .. }) => row.try_get::<Option<i32>, _>(i)?.map(i64::from),
                Err(e) => return Err(e.into()),
            }
            .map_or(Value::Null, Value::Int),
            Kind::Text => row.try_get::<Option<String>, _>(i)?.map_or(Value::Null, Value::Text),
            Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map_or(Value::Null, Value::Bytes),
        });
    }
    Ok(out)
}

/// Binds `v` as a `kind` value (a NULL keeps its column's type).
fn bind<'q>(
    q: sqlx::query::Query<'q, Postgres, PgArguments>,
    v: &Value,
    kind: Kind,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
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
impl Dump for PgDump {
    async fn rows(&mut self, table: &Table, after: Option<&[Value]>) -> Result<Vec<Row>, MetaError> {
        let sql = select_sql(table, after.is_some(), |i| format!("${i}"));
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
impl Load for PgLoad {
    async fn occupied(&mut self) -> Result<Vec<&'static str>, MetaError> {
        let mut out = Vec::new();
        for name in TABLES.iter().map(|t| t.name).chain(MUST_BE_EMPTY.iter().copied()) {
            let any: bool = sqlx::query_scalar(&exists_sql(name)).fetch_one(&mut *self.tx).await?;
            if any {
                out.push(name);
            }
        }
        Ok(out)
    }

    async fn insert(&mut self, table: &Table, rows: &[Row]) -> Result<(), MetaError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (head, tail) = insert_sql(table, true);
        let mut qb = QueryBuilder::<Postgres>::new(head);
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

    async fn commit(mut self: Box<Self>) -> Result<(), MetaError> {
        for t in TABLES {
            let Some(id) = t.identity else { continue };
            let sql = format!(
                "SELECT setval(pg_get_serial_sequence('{0}', '{id}'), COALESCE((SELECT max({id}) FROM {0}), 0) + 1, false)",
                t.name
            );
            sqlx::query(&sql).execute(&mut *self.tx).await?;
        }
        Ok(self.tx.commit().await?)
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        Ok(self.tx.rollback().await?)
    }
}
