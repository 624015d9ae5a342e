//! [`Code`]: what kind of failure a remote handler reported, carried beside its text.

use std::fmt;

/// What kind of failure a reply socket reported for a request, beside its text: the
/// handler's own choice (a `msg::Status` it failed with), or the
/// socket's (a request it could not decode, a reply over the frame limit).
///
/// On the wire it is one byte, the error-response frame's encoding byte (see
/// [`wire::error_response_encoding`](crate::wire::error_response_encoding)); the numbers
/// are gRPC's, for the codes both name. A peer from before codes sends `0`, read as
/// [`Internal`](Code::Internal).
///
/// # Example
///
/// ```
/// use msg::Code;
///
/// assert_eq!(Code::from_wire(Code::NotFound.to_wire()), Code::NotFound);
/// assert_eq!(Code::from_wire(0), Code::Internal, "a peer from before codes");
/// assert_eq!(Code::from_wire(200), Code::Other(200));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Code {
    /// The handler failed in a way it did not classify, or the peer sent no code. The
    /// default.
    #[default]
    Internal,
    /// The request was given up on (by the handler, or the server shutting it down).
    Cancelled,
    /// The request is not valid: it could not be decoded, or the handler refused it.
    InvalidArgument,
    /// The handler ran out of time.
    DeadlineExceeded,
    /// What the request asked for does not exist.
    NotFound,
    /// The caller may not do this.
    PermissionDenied,
    /// A limit was hit: the reply was larger than the frame limit, or a quota is spent.
    ResourceExhausted,
    /// The service cannot serve now; a later try may succeed.
    Unavailable,
    /// The caller did not say who it is, or not well enough.
    Unauthenticated,
    /// A code msg does not name: an application's own (use 128 to 255), or a peer's newer
    /// one. A number msg names arrives as that name.
    Other(u8),
}

impl Code {
    /// The code of a wire byte: `0` (no code) is [`Internal`](Code::Internal), the numbers
    /// msg names are their variants, any other is [`Other`](Code::Other).
    pub const fn from_wire(byte: u8) -> Code {
        match byte {
            0 | 13 => Code::Internal,
            1 => Code::Cancelled,
            3 => Code::InvalidArgument,
            4 => Code::DeadlineExceeded,
            5 => Code::NotFound,
            7 => Code::PermissionDenied,
            8 => Code::ResourceExhausted,
            14 => Code::Unavailable,
            16 => Code::Unauthenticated,
            other => Code::Other(other),
        }
    }

    /// The code's wire byte.
    pub const fn to_wire(self) -> u8 {
        match self {
            Code::Internal => 13,
            Code::Cancelled => 1,
            Code::InvalidArgument => 3,
            Code::DeadlineExceeded => 4,
            Code::NotFound => 5,
            Code::PermissionDenied => 7,
            Code::ResourceExhausted => 8,
            Code::Unavailable => 14,
            Code::Unauthenticated => 16,
            Code::Other(byte) => byte,
        }
    }

    /// The code's name in snake case, for logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Code::Internal => "internal",
            Code::Cancelled => "cancelled",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
            Code::Other(_) => "other",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Code::Other(byte) => write!(f, "code {byte}"),
            named => f.write_str(named.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wire_byte_reads_as_a_code_that_writes_back_the_same_byte_or_internal() {
        for byte in 0..=u8::MAX {
            let code = Code::from_wire(byte);
            let back = code.to_wire();
            if byte == 0 {
                assert_eq!(code, Code::Internal);
            } else {
                assert_eq!(back, byte, "{code:?}");
            }
        }
    }
}
