//! `/api/v1/repositories`: the repositories the caller may read with their counts, a tag's
//! history, and what a tag pointed to at a moment.

use std::time::SystemTime;

use axum::Json;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::caller::Caller;
use super::page::{Paged, paged};
use super::params::{Paging, Params};
use super::problem::{ApiError, Problem};
use super::{Mode, rfc3339};
use crate::oci::{RepoName, Tag};
use crate::service::{RepositorySummary, StorageTotals, TagEvent};
use crate::state::AppState;

/// A page of repositories.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryList {
    /// The repositories, by name.
    pub repositories: Vec<RepositoryInfo>,
    /// The `cursor` of the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// The whole registry's figures, for callers who may read every repository (auditors,
    /// admins, open mode); `null` for others.
    pub total: Option<RegistryTotal>,
}

/// The whole registry's storage. A blob is stored once however many repositories and
/// manifests use it, so `blob_bytes` counts each blob once; a manifest is stored per
/// repository, so `manifest_bytes` counts each repository's copy.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryTotal {
    /// Repositories that hold a blob or a manifest.
    pub repositories: u64,
    /// Tags in all repositories.
    pub tag_count: u64,
    /// Manifests in all repositories (one pushed to two repositories counts twice).
    pub manifest_count: u64,
    /// Distinct blobs stored, including those waiting for garbage collection.
    pub blob_count: u64,
    /// Their bytes, each blob once.
    pub blob_bytes: u64,
    /// Bytes of the manifests themselves (their JSON bodies).
    pub manifest_bytes: u64,
    /// `blob_bytes + manifest_bytes`: what the registry stores.
    pub size_bytes: u64,
    /// Bytes of blobs no manifest references (uploads whose manifest has not come yet, layers
    /// of deleted manifests); garbage collection frees them once their grace has passed.
    pub unreferenced_bytes: u64,
}

impl From<StorageTotals> for RegistryTotal {
    fn from(t: StorageTotals) -> RegistryTotal {
        RegistryTotal {
            repositories: t.repositories,
            tag_count: t.tag_count,
            manifest_count: t.manifest_count,
            blob_count: t.blob_count,
            blob_bytes: t.blob_bytes,
            manifest_bytes: t.manifest_bytes,
            size_bytes: t.blob_bytes + t.manifest_bytes,
            unreferenced_bytes: t.unreferenced_bytes,
        }
    }
}

/// One repository.
#[derive(Debug, Serialize, ToSchema)]
pub struct RepositoryInfo {
    /// Its name.
    #[schema(example = "apps/web")]
    pub name: String,
    /// How many tags it has.
    pub tag_count: u64,
    /// How many manifests (images, indexes, signatures, SBOMs, …) it stores.
    pub manifest_count: u64,
    /// Bytes it holds: its manifests' own bodies plus every blob linked to it (layers, configs,
    /// and uploads whose manifest has not come yet), each blob counted once however many of
    /// its manifests share it. A blob linked to two repositories counts in each.
    pub size_bytes: u64,
    /// When a manifest was last pushed or a tag last set in it (RFC 3339 UTC); `null` if never.
    #[schema(format = DateTime)]
    pub last_push: Option<String>,
}

impl From<RepositorySummary> for RepositoryInfo {
    fn from(s: RepositorySummary) -> RepositoryInfo {
        RepositoryInfo {
            name: s.name,
            tag_count: s.tag_count,
            manifest_count: s.manifest_count,
            size_bytes: s.size,
            last_push: s.last_push.map(rfc3339),
        }
    }
}

/// Paging of `/api/v1/repositories`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RepositoryPaging {
    /// Page size.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000, default = 100)]
    pub limit: u32,
    /// `next_cursor` of the previous page (a repository name).
    #[param(value_type = Option<String>, pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255)]
    pub cursor: Option<RepoName>,
}

/// The repositories the caller may read (auditors and admins: all), by name, with their tag
/// and manifest counts, size and last push; for auditors and admins also the whole
/// registry's total (each blob counted once).
#[utoipa::path(
    get, path = "/api/v1/repositories", tag = "repositories",
    params(RepositoryPaging),
    responses(
        (status = 200, description = "A page of repositories", body = RepositoryList,
         headers(("Link" = String, description = "The next page, `<…>; rel=\"next\"`, when there is one"))),
        (status = 400, description = "A bad parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn list(state: &AppState, caller: &Caller, q: &Params) -> Result<Paged<RepositoryList>, ApiError> {
    let p = RepositoryPaging { limit: q.limit()?, cursor: q.name_cursor()? };
    let (items, more) = state
        .registry
        .repository_summaries(p.cursor.as_ref().map(RepoName::as_str), p.limit, |r| caller.may_read(r))
        .await?;
    let next = if more { items.last().map(|s| s.name.clone()) } else { None };
    let total = match caller.reads_all() {
        true => Some(state.registry.storage_totals().await?.into()),
        false => None,
    };
    let body =
        RepositoryList { repositories: items.into_iter().map(Into::into).collect(), next_cursor: next.clone(), total };
    Ok(paged(&state.config, "/api/v1/repositories", q, next.as_deref(), body))
}

/// One page of a tag's history, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagHistory {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// Creates, moves and deletes, newest first.
    pub events: Vec<TagHistoryEvent>,
    /// The `cursor` of the next (older) page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// What happened to a tag.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagAction {
    /// It was created.
    Create,
    /// It moved to another digest.
    Move,
    /// It was deleted.
    Delete,
}

/// One create, move or delete of a tag.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagHistoryEvent {
    /// Increasing id.
    pub id: i64,
    /// When (RFC 3339 UTC).
    #[schema(format = DateTime)]
    pub time: String,
    /// What.
    pub action: TagAction,
    /// The digest before (`null` for a create).
    pub from: Option<String>,
    /// The digest after (`null` for a delete).
    pub to: Option<String>,
    /// Who: a user or robot name, or `anonymous`.
    pub actor: String,
    /// The client's address.
    pub address: Option<String>,
}

impl From<&TagEvent> for TagHistoryEvent {
    fn from(e: &TagEvent) -> TagHistoryEvent {
        TagHistoryEvent {
            id: e.id,
            time: rfc3339(e.at),
            action: match e.action {
                crate::meta::TagAction::Create => TagAction::Create,
                crate::meta::TagAction::Move => TagAction::Move,
                crate::meta::TagAction::Delete => TagAction::Delete,
            },
            from: e.from.as_ref().map(|d| d.to_string()),
            to: e.to.as_ref().map(|d| d.to_string()),
            actor: e.actor.name.clone(),
            address: e.actor.address.clone(),
        }
    }
}

/// Every create, move and delete of a tag, newest first, with time and actor.
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/tags/{tag}/history", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("tag" = String, Path, description = "Tag", pattern = "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"),
        Paging,
    ),
    responses(
        (status = 200, description = "A page of the tag's history", body = TagHistory,
         headers(("Link" = String, description = "The next page, when there is one"))),
        (status = 400, description = "A bad name, tag or parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The tag never existed", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn history(state: &AppState, repo: &RepoName, tag: &Tag, q: &Params) -> Result<Paged<TagHistory>, ApiError> {
    let p = Paging::parse(q)?;
    let page = state.registry.tag_history(repo, tag, p.cursor, p.limit).await?;
    let next = page.next.map(|n| n.to_string());
    let body = TagHistory {
        repository: repo.to_string(),
        tag: tag.to_string(),
        events: page.events.iter().map(Into::into).collect(),
        next_cursor: next.clone(),
    };
    let path = format!("/api/v1/repositories/{repo}/tags/{tag}/history");
    Ok(paged(&state.config, &path, q, next.as_deref(), body))
}

/// What a tag pointed to at a moment.
#[derive(Debug, Serialize, ToSchema)]
pub struct TagAt {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The moment asked about (now when `at` was not given), RFC 3339 UTC.
    #[schema(format = DateTime)]
    pub at: String,
    /// The digest it pointed to then; `null` if it did not exist.
    pub digest: Option<String>,
    /// Whether the tag may move, by the rules in force now.
    pub mode: Mode,
    /// The rule that decides it.
    pub rule: String,
}

/// The moment of `/api/v1/repositories/{name}/tags/{tag}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TagAtQuery {
    /// An RFC 3339 time; without it, now.
    #[param(value_type = Option<String>, format = DateTime)]
    pub at: Option<SystemTime>,
}

/// The digest a tag pointed to at `at` (or now), and how the rules treat it.
#[utoipa::path(
    get, path = "/api/v1/repositories/{name}/tags/{tag}", tag = "repositories",
    params(
        ("name" = String, Path, description = "Repository name (may contain `/`)", pattern = r"^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$", max_length = 255),
        ("tag" = String, Path, description = "Tag", pattern = "^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$"),
        TagAtQuery,
    ),
    responses(
        (status = 200, description = "What the tag pointed to", body = TagAt),
        (status = 400, description = "A bad name, tag or time", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The caller may not read this repository", body = Problem, content_type = "application/problem+json"),
    ),
    security((), ("basic" = []), ("bearer" = []))
)]
pub async fn tag_at(state: &AppState, repo: &RepoName, tag: &Tag, q: &Params) -> Result<Json<TagAt>, ApiError> {
    let TagAtQuery { at } = TagAtQuery { at: q.time("at")? };
    let digest = state.registry.tag_digest(repo, tag, at).await?;
    let rule = state.registry.tag_rule(repo, tag);
    Ok(Json(TagAt {
        repository: repo.to_string(),
        tag: tag.to_string(),
        at: rfc3339(at.unwrap_or_else(|| state.registry.clock().now())),
        digest: digest.map(|d| d.to_string()),
        mode: rule.mode.into(),
        rule: rule.rule,
    }))
}
