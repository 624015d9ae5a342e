//! Helpers shared by the integration tests: bounded waits, an echo server, a raw client
//! that speaks the wire protocol by hand, a relay that injects faults, and the
//! [`fixture`]s that run one test body over every transport.

pub mod fixture;
pub mod recorded;
pub mod tap;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use msg::wire::{Frame, FrameCodec, FrameKind, Hello};
use msg::{serve, Message, PubSocket, RepSocket, Request, SocketType, SubSocket, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};
use tower::{service_fn, BoxError, Service};

/// The longest any single step of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`]; the failure names the
/// line of the step that did not finish.
#[track_caller]
pub fn within<F: Future>(fut: F) -> impl Future<Output = F::Output> {
    let step = std::panic::Location::caller();
    async move {
        tokio::time::timeout(WAIT, fut)
            .await
            .unwrap_or_else(|_| panic!("the step at {step} did not finish in time"))
    }
}

/// Binds a reply socket on loopback and serves `service` on it with `msg::serve`, in a task
/// of its own. Returns the socket's address.
pub async fn serve_on_loopback<S, R>(service: S) -> SocketAddr
where
    S: Service<Request<SocketAddr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    serve_socket_on_loopback(RepSocket::new(Tcp::default()), service).await
}

/// Binds `rep` (configured as a test needs: admission, options, a transport over TCP) on
/// loopback and serves `service` on it with `msg::serve`, in a task of its own. Returns its
/// address.
pub async fn serve_socket_on_loopback<T, S, R>(mut rep: RepSocket<T>, service: S) -> SocketAddr
where
    T: msg::Transport<Addr = SocketAddr>,
    T::Target: From<&'static str>,
    S: Service<Request<SocketAddr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, service));
    addr
}

/// Binds a reply socket on loopback that echoes every request, served by `msg::serve`.
pub async fn echo_server() -> SocketAddr {
    echo_on_loopback(RepSocket::new(Tcp::default())).await
}

/// Binds `rep` on loopback and echoes every request on it, served by `msg::serve`.
pub async fn echo_on_loopback<T>(rep: RepSocket<T>) -> SocketAddr
where
    T: msg::Transport<Addr = SocketAddr>,
    T::Target: From<&'static str>,
{
    serve_socket_on_loopback(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    )
    .await
}

/// Binds `publisher` on loopback and connects `sub` to it, subscribed to `topic`, each step
/// within [`WAIT`]: a pub/sub pair over any transport on TCP addresses, ready to publish.
pub async fn subscribed_on_loopback<P, S>(
    mut publisher: PubSocket<P>,
    mut sub: SubSocket<S>,
    topic: &str,
) -> (PubSocket<P>, SubSocket<S>)
where
    P: msg::Transport<Addr = SocketAddr>,
    P::Target: From<&'static str>,
    S: msg::Transport,
    S::Target: From<SocketAddr>,
{
    within(publisher.bind("127.0.0.1:0")).await.expect("bind");
    let addr = publisher.local_addr().expect("bound");
    within(sub.connect(addr)).await.expect("connect");
    within(sub.subscribe(topic)).await.expect("subscribe");
    (publisher, sub)
}

/// Retries `payload` until `req`, redialing, is answered again: at most 400 tries 20 ms
/// apart, each failure a typed connection error, all within [`WAIT`].
pub async fn answered_again<T: msg::Transport>(req: &msg::ReqSocket<T>, payload: &'static str) {
    within(async {
        for _ in 0..400 {
            match req.request(Bytes::from(payload)).await {
                Ok(reply) => {
                    assert_eq!(reply, payload);
                    return;
                }
                Err(e) => assert!(e.is_connection_error(), "{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the client never came back");
    })
    .await
}

/// A loopback address bound but not listening, held for as long as the returned socket
/// lives: a dial to it is refused, and no other test can take the port meanwhile (as it
/// could one that was bound and released).
pub fn refusing_addr() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
    socket
        .bind("127.0.0.1:0".parse().expect("an address"))
        .expect("bind");
    let addr = socket.local_addr().expect("bound");
    (socket, addr)
}

/// Encodes one frame as it goes on the wire.
pub fn encode(frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::new()
        .encode(frame, &mut buf)
        .expect("encodable");
    buf
}

/// A raw TCP client that has completed the handshake as `socket_type`, or the server's
/// answer if it was not a welcome.
pub async fn raw_client(addr: SocketAddr, socket_type: SocketType) -> Result<TcpStream, Frame> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let hello = Hello {
        socket_type,
        auth_token: None,
    };
    stream
        .write_all(&encode(hello.to_frame()))
        .await
        .expect("write hello");
    let answer = read_frame(&mut stream).await.expect("an answer to hello");
    if answer.kind == FrameKind::Welcome {
        Ok(stream)
    } else {
        Err(answer)
    }
}

/// Reads one frame, or `None` if the server closed the connection first.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    read_frame_buffered(stream, &mut BytesMut::new()).await
}

/// Reads one frame, keeping bytes of later frames in `buf` for the next call.
pub async fn read_frame_buffered(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    let mut codec = FrameCodec::new();
    loop {
        if let Some(frame) = codec.decode(buf).expect("server sends valid frames") {
            return Some(frame);
        }
        match within(stream.read_buf(buf)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Waits until the server closes `stream`, discarding what it sends first; panics if it
/// stays open past [`WAIT`], naming the caller's line.
#[track_caller]
pub fn assert_closed_by_server(stream: &mut TcpStream) -> impl Future<Output = ()> + '_ {
    let step = std::panic::Location::caller();
    async move {
        let mut sink = vec![0u8; 4096];
        let closed = tokio::time::timeout(WAIT, async {
            loop {
                match stream.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        closed
            .await
            .unwrap_or_else(|_| panic!("the server did not close the stream of {step} in time"))
    }
}

/// A request frame.
pub fn request_frame(id: u64, payload: &'static [u8]) -> Frame {
    Frame::new(FrameKind::Request, id, Bytes::from_static(payload))
}

/// What a [`Relay`] does with the bytes of its links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Bytes pass both ways.
    Open,
    /// Bytes are read and dropped both ways, as by a frozen NAT or a peer that lost power:
    /// the connections stay open, nothing arrives.
    Frozen,
    /// Nothing is read either way: bytes wait in the kernel's buffers, and the senders
    /// fill up, until the link flows again. Nothing is lost.
    Stalled,
}

/// Faults a [`Relay`] injects into the bytes it passes, set by the test at any time.
#[derive(Debug, Default)]
struct Faults {
    /// Each chunk read is held this long before it is passed on.
    delay: std::time::Duration,
    /// Chunks are passed on in writes of at most this many bytes.
    rechunk: Option<usize>,
    /// The client-to-server byte this many bytes from now is flipped.
    corrupt_in: Option<u64>,
}

/// Where a [`Relay`] passes its links on to: a TCP port, a Unix socket's path, or a UDP
/// port (for QUIC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// A server listening on TCP (plain or TLS).
    Tcp(SocketAddr),
    /// A server listening on a Unix socket.
    Unix(std::path::PathBuf),
    /// A server on UDP (QUIC).
    Udp(SocketAddr),
}

impl From<SocketAddr> for Upstream {
    fn from(addr: SocketAddr) -> Self {
        Upstream::Tcp(addr)
    }
}

/// A stream a relay passes bytes through: a TCP or a Unix socket.
trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Duplex for S {}

/// Where a relay takes its clients' links.
enum Front {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

impl Front {
    async fn accept(&self) -> std::io::Result<Box<dyn Duplex>> {
        match self {
            Front::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
            Front::Unix(listener) => {
                let (stream, _) = listener.accept().await?;
                Ok(Box::new(stream))
            }
        }
    }
}

/// Opens the server's side of a new link.
async fn dial_upstream(upstream: &Upstream) -> std::io::Result<Box<dyn Duplex>> {
    match upstream {
        Upstream::Tcp(addr) => {
            let stream = TcpStream::connect(*addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream))
        }
        Upstream::Unix(path) => Ok(Box::new(tokio::net::UnixStream::connect(path).await?)),
        Upstream::Udp(_) => Err(std::io::Error::other("a stream relay has no UDP upstream")),
    }
}

/// A relay on loopback between clients and one server, that a test can freeze, resume,
/// cut and point at a restarted server. Every connection made to it is relayed to the
/// server as a link of its own. It relays TCP ([`start`](Relay::start)), Unix sockets
/// ([`start_unix`](Relay::start_unix)), and UDP datagrams for QUIC
/// ([`start_udp`](Relay::start_udp)), where a "link" is the datagrams of one client
/// address.
pub struct Relay {
    /// Where clients dial it.
    front: Upstream,
    flow: tokio::sync::watch::Sender<Flow>,
    /// Bumped by [`cut`](Relay::cut): links older than the count are reset.
    cuts: tokio::sync::watch::Sender<u64>,
    /// Links whose server side closed, counted.
    server_closed: tokio::sync::watch::Sender<usize>,
    /// Links whose client side closed, counted.
    client_closed: tokio::sync::watch::Sender<usize>,
    /// Bytes relayed from clients to the server.
    to_server: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// Bytes relayed from the server to clients.
    to_client: std::sync::Arc<std::sync::atomic::AtomicU64>,
    faults: std::sync::Arc<std::sync::Mutex<Faults>>,
    /// Bumped by [`half_close`](Relay::half_close).
    half_closes: tokio::sync::watch::Sender<u64>,
    /// Where new links are relayed to.
    upstream: std::sync::Arc<std::sync::Mutex<Upstream>>,
    /// The accept loop, and for UDP every task of the relay.
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        self.cut();
    }
}

impl Relay {
    /// Starts a TCP relay to `server` on a free loopback port.
    pub async fn start(server: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = listener.local_addr().expect("relay address");
        Relay::start_streams(Front::Tcp(listener), Upstream::Tcp(addr), server.into())
    }

    /// Starts a Unix-socket relay listening at `path` (a path in the test's own directory)
    /// to the server listening at `server`.
    pub fn start_unix(path: std::path::PathBuf, server: std::path::PathBuf) -> Relay {
        let listener = tokio::net::UnixListener::bind(&path).expect("bind relay");
        Relay::start_streams(
            Front::Unix(listener),
            Upstream::Unix(path),
            Upstream::Unix(server),
        )
    }

    fn new(front: Upstream, server: Upstream) -> Relay {
        Relay {
            front,
            flow: tokio::sync::watch::channel(Flow::Open).0,
            cuts: tokio::sync::watch::channel(0u64).0,
            server_closed: tokio::sync::watch::channel(0usize).0,
            client_closed: tokio::sync::watch::channel(0usize).0,
            to_server: Default::default(),
            to_client: Default::default(),
            faults: Default::default(),
            half_closes: tokio::sync::watch::channel(0u64).0,
            upstream: std::sync::Arc::new(std::sync::Mutex::new(server)),
            tasks: Default::default(),
        }
    }

    fn start_streams(listener: Front, front: Upstream, server: Upstream) -> Relay {
        let relay = Relay::new(front, server);
        let target = relay.upstream.clone();
        let (flow, cuts, server_closed, client_closed) = (
            relay.flow.clone(),
            relay.cuts.clone(),
            relay.server_closed.clone(),
            relay.client_closed.clone(),
        );
        let (to_server, to_client, faults, half_closes) = (
            relay.to_server.clone(),
            relay.to_client.clone(),
            relay.faults.clone(),
            relay.half_closes.clone(),
        );
        let accept = tokio::spawn(async move {
            while let Ok(client) = listener.accept().await {
                let server = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let Ok(upstream) = dial_upstream(&server).await else {
                    // Nobody there: the client sees its link closed, as by a refusal.
                    continue;
                };
                let epoch = *cuts.borrow();
                let (client_read, client_write) = tokio::io::split(client);
                let (server_read, server_write) = tokio::io::split(upstream);
                let half_epoch = *half_closes.borrow();
                tokio::spawn(pump(
                    client_read,
                    server_write,
                    Link {
                        flow: flow.subscribe(),
                        cuts: cuts.subscribe(),
                        epoch,
                        closed: client_closed.clone(),
                        counted: to_server.clone(),
                        faults: faults.clone(),
                        to_server: true,
                        half_closes: None,
                    },
                ));
                tokio::spawn(pump(
                    server_read,
                    client_write,
                    Link {
                        flow: flow.subscribe(),
                        cuts: cuts.subscribe(),
                        epoch,
                        closed: server_closed.clone(),
                        counted: to_client.clone(),
                        faults: faults.clone(),
                        to_server: false,
                        half_closes: Some((half_closes.subscribe(), half_epoch)),
                    },
                ));
            }
        });
        relay
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(accept.abort_handle());
        relay
    }

    /// Starts a UDP relay to the QUIC server at `server` on a free loopback port. Each
    /// client address gets a socket of its own towards the server, so the server sees one
    /// peer per client. Datagrams are passed on while the relay is open and dropped while
    /// it is frozen (or stalled: UDP has no buffer to hold them). A UDP relay cannot
    /// [`cut`](Relay::cut) (UDP has no connection to reset; a QUIC connection ends only by
    /// its own close or by silence, which is a freeze), nor rechunk, delay or half-close.
    pub async fn start_udp(server: SocketAddr) -> Relay {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind relay");
        let addr = socket.local_addr().expect("relay address");
        let relay = Relay::new(Upstream::Udp(addr), Upstream::Udp(server));
        let socket = std::sync::Arc::new(socket);
        let (flow, target, tasks) = (
            relay.flow.subscribe(),
            relay.upstream.clone(),
            relay.tasks.clone(),
        );
        let (to_server, to_client) = (relay.to_server.clone(), relay.to_client.clone());
        let front = tokio::spawn(async move {
            let mut towards_server: std::collections::HashMap<
                SocketAddr,
                std::sync::Arc<tokio::net::UdpSocket>,
            > = std::collections::HashMap::new();
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok((n, client)) = socket.recv_from(&mut buf).await {
                if *flow.borrow() != Flow::Open {
                    continue;
                }
                let up = match towards_server.get(&client) {
                    Some(up) => up.clone(),
                    None => {
                        let Ok(up) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                            continue;
                        };
                        let up = std::sync::Arc::new(up);
                        towards_server.insert(client, up.clone());
                        let back = tokio::spawn(udp_back(
                            up.clone(),
                            socket.clone(),
                            client,
                            flow.clone(),
                            to_client.clone(),
                        ));
                        tasks
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(back.abort_handle());
                        up
                    }
                };
                let Upstream::Udp(server) = *target.lock().unwrap_or_else(|e| e.into_inner())
                else {
                    continue;
                };
                to_server.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                let _ = up.send_to(&buf[..n], server).await;
            }
        });
        relay
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(front.abort_handle());
        relay
    }

    /// Relays links made from now on to `server` instead (a server restarted at a new
    /// address); links open now are left as they are (a UDP relay sends every datagram
    /// from now on to `server`: UDP has no links to keep). Clients keep dialing the same
    /// address, so no test releases a port and binds it again.
    pub fn retarget(&self, server: impl Into<Upstream>) {
        *self.upstream.lock().unwrap_or_else(|e| e.into_inner()) = server.into();
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Holds every chunk `delay` before passing it on, both ways.
    pub fn delay(&self, delay: std::time::Duration) {
        self.faults().delay = delay;
    }

    /// Passes bytes on in writes of at most `max` bytes, both ways, so that frames arrive
    /// cut at every possible place.
    pub fn rechunk(&self, max: usize) {
        self.faults().rechunk = Some(max.max(1));
    }

    /// Flips every bit of the client-to-server byte `offset` bytes from now.
    pub fn corrupt_in(&self, offset: u64) {
        self.faults().corrupt_in = Some(offset);
    }

    /// Stops reading either way: bytes wait, none is lost, until [`resume`](Self::resume).
    pub fn stall(&self) {
        self.flow.send_replace(Flow::Stalled);
    }

    /// Closes the server-to-client direction of every link open now (the client reads the
    /// end of the stream) and leaves the other direction open.
    pub fn half_close(&self) {
        self.half_closes.send_modify(|n| *n += 1);
    }

    /// Bytes relayed from clients to the server so far.
    pub fn bytes_to_server(&self) -> u64 {
        self.to_server.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Bytes relayed from the server to clients so far.
    pub fn bytes_to_client(&self) -> u64 {
        self.to_client.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The TCP or UDP address clients dial.
    ///
    /// # Panics
    ///
    /// For a Unix-socket relay: see [`front`](Self::front).
    pub fn addr(&self) -> SocketAddr {
        match &self.front {
            Upstream::Tcp(addr) | Upstream::Udp(addr) => *addr,
            Upstream::Unix(path) => panic!("a Unix-socket relay listens at {path:?}"),
        }
    }

    /// Where clients dial: an address, or a Unix socket's path.
    pub fn front(&self) -> &Upstream {
        &self.front
    }

    /// From now on nothing arrives either way; the connections stay open.
    pub fn freeze(&self) {
        self.flow.send_replace(Flow::Frozen);
    }

    /// Bytes flow again (those sent while frozen are lost).
    pub fn resume(&self) {
        self.flow.send_replace(Flow::Open);
    }

    /// Closes every link open now, both ways, without a word to either end; later
    /// connections are relayed as before. (A UDP relay has no links to close: this does
    /// nothing there.)
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// Waits until the server side of `n` links in all has closed.
    pub async fn server_closed(&self, n: usize) {
        let mut closed = self.server_closed.subscribe();
        let _ = closed.wait_for(|c| *c >= n).await;
    }

    /// Waits until the client side of `n` links in all has closed.
    pub async fn client_closed(&self, n: usize) {
        let mut closed = self.client_closed.subscribe();
        let _ = closed.wait_for(|c| *c >= n).await;
    }
}

/// Passes the server's datagrams for `client`, arriving on `up`, back to it through the
/// relay's `front` socket, unless the relay is frozen.
async fn udp_back(
    up: std::sync::Arc<tokio::net::UdpSocket>,
    front: std::sync::Arc<tokio::net::UdpSocket>,
    client: SocketAddr,
    flow: tokio::sync::watch::Receiver<Flow>,
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, _)) = up.recv_from(&mut buf).await else {
            // An ICMP "unreachable" for an earlier datagram (the server went away):
            // the next datagram may find a server again.
            continue;
        };
        if *flow.borrow() != Flow::Open {
            continue;
        }
        counted.fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
        let _ = front.send_to(&buf[..n], client).await;
    }
}

/// One direction of a relayed link, and what governs it.
struct Link {
    flow: tokio::sync::watch::Receiver<Flow>,
    cuts: tokio::sync::watch::Receiver<u64>,
    epoch: u64,
    /// Counted in when `from` closes.
    closed: tokio::sync::watch::Sender<usize>,
    /// Counts the bytes passed on.
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
    faults: std::sync::Arc<std::sync::Mutex<Faults>>,
    to_server: bool,
    /// Half-closes, and the count when the link was made.
    half_closes: Option<(tokio::sync::watch::Receiver<u64>, u64)>,
}

/// Copies `from` to `to` while the link flows, with the faults set; drops what arrives
/// while it is frozen, reads nothing while it is stalled, and stops when the link is cut.
async fn pump<R, W>(mut from: R, mut to: W, mut link: Link)
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    let half_closed = |link: &Link| {
        let Some((half, at)) = link.half_closes.as_ref() else {
            return futures_util::future::Either::Left(std::future::pending::<()>());
        };
        let at = *at;
        let mut half = half.clone();
        futures_util::future::Either::Right(async move {
            let _ = half.wait_for(|n| *n > at).await;
        })
    };
    loop {
        let epoch = link.epoch;
        let mut stalled = link.flow.clone();
        let mut cuts = link.cuts.clone();
        let half = half_closed(&link);
        let read = tokio::select! {
            read = async {
                let _ = stalled.wait_for(|f| *f != Flow::Stalled).await;
                from.read(&mut buf).await
            } => read,
            // Both pumps of the link return, and the link's sockets close both ways.
            _ = async { let _ = cuts.wait_for(|n| *n > epoch).await; } => return,
            _ = half => {
                let _ = to.shutdown().await;
                // Keep the read side open, unread, until the link is cut or dropped.
                let _ = link.cuts.wait_for(|n| *n > epoch).await;
                return;
            }
        };
        match read {
            Ok(0) | Err(_) => {
                link.closed.send_modify(|n| *n += 1);
                // A frozen link carries no goodbye either: it reaches the other end only
                // once the link flows again.
                let mut flow = link.flow.clone();
                tokio::select! {
                    _ = flow.wait_for(|f| *f == Flow::Open) => {}
                    _ = link.cuts.wait_for(|n| *n > epoch) => return,
                }
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => {
                link.counted
                    .fetch_add(n as u64, std::sync::atomic::Ordering::SeqCst);
                let (delay, rechunk) = {
                    let mut faults = link.faults.lock().unwrap_or_else(|e| e.into_inner());
                    if link.to_server {
                        if let Some(offset) = faults.corrupt_in {
                            if offset < n as u64 {
                                buf[offset as usize] ^= 0xff;
                                faults.corrupt_in = None;
                            } else {
                                faults.corrupt_in = Some(offset - n as u64);
                            }
                        }
                    }
                    (faults.delay, faults.rechunk)
                };
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                // A read that was under way when the link stalled is held too.
                let _ = stalled.wait_for(|f| *f != Flow::Stalled).await;
                if *link.flow.borrow() == Flow::Frozen {
                    continue;
                }
                for piece in buf[..n].chunks(rechunk.unwrap_or(n)) {
                    if to.write_all(piece).await.is_err() {
                        return;
                    }
                    if rechunk.is_some() {
                        tokio::task::yield_now().await;
                    }
                }
            }
        }
    }
}

/// The book (`book/src/`): each chapter is the documentation of an item here, so that
/// `cargo test -p msg-tests --doc` compiles and runs every ```rust sample in it. A chapter
/// file missing from this list fails `tests/book.rs`.
#[cfg(doctest)]
pub mod book {
    macro_rules! chapters {
        ($($name:ident => $file:literal,)*) => {
            $(
                #[doc = include_str!(concat!("../book/src/", $file))]
                pub struct $name;
            )*
        };
    }

    chapters! {
        Introduction => "introduction.md",
        GettingStarted => "getting-started.md",
        ReqRep => "reqrep.md",
        PubSub => "pubsub.md",
        Router => "router.md",
        Transports => "transports.md",
        Auth => "auth.md",
        Compression => "compression.md",
        Tracing => "tracing.md",
        Metrics => "metrics.md",
        Durability => "durability.md",
        Middleware => "middleware.md",
        Discovery => "discovery.md",
        Cli => "cli.md",
        Performance => "performance.md",
        Reliability => "reliability.md",
        Protocol => "protocol.md",
        Features => "features.md",
        Faq => "faq.md",
        Contributing => "contributing.md",
    }
}
