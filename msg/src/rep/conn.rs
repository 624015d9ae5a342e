//! One server connection: reads requests, calls the service, writes replies by id.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg_core::proto::{Incoming, Link, Replier};
use msg_core::{Code, Encoding, Frame, FrameKind, Message, SocketType};
use msg_layers::compression::DecompressError;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::calls::{Calls, Failure, Outcome};
use super::Request;
use crate::dial::End;
use crate::driver::{Driver, Ending, Endpoint};
use crate::events::{EventSink, SocketEvent};
use crate::io::FramedIo;
use crate::limits::Hits;
use crate::Error;
use msg_layers::compression::{Codec, Decoders};

/// How many times the frame limit a request over it may be and still be passed over, the
/// connection going on: skipping costs reading the body, and a length past this (a corrupt
/// or hostile prefix up to 4 GiB) is cheaper to answer and close on.
const SKIPPED_PER_LIMIT: usize = 4;

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
    /// Codec work on the blocking pool: long requests being decoded before their calls
    /// start, long replies being compressed. Counted with the calls against the in-flight
    /// limit.
    offloaded: FuturesUnordered<Offloaded>,
    coding: Coding,
    max_in_flight: usize,
    /// The `in_flight` limit's counter, hit by every request held at the limit.
    in_flight: Hits,
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
        let mut io = io;
        // A request over the frame limit costs the client that request, answered with an
        // error, not the connection; but for one so long that passing over it would cost
        // more than the connection is worth.
        let skip_up_to = io.link.max_frame_len().saturating_mul(SKIPPED_PER_LIMIT);
        io.link.skip_oversized(FrameKind::Request, skip_up_to);
        Connection {
            io,
            endpoint: RepEndpoint {
                role: Replier::new(),
                calls,
                peer,
                finished: Vec::new(),
                stalled: None,
                offloaded: FuturesUnordered::new(),
                coding,
                max_in_flight: max_in_flight.max(1),
                in_flight: Hits::new(crate::limits::IN_FLIGHT),
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
        events.emit(|| SocketEvent::Disconnected { peer, error: end });
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
                // A request held for room is dropped, unless it was started already (it
                // was decoded on the blocking pool): the go-away promises it.
                let last = self.last_started;
                self.stalled = self.stalled.take().filter(|(id, _)| *id <= last);
                self.role.go_away(self.last_started, link);
            }
        }
    }

    /// Starts request `id`, if the calls have room and are ready and the replies are
    /// under the write high-water mark; otherwise holds it. Held at the in-flight limit or
    /// over the mark, frames are still read up to the next request, so that the client's
    /// cancellations and pings ahead of it are seen: a client whose requests all hang, or
    /// who leaves replies unread, can still cancel.
    fn start(
        &mut self,
        id: u64,
        msg: Message,
        link: &mut Link,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        // At the in-flight limit, or with replies the client leaves unread over the write
        // high-water mark, no new call starts; the frames before this request (its
        // cancels, its pings) were read.
        let at_limit = self.calls.len() + self.offloaded.len() >= self.max_in_flight;
        if at_limit || link.over_high_water() {
            if at_limit {
                self.in_flight.hit();
            }
            self.stalled = Some((id, msg));
            return Ok(());
        }
        if crate::offload::decode_offloaded(&msg) {
            // A long request is decoded on the blocking pool, while this connection goes on
            // reading, cancelling and answering pings; its call starts once it is decoded
            // (in `poll_offloaded`). It counts as started for a go-away.
            self.started = true;
            self.last_started = self.last_started.max(id);
            let encoding = msg.encoding();
            let job = crate::offload::spawn_decode(&self.coding.decoders, msg, self.coding.limit);
            self.offloaded
                .push(Offloaded::new(id, Work::Decode(encoding, job)));
            return Ok(());
        }
        self.call(id, msg, link, cx)
    }

    /// Calls request `id`, decoded inline if it is encoded, if the calls are ready;
    /// otherwise holds it.
    fn call(
        &mut self,
        id: u64,
        msg: Message,
        link: &mut Link,
        cx: &mut Context<'_>,
    ) -> Result<(), Error> {
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
        let msg = match self.coding.decoders.decode(msg, self.coding.limit) {
            Ok(plain) => plain,
            Err(e) => {
                self.undecodable(id, e, link);
                return Ok(());
            }
        };
        let request = Request::new(msg, self.peer.clone());
        if let Some(outcome) = self.calls.start(id, request, cx) {
            self.queue_reply(id, outcome, link);
        }
        Ok(())
    }

    /// Request `id` could not be decoded: only it is lost, and the client gets the reason.
    fn undecodable(&mut self, id: u64, e: DecompressError, link: &mut Link) {
        let e = crate::error::undecodable(e);
        tracing::info!(peer = %self.peer, id, error = %e, "request not decoded");
        let text = Bytes::from(format!("{e}: {}", error_chain(&e)));
        self.role.fail(id, Code::InvalidArgument, &text, link);
    }

    /// Step: takes the codec work the blocking pool has finished: starts the calls of the
    /// requests decoded, and queues the replies compressed. Work for requests the client
    /// cancelled meanwhile is dropped. Stops while a request is held for room. Returns
    /// whether any finished.
    fn poll_offloaded(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut any = false;
        while self.stalled.is_none() {
            let Poll::Ready(Some((id, done))) = self.offloaded.poll_next_unpin(cx) else {
                break;
            };
            any = true;
            match done {
                None => tracing::trace!(peer = %self.peer, id, "cancelled during codec work"),
                Some(Done::Decoded(Ok(msg))) => self.call(id, msg, link, cx)?,
                Some(Done::Decoded(Err(e))) => self.undecodable(id, e, link),
                Some(Done::Compressed(reply)) => self.respond(id, reply, link),
                Some(Done::Failed(failure)) => self.fail(id, failure, link),
            }
        }
        Ok(any)
    }

    /// Drops the running call of request `id`, if there is one: the client gave up on it.
    fn cancel(&mut self, id: u64) {
        let cancelled = self.calls.cancel(id)
            || self
                .offloaded
                .iter_mut()
                .find(|job| job.id == id)
                .is_some_and(Offloaded::cancel);
        if cancelled {
            self.started = true;
            tracing::trace!(peer = %self.peer, id, "request cancelled by the client");
        }
    }

    /// Queues the reply to request `id`: the response, or an error frame.
    fn queue_reply(&mut self, id: u64, outcome: Outcome, link: &mut Link) {
        let mut reply = match outcome {
            Ok(reply) => reply,
            Err(failure) => return self.fail(id, failure, link),
        };
        if let Some(codec) = &self.coding.codec {
            if crate::offload::compress_offloaded(codec, &reply) {
                // Compressed on the blocking pool; the reply leaves when it is done (in
                // `poll_offloaded`).
                let job = crate::offload::spawn_compress(codec, reply);
                self.offloaded.push(Offloaded::new(id, Work::Compress(job)));
                return;
            }
            reply = codec.compress(reply);
        }
        self.respond(id, reply, link);
    }

    /// Queues `reply`, ready to leave, as the response to request `id`.
    fn respond(&mut self, id: u64, reply: Message, link: &mut Link) {
        if let Err(e) = self.role.respond(id, &reply, link) {
            self.fail(id, Failure::reply_refused(e), link);
        }
    }

    /// Queues the error frame of request `id`.
    fn fail(&mut self, id: u64, failure: Failure, link: &mut Link) {
        self.role
            .fail(id, failure.code, &Bytes::from(failure.message), link);
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
        let offloaded = self.poll_offloaded(link, cx)?;
        Ok(before != self.calls.len() || offloaded)
    }

    fn poll_end(&mut self, link: &Link, _cx: &mut Context<'_>) -> Option<Ending> {
        // Reading is done only for a graceful shutdown: the end of the peer's stream
        // ends the connection at once (in `receive`).
        let idle = self.calls.len() == 0 && self.offloaded.is_empty();
        (self.reading_done && idle && link.queued_len() == 0).then_some(Ending::Graceful)
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

    /// Reading pauses at a request held for room (the in-flight limit, or replies over
    /// the write high-water mark), once the frames before it are read.
    fn read_paused(&self, _link: &Link) -> bool {
        self.reading_done || self.stalled.is_some()
    }

    fn holding(&self) -> bool {
        self.stalled.is_some()
    }

    fn again(&mut self) -> bool {
        // Room freed by finished calls may let more requests in; a call started may have
        // finished already.
        self.started && !self.reading_done
    }

    /// A request over the frame limit: answered at once with an error that names the
    /// limit ([`Code::ResourceExhausted`]). Skipped unread, the connection goes on; too
    /// long to skip, nothing more is read: a go-away tells the client that no later request
    /// is processed, and the connection closes once the calls running have finished.
    fn oversized(
        &mut self,
        id: u64,
        len: u64,
        max: usize,
        skipped: bool,
        link: &mut Link,
    ) -> Result<(), Error> {
        crate::limits::hit(crate::limits::FRAME_LEN);
        // Answered, so processed as far as a go-away is concerned.
        self.last_started = self.last_started.max(id);
        let text = format!(
            "request of {len} bytes exceeds the server's frame limit of {max} bytes; not processed"
        );
        self.role
            .fail(id, Code::ResourceExhausted, &Bytes::from(text), link);
        if skipped {
            tracing::info!(peer = %self.peer, id, len, max, "request over the frame limit; answered with an error and skipped");
        } else {
            tracing::info!(peer = %self.peer, id, len, max, "request far over the frame limit; answered with an error, closing");
            self.shutdown = None;
            self.reading_done = true;
            self.role.go_away(self.last_started, link);
        }
        Ok(())
    }

    fn finish(&mut self, _end: &End, _cx: &mut Context<'_>) {}
}

/// Codec work of one request on the blocking pool.
struct Offloaded {
    id: u64,
    work: Work,
    /// The client cancelled the request meanwhile: the work's outcome is dropped.
    cancelled: bool,
}

enum Work {
    /// Decoding the request, of this encoding, before its call starts.
    Decode(Encoding, JoinHandle<Result<Message, DecompressError>>),
    /// Compressing its reply.
    Compress(JoinHandle<Message>),
}

/// Finished codec work.
enum Done {
    Decoded(Result<Message, DecompressError>),
    Compressed(Message),
    Failed(Failure),
}

impl Offloaded {
    fn new(id: u64, work: Work) -> Self {
        Offloaded {
            id,
            work,
            cancelled: false,
        }
    }

    /// The client cancelled the request: work not begun never runs, work running is
    /// dropped when done. Returns whether this cancelled anything.
    fn cancel(&mut self) -> bool {
        if std::mem::replace(&mut self.cancelled, true) {
            return false;
        }
        match &self.work {
            Work::Decode(_, job) => job.abort(),
            Work::Compress(job) => job.abort(),
        }
        true
    }
}

impl Future for Offloaded {
    /// The request's id, and the outcome; `None` for a cancelled request.
    type Output = (u64, Option<Done>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let done = match &mut self.work {
            Work::Decode(encoding, job) => {
                let encoding = *encoding;
                Done::Decoded(crate::offload::joined(
                    encoding,
                    std::task::ready!(Pin::new(job).poll(cx)),
                ))
            }
            Work::Compress(job) => match std::task::ready!(Pin::new(job).poll(cx)) {
                Ok(reply) => Done::Compressed(reply),
                // The codec panicked, with the reply: the client hears of it.
                Err(e) => Done::Failed(Failure::new(
                    Code::Internal,
                    format!("compressing the reply failed: {e}"),
                )),
            },
        };
        Poll::Ready((self.id, (!self.cancelled).then_some(done)))
    }
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
