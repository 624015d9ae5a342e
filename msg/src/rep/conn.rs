//! One server connection: reads requests, calls the service, writes replies by id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg_core::{wire, Code, Frame, FrameKind, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::calls::{Calls, Failure, Outcome};
use super::Request;
use crate::events::{EventSink, SocketEvent};
use crate::io::{into_message, FramedIo};
use crate::Error;
use msg_layers::compression::{Codec, Decoders};

/// Stop reading new requests while this many reply bytes wait for a peer that is not
/// reading them.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// How a server connection decodes requests and encodes responses.
#[derive(Clone, Debug)]
pub(crate) struct Coding {
    pub(crate) decoders: Decoders,
    /// Compresses responses, if set.
    pub(crate) codec: Option<Codec>,
    /// The most a request may inflate to: the frame limit.
    pub(crate) limit: usize,
}

/// Serves one connection until the peer closes it, it breaks the protocol, or a graceful
/// shutdown has drained it.
///
/// A fixed pair of steps per wake-up: every complete request in the read buffer is handed to
/// the calls, every finished call is queued as a reply, and all queued replies leave in
/// one write.
pub(crate) struct Connection<Io, C, A> {
    io: FramedIo<Io>,
    calls: C,
    peer: A,
    /// Finished calls, kept from pass to pass.
    finished: Vec<(u64, Outcome)>,
    /// A request read while the calls were not ready.
    stalled: Option<Frame>,
    coding: Coding,
    max_in_flight: usize,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// No more requests will be read: shutdown began.
    reading_done: bool,
}

impl<Io, C, A> Connection<Io, C, A>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    C: Calls<A>,
    A: Clone + std::fmt::Display,
{
    pub(crate) fn new(
        io: FramedIo<Io>,
        calls: C,
        peer: A,
        max_in_flight: usize,
        coding: Coding,
        shutdown: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        Connection {
            io,
            calls,
            peer,
            finished: Vec::new(),
            stalled: None,
            coding,
            max_in_flight: max_in_flight.max(1),
            shutdown: shutdown.map(Box::pin),
            reading_done: false,
        }
    }

    /// Step: stops reading once shutdown is signalled; calls in flight still finish.
    fn watch_shutdown(&mut self, cx: &mut Context<'_>) {
        if let Some(signal) = self.shutdown.as_mut() {
            if signal.as_mut().poll(cx).is_ready() {
                self.shutdown = None;
                self.reading_done = true;
                self.stalled = None;
            }
        }
    }

    /// Step: hands every readable request to the calls, while they are ready and there is
    /// room, and drops the calls the client cancels. Returns whether any call started or
    /// was cancelled.
    ///
    /// At the in-flight limit, frames are still read up to the next request, so that the
    /// client's cancellations and pings ahead of it are seen: a client whose requests all
    /// hang can still cancel them.
    fn read_requests(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let progress = self.read_into_calls(cx);
        self.calls.flush();
        progress
    }

    fn read_into_calls(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut progress = false;
        while !self.reading_done && self.io.queued_len() < WRITE_HIGH_WATER {
            let frame = match self.stalled.take() {
                Some(frame) => frame,
                None => match self.io.poll_read(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(Some(frame))) => frame,
                    // The client closed its side. msg clients never half-close: one that
                    // closes has left, and nobody will read the replies, so the calls still
                    // running are dropped with the connection (`serve`'s handlers see
                    // their futures dropped, as for a cancel) instead of running on until
                    // a heartbeat finds the connection gone.
                    Poll::Ready(Ok(None)) => return Err(Error::ConnectionClosed),
                    Poll::Ready(Err(e)) => return Err(e.into()),
                },
            };
            match frame.kind {
                FrameKind::Request => {}
                FrameKind::Cancel => {
                    progress |= self.cancel(frame.id);
                    continue;
                }
                kind => return Err(Error::UnexpectedFrame { kind }),
            }
            if self.calls.len() >= self.max_in_flight {
                crate::limits::hit(crate::limits::IN_FLIGHT);
                self.stalled = Some(frame);
                break;
            }
            match self.calls.poll_ready(cx) {
                Poll::Pending => {
                    self.stalled = Some(frame);
                    break;
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(peer = %self.peer, error = %e, "service failed; closing connection");
                    return Err(Error::ConnectionClosed);
                }
                Poll::Ready(Ok(())) => {}
            }
            let id = frame.id;
            let mut msg = into_message(frame);
            if !msg.encoding().is_identity() {
                match self.coding.decoders.decode(msg, self.coding.limit) {
                    Ok(plain) => msg = plain,
                    Err(e) => {
                        // Only this request is lost: the client gets the reason.
                        let e = crate::error::undecodable(e);
                        tracing::info!(peer = %self.peer, id, error = %e, "request not decoded");
                        let text = format!("{e}: {}", error_chain(&e));
                        self.queue_error(id, Code::InvalidArgument, Bytes::from(text));
                        progress = true;
                        continue;
                    }
                }
            }
            let request = Request::new(msg, self.peer.clone());
            if let Some(outcome) = self.calls.start(id, request, cx) {
                self.queue_reply(id, outcome);
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Drops the running call of request `id`, if there is one: the client gave up on it.
    fn cancel(&mut self, id: u64) -> bool {
        let cancelled = self.calls.cancel(id);
        if cancelled {
            tracing::trace!(peer = %self.peer, id, "request cancelled by the client");
        }
        cancelled
    }

    /// Step: queues the reply of every call that has finished. Returns whether any call
    /// finished.
    fn reply_finished(&mut self, cx: &mut Context<'_>) -> bool {
        let before = self.calls.len();
        let mut finished = std::mem::take(&mut self.finished);
        self.calls.poll_finished(cx, &mut finished);
        for (id, outcome) in finished.drain(..) {
            self.queue_reply(id, outcome);
        }
        self.finished = finished;
        before != self.calls.len()
    }

    /// Queues the reply to request `id`: the response, or an error frame.
    fn queue_reply(&mut self, id: u64, outcome: Outcome) {
        let queued = match outcome {
            Ok(mut reply) => {
                if let Some(codec) = &self.coding.codec {
                    reply = codec.compress(reply);
                }
                self.io
                    .queue(FrameKind::Response, reply.encoding(), id, reply.payload())
                    .map_err(Failure::reply_refused)
            }
            Err(message) => Err(message),
        };
        if let Err(failure) = queued {
            self.queue_error(id, failure.code, Bytes::from(failure.message));
        }
    }

    /// Queues an error-response to request `id`.
    fn queue_error(&mut self, id: u64, code: Code, payload: Bytes) {
        let encoding = wire::error_response_encoding(code);
        // An error message always fits: it is far below any sane frame limit, and one that
        // does not is cut to what does.
        if self
            .io
            .queue(FrameKind::ErrorResponse, encoding, id, &payload)
            .is_err()
        {
            let _ = self.io.queue(
                FrameKind::ErrorResponse,
                encoding,
                id,
                &Bytes::from_static(b"error"),
            );
        }
    }

    /// Serves the connection to its end, and reports the end as an event.
    pub(crate) async fn run(mut self, events: Arc<EventSink<A>>)
    where
        A: Send + 'static,
    {
        let end = std::future::poll_fn(|cx| self.poll_run(cx)).await;
        match &end {
            Error::ConnectionClosed | Error::Closed => {
                tracing::debug!(peer = %self.peer, "connection closed")
            }
            e => tracing::info!(peer = %self.peer, error = %e, "connection closed"),
        }
        events
            .counters()
            .disconnections(SocketType::Rep)
            .increment(1);
        let peer = self.peer.clone();
        events.emit(|| SocketEvent::Disconnected {
            peer,
            error: Arc::new(end),
        });
    }

    /// Serves until the connection ends; the error says how (`ConnectionClosed` for a
    /// client that left, `Closed` for a graceful shutdown).
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        let this = self;
        this.watch_shutdown(cx);
        loop {
            if let Err(e) = this.io.poll_liveness(cx, this.stalled.is_some()) {
                return Poll::Ready(e);
            }
            let started = match this.read_requests(cx) {
                Ok(started) => started,
                Err(e) => return Poll::Ready(e),
            };
            let finished = this.reply_finished(cx);
            // Reading stops while the replies waiting to be written are over the high-water
            // mark; a flush that takes them under it must lead to another read, or nothing
            // would wake this task again.
            let was_full = this.io.queued_len() >= WRITE_HIGH_WATER;
            if was_full {
                crate::limits::hit(crate::limits::QUEUED_BYTES);
            }
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                return Poll::Ready(Error::Io(e.into()));
            }
            let drained = was_full && this.io.queued_len() < WRITE_HIGH_WATER;
            // Reading is done only for a graceful shutdown: the end of the peer's stream
            // ends the connection at once (above).
            if this.reading_done && this.calls.len() == 0 && this.io.queued_len() == 0 {
                let _ = this.io.poll_close(cx);
                return Poll::Ready(Error::Closed);
            }
            // Room freed by finished calls may let more requests in; otherwise every step
            // is waiting on a registered waker.
            if !(finished || started || drained) || this.reading_done {
                return Poll::Pending;
            }
        }
    }
}

/// The sources of `e`, as text.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut chain = Vec::new();
    let mut source = e.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    chain.join(": ")
}
