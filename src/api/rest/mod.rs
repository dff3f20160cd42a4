//! `/api/v1`: the JSON REST API for operators and auditors (DESIGN §7, §11). One wildcard
//! route reaches `dispatch`; the `Authorized` extractor (`caller.rs`) has already parsed the
//! path (`route.rs`), checked the method and authorized the caller, so each arm calls one
//! small handler that returns a typed response (which also feeds the OpenAPI document in
//! `openapi.rs`). Listings page with `limit`/`cursor`, `next_cursor` and a `Link` header
//! (`page.rs`); every error is RFC 9457 problem+json (`problem.rs`). Calls `service` only.

mod artifacts;
mod audit;
mod caller;
mod openapi;
mod page;
mod params;
mod policies;
mod problem;
mod repositories;
mod retention;
mod route;

use std::time::SystemTime;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use caller::Authorized;
use route::{DocumentKind, RestRoute};

use crate::meta::millis;
use crate::state::AppState;

/// The metrics label of an `/api/v1/...` path (`unknown` when it names no endpoint).
pub fn route_label(path: &str) -> &'static str {
    RestRoute::parse(path).map(|r| r.label()).unwrap_or("unknown")
}

/// Every `/api/v1/...` request.
pub async fn dispatch(
    State(state): State<AppState>,
    auth: Authorized,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Authorized { route, caller, query: q } = auth;
    let result = match route {
        RestRoute::OpenApi => Ok(openapi::openapi_json().await.into_response()),
        RestRoute::ImmutabilityPolicy => policies::immutability(&state).await.map(IntoResponse::into_response),
        RestRoute::Repositories => repositories::list(&state, &caller, &q).await.map(IntoResponse::into_response),
        RestRoute::TagHistory { name, tag } => {
            repositories::history(&state, &name, &tag, &q).await.map(IntoResponse::into_response)
        }
        RestRoute::TagAt { name, tag } => {
            repositories::tag_at(&state, &name, &tag, &q).await.map(IntoResponse::into_response)
        }
        RestRoute::Artifact { name, digest } => {
            artifacts::provenance(&state, &name, &digest).await.map(IntoResponse::into_response)
        }
        RestRoute::Documents { name, digest, kind: DocumentKind::Sboms } => {
            artifacts::sboms(&state, &name, &digest).await.map(IntoResponse::into_response)
        }
        RestRoute::Documents { name, digest, kind: DocumentKind::Attestations } => {
            artifacts::attestations(&state, &name, &digest).await.map(IntoResponse::into_response)
        }
        RestRoute::Document { name, digest, kind: DocumentKind::Sboms, document } => {
            artifacts::sbom(&state, &name, &digest, &document).await
        }
        RestRoute::Document { name, digest, kind: DocumentKind::Attestations, document } => {
            artifacts::attestation(&state, &name, &digest, &document).await
        }
        RestRoute::RetentionPlan => retention::plan(&state, &q).await.map(IntoResponse::into_response),
        RestRoute::RetentionApply => retention::apply(&state, &caller, &q).await.map(IntoResponse::into_response),
        RestRoute::Rollback { name, tag } => {
            retention::rollback(&state, &caller, &name, &tag, &headers, &body).await.map(IntoResponse::into_response)
        }
        RestRoute::AuditEvents => audit::events(&state, &q).await.map(IntoResponse::into_response),
        RestRoute::AuditCheckpoints => audit::checkpoints(&state, &q).await.map(IntoResponse::into_response),
        RestRoute::AuditPublicKey => audit::public_key(&state).await.map(IntoResponse::into_response),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

/// RFC 3339 UTC with milliseconds, the time format of every `/api/v1` answer (and the ledger).
fn rfc3339(t: SystemTime) -> String {
    crate::audit::chain::rfc3339_millis(millis(t))
}

/// Whether a tag may move.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Once pushed, the tag keeps its digest.
    Immutable,
    /// The tag may move; every move is recorded.
    Mutable,
}

impl From<crate::policy::Mode> for Mode {
    fn from(m: crate::policy::Mode) -> Mode {
        match m {
            crate::policy::Mode::Immutable => Mode::Immutable,
            crate::policy::Mode::Mutable => Mode::Mutable,
        }
    }
}
