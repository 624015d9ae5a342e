//! Tracing: [`TraceLayer`] opens a span per call through a socket or a handler, with what is
//! known of it (size, encoding, topic, peer), and closes it with the outcome and the
//! latency. Spans and events have the target `msg`, so `RUST_LOG=msg=debug` shows them.
//!
//! # What it emits, and at which level
//!
//! | what | level, by default | set with | fields |
//! |---|---|---|---|
//! | span `msg.call`, one per call | DEBUG | [`span_level`](TraceLayer::span_level) | `kind` (`request`, `publish`, `handle`), `size`, `encoding`, `topic` or `peer`, `route` when the request names one; at the end `outcome`, `error`, `latency_us` |
//! | event `call ok` | DEBUG | [`event_level`](TraceLayer::event_level) | `kind`, `latency_us` |
//! | event `call failed` | WARN | [`failure_level`](TraceLayer::failure_level) | `kind`, `error`, `latency_us` (when the call was timed) |
//!
//! [`TraceLayer::level`] sets the span's and the `call ok` event's level at once, as
//! tower-http's `DefaultMakeSpan::level` and `DefaultOnResponse::level` do for HTTP. A
//! failed call is logged at WARN even when spans are off, so that under the usual
//! `RUST_LOG=info` a failure is seen and a success costs nothing; set
//! `failure_level(Level::DEBUG)` to keep failures quiet too.
//!
//! # What it costs
//!
//! When the subscriber does not want the span's level (`RUST_LOG=info` and the default
//! DEBUG), a call costs two checks of a level (the span's and the `call ok` event's), each a
//! relaxed atomic load, and the call site's cached interest when the global maximum level
//! lets the level through: no span is made, nothing is allocated or formatted, and the
//! clock is not read, unless the `call ok` event's level is wanted, which needs the latency.
//! A failed call checks the failure level once more. When the span is wanted, each call
//! pays for what the subscriber does with it: the span's allocation in the subscriber's
//! registry, its fields recorded and formatted, entering and leaving it at each poll, and
//! two reads of the clock. The per-layer cost table in `BENCHMARKS.md` measures both.
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
//! use tracing::Level;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let echo = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! // Spans and `call ok` events at DEBUG, failures at WARN:
//! let svc = TraceLayer::new().layer(echo);
//! let reply = svc.oneshot(Message::from("hi")).await.unwrap();
//! assert_eq!(reply.payload(), "hi");
//!
//! // Every call shown under `RUST_LOG=info`:
//! let echo = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! let svc = TraceLayer::new().level(Level::INFO).layer(echo);
//! svc.oneshot(Message::from("seen at info")).await.unwrap();
//! # });
//! ```

mod future;
mod layer;
mod service;

pub use future::TraceFuture;
pub use layer::TraceLayer;
pub use service::Trace;

use msg_core::Message;
use tracing::Span;

/// Expands one of tracing's level-taking macros (`span`, `event`, `enabled`) with the target
/// `msg` at a level known only at run time: a call site's level is part of its static
/// metadata, so there is one call site per level, and the match picks it.
macro_rules! at_level {
    ($mac:ident, $level:expr $(, $($args:tt)+)?) => {
        match $level {
            ::tracing::Level::ERROR => {
                ::tracing::$mac!(target: "msg", ::tracing::Level::ERROR $(, $($args)+)?)
            }
            ::tracing::Level::WARN => {
                ::tracing::$mac!(target: "msg", ::tracing::Level::WARN $(, $($args)+)?)
            }
            ::tracing::Level::INFO => {
                ::tracing::$mac!(target: "msg", ::tracing::Level::INFO $(, $($args)+)?)
            }
            ::tracing::Level::DEBUG => {
                ::tracing::$mac!(target: "msg", ::tracing::Level::DEBUG $(, $($args)+)?)
            }
            _ => ::tracing::$mac!(target: "msg", ::tracing::Level::TRACE $(, $($args)+)?),
        }
    };
}
use at_level;

/// What a traced request says about itself: the fields it records on its span.
pub trait Describe {
    /// What kind of call this is: the span's `kind` field.
    const KIND: &'static str;

    /// Records the request's fields (`size`, `encoding`, and `topic`, `route` or `peer`
    /// where they apply) on `span`. Called only when the span is enabled.
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
        if let Some(route) = self.route() {
            span.record("route", route.as_str());
        }
    }

    fn payload_len(&self) -> usize {
        self.payload().len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tower::{service_fn, Layer, Service};
    use tracing::level_filters::LevelFilter;
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    use super::*;

    /// A subscriber at INFO that counts the spans made and the events seen.
    #[derive(Clone, Default)]
    struct Counting {
        spans: Arc<AtomicUsize>,
        events: Arc<AtomicUsize>,
    }

    impl Subscriber for Counting {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::INFO
        }
        fn max_level_hint(&self) -> Option<LevelFilter> {
            Some(LevelFilter::INFO)
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(self.spans.fetch_add(1, Ordering::SeqCst) as u64 + 1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {
            self.events.fetch_add(1, Ordering::SeqCst);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    /// Calls an echo under `layer` that fails "fail", and runs the call to its end; says
    /// whether the call was timed.
    fn call(layer: TraceLayer, payload: &'static str) -> bool {
        let mut svc = layer.layer(service_fn(|msg: Message| async move {
            if msg.payload() == "fail" {
                return Err("refused");
            }
            Ok::<_, &str>(msg)
        }));
        let future = svc.call(Message::from(payload));
        let timed = future.start.is_some();
        let _ = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future);
        timed
    }

    #[test]
    fn a_call_below_the_subscribers_level_makes_no_span_and_reads_no_clock() {
        let counting = Counting::default();
        tracing::subscriber::with_default(counting.clone(), || {
            assert!(!call(TraceLayer::new(), "ok"));
            assert_eq!(counting.spans.load(Ordering::SeqCst), 0);
            assert_eq!(counting.events.load(Ordering::SeqCst), 0);
            // A failure is logged, at WARN, without the clock.
            assert!(!call(TraceLayer::new(), "fail"));
            assert_eq!(counting.spans.load(Ordering::SeqCst), 0);
            assert_eq!(counting.events.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn a_call_at_the_subscribers_level_makes_its_span_and_times_it() {
        let counting = Counting::default();
        tracing::subscriber::with_default(counting.clone(), || {
            assert!(call(TraceLayer::new().level(Level::INFO), "ok"));
            assert_eq!(counting.spans.load(Ordering::SeqCst), 1);
            assert_eq!(counting.events.load(Ordering::SeqCst), 1);
            // The `call ok` event wanted without the span: timed, no span.
            assert!(call(TraceLayer::new().event_level(Level::INFO), "ok"));
            assert_eq!(counting.spans.load(Ordering::SeqCst), 1);
            assert_eq!(counting.events.load(Ordering::SeqCst), 2);
        });
    }
}
