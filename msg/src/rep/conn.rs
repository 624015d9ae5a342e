//! One server connection: reads requests, calls the service, writes replies by id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg_core::proto::{Incoming, Link, Replier};
use msg_core::{Code, Frame, Message, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::calls::{Calls, Failure, Outcome};
use super::Request;
use crate::dial::End;
use crate::driver::{Driver, Ending, Endpoint};
use crate::events::{EventSink, SocketEvent};
use crate::io::FramedIo;
use crate::Error;
use msg_layers::compression::{Codec, Decoders};

/// How a server connection decodes requests and encodes responses.
#[derive(Clone, Debug)]
pub(crate) struct Coding {
    pub(crate) decoders: Decoders,
    /// Compresses responses, if set.
    pub(crate) codec: Option<Codec>,
    /// The most a request may inflate to: the frame limit.
    pub(crate) limit: usize,
}

impl Coding {
    /// The built-in decoders, no compression, and `limit` for what a request inflates to.
    pub(crate) fn new(limit: usize) -> Self {
        Coding {
            decoders: Decoders::default(),
            codec: None,
            limit,
        }
    }
}

/// Serves one connection until the peer closes it, it breaks the protocol, or a graceful
/// shutdown has drained it: the replier role between the calls and the
/// [`Driver`](crate::driver::Driver).
///
/// Every complete request read is handed to the calls, every finished call is queued as a
/// reply, and all queued replies leave in one write.
pub(crate) struct Connection<Io, C, A> {
    io: FramedIo<Io>,
    endpoint: RepEndpoint<C, A>,
}

/// The replier's side of a server connection.
pub(crate) struct RepEndpoint<C, A> {
    /// The protocol: requests and cancels in, replies by id out.
    role: Replier,
    calls: C,
    peer: A,
    /// Finished calls, kept from pass to pass.
    finished: Vec<(u64, Outcome)>,
    /// A request read while the calls were not ready: its id and body.
    stalled: Option<(u64, Message)>,
    coding: Coding,
    max_in_flight: usize,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// No more requests will be read: shutdown began.
    reading_done: bool,
    /// A call started or was cancelled in this pass: the next pass may find it finished.
    started: bool,
    /// The id of the last request started (or answered at once): what a go-away names.
    last_started: u64,
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
            endpoint: RepEndpoint {
                role: Replier::new(),
                calls,
                peer,
                finished: Vec::new(),
                stalled: None,
                coding,
                max_in_flight: max_in_flight.max(1),
                shutdown: shutdown.map(Box::pin),
                reading_done: false,
                started: false,
                last_started: 0,
            },
        }
    }

    /// Serves the connection to its end.
    pub(crate) fn serve(self) -> Driver<Io, RepEndpoint<C, A>> {
        Driver::new(self.io, self.endpoint)
    }

    /// Serves the connection to its end, and reports the end as an event.
    pub(crate) async fn run(self, events: Arc<EventSink<A>>)
    where
        A: Send + 'static,
    {
        let peer = self.endpoint.peer.clone();
        let end = match self.serve().await {
            End::Closed => Error::Closed,
            End::Lost(e) => e,
        };
        match &end {
            Error::ConnectionClosed | Error::Closed => {
                tracing::debug!(%peer, "connection closed")
            }
            e => tracing::info!(%peer, error = %e, "connection closed"),
        }
        events
            .counters()
            .disconnections(SocketType::Rep)
            .increment(1);
        events.emit(|| SocketEvent::Disconnected {
            peer,
            error: Arc::new(end),
        });
    }
}

impl<C, A> RepEndpoint<C, A>
where
    C: Calls<A>,
    A: Clone + std::fmt::Display,
{
    /// Step: stops reading once shutdown is signalled, and tells the client which request
    /// is the last this server processes; calls in flight still finish, and a request read
    /// and not started is dropped: the client fails it as never processed.
    fn watch_shutdown(&mut self, link: &mut Link, cx: &mut Context<'_>) {
        if let Some(signal) = self.shutdown.as_mut() {
            if signal.as_mut().poll(cx).is_ready() {
                self.shutdown = None;
                self.reading_done = true;
                self.stalled = None;
                self.role.go_away(self.last_started, link);
            }
        }
    }

    /// Starts request `id`, if the calls have room and are ready; otherwise holds it.
    /// At the in-flight limit, frames are still read up to the next request, so that the
    /// client's cancellations and pings ahead of it are seen: a client whose requests all
    /// hang can still cancel them.
    fn start(
        &mut self,
        id: u64,
        msg: Message,
        link: &mut Link,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        if self.calls.len() >= self.max_in_flight {
            crate::limits::hit(crate::limits::IN_FLIGHT);
            self.stalled = Some((id, msg));
            return Ok(());
        }
        match self.calls.poll_ready(cx) {
            Poll::Pending => {
                self.stalled = Some((id, msg));
                return Ok(());
            }
            Poll::Ready(Err(e)) => {
                tracing::warn!(peer = %self.peer, error = %e, "service failed; closing connection");
                return Err(Error::ConnectionClosed);
            }
            Poll::Ready(Ok(())) => {}
        }
        self.started = true;
        self.last_started = self.last_started.max(id);
        let mut msg = msg;
        if !msg.encoding().is_identity() {
            match self.coding.decoders.decode(msg, self.coding.limit) {
                Ok(plain) => msg = plain,
                Err(e) => {
                    // Only this request is lost: the client gets the reason.
                    let e = crate::error::undecodable(e);
                    tracing::info!(peer = %self.peer, id, error = %e, "request not decoded");
                    let text = Bytes::from(format!("{e}: {}", error_chain(&e)));
                    self.role.fail(id, Code::InvalidArgument, &text, link);
                    return Ok(());
                }
            }
        }
        let request = Request::new(msg, self.peer.clone());
        if let Some(outcome) = self.calls.start(id, request, cx) {
            self.queue_reply(id, outcome, link);
        }
        Ok(())
    }

    /// Drops the running call of request `id`, if there is one: the client gave up on it.
    fn cancel(&mut self, id: u64) {
        if self.calls.cancel(id) {
            self.started = true;
            tracing::trace!(peer = %self.peer, id, "request cancelled by the client");
        }
    }

    /// Queues the reply to request `id`: the response, or an error frame.
    fn queue_reply(&mut self, id: u64, outcome: Outcome, link: &mut Link) {
        let queued = match outcome {
            Ok(mut reply) => {
                if let Some(codec) = &self.coding.codec {
                    reply = codec.compress(reply);
                }
                self.role
                    .respond(id, &reply, link)
                    .map_err(Failure::reply_refused)
            }
            Err(failure) => Err(failure),
        };
        if let Err(failure) = queued {
            self.role
                .fail(id, failure.code, &Bytes::from(failure.message), link);
        }
    }
}

impl<C, A> Endpoint for RepEndpoint<C, A>
where
    C: Calls<A>,
    A: Clone + std::fmt::Display,
{
    /// Queues the reply of every call that has finished.
    fn send(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error> {
        self.watch_shutdown(link, cx);
        self.started = false;
        let before = self.calls.len();
        let mut finished = std::mem::take(&mut self.finished);
        self.calls.poll_finished(cx, &mut finished);
        for (id, outcome) in finished.drain(..) {
            self.queue_reply(id, outcome, link);
        }
        self.finished = finished;
        Ok(before != self.calls.len())
    }

    fn poll_end(&mut self, link: &Link, _cx: &mut Context<'_>) -> Option<Ending> {
        // Reading is done only for a graceful shutdown: the end of the peer's stream
        // ends the connection at once (in `receive`).
        (self.reading_done && self.calls.len() == 0 && link.queued_len() == 0)
            .then_some(Ending::Graceful)
    }

    #[inline]
    fn receive(
        &mut self,
        frame: Frame,
        link: &mut Link,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        match self.role.receive(frame)? {
            Incoming::Request { id, msg } => self.start(id, msg, link, cx),
            Incoming::Cancel { id } => {
                self.cancel(id);
                Ok(())
            }
        }
    }

    /// Starts the request held for room, if there is room now, and hands the requests
    /// read over to the calls.
    fn poll_deliver(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some((id, msg)) = self.stalled.take() {
            self.start(id, msg, link, cx)?;
        }
        self.calls.flush();
        if self.stalled.is_some() {
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn read_paused(&self, link: &Link) -> bool {
        self.reading_done || self.stalled.is_some() || link.over_high_water()
    }

    fn holding(&self) -> bool {
        self.stalled.is_some()
    }

    fn again(&mut self) -> bool {
        // Room freed by finished calls may let more requests in; a call started may have
        // finished already.
        self.started && !self.reading_done
    }

    fn finish(&mut self, _end: &End, _cx: &mut Context<'_>) {}
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
