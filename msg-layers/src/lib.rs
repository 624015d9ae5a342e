//! tower layers for `msg` sockets.
//!
//! Every `msg` socket is a [`tower::Service`] over [`Message`](msg_core::Message)s, so tower's own layers
//! (timeout, retry, concurrency limit, load shedding) stack on it unchanged. This crate
//! holds the layers that know about messages: [`compression`] ([`GzipLayer`] and its
//! siblings, [`CompressionLayer`] for any codec), [`TraceLayer`] (a span per call),
//! [`MetricsLayer`] (counters and a latency histogram through the `metrics` facade) and
//! [`SetEncodingLayer`].
//!
//! # Example
//!
//! ```
//! use msg_core::{Encoding, Message};
//! use msg_layers::SetEncodingLayer;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let inner = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! let mut svc = SetEncodingLayer::new(Encoding::custom(200).unwrap()).layer(inner);
//! let out = svc.ready().await.unwrap().call(Message::from("already encoded")).await.unwrap();
//! assert_eq!(out.encoding().code(), 200);
//! # });
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod compression;
pub mod metrics;
mod set_encoding;
pub mod trace;

#[cfg(feature = "gzip")]
pub use compression::GzipLayer;
#[cfg(feature = "lz4")]
pub use compression::Lz4Layer;
#[cfg(feature = "snappy")]
pub use compression::SnappyLayer;
#[cfg(feature = "zstd")]
pub use compression::ZstdLayer;
pub use compression::{Compression, CompressionLayer};
pub use metrics::{Metrics, MetricsLayer};
pub use set_encoding::{SetEncoding, SetEncodingLayer};
pub use trace::{Trace, TraceLayer};
