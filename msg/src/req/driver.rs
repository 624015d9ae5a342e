//! The connection driver of a [`ReqSocket`](super::ReqSocket): one task per connection,
//! run by the socket's reconnect supervisor.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::{wire, Encoding, Frame, FrameError, FrameKind};
use tokio::io::{AsyncRead, AsyncWrite};

use super::slots::{Batch, Completions, Flow, Generation, SlotId, SlotTable};
use crate::dial::End;
use crate::error::frame_refused;
use crate::ids::IdMap;
use crate::io::{into_message, FramedIo};
use crate::Error;

/// Passes through the queue in one wake-up before the driver lets other tasks run.
const MAX_PASSES: usize = 32;
/// Requests are taken from the queue only while less than this waits to be written, so
/// that the write buffer is bounded in bytes, not by `max_in_flight` times the frame limit.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// Drives one client connection: writes queued requests and cancellations, reads
/// responses, and completes each request's slot by id, in whatever order the responses
/// come.
pub(crate) struct ReqDriver<Io> {
    io: FramedIo<Io>,
    slots: Arc<SlotTable>,
    /// The slot and generation of each request on the wire, by wire id.
    in_flight: IdMap<(SlotId, Generation)>,
    /// The last request sent from each slot, as (generation, wire id), to find what to
    /// cancel.
    sent: Vec<(Generation, u64)>,
    next_wire: u64,
    batch: Batch,
    done: Completions,
    flow: Flow,
    /// Requests were taken and their write put off once, for the callers about to send.
    deferred: bool,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> ReqDriver<Io> {
    pub(crate) fn new(io: FramedIo<Io>, slots: Arc<SlotTable>) -> Self {
        slots.connected();
        ReqDriver {
            io,
            slots,
            in_flight: IdMap::default(),
            sent: Vec::new(),
            next_wire: 1,
            batch: Batch::default(),
            done: Completions::default(),
            flow: Flow::Open,
            deferred: false,
        }
    }

    /// Step: moves queued requests and cancellations into the write buffer. Returns whether
    /// it took anything; nothing is taken while the write buffer is over its high-water
    /// mark (the pass that flushes it under the mark comes back for more).
    fn take_queued(&mut self, cx: &mut Context<'_>) -> bool {
        if self.io.queued_len() >= WRITE_HIGH_WATER {
            return false;
        }
        self.flow = self.slots.take(&mut self.batch, cx);
        let took = !self.batch.requests.is_empty() || !self.batch.cancels.is_empty();
        // Cancellations first: they are for requests sent in earlier batches (one given up
        // before it was taken leaves the queue instead), and a request of this batch may
        // reuse the slot.
        for (slot, generation) in self.batch.cancels.drain(..) {
            let Some(&(sent, wire)) = self.sent.get(slot as usize) else {
                continue;
            };
            if sent == generation && self.in_flight.remove(&wire).is_some() {
                // A bodiless frame always fits.
                let _ = self.io.queue(
                    FrameKind::Cancel,
                    Encoding::IDENTITY,
                    wire,
                    &bytes::Bytes::new(),
                );
            }
        }
        for queued in self.batch.requests.drain(..) {
            let wire = self.next_wire;
            match self.io.queue_message(FrameKind::Request, wire, &queued.msg) {
                Ok(()) => {
                    self.next_wire += 1;
                    self.in_flight
                        .insert(wire, (queued.slot, queued.generation));
                    let i = queued.slot as usize;
                    if self.sent.len() <= i {
                        self.sent.resize(i + 1, (0, 0));
                    }
                    self.sent[i] = (queued.generation, wire);
                }
                Err(e) => self
                    .done
                    .push(queued.slot, queued.generation, Err(frame_refused(e))),
            }
        }
        self.slots.complete(&mut self.done);
        took
    }

    /// Step: reads and completes every response that has arrived.
    fn read_responses(&mut self, cx: &mut Context<'_>) -> Result<(), Error> {
        let result = loop {
            match self.io.buffered() {
                Ok(Some(frame)) => match self.reply(frame) {
                    Ok(()) => continue,
                    Err(e) => break Err(e),
                },
                Ok(None) if self.io.at_eof() => break Err(Error::ConnectionClosed),
                Ok(None) => {}
                Err(e) => break Err(e.into()),
            }
            // Replies decoded so far reach their callers before the next read.
            self.slots.complete(&mut self.done);
            match self.io.poll_fill(cx) {
                Poll::Pending => break Ok(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => break Err(Error::Io(e.into())),
            }
        };
        self.slots.complete(&mut self.done);
        result
    }

    /// Matches a response to its request. A response to a request that was given up on
    /// is dropped; one to a request never sent breaks the protocol.
    fn reply(&mut self, frame: Frame) -> Result<(), Error> {
        let (id, kind) = (frame.id, frame.kind);
        let reply = match kind {
            FrameKind::Response => Ok(into_message(frame)),
            FrameKind::ErrorResponse => Err(Error::Remote {
                code: wire::error_response_code(frame.encoding),
                message: String::from_utf8_lossy(&frame.payload).into_owned(),
            }),
            kind => return Err(Error::UnexpectedFrame { kind }),
        };
        match self.in_flight.remove(&id) {
            Some((slot, generation)) => self.done.push(slot, generation, reply),
            None if id != 0 && id < self.next_wire => {
                tracing::trace!(id, "late reply to a cancelled request dropped");
            }
            None => {
                return Err(Error::Protocol(FrameError::Malformed {
                    kind: kind.name(),
                    reason: "answers a request that was never sent",
                }))
            }
        }
        Ok(())
    }

    /// The connection is gone: fails what was on its wire with
    /// [`Error::ConnectionClosed`].
    fn lost(&mut self, cause: Error) -> End {
        self.end(cause, || Error::ConnectionClosed)
    }

    /// Ends the connection, failing what was on its wire with `error`.
    fn end(&mut self, cause: Error, error: fn() -> Error) -> End {
        if !self.in_flight.is_empty() {
            tracing::debug!(
                error = %cause,
                in_flight = self.in_flight.len(),
                "request connection failed"
            );
        }
        self.slots.complete(&mut self.done);
        self.slots
            .disconnected(self.in_flight.drain().map(|(_, sent)| sent), error);
        End::Lost(cause)
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Future for ReqDriver<Io> {
    type Output = End;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<End> {
        let this = self.get_mut();
        // Requests queued while a pass wrote and read leave in the next pass, without
        // another trip through the scheduler. A pass that finds the queue empty has
        // registered this task to be woken by the next request.
        for _ in 0..MAX_PASSES {
            let took = this.take_queued(cx);
            if took && this.batch.callers_pending && !this.deferred {
                // The first of the callers just handed their replies woke this driver as it
                // sent again; the others are queued to run and most will send too. Written
                // now, each request would go in a write of its own, the driver woken by each
                // caller in turn. Instead the driver goes to the back of the run queue once
                // and writes them together: a third of the CPU per request when requests
                // come from many tasks (`msg-bench --open-loop`). Once per write, so a
                // caller that never comes back delays nobody.
                this.deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.deferred = false;
            if this.flow == Flow::Stopped {
                // Closed, and the linger is over: what is still on the wire fails.
                let _ = this.end(Error::Closed, || Error::Closed);
                return Poll::Ready(End::Closed);
            }
            if let Err(e) = this.io.poll_liveness(cx, false) {
                return Poll::Ready(this.lost(e));
            }
            let was_full = this.io.queued_len() >= WRITE_HIGH_WATER;
            if was_full {
                crate::limits::hit(crate::limits::QUEUED_BYTES);
            }
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                return Poll::Ready(this.lost(Error::Io(e.into())));
            }
            let drained = was_full && this.io.queued_len() < WRITE_HIGH_WATER;
            if let Err(e) = this.read_responses(cx) {
                return Poll::Ready(this.lost(e));
            }
            // A pong queued while reading leaves now.
            if this.io.queued_len() > 0 {
                if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                    return Poll::Ready(this.lost(Error::Io(e.into())));
                }
            }
            if this.flow == Flow::Closing
                && this.in_flight.is_empty()
                && this.io.queued_len() == 0
                && !this.slots.has_queued()
            {
                let _ = this.io.poll_close(cx);
                let _ = this.end(Error::Closed, || Error::Closed);
                return Poll::Ready(End::Closed);
            }
            if !(took || drained) {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
