//! Cairn on S3: the `BlobStore` contract suite and an in-process server storing its blobs in a
//! bucket (pushes, pulls, one object per blob, a cancelled upload, GC), pulls redirected to
//! presigned URLs (`redirect.rs`) and real clients following them (`clients.rs`), against a
//! real S3-compatible server.
//!
//! Needs one: `TEST_S3_ENDPOINT` is its URL (`scripts/test` starts `moto_server` and sets it;
//! any credentials and region are accepted there). Every test makes a bucket of its own. Its
//! own runner (`harness = false`, libtest-mimic): without `TEST_S3_ENDPOINT` every test is
//! reported as ignored, with the reason, never as passed; under `CI=true` they fail instead.

mod bucket;
mod clients;
mod redirect;
mod server;
mod store;

use libtest_mimic::{Arguments, Failed, Trial};

/// One test: its name and its body (which panics to fail), given the endpoint.
pub struct S3Test {
    pub name: &'static str,
    pub run: fn(&str),
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Source lines here that declare a test for the built-in harness, which `harness = false`
/// would compile out without a word.
fn unregistered_test_attributes() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/s3");
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
    let endpoint = std::env::var("TEST_S3_ENDPOINT").ok().filter(|u| !u.is_empty());
    let why = "TEST_S3_ENDPOINT is not set: these tests need an S3-compatible server (PyPI \
               `moto[server]`); `scripts/test` starts moto_server and sets it";
    let ci = in_ci();
    let mut trials = Vec::new();
    let modules = [
        ("store", store::TESTS),
        ("server", server::TESTS),
        ("redirect", redirect::TESTS),
        ("clients", clients::TESTS),
    ];
    for (module, tests) in modules {
        for t in tests {
            let name = format!("{module}::{}", t.name);
            let run = t.run;
            let given = endpoint.clone();
            let trial = Trial::test(name, move || match &given {
                Some(e) => std::panic::catch_unwind(|| run(e)).map_err(|_| Failed::from("panicked (message above)")),
                None => {
                    Err(Failed::from(format!("cannot run here: {why} (CI=true: a missing S3 server is a failure)")))
                }
            });
            trials.push(trial.with_ignored_flag(endpoint.is_none() && !ci));
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
    if endpoint.is_none() && !ci && !args.list {
        eprintln!("[s3] tests ignored: {why}");
    }
    libtest_mimic::run(&args, trials).exit()
}

/// Runs `f` on a fresh multi-threaded runtime (each test its own).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap().block_on(f)
}
