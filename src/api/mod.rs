//! HTTP only (`/v2` OCI API, `/api/v1` REST, health): routing, parsing requests, calling `service`, rendering responses. Handlers
//! never see SQL, pools or object keys. Calls `service` and `oci`; nothing calls `api`.

mod access;
mod health;
mod metrics;
pub mod rate_limit;
mod rest;
mod route;
mod token;
mod v2;

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Request};
use axum::routing::{any, get};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::state::AppState;

pub use route::Route;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `GET /metrics` alone, for `server.metrics_listen`.
pub fn metrics_router(state: AppState) -> Router {
    crate::metrics::handle();
    Router::new().route("/metrics", get(metrics::metrics)).with_state(state)
}

/// The whole HTTP surface (without `/metrics` when `server.metrics_listen` is set).
pub fn router(state: AppState) -> Router {
    crate::metrics::handle();
    let v2 = Router::new()
        .route("/v2", any(v2::base))
        .route("/v2/", any(v2::base))
        .route("/v2/{*rest}", any(v2::dispatch))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("docker-distribution-api-version"),
            HeaderValue::from_static("registry/2.0"),
        ));
    let root = Router::new();
    let root = match state.config.server.metrics_listen {
        None => root.route("/metrics", get(metrics::metrics)),
        Some(_) => root,
    };
    let limits = state.rate_limits.clone();
    root.route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/token", get(token::get_token).post(token::post_token))
        .route("/api/v1", any(rest::dispatch))
        .route("/api/v1/", any(rest::dispatch))
        .route("/api/v1/{*rest}", any(rest::dispatch))
        .merge(v2)
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(limits, rate_limit::limit))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get(REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id = %id)
                })
                .on_response(|res: &axum::response::Response, latency: Duration, _span: &tracing::Span| {
                    tracing::info!(status = res.status().as_u16(), ms = latency.as_millis() as u64, "response");
                }),
        )
        .layer(axum::middleware::from_fn(metrics::record))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
