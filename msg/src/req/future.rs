//! [`ResponseFuture`]: the reply to one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::{Encoding, Message};
use msg_layers::compression::{Codec, DecompressError};
use tokio::task::JoinHandle;

use super::endpoints::{Balanced, Balancing};
use super::slots::{SlotId, SlotTable};
use crate::counters::ErrorCounters;
use crate::Error;

/// The reply to a request sent through [`ReqSocket`](super::ReqSocket) as a
/// [`tower::Service`].
///
/// It resolves when the response arrives, or with [`Error::ConnectionClosed`] as soon as the
/// connection dies. Dropping it abandons the request: if it has not left yet, it never will.
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    state: State,
}

enum State {
    /// A long request being compressed on the blocking pool, in its reserved slot; queued
    /// once it is. Boxed: rare, and the common states stay small.
    Compressing(Box<Compressing>),
    /// A request of a socket with many endpoints: waiting for the balancer to choose one,
    /// then for the reply. Boxed: the one-endpoint states stay small.
    Balancing(Box<Balancing>),
    Waiting {
        slots: Arc<SlotTable>,
        slot: SlotId,
        /// The caller's waker is in the slot already: the first poll has nothing to
        /// look at.
        registered: bool,
    },
    /// A long reply being decoded on the blocking pool; its slot is free already.
    Decoding {
        slots: Arc<SlotTable>,
        encoding: Encoding,
        job: JoinHandle<Result<Message, DecompressError>>,
    },
    /// Failed before it was sent; the socket's error counters, to count it when polled.
    Failed(Error, Arc<ErrorCounters>),
    Finished,
}

/// A request being compressed: `plain` goes instead if the codec panics.
struct Compressing {
    slots: Arc<SlotTable>,
    slot: SlotId,
    job: JoinHandle<Message>,
    plain: Message,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Compressing(c) => format!("compressing in slot {}", c.slot),
            State::Balancing(_) => "balancing".to_owned(),
            State::Waiting { slot, .. } => format!("waiting in slot {slot}"),
            State::Decoding { .. } => "decoding".to_owned(),
            State::Failed(e, _) => format!("failed: {e}"),
            State::Finished => "finished".to_owned(),
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl ResponseFuture {
    pub(crate) fn waiting(slots: Arc<SlotTable>, slot: SlotId) -> Self {
        ResponseFuture {
            state: State::Waiting {
                slots,
                slot,
                registered: false,
            },
        }
    }

    /// As [`waiting`](Self::waiting), for a request queued with the waker of the task
    /// that polls this future first in its slot already: that first poll returns
    /// `Pending` without taking the table's lock, as the waker will be woken for the reply.
    pub(crate) fn registered(slots: Arc<SlotTable>, slot: SlotId) -> Self {
        ResponseFuture {
            state: State::Waiting {
                slots,
                slot,
                registered: true,
            },
        }
    }

    /// Compresses `msg` with `codec` on the blocking pool, then queues it in reserved slot
    /// `slot`.
    pub(crate) fn compressing(
        slots: Arc<SlotTable>,
        slot: SlotId,
        codec: &Codec,
        msg: Message,
    ) -> Self {
        ResponseFuture {
            state: State::Compressing(Box::new(Compressing {
                slots,
                slot,
                job: crate::offload::spawn_compress(codec, msg.clone()),
                plain: msg,
            })),
        }
    }

    /// `msg` sent to whichever of the socket's endpoints `balanced` chooses.
    pub(crate) fn balanced(
        balanced: Arc<Balanced>,
        msg: Message,
        errors: Arc<ErrorCounters>,
    ) -> Self {
        ResponseFuture {
            state: State::Balancing(Box::new(Balancing::new(balanced, msg, errors))),
        }
    }

    pub(crate) fn failed(e: Error, errors: Arc<ErrorCounters>) -> Self {
        ResponseFuture {
            state: State::Failed(e, errors),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Message, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let State::Balancing(balancing) = &mut self.state {
            let reply = std::task::ready!(balancing.poll(cx));
            self.state = State::Finished;
            return Poll::Ready(reply);
        }
        if let State::Compressing(compressing) = &mut self.state {
            let Compressing {
                slots,
                slot,
                job,
                plain,
            } = &mut **compressing;
            let msg = match std::task::ready!(Pin::new(job).poll(cx)) {
                Ok(msg) => msg,
                // The codec panicked: the request goes as it is, as when a codec fails.
                Err(_) => plain.clone(),
            };
            let (slots, slot) = (slots.clone(), *slot);
            match slots.enqueue(slot, msg) {
                Ok(_) => {
                    self.state = State::Waiting {
                        slots,
                        slot,
                        registered: false,
                    }
                }
                Err(e) => {
                    // The slot is freed by the refusal.
                    self.state = State::Finished;
                    slots.errors().count(&e);
                    return Poll::Ready(Err(e));
                }
            }
        }
        let reply = match &mut self.state {
            State::Waiting {
                slots,
                slot,
                registered,
            } => {
                if std::mem::take(registered) {
                    return Poll::Pending;
                }
                let reply = match slots.poll_reply(*slot, cx) {
                    // A reply encoded by the server's compression is decoded here, in the
                    // caller's task; a long one on the blocking pool.
                    Poll::Ready(Ok(msg)) if crate::offload::decode_offloaded(&msg) => {
                        let slots = slots.clone();
                        let encoding = msg.encoding();
                        let (decoders, limit) = slots.decoding();
                        let job = crate::offload::spawn_decode(decoders, msg, limit);
                        self.state = State::Decoding {
                            slots,
                            encoding,
                            job,
                        };
                        return self.poll(cx);
                    }
                    Poll::Ready(Ok(msg)) if !msg.encoding().is_identity() => slots.decode(msg),
                    Poll::Ready(reply) => reply,
                    Poll::Pending => return Poll::Pending,
                };
                if let Err(e) = &reply {
                    slots.errors().count(e);
                }
                reply
            }
            State::Decoding {
                slots,
                encoding,
                job,
            } => {
                let outcome = std::task::ready!(Pin::new(job).poll(cx));
                // Mapped here, in the caller's task, where a limit hit is counted.
                let reply =
                    crate::offload::joined(*encoding, outcome).map_err(crate::error::undecodable);
                if let Err(e) = &reply {
                    slots.errors().count(e);
                }
                reply
            }
            State::Compressing(_) | State::Balancing(_) | State::Failed(..) | State::Finished => {
                match std::mem::replace(&mut self.state, State::Finished) {
                    State::Failed(e, errors) => {
                        errors.count(&e);
                        Err(e)
                    }
                    // A misuse, not a failed request: not counted.
                    _ => Err(Error::PolledAfterCompletion),
                }
            }
        };
        self.state = State::Finished;
        Poll::Ready(reply)
    }
}

impl Drop for ResponseFuture {
    fn drop(&mut self) {
        match &self.state {
            State::Waiting { slots, slot, .. } => slots.abandon(*slot),
            // Not queued yet: the slot goes back; the compression's outcome is dropped.
            State::Compressing(c) => c.slots.unreserve(c.slot),
            _ => {}
        }
    }
}
