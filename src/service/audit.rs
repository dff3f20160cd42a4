//! The ledger's service side (DESIGN §7): signed checkpoints when due, the `config.load`
//! event at start, denied requests and failed logins counted per client and written as one
//! event per client and kind (so a flood cannot grow the ledger without bound), reading
//! events, and verification of the whole chain with its checkpoints.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Registry;
use crate::audit::chain::{self, ChainError, rfc3339_millis};
use crate::audit::{Checkpoint, CheckpointKey, Event, EventKind, NewEvent};
use crate::error::Error;
use crate::meta::{EventFilter, millis};

/// Repeated refusals waiting to be ledgered: `(kind, actor, address, repository)` ->
/// `(count, first, last, reason)`.
#[derive(Default)]
pub(super) struct DenialTally(Mutex<HashMap<(EventKind, String, String, String), Tally>>);

struct Tally {
    count: u64,
    first: SystemTime,
    last: SystemTime,
    reason: String,
}

/// At most this many distinct (kind, client) keys wait for a flush; more are dropped and
/// the drop is counted in the next event's detail.
const MAX_DENIAL_KEYS: usize = 10_000;

/// How many events one verification page reads.
const PAGE: u32 = 5_000;

/// What `verify_ledger` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Events checked in the database.
    pub events: u64,
    /// The head reached `(seq, hash)`.
    pub head: Option<(i64, String)>,
    /// Checkpoints whose signature and hash were checked.
    pub checkpoints: u64,
}

/// Why a ledger does not verify; `seq` is the first bad event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The chain is broken.
    #[error("ledger broken at {0}")]
    Chain(#[from] ChainError),
    /// A checkpoint's signature does not verify with the key.
    #[error("checkpoint at seq {0}: the signature does not verify with the ledger's public key")]
    Signature(i64),
    /// A checkpoint names a hash the chain does not have at its seq.
    #[error(
        "checkpoint at seq {seq}: it signed hash {signed}, but the ledger has {stored} there (an event was edited or replaced)"
    )]
    CheckpointMismatch {
        /// The seq.
        seq: i64,
        /// What was signed.
        signed: String,
        /// What the database has (empty when the event is missing).
        stored: String,
    },
    /// The chain ends before a signed checkpoint: events were cut from the tail.
    #[error(
        "the ledger ends at seq {head} but a checkpoint covers seq {checkpoint}: events were removed from the tail"
    )]
    Truncated {
        /// The last seq in the database.
        head: i64,
        /// The highest checkpointed seq.
        checkpoint: i64,
    },
    /// The head row disagrees with the last event.
    #[error("the ledger head says seq {head_seq} but the last event is seq {last_seq}")]
    Head {
        /// The head row's seq.
        head_seq: i64,
        /// The last stored event's seq.
        last_seq: i64,
    },
}

impl Registry {
    /// Signs a checkpoint of the head when `every` events passed since the last one, or
    /// `interval` passed with new events. Returns the new checkpoint, if one was signed.
    pub async fn checkpoint_if_due(
        &self,
        key: &CheckpointKey,
        every: u64,
        interval: Duration,
    ) -> Result<Option<Checkpoint>, Error> {
        let Some((seq, hash)) = self.meta.ledger_head().await? else { return Ok(None) };
        let last = self.meta.last_checkpoint().await?;
        let now = self.clock.now();
        let due = match &last {
            None => true,
            Some(cp) if cp.seq >= seq => false,
            Some(cp) => {
                let signed_at = time::OffsetDateTime::parse(&cp.time, &time::format_description::well_known::Rfc3339)
                    .map(|t| {
                        SystemTime::UNIX_EPOCH
                            + Duration::from_millis((t.unix_timestamp_nanos() / 1_000_000).max(0) as u64)
                    })
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                (seq - cp.seq) as u64 >= every || now.duration_since(signed_at).unwrap_or_default() >= interval
            }
        };
        if !due {
            return Ok(None);
        }
        let cp = key.sign(seq, &hash, &rfc3339_millis(millis(now)));
        self.meta.add_checkpoint(&cp).await?;
        Ok(Some(cp))
    }

    /// Ledgers the configuration the server started with: digests of its rules.
    pub async fn record_config_load(&self, detail: serde_json::Value) -> Result<(), Error> {
        let mut tx = self.meta.begin().await?;
        tx.append_events(vec![NewEvent::new(EventKind::ConfigLoad, "cairn", None).detail(detail)], self.clock.now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Counts a refused request (`RequestDeny`) or failed login (`LoginFail`) by `actor` from
    /// `address`; written by [`Registry::flush_denials`] as one event per client and kind.
    pub fn count_denial(&self, kind: EventKind, actor: &str, address: &str, repository: &str, reason: &str) {
        let now = self.clock.now();
        let mut tally = self.denials.0.lock().unwrap_or_else(|e| e.into_inner());
        let key = (kind, actor.to_string(), address.to_string(), repository.to_string());
        if let Some(t) = tally.get_mut(&key) {
            t.count += 1;
            t.last = now;
            return;
        }
        if tally.len() >= MAX_DENIAL_KEYS {
            return;
        }
        tally.insert(key, Tally { count: 1, first: now, last: now, reason: reason.to_string() });
    }

    /// Writes the counted denials and failed logins, one event per client and kind.
    pub async fn flush_denials(&self) -> Result<usize, Error> {
        let drained: Vec<_> = {
            let mut tally = self.denials.0.lock().unwrap_or_else(|e| e.into_inner());
            tally.drain().collect()
        };
        if drained.is_empty() {
            return Ok(0);
        }
        let n = drained.len();
        let events = drained
            .into_iter()
            .map(|((kind, actor, address, repository), t)| {
                let mut e = NewEvent::new(kind, &actor, Some(&address)).detail(json!({
                    "count": t.count,
                    "first": rfc3339_millis(millis(t.first)),
                    "last": rfc3339_millis(millis(t.last)),
                    "reason": t.reason,
                }));
                if !repository.is_empty() {
                    e = e.repository(repository);
                }
                e
            })
            .collect();
        let mut tx = self.meta.begin().await?;
        tx.append_events(events, self.clock.now()).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Ledger events matching `filter`, in seq order, at most `limit`.
    pub async fn events(&self, filter: &EventFilter, limit: u32) -> Result<Vec<Event>, Error> {
        Ok(self.meta.events(filter, limit).await?)
    }

    /// Signed checkpoints after `after`, at most `limit`.
    pub async fn checkpoints(&self, after: Option<i64>, limit: u32) -> Result<Vec<Checkpoint>, Error> {
        Ok(self.meta.checkpoints(after, limit).await?)
    }

    /// Recomputes the chain from the archive cut (or the first event) to the head, and checks
    /// every checkpoint's signature with `public_key` (raw Ed25519) and its hash against the
    /// chain. `progress` is called with each verified seq.
    pub async fn verify_ledger(&self, public_key: &[u8], mut progress: impl FnMut(i64)) -> Result<VerifyReport, Error> {
        let start = self.meta.ledger_archive_cut().await?;
        let mut last = start.clone();
        let mut checked = 0u64;
        let checkpoints = self.meta.checkpoints(None, u32::MAX).await?;
        let mut by_seq: HashMap<i64, &Checkpoint> = HashMap::new();
        for cp in &checkpoints {
            if !cp.verify(public_key) {
                return Err(verify_failed(VerifyError::Signature(cp.seq)));
            }
            by_seq.insert(cp.seq, cp);
        }
        let mut cp_checked = 0u64;
        loop {
            let filter = EventFilter { after: last.as_ref().map(|(s, _)| *s), ..Default::default() };
            let page = self.meta.events(&filter, PAGE).await?;
            if page.is_empty() {
                break;
            }
            // The first event after the cut must link to the cut (a gap there is a deletion).
            last = chain::verify(last, &page).map_err(|e| verify_failed(e.into()))?;
            for e in &page {
                if let Some(cp) = by_seq.get(&e.seq) {
                    if cp.hash != e.hash {
                        return Err(verify_failed(VerifyError::CheckpointMismatch {
                            seq: e.seq,
                            signed: cp.hash.clone(),
                            stored: e.hash.clone(),
                        }));
                    }
                    cp_checked += 1;
                }
            }
            checked += page.len() as u64;
            if let Some((s, _)) = &last {
                progress(*s);
            }
        }
        let last_seq = last.as_ref().map_or(0, |(s, _)| *s);
        if let Some(max_cp) = checkpoints.iter().map(|c| c.seq).max()
            && max_cp > last_seq
        {
            return Err(verify_failed(VerifyError::Truncated { head: last_seq, checkpoint: max_cp }));
        }
        // Every checkpoint in (cut, last] was compared during the walk, since the chain there has
        // no gaps; checkpoints at or before the cut are checked against the archive file.
        if let Some((head_seq, _)) = self.meta.ledger_head().await?
            && head_seq != last_seq
        {
            return Err(verify_failed(VerifyError::Head { head_seq, last_seq }));
        }
        Ok(VerifyReport { events: checked, head: last, checkpoints: cp_checked })
    }
}

fn verify_failed(e: VerifyError) -> Error {
    Error::LedgerInvalid(e.to_string())
}
