//! Tracing: [`TraceLayer`] opens a span per call through a socket or a handler, with what is
//! known of it (size, encoding, topic, peer), and closes it with the outcome and the
//! latency. Spans and events have the target `msg`, so `RUST_LOG=msg=debug` shows them.
//!
//! `tracing::Instrument` would enter the span while the call is polled; this layer also
//! records the outcome and the latency when the call ends, so it carries its own future.
//! (`tracing-futures` adds nothing here: a call is one future, not a stream.)
//!
//! # Example
//!
//! ```
//! use msg_core::Message;
//! use msg_layers::trace::TraceLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let echo = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! let svc = TraceLayer::new().layer(echo);
//! let reply = svc.oneshot(Message::from("hi")).await.unwrap();
//! assert_eq!(reply.payload(), "hi");
//! # });
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use msg_core::Message;
use tower::{Layer, Service};
use tracing::Span;

/// What a traced request says about itself: the fields it records on its span.
pub trait Describe {
    /// What kind of call this is: the span's `kind` field.
    const KIND: &'static str;

    /// Records the request's fields (`size`, `encoding`, and `topic` or `peer` where they
    /// apply) on `span`.
    fn describe(&self, span: &Span);

    /// The size of the payload the request carries.
    fn payload_len(&self) -> usize;
}

/// A client's request.
impl Describe for Message {
    const KIND: &'static str = "request";

    fn describe(&self, span: &Span) {
        span.record("size", self.payload().len());
        span.record("encoding", tracing::field::display(self.encoding()));
    }

    fn payload_len(&self) -> usize {
        self.payload().len()
    }
}

/// Opens a span per call; see the [module](self) docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceLayer {
    _private: (),
}

impl TraceLayer {
    /// The layer.
    pub const fn new() -> Self {
        TraceLayer { _private: () }
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

/// The service of [`TraceLayer`].
#[derive(Debug, Clone)]
pub struct Trace<S> {
    inner: S,
}

impl<S, Req> Service<Req> for Trace<S>
where
    S: Service<Req>,
    S::Error: fmt::Display,
    Req: Describe,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let span = tracing::info_span!(
            target: "msg",
            "msg.call",
            kind = Req::KIND,
            size = tracing::field::Empty,
            encoding = tracing::field::Empty,
            topic = tracing::field::Empty,
            peer = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        if !span.is_disabled() {
            req.describe(&span);
        }
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture {
            inner,
            span,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A traced call: polled inside its span, which records the outcome and the latency
    /// when it ends.
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        start: Instant,
    }
}

impl<F> fmt::Debug for TraceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceFuture")
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}

impl<F, T, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let out = ready!(this.inner.poll(cx));
        let latency = this.start.elapsed().as_micros() as u64;
        this.span.record("latency_us", latency);
        match &out {
            Ok(_) => {
                this.span.record("outcome", "ok");
                tracing::debug!(target: "msg", latency_us = latency, "call ok");
            }
            Err(e) => {
                this.span.record("outcome", "error");
                this.span.record("error", tracing::field::display(e));
                tracing::debug!(target: "msg", latency_us = latency, error = %e, "call failed");
            }
        }
        Poll::Ready(out)
    }
}
