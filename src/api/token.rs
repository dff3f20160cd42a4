//! The Docker token endpoint (`/token`): GET with Basic credentials (or none) and `scope`
//! parameters, and POST with the OAuth2 password grant that containerd and buildkit try
//! first. Tokens grant the intersection of what was asked and what the rules allow.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access::{auth_error, credentials};
use super::v2::Query;
use crate::auth::{Credentials, Scope};
use crate::error::Error;
use crate::policy::Subject;
use crate::state::AppState;

/// Parses `repository:<name>:<actions>`, `registry:catalog:*` and `registry:api:read`
/// scopes (space-separated or repeated); others (and garbled ones) are ignored.
fn parse_scopes<'a>(scopes: impl Iterator<Item = &'a str>) -> Vec<Scope> {
    scopes.flat_map(|s| s.split(' ')).filter_map(Scope::parse).collect()
}

fn issued_at() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

async fn subject(
    state: &AppState,
    headers: &HeaderMap,
    creds: Credentials,
    addr: SocketAddr,
) -> Result<Subject, Error> {
    match creds {
        Credentials::None => Ok(Subject::anonymous()),
        Credentials::Basic { user, password } => {
            state.auth.login(&user, &password, Some(addr.ip())).await.map_err(|e| auth_error(state, headers, e, None))
        }
        Credentials::Bearer(_) => Err(Error::Unauthorized {
            message: "the token endpoint takes Basic credentials (or none), not a bearer token".into(),
            challenge: "Basic realm=\"cairn\"".into(),
        }),
    }
}

/// GET `/token?service=&scope=…` with optional Basic credentials.
pub async fn get_token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let q = Query::parse(query.as_deref());
    let result = async {
        let who = subject(&state, &headers, credentials(&headers)?, addr).await?;
        let scopes = parse_scopes(q.all("scope"));
        let (token, expires_in) =
            state.auth.issue_token(&who, &scopes).map_err(|e| auth_error(&state, &headers, e, None))?;
        Ok::<_, Error>(
            Json(json!({
                "token": token, "access_token": token, "expires_in": expires_in, "issued_at": issued_at(),
            }))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

/// POST `/token` (OAuth2): `grant_type=password` issues a token; other grant types get
/// `unsupported_grant_type`, after which clients fall back to GET.
pub async fn post_token(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form = Query::parse(std::str::from_utf8(&body).ok());
    match form.get("grant_type") {
        Some("password") => {}
        other => {
            let msg = format!("grant_type {:?} is not supported; use password, or GET /token", other.unwrap_or(""));
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "error": "unsupported_grant_type", "error_description": msg })),
            )
                .into_response();
        }
    }
    let result = async {
        let creds = match (form.get("username"), form.get("password")) {
            (Some(u), Some(p)) => Credentials::Basic { user: u.to_string(), password: p.to_string() },
            _ => Credentials::None,
        };
        let who = subject(&state, &headers, creds, addr).await?;
        let scopes = parse_scopes(form.all("scope"));
        let (token, expires_in) =
            state.auth.issue_token(&who, &scopes).map_err(|e| auth_error(&state, &headers, e, None))?;
        Ok::<_, Error>(
            Json(json!({
                "access_token": token, "token_type": "Bearer", "expires_in": expires_in, "issued_at": issued_at(),
            }))
            .into_response(),
        )
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes() {
        use crate::policy::Action;
        let s = parse_scopes(
            [
                "repository:a/b:pull,push",
                "repository:c:*",
                "registry:catalog:*",
                "garbage",
                "repository:Bad:pull",
                "registry:api:read registry:api:write registry:catalog:pull",
            ]
            .into_iter(),
        );
        assert_eq!(
            s,
            [
                Scope::Repository("a/b".into(), vec![Action::Pull, Action::Push]),
                Scope::Repository("c".into(), Action::ALL.to_vec()),
                Scope::Catalog,
                Scope::ApiRead,
            ]
        );
    }
}
