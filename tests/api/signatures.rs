//! Signatures, SBOMs and attestations (DESIGN §5) over real HTTP: cosign signatures made
//! here with ring in the exact shape cosign writes them (the tag scheme
//! `sha256-<hex>.sig`: an image manifest whose `application/vnd.dev.cosign.simplesigning.v1+json`
//! layers hold the simple-signing payload, each with its base64 ASN.1 DER ECDSA P-256
//! signature in the `dev.cosignproject.cosign/signature` annotation; sigstore/cosign
//! `pkg/oci/static/signature.go`, `pkg/types/media.go`, and sigstore/sigstore
//! `pkg/signature/payload/payload.go`), verified against `[[signatures.keys]]`; push gates on
//! tag writes and rollbacks, pull gates on manifest GETs with HEAD open; provenance with each
//! signature's verdict; the SBOM and attestation listings.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use cairn::meta::EventFilter;
use cairn::policy::gates::{GateConfig, Guard};
use cairn::signatures::KeyConfig;
use reqwest::StatusCode;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

use crate::helpers::*;

/// An ECDSA P-256 key pair, as `cosign generate-key-pair` makes one.
pub struct Signer {
    pair: EcdsaKeyPair,
}

impl Signer {
    pub fn new() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        Signer { pair: EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap() }
    }

    /// The public key as PEM SubjectPublicKeyInfo (what `cosign.pub` holds): the fixed
    /// id-ecPublicKey + prime256v1 header (RFC 5480) and the uncompressed point.
    pub fn public_pem(&self) -> String {
        let mut der = hex::decode("3059301306072a8648ce3d020106082a8648ce3d030107034200").unwrap();
        der.extend_from_slice(self.pair.public_key().as_ref());
        let b64 = B64.encode(der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
        format!("-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n", lines.join("\n"))
    }

    /// An ASN.1 DER ECDSA signature over SHA-256 of `msg`, as cosign writes it.
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        self.pair.sign(&SystemRandom::new(), msg).unwrap().as_ref().to_vec()
    }
}

/// cosign's simple-signing payload for `digest` (sigstore/sigstore `payload.go`).
fn payload(repo: &str, digest: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "critical": {
            "identity": { "docker-reference": format!("localhost/{repo}") },
            "image": { "docker-manifest-digest": digest },
            "type": "cosign container image signature",
        },
        "optional": null,
    }))
    .unwrap()
}

/// Pushes cosign's signature manifest of `subject` to its `.sig` tag, one layer per
/// `(signer, digest the payload names)`, as cosign does (appending to an existing one is
/// the caller's list). Returns the signature manifest's digest.
pub async fn cosign_sign(app: &TestApp, repo: &str, subject: &str, layers: &[(&Signer, &str)]) -> String {
    let mut descriptors = Vec::new();
    let mut diff_ids = Vec::new();
    for (signer, named) in layers {
        let p = payload(repo, named);
        let d = app.push_blob(repo, &p).await;
        diff_ids.push(d.clone());
        descriptors.push(json!({
            "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
            "size": p.len(),
            "digest": d,
            "annotations": { "dev.cosignproject.cosign/signature": B64.encode(signer.sign(&p)) },
        }));
    }
    let config = serde_json::to_vec(&json!({
        "architecture": "", "created": "0001-01-01T00:00:00Z", "history": [{ "created": "0001-01-01T00:00:00Z" }],
        "os": "", "rootfs": { "type": "layers", "diff_ids": diff_ids }, "config": {},
    }))
    .unwrap();
    let c = app.push_blob(repo, &config).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": c },
        "layers": descriptors,
    }))
    .unwrap();
    let tag = format!("sha256-{}.sig", subject.trim_start_matches("sha256:"));
    let r = app.put_manifest(repo, &tag, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    digest(&m)
}

fn key(name: &str, s: &Signer) -> KeyConfig {
    KeyConfig { name: name.into(), public_key: Some(s.public_pem()), certificate: None }
}

fn gate(repos: &str, tags: &[&str], keys: &[&str], guard: Guard) -> GateConfig {
    GateConfig {
        name: None,
        repositories: repos.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        keys: keys.iter().map(|k| k.to_string()).collect(),
        guard,
    }
}

/// Pushes an image by digest; returns (manifest bytes, digest).
async fn push_by_digest(app: &TestApp, repo: &str) -> (Vec<u8>, String) {
    let config = app.push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = random_bytes(500);
    let l = app.push_blob(repo, &layer).await;
    let m = image_manifest(&config, 37, &[(&l, 500)], None);
    let d = digest(&m);
    let r = app.put_manifest(repo, &d, OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    (m, d)
}

async fn provenance(app: &TestApp, repo: &str, d: &str) -> Value {
    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

async fn events(app: &TestApp, action: &str) -> Vec<cairn::audit::Event> {
    let filter = EventFilter { action: Some(action.into()), ..Default::default() };
    app.state.meta.events(&filter, 1000).await.unwrap()
}

#[tokio::test]
async fn a_push_gate_refuses_an_unsigned_tag_and_accepts_it_once_signed() {
    let (release, stranger) = (Signer::new(), Signer::new());
    let app = spawn_with(|c| {
        c.signatures.keys = vec![key("release", &release)];
        c.signatures.gates = vec![gate("prod/**", &["v*"], &["release"], Guard::Push)];
    })
    .await;
    let repo = "prod/app";
    let (m, d) = push_by_digest(&app, repo).await;

    // Unsigned: the tag is refused, names the gate and says what to do; nothing changes.
    let r = app.put_manifest(repo, "v1", OCI_MANIFEST, &m).await;
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!("tag {repo}:v1 needs a valid signature by key release (signature gate #1)")),
        "{msg}"
    );
    assert!(msg.contains(&format!("{d} has none")) && msg.contains("cosign sign"), "{msg}");
    assert_eq!(body["errors"][0]["detail"]["gate"], "#1");
    assert_eq!(body["errors"][0]["detail"]["keys"], json!(["release"]));
    assert!(app.tags(repo).await.is_empty());
    let refused = events(&app, "write.refuse").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].tag.as_deref(), Some("v1"));
    assert_eq!(refused[0].detail["reason"], "signature-gate");
    assert_eq!(refused[0].detail["gate"], "#1");
    // Tags the gate does not match are not gated.
    assert_eq!(app.put_manifest(repo, "candidate", OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    // `?tag=` is gated like the URL's tag, and one gated tag refuses the whole PUT.
    let url = app.url(&format!("/v2/{repo}/manifests/{d}?tag=rc&tag=v1"));
    let r = app.http.put(url).header("Content-Type", OCI_MANIFEST).body(m.clone()).send().await.unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert_eq!(app.tags(repo).await, ["candidate"]);
    // An unsigned image with a `subject` is an image, not a signature: gated.
    let (config, l) = (app.push_blob(repo, b"{}").await, app.push_blob(repo, &random_bytes(64)).await);
    let with_subject = image_manifest(&config, 2, &[(&l, 64)], Some(&d));
    let r = app.put_manifest(repo, "v9", OCI_MANIFEST, &with_subject).await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;

    // Signed by a key the gate does not trust, and a trusted signature of another digest:
    // still refused; provenance says why for each.
    let other = push_by_digest(&app, repo).await.1;
    let sig = cosign_sign(&app, repo, &d, &[(&stranger, &d), (&release, &other)]).await;
    let r = app.put_manifest(repo, "v1", OCI_MANIFEST, &m).await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let p = provenance(&app, repo, &d).await;
    assert_eq!(p["signed_by"], json!([]));
    let sigs = p["referrers"]["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 1, "{p:#}");
    assert_eq!(sigs[0]["digest"], sig);
    let v = sigs[0]["verification"].as_array().unwrap();
    assert_eq!(v.len(), 2, "{p:#}");
    assert!(v.iter().all(|c| c["status"] == "invalid" && c["format"] == "cosign-simple-signing"), "{p:#}");
    assert!(v[1]["reason"].as_str().unwrap().contains(&other), "the payload names another digest: {p:#}");

    // cosign appends the trusted signature as a new layer: now the tag is accepted.
    cosign_sign(&app, repo, &d, &[(&stranger, &d), (&release, &other), (&release, &d)]).await;
    let r = app.put_manifest(repo, "v1", OCI_MANIFEST, &m).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    let p = provenance(&app, repo, &d).await;
    assert_eq!(p["signed_by"], json!(["release"]));
    let v = &p["referrers"]["signatures"][0]["verification"][2];
    assert_eq!((v["status"].as_str(), v["key"].as_str()), (Some("valid"), Some("release")), "{p:#}");
    assert_eq!(v["algorithm"], "ecdsa-p256-sha256");
}

#[tokio::test]
async fn a_pull_gate_refuses_get_of_unsigned_manifests_and_leaves_head_open() {
    let release = Signer::new();
    let app = spawn_with(|c| {
        c.signatures.keys = vec![key("release", &release)];
        c.signatures.gates = vec![gate("secure/**", &["*"], &["release"], Guard::Pull)];
    })
    .await;
    let repo = "secure/app";
    let (_, d) = app.push_image(repo, "v1").await;
    let r = app.get(&format!("/v2/{repo}/manifests/v1")).await;
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let msg = body["errors"][0]["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("pulls of {repo} need a valid signature (signature gate #1)")), "{msg}");
    assert!(msg.contains("HEAD stays open"), "{msg}");
    let r = app.get(&format!("/v2/{repo}/manifests/{d}")).await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let r = app.head(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(d.as_str()));
    // Another repository is not gated.
    app.push_image("open/app", "v1").await;
    assert_eq!(app.get("/v2/open/app/manifests/v1").await.status(), StatusCode::OK);

    // Signing tools read through the gate: the signature is served by its tag and digest.
    let sig = cosign_sign(&app, repo, &d, &[(&release, &d)]).await;
    let tag = format!("sha256-{}.sig", d.trim_start_matches("sha256:"));
    assert_eq!(app.get(&format!("/v2/{repo}/manifests/{tag}")).await.status(), StatusCode::OK);
    assert_eq!(app.get(&format!("/v2/{repo}/manifests/{sig}")).await.status(), StatusCode::OK);
    // Signed now: served.
    let r = app.get(&format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // An unsigned image dressed as a referrer (a `subject`, or a signature-typed layer beside
    // its filesystem layer) could still be run: it stays gated.
    let config = app.push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = random_bytes(300);
    let l = app.push_blob(repo, &layer).await;
    let with_subject = image_manifest(&config, 37, &[(&l, 300)], Some(&d));
    let ds = digest(&with_subject);
    assert_eq!(app.put_manifest(repo, &ds, OCI_MANIFEST, &with_subject).await.status(), StatusCode::CREATED);
    assert_error(app.get(&format!("/v2/{repo}/manifests/{ds}")).await, StatusCode::FORBIDDEN, "DENIED").await;
    let p = payload(repo, &d);
    let pd = app.push_blob(repo, &p).await;
    let disguised = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 37 },
        "layers": [
            { "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": pd, "size": p.len() },
            { "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": 300 },
        ],
    }))
    .unwrap();
    let dd = digest(&disguised);
    assert_eq!(app.put_manifest(repo, "disguised", OCI_MANIFEST, &disguised).await.status(), StatusCode::CREATED);
    assert_error(app.get(&format!("/v2/{repo}/manifests/{dd}")).await, StatusCode::FORBIDDEN, "DENIED").await;
    // The refusals were counted for the ledger.
    app.state.registry.flush_denials().await.unwrap();
    // The server's own once-a-second flush may have written some of them first: the four
    // refusals are counted across however many events the flushes wrote.
    let denied = events(&app, "request.deny").await;
    assert!(!denied.is_empty(), "no request.deny event");
    let counted: u64 = denied.iter().map(|e| e.detail["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, 4, "{denied:?}");
    for e in &denied {
        assert!(e.detail["reason"].as_str().unwrap().contains("signature gate #1"), "{e:?}");
    }
}

#[tokio::test]
async fn a_pull_gate_serves_the_children_of_a_signed_index() {
    let release = Signer::new();
    let app = spawn_with(|c| {
        c.signatures.keys = vec![key("release", &release)];
        c.signatures.gates = vec![gate("secure/**", &["*"], &["release"], Guard::Both)];
    })
    .await;
    let repo = "secure/multi";
    let (a, da) = push_by_digest(&app, repo).await;
    let (b, db) = push_by_digest(&app, repo).await;
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            { "mediaType": OCI_MANIFEST, "digest": da, "size": a.len(), "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": OCI_MANIFEST, "digest": db, "size": b.len(), "platform": { "os": "linux", "architecture": "arm64" } },
        ],
    }))
    .unwrap();
    let di = digest(&index);
    assert_eq!(app.put_manifest(repo, &di, OCI_INDEX, &index).await.status(), StatusCode::CREATED);
    assert_error(app.get(&format!("/v2/{repo}/manifests/{da}")).await, StatusCode::FORBIDDEN, "DENIED").await;
    cosign_sign(&app, repo, &di, &[(&release, &di)]).await;
    // The index is signed (as `cosign sign` of a multi-arch image signs it): it takes the
    // tag, and it and its children are served.
    assert_eq!(app.put_manifest(repo, "v1", OCI_INDEX, &index).await.status(), StatusCode::CREATED);
    for d in [&di, &da, &db] {
        assert_eq!(app.get(&format!("/v2/{repo}/manifests/{d}")).await.status(), StatusCode::OK, "{d}");
    }
}

#[tokio::test]
async fn a_rollback_to_a_digest_whose_signature_is_gone_is_refused() {
    let release = Signer::new();
    let app = spawn_with(|c| {
        c.immutability.rules = vec![rule(None, "**", &["prod"], cairn::policy::Mode::Mutable)];
        c.signatures.keys = vec![key("release", &release)];
        c.signatures.gates = vec![gate("prod/**", &["prod"], &["release"], Guard::Push)];
    })
    .await;
    let repo = "prod/api";
    let (a, da) = push_by_digest(&app, repo).await;
    let (b, db) = push_by_digest(&app, repo).await;
    let sig_a = cosign_sign(&app, repo, &da, &[(&release, &da)]).await;
    cosign_sign(&app, repo, &db, &[(&release, &db)]).await;
    assert_eq!(app.put_manifest(repo, "prod", OCI_MANIFEST, &a).await.status(), StatusCode::CREATED);
    assert_eq!(app.put_manifest(repo, "prod", OCI_MANIFEST, &b).await.status(), StatusCode::CREATED);
    // A's signature is withdrawn: rolling prod back to A is refused by the gate.
    assert_eq!(app.delete(&format!("/v2/{repo}/manifests/{sig_a}")).await.status(), StatusCode::ACCEPTED);
    let rollback = || async {
        let url = app.url(&format!("/api/v1/repositories/{repo}/tags/prod/rollback"));
        app.http.post(url).json(&json!({ "steps": 1 })).send().await.unwrap()
    };
    let body = assert_error(rollback().await, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(body["detail"].as_str().unwrap().contains("needs a valid signature"), "{body}");
    let r = app.get(&format!("/v2/{repo}/manifests/prod")).await;
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(db.as_str()), "prod did not move");
    // Signed again: the rollback goes through.
    cosign_sign(&app, repo, &da, &[(&release, &da)]).await;
    let r = rollback().await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
    let r = app.get(&format!("/v2/{repo}/manifests/prod")).await;
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(da.as_str()), "prod is back on A");
}

/// An artifact with `subject`, one layer of `media_type` holding `content`; returns its digest.
async fn attach(
    app: &TestApp,
    repo: &str,
    subject: &str,
    artifact_type: &str,
    media_type: &str,
    content: &[u8],
) -> String {
    let empty = app.push_blob(repo, b"{}").await;
    let layer = app.push_blob(repo, content).await;
    let m = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": media_type, "digest": layer, "size": content.len() }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": 100 },
        "annotations": { "org.opencontainers.image.created": "2026-11-01T10:00:00Z" },
    }))
    .unwrap();
    let d = digest(&m);
    assert_eq!(app.put_manifest(repo, &d, OCI_MANIFEST, &m).await.status(), StatusCode::CREATED);
    layer
}

#[tokio::test]
async fn sboms_and_attestations_are_listed_and_served() {
    let app = spawn_app().await;
    let repo = "apps/sbom";
    let (_, d) = app.push_image(repo, "v1").await;
    let spdx = br#"{"spdxVersion":"SPDX-2.3","name":"app"}"#;
    let cdx = br#"<bom xmlns="http://cyclonedx.org/schema/bom/1.5"/>"#;
    let spdx_d = attach(&app, repo, &d, "application/spdx+json", "application/spdx+json", spdx).await;
    let cdx_d = attach(&app, repo, &d, "application/vnd.cyclonedx+xml", "application/vnd.cyclonedx+xml", cdx).await;
    let statement = json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": repo, "digest": { "sha256": d.trim_start_matches("sha256:") } }],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {},
    });
    // DSSE (secure-systems-lab/dsse protocol.md): the signature is over
    // PAE = "DSSEv1" SP len(type) SP type SP len(body) SP body.
    let body = serde_json::to_vec(&statement).unwrap();
    let payload_type = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), body.len()).into_bytes();
    pae.extend_from_slice(&body);
    let envelope = serde_json::to_vec(&json!({
        "payloadType": payload_type,
        "payload": B64.encode(&body),
        "signatures": [{ "keyid": "", "sig": B64.encode(Signer::new().sign(&pae)) }],
    }))
    .unwrap();
    let att_d = attach(
        &app,
        repo,
        &d,
        "application/vnd.dsse.envelope.v1+json",
        "application/vnd.dsse.envelope.v1+json",
        &envelope,
    )
    .await;
    attach(&app, repo, &d, "example/thing", "example/thing", b"not a document").await;

    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/sboms")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["subject"], d);
    let docs = list["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 2, "{list:#}");
    let by = |digest: &str| docs.iter().find(|x| x["digest"] == digest).unwrap().clone();
    let s = by(&spdx_d);
    assert_eq!((s["format"].as_str(), s["encoding"].as_str()), (Some("spdx"), Some("json")));
    assert_eq!(s["created"], "2026-11-01T10:00:00Z");
    assert_eq!(s["size"], spdx.len());
    let c = by(&cdx_d);
    assert_eq!((c["format"].as_str(), c["encoding"].as_str()), (Some("cyclonedx"), Some("xml")));

    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/sboms/{spdx_d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/spdx+json"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), spdx);
    // Not an SBOM of this manifest (an attestation's document, an image layer): 404.
    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/sboms/{att_d}")).await;
    assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;

    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/attestations")).await;
    let list: Value = r.json().await.unwrap();
    let docs = list["documents"].as_array().unwrap();
    assert_eq!(docs.len(), 1, "{list:#}");
    assert_eq!(docs[0]["digest"], att_d);
    // No key is configured: the envelope is read (its predicate named) but not verified.
    let v = &docs[0]["verification"][0];
    assert_eq!(v["status"], "unverified", "{list:#}");
    assert_eq!(v["format"], "dsse", "{list:#}");
    assert_eq!(v["predicate_type"], "https://slsa.dev/provenance/v1", "{list:#}");
    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/attestations/{att_d}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &envelope[..]);

    // A manifest that is not stored: 404 MANIFEST_UNKNOWN.
    let missing = digest(b"nothing");
    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{missing}/sboms")).await;
    assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
}

/// Pushes `manifest` (JSON) by digest and returns (bytes, digest).
async fn push_json(app: &TestApp, repo: &str, manifest: Value) -> (Vec<u8>, String) {
    let body = serde_json::to_vec(&manifest).unwrap();
    let d = digest(&body);
    let r = app.put_manifest(repo, &d, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    (body, d)
}

#[tokio::test]
async fn only_signatures_sboms_and_attestations_by_content_escape_the_gates() {
    let release = Signer::new();
    let app = spawn_with(|c| {
        c.signatures.keys = vec![key("release", &release)];
        c.signatures.gates = vec![gate("prod/**", &["*"], &["release"], Guard::Both)];
    })
    .await;
    let repo = "prod/svc";
    let (_, subject) = push_by_digest(&app, repo).await;
    let config = app.push_blob(repo, br#"{"architecture":"amd64","os":"linux"}"#).await;
    let layer = random_bytes(700);
    let l = app.push_blob(repo, &layer).await;
    let tar = json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": l, "size": 700 });
    let octet = json!({ "mediaType": "application/octet-stream", "digest": l, "size": 700 });
    let cfg = json!({ "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 37 });
    let sig_type = "application/vnd.dev.cosign.artifact.sig.v1+json";
    // Each of these is a runnable, unsigned image, dressed up: every one stays gated.
    let disguises = [
        (
            "a subject and null annotations",
            json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
            "layers": [tar], "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": 1 }, "annotations": null }),
        ),
        (
            "a signature artifactType",
            json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": sig_type,
            "config": cfg, "layers": [tar] }),
        ),
        (
            "an octet-stream layer and a subject",
            json!({ "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg,
            "layers": [octet], "subject": { "mediaType": OCI_MANIFEST, "digest": subject, "size": 1 } }),
        ),
    ];
    for (what, m) in disguises {
        let (body, d) = push_json(&app, repo, m).await;
        let r = app.put_manifest(repo, "v1", OCI_MANIFEST, &body).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "push with {what}");
        let r = app.get(&format!("/v2/{repo}/manifests/{d}")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "pull with {what}");
    }
    // A fallback tag's name exempts nothing either.
    let (image, _) = push_by_digest(&app, repo).await;
    let tag = format!("sha256-{}.sig", subject.trim_start_matches("sha256:"));
    assert_error(app.put_manifest(repo, &tag, OCI_MANIFEST, &image).await, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(app.tags(repo).await.is_empty());

    // An in-toto attestation signed by the release key, even under the `.sig` tag, is a claim
    // about the image, not an approval of it: the gate still refuses.
    let statement = serde_json::to_vec(&json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "name": repo, "digest": { "sha256": subject.trim_start_matches("sha256:") } }],
        "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
        "predicate": { "result": "FAIL" },
    }))
    .unwrap();
    let payload_type = "application/vnd.in-toto+json";
    let mut pae = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), statement.len()).into_bytes();
    pae.extend_from_slice(&statement);
    let envelope = serde_json::to_vec(&json!({
        "payloadType": payload_type,
        "payload": B64.encode(&statement),
        "signatures": [{ "keyid": "", "sig": B64.encode(release.sign(&pae)) }],
    }))
    .unwrap();
    let e = app.push_blob(repo, &envelope).await;
    let empty = app.push_blob(repo, b"{}").await;
    let att = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.dsse.envelope.v1+json", "digest": e, "size": envelope.len() }],
    }))
    .unwrap();
    let r = app.put_manifest(repo, &tag, OCI_MANIFEST, &att).await;
    assert_eq!(r.status(), StatusCode::CREATED, "an attestation is not gated: {:?}", r.text().await);
    let subject_body = app.get(&format!("/v2/{repo}/manifests/{subject}")).await;
    assert_eq!(subject_body.status(), StatusCode::FORBIDDEN);
    let p = provenance(&app, repo, &subject).await;
    assert_eq!(p["signed_by"], json!([]), "{p:#}");
    let v = &p["referrers"]["signatures"][0]["verification"][0];
    assert_eq!((v["format"].as_str(), v["status"].as_str()), (Some("dsse"), Some("valid")), "{p:#}");

    // A missing layer is the spec's error, not a gate's refusal.
    let missing = digest(b"never pushed");
    let m = image_manifest(&config, 37, &[(&missing, 12)], None);
    assert_error(
        app.put_manifest(repo, "v2", OCI_MANIFEST, &m).await,
        StatusCode::BAD_REQUEST,
        "MANIFEST_BLOB_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn a_document_is_served_with_its_stored_size_and_never_sniffed() {
    let app = spawn_app().await;
    let repo = "apps/docs";
    let (_, d) = app.push_image(repo, "v1").await;
    let html = b"<html><script>alert(1)</script></html>".to_vec();
    let layer = app.push_blob(repo, &html).await;
    let empty = app.push_blob(repo, b"{}").await;
    // The referrer declares a wrong size (5) for its document.
    push_json(
        &app,
        repo,
        json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
            "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
            "layers": [{ "mediaType": "text/html", "digest": layer, "size": 5 }],
            "subject": { "mediaType": OCI_MANIFEST, "digest": d, "size": 1 },
        }),
    )
    .await;
    let r = app.get(&format!("/api/v1/repositories/{repo}/artifacts/{d}/sboms/{layer}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some(html.len().to_string()));
    assert_eq!(header(&r, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_eq!(header(&r, "content-disposition").as_deref(), Some("attachment"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &html[..]);
}
