//! [`SetEncodingLayer`]: marks every outgoing message with an encoding.

use std::task::{Context, Poll};

use msg_core::{Encoding, Message};
use tower::{Layer, Service};

/// Marks every message passing through with an [`Encoding`], for payloads that the
/// application encodes itself before they reach the socket.
#[derive(Debug, Clone, Copy)]
pub struct SetEncodingLayer {
    encoding: Encoding,
}

impl SetEncodingLayer {
    /// A layer that sets `encoding` on every message.
    pub const fn new(encoding: Encoding) -> Self {
        SetEncodingLayer { encoding }
    }
}

impl<S> Layer<S> for SetEncodingLayer {
    type Service = SetEncoding<S>;

    fn layer(&self, inner: S) -> SetEncoding<S> {
        SetEncoding {
            inner,
            encoding: self.encoding,
        }
    }
}

/// The service of [`SetEncodingLayer`].
#[derive(Debug, Clone)]
pub struct SetEncoding<S> {
    inner: S,
    encoding: Encoding,
}

impl<S: Service<Message>> Service<Message> for SetEncoding<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        self.inner.call(msg.with_encoding(self.encoding))
    }
}
