//! [`TraceFuture`]: a traced call.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use tracing::Span;

use super::at_level;
use super::layer::Levels;

pin_project_lite::pin_project! {
    /// A traced call: polled inside its span, which records the outcome and the latency
    /// when it ends.
    pub struct TraceFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) span: Span,
        // When the call started, if the span or the `call ok` event will say how long it
        // took: read only then.
        pub(super) start: Option<Instant>,
        pub(super) kind: &'static str,
        pub(super) levels: Levels,
    }
}

impl<F> fmt::Debug for TraceFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceFuture")
            .field("span", &self.span)
            .field("kind", &self.kind)
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
        // Entering a disabled span does nothing, but it is skipped all the same.
        let _entered = (!this.span.is_disabled()).then(|| this.span.enter());
        let out = ready!(this.inner.poll(cx));
        let latency_us = this
            .start
            .map(|start| u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
        let kind = *this.kind;
        match &out {
            Ok(_) => {
                if let Some(latency_us) = latency_us {
                    this.span.record("outcome", "ok");
                    this.span.record("latency_us", latency_us);
                    at_level!(event, this.levels.event, kind, latency_us, "call ok");
                }
            }
            Err(e) => {
                this.span.record("outcome", "error");
                this.span.record("error", tracing::field::display(e));
                this.span.record("latency_us", latency_us);
                at_level!(
                    event,
                    this.levels.failure,
                    kind,
                    latency_us,
                    error = %e,
                    "call failed"
                );
            }
        }
        Poll::Ready(out)
    }
}
