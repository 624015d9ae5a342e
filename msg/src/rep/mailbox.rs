//! The stream side of a [`RepSocket`](super::RepSocket): requests from every connection
//! wait in one [`Inbox`] for the socket's [`Stream`](futures_core::Stream), and each
//! answer goes straight into its connection's [`Outbox`].
//!
//! No channel, no future and no allocation per request: a connection looks at the shared
//! inbox once per batch of requests (for room, and to hand the batch over), takes its own
//! outbox's lock once per request (to give it a slot) and once per batch of answers; an
//! answer takes that lock once and wakes the connection only if it sleeps. Each request holds a slot in its
//! connection's outbox with a generation, so that an answer to a request the client has
//! since cancelled (or to a connection that is gone) is told apart and goes nowhere.

use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use msg_core::Code;
use tower::BoxError;

use super::calls::{Calls, Failure, Outcome};
use super::{PendingRequest, Request};
use crate::handoff::{wake_all, Handoff, Queue, Weigh};
use crate::slots::{Generation, SlotId, Slots};

/// Locks `mutex`; every step leaves the state consistent, so a panic elsewhere cannot
/// poison it into a wrong one.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The socket is closed: nobody takes requests any more.
#[derive(Debug)]
struct SocketClosed;

impl std::fmt::Display for SocketClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the reply socket was closed")
    }
}

impl std::error::Error for SocketClosed {}

/// The inbox is bounded in requests only.
impl<A> Weigh for PendingRequest<A> {
    fn weight(&self) -> usize {
        0
    }
}

/// Requests of every connection read as a stream, waiting to be taken. Room promised to
/// connections counts against its capacity until it is handed back, as requests or unused,
/// so that all connections together stay within it; connections that found it full wait
/// for room, and the stream, when it found it empty, for requests.
pub(crate) struct Inbox<A> {
    queue: Handoff<PendingRequest<A>>,
}

impl<A> Inbox<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            queue: Handoff::new(capacity.max(1), usize::MAX),
        }
    }

    /// Connection: reserves the room there is for more requests, and says how much; pending
    /// while there is none, an error once the socket is closed. The room is the
    /// connection's until it hands it back with [`push_all`](Self::push_all) or
    /// [`release`](Self::release).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, BoxError>> {
        let mut queue = self.queue.lock();
        if queue.is_closed() {
            return Poll::Ready(Err(Box::new(SocketClosed)));
        }
        match queue.reserve() {
            0 => {
                queue.room.wait(cx.waker());
                Poll::Pending
            }
            room => Poll::Ready(Ok(room)),
        }
    }

    /// Connection: hands over `batch`, made in room it had reserved, and gives back
    /// `unused` room, waking the stream if it sleeps and the connections waiting for room
    /// if there is some.
    fn push_all(&self, batch: &mut Vec<PendingRequest<A>>, unused: usize) {
        if batch.is_empty() && unused == 0 {
            return;
        }
        let mut writers = Vec::new();
        let reader = {
            let mut queue = self.queue.lock();
            queue.unreserve(batch.len() + unused);
            if queue.is_closed() {
                drop(queue);
                // Dropped, each answers its client with an error.
                batch.clear();
                return;
            }
            let reader = queue.push_batch(batch);
            if unused > 0 {
                queue.room.wake_all(&mut writers);
            }
            reader
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        wake_all(writers);
    }

    /// Connection: gives back `room` it had reserved and will not use.
    fn release(&self, room: usize) {
        self.push_all(&mut Vec::new(), room);
    }

    /// Stream: the next request, or `None` once the queue is empty and `cx` registered.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Option<PendingRequest<A>> {
        let mut writers = Vec::new();
        let next = {
            let mut queue = self.queue.lock();
            let next = queue.pop();
            if next.is_none() {
                queue.park(cx.waker());
            }
            // Room again: the connections that stopped reading go on.
            if !queue.room.is_empty() && !queue.is_full() {
                queue.room.wake_all(&mut writers);
            }
            next
        };
        wake_all(writers);
        next
    }

    /// Requests waiting to be taken, and connections that stopped reading for lack of room.
    pub(crate) fn stats(&self) -> (usize, usize) {
        let queue = self.queue.lock();
        (queue.len(), queue.room.len())
    }

    /// The socket is closed: what waits is answered with an error, and no request is
    /// taken any more.
    pub(crate) fn close(&self) {
        let mut wake = Vec::new();
        let left = self.queue.lock().close(&mut wake);
        drop(left);
        wake_all(wake);
    }
}

/// Where the answers to one connection's requests go.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
}

/// An answer for the connection, by request id; bounded by the requests it hands out.
impl Weigh for (u64, Outcome) {
    fn weight(&self) -> usize {
        0
    }
}

struct OutboxState {
    /// Answers not yet collected by the connection, by request id; its consumer is the
    /// connection, when it found nothing to collect. Closed once the connection is gone.
    ready: Queue<(u64, Outcome)>,
    /// One per request handed out and not yet answered, holding its id; reused.
    slots: Slots<u64>,
}

/// A request's way back to its connection, held by its [`PendingRequest`].
#[derive(Debug)]
pub(crate) struct Responder {
    outbox: Arc<Outbox>,
    slot: SlotId,
    generation: Generation,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl Responder {
    /// Sends `outcome` to the client, unless nobody waits for it any more.
    pub(crate) fn send(&self, outcome: Outcome) -> Result<(), ()> {
        let waker = {
            let mut state = lock(&self.outbox.state);
            if state.ready.is_closed() || !state.slots.holds(self.slot, self.generation) {
                return Err(());
            }
            let Some(id) = state.slots.release(self.slot) else {
                return Err(());
            };
            state.ready.push((id, outcome));
            state.ready.wake_consumer()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether nobody waits for the answer: the client cancelled, or the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        let state = lock(&self.outbox.state);
        state.ready.is_closed() || !state.slots.holds(self.slot, self.generation)
    }
}

/// A connection's [`Calls`] when the socket is read as a stream: each request goes to the
/// inbox as a [`PendingRequest`], and its answer comes back through the outbox.
pub(crate) struct Mailbox<A> {
    inbox: Arc<Inbox<A>>,
    outbox: Arc<Outbox>,
    /// Requests started and not yet handed over.
    batch: Vec<PendingRequest<A>>,
    /// Requests handed out and neither answered nor cancelled.
    running: usize,
    /// Requests that may still start before the inbox is asked again: room reserved in it
    /// for this connection, so that a batch costs one look at the shared inbox, not one a
    /// request. What is left of it goes back with the batch.
    room: usize,
}

impl<A> Mailbox<A> {
    pub(crate) fn new(inbox: Arc<Inbox<A>>) -> Self {
        Mailbox {
            inbox,
            outbox: Arc::new(Outbox {
                state: Mutex::new(OutboxState {
                    ready: Queue::unbounded(),
                    slots: Slots::unbounded(),
                }),
            }),
            batch: Vec::new(),
            running: 0,
            room: 0,
        }
    }
}

impl<A> Drop for Mailbox<A> {
    fn drop(&mut self) {
        // The connection is gone: nobody is left to wake, and answers not collected go.
        let left = lock(&self.outbox.state).ready.close(&mut Vec::new());
        drop(left);
        // The room of the requests never handed over, and the rest, goes back.
        self.inbox.release(self.batch.len() + self.room);
    }
}

impl<A> Calls<A> for Mailbox<A> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.room > 0 {
            return Poll::Ready(Ok(()));
        }
        match self.inbox.poll_room(cx) {
            Poll::Pending => {
                // Hand over what is held, so the stream can make room.
                self.flush();
                Poll::Pending
            }
            Poll::Ready(Ok(room)) => {
                self.room = room;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        }
    }

    fn start(&mut self, id: u64, request: Request<A>, _cx: &mut Context<'_>) -> Option<Outcome> {
        let Some((slot, generation)) = lock(&self.outbox.state).slots.reserve(id) else {
            // As many requests as slots' indexes are running: refused like any other.
            return Some(Err(Failure::new(Code::ResourceExhausted, "too many calls")));
        };
        self.running += 1;
        self.room = self.room.saturating_sub(1);
        self.batch.push(PendingRequest {
            request,
            responder: Some(Responder {
                outbox: self.outbox.clone(),
                slot,
                generation,
            }),
        });
        None
    }

    fn flush(&mut self) {
        self.inbox
            .push_all(&mut self.batch, std::mem::take(&mut self.room));
    }

    fn poll_finished(&mut self, cx: &mut Context<'_>, done: &mut Vec<(u64, Outcome)>) {
        let before = done.len();
        {
            let mut state = lock(&self.outbox.state);
            if state.ready.is_empty() {
                state.ready.park(cx.waker());
            } else {
                state.ready.take_into(usize::MAX, done);
            }
        }
        self.running -= done.len() - before;
    }

    fn cancel(&mut self, id: u64) -> bool {
        let mut state = lock(&self.outbox.state);
        let Some(slot) = state.slots.find(|running| *running == id) else {
            return false;
        };
        state.slots.release(slot);
        drop(state);
        self.running -= 1;
        true
    }

    fn len(&self) -> usize {
        self.running
    }
}
