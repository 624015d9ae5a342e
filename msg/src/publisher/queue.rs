//! A subscriber's queue: what publishes hand to its session, bounded by the high-water
//! marks, and the count of full queues that [`SlowSubscriber::Wait`] waits on.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use msg_core::SharedHead;
use tokio::sync::Notify;

use super::{PubOptions, SlowSubscriber};
use crate::handoff::{Queue, Weigh};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One message as every matching subscriber's session writes it: its header and topic
/// encoded once, and its payload, in one allocation that every subscriber's queue shares
/// by reference count. Each session patches in its own sequence number as it writes.
///
/// A queue entry is this pointer and a sequence number, 16 bytes: the publisher fills
/// and the session drains its queue from different cores, and an entry of the frame's
/// parts by value (96 bytes) cost more in moves and cache lines than the count does.
#[derive(Debug, Clone)]
pub(crate) struct OutFrame(Arc<FrameParts>);

/// What an [`OutFrame`] shares.
#[derive(Debug)]
pub(crate) struct FrameParts {
    pub(super) head: SharedHead,
    pub(super) payload: Bytes,
}

impl OutFrame {
    /// A frame of `head` and `payload`, in a spent frame from `spares` when one is there:
    /// in steady traffic a publication allocates nothing.
    pub(super) fn new(head: SharedHead, payload: Bytes, spares: &Spares) -> Self {
        if let Some(mut frame) = spares.take() {
            if let Some(parts) = Arc::get_mut(&mut frame.0) {
                parts.head = head;
                parts.payload = payload;
                return frame;
            }
        }
        OutFrame(Arc::new(FrameParts { head, payload }))
    }

    /// The frame emptied, to be reused, if nothing else holds it: what a session does
    /// with a frame once it is written.
    pub(super) fn into_spare(mut self) -> Option<OutFrame> {
        // Another subscriber's queue still holds it: a plain read says so, without the
        // locked exchange of `get_mut` on a line the other sessions are writing.
        if Arc::strong_count(&self.0) != 1 {
            return None;
        }
        let parts = Arc::get_mut(&mut self.0)?;
        parts.payload = Bytes::new();
        parts.head.release();
        Some(self)
    }
}

/// Spent frames handed back by the sessions for the publishers to fill again.
///
/// A frame is allocated by the publishing thread and freed by the session's, and that
/// cross-thread free is the allocator's slow path: it cost 15% of a 64-byte publication's
/// instructions with glibc's malloc. Sessions hand spent frames back here a batch at a
/// time, and a publishing thread takes them a batch at a time into a stash of its own, so
/// the lock is taken once per batch on each side, never per publication.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    frames: Mutex<Vec<OutFrame>>,
}

/// The most spent frames kept, per socket and per publishing thread: 256 empty frames
/// are about 26 KiB.
const SPARES: usize = 256;

thread_local! {
    /// Spent frames taken from a socket's [`Spares`] by this thread, to fill one per
    /// publication without a lock. Frames are alike whatever socket they came from.
    static STASH: std::cell::RefCell<Vec<OutFrame>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spares {
    /// A spent frame, from this thread's stash, refilled from `self` when empty.
    fn take(&self) -> Option<OutFrame> {
        STASH
            .try_with(|stash| {
                let mut stash = stash.borrow_mut();
                if stash.is_empty() {
                    let mut frames = lock(&self.frames);
                    if frames.is_empty() {
                        return None;
                    }
                    std::mem::swap(&mut *stash, &mut *frames);
                }
                stash.pop()
            })
            .ok()
            .flatten()
    }

    /// Keeps the spent frames in `spent`, up to the bound, and empties it.
    pub(super) fn give(&self, spent: &mut Vec<OutFrame>) {
        let mut frames = lock(&self.frames);
        let room = SPARES.saturating_sub(frames.len());
        if spent.len() > room {
            spent.truncate(room);
        }
        frames.append(spent);
    }
}

impl std::ops::Deref for OutFrame {
    type Target = FrameParts;

    fn deref(&self) -> &FrameParts {
        &self.0
    }
}

/// How many subscribers' queues are full, for [`SlowSubscriber::Wait`]: a publisher's
/// `poll_ready` reads one counter instead of visiting every queue.
#[derive(Debug, Default)]
pub(crate) struct Pressure {
    /// Queues at a high-water mark now.
    full: AtomicUsize,
    /// Woken whenever a full queue gets room or goes.
    room: Arc<Notify>,
}

impl Pressure {
    /// Whether some subscriber's queue is full.
    pub(super) fn any_full(&self) -> bool {
        self.full.load(Ordering::Acquire) > 0
    }

    /// The signal that a full queue got room.
    pub(super) fn room(&self) -> Arc<Notify> {
        self.room.clone()
    }
}

/// A queued message weighs its payload.
impl Weigh for (u64, OutFrame) {
    fn weight(&self) -> usize {
        self.1.payload.len()
    }
}

pub(crate) struct SessionQueue {
    /// Messages waiting, each with its sequence number in this session, bounded by the
    /// high-water marks; closed once the session is gone.
    frames: Queue<(u64, OutFrame)>,
    /// Sequence number of the last message offered, queued or dropped: a drop leaves a
    /// gap that the subscriber sees.
    last_seq: u64,
    /// Whether this queue counts in [`Pressure::full`].
    counted_full: bool,
}

/// What a publish and a subscriber's session share.
pub(crate) struct Session<A> {
    pub(super) id: u64,
    pub(super) peer: A,
    pub(super) queue: Mutex<SessionQueue>,
    /// The session task, woken when something is queued.
    pub(super) waker: AtomicWaker,
    /// Publishers waiting for room in this queue, under [`SlowSubscriber::Wait`].
    pub(super) space: Arc<Notify>,
    pub(super) sent: AtomicU64,
    pub(super) dropped: AtomicU64,
    /// When a drop was last logged, in milliseconds since the socket was made.
    pub(super) last_drop_log: AtomicU64,
    /// Counts this queue while it is full, under [`SlowSubscriber::Wait`] only.
    pressure: Option<Arc<Pressure>>,
}

/// What became of a frame offered to a session's queue.
pub(super) enum Offer {
    Queued,
    Full,
    Gone,
}

/// A frame as offered to a queue: shared with other queues, or handed over whole.
trait Entry {
    fn payload_len(&self) -> usize;
    fn into_frame(self) -> OutFrame;
}

impl Entry for &OutFrame {
    fn payload_len(&self) -> usize {
        self.payload.len()
    }

    fn into_frame(self) -> OutFrame {
        self.clone()
    }
}

impl Entry for OutFrame {
    fn payload_len(&self) -> usize {
        self.payload.len()
    }

    fn into_frame(self) -> OutFrame {
        self
    }
}

impl<A> Session<A> {
    /// A session of subscriber `peer`, its queue bounded by `options`; `pressure` counts
    /// it while it is full.
    pub(super) fn new(id: u64, peer: A, options: &PubOptions, pressure: &Arc<Pressure>) -> Self {
        Session {
            id,
            peer,
            queue: Mutex::new(SessionQueue {
                frames: Queue::new(options.high_water_mark, options.high_water_bytes),
                last_seq: 0,
                counted_full: false,
            }),
            waker: AtomicWaker::new(),
            space: Arc::new(Notify::new()),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            last_drop_log: AtomicU64::new(0),
            pressure: (options.slow_subscriber == SlowSubscriber::Wait).then(|| pressure.clone()),
        }
    }

    /// Queues a clone of `frame` unless the queue is full or closed. Under the drop
    /// policy a full queue still takes a sequence number, so that the subscriber sees the
    /// gap.
    pub(super) fn offer(&self, frame: &OutFrame, policy: SlowSubscriber) -> Offer {
        match self.offer_entry(frame, policy) {
            Ok(()) => Offer::Queued,
            Err((offer, _)) => offer,
        }
    }

    /// As [`offer`](Self::offer), queuing `frame` itself: for the last subscriber a
    /// publication goes to, which then takes no reference of its own. The frame comes
    /// back with the reason when it is not queued.
    pub(super) fn offer_last(
        &self,
        frame: OutFrame,
        policy: SlowSubscriber,
    ) -> Result<(), (Offer, OutFrame)> {
        self.offer_entry(frame, policy)
    }

    fn offer_entry<F: Entry>(&self, frame: F, policy: SlowSubscriber) -> Result<(), (Offer, F)> {
        {
            let mut queue = lock(&self.queue);
            if queue.frames.is_closed() {
                return Err((Offer::Gone, frame));
            }
            if !queue.frames.fits(frame.payload_len()) {
                if policy == SlowSubscriber::Drop {
                    queue.last_seq += 1;
                }
                return Err((Offer::Full, frame));
            }
            queue.last_seq += 1;
            let seq = queue.last_seq;
            let was_empty = queue.frames.is_empty();
            queue.frames.push((seq, frame.into_frame()));
            self.count_pressure(&mut queue);
            if !was_empty {
                // The session was woken when the queue stopped being empty, and it drains
                // the queue whole before it sleeps again.
                return Ok(());
            }
        }
        self.waker.wake();
        Ok(())
    }

    /// Moves up to `most` queued messages into `batch`, and tells waiting publishers
    /// there is room.
    pub(super) fn take(&self, most: usize, batch: &mut Vec<(u64, OutFrame)>) {
        let roomier = {
            let mut queue = lock(&self.queue);
            queue.frames.take_into(most, batch);
            self.count_pressure(&mut queue)
        };
        if roomier {
            if let Some(pressure) = &self.pressure {
                pressure.room.notify_waiters();
            }
        }
    }

    /// Whether nothing waits in the queue.
    pub(super) fn is_empty(&self) -> bool {
        lock(&self.queue).frames.is_empty()
    }

    /// Messages waiting in the queue.
    pub(super) fn len(&self) -> usize {
        lock(&self.queue).frames.len()
    }

    /// Closes the queue: later offers find it gone. Returns how many messages were still
    /// queued, now dropped, and wakes every publisher waiting on it.
    pub(super) fn close(&self) -> u64 {
        let left = {
            let mut queue = lock(&self.queue);
            // Nobody waits in the queue itself: publishers wait on `space`, the session
            // on its own waker.
            let left = queue.frames.close(&mut Vec::new()).len() as u64;
            self.count_pressure(&mut queue);
            left
        };
        self.space.notify_waiters();
        if let Some(pressure) = &self.pressure {
            pressure.room.notify_waiters();
        }
        left
    }

    /// Brings [`Pressure::full`] up to date with this queue; returns whether the queue
    /// just stopped being full.
    fn count_pressure(&self, queue: &mut SessionQueue) -> bool {
        let Some(pressure) = &self.pressure else {
            return false;
        };
        let full = !queue.frames.is_closed() && queue.frames.is_full();
        if full == queue.counted_full {
            return false;
        }
        queue.counted_full = full;
        if full {
            pressure.full.fetch_add(1, Ordering::AcqRel);
            false
        } else {
            pressure.full.fetch_sub(1, Ordering::AcqRel);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use msg_core::wire::HEADER_LEN;
    use msg_core::{Encoding, FrameKind};

    use super::*;

    fn frame() -> OutFrame {
        let payload = Bytes::from_static(b"x");
        OutFrame(Arc::new(FrameParts {
            head: SharedHead::new(
                FrameKind::Publish,
                Encoding::IDENTITY,
                Bytes::from_static(b"t"),
                payload.len(),
                1024,
            )
            .unwrap(),
            payload,
        }))
    }

    #[test]
    fn full_queues_are_counted_as_they_fill_drain_and_close() {
        let options = PubOptions::default()
            .slow_subscriber(SlowSubscriber::Wait)
            .high_water_mark(2);
        let pressure = Arc::new(Pressure::default());
        let one = Session::new(1, (), &options, &pressure);
        let two = Session::new(2, (), &options, &pressure);
        let mut batch = Vec::new();
        for (full_before, session) in [&one, &two].into_iter().enumerate() {
            let offer = |session: &Session<()>| session.offer(&frame(), SlowSubscriber::Wait);
            assert!(matches!(offer(session), Offer::Queued));
            assert_eq!(pressure.full.load(Ordering::Acquire), full_before);
            assert!(matches!(offer(session), Offer::Queued));
            assert_eq!(pressure.full.load(Ordering::Acquire), full_before + 1);
            assert!(matches!(offer(session), Offer::Full));
        }
        assert_eq!(pressure.full.load(Ordering::Acquire), 2);
        let room = pressure.room();
        let woken = room.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        one.take(1, &mut batch);
        assert_eq!(batch.len(), 1);
        assert_eq!(pressure.full.load(Ordering::Acquire), 1);
        assert!(
            futures_util::FutureExt::now_or_never(woken).is_some(),
            "room made wakes the waiting"
        );
        assert_eq!(two.close(), 2);
        assert!(!pressure.any_full());
        assert!(matches!(
            two.offer(&frame(), SlowSubscriber::Wait),
            Offer::Gone
        ));
    }

    #[test]
    fn written_frames_are_filled_again_and_hold_nothing_of_their_message() {
        let spares = Spares::default();
        let shared = frame();
        let other = shared.clone();
        assert!(
            shared.into_spare().is_none(),
            "a frame another queue still holds is not reused"
        );
        let payload = other.payload.clone();
        let spare = other.into_spare().expect("the last holder hands it back");
        assert!(spare.payload.is_empty(), "the payload is let go");
        assert_eq!(spare.head.len(), HEADER_LEN, "the topic is let go");
        let at = Arc::as_ptr(&spare.0);
        spares.give(&mut vec![spare]);
        let head = SharedHead::new(
            FrameKind::Publish,
            Encoding::IDENTITY,
            Bytes::from_static(b"again"),
            payload.len(),
            1024,
        )
        .unwrap();
        let again = OutFrame::new(head, payload.clone(), &spares);
        assert_eq!(Arc::as_ptr(&again.0), at, "the spent frame is filled again");
        assert_eq!(again.payload, payload);
        assert_eq!(again.head.len(), HEADER_LEN + 5);
    }

    #[test]
    fn under_the_drop_policy_nothing_is_counted() {
        let options = PubOptions::default().high_water_mark(1);
        let pressure = Arc::new(Pressure::default());
        let session = Session::new(1, (), &options, &pressure);
        assert!(matches!(
            session.offer(&frame(), SlowSubscriber::Drop),
            Offer::Queued
        ));
        assert!(matches!(
            session.offer(&frame(), SlowSubscriber::Drop),
            Offer::Full
        ));
        assert!(!pressure.any_full());
    }
}
