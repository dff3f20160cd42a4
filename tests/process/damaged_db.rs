//! Damaged, foreign and read-only databases (issue 8): `cairn serve` refuses to start, with
//! a message that names the file and says what to do, over a zero-byte `cairn.db`, a file
//! that is not SQLite, an SQLite file of another program (its own tables, or its own
//! migration log) and a database it cannot write (read-only filesystem, read-only file,
//! directory it cannot create the WAL in); it changes none of the foreign files. A missing
//! file still becomes a fresh registry. The read-only cases need root (a tmpfs remounted
//! read-only; the server run as `nobody`, since root ignores permissions); CI runs as root.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};

use crate::faults::{Exited, NOBODY, Tmpfs, chown_tree, require_root, run_to_exit, world_runnable_binary};
use crate::support::*;

const WAIT: Duration = Duration::from_secs(30);

fn serve_args(cmd: &mut Command, data: &Path) {
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(data);
}

/// `cairn serve` over `data`, expected to exit.
fn serve(data: &Path) -> Exited {
    let mut cmd = cairn();
    serve_args(&mut cmd, data);
    run_to_exit(&mut cmd, WAIT)
}

/// `cairn serve` over `data` as `nobody`, expected to exit.
fn serve_as_nobody(data: &Path) -> Exited {
    let (_bin_dir, bin) = world_runnable_binary();
    let mut cmd = Command::new(&bin);
    cmd.env_clear().env("RUST_LOG", "warn").uid(NOBODY).gid(NOBODY);
    serve_args(&mut cmd, data);
    run_to_exit(&mut cmd, WAIT)
}

fn assert_refused(out: &Exited, wants: &[&str]) {
    assert!(!out.stdout.contains("cairn listening on"), "it started serving:\n{}\n{}", out.stdout, out.stderr);
    assert!(!out.status.success(), "exit status {:?}; stderr:\n{}", out.status, out.stderr);
    for w in wants {
        assert!(out.stderr.contains(w), "stderr lacks {w:?}:\n{}", out.stderr);
    }
}

/// A database made by `cairn migrate`, then closed cleanly (its WAL checkpointed and
/// removed), as after a clean shutdown.
async fn migrated(data: &Path) {
    let config = data.parent().unwrap().join("migrate.toml");
    std::fs::write(&config, format!("[server]\ndata_dir = \"{}\"\n", data.display())).unwrap();
    let out = run_to_exit(cairn().arg("migrate").arg("--config").arg(&config), WAIT);
    assert!(out.status.success(), "cairn migrate: {}", out.stderr);
    let opts = SqliteConnectOptions::new().filename(data.join("cairn.db"));
    let mut conn = SqliteConnection::connect_with(&opts).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    assert!(!data.join("cairn.db-wal").exists(), "the WAL is still there after the last connection closed");
}

/// A temp root that `nobody` can traverse.
fn open_workdir() -> (tempfile::TempDir, std::path::PathBuf) {
    let (root, data) = workdir();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    (root, data)
}

async fn foreign_db(path: &Path, sql: &[&str]) {
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display())).unwrap().create_if_missing(true);
    let mut conn = SqliteConnection::connect_with(&opts).await.unwrap();
    for s in sql {
        sqlx::query(s).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
}

#[test]
fn a_zero_byte_database_is_refused_and_left_alone() {
    let (_root, data) = workdir();
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("cairn.db");
    std::fs::write(&db, b"").unwrap();
    let out = serve(&data);
    assert_refused(&out, &[&db.display().to_string(), "empty file (0 bytes)", "not a Cairn database", "backup"]);
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 0, "the empty file was written to");
    assert!(!data.join("cairn.db-wal").exists());
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let (_root, data) = workdir();
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("cairn.db");
    let junk = random_bytes(16 << 10);
    std::fs::write(&db, &junk).unwrap();
    let out = serve(&data);
    assert_refused(&out, &[&db.display().to_string(), "is not an SQLite database"]);
    assert!(std::fs::read(&db).unwrap() == junk, "the file was changed");
}

#[tokio::test]
async fn an_sqlite_database_of_another_program_is_refused_and_left_alone() {
    let (_root, data) = workdir();
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("cairn.db");
    foreign_db(
        &db,
        &[
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
            "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER)",
            "INSERT INTO customers (name) VALUES ('ada')",
        ],
    )
    .await;
    let before = std::fs::read(&db).unwrap();
    let out = serve(&data);
    assert_refused(
        &out,
        &[&db.display().to_string(), "another program", "customers, orders", "no Cairn migrations", "database.url"],
    );
    assert!(std::fs::read(&db).unwrap() == before, "the foreign database was changed");
    assert!(!data.join("cairn.db-wal").exists(), "the foreign database was switched to WAL");

    // Another sqlx program's database: a migration log, but not Cairn's.
    std::fs::remove_file(&db).unwrap();
    foreign_db(
        &db,
        &[
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL,
             installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP, success BOOLEAN NOT NULL,
             checksum BLOB NOT NULL, execution_time BIGINT NOT NULL)",
            "INSERT INTO _sqlx_migrations VALUES (1, 'accounts', CURRENT_TIMESTAMP, 1, X'00', 0)",
            "CREATE TABLE accounts (id INTEGER PRIMARY KEY)",
        ],
    )
    .await;
    let out = serve(&data);
    assert_refused(&out, &[&db.display().to_string(), "migrations that are not Cairn's"]);
}

#[tokio::test]
async fn a_missing_database_becomes_a_fresh_registry() {
    let (_root, data) = workdir();
    assert!(!data.join("cairn.db").exists());
    let srv = Server::start(&data).await;
    let http = client();
    let bytes = random_bytes(1000);
    let d = push_blob(&http, &srv, "fresh/app", &bytes).await;
    assert_blob(&http, &srv, "fresh/app", &d, &bytes).await;
    let r = http.get(srv.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::OK);
}

#[tokio::test]
async fn a_database_on_a_read_only_filesystem_is_refused() {
    let fs = Tmpfs::mount("16m");
    let mut srv = Server::start(&fs.path).await;
    let http = client();
    push_blob(&http, &srv, "ro/app", &random_bytes(1000)).await;
    srv.terminate();
    assert!(srv.wait_exit(Duration::from_secs(20)).await.is_some(), "the server did not stop");
    fs.remount(true);
    let out = serve(&fs.path);
    fs.remount(false);
    let db = fs.path.join("cairn.db");
    assert_refused(&out, &[&format!("cannot write the database {}", db.display()), "read-only"]);
}

#[tokio::test]
async fn a_database_file_the_server_cannot_write_is_refused() {
    require_root("it runs the server as nobody: root ignores file permissions");
    let (_root, data) = open_workdir();
    migrated(&data).await;
    chown_tree(&data, NOBODY);
    let db = data.join("cairn.db");
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o444)).unwrap();
    let out = serve_as_nobody(&data);
    assert_refused(&out, &[&format!("cannot write the database {}", db.display()), "permissions"]);
}

#[tokio::test]
async fn a_database_in_a_directory_the_server_cannot_write_is_refused() {
    require_root("it runs the server as nobody: root ignores file permissions");
    let (_root, data) = open_workdir();
    migrated(&data).await;
    chown_tree(&data, NOBODY);
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o555)).unwrap();
    let out = serve_as_nobody(&data);
    let db = data.join("cairn.db");
    assert_refused(&out, &[&format!("cannot write the database {}", db.display()), "-wal"]);
}
