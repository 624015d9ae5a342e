//! Admission: the server side's say, after the hello, on who may use a socket (ZeroMQ's ZAP
//! role).
//!
//! Admission is a [`tower::Service`] from an [`AdmissionRequest`] (the client's address,
//! socket type and token) to a [`Verdict`]. It is asynchronous, so a check may ask a
//! database or another service; it runs in the connection's own handshake task, under the
//! socket's handshake timeout, so a slow check holds up no other client. A refused client is
//! sent the reason and disconnected before it can send anything else, and its `connect`
//! fails with [`Error::HandshakeRejected`](crate::Error::HandshakeRejected) naming it.
//!
//! [`RepSocket::with_admission`](crate::RepSocket::with_admission) and
//! [`PubSocket::with_admission`](crate::PubSocket::with_admission) take any such service;
//! the book's `with_auth(authenticator)` installs one made from an
//! [`Authenticator`].
//!
//! # Example
//!
//! ```
//! use std::net::SocketAddr;
//! use msg::admission::{AdmissionRequest, Verdict};
//! use msg::{RepSocket, Tcp};
//! use tower::service_fn;
//!
//! // Only clients on loopback that present a token.
//! let admission = service_fn(|req: AdmissionRequest<SocketAddr>| async move {
//!     Ok::<_, std::convert::Infallible>(match req.token() {
//!         Some(_) if req.peer().ip().is_loopback() => Verdict::Admit,
//!         Some(_) => Verdict::reject("only loopback clients"),
//!         None => Verdict::reject("a token is required"),
//!     })
//! });
//! let rep = RepSocket::new(Tcp::default()).with_admission(admission);
//! ```

use std::fmt;
use std::future::Ready;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg_core::{Authenticator, SocketType};
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};

/// What admission decides on: who is asking, as what, with what token.
#[derive(Debug, Clone)]
pub struct AdmissionRequest<A> {
    peer: A,
    socket_type: SocketType,
    token: Option<Bytes>,
}

impl<A> AdmissionRequest<A> {
    /// A request, as a socket makes one from a client's hello; useful to test a service.
    pub fn new(peer: A, socket_type: SocketType, token: Option<Bytes>) -> Self {
        AdmissionRequest {
            peer,
            socket_type,
            token,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> &A {
        &self.peer
    }

    /// The client's socket type (always the server's peer type: a mismatch is refused
    /// before admission is asked).
    pub fn socket_type(&self) -> SocketType {
        self.socket_type
    }

    /// The token the client sent in its hello, if any.
    pub fn token(&self) -> Option<&Bytes> {
        self.token.as_ref()
    }
}

/// Admission's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The client may use the socket.
    Admit,
    /// The client is refused; the reason is sent to it.
    Reject {
        /// Why, in words for the client.
        reason: String,
    },
}

impl Verdict {
    /// A rejection with `reason`.
    pub fn reject(reason: impl Into<String>) -> Self {
        Verdict::Reject {
            reason: reason.into(),
        }
    }
}

/// What `with_admission` takes: a cloneable tower service from [`AdmissionRequest`] to
/// [`Verdict`] that can move between threads. Implemented for every such service.
pub trait AdmissionService<A>:
    Service<AdmissionRequest<A>, Response = Verdict, Error = Self::Failure, Future = Self::Decision>
    + Clone
    + Send
    + Sync
    + 'static
{
    /// The service's error.
    type Failure: Into<BoxError>;
    /// The service's future.
    type Decision: std::future::Future<Output = Result<Verdict, Self::Failure>> + Send + 'static;
}

impl<A, S> AdmissionService<A> for S
where
    S: Service<AdmissionRequest<A>, Response = Verdict> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Failure = S::Error;
    type Decision = S::Future;
}

/// Admission as a socket keeps it: any service, boxed once.
pub(crate) type Admission<A> = BoxCloneSyncService<AdmissionRequest<A>, Verdict, BoxError>;

/// Boxes an admission service.
pub(crate) fn boxed<A: Send + 'static>(service: impl AdmissionService<A>) -> Admission<A> {
    BoxCloneSyncService::new(service.map_err(Into::into))
}

/// What admission made of a client.
pub(crate) enum Decision {
    /// Its verdict.
    Given(Verdict),
    /// The service failed to give one (a database it asks was down, say): the client is
    /// refused for now with this reason, and may try again.
    Failed(String),
}

/// Decides with `admission`.
pub(crate) async fn decide<A>(admission: &Admission<A>, request: AdmissionRequest<A>) -> Decision {
    match admission.clone().oneshot(request).await {
        Ok(verdict) => Decision::Given(verdict),
        Err(e) => Decision::Failed(format!("admission failed: {e}")),
    }
}

/// The book's [`Authenticator`] as admission: the token (empty if none was sent) must pass
/// [`Authenticator::authenticate`].
#[derive(Clone)]
pub struct Authenticate {
    auth: Arc<dyn Authenticator>,
}

impl Authenticate {
    /// Admission by `auth`.
    pub fn new(auth: impl Authenticator) -> Self {
        Authenticate {
            auth: Arc::new(auth),
        }
    }
}

impl fmt::Debug for Authenticate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticate").finish_non_exhaustive()
    }
}

impl<A> Service<AdmissionRequest<A>> for Authenticate {
    type Response = Verdict;
    type Error = std::convert::Infallible;
    type Future = Ready<Result<Verdict, std::convert::Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: AdmissionRequest<A>) -> Self::Future {
        let token = request.token.unwrap_or_default();
        std::future::ready(Ok(if self.auth.authenticate(&token) {
            Verdict::Admit
        } else {
            Verdict::reject("authentication failed")
        }))
    }
}
