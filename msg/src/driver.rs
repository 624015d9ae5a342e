//! [`Driver`]: the one connection loop under every socket.
//!
//! A connection is a [`FramedIo`] (the stream, the read buffer, the one timer, over a
//! sans-IO `msg_core::proto::Link`) and an [`Endpoint`]: the socket's role on that
//! connection (`msg_core::proto`'s requester, replier, publisher or subscriber) with the
//! socket's hand-off queue on its other side. The driver owns everything the four sockets
//! share, in one place:
//!
//! - the order of the steps in a pass: take what the socket handed over, run the heartbeat,
//!   write, read and hand over what was read, write again;
//! - the pass budget: at most [`MAX_PASSES`] passes per wake-up before other tasks run;
//! - **one write high-water** for every role (`proto::WRITE_HIGH_WATER`): nothing more is
//!   taken from the socket while that much waits for the peer, and a flush that drains it
//!   leads to another pass;
//! - the read-pause rule: reading stops while the endpoint holds what it could not hand
//!   over (its socket's own back-pressure), which the heartbeat does not count as the
//!   peer's silence;
//! - the end: a graceful end flushes and closes the write side, polled to completion, then
//!   reads and throws away what the peer still sends until it closes its side too (for at
//!   most [`LINGER_READ`]), so that what this side wrote last is not lost: a socket closed
//!   with unread input makes the kernel answer with a reset, and a reset can discard the
//!   peer's unread data, a go-away or a refusal among it. Any other end fails what was in
//!   flight, through the endpoint.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use msg_core::proto::Link;
use msg_core::{Frame, FrameError};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::dial::End;
use crate::io::FramedIo;
use crate::limits::Hits;
use crate::Error;

/// Passes through a connection's work in one wake-up before the driver lets other tasks
/// run.
pub(crate) const MAX_PASSES: usize = 32;

/// How long a gracefully closed connection waits for its peer to close its side, reading
/// and discarding what comes meanwhile. A msg peer closes as soon as it reads the end of
/// the stream, so this bound is for peers that do not.
pub(crate) const LINGER_READ: std::time::Duration = std::time::Duration::from_secs(2);

/// How an endpoint wants its connection to end.
pub(crate) enum Ending {
    /// Write what is queued, close the write side, then end with [`End::Closed`].
    Graceful,
    /// End now, with this.
    Now(End),
}

/// A socket's side of one connection: its protocol role, and the socket's hand-off queue
/// it moves work from and delivers to. The [`Driver`] calls these steps in a fixed order.
pub(crate) trait Endpoint {
    /// Step: moves what the socket handed over (requests, replies of finished calls,
    /// publications, subscription changes) into `link`, through the role. Called only
    /// while the link is under its write high-water. Returns whether it moved anything.
    fn send(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error>;

    /// Whether to put this pass's write off once and come back after the tasks queued to
    /// run: for work about to be handed over. `took` is what [`send`](Self::send) said.
    fn defer(&mut self, took: bool) -> bool {
        let _ = took;
        false
    }

    /// Whether the connection is to end now.
    fn poll_end(&mut self, link: &Link, cx: &mut Context<'_>) -> Option<Ending>;

    /// A frame for the role (pings and pongs never reach it).
    fn receive(&mut self, frame: Frame, link: &mut Link, cx: &mut Context<'_>)
        -> Result<(), Error>;

    /// A frame over the limit of a kind the link was told to skip (see
    /// `Link::skip_oversized`): frame `id`, of `len` bytes against the limit `max`, its
    /// body being passed over if `skipped`. The role answers it if it can. One not skipped
    /// is still in the read buffer: an endpoint that returns `Ok` for it must pause reading
    /// for good ([`read_paused`](Self::read_paused)). By default the connection ends, as
    /// for any frame over the limit.
    fn oversized(
        &mut self,
        id: u64,
        len: u64,
        max: usize,
        skipped: bool,
        link: &mut Link,
    ) -> Result<(), Error> {
        let _ = (id, skipped, link);
        Err(Error::Protocol(FrameError::TooLarge { len, max }))
    }

    /// Step: hands what was received to the socket. `Pending` holds it (the socket is
    /// full, and `cx` is woken when it has room); reading pauses meanwhile.
    fn poll_deliver(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;

    /// Whether reading is paused: the endpoint holds what it cannot hand over yet, or what
    /// it would owe the peer is over the write high-water.
    fn read_paused(&self, link: &Link) -> bool;

    /// Whether the endpoint holds received work its socket has no room for: its own
    /// back-pressure, which the heartbeat does not count as the peer's silence.
    fn holding(&self) -> bool {
        false
    }

    /// Whether the pass that just ended left work for another one at once.
    fn again(&mut self) -> bool {
        false
    }

    /// The connection ends with `end`: what was in flight on it fails, and what was
    /// received and not handed over goes where it can.
    fn finish(&mut self, end: &End, cx: &mut Context<'_>);
}

/// Drives one connection of any socket: see the [module docs](self).
pub(crate) struct Driver<Io, E> {
    io: FramedIo<Io>,
    endpoint: E,
    /// A pass's write was put off once (see [`Endpoint::defer`]).
    deferred: bool,
    /// Ending gracefully: the write side is being closed.
    closing: bool,
    /// The write side is closed: the peer has until this fires to close its side.
    lingering: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Set once the driver has ended.
    ended: bool,
    /// The `queued_bytes` limit's counter, hit on every pass over the write high-water.
    over_high_water: Hits,
}

impl<Io: AsyncRead + AsyncWrite + Unpin, E: Endpoint> Driver<Io, E> {
    pub(crate) fn new(io: FramedIo<Io>, endpoint: E) -> Self {
        Driver {
            io,
            endpoint,
            deferred: false,
            closing: false,
            lingering: None,
            ended: false,
            over_high_water: Hits::new(crate::limits::QUEUED_BYTES),
        }
    }

    /// The endpoint, to read what it kept once the connection has ended.
    pub(crate) fn endpoint_mut(&mut self) -> &mut E {
        &mut self.endpoint
    }

    /// Writes what is queued and closes the write side, for a socket that stops a
    /// connection from outside its driver.
    pub(crate) fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io.poll_close(cx)
    }

    /// The link and the endpoint, for work queued before the driver first runs.
    pub(crate) fn parts_mut(&mut self) -> (&mut Link, &mut E) {
        (&mut self.io.link, &mut self.endpoint)
    }

    /// Ends the connection with `end`.
    fn end(&mut self, end: End, cx: &mut Context<'_>) -> Poll<End> {
        self.ended = true;
        self.endpoint.finish(&end, cx);
        Poll::Ready(end)
    }

    /// The connection failed: `cause` ends it.
    fn lost(&mut self, cause: Error, cx: &mut Context<'_>) -> Poll<End> {
        self.end(End::Lost(cause), cx)
    }

    /// Ends the connection if the endpoint says so: at once, or gracefully.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Option<Poll<End>> {
        match self.endpoint.poll_end(&self.io.link, cx)? {
            Ending::Now(end) => Some(self.end(end, cx)),
            Ending::Graceful => {
                self.closing = true;
                Some(self.poll_close(cx))
            }
        }
    }

    /// Writes what is queued and closes the write side, to completion: a TLS close_notify
    /// or a QUIC stream's finish is sent, not dropped. Then waits, for at most
    /// [`LINGER_READ`], for the peer to close its side, throwing away what it still sends.
    fn poll_close(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        if self.lingering.is_none() {
            match self.io.poll_close(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) => {}
                // The peer may already be gone; the connection is closed either way.
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "closing the connection failed");
                    return self.end(End::Closed, cx);
                }
            }
            self.lingering = Some(Box::pin(tokio::time::sleep(LINGER_READ)));
        }
        let peer_closed = self.io.poll_discard(cx).is_ready();
        let waited = self
            .lingering
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if peer_closed || waited {
            return self.end(End::Closed, cx);
        }
        Poll::Pending
    }

    /// Step: reads and hands over everything that has arrived, while reading is not
    /// paused.
    fn read(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        loop {
            if self.endpoint.read_paused(&self.io.link) {
                if self.io.link.over_high_water() {
                    self.over_high_water.hit();
                }
                break;
            }
            match self.io.buffered() {
                Ok(Some(frame)) => {
                    self.endpoint.receive(frame, &mut self.io.link, cx)?;
                    continue;
                }
                Ok(None) if self.io.at_eof() => return Err(Error::ConnectionClosed),
                Ok(None) => {}
                Err(FrameError::Oversized {
                    id,
                    len,
                    max,
                    skipped,
                    ..
                }) => {
                    self.endpoint
                        .oversized(id, len, max, skipped, &mut self.io.link)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            // What was decoded so far is handed over before the next read. A socket with no
            // room holds up only what it holds: reading goes on until the endpoint says it
            // can hold no more, so that control frames behind the data are still seen.
            match self.endpoint.poll_deliver(&mut self.io.link, cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending if self.endpoint.read_paused(&self.io.link) => break,
                Poll::Pending => {}
            }
            match self.io.poll_fill(cx) {
                Poll::Pending => break,
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Err(Error::Io(e.into())),
            }
        }
        match self.endpoint.poll_deliver(&mut self.io.link, cx) {
            Poll::Ready(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }
}

impl<Io, E: Endpoint> Driver<Io, E> {
    /// Ends a connection that is dropped before its driver ended it: what was in flight
    /// fails, through the endpoint, with `end`. Nothing more is read or written.
    pub(crate) fn abandon(&mut self, end: End) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.endpoint
            .finish(&end, &mut Context::from_waker(std::task::Waker::noop()));
    }
}

// The driver never pins its fields: the endpoint and the stream are only ever used
// through `&mut`, so the driver moves freely whatever they hold.
impl<Io, E> Unpin for Driver<Io, E> {}

impl<Io: AsyncRead + AsyncWrite + Unpin, E: Endpoint> Future for Driver<Io, E> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Pending;
        }
        if this.closing {
            return this.poll_close(cx);
        }
        // Work handed over while a pass wrote and read goes in the next pass, without
        // another trip through the scheduler. A pass that finds nothing to do has
        // registered this task to be woken by what comes next.
        for _ in 0..MAX_PASSES {
            let took = if this.io.link.over_high_water() {
                false
            } else {
                match this.endpoint.send(&mut this.io.link, cx) {
                    Ok(took) => took,
                    Err(e) => return this.lost(e, cx),
                }
            };
            if !this.deferred && this.endpoint.defer(took) {
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.deferred = false;
            if let Some(end) = this.poll_end(cx) {
                return end;
            }
            let holding = this.endpoint.holding();
            if let Err(e) = this.io.poll_liveness(cx, holding) {
                return this.lost(e, cx);
            }
            let was_full = this.io.link.over_high_water();
            if was_full {
                this.over_high_water.hit();
            }
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                return this.lost(Error::Io(e.into()), cx);
            }
            // A flush that takes the buffer under the mark must lead to another pass, or
            // nothing would wake this task again.
            let drained = was_full && !this.io.link.over_high_water();
            if let Err(e) = this.read(cx) {
                return this.lost(e, cx);
            }
            // A pong or an ack queued while reading leaves now; one that takes the buffer
            // back under the mark after reading paused on it must lead to another pass.
            let mut drained = drained;
            if this.io.queued_len() > 0 {
                let was_full = this.io.link.over_high_water();
                if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                    return this.lost(Error::Io(e.into()), cx);
                }
                drained |= was_full && !this.io.link.over_high_water();
            }
            // What this pass wrote may have been the last the endpoint waited for.
            if let Some(end) = this.poll_end(cx) {
                return end;
            }
            // Work the endpoint still holds is taken in another pass only while there is
            // room to write it: over the high-water mark, the flush's pending write wakes
            // this task once the stream takes more, and passing again meanwhile would spin.
            let again = !this.io.link.over_high_water() && this.endpoint.again();
            if !(took || drained || again) {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
