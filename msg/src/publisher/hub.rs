//! The publisher's hub: what the socket handles, the accept loop and the sessions share,
//! and a publication's way from a handle into the matching subscribers' queues.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use msg_core::{FrameKind, Message, SharedHead};

use super::queue::{Offer, OutFrame, Pressure, Session, Spares};
use super::registry::Registry;
use super::route::Routed;
use super::{PubOptions, SlowSubscriber};
use crate::counters::Lazy;
use crate::limits::Hits;
use crate::Error;

/// The publisher's hub: the subscriber sessions, their subscriptions, and the counters,
/// shared by the socket handles, the accept loop and the sessions.
pub(crate) struct Hub<A> {
    pub(super) registry: Registry<A>,
    pub(super) options: PubOptions,
    pub(super) next_session: AtomicU64,
    pub(super) published: AtomicU64,
    pub(super) queued: AtomicU64,
    pub(super) dropped: AtomicU64,
    born: Instant,
    /// Set by `close`: publishing fails.
    pub(super) closed: AtomicBool,
    /// The full queues, under [`SlowSubscriber::Wait`].
    pub(super) pressure: Arc<Pressure>,
    /// `msg_publish_dropped_total`, registered at the first drop.
    dropped_counter: Lazy,
    /// The `queued_bytes` limit's counter, hit by every drop.
    full_queue: Hits,
    /// Frames the sessions have written, to be filled again.
    pub(super) spares: Spares,
}

impl<A: Clone + fmt::Display> Hub<A> {
    pub(super) fn new(options: PubOptions) -> Self {
        Hub {
            registry: Registry::default(),
            options,
            next_session: AtomicU64::new(1),
            published: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            born: Instant::now(),
            closed: AtomicBool::new(false),
            pressure: Arc::default(),
            dropped_counter: Lazy::default(),
            full_queue: Hits::new(crate::limits::QUEUED_BYTES),
            spares: Spares::default(),
        }
    }

    /// A new subscriber's session, registered.
    pub(super) fn add_session(&self, peer: A) -> Arc<Session<A>> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let session = Arc::new(Session::new(id, peer, &self.options, &self.pressure));
        self.registry.add(session.clone());
        session
    }

    /// The frame every subscriber gets: header and topic encoded once for all of them.
    fn frame(&self, routed: &Routed<A>, msg: &Message) -> Result<OutFrame, Error> {
        let head = SharedHead::new(
            FrameKind::Publish,
            msg.encoding(),
            routed.topic.clone(),
            msg.payload().len(),
            self.options.max_frame_len,
        )
        .map_err(crate::error::frame_refused)?;
        Ok(OutFrame::new(head, msg.payload().clone(), &self.spares))
    }

    fn count_drop(&self, session: &Session<A>) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.dropped_counter
            .get(|| metrics::counter!("msg_publish_dropped_total"))
            .increment(1);
        // The subscriber's queue is at its high-water mark or bytes: the queued_bytes limit.
        self.full_queue.hit();
        let dropped = session.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Log at most once a second per subscriber, however fast the drops come.
        let now = self.born.elapsed().as_millis() as u64;
        let last = session.last_drop_log.load(Ordering::Relaxed);
        if (dropped == 1 || now >= last + 1000)
            && session
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                peer = %session.peer,
                dropped,
                "subscriber is too slow: messages dropped for it"
            );
        }
    }

    /// [`Error::Closed`] once the socket is closed.
    pub(super) fn ensure_open(&self) -> Result<(), Error> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// Counts one publication, queued for `queued` subscribers.
    fn count_published(&self, queued: u64) {
        if queued > 0 {
            self.queued.fetch_add(queued, Ordering::Relaxed);
        }
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes `msg` to the sessions `routed` found for its topic, as far as it can
    /// without waiting: the whole way under [`SlowSubscriber::Drop`], and under
    /// [`SlowSubscriber::Wait`] up to the first subscriber whose queue is full, which
    /// [`Blocked`] names for [`finish`](Self::finish) to wait on. Most publishes never
    /// wait, and take no future of their own.
    ///
    /// # Errors
    ///
    /// [`Error::FrameTooLarge`] over the frame limit. The caller checks that the socket
    /// is open ([`ensure_open`](Self::ensure_open)).
    pub(super) fn start(
        &self,
        routed: &Routed<A>,
        msg: &Message,
    ) -> Result<Option<Blocked>, Error> {
        let frame = self.frame(routed, msg)?;
        let policy = self.options.slow_subscriber;
        let mut queued = 0;
        let Some((last, others)) = routed.sessions.split_last() else {
            self.count_published(0);
            return Ok(None);
        };
        for (at, session) in others.iter().enumerate() {
            match session.offer(&frame, policy) {
                Offer::Queued => queued += 1,
                Offer::Full if policy == SlowSubscriber::Wait => {
                    return Ok(Some(Blocked { at, frame, queued }));
                }
                Offer::Full => self.count_drop(session),
                Offer::Gone => {}
            }
        }
        // The last queue takes the frame itself: no reference is taken and let go here.
        match last.offer_last(frame, policy) {
            Ok(()) => queued += 1,
            Err((Offer::Full, frame)) if policy == SlowSubscriber::Wait => {
                let at = others.len();
                return Ok(Some(Blocked { at, frame, queued }));
            }
            Err((Offer::Full, _)) => self.count_drop(last),
            Err(_) => {}
        }
        self.count_published(queued);
        Ok(None)
    }

    /// Finishes a publish that [`start`](Self::start) left blocked, waiting for room in
    /// each full queue in turn.
    pub(super) async fn finish(&self, routed: &Routed<A>, blocked: Blocked) {
        let Blocked {
            at,
            frame,
            mut queued,
        } = blocked;
        for session in &routed.sessions[at..] {
            let mut offer = session.offer(&frame, SlowSubscriber::Wait);
            while let Offer::Full = offer {
                // The room signal is armed only once the queue was found full, and before it
                // is offered again, so that room made in between is not missed.
                let space = session.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                offer = session.offer(&frame, SlowSubscriber::Wait);
                if let Offer::Full = offer {
                    space.await;
                    offer = session.offer(&frame, SlowSubscriber::Wait);
                }
            }
            if let Offer::Queued = offer {
                queued += 1;
            }
        }
        self.count_published(queued);
    }

    /// Publishes `msg` to the sessions `routed` found for its topic, waiting for room
    /// under [`SlowSubscriber::Wait`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the socket is closed, the routing error, or as
    /// [`start`](Self::start).
    pub(super) async fn publish(
        &self,
        routed: Result<Arc<Routed<A>>, Error>,
        msg: &Message,
    ) -> Result<(), Error> {
        give_way().await;
        let routed = self.ensure_open().and(routed)?;
        if let Some(blocked) = self.start(&routed, msg)? {
            self.finish(&routed, blocked).await;
        }
        Ok(())
    }
}

/// A publish stopped at a full queue under [`SlowSubscriber::Wait`]: the frame, the index
/// of the session it waits for, and the queues it went into before.
pub(super) struct Blocked {
    at: usize,
    frame: OutFrame,
    queued: u64,
}

/// Gives way to the other tasks on this worker now and then.
///
/// A publish under the drop policy never waits. So that a loop of them still gives way to
/// the other tasks on its worker (the subscribers' sessions among them), every 16th publish
/// on a thread spends a unit of tokio's cooperative budget: a forced yield every 2048
/// publishes; one every 128 cost about 15% of the rate at 64 B.
pub(super) async fn give_way() {
    thread_local! {
        static PUBLISHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    if PUBLISHES.with(|n| {
        n.set(n.get().wrapping_add(1));
        n.get() % 16 == 0
    }) {
        tokio::task::consume_budget().await;
    }
}
