//! [`MetricsFuture`]: a measured call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use super::service::Handles;

pin_project_lite::pin_project! {
    /// A measured call: records its duration and outcome when it ends.
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        pub(super) inner: F,
        pub(super) handles: Arc<Handles>,
        pub(super) start: Instant,
    }
}

impl<F, T, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        this.handles
            .duration
            .record(this.start.elapsed().as_secs_f64());
        if out.is_err() {
            this.handles.errors.increment(1);
        }
        Poll::Ready(out)
    }
}
