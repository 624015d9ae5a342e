//! [`Compressor`]: a codec for whole in-memory payloads, and the four built in.

use std::io;
#[cfg(any(feature = "gzip", feature = "zstd"))]
use std::io::Read;

use msg_core::Encoding;

/// Why a payload could not be decompressed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DecompressError {
    /// The payload would inflate past the receiver's limit (a decompression bomb, or just
    /// too large); it was refused after at most `limit` bytes.
    #[error("payload inflates past the {limit}-byte limit")]
    TooLarge {
        /// The receiver's limit.
        limit: usize,
    },
    /// The payload is not valid for its encoding.
    #[error("corrupt {encoding} payload: {reason}")]
    Corrupt {
        /// The payload's encoding.
        encoding: Encoding,
        /// What the codec said.
        reason: String,
    },
    /// No decoder for this encoding is registered here.
    #[error("payload encoding {encoding} is not supported here")]
    Unsupported {
        /// The payload's encoding.
        encoding: Encoding,
    },
}

/// A codec for whole payloads: what a compression layer compresses with, and what a
/// receiving socket decodes with, picked by the message's encoding header.
///
/// Implement it for a codec of your own with an [`Encoding::custom`] code (128..=255),
/// and register it on the receivers with their `with_decompressor`.
///
/// # Example
///
/// ```
/// use std::io;
/// use msg::compression::{Compressor, DecompressError};
/// use msg::Encoding;
///
/// /// Reverses the bytes: not compression, but a codec all the same.
/// struct Reverse;
///
/// impl Compressor for Reverse {
///     fn encoding(&self) -> Encoding {
///         Encoding::custom(200).unwrap()
///     }
///     fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
///         Ok(data.iter().rev().copied().collect())
///     }
///     fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
///         if data.len() > limit {
///             return Err(DecompressError::TooLarge { limit });
///         }
///         Ok(data.iter().rev().copied().collect())
///     }
/// }
///
/// let packed = Reverse.compress(b"abc").unwrap();
/// assert_eq!(Reverse.decompress(&packed, 1024).unwrap(), b"abc");
/// ```
pub trait Compressor: Send + Sync + 'static {
    /// The encoding header this codec's payloads carry.
    fn encoding(&self) -> Encoding;

    /// Compresses a whole payload.
    ///
    /// # Errors
    ///
    /// The codec's failure; the message is then sent uncompressed.
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>>;

    /// Decompresses a whole payload into at most `limit` bytes.
    ///
    /// # Errors
    ///
    /// [`DecompressError::TooLarge`] as soon as the output would pass `limit` (never
    /// allocating past it), [`DecompressError::Corrupt`] for bad input.
    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError>;
}

#[cfg(any(
    feature = "gzip",
    feature = "zstd",
    feature = "snappy",
    feature = "lz4"
))]
fn corrupt(encoding: Encoding, e: impl std::fmt::Display) -> DecompressError {
    DecompressError::Corrupt {
        encoding,
        reason: e.to_string(),
    }
}

/// Reads a streaming decoder to its end, refusing anything past `limit`.
#[cfg(any(feature = "gzip", feature = "zstd"))]
fn read_bounded(
    reader: impl Read,
    encoding: Encoding,
    limit: usize,
    hint: usize,
) -> Result<Vec<u8>, DecompressError> {
    // One byte past the limit is enough to know that the payload is too large.
    let cap = limit.saturating_add(1);
    let mut reader = reader.take(u64::try_from(cap).unwrap_or(u64::MAX));
    let mut out = vec![0u8; hint.clamp(1, cap)];
    let mut len = 0;
    loop {
        if len == out.len() {
            if len == cap {
                break;
            }
            // Doubling as `read_to_end` does, but never past the cap: its doubling from
            // just under the limit reserved up to twice it.
            let want = len.saturating_mul(2).min(cap);
            out.reserve_exact(want - len);
            out.resize(want, 0);
        }
        match reader.read(&mut out[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(corrupt(encoding, e)),
        }
    }
    if len > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    out.truncate(len);
    Ok(out)
}

/// gzip (DEFLATE with the gzip header), through flate2 on zlib-rs: pure Rust, and as fast as
/// zlib-ng. The most widely understood codec; level 1-9, 6 by default.
#[cfg(feature = "gzip")]
#[derive(Debug, Clone, Copy)]
pub struct GzipCompressor {
    level: u32,
}

#[cfg(feature = "gzip")]
impl GzipCompressor {
    /// gzip at `level`, 0 (store) to 9 (smallest); values above 9 are taken as 9.
    pub fn new(level: u32) -> Self {
        GzipCompressor {
            level: level.min(9),
        }
    }
}

#[cfg(feature = "gzip")]
impl Default for GzipCompressor {
    fn default() -> Self {
        GzipCompressor::new(6)
    }
}

#[cfg(feature = "gzip")]
impl Compressor for GzipCompressor {
    fn encoding(&self) -> Encoding {
        Encoding::GZIP
    }

    /// One gzip member: the fixed 10-byte header, raw DEFLATE, then CRC-32 and length.
    ///
    /// The DEFLATE state (a few hundred KiB of tables) is kept per thread and reset between
    /// messages: made afresh for each one, zeroing and copying it cost 45% of the cycles and
    /// nine tenths of the throughput at 1 KiB.
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        use std::cell::RefCell;
        thread_local! {
            static DEFLATE: RefCell<Option<(u32, flate2::Compress)>> = const { RefCell::new(None) };
        }
        const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        out.extend_from_slice(&HEADER);
        DEFLATE.with_borrow_mut(|cached| {
            let deflate = match cached {
                Some((level, deflate)) if *level == self.level => {
                    deflate.reset();
                    deflate
                }
                _ => {
                    let deflate =
                        flate2::Compress::new(flate2::Compression::new(self.level), false);
                    &mut cached.insert((self.level, deflate)).1
                }
            };
            let start_in = deflate.total_in();
            loop {
                let consumed = (deflate.total_in() - start_in) as usize;
                if out.capacity() - out.len() < 64 {
                    out.reserve(out.capacity().max(1024));
                }
                let status = deflate
                    .compress_vec(&data[consumed..], &mut out, flate2::FlushCompress::Finish)
                    .map_err(io::Error::other)?;
                if status == flate2::Status::StreamEnd {
                    return Ok::<_, io::Error>(());
                }
            }
        })?;
        let mut crc = flate2::Crc::new();
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32, as the format says.
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        Ok(out)
    }

    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        read_bounded(
            flate2::bufread::GzDecoder::new(data),
            Encoding::GZIP,
            limit,
            data.len().saturating_mul(4),
        )
    }
}

/// Zstandard, through the reference C library: the best ratio for its speed; level 1-22,
/// 3 by default.
#[cfg(feature = "zstd")]
#[derive(Debug, Clone, Copy)]
pub struct ZstdCompressor {
    level: i32,
}

#[cfg(feature = "zstd")]
impl ZstdCompressor {
    /// Zstandard at `level` (1 fastest to 22 smallest; negative levels are faster still).
    pub fn new(level: i32) -> Self {
        ZstdCompressor { level }
    }
}

#[cfg(feature = "zstd")]
impl Default for ZstdCompressor {
    fn default() -> Self {
        ZstdCompressor::new(3)
    }
}

#[cfg(feature = "zstd")]
impl Compressor for ZstdCompressor {
    fn encoding(&self) -> Encoding {
        Encoding::ZSTD
    }

    /// The compression context is kept per thread: made afresh for each message, it was
    /// half of the 16 µs a 32-byte message took to compress and decompress.
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        use std::cell::RefCell;
        thread_local! {
            static CONTEXT: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
                const { RefCell::new(None) };
        }
        CONTEXT.with_borrow_mut(|cached| {
            let compressor = match cached {
                Some((level, compressor)) if *level == self.level => compressor,
                _ => {
                    &mut cached
                        .insert((self.level, zstd::bulk::Compressor::new(self.level)?))
                        .1
                }
            };
            compressor.compress(data)
        })
    }

    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        let decoder =
            zstd::stream::read::Decoder::new(data).map_err(|e| corrupt(Encoding::ZSTD, e))?;
        read_bounded(decoder, Encoding::ZSTD, limit, data.len().saturating_mul(4))
    }
}

/// Snappy (raw format), through snap: pure Rust, very fast, a modest ratio.
#[cfg(feature = "snappy")]
#[derive(Debug, Clone, Copy, Default)]
pub struct SnappyCompressor {
    _private: (),
}

#[cfg(feature = "snappy")]
impl SnappyCompressor {
    /// Snappy; it has no levels.
    pub fn new() -> Self {
        SnappyCompressor::default()
    }
}

#[cfg(feature = "snappy")]
impl Compressor for SnappyCompressor {
    fn encoding(&self) -> Encoding {
        Encoding::SNAPPY
    }

    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        snap::raw::Encoder::new()
            .compress_vec(data)
            .map_err(io::Error::other)
    }

    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        // The raw format states its length first: checked before anything is allocated.
        let len = snap::raw::decompress_len(data).map_err(|e| corrupt(Encoding::SNAPPY, e))?;
        if len > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        snap::raw::Decoder::new()
            .decompress_vec(data)
            .map_err(|e| corrupt(Encoding::SNAPPY, e))
    }
}

/// LZ4 (block format, length first), through lz4_flex: pure Rust, the fastest to decode.
#[cfg(feature = "lz4")]
#[derive(Debug, Clone, Copy, Default)]
pub struct Lz4Compressor {
    _private: (),
}

#[cfg(feature = "lz4")]
impl Lz4Compressor {
    /// LZ4; it has no levels.
    pub fn new() -> Self {
        Lz4Compressor::default()
    }
}

#[cfg(feature = "lz4")]
impl Compressor for Lz4Compressor {
    fn encoding(&self) -> Encoding {
        Encoding::LZ4
    }

    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        Ok(lz4_flex::block::compress_prepend_size(data))
    }

    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        // The stated length is checked before lz4_flex allocates it.
        let Some((head, rest)) = data.split_first_chunk::<4>() else {
            return Err(corrupt(Encoding::LZ4, "shorter than its length prefix"));
        };
        let len = usize::try_from(u32::from_le_bytes(*head)).unwrap_or(usize::MAX);
        if len > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        let mut out = vec![0u8; len];
        let n = lz4_flex::block::decompress_into(rest, &mut out)
            .map_err(|e| corrupt(Encoding::LZ4, e))?;
        out.truncate(n);
        Ok(out)
    }
}
