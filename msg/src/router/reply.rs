//! [`IntoReply`]: what a handler returns, made into the reply or the error the client
//! gets.

use bytes::{Bytes, BytesMut};
use msg_core::{Code, Message};

use crate::Status;

/// What a [`Router`](crate::Router)'s handler answers: the reply message, or the failure
/// (a [`Status`]: a [`Code`] and a text) the client gets as
/// [`Error::Remote`](crate::Error::Remote).
pub type Reply = Result<Message, Status>;

/// What a handler may return: anything that becomes a [`Reply`].
///
/// Implemented for the payload types (`Bytes`, `Vec<u8>`, `String`, `&'static str`, `()`
/// for an empty reply), [`Message`] (headers included), [`Json<T>`](crate::Json),
/// [`Status`] and [`Code`] (failures), [`Error`](crate::Error) (a call to another msg
/// service that failed, with its code), and `Result<T, E>` of any two of them. Implement
/// it for your own error types to choose their code and text.
///
/// # Example
///
/// ```
/// use msg::{Code, IntoReply, Status};
/// use msg::reply::Reply;
///
/// enum UserError {
///     NoSuchUser(u64),
///     Database,
/// }
///
/// impl IntoReply for UserError {
///     fn into_reply(self) -> Reply {
///         Err(match self {
///             UserError::NoSuchUser(id) => Status::new(Code::NotFound, format!("no user {id}")),
///             UserError::Database => Status::new(Code::Unavailable, "try again"),
///         })
///     }
/// }
///
/// async fn get_user(id: String) -> Result<String, UserError> {
///     match id.as_str() {
///         "1" => Ok("ada".to_string()),
///         "2" => Err(UserError::Database),
///         _ => Err(UserError::NoSuchUser(id.parse().unwrap_or(0))),
///     }
/// }
/// let router: msg::Router = msg::Router::new().route("users.get", get_user);
/// # let _ = router;
/// ```
pub trait IntoReply {
    /// The reply, or the failure the client gets.
    fn into_reply(self) -> Reply;
}

impl IntoReply for Message {
    fn into_reply(self) -> Reply {
        Ok(self)
    }
}

impl IntoReply for Bytes {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self))
    }
}

impl IntoReply for BytesMut {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self.freeze()))
    }
}

impl IntoReply for Vec<u8> {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self))
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self))
    }
}

impl IntoReply for &'static str {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self))
    }
}

impl IntoReply for &'static [u8] {
    fn into_reply(self) -> Reply {
        Ok(Message::new(self))
    }
}

/// An empty reply.
impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Ok(Message::default())
    }
}

/// A failure with this status.
impl IntoReply for Status {
    fn into_reply(self) -> Reply {
        Err(self)
    }
}

/// A failure with this code, and the code's name as its text.
impl IntoReply for Code {
    fn into_reply(self) -> Reply {
        Err(Status::new(self, self.name()))
    }
}

/// A failure with the error's code (a remote error's own, [`Code::DeadlineExceeded`] for
/// a timeout, [`Code::Internal`] otherwise) and its text.
impl IntoReply for crate::Error {
    fn into_reply(self) -> Reply {
        let code = match &self {
            crate::Error::Remote { code, .. } => *code,
            crate::Error::Timeout { .. } => Code::DeadlineExceeded,
            _ => Code::Internal,
        };
        Err(Status::new(code, self.to_string()))
    }
}

impl<T: IntoReply, E: IntoReply> IntoReply for Result<T, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(reply) => reply.into_reply(),
            Err(e) => e.into_reply(),
        }
    }
}
