//! The limits that keep a peer from growing this side's memory or work, and the one counter
//! that says how often each was reached: `msg_limit_hits_total`, labelled by `limit`.
//!
//! | limit | where set | default | past it |
//! |---|---|---|---|
//! | `connections` | `RepOptions`/`PubOptions::max_connections` | 16,384 | handshake refused, [`Error::HandshakeRejected`](crate::Error::HandshakeRejected) at the client |
//! | `handshakes` | `max_handshakes` | 256 | the oldest handshake is evicted |
//! | `frame_len` | `max_frame_len` (all four sockets) | 64 MiB | the connection closes, [`Error::Protocol`](crate::Error::Protocol), but for a request to a server: answered with [`Error::Remote`](crate::Error::Remote) (resource exhausted) and skipped unread; a local send over this side's limit or the server's fails with [`Error::FrameTooLarge`](crate::Error::FrameTooLarge) |
//! | `decompressed_len` | the frame limit | 64 MiB | that message fails, [`Error::Decompress`](crate::Error::Decompress) |
//! | `subscriptions` | `PubOptions::max_subscriptions` | 10,000 per subscriber | `subscribe` fails, [`Error::Refused`](crate::Error::Refused) |
//! | `pattern_len` | `PubOptions::max_pattern_len` | 1,024 bytes | `subscribe` fails, [`Error::Refused`](crate::Error::Refused) |
//! | `in_flight` | `RepOptions::max_in_flight_per_conn`, `ReqOptions::max_in_flight` | 1,024 | the server stops reading that connection; the client's `poll_ready` waits |
//! | `queued_bytes` | fixed | 1 MiB of replies per server connection, 1 MiB of requests per client connection, `PubOptions::high_water_bytes` (8 MiB) per subscriber | reading stops, or the request waits, or the message is dropped (or waited for) |

/// Connections a listener serves at once.
pub(crate) const CONNECTIONS: &str = "connections";
/// Handshakes running at once.
pub(crate) const HANDSHAKES: &str = "handshakes";
/// Patterns per subscriber.
pub(crate) const SUBSCRIPTIONS: &str = "subscriptions";
/// Bytes per pattern.
pub(crate) const PATTERN_LEN: &str = "pattern_len";

/// Bytes per frame received.
pub(crate) const FRAME_LEN: &str = "frame_len";
/// Bytes a compressed message inflates to.
pub(crate) const DECOMPRESSED_LEN: &str = "decompressed_len";
/// Requests in flight on one connection.
pub(crate) const IN_FLIGHT: &str = "in_flight";
/// Bytes waiting to be written on one connection.
pub(crate) const QUEUED_BYTES: &str = "queued_bytes";

/// Counts a received frame refused for its length; the error passes through.
#[cold]
pub(crate) fn frame_error(e: msg_core::FrameError) -> msg_core::FrameError {
    if matches!(e, msg_core::FrameError::TooLarge { .. }) {
        hit(FRAME_LEN);
    }
    e
}

/// Counts one hit of `limit`, looking its counter up: for limits hit rarely (a refused
/// handshake, a refused subscription). Where a limit can be hit on every message or every
/// pass, a [`Hits`] keeps the handle.
pub(crate) fn hit(limit: &'static str) {
    register(limit).increment(1);
}

fn register(limit: &'static str) -> metrics::Counter {
    metrics::counter!("msg_limit_hits_total", "limit" => limit)
}

/// One limit's hit counter, registered at the first hit and kept.
#[derive(Debug)]
pub(crate) struct Hits {
    limit: &'static str,
    counter: crate::counters::Lazy,
}

impl Hits {
    /// The counter of `limit`, not yet registered.
    pub(crate) fn new(limit: &'static str) -> Self {
        Hits {
            limit,
            counter: crate::counters::Lazy::default(),
        }
    }

    /// Counts one hit.
    pub(crate) fn hit(&self) {
        self.counter.get(|| register(self.limit)).increment(1);
    }
}
