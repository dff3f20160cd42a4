//! What the format modules share: what a check has found so far ([`Found`]) and turning it
//! into a [`SignatureCheck`], base64 in the encodings the formats write, and the verdict
//! sentences every format gives the same way. Pure.

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

use super::{Format, KeyAlgorithm, Keyring, Layer, SignatureCheck, Verdict};
use crate::oci::Digest;

const INDIFFERENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
/// Standard alphabet, padded or not.
const STANDARD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, INDIFFERENT);
/// URL-safe alphabet, padded or not.
const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, INDIFFERENT);

/// Standard base64 (cosign's signature annotation, JWS `x5c`), padding optional.
pub(super) fn base64_standard(s: &str) -> Option<Vec<u8>> {
    STANDARD.decode(s.trim()).ok()
}

/// base64url (JWS, RFC 7515 §2), padding optional.
pub(super) fn base64_url(s: &str) -> Option<Vec<u8>> {
    URL_SAFE.decode(s.trim()).ok()
}

/// Standard or URL-safe base64, padded or not: DSSE verifiers "MUST accept either"
/// (secure-systems-lab/dsse `protocol.md`), and protobuf JSON `bytes` fields accept both.
pub(super) fn base64_any(s: &str) -> Option<Vec<u8>> {
    base64_standard(s).or_else(|| base64_url(s))
}

/// What a check has established so far, kept when it stops early.
#[derive(Debug, Clone)]
pub(super) struct Found {
    /// The layer's format (a bundle's is known once its content is read).
    pub format: Format,
    /// The signature algorithm, once known.
    pub algorithm: Option<&'static str>,
    /// The in-toto statement's `predicateType`, once the statement is read (whether or not
    /// a trusted key verifies it: the verdict says that).
    pub predicate_type: Option<String>,
}

impl Found {
    /// Nothing found yet about a layer of `format`.
    pub fn new(format: Format) -> Found {
        Found { format, algorithm: None, predicate_type: None }
    }

    /// The check of `layer`: `result` is `Ok` when the check ran to its end, `Err` when it
    /// stopped early; either way it holds the verdict.
    pub fn finish(self, layer: &Layer<'_>, result: Result<Verdict, Verdict>) -> SignatureCheck {
        let (Ok(verdict) | Err(verdict)) = result;
        SignatureCheck {
            format: self.format,
            layer: layer.digest.to_string(),
            algorithm: self.algorithm.map(str::to_string),
            predicate_type: self.predicate_type,
            verdict,
        }
    }
}

/// An `Invalid` verdict.
pub(super) fn invalid(reason: impl Into<String>) -> Verdict {
    Verdict::Invalid { reason: reason.into() }
}

/// An `Unverified` verdict.
pub(super) fn unverified(reason: impl Into<String>) -> Verdict {
    Verdict::Unverified { reason: reason.into() }
}

/// `Unverified` for a format that needs a public key when none is configured.
pub(super) fn no_public_key(what: &str) -> Verdict {
    unverified(format!(
        "{what} are verified with a trusted public key, and none is configured: add a [[signatures.keys]] entry \
         with public_key = \"-----BEGIN PUBLIC KEY-----…\" (the signer's cosign.pub)"
    ))
}

/// `Invalid` when the keyring's public keys were tried and none verifies.
pub(super) fn no_key_verifies(keyring: &Keyring) -> Verdict {
    // cosign signs with Ed25519ph when given an Ed25519 key (cosign `pkg/cosign/keys.go`,
    // `GetDefaultLoadOptions`); ring verifies pure Ed25519 only.
    let ed25519 = keyring.public_keys().any(|k| k.algorithm == KeyAlgorithm::Ed25519);
    invalid(format!(
        "no trusted key verifies this signature (tried: {}){}",
        keyring.public_key_names(),
        if ed25519 {
            "; Ed25519 keys verify pure Ed25519 signatures only, not the pre-hashed Ed25519ph ones cosign makes \
             with Ed25519 keys by default"
        } else {
            ""
        }
    ))
}

/// The reason when a signed payload names another manifest.
pub(super) fn names_other(named: &str, subject: &Digest) -> Verdict {
    invalid(format!("the signed payload names {named}, not the subject {}", subject.as_str()))
}
