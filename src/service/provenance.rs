//! Provenance (DESIGN §7): the whole story of one manifest in one answer — what it is (media
//! type, size, config labels read from its config blob), which tags point at it and which
//! did, who pushed it and when, its referrers by kind, its pulls and the ledger events that
//! concern it. Also the repository summaries of `/api/v1/repositories`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use futures::TryStreamExt as _;
use serde::Deserialize;

use super::Registry;
use super::signatures::KindedReferrer;
use crate::audit::{Event, EventKind};
use crate::error::Error;
use crate::meta::{Actor, DigestTagEvent, EventFilter, PullStats, RepositorySummary, StorageTotals};
use crate::oci::{Digest, Reference, RepoName, Tag};

/// The largest config blob read for its labels; a bigger one is reported, not read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// At most this many ledger events (and tag history entries) in one provenance answer.
pub const MAX_EVENTS: u32 = 500;

/// The config media types whose JSON has `config.Labels`, `created`, `os` and `architecture`.
const IMAGE_CONFIG_TYPES: [&str; 2] =
    ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

/// What the config blob of an image says.
#[derive(Debug, Clone, Default)]
pub struct ConfigInfo {
    /// The config blob's digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: u64,
    /// `created`.
    pub created: Option<String>,
    /// `os`.
    pub os: Option<String>,
    /// `architecture`.
    pub architecture: Option<String>,
    /// `config.Labels`, every one.
    pub labels: BTreeMap<String, String>,
    /// Why the labels could not be read, when they could not.
    pub note: Option<String>,
}

/// A manifest an index lists.
#[derive(Debug, Clone)]
pub struct IndexChild {
    /// Its digest.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size.
    pub size: i64,
    /// `platform.os/platform.architecture[/variant]`, when given.
    pub platform: Option<String>,
}

/// Who pushed a manifest, and when.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// When it was pushed: the time of its `manifest.put` event, else when it was stored.
    pub at: SystemTime,
    /// Who, from the `manifest.put` event (`None` when that event was archived away).
    pub actor: Option<Actor>,
    /// The seq of that event.
    pub seq: Option<i64>,
}

/// The whole story of one manifest.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The repository.
    pub repository: RepoName,
    /// The manifest digest.
    pub digest: Digest,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
    /// Manifest plus config and layers as the manifest declares them (image manifests).
    pub total_size: Option<u64>,
    /// `artifactType` (or the config media type).
    pub artifact_type: Option<String>,
    /// The manifest it refers to.
    pub subject: Option<Digest>,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
    /// The config blob's content, for image manifests.
    pub config: Option<ConfigInfo>,
    /// The manifests an index lists.
    pub children: Vec<IndexChild>,
    /// Tags that point at it now, with when each was set.
    pub tags: Vec<(Tag, SystemTime)>,
    /// Every tag create, move and delete to or from it, oldest first.
    pub tag_history: Vec<DigestTagEvent>,
    /// Who pushed it.
    pub pushed: Option<Pushed>,
    /// Its referrers.
    pub referrers: Vec<KindedReferrer>,
    /// Its pulls, as last flushed.
    pub pulls: Option<PullStats>,
    /// Ledger events of this repository whose digest or previous digest is this one, in seq
    /// order.
    pub events: Vec<Event>,
    /// False when more events exist than `events` holds.
    pub events_complete: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestView {
    config: Option<DescriptorView>,
    #[serde(default)]
    layers: Vec<DescriptorView>,
    #[serde(default)]
    manifests: Vec<DescriptorView>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorView {
    media_type: String,
    digest: String,
    size: i64,
    platform: Option<PlatformView>,
}

#[derive(Deserialize)]
struct PlatformView {
    os: Option<String>,
    architecture: Option<String>,
    variant: Option<String>,
}

#[derive(Deserialize, Default)]
struct ImageConfigView {
    created: Option<String>,
    os: Option<String>,
    architecture: Option<String>,
    config: Option<ContainerConfigView>,
}

#[derive(Deserialize, Default)]
struct ContainerConfigView {
    #[serde(rename = "Labels")]
    labels: Option<BTreeMap<String, String>>,
}

impl Registry {
    /// Repositories after `after` for which `visible` holds, sorted by name; the second value
    /// is true when more follow.
    pub async fn repository_summaries(
        &self,
        after: Option<&str>,
        limit: u32,
        visible: impl Fn(&str) -> bool,
    ) -> Result<(Vec<RepositorySummary>, bool), Error> {
        let mut items = Vec::new();
        let mut cursor = after.map(str::to_string);
        loop {
            let batch = self.meta.repository_summaries(cursor.as_deref(), limit + 1).await?;
            let exhausted = batch.len() <= limit as usize;
            cursor = batch.last().map(|s| s.name.clone());
            items.extend(batch.into_iter().filter(|s| visible(&s.name)));
            if exhausted || items.len() > limit as usize {
                break;
            }
        }
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        Ok((items, more))
    }

    /// The whole registry's storage figures (each blob once, every manifest row).
    pub async fn storage_totals(&self) -> Result<StorageTotals, Error> {
        Ok(self.meta.storage_totals().await?)
    }

    /// The ledger head `(seq, hash)`, or `None` before the first event.
    pub async fn ledger_head(&self) -> Result<Option<(i64, String)>, Error> {
        Ok(self.meta.ledger_head().await?)
    }

    /// The provenance of the manifest `digest` in `repo`.
    pub async fn provenance(&self, repo: &RepoName, digest: &Digest) -> Result<Provenance, Error> {
        let m = self.manifest(repo, &Reference::Digest(digest.clone())).await?;
        let view: Option<ManifestView> = serde_json::from_slice(&m.body).ok();
        let (config, total_size, children) = match &view {
            Some(v) => {
                let config = match &v.config {
                    Some(c) => Some(self.read_config(repo, c).await?),
                    None => None,
                };
                let total = v.config.as_ref().map(|c| {
                    m.body.len() as u64
                        + c.size.max(0) as u64
                        + v.layers.iter().map(|l| l.size.max(0) as u64).sum::<u64>()
                });
                let children = v
                    .manifests
                    .iter()
                    .map(|c| IndexChild {
                        digest: c.digest.clone(),
                        media_type: c.media_type.clone(),
                        size: c.size,
                        platform: c.platform.as_ref().and_then(|p| {
                            let (os, arch) = (p.os.as_deref()?, p.architecture.as_deref()?);
                            Some(match &p.variant {
                                Some(v) => format!("{os}/{arch}/{v}"),
                                None => format!("{os}/{arch}"),
                            })
                        }),
                    })
                    .collect();
                (config, total, children)
            }
            None => (None, None, vec![]),
        };
        let tags = self.meta.tags_pointing_at(repo, digest).await?;
        let tag_history = self.meta.digest_tag_history(repo, digest, MAX_EVENTS).await?;
        let filter =
            EventFilter { repository: Some(repo.to_string()), digest: Some(digest.to_string()), ..Default::default() };
        let mut events = self.meta.events(&filter, MAX_EVENTS + 1).await?;
        let events_complete = events.len() <= MAX_EVENTS as usize;
        events.truncate(MAX_EVENTS as usize);
        let pushed = self.pushed(repo, digest, &events, events_complete).await?;
        let referrers = self.kinded_referrers(repo, digest).await?;
        let pulls = self.meta.pulls(repo, digest).await?;
        Ok(Provenance {
            repository: repo.clone(),
            digest: digest.clone(),
            media_type: m.media_type.clone(),
            size: m.body.len() as u64,
            total_size,
            artifact_type: m.artifact_type.clone(),
            subject: m.subject.clone(),
            annotations: m.annotations.clone().unwrap_or_default(),
            config,
            children,
            tags,
            tag_history,
            pushed,
            referrers,
            pulls,
            events,
            events_complete,
        })
    }

    /// The latest `manifest.put` of `digest` (a manifest deleted and pushed again was pushed
    /// by the second pusher), and when the manifest was stored.
    async fn pushed(
        &self,
        repo: &RepoName,
        digest: &Digest,
        events: &[Event],
        complete: bool,
    ) -> Result<Option<Pushed>, Error> {
        let Some(at) = self.meta.manifest_stored_at(repo, digest).await? else { return Ok(None) };
        let put = EventKind::ManifestPut.as_str();
        let mut last =
            events.iter().rev().find(|e| e.action == put && e.digest.as_deref() == Some(digest.as_str())).cloned();
        if !complete {
            let filter = EventFilter {
                repository: Some(repo.to_string()),
                digest: Some(digest.to_string()),
                action: Some(put.to_string()),
                ..Default::default()
            };
            last = self.meta.events(&filter, MAX_EVENTS).await?.pop().or(last);
        }
        // The event's time is when the push was ledgered; the row's, when it was stored (the
        // same transaction, a few milliseconds apart). The event's wins, so both agree.
        let ledgered = last.as_ref().and_then(|e| {
            time::OffsetDateTime::parse(&e.time, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(SystemTime::from)
        });
        Ok(Some(Pushed {
            at: ledgered.unwrap_or(at),
            actor: last.as_ref().map(|e| Actor { name: e.actor.clone(), address: e.address.clone() }),
            seq: last.map(|e| e.seq),
        }))
    }

    /// Reads an image config blob (at most [`MAX_CONFIG_BYTES`]) for its labels.
    async fn read_config(&self, repo: &RepoName, c: &DescriptorView) -> Result<ConfigInfo, Error> {
        let mut info = ConfigInfo {
            digest: c.digest.clone(),
            media_type: c.media_type.clone(),
            size: c.size.max(0) as u64,
            ..Default::default()
        };
        if !IMAGE_CONFIG_TYPES.contains(&c.media_type.as_str()) {
            info.note = Some(format!("the config media type {} is not an image config; no labels", c.media_type));
            return Ok(info);
        }
        let Ok(d) = Digest::parse(&c.digest) else {
            info.note = Some("the config digest is not one Cairn can read".into());
            return Ok(info);
        };
        let Some(blob) = self.meta.blob(repo, &d).await? else {
            info.note = Some("the config blob is not in this repository".into());
            return Ok(info);
        };
        if blob.size > MAX_CONFIG_BYTES {
            info.note = Some(format!(
                "the config blob has {} bytes, over the {MAX_CONFIG_BYTES}-byte limit read for labels",
                blob.size
            ));
            return Ok(info);
        }
        let chunks: Vec<bytes::Bytes> = self.blobs.read(&blob.location, 0..blob.size).await?.try_collect().await?;
        let bytes = chunks.concat();
        match serde_json::from_slice::<ImageConfigView>(&bytes) {
            Ok(v) => {
                info.created = v.created;
                info.os = v.os;
                info.architecture = v.architecture;
                info.labels = v.config.and_then(|c| c.labels).unwrap_or_default();
            }
            Err(e) => info.note = Some(format!("the config blob is not an image config: {e}")),
        }
        Ok(info)
    }
}
