//! Metrics: [`MetricsLayer`] records every call through a socket or a handler with the
//! [`metrics`] facade, so any exporter (Prometheus, StatsD...) the application installs
//! sees them.
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
//! # What it costs
//!
//! The layer registers its metrics once, at the first call through it, and keeps the
//! handles, shared by every clone of its service (as `svc.clone().oneshot(..)` makes per
//! call): a call does not build a key, allocate labels or look the metric up in the
//! recorder. What remains per call is what the recorder does with a value: two counter
//! increments, and a histogram record, plus two reads of the clock for the duration (and a
//! third increment if the call fails). With no recorder installed the handles are no-ops.
//! With `metrics-exporter-prometheus`'s recorder, the counters are atomic adds, and a
//! histogram record pushes the value and a timestamp into a lock-free bucket that the
//! exporter drains when it is scraped or upkept. The per-layer cost table in
//! `BENCHMARKS.md` measures it with that recorder installed.
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

mod future;
mod layer;
mod service;

pub use future::MetricsFuture;
pub use layer::MetricsLayer;
pub use service::Metrics;
