//! One connection of a [`SubSocket`](super::SubSocket) to a publisher: dial, replay the
//! subscriptions, receive, and redial when the connection is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg_core::{Encoding, Frame, FrameError, FrameKind};
use msg_transports::Transport;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{lock, Change, Mailbox, SubMessage};
use crate::accept::Established;
use crate::dial::{self, End};
use crate::io::FramedIo;
use crate::Error;

/// Most messages handed to the inbox at once.
const BATCH: usize = 256;
/// Most payload bytes handed to the inbox at once, so that a batch of large messages
/// stays within the inbox's own bound.
const BATCH_BYTES: usize = 256 * 1024;

/// What the reconnect supervisor runs on each connection of a subscriber socket to one
/// publisher.
pub(super) struct SubSession<A> {
    pub(super) shared: Arc<Mailbox<A>>,
    pub(super) changes: mpsc::Receiver<Change>,
    pub(super) connected: Arc<AtomicBool>,
    /// Told once the first connection's replayed subscriptions are applied.
    pub(super) ready: Option<oneshot::Sender<()>>,
    pub(super) stop: CancellationToken,
}

impl<T: Transport> dial::Session<T> for SubSession<T::Addr> {
    async fn serve(&mut self, conn: Established<T::Io, T::Addr>) -> End {
        let mut session = Session::new(conn.io, conn.peer, self.shared.clone(), self.ready.take());
        // Marked connected before the replay: a subscription made from here on is sent
        // on this connection, at worst twice, never missed.
        self.connected.store(true, Ordering::SeqCst);
        if let Err(e) = session.replay() {
            self.connected.store(false, Ordering::SeqCst);
            return End::Lost(e);
        }
        let changes = &mut self.changes;
        let end = tokio::select! {
            _ = self.stop.cancelled() => End::Closed,
            end = std::future::poll_fn(|cx| session.poll_run(cx, changes)) => end,
        };
        self.connected.store(false, Ordering::SeqCst);
        self.ready = session.ready.take();
        // Changes asked for meanwhile are replayed on the next connection.
        while self.changes.try_recv().is_ok() {}
        end
    }

    fn stop(&mut self, _error: Error) {
        self.connected.store(false, Ordering::SeqCst);
    }
}

struct Session<Io, A> {
    io: FramedIo<Io>,
    peer: A,
    shared: Arc<Mailbox<A>>,
    /// Subscription changes sent and not yet acknowledged, by ack id.
    pending: HashMap<u64, Option<oneshot::Sender<Result<(), String>>>>,
    next_ack: u64,
    /// Acks of the replayed subscriptions still to come before `ready` is told.
    replaying: usize,
    ready: Option<oneshot::Sender<()>>,
    /// Sequence number of the last message received in this session.
    last_seq: u64,
    batch: Vec<SubMessage<A>>,
    /// Payload bytes in `batch`.
    batch_bytes: usize,
}

enum Read {
    /// Nothing more to read now.
    Pending,
    /// A batch is full: deliver it, then read on.
    Full,
}

impl<Io, A> Session<Io, A>
where
    Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    A: Clone,
{
    fn new(
        io: FramedIo<Io>,
        peer: A,
        shared: Arc<Mailbox<A>>,
        ready: Option<oneshot::Sender<()>>,
    ) -> Self {
        Session {
            io,
            peer,
            shared,
            pending: HashMap::new(),
            next_ack: 1,
            replaying: 0,
            ready,
            last_seq: 0,
            batch: Vec::with_capacity(BATCH),
            batch_bytes: 0,
        }
    }

    fn send_change(
        &mut self,
        subscribe: bool,
        pattern: &str,
        applied: Option<oneshot::Sender<Result<(), String>>>,
    ) -> Result<(), Error> {
        let id = self.next_ack;
        self.next_ack += 1;
        let kind = if subscribe {
            FrameKind::Subscribe
        } else {
            FrameKind::Unsubscribe
        };
        self.io.queue_parts(
            kind,
            Encoding::IDENTITY,
            id,
            pattern.as_bytes(),
            &Bytes::new(),
        )?;
        self.pending.insert(id, applied);
        Ok(())
    }

    /// Queues every current subscription, before anything else on this connection.
    fn replay(&mut self) -> Result<(), Error> {
        let patterns: Vec<String> = lock(&self.shared.subscriptions).iter().cloned().collect();
        for pattern in &patterns {
            self.send_change(true, pattern, None)?;
        }
        self.replaying = patterns.len();
        if self.replaying == 0 {
            if let Some(ready) = self.ready.take() {
                let _ = ready.send(());
            }
        }
        Ok(())
    }

    fn poll_run(
        &mut self,
        cx: &mut Context<'_>,
        changes: &mut mpsc::Receiver<Change>,
    ) -> Poll<End> {
        loop {
            // Step: the heartbeat; a full inbox is this side's own back-pressure.
            if let Err(e) = self.io.poll_liveness(cx, !self.batch.is_empty()) {
                return Poll::Ready(End::Lost(e));
            }
            // Step: send the subscription changes asked for.
            loop {
                match changes.poll_recv(cx) {
                    Poll::Ready(Some(change)) => {
                        if let Err(e) = self.send_change(
                            change.subscribe,
                            &change.pattern,
                            Some(change.applied),
                        ) {
                            return Poll::Ready(End::Lost(e));
                        }
                    }
                    Poll::Ready(None) => return Poll::Ready(End::Closed),
                    Poll::Pending => break,
                }
            }
            if let Poll::Ready(Err(e)) = self.io.poll_flush(cx) {
                return Poll::Ready(End::Lost(Error::Io(e.into())));
            }
            // Step: hand a stalled batch to the inbox first.
            if !self.batch.is_empty()
                && !self
                    .shared
                    .deliver(&mut self.batch, &mut self.batch_bytes, cx)
            {
                return Poll::Pending;
            }
            // Step: read messages and acks.
            let read = match self.read_frames(cx) {
                Ok(read) => read,
                Err(e) => {
                    if !self.batch.is_empty() {
                        // Keep what arrived before the end; a full inbox loses it.
                        let _ = self
                            .shared
                            .deliver(&mut self.batch, &mut self.batch_bytes, cx);
                    }
                    return Poll::Ready(End::Lost(e));
                }
            };
            // A pong queued while reading leaves now.
            if self.io.queued_len() > 0 {
                if let Poll::Ready(Err(e)) = self.io.poll_flush(cx) {
                    return Poll::Ready(End::Lost(Error::Io(e.into())));
                }
            }
            if !self.batch.is_empty()
                && !self
                    .shared
                    .deliver(&mut self.batch, &mut self.batch_bytes, cx)
            {
                return Poll::Pending;
            }
            match read {
                Read::Full => continue,
                Read::Pending => return Poll::Pending,
            }
        }
    }

    fn read_frames(&mut self, cx: &mut Context<'_>) -> Result<Read, Error> {
        loop {
            match self.io.poll_read(cx) {
                Poll::Pending => return Ok(Read::Pending),
                Poll::Ready(Ok(Some(frame))) => {
                    self.receive(frame)?;
                    if self.batch.len() >= BATCH || self.batch_bytes >= BATCH_BYTES {
                        return Ok(Read::Full);
                    }
                }
                Poll::Ready(Ok(None)) => return Err(Error::ConnectionClosed),
                Poll::Ready(Err(e)) => return Err(e.into()),
            }
        }
    }

    fn receive(&mut self, frame: Frame) -> Result<(), Error> {
        match frame.kind {
            FrameKind::Publish => {
                if frame.id <= self.last_seq {
                    return Err(Error::Protocol(FrameError::Malformed {
                        kind: "publish",
                        reason: "sequence number went backwards",
                    }));
                }
                if std::str::from_utf8(&frame.topic).is_err() {
                    return Err(Error::Protocol(FrameError::Malformed {
                        kind: "publish",
                        reason: "topic is not UTF-8",
                    }));
                }
                let missed = frame.id - self.last_seq - 1;
                if missed > 0 {
                    self.shared.missed.fetch_add(missed, Ordering::Relaxed);
                    self.shared
                        .missed_counter
                        .get(|| metrics::counter!("msg_subscriber_missed_total"))
                        .increment(missed);
                }
                self.last_seq = frame.id;
                self.batch_bytes += frame.payload.len();
                self.batch.push(SubMessage {
                    topic: frame.topic,
                    payload: frame.payload,
                    encoding: frame.encoding,
                    publisher: self.peer.clone(),
                    seq: frame.id,
                });
                Ok(())
            }
            FrameKind::SubscriptionAck => {
                let Some(applied) = self.pending.remove(&frame.id) else {
                    return Err(Error::UnexpectedFrame { kind: frame.kind });
                };
                let outcome = if frame.payload.is_empty() {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&frame.payload).into_owned())
                };
                match applied {
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
                Ok(())
            }
            kind => Err(Error::UnexpectedFrame { kind }),
        }
    }
}
