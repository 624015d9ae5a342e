//! The hello exchange that opens every connection, as states: the client says hello (its
//! socket type and optional token), the server welcomes it (its own type, and its frame
//! limit in the welcome's id) or rejects it (a reason, and its kind as a [`Code`] in the
//! reject's encoding byte) and closes.

use bytes::Bytes;

use super::Link;
use crate::wire::{
    error_response_code, error_response_encoding, parse_welcome, welcome_frame, Hello,
};
use crate::{Code, Frame, FrameError, FrameKind, SocketType};

/// The server's welcome, as the client reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Welcome {
    /// The server's socket type.
    pub socket_type: SocketType,
    /// The largest frame the server receives, if it said (a server from before this sends
    /// `0`, read as `None`).
    pub max_frame_len: Option<usize>,
}

/// Why a handshake did not complete.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The server rejected this client, for the reason given.
    Rejected {
        /// The server's reason.
        reason: String,
        /// What kind of refusal it is: [`Code::InvalidArgument`] for a client the server
        /// cannot talk to (the wrong socket type, a hello it cannot read),
        /// [`Code::PermissionDenied`] for admission's refusal,
        /// [`Code::ResourceExhausted`] for a server at its connection limit, and
        /// [`Code::Internal`] from a server from before codes.
        code: Code,
    },
    /// The server is not of the type this client talks to.
    Mismatch {
        /// This side's type.
        local: SocketType,
        /// The server's type.
        remote: SocketType,
    },
    /// This server refused the client (a reject was queued for it).
    Refused {
        /// The reason sent.
        reason: String,
    },
    /// The peer broke the protocol (for a server, a reject was queued).
    Protocol(FrameError),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Rejected { reason, .. } => {
                write!(f, "rejected by the server: {reason}")
            }
            HandshakeError::Mismatch { local, remote } => {
                write!(f, "a {local} socket cannot talk to a {remote} socket")
            }
            HandshakeError::Refused { reason } => write!(f, "refused: {reason}"),
            HandshakeError::Protocol(e) => e.fmt(f),
        }
    }
}

/// A broken protocol's source is the protocol's own error.
impl std::error::Error for HandshakeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            HandshakeError::Protocol(e) => e.source(),
            _ => None,
        }
    }
}

impl From<FrameError> for HandshakeError {
    fn from(e: FrameError) -> Self {
        HandshakeError::Protocol(e)
    }
}

/// The client's side of the hello exchange.
#[derive(Debug)]
pub struct ClientHandshake {
    local: SocketType,
}

impl ClientHandshake {
    /// Queues the hello of a `local` socket, with `auth_token` if it has one.
    pub fn start(local: SocketType, auth_token: Option<Bytes>, link: &mut Link) -> Self {
        let hello = Hello {
            socket_type: local,
            auth_token,
        };
        // A hello too large for the frame limit goes as it is: the server refuses it.
        let _ = link.queue_frame(&hello.to_frame());
        ClientHandshake { local }
    }

    /// The server's answer: its welcome, once welcomed by a server of the matching type.
    ///
    /// # Errors
    ///
    /// Rejected, a server of another type, or a frame that is no answer.
    pub fn receive(self, frame: Frame) -> Result<Welcome, HandshakeError> {
        match frame.kind {
            FrameKind::Welcome => {
                let remote = parse_welcome(&frame.payload)?;
                if remote != self.local.peer() {
                    return Err(HandshakeError::Mismatch {
                        local: self.local,
                        remote,
                    });
                }
                // A limit too large for this machine's `usize` is no limit here.
                let max_frame_len = match frame.id {
                    0 => None,
                    max => Some(usize::try_from(max).unwrap_or(usize::MAX)),
                };
                Ok(Welcome {
                    socket_type: remote,
                    max_frame_len,
                })
            }
            FrameKind::Reject => Err(HandshakeError::Rejected {
                reason: String::from_utf8_lossy(&frame.payload).into_owned(),
                code: error_response_code(frame.encoding),
            }),
            kind => Err(FrameError::Unexpected { kind }.into()),
        }
    }
}

/// The server's side of the hello exchange.
#[derive(Debug)]
pub struct ServerHandshake {
    local: SocketType,
}

impl ServerHandshake {
    /// A `local` socket's side, waiting for the client's hello.
    pub fn new(local: SocketType) -> Self {
        ServerHandshake { local }
    }

    /// Checks the client's first frame: a well-formed hello from the peer type of this
    /// socket. On any error a reject saying why is queued on `link`, for the driver to
    /// write before it closes.
    ///
    /// # Errors
    ///
    /// A first frame that is no hello, a malformed one, or a client of the wrong type.
    pub fn receive(&self, frame: Frame, link: &mut Link) -> Result<Hello, HandshakeError> {
        if frame.kind != FrameKind::Hello {
            reject(
                "the first frame must be a hello",
                Code::InvalidArgument,
                link,
            );
            return Err(FrameError::Unexpected { kind: frame.kind }.into());
        }
        let hello = match Hello::parse(&frame.payload) {
            Ok(hello) => hello,
            Err(e) => {
                reject(&e.to_string(), Code::InvalidArgument, link);
                return Err(e.into());
            }
        };
        if hello.socket_type != self.local.peer() {
            let reason = format!(
                "a {} socket cannot connect to a {} socket",
                hello.socket_type, self.local
            );
            reject(&reason, Code::InvalidArgument, link);
            return Err(HandshakeError::Refused { reason });
        }
        Ok(hello)
    }

    /// The client could not be read (bad framing): queues a reject saying why.
    pub fn broken(&self, error: &FrameError, link: &mut Link) {
        reject(&error.to_string(), Code::InvalidArgument, link);
    }

    /// Lets the client in: queues the welcome, which tells the client this side's frame
    /// limit (in its id), so that it can refuse a request too large before sending it.
    pub fn welcome(self, link: &mut Link) {
        let mut frame = welcome_frame(self.local);
        frame.id = link.max_frame_len() as u64;
        // A one-byte body always fits.
        let _ = link.queue_frame(&frame);
    }

    /// Turns the client away for `reason`, a refusal of the kind `code` says (see
    /// [`HandshakeError::Rejected`]): queues the reject.
    pub fn refuse(self, reason: &str, code: Code, link: &mut Link) -> HandshakeError {
        reject(reason, code, link);
        HandshakeError::Refused {
            reason: reason.to_owned(),
        }
    }
}

/// Queues a reject with `reason`, cut to the frame limit if it must be, and `code` in its
/// encoding byte (which a client from before codes ignores, as on an error-response).
fn reject(reason: &str, code: Code, link: &mut Link) {
    let max = link.max_frame_len();
    let mut end = reason.len().min(max);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut frame = Frame::new(
        FrameKind::Reject,
        0,
        Bytes::copy_from_slice(&reason.as_bytes()[..end]),
    );
    frame.encoding = error_response_encoding(code);
    let _ = link.queue_frame(&frame);
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    /// Moves what `from` queued into `to`, decoded whatever its kind.
    fn carry(from: &mut Link, to: &mut Link) -> Vec<Frame> {
        let mut rbuf = BytesMut::from(&from.take_transmit()[..]);
        std::iter::from_fn(|| to.decode_any(&mut rbuf).unwrap()).collect()
    }

    #[test]
    fn a_client_of_the_peer_type_is_welcomed_with_its_token() {
        let (mut client, mut server) = (Link::new(1024), Link::new(1024));
        let hs = ClientHandshake::start(SocketType::Req, Some(Bytes::from("t")), &mut client);
        let hello = carry(&mut client, &mut server).remove(0);
        let srv = ServerHandshake::new(SocketType::Rep);
        let hello = srv.receive(hello, &mut server).unwrap();
        assert_eq!(hello.auth_token.as_deref(), Some(&b"t"[..]));
        srv.welcome(&mut server);
        let welcome = carry(&mut server, &mut client).remove(0);
        let welcome = hs.receive(welcome).unwrap();
        assert_eq!(welcome.socket_type, SocketType::Rep);
        assert_eq!(welcome.max_frame_len, Some(1024), "the server's limit");
    }

    #[test]
    fn a_welcome_from_a_server_before_limits_says_no_limit() {
        let hs = ClientHandshake::start(SocketType::Req, None, &mut Link::new(1024));
        let welcome = hs.receive(welcome_frame(SocketType::Rep)).unwrap();
        assert_eq!(welcome.max_frame_len, None);
    }

    #[test]
    fn a_client_of_another_type_is_refused_with_a_reject_saying_why() {
        let (mut client, mut server) = (Link::new(1024), Link::new(1024));
        let hs = ClientHandshake::start(SocketType::Sub, None, &mut client);
        let hello = carry(&mut client, &mut server).remove(0);
        let srv = ServerHandshake::new(SocketType::Rep);
        assert!(matches!(
            srv.receive(hello, &mut server),
            Err(HandshakeError::Refused { .. })
        ));
        let reject = carry(&mut server, &mut client).remove(0);
        match hs.receive(reject) {
            Err(HandshakeError::Rejected { reason, code }) => {
                assert!(reason.contains("sub") && reason.contains("rep"), "{reason}");
                assert_eq!(code, Code::InvalidArgument);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_first_frame_that_is_no_hello_is_rejected() {
        let mut server = Link::new(1024);
        let srv = ServerHandshake::new(SocketType::Rep);
        let request = Frame::new(FrameKind::Request, 1, Bytes::from("x"));
        assert!(matches!(
            srv.receive(request, &mut server),
            Err(HandshakeError::Protocol(FrameError::Unexpected { .. }))
        ));
        let frames = carry(&mut server, &mut Link::new(1024));
        assert_eq!(frames[0].kind, FrameKind::Reject);
    }

    #[test]
    fn a_welcome_from_the_wrong_type_fails_the_client() {
        let mut client = Link::new(1024);
        let hs = ClientHandshake::start(SocketType::Req, None, &mut client);
        assert!(matches!(
            hs.receive(welcome_frame(SocketType::Pub)),
            Err(HandshakeError::Mismatch { .. })
        ));
    }

    #[test]
    fn an_admission_refusal_longer_than_the_limit_is_cut_to_fit() {
        let mut server = Link::new(8);
        let srv = ServerHandshake::new(SocketType::Rep);
        srv.refuse("ééééééééé", Code::PermissionDenied, &mut server);
        let frames = carry(&mut server, &mut Link::new(1024));
        assert_eq!(frames[0].payload, "éééé");
    }
}
