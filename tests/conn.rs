//! The public connection layer, `msg::conn`: a client handshake and `serve_connection` over
//! streams the user owns: an in-memory `tokio::io::duplex` pipe (no socket at all), and TCP
//! connections on 127.0.0.1 accepted by the test's own `TcpListener` loop.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use bytes::Bytes;
use futures_util::future::poll_fn;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::conn::{client, server};
use msg::{Authenticator, Code, Error, Message, RepOptions, ReqOptions, Request, Status};
use msg_tests::within;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tower::{service_fn, BoxError, Service, ServiceExt};

/// A stream of either kind the tests run over.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

type Boxed = Box<dyn Stream>;

/// The two ways the tests connect: a duplex pipe, or TCP on loopback.
#[derive(Clone, Copy, Debug)]
enum Via {
    Duplex,
    Tcp,
}

/// A connected pair of streams: (client's, server's).
async fn pair(via: Via) -> (Boxed, Boxed) {
    match via {
        Via::Duplex => {
            let (a, b) = tokio::io::duplex(64 * 1024);
            (Box::new(a), Box::new(b))
        }
        Via::Tcp => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
            (Box::new(client.unwrap()), Box::new(accepted.unwrap().0))
        }
    }
}

/// An echo handler.
fn echo() -> impl Service<
    Request<&'static str>,
    Response = Message,
    Error = Infallible,
    Future = impl Future<Output = Result<Message, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    service_fn(|req: Request<&'static str>| async move { Ok(req.message().clone()) })
}

/// Serves `service` on the server's end of a fresh pair with `builder`, in a task, and
/// makes the client's end with `options`. Returns the client's halves and the server's
/// task.
async fn connect<S>(
    via: Via,
    builder: server::Builder<&'static str>,
    service: S,
    options: ReqOptions,
) -> (
    client::SendRequest,
    client::Connection<Boxed>,
    tokio::task::JoinHandle<Result<(), Error>>,
)
where
    S: Service<Request<&'static str>, Response = Message> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
{
    let (client_io, server_io) = pair(via).await;
    let served = tokio::spawn(builder.serve_connection(server_io, "peer", service));
    let (send, conn) = within(client::handshake(client_io, options))
        .await
        .expect("handshake");
    (send, conn, served)
}

fn builder() -> server::Builder<&'static str> {
    server::Builder::new(RepOptions::default())
}

async fn round_trip(via: Via) {
    let (send, conn, served) = connect(via, builder(), echo(), ReqOptions::default()).await;
    let driven = tokio::spawn(conn);
    assert_eq!(
        within(send.request(Bytes::from("hello"))).await.unwrap(),
        "hello"
    );
    // Every handle dropped: the connection closes gracefully, and so does the server's.
    drop(send);
    assert!(within(driven).await.unwrap().is_ok());
    assert!(within(served).await.unwrap().is_ok());
}

#[tokio::test]
async fn round_trip_over_duplex() {
    round_trip(Via::Duplex).await;
}

#[tokio::test]
async fn round_trip_over_tcp() {
    round_trip(Via::Tcp).await;
}

/// The user's own accept loop serves every connection with `serve_connection`; clients
/// made with `handshake` over their own `TcpStream`s.
#[tokio::test]
async fn own_accept_loop_serves_many_clients() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let builder = server::Builder::<SocketAddr>::new(RepOptions::default());
    tokio::spawn(async move {
        loop {
            let (io, peer) = listener.accept().await.unwrap();
            let service = service_fn(|req: Request| async move {
                Ok::<_, Infallible>(Bytes::from(format!("{} from {}", req.peer(), req.peer())))
            });
            tokio::spawn(builder.serve_connection(io, peer, service));
        }
    });
    for _ in 0..3 {
        let io = TcpStream::connect(addr).await.unwrap();
        let local = io.local_addr().unwrap();
        let (send, conn) = within(client::handshake(io, ReqOptions::default()))
            .await
            .unwrap();
        tokio::spawn(conn);
        let reply = within(send.request(Bytes::from("who"))).await.unwrap();
        // The handler saw the peer address the loop passed in.
        assert_eq!(reply, format!("{local} from {local}"));
    }
}

async fn many_concurrent(via: Via) {
    let (send, conn, _served) = connect(via, builder(), echo(), ReqOptions::default()).await;
    tokio::spawn(conn);
    let mut calls: FuturesUnordered<_> = (0..500)
        .map(|i| {
            let mut send = send.clone();
            async move {
                let reply = send
                    .ready()
                    .await?
                    .call(Message::from(format!("request {i}")))
                    .await?;
                Ok::<_, Error>((i, reply))
            }
        })
        .collect();
    let mut n = 0;
    while let Some(done) = within(calls.next()).await {
        let (i, reply) = done.unwrap();
        assert_eq!(reply.payload(), &format!("request {i}"));
        n += 1;
    }
    assert_eq!(n, 500);
}

#[tokio::test]
async fn many_concurrent_requests_over_duplex() {
    many_concurrent(Via::Duplex).await;
}

#[tokio::test]
async fn many_concurrent_requests_over_tcp() {
    many_concurrent(Via::Tcp).await;
}

async fn handler_error(via: Via) {
    let failing = service_fn(|_req: Request<&'static str>| async move {
        Err::<Message, _>(Status::new(Code::NotFound, "no such thing"))
    });
    let (send, conn, _served) = connect(via, builder(), failing, ReqOptions::default()).await;
    tokio::spawn(conn);
    match within(send.request(Bytes::from("x"))).await {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, Code::NotFound);
            assert!(message.contains("no such thing"), "{message}");
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test]
async fn handler_error_reaches_the_client_over_duplex() {
    handler_error(Via::Duplex).await;
}

#[tokio::test]
async fn handler_error_reaches_the_client_over_tcp() {
    handler_error(Via::Tcp).await;
}

struct Token(&'static str);

impl Authenticator for Token {
    fn authenticate(&self, id: &Bytes) -> bool {
        id == self.0
    }
}

async fn auth(via: Via) {
    // The right token: served.
    let options = ReqOptions::default().auth_token("s3cret");
    let (send, conn, _served) =
        connect(via, builder().with_auth(Token("s3cret")), echo(), options).await;
    tokio::spawn(conn);
    assert_eq!(within(send.request(Bytes::from("in"))).await.unwrap(), "in");

    // A wrong one: refused on both ends, with the reason.
    let (client_io, server_io) = pair(via).await;
    let served = tokio::spawn(builder().with_auth(Token("s3cret")).serve_connection(
        server_io,
        "peer",
        echo(),
    ));
    let options = ReqOptions::default().auth_token("guess");
    match within(client::handshake(client_io, options)).await {
        Err(Error::HandshakeRejected { reason, .. }) => {
            assert!(reason.contains("authentication failed"), "{reason}")
        }
        other => panic!("expected a rejection, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        within(served).await.unwrap(),
        Err(Error::Refused { .. })
    ));
}

#[tokio::test]
async fn auth_token_checked_over_duplex() {
    auth(Via::Duplex).await;
}

#[tokio::test]
async fn auth_token_checked_over_tcp() {
    auth(Via::Tcp).await;
}

/// A handler that tells when a call starts and never finishes.
fn hanging(
    started: mpsc::UnboundedSender<()>,
) -> impl Service<
    Request<&'static str>,
    Response = Message,
    Error = Infallible,
    Future = impl Future<Output = Result<Message, Infallible>> + Send,
> + Send
       + 'static {
    service_fn(move |_req: Request<&'static str>| {
        let started = started.clone();
        async move {
            let _ = started.send(());
            std::future::pending::<()>().await;
            Ok(Message::from("never"))
        }
    })
}

async fn peer_drops(via: Via) {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (send, conn, served) =
        connect(via, builder(), hanging(started_tx), ReqOptions::default()).await;
    let driven = tokio::spawn(conn);
    let in_flight = {
        let send = send.clone();
        tokio::spawn(async move { send.request(Bytes::from("stuck")).await })
    };
    within(started.recv()).await.unwrap();
    // The server goes away: its task, and its end of the stream, are dropped.
    served.abort();
    assert!(matches!(
        within(driven).await.unwrap(),
        Err(Error::ConnectionClosed)
    ));
    assert!(matches!(
        within(in_flight).await.unwrap(),
        Err(Error::ConnectionClosed)
    ));
    // Later calls fail at once, and say so.
    assert!(send.is_closed());
    assert!(matches!(
        within(send.request(Bytes::from("after"))).await,
        Err(Error::ConnectionClosed)
    ));
}

#[tokio::test]
async fn connection_ends_when_the_peer_drops_over_duplex() {
    peer_drops(Via::Duplex).await;
}

#[tokio::test]
async fn connection_ends_when_the_peer_drops_over_tcp() {
    peer_drops(Via::Tcp).await;
}

/// A connection future dropped before it ended fails what was in flight, typed.
#[tokio::test]
async fn dropping_the_connection_fails_requests_in_flight() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (send, conn, _served) = connect(
        Via::Duplex,
        builder(),
        hanging(started_tx),
        ReqOptions::default(),
    )
    .await;
    let stop = Arc::new(Notify::new());
    let driven = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = conn => {}
                _ = stop.notified() => {}
            }
        })
    };
    let in_flight = {
        let send = send.clone();
        tokio::spawn(async move { send.request(Bytes::from("stuck")).await })
    };
    within(started.recv()).await.unwrap();
    stop.notify_one();
    within(driven).await.unwrap();
    assert!(matches!(
        within(in_flight).await.unwrap(),
        Err(Error::ConnectionClosed)
    ));
    assert!(matches!(
        within(send.request(Bytes::from("after"))).await,
        Err(Error::ConnectionClosed)
    ));
}

async fn in_flight_limit(via: Via) {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let options = ReqOptions::default().max_in_flight(2);
    let (mut send, conn, _served) = connect(via, builder(), hanging(started_tx), options).await;
    tokio::spawn(conn);
    let first = send.ready().await.unwrap().call(Message::from("1"));
    let second = send.ready().await.unwrap().call(Message::from("2"));
    let mut calls: Vec<Pin<Box<_>>> = vec![Box::pin(first), Box::pin(second)];
    // Polled once each, so that both are on their way.
    for call in &mut calls {
        assert!(poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx).is_pending())).await);
    }
    within(started.recv()).await.unwrap();
    within(started.recv()).await.unwrap();
    // Both slots are out: the third must wait.
    let ready = poll_fn(|cx| Poll::Ready(send.poll_ready(cx))).await;
    assert!(ready.is_pending(), "poll_ready past the limit: {ready:?}");
    // Giving up on one frees its slot.
    calls.pop();
    within(poll_fn(|cx| send.poll_ready(cx))).await.unwrap();
    assert_eq!(send.stats().in_flight, 2, "one in flight, one reserved");
}

#[tokio::test]
async fn in_flight_limit_holds_in_poll_ready_over_duplex() {
    in_flight_limit(Via::Duplex).await;
}

#[tokio::test]
async fn in_flight_limit_holds_in_poll_ready_over_tcp() {
    in_flight_limit(Via::Tcp).await;
}

/// A graceful shutdown of the server's connection: the call started finishes and the
/// connection closes; the client's connection then ends too.
#[tokio::test]
async fn server_graceful_shutdown_finishes_calls_started() {
    let (release_tx, release) = tokio::sync::watch::channel(false);
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let slow = service_fn(move |req: Request<&'static str>| {
        let mut release = release.clone();
        let started = started_tx.clone();
        async move {
            let _ = started.send(());
            let _ = release.wait_for(|go| *go).await;
            Ok::<_, Infallible>(req.message().clone())
        }
    });
    let (client_io, server_io) = pair(Via::Duplex).await;
    let serving = builder().serve_connection(server_io, "peer", slow);
    let signal = serving.shutdown_handle();
    let served = tokio::spawn(serving);
    let (send, conn) = within(client::handshake(client_io, ReqOptions::default()))
        .await
        .unwrap();
    let driven = tokio::spawn(conn);
    let call = {
        let send = send.clone();
        tokio::spawn(async move { send.request(Bytes::from("finish me")).await })
    };
    within(started.recv()).await.unwrap();
    signal.graceful_shutdown();
    assert!(signal.is_shutting_down());
    release_tx.send(true).unwrap();
    assert_eq!(within(call).await.unwrap().unwrap(), "finish me");
    assert!(within(served).await.unwrap().is_ok());
    within(driven).await.unwrap().ok();
}
