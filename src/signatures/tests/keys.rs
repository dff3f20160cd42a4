//! `[[signatures.keys]]`: what compiles, the problems named, and the fingerprint.

use super::{Signer, certificate, keyring, public_key};
use crate::signatures::keys::RsaSchemes;
use crate::signatures::{KeyAlgorithm, KeyConfig, Keyring};

const RSA_1024_PEM: &str = include_str!("../testdata/rsa1024.pub.pem");

fn problems(configs: &[KeyConfig]) -> Vec<String> {
    Keyring::new(configs).expect_err("problems")
}

#[test]
fn each_supported_public_key_compiles_with_its_algorithm() {
    let (ec, ed, rsa) = (Signer::ecdsa(), Signer::ed25519(), Signer::rsa(false));
    let ring = keyring(&[public_key("ec", &ec), public_key("ed", &ed), public_key("rsa", &rsa)]);
    let algorithms: Vec<_> = ring.keys().iter().map(|k| (k.name.as_str(), k.algorithm)).collect();
    assert_eq!(
        algorithms,
        [("ec", KeyAlgorithm::EcdsaP256), ("ed", KeyAlgorithm::Ed25519), ("rsa", KeyAlgorithm::Rsa(2048))]
    );
    // ring's forms: the uncompressed point, the 32 bytes, the PKCS#1 RSAPublicKey.
    let ec_key = ring.get("ec").expect("ec");
    assert_eq!((ec_key.der.len(), ec_key.der[0]), (65, 4));
    assert_eq!(ring.get("ed").expect("ed").der.len(), 32);
    assert_eq!(ring.get("rsa").expect("rsa").der[0], 0x30);
    assert!(ring.get("nobody").is_none());
    assert_eq!(ring.public_keys().count(), 3);
    assert_eq!(ring.certificates().count(), 0);
}

#[test]
fn keys_verify_what_their_private_halves_sign() {
    for (signer, algorithm) in [
        (Signer::ecdsa(), "ecdsa-p256-sha256"),
        (Signer::ed25519(), "ed25519"),
        (Signer::rsa(false), "rsa-pkcs1-sha256"),
    ] {
        let ring = keyring(&[public_key("k", &signer)]);
        let key = ring.get("k").expect("key");
        let signature = signer.sign(b"message");
        assert_eq!(key.verify(b"message", &signature, RsaSchemes::Pkcs1), Some(algorithm));
        assert_eq!(key.verify(b"messagE", &signature, RsaSchemes::Pkcs1), None, "{algorithm}");
    }
    // PSS only where the format allows it.
    let pss = Signer::rsa(true);
    let ring = keyring(&[public_key("k", &pss)]);
    let signature = pss.sign(b"message");
    assert!(ring.verify(b"message", &signature, RsaSchemes::Pkcs1).is_none());
    assert_eq!(
        ring.verify(b"message", &signature, RsaSchemes::Pkcs1OrPss).map(|(k, a)| (k.name.as_str(), a)),
        Some(("k", "rsa-pss-sha256"))
    );
}

#[test]
fn a_certificate_is_a_trust_anchor_not_a_public_key() {
    let ca = rcgen::CertificateParams::new(Vec::new()).expect("params").self_signed(&Signer::ecdsa().rcgen());
    let ring = keyring(&[certificate("root", ca.expect("cert").pem())]);
    let key = ring.get("root").expect("root");
    assert_eq!(key.algorithm, KeyAlgorithm::Certificate);
    assert!(!key.is_public_key());
    assert_eq!(ring.certificates().count(), 1);
    assert_eq!(key.verify(b"m", b"s", RsaSchemes::Pkcs1OrPss), None);
}

#[test]
fn problems_name_the_entry_and_the_field() {
    let ec = Signer::ecdsa();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).expect("P-384").public_key_pem();
    let cert = rcgen::CertificateParams::new(Vec::new()).expect("params").self_signed(&ec.rcgen()).expect("cert").pem();
    let got = problems(&[
        KeyConfig { name: "p384".into(), public_key: Some(p384), certificate: None },
        KeyConfig { name: "garbage".into(), public_key: Some("hello".into()), certificate: None },
        KeyConfig { name: "both".into(), public_key: Some(ec.public_pem()), certificate: Some(cert.clone()) },
        KeyConfig { name: "neither".into(), public_key: None, certificate: None },
        public_key("ec", &ec),
        public_key("ec", &ec),
        public_key(" ", &ec),
        KeyConfig { name: "small".into(), public_key: Some(RSA_1024_PEM.into()), certificate: None },
        KeyConfig { name: "swapped".into(), public_key: Some(cert), certificate: None },
        KeyConfig { name: "swapped2".into(), public_key: None, certificate: Some(ec.public_pem()) },
    ]);
    let want = [
        "signatures.keys[0].public_key: ECDSA over P-384 is not supported (use P-256, Ed25519 or RSA)",
        "signatures.keys[1].public_key: not a PEM PUBLIC KEY block: no \"-----BEGIN PUBLIC KEY-----\" line found",
        "signatures.keys[2]: set exactly one of public_key",
        "signatures.keys[3]: set exactly one of public_key",
        "signatures.keys[5].name = \"ec\" is defined twice",
        "signatures.keys[6].name is empty",
        "signatures.keys[7].public_key: an RSA key of 1024 bits is not supported (use 2048 to 8192 bits)",
        "signatures.keys[8].public_key: not a PEM PUBLIC KEY block: found a CERTIFICATE block instead (a certificate goes in certificate = …",
        "signatures.keys[9].certificate: not a PEM CERTIFICATE block: found a PUBLIC KEY block instead",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (g, w) in got.iter().zip(want) {
        assert!(g.starts_with(w), "{g:?} should start with {w:?}");
    }
}

#[test]
fn an_empty_key_list_is_an_empty_keyring() {
    let ring = keyring(&[]);
    assert!(ring.keys().is_empty());
    assert_eq!(ring.fingerprint().len(), 64);
}

#[test]
fn the_fingerprint_changes_with_any_key_name_or_order() {
    let (a, b) = (Signer::ecdsa(), Signer::ed25519());
    let base = keyring(&[public_key("a", &a), public_key("b", &b)]);
    let same = keyring(&[public_key("a", &a), public_key("b", &b)]);
    assert_eq!(base.fingerprint(), same.fingerprint());
    assert_eq!(base.fingerprint().len(), 64);
    for other in [
        keyring(&[public_key("a", &a), public_key("b", &Signer::ed25519())]),
        keyring(&[public_key("a", &a), public_key("c", &b)]),
        keyring(&[public_key("b", &b), public_key("a", &a)]),
        keyring(&[public_key("a", &a)]),
    ] {
        assert_ne!(base.fingerprint(), other.fingerprint());
    }
}
