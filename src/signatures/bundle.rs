//! sigstore bundles (sigstore/protobuf-specs `protos/sigstore_bundle.proto`, in their
//! protobuf JSON form: camelCase fields, `bytes` as base64): `mediaType`
//! `application/vnd.dev.sigstore.bundle.v0.3+json` or the older
//! `application/vnd.dev.sigstore.bundle+json;version=0.1|0.2|0.3`; `verificationMaterial`
//! holds a `publicKey` hint (a self-managed key) or a `certificate` / `x509CertificateChain`
//! (keyless, Fulcio); the content is a `messageSignature` (`protos/sigstore_common.proto`:
//! `messageDigest {algorithm, digest}`, `signature`) over the subject manifest's bytes, or a
//! `dsseEnvelope` (`protos/envelope.proto`) checked as [`super::dsse`] does, which is what
//! `cosign sign --new-bundle-format` and `cosign attest --new-bundle-format` push (cosign
//! `pkg/oci/remote/write.go` `WriteAttestationNewBundleFormat`).
//!
//! Only the signature is checked, with the configured public keys: transparency-log
//! entries and timestamps are not, and a keyless signature that no configured key
//! verifies is `Unverified`.

use serde_json::Value;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::common::{Found, base64_any, invalid, no_key_verifies, no_public_key, unverified};
use super::dsse;
use super::keys::RsaSchemes;
use super::{Format, Keyring, Layer, SignatureCheck, Subject, Verdict};
use crate::oci::Digest;

/// The bundle media types read (`sigstore_bundle.proto`, `Bundle.media_type`).
const MEDIA_TYPES: [&str; 4] = [
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
];

/// How the bundle names its signer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Material<'a> {
    /// `publicKey`: a key known out of band, with an optional hint.
    Key { hint: &'a str },
    /// `certificate` or `x509CertificateChain`: keyless.
    Certificate,
}

/// Checks one sigstore bundle layer.
pub(super) fn verify(keyring: &Keyring, layer: &Layer<'_>, content: &[u8], subject: &Subject<'_>) -> SignatureCheck {
    let mut found = Found::new(Format::SigstoreBundleDsse);
    let result = check(keyring, content, subject, &mut found);
    found.finish(layer, result)
}

fn check(keyring: &Keyring, content: &[u8], subject: &Subject<'_>, found: &mut Found) -> Result<Verdict, Verdict> {
    let bundle: Value = serde_json::from_slice(content)
        .map_err(|e| invalid(format!("the layer is not a sigstore bundle (JSON): {e}")))?;
    let media_type = bundle.get("mediaType").and_then(Value::as_str).unwrap_or_default();
    if !MEDIA_TYPES.iter().any(|m| m.eq_ignore_ascii_case(&media_type.replace(' ', ""))) {
        return Err(if media_type.starts_with("application/vnd.dev.sigstore.bundle") {
            unverified(format!("the bundle's mediaType {media_type:?} is a version Cairn does not read (v0.1 to v0.3)"))
        } else {
            invalid(format!("the layer is not a sigstore bundle: its mediaType is {media_type:?}"))
        });
    }
    let material =
        bundle.get("verificationMaterial").ok_or_else(|| invalid("the bundle has no verificationMaterial"))?;
    let material = if let Some(key) = material.get("publicKey") {
        Material::Key { hint: key.get("hint").and_then(Value::as_str).unwrap_or_default() }
    } else if material.get("certificate").is_some() || material.get("x509CertificateChain").is_some() {
        Material::Certificate
    } else {
        return Err(invalid("the bundle's verificationMaterial has no publicKey, certificate or x509CertificateChain"));
    };
    if let Some(message) = bundle.get("messageSignature") {
        found.format = Format::SigstoreBundleMessage;
        check_message(keyring, message, material, subject, found)
    } else if let Some(envelope) = bundle.get("dsseEnvelope") {
        found.format = Format::SigstoreBundleDsse;
        check_dsse(keyring, envelope, material, subject, found)
    } else {
        Err(invalid("the bundle has neither a messageSignature nor a dsseEnvelope"))
    }
}

/// The verdict when no configured key verifies: keyless signatures are not decided here.
fn none_verifies(keyring: &Keyring, material: Material<'_>) -> Verdict {
    match material {
        Material::Key { .. } if keyring.public_keys().next().is_none() => no_public_key("sigstore bundles"),
        Material::Key { .. } => no_key_verifies(keyring),
        Material::Certificate => unverified(format!(
            "keyless (Fulcio certificate) signatures are not verified offline: Cairn checks bundles only with the \
             configured public keys{}",
            match keyring.public_key_names() {
                names if names.is_empty() => String::from(", and none is configured"),
                names => format!(", and none verifies this one (tried: {names})"),
            }
        )),
    }
}

fn check_dsse(
    keyring: &Keyring,
    envelope: &Value,
    material: Material<'_>,
    subject: &Subject<'_>,
    found: &mut Found,
) -> Result<Verdict, Verdict> {
    let envelope = dsse::parse_envelope(envelope)?;
    // "During verification a client MUST reject an envelope if the number of signatures is
    // not equal to one" (sigstore_bundle.proto, Bundle.content).
    if envelope.signatures.len() != 1 {
        return Err(invalid(format!(
            "the bundle's DSSE envelope has {} signatures; a bundle's envelope must have exactly one",
            envelope.signatures.len()
        )));
    }
    // "the key hints MUST be exactly the same in the verification material and in the DSSE
    // envelope" (sigstore_bundle.proto, Bundle.verification_material).
    if let (Material::Key { hint }, [(_, keyid)]) = (material, envelope.signatures.as_slice())
        && !hint.is_empty()
        && !keyid.is_empty()
        && hint != keyid
    {
        return Err(invalid(format!(
            "the bundle's key hint {hint:?} differs from its DSSE signature's keyid {keyid:?}"
        )));
    }
    match dsse::check_envelope(keyring, &envelope, subject, found) {
        Err(_) if found.algorithm.is_none() => Err(none_verifies(keyring, material)),
        other => other,
    }
}

fn check_message(
    keyring: &Keyring,
    message: &Value,
    material: Material<'_>,
    subject: &Subject<'_>,
    found: &mut Found,
) -> Result<Verdict, Verdict> {
    let signature = message
        .get("signature")
        .and_then(Value::as_str)
        .and_then(base64_any)
        .ok_or_else(|| invalid("the bundle's messageSignature.signature is missing or not valid base64"))?;
    let digest =
        message.get("messageDigest").ok_or_else(|| invalid("the bundle's messageSignature has no messageDigest"))?;
    let claimed = digest
        .get("digest")
        .and_then(Value::as_str)
        .and_then(base64_any)
        .ok_or_else(|| invalid("the bundle's messageDigest.digest is missing or not valid base64"))?;
    // protobuf JSON writes enums by name and reads them by name or number
    // (sigstore_common.proto, HashAlgorithm).
    let hash_name = match digest.get("algorithm") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if keyring.public_keys().next().is_none() {
        return Err(none_verifies(keyring, material));
    }
    let Some(body) = subject.body else {
        return Err(unverified(format!(
            "the subject manifest is not stored yet; the message signature signs its bytes, so it is checked \
             once {} is pushed",
            subject.digest.as_str()
        )));
    };
    if Digest::of_with(subject.digest.algorithm(), body) != *subject.digest {
        return Err(unverified(format!("the stored bytes of {} do not hash to its digest", subject.digest.as_str())));
    }
    let Some((key, algorithm)) = keyring.verify(body, &signature, RsaSchemes::Pkcs1OrPss) else {
        return Err(none_verifies(keyring, material));
    };
    found.algorithm = Some(algorithm);
    let actual = match hash_name.as_str() {
        "SHA2_256" | "1" => Sha256::digest(body).to_vec(),
        "SHA2_384" | "2" => Sha384::digest(body).to_vec(),
        "SHA2_512" | "3" => Sha512::digest(body).to_vec(),
        other => {
            return Err(invalid(format!(
                "the bundle's messageDigest.algorithm {other:?} is not one Cairn reads (SHA2_256, SHA2_384, SHA2_512)"
            )));
        }
    };
    if claimed != actual {
        return Err(invalid(format!(
            "the bundle's messageDigest ({hash_name} {}) is not the digest of the subject {}",
            hex::encode(&claimed),
            subject.digest.as_str()
        )));
    }
    Ok(Verdict::Valid { key: key.name.clone() })
}
