//! Blob uploads: monolithic, single POST, chunked, resumable status, cancel, mount, and
//! every way an upload can be refused.

use std::time::Duration;

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn monolithic_post_then_put_round_trips() {
    let app = spawn_app().await;
    let data = random_bytes(300_000);
    let d = digest(&data);
    let loc = app.start_upload("mono/repo").await;
    assert!(loc.starts_with("/v2/mono/repo/blobs/uploads/"), "{loc}");
    let r = app.finish_upload(&loc, &d, &data).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
    assert_eq!(location(&r), format!("/v2/mono/repo/blobs/{d}"));
    let got = app.get(&format!("/v2/mono/repo/blobs/{d}")).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn single_post_with_digest() {
    let app = spawn_app().await;
    let data = random_bytes(5000);
    let d = digest(&data);
    let r =
        app.http.post(app.url(&format!("/v2/one/blobs/uploads/?digest={d}"))).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/one/blobs/{d}"));
    assert_eq!(app.get(&format!("/v2/one/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn single_post_with_wrong_digest_stores_nothing() {
    let app = spawn_app().await;
    let data = random_bytes(5000);
    let wrong = digest(b"something else");
    let r = app.http.post(app.url(&format!("/v2/one/blobs/uploads/?digest={wrong}"))).body(data).send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(app.head(&format!("/v2/one/blobs/{wrong}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        app.get("/v2/_catalog").await.json::<serde_json::Value>().await.unwrap()["repositories"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn chunked_upload_with_status_and_final_put() {
    let app = spawn_app().await;
    let data = random_bytes(250_000);
    let d = digest(&data);
    let mut loc = app.start_upload("chunked").await;
    let mut off = 0usize;
    for chunk in data.chunks(100_000) {
        let r = app.patch_chunk(&loc, off as u64, chunk).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        off += chunk.len();
        assert_eq!(header(&r, "range").unwrap(), format!("0-{}", off - 1));
        loc = location(&r);
        let s = app.get(&loc).await;
        assert_eq!(s.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&s, "range").unwrap(), format!("0-{}", off - 1));
        assert!(header(&s, "docker-upload-uuid").is_some());
    }
    let r = app.finish_upload(&loc, &d, &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = app.get(&format!("/v2/chunked/blobs/{d}")).await.bytes().await.unwrap();
    assert_eq!(got.as_ref(), data.as_slice());
}

#[tokio::test]
async fn streamed_patch_without_content_range_then_put_with_last_chunk() {
    let app = spawn_app().await;
    let data = random_bytes(70_000);
    let d = digest(&data);
    let loc = app.start_upload("stream").await;
    let r = app.http.patch(app.url(&loc)).body(data[..50_000].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "range").unwrap(), "0-49999");
    let r = app.finish_upload(&location(&r), &d, &data[50_000..]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/stream/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn out_of_order_chunk_is_416_and_changes_nothing() {
    let app = spawn_app().await;
    let data = random_bytes(2000);
    let loc = app.start_upload("ooo").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data[..1000]).await.status(), StatusCode::ACCEPTED);
    for start in [0u64, 500, 1500] {
        let r = app.patch_chunk(&loc, start, &data[1000..]).await;
        assert_eq!(header(&r, "range").as_deref(), Some("0-999"));
        let body = assert_error(r, StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID").await;
        assert!(body.to_string().contains("resume from byte 1000"), "{body}");
    }
    let s = app.get(&loc).await;
    assert_eq!(header(&s, "range").as_deref(), Some("0-999"));
    let r = app.patch_chunk(&loc, 1000, &data[1000..]).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(app.finish_upload(&loc, &digest(&data), &[]).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn content_range_that_disagrees_with_the_body_is_refused() {
    let app = spawn_app().await;
    let loc = app.start_upload("cr").await;
    assert_eq!(app.patch_chunk(&loc, 0, &[7u8; 10]).await.status(), StatusCode::ACCEPTED);
    let r = app.http.patch(app.url(&loc)).header("Content-Range", "10-99").body(vec![1u8; 50]).send().await.unwrap();
    let body = assert_error(r, StatusCode::BAD_REQUEST, "SIZE_INVALID").await;
    assert!(body.to_string().contains("resume from byte 10"), "{body}");
    // The chunk was not recorded; the session keeps its offset so the client can resume.
    let status = app.get(&loc).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range").as_deref(), Some("0-9"));
    for bad in ["bytes=x", "9-3", "12"] {
        let r = app.http.patch(app.url(&loc)).header("Content-Range", bad).body(vec![1u8; 5]).send().await.unwrap();
        assert_error(r, StatusCode::BAD_REQUEST, "BLOB_UPLOAD_INVALID").await;
    }
    assert_eq!(header(&app.get(&loc).await, "range").as_deref(), Some("0-9"));
    let mut all = vec![7u8; 10];
    all.extend([1u8; 5]);
    assert_eq!(app.patch_chunk(&loc, 10, &[1u8; 5]).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.finish_upload(&loc, &digest(&all), b"").await.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/cr/blobs/{}", digest(&all))).await.bytes().await.unwrap().as_ref(), all);
}

#[tokio::test]
async fn wrong_digest_on_finish_stores_nothing_and_keeps_the_session() {
    let app = spawn_app().await;
    let data = random_bytes(4096);
    let wrong = digest(b"other");
    let loc = app.start_upload("wrong").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data[..1000]).await.status(), StatusCode::ACCEPTED);
    let r = app.finish_upload(&loc, &wrong, &data[1000..]).await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert!(body.to_string().contains(&digest(&data)), "names the actual digest: {body}");
    assert_eq!(app.head(&format!("/v2/wrong/blobs/{wrong}")).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(app.head(&format!("/v2/wrong/blobs/{}", digest(&data))).await.status(), StatusCode::NOT_FOUND);
    // The session is where it was before the failed PUT, and the retry with the right digest works.
    let status = app.get(&loc).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range").as_deref(), Some("0-999"));
    assert_eq!(app.finish_upload(&loc, &digest(&data), &data[1000..]).await.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/wrong/blobs/{}", digest(&data))).await.bytes().await.unwrap().as_ref(), data);
}

#[tokio::test]
async fn a_closing_put_that_does_not_start_at_the_offset_is_416() {
    let app = spawn_app().await;
    let data = random_bytes(300);
    let loc = app.start_upload("close416").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data[..100]).await.status(), StatusCode::ACCEPTED);
    for start in [0u64, 50, 150] {
        let r = app
            .http
            .put(app.url(&format!("{loc}?digest={}", digest(&data))))
            .header("Content-Range", format!("{start}-{}", start + 199))
            .body(data[100..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "closing PUT starting at {start}");
        assert_eq!(header(&r, "range").as_deref(), Some("0-99"));
    }
    assert_eq!(header(&app.get(&loc).await, "range").as_deref(), Some("0-99"));
    let r = app
        .http
        .put(app.url(&format!("{loc}?digest={}", digest(&data))))
        .header("Content-Range", "100-299")
        .body(data[100..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn finish_without_or_with_bad_digest_param() {
    let app = spawn_app().await;
    let loc = app.start_upload("nodigest").await;
    let r = app.http.put(app.url(&loc)).body("abc").send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = app.finish_upload(&loc, "sha256:1234", b"abc").await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = app.finish_upload(&loc, &format!("sha512:{}", "a".repeat(128)), b"abc").await;
    assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    let r = app.finish_upload(&loc, &format!("md5:{}", "a".repeat(32)), b"abc").await;
    assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    // The session survived the refusals: it still finishes.
    assert_eq!(app.finish_upload(&loc, &digest(b"abc"), b"abc").await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_upload_ids_are_404_on_every_verb() {
    let app = spawn_app().await;
    let bogus = "/v2/x/blobs/uploads/00000000-0000-0000-0000-000000000000";
    assert_error(app.get(bogus).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(app.patch_chunk(bogus, 0, b"x").await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_error(app.finish_upload(bogus, &digest(b"x"), b"x").await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN")
        .await;
    assert_error(app.delete(bogus).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // An upload of one repository is not reachable through another.
    let loc = app.start_upload("owner").await;
    let other = loc.replace("/v2/owner/", "/v2/intruder/");
    assert_error(app.get(&other).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(app.get(&loc).await.status(), StatusCode::NO_CONTENT);
}

/// The stored segments of upload `id` (keys `uploads/<id>/...`, the blob module's layout).
async fn segments_of(app: &TestApp, id: &str) -> Vec<String> {
    app.object_keys().await.into_iter().filter(|k| k.starts_with(&format!("uploads/{id}/"))).collect()
}

#[tokio::test]
async fn cancel_upload_removes_its_bytes() {
    let app = spawn_app().await;
    let loc = app.start_upload("cancel").await;
    assert_eq!(app.patch_chunk(&loc, 0, &random_bytes(1000)).await.status(), StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().unwrap().to_string();
    assert_eq!(segments_of(&app, &id).await.len(), 1, "one segment stored");
    assert_eq!(app.delete(&loc).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(segments_of(&app, &id).await, Vec::<String>::new(), "segment left behind");
    assert_error(app.get(&loc).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
}

#[tokio::test]
async fn idle_uploads_expire_with_their_bytes() {
    let clock = std::sync::Arc::new(cairn::clock::ManualClock::new(std::time::SystemTime::now()));
    let app = spawn_with_clock(clock.clone(), |_| {}).await;
    let loc = app.start_upload("expire").await;
    assert_eq!(app.patch_chunk(&loc, 0, &random_bytes(1000)).await.status(), StatusCode::ACCEPTED);
    let fresh = app.start_upload("expire").await;
    clock.advance(Duration::from_secs(3600));
    assert_eq!(app.patch_chunk(&fresh, 0, b"abc").await.status(), StatusCode::ACCEPTED);
    let id = loc.rsplit('/').next().unwrap().to_string();
    let expired = app.state.registry.expire_uploads(Duration::from_secs(1800)).await.unwrap();
    assert_eq!(expired, 1, "only the idle upload expires");
    assert_error(app.get(&loc).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_eq!(segments_of(&app, &id).await, Vec::<String>::new(), "expired bytes left behind");
    assert_eq!(app.get(&fresh).await.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn empty_blob() {
    let app = spawn_app().await;
    let d = app.push_blob("empty", b"").await;
    let r = app.get(&format!("/v2/empty/blobs/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length").as_deref(), Some("0"));
    assert!(r.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_upload_keeps_one_copy() {
    let app = spawn_app().await;
    let data = random_bytes(2000);
    let d = app.push_blob("dup/a", &data).await;
    assert_eq!(app.push_blob("dup/b", &data).await, d);
    for repo in ["dup/a", "dup/b"] {
        assert_eq!(app.get(&format!("/v2/{repo}/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
    }
    let keys = app.object_keys().await;
    let uploads: std::collections::BTreeSet<&str> = keys.iter().filter_map(|k| k.split('/').nth(1)).collect();
    assert_eq!(uploads.len(), 1, "the second copy's segments were not removed: {keys:?}");
}

#[tokio::test]
async fn cross_repository_mount() {
    let app = spawn_app().await;
    let data = random_bytes(3000);
    let d = app.push_blob("src/repo", &data).await;
    let r = app.post(&format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(location(&r), format!("/v2/dst/repo/blobs/{d}"));
    assert_eq!(header(&r, "docker-content-digest").unwrap(), d);
    assert_eq!(app.get(&format!("/v2/dst/repo/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn mount_falls_back_to_an_upload_when_the_source_lacks_the_blob() {
    let app = spawn_app().await;
    let d = app.push_blob("has", &random_bytes(100)).await;
    let r = app.post(&format!("/v2/dst/blobs/uploads/?mount={d}&from=lacks")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert!(location(&r).starts_with("/v2/dst/blobs/uploads/"));
    assert_eq!(app.head(&format!("/v2/dst/blobs/{d}")).await.status(), StatusCode::NOT_FOUND);
    let unknown = digest(b"never pushed");
    let r = app.post(&format!("/v2/dst/blobs/uploads/?mount={unknown}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn automatic_mount_without_from() {
    let app = spawn_app().await;
    let data = random_bytes(3000);
    let d = app.push_blob("auto/src", &data).await;
    let r = app.post(&format!("/v2/auto/dst/blobs/uploads/?mount={d}")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/auto/dst/blobs/{d}")).await.bytes().await.unwrap().as_ref(), data.as_slice());
}

#[tokio::test]
async fn mount_with_bad_parameters() {
    let app = spawn_app().await;
    assert_error(app.post("/v2/m/blobs/uploads/?mount=sha256:zz").await, StatusCode::BAD_REQUEST, "DIGEST_INVALID")
        .await;
}

#[tokio::test]
async fn mount_from_an_unusable_repository_opens_an_upload() {
    use cairn::config::{GrantConfig, UserConfig};
    let hash = cairn::auth::hash_password("pw").unwrap();
    let app = spawn_with(|c| {
        c.auth.users = vec![
            UserConfig { name: "dev".into(), password_hash: hash.clone(), roles: vec![] },
            UserConfig { name: "boss".into(), password_hash: hash.clone(), roles: vec!["admin".into()] },
        ];
        c.auth.grants = vec![GrantConfig {
            subjects: vec!["dev".into()],
            repositories: "mine/**".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
    })
    .await;
    let admin_blob = random_bytes(64);
    let d = digest(&admin_blob);
    // Stored in a repository dev may not pull.
    let r = app
        .http
        .post(app.url(&format!("/v2/secret/repo/blobs/uploads/?digest={d}")))
        .basic_auth("boss", Some("pw"))
        .body(admin_blob.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let unknown_alg = format!("md5:{}", "0".repeat(32));
    for query in [
        format!("mount={d}&from=Bad..Name"),
        format!("mount={d}&from=no/such/repo"),
        format!("mount={d}&from=secret/repo"),
        format!("mount={d}&from="),
        format!("mount={unknown_alg}&from=mine/other"),
    ] {
        let r = app
            .http
            .post(app.url(&format!("/v2/mine/app/blobs/uploads/?{query}")))
            .basic_auth("dev", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{query}: an ordinary upload session");
        let loc = location(&r);
        assert!(loc.contains("/v2/mine/app/blobs/uploads/"), "{loc}");
        let status = app.http.get(app.url(&loc)).basic_auth("dev", Some("pw")).send().await.unwrap();
        assert_eq!(status.status(), StatusCode::NO_CONTENT, "{query}");
    }
    let r = app.http.head(app.url(&format!("/v2/mine/app/blobs/{d}"))).basic_auth("dev", Some("pw")).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::NOT_FOUND, "nothing was mounted from secret/repo");
}

#[tokio::test]
async fn invalid_repository_names_are_refused() {
    let app = spawn_app().await;
    for name in ["UPPER", "a..b", "-lead", "a//b", "trail-"] {
        let r = app.post(&format!("/v2/{name}/blobs/uploads/")).await;
        assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    }
    let long = vec!["a"; 130].join("/");
    assert_error(app.post(&format!("/v2/{long}/blobs/uploads/")).await, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
}

#[tokio::test]
async fn automatic_mount_only_from_repositories_the_caller_may_pull() {
    use cairn::config::{GrantConfig, UserConfig};
    let hash = cairn::auth::hash_password("pw").unwrap();
    let app = spawn_with(|c| {
        c.auth.users = vec![
            UserConfig { name: "alice".into(), password_hash: hash.clone(), roles: vec!["writer".into()] },
            UserConfig { name: "carol".into(), password_hash: hash.clone(), roles: vec![] },
        ];
        c.auth.grants = vec![GrantConfig {
            subjects: vec!["carol".into()],
            repositories: "carol/**".into(),
            actions: vec!["pull".into(), "push".into()],
        }];
    })
    .await;
    let secret = random_bytes(500);
    let d = digest(&secret);
    let r = app
        .http
        .post(app.url(&format!("/v2/secret/app/blobs/uploads/?digest={d}")))
        .basic_auth("alice", Some("pw"))
        .body(secret.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for query in [format!("mount={d}"), format!("mount={d}&from=secret/app")] {
        let r = app
            .http
            .post(app.url(&format!("/v2/carol/loot/blobs/uploads/?{query}")))
            .basic_auth("carol", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{query}: no mount from a repository carol cannot pull");
        let g = app
            .http
            .get(app.url(&format!("/v2/carol/loot/blobs/{d}")))
            .basic_auth("carol", Some("pw"))
            .send()
            .await
            .unwrap();
        assert_error(g, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
    }
    // alice may pull secret/app, so her automatic mount works.
    let r = app
        .http
        .post(app.url(&format!("/v2/alice/copy/blobs/uploads/?mount={d}")))
        .basic_auth("alice", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

/// A request that fails after a racing request committed the same upload must not remove
/// the committed blob's bytes.
#[tokio::test]
async fn a_failing_finish_that_loses_the_race_keeps_the_committed_blob() {
    let app = spawn_app().await;
    let data = b"hello".to_vec();
    let d = digest(&data);
    let loc = app.start_upload("race/up").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data).await.status(), StatusCode::ACCEPTED);
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let wrong = digest(b"something else");
    let slow = app.http.put(app.url(&format!("{loc}?digest={wrong}"))).body(reqwest::Body::wrap_stream(rx)).send();
    let slow = tokio::spawn(slow);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(app.finish_upload(&loc, &d, &[]).await.status(), StatusCode::CREATED);
    futures::SinkExt::send(&mut tx, Ok(b" world".to_vec())).await.unwrap();
    drop(tx);
    let r = slow.await.unwrap().unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let got = app.get(&format!("/v2/race/up/blobs/{d}")).await;
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice());
}

/// Several closing PUTs of one chunked upload at once (a client retrying on a timeout, or
/// two workers sharing a session): one commits, the others learn the session is gone (404
/// BLOB_UPLOAD_UNKNOWN) or see the same blob committed (201); none answers 5xx, and the blob
/// pulls byte-identical afterwards.
#[tokio::test]
async fn racing_closing_puts_of_one_upload_never_answer_5xx() {
    let app = std::sync::Arc::new(spawn_app().await);
    for round in 0..5 {
        let data = random_bytes(64 * 1024 + round);
        let d = digest(&data);
        let loc = app.start_upload("race/closing").await;
        assert_eq!(app.patch_chunk(&loc, 0, &data[..40_000]).await.status(), StatusCode::ACCEPTED);
        let tail = data[40_000..].to_vec();
        let racers: Vec<_> = (0..8)
            .map(|_| {
                let (app, loc, d, tail) = (app.clone(), loc.clone(), d.clone(), tail.clone());
                tokio::spawn(async move {
                    let r = app.finish_upload(&loc, &d, &tail).await;
                    (r.status(), r.text().await.unwrap_or_default())
                })
            })
            .collect();
        let mut created = 0;
        for racer in racers {
            let (status, body) = racer.await.unwrap();
            match status {
                StatusCode::CREATED => created += 1,
                StatusCode::NOT_FOUND => assert!(body.contains("BLOB_UPLOAD_UNKNOWN"), "round {round}: 404 {body}"),
                s => panic!("round {round}: a racing closing PUT answered {s}: {body}"),
            }
        }
        assert!(created >= 1, "round {round}: one closing PUT commits");
        let got = app.get(&format!("/v2/race/closing/blobs/{d}")).await;
        assert_eq!(got.status(), StatusCode::OK);
        assert_eq!(got.bytes().await.unwrap().as_ref(), data.as_slice(), "round {round}");
    }
}

#[tokio::test]
async fn an_interrupted_chunk_leaves_the_session_at_its_offset() {
    let app = spawn_app().await;
    let data = random_bytes(3000);
    let loc = app.start_upload("interrupted").await;
    assert_eq!(app.patch_chunk(&loc, 0, &data[..1000]).await.status(), StatusCode::ACCEPTED);
    // A body that breaks off after some bytes: the client dies mid-request.
    let first: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::copy_from_slice(&data[1000..1500]));
    let broken: Result<bytes::Bytes, std::io::Error> = Err(std::io::Error::other("client died"));
    let stream = futures::stream::iter([first, broken]);
    let sent = app
        .http
        .patch(app.url(&loc))
        .header("Content-Range", "1000-2999")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(sent.is_err() || !sent.unwrap().status().is_success(), "the broken PATCH must not succeed");
    // The session is still there with the offset it had; the client resumes from it.
    let status = app.get(&loc).await;
    assert_eq!(status.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&status, "range").as_deref(), Some("0-999"));
    assert_eq!(app.patch_chunk(&loc, 1000, &data[1000..]).await.status(), StatusCode::ACCEPTED);
    assert_eq!(app.finish_upload(&loc, &digest(&data), b"").await.status(), StatusCode::CREATED);
    assert_eq!(app.get(&format!("/v2/interrupted/blobs/{}", digest(&data))).await.bytes().await.unwrap(), data);
}
