//! Online garbage collection (DESIGN §6, STYLE §10). No read-only mode; the database decides and
//! the object store is never listed.
//!
//! - A blob is collected when no repository links it (no `repo_blobs` row) and its mark
//!   `touched_at` (last upload commit, mount, unlink or HEAD) is older than the grace period.
//!   Linking and unlinking move the mark in their own transaction; HEADs are tallied in memory
//!   and written within a second (`flush_touches`, the server's 1-second task).
//! - Candidates are read first, then each batch is deleted in one write transaction that checks
//!   both conditions again (`delete_unlinked_blob`), so a blob mounted or uploaded meanwhile is
//!   kept. The deleted blobs' uploads are recorded as garbage in that transaction and their
//!   objects removed only after it commits; the garbage row goes once they are gone, so a crash
//!   in between is finished by the next run.
//! - Upload leftovers: cancelled, expired and duplicate uploads are recorded as garbage when
//!   their session ends; each run removes their objects too.
//! - One collector at a time across processes: a lock row (`gc_lock`) with holder and expiry,
//!   renewed before each batch.
//! - Ledger: one `gc.delete` event per deleting transaction (at most `BATCH` digests).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Registry;
use crate::audit::{EventKind, NewEvent};
use crate::error::Error;
use crate::meta::BlobRecord;
use crate::oci::Digest;

/// Blobs per deleting transaction (and per `gc.delete` event).
pub const BATCH: u32 = 100;
/// How long the lock is held without renewal; a collector that died frees it after this.
const LOCK_TTL: Duration = Duration::from_secs(300);
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
    /// Blobs deleted (or that would be).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Their digests, at most the first 1000.
    pub digests: Vec<String>,
    /// Upload leftovers whose objects were removed (dry run: that wait for removal).
    pub uploads: u64,
    /// Candidates kept because the deleting transaction found them linked or touched.
    pub kept: u64,
    /// True when another collector held the lock and nothing was done.
    pub busy: bool,
    /// True for a dry run.
    pub dry_run: bool,
}

/// Progress of a run, for a terminal.
#[derive(Debug, Clone, Copy)]
pub struct GcProgress {
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
    pub async fn collect_garbage(
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
            let mut after: Option<Digest> = None;
            loop {
                let batch = self.meta.gc_candidates(cutoff, after.as_ref(), BATCH).await?;
                let Some(last) = batch.last() else { break };
                after = Some(last.digest.clone());
                for b in &batch {
                    report.add(b);
                }
                progress(GcProgress { blobs: report.blobs, bytes: report.bytes });
            }
            report.uploads = self.meta.upload_garbage(u32::MAX).await?.len() as u64;
            return Ok(report);
        }
        let holder = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
        if !self.meta.gc_lock(&holder, now, now + LOCK_TTL).await? {
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
        let mut after: Option<Digest> = None;
        loop {
            let batch = self.meta.gc_candidates(cutoff, after.as_ref(), BATCH).await?;
            let Some(last) = batch.last() else { break };
            after = Some(last.digest.clone());
            let now = self.clock.now();
            if !self.meta.gc_lock(holder, now, now + LOCK_TTL).await? {
                return Err(Error::internal(anyhow::anyhow!("the GC lock expired; another collector took over")));
            }
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
            progress(GcProgress { blobs: report.blobs, bytes: report.bytes });
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

impl GcReport {
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
        }
    }
}
