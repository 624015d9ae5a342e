//! The errors of the wire protocol.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What can go wrong reading or writing frames of the wire protocol.
///
/// Every variant but [`Io`](FrameError::Io) and [`Oversized`](FrameError::Oversized) means
/// the peer broke the protocol: the connection it came on cannot be trusted any more and is
/// closed.
///
/// It is `Clone`: the I/O error of [`Io`](FrameError::Io) is behind an [`Arc`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame did not start with the protocol's magic bytes: the peer does not speak it.
    BadMagic {
        /// The two bytes found where the magic belongs.
        found: u16,
    },
    /// The peer speaks a version of the protocol this side does not.
    UnsupportedVersion {
        /// The version the peer sent.
        version: u8,
        /// The version this side speaks.
        supported: u8,
    },
    /// The frame kind is not one the protocol defines.
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// Flag bits that this version of the protocol does not define were set.
    ReservedFlags {
        /// The flags byte received.
        flags: u8,
    },
    /// The frame is larger than the configured limit.
    TooLarge {
        /// The frame's length (topic and payload), as announced or as asked to send.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A frame over the limit, of the kind the codec was told to skip
    /// ([`FrameCodec::skip_oversized`](crate::FrameCodec::skip_oversized)). If `skipped`,
    /// its header is read, its body is passed over as it arrives without being kept, and
    /// decoding goes on after it: only this frame is lost, and the receiver may answer its
    /// id. If not (it is longer than the codec skips), nothing is consumed and decoding it
    /// again fails the same way: the receiver may answer its id, and must stop reading.
    Oversized {
        /// The frame's kind.
        kind: crate::FrameKind,
        /// The frame's id.
        id: u64,
        /// The frame's length (topic and payload), as announced.
        len: u64,
        /// The limit in force.
        max: usize,
        /// Whether its body is being passed over, so that decoding may go on.
        skipped: bool,
    },
    /// A topic on a frame kind that carries none, or a topic longer than the wire allows.
    BadTopic(&'static str),
    /// The stream ended in the middle of a frame.
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
    /// A frame's body does not have the shape its kind requires.
    Malformed {
        /// The kind of the frame.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A frame of a kind this end never receives at this point of the conversation (a
    /// request sent to a client, a publication sent to a publisher).
    Unexpected {
        /// The kind received.
        kind: crate::FrameKind,
    },
    /// Reading or writing the underlying stream failed.
    Io(Arc<io::Error>),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic { found } => write!(
                f,
                "bad magic {found:#06x}: the peer does not speak the msg protocol"
            ),
            FrameError::UnsupportedVersion { version, supported } => write!(
                f,
                "unsupported protocol version {version} (this side speaks {supported})"
            ),
            FrameError::UnknownKind { kind } => write!(f, "unknown frame kind {kind:#04x}"),
            FrameError::ReservedFlags { flags } => {
                write!(f, "reserved flag bits {flags:#04x} are set")
            }
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the {max}-byte limit")
            }
            FrameError::Oversized {
                kind,
                id,
                len,
                max,
                skipped,
            } => write!(
                f,
                "{} frame {id} of {len} bytes exceeds the {max}-byte limit{}",
                kind.name(),
                if *skipped { " and was skipped" } else { "" }
            ),
            FrameError::BadTopic(why) => write!(f, "bad topic: {why}"),
            FrameError::Truncated { buffered } => write!(
                f,
                "connection closed in the middle of a frame ({buffered} bytes buffered)"
            ),
            FrameError::Malformed { kind, reason } => write!(f, "malformed {kind} frame: {reason}"),
            FrameError::Unexpected { kind } => write!(f, "unexpected {} frame", kind.name()),
            FrameError::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}

/// The source of [`Io`](FrameError::Io) is the I/O error itself, not the [`Arc`] that
/// shares it.
impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Io(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(Arc::new(e))
    }
}
