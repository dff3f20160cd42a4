//! `spawn_app`: the real state on a temp dir, served on an ephemeral port, and a client
//! with protocol verbs so tests read as OCI flows.

#![allow(dead_code)]

use cairn::policy::Mode;
use cairn::policy::immutability::RuleConfig;
use cairn::{AppState, Config};
use rand::RngCore;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

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
    let state = AppState::from_config_with_clock(config, clock).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cairn::serve(listener, state.clone(), async {
        stopped.await.ok();
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    TestApp { base, http, state, dir, _stop: stop }
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
