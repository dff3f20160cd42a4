//! The access check of every request: credentials from the `Authorization` header, the
//! action a `/v2` route needs (and, for a bearer token, the scope that covers it), and the
//! 401 challenge / 403 refusal when it is missing. [`identify`], which every `/v2` and
//! `/api/v1` request that looks at credentials goes through, also charges the verified
//! user's request rate limit (`rate_limit.rs`).

use std::net::IpAddr;

use axum::http::{HeaderMap, Method, header};
use headers::authorization::{Basic, Bearer};
use headers::{Authorization, HeaderMapExt};

use super::route::{Kind, Route};
use crate::auth::{AuthError, CATALOG_SCOPE, Credentials, Identity};
use crate::error::{Error, Throttled};
use crate::oci::RepoName;
use crate::policy::Action;
use crate::state::AppState;

/// Reads the `Authorization` header: `Basic` (RFC 7617, decoded by the `headers` crate,
/// which splits `user:password` at the first colon, so a password may hold `:` and a user
/// name may not) or `Bearer` (RFC 6750). Anything else is a 401 that says what was expected.
pub fn credentials(headers: &HeaderMap) -> Result<Credentials, Error> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(Credentials::None) };
    let bad = |what: &str| Error::Unauthorized {
        message: format!("malformed Authorization header: {what}"),
        challenge: "Basic realm=\"cairn\"".into(),
    };
    // Only the first `Authorization` value counts, as in the `headers` decoders.
    let scheme = value.as_bytes().split(|b| *b == b' ').next().unwrap_or_default();
    if scheme.eq_ignore_ascii_case(b"basic") {
        let Ok(Some(Authorization(basic))) = headers.typed_try_get::<Authorization<Basic>>() else {
            return Err(bad("`Basic` must be followed by the base64 encoding of UTF-8 `user:password`"));
        };
        Ok(Credentials::Basic { user: basic.username().to_string(), password: basic.password().to_string() })
    } else if scheme.eq_ignore_ascii_case(b"bearer") {
        let Ok(Some(Authorization(bearer))) = headers.typed_try_get::<Authorization<Bearer>>() else {
            return Err(bad("`Bearer` must be followed by a token of visible ASCII characters"));
        };
        Ok(Credentials::Bearer(bearer.token().trim().to_string()))
    } else {
        Err(bad("expected `Basic …` or `Bearer …`"))
    }
}

/// Authenticates the request, then charges the signed-in subject's request rate limit
/// (`[rate_limit] per_user`): 429 with `Retry-After` when it is spent. Only a subject whose
/// credentials checked out is charged; anonymous requests and failed logins are not (the
/// client limit and the login limiter cover them).
pub async fn identify(state: &AppState, headers: &HeaderMap, addr: IpAddr) -> Result<Identity, Error> {
    let creds = credentials(headers)?;
    let who = state.auth.authenticate(&creds, Some(addr)).await.map_err(|e| auth_error(state, headers, e, None))?;
    if !who.subject.is_anonymous() {
        state
            .rate_limits
            .charge_user(&who.subject.name, addr)
            .map_err(|retry_after| Error::TooManyRequests { retry_after, why: Throttled::UserRate })?;
    }
    Ok(who)
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
        AuthError::RateLimited { retry_after } | AuthError::Busy { retry_after } => {
            Error::TooManyRequests { retry_after, why: Throttled::Logins }
        }
        AuthError::Meta(m) => m.into(),
    }
}

/// `Bearer realm="<base>/token",service="<service>"[,scope="…"]`. The base is
/// `server.public_url`, else `http://` (`https://` when Cairn serves TLS) and the request's `Host` if it is a plain
/// `host[:port]`, else the address Cairn listens on (a `Host` never reaches the header
/// unchecked, so it cannot add parameters).
pub fn challenge(state: &AppState, headers: &HeaderMap, scope: Option<&str>) -> String {
    let base = match &state.config.server.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => match headers.get(header::HOST).and_then(|h| h.to_str().ok()).filter(|h| is_authority(h)) {
            Some(host) => format!("{}://{host}", state.config.scheme()),
            None => format!(
                "{}://{}",
                state.config.scheme(),
                state.bound.get().copied().unwrap_or_else(|| state.config.listen_addr())
            ),
        },
    };
    let mut c = format!("Bearer realm=\"{base}/token\",service=\"{}\"", state.auth.service());
    if let Some(s) = scope {
        c.push_str(&format!(",scope=\"{s}\""));
    }
    c
}

/// True for `host[:port]` as RFC 3986 writes an authority without user info, limited to
/// what a registry host can be: a DNS name (letters, digits, `-`, `.`, `_`), an IPv4
/// address, or a bracketed IPv6 address, and a port of 1 to 5 digits.
fn is_authority(s: &str) -> bool {
    let (host_ok, rest) = match s.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((addr, rest)) => (addr.parse::<std::net::Ipv6Addr>().is_ok(), rest),
            None => return false,
        },
        None => {
            let end = s.find(':').unwrap_or(s.len());
            let host = &s[..end];
            let ok = !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            (ok, &s[end..])
        }
    };
    let port_ok = rest.is_empty()
        || rest.strip_prefix(':').is_some_and(|p| (1..=5).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
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
    state.auth.allows(&who.subject, repo, action) && token_covers(who, "repository", repo, action.as_str())
}

/// True unless `who` holds a bearer token whose `access` lacks `kind:name:action`.
fn token_covers(who: &Identity, kind: &str, name: &str, action: &str) -> bool {
    who.token_access.as_ref().is_none_or(|access| access.iter().any(|e| e.grants(kind, name, action)))
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
        return Err(Error::Unauthorized {
            message: format!("authentication required to {} repository {repo}", action.as_str()),
            challenge: scope_challenge(state, headers, who, &scope(repo, action)),
        });
    }
    Err(Error::Denied(format!("{} access to repository {repo} denied for {}", action.as_str(), who.subject.name)))
}

/// Allows a `/v2` request or says why not: the repository action its route needs; for the
/// base, any signed-in caller once access is configured; for the catalog, a bearer token
/// must hold `registry:catalog:*` (anyone may list it: it shows only what they may pull).
pub fn authorize_route(
    state: &AppState,
    headers: &HeaderMap,
    who: &Identity,
    method: &Method,
    route: &Route,
) -> Result<(), Error> {
    if let Some((repo, action)) = required(method, route) {
        return authorize(state, headers, who, &repo, action);
    }
    match route {
        Route::Base if !state.auth.is_open() && who.subject.is_anonymous() => Err(Error::Unauthorized {
            message: "authentication required".into(),
            challenge: challenge(state, headers, None),
        }),
        Route::Catalog if !token_covers(who, "registry", "catalog", "*") => Err(Error::Unauthorized {
            message: format!("the bearer token does not cover the catalog; ask the token endpoint for {CATALOG_SCOPE}"),
            challenge: scope_challenge(state, headers, who, CATALOG_SCOPE),
        }),
        _ => Ok(()),
    }
}

/// The challenge for `scope`, with `error="insufficient_scope"` for a signed-in caller's
/// token (a new token can cover it; anonymous clients show "authentication required" only
/// without the error).
fn scope_challenge(state: &AppState, headers: &HeaderMap, who: &Identity, scope: &str) -> String {
    let mut c = challenge(state, headers, Some(scope));
    if who.token_access.is_some() && !who.subject.is_anonymous() {
        c.push_str(",error=\"insufficient_scope\"");
    }
    c
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};
    use base64::Engine;

    use super::{credentials, is_authority};
    use crate::auth::Credentials;

    fn read(value: &str) -> Result<Credentials, String> {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        credentials(&h).map_err(|e| e.to_string())
    }

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_pass))
    }

    #[test]
    fn credentials_from_the_authorization_header() {
        assert!(matches!(credentials(&HeaderMap::new()), Ok(Credentials::None)));
        // RFC 7617: the first colon ends the user name; the password may hold more.
        for (value, want) in [(basic("bob:pa:ss"), ("bob", "pa:ss")), (basic("bob:"), ("bob", ""))] {
            match read(&value) {
                Ok(Credentials::Basic { user, password }) => assert_eq!((user.as_str(), password.as_str()), want),
                other => panic!("{value}: {other:?}"),
            }
        }
        match read(&basic("bob:pw").replacen("Basic", "bASIC", 1)) {
            Ok(Credentials::Basic { user, .. }) => assert_eq!(user, "bob"),
            other => panic!("{other:?}"),
        }
        match read("bearer abc.def") {
            Ok(Credentials::Bearer(t)) => assert_eq!(t, "abc.def"),
            other => panic!("{other:?}"),
        }
        for (value, says) in [
            (basic("no-colon"), "user:password"),
            ("Basic !!!not-base64".to_string(), "base64"),
            ("Digest x".to_string(), "expected `Basic …` or `Bearer …`"),
            ("Basic".to_string(), "user:password"),
            ("Bearer".to_string(), "followed by a token"),
        ] {
            let e = read(&value).expect_err(&value);
            assert!(e.contains("malformed Authorization header") && e.contains(says), "{value}: {e}");
        }
    }

    #[test]
    fn authorities() {
        for ok in ["registry.example.com", "reg:5000", "127.0.0.1:5000", "[::1]:5000", "[2001:db8::1]", "a_b-c.d"] {
            assert!(is_authority(ok), "{ok}");
        }
        for bad in [
            "",
            ":5000",
            "a\",x=\"y",
            "a b",
            "a,b",
            "a:5000:1",
            "a:",
            "a:123456",
            "a:5o",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "user@host",
            "host/path",
        ] {
            assert!(!is_authority(bad), "{bad}");
        }
    }
}
