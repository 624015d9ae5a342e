//! [`PubSocket`]: the publishing side of Publish/Subscribe.

mod session;

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use msg_core::{Authenticator, Encoding, Message, SocketType, DEFAULT_MAX_FRAME_LEN};
use msg_transports::{Listener, Transport};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{accept_loop, AcceptConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES};
use crate::admission::{self, Admission, AdmissionService, Authenticate};
use crate::events::{EventSink, Events};
use crate::ids::IdMap;
use crate::io::heartbeat_config;
use crate::req::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT};
use crate::topic::{validate_topic, Trie};
use crate::Error;
use msg_layers::compression::{Codec, Compressor, DEFAULT_MIN_LEN};

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

/// Options of a [`PubSocket`]: the [connection](crate::ConnectionOptions) and
/// [listen](crate::ListenOptions) options every socket shares (see
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
    /// the reason, and gets [`Error::HandshakeRejected`];
    /// the refusal is an event and counts in `msg_limit_hits_total{limit="connections"}`.
    /// Default: 16,384.
    pub max_connections: usize,
    /// Silence from a subscriber after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from a subscriber after which its session is dropped. Default: 20 s.
    pub heartbeat_timeout: Duration,
    /// Longest [`PubSocket::close`] waits for the subscribers' queues to be written.
    /// Default: 2 s.
    pub linger: Duration,
    /// Most patterns one subscriber may hold; a subscription past it is refused, and the
    /// subscriber's `subscribe` fails with [`Error::Refused`]. Default: 10,000.
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
    /// The connection options in force.
    pub fn connection(&self) -> crate::ConnectionOptions {
        crate::ConnectionOptions {
            max_frame_len: self.max_frame_len,
            heartbeat_interval: self.heartbeat_interval,
            heartbeat_timeout: self.heartbeat_timeout,
        }
    }

    /// Sets every connection option at once.
    pub fn with_connection(mut self, connection: crate::ConnectionOptions) -> Self {
        self.max_frame_len = connection.max_frame_len;
        self.heartbeat_interval = connection.heartbeat_interval;
        self.heartbeat_timeout = connection.heartbeat_timeout;
        self
    }

    /// The listen options in force.
    pub fn listen(&self) -> crate::ListenOptions {
        crate::ListenOptions {
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            max_connections: self.max_connections,
        }
    }

    /// Sets every listen option at once.
    pub fn with_listen(mut self, listen: crate::ListenOptions) -> Self {
        self.handshake_timeout = listen.handshake_timeout;
        self.max_handshakes = listen.max_handshakes;
        self.max_connections = listen.max_connections;
        self
    }

    /// The options with every value raised to its least sane one, as the socket takes them.
    fn validated(self) -> Self {
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

    /// Sets [`max_connections`](Self::max_connections); at least 1.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// Sets [`max_frame_len`](Self::max_frame_len).
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`heartbeat_interval`](Self::heartbeat_interval) and
    /// [`heartbeat_timeout`](Self::heartbeat_timeout).
    pub fn heartbeat(mut self, interval: Duration, timeout: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.heartbeat_timeout = timeout;
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}

/// A message to publish on a topic: what a [`PubSocket`] takes as a [`tower::Service`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    topic: String,
    message: Message,
}

impl Publication {
    /// A publication of `message` on `topic`.
    pub fn new(topic: impl Into<String>, message: impl Into<Message>) -> Self {
        Publication {
            topic: topic.into(),
            message: message.into(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The message, to change in a layer (to compress it, say).
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.message
    }
}

/// Counters of a [`PubSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PubStats {
    /// Messages published.
    pub published: u64,
    /// Copies queued for subscribers (one per matching subscriber per message).
    pub queued: u64,
    /// Copies dropped because a subscriber's queue was full or it left with messages
    /// still queued.
    pub dropped: u64,
    /// Subscribers connected now.
    pub subscribers: usize,
}

/// Counters of one subscriber of a [`PubSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats<A> {
    /// The subscriber's address.
    pub peer: A,
    /// Messages written to its connection.
    pub sent: u64,
    /// Messages dropped for it.
    pub dropped: u64,
    /// Messages waiting in its queue.
    pub queued: usize,
}

/// One message as every matching subscriber's session writes it. Topic and payload are
/// shared by reference count, never copied per subscriber.
#[derive(Debug, Clone)]
pub(crate) struct OutFrame {
    topic: Bytes,
    payload: Bytes,
    encoding: Encoding,
}

#[derive(Default)]
struct SessionQueue {
    /// Messages waiting, each with its sequence number in this session.
    frames: VecDeque<(u64, OutFrame)>,
    bytes: usize,
    /// Sequence number of the last message offered, queued or dropped: a drop leaves a
    /// gap that the subscriber sees.
    last_seq: u64,
    closed: bool,
}

/// What a publish and a subscriber's session share.
pub(crate) struct Session<A> {
    id: u64,
    peer: A,
    queue: Mutex<SessionQueue>,
    /// The session task, woken when something is queued.
    waker: AtomicWaker,
    /// Publishers waiting for room, under [`SlowSubscriber::Wait`].
    space: Arc<Notify>,
    sent: AtomicU64,
    dropped: AtomicU64,
    /// When a drop was last logged, in milliseconds since the socket was made.
    last_drop_log: AtomicU64,
}

enum Offer {
    Queued,
    Full,
    Gone,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<A> Session<A> {
    fn offer(&self, frame: &OutFrame, options: &PubOptions) -> Offer {
        {
            let mut queue = lock(&self.queue);
            if queue.closed {
                return Offer::Gone;
            }
            let size = frame.payload.len();
            let full = queue.frames.len() >= options.high_water_mark
                || (!queue.frames.is_empty() && queue.bytes + size > options.high_water_bytes);
            if full {
                if options.slow_subscriber == SlowSubscriber::Drop {
                    queue.last_seq += 1;
                }
                return Offer::Full;
            }
            queue.last_seq += 1;
            let seq = queue.last_seq;
            let was_empty = queue.frames.is_empty();
            queue.frames.push_back((seq, frame.clone()));
            queue.bytes += size;
            if !was_empty {
                // The session was woken when the queue stopped being empty, and it drains
                // the queue whole before it sleeps again.
                return Offer::Queued;
            }
        }
        self.waker.wake();
        Offer::Queued
    }
}

type SessionMap<A> = IdMap<Arc<Session<A>>>;

/// The last topic published and the sessions it matched: a publisher mostly repeats a few
/// topics, and subscriptions change far less often than messages go out, so the topic is
/// checked, copied and matched once and the result reused while nothing has changed.
struct Route<A> {
    /// [`Hub::changes`] when the route was found.
    changes: u64,
    topic: Bytes,
    sessions: Sessions<A>,
}

/// The sessions a topic goes to.
type Sessions<A> = Arc<[Arc<Session<A>>]>;

struct Registry<A> {
    trie: Trie,
    sessions: SessionMap<A>,
}

/// The publisher's hub: the subscriber sessions, their subscriptions, and the
/// counters, shared by the socket handles, the accept loop and the sessions.
pub(crate) struct Hub<A> {
    registry: RwLock<Registry<A>>,
    options: PubOptions,
    next_session: AtomicU64,
    published: AtomicU64,
    queued: AtomicU64,
    dropped: AtomicU64,
    born: Instant,
    /// Set by `close`: publishing fails.
    closed: std::sync::atomic::AtomicBool,
    /// Bumped by every change to the registry: the cached route is stale.
    changes: AtomicU64,
    route: Mutex<Option<Route<A>>>,
}

impl<A: Clone + fmt::Display> Hub<A> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Registry<A>> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Registry<A>> {
        let registry = self.registry.write().unwrap_or_else(|e| e.into_inner());
        // Bumped under the write lock: a route found under a read lock with the old count
        // is never taken for a current one.
        self.changes.fetch_add(1, Ordering::Release);
        registry
    }

    /// The topic as shared bytes and the sessions whose subscriptions match it, from the
    /// cached route while it is current.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] for a topic that breaks the grammar.
    fn route(&self, topic: &str) -> Result<(Bytes, Sessions<A>), Error> {
        let mut cached = lock(&self.route);
        if let Some(route) = cached.as_ref() {
            if route.topic.as_ref() == topic.as_bytes()
                && route.changes == self.changes.load(Ordering::Acquire)
            {
                return Ok((route.topic.clone(), route.sessions.clone()));
            }
        }
        validate_topic(topic)?;
        let (changes, sessions) = {
            let registry = self.read();
            let changes = self.changes.load(Ordering::Acquire);
            let mut ids = Vec::new();
            registry.trie.matching(topic, &mut ids);
            let sessions: Sessions<A> = ids
                .iter()
                .filter_map(|id| registry.sessions.get(id).cloned())
                .collect();
            (changes, sessions)
        };
        let topic = match cached.take() {
            // Only the subscriptions changed: the topic's bytes are shared again.
            Some(route) if route.topic.as_ref() == topic.as_bytes() => route.topic,
            _ => Bytes::copy_from_slice(topic.as_bytes()),
        };
        *cached = Some(Route {
            changes,
            topic: topic.clone(),
            sessions: sessions.clone(),
        });
        Ok((topic, sessions))
    }

    fn frame(&self, topic: Bytes, msg: &Message) -> Result<OutFrame, Error> {
        let len = topic.len() as u64 + msg.payload().len() as u64;
        if len > self.options.max_frame_len as u64 {
            return Err(Error::FrameTooLarge {
                len,
                max: self.options.max_frame_len,
            });
        }
        Ok(OutFrame {
            topic,
            payload: msg.payload().clone(),
            encoding: msg.encoding(),
        })
    }

    /// The room signal of the first subscriber whose queue is full, if any.
    fn first_full(&self) -> Option<Arc<Notify>> {
        let registry = self.read();
        registry.sessions.values().find_map(|session| {
            let queue = lock(&session.queue);
            let full = queue.frames.len() >= self.options.high_water_mark
                || queue.bytes >= self.options.high_water_bytes;
            full.then(|| session.space.clone())
        })
    }

    fn count_drop(&self, session: &Session<A>) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("msg_publish_dropped_total").increment(1);
        // The subscriber's queue is at its high-water mark or bytes: the queued_bytes limit.
        crate::limits::hit(crate::limits::QUEUED_BYTES);
        let dropped = session.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        // Log at most once a second per subscriber, however fast the drops come.
        let now = self.born.elapsed().as_millis() as u64;
        let last = session.last_drop_log.load(Ordering::Relaxed);
        if (dropped == 1 || now >= last + 1000)
            && session
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                peer = %session.peer,
                dropped,
                "subscriber is too slow: messages dropped for it"
            );
        }
    }

    /// Queues `frame` for every subscriber in `sessions`, dropping for the full ones.
    fn publish_dropping(&self, sessions: &[Arc<Session<A>>], frame: &OutFrame) {
        for session in sessions {
            match session.offer(frame, &self.options) {
                Offer::Queued => {
                    self.queued.fetch_add(1, Ordering::Relaxed);
                }
                Offer::Full => self.count_drop(session),
                Offer::Gone => {}
            }
        }
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    /// Queues `frame` for every subscriber in `sessions`, waiting for room where there is
    /// none.
    async fn publish_waiting(&self, sessions: &[Arc<Session<A>>], frame: &OutFrame) {
        for session in sessions {
            let mut offer = session.offer(frame, &self.options);
            while let Offer::Full = offer {
                // The room signal is armed only once the queue was found full, and before it
                // is offered again, so that room made in between is not missed.
                let space = session.space.notified();
                tokio::pin!(space);
                space.as_mut().enable();
                offer = session.offer(frame, &self.options);
                if let Offer::Full = offer {
                    space.await;
                    offer = session.offer(frame, &self.options);
                }
            }
            if let Offer::Queued = offer {
                self.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.published.fetch_add(1, Ordering::Relaxed);
    }

    async fn publish(&self, topic: &str, msg: &Message) -> Result<(), Error> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(Error::Closed);
        }
        // A publish under the drop policy never waits. So that a loop of them still gives
        // way to the other tasks on its worker (the subscribers' sessions among them), every
        // 16th publish on a thread spends a unit of tokio's cooperative budget: a forced
        // yield every 2048 publishes; one every 128 cost about 15% of the rate at 64 B.
        thread_local! {
            static PUBLISHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        if PUBLISHES.with(|n| {
            n.set(n.get().wrapping_add(1));
            n.get() % 16 == 0
        }) {
            tokio::task::consume_budget().await;
        }
        let (topic, sessions) = self.route(topic)?;
        let frame = self.frame(topic, msg)?;
        match self.options.slow_subscriber {
            SlowSubscriber::Drop => self.publish_dropping(&sessions, &frame),
            SlowSubscriber::Wait => self.publish_waiting(&sessions, &frame).await,
        }
        Ok(())
    }
}

/// Ends the accept loop and the sessions when the last handle of a socket is gone.
struct Guard {
    stop: CancellationToken,
    /// The sessions, to wait for on close.
    sessions: TaskTracker,
    /// Stops the sessions once they have written what is queued: cancelled by `close`.
    drain: CancellationToken,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The publishing side of Publish/Subscribe.
///
/// Bind it and publish on topics; every subscriber whose subscriptions match a topic gets
/// the message. Filtering happens here, before any byte is sent. Each subscriber has a
/// bounded queue; by default a subscriber that falls behind loses messages, counted in
/// [`stats`](Self::stats), and never slows `publish` or the other subscribers (see
/// [`SlowSubscriber`]). The socket is a cheap [`Clone`] handle and a [`tower::Service`] of
/// [`Publication`]s.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{PubSocket, SubSocket, Tcp};
/// use tokio_stream::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), msg::Error> {
/// let mut pub_socket = PubSocket::new(Tcp::default());
/// pub_socket.bind("127.0.0.1:0").await?;
///
/// let mut sub_socket = SubSocket::new(Tcp::default());
/// sub_socket.connect(pub_socket.local_addr().unwrap()).await?;
/// sub_socket.subscribe("prices.>").await?;
///
/// // The subscription is acknowledged: no sleep is needed before publishing.
/// pub_socket.publish("prices.eu.btc", Bytes::from("97000")).await?;
/// let msg = sub_socket.next().await.unwrap();
/// assert_eq!(msg.topic(), "prices.eu.btc");
/// assert_eq!(msg.payload(), "97000");
/// # Ok(())
/// # }
/// ```
pub struct PubSocket<T: Transport> {
    transport: T,
    /// Compresses publications, if set.
    codec: Option<Codec>,
    /// What `poll_ready` waits on under [`SlowSubscriber::Wait`]: room in a full queue.
    waiting: Option<Pin<Box<tokio::sync::futures::OwnedNotified>>>,
    admission: Option<Admission<T::Addr>>,
    events: Arc<EventSink<T::Addr>>,
    shared: Arc<Hub<T::Addr>>,
    local_addr: Option<T::Addr>,
    guard: Option<Arc<Guard>>,
}

impl<T: Transport> Clone for PubSocket<T> {
    fn clone(&self) -> Self {
        PubSocket {
            transport: self.transport.clone(),
            codec: self.codec.clone(),
            waiting: None,
            admission: self.admission.clone(),
            events: self.events.clone(),
            shared: self.shared.clone(),
            local_addr: self.local_addr.clone(),
            guard: self.guard.clone(),
        }
    }
}

impl<T: Transport> fmt::Debug for PubSocket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PubSocket")
            .field("local_addr", &self.local_addr)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> PubSocket<T> {
    /// A publisher socket over `transport`, with default options.
    pub fn new(transport: T) -> Self {
        Self::with_options(transport, PubOptions::default())
    }

    /// A publisher socket over `transport` with `options`.
    pub fn with_options(transport: T, options: PubOptions) -> Self {
        PubSocket {
            transport,
            codec: None,
            waiting: None,
            admission: None,
            events: EventSink::new(),
            shared: Arc::new(Hub {
                registry: RwLock::new(Registry {
                    trie: Trie::default(),
                    sessions: SessionMap::default(),
                }),
                options: options.validated(),
                next_session: AtomicU64::new(1),
                published: AtomicU64::new(0),
                queued: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                born: Instant::now(),
                closed: std::sync::atomic::AtomicBool::new(false),
                changes: AtomicU64::new(0),
                route: Mutex::new(None),
            }),
            local_addr: None,
            guard: None,
        }
    }

    /// Compresses every publication of at least
    /// [`compression::DEFAULT_MIN_LEN`](crate::compression::DEFAULT_MIN_LEN) bytes with `compressor`, once
    /// for all its subscribers (the book's way; a
    /// [`CompressionLayer`](crate::layers::CompressionLayer) over the socket does the same).
    /// Subscribers decode it whatever their configuration.
    ///
    /// # Example
    ///
    /// ```
    /// use msg::{compression::GzipCompressor, PubSocket, Tcp};
    ///
    /// let publisher = PubSocket::new(Tcp::new()).with_compressor(GzipCompressor::new(6));
    /// ```
    pub fn with_compressor(mut self, compressor: impl Compressor) -> Self {
        self.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Requires every subscriber to pass `auth` in the handshake (the book's way). It
    /// installs admission by [`Authenticate`]; see [`with_admission`](Self::with_admission).
    /// Call before [`bind`](Self::bind).
    pub fn with_auth(self, auth: impl Authenticator) -> Self {
        self.with_admission(Authenticate::new(auth))
    }

    /// Decides with `admission` whether each subscriber, once it said hello, may use the
    /// socket; see [`admission`](mod@crate::admission). Call before [`bind`](Self::bind).
    pub fn with_admission(mut self, admission: impl AdmissionService<T::Addr>) -> Self {
        self.admission = Some(admission::boxed(admission));
        self
    }

    /// The socket's connection events: accepted subscribers, refused ones with the reason,
    /// failed handshakes. See [`Events`].
    pub fn events(&self) -> Events<T::Addr> {
        self.events.subscribe()
    }

    /// The options in force.
    pub fn options(&self) -> &PubOptions {
        &self.shared.options
    }

    /// Binds to `target` and starts accepting subscribers.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the address does not resolve or cannot be bound.
    pub async fn bind(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let listener = self.transport.bind(target.into()).await?;
        let local = listener.local_addr()?;
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let sessions = TaskTracker::new();
        let options = &self.shared.options;
        let config = AcceptConfig {
            socket_type: SocketType::Pub,
            max_frame_len: options.max_frame_len,
            handshake_timeout: options.handshake_timeout,
            max_handshakes: options.max_handshakes,
            heartbeat: heartbeat_config(options.heartbeat_interval, options.heartbeat_timeout),
            admission: self.admission.clone(),
            events: self.events.clone(),
            connections: Arc::new(tokio::sync::Semaphore::new(
                options
                    .max_connections
                    .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
            )),
        };
        let shared = self.shared.clone();
        let (sessions_stop, sessions_drain, tracker, events) = (
            stop.clone(),
            drain.clone(),
            sessions.clone(),
            self.events.clone(),
        );
        tokio::spawn(accept_loop(
            self.transport.clone(),
            listener,
            config,
            stop.clone().cancelled_owned(),
            move |conn| {
                let shared = shared.clone();
                let stop = sessions_stop.clone();
                let drain = sessions_drain.clone();
                let tracker = tracker.clone();
                let events = events.clone();
                async move {
                    session::spawn(conn, shared, stop, drain, &tracker, events);
                }
            },
        ));
        tracing::debug!(addr = %local, "publisher socket bound");
        self.local_addr = Some(local);
        self.guard = Some(Arc::new(Guard {
            stop,
            sessions,
            drain,
        }));
        Ok(())
    }

    /// Closes the socket gracefully, for every clone: stops accepting, lets every
    /// subscriber's session write what is queued for it for up to [`PubOptions::linger`],
    /// then closes the sessions. Publishing afterwards fails with [`Error::Closed`].
    pub async fn close(&self) {
        let Some(guard) = self.guard.as_ref() else {
            return;
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        guard.drain.cancel();
        guard.sessions.close();
        let linger = self.shared.options.linger;
        if tokio::time::timeout(linger, guard.sessions.wait())
            .await
            .is_err()
        {
            guard.stop.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), guard.sessions.wait()).await;
        }
        guard.stop.cancel();
    }

    /// The address the socket is bound to; `None` before [`bind`](Self::bind).
    pub fn local_addr(&self) -> Option<T::Addr> {
        self.local_addr.clone()
    }

    /// Publishes `payload` on `topic` to every subscriber whose subscriptions match it.
    ///
    /// With the default [`SlowSubscriber::Drop`] this never waits: a subscriber whose
    /// queue is full loses this message, and the loss is counted.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] for an empty token or a wildcard in `topic`,
    /// [`Error::FrameTooLarge`] over the frame limit, [`Error::NotBound`] before
    /// [`bind`](Self::bind).
    pub async fn publish(&self, topic: impl AsRef<str>, payload: Bytes) -> Result<(), Error> {
        self.publish_message(topic.as_ref(), &Message::new(payload))
            .await
    }

    /// Publishes a message, headers included.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish).
    pub async fn publish_message(&self, topic: &str, msg: &Message) -> Result<(), Error> {
        if self.guard.is_none() {
            return Err(Error::NotBound);
        }
        match &self.codec {
            Some(codec) => {
                self.shared
                    .publish(topic, &codec.compress(msg.clone()))
                    .await
            }
            None => self.shared.publish(topic, msg).await,
        }
    }

    /// The socket's counters.
    pub fn stats(&self) -> PubStats {
        PubStats {
            published: self.shared.published.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            subscribers: self.shared.read().sessions.len(),
        }
    }

    /// The counters of each subscriber connected now.
    pub fn subscriber_stats(&self) -> Vec<SubscriberStats<T::Addr>> {
        let registry = self.shared.read();
        let mut stats: Vec<_> = registry
            .sessions
            .values()
            .map(|s| SubscriberStats {
                peer: s.peer.clone(),
                sent: s.sent.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                queued: lock(&s.queue).frames.len(),
            })
            .collect();
        stats.sort_by_key(|s| s.peer.to_string());
        stats
    }
}

/// The future of a publish through [`PubSocket`] as a [`tower::Service`].
pub struct PublishFuture {
    inner: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
}

impl fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishFuture").finish_non_exhaustive()
    }
}

impl Future for PublishFuture {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl<T: Transport> tower::Service<Publication> for PubSocket<T> {
    type Response = ();
    type Error = Error;
    type Future = PublishFuture;

    /// Under [`SlowSubscriber::Drop`], always ready: a full subscriber queue drops. Under
    /// [`SlowSubscriber::Wait`], pending while any subscriber's queue is full, so that
    /// back-pressure reaches the caller before it makes the publication (and a
    /// `tower::limit` or `tower::load_shed` above sees it).
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.guard.is_none() {
            return Poll::Ready(Err(Error::NotBound));
        }
        if self.shared.closed.load(Ordering::Relaxed) {
            return Poll::Ready(Err(Error::Closed));
        }
        if self.shared.options.slow_subscriber == SlowSubscriber::Drop {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Some(waiting) = self.waiting.as_mut() {
                std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
            }
            let Some(space) = self.shared.first_full() else {
                return Poll::Ready(Ok(()));
            };
            let mut waiting = Box::pin(space.notified_owned());
            // Registered before the second look, so that room made in between wakes it.
            waiting.as_mut().enable();
            if self.shared.first_full().is_none() {
                return Poll::Ready(Ok(()));
            }
            self.waiting = Some(waiting);
        }
    }

    fn call(&mut self, mut publication: Publication) -> PublishFuture {
        if let Some(codec) = &self.codec {
            publication.message = codec.compress(publication.message);
        }
        let shared = self.shared.clone();
        let bound = self.guard.is_some();
        PublishFuture {
            inner: Box::pin(async move {
                if !bound {
                    return Err(Error::NotBound);
                }
                shared
                    .publish(&publication.topic, &publication.message)
                    .await
            }),
        }
    }
}

/// A publication: compressed on the way out, once for all subscribers.
impl msg_layers::compression::Compress<()> for Publication {
    type Output = ();

    fn compress_request(mut self, codec: &Codec) -> Self {
        self.message = codec.compress(self.message);
        self
    }

    fn compress_response(_: (), _codec: &Codec) {}
}

/// A publication's span: its size, encoding and topic.
impl msg_layers::trace::Describe for Publication {
    const KIND: &'static str = "publish";

    fn describe(&self, span: &tracing::Span) {
        span.record("size", self.message.payload().len());
        span.record("encoding", tracing::field::display(self.message.encoding()));
        span.record("topic", self.topic.as_str());
    }

    fn payload_len(&self) -> usize {
        self.message.payload().len()
    }
}
