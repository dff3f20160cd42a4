//! Manifests: validation on PUT (size, digest, media type, references in the repository),
//! reading by tag or digest, deleting a manifest or a tag. Every change runs in one `MetaTx`
//! that ends with its ledger events; the decisions are `policy::writes`; a refusal is
//! ledgered on its own after the change rolls back. Signature gates are asked before the
//! transaction (`service/signatures.rs`): verifying reads blobs.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::json;

use super::Registry;
use crate::audit::{EventKind, NewEvent};
use crate::error::Error;
use crate::meta::{Actor, ManifestRecord, MetaError, RefKind};
use crate::oci::{Algorithm, Digest, ParsedManifest, Reference, RepoName, Tag};
use crate::policy::Mode;
use crate::policy::writes::{self, Precondition, Refusal, TagWrite};

/// Attempts after the first when a concurrent writer conflicts (`MetaError::Conflict`).
const CONFLICT_RETRIES: u32 = 3;

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

/// The `delete.force` event of a forced delete inside window `w`.
fn forced_event(
    actor: &Actor,
    repo: &RepoName,
    tag: Option<&Tag>,
    digest: &Digest,
    w: &crate::policy::retention::WindowHit,
    reason: Option<&str>,
) -> NewEvent {
    let mut e = event(EventKind::DeleteForce, actor, repo).digest(digest.as_str()).detail(json!({
        "reason": reason,
        "window": { "tag": w.tag.as_str(), "position": w.position, "size": w.size },
    }));
    if let Some(t) = tag {
        e = e.tag(t.as_str());
    }
    e
}

/// An event by `actor`.
pub(super) fn event(kind: EventKind, actor: &Actor, repo: &RepoName) -> NewEvent {
    NewEvent::new(kind, &actor.name, actor.address.as_deref()).repository(repo.as_str())
}

impl Registry {
    /// end-7: validates and stores a manifest with its tags, all or nothing.
    pub async fn put_manifest(&self, mut put: ManifestPut<'_>) -> Result<PutOutcome, Error> {
        // A manifest pushed by digest is addressed with that digest's algorithm (sha256 or
        // sha512); one pushed by tag with sha256, as every client expects.
        let algorithm = match put.reference {
            Reference::Digest(d) => d.algorithm(),
            Reference::Tag(_) => Algorithm::Sha256,
        };
        let digest = Digest::of_with(algorithm, &put.body);
        let mut tags = std::mem::take(&mut put.extra_tags);
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
        if put.precondition != Precondition::None && tags.is_empty() {
            return Err(Error::PreconditionFailed(
                "If-Match and If-None-Match apply to tags; this request names none".into(),
            ));
        }
        let record = ManifestRecord {
            digest: digest.clone(),
            media_type: parsed.media_type.clone(),
            body: put.body.clone(),
            artifact_type: parsed.artifact_type.clone(),
            subject: parsed.subject.clone(),
            annotations: parsed.annotations.clone(),
        };
        if self.push_gated(put.repo, &tags, &record) {
            // A manifest that lacks a blob is that error (400), not a gate's refusal. Only a
            // gated PUT pays for this read-only transaction.
            if let Some(missing) = self.missing_reference(put.repo, &parsed).await? {
                return Err(Error::ManifestBlobUnknown(missing));
            }
            self.check_push_gates(put.repo, &tags, &record, &put.actor).await?;
        }
        // A conflict with a concurrent writer (another node inserting the same row) rolled
        // everything back; the next attempt sees that writer's result and decides again.
        let mut attempt = 0;
        loop {
            match self.store_manifest(&put, &record, &parsed, &tags).await {
                Err(e) if e.is_conflict() && attempt < CONFLICT_RETRIES => attempt += 1,
                Err(e) => return Err(e),
                Ok(()) => return Ok(PutOutcome { digest, subject: parsed.subject, tags }),
            }
        }
    }

    /// One attempt at storing a validated manifest and its tags, in one transaction.
    async fn store_manifest(
        &self,
        put: &ManifestPut<'_>,
        record: &ManifestRecord,
        parsed: &ParsedManifest,
        tags: &[Tag],
    ) -> Result<(), Error> {
        let digest = &record.digest;
        let (repo, actor) = (put.repo, &put.actor);
        let mut tx = self.meta.begin(self.clock.now()).await?;
        let mut events = Vec::new();
        // The schema refuses a reference the repository lacks; only then is it looked up, so
        // a good PUT spends no statement on it (on SQLite every statement of a write is on
        // the one write connection's serial path, and these are one batch, which also reads
        // where the first tag points).
        let stored = tx
            .ensure_repository_and_insert_manifest(repo, record, &parsed.blobs, &parsed.manifests, tags.first())
            .await;
        let (inserted, mut first_tag) = match stored {
            Ok(stored) => {
                if stored.repository_created {
                    events.push(event(EventKind::RepositoryCreate, actor, repo));
                }
                (stored.inserted, Some(stored.tag))
            }
            Err(MetaError::NotFound(why)) => {
                tx.rollback().await?;
                return Err(match self.missing_reference(repo, parsed).await? {
                    Some(missing) => Error::ManifestBlobUnknown(missing),
                    // A concurrent push linked it since: the retry loop goes again.
                    None => MetaError::Conflict(why).into(),
                });
            }
            Err(e) => return Err(e.into()),
        };
        if inserted {
            events.push(event(EventKind::ManifestPut, actor, repo).digest(digest.as_str()).detail(json!({
                "media_type": record.media_type,
                "size": record.body.len(),
                "subject": record.subject.as_ref().map(Digest::as_str),
            })));
        }
        for tag in tags {
            let d = self.immutability.decide(repo, tag);
            let immutable = (d.mode == Mode::Immutable).then_some(d.rule.as_str());
            let current = match first_tag.take() {
                Some(current) => current,
                None => tx.tag_for_update(repo, tag).await?,
            };
            match writes::decide_tag_write(tag, current.as_ref(), digest, &put.precondition, immutable) {
                TagWrite::Keep => {}
                TagWrite::Create => {
                    tx.set_tag(repo, tag, None, digest, actor).await?;
                    events.push(event(EventKind::TagCreate, actor, repo).tag(tag.as_str()).digest(digest.as_str()));
                }
                TagWrite::Move { from } => {
                    tx.set_tag(repo, tag, Some(&from), digest, actor).await?;
                    events.push(
                        event(EventKind::TagMove, actor, repo)
                            .tag(tag.as_str())
                            .digest(digest.as_str())
                            .previous(Some(from.as_str())),
                    );
                }
                TagWrite::Refuse(refusal) => {
                    tx.rollback().await?;
                    self.invalidate(repo);
                    let refused = event(EventKind::WriteRefuse, actor, repo).digest(digest.as_str());
                    return Err(self.refuse(repo, refused, refusal, Some(digest), false).await);
                }
            }
        }
        tx.append_events(events, self.clock.now()).await?;
        tx.commit().await?;
        self.invalidate(repo);
        Ok(())
    }

    /// The first blob, then child manifest, that `parsed` names and `repo` does not have, read
    /// in a transaction that changes nothing.
    async fn missing_reference(&self, repo: &RepoName, parsed: &ParsedManifest) -> Result<Option<Digest>, Error> {
        let mut tx = self.meta.begin(self.clock.now()).await?;
        for (kind, list) in [(RefKind::Blob, &parsed.blobs), (RefKind::Child, &parsed.manifests)] {
            if let Some(missing) = tx.first_missing(repo, kind, list).await? {
                tx.rollback().await?;
                return Ok(Some(missing));
            }
        }
        tx.rollback().await?;
        Ok(None)
    }

    /// end-3: a manifest by tag or digest.
    pub async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Arc<ManifestRecord>, Error> {
        let cached = match reference {
            Reference::Tag(t) => self.cache.manifest_by_tag(repo, t.as_str()),
            Reference::Digest(d) => self.cache.manifest_by_digest(repo, d),
        };
        if let Some(m) = cached {
            metrics::counter!(crate::metrics::CACHE_HITS).increment(1);
            return Ok(m);
        }
        metrics::counter!(crate::metrics::CACHE_MISSES).increment(1);
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
    /// repository lists is refused (405 DENIED), and the refusal is ledgered. So is a delete
    /// inside a rollback window (DESIGN §6), unless `force` carries an admin's reason: then it
    /// is done and a `delete.force` event records the actor, the reason and the window.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        actor: &Actor,
        force: Option<&str>,
    ) -> Result<(), Error> {
        let rule_of = |tag: &Tag| {
            let d = self.immutability.decide(repo, tag);
            (d.mode == Mode::Immutable).then_some(d.rule)
        };
        let mut tx = self.meta.begin(self.clock.now()).await?;
        let mut events = Vec::new();
        let (target, decision) = match reference {
            Reference::Tag(tag) => {
                let Some(current) = tx.tag_for_update(repo, tag).await? else {
                    tx.rollback().await?;
                    return Err(Error::ManifestUnknown(reference.to_string()));
                };
                let mut decision = writes::decide_tag_delete(std::slice::from_ref(tag), &current, rule_of);
                if decision.is_ok() {
                    let hit = self.window_hit(&mut tx, repo, Some(tag), &current).await?;
                    decision = writes::decide_window_delete(hit, force.is_some()).map(|forced| {
                        events.extend(forced.map(|w| forced_event(actor, repo, Some(tag), &current, &w, force)))
                    });
                }
                if decision.is_ok() {
                    tx.remove_tag(repo, tag, &current, actor).await?;
                    events.push(
                        event(EventKind::TagDelete, actor, repo).tag(tag.as_str()).previous(Some(current.as_str())),
                    );
                }
                (current, decision)
            }
            Reference::Digest(d) => {
                if !tx.manifest_exists(repo, d).await? {
                    tx.rollback().await?;
                    return Err(Error::ManifestUnknown(reference.to_string()));
                }
                let holder = tx.holder(repo, RefKind::Child, d).await?;
                let tags = tx.tags_of(repo, d).await?;
                let mut decision = writes::decide_unreferenced(holder.map(|h| (h.manifest, h.tag)))
                    .and_then(|()| writes::decide_tag_delete(&tags, d, rule_of));
                if decision.is_ok() {
                    let hit = self.window_hit(&mut tx, repo, None, d).await?;
                    decision = writes::decide_window_delete(hit, force.is_some())
                        .map(|forced| events.extend(forced.map(|w| forced_event(actor, repo, None, d, &w, force))));
                }
                if decision.is_ok() {
                    for tag in &tags {
                        tx.remove_tag(repo, tag, d, actor).await?;
                        events.push(
                            event(EventKind::TagDelete, actor, repo).tag(tag.as_str()).previous(Some(d.as_str())),
                        );
                    }
                    tx.remove_manifest(repo, d).await?;
                    events.push(event(EventKind::ManifestDelete, actor, repo).digest(d.as_str()));
                }
                (d.clone(), decision)
            }
        };
        if let Err(refusal) = decision {
            tx.rollback().await?;
            let mut refused = event(EventKind::DeleteRefuse, actor, repo).digest(target.as_str());
            if let Reference::Tag(t) = reference {
                refused = refused.tag(t.as_str());
            }
            return Err(self.refuse(repo, refused, refusal, None, false).await);
        }
        tx.append_events(events, self.clock.now()).await?;
        tx.commit().await?;
        self.invalidate(repo);
        Ok(())
    }

    /// Ledgers a refusal in its own transaction (the refused change rolled back) and turns it
    /// into the client's error. `attempted` is the digest a refused PUT wanted; `blob` says
    /// the refused delete was of a blob (not a manifest).
    pub(super) async fn refuse(
        &self,
        repo: &RepoName,
        event: NewEvent,
        refusal: Refusal,
        attempted: Option<&Digest>,
        blob: bool,
    ) -> Error {
        let (detail, error) = match refusal {
            Refusal::Immutable { tag, current, rule } => (
                json!({ "reason": "immutable", "tag": tag.as_str(), "current": current.as_str(), "rule": rule }),
                Error::TagImmutable { repo: repo.clone(), tag, current, attempted: attempted.cloned(), rule },
            ),
            Refusal::Precondition { tag, current } => (
                json!({ "reason": "precondition", "tag": tag.as_str(), "current": current.as_ref().map(Digest::as_str) }),
                Error::PreconditionFailed(match current {
                    Some(c) => format!("tag {repo}:{tag} points to {c}; the request's precondition does not hold"),
                    None => format!("tag {repo}:{tag} does not exist; the request's precondition does not hold"),
                }),
            ),
            Refusal::InWindow(w) => {
                let what = match (&event.tag, &event.digest) {
                    (Some(t), _) => format!("tag {t}"),
                    (None, Some(d)) => format!("manifest {d}"),
                    _ => "it".to_string(),
                };
                (
                    json!({ "reason": "rollback-window", "window": { "tag": w.tag.as_str(), "position": w.position, "size": w.size } }),
                    Error::InWindow { repo: repo.clone(), what, tag: w.tag, position: w.position, size: w.size },
                )
            }
            Refusal::Referenced { holder, tag } => {
                let target = event.digest.as_deref().and_then(|d| Digest::parse(d).ok());
                let what = if blob { "blob" } else { "manifest" };
                (
                    json!({ "reason": "referenced", "referenced_by": holder.as_str(), "tag": tag.as_ref().map(Tag::as_str) }),
                    match target {
                        Some(target) => Error::Referenced { repo: repo.clone(), what, target, holder, tag },
                        None => Error::internal(anyhow::anyhow!("a reference refusal without a digest")),
                    },
                )
            }
        };
        let event = event.detail(detail);
        let recorded = async {
            let mut tx = self.meta.begin(self.clock.now()).await?;
            tx.append_events(vec![event], self.clock.now()).await?;
            tx.commit().await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(error = %e, "could not ledger a refusal");
        }
        error
    }
}
