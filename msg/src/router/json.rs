//! [`Json`]: a payload read or written as JSON (feature `json`, on by default).

use bytes::Bytes;
use msg_core::{Code, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::extract::{FromRequest, Parts};
use super::reply::{IntoReply, Reply};
use crate::Status;

/// A payload as JSON, with `serde_json`: as a handler's last argument, the request parsed
/// into `T` (a payload that does not parse is answered with [`Code::InvalidArgument`] and
/// serde's reason, and the handler does not run); as its return, `T` written as the reply.
///
/// # Example
///
/// ```
/// use msg::{Json, Router};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Deserialize)]
/// struct GetUser {
///     id: u64,
/// }
///
/// #[derive(Serialize)]
/// struct User {
///     id: u64,
///     name: String,
/// }
///
/// async fn get_user(Json(req): Json<GetUser>) -> Json<User> {
///     Json(User { id: req.id, name: "ada".into() })
/// }
///
/// let router: Router = Router::new().route("users.get", get_user);
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

impl<S, T: DeserializeOwned> FromRequest<S> for Json<T> {
    fn from_request(_parts: &mut Parts, body: Bytes, _state: &S) -> Result<Self, Status> {
        serde_json::from_slice(&body).map(Json).map_err(|e| {
            Status::new(
                Code::InvalidArgument,
                format!("the payload is not the JSON expected: {e}"),
            )
        })
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Reply {
        serde_json::to_vec(&self.0).map(Message::new).map_err(|e| {
            Status::new(
                Code::Internal,
                format!("the reply could not be written as JSON: {e}"),
            )
        })
    }
}
