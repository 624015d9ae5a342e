//! [`Forwarder`]: a subscriber upstream and a publisher downstream in one process, for
//! fan-out across hosts (ZeroMQ's XSUB/XPUB device).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use msg_core::Message;
use msg_transports::Transport;
use tokio_stream::StreamExt;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::{Error, PubSocket, PubStats, SubSocket, SubStats, SubscriptionChange};

/// Counters of a [`Forwarder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ForwarderStats {
    /// Messages received from upstream.
    pub received: u64,
    /// Messages received that the publisher downstream refused (over its frame limit) and
    /// were dropped.
    pub refused: u64,
    /// Patterns subscribed upstream now: those some subscriber downstream holds.
    pub subscriptions: usize,
    /// Subscription changes upstream that failed (no publisher upstream within
    /// [`SubOptions::reconnect_wait`](crate::SubOptions::reconnect_wait), or a publisher's
    /// refusal); a pattern that failed for want of a publisher is still sent to every one
    /// that connects.
    pub failed_changes: u64,
    /// The subscriber's counters upstream, as of the last message or change the forwarder
    /// read: its `missed` counts what the publishers upstream dropped on the way to the
    /// forwarder.
    pub upstream: SubStats,
    /// The publisher's counters downstream: its `dropped` counts what the forwarder dropped
    /// for slow subscribers downstream, each seen there as a gap in the sequence numbers.
    pub downstream: PubStats,
}

/// What the forwarding task and the handle share.
#[derive(Default)]
struct Counters {
    received: AtomicU64,
    refused: AtomicU64,
    failed_changes: AtomicU64,
    subscriptions: AtomicU64,
    upstream: Mutex<SubStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Forwards publications from publishers upstream to subscribers downstream, and the
/// subscriptions of those subscribers upstream: ZeroMQ's XSUB/XPUB device, for fan-out
/// across hosts.
///
/// It takes a [`SubSocket`] connected upstream and a [`PubSocket`] bound downstream, and
/// runs in a task of its own. Only what some subscriber downstream wants crosses the link:
/// the forwarder subscribes upstream to the union of the patterns held downstream
/// ([`PubSocket::subscription_changes`]), when the first subscriber takes a pattern, and
/// unsubscribes when the last one gives it up or leaves. A subscriber downstream whose
/// `subscribe` returned has its pattern applied by the forwarder's publisher; the
/// subscription upstream follows, one round trip later.
///
/// Drops are counted on every hop ([`ForwarderStats`]): what a publisher upstream drops
/// for the forwarder is a gap the forwarder sees (`upstream.missed`), and what the
/// forwarder drops for a slow subscriber downstream (`downstream.dropped`) is a gap that
/// subscriber sees in its [`SubMessage::seq`](crate::SubMessage::seq)s and its
/// [`SubStats::missed`]. Payloads are forwarded decoded; give the publisher a compressor
/// ([`PubSocket::with_compressor`]) to compress them again downstream. Dropping the
/// forwarder stops it, and its sockets close in the background; [`close`](Self::close)
/// waits for them.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{Forwarder, PubSocket, SubSocket, Tcp};
/// use tokio_stream::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), msg::Error> {
/// let mut origin = PubSocket::new(Tcp::default());
/// origin.bind("127.0.0.1:0").await?;
/// let mut origin_changes = origin.subscription_changes();
///
/// // The forwarder: connected upstream, bound downstream.
/// let mut upstream = SubSocket::new(Tcp::default());
/// upstream.connect(origin.local_addr().unwrap()).await?;
/// let mut downstream = PubSocket::new(Tcp::default());
/// downstream.bind("127.0.0.1:0").await?;
/// let forwarder = Forwarder::spawn(upstream, downstream);
///
/// let mut sub = SubSocket::new(Tcp::default());
/// sub.connect(forwarder.local_addr().unwrap()).await?;
/// sub.subscribe("prices.>").await?;
/// // The forwarder subscribes upstream in turn.
/// assert_eq!(origin_changes.next().await.unwrap().pattern, "prices.>");
///
/// origin.publish("prices.eu.btc", Bytes::from("97000")).await?;
/// assert_eq!(sub.next().await.unwrap().payload(), "97000");
/// forwarder.close().await?;
/// # Ok(())
/// # }
/// ```
pub struct Forwarder<U: Transport, D: Transport> {
    downstream: PubSocket<D>,
    counters: Arc<Counters>,
    stop: CancellationToken,
    /// Stops the task when the forwarder is dropped without [`close`](Forwarder::close).
    _stop_on_drop: DropGuard,
    task: tokio::task::JoinHandle<(SubSocket<U>, Result<(), Error>)>,
}

impl<U: Transport, D: Transport> fmt::Debug for Forwarder<U, D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forwarder")
            .field("downstream", &self.downstream)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl<U: Transport, D: Transport> Forwarder<U, D> {
    /// Starts forwarding from `upstream`, a subscriber connected to the publishers
    /// upstream (with no subscriptions of its own: the forwarder makes them), to
    /// `downstream`, a bound publisher. Must be called within a tokio runtime.
    pub fn spawn(upstream: SubSocket<U>, downstream: PubSocket<D>) -> Self {
        let counters = Arc::new(Counters::default());
        let stop = CancellationToken::new();
        let changes = downstream.subscription_changes();
        let task = tokio::spawn(forward(
            upstream,
            downstream.clone(),
            changes,
            counters.clone(),
            stop.clone(),
        ));
        Forwarder {
            downstream,
            counters,
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            task,
        }
    }

    /// The address the publisher downstream is bound to.
    pub fn local_addr(&self) -> Option<D::Addr> {
        self.downstream.local_addr()
    }

    /// The publisher downstream.
    pub fn downstream(&self) -> &PubSocket<D> {
        &self.downstream
    }

    /// The forwarder's counters.
    pub fn stats(&self) -> ForwarderStats {
        let c = &self.counters;
        ForwarderStats {
            received: c.received.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            subscriptions: c.subscriptions.load(Ordering::Relaxed) as usize,
            failed_changes: c.failed_changes.load(Ordering::Relaxed),
            upstream: *lock(&c.upstream),
            downstream: self.downstream.stats(),
        }
    }

    /// Stops forwarding and closes both sides: the subscriber upstream, then the publisher
    /// downstream, which writes what is queued for its subscribers first (see
    /// [`PubSocket::close`]).
    ///
    /// # Errors
    ///
    /// The error forwarding stopped with before it was asked to: [`Error::Closed`] if the
    /// publisher downstream was closed under it.
    pub async fn close(self) -> Result<(), Error> {
        self.stop.cancel();
        let outcome = match self.task.await {
            Ok((upstream, outcome)) => {
                upstream.close().await;
                outcome
            }
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Ok(()),
        };
        self.downstream.close().await;
        outcome
    }
}

/// The forwarding task: subscription changes downstream go upstream, before any message
/// that arrived meanwhile goes downstream. Returns the subscriber, for `close`.
async fn forward<U: Transport, D: Transport>(
    mut upstream: SubSocket<U>,
    downstream: PubSocket<D>,
    mut changes: crate::SubscriptionChanges,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> (SubSocket<U>, Result<(), Error>) {
    let outcome = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break Ok(()),
            change = changes.next() => match change {
                Some(change) => follow(&upstream, change, &counters).await,
                // The publisher downstream is gone.
                None => break Ok(()),
            },
            msg = upstream.next() => {
                let Some(msg) = msg else { break Ok(()) };
                counters.received.fetch_add(1, Ordering::Relaxed);
                *lock(&counters.upstream) = upstream.stats();
                let topic = msg.topic().to_owned();
                match downstream.publish_message(&topic, &Message::new(msg.into_payload())).await {
                    Ok(()) => {}
                    Err(Error::Closed) => break Err(Error::Closed),
                    Err(e) => {
                        counters.refused.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(topic, error = %e, "forwarder: message refused downstream, dropped");
                    }
                }
            }
        }
    };
    (upstream, outcome)
}

/// Subscribes upstream to a pattern a subscriber downstream took first, or unsubscribes
/// from one the last gave up.
async fn follow<U: Transport>(
    upstream: &SubSocket<U>,
    change: SubscriptionChange,
    counters: &Counters,
) {
    let SubscriptionChange { pattern, added } = change;
    let done = if added {
        upstream.subscribe(pattern.clone()).await
    } else {
        upstream.unsubscribe(pattern.clone()).await
    };
    if let Err(e) = done {
        counters.failed_changes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(pattern, added, error = %e, "forwarder: subscription upstream failed");
    }
    counters
        .subscriptions
        .store(upstream.subscriptions().len() as u64, Ordering::Relaxed);
    *lock(&counters.upstream) = upstream.stats();
    tracing::debug!(pattern, added, "forwarder: subscription upstream changed");
}
