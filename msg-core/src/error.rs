//! The errors of the wire protocol.

use std::io;
use std::sync::Arc;

/// What can go wrong reading or writing frames of the wire protocol.
///
/// Every variant but [`Io`](FrameError::Io) means the peer broke the protocol: the
/// connection it came on cannot be trusted any more and is closed.
///
/// It is `Clone`: the I/O error of [`Io`](FrameError::Io) is behind an [`Arc`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame did not start with the protocol's magic bytes: the peer does not speak it.
    #[error("bad magic {found:#06x}: the peer does not speak the msg protocol")]
    BadMagic {
        /// The two bytes found where the magic belongs.
        found: u16,
    },
    /// The peer speaks a version of the protocol this side does not.
    #[error("unsupported protocol version {version} (this side speaks {supported})")]
    UnsupportedVersion {
        /// The version the peer sent.
        version: u8,
        /// The version this side speaks.
        supported: u8,
    },
    /// The frame kind is not one the protocol defines.
    #[error("unknown frame kind {kind:#04x}")]
    UnknownKind {
        /// The kind byte received.
        kind: u8,
    },
    /// Flag bits that this version of the protocol does not define were set.
    #[error("reserved flag bits {flags:#04x} are set")]
    ReservedFlags {
        /// The flags byte received.
        flags: u8,
    },
    /// The frame is larger than the configured limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// The frame's length (topic and payload), as announced or as asked to send.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// A topic on a frame kind that carries none, or a topic longer than the wire allows.
    #[error("bad topic: {0}")]
    BadTopic(&'static str),
    /// The stream ended in the middle of a frame.
    #[error("connection closed in the middle of a frame ({buffered} bytes buffered)")]
    Truncated {
        /// How many bytes of the unfinished frame had arrived.
        buffered: usize,
    },
    /// A frame's body does not have the shape its kind requires.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// The kind of the frame.
        kind: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Reading or writing the underlying stream failed.
    #[error("i/o error: {0}")]
    Io(#[source] Arc<io::Error>),
}

impl From<io::Error> for FrameError {
    fn from(e: io::Error) -> Self {
        FrameError::Io(Arc::new(e))
    }
}
