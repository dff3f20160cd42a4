//! The ledger's service side (DESIGN §7): signed checkpoints when due, the `config.load`
//! event at start, denied requests and failed logins counted per client and written as one
//! event per client and kind (so a flood cannot grow the ledger without bound), and reading
//! events. Verification, export and archives are in `ledger_files`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use serde_json::json;

use super::Registry;
use crate::audit::chain::rfc3339_millis;
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
        let mut tx = self.meta.begin(self.clock.now()).await?;
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
        let mut tx = self.meta.begin(self.clock.now()).await?;
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
}
