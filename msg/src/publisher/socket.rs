//! [`PubSocket`]: the handle a user holds, binds and publishes through.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use msg_core::{Authenticator, Message, SocketType};
use msg_transports::{Listener, Traffic, Transport};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::hub::{give_way, Hub};
use super::route::RouteCache;
use super::{
    session, PubOptions, PubStats, Publication, SlowSubscriber, SubscriberStats,
    SubscriptionChanges,
};
use crate::accept::{accept_loop, AcceptConfig, Established};
use crate::admission::{self, Admission, AdmissionService, Authenticate};
use crate::dial::{Dialer, Handover};
use crate::events::{EventSink, Events};
use crate::handshake::Part;
use crate::io::heartbeat_config;
use crate::offload;
use crate::options::DialOptions;
use crate::Error;
use msg_layers::compression::{Codec, Compressor, DEFAULT_MIN_LEN};

/// Ends the accept loop and the sessions when the last handle of a socket is gone.
struct Guard {
    stop: CancellationToken,
    /// The sessions, to wait for on close.
    sessions: TaskTracker,
    /// Stops the sessions once they have written what is queued: cancelled by `close`.
    drain: CancellationToken,
    /// How long the sessions may take to write what is queued: [`PubOptions::linger`].
    linger: Duration,
}

impl Guard {
    /// Winds the socket down: the sessions (and the supervisors of `connect`, which watch
    /// `drain`) stop taking work and write what is queued, for up to the linger; then
    /// everything stops. The future waits for that; the draining starts at once.
    fn wind_down(&self) -> impl Future<Output = ()> + Send + 'static {
        self.drain.cancel();
        self.sessions.close();
        let (stop, sessions, linger) = (self.stop.clone(), self.sessions.clone(), self.linger);
        async move {
            if tokio::time::timeout(linger, sessions.wait()).await.is_err() {
                stop.cancel();
                let _ = tokio::time::timeout(Duration::from_secs(1), sessions.wait()).await;
            }
            stop.cancel();
        }
    }
}

impl Drop for Guard {
    /// The last handle is gone: the socket winds down as [`PubSocket::close`] does, in the
    /// background, so that what was published is still written (outside a runtime, where
    /// nothing can run in the background, it stops at once).
    fn drop(&mut self) {
        let wind_down = self.wind_down();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn(wind_down)),
            Err(_) => self.stop.cancel(),
        }
    }
}

/// The publishing side of Publish/Subscribe.
///
/// Bind it and publish on topics; every subscriber whose subscriptions match a topic gets
/// the message. Filtering happens here, before any byte is sent. Each subscriber has a
/// bounded queue; by default a subscriber that falls behind loses messages, counted in
/// [`stats`](Self::stats), and never slows `publish` or the other subscribers (see
/// [`SlowSubscriber`]). The socket is a cheap [`Clone`] handle and a [`tower::Service`] of
/// [`Publication`]s. Clones share the subscribers and the counters; each keeps its own
/// route of the last topic it published, and a publish takes no lock shared with the
/// other handles.
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
    /// A permit per subscriber served, accepted or dialed; none left, a new one is refused.
    connections: Arc<tokio::sync::Semaphore>,
    /// How `connect` dials and redials.
    dial: DialOptions,
    events: Arc<EventSink<T::Addr>>,
    shared: Arc<Hub<T::Addr>>,
    /// This handle's own: clones never share it.
    route: RouteCache<T::Addr>,
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
            connections: self.connections.clone(),
            dial: self.dial.clone(),
            events: self.events.clone(),
            shared: self.shared.clone(),
            route: RouteCache::default(),
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
    pub fn with_options(mut transport: T, options: PubOptions) -> Self {
        transport.set_traffic(Traffic::Send);
        let options = options.validated();
        let connections = Arc::new(tokio::sync::Semaphore::new(
            options
                .max_connections
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        PubSocket {
            transport,
            codec: None,
            waiting: None,
            admission: None,
            connections,
            dial: DialOptions::default(),
            events: EventSink::new(),
            shared: Arc::new(Hub::new(options)),
            route: RouteCache::default(),
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
    /// # #[cfg(feature = "gzip")] { // the codec's feature, on by default
    /// use msg::{compression::GzipCompressor, PubSocket, Tcp};
    ///
    /// let publisher = PubSocket::new(Tcp::new()).with_compressor(GzipCompressor::new(6));
    /// # }
    /// ```
    pub fn with_compressor(mut self, compressor: impl Compressor) -> Self {
        self.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Requires every subscriber to pass `auth` in the handshake (the book's way). It
    /// installs admission by [`Authenticate`]; see [`with_admission`](Self::with_admission).
    /// Call before [`bind`](Self::bind) or [`connect`](Self::connect).
    pub fn with_auth(self, auth: impl Authenticator) -> Self {
        self.with_admission(Authenticate::new(auth))
    }

    /// Decides with `admission` whether each subscriber, once it said hello, may use the
    /// socket; see [`admission`](mod@crate::admission). Call before [`bind`](Self::bind) or
    /// [`connect`](Self::connect).
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
        let guard = self.guard();
        let options = &self.shared.options;
        let config = AcceptConfig {
            socket_type: SocketType::Pub,
            max_frame_len: options.max_frame_len,
            handshake_timeout: options.handshake_timeout,
            max_handshakes: options.max_handshakes,
            heartbeat: heartbeat_config(options.heartbeat_interval, options.heartbeat_timeout),
            part: self.part(),
            events: self.events.clone(),
        };
        let serve = self.serve_sessions(&guard);
        tokio::spawn(accept_loop(
            self.transport.clone(),
            listener,
            config,
            guard.stop.clone().cancelled_owned(),
            move |conn| {
                serve(conn);
                std::future::ready(())
            },
        ));
        tracing::debug!(addr = %local, "publisher socket bound");
        self.local_addr = Some(local);
        Ok(())
    }

    /// Sets how [`connect`](Self::connect) dials: its connect timeout and its redial
    /// [`Backoff`](crate::Backoff) (the token is not used: this side answers the hello).
    /// Default: [`DialOptions::default`].
    pub fn with_dial(mut self, dial: DialOptions) -> Self {
        self.dial = dial.validated();
        self
    }

    /// Connects to a subscriber socket that binds at `target` (a
    /// [`SubSocket::bind`](crate::SubSocket::bind)), and serves it as an accepted
    /// subscriber: its subscriptions, the drop policy and high-water marks, sequence
    /// numbers and the counters are those of the subscribers of [`bind`](Self::bind). The
    /// subscriber says hello, and this socket answers it as its listener would: the socket
    /// type, the connection limit and admission ([`with_auth`](Self::with_auth)) are
    /// checked. A lost connection is redialed with the [`Backoff`](crate::Backoff) of
    /// [`with_dial`](Self::with_dial) until the socket is closed; the subscriber replays
    /// its subscriptions on each new connection. A socket may connect to many subscribers,
    /// and bind as well.
    ///
    /// # Errors
    ///
    /// If the first dial fails: [`Error::Transport`] if the peer cannot be reached,
    /// [`Error::Refused`] if this socket refused it (the wrong socket type, admission),
    /// [`Error::ConnectTimeout`] if the transport's exchange and the hello take longer
    /// than the connect timeout, [`Error::NotMsg`] if the peer does not speak msg.
    pub async fn connect(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let dialer = self.dialer(target.into());
        let first = dialer.dial_first().await?;
        self.supervise(dialer, Some(first));
        Ok(())
    }

    /// Connects to a subscriber socket at `target` in the background and returns at once,
    /// so that either side may start first; failed dials are retried with the
    /// [`Backoff`](crate::Backoff) and reported in [`events`](Self::events). See
    /// [`connect`](Self::connect).
    ///
    /// Must be called within a tokio runtime.
    pub fn connect_lazy(&mut self, target: impl Into<T::Target>) {
        let dialer = self.dialer(target.into());
        self.supervise(dialer, None);
    }

    /// The guard of the socket's sessions, made by the first `bind` or `connect`.
    fn guard(&mut self) -> Arc<Guard> {
        self.guard
            .get_or_insert_with(|| {
                Arc::new(Guard {
                    stop: CancellationToken::new(),
                    sessions: TaskTracker::new(),
                    drain: CancellationToken::new(),
                    linger: self.shared.options.linger,
                })
            })
            .clone()
    }

    /// This socket's part in the hello, dialed or accepted: it answers.
    fn part(&self) -> Part<T::Addr> {
        Part::Answer {
            admission: self.admission.clone(),
            connections: self.connections.clone(),
        }
    }

    /// Serves a welcomed subscriber's session, accepted or dialed, under `guard`.
    fn serve_sessions(
        &self,
        guard: &Guard,
    ) -> impl Fn(Established<T::Io, T::Addr>) + Clone + Send + 'static {
        let shared = self.shared.clone();
        let (stop, drain, tracker, events) = (
            guard.stop.clone(),
            guard.drain.clone(),
            guard.sessions.clone(),
            self.events.clone(),
        );
        move |conn| {
            session::spawn(
                conn,
                shared.clone(),
                stop.clone(),
                drain.clone(),
                &tracker,
                events.clone(),
            );
        }
    }

    fn dialer(&self, target: T::Target) -> Dialer<T> {
        Dialer::new(
            self.transport.clone(),
            target,
            SocketType::Pub,
            &self.shared.options.connection(),
            self.dial.clone(),
            self.events.clone(),
        )
        .with_part(self.part())
    }

    /// Runs a reconnect supervisor that serves each connection of `dialer` as an accepted
    /// subscriber's session, until the socket is closed (or its last handle dropped).
    fn supervise(&mut self, dialer: Dialer<T>, first: Option<Established<T::Io, T::Addr>>) {
        let guard = self.guard();
        let serve = self.serve_sessions(&guard);
        let session = Handover {
            hand: move |conn| {
                serve(conn);
                std::future::ready(true)
            },
            closed: guard.drain.clone(),
        };
        tokio::spawn(crate::dial::supervise(
            dialer,
            session,
            first,
            guard.drain.clone(),
            Duration::from_secs(1),
        ));
    }

    /// Closes the socket gracefully, for every clone: stops accepting, lets every
    /// subscriber's session write what is queued for it for up to [`PubOptions::linger`],
    /// then closes the sessions. Publishing afterwards fails with [`Error::Closed`].
    ///
    /// Dropping the last handle does the same in the background; await `close` where the
    /// program must know the last publications were written before it goes on (or exits,
    /// which ends the background work with the runtime).
    pub async fn close(&self) {
        let Some(guard) = self.guard.as_ref() else {
            return;
        };
        self.shared.closed.store(true, Ordering::SeqCst);
        guard.wind_down().await;
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
    /// [`bind`](Self::bind) or [`connect`](Self::connect).
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
        give_way().await;
        let routed = self.route.route(&self.shared.registry, topic);
        let hub = &self.shared;
        let routed = hub.ensure_open().and(routed)?;
        let blocked = match &self.codec {
            // A long message is compressed on the blocking pool (see `offload`).
            Some(codec) => hub.start(&routed, &offload::compress(codec, msg.clone()).await)?,
            None => hub.start(&routed, msg)?,
        };
        if let Some(blocked) = blocked {
            hub.finish(&routed, blocked).await;
        }
        Ok(())
    }

    /// The socket's counters.
    pub fn stats(&self) -> PubStats {
        let snapshot = self.shared.registry.load();
        PubStats {
            published: self.shared.published.load(Ordering::Relaxed),
            queued: self.shared.queued.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            subscribers: snapshot.sessions.len(),
            subscription_changes: snapshot.version,
        }
    }

    /// The patterns its subscribers hold now, taken together (each once), sorted.
    pub fn subscriptions(&self) -> Vec<String> {
        self.shared.registry.patterns()
    }

    /// The changes to the patterns its subscribers hold, taken together, from those held
    /// now on: a pattern is added when the first subscriber takes it, and removed when the
    /// last one holding it unsubscribes or leaves. ZeroMQ's XPUB gives the same as
    /// subscription messages; a [`Forwarder`](crate::Forwarder) subscribes upstream to
    /// exactly these. Every clone sees the same set; see [`SubscriptionChanges`].
    ///
    /// # Example
    ///
    /// ```
    /// use msg::{PubSocket, SubSocket, SubscriptionChange, Tcp};
    /// use tokio_stream::StreamExt;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), msg::Error> {
    /// let mut publisher = PubSocket::new(Tcp::default());
    /// publisher.bind("127.0.0.1:0").await?;
    /// let mut changes = publisher.subscription_changes();
    ///
    /// let mut subscriber = SubSocket::new(Tcp::default());
    /// subscriber.connect(publisher.local_addr().unwrap()).await?;
    /// subscriber.subscribe("prices.>").await?;
    ///
    /// let change = changes.next().await.unwrap();
    /// assert_eq!((change.pattern.as_str(), change.added), ("prices.>", true));
    /// assert_eq!(publisher.subscriptions(), vec!["prices.>"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn subscription_changes(&self) -> SubscriptionChanges {
        self.shared.registry.watch()
    }

    /// The counters of each subscriber connected now.
    pub fn subscriber_stats(&self) -> Vec<SubscriberStats<T::Addr>> {
        let snapshot = self.shared.registry.load();
        let mut stats: Vec<_> = snapshot
            .sessions
            .iter()
            .map(|s| SubscriberStats {
                peer: s.peer.clone(),
                sent: s.sent.load(Ordering::Relaxed),
                dropped: s.dropped.load(Ordering::Relaxed),
                queued: s.len(),
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
    /// [`SlowSubscriber::Wait`], pending while any subscriber's queue is full (a count
    /// kept as queues fill and drain: no queue is visited here), so that
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
        let pressure = &self.shared.pressure;
        loop {
            if let Some(waiting) = self.waiting.as_mut() {
                std::task::ready!(waiting.as_mut().poll(cx));
                self.waiting = None;
            }
            if !pressure.any_full() {
                return Poll::Ready(Ok(()));
            }
            let mut waiting = Box::pin(pressure.room().notified_owned());
            // Registered before the second look, so that room made in between wakes it.
            waiting.as_mut().enable();
            if !pressure.any_full() {
                return Poll::Ready(Ok(()));
            }
            self.waiting = Some(waiting);
        }
    }

    fn call(&mut self, publication: Publication) -> PublishFuture {
        let codec = self.codec.clone();
        let shared = self.shared.clone();
        let bound = self.guard.is_some();
        let routed = self.route.route(&shared.registry, &publication.topic);
        PublishFuture {
            inner: Box::pin(async move {
                if !bound {
                    return Err(Error::NotBound);
                }
                let message = match &codec {
                    Some(codec) => offload::compress(codec, publication.message).await,
                    None => publication.message,
                };
                shared.publish(routed, &message).await
            }),
        }
    }
}
