//! Bare DSSE envelopes, as `cosign attest --key` pushes them: the layer blob of
//! `application/vnd.dsse.envelope.v1+json` with the annotation `predicateType` (cosign
//! `cmd/cosign/cli/attest/attest.go`), the envelope being Go's JSON of protobuf-specs
//! `io.intoto.Envelope` (`payload`, `payloadType`, `signatures[].sig` in standard base64,
//! `keyid` left out when empty; cosign `cmd/cosign/cli/signcommon/common.go`
//! `ExtractComponentsFromProtoBundle`), over an in-toto statement
//! (in-toto/attestation `spec/v1/statement.md`).

use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;

use super::*;
use crate::signatures::Format;
use crate::signatures::dsse::pae;

const MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
const SLSA: &str = "https://slsa.dev/provenance/v1";

/// An in-toto statement about `digest` (`_type` v1 or v0.1).
pub(super) fn statement(statement_type: &str, digest: &Digest, predicate_type: &str) -> Vec<u8> {
    json!({
        "_type": statement_type,
        "subject": [{"name": "registry.example/team/app", "digest": {digest.algorithm().as_str(): digest.hex()}}],
        "predicateType": predicate_type,
        "predicate": {"buildDefinition": {"buildType": "https://example.com/build"}}
    })
    .to_string()
    .into_bytes()
}

/// A DSSE envelope of `payload`, each signer signing its PAE.
pub(super) fn envelope(payload_type: &str, payload: &[u8], signers: &[&Signer]) -> serde_json::Value {
    let message = pae(payload_type, payload);
    let signatures: Vec<_> = signers.iter().map(|s| json!({"sig": b64(&s.sign(&message))})).collect();
    json!({"payloadType": payload_type, "payload": b64(payload), "signatures": signatures})
}

fn run(ring: &Keyring, envelope: &serde_json::Value, body: &[u8]) -> SignatureCheck {
    let layer = TestLayer::new(MEDIA_TYPE, envelope.to_string().into_bytes())
        .annotate("predicateType", SLSA)
        .annotate("dev.cosignproject.cosign/signature", "");
    let check = layer.check(ring, Some("application/vnd.in-toto+json"), body, true, SystemTime::now());
    assert_eq!(check.format, Format::Dsse);
    check
}

#[test]
fn pae_matches_the_dsse_test_vector() {
    // secure-systems-lab/dsse protocol.md, "Test Vectors".
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
}

#[test]
fn valid_statements_name_the_predicate_type() {
    let body = manifest("dsse");
    for (signer, algorithm, statement_type) in [
        (Signer::ecdsa(), "ecdsa-p256-sha256", "https://in-toto.io/Statement/v1"),
        (Signer::ed25519(), "ed25519", "https://in-toto.io/Statement/v0.1"),
        (Signer::rsa(false), "rsa-pkcs1-sha256", "https://in-toto.io/Statement/v1"),
        (Signer::rsa(true), "rsa-pss-sha256", "https://in-toto.io/Statement/v1"),
    ] {
        let ring = keyring(&[public_key("ci", &signer)]);
        let env =
            envelope("application/vnd.in-toto+json", &statement(statement_type, &Digest::of(&body), SLSA), &[&signer]);
        let check = run(&ring, &env, &body);
        assert_valid(&check, "ci", algorithm);
        assert_eq!(check.predicate_type.as_deref(), Some(SLSA));
    }
}

#[test]
fn url_safe_base64_and_a_second_untrusted_signature_are_accepted() {
    // "Either standard or URL-safe base64 encodings are allowed ... verifiers MUST accept
    // either" (dsse protocol.md); one trusted signature of several suffices.
    let body = manifest("dsse");
    let (trusted, stranger) = (Signer::ecdsa(), Signer::ecdsa());
    let ring = keyring(&[public_key("ci", &trusted)]);
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), SLSA);
    let mut env = envelope("application/vnd.in-toto+json", &payload, &[&stranger, &trusted]);
    env["payload"] = json!(URL_SAFE_NO_PAD.encode(&payload));
    assert_valid(&run(&ring, &env, &body), "ci", "ecdsa-p256-sha256");
}

#[test]
fn signed_by_an_untrusted_key_is_invalid() {
    let body = manifest("dsse");
    let ring = keyring(&[public_key("ci", &Signer::ecdsa())]);
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), SLSA);
    let check = run(&ring, &envelope("application/vnd.in-toto+json", &payload, &[&Signer::ecdsa()]), &body);
    assert_invalid(&check, "no trusted key verifies this signature (tried: ci)");
    // The predicate is named (for listings) though the verdict says not to believe it.
    assert_eq!(check.predicate_type.as_deref(), Some(SLSA));
}

#[test]
fn a_statement_about_another_manifest_is_invalid() {
    let (body, other) = (manifest("dsse"), manifest("other"));
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("ci", &signer)]);
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&other), SLSA);
    let check = run(&ring, &envelope("application/vnd.in-toto+json", &payload, &[&signer]), &body);
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
fn a_corrupted_signature_or_payload_type_is_invalid() {
    let body = manifest("dsse");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("ci", &signer)]);
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), SLSA);
    let good = envelope("application/vnd.in-toto+json", &payload, &[&signer]);
    let mut bad = good.clone();
    let sig = signer.sign(&pae("application/vnd.in-toto+json", &payload));
    bad["signatures"][0]["sig"] = json!(b64(&flipped(&sig, 20)));
    assert_invalid(&run(&ring, &bad, &body), "no trusted key verifies this signature");
    // The payload type is signed (PAE): changing it breaks the signature.
    let mut retyped = good.clone();
    retyped["payloadType"] = json!("application/json");
    assert_invalid(&run(&ring, &retyped, &body), "no trusted key verifies this signature");
    // Signed as another type: verifies, but is no in-toto statement.
    let other_type = envelope("application/vnd.example+json", &payload, &[&signer]);
    assert_invalid(
        &run(&ring, &other_type, &body),
        "payloadType is \"application/vnd.example+json\", not an in-toto statement",
    );
    let mut garbled = good;
    garbled["payload"] = json!("***");
    assert_invalid(&run(&ring, &garbled, &body), "the DSSE envelope's payload is not valid base64");
}

#[test]
fn statement_fields_are_checked() {
    let body = manifest("dsse");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("ci", &signer)]);
    let old = statement("https://in-toto.io/Statement/v0.2", &Digest::of(&body), SLSA);
    assert_invalid(
        &run(&ring, &envelope("application/vnd.in-toto+json", &old, &[&signer]), &body),
        "the signed statement's _type is \"https://in-toto.io/Statement/v0.2\"",
    );
    // Predicate-specific in-toto payload types are allowed (in-toto spec/v1/envelope.md).
    let ok = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), SLSA);
    assert_valid(
        &run(&ring, &envelope("application/vnd.in-toto.provenance+json", &ok, &[&signer]), &body),
        "ci",
        "ecdsa-p256-sha256",
    );
    let sha512 =
        statement("https://in-toto.io/Statement/v1", &Digest::of_with(crate::oci::Algorithm::Sha512, &body), SLSA);
    assert_invalid(
        &run(&ring, &envelope("application/vnd.in-toto+json", &sha512, &[&signer]), &body),
        "the signed statement names no sha256 digest among its subjects",
    );
    let empty = json!({"payloadType": "application/vnd.in-toto+json", "payload": b64(&ok), "signatures": []});
    assert_invalid(&run(&ring, &empty, &body), "the DSSE envelope has no signatures");
}

#[test]
fn no_public_key_configured_is_unverified() {
    let body = manifest("dsse");
    let signer = Signer::ecdsa();
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), SLSA);
    let check = run(&keyring(&[]), &envelope("application/vnd.in-toto+json", &payload, &[&signer]), &body);
    assert_unverified(
        &check,
        "DSSE envelopes (cosign attest) are verified with a trusted public key, and none is configured",
    );
}
