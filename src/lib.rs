//! Cairn: an OCI distribution v1.1 registry where a pushed tag never silently moves.
//!
//! Layers, and who may call whom: `api` (HTTP) -> `service` (rules) -> `meta` (SQL) and
//! `blob` (object keys), all over the pure types in `oci`. `config`, `state` and
//! `telemetry` wire them together; the binary's `main.rs` (clap and dispatch) and `cli/`
//! (one file per command) are the command line.

pub mod api;
pub mod audit;
pub mod auth;
pub mod blob;
pub mod clock;
pub mod config;
pub mod error;
pub mod keys;
pub mod meta;
pub mod metrics;
pub mod oci;
pub mod policy;
pub mod server;
pub mod service;
pub mod signatures;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use api::router;
pub use config::Config;
pub use state::AppState;

/// Serves `state` on an already bound `listener` until `shutdown` resolves, then lets
/// running requests finish (up to `server.shutdown_grace`). Connections follow the
/// `[server]` timeouts and cap (see `server`); the open-file soft limit is raised to the
/// hard limit first. Serves HTTPS when `server.tls_cert` is set (see `server::tls`), and
/// `/metrics` on `server.metrics_listen` when set. Also runs the sweeper that expires idle
/// uploads, scheduled GC and scheduled retention.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cfg = &state.config.server;
    let grace = cfg.shutdown_grace;
    let limits = server::Limits {
        header_timeout: cfg.header_timeout,
        keepalive_timeout: cfg.keepalive_timeout,
        body_timeout: cfg.body_timeout,
        max_connections: cfg.max_connections,
    };
    if let Ok(addr) = listener.local_addr() {
        let _ = state.bound.set(addr);
    }
    if let Err(e) = state.registry.record_config_load(state::config_detail(&state.config)).await {
        tracing::warn!(error = %e, "could not ledger the configuration");
    }
    // The recorder first, so that what is recorded while starting (TLS) is kept.
    metrics::handle();
    let (tls, watcher) = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let certs = server::tls::Reloading::new(cert, key)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
            let watcher = tokio::spawn(certs.clone().watch());
            (Some(server::tls::acceptor(certs)), Some(watcher))
        }
        _ => (None, None),
    };
    let metrics = match &cfg.metrics_listen {
        Some(addr) => {
            let listener = TcpListener::bind(addr.as_str()).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot listen on {addr} (server.metrics_listen): {e}"))
            })?;
            if let Ok(a) = listener.local_addr() {
                tracing::info!("metrics on http://{a}/metrics");
            }
            let app = api::metrics_router(state.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::warn!(error = %e, "the metrics listener stopped");
                }
            }))
        }
        None => None,
    };
    let sweeper = tokio::spawn(sweep_uploads(state.clone()));
    let ledger = tokio::spawn(ledger_tasks(state.clone()));
    let gc = tokio::spawn(scheduled_gc(state.clone()));
    let retention = tokio::spawn(scheduled_retention(state.clone()));
    let final_state = state.clone();
    let result = server::run(listener, router(state), tls, limits, grace, shutdown).await;
    for task in [watcher, metrics].into_iter().flatten() {
        task.abort();
    }
    sweeper.abort();
    ledger.abort();
    gc.abort();
    retention.abort();
    flush_counters(&final_state).await;
    result
}

/// Every second: writes counted pulls and denials, and signs a ledger checkpoint when due.
async fn ledger_tasks(state: AppState) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let audit = &state.config.audit;
    loop {
        tick.tick().await;
        flush_counters(&state).await;
        match state
            .registry
            .checkpoint_if_due(&state.audit_key, audit.checkpoint_every, audit.checkpoint_interval)
            .await
        {
            Ok(Some(cp)) => tracing::debug!(seq = cp.seq, "signed a ledger checkpoint"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = ?e, "could not sign a ledger checkpoint"),
        }
    }
}

async fn flush_counters(state: &AppState) {
    if let Err(e) = state.registry.flush_pulls().await {
        tracing::warn!(error = ?e, "could not write pull counters");
    }
    if let Err(e) = state.registry.flush_touches().await {
        tracing::warn!(error = ?e, "could not write blob touches");
    }
    if let Err(e) = state.registry.flush_denials().await {
        tracing::warn!(error = ?e, "could not ledger denied requests");
    }
}

/// Every `[gc] schedule` (never when it is zero): one garbage collection; skipped while another
/// collector (another process or node) holds the lock.
async fn scheduled_gc(state: AppState) {
    let cfg = &state.config.gc;
    if cfg.schedule.is_zero() {
        return;
    }
    let opts = service::GcOptions { grace: cfg.grace, dry_run: false };
    let mut tick = tokio::time::interval(cfg.schedule);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match state.registry.collect_garbage(&opts, |_| {}).await {
            Ok(r) if r.busy => tracing::debug!("another collector holds the GC lock; skipped"),
            Ok(r) if r.links > 0 || r.blobs > 0 || r.uploads > 0 => tracing::info!(
                links = r.links,
                blobs = r.blobs,
                bytes = r.bytes,
                uploads = r.uploads,
                kept = r.kept,
                "garbage collected: {} unused repository links removed, {} blobs ({} bytes) freed, {} upload leftovers removed",
                r.links,
                r.blobs,
                r.bytes,
                r.uploads
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = ?e, "garbage collection failed"),
        }
    }
}

/// Every `[retention] schedule` (never when it is zero, or when no policy is configured): one
/// retention apply as the server (`cairn`).
async fn scheduled_retention(state: AppState) {
    let cfg = &state.config.retention;
    if cfg.schedule.is_zero() || cfg.policies.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(cfg.schedule);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match state.registry.scheduled_retention().await {
            Ok(None) => tracing::debug!("another node or collector holds the maintenance lock; skipped"),
            Ok(Some(r)) if r.tags_deleted > 0 || r.manifests_deleted > 0 => tracing::info!(
                tags = r.tags_deleted,
                manifests = r.manifests_deleted,
                bytes = r.bytes,
                kept_on_recheck = r.kept_on_recheck,
                "retention applied"
            ),
            Ok(Some(_)) => {}
            Err(e) => tracing::warn!(error = ?e, "retention apply failed"),
        }
    }
}

async fn sweep_uploads(state: AppState) {
    let cfg = &state.config.uploads;
    let mut tick = tokio::time::interval(cfg.sweep_interval.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        match state.registry.expire_uploads(cfg.expire_after).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(expired = n, "expired idle uploads and removed their bytes"),
            Err(e) => tracing::warn!(error = ?e, "upload expiry failed"),
        }
    }
}

/// Registers SIGTERM and Ctrl-C handlers now (so a signal right after start is not
/// lost) and returns a future that resolves on either.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let ctrl_c = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            _ = ctrl_c => {},
            _ = term => {},
        }
        tracing::info!("shutdown requested; finishing running requests");
    }
}
