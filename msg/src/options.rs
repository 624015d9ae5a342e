//! One options vocabulary for the four sockets: what every connection has
//! ([`ConnectionOptions`]), what a socket that dials has ([`DialOptions`]: `ReqSocket`,
//! `SubSocket`), and what a socket that listens has ([`ListenOptions`]: `RepSocket`,
//! `PubSocket`).
//!
//! Each socket's own options ([`ReqOptions`](crate::ReqOptions),
//! [`RepOptions`](crate::RepOptions), [`PubOptions`](crate::PubOptions),
//! [`SubOptions`](crate::SubOptions)) carry these fields under the same names and defaults,
//! beside the fields of their own, so that `options.max_frame_len` reads the same on all
//! four; `connection()` and `with_connection(..)` (and `dial`/`listen` alike) read and set
//! a group at once, so one value configures every socket of a service:
//!
//! ```
//! use std::time::Duration;
//! use msg::{ConnectionOptions, PubOptions, ReqOptions};
//!
//! let connection = ConnectionOptions::default()
//!     .max_frame_len(1 << 20)
//!     .heartbeat(Duration::from_secs(1), Duration::from_secs(4));
//! let req = ReqOptions::default().with_connection(connection.clone());
//! let publisher = PubOptions::default().with_connection(connection.clone());
//! assert_eq!(req.connection(), connection);
//! assert_eq!(publisher.max_frame_len, 1 << 20);
//! ```
//!
//! # Validated once
//!
//! The fields are public, so a value can be set without its builder. Each socket's
//! `with_options` checks every field once, when the socket is made, and raises a value
//! that has no sane meaning to the least that has one; [`options()`](crate::ReqSocket::options)
//! shows the values in force. No field set to zero can make a socket drop everything or
//! wait forever:
//!
//! | field | socket | raised to |
//! |---|---|---|
//! | `max_frame_len` | all | [`MIN_FRAME_LEN`] (1 KiB: room for the handshake and an error's reason) |
//! | `heartbeat_timeout` | all | `heartbeat_interval`, unless heartbeats are off |
//! | `connect_timeout` | Req, Sub | 1 ms |
//! | `handshake_timeout` | Rep, Pub | 1 ms |
//! | `max_handshakes`, `max_connections` | Rep, Pub | 1 |
//! | `max_in_flight` | Req | 1 |
//! | `max_in_flight_per_conn`, `backlog`, `stream_buffer` | Rep | 1 |
//! | `high_water_mark`, `high_water_bytes`, `max_subscriptions`, `max_pattern_len` | Pub | 1 |
//! | `inbox`, `inbox_bytes` | Sub | 1 |

use std::time::Duration;

use bytes::Bytes;
use msg_core::DEFAULT_MAX_FRAME_LEN;

use crate::Backoff;

/// The least [`ConnectionOptions::max_frame_len`] a socket takes: room for the handshake's
/// frames and an error's reason. A smaller value is raised to it.
pub const MIN_FRAME_LEN: usize = 1024;

/// Default silence before a ping, on every socket.
pub(crate) const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Default silence before a connection is given up, on every socket.
pub(crate) const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default bound on a dial: the transport's exchange and the hello together.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on a new connection's way in, on the listening side.
pub(crate) const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on connections in their handshake at once.
pub(crate) const DEFAULT_MAX_HANDSHAKES: usize = 256;
/// Default bound on the connections one listener serves at once.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// The least timeout a socket takes: a zero one would fail every connection.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// Writes the setters of the connection group's fields ([`ConnectionOptions`]), for that
/// type and for each socket's options, which carry the same fields: one copy of each.
macro_rules! connection_setters {
    () => {
        /// Sets [`max_frame_len`](Self::max_frame_len).
        pub fn max_frame_len(mut self, max: usize) -> Self {
            self.max_frame_len = max;
            self
        }

        /// Sets [`heartbeat_interval`](Self::heartbeat_interval) and
        /// [`heartbeat_timeout`](Self::heartbeat_timeout).
        pub fn heartbeat(
            mut self,
            interval: std::time::Duration,
            timeout: std::time::Duration,
        ) -> Self {
            self.heartbeat_interval = interval;
            self.heartbeat_timeout = timeout;
            self
        }
    };
}
pub(crate) use connection_setters;

/// Writes the setters of the dial group's fields ([`DialOptions`]), for that type and for
/// each dialing socket's options.
macro_rules! dial_setters {
    () => {
        /// Sets [`connect_timeout`](Self::connect_timeout).
        pub fn connect_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.connect_timeout = timeout;
            self
        }

        /// Sets [`auth_token`](Self::auth_token).
        pub fn auth_token(mut self, token: impl Into<bytes::Bytes>) -> Self {
            self.auth_token = Some(token.into());
            self
        }

        /// Sets [`reconnect`](Self::reconnect).
        pub fn reconnect(mut self, backoff: crate::Backoff) -> Self {
            self.reconnect = backoff;
            self
        }
    };
}
pub(crate) use dial_setters;

/// Writes the setters of the listen group's fields ([`ListenOptions`]), for that type and
/// for each listening socket's options.
macro_rules! listen_setters {
    () => {
        /// Sets [`handshake_timeout`](Self::handshake_timeout).
        pub fn handshake_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.handshake_timeout = timeout;
            self
        }

        /// Sets [`max_handshakes`](Self::max_handshakes); at least 1.
        pub fn max_handshakes(mut self, max: usize) -> Self {
            self.max_handshakes = max.max(1);
            self
        }

        /// Sets [`max_connections`](Self::max_connections); at least 1.
        pub fn max_connections(mut self, max: usize) -> Self {
            self.max_connections = max.max(1);
            self
        }
    };
}
pub(crate) use listen_setters;

/// What every connection of every socket has.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::ConnectionOptions;
///
/// let options = ConnectionOptions::default().heartbeat(Duration::ZERO, Duration::ZERO);
/// assert_eq!(options.heartbeat_interval, Duration::ZERO); // heartbeats off
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionOptions {
    /// Largest frame sent or received, in bytes; a peer that sends a larger one loses its
    /// connection, and a larger local send fails with
    /// [`Error::FrameTooLarge`](crate::Error::FrameTooLarge). Default: 64 MiB
    /// ([`DEFAULT_MAX_FRAME_LEN`]); at least [`MIN_FRAME_LEN`].
    pub max_frame_len: usize,
    /// Silence from the peer after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from the peer after which the connection is given up. Default: 20 s, four
    /// intervals; at least the interval.
    pub heartbeat_timeout: Duration,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
        }
    }
}

impl ConnectionOptions {
    connection_setters!();

    /// The options with every value raised to its least sane one.
    pub(crate) fn validated(mut self) -> Self {
        self.max_frame_len = self.max_frame_len.max(MIN_FRAME_LEN);
        if !self.heartbeat_interval.is_zero() {
            self.heartbeat_timeout = self.heartbeat_timeout.max(self.heartbeat_interval);
        }
        self
    }
}

/// What a socket that dials has: [`ReqSocket`](crate::ReqSocket) and
/// [`SubSocket`](crate::SubSocket).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::DialOptions;
///
/// let options = DialOptions::default()
///     .auth_token("client1")
///     .connect_timeout(Duration::from_secs(3));
/// assert_eq!(options.connect_timeout, Duration::from_secs(3));
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct DialOptions {
    /// Longest one dial may take: the transport's own exchange (a TLS or QUIC handshake, a
    /// transport layer's challenge) and the msg hello together, as the listening side counts
    /// them against its handshake timeout. Past it the dial fails with
    /// [`Error::ConnectTimeout`](crate::Error::ConnectTimeout), and is retried as any
    /// failed dial. Default: 10 s, as the server's handshake timeout; at least 1 ms.
    pub connect_timeout: Duration,
    /// Token sent in the handshake for the server's [`Authenticator`](crate::Authenticator).
    /// Default: none.
    pub auth_token: Option<Bytes>,
    /// Delays between redials of a lost server. Default: [`Backoff::default`], redialing
    /// forever, but for an answer that will not change on the next dial
    /// ([`Error::is_permanent`](crate::Error::is_permanent)): a server of the wrong socket
    /// type, or its admission's refusal (an authenticator's too), a peer not speaking msg,
    /// a certificate refused. On one of those the socket stops redialing, emits
    /// [`SocketEvent::GaveUp`](crate::SocketEvent::GaveUp), and its requests (or
    /// `subscribe`) fail with that error. A server at its connection limit, one that closes
    /// the connection, or one from before refusals carried a code is redialed as usual.
    pub reconnect: Backoff,
}

impl Default for DialOptions {
    fn default() -> Self {
        DialOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            auth_token: None,
            reconnect: Backoff::default(),
        }
    }
}

impl DialOptions {
    dial_setters!();

    /// The options with every value raised to its least sane one.
    pub(crate) fn validated(mut self) -> Self {
        self.connect_timeout = self.connect_timeout.max(MIN_TIMEOUT);
        self
    }
}

/// What a socket that listens has: [`RepSocket`](crate::RepSocket) and
/// [`PubSocket`](crate::PubSocket).
///
/// # Example
///
/// ```
/// use msg::ListenOptions;
///
/// let options = ListenOptions::default().max_connections(100);
/// assert_eq!(options.max_connections, 100);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Longest a new connection's way in may take: the transport's own exchange, the hello
    /// and admission. Default: 10 s, so a peer that connects and says nothing does not hold
    /// its slot for long; at least 1 ms.
    pub handshake_timeout: Duration,
    /// Most connections in their handshake at once. A new connection beyond it evicts the
    /// oldest handshake still running, so that connections that say nothing cannot lock
    /// good ones out: a good client finishes in a round trip or two. Default: 256; at
    /// least 1.
    pub max_handshakes: usize,
    /// Most connections served at once. A client past it is refused in its handshake with
    /// the reason, and gets [`Error::HandshakeRejected`](crate::Error::HandshakeRejected);
    /// the refusal is an event and counts in `msg_limit_hits_total{limit="connections"}`.
    /// Default: 16,384; at least 1.
    pub max_connections: usize,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl ListenOptions {
    listen_setters!();

    /// The options with every value raised to its least sane one.
    pub(crate) fn validated(mut self) -> Self {
        self.handshake_timeout = self.handshake_timeout.max(MIN_TIMEOUT);
        self.max_handshakes = self.max_handshakes.max(1);
        self.max_connections = self
            .max_connections
            .clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        self
    }
}

/// Writes a socket options type's getter and setter for one shared group (connection, dial,
/// listen): the group's fields are the socket's own, read and set together. One macro, so
/// that the four sockets' options cannot drift apart.
macro_rules! option_group {
    ($get:ident, $set:ident, $group:ident, $what:literal { $($field:ident),+ $(,)? }) => {
        #[doc = concat!("The ", $what, " options in force.")]
        pub fn $get(&self) -> crate::$group {
            crate::$group {
                $($field: Clone::clone(&self.$field),)+
            }
        }

        #[doc = concat!("Sets every ", $what, " option at once.")]
        pub fn $set(mut self, group: crate::$group) -> Self {
            $(self.$field = group.$field;)+
            self
        }
    };
}
pub(crate) use option_group;
