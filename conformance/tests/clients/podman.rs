//! `podman push` / `podman pull` round trips, each test with its own vfs image store in a
//! temporary directory (so they neither need nor touch the machine's podman storage):
//! a three-layer OCI image built with `podman import` plus a COPY-only `podman build`
//! (chroot isolation, nothing runs), and a two-architecture Docker manifest list made with
//! `podman manifest` and pushed with `--all --format v2s2`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{ClientTest, Need};
use crate::helpers::*;

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest { name: "podman_push_pull_round_trip", needs: &[Need::Podman], run: podman_push_pull_round_trip },
    ClientTest {
        name: "podman_push_to_an_immutable_tag_is_denied",
        needs: &[Need::Podman, Need::Cairn],
        run: podman_push_to_an_immutable_tag_is_denied,
    },
    ClientTest {
        name: "podman_oci_index_pushed_twice_to_an_immutable_tag",
        needs: &[Need::Podman, Need::Cairn],
        run: podman_oci_index_pushed_twice_to_an_immutable_tag,
    },
    ClientTest {
        name: "podman_manifest_list_round_trip",
        needs: &[Need::Podman],
        run: podman_manifest_list_round_trip,
    },
];

const T: Duration = Duration::from_secs(180);

/// A podman confined to `store` (vfs driver, cgroupfs, file events: no systemd needed).
/// podman refuses a `--runroot` longer than 50 characters: keep `tempdir` prefixes short.
pub(crate) fn podman(store: &Path) -> Command {
    let mut c = Command::new("podman");
    c.arg("--storage-driver")
        .arg("vfs")
        .arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .arg("--cgroup-manager=cgroupfs")
        .arg("--events-backend=file");
    c
}

/// Removes every image of the private store at the end, so the temporary directory can go.
pub(crate) struct Store<'a>(pub(crate) &'a Path);

impl Drop for Store<'_> {
    fn drop(&mut self) {
        let _ = try_run(podman(self.0).args(["rmi", "-a", "-f"]), T);
    }
}

pub(crate) fn inspect(store: &Path, reference: &str) -> Value {
    let out = run(podman(store).args(["image", "inspect", reference]), T);
    let v: Value = serde_json::from_str(&out.stdout).expect("podman image inspect JSON");
    v[0].clone()
}

pub(crate) fn diff_ids(image: &Value) -> Vec<String> {
    image["RootFS"]["Layers"]
        .as_array()
        .expect("RootFS.Layers")
        .iter()
        .map(|l| l.as_str().expect("diff id").to_string())
        .collect()
}

pub(crate) fn image_id(image: &Value) -> String {
    let id = image["Id"].as_str().expect("Id");
    if id.starts_with("sha256:") { id.to_string() } else { format!("sha256:{id}") }
}

/// sha256 of the uncompressed content of a (gzip) layer blob: its diff id.
fn diff_id_of(blob: &[u8], dir: &Path) -> String {
    let name = &sha256_digest(blob)[7..23];
    let gz = dir.join(format!("layer-{name}.gz"));
    let raw = dir.join(format!("layer-{name}.tar"));
    write_file(&gz, blob);
    run(Command::new("sh").args(["-c", "gzip -dc \"$1\" > \"$2\"", "sh"]).arg(&gz).arg(&raw), T);
    sha256_digest(&read_file(&raw))
}

fn podman_push_pull_round_trip() {
    let reg = registry();
    let tmp = tempdir("podman");
    let t = tmp.path();
    let store = t.join("store");
    let _store = Store(&store);
    let suffix = unique_suffix();
    let repo = unique_repo("podman");
    let reference = format!("{}/{repo}:v1", reg.host);
    let base = format!("localhost/cairn-clients-base-{suffix}:1");

    let rootfs = t.join("rootfs");
    write_random(&rootfs.join("etc/cairn/seed.bin"), 64 * 1024);
    write_random(&rootfs.join("usr/lib/cairn/b.bin"), 32 * 1024);
    tar_dir(&rootfs, &t.join("rootfs.tar"));
    run(podman(&store).arg("import").arg(t.join("rootfs.tar")).arg(&base), T);

    let ctx = t.join("ctx");
    write_random(&ctx.join("l2.bin"), 40 * 1024);
    write_random(&ctx.join("l3.bin"), 30 * 1024);
    write_file(
        &ctx.join("Containerfile"),
        format!("FROM {base}\nCOPY l2.bin /data/l2.bin\nCOPY l3.bin /data/l3.bin\n").as_bytes(),
    );
    run(
        podman(&store)
            .args(["build", "--isolation", "chroot", "--pull=never", "-t", &reference, "-f"])
            .arg(ctx.join("Containerfile"))
            .arg(&ctx),
        T,
    );
    let built = inspect(&store, &reference);
    let built_id = image_id(&built);
    let built_layers = diff_ids(&built);
    assert_eq!(built_layers.len(), 3, "expected base + two COPY layers: {built_layers:?}");

    let digest_file = t.join("digest");
    run(podman(&store).args(["push", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&reference), T);
    let digest = String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string();

    let remote = fetch_image(&reg, &repo, "v1");
    assert_eq!(remote.digest, digest, "GET manifest by tag resolves to another digest than the push");
    assert_eq!(remote.media_type, "application/vnd.oci.image.manifest.v1+json");
    let manifest: Value = serde_json::from_slice(&remote.manifest).expect("manifest JSON");
    assert_eq!(manifest["config"]["digest"].as_str(), Some(built_id.as_str()), "config digest is the image id");
    let remote_diff_ids: Vec<String> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| diff_id_of(&remote.blobs[l["digest"].as_str().expect("digest")], t))
        .collect();
    assert_eq!(remote_diff_ids, built_layers, "uncompressed layers in the registry differ from the built ones");

    run(podman(&store).args(["rmi", &reference, &base]), T);
    let left = run(podman(&store).args(["images", "-q"]), T);
    assert!(left.stdout.trim().is_empty(), "images left before the pull: {}", left.stdout);
    run(podman(&store).args(["pull", "--tls-verify=false", &reference]), T);
    let pulled = inspect(&store, &reference);
    assert_eq!(image_id(&pulled), built_id, "image id after pull");
    assert_eq!(diff_ids(&pulled), built_layers, "layer diff ids after pull");
    assert_eq!(pulled["Digest"].as_str(), Some(digest.as_str()), "manifest digest after pull");

    // What podman now holds, saved as an OCI archive, is byte for byte what the registry has.
    let archive = t.join("saved.tar");
    run(podman(&store).args(["save", "--format", "oci-archive", "-o"]).arg(&archive).arg(&reference), T);
    let saved = t.join("saved");
    untar(&archive, &saved);
    let (saved_digest, saved_blobs) = oci_layout_image(&saved, &reference);
    assert_eq!(saved_digest, digest);
    let mut remote_all = remote.blobs.clone();
    remote_all.insert(remote.digest.clone(), remote.manifest.clone());
    assert_same_blobs("podman save after pull vs registry", &saved_blobs, &remote_all);
}

/// Two single-layer linux images, amd64 and arm64, imported into `store` and added to a new
/// local manifest list `list`: `(arch, image name, image id)` of each.
fn local_manifest_list(store: &Path, t: &Path, suffix: &str, list: &str) -> Vec<(&'static str, String, String)> {
    let mut ids = Vec::new();
    for arch in ["amd64", "arm64"] {
        let rootfs = t.join(format!("rootfs-{arch}"));
        write_random(&rootfs.join(format!("opt/{arch}/payload.bin")), 48 * 1024);
        write_file(&rootfs.join("arch.txt"), arch.as_bytes());
        let tar = t.join(format!("{arch}.tar"));
        tar_dir(&rootfs, &tar);
        let name = format!("localhost/cairn-clients-{arch}-{suffix}:1");
        run(podman(store).args(["import", "--os", "linux", "--arch", arch]).arg(&tar).arg(&name), T);
        ids.push((arch, name.clone(), image_id(&inspect(store, &name))));
    }
    run(podman(store).args(["manifest", "create", list]), T);
    for (_, name, _) in &ids {
        run(podman(store).args(["manifest", "add", list, &format!("containers-storage:{name}")]), T);
    }
    ids
}

/// `podman push --tls-verify=false` of `reference` (when it exits 0: the digest it wrote).
fn try_push(store: &Path, t: &Path, reference: &str) -> (Output, Option<String>) {
    let digest_file = t.join(format!("digest-{}", unique_suffix()));
    let out =
        try_run(podman(store).args(["push", "--tls-verify=false", "--digestfile"]).arg(&digest_file).arg(reference), T);
    let digest =
        out.success().then(|| String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string());
    (out, digest)
}

fn push(store: &Path, t: &Path, reference: &str) -> String {
    let (out, digest) = try_push(store, t, reference);
    digest
        .unwrap_or_else(|| panic!("`podman push {reference}` failed ({}):\n{}\n{}", out.status, out.stdout, out.stderr))
}

/// DESIGN §4 through podman: another image pushed to an existing tag is refused (`denied`,
/// `immutable`), the same image pushed again is accepted, and the tag keeps its image.
fn podman_push_to_an_immutable_tag_is_denied() {
    let reg = cairn_only("tag immutability");
    let tmp = tempdir("podman-imm");
    let t = tmp.path();
    let store = t.join("store");
    let _store = Store(&store);
    let suffix = unique_suffix();
    let repo = unique_repo("podman-immutable");
    let reference = format!("{}/{repo}:v1", reg.host);

    let mut ids = Vec::new();
    for (i, name) in ["first", "second"].iter().enumerate() {
        let rootfs = t.join(format!("rootfs-{i}"));
        write_random(&rootfs.join("payload.bin"), 32 * 1024);
        tar_dir(&rootfs, &rootfs.with_extension("tar"));
        let local = format!("localhost/cairn-clients-{name}-{suffix}:1");
        run(podman(&store).arg("import").arg(rootfs.with_extension("tar")).arg(&local), T);
        ids.push((local.clone(), image_id(&inspect(&store, &local))));
    }

    run(podman(&store).args(["tag", &ids[0].0, &reference]), T);
    let digest = push(&store, t, &reference);

    run(podman(&store).args(["tag", &ids[1].0, &reference]), T);
    let (refused, _) = try_push(&store, t, &reference);
    assert_immutable_refusal("podman push", &refused, "denied", &format!("{repo}:v1"), &digest);

    run(podman(&store).args(["tag", &ids[0].0, &reference]), T);
    assert_eq!(push(&store, t, &reference), digest, "pushing the first image again wrote another digest");

    assert_eq!(get_manifest(&reg, &repo, "v1").0, digest, "the immutable tag moved");
    run(podman(&store).args(["rmi", "-a", "-f"]), T);
    run(podman(&store).args(["pull", "--tls-verify=false", &reference]), T);
    let pulled = inspect(&store, &reference);
    assert_eq!(pulled["Digest"].as_str(), Some(digest.as_str()), "digest of the immutable tag after pull");
    assert_eq!(image_id(&pulled), ids[0].1, "the immutable tag pulls another image");
}

/// A multi-arch OCI index on an immutable tag: `podman manifest push --all` puts both
/// platform manifests by digest and then the index by tag; doing it again (a retried CI job)
/// succeeds too, with the same digest, and the repository has no tag but that one.
fn podman_oci_index_pushed_twice_to_an_immutable_tag() {
    let reg = cairn_only("re-pushing an index to an immutable tag");
    let tmp = tempdir("podman-idx");
    let t = tmp.path();
    let store = t.join("store");
    let _store = Store(&store);
    let suffix = unique_suffix();
    let repo = unique_repo("podman-index");
    let reference = format!("{}/{repo}:multi", reg.host);
    let list = format!("localhost/cairn-clients-index-{suffix}:1");
    let ids = local_manifest_list(&store, t, &suffix, &list);

    let (mut digests, mut manifest_puts) = (Vec::new(), Vec::new());
    for attempt in ["first", "second"] {
        let digest_file = t.join(format!("digest-{attempt}"));
        let out = try_run(
            podman(&store)
                .args(["--log-level=debug", "manifest", "push", "--all", "--format", "oci", "--tls-verify=false"])
                .arg("--digestfile")
                .arg(&digest_file)
                .arg(&list)
                .arg(format!("docker://{reference}")),
            T,
        );
        assert!(
            out.success(),
            "{attempt} `podman manifest push --all` of the index failed ({}):\n{}\n{}",
            out.status,
            out.stdout,
            out.stderr
        );
        // Both times the platform manifests go up by digest and the index by tag: the second
        // push is a real re-PUT of an immutable tag, not a push skipped by the client.
        let marker = format!("PUT http://{}/v2/{repo}/manifests/", reg.host);
        let puts: Vec<String> = out
            .stderr
            .lines()
            .filter_map(|l| l.split_once(&marker).map(|(_, rest)| rest.trim_end_matches(['"', '\\']).to_string()))
            .collect();
        manifest_puts.push(puts);
        digests.push(String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string());
    }
    assert_eq!(digests[0], digests[1], "the second push of the same index wrote another digest");

    let remote = fetch_image(&reg, &repo, "multi");
    assert_eq!(remote.digest, digests[0], "GET index by tag resolves to another digest than the push");
    assert_eq!(remote.media_type, "application/vnd.oci.image.index.v1+json");
    let index: Value = serde_json::from_slice(&remote.manifest).expect("index JSON");
    let children = index["manifests"].as_array().expect("manifests");
    assert_eq!(children.len(), 2, "two platforms: {index}");
    for (arch, _, id) in &ids {
        let child = children
            .iter()
            .find(|c| c["platform"]["architecture"].as_str() == Some(arch))
            .unwrap_or_else(|| panic!("no {arch} entry in {index}"));
        let child_manifest: Value =
            serde_json::from_slice(&remote.blobs[child["digest"].as_str().expect("digest")]).expect("child JSON");
        assert_eq!(child_manifest["config"]["digest"].as_str(), Some(id.as_str()), "{arch} config");
    }
    let mut platform: Vec<&str> = children.iter().map(|c| c["digest"].as_str().expect("digest")).collect();
    platform.sort();
    for (n, puts) in manifest_puts.iter().enumerate() {
        // The index last, after both platform manifests, by digest.
        let (last, before) = puts.split_last().unwrap_or_else(|| panic!("push #{}: no manifest PUT logged", n + 1));
        let mut before: Vec<&str> = before.iter().map(String::as_str).collect();
        before.sort();
        assert_eq!((before, last.as_str()), (platform.clone(), "multi"), "push #{}: manifest PUTs {puts:?}", n + 1);
    }
    // The platform manifests went by digest: the index's tag is the only one.
    let url = format!("{}/v2/{repo}/tags/list", reg.base);
    let tags: Value = http().get(&url).send().and_then(|r| r.json()).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(tags["tags"], serde_json::json!(["multi"]), "GET {url}");
}

fn podman_manifest_list_round_trip() {
    let reg = registry();
    let tmp = tempdir("podman-list");
    let t = tmp.path();
    let store = t.join("store");
    let _store = Store(&store);
    let suffix = unique_suffix();
    let repo = unique_repo("podman-list");
    let reference = format!("{}/{repo}:multi", reg.host);
    let list = format!("localhost/cairn-clients-list-{suffix}:1");

    let ids = local_manifest_list(&store, t, &suffix, &list);
    let digest_file = t.join("digest");
    run(
        podman(&store)
            .args(["manifest", "push", "--all", "--format", "v2s2", "--tls-verify=false", "--digestfile"])
            .arg(&digest_file)
            .arg(&list)
            .arg(format!("docker://{reference}")),
        T,
    );
    let digest = String::from_utf8(read_file(&digest_file)).expect("digest file").trim().to_string();

    let remote = fetch_image(&reg, &repo, "multi");
    assert_eq!(remote.digest, digest, "GET manifest list by tag resolves to another digest than the push");
    assert_eq!(remote.media_type, "application/vnd.docker.distribution.manifest.list.v2+json");
    let index: Value = serde_json::from_slice(&remote.manifest).expect("list JSON");
    let children = index["manifests"].as_array().expect("manifests");
    assert_eq!(children.len(), 2, "two platforms: {index}");

    // Pull each platform back into an empty store: the image ids (config digests) match.
    for (_, name, _) in &ids {
        run(podman(&store).args(["rmi", "-f", name]), T);
    }
    let _ = try_run(podman(&store).args(["manifest", "rm", &list]), T);
    for (arch, _, id) in &ids {
        let child = children
            .iter()
            .find(|c| c["platform"]["architecture"].as_str() == Some(arch))
            .unwrap_or_else(|| panic!("no {arch} entry in {index}"));
        let child_manifest: Value =
            serde_json::from_slice(&remote.blobs[child["digest"].as_str().expect("digest")]).expect("child JSON");
        assert_eq!(child_manifest["config"]["digest"].as_str(), Some(id.as_str()), "{arch} config");

        run(podman(&store).args(["pull", "--tls-verify=false", "--arch", arch, &reference]), T);
        let pulled = inspect(&store, &reference);
        assert_eq!(&image_id(&pulled), id, "{arch} image id after pull");
        assert_eq!(pulled["Architecture"].as_str(), Some(*arch));
        run(podman(&store).args(["rmi", "-f", &reference]), T);
    }
}
