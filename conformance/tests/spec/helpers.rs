//! Shared support for the conformance checks: an HTTP client bound to the registry under test,
//! random content and digests, the push verbs every workflow needs, and the assertion on the
//! spec's error body. Nothing here asserts a workflow requirement of its own beyond the
//! statuses the spec fixes for the steps it performs.

use std::time::Duration;

use cairn_conformance::{Registry, Server};
use rand::RngCore;
use reqwest::{Client, Method, RequestBuilder, Response, StatusCode, Url};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Gzipped OCI layer.
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// The empty descriptor `{}` used as config of artifacts.
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Docker image config.
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
/// Gzipped Docker layer.
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The `Content-Type` of blob upload bodies.
pub const OCTET_STREAM: &str = "application/octet-stream";

/// The `Accept` header a client that understands every manifest type sends.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// The error codes of the spec's table (distribution-spec v1.1, "Error Codes").
pub const SPEC_ERROR_CODES: [&str; 14] = [
    "BLOB_UNKNOWN",
    "BLOB_UPLOAD_INVALID",
    "BLOB_UPLOAD_UNKNOWN",
    "DIGEST_INVALID",
    "MANIFEST_BLOB_UNKNOWN",
    "MANIFEST_INVALID",
    "MANIFEST_UNKNOWN",
    "NAME_INVALID",
    "NAME_UNKNOWN",
    "SIZE_INVALID",
    "UNAUTHORIZED",
    "DENIED",
    "UNSUPPORTED",
    "TOOMANYREQUESTS",
];

/// The registry under test plus a client that does not follow redirects, so that every
/// `Location` is observed as the registry sent it.
pub struct Reg {
    /// Where requests go; keeps a spawned Cairn alive.
    pub registry: Registry,
    /// A client that never follows redirects.
    pub http: Client,
    base: Url,
    _tmp: Option<tempfile::TempDir>,
}

impl Reg {
    /// The registry from `Registry::get()`: `CONFORMANCE_URL`, or a fresh Cairn server.
    pub fn start() -> Reg {
        Reg::wrap(Registry::get(), None)
    }

    /// Like [`Reg::start`], but a spawned Cairn gets a config that makes every tag mutable,
    /// so that tag deletion (which Cairn refuses for its default immutable tags) can be
    /// checked. An external registry is used as is.
    pub fn start_with_mutable_tags() -> Reg {
        if std::env::var("CONFORMANCE_URL").is_ok_and(|u| !u.is_empty()) {
            return Reg::start();
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let config = tmp.path().join("cairn.toml");
        std::fs::write(&config, "[[immutability.rules]]\nrepositories = \"**\"\ntags = [\"*\"]\nmode = \"mutable\"\n")
            .expect("write config");
        let data = tmp.path().join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = config.to_str().expect("utf-8 path");
        let server = Server::start_in(&data, &["--config", config], &[]);
        let registry = Registry { base: server.base.clone(), host: server.host.clone(), server: Some(server) };
        Reg::wrap(registry, Some(tmp))
    }

    fn wrap(registry: Registry, tmp: Option<tempfile::TempDir>) -> Reg {
        let http = Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let base = Url::parse(&format!("{}/", registry.base)).expect("registry base URL");
        Reg { registry, http, base, _tmp: tmp }
    }

    /// True when the registry under test is a Cairn started by this test.
    pub fn is_cairn(&self) -> bool {
        self.registry.is_cairn()
    }

    /// `path` (starting with `/v2/`) on the registry.
    pub fn url(&self, path: &str) -> Url {
        self.base.join(path).expect("request URL")
    }

    /// A `Location` header value, absolute or relative, resolved against the registry.
    pub fn resolve(&self, location: &str) -> Url {
        self.base.join(location).unwrap_or_else(|e| panic!("bad Location {location:?}: {e}"))
    }

    /// A request to `path` on the registry.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A request to an already resolved URL (an upload location, a `Link`).
    pub fn req_url(&self, method: Method, url: Url) -> RequestBuilder {
        self.http.request(method, url)
    }

    /// Resolved `Location` of a response; panics when it is absent.
    pub fn location(&self, resp: &Response) -> Url {
        let loc = header(resp, "location")
            .unwrap_or_else(|| panic!("{} {} has no Location header", resp.status(), resp.url()));
        self.resolve(&loc)
    }

    /// POST `/v2/<repo>/blobs/uploads/` (end-4a); asserts 202 with a `Location` and returns it.
    pub async fn start_upload(&self, repo: &str) -> Url {
        let resp = self
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .header("content-length", "0")
            .send()
            .await
            .expect("POST upload");
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST /v2/{repo}/blobs/uploads/");
        self.location(&resp)
    }

    /// PUT `<location>?digest=` with `data` as the whole blob (end-6).
    pub async fn finish_upload(&self, location: Url, digest: &str, data: &[u8]) -> Response {
        self.req_url(Method::PUT, with_query(location, "digest", digest))
            .header("content-type", OCTET_STREAM)
            .body(data.to_vec())
            .send()
            .await
            .expect("PUT upload")
    }

    /// Pushes `data` monolithically (POST then PUT); asserts 201 and returns its digest.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = digest_of(data);
        let location = self.start_upload(repo).await;
        let resp = self.finish_upload(location, &digest, data).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "PUT blob {digest} to {repo}");
        digest
    }

    /// Pushes `data` and returns its descriptor with `media_type`.
    pub async fn push_blob_desc(&self, repo: &str, media_type: &str, data: &[u8]) -> Value {
        self.push_blob(repo, data).await;
        descriptor(media_type, data)
    }

    /// PUT `/v2/<repo>/manifests/<reference>` (end-7) without asserting the outcome.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) -> Response {
        self.req(Method::PUT, &format!("/v2/{repo}/manifests/{reference}"))
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await
            .expect("PUT manifest")
    }

    /// Pushes a manifest under `reference` (a tag, or `None` for its digest); asserts 201 and
    /// returns the digest.
    pub async fn push_manifest(&self, repo: &str, reference: Option<&str>, media_type: &str, body: &[u8]) -> String {
        let digest = digest_of(body);
        let reference = reference.unwrap_or(&digest);
        let resp = self.put_manifest(repo, reference, media_type, body).await;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        assert_eq!(status, StatusCode::CREATED, "PUT manifest {repo}:{reference}: {text}");
        digest
    }

    /// Pushes a random config and layer and an OCI image manifest over them, under `tag`
    /// (or by digest).
    pub async fn push_image(&self, repo: &str, tag: Option<&str>) -> Pushed {
        let config = self.push_blob_desc(repo, OCI_CONFIG, &random_config()).await;
        let layer = self.push_blob_desc(repo, OCI_LAYER, &random_bytes(512)).await;
        let body = image_manifest(&config, &[layer], json!({}));
        let digest = self.push_manifest(repo, tag, OCI_MANIFEST, &body).await;
        Pushed { digest, body, media_type: OCI_MANIFEST }
    }

    /// Status of HEAD `/v2/<repo>/blobs/<digest>`.
    pub async fn head_blob(&self, repo: &str, digest: &str) -> StatusCode {
        self.req(Method::HEAD, &format!("/v2/{repo}/blobs/{digest}")).send().await.expect("HEAD blob").status()
    }

    /// Status of HEAD `/v2/<repo>/manifests/<reference>`.
    pub async fn head_manifest(&self, repo: &str, reference: &str) -> StatusCode {
        self.req(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await
            .expect("HEAD manifest")
            .status()
    }

    /// GET `/v2/<repo>/manifests/<reference>` with every manifest type accepted.
    pub async fn get_manifest(&self, repo: &str, reference: &str) -> Response {
        self.req(Method::GET, &format!("/v2/{repo}/manifests/{reference}"))
            .header("accept", ACCEPT_MANIFESTS)
            .send()
            .await
            .expect("GET manifest")
    }

    /// The tags of `repo` from `tags/list`, or `None` when the repository is unknown (404).
    pub async fn tags(&self, repo: &str) -> Option<Vec<String>> {
        let resp = self.req(Method::GET, &format!("/v2/{repo}/tags/list")).send().await.expect("GET tags/list");
        if resp.status() == StatusCode::NOT_FOUND {
            assert_error(resp, StatusCode::NOT_FOUND, &["NAME_UNKNOWN"]).await;
            return None;
        }
        assert_eq!(resp.status(), StatusCode::OK, "GET /v2/{repo}/tags/list");
        Some(tag_list(&json_body(resp).await))
    }

    /// Asserts that `tag` is not visible in `repo`: HEAD 404 and absent from `tags/list`.
    pub async fn assert_tag_absent(&self, repo: &str, tag: &str) {
        assert_eq!(self.head_manifest(repo, tag).await, StatusCode::NOT_FOUND, "HEAD {repo}:{tag}");
        if let Some(tags) = self.tags(repo).await {
            assert!(!tags.iter().any(|t| t == tag), "{tag} listed in {repo}: {tags:?}");
        }
    }
}

/// A manifest that was pushed.
pub struct Pushed {
    /// Digest of `body`.
    pub digest: String,
    /// The exact bytes sent.
    pub body: Vec<u8>,
    /// The `Content-Type` it was pushed with.
    pub media_type: &'static str,
}

/// A unique repository name under `conformance/`, so checks can share one registry.
pub fn unique_repo(prefix: &str) -> String {
    format!("conformance/{prefix}-{}", random_suffix())
}

/// 12 random lowercase hex characters.
pub fn random_suffix() -> String {
    hex::encode(random_bytes(6))
}

/// `n` random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::rng().fill_bytes(&mut v);
    v
}

/// A small, unique OCI image config.
pub fn random_config() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "architecture": "amd64",
        "os": "linux",
        "config": { "Labels": { "org.example.nonce": random_suffix() } },
        "rootfs": { "type": "layers", "diff_ids": [] }
    }))
    .expect("config json")
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A digest nothing in any registry has.
pub fn unknown_digest() -> String {
    digest_of(&random_bytes(32))
}

/// `{mediaType, digest, size}` of `data`.
pub fn descriptor(media_type: &str, data: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest_of(data), "size": data.len() })
}

/// An OCI image manifest over `config` and `layers`; the fields of `extra` (an object:
/// `artifactType`, `subject`, `annotations`) are added to it.
pub fn image_manifest(config: &Value, layers: &[Value], extra: Value) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    });
    merge(&mut m, extra);
    serde_json::to_vec(&m).expect("manifest json")
}

/// An index of `media_type` (OCI index or Docker manifest list) over `manifests`, with the
/// fields of `extra` added.
pub fn index_manifest(media_type: &str, manifests: &[Value], extra: Value) -> Vec<u8> {
    let mut m = json!({ "schemaVersion": 2, "mediaType": media_type, "manifests": manifests });
    merge(&mut m, extra);
    serde_json::to_vec(&m).expect("index json")
}

fn merge(target: &mut Value, extra: Value) {
    if let (Some(t), Value::Object(e)) = (target.as_object_mut(), extra) {
        t.extend(e);
    }
}

/// `url` with `key=value` appended to its query (keeping what the registry put there).
pub fn with_query(mut url: Url, key: &str, value: &str) -> Url {
    url.query_pairs_mut().append_pair(key, value);
    url
}

/// A response header as a string.
pub fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().expect("ASCII header").to_string())
}

/// The target of a `Link: <url>; rel="next"` header.
pub fn link_next(resp: &Response) -> Option<String> {
    let link = header(resp, "link")?;
    assert!(link.contains("rel=\"next\""), "Link without rel=\"next\": {link}");
    let start = link.find('<').expect("Link has <url>") + 1;
    let end = link.find('>').expect("Link has <url>");
    Some(link[start..end].to_string())
}

/// The body parsed as JSON.
pub async fn json_body(resp: Response) -> Value {
    let url = resp.url().clone();
    let bytes = resp.bytes().await.expect("body");
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{url}: body is not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The `tags` of a tags/list body (`null` counts as empty).
pub fn tag_list(body: &Value) -> Vec<String> {
    match &body["tags"] {
        Value::Null => Vec::new(),
        Value::Array(a) => a.iter().map(|t| t.as_str().expect("tag string").to_string()).collect(),
        other => panic!("tags is not a list: {other}"),
    }
}

/// Asserts `resp` has `status` and the spec's error body `{"errors":[{code, message, ...}]}`
/// whose first code is one of `codes` (each in the spec's table), with a non-empty message.
/// Returns that code.
pub async fn assert_error(resp: Response, status: StatusCode, codes: &[&str]) -> String {
    let what = format!("{} {}", resp.url().path(), resp.url().query().unwrap_or(""));
    let got = resp.status();
    let bytes = resp.bytes().await.expect("error body");
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(got, status, "{what}: status (body: {text})");
    let body: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{what}: error body is not JSON ({e}): {text}"));
    let errors = body["errors"].as_array().unwrap_or_else(|| panic!("{what}: no \"errors\" list in {text}"));
    assert!(!errors.is_empty(), "{what}: empty errors list");
    for e in errors {
        let code = e["code"].as_str().unwrap_or_else(|| panic!("{what}: error without code: {e}"));
        assert!(SPEC_ERROR_CODES.contains(&code), "{what}: {code} is not in the spec's table");
        let message = e["message"].as_str().unwrap_or_default();
        assert!(!message.trim().is_empty(), "{what}: error {code} has no message: {e}");
    }
    let code = errors[0]["code"].as_str().unwrap_or_default().to_string();
    assert!(codes.contains(&code.as_str()), "{what}: code {code}, expected one of {codes:?}: {text}");
    code
}
