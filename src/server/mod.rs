//! Serving HTTP connections: the accept loop under a connection cap, each connection's
//! timeouts (request headers, keep-alive idleness, stalled bodies in either direction),
//! the open-file limit, and graceful shutdown. Called by `lib.rs` with the router; knows
//! nothing of the registry.
//!
//! A connection is in one of three states: waiting for a request's headers (from its
//! opening, or from the first byte after an idle spell: `header_timeout`), idle between
//! requests (`keepalive_timeout`), or busy with requests (no connection deadline; a body
//! that moves no byte for `body_timeout` fails instead). At the cap, a connection waiting
//! to be accepted makes room by closing the connection that has been idle (or silent)
//! longest; busy connections are never closed to make room.

mod body;
mod conn;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use conn::Connections;

/// File descriptors kept free for the database, blob files and logs.
const RESERVED_FDS: u64 = 64;
/// File descriptors one connection may hold at once: its socket and a blob file.
const FDS_PER_CONNECTION: u64 = 2;
/// The "connection limit reached" warning is repeated at most this often.
const FULL_LOG_EVERY: Duration = Duration::from_secs(10);
/// While a connection waits for a free slot, idle connections are looked for this often.
const RECHECK: Duration = Duration::from_millis(100);

/// The timeouts and the cap (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// For a request's headers.
    pub header_timeout: Duration,
    /// For a connection with no request in progress.
    pub keepalive_timeout: Duration,
    /// For a body that moves no byte (request or response).
    pub body_timeout: Duration,
    /// Open connections at most (before the open-file limit lowers it).
    pub max_connections: usize,
}

/// Raises the soft open-file limit to the hard limit; returns the soft limit in force.
pub fn raise_open_file_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open-file limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft)
        }
    }
}

/// The connection cap: `max_connections`, lowered so that the connections and the
/// reserve fit in the open-file limit.
fn effective_cap(max_connections: usize, open_files: Option<u64>) -> usize {
    let fit = open_files.map_or(usize::MAX, |n| {
        usize::try_from(n.saturating_sub(RESERVED_FDS) / FDS_PER_CONNECTION).unwrap_or(usize::MAX)
    });
    max_connections.min(fit).clamp(1, u32::MAX as usize)
}

/// Serves `app` on `listener` (over TLS when `tls` is given: the handshake must finish
/// within `header_timeout`) until `shutdown` resolves; then stops accepting, closes idle
/// connections, and lets running requests finish for up to `grace`.
pub async fn run(
    listener: TcpListener,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open_files = raise_open_file_limit();
    let cap = effective_cap(limits.max_connections, open_files);
    if cap < limits.max_connections {
        tracing::warn!(
            max_connections = limits.max_connections,
            open_file_limit = open_files,
            "server.max_connections lowered to {cap} to fit the open-file limit; raise the hard limit (ulimit -Hn, LimitNOFILE=) for more"
        );
    } else {
        tracing::info!(max_connections = cap, open_file_limit = open_files, "connection limits");
    }
    let slots = Arc::new(Semaphore::new(cap));
    let conns = Arc::new(Connections::default());
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(conn::Stop::Running);
    let mut full_logged: Option<Instant> = None;
    let mut accept_failed: Option<Instant> = None;
    tokio::pin!(shutdown);

    'accept: loop {
        let (stream, remote) = tokio::select! {
            biased;
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE/ENFILE and the like: make room and try again shortly.
                    if accept_failed.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                        tracing::warn!(error = %e, open = conns.len(), "cannot accept connections; closing idle ones");
                        accept_failed = Some(Instant::now());
                    }
                    conns.close_oldest_idle();
                    tokio::time::sleep(RECHECK).await;
                    continue;
                }
            },
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if full_logged.is_none_or(|t| t.elapsed() >= FULL_LOG_EVERY) {
                    tracing::warn!(
                        open = cap,
                        "connection limit reached ({cap} open, server.max_connections): closing idle connections \
                         to make room; new connections wait while all are busy"
                    );
                    full_logged = Some(Instant::now());
                }
                loop {
                    conns.close_oldest_idle();
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => break 'accept,
                        p = slots.clone().acquire_owned() => break p.expect("the slot semaphore is never closed"),
                        _ = tokio::time::sleep(RECHECK) => {}
                    }
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let state = conns.open();
        let task = conn::serve(
            stream,
            remote,
            app.clone(),
            tls.clone(),
            limits,
            state,
            conns.clone(),
            builder.clone(),
            stop_rx.clone(),
        );
        tokio::spawn(async move {
            task.await;
            drop(permit);
        });
    }

    drop(listener);
    let _ = stop_tx.send(conn::Stop::Graceful);
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace, slots.acquire_many(all)).await.is_err() {
        tracing::warn!(grace = ?grace, open = conns.len(), "shutdown grace period over; closing remaining connections");
        let _ = stop_tx.send(conn::Stop::Now);
        let _ = tokio::time::timeout(Duration::from_secs(1), slots.acquire_many(all)).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_fits_the_open_file_limit() {
        assert_eq!(effective_cap(1024, None), 1024);
        assert_eq!(effective_cap(1024, Some(1_048_576)), 1024);
        assert_eq!(effective_cap(1024, Some(256)), 96);
        assert_eq!(effective_cap(1024, Some(10)), 1);
    }
}
