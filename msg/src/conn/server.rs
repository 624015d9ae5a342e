//! The server's half of one connection: [`serve_connection`] says msg's server hello over
//! any stream (checking the client's token, if asked to) and serves every request on it
//! with a [`tower::Service`].
//!
//! [`serve`](crate::serve) and a [`RepSocket`](crate::RepSocket) read as a stream are this
//! plus an accept loop: each accepted connection is welcomed by the same hello and served
//! by the same connection as the ones [`serve_connection`] runs.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::wire::Hello;
use msg_core::{Authenticator, HeartbeatConfig, Message, SocketType};
use msg_layers::compression::{Codec, Compressor, DEFAULT_MIN_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{BoxError, Service};

use crate::accept::Established;
use crate::admission::{self, Admission, AdmissionService, Authenticate};
use crate::dial::End;
use crate::events::EventSink;
use crate::handshake;
use crate::io::{heartbeat_config, FramedIo};
use crate::rep::{Calls, Coding, Connection, RepOptions, Request, ServiceCalls};
use crate::Error;

/// Reads the client's hello on `io`, asks `admission`, and welcomes (then starts the
/// heartbeat) or refuses it (with `refuse` as the reason, if given): the way every
/// accepted connection starts.
pub(crate) async fn hello<Io, A>(
    io: &mut FramedIo<Io>,
    socket_type: SocketType,
    peer: &A,
    admission: Option<&Admission<A>>,
    refuse: Option<&str>,
    heartbeat: Option<HeartbeatConfig>,
) -> Result<Hello, Error>
where
    Io: AsyncRead + AsyncWrite + Unpin,
    A: Clone + Send + 'static,
{
    let hello = handshake::server(io, socket_type, peer, admission, refuse).await?;
    io.start_heartbeat(heartbeat);
    Ok(hello)
}

/// How a reply socket serves each of its connections.
#[derive(Clone, Debug)]
pub(crate) struct Serving {
    pub(crate) max_in_flight: usize,
    pub(crate) coding: Coding,
}

/// Serves a welcomed connection with `calls` in a task of `tracker`, until it ends,
/// `shutdown` drains it, or `abort` drops it: the one way a reply socket serves a
/// connection.
pub(crate) fn spawn<Io, A, C>(
    tracker: &TaskTracker,
    conn: Established<Io, A>,
    calls: C,
    serving: &Serving,
    shutdown: &CancellationToken,
    abort: &CancellationToken,
    events: Arc<EventSink<A>>,
) where
    Io: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    A: Clone + fmt::Display + Send + Sync + 'static,
    C: Calls<A> + Send + 'static,
{
    let conn = Connection::new(
        conn.io,
        calls,
        conn.peer,
        serving.max_in_flight,
        serving.coding.clone(),
        Some(shutdown.clone().cancelled_owned()),
    );
    let abort = abort.clone();
    tracker.spawn(async move {
        tokio::select! {
            _ = conn.run(events) => {}
            _ = abort.cancelled() => {}
        }
    });
}

/// Serves every request on `io` with `service`, with default [`RepOptions`] and no
/// authentication: shorthand for
/// [`Builder::new(RepOptions::default()).serve_connection(io, peer, service)`](Builder::serve_connection).
pub fn serve_connection<Io, A, S, R>(io: Io, peer: A, service: S) -> ServeConnection
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    A: Clone + fmt::Display + Send + Sync + 'static,
    S: Service<Request<A>, Response = R> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    Builder::new(RepOptions::default()).serve_connection(io, peer, service)
}

/// Options for a server connection: a [`RepOptions`] (of which the connection uses
/// `max_in_flight_per_conn`, `max_frame_len`, `handshake_timeout`, the heartbeat, and
/// `linger` for a graceful shutdown), the authentication or admission, and the
/// compression a [`RepSocket`](crate::RepSocket) takes.
pub struct Builder<A = SocketAddr> {
    options: RepOptions,
    coding: Coding,
    admission: Option<Admission<A>>,
}

impl<A> Clone for Builder<A> {
    fn clone(&self) -> Self {
        Builder {
            options: self.options.clone(),
            coding: self.coding.clone(),
            admission: self.admission.clone(),
        }
    }
}

impl<A> fmt::Debug for Builder<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("options", &self.options)
            .field("admission", &self.admission.is_some())
            .finish_non_exhaustive()
    }
}

impl<A: Clone + fmt::Display + Send + Sync + 'static> Builder<A> {
    /// A builder with `options`, each raised to its least sane value.
    pub fn new(options: RepOptions) -> Self {
        let options = options.validated();
        Builder {
            coding: Coding::new(options.max_frame_len),
            options,
            admission: None,
        }
    }

    /// Requires the client to pass `auth` in its hello, as
    /// [`RepSocket::with_auth`](crate::RepSocket::with_auth) does.
    pub fn with_auth(self, auth: impl Authenticator) -> Self {
        self.with_admission(Authenticate::new(auth))
    }

    /// Decides with `admission` whether the client, once it said hello, is served; see
    /// [`admission`](mod@crate::admission).
    pub fn with_admission(mut self, admission: impl AdmissionService<A>) -> Self {
        self.admission = Some(admission::boxed(admission));
        self
    }

    /// Compresses every response of at least
    /// [`DEFAULT_MIN_LEN`] bytes with `compressor`.
    pub fn compressor(mut self, compressor: impl Compressor) -> Self {
        self.coding.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Registers a codec of your own for the requests (the built-in codecs need none).
    pub fn decompressor(mut self, codec: impl Compressor) -> Self {
        self.coding.decoders = std::mem::take(&mut self.coding.decoders).register(codec);
        self
    }

    /// Says the server's hello over `io` to the client at `peer` (which is what
    /// [`Request::peer`] gives the handler), then serves every request on it with
    /// `service`, concurrently, with cancels, heartbeats and a go-away on shutdown, as
    /// [`serve`](crate::serve) serves each of its connections.
    ///
    /// The returned future resolves with `Ok(())` when the client closes the connection or
    /// a [graceful shutdown](ServeConnection::graceful_shutdown) has drained it, and with
    /// the error otherwise: the hello's ([`Error::Refused`] for a client refused by the
    /// authentication, [`Error::HandshakeTimeout`]) or the connection's.
    pub fn serve_connection<Io, S, R>(&self, io: Io, peer: A, service: S) -> ServeConnection
    where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        S: Service<Request<A>, Response = R> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError> + 'static,
        R: Into<Message> + 'static,
    {
        let shutdown = CancellationToken::new();
        let options = &self.options;
        let heartbeat = heartbeat_config(options.heartbeat_interval, options.heartbeat_timeout);
        let (after, linger) = (options.handshake_timeout, options.linger);
        let serving = Serving {
            max_in_flight: options.max_in_flight_per_conn,
            coding: self.coding.clone(),
        };
        let admission = self.admission.clone();
        let max_frame_len = options.max_frame_len;
        let signal = shutdown.clone();
        let run = async move {
            let mut io = FramedIo::new(io, max_frame_len);
            let welcome = hello(
                &mut io,
                SocketType::Rep,
                &peer,
                admission.as_ref(),
                None,
                heartbeat,
            );
            tokio::time::timeout(after, welcome)
                .await
                .map_err(|_| Error::HandshakeTimeout { after })??;
            let conn = Connection::new(
                io,
                ServiceCalls::new(service),
                peer,
                serving.max_in_flight,
                serving.coding,
                Some(signal.clone().cancelled_owned()),
            );
            // Calls still running a linger after a graceful shutdown began are dropped.
            let lingered = async {
                signal.cancelled().await;
                tokio::time::sleep(linger).await;
            };
            tokio::select! {
                end = conn.serve() => match end {
                    End::Closed | End::Lost(Error::ConnectionClosed) => Ok(()),
                    End::Lost(e) => Err(e),
                },
                _ = lingered => Ok(()),
            }
        };
        ServeConnection {
            run: Box::pin(run),
            shutdown,
        }
    }
}

/// A connection being served; see [`Builder::serve_connection`]. Await it or spawn it.
#[must_use = "a connection is not served until it is polled"]
pub struct ServeConnection {
    run: Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>,
    shutdown: CancellationToken,
}

impl fmt::Debug for ServeConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServeConnection")
            .field("shutting_down", &self.shutdown.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl ServeConnection {
    /// Shuts the connection down gracefully, as
    /// [`Serve::with_graceful_shutdown`](crate::Serve::with_graceful_shutdown) does each of
    /// its connections: no new request is read, the client is told the last request this
    /// server processes (the later ones fail on it with [`Error::NotProcessed`]), the
    /// calls started finish (for at most the [`linger`](RepOptions::linger)), and the
    /// connection closes. Call it from anywhere with a
    /// [`shutdown_handle`](Self::shutdown_handle), once the connection is spawned.
    pub fn graceful_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A handle that starts the [graceful shutdown](Self::graceful_shutdown), for a
    /// connection already spawned.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown.clone())
    }
}

/// Starts the graceful shutdown of a [`ServeConnection`] that is running elsewhere; see
/// [`ServeConnection::graceful_shutdown`]. Clones start the same shutdown.
#[derive(Clone, Debug)]
pub struct ShutdownHandle(CancellationToken);

impl ShutdownHandle {
    /// Shuts the connection down gracefully, as
    /// [`ServeConnection::graceful_shutdown`] does. Calling it again does nothing more.
    pub fn graceful_shutdown(&self) {
        self.0.cancel();
    }

    /// Whether the shutdown has been started.
    pub fn is_shutting_down(&self) -> bool {
        self.0.is_cancelled()
    }
}

impl Future for ServeConnection {
    type Output = Result<(), Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.run.as_mut().poll(cx)
    }
}
