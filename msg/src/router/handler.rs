//! [`Handler`]: plain async functions as a [`Router`](crate::Router)'s routes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower::BoxError;

use super::extract::{FromRequest, FromRequestParts, Parts};
use super::reply::IntoReply;
use super::AnyPeer;
use crate::{Message, Request};

/// The future of a handler's call: its reply, or its failure (a
/// [`Status`](crate::Status) inside).
///
/// The arguments are extracted when the handler is called, before this future is made: a
/// call whose extractor fails is answered at once, without an allocation, and the one that
/// runs boxes only the function's own future and its arguments.
pub struct HandlerFuture(Inner);

enum Inner {
    /// Answered already: an extractor failed.
    Ready(Option<Result<Message, BoxError>>),
    /// The function's call.
    Running(Pin<Box<dyn Future<Output = Result<Message, BoxError>> + Send>>),
}

impl HandlerFuture {
    /// A future that completes with `outcome` when first polled.
    pub fn ready(outcome: Result<Message, BoxError>) -> Self {
        HandlerFuture(Inner::Ready(Some(outcome)))
    }

    /// A future that runs `future`.
    pub fn new(future: impl Future<Output = Result<Message, BoxError>> + Send + 'static) -> Self {
        HandlerFuture(Inner::Running(Box::pin(future)))
    }
}

impl fmt::Debug for HandlerFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HandlerFuture")
    }
}

impl Future for HandlerFuture {
    type Output = Result<Message, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Running(future) => future.as_mut().poll(cx),
            Inner::Ready(outcome) => Poll::Ready(
                outcome
                    .take()
                    .unwrap_or_else(|| Err(crate::Error::PolledAfterCompletion.into())),
            ),
        }
    }
}

/// An async function a [`Router`](crate::Router) can route to: up to eight arguments that
/// are [extractors](crate::extract), all [`FromRequestParts`] but the last, which may
/// take the body ([`FromRequest`]), returning anything that is [`IntoReply`].
///
/// `T` lists the argument types, and `S` is the router's state; neither is named by hand.
/// The extractors run in order; the first that fails answers the request with its status,
/// and the function is not called.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::extract::{Route, State};
/// use msg::Router;
///
/// async fn none() -> &'static str { "ok" }
/// async fn body(payload: Bytes) -> Bytes { payload }
/// async fn both(State(prefix): State<String>, route: Route, text: String) -> String {
///     format!("{prefix} {route} {text}")
/// }
///
/// let router: Router = Router::new()
///     .route("none", none)
///     .route("body", body)
///     .route("both", both)
///     .with_state("prefix".to_string());
/// # let _ = router;
/// ```
pub trait Handler<T, S>: Clone + Send + Sync + Sized + 'static {
    /// Extracts the arguments from `request`, calls the function, and makes its return the
    /// reply.
    fn call(self, request: Request<AnyPeer>, state: S) -> HandlerFuture;
}

/// The outcome of a call, as the router answers it.
fn finish(reply: impl IntoReply) -> Result<Message, BoxError> {
    reply.into_reply().map_err(BoxError::from)
}

impl<F, Fut, Res, S> Handler<((),), S> for F
where
    F: FnOnce() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Res> + Send + 'static,
    Res: IntoReply,
    S: Send + 'static,
{
    fn call(self, request: Request<AnyPeer>, _state: S) -> HandlerFuture {
        drop(request);
        HandlerFuture::new(async move { finish(self().await) })
    }
}

macro_rules! impl_handler {
    ([$($part:ident),*], $last:ident) => {
        #[allow(non_snake_case)]
        impl<F, Fut, Res, S, M, $($part,)* $last> Handler<(M, $($part,)* $last,), S> for F
        where
            F: FnOnce($($part,)* $last) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Res> + Send + 'static,
            Res: IntoReply,
            S: Send + 'static,
            $($part: FromRequestParts<S> + Send + 'static,)*
            $last: FromRequest<S, M> + Send + 'static,
        {
            fn call(self, request: Request<AnyPeer>, state: S) -> HandlerFuture {
                let (mut parts, body) = Parts::split(request);
                $(
                    let $part = match $part::from_request_parts(&mut parts, &state) {
                        Ok(value) => value,
                        Err(status) => return HandlerFuture::ready(Err(BoxError::from(status))),
                    };
                )*
                let $last = match $last::from_request(&mut parts, body, &state) {
                    Ok(value) => value,
                    Err(status) => return HandlerFuture::ready(Err(BoxError::from(status))),
                };
                drop(state);
                // Fires the call's `Cancelled` extractors if the future is dropped before
                // the function returns.
                let guard = parts.cancel_guard();
                drop(parts);
                HandlerFuture::new(async move {
                    let reply = self($($part,)* $last).await;
                    if let Some(guard) = guard {
                        guard.disarm();
                    }
                    finish(reply)
                })
            }
        }
    };
}

impl_handler!([], T1);
impl_handler!([T1], T2);
impl_handler!([T1, T2], T3);
impl_handler!([T1, T2, T3], T4);
impl_handler!([T1, T2, T3, T4], T5);
impl_handler!([T1, T2, T3, T4, T5], T6);
impl_handler!([T1, T2, T3, T4, T5, T6], T7);
impl_handler!([T1, T2, T3, T4, T5, T6, T7], T8);
