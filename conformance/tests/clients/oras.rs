//! oras-py (the ORAS Python library; it has no command line) against the registry under test,
//! driven by a small python3 script this module writes to a temporary directory. An artifact
//! of plain files and a directory, typed by a custom config media type, is pushed, pulled into
//! another directory and compared byte for byte; then two referrers of it are pushed with
//! `subject` (one typed by its config media type as oras-py does by itself, one carrying an
//! `artifactType` field the way `oras attach` writes it) and the referrers API must list both.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cairn_conformance::Registry;
use serde_json::{Value, json};

use crate::harness::{ClientTest, Need, note};
use crate::helpers::*;

pub(crate) const TESTS: &[ClientTest] = &[
    ClientTest { name: "oras_artifact_round_trip", needs: &[Need::Oras], run: oras_artifact_round_trip },
    ClientTest {
        name: "oras_referrers_are_listed",
        needs: &[Need::Oras, Need::ReferrersApi],
        run: oras_referrers_are_listed,
    },
    ClientTest {
        name: "provenance_of_a_docker_pushed_image_with_an_oras_attached_sbom",
        needs: &[Need::Dockerd, Need::Oras, Need::Cairn],
        run: provenance_of_a_docker_pushed_image_with_an_oras_attached_sbom,
    },
];

const T: Duration = Duration::from_secs(120);

const CONFIG_TYPE: &str = "application/vnd.cairn.test.config.v1+json";
const SBOM_TYPE: &str = "application/vnd.cairn.test.sbom.v1+json";
const SIG_TYPE: &str = "application/vnd.cairn.test.signature.v1";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// `python3 oras_driver.py REQUEST.json RESULT.json`: push or pull with oras-py.
const DRIVER: &str = r#"
import json, os, sys
import oras.client, oras.oci

req = json.load(open(sys.argv[1]))
extra = req.get("extra_manifest_fields") or {}

class Client(oras.client.OrasClient):
    # oras-py has no artifactType option: add it to the manifest it is about to PUT, with the
    # empty config descriptor, as `oras attach --artifact-type` (oras-go) writes it.
    def upload_manifest(self, manifest, container):
        manifest.update(extra)
        return super().upload_manifest(manifest, container)

client = Client(hostname=req["host"], insecure=True)
result = {}
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
        subject=subject,
        do_chunked=req.get("chunked", False),
        chunk_size=req.get("chunk_size", 16384),
    )
    result = {"status": resp.status_code, "headers": {k.lower(): v for k, v in resp.headers.items()}}
elif req["op"] == "pull":
    files = client.pull(target=req["target"], outdir=req["outdir"])
    result = {"files": sorted(files)}
else:
    raise SystemExit("unknown op " + req["op"])
json.dump(result, open(sys.argv[2], "w"))
"#;

/// Runs one oras-py operation described by `req` and returns its result object.
fn oras(work: &Path, req: Value) -> Value {
    let script = work.join("oras_driver.py");
    if !script.exists() {
        write_file(&script, DRIVER.as_bytes());
    }
    let n = unique_suffix();
    let req_file = work.join(format!("req-{n}.json"));
    let res_file = work.join(format!("res-{n}.json"));
    write_file(&req_file, req.to_string().as_bytes());
    run(Command::new("python3").arg(&script).arg(&req_file).arg(&res_file), T);
    read_json(&res_file)
}

/// Pushes with oras-py and returns `(manifest digest, response headers)`.
fn push(reg: &Registry, work: &Path, mut req: Value) -> (String, Value) {
    req["op"] = json!("push");
    req["host"] = json!(reg.host);
    let res = oras(work, req);
    let headers = res["headers"].clone();
    assert_eq!(res["status"], json!(201), "manifest PUT answered {res}");
    let digest = headers["docker-content-digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no Docker-Content-Digest on the manifest PUT: {res}"))
        .to_string();
    (digest, headers)
}

fn pull(reg: &Registry, work: &Path, target: &str, outdir: &Path) -> Vec<String> {
    let res = oras(work, json!({"op": "pull", "host": reg.host, "target": target, "outdir": outdir}));
    res["files"].as_array().expect("files").iter().map(|f| f.as_str().expect("path").to_string()).collect()
}

fn oras_artifact_round_trip() {
    let reg = registry();
    let tmp = tempdir("oras");
    let t = tmp.path();
    let repo = unique_repo("oras");
    let src = t.join("src");
    let model = write_random(&src.join("model.bin"), 200 * 1024);
    let notes = format!("cairn client test {}\n", unique_suffix()).repeat(50);
    write_file(&src.join("notes.txt"), notes.as_bytes());
    let d1 = write_random(&src.join("bundle/a.bin"), 20 * 1024);
    let d2 = write_random(&src.join("bundle/sub/b.bin"), 10 * 1024);
    let config = json!({"name": "cairn-client-test", "nonce": unique_suffix()}).to_string();
    write_file(&src.join("config.json"), config.as_bytes());

    let target = format!("{}/{repo}:v1", reg.host);
    let (digest, _) = push(
        &reg,
        t,
        json!({
            "target": target,
            "cwd": src,
            "files": ["model.bin", "notes.txt:text/plain", "bundle"],
            "manifest_config": format!("config.json:{CONFIG_TYPE}"),
            "annotations": {"org.opencontainers.image.description": "cairn client round trip"},
            // Chunked uploads (PATCH with Content-Range) for this one; the referrers use POST+PUT.
            "chunked": true,
            "chunk_size": 65536,
        }),
    );

    let remote = fetch_image(&reg, &repo, "v1");
    assert_eq!(remote.digest, digest);
    assert_eq!(remote.media_type, OCI_MANIFEST);
    let m: Value = serde_json::from_slice(&remote.manifest).expect("manifest JSON");
    assert_eq!(m["config"]["mediaType"], json!(CONFIG_TYPE));
    assert_eq!(remote.blobs[m["config"]["digest"].as_str().expect("config digest")], config.as_bytes());
    let layers = m["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 3, "{m}");
    let by_title = |title: &str| {
        layers
            .iter()
            .find(|l| l["annotations"]["org.opencontainers.image.title"] == json!(title))
            .unwrap_or_else(|| panic!("no layer titled {title}: {m}"))
    };
    assert_eq!(remote.blobs[by_title("model.bin")["digest"].as_str().expect("digest")], model);
    assert_eq!(by_title("notes.txt")["mediaType"], json!("text/plain"));
    assert_eq!(remote.blobs[by_title("notes.txt")["digest"].as_str().expect("digest")], notes.as_bytes());

    let out = t.join("out");
    let files = pull(&reg, t, &target, &out);
    assert_eq!(files.len(), 3, "pulled {files:?}");
    assert!(read_file(&out.join("model.bin")) == model, "model.bin differs after the round trip");
    assert_eq!(read_file(&out.join("notes.txt")), notes.as_bytes());
    assert!(read_file(&out.join("bundle/a.bin")) == d1, "bundle/a.bin differs after the round trip");
    assert!(read_file(&out.join("bundle/sub/b.bin")) == d2, "bundle/sub/b.bin differs after the round trip");
}

/// A [`Need::ReferrersApi`] test: ignored for a registry at `CONFORMANCE_URL` without it.
fn oras_referrers_are_listed() {
    let reg = registry();
    let tmp = tempdir("oras-ref");
    let t = tmp.path();
    let repo = unique_repo("oras-ref");
    let src = t.join("src");
    write_random(&src.join("app.bin"), 50 * 1024);
    let sbom = json!({"spdxVersion": "SPDX-2.3", "name": format!("app-{}", unique_suffix())}).to_string();
    write_file(&src.join("sbom.spdx.json"), sbom.as_bytes());
    let sig = random_bytes(256);
    write_file(&src.join("app.sig"), &sig);
    write_file(&src.join("sbom-config.json"), b"{}");

    let (subject_digest, _) = push(
        &reg,
        t,
        json!({"target": format!("{}/{repo}:v1", reg.host), "cwd": src, "files": ["app.bin"],
               "manifest_config": format!("absent-config:{CONFIG_TYPE}")}),
    );
    let (_, _, subject_bytes) = get_manifest(&reg, &repo, &subject_digest);
    let subject = json!({"mediaType": OCI_MANIFEST, "digest": subject_digest, "size": subject_bytes.len()});

    // Referrer 1: oras-py as it is; its artifact type is its config media type.
    let (sbom_digest, sbom_headers) = push(
        &reg,
        t,
        json!({"target": format!("{}/{repo}:sbom", reg.host), "cwd": src,
               "files": ["sbom.spdx.json:application/spdx+json"],
               "manifest_config": format!("sbom-config.json:{SBOM_TYPE}"), "subject": subject}),
    );
    // Referrer 2: an explicit artifactType over the empty config, with an annotation.
    let (sig_digest, sig_headers) = push(
        &reg,
        t,
        json!({"target": format!("{}/{repo}:sig", reg.host), "cwd": src, "files": ["app.sig"],
               "manifest_config": "absent-config:application/vnd.oci.empty.v1+json",
               "annotations": {"org.example.kind": "signature"},
               "extra_manifest_fields": {"artifactType": SIG_TYPE}, "subject": subject}),
    );
    if reg.is_cairn() {
        for h in [&sbom_headers, &sig_headers] {
            assert_eq!(h["oci-subject"], json!(subject_digest), "OCI-Subject on a PUT with subject: {h}");
        }
    }

    // Each referrer pulls back byte-identical.
    let out = t.join("out");
    pull(&reg, t, &format!("{}/{repo}:sbom", reg.host), &out);
    assert_eq!(read_file(&out.join("sbom.spdx.json")), sbom.as_bytes());
    pull(&reg, t, &format!("{}/{repo}:sig", reg.host), &out);
    assert!(read_file(&out.join("app.sig")) == sig, "app.sig differs after the round trip");

    let url = format!("{}/v2/{repo}/referrers/{subject_digest}", reg.base);
    let resp = http().get(&url).send().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "GET {url}");
    let ctype = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    assert!(ctype.starts_with(OCI_INDEX), "referrers Content-Type {ctype}");
    let index: Value = resp.json().expect("referrers JSON");
    let listed = index["manifests"].as_array().unwrap_or_else(|| panic!("no manifests in {index}"));
    assert_eq!(listed.len(), 2, "two referrers expected: {index}");
    let entry = |d: &str| {
        listed.iter().find(|e| e["digest"] == json!(d)).unwrap_or_else(|| panic!("referrer {d} not listed: {index}"))
    };
    let (_, _, sbom_bytes) = get_manifest(&reg, &repo, &sbom_digest);
    let (_, _, sig_bytes) = get_manifest(&reg, &repo, &sig_digest);
    let e1 = entry(&sbom_digest);
    assert_eq!(e1["artifactType"], json!(SBOM_TYPE), "artifactType falls back to the config media type");
    assert_eq!(e1["mediaType"], json!(OCI_MANIFEST));
    assert_eq!(e1["size"], json!(sbom_bytes.len()));
    let e2 = entry(&sig_digest);
    assert_eq!(e2["artifactType"], json!(SIG_TYPE));
    assert_eq!(e2["size"], json!(sig_bytes.len()));
    assert_eq!(e2["annotations"]["org.example.kind"], json!("signature"));

    // Filtering by artifactType (`+` percent-encoded: bare, it decodes as a space). A registry
    // may leave filtering to the client, and then says nothing in OCI-Filters-Applied; Cairn
    // filters.
    let filtered_url = format!("{url}?artifactType={}", SBOM_TYPE.replace('+', "%2B"));
    let resp = http().get(&filtered_url).send().expect("GET referrers?artifactType");
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "GET {filtered_url}");
    let applied = resp.headers().get("oci-filters-applied").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let filtered: Value = resp.json().expect("filtered referrers JSON");
    if reg.is_cairn() {
        assert_eq!(applied, "artifactType", "OCI-Filters-Applied");
    }
    if applied.contains("artifactType") {
        let digests: Vec<&Value> =
            filtered["manifests"].as_array().expect("manifests").iter().map(|e| &e["digest"]).collect();
        assert_eq!(digests, vec![&json!(sbom_digest)], "filtered referrers: {filtered}");
    }
}

/// Cairn's provenance API (issue 9) over what real clients pushed: an image pushed with
/// `docker push`, tagged twice, with an SBOM attached by oras-py the way `oras attach
/// --artifact-type application/spdx+json` writes it; the answer shows its tags, their history,
/// who pushed it, the SBOM as a referrer of kind `sboms`, and the ledger events.
fn provenance_of_a_docker_pushed_image_with_an_oras_attached_sbom() {
    use crate::docker::{LocalImages, docker, import_random_images};
    let reg = cairn_only("the provenance API");
    let tmp = tempdir("provenance");
    let t = tmp.path();
    let repo = unique_repo("provenance");
    let local = format!("cairn-clients-provenance-{}:1", unique_suffix());
    let (v1, v2) = (format!("{}/{repo}:v1", reg.host), format!("{}/{repo}:v1.0", reg.host));
    let mut cleanup = LocalImages(vec![local.clone(), v1.clone(), v2.clone()]);
    import_random_images(t, &[&local], &mut cleanup);
    run(docker().args(["tag", &local, &v1]), T);
    run(docker().args(["tag", &local, &v2]), T);
    let digest = crate::docker::push(&v1);
    assert_eq!(crate::docker::push(&v2), digest, "one image, two tags");

    let (_, media_type, body) = get_manifest(&reg, &repo, &digest);
    let src = t.join("src");
    let sbom = json!({"spdxVersion": "SPDX-2.3", "name": format!("img-{}", unique_suffix())}).to_string();
    write_file(&src.join("sbom.spdx.json"), sbom.as_bytes());
    let subject = json!({"mediaType": media_type, "digest": digest, "size": body.len()});
    let (sbom_digest, _) = push(
        &reg,
        t,
        json!({"target": format!("{}/{repo}:sbom-{}", reg.host, unique_suffix()), "cwd": src,
               "files": ["sbom.spdx.json:application/spdx+json"],
               "manifest_config": "absent-config:application/vnd.oci.empty.v1+json",
               "extra_manifest_fields": {"artifactType": "application/spdx+json"}, "subject": subject}),
    );

    let p = get_api_json(&reg, &format!("/api/v1/repositories/{repo}/artifacts/{digest}"));
    note(format!("provenance: {p}"));
    assert_eq!(p["digest"], json!(digest), "{p}");
    assert_eq!(p["media_type"], json!(media_type), "{p}");
    let tags: Vec<&str> = p["tags"].as_array().expect("tags").iter().filter_map(|t| t["tag"].as_str()).collect();
    assert_eq!(tags, vec!["v1", "v1.0"], "the tags pointing at it now: {p}");
    let history: Vec<(&str, &str)> = p["tag_history"]
        .as_array()
        .expect("tag_history")
        .iter()
        .map(|h| (h["tag"].as_str().unwrap_or(""), h["action"].as_str().unwrap_or("")))
        .collect();
    for tag in ["v1", "v1.0"] {
        assert!(history.contains(&(tag, "create")), "{tag} create in the history: {p}");
    }
    assert_eq!(p["pushed"]["actor"], json!("anonymous"), "who pushed it: {p}");
    assert_eq!(p["pushed"]["address"], json!("127.0.0.1"), "from where: {p}");
    let sboms = p["referrers"]["sboms"].as_array().unwrap_or_else(|| panic!("no sboms: {p}"));
    assert!(sboms.iter().any(|r| r["digest"] == json!(sbom_digest)), "the attached SBOM is an SBOM referrer: {p}");
    let actions: Vec<&str> =
        p["events"].as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"manifest.put") && actions.contains(&"tag.create"), "ledger events: {actions:?}");
}
