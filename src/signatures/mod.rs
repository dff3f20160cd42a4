//! Signatures, SBOMs and attestations (DESIGN §5): what a referrer is ([`classify`]), the
//! trusted keys of `[[signatures.keys]]` ([`Keyring`]), and offline verification of one
//! signature layer in the formats the real tools write ([`verify_layer`]): cosign simple
//! signing, sigstore bundles (message signatures and DSSE envelopes), DSSE envelopes of
//! in-toto attestations, and notation JWS envelopes (X.509 chains to a configured
//! certificate). Pure: no I/O; the caller hands in the bytes (`service/signatures.rs`).
//! May import `oci`; nothing else of Cairn.

mod asn1;
mod bundle;
mod common;
mod cosign;
mod dsse;
mod keys;
mod notation;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::oci::Digest;

pub use keys::{KeyAlgorithm, Keyring, TrustedKey};

/// The largest layer blob read to verify or list (a signature, bundle, envelope or SBOM
/// document shown inline is small; a bigger one is reported, not read).
pub const MAX_LAYER_BYTES: u64 = 4 << 20;

/// `[signatures]` in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SignaturesConfig {
    /// `[[signatures.keys]]`: the trusted keys, by name.
    pub keys: Vec<KeyConfig>,
    /// `[[signatures.gates]]`: which tags and pulls need a valid signature.
    pub gates: Vec<crate::policy::gates::GateConfig>,
}

/// `[[signatures.keys]]`: one trusted key, as written in the config. Exactly one of
/// `public_key` and `certificate` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyConfig {
    /// The name gates and provenance use.
    pub name: String,
    /// A PEM `PUBLIC KEY` (SubjectPublicKeyInfo): ECDSA P-256, Ed25519 or RSA (2048 to
    /// 8192 bits). Verifies cosign signatures, sigstore bundles and DSSE envelopes.
    #[serde(default)]
    pub public_key: Option<String>,
    /// A PEM `CERTIFICATE`: a trust anchor for notation signatures (their `x5c` chain must
    /// lead to it, with the code-signing extended key usage).
    #[serde(default)]
    pub certificate: Option<String>,
}

/// What a referrer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReferrerKind {
    /// cosign, sigstore bundles, notation.
    Signature,
    /// SPDX, CycloneDX.
    Sbom,
    /// in-toto statements and DSSE envelopes.
    Attestation,
    /// Anything else.
    Other,
}

/// The signature and envelope formats Cairn reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// cosign's simple signing payload with the signature in the layer annotation
    /// `dev.cosignproject.cosign/signature` (layer `application/vnd.dev.cosign.simplesigning.v1+json`).
    CosignSimpleSigning,
    /// A sigstore bundle (`application/vnd.dev.sigstore.bundle.v0.3+json`, v0.1 to v0.3)
    /// holding a message signature over the subject manifest.
    SigstoreBundleMessage,
    /// A sigstore bundle holding a DSSE envelope of an in-toto statement.
    SigstoreBundleDsse,
    /// A bare DSSE envelope (`application/vnd.dsse.envelope.v1+json`), as `cosign attest` writes.
    Dsse,
    /// A notation signature in a JWS envelope (`application/jose+json`).
    NotationJws,
    /// A notation signature in a COSE envelope (`application/cose`).
    NotationCose,
}

/// The outcome of checking one signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Verdict {
    /// It verifies with a trusted key, and its payload names the subject's digest.
    Valid {
        /// The trusted key's name.
        key: String,
    },
    /// It does not verify, or names another digest; `reason` says which, in words.
    Invalid {
        /// Why, for a person.
        reason: String,
    },
    /// Cairn cannot decide: no key or certificate of the right kind is configured, or the
    /// format is one Cairn reads but does not verify (COSE, keyless certificates).
    Unverified {
        /// Why, for a person.
        reason: String,
    },
}

/// One checked signature (one layer of a signature manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureCheck {
    /// The layer's format.
    pub format: Format,
    /// The layer's digest.
    pub layer: String,
    /// The algorithm, when known: `ecdsa-p256-sha256`, `ecdsa-p384-sha384`, `ed25519`,
    /// `rsa-pkcs1-sha256`, `rsa-pss-sha256` (and the sha384/sha512 variants).
    pub algorithm: Option<String>,
    /// For DSSE and in-toto: the statement's `predicateType`.
    pub predicate_type: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
}

impl SignatureCheck {
    /// The trusted key's name when it is valid.
    pub fn valid_key(&self) -> Option<&str> {
        match &self.verdict {
            Verdict::Valid { key } => Some(key),
            _ => None,
        }
    }

    /// The trusted key's name when this is a valid *signature of the manifest* — what a gate
    /// asks for: a cosign simple signing, a notation JWS, a sigstore message signature, or a
    /// sigstore bundle whose signed statement has cosign's signing predicate
    /// ([`COSIGN_SIGN_PREDICATE`]). A valid in-toto attestation (a bare DSSE envelope, or a
    /// bundle of another predicate: a scan result, provenance) is a signed claim about the
    /// manifest, not an approval of it, even when the same key made it.
    pub fn approving_key(&self) -> Option<&str> {
        let approves = match self.format {
            Format::CosignSimpleSigning | Format::NotationJws | Format::SigstoreBundleMessage => true,
            Format::SigstoreBundleDsse => self.predicate_type.as_deref() == Some(COSIGN_SIGN_PREDICATE),
            Format::Dsse | Format::NotationCose => false,
        };
        if approves { self.valid_key() } else { None }
    }
}

/// One layer of a referrer manifest, as verification needs it.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// The layer's `mediaType`.
    pub media_type: &'a str,
    /// The layer's `digest`.
    pub digest: &'a str,
    /// The layer's `annotations`.
    pub annotations: &'a BTreeMap<String, String>,
    /// The blob's bytes, `None` when they could not be read (not stored, or over
    /// [`MAX_LAYER_BYTES`]).
    pub content: Option<&'a [u8]>,
}

/// The manifest a signature is about.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// Its digest.
    pub digest: &'a Digest,
    /// Its bytes, when stored (a message signature signs them).
    pub body: Option<&'a [u8]>,
}

/// True when a layer of this media type (inside a manifest of `artifact_type`) is a
/// signature or envelope [`verify_layer`] reads.
pub fn layer_format(artifact_type: Option<&str>, media_type: &str) -> Option<Format> {
    let m = media_type.to_ascii_lowercase();
    let notary = artifact_type.is_some_and(|a| a.eq_ignore_ascii_case("application/vnd.cncf.notary.signature"));
    if m == "application/vnd.dev.cosign.simplesigning.v1+json" {
        Some(Format::CosignSimpleSigning)
    } else if m.starts_with("application/vnd.dev.sigstore.bundle") {
        // Message or DSSE: decided when the bundle is read; this is the common one.
        Some(Format::SigstoreBundleDsse)
    } else if m == "application/vnd.dsse.envelope.v1+json" {
        Some(Format::Dsse)
    } else if notary && m == "application/jose+json" {
        Some(Format::NotationJws)
    } else if notary && m == "application/cose" {
        Some(Format::NotationCose)
    } else {
        None
    }
}

/// Checks one layer of a referrer manifest against the keyring: `None` when the layer is
/// no signature format ([`layer_format`]). `now` is the time X.509 chains are checked at.
pub fn verify_layer(
    keyring: &Keyring,
    artifact_type: Option<&str>,
    layer: &Layer<'_>,
    subject: &Subject<'_>,
    now: SystemTime,
) -> Option<SignatureCheck> {
    let format = layer_format(artifact_type, layer.media_type)?;
    let Some(content) = layer.content else {
        return Some(SignatureCheck {
            format,
            layer: layer.digest.to_string(),
            algorithm: None,
            predicate_type: None,
            verdict: Verdict::Unverified {
                reason: format!(
                    "the layer blob {} is not stored in this repository or is over {MAX_LAYER_BYTES} bytes",
                    layer.digest
                ),
            },
        });
    };
    Some(match format {
        Format::CosignSimpleSigning => cosign::verify(keyring, layer, content, subject),
        Format::SigstoreBundleDsse | Format::SigstoreBundleMessage => bundle::verify(keyring, layer, content, subject),
        Format::Dsse => dsse::verify_envelope_layer(keyring, layer, content, subject),
        Format::NotationJws => notation::verify_jws(keyring, layer, content, subject, now),
        Format::NotationCose => SignatureCheck {
            format,
            layer: layer.digest.to_string(),
            algorithm: None,
            predicate_type: None,
            verdict: Verdict::Unverified { reason: "notation COSE envelopes are not verified by Cairn yet".into() },
        },
    })
}

/// SBOM and attestation document media types a gate-exempt manifest may hold (besides the
/// signature formats of [`layer_format`]), lowercase.
const DOCUMENT_TYPES: [&str; 12] = [
    "application/spdx+json",
    "application/spdx+xml",
    "text/spdx",
    "text/spdx+json",
    "text/spdx+xml",
    "application/vnd.cyclonedx",
    "application/vnd.cyclonedx+json",
    "application/vnd.cyclonedx+xml",
    "application/vnd.in-toto+json",
    "application/vnd.dev.cosign.artifact.sbom.v1+json",
    "application/vnd.oci.empty.v1+json",
    "application/vnd.dev.cosign.artifact.att.v1+json",
];

/// True when a layer of `media_type` (in a manifest of `artifact_type`) is a signature, SBOM
/// or attestation document: a format [`layer_format`] reads, or one of the exact SBOM and
/// in-toto types (no container runtime unpacks any of them). Gates never hold a manifest
/// made only of such layers (`service/signatures.rs`).
pub fn document_layer(artifact_type: Option<&str>, media_type: &str) -> bool {
    let m = media_type.to_ascii_lowercase();
    layer_format(artifact_type, &m).is_some() || DOCUMENT_TYPES.contains(&m.as_str())
}

/// The predicate type of cosign's own signatures in the new bundle format (cosign
/// `pkg/cosign/bundle`): a bundle of this type is a signature, of any other an attestation.
pub const COSIGN_SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// Classifies a referrer by its `artifactType` (or config media type), its annotations and
/// its layers' media types: the artifact type decides when it names a known kind, else the
/// layers do (cosign's tag scheme stores signatures in an image manifest whose config is an
/// OCI image config). A sigstore bundle whose `dev.sigstore.bundle.predicateType`
/// annotation names another predicate than cosign's signature one is an attestation.
pub fn classify(
    artifact_type: Option<&str>,
    annotations: Option<&BTreeMap<String, String>>,
    layer_media_types: &[&str],
) -> ReferrerKind {
    let kind = |t: &str| -> ReferrerKind {
        let t = t.to_ascii_lowercase();
        if t.starts_with("application/vnd.dev.sigstore.bundle") {
            let predicate = annotations.and_then(|a| a.get("dev.sigstore.bundle.predicateType"));
            match predicate {
                Some(p) if p != COSIGN_SIGN_PREDICATE => ReferrerKind::Attestation,
                _ => ReferrerKind::Signature,
            }
        } else if t == "application/vnd.dev.cosign.artifact.sig.v1+json"
            || t == "application/vnd.dev.cosign.simplesigning.v1+json"
            || t == "application/vnd.cncf.notary.signature"
        {
            ReferrerKind::Signature
        } else if t.contains("spdx")
            || t.contains("cyclonedx")
            || t == "application/vnd.dev.cosign.artifact.sbom.v1+json"
        {
            ReferrerKind::Sbom
        } else if t.starts_with("application/vnd.in-toto")
            || t == "application/vnd.dsse.envelope.v1+json"
            || t == "application/vnd.dev.cosign.artifact.att.v1+json"
        {
            ReferrerKind::Attestation
        } else {
            ReferrerKind::Other
        }
    };
    match artifact_type.map(kind) {
        Some(k) if k != ReferrerKind::Other => k,
        _ => {
            layer_media_types.iter().map(|m| kind(m)).find(|k| *k != ReferrerKind::Other).unwrap_or(ReferrerKind::Other)
        }
    }
}

/// An SBOM document's format, from its media type: `spdx` or `cyclonedx`, and the
/// encoding (`json`, `xml`, `tag-value`), when the media type says.
pub fn sbom_format(media_type: &str) -> Option<(&'static str, Option<&'static str>)> {
    let m = media_type.to_ascii_lowercase();
    let family = if m.contains("spdx") {
        "spdx"
    } else if m.contains("cyclonedx") {
        "cyclonedx"
    } else {
        return None;
    };
    let encoding = if m.ends_with("json") || m.contains("+json") {
        Some("json")
    } else if m.ends_with("xml") {
        Some("xml")
    } else if m == "text/spdx" {
        Some("tag-value")
    } else {
        None
    };
    Some((family, encoding))
}

#[cfg(test)]
mod classify_tests {
    use super::ReferrerKind::*;
    use super::*;

    #[test]
    fn referrer_kinds_by_artifact_type() {
        for (t, want) in [
            ("application/vnd.dev.cosign.artifact.sig.v1+json", Signature),
            ("application/vnd.dev.sigstore.bundle.v0.3+json", Signature),
            ("application/vnd.dev.sigstore.bundle+json;version=0.2", Signature),
            ("application/vnd.cncf.notary.signature", Signature),
            ("application/spdx+json", Sbom),
            ("text/spdx", Sbom),
            ("application/vnd.cyclonedx+json", Sbom),
            ("application/vnd.cyclonedx+xml", Sbom),
            ("application/vnd.in-toto+json", Attestation),
            ("application/vnd.dsse.envelope.v1+json", Attestation),
            ("application/vnd.oci.image.config.v1+json", Other),
            ("example/thing", Other),
        ] {
            assert_eq!(classify(Some(t), None, &[]), want, "{t}");
        }
        assert_eq!(classify(None, None, &[]), Other);
    }

    #[test]
    fn layers_decide_when_the_artifact_type_does_not() {
        // cosign's tag scheme: an image manifest with an OCI config and simple-signing layers
        // (cosign pkg/oci/static, pkg/types: SimpleSigningMediaType).
        let config = Some("application/vnd.oci.image.config.v1+json");
        assert_eq!(classify(config, None, &["application/vnd.dev.cosign.simplesigning.v1+json"]), Signature);
        assert_eq!(classify(config, None, &["application/vnd.dsse.envelope.v1+json"]), Attestation);
        assert_eq!(classify(config, None, &["text/spdx+json"]), Sbom);
        assert_eq!(classify(config, None, &["application/vnd.oci.image.layer.v1.tar+gzip"]), Other);
        // The artifact type wins over layers when it names a kind.
        assert_eq!(classify(Some("application/spdx+json"), None, &["application/vnd.dsse.envelope.v1+json"]), Sbom);
        // A bundle of an attestation predicate is an attestation (cosign's new bundle format
        // annotates the manifest with the predicate type).
        let mut a = BTreeMap::new();
        a.insert("dev.sigstore.bundle.predicateType".to_string(), "https://slsa.dev/provenance/v1".to_string());
        assert_eq!(classify(Some("application/vnd.dev.sigstore.bundle.v0.3+json"), Some(&a), &[]), Attestation);
        a.insert("dev.sigstore.bundle.predicateType".to_string(), COSIGN_SIGN_PREDICATE.to_string());
        assert_eq!(classify(Some("application/vnd.dev.sigstore.bundle.v0.3+json"), Some(&a), &[]), Signature);
    }

    #[test]
    fn sbom_formats() {
        assert_eq!(sbom_format("application/spdx+json"), Some(("spdx", Some("json"))));
        assert_eq!(sbom_format("text/spdx"), Some(("spdx", Some("tag-value"))));
        assert_eq!(sbom_format("application/vnd.cyclonedx+xml"), Some(("cyclonedx", Some("xml"))));
        assert_eq!(sbom_format("application/vnd.cyclonedx"), Some(("cyclonedx", None)));
        assert_eq!(sbom_format("application/json"), None);
    }
}
