//! [`ResponseFuture`]: the reply to one request.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use msg_core::Message;
use tokio::sync::oneshot;

use super::driver::Reply;
use crate::Error;

/// The reply to a request sent through [`ReqSocket`](super::ReqSocket) as a
/// [`tower::Service`].
///
/// It resolves when the response arrives, or with [`Error::ConnectionClosed`] as soon as the
/// connection dies. Dropping it abandons the request: if it has not left yet, it never will.
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct ResponseFuture {
    state: State,
}

#[derive(Debug)]
enum State {
    Waiting(oneshot::Receiver<Reply>),
    Failed(Option<Error>),
}

impl ResponseFuture {
    pub(crate) fn waiting(rx: oneshot::Receiver<Reply>) -> Self {
        ResponseFuture {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn failed(e: Error) -> Self {
        ResponseFuture {
            state: State::Failed(Some(e)),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Message, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            State::Waiting(rx) => Poll::Ready(match ready!(Pin::new(rx).poll(cx)) {
                Ok(reply) => reply,
                Err(_) => Err(Error::ConnectionClosed),
            }),
            State::Failed(e) => Poll::Ready(Err(e.take().unwrap_or(Error::NotReady))),
        }
    }
}
