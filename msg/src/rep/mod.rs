//! [`RepSocket`]: the server side of Request/Reply, and [`serve`](crate::serve)'s request
//! types.

mod calls;
mod conn;
mod mailbox;
mod serve;

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_core::Stream;
use msg_core::{Authenticator, Code, Message, SocketType, DEFAULT_MAX_FRAME_LEN};
use msg_transports::{Listener, Traffic, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accept::{accept_loop, AcceptConfig, Established};
use crate::admission::{self, Admission, AdmissionService, Authenticate};
use crate::dial::{Dialer, Handover};
use crate::events::{EventSink, Events};
use crate::handshake::Part;
use crate::options::DialOptions;
use crate::options::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES,
};
use crate::{Error, Status};
pub(crate) use calls::{Calls, ServiceCalls};
use calls::{Failure, Outcome};
pub(crate) use conn::{Coding, Connection};
use mailbox::{Inbox, Mailbox, Responder};
use msg_layers::compression::{Codec, Compressor, DEFAULT_MIN_LEN};

pub use serve::{serve, Serve, WithGracefulShutdown};

/// Options of a [`RepSocket`]: the [connection](crate::ConnectionOptions) and
/// [listen](crate::ListenOptions) options every socket shares (see
/// [`options`](crate::options)), and its own. Checked once, when the socket is made: a
/// value with no sane meaning (a zero count) is raised to the least one that has one.
///
/// # Example
///
/// ```
/// use msg::RepOptions;
///
/// let options = RepOptions::default().max_in_flight_per_conn(64);
/// assert_eq!(options.max_in_flight_per_conn, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RepOptions {
    /// Most requests of one connection being handled at once; past it the connection is not
    /// read until a call finishes. Default: 1024, matching
    /// [`ReqOptions::max_in_flight`](crate::ReqOptions::max_in_flight).
    pub max_in_flight_per_conn: usize,
    /// Largest message received or sent, in bytes. Default: 64 MiB.
    pub max_frame_len: usize,
    /// Longest wait for a new connection's hello. Default: 10 s, so a peer that connects and
    /// says nothing does not hold its slot for long.
    pub handshake_timeout: Duration,
    /// Connections accepted and welcomed but not yet taken by [`serve`](crate::serve) or
    /// the stream. Default: 128, the usual listen backlog.
    pub backlog: usize,
    /// Requests received and not yet taken from the socket's [`Stream`], from every
    /// connection together: past it, the connections stop reading. Default: 1024.
    pub stream_buffer: usize,
    /// Most connections in their handshake at once (the transport's setup, the hello,
    /// admission). A new connection beyond it evicts the oldest handshake still running, so
    /// that connections that say nothing cannot lock good ones out: a good client finishes
    /// in a round trip or two. Default: 256.
    pub max_handshakes: usize,
    /// Most connections served at once. A client past it is refused in its handshake with
    /// the reason, and gets [`Error::HandshakeRejected`];
    /// the refusal is an event and counts in `msg_limit_hits_total{limit="connections"}`.
    /// Default: 16,384.
    pub max_connections: usize,
    /// Silence from a client after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from a client after which its connection is dropped. Default: 20 s.
    pub heartbeat_timeout: Duration,
    /// Longest [`RepSocket::close`] waits for the requests being handled. Default: 2 s.
    pub linger: Duration,
}

impl Default for RepOptions {
    fn default() -> Self {
        RepOptions {
            max_in_flight_per_conn: 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            backlog: 128,
            stream_buffer: 1024,
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            linger: Duration::from_secs(2),
        }
    }
}

impl RepOptions {
    crate::options::option_group!(connection, with_connection, ConnectionOptions, "connection" {
        max_frame_len, heartbeat_interval, heartbeat_timeout
    });

    crate::options::connection_setters!();

    crate::options::option_group!(listen, with_listen, ListenOptions, "listen" {
        handshake_timeout, max_handshakes, max_connections
    });

    crate::options::listen_setters!();

    /// The options with every value raised to its least sane one, as the socket takes them.
    pub(crate) fn validated(self) -> Self {
        let connection = self.connection().validated();
        let listen = self.listen().validated();
        let mut options = self.with_connection(connection).with_listen(listen);
        options.max_in_flight_per_conn = options.max_in_flight_per_conn.max(1);
        options.backlog = options.backlog.max(1);
        options.stream_buffer = options.stream_buffer.max(1);
        options
    }
    /// Sets [`max_in_flight_per_conn`](Self::max_in_flight_per_conn); at least 1.
    pub fn max_in_flight_per_conn(mut self, max: usize) -> Self {
        self.max_in_flight_per_conn = max.max(1);
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
}

/// Counters of a [`RepSocket`] read as a [`Stream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RepStats {
    /// Connections served as a stream now.
    pub connections: usize,
    /// Requests received and not yet taken from the stream: at most
    /// [`stream_buffer`](RepOptions::stream_buffer), whatever the number of connections.
    pub queued: usize,
    /// Connections that stopped reading because the stream buffer was full.
    pub held_back: usize,
}

/// A request as a handler given to [`serve`](crate::serve) sees it: the message and the
/// address of the peer that sent it, and the [`Extensions`](crate::Extensions) layers
/// attach to it on its way to the handler.
#[derive(Debug, Clone)]
pub struct Request<A = SocketAddr> {
    msg: Message,
    peer: A,
    extensions: crate::Extensions,
}

impl<A> Request<A> {
    /// Makes a request, as a socket does when one arrives; useful to test handlers.
    pub fn new(msg: Message, peer: A) -> Self {
        Request {
            msg,
            peer,
            extensions: crate::Extensions::new(),
        }
    }

    /// The values layers attached to the request for the handler (a
    /// [`Router`](crate::Router)'s handlers read them with
    /// [`Extension`](crate::extract::Extension)); none when it arrives.
    pub fn extensions(&self) -> &crate::Extensions {
        &self.extensions
    }

    /// The values attached to the request, to add to in a layer.
    pub fn extensions_mut(&mut self) -> &mut crate::Extensions {
        &mut self.extensions
    }

    /// Splits the request into its message, its peer's address and its extensions.
    pub fn into_parts(self) -> (Message, A, crate::Extensions) {
        (self.msg, self.peer, self.extensions)
    }

    /// The request with its peer address changed by `f`, the rest kept.
    pub fn map_peer<B>(self, f: impl FnOnce(A) -> B) -> Request<B> {
        Request {
            msg: self.msg,
            peer: f(self.peer),
            extensions: self.extensions,
        }
    }

    /// The request's payload: the book's name for [`payload`](Self::payload), the same
    /// bytes.
    pub fn msg(&self) -> &Bytes {
        self.msg.payload()
    }

    /// The request's payload, as [`Message::payload`] names it. The same bytes as
    /// [`msg`](Self::msg), the book's name; use this one in new code, beside
    /// [`message`](Self::message) for the headers.
    pub fn payload(&self) -> &Bytes {
        self.msg.payload()
    }

    /// The whole message, headers included.
    pub fn message(&self) -> &Message {
        &self.msg
    }

    /// The message, to change in a layer.
    pub fn message_mut(&mut self) -> &mut Message {
        &mut self.msg
    }

    /// Takes the message out.
    pub fn into_message(self) -> Message {
        self.msg
    }

    /// The address of the peer that sent the request.
    pub fn peer(&self) -> &A {
        &self.peer
    }
}

/// A request taken from a [`RepSocket`]'s [`Stream`], waiting for its answer.
///
/// Answer it with [`respond`](Self::respond), or fail it with
/// [`respond_error`](Self::respond_error). Dropping it unanswered fails the request with a
/// remote error, so the client never waits forever. If the client gives up on the request
/// first, [`is_cancelled`](Self::is_cancelled) says so, and an answer goes nowhere.
#[derive(Debug)]
pub struct PendingRequest<A = SocketAddr> {
    request: Request<A>,
    /// Taken by the answer; still there when dropped unanswered.
    responder: Option<Responder>,
}

impl<A> Drop for PendingRequest<A> {
    /// Fails the request with a remote error, so that the client does not wait forever.
    fn drop(&mut self) {
        if let Some(responder) = self.responder.take() {
            let _ = responder.send(Err(Failure::new(
                Code::Internal,
                "the server dropped the request without responding",
            )));
        }
    }
}

impl<A> PendingRequest<A> {
    /// The request's payload: the book's name for [`payload`](Self::payload), the same
    /// bytes.
    pub fn msg(&self) -> &Bytes {
        self.request.msg()
    }

    /// The request's payload, as [`Message::payload`] names it. The same bytes as
    /// [`msg`](Self::msg), the book's name; use this one in new code.
    pub fn payload(&self) -> &Bytes {
        self.request.payload()
    }

    /// The request, message and peer.
    pub fn request(&self) -> &Request<A> {
        &self.request
    }

    /// The address of the peer that sent the request.
    pub fn peer(&self) -> &A {
        self.request.peer()
    }

    /// Whether nobody waits for the answer any more: the client cancelled the request (it
    /// timed out, or dropped its future), or its connection is gone. Work on it can stop.
    pub fn is_cancelled(&self) -> bool {
        self.responder.as_ref().is_none_or(Responder::is_closed)
    }

    /// Sends `payload` back as the response.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`] if nobody waits for it any more: the requester's
    /// connection is gone, or it cancelled the request. Nothing is sent either way.
    pub fn respond(self, payload: Bytes) -> Result<(), Error> {
        self.respond_message(Message::new(payload))
    }

    /// Sends `msg` back as the response, headers included.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`] if the requester's connection is gone.
    pub fn respond_message(self, msg: Message) -> Result<(), Error> {
        self.answer(Ok(msg))
    }

    /// Fails the request: the client gets [`Error::Remote`] with `message` and
    /// [`Code::Internal`].
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`] if the requester's connection is gone.
    pub fn respond_error(self, message: impl fmt::Display) -> Result<(), Error> {
        self.answer(Err(Failure::new(Code::Internal, message.to_string())))
    }

    /// Fails the request with `status`: the client gets [`Error::Remote`] with its code and
    /// its message.
    ///
    /// # Errors
    ///
    /// [`Error::ConnectionClosed`] if the requester's connection is gone.
    pub fn respond_status(self, status: Status) -> Result<(), Error> {
        self.answer(Err(Failure::new(status.code(), status.message())))
    }

    fn answer(mut self, outcome: Outcome) -> Result<(), Error> {
        match self.responder.take() {
            Some(responder) => responder
                .send(outcome)
                .map_err(|()| Error::ConnectionClosed),
            None => Err(Error::ConnectionClosed),
        }
    }
}

/// The server side of Request/Reply.
///
/// Bind it, then either take requests from it as a [`Stream`] of [`PendingRequest`]s (the
/// book's way) or hand it to [`serve`](crate::serve) with a [`tower::Service`] (the fast
/// way). Connections are accepted and their handshakes run from the moment it is bound;
/// many clients are served at once, and a client that breaks the protocol loses only its
/// own connection.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{RepSocket, ReqSocket, Tcp};
/// use tokio_stream::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), msg::Error> {
/// let mut rep = RepSocket::new(Tcp::default());
/// rep.bind("127.0.0.1:0").await?;
/// let addr = rep.local_addr().unwrap();
///
/// let mut req = ReqSocket::new(Tcp::default());
/// req.connect(addr).await?;
///
/// tokio::spawn(async move {
///     let req = rep.next().await.unwrap();
///     assert_eq!(req.msg(), "hello");
///     req.respond(Bytes::from("world")).unwrap();
/// });
/// assert_eq!(req.request(Bytes::from("hello")).await?, "world");
/// # Ok(())
/// # }
/// ```
pub struct RepSocket<T: Transport> {
    transport: T,
    options: RepOptions,
    /// How connections decode requests and encode responses.
    coding: Coding,
    admission: Option<Admission<T::Addr>>,
    /// A permit per connection served, accepted or dialed; none left, a new client is
    /// refused.
    connections: Arc<tokio::sync::Semaphore>,
    /// How `connect` dials and redials.
    dial: DialOptions,
    events: Arc<EventSink<T::Addr>>,
    local_addr: Option<T::Addr>,
    /// Welcomed connections, from the accept tasks and the connects' supervisors.
    incoming: Option<mpsc::Receiver<Established<T::Io, T::Addr>>>,
    /// The way into `incoming`, for the next `bind` or `connect`; weak, so that the
    /// channel closes once every task that feeds it is gone.
    incoming_tx: Option<mpsc::WeakSender<Established<T::Io, T::Addr>>>,
    /// Requests of the connections served as a stream.
    requests: Option<Arc<Inbox<T::Addr>>>,
    /// Requests the stream has yielded since it last looked for new connections.
    since_accepting: u32,
    /// Stops the accept loop and, gracefully, the connections served as a stream; cancelled
    /// by `close` and on drop.
    shutdown: CancellationToken,
    /// Closes the connections served as a stream at once: cancelled a linger after
    /// `shutdown`.
    abort: CancellationToken,
    /// The connections served as a stream.
    tracker: TaskTracker,
}

impl<T: Transport> Drop for RepSocket<T> {
    /// Stops accepting and reading new requests; the requests already taken from the
    /// stream get [`RepOptions::linger`] to be answered, then the connections close. Never
    /// blocks.
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(inbox) = &self.requests {
            inbox.close();
        }
        if self.abort.is_cancelled() || self.tracker.is_empty() {
            return;
        }
        let (abort, linger, tracker) = (
            self.abort.clone(),
            self.options.linger,
            self.tracker.clone(),
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            tracker.close();
            runtime.spawn(async move {
                if tokio::time::timeout(linger, tracker.wait()).await.is_err() {
                    abort.cancel();
                }
            });
        } else {
            abort.cancel();
        }
    }
}

impl<T: Transport> fmt::Debug for RepSocket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepSocket")
            .field("local_addr", &self.local_addr)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> RepSocket<T> {
    /// A reply socket over `transport`, with default options.
    pub fn new(transport: T) -> Self {
        Self::with_options(transport, RepOptions::default())
    }

    /// A reply socket over `transport` with `options`, each raised to its least sane value
    /// (see [`options`](crate::options)).
    pub fn with_options(mut transport: T, options: RepOptions) -> Self {
        transport.set_traffic(Traffic::Exchange);
        let options = options.validated();
        let connections = Arc::new(tokio::sync::Semaphore::new(
            options
                .max_connections
                .clamp(1, tokio::sync::Semaphore::MAX_PERMITS),
        ));
        RepSocket {
            transport,
            coding: Coding::new(options.max_frame_len),
            options,
            admission: None,
            connections,
            dial: DialOptions::default(),
            events: EventSink::new(),
            local_addr: None,
            incoming: None,
            incoming_tx: None,
            requests: None,
            since_accepting: 0,
            shutdown: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    /// Compresses every response of at least
    /// [`compression::DEFAULT_MIN_LEN`](crate::compression::DEFAULT_MIN_LEN) bytes with `compressor`, for
    /// the stream and for [`serve`](crate::serve) (the book's way; a
    /// [`CompressionLayer`](crate::layers::CompressionLayer) in front of a `serve` handler
    /// does the same). Requests are decoded whatever their encoding.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "gzip")] { // the codec's feature, on by default
    /// use msg::{compression::GzipCompressor, RepSocket, Tcp};
    ///
    /// let rep = RepSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    /// # }
    /// ```
    pub fn with_compressor(mut self, compressor: impl Compressor) -> Self {
        self.coding.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Registers a codec of your own for the requests this socket decodes (the built-in
    /// codecs need no registration).
    pub fn with_decompressor(mut self, codec: impl Compressor) -> Self {
        self.coding.decoders = std::mem::take(&mut self.coding.decoders).register(codec);
        self
    }

    /// Requires every client to pass `auth` in the handshake (the book's way). It installs
    /// admission by [`Authenticate`]; see [`with_admission`](Self::with_admission). Call
    /// before [`bind`](Self::bind) or [`connect`](Self::connect): whoever dialed, a
    /// request socket says hello with its token and this socket checks it.
    pub fn with_auth(self, auth: impl Authenticator) -> Self {
        self.with_admission(Authenticate::new(auth))
    }

    /// Decides with `admission` whether each client, once it said hello, may use the
    /// socket; see [`admission`](mod@crate::admission). Call before [`bind`](Self::bind) or
    /// [`connect`](Self::connect).
    pub fn with_admission(mut self, admission: impl AdmissionService<T::Addr>) -> Self {
        self.admission = Some(admission::boxed(admission));
        self
    }

    /// The socket's connection events: accepted clients, refused ones with the reason,
    /// failed handshakes. See [`Events`].
    pub fn events(&self) -> Events<T::Addr> {
        self.events.subscribe()
    }

    /// The options in force.
    pub fn options(&self) -> &RepOptions {
        &self.options
    }

    /// Binds to `target` and starts accepting connections.
    ///
    /// For TCP, `target` is what a user would write: `"127.0.0.1:4444"`, `"localhost:0"`,
    /// or a [`SocketAddr`]. Port 0 picks a free port; [`local_addr`](Self::local_addr)
    /// tells which.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the address does not resolve or cannot be bound.
    pub async fn bind(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let listener = self.transport.bind(target.into()).await?;
        let local = listener.local_addr()?;
        let tx = self.incoming_sender();
        let config = AcceptConfig::new(
            SocketType::Rep,
            &self.options.connection(),
            &self.options.listen(),
            self.admission.clone(),
            self.events.clone(),
        )
        .with_part(self.part());
        let stop = {
            let tx = tx.clone();
            let shutdown = self.shutdown.clone();
            async move {
                tokio::select! {
                    _ = tx.closed() => {}
                    _ = shutdown.cancelled() => {}
                }
            }
        };
        let transport = self.transport.clone();
        tokio::spawn(accept_loop(
            transport,
            listener,
            config,
            stop,
            move |conn| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(conn).await;
                }
            },
        ));
        tracing::debug!(addr = %local, "reply socket bound");
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

    /// Connects to a request socket that binds at `target` (a `ReqSocket` bound), and
    /// serves the requests of that connection as those of an accepted one: through the
    /// socket's [`Stream`], or the service it is given to [`serve`](crate::serve), with
    /// the same in-flight limit and the same go-away on a graceful shutdown. The request
    /// socket says hello, and this socket answers it as its listener would: the socket
    /// type, the connection limit and admission ([`with_auth`](Self::with_auth)) are
    /// checked. A lost connection is redialed with the [`Backoff`](crate::Backoff) of
    /// [`with_dial`](Self::with_dial), for as long as the socket lives. A socket may
    /// connect to many request sockets, and bind as well.
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

    /// Connects to a request socket at `target` in the background and returns at once,
    /// so that either side may start first; failed dials are retried with the
    /// [`Backoff`](crate::Backoff) and reported in [`events`](Self::events). See
    /// [`connect`](Self::connect).
    ///
    /// Must be called within a tokio runtime.
    pub fn connect_lazy(&mut self, target: impl Into<T::Target>) {
        let dialer = self.dialer(target.into());
        self.supervise(dialer, None);
    }

    /// This socket's part in the hello, dialed or accepted: it answers.
    fn part(&self) -> Part<T::Addr> {
        Part::Answer {
            admission: self.admission.clone(),
            connections: self.connections.clone(),
        }
    }

    fn dialer(&self, target: T::Target) -> Dialer<T> {
        Dialer::new(
            self.transport.clone(),
            target,
            SocketType::Rep,
            &self.options.connection(),
            self.dial.clone(),
            self.events.clone(),
        )
        .with_part(self.part())
    }

    /// Runs a reconnect supervisor that hands each connection of `dialer` to the stream or
    /// the server, as the accept loop does, until the socket is closed.
    fn supervise(&mut self, dialer: Dialer<T>, first: Option<Established<T::Io, T::Addr>>) {
        let tx = self.incoming_sender();
        let session = Handover {
            hand: move |conn| {
                let tx = tx.clone();
                async move { tx.send(conn).await.is_ok() }
            },
            closed: self.shutdown.clone(),
        };
        let closed = self.shutdown.clone();
        tokio::spawn(crate::dial::supervise(
            dialer,
            session,
            first,
            closed,
            Duration::from_secs(1),
        ));
    }

    /// The way into the channel of welcomed connections, opened by the first `bind` or
    /// `connect`.
    fn incoming_sender(&mut self) -> mpsc::Sender<Established<T::Io, T::Addr>> {
        if let Some(tx) = self
            .incoming_tx
            .as_ref()
            .and_then(mpsc::WeakSender::upgrade)
        {
            if self.incoming.is_some() {
                return tx;
            }
        }
        let (tx, rx) = mpsc::channel(self.options.backlog);
        self.incoming_tx = Some(tx.downgrade());
        self.incoming = Some(rx);
        tx
    }

    /// The counters of the socket read as a [`Stream`]; all zero before it is first
    /// polled, and for a socket given to [`serve`](crate::serve).
    pub fn stats(&self) -> RepStats {
        let (queued, held_back) = self.requests.as_ref().map_or((0, 0), |i| i.stats());
        RepStats {
            connections: self.tracker.len(),
            queued,
            held_back,
        }
    }

    /// The address the socket is bound to, with the real port; `None` before
    /// [`bind`](Self::bind).
    pub fn local_addr(&self) -> Option<T::Addr> {
        self.local_addr.clone()
    }

    /// How each connection is served.
    pub(crate) fn serving(&self) -> crate::conn::server::Serving {
        crate::conn::server::Serving {
            max_in_flight: self.options.max_in_flight_per_conn,
            coding: self.coding.clone(),
        }
    }

    pub(crate) fn take_incoming(&mut self) -> Option<mpsc::Receiver<Established<T::Io, T::Addr>>> {
        self.incoming.take()
    }

    /// Closes the socket gracefully: stops accepting, stops reading new requests on every
    /// connection read as a stream, gives the requests already read up to
    /// [`RepOptions::linger`] to be answered, then closes the connections. Requests
    /// received but not yet taken from the stream are answered with an error. (A socket
    /// given to [`serve`](crate::serve) is closed with
    /// [`with_graceful_shutdown`](Serve::with_graceful_shutdown) instead.)
    pub async fn close(&mut self) {
        self.shutdown.cancel();
        self.incoming = None;
        if let Some(inbox) = self.requests.take() {
            inbox.close();
        }
        self.tracker.close();
        if tokio::time::timeout(self.options.linger, self.tracker.wait())
            .await
            .is_err()
        {
            self.abort.cancel();
            self.tracker.wait().await;
        }
    }
}

impl<T: Transport> Stream for RepSocket<T> {
    type Item = PendingRequest<T::Addr>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(incoming) = this.incoming.as_mut() else {
            return Poll::Ready(None);
        };
        let inbox = this
            .requests
            .get_or_insert_with(|| Arc::new(Inbox::new(this.options.stream_buffer)));
        // New connections are looked for when no request waits, and at least every
        // `ACCEPT_EVERY` requests: a stream kept busy still takes new clients, and the
        // look (a channel's poll, with its waker) is not paid on every request.
        let request = inbox.poll_take(cx);
        if request.is_some() {
            this.since_accepting += 1;
            if this.since_accepting < ACCEPT_EVERY {
                return Poll::Ready(request);
            }
        }
        this.since_accepting = 0;
        while let Poll::Ready(Some(conn)) = incoming.poll_recv(cx) {
            // Written out rather than `this.serving()`: `incoming` borrows `this`.
            let serving = crate::conn::server::Serving {
                max_in_flight: this.options.max_in_flight_per_conn,
                coding: this.coding.clone(),
            };
            crate::conn::server::spawn(
                &this.tracker,
                conn,
                Mailbox::new(inbox.clone()),
                &serving,
                &this.shutdown,
                &this.abort,
                this.events.clone(),
            );
        }
        match request {
            Some(request) => Poll::Ready(Some(request)),
            None => Poll::Pending,
        }
    }
}

/// Requests a [`RepSocket`] read as a stream yields, at most, between two looks for new
/// connections.
const ACCEPT_EVERY: u32 = 32;
