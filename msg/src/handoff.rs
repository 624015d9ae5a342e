//! The one way work is handed from one side to another: [`Queue`], a queue bounded in items
//! and bytes with the consumer's waker and a [`Line`] of producers waiting for room, and
//! [`Handoff`], a queue behind a lock of its own.
//!
//! [`Queue`] takes no lock: an owner that guards more state under the same lock (the
//! request socket's slots, say) embeds it there, so that reserving a slot and queueing a
//! message stay one lock. Its methods never wake anyone: they return the wakers to wake,
//! or push them to a list, for the owner to wake once the lock is released.
//!
//! The rules, each pinned by a test below:
//! - the bound is in items and in bytes; room reserved by a producer counts against it;
//! - producers waiting for room wait in a [`Line`], first come first served; a waiter keeps
//!   its [`Ticket`] between polls, and one that gives up leaves the line and passes on what
//!   was handed to it;
//! - a batch goes in, or comes out, in one call, and the other side is woken once for it,
//!   and only if it sleeps;
//! - closing wakes everyone.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::Waker;

/// A waiter's place in a [`Line`], kept between its polls.
pub(crate) type Ticket = u64;

/// What an item counts against a queue's bound in bytes.
pub(crate) trait Weigh {
    /// The item's size, in bytes, as the bound counts it.
    fn weight(&self) -> usize;
}

/// Waiters, first come first served. One that is handed something (`G`: a slot, say) keeps
/// it until it comes back for it, so that a wake-up is never lost; one that gives up
/// before it comes back gets it back from [`leave`](Self::leave), to pass on.
#[derive(Debug)]
pub(crate) struct Line<G = ()> {
    waiters: VecDeque<(Ticket, Waker)>,
    /// What was handed to waiters that have not yet come for it.
    granted: Vec<(Ticket, G)>,
    next: Ticket,
}

impl<G> Default for Line<G> {
    fn default() -> Self {
        Line {
            waiters: VecDeque::new(),
            granted: Vec::new(),
            next: 0,
        }
    }
}

impl<G> Line<G> {
    /// Joins the back of the line; the ticket is the waiter's to keep.
    pub(crate) fn join(&mut self, waker: &Waker) -> Ticket {
        let ticket = self.next;
        self.next += 1;
        self.waiters.push_back((ticket, waker.clone()));
        ticket
    }

    /// Joins the line unless a waiter with the same waker already waits in it: for waiters
    /// that are all woken together ([`wake_all`](Self::wake_all)), and keep no ticket.
    pub(crate) fn wait(&mut self, waker: &Waker) {
        if !self.waiters.iter().any(|(_, w)| w.will_wake(waker)) {
            self.join(waker);
        }
    }

    /// Waiter `ticket` comes back: what was handed to it, if anything; otherwise it waits
    /// on, woken through `waker` from now on.
    pub(crate) fn poll(&mut self, ticket: Ticket, waker: &Waker) -> Option<G> {
        if let Some(i) = self.granted.iter().position(|(t, _)| *t == ticket) {
            return Some(self.granted.swap_remove(i).1);
        }
        if let Some((_, w)) = self.waiters.iter_mut().find(|(t, _)| *t == ticket) {
            if !w.will_wake(waker) {
                *w = waker.clone();
            }
        }
        None
    }

    /// Hands `g` to the first waiter and returns its waker, to wake; with nobody waiting,
    /// gives `g` back.
    pub(crate) fn grant(&mut self, g: G) -> Result<Waker, G> {
        match self.waiters.pop_front() {
            Some((ticket, waker)) => {
                self.granted.push((ticket, g));
                Ok(waker)
            }
            None => Err(g),
        }
    }

    /// Waiter `ticket` gives up: it leaves the line, and what was handed to it meanwhile
    /// is returned, for the caller to pass on.
    pub(crate) fn leave(&mut self, ticket: Ticket) -> Option<G> {
        if let Some(i) = self.granted.iter().position(|(t, _)| *t == ticket) {
            return Some(self.granted.swap_remove(i).1);
        }
        self.waiters.retain(|(t, _)| *t != ticket);
        None
    }

    /// Everyone waiting leaves the line, their wakers pushed to `wake`, first come first.
    pub(crate) fn wake_all(&mut self, wake: &mut Vec<Waker>) {
        wake.extend(self.waiters.drain(..).map(|(_, waker)| waker));
    }

    /// Waiters in the line.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// Whether nobody waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }
}

/// A queue bounded in items and bytes, from producers to one consumer, without a lock of
/// its own (see the [module](self)).
#[derive(Debug)]
pub(crate) struct Queue<T> {
    items: VecDeque<T>,
    /// What `items` weigh.
    bytes: usize,
    /// Room promised to producers and not yet used or given back.
    reserved: usize,
    max_items: usize,
    max_bytes: usize,
    /// Producers waiting for room.
    pub(crate) room: Line,
    /// The consumer, when it found nothing to take and went to sleep.
    consumer: Option<Waker>,
    closed: bool,
}

/// Wakes every waker in `wake`, once the lock is released.
pub(crate) fn wake_all(wake: Vec<Waker>) {
    for waker in wake {
        waker.wake();
    }
}

/// Registers `waker` in `slot` unless the one there already wakes the same task.
pub(crate) fn park(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

impl<T: Weigh> Queue<T> {
    /// An empty queue holding at most `max_items` items and `max_bytes` bytes (see
    /// [`is_full`](Self::is_full)); a bound of zero leaves it full for good.
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        Queue {
            items: VecDeque::new(),
            bytes: 0,
            reserved: 0,
            max_items,
            max_bytes,
            room: Line::default(),
            consumer: None,
            closed: false,
        }
    }

    /// An empty queue bounded by nothing but what its owner bounds.
    pub(crate) fn unbounded() -> Self {
        Queue::new(usize::MAX, usize::MAX)
    }

    /// Items queued.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether the queue is at a bound: its items and reserved room at the items' bound, or
    /// its bytes at theirs. Producers that push whole batches wait while it is.
    pub(crate) fn is_full(&self) -> bool {
        self.items.len() + self.reserved >= self.max_items || self.bytes >= self.max_bytes
    }

    /// Whether one more item of `weight` fits: there is room for an item, and its bytes
    /// fit too, or the queue is empty (an item larger than the bound still goes alone).
    pub(crate) fn fits(&self, weight: usize) -> bool {
        self.items.len() + self.reserved < self.max_items
            && (self.items.is_empty() || self.bytes + weight <= self.max_bytes)
    }

    /// Reserves all the room there is for items, and says how much: none when there is
    /// none. The room is the producer's until it [`unreserve`](Self::unreserve)s it, used
    /// or not.
    pub(crate) fn reserve(&mut self) -> usize {
        let taken = self.items.len() + self.reserved;
        let room = self.max_items.saturating_sub(taken);
        self.reserved += room;
        room
    }

    /// Gives back `room` reserved.
    pub(crate) fn unreserve(&mut self, room: usize) {
        self.reserved = self.reserved.saturating_sub(room);
    }

    /// Queues `item`, whatever the bounds (the caller checked them), without waking anyone.
    pub(crate) fn push(&mut self, item: T) {
        self.bytes += item.weight();
        self.items.push_back(item);
    }

    /// Queues all of `batch`, whatever the bounds (the caller checked them). Returns the
    /// consumer's waker if it sleeps and something was queued: one wake-up per batch.
    pub(crate) fn push_batch(&mut self, batch: &mut Vec<T>) -> Option<Waker> {
        if batch.is_empty() {
            return None;
        }
        self.bytes += batch.iter().map(Weigh::weight).sum::<usize>();
        self.items.extend(batch.drain(..));
        self.consumer.take()
    }

    /// Takes the consumer's waker, if it sleeps.
    pub(crate) fn wake_consumer(&mut self) -> Option<Waker> {
        self.consumer.take()
    }

    /// Consumer: the next item, if any.
    pub(crate) fn pop(&mut self) -> Option<T> {
        let item = self.items.pop_front()?;
        self.bytes -= item.weight();
        Some(item)
    }

    /// Consumer: swaps everything queued into `into`, which must be empty.
    pub(crate) fn swap_out(&mut self, into: &mut VecDeque<T>) {
        std::mem::swap(&mut self.items, into);
        self.bytes = 0;
    }

    /// Consumer: moves up to `most` items to the end of `into`.
    pub(crate) fn take_into(&mut self, most: usize, into: &mut Vec<T>) {
        let n = self.items.len().min(most);
        let before = into.len();
        into.extend(self.items.drain(..n));
        self.bytes -= into[before..].iter().map(Weigh::weight).sum::<usize>();
    }

    /// Consumer: goes to sleep, to be woken by the next batch.
    pub(crate) fn park(&mut self, waker: &Waker) {
        park(&mut self.consumer, waker);
    }

    /// Takes out the first item that `mine` picks.
    pub(crate) fn remove(&mut self, mine: impl FnMut(&T) -> bool) -> Option<T> {
        let i = self.items.iter().position(mine)?;
        let item = self.items.remove(i)?;
        self.bytes -= item.weight();
        Some(item)
    }

    /// Takes out everything queued, leaving the queue empty.
    pub(crate) fn drain(&mut self) -> VecDeque<T> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    /// Whether the queue is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Closes the queue: everyone waiting for room and the consumer are pushed to `wake`,
    /// and what was queued is returned, for the caller to drop or fail.
    pub(crate) fn close(&mut self, wake: &mut Vec<Waker>) -> VecDeque<T> {
        self.closed = true;
        self.room.wake_all(wake);
        wake.extend(self.consumer.take());
        self.drain()
    }
}

/// A [`Queue`] behind a lock of its own, for owners that guard nothing else with it.
#[derive(Debug)]
pub(crate) struct Handoff<T> {
    queue: Mutex<Queue<T>>,
}

impl<T: Weigh> Handoff<T> {
    /// A hand-off bounded as [`Queue::new`].
    pub(crate) fn new(max_items: usize, max_bytes: usize) -> Self {
        Handoff {
            queue: Mutex::new(Queue::new(max_items, max_bytes)),
        }
    }

    /// Locks the queue. Every step leaves it consistent, so a panic elsewhere cannot poison
    /// it into a wrong one.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queue<T>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter::default());
        (counter.clone(), Waker::from(counter))
    }

    fn woken(counter: &Counter) -> usize {
        counter.0.load(Ordering::SeqCst)
    }

    impl Weigh for Vec<u8> {
        fn weight(&self) -> usize {
            self.len()
        }
    }

    #[test]
    fn the_bound_is_in_items_and_in_bytes_and_reserved_room_counts() {
        let mut queue = Queue::new(3, 10);
        assert!(queue.fits(20), "an item larger than the bound goes alone");
        queue.push(vec![0; 6]);
        assert!(queue.fits(4) && !queue.fits(5));
        assert!(!queue.is_full());
        queue.push(vec![0; 4]);
        assert!(queue.is_full(), "at the bound in bytes");
        queue.pop();
        assert_eq!(queue.bytes, 4);
        assert_eq!(queue.reserve(), 2, "all the room left for items");
        assert!(queue.is_full() && !queue.fits(0), "reserved room is taken");
        assert_eq!(queue.reserve(), 0);
        queue.unreserve(1);
        assert!(!queue.is_full());
        queue.push(vec![]);
        assert!(queue.is_full(), "at the bound in items");
    }

    #[test]
    fn waiters_are_served_first_come_first_served() {
        let mut line = Line::default();
        let (a, b, c) = (counting(), counting(), counting());
        let ta = line.join(&a.1);
        let tb = line.join(&b.1);
        let tc = line.join(&c.1);
        let first = line.grant(1).expect("a waiter");
        first.wake();
        assert_eq!((woken(&a.0), woken(&b.0)), (1, 0));
        assert_eq!(line.poll(tb, &b.1), None, "not b's turn yet");
        assert_eq!(line.poll(ta, &a.1), Some(1));
        line.grant(2).expect("a waiter").wake();
        assert_eq!((woken(&b.0), woken(&c.0)), (1, 0));
        assert_eq!(line.poll(tb, &b.1), Some(2));
        assert_eq!(line.leave(tc), None);
        assert!(matches!(line.grant(3), Err(3)), "nobody waits any more");
    }

    #[test]
    fn a_waiter_that_gives_up_passes_its_grant_on() {
        let mut line = Line::default();
        let (a, b) = (counting(), counting());
        let ta = line.join(&a.1);
        let _tb = line.join(&b.1);
        line.grant(7).expect("a waiter").wake();
        // `a` was woken, and gives up before it comes back: the grant is passed on.
        let passed = line.leave(ta).expect("what a was handed");
        line.grant(passed).expect("b waits").wake();
        assert_eq!((woken(&a.0), woken(&b.0)), (1, 1));
        // A waiter that leaves before it is handed anything just leaves the line.
        let mut line = Line::<u32>::default();
        let ta = line.join(&a.1);
        assert_eq!(line.leave(ta), None);
        assert!(line.is_empty());
    }

    #[test]
    fn a_later_poll_moves_the_wake_up_to_the_new_waker() {
        let mut line = Line::default();
        let (old, new) = (counting(), counting());
        let ticket = line.join(&old.1);
        assert_eq!(line.poll(ticket, &new.1), None);
        line.grant(()).expect("a waiter").wake();
        assert_eq!((woken(&old.0), woken(&new.0)), (0, 1));
    }

    #[test]
    fn a_batch_wakes_the_sleeping_consumer_once() {
        let mut queue = Queue::<Vec<u8>>::new(100, 1000);
        let (consumer, waker) = counting();
        // Awake: a batch wakes nobody.
        assert!(queue.push_batch(&mut vec![vec![1]]).is_none());
        queue.park(&waker);
        queue.park(&waker);
        let mut batch = vec![vec![1], vec![2, 3], vec![]];
        queue
            .push_batch(&mut batch)
            .expect("the consumer sleeps")
            .wake();
        assert!(batch.is_empty());
        assert!(
            queue.push_batch(&mut vec![vec![4]]).is_none(),
            "once a batch"
        );
        assert!(queue.push_batch(&mut Vec::new()).is_none());
        assert_eq!(woken(&consumer), 1);
        let mut out = VecDeque::new();
        queue.swap_out(&mut out);
        assert_eq!(out.len(), 5);
        assert_eq!((queue.len(), queue.bytes), (0, 0));
    }

    #[test]
    fn taking_part_of_the_queue_keeps_its_bytes_right() {
        let mut queue = Queue::<Vec<u8>>::new(100, 1000);
        queue.push_batch(&mut vec![vec![0; 1], vec![0; 2], vec![0; 3]]);
        let mut out = Vec::new();
        queue.take_into(2, &mut out);
        assert_eq!((out.len(), queue.len(), queue.bytes), (2, 1, 3));
        assert_eq!(queue.remove(|item| item.len() == 3), Some(vec![0; 3]));
        assert_eq!(queue.bytes, 0);
    }

    #[test]
    fn closing_wakes_everyone_and_hands_back_what_was_queued() {
        let mut queue = Queue::<Vec<u8>>::new(1, 1000);
        let (a, b, consumer) = (counting(), counting(), counting());
        queue.push(vec![1]);
        queue.room.wait(&a.1);
        queue.room.wait(&a.1);
        queue.room.wait(&b.1);
        assert_eq!(queue.room.len(), 2, "one place a waker");
        queue.park(&consumer.1);
        let mut wake = Vec::new();
        let left = queue.close(&mut wake);
        wake_all(wake);
        assert_eq!(left.len(), 1);
        assert!(queue.is_closed() && queue.is_empty());
        assert_eq!((woken(&a.0), woken(&b.0), woken(&consumer.0)), (1, 1, 1));
    }

    #[test]
    fn a_handoff_is_a_locked_queue() {
        let handoff = Handoff::<Vec<u8>>::new(2, 10);
        handoff.lock().push(vec![1]);
        assert_eq!(handoff.lock().pop(), Some(vec![1]));
        handoff.lock().park(Waker::noop());
        assert!(handoff.lock().wake_consumer().is_some());
    }
}
