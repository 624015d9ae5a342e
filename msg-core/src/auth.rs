//! [`Authenticator`]: the server side's say on who may connect.

use bytes::Bytes;

/// Decides whether a connecting peer may use a server socket.
///
/// A client sends its token in the connection handshake; the server socket calls
/// [`authenticate`](Authenticator::authenticate) with it before it accepts anything else
/// from that peer. A refused peer gets a reject frame with a reason and is disconnected.
/// A client that sends no token is checked against an empty token.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::Authenticator;
///
/// struct AllowList(Vec<Bytes>);
///
/// impl Authenticator for AllowList {
///     fn authenticate(&self, id: &Bytes) -> bool {
///         self.0.contains(id)
///     }
/// }
///
/// let auth = AllowList(vec![Bytes::from_static(b"client1")]);
/// assert!(auth.authenticate(&Bytes::from_static(b"client1")));
/// assert!(!auth.authenticate(&Bytes::from_static(b"mallory")));
/// ```
pub trait Authenticator: Send + Sync + Unpin + 'static {
    /// Whether the peer presenting `id` may connect.
    fn authenticate(&self, id: &Bytes) -> bool;
}
