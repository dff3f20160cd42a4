//! DSSE envelopes of in-toto statements: the bare envelope `cosign attest` writes as the
//! layer blob of `application/vnd.dsse.envelope.v1+json` (cosign
//! `cmd/cosign/cli/attest/attest.go`, `types.DssePayloadType`), and the envelope inside a
//! sigstore bundle ([`super::bundle`]).
//!
//! The envelope is `{"payload": b64, "payloadType": …, "signatures": [{"keyid", "sig": b64}]}`
//! (secure-systems-lab/dsse `envelope.md`); each signature signs
//! `PAE(payloadType, payload)` = `"DSSEv1" SP len(type) SP type SP len(body) SP body`
//! (`protocol.md`). Valid when a trusted public key verifies a signature, the payload type
//! is in-toto's (cosign `pkg/cosign/verify.go` `verifyOCIAttestation`; in-toto/attestation
//! `spec/v1/envelope.md`), and the statement (`spec/v1/statement.md`) lists the subject's
//! digest among its `subject[].digest`.

use serde_json::Value;

use super::common::{Found, base64_any, invalid, names_other, no_key_verifies, no_public_key};
use super::keys::RsaSchemes;
use super::{Format, Keyring, Layer, SignatureCheck, Subject, Verdict};

/// The in-toto payload type (cosign `pkg/types/payload.go` `IntotoPayloadType`).
pub(super) const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement `_type`s read: in-toto/attestation `spec/v1/statement.md` and v0.1.
const STATEMENT_TYPES: [&str; 2] = ["https://in-toto.io/Statement/v1", "https://in-toto.io/Statement/v0.1"];

/// A decoded DSSE envelope.
#[derive(Debug, Clone)]
pub(super) struct Envelope {
    /// `payloadType`.
    pub payload_type: String,
    /// The decoded `payload`.
    pub payload: Vec<u8>,
    /// Each signature's decoded `sig` and its `keyid` (empty when unset).
    pub signatures: Vec<(Vec<u8>, String)>,
}

/// Reads an envelope from its JSON; `Err` says what is wrong with it.
pub(super) fn parse_envelope(value: &Value) -> Result<Envelope, Verdict> {
    let text = |name: &str| value.get(name).and_then(Value::as_str);
    let payload_type = text("payloadType").ok_or_else(|| invalid("the DSSE envelope has no \"payloadType\" string"))?;
    let payload = text("payload").ok_or_else(|| invalid("the DSSE envelope has no \"payload\" string"))?;
    let payload = base64_any(payload).ok_or_else(|| invalid("the DSSE envelope's payload is not valid base64"))?;
    let list = value
        .get("signatures")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| invalid("the DSSE envelope has no signatures"))?;
    let mut signatures = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        let sig = s.get("sig").and_then(Value::as_str).and_then(base64_any).ok_or_else(|| {
            invalid(format!("the DSSE envelope's signatures[{i}].sig is missing or not valid base64"))
        })?;
        let keyid = s.get("keyid").and_then(Value::as_str).unwrap_or_default().to_string();
        signatures.push((sig, keyid));
    }
    Ok(Envelope { payload_type: payload_type.to_string(), payload, signatures })
}

/// The pre-authentication encoding a DSSE signature signs (dsse `protocol.md`).
pub(super) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Verifies `envelope`'s signatures with the keyring's public keys and checks the
/// statement names `subject`. Sets `found`'s algorithm and predicate type as it learns them.
pub(super) fn check_envelope(
    keyring: &Keyring,
    envelope: &Envelope,
    subject: &Subject<'_>,
    found: &mut Found,
) -> Result<Verdict, Verdict> {
    // Named even when no trusted key verifies it, so listings show what an attestation is;
    // the verdict says whether to believe it.
    found.predicate_type = serde_json::from_slice::<Value>(&envelope.payload)
        .ok()
        .and_then(|s| s.get("predicateType")?.as_str().map(str::to_string));
    let message = pae(&envelope.payload_type, &envelope.payload);
    let verified =
        envelope.signatures.iter().find_map(|(sig, _)| keyring.verify(&message, sig, RsaSchemes::Pkcs1OrPss));
    let Some((key, algorithm)) = verified else {
        return Err(no_key_verifies(keyring));
    };
    found.algorithm = Some(algorithm);
    let t = envelope.payload_type.as_str();
    let intoto = t == INTOTO_PAYLOAD_TYPE || (t.starts_with("application/vnd.in-toto.") && t.ends_with("+json"));
    if !intoto {
        return Err(invalid(format!(
            "the envelope's payloadType is {t:?}, not an in-toto statement ({INTOTO_PAYLOAD_TYPE})"
        )));
    }
    let statement: Value = serde_json::from_slice(&envelope.payload)
        .map_err(|e| invalid(format!("the signed payload is not an in-toto statement: {e}")))?;
    let kind = statement.get("_type").and_then(Value::as_str).unwrap_or_default();
    if !STATEMENT_TYPES.contains(&kind) {
        return Err(invalid(format!(
            "the signed statement's _type is {kind:?}, not {} or {}",
            STATEMENT_TYPES[0], STATEMENT_TYPES[1]
        )));
    }
    if found.predicate_type.is_none() {
        return Err(invalid("the signed statement has no predicateType"));
    }
    let hash = subject.digest.algorithm().as_str();
    let named: Vec<String> = statement
        .get("subject")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("digest")?.get(hash)?.as_str().map(|hex| format!("{hash}:{hex}")))
        .collect();
    // Hex compares as bytes (sigstore-go `pkg/verify/signature.go` decodes it), so case-blind.
    if named.iter().any(|n| n.eq_ignore_ascii_case(subject.digest.as_str())) {
        return Ok(Verdict::Valid { key: key.name.clone() });
    }
    Err(match named.as_slice() {
        [] => invalid(format!(
            "the signed statement names no {hash} digest among its subjects, so not the subject {}",
            subject.digest.as_str()
        )),
        [one] => names_other(one, subject.digest),
        many => {
            let mut shown = many[..many.len().min(3)].join(", ");
            if many.len() > 3 {
                shown.push_str(", …");
            }
            invalid(format!("the signed statement names {shown}, not the subject {}", subject.digest.as_str()))
        }
    })
}

/// Checks one `application/vnd.dsse.envelope.v1+json` layer.
pub(super) fn verify_envelope_layer(
    keyring: &Keyring,
    layer: &Layer<'_>,
    content: &[u8],
    subject: &Subject<'_>,
) -> SignatureCheck {
    let mut found = Found::new(Format::Dsse);
    let result = (|| {
        let value: Value = serde_json::from_slice(content)
            .map_err(|e| invalid(format!("the layer is not a DSSE envelope (JSON): {e}")))?;
        let envelope = parse_envelope(&value)?;
        match check_envelope(keyring, &envelope, subject, &mut found) {
            Err(_) if keyring.public_keys().next().is_none() => Err(no_public_key("DSSE envelopes (cosign attest)")),
            other => other,
        }
    })();
    found.finish(layer, result)
}
