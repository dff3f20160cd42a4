//! Retention decisions (DESIGN §6 "Precise meanings"): given one repository's state and `now`,
//! which tags and manifests stay and which go, each with every reason in words. Pure: the
//! service reads the state (`meta`), calls [`plan`], and deletes what it says (re-checking each
//! deletion against a fresh state, see `service/retention.rs`). Same state, same plan.
//!
//! The rules, as applied here:
//! - Tags. Referrer fallback tags (`sha256-<hex>[.sig|.att|.sbom]`) never count; they follow
//!   their subject. Every other tag is kept when any of these keeps it: its own rollback
//!   window (a mutable tag, while `rollback_window > 0`: its current digest is 1 of N); one of
//!   the last N releases (immutable tags, newest first by the time last set); `keep_last`
//!   (newest first by the time last set); `keep_within`; `keep_tags`; `keep_pulled_within`
//!   (its manifest was pulled). A policy with no tag rule keeps every tag.
//! - Manifests. Kept when a kept tag points at it; when it is in the rollback window of a
//!   kept mutable tag (the last N distinct digests the tag pointed to); when it was pulled
//!   within `keep_pulled_within`; when a kept index lists it; when it refers to (has as
//!   `subject`) a kept manifest. A manifest with no tag, no index listing it and no stored
//!   subject is "untagged": `untagged_grace` runs from when it lost its last tag (or from its
//!   push); without `untagged_grace` it is kept. Otherwise it goes with its tags, its indexes
//!   or its subject. A manifest goes only with every tag on it.

mod config;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use utoipa::ToSchema;

pub use config::{DEFAULT_ROLLBACK_WINDOW, Policy, PolicyConfig, RetentionConfig, RetentionPolicy};

use super::immutability::is_referrer_tag;
use crate::oci::{Digest, Tag};

/// One tag as retention sees it.
#[derive(Debug, Clone)]
pub struct TagState {
    /// The tag.
    pub tag: Tag,
    /// Where it points.
    pub digest: Digest,
    /// When it was last set (pushed or moved).
    pub set_at: SystemTime,
    /// True when the immutability rules make it immutable: a "release".
    pub immutable: bool,
    /// Every digest it pointed to, newest first (the current one first); repeats allowed.
    pub history: Vec<Digest>,
}

/// One stored manifest as retention sees it.
#[derive(Debug, Clone)]
pub struct ManifestState {
    /// Its digest.
    pub digest: Digest,
    /// When it was pushed to the repository.
    pub pushed_at: SystemTime,
    /// When a tag last moved away from it or was deleted from it; `None` if never.
    pub lost_tag_at: Option<SystemTime>,
    /// Its body size.
    pub size: u64,
    /// Manifests it lists (an index).
    pub children: Vec<Digest>,
    /// The manifest it refers to (a signature, SBOM, attestation).
    pub subject: Option<Digest>,
    /// Blobs it uses, with their sizes.
    pub blobs: Vec<(Digest, u64)>,
    /// Its last pull, if counted.
    pub last_pulled: Option<SystemTime>,
}

/// A repository's state.
#[derive(Debug, Clone, Default)]
pub struct RepoState {
    /// Its tags.
    pub tags: Vec<TagState>,
    /// Its manifests.
    pub manifests: Vec<ManifestState>,
}

/// Keep or delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    /// It stays.
    Keep,
    /// Retention deletes it.
    Delete,
}

/// The decision about one tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TagEntry {
    /// The tag.
    #[schema(example = "v1.4.2")]
    pub tag: String,
    /// Where it points.
    pub digest: String,
    /// Keep or delete.
    pub decision: Decision,
    /// Every reason, each starting with `kept:` or `delete:`.
    #[schema(example = json!(["delete: not among the last 10 pushed", "delete: pushed 2026-01-02, older than 90d"]))]
    pub reasons: Vec<String>,
}

/// The decision about one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ManifestEntry {
    /// Its digest.
    pub digest: String,
    /// Its body size in bytes.
    pub size: u64,
    /// Keep or delete.
    pub decision: Decision,
    /// Every reason, each starting with `kept:` or `delete:`.
    #[schema(example = json!(["kept: rollback window of prod, 2 of 3"]))]
    pub reasons: Vec<String>,
}

/// Counts of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlanSummary {
    /// Tags kept.
    pub tags_kept: u64,
    /// Tags to delete.
    pub tags_deleted: u64,
    /// Manifests kept.
    pub manifests_kept: u64,
    /// Manifests to delete.
    pub manifests_deleted: u64,
    /// Bytes the deleted manifests hold in the repository: their bodies and the blobs no kept
    /// manifest of the repository uses (each counted once). GC frees the blobs' bytes later,
    /// when no other repository links them.
    pub bytes: u64,
}

impl PlanSummary {
    /// Adds another summary's counts.
    pub fn add(&mut self, o: &PlanSummary) {
        self.tags_kept += o.tags_kept;
        self.tags_deleted += o.tags_deleted;
        self.manifests_kept += o.manifests_kept;
        self.manifests_deleted += o.manifests_deleted;
        self.bytes += o.bytes;
    }
}

/// The plan for one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct RepoPlan {
    /// The repository.
    #[schema(example = "apps/web")]
    pub repository: String,
    /// The policy that matched: its name or `#<position>`.
    pub policy: String,
    /// Every tag, by name.
    pub tags: Vec<TagEntry>,
    /// Every manifest, by digest.
    pub manifests: Vec<ManifestEntry>,
    /// Counts and bytes.
    pub summary: PlanSummary,
}

/// A day as `2026-11-20` (UTC).
pub fn day(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// A duration as the config writes it: `30d`, `12h`, `15m` or `40s`.
pub fn span(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{}ms", d.as_millis()),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The digest a referrer fallback tag names (`sha256-<hex>[.sig|.att|.sbom]` -> `sha256:<hex>`).
pub fn referrer_tag_subject(tag: &str) -> Option<Digest> {
    if !is_referrer_tag(tag) {
        return None;
    }
    let hex = tag.strip_prefix("sha256-")?.get(..64)?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// The rollback window of a tag: the last `n` distinct digests it pointed to, newest first
/// (position 1 is the current one).
pub fn window(history: &[Digest], n: u32) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::new();
    for d in history {
        if out.len() >= n as usize {
            break;
        }
        if !out.contains(d) {
            out.push(d.clone());
        }
    }
    out
}

/// Where a digest is inside a rollback window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowHit {
    /// The mutable tag whose window it is.
    pub tag: Tag,
    /// 1-based position (1 is the tag's current digest).
    pub position: usize,
    /// The window's size.
    pub size: u32,
}

/// The rollback windows of every mutable, non-referrer tag: digest -> where it is, in tag
/// order. Empty when `n` is 0.
pub fn windows(tags: &[TagState], n: u32) -> BTreeMap<Digest, Vec<WindowHit>> {
    let mut out: BTreeMap<Digest, Vec<WindowHit>> = BTreeMap::new();
    if n == 0 {
        return out;
    }
    let mut sorted: Vec<&TagState> = tags.iter().filter(|t| !t.immutable && !is_referrer_tag(t.tag.as_str())).collect();
    sorted.sort_by(|a, b| a.tag.cmp(&b.tag));
    for t in sorted {
        for (i, d) in window(&t.history, n).into_iter().enumerate() {
            out.entry(d).or_default().push(WindowHit { tag: t.tag.clone(), position: i + 1, size: n });
        }
    }
    out
}

fn within(at: SystemTime, d: Duration, now: SystemTime) -> bool {
    at + d >= now
}

/// Decides every tag and manifest of one repository under `policy` at `now`.
pub fn plan(policy: &Policy, repository: &str, state: &RepoState, now: SystemTime) -> RepoPlan {
    let mut tags: Vec<&TagState> = state.tags.iter().collect();
    tags.sort_by(|a, b| a.tag.cmp(&b.tag));
    let mut manifests: Vec<&ManifestState> = state.manifests.iter().collect();
    manifests.sort_by(|a, b| a.digest.cmp(&b.digest));
    let index: HashMap<&Digest, usize> = manifests.iter().enumerate().map(|(i, m)| (&m.digest, i)).collect();
    let n = policy.rollback_window;

    // Newest first by the time last set; ties by name.
    let newest_first = |list: &mut Vec<&TagState>| list.sort_by(|a, b| b.set_at.cmp(&a.set_at).then(a.tag.cmp(&b.tag)));
    let mut ordinary: Vec<&TagState> = tags.iter().copied().filter(|t| !is_referrer_tag(t.tag.as_str())).collect();
    newest_first(&mut ordinary);
    let rank: HashMap<&Tag, usize> = ordinary.iter().enumerate().map(|(i, t)| (&t.tag, i)).collect();
    let releases: HashMap<&Tag, usize> =
        ordinary.iter().filter(|t| t.immutable).enumerate().map(|(i, t)| (&t.tag, i)).collect();
    let pulled = |d: &Digest| index.get(d).and_then(|&i| manifests[i].last_pulled);

    // 1. Ordinary tags, by the rules.
    let mut tag_keep: BTreeMap<&Tag, Vec<String>> = BTreeMap::new();
    let mut tag_delete: BTreeMap<&Tag, Vec<String>> = BTreeMap::new();
    for t in &ordinary {
        let (mut keep, mut del) = (Vec::new(), Vec::new());
        if n > 0 && !t.immutable {
            keep.push(format!("kept: rollback window of {}, 1 of {n}", t.tag));
        }
        if let Some(&r) = releases.get(&t.tag)
            && r < n as usize
        {
            keep.push(format!("kept: one of the last {n} releases, {} of {n}", r + 1));
        }
        if let Some(k) = policy.keep_last {
            let r = rank[&t.tag];
            if r < k as usize {
                keep.push(format!("kept: among the last {k} pushed, {} of {k}", r + 1));
            } else {
                del.push(format!("delete: not among the last {k} pushed"));
            }
        }
        if let Some(d) = policy.keep_within {
            if within(t.set_at, d, now) {
                keep.push(format!("kept: pushed {}, within {}", day(t.set_at), span(d)));
            } else {
                del.push(format!("delete: pushed {}, older than {}", day(t.set_at), span(d)));
            }
        }
        match policy.keep_tag_glob(t.tag.as_str()) {
            Some(g) => keep.push(format!("kept: matches keep_tags {g:?}")),
            None if policy.has_keep_tags() => del.push("delete: matches no keep_tags glob".to_string()),
            None => {}
        }
        if let Some(d) = policy.keep_pulled_within {
            match pulled(&t.digest) {
                Some(p) if within(p, d, now) => keep.push(format!("kept: pulled {}, within {}", day(p), span(d))),
                Some(p) => del.push(format!("delete: last pulled {}, not within {}", day(p), span(d))),
                None => del.push(format!("delete: never pulled, not within {}", span(d))),
            }
        }
        if !policy.has_tag_rules() {
            keep.push(
                "kept: the policy has no tag rule (keep_last, keep_within, keep_tags, keep_pulled_within)".into(),
            );
        }
        if keep.is_empty() {
            tag_delete.insert(&t.tag, del);
        } else {
            tag_keep.insert(&t.tag, keep);
        }
    }

    // 2. Manifests: root reasons, then what kept manifests keep (fixpoint).
    let tags_on: BTreeMap<&Digest, Vec<&TagState>> = tags.iter().fold(BTreeMap::new(), |mut m, t| {
        m.entry(&t.digest).or_insert_with(Vec::new).push(*t);
        m
    });
    let mut listed_by: HashMap<&Digest, Vec<usize>> = HashMap::new();
    let mut referrers: HashMap<&Digest, Vec<usize>> = HashMap::new();
    for (i, m) in manifests.iter().enumerate() {
        for c in &m.children {
            if index.contains_key(c) {
                listed_by.entry(c).or_default().push(i);
            }
        }
        if let Some(s) = m.subject.as_ref().filter(|s| index.contains_key(s)) {
            referrers.entry(s).or_default().push(i);
        }
    }
    let mut ref_tags_of: HashMap<Digest, Vec<&TagState>> = HashMap::new();
    for t in &tags {
        if let Some(s) = referrer_tag_subject(t.tag.as_str()) {
            if index.contains_key(&s) {
                ref_tags_of.entry(s).or_default().push(*t);
            } else {
                tag_keep
                    .insert(&t.tag, vec![format!("kept: referrer tag whose subject {s} is not in this repository")]);
            }
        }
    }
    let kept_mutable: Vec<TagState> =
        tags.iter().filter(|t| tag_keep.contains_key(&t.tag)).map(|t| (*t).clone()).collect();
    let wins = windows(&kept_mutable, n);

    let mut keep: Vec<Vec<String>> = vec![Vec::new(); manifests.len()];
    let mut untagged_delete: Vec<Option<String>> = vec![None; manifests.len()];
    for (i, m) in manifests.iter().enumerate() {
        let on = tags_on.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]);
        for t in on {
            if tag_keep.contains_key(&t.tag) {
                keep[i].push(format!("kept: tagged {}", t.tag));
            }
        }
        for w in wins.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]) {
            keep[i].push(format!("kept: rollback window of {}, {} of {}", w.tag, w.position, w.size));
        }
        let referrer = m.subject.as_ref().is_some_and(|s| index.contains_key(s));
        if !referrer
            && let (Some(d), Some(p)) = (policy.keep_pulled_within, m.last_pulled)
            && within(p, d, now)
        {
            keep[i].push(format!("kept: pulled {}, within {}", day(p), span(d)));
        }
        let untagged = on.is_empty() && !listed_by.contains_key(&m.digest) && !referrer;
        if untagged {
            let since = m.lost_tag_at.unwrap_or(m.pushed_at);
            match policy.untagged_grace {
                None => keep[i].push("kept: untagged, and the policy sets no untagged_grace".into()),
                Some(g) if within(since, g, now) => {
                    keep[i].push(format!("kept: untagged since {}, within untagged_grace {}", day(since), span(g)))
                }
                Some(g) => {
                    untagged_delete[i] =
                        Some(format!("delete: untagged since {}, longer than untagged_grace {}", day(since), span(g)))
                }
            }
        }
    }
    let mut queue: VecDeque<usize> = (0..manifests.len()).filter(|&i| !keep[i].is_empty()).collect();
    let mut kept: Vec<bool> = keep.iter().map(|k| !k.is_empty()).collect();
    while let Some(i) = queue.pop_front() {
        let m = manifests[i];
        let mut reached: Vec<(usize, String)> = Vec::new();
        for c in &m.children {
            if let Some(&j) = index.get(c) {
                reached.push((j, format!("kept: listed by index {}, which is kept", m.digest)));
            }
        }
        for &j in referrers.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]) {
            reached.push((j, format!("kept: referrer of {}, which is kept", m.digest)));
        }
        for t in ref_tags_of.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]) {
            tag_keep
                .entry(&t.tag)
                .or_insert_with(|| vec![format!("kept: referrer tag of {}, which is kept", m.digest)]);
            if let Some(&j) = index.get(&t.digest) {
                reached.push((j, format!("kept: tagged {}", t.tag)));
            }
        }
        for (j, why) in reached {
            if !keep[j].contains(&why) {
                keep[j].push(why);
            }
            if !kept[j] {
                kept[j] = true;
                queue.push_back(j);
            }
        }
    }
    for t in &tags {
        if let Some(s) = referrer_tag_subject(t.tag.as_str())
            && !tag_keep.contains_key(&t.tag)
        {
            tag_delete.insert(&t.tag, vec![format!("delete: referrer tag of {s}, which is deleted")]);
        }
    }

    // 3. Entries, and why each deleted manifest goes.
    let mut summary = PlanSummary::default();
    let tag_entries: Vec<TagEntry> = tags
        .iter()
        .map(|t| {
            let (decision, reasons) = match tag_keep.get(&t.tag) {
                Some(k) => (Decision::Keep, k.clone()),
                None => (Decision::Delete, tag_delete.get(&t.tag).cloned().unwrap_or_default()),
            };
            match decision {
                Decision::Keep => summary.tags_kept += 1,
                Decision::Delete => summary.tags_deleted += 1,
            }
            TagEntry { tag: t.tag.to_string(), digest: t.digest.to_string(), decision, reasons }
        })
        .collect();
    let mut manifest_entries = Vec::with_capacity(manifests.len());
    for (i, m) in manifests.iter().enumerate() {
        if kept[i] {
            summary.manifests_kept += 1;
            manifest_entries.push(ManifestEntry {
                digest: m.digest.to_string(),
                size: m.size,
                decision: Decision::Keep,
                reasons: keep[i].clone(),
            });
            continue;
        }
        summary.manifests_deleted += 1;
        let mut why = Vec::new();
        for t in tags_on.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]) {
            why.push(format!("delete: its tag {} is deleted", t.tag));
        }
        for &j in listed_by.get(&m.digest).map(Vec::as_slice).unwrap_or(&[]) {
            why.push(format!("delete: listed only by index {}, which is deleted", manifests[j].digest));
        }
        if let Some(s) = m.subject.as_ref().filter(|s| index.contains_key(s)) {
            why.push(format!("delete: referrer of {s}, which is deleted"));
        }
        why.extend(untagged_delete[i].take());
        if let (Some(d), false) = (policy.keep_pulled_within, m.subject.as_ref().is_some_and(|s| index.contains_key(s)))
        {
            match m.last_pulled {
                Some(p) => why.push(format!("delete: last pulled {}, not within {}", day(p), span(d))),
                None => why.push(format!("delete: never pulled, not within {}", span(d))),
            }
        }
        manifest_entries.push(ManifestEntry {
            digest: m.digest.to_string(),
            size: m.size,
            decision: Decision::Delete,
            reasons: why,
        });
    }
    let deleted: BTreeSet<&Digest> =
        manifests.iter().zip(&kept).filter(|(_, k)| !**k).map(|(m, _)| &m.digest).collect();
    summary.bytes = freed_bytes(state, &deleted);
    RepoPlan {
        repository: repository.to_string(),
        policy: policy.label.clone(),
        tags: tag_entries,
        manifests: manifest_entries,
        summary,
    }
}

/// Bytes the `deleted` manifests hold in the repository: their bodies, plus each blob they use
/// that no other manifest of the repository uses (counted once).
pub fn freed_bytes(state: &RepoState, deleted: &BTreeSet<&Digest>) -> u64 {
    let mut still_used: BTreeSet<&Digest> = BTreeSet::new();
    let mut freed: BTreeMap<&Digest, u64> = BTreeMap::new();
    let mut bytes = 0;
    for m in &state.manifests {
        if deleted.contains(&m.digest) {
            bytes += m.size;
            for (b, size) in &m.blobs {
                freed.insert(b, *size);
            }
        } else {
            still_used.extend(m.blobs.iter().map(|(b, _)| b));
        }
    }
    bytes + freed.iter().filter(|(b, _)| !still_used.contains(*b)).map(|(_, s)| s).sum::<u64>()
}

#[cfg(test)]
mod tests;
