//! `/api/v1`: the JSON REST API for operators and auditors. Today: the immutability rules,
//! a tag's history, and what a tag pointed to at a moment.

use std::time::SystemTime;

use axum::Json;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access::require_api_read;
use super::v2::Query;
use crate::error::Error;
use crate::oci::{RepoName, Tag};
use crate::policy::Mode;
use crate::service::TagEvent;
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// GET `/api/v1/policies/immutability`: the rules in force, read-only.
pub async fn immutability_policy(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = require_api_read(&state, &headers, addr.ip()).await {
        return e.into_response();
    }
    let cfg = &state.config.immutability;
    let rules: Vec<Value> = cfg
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "name": r.name.clone().unwrap_or_else(|| format!("#{}", i + 1)),
                "repositories": r.repositories,
                "tags": r.tags,
                "mode": r.mode,
            })
        })
        .collect();
    Json(json!({
        "rules": rules,
        "default_mode": Mode::Immutable,
        "include_referrer_tags": cfg.include_referrer_tags,
        "evaluation": "first matching rule wins; tags no rule matches are immutable",
    }))
    .into_response()
}

/// GET `/api/v1/repositories/<name>/tags/<tag>[/history]`.
pub async fn repository(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    Path(rest): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = require_api_read(&state, &headers, addr.ip()).await {
        return e.into_response();
    }
    let q = Query::parse(query.as_deref());
    let result = match rest.rsplit_once("/tags/") {
        Some((name, tail)) => match tail.split_once('/') {
            Some((tag, "history")) => history(&state, name, tag, &q).await,
            None => tag_at(&state, name, tail, &q).await,
            Some(_) => Err(Error::NotFound),
        },
        None => Err(Error::NotFound),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

fn event_json(e: &TagEvent) -> Value {
    json!({
        "id": e.id,
        "time": rfc3339(e.at),
        "action": e.action,
        "from": e.from.as_ref().map(|d| d.as_str()),
        "to": e.to.as_ref().map(|d| d.as_str()),
        "actor": e.actor.name,
        "address": e.actor.address,
    })
}

/// Newest first, `?limit=` (default 100, at most 1000) and `?cursor=` from `next_cursor`.
async fn history(state: &AppState, name: &str, tag: &str, q: &Query) -> Result<Response, Error> {
    let (repo, tag) = (RepoName::parse(name)?, Tag::parse(tag)?);
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| Error::Unsupported(format!("limit={l:?}: use a whole number from 1 to {MAX_LIMIT}")))?,
        None => DEFAULT_LIMIT,
    };
    let cursor = q
        .get("cursor")
        .map(|c| {
            c.parse::<i64>().map_err(|_| Error::Unsupported(format!("cursor={c:?} is not a cursor this API gave")))
        })
        .transpose()?;
    let page = state.registry.tag_history(&repo, &tag, cursor, limit).await?;
    let next = page.next.map(|n| n.to_string());
    let body = json!({
        "repository": repo.as_str(),
        "tag": tag.as_str(),
        "events": page.events.iter().map(event_json).collect::<Vec<_>>(),
        "next_cursor": next,
    });
    let mut resp = Json(body).into_response();
    if let Some(n) = next
        && let Ok(v) =
            format!("</api/v1/repositories/{repo}/tags/{tag}/history?limit={limit}&cursor={n}>; rel=\"next\"").parse()
    {
        resp.headers_mut().insert(header::LINK, v);
    }
    Ok(resp)
}

/// `?at=<RFC 3339>`: the digest the tag pointed to then (null if none); without `at`, now.
async fn tag_at(state: &AppState, name: &str, tag: &str, q: &Query) -> Result<Response, Error> {
    let (repo, tag) = (RepoName::parse(name)?, Tag::parse(tag)?);
    let at = q
        .get("at")
        .map(|s| {
            OffsetDateTime::parse(s, &Rfc3339).map(SystemTime::from).map_err(|e| {
                Error::Unsupported(format!("at={s:?} is not an RFC 3339 time such as 2026-01-31T12:00:00Z: {e}"))
            })
        })
        .transpose()?;
    let digest = state.registry.tag_digest(&repo, &tag, at).await?;
    let rule = state.registry.tag_rule(&repo, &tag);
    Ok(Json(json!({
        "repository": repo.as_str(),
        "tag": tag.as_str(),
        "at": rfc3339(at.unwrap_or_else(SystemTime::now)),
        "digest": digest.as_ref().map(|d| d.as_str()),
        "mode": rule.mode,
        "rule": rule.rule,
    }))
    .into_response())
}
