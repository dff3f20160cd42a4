//! Helpers for the fault tests (disk full, read-only and damaged databases), most of which
//! need root: a small tmpfs to fill up or remount read-only, filling a filesystem to the
//! last byte, running the binary as another user, running a `cairn` command that is
//! expected to exit on its own, and polling `/readyz`.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};

use crate::support::Server;

/// The uid and gid of `nobody` on Debian.
pub const NOBODY: u32 = 65534;

/// Fails the test unless it runs as root (CI does). `why` says what needs root.
pub fn require_root(why: &str) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("Uid line in /proc/self/status");
    assert_eq!(euid, "0", "this test needs root ({why}); CI runs the suite as root, run it as root too");
}

/// A tmpfs of a fixed size mounted on a fresh directory; unmounted when dropped.
pub struct Tmpfs {
    /// Where it is mounted.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `8m`).
    pub fn mount(size: &str) -> Tmpfs {
        require_root("it mounts a tmpfs");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        run_ok(
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), "tmpfs"]).arg(&path),
        );
        Tmpfs { path, _dir: dir }
    }

    /// `mount -o remount,ro` or `rw`.
    pub fn remount(&self, read_only: bool) {
        let opt = if read_only { "remount,ro" } else { "remount,rw" };
        run_ok(Command::new("mount").args(["-o", opt]).arg(&self.path));
    }

    /// Free bytes on it.
    pub fn free(&self) -> u64 {
        let out = Command::new("df").args(["-B1", "--output=avail"]).arg(&self.path).output().expect("run df");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().nth(1).and_then(|l| l.trim().parse().ok()).unwrap_or_else(|| panic!("df output: {text}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// Writes zeros to `file` until the filesystem is full; returns the bytes written.
/// Panics unless the write stopped on "no space left on device".
pub fn fill(file: &Path) -> u64 {
    let mut f = std::fs::File::create(file).expect("create filler");
    let block = vec![0u8; 64 << 10];
    let mut n = 0u64;
    loop {
        match f.write(&block) {
            Ok(0) => panic!("write returned 0 before the disk was full"),
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return n,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
}

/// What a `cairn` command that exited printed.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed) and waits up to `timeout` for it to exit; panics, killing it,
/// if it is still running then (a server that should have refused to start).
pub fn run_to_exit(cmd: &mut Command, timeout: Duration) -> Exited {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).expect("stdout file"))
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn cairn");
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} was still running after {timeout:?} (it should have refused to start); stdout:\n{}\nstderr:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exited {
        status,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    }
}

/// A copy of the `cairn` binary that any user can run (the build directory may be closed
/// to other users), in a directory that lives as long as the returned guard.
pub fn world_runnable_binary() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
    let bin = dir.path().join("cairn");
    std::fs::copy(crate::support::BIN, &bin).expect("copy the cairn binary");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod binary");
    (dir, bin)
}

/// `chown -R uid:gid path`.
pub fn chown_tree(path: &Path, id: u32) {
    run_ok(Command::new("chown").arg("-R").arg(format!("{id}:{id}")).arg(path));
}

/// `/readyz` status and body.
pub async fn readyz(http: &Client, srv: &Server) -> (StatusCode, String) {
    let r = http.get(srv.url("/readyz")).send().await.expect("GET /readyz");
    (r.status(), r.text().await.unwrap_or_default())
}

/// Polls `/readyz` for up to 10 s until it answers `want`; returns the last answer.
pub async fn wait_readyz(http: &Client, srv: &Server, want: StatusCode) -> (StatusCode, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = readyz(http, srv).await;
        if got.0 == want || Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
