//! The client's half of one connection: [`handshake`] says msg's hello over any stream and
//! returns a [`SendRequest`] handle and the [`Connection`] future that drives the stream.
//!
//! A [`ReqSocket`](crate::ReqSocket) is this plus a dialer and a reconnect supervisor: each
//! of its connections is set up by the same hello and driven by the same driver as the
//! ones [`handshake`] returns.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use msg_core::{HeartbeatConfig, Message, SocketType};
use msg_layers::compression::{Codec, Compressor, Decoders, DEFAULT_MIN_LEN};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::counters::ErrorCounters;
use crate::dial::End;
use crate::driver::Driver;
use crate::handshake;
use crate::io::{heartbeat_config, FramedIo};
use crate::req::slots::SlotTable;
use crate::req::{self, Client, Handle, ReqEndpoint, ReqOptions, ResponseFuture};
use crate::Error;

/// Says the client's hello on `io` as a `socket_type` with `token`, and starts the
/// heartbeat once the server has welcomed it: the way every dialed connection starts.
pub(crate) async fn hello<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<Io>,
    socket_type: SocketType,
    token: Option<Bytes>,
    heartbeat: Option<HeartbeatConfig>,
) -> Result<(), Error> {
    handshake::client(io, socket_type, token).await?;
    io.start_heartbeat(heartbeat);
    Ok(())
}

/// The slot table of a request socket or a [`SendRequest`] with `options`.
pub(crate) fn slots(
    options: &ReqOptions,
    decoders: &Decoders,
    errors: &Arc<ErrorCounters>,
) -> Arc<SlotTable> {
    Arc::new(
        SlotTable::new(
            options.max_in_flight,
            options.max_frame_len,
            decoders.clone(),
        )
        .with_errors(errors.clone()),
    )
}

/// The driver of one welcomed connection, between `slots` and the stream.
pub(crate) fn driver<Io: AsyncRead + AsyncWrite + Unpin>(
    io: FramedIo<Io>,
    slots: Arc<SlotTable>,
) -> Driver<Io, ReqEndpoint> {
    Driver::new(io, ReqEndpoint::new(slots))
}

/// Says msg's hello over `io` with `options` (the auth token, frame limit and heartbeat a
/// [`ReqSocket`](crate::ReqSocket) would use), and returns the handle to send requests
/// with and the connection to drive. Shorthand for
/// [`Builder::new(options).handshake(io)`](Builder::handshake).
///
/// # Errors
///
/// As [`Builder::handshake`].
pub async fn handshake<Io>(
    io: Io,
    options: ReqOptions,
) -> Result<(SendRequest, Connection<Io>), Error>
where
    Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    Builder::new(options).handshake(io).await
}

/// Options for a client connection: a [`ReqOptions`] (of which the connection uses
/// `max_in_flight`, `max_frame_len`, `auth_token`, `connect_timeout` for the hello,
/// `timeout` for [`SendRequest::request`], and the heartbeat), and the compression a
/// [`ReqSocket`](crate::ReqSocket) takes with `with_compressor`.
#[derive(Clone, Debug, Default)]
pub struct Builder {
    options: ReqOptions,
    codec: Option<Codec>,
    decoders: Decoders,
}

impl Builder {
    /// A builder with `options`, each raised to its least sane value.
    pub fn new(options: ReqOptions) -> Self {
        Builder {
            options: options.validated(),
            codec: None,
            decoders: Decoders::default(),
        }
    }

    /// Compresses every request of at least
    /// [`DEFAULT_MIN_LEN`] bytes with `compressor`, as
    /// [`ReqSocket::with_compressor`](crate::ReqSocket::with_compressor) does.
    pub fn compressor(mut self, compressor: impl Compressor) -> Self {
        self.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Registers a codec of your own for the replies (the built-in codecs need none).
    pub fn decompressor(mut self, codec: impl Compressor) -> Self {
        self.decoders = self.decoders.register(codec);
        self
    }

    /// Says msg's hello over `io` and returns the handle to send requests with and the
    /// connection to drive. Nothing is sent or read until the connection is polled: spawn
    /// it (`tokio::spawn(conn)`).
    ///
    /// # Errors
    ///
    /// [`Error::HandshakeRejected`] if the server refuses this client (a wrong token, its
    /// admission), [`Error::SocketTypeMismatch`] if the peer is no reply socket,
    /// [`Error::ConnectTimeout`] if the hello takes longer than
    /// [`ReqOptions::connect_timeout`], [`Error::ConnectionClosed`] or [`Error::Io`] if the
    /// stream fails.
    pub async fn handshake<Io>(&self, io: Io) -> Result<(SendRequest, Connection<Io>), Error>
    where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let options = &self.options;
        let mut io = FramedIo::new(io, options.max_frame_len);
        let heartbeat = heartbeat_config(options.heartbeat_interval, options.heartbeat_timeout);
        let after = options.connect_timeout;
        let token = options.auth_token.clone();
        tokio::time::timeout(after, hello(&mut io, SocketType::Req, token, heartbeat))
            .await
            .map_err(|_| Error::ConnectTimeout { after })??;
        Ok(self.welcomed(io))
    }

    /// The handle and the connection of a stream whose hello is done (said here, or by a
    /// request socket's listener to a reply socket that connected to it).
    pub(crate) fn welcomed<Io>(&self, io: FramedIo<Io>) -> (SendRequest, Connection<Io>)
    where
        Io: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let options = &self.options;
        let errors = Arc::<ErrorCounters>::default();
        let slots = slots(options, &self.decoders, &errors);
        let done = CancellationToken::new();
        let handle = Arc::new(Handle::new(slots.clone(), done.clone()));
        let send = SendRequest {
            client: Client::new(handle, 0),
            codec: self.codec.clone(),
            timeout: options.timeout,
            errors,
        };
        let conn = Connection {
            driver: driver(io, slots.clone()),
            slots,
            done: Some(done.drop_guard()),
        };
        (send, conn)
    }
}

/// The handle to send requests on one client connection: a cheap [`Clone`], and a
/// [`tower::Service`] from [`Message`] to [`Message`] like
/// [`ReqSocket`](crate::ReqSocket).
///
/// When the [`Connection`] ends, the requests in flight fail with
/// [`Error::ConnectionClosed`] (or [`Error::Closed`] after a graceful shutdown), and so does
/// every later one, at once. When every handle is dropped, the connection finishes the
/// requests in flight and closes.
pub struct SendRequest {
    client: Client,
    codec: Option<Codec>,
    timeout: Option<Duration>,
    errors: Arc<ErrorCounters>,
}

impl Clone for SendRequest {
    fn clone(&self) -> Self {
        SendRequest {
            // A clone starts without the original's reserved slot.
            client: Client::new(self.client.handle().clone(), 0),
            codec: self.codec.clone(),
            timeout: self.timeout,
            errors: self.errors.clone(),
        }
    }
}

impl fmt::Debug for SendRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendRequest")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl SendRequest {
    /// Sends `payload` as a request and waits for its reply, as
    /// [`ReqSocket::request`](crate::ReqSocket::request) does: waits for room first while
    /// `max_in_flight` requests are out, and at most [`ReqOptions::timeout`] in all.
    ///
    /// # Errors
    ///
    /// [`Error::Remote`] if the server's handler failed, [`Error::ConnectionClosed`] if the
    /// connection ends first, [`Error::Timeout`], [`Error::FrameTooLarge`], and
    /// [`Error::UnsupportedEncoding`] for a reply whose encoding no layer decoded.
    pub async fn request(&self, payload: Bytes) -> Result<Bytes, Error> {
        let msg = Message::new(payload);
        req::checked_payload(req::within_timeout!(self.timeout, self.send(msg))?)
    }

    /// Sends `payload` as a request to `route` and waits for its reply, as
    /// [`ReqSocket::request_to`](crate::ReqSocket::request_to) does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRoute`] for a route that is empty or too long (nothing is sent);
    /// otherwise as [`request`](Self::request).
    pub async fn request_to(
        &self,
        route: impl msg_core::IntoRoute,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        let msg = Message::new(payload).with_route(route.into_route()?);
        req::checked_payload(req::within_timeout!(self.timeout, self.send(msg))?)
    }

    /// Sends a message and waits for the reply message, headers included.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), but the reply's encoding is not checked and no
    /// timeout applies.
    pub async fn send(&self, msg: Message) -> Result<Message, Error> {
        req::send_on(self.client.handle(), 0, &self.codec, msg).await
    }

    /// Whether the connection has ended: every call fails at once.
    pub fn is_closed(&self) -> bool {
        self.client.handle().done.is_cancelled()
    }

    /// The connection's counters: requests in flight and queued, late replies.
    pub fn stats(&self) -> crate::ReqStats {
        self.client.handle().slots.stats()
    }
}

impl tower::Service<Message> for SendRequest {
    type Response = Message;
    type Error = Error;
    type Future = ResponseFuture;

    /// Ready when the connection can take one more request: pending while
    /// [`max_in_flight`](ReqOptions::max_in_flight) requests are out.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.client.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> ResponseFuture {
        self.client.call(msg, &self.codec, &self.errors)
    }
}

/// Drives one client connection: writes the requests, reads the replies, cancels what the
/// callers gave up on, keeps the heartbeat. Spawn it; it resolves when the connection ends.
///
/// It resolves with `Ok(())` once it was shut down gracefully (every [`SendRequest`]
/// dropped, or [`graceful_shutdown`](Self::graceful_shutdown)) and what was in flight
/// answered, and with the error that ended it otherwise ([`Error::ConnectionClosed`] when
/// the server closed the stream). Either way the requests still in flight fail, and later
/// ones fail at once. Dropping it unfinished ends the connection the same way.
#[must_use = "a connection does nothing until it is polled"]
pub struct Connection<Io> {
    driver: Driver<Io, ReqEndpoint>,
    slots: Arc<SlotTable>,
    /// Tells the handles that the connection has ended; `None` once it has.
    done: Option<DropGuard>,
}

impl<Io> fmt::Debug for Connection<Io> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("ended", &self.done.is_none())
            .finish_non_exhaustive()
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Connection<Io> {
    /// Takes no new request (they fail with [`Error::Closed`]), lets the requests in flight
    /// be answered, then closes the stream; the connection then resolves with `Ok(())`.
    pub fn graceful_shutdown(&mut self) {
        self.slots.close();
    }

    /// The connection has ended with `end`: every later request fails at once.
    fn ended(&mut self, end: End) -> Result<(), Error> {
        self.done = None;
        match end {
            End::Closed => {
                self.slots.stop(Error::Closed);
                Ok(())
            }
            End::Lost(e) => {
                self.slots.stop(Error::ConnectionClosed);
                Err(e)
            }
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Future for Connection<Io> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done.is_none() {
            return Poll::Ready(Err(Error::PolledAfterCompletion));
        }
        let end = std::task::ready!(Pin::new(&mut this.driver).poll(cx));
        Poll::Ready(this.ended(end))
    }
}

impl<Io> Drop for Connection<Io> {
    fn drop(&mut self) {
        if self.done.take().is_some() {
            // Dropped before it ended: what is on the wire and queued fails now.
            self.driver.abandon(End::Lost(Error::ConnectionClosed));
            self.slots.stop(Error::ConnectionClosed);
        }
    }
}
