//! One server connection: reads requests, calls the service, writes replies by id.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use msg_core::{Encoding, Frame, FrameKind, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tower::{BoxError, Service};

use super::Request;
use crate::error::frame_refused;
use crate::events::{EventSink, SocketEvent};
use crate::io::{into_message, FramedIo};
use crate::Error;
use msg_layers::compression::{Codec, Decoders};

/// Stop reading new requests while this many reply bytes wait for a peer that is not
/// reading them.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// Spare call boxes kept for reuse.
const SPARE_CALLS: usize = 64;
/// Rounds of polling the running calls in one wake-up while they keep waking each other.
const CALL_ROUNDS: usize = 4;

/// The waker the running calls see.
///
/// It passes their wake-ups on to the connection's task, except while the task is polling
/// them itself. `FuturesUnordered` wakes its parent to ask for another poll when it has
/// polled every call without one finishing, as it does with each batch of calls that wait
/// on something. To tokio that is a yield: the task goes to the back of the queue and
/// another worker is woken to take it, which then sleeps in the I/O driver and makes every
/// later readiness event a cross-CPU wake-up. Those wake-ups are noted instead, and the
/// calls polled again at once.
struct CallsWaker {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for CallsWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first, so that a poll ending now sees it, or the task is woken.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// One handler call, tagged with the id of its request. It lives in a box that outlasts
    /// it: once the call finishes, the box is empty and can carry the next one.
    struct Call<F> {
        #[pin]
        fut: Option<F>,
        id: u64,
        // The waker of the last poll that left the call pending: a cancellation wakes it,
        // so that the set of running calls polls the emptied call and lets it go.
        waker: Option<Waker>,
    }
}

impl<F: Future> Call<F> {
    fn boxed() -> Pin<Box<Self>> {
        Box::pin(Call {
            fut: None,
            id: 0,
            waker: None,
        })
    }

    /// Puts a new call in an empty box.
    fn start(self: Pin<&mut Self>, id: u64, fut: F) {
        let mut this = self.project();
        this.fut.set(Some(fut));
        *this.id = id;
    }

    /// Drops the handler's future if this is the call of request `id`; the call then
    /// finishes without a reply. Returns whether it was.
    fn cancel(self: Pin<&mut Self>, id: u64) -> bool {
        let mut this = self.project();
        if *this.id != id || this.fut.is_none() {
            return false;
        }
        this.fut.set(None);
        if let Some(waker) = this.waker.take() {
            waker.wake();
        }
        true
    }
}

impl<F: Future> Future for Call<F> {
    /// The request id and the handler's outcome; `None` for a cancelled call.
    type Output = Option<(u64, F::Output)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            *this.waker = None;
            return Poll::Ready(None);
        };
        match fut.poll(cx) {
            Poll::Ready(out) => {
                this.fut.set(None);
                *this.waker = None;
                Poll::Ready(Some((*this.id, out)))
            }
            Poll::Pending => {
                match this.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *this.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// How a server connection decodes requests and encodes responses.
#[derive(Clone, Debug)]
pub(crate) struct Coding {
    pub(crate) decoders: Decoders,
    /// Compresses responses, if set.
    pub(crate) codec: Option<Codec>,
    /// The most a request may inflate to: the frame limit.
    pub(crate) limit: usize,
}

/// Serves one connection until the peer closes it, it breaks the protocol, or a graceful
/// shutdown has drained it.
///
/// A fixed pair of steps per wake-up: every complete request in the read buffer is handed to
/// the service, every finished call is queued as a reply, and all queued replies leave in
/// one write. Calls run concurrently inside this one task; none gets a task of its own.
pub(crate) struct Connection<Io, S: Service<Request<A>>, A> {
    io: FramedIo<Io>,
    service: S,
    peer: A,
    /// Calls that did not finish when first polled.
    calls: FuturesUnordered<Pin<Box<Call<S::Future>>>>,
    /// Empty call boxes: a call that finishes at once costs no allocation.
    spare: Vec<Pin<Box<Call<S::Future>>>>,
    /// What the running calls wake, and the same as a [`Waker`].
    calls_waker: Arc<CallsWaker>,
    calls_waker_handle: Waker,
    /// A request read while the service was not ready.
    stalled: Option<Frame>,
    coding: Coding,
    max_in_flight: usize,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// No more requests will be read: the peer closed, or shutdown began.
    reading_done: bool,
}

impl<Io, S, A, R> Connection<Io, S, A>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    S: Service<Request<A>, Response = R>,
    S::Error: Into<BoxError>,
    R: Into<Message>,
    A: Clone + std::fmt::Display,
{
    pub(crate) fn new(
        io: FramedIo<Io>,
        service: S,
        peer: A,
        max_in_flight: usize,
        coding: Coding,
        shutdown: Option<WaitForCancellationFutureOwned>,
    ) -> Self {
        let calls_waker = Arc::new(CallsWaker {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        Connection {
            io,
            service,
            peer,
            calls: FuturesUnordered::new(),
            spare: Vec::new(),
            calls_waker: calls_waker.clone(),
            calls_waker_handle: Waker::from(calls_waker),
            stalled: None,
            coding,
            max_in_flight: max_in_flight.max(1),
            shutdown: shutdown.map(Box::pin),
            reading_done: false,
        }
    }

    /// Step: stops reading once shutdown is signalled; calls in flight still finish.
    fn watch_shutdown(&mut self, cx: &mut Context<'_>) {
        if let Some(signal) = self.shutdown.as_mut() {
            if signal.as_mut().poll(cx).is_ready() {
                self.shutdown = None;
                self.reading_done = true;
                self.stalled = None;
            }
        }
    }

    /// Step: hands every readable request to the service, while it is ready and there is
    /// room, and drops the calls the client cancels. Returns whether any call started or
    /// was cancelled.
    ///
    /// At the in-flight limit, frames are still read up to the next request, so that the
    /// client's cancellations and pings ahead of it are seen: a client whose requests all
    /// hang can still cancel them.
    fn read_requests(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        let mut progress = false;
        while !self.reading_done && self.io.queued_len() < WRITE_HIGH_WATER {
            let frame = match self.stalled.take() {
                Some(frame) => frame,
                None => match self.io.poll_read(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Ok(Some(frame))) => frame,
                    Poll::Ready(Ok(None)) => {
                        self.reading_done = true;
                        break;
                    }
                    Poll::Ready(Err(e)) => return Err(e.into()),
                },
            };
            match frame.kind {
                FrameKind::Request => {}
                FrameKind::Cancel => {
                    progress |= self.cancel(frame.id);
                    continue;
                }
                kind => return Err(Error::UnexpectedFrame { kind }),
            }
            if self.calls.len() >= self.max_in_flight {
                self.stalled = Some(frame);
                break;
            }
            match self.service.poll_ready(cx) {
                Poll::Pending => {
                    self.stalled = Some(frame);
                    break;
                }
                Poll::Ready(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::warn!(peer = %self.peer, error = %e, "service failed; closing connection");
                    return Err(Error::ConnectionClosed);
                }
                Poll::Ready(Ok(())) => {}
            }
            let id = frame.id;
            let mut msg = into_message(frame);
            if !msg.encoding().is_identity() {
                match self.coding.decoders.decode(msg, self.coding.limit) {
                    Ok(plain) => msg = plain,
                    Err(e) => {
                        // Only this request is lost: the client gets the reason.
                        let e = crate::error::undecodable(e);
                        tracing::info!(peer = %self.peer, id, error = %e, "request not decoded");
                        self.queue_error(id, Bytes::from(format!("{e}: {}", error_chain(&e))));
                        progress = true;
                        continue;
                    }
                }
            }
            let request = Request::new(msg, self.peer.clone());
            let mut call = self.spare.pop().unwrap_or_else(Call::boxed);
            call.as_mut().start(id, self.service.call(request));
            // Most handlers answer at once: those never enter the set of running calls.
            match call.as_mut().poll(cx) {
                Poll::Ready(done) => {
                    if let Some((id, result)) = done {
                        self.queue_reply(id, result);
                    }
                    if self.spare.len() < SPARE_CALLS {
                        self.spare.push(call);
                    }
                }
                Poll::Pending => self.calls.push(call),
            }
            progress = true;
        }
        Ok(progress)
    }

    /// Drops the running call of request `id`, if there is one: the client gave up on it.
    fn cancel(&mut self, id: u64) -> bool {
        let cancelled = self.calls.iter_mut().any(|call| call.as_mut().cancel(id));
        if cancelled {
            tracing::trace!(peer = %self.peer, id, "request cancelled by the client");
        }
        cancelled
    }

    /// Step: queues the reply of every call that has finished.
    fn reply_finished(&mut self, cx: &mut Context<'_>) {
        if self.calls.is_empty() {
            return;
        }
        self.calls_waker.task.register(cx.waker());
        let waker = self.calls_waker_handle.clone();
        let mut calls_cx = Context::from_waker(&waker);
        for _ in 0..CALL_ROUNDS {
            self.calls_waker.woken.store(false, Ordering::SeqCst);
            self.calls_waker.polling.store(true, Ordering::SeqCst);
            while let Poll::Ready(Some(done)) = self.calls.poll_next_unpin(&mut calls_cx) {
                if let Some((id, result)) = done {
                    self.queue_reply(id, result);
                }
            }
            self.calls_waker.polling.store(false, Ordering::SeqCst);
            if !self.calls_waker.woken.load(Ordering::SeqCst) {
                return;
            }
        }
        // The calls keep waking one another: let other tasks run first.
        cx.waker().wake_by_ref();
    }

    /// Queues the reply to request `id`: the response, or an error frame.
    fn queue_reply(&mut self, id: u64, result: Result<R, S::Error>) {
        let queued = match result {
            Ok(reply) => {
                let mut reply: Message = reply.into();
                if let Some(codec) = &self.coding.codec {
                    reply = codec.compress(reply);
                }
                self.io
                    .queue(FrameKind::Response, reply.encoding(), id, reply.payload())
                    .map_err(|e| frame_refused(e).to_string())
            }
            Err(e) => Err(e.into().to_string()),
        };
        if let Err(message) = queued {
            self.queue_error(id, Bytes::from(message));
        }
    }

    /// Serves the connection to its end.
    /// Queues an error-response to request `id`.
    fn queue_error(&mut self, id: u64, payload: Bytes) {
        // An error message always fits: it is far below any sane frame limit, and one that
        // does not is cut to what does.
        if self
            .io
            .queue(FrameKind::ErrorResponse, Encoding::IDENTITY, id, &payload)
            .is_err()
        {
            let _ = self.io.queue(
                FrameKind::ErrorResponse,
                Encoding::IDENTITY,
                id,
                &Bytes::from_static(b"error"),
            );
        }
    }

    /// Serves the connection to its end, and reports the end as an event.
    pub(crate) async fn run(mut self, events: Arc<EventSink<A>>)
    where
        A: Send + 'static,
    {
        let end = std::future::poll_fn(|cx| self.poll_run(cx)).await;
        match &end {
            Error::ConnectionClosed | Error::Closed => {
                tracing::debug!(peer = %self.peer, "connection closed")
            }
            e => tracing::info!(peer = %self.peer, error = %e, "connection closed"),
        }
        metrics::counter!("msg_disconnections_total", "socket" => "rep").increment(1);
        let peer = self.peer.clone();
        events.emit(|| SocketEvent::Disconnected {
            peer,
            error: Arc::new(end),
        });
    }

    /// Serves until the connection ends; the error says how (`ConnectionClosed` for a
    /// client that left, `Closed` for a graceful shutdown).
    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Error> {
        let this = self;
        this.watch_shutdown(cx);
        loop {
            if let Err(e) = this.io.poll_liveness(cx, this.stalled.is_some()) {
                return Poll::Ready(e);
            }
            let started = match this.read_requests(cx) {
                Ok(started) => started,
                Err(e) => return Poll::Ready(e),
            };
            let before = this.calls.len();
            this.reply_finished(cx);
            let finished = before != this.calls.len();
            // Reading stops while the replies waiting to be written are over the high-water
            // mark; a flush that takes them under it must lead to another read, or nothing
            // would wake this task again.
            let was_full = this.io.queued_len() >= WRITE_HIGH_WATER;
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                return Poll::Ready(Error::Io(e));
            }
            let drained = was_full && this.io.queued_len() < WRITE_HIGH_WATER;
            if this.reading_done && this.calls.is_empty() && this.io.queued_len() == 0 {
                let _ = this.io.poll_close(cx);
                return Poll::Ready(if this.io.at_eof() {
                    Error::ConnectionClosed
                } else {
                    Error::Closed
                });
            }
            // Room freed by finished calls may let more requests in; otherwise every step
            // is waiting on a registered waker.
            if !(finished || started || drained) || this.reading_done {
                return Poll::Pending;
            }
        }
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
