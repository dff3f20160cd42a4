//! `docker push` / `docker pull` round trip through the registry under test, with no image
//! from the internet: a random rootfs tarball is `docker import`ed as a base, two more layers
//! are added by a legacy-builder `docker build` made only of `COPY` lines (no container runs),
//! and the result is pushed (twice: a CI retry must succeed), removed locally with its base,
//! pulled back by tag and by digest, and compared with what was built: image id, layer diff
//! ids, the manifest digest, and the bytes of every layer and the config in `docker save`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_conformance::Registry;
use serde_json::Value;

use crate::helpers::*;

const T: Duration = Duration::from_secs(180);

fn docker() -> Command {
    let mut c = Command::new("docker");
    // The legacy builder: COPY-only Dockerfiles need no BuildKit and no running container.
    c.env("DOCKER_BUILDKIT", "0");
    c
}

/// Panics, naming `.ci/setup`, unless the docker client is installed and dockerd answers.
fn require_dockerd() {
    require_tool("docker");
    let out = try_run(docker().arg("info").arg("--format").arg("{{.ServerVersion}}"), Duration::from_secs(30));
    assert!(
        out.success() && !out.stdout.trim().is_empty(),
        "dockerd does not answer `docker info`: run `bash .ci/setup` as root (it starts dockerd \
         with --storage-driver vfs).\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.stdout,
        out.stderr
    );
}

/// Removes the named local images when the test ends, passed or not.
struct LocalImages(Vec<String>);

impl Drop for LocalImages {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = try_run(docker().arg("rmi").arg("-f").args(&self.0), T);
        }
    }
}

/// `(image id, layer diff ids)` of a local image.
fn inspect(reference: &str) -> (String, Vec<String>) {
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
fn saved(reference: &str, dir: &Path) -> (Vec<u8>, Vec<Vec<u8>>) {
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

#[test]
fn docker_push_pull_round_trip() {
    require_dockerd();
    let reg = Registry::get();
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

/// DESIGN §4 through the docker client: a tag, once pushed, stays. Pushing another image to
/// it fails with `denied: ... is immutable ...` and the tag still pulls the first image.
/// Only Cairn promises this (distribution moves tags), so another registry is not checked.
#[test]
#[ignore = "needs Cairn's tag immutability (DESIGN §4), not built yet: run with --ignored"]
fn docker_push_to_an_immutable_tag_is_denied() {
    require_dockerd();
    let reg = Registry::get();
    if !reg.is_cairn() {
        eprintln!("[clients] NOTE: {} is not Cairn; tag immutability is not checked", reg.base);
        return;
    }
    let tmp = tempdir("docker-immutable");
    let t = tmp.path();
    let suffix = unique_suffix();
    let repo = unique_repo("docker-immutable");
    let reference = format!("{}/{repo}:release", reg.host);
    let first = format!("cairn-clients-first-{suffix}:1");
    let second = format!("cairn-clients-second-{suffix}:1");
    let mut cleanup = LocalImages(vec![reference.clone(), first.clone(), second.clone()]);

    let mut ids = Vec::new();
    for name in [&first, &second] {
        let rootfs = t.join(format!("rootfs-{}", ids.len()));
        write_random(&rootfs.join("payload.bin"), 32 * 1024);
        tar_dir(&rootfs, &rootfs.with_extension("tar"));
        run(docker().arg("import").arg(rootfs.with_extension("tar")).arg(name), T);
        ids.push(inspect(name).0);
        // By id too: a tag moved by the test would otherwise leave a dangling image behind.
        cleanup.0.push(ids.last().expect("id").clone());
    }

    run(docker().args(["tag", &first, &reference]), T);
    let pushed = run(docker().arg("push").arg(&reference), T);
    let digest = digest_after(&pushed.stdout, "digest:").expect("digest in `docker push` output");

    run(docker().args(["tag", &second, &reference]), T);
    let refused = try_run(docker().arg("push").arg(&reference), T);
    let said = format!("{}\n{}", refused.stdout, refused.stderr);
    assert!(!refused.success(), "pushing another image to an immutable tag succeeded:\n{said}");
    assert!(
        said.contains("denied") && said.contains("immutable") && said.contains(&digest),
        "docker should show `denied: tag ... is immutable; it points to {digest} ...`, it said:\n{said}"
    );

    run(docker().args(["rmi", "-f", &reference, &first, &second]), T);
    run(docker().arg("pull").arg(&reference), T);
    assert_eq!(inspect(&reference).0, ids[0], "the immutable tag moved");
}
