//! One subscriber's session on a publisher: applies its subscriptions, writes what is
//! queued for it.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use msg_core::{Encoding, Frame, FrameKind};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{lock, Hub, OutFrame, Session, SessionQueue};
use crate::accept::Established;
use crate::events::{EventSink, SocketEvent};
use crate::io::FramedIo;
use crate::topic::validate_pattern;
use crate::Error;

/// Move queued messages into the write buffer only while it holds less than this, so that
/// memory stays bounded by the high-water marks, not by the socket's speed.
const WRITE_CHUNK: usize = 256 * 1024;

/// Read a subscriber's subscription frames only while less than this waits to be written
/// to it: one that sends them without reading their acks holds its session at this, not at
/// what it sends.
const ACKS_HIGH_WATER: usize = 1024 * 1024;

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
    let id = shared.next_session.fetch_add(1, Ordering::Relaxed);
    let session = Arc::new(Session {
        id,
        peer: conn.peer,
        queue: Mutex::new(SessionQueue::default()),
        waker: AtomicWaker::new(),
        space: Arc::new(Notify::new()),
        sent: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        last_drop_log: AtomicU64::new(0),
    });
    shared.write().sessions.insert(id, session.clone());
    let mut task = SessionTask {
        io: conn.io,
        session,
        shared,
        batch: Vec::new(),
        subscriptions: 0,
    };
    tracker.spawn(async move {
        let result = tokio::select! {
            result = std::future::poll_fn(|cx| task.poll_run(cx, false)) => Some(result),
            _ = stop.cancelled() => Some(Ok(())),
            _ = drain.cancelled() => None,
        };
        let result = match result {
            Some(result) => result,
            None => tokio::select! {
                result = std::future::poll_fn(|cx| task.poll_run(cx, true)) => result,
                _ = stop.cancelled() => Ok(()),
            },
        };
        if let Err(e) = &result {
            tracing::warn!(peer = %task.session.peer, error = %e, "subscriber session closed");
        }
        task.close();
        metrics::counter!("msg_disconnections_total", "socket" => "pub").increment(1);
        let peer = task.session.peer.clone();
        events.emit(|| SocketEvent::Disconnected {
            peer,
            error: Arc::new(result.err().unwrap_or(Error::ConnectionClosed)),
        });
    });
}

struct SessionTask<Io, A> {
    io: FramedIo<Io>,
    session: Arc<Session<A>>,
    shared: Arc<Hub<A>>,
    /// Messages taken from the queue with their sequence numbers, reused from one batch
    /// to the next.
    batch: Vec<(u64, OutFrame)>,
    /// Patterns the subscriber holds.
    subscriptions: usize,
}

impl<Io, A> SessionTask<Io, A>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    A: Clone + fmt::Display,
{
    /// Runs until the subscriber leaves (`Ok`), breaks the protocol or falls silent, or,
    /// `draining`, until everything queued for it is written.
    fn poll_run(&mut self, cx: &mut Context<'_>, draining: bool) -> Poll<Result<(), Error>> {
        self.session.waker.register(cx.waker());
        loop {
            if self.read_subscriptions(cx)? {
                return Poll::Ready(Ok(()));
            }
            // Reading stopped at the acks' high-water mark: a flush that writes them all
            // must lead to another read, or nothing would wake this task again.
            let paused = self.io.queued_len() >= ACKS_HIGH_WATER;
            self.io.poll_liveness(cx, false)?;
            self.take_queued();
            match self.io.poll_flush(cx) {
                // Everything written: carry on while messages wait. A full queue wakes no
                // one when a publish is dropped, so the session must not stop short.
                Poll::Ready(Ok(())) if !lock(&self.session.queue).frames.is_empty() => continue,
                Poll::Ready(Ok(())) if paused => continue,
                Poll::Ready(Ok(())) if draining => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) | Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::Io(e.into()))),
            }
        }
    }

    /// Step: applies every subscription change that has arrived and queues its ack, until
    /// the bytes waiting to be written reach [`ACKS_HIGH_WATER`]. Returns whether the
    /// subscriber has closed its side.
    fn read_subscriptions(&mut self, cx: &mut Context<'_>) -> Result<bool, Error> {
        while self.io.queued_len() < ACKS_HIGH_WATER {
            match self.io.poll_read(cx) {
                Poll::Pending => return Ok(false),
                Poll::Ready(Ok(Some(frame))) => self.apply(frame)?,
                Poll::Ready(Ok(None)) => return Ok(true),
                Poll::Ready(Err(e)) => return Err(e.into()),
            }
        }
        crate::limits::hit(crate::limits::QUEUED_BYTES);
        Ok(false)
    }

    fn apply(&mut self, frame: Frame) -> Result<(), Error> {
        let subscribe = match frame.kind {
            FrameKind::Subscribe => true,
            FrameKind::Unsubscribe => false,
            kind => return Err(Error::UnexpectedFrame { kind }),
        };
        let pattern = std::str::from_utf8(&frame.topic).map_err(|_| {
            Error::Protocol(msg_core::FrameError::Malformed {
                kind: frame.kind.name(),
                reason: "pattern is not UTF-8",
            })
        })?;
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
        } else {
            let mut registry = self.shared.write();
            if !subscribe {
                if registry.trie.remove(pattern, self.session.id) {
                    self.subscriptions -= 1;
                }
            } else if registry.trie.insert(pattern, self.session.id) {
                // A pattern already held takes no more room; a new one past the limit is
                // taken back out.
                if self.subscriptions >= options.max_subscriptions {
                    registry.trie.remove(pattern, self.session.id);
                    crate::limits::hit(crate::limits::SUBSCRIPTIONS);
                    refusal = Some(format!(
                        "this publisher takes at most {} patterns per subscriber",
                        options.max_subscriptions
                    ));
                } else {
                    self.subscriptions += 1;
                }
            }
        }
        match &refusal {
            Some(reason) => {
                tracing::info!(peer = %self.session.peer, pattern, %reason, "subscription refused")
            }
            None => {
                tracing::debug!(peer = %self.session.peer, pattern, subscribe, "subscription changed")
            }
        }
        self.io.queue(
            FrameKind::SubscriptionAck,
            Encoding::IDENTITY,
            frame.id,
            &refusal.map(Bytes::from).unwrap_or_default(),
        )?;
        Ok(())
    }

    /// Step: moves queued messages into the write buffer while it has room.
    fn take_queued(&mut self) {
        let mut moved = 0;
        while self.io.queued_len() < WRITE_CHUNK {
            {
                let mut queue = lock(&self.session.queue);
                let n = queue.frames.len().min(64);
                self.batch.extend(queue.frames.drain(..n));
                queue.bytes -= self
                    .batch
                    .iter()
                    .map(|(_, f)| f.payload.len())
                    .sum::<usize>();
            }
            if self.batch.is_empty() {
                break;
            }
            moved += self.batch.len();
            for (seq, frame) in self.batch.drain(..) {
                // Checked against the frame limit when it was published.
                let _ = self.io.queue_parts(
                    FrameKind::Publish,
                    frame.encoding,
                    seq,
                    &frame.topic,
                    &frame.payload,
                );
            }
        }
        if moved > 0 {
            self.session.sent.fetch_add(moved as u64, Ordering::Relaxed);
            self.session.space.notify_waiters();
        }
    }

    /// Unregisters the session; what is still queued for it counts as dropped.
    fn close(&mut self) {
        {
            let mut registry = self.shared.write();
            registry.trie.remove_all(self.session.id);
            registry.sessions.remove(&self.session.id);
        }
        let left = {
            let mut queue = lock(&self.session.queue);
            queue.closed = true;
            queue.bytes = 0;
            std::mem::take(&mut queue.frames).len() as u64
        };
        if left > 0 {
            metrics::counter!("msg_publish_dropped_total").increment(left);
            self.session.dropped.fetch_add(left, Ordering::Relaxed);
            self.shared.dropped.fetch_add(left, Ordering::Relaxed);
        }
        self.session.space.notify_waiters();
        tracing::debug!(peer = %self.session.peer, "subscriber left");
    }
}
