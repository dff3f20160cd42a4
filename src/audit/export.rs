//! The ledger's file format, shared by `cairn audit export` and archive files: JSON lines, one
//! object per line (UTF-8, `\n` after each line), in seq order.
//!
//! - An event line is exactly the [`Event`] JSON object: the twelve keys `seq`, `time`, `actor`,
//!   `address`, `action`, `repository`, `tag`, `digest`, `previous_digest`, `detail`,
//!   `prev_hash`, `hash`, no more and no fewer.
//! - A checkpoint line is `{"checkpoint": {"seq", "hash", "time", "signature"}}` (a
//!   [`Checkpoint`]) and comes right after the event line it covers (the one with its seq).
//!
//! A file verifies ([`crate::audit::verify`]) when its events are consecutive, each hash
//! recomputes, each `prev_hash` is the hash before it (64 zeros for seq 1), every checkpoint's
//! signature verifies with the public key and names the hash of its event, and the last event
//! has a checkpoint.

use serde_json::{Map, Value};

use super::{Checkpoint, Event};

/// The keys of an event line, in the order Cairn writes them.
pub const EVENT_KEYS: [&str; 12] = [
    "seq",
    "time",
    "actor",
    "address",
    "action",
    "repository",
    "tag",
    "digest",
    "previous_digest",
    "detail",
    "prev_hash",
    "hash",
];

/// The keys of a checkpoint line's object.
pub const CHECKPOINT_KEYS: [&str; 4] = ["seq", "hash", "time", "signature"];

/// One line of an export or archive file.
#[derive(Debug, Clone, PartialEq)]
pub enum Line {
    /// An event.
    Event(Event),
    /// A signed checkpoint over the event line before it.
    Checkpoint(Checkpoint),
}

impl Line {
    /// The line as written, without its newline.
    pub fn to_json(&self) -> String {
        match self {
            Line::Event(e) => serde_json::to_string(e).unwrap_or_default(),
            Line::Checkpoint(cp) => format!(r#"{{"checkpoint":{}}}"#, serde_json::to_string(cp).unwrap_or_default()),
        }
    }

    /// Reads one line strictly: unknown or missing keys are errors, so every byte of an event
    /// line is covered by its hash.
    pub fn parse(text: &str) -> Result<Line, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(obj) = v else { return Err("not a JSON object".into()) };
        if obj.len() == 1
            && let Some(cp) = obj.get("checkpoint")
        {
            let Value::Object(inner) = cp else { return Err("\"checkpoint\" is not an object".into()) };
            exact_keys(inner, &CHECKPOINT_KEYS, "checkpoint")?;
            return serde_json::from_value(cp.clone()).map(Line::Checkpoint).map_err(|e| format!("checkpoint: {e}"));
        }
        let what = match obj.get("seq").and_then(Value::as_i64) {
            Some(seq) => format!("event seq {seq}"),
            None => "event".to_string(),
        };
        exact_keys(&obj, &EVENT_KEYS, &what)?;
        serde_json::from_value(Value::Object(obj)).map(Line::Event).map_err(|e| format!("{what}: {e}"))
    }
}

fn exact_keys(obj: &Map<String, Value>, keys: &[&str], what: &str) -> Result<(), String> {
    if let Some(extra) = obj.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(format!("{what}: unexpected key {extra:?}"));
    }
    if let Some(missing) = keys.iter().find(|k| !obj.contains_key(**k)) {
        return Err(format!("{what}: missing key {missing:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{EventKind, NewEvent};

    #[test]
    fn lines_round_trip_and_event_lines_are_exactly_the_event_json() {
        let e = NewEvent::new(EventKind::TagCreate, "ci", None).repository("r").tag("v1").link(None, 0);
        let line = Line::Event(e.clone()).to_json();
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v, serde_json::to_value(&e).unwrap());
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        let mut want = EVENT_KEYS.to_vec();
        want.sort();
        assert_eq!(keys, want);
        assert!(line.starts_with(r#"{"seq":1,"time":"#), "written in the Event's field order: {line}");
        assert_eq!(Line::parse(&line).unwrap(), Line::Event(e.clone()));

        let cp = Checkpoint { seq: 1, hash: e.hash.clone(), time: e.time.clone(), signature: "c2ln".into() };
        let line = Line::Checkpoint(cp.clone()).to_json();
        assert!(line.starts_with(r#"{"checkpoint":{"seq":1,"hash":"#), "{line}");
        assert_eq!(Line::parse(&line).unwrap(), Line::Checkpoint(cp));
    }

    #[test]
    fn parse_refuses_extra_and_missing_keys() {
        let e = NewEvent::new(EventKind::TagCreate, "ci", None).link(None, 0);
        let mut v = serde_json::to_value(&e).unwrap();
        v["note"] = "hidden".into();
        assert_eq!(Line::parse(&v.to_string()).unwrap_err(), "event seq 1: unexpected key \"note\"");
        let mut v = serde_json::to_value(&e).unwrap();
        v.as_object_mut().unwrap().remove("address");
        assert_eq!(Line::parse(&v.to_string()).unwrap_err(), "event seq 1: missing key \"address\"");
        assert!(Line::parse(r#"{"checkpoint":{"seq":1,"hash":"h","time":"t"}}"#).unwrap_err().contains("signature"));
        assert!(Line::parse("[1]").is_err());
        assert!(Line::parse("{").unwrap_err().starts_with("not JSON"));
    }

    /// The README's "A worked example": a real event and checkpoint from a running server.
    #[test]
    fn the_readme_worked_example_recomputes() {
        let event = r#"{"seq":6,"time":"2026-11-30T06:48:09.008Z","actor":"anonymous","address":"127.0.0.1","action":"tag.create","repository":"team/app","tag":"1.0","digest":"sha256:a3aa9a6043e00956389f9e9ac582e89b5acda67f142cb2b9f4ca1ab146b651d7","previous_digest":null,"detail":null,"prev_hash":"59039314fe08ddb87f8aa3eddf65e0cf99e15f710b16d04b77f8a179603bbd2f","hash":"c5d305d7274f983cbac3c6d202bdd7dec3b8101316f41add7e2523468ea35739"}"#;
        let canonical = r#"{"action":"tag.create","actor":"anonymous","address":"127.0.0.1","detail":null,"digest":"sha256:a3aa9a6043e00956389f9e9ac582e89b5acda67f142cb2b9f4ca1ab146b651d7","prev_hash":"59039314fe08ddb87f8aa3eddf65e0cf99e15f710b16d04b77f8a179603bbd2f","previous_digest":null,"repository":"team/app","seq":6,"tag":"1.0","time":"2026-11-30T06:48:09.008Z"}"#;
        let checkpoint = r#"{"checkpoint":{"seq":6,"hash":"c5d305d7274f983cbac3c6d202bdd7dec3b8101316f41add7e2523468ea35739","time":"2026-11-30T06:48:11.624Z","signature":"5lFNup+xYC9qMVfoJ98KO7LEZjfI/cablo56dleQdmTzK3C7TfLUIwPT61GA8qNMSm6VaAWFP/xc76+NiyncDQ=="}}"#;
        let pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA/143FzhQQK59rWjuSXseM+WIces6QfjdaSZmB0xgK2Q=\n-----END PUBLIC KEY-----\n";
        let Line::Event(e) = Line::parse(event).unwrap() else { panic!("an event line") };
        assert_eq!(String::from_utf8(e.canonical_bytes()).unwrap(), canonical);
        assert_eq!(e.compute_hash(), "c5d305d7274f983cbac3c6d202bdd7dec3b8101316f41add7e2523468ea35739");
        assert_eq!(Line::Event(e.clone()).to_json(), event, "written exactly as the README shows");
        let Line::Checkpoint(cp) = Line::parse(checkpoint).unwrap() else { panic!("a checkpoint line") };
        assert_eq!(
            String::from_utf8(Checkpoint::signed_bytes(cp.seq, &cp.hash, &cp.time)).unwrap(),
            r#"{"hash":"c5d305d7274f983cbac3c6d202bdd7dec3b8101316f41add7e2523468ea35739","seq":6,"time":"2026-11-30T06:48:11.624Z"}"#
        );
        let key = crate::audit::checkpoint::public_key_from_pem(pem).unwrap();
        let mut v = crate::audit::ChainVerifier::new(&key, crate::audit::Start::Anchored);
        v.event(&e).unwrap();
        v.checkpoint(&cp).unwrap();
        v.finish_file().unwrap();
    }
}
