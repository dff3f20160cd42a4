//! Pull counters (DESIGN §7): a pull is not a ledger event; GETs of a manifest add to an
//! in-memory tally that `flush` writes in one transaction (the server flushes every second
//! and at shutdown), so no request waits for a database write.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use super::Registry;
use crate::error::Error;
use crate::meta::PullStats;
use crate::oci::{Digest, RepoName};

/// Pulls counted since the last flush: `(repo, digest) -> (count, last pulled)`.
#[derive(Default)]
pub(super) struct PullTally(Mutex<HashMap<(RepoName, Digest), (u64, SystemTime)>>);

/// At most this many distinct manifests wait for a flush; beyond it, pulls of new ones are
/// dropped (and logged) rather than growing memory without bound.
const MAX_PENDING: usize = 100_000;

impl Registry {
    /// Counts one pull of a manifest (GET with a body).
    pub fn count_pull(&self, repo: &RepoName, digest: &Digest) {
        let now = self.clock.now();
        let mut pending = self.pulls.0.lock().unwrap_or_else(|e| e.into_inner());
        let full = pending.len() >= MAX_PENDING;
        match pending.get_mut(&(repo.clone(), digest.clone())) {
            Some((n, at)) => {
                *n += 1;
                *at = now;
            }
            None if full => tracing::warn!(repo = %repo, "pull counter full; a pull was not counted"),
            None => {
                pending.insert((repo.clone(), digest.clone()), (1, now));
            }
        }
    }

    /// Writes the counted pulls; returns how many manifests were updated.
    pub async fn flush_pulls(&self) -> Result<usize, Error> {
        let batch: Vec<_> = {
            let mut pending = self.pulls.0.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain().map(|((r, d), (n, at))| (r, d, n, at)).collect()
        };
        if let Err(e) = self.meta.add_pulls(&batch).await {
            // Put them back so a passing database hiccup loses no count.
            let mut pending = self.pulls.0.lock().unwrap_or_else(|e| e.into_inner());
            for (r, d, n, at) in batch {
                let entry = pending.entry((r, d)).or_insert((0, at));
                entry.0 += n;
                entry.1 = entry.1.max(at);
            }
            return Err(e.into());
        }
        Ok(batch.len())
    }

    /// Pull count and last pull of a manifest, as last flushed.
    pub async fn pull_stats(&self, repo: &RepoName, digest: &Digest) -> Result<Option<PullStats>, Error> {
        Ok(self.meta.pulls(repo, digest).await?)
    }
}
