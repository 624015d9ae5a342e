//! One subscriber's session on a publisher: applies its subscriptions, writes what is
//! queued for it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::proto::{Link, Publisher};
use msg_core::Frame;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::registry::Subscriptions;
use super::{Hub, OutFrame, Session};
use crate::accept::Established;
use crate::dial::End;
use crate::driver::{Driver, Ending, Endpoint};
use crate::events::{EventSink, SocketEvent};
use crate::topic::validate_pattern;
use crate::Error;

/// Registers a new subscriber and runs its session in a task of its own, tracked by
/// `tracker`. `stop` ends the session at once; `drain` ends it once what is queued is
/// written.
pub(super) fn spawn<Io, A>(
    conn: Established<Io, A>,
    shared: Arc<Hub<A>>,
    stop: CancellationToken,
    drain: CancellationToken,
    tracker: &TaskTracker,
    events: Arc<EventSink<A>>,
) where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    A: Clone + fmt::Display + Send + Sync + 'static,
{
    let session = shared.add_session(conn.peer);
    let endpoint = PubEndpoint {
        role: Publisher::new(),
        subscriptions: Subscriptions::new(session.id),
        session,
        shared,
        batch: Vec::new(),
        spent: Vec::new(),
        draining: false,
    };
    let mut driver = Driver::new(conn.io, endpoint);
    tracker.spawn(async move {
        let end = tokio::select! {
            end = &mut driver => Some(end),
            _ = stop.cancelled() => Some(End::Closed),
            _ = drain.cancelled() => None,
        };
        let end = match end {
            Some(end) => end,
            None => {
                driver.endpoint_mut().draining = true;
                tokio::select! {
                    end = &mut driver => end,
                    _ = stop.cancelled() => End::Closed,
                }
            }
        };
        let task = driver.endpoint_mut();
        let error = match end {
            End::Closed | End::Lost(Error::ConnectionClosed) => Error::ConnectionClosed,
            End::Lost(e) => {
                tracing::warn!(peer = %task.session.peer, error = %e, "subscriber session closed");
                e
            }
        };
        task.close();
        metrics::counter!("msg_disconnections_total", "socket" => "pub").increment(1);
        let peer = task.session.peer.clone();
        events.emit(|| SocketEvent::Disconnected { peer, error });
    });
}

/// A publisher's side of one subscriber's connection: the publisher role between the
/// session's queue and the [`Driver`].
struct PubEndpoint<A> {
    /// The protocol: subscription changes in, acks and publications out.
    role: Publisher,
    session: Arc<Session<A>>,
    shared: Arc<Hub<A>>,
    /// Messages taken from the queue with their sequence numbers, reused from one batch
    /// to the next.
    batch: Vec<(u64, OutFrame)>,
    /// Frames of the batch written, handed back to the publishers together.
    spent: Vec<OutFrame>,
    /// Patterns the subscriber holds, and its changes not yet applied.
    subscriptions: Subscriptions,
    /// Shutting down: the session ends once everything queued for it is written.
    draining: bool,
}

impl<A: Clone + fmt::Display> Endpoint for PubEndpoint<A> {
    /// Moves queued messages into the write buffer while it has room.
    fn send(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error> {
        self.session.waker.register(cx.waker());
        Ok(self.take_queued(link))
    }

    fn poll_end(&mut self, link: &Link, _cx: &mut Context<'_>) -> Option<Ending> {
        (self.draining && link.queued_len() == 0 && self.session.is_empty())
            .then_some(Ending::Graceful)
    }

    fn receive(
        &mut self,
        frame: Frame,
        link: &mut Link,
        _cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        self.apply(frame, link)
    }

    /// Applies the subscription changes read so far, together, before any of their acks
    /// is written.
    fn poll_deliver(&mut self, _link: &mut Link, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.shared.registry.apply(&mut self.subscriptions);
        Poll::Ready(Ok(()))
    }

    /// Subscription frames are read only while the acks owed are under the write
    /// high-water: one that sends them without reading their acks holds its session at
    /// that, not at what it sends.
    fn read_paused(&self, link: &Link) -> bool {
        link.over_high_water()
    }

    fn again(&mut self) -> bool {
        // A full queue wakes no one when a publish is dropped, so the session must not
        // stop short while messages wait.
        !self.session.is_empty()
    }

    fn finish(&mut self, _end: &End, _cx: &mut Context<'_>) {}
}

impl<A: Clone + fmt::Display> PubEndpoint<A> {
    fn apply(&mut self, frame: Frame, link: &mut Link) -> Result<(), Error> {
        let change = self.role.receive(frame)?;
        let (subscribe, pattern) = (change.subscribe, change.pattern());
        validate_pattern(pattern)?;
        let options = &self.shared.options;
        // A refusal is an ack with the reason as its payload: the subscriber's `subscribe`
        // fails with it, and the connection goes on.
        let mut refusal = None;
        if subscribe && pattern.len() > options.max_pattern_len {
            crate::limits::hit(crate::limits::PATTERN_LEN);
            refusal = Some(format!(
                "pattern of {} bytes is longer than this publisher's limit of {}",
                pattern.len(),
                options.max_pattern_len
            ));
        } else if subscribe
            && self.subscriptions.len() >= options.max_subscriptions
            && !self.subscriptions.holds(&self.shared.registry, pattern)
        {
            // A pattern already held takes no more room; a new one past the limit is refused.
            crate::limits::hit(crate::limits::SUBSCRIPTIONS);
            refusal = Some(format!(
                "this publisher takes at most {} patterns per subscriber",
                options.max_subscriptions
            ));
        } else {
            // Applied with the others read in this pass, before the ack is written.
            self.subscriptions
                .set(&self.shared.registry, pattern, subscribe);
        }
        match &refusal {
            Some(reason) => {
                tracing::info!(peer = %self.session.peer, pattern, %reason, "subscription refused")
            }
            None => {
                tracing::debug!(peer = %self.session.peer, pattern, subscribe, "subscription changed")
            }
        }
        self.role.ack(change.id, refusal.as_deref(), link)?;
        Ok(())
    }

    /// Step: moves queued messages into the write buffer while it has room.
    fn take_queued(&mut self, link: &mut Link) -> bool {
        let mut moved = 0;
        while !link.over_high_water() {
            self.session.take(64, &mut self.batch);
            if self.batch.is_empty() {
                break;
            }
            moved += self.batch.len();
            for (seq, frame) in self.batch.drain(..) {
                // Checked against the frame limit when it was published.
                self.role.publish(seq, &frame.head, &frame.payload, link);
                self.spent.extend(frame.into_spare());
            }
            if !self.spent.is_empty() {
                self.shared.spares.give(&mut self.spent);
            }
        }
        if moved > 0 {
            self.session.sent.fetch_add(moved as u64, Ordering::Relaxed);
            self.session.space.notify_waiters();
        }
        moved > 0
    }

    /// Unregisters the session; what is still queued for it counts as dropped.
    fn close(&mut self) {
        self.shared.registry.remove(self.session.id);
        let left = self.session.close();
        if left > 0 {
            metrics::counter!("msg_publish_dropped_total").increment(left);
            self.session.dropped.fetch_add(left, Ordering::Relaxed);
            self.shared.dropped.fetch_add(left, Ordering::Relaxed);
        }
        tracing::debug!(peer = %self.session.peer, "subscriber left");
    }
}
