//! [`ResponseFuture`]: the reply to one request.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::Message;

use super::slots::{SlotId, SlotTable};
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
    Waiting { slots: Arc<SlotTable>, slot: SlotId },
    Failed(Error),
    Finished,
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting { slot, .. } => format!("waiting in slot {slot}"),
            State::Failed(e) => format!("failed: {e}"),
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

    pub(crate) fn failed(e: Error) -> Self {
        ResponseFuture {
            state: State::Failed(e),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Message, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let reply = match &self.state {
            State::Waiting { slots, slot } => match slots.poll_reply(*slot, cx) {
                // A reply encoded by the server's compression is decoded here, in the
                // caller's task.
                Poll::Ready(Ok(msg)) if !msg.encoding().is_identity() => slots.decode(msg),
                Poll::Ready(reply) => reply,
                Poll::Pending => return Poll::Pending,
            },
            State::Failed(_) | State::Finished => {
                match std::mem::replace(&mut self.state, State::Finished) {
                    State::Failed(e) => Err(e),
                    _ => Err(Error::PolledAfterCompletion),
                }
            }
        };
        self.state = State::Finished;
        if let Err(e) = &reply {
            metrics::counter!("msg_request_errors_total", "error" => e.kind()).increment(1);
        }
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
