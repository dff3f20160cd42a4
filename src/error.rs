//! The one error type of the service and API layers, and the only place that knows OCI error
//! codes and HTTP statuses. 5xx bodies say nothing of internals; the log has the detail.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::meta::MetaError;
use crate::oci::{Digest, DigestError, ManifestError, NameError, RepoName, Tag};

/// Why a request was answered 429 ([`Error::TooManyRequests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    /// The login limiter (`auth/limiter.rs`): too many failed or concurrent logins.
    #[error("too many login attempts")]
    Logins,
    /// The signed-in user's `[rate_limit] per_user` budget is spent.
    #[error("this user's request rate limit (rate_limit.per_user) is spent")]
    UserRate,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The blob is not in this repository (the digest as the client wrote it).
    #[error("blob {0} is not known to this repository")]
    BlobUnknown(String),
    /// The upload request is malformed.
    #[error("blob upload invalid: {0}")]
    UploadInvalid(String),
    /// A chunk does not start where the upload stands.
    #[error("chunk starts at byte {start} but the upload has {offset} bytes; resume from byte {offset}")]
    UploadOutOfOrder { start: u64, offset: u64 },
    /// No such upload session (never existed, finished, cancelled or expired).
    #[error("upload {0} is unknown: it finished, was cancelled or expired; start a new upload")]
    UploadUnknown(String),
    /// A digest is malformed or does not match the content.
    #[error("{0}")]
    DigestInvalid(String),
    /// The manifest references something the repository does not have.
    #[error("manifest references {0}, which this repository does not have; push it first")]
    ManifestBlobUnknown(Digest),
    /// The manifest body is invalid.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// No such manifest or tag.
    #[error("manifest {0} is not known to this repository")]
    ManifestUnknown(String),
    /// The repository name is malformed.
    #[error("{0}")]
    NameInvalid(String),
    /// The repository does not exist.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// A length or size does not match the content.
    #[error("{0}")]
    SizeInvalid(String),
    /// A manifest over the size cap.
    #[error("manifest is larger than the {limit}-byte limit")]
    ManifestTooLarge { limit: usize },
    /// A blob Range that lies outside the blob.
    #[error("range not satisfiable for a blob of {len} bytes")]
    RangeNotSatisfiable { len: u64 },
    /// An immutable tag would move (PUT: 409 DENIED, `attempted` is the refused digest) or be
    /// deleted (DELETE: 405 DENIED, `attempted` is `None`), DESIGN §4.
    #[error("{}", immutable_message(repo, tag, current, rule))]
    TagImmutable { repo: RepoName, tag: Tag, current: Digest, attempted: Option<Digest>, rule: String },
    /// A DELETE would unlink what a manifest of the repository still references (a blob it
    /// uses, or a manifest an index lists): 405 DENIED naming the holder, DESIGN §4.
    #[error("{}", referenced_message(repo, what, target, holder, tag.as_ref()))]
    Referenced { repo: RepoName, what: &'static str, target: Digest, holder: Digest, tag: Option<Tag> },
    /// A DELETE of a tag or manifest inside a rollback window, not forced: 405 DENIED naming
    /// the window (DESIGN §6).
    #[error(
        "{what} of {repo} is inside the rollback window of {tag} ({position} of {size}); an admin may force the \
         delete with ?force=true&reason=<why>"
    )]
    InWindow { repo: RepoName, what: String, tag: Tag, position: usize, size: u32 },
    /// A rollback that cannot be done (immutable tag, target outside the window or gone): 409
    /// DENIED saying why.
    #[error("{0}")]
    RollbackRefused(String),
    /// A signature gate refuses (DESIGN §5): a tag write to, or a GET of, a manifest without
    /// a valid signature by one of the gate's keys: 403 DENIED naming the gate and what to do.
    #[error("{message}")]
    Unsigned { message: String, gate: String, keys: Vec<String>, digest: Digest },
    /// An `If-Match` / `If-None-Match` condition does not hold: 412.
    #[error("{0}")]
    PreconditionFailed(String),
    /// No (valid) credentials for something that needs them: 401 with a challenge.
    #[error("{message}")]
    Unauthorized { message: String, challenge: String },
    /// Authenticated, but not allowed: 403.
    #[error("{0}")]
    Denied(String),
    /// Too many failed (or running) logins, or a user's request rate limit spent: 429 with
    /// Retry-After (seconds), code `TOOMANYREQUESTS`.
    #[error("{why}; retry in {retry_after} seconds")]
    TooManyRequests { retry_after: u64, why: Throttled },
    /// A parameter or operation this registry does not support.
    #[error("{0}")]
    Unsupported(String),
    /// The method is not allowed on this route.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// No route matched: 404 with code `UNSUPPORTED` (no spec code names an unknown endpoint).
    #[error("no such endpoint: the path matches no route of this API")]
    NotFound,
    /// The disk under the database or the blob store is full: 507, code `UNKNOWN`. The
    /// write did not happen (an upload session keeps its offset), so a retry succeeds
    /// once space is freed.
    #[error("the registry's storage is full; nothing was stored; retry when space has been freed")]
    InsufficientStorage(#[source] anyhow::Error),
    /// The database is busy beyond its timeout or cannot write for now: 503 with
    /// Retry-After, code `UNKNOWN`. Nothing was stored.
    #[error("the registry's database is busy or failing; retry in {retry_after} seconds")]
    Unavailable {
        retry_after: u64,
        #[source]
        source: anyhow::Error,
    },
    /// A dependency (database, storage) failed; the client sees a bare 500.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// True when a concurrent writer conflicted (`MetaError::Conflict`, or `NotFound`: a
    /// row the transaction read was removed by another node before it wrote): the operation
    /// wrote nothing and may run again, deciding anew.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Unavailable { source, .. }
            if matches!(source.downcast_ref::<MetaError>(), Some(MetaError::Conflict(_) | MetaError::NotFound(_))))
    }

    /// Wraps any lower-level failure as an internal error.
    pub fn internal(e: impl Into<anyhow::Error>) -> Error {
        Error::Internal(e.into())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BlobUnknown(_) => StatusCode::NOT_FOUND,
            Error::UploadInvalid(_) => StatusCode::BAD_REQUEST,
            Error::UploadOutOfOrder { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::UploadUnknown(_) => StatusCode::NOT_FOUND,
            Error::DigestInvalid(_) => StatusCode::BAD_REQUEST,
            Error::ManifestBlobUnknown(_) => StatusCode::BAD_REQUEST,
            Error::ManifestInvalid(_) => StatusCode::BAD_REQUEST,
            Error::ManifestUnknown(_) => StatusCode::NOT_FOUND,
            Error::NameInvalid(_) => StatusCode::BAD_REQUEST,
            Error::NameUnknown(_) => StatusCode::NOT_FOUND,
            Error::SizeInvalid(_) => StatusCode::BAD_REQUEST,
            Error::ManifestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            Error::TagImmutable { attempted: Some(_), .. } => StatusCode::CONFLICT,
            Error::TagImmutable { attempted: None, .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::Referenced { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::InWindow { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Error::RollbackRefused(_) => StatusCode::CONFLICT,
            Error::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            Error::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Error::Denied(_) | Error::Unsigned { .. } => StatusCode::FORBIDDEN,
            Error::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::Unsupported(_) => StatusCode::BAD_REQUEST,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::NotFound => StatusCode::NOT_FOUND,
            Error::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The distribution-spec error code; `None` where no spec code fits and the body is empty.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Error::BlobUnknown(_) => Some("BLOB_UNKNOWN"),
            Error::UploadInvalid(_) => Some("BLOB_UPLOAD_INVALID"),
            Error::UploadOutOfOrder { .. } => Some("BLOB_UPLOAD_INVALID"),
            Error::UploadUnknown(_) => Some("BLOB_UPLOAD_UNKNOWN"),
            Error::DigestInvalid(_) => Some("DIGEST_INVALID"),
            Error::ManifestBlobUnknown(_) => Some("MANIFEST_BLOB_UNKNOWN"),
            Error::ManifestInvalid(_) => Some("MANIFEST_INVALID"),
            Error::ManifestUnknown(_) => Some("MANIFEST_UNKNOWN"),
            Error::NameInvalid(_) => Some("NAME_INVALID"),
            Error::NameUnknown(_) => Some("NAME_UNKNOWN"),
            Error::SizeInvalid(_) => Some("SIZE_INVALID"),
            Error::ManifestTooLarge { .. } => Some("SIZE_INVALID"),
            Error::RangeNotSatisfiable { .. } => Some("UNSUPPORTED"),
            Error::TagImmutable { .. } => Some("DENIED"),
            Error::Referenced { .. } => Some("DENIED"),
            Error::InWindow { .. } | Error::RollbackRefused(_) => Some("DENIED"),
            Error::PreconditionFailed(_) => Some("DENIED"),
            Error::Unauthorized { .. } => Some("UNAUTHORIZED"),
            Error::Denied(_) | Error::Unsigned { .. } => Some("DENIED"),
            Error::TooManyRequests { .. } => Some("TOOMANYREQUESTS"),
            Error::Unsupported(_) => Some("UNSUPPORTED"),
            Error::MethodNotAllowed => Some("UNSUPPORTED"),
            Error::NotFound => Some("UNSUPPORTED"),
            Error::InsufficientStorage(_) | Error::Unavailable { .. } => Some("UNKNOWN"),
            Error::Internal(_) => Some("UNKNOWN"),
        }
    }

    /// Structured detail for the error body.
    pub fn detail(&self) -> Value {
        match self {
            Error::BlobUnknown(d) => json!({ "digest": d }),
            Error::UploadInvalid(_) => Value::Null,
            Error::UploadOutOfOrder { start, offset } => {
                json!({ "start": start, "offset": offset })
            }
            Error::UploadUnknown(id) => json!({ "upload": id }),
            Error::DigestInvalid(_) => Value::Null,
            Error::ManifestBlobUnknown(d) => json!({ "digest": d.as_str() }),
            Error::ManifestInvalid(_) => Value::Null,
            Error::ManifestUnknown(r) => json!({ "reference": r }),
            Error::NameInvalid(_) => Value::Null,
            Error::NameUnknown(n) => json!({ "name": n.as_str() }),
            Error::SizeInvalid(_) => Value::Null,
            Error::ManifestTooLarge { limit } => json!({ "limit": limit }),
            Error::RangeNotSatisfiable { len } => json!({ "size": len }),
            Error::TagImmutable { tag, current, attempted, rule, .. } => json!({
                "tag": tag.as_str(),
                "current": current.as_str(),
                "attempted": attempted.as_ref().map(Digest::as_str),
                "rule": rule,
            }),
            Error::Referenced { target, holder, tag, .. } => json!({
                "digest": target.as_str(),
                "referenced_by": holder.as_str(),
                "tag": tag.as_ref().map(Tag::as_str),
            }),
            Error::InWindow { tag, position, size, .. } => json!({
                "window": { "tag": tag.as_str(), "position": position, "size": size },
            }),
            Error::RollbackRefused(_) => Value::Null,
            Error::PreconditionFailed(_) => Value::Null,
            Error::Unauthorized { .. } => Value::Null,
            Error::Denied(_) => Value::Null,
            Error::Unsigned { gate, keys, digest, .. } => {
                json!({ "reason": "signature-gate", "gate": gate, "keys": keys, "digest": digest.as_str() })
            }
            Error::TooManyRequests { retry_after, .. } => json!({ "retry_after": retry_after }),
            Error::Unsupported(_) => Value::Null,
            Error::MethodNotAllowed => Value::Null,
            Error::NotFound => Value::Null,
            Error::InsufficientStorage(_) => Value::Null,
            Error::Unavailable { retry_after, .. } => json!({ "retry_after": retry_after }),
            Error::Internal(_) => Value::Null,
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        match self.code() {
            Some("DENIED" | "TOOMANYREQUESTS") => {
                tracing::warn!(status = status.as_u16(), code = self.code(), reason = %self, "request refused");
            }
            Some("UNAUTHORIZED") => {
                tracing::info!(status = status.as_u16(), code = self.code(), reason = %self, "request refused");
            }
            _ => {}
        }
        let mut resp = match self.code() {
            None => status.into_response(),
            Some(code) => {
                let mut err = json!({ "code": code, "message": self.to_string() });
                let detail = self.detail();
                if !detail.is_null() {
                    err["detail"] = detail;
                }
                (status, Json(json!({ "errors": [err] }))).into_response()
            }
        };
        match &self {
            Error::RangeNotSatisfiable { len } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, v);
                }
            }
            Error::Unauthorized { challenge, .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Error::TooManyRequests { retry_after, .. } | Error::Unavailable { retry_after, .. } => {
                resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            Error::UploadOutOfOrder { offset, .. } => {
                let range = if *offset == 0 { "0-0".to_string() } else { format!("0-{}", offset - 1) };
                if let Ok(v) = HeaderValue::from_str(&range) {
                    resp.headers_mut().insert(header::RANGE, v);
                }
            }
            _ => {}
        }
        resp
    }
}

/// DESIGN §4's refusal text. The rule is named when one matched; when none did, the text says
/// that unmatched tags are immutable and where to make tags mutable.
fn immutable_message(repo: &RepoName, tag: &Tag, current: &Digest, rule: &str) -> String {
    let why = match rule {
        crate::policy::immutability::DEFAULT_RULE => "no [[immutability.rules]] entry matches it, and unmatched tags \
             are immutable; add a rule with mode = \"mutable\" to let it move"
            .to_string(),
        rule => format!("rule {rule}"),
    };
    format!("tag {repo}:{tag} is immutable; it points to {current} ({why})")
}

fn referenced_message(repo: &RepoName, what: &str, target: &Digest, holder: &Digest, tag: Option<&Tag>) -> String {
    let kind = if what == "blob" { "manifest" } else { "index" };
    let tagged = match tag {
        Some(t) => format!(", tagged {repo}:{t},"),
        None => String::new(),
    };
    format!(
        "{what} {target} cannot be deleted from {repo}: {kind} {holder}{tagged} references it; delete that {kind} first"
    )
}

/// Seconds a client is told to wait after a 503 for a busy or failing database.
const UNAVAILABLE_RETRY_AFTER: u64 = 5;

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Error {
        match e {
            MetaError::Full(_) => Error::InsufficientStorage(e.into()),
            MetaError::Unavailable(_) => Error::Unavailable { retry_after: UNAVAILABLE_RETRY_AFTER, source: e.into() },
            MetaError::Conflict(_) | MetaError::NotFound(_) => Error::Unavailable { retry_after: 1, source: e.into() },
            e => Error::Internal(e.into()),
        }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Error {
        if is_storage_full(&e) { Error::InsufficientStorage(e.into()) } else { Error::Internal(e.into()) }
    }
}

/// True when an I/O error anywhere in `e`'s chain of causes says the disk (or a quota) is full.
fn is_storage_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

impl From<NameError> for Error {
    fn from(e: NameError) -> Error {
        match e {
            NameError::Digest(d) => d.into(),
            other => Error::NameInvalid(other.to_string()),
        }
    }
}

impl From<DigestError> for Error {
    fn from(e: DigestError) -> Error {
        match e {
            DigestError::Malformed(_) => Error::DigestInvalid(e.to_string()),
            DigestError::Unsupported(_) => Error::Unsupported(e.to_string()),
        }
    }
}

impl From<ManifestError> for Error {
    fn from(e: ManifestError) -> Error {
        Error::ManifestInvalid(e.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_and_a_failing_database_503_with_retry_after() {
        let full = Error::from(MetaError::Full("database or disk is full".into()));
        assert_eq!((full.status(), full.code()), (StatusCode::INSUFFICIENT_STORAGE, Some("UNKNOWN")));

        let busy = Error::from(MetaError::Unavailable("database is locked".into()));
        assert_eq!((busy.status(), busy.code()), (StatusCode::SERVICE_UNAVAILABLE, Some("UNKNOWN")));
        let resp = busy.into_response();
        assert_eq!(resp.headers()[header::RETRY_AFTER], UNAVAILABLE_RETRY_AFTER.to_string().as_str());

        let enospc = std::io::Error::from_raw_os_error(28);
        let store = object_store::Error::Generic { store: "LocalFileSystem", source: Box::new(enospc) };
        assert_eq!(Error::from(store).status(), StatusCode::INSUFFICIENT_STORAGE);
        let other = object_store::Error::Generic { store: "LocalFileSystem", source: "boom".into() };
        assert_eq!(Error::from(other).status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
