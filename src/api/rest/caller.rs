//! The authorization extractor of `/api/v1`: `Authorized` parses the route, checks the
//! method, identifies the caller and checks what the route needs, once, before any handler
//! runs. Who may read what:
//!
//! - `audit/*`: the auditor and admin roles.
//! - `policies/immutability`: the reader, auditor and admin roles.
//! - a repository's tags, history and artifacts: auditor and admin, and any signed-in
//!   caller that may pull the repository (reader role, writer role, pull grants).
//! - `repositories`: any signed-in caller; it lists what the caller may read.
//! - `retention/plan`: the auditor and admin roles; `retention/apply` (POST): the admin role.
//! - `repositories/<name>/tags/<tag>/rollback` (POST): push on the repository.
//! - `openapi.json`: anyone.
//!
//! In open mode (no users, grants or robots) anonymous may read everything. A bearer token
//! must also cover the read: `registry:api:read` covers all of it (for subjects whose roles
//! allow it), `repository:<name>:pull` covers that repository.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method};

use super::params::Params;
use super::problem::ApiError;
use super::route::{Need, RestRoute};
use crate::api::access;
use crate::audit::EventKind;
use crate::auth::{Credentials, Identity};
use crate::error::{Error, Throttled};
use crate::policy::Action;
use crate::state::AppState;

/// The scope a bearer token needs for reads under `/api/v1`.
pub const API_READ_SCOPE: &str = "registry:api:read";

/// An `/api/v1` request that may proceed: its route, its caller and its query.
pub struct Authorized {
    /// The parsed route.
    pub route: RestRoute,
    /// Who is calling.
    pub caller: Caller,
    /// The decoded query parameters.
    pub query: Params,
}

/// Who is calling, and what that lets it read.
pub struct Caller {
    state: AppState,
    who: Identity,
    peer: String,
}

impl Caller {
    /// The caller as tag history and the ledger record it.
    pub fn actor(&self) -> crate::meta::Actor {
        let address = (!self.peer.is_empty()).then(|| self.peer.clone());
        crate::meta::Actor { name: self.who.subject.name.clone(), address }
    }

    /// True for an admin (or anyone in open mode).
    fn is_admin(&self) -> bool {
        self.state.auth.is_open() || self.who.subject.roles.contains(&crate::policy::Role::Admin)
    }

    /// True if the caller may read everything (auditor, admin, or open mode).
    pub fn reads_all(&self) -> bool {
        self.state.auth.allows_audit_read(&self.who.subject) && self.token_covers("registry", "api", "read")
    }

    /// May the caller read repository `repo` (its tags, history and artifacts)?
    pub fn may_read(&self, repo: &str) -> bool {
        if self.reads_all() {
            return true;
        }
        let signed_in = !self.who.subject.is_anonymous() || self.state.auth.is_open();
        signed_in
            && self.state.auth.allows(&self.who.subject, repo, Action::Pull)
            && (self.token_covers("registry", "api", "read") || self.token_covers("repository", repo, "pull"))
    }

    /// True unless the caller holds a bearer token whose access lacks `kind:name:action`.
    fn token_covers(&self, kind: &str, name: &str, action: &str) -> bool {
        self.who.token_access.as_ref().is_none_or(|access| {
            access.iter().any(|e| e.kind == kind && e.name == name && e.actions.iter().any(|a| a == action || a == "*"))
        })
    }

    /// Allows `need` or says why not: 401 with a challenge when other credentials could
    /// help, 403 otherwise.
    fn authorize(&self, headers: &HeaderMap, need: &Need) -> Result<(), Error> {
        let subject = &self.who.subject;
        let (allowed, by_role, what) = match need {
            Need::Nothing => return Ok(()),
            Need::ApiRead => {
                let role = self.state.auth.allows_api_read(subject);
                (role && self.token_covers("registry", "api", "read"), role, "the reader, auditor or admin role")
            }
            Need::Audit => {
                let role = self.state.auth.allows_audit_read(subject);
                (role && self.token_covers("registry", "api", "read"), role, "the auditor or admin role")
            }
            Need::SignedIn => {
                let ok = !subject.is_anonymous() || self.state.auth.is_open();
                (ok, ok, "signing in")
            }
            Need::Admin => {
                let role = self.is_admin();
                (role && self.token_covers("registry", "api", "read"), role, "the admin role")
            }
            Need::Push(repo) => {
                if access::permits(&self.state, &self.who, repo.as_str(), Action::Push) {
                    return Ok(());
                }
                return Err(access::authorize(&self.state, headers, &self.who, repo, Action::Push)
                    .err()
                    .unwrap_or_else(|| Error::Denied(format!("push access to repository {repo} denied"))));
            }
            Need::Repository(repo) => {
                let role = self.state.auth.allows_audit_read(subject)
                    || ((!subject.is_anonymous() || self.state.auth.is_open())
                        && self.state.auth.allows(subject, repo.as_str(), Action::Pull));
                (self.may_read(repo.as_str()), role, "the auditor or admin role, or pull access to it")
            }
        };
        if allowed {
            return Ok(());
        }
        let target = match need {
            Need::Repository(repo) => format!("repository {repo} over /api/v1"),
            Need::Audit => "/api/v1/audit".to_string(),
            _ => "/api/v1".to_string(),
        };
        if by_role {
            // The rules allow it; the bearer token is too narrow.
            let mut challenge = access::challenge(&self.state, headers, Some(API_READ_SCOPE));
            if !subject.is_anonymous() {
                challenge.push_str(",error=\"insufficient_scope\"");
            }
            return Err(Error::Unauthorized {
                message: format!(
                    "the bearer token does not cover {target}; ask the token endpoint for {API_READ_SCOPE}"
                ),
                challenge,
            });
        }
        if subject.is_anonymous() {
            return Err(Error::Unauthorized {
                message: format!("authentication required: reading {target} needs {what}"),
                challenge: access::challenge(&self.state, headers, Some(API_READ_SCOPE)),
            });
        }
        Err(Error::Denied(format!("{} may not read {target}: it needs {what}", subject.name)))
    }
}

impl FromRequestParts<AppState> for Authorized {
    type Rejection = axum::response::Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Authorized, Self::Rejection> {
        use axum::response::IntoResponse;
        let route = RestRoute::parse(parts.uri.path()).map_err(|e| ApiError(e).into_response())?;
        let allowed = if route.is_post() {
            parts.method == Method::POST
        } else {
            parts.method == Method::GET || parts.method == Method::HEAD
        };
        if !allowed {
            let mut resp = ApiError(Error::MethodNotAllowed).into_response();
            if route.is_post() {
                resp.headers_mut().insert(axum::http::header::ALLOW, axum::http::HeaderValue::from_static("POST"));
            }
            return Err(resp);
        }
        let query = Params::parse(parts.uri.query());
        let need = route.need();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
        let who = match need {
            // The OpenAPI document is public: do not even look at credentials.
            Need::Nothing => Identity { subject: crate::policy::Subject::anonymous(), token_access: None },
            _ => identify(state, &parts.headers, &peer).await.map_err(|e| ApiError(e).into_response())?,
        };
        let caller = Caller { state: state.clone(), who, peer: peer.clone() };
        caller
            .authorize(&parts.headers, &need)
            .inspect_err(|e| {
                if let Error::Denied(reason) = e {
                    let repo = match &need {
                        Need::Repository(r) | Need::Push(r) => r.as_str(),
                        _ => "",
                    };
                    state.registry.count_denial(EventKind::RequestDeny, &caller.who.subject.name, &peer, repo, reason);
                }
            })
            .map_err(|e| ApiError(e).into_response())?;
        Ok(Authorized { route, caller, query })
    }
}

/// Authenticates the request; a failed login is counted for the ledger as on `/v2`.
async fn identify(state: &AppState, headers: &HeaderMap, peer: &str) -> Result<Identity, Error> {
    let addr = peer.parse().unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    access::identify(state, headers, addr).await.inspect_err(|e| {
        // A user over the request rate limit logged in fine: that is not a failed login.
        if matches!(e, Error::Unauthorized { .. } | Error::TooManyRequests { why: Throttled::Logins, .. }) {
            let claimed = match access::credentials(headers) {
                Ok(Credentials::Basic { user, .. }) => user,
                _ => "bearer token".to_string(),
            };
            state.registry.count_denial(EventKind::LoginFail, &claimed, peer, "", &e.to_string());
        }
    })
}
