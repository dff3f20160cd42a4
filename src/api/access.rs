//! The access check of every request: credentials from the `Authorization` header, the
//! action a `/v2` route needs, and the 401 challenge / 403 refusal when it is missing.

use std::net::IpAddr;

use axum::http::{HeaderMap, Method, header};
use base64::Engine;

use super::route::{Kind, Route};
use crate::auth::{AuthError, Credentials, Identity};
use crate::error::Error;
use crate::oci::RepoName;
use crate::policy::Action;
use crate::state::AppState;

/// Reads the `Authorization` header.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Credentials::None) };
    let bad = |what: &str| Error::Unauthorized {
        message: format!("malformed Authorization header: {what}"),
        challenge: "Basic realm=\"cairn\"".into(),
    };
    let value = value.to_str().map_err(|_| bad("not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').ok_or_else(|| bad("expected `Basic …` or `Bearer …`"))?;
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let decoded =
                base64::engine::general_purpose::STANDARD.decode(rest.trim()).map_err(|_| bad("bad base64"))?;
            let text = String::from_utf8(decoded).map_err(|_| bad("not UTF-8"))?;
            let (user, password) = text.split_once(':').ok_or_else(|| bad("expected user:password"))?;
            Ok(Credentials::Basic { user: user.to_string(), password: password.to_string() })
        }
        "bearer" => Ok(Credentials::Bearer(rest.trim().to_string())),
        _ => Err(bad("expected `Basic …` or `Bearer …`")),
    }
}

/// Authenticates the request.
pub async fn identify(state: &AppState, headers: &HeaderMap, addr: IpAddr) -> Result<Identity, Error> {
    let creds = credentials(headers)?;
    state.auth.authenticate(&creds, Some(addr)).await.map_err(|e| auth_error(state, headers, e, None))
}

/// Maps an authentication failure to the response a client can act on.
pub fn auth_error(state: &AppState, headers: &HeaderMap, e: AuthError, scope: Option<&str>) -> Error {
    match e {
        AuthError::BadCredentials => {
            Error::Unauthorized { message: e.to_string(), challenge: challenge(state, headers, scope) }
        }
        AuthError::BadToken(_) => Error::Unauthorized {
            message: "the bearer token is invalid or expired; get a new one from the token endpoint".into(),
            challenge: challenge(state, headers, scope),
        },
        AuthError::RateLimited { retry_after } => Error::TooManyRequests { retry_after },
        AuthError::Meta(m) => m.into(),
    }
}

/// `Bearer realm="<base>/token",service="<service>"[,scope="…"]`.
pub fn challenge(state: &AppState, headers: &HeaderMap, scope: Option<&str>) -> String {
    let base = match &state.config.server.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
            format!("http://{host}")
        }
    };
    let mut c = format!("Bearer realm=\"{base}/token\",service=\"{}\"", state.auth.service());
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    c
}

/// The repository and action a `/v2` request needs; `None` for the base and the catalog.
pub fn required(method: &Method, route: &Route) -> Option<(RepoName, Action)> {
    let (name, action) = match (method, route) {
        (_, Route::Base | Route::Catalog) => return None,
        (&Method::GET | &Method::HEAD, Route::Manifest { name, .. } | Route::Blob { name, .. }) => (name, Action::Pull),
        (_, Route::Tags { name } | Route::Referrers { name, .. }) => (name, Action::Pull),
        (_, Route::Unnamable { name, kind: Kind::Referrers, .. }) => (name, Action::Pull),
        (&Method::GET | &Method::HEAD, Route::Unnamable { name, .. }) => (name, Action::Pull),
        (&Method::DELETE, Route::Unnamable { name, .. }) => (name, Action::Delete),
        (_, Route::Unnamable { name, .. }) => (name, Action::Push),
        (&Method::DELETE, Route::Manifest { name, .. } | Route::Blob { name, .. }) => (name, Action::Delete),
        (_, Route::Manifest { name, .. } | Route::Blob { name, .. }) => (name, Action::Push),
        (_, Route::UploadStart { name } | Route::Upload { name, .. }) => (name, Action::Push),
    };
    Some((name.clone(), action))
}

fn scope(repo: &RepoName, action: Action) -> String {
    let actions = match action {
        Action::Push => "pull,push",
        other => other.as_str(),
    };
    format!("repository:{repo}:{actions}")
}

/// May `who` do `action` on `repo`? Both the rules and, for a bearer token, its scope must
/// allow it (a token outlives rule changes, such as the end of open mode).
pub fn permits(state: &AppState, who: &Identity, repo: &str, action: Action) -> bool {
    state.auth.allows(&who.subject, repo, action)
        && who.token_access.as_ref().is_none_or(|access| {
            access
                .iter()
                .any(|e| e.kind == "repository" && e.name == repo && e.actions.iter().any(|a| a == action.as_str()))
        })
}

/// Allows the request or says why not: 401 with a challenge when better credentials could
/// help (anonymous, or a token lacking a scope its user could get), 403 otherwise. The
/// answer is the same whether or not the repository exists.
pub fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    who: &Identity,
    repo: &RepoName,
    action: Action,
) -> Result<(), Error> {
    if permits(state, who, repo.as_str(), action) {
        return Ok(());
    }
    let allowed_by_rules = state.auth.allows(&who.subject, repo.as_str(), action);
    if who.subject.is_anonymous() || allowed_by_rules {
        let mut challenge = challenge(state, headers, Some(&scope(repo, action)));
        // A signed-in user whose token is too narrow can get a wider one; anonymous cannot,
        // and clients show "authentication required" only without this error.
        if who.token_access.is_some() && !who.subject.is_anonymous() {
            challenge.push_str(",error=\"insufficient_scope\"");
        }
        return Err(Error::Unauthorized {
            message: format!("authentication required to {} repository {repo}", action.as_str()),
            challenge,
        });
    }
    Err(Error::Denied(format!("{} access to repository {repo} denied for {}", action.as_str(), who.subject.name)))
}
