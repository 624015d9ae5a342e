//! [`FramedIo`]: one connection's byte stream, with its read buffer and coalescing writer.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use msg_core::wire::HEADER_LEN;
use msg_core::{
    Beat, Encoding, Frame, FrameCodec, FrameError, FrameKind, Heartbeat, HeartbeatConfig, Message,
    WriteBuf, MAX_IO_SLICES,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;
use tokio_util::codec::Decoder;

use crate::Error;

/// How much the read buffer grows by when it runs out of room, for small frames.
const READ_CHUNK: usize = 64 * 1024;
/// The most it grows by at once, for large frames.
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// Retired read buffers kept for reuse, for large frames only: at up to 1 MiB each, enough to
/// cover a subscriber's inbox (1 MiB by default) several times over, with the frames the
/// application still holds. 16 measured no faster than 8.
const POOLED_BUFFERS: usize = 8;

/// A received frame's payload and encoding as a [`Message`]: the one Frame-to-Message
/// conversion.
#[inline]
pub(crate) fn into_message(frame: Frame) -> Message {
    Message::new(frame.payload).with_encoding(frame.encoding)
}

/// Heartbeat settings as the socket options give them: `None` turns heartbeats off.
pub(crate) fn heartbeat_config(interval: Duration, timeout: Duration) -> Option<HeartbeatConfig> {
    (!interval.is_zero()).then(|| HeartbeatConfig::new(interval, timeout))
}

/// A connection's heartbeat: the sans-IO state and its one timer.
#[derive(Debug)]
struct Liveness {
    heartbeat: Heartbeat,
    timer: Pin<Box<Sleep>>,
    /// What the timer wakes: it notes that the timer fired, then wakes the driver.
    alarm: Arc<Alarm>,
    alarm_waker: Waker,
    /// The driver's waker the alarm holds.
    registered: Option<Waker>,
    /// Bytes arrived since the last tick.
    heard: bool,
}

/// The timer's waker: a flag the driver reads instead of the clock, and the driver's waker.
#[derive(Debug, Default)]
struct Alarm {
    fired: AtomicBool,
    driver: AtomicWaker,
}

impl Wake for Alarm {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.driver.wake();
    }
}

/// A connection's stream with its framing state: the one frame connection under every
/// socket's driver.
///
/// The steps are separate so that a driver can order them: [`poll_read`](Self::poll_read)
/// yields the next frame for the driver, answering pings on the way;
/// [`poll_liveness`](Self::poll_liveness) runs the heartbeat; [`queue`](Self::queue) adds a
/// frame to the write buffer and [`poll_flush`](Self::poll_flush) writes everything queued,
/// in as few writes as it can.
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
    /// The heartbeat, once the handshake is done and if the socket wants one.
    liveness: Option<Liveness>,
    /// Bytes read and written, registered once per connection: a handle costs nothing to
    /// bump, where naming the counter with its labels on each call allocated.
    received: metrics::Counter,
    sent: metrics::Counter,
    /// The listener's connection slot this connection holds while it lives.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
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
            liveness: None,
            received: metrics::Counter::noop(),
            sent: metrics::Counter::noop(),
            _slot: None,
        }
    }

    /// Holds `slot` of the listener's connection limit until the connection is dropped.
    pub(crate) fn hold(&mut self, slot: tokio::sync::OwnedSemaphorePermit) {
        self._slot = Some(slot);
    }

    /// Counts bytes in the socket's byte counters (`msg_bytes_received_total`,
    /// `msg_bytes_sent_total`), registered once per socket.
    pub(crate) fn set_counters(&mut self, (received, sent): (metrics::Counter, metrics::Counter)) {
        self.received = received;
        self.sent = sent;
    }

    /// Starts the heartbeat (after the handshake); `None` leaves it off.
    pub(crate) fn start_heartbeat(&mut self, config: Option<HeartbeatConfig>) {
        self.liveness = config.map(|config| {
            let heartbeat = Heartbeat::new(config, Instant::now());
            let deadline = tokio::time::Instant::from_std(heartbeat.deadline());
            let alarm = Arc::new(Alarm::default());
            // Set, so that the first step arms the timer.
            alarm.fired.store(true, Ordering::Relaxed);
            Liveness {
                heartbeat,
                timer: Box::pin(tokio::time::sleep_until(deadline)),
                alarm_waker: Waker::from(alarm.clone()),
                alarm,
                registered: None,
                heard: false,
            }
        });
    }

    /// Step: the next frame for the driver. Pings are answered (the pong is queued for the
    /// driver's next flush) and pongs absorbed on the way; any bytes that arrive count as a
    /// sign of life. `Ok(None)` means the peer closed cleanly between frames.
    #[inline]
    pub(crate) fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Frame>, FrameError>> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.eof {
                return Poll::Ready(Ok(None));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Step: the next frame for the driver that is already in the read buffer, without
    /// I/O; pings and pongs are handled on the way, as in [`poll_read`](Self::poll_read).
    ///
    /// Errors stay [`FrameError`]s here, converted by the driver only when one happens: the
    /// smaller result keeps the per-frame path free of copies. Always inlined: out of line,
    /// returning the frame through the stack cost 4.6% of the cycles at 1 KiB.
    #[inline(always)]
    pub(crate) fn buffered(&mut self) -> Result<Option<Frame>, FrameError> {
        while let Some(frame) = self.decode()? {
            match frame.kind {
                FrameKind::Ping => {
                    self.wbuf
                        .push(FrameKind::Pong, Encoding::IDENTITY, 0, b"", &Bytes::new())?;
                }
                FrameKind::Pong => {}
                _ => return Ok(Some(frame)),
            }
        }
        Ok(None)
    }

    /// Whether the peer has closed its side.
    pub(crate) fn at_eof(&self) -> bool {
        self.eof
    }

    /// Step: runs the heartbeat when its timer is due: queues a ping after an idle interval,
    /// and fails with [`Error::HeartbeatTimeout`] once the peer has been silent for the
    /// timeout. `paused` says the driver stopped reading on purpose (its own
    /// back-pressure), which is not the peer's silence.
    pub(crate) fn poll_liveness(
        &mut self,
        cx: &mut Context<'_>,
        paused: bool,
    ) -> Result<(), Error> {
        let Some(liveness) = self.liveness.as_mut() else {
            return Ok(());
        };
        // The data path reads no clock and polls no timer (polling a tokio `Sleep` spends
        // the task's cooperative budget, and a driver made to yield is handed to another
        // worker): the timer is polled only once its alarm went off.
        let changed = !liveness
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if changed {
            liveness.alarm.driver.register(cx.waker());
            liveness.registered = Some(cx.waker().clone());
        }
        if !liveness.alarm.fired.swap(false, Ordering::Acquire) {
            return Ok(());
        }
        if !changed {
            // Waking the driver took its waker out of the alarm.
            liveness.alarm.driver.register(cx.waker());
        }
        let mut alarm_cx = Context::from_waker(&liveness.alarm_waker);
        while liveness.timer.as_mut().poll(&mut alarm_cx).is_ready() {
            let heard = std::mem::take(&mut liveness.heard);
            match liveness.heartbeat.tick(Instant::now(), heard, paused) {
                Beat::Quiet => {}
                Beat::Ping => {
                    self.wbuf
                        .push(FrameKind::Ping, Encoding::IDENTITY, 0, b"", &Bytes::new())?;
                }
                Beat::Dead => {
                    return Err(Error::HeartbeatTimeout {
                        after: liveness.heartbeat.config().timeout,
                    })
                }
            }
            let deadline = tokio::time::Instant::from_std(liveness.heartbeat.deadline());
            liveness.timer.as_mut().reset(deadline);
        }
        Ok(())
    }

    /// Step: the next frame already in the read buffer, if a whole one is there.
    #[inline(always)]
    pub(crate) fn decode(&mut self) -> Result<Option<Frame>, FrameError> {
        let frame = if self.eof {
            self.codec.decode_eof(&mut self.rbuf)
        } else {
            self.codec.decode(&mut self.rbuf)
        }
        .map_err(crate::limits::frame_error)?;
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
        } else {
            // One count per read, not per frame: the data path pays a few nanoseconds per
            // system call.
            self.received.increment(n as u64);
            if let Some(liveness) = self.liveness.as_mut() {
                liveness.heard = true;
            }
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

    /// Reads until a whole frame is buffered, whatever its kind (for the handshake). `None`
    /// means the peer closed cleanly between frames.
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

    /// Queues `msg` as a frame of `kind`: the one Message-to-Frame conversion.
    pub(crate) fn queue_message(
        &mut self,
        kind: FrameKind,
        id: u64,
        msg: &Message,
    ) -> Result<(), FrameError> {
        self.wbuf.push(kind, msg.encoding(), id, b"", msg.payload())
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
            self.sent.increment(n as u64);
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
