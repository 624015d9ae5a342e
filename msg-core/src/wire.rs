//! Wire protocol v1: frame kinds, the fixed header and the handshake.
//!
//! Every frame, handshake included, starts with the same 20-byte header, all integers big
//! endian:
//!
//! ```text
//!  0       2     3      4       5          6            8                 16          20
//!  +-------+-----+------+-------+----------+------------+-----------------+-----------+
//!  | magic | ver | kind | flags | encoding | topic len  |       id        |  length   |
//!  | "ms"  | 1   | u8   | u8    | u8       | u16        |       u64       |  u32      |
//!  +-------+-----+------+-------+----------+------------+-----------------+-----------+
//!  | topic (topic len bytes) | payload (length bytes) |
//!  +-------------------------+------------------------+
//! ```
//!
//! `PROTOCOL.md` at the root of the repository is the full description.

use bytes::{BufMut, Bytes, BytesMut};

pub use crate::metadata::MAX_METADATA_LEN;
pub use crate::route::MAX_ROUTE_LEN;
use crate::{Code, Encoding, FrameError};

/// The two bytes every frame starts with: `"ms"`.
pub const MAGIC: u16 = 0x6d73;
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// The size of the fixed header, in bytes.
pub const HEADER_LEN: usize = 20;
/// The longest topic the wire can carry.
pub const MAX_TOPIC_LEN: usize = u16::MAX as usize;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameKind {
    /// First frame of a connection, client to server: socket type and optional auth token.
    Hello = 0x01,
    /// The server accepts the connection: its socket type.
    Welcome = 0x02,
    /// The server refuses the connection: a UTF-8 reason. The server closes after it.
    Reject = 0x03,
    /// Asks the peer for a sign of life; sent only after a heartbeat interval in which
    /// nothing arrived. No body.
    Ping = 0x04,
    /// Answers a ping. No body.
    Pong = 0x05,
    /// A request: `id` names it, the payload is the request.
    Request = 0x10,
    /// A response to the request with the same `id`.
    Response = 0x11,
    /// The request with the same `id` failed in the handler: a UTF-8 message, and in the
    /// encoding byte the error's [`Code`] (see [`error_response_encoding`]).
    ErrorResponse = 0x12,
    /// The client gave up on the request with the same `id`: the server drops its call and
    /// sends no reply. No body.
    Cancel = 0x13,
    /// The server is going away (a graceful shutdown): it processes the requests of this
    /// connection up to and including `id`, answers them, and closes; any request with a
    /// greater id was never processed, and is safe to send again elsewhere. No body.
    GoAway = 0x14,
    /// Subscribe to the topic pattern in the topic field; `id` is echoed by the ack.
    Subscribe = 0x20,
    /// Unsubscribe from the topic pattern in the topic field; `id` is echoed by the ack.
    Unsubscribe = 0x21,
    /// The publisher applied the subscription change with the same `id`.
    SubscriptionAck = 0x22,
    /// A published message: topic, payload, and in `id` the session's sequence number.
    Publish = 0x23,
}

impl FrameKind {
    /// The kind's name, for errors and logs.
    pub const fn name(self) -> &'static str {
        match self {
            FrameKind::Hello => "hello",
            FrameKind::Welcome => "welcome",
            FrameKind::Reject => "reject",
            FrameKind::Ping => "ping",
            FrameKind::Pong => "pong",
            FrameKind::Request => "request",
            FrameKind::Response => "response",
            FrameKind::ErrorResponse => "error-response",
            FrameKind::Cancel => "cancel",
            FrameKind::GoAway => "go-away",
            FrameKind::Subscribe => "subscribe",
            FrameKind::Unsubscribe => "unsubscribe",
            FrameKind::SubscriptionAck => "subscription-ack",
            FrameKind::Publish => "publish",
        }
    }

    /// Whether frames of this kind carry a topic: a pattern, a publication's topic, or a
    /// request's route.
    pub const fn has_topic(self) -> bool {
        matches!(
            self,
            FrameKind::Subscribe | FrameKind::Unsubscribe | FrameKind::Publish | FrameKind::Request
        )
    }

    /// The longest topic a frame of this kind carries: [`MAX_ROUTE_LEN`] for a request's
    /// route, [`MAX_TOPIC_LEN`] for pub/sub's topics and patterns, `0` for the others.
    pub const fn max_topic_len(self) -> usize {
        match self {
            FrameKind::Request => MAX_ROUTE_LEN,
            kind if kind.has_topic() => MAX_TOPIC_LEN,
            _ => 0,
        }
    }

    /// Checks a topic's length for this kind with these flags: a request with
    /// [`Flags::METADATA`] carries its route and metadata, up to [`MAX_METADATA_LEN`].
    const fn check_topic(self, len: usize, flags: Flags) -> Result<(), FrameError> {
        if flags.contains(Flags::METADATA) {
            return if len == 0 {
                Err(FrameError::BadTopic("a request with metadata carries none"))
            } else if len > MAX_METADATA_LEN {
                Err(FrameError::BadTopic(
                    "a request's route and metadata are longer than 8192 bytes",
                ))
            } else {
                Ok(())
            };
        }
        if len == 0 || len <= self.max_topic_len() {
            Ok(())
        } else if !self.has_topic() {
            Err(FrameError::BadTopic("this frame kind carries no topic"))
        } else if matches!(self, FrameKind::Request) {
            Err(FrameError::BadTopic(
                "a request's route is longer than 255 bytes",
            ))
        } else {
            Err(FrameError::BadTopic("longer than 65535 bytes"))
        }
    }

    /// All kinds, in code order.
    pub const ALL: [FrameKind; 14] = [
        FrameKind::Hello,
        FrameKind::Welcome,
        FrameKind::Reject,
        FrameKind::Ping,
        FrameKind::Pong,
        FrameKind::Request,
        FrameKind::Response,
        FrameKind::ErrorResponse,
        FrameKind::Cancel,
        FrameKind::GoAway,
        FrameKind::Subscribe,
        FrameKind::Unsubscribe,
        FrameKind::SubscriptionAck,
        FrameKind::Publish,
    ];
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;

    fn try_from(kind: u8) -> Result<Self, FrameError> {
        Ok(match kind {
            0x01 => FrameKind::Hello,
            0x02 => FrameKind::Welcome,
            0x03 => FrameKind::Reject,
            0x04 => FrameKind::Ping,
            0x05 => FrameKind::Pong,
            0x10 => FrameKind::Request,
            0x11 => FrameKind::Response,
            0x12 => FrameKind::ErrorResponse,
            0x13 => FrameKind::Cancel,
            0x14 => FrameKind::GoAway,
            0x20 => FrameKind::Subscribe,
            0x21 => FrameKind::Unsubscribe,
            0x22 => FrameKind::SubscriptionAck,
            0x23 => FrameKind::Publish,
            kind => return Err(FrameError::UnknownKind { kind }),
        })
    }
}

/// The flags byte of a frame's header: each bit says how to read the rest of the frame.
///
/// Version 1 defines one, on requests only: [`METADATA`](Self::METADATA). A receiver
/// refuses any other bit, or this one on another kind, as a protocol error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// No flag.
    pub const NONE: Flags = Flags(0);
    /// On a request: its topic field carries [`Metadata`](crate::Metadata) beside its
    /// route (see `PROTOCOL.md`, "Metadata").
    pub const METADATA: Flags = Flags(0x01);

    /// The byte on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags a frame of `kind` may carry, from the byte received.
    ///
    /// # Errors
    ///
    /// [`FrameError::ReservedFlags`]: a bit this version does not define, or one the kind
    /// does not carry.
    pub const fn for_kind(kind: FrameKind, bits: u8) -> Result<Flags, FrameError> {
        match (kind, bits) {
            (_, 0) => Ok(Flags::NONE),
            (FrameKind::Request, 0x01) => Ok(Flags::METADATA),
            (_, flags) => Err(FrameError::ReservedFlags { flags }),
        }
    }
}

/// The fixed header of a frame, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: FrameKind,
    /// How to read the rest of the frame.
    pub flags: Flags,
    /// How the payload is encoded.
    pub encoding: Encoding,
    /// Request id, ack id or sequence number, by kind.
    pub id: u64,
    /// Length of the topic that follows the header.
    pub topic_len: u16,
    /// Length of the payload that follows the topic.
    pub payload_len: u32,
}

impl Header {
    /// Topic and payload together: what follows the header.
    pub fn body_len(&self) -> usize {
        self.topic_len as usize + self.payload_len as usize
    }

    /// Writes the header's 20 bytes.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.extend_from_slice(&self.to_bytes());
    }

    /// The header's 20 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        bytes[2] = VERSION;
        bytes[3] = self.kind as u8;
        bytes[4] = self.flags.bits();
        bytes[5] = self.encoding.code();
        bytes[6..8].copy_from_slice(&self.topic_len.to_be_bytes());
        bytes[8..16].copy_from_slice(&self.id.to_be_bytes());
        bytes[16..20].copy_from_slice(&self.payload_len.to_be_bytes());
        bytes
    }

    /// Parses a header from its 20 bytes.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadMagic`], [`FrameError::UnsupportedVersion`],
    /// [`FrameError::UnknownKind`], [`FrameError::ReservedFlags`], or
    /// [`FrameError::BadTopic`] for a topic on a kind that carries none, or one longer than
    /// the kind carries (a request's route: [`MAX_ROUTE_LEN`]).
    pub fn decode(src: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        let magic = u16::from_be_bytes([src[0], src[1]]);
        if magic != MAGIC {
            return Err(FrameError::BadMagic { found: magic });
        }
        if src[2] != VERSION {
            return Err(FrameError::UnsupportedVersion {
                version: src[2],
                supported: VERSION,
            });
        }
        let kind = FrameKind::try_from(src[3])?;
        let flags = Flags::for_kind(kind, src[4])?;
        let encoding = Encoding::from_code(src[5]);
        let topic_len = u16::from_be_bytes([src[6], src[7]]);
        // Before anything is reserved for the body: a route's bound is far below a frame's.
        kind.check_topic(topic_len as usize, flags)?;
        let mut id = [0u8; 8];
        id.copy_from_slice(&src[8..16]);
        let payload_len = u32::from_be_bytes([src[16], src[17], src[18], src[19]]);
        Ok(Header {
            kind,
            flags,
            encoding,
            id: u64::from_be_bytes(id),
            topic_len,
            payload_len,
        })
    }
}

/// A whole frame: header fields, topic and payload.
///
/// Decoded frames share the read buffer: `topic` and `payload` are slices of it, not copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame is.
    pub kind: FrameKind,
    /// How to read the rest of it: on a request, whether its topic field carries
    /// metadata beside the route.
    pub flags: Flags,
    /// How the payload is encoded.
    pub encoding: Encoding,
    /// Request id, ack id or sequence number, by kind.
    pub id: u64,
    /// The topic, empty on kinds that carry none.
    pub topic: Bytes,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of `kind` with `id` and `payload`, identity-encoded and without a topic.
    pub fn new(kind: FrameKind, id: u64, payload: Bytes) -> Frame {
        Frame {
            kind,
            flags: Flags::NONE,
            encoding: Encoding::IDENTITY,
            id,
            topic: Bytes::new(),
            payload,
        }
    }

    /// The header this frame is sent with.
    ///
    /// # Errors
    ///
    /// [`FrameError::BadTopic`] if the topic does not fit the wire or the kind carries none;
    /// [`FrameError::TooLarge`] if the payload is longer than `u32::MAX` or topic and payload
    /// together exceed `max_frame_len`.
    pub fn header(&self, max_frame_len: usize) -> Result<Header, FrameError> {
        flagged_header(
            self.kind,
            self.flags,
            self.encoding,
            self.id,
            self.topic.len(),
            self.payload.len(),
            max_frame_len,
        )
    }
}

/// Builds and checks the header for a frame of the given shape.
///
/// # Errors
///
/// As [`Frame::header`].
pub fn header_for(
    kind: FrameKind,
    encoding: Encoding,
    id: u64,
    topic_len: usize,
    payload_len: usize,
    max_frame_len: usize,
) -> Result<Header, FrameError> {
    flagged_header(
        kind,
        Flags::NONE,
        encoding,
        id,
        topic_len,
        payload_len,
        max_frame_len,
    )
}

/// Builds and checks the header for a frame of the given shape, with `flags`.
///
/// # Errors
///
/// As [`Frame::header`], and [`FrameError::ReservedFlags`] for flags the kind does not
/// carry.
pub fn flagged_header(
    kind: FrameKind,
    flags: Flags,
    encoding: Encoding,
    id: u64,
    topic_len: usize,
    payload_len: usize,
    max_frame_len: usize,
) -> Result<Header, FrameError> {
    Flags::for_kind(kind, flags.bits())?;
    kind.check_topic(topic_len, flags)?;
    let topic_len =
        u16::try_from(topic_len).map_err(|_| FrameError::BadTopic("longer than 65535 bytes"))?;
    let body = topic_len as u64 + payload_len as u64;
    let payload_len = u32::try_from(payload_len)
        .ok()
        .filter(|_| body <= max_frame_len as u64)
        .ok_or(FrameError::TooLarge {
            len: body,
            max: max_frame_len,
        })?;
    Ok(Header {
        kind,
        flags,
        encoding,
        id,
        topic_len,
        payload_len,
    })
}

/// The encoding byte of an error-response that carries `code`.
///
/// An error-response's payload is always UTF-8 text, never encoded, so its encoding byte
/// carries the error's [`Code`] instead. A peer from before codes sends `0` there and
/// ignores the byte when it reads one, so the text reads the same to both.
///
/// # Example
///
/// ```
/// use msg::wire::{error_response_code, error_response_encoding};
/// use msg::{Code, Encoding};
///
/// let byte = error_response_encoding(Code::NotFound);
/// assert_eq!(error_response_code(byte), Code::NotFound);
/// assert_eq!(error_response_code(Encoding::IDENTITY), Code::Internal);
/// ```
pub fn error_response_encoding(code: Code) -> Encoding {
    Encoding::from_code(code.to_wire())
}

/// The [`Code`] an error-response carries in its encoding byte: `0`, what a peer from
/// before codes sends, is [`Code::Internal`]. See [`error_response_encoding`].
pub fn error_response_code(encoding: Encoding) -> Code {
    Code::from_wire(encoding.code())
}

/// The kind of socket at either end of a connection, sent in the handshake so that a
/// mismatched pair (a subscriber dialing a reply socket) is refused with a clear reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum SocketType {
    /// A request socket (client side of Request/Reply).
    Req = 1,
    /// A reply socket (server side of Request/Reply).
    Rep = 2,
    /// A publisher socket (server side of Publish/Subscribe).
    Pub = 3,
    /// A subscriber socket (client side of Publish/Subscribe).
    Sub = 4,
}

impl SocketType {
    /// The socket type a client of this type must reach, or the one a server of this type
    /// serves.
    pub const fn peer(self) -> SocketType {
        match self {
            SocketType::Req => SocketType::Rep,
            SocketType::Rep => SocketType::Req,
            SocketType::Pub => SocketType::Sub,
            SocketType::Sub => SocketType::Pub,
        }
    }

    /// The type's name, for errors and logs.
    pub const fn name(self) -> &'static str {
        match self {
            SocketType::Req => "req",
            SocketType::Rep => "rep",
            SocketType::Pub => "pub",
            SocketType::Sub => "sub",
        }
    }

    fn from_code(code: u8) -> Option<SocketType> {
        Some(match code {
            1 => SocketType::Req,
            2 => SocketType::Rep,
            3 => SocketType::Pub,
            4 => SocketType::Sub,
            _ => return None,
        })
    }
}

impl std::fmt::Display for SocketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The body of a [`FrameKind::Hello`] frame: the client's socket type and auth token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The client's socket type.
    pub socket_type: SocketType,
    /// The token the client authenticates with, if any.
    pub auth_token: Option<Bytes>,
}

impl Hello {
    /// Encodes the hello as a frame: one byte of socket type, one byte saying whether a
    /// token follows, then the token.
    pub fn to_frame(&self) -> Frame {
        let token = self.auth_token.as_deref().unwrap_or_default();
        let mut body = BytesMut::with_capacity(2 + token.len());
        body.put_u8(self.socket_type as u8);
        body.put_u8(u8::from(self.auth_token.is_some()));
        body.put_slice(token);
        Frame::new(FrameKind::Hello, 0, body.freeze())
    }

    /// Parses a hello from a frame's payload.
    ///
    /// # Errors
    ///
    /// [`FrameError::Malformed`] if the payload is too short or names no known socket type.
    pub fn parse(payload: &Bytes) -> Result<Hello, FrameError> {
        let malformed = |reason| FrameError::Malformed {
            kind: "hello",
            reason,
        };
        let (&ty, rest) = payload.split_first().ok_or(malformed("empty"))?;
        let socket_type = SocketType::from_code(ty).ok_or(malformed("unknown socket type"))?;
        let (&has_token, _) = rest.split_first().ok_or(malformed("no token flag"))?;
        let auth_token = match has_token {
            0 if payload.len() == 2 => None,
            0 => return Err(malformed("token bytes without the token flag")),
            1 => Some(payload.slice(2..)),
            _ => return Err(malformed("bad token flag")),
        };
        Ok(Hello {
            socket_type,
            auth_token,
        })
    }
}

/// Encodes a [`FrameKind::Welcome`] frame for a server of `socket_type`.
pub fn welcome_frame(socket_type: SocketType) -> Frame {
    Frame::new(
        FrameKind::Welcome,
        0,
        Bytes::copy_from_slice(&[socket_type as u8]),
    )
}

/// Parses the server's socket type from a [`FrameKind::Welcome`] frame's payload.
///
/// # Errors
///
/// [`FrameError::Malformed`] if the payload is not one known socket type byte.
pub fn parse_welcome(payload: &Bytes) -> Result<SocketType, FrameError> {
    match payload.as_ref() {
        [code] => SocketType::from_code(*code).ok_or(FrameError::Malformed {
            kind: "welcome",
            reason: "unknown socket type",
        }),
        _ => Err(FrameError::Malformed {
            kind: "welcome",
            reason: "payload is not one byte",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_with_and_without_token() {
        for token in [
            None,
            Some(Bytes::new()),
            Some(Bytes::from_static(b"client1")),
        ] {
            let hello = Hello {
                socket_type: SocketType::Req,
                auth_token: token,
            };
            assert_eq!(Hello::parse(&hello.to_frame().payload).unwrap(), hello);
        }
    }

    #[test]
    fn hello_with_garbage_is_malformed() {
        for bad in [
            &b""[..],
            b"\x09\x00",
            b"\x01",
            b"\x01\x02",
            b"\x01\x00extra",
        ] {
            assert!(matches!(
                Hello::parse(&Bytes::copy_from_slice(bad)),
                Err(FrameError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn header_for_refuses_oversize_and_stray_topics() {
        assert!(matches!(
            header_for(FrameKind::Request, Encoding::IDENTITY, 1, 0, 101, 100),
            Err(FrameError::TooLarge { len: 101, max: 100 })
        ));
        assert!(matches!(
            header_for(FrameKind::Response, Encoding::IDENTITY, 1, 1, 0, 100),
            Err(FrameError::BadTopic(_))
        ));
        assert!(matches!(
            header_for(FrameKind::Request, Encoding::IDENTITY, 1, 256, 0, 1000),
            Err(FrameError::BadTopic(_))
        ));
        assert!(matches!(
            header_for(
                FrameKind::Publish,
                Encoding::IDENTITY,
                1,
                70_000,
                0,
                usize::MAX
            ),
            Err(FrameError::BadTopic(_))
        ));
    }

    #[test]
    fn welcome_parses_only_one_known_byte() {
        assert_eq!(
            parse_welcome(&welcome_frame(SocketType::Rep).payload).unwrap(),
            SocketType::Rep
        );
        assert!(parse_welcome(&Bytes::from_static(b"")).is_err());
        assert!(parse_welcome(&Bytes::from_static(b"\x02\x02")).is_err());
        assert!(parse_welcome(&Bytes::from_static(b"\x63")).is_err());
    }
}
