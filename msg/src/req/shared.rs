//! What a [`ReqSocket`](super::ReqSocket)'s handles and its connection driver share.
//!
//! Every request in flight holds a slot in a table under one lock. A handle reserves a slot
//! (that is the in-flight limit), queues its message for the driver and then waits on the
//! slot; the driver writes the queue out, and fills the slot when the reply comes. No
//! channel, semaphore or allocation per request: the caller takes the lock to reserve a
//! slot, to queue and to collect its reply, and the driver once per batch of writes and
//! once per batch of replies.
//!
//! None of this spends tokio's cooperative budget. A caller with many requests in flight
//! in one task (a `FuturesUnordered`, say) would otherwise run out of budget on every
//! batch, and each forced yield wakes another worker to steal the task: a cross-thread
//! hand-off per batch that costs more than the batch itself.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use msg_core::Message;

use crate::Error;

/// What a request resolves to.
pub(crate) type Reply = Result<Message, Error>;

/// A slot's index in the table.
pub(crate) type SlotId = u32;

/// A handle's place in the line for a slot.
pub(crate) type Ticket = u64;

/// One request's place in the table.
#[derive(Debug)]
enum Slot {
    /// Nobody holds it.
    Free,
    /// Held for a request not yet made ([`tower::Service::poll_ready`] reserved it).
    Reserved,
    /// The request is queued or sent; the waker is its caller's.
    Waiting(Option<Waker>),
    /// The reply has come and waits for its caller.
    Done(Reply),
    /// The caller gave up; the slot is freed when the reply comes or the request is
    /// dropped from the queue.
    Abandoned,
}

/// Replies the driver has matched and not yet delivered, with a buffer for their callers'
/// wakers; both are kept from batch to batch, so that delivering allocates nothing.
#[derive(Default)]
pub(crate) struct Completions {
    replies: Vec<(SlotId, Reply)>,
    wakers: Vec<Waker>,
}

impl Completions {
    /// Adds the reply for slot `id`.
    pub(crate) fn push(&mut self, id: SlotId, reply: Reply) {
        self.replies.push((id, reply));
    }
}

/// The table and queue behind the lock.
#[derive(Default)]
struct State {
    slots: Vec<Slot>,
    free: Vec<SlotId>,
    /// Requests for the driver to send, in order.
    queue: Vec<(SlotId, Message)>,
    /// The driver, when it found the queue empty and went to sleep.
    driver: Option<Waker>,
    /// Handles waiting for a free slot, first come first served.
    waiters: VecDeque<(Ticket, Waker)>,
    /// Slots handed to waiting handles that have not yet come for them.
    granted: Vec<(Ticket, SlotId)>,
    next_ticket: Ticket,
    /// No handle is left: the driver finishes what is in flight, then closes.
    closed: bool,
    /// The connection is gone: every request fails at once.
    failed: bool,
}

impl State {
    /// Frees slot `id`: hands it to the first waiting handle, if any, so that the wake-up
    /// cannot be lost even if that handle never comes back for it.
    fn release(&mut self, id: SlotId, wake: &mut Vec<Waker>) {
        match self.waiters.pop_front() {
            Some((ticket, waker)) => {
                self.slots[id as usize] = Slot::Reserved;
                self.granted.push((ticket, id));
                wake.push(waker);
            }
            None => {
                self.slots[id as usize] = Slot::Free;
                self.free.push(id);
            }
        }
    }
}

/// The shared half of one connection of a request socket.
pub(crate) struct Shared {
    state: Mutex<State>,
    max_in_flight: usize,
    max_frame_len: usize,
}

/// Wakes every waker in `wakers`, after the lock is released.
fn wake_all(wakers: Vec<Waker>) {
    for waker in wakers {
        waker.wake();
    }
}

impl Shared {
    pub(crate) fn new(max_in_flight: usize, max_frame_len: usize) -> Self {
        Shared {
            state: Mutex::new(State::default()),
            max_in_flight: max_in_flight.max(1),
            max_frame_len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step leaves the state consistent, so a panic elsewhere cannot poison it
        // into a wrong one.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
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
        if state.failed {
            *ticket = None;
            return Poll::Ready(Err(Error::ConnectionClosed));
        }
        if let Some(mine) = *ticket {
            if let Some(i) = state.granted.iter().position(|(t, _)| *t == mine) {
                *ticket = None;
                return Poll::Ready(Ok(state.granted.swap_remove(i).1));
            }
            if let Some((_, waker)) = state.waiters.iter_mut().find(|(t, _)| *t == mine) {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            return Poll::Pending;
        }
        let id = match state.free.pop() {
            Some(id) => id,
            None if state.slots.len() < self.max_in_flight => {
                state.slots.push(Slot::Free);
                (state.slots.len() - 1) as SlotId
            }
            None => {
                let mine = state.next_ticket;
                state.next_ticket += 1;
                state.waiters.push_back((mine, cx.waker().clone()));
                *ticket = Some(mine);
                return Poll::Pending;
            }
        };
        state.slots[id as usize] = Slot::Reserved;
        Poll::Ready(Ok(id))
    }

    /// A handle stopped waiting for a slot: leaves the queue, and passes on a slot that was
    /// handed to it meanwhile.
    pub(crate) fn cancel(&self, ticket: Ticket) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if let Some(i) = state.granted.iter().position(|(t, _)| *t == ticket) {
                let (_, id) = state.granted.swap_remove(i);
                state.release(id, &mut wake);
            } else {
                state.waiters.retain(|(t, _)| *t != ticket);
            }
        }
        wake_all(wake);
    }

    /// Gives back a reserved slot that no request used.
    pub(crate) fn unreserve(&self, id: SlotId) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            if matches!(state.slots.get(id as usize), Some(Slot::Reserved)) {
                state.release(id, &mut wake);
            }
        }
        wake_all(wake);
    }

    /// Queues `msg` in reserved slot `id` for the driver.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] or, once the connection has failed,
    /// [`Error::ConnectionClosed`]; either way the slot is freed.
    pub(crate) fn enqueue(&self, id: SlotId, msg: Message) -> Result<(), Error> {
        let len = msg.payload().len();
        let refused = if len > self.max_frame_len {
            Some(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            })
        } else {
            None
        };
        let mut wake = Vec::new();
        let outcome = {
            let mut state = self.lock();
            match refused.or(state.failed.then_some(Error::ConnectionClosed)) {
                Some(e) => {
                    // The slot goes back: no request will wait on it.
                    state.release(id, &mut wake);
                    Err(e)
                }
                None => {
                    state.slots[id as usize] = Slot::Waiting(None);
                    state.queue.push((id, msg));
                    Ok(state.driver.take())
                }
            }
        };
        wake_all(wake);
        if let Some(driver) = outcome? {
            driver.wake();
        }
        Ok(())
    }

    /// The reply in slot `id`, once it has come; frees the slot when it is taken.
    pub(crate) fn poll_reply(&self, id: SlotId, cx: &mut Context<'_>) -> Poll<Reply> {
        let mut wake = Vec::new();
        let reply = {
            let mut state = self.lock();
            match &mut state.slots[id as usize] {
                Slot::Waiting(waker) => {
                    match waker {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => *waker = Some(cx.waker().clone()),
                    }
                    return Poll::Pending;
                }
                slot @ Slot::Done(_) => {
                    let Slot::Done(reply) = std::mem::replace(slot, Slot::Free) else {
                        unreachable!("matched as done")
                    };
                    state.release(id, &mut wake);
                    reply
                }
                // Polled again after completion.
                _ => Err(Error::NotReady),
            }
        };
        wake_all(wake);
        Poll::Ready(reply)
    }

    /// The caller of slot `id` gave up on its reply.
    pub(crate) fn abandon(&self, id: SlotId) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            match state.slots[id as usize] {
                Slot::Waiting(_) => state.slots[id as usize] = Slot::Abandoned,
                Slot::Done(_) => state.release(id, &mut wake),
                _ => {}
            }
        }
        wake_all(wake);
    }

    /// The last handle is gone.
    pub(crate) fn close(&self) {
        let driver = {
            let mut state = self.lock();
            state.closed = true;
            state.driver.take()
        };
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    /// Driver: moves the queued requests into `batch`, dropping those whose callers gave
    /// up. With nothing queued, registers `cx` to be woken by the next request. Returns
    /// whether the handles are all gone.
    pub(crate) fn take_queue(
        &self,
        batch: &mut Vec<(SlotId, Message)>,
        cx: &mut Context<'_>,
    ) -> bool {
        let mut wake = Vec::new();
        let closed = {
            let mut state = self.lock();
            std::mem::swap(&mut state.queue, batch);
            let state = &mut *state;
            batch.retain(|(id, _)| {
                let abandoned = matches!(state.slots[*id as usize], Slot::Abandoned);
                if abandoned {
                    state.release(*id, &mut wake);
                }
                !abandoned
            });
            // Registered only once there is nothing to send, so that a request queued
            // while the driver is busy costs no wake-up.
            if batch.is_empty() {
                match &state.driver {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => state.driver = Some(cx.waker().clone()),
                }
            }
            state.closed
        };
        wake_all(wake);
        closed
    }

    /// Driver: delivers a batch of replies, each to its slot, and wakes their callers.
    pub(crate) fn complete(&self, done: &mut Completions) {
        if done.replies.is_empty() {
            return;
        }
        {
            let mut state = self.lock();
            for (id, reply) in done.replies.drain(..) {
                Self::fill(&mut state, id, reply, &mut done.wakers);
            }
        }
        for waker in done.wakers.drain(..) {
            waker.wake();
        }
    }

    fn fill(state: &mut State, id: SlotId, reply: Reply, wake: &mut Vec<Waker>) {
        match &mut state.slots[id as usize] {
            slot @ Slot::Waiting(_) => {
                if let Slot::Waiting(Some(waker)) = std::mem::replace(slot, Slot::Done(reply)) {
                    wake.push(waker);
                }
            }
            Slot::Abandoned => state.release(id, wake),
            _ => {}
        }
    }

    /// Driver: the connection is gone. Fails the requests in `in_flight`, everything
    /// queued, and every later request; wakes every handle waiting for a slot.
    pub(crate) fn fail(&self, in_flight: impl Iterator<Item = SlotId>) {
        let mut wake = Vec::new();
        {
            let mut state = self.lock();
            state.failed = true;
            let queued: Vec<SlotId> = state.queue.drain(..).map(|(id, _)| id).collect();
            for id in in_flight.chain(queued) {
                Self::fill(&mut state, id, Err(Error::ConnectionClosed), &mut wake);
            }
            wake.extend(state.waiters.drain(..).map(|(_, waker)| waker));
        }
        wake_all(wake);
    }
}
