//! `/api/v1/repositories/{name}/artifacts/{digest}`: the provenance of one manifest, with its
//! referrers by kind and each signature's verification; `…/sboms` and `…/attestations`
//! list its documents, `…/sboms/{document}` and `…/attestations/{document}` return one.

use std::collections::BTreeMap;

use axum::Json;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use super::audit::LedgerEvent;
use super::problem::{ApiError, Problem};
use super::repositories::TagHistoryEvent;
use super::rfc3339;
use super::route::DocumentKind;
use crate::oci::{Digest, RepoName};
use crate::service::{ConfigInfo, Document, KindedReferrer, Provenance, ReferrerKind};
use crate::signatures::{SignatureCheck, Verdict};
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
    /// Its referrers by kind, each signature and attestation with its verification.
    pub referrers: ReferrerGroups,
    /// The trusted keys (`[[signatures.keys]]`) with a valid signature of this manifest (a
    /// cosign, notation or sigstore signature; a signed attestation does not count), sorted:
    /// what signature gates ask for.
    pub signed_by: Vec<String>,
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
    /// For a signature or attestation: each signature layer, verified against the trusted
    /// keys (empty for other kinds).
    pub verification: Vec<Verification>,
}

/// One signature layer, verified (DESIGN §5).
#[derive(Debug, Serialize, ToSchema)]
pub struct Verification {
    /// The format: `cosign-simple-signing`, `sigstore-bundle-message`, `sigstore-bundle-dsse`,
    /// `dsse`, `notation-jws` or `notation-cose`.
    pub format: String,
    /// The layer's digest.
    pub layer: String,
    /// `valid`, `invalid` or `unverified` (Cairn cannot decide: no key of the needed kind,
    /// or a format it reads but does not verify).
    pub status: String,
    /// The trusted key that verifies it (valid only).
    pub key: Option<String>,
    /// The signature algorithm, when known (`ecdsa-p256-sha256`, `ed25519`, `rsa-pkcs1-sha256`, …).
    pub algorithm: Option<String>,
    /// Why it is invalid or unverified.
    pub reason: Option<String>,
    /// For an in-toto statement: its `predicateType`.
    pub predicate_type: Option<String>,
}

impl From<&SignatureCheck> for Verification {
    fn from(c: &SignatureCheck) -> Verification {
        let format =
            serde_json::to_value(c.format).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        let (status, key, reason) = match &c.verdict {
            Verdict::Valid { key } => ("valid", Some(key.clone()), None),
            Verdict::Invalid { reason } => ("invalid", None, Some(reason.clone())),
            Verdict::Unverified { reason } => ("unverified", None, Some(reason.clone())),
        };
        Verification {
            format,
            layer: c.layer.clone(),
            status: status.into(),
            key,
            algorithm: c.algorithm.clone(),
            reason,
            predicate_type: c.predicate_type.clone(),
        }
    }
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
            verification: k.checks.iter().map(Verification::from).collect(),
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
            signed_by: p
                .referrers
                .iter()
                .filter(|r| r.kind == ReferrerKind::Signature)
                .flat_map(|r| r.checks.iter().filter_map(|c| c.approving_key()).map(str::to_string))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
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

/// The SBOMs or the attestations of a manifest.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentList {
    /// The repository.
    pub repository: String,
    /// The manifest they are about.
    pub subject: String,
    /// Every document (a layer of an SBOM or attestation referrer), oldest referrer first.
    pub documents: Vec<DocumentInfo>,
}

/// One SBOM or attestation document.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocumentInfo {
    /// The document's digest (read it at `…/sboms/{digest}` or `…/attestations/{digest}`).
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// For an SBOM: `spdx` or `cyclonedx` (`null` when the media type does not say).
    pub format: Option<String>,
    /// For an SBOM: `json`, `xml` or `tag-value`, when the media type says.
    pub encoding: Option<String>,
    /// When it was created: the referrer's `org.opencontainers.image.created` annotation,
    /// else when the referrer was pushed (RFC 3339 UTC).
    pub created: Option<String>,
    /// The referrer manifest that holds it.
    pub referrer: String,
    /// The referrer's artifact type.
    pub artifact_type: Option<String>,
    /// The cosign fallback tag the referrer was found by, if not by `subject`.
    pub tag: Option<String>,
    /// For an attestation: its envelope, verified.
    pub verification: Vec<Verification>,
}

fn service_kind(kind: DocumentKind) -> ReferrerKind {
    match kind {
        DocumentKind::Sboms => ReferrerKind::Sbom,
        DocumentKind::Attestations => ReferrerKind::Attestation,
    }
}

/// The SBOMs of a manifest (SPDX, CycloneDX; by `subject` or cosign's `.sbom` tag).
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/artifacts/{digest}/sboms", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("digest" = String, Path, description = "Manifest digest", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
    ),
    responses(
        (status = 200, description = "Its SBOM documents", body = DocumentList),
        (status = 400, description = "A bad name or digest", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such manifest in this repository", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn sboms(state: &AppState, repo: &RepoName, digest: &Digest) -> Result<Json<DocumentList>, ApiError> {
    documents(state, repo, digest, DocumentKind::Sboms).await
}

/// The attestations of a manifest (in-toto statements in DSSE envelopes or sigstore bundles;
/// by `subject` or cosign's `.att` tag), each verified.
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/artifacts/{digest}/attestations", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("digest" = String, Path, description = "Manifest digest", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
    ),
    responses(
        (status = 200, description = "Its attestation documents", body = DocumentList),
        (status = 400, description = "A bad name or digest", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such manifest in this repository", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn attestations(state: &AppState, repo: &RepoName, digest: &Digest) -> Result<Json<DocumentList>, ApiError> {
    documents(state, repo, digest, DocumentKind::Attestations).await
}

/// The SBOMs or attestations of a manifest (404 when the manifest is not stored).
async fn documents(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    kind: DocumentKind,
) -> Result<Json<DocumentList>, ApiError> {
    // 404 for a manifest that is not stored (its referrers could still be listed by digest).
    state.registry.manifest(repo, &crate::oci::Reference::Digest(digest.clone())).await?;
    let docs = state.registry.documents(repo, digest, service_kind(kind)).await?;
    Ok(Json(DocumentList {
        repository: repo.to_string(),
        subject: digest.to_string(),
        documents: docs.into_iter().map(document_info).collect(),
    }))
}

fn document_info(d: Document) -> DocumentInfo {
    let (format, encoding) = match crate::signatures::sbom_format(&d.media_type) {
        Some((f, e)) => (Some(f.to_string()), e.map(str::to_string)),
        None => (None, None),
    };
    DocumentInfo {
        digest: d.digest.to_string(),
        media_type: d.media_type,
        size: d.size,
        format,
        encoding,
        created: d.created.or_else(|| d.stored_at.map(rfc3339)),
        referrer: d.referrer.to_string(),
        artifact_type: d.artifact_type,
        tag: d.tag.map(|t| t.to_string()),
        verification: d.checks.iter().map(Verification::from).collect(),
    }
}

/// One SBOM document of a manifest, as stored (its own media type).
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/artifacts/{digest}/sboms/{document}", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("digest" = String, Path, description = "Manifest digest", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        ("document" = String, Path, description = "Document digest, from the listing", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
    ),
    responses(
        (status = 200, description = "The document, with its own media type as Content-Type (`application/spdx+json`, `application/vnd.cyclonedx+xml`, `application/vnd.dsse.envelope.v1+json`, …)", content_type = "*/*"),
        (status = 400, description = "A bad name or digest", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such manifest, or no such SBOM of it", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn sbom(state: &AppState, repo: &RepoName, digest: &Digest, document: &Digest) -> Result<Response, ApiError> {
    document_body(state, repo, digest, DocumentKind::Sboms, document).await
}

/// One attestation document of a manifest, as stored (its own media type).
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/artifacts/{digest}/attestations/{document}", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("digest" = String, Path, description = "Manifest digest", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
        ("document" = String, Path, description = "Document digest, from the listing", pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$"),
    ),
    responses(
        (status = 200, description = "The document, with its own media type as Content-Type (`application/spdx+json`, `application/vnd.cyclonedx+xml`, `application/vnd.dsse.envelope.v1+json`, …)", content_type = "*/*"),
        (status = 400, description = "A bad name or digest", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such manifest, or no such attestation of it", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn attestation(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    document: &Digest,
) -> Result<Response, ApiError> {
    document_body(state, repo, digest, DocumentKind::Attestations, document).await
}

/// Streams one document with its media type, size and digest.
async fn document_body(
    state: &AppState,
    repo: &RepoName,
    digest: &Digest,
    kind: DocumentKind,
    document: &Digest,
) -> Result<Response, ApiError> {
    state.registry.manifest(repo, &crate::oci::Reference::Digest(digest.clone())).await?;
    let (doc, stream) = state.registry.document(repo, digest, service_kind(kind), document).await?;
    let mut resp = Response::new(axum::body::Body::from_stream(stream));
    let headers = resp.headers_mut();
    // The media type is the pusher's word: a browser must neither sniff nor render it here.
    let content_type =
        HeaderValue::from_str(&doc.media_type).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(doc.size));
    headers.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment"));
    if let Ok(v) = HeaderValue::from_str(doc.digest.as_str()) {
        headers.insert("docker-content-digest", v);
    }
    Ok(resp)
}
