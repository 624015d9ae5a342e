//! One browser's queue: the frames read from its `SubSocket` and not yet sent, bounded in
//! frames and bytes, and the count of those dropped since the last one sent.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use tokio::sync::Notify;

use super::Counters;

/// A frame for the browser, and how many messages were lost just before it.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) dropped_before: u64,
    pub(crate) body: Body,
}

/// A publication as the browser gets it: a JSON text message, or a binary one.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Body {
    Text(String),
    Binary(Bytes),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Text(text) => text.len(),
            Body::Binary(bytes) => bytes.len(),
        }
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::Text(text)
    }
}

impl From<&str> for Body {
    fn from(text: &str) -> Body {
        Body::Text(text.to_owned())
    }
}

/// What the browser is sent next.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(Frame),
    /// Messages were dropped and no frame is queued behind them: say so now.
    Dropped(u64),
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Messages lost since the last frame queued.
    dropped: u64,
}

/// The queue between the task that reads a browser's `SubSocket` and the one that writes
/// its WebSocket.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    ready: Notify,
    max: usize,
    max_bytes: usize,
}

impl Outbox {
    pub(crate) fn new(max: usize, max_bytes: usize) -> Outbox {
        Outbox {
            state: Mutex::new(State::default()),
            ready: Notify::new(),
            max: max.max(1),
            max_bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere leaves the counts as they were: still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `body`, after `missed` messages the publisher dropped before it; when the
    /// queue is full, drops it instead, as a publisher drops for a slow subscriber, and
    /// counts it. Returns whether it was queued.
    pub(crate) fn push(&self, missed: u64, body: impl Into<Body>, counters: &Counters) -> bool {
        let body = body.into();
        let queued = {
            let mut state = self.lock();
            state.dropped += missed;
            // A frame larger than the byte bound still goes into an empty queue.
            let full = state.frames.len() >= self.max
                || (!state.frames.is_empty() && state.bytes + body.len() > self.max_bytes);
            if full {
                state.dropped += 1;
                false
            } else {
                let dropped_before = std::mem::take(&mut state.dropped);
                state.bytes += body.len();
                state.frames.push_back(Frame {
                    dropped_before,
                    body,
                });
                counters.queued(state.frames.len(), state.bytes);
                true
            }
        };
        self.ready.notify_one();
        queued
    }

    /// The next thing to send, once there is one.
    pub(crate) async fn next(&self) -> Out {
        loop {
            let notified = self.ready.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before looking, so that a push meanwhile is not missed.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if let Some(frame) = state.frames.pop_front() {
                    state.bytes -= frame.body.len();
                    return Out::Frame(frame);
                }
                if state.dropped > 0 {
                    return Out::Dropped(std::mem::take(&mut state.dropped));
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn frame(outbox: &Outbox) -> Frame {
        match outbox.next().await {
            Out::Frame(frame) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_tells_before_the_next_frame() {
        let counters = Counters::default();
        let outbox = Outbox::new(2, 1 << 20);
        assert!(outbox.push(0, "a", &counters));
        assert!(outbox.push(0, "b", &counters));
        assert!(!outbox.push(0, "c", &counters));
        assert!(!outbox.push(0, "d", &counters));
        assert_eq!(frame(&outbox).await.body, Body::from("a"));
        assert!(outbox.push(1, "e", &counters));
        assert_eq!(frame(&outbox).await.dropped_before, 0);
        let e = frame(&outbox).await;
        // Two dropped here, one by the publisher.
        assert_eq!((e.body, e.dropped_before), (Body::from("e"), 3));
        assert_eq!(counters.snapshot().peak_queued, 2);
    }

    #[tokio::test]
    async fn drops_with_nothing_behind_them_are_told_alone() {
        let counters = Counters::default();
        let outbox = Outbox::new(1, 1 << 20);
        assert!(outbox.push(0, "a", &counters));
        assert!(!outbox.push(0, "b", &counters));
        assert_eq!(frame(&outbox).await.body, Body::from("a"));
        assert!(matches!(outbox.next().await, Out::Dropped(1)));
    }

    #[tokio::test]
    async fn the_byte_bound_holds_but_for_one_large_frame() {
        let counters = Counters::default();
        let outbox = Outbox::new(100, 10);
        assert!(outbox.push(0, "x".repeat(30), &counters));
        assert!(!outbox.push(0, "y", &counters));
        assert_eq!(frame(&outbox).await.body.len(), 30);
        assert!(outbox.push(0, "y".repeat(6), &counters));
        assert!(outbox.push(0, "z".repeat(4), &counters));
        assert!(!outbox.push(0, "w", &counters));
        assert_eq!(counters.snapshot().peak_queued_bytes, 30);
    }
}
