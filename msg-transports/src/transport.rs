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
    /// Any other I/O failure of the transport.
    #[error("transport i/o error: {0}")]
    Io(#[from] io::Error),
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

/// A way of making connections: bind a [`Listener`] on a server, dial a peer on a client.
///
/// Sockets are generic over their transport, so the same socket code runs over TCP, Unix
/// sockets or QUIC. A transport value is cheap to clone and holds only configuration.
pub trait Transport: Clone + Send + Sync + Unpin + 'static {
    /// What a user names an endpoint with: for TCP a `host:port` string or a socket
    /// address, for IPC a path.
    type Target: Clone + Send + Sync + 'static;
    /// A resolved address, as reported for peers and bound listeners.
    type Addr: Clone + Debug + Display + Eq + Hash + Send + Sync + Unpin + 'static;
    /// The byte stream of one connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    /// The listener [`bind`](Transport::bind) returns.
    type Listener: Listener<Io = Self::Io, Addr = Self::Addr>;

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
}

/// A bound listener that accepts connections.
pub trait Listener: Send + Unpin + 'static {
    /// The byte stream of one accepted connection.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;
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
    ) -> Poll<io::Result<Connected<Self::Io, Self::Addr>>>;

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
