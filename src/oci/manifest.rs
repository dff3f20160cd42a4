//! Manifest parsing: the four supported media types, the references a manifest makes
//! (config and layers, or child manifests), its `subject` and what the referrers API shows
//! of it (artifact type, annotations).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::digest::Digest;
use super::media_types::{self, DOCKER_MANIFEST, DOCKER_SCHEMA1, MANIFEST_TYPES, OCI_INDEX, OCI_MANIFEST};

/// Why a manifest body was refused (`MANIFEST_INVALID`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ManifestError(pub String);

/// A content descriptor as it appears in manifests.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The media type of the referenced content.
    pub media_type: String,
    /// Its digest.
    pub digest: String,
    /// Its size in bytes.
    pub size: i64,
    /// External locations (foreign layers); such layers need not be in the registry.
    #[serde(default)]
    pub urls: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<BTreeMap<String, String>>,
}

/// What Cairn keeps of a validated manifest besides its bytes.
#[derive(Debug, Clone)]
pub struct ParsedManifest {
    /// The effective media type (from Content-Type, or the body's `mediaType`).
    pub media_type: String,
    /// `artifactType`, or for an image manifest without one, `config.mediaType`.
    pub artifact_type: Option<String>,
    /// The digest of `subject`, when the manifest refers to another one.
    pub subject: Option<Digest>,
    /// Blobs it references (config and layers), which must be in the repository.
    pub blobs: Vec<Digest>,
    /// Manifests it references (an index's children), which must be in the repository.
    pub manifests: Vec<Digest>,
    /// Its annotations, shown by the referrers API.
    pub annotations: Option<BTreeMap<String, String>>,
}

impl ParsedManifest {
    /// Parses and validates `body`, sent with `content_type` (parameters ignored).
    pub fn parse(content_type: Option<&str>, body: &[u8]) -> Result<ParsedManifest, ManifestError> {
        let raw: Raw = serde_json::from_slice(body)
            .map_err(|e| ManifestError(format!("manifest is not valid JSON of a manifest: {e}")))?;
        let header = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty() && c != "application/json" && c != "application/octet-stream");
        let media_type = match (header, raw.media_type.clone()) {
            (Some(h), Some(b)) if h != b => {
                return Err(ManifestError(format!("Content-Type {h} does not match the manifest's mediaType {b}")));
            }
            (Some(h), _) => h,
            (None, Some(b)) => b,
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_string(),
            (None, None) => OCI_MANIFEST.to_string(),
        };
        if DOCKER_SCHEMA1.contains(&media_type.as_str()) {
            return Err(ManifestError(
                "Docker schema 1 manifests are not supported; push with a current client (schema 2 or OCI)".into(),
            ));
        }
        if !MANIFEST_TYPES.contains(&media_type.as_str()) {
            return Err(ManifestError(format!(
                "unsupported manifest media type {media_type}; supported: {}",
                MANIFEST_TYPES.join(", ")
            )));
        }
        if raw.schema_version != Some(2) {
            return Err(ManifestError("schemaVersion must be 2".into()));
        }
        let digest =
            |d: &Descriptor, what: &str| Digest::parse(&d.digest).map_err(|e| ManifestError(format!("{what}: {e}")));
        let mut blobs = Vec::new();
        let mut manifests = Vec::new();
        if media_types::is_index(&media_type) {
            if raw.config.is_some() || raw.layers.is_some() {
                return Err(ManifestError("an index has `manifests`, not `config` or `layers`".into()));
            }
            let Some(children) = &raw.manifests else {
                return Err(ManifestError("an index must have a `manifests` array".into()));
            };
            for (i, m) in children.iter().enumerate() {
                manifests.push(digest(m, &format!("manifests[{i}]"))?);
            }
        } else {
            if raw.manifests.is_some() {
                return Err(ManifestError(format!("{media_type} has `config` and `layers`, not `manifests`")));
            }
            let Some(config) = &raw.config else {
                return Err(ManifestError("an image manifest must have a `config` descriptor".into()));
            };
            blobs.push(digest(config, "config")?);
            let Some(layers) = &raw.layers else {
                return Err(ManifestError("an image manifest must have a `layers` array".into()));
            };
            for (i, l) in layers.iter().enumerate() {
                let d = digest(l, &format!("layers[{i}]"))?;
                if l.urls.is_empty() {
                    blobs.push(d);
                }
            }
        }
        for d in raw.config.iter().chain(raw.layers.iter().flatten()).chain(raw.manifests.iter().flatten()) {
            if d.size < 0 {
                return Err(ManifestError(format!("descriptor {} has a negative size", d.digest)));
            }
        }
        let subject = match &raw.subject {
            Some(s) => Some(digest(s, "subject")?),
            None => None,
        };
        // Referrers listing: an empty `artifactType` counts as missing, so an image manifest
        // shows its config media type and an index none.
        let artifact_type = raw.artifact_type.clone().filter(|a| !a.is_empty()).or_else(|| {
            (media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST)
                .then(|| raw.config.as_ref().map(|c| c.media_type.clone()))
                .flatten()
        });
        blobs.sort();
        blobs.dedup();
        manifests.sort();
        manifests.dedup();
        Ok(ParsedManifest { media_type, artifact_type, subject, blobs, manifests, annotations: raw.annotations })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> String {
        format!("sha256:{}", hex::encode([n; 32]))
    }

    #[test]
    fn image_manifest_references_and_artifact_type() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/x.cfg","digest":"{}","size":2}},
            "layers":[{{"mediaType":"l","digest":"{}","size":3}},{{"mediaType":"f","digest":"{}","size":3,"urls":["http://x"]}}],
            "subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":9}},"annotations":{{"a":"b"}}}}"#,
            d(1),
            d(2),
            d(3),
            d(4)
        );
        let m = ParsedManifest::parse(None, body.as_bytes()).unwrap();
        assert_eq!(m.media_type, OCI_MANIFEST);
        assert_eq!(m.blobs.len(), 2, "foreign layer with urls is not required");
        assert_eq!(m.artifact_type.as_deref(), Some("application/x.cfg"));
        assert_eq!(m.subject.unwrap().as_str(), d(4));
        assert_eq!(m.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn refuses_bad_manifests() {
        let cases = [
            (None, "not json".to_string()),
            (None, r#"{"schemaVersion":1}"#.to_string()),
            (
                Some(OCI_INDEX),
                format!(
                    r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"x","digest":"{}","size":1}},"layers":[]}}"#,
                    d(1)
                ),
            ),
            (Some(DOCKER_SCHEMA1[1]), r#"{"schemaVersion":1}"#.to_string()),
            (None, r#"{"schemaVersion":2,"layers":[]}"#.to_string()),
            (
                None,
                r#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:12","size":1},"layers":[]}"#
                    .to_string(),
            ),
            (Some("text/plain"), r#"{"schemaVersion":2,"manifests":[]}"#.to_string()),
        ];
        for (ct, body) in cases {
            assert!(ParsedManifest::parse(ct, body.as_bytes()).is_err(), "{ct:?} {body} accepted");
        }
    }

    #[test]
    fn index_children() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":5}}]}}"#,
            d(7)
        );
        let m = ParsedManifest::parse(Some(OCI_INDEX), body.as_bytes()).unwrap();
        assert_eq!(m.manifests.len(), 1);
        assert!(m.blobs.is_empty());
    }
}
