//! Cairn's access control (DESIGN §8) through the real clients. Each test starts its own
//! Cairn with two users from a config, their argon2id hashes made by `cairn hash-password`:
//! alice (writer) and bob (reader). Every client logs in the way its users do (`docker login`
//! and `podman login` with `--password-stdin` into a private credentials file, skopeo
//! `--src-creds`/`--dest-creds`, oras-py with basic auth or the token flow), pushes and pulls
//! byte-identical content as alice, and is refused with `denied` when bob pushes; without
//! credentials, or with a wrong password, it is told `unauthorized`. A robot made with
//! `cairn token create` against the running server's data directory pulls what its grant
//! allows, cannot push, and stops working (its secret and the bearer tokens it was issued)
//! once `cairn token revoke` has run; one made with `--expires 3s` stops when that passes.
//!
//! Access control is Cairn's: with `CONFORMANCE_URL` set these tests are ignored (they need
//! [`Need::Cairn`]).

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use cairn_conformance::Registry;
use cairn_conformance::server::cairn_bin;
use serde_json::{Value, json};

use crate::docker::{LocalImages, docker, inspect as docker_inspect, saved};
use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;
use crate::podman::{Store, diff_ids, image_id, inspect as podman_inspect, podman};
use crate::skopeo::{build_layout, skopeo};

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest {
        name: "docker_login_push_pull_and_reader_push_denied",
        needs: &[Need::Dockerd, Need::Cairn],
        run: docker_login_push_pull_and_reader_push_denied,
    },
    ClientTest {
        name: "podman_login_push_pull_and_reader_push_denied",
        needs: &[Need::Podman, Need::Cairn],
        run: podman_login_push_pull_and_reader_push_denied,
    },
    ClientTest {
        name: "skopeo_creds_copy_round_trip_and_reader_push_denied",
        needs: &[Need::Skopeo, Need::Umoci, Need::Cairn],
        run: skopeo_creds_copy_round_trip_and_reader_push_denied,
    },
    ClientTest {
        name: "oras_basic_auth_push_pull_and_anonymous_push_refused",
        needs: &[Need::Oras, Need::Cairn],
        run: oras_basic_auth_push_pull_and_anonymous_push_refused,
    },
    ClientTest {
        name: "robot_token_pulls_cannot_push_and_stops_when_revoked",
        needs: &[Need::Skopeo, Need::Umoci, Need::Cairn],
        run: robot_token_pulls_cannot_push_and_stops_when_revoked,
    },
];

const T: Duration = Duration::from_secs(180);

const ALICE: (&str, &str) = ("alice", "pw-alice");
const BOB: (&str, &str) = ("bob", "pw-bob");

/// `cairn hash-password` with the password piped to stdin: the argon2id PHC string.
fn hash_password(password: &str) -> String {
    let out = run_with_input(
        Command::new(cairn_bin()).arg("hash-password"),
        Some(format!("{password}\n").as_bytes()),
        Duration::from_secs(60),
    );
    let hash = out.stdout.trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "`cairn hash-password` printed {:?}, not an argon2id hash", out.stdout);
    hash
}

/// The config every test starts Cairn with; the hashes are made once per test process.
fn auth_config() -> String {
    static HASHES: OnceLock<(String, String)> = OnceLock::new();
    let (alice, bob) = HASHES.get_or_init(|| {
        let bob = std::thread::spawn(|| hash_password(BOB.1));
        (hash_password(ALICE.1), bob.join().expect("hash-password thread"))
    });
    format!(
        "[auth]\nservice = \"cairn\"\ntoken_ttl = \"5m\"\n\n\
         [[auth.users]]\nname = \"alice\"\npassword_hash = '{alice}'\nroles = [\"writer\"]\n\n\
         [[auth.users]]\nname = \"bob\"\npassword_hash = '{bob}'\nroles = [\"reader\"]\n"
    )
}

/// A Cairn of its own with alice and bob.
fn start(what: &str) -> ConfiguredCairn {
    cairn_with_config(&auth_config(), &format!("{what} (access control, DESIGN §8)"))
}

/// Both output streams of a command, for matching and for messages.
fn said(out: &Output) -> String {
    format!("{}\n{}", out.stdout, out.stderr)
}

/// Asserts `out` is a failure whose output contains every one of `markers`
/// (case-insensitively), and shows the line that says so.
fn assert_refused(what: &str, out: &Output, markers: &[&str]) {
    let text = said(out);
    assert!(!out.success(), "{what} succeeded, but should have been refused:\n{text}");
    let lower = text.to_lowercase();
    for m in markers {
        assert!(lower.contains(&m.to_lowercase()), "{what} failed, but its output does not mention {m:?}:\n{text}");
    }
    let line = text.lines().rev().find(|l| lower_contains(l, markers[0])).unwrap_or_default();
    note(format!("{what} refused as expected: {}", line.trim()));
}

fn lower_contains(text: &str, needle: &str) -> bool {
    text.to_lowercase().contains(&needle.to_lowercase())
}

/// What Cairn says when an authenticated subject lacks the action (HTTP 403 DENIED).
fn denied_message(action: &str, repo: &str, who: &str) -> String {
    format!("{action} access to repository {repo} denied for {who}")
}

/// The `auths` entry of a docker-style credentials file for `host`, if any.
fn stored_auth(file: &Path, host: &str) -> Option<Value> {
    if !file.exists() {
        return None;
    }
    let v = read_json(file);
    v["auths"].get(host).cloned()
}

/// base64 of `user:password`, as docker and podman store it (standard alphabet, padded).
fn basic_token(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// --- docker -------------------------------------------------------------------------------------

/// An anonymous push is unauthorized; `docker login` as alice into a private `DOCKER_CONFIG`,
/// a two-layer image pushed and pulled back byte-identical; `docker logout`, bob logs in, his
/// push is denied and his pull of alice's image works; logged out, a pull is unauthorized, and
/// a wrong password does not log in.
fn docker_login_push_pull_and_reader_push_denied() {
    let cairn = start("docker login, push and pull with users");
    let reg = &cairn.reg;
    let tmp = tempdir("docker-auth");
    let t = tmp.path();
    let config_dir = t.join("docker-config");
    std::fs::create_dir_all(&config_dir).expect("docker config dir");
    let config_file = config_dir.join("config.json");
    let dk = || {
        let mut c = docker();
        c.env("DOCKER_CONFIG", &config_dir);
        c
    };
    let login = |(user, password): (&str, &str)| {
        try_run_with_input(
            dk().args(["login", &reg.host, "-u", user, "--password-stdin"]),
            Some(format!("{password}\n").as_bytes()),
            T,
        )
    };

    let suffix = unique_suffix();
    let repo = unique_repo("auth-docker");
    let reference = format!("{}/{repo}:v1", reg.host);
    let bob_reference = format!("{}/{repo}:bob", reg.host);
    let base = format!("cairn-clients-auth-base-{suffix}:1");
    let _cleanup = LocalImages(vec![reference.clone(), bob_reference.clone(), base.clone()]);

    let rootfs = t.join("rootfs");
    write_random(&rootfs.join("etc/cairn/seed.bin"), 48 * 1024);
    write_file(&rootfs.join("hello.txt"), format!("hello from {suffix}\n").as_bytes());
    tar_dir(&rootfs, &t.join("rootfs.tar"));
    run(dk().arg("import").arg(t.join("rootfs.tar")).arg(&base), T);
    let ctx = t.join("ctx");
    write_random(&ctx.join("l2.bin"), 32 * 1024);
    write_file(&ctx.join("Dockerfile"), format!("FROM {base}\nCOPY l2.bin /data/l2.bin\n").as_bytes());
    run(dk().arg("build").arg("-t").arg(&reference).arg(&ctx), T);
    let (built_id, built_layers) = docker_inspect(&reference);
    assert_eq!(built_layers.len(), 2, "base + one COPY layer: {built_layers:?}");
    let (built_config, built_tars) = saved(&reference, &t.join("save-built"));

    // Not logged in: the push is refused, and says why.
    let anonymous = try_run(dk().arg("push").arg(&reference), T);
    assert_refused("anonymous `docker push`", &anonymous, &["unauthorized"]);

    let out = login(ALICE);
    assert!(out.success(), "`docker login -u alice` failed:\n{}", said(&out));
    assert!(out.stdout.contains("Login Succeeded"), "`docker login` said:\n{}", said(&out));
    assert_eq!(
        stored_auth(&config_file, &reg.host).map(|a| a["auth"].clone()),
        Some(json!(basic_token(ALICE.0, ALICE.1))),
        "alice's credentials in {}",
        config_file.display()
    );

    let pushed = run(dk().arg("push").arg(&reference), T);
    let digest = digest_after(&pushed.stdout, "digest:")
        .unwrap_or_else(|| panic!("no digest in `docker push` output:\n{}", pushed.stdout));
    let remote = fetch_image_as(reg, &repo, "v1", Some(ALICE));
    assert_eq!(remote.digest, digest, "GET manifest by tag (Basic auth) resolves to another digest than the push");
    assert_eq!(remote.blobs.len(), 3, "config + 2 layers");
    assert_eq!(remote.blobs.get(&built_id), Some(&built_config), "config blob differs from the built image's");

    run(dk().arg("rmi").arg(&reference).arg(&base), T);
    let pulled = run(dk().arg("pull").arg(&reference), T);
    assert_eq!(digest_after(&pulled.stdout, "Digest:").as_deref(), Some(digest.as_str()), "{}", pulled.stdout);
    let (pulled_id, pulled_layers) = docker_inspect(&reference);
    assert_eq!((pulled_id.as_str(), &pulled_layers), (built_id.as_str(), &built_layers), "image after alice's pull");
    let (pulled_config, pulled_tars) = saved(&reference, &t.join("save-pulled"));
    assert!(pulled_config == built_config, "config bytes in `docker save` differ after the round trip");
    assert_eq!(pulled_tars.len(), built_tars.len());
    for (i, (a, b)) in built_tars.iter().zip(&pulled_tars).enumerate() {
        assert!(a == b, "layer {i} tar differs after the round trip ({} vs {} bytes)", a.len(), b.len());
    }

    // bob, a reader: pushing is denied (403 DENIED), pulling alice's image works.
    let out = run(dk().args(["logout", &reg.host]), T);
    assert!(stored_auth(&config_file, &reg.host).is_none(), "`docker logout` left credentials:\n{}", said(&out));
    let out = login(BOB);
    assert!(out.success(), "`docker login -u bob` failed:\n{}", said(&out));
    run(dk().args(["tag", &reference, &bob_reference]), T);
    let refused = try_run(dk().arg("push").arg(&bob_reference), T);
    assert_refused("bob's `docker push`", &refused, &["denied", &denied_message("push", &repo, "bob")]);
    assert_eq!(manifest_status(reg, &repo, "bob", Some(ALICE)), 404, "bob's refused push left a tag");
    run(dk().args(["rmi", &reference, &bob_reference]), T);
    let pulled = run(dk().arg("pull").arg(&reference), T);
    assert_eq!(digest_after(&pulled.stdout, "Digest:").as_deref(), Some(digest.as_str()), "{}", pulled.stdout);
    assert_eq!(docker_inspect(&reference).0, built_id, "image id after bob's pull");

    // Logged out: an anonymous pull is unauthorized. A wrong password does not log in.
    run(dk().args(["logout", &reg.host]), T);
    run(dk().arg("rmi").arg(&reference), T);
    let anonymous = try_run(dk().arg("pull").arg(&reference), T);
    assert_refused("anonymous `docker pull`", &anonymous, &["unauthorized"]);
    let wrong = login((ALICE.0, "not-alices-password"));
    assert_refused("`docker login` with a wrong password", &wrong, &["unauthorized"]);
    assert!(stored_auth(&config_file, &reg.host).is_none(), "a failed `docker login` stored credentials");
}

/// The HTTP status of GET `/v2/<repo>/manifests/<reference>`.
fn manifest_status(reg: &Registry, repo: &str, reference: &str, creds: Creds) -> u16 {
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.base);
    let resp =
        get_as(&url, creds).header("Accept", MANIFEST_ACCEPT).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.status().as_u16()
}

// --- podman -------------------------------------------------------------------------------------

/// `podman login --password-stdin` as alice into a private auth file, a push and a pull back
/// into an emptied store with the same image id, layers and digest; bob's push is denied.
fn podman_login_push_pull_and_reader_push_denied() {
    let cairn = start("podman login, push and pull with users");
    let reg = &cairn.reg;
    let tmp = tempdir("podman-auth");
    let t = tmp.path();
    let store = t.join("store");
    let _store = Store(&store);
    let authfile = t.join("auth.json");
    // podman refuses a REGISTRY_AUTH_FILE that does not exist; start with no credentials.
    write_file(&authfile, br#"{"auths": {}}"#);
    let pm = || {
        let mut c = podman(&store);
        c.env("REGISTRY_AUTH_FILE", &authfile);
        c
    };
    let login = |(user, password): (&str, &str)| {
        try_run_with_input(
            pm().args(["login", "--tls-verify=false", "--authfile"]).arg(&authfile).args([
                "-u",
                user,
                "--password-stdin",
                &reg.host,
            ]),
            Some(format!("{password}\n").as_bytes()),
            T,
        )
    };
    let push = |reference: &str| {
        let digest_file = t.join(format!("digest-{}", unique_suffix()));
        let out =
            try_run(pm().args(["push", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(reference), T);
        let digest =
            out.success().then(|| String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string());
        (out, digest)
    };

    let repo = unique_repo("auth-podman");
    let reference = format!("{}/{repo}:v1", reg.host);
    let rootfs = t.join("rootfs");
    write_random(&rootfs.join("opt/cairn/payload.bin"), 48 * 1024);
    write_file(&rootfs.join("id.txt"), unique_suffix().as_bytes());
    tar_dir(&rootfs, &t.join("rootfs.tar"));
    run(pm().arg("import").arg(t.join("rootfs.tar")).arg(&reference), T);
    let built = podman_inspect(&store, &reference);
    let (built_id, built_layers) = (image_id(&built), diff_ids(&built));

    let (anonymous, _) = push(&reference);
    assert_refused("anonymous `podman push`", &anonymous, &["unauthorized"]);

    let out = login(ALICE);
    assert!(out.success(), "`podman login -u alice` failed:\n{}", said(&out));
    assert_eq!(
        stored_auth(&authfile, &reg.host).map(|a| a["auth"].clone()),
        Some(json!(basic_token(ALICE.0, ALICE.1))),
        "alice's credentials in {}",
        authfile.display()
    );
    let (out, digest) = push(&reference);
    let digest = digest.unwrap_or_else(|| panic!("alice's `podman push` failed:\n{}", said(&out)));
    let remote = fetch_image_as(reg, &repo, "v1", Some(BOB));
    assert_eq!(remote.digest, digest, "GET manifest by tag (Basic auth) resolves to another digest than the push");
    let manifest: Value = serde_json::from_slice(&remote.manifest).expect("manifest JSON");
    assert_eq!(manifest["config"]["digest"].as_str(), Some(built_id.as_str()), "config digest is the image id");

    run(pm().args(["rmi", "-a", "-f"]), T);
    run(pm().args(["pull", "--tls-verify=false", &reference]), T);
    let pulled = podman_inspect(&store, &reference);
    assert_eq!(image_id(&pulled), built_id, "image id after alice's pull");
    assert_eq!(diff_ids(&pulled), built_layers, "layer diff ids after alice's pull");
    assert_eq!(pulled["Digest"].as_str(), Some(digest.as_str()), "manifest digest after alice's pull");

    run(pm().args(["logout", &reg.host]), T);
    assert!(stored_auth(&authfile, &reg.host).is_none(), "`podman logout` left credentials");
    let out = login(BOB);
    assert!(out.success(), "`podman login -u bob` failed:\n{}", said(&out));
    let bob_reference = format!("{}/{repo}:bob", reg.host);
    run(pm().args(["tag", &reference, &bob_reference]), T);
    let (refused, _) = push(&bob_reference);
    assert_refused("bob's `podman push`", &refused, &["denied", &denied_message("push", &repo, "bob")]);
    assert_eq!(manifest_status(reg, &repo, "bob", Some(ALICE)), 404, "bob's refused push left a tag");

    run(pm().args(["rmi", "-a", "-f"]), T);
    run(pm().args(["pull", "--tls-verify=false", &reference]), T);
    assert_eq!(image_id(&podman_inspect(&store, &reference)), built_id, "image id after bob's pull");
}

// --- skopeo -------------------------------------------------------------------------------------

/// `skopeo copy` with no credentials file of its own (a private, empty `REGISTRY_AUTH_FILE`
/// and `DOCKER_CONFIG`): only `--src-creds` / `--dest-creds` authenticate it.
fn skopeo_copy(t: &Path, src: &str, dest: &str, extra: &[&str]) -> (Option<String>, Output) {
    let digest_file = t.join(format!("digest-{}", unique_suffix()));
    let out = try_run(
        skopeo()
            .env("REGISTRY_AUTH_FILE", t.join("no-auth.json"))
            .env("DOCKER_CONFIG", t.join("no-docker-config"))
            .arg("copy")
            .args(extra)
            .args(["--src-tls-verify=false", "--dest-tls-verify=false", "--digestfile"])
            .arg(&digest_file)
            .arg(src)
            .arg(dest),
        T,
    );
    let digest =
        out.success().then(|| String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string());
    (digest, out)
}

fn creds_arg(flag: &str, (user, password): (&str, &str)) -> String {
    format!("--{flag}-creds={user}:{password}")
}

/// The manifest and every blob of `repo:reference`, read with Basic credentials.
fn remote_blobs_as(
    reg: &Registry,
    repo: &str,
    reference: &str,
    creds: Creds,
) -> (String, std::collections::BTreeMap<String, Vec<u8>>) {
    let f = fetch_image_as(reg, repo, reference, creds);
    let mut all = f.blobs;
    all.insert(f.digest.clone(), f.manifest);
    (f.digest, all)
}

/// The 401 challenge a client starts from, skopeo with no credentials refused as
/// unauthorized, alice's `--dest-creds` copy up and bob's `--src-creds` copy back
/// byte-identical, bob's `--dest-creds` push denied; and the token endpoint issuing bob a
/// token that pulls but does not push, though he asked for both.
fn skopeo_creds_copy_round_trip_and_reader_push_denied() {
    let cairn = start("skopeo copy with --src-creds/--dest-creds");
    let reg = &cairn.reg;
    let tmp = tempdir("skopeo-auth");
    let t = tmp.path();
    let repo = unique_repo("auth-skopeo");
    let layout = t.join("layout");
    let (digest, blobs) = build_layout(&layout, "v1", t);
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{}/{repo}:v1", reg.host);

    // What every client starts from: a 401 naming the token endpoint and the scope.
    let url = format!("{}/v2/{repo}/manifests/v1", reg.base);
    let resp = http().get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 401, "anonymous GET {url}");
    let challenge = resp.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(
        challenge,
        format!("Bearer realm=\"http://{}/token\",service=\"cairn\",scope=\"repository:{repo}:pull\"", reg.host),
        "WWW-Authenticate of an anonymous pull"
    );

    let (_, anonymous) = skopeo_copy(t, &src, &dest, &[]);
    assert_refused("`skopeo copy` with no credentials", &anonymous, &["unauthorized"]);

    let (pushed, out) = skopeo_copy(t, &src, &dest, &[&creds_arg("dest", ALICE)]);
    let pushed = pushed.unwrap_or_else(|| panic!("alice's `skopeo copy --dest-creds` failed:\n{}", said(&out)));
    assert_eq!(pushed, digest, "skopeo pushed another manifest than the layout holds");
    let (remote_digest, remote) = remote_blobs_as(reg, &repo, "v1", Some(ALICE));
    assert_eq!(remote_digest, digest);
    assert_same_blobs("registry vs source layout", &blobs, &remote);

    let back = t.join("back");
    let (_, anonymous) = skopeo_copy(t, &dest, &format!("oci:{}:v1", back.display()), &[]);
    assert_refused("`skopeo copy` from the registry with no credentials", &anonymous, &["unauthorized"]);
    let (pulled, out) = skopeo_copy(t, &dest, &format!("oci:{}:v1", back.display()), &[&creds_arg("src", BOB)]);
    let pulled = pulled.unwrap_or_else(|| panic!("bob's `skopeo copy --src-creds` failed:\n{}", said(&out)));
    assert_eq!(pulled, digest, "skopeo pulled another manifest than it pushed");
    let (back_digest, back_blobs) = oci_layout_image(&back, "v1");
    assert_eq!(back_digest, digest);
    assert_same_blobs("layout copied back by bob vs source layout", &blobs, &back_blobs);

    let bob_dest = format!("docker://{}/{repo}:bob", reg.host);
    let (_, refused) = skopeo_copy(t, &src, &bob_dest, &[&creds_arg("dest", BOB)]);
    assert_refused("bob's `skopeo copy --dest-creds`", &refused, &["denied", &denied_message("push", &repo, "bob")]);
    assert_eq!(manifest_status(reg, &repo, "bob", Some(ALICE)), 404, "bob's refused push left a tag");

    // The token flow by hand: bob asks for pull and push and gets a token that only pulls.
    let token_url = format!("{}/token?service=cairn&scope=repository:{repo}:pull,push", reg.base);
    let resp = get_as(&token_url, Some(BOB)).send().unwrap_or_else(|e| panic!("GET {token_url}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {token_url} as bob");
    let body: Value = resp.json().expect("token JSON");
    let token = body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_string();
    assert_eq!(body["access_token"], json!(token), "{body}");
    assert!(body["expires_in"].as_u64().is_some_and(|s| s > 0), "{body}");
    assert!(body["issued_at"].is_string(), "{body}");
    let manifest = &blobs[&digest];
    let got = http().get(&url).bearer_auth(&token).header("Accept", MANIFEST_ACCEPT).send().expect("GET manifest");
    assert_eq!(got.status().as_u16(), 200, "GET {url} with bob's token");
    assert!(got.bytes().expect("body").as_ref() == manifest.as_slice(), "manifest bytes with bob's token");
    let put_url = format!("{}/v2/{repo}/manifests/bob", reg.base);
    let put = http()
        .put(&put_url)
        .bearer_auth(&token)
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .expect("PUT manifest");
    let status = put.status().as_u16();
    let text = put.text().unwrap_or_default();
    assert_eq!(status, 403, "PUT {put_url} with bob's token: {text}");
    assert!(text.contains("DENIED"), "PUT {put_url} with bob's token: {text}");
}

// --- oras-py ------------------------------------------------------------------------------------

/// `python3 oras_auth_driver.py REQUEST.json RESULT.json`: one push or pull with oras-py,
/// authenticated as the request says; a failure is reported in the result, not raised.
const ORAS_DRIVER: &str = r#"
import json, os, sys
import oras.client

req = json.load(open(sys.argv[1]))
client = oras.client.OrasClient(hostname=req["host"], insecure=True, auth_backend=req["backend"])
if req.get("username"):
    client.auth.set_basic_auth(req["username"], req["password"])
try:
    if req["op"] == "push":
        os.chdir(req["cwd"])
        resp = client.push(target=req["target"], files=req["files"])
        result = {"status": resp.status_code, "digest": resp.headers.get("Docker-Content-Digest")}
    else:
        result = {"files": sorted(client.pull(target=req["target"], outdir=req["outdir"]))}
except Exception as e:
    result = {"error": "%s: %s" % (type(e).__name__, e)}
json.dump(result, open(sys.argv[2], "w"))
"#;

/// Runs one oras-py operation (`backend` "basic" or "token", credentials optional) with a
/// private, empty `DOCKER_CONFIG` (oras-py reads credentials from it too).
fn oras(t: &Path, backend: &str, creds: Creds, mut req: Value) -> Value {
    let script = t.join("oras_auth_driver.py");
    if !script.exists() {
        write_file(&script, ORAS_DRIVER.as_bytes());
    }
    req["backend"] = json!(backend);
    if let Some((user, password)) = creds {
        req["username"] = json!(user);
        req["password"] = json!(password);
    }
    let n = unique_suffix();
    let (req_file, res_file) = (t.join(format!("req-{n}.json")), t.join(format!("res-{n}.json")));
    write_file(&req_file, req.to_string().as_bytes());
    run(
        Command::new("python3")
            .env("DOCKER_CONFIG", t.join("no-docker-config"))
            .arg(&script)
            .arg(&req_file)
            .arg(&res_file),
        T,
    );
    read_json(&res_file)
}

/// oras-py as alice with basic auth (credentials on every request): an artifact pushed and
/// pulled back byte-identical; bob pulls it through the token flow; an anonymous push fails.
fn oras_basic_auth_push_pull_and_anonymous_push_refused() {
    let cairn = start("oras-py push and pull with users");
    let reg = &cairn.reg;
    let tmp = tempdir("oras-auth");
    let t = tmp.path();
    let repo = unique_repo("auth-oras");
    let src = t.join("src");
    let model = write_random(&src.join("model.bin"), 64 * 1024);
    let notes = format!("cairn access test {}\n", unique_suffix()).repeat(20);
    write_file(&src.join("notes.txt"), notes.as_bytes());
    let target = format!("{}/{repo}:v1", reg.host);
    let push_req = |target: &str| {
        json!({"op": "push", "host": reg.host, "target": target, "cwd": src,
                                         "files": ["model.bin", "notes.txt:text/plain"]})
    };

    let res = oras(t, "basic", Some(ALICE), push_req(&target));
    assert_eq!(res["status"], json!(201), "alice's oras-py push (basic auth): {res}");
    let digest = res["digest"].as_str().unwrap_or_else(|| panic!("no digest: {res}")).to_string();
    let remote = fetch_image_as(reg, &repo, "v1", Some(BOB));
    assert_eq!(remote.digest, digest);
    let blobs: Vec<&Vec<u8>> = remote.blobs.values().collect();
    assert!(blobs.contains(&&model) && blobs.contains(&&notes.as_bytes().to_vec()), "files not in the registry");

    for (who, backend, creds) in [("alice", "basic", ALICE), ("bob", "token", BOB)] {
        let out = t.join(format!("out-{who}"));
        let res =
            oras(t, backend, Some(creds), json!({"op": "pull", "host": reg.host, "target": target, "outdir": out}));
        assert_eq!(res["files"].as_array().map(Vec::len), Some(2), "{who}'s oras-py pull ({backend} auth): {res}");
        assert!(read_file(&out.join("model.bin")) == model, "model.bin differs after {who}'s pull");
        assert_eq!(read_file(&out.join("notes.txt")), notes.as_bytes(), "notes.txt after {who}'s pull");
    }

    // No credentials: oras-py's default token flow gets an anonymous token that allows nothing.
    let res = oras(t, "token", None, push_req(&format!("{}/{repo}:anonymous", reg.host)));
    let error = res["error"].as_str().unwrap_or_else(|| panic!("an anonymous oras-py push succeeded: {res}"));
    assert!(
        lower_contains(error, "unauthorized") || lower_contains(error, "authentication required"),
        "anonymous oras-py push failed, but not as unauthorized: {error}"
    );
    note(format!("anonymous oras-py push refused as expected: {error}"));
    assert_eq!(manifest_status(reg, &repo, "anonymous", Some(ALICE)), 404, "the anonymous push left a tag");
}

// --- robots -------------------------------------------------------------------------------------

/// `cairn token …` against the running server's config and data directory.
fn cairn_token(cairn: &ConfiguredCairn, args: &[&str]) -> Output {
    try_run(
        Command::new(cairn_bin())
            .env_remove("CAIRN_CONFIG")
            .arg("token")
            .args(args)
            .arg("--config")
            .arg(&cairn.config)
            .arg("--data-dir")
            .arg(&cairn.data_dir),
        Duration::from_secs(60),
    )
}

/// The line of `cairn token list` for `name`.
fn robot_line(cairn: &ConfiguredCairn, name: &str) -> String {
    let out = cairn_token(cairn, &["list"]);
    assert!(out.success(), "`cairn token list` failed:\n{}", said(&out));
    out.stdout
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap_or_else(|| panic!("`cairn token list` does not show {name}:\n{}", out.stdout))
        .to_string()
}

/// A robot made with `cairn token create --grant '<repo>=pull'` while the server runs:
/// skopeo logs in with its name and secret and pulls byte-identical; its push is denied,
/// and so is a pull of a repository outside its grant; after `cairn token revoke` its
/// secret is unauthorized.
fn robot_token_pulls_cannot_push_and_stops_when_revoked() {
    let cairn = start("robot tokens");
    let reg = &cairn.reg;
    let tmp = tempdir("robot");
    let t = tmp.path();
    let repo = unique_repo("auth-robot");
    let other = unique_repo("auth-robot-other");
    let layout = t.join("layout");
    let (digest, blobs) = build_layout(&layout, "v1", t);
    let src = format!("oci:{}:v1", layout.display());
    let dest = format!("docker://{}/{repo}:v1", reg.host);
    for to in [&dest, &format!("docker://{}/{other}:v1", reg.host)] {
        let (pushed, out) = skopeo_copy(t, &src, to, &[&creds_arg("dest", ALICE)]);
        assert_eq!(pushed.as_deref(), Some(digest.as_str()), "alice's push to {to}:\n{}", said(&out));
    }

    let grant = format!("{repo}=pull");
    let out = cairn_token(&cairn, &["create", "--name", "deploy", "--grant", &grant, "--expires", "30d"]);
    assert!(out.success(), "`cairn token create` failed:\n{}", said(&out));
    assert!(out.stdout.lines().any(|l| l == "robot: deploy"), "`cairn token create` printed:\n{}", out.stdout);
    let secret = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("secret: "))
        .unwrap_or_else(|| panic!("no `secret:` line from `cairn token create`:\n{}", out.stdout))
        .trim()
        .to_string();
    assert!(!secret.is_empty());
    let line = robot_line(&cairn, "deploy");
    assert!(line.contains(&grant) && line.contains("expires"), "`cairn token list`: {line}");
    assert!(!line.contains(&secret), "`cairn token list` shows the secret: {line}");
    let robot = ("deploy", secret.as_str());

    let back = t.join("back");
    let (pulled, out) = skopeo_copy(t, &dest, &format!("oci:{}:v1", back.display()), &[&creds_arg("src", robot)]);
    assert_eq!(pulled.as_deref(), Some(digest.as_str()), "the robot's pull:\n{}", said(&out));
    let (_, back_blobs) = oci_layout_image(&back, "v1");
    assert_same_blobs("layout pulled by the robot vs source layout", &blobs, &back_blobs);

    let (_, refused) =
        skopeo_copy(t, &src, &format!("docker://{}/{repo}:robot", reg.host), &[&creds_arg("dest", robot)]);
    assert_refused("the robot's push", &refused, &["denied", &denied_message("push", &repo, "deploy")]);
    let elsewhere = format!("docker://{}/{other}:v1", reg.host);
    let (_, refused) =
        skopeo_copy(t, &elsewhere, &format!("oci:{}:other", back.display()), &[&creds_arg("src", robot)]);
    assert_refused(
        "the robot's pull outside its grant",
        &refused,
        &["denied", &denied_message("pull", &other, "deploy")],
    );

    // A bearer token issued to the robot before the revoke: it pulls now, and not after.
    let token = token_for(reg, robot, &repo);
    let manifest_url = format!("{}/v2/{repo}/manifests/v1", reg.base);
    let with_token = || {
        let resp = http().get(&manifest_url).bearer_auth(&token).header("Accept", MANIFEST_ACCEPT).send();
        resp.unwrap_or_else(|e| panic!("GET {manifest_url}: {e}")).status().as_u16()
    };
    assert_eq!(with_token(), 200, "GET {manifest_url} with the robot's bearer token");

    let out = cairn_token(&cairn, &["revoke", "deploy"]);
    assert!(out.success() && out.stdout.contains("revoked deploy"), "`cairn token revoke`:\n{}", said(&out));
    assert!(robot_line(&cairn, "deploy").ends_with("revoked"), "`cairn token list` after the revoke");
    assert_eq!(with_token(), 401, "GET {manifest_url} with a bearer token of the revoked robot");
    let (_, refused) = skopeo_copy(t, &dest, &format!("oci:{}:again", back.display()), &[&creds_arg("src", robot)]);
    assert_refused("the revoked robot's pull", &refused, &["unauthorized"]);
    let again = cairn_token(&cairn, &["revoke", "deploy"]);
    assert!(!again.success(), "revoking a revoked robot succeeded:\n{}", said(&again));

    // A robot created with a short lifetime pulls until it expires, then is unauthorized.
    let lifetime = Duration::from_secs(3);
    let created = std::time::Instant::now();
    let out = cairn_token(&cairn, &["create", "--name", "short", "--grant", &grant, "--expires", "3s"]);
    let secret = out.stdout.lines().find_map(|l| l.strip_prefix("secret: ")).map(str::trim).map(String::from);
    let secret = secret.unwrap_or_else(|| panic!("`cairn token create --expires 3s`:\n{}", said(&out)));
    let status = || {
        let resp = get_as(&manifest_url, Some(("short", &secret))).header("Accept", MANIFEST_ACCEPT).send();
        resp.unwrap_or_else(|e| panic!("GET {manifest_url}: {e}")).status().as_u16()
    };
    assert_eq!(status(), 200, "GET {manifest_url} as the robot `short` within its lifetime");
    std::thread::sleep((lifetime + Duration::from_millis(500)).saturating_sub(created.elapsed()));
    assert_eq!(status(), 401, "GET {manifest_url} as the robot `short` after it expired");
    assert!(robot_line(&cairn, "short").ends_with("expired"), "`cairn token list` after the expiry");
}

/// A bearer token from `GET /token` for pulling `repo`, asked with Basic credentials.
fn token_for(reg: &Registry, creds: (&str, &str), repo: &str) -> String {
    let url = format!("{}/token?service=cairn&scope=repository:{repo}:pull", reg.base);
    let resp = get_as(&url, Some(creds)).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET {url} as {}", creds.0);
    let body: Value = resp.json().expect("token JSON");
    body["token"].as_str().unwrap_or_else(|| panic!("no token in {body}")).to_string()
}
