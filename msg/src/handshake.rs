//! The connection handshake of wire protocol v1, for both ends: the states are
//! `msg_core::proto`'s, the waiting is here.
//!
//! The client sends `Hello` (its socket type and optional auth token); the server answers
//! `Welcome` (its socket type and frame limit) or `Reject` (a reason and its code) and
//! closes. Which side is which follows the socket type, not the direction ([`Part`]): the
//! request and subscribe sides say hello, the reply and publish sides answer, whoever
//! dialed.
//!
//! Either side that reads bytes that are not msg's frames where the other's first frame
//! belongs looks at them to say what the peer speaks instead ([`Error::NotMsg`]): a TLS
//! record, an HTTP request or response.

use std::sync::Arc;

use bytes::Bytes;
use msg_core::proto::{ClientHandshake, HandshakeError, ServerHandshake, Welcome};
use msg_core::wire::{Hello, MAGIC};
use msg_core::{Code, FrameError, HeartbeatConfig, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;

use crate::admission::{self, Admission, AdmissionRequest, Decision, Verdict};
use crate::io::FramedIo;
use crate::Error;

/// The part a socket plays in the hello exchange, which its type decides whoever dialed:
/// a request or subscribe socket says hello, a reply or publish socket answers it.
pub(crate) enum Part<A> {
    /// Says hello with this token, and waits for the welcome.
    Hello {
        /// The token for the peer's admission.
        token: Option<Bytes>,
    },
    /// Waits for the peer's hello, checks it (its socket type, the connection limit,
    /// admission), and answers welcome or reject.
    Answer {
        /// Decides whether the peer may use the socket, if set.
        admission: Option<Admission<A>>,
        /// A permit per connection served; none left, the peer is refused.
        connections: Arc<Semaphore>,
    },
}

impl<A> Part<A> {
    /// An answer with `admission` and a limit of `max_connections` served at once.
    pub(crate) fn answer(admission: Option<Admission<A>>, max_connections: usize) -> Self {
        Part::Answer {
            admission,
            connections: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
        }
    }
}

impl<A> Clone for Part<A> {
    fn clone(&self) -> Self {
        match self {
            Part::Hello { token } => Part::Hello {
                token: token.clone(),
            },
            Part::Answer {
                admission,
                connections,
            } => Part::Answer {
                admission: admission.clone(),
                connections: connections.clone(),
            },
        }
    }
}

/// Runs this side's `part` of the hello exchange on a connection just made (dialed or
/// accepted) to `peer`, then starts the heartbeat: the one way every connection starts.
/// An answering side's connection holds its slot of the connection limit while it lives.
///
/// # Errors
///
/// For a side that says hello, the peer's rejection ([`Error::HandshakeRejected`]) or a
/// peer of the wrong type; for one that answers, the peer refused ([`Error::Refused`]);
/// and a peer that does not speak msg, or closes.
pub(crate) async fn greet<Io, A>(
    io: &mut FramedIo<Io>,
    socket_type: SocketType,
    peer: &A,
    part: &Part<A>,
    heartbeat: Option<HeartbeatConfig>,
) -> Result<(), Error>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    A: Clone + Send + 'static,
{
    match part {
        Part::Hello { token } => {
            crate::conn::client::hello(io, socket_type, token.clone(), heartbeat).await
        }
        Part::Answer {
            admission,
            connections,
        } => {
            // At the limit the peer is still heard, so that it learns why it is refused.
            let slot = connections.clone().try_acquire_owned().ok();
            let full = slot.is_none().then(|| {
                crate::limits::hit(crate::limits::CONNECTIONS);
                "this server is at its connection limit"
            });
            crate::conn::server::hello(io, socket_type, peer, admission.as_ref(), full, heartbeat)
                .await?;
            if let Some(slot) = slot {
                io.hold(slot);
            }
            Ok(())
        }
    }
}

/// A handshake's failure as the socket reports it.
pub(crate) fn error(e: HandshakeError) -> Error {
    match e {
        HandshakeError::Rejected { reason, code } => Error::HandshakeRejected { reason, code },
        HandshakeError::Mismatch { local, remote } => Error::SocketTypeMismatch { local, remote },
        HandshakeError::Refused { reason } => Error::Refused { reason },
        HandshakeError::Protocol(e) => e.into(),
        _ => Error::Protocol(FrameError::Malformed {
            kind: "hello",
            reason: "handshake failed",
        }),
    }
}

/// The hint for a server that answered a TLS client with something else.
#[cfg(feature = "tls")]
pub(crate) const SERVER_NOT_TLS: &str = "the server does not speak TLS: use the Tcp transport";
/// The hint for a server that answered with a TLS record.
pub(crate) const SERVER_TLS: &str = "the server speaks TLS: use the Tls transport";
/// The hint for a server that answered as HTTP.
pub(crate) const SERVER_HTTP: &str =
    "an HTTP server answered: check the address and port (msg is not HTTP)";
/// The hint for a server that answered with anything else.
pub(crate) const SERVER_OTHER: &str =
    "the server answered with bytes that are not msg frames: check the address, port and transport";
/// The hint for a client that opened with a TLS record on a plain listener.
pub(crate) const CLIENT_TLS: &str =
    "the client speaks TLS and this server does not: bind it with the Tls transport, or connect with Tcp";
/// The hint for a client that opened with an HTTP request.
pub(crate) const CLIENT_HTTP: &str = "an HTTP client connected (msg is not HTTP)";
/// The hint for a client that opened with anything else.
pub(crate) const CLIENT_OTHER: &str =
    "the client sent bytes that are not msg frames: it may use another protocol or transport";

/// Whether `bytes` start like a TLS record: a content type of TLS (change cipher spec,
/// alert, handshake, application data), then a 3.x version.
fn tls_record(bytes: &[u8]) -> bool {
    matches!(bytes, [0x14..=0x17, 0x03, minor, ..] if *minor <= 0x04)
}

/// What the first bytes a server sent say it speaks, if they are not msg's frames.
pub(crate) fn server_speaks(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&MAGIC.to_be_bytes()) || bytes.is_empty() {
        None
    } else if tls_record(bytes) {
        Some(SERVER_TLS)
    } else if bytes.starts_with(b"HTTP/") {
        Some(SERVER_HTTP)
    } else {
        Some(SERVER_OTHER)
    }
}

/// What the first bytes a client sent say it speaks, if they are not msg's frames.
pub(crate) fn client_speaks(bytes: &[u8]) -> Option<&'static str> {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"PRI * HTTP/2",
    ];
    if bytes.starts_with(&MAGIC.to_be_bytes()) || bytes.is_empty() {
        None
    } else if tls_record(bytes) {
        Some(CLIENT_TLS)
    } else if METHODS.iter().any(|m| bytes.starts_with(m)) {
        Some(CLIENT_HTTP)
    } else {
        Some(CLIENT_OTHER)
    }
}

/// The error of a handshake frame that could not be read: the peer's bytes tell what it
/// speaks if it is not msg (`speaks` reads them), else the frame error as it is.
fn unreadable<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &FramedIo<Io>,
    e: FrameError,
    speaks: fn(&[u8]) -> Option<&'static str>,
) -> Error {
    match (&e, speaks(io.read_buffer())) {
        (FrameError::Io(_), _) => e.into(),
        (FrameError::BadMagic { .. } | FrameError::Truncated { .. }, Some(hint)) => {
            Error::NotMsg { hint }
        }
        _ => e.into(),
    }
}

/// The client's side: says hello and waits for the verdict. Once welcomed, frames larger
/// than the server said it takes are refused before they are sent.
pub(crate) async fn client<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<Io>,
    local: SocketType,
    auth_token: Option<Bytes>,
) -> Result<Welcome, Error> {
    let handshake = ClientHandshake::start(local, auth_token, &mut io.link);
    io.flush().await?;
    let frame = match io.next_frame().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Error::ConnectionClosed),
        Err(e) => return Err(unreadable(io, e, server_speaks)),
    };
    let welcome = handshake.receive(frame).map_err(error)?;
    if let Some(max) = welcome.max_frame_len {
        io.link.limit_writes(max);
    }
    Ok(welcome)
}

/// The server's side: reads the hello, checks it, asks admission, and welcomes or rejects
/// the client.
pub(crate) async fn server<Io: AsyncRead + AsyncWrite + Unpin, A: Clone + Send + 'static>(
    io: &mut FramedIo<Io>,
    local: SocketType,
    peer: &A,
    admission: Option<&Admission<A>>,
    refuse: Option<&str>,
) -> Result<Hello, Error> {
    let handshake = ServerHandshake::new(local);
    let frame = match io.next_frame().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Error::ConnectionClosed),
        Err(FrameError::Io(e)) => return Err(Error::Io(e)),
        Err(e) => {
            handshake.broken(&e, &mut io.link);
            let error = unreadable(io, e, client_speaks);
            close(io).await;
            return Err(error);
        }
    };
    let hello = match handshake.receive(frame, &mut io.link) {
        Ok(hello) => hello,
        Err(e) => {
            close(io).await;
            return Err(error(e));
        }
    };
    if let Some(reason) = refuse {
        // Only a limit refuses here: one that may have room on the next dial.
        let e = handshake.refuse(reason, Code::ResourceExhausted, &mut io.link);
        close(io).await;
        return Err(error(e));
    }
    if let Some(admission) = admission {
        let request =
            AdmissionRequest::new(peer.clone(), hello.socket_type, hello.auth_token.clone());
        // A refusal stands (the client stops redialing); a service that failed to decide
        // refuses this dial only, with a code the client retries.
        let refused = match admission::decide(admission, request).await {
            Decision::Given(Verdict::Admit) => None,
            Decision::Given(Verdict::Reject { reason }) => Some((reason, Code::PermissionDenied)),
            Decision::Failed(reason) => Some((reason, Code::Unavailable)),
        };
        if let Some((reason, code)) = refused {
            let e = handshake.refuse(&reason, code, &mut io.link);
            close(io).await;
            return Err(error(e));
        }
    }
    handshake.welcome(&mut io.link);
    io.flush().await?;
    Ok(hello)
}

/// Writes the reject queued for the client and closes; best effort, as the connection is
/// dropped next.
async fn close<Io: AsyncRead + AsyncWrite + Unpin>(io: &mut FramedIo<Io>) {
    let _ = std::future::poll_fn(|cx| io.poll_close(cx)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_bytes_of_a_peer_not_speaking_msg_say_what_it_speaks() {
        // A TLS 1.2 ClientHello record, and an alert as a TLS server sends it.
        assert_eq!(
            client_speaks(&[0x16, 0x03, 0x01, 0x02, 0x00]),
            Some(CLIENT_TLS)
        );
        assert_eq!(
            server_speaks(&[0x15, 0x03, 0x03, 0x00, 0x02]),
            Some(SERVER_TLS)
        );
        assert_eq!(client_speaks(b"GET / HTTP/1.1\r\n"), Some(CLIENT_HTTP));
        assert_eq!(
            server_speaks(b"HTTP/1.1 400 Bad Request\r\n"),
            Some(SERVER_HTTP)
        );
        assert_eq!(
            server_speaks(b"SSH-2.0-OpenSSH_9.6\r\n"),
            Some(SERVER_OTHER)
        );
        assert_eq!(client_speaks(b"\x00\x00\x00\x00"), Some(CLIENT_OTHER));
        // msg's own magic, or nothing at all, says nothing.
        assert_eq!(client_speaks(&MAGIC.to_be_bytes()), None);
        assert_eq!(server_speaks(b""), None);
    }
}
