//! [`ReqSocket`]: the client side of Request/Reply.

mod endpoint;
mod endpoints;
mod future;
mod lanes;
pub(crate) mod list;
mod pipeline;
pub(crate) mod slots;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use msg_core::{IntoRoute, Message, SocketType, DEFAULT_MAX_FRAME_LEN};
use msg_layers::compression::{Codec, Compressor, Decoders, DEFAULT_MIN_LEN};
use msg_transports::{Traffic, Transport};
use tokio_util::sync::CancellationToken;

use crate::accept::Established;
use crate::counters::ErrorCounters;
use crate::dial::{self, Dialer, End, Session};
use crate::driver::Driver;
use crate::events::{EventSink, Events};
use crate::options::DEFAULT_CONNECT_TIMEOUT;
// The publisher takes its defaults from here.
pub(crate) use crate::options::{DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_HEARTBEAT_TIMEOUT};
use crate::{Backoff, Error};
pub(crate) use endpoint::ReqEndpoint;
use endpoints::{EndpointService, Entry, Health, Shared, Watch};
use lanes::Lanes;
use slots::{SlotId, SlotTable, Ticket};

pub use future::ResponseFuture;
pub use pipeline::Pipeline;

/// Options of a [`ReqSocket`]: the [connection](crate::ConnectionOptions) and
/// [dial](crate::DialOptions) options every socket shares (see [`options`](crate::options)), and
/// its own. Checked once, when the socket is made: a value with no sane meaning (a zero
/// count) is raised to the least one that has one.
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
    /// Most requests in flight on one connection at once. When they are all out,
    /// `poll_ready` is pending and [`ReqSocket::request`] waits. Default: 1024, enough to
    /// keep a loopback or LAN link busy while bounding memory. With
    /// [many endpoints](ReqSocket#many-endpoints), the limit of each endpoint; with more
    /// than one [connection](Self::connections) to an endpoint, of each connection.
    pub max_in_flight: usize,
    /// Largest message sent or received, in bytes: see
    /// [`ConnectionOptions::max_frame_len`](crate::ConnectionOptions::max_frame_len). Default: 64 MiB
    /// ([`DEFAULT_MAX_FRAME_LEN`]).
    pub max_frame_len: usize,
    /// Token sent in the handshake for the server's [`Authenticator`](crate::Authenticator).
    /// Default: none.
    pub auth_token: Option<Bytes>,
    /// Longest one dial may take, the transport's exchange and the hello together: see
    /// [`DialOptions::connect_timeout`](crate::DialOptions::connect_timeout). Default: 10 s.
    pub connect_timeout: Duration,
    /// Longest wait for a reply in [`ReqSocket::request`]. Default: none; with tower, use
    /// `tower::timeout` instead, which applies to every call.
    pub timeout: Option<Duration>,
    /// Delays between redials of a lost server. Default: [`Backoff::default`], redialing
    /// forever.
    pub reconnect: Backoff,
    /// Longest a request made while the socket is disconnected waits for the connection to
    /// come back before it fails with [`Error::NotConnected`] (a request waits at least this,
    /// and at most an eighth more: the socket checks every eighth of it). Default: 10 s: longer than a server takes to restart, short
    /// enough that no caller without a timeout of its own hangs.
    pub reconnect_wait: Duration,
    /// Silence from the server after which a ping is sent. Default: 5 s; zero turns
    /// heartbeats off.
    pub heartbeat_interval: Duration,
    /// Silence from the server after which the connection is given up, its requests failed
    /// and the server redialed. Default: 20 s, four intervals.
    pub heartbeat_timeout: Duration,
    /// Longest [`ReqSocket::close`] waits for the requests in flight and queued. Default:
    /// 2 s.
    pub linger: Duration,
    /// Most connections the socket keeps to one server it [connects](ReqSocket::connect)
    /// to. Past the first, one more is opened each time a request finds 16 requests held
    /// on its connection while the socket is shared by clones, and each clone keeps to one
    /// of them: tasks sharing the socket through clones are spread over the connections,
    /// so that the workers of a multi-threaded runtime each drive one instead of handing
    /// every caller's wake-up across to the one driving the only one. A socket used from
    /// one task, or one request at a time, keeps one connection, as does every endpoint
    /// while the socket has [many](ReqSocket#many-endpoints). `max_in_flight` applies to
    /// each connection. A connection past the first redials only while the first is up,
    /// and gives up after three failed dials in a row (a server that takes one connection
    /// per client gives it to the first); its clones then use the first. Default: `None`,
    /// one per worker thread of the runtime the socket connects on, at most 4 (one on a
    /// current-thread runtime); `Some(1)` keeps ZeroMQ's one connection per endpoint.
    pub connections: Option<usize>,
}

impl Default for ReqOptions {
    fn default() -> Self {
        ReqOptions {
            max_in_flight: 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            auth_token: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: None,
            reconnect: Backoff::default(),
            reconnect_wait: Duration::from_secs(10),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT,
            linger: Duration::from_secs(2),
            connections: None,
        }
    }
}

impl ReqOptions {
    crate::options::option_group!(connection, with_connection, ConnectionOptions, "connection" {
        max_frame_len, heartbeat_interval, heartbeat_timeout
    });

    crate::options::connection_setters!();

    crate::options::option_group!(dial, with_dial, DialOptions, "dial" {
        connect_timeout, auth_token, reconnect
    });

    crate::options::dial_setters!();

    /// The options with every value raised to its least sane one, as the socket takes them.
    pub(crate) fn validated(self) -> Self {
        let connection = self.connection().validated();
        let dial = self.dial().validated();
        let mut options = self.with_connection(connection).with_dial(dial);
        options.max_in_flight = options.max_in_flight.max(1);
        options
    }

    /// Sets [`max_in_flight`](Self::max_in_flight); at least 1.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max.max(1);
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout), which bounds the hello and the
    /// transport's exchange before it together (the name this setting had before).
    pub fn handshake_timeout(self, timeout: Duration) -> Self {
        self.connect_timeout(timeout)
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets [`reconnect_wait`](Self::reconnect_wait).
    pub fn reconnect_wait(mut self, wait: Duration) -> Self {
        self.reconnect_wait = wait;
        self
    }

    /// Sets [`linger`](Self::linger).
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets [`connections`](Self::connections); at least 1.
    pub fn connections(mut self, most: usize) -> Self {
        self.connections = Some(most.max(1));
        self
    }
}

/// Counters of a [`ReqSocket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ReqStats {
    /// Slots held: requests queued, on the wire, or with a reply not yet collected (and
    /// capacity reserved by `poll_ready`). At most
    /// [`max_in_flight`](ReqOptions::max_in_flight) per connection.
    pub in_flight: usize,
    /// Requests waiting to be written, or for a connection.
    pub queued: usize,
    /// Replies that came after their caller had given up, and were dropped.
    pub late_replies: u64,
    /// Whether the socket has a connection now.
    pub connected: bool,
}

/// The socket's state that every clone shares; the last one to go closes the socket.
pub(crate) struct Handle {
    pub(crate) slots: Arc<SlotTable>,
    /// Cancelled when the supervisor (or the connection's future) has stopped.
    pub(crate) done: CancellationToken,
    /// The endpoint's connections past this one, opened under load.
    pub(crate) lanes: Lanes,
}

impl Handle {
    /// A handle with no lanes but its own connection.
    pub(crate) fn new(slots: Arc<SlotTable>, done: CancellationToken) -> Self {
        Handle {
            slots,
            done,
            lanes: Lanes::default(),
        }
    }

    /// This handle and its lanes: every connection of the endpoint.
    pub(crate) fn with_lanes(self: &Arc<Self>) -> Vec<Arc<Handle>> {
        let mut all = vec![self.clone()];
        all.extend(self.lanes.opened().cloned());
        all
    }

    /// The endpoint's counters: the sums over its lanes, connected as its first
    /// connection is.
    fn stats(&self) -> ReqStats {
        let mut sum = self.slots.stats();
        for lane in self.lanes.opened() {
            let one = lane.slots.stats();
            sum.in_flight += one.in_flight;
            sum.queued += one.queued;
            sum.late_replies += one.late_replies;
        }
        sum
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.slots.close();
    }
}

/// How many welcomed connections from reply sockets may wait for a bound request socket
/// to take them as endpoints.
const BIND_BACKLOG: usize = 64;

/// What the reconnect supervisor runs on each connection of one endpoint of a request
/// socket.
struct ReqSession<A> {
    slots: Arc<SlotTable>,
    peer: Arc<Mutex<Option<A>>>,
    /// The endpoint's health and the socket's watch over its endpoints; `None` for a lane
    /// (see [`lanes`]), which counts in neither.
    endpoint: Option<(Arc<Health>, Arc<Watch>)>,
    /// For a lane, the table of the endpoint's first connection: a lost lane redials only
    /// once that is connected.
    first: Option<Arc<SlotTable>>,
}

/// Failed dials in a row after which a lane gives up (see `Maker::lane`).
const LANE_DIALS: u32 = 3;

/// How often a lost lane looks whether the endpoint's first connection is up again.
const LANE_WAIT: Duration = Duration::from_millis(20);

impl<T: Transport> Session<T> for ReqSession<T::Addr> {
    fn serve(
        &mut self,
        conn: Established<T::Io, T::Addr>,
    ) -> impl std::future::Future<Output = End> + Send {
        let sent = endpoints::requests_counter(conn.peer.to_string());
        *self.peer.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.peer);
        let driver = Driver::new(conn.io, ReqEndpoint::new(self.slots.clone()).counting(sent));
        let health = self.endpoint.as_ref().map(|(health, _)| health.clone());
        if let Some(health) = &health {
            health.set_up(true);
        }
        let first = self.first.clone();
        let closed = self.slots.closed_token().clone();
        async move {
            let end = driver.await;
            if let Some(health) = health {
                health.set_up(false);
            }
            if let (End::Lost(_), Some(first)) = (&end, first) {
                // A lane lost: its redial waits for the endpoint's own connection.
                while !first.is_connected() && !closed.is_cancelled() {
                    tokio::time::sleep(LANE_WAIT).await;
                }
            }
            end
        }
    }

    fn sweep(&mut self) {
        self.slots.sweep();
    }

    /// Every failed dial is kept: a request that waits `reconnect_wait` in vain fails with
    /// [`Error::NotConnected`] carrying it. A dial that cannot succeed by trying again (a
    /// certificate refused, a configuration missing, a refusal that will not change) fails
    /// the requests waiting for a connection at once, with its error: a retry policy sees
    /// why, and does not retry it.
    fn dial_failed(&mut self, error: &Error) {
        self.slots.dial_failed(error);
        if let Some((_, watch)) = &self.endpoint {
            watch.dial_failed(error);
        }
    }

    /// Closed, given up, or refused for good: every later request fails with `error`.
    fn stop(&mut self, error: Error) {
        self.slots.stop(error);
    }
}

/// What adding an endpoint to a socket takes, apart from the socket: the options, codecs
/// and counters of the handle that adds it. A socket's discovery keeps one, and no handle.
#[derive(Clone)]
struct Maker<T: Transport> {
    transport: T,
    options: ReqOptions,
    codec: Option<Codec>,
    decoders: Decoders,
    events: Arc<EventSink<T::Addr>>,
    errors: Arc<ErrorCounters>,
}

impl<T: Transport> Maker<T> {
    fn dialer(&self, target: T::Target) -> Dialer<T> {
        Dialer::new(
            self.transport.clone(),
            target,
            SocketType::Req,
            &self.options.connection(),
            self.options.dial(),
            self.events.clone(),
        )
    }

    /// An endpoint's service for the balancer.
    fn service(&self, handle: &Arc<Handle>) -> EndpointService {
        EndpointService::new(handle.clone(), self.codec.clone(), self.errors.clone())
    }

    /// A new endpoint's session and handle, with `lanes`, the handle in `shared` under a
    /// new key.
    fn endpoint(
        &self,
        shared: &Shared<T>,
        target: Option<T::Target>,
        peer: Option<T::Addr>,
        lanes: Lanes,
    ) -> (
        ReqSession<T::Addr>,
        Arc<Handle>,
        CancellationToken,
        endpoints::Key,
    ) {
        let slots = crate::conn::client::slots(&self.options, &self.decoders, &self.errors);
        let health = Health::new(shared.watch.clone());
        let session = ReqSession {
            slots: slots.clone(),
            peer: Arc::new(Mutex::new(peer)),
            endpoint: Some((health.clone(), shared.watch.clone())),
            first: None,
        };
        let done = CancellationToken::new();
        let handle = Arc::new(Handle {
            slots,
            done: done.clone(),
            lanes,
        });
        let key = shared.next_key();
        let entry = Entry {
            key,
            target,
            handle: handle.clone(),
            peer: session.peer.clone(),
            health,
        };
        shared.insert(entry, &|h| self.service(h), self.options.reconnect_wait);
        (session, handle, done, key)
    }

    /// Adds an endpoint that dials `dialer`'s target, starting on `first` if it is
    /// connected already, and keeps it connected. Returns its key.
    fn start(
        &self,
        shared: &Shared<T>,
        dialer: Dialer<T>,
        first: Option<Established<T::Io, T::Addr>>,
    ) -> endpoints::Key {
        let peer = first.as_ref().map(|c| c.peer.clone());
        let target = dialer.target.clone();
        let lanes = self.lanes(&target);
        let (session, handle, done, key) = self.endpoint(shared, Some(target), peer, lanes);
        self.supervise(dialer, session, first, &handle, done);
        key
    }

    /// Runs `session` over `dialer`'s connections in a task, until `handle`'s table is
    /// closed or stopped; `done` is cancelled when it ends.
    fn supervise(
        &self,
        dialer: Dialer<T>,
        session: ReqSession<T::Addr>,
        first: Option<Established<T::Io, T::Addr>>,
        handle: &Handle,
        done: CancellationToken,
    ) {
        let closed = handle.slots.closed_token().clone();
        let sweep = self.options.reconnect_wait / slots::SWEEPS_PER_WAIT;
        tokio::spawn(async move {
            let _finished = done.drop_guard();
            dial::supervise(dialer, session, first, closed, sweep).await;
        });
    }

    /// The lanes of an endpoint that dials `target`: up to
    /// [`ReqOptions::connections`] connections in all (see [`lanes`]).
    fn lanes(&self, target: &T::Target) -> Lanes {
        let extra = lanes::count(self.options.connections) - 1;
        if extra == 0 {
            return Lanes::default();
        }
        // A lane's dials and losses are not the endpoint's events.
        let maker = Maker {
            events: EventSink::new(),
            ..self.clone()
        };
        let target = target.clone();
        Lanes::new(
            extra,
            Box::new(move |first| maker.lane(target.clone(), first)),
        )
    }

    /// Opens a lane to `target` beside the endpoint's first connection, whose table is
    /// `first`: a connection dialed in the background, and redialed only once `first` is
    /// connected again (so that a server that takes one connection per client gives it to
    /// the endpoint's own), giving up after [`LANE_DIALS`] failed dials in a row. It
    /// closes when `first` closes or stops.
    fn lane(&self, target: T::Target, first: &Arc<SlotTable>) -> Arc<Handle> {
        let slots = crate::conn::client::slots(&self.options, &self.decoders, &self.errors);
        let session = ReqSession {
            slots: slots.clone(),
            peer: Arc::new(Mutex::new(None)),
            endpoint: None,
            first: Some(first.clone()),
        };
        let done = CancellationToken::new();
        let handle = Arc::new(Handle::new(slots.clone(), done.clone()));
        let lane = Maker {
            options: ReqOptions {
                reconnect: self.options.reconnect.max_attempts(LANE_DIALS),
                ..self.options.clone()
            },
            ..self.clone()
        };
        lane.supervise(lane.dialer(target), session, None, &handle, done);
        let first = first.closed_token().clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = first.cancelled() => slots.close(),
                _ = slots.closed_token().cancelled() => {}
            }
        });
        handle
    }

    /// Adds an endpoint over `conn`, a connection made and welcomed already (one a bound
    /// socket accepted): nothing redials it, and it leaves the set when the connection
    /// closes. Returns its key.
    fn accepted(
        &self,
        shared: &Arc<Shared<T>>,
        conn: Established<T::Io, T::Addr>,
    ) -> endpoints::Key {
        let (mut session, _handle, done, key) =
            self.endpoint(shared, None, Some(conn.peer.clone()), Lanes::default());
        let set = Arc::downgrade(shared);
        let maker = self.clone();
        tokio::spawn(async move {
            let _finished = done.drop_guard();
            let end = Session::<T>::serve(&mut session, conn).await;
            if let End::Lost(error) = end {
                tracing::debug!(target: "msg", %error, "accepted endpoint lost");
            }
            Session::<T>::stop(&mut session, Error::ConnectionClosed);
            if let Some(shared) = set.upgrade() {
                maker.remove(&shared, |entry| entry.key == key);
            }
        });
        key
    }

    /// Takes out the endpoints `which` picks; returns how many.
    fn remove(&self, shared: &Shared<T>, which: impl FnMut(&Entry<T>) -> bool) -> usize {
        shared.remove(
            which,
            &|h| self.service(h),
            self.options.reconnect_wait,
            self.options.linger,
        )
    }
}

/// A handle's claim on its connection: the connection, its lane, and the slot that
/// `poll_ready` reserved for the next call, if any. The one way a [`ReqSocket`] and a
/// [`SendRequest`](crate::conn::client::SendRequest) take a slot and queue a request.
pub(crate) struct Client {
    handle: Arc<Handle>,
    /// The handle's lane number (see [`lanes`]): 0 for the socket made first, another for
    /// each clone.
    lane: usize,
    /// The slot `poll_ready` reserved, and the lane it is on.
    reserved: Option<(usize, SlotId)>,
    /// This handle's place in the line for a slot, and the lane of that line, while
    /// `poll_ready` waits for one.
    ticket: Option<(usize, Ticket)>,
}

impl Client {
    pub(crate) fn new(handle: Arc<Handle>, lane: usize) -> Self {
        Client {
            handle,
            lane,
            reserved: None,
            ticket: None,
        }
    }

    pub(crate) fn handle(&self) -> &Arc<Handle> {
        &self.handle
    }

    /// The slot table of lane `index`.
    fn slots(&self, index: usize) -> &Arc<SlotTable> {
        self.handle.lanes.table(index, &self.handle.slots)
    }

    /// `tower::Service::poll_ready`: reserves a slot for the next call, or waits in line
    /// for one while `max_in_flight` requests are out.
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if self.reserved.is_some() {
            return Poll::Ready(Ok(()));
        }
        let (index, mut ticket) = match self.ticket.take() {
            Some((index, ticket)) => (index, Some(ticket)),
            None => (self.handle.lanes.pick(self.lane), None),
        };
        let reserved = self.slots(index).poll_reserve(&mut ticket, cx);
        self.ticket = ticket.map(|ticket| (index, ticket));
        let slot = std::task::ready!(reserved)?;
        self.reserved = Some((index, slot));
        Poll::Ready(Ok(()))
    }

    /// `tower::Service::call`: queues `msg`, compressed with `codec` if there is one, in
    /// the reserved slot. A long message is compressed on the blocking pool and queued by
    /// the returned future once it is.
    pub(crate) fn call(
        &mut self,
        msg: Message,
        codec: &Option<Codec>,
        errors: &Arc<ErrorCounters>,
    ) -> ResponseFuture {
        let Some((index, slot)) = self.reserved.take() else {
            return ResponseFuture::failed(Error::NotReady, errors.clone());
        };
        let slots = self.slots(index);
        let msg = match codec {
            Some(codec) if crate::offload::compress_offloaded(codec, &msg) => {
                return ResponseFuture::compressing(slots.clone(), slot, codec, msg);
            }
            Some(codec) => codec.compress(msg),
            None => msg,
        };
        match slots.enqueue(slot, msg) {
            Ok(held) => {
                let waiting = ResponseFuture::waiting(slots.clone(), slot);
                self.handle
                    .lanes
                    .note_load(held, self.lane, &self.handle.slots);
                waiting
            }
            Err(e) => ResponseFuture::failed(e, errors.clone()),
        }
    }
}

/// Sends `msg`, compressed with `codec` if there is one (on the blocking pool if it is
/// long), on lane `lane` of `handle` and waits for its reply: waits for a slot first while
/// `max_in_flight` requests are out.
pub(crate) async fn send_on(
    handle: &Handle,
    lane: usize,
    codec: &Option<Codec>,
    msg: Message,
) -> Result<Message, Error> {
    // Only a long message waits for the blocking pool, in a future of its own: the
    // common path's future stays small (a `FuturesUnordered` of requests moves each).
    let msg = match codec {
        Some(codec) if crate::offload::compress_offloaded(codec, &msg) => {
            Box::pin(crate::offload::compress(codec, msg)).await
        }
        Some(codec) => codec.compress(msg),
        None => msg,
    };
    let slots = handle.lanes.table(handle.lanes.pick(lane), &handle.slots);
    let (slot, held) = Sending {
        slots,
        msg: Some(msg),
        ticket: None,
    }
    .await?;
    let reply = ResponseFuture::registered(slots.clone(), slot);
    handle.lanes.note_load(held, lane, &handle.slots);
    reply.await
}

/// Awaits the future `$send` makes, for at most `$timeout` if that is `Some`. A macro, not a
/// function: with no timeout (the default), the future is awaited where it is made, rather
/// than copied into a wrapper's future and again into the caller's (two copies of a few
/// hundred bytes per request, a twentieth of a request's instructions).
macro_rules! within_timeout {
    ($timeout:expr, $send:expr) => {
        match $timeout {
            None => $send.await,
            timeout => $crate::req::with_timeout(timeout, $send).await,
        }
    };
}
pub(crate) use within_timeout;

/// Waits for `send` with the request timeout, if there is one.
pub(crate) async fn with_timeout(
    timeout: Option<Duration>,
    send: impl std::future::Future<Output = Result<Message, Error>>,
) -> Result<Message, Error> {
    match timeout {
        Some(after) => tokio::time::timeout(after, send)
            .await
            .map_err(|_| Error::Timeout { after: Some(after) })?,
        None => send.await,
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some((index, slot)) = self.reserved.take() {
            self.slots(index).unreserve(slot);
        }
        if let Some((index, ticket)) = self.ticket.take() {
            self.slots(index).cancel(ticket);
        }
    }
}

/// The client side of Request/Reply.
///
/// Many requests may be in flight on its connection; replies are matched by id and may
/// come in any order. A `ReqSocket` is a cheap [`Clone`] handle, so many tasks can share
/// it, and it is a [`tower::Service`] from [`Message`] to [`Message`], so tower's layers
/// stack on it.
///
/// Give each task a clone rather than an `Arc` of one socket: on a multi-threaded runtime,
/// once a clone finds 16 requests out on the connection, the socket opens one more
/// connection to the server per worker thread (up to 4) and spreads its clones over them, each
/// clone keeping to one, so that each worker drives a connection of its own (see
/// [`ReqOptions::connections`], which `Some(1)` turns off). A request from a clone whose
/// connection is not up goes on the first.
///
/// Once connected it keeps itself connected: a lost connection fails the requests on its
/// wire at once with [`Error::ConnectionClosed`], and the socket redials with
/// [`ReqOptions::reconnect`]; requests made meanwhile wait for the new connection (up to
/// [`ReqOptions::reconnect_wait`]). Every clone follows the socket to its new connection.
/// A caller that gives up on a request (a dropped future, a timeout) frees its slot at once,
/// and the server is told to drop the call.
///
/// # Many endpoints
///
/// [`connect`](Self::connect) and [`connect_lazy`](Self::connect_lazy) called again add
/// an endpoint, [`disconnect`](Self::disconnect) removes one, and
/// [`discover`](Self::discover) follows a stream of changes; every clone shares the set.
/// With more than one endpoint (or once one has been removed), each request goes to the
/// endpoint tower's p2c balancer picks: of two endpoints drawn at random, the one with
/// fewer requests in flight. An endpoint whose connection is down stays in the set but is
/// not picked; it is picked again once it has redialed. A request waits for an endpoint
/// to pick, up to [`ReqOptions::reconnect_wait`] while none is up, then fails with
/// [`Error::NotConnected`]; requests on the wire of an endpoint that dies fail with
/// [`Error::ConnectionClosed`], and those that had not left it with
/// [`Error::NotConnected`], which a [`RetryPolicy`](crate::retry::RetryPolicy) sends
/// again, to another endpoint. [`max_in_flight`](ReqOptions::max_in_flight) holds per
/// endpoint; `poll_ready` is ready at once and the request waits in its future instead.
/// A socket with one endpoint sends straight to it, as it always did.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
///
/// use bytes::Bytes;
/// use msg::{serve, Message, RepSocket, ReqSocket, Request, Tcp};
/// use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// let mut rep = RepSocket::new(Tcp::default());
/// rep.bind("127.0.0.1:0").await?;
/// let addr = rep.local_addr().unwrap();
/// tokio::spawn(serve(rep, service_fn(|req: Request<SocketAddr>| async move {
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
    /// Compresses requests, if set.
    codec: Option<Codec>,
    decoders: Decoders,
    /// This handle's own state over the socket's first endpoint, while that is its only
    /// one.
    client: Option<Client>,
    /// This handle's lane number (see [`lanes`]): 0 for the socket made first, and one of
    /// its own for each clone.
    lane: usize,
    /// The endpoints every clone shares: a clone taken before an endpoint was added finds
    /// it here.
    shared: Arc<Shared<T>>,
    events: Arc<EventSink<T::Addr>>,
    /// The `msg_request_errors_total` handles every clone counts in.
    errors: Arc<ErrorCounters>,
    /// The address [`bind`](Self::bind) bound, with the real port.
    local_addr: Option<T::Addr>,
}

impl<T: Transport> Clone for ReqSocket<T> {
    fn clone(&self) -> Self {
        let lane = self.shared.next_lane();
        ReqSocket {
            transport: self.transport.clone(),
            options: self.options.clone(),
            codec: self.codec.clone(),
            decoders: self.decoders.clone(),
            // A clone starts without the original's reserved capacity.
            client: self
                .client
                .as_ref()
                .map(|c| Client::new(c.handle.clone(), lane)),
            lane,
            shared: self.shared.clone(),
            events: self.events.clone(),
            errors: self.errors.clone(),
            local_addr: self.local_addr.clone(),
        }
    }
}

impl<T: Transport> std::fmt::Debug for ReqSocket<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReqSocket")
            .field("peer", &self.peer_addr())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> ReqSocket<T> {
    /// A request socket over `transport`, with default options.
    pub fn new(transport: T) -> Self {
        Self::with_options(transport, ReqOptions::default())
    }

    /// A request socket over `transport` with `options`, each raised to its least sane
    /// value (see [`options`](crate::options)).
    pub fn with_options(mut transport: T, options: ReqOptions) -> Self {
        transport.set_traffic(Traffic::Exchange);
        ReqSocket {
            transport,
            options: options.validated(),
            codec: None,
            decoders: Decoders::default(),
            client: None,
            lane: 0,
            shared: Arc::default(),
            events: EventSink::new(),
            errors: Arc::default(),
            local_addr: None,
        }
    }

    /// Compresses every request of at least
    /// [`compression::DEFAULT_MIN_LEN`](crate::compression::DEFAULT_MIN_LEN) bytes with `compressor` (the
    /// book's way; the tower way is a [`CompressionLayer`](crate::layers::CompressionLayer)
    /// over the socket, which does the same). Replies are decoded whatever their encoding.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "gzip")] { // the codec's feature, on by default
    /// use msg::{compression::GzipCompressor, ReqSocket, Tcp};
    ///
    /// let req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    /// # }
    /// ```
    pub fn with_compressor(mut self, compressor: impl Compressor) -> Self {
        self.codec = Some(Codec::new(Arc::new(compressor), DEFAULT_MIN_LEN));
        self
    }

    /// Registers a codec of your own for the replies this socket decodes (the built-in
    /// codecs need no registration). Call before [`connect`](Self::connect).
    pub fn with_decompressor(mut self, codec: impl Compressor) -> Self {
        self.decoders = self.decoders.register(codec);
        self
    }

    /// The options in force.
    pub fn options(&self) -> &ReqOptions {
        &self.options
    }

    /// The address of a server this socket is connected to: with many endpoints, the
    /// first (in the order they were added) whose connection is up, or else the first
    /// that has had one; with one, the server it is connected to, or was last.
    pub fn peer_addr(&self) -> Option<T::Addr> {
        let entries = self.shared.entries();
        let peer = |entry: &Entry<T>| entry.peer.lock().unwrap_or_else(|e| e.into_inner()).clone();
        entries
            .iter()
            .filter(|entry| entry.health.is_up())
            .find_map(peer)
            .or_else(|| entries.iter().find_map(peer))
    }

    /// The socket's counters; all zero before [`connect`](Self::connect). With many
    /// endpoints, the sums over them (`connected`: whether any is).
    pub fn stats(&self) -> ReqStats {
        if self.shared.balanced.get().is_none() {
            return self.handle().map(|h| h.stats()).unwrap_or_default();
        }
        let mut sum = ReqStats::default();
        for entry in self.shared.entries().iter() {
            let one = entry.handle.stats();
            sum.in_flight += one.in_flight;
            sum.queued += one.queued;
            sum.late_replies += one.late_replies;
            sum.connected |= one.connected;
        }
        sum
    }

    /// The socket's connection events: connected, disconnected with the reason,
    /// reconnecting, dial failures and rejections. See [`Events`].
    pub fn events(&self) -> Events<T::Addr> {
        self.events.subscribe()
    }

    /// Connects to a reply socket at `target`: dials once and completes the handshake,
    /// then keeps that endpoint connected, redialing whenever its connection is lost.
    ///
    /// For TCP, `target` is what a user would write: `"127.0.0.1:4444"`,
    /// `"localhost:4444"`, or a [`SocketAddr`](std::net::SocketAddr). Called again, on
    /// the socket or any clone, it adds one more endpoint (ZeroMQ's way): the socket
    /// balances its requests over all of them (see [Many endpoints](Self#many-endpoints)),
    /// and every clone, made before or after, shares them. A `connect` that fails adds
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the socket is closed. If the first dial fails:
    /// [`Error::Transport`] if the server cannot be reached, [`Error::HandshakeRejected`]
    /// if it refuses this socket (wrong socket type, failed authentication or admission),
    /// [`Error::ConnectTimeout`] if the transport's exchange and the hello take longer
    /// than [`ReqOptions::connect_timeout`], [`Error::NotMsg`] if the server does not
    /// speak msg (or speaks TLS to a plain client, or plain to a TLS one), with a hint.
    pub async fn connect(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        if self.shared.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let maker = self.maker();
        let dialer = maker.dialer(target.into());
        let first = dialer.dial_first().await?;
        maker.start(&self.shared, dialer, Some(first));
        Ok(())
    }

    /// Connects to a reply socket at `target` in the background and returns at once, so
    /// that client and server may start in any order (ZeroMQ's way). Requests made before
    /// the connection is up wait for it, up to [`ReqOptions::reconnect_wait`], then fail
    /// with [`Error::NotConnected`] and why the last dial failed; failed dials are retried
    /// with [`ReqOptions::reconnect`] and reported in [`events`](Self::events), but for an
    /// answer that will not change ([`Error::is_permanent`]: the wrong socket type,
    /// admission's refusal), on which the endpoint stops, emits
    /// [`SocketEvent::GaveUp`](crate::SocketEvent::GaveUp), and fails its requests with it.
    /// Called again, it adds one more endpoint, as [`connect`](Self::connect) does.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the socket is closed.
    pub fn connect_lazy(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        if self.shared.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        let maker = self.maker();
        let dialer = maker.dialer(target.into());
        maker.start(&self.shared, dialer, None);
        Ok(())
    }

    /// Removes the endpoints that dial `target` (as given to [`connect`](Self::connect),
    /// [`connect_lazy`](Self::connect_lazy) or [`discover`](Self::discover)), for every
    /// clone. Returns at once: no new request goes to them, and their requests in flight
    /// get [`ReqOptions::linger`] to be answered, then fail with [`Error::Closed`]. The
    /// socket balances over the endpoints left from then on. Returns how many endpoints
    /// were removed: 0 if none dials `target`.
    ///
    /// Must be called within a tokio runtime.
    pub fn disconnect(&self, target: impl Into<T::Target>) -> usize
    where
        T::Target: PartialEq,
    {
        let target = target.into();
        self.maker()
            .remove(&self.shared, |entry| entry.target.as_ref() == Some(&target))
    }

    /// Adds and removes endpoints as `changes` says, in a task of the socket's that ends
    /// when the socket closes (or `changes` ends): [`Change::Insert`](tower::discover::Change::Insert)
    /// adds an endpoint that dials its target as [`connect_lazy`](Self::connect_lazy)
    /// does (replacing the one of the same key, if any), and
    /// [`Change::Remove`](tower::discover::Change::Remove) removes the endpoint of its key
    /// as [`disconnect`](Self::disconnect) does. The socket balances from this call on: a
    /// request made before the first endpoint is up waits for it, up to
    /// [`ReqOptions::reconnect_wait`]. An error from the stream is logged
    /// (`tracing`, at warn) and changes nothing: the endpoints stay as they are, and the
    /// next item is awaited.
    ///
    /// Any registry fits: [`discover::list`](crate::discover::list) for a fixed list, a
    /// channel's receiver for one of your own, or a DNS name with `msg::discover::Dns`
    /// (feature `dns`), which the socket also asks to resolve again at once whenever every
    /// endpoint is down (at most once a second), not only when the records' TTL runs out.
    ///
    /// Must be called within a tokio runtime.
    ///
    /// # Example
    ///
    /// ```
    /// use bytes::Bytes;
    /// use msg::{discover, ReqSocket, Tcp};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), msg::Error> {
    /// # let a = msg_example_echo().await;
    /// # let b = msg_example_echo().await;
    /// let req = ReqSocket::new(Tcp::default());
    /// req.discover(discover::list([a, b]));
    /// assert_eq!(req.request(Bytes::from("hi")).await?, "hi");
    /// # Ok(())
    /// # }
    /// # async fn msg_example_echo() -> std::net::SocketAddr {
    /// #     let mut rep = msg::RepSocket::new(Tcp::default());
    /// #     rep.bind("127.0.0.1:0").await.unwrap();
    /// #     let addr = rep.local_addr().unwrap();
    /// #     let echo = |req: msg::Request<std::net::SocketAddr>| async move {
    /// #         Ok::<_, std::convert::Infallible>(req.msg().clone())
    /// #     };
    /// #     tokio::spawn(msg::serve(rep, tower::service_fn(echo)));
    /// #     addr
    /// # }
    /// ```
    pub fn discover<S, K, A, E>(&self, changes: S)
    where
        S: futures_core::Stream<Item = Result<tower::discover::Change<K, A>, E>> + Send + 'static,
        K: Hash + Eq + Clone + Send + 'static,
        A: Into<T::Target> + Send + 'static,
        E: Into<tower::BoxError> + Send + 'static,
    {
        let maker = self.maker();
        // The endpoints come in the background: a request made meanwhile waits for them.
        self.shared
            .balance(&|h| maker.service(h), self.options.reconnect_wait);
        // A DNS name is resolved again at once when every endpoint is down (rate limited
        // by the source), not only on its records' TTL.
        #[cfg(feature = "dns")]
        if let Some(dns) = (&changes as &dyn std::any::Any).downcast_ref::<crate::discover::Dns>() {
            let refresh = dns.refresher();
            self.shared.watch.on_all_down(move || refresh.refresh());
        }
        let set = Arc::downgrade(&self.shared);
        let closed = self.shared.closed.clone();
        tokio::spawn(async move {
            use futures_util::StreamExt;
            use tower::discover::Change;
            let mut keys: HashMap<K, endpoints::Key> = HashMap::new();
            let mut changes = std::pin::pin!(changes);
            loop {
                let change = tokio::select! {
                    _ = closed.cancelled() => return,
                    change = changes.next() => change,
                };
                let Some(shared) = set.upgrade() else {
                    return;
                };
                match change {
                    None => return,
                    Some(Ok(Change::Insert(key, target))) => {
                        if let Some(old) = keys.remove(&key) {
                            maker.remove(&shared, |entry| entry.key == old);
                        }
                        let dialer = maker.dialer(target.into());
                        keys.insert(key, maker.start(&shared, dialer, None));
                    }
                    Some(Ok(Change::Remove(key))) => {
                        if let Some(old) = keys.remove(&key) {
                            maker.remove(&shared, |entry| entry.key == old);
                        }
                    }
                    Some(Err(e)) => {
                        let e: tower::BoxError = e.into();
                        tracing::warn!(target: "msg", error = %e, "endpoint discovery failed; the endpoints stay as they are");
                    }
                }
            }
        });
    }

    /// Binds to `target` and takes each reply socket that
    /// [connects](crate::RepSocket::connect) to it as one more endpoint, as ZeroMQ lets
    /// either side bind: requests are balanced over them as over endpoints this socket
    /// dials (see [Many endpoints](#many-endpoints)). This socket says its hello (with
    /// [`ReqOptions::auth_token`]) to each, and the reply socket answers it as its own
    /// listener would. An endpoint leaves when its connection closes; the reply socket
    /// redials, not this side. A request made while no reply socket is connected waits up
    /// to [`ReqOptions::reconnect_wait`], then fails with [`Error::NotConnected`]. The
    /// handshake timeout and the limits of the accept loop are
    /// [`ListenOptions`](crate::ListenOptions)' defaults. Not over QUIC, where a stream
    /// reaches its peer only with its first bytes, and the side that dials says nothing
    /// first.
    ///
    /// # Errors
    ///
    /// [`Error::Transport`] if the address does not resolve or cannot be bound.
    pub async fn bind(&mut self, target: impl Into<T::Target>) -> Result<(), Error> {
        let config = crate::listen::hello_config(
            SocketType::Req,
            &self.options.connection(),
            &crate::ListenOptions::default(),
            self.options.dial().auth_token,
            self.events.clone(),
        );
        let mut listening = crate::listen::listen(
            &self.transport,
            target.into(),
            config,
            self.shared.closed.clone(),
            BIND_BACKLOG,
        )
        .await?;
        self.local_addr = Some(listening.local_addr.clone());
        let maker = self.maker();
        // The endpoints come as reply sockets connect: a request made meanwhile waits.
        self.shared
            .balance(&|h| maker.service(h), self.options.reconnect_wait);
        let set = Arc::downgrade(&self.shared);
        tokio::spawn(async move {
            while let Some(conn) = listening.incoming.recv().await {
                let Some(shared) = set.upgrade() else {
                    return;
                };
                maker.accepted(&shared, conn);
            }
        });
        Ok(())
    }

    /// The address the socket is bound to, with the real port; `None` before
    /// [`bind`](Self::bind).
    pub fn local_addr(&self) -> Option<T::Addr> {
        self.local_addr.clone()
    }

    /// Adds an endpoint over `conn`, a connection made and welcomed already (one a bound
    /// socket accepted from a replier that connects): nothing redials it, and it leaves
    /// the socket when the connection closes.
    #[cfg_attr(not(test), allow(dead_code))] // For `ReqSocket::bind`; tested below.
    pub(crate) fn add_established(&self, conn: Established<T::Io, T::Addr>) {
        self.maker().accepted(&self.shared, conn);
    }

    /// How this handle adds endpoints.
    fn maker(&self) -> Maker<T> {
        Maker {
            transport: self.transport.clone(),
            options: self.options.clone(),
            codec: self.codec.clone(),
            decoders: self.decoders.clone(),
            events: self.events.clone(),
            errors: self.errors.clone(),
        }
    }

    /// The first endpoint, while it is the only one: this handle's, or the one a clone
    /// added since this handle was taken.
    fn handle(&self) -> Option<&Arc<Handle>> {
        match &self.client {
            Some(client) => Some(&client.handle),
            None => self.shared.first.get(),
        }
    }

    /// This handle's state over the first endpoint, made on first use for a handle cloned
    /// before the socket connected.
    fn client_mut(&mut self) -> Option<&mut Client> {
        if self.client.is_none() {
            self.client = self
                .shared
                .first
                .get()
                .map(|handle| Client::new(handle.clone(), self.lane));
        }
        self.client.as_mut()
    }

    /// Closes the socket gracefully: no new request is taken (they fail with
    /// [`Error::Closed`]), the requests in flight and queued get up to
    /// [`ReqOptions::linger`] to be answered, then the connections are closed and
    /// whatever is left fails with [`Error::Closed`]. It closes the socket for every clone,
    /// and ends its [`discover`](Self::discover).
    ///
    /// Dropping every handle closes the socket the same way, in the background; drop never
    /// blocks.
    pub async fn close(&self) {
        self.shared.closed.cancel();
        self.shared.wake_waiting();
        let mut handles: Vec<Arc<Handle>> = self
            .shared
            .entries()
            .iter()
            .map(|entry| entry.handle.clone())
            .collect();
        if handles.is_empty() {
            handles.extend(self.handle().cloned());
        }
        let handles: Vec<Arc<Handle>> = handles.iter().flat_map(Handle::with_lanes).collect();
        for handle in &handles {
            handle.slots.close();
        }
        let all_done = futures_util::future::join_all(handles.iter().map(|h| h.done.cancelled()));
        if tokio::time::timeout(self.options.linger, all_done)
            .await
            .is_err()
        {
            for handle in &handles {
                handle.slots.stop(Error::Closed);
            }
            // The drivers end at once when stopped.
            let all_done =
                futures_util::future::join_all(handles.iter().map(|h| h.done.cancelled()));
            let _ = tokio::time::timeout(Duration::from_secs(1), all_done).await;
        }
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
        let msg = Message::new(payload);
        checked_payload(within_timeout!(self.options.timeout, self.send(msg))?)
    }

    /// Sends `payload` as a request to `route` and waits for its reply: the server's
    /// [`Router`](crate::Router) runs the handler of that route. As
    /// [`request`](Self::request) otherwise.
    ///
    /// # Example
    ///
    /// ```
    /// use msg::{serve, Code, Error, RepSocket, ReqSocket, Router, Tcp};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Error> {
    /// let mut rep = RepSocket::new(Tcp::default());
    /// rep.bind("127.0.0.1:0").await?;
    /// let addr = rep.local_addr().unwrap();
    /// let router = Router::new().route("users.get", |id: String| async move { format!("user {id}") });
    /// tokio::spawn(serve(rep, router));
    ///
    /// let mut req = ReqSocket::new(Tcp::default());
    /// req.connect(addr).await?;
    /// assert_eq!(req.request_to("users.get", "7").await?, "user 7");
    /// let err = req.request_to("users.delete", "7").await.unwrap_err();
    /// assert!(matches!(err, Error::Remote { code: Code::NotFound, .. }));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidRoute`] for a route that is empty or longer than
    /// [`MAX_ROUTE_LEN`](crate::MAX_ROUTE_LEN) (nothing is sent); [`Error::Remote`] with
    /// [`Code::NotFound`](crate::Code::NotFound) from a router that has no such route and
    /// no fallback; otherwise as [`request`](Self::request).
    pub async fn request_to(
        &self,
        route: impl IntoRoute,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        let msg = Message::new(payload).with_route(route.into_route()?);
        checked_payload(within_timeout!(self.options.timeout, self.send(msg))?)
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
    /// # let echo = |req: Request<std::net::SocketAddr>| async move {
    /// #     Ok::<_, std::convert::Infallible>(req.msg().clone())
    /// # };
    /// # tokio::spawn(serve(rep, tower::service_fn(echo)));
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
        // One task's requests: the pipeline keeps to this handle's connection.
        let mut socket = self.clone();
        socket.lane = self.lane;
        if let Some(client) = &mut socket.client {
            client.lane = self.lane;
        }
        Pipeline::new(socket, requests, window)
    }

    /// Sends a message and waits for the reply message, headers included.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request), but the reply's encoding is not checked.
    pub async fn send(&self, msg: Message) -> Result<Message, Error> {
        if let Some(balanced) = self.shared.balanced.get() {
            return ResponseFuture::balanced(balanced.clone(), msg, self.errors.clone()).await;
        }
        let handle = self.handle().ok_or(Error::NotConnected { last: None })?;
        send_on(handle, self.lane, &self.codec, msg).await
    }
}

impl<T: Transport> tower::Service<Message> for ReqSocket<T> {
    type Response = Message;
    type Error = Error;
    type Future = ResponseFuture;

    /// Ready when the socket can take one more request: pending while
    /// [`max_in_flight`](ReqOptions::max_in_flight) requests are out.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        if let Some(balanced) = self.shared.balanced.get() {
            // A slot reserved before the socket balanced is used first.
            if self.client.as_ref().is_none_or(|c| c.reserved.is_none()) {
                return Poll::Ready(balanced.check_open());
            }
        }
        match self.client_mut() {
            Some(client) => client.poll_ready(cx),
            None => Poll::Ready(Err(Error::NotConnected { last: None })),
        }
    }

    fn call(&mut self, msg: Message) -> ResponseFuture {
        match (self.client.as_mut(), self.shared.balanced.get()) {
            (Some(client), _) if client.reserved.is_some() => {
                client.call(msg, &self.codec, &self.errors)
            }
            (_, Some(balanced)) => {
                ResponseFuture::balanced(balanced.clone(), msg, self.errors.clone())
            }
            (Some(client), None) => client.call(msg, &self.codec, &self.errors),
            (None, None) => ResponseFuture::failed(Error::NotReady, self.errors.clone()),
        }
    }
}

/// The payload of a reply, provided no layer left it encoded.
pub(crate) fn checked_payload(reply: Message) -> Result<Bytes, Error> {
    if !reply.encoding().is_identity() {
        return Err(Error::UnsupportedEncoding {
            encoding: reply.encoding(),
        });
    }
    Ok(reply.into_payload())
}

/// Waits for a free slot on behalf of [`send_on`], and queues the request in it, with the
/// caller registered for the reply (see [`SlotTable::poll_send`]).
struct Sending<'a> {
    slots: &'a SlotTable,
    msg: Option<Message>,
    ticket: Option<Ticket>,
}

impl std::future::Future for Sending<'_> {
    type Output = Result<(SlotId, usize), Error>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.slots.poll_send(&mut this.msg, &mut this.ticket, cx)
    }
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.slots.cancel(ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::sync::oneshot;

    use super::*;
    use crate::{serve, RepSocket, Request, Tcp};

    /// An echo server on loopback, until `stop` is sent.
    async fn echo() -> (SocketAddr, oneshot::Sender<()>) {
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let echo = tower::service_fn(|req: Request<SocketAddr>| async move {
            Ok::<_, std::convert::Infallible>(req.msg().clone())
        });
        tokio::spawn(async move {
            let _ = serve(rep, echo)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        (addr, stop)
    }

    /// The way a bound `ReqSocket` takes the repliers that connect to it: a connection
    /// made and welcomed already is one more endpoint, balanced with the others, and
    /// leaves the set when it closes (nothing redials it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_established_connection_is_an_endpoint_until_it_closes() {
        let wait = Duration::from_secs(20);
        let (a, _stop_a) = echo().await;
        let (b, stop_b) = echo().await;
        let req = ReqSocket::new(Tcp::default());
        let maker = req.maker();
        for addr in [a, b] {
            let conn = maker.dialer(addr.into()).dial().await.unwrap();
            req.add_established(conn);
        }
        assert!(req.shared.balanced.get().is_some());
        for i in 0..50 {
            let payload = Bytes::from(format!("request {i}"));
            let reply = tokio::time::timeout(wait, req.request(payload.clone()));
            assert_eq!(reply.await.unwrap().unwrap(), payload);
        }

        stop_b.send(()).unwrap();
        tokio::time::timeout(wait, async {
            while req.shared.entries().len() > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the closed connection leaves the set");
        assert_eq!(req.peer_addr(), Some(a));
        for _ in 0..20 {
            let reply = tokio::time::timeout(wait, req.request(Bytes::from("a")));
            assert_eq!(reply.await.unwrap().unwrap(), "a");
        }
    }
}
