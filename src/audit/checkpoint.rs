//! Signed checkpoints over the ledger head (DESIGN §7): Cairn signs the RFC 8785 bytes of
//! `{"hash": <hex>, "seq": <n>, "time": <RFC 3339>}` with its Ed25519 key (ring). Auditors fetch
//! the public key as PEM (SubjectPublicKeyInfo, RFC 8410) and verify offline.

use base64::Engine as _;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair as _, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

/// A signed statement that the ledger had `hash` at `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The seq of the event the checkpoint covers (every event up to it).
    pub seq: i64,
    /// That event's hash.
    pub hash: String,
    /// When it was signed, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Ed25519 signature over [`Checkpoint::signed_bytes`], standard base64.
    pub signature: String,
}

impl Checkpoint {
    /// The bytes the signature covers: JCS of `{hash, seq, time}`.
    pub fn signed_bytes(seq: i64, hash: &str, time: &str) -> Vec<u8> {
        serde_jcs::to_vec(&serde_json::json!({ "seq": seq, "hash": hash, "time": time })).unwrap_or_default()
    }

    /// Checks the signature with a raw 32-byte Ed25519 public key.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        let Ok(sig) = base64::engine::general_purpose::STANDARD.decode(&self.signature) else { return false };
        UnparsedPublicKey::new(&ED25519, public_key)
            .verify(&Checkpoint::signed_bytes(self.seq, &self.hash, &self.time), &sig)
            .is_ok()
    }
}

/// The ledger's signing key.
pub struct CheckpointKey(Ed25519KeyPair);

/// The DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410 §4), before the 32 key bytes.
const SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

impl CheckpointKey {
    /// A new random key, as PKCS#8 v2 DER (what [`CheckpointKey::from_pkcs8`] reads).
    pub fn generate_pkcs8() -> Result<Vec<u8>, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        Ok(Ed25519KeyPair::generate_pkcs8(&rng)?.as_ref().to_vec())
    }

    /// Reads a PKCS#8 Ed25519 key (DER).
    pub fn from_pkcs8(der: &[u8]) -> Result<CheckpointKey, String> {
        Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map(CheckpointKey)
            .map_err(|e| format!("not a PKCS#8 Ed25519 key: {e}"))
    }

    /// Signs the head `(seq, hash)` at `time`.
    pub fn sign(&self, seq: i64, hash: &str, time: &str) -> Checkpoint {
        let sig = self.0.sign(&Checkpoint::signed_bytes(seq, hash, time));
        Checkpoint {
            seq,
            hash: hash.to_string(),
            time: time.to_string(),
            signature: base64::engine::general_purpose::STANDARD.encode(sig.as_ref()),
        }
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.0.public_key().as_ref()
    }

    /// The public key as a PEM `PUBLIC KEY` (SubjectPublicKeyInfo).
    pub fn public_key_pem(&self) -> String {
        public_key_pem(self.public_key())
    }
}

/// A raw Ed25519 public key as PEM.
pub fn public_key_pem(raw: &[u8]) -> String {
    let mut der = SPKI_PREFIX.to_vec();
    der.extend_from_slice(raw);
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{b64}\n-----END PUBLIC KEY-----\n")
}

/// The raw key of a PEM written by [`public_key_pem`] (or openssl's `pkey -pubout`).
pub fn public_key_from_pem(pem: &str) -> Result<Vec<u8>, String> {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).map(str::trim).collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad PEM: {e}"))?;
    match der.strip_prefix(&SPKI_PREFIX[..]) {
        Some(raw) if raw.len() == 32 => Ok(raw.to_vec()),
        _ => Err("not an Ed25519 public key (SubjectPublicKeyInfo)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify_offline_with_the_pem() {
        let key = CheckpointKey::from_pkcs8(&CheckpointKey::generate_pkcs8().unwrap()).unwrap();
        let cp = key.sign(42, &"ab".repeat(32), "2026-11-30T00:00:00.000Z");
        let raw = public_key_from_pem(&key.public_key_pem()).unwrap();
        assert!(cp.verify(&raw));
        let mut forged = cp.clone();
        forged.seq = 41;
        assert!(!forged.verify(&raw), "a changed seq breaks the signature");
        let other = CheckpointKey::from_pkcs8(&CheckpointKey::generate_pkcs8().unwrap()).unwrap();
        assert!(!cp.verify(other.public_key()));
        assert_eq!(
            String::from_utf8(Checkpoint::signed_bytes(1, "h", "t")).unwrap(),
            r#"{"hash":"h","seq":1,"time":"t"}"#
        );
    }
}
