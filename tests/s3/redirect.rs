//! `[storage] redirect = true`: a blob GET answers `307 Temporary Redirect` to a presigned URL
//! of the blob's one object, which a plain HTTP client fetches straight from the bucket (the
//! exact bytes, matching the digest); HEAD, ranged GETs, an empty blob and manifests are still
//! answered by Cairn; the redirect is handed out only after Cairn's access check.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::config::UserConfig;
use cairn::service::GcOptions;
use reqwest::StatusCode;

use crate::bucket::TempBucket;
use crate::server::{Node, digest, node_with, pattern};
use crate::{S3Test, block_on};

pub const TESTS: &[S3Test] = &[
    S3Test { name: "get_answers_307_to_the_blobs_object", run: get_answers_307_to_the_blobs_object },
    S3Test { name: "the_redirect_comes_after_the_access_check", run: the_redirect_comes_after_the_access_check },
];

const HOUR: Duration = Duration::from_secs(3600);

/// A node on `bucket` with redirect on, URLs valid for `expiry`.
pub async fn redirecting_node(bucket: &TempBucket, clock: Arc<ManualClock>, expiry: Duration) -> Node {
    node_with(bucket, clock, |c| {
        c.storage.redirect = true;
        c.storage.redirect_expiry = Some(expiry);
    })
    .await
}

/// Checks a 307 for blob `d` and fetches its `Location` with a plain client (no credentials,
/// no redirects); returns the bytes the bucket sent.
pub async fn follow(r: reqwest::Response, bucket: &TempBucket, d: &str, expiry: Duration) -> Vec<u8> {
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT, "{:?}", r.headers());
    let h = r.headers().clone();
    assert_eq!(h["docker-content-digest"], d);
    assert_eq!(h["content-length"], "0");
    assert_eq!(h["cache-control"], "no-store");
    assert!(r.bytes().await.unwrap().is_empty());
    let loc = h["location"].to_str().unwrap().to_string();
    let s = &bucket.settings;
    let object = format!("{}/{}/uploads/", s.endpoint.as_deref().unwrap(), s.bucket);
    assert!(loc.starts_with(&object), "not a URL of an object in the bucket: {loc}");
    assert!(loc.contains("X-Amz-Signature="), "not presigned: {loc}");
    assert!(loc.contains(&format!("X-Amz-Expires={}", expiry.as_secs())), "expiry not as configured: {loc}");
    let plain = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let got = plain.get(&loc).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK, "the presigned URL does not serve: {loc}");
    got.bytes().await.unwrap().to_vec()
}

fn get_answers_307_to_the_blobs_object(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let expiry = Duration::from_secs(120);
        let n = redirecting_node(&bucket, clock.clone(), expiry).await;
        let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
        let parts = [pattern(300_000, 4), pattern(70_001, 5), pattern(17, 6)];
        let layer = parts.concat();
        let cd = n.push_monolithic("r/app", &config).await;
        let ld = n.push_chunked("r/app", &[&parts[0], &parts[1], &parts[2]]).await;
        let keys = bucket.keys().await;
        assert_eq!(keys.len(), 2, "one object per blob, the chunked one composed: {keys:?}");

        // GET: 307 to the one object; the bucket serves the exact bytes.
        for (d, bytes) in [(&ld, &layer), (&cd, &config)] {
            let got = follow(n.get(&format!("/v2/r/app/blobs/{d}")).await, &bucket, d, expiry).await;
            assert!(&got == bytes, "the redirect's bytes differ from what was pushed");
            assert_eq!(&digest(&got), d);
        }

        // HEAD: answered by Cairn.
        let r = n.http.head(format!("{}/v2/r/app/blobs/{ld}", n.base)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.headers().get("location").is_none());
        assert_eq!(r.headers()["content-length"], layer.len().to_string());
        assert_eq!(r.headers()["docker-content-digest"], ld.as_str());

        // A range: served by Cairn (206), not redirected.
        let r = n
            .http
            .get(format!("{}/v2/r/app/blobs/{ld}", n.base))
            .header("Range", "bytes=299990-300009")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &layer[299_990..300_010]);

        // The empty blob is no object: served by Cairn.
        let ed = n.push_monolithic("r/app", b"").await;
        let r = n.get(&format!("/v2/r/app/blobs/{ed}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().len(), 0);

        // Manifests are never redirected; an unknown blob is 404.
        let manifest = n
            .put_image("r/app", "v1", (&cd, config.len()), (&ld, layer.len()), "application/vnd.oci.image.layer.v1.tar")
            .await;
        let r = n.get("/v2/r/app/manifests/v1").await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().as_ref(), &manifest[..]);
        let unknown = digest(b"never pushed");
        assert_eq!(n.get(&format!("/v2/r/app/blobs/{unknown}")).await.status(), StatusCode::NOT_FOUND);

        // Deleted and collected: nothing left in the bucket, and no redirect to a dead object.
        let r = n.http.delete(format!("{}/v2/r/app/manifests/{}", n.base, digest(&manifest))).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        for _ in 0..2 {
            clock.advance(HOUR + Duration::from_secs(60));
            n.state.registry.collect_garbage(&GcOptions { grace: HOUR, dry_run: false }, |_| {}).await.unwrap();
        }
        assert_eq!(bucket.keys().await, Vec::<String>::new(), "GC left objects in the bucket");
        assert_eq!(n.get(&format!("/v2/r/app/blobs/{ld}")).await.status(), StatusCode::NOT_FOUND);
    });
}

/// A cheap argon2id hash of `pw` (the server verifies with the parameters in the hash).
fn cheap_hash(pw: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    a2.hash_password(pw.as_bytes(), &SaltString::encode_b64(b"cairn-s3-tests").unwrap()).unwrap().to_string()
}

fn the_redirect_comes_after_the_access_check(endpoint: &str) {
    block_on(async {
        let bucket = TempBucket::create(endpoint).await;
        let clock = Arc::new(ManualClock::new(SystemTime::now()));
        let expiry = Duration::from_secs(300);
        let n = node_with(&bucket, clock, |c| {
            c.storage.redirect = true;
            c.auth.users = vec![
                UserConfig { name: "root".into(), password_hash: cheap_hash("pw"), roles: vec!["admin".into()] },
                UserConfig { name: "nobody".into(), password_hash: cheap_hash("pw"), roles: vec![] },
            ];
        })
        .await;
        let bytes = pattern(5000, 7);
        let d = digest(&bytes);
        let r = n
            .http
            .post(format!("{}/v2/private/app/blobs/uploads/?digest={d}", n.base))
            .basic_auth("root", Some("pw"))
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let url = format!("{}/v2/private/app/blobs/{d}", n.base);

        let r = n.http.get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "anonymous");
        assert!(r.headers().get("location").is_none());
        let r = n.http.get(&url).basic_auth("nobody", Some("pw")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a user without pull");
        assert!(r.headers().get("location").is_none());
        let r = n.http.get(&url).basic_auth("root", Some("pw")).send().await.unwrap();
        assert_eq!(follow(r, &bucket, &d, expiry).await, bytes, "the default expiry is 5m");
    });
}
