//! `[[signatures.keys]]` compiled: each trusted public key (PEM SubjectPublicKeyInfo:
//! ECDSA P-256, Ed25519, RSA 2048–8192 bits) or certificate (PEM X.509, a trust anchor
//! for notation), by name, and the key set's fingerprint; and verifying a signature with
//! the public keys (*ring*). Pure; imports nothing of Cairn but the config shape.

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, SubjectPublicKeyInfoDer};
use sha2::{Digest as _, Sha256};
use spki::ObjectIdentifier;
use spki::SubjectPublicKeyInfoRef;

use super::KeyConfig;
use super::asn1;

/// id-ecPublicKey (RFC 5480).
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// The named curves of RFC 5480 §2.1.1.1, by OID.
const CURVES: [(ObjectIdentifier, &str); 3] = [
    (ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7"), "P-256"),
    (ObjectIdentifier::new_unwrap("1.3.132.0.34"), "P-384"),
    (ObjectIdentifier::new_unwrap("1.3.132.0.35"), "P-521"),
];
/// id-Ed25519 (RFC 8410).
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// rsaEncryption (RFC 8017).
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
/// id-RSASSA-PSS (RFC 4055): a PSS-only RSA key, which ring cannot load.
const RSASSA_PSS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.10");
/// The RSA modulus sizes ring verifies with (`RSA_*_2048_8192_*`).
const RSA_BITS: std::ops::RangeInclusive<u32> = 2048..=8192;

/// A trusted key's algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlgorithm {
    /// ECDSA over P-256 with SHA-256 (cosign's default).
    EcdsaP256,
    /// Ed25519.
    Ed25519,
    /// RSA, the modulus size in bits.
    Rsa(u32),
    /// An X.509 certificate used as a trust anchor.
    Certificate,
}

impl KeyAlgorithm {
    /// A short label: `ecdsa-p256`, `ed25519`, `rsa-2048`, `certificate`.
    pub fn label(self) -> String {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256".into(),
            KeyAlgorithm::Ed25519 => "ed25519".into(),
            KeyAlgorithm::Rsa(bits) => format!("rsa-{bits}"),
            KeyAlgorithm::Certificate => "certificate".into(),
        }
    }
}

/// Which RSA signature schemes a format allows. cosign writes RSA signatures with
/// PKCS#1 v1.5 only (cosign `pkg/cosign/keys.go` `SupportedKeyDetails`, and sigstore
/// `pkg/signature/verifier.go` `LoadVerifier` picks PKCS#1 v1.5 for RSA keys); sigstore
/// bundles and DSSE envelopes may also carry RSA-PSS with SHA-256 (sigstore
/// `pkg/signature/algorithm_registry.go`: `rsa-sign-pss-*-sha256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RsaSchemes {
    /// RSASSA-PKCS1-v1_5 with SHA-256 only.
    Pkcs1,
    /// RSASSA-PKCS1-v1_5 with SHA-256, else RSASSA-PSS with SHA-256.
    Pkcs1OrPss,
}

/// One trusted key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its name.
    pub name: String,
    /// Its algorithm.
    pub algorithm: KeyAlgorithm,
    /// For a public key: the key as ring takes it (the uncompressed point, the 32 bytes, or
    /// the PKCS#1 RSAPublicKey); for a certificate: its DER.
    pub der: Vec<u8>,
}

impl TrustedKey {
    /// True for a public key, false for a certificate.
    pub fn is_public_key(&self) -> bool {
        self.algorithm != KeyAlgorithm::Certificate
    }

    /// Verifies `signature` over `message` with this public key: the algorithm's name
    /// (`ecdsa-p256-sha256`, `ed25519`, `rsa-pkcs1-sha256`, `rsa-pss-sha256`) when it
    /// verifies, `None` when it does not or this is a certificate. ECDSA signatures are
    /// ASN.1 DER (what cosign and sigstore write), Ed25519 signs the message itself.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8], rsa: RsaSchemes) -> Option<&'static str> {
        use ring::signature as sig;
        let check = |alg: &'static dyn sig::VerificationAlgorithm| {
            sig::UnparsedPublicKey::new(alg, &self.der).verify(message, signature).is_ok()
        };
        match self.algorithm {
            KeyAlgorithm::EcdsaP256 => check(&sig::ECDSA_P256_SHA256_ASN1).then_some("ecdsa-p256-sha256"),
            KeyAlgorithm::Ed25519 => check(&sig::ED25519).then_some("ed25519"),
            KeyAlgorithm::Rsa(_) => {
                if check(&sig::RSA_PKCS1_2048_8192_SHA256) {
                    Some("rsa-pkcs1-sha256")
                } else if rsa == RsaSchemes::Pkcs1OrPss && check(&sig::RSA_PSS_2048_8192_SHA256) {
                    Some("rsa-pss-sha256")
                } else {
                    None
                }
            }
            KeyAlgorithm::Certificate => None,
        }
    }
}

/// The trusted keys, in config order.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
    fingerprint: String,
}

impl Keyring {
    /// Compiles `[[signatures.keys]]`; `Err` names every problem (`signatures.keys[i].…`).
    pub fn new(configs: &[KeyConfig]) -> Result<Keyring, Vec<String>> {
        let mut problems = Vec::new();
        let mut keys: Vec<TrustedKey> = Vec::with_capacity(configs.len());
        for (i, config) in configs.iter().enumerate() {
            let at = format!("signatures.keys[{i}]");
            let name = config.name.as_str();
            if name.trim().is_empty() {
                problems.push(format!("{at}.name is empty: give the key a name gates can refer to"));
            } else if configs[..i].iter().any(|c| c.name == name) {
                problems.push(format!("{at}.name = {name:?} is defined twice"));
            }
            let parsed = match (&config.public_key, &config.certificate) {
                (Some(pem), None) => parse_public_key(pem).map_err(|e| format!("{at}.public_key: {e}")),
                (None, Some(pem)) => parse_certificate(pem).map_err(|e| format!("{at}.certificate: {e}")),
                _ => Err(format!(
                    "{at}: set exactly one of public_key (a PEM PUBLIC KEY, for cosign, sigstore bundles and DSSE) \
                     and certificate (a PEM CERTIFICATE, for notation)"
                )),
            };
            match parsed {
                Ok((algorithm, der)) => keys.push(TrustedKey { name: name.to_string(), algorithm, der }),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let fingerprint = fingerprint(&keys);
        Ok(Keyring { keys, fingerprint })
    }

    /// The keys.
    pub fn keys(&self) -> &[TrustedKey] {
        &self.keys
    }

    /// The key named `name`.
    pub fn get(&self, name: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.name == name)
    }

    /// A hex SHA-256 over every key's name, algorithm and bytes: changes when the keys do.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The public keys (cosign, sigstore bundles, DSSE), in config order.
    pub fn public_keys(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.iter().filter(|k| k.is_public_key())
    }

    /// The certificates (notation trust anchors), in config order.
    pub fn certificates(&self) -> impl Iterator<Item = &TrustedKey> {
        self.keys.iter().filter(|k| !k.is_public_key())
    }

    /// The first public key that verifies `signature` over `message`, with the algorithm.
    pub(crate) fn verify(
        &self,
        message: &[u8],
        signature: &[u8],
        rsa: RsaSchemes,
    ) -> Option<(&TrustedKey, &'static str)> {
        self.public_keys().find_map(|k| k.verify(message, signature, rsa).map(|alg| (k, alg)))
    }

    /// The public keys' names, for messages: `release, ops`.
    pub(super) fn public_key_names(&self) -> String {
        self.public_keys().map(|k| k.name.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Hex SHA-256 over each key's name, algorithm label and bytes, each length-prefixed so
/// that no two key sets hash the same input.
fn fingerprint(keys: &[TrustedKey]) -> String {
    let mut h = Sha256::new();
    for k in keys {
        for part in [k.name.as_bytes(), k.algorithm.label().as_bytes(), &k.der] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    hex::encode(h.finalize())
}

/// Says what a PEM text holds instead of the block wanted, for a message.
fn pem_problem(pem: &str, wanted: &str, err: pem::Error) -> String {
    let found = pem.lines().find_map(|l| l.trim().strip_prefix("-----BEGIN ")?.strip_suffix("-----"));
    match (err, found) {
        (pem::Error::NoItemsFound, Some(other)) => {
            format!("not a PEM {wanted} block: found a {other} block instead{}", hint(wanted, other))
        }
        (pem::Error::NoItemsFound, None) => {
            format!("not a PEM {wanted} block: no \"-----BEGIN {wanted}-----\" line found")
        }
        (err, _) => format!("not a PEM {wanted} block: {err}"),
    }
}

/// What to do when the wrong kind of PEM block was given.
fn hint(wanted: &str, found: &str) -> &'static str {
    match (wanted, found) {
        ("PUBLIC KEY", "CERTIFICATE") => " (a certificate goes in certificate = …, for notation)",
        ("CERTIFICATE", "PUBLIC KEY") => " (a public key goes in public_key = …, for cosign and sigstore)",
        ("PUBLIC KEY", "RSA PUBLIC KEY") => {
            " (convert it to SubjectPublicKeyInfo: openssl rsa -RSAPublicKey_in -pubout)"
        }
        (_, f) if f.contains("PRIVATE KEY") => " (configure the public key, never the private key)",
        _ => "",
    }
}

/// Parses a PEM `PUBLIC KEY` into the algorithm and the bytes ring takes.
fn parse_public_key(pem: &str) -> Result<(KeyAlgorithm, Vec<u8>), String> {
    let der = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes()).map_err(|e| pem_problem(pem, "PUBLIC KEY", e))?;
    let spki = SubjectPublicKeyInfoRef::try_from(der.as_ref())
        .map_err(|e| format!("the PUBLIC KEY block is not a valid SubjectPublicKeyInfo: {e}"))?;
    let (oid, params) =
        spki.algorithm.oids().map_err(|e| format!("the key's algorithm parameters are not readable: {e}"))?;
    let key = spki.subject_public_key.as_bytes().ok_or("the key's bit string has unused bits")?;
    if oid == EC_PUBLIC_KEY {
        let curve = CURVES.iter().find(|(c, _)| Some(*c) == params).map(|(_, name)| *name);
        return match curve {
            Some("P-256") if key.len() == 65 && key[0] == 4 => Ok((KeyAlgorithm::EcdsaP256, key.to_vec())),
            Some("P-256") => Err("the P-256 key is not an uncompressed point (65 bytes starting with 0x04)".into()),
            Some(other) => Err(format!("ECDSA over {other} is not supported (use P-256, Ed25519 or RSA)")),
            None => Err(format!(
                "ECDSA over the curve {} is not supported (use P-256, Ed25519 or RSA)",
                params.map_or("(none named)".to_string(), |p| p.to_string())
            )),
        };
    }
    if oid == ED25519 {
        return match key.len() {
            32 => Ok((KeyAlgorithm::Ed25519, key.to_vec())),
            n => Err(format!("an Ed25519 key is 32 bytes, this one is {n}")),
        };
    }
    if oid == RSA_ENCRYPTION {
        let bits = asn1::rsa_modulus_bits(key).ok_or("the RSA key is not a valid PKCS#1 RSAPublicKey")?;
        if !RSA_BITS.contains(&bits) {
            return Err(format!("an RSA key of {bits} bits is not supported (use 2048 to 8192 bits)"));
        }
        return Ok((KeyAlgorithm::Rsa(bits), key.to_vec()));
    }
    if oid == RSASSA_PSS {
        return Err(
            "RSA keys restricted to PSS (id-RSASSA-PSS) are not supported: export the key as rsaEncryption".into()
        );
    }
    Err(format!("the key algorithm {oid} is not supported (use ECDSA P-256, Ed25519 or RSA)"))
}

/// Parses a PEM `CERTIFICATE` and checks webpki can use it as a trust anchor.
fn parse_certificate(pem: &str) -> Result<(KeyAlgorithm, Vec<u8>), String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|e| pem_problem(pem, "CERTIFICATE", e))?;
    webpki::anchor_from_trusted_cert(&der)
        .map_err(|e| format!("the CERTIFICATE block is not an X.509 certificate Cairn can read: {e}"))?;
    Ok((KeyAlgorithm::Certificate, der.as_ref().to_vec()))
}
