//! [`Status`]: a handler's error with a [`Code`] for the client.

use std::fmt;

use msg_core::Code;

/// A handler's error that says what kind of failure it is: the client gets
/// [`Error::Remote`](crate::Error::Remote) with this code and this message.
///
/// A handler given to [`serve`](crate::serve) fails with it (as its error, or as the
/// source of its error anywhere down the chain); any other error reaches the client as
/// [`Code::Internal`]. A stream server answers with
/// [`PendingRequest::respond_status`](crate::PendingRequest::respond_status).
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{Code, Request, Status};
///
/// async fn lookup(req: Request) -> Result<Bytes, Status> {
///     match req.payload().as_ref() {
///         b"known" => Ok(Bytes::from("found")),
///         _ => Err(Status::new(Code::NotFound, "no such key")),
///     }
/// }
/// # let _ = tower::service_fn(lookup);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

impl Status {
    /// A failure of kind `code`, described by `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }

    /// The kind of failure.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The text the client gets.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// The message alone: what the client reads as the remote error's text.
impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Status {}

/// The code of a handler's error: the code of the first [`Status`] (or remote error, for a
/// handler that forwards one) in its chain of sources; [`Code::DeadlineExceeded`] for
/// tower's timeout; [`Code::Internal`] for anything else.
pub(crate) fn code_of(error: &(dyn std::error::Error + 'static)) -> Code {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(status) = e.downcast_ref::<Status>() {
            return status.code;
        }
        if let Some(crate::Error::Remote { code, .. }) = e.downcast_ref::<crate::Error>() {
            return *code;
        }
        if e.is::<tower::timeout::error::Elapsed>() {
            return Code::DeadlineExceeded;
        }
        next = e.source();
    }
    Code::Internal
}
