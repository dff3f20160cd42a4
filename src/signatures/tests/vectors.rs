//! Signatures the real tools made, from their own test data (`testdata/README.md`): Cairn
//! must read them exactly as written.

use std::time::SystemTime;

use serde_json::Value;

use super::*;
use crate::signatures::Format;

/// cosign's keyless OCI attestation bundle (cosign `pkg/cosign/testdata`).
const COSIGN_BUNDLE: &str = include_str!("../testdata/cosign-oci-attestation.sigstore.json");
/// The public key of that bundle's Fulcio certificate.
const COSIGN_LEAF_KEY: &str = include_str!("../testdata/cosign-oci-attestation.leaf.pub.pem");
/// The image the cosign bundle attests.
const COSIGN_SUBJECT: &str = "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4";
/// sigstore-go's example keyed bundle (npm's publish attestation).
const NPM_BUNDLE: &str = include_str!("../testdata/sigstore-go-bundle-publish.json");
const NPM_KEY: &str = include_str!("../testdata/sigstore-go-publish_key.pub.pem");
/// The npm tarball it attests.
const NPM_SUBJECT: &str = "sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751";

fn key(name: &str, pem: &str) -> KeyConfig {
    KeyConfig { name: name.into(), public_key: Some(pem.into()), certificate: None }
}

fn run(ring: &Keyring, bundle: &[u8], subject: &str) -> SignatureCheck {
    let digest = Digest::parse(subject).expect("digest");
    let layer = TestLayer::new("application/vnd.dev.sigstore.bundle.v0.3+json", bundle.to_vec());
    let check = layer.check_subject(ring, None, &Subject { digest: &digest, body: None }, SystemTime::now());
    assert_eq!(check.format, Format::SigstoreBundleDsse);
    check
}

#[test]
fn cosigns_keyless_bundle_is_unverified_unless_its_key_is_configured() {
    let bundle = COSIGN_BUNDLE.as_bytes();
    let check = run(&keyring(&[public_key("release", &Signer::ecdsa())]), bundle, COSIGN_SUBJECT);
    assert_unverified(&check, "keyless (Fulcio certificate) signatures are not verified offline");
    let ring = keyring(&[key("fulcio-leaf", COSIGN_LEAF_KEY)]);
    let check = run(&ring, bundle, COSIGN_SUBJECT);
    assert_valid(&check, "fulcio-leaf", "ecdsa-p256-sha256");
    assert_eq!(check.predicate_type.as_deref(), Some("https://cosign.sigstore.dev/attestation/v1"));
    let other = format!("sha256:{}", "0".repeat(64));
    assert_invalid(
        &run(&ring, bundle, &other),
        &format!("the signed payload names {COSIGN_SUBJECT}, not the subject {other}"),
    );
}

#[test]
fn sigstore_js_keyed_bundle_is_valid_for_its_sha512_subject() {
    let ring = keyring(&[key("npm", NPM_KEY)]);
    let check = run(&ring, NPM_BUNDLE.as_bytes(), NPM_SUBJECT);
    assert_valid(&check, "npm", "ecdsa-p256-sha256");
    assert_eq!(
        check.predicate_type.as_deref(),
        Some("https://github.com/npm/attestation/tree/main/specs/publish/v0.1")
    );
    // The same statement has no sha256 subject.
    assert_invalid(&run(&ring, NPM_BUNDLE.as_bytes(), COSIGN_SUBJECT), "names no sha256 digest among its subjects");
    // One flipped signature byte.
    let mut bundle: Value = serde_json::from_str(NPM_BUNDLE).expect("json");
    let sig = bundle["dsseEnvelope"]["signatures"][0]["sig"].as_str().expect("sig").to_string();
    let sig = crate::signatures::common::base64_any(&sig).expect("base64");
    bundle["dsseEnvelope"]["signatures"][0]["sig"] = Value::String(b64(&flipped(&sig, 30)));
    assert_invalid(
        &run(&ring, bundle.to_string().as_bytes(), NPM_SUBJECT),
        "no trusted key verifies this signature (tried: npm)",
    );
}
