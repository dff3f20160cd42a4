//! cosign simple signing (layer `application/vnd.dev.cosign.simplesigning.v1+json`, cosign
//! `pkg/types/media.go`): the layer blob is the signed payload, the signature is standard
//! base64 in the layer annotation `dev.cosignproject.cosign/signature` (cosign
//! `pkg/oci/static/signature.go`, `SignatureAnnotationKey`). Valid when a trusted public key
//! verifies the signature over the exact blob bytes (cosign `pkg/cosign/verify.go`
//! `verifyOCISignature`) and the payload's `critical.image.docker-manifest-digest` is the
//! subject's digest (cosign `pkg/cosign/verifiers.go` `SimpleClaimVerifier`).

use serde_json::Value;

use super::common::{Found, base64_standard, invalid, names_other, no_key_verifies, no_public_key};
use super::keys::RsaSchemes;
use super::{Format, Keyring, Layer, SignatureCheck, Subject, Verdict};

/// The layer annotation holding the signature.
pub(super) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// `critical.type` of a cosign signature (sigstore `pkg/signature/payload/payload.go`,
/// `CosignSignatureType`; cosign `specs/SIGNATURE_SPEC.md`).
pub(super) const COSIGN_SIGNATURE_TYPE: &str = "cosign container image signature";

/// Checks one simple-signing layer.
pub(super) fn verify(keyring: &Keyring, layer: &Layer<'_>, content: &[u8], subject: &Subject<'_>) -> SignatureCheck {
    let mut found = Found::new(Format::CosignSimpleSigning);
    let result = check(keyring, layer, content, subject, &mut found);
    found.finish(layer, result)
}

fn check(
    keyring: &Keyring,
    layer: &Layer<'_>,
    content: &[u8],
    subject: &Subject<'_>,
    found: &mut Found,
) -> Result<Verdict, Verdict> {
    let encoded = layer.annotations.get(SIGNATURE_ANNOTATION).map(|s| s.trim()).unwrap_or_default();
    if encoded.is_empty() {
        return Err(invalid(format!(
            "the layer has no {SIGNATURE_ANNOTATION} annotation: cosign keeps the signature there, so this \
             payload is unsigned"
        )));
    }
    let signature = base64_standard(encoded)
        .ok_or_else(|| invalid(format!("the signature is not valid base64 (the {SIGNATURE_ANNOTATION} annotation)")))?;
    if keyring.public_keys().next().is_none() {
        return Err(no_public_key("cosign signatures"));
    }
    // cosign signs RSA with PKCS#1 v1.5 only (`keys::RsaSchemes`).
    let Some((key, algorithm)) = keyring.verify(content, &signature, RsaSchemes::Pkcs1) else {
        return Err(no_key_verifies(keyring));
    };
    found.algorithm = Some(algorithm);
    let payload: Value = serde_json::from_slice(content)
        .map_err(|e| invalid(format!("the payload is not cosign simple-signing JSON: {e}")))?;
    let critical = field(&payload, "critical")
        .ok_or_else(|| invalid("the payload is not cosign simple-signing JSON: it has no \"critical\" object"))?;
    let kind = field(critical, "type").and_then(Value::as_str).unwrap_or_default();
    if !kind.eq_ignore_ascii_case(COSIGN_SIGNATURE_TYPE) {
        return Err(invalid(format!(
            "the payload's critical.type is {kind:?}, not {COSIGN_SIGNATURE_TYPE:?}: it is no cosign signature"
        )));
    }
    let named = field(critical, "image")
        .and_then(|image| field(image, "docker-manifest-digest"))
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("the payload names no manifest: critical.image.docker-manifest-digest is missing"))?;
    if named != subject.digest.as_str() {
        return Err(names_other(named, subject.digest));
    }
    Ok(Verdict::Valid { key: key.name.clone() })
}

/// An object's member as Go's `encoding/json` finds it for a struct field: the exact key,
/// else a key equal ignoring case. cosign reads the payload that way (cosign
/// `pkg/cosign/verifiers.go` unmarshals into sigstore `payload.SimpleContainerImage`), and
/// cosign's own `specs/SIGNATURE_SPEC.md` example spells `Docker-manifest-digest`.
fn field<'a>(object: &'a Value, key: &str) -> Option<&'a Value> {
    let map = object.as_object()?;
    map.get(key).or_else(|| map.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v))
}
