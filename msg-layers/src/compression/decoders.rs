//! [`Decoders`]: what a receiving socket decodes payloads with.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use msg_core::{Encoding, Message};

use super::codec::{Compressor, DecompressError};

/// The codecs a receiver decodes with, by encoding header: the four built in (those whose
/// cargo features are on) and any custom ones registered. Cheap to clone.
#[derive(Clone, Default)]
pub struct Decoders {
    custom: Arc<Vec<Arc<dyn Compressor>>>,
}

impl fmt::Debug for Decoders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.custom.iter().map(|c| c.encoding()))
            .finish()
    }
}

impl Decoders {
    /// Registers `codec` for its encoding, in place of any codec registered for it before
    /// (a built-in one included).
    pub fn register(mut self, codec: impl Compressor) -> Self {
        let encoding = codec.encoding();
        let custom = Arc::make_mut(&mut self.custom);
        custom.retain(|c| c.encoding() != encoding);
        custom.push(Arc::new(codec));
        self
    }

    /// Decodes `msg` by its encoding header into at most `limit` bytes; an identity
    /// message passes as it is.
    ///
    /// # Errors
    ///
    /// [`DecompressError::Unsupported`] for an encoding with no codec here,
    /// [`DecompressError::TooLarge`] past `limit`, [`DecompressError::Corrupt`] for bad
    /// input.
    pub fn decode(&self, msg: Message, limit: usize) -> Result<Message, DecompressError> {
        let encoding = msg.encoding();
        if encoding.is_identity() {
            return Ok(msg);
        }
        let plain = self.decompress(encoding, msg.payload(), limit)?;
        Ok(Message::new(Bytes::from(plain)))
    }

    /// Decompresses a payload of `encoding`.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode).
    pub fn decompress(
        &self,
        encoding: Encoding,
        data: &[u8],
        limit: usize,
    ) -> Result<Vec<u8>, DecompressError> {
        if let Some(codec) = self.custom.iter().find(|c| c.encoding() == encoding) {
            return codec.decompress(data, limit);
        }
        match encoding {
            #[cfg(feature = "gzip")]
            Encoding::GZIP => super::GzipCompressor::default().decompress(data, limit),
            #[cfg(feature = "zstd")]
            Encoding::ZSTD => super::ZstdCompressor::default().decompress(data, limit),
            #[cfg(feature = "snappy")]
            Encoding::SNAPPY => super::SnappyCompressor::new().decompress(data, limit),
            #[cfg(feature = "lz4")]
            Encoding::LZ4 => super::Lz4Compressor::new().decompress(data, limit),
            encoding => Err(DecompressError::Unsupported { encoding }),
        }
    }
}
