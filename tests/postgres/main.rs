//! Cairn on PostgreSQL: the `MetadataStore` contract suite, races between two stores on one
//! database (two nodes), and in-process servers on PostgreSQL pushing, pulling and racing.
//!
//! Needs a PostgreSQL server: `TEST_DATABASE_URL` names a database on it whose user may
//! `CREATE DATABASE` (`scripts/test` starts a throwaway cluster and sets it). Every test
//! gets a database of its own. Its own runner (`harness = false`, libtest-mimic): without
//! `TEST_DATABASE_URL` every test is reported as ignored, with the reason, never as passed;
//! under `CI=true` they fail instead.

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
    let ci = in_ci();
    let mut trials = Vec::new();
    for (module, tests) in [("store", store::TESTS), ("server", server::TESTS), ("copy", copy::TESTS)] {
        for t in tests {
            let name = format!("{module}::{}", t.name);
            let run = t.run;
            let given = url.clone();
            let trial = Trial::test(name, move || match &given {
                Some(url) => {
                    std::panic::catch_unwind(|| run(url)).map_err(|_| Failed::from("panicked (message above)"))
                }
                None => {
                    Err(Failed::from(format!("cannot run here: {why} (CI=true: a missing PostgreSQL is a failure)")))
                }
            });
            trials.push(trial.with_ignored_flag(url.is_none() && !ci));
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
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Runs `f` on a fresh multi-threaded runtime (each test its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap().block_on(f)
}
