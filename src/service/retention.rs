//! Retention (DESIGN §6): plan and apply the `[retention]` policies, the rollback-window check of
//! a manual delete, and rollback of a mutable tag.
//!
//! - Plan: for every repository a policy matches, a consistent snapshot (`meta`) becomes a
//!   `RepoState` (immutability decides which tags are releases) and `policy::retention::plan`
//!   decides. Repositories no policy matches keep everything and are only listed.
//! - Apply: carries out the plan's deletions, never more. Deletions run in batches; each batch is
//!   one write transaction that re-reads the repository under the lock, plans again, and deletes
//!   only what both plans delete, a tag only if it still points where it did (a tag moved or
//!   pushed since planning is kept, as is a manifest that gained a tag or an index). Tags go
//!   through `remove_tag` (tag history) and manifests through `remove_manifest`, as a manual
//!   DELETE does; blobs are left for GC. Each deletion is a `retention.delete` event in the same
//!   transaction. An interrupted apply leaves whole batches; the next run finishes the job.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use super::Registry;
use super::manifests::event;
use crate::audit::EventKind;
use crate::error::Error;
use crate::meta::{Actor, RefKind, RetentionSnapshot};
use crate::oci::{Digest, Reference, RepoName, Tag};
use crate::policy::Mode;
use crate::policy::retention::{
    self, Decision, ManifestState, PlanSummary, Policy, RepoPlan, RepoState, RetentionPolicy, TagState, WindowHit,
};
use crate::policy::writes::{self, RollbackTarget};

/// Deletions per transaction.
const BATCH: usize = 200;
/// Repositories read per listing page.
const PAGE: u32 = 1000;

/// A retention plan over the registry.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Plan {
    /// The moment the plan was made for (RFC 3339 UTC): ages and grace periods count to it.
    #[schema(format = DateTime)]
    pub time: String,
    /// Each repository a policy matches, by name.
    pub repositories: Vec<RepoPlan>,
    /// Repositories no policy matches: everything in them is kept.
    pub unmatched_repositories: Vec<String>,
    /// Totals over `repositories`.
    pub summary: PlanSummary,
}

/// A retention plan being made one repository at a time ([`Registry::plan_walk`],
/// [`Registry::next_repo_plan`]), so that nothing needs the plan of the whole registry at
/// once: the plan of a million tags is hundreds of MiB (bench/scale), and `cairn retention
/// plan` prints, and a scheduled apply deletes, repository by repository.
pub struct PlanWalk {
    /// The moment the plan is made for (RFC 3339 UTC), as [`Plan::time`].
    pub time: String,
    now: SystemTime,
    repos: std::vec::IntoIter<RepoName>,
    /// Repositories no policy matches, among those walked so far.
    pub unmatched_repositories: Vec<String>,
    /// Totals over the repository plans returned so far.
    pub summary: PlanSummary,
}

/// Counts an apply's deletions and its outcome (what was deleted counts even when a later
/// repository failed).
fn record_apply(report: &ApplyReport, ok: bool) {
    metrics::counter!(crate::metrics::RETENTION_DELETED, "kind" => "tag").increment(report.tags_deleted);
    metrics::counter!(crate::metrics::RETENTION_DELETED, "kind" => "manifest").increment(report.manifests_deleted);
    metrics::counter!(crate::metrics::RETENTION_FREED_BYTES).increment(report.bytes);
    let outcome = if ok { "done" } else { "failed" };
    metrics::counter!(crate::metrics::RETENTION_RUNS, "outcome" => outcome).increment(1);
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApplyReport {
    /// Tags deleted.
    pub tags_deleted: u64,
    /// Manifests deleted.
    pub manifests_deleted: u64,
    /// Bytes the deleted manifests held in their repositories (see `PlanSummary::bytes`).
    pub bytes: u64,
    /// Planned deletions not done because the state changed since planning (a tag moved or was
    /// pushed, a manifest gained a tag or an index).
    pub kept_on_recheck: u64,
}

/// Who or what started an apply, recorded in each event's `detail.trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// `[retention] schedule`.
    Schedule,
    /// `cairn retention apply`.
    Cli,
    /// `POST /api/v1/retention/apply`.
    Api,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Cli => "cli",
            Trigger::Api => "api",
        }
    }
}

/// A rollback done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollbackOutcome {
    /// Where the tag pointed.
    pub from: Digest,
    /// Where it points now.
    pub to: Digest,
    /// The target's position in the window (2 is the digest before the current one).
    pub position: usize,
    /// The window's size.
    pub window: u32,
}

/// The pure state of a repository from its snapshot; `immutable` says which tags are releases.
pub fn repo_state(snap: &RetentionSnapshot, immutable: impl Fn(&Tag) -> bool) -> RepoState {
    let mut history: HashMap<&Tag, Vec<Digest>> = HashMap::new();
    let mut lost: HashMap<&Digest, SystemTime> = HashMap::new();
    for h in &snap.history {
        if let Some(to) = &h.to {
            history.entry(&h.tag).or_default().push(to.clone());
        }
        if let Some(from) = &h.from {
            // Newest first: the first row seen is the latest.
            lost.entry(from).or_insert(h.at);
        }
    }
    let pulls: HashMap<&Digest, SystemTime> = snap.pulls.iter().map(|(d, p)| (d, p.last_pulled)).collect();
    let mut children: HashMap<&Digest, Vec<Digest>> = HashMap::new();
    for (m, c) in &snap.children {
        children.entry(m).or_default().push(c.clone());
    }
    let mut blobs: HashMap<&Digest, Vec<(Digest, u64)>> = HashMap::new();
    for (m, b, size) in &snap.blobs {
        blobs.entry(m).or_default().push((b.clone(), *size));
    }
    RepoState {
        tags: snap
            .tags
            .iter()
            .map(|(tag, digest, set_at)| {
                let mut h = history.get(tag).cloned().unwrap_or_default();
                if h.first() != Some(digest) {
                    h.insert(0, digest.clone());
                }
                TagState {
                    tag: tag.clone(),
                    digest: digest.clone(),
                    set_at: *set_at,
                    immutable: immutable(tag),
                    history: h,
                }
            })
            .collect(),
        manifests: snap
            .manifests
            .iter()
            .map(|m| ManifestState {
                digest: m.digest.clone(),
                pushed_at: m.pushed_at,
                lost_tag_at: lost.get(&m.digest).copied(),
                size: m.size,
                children: children.get(&m.digest).cloned().unwrap_or_default(),
                subject: m.subject.clone(),
                blobs: blobs.get(&m.digest).cloned().unwrap_or_default(),
                last_pulled: pulls.get(&m.digest).copied(),
            })
            .collect(),
    }
}

/// The deletions of a plan: tags with the digest they pointed to, and manifests ordered so that
/// an index goes before the manifests it lists.
fn deletions(p: &RepoPlan, state: &RepoState) -> (BTreeMap<Tag, Digest>, Vec<Digest>) {
    let tags = p
        .tags
        .iter()
        .filter(|e| e.decision == Decision::Delete)
        .filter_map(|e| Some((Tag::parse(&e.tag).ok()?, Digest::parse(&e.digest).ok()?)))
        .collect();
    let doomed: BTreeSet<Digest> = p
        .manifests
        .iter()
        .filter(|e| e.decision == Decision::Delete)
        .filter_map(|e| Digest::parse(&e.digest).ok())
        .collect();
    // Depth = the longest chain of deleted indexes above a manifest; parents first.
    let parents: HashMap<&Digest, Vec<&Digest>> = state.manifests.iter().fold(HashMap::new(), |mut acc, m| {
        for c in &m.children {
            acc.entry(c).or_default().push(&m.digest);
        }
        acc
    });
    fn depth<'a>(d: &'a Digest, parents: &HashMap<&'a Digest, Vec<&'a Digest>>, seen: &mut Vec<&'a Digest>) -> usize {
        if seen.contains(&d) {
            return 0;
        }
        seen.push(d);
        let best = parents.get(d).map(|ps| ps.iter().map(|p| 1 + depth(p, parents, seen)).max().unwrap_or(0));
        seen.pop();
        best.unwrap_or(0)
    }
    let mut ordered: Vec<(usize, Digest)> =
        doomed.into_iter().map(|d| (depth(&d, &parents, &mut Vec::new()), d)).collect();
    ordered.sort();
    (tags, ordered.into_iter().map(|(_, d)| d).collect())
}

impl Registry {
    /// The same registry with these retention policies (the default has none: nothing is deleted).
    pub fn with_retention(mut self, retention: Arc<RetentionPolicy>) -> Registry {
        self.retention = retention;
        self
    }

    fn is_release(&self, repo: &RepoName, tag: &Tag) -> bool {
        self.immutability.decide(repo, tag).mode == Mode::Immutable
    }

    /// Every repository, by name, that `filter` (a repository glob) matches.
    async fn repositories_matching(&self, filter: Option<&str>) -> Result<Vec<RepoName>, Error> {
        let glob = filter
            .map(|g| {
                crate::policy::access::repo_glob(g)
                    .map_err(|e| Error::Unsupported(format!("repository={g:?} is not a repository glob: {}", e.kind())))
            })
            .transpose()?;
        let mut out = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let page = self.meta.repositories(last.as_deref(), PAGE).await?;
            let done = (page.len() as u32) < PAGE;
            last = page.last().cloned();
            for name in page {
                if glob.as_ref().is_none_or(|g| g.is_match(&name))
                    && let Ok(repo) = RepoName::parse(&name)
                {
                    out.push(repo);
                }
            }
            if done {
                return Ok(out);
            }
        }
    }

    fn plan_repo(
        &self,
        policy: &Policy,
        repo: &RepoName,
        snap: &RetentionSnapshot,
        now: SystemTime,
    ) -> (RepoPlan, RepoState) {
        let state = repo_state(snap, |t| self.is_release(repo, t));
        (retention::plan(policy, repo.as_str(), &state, now), state)
    }

    /// Starts a plan made one repository at a time, as of the registry's clock: each
    /// [`Registry::next_repo_plan`] plans the next repository `filter` (a glob) matches.
    /// Errors: `Error::Unsupported` for a bad glob.
    pub async fn plan_walk(&self, filter: Option<&str>) -> Result<PlanWalk, Error> {
        let now = self.clock.now();
        Ok(PlanWalk {
            time: crate::audit::chain::rfc3339_millis(crate::meta::millis(now)),
            now,
            repos: self.repositories_matching(filter).await?.into_iter(),
            unmatched_repositories: vec![],
            summary: PlanSummary::default(),
        })
    }

    /// The plan of the walk's next repository a policy matches (`None` when none is left);
    /// repositories no policy matches are noted in the walk on the way.
    pub async fn next_repo_plan(&self, walk: &mut PlanWalk) -> Result<Option<RepoPlan>, Error> {
        for repo in walk.repos.by_ref() {
            let Some(policy) = self.retention.policy_for(&repo) else {
                walk.unmatched_repositories.push(repo.to_string());
                continue;
            };
            let snap = self.meta.retention_snapshot(&repo).await?;
            let (p, _) = self.plan_repo(policy, &repo, &snap, walk.now);
            walk.summary.add(&p.summary);
            return Ok(Some(p));
        }
        Ok(None)
    }

    /// The plan for every repository `filter` (a glob) matches, as of the registry's clock,
    /// whole (for `GET /api/v1/retention/plan`; it grows with the registry, see [`PlanWalk`]).
    pub async fn retention_plan(&self, filter: Option<&str>) -> Result<Plan, Error> {
        let mut walk = self.plan_walk(filter).await?;
        let mut repositories = vec![];
        while let Some(p) = self.next_repo_plan(&mut walk).await? {
            repositories.push(p);
        }
        Ok(Plan {
            time: walk.time,
            repositories,
            unmatched_repositories: walk.unmatched_repositories,
            summary: walk.summary,
        })
    }

    /// Plans and applies one repository at a time, holding one repository's plan at once (a
    /// scheduled apply and `cairn retention apply`, which do not show the plan): what
    /// [`Registry::retention_apply`] does, in memory that does not grow with the registry.
    pub async fn retention_apply_walk(
        &self,
        filter: Option<&str>,
        actor: &Actor,
        trigger: Trigger,
        mut progress: impl FnMut(&ApplyReport),
    ) -> Result<ApplyReport, Error> {
        let mut walk = self.plan_walk(filter).await?;
        let mut report = ApplyReport::default();
        let result = async {
            while let Some(p) = self.next_repo_plan(&mut walk).await? {
                self.apply_planned_repo(&p, actor, trigger, &mut report, &mut progress).await?;
            }
            Ok(())
        }
        .await;
        record_apply(&report, result.is_ok());
        result.map(|()| report)
    }

    /// Plans, then carries out the plan's deletions (see the module docs); `progress` hears the
    /// running totals after each batch. Returns the plan and what was done.
    pub async fn retention_apply(
        &self,
        filter: Option<&str>,
        actor: &Actor,
        trigger: Trigger,
        progress: impl FnMut(&ApplyReport),
    ) -> Result<(Plan, ApplyReport), Error> {
        let plan = self.retention_plan(filter).await?;
        let report = self.apply_plan(&plan, actor, trigger, progress).await?;
        Ok((plan, report))
    }

    /// Carries out the deletions of `plan` (made earlier), each re-checked against the state
    /// now: what changed since is kept and counted in `kept_on_recheck`.
    pub async fn apply_plan(
        &self,
        plan: &Plan,
        actor: &Actor,
        trigger: Trigger,
        mut progress: impl FnMut(&ApplyReport),
    ) -> Result<ApplyReport, Error> {
        let mut report = ApplyReport::default();
        let result = async {
            for p in &plan.repositories {
                self.apply_planned_repo(p, actor, trigger, &mut report, &mut progress).await?;
            }
            Ok(())
        }
        .await;
        record_apply(&report, result.is_ok());
        result.map(|()| report)
    }

    /// Carries out one repository's planned deletions, if it has any.
    async fn apply_planned_repo(
        &self,
        p: &RepoPlan,
        actor: &Actor,
        trigger: Trigger,
        report: &mut ApplyReport,
        progress: &mut impl FnMut(&ApplyReport),
    ) -> Result<(), Error> {
        if p.summary.tags_deleted == 0 && p.summary.manifests_deleted == 0 {
            return Ok(());
        }
        let repo = RepoName::parse(&p.repository).map_err(|e| Error::internal(anyhow::anyhow!("{e}")))?;
        self.apply_repo(&repo, p, actor, trigger, report, progress).await
    }

    async fn apply_repo(
        &self,
        repo: &RepoName,
        planned: &RepoPlan,
        actor: &Actor,
        trigger: Trigger,
        report: &mut ApplyReport,
        progress: &mut impl FnMut(&ApplyReport),
    ) -> Result<(), Error> {
        let Some(policy) = self.retention.policy_for(repo) else { return Ok(()) };
        let reasons: HashMap<&str, &Vec<String>> = planned
            .tags
            .iter()
            .map(|e| (e.tag.as_str(), &e.reasons))
            .chain(planned.manifests.iter().map(|e| (e.digest.as_str(), &e.reasons)))
            .collect();
        let snap0 = self.meta.retention_snapshot(repo).await?;
        let state0 = repo_state(&snap0, |t| self.is_release(repo, t));
        let (mut tags, mut manifests) = deletions(planned, &state0);
        let mut deleted: BTreeSet<Digest> = BTreeSet::new();
        let detail = |kind: &str, key: &str| json!({ "kind": kind, "policy": policy.label, "reasons": reasons.get(key), "trigger": trigger.as_str() });
        while !tags.is_empty() || !manifests.is_empty() {
            let now = self.clock.now();
            let mut tx = self.meta.begin(now).await?;
            let snap = tx.retention_snapshot(repo).await?;
            let (fresh, _) = self.plan_repo(policy, repo, &snap, now);
            let fresh_tags: BTreeSet<(&str, &str)> = fresh
                .tags
                .iter()
                .filter(|e| e.decision == Decision::Delete)
                .map(|e| (e.tag.as_str(), e.digest.as_str()))
                .collect();
            let fresh_manifests: BTreeSet<&str> =
                fresh.manifests.iter().filter(|e| e.decision == Decision::Delete).map(|e| e.digest.as_str()).collect();
            let mut events = Vec::new();
            let mut done = 0;
            // Manifests first (parents before children), each with its tags; then lone tags.
            while done < BATCH && !manifests.is_empty() {
                let d = manifests.remove(0);
                done += 1;
                let on = tx.tags_of(repo, &d).await?;
                let tags_planned =
                    on.iter().all(|t| tags.get(t) == Some(&d) && fresh_tags.contains(&(t.as_str(), d.as_str())));
                let still = fresh_manifests.contains(d.as_str())
                    && tags_planned
                    && tx.manifest_exists(repo, &d).await?
                    && tx.holder(repo, RefKind::Child, &d).await?.is_none();
                if !still {
                    report.kept_on_recheck += 1;
                    continue;
                }
                for t in &on {
                    tags.remove(t);
                    tx.remove_tag(repo, t, &d, actor).await?;
                    events.push(
                        event(EventKind::RetentionDelete, actor, repo)
                            .tag(t.as_str())
                            .previous(Some(d.as_str()))
                            .detail(detail("tag", t.as_str())),
                    );
                    report.tags_deleted += 1;
                }
                tx.remove_manifest(repo, &d).await?;
                events.push(
                    event(EventKind::RetentionDelete, actor, repo)
                        .digest(d.as_str())
                        .detail(detail("manifest", d.as_str())),
                );
                report.manifests_deleted += 1;
                deleted.insert(d);
            }
            while done < BATCH
                && let Some((t, d)) = tags.pop_first()
            {
                done += 1;
                let current = tx.tag_for_update(repo, &t).await?;
                if current.as_ref() != Some(&d) || !fresh_tags.contains(&(t.as_str(), d.as_str())) {
                    report.kept_on_recheck += 1;
                    continue;
                }
                tx.remove_tag(repo, &t, &d, actor).await?;
                events.push(
                    event(EventKind::RetentionDelete, actor, repo)
                        .tag(t.as_str())
                        .previous(Some(d.as_str()))
                        .detail(detail("tag", t.as_str())),
                );
                report.tags_deleted += 1;
            }
            if events.is_empty() {
                tx.rollback().await?;
            } else {
                tx.append_events(events, now).await?;
                tx.commit().await?;
            }
            self.invalidate(repo);
            progress(report);
        }
        report.bytes += retention::freed_bytes(&state0, &deleted.iter().collect());
        progress(report);
        Ok(())
    }

    /// Applies the policies every `[retention] schedule`, as the server (`cairn`), holding the
    /// maintenance lock that GC uses: `None` (nothing done) while another node's scheduled run,
    /// or any collector, holds it.
    pub async fn scheduled_retention(&self) -> Result<Option<ApplyReport>, Error> {
        let actor = Actor { name: "cairn".into(), address: None };
        let run = self.retention_apply_walk(None, &actor, Trigger::Schedule, |_| {});
        self.with_maintenance_lock(run).await
    }

    /// The rollback window a manual delete of `target` in `repo` would break, if any: a mutable
    /// tag's own window (deleting the tag), or the window of a mutable tag that holds the digest.
    /// Only where a policy matches and its window is not 0.
    pub(super) async fn window_hit(
        &self,
        tx: &mut Box<dyn crate::meta::MetaTx>,
        repo: &RepoName,
        tag: Option<&Tag>,
        digest: &Digest,
    ) -> Result<Option<WindowHit>, Error> {
        let Some(policy) = self.retention.policy_for(repo).filter(|p| p.rollback_window > 0) else { return Ok(None) };
        let n = policy.rollback_window;
        if let Some(t) = tag {
            let mutable = !self.is_release(repo, t) && !crate::policy::immutability::is_referrer_tag(t.as_str());
            return Ok(mutable.then(|| WindowHit { tag: t.clone(), position: 1, size: n }));
        }
        let snap = tx.retention_snapshot(repo).await?;
        let state = repo_state(&snap, |t| self.is_release(repo, t));
        Ok(retention::windows(&state.tags, n).remove(digest).and_then(|hits| hits.into_iter().next()))
    }

    /// Moves a mutable tag back to a digest inside its rollback window (DESIGN §6), with the
    /// guarantees of a conditional PUT, ledgered as a `tag.move` whose detail says it was a
    /// rollback. `if_match` is the raw `If-Match` value (`"<digest>"`, quotes optional): the
    /// tag must point there now, else 412; a value that is no digest never matches (412 too,
    /// after the tag is found, as RFC 9110 has it).
    pub async fn rollback_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        target: &RollbackTarget,
        if_match: Option<&str>,
        actor: &Actor,
    ) -> Result<RollbackOutcome, Error> {
        let mut tx = self.meta.begin(self.clock.now()).await?;
        let refused = |m: String| Error::RollbackRefused(m);
        let Some(current) = tx.tag_for_update(repo, tag).await? else {
            tx.rollback().await?;
            return Err(Error::ManifestUnknown(format!("{tag} (no such tag in {repo})")));
        };
        if let Some(raw) = if_match {
            let bare = raw.trim().trim_start_matches("W/").trim_matches('"');
            let failed = match Digest::parse(bare) {
                Ok(want) if want == current => None,
                Ok(want) => Some(format!(
                    "tag {repo}:{tag} points to {current}, not {want}; the If-Match precondition does not hold"
                )),
                Err(_) => Some(format!(
                    "If-Match {raw:?} is not a digest, so it never matches; send the tag's current digest, such as \
                     If-Match: \"{current}\""
                )),
            };
            if let Some(why) = failed {
                tx.rollback().await?;
                return Err(Error::PreconditionFailed(why));
            }
        }
        let d = self.immutability.decide(repo, tag);
        if d.mode == Mode::Immutable {
            tx.rollback().await?;
            return Err(refused(format!(
                "tag {repo}:{tag} is immutable (rule {}); only a mutable tag can be rolled back",
                d.rule
            )));
        }
        let (n, policy) = self.retention.window_for(repo);
        if n == 0 {
            tx.rollback().await?;
            return Err(refused(format!(
                "rollback is off for {repo}: retention policy {} sets rollback_window = 0",
                policy.unwrap_or("?")
            )));
        }
        let mut window = tx.tag_targets(repo, tag, n).await?;
        if window.first() != Some(&current) {
            window.retain(|w| w != &current);
            window.insert(0, current.clone());
            window.truncate(n as usize);
        }
        let (to, position) = match writes::decide_rollback(tag, &current, &window, n, target) {
            Ok(t) => t,
            Err(why) => {
                tx.rollback().await?;
                return Err(refused(format!("cannot roll back {repo}:{tag}: {why}")));
            }
        };
        if !tx.manifest_exists(repo, &to).await? {
            tx.rollback().await?;
            return Err(refused(format!(
                "cannot roll back {repo}:{tag} to {to}: that manifest is no longer stored in {repo} (it was deleted)"
            )));
        }
        if !self.trust.gates_is_empty() {
            // Verifying reads blobs: not inside the transaction. The gate is asked about the
            // target; the tag is re-read under its lock in a new transaction.
            tx.rollback().await?;
            let target = self.manifest(repo, &Reference::Digest(to.clone())).await?;
            self.check_push_gates(repo, std::slice::from_ref(tag), &target, actor).await?;
            tx = self.meta.begin(self.clock.now()).await?;
            if tx.tag_for_update(repo, tag).await?.as_ref() != Some(&current) {
                tx.rollback().await?;
                return Err(refused(format!(
                    "tag {repo}:{tag} moved while the rollback was checked against the signature gates; read it \
                     again and retry"
                )));
            }
            if !tx.manifest_exists(repo, &to).await? {
                tx.rollback().await?;
                return Err(refused(format!(
                    "cannot roll back {repo}:{tag} to {to}: that manifest was deleted while the rollback was checked"
                )));
            }
        }
        tx.set_tag(repo, tag, Some(&current), &to, actor).await?;
        let how = match target {
            RollbackTarget::Steps(k) => json!({ "steps": k }),
            RollbackTarget::To(d) => json!({ "to": d.as_str() }),
        };
        let e = event(EventKind::TagMove, actor, repo)
            .tag(tag.as_str())
            .digest(to.as_str())
            .previous(Some(current.as_str()))
            .detail(json!({ "rollback": { "request": how, "position": position, "window": n } }));
        tx.append_events(vec![e], self.clock.now()).await?;
        tx.commit().await?;
        self.invalidate(repo);
        Ok(RollbackOutcome { from: current, to, position, window: n })
    }
}
