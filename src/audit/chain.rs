//! Ledger events and their hash chain (DESIGN §7):
//! `hash = sha256(prev_hash || JCS(event without hash))`, lowercase hex, where JCS is the
//! RFC 8785 JSON Canonicalization Scheme over every stored field but `hash` itself, times are
//! RFC 3339 UTC with milliseconds (`2026-11-30T05:21:54.123Z`), and the first event's
//! `prev_hash` is [`GENESIS`] (64 zeros). `prev_hash` is the lowercase hex string itself, as
//! ASCII bytes.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The `prev_hash` of the first event: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened. Stored and hashed as its dotted name (`tag.move`). Its schema (a derive, no
/// I/O) is the one the REST API's `action` filter documents, so the two cannot drift apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum EventKind {
    /// A repository got its first blob or manifest.
    #[serde(rename = "repository.create")]
    RepositoryCreate,
    /// An upload was verified and its blob linked to a repository.
    #[serde(rename = "blob.commit")]
    BlobCommit,
    /// A blob was linked to a repository from another one.
    #[serde(rename = "blob.mount")]
    BlobMount,
    /// A blob was unlinked from a repository.
    #[serde(rename = "blob.unlink")]
    BlobUnlink,
    /// A manifest was stored (first time in the repository).
    #[serde(rename = "manifest.put")]
    ManifestPut,
    /// A manifest was deleted.
    #[serde(rename = "manifest.delete")]
    ManifestDelete,
    /// A tag was created.
    #[serde(rename = "tag.create")]
    TagCreate,
    /// A tag moved to another digest.
    #[serde(rename = "tag.move")]
    TagMove,
    /// A tag was deleted.
    #[serde(rename = "tag.delete")]
    TagDelete,
    /// A write (manifest PUT) was refused by a rule: immutability or a precondition.
    #[serde(rename = "write.refuse")]
    WriteRefuse,
    /// A delete was refused by a rule: immutability or a reference.
    #[serde(rename = "delete.refuse")]
    DeleteRefuse,
    /// Requests refused by access control (repeats from one client counted in one event).
    #[serde(rename = "request.deny")]
    RequestDeny,
    /// Failed logins (repeats from one client counted in one event).
    #[serde(rename = "login.fail")]
    LoginFail,
    /// A robot token was created.
    #[serde(rename = "token.create")]
    TokenCreate,
    /// A robot token was revoked.
    #[serde(rename = "token.revoke")]
    TokenRevoke,
    /// The server started with a configuration (digests of its rules in `detail`).
    #[serde(rename = "config.load")]
    ConfigLoad,
    /// Garbage collection deleted blobs no repository linked (their digests and bytes in
    /// `detail`; one event per deleting transaction of at most `gc::BATCH` blobs).
    #[serde(rename = "gc.delete")]
    GcDelete,
    /// Retention deleted a tag or a manifest (`detail`: kind, policy, reasons, trigger).
    #[serde(rename = "retention.delete")]
    RetentionDelete,
    /// An admin forced a delete inside a rollback window (`detail`: reason, window).
    #[serde(rename = "delete.force")]
    DeleteForce,
}

impl EventKind {
    /// The dotted name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::RepositoryCreate => "repository.create",
            EventKind::BlobCommit => "blob.commit",
            EventKind::BlobMount => "blob.mount",
            EventKind::BlobUnlink => "blob.unlink",
            EventKind::ManifestPut => "manifest.put",
            EventKind::ManifestDelete => "manifest.delete",
            EventKind::TagCreate => "tag.create",
            EventKind::TagMove => "tag.move",
            EventKind::TagDelete => "tag.delete",
            EventKind::WriteRefuse => "write.refuse",
            EventKind::DeleteRefuse => "delete.refuse",
            EventKind::RequestDeny => "request.deny",
            EventKind::LoginFail => "login.fail",
            EventKind::TokenCreate => "token.create",
            EventKind::TokenRevoke => "token.revoke",
            EventKind::ConfigLoad => "config.load",
            EventKind::GcDelete => "gc.delete",
            EventKind::RetentionDelete => "retention.delete",
            EventKind::DeleteForce => "delete.force",
        }
    }

    /// Parses a dotted name.
    pub fn parse(s: &str) -> Option<EventKind> {
        serde_json::from_value(Value::String(s.to_string())).ok()
    }
}

/// An event before the ledger gives it a place: what the writer knows.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub action: EventKind,
    /// Who: a user or robot name, `anonymous`, or `cairn` for the server itself.
    pub actor: String,
    /// The client's address, when known.
    pub address: Option<String>,
    /// The repository concerned.
    pub repository: Option<String>,
    /// The tag concerned.
    pub tag: Option<String>,
    /// The digest concerned (the new one for a tag move).
    pub digest: Option<String>,
    /// The digest before (a tag move or delete).
    pub previous_digest: Option<String>,
    /// Anything else, as a JSON object (never a secret); `null` when there is nothing.
    pub detail: Value,
}

impl NewEvent {
    /// An event with only an action and an actor; fill the rest with the builder methods.
    pub fn new(action: EventKind, actor: &str, address: Option<&str>) -> NewEvent {
        NewEvent {
            action,
            actor: actor.to_string(),
            address: address.map(str::to_string),
            repository: None,
            tag: None,
            digest: None,
            previous_digest: None,
            detail: Value::Null,
        }
    }

    /// With a repository.
    pub fn repository(mut self, r: impl Into<String>) -> NewEvent {
        self.repository = Some(r.into());
        self
    }

    /// With a tag.
    pub fn tag(mut self, t: impl Into<String>) -> NewEvent {
        self.tag = Some(t.into());
        self
    }

    /// With a digest.
    pub fn digest(mut self, d: impl Into<String>) -> NewEvent {
        self.digest = Some(d.into());
        self
    }

    /// With the previous digest.
    pub fn previous(mut self, d: Option<impl Into<String>>) -> NewEvent {
        self.previous_digest = d.map(Into::into);
        self
    }

    /// With detail (a JSON object).
    pub fn detail(mut self, detail: Value) -> NewEvent {
        self.detail = detail;
        self
    }

    /// Gives the event its place after `prev` (`None` for the first event): its `seq`,
    /// `time` (`at_ms`, milliseconds since the epoch), `prev_hash` and `hash`.
    pub fn link(self, prev: Option<(i64, &str)>, at_ms: i64) -> Event {
        let (seq, prev_hash) = match prev {
            Some((seq, hash)) => (seq + 1, hash.to_string()),
            None => (1, GENESIS.to_string()),
        };
        let mut e = Event {
            seq,
            time: rfc3339_millis(at_ms),
            actor: self.actor,
            address: self.address,
            action: self.action.as_str().to_string(),
            repository: self.repository,
            tag: self.tag,
            digest: self.digest,
            previous_digest: self.previous_digest,
            detail: self.detail,
            prev_hash,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }
}

/// A ledger event as stored, exported and hashed. The JSON form (one line per event in
/// `cairn audit export`) has exactly these fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Who.
    pub actor: String,
    /// The client's address, or `null`.
    pub address: Option<String>,
    /// The dotted action name ([`EventKind::as_str`]).
    pub action: String,
    /// The repository, or `null`.
    pub repository: Option<String>,
    /// The tag, or `null`.
    pub tag: Option<String>,
    /// The digest, or `null`.
    pub digest: Option<String>,
    /// The digest before, or `null`.
    pub previous_digest: Option<String>,
    /// More about it: a JSON object, or `null`.
    pub detail: Value,
    /// The previous event's `hash` ([`GENESIS`] for seq 1).
    pub prev_hash: String,
    /// `sha256(prev_hash || JCS(every field above))`, lowercase hex.
    pub hash: String,
}

impl Event {
    /// The RFC 8785 canonical bytes of every field but `hash`.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut v {
            m.remove("hash");
        }
        serde_jcs::to_vec(&v).unwrap_or_default()
    }

    /// What `hash` must be: `sha256(prev_hash || canonical_bytes)` in lowercase hex.
    pub fn compute_hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.prev_hash.as_bytes());
        h.update(self.canonical_bytes());
        hex::encode(h.finalize())
    }
}

/// Milliseconds since the epoch as RFC 3339 UTC with exactly three fraction digits.
pub fn rfc3339_millis(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Why a chain does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// An event's `seq` is not the one after its predecessor's.
    #[error("seq {found}: expected seq {expected} (an event was deleted, inserted or reordered)")]
    Gap {
        /// The seq that should come next.
        expected: i64,
        /// The seq found.
        found: i64,
    },
    /// An event's `prev_hash` is not its predecessor's `hash`.
    #[error("seq {0}: prev_hash does not match the hash of the event before it")]
    Link(i64),
    /// An event's `hash` does not match its content.
    #[error("seq {0}: hash does not match the event's content (a stored field was edited)")]
    Hash(i64),
}

/// Checks events in order, continuing from `prev` (`None`: from the start of the chain).
/// Returns the last `(seq, hash)` checked.
pub fn verify<'a>(
    prev: Option<(i64, String)>,
    events: impl IntoIterator<Item = &'a Event>,
) -> Result<Option<(i64, String)>, ChainError> {
    let mut last = prev;
    for e in events {
        let (expected, prev_hash) = match &last {
            Some((seq, hash)) => (seq + 1, hash.as_str()),
            None => (1, GENESIS),
        };
        if e.seq != expected {
            return Err(ChainError::Gap { expected, found: e.seq });
        }
        if e.prev_hash != prev_hash {
            return Err(ChainError::Link(e.seq));
        }
        if e.compute_hash() != e.hash {
            return Err(ChainError::Hash(e.seq));
        }
        last = Some((e.seq, e.hash.clone()));
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chain(n: usize) -> Vec<Event> {
        let mut out: Vec<Event> = Vec::new();
        for i in 0..n {
            let prev = out.last().map(|e| (e.seq, e.hash.as_str()));
            let e = NewEvent::new(EventKind::TagCreate, "ci", Some("127.0.0.1"))
                .repository("team/app")
                .tag(format!("v{i}"))
                .digest(format!("sha256:{}", "a".repeat(64)))
                .link(prev, 1_700_000_000_000 + i as i64);
            out.push(e);
        }
        out
    }

    #[test]
    fn the_first_event_hashes_over_genesis_and_its_canonical_bytes() {
        let e = NewEvent::new(EventKind::TagMove, "alice", None)
            .repository("r")
            .tag("prod")
            .digest("sha256:b")
            .previous(Some("sha256:a"))
            .detail(json!({ "z": 1, "a": "é\n" }))
            .link(None, 0);
        assert_eq!(e.seq, 1);
        assert_eq!(e.time, "1970-01-01T00:00:00.000Z");
        assert_eq!(e.prev_hash, GENESIS);
        // Keys sorted, no whitespace, non-ASCII literal, control characters escaped (RFC 8785).
        let canonical = String::from_utf8(e.canonical_bytes()).unwrap();
        assert_eq!(
            canonical,
            r#"{"action":"tag.move","actor":"alice","address":null,"detail":{"a":"é\n","z":1},"digest":"sha256:b","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","previous_digest":"sha256:a","repository":"r","seq":1,"tag":"prod","time":"1970-01-01T00:00:00.000Z"}"#
        );
        let mut h = Sha256::new();
        h.update(GENESIS.as_bytes());
        h.update(canonical.as_bytes());
        assert_eq!(e.hash, hex::encode(h.finalize()));
    }

    #[test]
    fn verify_finds_the_first_bad_seq_for_each_kind_of_tampering() {
        let good = chain(6);
        assert_eq!(verify(None, &good).unwrap(), Some((6, good[5].hash.clone())));
        let mut edited = good.clone();
        edited[2].tag = Some("evil".into());
        assert_eq!(verify(None, &edited), Err(ChainError::Hash(3)));
        let mut deleted = good.clone();
        deleted.remove(3);
        assert_eq!(verify(None, &deleted), Err(ChainError::Gap { expected: 4, found: 5 }));
        let mut swapped = good.clone();
        swapped.swap(1, 2);
        assert_eq!(verify(None, &swapped), Err(ChainError::Gap { expected: 2, found: 3 }));
        let mut relinked = good.clone();
        relinked[4].seq = 5;
        relinked[4].prev_hash = GENESIS.into();
        assert_eq!(verify(None, &relinked), Err(ChainError::Link(5)));
        // Verification continues across a boundary (an archive, then the database).
        let tail = verify(None, &good[..3]).unwrap();
        assert_eq!(verify(tail, &good[3..]).unwrap(), Some((6, good[5].hash.clone())));
    }

    #[test]
    fn kinds_round_trip() {
        for k in [EventKind::TagMove, EventKind::ConfigLoad, EventKind::DeleteRefuse] {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(EventKind::parse("nope"), None);
    }
}
