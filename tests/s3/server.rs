//! An in-process Cairn server with `[storage] kind = "s3"` over real HTTP: monolithic and
//! chunked uploads pulled back byte for byte (also a range), one object per blob (the chunked
//! one composed), GETs answered 200 with redirect off, a cancelled upload's objects removed,
//! and GC removing a deleted image's blobs from the bucket. `Node` is shared with
//! `redirect.rs` and `clients.rs`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::config::StorageKind;
use cairn::service::GcOptions;
use cairn::{AppState, Config};
use reqwest::StatusCode;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::bucket::TempBucket;
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[S3Test { name: "push_pull_cancel_and_gc_on_s3", run: push_pull_cancel_and_gc_on_s3 }];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const HOUR: Duration = Duration::from_secs(3600);

pub struct Node {
    pub base: String,
    /// A client that does not follow redirects (so a 307 is seen as one).
    pub http: reqwest::Client,
    pub state: AppState,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server storing blobs in `bucket` (SQLite in a temp dir), its tags mutable.
async fn node(bucket: &TempBucket, clock: Arc<ManualClock>) -> Node {
    node_with(bucket, clock, |_| {}).await
}

/// Like `node`, with `tweak` applied to the configuration last.
pub async fn node_with(bucket: &TempBucket, clock: Arc<ManualClock>, tweak: impl FnOnce(&mut Config)) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path());
    let s = &bucket.settings;
    config.storage.kind = StorageKind::S3;
    config.storage.bucket = Some(s.bucket.clone());
    config.storage.region = s.region.clone();
    config.storage.endpoint = s.endpoint.clone();
    config.storage.path_style = true;
    config.storage.access_key_id = s.keys.as_ref().map(|k| k.0.clone());
    config.storage.secret_access_key = s.keys.as_ref().map(|k| k.1.clone());
    let mutable: cairn::policy::immutability::ImmutabilityConfig =
        serde_json::from_value(json!({ "rules": [{ "repositories": "**", "tags": ["*"], "mode": "mutable" }] }))
            .unwrap();
    config.immutability = mutable;
    tweak(&mut config);
    assert_eq!(config.problems(), Vec::<String>::new());
    let state = AppState::from_config_with_clock(config, clock).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cairn::serve(listener, state.clone(), async {
        stopped.await.ok();
    }));
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    Node { base, http, state, _dir: dir, _stop: stop }
}

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn absolute(base: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap().to_string();
    if loc.starts_with("http") { loc } else { format!("{base}{loc}") }
}

fn with_digest(loc: &str, d: &str) -> String {
    let sep = if loc.contains('?') { '&' } else { '?' };
    format!("{loc}{sep}digest={d}")
}

impl Node {
    pub async fn start_upload(&self, repo: &str) -> String {
        let r = self.http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        absolute(&self.base, &r)
    }

    /// POST then one PUT with the whole body.
    pub async fn push_monolithic(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let loc = self.start_upload(repo).await;
        let r = self.http.put(with_digest(&loc, &d)).body(bytes.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    /// POST, one PATCH per chunk, then a PUT with no body.
    pub async fn push_chunked(&self, repo: &str, chunks: &[&[u8]]) -> String {
        let d = digest(&chunks.concat());
        let mut loc = self.start_upload(repo).await;
        let mut offset = 0usize;
        for c in chunks {
            let range = format!("{offset}-{}", offset + c.len() - 1);
            let r = self
                .http
                .patch(&loc)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", range)
                .body(c.to_vec())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
            loc = absolute(&self.base, &r);
            offset += c.len();
        }
        let r = self.http.put(with_digest(&loc, &d)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    /// PUTs an OCI image manifest over config `(digest, size)` and one layer `(digest,
    /// size)` of `layer_type` as `repo:tag`; asserts 201 and returns the manifest's bytes.
    pub async fn put_image(
        &self,
        repo: &str,
        tag: &str,
        config: (&str, usize),
        layer: (&str, usize),
        layer_type: &str,
    ) -> Vec<u8> {
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0, "size": config.1 },
            "layers": [{ "mediaType": layer_type, "digest": layer.0, "size": layer.1 }],
        }))
        .unwrap();
        let r = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("Content-Type", OCI_MANIFEST)
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        manifest
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).header("Accept", OCI_MANIFEST).send().await.unwrap()
    }
}

pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| ((i * 31 + i / 997) % 256) as u8 ^ seed).collect()
}

fn push_pull_cancel_and_gc_on_s3(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let n = node(&bucket, clock.clone()).await;
        let r = n.get("/readyz").await;
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);

        // Monolithic config, chunked layer (three PATCHes, the first larger than a multipart part).
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let parts = [pattern(9 << 20, 1), pattern(123_457, 2), pattern(5000, 3)];
        let layer = parts.concat();
        let cd = n.push_monolithic("s3/app", &config).await;
        let ld = n.push_chunked("s3/app", &[&parts[0], &parts[1], &parts[2]]).await;
        let manifest = n
            .put_image(
                "s3/app",
                "v1",
                (&cd, config.len()),
                (&ld, layer.len()),
                "application/vnd.oci.image.layer.v1.tar+gzip",
            )
            .await;
        let stored = bucket.keys().await;
        assert_eq!(stored.len(), 2, "one object for the config, one for the layer (composed): {stored:?}");
        assert!(stored.iter().all(|k| k.starts_with("uploads/")), "{stored:?}");
        assert_eq!(stored.iter().filter(|k| k.contains("/composed-")).count(), 1, "{stored:?}");

        // Pull (redirect is off: Cairn sends the bytes): byte-identical, and a range across
        // where the first two segments met.
        let r = n.get(&format!("/v2/s3/app/blobs/{ld}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("location").is_none());
        assert!(r.bytes().await.unwrap().as_ref() == &layer[..], "the layer pulls back as pushed");
        let r = n.get(&format!("/v2/s3/app/blobs/{cd}")).await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), &config[..]);
        let (a, b) = ((9 << 20) - 10, (9 << 20) + 20);
        let r = n
            .http
            .get(format!("{}/v2/s3/app/blobs/{ld}", n.base))
            .header("Range", format!("bytes={a}-{b}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[a..=b]);
        let r = n.get("/v2/s3/app/manifests/v1").await;
        assert_eq!(r.bytes().await.unwrap().as_ref(), &manifest[..]);

        // A cancelled upload's objects are removed.
        let loc = n.start_upload("s3/app").await;
        let r = n.http.patch(&loc).body(pattern(70_000, 9)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        assert_eq!(bucket.keys().await.len(), 3, "the cancelled upload's segment is stored");
        let r = n.http.delete(absolute(&n.base, &r)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
        assert_eq!(bucket.keys().await, stored, "cancelling removed exactly its segment");

        // Deleting the image and collecting garbage past the grace empties the bucket.
        let r = n.http.delete(format!("{}/v2/s3/app/manifests/{}", n.base, digest(&manifest))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
        let mut freed = Vec::new();
        for _ in 0..3 {
            clock.advance(HOUR + Duration::from_secs(60));
            let report =
                n.state.registry.collect_garbage(&GcOptions { grace: HOUR, dry_run: false }, |_| {}).await.unwrap();
            freed.extend(report.digests);
        }
        freed.sort();
        let mut expected = vec![cd.clone(), ld.clone()];
        expected.sort();
        assert_eq!(freed, expected);
        assert_eq!(bucket.keys().await, Vec::<String>::new(), "GC left objects in the bucket");
        assert_eq!(n.get(&format!("/v2/s3/app/blobs/{ld}")).await.status(), StatusCode::NOT_FOUND);
    });
}
