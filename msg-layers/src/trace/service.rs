//! [`Trace`], the service of [`TraceLayer`](super::TraceLayer).

use std::fmt;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::Service;

use super::layer::Levels;
use super::{at_level, Describe, TraceFuture};

/// The service of [`TraceLayer`](super::TraceLayer).
#[derive(Debug, Clone)]
pub struct Trace<S> {
    pub(super) inner: S,
    pub(super) levels: Levels,
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
        let span = at_level!(
            span,
            self.levels.span,
            "msg.call",
            kind = Req::KIND,
            size = tracing::field::Empty,
            encoding = tracing::field::Empty,
            topic = tracing::field::Empty,
            route = tracing::field::Empty,
            peer = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
            latency_us = tracing::field::Empty,
        );
        // The one decision: with neither the span nor `call ok` wanted, nothing is recorded,
        // formatted or timed (a failure's event needs no latency).
        let timed = if span.is_disabled() {
            at_level!(enabled, self.levels.event)
        } else {
            req.describe(&span);
            true
        };
        let inner = if span.is_disabled() {
            self.inner.call(req)
        } else {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture {
            inner,
            span,
            start: timed.then(Instant::now),
            kind: Req::KIND,
            levels: self.levels,
        }
    }
}
