//! One connection of a [`SubSocket`](super::SubSocket) to a publisher: dial, replay the
//! subscriptions, receive, and redial when the connection is lost.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use msg_core::proto::{Delivery, Link, Subscriber};
use msg_core::Frame;
use msg_transports::Transport;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{lock, Change, Dialing, Mailbox, SubMessage};
use crate::accept::Established;
use crate::dial::{self, End};
use crate::driver::{Driver, Ending, Endpoint};
use crate::Error;

/// Most messages handed to the inbox at once.
const BATCH: usize = 256;
/// Most payload bytes handed to the inbox at once, so that a batch of large messages
/// stays within the inbox's own bound.
const BATCH_BYTES: usize = 256 * 1024;
/// While a subscription change waits for its ack, reading goes on past a full batch, up to
/// this many messages held, so that the ack reaches the task awaiting it even when that
/// task is the one that would drain the full inbox. It covers what a publisher with the
/// default queue has queued and written ahead of the ack (1,024 messages queued, 1 MiB
/// being written, and the sockets' buffers).
const AWAITING_ACK: usize = 64 * 1024;
/// The same bound in payload bytes.
const AWAITING_ACK_BYTES: usize = 16 * 1024 * 1024;

/// What the reconnect supervisor runs on each connection of a subscriber socket to one
/// publisher.
pub(super) struct SubSession<A> {
    pub(super) shared: Arc<Mailbox<A>>,
    pub(super) changes: mpsc::Receiver<Change>,
    pub(super) connected: Arc<AtomicBool>,
    /// How dialing this publisher goes, for a `subscribe` that waits for a publisher.
    pub(super) dialing: Arc<std::sync::Mutex<Dialing>>,
    /// Told once the first connection's replayed subscriptions are applied.
    pub(super) ready: Option<oneshot::Sender<()>>,
    pub(super) stop: CancellationToken,
    /// Longest a connection of a closed socket takes to close cleanly.
    pub(super) linger: Duration,
    /// Where this publisher is counted in `msg_subscriber_endpoints`.
    pub(super) state: EndpointState,
}

/// The state of one publisher's connection, counted in the `msg_subscriber_endpoints`
/// gauge by `state`: `connecting` (dialing, or redialing a lost one), `connected`,
/// `stopped` (its redials stopped for good); no longer counted once its supervisor ends.
/// Changes are rare (a connection's life), so the gauge is looked up each time.
pub(super) struct EndpointState(Option<&'static str>);

impl EndpointState {
    pub(super) fn new() -> Self {
        let mut state = EndpointState(None);
        state.enter(Some("connecting"));
        state
    }

    fn enter(&mut self, state: Option<&'static str>) {
        if self.0 == state {
            return;
        }
        if let Some(old) = self.0 {
            metrics::gauge!("msg_subscriber_endpoints", "state" => old).decrement(1.0);
        }
        if let Some(new) = state {
            metrics::gauge!("msg_subscriber_endpoints", "state" => new).increment(1.0);
        }
        self.0 = state;
    }
}

impl Drop for EndpointState {
    fn drop(&mut self) {
        self.enter(None);
    }
}

impl<T: Transport> dial::Session<T> for SubSession<T::Addr> {
    async fn serve(&mut self, conn: Established<T::Io, T::Addr>) -> End {
        // The channel of changes is lent to the connection while it lives.
        let changes = std::mem::replace(&mut self.changes, mpsc::channel(1).1);
        let mut endpoint = SubEndpoint::new(conn.peer, self.shared.clone(), self.ready.take());
        endpoint.changes = Some(changes);
        let mut driver = Driver::new(conn.io, endpoint);
        // Marked connected before the replay: a subscription made from here on is sent
        // on this connection, at worst twice, never missed.
        self.connected.store(true, Ordering::SeqCst);
        self.state.enter(Some("connected"));
        lock(&self.dialing).last = None;
        self.shared.links.notify_waiters();
        let (link, endpoint) = driver.parts_mut();
        if let Err(e) = endpoint.replay(link) {
            self.connected.store(false, Ordering::SeqCst);
            self.state.enter(Some("connecting"));
            if let Some(changes) = endpoint.changes.take() {
                self.changes = changes;
            }
            return End::Lost(e);
        }
        let end = tokio::select! {
            _ = self.stop.cancelled() => End::Closed,
            end = &mut driver => end,
        };
        if matches!(end, End::Closed) {
            // The socket is closed: what is queued leaves, and the transport's own close
            // (a TLS close_notify, a QUIC stream's finish) completes, within the linger.
            let close = std::future::poll_fn(|cx| driver.poll_shutdown(cx));
            let _ = tokio::time::timeout(self.linger, close).await;
        }
        self.connected.store(false, Ordering::SeqCst);
        self.state.enter(Some("connecting"));
        let endpoint = driver.endpoint_mut();
        self.ready = endpoint.ready.take();
        if let Some(changes) = endpoint.changes.take() {
            self.changes = changes;
        }
        // Changes asked for meanwhile are replayed on the next connection.
        while self.changes.try_recv().is_ok() {}
        if !matches!(end, End::Closed) {
            self.shared.tell_if_all_down();
        }
        end
    }

    fn dial_failed(&mut self, error: &Error) {
        lock(&self.dialing).last = Some(Arc::new(error.clone()));
        self.shared.tell_if_all_down();
    }

    /// Redialing stopped: a `subscribe` waiting for this publisher fails with `error`,
    /// unless the socket is closed.
    fn stop(&mut self, error: Error) {
        self.connected.store(false, Ordering::SeqCst);
        if !matches!(error, Error::Closed) {
            self.state.enter(Some("stopped"));
            lock(&self.dialing).stopped = Some(error);
            self.shared.links.notify_waiters();
        }
    }
}

/// A subscriber's side of one connection to a publisher: the subscriber role between the
/// socket's inbox and channel of changes and the [`Driver`].
struct SubEndpoint<A> {
    peer: A,
    shared: Arc<Mailbox<A>>,
    /// The socket's subscription changes, lent while the driver is polled.
    changes: Option<mpsc::Receiver<Change>>,
    /// The socket dropped its side of the changes: it is closed.
    closed: bool,
    /// The protocol: changes sent and their acks, sequence numbers. The waiter of a change
    /// is its caller's channel, or none for a replayed one.
    role: Subscriber<Option<oneshot::Sender<Result<(), String>>>>,
    /// Acks of the replayed subscriptions still to come before `ready` is told.
    replaying: usize,
    ready: Option<oneshot::Sender<()>>,
    batch: Vec<SubMessage<A>>,
    /// Payload bytes in `batch`.
    batch_bytes: usize,
    /// A full batch was handed over: read on at once.
    more: bool,
}

impl<A: Clone> SubEndpoint<A> {
    fn new(peer: A, shared: Arc<Mailbox<A>>, ready: Option<oneshot::Sender<()>>) -> Self {
        SubEndpoint {
            peer,
            shared,
            changes: None,
            closed: false,
            role: Subscriber::new(),
            replaying: 0,
            ready,
            batch: Vec::with_capacity(BATCH),
            batch_bytes: 0,
            more: false,
        }
    }

    /// Queues every current subscription, before anything else on this connection.
    fn replay(&mut self, link: &mut Link) -> Result<(), Error> {
        let patterns: Vec<String> = lock(&self.shared.subscriptions).iter().cloned().collect();
        for pattern in &patterns {
            self.role.change(true, pattern, None, link)?;
        }
        self.replaying = patterns.len();
        if self.replaying == 0 {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
        }
        Ok(())
    }

    fn full(&self) -> bool {
        self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES
    }
}

impl<A: Clone> Endpoint for SubEndpoint<A> {
    /// Sends the subscription changes asked for.
    fn send(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error> {
        let Some(changes) = self.changes.as_mut() else {
            return Ok(false);
        };
        let mut took = false;
        loop {
            match changes.poll_recv(cx) {
                Poll::Ready(Some(change)) => {
                    self.role.change(
                        change.subscribe,
                        &change.pattern,
                        Some(change.applied),
                        link,
                    )?;
                    took = true;
                }
                Poll::Ready(None) => {
                    self.closed = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        Ok(took)
    }

    fn poll_end(&mut self, _link: &Link, _cx: &mut Context<'_>) -> Option<Ending> {
        self.closed.then_some(Ending::Now(End::Closed))
    }

    #[inline]
    fn receive(
        &mut self,
        frame: Frame,
        _link: &mut Link,
        _cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        match self.role.receive(frame)? {
            Delivery::Publication { frame, missed } => {
                if missed > 0 {
                    self.shared.missed.fetch_add(missed, Ordering::Relaxed);
                    self.shared
                        .missed_counter
                        .get(|| metrics::counter!("msg_subscriber_missed_total"))
                        .increment(missed);
                }
                self.batch_bytes += frame.payload.len();
                self.batch.push(SubMessage {
                    topic: frame.topic,
                    payload: frame.payload,
                    encoding: frame.encoding,
                    publisher: self.peer.clone(),
                    seq: frame.id,
                });
            }
            Delivery::Applied { waiter, refusal } => {
                let outcome = refusal.map_or(Ok(()), Err);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(outcome);
                    }
                    None => {
                        self.replaying = self.replaying.saturating_sub(1);
                        if self.replaying == 0 {
                            if let Some(ready) = self.ready.take() {
                                let _ = ready.send(());
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands the batch read to the inbox; a full inbox holds it, and reading waits.
    fn poll_deliver(&mut self, _link: &mut Link, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.batch.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let full = self.full();
        if self
            .shared
            .deliver(&mut self.batch, &mut self.batch_bytes, cx)
        {
            self.more |= full;
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn read_paused(&self, _link: &Link) -> bool {
        if self.role.unacked() > 0 {
            // An ack is due: read on towards it, within its own bound.
            return self.batch.len() >= AWAITING_ACK || self.batch_bytes >= AWAITING_ACK_BYTES;
        }
        self.full()
    }

    fn holding(&self) -> bool {
        !self.batch.is_empty()
    }

    fn again(&mut self) -> bool {
        std::mem::take(&mut self.more)
    }

    fn finish(&mut self, _end: &End, cx: &mut Context<'_>) {
        if !self.batch.is_empty() {
            // Keep what arrived before the end; a full inbox loses it.
            let _ = self
                .shared
                .deliver(&mut self.batch, &mut self.batch_bytes, cx);
        }
    }
}
