//! notation signatures in a JWS envelope (layer `application/jose+json` of a manifest of
//! artifact type `application/vnd.cncf.notary.signature`), per notaryproject/specifications
//! `specs/signature-envelope-jws.md` (the flattened JWS JSON serialization
//! `{"payload", "protected", "header": {"x5c": […]}, "signature"}`),
//! `specs/signature-specification.md` (payload, algorithms, certificate requirements) and
//! `specs/trust-store-trust-policy.md` ("Signature Verification", steps), cross-checked with
//! notaryproject/notation-core-go (`signature/jws/jws.go`, `x509/codesigning_cert_validations.go`).
//!
//! Checked: the protected headers (`alg`, `cty`, `crit`, signing scheme and times,
//! `io.cncf.notary.expiry`), that `alg` fits the signing certificate's key, the signature
//! with that key, that the `x5c` chain leads to a configured `certificate` at `now`
//! (webpki), notation's rules for the signing certificate's key usages, and that the
//! payload's `targetArtifact` is the subject. Not checked: RFC 3161 timestamp
//! countersignatures, revocation (CRL/OCSP), trusted identities (any signer under a
//! trusted certificate passes, like `"trustedIdentities": ["*"]`), verification plugins.

use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::{CertificateDer, SignatureVerificationAlgorithm, UnixTime};
use serde_json::Value;
use spki::SubjectPublicKeyInfoRef;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::asn1::{self, KeyUsage};
use super::common::{Found, base64_standard, base64_url, invalid, names_other, unverified};
use super::{Format, Keyring, Layer, SignatureCheck, Subject, Verdict};

/// The payload content type (`signature-envelope-jws.md`, `cty`).
const PAYLOAD_TYPE: &str = "application/vnd.cncf.notary.payload.v1+json";
const SIGNING_SCHEME: &str = "io.cncf.notary.signingScheme";
const SIGNING_TIME: &str = "io.cncf.notary.signingTime";
const AUTHENTIC_SIGNING_TIME: &str = "io.cncf.notary.authenticSigningTime";
const EXPIRY: &str = "io.cncf.notary.expiry";
/// Critical headers that name a verification plugin (`signature-specification.md`,
/// "Extended attributes for Notation Plugins").
const PLUGIN_HEADERS: [&str; 2] = ["io.cncf.notary.verificationPlugin", "io.cncf.notary.verificationPluginMinVersion"];
/// Extended key usages a signing certificate must not have (`signature-specification.md`,
/// Leaf Certificates; notation-core-go `validateCodeSigningExtendedKeyUsage`), as OID
/// content bytes under id-kp (1.3.6.1.5.5.7.3) and anyExtendedKeyUsage (2.5.29.37.0).
const FORBIDDEN_EKUS: [(&[u8], &str); 6] = [
    (&[0x2b, 6, 1, 5, 5, 7, 3, 1], "serverAuth"),
    (&[0x2b, 6, 1, 5, 5, 7, 3, 2], "clientAuth"),
    (&[0x2b, 6, 1, 5, 5, 7, 3, 4], "emailProtection"),
    (&[0x2b, 6, 1, 5, 5, 7, 3, 8], "timeStamping"),
    (&[0x2b, 6, 1, 5, 5, 7, 3, 9], "OCSPSigning"),
    (&[0x55, 0x1d, 0x25, 0x00], "anyExtendedKeyUsage"),
];

/// A JWS `alg` notation signs with (`signature-envelope-jws.md`, "Supported alg header values").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    Es512,
}

impl Alg {
    fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "ES512" => Alg::Es512,
            _ => return None,
        })
    }

    fn jws(self) -> &'static str {
        match self {
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::Es512 => "ES512",
        }
    }

    /// The name a [`SignatureCheck`] reports.
    fn name(self) -> &'static str {
        match self {
            Alg::Ps256 => "rsa-pss-sha256",
            Alg::Ps384 => "rsa-pss-sha384",
            Alg::Ps512 => "rsa-pss-sha512",
            Alg::Es256 => "ecdsa-p256-sha256",
            Alg::Es384 => "ecdsa-p384-sha384",
            Alg::Es512 => "ecdsa-p521-sha512",
        }
    }

    /// The webpki algorithm, and for ECDSA the field size of `r || s`; `None` for ES512
    /// (ring has no P-521).
    fn webpki(self) -> Option<(&'static dyn SignatureVerificationAlgorithm, Option<usize>)> {
        use webpki::ring as algs;
        Some(match self {
            Alg::Ps256 => (algs::RSA_PSS_2048_8192_SHA256_LEGACY_KEY, None),
            Alg::Ps384 => (algs::RSA_PSS_2048_8192_SHA384_LEGACY_KEY, None),
            Alg::Ps512 => (algs::RSA_PSS_2048_8192_SHA512_LEGACY_KEY, None),
            Alg::Es256 => (algs::ECDSA_P256_SHA256, Some(32)),
            Alg::Es384 => (algs::ECDSA_P384_SHA384, Some(48)),
            Alg::Es512 => return None,
        })
    }
}

/// The `alg` a signing key calls for (`signature-specification.md`, "Algorithm Selection";
/// notation-core-go `ExtractKeySpec`), or why the key is not allowed.
fn alg_for_key(spki: &[u8]) -> Result<Alg, String> {
    let spki = SubjectPublicKeyInfoRef::try_from(spki).map_err(|e| format!("its public key is not readable: {e}"))?;
    let (oid, params) = spki.algorithm.oids().map_err(|e| format!("its public key is not readable: {e}"))?;
    match (oid.to_string().as_str(), params.map(|p| p.to_string()).as_deref()) {
        ("1.2.840.113549.1.1.1", _) => {
            let bits = spki.subject_public_key.as_bytes().and_then(asn1::rsa_modulus_bits).unwrap_or(0);
            match bits {
                2048 => Ok(Alg::Ps256),
                3072 => Ok(Alg::Ps384),
                4096 => Ok(Alg::Ps512),
                _ => Err(format!("notation signs only with RSA keys of 2048, 3072 or 4096 bits, not {bits}")),
            }
        }
        ("1.2.840.10045.2.1", Some("1.2.840.10045.3.1.7")) => Ok(Alg::Es256),
        ("1.2.840.10045.2.1", Some("1.3.132.0.34")) => Ok(Alg::Es384),
        ("1.2.840.10045.2.1", Some("1.3.132.0.35")) => Ok(Alg::Es512),
        _ => Err(format!("notation signs only with RSA and ECDSA P-256/P-384/P-521 keys, not {oid}")),
    }
}

/// Accepts any extended key usage in webpki's chain walk: notation's rules for the
/// signing certificate are checked by [`check_usages`], and it sets none for CAs.
struct AnyUsage;

impl webpki::ExtendedKeyUsageValidator for AnyUsage {
    fn validate(&self, _purposes: webpki::KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        Ok(())
    }
}

/// Checks one notation JWS layer at `now`.
pub(super) fn verify_jws(
    keyring: &Keyring,
    layer: &Layer<'_>,
    content: &[u8],
    subject: &Subject<'_>,
    now: SystemTime,
) -> SignatureCheck {
    let mut found = Found::new(Format::NotationJws);
    let result = check(keyring, content, subject, now, &mut found);
    found.finish(layer, result)
}

fn check(
    keyring: &Keyring,
    content: &[u8],
    subject: &Subject<'_>,
    now: SystemTime,
    found: &mut Found,
) -> Result<Verdict, Verdict> {
    let envelope: Value =
        serde_json::from_slice(content).map_err(|e| invalid(format!("the layer is not a JWS envelope (JSON): {e}")))?;
    let member = |name: &str| {
        envelope.get(name).and_then(Value::as_str).ok_or_else(|| {
            invalid(format!("the JWS envelope has no {name:?} string (notation writes the flattened JWS JSON form)"))
        })
    };
    let (protected_b64, payload_b64, signature_b64) = (member("protected")?, member("payload")?, member("signature")?);
    let protected: Value = base64_url(protected_b64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(Value::is_object)
        .ok_or_else(|| invalid("the JWS protected header is not base64url-encoded JSON"))?;
    let alg_name = protected.get("alg").and_then(Value::as_str).unwrap_or_default();
    let alg = Alg::parse(alg_name).ok_or_else(|| {
        invalid(format!(
            "unknown JWS alg {alg_name:?} (notation signs with PS256, PS384, PS512, ES256, ES384 or ES512)"
        ))
    })?;
    found.algorithm = Some(alg.name());
    check_headers(&protected, now)?;
    let chain = envelope
        .get("header")
        .and_then(|h| h.get("x5c"))
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| invalid("the JWS header has no x5c certificate chain"))?;
    let chain = chain
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.as_str()
                .and_then(base64_standard)
                .map(CertificateDer::from)
                .ok_or_else(|| invalid(format!("x5c[{i}] is not a base64 DER certificate")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let signature = base64_url(signature_b64).ok_or_else(|| invalid("the signature is not valid base64url"))?;
    if keyring.certificates().next().is_none() {
        return Err(unverified(
            "notation signatures need a trusted certificate: add [[signatures.keys]] with certificate = \
             \"-----BEGIN CERTIFICATE-----…\" (the root of the signer's chain, as in notation's trust store)",
        ));
    }
    let Some((webpki_alg, ecdsa_field)) = alg.webpki() else {
        return Err(unverified(format!("{} (ECDSA P-521) signatures are not verified by Cairn", alg.jws())));
    };
    let leaf = webpki::EndEntityCert::try_from(&chain[0])
        .map_err(|e| invalid(format!("the signing certificate (x5c[0]) is not a readable X.509 certificate: {e}")))?;
    let wanted = alg_for_key(leaf.subject_public_key_info().as_ref())
        .map_err(|e| invalid(format!("the signing certificate (x5c[0]) cannot sign notation signatures: {e}")))?;
    if wanted != alg {
        return Err(invalid(format!(
            "the JWS alg is {} but the signing certificate's key calls for {} (notation ties alg to the key)",
            alg.jws(),
            wanted.jws()
        )));
    }
    let signature = match ecdsa_field {
        Some(n) => asn1::ecdsa_fixed_to_der(&signature, n).ok_or_else(|| {
            invalid(format!("an {} signature is {} bytes (r || s), this one is {}", alg.jws(), 2 * n, signature.len()))
        })?,
        None => signature,
    };
    let signing_input = format!("{protected_b64}.{payload_b64}");
    leaf.verify_signature(webpki_alg, signing_input.as_bytes(), &signature)
        .map_err(|_| invalid("the signature does not verify with the signing certificate's key (x5c[0])"))?;
    let key = trusted_chain(keyring, &leaf, &chain[1..], now)?;
    check_usages(&chain[0])?;
    let payload: Value = base64_url(payload_b64)
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(|| invalid("the JWS payload is not base64url-encoded JSON"))?;
    let target = payload.get("targetArtifact").ok_or_else(|| invalid("the signed payload has no targetArtifact"))?;
    let named = target.get("digest").and_then(Value::as_str).unwrap_or_default();
    if named != subject.digest.as_str() {
        return Err(names_other(named, subject.digest));
    }
    if let (Some(body), Some(size)) = (subject.body, target.get("size").and_then(Value::as_u64))
        && size != body.len() as u64
    {
        return Err(invalid(format!(
            "the signed payload gives the subject's size as {size} bytes, but it is {} bytes",
            body.len()
        )));
    }
    Ok(Verdict::Valid { key })
}

/// Checks the protected headers (`signature-envelope-jws.md`, "Protected Headers";
/// notation-core-go `validateProtectedHeaders`, `validateCriticalHeaders`) and the expiry
/// (`trust-store-trust-policy.md`, "Validate Expiry").
fn check_headers(protected: &Value, now: SystemTime) -> Result<(), Verdict> {
    let text = |name: &str| protected.get(name).and_then(Value::as_str);
    let cty = text("cty").unwrap_or_default();
    if cty != PAYLOAD_TYPE {
        return Err(invalid(format!("the JWS cty is {cty:?}, not {PAYLOAD_TYPE:?}")));
    }
    let scheme = text(SIGNING_SCHEME).unwrap_or_default();
    let (time_header, other) = match scheme {
        "notary.x509" => (SIGNING_TIME, AUTHENTIC_SIGNING_TIME),
        "notary.x509.signingAuthority" => (AUTHENTIC_SIGNING_TIME, SIGNING_TIME),
        _ => {
            return Err(invalid(format!(
                "the signing scheme {scheme:?} is not notary.x509 or notary.x509.signingAuthority"
            )));
        }
    };
    if text(time_header).is_none() || protected.get(other).is_some() {
        return Err(invalid(format!("the {scheme} signing scheme needs {time_header} and not {other}")));
    }
    let crit: Vec<&str> = protected
        .get("crit")
        .and_then(Value::as_array)
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut must = vec![SIGNING_SCHEME];
    if protected.get(EXPIRY).is_some() {
        must.push(EXPIRY);
    }
    if time_header == AUTHENTIC_SIGNING_TIME {
        must.push(AUTHENTIC_SIGNING_TIME);
    }
    if let Some(missing) = must.iter().find(|h| !crit.contains(h)) {
        return Err(invalid(format!("the protected header does not mark {missing} critical (crit), as notation must")));
    }
    for header in &crit {
        if protected.get(*header).is_none() {
            return Err(invalid(format!("the protected header marks {header} critical but does not set it")));
        }
        if PLUGIN_HEADERS.contains(header) {
            return Err(unverified(format!(
                "the signature requires a notation verification plugin ({header}), which Cairn does not run"
            )));
        }
        if ![SIGNING_SCHEME, EXPIRY, AUTHENTIC_SIGNING_TIME].contains(header) {
            return Err(invalid(format!(
                "the protected header marks {header} critical, which Cairn does not understand"
            )));
        }
    }
    if let Some(expiry) = protected.get(EXPIRY) {
        let at = expiry
            .as_str()
            .and_then(|s| OffsetDateTime::parse(s, &Rfc3339).ok())
            .ok_or_else(|| invalid(format!("{EXPIRY} is not an RFC 3339 time: {expiry}")))?;
        if OffsetDateTime::from(now) >= at {
            return Err(invalid(format!(
                "the signature expired at {} ({EXPIRY})",
                expiry.as_str().unwrap_or_default()
            )));
        }
    }
    Ok(())
}

/// Walks the chain from the signing certificate through `intermediates` to a configured
/// certificate, valid at `now`: the name of the one it reaches.
fn trusted_chain(
    keyring: &Keyring,
    leaf: &webpki::EndEntityCert<'_>,
    intermediates: &[CertificateDer<'_>],
    now: SystemTime,
) -> Result<String, Verdict> {
    let trusted: Vec<(&str, CertificateDer<'_>)> =
        keyring.certificates().map(|k| (k.name.as_str(), CertificateDer::from(k.der.as_slice()))).collect();
    let (mut names, mut anchors) = (Vec::new(), Vec::new());
    for (name, der) in &trusted {
        if let Ok(anchor) = webpki::anchor_from_trusted_cert(der) {
            names.push(*name);
            anchors.push(anchor);
        }
    }
    let time = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
    let path = leaf
        .verify_for_usage(webpki::ALL_VERIFICATION_ALGS, &anchors, intermediates, time, AnyUsage, None, None)
        .map_err(|e| {
            invalid(format!(
                "the certificate chain does not lead to a configured certificate: {} (trusted: {})",
                describe(&e),
                names.join(", ")
            ))
        })?;
    let reached = path.anchor();
    anchors
        .iter()
        .position(|a| {
            a.subject.as_ref() == reached.subject.as_ref()
                && a.subject_public_key_info.as_ref() == reached.subject_public_key_info.as_ref()
        })
        .map(|i| names[i].to_string())
        .ok_or_else(|| invalid("the certificate chain leads to a certificate Cairn cannot name"))
}

/// A webpki error in words.
fn describe(e: &webpki::Error) -> String {
    match e {
        webpki::Error::UnknownIssuer => "no configured certificate issued it or its chain".into(),
        webpki::Error::CertExpired { .. } => "a certificate in the chain has expired".into(),
        webpki::Error::CertNotValidYet { .. } => "a certificate in the chain is not valid yet".into(),
        webpki::Error::InvalidSignatureForPublicKey => "a certificate's signature does not verify".into(),
        webpki::Error::CaUsedAsEndEntity => "the signing certificate is a CA certificate".into(),
        webpki::Error::EndEntityUsedAsCa => "an x5c certificate used as an issuer is not a CA".into(),
        other => format!("{other:?}"),
    }
}

/// notation's rules for the signing certificate's key usages (`signature-specification.md`,
/// Leaf Certificates; notation-core-go `validateCodeSigningLeafKeyUsage`,
/// `validateCodeSigningExtendedKeyUsage`): a critical key usage with `digitalSignature`
/// and no other purpose but `nonRepudiation`; an extended key usage is optional, and when
/// present must not name a TLS, e-mail, timestamping or OCSP purpose.
fn check_usages(leaf: &[u8]) -> Result<(), Verdict> {
    let usages =
        asn1::usage_extensions(leaf).ok_or_else(|| invalid("the signing certificate's extensions are not readable"))?;
    let ku = usages.key_usage.ok_or_else(|| {
        invalid(
            "the signing certificate has no key usage extension; notation needs one, critical, with digitalSignature",
        )
    })?;
    if !ku.critical || ku.bits & KeyUsage::DIGITAL_SIGNATURE == 0 {
        return Err(invalid("the signing certificate's key usage must be critical and include digitalSignature"));
    }
    let extra: Vec<&str> =
        KeyUsage::FORBIDDEN_FOR_SIGNING.iter().filter(|(bit, _)| ku.bits & bit != 0).map(|(_, n)| *n).collect();
    if !extra.is_empty() {
        return Err(invalid(format!(
            "the signing certificate's key usage also allows {}; notation signing certificates may only sign",
            extra.join(", ")
        )));
    }
    let ekus = usages.extended_key_usage.unwrap_or_default();
    let refused: Vec<&str> =
        FORBIDDEN_EKUS.iter().filter(|(oid, _)| ekus.iter().any(|e| e == oid)).map(|(_, n)| *n).collect();
    if !refused.is_empty() {
        return Err(invalid(format!(
            "the signing certificate's extended key usage names {}, not code signing: notation refuses it",
            refused.join(", ")
        )));
    }
    Ok(())
}
