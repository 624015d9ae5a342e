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

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tower::BoxError;

use super::calls::{Calls, Outcome};
use super::{PendingRequest, Request};

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

/// Requests of every connection read as a stream, waiting to be taken.
pub(crate) struct Inbox<A> {
    state: Mutex<InboxState<A>>,
    /// Requests waiting, past which connections stop reading.
    capacity: usize,
}

struct InboxState<A> {
    queue: VecDeque<PendingRequest<A>>,
    /// The socket's stream, when it found the queue empty.
    reader: Option<Waker>,
    /// Connections that found the queue full.
    writers: Vec<Waker>,
    /// Room promised to connections and not yet handed back, as requests or unused: it
    /// counts against the capacity, so that all connections together stay within it.
    reserved: usize,
    closed: bool,
}

impl<A> Inbox<A> {
    pub(crate) fn new(capacity: usize) -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                queue: VecDeque::new(),
                reader: None,
                writers: Vec::new(),
                reserved: 0,
                closed: false,
            }),
            capacity: capacity.max(1),
        }
    }

    /// Connection: reserves the room there is for more requests, and says how much; pending
    /// while there is none, an error once the socket is closed. The room is the
    /// connection's until it hands it back with [`push_all`](Self::push_all) or
    /// [`release`](Self::release).
    fn poll_room(&self, cx: &mut Context<'_>) -> Poll<Result<usize, BoxError>> {
        let mut state = lock(&self.state);
        if state.closed {
            return Poll::Ready(Err(Box::new(SocketClosed)));
        }
        let taken = state.queue.len() + state.reserved;
        if taken < self.capacity {
            let room = self.capacity - taken;
            state.reserved += room;
            return Poll::Ready(Ok(room));
        }
        if !state.writers.iter().any(|w| w.will_wake(cx.waker())) {
            state.writers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Connection: hands over `batch`, made in room it had reserved, and gives back
    /// `unused` room, waking the stream if it sleeps and the connections waiting for room
    /// if there is some.
    fn push_all(&self, batch: &mut Vec<PendingRequest<A>>, unused: usize) {
        if batch.is_empty() && unused == 0 {
            return;
        }
        let (reader, writers) = {
            let mut state = lock(&self.state);
            state.reserved = state.reserved.saturating_sub(batch.len() + unused);
            if state.closed {
                drop(state);
                // Dropped, each answers its client with an error.
                batch.clear();
                return;
            }
            let reader = if batch.is_empty() {
                None
            } else {
                state.queue.extend(batch.drain(..));
                state.reader.take()
            };
            let writers = if unused > 0 {
                std::mem::take(&mut state.writers)
            } else {
                Vec::new()
            };
            (reader, writers)
        };
        if let Some(reader) = reader {
            reader.wake();
        }
        for writer in writers {
            writer.wake();
        }
    }

    /// Connection: gives back `room` it had reserved and will not use.
    fn release(&self, room: usize) {
        self.push_all(&mut Vec::new(), room);
    }

    /// Stream: the next request, or `None` once the queue is empty and `cx` registered.
    pub(crate) fn poll_take(&self, cx: &mut Context<'_>) -> Option<PendingRequest<A>> {
        let (next, writers) = {
            let mut state = lock(&self.state);
            let next = state.queue.pop_front();
            if next.is_none() {
                match &state.reader {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.reader = Some(cx.waker().clone()),
                }
            }
            // Room again: the connections that stopped reading go on.
            let writers = if !state.writers.is_empty()
                && state.queue.len() + state.reserved < self.capacity
            {
                std::mem::take(&mut state.writers)
            } else {
                Vec::new()
            };
            (next, writers)
        };
        for writer in writers {
            writer.wake();
        }
        next
    }

    /// Requests waiting to be taken, and connections that stopped reading for lack of room.
    pub(crate) fn stats(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.queue.len(), state.writers.len())
    }

    /// The socket is closed: what waits is answered with an error, and no request is
    /// taken any more.
    pub(crate) fn close(&self) {
        let (queue, writers) = {
            let mut state = lock(&self.state);
            state.closed = true;
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.writers),
            )
        };
        drop(queue);
        for writer in writers {
            writer.wake();
        }
    }
}

/// Where the answers to one connection's requests go.
pub(crate) struct Outbox {
    state: Mutex<OutboxState>,
}

#[derive(Default)]
struct OutboxState {
    /// Answers not yet collected by the connection, by request id.
    ready: Vec<(u64, Outcome)>,
    /// One per request handed out and not yet answered; reused.
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The connection, when it found nothing to collect.
    waker: Option<Waker>,
    /// The connection is gone.
    closed: bool,
}

#[derive(Clone, Copy)]
struct Slot {
    id: u64,
    /// Bumped when the slot is answered or cancelled.
    generation: u32,
    live: bool,
}

/// A request's way back to its connection, held by its [`PendingRequest`].
#[derive(Debug)]
pub(crate) struct Responder {
    outbox: Arc<Outbox>,
    slot: u32,
    generation: u32,
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
            if state.closed {
                return Err(());
            }
            let slot = &mut state.slots[self.slot as usize];
            if !slot.live || slot.generation != self.generation {
                return Err(());
            }
            slot.live = false;
            slot.generation = slot.generation.wrapping_add(1);
            let id = slot.id;
            state.free.push(self.slot);
            state.ready.push((id, outcome));
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Whether nobody waits for the answer: the client cancelled, or the connection is gone.
    pub(crate) fn is_closed(&self) -> bool {
        let state = lock(&self.outbox.state);
        let slot = state.slots[self.slot as usize];
        state.closed || !slot.live || slot.generation != self.generation
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
                state: Mutex::new(OutboxState::default()),
            }),
            batch: Vec::new(),
            running: 0,
            room: 0,
        }
    }
}

impl<A> Drop for Mailbox<A> {
    fn drop(&mut self) {
        {
            let mut state = lock(&self.outbox.state);
            state.closed = true;
            state.ready.clear();
        }
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
        let (slot, generation) = {
            let mut state = lock(&self.outbox.state);
            let slot = match state.free.pop() {
                Some(slot) => slot,
                None => {
                    state.slots.push(Slot {
                        id: 0,
                        generation: 0,
                        live: false,
                    });
                    (state.slots.len() - 1) as u32
                }
            };
            let entry = &mut state.slots[slot as usize];
            entry.id = id;
            entry.live = true;
            (slot, entry.generation)
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
                match &state.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.waker = Some(cx.waker().clone()),
                }
            } else {
                done.append(&mut state.ready);
            }
        }
        self.running -= done.len() - before;
    }

    fn cancel(&mut self, id: u64) -> bool {
        let mut state = lock(&self.outbox.state);
        let Some(i) = state.slots.iter().position(|s| s.live && s.id == id) else {
            return false;
        };
        let slot = &mut state.slots[i];
        slot.live = false;
        slot.generation = slot.generation.wrapping_add(1);
        state.free.push(i as u32);
        drop(state);
        self.running -= 1;
        true
    }

    fn len(&self) -> usize {
        self.running
    }
}
