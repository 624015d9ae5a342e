//! [`FramedIo`]: one connection's byte stream, with its read buffer and coalescing writer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use msg_core::wire::HEADER_LEN;
use msg_core::{Encoding, Frame, FrameCodec, FrameError, FrameKind, WriteBuf, MAX_IO_SLICES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::Decoder;

/// How much the read buffer grows by when it runs out of room, for small frames.
const READ_CHUNK: usize = 64 * 1024;
/// The most it grows by at once, for large frames.
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// Retired read buffers kept for reuse, for large frames only: at up to 1 MiB each, enough to
/// cover a subscriber's inbox (1 MiB by default) several times over, with the frames the
/// application still holds. 16 measured no faster than 8.
const POOLED_BUFFERS: usize = 8;

/// A connection's stream with its framing state.
///
/// The steps are separate so that a driver can order them: [`decode`](Self::decode) yields
/// buffered frames without I/O, [`poll_fill`](Self::poll_fill) reads once,
/// [`queue`](Self::queue) adds a frame to the write buffer and
/// [`poll_flush`](Self::poll_flush) writes everything queued, in as few writes as it can.
#[derive(Debug)]
pub(crate) struct FramedIo<Io> {
    io: Io,
    rbuf: BytesMut,
    codec: FrameCodec,
    wbuf: WriteBuf,
    eof: bool,
    /// How much to reserve when the read buffer runs out: room for several frames of the
    /// size last seen, so that large frames share allocations instead of each taking (and
    /// faulting in) fresh pages of its own.
    chunk: usize,
    /// Retired read buffers, reclaimed once the frames cut from them are gone.
    pool: VecDeque<BytesMut>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> FramedIo<Io> {
    pub(crate) fn new(io: Io, max_frame_len: usize) -> Self {
        FramedIo {
            io,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            codec: FrameCodec::with_max_frame_len(max_frame_len),
            wbuf: WriteBuf::new(max_frame_len),
            eof: false,
            chunk: READ_CHUNK,
            pool: VecDeque::new(),
        }
    }

    /// Step: the next frame already in the read buffer, if a whole one is there.
    pub(crate) fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        let frame = if self.eof {
            self.codec.decode_eof(&mut self.rbuf)?
        } else {
            self.codec.decode(&mut self.rbuf)?
        };
        if let Some(frame) = &frame {
            let len = frame.topic.len() + frame.payload.len();
            self.chunk = len.saturating_mul(8).clamp(READ_CHUNK, MAX_READ_CHUNK);
        }
        Ok(frame)
    }

    /// Step: reads once into the read buffer. `Ok(false)` means the peer closed its side.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.eof {
            return Poll::Ready(Ok(false));
        }
        self.make_room();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n == 0 {
            self.eof = true;
        }
        Poll::Ready(Ok(n > 0))
    }

    /// Makes room in the read buffer for the next read.
    ///
    /// Frames handed out share the buffer's allocation, so a buffer cannot grow in place
    /// while they live. For small frames a fresh allocation is cheap and the allocator
    /// reuses it. For large ones it is not: allocations past glibc's mmap threshold are
    /// mapped and unmapped every time, and each page faults in again. So large-frame
    /// buffers are pooled: a retired buffer waits, emptied, until every frame cut from it
    /// has been dropped, and is then reclaimed whole instead of allocating.
    fn make_room(&mut self) {
        // Room for the rest of a frame whose header has arrived, or for the next chunk.
        let missing = self.codec.missing(self.rbuf.len()).unwrap_or(0);
        let spare = self.rbuf.capacity() - self.rbuf.len();
        if spare >= missing.max(self.chunk / 8) {
            return;
        }
        let want = self.chunk.max(missing);
        if self.chunk <= READ_CHUNK && missing <= READ_CHUNK {
            self.rbuf.reserve(want);
            return;
        }
        if self.rbuf.try_reclaim(want) {
            return;
        }
        // Buffers are all made one size, with room for a chunk and a frame's start carried
        // over, so that any retired one fits the next need.
        let needed = self.rbuf.len() + want;
        let size = needed.max(want + want / 8 + HEADER_LEN);
        let reclaimed = self
            .pool
            .iter_mut()
            .position(|buf| buf.try_reclaim(needed))
            .and_then(|i| self.pool.remove(i));
        let mut next = reclaimed.unwrap_or_else(|| BytesMut::with_capacity(size));
        // The start of a frame that has not fully arrived moves across.
        next.extend_from_slice(&self.rbuf);
        let mut retired = std::mem::replace(&mut self.rbuf, next);
        retired.clear();
        if self.pool.len() == POOLED_BUFFERS {
            self.pool.pop_front();
        }
        self.pool.push_back(retired);
    }

    /// Reads until a whole frame is buffered. `None` means the peer closed cleanly between
    /// frames.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, FrameError>> {
        loop {
            if let Some(frame) = self.decode()? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Step: queues a frame. Nothing is written until [`poll_flush`](Self::poll_flush).
    pub(crate) fn queue(
        &mut self,
        kind: FrameKind,
        encoding: Encoding,
        id: u64,
        payload: &Bytes,
    ) -> Result<(), FrameError> {
        self.wbuf.push(kind, encoding, id, b"", payload)
    }

    /// Queues a frame from its parts, topic included.
    pub(crate) fn queue_parts(
        &mut self,
        kind: FrameKind,
        encoding: Encoding,
        id: u64,
        topic: &[u8],
        payload: &Bytes,
    ) -> Result<(), FrameError> {
        self.wbuf.push(kind, encoding, id, topic, payload)
    }

    /// Queues a whole frame, topic included.
    pub(crate) fn queue_frame(&mut self, frame: &Frame) -> Result<(), FrameError> {
        self.wbuf.push(
            frame.kind,
            frame.encoding,
            frame.id,
            &frame.topic,
            &frame.payload,
        )
    }

    /// Bytes queued and not yet written.
    pub(crate) fn queued_len(&self) -> usize {
        self.wbuf.len()
    }

    /// Step: writes everything queued, coalesced into vectored writes, then flushes the
    /// stream.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.wbuf.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
            let count = self.wbuf.io_slices(&mut slices);
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wbuf.advance(n);
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Closes the write side after flushing.
    pub(crate) fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_flush(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
