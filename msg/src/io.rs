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

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use msg_core::proto::Link;
use msg_core::wire::HEADER_LEN;
use msg_core::{Frame, FrameError, HeartbeatConfig, MAX_IO_SLICES};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

use crate::Error;

/// How much the read buffer takes at first, and again once the connection goes idle: a
/// handshake, and the pings of an idle connection, need no more.
/// Reads of a closing connection's leftover input per poll (of 4 KiB each), before the
/// driver lets other tasks run.
const DISCARD_READS: usize = 16;

const MIN_READ_CHUNK: usize = 512;

/// How much the read buffer grows by when it runs out of room, for small frames, once
/// reads come full.
const READ_CHUNK: usize = 64 * 1024;
/// The most it grows by at once, for large frames.
const MAX_READ_CHUNK: usize = 1024 * 1024;
/// Retired read buffers kept for reuse, for large frames only: at up to 1 MiB each, enough to
/// cover a subscriber's inbox (1 MiB by default) several times over, with the frames the
/// application still holds. 16 measured no faster than 8.
const POOLED_BUFFERS: usize = 8;
/// The slices a write takes when it needs only a few.
const FEW_SLICES: usize = 4;

/// Heartbeat settings as the socket options give them: `None` turns heartbeats off.
pub(crate) fn heartbeat_config(interval: Duration, timeout: Duration) -> Option<HeartbeatConfig> {
    (!interval.is_zero()).then(|| HeartbeatConfig::new(interval, timeout))
}

/// A connection's one timer: armed at the link's next timeout, polled only once it fired.
#[derive(Debug)]
struct Timer {
    sleep: Pin<Box<Sleep>>,
    /// What the timer wakes: it notes that the timer fired, then wakes the driver.
    alarm: Arc<Alarm>,
    alarm_waker: Waker,
    /// The driver's waker the alarm holds.
    registered: Option<Waker>,
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

/// A connection's stream under its [`Link`]: the I/O half of the one driver every socket
/// runs. It owns what a sans-IO link cannot: the read buffer, the stream, and the one
/// timer; the protocol (framing, pings, the heartbeat's rules) is the link's, and each
/// socket's role (`msg_core::proto`) sits on top.
///
/// The steps are separate so that a driver can order them: [`buffered`](Self::buffered)
/// yields the next frame already read and [`poll_fill`](Self::poll_fill) reads more;
/// [`poll_liveness`](Self::poll_liveness) runs the heartbeat when its timer fires;
/// [`link`](Self::link) queues frames and [`poll_flush`](Self::poll_flush) writes
/// everything queued, in as few writes as it can.
#[derive(Debug)]
pub(crate) struct FramedIo<Io> {
    io: Io,
    rbuf: BytesMut,
    /// The connection's framing, write buffer and heartbeat.
    pub(crate) link: Link,
    /// How much to reserve when the read buffer runs out: room for several frames of the
    /// size last seen, so that large frames share allocations instead of each taking (and
    /// faulting in) fresh pages of its own.
    chunk: usize,
    /// Retired read buffers, reclaimed once the frames cut from them are gone.
    pool: VecDeque<BytesMut>,
    /// The heartbeat's timer, once the handshake is done and if the socket wants one.
    timer: Option<Timer>,
    /// Bytes read and written, registered once per connection: a handle costs nothing to
    /// bump, where naming the counter with its labels on each call allocated.
    received: metrics::Counter,
    sent: metrics::Counter,
    /// The listener's connection slot this connection holds while it lives.
    _slot: Option<tokio::sync::OwnedSemaphorePermit>,
    /// Tells a dialing socket's supervisor, by its drop, that the connection is gone.
    _tied: Option<tokio_util::sync::DropGuard>,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> FramedIo<Io> {
    pub(crate) fn new(io: Io, max_frame_len: usize) -> Self {
        FramedIo {
            io,
            rbuf: BytesMut::new(),
            link: Link::new(max_frame_len),
            chunk: MIN_READ_CHUNK,
            pool: VecDeque::new(),
            timer: None,
            received: metrics::Counter::noop(),
            sent: metrics::Counter::noop(),
            _slot: None,
            _tied: None,
        }
    }

    /// Holds `guard` until the connection is dropped, whichever task serves it then.
    pub(crate) fn tie(&mut self, guard: tokio_util::sync::DropGuard) {
        self._tied = Some(guard);
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
        self.link.start_heartbeat(config, Instant::now());
        self.timer = self.link.poll_timeout().map(|deadline| {
            let alarm = Arc::new(Alarm::default());
            // Set, so that the first step arms the timer.
            alarm.fired.store(true, Ordering::Relaxed);
            Timer {
                sleep: Box::pin(tokio::time::sleep_until(tokio::time::Instant::from_std(
                    deadline,
                ))),
                alarm_waker: Waker::from(alarm.clone()),
                alarm,
                registered: None,
            }
        });
    }

    /// Step: the next frame for the role that is already in the read buffer, without I/O;
    /// pings and pongs are handled on the way by the link.
    ///
    /// Errors stay [`FrameError`]s here, converted by the driver only when one happens: the
    /// smaller result keeps the per-frame path free of copies. Always inlined: out of line,
    /// returning the frame through the stack cost 4.6% of the cycles at 1 KiB.
    #[inline(always)]
    pub(crate) fn buffered(&mut self) -> Result<Option<Frame>, FrameError> {
        let frame = self
            .link
            .decode(&mut self.rbuf)
            .map_err(crate::limits::frame_error)?;
        if let Some(frame) = &frame {
            let len = frame.topic.len() + frame.payload.len();
            if len > self.chunk / 8 {
                self.chunk = len.saturating_mul(8).min(MAX_READ_CHUNK);
            }
        }
        Ok(frame)
    }

    /// The bytes read and not yet decoded: for a handshake that could not read the peer's
    /// first frame, to tell what the peer speaks instead.
    pub(crate) fn read_buffer(&self) -> &[u8] {
        &self.rbuf
    }

    /// Whether the peer has closed its side.
    pub(crate) fn at_eof(&self) -> bool {
        self.link.at_eof()
    }

    /// Step: runs the heartbeat when its timer is due: the link queues a ping after an idle
    /// interval, and the connection fails with [`Error::HeartbeatTimeout`] once the peer has
    /// been silent for the timeout. `paused` says the driver stopped reading on purpose
    /// (its own back-pressure), which is not the peer's silence.
    pub(crate) fn poll_liveness(
        &mut self,
        cx: &mut Context<'_>,
        paused: bool,
    ) -> Result<(), Error> {
        let Some(timer) = self.timer.as_mut() else {
            return Ok(());
        };
        // The data path reads no clock and polls no timer (polling a tokio `Sleep` spends
        // the task's cooperative budget, and a driver made to yield is handed to another
        // worker): the timer is polled only once its alarm went off.
        let changed = !timer
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()));
        if changed {
            timer.alarm.driver.register(cx.waker());
            timer.registered = Some(cx.waker().clone());
        }
        if !timer.alarm.fired.swap(false, Ordering::Acquire) {
            return Ok(());
        }
        if !changed {
            // Waking the driver took its waker out of the alarm.
            timer.alarm.driver.register(cx.waker());
        }
        let mut alarm_cx = Context::from_waker(&timer.alarm_waker);
        while timer.sleep.as_mut().poll(&mut alarm_cx).is_ready() {
            if !self.link.heard_since_tick() && self.rbuf.is_empty() {
                // Idle for an interval: the buffers sized for traffic go back.
                self.rbuf = BytesMut::new();
                self.pool.clear();
                self.chunk = MIN_READ_CHUNK;
                self.link.shrink();
            }
            if let Err(silent) = self.link.handle_timeout(Instant::now(), paused) {
                return Err(Error::HeartbeatTimeout {
                    after: silent.after,
                });
            }
            let Some(deadline) = self.link.poll_timeout() else {
                break;
            };
            timer
                .sleep
                .as_mut()
                .reset(tokio::time::Instant::from_std(deadline));
        }
        Ok(())
    }

    /// Step: reads once into the read buffer. `Ok(false)` means the peer closed its side.
    pub(crate) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        if self.link.at_eof() {
            return Poll::Ready(Ok(false));
        }
        self.make_room();
        let spare = self.rbuf.capacity() - self.rbuf.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.rbuf
        ))?;
        if n == spare && self.chunk < READ_CHUNK {
            // A full read: more is coming than the buffer takes. Grow.
            self.chunk = (self.chunk * 4).min(READ_CHUNK);
        }
        if n == 0 {
            self.link.set_eof();
        } else {
            // One count per read, not per frame: the data path pays a few nanoseconds per
            // system call.
            self.received.increment(n as u64);
            self.link.heard();
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
        let missing = self.link.missing(self.rbuf.len()).unwrap_or(0);
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
            if let Some(frame) = self
                .link
                .decode_any(&mut self.rbuf)
                .map_err(crate::limits::frame_error)?
            {
                return Poll::Ready(Ok(Some(frame)));
            }
            if self.link.at_eof() {
                return Poll::Ready(Ok(None));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        poll_fn(|cx| self.poll_frame(cx)).await
    }

    /// Bytes queued and not yet written.
    #[inline]
    pub(crate) fn queued_len(&self) -> usize {
        self.link.queued_len()
    }

    /// Step: writes everything queued, coalesced into vectored writes, then flushes the
    /// stream.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.link.queued_len() > 0 {
            // Most writes are of a few slices (small frames coalesce into one): an array
            // of them is cheaper to set up than one of the most a write takes.
            let written = if self.link.slice_count() <= FEW_SLICES {
                let mut slices = [IoSlice::new(&[]); FEW_SLICES];
                let count = self.link.io_slices(&mut slices);
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IO_SLICES];
                let count = self.link.io_slices(&mut slices);
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            };
            let n = ready!(written)?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent.increment(n as u64);
            self.link.advance(n);
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

    /// Reads and throws away what the peer still sends, until it closes its side: ready at
    /// the peer's end of stream (or a read error), pending while it is silent. Reads at most
    /// [`DISCARD_READS`] times per call, and asks to be polled again if it had to stop.
    pub(crate) fn poll_discard(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.link.at_eof() {
            return Poll::Ready(());
        }
        let mut scratch = [0u8; 4096];
        for _ in 0..DISCARD_READS {
            let mut buf = tokio::io::ReadBuf::new(&mut scratch);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if buf.filled().is_empty() => return Poll::Ready(()),
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
