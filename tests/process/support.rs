//! Shared helpers for the process-level tests: `Server` runs the real `cairn` binary on
//! an ephemeral port over a data directory that outlives it (so a test can SIGKILL or
//! SIGTERM it and start another process on the same data), plus OCI client verbs,
//! slow ("stalled") request bodies and looks at the blob directory on disk.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::channel::mpsc;
use rand::RngCore;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// How long a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(30);

static LAUNCHES: AtomicUsize = AtomicUsize::new(0);

/// A fresh temp root and `<root>/data` inside it (server logs go next to `data`).
pub fn workdir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::tempdir().expect("tempdir");
    let data = root.path().join("data");
    (root, data)
}

/// A `cairn` command with no inherited `CAIRN_*` variables and quiet logs.
pub fn cairn() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CAIRN_") {
            c.env_remove(&k);
        }
    }
    c.env("RUST_LOG", "warn").stdin(Stdio::null());
    c
}

/// One running `cairn serve` process.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` (`https://` when the config serves TLS)
    pub base: String,
    /// The bound address.
    pub addr: SocketAddr,
    /// The data directory (not owned: it survives the process).
    pub data_dir: PathBuf,
    /// Where this process's stderr goes.
    pub log: PathBuf,
}

impl Server {
    /// `cairn serve --listen 127.0.0.1:0 --data-dir DIR`.
    pub async fn start(data_dir: &Path) -> Server {
        Server::start_with(data_dir, None, &[]).await
    }

    /// Same, with a config file and extra environment variables.
    pub async fn start_with(data_dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Server {
        Server::start_prepared(data_dir, config, env, |_| {}).await
    }

    /// Same, with `prepare` applied to the command last (for example resource limits).
    pub async fn start_prepared(
        data_dir: &Path,
        config: Option<&Path>,
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Server {
        let n = LAUNCHES.fetch_add(1, Ordering::Relaxed);
        let log = data_dir.parent().unwrap_or(data_dir).join(format!("cairn-{}-{n}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("create server log");
        let mut cmd = cairn();
        cmd.arg("serve").args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        prepare(&mut cmd);
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::from(log_file)).spawn().expect("spawn cairn serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
        // Reads the address line, then keeps draining stdout so the server never gets EPIPE.
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if let Some(url) = line.trim().strip_prefix("cairn listening on ") {
                            let _ = tx.send(Some(url.to_string()));
                        }
                    }
                }
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            match rx.try_recv() {
                Ok(Some(a)) => break a,
                Ok(None) | Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    let status = child.wait().ok();
                    panic!(
                        "cairn serve exited before listening ({status:?}); stderr:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        let _ = child.wait();
                        panic!(
                            "cairn serve did not print its address within {START_TIMEOUT:?}; stderr:\n{}",
                            std::fs::read_to_string(&log).unwrap_or_default()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let url = addr;
        let (scheme, addr) = url.split_once("://").expect("`cairn listening on SCHEME://ADDR`");
        let addr: SocketAddr = addr.parse().expect("address line");
        Server { child, base: format!("{scheme}://{addr}"), addr, data_dir: data_dir.to_path_buf(), log }
    }

    /// An absolute URL for a path such as `/v2/` or a `Location` header.
    pub fn url(&self, path: &str) -> String {
        assert!(path.starts_with('/'), "expected a relative Location, got {path}");
        format!("{}{path}", self.base)
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful shutdown); does not wait.
    pub fn terminate(&self) {
        let ok = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status().expect("run kill").success();
        assert!(ok, "kill -TERM {} failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_status() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// What the process logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `<data_dir>/blobs/uploads/<id>`.
    pub fn upload_dir(&self, id: &str) -> PathBuf {
        self.data_dir.join("blobs").join("uploads").join(id)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A client that ignores proxy settings and never follows redirects.
pub fn client() -> Client {
    Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// A header as a string ("" when absent).
pub fn header(r: &Response, name: &str) -> String {
    r.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string()
}

/// Appends `?digest=` (or `&digest=`) to a Location.
pub fn with_digest(location: &str, digest: &str) -> String {
    let sep = if location.contains('?') { '&' } else { '?' };
    format!("{location}{sep}digest={digest}")
}

/// Asserts an OCI error response: status and that `code` is among the error codes.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) {
    let got = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(got, status, "body: {body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {body:?}"));
    let codes: Vec<&str> =
        v["errors"].as_array().map(|a| a.iter().filter_map(|e| e["code"].as_str()).collect()).unwrap_or_default();
    assert!(codes.contains(&code), "expected {code} in {body}");
}

/// POST an upload session; returns its relative Location.
pub async fn start_upload(http: &Client, srv: &Server, repo: &str) -> String {
    let r = http.post(srv.url(&format!("/v2/{repo}/blobs/uploads/"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "POST upload");
    let loc = header(&r, "location");
    assert!(loc.starts_with(&format!("/v2/{repo}/blobs/uploads/")), "{loc}");
    loc
}

/// The upload id at the end of a Location.
pub fn upload_id(location: &str) -> String {
    location.split('?').next().unwrap().rsplit('/').next().unwrap().to_string()
}

/// PATCH one chunk with `Content-Range` starting at `start`; returns the next Location.
pub async fn patch_chunk(http: &Client, srv: &Server, location: &str, start: u64, chunk: &[u8]) -> String {
    let end = start + chunk.len() as u64 - 1;
    let r = http
        .patch(srv.url(location))
        .header("content-type", "application/octet-stream")
        .header("content-range", format!("{start}-{end}"))
        .body(chunk.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED, "PATCH {start}-{end}");
    assert_eq!(header(&r, "range"), format!("0-{end}"));
    header(&r, "location")
}

/// `GET` upload status: asserts 204 and returns the `Range` header.
pub async fn upload_range(http: &Client, srv: &Server, location: &str) -> String {
    let r = http.get(srv.url(location)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "upload status {location}");
    header(&r, "range")
}

/// PUT `?digest=` with an optional last chunk; asserts 201 and the blob's Location.
pub async fn finish_upload(http: &Client, srv: &Server, repo: &str, location: &str, digest: &str, last: &[u8]) {
    let r = http
        .put(srv.url(&with_digest(location, digest)))
        .header("content-type", "application/octet-stream")
        .body(last.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let loc = header(&r, "location");
    let got_digest = header(&r, "docker-content-digest");
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
    assert_eq!(loc, format!("/v2/{repo}/blobs/{digest}"));
    assert_eq!(got_digest, digest);
}

/// Pushes a blob in one POST+PUT; returns its digest.
pub async fn push_blob(http: &Client, srv: &Server, repo: &str, bytes: &[u8]) -> String {
    let d = sha256(bytes);
    let loc = start_upload(http, srv, repo).await;
    finish_upload(http, srv, repo, &loc, &d, bytes).await;
    d
}

/// Pushes a blob in PATCH chunks of `chunk` bytes and an empty PUT; returns its digest.
pub async fn push_blob_chunked(http: &Client, srv: &Server, repo: &str, bytes: &[u8], chunk: usize) -> String {
    let d = sha256(bytes);
    let mut loc = start_upload(http, srv, repo).await;
    let mut start = 0;
    for c in bytes.chunks(chunk) {
        loc = patch_chunk(http, srv, &loc, start as u64, c).await;
        start += c.len();
    }
    finish_upload(http, srv, repo, &loc, &d, &[]).await;
    d
}

/// GETs a blob, asserting 200 and the exact bytes.
pub async fn assert_blob(http: &Client, srv: &Server, repo: &str, digest: &str, want: &[u8]) {
    let r = http.get(srv.url(&format!("/v2/{repo}/blobs/{digest}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET blob {repo}@{digest}");
    assert_eq!(header(&r, "docker-content-digest"), digest);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), want.len(), "blob {digest} length");
    assert_eq!(sha256(&body), digest, "blob {digest} content");
    assert!(body[..] == want[..], "blob {digest} bytes differ");
}

/// Asserts a blob is not visible: HEAD 404 and GET 404 BLOB_UNKNOWN.
pub async fn assert_no_blob(http: &Client, srv: &Server, repo: &str, digest: &str) {
    let url = srv.url(&format!("/v2/{repo}/blobs/{digest}"));
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {repo}@{digest}");
    let r = http.get(&url).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
}

/// An OCI image manifest over a config and layers (digest, bytes).
pub fn image_manifest(config: (&str, usize), layers: &[(&str, usize)]) -> Vec<u8> {
    let layers: Vec<Value> =
        layers.iter().map(|(d, n)| json!({"mediaType": OCI_LAYER, "digest": d, "size": n})).collect();
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config.0, "size": config.1},
        "layers": layers,
    }))
    .unwrap()
}

/// PUTs a manifest under `reference` (tag or digest); asserts 201 and returns its digest.
pub async fn put_manifest(http: &Client, srv: &Server, repo: &str, reference: &str, body: &[u8]) -> String {
    let r = http
        .put(srv.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = r.status();
    let d = header(&r, "docker-content-digest");
    assert_eq!(status, StatusCode::CREATED, "{}", r.text().await.unwrap());
    assert_eq!(d, sha256(body));
    d
}

/// One small image pushed under `tag` of `repo`: (manifest body, (digest, bytes) of its blobs).
pub async fn push_small_image(http: &Client, srv: &Server, repo: &str, tag: &str) -> (Vec<u8>, Vec<(String, Vec<u8>)>) {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","tag":"{tag}"}}"#).into_bytes();
    let layer = random_bytes(4000);
    let c = push_blob(http, srv, repo, &config).await;
    let l = push_blob(http, srv, repo, &layer).await;
    let m = image_manifest((&c, config.len()), &[(&l, layer.len())]);
    put_manifest(http, srv, repo, tag, &m).await;
    (m, vec![(c, config), (l, layer)])
}

/// GETs a manifest by tag or digest, asserting 200 and the exact bytes.
pub async fn assert_manifest(http: &Client, srv: &Server, repo: &str, reference: &str, want: &[u8]) {
    let r = http
        .get(srv.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET manifest {repo}:{reference}");
    assert_eq!(header(&r, "docker-content-digest"), sha256(want));
    let body = r.bytes().await.unwrap();
    assert!(body[..] == want[..], "manifest {repo}:{reference} bytes differ");
}

/// The JSON of `tags/list`.
pub async fn tags(http: &Client, srv: &Server, repo: &str) -> Value {
    let r = http.get(srv.url(&format!("/v2/{repo}/tags/list"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "tags/list {repo}");
    r.json().await.unwrap()
}

/// A request whose body is fed through a channel: it sends whatever is pushed and never
/// ends until `finish` (or the sender is dropped, which also ends the body).
pub struct Stalled {
    tx: Option<mpsc::UnboundedSender<Result<Bytes, std::io::Error>>>,
    pub task: tokio::task::JoinHandle<reqwest::Result<Response>>,
}

impl Stalled {
    /// Starts `req` with a streaming body and sends `first` as its first bytes.
    pub fn start(req: reqwest::RequestBuilder, first: &[u8]) -> Stalled {
        let (tx, rx) = mpsc::unbounded::<Result<Bytes, std::io::Error>>();
        let mut s = Stalled { tx: Some(tx), task: tokio::spawn(req.body(reqwest::Body::wrap_stream(rx)).send()) };
        if !first.is_empty() {
            s.send(first);
        }
        s
    }

    /// Sends more body bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        // The receiver is gone once the request failed; the caller checks the outcome.
        let _ = self.tx.as_ref().expect("body already finished").unbounded_send(Ok(Bytes::copy_from_slice(bytes)));
    }

    /// Ends the body and waits for the response.
    pub async fn finish(mut self, timeout: Duration) -> reqwest::Result<Response> {
        self.tx = None;
        tokio::time::timeout(timeout, &mut self.task)
            .await
            .expect("response did not arrive in time")
            .expect("request task panicked")
    }

    /// Waits for the request to fail (the server died under it); panics if it succeeded.
    pub async fn expect_failure(mut self, timeout: Duration) {
        let out = tokio::time::timeout(timeout, &mut self.task)
            .await
            .expect("request neither failed nor finished after the kill")
            .expect("request task panicked");
        if let Ok(r) = out {
            panic!("an upload meant to be in flight got a response: {} {:?}", r.status(), r.headers());
        }
    }
}

/// Regular files under `dir`, recursively (empty when `dir` does not exist).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Files under `dir` that an object store is still writing (`<key>#<n>`), with their sizes.
pub fn staging_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains('#')))
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
        .collect()
}

/// Polls `cond` every 20 ms for up to `timeout`; true once it holds.
pub async fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Headers for a chunk PATCH.
pub fn chunk_headers(start: u64, len: u64) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/octet-stream"));
    h.insert("content-range", HeaderValue::from_str(&format!("{start}-{}", start + len - 1)).unwrap());
    h
}

/// Bytes a process printed, as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs a shell command line with a pseudo-terminal as stdout and stderr (util-linux
/// `script`), without the caller's `CAIRN_*` variables, asserting it succeeds; returns what
/// it printed.
pub fn on_a_terminal(command: &str) -> String {
    let mut c = std::process::Command::new("script");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CAIRN_") {
            c.env_remove(&k);
        }
    }
    let out = c
        .args(["-qec", command, "/dev/null"])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("script(1) (Debian package bsdutils) could not be run: {e}"));
    assert!(out.status.success(), "{command}: {}{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}
