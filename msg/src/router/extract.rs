//! Extractors: the arguments of a [`Router`](crate::Router)'s handlers, each taken from
//! the request.
//!
//! A handler is an async function whose arguments all implement [`FromRequestParts`]
//! (they read the request's route, headers, peer, extensions, or the router's state), but
//! the last, which may instead take the body ([`FromRequest`]): [`Bytes`], `String`,
//! [`Message`], or [`Json<T>`](crate::Json).
//!
//! | extractor | what it gives | fails with |
//! |---|---|---|
//! | [`State<S>`] | a clone of the router's state | never |
//! | [`Peer<A>`] | the peer's address, of the socket's address type | [`Code::Internal`], another type |
//! | [`Route`] (or `Option<Route>`) | the route the request named | [`Code::InvalidArgument`], none named |
//! | [`Headers`] | the message's headers (encoding, route) | never |
//! | [`Extension<T>`] | a clone of the value a layer attached | [`Code::Internal`], none attached |
//! | [`Cancelled`] | a future that completes if the call is given up | never |
//! | [`Bytes`] | the payload | never |
//! | `String` | the payload as text | [`Code::InvalidArgument`], not UTF-8 |
//! | [`Message`] | headers and payload | never |
//! | [`Json<T>`](crate::Json) | the payload parsed as JSON | [`Code::InvalidArgument`], with serde's reason |
//!
//! An extractor that fails answers the request with its [`Status`], and the handler does
//! not run. Extraction is synchronous: it reads what the request already holds (the
//! payload has arrived whole, and is decoded by its encoding before the handler).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg_core::{Code, Message};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::AnyPeer;
use crate::{Extensions, Request, Status};

pub use msg_core::{Headers, Metadata, Route};

/// What a request holds besides its payload, as extractors read it.
#[derive(Debug)]
pub struct Parts {
    /// The message's headers: its encoding and route.
    pub headers: Headers,
    /// The peer's address.
    pub peer: AnyPeer,
    /// What layers attached to the request.
    pub extensions: Extensions,
    /// Made when a handler asks for [`Cancelled`]; cancelled if its call is dropped.
    cancel: Option<CancellationToken>,
}

impl Parts {
    /// A request's parts and its payload.
    pub fn split(request: Request<AnyPeer>) -> (Parts, Bytes) {
        let (msg, peer, extensions) = request.into_parts();
        let (headers, payload) = msg.into_parts();
        (
            Parts {
                headers,
                peer,
                extensions,
                cancel: None,
            },
            payload,
        )
    }

    /// Arms the [`Cancelled`] extractors of the call, if any asked: dropped, the guard
    /// fires them; disarmed (the call finished), it does not.
    pub(crate) fn cancel_guard(&mut self) -> Option<tokio_util::sync::DropGuard> {
        self.cancel.take().map(CancellationToken::drop_guard)
    }
}

/// Takes an argument of a handler from the request's parts; see the [module](self).
pub trait FromRequestParts<S>: Sized {
    /// The argument.
    ///
    /// # Errors
    ///
    /// The request cannot give it: the status answers the request, and the handler does
    /// not run.
    fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Status>;
}

mod private {
    /// An extractor that reads the body.
    #[derive(Debug, Clone, Copy)]
    pub enum ViaBody {}
    /// An extractor of the parts, used as the last argument.
    #[derive(Debug, Clone, Copy)]
    pub enum ViaParts {}
}

/// Takes the last argument of a handler from the request's parts and its payload; see the
/// [module](self). Every [`FromRequestParts`] is one too (the `M` type tells them apart).
pub trait FromRequest<S, M = private::ViaBody>: Sized {
    /// The argument.
    ///
    /// # Errors
    ///
    /// As [`FromRequestParts::from_request_parts`].
    fn from_request(parts: &mut Parts, body: Bytes, state: &S) -> Result<Self, Status>;
}

impl<S, T: FromRequestParts<S>> FromRequest<S, private::ViaParts> for T {
    fn from_request(parts: &mut Parts, _body: Bytes, state: &S) -> Result<Self, Status> {
        T::from_request_parts(parts, state)
    }
}

impl<S> FromRequest<S> for Bytes {
    fn from_request(_parts: &mut Parts, body: Bytes, _state: &S) -> Result<Self, Status> {
        Ok(body)
    }
}

impl<S> FromRequest<S> for String {
    fn from_request(_parts: &mut Parts, body: Bytes, _state: &S) -> Result<Self, Status> {
        String::from_utf8(body.into()).map_err(|e| {
            Status::new(
                Code::InvalidArgument,
                format!("the payload is not UTF-8: {}", e.utf8_error()),
            )
        })
    }
}

impl<S> FromRequest<S> for Message {
    fn from_request(parts: &mut Parts, body: Bytes, _state: &S) -> Result<Self, Status> {
        Ok(Message::from_parts(parts.headers.clone(), body))
    }
}

/// The router's state, given with [`Router::with_state`](crate::Router::with_state): a
/// clone of it (keep what is shared behind an `Arc`).
///
/// # Example
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use msg::extract::State;
/// use msg::Router;
///
/// #[derive(Clone, Default)]
/// struct App {
///     hits: Arc<AtomicU64>,
/// }
///
/// async fn hit(State(app): State<App>) -> String {
///     app.hits.fetch_add(1, Ordering::Relaxed).to_string()
/// }
///
/// let router: Router = Router::new().route("hit", hit).with_state(App::default());
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromRequestParts<S> for State<S> {
    fn from_request_parts(_parts: &mut Parts, state: &S) -> Result<Self, Status> {
        Ok(State(state.clone()))
    }
}

/// The address of the request's peer, of the socket's address type: `SocketAddr` over TCP,
/// TLS and QUIC, [`IpcAddr`](crate::ipc::IpcAddr) over IPC,
/// [`AnyAddr`](crate::any::AnyAddr) over an `AnyTransport`. Asked of a socket whose
/// addresses are of another type, it fails with [`Code::Internal`]; a handler that leaves
/// it out serves every transport.
#[derive(Debug, Clone, Copy)]
pub struct Peer<A>(pub A);

impl<S, A: Clone + 'static> FromRequestParts<S> for Peer<A> {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        match parts.peer.downcast_ref::<A>() {
            Some(addr) => Ok(Peer(addr.clone())),
            None => Err(Status::new(
                Code::Internal,
                format!(
                    "the handler asks for a peer address of type `{}`, and this socket's is `{}`",
                    std::any::type_name::<A>(),
                    parts.peer.type_name()
                ),
            )),
        }
    }
}

impl<S> FromRequestParts<S> for AnyPeer {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        Ok(parts.peer.clone())
    }
}

/// The route the request named; a request that named none (one a fallback got) fails with
/// [`Code::InvalidArgument`]. Take `Option<Route>` to accept both.
impl<S> FromRequestParts<S> for Route {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        parts
            .headers
            .route()
            .cloned()
            .ok_or_else(|| Status::new(Code::InvalidArgument, "the request names no route"))
    }
}

impl<S> FromRequestParts<S> for Option<Route> {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        Ok(parts.headers.route().cloned())
    }
}

impl<S> FromRequestParts<S> for Headers {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        Ok(parts.headers.clone())
    }
}

/// The request's metadata (an API key, a tenant): what the client set with
/// [`Message::with_metadata`], or an HTTP client sent as `authorization` and `x-*` headers
/// through [`Router::into_axum`](crate::Router).
///
/// # Example
///
/// ```
/// use msg::{Metadata, Router};
///
/// async fn whoami(metadata: Metadata) -> String {
///     metadata.get_str("x-tenant").unwrap_or("nobody").to_owned()
/// }
///
/// let router: Router = Router::new().route("whoami", whoami);
/// ```
impl<S> FromRequestParts<S> for Metadata {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        Ok(parts.headers.metadata().clone())
    }
}

/// A value a layer attached to the request ([`Request::extensions_mut`]), cloned. As a
/// layer itself, `Extension(value)` attaches a clone of `value` to every request.
///
/// # Example
///
/// ```
/// use msg::extract::Extension;
/// use msg::Router;
///
/// #[derive(Clone)]
/// struct Greeting(&'static str);
///
/// async fn greet(Extension(greeting): Extension<Greeting>, name: String) -> String {
///     format!("{} {name}", greeting.0)
/// }
///
/// let router: Router = Router::new()
///     .route("greet", greet)
///     .layer(Extension(Greeting("hello")));
/// # let _ = router;
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<S, T: Clone + Send + Sync + 'static> FromRequestParts<S> for Extension<T> {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        match parts.extensions.get::<T>() {
            Some(value) => Ok(Extension(value.clone())),
            None => Err(Status::new(
                Code::Internal,
                format!(
                    "no extension of type `{}` on the request: attach one with a layer, such as `.layer(Extension(value))`",
                    std::any::type_name::<T>()
                ),
            )),
        }
    }
}

impl<Svc, T: Clone> tower::Layer<Svc> for Extension<T> {
    type Service = AddExtension<Svc, T>;

    fn layer(&self, inner: Svc) -> Self::Service {
        AddExtension {
            inner,
            value: self.0.clone(),
        }
    }
}

/// Attaches a clone of a value to every request: the service of the
/// [`Extension`] layer.
#[derive(Debug, Clone)]
pub struct AddExtension<Svc, T> {
    inner: Svc,
    value: T,
}

impl<Svc, A, T> tower::Service<Request<A>> for AddExtension<Svc, T>
where
    Svc: tower::Service<Request<A>>,
    T: Clone + Send + Sync + 'static,
{
    type Response = Svc::Response;
    type Error = Svc::Error;
    type Future = Svc::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<A>) -> Self::Future {
        request.extensions_mut().insert(self.value.clone());
        self.inner.call(request)
    }
}

/// A future that completes if the handler's call is given up before it finishes: the
/// client cancelled the request (it timed out, or dropped it), its connection is gone, or
/// the server's shutdown outlasted its linger. The call's own future is dropped then, so
/// this is for work the handler hands elsewhere (a spawned task, a blocking job, a query
/// to stop); if the call finishes, it never completes.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::extract::Cancelled;
///
/// async fn report(cancelled: Cancelled) -> &'static str {
///     tokio::spawn(async move {
///         tokio::select! {
///             _ = cancelled => { /* the client gave up: stop the work */ }
///             _ = tokio::time::sleep(Duration::from_secs(60)) => { /* the work */ }
///         }
///     });
///     "started"
/// }
/// let router: msg::Router = msg::Router::new().route("report", report);
/// # let _ = router;
/// ```
pub struct Cancelled {
    token: CancellationToken,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Cancelled {
    /// Whether the call was given up already.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }
}

impl fmt::Debug for Cancelled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.wait.as_mut().poll(cx)
    }
}

impl<S> FromRequestParts<S> for Cancelled {
    fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Status> {
        let token = parts
            .cancel
            .get_or_insert_with(CancellationToken::new)
            .clone();
        Ok(Cancelled {
            wait: Box::pin(token.clone().cancelled_owned()),
            token,
        })
    }
}
