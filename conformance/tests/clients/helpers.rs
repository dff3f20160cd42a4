//! Shared plumbing for the real-client round trips: running a client with a time limit and
//! both of its output streams (noting each command for the test's output), unique repository
//! names, random file content, and reading back what the registry holds over plain HTTP so
//! that every blob can be hashed against its digest. Whether a client is installed at all is
//! the harness's business (`harness.rs`), decided before a test starts.
//!
//! Every Cairn started here runs on the backend `TEST_BACKEND` names (tests/common/backend.rs
//! at the workspace's top): SQLite + filesystem in its data directory by default; with
//! `postgres-s3`, a fresh database on `TEST_DATABASE_URL` and a fresh bucket on
//! `TEST_S3_ENDPOINT` each, given as `CAIRN_*` variables, or appended to the config file of a
//! [`ConfiguredCairn`] (so that the `cairn` commands run with that file use them too).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cairn_conformance::Registry;
use rand::Rng;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::backend::{Backend, PgS3};
use crate::harness::{external_registry, note};

/// Every manifest media type the real clients push.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// What a finished command left behind.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }
}

/// A readable rendering of a command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` (stdin closed) for at most `timeout`, capturing stdout and stderr. Panics if it
/// cannot start or runs out of time; otherwise returns whatever the exit status was.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Output {
    try_run_with_input(cmd, None, timeout)
}

/// Like [`try_run`], with `input` written to the command's stdin (then closed) when given:
/// for `--password-stdin`. Notes the command, its time and its exit status.
pub fn try_run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let what = describe(cmd);
    let started = Instant::now();
    let out = execute(cmd, input, timeout).unwrap_or_else(|e| panic!("{e}"));
    note(format!("{:>6.2}s  {what}  -> {}", started.elapsed().as_secs_f64(), out.status));
    out
}

/// Like [`try_run`], but notes nothing, and says why instead of panicking when the command
/// cannot start or finish: for the harness's checks of what this machine has.
pub fn try_run_quietly(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    execute(cmd, None, timeout)
}

fn execute(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Result<Output, String> {
    let what = describe(cmd);
    let started = Instant::now();
    let stdin = if input.is_some() { Stdio::piped() } else { Stdio::null() };
    let mut child = match cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!(
                "cannot run `{what}`: {e}. `scripts/test` installs the real clients and starts dockerd."
            ));
        }
        Err(e) => return Err(format!("cannot run `{what}`: {e}")),
    };
    let writer = input.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin pipe");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            use std::io::Write;
            // A command that exits without reading its input is not an error here.
            let _ = pipe.write_all(&bytes);
        })
    });
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let deadline = started + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for `{what}`: {e}")),
        }
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    let stdout = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
    let Some(status) = status else {
        return Err(format!(
            "`{what}` did not finish within {timeout:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
            tail(&stdout),
            tail(&stderr)
        ));
    };
    Ok(Output { status, stdout, stderr })
}

/// Like [`try_run`], and panics with both output streams unless the command succeeded.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    run_with_input(cmd, None, timeout)
}

/// Like [`try_run_with_input`], and panics with both output streams unless the command
/// succeeded.
pub fn run_with_input(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Output {
    let out = try_run_with_input(cmd, input, timeout);
    if !out.success() {
        panic!(
            "`{}` failed ({}).\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe(cmd),
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
    out
}

/// The last 8,000 characters of a long output, so a panic message stays readable.
fn tail(s: &str) -> &str {
    const MAX: usize = 8000;
    if s.len() <= MAX {
        return s;
    }
    let mut start = s.len() - MAX;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A repository name no other test (or earlier run against the same registry) uses.
pub fn unique_repo(prefix: &str) -> String {
    let n: u64 = rand::rng().random();
    format!("clients/{prefix}-{:012x}", n & 0xffff_ffff_ffff)
}

/// A short random lowercase hex suffix.
pub fn unique_suffix() -> String {
    let n: u32 = rand::rng().random();
    format!("{n:08x}")
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rand::rng().fill(&mut v[..]);
    v
}

/// Writes `len` random bytes to `path`, creating parent directories.
pub fn write_random(path: &Path, len: usize) -> Vec<u8> {
    let bytes = random_bytes(len);
    write_file(path, &bytes);
    bytes
}

pub fn write_file(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    }
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

pub fn read_json(path: &Path) -> Value {
    let bytes = read_file(path);
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}: {}", path.display(), String::from_utf8_lossy(&bytes)))
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar archive of the directory `dir`'s contents (sorted, owned by root), via `tar`.
pub fn tar_dir(dir: &Path, out: &Path) {
    run(
        Command::new("tar")
            .arg("--sort=name")
            .arg("--owner=0")
            .arg("--group=0")
            .arg("--numeric-owner")
            .arg("--mtime=2024-01-01 00:00:00")
            .arg("-C")
            .arg(dir)
            .arg("-cf")
            .arg(out)
            .arg("."),
        Duration::from_secs(60),
    );
}

/// Unpacks the tar archive `archive` into the (new) directory `dir`.
pub fn untar(archive: &Path, dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir for untar");
    run(Command::new("tar").arg("-C").arg(dir).arg("-xf").arg(archive), Duration::from_secs(60));
}

/// The first `sha256:<64 hex>` found after `marker` in `text`.
pub fn digest_after(text: &str, marker: &str) -> Option<String> {
    let at = text.find(marker)? + marker.len();
    let rest = text[at..].trim_start();
    let d: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == ':').collect();
    (d.starts_with("sha256:") && d.len() == 71).then_some(d)
}

/// The registry's view of one manifest and everything it references, fetched over HTTP and
/// checked: every body hashes to the digest it was asked by, and sizes match descriptors.
pub struct Fetched {
    /// Digest of the manifest the reference resolved to.
    pub digest: String,
    /// Its media type as the registry answered it.
    pub media_type: String,
    /// Manifest bytes exactly as served.
    pub manifest: Vec<u8>,
    /// Every blob and child manifest reachable from it, by digest, as served.
    pub blobs: BTreeMap<String, Vec<u8>>,
}

pub fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().expect("http client")
}

/// Basic credentials `(user, password)` for the plain-HTTP reads of a registry that requires
/// them (sent on every request, no token flow); `None` reads anonymously.
pub type Creds<'a> = Option<(&'a str, &'a str)>;

/// A GET of `url`, with Basic credentials when `creds` has them.
pub fn get_as(url: &str, creds: Creds) -> reqwest::blocking::RequestBuilder {
    let req = http().get(url);
    match creds {
        Some((user, password)) => req.basic_auth(user, Some(password)),
        None => req,
    }
}

/// GETs a manifest by tag or digest and checks `Docker-Content-Digest` against its bytes.
pub fn get_manifest(reg: &Registry, repo: &str, reference: &str) -> (String, String, Vec<u8>) {
    get_manifest_as(reg, repo, reference, None)
}

/// [`get_manifest`] with Basic credentials.
pub fn get_manifest_as(reg: &Registry, repo: &str, reference: &str, creds: Creds) -> (String, String, Vec<u8>) {
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.base);
    let resp =
        get_as(&url, creds).header("Accept", MANIFEST_ACCEPT).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().expect("manifest body").to_vec();
    assert!(status.is_success(), "GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    let digest = sha256_digest(&body);
    if let Some(h) = headers.get("docker-content-digest") {
        assert_eq!(h.to_str().unwrap_or(""), digest, "Docker-Content-Digest of GET {url} does not hash its body");
    }
    if reference.starts_with("sha256:") {
        assert_eq!(reference, digest, "GET {url} served bytes of another digest");
    }
    let media_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    (digest, media_type, body)
}

/// GETs a blob (with Basic credentials when `creds` has them) and checks its bytes hash to
/// `digest`.
pub fn get_blob_as(reg: &Registry, repo: &str, digest: &str, creds: Creds) -> Vec<u8> {
    let url = format!("{}/v2/{repo}/blobs/{digest}", reg.base);
    let resp = get_as(&url, creds).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.bytes().expect("blob body").to_vec();
    assert!(status.is_success(), "GET {url}: {status}: {}", String::from_utf8_lossy(&body));
    assert_eq!(sha256_digest(&body), digest, "blob served by GET {url} does not hash to its digest");
    body
}

/// Fetches `repo:reference` and, recursively, every child manifest, config and layer it names,
/// checking each against its digest and descriptor size.
pub fn fetch_image(reg: &Registry, repo: &str, reference: &str) -> Fetched {
    fetch_image_as(reg, repo, reference, None)
}

/// [`fetch_image`] with Basic credentials on every request.
pub fn fetch_image_as(reg: &Registry, repo: &str, reference: &str, creds: Creds) -> Fetched {
    let (digest, media_type, manifest) = get_manifest_as(reg, repo, reference, creds);
    let mut blobs = BTreeMap::new();
    collect_referenced(reg, repo, &manifest, &mut blobs, creds);
    Fetched { digest, media_type, manifest, blobs }
}

fn collect_referenced(
    reg: &Registry,
    repo: &str,
    manifest: &[u8],
    blobs: &mut BTreeMap<String, Vec<u8>>,
    creds: Creds,
) {
    let m: Value = serde_json::from_slice(manifest).expect("manifest JSON");
    if let Some(children) = m.get("manifests").and_then(Value::as_array) {
        for d in children {
            let (digest, size) = descriptor(d);
            let (got, _, bytes) = get_manifest_as(reg, repo, &digest, creds);
            assert_eq!(got, digest);
            assert_eq!(bytes.len() as u64, size, "size of child manifest {digest}");
            collect_referenced(reg, repo, &bytes, blobs, creds);
            blobs.insert(digest, bytes);
        }
        return;
    }
    let mut descs: Vec<&Value> = Vec::new();
    if let Some(c) = m.get("config") {
        descs.push(c);
    }
    if let Some(ls) = m.get("layers").and_then(Value::as_array) {
        descs.extend(ls);
    }
    for d in descs {
        let (digest, size) = descriptor(d);
        if blobs.contains_key(&digest) {
            continue;
        }
        let bytes = get_blob_as(reg, repo, &digest, creds);
        assert_eq!(bytes.len() as u64, size, "size of blob {digest}");
        blobs.insert(digest, bytes);
    }
}

/// `(digest, size)` of an OCI descriptor.
pub fn descriptor(d: &Value) -> (String, u64) {
    let digest = d["digest"].as_str().unwrap_or_else(|| panic!("descriptor without digest: {d}"));
    let size = d["size"].as_u64().unwrap_or_else(|| panic!("descriptor without size: {d}"));
    (digest.to_string(), size)
}

/// Blobs of an OCI image layout: the manifest `tag` names in `index.json`, and every blob it
/// references, as `(manifest digest, digest -> bytes)`. Checks each file against its name.
pub fn oci_layout_image(layout: &Path, tag: &str) -> (String, BTreeMap<String, Vec<u8>>) {
    let index = read_json(&layout.join("index.json"));
    let entry = index["manifests"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)))
        .unwrap_or_else(|| panic!("{}: no manifest tagged {tag} in index.json: {index}", layout.display()));
    let (digest, _) = descriptor(entry);
    let mut blobs = BTreeMap::new();
    // (digest, media type): only manifests and indexes are looked into.
    let mut todo = vec![(digest.clone(), entry["mediaType"].as_str().unwrap_or("").to_string())];
    while let Some((d, media_type)) = todo.pop() {
        if blobs.contains_key(&d) {
            continue;
        }
        let bytes = layout_blob(layout, &d);
        if is_manifest_type(&media_type) {
            let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("manifest {d}: {e}"));
            let mut children: Vec<&Value> = Vec::new();
            if v["config"].is_object() {
                children.push(&v["config"]);
            }
            for key in ["layers", "manifests"] {
                if let Some(items) = v[key].as_array() {
                    children.extend(items);
                }
            }
            for c in children {
                todo.push((descriptor(c).0, c["mediaType"].as_str().unwrap_or("").to_string()));
            }
        }
        blobs.insert(d, bytes);
    }
    (digest, blobs)
}

/// True for the media types of image manifests and indexes (OCI and Docker).
pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/vnd.oci.image.manifest.v1+json"
            | "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.v2+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json"
    )
}

/// One blob of an OCI layout, checked against its digest.
pub fn layout_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    let bytes = read_file(&layout.join("blobs").join("sha256").join(hex));
    assert_eq!(sha256_digest(&bytes), digest, "blob file of {digest} in {} is corrupt", layout.display());
    bytes
}

/// Asserts two digest -> bytes maps are identical, naming the first difference.
pub fn assert_same_blobs(what: &str, left: &BTreeMap<String, Vec<u8>>, right: &BTreeMap<String, Vec<u8>>) {
    let lk: Vec<&String> = left.keys().collect();
    let rk: Vec<&String> = right.keys().collect();
    assert_eq!(lk, rk, "{what}: different sets of blobs");
    for (d, bytes) in left {
        assert!(right[d] == *bytes, "{what}: blob {d} differs ({} vs {} bytes)", bytes.len(), right[d].len());
    }
}

/// A temporary directory that is kept (and printed) when `CLIENTS_KEEP_TMP` is set.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    let keep = std::env::var_os("CLIENTS_KEEP_TMP").is_some();
    let dir = tempfile::Builder::new()
        .prefix(&format!("cairn-clients-{prefix}-"))
        .disable_cleanup(keep)
        .tempdir()
        .expect("tempdir");
    if keep {
        note(format!("keeping {}", dir.path().display()));
    }
    dir
}

/// The registry under test: `CONFORMANCE_URL`, else a fresh Cairn on this run's backend.
pub fn registry() -> Registry {
    if external_registry().is_some() {
        return Registry::get();
    }
    let server = start_cairn();
    Registry { base: server.base.clone(), host: server.host.clone(), server: Some(server) }
}

/// A fresh database and bucket when this run's backend is PostgreSQL + S3.
fn fresh_pg_s3() -> Option<PgS3> {
    match Backend::current() {
        Backend::SqliteFs => None,
        Backend::PostgresS3 { admin_url, s3_endpoint } => {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            let made = rt.block_on(PgS3::create(admin_url, s3_endpoint, None));
            note(format!("Cairn on PostgreSQL + S3: database {}, bucket {}", made.db.url, made.bucket));
            Some(made)
        }
    }
}

/// A fresh `cairn serve` on this run's backend, on a data directory of its own.
fn start_cairn() -> cairn_conformance::Server {
    let Some(pg_s3) = fresh_pg_s3() else { return cairn_conformance::Server::start() };
    let tmp = tempdir("cairn");
    let env = pg_s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = cairn_conformance::Server::start_in(tmp.path(), &[], &env);
    server.keep_alive(pg_s3);
    server.keep_alive(tmp);
    server
}

/// The registry for a check of Cairn's own behaviour (DESIGN §4: immutable tags, tag history;
/// the harness lists such tests with [`Need::Cairn`](crate::harness::Need::Cairn)): always a
/// fresh Cairn. Such a test is ignored when `CONFORMANCE_URL` names another registry; run
/// anyway (`--include-ignored`), it checks a Cairn of its own, and notes so.
pub fn cairn_only(what: &str) -> Registry {
    if let Some(url) = external_registry() {
        note(format!("CONFORMANCE_URL={url} is not Cairn; {what} is Cairn's behaviour: checking a Cairn started here"));
    }
    let server = start_cairn();
    Registry { base: server.base.clone(), host: server.host.clone(), server: Some(server) }
}

/// A Cairn started with the TOML `config` (`cairn serve --config FILE`) on its own data
/// directory; dropping it stops the server, then removes the directory.
pub struct ConfiguredCairn {
    pub reg: Registry,
    /// The config file the server was started with.
    pub config: std::path::PathBuf,
    /// The server's data directory (`--data-dir`), for CLI commands against the same data.
    pub data_dir: std::path::PathBuf,
    _tmp: tempfile::TempDir,
}

/// [`ConfiguredCairn`] with `config` (a test of Cairn's config, a [`Need::Cairn`] test: like
/// [`cairn_only`], a Cairn of its own even when `CONFORMANCE_URL` is set).
///
/// [`Need::Cairn`]: crate::harness::Need::Cairn
pub fn cairn_with_config(config: &str, what: &str) -> ConfiguredCairn {
    if let Some(url) = external_registry() {
        note(format!("CONFORMANCE_URL={url} is not Cairn; {what} needs a Cairn config: checking a Cairn started here"));
    }
    let tmp = tempdir("cairn");
    let file = tmp.path().join("cairn.toml");
    let pg_s3 = fresh_pg_s3();
    let backend = pg_s3.as_ref().map(PgS3::toml).unwrap_or_default();
    write_file(&file, format!("{config}{backend}").as_bytes());
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let mut server = cairn_conformance::Server::start_in(&data, &["--config", file.to_str().expect("utf-8 path")], &[]);
    if let Some(pg_s3) = pg_s3 {
        server.keep_alive(pg_s3);
    }
    let reg = Registry { base: server.base.clone(), host: server.host.clone(), server: Some(server) };
    ConfiguredCairn { reg, config: file, data_dir: data, _tmp: tmp }
}

/// Asserts a client's push of another image to the immutable tag `tag` failed, and that what it
/// printed carries Cairn's refusal: `denied_marker` (`denied:` for docker), `immutable`, and
/// the digest the tag keeps.
pub fn assert_immutable_refusal(client: &str, out: &Output, denied_marker: &str, tag: &str, current: &str) {
    let said = format!("{}\n{}", out.stdout, out.stderr);
    assert!(!out.success(), "{client}: pushing another image to the immutable tag {tag} succeeded:\n{said}");
    assert!(
        said.contains(denied_marker) && said.contains("immutable") && said.contains(current),
        "{client} should show `{denied_marker} tag {tag} is immutable; it points to {current} ...`; it said:\n{said}"
    );
    let line = said.lines().find(|l| l.contains("is immutable")).unwrap_or_default();
    note(format!("{client} refused as expected: {}", line.trim()));
}

/// GETs a JSON document of the REST API (`path` starting with `/api/v1/`), expecting 200.
pub fn get_api_json(reg: &Registry, path: &str) -> Value {
    let url = format!("{}{path}", reg.base);
    let resp = http().get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status();
    let body = resp.text().unwrap_or_default();
    assert_eq!(status, reqwest::StatusCode::OK, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}: {body}"))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `t` as RFC 3339 in UTC with milliseconds: `2026-01-31T12:00:00.123Z`.
pub fn rfc3339_utc(t: std::time::SystemTime) -> String {
    let ms = t.duration_since(std::time::UNIX_EPOCH).expect("time after 1970").as_millis() as i64;
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    // civil_from_days, the inverse of days_from_civil.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (h, mi, s, milli) = (rem / 3_600_000, rem / 60_000 % 60, rem / 1000 % 60, rem % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

/// Milliseconds since the epoch of an RFC 3339 time (`Z` or `±HH:MM`, any fraction).
pub fn rfc3339_millis(s: &str) -> i64 {
    let bad = || panic!("not an RFC 3339 time: {s:?}");
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|p| p.parse::<i64>().ok()).unwrap_or_else(bad);
    if s.len() < 20 || s.as_bytes()[10] != b'T' {
        bad();
    }
    let (y, mo, d, h, mi, sec) = (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16), num(17..19));
    let mut rest = &s[19..];
    let mut milli = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        let padded = format!("{:0<3}", &frac[..digits.min(3)]);
        milli = padded.parse::<i64>().unwrap_or_else(|_| bad());
        rest = &frac[digits..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let v = |r: std::ops::Range<usize>| o.get(r).and_then(|p| p.parse::<i64>().ok()).unwrap_or_else(bad);
            sign * (v(1..3) * 60 + v(4..6))
        }
        _ => bad(),
    };
    ((days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60) * 1000) + milli
}
