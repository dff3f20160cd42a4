//! `cairn migrate --copy-to` between SQLite + filesystem and PostgreSQL + S3, both ways, with
//! the real binary: the scenario of tests/process/copy.rs (`round_trip`), each PostgreSQL side
//! in a database of its own and each S3 side in a bucket of its own on the server
//! `TEST_S3_ENDPOINT` names (`scripts/test` sets it with `TEST_DATABASE_URL`; these tests fail,
//! saying so, when only the database is there).

use crate::db::TempDb;
use crate::{PgTest, block_on};

pub const TESTS: &[PgTest] = &[
    PgTest { name: "sqlite_fs_into_postgres_s3", run: sqlite_fs_into_postgres_s3 },
    PgTest { name: "postgres_s3_into_sqlite_fs", run: postgres_s3_into_sqlite_fs },
];

fn sqlite_fs_into_postgres_s3(url: &str) {
    block_on(async {
        let (db, sections) = postgres_s3(url).await;
        let root = tempfile::tempdir().unwrap();
        crate::process_copy::round_trip(root.path(), "", &sections).await;
        drop(db);
    });
}

fn postgres_s3_into_sqlite_fs(url: &str) {
    block_on(async {
        let (db, sections) = postgres_s3(url).await;
        let root = tempfile::tempdir().unwrap();
        crate::process_copy::round_trip(root.path(), &sections, "").await;
        drop(db);
    });
}

/// A fresh database and bucket, and the config sections that name them.
async fn postgres_s3(url: &str) -> (TempDb, String) {
    let Some(endpoint) = std::env::var("TEST_S3_ENDPOINT").ok().filter(|e| !e.is_empty()) else {
        panic!(
            "TEST_S3_ENDPOINT is not set: this test copies between SQLite + filesystem and PostgreSQL + S3 and \
             needs an S3-compatible server too (PyPI `moto[server]`); `scripts/test` starts moto_server and sets it"
        );
    };
    let db = TempDb::create(url).await;
    let bucket = format!("cairn-copy-{}", uuid::Uuid::new_v4().simple());
    let r = reqwest::Client::new().put(format!("{endpoint}/{bucket}")).send().await.unwrap();
    assert!(r.status().is_success(), "cannot create bucket {bucket} at {endpoint}: {}", r.status());
    let sections = format!(
        "[database]\nurl = {:?}\n\n[storage]\nkind = \"s3\"\nbucket = {bucket:?}\nregion = \"us-east-1\"\n\
         endpoint = {endpoint:?}\npath_style = true\naccess_key_id = \"cairn-test\"\n\
         secret_access_key = \"cairn-test-secret\"\n",
        db.url
    );
    (db, sections)
}
