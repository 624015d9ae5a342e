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
        // The other headers (a request's route) stay as they came.
        let mut msg = msg;
        *msg.payload_mut() = Bytes::from(plain);
        Ok(msg.with_encoding(Encoding::IDENTITY))
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The built-in encodings compiled in; the tests over them fail rather than pass
    /// checking nothing when there are none.
    fn encodings() -> Vec<Encoding> {
        let encodings = vec![
            #[cfg(feature = "gzip")]
            Encoding::GZIP,
            #[cfg(feature = "zstd")]
            Encoding::ZSTD,
            #[cfg(feature = "snappy")]
            Encoding::SNAPPY,
            #[cfg(feature = "lz4")]
            Encoding::LZ4,
        ];
        assert!(
            !encodings.is_empty(),
            "built without any codec feature: the codec tests would check nothing"
        );
        encodings
    }

    fn compressor(encoding: Encoding) -> Box<dyn Compressor> {
        match encoding {
            #[cfg(feature = "gzip")]
            Encoding::GZIP => Box::new(crate::compression::GzipCompressor::default()),
            #[cfg(feature = "zstd")]
            Encoding::ZSTD => Box::new(crate::compression::ZstdCompressor::default()),
            #[cfg(feature = "snappy")]
            Encoding::SNAPPY => Box::new(crate::compression::SnappyCompressor::new()),
            #[cfg(feature = "lz4")]
            Encoding::LZ4 => Box::new(crate::compression::Lz4Compressor::new()),
            other => panic!("no codec for {other}"),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_payload_round_trips_through_every_codec(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for encoding in encodings() {
                let packed = compressor(encoding).compress(&data).unwrap();
                let plain = Decoders::default().decompress(encoding, &packed, data.len()).unwrap();
                prop_assert_eq!(&plain, &data, "{}", encoding);
            }
        }

        #[test]
        fn any_bytes_decode_to_a_payload_within_the_limit_or_a_typed_error(
            data in proptest::collection::vec(any::<u8>(), 0..512),
            limit in 0usize..8192,
        ) {
            for encoding in encodings() {
                match Decoders::default().decompress(encoding, &data, limit) {
                    Ok(plain) => prop_assert!(plain.len() <= limit, "{}", encoding),
                    Err(DecompressError::TooLarge { .. } | DecompressError::Corrupt { .. }) => {}
                    Err(e) => prop_assert!(false, "{}: {}", encoding, e),
                }
            }
        }

        #[test]
        fn a_payload_larger_than_the_limit_is_refused(extra in 1usize..4096) {
            let data = vec![7u8; 1024 + extra];
            for encoding in encodings() {
                let packed = compressor(encoding).compress(&data).unwrap();
                let refused = Decoders::default().decompress(encoding, &packed, 1024);
                prop_assert!(matches!(refused, Err(DecompressError::TooLarge { limit: 1024 })), "{}", encoding);
            }
        }
    }

    /// A codec of code 201 that reverses the bytes.
    struct Reverse;

    impl Compressor for Reverse {
        fn encoding(&self) -> Encoding {
            Encoding::custom(201).unwrap()
        }
        fn compress(&self, data: &[u8]) -> std::io::Result<Vec<u8>> {
            Ok(data.iter().rev().copied().collect())
        }
        fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
            if data.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            Ok(data.iter().rev().copied().collect())
        }
    }

    #[test]
    fn an_unknown_encoding_is_unsupported_until_registered() {
        let custom = Encoding::custom(201).unwrap();
        assert!(matches!(
            Decoders::default().decompress(custom, b"x", 10),
            Err(DecompressError::Unsupported { .. })
        ));
        let decoders = Decoders::default().register(Reverse);
        assert_eq!(decoders.decompress(custom, b"abc", 10).unwrap(), b"cba");
        let msg = Message::new(Bytes::from_static(b"abc")).with_encoding(custom);
        let plain = decoders.decode(msg, 10).unwrap();
        assert_eq!(plain.payload(), &b"cba"[..]);
        assert!(plain.encoding().is_identity());
        assert!(matches!(
            decoders.decompress(custom, b"abc", 2),
            Err(DecompressError::TooLarge { limit: 2 })
        ));
    }
}
