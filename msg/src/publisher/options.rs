//! [`PubOptions`] and [`SlowSubscriber`]: how a [`PubSocket`](super::PubSocket) bounds and
//! serves its subscribers.

use std::time::Duration;

use msg_core::DEFAULT_MAX_FRAME_LEN;

use crate::accept::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES};
use crate::req::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT};

/// What a publisher does when a subscriber's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SlowSubscriber {
    /// Drop the message for that subscriber only, and count it. `publish` never waits,
    /// and the other subscribers are not slowed. The default.
    #[default]
    Drop,
    /// Wait until the subscriber has room: nothing is lost, and the slowest subscriber
    /// sets the pace of `publish`.
    Wait,
}

/// Options of a [`PubSocket`](super::PubSocket): the [connection](crate::ConnectionOptions)
/// and [listen](crate::ListenOptions) options every socket shares (see
/// [`options`](crate::options)), and its own. Checked once, when the socket is made: a
/// value with no sane meaning (a zero count) is raised to the least one that has one.
///
/// # Example
///
/// ```
/// use msg::{PubOptions, SlowSubscriber};
///
/// let options = PubOptions::default().high_water_mark(4096).slow_subscriber(SlowSubscriber::Wait);
/// assert_eq!(options.high_water_mark, 4096);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PubOptions {
    /// Most messages queued for one subscriber. Default: 1024, as ZeroMQ's send
    /// high-water mark, enough to ride out a subscriber's scheduling hiccup.
    pub high_water_mark: usize,
    /// Most payload bytes queued for one subscriber. Default: 8 MiB, so that large
    /// messages cannot make the message count a loose bound on memory.
    pub high_water_bytes: usize,
    /// What happens when a subscriber's queue is full. Default: [`SlowSubscriber::Drop`].
    pub slow_subscriber: SlowSubscriber,
    /// Largest frame sent or received, in bytes. Default: 64 MiB.
    pub max_frame_len: usize,
    /// Longest wait for a new subscriber's hello. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Most connections in their handshake at once; see
    /// [`RepOptions::max_handshakes`](crate::RepOptions::max_handshakes). Default: 256.
    pub max_handshakes: usize,
    /// Most connections served at once. A client past it is refused in its handshake with
    /// the reason, and gets [`Error::HandshakeRejected`](crate::Error::HandshakeRejected);
    /// the refusal is an event and counts in `msg_limit_hits_total{limit="connections"}`.
    /// Default: 16,384.
    pub max_connections: usize,
    /// Silence from a subscriber after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from a subscriber after which its session is dropped. Default: 20 s.
    pub heartbeat_timeout: Duration,
    /// Longest [`PubSocket::close`](super::PubSocket::close) waits for the subscribers' queues to be written.
    /// Default: 2 s.
    pub linger: Duration,
    /// Most patterns one subscriber may hold; a subscription past it is refused, and the
    /// subscriber's `subscribe` fails with [`Error::Refused`](crate::Error::Refused). Default: 10,000.
    pub max_subscriptions: usize,
    /// Longest pattern a subscriber may subscribe to, in bytes; a longer one is refused
    /// the same way. Default: 1,024.
    pub max_pattern_len: usize,
}

impl Default for PubOptions {
    fn default() -> Self {
        PubOptions {
            high_water_mark: 1024,
            high_water_bytes: 8 * 1024 * 1024,
            slow_subscriber: SlowSubscriber::Drop,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            linger: Duration::from_secs(2),
            max_subscriptions: 10_000,
            max_pattern_len: 1024,
        }
    }
}

impl PubOptions {
    crate::options::option_group!(connection, with_connection, ConnectionOptions, "connection" {
        max_frame_len, heartbeat_interval, heartbeat_timeout
    });

    crate::options::connection_setters!();

    crate::options::option_group!(listen, with_listen, ListenOptions, "listen" {
        handshake_timeout, max_handshakes, max_connections
    });

    crate::options::listen_setters!();

    /// The options with every value raised to its least sane one, as the socket takes them.
    pub(super) fn validated(self) -> Self {
        let connection = self.connection().validated();
        let listen = self.listen().validated();
        let mut options = self.with_connection(connection).with_listen(listen);
        options.high_water_mark = options.high_water_mark.max(1);
        options.high_water_bytes = options.high_water_bytes.max(1);
        options.max_subscriptions = options.max_subscriptions.max(1);
        options.max_pattern_len = options.max_pattern_len.max(1);
        options
    }

    /// Sets [`max_subscriptions`](Self::max_subscriptions) and
    /// [`max_pattern_len`](Self::max_pattern_len).
    pub fn max_subscriptions(mut self, patterns: usize, pattern_len: usize) -> Self {
        self.max_subscriptions = patterns;
        self.max_pattern_len = pattern_len;
        self
    }

    /// Sets [`high_water_mark`](Self::high_water_mark); at least 1.
    pub fn high_water_mark(mut self, messages: usize) -> Self {
        self.high_water_mark = messages.max(1);
        self
    }

    /// Sets [`high_water_bytes`](Self::high_water_bytes).
    pub fn high_water_bytes(mut self, bytes: usize) -> Self {
        self.high_water_bytes = bytes;
        self
    }

    /// Sets [`slow_subscriber`](Self::slow_subscriber).
    pub fn slow_subscriber(mut self, policy: SlowSubscriber) -> Self {
        self.slow_subscriber = policy;
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}
