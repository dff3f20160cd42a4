//! Which backend the test servers run on, and the throwaway PostgreSQL databases and S3
//! buckets the PostgreSQL + S3 backend needs. One file shared by several test targets, each
//! including it with `#[path]`: tests/api (its servers), tests/postgres (a database per
//! test), tests/s3 (a bucket per test) and the real-client tests (conformance/tests/clients).
//! It uses no Cairn type, so that the conformance crate can include it too.
//!
//! `TEST_BACKEND` chooses, for the suites that run on either (tests/api and the clients):
//! - unset or `sqlite-fs`: each server keeps SQLite and its blob directory in its data
//!   directory (the default);
//! - `postgres-s3`: each server gets a database of its own on the PostgreSQL server that
//!   `TEST_DATABASE_URL` names (its user may `CREATE DATABASE`; dropped when the server is
//!   done with it), and a bucket of its own on the S3-compatible server at
//!   `TEST_S3_ENDPOINT` (moto accepts any credentials; buckets are left there, and go away
//!   with the moto_server that `scripts/test` starts). Both variables missing or empty is a
//!   failure that names them, never a silent fall-back to SQLite.
//!
//! (Not `CAIRN_TEST_BACKEND`: `cairn` reads every `CAIRN_*` variable as configuration and
//! notes the ones that are not, and test runs start `cairn` with their environment.)

#![allow(dead_code)]

use sqlx::Connection;

/// The environment variable that chooses the backend.
pub const BACKEND_VAR: &str = "TEST_BACKEND";

/// The S3 region, access key id and secret the test buckets are used with (moto accepts any).
pub const S3_REGION: &str = "us-east-1";
pub const S3_ACCESS_KEY_ID: &str = "cairn-test";
pub const S3_SECRET_ACCESS_KEY: &str = "cairn-test-secret";

/// Where test servers keep their metadata and blobs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// SQLite and a blob directory in the data directory.
    SqliteFs,
    /// A database on the PostgreSQL server `admin_url` names and a bucket at `s3_endpoint`.
    PostgresS3 { admin_url: String, s3_endpoint: String },
}

impl Backend {
    /// The backend `TEST_BACKEND` chooses, or why it cannot be used (an unknown value, or
    /// `postgres-s3` without `TEST_DATABASE_URL` / `TEST_S3_ENDPOINT`).
    pub fn from_env() -> Result<Backend, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        match var(BACKEND_VAR).as_deref() {
            None | Some("sqlite-fs") => Ok(Backend::SqliteFs),
            Some("postgres-s3") => {
                let (db, s3) = (var("TEST_DATABASE_URL"), var("TEST_S3_ENDPOINT"));
                match (db, s3) {
                    (Some(admin_url), Some(s3_endpoint)) => Ok(Backend::PostgresS3 { admin_url, s3_endpoint }),
                    (db, s3) => {
                        let missing: Vec<&str> =
                            [("TEST_DATABASE_URL", db.is_none()), ("TEST_S3_ENDPOINT", s3.is_none())]
                                .into_iter()
                                .filter_map(|(n, m)| m.then_some(n))
                                .collect();
                        Err(format!(
                            "{BACKEND_VAR}=postgres-s3 needs {}: set TEST_DATABASE_URL to a PostgreSQL database \
                             whose user may CREATE DATABASE (Debian package `postgresql`) and TEST_S3_ENDPOINT \
                             to an S3-compatible server (PyPI `moto[server]`: `moto_server -p PORT`); \
                             `scripts/test` starts both and sets them",
                            missing.join(" and ")
                        ))
                    }
                }
            }
            Some(other) => Err(format!("{BACKEND_VAR}={other:?}: expected `sqlite-fs` (the default) or `postgres-s3`")),
        }
    }

    /// The backend of this run, read once; panics with [`Backend::from_env`]'s reason.
    pub fn current() -> &'static Backend {
        static CURRENT: std::sync::OnceLock<Result<Backend, String>> = std::sync::OnceLock::new();
        match CURRENT.get_or_init(Backend::from_env) {
            Ok(b) => b,
            Err(why) => panic!("{why}"),
        }
    }

    /// `sqlite-fs` or `postgres-s3`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::SqliteFs => "sqlite-fs",
            Backend::PostgresS3 { .. } => "postgres-s3",
        }
    }
}

/// A database made for one test; dropped (with its connections) when this is dropped.
pub struct TempDb {
    admin: String,
    name: String,
    /// Its URL.
    pub url: String,
}

impl TempDb {
    /// Creates an empty database with a random name next to the one `admin` names.
    pub async fn create(admin: &str) -> TempDb {
        TempDb::create_from(admin, None).await
    }

    /// Creates a database with a random name next to the one `admin` names, already migrated
    /// by `migrator`: a copy of a template database that it migrated once (half a second
    /// saved per database, a server's migrations then find nothing to do). The template,
    /// `cairn_test_template_<hash of the migrations>`, stays on the server for the next run;
    /// a change to the migrations makes another.
    pub async fn create_migrated(admin: &str, migrator: &sqlx::migrate::Migrator) -> TempDb {
        let template = template(admin, migrator).await;
        TempDb::create_from(admin, Some(&template)).await
    }

    async fn create_from(admin: &str, template: Option<&str>) -> TempDb {
        let name = format!("cairn_test_{:016x}", rand::random::<u64>());
        let mut conn = connect(admin).await;
        let from = template.map(|t| format!(" TEMPLATE {t}")).unwrap_or_default();
        execute_when_unused(&mut conn, &format!("CREATE DATABASE {name}{from}"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}{from}: {e}"));
        conn.close().await.ok();
        TempDb { admin: admin.to_string(), url: url_of(admin, &name), name }
    }
}

async fn connect(url: &str) -> sqlx::PgConnection {
    sqlx::PgConnection::connect(url).await.unwrap_or_else(|e| panic!("cannot connect to {url}: {e}"))
}

async fn database_exists(conn: &mut sqlx::PgConnection, name: &str) -> bool {
    let found = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1").bind(name).fetch_optional(conn).await;
    found.unwrap_or_else(|e| panic!("reading pg_database: {e}")).is_some()
}

/// Runs `sql`, retrying for up to 5 s while it fails because another session is still
/// connected to the database it copies or renames (SQLSTATE 55006: a connection just closed
/// lingers a moment on the server).
async fn execute_when_unused(conn: &mut sqlx::PgConnection, sql: &str) -> Result<(), sqlx::Error> {
    for _ in 0..50 {
        match sqlx::query(sql).execute(&mut *conn).await {
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("55006") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await
            }
            done => return done.map(|_| ()),
        }
    }
    sqlx::query(sql).execute(conn).await.map(|_| ())
}

/// The URL of database `name` on the server `admin` names.
fn url_of(admin: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin).unwrap_or_else(|e| panic!("{admin} is not a URL: {e}"));
    url.set_path(name);
    url.to_string()
}

/// The name of a database that `migrator` migrated, made if the server has none yet: built
/// under a name of its own, then renamed into place, so that nobody copies a half-migrated
/// one (two processes building at once: the second rename fails, and its copy is dropped).
async fn template(admin: &str, migrator: &sqlx::migrate::Migrator) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in migrator.iter() {
        (m.version, &m.checksum[..]).hash(&mut h);
    }
    let name = format!("cairn_test_template_{:016x}", h.finish());
    let mut conn = connect(admin).await;
    if !database_exists(&mut conn, &name).await {
        let building = TempDb::create_from(admin, None).await;
        let mut db = connect(&building.url).await;
        migrator.run(&mut db).await.unwrap_or_else(|e| panic!("migrating the template database: {e}"));
        db.close().await.ok();
        let renamed =
            execute_when_unused(&mut conn, &format!("ALTER DATABASE {} RENAME TO {name}", building.name)).await;
        match renamed {
            Ok(()) => {}
            Err(_) if database_exists(&mut conn, &name).await => {} // another process made it meanwhile
            Err(e) => panic!("ALTER DATABASE {} RENAME TO {name}: {e}", building.name),
        }
        // Dropping `building` drops nothing once renamed (IF EXISTS), else the loser's copy.
    }
    conn.close().await.ok();
    name
}

impl Drop for TempDb {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside another runtime.
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                conn.close().await
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("[tests] could not drop database {}: {e}", self.name);
        }
    }
}

/// Creates a bucket with a unique name on the S3 server at `endpoint` (an unsigned
/// `PUT /<bucket>`, which moto accepts) and returns its name.
pub async fn create_bucket(endpoint: &str) -> String {
    let name = format!("cairn-test-{:032x}", rand::random::<u128>());
    let r = reqwest::Client::new()
        .put(format!("{}/{name}", endpoint.trim_end_matches('/')))
        .send()
        .await
        .unwrap_or_else(|e| panic!("cannot reach the S3 server at {endpoint} (TEST_S3_ENDPOINT): {e}"));
    assert!(r.status().is_success(), "cannot create bucket {name} at {endpoint}: {}", r.status());
    name
}

/// A database and a bucket for a server (or for several servers and commands sharing one
/// data directory): what `[database]` and `[storage]` point a Cairn at.
pub struct PgS3 {
    /// The database.
    pub db: TempDb,
    /// The bucket's name.
    pub bucket: String,
    /// The S3 server's URL.
    pub endpoint: String,
}

impl PgS3 {
    /// A fresh database on `admin_url`'s server (migrated by `migrator` if given, see
    /// [`TempDb::create_migrated`]) and a fresh bucket at `s3_endpoint`.
    pub async fn create(admin_url: &str, s3_endpoint: &str, migrator: Option<&sqlx::migrate::Migrator>) -> PgS3 {
        let db = match migrator {
            Some(m) => TempDb::create_migrated(admin_url, m).await,
            None => TempDb::create(admin_url).await,
        };
        let bucket = create_bucket(s3_endpoint).await;
        PgS3 { db, bucket, endpoint: s3_endpoint.trim_end_matches('/').to_string() }
    }

    /// The `CAIRN_*` variables that point a `cairn` command at this database and bucket.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("CAIRN_DATABASE_URL", self.db.url.clone()),
            ("CAIRN_STORAGE__KIND", "s3".into()),
            ("CAIRN_STORAGE__BUCKET", self.bucket.clone()),
            ("CAIRN_STORAGE__REGION", S3_REGION.into()),
            ("CAIRN_STORAGE__ENDPOINT", self.endpoint.clone()),
            ("CAIRN_STORAGE__PATH_STYLE", "true".into()),
            ("CAIRN_STORAGE__ACCESS_KEY_ID", S3_ACCESS_KEY_ID.into()),
            ("CAIRN_STORAGE__SECRET_ACCESS_KEY", S3_SECRET_ACCESS_KEY.into()),
        ]
    }

    /// The same as TOML: a `[database]` and a `[storage]` table, to append to a config file
    /// that has neither.
    pub fn toml(&self) -> String {
        format!(
            "\n[database]\nurl = {:?}\n\n[storage]\nkind = \"s3\"\nbucket = {:?}\nregion = {S3_REGION:?}\n\
             endpoint = {:?}\npath_style = true\naccess_key_id = {S3_ACCESS_KEY_ID:?}\n\
             secret_access_key = {S3_SECRET_ACCESS_KEY:?}\n",
            self.db.url, self.bucket, self.endpoint
        )
    }
}
