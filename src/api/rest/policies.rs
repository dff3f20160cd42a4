//! `/api/v1/policies/immutability`: the tag rules in force, read-only.

use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::Mode;
use super::problem::{ApiError, Problem};
use crate::state::AppState;

/// The immutability rules in force.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImmutabilityPolicy {
    /// The rules, in the order they are tried.
    pub rules: Vec<ImmutabilityRule>,
    /// What a tag that no rule matches is.
    pub default_mode: Mode,
    /// Whether referrer fallback tags (`sha256-<hex>`, `.sig`, `.att`, `.sbom`) follow the rules
    /// (otherwise they are always mutable).
    pub include_referrer_tags: bool,
    /// How the rules are applied, in words.
    pub evaluation: String,
}

/// One rule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ImmutabilityRule {
    /// Its name, or `#<position>`.
    pub name: String,
    /// Repository glob.
    pub repositories: String,
    /// Tag globs.
    pub tags: Vec<String>,
    /// What a matching tag is.
    pub mode: Mode,
}

/// The immutability rules in force.
#[utoipa::path(
    get, path = "/api/v1/policies/immutability", tag = "policies",
    responses(
        (status = 200, description = "The rules", body = ImmutabilityPolicy),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the reader, auditor or admin role", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn immutability(state: &AppState) -> Result<Json<ImmutabilityPolicy>, ApiError> {
    let cfg = &state.config.immutability;
    Ok(Json(ImmutabilityPolicy {
        rules: cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| ImmutabilityRule {
                name: r.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                repositories: r.repositories.clone(),
                tags: r.tags.clone(),
                mode: r.mode.into(),
            })
            .collect(),
        default_mode: Mode::Immutable,
        include_referrer_tags: cfg.include_referrer_tags,
        evaluation: "first matching rule wins; tags no rule matches are immutable".into(),
    }))
}
