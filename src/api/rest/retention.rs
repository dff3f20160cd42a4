//! `/api/v1/retention/plan`, `/api/v1/retention/apply` and
//! `/api/v1/repositories/{name}/tags/{tag}/rollback` (DESIGN §6).

use axum::Json;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::params::Params;
use super::problem::{ApiError, Problem};
use crate::error::Error;
use crate::oci::{Digest, RepoName, Tag};
use crate::policy::writes::RollbackTarget;
use crate::service::{ApplyReport, Plan, Trigger};
use crate::state::AppState;

/// Which repositories a plan or apply covers.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetentionScope {
    /// A repository glob (`*` within a path component, `**` across); all repositories when left out.
    #[param(example = "apps/**")]
    pub repository: Option<String>,
}

impl RetentionScope {
    fn of(q: &Params) -> RetentionScope {
        RetentionScope { repository: q.get("repository").map(str::to_string) }
    }
}

/// What every candidate tag and manifest of the repositories a policy matches would become, with
/// every reason. The same state gives the same plan.
#[utoipa::path(
    get, path = "/api/v1/retention/plan", tag = "retention",
    params(RetentionScope),
    responses(
        (status = 200, description = "The plan", body = Plan),
        (status = 400, description = "A bad repository glob", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the auditor or admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn plan(state: &AppState, q: &Params) -> Result<Json<Plan>, ApiError> {
    let scope = RetentionScope::of(q);
    Ok(Json(state.registry.retention_plan(scope.repository.as_deref()).await?))
}

/// What an apply did, and the plan it carried out.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApplyResult {
    /// Counts of what was deleted.
    pub report: ApplyReport,
    /// The plan, made just before.
    pub plan: Plan,
}

/// Carries out the plan's deletions now (admin). Each deletion is re-checked against the
/// current state in its transaction and recorded as a `retention.delete` event.
#[utoipa::path(
    post, path = "/api/v1/retention/apply", tag = "retention",
    params(RetentionScope),
    responses(
        (status = 200, description = "What was deleted", body = ApplyResult),
        (status = 400, description = "A bad repository glob", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn apply(state: &AppState, caller: &Caller, q: &Params) -> Result<Json<ApplyResult>, ApiError> {
    let scope = RetentionScope::of(q);
    let (plan, report) =
        state.registry.retention_apply(scope.repository.as_deref(), &caller.actor(), Trigger::Api, |_| {}).await?;
    Ok(Json(ApplyResult { report, plan }))
}

/// The body of a rollback: exactly one of `steps` and `to`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum RollbackRequest {
    /// Back a number of distinct digests.
    Steps(RollbackSteps),
    /// To a digest.
    To(RollbackTo),
}

/// `{"steps": n}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RollbackSteps {
    /// Back this many distinct digests (1: the one before the current); at most the window
    /// minus one, else 409.
    #[schema(minimum = 1, example = 1)]
    pub steps: u32,
}

/// `{"to": "<digest>"}`.
#[derive(Debug, serde::Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RollbackTo {
    /// A digest inside the tag's rollback window (else 409).
    #[schema(pattern = "^sha256:[a-f0-9]{64}$", example = "sha256:4f5e…")]
    pub to: String,
}

/// A rollback done.
#[derive(Debug, Serialize, ToSchema)]
pub struct RollbackResult {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// Where it pointed.
    pub from: String,
    /// Where it points now.
    pub to: String,
    /// The target's position in the window (2: the digest before the current one).
    pub position: usize,
    /// The window's size (`rollback_window`).
    pub window: u32,
}

const BODY_HINT: &str = "send a JSON body such as {\"steps\": 1} or {\"to\": \"sha256:<hex>\"}";

fn target(body: &[u8]) -> Result<RollbackTarget, Error> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Unsupported(format!("the body is not JSON ({e}); {BODY_HINT}")))?;
    let obj = v.as_object().ok_or_else(|| Error::Unsupported(format!("the body is not a JSON object; {BODY_HINT}")))?;
    if let Some(k) = obj.keys().find(|k| !matches!(k.as_str(), "steps" | "to")) {
        return Err(Error::Unsupported(format!("unknown field {k:?}; {BODY_HINT}")));
    }
    match (obj.get("steps"), obj.get("to")) {
        (Some(_), Some(_)) => Err(Error::Unsupported(format!("give either steps or to, not both; {BODY_HINT}"))),
        (None, None) => Err(Error::Unsupported(format!("the body names no target; {BODY_HINT}"))),
        // JSON Schema counts 3.0 as an integer too.
        (Some(s), None) => {
            match s.as_u64().or_else(|| s.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)) {
                Some(n) if (1..=u32::MAX as u64).contains(&n) => Ok(RollbackTarget::Steps(n as u32)),
                _ => Err(Error::Unsupported(format!("steps = {s} must be a whole number of at least 1"))),
            }
        }
        (None, Some(serde_json::Value::String(d))) => Ok(RollbackTarget::To(Digest::parse(d).map_err(|e| {
            Error::DigestInvalid(format!("to = {d:?} is not a digest such as \"sha256:<64 hex>\": {e}"))
        })?)),
        (None, Some(other)) => Err(Error::Unsupported(format!("to = {other} must be a digest string; {BODY_HINT}"))),
    }
}

/// Moves a mutable tag back to a digest inside its rollback window (push permission). With
/// `If-Match: "<digest>"` it happens only if the tag still points there (else 412). Recorded as
/// a `tag.move` event whose `detail.rollback` says how.
#[utoipa::path(
    post, path = "/api/v1/repositories/{name}/tags/{tag}/rollback", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("tag" = String, Path, description = "A mutable tag", pattern = "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"),
        ("If-Match" = Option<String>, Header, nullable = false,
         description = "The digest the tag must point to now, as an ETag (`\"sha256:<hex>\"`); anything else never matches (412)"),
    ),
    request_body(content = RollbackRequest, description = "Exactly one of steps and to"),
    responses(
        (status = 200, description = "The tag moved back", body = RollbackResult),
        (status = 400, description = "A bad name, tag or body", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs push on the repository, or a signature gate refuses the target (it has no valid signature by the gate's keys)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such tag", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Refused: immutable tag, target outside the window or no longer stored", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "If-Match does not hold (the tag moved, or the value is no digest)", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn rollback(
    state: &AppState,
    caller: &Caller,
    name: &RepoName,
    tag: &Tag,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Json<RollbackResult>, ApiError> {
    let target = target(body)?;
    let if_match = headers.get(header::IF_MATCH).map(|v| v.to_str().unwrap_or("?"));
    let out = state.registry.rollback_tag(name, tag, &target, if_match, &caller.actor()).await?;
    Ok(Json(RollbackResult {
        repository: name.to_string(),
        tag: tag.to_string(),
        from: out.from.to_string(),
        to: out.to.to_string(),
        position: out.position,
        window: out.window,
    }))
}
