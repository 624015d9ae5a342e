//! The connection driver of a [`ReqSocket`](super::ReqSocket): one task per connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::{Frame, FrameKind, Message};
use tokio::io::{AsyncRead, AsyncWrite};

use super::shared::{Completions, Shared, SlotId};
use crate::error::frame_refused;
use crate::ids::IdMap;
use crate::io::FramedIo;
use crate::Error;

/// Passes through the queue in one wake-up before the driver lets other tasks run.
const MAX_PASSES: usize = 32;

/// Drives one client connection: writes queued requests, reads responses, and completes
/// each request's slot by id, in whatever order the responses come.
pub(crate) struct ReqDriver<Io> {
    io: FramedIo<Io>,
    shared: Arc<Shared>,
    /// The slot of each request on the wire, by request id.
    in_flight: IdMap<SlotId>,
    next_id: u64,
    batch: Vec<(SlotId, Message)>,
    done: Completions,
    closing: bool,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> ReqDriver<Io> {
    pub(crate) fn new(io: FramedIo<Io>, shared: Arc<Shared>) -> Self {
        ReqDriver {
            io,
            shared,
            in_flight: IdMap::default(),
            next_id: 1,
            batch: Vec::new(),
            done: Completions::default(),
            closing: false,
        }
    }

    /// Step: moves every queued request into the write buffer. Returns how many it took.
    fn take_queued(&mut self, cx: &mut Context<'_>) -> usize {
        self.closing = self.shared.take_queue(&mut self.batch, cx);
        let taken = self.batch.len();
        for (slot, msg) in self.batch.drain(..) {
            let id = self.next_id;
            self.next_id += 1;
            match self
                .io
                .queue(FrameKind::Request, msg.encoding(), id, msg.payload())
            {
                Ok(()) => {
                    self.in_flight.insert(id, slot);
                }
                Err(e) => self.done.push(slot, Err(frame_refused(e))),
            }
        }
        self.shared.complete(&mut self.done);
        taken
    }

    /// Step: reads and completes every response that has arrived.
    fn read_responses(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let result = loop {
            match self.io.decode() {
                Ok(Some(frame)) => match self.reply(frame) {
                    Ok(()) => continue,
                    Err(e) => break Poll::Ready(Err(e)),
                },
                Ok(None) => {}
                Err(e) => break Poll::Ready(Err(e.into())),
            }
            // Replies decoded so far reach their callers before the next read.
            self.shared.complete(&mut self.done);
            match self.io.poll_fill(cx) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Ok(true)) => {}
                Poll::Ready(Ok(false)) => {
                    if let Some(frame) = self.io.decode()? {
                        if let Err(e) = self.reply(frame) {
                            break Poll::Ready(Err(e));
                        }
                        continue;
                    }
                    break Poll::Ready(Err(Error::ConnectionClosed));
                }
                Poll::Ready(Err(e)) => break Poll::Ready(Err(Error::Io(e))),
            }
        };
        self.shared.complete(&mut self.done);
        result
    }

    /// Matches a response to its request.
    fn reply(&mut self, frame: Frame) -> Result<(), Error> {
        let reply = match frame.kind {
            FrameKind::Response => Ok(Message::new(frame.payload).with_encoding(frame.encoding)),
            FrameKind::ErrorResponse => Err(Error::Remote {
                message: String::from_utf8_lossy(&frame.payload).into_owned(),
            }),
            kind => return Err(Error::UnexpectedFrame { kind }),
        };
        let Some(slot) = self.in_flight.remove(&frame.id) else {
            tracing::warn!(id = frame.id, "response to a request that was never sent");
            return Err(Error::UnexpectedFrame { kind: frame.kind });
        };
        self.done.push(slot, reply);
        Ok(())
    }

    /// Fails everything in flight or queued, and every later request.
    fn fail(&mut self, cause: &Error) {
        if !self.in_flight.is_empty() {
            tracing::debug!(
                error = %cause,
                in_flight = self.in_flight.len(),
                "request connection failed"
            );
        }
        self.shared.complete(&mut self.done);
        self.shared
            .fail(self.in_flight.drain().map(|(_, slot)| slot));
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Future for ReqDriver<Io> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Requests queued while a pass wrote and read leave in the next pass, without
        // another trip through the scheduler. A pass that finds the queue empty has
        // registered this task to be woken by the next request.
        for _ in 0..MAX_PASSES {
            let taken = this.take_queued(cx);
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                this.fail(&Error::Io(e));
                return Poll::Ready(());
            }
            if let Poll::Ready(Err(e)) = this.read_responses(cx) {
                this.fail(&e);
                return Poll::Ready(());
            }
            if this.closing && this.in_flight.is_empty() && this.io.queued_len() == 0 {
                let _ = this.io.poll_close(cx);
                this.fail(&Error::ConnectionClosed);
                return Poll::Ready(());
            }
            if taken == 0 {
                return Poll::Pending;
            }
        }
        // Still busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
