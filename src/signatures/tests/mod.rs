//! Tests of `[[signatures.keys]]` and of each signature format, with signatures made here
//! (ring, rcgen) in the exact shapes the real tools push. Shared helpers: signers, key
//! configs, a subject manifest and a layer, and running [`super::verify_layer`].

mod bundle;
mod cosign;
mod dsse;
mod keys;
mod notation;
mod vectors;

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::rand::SystemRandom;
use ring::signature::{self as sig, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject as _;

use super::{KeyConfig, Keyring, Layer, SignatureCheck, Subject, Verdict, verify_layer};
use crate::oci::Digest;

/// The test RSA key (PKCS#8), made with OpenSSL (`testdata/README.md`).
pub(super) const RSA_PKCS8_PEM: &str = include_str!("../testdata/rsa2048.pk8.pem");

/// A private key that signs as the real tools do.
pub(super) enum Signer {
    /// ECDSA P-256; `fixed` signs `r || s` (JWS) instead of ASN.1 DER (cosign, sigstore).
    Ecdsa { pair: Box<EcdsaKeyPair>, fixed: Box<EcdsaKeyPair>, pkcs8: Vec<u8> },
    /// Ed25519 (pure).
    Ed25519 { pair: Ed25519KeyPair, pkcs8: Vec<u8> },
    /// RSA 2048; `pss` picks RSASSA-PSS with SHA-256 over PKCS#1 v1.5.
    Rsa { pair: Box<RsaKeyPair>, pss: bool, pkcs8: Vec<u8> },
}

impl Signer {
    /// A fresh ECDSA P-256 key.
    pub fn ecdsa() -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("keygen");
        let pair = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).expect("key");
        let fixed = EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).expect("key");
        Signer::Ecdsa { pair: Box::new(pair), fixed: Box::new(fixed), pkcs8: pkcs8.as_ref().to_vec() }
    }

    /// A fresh Ed25519 key.
    pub fn ed25519() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        Signer::Ed25519 { pair, pkcs8: pkcs8.as_ref().to_vec() }
    }

    /// The test RSA 2048 key, signing with PKCS#1 v1.5 or PSS.
    pub fn rsa(pss: bool) -> Signer {
        let der = PrivatePkcs8KeyDer::from_pem_slice(RSA_PKCS8_PEM.as_bytes()).expect("testdata PEM");
        let pair = RsaKeyPair::from_pkcs8(der.secret_pkcs8_der()).expect("RSA key");
        Signer::Rsa { pair: Box::new(pair), pss, pkcs8: der.secret_pkcs8_der().to_vec() }
    }

    /// Signs `message`: ASN.1 DER ECDSA, Ed25519, or RSA.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Ecdsa { pair, .. } => pair.sign(&rng, message).expect("sign").as_ref().to_vec(),
            Signer::Ed25519 { pair, .. } => pair.sign(message).as_ref().to_vec(),
            Signer::Rsa { pair, pss, .. } => {
                let mut out = vec![0; pair.public().modulus_len()];
                let padding: &'static dyn sig::RsaEncoding =
                    if *pss { &sig::RSA_PSS_SHA256 } else { &sig::RSA_PKCS1_SHA256 };
                pair.sign(padding, &rng, message, &mut out).expect("sign");
                out
            }
        }
    }

    /// Signs `message` as JWS ES256 (`r || s`) or PS256.
    pub fn sign_jws(&self, message: &[u8]) -> Vec<u8> {
        match self {
            Signer::Ecdsa { fixed, .. } => fixed.sign(&SystemRandom::new(), message).expect("sign").as_ref().to_vec(),
            other => other.sign(message),
        }
    }

    /// The key as rcgen takes it (certificates, public key PEM).
    pub fn rcgen(&self) -> rcgen::KeyPair {
        let pkcs8 = match self {
            Signer::Ecdsa { pkcs8, .. } | Signer::Ed25519 { pkcs8, .. } | Signer::Rsa { pkcs8, .. } => pkcs8,
        };
        rcgen::KeyPair::try_from(pkcs8.as_slice()).expect("rcgen reads ring's PKCS#8")
    }

    /// The PEM `PUBLIC KEY` (SubjectPublicKeyInfo), as `cosign public-key` prints it.
    pub fn public_pem(&self) -> String {
        self.rcgen().public_key_pem()
    }
}

/// A `[[signatures.keys]]` entry with a public key.
pub(super) fn public_key(name: &str, signer: &Signer) -> KeyConfig {
    KeyConfig { name: name.into(), public_key: Some(signer.public_pem()), certificate: None }
}

/// A `[[signatures.keys]]` entry with a certificate.
pub(super) fn certificate(name: &str, pem: String) -> KeyConfig {
    KeyConfig { name: name.into(), public_key: None, certificate: Some(pem) }
}

/// The keyring of `configs`, which must be valid.
pub(super) fn keyring(configs: &[KeyConfig]) -> Keyring {
    Keyring::new(configs).expect("valid keys")
}

/// A stored image manifest to sign.
pub(super) fn manifest(seed: &str) -> Vec<u8> {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:{}","size":2}},"layers":[],"annotations":{{"seed":"{seed}"}}}}"#,
        "a".repeat(64)
    )
    .into_bytes()
}

/// A signature layer: its media type, annotations and blob.
pub(super) struct TestLayer {
    pub media_type: &'static str,
    pub annotations: BTreeMap<String, String>,
    pub content: Vec<u8>,
}

impl TestLayer {
    pub fn new(media_type: &'static str, content: Vec<u8>) -> TestLayer {
        TestLayer { media_type, annotations: BTreeMap::new(), content }
    }

    /// Adds an annotation.
    pub fn annotate(mut self, key: &str, value: &str) -> TestLayer {
        self.annotations.insert(key.into(), value.into());
        self
    }

    /// Checks this layer of a manifest of `artifact_type` against the subject `body`
    /// (its digest; `stored` says whether its bytes are handed over) at `now`.
    pub fn check(
        &self,
        keyring: &Keyring,
        artifact_type: Option<&str>,
        body: &[u8],
        stored: bool,
        now: SystemTime,
    ) -> SignatureCheck {
        let digest = Digest::of(body);
        self.check_subject(keyring, artifact_type, &Subject { digest: &digest, body: stored.then_some(body) }, now)
    }

    /// Checks this layer against `subject` at `now`.
    pub fn check_subject(
        &self,
        keyring: &Keyring,
        artifact_type: Option<&str>,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> SignatureCheck {
        let digest = Digest::of(&self.content);
        let layer = Layer {
            media_type: self.media_type,
            digest: digest.as_str(),
            annotations: &self.annotations,
            content: Some(&self.content),
        };
        let check = verify_layer(keyring, artifact_type, &layer, subject, now).expect("a signature format");
        assert_eq!(check.layer, digest.as_str());
        check
    }
}

/// Standard base64.
pub(super) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// Asserts `check` is valid by `key` with `algorithm`.
#[track_caller]
pub(super) fn assert_valid(check: &SignatureCheck, key: &str, algorithm: &str) {
    assert_eq!(check.verdict, Verdict::Valid { key: key.into() }, "{check:?}");
    assert_eq!(check.algorithm.as_deref(), Some(algorithm), "{check:?}");
}

/// Asserts `check` is invalid for a reason containing `reason`.
#[track_caller]
pub(super) fn assert_invalid(check: &SignatureCheck, reason: &str) {
    match &check.verdict {
        Verdict::Invalid { reason: r } => assert!(r.contains(reason), "{r:?} should contain {reason:?}"),
        other => panic!("expected Invalid ({reason}), got {other:?}"),
    }
}

/// Asserts `check` is unverified for a reason containing `reason`.
#[track_caller]
pub(super) fn assert_unverified(check: &SignatureCheck, reason: &str) {
    match &check.verdict {
        Verdict::Unverified { reason: r } => assert!(r.contains(reason), "{r:?} should contain {reason:?}"),
        other => panic!("expected Unverified ({reason}), got {other:?}"),
    }
}

/// `bytes` with one byte flipped at `at`.
pub(super) fn flipped(bytes: &[u8], at: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[at] ^= 0x01;
    out
}
