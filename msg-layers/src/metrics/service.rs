//! [`Metrics`], the service of [`MetricsLayer`](super::MetricsLayer), and the handles it
//! records with.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use metrics::{Counter, Histogram};
use tower::Service;

use super::MetricsFuture;
use crate::trace::Describe;

/// The metrics of one kind of call, registered once: naming a metric with a label that is
/// not a literal builds a key and allocates, and the recorder looks the key up, which a
/// call should not pay.
pub(super) struct Handles {
    kind: &'static str,
    calls: Counter,
    pub(super) errors: Counter,
    bytes: Counter,
    pub(super) duration: Histogram,
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

/// The service of [`MetricsLayer`](super::MetricsLayer).
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    pub(super) inner: S,
    /// Registered at the first call through this service or any of its clones, with the
    /// recorder installed then, and shared by them all.
    pub(super) handles: Arc<OnceLock<Arc<Handles>>>,
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
        let registered = self
            .handles
            .get_or_init(|| Arc::new(Handles::new(Req::KIND)));
        // A service called with requests of several kinds (rare: a socket takes one) keeps
        // the first kind's handles and registers the others' at each call.
        let handles = if registered.kind == Req::KIND {
            registered.clone()
        } else {
            Arc::new(Handles::new(Req::KIND))
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
