//! Manifests: validation on PUT (size, digest, media type, references in the repository),
//! reading by tag or digest, deleting a manifest or a tag.

use std::sync::Arc;

use bytes::Bytes;

use super::Registry;
use crate::error::Error;
use crate::meta::{Actor, Deleted, ManifestRecord, NewManifest, Precondition, PutManifest, TagWrite};
use crate::oci::{Algorithm, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::policy::Mode;

/// A manifest PUT as the handler parsed it.
pub struct ManifestPut<'a> {
    /// The repository.
    pub repo: &'a RepoName,
    /// The URL reference (tag or digest).
    pub reference: &'a Reference,
    /// Extra tags from `?tag=`.
    pub extra_tags: Vec<Tag>,
    /// The request's Content-Type.
    pub content_type: Option<&'a str>,
    /// The body (already capped by the handler).
    pub body: Bytes,
    /// `If-None-Match: *` or `If-Match: "<digest>"`, applied to every tag.
    pub precondition: Precondition,
    /// Who is pushing.
    pub actor: Actor,
}

/// What a successful PUT stored.
#[derive(Debug)]
pub struct PutOutcome {
    /// The manifest digest.
    pub digest: Digest,
    /// Its subject, echoed as `OCI-Subject`.
    pub subject: Option<Digest>,
    /// Every tag now pointing at it from this request, echoed as `OCI-Tag` (spec main).
    pub tags: Vec<Tag>,
}

impl Registry {
    /// end-7: validates and stores a manifest with its tags, all or nothing.
    pub async fn put_manifest(&self, put: ManifestPut<'_>) -> Result<PutOutcome, Error> {
        // A manifest pushed by digest is addressed with that digest's algorithm (sha256 or
        // sha512); one pushed by tag with sha256, as every client expects.
        let algorithm = match put.reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of_with(algorithm, &put.body);
        let mut tags = put.extra_tags;
        match put.reference {
            Reference::Digest(d) if d != &digest => {
                return Err(Error::DigestInvalid(format!(
                    "the URL names {d} but the manifest body has digest {digest}"
                )));
            }
            Reference::Digest(_) => {}
            Reference::Tag(t) => tags.push(t.clone()),
        }
        tags.sort();
        tags.dedup();
        let parsed = ParsedManifest::parse(put.content_type, &put.body)?;
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: parsed.media_type,
            body: put.body,
            artifact_type: parsed.artifact_type,
            subject: parsed.subject.clone(),
            annotations: parsed.annotations,
        };
        if put.precondition != Precondition::None && tags.is_empty() {
            return Err(Error::PreconditionFailed(
                "If-Match and If-None-Match apply to tags; this request names none".into(),
            ));
        }
        let tag_names = tags.clone();
        let tags = tags
            .into_iter()
            .map(|tag| {
                let d = self.immutability.decide(put.repo, &tag);
                TagWrite { immutable: (d.mode == Mode::Immutable).then_some(d.rule), tag }
            })
            .collect();
        let new = NewManifest {
            record,
            blobs: parsed.blobs,
            manifests: parsed.manifests,
            tags,
            precondition: put.precondition,
            actor: put.actor,
        };
        let outcome = self.meta.put_manifest(put.repo, &new).await?;
        self.cache.invalidate(put.repo);
        match outcome {
            PutManifest::Stored => Ok(PutOutcome { digest, subject: parsed.subject, tags: tag_names }),
            PutManifest::Missing(d) => Err(Error::ManifestBlobUnknown(d)),
            PutManifest::Immutable { tag, current, rule } => {
                Err(Error::TagImmutable { repo: put.repo.clone(), tag, current, attempted: Some(digest), rule })
            }
            PutManifest::PreconditionFailed { tag, current } => Err(Error::PreconditionFailed(match current {
                Some(c) => format!("tag {}:{tag} points to {c}; the request's precondition does not hold", put.repo),
                None => format!("tag {}:{tag} does not exist; the request's precondition does not hold", put.repo),
            })),
        }
    }

    /// end-3: a manifest by tag or digest.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Arc<ManifestRecord>, Error> {
        let cached = match reference {
            Reference::Tag(t) => self.cache.manifest_by_tag(repo, t.as_str()),
            Reference::Digest(d) => self.cache.manifest_by_digest(repo, d),
        };
        if let Some(m) = cached {
            return Ok(m);
        }
        let ticket = self.cache.ticket();
        let m =
            self.meta.manifest(repo, reference).await?.ok_or_else(|| Error::ManifestUnknown(reference.to_string()))?;
        let m = Arc::new(m);
        let tag = match reference {
            Reference::Tag(t) => Some(t.as_str()),
            Reference::Digest(_) => None,
        };
        self.cache.put_manifest(ticket, repo, tag, &m);
        Ok(m)
    }

    /// end-9: deletes a manifest (by digest, with every tag on it) or only a tag. An
    /// immutable tag, a manifest an immutable tag points to, or a manifest an index of the
    /// repository lists is refused (405 DENIED).
    pub async fn delete_manifest(&self, repo: &RepoName, reference: &Reference, actor: &Actor) -> Result<(), Error> {
        let guard = |tag: &Tag| {
            let d = self.immutability.decide(repo, tag);
            (d.mode == Mode::Immutable).then_some(d.rule)
        };
        let outcome = match reference {
            Reference::Digest(d) => self.meta.delete_manifest(repo, d, &guard, actor).await?,
            Reference::Tag(t) => self.meta.delete_tag(repo, t, &guard, actor).await?,
        };
        self.cache.invalidate(repo);
        match outcome {
            Deleted::Deleted => Ok(()),
            Deleted::NotFound => Err(Error::ManifestUnknown(reference.to_string())),
            Deleted::Protected { tag, current, rule } => {
                Err(Error::TagImmutable { repo: repo.clone(), tag, current, attempted: None, rule })
            }
            Deleted::Referenced { holder, tag } => {
                let Reference::Digest(target) = reference else {
                    return Err(Error::internal(anyhow::anyhow!("a tag delete reported a reference")));
                };
                Err(Error::Referenced { repo: repo.clone(), what: "manifest", target: target.clone(), holder, tag })
            }
        }
    }
}
