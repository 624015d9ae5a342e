//! [`Error`]: what a socket operation can fail with.

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use msg_core::{Code, Encoding, FrameError, FrameKind, SocketType};
use msg_transports::TransportError;

/// Errors of `msg` sockets.
///
/// Each variant names a failure a caller can act on: retry elsewhere after
/// [`ConnectionClosed`](Error::ConnectionClosed), report a
/// [`Remote`](Error::Remote) handler error, fix the credentials after
/// [`HandshakeRejected`](Error::HandshakeRejected).
///
/// It is `Clone`, cheaply: the errors of other libraries it carries (I/O, transport, a
/// layer's) are behind an [`Arc`], so the same error goes to a caller and to the socket's
/// [events](crate::SocketEvent). Match them through it: `Error::Io(e)` binds an
/// `Arc<io::Error>`, and `e.kind()` reads through it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// Binding, dialing or accepting failed.
    Transport(Arc<TransportError>),
    /// Reading or writing the connection failed.
    Io(Arc<io::Error>),
    /// The peer sent bytes that break the wire protocol; the connection was closed. The
    /// text says how (the inner [`FrameError`]).
    Protocol(FrameError),
    /// The peer sent a well-formed frame that has no place at this point of the protocol.
    UnexpectedFrame {
        /// The kind of frame received.
        kind: FrameKind,
    },
    /// The server refused the connection, and said why.
    ///
    /// A refusal that the next dial would meet again ([`is_permanent`](Error::is_permanent):
    /// the wrong socket type, admission's refusal) stops a socket's redialing; one that
    /// may pass (a server at its connection limit, a server from before codes) does not.
    HandshakeRejected {
        /// The server's reason.
        reason: String,
        /// What kind of refusal: [`Code::InvalidArgument`] for a socket the server cannot
        /// talk to (the wrong socket type, a hello it cannot read),
        /// [`Code::PermissionDenied`] for its admission's refusal (an authenticator's
        /// too), [`Code::Unavailable`] for an admission service that failed to decide (a
        /// database it asks was down: dialing again may pass),
        /// [`Code::ResourceExhausted`] for a server at its connection limit, and
        /// [`Code::Internal`] from a server that does not say.
        code: Code,
    },
    /// The peer is not speaking msg: what it sent, or how the connection failed, looks
    /// like another protocol or the other side of a TLS mismatch. `hint` says what it looks
    /// like and what to check. Trying again cannot help
    /// ([`is_permanent`](Error::is_permanent)).
    NotMsg {
        /// What the peer looks like, and the likely fix: for example "the server speaks
        /// TLS: use the Tls transport".
        hint: &'static str,
    },
    /// This server refused the peer: its socket type does not fit, or admission (an
    /// [`Authenticator`](crate::Authenticator), a service given to `with_admission`)
    /// said no. The peer was told the reason and disconnected.
    Refused {
        /// The reason the peer was given.
        reason: String,
    },
    /// The peer sent nothing, not even an answer to a ping, for the heartbeat timeout:
    /// the link is frozen or the peer is gone. The connection was closed.
    HeartbeatTimeout {
        /// The heartbeat timeout in force.
        after: Duration,
    },
    /// The socket was closed with `close`, or its last handle dropped.
    Closed,
    /// The handshake did not finish in time.
    HandshakeTimeout {
        /// The handshake timeout in force.
        after: Duration,
    },
    /// The handshake was given up to make room for a newer connection: `max` handshakes
    /// were running at once (`max_handshakes`).
    HandshakeEvicted {
        /// The handshake limit in force.
        max: usize,
    },
    /// The peer is a socket of a type this one cannot talk to.
    SocketTypeMismatch {
        /// This socket's type.
        local: SocketType,
        /// The peer's type.
        remote: SocketType,
    },
    /// The socket has no connection: `connect` was never called, or a request waited
    /// longer than [`ReqOptions::reconnect_wait`](crate::ReqOptions::reconnect_wait) for a
    /// lost connection to come back, or a `subscribe` as long for a publisher. `last` is
    /// why the last dial failed, if one did: the server refused the connection, could not
    /// be reached, timed out. Match it as `Error::NotConnected { .. }`.
    NotConnected {
        /// Why the socket's last dial failed, if it has dialed and failed.
        last: Option<Arc<Error>>,
    },
    /// The socket has no listener: call `bind` first.
    NotBound,
    /// The connection closed before the operation completed.
    ConnectionClosed,
    /// The operation did not complete within the configured timeout: `after` is
    /// [`ReqOptions::timeout`](crate::ReqOptions::timeout), or `None` for a timeout set by
    /// a tower layer (whose `Elapsed` does not say how long it was).
    Timeout {
        /// The timeout in force, when the socket knows it.
        after: Option<Duration>,
    },
    /// The remote handler failed on this request: what kind of failure, and its error as
    /// text. A handler that fails with a [`Status`](crate::Status) chooses the code; the
    /// server says [`InvalidArgument`](Code::InvalidArgument) for a request it could not
    /// decode and [`ResourceExhausted`](Code::ResourceExhausted) for a request or a reply
    /// over its frame limit (the text names both lengths); anything else is
    /// [`Internal`](Code::Internal).
    Remote {
        /// The kind of failure.
        code: Code,
        /// The handler's error message.
        message: String,
    },
    /// A message is larger than the frame limit; nothing was sent.
    FrameTooLarge {
        /// The message's length.
        len: u64,
        /// The limit in force: this socket's own, or the server's if it is smaller (a
        /// server tells its limit in the handshake).
        max: usize,
    },
    /// The message's payload encoding has no decoder here.
    UnsupportedEncoding {
        /// The encoding received.
        encoding: Encoding,
    },
    /// A received payload could not be decoded: it would inflate past the frame limit (a
    /// decompression bomb), or it is corrupt. Only this message is lost.
    Decompress(msg_layers::compression::DecompressError),
    /// A topic or subscription pattern is not valid.
    InvalidTopic(crate::topic::TopicError),
    /// A request's route is not valid (empty, or longer than
    /// [`MAX_ROUTE_LEN`](crate::MAX_ROUTE_LEN)); nothing was sent.
    InvalidRoute(msg_core::RouteError),
    /// A request's metadata does not fit the wire (its route and entries together over
    /// [`MAX_METADATA_LEN`](crate::MAX_METADATA_LEN)); nothing was sent.
    InvalidMetadata(msg_core::MetadataError),
    /// `call` was used without a successful `poll_ready` first.
    NotReady,
    /// A layer of the service stack failed with an error of its own (not a socket's).
    Layer(Arc<dyn std::error::Error + Send + Sync>),
    /// A future was polled again after it had completed.
    PolledAfterCompletion,
    /// A dial did not finish in time: the transport's exchange and the hello together took
    /// longer than [`DialOptions::connect_timeout`](crate::DialOptions::connect_timeout).
    ConnectTimeout {
        /// The bound that passed.
        after: Duration,
    },
    /// The socket is connected already. A [`ReqSocket`](crate::ReqSocket) no longer
    /// returns it: a second `connect` adds an endpoint (it returned this before).
    AlreadyConnected,
    /// The server went away (a graceful shutdown) before it processed this request: it
    /// never ran, and is safe to send again, whatever it does.
    /// [`RetryPolicy`](crate::retry::RetryPolicy) always retries it.
    NotProcessed,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Transport(e) => fmt::Display::fmt(e, f),
            Error::Io(e) => write!(f, "i/o error: {e}"),
            Error::ConnectTimeout { after } => write!(f, "connect timed out after {after:?}"),
            Error::AlreadyConnected => f.write_str("the socket is connected already"),
            Error::NotProcessed => {
                f.write_str("the server went away before processing the request")
            }
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::UnexpectedFrame { kind } => {
                write!(f, "unexpected {} frame from the peer", kind.name())
            }
            Error::HandshakeRejected { reason, .. } => {
                write!(f, "handshake rejected by the peer: {reason}")
            }
            Error::NotMsg { hint } => write!(f, "the peer is not speaking msg: {hint}"),
            Error::Refused { reason } => write!(f, "refused the peer: {reason}"),
            Error::HeartbeatTimeout { after } => write!(f, "the peer was silent for {after:?}"),
            Error::Closed => f.write_str("the socket is closed"),
            Error::HandshakeTimeout { after } => {
                write!(f, "handshake did not finish within {after:?}")
            }
            Error::HandshakeEvicted { max } => write!(
                f,
                "handshake evicted: {max} handshakes were running and a newer connection needed room"
            ),
            Error::SocketTypeMismatch { local, remote } => {
                write!(f, "a {local} socket cannot talk to a {remote} socket")
            }
            Error::NotConnected { last: None } => f.write_str("the socket is not connected"),
            Error::NotConnected { last: Some(last) } => write!(
                f,
                "the socket is not connected; its last dial failed: {last}"
            ),
            Error::NotBound => f.write_str("the socket is not bound"),
            Error::ConnectionClosed => f.write_str("connection closed"),
            Error::Timeout { .. } => f.write_str("timed out"),
            Error::Remote { message, .. } => write!(f, "remote handler failed: {message}"),
            Error::FrameTooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the {max}-byte frame limit")
            }
            Error::UnsupportedEncoding { encoding } => {
                write!(f, "payload encoding {encoding} is not supported here")
            }
            Error::Decompress(_) => f.write_str("could not decode the payload"),
            Error::InvalidTopic(e) => write!(f, "invalid topic: {e}"),
            Error::InvalidRoute(e) => write!(f, "invalid route: {e}"),
            Error::InvalidMetadata(e) => write!(f, "invalid metadata: {e}"),
            Error::NotReady => f.write_str("service called before it was ready"),
            Error::Layer(_) => f.write_str("layer failed"),
            Error::PolledAfterCompletion => f.write_str("future polled after it completed"),
        }
    }
}

/// The sources are the errors themselves, not the [`Arc`]s that share them: an
/// `Error::Io`'s source downcasts to [`io::Error`], a layer's to its own type.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the transport error stands for this one.
            Error::Transport(e) => e.source(),
            Error::Io(e) => Some(&**e),
            Error::Protocol(e) => Some(e),
            Error::Decompress(e) => Some(e),
            Error::InvalidTopic(e) => Some(e),
            Error::InvalidRoute(e) => Some(e),
            Error::InvalidMetadata(e) => Some(e),
            Error::Layer(e) => Some(&**e),
            Error::NotConnected { last: Some(last) } => Some(&**last),
            _ => None,
        }
    }
}

impl From<msg_core::MetadataError> for Error {
    fn from(e: msg_core::MetadataError) -> Self {
        Error::InvalidMetadata(e)
    }
}

impl From<msg_core::RouteError> for Error {
    fn from(e: msg_core::RouteError) -> Self {
        Error::InvalidRoute(e)
    }
}

impl From<crate::topic::TopicError> for Error {
    fn from(e: crate::topic::TopicError) -> Self {
        Error::InvalidTopic(e)
    }
}

/// The variants' names, by [`Error::kind_index`].
const KIND_NAMES: [&str; Error::KINDS] = [
    "transport",
    "io",
    "protocol",
    "unexpected_frame",
    "handshake_rejected",
    "refused",
    "heartbeat_timeout",
    "closed",
    "handshake_timeout",
    "handshake_evicted",
    "socket_type_mismatch",
    "not_connected",
    "not_bound",
    "connection_closed",
    "timeout",
    "remote",
    "frame_too_large",
    "unsupported_encoding",
    "decompress",
    "invalid_topic",
    "not_ready",
    "layer",
    "polled_after_completion",
    "connect_timeout",
    "already_connected",
    "not_processed",
    "not_msg",
    "invalid_route",
    "invalid_metadata",
];

impl Error {
    /// The variant's name in snake case, for logs and metrics labels.
    pub fn kind(&self) -> &'static str {
        KIND_NAMES[self.kind_index()]
    }

    /// How many variants there are: the length of [`KIND_NAMES`].
    pub(crate) const KINDS: usize = 29;

    /// The variant's place in [`KIND_NAMES`].
    pub(crate) fn kind_index(&self) -> usize {
        match self {
            Error::Transport(_) => 0,
            Error::Io(_) => 1,
            Error::Protocol(_) => 2,
            Error::UnexpectedFrame { .. } => 3,
            Error::HandshakeRejected { .. } => 4,
            Error::Refused { .. } => 5,
            Error::HeartbeatTimeout { .. } => 6,
            Error::Closed => 7,
            Error::HandshakeTimeout { .. } => 8,
            Error::HandshakeEvicted { .. } => 9,
            Error::SocketTypeMismatch { .. } => 10,
            Error::NotConnected { .. } => 11,
            Error::NotBound => 12,
            Error::ConnectionClosed => 13,
            Error::Timeout { .. } => 14,
            Error::Remote { .. } => 15,
            Error::FrameTooLarge { .. } => 16,
            Error::UnsupportedEncoding { .. } => 17,
            Error::Decompress(_) => 18,
            Error::InvalidTopic(_) => 19,
            Error::NotReady => 20,
            Error::Layer(_) => 21,
            Error::PolledAfterCompletion => 22,
            Error::ConnectTimeout { .. } => 23,
            Error::AlreadyConnected => 24,
            Error::NotProcessed => 25,
            Error::NotMsg { .. } => 26,
            Error::InvalidRoute(_) => 27,
            Error::InvalidMetadata(_) => 28,
        }
    }

    /// Whether trying again cannot help, whatever the request: a certificate or TLS
    /// configuration refused on either side, a transport without the configuration asked
    /// of it ([`TransportError::is_permanent`]), a server of the wrong socket type, or one
    /// that refused this socket for a reason that will not change (its type, its
    /// admission: see [`HandshakeRejected`](Error::HandshakeRejected)), or a peer not
    /// speaking msg. [`RetryPolicy`](crate::retry::RetryPolicy) never retries these, and a
    /// socket stops redialing a server that answers its dial with one.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Transport(e) => e.is_permanent(),
            // A TLS 1.3 server's refusal of this side's certificate, read after the
            // handshake.
            #[cfg(feature = "tls")]
            Error::Io(e) => msg_transports::tls::is_certificate_refusal(e),
            Error::SocketTypeMismatch { .. } | Error::NotMsg { .. } => true,
            Error::HandshakeRejected { code, .. } => matches!(
                code,
                Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated
            ),
            _ => false,
        }
    }

    /// Whether the error is about the connection, not the request: it ended, is going
    /// away ([`NotProcessed`](Error::NotProcessed)), or there was none. A retry needs a
    /// connection (which a `ReqSocket` redials by itself).
    pub fn is_connection_error(&self) -> bool {
        matches!(
            self,
            Error::Io(_)
                | Error::Protocol(_)
                | Error::UnexpectedFrame { .. }
                | Error::ConnectionClosed
                | Error::NotConnected { .. }
                | Error::NotProcessed
                | Error::HeartbeatTimeout { .. }
        )
    }
}

/// The error of a socket behind tower's middleware, typed again: what comes back from a
/// `ServiceBuilder` stack is a `BoxError`; this turns tower's `Elapsed` into
/// [`Error::Timeout`], unboxes a socket's own error, and keeps anything else as
/// [`Error::Layer`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower::{BoxError, ServiceBuilder, ServiceExt};
/// use msg::{Error, Message};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let slow = tower::service_fn(|_: Message| async {
///     tokio::time::sleep(Duration::from_secs(10)).await;
///     Ok::<_, Error>(Message::from("late"))
/// });
/// let svc = ServiceBuilder::new().timeout(Duration::from_millis(10)).service(slow);
/// let outcome = svc.oneshot(Message::from("hi")).await.map_err(Error::from);
/// assert!(matches!(outcome, Err(Error::Timeout { after: None })));
/// # }
/// ```
impl From<tower::BoxError> for Error {
    fn from(e: tower::BoxError) -> Self {
        if e.is::<tower::timeout::error::Elapsed>() {
            return Error::Timeout { after: None };
        }
        match e.downcast::<Error>() {
            Ok(e) => *e,
            Err(e) => match e.downcast::<TransportError>() {
                Ok(e) => Error::Transport(Arc::new(*e)),
                Err(e) => Error::Layer(Arc::from(e)),
            },
        }
    }
}

impl From<TransportError> for Error {
    fn from(e: TransportError) -> Self {
        Error::Transport(Arc::new(e))
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

impl From<FrameError> for Error {
    /// A read or write that failed is an I/O error, not the peer's fault; everything else
    /// the codec refuses is a protocol error.
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(e) => Error::Io(e),
            FrameError::Unexpected { kind } => Error::UnexpectedFrame { kind },
            other => Error::Protocol(other),
        }
    }
}

/// Turns a refusal to queue a frame into the error a caller sees.
pub(crate) fn frame_refused(e: FrameError) -> Error {
    match e {
        FrameError::TooLarge { len, max } => Error::FrameTooLarge { len, max },
        other => Error::Protocol(other),
    }
}

/// A payload that could not be decoded, as the error a caller sees.
pub(crate) fn undecodable(e: msg_layers::compression::DecompressError) -> Error {
    match e {
        msg_layers::compression::DecompressError::Unsupported { encoding } => {
            Error::UnsupportedEncoding { encoding }
        }
        other => {
            if matches!(
                other,
                msg_layers::compression::DecompressError::TooLarge { .. }
            ) {
                crate::limits::hit(crate::limits::DECOMPRESSED_LEN);
            }
            Error::Decompress(other)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn a_shared_source_is_the_error_itself_not_its_arc() {
        let io = Error::from(io::Error::new(io::ErrorKind::InvalidData, "bad"));
        assert_eq!(io.to_string(), "i/o error: bad");
        let source = io.source().expect("a source");
        assert_eq!(
            source.downcast_ref::<io::Error>().map(io::Error::kind),
            Some(io::ErrorKind::InvalidData)
        );

        #[derive(Debug, thiserror::Error)]
        #[error("mine")]
        struct Mine;
        let layer = Error::from(tower::BoxError::from(Mine));
        assert!(layer.source().expect("a source").is::<Mine>());

        let transport = Error::from(TransportError::TimedOut);
        assert_eq!(transport.to_string(), "connecting timed out");
        assert_eq!(transport.clone().to_string(), transport.to_string());
    }
}
