//! `docker push` / `docker pull` round trip through the registry under test, with no image
//! from the internet: a random rootfs tarball is `docker import`ed as a base, two more layers
//! are added by a legacy-builder `docker build` made only of `COPY` lines (no container runs),
//! and the result is pushed (twice: a CI retry must succeed), removed locally with its base,
//! pulled back by tag and by digest, and compared with what was built: image id, layer diff
//! ids, the manifest digest, and the bytes of every layer and the config in `docker save`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest { name: "docker_push_pull_round_trip", needs: &[Need::Dockerd], run: docker_push_pull_round_trip },
    ClientTest {
        name: "docker_push_to_an_immutable_tag_is_denied",
        needs: &[Need::Dockerd, Need::Cairn],
        run: docker_push_to_an_immutable_tag_is_denied,
    },
    ClientTest {
        name: "docker_push_moves_a_mutable_latest_and_records_history",
        needs: &[Need::Dockerd, Need::Cairn],
        run: docker_push_moves_a_mutable_latest_and_records_history,
    },
];

const T: Duration = Duration::from_secs(180);

pub(crate) fn docker() -> Command {
    let mut c = Command::new("docker");
    // The legacy builder: COPY-only Dockerfiles need no BuildKit and no running container.
    c.env("DOCKER_BUILDKIT", "0");
    c
}

/// Removes the named local images when the test ends, passed or not.
pub(crate) struct LocalImages(pub(crate) Vec<String>);

impl Drop for LocalImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = try_run(docker().arg("rmi").arg("-f").args(&self.0), T);
        }
    }
}

/// `(image id, layer diff ids)` of a local image.
pub(crate) fn inspect(reference: &str) -> (String, Vec<String>) {
    let out = run(docker().args(["image", "inspect", reference]), T);
    let v: Value = serde_json::from_str(&out.stdout).expect("docker image inspect JSON");
    let img = &v[0];
    let id = img["Id"].as_str().expect("Id").to_string();
    let layers = img["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("diff id").to_string())
        .collect();
    (id, layers)
}

/// `docker save` of `reference`, unpacked: `(config bytes, layer tar bytes in order)`.
pub(crate) fn saved(reference: &str, dir: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
    let archive = dir.with_extension("tar");
    run(docker().arg("save").arg("-o").arg(&archive).arg(reference), T);
    untar(&archive, dir);
    let manifest = read_json(&dir.join("manifest.json"));
    let entry = &manifest[0];
    let config = read_file(&dir.join(entry["Config"].as_str().expect("Config")));
    let layers = entry["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .map(|l| read_file(&dir.join(l.as_str().expect("layer path"))))
        .collect();
    (config, layers)
}

fn docker_push_pull_round_trip() {
    let reg = registry();
    let tmp = tempdir("docker");
    let t = tmp.path();
    let suffix = unique_suffix();
    let repo = unique_repo("docker");
    let reference = format!("{}/{repo}:v1", reg.host);
    let base = format!("cairn-clients-base-{suffix}:1");
    let _cleanup = LocalImages(vec![reference.clone(), base.clone()]);

    // Layer 1: a rootfs tarball of random files, imported as the base image.
    let rootfs = t.join("rootfs");
    write_random(&rootfs.join("etc/cairn/seed.bin"), 64 * 1024);
    write_random(&rootfs.join("usr/share/cairn/a.bin"), 48 * 1024);
    write_file(&rootfs.join("hello.txt"), format!("hello from {suffix}\n").as_bytes());
    tar_dir(&rootfs, &t.join("rootfs.tar"));
    run(docker().arg("import").arg(t.join("rootfs.tar")).arg(&base), T);

    // Layers 2 and 3: COPY only.
    let ctx = t.join("ctx");
    write_random(&ctx.join("l2.bin"), 40 * 1024);
    write_random(&ctx.join("l3.bin"), 30 * 1024);
    write_file(
        &ctx.join("Dockerfile"),
        format!("FROM {base}\nCOPY l2.bin /data/l2.bin\nCOPY l3.bin /data/l3.bin\n").as_bytes(),
    );
    run(docker().arg("build").arg("-t").arg(&reference).arg(&ctx), T);
    let (built_id, built_layers) = inspect(&reference);
    assert_eq!(built_layers.len(), 3, "expected base + two COPY layers: {built_layers:?}");
    let (built_config, built_tars) = saved(&reference, &t.join("save-built"));

    // Push, and push again as a re-run CI job would: both succeed with one digest.
    let pushed = run(docker().arg("push").arg(&reference), T);
    let digest = digest_after(&pushed.stdout, "digest:")
        .unwrap_or_else(|| panic!("no digest in `docker push` output:\n{}", pushed.stdout));
    let again = run(docker().arg("push").arg(&reference), T);
    assert_eq!(
        digest_after(&again.stdout, "digest:").as_deref(),
        Some(digest.as_str()),
        "pushing the same image again gave another digest:\n{}",
        again.stdout
    );

    // What the registry holds: a manifest that hashes to the pushed digest and blobs that
    // hash to theirs; the config is the image id.
    let remote = fetch_image(&reg, &repo, "v1");
    assert_eq!(remote.digest, digest, "GET manifest by tag resolves to another digest than the push");
    assert_eq!(remote.media_type, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(remote.blobs.len(), 4, "config + 3 layers");
    assert_eq!(remote.blobs.get(&built_id), Some(&built_config), "config blob differs from the built image's");

    // Remove everything local (the base too, so every layer comes over the wire) and pull.
    run(docker().arg("rmi").arg(&reference).arg(&base), T);
    assert!(!try_run(docker().args(["image", "inspect", &reference]), T).success());
    let pulled = run(docker().arg("pull").arg(&reference), T);
    assert_eq!(
        digest_after(&pulled.stdout, "Digest:").as_deref(),
        Some(digest.as_str()),
        "`docker pull` reports another digest than `docker push`:\n{}",
        pulled.stdout
    );
    assert!(!pulled.stdout.contains("Already exists"), "some layer did not come from the registry:\n{}", pulled.stdout);
    let (pulled_id, pulled_layers) = inspect(&reference);
    assert_eq!(pulled_id, built_id, "image id after pull");
    assert_eq!(pulled_layers, built_layers, "layer diff ids after pull");
    let (pulled_config, pulled_tars) = saved(&reference, &t.join("save-pulled"));
    assert!(pulled_config == built_config, "config bytes in `docker save` differ after the round trip");
    assert_eq!(pulled_tars.len(), built_tars.len());
    for (i, (a, b)) in built_tars.iter().zip(&pulled_tars).enumerate() {
        assert!(a == b, "layer {i} tar differs after the round trip ({} vs {} bytes)", a.len(), b.len());
        assert_eq!(sha256_digest(a), built_layers[i], "layer {i} tar does not hash to its diff id");
    }

    // Pull by digest, as a CD system does.
    let by_digest = format!("{}/{repo}@{digest}", reg.host);
    run(docker().arg("pull").arg(&by_digest), T);
    assert_eq!(inspect(&by_digest).0, built_id, "image pulled by digest");
}

/// Two single-layer images of random content, `docker import`ed as `names` (each also kept
/// for removal by id in `cleanup`); returns their image ids.
pub(crate) fn import_random_images(t: &Path, names: &[&str], cleanup: &mut LocalImages) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let rootfs = t.join(format!("rootfs-{i}"));
        write_random(&rootfs.join("payload.bin"), 32 * 1024);
        tar_dir(&rootfs, &rootfs.with_extension("tar"));
        run(docker().arg("import").arg(rootfs.with_extension("tar")).arg(name), T);
        let id = inspect(name).0;
        // By id too: a tag moved by the test would otherwise leave a dangling image behind.
        cleanup.0.push(id.clone());
        ids.push(id);
    }
    ids
}

/// `docker push`, returning the digest it reports.
pub(crate) fn push(reference: &str) -> String {
    let out = run(docker().arg("push").arg(reference), T);
    digest_after(&out.stdout, "digest:").unwrap_or_else(|| panic!("no digest in `docker push` output:\n{}", out.stdout))
}

/// `docker pull`, returning the digest it reports and the local image id.
fn pull(reference: &str) -> (String, String) {
    let out = run(docker().arg("pull").arg(reference), T);
    let digest = digest_after(&out.stdout, "Digest:")
        .unwrap_or_else(|| panic!("no digest in `docker pull` output:\n{}", out.stdout));
    (digest, inspect(reference).0)
}

/// DESIGN §4 through the docker client: a tag, once pushed, stays. Pushing another image to
/// it fails with `denied: tag ... is immutable ...`; pushing the same image again (a retried
/// CI job) succeeds; and the tag still pulls the first image.
/// Only Cairn promises this (distribution moves tags): a [`Need::Cairn`] test.
fn docker_push_to_an_immutable_tag_is_denied() {
    let reg = cairn_only("tag immutability");
    let tmp = tempdir("docker-immutable");
    let t = tmp.path();
    let suffix = unique_suffix();
    let repo = unique_repo("docker-immutable");
    let reference = format!("{}/{repo}:v1", reg.host);
    let first = format!("cairn-clients-first-{suffix}:1");
    let second = format!("cairn-clients-second-{suffix}:1");
    let mut cleanup = LocalImages(vec![reference.clone(), first.clone(), second.clone()]);
    let ids = import_random_images(t, &[&first, &second], &mut cleanup);

    run(docker().args(["tag", &first, &reference]), T);
    let digest = push(&reference);

    run(docker().args(["tag", &second, &reference]), T);
    let refused = try_run(docker().arg("push").arg(&reference), T);
    assert_immutable_refusal("docker push", &refused, "denied:", &format!("{repo}:v1"), &digest);

    run(docker().args(["tag", &first, &reference]), T);
    assert_eq!(push(&reference), digest, "pushing the first image again reports another digest");

    assert_eq!(get_manifest(&reg, &repo, "v1").0, digest, "the immutable tag moved");
    run(docker().args(["rmi", "-f", &reference, &first, &second]), T);
    let (pulled, id) = pull(&reference);
    assert_eq!(pulled, digest, "`docker pull` of the immutable tag reports another digest");
    assert_eq!(id, ids[0], "the immutable tag pulls another image");
}

/// A Cairn config that makes `latest` mutable in every repository (DESIGN §4): pushing
/// another image to it moves it, and the tag history records the create and the move, and
/// answers what the tag pointed to at a moment between the two pushes.
fn docker_push_moves_a_mutable_latest_and_records_history() {
    let config = "[[immutability.rules]]\nname = \"latest-moves\"\nrepositories = \"**\"\ntags = [\"latest\"]\n\
                  mode = \"mutable\"\n";
    let cairn = cairn_with_config(config, "a mutable `latest` and its tag history");
    let reg = &cairn.reg;
    let tmp = tempdir("docker-mutable");
    let t = tmp.path();
    let suffix = unique_suffix();
    let repo = unique_repo("docker-mutable");
    let reference = format!("{}/{repo}:latest", reg.host);
    let first = format!("cairn-clients-first-{suffix}:1");
    let second = format!("cairn-clients-second-{suffix}:1");
    let mut cleanup = LocalImages(vec![reference.clone(), first.clone(), second.clone()]);
    let ids = import_random_images(t, &[&first, &second], &mut cleanup);

    let pause = Duration::from_millis(30);
    let before = SystemTime::now();
    std::thread::sleep(pause);
    run(docker().args(["tag", &first, &reference]), T);
    let digest_a = push(&reference);
    std::thread::sleep(pause);
    let between = SystemTime::now();
    std::thread::sleep(pause);
    run(docker().args(["tag", &second, &reference]), T);
    let digest_b = push(&reference);
    assert_ne!(digest_a, digest_b, "two different images");

    assert_eq!(get_manifest(reg, &repo, "latest").0, digest_b, "the mutable tag did not move");
    run(docker().args(["rmi", "-f", &reference, &first, &second]), T);
    let (pulled, id) = pull(&reference);
    assert_eq!(pulled, digest_b, "`docker pull` of the moved tag reports another digest");
    assert_eq!(id, ids[1], "the moved tag pulls another image than the second one pushed");

    // History, newest first: the move from A to B, then the create of A.
    let history = get_api_json(reg, &format!("/api/v1/repositories/{repo}/tags/latest/history"));
    assert_eq!(history["repository"], json!(repo), "{history}");
    assert_eq!(history["tag"], json!("latest"), "{history}");
    note(format!("tag history: {history}"));
    let events = history["events"].as_array().unwrap_or_else(|| panic!("no events: {history}"));
    assert_eq!(events.len(), 2, "one create and one move: {history}");
    let (moved, created) = (&events[0], &events[1]);
    assert_eq!(moved["action"], json!("move"), "newest event: {history}");
    assert_eq!((&moved["from"], &moved["to"]), (&json!(digest_a), &json!(digest_b)), "move: {history}");
    assert_eq!(created["action"], json!("create"), "oldest event: {history}");
    assert_eq!((&created["from"], &created["to"]), (&Value::Null, &json!(digest_a)), "create: {history}");
    assert!(history["next_cursor"].is_null(), "one page holds both: {history}");
    let ms = |e: &Value| rfc3339_millis(e["time"].as_str().unwrap_or_else(|| panic!("event without time: {e}")));
    let ms_of = |t: SystemTime| t.duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as i64;
    assert!(
        ms_of(before) <= ms(created) && ms(created) <= ms_of(between) && ms_of(between) <= ms(moved),
        "event times out of order with the pushes (before {}, between {}): {history}",
        rfc3339_utc(before),
        rfc3339_utc(between)
    );
    assert!(created["id"].is_i64() && moved["id"].is_i64(), "event ids: {history}");

    // What the tag pointed to: nothing before the first push, A between the pushes, B now.
    let at = |time: SystemTime| {
        get_api_json(reg, &format!("/api/v1/repositories/{repo}/tags/latest?at={}", rfc3339_utc(time)))
    };
    let then = at(between);
    assert_eq!(then["digest"], json!(digest_a), "?at= between the pushes: {then}");
    assert_eq!(then["mode"], json!("mutable"), "{then}");
    assert_eq!(then["rule"], json!("latest-moves"), "{then}");
    assert_eq!(at(before)["digest"], Value::Null, "?at= before the first push");
    assert_eq!(at(SystemTime::now())["digest"], json!(digest_b), "?at= now");
}
