//! Retention and rollback over real HTTP with a `ManualClock`: a CD-style sequence planned and
//! applied (REST, service and the real CLI), manual deletes inside a rollback window (refused,
//! forced), rollback by steps and by digest with every refusal, and every bad input.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::Config;
use cairn::clock::{Clock, ManualClock};
use cairn::meta::EventFilter;
use cairn::policy::Mode;
use cairn::policy::retention::PolicyConfig;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::auth::{PW, arg, cairn_cli_async, pw_hash};
use crate::helpers::*;

const DAY: Duration = Duration::from_secs(86_400);

fn policy(repos: &str) -> PolicyConfig {
    PolicyConfig {
        name: Some("apps".into()),
        repositories: repos.into(),
        keep_last: None,
        keep_within: None,
        keep_tags: vec![],
        keep_pulled_within: None,
        untagged_grace: None,
        rollback_window: None,
    }
}

/// Tags `prod` and `staging` are mutable, everything else immutable (releases).
fn cd_config(c: &mut Config) {
    c.immutability.rules = vec![rule(None, "**", &["prod", "staging"], Mode::Mutable)];
    let mut p = policy("apps/**");
    p.keep_last = Some(3);
    p.keep_pulled_within = Some(7 * DAY);
    c.retention.policies = vec![p];
}

async fn spawn_clocked(tweak: impl FnOnce(&mut Config)) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(SystemTime::now() - 100 * DAY));
    let app = spawn_with_clock(clock.clone(), tweak).await;
    (app, clock)
}

async fn pull(app: &TestApp, repo: &str, reference: &str) -> (StatusCode, Vec<u8>) {
    let r = app
        .http
        .get(app.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Accept", OCI_MANIFEST)
        .send()
        .await
        .unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

/// Pulls an image whole: its manifest, config and every layer, each checked against its digest.
async fn pull_whole(app: &TestApp, repo: &str, reference: &str) {
    let (status, body) = pull(app, repo, reference).await;
    assert_eq!(status, StatusCode::OK, "{repo}@{reference}");
    let m: Value = serde_json::from_slice(&body).unwrap();
    let descriptors = std::iter::once(&m["config"]).chain(m["layers"].as_array().into_iter().flatten());
    for d in descriptors {
        let digest = d["digest"].as_str().unwrap();
        let r = app.get(&format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}: blob {digest} of {reference}");
        assert_eq!(crate::helpers::digest(&r.bytes().await.unwrap()), digest, "{repo}: blob {digest} is intact");
    }
}

async fn events(app: &TestApp, action: &str) -> Vec<cairn::audit::Event> {
    let f = EventFilter { action: Some(action.into()), ..Default::default() };
    app.state.meta.events(&f, 10_000).await.unwrap()
}

/// A signature-like artifact with `subject`.
async fn push_referrer(app: &TestApp, repo: &str, subject: &str) -> String {
    let cfg = app.push_blob(repo, b"{}").await;
    let layer = app.push_blob(repo, &random_bytes(50)).await;
    let m = image_manifest(&cfg, 2, &[(&layer, 50)], Some(subject));
    let d = digest(&m);
    let r = app.put_manifest(repo, &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    d
}

/// 20 releases a day apart, `prod` moved to every second one (10 settings), a signature on v20
/// and one on v1, pulls of v3 (recent) and v5 (old). Returns the manifests by release number.
async fn cd_sequence(app: &TestApp, clock: &ManualClock, repo: &str) -> Vec<(Vec<u8>, String)> {
    let mut releases = vec![(vec![], String::new())];
    for i in 1..=20 {
        clock.advance(DAY);
        let (body, d) = app.push_image(repo, &format!("v{i}")).await;
        if i % 2 == 0 {
            clock.advance(Duration::from_secs(60));
            let r = app.put_manifest(repo, "prod", OCI_MANIFEST, &body).await;
            assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        }
        if i == 5 || i == 18 {
            let dd = releases.get(3).map(|(_, d): &(Vec<u8>, String)| d.clone()).unwrap_or_default();
            let target = if i == 5 { d.clone() } else { dd };
            assert_eq!(pull(app, repo, &target).await.0, StatusCode::OK);
            app.state.registry.flush_pulls().await.unwrap();
        }
        releases.push((body, d));
    }
    push_referrer(app, repo, &releases[20].1).await;
    push_referrer(app, repo, &releases[1].1).await;
    releases
}

fn entry<'a>(plan: &'a Value, kind: &str, key: &str, value: &str) -> &'a Value {
    plan["repositories"][0][kind].as_array().unwrap().iter().find(|e| e[key] == value).unwrap_or_else(|| {
        panic!("no {kind} entry {value} in {plan:#}");
    })
}

#[tokio::test]
async fn a_cd_sequence_is_planned_and_applied_without_touching_a_rollback_target() {
    let (app, clock) = spawn_clocked(cd_config).await;
    let repo = format!("apps/web{}", uniq());
    let rel = cd_sequence(&app, &clock, &repo).await;
    clock.advance(DAY);

    let r = app.get("/api/v1/retention/plan").await;
    assert_eq!(r.status(), StatusCode::OK);
    let plan: Value = r.json().await.unwrap();
    assert_eq!(plan["repositories"][0]["repository"], repo.as_str());
    assert_eq!(plan["repositories"][0]["policy"], "apps");
    let tag = |t: &str| entry(&plan, "tags", "tag", t);
    assert_eq!(tag("prod")["decision"], "keep");
    assert_eq!(tag("prod")["reasons"][0], "kept: rollback window of prod, 1 of 3");
    assert_eq!(tag("v20")["reasons"][0], "kept: one of the last 3 releases, 1 of 3");
    assert_eq!(tag("v19")["decision"], "keep");
    assert_eq!(tag("v18")["decision"], "keep");
    assert!(
        tag("v3")["reasons"].as_array().unwrap().iter().any(|r| r.as_str().unwrap().starts_with("kept: pulled ")),
        "{}",
        tag("v3")
    );
    let v16 = tag("v16");
    assert_eq!(v16["decision"], "delete");
    assert_eq!(v16["reasons"][0], "delete: not among the last 3 pushed");
    let v5 = tag("v5");
    assert!(v5["reasons"][1].as_str().unwrap().starts_with("delete: last pulled "), "{v5}");
    let m16 = entry(&plan, "manifests", "digest", &rel[16].1);
    assert_eq!(m16["decision"], "keep");
    assert_eq!(m16["reasons"], json!(["kept: rollback window of prod, 3 of 3"]));
    let m1 = entry(&plan, "manifests", "digest", &rel[1].1);
    assert_eq!(m1["decision"], "delete");
    let kept_tags: BTreeSet<&str> = ["prod", "v20", "v19", "v18", "v3"].into();
    let summary = &plan["summary"];
    assert_eq!((summary["tags_deleted"].as_u64(), summary["tags_kept"].as_u64()), (Some(16), Some(5)), "{summary}");
    // 15 release manifests and the signature of v1; kept: v20 (+ its signature), v19, v18, v16, v3.
    assert_eq!((summary["manifests_deleted"].as_u64(), summary["manifests_kept"].as_u64()), (Some(16), Some(6)));
    assert!(summary["bytes"].as_u64().unwrap() > 15 * 1000, "{summary}");
    // The same state gives the same plan.
    let again: Value = app.get("/api/v1/retention/plan").await.json().await.unwrap();
    assert_eq!(again["repositories"], plan["repositories"]);

    let r = app.http.post(app.url("/api/v1/retention/apply")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let applied: Value = r.json().await.unwrap();
    let report = &applied["report"];
    assert_eq!(
        (report["tags_deleted"].as_u64(), report["manifests_deleted"].as_u64(), report["kept_on_recheck"].as_u64()),
        (Some(16), Some(16), Some(0)),
        "{report}"
    );
    assert_eq!(report["bytes"], summary["bytes"]);

    let tags: BTreeSet<String> = app.tags(&repo).await.into_iter().collect();
    assert_eq!(tags, kept_tags.iter().map(|t| t.to_string()).collect());
    for i in [3, 16, 18, 19, 20] {
        let (status, body) = pull(&app, &repo, &rel[i].1).await;
        assert_eq!((status, body == rel[i].0), (StatusCode::OK, true), "release {i} pulls byte-identical");
    }
    for i in [1, 2, 4, 5, 15, 17] {
        assert_eq!(pull(&app, &repo, &rel[i].1).await.0, StatusCode::NOT_FOUND, "release {i} was deleted");
    }
    let deletions = events(&app, "retention.delete").await;
    assert_eq!(deletions.len(), 32);
    let v16_event = deletions.iter().find(|e| e.tag.as_deref() == Some("v16")).expect("v16's deletion");
    assert_eq!(v16_event.previous_digest.as_deref(), Some(rel[16].1.as_str()));
    assert_eq!(v16_event.detail["reasons"][0], "delete: not among the last 3 pushed");
    assert_eq!((v16_event.actor.as_str(), v16_event.detail["trigger"].as_str()), ("anonymous", Some("api")));
    // What the plan said would be freed is what is freed: the deleted manifests' bodies now,
    // and their blobs that nothing else uses once GC's grace has passed.
    let bodies: u64 = plan["repositories"][0]["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["decision"] == "delete")
        .map(|m| m["size"].as_u64().unwrap())
        .sum();
    clock.advance(Duration::from_secs(2 * 3600));
    let options = cairn::service::GcOptions { grace: Duration::from_secs(3600), dry_run: false };
    let gc = app.state.registry.collect_garbage(&options, |_| {}).await.unwrap();
    assert!(gc.blobs > 0, "{gc:?}");
    assert_eq!(gc.bytes + bodies, summary["bytes"].as_u64().unwrap(), "freed bytes match the plan: {gc:?}");
    for i in [3, 16, 18, 19, 20] {
        let (status, body) = pull(&app, &repo, &rel[i].1).await;
        assert_eq!((status, body == rel[i].0), (StatusCode::OK, true), "release {i} still pulls after GC");
        pull_whole(&app, &repo, &rel[i].1).await;
    }
    // Nothing is left to delete.
    let (_, second) =
        app.state.registry.retention_apply(None, &actor(), cairn::service::Trigger::Cli, |_| {}).await.unwrap();
    assert_eq!((second.tags_deleted, second.manifests_deleted), (0, 0));

    // Roll prod back one step, then check `?at=` before and after.
    let before = rfc3339(clock.now());
    clock.advance(Duration::from_secs(60));
    let r = rollback(&app, &repo, "prod", json!({"steps": 1}), Some(&rel[20].1)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let done: Value = r.json().await.unwrap();
    assert_eq!((done["from"].as_str(), done["to"].as_str()), (Some(rel[20].1.as_str()), Some(rel[18].1.as_str())));
    assert_eq!((done["position"].as_u64(), done["window"].as_u64()), (Some(2), Some(3)));
    let then: Value =
        app.get(&format!("/api/v1/repositories/{repo}/tags/prod?at={before}")).await.json().await.unwrap();
    assert_eq!(then["digest"], rel[20].1.as_str(), "{then}");
    assert_eq!(pull(&app, &repo, "prod").await.1, rel[18].0);
    let moves = events(&app, "tag.move").await;
    let last = moves.last().unwrap();
    assert_eq!(last.detail["rollback"]["request"], json!({"steps": 1}));
    // The window is now v18, v20, v16: v16 by digest is inside, v14 (deleted) is not.
    let r = rollback(&app, &repo, "prod", json!({"to": rel[16].1}), None).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = rollback(&app, &repo, "prod", json!({"to": rel[14].1}), None).await;
    let p = assert_problem(r, StatusCode::CONFLICT, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("is outside the rollback window of prod"), "{p}");
}

fn actor() -> cairn::service::Actor {
    cairn::service::Actor { name: "test".into(), address: None }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

async fn rollback(app: &TestApp, repo: &str, tag: &str, body: Value, if_match: Option<&str>) -> reqwest::Response {
    rollback_as(app, None, repo, tag, body.to_string(), if_match).await
}

async fn rollback_as(
    app: &TestApp,
    user: Option<&str>,
    repo: &str,
    tag: &str,
    body: String,
    if_match: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .http
        .post(app.url(&format!("/api/v1/repositories/{repo}/tags/{tag}/rollback")))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(u) = user {
        req = req.basic_auth(u, Some(PW));
    }
    if let Some(m) = if_match {
        req = req.header("If-Match", format!("\"{m}\""));
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn apply_re_checks_each_deletion_against_the_state_now() {
    let (app, clock) = spawn_clocked(|c| {
        c.immutability.rules = vec![rule(None, "**", &["*"], Mode::Mutable)];
        let mut p = policy("**");
        p.keep_last = Some(1);
        p.rollback_window = Some(0);
        c.retention.policies = vec![p];
    })
    .await;
    let repo = format!("re{}", uniq());
    let (_, a) = app.push_image(&repo, "a").await;
    clock.advance(DAY);
    let (_, b) = app.push_image(&repo, "b").await;
    clock.advance(DAY);
    app.push_image(&repo, "c").await;
    let plan = app.state.registry.retention_plan(None).await.unwrap();
    assert_eq!(plan.summary.tags_deleted, 2, "{plan:#?}");
    // Since planning: `a` moves to another image; `b` stays as planned.
    clock.advance(DAY);
    let (_, a2) = app.push_image(&repo, "a").await;
    let r = app.state.registry.apply_plan(&plan, &actor(), cairn::service::Trigger::Cli, |_| {}).await.unwrap();
    // Deleted: b and its manifest. Kept: tag a (moved), a's old manifest (untagged now).
    assert_eq!((r.tags_deleted, r.manifests_deleted, r.kept_on_recheck), (1, 1, 2), "{r:?}");
    let tags: BTreeSet<String> = app.tags(&repo).await.into_iter().collect();
    assert_eq!(tags, ["a", "c"].iter().map(|s| s.to_string()).collect());
    assert_eq!(pull(&app, &repo, &a).await.0, StatusCode::OK);
    assert_eq!(pull(&app, &repo, &a2).await.0, StatusCode::OK);
    assert_eq!(pull(&app, &repo, &b).await.0, StatusCode::NOT_FOUND);
}

/// Scheduled retention shares the GC lock: while another node (or collector) holds it, a
/// scheduled run does nothing and says so; once it is free, the run applies the policies.
#[tokio::test]
async fn scheduled_retention_waits_for_the_maintenance_lock() {
    let (app, clock) = spawn_clocked(|c| {
        c.immutability.rules = vec![rule(None, "**", &["*"], Mode::Mutable)];
        let mut p = policy("**");
        p.keep_last = Some(1);
        p.rollback_window = Some(0);
        c.retention.policies = vec![p];
    })
    .await;
    let repo = format!("sched{}", uniq());
    app.push_image(&repo, "a").await;
    clock.advance(DAY);
    app.push_image(&repo, "b").await;
    // A holder on another node: not a process of this machine, so never taken over early.
    let other = "other-node/-/1/lock";
    let now = clock.now();
    assert!(app.state.meta.gc_lock(other, now, now + DAY).await.unwrap());
    let skipped = app.state.registry.scheduled_retention().await.unwrap();
    assert!(skipped.is_none(), "ran while another node held the lock: {skipped:?}");
    assert_eq!(app.tags(&repo).await.len(), 2, "nothing deleted while skipped");
    app.state.meta.gc_unlock(other).await.unwrap();
    let ran = app.state.registry.scheduled_retention().await.unwrap().expect("ran once the lock was free");
    assert_eq!(ran.tags_deleted, 1, "{ran:?}");
    assert_eq!(app.tags(&repo).await, vec!["b".to_string()]);
    // The run released the lock: a collector can take it at once.
    let r = app.state.registry.collect_garbage(&cairn::service::GcOptions { grace: DAY, dry_run: false }, |_| {}).await;
    assert!(!r.unwrap().busy, "the lock stayed held after the scheduled run");
}

const USERS: &str = r#"
[[auth.users]]
name = "root"
password_hash = "{HASH}"
roles = ["admin"]
[[auth.users]]
name = "wri"
password_hash = "{HASH}"
roles = ["writer"]
[[auth.users]]
name = "rea"
password_hash = "{HASH}"
roles = ["reader"]
[[auth.users]]
name = "aud"
password_hash = "{HASH}"
roles = ["auditor"]
[[auth.grants]]
subjects = ["wri"]
repositories = "**"
actions = ["delete"]
"#;

/// Users root (admin), wri (writer, delete), rea (reader), aud (auditor); every tag mutable;
/// a policy over `apps/**` with the default window of 3.
async fn spawn_users() -> (TestApp, Arc<ManualClock>) {
    let users = crate::auth::load_config(&USERS.replace("{HASH}", pw_hash()));
    spawn_clocked(move |c| {
        c.auth = users.auth.clone();
        c.immutability.rules = vec![rule(None, "**", &["*"], Mode::Mutable)];
        c.retention.policies = vec![policy("apps/**")];
    })
    .await
}

async fn as_user(app: &TestApp, user: &str, method: reqwest::Method, path: &str) -> reqwest::Response {
    app.http.request(method, app.url(path)).basic_auth(user, Some(PW)).send().await.unwrap()
}

async fn push_as(app: &TestApp, repo: &str, tag: &str) -> (Vec<u8>, String) {
    let cfg = digest(br#"{"architecture":"amd64","os":"linux"}"#);
    let layer_bytes = random_bytes(300);
    let layer = digest(&layer_bytes);
    for (d, bytes) in [(&cfg, br#"{"architecture":"amd64","os":"linux"}"#.to_vec()), (&layer, layer_bytes.clone())] {
        let r = as_user(app, "root", reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await;
        let loc = location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = app
            .http
            .put(app.url(&format!("{loc}{sep}digest={d}")))
            .basic_auth("root", Some(PW))
            .body(bytes)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let m = image_manifest(&cfg, 37, &[(&layer, 300)], None);
    // An empty tag pushes by digest.
    let reference = if tag.is_empty() { digest(&m) } else { tag.to_string() };
    let r = app
        .http
        .put(app.url(&format!("/v2/{repo}/manifests/{reference}")))
        .basic_auth("root", Some(PW))
        .header("Content-Type", OCI_MANIFEST)
        .body(m.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let d = digest(&m);
    (m, d)
}

#[tokio::test]
async fn a_manual_delete_inside_a_window_is_refused_unless_an_admin_forces_it_with_a_reason() {
    let (app, _clock) = spawn_users().await;
    let repo = "apps/win";
    let (_, a) = push_as(&app, repo, "prod").await;
    let (_, b) = push_as(&app, repo, "prod").await;
    let (_, c) = push_as(&app, repo, "prod").await;
    let (_, loose) = push_as(&app, repo, "").await;
    use reqwest::Method as M;
    let del = |who: &'static str, path: String| {
        let app = &app;
        async move { as_user(app, who, M::DELETE, &path).await }
    };

    let r = del("wri", format!("/v2/{repo}/manifests/{a}")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.contains("inside the rollback window of prod (3 of 3)") && msg.contains("force=true"), "{msg}");
    assert_eq!(body["errors"][0]["detail"]["window"], json!({"tag": "prod", "position": 3, "size": 3}));
    let r = del("wri", format!("/v2/{repo}/manifests/prod")).await;
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("rollback window of prod (1 of 3)"), "{body}");

    let r = del("wri", format!("/v2/{repo}/manifests/{a}?force=true&reason=cve")).await;
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("needs the admin role"), "{body}");
    let r = del("root", format!("/v2/{repo}/manifests/{a}?force=true")).await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("needs a reason"), "{body}");
    let r = del("root", format!("/v2/{repo}/manifests/{a}?force=true&reason=%20")).await;
    assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    let r = del("root", format!("/v2/{repo}/manifests/{a}?force=yes&reason=x")).await;
    let body = assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("use force=true"), "{body}");
    // Refusals are ledgered; nothing was deleted.
    let refused = events(&app, "delete.refuse").await;
    assert!(refused.iter().any(|e| e.detail["reason"] == "rollback-window"), "{refused:?}");
    assert_eq!(as_user(&app, "root", M::GET, &format!("/v2/{repo}/manifests/{a}")).await.status(), StatusCode::OK);

    // Outside every window a delete needs no force.
    assert_eq!(del("wri", format!("/v2/{repo}/manifests/{loose}")).await.status(), StatusCode::ACCEPTED);

    let r = del("root", format!("/v2/{repo}/manifests/{a}?force=true&reason=leaked%20secret")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "{:?}", r.text().await);
    let forced = events(&app, "delete.force").await;
    assert_eq!(forced.len(), 1);
    assert_eq!((forced[0].actor.as_str(), forced[0].digest.as_deref()), ("root", Some(a.as_str())));
    assert_eq!(forced[0].detail["reason"], "leaked secret");
    assert_eq!(forced[0].detail["window"], json!({"tag": "prod", "position": 3, "size": 3}));
    assert_eq!(events(&app, "manifest.delete").await.last().unwrap().digest.as_deref(), Some(a.as_str()));

    // Rolling back to the forcibly deleted digest is refused and says why.
    let r = rollback_as(&app, Some("root"), repo, "prod", json!({"to": a}).to_string(), None).await;
    let p = assert_problem(r, StatusCode::CONFLICT, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("no longer stored"), "{p}");
    // Outside any policy there is no window: deleting a moved tag's digest is plain.
    let (_, x) = push_as(&app, "other", "prod").await;
    push_as(&app, "other", "prod").await;
    assert_eq!(del("wri", format!("/v2/other/manifests/{x}")).await.status(), StatusCode::ACCEPTED);
    let _ = (b, c);
}

#[tokio::test]
async fn rollback_refuses_every_bad_request_with_a_reason() {
    let (app, _clock) = spawn_users().await;
    let repo = "apps/rb";
    let (_, a) = push_as(&app, repo, "prod").await;
    let (_, b) = push_as(&app, repo, "prod").await;
    use reqwest::Method as M;
    let post = |user: &'static str, body: &str, if_match: Option<&str>| {
        let (app, body, if_match) = (&app, body.to_string(), if_match.map(str::to_string));
        async move { rollback_as(app, Some(user), repo, "prod", body, if_match.as_deref()).await }
    };
    for (body, needle) in [
        ("", "the body is not JSON"),
        ("[1]", "not a JSON object"),
        ("{}", "names no target"),
        (r#"{"steps": 1, "to": "x"}"#, "either steps or to"),
        (r#"{"steps": 0}"#, "at least 1"),
        (r#"{"steps": -2}"#, "at least 1"),
        (r#"{"steps": "one"}"#, "at least 1"),
        (r#"{"to": 5}"#, "must be a digest string"),
        (r#"{"step": 1}"#, "unknown field \"step\""),
    ] {
        let p = assert_problem(post("wri", body, None).await, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
        assert!(p["detail"].as_str().unwrap().contains(needle), "{body}: {p}");
    }
    let p =
        assert_problem(post("wri", r#"{"to": "sha256:zz"}"#, None).await, StatusCode::BAD_REQUEST, "DIGEST_INVALID")
            .await;
    assert!(p["detail"].as_str().unwrap().contains("is not a digest"), "{p}");
    let r = app
        .http
        .post(app.url(&format!("/api/v1/repositories/{repo}/tags/prod/rollback")))
        .basic_auth("wri", Some(PW))
        .header("If-Match", "nope")
        .body(r#"{"steps": 1}"#)
        .send()
        .await
        .unwrap();
    let p = assert_problem(r, StatusCode::PRECONDITION_FAILED, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("is not a digest, so it never matches"), "{p}");
    // A stale If-Match: 412, and the tag did not move.
    let p =
        assert_problem(post("wri", r#"{"steps": 1}"#, Some(&a)).await, StatusCode::PRECONDITION_FAILED, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("If-Match"), "{p}");
    let p = assert_problem(post("wri", r#"{"steps": 2}"#, None).await, StatusCode::CONFLICT, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("at most 1 step(s) back"), "{p}");
    let p =
        assert_problem(post("wri", &json!({"to": b}).to_string(), None).await, StatusCode::CONFLICT, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("already points to"), "{p}");
    let r = rollback_as(&app, Some("wri"), repo, "nosuch", r#"{"steps": 1}"#.into(), None).await;
    assert_problem(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    // Permissions and methods.
    assert_problem(post("rea", r#"{"steps": 1}"#, None).await, StatusCode::FORBIDDEN, "DENIED").await;
    let r = rollback_as(&app, None, repo, "prod", r#"{"steps": 1}"#.into(), None).await;
    assert_problem(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = as_user(&app, "wri", M::GET, &format!("/api/v1/repositories/{repo}/tags/prod/rollback")).await;
    assert_eq!(header(&r, "allow").as_deref(), Some("POST"));
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    // Done right, with If-Match.
    let r = post("wri", r#"{"steps": 1}"#, Some(&b)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let ev = events(&app, "tag.move").await;
    let last = ev.last().unwrap();
    assert_eq!(
        (last.actor.as_str(), last.digest.as_deref(), last.previous_digest.as_deref()),
        ("wri", Some(a.as_str()), Some(b.as_str()))
    );
    assert_eq!(last.detail["rollback"]["position"], 2);
}

#[tokio::test]
async fn rollback_of_an_immutable_tag_or_with_windows_off_is_refused() {
    let (app, _clock) = spawn_clocked(|c| {
        c.immutability.rules = vec![rule(None, "off/**", &["*"], Mode::Mutable)];
        let mut p = policy("off/**");
        p.rollback_window = Some(0);
        c.retention.policies = vec![p];
    })
    .await;
    app.push_image("fixed", "v1").await;
    let p =
        assert_problem(rollback(&app, "fixed", "v1", json!({"steps": 1}), None).await, StatusCode::CONFLICT, "DENIED")
            .await;
    assert!(p["detail"].as_str().unwrap().contains("is immutable"), "{p}");
    app.push_image("off/x", "prod").await;
    app.push_image("off/x", "prod").await;
    let p = assert_problem(
        rollback(&app, "off/x", "prod", json!({"steps": 1}), None).await,
        StatusCode::CONFLICT,
        "DENIED",
    )
    .await;
    assert!(p["detail"].as_str().unwrap().contains("rollback_window = 0"), "{p}");
}

#[tokio::test]
async fn plan_and_apply_need_their_roles_and_a_valid_glob() {
    let (app, _clock) = spawn_users().await;
    use reqwest::Method as M;
    assert_eq!(as_user(&app, "aud", M::GET, "/api/v1/retention/plan").await.status(), StatusCode::OK);
    assert_eq!(as_user(&app, "root", M::GET, "/api/v1/retention/plan").await.status(), StatusCode::OK);
    assert_problem(as_user(&app, "wri", M::GET, "/api/v1/retention/plan").await, StatusCode::FORBIDDEN, "DENIED").await;
    assert_problem(app.get("/api/v1/retention/plan").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = as_user(&app, "aud", M::POST, "/api/v1/retention/apply").await;
    let p = assert_problem(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(p["detail"].as_str().unwrap().contains("admin role"), "{p}");
    let r = as_user(&app, "root", M::POST, "/api/v1/retention/apply").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = as_user(&app, "root", M::GET, "/api/v1/retention/apply").await;
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    let r = as_user(&app, "root", M::POST, "/api/v1/retention/plan").await;
    assert_problem(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    let r = as_user(&app, "aud", M::GET, "/api/v1/retention/plan?repository=a/%5Bb").await;
    let p = assert_problem(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    assert!(p["detail"].as_str().unwrap().contains("is not a repository glob"), "{p}");
    let doc: Value = app.get("/api/v1/openapi.json").await.json().await.unwrap();
    for path in ["/api/v1/retention/plan", "/api/v1/retention/apply", "/api/v1/repositories/{name}/tags/{tag}/rollback"]
    {
        assert!(doc["paths"][path].is_object(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["schemas"]["RepoPlan"].is_object());
    let params = &doc["paths"]["/api/v1/repositories/{name}/tags/{tag}/rollback"]["post"]["parameters"];
    assert!(params.as_array().unwrap().iter().any(|p| p["name"] == "If-Match"), "{params}");
}

#[tokio::test]
async fn the_cli_plans_what_rest_plans_and_applies_it() {
    let app = spawn_with(cd_config).await;
    let repo = format!("apps/cli{}", uniq());
    for i in 1..=5 {
        app.push_image(&repo, &format!("v{i}")).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("cairn.toml");
    std::fs::write(
        &cfg,
        r#"
[[immutability.rules]]
repositories = "**"
tags = ["prod", "staging"]
mode = "mutable"
[[retention.policies]]
name = "apps"
repositories = "apps/**"
keep_last = 3
keep_pulled_within = "7d"
"#,
    )
    .unwrap();
    let data = crate::auth::data_dir(&app);
    let args =
        ["retention", "plan", "--json", "--repository", "apps/cli*", "--config", arg(&cfg), "--data-dir", arg(&data)];
    let (ok, out, err) = cairn_cli_async(&args, None).await;
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    let rest: Value = app.get("/api/v1/retention/plan?repository=apps/cli*").await.json().await.unwrap();
    assert_eq!(cli["repositories"], rest["repositories"], "the CLI and REST plans agree");
    assert_eq!(cli["summary"]["tags_deleted"], 2);
    // The CLI writes its plan repository by repository as it is made; over every repository
    // (one unmatched) it is still the REST plan, member for member.
    let other = format!("other/thing{}", uniq());
    app.push_image(&other, "v1").await;
    let args = ["retention", "plan", "--json", "--config", arg(&cfg), "--data-dir", arg(&data)];
    let (ok, out, err) = cairn_cli_async(&args, None).await;
    assert!(ok, "{err}");
    let cli: Value = serde_json::from_str(&out).unwrap();
    let rest: Value = app.get("/api/v1/retention/plan").await.json().await.unwrap();
    for member in ["repositories", "unmatched_repositories", "summary"] {
        assert_eq!(cli[member], rest[member], "{member}");
    }
    let unmatched = cli["unmatched_repositories"].as_array().unwrap();
    assert!(unmatched.iter().any(|r| r == other.as_str()), "{unmatched:?}");
    assert!(cli["time"].is_string(), "{cli}");

    let (ok, out, _) =
        cairn_cli_async(&["retention", "plan", "--config", arg(&cfg), "--data-dir", arg(&data)], None).await;
    assert!(ok);
    assert!(out.contains("delete tag v1") && out.contains("not among the last 3 pushed"), "{out}");
    let (ok, _, err) = cairn_cli_async(
        &["retention", "plan", "--repository", "a/[b", "--config", arg(&cfg), "--data-dir", arg(&data)],
        None,
    )
    .await;
    assert!(!ok && err.contains("is not a repository glob"), "{err}");

    let (ok, out, err) =
        cairn_cli_async(&["retention", "apply", "--config", arg(&cfg), "--data-dir", arg(&data)], None).await;
    assert!(ok, "{err}");
    assert!(out.contains("deleted 2 tags and 2 manifests"), "{out}");
    let tags: BTreeSet<String> = app.tags(&repo).await.into_iter().collect();
    assert_eq!(tags, ["v3", "v4", "v5"].iter().map(|s| s.to_string()).collect());
    let deletions = events(&app, "retention.delete").await;
    assert!(deletions.iter().all(|e| e.actor == "cli" && e.detail["trigger"] == "cli"), "{deletions:?}");

    // check-config names a bad policy.
    std::fs::write(&cfg, "[[retention.policies]]\nrepositories = \"**\"\nkeep_last = 0\n").unwrap();
    let (ok, _, err) = cairn_cli_async(&["check-config", "--config", arg(&cfg)], None).await;
    assert!(!ok && err.contains("retention.policies[0].keep_last = 0"), "{err}");
}
