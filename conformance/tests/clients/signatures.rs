//! Signatures, SBOMs and signature gates (DESIGN §5) through the real clients, each test with
//! a Cairn of its own whose `[[signatures.keys]]` are ECDSA P-256 keys made by the `openssl`
//! command, exactly as `cosign generate-key-pair` writes them (a PEM `PUBLIC KEY` like
//! `cosign.pub`).
//!
//! cosign itself is not installed here; its signatures are made the way it makes them and
//! pushed the way it pushes them. `cosign sign --key k --tlog-upload=false REG/REPO@DIGEST`
//! signs the simple-signing payload (`{"critical":{"identity":{"docker-reference":…},"image":
//! {"docker-manifest-digest":…},"type":"cosign container image signature"},"optional":null}`)
//! with ECDSA P-256 over SHA-256, ASN.1 DER (`openssl dgst -sha256 -sign` writes the same), and
//! appends one layer of `application/vnd.dev.cosign.simplesigning.v1+json` holding the payload,
//! with the base64 signature in its `dev.cosignproject.cosign/signature` annotation, to the
//! image tagged `sha256-<hex>.sig` (cosign's tag scheme; go-containerregistry's empty image
//! with an OCI image config, cosign `pkg/oci/empty`, `pkg/oci/mutate`): its blobs, then the
//! manifest PUT to that tag, each signing moving the tag to a manifest with one more layer.
//!
//! - oras-py attaches an SPDX SBOM and a cosign signature as OCI 1.1 referrers (`subject`,
//!   pushed by digest as `oras attach` does) to an image it pushed; the referrers API lists
//!   both, Cairn's REST API lists the SBOM as `spdx` and serves its exact bytes, and the
//!   signature verifies with the configured key.
//! - A push gate on `prod/**` tags `v*`: `docker push` of an unsigned image is `denied:` with
//!   Cairn's explanation; the image pushed to an ungated tag and by digest is accepted; a
//!   signature by an unknown key, then by a trusted key the gate does not name, do not open
//!   it; one by the gate's key does; a copy of that valid signature under another image's
//!   `.sig` tag does not sign that image.
//! - A pull gate on `secure/**`: `docker pull` of an unsigned image is `denied:`, GET of its
//!   manifest answers 403 DENIED while HEAD answers 200, the `.sig` tag itself stays readable,
//!   and once signed by the trusted key `docker pull` gets the very image that was pushed.
//!
//! Gates and verification are Cairn's: these tests need [`Need::Cairn`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use cairn_conformance::Registry;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::docker::{LocalImages, docker, import_random_images, inspect, push as docker_push};
use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest {
        name: "oras_attached_spdx_sbom_and_cosign_signature_are_listed_served_and_verified",
        needs: &[Need::Oras, Need::Cairn],
        run: oras_attached_spdx_sbom_and_cosign_signature_are_listed_served_and_verified,
    },
    ClientTest {
        name: "docker_push_to_a_gated_tag_needs_a_signature_by_the_gates_key",
        needs: &[Need::Dockerd, Need::Cairn],
        run: docker_push_to_a_gated_tag_needs_a_signature_by_the_gates_key,
    },
    ClientTest {
        name: "docker_pull_from_a_pull_gated_repository_needs_a_signature",
        needs: &[Need::Dockerd, Need::Cairn],
        run: docker_pull_from_a_pull_gated_repository_needs_a_signature,
    },
];

const T: Duration = Duration::from_secs(180);

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
/// cosign `pkg/types`: the layer of one simple-signing signature.
const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// cosign's artifact type of a signature stored as an OCI 1.1 referrer.
const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// cosign `pkg/oci/static`: the layer annotation holding the base64 signature.
const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
const SPDX_JSON: &str = "application/spdx+json";

// --- keys and cosign signatures ------------------------------------------------------------------

/// An ECDSA P-256 key pair made by `openssl`, as `cosign generate-key-pair` makes one.
struct Key {
    name: &'static str,
    private: PathBuf,
    public: PathBuf,
    /// The PEM `PUBLIC KEY` (SubjectPublicKeyInfo), like `cosign.pub`.
    public_pem: String,
}

impl Key {
    fn generate(dir: &Path, name: &'static str) -> Key {
        std::fs::create_dir_all(dir).expect("keys dir");
        let private = dir.join(format!("{name}.key"));
        let public = dir.join(format!("{name}.pub"));
        run(
            Command::new("openssl").args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"]).arg(&private),
            T,
        );
        run(Command::new("openssl").arg("ec").arg("-in").arg(&private).arg("-pubout").arg("-out").arg(&public), T);
        let public_pem = String::from_utf8(read_file(&public)).expect("PEM is text");
        assert!(
            public_pem.starts_with("-----BEGIN PUBLIC KEY-----"),
            "`openssl ec -pubout` wrote no PEM PUBLIC KEY:\n{public_pem}"
        );
        Key { name, private, public, public_pem }
    }

    /// The base64 (standard, padded) of an ECDSA P-256 SHA-256 signature over `payload`,
    /// ASN.1 DER: what cosign puts in the layer annotation. Checked with the public key by
    /// `openssl dgst -verify` first, so that a refusal later is Cairn's and not a bad signature.
    fn sign(&self, payload: &[u8]) -> String {
        let dir = self.private.parent().expect("key dir");
        let n = unique_suffix();
        let (file, sig) = (dir.join(format!("payload-{n}.json")), dir.join(format!("sig-{n}.der")));
        write_file(&file, payload);
        run(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-sign"])
                .arg(&self.private)
                .arg("-out")
                .arg(&sig)
                .arg(&file),
            T,
        );
        let checked = run(
            Command::new("openssl")
                .args(["dgst", "-sha256", "-verify"])
                .arg(&self.public)
                .arg("-signature")
                .arg(&sig)
                .arg(&file),
            T,
        );
        assert!(
            checked.stdout.contains("Verified OK"),
            "openssl does not verify its own signature: {}",
            checked.stdout
        );
        let b64 = run(Command::new("openssl").args(["base64", "-A", "-in"]).arg(&sig), T).stdout.trim().to_string();
        assert!(b64.len() > 80 && b64.starts_with("ME"), "not the base64 of an ASN.1 DER ECDSA signature: {b64}");
        b64
    }
}

/// The `[[signatures.keys]]` entries of `keys`.
fn keys_toml(keys: &[&Key]) -> String {
    keys.iter()
        .map(|k| format!("[[signatures.keys]]\nname = \"{}\"\npublic_key = \"\"\"\n{}\"\"\"\n\n", k.name, k.public_pem))
        .collect()
}

/// The simple-signing payload `cosign sign` signs for `host/repo@digest` (sigstore
/// `pkg/signature/payload`, marshalled by Go's encoding/json: this key order, no spaces).
fn cosign_payload(host: &str, repo: &str, digest: &str) -> Vec<u8> {
    format!(
        "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"{host}/{repo}\"}},\"image\":{{\"docker-manifest-digest\":\
         \"{digest}\"}},\"type\":\"cosign container image signature\"}},\"optional\":null}}"
    )
    .into_bytes()
}

/// The cosign signature image of one manifest in cosign's tag scheme: the image tagged
/// `sha256-<hex>.sig`, one simple-signing layer per signature, in the order they were added.
struct CosignSignatures<'a> {
    reg: &'a Registry,
    repo: String,
    subject: String,
    layers: Vec<Value>,
}

impl<'a> CosignSignatures<'a> {
    fn new(reg: &'a Registry, repo: &str, subject: &str) -> CosignSignatures<'a> {
        CosignSignatures { reg, repo: repo.to_string(), subject: subject.to_string(), layers: Vec::new() }
    }

    /// `sha256-<hex>.sig`.
    fn tag(&self) -> String {
        format!("sha256-{}.sig", self.subject.strip_prefix("sha256:").expect("a sha256 digest"))
    }

    /// What `cosign sign --key <key> --tlog-upload=false REG/REPO@SUBJECT` adds: a signature of
    /// the subject's own payload. Returns the digest of the `.sig` manifest now tagged.
    fn sign(&mut self, key: &Key) -> String {
        let payload = cosign_payload(&self.reg.host, &self.repo, &self.subject);
        let signature = key.sign(&payload);
        note(format!("cosign-style signature of {} by key {}", self.subject, key.name));
        self.add(&payload, &signature)
    }

    /// Appends a layer holding `payload` with `signature` in its annotation, and pushes the
    /// signature image as cosign does: the blobs, then the manifest PUT to the `.sig` tag.
    fn add(&mut self, payload: &[u8], signature: &str) -> String {
        let (repo, reg) = (self.repo.as_str(), self.reg);
        let digest = put_blob(reg, repo, payload);
        self.layers.push(json!({
            "mediaType": SIMPLE_SIGNING,
            "size": payload.len(),
            "digest": digest,
            "annotations": {SIGNATURE_ANNOTATION: signature},
        }));
        // go-containerregistry's empty image with the layers appended (its diff ids are the
        // layer digests: the payload is stored uncompressed), and cosign's creation time.
        let diff_ids: Vec<&Value> = self.layers.iter().map(|l| &l["digest"]).collect();
        let history: Vec<Value> = self.layers.iter().map(|_| json!({"created": "0001-01-01T00:00:00Z"})).collect();
        let config = json!({
            "architecture": "",
            "created": rfc3339_utc(SystemTime::now()),
            "history": history,
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        })
        .to_string()
        .into_bytes();
        let config_digest = put_blob(reg, repo, &config);
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "size": config.len(), "digest": config_digest},
            "layers": self.layers,
        })
        .to_string()
        .into_bytes();
        let (status, _, body) = put_manifest(reg, repo, &self.tag(), OCI_MANIFEST, &manifest);
        assert_eq!(status, StatusCode::CREATED, "PUT of the signature manifest to {repo}:{}: {body}", self.tag());
        sha256_digest(&manifest)
    }
}

// --- plain HTTP, as cosign (go-containerregistry) talks to a registry ---------------------------

/// Uploads `bytes` as a blob of `repo` unless it is there (HEAD, then POST and a monolithic
/// PUT); returns its digest.
fn put_blob(reg: &Registry, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let url = format!("{}/v2/{repo}/blobs/{digest}", reg.base);
    let head = http().head(&url).send().unwrap_or_else(|e| panic!("HEAD {url}: {e}"));
    if head.status() == StatusCode::OK {
        return digest;
    }
    let start = format!("{}/v2/{repo}/blobs/uploads/", reg.base);
    let resp = http().post(&start).send().unwrap_or_else(|e| panic!("POST {start}: {e}"));
    assert_eq!(resp.status(), StatusCode::ACCEPTED, "POST {start}: {}", resp.text().unwrap_or_default());
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).expect("Location of the upload");
    let location = if location.starts_with('/') { format!("{}{location}", reg.base) } else { location.to_string() };
    let sep = if location.contains('?') { '&' } else { '?' };
    let put = format!("{location}{sep}digest={digest}");
    let resp = http()
        .put(&put)
        .header("Content-Type", "application/octet-stream")
        .body(bytes.to_vec())
        .send()
        .unwrap_or_else(|e| panic!("PUT {put}: {e}"));
    assert_eq!(resp.status(), StatusCode::CREATED, "PUT {put}: {}", resp.text().unwrap_or_default());
    digest
}

/// PUT of a manifest: `(status, Docker-Content-Digest, body)`.
fn put_manifest(
    reg: &Registry,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: &[u8],
) -> (StatusCode, Option<String>, String) {
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.base);
    let resp = http()
        .put(&url)
        .header("Content-Type", media_type)
        .body(body.to_vec())
        .send()
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
    let status = resp.status();
    let digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, digest, resp.text().unwrap_or_default())
}

/// A GET or HEAD of a manifest: `(status, Docker-Content-Digest, body)`.
fn manifest_request(
    reg: &Registry,
    method: reqwest::Method,
    repo: &str,
    reference: &str,
) -> (StatusCode, Option<String>, String) {
    let url = format!("{}/v2/{repo}/manifests/{reference}", reg.base);
    let resp = http()
        .request(method.clone(), &url)
        .header("Accept", MANIFEST_ACCEPT)
        .send()
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status();
    let digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
    (status, digest, resp.text().unwrap_or_default())
}

/// Asserts an answer is Cairn's gate refusal: 403, `DENIED`, a message starting with
/// `message_start`, and the detail naming the gate's reason and `digest`.
fn assert_gate_denied(what: &str, status: StatusCode, body: &str, message_start: &str, digest: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {body}"));
    let e = &v["errors"][0];
    assert_eq!(e["code"], json!("DENIED"), "{what}: {body}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(message.starts_with(message_start), "{what}: the message should start with {message_start:?}: {body}");
    assert_eq!(e["detail"]["reason"], json!("signature-gate"), "{what}: {body}");
    assert_eq!(e["detail"]["digest"], json!(digest), "{what}: {body}");
}

/// Asserts a client command failed and printed each of `markers`; notes the line that says so.
fn assert_client_refused(what: &str, out: &Output, markers: &[&str]) {
    let said = format!("{}\n{}", out.stdout, out.stderr);
    assert!(!out.success(), "{what} succeeded, but should have been refused:\n{said}");
    for m in markers {
        assert!(said.contains(m), "{what} failed, but its output does not contain {m:?}:\n{said}");
    }
    let line = said.lines().find(|l| l.contains(markers[0])).unwrap_or_default();
    note(format!("{what} refused as expected: {}", line.trim()));
}

/// One signature layer's verification: its `status` and, when valid, its `key`.
type Verdict = (String, Option<String>);

/// The provenance of `digest` and its cosign `.sig` referrer's verification, one
/// `(status, key)` per signature layer in layer order, and `signed_by`.
fn verdicts(reg: &Registry, repo: &str, digest: &str) -> (Vec<Verdict>, Vec<String>, Value) {
    let p = get_api_json(reg, &format!("/api/v1/repositories/{repo}/artifacts/{digest}"));
    let tag = format!("sha256-{}.sig", &digest["sha256:".len()..]);
    let signatures = p["referrers"]["signatures"].as_array().unwrap_or_else(|| panic!("no referrers.signatures: {p}"));
    let by_tag: Vec<&Value> = signatures.iter().filter(|s| s["tag"] == json!(tag)).collect();
    assert_eq!(by_tag.len(), 1, "one signature referrer found by the tag {tag}: {p}");
    let sig = by_tag[0];
    let verification = sig["verification"].as_array().unwrap_or_else(|| panic!("no verification: {sig}"));
    for v in verification {
        assert_eq!(v["format"], json!("cosign-simple-signing"), "{v}");
    }
    let statuses = verification
        .iter()
        .map(|v| (v["status"].as_str().unwrap_or("").to_string(), v["key"].as_str().map(str::to_string)))
        .collect();
    let signed_by = p["signed_by"]
        .as_array()
        .unwrap_or_else(|| panic!("no signed_by: {p}"))
        .iter()
        .map(|k| k.as_str().unwrap_or("").to_string())
        .collect();
    note(format!("verification of {digest}: {}", sig["verification"]));
    (statuses, signed_by, p)
}

fn valid(key: &str) -> Verdict {
    ("valid".into(), Some(key.into()))
}

fn invalid() -> Verdict {
    ("invalid".into(), None)
}

// --- oras-py ------------------------------------------------------------------------------------

/// `python3 oras_attach.py REQUEST.json RESULT.json`: a push with oras-py, optionally by digest
/// (as `oras attach` pushes a referrer: untagged), with extra manifest fields (`artifactType`,
/// which oras-py has no option for) and per-file annotations from an oras annotation file.
const DRIVER: &str = r#"
import hashlib, json, os, sys
import oras.client, oras.defaults, oras.oci

req = json.load(open(sys.argv[1]))
extra = req.get("extra_manifest_fields") or {}
pushed = {}

class Client(oras.client.OrasClient):
    def upload_manifest(self, manifest, container):
        manifest.update(extra)
        body = json.dumps(manifest).encode()
        pushed["digest"] = "sha256:" + hashlib.sha256(body).hexdigest()
        if req.get("by_digest"):
            container.digest = pushed["digest"]
        return self.do_request(
            f"{self.prefix}://{container.manifest_url()}", "PUT",
            headers={"Content-Type": oras.defaults.default_manifest_media_type}, data=body)

client = Client(hostname=req["host"], insecure=True)
if req["op"] == "push":
    os.chdir(req["cwd"])
    subject = None
    if req.get("subject"):
        s = req["subject"]
        subject = oras.oci.Subject(mediaType=s["mediaType"], digest=s["digest"], size=s["size"])
    resp = client.push(
        target=req["target"],
        files=req["files"],
        manifest_config=req.get("manifest_config"),
        manifest_annotations=req.get("annotations"),
        annotation_file=req.get("annotation_file"),
        subject=subject,
    )
    result = {"status": resp.status_code, "digest": pushed.get("digest"),
              "headers": {k.lower(): v for k, v in resp.headers.items()}}
elif req["op"] == "pull":
    result = {"files": sorted(client.pull(target=req["target"], outdir=req["outdir"]))}
else:
    raise SystemExit("unknown op " + req["op"])
json.dump(result, open(sys.argv[2], "w"))
"#;

fn oras(work: &Path, req: Value) -> Value {
    let script = work.join("oras_attach.py");
    if !script.exists() {
        write_file(&script, DRIVER.as_bytes());
    }
    let n = unique_suffix();
    let (req_file, res_file) = (work.join(format!("req-{n}.json")), work.join(format!("res-{n}.json")));
    write_file(&req_file, req.to_string().as_bytes());
    run(Command::new("python3").arg(&script).arg(&req_file).arg(&res_file), T);
    read_json(&res_file)
}

/// Pushes with oras-py; returns `(manifest digest, response headers)`.
fn oras_push(reg: &Registry, work: &Path, mut req: Value) -> (String, Value) {
    req["op"] = json!("push");
    req["host"] = json!(reg.host);
    let res = oras(work, req);
    assert_eq!(res["status"], json!(201), "oras-py's manifest PUT answered {res}");
    let digest = res["digest"].as_str().expect("digest of what oras-py pushed").to_string();
    assert_eq!(res["headers"]["docker-content-digest"], json!(digest), "Docker-Content-Digest of the PUT: {res}");
    (digest, res["headers"].clone())
}

/// oras-py pushes an image (an OCI image config and a gzipped tar layer), then attaches two
/// referrers to it the way `oras attach` does (by digest, untagged, with `subject` and
/// `artifactType`): an SPDX JSON SBOM, and a cosign signature (cosign's OCI 1.1 layout: the
/// empty config, one simple-signing layer whose annotation, set through oras's annotation
/// file, holds the signature). The referrers API lists both; `…/sboms` lists the SBOM as
/// SPDX JSON with its creation time and serves its exact bytes (and 404 for another digest);
/// the provenance shows the SBOM and the signature, valid by the configured key.
fn oras_attached_spdx_sbom_and_cosign_signature_are_listed_served_and_verified() {
    let tmp = tempdir("sig-oras");
    let t = tmp.path();
    let release = Key::generate(&t.join("keys"), "release");
    let cairn = cairn_with_config(&keys_toml(&[&release]), "SBOM listing and signature verification");
    let reg = &cairn.reg;
    let repo = unique_repo("sig-oras");
    let src = t.join("src");

    // The image: a real gzipped tar layer and an OCI image config naming its diff id.
    let rootfs = t.join("rootfs");
    write_random(&rootfs.join("app/payload.bin"), 24 * 1024);
    std::fs::create_dir_all(&src).expect("src dir");
    tar_dir(&rootfs, &src.join("layer.tar"));
    let diff_id = sha256_digest(&read_file(&src.join("layer.tar")));
    run(Command::new("gzip").arg("-n").arg(src.join("layer.tar")), T);
    let config = json!({"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [diff_id]}})
    .to_string();
    write_file(&src.join("config.json"), config.as_bytes());
    let (image, _) = oras_push(
        reg,
        t,
        json!({"target": format!("{}/{repo}:v1", reg.host), "cwd": src,
               "files": [format!("layer.tar.gz:{OCI_LAYER_GZIP}")],
               "manifest_config": format!("config.json:{OCI_CONFIG}")}),
    );
    let (_, media_type, image_body) = get_manifest(reg, &repo, &image);
    assert_eq!(media_type, OCI_MANIFEST);
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": image, "size": image_body.len()});

    // The SBOM: an SPDX 2.3 JSON document, attached with its creation time.
    let created = "2025-01-02T03:04:05Z";
    let suffix = unique_suffix();
    let sbom = serde_json::to_string_pretty(&json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("clients-sig-oras-{suffix}"),
        "documentNamespace": format!("https://cairn.test/spdx/{suffix}"),
        "creationInfo": {"created": created, "creators": ["Tool: cairn-clients-test"]},
        "packages": [{"name": "payload", "SPDXID": "SPDXRef-Package-payload", "versionInfo": "1.0.0",
                      "downloadLocation": "NOASSERTION"}],
    }))
    .expect("SPDX JSON")
        + "\n";
    write_file(&src.join("sbom.spdx.json"), sbom.as_bytes());
    let (sbom_manifest, sbom_headers) = oras_push(
        reg,
        t,
        json!({"target": format!("{}/{repo}", reg.host), "by_digest": true, "cwd": src,
               "files": [format!("sbom.spdx.json:{SPDX_JSON}")],
               "manifest_config": format!("absent-config:{OCI_EMPTY}"),
               "annotations": {"org.opencontainers.image.created": created},
               "extra_manifest_fields": {"artifactType": SPDX_JSON}, "subject": subject}),
    );

    // The signature: cosign's payload for the image, signed with the release key.
    let payload = cosign_payload(&reg.host, &repo, &image);
    write_file(&src.join("payload.json"), &payload);
    let signature = release.sign(&payload);
    write_file(
        &src.join("annotations.json"),
        json!({"payload.json": {SIGNATURE_ANNOTATION: signature}}).to_string().as_bytes(),
    );
    let (sig_manifest, sig_headers) = oras_push(
        reg,
        t,
        json!({"target": format!("{}/{repo}", reg.host), "by_digest": true, "cwd": src,
               "files": [format!("payload.json:{SIMPLE_SIGNING}")],
               "annotation_file": src.join("annotations.json"),
               "manifest_config": format!("absent-config:{OCI_EMPTY}"),
               "extra_manifest_fields": {"artifactType": COSIGN_SIG_ARTIFACT}, "subject": subject}),
    );
    for h in [&sbom_headers, &sig_headers] {
        assert_eq!(h["oci-subject"], json!(image), "OCI-Subject on a PUT with subject: {h}");
    }
    let (_, _, sig_body) = get_manifest(reg, &repo, &sig_manifest);
    let sig_layer = &serde_json::from_slice::<Value>(&sig_body).expect("signature manifest")["layers"][0];
    assert_eq!(sig_layer["annotations"][SIGNATURE_ANNOTATION], json!(signature), "the layer annotation oras-py set");

    // The referrers API lists both, by artifact type.
    let url = format!("{}/v2/{repo}/referrers/{image}", reg.base);
    let resp = http().get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ctype.starts_with(OCI_INDEX), "referrers Content-Type {ctype}");
    let index: Value = resp.json().expect("referrers JSON");
    let mut listed: Vec<(String, String)> = index["manifests"]
        .as_array()
        .unwrap_or_else(|| panic!("no manifests in {index}"))
        .iter()
        .map(|e| (e["digest"].as_str().unwrap_or("").to_string(), e["artifactType"].as_str().unwrap_or("").to_string()))
        .collect();
    listed.sort();
    let mut want =
        vec![(sbom_manifest.clone(), SPDX_JSON.to_string()), (sig_manifest.clone(), COSIGN_SIG_ARTIFACT.to_string())];
    want.sort();
    assert_eq!(listed, want, "the referrers of {image}: {index}");

    // The SBOM listing: one SPDX JSON document, the bytes oras-py pushed.
    let docs = get_api_json(reg, &format!("/api/v1/repositories/{repo}/artifacts/{image}/sboms"));
    note(format!("sboms: {docs}"));
    assert_eq!(docs["subject"], json!(image), "{docs}");
    let list = docs["documents"].as_array().unwrap_or_else(|| panic!("no documents: {docs}"));
    assert_eq!(list.len(), 1, "one SBOM document (the signature is no SBOM): {docs}");
    let doc = &list[0];
    let doc_digest = sha256_digest(sbom.as_bytes());
    assert_eq!(doc["digest"], json!(doc_digest), "{docs}");
    assert_eq!(doc["media_type"], json!(SPDX_JSON), "{docs}");
    assert_eq!(doc["format"], json!("spdx"), "{docs}");
    assert_eq!(doc["encoding"], json!("json"), "{docs}");
    assert_eq!(doc["size"], json!(sbom.len()), "{docs}");
    assert_eq!(doc["referrer"], json!(sbom_manifest), "{docs}");
    assert_eq!(doc["created"], json!(created), "the referrer's org.opencontainers.image.created: {docs}");
    let url = format!("{}/api/v1/repositories/{repo}/artifacts/{image}/sboms/{doc_digest}", reg.base);
    let resp = http().get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert_eq!(ctype, SPDX_JSON, "Content-Type of the SBOM document");
    let bytes = resp.bytes().expect("SBOM body");
    assert!(
        bytes[..] == *sbom.as_bytes(),
        "the SBOM served differs from the one pushed:\n{}",
        String::from_utf8_lossy(&bytes)
    );
    let other =
        format!("{}/api/v1/repositories/{repo}/artifacts/{image}/sboms/{}", reg.base, sha256_digest(b"no such SBOM"));
    let status = http().get(&other).send().unwrap_or_else(|e| panic!("GET {other}: {e}")).status();
    assert_eq!(status, StatusCode::NOT_FOUND, "GET {other}");
    // oras-py pulls the SBOM back by digest, byte for byte.
    let out = t.join("pulled");
    let res = oras(
        t,
        json!({"op": "pull", "host": reg.host, "target": format!("{}/{repo}@{sbom_manifest}", reg.host),
                             "outdir": out}),
    );
    note(format!("oras-py pulled {}", res["files"]));
    assert!(read_file(&out.join("sbom.spdx.json")) == sbom.as_bytes(), "the SBOM oras-py pulled back differs");

    // The provenance: the SBOM among the SBOMs, the signature among the signatures, valid.
    let p = get_api_json(reg, &format!("/api/v1/repositories/{repo}/artifacts/{image}"));
    note(format!("provenance: {p}"));
    let digests = |kind: &str| -> Vec<Value> {
        p["referrers"][kind]
            .as_array()
            .unwrap_or_else(|| panic!("no referrers.{kind}: {p}"))
            .iter()
            .map(|r| r["digest"].clone())
            .collect()
    };
    assert_eq!(digests("sboms"), vec![json!(sbom_manifest)], "{p}");
    assert_eq!(digests("signatures"), vec![json!(sig_manifest)], "{p}");
    let verification = &p["referrers"]["signatures"][0]["verification"];
    assert_eq!(verification.as_array().map(Vec::len), Some(1), "one signature layer: {p}");
    let v = &verification[0];
    assert_eq!(v["format"], json!("cosign-simple-signing"), "{v}");
    assert_eq!(v["layer"], json!(sha256_digest(&payload)), "{v}");
    assert_eq!(v["status"], json!("valid"), "the release key's signature of {image}: {v}");
    assert_eq!(v["key"], json!("release"), "{v}");
    assert_eq!(v["algorithm"], json!("ecdsa-p256-sha256"), "{v}");
    assert_eq!(p["signed_by"], json!(["release"]), "{p}");
}

// --- docker and gates ---------------------------------------------------------------------------

/// A push gate on `prod/**` tags `v*` trusting the key `release`, with `qa` also configured.
/// `docker push` of an unsigned image to `v1` is `denied:` with Cairn's explanation (and the
/// same PUT over HTTP is 403 DENIED), while the same image pushed to the ungated `candidate`
/// and PUT by digest is accepted. cosign-style signatures by `stranger` (a key Cairn does not
/// know: invalid) and by `qa` (valid, not the gate's) leave it refused, saying who signed;
/// one by `release` lets `docker push v1` through. Another image whose `.sig` carries a copy
/// of that valid signature (naming the first image's digest) stays refused.
fn docker_push_to_a_gated_tag_needs_a_signature_by_the_gates_key() {
    let tmp = tempdir("sig-push-gate");
    let t = tmp.path();
    let keys = t.join("keys");
    let (release, qa, stranger) =
        (Key::generate(&keys, "release"), Key::generate(&keys, "qa"), Key::generate(&keys, "stranger"));
    let config = format!(
        "{}[[signatures.gates]]\nrepositories = \"prod/**\"\ntags = [\"v*\"]\nkeys = [\"release\"]\nguard = \"push\"\n",
        keys_toml(&[&release, &qa])
    );
    let cairn = cairn_with_config(&config, "signature push gates");
    let reg = &cairn.reg;
    let suffix = unique_suffix();
    let repo = format!("prod/app-{suffix}");
    let remote = |tag: &str| format!("{}/{repo}:{tag}", reg.host);
    let (local, local2) = (format!("cairn-clients-gated-{suffix}:1"), format!("cairn-clients-gated-{suffix}:2"));
    let refs: Vec<String> = ["v1", "candidate", "v2", "candidate-2"].iter().map(|t| remote(t)).collect();
    let mut cleanup = LocalImages(refs.iter().cloned().chain([local.clone(), local2.clone()]).collect());
    import_random_images(t, &[&local, &local2], &mut cleanup);
    let gate_says =
        |tag: &str| format!("tag {repo}:{tag} needs a valid signature by key release (signature gate #1), and ");

    // Unsigned, to a gated tag: denied, and the tag is not there.
    run(docker().args(["tag", &local, &remote("v1")]), T);
    let refused = try_run(docker().args(["push", &remote("v1")]), T);
    assert_client_refused("`docker push` of an unsigned image to v1", &refused, &["denied:", &gate_says("v1")]);
    let (status, _, _) = manifest_request(reg, reqwest::Method::GET, &repo, "v1");
    assert_eq!(status, StatusCode::NOT_FOUND, "the refused push left the tag v1");

    // The same image to an ungated tag, and by digest: accepted.
    run(docker().args(["tag", &local, &remote("candidate")]), T);
    let digest = docker_push(&remote("candidate"));
    let said = format!("{}\n{}", refused.stdout, refused.stderr);
    for part in [
        format!("{digest} has none: it has no valid signature"),
        "Push by digest, sign it".to_string(),
        "then push the tag again".to_string(),
    ] {
        assert!(said.contains(&part), "docker's refusal should say {part:?}:\n{said}");
    }
    let (_, media_type, body) = get_manifest(reg, &repo, &digest);
    let (status, put_digest, answer) = put_manifest(reg, &repo, &digest, &media_type, &body);
    assert_eq!(status, StatusCode::CREATED, "PUT of the unsigned manifest by digest: {answer}");
    assert_eq!(put_digest.as_deref(), Some(digest.as_str()));
    let (status, _, answer) = put_manifest(reg, &repo, "v1", &media_type, &body);
    assert_gate_denied("PUT of the unsigned manifest to v1", status, &answer, &gate_says("v1"), &digest);

    // A signature by a key Cairn does not know: invalid, still refused.
    let mut sigs = CosignSignatures::new(reg, &repo, &digest);
    sigs.sign(&stranger);
    let (statuses, signed_by, _) = verdicts(reg, &repo, &digest);
    assert_eq!(statuses, vec![invalid()], "a signature by an unknown key");
    assert!(signed_by.is_empty(), "signed_by: {signed_by:?}");
    let refused = try_run(docker().args(["push", &remote("v1")]), T);
    assert_client_refused(
        "`docker push` to v1 signed by an unknown key",
        &refused,
        &["denied:", &gate_says("v1"), "it has no valid signature"],
    );

    // A valid signature by a trusted key the gate does not name: still refused, and says so.
    sigs.sign(&qa);
    let (statuses, signed_by, _) = verdicts(reg, &repo, &digest);
    assert_eq!(statuses, vec![invalid(), valid("qa")], "signatures by stranger, then qa");
    assert_eq!(signed_by, vec!["qa"]);
    let refused = try_run(docker().args(["push", &remote("v1")]), T);
    assert_client_refused(
        "`docker push` to v1 signed only by qa",
        &refused,
        &["denied:", &gate_says("v1"), "it is signed only by qa"],
    );

    // The gate's key: the tag may point at it now.
    sigs.sign(&release);
    let (statuses, signed_by, p) = verdicts(reg, &repo, &digest);
    assert_eq!(statuses, vec![invalid(), valid("qa"), valid("release")], "signatures by stranger, qa, release");
    assert_eq!(signed_by, vec!["qa", "release"]);
    let sig = &p["referrers"]["signatures"][0];
    for v in sig["verification"].as_array().expect("verification").iter().skip(1) {
        assert_eq!(v["algorithm"], json!("ecdsa-p256-sha256"), "{v}");
    }
    assert_eq!(docker_push(&remote("v1")), digest, "`docker push` of the signed image to v1");
    assert_eq!(get_manifest(reg, &repo, "v1").0, digest, "v1 points at the signed image");

    // A copy of that valid signature (its payload names the first image) under another
    // image's `.sig` tag does not sign that image.
    run(docker().args(["tag", &local2, &remote("candidate-2")]), T);
    let other = docker_push(&remote("candidate-2"));
    assert_ne!(other, digest);
    let copied = cosign_payload(&reg.host, &repo, &digest);
    CosignSignatures::new(reg, &repo, &other).add(&copied, &release.sign(&copied));
    let (statuses, signed_by, _) = verdicts(reg, &repo, &other);
    assert_eq!(statuses, vec![invalid()], "a signature whose payload names another digest");
    assert!(signed_by.is_empty(), "signed_by: {signed_by:?}");
    run(docker().args(["tag", &local2, &remote("v2")]), T);
    let refused = try_run(docker().args(["push", &remote("v2")]), T);
    assert_client_refused(
        "`docker push` to v2 of an image carrying another image's signature",
        &refused,
        &["denied:", &gate_says("v2"), &format!("{other} has none")],
    );
    let (status, _, _) = manifest_request(reg, reqwest::Method::GET, &repo, "v2");
    assert_eq!(status, StatusCode::NOT_FOUND, "the refused push left the tag v2");
}

/// A pull gate on `secure/**` trusting the key `release`: `docker push` of an unsigned image
/// works (the gate guards pulls only), `docker pull` of it is `denied:` with Cairn's
/// explanation; GET of the manifest by tag or digest answers 403 DENIED while HEAD answers 200
/// with the digest (for signing tools). A signature by an unknown key leaves it closed, and
/// the `.sig` tag itself stays readable; signed by `release`, `docker pull` by tag and by
/// digest gets the very image that was pushed.
fn docker_pull_from_a_pull_gated_repository_needs_a_signature() {
    let tmp = tempdir("sig-pull-gate");
    let t = tmp.path();
    let keys = t.join("keys");
    let (release, stranger) = (Key::generate(&keys, "release"), Key::generate(&keys, "stranger"));
    let config = format!(
        "{}[[signatures.gates]]\nrepositories = \"secure/**\"\nkeys = [\"release\"]\nguard = \"pull\"\n",
        keys_toml(&[&release])
    );
    let cairn = cairn_with_config(&config, "signature pull gates");
    let reg = &cairn.reg;
    let suffix = unique_suffix();
    let repo = format!("secure/app-{suffix}");
    let reference = format!("{}/{repo}:v1", reg.host);
    let local = format!("cairn-clients-pull-gated-{suffix}:1");
    let mut cleanup = LocalImages(vec![reference.clone(), local.clone()]);
    let ids = import_random_images(t, &[&local], &mut cleanup);
    run(docker().args(["tag", &local, &reference]), T);
    let digest = docker_push(&reference);
    let by_digest = format!("{}/{repo}@{digest}", reg.host);
    cleanup.0.push(by_digest.clone());

    // Nothing of the image left locally: every pull below asks the registry.
    run(docker().args(["rmi", "-f", &ids[0]]), T);
    let gate_says = format!("pulls of {repo} need a valid signature (signature gate #1)");
    let refused = try_run(docker().args(["pull", &reference]), T);
    assert_client_refused("`docker pull` of an unsigned image", &refused, &["denied:", &gate_says, &digest]);
    let starts = format!("{gate_says}: {digest} has none");
    for r in ["v1", digest.as_str()] {
        let (status, _, body) = manifest_request(reg, reqwest::Method::GET, &repo, r);
        assert_gate_denied(&format!("GET of {repo}:{r}"), status, &body, &starts, &digest);
        let (status, head_digest, _) = manifest_request(reg, reqwest::Method::HEAD, &repo, r);
        assert_eq!(status, StatusCode::OK, "HEAD of {repo}:{r} stays open");
        assert_eq!(head_digest.as_deref(), Some(digest.as_str()), "Docker-Content-Digest of HEAD {repo}:{r}");
    }

    // Signed by a key Cairn does not know: still closed. The signature itself is readable.
    let mut sigs = CosignSignatures::new(reg, &repo, &digest);
    let sig_digest = sigs.sign(&stranger);
    let (statuses, _, _) = verdicts(reg, &repo, &digest);
    assert_eq!(statuses, vec![invalid()], "a signature by an unknown key");
    let (status, _, body) = manifest_request(reg, reqwest::Method::GET, &repo, "v1");
    assert_gate_denied("GET of v1 signed by an unknown key", status, &body, &starts, &digest);
    let refused = try_run(docker().args(["pull", &reference]), T);
    assert_client_refused("`docker pull` of an image signed by an unknown key", &refused, &["denied:", &gate_says]);
    let (got, _, _) = get_manifest(reg, &repo, &sigs.tag());
    assert_eq!(got, sig_digest, "GET of the .sig tag (as `cosign verify` reads it)");

    // Signed by the trusted key: docker pulls the image that was pushed.
    sigs.sign(&release);
    let (statuses, signed_by, _) = verdicts(reg, &repo, &digest);
    assert_eq!(statuses, vec![invalid(), valid("release")], "signatures by stranger, then release");
    assert_eq!(signed_by, vec!["release"]);
    let pulled = run(docker().args(["pull", &reference]), T);
    assert_eq!(
        digest_after(&pulled.stdout, "Digest:").as_deref(),
        Some(digest.as_str()),
        "`docker pull` of the signed image:\n{}",
        pulled.stdout
    );
    assert_eq!(inspect(&reference).0, ids[0], "the signed image pulls as the image that was pushed");
    run(docker().args(["rmi", "-f", &ids[0]]), T);
    run(docker().args(["pull", &by_digest]), T);
    assert_eq!(inspect(&by_digest).0, ids[0], "the signed image pulled by digest");
}
