//! The traits every transport implements, and their error.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::io;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite};

/// What can go wrong binding, dialing or accepting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A host name could not be resolved.
    #[error("could not resolve {target}: {source}")]
    Resolve {
        /// The name as given.
        target: String,
        /// Why resolution failed.
        #[source]
        source: io::Error,
    },
    /// A host name resolved to no address at all.
    #[error("{target} resolved to no address")]
    NoAddress {
        /// The name as given.
        target: String,
    },
    /// The listener could not be bound.
    #[error("could not bind {addr}: {source}")]
    Bind {
        /// The address bound to.
        addr: String,
        /// Why binding failed.
        #[source]
        source: io::Error,
    },
    /// The peer could not be reached.
    #[error("could not connect to {addr}: {source}")]
    Connect {
        /// The address dialed (the last one tried, if a name resolved to several).
        addr: String,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// A certificate, key or TLS configuration could not be used.
    #[error("certificate error: {reason}")]
    Certificate {
        /// What was wrong.
        reason: String,
    },
    /// The TLS handshake with the peer failed: it presented a certificate this side does
    /// not trust, or refused this side's. The source's inner error is rustls's.
    #[error("TLS handshake with {addr} failed: {source}")]
    TlsHandshake {
        /// The peer's address.
        addr: String,
        /// Why the handshake failed.
        #[source]
        source: io::Error,
    },
    /// A transport was used for something it has no configuration for (a TLS transport
    /// without a server side asked to bind, say).
    #[error("transport not configured: {reason}")]
    Config {
        /// What is missing.
        reason: String,
    },
    /// Connecting took longer than a timeout layered over the transport allows (tower's
    /// `TimeoutLayer`, say).
    #[error("connecting timed out")]
    TimedOut,
    /// An exchange a transport layer runs on a new connection failed: the peer failed a
    /// challenge, or spoke something else.
    #[error("connection setup with {addr} failed: {source}")]
    Handshake {
        /// The peer's address.
        addr: String,
        /// Why the exchange failed.
        #[source]
        source: BoxError,
    },
    /// An endpoint string that does not parse (an unknown scheme, no port, an empty
    /// path), given to [`AnyTransport`](crate::AnyTransport) to bind or dial.
    #[error(transparent)]
    Endpoint(#[from] crate::endpoint::EndpointError),
    /// Any other I/O failure of the transport.
    #[error("transport i/o error: {0}")]
    Io(#[from] io::Error),
}

/// A boxed error, as tower's middleware returns them.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl TransportError {
    /// Whether dialing again cannot help: a certificate or key that cannot be used
    /// ([`Certificate`](Self::Certificate)), a transport without the configuration asked of
    /// it ([`Config`](Self::Config)), an endpoint that does not parse
    /// ([`Endpoint`](Self::Endpoint)), or a TLS handshake that failed on a certificate, or on
    /// TLS versions and cipher suites the two sides do not share (this side does not trust
    /// the peer's certificate, or the peer refused this side's). A retry policy gives up at
    /// once on these; everything else (a refused or reset connection, a timeout) may pass.
    pub fn is_permanent(&self) -> bool {
        match self {
            TransportError::Certificate { .. }
            | TransportError::Config { .. }
            | TransportError::Endpoint(_) => true,
            #[cfg(feature = "tls")]
            TransportError::TlsHandshake { source, .. } => source
                .get_ref()
                .is_some_and(crate::tls::is_certificate_error),
            _ => false,
        }
    }

    /// The error of a connector wrapped in tower middleware, made typed again: tower's
    /// `Elapsed` becomes [`TimedOut`](Self::TimedOut), a boxed `TransportError` is
    /// unboxed, anything else becomes [`Io`](Self::Io).
    pub fn from_boxed(e: BoxError) -> Self {
        if e.is::<tower::timeout::error::Elapsed>() {
            return TransportError::TimedOut;
        }
        match e.downcast::<TransportError>() {
            Ok(e) => *e,
            Err(e) => match e.downcast::<io::Error>() {
                Ok(e) => TransportError::Io(*e),
                Err(e) => TransportError::Io(io::Error::other(e)),
            },
        }
    }
}

/// The future of a connection being made by a transport used as a [`tower::Service`].
pub type ConnectFuture<Io, Addr> =
    std::pin::Pin<Box<dyn Future<Output = Result<Connected<Io, Addr>, TransportError>> + Send>>;

/// Makes a transport a connector: a [`tower::Service`] from its target to a connection,
/// so that connection-level layers (a connect timeout, a retry with backoff) wrap it.
macro_rules! connector_service {
    ($transport:ty) => {
        impl tower::Service<<$transport as $crate::Transport>::Target> for $transport {
            type Response = $crate::Connected<
                <$transport as $crate::Transport>::Io,
                <$transport as $crate::Transport>::Addr,
            >;
            type Error = $crate::TransportError;
            type Future = $crate::ConnectFuture<
                <$transport as $crate::Transport>::Io,
                <$transport as $crate::Transport>::Addr,
            >;

            fn poll_ready(
                &mut self,
                _cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Result<(), $crate::TransportError>> {
                std::task::Poll::Ready(Ok(()))
            }

            fn call(&mut self, target: <$transport as $crate::Transport>::Target) -> Self::Future {
                let transport = self.clone();
                Box::pin(async move { $crate::Transport::connect(&transport, target).await })
            }
        }
    };
}
pub(crate) use connector_service;

/// A connection that was just made or accepted, with the address of the other end.
#[derive(Debug)]
pub struct Connected<Io, Addr> {
    /// The byte stream.
    pub io: Io,
    /// The address of the other end.
    pub peer: Addr,
}

/// How the traffic of the socket that uses a transport flows: a hint for a transport that
/// tunes its connections to it, given by the socket before it binds or connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Traffic {
    /// Requests one way and replies the other, each side waiting on the other's turn: a
    /// `ReqSocket`'s and a `RepSocket`'s.
    Exchange,
    /// A stream sent one way, with little coming back: a `PubSocket`'s.
    Send,
    /// A stream received, with little sent back: a `SubSocket`'s.
    Receive,
}

/// A way of making connections: bind a [`Listener`] on a server and set up what it accepts,
/// dial a peer on a client.
///
/// Sockets are generic over their transport, so the same socket code runs over TCP, Unix
/// sockets or QUIC. A transport value is cheap to clone and holds only configuration.
///
/// **A layer over a transport is a transport.** A layer wraps both sides of the same
/// exchange: [`connect`](Transport::connect) runs the inner transport's and then the
/// layer's client half; [`accept`](Transport::accept) runs the inner transport's and then
/// the layer's server half; [`bind`](Transport::bind) is the inner one's. One layered
/// value then serves client and server sockets alike. [`Tls`](crate::Tls) is Tcp with a
/// TLS exchange on both sides, and tower's `Timeout` over any transport bounds connect.
///
/// # Example
///
/// A layer that sends a greeting on every new connection and checks it on the other side:
///
/// ```
/// use msg::transport::{Connected, Traffic, Transport, TransportError};
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// #[derive(Clone)]
/// struct Greeting<T>(T);
///
/// impl<T: Transport> Transport for Greeting<T> {
///     type Target = T::Target;
///     type Addr = T::Addr;
///     type Io = T::Io;
///     type Listener = T::Listener;
///
///     async fn bind(&self, target: T::Target) -> Result<T::Listener, TransportError> {
///         self.0.bind(target).await
///     }
///
///     async fn connect(&self, target: T::Target) -> Result<Connected<T::Io, T::Addr>, TransportError> {
///         let mut conn = self.0.connect(target).await?;
///         conn.io.write_all(b"hi").await?;
///         Ok(conn)
///     }
///
///     async fn accept(
///         &self,
///         conn: Connected<<T::Listener as msg::transport::Listener>::Conn, T::Addr>,
///     ) -> Result<Connected<T::Io, T::Addr>, TransportError> {
///         let mut conn = self.0.accept(conn).await?;
///         let mut greeting = [0; 2];
///         conn.io.read_exact(&mut greeting).await?;
///         if &greeting != b"hi" {
///             return Err(TransportError::Handshake {
///                 addr: conn.peer.to_string(),
///                 source: "no greeting".into(),
///             });
///         }
///         Ok(conn)
///     }
///
///     fn set_traffic(&mut self, traffic: Traffic) {
///         self.0.set_traffic(traffic);
///     }
/// }
/// ```
pub trait Transport: Clone + Send + Sync + Unpin + 'static {
    /// What a user names an endpoint with: for TCP a `host:port` string or a socket
    /// address, for IPC a path.
    ///
    /// Every address the transport reports converts into a target (`From<Self::Addr>`), so
    /// that code generic over the transport can dial what a listener reports: bind on port
    /// 0, then connect to [`local_addr`](Listener::local_addr).
    type Target: Clone + Send + Sync + From<Self::Addr> + 'static;
    /// A resolved address, as reported for peers and bound listeners.
    type Addr: Clone + Debug + Display + Eq + Hash + Send + Sync + Unpin + 'static;
    /// The byte stream of one connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The listener [`bind`](Transport::bind) returns.
    type Listener: Listener<Addr = Self::Addr>;

    /// Binds a listener on `target`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Resolve`] or [`TransportError::NoAddress`] if the target does
    /// not resolve, [`TransportError::Bind`] if the operating system refuses.
    fn bind(
        &self,
        target: Self::Target,
    ) -> impl Future<Output = Result<Self::Listener, TransportError>> + Send;

    /// Dials `target`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Resolve`] or [`TransportError::NoAddress`] if the target does
    /// not resolve, [`TransportError::Connect`] if no address answers.
    fn connect(
        &self,
        target: Self::Target,
    ) -> impl Future<Output = Result<Connected<Self::Io, Self::Addr>, TransportError>> + Send;

    /// Sets up a connection the listener accepted: the server half of this transport's
    /// exchange (a TLS or QUIC handshake, a layer's challenge). Sockets run it in a task per
    /// connection, under their handshake timeout and their bound on concurrent handshakes,
    /// so a peer that says nothing holds up no one.
    ///
    /// # Errors
    ///
    /// The exchange's failure; the connection is dropped.
    fn accept(
        &self,
        conn: Connected<<Self::Listener as Listener>::Conn, Self::Addr>,
    ) -> impl Future<Output = Result<Connected<Self::Io, Self::Addr>, TransportError>> + Send;

    /// Told how the traffic of the socket that owns this transport flows, once, before it
    /// binds or connects; a transport may tune the connections it makes from then on (QUIC
    /// sends more datagrams per system call for [`Traffic::Send`]). A layer over a
    /// transport passes it on. Default: ignored.
    fn set_traffic(&mut self, traffic: Traffic) {
        let _ = traffic;
    }
}

/// A bound listener that accepts connections.
///
/// What it yields is a connection not yet set up: its transport's
/// [`accept`](Transport::accept) finishes it (for TCP there is nothing to do, for TLS the
/// handshake, for QUIC the connection's handshake and its stream).
pub trait Listener: Send + Unpin + 'static {
    /// One accepted connection, before its transport's [`accept`](Transport::accept).
    type Conn: Send + 'static;
    /// A peer's or the listener's own address.
    type Addr: Clone + Debug + Display + Eq + Hash + Send + Sync + Unpin + 'static;

    /// Polls for the next connection.
    ///
    /// # Errors
    ///
    /// The operating system's error. [`is_connection_error`] tells an error that concerns
    /// only the connection being accepted (retry at once) from one that concerns the
    /// process, such as running out of file descriptors (back off before retrying).
    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Connected<Self::Conn, Self::Addr>>>;

    /// The address the listener is bound to, with the real port if port 0 was asked for.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn local_addr(&self) -> io::Result<Self::Addr>;
}

/// Whether an accept error concerns only the connection being accepted, so the listener
/// can retry at once.
pub fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::InvalidData
            | io::ErrorKind::UnexpectedEof
    )
}

/// tower's `Timeout` over a transport is a transport whose [`connect`](Transport::connect)
/// is bounded: `ServiceBuilder::new().timeout(d).service(Tcp::default())`. A connect that
/// takes longer fails with [`TransportError::TimedOut`]. The accept side is the inner
/// transport's, bounded by the socket's own handshake timeout.
impl<T> Transport for tower::timeout::Timeout<T>
where
    T: Transport
        + tower::Service<T::Target, Response = Connected<T::Io, T::Addr>, Error = TransportError>
        + Send,
    T::Future: Send,
{
    type Target = T::Target;
    type Addr = T::Addr;
    type Io = T::Io;
    type Listener = T::Listener;

    fn bind(
        &self,
        target: T::Target,
    ) -> impl Future<Output = Result<T::Listener, TransportError>> + Send {
        self.get_ref().bind(target)
    }

    fn connect(
        &self,
        target: T::Target,
    ) -> impl Future<Output = Result<Connected<T::Io, T::Addr>, TransportError>> + Send {
        use tower::ServiceExt;
        let svc = self.clone();
        async move {
            svc.oneshot(target)
                .await
                .map_err(TransportError::from_boxed)
        }
    }

    fn accept(
        &self,
        conn: Connected<<T::Listener as Listener>::Conn, T::Addr>,
    ) -> impl Future<Output = Result<Connected<T::Io, T::Addr>, TransportError>> + Send {
        self.get_ref().accept(conn)
    }

    fn set_traffic(&mut self, traffic: Traffic) {
        self.get_mut().set_traffic(traffic);
    }
}
