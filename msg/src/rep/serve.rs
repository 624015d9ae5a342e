//! [`serve`]: runs a [`tower::Service`] on every connection of a [`RepSocket`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use msg_core::Message;
use msg_transports::Transport;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{BoxError, Service};

use super::calls::ServiceCalls;
use super::{RepSocket, Request};
use crate::Error;

/// Serves every connection of `socket` with `service`, in the manner of `axum::serve`.
///
/// Each connection gets a clone of the service. Its requests are handed to the service as
/// they arrive and run concurrently; each reply goes back to the peer and id it belongs to.
/// A handler error reaches the client as [`Error::Remote`] carrying the error's text. A
/// service that is not ready (a concurrency limit, say) stops the reading of new requests
/// until it is, so back-pressure reaches the clients.
///
/// What the clones share, every connection shares: tower's `ConcurrencyLimit` clones hold
/// one semaphore, so `.concurrency_limit(256)` caps the calls running on the whole socket
/// at 256, however many clients connect; state a layer keeps per clone (a buffer of its
/// own, say) is per connection.
///
/// # Return Value
///
/// A [`Serve`] to `.await` or spawn, which serves until the socket's listener fails. Call
/// [`with_graceful_shutdown`](Serve::with_graceful_shutdown) on it to stop on a signal.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Duration;
/// use msg::{serve, RepSocket, Request, Tcp};
/// use tower::{service_fn, ServiceBuilder};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), msg::Error> {
/// let mut rep = RepSocket::new(Tcp::default());
/// rep.bind("127.0.0.1:0").await?;
///
/// let handler = ServiceBuilder::new()
///     .concurrency_limit(256)
///     .timeout(Duration::from_secs(1))
///     .service(service_fn(|req: Request<SocketAddr>| async move {
///         Ok::<_, std::convert::Infallible>(req.msg().clone())
///     }));
///
/// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
/// let server = tokio::spawn(
///     serve(rep, handler).with_graceful_shutdown(async { stopped.await.ok(); }),
/// );
/// stop.send(()).unwrap();
/// server.await.unwrap()?;
/// # Ok(())
/// # }
/// ```
pub fn serve<T, S, R>(socket: RepSocket<T>, service: S) -> Serve<T, S>
where
    T: Transport,
    S: Service<Request<T::Addr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    Serve {
        parts: Some((socket, service)),
        running: None,
    }
}

/// A server about to run; see [`serve`].
#[must_use = "a server does nothing until it is awaited"]
pub struct Serve<T: Transport, S> {
    parts: Option<(RepSocket<T>, S)>,
    running: Option<ServeFuture>,
}

// No field is pinned structurally: the server runs in a boxed future of its own.
impl<T: Transport, S> Unpin for Serve<T, S> {}

impl<T: Transport, S> fmt::Debug for Serve<T, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Serve")
            .field("socket", &self.parts.as_ref().map(|(socket, _)| socket))
            .finish_non_exhaustive()
    }
}

impl<T: Transport, S> Serve<T, S> {
    /// Stops accepting when `signal` completes, and shuts every connection down
    /// gracefully: it tells its client the last request it processes (a go-away), finishes
    /// the calls started, and closes. Requests read and not started, and those the client
    /// sent after, fail on the client with [`Error::NotProcessed`], which is safe to retry.
    /// Calls still running after the socket's [`linger`](crate::RepOptions::linger) are
    /// dropped, so a hung handler does not hold the shutdown; then it returns.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<T, S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let (socket, service) = self
            .parts
            .expect("with_graceful_shutdown after the server ran");
        WithGracefulShutdown {
            parts: Some((socket, service, signal)),
            running: None,
        }
    }
}

/// A server that stops on a signal; see [`Serve::with_graceful_shutdown`].
#[must_use = "a server does nothing until it is awaited"]
pub struct WithGracefulShutdown<T: Transport, S, F> {
    parts: Option<(RepSocket<T>, S, F)>,
    running: Option<ServeFuture>,
}

// No field is pinned structurally: the server runs in a boxed future of its own.
impl<T: Transport, S, F> Unpin for WithGracefulShutdown<T, S, F> {}

impl<T: Transport, S, F> fmt::Debug for WithGracefulShutdown<T, S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("socket", &self.parts.as_ref().map(|(socket, _, _)| socket))
            .finish_non_exhaustive()
    }
}

type ServeFuture = Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

impl<T, S, R> Future for Serve<T, S>
where
    T: Transport,
    S: Service<Request<T::Addr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let fut = this.running.get_or_insert_with(|| {
            let (socket, service) = this.parts.take().expect("polled after completion");
            Box::pin(run(socket, service, std::future::pending::<()>()))
        });
        fut.as_mut().poll(cx)
    }
}

impl<T, S, R, F> Future for WithGracefulShutdown<T, S, F>
where
    T: Transport,
    S: Service<Request<T::Addr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let fut = this.running.get_or_insert_with(|| {
            let (socket, service, signal) = this.parts.take().expect("polled after completion");
            Box::pin(run(socket, service, signal))
        });
        fut.as_mut().poll(cx)
    }
}

async fn run<T, S, R, F>(mut socket: RepSocket<T>, service: S, signal: F) -> Result<(), Error>
where
    T: Transport,
    S: Service<Request<T::Addr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
    F: Future<Output = ()> + Send,
{
    let mut incoming = socket.take_incoming().ok_or(Error::NotBound)?;
    let serving = socket.serving();
    let linger = socket.options.linger;
    let shutdown = CancellationToken::new();
    let abort = CancellationToken::new();
    let tracker = TaskTracker::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        let conn = tokio::select! {
            biased;
            _ = signal.as_mut() => break,
            conn = incoming.recv() => match conn {
                Some(conn) => conn,
                None => break,
            },
        };
        crate::conn::server::spawn(
            &tracker,
            conn,
            ServiceCalls::new(service.clone()),
            &serving,
            &shutdown,
            &abort,
            socket.events.clone(),
        );
    }
    // Stop accepting: the accept task ends when its channel closes, dropping the listener.
    drop(incoming);
    drop(socket);
    // Each connection tells its client which request is the last it processes, finishes
    // those, and closes. Calls still running after the linger are dropped with their
    // connections: a hung handler does not hold the shutdown.
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(linger, tracker.wait()).await.is_err() {
        tracing::warn!(
            ?linger,
            "graceful shutdown: calls still running after the linger dropped"
        );
        abort.cancel();
        tracker.wait().await;
    }
    Ok(())
}

/// A server's request: its response is compressed on the way out; the request itself came
/// in decoded by the socket.
impl<A, R: Into<Message>> msg_layers::compression::Compress<R> for Request<A> {
    type Output = Message;

    fn compress_request(self, _codec: &msg_layers::compression::Codec) -> Self {
        self
    }

    fn compress_response(response: R, codec: &msg_layers::compression::Codec) -> Message {
        codec.compress(response.into())
    }
}

/// A handler call's span: the request's size, encoding and route, and the peer.
impl<A: fmt::Display> msg_layers::trace::Describe for Request<A> {
    const KIND: &'static str = "handle";

    fn describe(&self, span: &tracing::Span) {
        span.record("size", self.msg().len());
        span.record(
            "encoding",
            tracing::field::display(self.message().encoding()),
        );
        span.record("peer", tracing::field::display(self.peer()));
        if let Some(route) = self.message().route() {
            span.record("route", route.as_str());
        }
    }

    fn payload_len(&self) -> usize {
        self.msg().len()
    }
}
