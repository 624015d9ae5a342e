//! [`ResponseFuture`]: the reply to one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::Message;

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
    Waiting {
        slots: Arc<SlotTable>,
        slot: SlotId,
    },
    /// Failed before it was sent; the socket's error counters, to count it when polled.
    Failed(Error, Arc<ErrorCounters>),
    Finished,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { slot, .. } => format!("waiting in slot {slot}"),
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
            state: State::Waiting { slots, slot },
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
        let reply = match &self.state {
            State::Waiting { slots, slot } => {
                let reply = match slots.poll_reply(*slot, cx) {
                    // A reply encoded by the server's compression is decoded here, in the
                    // caller's task.
                    Poll::Ready(Ok(msg)) if !msg.encoding().is_identity() => slots.decode(msg),
                    Poll::Ready(reply) => reply,
                    Poll::Pending => return Poll::Pending,
                };
                if let Err(e) = &reply {
                    slots.errors().count(e);
                }
                reply
            }
            State::Failed(..) | State::Finished => {
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
        if let State::Waiting { slots, slot } = &self.state {
            slots.abandon(*slot);
        }
    }
}
