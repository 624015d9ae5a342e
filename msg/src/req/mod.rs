//! [`ReqSocket`]: the client side of Request/Reply.

mod driver;
mod future;
mod pipeline;
mod shared;

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use msg_core::{Message, SocketType, DEFAULT_MAX_FRAME_LEN};
use msg_transports::{Connected, Transport};

use crate::handshake;
use crate::io::FramedIo;
use crate::Error;
use driver::ReqDriver;
use shared::{Shared, SlotId, Ticket};

pub use future::ResponseFuture;
pub use pipeline::Pipeline;

/// Options of a [`ReqSocket`].
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use msg::ReqOptions;
///
/// let options = ReqOptions::default()
///     .auth_token("client1")
///     .timeout(Duration::from_secs(2))
///     .max_in_flight(4096);
/// assert_eq!(options.max_in_flight, 4096);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReqOptions {
    /// Most requests in flight on the connection at once. When they are all out,
    /// `poll_ready` is pending and [`ReqSocket::request`] waits. Default: 1024, enough to
    /// keep a loopback or LAN link busy while bounding memory.
    pub max_in_flight: usize,
    /// Largest message sent or received, in bytes. Default: 64 MiB
    /// ([`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Token sent in the handshake for the server's [`Authenticator`](crate::Authenticator).
    /// Default: none.
    pub auth_token: Option<Bytes>,
    /// Longest wait for the server to accept the handshake. Default: 10 s.
    pub handshake_timeout: Duration,
    /// Longest wait for a reply in [`ReqSocket::request`]. Default: none; with tower, use
    /// `tower::timeout` instead, which applies to every call.
    pub timeout: Option<Duration>,
}

impl Default for ReqOptions {
    fn default() -> Self {
        ReqOptions {
            max_in_flight: 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            auth_token: None,
            handshake_timeout: Duration::from_secs(10),
            timeout: None,
        }
    }
}

impl ReqOptions {
    /// Sets [`max_in_flight`](Self::max_in_flight); at least 1.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Sets [`max_frame_len`](Self::max_frame_len).
    pub fn max_frame_len(mut self, max: usize) -> Self {
        self.max_frame_len = max;
        self
    }

    /// Sets [`auth_token`](Self::auth_token).
    pub fn auth_token(mut self, token: impl Into<Bytes>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Sets [`handshake_timeout`](Self::handshake_timeout).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The handle to a connection's driver; the last one to go closes the connection.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.close();
    }
}

/// A handle's claim on its connection: the connection, and the slot that `poll_ready`
/// reserved for the next call, if any.
struct Client {
    handle: Arc<Handle>,
    reserved: Option<SlotId>,
    /// This handle's place in the line for a slot, while `poll_ready` waits for one.
    ticket: Option<Ticket>,
}

impl Client {
    fn new(handle: Arc<Handle>) -> Self {
        Client {
            handle,
            reserved: None,
            ticket: None,
        }
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.handle.shared
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(slot) = self.reserved.take() {
            self.shared().unreserve(slot);
        }
        if let Some(ticket) = self.ticket.take() {
            self.shared().cancel(ticket);
        }
    }
}

/// The client side of Request/Reply.
///
/// Many requests may be in flight on its one connection; replies are matched by id and may
/// come in any order. A `ReqSocket` is a cheap [`Clone`] handle to its connection, so many
/// tasks can share it, and it is a [`tower::Service`] from [`Message`] to [`Message`], so
/// tower's layers stack on it.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{serve, Message, RepSocket, ReqSocket, Request, Tcp};
/// use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut rep = RepSocket::new(Tcp::default());
/// rep.bind("127.0.0.1:0").await?;
/// let addr = rep.local_addr().unwrap();
/// tokio::spawn(serve(rep, service_fn(|req: Request| async move {
///     Ok::<_, std::convert::Infallible>(req.msg().clone())
/// })));
///
/// let mut req = ReqSocket::new(Tcp::default());
/// req.connect(addr).await?;
///
/// // The book's way.
/// assert_eq!(req.request(Bytes::from("hello")).await?, "hello");
///
/// // The tower way.
/// let mut svc = ServiceBuilder::new()
///     .timeout(std::time::Duration::from_secs(5))
///     .service(req.clone());
/// let reply = svc.ready().await?.call(Message::from("hi")).await?;
/// assert_eq!(reply.payload(), "hi");
/// # Ok(())
/// # }
/// ```
pub struct ReqSocket<T: Transport> {
    transport: T,
    options: ReqOptions,
    client: Option<Client>,
    peer: Option<T::Addr>,
}

impl<T: Transport> Clone for ReqSocket<T> {
    fn clone(&self) -> Self {
        ReqSocket {
            transport: self.transport.clone(),
            options: self.options.clone(),
            // A clone starts without the original's reserved capacity.
            client: self.client.as_ref().map(|c| Client::new(c.handle.clone())),
            peer: self.peer.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for ReqSocket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqSocket")
            .field("peer", &self.peer)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ReqSocket<T> {
    /// A request socket over `transport`, with default options.
    pub fn new(transport: T) -> Self {
        Self::with_options(transport, ReqOptions::default())
    }

    /// A request socket over `transport` with `options`.
    pub fn with_options(transport: T, options: ReqOptions) -> Self {
        ReqSocket {
            transport,
            options,
            client: None,
            peer: None,
        }
    }

    /// The options in force.
    pub fn options(&self) -> &ReqOptions {
        &self.options
    }

    /// The address of the server this socket is connected to.
    pub fn peer_addr(&self) -> Option<&T::Addr> {
        self.peer.as_ref()
    }

    /// Connects to a reply socket at `target` and completes the handshake. A socket that
    /// was connected before is moved to the new connection; requests in flight on the old
    /// one still complete.
    ///
    /// For TCP, `target` is what a user would write: `"127.0.0.1:4444"`,
    /// `"localhost:4444"`, or a [`SocketAddr`](std::net::SocketAddr).
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the server cannot be reached,
    /// [`Error::HandshakeRejected`] if it refuses this socket (wrong socket type, failed
    /// authentication), [`Error::HandshakeTimeout`] if it does not answer in time.
    pub async fn connect(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let Connected { io, peer } = self.transport.connect(target.into()).await?;
        let mut io = FramedIo::new(io, self.options.max_frame_len);
        let token = self.options.auth_token.clone();
        handshake::within(
            self.options.handshake_timeout,
            handshake::client(&mut io, SocketType::Req, token),
        )
        .await?;
        let shared = Arc::new(Shared::new(
            self.options.max_in_flight,
            self.options.max_frame_len,
        ));
        tokio::spawn(ReqDriver::new(io, shared.clone()));
        tracing::debug!(%peer, "request socket connected");
        self.client = Some(Client::new(Arc::new(Handle { shared })));
        self.peer = Some(peer);
        Ok(())
    }

    /// Sends `payload` as a request and waits for its reply.
    ///
    /// Waits for room first if [`max_in_flight`](ReqOptions::max_in_flight) requests are
    /// already out.
    ///
    /// # Errors
    ///
    /// [`Error::NotConnected`] before [`connect`](Self::connect),
    /// [`Error::ConnectionClosed`] as soon as the connection dies,
    /// [`Error::Remote`] if the server's handler failed, [`Error::Timeout`] after
    /// [`ReqOptions::timeout`], [`Error::FrameTooLarge`] for a payload over the limit, and
    /// [`Error::UnsupportedEncoding`] for a reply whose encoding no layer decoded.
    pub async fn request(&self, payload: Bytes) -> Result<Bytes, Error> {
        let reply = match self.options.timeout {
            Some(after) => tokio::time::timeout(after, self.send(Message::new(payload)))
                .await
                .map_err(|_| Error::Timeout { after })??,
            None => self.send(Message::new(payload)).await?,
        };
        checked_payload(reply)
    }

    /// Sends every payload of `requests`, keeping up to `window` of them in flight, and
    /// yields their replies in the order of the requests.
    ///
    /// This is the fast way to keep many requests in flight from one task. (A
    /// `FuturesUnordered` of [`request`](Self::request) futures works too, but it yields
    /// to the scheduler each time it has polled all its futures without one finishing,
    /// which a full window of fresh requests always does; on a multi-thread runtime each
    /// such yield hands the task to another worker.) [`ReqOptions::timeout`] does not
    /// apply here.
    ///
    /// # Errors
    ///
    /// Each reply is what [`request`](Self::request) would have returned for it. If the
    /// connection fails, the requests in flight fail with [`Error::ConnectionClosed`] and
    /// the stream ends.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use futures_util::{stream, StreamExt};
    /// # use msg::{serve, RepSocket, Request};
    /// use msg::{ReqSocket, Tcp};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), msg::Error> {
    /// # let mut rep = RepSocket::new(Tcp::default());
    /// # rep.bind("127.0.0.1:0").await?;
    /// # let addr = rep.local_addr().unwrap();
    /// # tokio::spawn(serve(rep, tower::service_fn(|req: Request| async move {
    /// #     Ok::<_, std::convert::Infallible>(req.msg().clone())
    /// # })));
    /// let mut req = ReqSocket::new(Tcp::default());
    /// req.connect(addr).await?;
    ///
    /// let requests = stream::iter(0..1000).map(|i| Bytes::from(format!("request {i}")));
    /// let mut replies = req.pipeline(requests, 64);
    /// let mut n = 0;
    /// while let Some(reply) = replies.next().await {
    ///     assert_eq!(reply?, format!("request {n}"));
    ///     n += 1;
    /// }
    /// assert_eq!(n, 1000);
    /// # Ok(())
    /// # }
    /// ```
    pub fn pipeline<S>(&self, requests: S, window: usize) -> Pipeline<T, S>
    where
        S: futures_core::Stream<Item = Bytes>,
    {
        Pipeline::new(self.clone(), requests, window)
    }

    /// Sends a message and waits for the reply message, headers included.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), but the reply's encoding is not checked.
    pub async fn send(&self, msg: Message) -> Result<Message, Error> {
        let client = self.client.as_ref().ok_or(Error::NotConnected)?;
        let shared = client.shared();
        let slot = Reserve {
            shared,
            ticket: None,
        }
        .await?;
        shared.enqueue(slot, msg)?;
        ResponseFuture::waiting(shared.clone(), slot).await
    }
}

impl<T: Transport> tower::Service<Message> for ReqSocket<T> {
    type Response = Message;
    type Error = Error;
    type Future = ResponseFuture;

    /// Ready when the socket can take one more request: pending while
    /// [`max_in_flight`](ReqOptions::max_in_flight) requests are out.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let Some(client) = self.client.as_mut() else {
            return Poll::Ready(Err(Error::NotConnected));
        };
        if client.reserved.is_some() {
            return Poll::Ready(Ok(()));
        }
        let slot = std::task::ready!(client.handle.shared.poll_reserve(&mut client.ticket, cx))?;
        client.reserved = Some(slot);
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, msg: Message) -> ResponseFuture {
        let Some(client) = self.client.as_mut() else {
            return ResponseFuture::failed(Error::NotReady);
        };
        let Some(slot) = client.reserved.take() else {
            return ResponseFuture::failed(Error::NotReady);
        };
        let shared = client.shared();
        match shared.enqueue(slot, msg) {
            Ok(()) => ResponseFuture::waiting(shared.clone(), slot),
            Err(e) => ResponseFuture::failed(e),
        }
    }
}

/// The payload of a reply, provided no layer left it encoded.
fn checked_payload(reply: Message) -> Result<Bytes, Error> {
    if !reply.encoding().is_identity() {
        return Err(Error::UnsupportedEncoding {
            encoding: reply.encoding(),
        });
    }
    Ok(reply.into_payload())
}

/// Waits for a free slot on behalf of [`ReqSocket::send`].
struct Reserve<'a> {
    shared: &'a Shared,
    ticket: Option<Ticket>,
}

impl std::future::Future for Reserve<'_> {
    type Output = Result<SlotId, Error>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.shared.poll_reserve(&mut this.ticket, cx)
    }
}

impl Drop for Reserve<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.shared.cancel(ticket);
        }
    }
}
