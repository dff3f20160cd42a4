//! `GET /metrics` (Prometheus text format, public like `/healthz`: its labels name routes,
//! never repositories or users) and the layer that records every request: count, latency,
//! in-flight, body bytes each way, and uploads in flight (`crate::metrics` lists the names).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt as _;

use super::route::Route;
use crate::metrics::{
    HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_RECEIVED, HTTP_REQUESTS, HTTP_SENT, LEDGER_CHECKPOINT_SEQ,
    LEDGER_CHECKPOINT_TIME, LEDGER_HEAD, UPLOADS_IN_FLIGHT,
};
use crate::state::AppState;

/// `(api, route)` labels of a path: a few fixed values each, whatever the path holds.
fn labels(path: &str) -> (&'static str, &'static str) {
    if path == "/v2" || path == "/v2/" {
        return ("v2", "base");
    }
    if let Some(rest) = path.strip_prefix("/v2/") {
        let route = match Route::parse(rest) {
            Ok(Route::Base) => "base",
            Ok(Route::Catalog) => "catalog",
            Ok(Route::Manifest { .. }) => "manifest",
            Ok(Route::Blob { .. }) => "blob",
            Ok(Route::UploadStart { .. }) => "upload_start",
            Ok(Route::Upload { .. }) => "upload",
            Ok(Route::Tags { .. }) => "tags",
            Ok(Route::Referrers { .. }) => "referrers",
            Ok(Route::Unnamable { .. }) => "unnamable",
            Err(_) => "unknown",
        };
        return ("v2", route);
    }
    if path.starts_with("/api/v1/") {
        return ("rest", super::rest::route_label(path));
    }
    match path {
        "/token" => ("token", "token"),
        "/healthz" => ("health", "healthz"),
        "/readyz" => ("health", "readyz"),
        "/metrics" => ("metrics", "metrics"),
        _ => ("other", "unknown"),
    }
}

/// A gauge raised while it lives.
struct Raised(metrics::Gauge);

impl Raised {
    fn new(g: metrics::Gauge) -> Raised {
        g.increment(1.0);
        Raised(g)
    }
}

impl Drop for Raised {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Records one request (the outermost layer but for request ids).
pub async fn record(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let (api, route) = labels(req.uri().path());
    let method = match *req.method() {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::POST => "POST",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let _in_flight = Raised::new(metrics::gauge!(HTTP_IN_FLIGHT, "api" => api));
    let _upload = (matches!(route, "upload" | "upload_start") && matches!(method, "PATCH" | "PUT" | "POST"))
        .then(|| Raised::new(metrics::gauge!(UPLOADS_IN_FLIGHT)));
    let received = metrics::counter!(HTTP_RECEIVED, "api" => api);
    let req = req.map(|b| {
        Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                received.increment(d.len() as u64);
            }
            f
        }))
    });
    let resp = next.run(req).await;
    let status = resp.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "api" => api, "route" => route, "method" => method, "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "api" => api, "route" => route, "method" => method)
        .record(start.elapsed().as_secs_f64());
    let sent = metrics::counter!(HTTP_SENT, "api" => api);
    resp.map(|b| {
        Body::new(b.map_frame(move |f| {
            if let Some(d) = f.data_ref() {
                sent.increment(d.len() as u64);
            }
            f
        }))
    })
}

/// `GET /metrics`: the ledger gauges are read now; everything else is recorded as it happens.
pub async fn metrics(State(state): State<AppState>) -> Response {
    if let Ok(Some((seq, _))) = state.registry.ledger_head().await {
        metrics::gauge!(LEDGER_HEAD).set(seq as f64);
    }
    if let Ok(Some(cp)) = state.meta.last_checkpoint().await {
        metrics::gauge!(LEDGER_CHECKPOINT_SEQ).set(cp.seq as f64);
        if let Ok(t) = time::OffsetDateTime::parse(&cp.time, &time::format_description::well_known::Rfc3339) {
            metrics::gauge!(LEDGER_CHECKPOINT_TIME).set(t.unix_timestamp() as f64);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render()).into_response()
}
