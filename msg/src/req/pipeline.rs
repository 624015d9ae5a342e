//! [`Pipeline`]: many requests in flight from one task, replies in order.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use msg_core::Message;
use msg_transports::Transport;
use tower::Service;

use super::{checked_payload, ReqSocket, ResponseFuture};
use crate::Error;

pin_project_lite::pin_project! {
    /// The replies to a stream of requests sent through one [`ReqSocket`], made by
    /// [`ReqSocket::pipeline`].
    ///
    /// It keeps up to its window of requests in flight and yields their replies in the
    /// order the requests were sent. Only the oldest request is waited on, so a reply costs
    /// one wake-up of the task at most, and none if it had already come.
    #[must_use = "streams do nothing unless polled"]
    pub struct Pipeline<T: Transport, S> {
        socket: ReqSocket<T>,
        #[pin]
        requests: S,
        // The request stream has ended, or the connection failed.
        requests_done: bool,
        in_flight: VecDeque<ResponseFuture>,
        window: usize,
        // A failure to report once the requests in flight have been drained.
        failed: Option<Error>,
    }
}

impl<T: Transport, S> fmt::Debug for Pipeline<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("in_flight", &self.in_flight.len())
            .field("window", &self.window)
            .field("requests_done", &self.requests_done)
            .finish_non_exhaustive()
    }
}

impl<T: Transport, S> Pipeline<T, S> {
    pub(super) fn new(socket: ReqSocket<T>, requests: S, window: usize) -> Self {
        Pipeline {
            socket,
            requests,
            requests_done: false,
            in_flight: VecDeque::with_capacity(window.max(1)),
            window: window.max(1),
            failed: None,
        }
    }
}

impl<T, S> Stream for Pipeline<T, S>
where
    T: Transport,
    S: Stream<Item = Bytes>,
{
    type Item = Result<Bytes, Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut this = self.project();
        // Fill the window with whatever requests are ready to go.
        while !*this.requests_done && this.in_flight.len() < *this.window {
            match this.socket.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => {
                    *this.requests_done = true;
                    // Requests in flight report the failure themselves.
                    if this.in_flight.is_empty() {
                        *this.failed = Some(e);
                    }
                    break;
                }
                Poll::Pending => break,
            }
            match this.requests.as_mut().poll_next(cx) {
                Poll::Ready(Some(payload)) => {
                    let reply = this.socket.call(Message::new(payload));
                    this.in_flight.push_back(reply);
                }
                Poll::Ready(None) => *this.requests_done = true,
                Poll::Pending => break,
            }
        }
        let Some(oldest) = this.in_flight.front_mut() else {
            return match this.failed.take() {
                Some(e) => Poll::Ready(Some(Err(e))),
                None if *this.requests_done => Poll::Ready(None),
                None => Poll::Pending,
            };
        };
        let reply = std::task::ready!(Pin::new(oldest).poll(cx));
        this.in_flight.pop_front();
        if matches!(&reply, Err(e) if e.is_connection_error()) {
            // The connection failed: send nothing more, report what was in flight, end.
            *this.requests_done = true;
        }
        Poll::Ready(Some(reply.and_then(checked_payload)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (low, high) = if self.requests_done {
            (0, Some(0))
        } else {
            self.requests.size_hint()
        };
        let extra = self.in_flight.len() + usize::from(self.failed.is_some());
        (
            low.saturating_add(extra),
            high.and_then(|h| h.checked_add(extra)),
        )
    }
}
