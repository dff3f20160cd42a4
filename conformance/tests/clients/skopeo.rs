//! `skopeo copy` between OCI image layouts and the registry under test. The layout is built
//! by umoci (a repacked rootfs layer, an inserted file layer, a labelled config), copied up,
//! copied back into a fresh layout and compared blob for blob; and copied from one repository
//! of the registry to another, which makes skopeo mount the layers across repositories.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_conformance::Registry;
use serde_json::Value;

use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest {
        name: "skopeo_oci_layout_round_trip",
        needs: &[Need::Skopeo, Need::Umoci],
        run: skopeo_oci_layout_round_trip,
    },
    ClientTest {
        name: "skopeo_copy_between_repositories_mounts_blobs",
        needs: &[Need::Skopeo, Need::Umoci],
        run: skopeo_copy_between_repositories_mounts_blobs,
    },
    ClientTest {
        name: "skopeo_copy_to_an_immutable_tag_is_denied",
        needs: &[Need::Skopeo, Need::Umoci, Need::Cairn],
        run: skopeo_copy_to_an_immutable_tag_is_denied,
    },
    ClientTest {
        name: "skopeo_pushes_and_pulls_over_tls_with_a_private_ca",
        needs: &[Need::Skopeo, Need::Umoci, Need::Cairn],
        run: skopeo_pushes_and_pulls_over_tls_with_a_private_ca,
    },
];

const T: Duration = Duration::from_secs(120);

fn umoci() -> Command {
    Command::new("umoci")
}

pub(crate) fn skopeo() -> Command {
    Command::new("skopeo")
}

/// Builds an OCI layout at `layout` with one image tagged `tag`: two layers of random content
/// and a config with a label. Returns its manifest digest and every blob (manifest included).
pub(crate) fn build_layout(layout: &Path, tag: &str, work: &Path) -> (String, BTreeMap<String, Vec<u8>>) {
    let image = format!("{}:{tag}", layout.display());
    run(umoci().args(["init", "--layout"]).arg(layout), T);
    run(umoci().args(["new", "--image", &image]), T);
    let bundle = work.join("bundle");
    run(umoci().args(["unpack", "--rootless", "--image", &image]).arg(&bundle), T);
    write_random(&bundle.join("rootfs/opt/cairn/one.bin"), 64 * 1024);
    write_file(&bundle.join("rootfs/etc/cairn.conf"), format!("id = {}\n", unique_suffix()).as_bytes());
    run(umoci().args(["repack", "--image", &image]).arg(&bundle), T);
    let extra = work.join("two.bin");
    write_random(&extra, 32 * 1024);
    run(umoci().args(["insert", "--image", &image]).arg(&extra).arg("/opt/cairn/two.bin"), T);
    run(
        umoci().args([
            "config",
            "--image",
            &image,
            "--config.label",
            "org.opencontainers.image.source=https://example.invalid/cairn-clients",
        ]),
        T,
    );
    run(umoci().args(["gc", "--layout"]).arg(layout), T);
    let (digest, blobs) = oci_layout_image(layout, tag);
    let manifest: Value = serde_json::from_slice(&blobs[&digest]).expect("manifest JSON");
    assert_eq!(manifest["layers"].as_array().map(Vec::len), Some(2), "umoci built {manifest}");
    (digest, blobs)
}

/// `skopeo copy` with TLS off on both sides; when it exits 0, also the digest it wrote.
fn try_copy(src: &str, dest: &str, work: &Path, extra: &[&str]) -> (Option<String>, Output) {
    let digest_file = work.join(format!("digest-{}", unique_suffix()));
    let out = try_run(
        skopeo()
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

/// `skopeo copy` with TLS off on both sides; returns the digest skopeo wrote.
fn copy(src: &str, dest: &str, work: &Path, extra: &[&str]) -> (String, Output) {
    match try_copy(src, dest, work, extra) {
        (Some(digest), out) => (digest, out),
        (None, out) => {
            panic!(
                "`skopeo copy {src} {dest}` failed ({}).\n--- stdout ---\n{}\n--- stderr ---\n{}",
                out.status, out.stdout, out.stderr
            )
        }
    }
}

/// The manifest plus every blob the registry serves for `repo:reference`.
fn remote_blobs(reg: &Registry, repo: &str, reference: &str) -> (String, BTreeMap<String, Vec<u8>>) {
    let f = fetch_image(reg, repo, reference);
    let mut all = f.blobs;
    all.insert(f.digest.clone(), f.manifest);
    (f.digest, all)
}

fn skopeo_oci_layout_round_trip() {
    let reg = registry();
    let tmp = tempdir("skopeo");
    let t = tmp.path();
    let repo = unique_repo("skopeo");
    let layout = t.join("layout");
    let (digest, blobs) = build_layout(&layout, "v1", t);

    let dest = format!("docker://{}/{repo}:v1", reg.host);
    let (pushed, _) = copy(&format!("oci:{}:v1", layout.display()), &dest, t, &[]);
    assert_eq!(pushed, digest, "skopeo pushed another manifest than the layout holds");
    let (remote_digest, remote) = remote_blobs(&reg, &repo, "v1");
    assert_eq!(remote_digest, digest);
    assert_same_blobs("registry vs source layout", &blobs, &remote);

    let back = t.join("back");
    let (pulled, _) = copy(&dest, &format!("oci:{}:v1", back.display()), t, &[]);
    assert_eq!(pulled, digest, "skopeo pulled another manifest than it pushed");
    let (back_digest, back_blobs) = oci_layout_image(&back, "v1");
    assert_eq!(back_digest, digest);
    assert_same_blobs("layout copied back vs source layout", &blobs, &back_blobs);
}

fn skopeo_copy_between_repositories_mounts_blobs() {
    let reg = registry();
    let tmp = tempdir("skopeo-mount");
    let t = tmp.path();
    let repo_a = unique_repo("skopeo-a");
    let repo_b = unique_repo("skopeo-b");
    let layout = t.join("layout");
    let (digest, blobs) = build_layout(&layout, "v1", t);
    let manifest: Value = serde_json::from_slice(&blobs[&digest]).expect("manifest JSON");

    let src = format!("docker://{}/{repo_a}:v1", reg.host);
    let dest = format!("docker://{}/{repo_b}:v1", reg.host);
    copy(&format!("oci:{}:v1", layout.display()), &src, t, &[]);
    let (copied, out) = copy(&src, &dest, t, &["--debug"]);
    assert_eq!(copied, digest, "registry-to-registry copy changed the manifest digest");

    // skopeo tries a cross-repository mount for every layer it knows to be in repo_a.
    let from = format!("from={}", repo_a.replace('/', "%2F"));
    for layer in manifest["layers"].as_array().expect("layers") {
        let d = layer["digest"].as_str().expect("digest").replace(':', "%3A");
        let attempt = format!("/v2/{repo_b}/blobs/uploads/?{from}&mount={d}");
        assert!(
            out.stderr.contains(&attempt),
            "skopeo did not try to mount {d} from {repo_a} into {repo_b}:\n{}",
            out.stderr
        );
    }
    let mounted = out.stderr.matches("mount OK").count();
    note(format!("skopeo: {mounted} blob(s) mounted across repositories"));
    if reg.is_cairn() {
        assert!(
            mounted >= manifest["layers"].as_array().map_or(0, Vec::len),
            "Cairn did not answer the cross-repository mounts with 201:\n{}",
            out.stderr
        );
    }

    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &dest]), T);
    assert!(raw.stdout.as_bytes() == blobs[&digest].as_slice(), "manifest of {repo_b} differs from {repo_a}'s");
    let inspected = run(skopeo().args(["inspect", "--tls-verify=false", &dest]), T);
    let v: Value = serde_json::from_str(&inspected.stdout).expect("skopeo inspect JSON");
    assert_eq!(v["Digest"].as_str(), Some(digest.as_str()));
    assert_eq!(v["Labels"]["org.opencontainers.image.source"].as_str(), Some("https://example.invalid/cairn-clients"));
    let tags = run(skopeo().args(["list-tags", "--tls-verify=false", &format!("docker://{}/{repo_b}", reg.host)]), T);
    let tags: Value = serde_json::from_str(&tags.stdout).expect("skopeo list-tags JSON");
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    for repo in [&repo_a, &repo_b] {
        let (d, remote) = remote_blobs(&reg, repo, "v1");
        assert_eq!(d, digest, "{repo}:v1");
        assert_same_blobs(&format!("{repo} vs source layout"), &blobs, &remote);
    }
}

/// DESIGN §4 through skopeo: copying another image to an existing tag is refused (`denied`,
/// `immutable`), copying the same image again is accepted, deleting the image is refused, and
/// the tag keeps its manifest.
fn skopeo_copy_to_an_immutable_tag_is_denied() {
    let reg = cairn_only("tag immutability");
    let tmp = tempdir("skopeo-immutable");
    let t = tmp.path();
    let repo = unique_repo("skopeo-immutable");
    let (layout_a, layout_b) = (t.join("layout-a"), t.join("layout-b"));
    let (digest_a, blobs_a) = build_layout(&layout_a, "v1", &t.join("work-a"));
    let (digest_b, _) = build_layout(&layout_b, "v1", &t.join("work-b"));
    assert_ne!(digest_a, digest_b, "two different images");
    let (src_a, src_b) = (format!("oci:{}:v1", layout_a.display()), format!("oci:{}:v1", layout_b.display()));
    let dest = format!("docker://{}/{repo}:v1", reg.host);

    let (pushed, _) = copy(&src_a, &dest, t, &[]);
    assert_eq!(pushed, digest_a, "skopeo pushed another manifest than the layout holds");

    let (_, refused) = try_copy(&src_b, &dest, t, &[]);
    assert_immutable_refusal("skopeo copy", &refused, "denied", &format!("{repo}:v1"), &digest_a);

    let (again, _) = copy(&src_a, &dest, t, &[]);
    assert_eq!(again, digest_a, "copying the first image again wrote another digest");

    // `skopeo delete` resolves the tag and deletes the manifest by digest: the manifest an
    // immutable tag points to is refused the same way (skopeo prints the raw error body, so
    // the code shows as `DENIED` in JSON, not as `denied:`).
    let deleted = try_run(skopeo().args(["delete", "--tls-verify=false", &dest]), T);
    assert_immutable_refusal("skopeo delete", &deleted, "DENIED", &format!("{repo}:v1"), &digest_a);

    let inspected = run(skopeo().args(["inspect", "--tls-verify=false", &dest]), T);
    let v: Value = serde_json::from_str(&inspected.stdout).expect("skopeo inspect JSON");
    assert_eq!(v["Digest"].as_str(), Some(digest_a.as_str()), "the immutable tag moved");
    let (remote_digest, remote) = remote_blobs(&reg, &repo, "v1");
    assert_eq!(remote_digest, digest_a, "the immutable tag moved");
    assert_same_blobs("registry vs the first layout", &blobs_a, &remote);
}

/// A private CA and a certificate it signed for 127.0.0.1 and localhost, made by `openssl`
/// in `dir`: `ca.crt`, `tls.crt`, `tls.key`.
fn private_ca(dir: &Path) {
    let ssl = |args: &[&str]| {
        run(Command::new("openssl").current_dir(dir).args(args), T);
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=Cairn test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ]);
    ssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
    ]);
    write_file(&dir.join("san.ext"), b"subjectAltName = IP:127.0.0.1, DNS:localhost\n");
    ssl(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "tls.crt",
    ]);
}

/// Cairn serving HTTPS with a certificate from a private CA: skopeo, told to trust the CA
/// (`--dest-cert-dir` / `--src-cert-dir` holding `ca.crt`) and verifying TLS, pushes an
/// image and pulls it back identical; without the CA it refuses the registry's certificate.
fn skopeo_pushes_and_pulls_over_tls_with_a_private_ca() {
    let tmp = tempdir("skopeo-tls");
    let t = tmp.path();
    let pki = t.join("pki");
    std::fs::create_dir_all(&pki).expect("pki dir");
    private_ca(&pki);
    let certs = t.join("certs.d");
    std::fs::create_dir_all(&certs).expect("cert dir");
    std::fs::copy(pki.join("ca.crt"), certs.join("ca.crt")).expect("copy the CA");
    let cairn = cairn_with_config(
        &format!(
            "[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
            pki.join("tls.crt").display(),
            pki.join("tls.key").display()
        ),
        "TLS served by Cairn",
    );
    let reg = &cairn.reg;
    assert!(reg.base.starts_with("https://"), "Cairn did not say it serves HTTPS: {}", reg.base);
    let repo = unique_repo("skopeo-tls");
    let layout = t.join("layout");
    let (digest, blobs) = build_layout(&layout, "v1", t);
    let dest = format!("docker://{}/{repo}:v1", reg.host);
    let cert_dir = certs.display().to_string();

    let refused = try_run(
        skopeo().args(["copy", "--dest-tls-verify=true"]).arg(format!("oci:{}:v1", layout.display())).arg(&dest),
        T,
    );
    assert!(!refused.success(), "skopeo pushed without trusting the CA:\n{}", refused.stderr);
    assert!(
        refused.stderr.contains("certificate") || refused.stderr.contains("x509"),
        "skopeo failed for another reason than the certificate:\n{}",
        refused.stderr
    );

    let digest_file = t.join("pushed");
    run(
        skopeo()
            .args(["copy", "--dest-tls-verify=true", "--dest-cert-dir", &cert_dir, "--digestfile"])
            .arg(&digest_file)
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(&dest),
        T,
    );
    assert_eq!(String::from_utf8(read_file(&digest_file)).expect("digest").trim(), digest);

    let back = t.join("back");
    run(
        skopeo()
            .args(["copy", "--src-tls-verify=true", "--src-cert-dir", &cert_dir])
            .arg(&dest)
            .arg(format!("oci:{}:v1", back.display())),
        T,
    );
    let (back_digest, back_blobs) = oci_layout_image(&back, "v1");
    assert_eq!(back_digest, digest);
    assert_same_blobs("layout pulled over TLS vs source layout", &blobs, &back_blobs);
}
