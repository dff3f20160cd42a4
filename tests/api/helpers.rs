//! `spawn_app`: the real state on a temp dir, served on an ephemeral port, and a client
//! with protocol verbs so tests read as OCI flows.
//!
//! Backends: the suite runs on the backend `TEST_BACKEND` names (tests/common/backend.rs).
//! - unset or `sqlite-fs`: each server keeps SQLite and its blob directory in its temp dir;
//! - `postgres-s3`: each server gets a fresh database on `TEST_DATABASE_URL` (a copy of a
//!   template migrated once; dropped when the last `TestApp` using it is gone) and a fresh
//!   bucket on `TEST_S3_ENDPOINT`; without either variable every test fails naming it.
//!   `scripts/test` runs the suite a second time that way:
//!   `TEST_BACKEND=postgres-s3 cargo test --test api -- --skip sqlite_fs_only`.
//!
//! Servers and `cairn` commands (`auth::cairn_cli`) given the same data directory share one
//! database and bucket while a server on it lives, as they would share a config.
//!
//! What is stored is checked on either backend: [`TestApp::objects`] lists the blob store
//! (directory or bucket) through object_store, GC marks come from the metadata store, and
//! [`TestApp::postgres_rows`] shows a PostgreSQL database's rows. A test that can only be
//! about SQLite or the filesystem themselves (none today) carries `sqlite_fs_only` in its
//! name, so that the second pass's `--skip sqlite_fs_only` filters it out (libtest counts it
//! as filtered out, `scripts/test` lists it), and calls [`sqlite_fs_only`] first, which fails
//! it on any other backend: run there anyway, it fails rather than passes.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use cairn::config::StorageKind;
use cairn::policy::Mode;
use cairn::policy::immutability::RuleConfig;
use cairn::{AppState, Config};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use rand::RngCore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub use crate::backend::Backend;
use crate::backend::PgS3;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    pub dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
    /// The database and bucket on the PostgreSQL + S3 backend (last: dropped after the rest).
    pub pg_s3: Option<Arc<PgS3>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_with(|_| {}).await
}

/// A server whose tags are all mutable (rule `**` / `*`), for tests about moving or
/// deleting tags rather than about immutability.
pub async fn spawn_mutable() -> TestApp {
    spawn_with(|c| c.immutability.rules = vec![rule(None, "**", &["*"], Mode::Mutable)]).await
}

/// An immutability rule.
pub fn rule(name: Option<&str>, repos: &str, tags: &[&str], mode: Mode) -> RuleConfig {
    RuleConfig {
        name: name.map(str::to_string),
        repositories: repos.to_string(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        mode,
    }
}

pub async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_with_clock(std::sync::Arc::new(cairn::clock::SystemClock), tweak).await
}

/// A server whose registry asks `clock` for the time (a `ManualClock` moves it in tests).
pub async fn spawn_with_clock(
    clock: std::sync::Arc<dyn cairn::clock::Clock>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path());
    tweak(&mut config);
    let pg_s3 = match Backend::current() {
        Backend::SqliteFs => None,
        Backend::PostgresS3 { admin_url, s3_endpoint } => {
            let shared = pg_s3_for(&config.server.data_dir, admin_url, s3_endpoint).await;
            point_at(&mut config, &shared);
            Some(shared)
        }
    };
    let state = AppState::from_config_with_clock(config, clock).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cairn::serve(listener, state.clone(), async {
        stopped.await.ok();
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    TestApp { base, http, state, dir, _stop: stop, pg_s3 }
}

/// The databases and buckets in use, by data directory (see the header).
static PG_S3: Mutex<Vec<(PathBuf, Weak<PgS3>)>> = Mutex::new(Vec::new());

/// The database and bucket of the live server on `data_dir`, else fresh ones.
async fn pg_s3_for(data_dir: &Path, admin_url: &str, s3_endpoint: &str) -> Arc<PgS3> {
    if let Some(shared) = pg_s3_of(data_dir) {
        return shared;
    }
    // Cairn's PostgreSQL migrations, so that each database starts as a migrated copy.
    static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
    let fresh = Arc::new(PgS3::create(admin_url, s3_endpoint, Some(&MIGRATOR)).await);
    let mut all = PG_S3.lock().unwrap();
    all.retain(|(_, w)| w.strong_count() > 0);
    all.push((data_dir.to_path_buf(), Arc::downgrade(&fresh)));
    fresh
}

/// The database and bucket a live server on `data_dir` uses, if any.
fn pg_s3_of(data_dir: &Path) -> Option<Arc<PgS3>> {
    PG_S3.lock().unwrap().iter().filter(|(d, _)| d == data_dir).find_map(|(_, w)| w.upgrade())
}

/// The `CAIRN_*` variables that point a `cairn` command on `data_dir` at the database and
/// bucket of the server on it (none on SQLite + filesystem). Panics on PostgreSQL + S3 when
/// no server on `data_dir` lives: the command would open an empty SQLite file there.
pub fn backend_env(data_dir: &Path) -> Vec<(&'static str, String)> {
    match Backend::current() {
        Backend::SqliteFs => vec![],
        Backend::PostgresS3 { .. } => pg_s3_of(data_dir)
            .unwrap_or_else(|| panic!("no test server lives on {}: its database is gone", data_dir.display()))
            .env(),
    }
}

/// Points `config` at `pg_s3`'s database and bucket.
fn point_at(config: &mut Config, pg_s3: &PgS3) {
    assert!(
        config.database.url.is_none() && config.storage.kind == StorageKind::Filesystem,
        "this test chooses its own database or storage: the backend switch would override it"
    );
    config.database.url = Some(pg_s3.db.url.clone());
    let st = &mut config.storage;
    st.kind = StorageKind::S3;
    st.path = None;
    st.bucket = Some(pg_s3.bucket.clone());
    st.region = Some(crate::backend::S3_REGION.into());
    st.endpoint = Some(pg_s3.endpoint.clone());
    st.path_style = true;
    st.access_key_id = Some(crate::backend::S3_ACCESS_KEY_ID.into());
    st.secret_access_key = Some(crate::backend::S3_SECRET_ACCESS_KEY.into());
}

/// For a test about SQLite or the filesystem themselves (its name carries `sqlite_fs_only`,
/// see the header): fails it on any other backend, so that it never passes there unchecked.
pub fn sqlite_fs_only(why: &str) {
    let backend = Backend::current();
    assert!(
        *backend == Backend::SqliteFs,
        "this test runs only on SQLite + filesystem ({why}), and TEST_BACKEND={}: skip it with \
         `--skip sqlite_fs_only`, as scripts/test does",
        backend.name()
    );
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// A unique-enough repository suffix.
pub fn uniq() -> String {
    format!("{:08x}", rand::rng().next_u32())
}

/// Asserts an OCI error response: status, code, a non-empty message; returns the body. An
/// `/api/v1` answer (RFC 9457 problem+json) is checked with [`assert_problem`] instead.
pub async fn assert_error(resp: Response, status: StatusCode, code: &str) -> Value {
    if header(&resp, "content-type").is_some_and(|c| c.starts_with("application/problem+json")) {
        return assert_problem(resp, status, code).await;
    }
    assert_eq!(resp.status(), status, "unexpected status for {}", resp.url());
    let body: Value = resp.json().await.expect("error body is JSON");
    let err = &body["errors"][0];
    assert_eq!(err["code"], code, "body: {body}");
    assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "empty message: {body}");
    body
}

/// Asserts an RFC 9457 problem+json response with `status` and Cairn's `code`: a `type` URI,
/// a `title`, the same `status` in the body and a non-empty `detail`; returns the body.
pub async fn assert_problem(resp: Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status, "unexpected status for {}", resp.url());
    assert_eq!(header(&resp, "content-type").as_deref(), Some("application/problem+json"), "{}", resp.url());
    let body: Value = resp.json().await.expect("problem body is JSON");
    assert_eq!(body["status"], status.as_u16(), "body: {body}");
    assert_eq!(body["code"], code, "body: {body}");
    assert!(body["type"].as_str().is_some_and(|t| t.starts_with("urn:cairn:problem:")), "type: {body}");
    assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "title: {body}");
    assert!(body["detail"].as_str().is_some_and(|t| !t.is_empty()), "detail: {body}");
    body
}

impl TestApp {
    /// The blob store the server writes to (its blob directory, or its bucket), through
    /// object_store: for tests that look at what is stored, on either backend.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        let config = &self.state.config;
        let st = &config.storage;
        match st.kind {
            StorageKind::Filesystem => {
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(config.storage_path()).unwrap())
            }
            StorageKind::S3 => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(st.bucket.clone().unwrap())
                    .with_region(st.region.clone().unwrap())
                    .with_endpoint(st.endpoint.clone().unwrap())
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(!st.path_style)
                    .with_access_key_id(st.access_key_id.clone().unwrap())
                    .with_secret_access_key(st.secret_access_key.clone().unwrap())
                    .build()
                    .unwrap(),
            ),
            StorageKind::Memory => panic!("a memory store cannot be looked at from outside"),
        }
    }

    /// The keys of every stored object, sorted (see the blob module for the layout).
    pub async fn object_keys(&self) -> Vec<String> {
        self.listing().await.iter().map(|p| p.to_string()).collect()
    }

    /// Every stored object: its key and its bytes, sorted by key.
    pub async fn objects(&self) -> Vec<(String, Vec<u8>)> {
        let store = self.object_store();
        let mut out = Vec::new();
        for path in self.listing().await {
            // An object deleted since the listing (a GC running) is left out.
            if let Ok(got) = store.get(&path).await {
                out.push((path.to_string(), got.bytes().await.unwrap().to_vec()));
            }
        }
        out
    }

    async fn listing(&self) -> Vec<object_store::path::Path> {
        let mut paths: Vec<_> = self.object_store().list(None).map_ok(|m| m.location).try_collect().await.unwrap();
        paths.sort();
        paths
    }

    /// On PostgreSQL, every row of every table of the server's database as text, one line
    /// per row; `None` on SQLite, whose database is a file of the data directory.
    pub async fn postgres_rows(&self) -> Option<String> {
        use sqlx::Connection;
        let url = self.state.config.database_url();
        if !url.starts_with("postgres") {
            return None;
        }
        let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT quote_ident(table_name::text) FROM information_schema.tables WHERE table_schema = 'public'",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let mut out = String::new();
        for t in tables {
            let rows: Vec<String> =
                sqlx::query_scalar(&format!("SELECT r::text FROM {t} r")).fetch_all(&mut conn).await.unwrap();
            for row in rows {
                out.push_str(&format!("{t}: {row}\n"));
            }
        }
        Some(out)
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http") { path.to_string() } else { format!("{}{}", self.base, path) }
    }

    pub async fn get(&self, path: &str) -> Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn head(&self, path: &str) -> Response {
        self.http.head(self.url(path)).send().await.unwrap()
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.http.delete(self.url(path)).send().await.unwrap()
    }

    pub async fn post(&self, path: &str) -> Response {
        self.http.post(self.url(path)).send().await.unwrap()
    }

    /// POST to start an upload; returns the Location.
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.post(&format!("/v2/{repo}/blobs/uploads/")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        location(&r)
    }

    /// PATCH a chunk with Content-Range; returns the response.
    pub async fn patch_chunk(&self, loc: &str, start: u64, bytes: &[u8]) -> Response {
        let end = start + bytes.len() as u64 - 1;
        self.http
            .patch(self.url(loc))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{start}-{end}"))
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// PUT `?digest=` to finish an upload, with an optional last chunk.
    pub async fn finish_upload(&self, loc: &str, digest: &str, body: &[u8]) -> Response {
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.http
            .put(self.url(&format!("{loc}{sep}digest={digest}")))
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// POST + PUT a blob; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let loc = self.start_upload(repo).await;
        let r = self.finish_upload(&loc, &d, bytes).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.http
            .put(self.url(&format!("/v2/{repo}/manifests/{reference}")))
            .header("Content-Type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    /// Pushes a config and a layer, then an OCI image manifest under `reference`;
    /// returns (manifest bytes, manifest digest).
    pub async fn push_image(&self, repo: &str, reference: &str) -> (Vec<u8>, String) {
        let config = self.push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
        let layer_bytes = random_bytes(1000);
        let layer = self.push_blob(repo, &layer_bytes).await;
        let m = image_manifest(&config, 37, &[(&layer, 1000)], None);
        let r = self.put_manifest(repo, reference, OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let d = digest(&m);
        (m, d)
    }

    pub async fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list")).await;
        if r.status() == StatusCode::NOT_FOUND {
            return vec![];
        }
        let v: Value = r.json().await.unwrap();
        v["tags"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect()
    }
}

pub fn location(r: &Response) -> String {
    r.headers().get("location").expect("Location header").to_str().unwrap().to_string()
}

pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// An OCI image manifest body.
pub fn image_manifest(config: &str, config_size: u64, layers: &[(&str, u64)], subject: Option<&str>) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size },
        "layers": layers.iter().map(|(d, s)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": s })).collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["subject"] = json!({ "mediaType": OCI_MANIFEST, "digest": s, "size": 100 });
    }
    serde_json::to_vec(&m).unwrap()
}
