//! Access control (DESIGN §8): every role × action on matching and non-matching
//! repositories, grants on globs, anonymous in open and configured mode, the exact 401
//! challenge, 403 messages naming action and repository, bad passwords, the catalog and
//! cross-repository mounts filtered by pull rights, login limits (per address and name,
//! per address, bursts in flight), a `Host` that cannot shape the challenge, the actor
//! recorded in tag history, `cairn hash-password`, and secrets kept out of `Debug`.
//!
//! Token issuance, JWT checks and robot tokens are in `auth_tokens`; the helpers here are
//! shared with it.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use cairn::Config;
use cairn::config::Sources;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::*;

// ---------------------------------------------------------------------------------------
// Shared helpers (also used by `auth_tokens`).
// ---------------------------------------------------------------------------------------

/// The one password every configured user has.
pub const PW: &str = "pw";

/// An argon2id hash of `PW` with the smallest parameters argon2 allows, made once per
/// test binary. The server verifies with the parameters written in the hash, so this keeps
/// every login cheap in debug builds (with `cairn hash-password`'s defaults one login
/// costs about a second of CPU in a debug build). Hashes made by `cairn::auth::hash_password`
/// and the CLI are tested on their own below.
pub fn pw_hash() -> &'static str {
    use argon2::password_hash::{PasswordHasher, SaltString};
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        let params = argon2::Params::new(8, 1, 1, None).unwrap();
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let salt = SaltString::encode_b64(b"cairn-auth-tests").unwrap();
        a2.hash_password(PW.as_bytes(), &salt).unwrap().to_string()
    })
}

/// A hash of `PW` made by Cairn itself, with its default (production) parameters.
pub fn pw_hash_default() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| cairn::auth::hash_password(PW).expect("hash_password"))
}

/// Users of `STANDARD` (all with password `PW`), their roles, and the grants.
///
/// - root: admin; wri: writer (+ delete on `other`); rea: reader; aud: auditor
/// - bob: pull, push on `apps/**`; carol: pull, delete on `other`; dave: pull on `apps/*`
/// - anonymous: pull on `public/**`
pub const STANDARD: &str = r#"
[auth]
service = "cairn"
token_ttl = "5m"

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

[[auth.users]]
name = "bob"
password_hash = "{HASH}"

[[auth.users]]
name = "carol"
password_hash = "{HASH}"
roles = []

[[auth.users]]
name = "dave"
password_hash = "{HASH}"

[[auth.grants]]
subjects = ["bob"]
repositories = "apps/**"
actions = ["pull", "push"]

[[auth.grants]]
subjects = ["carol"]
repositories = "other"
actions = ["pull", "delete"]

[[auth.grants]]
subjects = ["dave"]
repositories = "apps/*"
actions = ["pull"]

[[auth.grants]]
subjects = ["wri"]
repositories = "other"
actions = ["delete"]

[[auth.grants]]
subjects = ["anonymous"]
repositories = "public/**"
actions = ["pull"]
"#;

/// The repositories `spawn_seeded` fills (each with tag `v1`).
pub const REPOS: [&str; 5] = ["apps/web", "apps/team/api", "other", "other/db", "public/img"];

/// Loads a `Config` the way `cairn serve --config` does, from TOML text in which `{HASH}`
/// stands for `pw_hash()`, with an empty environment.
pub fn load_config(toml_text: &str) -> Config {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("cairn.toml");
    std::fs::write(&file, toml_text.replace("{HASH}", pw_hash())).unwrap();
    let sources = Sources { file: Some(file), ..Default::default() };
    Config::load_from(&sources, Vec::<(String, String)>::new()).unwrap_or_else(|e| panic!("config: {e}"))
}

/// A server configured from `toml_text`, on its own temp dir.
pub async fn spawn_auth(toml_text: &str) -> TestApp {
    spawn_auth_with(toml_text, |_| {}).await
}

/// As `spawn_auth`, then `tweak` on the loaded config (after the data dir is set).
pub async fn spawn_auth_with(toml_text: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_auth_with_clock(toml_text, std::sync::Arc::new(cairn::clock::SystemClock), tweak).await
}

/// As `spawn_auth_with`, on `clock`'s time.
pub async fn spawn_auth_with_clock(
    toml_text: &str,
    clock: std::sync::Arc<dyn cairn::clock::Clock>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let loaded = load_config(toml_text);
    spawn_with_clock(clock, move |c| {
        let (dir, listen) = (c.server.data_dir.clone(), c.server.listen.clone());
        *c = loaded;
        c.server.data_dir = dir;
        c.server.listen = listen;
        tweak(c);
    })
    .await
}

/// What `spawn_seeded` pushed into one repository.
#[derive(Debug, Clone)]
pub struct Seeded {
    /// Digest of the manifest tagged `v1`.
    pub manifest: String,
    /// Digest of its one layer (random bytes, so only in this repository).
    pub layer: String,
}

/// A configured server whose `REPOS` already hold an image tagged `v1`. The images are
/// pushed by an open-mode server on the same data directory first, so the seeding does
/// not depend on the access control under test. Returns the app, what was seeded, and
/// the data directory (which must outlive the app).
pub async fn spawn_seeded(toml_text: &str) -> (TestApp, BTreeMap<&'static str, Seeded>, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let path = data.path().to_path_buf();
    let mut seeded = BTreeMap::new();
    let p = path.clone();
    let open = spawn_with(move |c| c.server.data_dir = p).await;
    for repo in REPOS {
        let (m, d) = open.push_image(repo, "v1").await;
        let m: Value = serde_json::from_slice(&m).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
        seeded.insert(repo, Seeded { manifest: d, layer });
    }
    // Started while the open server still runs: on PostgreSQL + S3 it shares its database.
    let app = spawn_auth_with(toml_text, move |c| c.server.data_dir = path).await;
    drop(open);
    (app, seeded, data)
}

/// Who is asking.
#[derive(Clone, Copy, Debug)]
pub enum Cred<'a> {
    /// No `Authorization` header.
    Anon,
    /// `Authorization: Basic`.
    Basic(&'a str, &'a str),
    /// `Authorization: Bearer`.
    Bearer(&'a str),
}

/// A standard user with the standard password.
pub fn user(name: &str) -> Cred<'_> {
    if name == "anonymous" { Cred::Anon } else { Cred::Basic(name, PW) }
}

pub fn with_cred(rb: RequestBuilder, cred: Cred<'_>) -> RequestBuilder {
    match cred {
        Cred::Anon => rb,
        Cred::Basic(u, p) => rb.basic_auth(u, Some(p)),
        Cred::Bearer(t) => rb.bearer_auth(t),
    }
}

/// A request with credentials.
pub fn req(app: &TestApp, method: Method, path: &str, cred: Cred<'_>) -> RequestBuilder {
    with_cred(app.http.request(method, app.url(path)), cred)
}

/// Sends a body-less request with credentials.
pub async fn call(app: &TestApp, method: Method, path: &str, cred: Cred<'_>) -> Response {
    req(app, method, path, cred).send().await.unwrap()
}

/// Pushes a small distinct image (config blob + manifest, annotated with `n`) under
/// `repo:tag` as `cred`; returns the manifest digest.
pub async fn push_small_image(app: &TestApp, cred: Cred<'_>, repo: &str, tag: &str, n: &str) -> String {
    let cfg = b"{}";
    let d = digest(cfg);
    let r = req(app, Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), cred)
        .header("Content-Type", "application/octet-stream")
        .body(cfg.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "blob push as {cred:?}: {:?}", r.text().await);
    let mut m: Value = serde_json::from_slice(&image_manifest(&d, 2, &[], None)).unwrap();
    m["annotations"] = json!({ "n": n });
    let body = serde_json::to_vec(&m).unwrap();
    let r = req(app, Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), cred)
        .header("Content-Type", OCI_MANIFEST)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "manifest push as {cred:?}: {:?}", r.text().await);
    digest(&body)
}

/// `GET /token` with `service=cairn` and each of `scopes`.
pub async fn get_token(app: &TestApp, cred: Cred<'_>, scopes: &[&str]) -> Response {
    let mut q: Vec<(&str, &str)> = vec![("service", "cairn")];
    q.extend(scopes.iter().map(|s| ("scope", *s)));
    with_cred(app.http.get(app.url("/token")).query(&q), cred).send().await.unwrap()
}

/// A token that must be issued; returns it with its decoded claims.
pub async fn token_for(app: &TestApp, cred: Cred<'_>, scopes: &[&str]) -> (String, Value) {
    let r = get_token(app, cred, scopes).await;
    assert_eq!(r.status(), StatusCode::OK, "token for {cred:?} {scopes:?}");
    let v: Value = r.json().await.unwrap();
    let t = v["token"].as_str().expect("token").to_string();
    let claims = jwt_part(&t, 1);
    (t, claims)
}

/// The `access` claim as repository -> sorted actions, entries with no actions dropped.
pub fn access_map(claims: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for e in claims["access"].as_array().expect("access claim is an array") {
        assert_eq!(e["type"], "repository", "{claims}");
        let mut acts: Vec<String> =
            e["actions"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect();
        acts.sort();
        if !acts.is_empty() {
            out.entry(e["name"].as_str().unwrap().to_string()).or_insert_with(Vec::new).extend(acts);
        }
    }
    out
}

/// `[(repo, [actions])]` as an access map.
pub fn access(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs.iter().map(|(r, a)| (r.to_string(), a.iter().map(|s| s.to_string()).collect())).collect()
}

/// Decodes part `i` (0 header, 1 claims) of a JWT.
pub fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("JWT has three parts");
    serde_json::from_slice(&b64url_decode(part)).expect("JWT part is JSON")
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Unpadded base64url.
pub fn b64url_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Unpadded (or padded) base64url.
pub fn b64url_decode(s: &str) -> Vec<u8> {
    let vals: Vec<u32> = s
        .trim_end_matches('=')
        .bytes()
        .map(|c| B64.iter().position(|b| *b == c).expect("base64url character") as u32)
        .collect();
    let mut out = Vec::new();
    for chunk in vals.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, v)| n | v << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}

/// The `WWW-Authenticate` header.
pub fn challenge(r: &Response) -> String {
    header(r, "www-authenticate").unwrap_or_else(|| panic!("no WWW-Authenticate on {} {}", r.status(), r.url()))
}

/// The challenge for `scope` (`None`: no scope parameter expected at all).
pub fn expected_challenge(realm_base: &str, service: &str, scope: Option<&str>) -> String {
    match scope {
        Some(s) => format!(r#"Bearer realm="{realm_base}/token",service="{service}",scope="{s}""#),
        None => format!(r#"Bearer realm="{realm_base}/token",service="{service}""#),
    }
}

/// A 401 UNAUTHORIZED with exactly the challenge for `repository:<repo>:<actions>`.
pub async fn assert_challenge(r: Response, app: &TestApp, repo: &str, actions: &str) {
    let ch = challenge(&r);
    assert_eq!(ch, expected_challenge(&app.base, "cairn", Some(&format!("repository:{repo}:{actions}"))));
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

/// A 401 UNAUTHORIZED for a bearer token lacking a scope its subject could get: the
/// challenge for `repository:<repo>:<actions>` with `error="insufficient_scope"` (RFC 6750).
pub async fn assert_insufficient_scope(r: Response, app: &TestApp, repo: &str, actions: &str) {
    let ch = challenge(&r);
    let want = expected_challenge(&app.base, "cairn", Some(&format!("repository:{repo}:{actions}")));
    assert_eq!(ch, format!(r#"{want},error="insufficient_scope""#));
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

/// A 403 DENIED whose message names the action and the repository; returns the message.
pub async fn assert_denied(r: Response, action: &str, repo: &str) -> String {
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let msg = body["errors"][0]["message"].as_str().unwrap().to_string();
    assert!(msg.contains(action) && msg.contains(repo), "message should name {action} and {repo}: {msg}");
    msg
}

/// A digest no repository has.
pub fn missing_digest() -> String {
    format!("sha256:{}", "0".repeat(64))
}

/// A syntactically valid upload id no upload has.
pub const FAKE_UPLOAD: &str = "0123abcd-0000-4000-8000-000000000000";

/// A client whose connections come from `ip` (any 127.0.0.0/8 address on Linux).
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs `cairn <args>` (the real binary); returns (success, stdout, stderr). With
/// `--data-dir DIR`, on the database and bucket of the test server on DIR
/// ([`backend_env`]).
pub fn cairn_cli(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let data_dir = args.windows(2).find(|w| w[0] == "--data-dir").map(|w| Path::new(w[1]));
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn"))
        .args(args)
        .env_remove("CAIRN_CONFIG")
        .envs(data_dir.map(backend_env).unwrap_or_default())
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cairn");
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cairn_cli` off the runtime's thread: a test's in-process server keeps serving (and
/// finishes any transaction it holds) while the command runs.
pub async fn cairn_cli_async(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cairn_cli(&args, stdin.as_deref())
    })
    .await
    .unwrap()
}

/// The data directory of an app (for the CLI's `--data-dir`).
pub fn data_dir(app: &TestApp) -> PathBuf {
    app.state.config.server.data_dir.clone()
}

/// `path` as a `&str` argument.
pub fn arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// Roles × actions.
// ---------------------------------------------------------------------------------------

/// What a cell of the table expects: `A` allowed, `D` 403 DENIED, `U` 401 UNAUTHORIZED,
/// `-` not specified (not checked, printed).
const ACTIONS: [&str; 4] = ["pull", "push", "delete", "api"];

/// Per subject, per repository of `REPOS`, the outcome of pull, push, delete, /api/v1 read.
const TABLE: &[(&str, [&str; 5])] = &[
    //             apps/web  apps/team/api other   other/db public/img
    ("root", ["AAAA", "AAAA", "AAAA", "AAAA", "AAAA"]),
    // /api/v1 reads of a repository: auditors and admins, and signed-in subjects that may pull it.
    ("wri", ["AADA", "AADA", "AAAA", "AADA", "AADA"]),
    ("rea", ["ADDA", "ADDA", "ADDA", "ADDA", "ADDA"]),
    // What anonymous may pull (public/img), every signed-in subject may pull too.
    ("aud", ["DDDA", "DDDA", "DDDA", "DDDA", "ADDA"]),
    ("bob", ["AADA", "AADA", "DDDD", "DDDD", "ADDA"]),
    ("carol", ["DDDD", "DDDD", "ADAA", "DDDD", "ADDA"]),
    ("dave", ["ADDA", "DDDD", "DDDD", "DDDD", "ADDA"]),
    ("anonymous", ["UUUU", "UUUU", "UUUU", "UUUU", "AUUU"]),
];

/// Performs `action` on `repo` as `cred` and classifies the answer.
async fn attempt(app: &TestApp, cred: Cred<'_>, repo: &str, action: &str) -> Result<char, String> {
    let r = match action {
        "pull" => call(app, Method::GET, &format!("/v2/{repo}/manifests/v1"), cred).await,
        "push" => call(app, Method::POST, &format!("/v2/{repo}/blobs/uploads/"), cred).await,
        // A digest nobody has: allowed is 404, so the table can run in any order.
        "delete" => call(app, Method::DELETE, &format!("/v2/{repo}/manifests/{}", missing_digest()), cred).await,
        "api" => call(app, Method::GET, &format!("/api/v1/repositories/{repo}/tags/v1/history"), cred).await,
        _ => unreachable!(),
    };
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    // /v2 errors carry `errors[0].code`, /api/v1 problems (RFC 9457) a top-level `code`.
    let code = body["errors"][0]["code"].as_str().or(body["code"].as_str()).unwrap_or("").to_string();
    let ok = match action {
        "pull" | "api" => status == StatusCode::OK,
        "push" => status == StatusCode::ACCEPTED,
        _ => status == StatusCode::NOT_FOUND && code == "MANIFEST_UNKNOWN",
    };
    match (status, code.as_str()) {
        _ if ok => Ok('A'),
        (StatusCode::FORBIDDEN, "DENIED") => {
            let msg = body["errors"][0]["message"].as_str().unwrap_or("");
            if action != "api" && !(msg.contains(action) && msg.contains(repo)) {
                return Err(format!("403 message does not name {action} and {repo}: {msg:?}"));
            }
            Ok('D')
        }
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED") => Ok('U'),
        _ => Err(format!("{status} {body}")),
    }
}

/// Runs the table with `cred_of(subject)`; `api` is skipped when `with_api` is false.
async fn run_table<'a>(app: &TestApp, cred_of: impl Fn(&'static str) -> Cred<'a>, with_api: bool) -> Vec<String> {
    let mut wrong = vec![];
    for (who, rows) in TABLE {
        for (repo, row) in REPOS.iter().zip(rows) {
            for (action, want) in ACTIONS.iter().zip(row.chars()) {
                if *action == "api" && !with_api {
                    continue;
                }
                let got = attempt(app, cred_of(who), repo, action).await;
                match got {
                    Ok(c) if want == '-' => eprintln!("unspecified: {who} {action} {repo} -> {c}"),
                    Ok(c) if c == want => {}
                    other => wrong.push(format!("{who} {action} {repo}: want {want}, got {other:?}")),
                }
            }
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_and_grant_with_basic_credentials() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let wrong = run_table(&app, user, true).await;
    assert!(wrong.is_empty(), "{} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_role_and_grant_with_bearer_tokens_asking_for_everything() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let scopes: Vec<String> = REPOS.iter().map(|r| format!("repository:{r}:pull,push,delete")).collect();
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    let mut tokens = BTreeMap::new();
    for (who, _) in TABLE {
        let (t, claims) = token_for(&app, user(who), &scopes).await;
        assert_eq!(claims["sub"], *who);
        tokens.insert(*who, t);
    }
    let wrong = run_table(&app, |who| Cred::Bearer(tokens[who].as_str()), false).await;
    assert!(wrong.is_empty(), "{} cells wrong:\n{}", wrong.len(), wrong.join("\n"));
}

#[tokio::test]
async fn open_mode_lets_anonymous_do_everything() {
    let app = spawn_app().await;
    assert_eq!(app.get("/v2/").await.status(), StatusCode::OK);
    let d = push_small_image(&app, Cred::Anon, "any/thing", "v1", "1").await;
    assert_eq!(app.get("/v2/any/thing/manifests/v1").await.status(), StatusCode::OK);
    assert_eq!(app.get("/v2/_catalog").await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/v1/repositories/any/thing/tags/v1/history").await.status(), StatusCode::OK);
    assert_eq!(app.get("/api/v1/policies/immutability").await.status(), StatusCode::OK);
    // Delete is allowed (the tag is immutable, so deleting it is a 405, not 401/403).
    let r = app.delete(&format!("/v2/any/thing/manifests/{}", missing_digest())).await;
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
    let r = app.delete(&format!("/v2/any/thing/manifests/{d}")).await;
    assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "DENIED").await;
    let blob = app.push_blob("any/thing", b"loose").await;
    assert_eq!(app.delete(&format!("/v2/any/thing/blobs/{blob}")).await.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn one_grant_alone_ends_open_mode() {
    let app = spawn_auth(
        "[[auth.grants]]\nsubjects = [\"anonymous\"]\nrepositories = \"public/**\"\nactions = [\"pull\", \"push\"]\n",
    )
    .await;
    push_small_image(&app, Cred::Anon, "public/x", "v1", "1").await;
    assert_eq!(app.get("/v2/public/x/manifests/v1").await.status(), StatusCode::OK);
    assert_challenge(app.post("/v2/private/x/blobs/uploads/").await, &app, "private/x", "pull,push").await;
    assert_challenge(app.get("/v2/private/x/tags/list").await, &app, "private/x", "pull").await;
    let r = app.delete(&format!("/v2/public/x/manifests/{}", missing_digest())).await;
    assert_challenge(r, &app, "public/x", "delete").await;
    let r = app.get("/api/v1/repositories/public/x/tags/v1/history").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn one_user_alone_ends_open_mode() {
    let app = spawn_auth("[[auth.users]]\nname = \"solo\"\npassword_hash = \"{HASH}\"\nroles = [\"writer\"]\n").await;
    assert_challenge(app.get("/v2/x/manifests/v1").await, &app, "x", "pull").await;
    assert_challenge(app.post("/v2/x/blobs/uploads/").await, &app, "x", "pull,push").await;
    push_small_image(&app, Cred::Basic("solo", PW), "x", "v1", "1").await;
    assert_error(app.get("/api/v1/policies/immutability").await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

// ---------------------------------------------------------------------------------------
// Which endpoint needs which action; the exact challenge.
// ---------------------------------------------------------------------------------------

/// Every /v2 endpoint with the scope actions its challenge must ask for.
fn endpoints(repo: &str, blob: &str) -> Vec<(Method, String, &'static str)> {
    let d = missing_digest();
    vec![
        (Method::GET, format!("/v2/{repo}/manifests/v1"), "pull"),
        (Method::HEAD, format!("/v2/{repo}/manifests/v1"), "pull"),
        (Method::GET, format!("/v2/{repo}/blobs/{blob}"), "pull"),
        (Method::HEAD, format!("/v2/{repo}/blobs/{blob}"), "pull"),
        (Method::GET, format!("/v2/{repo}/tags/list"), "pull"),
        (Method::GET, format!("/v2/{repo}/referrers/{blob}"), "pull"),
        (Method::POST, format!("/v2/{repo}/blobs/uploads/"), "pull,push"),
        (Method::PATCH, format!("/v2/{repo}/blobs/uploads/{FAKE_UPLOAD}"), "pull,push"),
        (Method::PUT, format!("/v2/{repo}/blobs/uploads/{FAKE_UPLOAD}?digest={d}"), "pull,push"),
        (Method::DELETE, format!("/v2/{repo}/blobs/uploads/{FAKE_UPLOAD}"), "pull,push"),
        (Method::PUT, format!("/v2/{repo}/manifests/v2"), "pull,push"),
        (Method::DELETE, format!("/v2/{repo}/manifests/{d}"), "delete"),
        (Method::DELETE, format!("/v2/{repo}/blobs/{blob}"), "delete"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_endpoint_challenges_for_its_action_without_revealing_existence() {
    let (app, seeded, _dir) = spawn_seeded(STANDARD).await;
    let layer = &seeded["other/db"].layer;
    let mut answers: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for repo in ["other/db", "other/nope"] {
        for (method, path, actions) in endpoints(repo, layer) {
            let r = call(&app, method.clone(), &path, Cred::Anon).await;
            let want = expected_challenge(&app.base, "cairn", Some(&format!("repository:{repo}:{actions}")));
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(challenge(&r), want, "{method} {path}");
            let body = if method != Method::HEAD {
                assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await.to_string()
            } else {
                String::new()
            };
            answers.entry(repo).or_default().push(body.replace(repo, "<repo>"));
        }
    }
    assert_eq!(answers["other/db"], answers["other/nope"], "the 401s do not tell which repository exists");
    // Nothing was deleted or written by the refused requests.
    let r = call(&app, Method::GET, &format!("/v2/other/db/blobs/{layer}"), user("root")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_is_denied_every_push_and_delete_endpoint() {
    let (app, seeded, _dir) = spawn_seeded(STANDARD).await;
    let layer = &seeded["apps/web"].layer;
    let (tok, _) = token_for(&app, user("rea"), &["repository:apps/web:pull,push,delete"]).await;
    for (method, path, actions) in endpoints("apps/web", layer) {
        let r = call(&app, method.clone(), &path, Cred::Bearer(&tok)).await;
        match actions {
            "pull" => assert!(r.status().is_success(), "{method} {path}: {}", r.status()),
            "pull,push" => {
                assert_denied(r, "push", "apps/web").await;
            }
            _ => {
                assert_denied(r, "delete", "apps/web").await;
            }
        }
    }
    // DELETE of an upload is push: a reader cannot cancel bob's upload, bob can.
    let r = call(&app, Method::POST, "/v2/apps/web/blobs/uploads/", user("bob")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let loc = location(&r);
    assert_denied(call(&app, Method::DELETE, &loc, user("rea")).await, "push", "apps/web").await;
    assert_eq!(call(&app, Method::DELETE, &loc, user("bob")).await.status(), StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, &format!("/v2/apps/web/blobs/{layer}"), Cred::Bearer(&tok)).await;
    assert_eq!(r.status(), StatusCode::OK, "the layer is still there");
}

#[tokio::test]
async fn the_challenge_uses_the_host_header_public_url_and_service() {
    let app = spawn_auth(STANDARD).await;
    let r =
        app.http.get(app.url("/v2/a/b/manifests/v1")).header("Host", "registry.internal:5443").send().await.unwrap();
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="http://registry.internal:5443/token",service="cairn",scope="repository:a/b:pull""#
    );
    let app = spawn_auth(&STANDARD.replace("service = \"cairn\"", "service = \"acme-registry\"")).await;
    let r = app.post("/v2/a/blobs/uploads/").await;
    assert_eq!(
        challenge(&r),
        format!(r#"Bearer realm="{}/token",service="acme-registry",scope="repository:a:pull,push""#, app.base)
    );
    let app = spawn_auth_with(STANDARD, |c| c.server.public_url = Some("https://reg.example.com".into())).await;
    let r = app.delete(&format!("/v2/a/manifests/{}", missing_digest())).await;
    assert_eq!(
        challenge(&r),
        r#"Bearer realm="https://reg.example.com/token",service="cairn",scope="repository:a:delete""#
    );
}

#[tokio::test]
async fn a_host_header_that_is_not_host_and_port_cannot_shape_the_challenge() {
    let app = spawn_auth(STANDARD).await;
    let want = expected_challenge(&app.base, "cairn", Some("repository:a/b:pull"));
    for host in [
        r#"evil.example",error="invalid_token"#,
        r#"evil.example",realm="http://evil.example/token"#,
        "evil.example,scope=x",
        "evil.example /token",
        "user@evil.example",
        "evil.example/path",
        "evil.example:80:80",
    ] {
        let r = app.http.get(app.url("/v2/a/b/manifests/v1")).header("Host", host).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "Host {host}");
        assert_eq!(challenge(&r), want, "Host {host}: the realm falls back to the listen address");
    }
    for host in ["[::1]:5000", "reg_1.example"] {
        let r = app.http.get(app.url("/v2/a/b/manifests/v1")).header("Host", host).send().await.unwrap();
        assert_eq!(challenge(&r), expected_challenge(&format!("http://{host}"), "cairn", Some("repository:a/b:pull")));
    }
}

#[tokio::test]
async fn the_base_endpoint_needs_credentials_once_access_is_configured() {
    let app = spawn_auth(STANDARD).await;
    // Anonymous has pull grants (public/**) but still gets the challenge, so that
    // `docker login` asks for credentials.
    let r = app.get("/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let ch = challenge(&r);
    assert!(ch.starts_with(&expected_challenge(&app.base, "cairn", None)), "{ch}");
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    for who in ["bob", "aud"] {
        assert_eq!(call(&app, Method::GET, "/v2/", user(who)).await.status(), StatusCode::OK, "{who}");
    }
    let r = call(&app, Method::GET, "/v2/", Cred::Basic("bob", "wrong")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    // docker login: a token with no scope, then GET /v2/ with it.
    let (t, claims) = token_for(&app, user("bob"), &[]).await;
    assert_eq!(claims["sub"], "bob");
    assert_eq!(call(&app, Method::GET, "/v2/", Cred::Bearer(&t)).await.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// 401 / 403 answers.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denial_names_action_repository_and_user_and_hides_existence() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let existing = call(&app, Method::POST, "/v2/other/db/blobs/uploads/", user("bob")).await;
    let msg = assert_denied(existing, "push", "other/db").await;
    assert!(msg.contains("bob"), "names the user: {msg}");
    eprintln!("403 message: {msg}");
    let missing = call(&app, Method::POST, "/v2/other/nope/blobs/uploads/", user("bob")).await;
    let msg2 = assert_denied(missing, "push", "other/nope").await;
    assert_eq!(msg2.replace("other/nope", "other/db"), msg, "same answer for a repository that does not exist");

    let a = call(&app, Method::GET, "/v2/other/db/manifests/v1", user("bob")).await;
    let b = call(&app, Method::GET, "/v2/other/nope/manifests/v1", user("bob")).await;
    let (ma, mb) = (assert_denied(a, "pull", "other/db").await, assert_denied(b, "pull", "other/nope").await);
    assert_eq!(mb.replace("other/nope", "other/db"), ma);
    let a = call(&app, Method::GET, "/v2/other/db/tags/list", user("dave")).await;
    let b = call(&app, Method::GET, "/v2/other/nope/tags/list", user("dave")).await;
    let (ma, mb) = (assert_denied(a, "pull", "other/db").await, assert_denied(b, "pull", "other/nope").await);
    assert_eq!(mb.replace("other/nope", "other/db"), ma);
    let msg = assert_denied(
        call(&app, Method::DELETE, &format!("/v2/apps/web/manifests/{}", missing_digest()), user("bob")).await,
        "delete",
        "apps/web",
    )
    .await;
    assert!(msg.contains("bob"), "{msg}");
}

#[tokio::test]
async fn a_wrong_password_or_unknown_user_is_401() {
    // More failures than the default limit of 5 follow; the limit has its own tests.
    let app = spawn_auth_with(STANDARD, |c| c.auth.max_failed_logins = 100).await;
    for cred in [Cred::Basic("bob", "wrong"), Cred::Basic("mallory", PW), Cred::Basic("", "")] {
        let r = call(&app, Method::GET, "/v2/apps/web/manifests/v1", cred).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
        let r = get_token(&app, cred, &["repository:apps/web:pull"]).await;
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    // Public pull grants do not let a wrong password through.
    let r = call(&app, Method::GET, "/v2/public/img/tags/list", Cred::Basic("bob", "wrong")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = req(&app, Method::GET, "/v2/public/img/tags/list", Cred::Anon)
        .header("Authorization", "Basic !!!not-base64")
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = call(&app, Method::GET, "/v2/public/img/tags/list", Cred::Bearer("not.a.jwt")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    let r = call(&app, Method::GET, "/api/v1/policies/immutability", Cred::Basic("aud", "wrong")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn basic_credentials_work_straight_on_v2() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let d = push_small_image(&app, user("bob"), "apps/web", "bob-1", "bob").await;
    let r = call(&app, Method::GET, "/v2/apps/web/manifests/bob-1", user("dave")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
    let r = call(&app, Method::GET, "/v2/apps/web/tags/list", user("rea")).await;
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["bob-1", "v1"]));
}

// ---------------------------------------------------------------------------------------
// Catalog and cross-repository mounts.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_catalog_lists_only_what_the_caller_may_pull() {
    let (app, _, _dir) = spawn_seeded(STANDARD).await;
    let all: Vec<&str> = {
        let mut v = REPOS.to_vec();
        v.sort();
        v
    };
    let cases: [(&str, Vec<&str>); 6] = [
        ("root", all.clone()),
        ("rea", all.clone()),
        ("bob", vec!["apps/team/api", "apps/web", "public/img"]),
        ("carol", vec!["other", "public/img"]),
        ("dave", vec!["apps/web", "public/img"]),
        ("aud", vec!["public/img"]),
    ];
    for (who, want) in cases {
        let r = call(&app, Method::GET, "/v2/_catalog", user(who)).await;
        assert_eq!(r.status(), StatusCode::OK, "{who}");
        let v: Value = r.json().await.unwrap();
        let got: Vec<&str> = v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
        assert_eq!(got, want, "catalog for {who}");
    }
    // Pagination only ever walks what the caller may see.
    let mut seen = vec![];
    let mut next = Some("/v2/_catalog?n=1".to_string());
    for _ in 0..10 {
        let Some(url) = next.take() else { break };
        let r = call(&app, Method::GET, &url, user("dave")).await;
        assert_eq!(r.status(), StatusCode::OK);
        next = header(&r, "link").map(|l| l.trim_start_matches('<').split('>').next().unwrap().to_string());
        let v: Value = r.json().await.unwrap();
        seen.extend(v["repositories"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_string()));
    }
    assert_eq!(seen, ["apps/web", "public/img"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mounting_from_a_repository_without_pull_falls_back_to_an_upload() {
    let (app, seeded, _dir) = spawn_seeded(STANDARD).await;
    let foreign = &seeded["other/db"].layer;
    let r =
        call(&app, Method::POST, &format!("/v2/apps/web/blobs/uploads/?mount={foreign}&from=other/db"), user("bob"))
            .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "plain upload instead of a mount");
    assert!(location(&r).contains("/v2/apps/web/blobs/uploads/"), "{}", location(&r));
    let r = call(&app, Method::HEAD, &format!("/v2/apps/web/blobs/{foreign}"), user("root")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the blob of other/db did not leak into apps/web");
    // Without `from` (automatic mount) the blob of a repository bob may not pull is not
    // mounted either.
    let r = call(&app, Method::POST, &format!("/v2/apps/web/blobs/uploads/?mount={foreign}"), user("bob")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED, "plain upload instead of an automatic mount");
    let r = call(&app, Method::HEAD, &format!("/v2/apps/web/blobs/{foreign}"), user("root")).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "the blob of other/db did not leak into apps/web");
    // From a repository bob may pull, the mount happens.
    let own = &seeded["apps/team/api"].layer;
    let r =
        call(&app, Method::POST, &format!("/v2/apps/web/blobs/uploads/?mount={own}&from=apps/team/api"), user("bob"))
            .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = call(&app, Method::HEAD, &format!("/v2/apps/web/blobs/{own}"), user("bob")).await;
    assert_eq!(r.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Login limits: per (address, name) and per address, checks in flight included.
// ---------------------------------------------------------------------------------------

const LIMITED: &str = r#"
[auth]
max_failed_logins = 3
max_failed_logins_per_address = 5
failure_window = "1s"

[[auth.users]]
name = "bob"
password_hash = "{HASH}"
roles = ["reader"]

[[auth.users]]
name = "carol"
password_hash = "{HASH}"
roles = ["reader"]
"#;

async fn login(app: &TestApp, client: &reqwest::Client, user: &str, pw: &str) -> Response {
    client
        .get(app.url("/token"))
        .query(&[("service", "cairn"), ("scope", "repository:x:pull")])
        .basic_auth(user, Some(pw))
        .send()
        .await
        .unwrap()
}

async fn assert_limited(r: Response, window: u64) {
    let retry = header(&r, "retry-after").expect("Retry-After");
    let secs: u64 = retry.parse().unwrap_or_else(|_| panic!("Retry-After is seconds: {retry}"));
    assert!((1..=window).contains(&secs), "Retry-After {secs} within the window");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_passwords_from_anyone_never_lock_the_user_out_of_another_address() {
    // The default limits, as in the report: five (and more) bad passwords for bob.
    let app = spawn_auth(STANDARD).await;
    let (attacker, owner) = (client_from("127.0.0.40"), client_from("127.0.0.41"));
    for i in 0..7 {
        let r = login(&app, &attacker, "bob", &format!("guess-{i}")).await;
        assert!([StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&r.status()), "{}", r.status());
    }
    assert_limited(login(&app, &attacker, "bob", PW).await, 60).await;
    assert_eq!(login(&app, &owner, "bob", PW).await.status(), StatusCode::OK, "bob from his own address");
    let r = owner.get(app.url("/v2/apps/web/tags/list")).basic_auth("bob", Some(PW)).send().await.unwrap();
    assert_ne!(r.status(), StatusCode::TOO_MANY_REQUESTS, "Basic on /v2 from bob's address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_for_one_name_block_that_name_from_that_address_only() {
    let clock = std::sync::Arc::new(cairn::clock::ManualClock::new(std::time::SystemTime::now()));
    let loaded = load_config(LIMITED);
    let app = spawn_with_clock(clock.clone(), move |c| {
        let (dir, listen) = (c.server.data_dir.clone(), c.server.listen.clone());
        *c = loaded;
        c.server.data_dir = dir;
        c.server.listen = listen;
    })
    .await;
    let (bad, good) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    // Three distinct wrong passwords, one after the other (simultaneous identical ones share
    // one check, which the burst tests cover).
    for pw in ["nope", "wrong", "still-wrong"] {
        assert_error(login(&app, &bad, "carol", pw).await, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    assert_limited(login(&app, &bad, "carol", PW).await, 1).await;
    // Basic straight on /v2 is a login attempt too.
    let r = bad.get(app.url("/v2/x/tags/list")).basic_auth("carol", Some(PW)).send().await.unwrap();
    assert_limited(r, 1).await;
    // Another name from the same address (under the per-address limit), and carol from
    // an address that has not failed, log in.
    assert_eq!(login(&app, &bad, "bob", PW).await.status(), StatusCode::OK);
    assert_eq!(login(&app, &good, "carol", PW).await.status(), StatusCode::OK);
    // The window is counted on the registry's clock: moved, not slept through.
    clock.advance(Duration::from_millis(1200));
    assert_eq!(login(&app, &bad, "carol", PW).await.status(), StatusCode::OK, "the limit lifts after the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failures_for_many_names_block_that_address_only() {
    let app = spawn_auth(LIMITED).await;
    let (bad, good) = (client_from("127.0.0.12"), client_from("127.0.0.13"));
    let fails = ["x1", "x2", "x3", "x4", "x5"].map(|u| login(&app, &bad, u, "nope"));
    for r in futures::future::join_all(fails).await {
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    assert_limited(login(&app, &bad, "bob", PW).await, 1).await;
    assert_eq!(login(&app, &good, "bob", PW).await.status(), StatusCode::OK, "other addresses are not affected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_logins_gets_no_more_checks_than_the_limit() {
    // Production argon2 parameters, so checks overlap in time as they do in a real burst.
    let toml =
        format!("[[auth.users]]\nname = \"bob\"\npassword_hash = \"{}\"\nroles = [\"reader\"]\n", pw_hash_default());
    let app = spawn_auth(&toml).await;
    let attacker = client_from("127.0.0.30");
    let right_at = 37;
    let burst = (0..60).map(|i| {
        let pw = if i == right_at { PW.to_string() } else { format!("guess-{i}") };
        let (app, attacker) = (&app, &attacker);
        async move { (i, login(app, attacker, "bob", &pw).await) }
    });
    let (mut checked, mut limited) = (0, 0);
    for (i, r) in futures::future::join_all(burst).await {
        match r.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert!(header(&r, "retry-after").is_some(), "429 without Retry-After");
            }
            StatusCode::UNAUTHORIZED => {
                assert_ne!(i, right_at, "the right password was checked and refused");
                checked += 1;
            }
            StatusCode::OK => {
                assert_eq!(i, right_at, "a wrong password was accepted");
                checked += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(checked <= 5, "{checked} passwords of a simultaneous burst were checked; the limit is 5");
    assert_eq!(checked + limited, 60);
    // The owner, from an address that has not failed, is not refused.
    let r = login(&app, &client_from("127.0.0.31"), "bob", PW).await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_credentials_presented_at_once_are_all_accepted() {
    // A client sending Basic credentials on many parallel requests: they share one check
    // rather than filling the limit of checks in flight.
    let toml =
        format!("[[auth.users]]\nname = \"bob\"\npassword_hash = \"{}\"\nroles = [\"reader\"]\n", pw_hash_default());
    let app = spawn_auth(&toml).await;
    let c = client_from("127.0.0.32");
    let all = (0..24).map(|_| c.get(app.url("/v2/x/tags/list")).basic_auth("bob", Some(PW)).send());
    for r in futures::future::join_all(all).await {
        let status = r.unwrap().status();
        assert!(status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::UNAUTHORIZED, "{status}");
    }
}

// ---------------------------------------------------------------------------------------
// Actor in history.
// ---------------------------------------------------------------------------------------

async fn last_actor(app: &TestApp, repo: &str, tag: &str) -> (Value, Value) {
    let r = call(app, Method::GET, &format!("/api/v1/repositories/{repo}/tags/{tag}/history"), user("aud")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    (v["events"][0]["actor"].clone(), v["events"][0]["address"].clone())
}

#[tokio::test]
async fn tag_history_records_the_user_who_pushed() {
    let app = spawn_auth(STANDARD).await;
    push_small_image(&app, user("wri"), "apps/hist", "by-basic", "1").await;
    assert_eq!(last_actor(&app, "apps/hist", "by-basic").await, (json!("wri"), json!("127.0.0.1")));
    let (t, _) = token_for(&app, user("bob"), &["repository:apps/hist:pull,push"]).await;
    push_small_image(&app, Cred::Bearer(&t), "apps/hist", "by-token", "2").await;
    assert_eq!(last_actor(&app, "apps/hist", "by-token").await, (json!("bob"), json!("127.0.0.1")));
    let c = client_from("127.0.0.7");
    let r = c
        .post(app.url(&format!("/v2/apps/hist/blobs/uploads/?digest={}", digest(b"{}"))))
        .basic_auth("root", Some(PW))
        .body(b"{}".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let m = image_manifest(&digest(b"{}"), 2, &[], None);
    let r = c
        .put(app.url("/v2/apps/hist/manifests/by-root"))
        .basic_auth("root", Some(PW))
        .header("Content-Type", OCI_MANIFEST)
        .body(m)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(last_actor(&app, "apps/hist", "by-root").await, (json!("root"), json!("127.0.0.7")));
}

#[tokio::test]
async fn anonymous_pushes_are_recorded_as_anonymous() {
    let app = spawn_auth(
        "[[auth.grants]]\nsubjects = [\"anonymous\"]\nrepositories = \"drop/**\"\nactions = [\"pull\", \"push\"]\n\n\
         [[auth.users]]\nname = \"aud\"\npassword_hash = \"{HASH}\"\nroles = [\"auditor\"]\n",
    )
    .await;
    push_small_image(&app, Cred::Anon, "drop/box", "v1", "1").await;
    assert_eq!(last_actor(&app, "drop/box", "v1").await, (json!("anonymous"), json!("127.0.0.1")));
}

// ---------------------------------------------------------------------------------------
// Password hashes: the CLI, and never in Debug.
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn hash_password_reads_stdin_and_prints_one_argon2id_hash() {
    let (ok, out, err) = cairn_cli(&["hash-password"], Some("s3cret pass\n"));
    assert!(ok, "hash-password failed: {err}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {out:?}");
    let hash = lines[0].trim();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(!out.contains("s3cret"), "the password is not echoed");
    let app =
        spawn_auth(&format!("[[auth.users]]\nname = \"ops\"\npassword_hash = \"{hash}\"\nroles = [\"reader\"]\n",))
            .await;
    assert_eq!(call(&app, Method::GET, "/v2/", Cred::Basic("ops", "s3cret pass")).await.status(), StatusCode::OK);
    let r = call(&app, Method::GET, "/v2/", Cred::Basic("ops", "s3cret pass\n")).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "the newline is not part of the password");
}

#[tokio::test]
async fn a_hash_from_cairn_with_default_parameters_logs_in() {
    let h = pw_hash_default();
    assert!(h.starts_with("$argon2id$"), "{h}");
    let app =
        spawn_auth(&format!("[[auth.users]]\nname = \"ops\"\npassword_hash = \"{h}\"\nroles = [\"reader\"]\n")).await;
    assert_eq!(call(&app, Method::GET, "/v2/", Cred::Basic("ops", PW)).await.status(), StatusCode::OK);
    let r = call(&app, Method::GET, "/v2/", Cred::Basic("ops", "pw ")).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}

#[test]
fn config_debug_shows_no_password_hash() {
    let c = load_config(STANDARD);
    assert_eq!(c.auth.users.len(), 7);
    let shown = format!("{c:?}");
    assert!(!shown.contains(pw_hash()), "hash in Debug output");
    assert!(!shown.contains("$argon2"), "hash prefix in Debug output: {shown}");
    let hash_tail = pw_hash().rsplit('$').next().unwrap();
    assert!(!shown.contains(hash_tail), "hash in Debug output");
    assert!(shown.contains("bob"), "still useful: {shown}");
    let pretty = format!("{c:#?}");
    assert!(!pretty.contains(hash_tail));
}
