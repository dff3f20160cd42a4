//! Two `cairn serve` processes (the real binary) on one PostgreSQL database and one S3 bucket
//! behave as one registry (issue 11, DESIGN §2 "Several nodes"): a chunked upload started on
//! one node finishes on the other; 32 concurrent PUTs of different manifests to one new
//! immutable tag, spread over both nodes, leave exactly one winner and one history event; a
//! mutable tag moved on one node is seen by HEAD on the other within a second (the change
//! feed; the cache's own expiry is a second too, so the test also checks the typical delay);
//! a token one node issued is accepted by the other.
//!
//! Needs `TEST_DATABASE_URL` (a PostgreSQL user who may CREATE DATABASE) and
//! `TEST_S3_ENDPOINT` (an S3-compatible server accepting any credentials, such as moto);
//! `scripts/test` starts both and sets them. Its own runner (libtest-mimic): without them the
//! tests are reported as ignored with the reason, and fail under `CI=true`.

#[path = "../s3/bucket.rs"]
#[allow(dead_code)]
mod bucket;
#[path = "../process/support.rs"]
mod support;

mod two_nodes;

use libtest_mimic::{Arguments, Failed, Trial};

/// One test: its name and its body (which panics to fail), given the database URL and the
/// S3 endpoint.
pub struct NodesTest {
    pub name: &'static str,
    pub run: fn(&str, &str),
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

fn main() {
    let args = Arguments::from_args();
    let var = |k: &str| std::env::var(k).ok().filter(|u| !u.is_empty());
    let (db, s3) = (var("TEST_DATABASE_URL"), var("TEST_S3_ENDPOINT"));
    let why = "TEST_DATABASE_URL and TEST_S3_ENDPOINT must both be set: these tests need a PostgreSQL \
               server (Debian package `postgresql`) and an S3-compatible server (PyPI `moto[server]`); \
               `scripts/test` starts both and sets them";
    let ci = in_ci();
    let given = db.clone().zip(s3.clone());
    let mut trials = Vec::new();
    for t in two_nodes::TESTS {
        let run = t.run;
        let here = given.clone();
        let trial = Trial::test(format!("two_nodes::{}", t.name), move || match &here {
            Some((db, s3)) => {
                std::panic::catch_unwind(|| run(db, s3)).map_err(|_| Failed::from("panicked (message above)"))
            }
            None => Err(Failed::from(format!("cannot run here: {why} (CI=true: a missing server is a failure)"))),
        });
        trials.push(trial.with_ignored_flag(given.is_none() && !ci));
    }
    if given.is_none() && !ci && !args.list {
        eprintln!("[nodes] tests ignored: {why}");
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Runs `f` on a fresh multi-threaded runtime (each test its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap().block_on(f)
}
