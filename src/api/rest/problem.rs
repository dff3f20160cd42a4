//! RFC 9457 problem details: every `/api/v1` error is `application/problem+json` with
//! `type`, `title`, `status` and `detail`, plus Cairn's `code` (the distribution-spec code
//! the same failure has under `/v2`). 5xx details never carry internals; the log has them.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// The media type of every `/api/v1` error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The prefix of every problem `type` (a URN; the README lists each type).
const TYPE_PREFIX: &str = "urn:cairn:problem:";

/// An RFC 9457 problem details object.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem, such as `urn:cairn:problem:not-found`.
    #[serde(rename = "type")]
    #[schema(example = "urn:cairn:problem:not-found")]
    pub kind: String,
    /// A short summary of the kind of problem; the same for every occurrence of a `type`.
    #[schema(example = "Not found")]
    pub title: String,
    /// The HTTP status code.
    #[schema(example = 404, minimum = 400, maximum = 599)]
    pub status: u16,
    /// What went wrong this time, for a person.
    pub detail: String,
    /// Cairn's error code (`NAME_INVALID`, `DENIED`, `UNAUTHORIZED`, …), as `/v2` reports the
    /// same failure.
    #[schema(example = "MANIFEST_UNKNOWN")]
    pub code: String,
}

/// An `/api/v1` error: renders `Error` as problem+json with its headers (`WWW-Authenticate`,
/// `Retry-After`, `Allow`).
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        ApiError(e)
    }
}

impl From<crate::meta::MetaError> for ApiError {
    fn from(e: crate::meta::MetaError) -> ApiError {
        ApiError(e.into())
    }
}

/// The problem type slug and title of an error, by its status and code.
fn kind(status: StatusCode, code: &str) -> (&'static str, &'static str) {
    match (status.as_u16(), code) {
        (400, "NAME_INVALID") => ("invalid-name", "Invalid repository name or tag"),
        (400, "DIGEST_INVALID") => ("invalid-digest", "Invalid digest"),
        (400, _) => ("invalid-parameter", "Invalid parameter"),
        (401, _) => ("unauthorized", "Authentication required"),
        (403, _) => ("forbidden", "Access denied"),
        (404, "UNSUPPORTED") => ("no-such-endpoint", "No such endpoint"),
        (404, _) => ("not-found", "Not found"),
        (405, "DENIED") => ("denied", "Refused by a rule"),
        (405, _) => ("method-not-allowed", "Method not allowed"),
        (409, "DENIED") => ("denied", "Refused by a rule"),
        (412, _) => ("precondition-failed", "Precondition failed"),
        (429, _) => ("too-many-requests", "Too many requests"),
        (503, _) => ("unavailable", "Service unavailable"),
        (s, _) if s >= 500 => ("internal", "Internal error"),
        _ => ("error", "Request failed"),
    }
}

impl Problem {
    /// The problem for `e`.
    pub fn of(e: &Error) -> Problem {
        let status = e.status();
        let code = e.code().unwrap_or("UNKNOWN");
        let (slug, title) = kind(status, code);
        let detail = if status.is_server_error() {
            "the server could not answer; its log has the details".to_string()
        } else {
            e.to_string()
        };
        Problem {
            kind: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_string(),
            status: status.as_u16(),
            detail,
            code: code.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let e = self.0;
        let status = e.status();
        if status.is_server_error() {
            tracing::error!(error = ?e, "request failed");
        } else if matches!(status, StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS) {
            tracing::warn!(status = status.as_u16(), reason = %e, "request refused");
        }
        let mut resp = (status, Json(Problem::of(&e))).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &e {
            Error::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Error::TooManyRequests { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_carry_type_title_status_detail_and_code() {
        let p = Problem::of(&Error::NotFound);
        assert_eq!(
            (p.kind.as_str(), p.status, p.code.as_str()),
            ("urn:cairn:problem:no-such-endpoint", 404, "UNSUPPORTED")
        );
        let p = Problem::of(&Error::ManifestUnknown("x".into()));
        assert_eq!(p.kind, "urn:cairn:problem:not-found");
        assert!(p.detail.contains('x'));
        let p = Problem::of(&Error::internal(anyhow::anyhow!("secret path /var/lib/x")));
        assert_eq!(p.status, 500);
        assert!(!p.detail.contains("secret"), "no internals in a 5xx: {}", p.detail);
    }
}
