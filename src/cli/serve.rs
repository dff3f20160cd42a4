//! `cairn serve`: the registry, listening until a shutdown signal. Says where it listens on
//! stdout (`cairn listening on SCHEME://ADDR`, which scripts and tests wait for) and warns
//! when it is open to anyone.

use std::process::ExitCode;

use cairn::config::Config;

use super::output::{say, tell};

/// Serves until shut down; exit 1 (logged, and said on stderr unless logs are JSON) on failure.
pub async fn serve(cfg: Config) -> ExitCode {
    let json = cfg.log.format == cairn::config::LogFormat::Json;
    match run_server(cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            if !json {
                tell!("cairn: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the server. The config was loaded by `load` (main.rs), which already refused a
/// non-loopback address without users (`Config::exposure_problem`).
async fn run_server(cfg: Config) -> anyhow::Result<()> {
    let addr = cfg.listen_addr();
    let state = cairn::AppState::from_config(cfg).await?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let bound = listener.local_addr()?;
    let shutdown = cairn::shutdown_signal();
    state.auth.refresh().await?;
    if state.auth.is_open() {
        tracing::warn!(
            "no users or grants configured: ANYONE who can reach {bound} can push, pull and delete. \
             Add [[auth.users]] (see `cairn hash-password`) to restrict access."
        );
    }
    tracing::info!(
        data_dir = %state.config.server.data_dir.display(),
        database = %state.config.database_url_redacted(),
        "cairn listening on {}://{bound}",
        state.config.scheme()
    );
    let line = cairn::telemetry::result_line(
        &state.config.log,
        &format!("cairn listening on {}://{bound}", state.config.scheme()),
        &[("address", bound.to_string())],
    );
    say!("{line}");
    cairn::serve(listener, state, shutdown).await?;
    tracing::info!("stopped");
    Ok(())
}
