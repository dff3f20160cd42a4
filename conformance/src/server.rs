//! The registry under test: an external URL (`CONFORMANCE_URL`) or a `cairn serve` child
//! process on an ephemeral port.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where the checks send their requests. Keeps a spawned server alive while held.
pub struct Registry {
    /// `http://HOST:PORT`, no trailing slash.
    pub base: String,
    /// `HOST:PORT`, the form clients use in image references.
    pub host: String,
    /// The spawned server, when no `CONFORMANCE_URL` was given.
    pub server: Option<Server>,
}

impl Registry {
    /// `CONFORMANCE_URL` if set, else a fresh `cairn` server.
    pub fn get() -> Registry {
        match std::env::var("CONFORMANCE_URL") {
            Ok(url) if !url.is_empty() => {
                let base = url.trim_end_matches('/').to_string();
                let host = base.split("://").nth(1).unwrap_or(&base).to_string();
                Registry { base, host, server: None }
            }
            _ => {
                let server = Server::start();
                Registry { base: server.base.clone(), host: server.host.clone(), server: Some(server) }
            }
        }
    }

    /// True when the registry under test is Cairn started by this process.
    pub fn is_cairn(&self) -> bool {
        self.server.is_some()
    }
}

/// Path of the `cairn` binary: `CAIRN_BIN`, else `cairn` in the same target profile
/// directory as the running test executable (`target/<profile>/deps/<test>`).
pub fn cairn_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CAIRN_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let bin = profile_dir.join("cairn");
    assert!(
        bin.exists(),
        "{} not found: build it first (`cargo build`), or run through `cargo test --workspace`",
        bin.display()
    );
    bin
}

/// A running `cairn serve` child process with its own data directory.
pub struct Server {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
    /// `127.0.0.1:PORT`
    pub host: String,
    data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// What must outlive the process (a database, a bucket): dropped after it is killed.
    keep: Vec<Box<dyn std::any::Any + Send>>,
}

impl Server {
    /// Starts a server on a fresh temporary data directory.
    pub fn start() -> Server {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut s = Server::start_in(&dir, &[], &[]);
        s._tmp = Some(tmp);
        s
    }

    /// Starts a server on `data_dir` (kept after the server stops) with extra arguments
    /// after `serve` and extra environment variables.
    pub fn start_in(data_dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(cairn_bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .env_remove("CAIRN_CONFIG")
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cairn");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(Ok(line)) = lines.next() {
                if let Some(url) = line.strip_prefix("cairn listening on ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let base =
            rx.recv_timeout(Duration::from_secs(60)).expect("cairn did not print its listening address within 60 s");
        let host = base.trim_start_matches("http://").trim_start_matches("https://").to_string();
        Server { child: Some(child), base, host, data_dir: data_dir.to_path_buf(), _tmp: None, keep: Vec::new() }
    }

    /// Keeps `resource` (such as the database the server was configured with) until the
    /// server has been killed.
    pub fn keep_alive(&mut self, resource: impl std::any::Any + Send) {
        self.keep.push(Box::new(resource));
    }

    /// The data directory the server keeps its SQLite file and blobs in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Kills the process with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits (up to 30 s) for a graceful exit.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return c.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The process id, for measurements.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
