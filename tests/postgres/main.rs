//! Cairn on PostgreSQL: the `MetadataStore` contract suite, races between two stores on one
//! database (two nodes), and in-process servers on PostgreSQL pushing, pulling and racing.
//!
//! Needs a PostgreSQL server: `TEST_DATABASE_URL` names a database on it whose user may
//! `CREATE DATABASE` (`scripts/test` starts a throwaway cluster and sets it). Every test
//! gets a database of its own. Its own runner (`harness = false`, libtest-mimic): without
//! `TEST_DATABASE_URL` every test is reported as ignored, with the reason, never as passed;
//! under `CI=true` they fail instead. The backup tests need an S3-compatible server too
//! (`TEST_S3_ENDPOINT`): without it they are ignored (failed under `CI=true`) the same way.

mod backup;
mod copy;
mod db;
mod server;
mod store;

// The real binary's copy scenario, shared with tests/process (see copy.rs).
#[path = "../process/copy.rs"]
mod process_copy;
#[path = "../process/support.rs"]
mod support;

use libtest_mimic::{Arguments, Failed, Trial};

/// One test: its name and its body (which panics to fail).
pub struct PgTest {
    pub name: &'static str,
    pub run: fn(&str),
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Source lines here that declare a test for the built-in harness, which `harness = false`
/// would compile out without a word.
fn unregistered_test_attributes() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/postgres");
    let markers = [concat!("#[", "test]"), concat!("#[", "tokio::test"), concat!("#[", "ignore")];
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let file = entry.unwrap().path();
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, line) in text.lines().enumerate() {
            if markers.iter().any(|m| line.trim_start().starts_with(m)) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

fn main() {
    let args = Arguments::from_args();
    let url = std::env::var("TEST_DATABASE_URL").ok().filter(|u| !u.is_empty());
    let why = "TEST_DATABASE_URL is not set: these tests need a PostgreSQL server (Debian package \
               `postgresql`); `scripts/test` starts a throwaway cluster and sets it";
    let s3 = std::env::var("TEST_S3_ENDPOINT").is_ok_and(|e| !e.is_empty());
    let why_s3 = "TEST_S3_ENDPOINT is not set: these tests need an S3-compatible server too (PyPI \
                  `moto[server]`); `scripts/test` starts moto_server and sets it";
    let ci = in_ci();
    let mut trials = Vec::new();
    // (module, its tests, whether they need TEST_S3_ENDPOINT as well)
    let modules = [
        ("store", store::TESTS, false),
        ("server", server::TESTS, false),
        ("copy", copy::TESTS, false),
        ("backup", backup::TESTS, true),
    ];
    for (module, tests, needs_s3) in modules {
        for t in tests {
            let name = format!("{module}::{}", t.name);
            let run = t.run;
            // The database URL, or why the test cannot run here and what is missing.
            let given = match (&url, needs_s3 && !s3) {
                (None, _) => Err((why, "PostgreSQL")),
                (Some(_), true) => Err((why_s3, "S3 server")),
                (Some(url), false) => Ok(url.clone()),
            };
            let ignored = given.is_err() && !ci;
            let trial = Trial::test(name, move || match &given {
                Ok(url) => std::panic::catch_unwind(|| run(url)).map_err(|_| Failed::from("panicked (message above)")),
                Err((why, what)) => {
                    Err(Failed::from(format!("cannot run here: {why} (CI=true: a missing {what} is a failure)")))
                }
            });
            trials.push(trial.with_ignored_flag(ignored));
        }
    }
    trials.push(Trial::test("harness::every_test_is_registered", || {
        let found = unregistered_test_attributes();
        if found.is_empty() {
            Ok(())
        } else {
            Err(Failed::from(format!("list these in their module's TESTS instead:\n{}", found.join("\n"))))
        }
    }));
    if url.is_none() && !ci && !args.list {
        eprintln!("[postgres] tests ignored: {why}");
    } else if !s3 && !ci && !args.list {
        eprintln!("[postgres] backup tests ignored: {why_s3}");
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Runs `f` on a fresh multi-threaded runtime (each test its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap().block_on(f)
}
