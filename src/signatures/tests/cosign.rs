//! cosign simple signing, as `cosign sign --key` pushes it: the payload blob of sigstore
//! `pkg/signature/payload/payload.go` (`SimpleContainerImage`; the exact bytes are in
//! cosign `pkg/cosign/obsolete_test.go`), the base64 signature in the layer annotation
//! `dev.cosignproject.cosign/signature` (cosign `pkg/oci/static/signature.go`).

use std::time::SystemTime;

use super::*;
use crate::signatures::Format;

const MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
const ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The payload cosign signs for `digest` (sigstore `payload.Cosign.MarshalJSON`).
fn payload(digest: &Digest) -> Vec<u8> {
    format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"registry.example/team/app"}},"image":{{"docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":null}}"#,
        digest.as_str()
    )
    .into_bytes()
}

/// The layer cosign pushes: `payload` signed by `signer`.
fn signed(signer: &Signer, payload: Vec<u8>) -> TestLayer {
    let signature = b64(&signer.sign(&payload));
    TestLayer::new(MEDIA_TYPE, payload).annotate(ANNOTATION, &signature)
}

fn run(ring: &Keyring, layer: &TestLayer, body: &[u8]) -> SignatureCheck {
    let check =
        layer.check(ring, Some("application/vnd.dev.cosign.artifact.sig.v1+json"), body, true, SystemTime::now());
    assert_eq!(check.format, Format::CosignSimpleSigning);
    check
}

#[test]
fn valid_with_each_key_kind_cosign_writes() {
    let body = manifest("cosign");
    for (signer, algorithm) in [
        (Signer::ecdsa(), "ecdsa-p256-sha256"),
        (Signer::ed25519(), "ed25519"),
        (Signer::rsa(false), "rsa-pkcs1-sha256"),
    ] {
        let ring = keyring(&[public_key("other", &Signer::ecdsa()), public_key("release", &signer)]);
        let check = run(&ring, &signed(&signer, payload(&Digest::of(&body))), &body);
        assert_valid(&check, "release", algorithm);
        assert_eq!(check.predicate_type, None);
    }
}

#[test]
fn signed_by_an_untrusted_key_is_invalid() {
    let body = manifest("cosign");
    let ring = keyring(&[public_key("release", &Signer::ecdsa()), public_key("ops", &Signer::ed25519())]);
    let check = run(&ring, &signed(&Signer::ecdsa(), payload(&Digest::of(&body))), &body);
    assert_invalid(&check, "no trusted key verifies this signature (tried: release, ops)");
    assert_invalid(&check, "not the pre-hashed Ed25519ph ones cosign makes with Ed25519 keys by default");
    assert_eq!(check.algorithm, None);
}

#[test]
fn a_payload_naming_another_manifest_is_invalid_though_the_signature_verifies() {
    let (body, other) = (manifest("cosign"), manifest("other"));
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let check = run(&ring, &signed(&signer, payload(&Digest::of(&other))), &body);
    assert_invalid(
        &check,
        &format!(
            "the signed payload names {}, not the subject {}",
            Digest::of(&other).as_str(),
            Digest::of(&body).as_str()
        ),
    );
    assert_eq!(check.algorithm.as_deref(), Some("ecdsa-p256-sha256"));
}

#[test]
fn a_corrupted_signature_or_payload_is_invalid() {
    let body = manifest("cosign");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let good = signed(&signer, payload(&Digest::of(&body)));
    let signature = signer.sign(&good.content);
    let bad_sig = TestLayer::new(MEDIA_TYPE, good.content.clone()).annotate(ANNOTATION, &b64(&flipped(&signature, 40)));
    assert_invalid(&run(&ring, &bad_sig, &body), "no trusted key verifies this signature (tried: release)");
    let mut bad_payload = TestLayer::new(MEDIA_TYPE, flipped(&good.content, 3));
    bad_payload.annotations = good.annotations.clone();
    assert_invalid(&run(&ring, &bad_payload, &body), "no trusted key verifies this signature");
    let garbled = TestLayer::new(MEDIA_TYPE, good.content.clone()).annotate(ANNOTATION, "not base64!");
    assert_invalid(&run(&ring, &garbled, &body), "the signature is not valid base64");
}

#[test]
fn a_missing_signature_annotation_is_invalid() {
    let body = manifest("cosign");
    let ring = keyring(&[public_key("release", &Signer::ecdsa())]);
    let check = run(&ring, &TestLayer::new(MEDIA_TYPE, payload(&Digest::of(&body))), &body);
    assert_invalid(&check, "the layer has no dev.cosignproject.cosign/signature annotation");
}

#[test]
fn rsa_pss_is_not_accepted_for_cosign() {
    // cosign writes RSA signatures with PKCS#1 v1.5 only (cosign pkg/cosign/keys.go,
    // SupportedKeyDetails).
    let body = manifest("cosign");
    let signer = Signer::rsa(true);
    let ring = keyring(&[public_key("release", &signer)]);
    assert_invalid(&run(&ring, &signed(&signer, payload(&Digest::of(&body))), &body), "no trusted key verifies");
}

#[test]
fn no_public_key_configured_is_unverified() {
    let body = manifest("cosign");
    let layer = signed(&Signer::ecdsa(), payload(&Digest::of(&body)));
    let cert = rcgen::CertificateParams::new(Vec::new()).expect("params").self_signed(&Signer::ecdsa().rcgen());
    for ring in [keyring(&[]), keyring(&[certificate("notary", cert.expect("cert").pem())])] {
        let check = run(&ring, &layer, &body);
        assert_unverified(&check, "cosign signatures are verified with a trusted public key, and none is configured");
        assert_unverified(&check, "public_key = ");
    }
}

#[test]
fn payload_field_names_match_as_cosign_reads_them() {
    // cosign specs/SIGNATURE_SPEC.md spells "Docker-manifest-digest"; Go's encoding/json
    // matches keys ignoring case, and so does Cairn.
    let body = manifest("cosign");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let spec_example = format!(
        r#"{{"critical":{{"identity":{{"docker-reference":"testing/manifest"}},"image":{{"Docker-manifest-digest":"{}"}},"type":"cosign container image signature"}},"optional":{{"creator":"atomic","timestamp":1458239713}}}}"#,
        Digest::of(&body).as_str()
    );
    assert_valid(&run(&ring, &signed(&signer, spec_example.into_bytes()), &body), "release", "ecdsa-p256-sha256");
    let atomic = String::from_utf8(payload(&Digest::of(&body)))
        .expect("utf-8")
        .replace("cosign container image signature", "atomic container signature");
    assert_invalid(
        &run(&ring, &signed(&signer, atomic.into_bytes()), &body),
        "the payload's critical.type is \"atomic container signature\"",
    );
    let no_digest = br#"{"critical":{"identity":{},"image":{},"type":"cosign container image signature"}}"#.to_vec();
    assert_invalid(&run(&ring, &signed(&signer, no_digest), &body), "critical.image.docker-manifest-digest is missing");
    assert_invalid(
        &run(&ring, &signed(&signer, b"[1, 2]".to_vec()), &body),
        "the payload is not cosign simple-signing JSON",
    );
}
