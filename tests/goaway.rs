//! Going away on the wire: a server shutting down gracefully names the last request it
//! processes; the requests after it fail on the client as never processed (and the retry
//! policy sends them again, whatever their idempotency); the calls started finish, within
//! the linger, and a hung handler does not hold the shutdown.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::wire::FrameKind;
use msg::{serve, Error, Message, RepOptions, RepSocket, ReqSocket, Request, SocketType, Tcp};
use msg_tests::{raw_client, read_frame_buffered, request_frame, within, Relay};
use tokio::io::AsyncWriteExt;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// A server run by `serve(..).with_graceful_shutdown(..)`, whose handler echoes once its
/// gate opens.
struct Server {
    addr: SocketAddr,
    gate: watch::Sender<bool>,
    /// Calls started.
    started: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    done: JoinHandle<Result<(), Error>>,
}

impl Server {
    async fn start(options: RepOptions) -> Server {
        let mut rep = RepSocket::with_options(Tcp::default(), options);
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        let (gate, open) = watch::channel(false);
        let started = Arc::new(AtomicUsize::new(0));
        let count = started.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let handler = service_fn(move |req: Request| {
            let mut open = open.clone();
            count.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = open.wait_for(|open| *open).await;
                Ok::<_, Infallible>(req.msg().clone())
            }
        });
        let done = tokio::spawn(serve(rep, handler).with_graceful_shutdown(async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            gate,
            started,
            stop: Some(stop),
            done,
        }
    }

    async fn started(&self, n: usize) {
        within(async {
            while self.started.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    fn shut_down(&mut self) {
        let _ = self.stop.take().expect("shut down once").send(());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_requests_started_and_fails_the_rest_as_not_processed() {
    let mut server = Server::start(RepOptions::default().max_in_flight_per_conn(2)).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(server.addr).await.unwrap();
    let mut calls: FuturesUnordered<_> = (0..6)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { req.request(Bytes::from(format!("{i}"))).await })
        })
        .collect();
    // Two calls run; the third request waits for room; the rest wait to be read.
    server.started(2).await;
    server.shut_down();
    // The four never started fail at once, while the two started still run.
    for _ in 0..4 {
        let outcome = within(calls.next()).await.unwrap().unwrap();
        assert!(matches!(outcome, Err(Error::NotProcessed)), "{outcome:?}");
    }
    assert_eq!(server.started.load(Ordering::SeqCst), 2);
    // The two started are answered, and the server then returns.
    server.gate.send(true).unwrap();
    for _ in 0..2 {
        let outcome = within(calls.next()).await.unwrap().unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    within(&mut server.done).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_not_processed_are_retried_whatever_their_idempotency() {
    let mut first = Server::start(RepOptions::default().max_in_flight_per_conn(2)).await;
    let second = Server::start(RepOptions::default()).await;
    second.gate.send(true).unwrap();
    let relay = Relay::start(first.addr).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(relay.addr()).await.unwrap();
    // Not idempotent: only what never ran may be sent again.
    let client = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(
            msg::retry::RetryPolicy::default(),
        ))
        .service(req.clone());
    let mut calls: FuturesUnordered<_> = (0..6)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .oneshot(Message::new(Bytes::from(format!("{i}"))))
                    .await
            })
        })
        .collect();
    first.started(2).await;
    // The next connection reaches the second server.
    relay.retarget(second.addr);
    first.shut_down();
    // The four not processed are sent again, and wait for the next connection.
    within(async {
        while req.stats().queued < 4 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    first.gate.send(true).unwrap();
    for _ in 0..6 {
        let outcome = within(calls.next()).await.unwrap().unwrap();
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    assert_eq!(first.started.load(Ordering::SeqCst), 2);
    assert_eq!(
        second.started.load(Ordering::SeqCst),
        4,
        "each retried once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_holds_a_graceful_shutdown_no_longer_than_the_linger() {
    const LINGER: Duration = Duration::from_millis(300);
    let mut rep = RepSocket::with_options(Tcp::default(), RepOptions::default().linger(LINGER));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let started = Arc::new(AtomicUsize::new(0));
    let count = started.clone();
    let handler = service_fn(move |_: Request| {
        count.fetch_add(1, Ordering::SeqCst);
        std::future::pending::<Result<Bytes, Infallible>>()
    });
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(serve(rep, handler).with_graceful_shutdown(async {
        let _ = stopped.await;
    }));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let call = tokio::spawn({
        let req = req.clone();
        async move { req.request(Bytes::from("hangs")).await }
    });
    within(async {
        while started.load(Ordering::SeqCst) < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let asked = Instant::now();
    stop.send(()).unwrap();
    within(done).await.unwrap().unwrap();
    let took = asked.elapsed();
    // The linger, and scheduling slack; without the bound it never returns.
    assert!(took >= LINGER, "returned after {took:?}, before the linger");
    assert!(took < LINGER + Duration::from_secs(5), "took {took:?}");
    // The call was dropped with its connection: the client hears at once.
    let outcome = within(call).await.unwrap();
    assert!(
        matches!(outcome, Err(Error::ConnectionClosed)),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_away_frame_names_the_last_request_started() {
    let mut server = Server::start(RepOptions::default().max_in_flight_per_conn(1)).await;
    let mut stream = raw_client(server.addr, SocketType::Req)
        .await
        .expect("welcomed");
    for id in 1..=3 {
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&msg_tests::encode(request_frame(id, b"x")));
        stream.write_all(&frame).await.unwrap();
    }
    server.started(1).await;
    server.shut_down();
    let mut buf = BytesMut::new();
    let frame = within(read_frame_buffered(&mut stream, &mut buf))
        .await
        .expect("a frame before the close");
    assert_eq!((frame.kind, frame.id), (FrameKind::GoAway, 1));
    assert!(frame.payload.is_empty());
    server.gate.send(true).unwrap();
    let reply = within(read_frame_buffered(&mut stream, &mut buf))
        .await
        .expect("the started request's reply");
    assert_eq!((reply.kind, reply.id), (FrameKind::Response, 1));
    // Then the server closes: nothing more comes.
    assert!(within(read_frame_buffered(&mut stream, &mut buf))
        .await
        .is_none());
}
