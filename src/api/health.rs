//! `/healthz` (the process answers) and `/readyz` (database and blob storage can write).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::error::Error;
use crate::state::AppState;

/// Liveness: 200 while the process serves requests.
pub async fn healthz() -> impl IntoResponse {
    "ok\n"
}

/// Readiness: 200 when the database can commit a write and the blob store can store an
/// object, else 503 naming the part that cannot (the log has the cause).
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.registry.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            let full = matches!(e.error, Error::InsufficientStorage(_));
            tracing::warn!(error = ?e.error, what = e.what, "not ready");
            let why = if full { " (storage full)" } else { "" };
            (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}{why}\n", e.what))
        }
    }
}
