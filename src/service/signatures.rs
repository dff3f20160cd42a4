//! Signatures, SBOMs and attestations of a manifest (DESIGN §5): its referrers by kind (by
//! `subject`, and cosign's tag scheme `sha256-<hex>.sig|.att|.sbom`), each signature layer
//! read (at most [`MAX_LAYER_BYTES`]) and verified with `signatures::verify_layer`, and the
//! signature gates (`policy::gates`) asked on tag writes and manifest GETs.
//!
//! Verification results are cached in memory by (referrer digest, subject digest): both
//! name content, and the keys are fixed for the life of the process (a key change is a
//! config change, so a restart), so a cached result never goes stale and a changed key set
//! starts from nothing. Not cached: a result that depended on something missing (a layer
//! not stored, the subject not pushed yet), and one with a notation signature, whose
//! verdict depends on the time (certificate validity, `io.cncf.notary.expiry`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use futures::TryStreamExt as _;
use serde_json::Value;
use serde_json::json;

use super::Registry;
use super::manifests::event;
use crate::audit::EventKind;
use crate::error::Error;
use crate::meta::{Actor, ManifestRecord, Referrer};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::policy::gates::{self, GateRefusal, Gates};
use crate::signatures::{
    self, Keyring, Layer, MAX_LAYER_BYTES, ReferrerKind, SignatureCheck, Subject, classify, document_layer,
    layer_format,
};

/// Cached verification checks kept at most (each result weighs one plus its checks, each
/// check a few hundred bytes); beyond, the least recently and least often used results
/// are evicted one by one.
const MAX_CACHED: u64 = 20_000;
/// Signature layers of one referrer checked at most (cosign appends one per signature).
const MAX_SIGNATURE_LAYERS: usize = 64;
/// Indexes consulted when a pull gate checks whether a signed index lists a manifest.
const MAX_PARENTS: u32 = 16;

/// Verification results by (referrer digest, subject digest).
type CheckCache = moka::sync::Cache<(Digest, Digest), Arc<Vec<SignatureCheck>>>;

/// An empty verification cache holding at most [`MAX_CACHED`] checks.
fn check_cache() -> CheckCache {
    moka::sync::Cache::builder()
        .max_capacity(MAX_CACHED)
        .weigher(|_: &(Digest, Digest), checks: &Arc<Vec<SignatureCheck>>| {
            u32::try_from(checks.len()).unwrap_or(u32::MAX).saturating_add(1)
        })
        .build()
}

/// The trusted keys, the gates, and the verification cache.
pub struct Trust {
    keyring: Keyring,
    gates: Gates,
    checks: CheckCache,
}

impl Default for Trust {
    fn default() -> Trust {
        Trust::new(Keyring::default(), Gates::default())
    }
}

impl Trust {
    /// Trust in `keyring`, guarded by `gates`.
    pub fn new(keyring: Keyring, gates: Gates) -> Trust {
        Trust { keyring, gates, checks: check_cache() }
    }

    /// True when no gate is configured.
    pub fn gates_is_empty(&self) -> bool {
        self.gates.is_empty()
    }
}

/// One referrer of a manifest with its kind, and (for signatures and attestations) the
/// checks of its signature layers.
#[derive(Debug, Clone)]
pub struct KindedReferrer {
    /// Its kind.
    pub kind: ReferrerKind,
    /// The referrer.
    pub referrer: Referrer,
    /// The fallback tag it was found by, if it was found by tag rather than by `subject`.
    pub tag: Option<Tag>,
    /// Its signature layers, checked (empty for SBOMs and others).
    pub checks: Arc<Vec<SignatureCheck>>,
}

/// One SBOM or attestation document: a layer of a referrer.
#[derive(Debug, Clone)]
pub struct Document {
    /// The referrer manifest holding it.
    pub referrer: Digest,
    /// Its artifact type.
    pub artifact_type: Option<String>,
    /// The layer (document) digest.
    pub digest: Digest,
    /// The layer media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// `org.opencontainers.image.created` of the referrer (or the layer), else when it was stored.
    pub created: Option<String>,
    /// When the referrer was stored.
    pub stored_at: Option<std::time::SystemTime>,
    /// The fallback tag it was found by.
    pub tag: Option<Tag>,
    /// For an attestation: the checks of its envelope.
    pub checks: Vec<SignatureCheck>,
}

/// The layers of a manifest as verification reads them, parsed leniently (a `null` or
/// non-string annotation is left out) from the stored JSON.
#[derive(Default)]
struct LayersView {
    layers: Vec<LayerView>,
    annotations: BTreeMap<String, String>,
}

struct LayerView {
    media_type: String,
    digest: String,
    size: i64,
    annotations: BTreeMap<String, String>,
}

fn strings(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|o| o.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn layers_of(m: &ManifestRecord) -> LayersView {
    let Ok(v) = serde_json::from_slice::<Value>(&m.body) else { return LayersView::default() };
    let layers = v
        .get("layers")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| LayerView {
                    media_type: l.get("mediaType").and_then(Value::as_str).unwrap_or("").to_string(),
                    digest: l.get("digest").and_then(Value::as_str).unwrap_or("").to_string(),
                    size: l.get("size").and_then(Value::as_i64).unwrap_or(-1),
                    annotations: strings(l.get("annotations")),
                })
                .collect()
        })
        .unwrap_or_default();
    LayersView { layers, annotations: strings(v.get("annotations")) }
}

/// True when gates let `m` through unsigned (DESIGN §5: signatures, SBOMs and attestations
/// are never gated, or verification could not read them). Decided by content alone, failing
/// closed: a manifest whose every layer (at least one) is a small signature, SBOM or
/// attestation document ([`document_layer`], at most [`MAX_LAYER_BYTES`]) — nothing a
/// container runtime unpacks — or the referrers fallback index (every entry names its
/// `artifactType`). A `subject`, a fallback tag or an `artifactType` alone exempts nothing.
fn exempt(m: &ManifestRecord) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(&m.body) else { return false };
    if crate::oci::media_types::is_index(&m.media_type) {
        let Some(entries) = v.get("manifests").and_then(Value::as_array) else { return false };
        return entries.iter().all(|e| e.get("artifactType").and_then(Value::as_str).is_some_and(|t| !t.is_empty()));
    }
    let Some(layers) = v.get("layers").and_then(Value::as_array) else { return false };
    !layers.is_empty()
        && layers.iter().all(|l| {
            let t = l.get("mediaType").and_then(Value::as_str).unwrap_or("");
            let small = l.get("size").and_then(Value::as_u64).is_some_and(|s| s <= MAX_LAYER_BYTES);
            small && document_layer(m.artifact_type.as_deref(), t)
        })
}

fn kind_of(m: &ManifestRecord, view: &LayersView) -> ReferrerKind {
    let types: Vec<&str> = view.layers.iter().map(|l| l.media_type.as_str()).collect();
    classify(m.artifact_type.as_deref(), m.annotations.as_ref(), &types)
}

impl Registry {
    /// Uses `trust` for verification and gates.
    pub fn with_trust(mut self, trust: Arc<Trust>) -> Registry {
        self.trust = trust;
        self
    }

    /// The referrers of `subject` by kind, signatures and attestations checked: those whose
    /// `subject` is it, then cosign's fallback tags (`<alg>-<hex>.sig`, `.att`, `.sbom`).
    pub async fn kinded_referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<KindedReferrer>, Error> {
        self.referrers_checked(repo, subject, false).await
    }

    /// [`Registry::kinded_referrers`]; with `only_signatures`, the signatures alone (what a
    /// gate asks about: attestations and SBOMs are neither read nor verified).
    async fn referrers_checked(
        &self,
        repo: &RepoName,
        subject: &Digest,
        only_signatures: bool,
    ) -> Result<Vec<KindedReferrer>, Error> {
        let body = match self.manifest(repo, &Reference::Digest(subject.clone())).await {
            Ok(m) => Some(m),
            Err(Error::ManifestUnknown(_)) => None,
            Err(e) => return Err(e),
        };
        let mut found: Vec<(Arc<ManifestRecord>, Option<Tag>, Option<ReferrerKind>)> = Vec::new();
        for r in self.referrers(repo, subject, None).await? {
            found.push((self.manifest(repo, &Reference::Digest(r.digest)).await?, None, None));
        }
        for (suffix, kind) in
            [("sig", ReferrerKind::Signature), ("att", ReferrerKind::Attestation), ("sbom", ReferrerKind::Sbom)]
        {
            if only_signatures && kind != ReferrerKind::Signature {
                continue;
            }
            let Ok(tag) = Tag::parse(&format!("{}-{}.{suffix}", subject.algorithm(), subject.hex())) else { continue };
            match self.manifest(repo, &Reference::Tag(tag.clone())).await {
                Ok(m) => found.push((m, Some(tag), Some(kind))),
                Err(Error::ManifestUnknown(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let mut out = Vec::new();
        for (m, tag, by_tag) in found {
            let view = layers_of(&m);
            let kind = by_tag.unwrap_or_else(|| kind_of(&m, &view));
            if only_signatures && kind != ReferrerKind::Signature {
                continue;
            }
            let checks = match kind {
                ReferrerKind::Signature | ReferrerKind::Attestation => {
                    self.checks_of(repo, &m, &view, subject, body.as_deref().map(|b| &b.body[..])).await?
                }
                _ => Arc::default(),
            };
            out.push(KindedReferrer {
                kind,
                referrer: Referrer {
                    digest: m.digest.clone(),
                    media_type: m.media_type.clone(),
                    size: m.body.len() as u64,
                    artifact_type: m.artifact_type.clone(),
                    annotations: m.annotations.clone(),
                },
                tag,
                checks,
            });
        }
        Ok(out)
    }

    /// The checks of the signature layers of the referrer `m` of `subject`.
    async fn checks_of(
        &self,
        repo: &RepoName,
        m: &ManifestRecord,
        view: &LayersView,
        subject: &Digest,
        subject_body: Option<&[u8]>,
    ) -> Result<Arc<Vec<SignatureCheck>>, Error> {
        let key = (m.digest.clone(), subject.clone());
        if let Some(hit) = self.trust.checks.get(&key) {
            return Ok(hit);
        }
        let mut complete = subject_body.is_some();
        let mut checks = Vec::new();
        // Each blob is read once (cosign's signatures of one image share one payload blob and
        // differ in their annotations); at most MAX_SIGNATURE_LAYERS layers are checked.
        let mut read: HashMap<&str, Option<Vec<u8>>> = HashMap::new();
        let signature_layers =
            view.layers.iter().filter(|l| layer_format(m.artifact_type.as_deref(), &l.media_type).is_some());
        for l in signature_layers.take(MAX_SIGNATURE_LAYERS) {
            if !read.contains_key(l.digest.as_str()) {
                let bytes = self.small_blob(repo, &l.digest, l.size).await?;
                read.insert(l.digest.as_str(), bytes);
            }
            let content = read.get(l.digest.as_str()).and_then(|c| c.as_deref());
            complete &= content.is_some();
            let layer = Layer { media_type: &l.media_type, digest: &l.digest, annotations: &l.annotations, content };
            let subject = Subject { digest: subject, body: subject_body };
            if let Some(c) = signatures::verify_layer(
                &self.trust.keyring,
                m.artifact_type.as_deref(),
                &layer,
                &subject,
                self.clock.now(),
            ) {
                complete &= c.format != signatures::Format::NotationJws;
                checks.push(c);
            }
        }
        let checks = Arc::new(checks);
        if complete {
            self.trust.checks.insert(key, checks.clone());
        }
        Ok(checks)
    }

    /// The bytes of a blob of `repo` of at most [`MAX_LAYER_BYTES`]; `None` when it is not
    /// stored in `repo`, is bigger, or its digest is not one Cairn reads.
    async fn small_blob(&self, repo: &RepoName, digest: &str, declared: i64) -> Result<Option<Vec<u8>>, Error> {
        let Ok(d) = Digest::parse(digest) else { return Ok(None) };
        if declared < 0 || declared as u64 > MAX_LAYER_BYTES {
            return Ok(None);
        }
        let Some(blob) = self.meta.blob(repo, &d).await? else { return Ok(None) };
        if blob.size > MAX_LAYER_BYTES {
            return Ok(None);
        }
        let chunks: Vec<bytes::Bytes> = self.blobs.read(&blob.location, 0..blob.size).await?.try_collect().await?;
        Ok(Some(chunks.concat()))
    }

    /// The names of the trusted keys with a valid approving signature of `digest` in `repo`
    /// (`SignatureCheck::approving_key`: a cosign, notation or sigstore message signature, or
    /// a bundle whose signed statement is cosign's signing predicate; an attestation signed
    /// by the same key approves nothing).
    pub async fn signed_by(&self, repo: &RepoName, digest: &Digest) -> Result<BTreeSet<String>, Error> {
        let mut keys = BTreeSet::new();
        for r in self.referrers_checked(repo, digest, true).await? {
            keys.extend(r.checks.iter().filter_map(|c| c.approving_key()).map(str::to_string));
        }
        Ok(keys)
    }

    /// True when a push gate applies to setting any of `tags` to `m` (it is not exempt).
    pub(super) fn push_gated(&self, repo: &RepoName, tags: &[Tag], m: &ManifestRecord) -> bool {
        tags.iter().any(|t| !self.trust.gates.push_gates(repo, t).is_empty()) && !exempt(m)
    }

    /// The push gates of `tags` set to manifest `m` (DESIGN §5): each tag the write sets must
    /// satisfy every gate matching it. Signatures, SBOMs and attestations themselves are never
    /// gated ([`exempt`], by content). A refusal is ledgered (`write.refuse`, reason
    /// `signature-gate`).
    pub(super) async fn check_push_gates(
        &self,
        repo: &RepoName,
        tags: &[Tag],
        m: &ManifestRecord,
        actor: &Actor,
    ) -> Result<(), Error> {
        if self.trust.gates.is_empty() || exempt(m) {
            return Ok(());
        }
        let digest = &m.digest;
        let mut signed: Option<BTreeSet<String>> = None;
        for tag in tags {
            let gates = self.trust.gates.push_gates(repo, tag);
            if gates.is_empty() {
                continue;
            }
            if signed.is_none() {
                signed = Some(self.signed_by(repo, digest).await?);
            }
            let Some(by) = signed.as_ref() else { continue };
            if let Err(refusal) = gates::decide(&gates, by) {
                let message = push_refusal_message(repo, tag, digest, &refusal);
                let e = event(EventKind::WriteRefuse, actor, repo).tag(tag.as_str()).digest(digest.as_str()).detail(
                    json!({
                        "reason": "signature-gate",
                        "gate": refusal.gate,
                        "keys": refusal.keys,
                        "signed_by": refusal.signed_by,
                    }),
                );
                self.ledger_refusal(e).await;
                return Err(Error::Unsigned {
                    message,
                    gate: refusal.gate,
                    keys: refusal.keys,
                    digest: digest.clone(),
                });
            }
        }
        Ok(())
    }

    /// The pull gates of a GET of manifest `m` (DESIGN §5): a manifest of a pull-gated
    /// repository is served only when it, or an index of the repository that lists it,
    /// satisfies every gate. Signatures, SBOMs and attestations are never gated ([`exempt`],
    /// by content). A refusal is counted as a `request.deny` of the client (one event per
    /// client, see `service/audit.rs`).
    pub async fn check_pull_gates(&self, repo: &RepoName, m: &ManifestRecord, actor: &Actor) -> Result<(), Error> {
        let gates = self.trust.gates.pull_gates(repo);
        if gates.is_empty() {
            return Ok(());
        }
        if exempt(m) {
            return Ok(());
        }
        let by = self.signed_by(repo, &m.digest).await?;
        let Err(refusal) = gates::decide(&gates, &by) else { return Ok(()) };
        for parent in self.meta.parents(repo, &m.digest, MAX_PARENTS).await? {
            if gates::decide(&gates, &self.signed_by(repo, &parent).await?).is_ok() {
                return Ok(());
            }
        }
        let message = format!(
            "pulls of {repo} need a valid signature (signature gate {}): {} has none by {}; sign it (for example \
             `cosign sign --key <key> {repo}@{}`) or ask an admin which key the gate trusts. HEAD stays open for \
             signing tools",
            refusal.gate,
            m.digest,
            key_list(&refusal.keys),
            m.digest
        );
        self.count_denial(
            EventKind::RequestDeny,
            &actor.name,
            actor.address.as_deref().unwrap_or(""),
            repo.as_str(),
            &format!("signature gate {}: {} is not signed by {}", refusal.gate, m.digest, key_list(&refusal.keys)),
        );
        Err(Error::Unsigned { message, gate: refusal.gate, keys: refusal.keys, digest: m.digest.clone() })
    }

    /// The SBOMs (`kind` Sbom) or attestations of `subject`: every layer of each such referrer.
    pub async fn documents(
        &self,
        repo: &RepoName,
        subject: &Digest,
        kind: ReferrerKind,
    ) -> Result<Vec<Document>, Error> {
        let mut out = Vec::new();
        for r in self.kinded_referrers(repo, subject).await? {
            if r.kind != kind {
                continue;
            }
            let m = self.manifest(repo, &Reference::Digest(r.referrer.digest.clone())).await?;
            let view = layers_of(&m);
            let stored_at = self.meta.manifest_stored_at(repo, &m.digest).await?;
            let created_of = |a: &BTreeMap<String, String>| a.get("org.opencontainers.image.created").cloned();
            for l in &view.layers {
                let Ok(digest) = Digest::parse(&l.digest) else { continue };
                out.push(Document {
                    referrer: m.digest.clone(),
                    artifact_type: m.artifact_type.clone(),
                    digest,
                    media_type: l.media_type.clone(),
                    size: l.size.max(0) as u64,
                    created: created_of(&view.annotations).or_else(|| created_of(&l.annotations)),
                    stored_at,
                    tag: r.tag.clone(),
                    checks: r.checks.iter().filter(|c| c.layer == l.digest).cloned().collect(),
                });
            }
        }
        Ok(out)
    }

    /// The document `digest` among the SBOMs or attestations of `subject`, for streaming:
    /// its blob, media type and size. 404 (`BLOB_UNKNOWN`) when no such referrer layer.
    pub async fn document(
        &self,
        repo: &RepoName,
        subject: &Digest,
        kind: ReferrerKind,
        digest: &Digest,
    ) -> Result<(Document, super::ByteStream), Error> {
        let doc = self
            .documents(repo, subject, kind)
            .await?
            .into_iter()
            .find(|d| &d.digest == digest)
            .ok_or_else(|| Error::BlobUnknown(format!("{digest} (no such document of {subject})")))?;
        let blob = self.meta.blob(repo, digest).await?.ok_or_else(|| Error::BlobUnknown(digest.to_string()))?;
        // The stored size, not the one the referrer declares.
        let doc = Document { size: blob.size, ..doc };
        let stream = self.blobs.read(&blob.location, 0..blob.size).await?.map_err(std::io::Error::other);
        Ok((doc, Box::pin(stream)))
    }

    /// Ledgers a refusal in a transaction of its own.
    async fn ledger_refusal(&self, e: crate::audit::NewEvent) {
        let recorded = async {
            let mut tx = self.meta.begin(self.clock.now()).await?;
            tx.append_events(vec![e], self.clock.now()).await?;
            tx.commit().await
        };
        if let Err(e) = recorded.await {
            tracing::warn!(error = %e, "could not ledger a refusal");
        }
    }
}

fn key_list(keys: &[String]) -> String {
    match keys {
        [one] => format!("key {one}"),
        many => format!("any of the keys {}", many.join(", ")),
    }
}

fn push_refusal_message(repo: &RepoName, tag: &Tag, digest: &Digest, r: &GateRefusal) -> String {
    let signed = if r.signed_by.is_empty() {
        "it has no valid signature".to_string()
    } else {
        format!("it is signed only by {}", r.signed_by.join(", "))
    };
    format!(
        "tag {repo}:{tag} needs a valid signature by {} (signature gate {}), and {digest} has none: {signed}. Push \
         by digest, sign it (for example `cosign sign --key <key> {repo}@{digest}`), then push the tag again",
        key_list(&r.keys),
        r.gate
    )
}
