//! The test runner of the real-client round trips (`harness = false`, built on libtest-mimic):
//! it decides before the run, from what this machine has and which registry is under test,
//! which tests are ignored, and says why, so that a test that cannot run here is counted as
//! ignored and never as passed. Cargo's usual interface stays: the `test result:` summary,
//! name filters, `--exact`, `--skip`, `--list`, `--ignored` (run only the ignored ones) and
//! `--include-ignored` (run everything), `--test-threads`, `--nocapture`.
//!
//! A test is ignored when
//! - a client it needs is missing here (a tool not on PATH, dockerd not answering, python3
//!   without oras-py): the reason names it and `scripts/test`, which installs and starts them.
//!   Under `CI=true` such a test is not ignored but fails with that reason: CI installs the
//!   clients, so a missing one is a broken CI, not a skip;
//! - it checks Cairn's own behaviour (immutable tags, users, robots) and `CONFORMANCE_URL`
//!   names another registry; run anyway (`--include-ignored`), it starts a Cairn of its own;
//! - it needs the referrers API and the registry at `CONFORMANCE_URL` has none.
//!
//! Every test fails, with the reason, when `TEST_BACKEND` asks for a backend this run cannot
//! give (`postgres-s3` without `TEST_DATABASE_URL` or `TEST_S3_ENDPOINT`): never a silent
//! fall-back to SQLite.
//!
//! Like the built-in harness, what a test prints through [`note`] (every client command it
//! ran, with its time and exit status) and the message it panics with are held back and shown
//! only when it fails (all shown live with `--nocapture`, kept and shown for passing tests
//! too with `--show-output`).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Display;
use std::process::Command;
use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

/// Something a client test needs from this machine or from the registry under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// The docker client and a dockerd that answers `docker info`.
    Dockerd,
    /// The podman command.
    Podman,
    /// The skopeo command.
    Skopeo,
    /// The umoci command (skopeo tests build their OCI layouts with it).
    Umoci,
    /// python3 able to import oras-py.
    Oras,
    /// The registry under test is Cairn: the test checks Cairn's own behaviour or config.
    Cairn,
    /// The registry under test has the referrers API (`GET /v2/<name>/referrers/<digest>`).
    ReferrersApi,
}

impl Need {
    /// True for what this machine must have installed or running (as opposed to what the
    /// registry under test must be or do).
    fn is_installable(self) -> bool {
        !matches!(self, Need::Cairn | Need::ReferrersApi)
    }
}

/// One client test: its name within its module, what it needs, and its body (which panics to
/// fail).
pub struct ClientTest {
    pub name: &'static str,
    pub needs: &'static [Need],
    pub run: fn(),
}

/// Writes `message` to the running test's held-back output (to stderr when nothing is held
/// back: `--nocapture`, or a thread the test spawned).
pub fn note(message: impl Display) {
    let line = format!("[clients] {message}");
    let held = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
        Some(buf) => {
            buf.push(line.clone());
            true
        }
        None => false,
    });
    if !held {
        eprintln!("{line}");
    }
}

thread_local! {
    /// The held-back output of the test running on this thread, if it is being held back.
    static CAPTURE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// True when `CI` says this is a CI run (`true` or `1`), where a missing client is a failure.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The registry under test when it is not a Cairn started by the tests.
pub fn external_registry() -> Option<String> {
    std::env::var("CONFORMANCE_URL").ok().filter(|u| !u.is_empty())
}

/// What this machine and the registry under test offer: for each [`Need`] that is not met,
/// why. Computed once, before any test runs.
struct Machine {
    unmet: BTreeMap<Need, String>,
}

impl Machine {
    fn survey(needed: &[Need]) -> Machine {
        let mut unmet = BTreeMap::new();
        let mut wanted: Vec<Need> = needed.to_vec();
        wanted.sort();
        wanted.dedup();
        for need in wanted {
            if let Err(why) = check(need) {
                unmet.insert(need, why);
            }
        }
        Machine { unmet }
    }

    /// Why the needs of a test that this machine cannot meet are unmet, one reason per need.
    fn missing(&self, needs: &[Need], installable: bool) -> Vec<&str> {
        needs
            .iter()
            .filter(|n| n.is_installable() == installable)
            .filter_map(|n| self.unmet.get(n).map(String::as_str))
            .collect()
    }
}

const HOW: &str = "`scripts/test` installs the clients and starts dockerd";

fn check(need: Need) -> Result<(), String> {
    match need {
        Need::Dockerd => {
            on_path("docker", "docker.io")?;
            let out = quick(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]))?;
            if out.0 && !out.1.trim().is_empty() {
                Ok(())
            } else {
                let said = out.2.lines().find(|l| !l.trim().is_empty()).unwrap_or("no answer").trim().to_string();
                Err(format!("dockerd does not answer `docker info` ({said}); {HOW}"))
            }
        }
        Need::Podman => on_path("podman", "podman"),
        Need::Skopeo => on_path("skopeo", "skopeo"),
        Need::Umoci => on_path("umoci", "umoci"),
        Need::Oras => {
            on_path("python3", "python3")?;
            let out = quick(Command::new("python3").args(["-c", "import oras.client, oras.oci"]))?;
            if out.0 { Ok(()) } else { Err(format!("python3 cannot import oras-py (`pip install oras`); {HOW}")) }
        }
        Need::Cairn => match external_registry() {
            Some(url) => Err(format!(
                "checks Cairn's own behaviour, and CONFORMANCE_URL={url} names another registry \
                 (with --include-ignored it runs against a Cairn it starts)"
            )),
            None => Ok(()),
        },
        Need::ReferrersApi => match external_registry() {
            Some(url) => referrers_api(&url),
            None => Ok(()),
        },
    }
}

/// `Ok` when `program` is an executable file on PATH; else names the Debian package.
fn on_path(program: &str, package: &str) -> Result<(), String> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| is_executable(&d.join(program))))
        .unwrap_or(false);
    if found {
        Ok(())
    } else {
        Err(format!("`{program}` is not installed (not on PATH; Debian package {package}); {HOW}"))
    }
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs a short check command with a time limit: `(succeeded, stdout, stderr)`.
fn quick(cmd: &mut Command) -> Result<(bool, String, String), String> {
    let what = crate::helpers::describe(cmd);
    let out = crate::helpers::try_run_quietly(cmd, Duration::from_secs(20)).map_err(|e| format!("`{what}`: {e}"))?;
    Ok((out.status.success(), out.stdout, out.stderr))
}

/// `Ok` when the registry at `url` answers a referrers request for an unknown subject with
/// 200 (the spec's empty index); a registry without the API answers 404.
fn referrers_api(url: &str) -> Result<(), String> {
    let probe = format!("{}/v2/clients/probe/referrers/sha256:{}", url.trim_end_matches('/'), "0".repeat(64));
    match crate::helpers::http().get(&probe).send() {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("needs the referrers API, and {url} answers GET {probe} with {}", resp.status())),
        Err(e) => {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            Err(format!("needs the referrers API, and GET {probe} failed: {why}"))
        }
    }
}

/// Runs `body` with its output held back (unless `live`); a panic becomes a failure whose
/// message is that output followed by the panic message.
fn run_held_back(body: fn(), live: bool, show_output: bool) -> Result<(), Failed> {
    if live {
        return std::panic::catch_unwind(body).map_err(|_| Failed::from("test panicked (message above)"));
    }
    CAPTURE.with(|c| *c.borrow_mut() = Some(Vec::new()));
    let result = std::panic::catch_unwind(body);
    let held = CAPTURE.with(|c| c.borrow_mut().take()).unwrap_or_default();
    match result {
        Ok(()) => {
            if show_output && !held.is_empty() {
                eprintln!("{}", held.join("\n"));
            }
            Ok(())
        }
        Err(_) => Err(Failed::from(held.join("\n"))),
    }
}

/// A panic hook that adds the panic message to the held-back output of the test that
/// panicked, and leaves every other panic to the default hook.
fn hold_back_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let held = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
            Some(buf) => {
                let payload = info
                    .payload()
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| info.payload().downcast_ref::<&str>().copied())
                    .unwrap_or("(a panic without a message)");
                let at = info.location().map(|l| format!(" at {l}")).unwrap_or_default();
                buf.push(format!("panicked{at}:\n{payload}"));
                true
            }
            None => false,
        });
        if !held {
            default(info);
        }
    }));
}

/// Source lines in this test target that declare a test the way the built-in harness wants:
/// with `harness = false` such a function is compiled out without a word, so it would never
/// run. Every test must be listed in its module's `TESTS` instead.
fn unregistered_test_attributes() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    // Spelt in pieces so that this file does not match itself.
    let markers = [concat!("#[", "test]"), concat!("#[", "tokio::test"), concat!("#[", "ignore")];
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        for (i, line) in text.lines().enumerate() {
            if markers.iter().any(|m| line.trim_start().starts_with(m)) {
                found.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
            }
        }
    }
    found
}

/// Runs the client tests of every module in `modules` (each its module name and `TESTS`) as
/// the command line asks, and exits with the run's status.
pub fn main(modules: &[(&str, &[ClientTest])]) -> ! {
    let mut args = Arguments::from_args();
    if args.test_threads.is_none() {
        args.test_threads = std::env::var("RUST_TEST_THREADS").ok().and_then(|v| v.parse().ok());
    }
    let live = args.nocapture || std::env::var_os("RUST_TEST_NOCAPTURE").is_some_and(|v| v != "0");
    let show_output = args.show_output;
    let forced = args.ignored || args.include_ignored;
    let ci = in_ci();
    hold_back_panics();

    let backend = crate::backend::Backend::from_env();
    match &backend {
        Ok(b) if !args.list && *b != crate::backend::Backend::SqliteFs => {
            eprintln!(
                "[clients] {}={}: every Cairn started here gets a database and a bucket of its own",
                crate::backend::BACKEND_VAR,
                b.name()
            )
        }
        _ => {}
    }
    let backend_problem = backend.err();

    let needed: Vec<Need> = modules.iter().flat_map(|(_, tests)| tests.iter().flat_map(|t| t.needs)).copied().collect();
    let machine = Machine::survey(&needed);

    let mut trials = Vec::new();
    // (test name, why it is ignored)
    let mut ignored: Vec<(String, String)> = Vec::new();
    for (module, tests) in modules {
        for test in tests.iter() {
            let name = format!("{module}::{}", test.name);
            let not_installed: Vec<String> = machine.missing(test.needs, true).into_iter().map(String::from).collect();
            let mut why: Vec<String> = machine.missing(test.needs, false).into_iter().map(String::from).collect();
            if !ci {
                why.extend(not_installed.iter().cloned());
            }
            let body = test.run;
            let backend_problem = backend_problem.clone();
            let runner = move || {
                if let Some(why) = backend_problem {
                    return Err(Failed::from(why));
                }
                if !not_installed.is_empty() {
                    let ci_note = if ci {
                        "\n(CI=true: a missing client is a failure, not a skip; `.ci/run` installs them through `scripts/test`)"
                    } else {
                        ""
                    };
                    return Err(Failed::from(format!("cannot run here: {}{ci_note}", not_installed.join("; "))));
                }
                run_held_back(body, live, show_output)
            };
            let trial = Trial::test(name.clone(), runner).with_ignored_flag(!why.is_empty());
            if !why.is_empty() && !args.is_filtered_out(&trial) {
                ignored.push((name, why.join("; ")));
            }
            trials.push(trial);
        }
    }
    let guard = Trial::test("harness::every_test_is_registered", || {
        let found = unregistered_test_attributes();
        if found.is_empty() {
            Ok(())
        } else {
            Err(Failed::from(format!(
                "these tests would never run (this target has `harness = false`); list them in \
                 their module's TESTS instead:\n{}",
                found.join("\n")
            )))
        }
    });
    trials.push(guard);
    trials.sort_by(|a, b| a.name().cmp(b.name()));

    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list && !forced && !ignored.is_empty() {
        let mut by_reason: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, why) in &ignored {
            by_reason.entry(why).or_default().push(name);
        }
        eprintln!("[clients] {} test(s) ignored, and why (`--include-ignored` runs them anyway):", ignored.len());
        for (why, mut names) in by_reason {
            names.sort();
            eprintln!("  {why}:\n    {}", names.join("\n    "));
        }
    }
    conclusion.exit()
}
