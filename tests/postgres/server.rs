//! In-process Cairn servers on PostgreSQL over real HTTP: a push and pull round trip, and two
//! servers on one database (two nodes sharing one blob directory, as they would share a
//! bucket) racing PUTs of different manifests to the same immutable tags.

use cairn::{AppState, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::db::TempDb;
use crate::{PgTest, block_on};

pub const TESTS: &[PgTest] = &[
    PgTest { name: "push_and_pull_an_image", run: push_and_pull_an_image },
    PgTest { name: "two_nodes_race_an_immutable_tag", run: two_nodes_race_an_immutable_tag },
    PgTest { name: "two_nodes_share_their_signing_keys", run: two_nodes_share_their_signing_keys },
];

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

struct Node {
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A server on `database`, its blobs under `blobs`.
async fn node(database: &str, blobs: &std::path::Path) -> Node {
    node_with_clock(database, blobs, std::sync::Arc::new(cairn::clock::SystemClock)).await
}

/// Like [`node`], its registry asking `clock` for the time.
async fn node_with_clock(
    database: &str,
    blobs: &std::path::Path,
    clock: std::sync::Arc<dyn cairn::clock::Clock>,
) -> Node {
    node_with(database, blobs, clock, |_| {}).await
}

/// Like [`node_with_clock`], the config changed by `tweak` last.
async fn node_with(
    database: &str,
    blobs: &std::path::Path,
    clock: std::sync::Arc<dyn cairn::clock::Clock>,
    tweak: impl FnOnce(&mut Config),
) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_dir(dir.path());
    config.database.url = Some(database.to_string());
    config.storage.path = Some(blobs.to_path_buf());
    config.immutability.rules = vec![cairn::policy::immutability::RuleConfig {
        name: None,
        repositories: "**".into(),
        tags: vec!["prod".into()],
        mode: cairn::policy::Mode::Mutable,
    }];
    tweak(&mut config);
    let state = AppState::from_config_with_clock(config, clock).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(cairn::serve(listener, state, async {
        stopped.await.ok();
    }));
    Node { base, http: reqwest::Client::new(), _dir: dir, _stop: stop }
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl Node {
    async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let d = digest(bytes);
        let r = self.http.post(format!("{}/v2/{repo}/blobs/uploads/", self.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = r.headers()["location"].to_str().unwrap().to_string();
        let loc = if loc.starts_with("http") { loc } else { format!("{}{loc}", self.base) };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = self.http.put(format!("{loc}{sep}digest={d}")).body(bytes.to_vec()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        d
    }

    async fn put_manifest(&self, repo: &str, reference: &str, body: &[u8]) -> reqwest::Response {
        self.http
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("Content-Type", OCI_MANIFEST)
            .body(body.to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn head(&self, path: &str) -> reqwest::Response {
        self.http.head(format!("{}{path}", self.base)).send().await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.base)).header("Accept", OCI_MANIFEST).send().await.unwrap()
    }
}

fn image(config: &str, config_size: usize, layer: &str, layer_size: usize, note: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size }],
        "annotations": { "note": note },
    }))
    .unwrap()
}

fn push_and_pull_an_image(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let blobs = tempfile::tempdir().unwrap();
        let n = node(&db.url, blobs.path()).await;
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let layer: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let (cd, ld) = (n.push_blob("pg/app", config).await, n.push_blob("pg/app", &layer).await);
        let m = image(&cd, config.len(), &ld, layer.len(), "one");
        let r = n.put_manifest("pg/app", "v1", &m).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

        let r = n.get("/v2/pg/app/manifests/v1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest(&m));
        assert_eq!(r.bytes().await.unwrap().as_ref(), &m[..]);
        let r = n.get(&format!("/v2/pg/app/blobs/{ld}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[..]);
        let tags: Value = n.get("/v2/pg/app/tags/list").await.json().await.unwrap();
        assert_eq!(tags["tags"], json!(["v1"]));
        let history: Value = n.get("/api/v1/repositories/pg/app/tags/v1/history").await.json().await.unwrap();
        assert!(history.to_string().contains(&digest(&m)), "{history}");
        let events: Value = n.get("/api/v1/audit/events").await.json().await.unwrap();
        assert!(events.to_string().contains("manifest.put") || events.to_string().contains("tag.create"), "{events}");
    });
}

/// Two nodes PUT different manifests to the same new immutable tags at the same moment:
/// for every tag exactly one 201, the other 409 DENIED (the tag is immutable and points at
/// the winner's manifest), never a 500 or a 503; every tag then points at its winner on
/// both nodes.
fn two_nodes_race_an_immutable_tag(admin: &str) {
    block_on(async {
        let db = TempDb::create(admin).await;
        let blobs = tempfile::tempdir().unwrap();
        // A clock that never moves: no cached entry expires, so only the change feed (LISTEN/
        // NOTIFY) can make a node see the other's write.
        let frozen: std::sync::Arc<dyn cairn::clock::Clock> =
            std::sync::Arc::new(cairn::clock::ManualClock::new(std::time::SystemTime::now()));
        let (a, b) = (
            node_with_clock(&db.url, blobs.path(), frozen.clone()).await,
            node_with_clock(&db.url, blobs.path(), frozen).await,
        );
        let config = br#"{"architecture":"amd64","os":"linux"}"#;
        let cd = a.push_blob("race/app", config).await;
        let la = a.push_blob("race/app", b"layer of a").await;
        let lb = b.push_blob("race/app", b"layer of b").await;
        let ma = image(&cd, config.len(), &la, 10, "a");
        let mb = image(&cd, config.len(), &lb, 10, "b");
        for round in 0..12 {
            let tag = format!("v{round}");
            let (ra, rb) = tokio::join!(a.put_manifest("race/app", &tag, &ma), b.put_manifest("race/app", &tag, &mb));
            let (sa, sb) = (ra.status(), rb.status());
            let (ba, bb): (String, String) = (ra.text().await.unwrap(), rb.text().await.unwrap());
            let (winner, loser_body) = match (sa, sb) {
                (StatusCode::CREATED, StatusCode::CONFLICT) => (&ma, bb),
                (StatusCode::CONFLICT, StatusCode::CREATED) => (&mb, ba),
                _ => panic!("{tag}: expected one 201 and one 409, got {sa} ({ba}) and {sb} ({bb})"),
            };
            let body: Value = serde_json::from_str(&loser_body).unwrap();
            assert_eq!(body["errors"][0]["code"], "DENIED", "{body}");
            assert_eq!(body["errors"][0]["detail"]["current"], digest(winner), "{body}");
            for n in [&a, &b] {
                let r = n.get(&format!("/v2/race/app/manifests/{tag}")).await;
                assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest(winner), "{tag}");
            }
        }
        // A mutable tag moved on one node is seen on the other at once: each node read it
        // (and cached it) before the move, and the clock is frozen, so only the change feed
        // drops the other node's entry. The writer sees its own write at once; the other node
        // within the delivery of one notification (polled every ms, failed past 1 s, the
        // longest a stale digest may be served).
        let mut slowest = std::time::Duration::ZERO;
        for (writer, m) in [(&a, &ma), (&b, &mb), (&a, &ma), (&b, &mb), (&a, &ma), (&b, &mb)] {
            for n in [&a, &b] {
                let r = n.head("/v2/race/app/manifests/prod").await;
                assert!(r.status() == StatusCode::OK || r.status() == StatusCode::NOT_FOUND, "{}", r.status());
            }
            assert_eq!(writer.put_manifest("race/app", "prod", m).await.status(), StatusCode::CREATED);
            let r = writer.head("/v2/race/app/manifests/prod").await;
            assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), digest(m), "prod on its writer");
            let other = if std::ptr::eq(writer, &a) { &b } else { &a };
            let start = std::time::Instant::now();
            loop {
                let r = other.head("/v2/race/app/manifests/prod").await;
                if r.headers()["docker-content-digest"].to_str().unwrap() == digest(m) {
                    break;
                }
                assert!(
                    start.elapsed() < std::time::Duration::from_secs(1),
                    "the other node served the old prod for 1 s"
                );
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            slowest = slowest.max(start.elapsed());
        }
        eprintln!("slowest cross-node invalidation: {slowest:?}");
        let events: Value = a.get("/api/v1/audit/events?limit=1000").await.json().await.unwrap();
        assert!(events.is_object() || events.is_array(), "{events}");
    });
}

/// Two nodes with data directories of their own and no key file configured sign with the
/// keys the database holds: a token one node issued is accepted by the other, both publish
/// the same checkpoint public key, and a third node started later gets the same keys.
fn two_nodes_share_their_signing_keys(admin: &str) {
    block_on(async {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let db = TempDb::create(admin).await;
        let blobs = tempfile::tempdir().unwrap();
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let hash = a2.hash_password(b"pw", &SaltString::encode_b64(b"cairn-pg-tests").unwrap()).unwrap().to_string();
        let users = move |c: &mut Config| {
            c.auth.users = vec![cairn::config::UserConfig {
                name: "root".into(),
                password_hash: hash.clone(),
                roles: vec!["admin".into()],
            }];
        };
        let clock = || -> std::sync::Arc<dyn cairn::clock::Clock> { std::sync::Arc::new(cairn::clock::SystemClock) };
        let (a, b) = tokio::join!(
            node_with(&db.url, blobs.path(), clock(), users.clone()),
            node_with(&db.url, blobs.path(), clock(), users.clone())
        );
        let token = |n: &Node| {
            let req = n
                .http
                .get(format!("{}/token?service=cairn&scope=repository:keys/app:pull,push", n.base))
                .basic_auth("root", Some("pw"));
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let v: Value = r.json().await.unwrap();
                v["token"].as_str().unwrap().to_string()
            }
        };
        for (issuer, other) in [(&a, &b), (&b, &a)] {
            let t = token(issuer).await;
            let r =
                other.http.get(format!("{}/v2/keys/app/tags/list", other.base)).bearer_auth(&t).send().await.unwrap();
            // 404 NAME_UNKNOWN: the token was accepted, and the repository does not exist.
            assert_eq!(
                r.status(),
                StatusCode::NOT_FOUND,
                "a token of one node on the other: {}",
                r.text().await.unwrap()
            );
            let r = other
                .http
                .get(format!("{}/v2/keys/app/tags/list", other.base))
                .bearer_auth("x.y.z")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a bad token is still refused");
        }
        let key = |n: &Node| {
            let req = n.http.get(format!("{}/api/v1/audit/public-key", n.base)).basic_auth("root", Some("pw"));
            async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                r.text().await.unwrap()
            }
        };
        let (ka, kb) = (key(&a).await, key(&b).await);
        assert!(ka.contains("PUBLIC KEY"), "{ka}");
        assert_eq!(ka, kb, "both nodes sign checkpoints with one key");
        let c = node_with(&db.url, blobs.path(), clock(), users).await;
        assert_eq!(key(&c).await, ka, "a node started later");
        let t = token(&c).await;
        let r = a.http.get(format!("{}/v2/keys/app/tags/list", a.base)).bearer_auth(&t).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    });
}
