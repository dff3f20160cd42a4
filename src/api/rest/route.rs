//! `RestRoute::parse`: the only code that knows `/api/v1` URL shapes. Repository names
//! contain slashes, so paths under `repositories/` are matched from the right, where every
//! suffix has a fixed length. Each segment is percent-decoded on its own, so an encoded `/`
//! (`%2F`) stays inside its segment: `a%2Fb` as a repository name is `a/b`, as a tag it is
//! an invalid tag.

use crate::error::Error;
use crate::oci::{Digest, RepoName, Tag};

/// A parsed `/api/v1/...` path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestRoute {
    /// `openapi.json`
    OpenApi,
    /// `policies/immutability`
    ImmutabilityPolicy,
    /// `repositories`
    Repositories,
    /// `repositories/<name>/tags/<tag>/history`
    TagHistory {
        /// The repository.
        name: RepoName,
        /// The tag.
        tag: Tag,
    },
    /// `repositories/<name>/tags/<tag>` (`?at=`)
    TagAt {
        /// The repository.
        name: RepoName,
        /// The tag.
        tag: Tag,
    },
    /// `repositories/<name>/artifacts/<digest>`
    Artifact {
        /// The repository.
        name: RepoName,
        /// The manifest digest.
        digest: Digest,
    },
    /// `repositories/<name>/artifacts/<digest>/sboms` or `/attestations`
    Documents {
        /// The repository.
        name: RepoName,
        /// The subject manifest.
        digest: Digest,
        /// SBOMs or attestations.
        kind: DocumentKind,
    },
    /// `repositories/<name>/artifacts/<digest>/sboms/<document>` or `/attestations/<document>`
    Document {
        /// The repository.
        name: RepoName,
        /// The subject manifest.
        digest: Digest,
        /// SBOMs or attestations.
        kind: DocumentKind,
        /// The document (layer) digest.
        document: Digest,
    },
    /// `repositories/<name>/tags/<tag>/rollback` (POST)
    Rollback {
        /// The repository.
        name: RepoName,
        /// The tag.
        tag: Tag,
    },
    /// `retention/plan`
    RetentionPlan,
    /// `retention/apply` (POST)
    RetentionApply,
    /// `audit/events`
    AuditEvents,
    /// `audit/checkpoints`
    AuditCheckpoints,
    /// `audit/public-key`
    AuditPublicKey,
}

/// Which documents of an artifact a route lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// `sboms`: SPDX and CycloneDX documents.
    Sboms,
    /// `attestations`: in-toto statements (DSSE envelopes, sigstore bundles).
    Attestations,
}

impl DocumentKind {
    fn parse(s: &str) -> Option<DocumentKind> {
        match s {
            "sboms" => Some(DocumentKind::Sboms),
            "attestations" => Some(DocumentKind::Attestations),
            _ => None,
        }
    }
}

/// What a route needs of the caller (see `caller.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone may read it.
    Nothing,
    /// The reader, auditor or admin role.
    ApiRead,
    /// The auditor or admin role.
    Audit,
    /// A signed-in caller; what it sees is filtered by what it may pull.
    SignedIn,
    /// The right to read this repository: auditor or admin, or pull on it.
    Repository(RepoName),
    /// The admin role.
    Admin,
    /// Push on this repository.
    Push(RepoName),
}

impl RestRoute {
    /// A short name for metrics labels (`repositories`, `artifact`, `sboms`, …).
    pub fn label(&self) -> &'static str {
        match self {
            RestRoute::OpenApi => "openapi",
            RestRoute::ImmutabilityPolicy => "policies",
            RestRoute::Repositories => "repositories",
            RestRoute::TagHistory { .. } => "tag_history",
            RestRoute::TagAt { .. } => "tag",
            RestRoute::Artifact { .. } => "artifact",
            RestRoute::Documents { kind: DocumentKind::Sboms, .. } => "sboms",
            RestRoute::Documents { kind: DocumentKind::Attestations, .. } => "attestations",
            RestRoute::Document { kind: DocumentKind::Sboms, .. } => "sbom",
            RestRoute::Document { kind: DocumentKind::Attestations, .. } => "attestation",
            RestRoute::Rollback { .. } => "rollback",
            RestRoute::RetentionPlan => "retention_plan",
            RestRoute::RetentionApply => "retention_apply",
            RestRoute::AuditEvents => "audit_events",
            RestRoute::AuditCheckpoints => "audit_checkpoints",
            RestRoute::AuditPublicKey => "audit_public_key",
        }
    }

    /// Parses the path of a request (starting with `/api/v1/`). Unknown shapes are
    /// `Error::NotFound`; a known shape with a bad name, tag or digest is that parse error.
    pub fn parse(path: &str) -> Result<RestRoute, Error> {
        let rest = path.strip_prefix("/api/v1/").ok_or(Error::NotFound)?;
        let segs = rest
            .split('/')
            .map(|s| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map_err(|_| Error::Unsupported(format!("the path {path:?} is not valid percent-encoded UTF-8")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let segs: Vec<&str> = segs.iter().map(|s| s.as_ref()).collect();
        Ok(match segs.as_slice() {
            ["openapi.json"] => RestRoute::OpenApi,
            ["policies", "immutability"] => RestRoute::ImmutabilityPolicy,
            ["repositories"] => RestRoute::Repositories,
            ["audit", "events"] => RestRoute::AuditEvents,
            ["audit", "checkpoints"] => RestRoute::AuditCheckpoints,
            ["audit", "public-key"] => RestRoute::AuditPublicKey,
            ["retention", "plan"] => RestRoute::RetentionPlan,
            ["retention", "apply"] => RestRoute::RetentionApply,
            ["repositories", name @ .., "tags", tag, "rollback"] if !name.is_empty() => {
                RestRoute::Rollback { name: repo(name)?, tag: Tag::parse(tag)? }
            }
            ["repositories", name @ .., "tags", tag, "history"] if !name.is_empty() => {
                RestRoute::TagHistory { name: repo(name)?, tag: Tag::parse(tag)? }
            }
            ["repositories", name @ .., "tags", tag] if !name.is_empty() => {
                RestRoute::TagAt { name: repo(name)?, tag: Tag::parse(tag)? }
            }
            ["repositories", name @ .., "artifacts", d, kind, doc]
                if !name.is_empty() && DocumentKind::parse(kind).is_some() =>
            {
                let kind = DocumentKind::parse(kind).ok_or(Error::NotFound)?;
                RestRoute::Document {
                    name: repo(name)?,
                    digest: Digest::parse(d)?,
                    kind,
                    document: Digest::parse(doc)?,
                }
            }
            ["repositories", name @ .., "artifacts", d, kind]
                if !name.is_empty() && DocumentKind::parse(kind).is_some() =>
            {
                let kind = DocumentKind::parse(kind).ok_or(Error::NotFound)?;
                RestRoute::Documents { name: repo(name)?, digest: Digest::parse(d)?, kind }
            }
            ["repositories", name @ .., "artifacts", d] if !name.is_empty() => {
                RestRoute::Artifact { name: repo(name)?, digest: Digest::parse(d)? }
            }
            _ => return Err(Error::NotFound),
        })
    }

    /// What the caller needs for this route.
    pub fn need(&self) -> Need {
        match self {
            RestRoute::OpenApi => Need::Nothing,
            RestRoute::ImmutabilityPolicy => Need::ApiRead,
            RestRoute::Repositories => Need::SignedIn,
            RestRoute::TagHistory { name, .. }
            | RestRoute::TagAt { name, .. }
            | RestRoute::Artifact { name, .. }
            | RestRoute::Documents { name, .. }
            | RestRoute::Document { name, .. } => Need::Repository(name.clone()),
            RestRoute::AuditEvents | RestRoute::AuditCheckpoints | RestRoute::AuditPublicKey => Need::Audit,
            RestRoute::RetentionPlan => Need::Audit,
            RestRoute::RetentionApply => Need::Admin,
            RestRoute::Rollback { name, .. } => Need::Push(name.clone()),
        }
    }

    /// True for the routes that change something (POST); the others answer GET and HEAD.
    pub fn is_post(&self) -> bool {
        matches!(self, RestRoute::RetentionApply | RestRoute::Rollback { .. })
    }
}

fn repo(segs: &[&str]) -> Result<RepoName, Error> {
    Ok(RepoName::parse(&segs.join("/"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> String {
        format!("sha256:{}", "ab".repeat(32))
    }

    #[test]
    fn parses_fixed_paths_and_names_from_the_right() {
        assert_eq!(RestRoute::parse("/api/v1/openapi.json").unwrap(), RestRoute::OpenApi);
        assert_eq!(RestRoute::parse("/api/v1/repositories").unwrap(), RestRoute::Repositories);
        assert_eq!(RestRoute::parse("/api/v1/audit/public-key").unwrap(), RestRoute::AuditPublicKey);
        let r = RestRoute::parse(&format!("/api/v1/repositories/a/tags/b/artifacts/{}", d())).unwrap();
        assert!(matches!(r, RestRoute::Artifact { ref name, .. } if name.as_str() == "a/tags/b"));
        let r = RestRoute::parse(&format!("/api/v1/repositories/a/b/artifacts/{}/sboms", d())).unwrap();
        assert!(
            matches!(r, RestRoute::Documents { ref name, kind: DocumentKind::Sboms, .. } if name.as_str() == "a/b")
        );
        let r = RestRoute::parse(&format!("/api/v1/repositories/a/artifacts/{}/attestations/{}", d(), d())).unwrap();
        assert!(
            matches!(r, RestRoute::Document { ref name, kind: DocumentKind::Attestations, .. } if name.as_str() == "a")
        );
        assert_eq!(r.need(), Need::Repository(RepoName::parse("a").unwrap()));
        let r = RestRoute::parse("/api/v1/repositories/a/b/tags/v1/history").unwrap();
        assert!(
            matches!(r, RestRoute::TagHistory { ref name, ref tag } if name.as_str() == "a/b" && tag.as_str() == "v1")
        );
        let r = RestRoute::parse("/api/v1/repositories/a/b/tags/prod/rollback").unwrap();
        assert!(
            matches!(r, RestRoute::Rollback { ref name, ref tag } if name.as_str() == "a/b" && tag.as_str() == "prod")
        );
        assert_eq!(RestRoute::parse("/api/v1/retention/plan").unwrap().need(), Need::Audit);
        assert_eq!(RestRoute::parse("/api/v1/retention/apply").unwrap().need(), Need::Admin);
        let r = RestRoute::parse("/api/v1/repositories/x/tags/history").unwrap();
        assert!(matches!(r, RestRoute::TagAt { ref tag, .. } if tag.as_str() == "history"));
        let r = RestRoute::parse("/api/v1/repositories/a%2Fb/tags/v1").unwrap();
        assert!(matches!(r, RestRoute::TagAt { ref name, .. } if name.as_str() == "a/b"));
        assert_eq!(
            RestRoute::parse("/api/v1/repositories/x/tags/v1").unwrap().need(),
            Need::Repository(RepoName::parse("x").unwrap())
        );
    }

    #[test]
    fn errors() {
        for p in ["/api/v1/", "/api/v1/nope", "/api/v1/repositories/", "/api/v1/repositories/x", "/api/v1/audit"] {
            assert!(matches!(RestRoute::parse(p), Err(Error::NotFound)), "{p}");
        }
        assert!(matches!(RestRoute::parse("/api/v1/repositories/tags/v1"), Err(Error::NotFound)));
        assert!(matches!(RestRoute::parse("/api/v1/repositories/Bad/tags/v1"), Err(Error::NameInvalid(_))));
        assert!(matches!(RestRoute::parse("/api/v1/repositories/x/tags/a%2Fb"), Err(Error::NameInvalid(_))));
        assert!(matches!(RestRoute::parse("/api/v1/repositories/x/artifacts/sha256:zz"), Err(Error::DigestInvalid(_))));
        let sboms = format!("/api/v1/repositories/x/artifacts/sha256:{}/sboms/sha256:zz", "ab".repeat(32));
        assert!(matches!(RestRoute::parse(&sboms), Err(Error::DigestInvalid(_))));
        let other = format!("/api/v1/repositories/x/artifacts/sha256:{}/signatures", "ab".repeat(32));
        assert!(matches!(RestRoute::parse(&other), Err(Error::NotFound)));
        assert!(matches!(RestRoute::parse("/api/v1/repositories/x/tags/%FF"), Err(Error::Unsupported(_))));
    }
}
