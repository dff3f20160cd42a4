//! `/healthz` (the process answers) and `/readyz` (database and storage answer).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use crate::state::AppState;

/// Liveness: 200 while the process serves requests.
pub async fn healthz() -> impl IntoResponse {
    "ok\n"
}

/// Readiness: 200 when the database and the object store answer, else 503.
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    match state.registry.ready().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            tracing::warn!(error = ?e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: database or storage unreachable\n".to_string())
        }
    }
}
