//! Metrics: [`MetricsLayer`] records every call through a socket or a handler with the
//! [`metrics`] facade, so any exporter (Prometheus, StatsD...) the application installs
//! sees them. With no exporter installed, recording costs next to nothing.
//!
//! | name | kind | labels | what |
//! |---|---|---|---|
//! | `msg_calls_total` | counter | `kind` | calls made (`request`, `publish`, `handle`) |
//! | `msg_call_errors_total` | counter | `kind` | calls that failed |
//! | `msg_call_duration_seconds` | histogram | `kind` | time from call to outcome |
//! | `msg_payload_bytes_total` | counter | `kind` | payload bytes the calls carried |
//! | `msg_compression_ratio` | histogram | `encoding` | compressed size over original, per message compressed |
//! | `msg_compression_skipped_total` | counter | `encoding` | messages sent plain because they did not shrink |
//!
//! The sockets record their own counters the same way: `msg_connections_total`,
//! `msg_disconnections_total`, `msg_bytes_sent_total` and `msg_bytes_received_total` (by
//! `socket`), `msg_connect_failures_total`, `msg_refused_total`,
//! `msg_request_errors_total` (by `error`, the error's kind), `msg_publish_dropped_total` and
//! `msg_subscriber_missed_total`.
//!
//! # Example
//!
//! ```
//! use msg_core::Message;
//! use msg_layers::metrics::MetricsLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let echo = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! let svc = MetricsLayer::new().layer(echo);
//! svc.oneshot(Message::from("counted")).await.unwrap();
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use metrics::{Counter, Histogram};

use tower::{Layer, Service};

use crate::trace::Describe;

/// Records every call; see the [module](self) docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer {
    _private: (),
}

impl MetricsLayer {
    /// The layer.
    pub const fn new() -> Self {
        MetricsLayer { _private: () }
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Metrics<S> {
        Metrics {
            inner,
            handles: None,
        }
    }
}

/// The metrics of one kind of call, registered once: naming a metric with a label that is
/// not a literal allocates, which a call should not pay.
struct Handles {
    kind: &'static str,
    calls: Counter,
    errors: Counter,
    bytes: Counter,
    duration: Histogram,
}

impl Handles {
    fn new(kind: &'static str) -> Self {
        Handles {
            kind,
            calls: metrics::counter!("msg_calls_total", "kind" => kind),
            errors: metrics::counter!("msg_call_errors_total", "kind" => kind),
            bytes: metrics::counter!("msg_payload_bytes_total", "kind" => kind),
            duration: metrics::histogram!("msg_call_duration_seconds", "kind" => kind),
        }
    }
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handles").field("kind", &self.kind).finish()
    }
}

/// The service of [`MetricsLayer`].
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    /// Registered at the first call, with the recorder installed then; clones share them.
    handles: Option<Arc<Handles>>,
}

impl<S, Req> Service<Req> for Metrics<S>
where
    S: Service<Req>,
    Req: Describe,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let handles = match &self.handles {
            Some(handles) if handles.kind == Req::KIND => handles.clone(),
            _ => self
                .handles
                .insert(Arc::new(Handles::new(Req::KIND)))
                .clone(),
        };
        handles.calls.increment(1);
        handles.bytes.increment(req.payload_len() as u64);
        MetricsFuture {
            inner: self.inner.call(req),
            handles,
            start: Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A measured call: records its duration and outcome when it ends.
    #[derive(Debug)]
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<Handles>,
        start: Instant,
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
