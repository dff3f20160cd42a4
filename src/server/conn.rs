//! One connection: its state (waiting for headers, idle, busy), the supervisor that
//! enforces the header and keep-alive timeouts and closes it on request, the socket
//! wrapper that notices incoming bytes and stalled writes, and the per-request service
//! that counts requests in progress.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

use super::Limits;
use super::body::{BusyBody, StallBody};

/// How long a connection asked to close may take to flush and close before it is dropped.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the accept loop asks of open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Serve on.
    Running,
    /// Finish running requests, then close; close idle connections now.
    Graceful,
    /// Close now.
    Now,
}

/// What a connection without requests in progress is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// A request's headers (since the connection opened or its first byte arrived).
    Headers,
    /// Nothing: idle between requests.
    Idle,
}

struct Phase {
    in_flight: usize,
    waiting: Waiting,
    since: Instant,
}

/// Shared between a connection's supervisor, its socket wrapper and its requests.
pub struct ConnState {
    id: u64,
    phase: Mutex<Phase>,
    /// Mirrors `waiting == Idle && in_flight == 0`, so reads check it without the lock.
    idle: AtomicBool,
    /// Wakes the supervisor: the phase changed, or the connection should close.
    wake: Notify,
    close: AtomicBool,
}

impl ConnState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request reached the service.
    fn begin_request(self: &Arc<Self>) -> Busy {
        let mut p = self.lock();
        p.in_flight += 1;
        self.idle.store(false, Ordering::Relaxed);
        Busy(self.clone())
    }

    /// Bytes arrived: an idle connection is now sending a request's headers.
    fn bytes_read(&self) {
        if !self.idle.load(Ordering::Relaxed) {
            return;
        }
        let mut p = self.lock();
        if p.in_flight == 0 && p.waiting == Waiting::Idle {
            p.waiting = Waiting::Headers;
            p.since = Instant::now();
            self.idle.store(false, Ordering::Relaxed);
            self.wake.notify_one();
        }
    }

    /// `None` while busy; else when the wait being timed runs out, and which it is.
    fn deadline(&self, limits: &Limits) -> Option<(Instant, Waiting)> {
        let p = self.lock();
        let limit = match p.waiting {
            Waiting::Headers => limits.header_timeout,
            Waiting::Idle => limits.keepalive_timeout,
        };
        (p.in_flight == 0).then_some((p.since + limit, p.waiting))
    }

    fn is_busy(&self) -> bool {
        self.lock().in_flight > 0
    }

    /// Since when it has been without a request, if it is.
    fn quiet_since(&self) -> Option<Instant> {
        let p = self.lock();
        (p.in_flight == 0).then_some(p.since)
    }

    fn request_close(&self) {
        self.close.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

/// A request in progress; dropped when its response body is done (or abandoned).
pub struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut p = self.0.lock();
        p.in_flight = p.in_flight.saturating_sub(1);
        if p.in_flight == 0 {
            p.waiting = Waiting::Idle;
            p.since = Instant::now();
            self.0.idle.store(true, Ordering::Relaxed);
            self.0.wake.notify_one();
        }
    }
}

/// The open connections, to find the one to close when the cap is reached.
#[derive(Default)]
pub struct Connections {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<ConnState>>>,
}

impl Connections {
    /// Registers a new connection, waiting for its first request.
    pub fn open(&self) -> Arc<ConnState> {
        let state = Arc::new(ConnState {
            id: self.next.fetch_add(1, Ordering::Relaxed),
            phase: Mutex::new(Phase { in_flight: 0, waiting: Waiting::Headers, since: Instant::now() }),
            idle: AtomicBool::new(false),
            wake: Notify::new(),
            close: AtomicBool::new(false),
        });
        if let Ok(mut m) = self.open.lock() {
            m.insert(state.id, state.clone());
        }
        state
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&id);
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.open.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Asks the connection without a request for the longest time to close; false if
    /// every connection is busy. While one asked before is still closing, asks no other.
    pub fn close_oldest_idle(&self) -> bool {
        let Ok(m) = self.open.lock() else { return false };
        if m.values().any(|c| c.close.load(Ordering::Relaxed) && c.quiet_since().is_some()) {
            return true;
        }
        let oldest = m
            .values()
            .filter(|c| !c.close.load(Ordering::Relaxed))
            .filter_map(|c| c.quiet_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.request_close();
                true
            }
            None => false,
        }
    }
}

/// Serves one connection until it ends, times out, or is told to stop.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    app: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Limits,
    state: Arc<ConnState>,
    conns: Arc<Connections>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<Stop>,
) {
    let io = ConnIo::new(stream, state.clone(), limits.body_timeout);
    match tls {
        None => serve_io(io, remote, app, limits, &state, builder, stop).await,
        Some(acceptor) => match tokio::time::timeout(limits.header_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => serve_io(tls, remote, app, limits, &state, builder, stop).await,
            Ok(Err(e)) => tracing::debug!(peer = %remote, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(peer = %remote, "TLS handshake timed out"),
        },
    }
    conns.remove(state.id);
}

/// Serves HTTP/1.1 or HTTP/2 on an open (and, with TLS, handshaken) connection.
async fn serve_io<I>(
    io: I,
    remote: SocketAddr,
    app: Router,
    limits: Limits,
    state: &Arc<ConnState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<Stop>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let conn_state = state.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let busy = conn_state.begin_request();
        let app = app.clone();
        async move { Ok::<_, Infallible>(handle(req, app, remote, busy, limits.body_timeout).await) }
    });
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // Closing asks hyper first, so a response already produced is flushed; a connection
    // that does not close within a second of that is dropped.
    let mut closing = false;
    loop {
        let stop_now = *stop.borrow() == Stop::Now;
        let stopping = *stop.borrow() == Stop::Graceful || state.close.load(Ordering::Relaxed);
        if stop_now {
            break;
        }
        if stopping && !closing {
            conn.as_mut().graceful_shutdown();
            closing = true;
            if !state.is_busy() {
                let _ = tokio::time::timeout(CLOSE_WAIT, conn.as_mut()).await;
                break;
            }
        }
        let deadline = state.deadline(&limits);
        let timer = async {
            match deadline {
                Some((at, _)) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(peer = %remote, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = timer => {
                if let Some((at, waiting)) = state.deadline(&limits)
                    && at <= Instant::now()
                {
                    tracing::debug!(peer = %remote, ?waiting, "closing connection: timed out");
                    if !closing {
                        conn.as_mut().graceful_shutdown();
                    }
                    let _ = tokio::time::timeout(CLOSE_WAIT, conn.as_mut()).await;
                    break;
                }
            }
            _ = state.wake.notified() => {}
            r = stop.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
}

async fn handle(
    mut req: Request<Incoming>,
    app: Router,
    remote: SocketAddr,
    busy: Busy,
    body_timeout: Duration,
) -> Response<Body> {
    req.extensions_mut().insert(ConnectInfo(remote));
    // HTTP/2 names the host in `:authority`; handlers read `Host`.
    if !req.headers().contains_key(header::HOST)
        && let Some(v) = req.uri().authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(header::HOST, v);
    }
    let req = req.map(|b| Body::new(StallBody::new(b, body_timeout)));
    let resp = match app.oneshot(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    resp.map(|b| Body::new(BusyBody::new(b, busy)))
}

/// The socket: reports incoming bytes to the connection state and fails a write the
/// peer has not let through for the stall timeout.
struct ConnIo {
    inner: TcpStream,
    state: Arc<ConnState>,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    armed: bool,
}

impl ConnIo {
    fn new(inner: TcpStream, state: Arc<ConnState>, stall: Duration) -> ConnIo {
        ConnIo { inner, state, stall, timer: Box::pin(tokio::time::sleep(stall)), armed: false }
    }

    /// A write is pending: true once it has been pending for the whole stall timeout.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let at = Instant::now() + self.stall;
            self.timer.as_mut().reset(at);
            self.armed = true;
        }
        self.timer.as_mut().poll(cx).is_ready()
    }

    fn written<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending if self.stalled(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.armed = false;
                ready
            }
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.bytes_read();
        }
        r
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
