//! [`TraceLayer`] and its levels.

use tower::Layer;
use tracing::Level;

use super::Trace;

/// The levels a [`TraceLayer`] emits at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Levels {
    pub(super) span: Level,
    pub(super) event: Level,
    pub(super) failure: Level,
}

/// Opens a span per call; see the [module](super) docs for what it emits and costs.
///
/// # Example
///
/// ```
/// use msg::layers::TraceLayer;
/// use tracing::Level;
///
/// // Spans at INFO, `call ok` events at DEBUG, failures at ERROR.
/// let layer = TraceLayer::new()
///     .span_level(Level::INFO)
///     .failure_level(Level::ERROR);
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceLayer {
    pub(super) levels: Levels,
}

impl TraceLayer {
    /// The layer: spans and `call ok` events at DEBUG, `call failed` events at WARN.
    pub const fn new() -> Self {
        TraceLayer {
            levels: Levels {
                span: Level::DEBUG,
                event: Level::DEBUG,
                failure: Level::WARN,
            },
        }
    }

    /// Sets the level of the span and of the `call ok` event. Default: DEBUG, so that under
    /// the usual `RUST_LOG=info` a call that succeeds costs (nearly) nothing. The level of
    /// `call failed` is set apart, with [`failure_level`](Self::failure_level).
    pub const fn level(mut self, level: Level) -> Self {
        self.levels.span = level;
        self.levels.event = level;
        self
    }

    /// Sets the level of the span `msg.call`. Default: DEBUG.
    pub const fn span_level(mut self, level: Level) -> Self {
        self.levels.span = level;
        self
    }

    /// Sets the level of the `call ok` event. Default: DEBUG.
    pub const fn event_level(mut self, level: Level) -> Self {
        self.levels.event = level;
        self
    }

    /// Sets the level of the `call failed` event. Default: WARN, so that a failure shows
    /// under `RUST_LOG=info` while the spans are off.
    pub const fn failure_level(mut self, level: Level) -> Self {
        self.levels.failure = level;
        self
    }
}

impl Default for TraceLayer {
    fn default() -> Self {
        TraceLayer::new()
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            levels: self.levels,
        }
    }
}
