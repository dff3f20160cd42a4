//! A 201 is a promise (issue 8): when a blob PUT answers 201, the segment file holding its
//! bytes has been fsynced, then its directory (so the file's name survives a power loss
//! too), and only then was the commit written to the database's WAL and fsynced
//! (`synchronous = FULL`). A manifest PUT's 201 likewise follows an fsync of the WAL.
//! The real binary runs under a small `LD_PRELOAD` library (built here with `cc`) that
//! logs every `fsync`/`fdatasync` with the path of its file descriptor, in order.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::*;

const REPO: &str = "durable/app";

const SHIM: &str = r#"
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int log_fd = -1;

__attribute__((constructor)) static void open_log(void) {
    const char *p = getenv("SYNC_LOG");
    if (p) log_fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void note(const char *call, int fd) {
    if (log_fd < 0) return;
    char link[64], path[4096], line[4200];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, sizeof path - 1);
    path[n < 0 ? 0 : n] = 0;
    int len = snprintf(line, sizeof line, "%s %s\n", call, path);
    if (write(log_fd, line, len) < 0) {}
}

int fsync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    int r = real(fd);
    if (r == 0) note("fsync", fd);
    return r;
}

int fdatasync(int fd) {
    static int (*real)(int);
    if (!real) real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    int r = real(fd);
    if (r == 0) note("fdatasync", fd);
    return r;
}
"#;

/// Builds the shim into `dir`; returns the `.so`.
fn build_shim(dir: &Path) -> PathBuf {
    let src = dir.join("syncshim.c");
    let lib = dir.join("syncshim.so");
    std::fs::write(&src, SHIM).unwrap();
    let out = Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-o"])
        .arg(&lib)
        .arg(&src)
        .arg("-ldl")
        .output()
        .expect("run cc (a C compiler is needed to build the fsync-logging shim)");
    assert!(out.status.success(), "cc failed: {}", String::from_utf8_lossy(&out.stderr));
    lib
}

/// The synced paths logged after the first `skip` lines.
fn synced_since(log: &Path, skip: usize) -> Vec<String> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().skip(skip).filter_map(|l| l.split_once(' ').map(|(_, p)| p.to_string())).collect()
}

fn position(synced: &[String], what: &str, pred: impl Fn(&str) -> bool) -> usize {
    synced.iter().position(|p| pred(p)).unwrap_or_else(|| panic!("no fsync of {what}; synced: {synced:#?}"))
}

#[tokio::test]
async fn a_201_follows_the_fsync_of_the_bytes_their_directory_and_the_commit() {
    let (root, data) = workdir();
    let lib = build_shim(root.path());
    let log = root.path().join("syncs.log");
    let log_s = log.display().to_string();
    let lib_s = lib.display().to_string();
    let srv = Server::start_with(&data, None, &[("LD_PRELOAD", &lib_s), ("SYNC_LOG", &log_s)]).await;
    let http = client();
    let wal = std::fs::canonicalize(&data).unwrap().join("cairn.db-wal").display().to_string();

    let bytes = random_bytes(300 << 10);
    let digest = sha256(&bytes);
    let location = start_upload(&http, &srv, REPO).await;
    let id = upload_id(&location);
    let before = synced_since(&log, 0).len();
    finish_upload(&http, &srv, REPO, &location, &digest, &bytes).await;
    let synced = synced_since(&log, before);

    let dir = std::fs::canonicalize(srv.upload_dir(&id)).unwrap();
    let files = files_under(&dir);
    assert_eq!(files.len(), 1, "one segment file: {files:?}");
    let segment = files[0].display().to_string();
    // The file is synced under its temporary name (`<segment>#<n>`), before it is renamed.
    let file_at = position(&synced, "the segment file", |p| {
        p.strip_prefix(segment.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('#'))
    });
    let dir_s = dir.display().to_string();
    let dir_at = position(&synced[file_at..], "the segment's directory", |p| p == dir_s) + file_at;
    // The upload's directory was made for this segment: its own entry, in `uploads/`, is
    // durable before the commit too.
    let parent_s = dir.parent().unwrap().display().to_string();
    let parent_at = position(&synced[file_at..], "the directory holding the new upload directory", |p| p == parent_s);
    position(&synced[dir_at.max(parent_at + file_at)..], "the WAL after the segment (the commit)", |p| p == wal);

    // A later segment of a session fsyncs `uploads/` too, though its directory already
    // existed: the write that made it may have been cut off before it fsynced anything.
    let more = random_bytes(100 << 10);
    let location = start_upload(&http, &srv, REPO).await;
    let location = patch_chunk(&http, &srv, &location, 0, &more[..50 << 10]).await;
    let before = synced_since(&log, 0).len();
    finish_upload(&http, &srv, REPO, &location, &sha256(&more), &more[50 << 10..]).await;
    let synced = synced_since(&log, before);
    let file_at = position(&synced, "the second segment's file", |p| p.contains("/uploads/") && p.contains('#'));
    let parent_at = position(&synced[file_at..], "uploads/ after the second segment", |p| p == parent_s) + file_at;
    position(&synced[parent_at..], "the WAL after it (the commit)", |p| p == wal);

    // A manifest's 201 follows a WAL fsync too.
    let config = br#"{"architecture":"amd64","os":"linux"}"#;
    let cfg = push_blob(&http, &srv, REPO, config).await;
    let manifest = image_manifest((&cfg, config.len()), &[(&digest, bytes.len())]);
    let before = synced_since(&log, 0).len();
    put_manifest(&http, &srv, REPO, "v1", &manifest).await;
    position(&synced_since(&log, before), "the WAL for the manifest's commit", |p| p == wal);
}
