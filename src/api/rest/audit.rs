//! `/api/v1/audit`: the ledger's events with filters, its signed checkpoints and the public
//! key that verifies them (DESIGN §7). Auditors and admins only.

use std::time::SystemTime;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::page::{Paged, paged};
use super::params::{Paging, Params};
use super::problem::{ApiError, Problem};
use crate::audit::{Checkpoint, Event, EventKind};
use crate::error::Error;
use crate::meta::{EventFilter, millis};
use crate::oci::{Digest, RepoName, Tag};
use crate::state::AppState;

/// A page of ledger events, in seq order.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventList {
    /// The events.
    pub events: Vec<LedgerEvent>,
    /// The `cursor` of the next page (the last seq of this one); `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One ledger event, exactly as stored and hashed (see the README's ledger format).
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerEvent {
    /// Position in the chain, from 1.
    pub seq: i64,
    /// RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub time: String,
    /// Who: a user or robot name, `anonymous`, or `cairn` for the server itself.
    pub actor: String,
    /// The client's address.
    pub address: Option<String>,
    /// What happened, such as `tag.move`.
    #[schema(example = "tag.move")]
    pub action: String,
    /// The repository concerned.
    pub repository: Option<String>,
    /// The tag concerned.
    pub tag: Option<String>,
    /// The digest concerned (the new one for a tag move).
    pub digest: Option<String>,
    /// The digest before (a tag move or delete).
    pub previous_digest: Option<String>,
    /// More about it: a JSON object, or `null`.
    #[schema(value_type = Object, nullable)]
    pub detail: serde_json::Value,
    /// The previous event's hash (64 zeros for seq 1).
    pub prev_hash: String,
    /// `sha256(prev_hash || JCS(every other field))`, lowercase hex.
    pub hash: String,
}

impl From<Event> for LedgerEvent {
    fn from(e: Event) -> LedgerEvent {
        LedgerEvent {
            seq: e.seq,
            time: e.time,
            actor: e.actor,
            address: e.address,
            action: e.action,
            repository: e.repository,
            tag: e.tag,
            digest: e.digest,
            previous_digest: e.previous_digest,
            detail: e.detail,
            prev_hash: e.prev_hash,
            hash: e.hash,
        }
    }
}

/// The filters of `/api/v1/audit/events`; every one given narrows the answer.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilters {
    /// Events of this repository.
    #[param(value_type = Option<String>, pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255)]
    pub repository: Option<RepoName>,
    /// Events of this tag.
    #[param(value_type = Option<String>, pattern = "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$")]
    pub tag: Option<Tag>,
    /// Events whose digest or previous digest is this one.
    #[param(value_type = Option<String>, pattern = "^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$")]
    pub digest: Option<Digest>,
    /// Events by this user or robot (`anonymous`; `cairn` for the server itself).
    #[param(min_length = 1, max_length = 255)]
    pub actor: Option<String>,
    /// Events of this action.
    pub action: Option<EventKind>,
    /// Events at or after this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<SystemTime>,
    /// Events before this time (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<SystemTime>,
}

impl EventFilters {
    /// Reads every filter.
    pub fn parse(q: &Params) -> Result<EventFilters, Error> {
        Ok(EventFilters {
            repository: q.repo("repository")?,
            tag: q.tag("tag")?,
            digest: q.digest("digest")?,
            actor: q.text("actor")?.map(str::to_string),
            action: q.action("action")?,
            since: q.time("since")?,
            until: q.time("until")?,
        })
    }
}

/// Ledger events in seq order, filtered by repository, tag, digest, actor, action and time.
#[utoipa::path(
    get, path = "/api/v1/audit/events", tag = "audit",
    params(EventFilters, Paging),
    responses(
        (status = 200, description = "A page of events", body = EventList,
         headers(("Link" = String, description = "The next page, when there is one"))),
        (status = 400, description = "A bad filter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the auditor or admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn events(state: &AppState, q: &Params) -> Result<Paged<EventList>, ApiError> {
    let (f, Paging { limit, cursor }) = (EventFilters::parse(q)?, Paging::parse(q)?);
    let filter = EventFilter {
        after: cursor,
        until: None,
        repository: f.repository.map(|r| r.to_string()),
        tag: f.tag.map(|t| t.to_string()),
        digest: f.digest.map(|d| d.to_string()),
        actor: f.actor,
        action: f.action.map(|a| a.as_str().to_string()),
        since_ms: f.since.map(millis),
        before_ms: f.until.map(millis),
    };
    let mut events = state.registry.events(&filter, limit + 1).await?;
    let more = events.len() > limit as usize;
    events.truncate(limit as usize);
    let next = if more { events.last().map(|e| e.seq.to_string()) } else { None };
    let body = EventList { events: events.into_iter().map(Into::into).collect(), next_cursor: next.clone() };
    Ok(paged(&state.config, "/api/v1/audit/events", q, next.as_deref(), body))
}

/// A page of signed checkpoints, in seq order, with the ledger head.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// The checkpoints.
    pub checkpoints: Vec<CheckpointInfo>,
    /// The ledger's last event now; `null` before the first.
    pub head: Option<LedgerHead>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A signed statement that the ledger had `hash` at `seq`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointInfo {
    /// The seq covered (with every event before it).
    pub seq: i64,
    /// That event's hash.
    pub hash: String,
    /// When it was signed, RFC 3339 UTC with milliseconds.
    #[schema(format = DateTime)]
    pub time: String,
    /// Ed25519 signature over the RFC 8785 bytes of `{"hash","seq","time"}`, standard base64.
    pub signature: String,
}

impl From<Checkpoint> for CheckpointInfo {
    fn from(c: Checkpoint) -> CheckpointInfo {
        CheckpointInfo { seq: c.seq, hash: c.hash, time: c.time, signature: c.signature }
    }
}

/// The ledger head.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerHead {
    /// The last seq.
    pub seq: i64,
    /// Its hash.
    pub hash: String,
}

/// Signed checkpoints over the ledger, oldest first; verify them with the public key.
#[utoipa::path(
    get, path = "/api/v1/audit/checkpoints", tag = "audit",
    params(Paging),
    responses(
        (status = 200, description = "A page of checkpoints", body = CheckpointList,
         headers(("Link" = String, description = "The next page, when there is one"))),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the auditor or admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn checkpoints(state: &AppState, q: &Params) -> Result<Paged<CheckpointList>, ApiError> {
    let Paging { limit, cursor } = Paging::parse(q)?;
    let mut list = state.registry.checkpoints(cursor, limit + 1).await?;
    let more = list.len() > limit as usize;
    list.truncate(limit as usize);
    let next = if more { list.last().map(|c| c.seq.to_string()) } else { None };
    let head = state.registry.ledger_head().await?.map(|(seq, hash)| LedgerHead { seq, hash });
    let body =
        CheckpointList { checkpoints: list.into_iter().map(Into::into).collect(), head, next_cursor: next.clone() };
    Ok(paged(&state.config, "/api/v1/audit/checkpoints", q, next.as_deref(), body))
}

/// The media type of the public key.
pub const PEM: &str = "application/x-pem-file";

/// The Ed25519 public key as PEM.
pub struct PublicKeyPem(pub String);

impl IntoResponse for PublicKeyPem {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, HeaderValue::from_static(PEM))], self.0).into_response()
    }
}

/// The Ed25519 public key (PEM, SubjectPublicKeyInfo) that verifies every checkpoint.
#[utoipa::path(
    get, path = "/api/v1/audit/public-key", tag = "audit",
    responses(
        (status = 200, description = "The key", body = String, content_type = "application/x-pem-file",
         example = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA…\n-----END PUBLIC KEY-----\n"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the auditor or admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn public_key(state: &AppState) -> Result<PublicKeyPem, ApiError> {
    Ok(PublicKeyPem(state.audit_key.public_key_pem()))
}
