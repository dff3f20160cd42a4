//! Copying one database into another, row for row (`cairn migrate --copy-to`): the tables
//! that hold registry data, in the order their foreign keys need; a neutral row type; and the
//! two halves each backend implements over its own SQL: [`Dump`], a consistent read-only view
//! of the source read a batch at a time, and [`Load`], one write transaction on an empty
//! target that inserts the rows with their ids, sequence numbers and times unchanged (so the
//! audit ledger's hashes and signed checkpoints still verify) and moves the target's own id
//! sequences past them when it commits.
//!
//! Not copied (see [`SKIPPED`]): upload sessions in progress, upload leftovers waiting for GC,
//! the collector lock and the readiness row. Signing keys and audit archive files are files,
//! not rows; `service/copy.rs` copies them.

use async_trait::async_trait;

use super::{BlobLocation, BlobRecord, MetaError};
use crate::oci::Digest;

/// How a column is stored and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// INTEGER / BIGINT (times are milliseconds since the epoch).
    Int,
    /// TEXT (digests, names, JSON).
    Text,
    /// BLOB / BYTEA (manifest bodies, hashed secrets).
    Bytes,
}

/// One column value, whatever the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

/// One row: values in the order of [`Table::columns`].
pub type Row = Vec<Value>;

/// A table that is copied.
#[derive(Debug)]
pub struct Table {
    /// Its name, the same in every backend.
    pub name: &'static str,
    /// Every column that holds data, with how it is stored.
    pub columns: &'static [(&'static str, Kind)],
    /// Its primary key: rows are read in key order, each batch after the last key read.
    pub key: &'static [&'static str],
    /// Rows that count, as an SQL condition (PostgreSQL keeps a placeholder ledger head with
    /// seq 0, which means "no event yet", as SQLite's missing row does).
    pub filter: Option<&'static str>,
    /// A key column the database numbers itself: after loading, the target's sequence for it
    /// moves past the copied ids (PostgreSQL's identity; SQLite's AUTOINCREMENT follows by
    /// itself).
    pub identity: Option<&'static str>,
    /// The schema creates a row of it (PostgreSQL's ledger head): loading replaces it.
    pub upsert: bool,
}

impl Table {
    /// The positions of the key columns in a row.
    pub fn key_positions(&self) -> Vec<usize> {
        self.key.iter().map(|k| self.columns.iter().position(|(c, _)| c == k).expect("key is a column")).collect()
    }

    /// The key values of `row`, to read the next batch after it.
    pub fn key_of(&self, row: &Row) -> Vec<Value> {
        self.key_positions().into_iter().map(|i| row[i].clone()).collect()
    }
}

const fn table(name: &'static str, columns: &'static [(&'static str, Kind)], key: &'static [&'static str]) -> Table {
    Table { name, columns, key, filter: None, identity: None, upsert: false }
}

use Kind::{Bytes, Int, Text};

/// The blobs table (read first, for the objects to copy; see [`blob_record`]).
pub const BLOBS: Table = table(
    "blobs",
    &[("digest", Text), ("size", Int), ("location", Text), ("created_at", Int), ("touched_at", Int)],
    &["digest"],
);

/// Every table that is copied, parents before the rows whose foreign keys name them.
pub const TABLES: &[Table] = &[
    table("repositories", &[("name", Text), ("created_at", Int)], &["name"]),
    BLOBS,
    table("repo_blobs", &[("repo", Text), ("digest", Text), ("created_at", Int)], &["repo", "digest"]),
    table(
        "manifests",
        &[
            ("repo", Text),
            ("digest", Text),
            ("media_type", Text),
            ("size", Int),
            ("body", Bytes),
            ("artifact_type", Text),
            ("subject", Text),
            ("annotations", Text),
            ("created_at", Int),
        ],
        &["repo", "digest"],
    ),
    table("manifest_blobs", &[("repo", Text), ("manifest", Text), ("blob", Text)], &["repo", "manifest", "blob"]),
    table("manifest_children", &[("repo", Text), ("manifest", Text), ("child", Text)], &["repo", "manifest", "child"]),
    table("tags", &[("repo", Text), ("name", Text), ("digest", Text), ("updated_at", Int)], &["repo", "name"]),
    Table {
        identity: Some("id"),
        ..table(
            "tag_history",
            &[
                ("id", Int),
                ("repo", Text),
                ("tag", Text),
                ("action", Text),
                ("from_digest", Text),
                ("to_digest", Text),
                ("actor", Text),
                ("address", Text),
                ("at", Int),
            ],
            &["id"],
        )
    },
    table(
        "manifest_pulls",
        &[("repo", Text), ("digest", Text), ("count", Int), ("last_pulled", Int)],
        &["repo", "digest"],
    ),
    table(
        "robots",
        &[
            ("name", Text),
            ("secret_sha256", Bytes),
            ("roles", Text),
            ("grants", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
        ],
        &["name"],
    ),
    table(
        "ledger",
        &[
            ("seq", Int),
            ("time", Text),
            ("at_ms", Int),
            ("actor", Text),
            ("address", Text),
            ("action", Text),
            ("repository", Text),
            ("tag", Text),
            ("digest", Text),
            ("previous_digest", Text),
            ("detail", Text),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        &["seq"],
    ),
    Table {
        filter: Some("seq > 0"),
        upsert: true,
        ..table("ledger_head", &[("id", Int), ("seq", Int), ("hash", Text)], &["id"])
    },
    table("ledger_checkpoints", &[("seq", Int), ("hash", Text), ("time", Text), ("signature", Text)], &["seq"]),
    table("ledger_archives", &[("seq", Int), ("hash", Text), ("file", Text), ("at_ms", Int)], &["seq"]),
];

/// Tables that are not copied, and why (for the summary and the README).
pub const SKIPPED: &[(&str, &str)] = &[
    ("uploads", "upload sessions in progress: their clients start the upload again"),
    ("upload_garbage", "leftovers of ended uploads, whose objects are not copied"),
    ("gc_lock", "the collector lock"),
    ("write_check", "the readiness check's row"),
    ("ledger_keys", "SQLite's lookup keys of the ledger: a SQLite target keys its ledger when it opens"),
    ("ledger_keyed", "how far SQLite's lookup keys reach"),
];

/// Upload sessions in progress (not copied; counted for the summary).
pub const UPLOADS: Table = table("uploads", &[("id", Text)], &["id"]);

/// Tables besides [`TABLES`] that must be empty in a target: a registry that has taken an
/// upload is in use.
pub const MUST_BE_EMPTY: &[&str] = &["uploads", "upload_garbage"];

/// Rows per batch read from the source and inserted into the target.
pub const BATCH_ROWS: u32 = 500;
/// A batch ends early once its values hold this many bytes (manifests may be 4 MiB each).
pub const BATCH_BYTES: usize = 8 << 20;

/// Roughly how many bytes a row holds (to bound a batch).
pub fn row_bytes(row: &Row) -> usize {
    row.iter()
        .map(|v| match v {
            Value::Null | Value::Int(_) => 8,
            Value::Text(s) => s.len(),
            Value::Bytes(b) => b.len(),
        })
        .sum()
}

/// A row of [`BLOBS`] as the blob it describes (its location names the objects to copy).
pub fn blob_record(row: &Row) -> Result<BlobRecord, MetaError> {
    let (Some(Value::Text(digest)), Some(Value::Int(size)), Some(Value::Text(location))) =
        (row.first(), row.get(1), row.get(2))
    else {
        return Err(MetaError::Corrupt(format!("a blobs row of an unexpected shape: {row:?}")));
    };
    let location: BlobLocation =
        serde_json::from_str(location).map_err(|e| MetaError::Corrupt(format!("blob {digest}: location: {e}")))?;
    Ok(BlobRecord {
        digest: Digest::parse(digest).map_err(|e| MetaError::Corrupt(format!("blob {digest}: {e}")))?,
        size: *size as u64,
        location,
    })
}

/// A consistent, read-only view of every table of the source (one read transaction: rows
/// written meanwhile are not seen).
#[async_trait]
pub trait Dump: Send {
    /// Rows of `table` in key order after the key `after` (from the start when `None`): at
    /// most [`BATCH_ROWS`], fewer once they hold [`BATCH_BYTES`]; empty at the end.
    async fn rows(&mut self, table: &Table, after: Option<&[Value]>) -> Result<Vec<Row>, MetaError>;
    /// How many rows `table` has (for progress).
    async fn count(&mut self, table: &Table) -> Result<u64, MetaError>;
    /// Ends the read transaction.
    async fn finish(self: Box<Self>) -> Result<(), MetaError>;
}

/// One write transaction on the target that loads copied rows. Nothing is visible until
/// [`Load::commit`]; dropping it (or an error) leaves the target as it was.
#[async_trait]
pub trait Load: Send {
    /// The tables that hold rows (those of [`TABLES`] and [`MUST_BE_EMPTY`]); empty when the
    /// database is empty and may be loaded.
    async fn occupied(&mut self) -> Result<Vec<&'static str>, MetaError>;
    /// Inserts `rows` into `table` as they are (ids and times included).
    async fn insert(&mut self, table: &Table, rows: &[Row]) -> Result<(), MetaError>;
    /// Moves the target's id sequences past the copied ids and commits.
    async fn commit(self: Box<Self>) -> Result<(), MetaError>;
    /// Discards everything loaded.
    async fn rollback(self: Box<Self>) -> Result<(), MetaError>;
}

/// `SELECT` of a batch after a key, with the backend's placeholders (`?` or `$n`).
pub(super) fn select_sql(table: &Table, after: bool, placeholder: impl Fn(usize) -> String) -> String {
    let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let mut conds: Vec<String> = table.filter.iter().map(|f| f.to_string()).collect();
    if after {
        let marks: Vec<String> = (1..=table.key.len()).map(&placeholder).collect();
        conds.push(format!("({}) > ({})", table.key.join(", "), marks.join(", ")));
    }
    let filter = if conds.is_empty() { String::new() } else { format!(" WHERE {}", conds.join(" AND ")) };
    format!(
        "SELECT {} FROM {}{filter} ORDER BY {} LIMIT {}",
        cols.join(", "),
        table.name,
        table.key.join(", "),
        BATCH_ROWS
    )
}

/// `SELECT count(*)` of the rows that count.
pub(super) fn count_sql(table: &Table) -> String {
    match table.filter {
        Some(f) => format!("SELECT count(*) FROM {} WHERE {f}", table.name),
        None => format!("SELECT count(*) FROM {}", table.name),
    }
}

/// `SELECT EXISTS` over the rows that count of `name`.
pub(super) fn exists_sql(name: &str) -> String {
    let filter = TABLES.iter().find(|t| t.name == name).and_then(|t| t.filter);
    match filter {
        Some(f) => format!("SELECT EXISTS (SELECT 1 FROM {name} WHERE {f})"),
        None => format!("SELECT EXISTS (SELECT 1 FROM {name})"),
    }
}

/// The head of an `INSERT` (`VALUES` follows) and its tail (the upsert clause, or empty).
/// `override_identity` is PostgreSQL's `OVERRIDING SYSTEM VALUE` for an identity column.
pub(super) fn insert_sql(table: &Table, override_identity: bool) -> (String, String) {
    let cols: Vec<&str> = table.columns.iter().map(|(c, _)| *c).collect();
    let overriding = if override_identity && table.identity.is_some() { " OVERRIDING SYSTEM VALUE" } else { "" };
    let head = format!("INSERT INTO {} ({}){overriding} ", table.name, cols.join(", "));
    let tail = if table.upsert {
        let set: Vec<String> =
            cols.iter().filter(|c| !table.key.contains(c)).map(|c| format!("{c} = excluded.{c}")).collect();
        format!(" ON CONFLICT ({}) DO UPDATE SET {}", table.key.join(", "), set.join(", "))
    } else {
        String::new()
    };
    (head, tail)
}

/// Reads rows from a stream until [`BATCH_ROWS`] or [`BATCH_BYTES`].
pub(super) async fn collect_batch<S, R>(
    mut rows: S,
    mut decode: impl FnMut(R) -> Result<Row, MetaError>,
) -> Result<Vec<Row>, MetaError>
where
    S: futures::Stream<Item = Result<R, sqlx::Error>> + Unpin,
{
    use futures::StreamExt;
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(r) = rows.next().await {
        let row = decode(r?)?;
        bytes += row_bytes(&row);
        out.push(row);
        if bytes >= BATCH_BYTES {
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_lists_its_key_among_its_columns() {
        for t in TABLES {
            assert_eq!(t.key_positions().len(), t.key.len(), "{}", t.name);
        }
    }

    #[test]
    fn a_batch_after_a_key_compares_the_whole_key() {
        let t = TABLES.iter().find(|t| t.name == "repo_blobs").unwrap();
        let sql = select_sql(t, true, |i| format!("${i}"));
        assert_eq!(
            sql,
            "SELECT repo, digest, created_at FROM repo_blobs WHERE (repo, digest) > ($1, $2) ORDER BY repo, digest LIMIT 500"
        );
        let head = TABLES.iter().find(|t| t.name == "ledger_head").unwrap();
        assert_eq!(
            select_sql(head, false, |_| "?".into()),
            "SELECT id, seq, hash FROM ledger_head WHERE seq > 0 ORDER BY id LIMIT 500"
        );
        let (h, tail) = insert_sql(head, true);
        assert_eq!(h, "INSERT INTO ledger_head (id, seq, hash) ");
        assert_eq!(tail, " ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash");
        let history = TABLES.iter().find(|t| t.name == "tag_history").unwrap();
        assert!(insert_sql(history, true).0.ends_with("OVERRIDING SYSTEM VALUE "));
        assert!(!insert_sql(history, false).0.contains("OVERRIDING"));
    }

    #[test]
    fn a_blobs_row_reads_as_its_blob() {
        let loc = r#"{"upload":"u1","segments":[{"name":"0-abc","len":3},{"name":"1-def","len":2}]}"#;
        let d = format!("sha256:{}", "a".repeat(64));
        let row = vec![Value::Text(d.clone()), Value::Int(5), Value::Text(loc.into()), Value::Int(1), Value::Int(2)];
        let b = blob_record(&row).unwrap();
        assert_eq!(b.digest.as_str(), d);
        assert_eq!(b.size, 5);
        assert_eq!(b.location.segments.len(), 2);
        assert!(blob_record(&vec![Value::Null]).is_err());
    }
}
