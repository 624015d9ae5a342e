//! [`SubSocket`]: the subscribing side of Publish/Subscribe.

mod bind;
mod conn;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use msg_core::{Encoding, Message, SocketType, DEFAULT_MAX_FRAME_LEN};
use msg_transports::{Traffic, Transport};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::discover::Change as Discovered;

use crate::accept::Established;
use crate::counters::Lazy;
use crate::dial::{self, Dialer};
use crate::events::{EventSink, Events};
use crate::handoff::{wake_all, Handoff, Weigh};
use crate::options::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
};
use crate::topic::validate_pattern;
use crate::{Backoff, Error};
use msg_layers::compression::Decoders;

/// Subscription changes waiting for one connection's task; `subscribe` waits for room.
const CHANGES: usize = 64;

/// Options of a [`SubSocket`]: the [connection](crate::ConnectionOptions) and
/// [dial](crate::DialOptions) options every socket shares (see [`options`](crate::options)), and
/// its own. Checked once, when the socket is made: a value with no sane meaning (a zero
/// count) is raised to the least one that has one.
///
/// # Example
///
/// ```
/// use msg::SubOptions;
///
/// let options = SubOptions::default().inbox(1024);
/// assert_eq!(options.inbox, 1024);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubOptions {
    /// Messages received and not yet taken from the socket's [`Stream`]. When it is full
    /// the socket stops reading, and publishers see a slow subscriber. Default: 8192.
    pub inbox: usize,
    /// Payload bytes received and not yet taken from the socket's [`Stream`], the other
    /// bound of the inbox, so that large messages cannot make the message count a loose
    /// bound on memory. A message larger than this is still taken when the inbox has room.
    /// Default: 1 MiB. The socket's buffers in the kernel hold more behind it, and a small
    /// inbox keeps the messages waiting for the application in the CPU's cache: against
    /// 8 MiB, 1 MiB measured 30% faster with 64 KiB messages and 10% with 1 KiB ones.
    pub inbox_bytes: usize,
    /// Largest frame received, in bytes: see [`ConnectionOptions::max_frame_len`](crate::ConnectionOptions::max_frame_len). Default:
    /// 64 MiB.
    pub max_frame_len: usize,
    /// Longest one dial may take, the transport's exchange and the hello together: see
    /// [`DialOptions::connect_timeout`](crate::DialOptions::connect_timeout). Default: 10 s.
    pub connect_timeout: Duration,
    /// Token sent in the handshake for the publisher's
    /// [`Authenticator`](crate::Authenticator). Default: none.
    pub auth_token: Option<Bytes>,
    /// Delays between redials of a lost publisher. Default: [`Backoff::default`].
    pub reconnect: Backoff,
    /// Silence from a publisher after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from a publisher after which the connection is given up and the publisher
    /// redialed. Default: 20 s.
    pub heartbeat_timeout: Duration,
    /// Longest [`SubSocket::close`] waits for its connections to close cleanly (a TLS
    /// close_notify, a QUIC stream's finish). Default: 2 s.
    pub linger: Duration,
    /// Longest [`SubSocket::subscribe`] waits for a publisher when none is connected (the
    /// socket is dialing one, or redialing a lost one) before it fails with
    /// [`Error::NotConnected`]. Default: 10 s, as a request socket's
    /// [`reconnect_wait`](crate::ReqOptions::reconnect_wait).
    pub reconnect_wait: Duration,
}

impl Default for SubOptions {
    fn default() -> Self {
        SubOptions {
            inbox: 8192,
            inbox_bytes: 1024 * 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            auth_token: None,
            reconnect: Backoff::default(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            linger: Duration::from_secs(2),
            reconnect_wait: Duration::from_secs(10),
        }
    }
}

impl SubOptions {
    crate::options::option_group!(connection, with_connection, ConnectionOptions, "connection" {
        max_frame_len, heartbeat_interval, heartbeat_timeout
    });

    crate::options::connection_setters!();

    crate::options::option_group!(dial, with_dial, DialOptions, "dial" {
        connect_timeout, auth_token, reconnect
    });

    crate::options::dial_setters!();

    /// The options with every value raised to its least sane one, as the socket takes them.
    fn validated(self) -> Self {
        let connection = self.connection().validated();
        let dial = self.dial().validated();
        let mut options = self.with_connection(connection).with_dial(dial);
        options.inbox = options.inbox.max(1);
        options.inbox_bytes = options.inbox_bytes.max(1);
        options
    }

    /// Sets [`connect_timeout`](Self::connect_timeout), which bounds the hello and the
    /// transport's exchange before it together (the name this setting had before).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        self.connect_timeout(timeout)
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`reconnect_wait`](Self::reconnect_wait).
    pub fn reconnect_wait(mut self, wait: Duration) -> Self {
        self.reconnect_wait = wait;
        self
    }

    /// Sets [`inbox`](Self::inbox); at least 1.
    pub fn inbox(mut self, messages: usize) -> Self {
        self.inbox = messages.max(1);
        self
    }

    /// Sets [`inbox_bytes`](Self::inbox_bytes); at least 1.
    pub fn inbox_bytes(mut self, bytes: usize) -> Self {
        self.inbox_bytes = bytes.max(1);
        self
    }
}

/// A message received by a [`SubSocket`].
#[derive(Clone, PartialEq, Eq)]
pub struct SubMessage<A = SocketAddr> {
    topic: Bytes,
    payload: Bytes,
    encoding: Encoding,
    publisher: A,
    seq: u64,
}

impl<A: fmt::Debug> fmt::Debug for SubMessage<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubMessage")
            .field("topic", &self.topic())
            .field("payload", &self.payload)
            .field("publisher", &self.publisher)
            .field("seq", &self.seq)
            .finish()
    }
}

impl<A> SubMessage<A> {
    /// The topic it was published on.
    pub fn topic(&self) -> &str {
        // Checked to be UTF-8 when it arrived.
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// Takes the payload out.
    pub fn into_payload(self) -> Bytes {
        self.payload
    }

    /// How the payload is encoded.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// The address of the publisher it came from.
    pub fn publisher(&self) -> &A {
        &self.publisher
    }

    /// Its sequence number in the publisher's session with this socket: consecutive
    /// unless messages were dropped for this subscriber.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// Counters of a [`SubSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct SubStats {
    /// Messages received.
    pub received: u64,
    /// Messages the publishers sent this socket's way but dropped, counted from the gaps
    /// in their sequence numbers.
    pub missed: u64,
    /// Messages received that could not be decoded (an unknown encoding, a payload that
    /// would inflate past the frame limit, a corrupt one) and were dropped.
    pub undecodable: u64,
    /// Publishers connected now.
    pub publishers: usize,
}

/// The inbox is bounded in payload bytes too.
impl<A> Weigh for SubMessage<A> {
    fn weight(&self) -> usize {
        self.payload.len()
    }
}

/// A change of subscription for one connection to send, and where to say it is applied.
struct Change {
    subscribe: bool,
    pattern: String,
    /// Told once applied, or why the publisher refused it.
    applied: oneshot::Sender<Result<(), String>>,
}

struct ConnHandle {
    /// Which one it is, for [`Starter::disconnect`].
    id: u64,
    /// Stops this connection and its redials alone.
    stop: CancellationToken,
    changes: mpsc::Sender<Change>,
    connected: Arc<AtomicBool>,
    dialing: Arc<Mutex<Dialing>>,
}

/// How one publisher's dialing is going, for a `subscribe` that finds it not connected.
#[derive(Default)]
struct Dialing {
    /// Why its last dial failed, since it was last connected.
    last: Option<Arc<Error>>,
    /// It stopped redialing, for good: the publisher's answer will not change, or the
    /// redials ran out.
    stopped: Option<Error>,
}

/// The subscriber's mailbox: the inbox its connections deliver to, the subscriptions
/// they replay, and the counters.
struct Mailbox<A> {
    /// Messages received and not yet taken; its consumer is the socket's stream, and
    /// connections that find it full wait for room.
    inbox: Handoff<SubMessage<A>>,
    subscriptions: Mutex<BTreeSet<String>>,
    conns: Mutex<Vec<ConnHandle>>,
    /// The socket is bound: publishers may still connect to it.
    listening: AtomicBool,
    /// The id of the next connection.
    next_id: AtomicU64,
    /// Discovery streams still running: a `subscribe` with no publisher yet waits for one
    /// while there is any.
    discovering: AtomicUsize,
    /// Told when a connection comes up or stops redialing, or a discovery stream ends.
    links: tokio::sync::Notify,
    /// Called at each failed dial while no publisher is connected: a discovery source
    /// asked to look again (a `Dns` resolves at once, rate limited).
    all_down: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
    received: AtomicU64,
    missed: AtomicU64,
    /// `msg_subscriber_missed_total`, registered at the first gap.
    missed_counter: Lazy,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves its data consistent, so a poisoned lock is still sound.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<A> Mailbox<A> {
    /// Tells the discovery sources that want to know that no publisher is connected, if
    /// none is.
    pub(super) fn tell_if_all_down(&self) {
        if lock(&self.conns)
            .iter()
            .any(|c| c.connected.load(Ordering::SeqCst))
        {
            return;
        }
        for f in lock(&self.all_down).iter() {
            f();
        }
    }

    /// Hands a batch to the consumer, or registers `cx` to be woken when there is room.
    /// Returns whether the batch was taken.
    fn deliver(
        &self,
        batch: &mut Vec<SubMessage<A>>,
        batch_bytes: &mut usize,
        cx: &mut Context<'_>,
    ) -> bool {
        let consumer = {
            let mut inbox = self.inbox.lock();
            if inbox.is_full() {
                // Once per connection, however often it finds the inbox full.
                inbox.room.wait(cx.waker());
                return false;
            }
            self.received
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            *batch_bytes = 0;
            inbox.push_batch(batch)
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        true
    }
}

/// Stops the socket's connections when the socket is dropped.
struct Guard(CancellationToken);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// What starting and stopping one publisher's connection takes: the socket's parts a
/// discovery task shares.
struct Starter<T: Transport> {
    transport: T,
    options: SubOptions,
    events: Arc<EventSink<T::Addr>>,
    shared: Arc<Mailbox<T::Addr>>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl<T: Transport> Starter<T> {
    fn dialer(&self, target: T::Target) -> Dialer<T> {
        Dialer::new(
            self.transport.clone(),
            target,
            SocketType::Sub,
            &self.options.connection(),
            self.options.dial(),
            self.events.clone(),
        )
    }

    /// Starts a reconnect supervisor for one publisher. Returns its id, and a receiver told
    /// once the first connection's subscriptions are applied.
    fn start(
        &self,
        dialer: Dialer<T>,
        first: Option<Established<T::Io, T::Addr>>,
    ) -> (u64, oneshot::Receiver<()>) {
        let (changes, changes_rx) = mpsc::channel(CHANGES);
        let connected = Arc::new(AtomicBool::new(false));
        let dialing = Arc::new(Mutex::new(Dialing::default()));
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = self.stop.child_token();
        lock(&self.shared.conns).push(ConnHandle {
            id,
            stop: stop.clone(),
            changes,
            connected: connected.clone(),
            dialing: dialing.clone(),
        });
        let (ready, ready_rx) = oneshot::channel();
        let session = conn::SubSession {
            shared: self.shared.clone(),
            changes: changes_rx,
            connected,
            dialing,
            ready: Some(ready),
            stop: stop.clone(),
            linger: self.options.linger,
            state: conn::EndpointState::new(),
        };
        self.tasks.spawn(dial::supervise(
            dialer,
            session,
            first,
            stop,
            Duration::from_secs(1),
        ));
        (id, ready_rx)
    }

    /// Closes the connection `id` started and stops its redials; the socket forgets it.
    fn disconnect(&self, id: u64) {
        let mut conns = lock(&self.shared.conns);
        if let Some(at) = conns.iter().position(|c| c.id == id) {
            conns.swap_remove(at).stop.cancel();
        }
    }

    /// Applies `discovery`'s changes until it ends or the socket is closed.
    async fn discover<K, V, E, D>(self, discovery: D, _discovering: Discovering<T::Addr>)
    where
        D: Stream<Item = Result<Discovered<K, V>, E>> + Send + 'static,
        K: Eq + Hash + Send + 'static,
        V: Into<T::Target>,
        E: fmt::Display + Send + 'static,
    {
        let mut discovery = std::pin::pin!(discovery);
        // The publishers this stream gave, by its keys.
        let mut given: HashMap<K, u64> = HashMap::new();
        loop {
            let change = tokio::select! {
                _ = self.stop.cancelled() => return,
                change = std::future::poll_fn(|cx| discovery.as_mut().poll_next(cx)) => change,
            };
            match change {
                None => return,
                Some(Ok(Discovered::Insert(key, target))) => {
                    change_counter("insert");
                    let (id, _) = self.start(self.dialer(target.into()), None);
                    if let Some(replaced) = given.insert(key, id) {
                        self.disconnect(replaced);
                    }
                }
                Some(Ok(Discovered::Remove(key))) => {
                    change_counter("remove");
                    if let Some(id) = given.remove(&key) {
                        self.disconnect(id);
                    }
                }
                Some(Err(e)) => {
                    change_counter("error");
                    tracing::warn!(error = %e, "discovery failed; its publishers are kept");
                }
            }
        }
    }
}

/// Counts one change a discovery stream gave (rare: looked up each time).
fn change_counter(kind: &'static str) {
    metrics::counter!("msg_subscriber_discovery_changes_total", "kind" => kind).increment(1);
}

/// A discovery stream running, counted in the mailbox while it lives.
struct Discovering<A>(Arc<Mailbox<A>>);

impl<A> Discovering<A> {
    fn new(shared: Arc<Mailbox<A>>) -> Self {
        shared.discovering.fetch_add(1, Ordering::SeqCst);
        Discovering(shared)
    }
}

impl<A> Drop for Discovering<A> {
    fn drop(&mut self) {
        self.0.discovering.fetch_sub(1, Ordering::SeqCst);
        // A `subscribe` waiting for a publisher may have nothing left to wait for.
        self.0.links.notify_waiters();
    }
}

/// The subscribing side of Publish/Subscribe.
///
/// Connect it to one or more publishers, subscribe to topics or patterns (see
/// [`topic`](crate::topic)), and read the messages as a [`Stream`] of [`SubMessage`]s.
/// Subscriptions are sent to the publishers, which filter before sending.
/// [`subscribe`](Self::subscribe) returns once every connected publisher has applied the
/// subscription, so a message published after it returns is received. A lost publisher is
/// redialled with [`Backoff`], and the subscriptions are replayed before any message flows.
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
/// sub_socket.subscribe("orders.*.created").await?;
///
/// pub_socket.publish("orders.eu.created", Bytes::from("#1")).await?;
/// pub_socket.publish("orders.eu.cancelled", Bytes::from("#2")).await?;
/// pub_socket.publish("orders.us.created", Bytes::from("#3")).await?;
///
/// assert_eq!(sub_socket.next().await.unwrap().payload(), "#1");
/// assert_eq!(sub_socket.next().await.unwrap().payload(), "#3");
/// # Ok(())
/// # }
/// ```
pub struct SubSocket<T: Transport> {
    transport: T,
    options: SubOptions,
    decoders: Decoders,
    events: Arc<EventSink<T::Addr>>,
    shared: Arc<Mailbox<T::Addr>>,
    /// Messages taken from the inbox in one go, handed out one by one.
    local: VecDeque<SubMessage<T::Addr>>,
    /// Messages dropped because they could not be decoded.
    undecodable: u64,
    /// A long message being decoded on the blocking pool: the next one handed out.
    decoding: Option<Decoding<T::Addr>>,
    stop: CancellationToken,
    /// The connections' supervisors, to wait for on close.
    tasks: TaskTracker,
    /// The address bound, if the socket binds.
    local_addr: Option<T::Addr>,
    _guard: Guard,
}

impl<T: Transport> fmt::Debug for SubSocket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubSocket")
            .field("options", &self.options)
            .field("subscriptions", &*lock(&self.shared.subscriptions))
            .finish_non_exhaustive()
    }
}

impl<T: Transport> SubSocket<T> {
    /// A subscriber socket over `transport`, with default options.
    pub fn new(transport: T) -> Self {
        Self::with_options(transport, SubOptions::default())
    }

    /// A subscriber socket over `transport` with `options`, each raised to its least sane
    /// value (see [`options`](crate::options)).
    pub fn with_options(mut transport: T, options: SubOptions) -> Self {
        transport.set_traffic(Traffic::Receive);
        let options = options.validated();
        let stop = CancellationToken::new();
        SubSocket {
            transport,
            decoders: Decoders::default(),
            events: EventSink::new(),
            shared: Arc::new(Mailbox {
                inbox: Handoff::new(options.inbox, options.inbox_bytes),
                subscriptions: Mutex::new(BTreeSet::new()),
                conns: Mutex::new(Vec::new()),
                listening: AtomicBool::new(false),
                next_id: AtomicU64::new(0),
                discovering: AtomicUsize::new(0),
                links: tokio::sync::Notify::new(),
                all_down: Mutex::new(Vec::new()),
                received: AtomicU64::new(0),
                missed: AtomicU64::new(0),
                missed_counter: Lazy::default(),
            }),
            options,
            local: VecDeque::new(),
            undecodable: 0,
            decoding: None,
            _guard: Guard(stop.clone()),
            stop,
            tasks: TaskTracker::new(),
            local_addr: None,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &SubOptions {
        &self.options
    }

    /// Connects to a publisher at `target` and applies the current subscriptions there.
    /// A socket may be connected to many publishers: each `connect` adds one (a
    /// `SubSocket` has no clones to share them with). A lost one is redialed, and the
    /// subscriptions replayed before any message flows.
    ///
    /// # Errors
    ///
    /// If the first dial fails: [`Error::Transport`] if the publisher cannot be reached,
    /// [`Error::HandshakeRejected`] if it refuses this socket,
    /// [`Error::ConnectTimeout`] if the transport's exchange and the hello take longer than
    /// [`SubOptions::connect_timeout`], [`Error::NotMsg`] if the publisher does not speak
    /// msg (or speaks TLS to a plain client, or plain to a TLS one), with a hint.
    pub async fn connect(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let dialer = self.dialer(target.into());
        let first = dialer.dial_first().await?;
        let ready = self.start(dialer, Some(first));
        // The replayed subscriptions are applied before `connect` returns.
        let _ = ready.await;
        Ok(())
    }

    /// Connects to a publisher at `target` in the background and returns at once, so that
    /// publisher and subscriber may start in any order. Failed dials are retried with
    /// [`SubOptions::reconnect`] and reported in [`events`](Self::events), but for an
    /// answer that will not change ([`Error::is_permanent`]: a server that is no publisher,
    /// admission's refusal), on which this publisher's dialing stops with
    /// [`SocketEvent::GaveUp`](crate::SocketEvent::GaveUp). [`subscribe`](Self::subscribe)
    /// waits for a publisher, bounded.
    ///
    /// Must be called within a tokio runtime.
    pub fn connect_lazy(&mut self, target: impl Into<T::Target>) {
        let dialer = self.dialer(target.into());
        drop(self.start(dialer, None));
    }

    /// Binds to `target` and accepts publishers that
    /// [connect](crate::PubSocket::connect) to it, as ZeroMQ lets either side bind. This
    /// socket says its hello (with [`SubOptions::auth_token`]) to each, as it does to a
    /// publisher it dials, and the publisher answers it as its own listener would. Each
    /// publisher is then sent the subscriptions and received from exactly as a connected
    /// one; when one leaves, it is forgotten (it redials, not this side). The handshake
    /// timeout and the limits of the accept loop are [`ListenOptions`](crate::ListenOptions)'
    /// defaults. A socket may bind and connect both, and bind more than once.
    ///
    /// [`subscribe`](Self::subscribe) on a bound socket does not wait for a publisher: with
    /// none connected, the pattern is kept and sent to each that connects.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the address does not resolve or cannot be bound.
    pub async fn bind(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let config = crate::listen::hello_config(
            SocketType::Sub,
            &self.options.connection(),
            &crate::ListenOptions::default(),
            self.options.auth_token.clone(),
            self.events.clone(),
        );
        let listening = crate::listen::listen(
            &self.transport,
            target.into(),
            config,
            self.stop.clone(),
            CHANGES,
        )
        .await?;
        self.local_addr = Some(listening.local_addr.clone());
        self.shared.listening.store(true, Ordering::SeqCst);
        self.tasks.spawn(bind::serve_publishers::<T>(
            listening,
            self.shared.clone(),
            self.events.clone(),
            self.stop.clone(),
            self.options.linger,
            self.tasks.clone(),
        ));
        Ok(())
    }

    /// The address the socket is bound to, with the real port; `None` before
    /// [`bind`](Self::bind).
    pub fn local_addr(&self) -> Option<T::Addr> {
        self.local_addr.clone()
    }

    /// The socket's connection events: connected, disconnected with the reason,
    /// reconnecting, dial failures and rejections, for every publisher. See [`Events`].
    pub fn events(&self) -> Events<T::Addr> {
        self.events.subscribe()
    }

    fn dialer(&self, target: T::Target) -> Dialer<T> {
        self.starter().dialer(target)
    }

    /// Starts a reconnect supervisor for one publisher; the receiver is told once the
    /// first connection's subscriptions are applied.
    fn start(
        &mut self,
        dialer: Dialer<T>,
        first: Option<Established<T::Io, T::Addr>>,
    ) -> oneshot::Receiver<()> {
        self.starter().start(dialer, first).1
    }

    /// What starting and stopping publishers' connections takes, for a task of its own.
    fn starter(&self) -> Starter<T> {
        Starter {
            transport: self.transport.clone(),
            options: self.options.clone(),
            events: self.events.clone(),
            shared: self.shared.clone(),
            stop: self.stop.clone(),
            tasks: self.tasks.clone(),
        }
    }

    /// Connects to every publisher `discovery` inserts (its target, anything that converts to
    /// the transport's, such as a `SocketAddr`) and disconnects from every one it
    /// removes, in a task of its own, until the stream ends or the socket is closed. Each
    /// insert is a [`connect_lazy`](Self::connect_lazy) (dialed in the background, redialed
    /// when lost, the current subscriptions replayed); each remove closes that publisher's
    /// connection and stops its redials. Subscriptions apply to every publisher, however it
    /// came. An insert of a key already inserted replaces its publisher; a remove of a key
    /// not inserted is ignored. An error item is logged and counted, and changes nothing.
    /// When the stream ends, the publishers it gave stay connected.
    ///
    /// Any stream of [`Change`](crate::discover::Change)s will do: a
    /// `Dns` name ([`msg::discover::Dns`](mod@crate::discover), feature `dns`), a channel fed
    /// by a registry of your own. While a
    /// discovery stream runs, [`subscribe`](Self::subscribe) with no publisher yet waits
    /// for one (up to [`SubOptions::reconnect_wait`]) rather than failing at once.
    ///
    /// Metrics (with the `metrics` crate's recorder): `msg_subscriber_discovery_changes_total`
    /// by `kind` (`insert`, `remove`, `error`), and `msg_subscriber_endpoints`, a gauge of
    /// every subscriber's publishers by `state` (`connecting`, `connected`, `stopped`).
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Example
    ///
    /// ```no_run
    /// # #[cfg(feature = "dns")]
    /// # mod doc {
    /// use msg::discover::Dns;
    /// use msg::{SubSocket, Tcp};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut sub = SubSocket::new(Tcp::default());
    /// sub.discover(Dns::new("prices.internal:9000")?);
    /// sub.subscribe("eur.>").await?;
    /// # Ok(())
    /// # }
    /// # }
    /// # fn main() {}
    /// ```
    pub fn discover<K, V, E, D>(&mut self, discovery: D)
    where
        D: Stream<Item = Result<Discovered<K, V>, E>> + Send + 'static,
        K: Eq + Hash + Send + 'static,
        V: Into<T::Target> + Send + 'static,
        E: fmt::Display + Send + 'static,
    {
        // A DNS name is resolved again at once while no publisher is reachable (rate
        // limited by the source), not only on its records' TTL.
        #[cfg(feature = "dns")]
        if let Some(dns) = (&discovery as &dyn std::any::Any).downcast_ref::<crate::discover::Dns>()
        {
            let refresh = dns.refresher();
            lock(&self.shared.all_down).push(Box::new(move || refresh.refresh()));
        }
        let starter = self.starter();
        let discovering = Discovering::new(self.shared.clone());
        self.tasks.spawn(starter.discover(discovery, discovering));
    }

    /// Registers a codec of your own for the messages this socket decodes (the built-in
    /// codecs need no registration).
    pub fn with_decompressor(mut self, codec: impl msg_layers::compression::Compressor) -> Self {
        self.decoders = std::mem::take(&mut self.decoders).register(codec);
        self
    }

    /// Closes the socket: no more messages are read, and every publisher connection is
    /// closed cleanly (what is queued on it written, the transport's own close completed),
    /// each given up to [`SubOptions::linger`]; returns once they are all closed. The
    /// stream ends once the messages already received are taken.
    ///
    /// Dropping the socket closes it the same way, in the background; drop never blocks.
    pub async fn close(&self) {
        self.stop.cancel();
        self.tasks.close();
        // Each connection bounds its own close by the linger; this bound is a backstop.
        let backstop = self.options.linger + Duration::from_secs(1);
        let _ = tokio::time::timeout(backstop, self.tasks.wait()).await;
    }

    /// Subscribes to `pattern` (a topic, or a pattern with `*` and `>` wildcards) and waits
    /// until every connected publisher has applied it.
    ///
    /// With no publisher connected, it waits for one, up to
    /// [`SubOptions::reconnect_wait`] (a `connect_lazy` still dialing, a publisher being
    /// redialed), and fails if none comes, or at once if there is none to wait for. Either
    /// way the pattern is kept: every publisher that connects later is sent it. A socket
    /// that [binds](Self::bind) does not wait: with no publisher connected it returns at
    /// once, and each publisher that connects is sent the pattern.
    ///
    /// It may be awaited from the task that reads the stream, even with the inbox full: a
    /// full inbox pauses the delivery of messages, not the reading of acks. A connection
    /// holds up to 256 messages (256 KiB) read past the inbox's room; an ack behind more
    /// than that waits for the stream to make room.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] for a pattern that breaks the topic grammar;
    /// [`Error::Refused`] if a publisher refused the subscription (a limit of its own);
    /// [`Error::NotConnected`] if no publisher connected within
    /// [`SubOptions::reconnect_wait`] (with why the last dial failed), or at once if
    /// `connect` was never called; and at once the error every publisher's dialing stopped
    /// with, if it stopped for good: the refusal of a server that is no publisher
    /// ([`Error::HandshakeRejected`]), of its admission, or `NotConnected` once
    /// [`Backoff::max_attempts`] ran out.
    pub async fn subscribe(&self, pattern: impl Into<String>) -> Result<(), Error> {
        let pattern = pattern.into();
        validate_pattern(&pattern)?;
        lock(&self.shared.subscriptions).insert(pattern.clone());
        self.wait_for_a_publisher().await?;
        self.change(true, pattern).await
    }

    /// Waits, up to [`SubOptions::reconnect_wait`], until a publisher is connected.
    async fn wait_for_a_publisher(&self) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + self.options.reconnect_wait;
        loop {
            let changed = self.shared.links.notified();
            let mut changed = std::pin::pin!(changed);
            // Registered before looking, so that a connection made meanwhile is not missed.
            changed.as_mut().enable();
            {
                let conns = lock(&self.shared.conns);
                if conns.iter().any(|c| c.connected.load(Ordering::SeqCst)) {
                    return Ok(());
                }
                // Bound: the publishers that connect are sent the pattern.
                if self.shared.listening.load(Ordering::SeqCst) {
                    return Ok(());
                }
                // A discovery stream may yet give one.
                if conns.is_empty() && self.shared.discovering.load(Ordering::SeqCst) == 0 {
                    return Err(Error::NotConnected { last: None });
                }
                // Nothing left to wait for once every publisher's dialing has stopped (and no
                // discovery stream may give another).
                let stopped: Option<Vec<Error>> = conns
                    .iter()
                    .map(|c| lock(&c.dialing).stopped.clone())
                    .collect();
                if self.shared.discovering.load(Ordering::SeqCst) == 0 {
                    if let Some(e) = stopped.and_then(|all| all.into_iter().next()) {
                        return Err(e);
                    }
                }
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let last = lock(&self.shared.conns)
                    .iter()
                    .find_map(|c| lock(&c.dialing).last.clone());
                return Err(Error::NotConnected { last });
            }
        }
    }

    /// Unsubscribes from `pattern` and waits until every connected publisher has applied
    /// it: no message on it is received after this returns, but those already in the
    /// socket's inbox.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] for a pattern that breaks the topic grammar.
    pub async fn unsubscribe(&self, pattern: impl Into<String>) -> Result<(), Error> {
        self.change(false, pattern.into()).await
    }

    async fn change(&self, subscribe: bool, pattern: String) -> Result<(), Error> {
        validate_pattern(&pattern)?;
        // Checked again: `subscribe` has checked it already.
        {
            let mut subscriptions = lock(&self.shared.subscriptions);
            if subscribe {
                subscriptions.insert(pattern.clone());
            } else {
                subscriptions.remove(&pattern);
            }
        }
        let connected: Vec<mpsc::Sender<Change>> = lock(&self.shared.conns)
            .iter()
            // The others replay the subscriptions when they are back.
            .filter(|conn| conn.connected.load(Ordering::SeqCst))
            .map(|conn| conn.changes.clone())
            .collect();
        let mut applied = Vec::new();
        for changes in connected {
            let (tx, rx) = oneshot::channel();
            let change = Change {
                subscribe,
                pattern: pattern.clone(),
                applied: tx,
            };
            if changes.send(change).await.is_ok() {
                applied.push(rx);
            }
        }
        let mut refused = None;
        for rx in applied {
            // A connection lost meanwhile replays the subscriptions when it is back.
            if let Ok(Err(reason)) = rx.await {
                refused = Some(reason);
            }
        }
        match refused {
            Some(reason) => {
                // Not kept, so not replayed to the publishers that took it either.
                lock(&self.shared.subscriptions).remove(&pattern);
                Err(Error::Refused { reason })
            }
            None => Ok(()),
        }
    }

    /// The patterns subscribed to.
    pub fn subscriptions(&self) -> Vec<String> {
        lock(&self.shared.subscriptions).iter().cloned().collect()
    }

    /// The socket's counters.
    pub fn stats(&self) -> SubStats {
        SubStats {
            received: self.shared.received.load(Ordering::Relaxed),
            missed: self.shared.missed.load(Ordering::Relaxed),
            undecodable: self.undecodable,
            publishers: lock(&self.shared.conns)
                .iter()
                .filter(|c| c.connected.load(Ordering::Relaxed))
                .count(),
        }
    }
}

impl<T: Transport> Stream for SubSocket<T> {
    type Item = SubMessage<T::Addr>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if let Some(decoding) = &mut this.decoding {
                let outcome = std::task::ready!(Pin::new(&mut decoding.job).poll(cx));
                let msg = this.decoding.take().map(|d| d.msg).expect("decoding");
                let encoding = msg.encoding;
                match crate::offload::joined(encoding, outcome) {
                    Ok(plain) => return Poll::Ready(Some(msg.decoded(plain.into_payload()))),
                    Err(e) => this.undecodable(&msg, e),
                }
                continue;
            }
            match this.poll_raw(cx) {
                Poll::Ready(Some(msg)) if !msg.encoding.is_identity() => {
                    let limit = this.options.max_frame_len;
                    let packed = Message::new(msg.payload.clone()).with_encoding(msg.encoding);
                    if crate::offload::decode_offloaded(&packed) {
                        // Decoded on the blocking pool; handed out, in its turn, when done.
                        let job = crate::offload::spawn_decode(&this.decoders, packed, limit);
                        this.decoding = Some(Decoding { job, msg });
                        continue;
                    }
                    match this.decoders.decompress(msg.encoding, &msg.payload, limit) {
                        Ok(plain) => return Poll::Ready(Some(msg.decoded(Bytes::from(plain)))),
                        Err(e) => this.undecodable(&msg, e),
                    }
                }
                other => return other,
            }
        }
    }
}

/// A long message being decoded on the blocking pool.
struct Decoding<A> {
    job: tokio::task::JoinHandle<Result<Message, msg_layers::compression::DecompressError>>,
    /// The message, still encoded.
    msg: SubMessage<A>,
}

impl<A> SubMessage<A> {
    /// The message with its payload decoded to `plain`.
    fn decoded(self, plain: Bytes) -> Self {
        SubMessage {
            payload: plain,
            encoding: Encoding::IDENTITY,
            ..self
        }
    }
}

impl<T: Transport> SubSocket<T> {
    /// `msg` could not be decoded: it is dropped, and counted.
    fn undecodable(
        &mut self,
        msg: &SubMessage<T::Addr>,
        e: msg_layers::compression::DecompressError,
    ) {
        if matches!(e, msg_layers::compression::DecompressError::TooLarge { .. }) {
            crate::limits::hit(crate::limits::DECOMPRESSED_LEN);
        }
        self.undecodable += 1;
        tracing::warn!(topic = msg.topic(), error = %e, "message not decoded; dropped");
    }
}

impl<T: Transport> SubSocket<T> {
    /// The next message as it arrived, encoded or not.
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<SubMessage<T::Addr>>> {
        let this = self;
        if let Some(msg) = this.local.pop_front() {
            return Poll::Ready(Some(msg));
        }
        let mut waiting = Vec::new();
        {
            let mut inbox = this.shared.inbox.lock();
            inbox.swap_out(&mut this.local);
            // Asleep only with nothing to hand out: a batch delivered meanwhile is taken
            // on the next visit, without a wake-up.
            if this.local.is_empty() {
                inbox.park(cx.waker());
            }
            inbox.room.wake_all(&mut waiting);
        }
        wake_all(waiting);
        match this.local.pop_front() {
            Some(msg) => Poll::Ready(Some(msg)),
            // Closed, and everything received taken.
            None if this.stop.is_cancelled() => Poll::Ready(None),
            None => Poll::Pending,
        }
    }
}
