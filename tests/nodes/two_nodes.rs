//! Two real `cairn serve` processes on one database and one bucket.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::Value;

use crate::bucket::TempBucket;
use crate::bucket::backend::TempDb;
use crate::support::*;
use crate::{NodesTest, block_on};

pub const TESTS: &[NodesTest] =
    &[NodesTest { name: "two_processes_are_one_registry", run: two_processes_are_one_registry }];

/// `root` (admin, password `pw`); anonymous may pull, push and delete under `open/**`; `prod`
/// is mutable, every other tag immutable.
const CONFIG: &str = r#"
[[auth.users]]
name = "root"
password_hash = "{HASH}"
roles = ["admin"]

[[auth.grants]]
subjects = ["anonymous"]
repositories = "open/**"
actions = ["pull", "push", "delete"]

[[immutability.rules]]
repositories = "**"
tags = ["prod"]
mode = "mutable"
"#;

/// The config file and the environment of one node on `db` and `bucket`.
fn node_env(db: &TempDb, bucket: &TempBucket) -> Vec<(&'static str, String)> {
    let s = &bucket.settings;
    let (id, secret) = s.keys.clone().unwrap();
    vec![
        ("CAIRN_DATABASE_URL", db.url.clone()),
        ("CAIRN_STORAGE__KIND", "s3".into()),
        ("CAIRN_STORAGE__BUCKET", s.bucket.clone()),
        ("CAIRN_STORAGE__ENDPOINT", s.endpoint.clone().unwrap()),
        ("CAIRN_STORAGE__REGION", "us-east-1".into()),
        ("CAIRN_STORAGE__PATH_STYLE", "true".into()),
        ("CAIRN_STORAGE__ACCESS_KEY_ID", id),
        ("CAIRN_STORAGE__SECRET_ACCESS_KEY", secret),
    ]
}

fn password_hash() -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a2.hash_password(b"pw", &SaltString::encode_b64(b"cairn-node-tests").unwrap()).unwrap().to_string()
}

async fn start_node(root: &Path, name: &str, config: &Path, env: &[(&'static str, String)]) -> Server {
    let data = root.join(name).join("data");
    std::fs::create_dir_all(&data).unwrap();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Server::start_with(&data, Some(config), &env).await
}

async fn head_digest(http: &Client, srv: &Server, repo: &str, reference: &str) -> Option<String> {
    let r = http
        .head(srv.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    match r.status() {
        StatusCode::OK => Some(header(&r, "docker-content-digest")),
        StatusCode::NOT_FOUND => None,
        s => panic!("HEAD {repo}:{reference}: {s}"),
    }
}

async fn token(http: &Client, srv: &Server, scope: &str) -> String {
    let r = http
        .get(srv.url(&format!("/token?service=cairn&scope={scope}")))
        .basic_auth("root", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "token from {}", srv.base);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

fn two_processes_are_one_registry(database: &str, endpoint: &str) {
    block_on(async {
        let db = TempDb::create(database).await;
        let bucket = TempBucket::create(endpoint).await;
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("cairn.toml");
        std::fs::write(&config, CONFIG.replace("{HASH}", &password_hash())).unwrap();
        let env = node_env(&db, &bucket);
        let a = start_node(root.path(), "a", &config, &env).await;
        let b = start_node(root.path(), "b", &config, &env).await;
        let http = client();
        let repo = "open/app";

        // A chunked upload started on A continues and finishes on B; both serve the blob.
        let layer = random_bytes(3 * 1024 * 1024 + 17);
        let layer_digest = sha256(&layer);
        let (one, rest) = layer.split_at(1024 * 1024);
        let (two, three) = rest.split_at(1024 * 1024);
        let loc = start_upload(&http, &a, repo).await;
        let loc = patch_chunk(&http, &a, &loc, 0, one).await;
        assert_eq!(upload_range(&http, &b, &loc).await, format!("0-{}", one.len() - 1), "B sees A's upload");
        let loc = patch_chunk(&http, &b, &loc, one.len() as u64, two).await;
        finish_upload(&http, &b, repo, &loc, &layer_digest, three).await;
        assert_blob(&http, &a, repo, &layer_digest, &layer).await;
        assert_blob(&http, &b, repo, &layer_digest, &layer).await;

        // 32 concurrent PUTs of different manifests to one new immutable tag, 16 per node:
        // exactly one 201, 31 409 DENIED naming the winner, one history event.
        let config_blob = br#"{"architecture":"amd64","os":"linux"}"#;
        let config_digest = push_blob(&http, &a, repo, config_blob).await;
        let mut bodies = Vec::new();
        for i in 0..32 {
            let l = format!("layer {i}").into_bytes();
            let d = push_blob(&http, if i % 2 == 0 { &a } else { &b }, repo, &l).await;
            bodies.push(image_manifest((&config_digest, config_blob.len()), &[(&d, l.len())]));
        }
        let puts = bodies.iter().enumerate().map(|(i, body)| {
            let (http, srv) = (http.clone(), if i % 2 == 0 { &a } else { &b });
            let req = http
                .put(srv.url(&format!("/v2/{repo}/manifests/v1.0.0")))
                .header("content-type", OCI_MANIFEST)
                .body(body.clone());
            async move {
                let r = req.send().await.unwrap();
                let status = r.status();
                (status, r.text().await.unwrap())
            }
        });
        let results = futures::future::join_all(puts).await;
        let winners: Vec<usize> = (0..32).filter(|&i| results[i].0 == StatusCode::CREATED).collect();
        assert_eq!(winners.len(), 1, "exactly one winner: {results:?}");
        let winner = sha256(&bodies[winners[0]]);
        for (i, (status, text)) in results.iter().enumerate() {
            if i == winners[0] {
                continue;
            }
            assert_eq!(*status, StatusCode::CONFLICT, "PUT {i}: {text}");
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(v["errors"][0]["code"], "DENIED", "{text}");
            assert_eq!(v["errors"][0]["detail"]["current"], winner.as_str(), "{text}");
        }
        for n in [&a, &b] {
            assert_eq!(head_digest(&http, n, repo, "v1.0.0").await.as_deref(), Some(winner.as_str()));
        }
        let auth = token(&http, &a, "repository:open/app:pull").await;
        let r = http
            .get(b.url(&format!("/api/v1/repositories/{repo}/tags/v1.0.0/history")))
            .basic_auth("root", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let history: Value = r.json().await.unwrap();
        let events = history["events"].as_array().unwrap_or_else(|| panic!("{history}"));
        assert_eq!(events.len(), 1, "one history event for the one winner: {history}");

        // prod moved on one node is seen by HEAD on the other within a second, every time.
        let mut slowest = Duration::ZERO;
        for (i, body) in bodies.iter().take(6).enumerate() {
            let (writer, other) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
            // Both nodes have prod cached before the move.
            head_digest(&http, writer, repo, "prod").await;
            head_digest(&http, other, repo, "prod").await;
            let d = put_manifest(&http, writer, repo, "prod", body).await;
            let start = Instant::now();
            while head_digest(&http, other, repo, "prod").await.as_deref() != Some(d.as_str()) {
                // The cache entry itself expires after 1 s; within half that, only the change feed
                // can have dropped it.
                assert!(
                    start.elapsed() < Duration::from_millis(500),
                    "node {} served the old prod for 0.5 s",
                    other.base
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            slowest = slowest.max(start.elapsed());
        }
        eprintln!("slowest cross-node view of a moved tag: {slowest:?}");

        // A token issued by A is accepted by B (one signing key for both, from the database).
        let r = http.get(b.url(&format!("/v2/{repo}/tags/list"))).bearer_auth(&auth).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "B refused A's token: {}", r.text().await.unwrap());
        let private = token(&http, &b, "repository:private/x:pull,push").await;
        let r = http.get(a.url("/v2/private/x/tags/list")).bearer_auth(&private).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "A accepts B's token (and private/x does not exist)");
        let r = http.get(a.url("/v2/private/x/tags/list")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "without it, A asks for one");

        // The whole registry is in the bucket, not in either node's data directory.
        let keys = bucket.keys().await;
        assert!(keys.iter().any(|k| k.starts_with("uploads/")), "{keys:?}");
        for n in [&a, &b] {
            let local = files_under(&n.data_dir);
            assert!(local.iter().all(|p| !p.to_string_lossy().contains("uploads")), "{local:?}");
        }
    });
}
