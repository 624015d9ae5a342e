//! Stream compression: [`StreamCompressionLayer`], a transport layer that compresses a whole
//! connection's byte stream with zstd, in both directions.
//!
//! Per-message compression gains little on small messages: each is too short to hold much
//! redundancy, and carries the codec's own header. A stream compressor sees every message
//! that went before on the connection, so a link of many small, similar messages (prices,
//! telemetry, the same JSON keys again and again) shrinks many times over. The price is a
//! flush of the compressor at every write batch, and the CPU of compressing everything;
//! both sides of a link must use the layer.
//!
//! # Example
//!
//! ```
//! use msg_transports::compress::StreamCompressionLayer;
//! use msg_transports::Tcp;
//! use tower::ServiceBuilder;
//!
//! // One value for the client and the server sockets alike.
//! let transport = ServiceBuilder::new()
//!     .layer(StreamCompressionLayer::new(3))
//!     .service(Tcp::default());
//! ```

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use async_compression::tokio::bufread::ZstdDecoder;
use async_compression::tokio::write::ZstdEncoder;
use async_compression::Level;
use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf, ReadHalf, WriteHalf};
use tower::Layer;

use crate::transport::{Connected, Listener, Traffic, Transport, TransportError};

/// Compresses every connection of the transport it wraps with zstd at a level; see the
/// [module](self) docs.
#[derive(Debug, Clone, Copy)]
pub struct StreamCompressionLayer {
    level: i32,
}

impl StreamCompressionLayer {
    /// zstd at `level` (1 fastest to 22 smallest; 3 is a good default for live links).
    pub const fn new(level: i32) -> Self {
        StreamCompressionLayer { level }
    }
}

impl Default for StreamCompressionLayer {
    fn default() -> Self {
        StreamCompressionLayer::new(3)
    }
}

impl<T> Layer<T> for StreamCompressionLayer {
    type Service = StreamCompression<T>;

    fn layer(&self, inner: T) -> StreamCompression<T> {
        StreamCompression {
            inner,
            level: self.level,
        }
    }
}

/// A transport whose connections carry a zstd stream; made by [`StreamCompressionLayer`].
#[derive(Debug, Clone)]
pub struct StreamCompression<T> {
    inner: T,
    level: i32,
}

impl<T: Transport> StreamCompression<T> {
    fn wrap(&self, conn: Connected<T::Io, T::Addr>) -> Connected<Compressed<T::Io>, T::Addr> {
        let (read, write) = tokio::io::split(conn.io);
        Connected {
            io: Compressed {
                read: ZstdDecoder::new(BufReader::new(read)),
                write: ZstdEncoder::with_quality(write, Level::Precise(self.level)),
            },
            peer: conn.peer,
        }
    }
}

impl<T: Transport> Transport for StreamCompression<T> {
    type Target = T::Target;
    type Addr = T::Addr;
    type Io = Compressed<T::Io>;
    type Listener = T::Listener;

    async fn bind(&self, target: T::Target) -> Result<T::Listener, TransportError> {
        self.inner.bind(target).await
    }

    async fn connect(
        &self,
        target: T::Target,
    ) -> Result<Connected<Compressed<T::Io>, T::Addr>, TransportError> {
        let conn = self.inner.connect(target).await?;
        Ok(self.wrap(conn))
    }

    async fn accept(
        &self,
        conn: Connected<<T::Listener as Listener>::Conn, T::Addr>,
    ) -> Result<Connected<Compressed<T::Io>, T::Addr>, TransportError> {
        let conn = self.inner.accept(conn).await?;
        Ok(self.wrap(conn))
    }

    fn set_traffic(&mut self, traffic: Traffic) {
        self.inner.set_traffic(traffic);
    }
}

/// A connection's byte stream, zstd-compressed on the wire: what [`StreamCompression`]
/// connections carry. A flush ends a zstd block, so that what was written reaches the peer.
pub struct Compressed<Io> {
    read: ZstdDecoder<BufReader<ReadHalf<Io>>>,
    write: ZstdEncoder<WriteHalf<Io>>,
}

impl<Io> std::fmt::Debug for Compressed<Io> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressed").finish_non_exhaustive()
    }
}

impl<Io: AsyncRead + AsyncWrite> AsyncRead for Compressed<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl<Io: AsyncRead + AsyncWrite> AsyncWrite for Compressed<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.write).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.write).poll_shutdown(cx)
    }
}
