//! `Dump` and `Load` on SQLite (`meta/copy.rs`): the dump is one read transaction on a
//! reader connection (WAL: a snapshot that writers do not disturb); the load is one
//! turn on the group committer's write connection (`sqlite/group.rs`: a savepoint of a
//! `BEGIN IMMEDIATE` transaction), so nothing else writes the target meanwhile. An explicit `tag_history.id` moves the AUTOINCREMENT counter by itself.

use async_trait::async_trait;
use sqlx::sqlite::{SqliteArguments, SqliteRow};
use sqlx::{QueryBuilder, Row as _, Sqlite, SqlitePool, Transaction};

use super::group::{Group, Turn};

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

/// Opens the load: a turn on the write connection, held until commit or rollback.
pub(super) async fn load(group: &Group) -> Result<Box<dyn Load>, MetaError> {
    let tx = group.begin().await?;
    Ok(Box::new(SqliteLoad { tx }))
}

struct SqliteDump {
    tx: Transaction<'static, Sqlite>,
}

struct SqliteLoad {
    tx: Turn,
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
        self.tx.commit(Vec::new()).await
    }

    async fn rollback(self: Box<Self>) -> Result<(), MetaError> {
        self.tx.rollback().await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::SqlitePool;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::super::SqliteStore;
    use crate::meta::MetadataStore;
    use crate::meta::copy::{BATCH_ROWS, TABLES, Table};

    fn table(name: &str) -> &'static Table {
        TABLES.iter().find(|t| t.name == name).unwrap()
    }

    /// A store and a second handle on its file for raw SQL.
    async fn open(dir: &std::path::Path, name: &str) -> (SqliteStore, SqlitePool) {
        let url = format!("sqlite://{}", dir.join(name).display());
        let store = SqliteStore::open(&url).await.unwrap();
        (store, SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap())
    }

    /// What a table holds, in key order, as one string.
    async fn contents(pool: &SqlitePool, t: &Table) -> String {
        let cols: Vec<String> = t.columns.iter().map(|(c, _)| format!("quote({c})")).collect();
        let sql = format!(
            "SELECT coalesce(group_concat(r, ';'), '') FROM (SELECT {} AS r FROM {} ORDER BY {})",
            cols.join(" || ',' || "),
            t.name,
            t.key.join(", ")
        );
        sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap()
    }

    /// More rows than a batch under a two-column key, manifests whose bodies end a batch at the
    /// byte cap, and history ids: all arrive as they were, and the AUTOINCREMENT counter follows.
    #[tokio::test]
    async fn batches_follow_the_whole_key_and_end_at_the_byte_cap() {
        let dir = tempfile::tempdir().unwrap();
        let ((source, src), (target, dst)) = (open(dir.path(), "s.db").await, open(dir.path(), "t.db").await);
        for sql in [
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 39)
             INSERT INTO repositories SELECT printf('r%02d', i), i FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 29)
             INSERT INTO blobs (digest, size, location, created_at, touched_at)
             SELECT printf('sha256:%064d', i), 1, '{\"upload\":\"u\",\"segments\":[]}', i, i FROM n",
            "INSERT INTO repo_blobs SELECT r.name, b.digest, 7 FROM repositories r, blobs b",
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 4)
             INSERT INTO manifests (repo, digest, media_type, size, body, artifact_type, subject, annotations, created_at)
             SELECT 'r00', printf('sha256:%064d', 100 + i), 'm', 3145728, randomblob(3145728), NULL, NULL, NULL, i FROM n",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700)
             INSERT INTO tag_history (id, repo, tag, action, from_digest, to_digest, actor, address, at)
             SELECT i * 2, 'r00', 't', 'create', NULL, 'sha256:x', 'ci', NULL, i FROM n",
        ] {
            sqlx::query(sql).execute(&src).await.unwrap();
        }

        let mut dump = source.dump().await.unwrap();
        let first = dump.rows(table("manifests"), None).await.unwrap();
        assert_eq!(first.len(), 3, "3 bodies of 3 MiB pass the 8 MiB cap");
        let mut load = target.load().await.unwrap();
        assert!(load.occupied().await.unwrap().is_empty());
        for t in TABLES {
            let (mut after, mut batches) = (None, 0);
            loop {
                let rows = dump.rows(t, after.as_deref()).await.unwrap();
                let Some(last) = rows.last() else { break };
                assert!(rows.len() <= BATCH_ROWS as usize);
                after = Some(t.key_of(last));
                load.insert(t, &rows).await.unwrap();
                batches += 1;
            }
            let expected = match t.name {
                "repo_blobs" => 3,
                "tag_history" => 2,
                "manifests" => 2,
                _ => batches,
            };
            assert_eq!(batches, expected, "{}", t.name);
        }
        load.commit().await.unwrap();
        dump.finish().await.unwrap();

        for t in TABLES {
            assert_eq!(contents(&dst, t).await, contents(&src, t).await, "{}", t.name);
        }
        let next: i64 = sqlx::query_scalar(
            "INSERT INTO tag_history (repo, tag, action, to_digest, actor, at) VALUES ('r00', 't', 'move', 'x', 'ci', 1)
             RETURNING id",
        )
        .fetch_one(&dst)
        .await
        .unwrap();
        assert_eq!(next, 1401, "the history counter follows the copied ids");
        let mut again = target.load().await.unwrap();
        let occupied = again.occupied().await.unwrap();
        again.rollback().await.unwrap();
        assert!(occupied.contains(&"repo_blobs") && occupied.contains(&"tag_history"), "{occupied:?}");
    }
}
