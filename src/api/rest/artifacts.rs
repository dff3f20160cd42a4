//! `/api/v1/repositories/{name}/artifacts/{digest}`: the provenance of one manifest.

use std::collections::BTreeMap;

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::audit::LedgerEvent;
use super::problem::{ApiError, Problem};
use super::repositories::TagHistoryEvent;
use super::rfc3339;
use crate::oci::{Digest, RepoName};
use crate::service::{ConfigInfo, KindedReferrer, Provenance, ReferrerKind};
use crate::state::AppState;

/// The whole story of one manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct Artifact {
    /// The repository.
    pub repository: String,
    /// The manifest digest.
    pub digest: String,
    /// The manifest's media type.
    pub media_type: String,
    /// The manifest's size in bytes.
    pub size: u64,
    /// For an image: the manifest plus its config and layers, as the manifest declares them.
    pub total_size: Option<u64>,
    /// `artifactType`, or the config media type of an image.
    pub artifact_type: Option<String>,
    /// The manifest this one refers to (for a signature, SBOM or attestation).
    pub subject: Option<String>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// What the image's config blob says (`null` for an index or an artifact without one).
    pub config: Option<ImageConfig>,
    /// The manifests an index lists.
    pub manifests: Vec<IndexEntry>,
    /// Tags that point at it now.
    pub tags: Vec<CurrentTag>,
    /// Every create, move and delete of a tag to or from it, oldest first (at most 500).
    pub tag_history: Vec<DigestTagHistoryEvent>,
    /// Who pushed it and when (`null` only if it is gone).
    pub pushed: Option<PushedBy>,
    /// Its referrers by kind.
    pub referrers: ReferrerGroups,
    /// How often it was pulled (GET of the manifest by tag or digest), counted within about a
    /// second.
    pub pulls: Pulls,
    /// Ledger events of this repository whose digest or previous digest is this one, in seq
    /// order (at most 500; see `events_complete`).
    pub events: Vec<LedgerEvent>,
    /// False when more events exist than `events` holds; read them all with
    /// `/api/v1/audit/events?repository=…&digest=…`.
    pub events_complete: bool,
}

/// What an image's config blob says.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImageConfig {
    /// The config blob's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// `org.opencontainers.image.source` (label, else manifest annotation).
    pub source: Option<String>,
    /// `org.opencontainers.image.revision` (label, else manifest annotation).
    pub revision: Option<String>,
    /// The image's `created` time (else the `org.opencontainers.image.created` label).
    pub created: Option<String>,
    /// `os`.
    pub os: Option<String>,
    /// `architecture`.
    pub architecture: Option<String>,
    /// Every label (`config.Labels`).
    pub labels: BTreeMap<String, String>,
    /// Why the labels could not be read, when they could not (for example a config over 1 MiB).
    pub note: Option<String>,
}

/// A manifest an index lists.
#[derive(Debug, Serialize, ToSchema)]
pub struct IndexEntry {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: i64,
    /// `os/architecture[/variant]`, when the index says.
    pub platform: Option<String>,
}

/// A tag pointing at the manifest now.
#[derive(Debug, Serialize, ToSchema)]
pub struct CurrentTag {
    /// The tag.
    pub tag: String,
    /// Since when (RFC 3339 UTC).
    #[schema(format = DateTime)]
    pub since: String,
    /// Who pointed it here, from the tag's history (`null` if not recorded).
    pub actor: Option<String>,
}

/// A tag history entry with its tag.
#[derive(Debug, Serialize, ToSchema)]
pub struct DigestTagHistoryEvent {
    /// The tag.
    pub tag: String,
    /// What happened.
    #[serde(flatten)]
    pub event: TagHistoryEvent,
}

/// Who pushed a manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushedBy {
    /// When it was stored (RFC 3339 UTC).
    #[schema(format = DateTime)]
    pub time: String,
    /// Who, from its `manifest.put` ledger event (`null` if that event was archived).
    pub actor: Option<String>,
    /// The client's address.
    pub address: Option<String>,
    /// The seq of the `manifest.put` event.
    pub seq: Option<i64>,
}

/// Referrers grouped by what they are.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct ReferrerGroups {
    /// cosign, sigstore bundles, notation.
    pub signatures: Vec<ReferrerInfo>,
    /// SPDX and CycloneDX documents.
    pub sboms: Vec<ReferrerInfo>,
    /// in-toto attestations.
    pub attestations: Vec<ReferrerInfo>,
    /// Everything else.
    pub other: Vec<ReferrerInfo>,
}

/// One referrer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReferrerInfo {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// Its manifest size.
    pub size: u64,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// The cosign-style fallback tag it was found by (`sha256-<hex>.sig`), if not by `subject`.
    pub tag: Option<String>,
}

/// Pull counters.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pulls {
    /// Pulls counted.
    pub count: u64,
    /// The last one (RFC 3339 UTC), `null` if never.
    #[schema(format = DateTime)]
    pub last: Option<String>,
}

fn config(c: ConfigInfo, annotations: &BTreeMap<String, String>) -> ImageConfig {
    let pick = |key: &str| c.labels.get(key).or_else(|| annotations.get(key)).cloned();
    ImageConfig {
        source: pick("org.opencontainers.image.source"),
        revision: pick("org.opencontainers.image.revision"),
        created: c.created.clone().or_else(|| pick("org.opencontainers.image.created")),
        digest: c.digest,
        media_type: c.media_type,
        size: c.size,
        os: c.os,
        architecture: c.architecture,
        labels: c.labels,
        note: c.note,
    }
}

fn group(referrers: Vec<KindedReferrer>) -> ReferrerGroups {
    let mut g = ReferrerGroups::default();
    for k in referrers {
        let info = ReferrerInfo {
            digest: k.referrer.digest.to_string(),
            media_type: k.referrer.media_type,
            artifact_type: k.referrer.artifact_type,
            size: k.referrer.size,
            annotations: k.referrer.annotations.unwrap_or_default(),
            tag: k.tag.map(|t| t.to_string()),
        };
        match k.kind {
            ReferrerKind::Signature => g.signatures.push(info),
            ReferrerKind::Sbom => g.sboms.push(info),
            ReferrerKind::Attestation => g.attestations.push(info),
            ReferrerKind::Other => g.other.push(info),
        }
    }
    g
}

impl From<Provenance> for Artifact {
    fn from(p: Provenance) -> Artifact {
        let tags = p
            .tags
            .iter()
            .map(|(tag, since)| CurrentTag {
                tag: tag.to_string(),
                since: rfc3339(*since),
                actor: p
                    .tag_history
                    .iter()
                    .rev()
                    .find(|h| &h.tag == tag && h.event.to.as_ref() == Some(&p.digest))
                    .map(|h| h.event.actor.name.clone()),
            })
            .collect();
        Artifact {
            repository: p.repository.to_string(),
            digest: p.digest.to_string(),
            media_type: p.media_type,
            size: p.size,
            total_size: p.total_size,
            artifact_type: p.artifact_type,
            subject: p.subject.map(|s| s.to_string()),
            config: p.config.map(|c| config(c, &p.annotations)),
            annotations: p.annotations,
            manifests: p
                .children
                .into_iter()
                .map(|c| IndexEntry { digest: c.digest, media_type: c.media_type, size: c.size, platform: c.platform })
                .collect(),
            tags,
            tag_history: p
                .tag_history
                .iter()
                .map(|h| DigestTagHistoryEvent { tag: h.tag.to_string(), event: (&h.event).into() })
                .collect(),
            pushed: p.pushed.map(|w| PushedBy {
                time: rfc3339(w.at),
                actor: w.actor.as_ref().map(|a| a.name.clone()),
                address: w.actor.and_then(|a| a.address),
                seq: w.seq,
            }),
            referrers: group(p.referrers),
            pulls: Pulls { count: p.pulls.map_or(0, |s| s.count), last: p.pulls.map(|s| rfc3339(s.last_pulled)) },
            events: p.events.into_iter().map(Into::into).collect(),
            events_complete: p.events_complete,
        }
    }
}

/// The provenance of one manifest: what it is, its config labels, its tags now and before,
/// who pushed it, its referrers by kind, its pulls and its ledger events.
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/artifacts/{digest}", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("digest" = String, Path, description = "Manifest digest", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
    ),
    responses(
        (status = 200, description = "The provenance", body = Artifact),
        (status = 400, description = "A bad name or digest", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such manifest in this repository", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn provenance(state: &AppState, repo: &RepoName, digest: &Digest) -> Result<Json<Artifact>, ApiError> {
    Ok(Json(state.registry.provenance(repo, digest).await?.into()))
}
