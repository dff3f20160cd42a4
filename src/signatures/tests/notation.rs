//! notation JWS envelopes, as `notation sign` pushes them (notaryproject/specifications
//! `specs/signature-envelope-jws.md`): a manifest of artifact type
//! `application/vnd.cncf.notary.signature` whose `application/jose+json` layer is the
//! flattened JWS JSON `{"payload", "protected", "header": {"x5c", "io.cncf.notary.signingAgent"},
//! "signature"}`; protected headers `alg`, `crit`, `cty`, `io.cncf.notary.signingScheme`,
//! `io.cncf.notary.signingTime`; payload `{"targetArtifact": {mediaType, digest, size}}`
//! (`specs/signature-specification.md`); certificates per its "Certificate Requirements".

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer, KeyUsagePurpose as Ku,
};
use serde_json::{Value, json};

use super::*;
use crate::signatures::Format;

const ARTIFACT_TYPE: &str = "application/vnd.cncf.notary.signature";
const MEDIA_TYPE: &str = "application/jose+json";

/// A CA: its certificate (PEM, DER) and the issuer that signs with its key.
struct Ca {
    pem: String,
    der: Vec<u8>,
    issuer: Issuer<'static, rcgen::KeyPair>,
}

fn params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::new()).expect("params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p
}

/// A CA certificate with the code-signing EKU, self-signed or issued by `parent`.
fn ca(name: &str, parent: Option<&Ca>) -> Ca {
    let mut p = params(name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![Ku::KeyCertSign, Ku::CrlSign];
    p.extended_key_usages = vec![Eku::CodeSigning];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = match parent {
        Some(parent) => p.signed_by(&key, &parent.issuer),
        None => p.self_signed(&key),
    }
    .expect("CA certificate");
    Ca { pem: cert.pem(), der: cert.der().to_vec(), issuer: Issuer::new(p, key) }
}

/// A signing certificate for `signer`'s key issued by `ca`, with these usages.
fn leaf(ca: &Ca, signer: &Signer, key_usages: Vec<Ku>, ekus: Vec<Eku>, not_after: Option<(i32, u8, u8)>) -> Vec<u8> {
    let mut p = params("wabbit-networks.io");
    p.key_usages = key_usages;
    p.extended_key_usages = ekus;
    if let Some((y, m, d)) = not_after {
        p.not_after = rcgen::date_time_ymd(y, m, d);
    }
    p.signed_by(&signer.rcgen(), &ca.issuer).expect("leaf certificate").der().to_vec()
}

/// A code-signing leaf as notation's certificate requirements describe it.
fn code_signing_leaf(ca: &Ca, signer: &Signer) -> Vec<u8> {
    leaf(ca, signer, vec![Ku::DigitalSignature], vec![Eku::CodeSigning], None)
}

/// An unsigned envelope: headers, payload and chain, to adjust before signing.
struct Jws {
    protected: Value,
    payload: Value,
    x5c: Vec<Vec<u8>>,
}

impl Jws {
    fn new(alg: &str, subject: &[u8], x5c: Vec<Vec<u8>>) -> Jws {
        Jws {
            protected: json!({
                "alg": alg,
                "crit": ["io.cncf.notary.signingScheme"],
                "cty": "application/vnd.cncf.notary.payload.v1+json",
                "io.cncf.notary.signingScheme": "notary.x509",
                "io.cncf.notary.signingTime": "2025-04-06T07:01:20Z",
            }),
            payload: json!({"targetArtifact": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": Digest::of(subject).as_str(),
                "size": subject.len(),
            }}),
            x5c,
        }
    }

    /// The envelope signed by `signer` (`signature-envelope-jws.md`, "Signature").
    fn sign(&self, signer: &Signer) -> Value {
        let protected = URL_SAFE_NO_PAD.encode(self.protected.to_string());
        let payload = URL_SAFE_NO_PAD.encode(self.payload.to_string());
        let signature = signer.sign_jws(format!("{protected}.{payload}").as_bytes());
        json!({
            "payload": payload,
            "protected": protected,
            "header": {
                "x5c": self.x5c.iter().map(|c| b64(c)).collect::<Vec<_>>(),
                "io.cncf.notary.signingAgent": "notation-go/1.3.0",
            },
            "signature": URL_SAFE_NO_PAD.encode(signature),
        })
    }
}

fn run_at(ring: &Keyring, envelope: &Value, body: &[u8], now: SystemTime) -> SignatureCheck {
    let layer = TestLayer::new(MEDIA_TYPE, envelope.to_string().into_bytes());
    let check = layer.check(ring, Some(ARTIFACT_TYPE), body, true, now);
    assert_eq!(check.format, Format::NotationJws);
    check
}

fn run(ring: &Keyring, envelope: &Value, body: &[u8]) -> SignatureCheck {
    run_at(ring, envelope, body, SystemTime::now())
}

/// A root, a leaf key and its certificate, and a keyring trusting the root.
fn setup(signer: Signer) -> (Ca, Signer, Vec<u8>, Keyring) {
    let root = ca("Notary Root", None);
    let leaf = code_signing_leaf(&root, &signer);
    let other = ca("Other Root", None);
    let ring = keyring(&[certificate("other-root", other.pem.clone()), certificate("notary-root", root.pem.clone())]);
    (root, signer, leaf, ring)
}

#[test]
fn an_es256_signature_chaining_to_a_configured_root_is_valid() {
    let body = manifest("notation");
    let (root, signer, leaf, ring) = setup(Signer::ecdsa());
    let envelope = Jws::new("ES256", &body, vec![leaf, root.der.clone()]).sign(&signer);
    let check = run(&ring, &envelope, &body);
    assert_valid(&check, "notary-root", "ecdsa-p256-sha256");
    assert_eq!(check.predicate_type, None);
}

#[test]
fn a_ps256_signature_with_an_rsa_leaf_is_valid() {
    let body = manifest("notation");
    let (root, signer, leaf, ring) = setup(Signer::rsa(true));
    let envelope = Jws::new("PS256", &body, vec![leaf, root.der.clone()]).sign(&signer);
    assert_valid(&run(&ring, &envelope, &body), "notary-root", "rsa-pss-sha256");
}

#[test]
fn the_key_named_is_the_configured_certificate_the_chain_reaches() {
    let body = manifest("notation");
    let root = ca("Notary Root", None);
    let intermediate = ca("Notary Intermediate", Some(&root));
    let signer = Signer::ecdsa();
    let leaf = code_signing_leaf(&intermediate, &signer);
    let envelope = Jws::new("ES256", &body, vec![leaf, intermediate.der.clone(), root.der.clone()]).sign(&signer);
    assert_valid(
        &run(&keyring(&[certificate("root", root.pem.clone())]), &envelope, &body),
        "root",
        "ecdsa-p256-sha256",
    );
    let check = run(&keyring(&[certificate("intermediate", intermediate.pem.clone())]), &envelope, &body);
    assert_valid(&check, "intermediate", "ecdsa-p256-sha256");
}

#[test]
fn a_self_signed_signing_certificate_configured_as_the_certificate_is_valid() {
    // `notation cert generate-test` makes one self-signed code-signing certificate; the
    // spec allows a chain of only that certificate (signature-specification.md, "Other
    // requirements").
    let body = manifest("notation");
    let signer = Signer::ecdsa();
    let mut p = params("wabbit-networks.io");
    p.key_usages = vec![Ku::DigitalSignature];
    p.extended_key_usages = vec![Eku::CodeSigning];
    let cert = p.self_signed(&signer.rcgen()).expect("self-signed");
    let envelope = Jws::new("ES256", &body, vec![cert.der().to_vec()]).sign(&signer);
    assert_valid(&run(&keyring(&[certificate("test", cert.pem())]), &envelope, &body), "test", "ecdsa-p256-sha256");
}

#[test]
fn a_chain_to_an_unconfigured_root_is_invalid() {
    let body = manifest("notation");
    let stranger = ca("Stranger Root", None);
    let signer = Signer::ecdsa();
    let leaf = code_signing_leaf(&stranger, &signer);
    let (_, _, _, ring) = setup(Signer::ecdsa());
    let envelope = Jws::new("ES256", &body, vec![leaf, stranger.der.clone()]).sign(&signer);
    assert_invalid(
        &run(&ring, &envelope, &body),
        "the certificate chain does not lead to a configured certificate: no configured certificate issued it or its \
         chain (trusted: other-root, notary-root)",
    );
}

#[test]
fn a_payload_naming_another_manifest_is_invalid() {
    let (body, other) = (manifest("notation"), manifest("other"));
    let (root, signer, leaf, ring) = setup(Signer::ecdsa());
    let envelope = Jws::new("ES256", &other, vec![leaf.clone(), root.der.clone()]).sign(&signer);
    let check = run(&ring, &envelope, &body);
    assert_invalid(
        &check,
        &format!(
            "the signed payload names {}, not the subject {}",
            Digest::of(&other).as_str(),
            Digest::of(&body).as_str()
        ),
    );
    assert_eq!(check.algorithm.as_deref(), Some("ecdsa-p256-sha256"));
    let mut jws = Jws::new("ES256", &body, vec![leaf, root.der.clone()]);
    jws.payload["targetArtifact"]["size"] = json!(body.len() + 1);
    assert_invalid(&run(&ring, &jws.sign(&signer), &body), "gives the subject's size as");
}

#[test]
fn a_corrupted_signature_is_invalid() {
    let body = manifest("notation");
    let (root, signer, leaf, ring) = setup(Signer::ecdsa());
    let mut envelope = Jws::new("ES256", &body, vec![leaf, root.der.clone()]).sign(&signer);
    let sig = URL_SAFE_NO_PAD.decode(envelope["signature"].as_str().expect("signature")).expect("base64url");
    envelope["signature"] = json!(URL_SAFE_NO_PAD.encode(flipped(&sig, 5)));
    assert_invalid(&run(&ring, &envelope, &body), "the signature does not verify with the signing certificate's key");
    // Signed by another key than the certificate's.
    let envelope =
        Jws::new("ES256", &body, vec![code_signing_leaf(&root, &signer), root.der.clone()]).sign(&Signer::ecdsa());
    assert_invalid(&run(&ring, &envelope, &body), "the signature does not verify with the signing certificate's key");
}

#[test]
fn unknown_or_mismatched_algorithms_are_refused() {
    let body = manifest("notation");
    let (root, signer, leaf, ring) = setup(Signer::ecdsa());
    for alg in ["HS256", "none", "RS256", "EdDSA"] {
        let check = run(&ring, &Jws::new(alg, &body, vec![leaf.clone(), root.der.clone()]).sign(&signer), &body);
        assert_invalid(&check, &format!("unknown JWS alg {alg:?}"));
        assert_eq!(check.algorithm, None);
    }
    let check = run(&ring, &Jws::new("PS256", &body, vec![leaf.clone(), root.der.clone()]).sign(&signer), &body);
    assert_invalid(&check, "the JWS alg is PS256 but the signing certificate's key calls for ES256");
    let check = run(&ring, &Jws::new("ES512", &body, vec![leaf, root.der.clone()]).sign(&signer), &body);
    assert_unverified(&check, "ES512 (ECDSA P-521) signatures are not verified by Cairn");
}

#[test]
fn signing_certificate_usages_follow_notation() {
    let body = manifest("notation");
    let (root, signer, _, ring) = setup(Signer::ecdsa());
    let sign = |leaf: Vec<u8>| Jws::new("ES256", &body, vec![leaf, root.der.clone()]).sign(&signer);
    let server = leaf(&root, &signer, vec![Ku::DigitalSignature], vec![Eku::ServerAuth], None);
    assert_invalid(&run(&ring, &sign(server), &body), "extended key usage names serverAuth, not code signing");
    // The extended key usage is optional for notation (signature-specification.md, Leaf
    // Certificates; notation-core-go validateCodeSigningExtendedKeyUsage).
    let no_eku = leaf(&root, &signer, vec![Ku::DigitalSignature], Vec::new(), None);
    assert_valid(&run(&ring, &sign(no_eku), &body), "notary-root", "ecdsa-p256-sha256");
    let cert_sign = leaf(&root, &signer, vec![Ku::DigitalSignature, Ku::KeyCertSign], vec![Eku::CodeSigning], None);
    assert_invalid(&run(&ring, &sign(cert_sign), &body), "key usage also allows keyCertSign");
    let no_ku = leaf(&root, &signer, Vec::new(), vec![Eku::CodeSigning], None);
    assert_invalid(&run(&ring, &sign(no_ku), &body), "has no key usage extension");
}

#[test]
fn certificates_and_signatures_expire() {
    let body = manifest("notation");
    let (root, signer, leaf_cert, ring) = setup(Signer::ecdsa());
    let old = leaf(&root, &signer, vec![Ku::DigitalSignature], vec![Eku::CodeSigning], Some((2020, 1, 1)));
    let envelope = Jws::new("ES256", &body, vec![old, root.der.clone()]).sign(&signer);
    assert_invalid(&run(&ring, &envelope, &body), "a certificate in the chain has expired");
    let mut jws = Jws::new("ES256", &body, vec![leaf_cert, root.der.clone()]);
    jws.protected["io.cncf.notary.expiry"] = json!("2030-01-01T00:00:00Z");
    jws.protected["crit"] = json!(["io.cncf.notary.signingScheme", "io.cncf.notary.expiry"]);
    let envelope = jws.sign(&signer);
    assert_valid(&run(&ring, &envelope, &body), "notary-root", "ecdsa-p256-sha256");
    let after = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_456_000); // 2030-01-01T00:00:00Z
    assert_invalid(&run_at(&ring, &envelope, &body, after), "the signature expired at 2030-01-01T00:00:00Z");
}

#[test]
fn protected_headers_follow_the_jws_envelope_spec() {
    let body = manifest("notation");
    let (root, signer, leaf, ring) = setup(Signer::ecdsa());
    let with = |f: &dyn Fn(&mut Value)| {
        let mut jws = Jws::new("ES256", &body, vec![leaf.clone(), root.der.clone()]);
        f(&mut jws.protected);
        run(&ring, &jws.sign(&signer), &body)
    };
    let check = with(&|p| p["crit"] = json!([]));
    assert_invalid(&check, "does not mark io.cncf.notary.signingScheme critical");
    let check = with(&|p| p["cty"] = json!("application/json"));
    assert_invalid(&check, "the JWS cty is \"application/json\"");
    let check = with(&|p| p["io.cncf.notary.signingScheme"] = json!("notary.default"));
    assert_invalid(&check, "the signing scheme \"notary.default\" is not notary.x509");
    let check = with(&|p| {
        p["io.cncf.notary.expiry"] = json!("2030-01-01T00:00:00Z");
    });
    assert_invalid(&check, "does not mark io.cncf.notary.expiry critical");
    let check = with(&|p| {
        p["io.cncf.notary.verificationPlugin"] = json!("com.example.plugin");
        p["crit"] = json!(["io.cncf.notary.signingScheme", "io.cncf.notary.verificationPlugin"]);
    });
    assert_unverified(&check, "requires a notation verification plugin (io.cncf.notary.verificationPlugin)");
    let check = with(&|p| {
        p["com.example.custom"] = json!("x");
        p["crit"] = json!(["io.cncf.notary.signingScheme", "com.example.custom"]);
    });
    assert_invalid(&check, "marks com.example.custom critical, which Cairn does not understand");
    let check = with(&|p| {
        p.as_object_mut().expect("object").remove("io.cncf.notary.signingTime");
    });
    assert_invalid(&check, "the notary.x509 signing scheme needs io.cncf.notary.signingTime");
}

#[test]
fn no_certificate_configured_is_unverified() {
    let body = manifest("notation");
    let (root, signer, leaf, _) = setup(Signer::ecdsa());
    let envelope = Jws::new("ES256", &body, vec![leaf, root.der.clone()]).sign(&signer);
    for ring in [keyring(&[]), keyring(&[public_key("cosign", &Signer::ecdsa())])] {
        assert_unverified(&run(&ring, &envelope, &body), "notation signatures need a trusted certificate");
    }
    // A jose+json layer outside a notation signature manifest is not a signature layer.
    let layer = TestLayer::new(MEDIA_TYPE, envelope.to_string().into_bytes());
    let digest = Digest::of(&layer.content);
    let subject_digest = Digest::of(&body);
    let l = Layer {
        media_type: MEDIA_TYPE,
        digest: digest.as_str(),
        annotations: &layer.annotations,
        content: Some(&layer.content),
    };
    let s = Subject { digest: &subject_digest, body: Some(&body) };
    assert!(verify_layer(&keyring(&[]), None, &l, &s, SystemTime::now()).is_none());
}
