//! The read cache stays within its byte budget (`[server] cache_size`) whatever is read:
//! past it single entries are evicted, answers stay right, and writes are seen at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::clock::ManualClock;
use cairn::config::ByteSize;
use reqwest::StatusCode;

use crate::helpers::*;

/// A small image manifest body unique to `n`, all sharing one config and one layer.
fn manifest(config: &str, layer: &str, n: usize) -> Vec<u8> {
    let mut m: serde_json::Value = serde_json::from_slice(&image_manifest(config, 37, &[(layer, 1000)], None)).unwrap();
    m["annotations"] = serde_json::json!({ "n": n.to_string(), "pad": "x".repeat(600) });
    serde_json::to_vec(&m).unwrap()
}

#[tokio::test]
async fn the_cache_stays_within_its_budget_and_answers_right_after_eviction() {
    const BUDGET: u64 = 64 << 10;
    const N: usize = 300;
    // The clock stands still, so nothing expires: only the budget bounds the cache.
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |c| {
        c.immutability.rules = vec![rule(None, "**", &["*"], cairn::policy::Mode::Mutable)];
        c.server.cache_size = ByteSize(BUDGET);
    })
    .await;
    let repo = "bounded/app";
    let config = app.push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = app.push_blob(repo, &random_bytes(1000)).await;
    let mut digests = Vec::new();
    for n in 0..N {
        let m = manifest(&config, &layer, n);
        let r = app.put_manifest(repo, &format!("t{n}"), OCI_MANIFEST, &m).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        digests.push(digest(&m));
    }
    // ~300 manifests of ~1 KiB, by tag and by digest: several times the budget.
    for round in 0..2 {
        for (n, d) in digests.iter().enumerate() {
            let r = app.head(&format!("/v2/{repo}/manifests/t{n}")).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()), "round {round}, t{n}");
            let r = app.get(&format!("/v2/{repo}/manifests/{d}")).await;
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(digest(&r.bytes().await.unwrap()), *d, "round {round}, {d}");
            if n % 50 == 0 {
                let size = app.state.registry.read_cache_size();
                assert!(size.bytes <= BUDGET, "{size:?}");
            }
        }
    }
    let size = app.state.registry.read_cache_size();
    assert!(size.bytes <= BUDGET && size.bytes > BUDGET / 4, "in use and within its budget: {size:?}");
    assert!(size.entries > 10 && size.entries < (2 * N) as u64, "some entries, not all: {size:?}");
    // The gauges say the same (other tests' servers share the process's recorder, so only
    // that they exist is checked).
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(text.contains("cairn_cache_size_bytes") && text.contains("cairn_cache_entries"), "{text}");

    // Writes are seen at once: a moved tag, a deleted tag.
    let hot = "t7";
    for _ in 0..3 {
        assert_eq!(
            header(&app.head(&format!("/v2/{repo}/manifests/{hot}")).await, "docker-content-digest"),
            Some(digests[7].clone())
        );
    }
    let r = app.put_manifest(repo, hot, OCI_MANIFEST, &manifest(&config, &layer, 8)).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = app.head(&format!("/v2/{repo}/manifests/{hot}")).await;
    assert_eq!(header(&r, "docker-content-digest"), Some(digests[8].clone()), "the moved tag is seen at once");
    let r = app.delete(&format!("/v2/{repo}/manifests/{hot}")).await;
    assert!(r.status().is_success(), "{}", r.status());
    let r = app.get(&format!("/v2/{repo}/manifests/{hot}")).await;
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    assert!(!app.tags(repo).await.contains(&hot.to_string()), "the deleted tag is gone from the list");
    clock.advance(Duration::from_secs(2));
    assert_eq!(app.tags(repo).await.len(), N - 1);
}

#[tokio::test]
async fn a_zero_budget_turns_the_cache_off() {
    let app = spawn_with(|c| c.server.cache_size = ByteSize(0)).await;
    let (_, d) = app.push_image("off/app", "v1").await;
    for _ in 0..3 {
        let r = app.head("/v2/off/app/manifests/v1").await;
        assert_eq!(header(&r, "docker-content-digest"), Some(d.clone()));
    }
    assert_eq!(app.state.registry.read_cache_size().entries, 0);
}
