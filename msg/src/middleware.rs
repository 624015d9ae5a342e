//! Middleware written as an async function: [`from_fn`] and [`from_fn_with_state`] turn
//! `async fn(request, next)` into a [`tower::Layer`], in the manner of axum's
//! `middleware::from_fn`, for the checks a server writes inline: a credential in the
//! request, a per-client rate limit, request logging.
//!
//! The function gets the [`Request`] and a [`Next`], the rest of the stack (the layers
//! below it and the handler). It may answer at once, without calling `next`: an error
//! carrying a [`Status`](crate::Status) reaches the client as
//! [`Error::Remote`](crate::Error::Remote) with the status's [`Code`](crate::Code), and the
//! handler never sees the request. Or it may change the request, run `next`, and look at
//! or change the reply.
//!
//! The layer works over any `tower::Service<Request<A>>` whose reply converts into a
//! [`Message`] and whose error into a [`BoxError`]: a handler given to
//! [`serve`](crate::serve), a stack of layers, a router. Its service replies with a
//! `Message` and fails with a `BoxError`, so it stacks under and over every layer of
//! [`layers`](crate::layers).
//!
//! # Example
//!
//! A request must carry the API key in its metadata (an HTTP client through
//! [`Router::into_axum`](crate::Router) sends it as an `x-api-key` header).
//!
//! ```
//! use std::net::SocketAddr;
//! use bytes::Bytes;
//! use msg::middleware::{from_fn, Next};
//! use msg::{serve, Code, Message, RepSocket, ReqSocket, Request, Status, Tcp};
//! use tower::{service_fn, BoxError, ServiceBuilder};
//!
//! async fn api_key(
//!     req: Request<SocketAddr>,
//!     next: Next<SocketAddr>,
//! ) -> Result<Message, BoxError> {
//!     if req.message().metadata().get_str("x-api-key") != Some("secret") {
//!         // The handler is not called; the client gets `Error::Remote` with this code.
//!         return Err(Status::new(Code::Unauthenticated, "no API key").into());
//!     }
//!     next.run(req).await
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), msg::Error> {
//! let mut rep = RepSocket::new(Tcp::default());
//! rep.bind("127.0.0.1:0").await?;
//! let addr = rep.local_addr().unwrap();
//! let handler = ServiceBuilder::new()
//!     .layer(from_fn(api_key))
//!     .service(service_fn(|req: Request<SocketAddr>| async move {
//!         Ok::<_, BoxError>(req.payload().clone())
//!     }));
//! tokio::spawn(serve(rep, handler));
//!
//! let mut req = ReqSocket::new(Tcp::default());
//! req.connect(addr).await?;
//! let keyed = Message::from("hello").with_metadata("x-api-key", "secret")?;
//! assert_eq!(req.send(keyed).await?.payload(), "hello");
//! match req.request(Bytes::from("hello")).await {
//!     Err(msg::Error::Remote { code, .. }) => assert_eq!(code, Code::Unauthenticated),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Cost
//!
//! Per request, two allocations besides the function's own future: the [`Next`] (it
//! carries the rest of the stack, whose type the function cannot name) and the future of
//! the rest of the stack.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use msg_core::Message;
use tower::{BoxError, Layer, Service};

use crate::Request;

/// Makes a layer of `f`, an async function of the request and the rest of the stack; see
/// the [module](self) for an example.
///
/// `f` is called as `f(request, next)`; its future returns the reply (anything that
/// converts into a [`Message`]) or an error (anything that converts into a [`BoxError`];
/// a [`Status`](crate::Status) chooses the code the client gets).
pub fn from_fn<F>(f: F) -> FromFnLayer<F> {
    FromFnLayer { f }
}

/// Makes a layer of `f`, as [`from_fn`], that also gets a clone of `state` before the
/// request: `f(state, request, next)`. The state is shared by every clone of the layer and
/// its services, as an `Arc` or a handle is.
///
/// # Example
///
/// Counting requests by the state the application shares:
///
/// ```
/// use std::net::SocketAddr;
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use msg::middleware::{from_fn_with_state, Next};
/// use msg::{Message, Request};
/// use tower::{service_fn, BoxError, ServiceBuilder};
///
/// async fn count(
///     seen: Arc<AtomicU64>,
///     req: Request<SocketAddr>,
///     next: Next<SocketAddr>,
/// ) -> Result<Message, BoxError> {
///     seen.fetch_add(1, Ordering::Relaxed);
///     next.run(req).await
/// }
///
/// let seen = Arc::new(AtomicU64::new(0));
/// let handler = ServiceBuilder::new()
///     .layer(from_fn_with_state(seen.clone(), count))
///     .service(service_fn(|req: Request<SocketAddr>| async move {
///         Ok::<_, BoxError>(req.into_message())
///     }));
/// # let _ = handler;
/// ```
pub fn from_fn_with_state<S, F>(state: S, f: F) -> FromFnWithStateLayer<S, F> {
    FromFnWithStateLayer { state, f }
}

/// The rest of the stack under a [`from_fn`] middleware: the layers below it and the
/// handler, ready for one request.
pub struct Next<A> {
    inner: Box<dyn Run<A>>,
}

impl<A> Next<A> {
    /// Runs the rest of the stack on `request` and returns its reply, or its error as a
    /// [`BoxError`] (a handler's [`Status`](crate::Status) comes back as it was, so a
    /// middleware may pass it on or read its code).
    pub async fn run(self, request: Request<A>) -> Result<Message, BoxError> {
        self.inner.run(request).await
    }
}

impl<A> fmt::Debug for Next<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").finish_non_exhaustive()
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Message, BoxError>> + Send>>;

/// A service that has said it is ready, taken out of the middleware to serve one request.
trait Run<A>: Send {
    fn run(self: Box<Self>, request: Request<A>) -> BoxFuture;
}

struct Ready<I>(I);

impl<I, A> Run<A> for Ready<I>
where
    I: Service<Request<A>> + Send,
    I::Response: Into<Message>,
    I::Error: Into<BoxError>,
    I::Future: Send + 'static,
{
    fn run(self: Box<Self>, request: Request<A>) -> BoxFuture {
        let Ready(mut inner) = *self;
        let call = inner.call(request);
        Box::pin(async move { call.await.map(Into::into).map_err(Into::into) })
    }
}

/// Takes the inner service that `poll_ready` made ready, leaving a fresh clone in its place
/// for the next request (the ready one may hold a permit, which must go with its call).
fn take_ready<I, A>(inner: &mut I) -> Next<A>
where
    I: Service<Request<A>> + Clone + Send + 'static,
    I::Response: Into<Message>,
    I::Error: Into<BoxError>,
    I::Future: Send + 'static,
{
    let fresh = inner.clone();
    let ready = std::mem::replace(inner, fresh);
    Next {
        inner: Box::new(Ready(ready)),
    }
}

/// A layer that runs an async function before the rest of the stack; see [`from_fn`].
#[derive(Clone)]
pub struct FromFnLayer<F> {
    f: F,
}

impl<F> fmt::Debug for FromFnLayer<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnLayer").finish_non_exhaustive()
    }
}

impl<F: Clone, I> Layer<I> for FromFnLayer<F> {
    type Service = FromFn<F, I>;

    fn layer(&self, inner: I) -> Self::Service {
        FromFn {
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service of a [`FromFnLayer`]: the function, over `I`.
#[derive(Clone)]
pub struct FromFn<F, I> {
    f: F,
    inner: I,
}

impl<F, I: fmt::Debug> fmt::Debug for FromFn<F, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<F, I, A, Fut, R, E> Service<Request<A>> for FromFn<F, I>
where
    F: Fn(Request<A>, Next<A>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Message>,
    E: Into<BoxError>,
    I: Service<Request<A>> + Clone + Send + 'static,
    I::Response: Into<Message>,
    I::Error: Into<BoxError>,
    I::Future: Send + 'static,
{
    type Response = Message;
    type Error = BoxError;
    type Future = ResponseFuture<Fut>;

    /// Ready when the rest of the stack is: a concurrency limit below the middleware holds
    /// back the reading of requests as it would without it.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<A>) -> Self::Future {
        let next = take_ready(&mut self.inner);
        ResponseFuture {
            inner: (self.f)(request, next),
        }
    }
}

/// A layer that runs an async function, given a state, before the rest of the stack; see
/// [`from_fn_with_state`].
#[derive(Clone)]
pub struct FromFnWithStateLayer<S, F> {
    state: S,
    f: F,
}

impl<S: fmt::Debug, F> fmt::Debug for FromFnWithStateLayer<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnWithStateLayer")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, F: Clone, I> Layer<I> for FromFnWithStateLayer<S, F> {
    type Service = FromFnWithState<S, F, I>;

    fn layer(&self, inner: I) -> Self::Service {
        FromFnWithState {
            state: self.state.clone(),
            f: self.f.clone(),
            inner,
        }
    }
}

/// The service of a [`FromFnWithStateLayer`]: the function and its state, over `I`.
#[derive(Clone)]
pub struct FromFnWithState<S, F, I> {
    state: S,
    f: F,
    inner: I,
}

impl<S: fmt::Debug, F, I: fmt::Debug> fmt::Debug for FromFnWithState<S, F, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFnWithState")
            .field("state", &self.state)
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, I, A, Fut, R, E> Service<Request<A>> for FromFnWithState<S, F, I>
where
    S: Clone,
    F: Fn(S, Request<A>, Next<A>) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    R: Into<Message>,
    E: Into<BoxError>,
    I: Service<Request<A>> + Clone + Send + 'static,
    I::Response: Into<Message>,
    I::Error: Into<BoxError>,
    I::Future: Send + 'static,
{
    type Response = Message;
    type Error = BoxError;
    type Future = ResponseFuture<Fut>;

    /// Ready when the rest of the stack is, as [`FromFn`].
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<A>) -> Self::Future {
        let next = take_ready(&mut self.inner);
        ResponseFuture {
            inner: (self.f)(self.state.clone(), request, next),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of a [`from_fn`] middleware's call: the function's own future, its reply
    /// made a [`Message`] and its error a [`BoxError`].
    pub struct ResponseFuture<Fut> {
        #[pin]
        inner: Fut,
    }
}

impl<Fut> fmt::Debug for ResponseFuture<Fut> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<Fut, R, E> Future for ResponseFuture<Fut>
where
    Fut: Future<Output = Result<R, E>>,
    R: Into<Message>,
    E: Into<BoxError>,
{
    type Output = Result<Message, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let outcome = ready!(self.project().inner.poll(cx));
        Poll::Ready(outcome.map(Into::into).map_err(Into::into))
    }
}
