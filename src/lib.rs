//! Cairn: an OCI distribution v1.1 registry where a pushed tag never silently moves.
//!
//! Layers, and who may call whom: `api` (HTTP) -> `service` (rules) -> `meta` (SQL) and
//! `blob` (object keys), all over the pure types in `oci`. `config`, `state` and
//! `telemetry` wire them together; `main.rs` is the command line.

pub mod api;
pub mod audit;
pub mod auth;
pub mod blob;
pub mod clock;
pub mod config;
pub mod error;
pub mod meta;
pub mod oci;
pub mod policy;
pub mod service;
pub mod state;
pub mod telemetry;

use std::future::Future;
use std::time::Duration;

use tokio::net::TcpListener;

pub use api::router;
pub use config::Config;
pub use state::AppState;

/// Serves `state` on an already bound `listener` until `shutdown` resolves, then lets
/// running requests finish (up to `server.shutdown_grace`). Also runs the sweeper that
/// expires idle uploads.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = state.config.server.shutdown_grace;
    if let Err(e) = state.registry.record_config_load(state::config_detail(&state.config)).await {
        tracing::warn!(error = %e, "could not ledger the configuration");
    }
    let sweeper = tokio::spawn(sweep_uploads(state.clone()));
    let ledger = tokio::spawn(ledger_tasks(state.clone()));
    let final_state = state.clone();
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut stop_rx2 = stop_rx.clone();
    let deadline = async move {
        let _ = stop_rx2.wait_for(|s| *s).await;
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        r = server => r,
        _ = deadline => {
            tracing::warn!(grace = ?grace, "shutdown grace period over; closing remaining connections");
            Ok(())
        }
    };
    sweeper.abort();
    ledger.abort();
    flush_counters(&final_state).await;
    drop(stop_rx);
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
    if let Err(e) = state.registry.flush_denials().await {
        tracing::warn!(error = ?e, "could not ledger denied requests");
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
