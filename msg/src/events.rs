//! [`SocketEvent`]s: what happens to a socket's connections, as a [`Stream`] (libzmq's
//! socket monitor).
//!
//! Every socket has [`events`](crate::ReqSocket::events). The events of a socket go to every
//! [`Events`] stream taken from it. The queue is bounded: a consumer that does not keep up
//! loses the oldest events, and is told how many in a [`SocketEvent::Missed`]; the socket
//! itself never waits for a consumer.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;

use crate::counters::SocketCounters;
use crate::Error;

/// Events kept for a consumer that has not read them yet; past this the oldest are lost.
pub const EVENT_CAPACITY: usize = 256;

/// Something that happened to a socket's connections.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum SocketEvent<A> {
    /// A client socket connected to `peer` and completed the handshake.
    Connected {
        /// The server's address.
        peer: A,
    },
    /// A connection was lost; the error says why.
    Disconnected {
        /// The other end's address.
        peer: A,
        /// Why it ended.
        error: Error,
    },
    /// A client socket will dial again after `delay`; `attempt` counts the dials since the
    /// last connection, from 1.
    Reconnecting {
        /// Which attempt the next dial is.
        attempt: u32,
        /// How long the socket waits before it.
        delay: Duration,
    },
    /// A client socket's dial, or the handshake after it, failed.
    ConnectFailed {
        /// Why.
        error: Error,
    },
    /// A server refused this client socket, with its reason.
    Rejected {
        /// The server's reason.
        reason: String,
    },
    /// A client socket stopped redialing a server, for good: the server's answer to its
    /// dial will not change (the wrong socket type, admission's refusal, a peer not
    /// speaking msg, a certificate refused: see
    /// [`Error::is_permanent`](crate::Error::is_permanent)), or the reconnect policy's
    /// [`max_attempts`](crate::Backoff::max_attempts) are spent
    /// ([`Error::NotConnected`](crate::Error::NotConnected) with the last dial's error).
    /// `error` is what the socket's requests (or a `SubSocket`'s `subscribe`) fail with
    /// from now on.
    GaveUp {
        /// The answer that will not change.
        error: Error,
    },
    /// A server socket accepted `peer` and completed the handshake.
    Accepted {
        /// The client's address.
        peer: A,
    },
    /// A server socket refused `peer`: wrong socket type, or admission said no.
    Refused {
        /// The client's address.
        peer: A,
        /// The reason the client was given.
        reason: String,
    },
    /// A server socket's handshake with `peer` failed: the transport's exchange, a
    /// protocol error, a timeout, or eviction to make room for newer handshakes.
    HandshakeFailed {
        /// The client's address.
        peer: A,
        /// Why.
        error: Error,
    },
    /// This stream fell behind and lost `count` events.
    Missed {
        /// How many events were lost.
        count: u64,
    },
}

/// The sending side, one per socket, and the socket's connection counters: what observes
/// its connections.
pub(crate) struct EventSink<A> {
    /// Made by the first [`subscribe`](Self::subscribe): a socket nobody watches holds no
    /// buffer of events (256 of them cost a client socket more than its connection).
    tx: std::sync::OnceLock<broadcast::Sender<SocketEvent<A>>>,
    counters: SocketCounters,
}

impl<A> fmt::Debug for EventSink<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventSink")
            .field(
                "receivers",
                &self.tx.get().map_or(0, |tx| tx.receiver_count()),
            )
            .finish()
    }
}

impl<A: Clone + Send + 'static> EventSink<A> {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(EventSink {
            tx: std::sync::OnceLock::new(),
            counters: SocketCounters::default(),
        })
    }

    /// Sends `event` to every stream; costs nothing but the event when there is none.
    pub(crate) fn emit(&self, event: impl FnOnce() -> SocketEvent<A>) {
        if let Some(tx) = self.tx.get() {
            if tx.receiver_count() > 0 {
                let _ = tx.send(event());
            }
        }
    }

    /// The socket's connection counters.
    pub(crate) fn counters(&self) -> &SocketCounters {
        &self.counters
    }

    pub(crate) fn subscribe(&self) -> Events<A> {
        let tx = self.tx.get_or_init(|| broadcast::channel(EVENT_CAPACITY).0);
        Events {
            inner: BroadcastStream::new(tx.subscribe()),
        }
    }
}

/// A socket's [`SocketEvent`]s, as a [`Stream`]; see [`events`](crate::ReqSocket::events).
///
/// It never ends while the socket lives.
pub struct Events<A> {
    inner: BroadcastStream<SocketEvent<A>>,
}

impl<A> fmt::Debug for Events<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events").finish_non_exhaustive()
    }
}

impl<A: Clone + Send + 'static> Stream for Events<A> {
    type Item = SocketEvent<A>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|item| {
            item.map(|event| match event {
                Ok(event) => event,
                Err(BroadcastStreamRecvError::Lagged(count)) => SocketEvent::Missed { count },
            })
        })
    }
}
