//! [`MetricsLayer`].

use std::sync::{Arc, OnceLock};

use tower::Layer;

use super::Metrics;

/// Records every call; see the [module](super) docs.
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
            handles: Arc::new(OnceLock::new()),
        }
    }
}
