//! [`CompressionLayer`] and the named layers of the built-in codecs.

use std::sync::Arc;

use tower::Layer;

use super::codec::Compressor;
use super::service::{Codec, Compression};
use super::DEFAULT_MIN_LEN;

/// Compresses what leaves through the service it wraps with a [`Compressor`]; see the
/// [module](super) docs.
#[derive(Clone)]
pub struct CompressionLayer {
    codec: Codec,
}

impl std::fmt::Debug for CompressionLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionLayer")
            .field("encoding", &self.codec.encoding())
            .field("min_len", &self.codec.min_len())
            .finish()
    }
}

impl CompressionLayer {
    /// A layer compressing with `compressor`, payloads of [`DEFAULT_MIN_LEN`] bytes and up.
    pub fn new(compressor: impl Compressor) -> Self {
        CompressionLayer {
            codec: Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN),
        }
    }

    /// Sends payloads shorter than `min_len` plain.
    pub fn min_len(mut self, min_len: usize) -> Self {
        self.codec = Codec::new(self.codec.compressor().clone(), min_len);
        self
    }

    /// The codec the layer compresses with.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }
}

impl<S> Layer<S> for CompressionLayer {
    type Service = Compression<S>;

    fn layer(&self, inner: S) -> Compression<S> {
        Compression::new(inner, self.codec.clone())
    }
}

macro_rules! named_layer {
    ($(#[$doc:meta])* $name:ident, $feature:literal, $codec:ident, ($($arg:ident: $ty:ty),*)) => {
        $(#[$doc])*
        #[cfg(feature = $feature)]
        #[derive(Clone, Debug)]
        pub struct $name(CompressionLayer);

        #[cfg(feature = $feature)]
        impl $name {
            #[doc = concat!("The layer; the arguments are those of [`", stringify!($codec), "::new`](super::", stringify!($codec), "::new).")]
            pub fn new($($arg: $ty),*) -> Self {
                $name(CompressionLayer::new(super::$codec::new($($arg),*)))
            }

            /// Sends payloads shorter than `min_len` plain.
            pub fn min_len(self, min_len: usize) -> Self {
                $name(self.0.min_len(min_len))
            }
        }

        #[cfg(feature = $feature)]
        impl Default for $name {
            /// The layer with its codec's default settings.
            fn default() -> Self {
                $name(CompressionLayer::new(super::$codec::default()))
            }
        }

        #[cfg(feature = $feature)]
        impl<S> Layer<S> for $name {
            type Service = Compression<S>;

            fn layer(&self, inner: S) -> Compression<S> {
                self.0.layer(inner)
            }
        }
    };
}

named_layer!(
    /// Compresses with gzip at a level: `GzipLayer::new(6)`.
    GzipLayer, "gzip", GzipCompressor, (level: u32)
);
named_layer!(
    /// Compresses with Zstandard at a level: `ZstdLayer::new(3)`.
    ZstdLayer, "zstd", ZstdCompressor, (level: i32)
);
named_layer!(
    /// Compresses with Snappy: `SnappyLayer::new()`.
    SnappyLayer, "snappy", SnappyCompressor, ()
);
named_layer!(
    /// Compresses with LZ4: `Lz4Layer::new()`.
    Lz4Layer, "lz4", Lz4Compressor, ()
);
