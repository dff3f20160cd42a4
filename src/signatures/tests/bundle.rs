//! sigstore bundles in their protobuf JSON form (sigstore/protobuf-specs
//! `protos/sigstore_bundle.proto`, `sigstore_common.proto`, `envelope.proto`): the DSSE
//! bundle `cosign sign --key … --new-bundle-format` pushes (statement of predicate
//! `https://sigstore.dev/cosign/sign/v1`, cosign `pkg/types/predicate.go`, layer media type
//! `application/vnd.dev.sigstore.bundle.v0.3+json`, cosign `pkg/oci/remote/write.go`), a
//! message-signature bundle over the manifest bytes, and keyless bundles.

use std::time::SystemTime;

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::dsse::{envelope, statement};
use super::*;
use crate::signatures::Format;

const V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const COSIGN_SIGN: &str = "https://sigstore.dev/cosign/sign/v1";

/// A keyed bundle: `publicKey.hint` plus the given content member.
fn keyed(media_type: &str, content: (&str, Value)) -> Value {
    let mut bundle = json!({
        "mediaType": media_type,
        "verificationMaterial": {"publicKey": {"hint": "q6n2JvR8Tf8="}, "tlogEntries": []},
    });
    bundle[content.0] = content.1;
    bundle
}

/// A message signature over `body` (`sigstore_common.proto` `MessageSignature`).
fn message_signature(signer: &Signer, body: &[u8]) -> Value {
    json!({
        "messageDigest": {"algorithm": "SHA2_256", "digest": b64(&Sha256::digest(body))},
        "signature": b64(&signer.sign(body)),
    })
}

fn run(ring: &Keyring, bundle: &Value, body: &[u8], stored: bool) -> SignatureCheck {
    let layer = TestLayer::new(V03, bundle.to_string().into_bytes())
        .annotate("dev.sigstore.bundle.content", "dsse-envelope")
        .annotate("dev.sigstore.bundle.predicateType", COSIGN_SIGN);
    layer.check(ring, Some(V03), body, stored, SystemTime::now())
}

fn cosign_sign_bundle(signer: &Signer, body: &[u8]) -> Value {
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(body), COSIGN_SIGN);
    keyed(V03, ("dsseEnvelope", envelope("application/vnd.in-toto+json", &payload, &[signer])))
}

#[test]
fn a_cosign_new_bundle_format_signature_is_valid() {
    let body = manifest("bundle");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let check = run(&ring, &cosign_sign_bundle(&signer, &body), &body, true);
    assert_eq!(check.format, Format::SigstoreBundleDsse);
    assert_valid(&check, "release", "ecdsa-p256-sha256");
    assert_eq!(check.predicate_type.as_deref(), Some(COSIGN_SIGN));
    // The subject's bytes are not needed for a DSSE bundle.
    assert_valid(&run(&ring, &cosign_sign_bundle(&signer, &body), &body, false), "release", "ecdsa-p256-sha256");
}

#[test]
fn dsse_bundles_refuse_untrusted_keys_other_digests_and_corruption() {
    let (body, other) = (manifest("bundle"), manifest("other"));
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    assert_invalid(
        &run(&ring, &cosign_sign_bundle(&Signer::ecdsa(), &body), &body, true),
        "no trusted key verifies this signature (tried: release)",
    );
    let check = run(&ring, &cosign_sign_bundle(&signer, &other), &body, true);
    assert_eq!(check.format, Format::SigstoreBundleDsse);
    assert_invalid(&check, &format!("the signed payload names {}", Digest::of(&other).as_str()));
    let mut corrupted = cosign_sign_bundle(&signer, &body);
    let sig = corrupted["dsseEnvelope"]["signatures"][0]["sig"].as_str().map(str::to_string).expect("sig");
    let sig = crate::signatures::common::base64_any(&sig).expect("base64");
    corrupted["dsseEnvelope"]["signatures"][0]["sig"] = json!(b64(&flipped(&sig, 10)));
    assert_invalid(&run(&ring, &corrupted, &body, true), "no trusted key verifies this signature");
}

#[test]
fn a_bundle_envelope_needs_exactly_one_signature_and_matching_key_hints() {
    // sigstore_bundle.proto: "a client MUST reject an envelope if the number of signatures
    // is not equal to one"; key hints "MUST be exactly the same".
    let body = manifest("bundle");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), COSIGN_SIGN);
    let two = keyed(V03, ("dsseEnvelope", envelope("application/vnd.in-toto+json", &payload, &[&signer, &signer])));
    assert_invalid(&run(&ring, &two, &body, true), "has 2 signatures; a bundle's envelope must have exactly one");
    let mut hinted = cosign_sign_bundle(&signer, &body);
    hinted["dsseEnvelope"]["signatures"][0]["keyid"] = json!("another-key");
    assert_invalid(
        &run(&ring, &hinted, &body, true),
        "the bundle's key hint \"q6n2JvR8Tf8=\" differs from its DSSE signature's keyid",
    );
}

#[test]
fn a_message_signature_over_the_manifest_is_valid() {
    let body = manifest("bundle");
    for (signer, algorithm) in [(Signer::ecdsa(), "ecdsa-p256-sha256"), (Signer::rsa(true), "rsa-pss-sha256")] {
        let ring = keyring(&[public_key("release", &signer)]);
        let bundle = keyed(V03, ("messageSignature", message_signature(&signer, &body)));
        let check = run(&ring, &bundle, &body, true);
        assert_eq!(check.format, Format::SigstoreBundleMessage);
        assert_valid(&check, "release", algorithm);
        assert_eq!(check.predicate_type, None);
    }
}

#[test]
fn message_signatures_need_the_subject_bytes_and_the_right_digest() {
    let (body, other) = (manifest("bundle"), manifest("other"));
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let bundle = keyed(V03, ("messageSignature", message_signature(&signer, &body)));
    let check = run(&ring, &bundle, &body, false);
    assert_eq!(check.format, Format::SigstoreBundleMessage);
    assert_unverified(&check, "the subject manifest is not stored yet");
    // Signed over another manifest's bytes.
    let elsewhere = keyed(V03, ("messageSignature", message_signature(&signer, &other)));
    assert_invalid(&run(&ring, &elsewhere, &body, true), "no trusted key verifies this signature (tried: release)");
    // The right signature, a messageDigest of something else.
    let mut lying = bundle.clone();
    lying["messageSignature"]["messageDigest"]["digest"] = json!(b64(&Sha256::digest(&other)));
    let check = run(&ring, &lying, &body, true);
    assert_invalid(&check, "the bundle's messageDigest (SHA2_256");
    assert_eq!(check.algorithm.as_deref(), Some("ecdsa-p256-sha256"));
    let mut unknown = bundle.clone();
    unknown["messageSignature"]["messageDigest"]["algorithm"] = json!("SHA3_256");
    assert_invalid(&run(&ring, &unknown, &body, true), "messageDigest.algorithm \"SHA3_256\" is not one Cairn reads");
    // A flipped signature byte.
    let mut corrupted = bundle;
    let sig = signer.sign(&body);
    corrupted["messageSignature"]["signature"] = json!(b64(&flipped(&sig, 12)));
    assert_invalid(&run(&ring, &corrupted, &body, true), "no trusted key verifies this signature");
}

#[test]
fn keyless_bundles_are_unverified_unless_a_configured_key_verifies_them() {
    let body = manifest("bundle");
    let fulcio = Signer::ecdsa();
    let cert = rcgen::CertificateParams::new(Vec::new()).expect("params").self_signed(&fulcio.rcgen()).expect("cert");
    let raw = b64(cert.der());
    let payload = statement("https://in-toto.io/Statement/v1", &Digest::of(&body), COSIGN_SIGN);
    let env = envelope("application/vnd.in-toto+json", &payload, &[&fulcio]);
    let v03 =
        json!({"mediaType": V03, "verificationMaterial": {"certificate": {"rawBytes": raw}}, "dsseEnvelope": env});
    let v02 = json!({
        "mediaType": "application/vnd.dev.sigstore.bundle+json;version=0.2",
        "verificationMaterial": {"x509CertificateChain": {"certificates": [{"rawBytes": raw}]}},
        "messageSignature": message_signature(&fulcio, &body),
    });
    let ring = keyring(&[public_key("release", &Signer::ecdsa())]);
    let check = run(&ring, &v03, &body, true);
    assert_eq!(check.format, Format::SigstoreBundleDsse);
    assert_unverified(&check, "keyless (Fulcio certificate) signatures are not verified offline");
    assert_unverified(&check, "tried: release");
    assert_eq!(check.predicate_type.as_deref(), Some(COSIGN_SIGN));
    let check = run(&keyring(&[]), &v02, &body, true);
    assert_eq!(check.format, Format::SigstoreBundleMessage);
    assert_unverified(&check, "keyless (Fulcio certificate) signatures are not verified offline");
    // The signer's key configured as a public key verifies it.
    assert_valid(&run(&keyring(&[public_key("byo", &fulcio)]), &v03, &body, true), "byo", "ecdsa-p256-sha256");
}

#[test]
fn bundle_shapes_are_checked() {
    let body = manifest("bundle");
    let signer = Signer::ecdsa();
    let ring = keyring(&[public_key("release", &signer)]);
    let mut future = cosign_sign_bundle(&signer, &body);
    future["mediaType"] = json!("application/vnd.dev.sigstore.bundle.v0.4+json");
    assert_unverified(&run(&ring, &future, &body, true), "is a version Cairn does not read");
    let mut old = cosign_sign_bundle(&signer, &body);
    old["mediaType"] = json!("application/vnd.dev.sigstore.bundle+json;version=0.1");
    assert_valid(&run(&ring, &old, &body, true), "release", "ecdsa-p256-sha256");
    let mut empty = cosign_sign_bundle(&signer, &body);
    empty.as_object_mut().expect("object").remove("dsseEnvelope");
    assert_invalid(&run(&ring, &empty, &body, true), "neither a messageSignature nor a dsseEnvelope");
    let mut bare = cosign_sign_bundle(&signer, &body);
    bare["verificationMaterial"] = json!({"tlogEntries": []});
    assert_invalid(&run(&ring, &bare, &body, true), "has no publicKey, certificate or x509CertificateChain");
    let check = run(&keyring(&[]), &cosign_sign_bundle(&signer, &body), &body, true);
    assert_unverified(&check, "sigstore bundles are verified with a trusted public key, and none is configured");
}
