//! Verifying a stream of events and checkpoints, with no I/O: the one walk behind
//! `cairn audit verify` (database, archive files) and the offline check of an export.
//! [`ChainVerifier`] takes events in seq order and checks each against the one before it
//! (`chain::verify`), the checkpoints it was given up front (the database's table) as the walk
//! passes their seq, and checkpoint lines as they come (files). Every error names the first bad
//! seq.

use std::collections::BTreeMap;

use super::chain::{self, ChainError, GENESIS};
use super::{Checkpoint, Event};

/// Why a ledger (database, archive or export) does not verify. Each message starts with the
/// first bad seq (or the checkpoint's), so an operator knows where to look.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The next event is not the seq expected: one is missing (deleted), or the order changed.
    #[error(
        "seq {expected}: {}",
        if *found > *expected {
            format!("missing (the next event is seq {found}): an event was deleted")
        } else {
            format!("expected next, but found seq {found}: events were inserted, repeated or reordered")
        }
    )]
    Gap {
        /// The seq that should come next (the first bad one).
        expected: i64,
        /// The seq found instead.
        found: i64,
    },
    /// An event's `prev_hash` is not the hash of the event before it.
    #[error(
        "seq {0}: prev_hash is not the hash of the event before it: events were inserted, removed, reordered or swapped"
    )]
    Link(i64),
    /// An event's `hash` does not recompute from its content.
    #[error("seq {0}: hash does not match the event's content: a field was edited")]
    Hash(i64),
    /// A checkpoint's signature does not verify with the public key.
    #[error(
        "checkpoint at seq {0}: the signature does not verify with the public key (the checkpoint was forged or edited, or this is the wrong key)"
    )]
    Signature(i64),
    /// The chain recomputes, but not to the hash a checkpoint signed: it was rewritten and
    /// re-hashed up to that seq.
    #[error(
        "seq {seq}: the checkpoint signed hash {signed} here but the chain has {found}: events up to seq {seq} were rewritten"
    )]
    CheckpointMismatch {
        /// The checkpoint's seq.
        seq: i64,
        /// What was signed.
        signed: String,
        /// What the chain has.
        found: String,
    },
    /// The chain ends before a signed checkpoint: events were cut from the tail.
    #[error(
        "seq {}: missing: the ledger ends at seq {head} but a signed checkpoint covers seq {checkpoint} (events were cut from the tail)",
        head + 1
    )]
    Truncated {
        /// The last seq present.
        head: i64,
        /// The highest checkpointed seq.
        checkpoint: i64,
    },
    /// The database's head row disagrees with its last event.
    #[error(
        "seq {}: the ledger head row says seq {head_seq} (hash {head_hash}) but the last event is seq {last_seq}: {}",
        (*head_seq).min(*last_seq) + 1,
        if head_seq > last_seq { "events were cut from the tail" } else { "events were appended outside Cairn" }
    )]
    Head {
        /// The head row's seq.
        head_seq: i64,
        /// The head row's hash.
        head_hash: String,
        /// The last event's seq.
        last_seq: i64,
    },
    /// The database's archive cut is not where the archive (or its checkpoint) ends.
    #[error("seq {seq}: {message}")]
    Cut {
        /// The cut's seq.
        seq: i64,
        /// What disagrees.
        message: String,
    },
    /// A file's last event has no checkpoint, so the public key cannot vouch for its events.
    #[error(
        "seq {last}: not covered by a checkpoint in the file ({}); only events up to a signed checkpoint can be verified with the public key",
        match last_checkpoint { Some(c) => format!("the last checkpoint is at seq {c}"), None => "it has none".to_string() }
    )]
    Uncovered {
        /// The last event.
        last: i64,
        /// The last checkpoint seen, if any.
        last_checkpoint: Option<i64>,
    },
    /// A checkpoint line that does not follow the event it covers.
    #[error(
        "checkpoint at seq {seq}: out of place ({}); a checkpoint line comes right after the event it covers",
        match after { Some(s) => format!("it follows seq {s}"), None => "no event before it".to_string() }
    )]
    Misplaced {
        /// The checkpoint's seq.
        seq: i64,
        /// The event line before it.
        after: Option<i64>,
    },
    /// A file's first event does not link to the previous file's last event.
    #[error("seq {seq}: prev_hash is not the hash of seq {} at the end of {previous}", seq - 1)]
    FileLink {
        /// The first seq of the file.
        seq: i64,
        /// The previous file.
        previous: String,
    },
    /// A line or row that cannot be read as an event or checkpoint.
    #[error("{0}")]
    Unreadable(String),
    /// Nothing to verify.
    #[error("no events")]
    Empty,
}

impl From<ChainError> for VerifyError {
    fn from(e: ChainError) -> VerifyError {
        match e {
            ChainError::Gap { expected, found } => VerifyError::Gap { expected, found },
            ChainError::Link(s) => VerifyError::Link(s),
            ChainError::Hash(s) => VerifyError::Hash(s),
        }
    }
}

/// Where a walk starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// At seq 1, whose `prev_hash` must be 64 zeros.
    Genesis,
    /// After this `(seq, hash)`, already verified (an archive's end).
    After(i64, String),
    /// Wherever the first event is (a partial export): its `prev_hash` is taken as given, and
    /// is vouched for by the checkpoint that covers the events after it. Seq 1 still needs
    /// 64 zeros.
    Anchored,
}

/// What a walk verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The first event: `(seq, prev_hash)`.
    pub first: Option<(i64, String)>,
    /// The last event: `(seq, hash)`.
    pub last: Option<(i64, String)>,
    /// Events checked.
    pub events: u64,
    /// Checkpoints whose signature and hash were checked against an event.
    pub checkpoints: u64,
    /// The highest seq a checked checkpoint covers.
    pub last_checkpoint: Option<i64>,
}

/// Checks events in seq order and the checkpoints over them, continuing from a [`Start`].
pub struct ChainVerifier<'k> {
    key: &'k [u8],
    start: Start,
    known: BTreeMap<i64, Checkpoint>,
    done: Verified,
}

impl<'k> ChainVerifier<'k> {
    /// A walk from `start` that checks signatures with `public_key` (raw Ed25519).
    pub fn new(public_key: &'k [u8], start: Start) -> ChainVerifier<'k> {
        ChainVerifier { key: public_key, start, known: BTreeMap::new(), done: Verified::default() }
    }

    /// Checkpoints stored apart from the events (the database's table). Each is checked when
    /// the walk reaches its seq (signature, then hash), so errors come in seq order; those at
    /// or before an [`Start::After`] are checked now (signature only: their events are not in
    /// this walk), and those beyond the last event by [`ChainVerifier::finish_stored`].
    pub fn with_checkpoints(mut self, checkpoints: Vec<Checkpoint>) -> Result<ChainVerifier<'k>, VerifyError> {
        let mut sorted = checkpoints;
        sorted.sort_by_key(|c| c.seq);
        let before = match &self.start {
            Start::After(seq, _) => *seq,
            _ => 0,
        };
        for cp in sorted {
            if cp.seq <= before && !cp.verify(self.key) {
                return Err(VerifyError::Signature(cp.seq));
            }
            self.known.insert(cp.seq, cp);
        }
        Ok(self)
    }

    /// The stored checkpoint at `seq`, if one was given.
    pub fn known_checkpoint(&self, seq: i64) -> Option<&Checkpoint> {
        self.known.get(&seq)
    }

    /// Checks the next event.
    pub fn event(&mut self, e: &Event) -> Result<(), VerifyError> {
        let prev = match (&self.done.last, &self.start) {
            (Some(last), _) => Some(last.clone()),
            (None, Start::Genesis) => None,
            (None, Start::After(seq, hash)) => Some((*seq, hash.clone())),
            (None, Start::Anchored) if e.seq > 1 => Some((e.seq - 1, e.prev_hash.clone())),
            (None, Start::Anchored) => None,
        };
        chain::verify(prev, [e])?;
        if self.done.first.is_none() {
            self.done.first = Some((e.seq, e.prev_hash.clone()));
        }
        self.done.last = Some((e.seq, e.hash.clone()));
        self.done.events += 1;
        if let Some(cp) = self.known.get(&e.seq) {
            if !cp.verify(self.key) {
                return Err(VerifyError::Signature(cp.seq));
            }
            let cp = cp.clone();
            self.covers(&cp, &e.hash)?;
        }
        Ok(())
    }

    /// Checks a checkpoint line: it covers the event just checked.
    pub fn checkpoint(&mut self, cp: &Checkpoint) -> Result<(), VerifyError> {
        let Some((seq, hash)) = self.done.last.clone() else {
            return Err(VerifyError::Misplaced { seq: cp.seq, after: None });
        };
        if cp.seq != seq {
            return Err(VerifyError::Misplaced { seq: cp.seq, after: Some(seq) });
        }
        if !cp.verify(self.key) {
            return Err(VerifyError::Signature(cp.seq));
        }
        self.covers(cp, &hash)
    }

    fn covers(&mut self, cp: &Checkpoint, hash: &str) -> Result<(), VerifyError> {
        if cp.hash != hash {
            return Err(VerifyError::CheckpointMismatch {
                seq: cp.seq,
                signed: cp.hash.clone(),
                found: hash.to_string(),
            });
        }
        if self.done.last_checkpoint != Some(cp.seq) {
            self.done.checkpoints += 1;
            self.done.last_checkpoint = Some(cp.seq);
        }
        Ok(())
    }

    /// After the last event: no stored checkpoint may lie beyond it (a cut tail). A forged
    /// one there is reported as forged, not as a cut.
    pub fn finish_stored(&self) -> Result<(), VerifyError> {
        let head = self.last_seq();
        let beyond: Vec<&Checkpoint> = self.known.range(head + 1..).map(|(_, cp)| cp).collect();
        if let Some(bad) = beyond.iter().find(|cp| !cp.verify(self.key)) {
            return Err(VerifyError::Signature(bad.seq));
        }
        match beyond.last() {
            Some(cp) => Err(VerifyError::Truncated { head, checkpoint: cp.seq }),
            None => Ok(()),
        }
    }

    /// After a file's last line: it had events, and a checkpoint covers the last one.
    pub fn finish_file(&self) -> Result<(), VerifyError> {
        let Some((last, _)) = &self.done.last else { return Err(VerifyError::Empty) };
        if self.done.last_checkpoint != Some(*last) {
            return Err(VerifyError::Uncovered { last: *last, last_checkpoint: self.done.last_checkpoint });
        }
        Ok(())
    }

    /// The last seq checked (or where the walk started; 0 before seq 1).
    pub fn last_seq(&self) -> i64 {
        match (&self.done.last, &self.start) {
            (Some((s, _)), _) => *s,
            (None, Start::After(s, _)) => *s,
            _ => 0,
        }
    }

    /// The last `(seq, hash)` checked, or the start's.
    pub fn last(&self) -> Option<(i64, String)> {
        match (&self.done.last, &self.start) {
            (Some(l), _) => Some(l.clone()),
            (None, Start::After(s, h)) => Some((*s, h.clone())),
            _ => None,
        }
    }

    /// What was verified so far.
    pub fn verified(&self) -> &Verified {
        &self.done
    }
}

/// True when `(seq, prev_hash)` is the start of the whole chain.
pub fn is_genesis(first: &(i64, String)) -> bool {
    first.0 == 1 && first.1 == GENESIS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{CheckpointKey, EventKind, NewEvent};

    fn chain(n: usize) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            out.push(NewEvent::new(EventKind::TagCreate, "ci", None).tag(format!("v{i}")).link(prev, 1_000 * i as i64));
        }
        out
    }

    fn key() -> CheckpointKey {
        CheckpointKey::from_pkcs8(&CheckpointKey::generate_pkcs8().unwrap()).unwrap()
    }

    fn walk(v: &mut ChainVerifier<'_>, events: &[Event]) -> Result<(), VerifyError> {
        events.iter().try_for_each(|e| v.event(e))
    }

    #[test]
    fn stored_checkpoints_are_matched_as_the_walk_passes_them() {
        let k = key();
        let events = chain(8);
        let cps = vec![k.sign(4, &events[3].hash, "t"), k.sign(8, &events[7].hash, "t")];
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(cps.clone()).unwrap();
        walk(&mut v, &events).unwrap();
        v.finish_stored().unwrap();
        assert_eq!(v.verified().checkpoints, 2);
        assert_eq!(v.verified().last_checkpoint, Some(8));

        // Cut back to seq 6: the checkpoint at 8 says events are missing from 7 on.
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(cps.clone()).unwrap();
        walk(&mut v, &events[..6]).unwrap();
        let err = v.finish_stored().unwrap_err();
        assert_eq!(err, VerifyError::Truncated { head: 6, checkpoint: 8 });
        assert!(err.to_string().starts_with("seq 7: missing"), "{err}");

        // A re-hashed rewrite recomputes, but not to the signed hash.
        let mut forged = events.clone();
        forged[1].actor = "mallory".into();
        for i in 1..forged.len() {
            forged[i].prev_hash = forged[i - 1].hash.clone();
            forged[i].hash = forged[i].compute_hash();
        }
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(cps.clone()).unwrap();
        let err = walk(&mut v, &forged).unwrap_err();
        assert!(matches!(err, VerifyError::CheckpointMismatch { seq: 4, .. }), "{err}");

        // A checkpoint signed by another key is found when the walk reaches it, after any bad
        // event before it; beyond the end it is forged, not evidence of a cut.
        let mut bad = cps.clone();
        bad[1] = key().sign(8, &events[7].hash, "t");
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(bad.clone()).unwrap();
        assert_eq!(walk(&mut v, &events), Err(VerifyError::Signature(8)));
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(bad.clone()).unwrap();
        walk(&mut v, &events[..6]).unwrap();
        assert_eq!(v.finish_stored(), Err(VerifyError::Signature(8)));
        let mut edited = events.clone();
        edited[2].tag = Some("evil".into());
        let mut v = ChainVerifier::new(k.public_key(), Start::Genesis).with_checkpoints(bad.clone()).unwrap();
        assert_eq!(walk(&mut v, &edited), Err(VerifyError::Hash(3)));
        // Before an `After` start, signatures are checked up front.
        let after = Start::After(8, events[7].hash.clone());
        assert_eq!(
            ChainVerifier::new(k.public_key(), after).with_checkpoints(bad).err(),
            Some(VerifyError::Signature(8))
        );
    }

    #[test]
    fn file_walks_need_checkpoint_lines_after_their_event_and_at_the_end() {
        let k = key();
        let events = chain(5);
        let mut v = ChainVerifier::new(k.public_key(), Start::Anchored);
        walk(&mut v, &events[2..]).unwrap();
        assert_eq!(v.finish_file(), Err(VerifyError::Uncovered { last: 5, last_checkpoint: None }));
        assert_eq!(
            v.checkpoint(&k.sign(4, &events[3].hash, "t")),
            Err(VerifyError::Misplaced { seq: 4, after: Some(5) })
        );
        v.checkpoint(&k.sign(5, &events[4].hash, "t")).unwrap();
        v.finish_file().unwrap();
        assert_eq!(v.verified().first, Some((3, events[1].hash.clone())));
        assert!(!is_genesis(v.verified().first.as_ref().unwrap()));

        // Anchored still holds seq 1 to the genesis prev_hash.
        let mut first = events[0].clone();
        first.prev_hash = "f".repeat(64);
        first.hash = first.compute_hash();
        let mut v = ChainVerifier::new(k.public_key(), Start::Anchored);
        assert_eq!(v.event(&first), Err(VerifyError::Link(1)));
        assert_eq!(ChainVerifier::new(k.public_key(), Start::Anchored).finish_file(), Err(VerifyError::Empty));
    }

    #[test]
    fn messages_name_the_first_bad_seq() {
        assert!(VerifyError::Gap { expected: 4, found: 5 }.to_string().starts_with("seq 4: missing"));
        assert!(VerifyError::Gap { expected: 4, found: 3 }.to_string().starts_with("seq 4: expected next"));
        let head = VerifyError::Head { head_seq: 9, head_hash: "h".into(), last_seq: 7 };
        assert!(head.to_string().starts_with("seq 8: "), "{head}");
        let head = VerifyError::Head { head_seq: 7, head_hash: "h".into(), last_seq: 9 };
        assert!(head.to_string().starts_with("seq 8: "), "{head}");
        assert!(VerifyError::Hash(3).to_string().starts_with("seq 3: "));
        assert!(VerifyError::Link(3).to_string().starts_with("seq 3: "));
    }
}
