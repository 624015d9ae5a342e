//! Metric handles, registered once per socket and kept: a counter named on a message's or
//! a connection's path would be looked up in the recorder's registry (under its lock, in
//! most recorders) every time.
//!
//! Each handle is registered the first time it counts, with the recorder in force then, so
//! a socket that never fails registers no failure counter.

use std::sync::OnceLock;

use metrics::Counter;
use msg_core::SocketType;

use crate::Error;

/// A counter registered at its first use, then kept.
#[derive(Debug, Default)]
pub(crate) struct Lazy(OnceLock<Counter>);

impl Lazy {
    /// The handle, registered by `register` the first time.
    pub(crate) fn get(&self, register: impl FnOnce() -> Counter) -> &Counter {
        self.0.get_or_init(register)
    }
}

/// The connection counters of one socket, labelled with its type.
#[derive(Debug, Default)]
pub(crate) struct SocketCounters {
    connections: Lazy,
    connect_failures: Lazy,
    disconnections: Lazy,
    refused: Lazy,
    bytes_received: Lazy,
    bytes_sent: Lazy,
}

impl SocketCounters {
    /// `msg_connections_total`: connections made (dialed or accepted) and through the
    /// handshake.
    pub(crate) fn connections(&self, socket: SocketType) -> &Counter {
        self.connections
            .get(|| metrics::counter!("msg_connections_total", "socket" => socket.name()))
    }

    /// `msg_connect_failures_total`: dials that failed.
    pub(crate) fn connect_failures(&self, socket: SocketType) -> &Counter {
        self.connect_failures
            .get(|| metrics::counter!("msg_connect_failures_total", "socket" => socket.name()))
    }

    /// `msg_disconnections_total`: connections lost or closed after the handshake.
    pub(crate) fn disconnections(&self, socket: SocketType) -> &Counter {
        self.disconnections
            .get(|| metrics::counter!("msg_disconnections_total", "socket" => socket.name()))
    }

    /// `msg_refused_total`: peers a server refused.
    pub(crate) fn refused(&self, socket: SocketType) -> &Counter {
        self.refused
            .get(|| metrics::counter!("msg_refused_total", "socket" => socket.name()))
    }

    /// `msg_bytes_received_total` and `msg_bytes_sent_total`, for a new connection's
    /// byte counts.
    pub(crate) fn bytes(&self, socket: SocketType) -> (Counter, Counter) {
        let received = self
            .bytes_received
            .get(|| metrics::counter!("msg_bytes_received_total", "socket" => socket.name()));
        let sent = self
            .bytes_sent
            .get(|| metrics::counter!("msg_bytes_sent_total", "socket" => socket.name()));
        (received.clone(), sent.clone())
    }
}

/// `msg_request_errors_total` of one request socket, one handle per error kind.
#[derive(Debug, Default)]
pub(crate) struct ErrorCounters {
    by_kind: [Lazy; Error::KINDS],
}

impl ErrorCounters {
    /// Counts a request that failed with `e`.
    pub(crate) fn count(&self, e: &Error) {
        let kind = e.kind();
        self.by_kind[e.kind_index()]
            .get(|| metrics::counter!("msg_request_errors_total", "error" => kind))
            .increment(1);
    }
}
