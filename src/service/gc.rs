//! Online garbage collection (DESIGN §6, STYLE §10). No read-only mode; the database decides and
//! the object store is never listed. A run has two stages, under one lock:
//!
//! 1. Unlink: a repository link (`repo_blobs` row) goes when no manifest of that repository
//!    references the blob (no `manifest_blobs` row; the schema refuses the unlink otherwise) and
//!    the blob's mark `touched_at` is older than the grace period. This is what frees the layers
//!    of a deleted manifest, and blobs uploaded or mounted for a manifest that never came.
//! 2. Collect: a blob goes when no repository links it and its mark is older than the grace.
//!
//! - The mark is the last upload commit, mount, HEAD, or manual unlink (`DELETE /v2/…/blobs/`)
//!   of the blob in any repository. The GC unlink keeps the mark as it was: the link only goes
//!   when the mark is already older than the grace, so stage 2 of the same run may free the blob
//!   at once, and a deleted image's bytes are freed by one run once its blobs' marks are older
//!   than the grace (a manual unlink, by contrast, starts a new grace). Keeping the old mark is
//!   safe because every way back to the blob re-links or re-marks it in a transaction the
//!   collector's re-check sees: an upload commit or mount links it; a HEAD re-marks it.
//! - HEADs: a push checks layers with HEAD and then PUTs the manifest without uploading them,
//!   so a HEAD that answered 200 must keep the link for a grace period. A HEAD of a blob whose
//!   mark protects it for longer than `TOUCH_SLACK` is tallied in memory and written within a
//!   second (`flush_touches`, the server's 1-second task; each run flushes its own first).
//!   Closer to the grace (the mark older than `grace - TOUCH_SLACK`) the HEAD writes the mark at
//!   once, only while the link exists, and answers 404 when the collector unlinked it first; so
//!   a collector that does not see a tallied touch yet still sees a mark that protects the link.
//!   A `cairn gc --grace` shorter than the server's `[gc] grace` weakens this for tallied HEADs.
//! - Candidates are read first, then each batch is unlinked or deleted in one write transaction
//!   that checks the conditions again (`unlink_unreferenced`, `delete_unlinked_blob`), so a blob
//!   referenced, mounted, uploaded or checked meanwhile is kept. The deleted blobs' uploads are
//!   recorded as garbage in that transaction and their objects removed only after it commits;
//!   the garbage row goes once they are gone, so a crash in between is finished by the next run.
//! - Upload leftovers: cancelled, expired and duplicate uploads are recorded as garbage when
//!   their session ends; each run removes their objects too.
//! - One collector at a time across processes: a lock row (`gc_lock`) with holder and expiry,
//!   renewed before each batch. Scheduled retention takes the same lock
//!   (`with_maintenance_lock`), so of several nodes only one runs scheduled maintenance. A collector killed on this machine is noticed at once (its
//!   process is gone) and its lock taken over; one on another node frees it when it expires.
//! - Ledger: one `blob.unlink` event per link removed (actor `gc`, in the unlinking
//!   transaction), and one `gc.delete` event per deleting transaction (at most `BATCH` digests).

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Registry;
use crate::audit::{EventKind, NewEvent};
use crate::error::Error;
use crate::meta::{BlobRecord, LinkCandidate};
use crate::oci::{Digest, RepoName};

/// Blobs per deleting transaction (and per `gc.delete` event).
pub const BATCH: u32 = 100;
/// How long the lock is held without renewal; a collector that died frees it after this.
const LOCK_TTL: Duration = Duration::from_secs(300);
/// The `[gc] grace` a registry assumes until told (`Registry::with_gc_grace`).
pub(super) const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// A HEAD is tallied only while the blob's mark protects it at least this much longer;
/// closer to the grace it is written at once (see the module header).
const TOUCH_SLACK: Duration = Duration::from_secs(5);
/// At most this many HEAD touches wait for a flush; beyond it a touch is written at once.
const MAX_PENDING: usize = 100_000;

/// HEADs since the last flush: digest -> latest time.
#[derive(Default)]
pub(super) struct TouchTally(Mutex<HashMap<Digest, SystemTime>>);

/// What to collect.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Blobs touched within this stay.
    pub grace: Duration,
    /// Report what would go; delete nothing.
    pub dry_run: bool,
}

/// What a run freed (or, dry, would free).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Repository links removed (or that would be): no manifest of the repository used them.
    pub links: u64,
    /// Their bytes (a blob linked to two repositories counts in each).
    pub link_bytes: u64,
    /// The links as `repository@digest`, at most the first 1000.
    pub unlinked: Vec<String>,
    /// Blobs deleted (or that would be).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their digests, at most the first 1000.
    pub digests: Vec<String>,
    /// Upload leftovers whose objects were removed (dry run: that wait for removal).
    pub uploads: u64,
    /// Candidates kept because the unlinking or deleting transaction found them referenced,
    /// linked or touched.
    pub kept: u64,
    /// True when another collector held the lock and nothing was done.
    pub busy: bool,
    /// True for a dry run.
    pub dry_run: bool,
}

/// Progress of a run, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct GcProgress {
    /// Links removed so far.
    pub links: u64,
    /// Blobs deleted so far.
    pub blobs: u64,
    /// Bytes freed so far.
    pub bytes: u64,
}

/// The pure decision the database applies (in SQL, candidates and re-check alike): a blob goes
/// only when no repository links it and its last touch is older than `now - grace`.
pub fn collectable(links: u64, touched_at: SystemTime, now: SystemTime, grace: Duration) -> bool {
    links == 0 && now.checked_sub(grace).is_some_and(|cutoff| touched_at < cutoff)
}

/// Stage 1's decision (in SQL too): a link goes only when no manifest of its repository
/// references the blob and the blob's mark is older than `now - grace`.
pub fn unlinkable(references: u64, touched_at: SystemTime, now: SystemTime, grace: Duration) -> bool {
    references == 0 && now.checked_sub(grace).is_some_and(|cutoff| touched_at < cutoff)
}

/// A HEAD may tally its touch (written within a second) only while the blob's mark keeps it
/// from collectors for more than `TOUCH_SLACK`; otherwise it writes the mark at once.
pub fn tally_suffices(mark: SystemTime, now: SystemTime, grace: Duration) -> bool {
    mark + grace > now + TOUCH_SLACK
}

impl Registry {
    /// Records a HEAD of a blob: it is not collected within the grace period from now.
    pub fn touch_blob(&self, digest: &Digest) {
        let now = self.clock.now();
        let mut pending = self.touches.0.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= MAX_PENDING && !pending.contains_key(digest) {
            tracing::warn!("blob touch tally full; flush it early");
        }
        let at = pending.entry(digest.clone()).or_insert(now);
        *at = (*at).max(now);
    }

    /// Writes tallied HEAD touches; returns how many blobs were touched.
    pub async fn flush_touches(&self) -> Result<usize, Error> {
        let batch: Vec<(Digest, SystemTime)> = {
            let mut pending = self.touches.0.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().collect()
        };
        if let Err(e) = self.meta.touch_blobs(&batch).await {
            let mut pending = self.touches.0.lock().unwrap_or_else(|e| e.into_inner());
            for (d, at) in batch {
                let entry = pending.entry(d).or_insert(at);
                *entry = (*entry).max(at);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }

    /// Runs one collection (see the module header); `progress` is called after each batch.
    /// A real run (not dry) is counted in the `cairn_gc_*` metrics.
    pub async fn collect_garbage(&self, opts: &GcOptions, progress: impl FnMut(GcProgress)) -> Result<GcReport, Error> {
        let result = self.collect_garbage_once(opts, progress).await;
        if !opts.dry_run {
            let outcome = match &result {
                Ok(r) if r.busy => "busy",
                Ok(r) => {
                    metrics::counter!(crate::metrics::GC_FREED_BLOBS).increment(r.blobs);
                    metrics::counter!(crate::metrics::GC_FREED_BYTES).increment(r.bytes);
                    "done"
                }
                Err(_) => "failed",
            };
            metrics::counter!(crate::metrics::GC_RUNS, "outcome" => outcome).increment(1);
        }
        result
    }

    async fn collect_garbage_once(
        &self,
        opts: &GcOptions,
        mut progress: impl FnMut(GcProgress),
    ) -> Result<GcReport, Error> {
        let mut report = GcReport { dry_run: opts.dry_run, ..GcReport::default() };
        // Touches tallied by this process count before anything is decided.
        self.flush_touches().await?;
        let now = self.clock.now();
        let cutoff = now.checked_sub(opts.grace).unwrap_or(SystemTime::UNIX_EPOCH);
        if opts.dry_run {
            let mut after: Option<(RepoName, Digest)> = None;
            loop {
                let key = after.as_ref().map(|(r, d)| (r.as_str(), d));
                let batch = self.meta.gc_link_candidates(cutoff, key, BATCH).await?;
                let Some(last) = batch.last() else { break };
                after = Some((last.repo.clone(), last.digest.clone()));
                for l in &batch {
                    report.add_link(l);
                }
                progress(report.progress());
            }
            let mut after: Option<Digest> = None;
            loop {
                let batch = self.meta.gc_unreferenced(cutoff, after.as_ref(), BATCH).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.digest.clone());
                for b in &batch {
                    report.add(b);
                }
                progress(report.progress());
            }
            report.uploads = self.meta.upload_garbage(u32::MAX).await?.len() as u64;
            return Ok(report);
        }
        let holder = lock_holder_id();
        if !self.take_lock(&holder).await? {
            report.busy = true;
            return Ok(report);
        }
        let result = self.collect_locked(&holder, cutoff, &mut report, &mut progress).await;
        if let Err(e) = self.meta.gc_unlock(&holder).await {
            tracing::warn!(error = %e, "could not release the GC lock; it expires by itself");
        }
        result.map(|()| report)
    }

    async fn collect_locked(
        &self,
        holder: &str,
        cutoff: SystemTime,
        report: &mut GcReport,
        progress: &mut impl FnMut(GcProgress),
    ) -> Result<(), Error> {
        self.unlink_unreferenced(holder, cutoff, report, progress).await?;
        let mut after: Option<Digest> = None;
        loop {
            let batch = self.meta.gc_candidates(cutoff, after.as_ref(), BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.digest.clone());
            self.renew_lock(holder).await?;
            let mut tx = self.meta.begin(self.clock.now()).await?;
            let mut deleted = Vec::new();
            for b in &batch {
                match tx.delete_unlinked_blob(&b.digest, cutoff).await? {
                    Some(gone) => deleted.push(gone),
                    None => report.kept += 1,
                }
            }
            if deleted.is_empty() {
                tx.rollback().await?;
                continue;
            }
            let bytes: u64 = deleted.iter().map(|b| b.size).sum();
            let digests: Vec<&str> = deleted.iter().map(|b| b.digest.as_str()).collect();
            let ev = NewEvent::new(EventKind::GcDelete, "cairn", None)
                .detail(json!({ "blobs": deleted.len(), "bytes": bytes, "digests": digests }));
            tx.append_events(vec![ev], self.clock.now()).await?;
            tx.commit().await?;
            for b in &deleted {
                report.add(b);
            }
            // Committed: now the objects may go.
            let uploads: Vec<String> = deleted.iter().map(|b| b.location.upload.clone()).collect();
            report.uploads += self.remove_uploads(uploads).await? as u64;
            progress(report.progress());
        }
        // Leftovers of cancelled, expired and duplicate uploads (and of a run that crashed).
        loop {
            let ids = self.meta.upload_garbage(1000).await?;
            let n = ids.len();
            let removed = self.remove_uploads(ids).await?;
            report.uploads += removed as u64;
            if n < 1000 || removed == 0 {
                break;
            }
        }
        Ok(())
    }

    /// The first stage: removes the links no manifest of their repository references whose
    /// blob's mark is older than `cutoff`, each batch in one transaction that checks again.
    async fn unlink_unreferenced(
        &self,
        holder: &str,
        cutoff: SystemTime,
        report: &mut GcReport,
        progress: &mut impl FnMut(GcProgress),
    ) -> Result<(), Error> {
        let mut after: Option<(RepoName, Digest)> = None;
        loop {
            let key = after.as_ref().map(|(r, d)| (r.as_str(), d));
            let batch = self.meta.gc_link_candidates(cutoff, key, BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = Some((last.repo.clone(), last.digest.clone()));
            self.renew_lock(holder).await?;
            let mut tx = self.meta.begin(self.clock.now()).await?;
            let mut unlinked = Vec::new();
            for l in &batch {
                match tx.unlink_unreferenced(&l.repo, &l.digest, cutoff).await? {
                    true => unlinked.push(l),
                    false => report.kept += 1,
                }
            }
            if unlinked.is_empty() {
                tx.rollback().await?;
                continue;
            }
            let events = unlinked
                .iter()
                .map(|l| {
                    NewEvent::new(EventKind::BlobUnlink, "gc", None)
                        .repository(l.repo.as_str())
                        .digest(l.digest.as_str())
                        .detail(json!({
                            "size": l.size,
                            "reason": "garbage collection: no manifest of the repository references it, \
                                       and it was not uploaded, mounted or checked within the grace period",
                        }))
                })
                .collect();
            tx.append_events(events, self.clock.now()).await?;
            tx.commit().await?;
            for l in unlinked {
                report.add_link(l);
                self.invalidate(&l.repo);
            }
            progress(report.progress());
        }
        Ok(())
    }

    /// Takes the collector lock, also from a holder that died on this machine (killed, for
    /// example) before its lock expired; see [`lock_holder_id`].
    async fn take_lock(&self, holder: &str) -> Result<bool, Error> {
        let now = self.clock.now();
        if self.meta.gc_lock(holder, now, now + LOCK_TTL).await? {
            return Ok(true);
        }
        let Some((current, _)) = self.meta.gc_lock_holder().await? else { return Ok(false) };
        if !holder_died(&current) {
            return Ok(false);
        }
        tracing::warn!(holder = %current, "the GC lock's holder died; taking the lock over");
        Ok(self.meta.gc_lock_take_over(holder, &current, now + LOCK_TTL).await?)
    }

    /// Runs `work` holding the maintenance lock (the GC lock row, which scheduled retention
    /// shares, so that of all nodes only one runs scheduled maintenance at a time), renewing it
    /// every third of its expiry while `work` runs. `None` without running `work` when another
    /// holder has it.
    pub(super) async fn with_maintenance_lock<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, Error>>,
    ) -> Result<Option<T>, Error> {
        let holder = lock_holder_id();
        if !self.take_lock(&holder).await? {
            return Ok(None);
        }
        let renew = async {
            let mut tick = tokio::time::interval(LOCK_TTL / 3);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = self.renew_lock(&holder).await {
                    return e;
                }
            }
        };
        let result = tokio::select! {
            r = work => r,
            e = renew => Err(e),
        };
        if let Err(e) = self.meta.gc_unlock(&holder).await {
            tracing::warn!(error = %e, "could not release the maintenance lock; it expires by itself");
        }
        result.map(Some)
    }

    async fn renew_lock(&self, holder: &str) -> Result<(), Error> {
        let now = self.clock.now();
        if !self.meta.gc_lock(holder, now, now + LOCK_TTL).await? {
            return Err(Error::internal(anyhow::anyhow!("the GC lock expired; another collector took over")));
        }
        Ok(())
    }

    /// A HEAD's blob lookup: the blob linked to `repo`, its mark moved to now (tallied, or
    /// written at once when the mark is close to the grace; see the module header). `None`
    /// when `repo` does not link it, or the collector unlinked it first.
    pub(super) async fn head_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobRecord>, Error> {
        let Some((blob, mark)) = self.meta.blob_with_mark(repo, digest).await? else { return Ok(None) };
        let now = self.clock.now();
        if tally_suffices(mark, now, self.gc_grace) {
            self.touch_blob(digest);
            return Ok(Some(blob));
        }
        match self.meta.touch_linked_blob(repo, digest, now).await {
            Ok(true) => Ok(Some(blob)),
            Ok(false) => Ok(None),
            Err(e) => {
                // A database that cannot write cannot unlink either: tallying is enough.
                tracing::warn!(error = %e, "could not write a blob touch; tallied instead");
                self.touch_blob(digest);
                Ok(Some(blob))
            }
        }
    }

    /// Removes the objects of garbage uploads and forgets those that are gone; returns how many.
    async fn remove_uploads(&self, ids: Vec<String>) -> Result<usize, Error> {
        let mut gone = Vec::with_capacity(ids.len());
        for id in ids {
            match self.blobs.delete_upload(&id).await {
                Ok(()) => gone.push(id),
                Err(e) => {
                    tracing::warn!(upload = %id, error = %e, "could not remove a garbage upload; next run retries")
                }
            }
        }
        self.meta.forget_upload_garbage(&gone).await?;
        Ok(gone.len())
    }
}

/// This collector's lock holder name: `<boot id>/<pid namespace>/<pid>/<random>` on Linux, so
/// a collector on the same machine can tell that the holder died (no such process in the same
/// boot and namespace) without waiting for the lock to expire; elsewhere `-/-/<pid>/<random>`.
fn lock_holder_id() -> String {
    let (boot, ns) = machine_ids();
    format!(
        "{}/{}/{}/{}",
        boot.as_deref().unwrap_or("-"),
        ns.as_deref().unwrap_or("-"),
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    )
}

fn machine_ids() -> (Option<String>, Option<String>) {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok().map(|s| s.trim().to_string());
    let ns = std::fs::read_link("/proc/self/ns/pid").ok().map(|p| p.to_string_lossy().replace('/', "_"));
    (boot, ns)
}

/// True only when `holder` ran in this boot and pid namespace and its process is gone. A reused
/// pid looks alive, so the lock then waits for its expiry: never a wrong takeover.
fn holder_died(holder: &str) -> bool {
    let mut parts = holder.split('/');
    let (Some(boot), Some(ns), Some(pid)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let (my_boot, my_ns) = machine_ids();
    let same = my_boot.as_deref() == Some(boot) && my_ns.as_deref() == Some(ns) && boot != "-" && ns != "-";
    same && pid
        .parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

impl GcReport {
    fn progress(&self) -> GcProgress {
        GcProgress { links: self.links, blobs: self.blobs, bytes: self.bytes }
    }

    fn add_link(&mut self, l: &LinkCandidate) {
        self.links += 1;
        self.link_bytes += l.size;
        if self.unlinked.len() < 1000 {
            self.unlinked.push(format!("{}@{}", l.repo, l.digest));
        }
    }

    fn add(&mut self, b: &BlobRecord) {
        self.blobs += 1;
        self.bytes += b.size;
        if self.digests.len() < 1000 {
            self.digests.push(b.digest.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = Duration::from_secs(3600);
        // (links, touched, now, grace) -> collected
        let cases = [
            (0, t0, t0 + 2 * hour, hour, true),
            (0, t0, t0 + hour, hour, false),
            (0, t0, t0 + hour + Duration::from_millis(1), hour, true),
            (0, t0, t0 + 30 * 60 * Duration::from_secs(1), hour, false),
            (1, t0, t0 + 10 * hour, hour, false),
            (3, t0, t0 + 10 * hour, hour, false),
            (0, t0 + 2 * hour, t0 + 2 * hour, hour, false),
        ];
        for (links, touched, now, grace, want) in cases {
            assert_eq!(collectable(links, touched, now, grace), want, "{links} {touched:?} {now:?}");
            // Stage 1 has the same shape over references instead of links.
            assert_eq!(unlinkable(links, touched, now, grace), want, "{links} {touched:?} {now:?}");
        }
    }

    #[test]
    fn a_dead_holder_on_this_machine_is_noticed() {
        let mine = lock_holder_id();
        assert!(!holder_died(&mine), "this process is alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let prefix: Vec<&str> = mine.split('/').take(2).collect();
        let dead = format!("{}/{}/{gone}/x", prefix[0], prefix[1]);
        if cfg!(target_os = "linux") {
            assert!(holder_died(&dead), "{dead}");
        }
        assert!(!holder_died(&format!("other-boot/{}/{gone}/x", prefix[1])), "another machine: wait for expiry");
        assert!(!holder_died(&format!("-/-/{gone}/x")), "unknown machine");
        assert!(!holder_died("12345-abcdef"), "an old-style holder");
    }

    #[test]
    fn when_a_head_writes_at_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Duration::from_secs(1);
        let hour = Duration::from_secs(3600);
        // (mark, now, grace) -> tallied
        let cases = [
            (t0, t0, hour, true),
            (t0, t0 + hour - 6 * s, hour, true),
            (t0, t0 + hour - 5 * s, hour, false),
            (t0, t0 + 2 * hour, hour, false),
            (t0, t0, 5 * s, false),
            (t0, t0, 6 * s, true),
            (t0 + hour, t0, hour, true),
        ];
        for (mark, now, grace, want) in cases {
            assert_eq!(tally_suffices(mark, now, grace), want, "{mark:?} {now:?} {grace:?}");
        }
    }
}
