//! Immutable tags (DESIGN §4): identical re-push accepted, a different digest refused with
//! 409 DENIED naming the rule, deletes refused, rules first-match-wins over globs, referrer
//! fallback tags exempt, conditional writes, and the race of many pushes to one new tag.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use cairn::policy::Mode;

/// Pushes a distinct small image manifest (config `cfg`, annotation `n`) under `reference`.
async fn push_variant(app: &TestApp, repo: &str, reference: &str, n: u32) -> (Response, String) {
    let cfg = app.push_blob(repo, b"{}").await;
    let mut m: Value = serde_json::from_slice(&image_manifest(&cfg, 2, &[], None)).unwrap();
    m["annotations"] = json!({ "n": n.to_string() });
    let body = serde_json::to_vec(&m).unwrap();
    let d = digest(&body);
    (app.put_manifest(repo, reference, OCI_MANIFEST, &body).await, d)
}

use reqwest::Response;

#[tokio::test]
async fn identical_repush_succeeds_and_a_different_digest_is_refused() {
    let app = spawn_app().await;
    let (r, first) = push_variant(&app, "imm/app", "v1", 1).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let (r, again) = push_variant(&app, "imm/app", "v1", 1).await;
    assert_eq!(r.status(), StatusCode::CREATED, "CI retry of the same image");
    assert_eq!(again, first);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(first.as_str()));
    let (r, second) = push_variant(&app, "imm/app", "v1", 2).await;
    let body = assert_error(r, StatusCode::CONFLICT, "DENIED").await;
    let err = &body["errors"][0];
    assert_eq!(
        err["message"],
        format!(
            "tag imm/app:v1 is immutable; it points to {first} (no [[immutability.rules]] entry matches it, and \
             unmatched tags are immutable; add a rule with mode = \"mutable\" to let it move)"
        )
    );
    assert_eq!(err["detail"], json!({ "tag": "v1", "current": first, "attempted": second, "rule": "default" }));
    // Nothing changed: the tag still resolves to the first digest, the refused manifest is absent.
    let h = app.head("/v2/imm/app/manifests/v1").await;
    assert_eq!(header(&h, "docker-content-digest").as_deref(), Some(first.as_str()));
    assert_error(app.get(&format!("/v2/imm/app/manifests/{second}")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        .await;
}

#[tokio::test]
async fn deleting_an_immutable_tag_or_its_manifest_is_refused() {
    let app = spawn_app().await;
    let (_, d) = push_variant(&app, "imm/del", "v1", 1).await;
    let body =
        assert_error(app.delete("/v2/imm/del/manifests/v1").await, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"]["current"], d);
    assert_eq!(body["errors"][0]["detail"]["attempted"], Value::Null);
    let body =
        assert_error(app.delete(&format!("/v2/imm/del/manifests/{d}")).await, StatusCode::METHOD_NOT_ALLOWED, "DENIED")
            .await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("imm/del:v1 is immutable"));
    assert_eq!(app.get("/v2/imm/del/manifests/v1").await.status(), StatusCode::OK);
    assert_eq!(app.tags("imm/del").await, ["v1"]);
}

#[tokio::test]
async fn rules_first_match_wins_over_globs() {
    let app = spawn_with(|c| {
        c.immutability.rules = vec![
            rule(Some("frozen releases"), "apps/*", &["release-*"], Mode::Immutable),
            rule(None, "apps/**", &["latest", "dev-*"], Mode::Mutable),
            rule(None, "sandbox/**", &["*"], Mode::Mutable),
        ]
    })
    .await;
    // (repository, tag, may move?, rule named in a refusal)
    let cases = [
        ("apps/web", "latest", true, ""),
        ("apps/team/web", "dev-7", true, ""),
        ("apps/web", "release-1", false, "frozen releases"),
        // `*` does not cross `/`: the nested repository falls through to the default.
        ("apps/team/web", "release-1", false, "default"),
        ("apps/web", "v1", false, "default"),
        ("sandbox/a/b/c", "anything", true, ""),
        ("sandboxed", "x", false, "default"),
    ];
    for (i, (repo, tag, mutable, rule)) in cases.into_iter().enumerate() {
        let (r, _) = push_variant(&app, repo, tag, i as u32 * 10).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let (r, _) = push_variant(&app, repo, tag, i as u32 * 10 + 1).await;
        if mutable {
            assert_eq!(r.status(), StatusCode::CREATED, "{repo}:{tag} should move");
        } else {
            let body = assert_error(r, StatusCode::CONFLICT, "DENIED").await;
            assert_eq!(body["errors"][0]["detail"]["rule"], rule, "{repo}:{tag}");
        }
    }
}

#[tokio::test]
async fn a_mutable_rule_placed_first_excludes_tags_from_a_broader_immutable_rule() {
    let app = spawn_with(|c| {
        c.immutability.rules =
            vec![rule(None, "**", &["nightly"], Mode::Mutable), rule(Some("everything"), "**", &["*"], Mode::Immutable)]
    })
    .await;
    for n in 0..3 {
        let (r, _) = push_variant(&app, "x/y", "nightly", n).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    push_variant(&app, "x/y", "stable", 0).await;
    let (r, _) = push_variant(&app, "x/y", "stable", 1).await;
    let body = assert_error(r, StatusCode::CONFLICT, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"]["rule"], "everything");
}

#[tokio::test]
async fn referrer_fallback_tags_are_exempt_by_default() {
    let app = spawn_app().await;
    let hex = "c".repeat(64);
    for tag in [
        format!("sha256-{hex}"),
        format!("sha256-{hex}.sig"),
        format!("sha256-{hex}.att"),
        format!("sha256-{hex}.sbom"),
    ] {
        for n in 0..2 {
            let (r, _) = push_variant(&app, "cosign/app", &tag, n).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{tag} should move");
        }
    }
    assert_eq!(app.delete(&format!("/v2/cosign/app/manifests/sha256-{hex}.sig")).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn referrer_fallback_tags_follow_the_rules_when_included() {
    let app = spawn_with(|c| c.immutability.include_referrer_tags = true).await;
    let tag = format!("sha256-{}.sig", "d".repeat(64));
    push_variant(&app, "cosign/strict", &tag, 0).await;
    let (r, _) = push_variant(&app, "cosign/strict", &tag, 1).await;
    assert_error(r, StatusCode::CONFLICT, "DENIED").await;
}

#[tokio::test]
async fn multi_tag_push_is_all_or_nothing_against_the_rules() {
    let app = spawn_app().await;
    let (_, first) = push_variant(&app, "multi", "taken", 1).await;
    let cfg = app.push_blob("multi", b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    let d = digest(&m);
    let r = app
        .http
        .put(app.url(&format!("/v2/multi/manifests/{d}?tag=fresh&tag=taken&tag=other")))
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    let body = assert_error(r, StatusCode::CONFLICT, "DENIED").await;
    assert_eq!(body["errors"][0]["detail"]["current"], first);
    assert_eq!(app.tags("multi").await, ["taken"], "no tag of the refused push was applied");
    assert_error(app.get(&format!("/v2/multi/manifests/{d}")).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

#[tokio::test]
async fn if_none_match_creates_only() {
    let app = spawn_mutable().await;
    let cfg = app.push_blob("cond", b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    let put = |tag: &'static str, m: Vec<u8>| {
        app.http
            .put(app.url(&format!("/v2/cond/manifests/{tag}")))
            .header("Content-Type", OCI_MANIFEST)
            .header("If-None-Match", "*")
            .body(m)
            .send()
    };
    assert_eq!(put("new", m.clone()).await.unwrap().status(), StatusCode::CREATED);
    let r = put("new", m.clone()).await.unwrap();
    assert_error(r, StatusCode::PRECONDITION_FAILED, "DENIED").await;
}

#[tokio::test]
async fn if_match_moves_a_mutable_tag_only_from_the_named_digest() {
    let app = spawn_mutable().await;
    let (_, first) = push_variant(&app, "cas", "prod", 1).await;
    let cfg = app.push_blob("cas", b"{}").await;
    let mut m: Value = serde_json::from_slice(&image_manifest(&cfg, 2, &[], None)).unwrap();
    m["annotations"] = json!({"n": "2"});
    let m = serde_json::to_vec(&m).unwrap();
    let put = |etag: String| {
        app.http
            .put(app.url("/v2/cas/manifests/prod"))
            .header("Content-Type", OCI_MANIFEST)
            .header("If-Match", etag)
            .body(m.clone())
            .send()
    };
    let stale = digest(b"not what prod points to");
    assert_error(put(format!("\"{stale}\"")).await.unwrap(), StatusCode::PRECONDITION_FAILED, "DENIED").await;
    assert_eq!(header(&app.head("/v2/cas/manifests/prod").await, "docker-content-digest").unwrap(), first);
    let etag = header(&app.head("/v2/cas/manifests/prod").await, "etag").unwrap();
    assert_eq!(put(etag.clone()).await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(header(&app.head("/v2/cas/manifests/prod").await, "docker-content-digest").unwrap(), digest(&m));
    // The old ETag no longer matches.
    assert_error(put(etag).await.unwrap(), StatusCode::PRECONDITION_FAILED, "DENIED").await;
    assert_error(put("not-a-digest".into()).await.unwrap(), StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
}

#[tokio::test]
async fn if_match_does_not_override_immutability() {
    let app = spawn_app().await;
    let (_, first) = push_variant(&app, "casimm", "v1", 1).await;
    let cfg = app.push_blob("casimm", b"{}").await;
    let m = image_manifest(&cfg, 2, &[], None);
    let r = app
        .http
        .put(app.url("/v2/casimm/manifests/v1"))
        .header("Content-Type", OCI_MANIFEST)
        .header("If-Match", format!("\"{first}\""))
        .body(m)
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::CONFLICT, "DENIED").await;
}

#[tokio::test]
async fn concurrent_pushes_of_distinct_digests_to_one_new_tag_leave_one_winner() {
    let app = spawn_app().await;
    let cfg = app.push_blob("race", b"{}").await;
    for round in 0..3 {
        let tag = format!("r{round}");
        let bodies: Vec<Vec<u8>> = (0..32)
            .map(|i| {
                let mut m: Value = serde_json::from_slice(&image_manifest(&cfg, 2, &[], None)).unwrap();
                m["annotations"] = json!({ "i": i.to_string() });
                serde_json::to_vec(&m).unwrap()
            })
            .collect();
        let tasks = bodies.iter().map(|b| app.put_manifest("race", &tag, OCI_MANIFEST, b));
        let results = futures::future::join_all(tasks).await;
        let statuses: Vec<StatusCode> = results.iter().map(|r| r.status()).collect();
        let winners: Vec<usize> = (0..32).filter(|&i| statuses[i] == StatusCode::CREATED).collect();
        assert_eq!(winners.len(), 1, "round {round}: {statuses:?}");
        assert!(statuses.iter().all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT), "{statuses:?}");
        let head = app.head(&format!("/v2/race/manifests/{tag}")).await;
        assert_eq!(header(&head, "docker-content-digest").unwrap(), digest(&bodies[winners[0]]));
        let h: Value = app.get(&format!("/api/v1/repositories/race/tags/{tag}/history")).await.json().await.unwrap();
        assert_eq!(h["events"].as_array().unwrap().len(), 1, "exactly one create recorded");
    }
}

#[tokio::test]
async fn the_rules_are_served_read_only() {
    let app = spawn_with(|c| c.immutability.rules = vec![rule(Some("moving"), "**", &["latest"], Mode::Mutable)]).await;
    let v: Value = app.get("/api/v1/policies/immutability").await.json().await.unwrap();
    assert_eq!(v["rules"], json!([{ "name": "moving", "repositories": "**", "tags": ["latest"], "mode": "mutable" }]));
    assert_eq!(v["default_mode"], "immutable");
    assert_eq!(v["include_referrer_tags"], false);
    let r = app.http.put(app.url("/api/v1/policies/immutability")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}
