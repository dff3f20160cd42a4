//! Body wrappers: a request body fails once it has delivered nothing for the stall
//! timeout (however long the whole transfer takes), and a response body keeps its
//! connection counted as busy until it is done.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::BoxError;
use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::conn::Busy;

/// A request body that fails after `stall` without a frame.
pub struct StallBody<B> {
    inner: B,
    stall: Duration,
    /// Created on the first wait, so bodiless requests never touch the timer.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<B> StallBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, stall: Duration) -> StallBody<B> {
        StallBody { inner, stall, timer: None, armed: false }
    }
}

/// The error a stalled body ends with; handlers show its text to the client.
#[derive(Debug, thiserror::Error)]
#[error("the request body sent nothing for {0:?} (server.body_timeout)")]
pub struct BodyStalled(Duration);

impl<B> http_body::Body for StallBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let at = Instant::now() + this.stall;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if !this.armed {
                    timer.as_mut().reset(at);
                    this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(BodyStalled(this.stall).into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that holds its connection's `Busy` mark until dropped.
pub struct BusyBody {
    inner: Body,
    _busy: Busy,
}

impl BusyBody {
    /// Wraps `inner`.
    pub fn new(inner: Body, busy: Busy) -> BusyBody {
        BusyBody { inner, _busy: busy }
    }
}

impl http_body::Body for BusyBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
