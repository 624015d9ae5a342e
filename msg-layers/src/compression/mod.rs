//! Compression of whole messages: the [`Compressor`] codecs, the [`CompressionLayer`] that
//! compresses what a service sends, and the [`Decoders`] every receiving socket decodes
//! with, picked by each message's encoding header, so receivers need no configuration.
//!
//! The layer compresses in the direction a message leaves: a request through a `ReqSocket`,
//! a publication through a `PubSocket`, a response from a `serve` handler. A payload
//! shorter than [`DEFAULT_MIN_LEN`], or one that does not shrink, is sent plain.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use msg_core::{Encoding, Message};
//! use msg_layers::compression::{Decoders, GzipLayer};
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! // A stand-in for a socket: it hands back what it was sent.
//! let wire = service_fn(|msg: Message| async move { Ok::<_, std::convert::Infallible>(msg) });
//! let mut svc = GzipLayer::new(6).layer(wire);
//! let sent = svc.ready().await.unwrap().call(Message::new(Bytes::from(vec![b'a'; 4096]))).await.unwrap();
//! assert_eq!(sent.encoding(), Encoding::GZIP);
//! assert!(sent.payload().len() < 4096);
//!
//! // Any receiver decodes it, by its header.
//! let plain = Decoders::default().decode(sent, 1 << 20).unwrap();
//! assert_eq!(plain.payload().len(), 4096);
//! # });
//! ```

mod codec;
mod decoders;
mod future;
mod layer;
mod service;

#[cfg(feature = "gzip")]
pub use codec::GzipCompressor;
#[cfg(feature = "lz4")]
pub use codec::Lz4Compressor;
#[cfg(feature = "snappy")]
pub use codec::SnappyCompressor;
#[cfg(feature = "zstd")]
pub use codec::ZstdCompressor;
pub use codec::{Compressor, DecompressError};
pub use decoders::Decoders;
pub use future::CompressionFuture;
pub use layer::CompressionLayer;
#[cfg(feature = "gzip")]
pub use layer::GzipLayer;
#[cfg(feature = "lz4")]
pub use layer::Lz4Layer;
#[cfg(feature = "snappy")]
pub use layer::SnappyLayer;
#[cfg(feature = "zstd")]
pub use layer::ZstdLayer;
pub use service::{Codec, Compress, Compression};

/// Payloads shorter than this are sent plain by default.
///
/// Measured on JSON-like payloads (`msg-bench --codecs`): at 64 bytes and below every codec
/// makes the payload larger (gzip by 20-60%, its header alone is 18 bytes); at 128 bytes they
/// save about 30%; at 256 bytes, 52-60%, for 1-20 µs per message. 256 is where every codec
/// at least halves the payload.
pub const DEFAULT_MIN_LEN: usize = 256;

/// Payloads (the input of the call: plain to compress, packed to decompress) of at least
/// this many bytes are compressed and decompressed by msg's sockets on tokio's blocking
/// pool, not on the task that runs a connection or a caller; shorter ones inline.
///
/// Measured per call (`msg-layers/tests/codec_cost.rs`, JSON-like payloads, optimized, on
/// the 2-core machine the suite runs on): gzip-6 compresses 4 KiB in 37 µs and 16 KiB in
/// 170 µs; zstd-3 16 KiB in 43 µs and 64 KiB in 160 µs; lz4 and snappy 64 KiB in 75-95 µs.
/// Decompressing costs about 100 µs at 64-100 KiB out for gzip and zstd (13-16 KiB in, at
/// their ratio of 0.16), and at about 200 KiB out for lz4 and snappy (50-60 KiB in). At
/// 16 KiB in, no call of the slow codecs costs much more than tokio's 100 µs between
/// awaits, and the 64 B and 1 KiB messages of the bench never leave their task.
pub const OFFLOAD_MIN_LEN: usize = 16 * 1024;
