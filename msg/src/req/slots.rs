//! [`SlotTable`]: what a [`ReqSocket`](super::ReqSocket)'s handles, its connection driver
//! and its reconnect supervisor share.
//!
//! Every request in flight holds a slot in a table under one lock. A handle reserves a slot
//! (that is the in-flight limit), queues its message for the driver and then waits on the
//! slot; the driver writes the queue out, and fills the slot when the reply comes. No
//! channel, semaphore or allocation per request: the caller takes the lock once, to reserve
//! a slot and queue, and the driver once per batch of writes and once per batch of
//! replies. The driver only swaps buffers under the lock.
//!
//! A reply is handed over outside the table's lock, in the slot's [`Cell`], which only the
//! driver and that slot's caller touch: callers spread over many cores do not meet at the
//! table's lock to collect their replies. A slot whose reply was collected is freed by the
//! next holder of the lock (the driver takes it for every batch), or at once by the caller
//! when another caller waits for a slot.
//!
//! Each request made in a slot gets a generation, so that a reply or a cancellation meant
//! for an earlier request in the same slot is told apart. The table outlives connections.
//! When one is lost, the requests on its wire fail at once and the queue waits for the next
//! connection, swept of requests that waited longer than the socket's `reconnect_wait`. A
//! caller that gives up on a queued request takes it out of the queue; one that gives up on
//! a request on the wire frees its slot at once and leaves (slot, generation) for the driver
//! to cancel on the wire; a late reply finds a newer generation in the slot and is dropped.
//!
//! None of this spends tokio's cooperative budget. A caller with many requests in flight
//! in one task (a `FuturesUnordered`, say) would otherwise run out of budget on every
//! batch, and each forced yield wakes another worker to steal the task: a cross-thread
//! hand-off per batch that costs more than the batch itself.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

use msg_core::Message;
use msg_layers::compression::Decoders;
use tokio_util::sync::CancellationToken;

use crate::counters::ErrorCounters;
pub(crate) use crate::handoff::Ticket;
use crate::handoff::{park, wake_all, Line, Queue, Weigh};
use crate::limits::Hits;
use crate::slots::Slots;
pub(crate) use crate::slots::{Generation, SlotId};
use crate::Error;

/// What a request resolves to.
pub(crate) type Reply = Result<Message, Error>;

/// What a held slot holds: the request's state. The caller's waker and the reply are in
/// the slot's [`Cell`].
#[derive(Debug)]
enum Slot {
    /// Held for a request not yet made ([`tower::Service::poll_ready`] reserved it).
    Reserved,
    /// The request is queued or on the wire.
    Waiting,
    /// The reply is in the slot's cell; the slot is freed once its caller has taken it.
    Delivered,
}

/// Where one slot's reply is handed to its caller: the driver puts the reply in and takes
/// the caller's waker out; the caller takes the reply, or leaves its waker. Aligned to a
/// cache line of its own, so that callers on different cores do not share one.
#[repr(align(64))]
#[derive(Default)]
struct Cell {
    mail: Mutex<Mail>,
    /// The caller has taken the reply: the slot can be freed.
    collected: AtomicBool,
}

#[derive(Default)]
struct Mail {
    reply: Option<Reply>,
    waker: Option<Waker>,
}

impl Cell {
    fn mail(&self) -> MutexGuard<'_, Mail> {
        // Nothing panics while the lock is held.
        self.mail.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The slots' cells, reached by slot id without the table's lock: chunks of
/// `FIRST_CHUNK`, then twice as many, and so on, as many as `max` slots need (8 for the
/// default 1,024), each made the first time a slot in it is, and never moved or freed
/// while the table lives.
struct Cells {
    chunks: Box<[OnceLock<Box<[Cell]>>]>,
}

/// Cells in the first chunk.
const FIRST_CHUNK: usize = 8;

impl Cells {
    /// Room for the cells of `max` slots.
    fn new(max: usize) -> Self {
        let last = SlotId::try_from(max.max(1) - 1).unwrap_or(SlotId::MAX);
        Cells {
            chunks: (0..=Self::locate(last).0)
                .map(|_| OnceLock::new())
                .collect(),
        }
    }

    /// The chunk holding slot `id`'s cell, and the cell's place in it.
    fn locate(id: SlotId) -> (usize, usize) {
        let chunk = (id as usize / FIRST_CHUNK + 1).ilog2() as usize;
        (chunk, id as usize - FIRST_CHUNK * ((1 << chunk) - 1))
    }

    /// Slot `id`'s cell, made if it is not yet.
    fn make(&self, id: SlotId) -> &Cell {
        let (chunk, at) = Self::locate(id);
        let cells = self.chunks[chunk]
            .get_or_init(|| (0..FIRST_CHUNK << chunk).map(|_| Cell::default()).collect());
        &cells[at]
    }

    /// Slot `id`'s cell, if a request has been made in that slot.
    fn get(&self, id: SlotId) -> Option<&Cell> {
        let (chunk, at) = Self::locate(id);
        self.chunks.get(chunk)?.get()?.get(at)
    }
}

/// Replies the driver has matched and not yet delivered, with a buffer for their callers'
/// wakers; both are kept from batch to batch, so that delivering allocates nothing.
#[derive(Default)]
pub(crate) struct Completions {
    replies: Vec<(SlotId, Generation, Reply)>,
    wakers: Vec<Waker>,
}

impl Completions {
    /// Adds the reply for request `generation` of slot `id`.
    pub(crate) fn push(&mut self, id: SlotId, generation: Generation, reply: Reply) {
        self.replies.push((id, generation, reply));
    }
}

/// Sweeps run per `reconnect_wait` while a request socket is disconnected. A queued request
/// fails at the first sweep after it has seen this many, so it waits between
/// `reconnect_wait` and `reconnect_wait` plus one sweep's period, whatever the phase of
/// the sweeps when it was queued.
pub(crate) const SWEEPS_PER_WAIT: u32 = 8;

/// A request waiting for the driver; failed by the sweep after it has seen
/// [`SWEEPS_PER_WAIT`].
pub(crate) struct Queued {
    pub(crate) slot: SlotId,
    pub(crate) generation: Generation,
    pub(crate) msg: Message,
    /// Sent by a caller awaiting its reply (`request`), not through `Service::call`.
    pub(crate) awaited: bool,
    /// Sweeps seen while queued.
    sweeps: u32,
}

impl Weigh for Queued {
    /// The queue is bounded by the slots, not in bytes.
    fn weight(&self) -> usize {
        0
    }
}

/// Whether the socket takes new requests, as the driver sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Yes.
    Open,
    /// No: it is closing, and the driver closes once what is in flight is done.
    Closing,
    /// No, and what is in flight fails now: the linger is over, or redialing gave up.
    Stopped,
}

/// What the driver takes from the table in one go.
#[derive(Default)]
pub(crate) struct Batch {
    /// Requests to write.
    pub(crate) requests: VecDeque<Queued>,
    /// Requests on the wire to cancel.
    pub(crate) cancels: Vec<(SlotId, Generation)>,
    /// Replies delivered that their callers have not yet taken: those callers are about to
    /// run, and many will send again.
    pub(crate) callers_pending: bool,
}

/// The table and queue behind the lock.
struct State {
    slots: Slots<Slot>,
    /// Requests for the driver to send, in order; its consumer is the driver, when it found
    /// nothing to do and went to sleep.
    queue: Queue<Queued>,
    /// Requests given up while on the wire, for the driver to cancel.
    cancels: Vec<(SlotId, Generation)>,
    /// Handles waiting for a free slot, first come first served, and the slots handed to
    /// them that they have not yet come for.
    waiters: Line<SlotId>,
    /// A driver is serving a connection.
    connected: bool,
    /// No new request is taken: the socket is closing. The driver finishes what is in
    /// flight or queued, then closes.
    closing: bool,
    /// The socket has stopped for good; every request fails with this.
    stopped: Option<Error>,
    /// Why the last dial since the last connection failed, for the requests that time out
    /// waiting for one.
    last_dial: Option<Arc<Error>>,
    /// Replies dropped because their request had been given up.
    late: u64,
    /// Slots whose reply has come, not yet freed: taken by their caller or not.
    delivered: Vec<SlotId>,
    /// One endpoint of several (a balancer chooses among them): a request is never kept
    /// waiting for this one's connection, since another may be up. Requests queued when
    /// the connection goes, or made while it is down, fail at once with
    /// [`Error::NotConnected`], which a retry sends elsewhere.
    balanced: bool,
    /// The balancer's wait for this endpoint's connection.
    on_connect: Option<Waker>,
}

impl State {
    /// Frees slot `id`: hands it to the first waiting handle, if any, so that the wake-up
    /// cannot be lost even if that handle never comes back for it.
    fn release(&mut self, id: SlotId, wake: &mut Vec<Waker>) {
        match self.waiters.grant(id) {
            Ok(waker) => {
                self.slots.reissue(id, Slot::Reserved);
                wake.push(waker);
            }
            Err(id) => {
                self.slots.release(id);
            }
        }
    }

    /// Fills slot `id` with `reply` if it still waits for request `generation`; anything
    /// else is a late reply and is dropped.
    fn fill(
        &mut self,
        cells: &Cells,
        id: SlotId,
        generation: Generation,
        reply: Reply,
        wake: &mut Vec<Waker>,
    ) {
        match self.slots.get(id, generation) {
            Some(slot @ Slot::Waiting) => {
                *slot = Slot::Delivered;
                self.delivered.push(id);
                let mut mail = cells.make(id).mail();
                mail.reply = Some(reply);
                wake.extend(mail.waker.take());
            }
            _ => self.late += 1,
        }
    }

    /// Frees the delivered slots whose callers have taken their replies.
    fn reclaim(&mut self, cells: &Cells, wake: &mut Vec<Waker>) {
        let mut i = 0;
        while let Some(&id) = self.delivered.get(i) {
            let cell = cells.make(id);
            if cell.collected.load(Ordering::SeqCst) {
                // Empty again for the slot's next request.
                cell.collected.store(false, Ordering::Relaxed);
                self.delivered.swap_remove(i);
                self.release(id, wake);
            } else {
                i += 1;
            }
        }
    }

    /// Fails every queued request with [`Error::NotConnected`]: they never left, and a
    /// retry may send them to another endpoint.
    fn fail_queued(&mut self, cells: &Cells, wake: &mut Vec<Waker>) {
        let last = self.last_dial.clone();
        for queued in self.queue.drain() {
            let error = Error::NotConnected { last: last.clone() };
            self.fill(cells, queued.slot, queued.generation, Err(error), wake);
        }
    }

    /// Why a new request cannot be taken, if it cannot.
    fn refusal(&self) -> Option<Error> {
        match &self.stopped {
            Some(error) => Some(error.clone()),
            None if self.closing => Some(Error::Closed),
            None => None,
        }
    }
}

/// The shared half of a request socket: its slots, its queue, and its state.
pub(crate) struct SlotTable {
    state: Mutex<State>,
    max_frame_len: usize,
    /// What replies are decoded with, by their encoding header.
    decoders: Decoders,
    /// Cancelled when the socket closes, to stop the supervisor.
    closed: CancellationToken,
    /// The socket's `msg_request_errors_total` handles.
    errors: Arc<ErrorCounters>,
    /// The `in_flight` limit's counter, hit by every caller that waits for a slot.
    in_flight: Hits,
    /// Whether a driver serves a connection: `State::connected`, read without the lock.
    up: AtomicBool,
    /// The slots' cells, where replies are handed over.
    cells: Cells,
    /// A caller may be waiting for a free slot: one that collects a reply frees its slot at
    /// once, under the lock, rather than leaving it for the next holder of the lock. Set
    /// before a caller that found no free slot looks for collected ones, and cleared, under
    /// the lock, only when nobody waits.
    slot_wanted: AtomicBool,
}

impl SlotTable {
    pub(crate) fn new(max_in_flight: usize, max_frame_len: usize, decoders: Decoders) -> Self {
        SlotTable {
            state: Mutex::new(State {
                slots: Slots::new(max_in_flight.max(1)),
                queue: Queue::unbounded(),
                cancels: Vec::new(),
                waiters: Line::default(),
                connected: false,
                closing: false,
                stopped: None,
                last_dial: None,
                late: 0,
                delivered: Vec::new(),
                balanced: false,
                on_connect: None,
            }),
            max_frame_len,
            decoders,
            closed: CancellationToken::new(),
            errors: Arc::default(),
            in_flight: Hits::new(crate::limits::IN_FLIGHT),
            up: AtomicBool::new(false),
            cells: Cells::new(max_in_flight),
            slot_wanted: AtomicBool::new(false),
        }
    }

    /// Counts failed requests in `errors`, the socket's handles, rather than in its own.
    pub(crate) fn with_errors(mut self, errors: Arc<ErrorCounters>) -> Self {
        self.errors = errors;
        self
    }

    /// The socket's `msg_request_errors_total` handles.
    pub(crate) fn errors(&self) -> &ErrorCounters {
        &self.errors
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state consistent, so a panic elsewhere cannot poison it
        // into a wrong one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decodes a reply by its encoding header, into at most the frame limit.
    pub(crate) fn decode(&self, reply: Message) -> Reply {
        self.decoders
            .decode(reply, self.max_frame_len)
            .map_err(crate::error::undecodable)
    }

    /// The decoders and the limit replies are decoded with, to decode one elsewhere.
    pub(crate) fn decoding(&self) -> (&Decoders, usize) {
        (&self.decoders, self.max_frame_len)
    }

    /// Cancelled once the socket is closed.
    pub(crate) fn closed_token(&self) -> &CancellationToken {
        &self.closed
    }

    /// Reserves a slot, or queues `cx` to be handed one when it frees up. `ticket` is the
    /// caller's place in that queue, kept between polls; a caller that stops waiting must
    /// pass it to [`cancel`](Self::cancel).
    pub(crate) fn poll_reserve(
        &self,
        ticket: &mut Option<Ticket>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<SlotId, Error>> {
        let mut state = self.lock();
        if let Some(e) = state.refusal() {
            // Out of the line, and a slot handed to this caller meanwhile back.
            let mut wake = Vec::new();
            if let Some(id) = ticket.take().and_then(|mine| state.waiters.leave(mine)) {
                state.release(id, &mut wake);
            }
            drop(state);
            wake_all(wake);
            return Poll::Ready(Err(e));
        }
        if let Some(mine) = *ticket {
            return match state.waiters.poll(mine, cx.waker()) {
                Some(id) => {
                    *ticket = None;
                    Poll::Ready(Ok(id))
                }
                None => Poll::Pending,
            };
        }
        let mut wake = Vec::new();
        let reserved = match self.reserve(&mut state, &mut wake) {
            Some(id) => Poll::Ready(Ok(id)),
            None => {
                self.in_flight.hit();
                *ticket = Some(state.waiters.join(cx.waker()));
                Poll::Pending
            }
        };
        drop(state);
        wake_all(wake);
        reserved
    }

    /// Reserves a free slot. With none, frees first the slots whose replies were
    /// collected; with none of those either, says that a caller waits for one.
    fn reserve(&self, state: &mut State, wake: &mut Vec<Waker>) -> Option<SlotId> {
        if let Some((id, _)) = state.slots.reserve(Slot::Reserved) {
            return Some(id);
        }
        // Before looking at the cells: a caller that collects after this look sees it.
        self.slot_wanted.store(true, Ordering::SeqCst);
        state.reclaim(&self.cells, wake);
        state.slots.reserve(Slot::Reserved).map(|(id, _)| id)
    }

    /// A handle stopped waiting for a slot: leaves the queue, and passes on a slot that was
    /// handed to it meanwhile.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if let Some(id) = state.waiters.leave(ticket) {
                state.release(id, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Gives back a reserved slot that no request used.
    pub(crate) fn unreserve(&self, id: SlotId) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if matches!(state.slots.get_any(id), Some(Slot::Reserved)) {
                state.release(id, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Queues `msg` in reserved slot `id` for the driver, and says how many requests the
    /// table holds now, this one included. While there is no connection it waits in the
    /// queue for the next one.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`], [`Error::Closed`] once the socket is closing, or the
    /// error the socket stopped with; either way the slot is freed.
    pub(crate) fn enqueue(&self, id: SlotId, msg: Message) -> Result<usize, Error> {
        let mut wake = Vec::new();
        let queued = {
            let mut state = self.lock();
            self.push(&mut state, id, msg, None, &mut wake)
        };
        self.queued(queued, wake)
    }

    /// Reserves a slot and queues `msg` in it, with `cx` registered for the reply: under
    /// one lock, what [`poll_reserve`](Self::poll_reserve), [`enqueue`](Self::enqueue)
    /// and the first [`poll_reply`](Self::poll_reply) do under three. `msg` is taken once
    /// a slot is; `ticket` is as for `poll_reserve`. Returns the slot, and how many
    /// requests the table holds now.
    ///
    /// # Errors
    ///
    /// As `poll_reserve`, then as `enqueue`.
    pub(crate) fn poll_send(
        &self,
        msg: &mut Option<Message>,
        ticket: &mut Option<Ticket>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SlotId, usize), Error>> {
        let mut wake = Vec::new();
        let (id, queued) = {
            let mut state = self.lock();
            if let Some(e) = state.refusal() {
                // Out of the line, and a slot handed to this caller meanwhile back.
                if let Some(id) = ticket.take().and_then(|mine| state.waiters.leave(mine)) {
                    state.release(id, &mut wake);
                }
                drop(state);
                wake_all(wake);
                return Poll::Ready(Err(e));
            }
            let id = if let Some(mine) = *ticket {
                match state.waiters.poll(mine, cx.waker()) {
                    Some(id) => {
                        *ticket = None;
                        id
                    }
                    None => return Poll::Pending,
                }
            } else {
                match self.reserve(&mut state, &mut wake) {
                    Some(id) => id,
                    None => {
                        self.in_flight.hit();
                        *ticket = Some(state.waiters.join(cx.waker()));
                        drop(state);
                        wake_all(wake);
                        return Poll::Pending;
                    }
                }
            };
            let Some(msg) = msg.take() else {
                state.release(id, &mut wake);
                drop(state);
                wake_all(wake);
                return Poll::Ready(Err(Error::PolledAfterCompletion));
            };
            let waker = Some(cx.waker().clone());
            (id, self.push(&mut state, id, msg, waker, &mut wake))
        };
        Poll::Ready(self.queued(queued, wake).map(|held| (id, held)))
    }

    /// Queues `msg` in reserved slot `id`, with `waker` to wake for its reply if there is
    /// one already; refused, frees the slot. Returns the driver to wake, if it sleeps, and
    /// the requests held.
    fn push(
        &self,
        state: &mut State,
        id: SlotId,
        msg: Message,
        waker: Option<Waker>,
        wake: &mut Vec<Waker>,
    ) -> Result<(Option<Waker>, usize), Error> {
        let len = msg.payload().len();
        let refused = if len > self.max_frame_len {
            Some(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            })
        } else if let Err(e) = msg.metadata().check(msg.route()) {
            Some(Error::InvalidMetadata(e))
        } else if state.balanced && !state.connected && state.refusal().is_none() {
            Some(Error::NotConnected {
                last: state.last_dial.clone(),
            })
        } else {
            state.refusal()
        };
        if let Some(e) = refused {
            // The slot goes back: no request will wait on it.
            state.release(id, wake);
            return Err(e);
        }
        let generation = state.slots.generation(id);
        if let Some(slot) = state.slots.get_any(id) {
            *slot = Slot::Waiting;
        }
        // A slot's cell is left empty when the slot is freed (see `State::reclaim` and
        // `abandon`): only a caller's waker, if there is one, goes in.
        let cell = self.cells.make(id);
        let awaited = waker.is_some();
        if awaited {
            cell.mail().waker = waker;
        }
        state.queue.push(Queued {
            slot: id,
            generation,
            msg,
            awaited,
            sweeps: 0,
        });
        Ok((state.queue.wake_consumer(), state.slots.held()))
    }

    /// Wakes what [`push`](Self::push) left to wake, once the lock is released.
    fn queued(
        &self,
        queued: Result<(Option<Waker>, usize), Error>,
        wake: Vec<Waker>,
    ) -> Result<usize, Error> {
        wake_all(wake);
        let (driver, held) = queued?;
        if let Some(driver) = driver {
            driver.wake();
        }
        Ok(held)
    }

    /// The reply in slot `id`, once it has come, taken from the slot's cell without the
    /// table's lock. The slot is freed by the next holder of the lock, or at once if a
    /// caller waits for a slot.
    pub(crate) fn poll_reply(&self, id: SlotId, cx: &mut Context<'_>) -> Poll<Reply> {
        let Some(cell) = self.cells.get(id) else {
            return Poll::Ready(Err(Error::PolledAfterCompletion));
        };
        let reply = {
            let mut mail = cell.mail();
            match mail.reply.take() {
                Some(reply) => reply,
                None if cell.collected.load(Ordering::Relaxed) => {
                    return Poll::Ready(Err(Error::PolledAfterCompletion));
                }
                None => {
                    park(&mut mail.waker, cx.waker());
                    return Poll::Pending;
                }
            }
        };
        // Marked before looking for a waiting caller: one that starts waiting after the
        // look frees this slot itself (see `reserve`).
        cell.collected.store(true, Ordering::SeqCst);
        if self.slot_wanted.load(Ordering::SeqCst) {
            let mut wake = Vec::new();
            {
                let mut state = self.lock();
                state.reclaim(&self.cells, &mut wake);
                self.slot_wanted
                    .store(!state.waiters.is_empty(), Ordering::SeqCst);
            }
            wake_all(wake);
        }
        Poll::Ready(reply)
    }

    /// The caller of slot `id` gave up on its reply. A request still queued leaves the
    /// queue; one on the wire is left for the driver to cancel. Either way the slot is free
    /// at once.
    pub(crate) fn abandon(&self, id: SlotId) {
        let mut wake = Vec::new();
        let (driver, mail) = {
            let mut state = self.lock();
            let state = &mut *state;
            let driver = match state.slots.get_any(id) {
                Some(Slot::Waiting) => match state.queue.remove(|q| q.slot == id) {
                    Some(_) => None,
                    None => {
                        state.cancels.push((id, state.slots.generation(id)));
                        state.queue.wake_consumer()
                    }
                },
                Some(Slot::Delivered) => {
                    state.delivered.retain(|&d| d != id);
                    None
                }
                _ => return,
            };
            // The caller's waker, and a reply it will never take, go (once the lock is
            // released).
            let cell = self.cells.make(id);
            let mail = std::mem::take(&mut *cell.mail());
            cell.collected.store(false, Ordering::Relaxed);
            state.release(id, &mut wake);
            (driver, mail)
        };
        drop(mail);
        wake_all(wake);
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// The socket is closing (the last handle is gone, or `close` was called): no new
    /// request is taken, and the driver closes once what is in flight is done.
    pub(crate) fn close(&self) {
        let (driver, balancer) = {
            let mut state = self.lock();
            state.closing = true;
            self.up.store(false, Ordering::Release);
            (state.queue.wake_consumer(), state.on_connect.take())
        };
        self.closed.cancel();
        for waker in [driver, balancer].into_iter().flatten() {
            waker.wake();
        }
    }

    /// Whether a driver serves a connection, and the table has not stopped: read without
    /// the lock, for a choice that may be a moment late.
    pub(crate) fn is_connected(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// Driver: a connection is up.
    pub(crate) fn connected(&self) {
        let waker = {
            let mut state = self.lock();
            state.connected = true;
            self.up.store(true, Ordering::Release);
            state.last_dial = None;
            state.cancels.clear();
            state.on_connect.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Balancer: makes this table one endpoint of several: from now on no request waits
    /// for its connection (see `State::balanced`), and those waiting now fail.
    pub(crate) fn set_balanced(&self) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            state.balanced = true;
            if !state.connected {
                state.fail_queued(&self.cells, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Balancer: ready once the connection is up; `cx` is woken when it comes up, or when
    /// the table stops taking requests (then the error why).
    pub(crate) fn poll_connected(&self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let mut state = self.lock();
        if let Some(e) = state.refusal() {
            return Poll::Ready(Err(e));
        }
        if state.connected {
            return Poll::Ready(Ok(()));
        }
        park(&mut state.on_connect, cx.waker());
        Poll::Pending
    }

    /// Balancer: the requests held (queued, on the wire, or reserved): the endpoint's load.
    pub(crate) fn load(&self) -> usize {
        let mut wake = Vec::new();
        let held = {
            let mut state = self.lock();
            state.reclaim(&self.cells, &mut wake);
            state.slots.held()
        };
        wake_all(wake);
        held
    }

    /// Driver: swaps the queued requests and the cancellations into `batch`, whose buffers
    /// must be empty. With nothing to do, registers `cx` to be woken by the next request or
    /// cancellation. Returns whether the socket is open, closing, or stopped.
    ///
    /// Frees the slots whose replies were collected since, and wakes the callers waiting
    /// for them once the lock is released.
    pub(crate) fn take(&self, batch: &mut Batch, cx: &mut Context<'_>) -> Flow {
        let mut wake = Vec::new();
        let flow = self.take_locked(batch, cx, &mut wake);
        wake_all(wake);
        flow
    }

    fn take_locked(&self, batch: &mut Batch, cx: &mut Context<'_>, wake: &mut Vec<Waker>) -> Flow {
        let mut state = self.lock();
        state.queue.swap_out(&mut batch.requests);
        std::mem::swap(&mut state.cancels, &mut batch.cancels);
        state.reclaim(&self.cells, wake);
        batch.callers_pending = !state.delivered.is_empty();
        // Registered only once there is nothing to do, so that a request queued while the
        // driver is busy costs no wake-up.
        if batch.requests.is_empty() && batch.cancels.is_empty() {
            state.queue.park(cx.waker());
        }
        match (state.stopped.is_some(), state.closing) {
            (true, _) => Flow::Stopped,
            (false, true) => Flow::Closing,
            (false, false) => Flow::Open,
        }
    }

    /// Driver: whether requests are queued and not yet taken.
    pub(crate) fn has_queued(&self) -> bool {
        !self.lock().queue.is_empty()
    }

    /// Driver: delivers a batch of replies, each to its slot, and wakes their callers.
    pub(crate) fn complete(&self, done: &mut Completions) {
        if done.replies.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            for (id, generation, reply) in done.replies.drain(..) {
                state.fill(&self.cells, id, generation, reply, &mut done.wakers);
            }
        }
        for waker in done.wakers.drain(..) {
            waker.wake();
        }
    }

    /// Driver: the connection is gone. Fails the requests that were on its wire, given as
    /// (slot, generation), with `error`; what is queued waits for the next connection.
    pub(crate) fn disconnected(
        &self,
        on_wire: impl Iterator<Item = (SlotId, Generation)>,
        error: fn() -> Error,
    ) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            state.connected = false;
            self.up.store(false, Ordering::Release);
            state.cancels.clear();
            for (id, generation) in on_wire {
                state.fill(&self.cells, id, generation, Err(error()), &mut wake);
            }
            if state.balanced {
                state.fail_queued(&self.cells, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Supervisor, while disconnected: fails the queued requests that have seen
    /// [`SWEEPS_PER_WAIT`] sweeps already, with [`Error::NotConnected`] (and why the last
    /// dial failed), and counts this sweep for the others.
    pub(crate) fn sweep(&self) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if state.connected {
                return;
            }
            let queue = state.queue.drain();
            for mut queued in queue {
                if queued.sweeps >= SWEEPS_PER_WAIT {
                    let last = state.last_dial.clone();
                    state.fill(
                        &self.cells,
                        queued.slot,
                        queued.generation,
                        Err(Error::NotConnected { last }),
                        &mut wake,
                    );
                } else {
                    queued.sweeps += 1;
                    state.queue.push(queued);
                }
            }
        }
        wake_all(wake);
    }

    /// Supervisor, while disconnected: a dial failed with `error`, kept as the last dial's
    /// error. If it is one the next dial will meet too ([`Error::is_permanent`]), fails
    /// every queued request with it.
    pub(crate) fn dial_failed(&self, error: &Error) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if state.connected {
                return;
            }
            state.last_dial = Some(Arc::new(error.clone()));
            if !error.is_permanent() {
                return;
            }
            let queue = state.queue.drain();
            for queued in queue {
                state.fill(
                    &self.cells,
                    queued.slot,
                    queued.generation,
                    Err(error.clone()),
                    &mut wake,
                );
            }
        }
        wake_all(wake);
    }

    /// Supervisor: the socket stops for good (closed while disconnected, redialing gave
    /// up, or the server's answer will not change). Everything queued fails with `error`,
    /// and so does every later request.
    pub(crate) fn stop(&self, error: Error) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            state.stopped = Some(error.clone());
            self.up.store(false, Ordering::Release);
            wake.extend(state.on_connect.take());
            let queue = state.queue.drain();
            for queued in queue {
                state.fill(
                    &self.cells,
                    queued.slot,
                    queued.generation,
                    Err(error.clone()),
                    &mut wake,
                );
            }
            state.waiters.wake_all(&mut wake);
            wake.extend(state.queue.wake_consumer());
        }
        self.closed.cancel();
        wake_all(wake);
    }

    /// The socket's counters.
    pub(crate) fn stats(&self) -> super::ReqStats {
        let mut wake = Vec::new();
        let stats = {
            let mut state = self.lock();
            state.reclaim(&self.cells, &mut wake);
            super::ReqStats {
                in_flight: state.slots.held(),
                queued: state.queue.len(),
                late_replies: state.late,
                connected: state.connected,
            }
        };
        wake_all(wake);
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Context<'static> {
        Context::from_waker(Waker::noop())
    }

    /// Makes a request and has the driver take it; returns its slot and generation.
    fn on_the_wire(table: &SlotTable) -> (SlotId, Generation) {
        let slot = match table.poll_reserve(&mut None, &mut cx()) {
            Poll::Ready(Ok(slot)) => slot,
            other => panic!("{other:?}"),
        };
        table.enqueue(slot, Message::from("x")).unwrap();
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx());
        assert_eq!(batch.requests.len(), 1);
        (slot, batch.requests[0].generation)
    }

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn sending_reserves_queues_and_registers_the_caller_in_one_go() {
        let table = SlotTable::new(1, 8, Decoders::default());
        table.connected();
        let woken = Arc::new(Counting(Default::default()));
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut msg, mut ticket) = (Some(Message::from("x")), None);
        let slot = match table.poll_send(&mut msg, &mut ticket, &mut cx) {
            Poll::Ready(Ok((slot, held))) => {
                assert_eq!(held, 1);
                slot
            }
            other => panic!("{other:?}"),
        };
        assert!(msg.is_none() && ticket.is_none());

        // The table is full: the next caller waits in line, its message kept.
        let (mut next, mut next_ticket) = (Some(Message::from("y")), None);
        assert!(table
            .poll_send(&mut next, &mut next_ticket, &mut cx)
            .is_pending());
        assert!(next.is_some() && next_ticket.is_some());

        // The reply wakes the first caller, who never polled for it.
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx);
        let generation = batch.requests[0].generation;
        let mut done = Completions::default();
        done.push(slot, generation, Ok(Message::from("reply")));
        table.complete(&mut done);
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        match table.poll_reply(slot, &mut cx) {
            Poll::Ready(Ok(reply)) => assert_eq!(reply.payload(), "reply"),
            other => panic!("{other:?}"),
        }

        // The freed slot went to the caller in line; a message over the limit is refused
        // there and gives the slot back.
        next = Some(Message::from("far too long"));
        match table.poll_send(&mut next, &mut next_ticket, &mut cx) {
            Poll::Ready(Err(Error::FrameTooLarge { len: 12, max: 8 })) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(table.stats().in_flight, 0);
    }

    #[test]
    fn giving_up_on_the_wire_frees_the_slot_at_once_and_leaves_a_cancel() {
        let table = SlotTable::new(1, 1024, Decoders::default());
        table.connected();
        let (slot, generation) = on_the_wire(&table);
        table.abandon(slot);
        assert_eq!(table.stats().in_flight, 0);
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx());
        assert_eq!(batch.cancels, vec![(slot, generation)]);
    }

    #[test]
    fn a_late_reply_never_reaches_the_request_that_reused_the_slot() {
        let table = SlotTable::new(1, 1024, Decoders::default());
        table.connected();
        let (slot, old) = on_the_wire(&table);
        table.abandon(slot);
        // The one slot is taken again by a new request.
        let (again, new) = on_the_wire(&table);
        assert_eq!(again, slot);
        assert_ne!(old, new);
        let mut done = Completions::default();
        done.push(slot, old, Ok(Message::from("late")));
        table.complete(&mut done);
        assert!(table.poll_reply(slot, &mut cx()).is_pending());
        assert_eq!(table.stats().late_replies, 1);
        done.push(slot, new, Ok(Message::from("mine")));
        table.complete(&mut done);
        match table.poll_reply(slot, &mut cx()) {
            Poll::Ready(Ok(msg)) => assert_eq!(msg.payload(), "mine"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn giving_up_while_queued_leaves_the_queue_and_frees_the_slot() {
        let table = SlotTable::new(1, 1024, Decoders::default());
        let slot = match table.poll_reserve(&mut None, &mut cx()) {
            Poll::Ready(Ok(slot)) => slot,
            other => panic!("{other:?}"),
        };
        table.enqueue(slot, Message::from("x")).unwrap();
        table.abandon(slot);
        let stats = table.stats();
        assert_eq!((stats.in_flight, stats.queued), (0, 0));
        // No cancel goes out for a request that never left.
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx());
        assert!(batch.requests.is_empty() && batch.cancels.is_empty());
    }

    #[test]
    fn a_lost_connection_fails_the_wire_and_the_queue_waits_one_sweep_past_a_wait() {
        let table = SlotTable::new(4, 1024, Decoders::default());
        table.connected();
        let (sent, generation) = on_the_wire(&table);
        let queued = match table.poll_reserve(&mut None, &mut cx()) {
            Poll::Ready(Ok(slot)) => slot,
            other => panic!("{other:?}"),
        };
        table.disconnected([(sent, generation)].into_iter(), || Error::ConnectionClosed);
        table.enqueue(queued, Message::from("waits")).unwrap();
        assert!(matches!(
            table.poll_reply(sent, &mut cx()),
            Poll::Ready(Err(Error::ConnectionClosed))
        ));
        for sweep in 1..=SWEEPS_PER_WAIT {
            table.sweep();
            assert!(
                table.poll_reply(queued, &mut cx()).is_pending(),
                "failed at sweep {sweep}, within the wait"
            );
        }
        table.sweep();
        assert!(matches!(
            table.poll_reply(queued, &mut cx()),
            Poll::Ready(Err(Error::NotConnected { last: None }))
        ));
        assert_eq!(table.stats().in_flight, 0);
    }

    #[test]
    fn the_driver_learns_that_callers_are_about_to_collect_their_replies() {
        let table = SlotTable::new(2, 1024, Decoders::default());
        table.connected();
        let (slot, generation) = on_the_wire(&table);
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx());
        assert!(!batch.callers_pending);
        let mut done = Completions::default();
        done.push(slot, generation, Ok(Message::from("reply")));
        table.complete(&mut done);
        table.take(&mut batch, &mut cx());
        assert!(batch.callers_pending, "a reply waits for its caller");
        assert!(table.poll_reply(slot, &mut cx()).is_ready());
        table.take(&mut batch, &mut cx());
        assert!(!batch.callers_pending, "the caller took it");
    }

    #[test]
    fn a_caller_collects_its_reply_while_another_holds_the_tables_lock() {
        let table = Arc::new(SlotTable::new(2, 1024, Decoders::default()));
        table.connected();
        let (slot, generation) = on_the_wire(&table);
        let mut done = Completions::default();
        done.push(slot, generation, Ok(Message::from("reply")));
        table.complete(&mut done);
        let held = table.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let caller = {
            let table = table.clone();
            std::thread::spawn(move || {
                let reply = table.poll_reply(slot, &mut cx());
                let _ = tx.send(matches!(reply, Poll::Ready(Ok(_))));
            })
        };
        let collected = rx.recv_timeout(std::time::Duration::from_secs(5));
        drop(held);
        caller.join().unwrap();
        assert_eq!(
            collected,
            Ok(true),
            "the caller waited for the table's lock"
        );
        // The slot is freed by the next holder of the lock: here the driver.
        assert_eq!(table.lock().slots.held(), 1);
        table.take(&mut Batch::default(), &mut cx());
        assert_eq!(table.lock().slots.held(), 0);
    }

    #[test]
    fn a_caller_waiting_for_a_slot_gets_one_as_soon_as_a_reply_is_collected() {
        let table = SlotTable::new(1, 1024, Decoders::default());
        table.connected();
        let (slot, generation) = on_the_wire(&table);
        let woken = Arc::new(Counting(Default::default()));
        let waker = Waker::from(woken.clone());
        let mut ticket = None;
        assert!(table
            .poll_reserve(&mut ticket, &mut Context::from_waker(&waker))
            .is_pending());
        let mut done = Completions::default();
        done.push(slot, generation, Ok(Message::from("reply")));
        table.complete(&mut done);
        assert!(table.poll_reply(slot, &mut cx()).is_ready());
        // No driver pass in between: the collecting caller handed the slot on.
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(matches!(
            table.poll_reserve(&mut ticket, &mut cx()),
            Poll::Ready(Ok(s)) if s == slot
        ));
    }

    #[test]
    fn cells_are_found_by_slot_in_chunks_that_double() {
        let mut expected = Vec::new();
        for (chunk, size) in (0..5).map(|k| (k, FIRST_CHUNK << k)) {
            expected.extend((0..size).map(|at| (chunk, at)));
        }
        for (id, place) in expected.iter().enumerate() {
            assert_eq!(Cells::locate(id as SlotId), *place, "slot {id}");
        }
        // As many chunks as the bound needs, and the last slot's cell in the last.
        assert_eq!(Cells::new(1024).chunks.len(), 8);
        assert_eq!(Cells::new(1).chunks.len(), 1);
        let all = Cells::new(usize::MAX);
        let (last, at) = Cells::locate(SlotId::MAX);
        assert!(last == all.chunks.len() - 1 && at < FIRST_CHUNK << last);
        let (chunk, _) = Cells::locate(1023);
        assert_eq!(chunk, 7);
    }

    #[test]
    fn cancels_left_for_a_lost_connection_are_not_sent_on_the_next() {
        let table = SlotTable::new(1, 1024, Decoders::default());
        table.connected();
        let (slot, _) = on_the_wire(&table);
        table.abandon(slot);
        table.disconnected(std::iter::empty(), || Error::ConnectionClosed);
        table.connected();
        let mut batch = Batch::default();
        table.take(&mut batch, &mut cx());
        assert!(batch.cancels.is_empty());
    }
}
