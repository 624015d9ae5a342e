//! Request/Reply over real loopback TCP: the book's example, volume, concurrency, errors,
//! back-pressure, authentication and graceful shutdown.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use msg::{serve, Error, Message, RepOptions, RepSocket, ReqOptions, ReqSocket, Request, Tcp};
use msg_tests::{echo_server, refusing_addr, serve_on_loopback, within, Relay};
use tokio::sync::{mpsc, watch, Notify};
use tokio_stream::StreamExt;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

/// The bound on a volume test as a whole: thousands of round trips or megabytes in a debug
/// build, on a host that may be busy with other tests. No speed is asserted; a test that
/// stalls still fails.
const WAIT_LONG: Duration = Duration::from_secs(120);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT_LONG`].
async fn within_long<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT_LONG, fut)
        .await
        .expect("volume step did not finish in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_example_round_trips_over_the_stream_api() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();

    let server = tokio::spawn(async move {
        let req = rep.next().await.unwrap();
        assert_eq!(req.msg(), &Bytes::from("hello"));
        req.respond(Bytes::from("world")).unwrap();
    });

    let res: Bytes = within(req.request(Bytes::from("hello"))).await.unwrap();
    assert_eq!(res, Bytes::from("world"));
    within(server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_taken_before_connect_share_the_connection_made_after() {
    let addr = echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    // Handed out before the socket connects, as to workers at start-up.
    let worker = req.clone();
    let mut service = req.clone();
    assert!(matches!(
        within(worker.request(Bytes::from("early"))).await,
        Err(Error::NotConnected { .. })
    ));
    within(req.connect(addr)).await.unwrap();
    assert_eq!(
        within(worker.request(Bytes::from("worker"))).await.unwrap(),
        "worker"
    );
    let reply = within(async { service.ready().await?.call(Message::from("tower")).await })
        .await
        .unwrap();
    assert_eq!(reply.payload(), "tower");
    assert!(worker.stats().connected, "{:?}", worker.stats());
    // One connection, whichever handle made it: closing any closes it for all.
    within(worker.close()).await;
    assert!(matches!(
        within(req.request(Bytes::from("late"))).await,
        Err(Error::Closed)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_and_connect_accept_names_strings_and_socket_addrs() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("localhost:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    assert_ne!(addr.port(), 0, "local_addr reports the real port");
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));

    let name = format!("localhost:{}", addr.port());
    let mut by_name = ReqSocket::new(Tcp::default());
    within(by_name.connect(name.as_str())).await.unwrap();
    let mut by_string = ReqSocket::new(Tcp::default());
    within(by_string.connect(addr.to_string())).await.unwrap();
    let mut by_addr = ReqSocket::new(Tcp::default());
    within(by_addr.connect(addr)).await.unwrap();
    for req in [&by_name, &by_string, &by_addr] {
        assert_eq!(within(req.request(Bytes::from("x"))).await.unwrap(), "x");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_sequential_round_trips() {
    let addr = echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    within_long(async {
        for i in 0..10_000u32 {
            let payload = Bytes::from(i.to_be_bytes().to_vec());
            assert_eq!(req.request(payload.clone()).await.unwrap(), payload);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_requests_are_answered_by_id_in_reverse_order() {
    const N: usize = 1000;
    // Request k is answered only after requests N-1 down to k+1: strictly reverse order.
    let (turn_tx, turn_rx) = watch::channel(0usize);
    let turn_tx = Arc::new(turn_tx);
    let answered = Arc::new(Mutex::new(Vec::with_capacity(N)));
    let addr = serve_on_loopback(service_fn({
        let answered = answered.clone();
        move |req: Request| {
            let mut turn = turn_rx.clone();
            let turn_tx = turn_tx.clone();
            let answered = answered.clone();
            async move {
                let k = u32::from_be_bytes(req.msg()[..4].try_into().unwrap()) as usize;
                turn.wait_for(|t| *t == N - 1 - k).await.unwrap();
                answered.lock().unwrap().push(k);
                turn_tx.send_modify(|t| *t += 1);
                Ok::<_, Infallible>(Bytes::from(format!("reply {k}")))
            }
        }
    }))
    .await;

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..N {
        let req = req.clone();
        tasks.spawn(async move {
            let reply = req
                .request(Bytes::from((k as u32).to_be_bytes().to_vec()))
                .await
                .unwrap();
            assert_eq!(
                reply,
                Bytes::from(format!("reply {k}")),
                "reply matched by id"
            );
        });
    }
    within(async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
    // Every reply reached its own request although they were sent in reverse order.
    let answered = answered.lock().unwrap();
    assert_eq!(*answered, (0..N).rev().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_yields_replies_in_request_order_whatever_order_they_come_in() {
    const N: u32 = 300;
    let answered = Arc::new(Mutex::new(Vec::new()));
    let addr = serve_on_loopback(service_fn({
        let answered = answered.clone();
        move |req: Request| {
            let answered = answered.clone();
            async move {
                let k = u32::from_be_bytes(req.msg()[..4].try_into().unwrap());
                // Every third request is held back, so replies leave out of order.
                if k % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                answered.lock().unwrap().push(k);
                Ok::<_, Infallible>(Bytes::from(format!("reply {k}")))
            }
        }
    }))
    .await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();

    let requests = tokio_stream::iter(0..N).map(|k| Bytes::from(k.to_be_bytes().to_vec()));
    let replies: Vec<_> = within(req.pipeline(requests, 32).collect()).await;
    assert_eq!(replies.len(), N as usize);
    for (k, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), format!("reply {k}"));
    }
    let answered = answered.lock().unwrap();
    assert_eq!(answered.len(), N as usize);
    assert!(
        answered.windows(2).any(|w| w[0] > w[1]),
        "the server answered in order, so the test proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_ends_with_typed_errors_when_the_server_goes_away() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(200));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect(addr).await.unwrap();

    const WINDOW: usize = 16;
    let requests = tokio_stream::iter(0..1000u32).map(|k| Bytes::from(k.to_be_bytes().to_vec()));
    let mut replies = req.pipeline(requests, WINDOW);
    // A first poll sends the window; the server takes the first request and goes away
    // without answering anything.
    assert!(replies.next().now_or_never().is_none());
    let pending = within(rep.next()).await;
    drop((pending, rep));
    let outcomes = within(replies.collect::<Vec<_>>()).await;
    let dropped = outcomes
        .iter()
        .filter(|o| matches!(o, Err(Error::Remote { .. })))
        .count();
    // The pipeline sends nothing after the first connection error: it reports what was in
    // flight then (at most a window) and ends, instead of failing the rest of the
    // thousand one by one. Each request the server refused as dropped made room for one
    // more in the window before that.
    assert!(
        dropped >= 1,
        "the request the server took was not refused: {outcomes:?}"
    );
    assert!(
        outcomes.len() <= WINDOW + dropped,
        "{} outcomes for a window of {WINDOW} and {dropped} refused: the pipeline went on \
         after the connection failed: {outcomes:?}",
        outcomes.len()
    );
    for outcome in &outcomes {
        match outcome {
            // Requests the server had read when it went away are refused as dropped.
            Err(Error::Remote { message, .. }) => assert_eq!(
                message, "the server dropped the request without responding",
                "{outcomes:?}"
            ),
            Err(e) => assert!(e.is_connection_error(), "{e:?}"),
            Ok(reply) => panic!("a reply came from a server that answered nothing: {reply:?}"),
        }
    }
    assert!(
        matches!(outcomes.last(), Some(Err(e)) if e.is_connection_error()),
        "the pipeline did not end on the connection error: {outcomes:?}"
    );
}

/// Pending `n` times, waking its own task at once each time, then ready.
struct WakeSelf(u8);

impl std::future::Future for WakeSelf {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 == 0 {
            return std::task::Poll::Ready(());
        }
        self.0 -= 1;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_that_wake_themselves_again_and_again_are_all_answered() {
    // Each call wakes itself ten times, within its own poll, before answering, while
    // hundreds run at once.
    let addr = serve_on_loopback(service_fn(|req: Request| async move {
        WakeSelf(10).await;
        Ok::<_, Infallible>(req.msg().clone())
    }))
    .await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let requests = tokio_stream::iter(0..2000u32).map(|k| Bytes::from(k.to_be_bytes().to_vec()));
    let replies: Vec<_> = within(req.pipeline(requests, 256).collect()).await;
    assert_eq!(replies.len(), 2000);
    for (k, reply) in replies.into_iter().enumerate() {
        assert_eq!(
            reply.unwrap(),
            Bytes::from((k as u32).to_be_bytes().to_vec())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_clients_at_once_each_get_their_own_replies() {
    let addr = echo_server().await;
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..32u32 {
        tasks.spawn(async move {
            let mut req = ReqSocket::new(Tcp::default());
            req.connect(addr).await.unwrap();
            for i in 0..200u32 {
                let payload = Bytes::from(format!("client {client} request {i}"));
                assert_eq!(req.request(payload.clone()).await.unwrap(), payload);
            }
        });
    }
    within_long(async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_error_reaches_the_client_as_a_typed_remote_error() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move {
            if req.msg() == "fail" {
                Err::<Bytes, BoxError>("the handler refused".into())
            } else {
                Ok(req.msg().clone())
            }
        }),
    ));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    match within(req.request(Bytes::from("fail"))).await {
        Err(Error::Remote { message, .. }) => assert_eq!(message, "the handler refused"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    // The connection survives a handler error.
    assert_eq!(within(req.request(Bytes::from("ok"))).await.unwrap(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_request_dropped_unanswered_fails_the_client_instead_of_hanging() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    tokio::spawn(async move {
        while let Some(pending) = rep.next().await {
            if pending.msg() == "ignore" {
                drop(pending);
            } else {
                pending.respond_error("no thanks").unwrap();
            }
        }
    });
    assert!(matches!(
        within(req.request(Bytes::from("ignore"))).await,
        Err(Error::Remote { .. })
    ));
    match within(req.request(Bytes::from("other"))).await {
        Err(Error::Remote { message, .. }) => assert_eq!(message, "no thanks"),
        other => panic!("expected a remote error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_then_stops() {
    const N: usize = 10;
    let gate = Arc::new(Notify::new());
    let (seen_tx, mut seen_rx) = mpsc::channel::<()>(N);
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let handler = {
        let gate = gate.clone();
        service_fn(move |req: Request| {
            let gate = gate.clone();
            let seen_tx = seen_tx.clone();
            async move {
                let released = gate.notified();
                seen_tx.send(()).await.unwrap();
                released.await;
                Ok::<_, Infallible>(req.msg().clone())
            }
        })
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(rep, handler).with_graceful_shutdown(async {
        let _ = stop_rx.await;
    }));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..N {
        let req = req.clone();
        calls.spawn(async move { req.request(Bytes::from(format!("{i}"))).await });
    }
    within(async {
        for _ in 0..N {
            seen_rx.recv().await.unwrap();
        }
    })
    .await;

    stop_tx.send(()).unwrap();
    // The server has seen the signal once its listener is gone: a new client is refused.
    let refused = within(async {
        for _ in 0..2000 {
            let mut late = ReqSocket::new(Tcp::default());
            if let Err(Error::Transport(_)) = late.connect(addr).await {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    })
    .await;
    assert!(
        refused,
        "new connections were still accepted after the shutdown signal"
    );
    // It is draining: it does not finish while its handlers hold requests, however long
    // they take (here: until the gate opens).
    let mut server = server;
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut server)
            .await
            .is_err(),
        "the server stopped with requests in flight"
    );
    gate.notify_waiters();

    within(async {
        let mut answered = 0;
        while let Some(done) = calls.join_next().await {
            done.unwrap()
                .expect("in-flight request answered during shutdown");
            answered += 1;
        }
        assert_eq!(answered, N);
    })
    .await;
    within(server).await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_a_closed_server_fails_with_a_typed_error() {
    // Nobody listens: connect fails.
    let (_nobody, addr) = refusing_addr();
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(200));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    assert!(matches!(
        within(req.connect(addr)).await,
        Err(Error::Transport(_))
    ));
    assert!(matches!(
        within(req.request(Bytes::from("x"))).await,
        Err(Error::NotConnected { .. })
    ));

    // The server goes away with a request in flight: it fails as soon as the server's
    // linger is over; a later request waits for the server to come back, and fails once
    // `reconnect_wait` has passed.
    let mut rep = RepSocket::with_options(
        Tcp::default(),
        RepOptions::default().linger(Duration::from_millis(100)),
    );
    rep.bind("127.0.0.1:0").await.unwrap();
    // Reached through a relay, so that the client's redials after the server has gone
    // lead to a port nobody listens on, not to the released one (which another test may
    // have taken meanwhile).
    let relay = Relay::start(rep.local_addr().unwrap()).await;
    req.connect(relay.addr()).await.unwrap();
    let in_flight = {
        let req = req.clone();
        tokio::spawn(async move { req.request(Bytes::from("never answered")).await })
    };
    let pending = within(rep.next()).await.unwrap();
    relay.retarget(addr);
    drop(rep);
    let failed = within(in_flight).await.unwrap();
    assert!(matches!(failed, Err(Error::ConnectionClosed)), "{failed:?}");
    drop(pending);
    let later = within(req.request(Bytes::from("again"))).await;
    assert!(
        matches!(later, Err(Error::NotConnected { .. })),
        "{later:?}"
    );
}

/// The payloads of handler calls, in order.
type Payloads = Arc<Mutex<Vec<Bytes>>>;

/// Waits until `payloads` holds `n` payloads that start with `prefix`, failing if it ever
/// holds more.
async fn wait_for_payloads(payloads: &Payloads, prefix: &[u8], n: usize) {
    within(async {
        loop {
            let count = payloads
                .lock()
                .unwrap()
                .iter()
                .filter(|p| p.starts_with(prefix))
                .count();
            assert!(
                count <= n,
                "{count} payloads starting {prefix:?}, {n} expected"
            );
            if count == n {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}

/// Held by a handler call while it runs: notes the call's payload in `dropped` if the call
/// is dropped before it answers (as `serve` drops a call its client cancelled).
struct DropWatch {
    payload: Option<Bytes>,
    dropped: Payloads,
}

impl DropWatch {
    fn new(payload: &Bytes, dropped: &Payloads) -> DropWatch {
        DropWatch {
            payload: Some(payload.clone()),
            dropped: dropped.clone(),
        }
    }

    /// The call answered: it was not dropped.
    fn answered(mut self) {
        self.payload = None;
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if let Some(payload) = self.payload.take() {
            self.dropped.lock().unwrap().push(payload);
        }
    }
}

/// An echo server whose handlers all wait for a gate to open: its address, the gate, the
/// payloads of the handler calls started, and of those dropped before they answered.
struct GatedServer {
    addr: std::net::SocketAddr,
    open_gate: watch::Sender<bool>,
    started: Payloads,
    dropped: Payloads,
}

async fn gated_echo_server() -> GatedServer {
    let (open_gate, gate) = watch::channel(false);
    let started = Payloads::default();
    let dropped = Payloads::default();
    let (seen, gone) = (started.clone(), dropped.clone());
    let addr = serve_on_loopback(service_fn(move |req: Request| {
        let mut gate = gate.clone();
        seen.lock().unwrap().push(req.msg().clone());
        let watch = DropWatch::new(req.msg(), &gone);
        async move {
            gate.wait_for(|open| *open).await.unwrap();
            watch.answered();
            Ok::<_, Infallible>(req.msg().clone())
        }
    }))
    .await;
    GatedServer {
        addr,
        open_gate,
        started,
        dropped,
    }
}

/// A client limited to two requests in flight, both taken by requests `a` and `b`.
async fn client_at_its_limit_of_two(
    addr: std::net::SocketAddr,
    a: &'static str,
    b: &'static str,
) -> (ReqSocket<Tcp>, msg::ResponseFuture, msg::ResponseFuture) {
    let mut req = ReqSocket::with_options(Tcp::default(), ReqOptions::default().max_in_flight(2));
    req.connect(addr).await.unwrap();
    let first = req.ready().await.unwrap().call(Message::from(a));
    let second = req.ready().await.unwrap().call(Message::from(b));
    assert!(
        req.ready().now_or_never().is_none(),
        "a third request was accepted past the limit of 2"
    );
    (req, first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_a_slot_reserved_before_the_connection_died_goes_out_on_the_next_one() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    // The client dials a relay, whose address stays while the server restarts on another
    // port; meanwhile it leads to a port nobody listens on.
    let relay = Relay::start(rep.local_addr().unwrap()).await;
    let (_nobody, nowhere) = refusing_addr();
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(relay.addr()).await.unwrap();
    let mut reserved = req.clone();
    within(reserved.ready()).await.unwrap();
    let mut events = req.events();

    // The server goes away; wait until the client has seen the connection die.
    relay.retarget(nowhere);
    rep.close().await;
    drop(rep);
    within(async {
        while !matches!(
            events.next().await,
            Some(msg::SocketEvent::Disconnected { .. })
        ) {}
    })
    .await;
    // The call made meanwhile waits for the server to come back behind the same address.
    let late = tokio::spawn(async move { reserved.call(Message::from("late")).await });
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    relay.retarget(rep.local_addr().unwrap());
    let pending = within(rep.next()).await.unwrap();
    assert_eq!(pending.msg(), "late");
    pending.respond(Bytes::from("answered")).unwrap();
    let reply = within(late).await.unwrap().unwrap();
    assert_eq!(reply.payload(), "answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_ready_is_pending_at_the_in_flight_limit() {
    let GatedServer {
        addr,
        open_gate,
        started,
        ..
    } = gated_echo_server().await;
    let (mut req, first, second) = client_at_its_limit_of_two(addr, "1", "2").await;
    within(async {
        while started.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    open_gate.send(true).unwrap();
    assert_eq!(within(first).await.unwrap().payload(), "1");
    assert_eq!(within(second).await.unwrap().payload(), "2");
    // Capacity is back.
    within(req.ready()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_give_their_slots_back_to_waiting_callers() {
    let GatedServer {
        addr,
        open_gate,
        started,
        dropped,
    } = gated_echo_server().await;
    // Both slots taken by requests whose callers give up while they are on the wire.
    let (mut req, first, second) = client_at_its_limit_of_two(addr, "gone 1", "gone 2").await;
    wait_for_payloads(&started, b"gone", 2).await;
    drop((first, second));

    // Both slots are free at once, while nothing is answered (the gate is shut). The first
    // goes to the handle already in line for one (`req`, turned away at the limit above).
    let in_line = req
        .ready()
        .now_or_never()
        .expect("the slot given up was not handed to the handle in line")
        .unwrap()
        .call(Message::from("call in line"));
    // Eight callers queue for the other one.
    let callers: Vec<_> = (0..8)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { req.request(Bytes::from(format!("call {i}"))).await })
        })
        .collect();
    // One of them gets it, and its request reaches the server with the gate still shut.
    wait_for_payloads(&started, b"call", 2).await;
    // The server was told of the callers that gave up, and dropped their handlers' calls.
    wait_for_payloads(&dropped, b"gone", 2).await;
    // Then the server answers everything.
    open_gate.send(true).unwrap();
    assert_eq!(within(in_line).await.unwrap().payload(), "call in line");
    for (i, caller) in callers.into_iter().enumerate() {
        let reply = within(caller).await.unwrap().unwrap();
        assert_eq!(reply, format!("call {i}"));
    }
    // Every slot is free again: two calls are admitted at once.
    for _ in 0..2 {
        let fut = req.ready().now_or_never().expect("a free slot").unwrap();
        within(fut.call(Message::from("again"))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_handed_to_a_handle_that_goes_away_is_passed_on() {
    let GatedServer {
        addr, open_gate, ..
    } = gated_echo_server().await;
    let (mut req, first, second) = client_at_its_limit_of_two(addr, "1", "2").await;
    // A clone waits in line for a slot, then is dropped without coming back for it.
    let mut waiting = req.clone();
    assert!(waiting.ready().now_or_never().is_none());
    open_gate.send(true).unwrap();
    within(first).await.unwrap(); // this slot is handed to `waiting`
    within(second).await.unwrap();
    drop(waiting);
    // Both slots are free again.
    let mut other = req.clone();
    assert!(req.ready().now_or_never().is_some(), "no slot was free");
    assert!(
        other.ready().now_or_never().is_some(),
        "the slot handed to the dropped handle was lost"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_at_random_leave_no_slot_behind() {
    // Requests with an even first byte wait for a gate that stays shut until every caller
    // is done, so that callers give up while waiting for a slot, while their request is
    // queued, and while it is on the wire; the others are answered at once.
    let (open_gate, gate) = watch::channel(false);
    let addr = serve_on_loopback(service_fn(move |req: Request| {
        let mut gate = gate.clone();
        async move {
            if req.msg()[0] % 2 == 0 {
                gate.wait_for(|open| *open).await.unwrap();
            }
            Ok::<_, Infallible>(req.msg().clone())
        }
    }))
    .await;
    let mut req = ReqSocket::with_options(Tcp::default(), ReqOptions::default().max_in_flight(4));
    req.connect(addr).await.unwrap();

    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32u8 {
        let req = req.clone();
        let answered = answered.clone();
        tasks.spawn(async move {
            for i in 0..50u8 {
                let payload = Bytes::from(vec![task.wrapping_add(i), task, i]);
                let fast = payload[0] % 2 == 1;
                if fast && i % 10 == 9 {
                    // A caller that waits for its answer: it gets a slot only if those
                    // abandoned around it came back.
                    let reply = req.request(payload.clone()).await;
                    assert_eq!(reply.unwrap(), payload, "a reply went to the wrong caller");
                    answered.fetch_add(1, Ordering::SeqCst);
                    continue;
                }
                // A caller that runs out of patience (0 to 20 ms) abandons its request
                // wherever it is.
                let patience = Duration::from_millis(u64::from(i % 21));
                let reply = tokio::time::timeout(patience, req.request(payload.clone())).await;
                if let Ok(reply) = reply {
                    assert!(fast, "a request held at the gate was answered");
                    assert_eq!(reply.unwrap(), payload, "a reply went to the wrong caller");
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    within_long(async {
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
    })
    .await;
    assert!(answered.load(Ordering::SeqCst) > 0, "nothing was answered");
    // The held requests are answered now, to callers long gone: their replies are dropped.
    open_gate.send(true).unwrap();
    // Every slot comes back: four calls are admitted at once, and all four are answered.
    let replies = within(async {
        let mut replies = Vec::new();
        for k in 1..=4u8 {
            let svc = req.ready().await.unwrap();
            replies.push(svc.call(Message::from(Bytes::from(vec![k]))));
        }
        futures_util::future::join_all(replies).await
    })
    .await;
    assert_eq!(replies.len(), 4);
    for reply in replies {
        reply.unwrap();
    }
    assert!(req.ready().now_or_never().is_some(), "a slot stayed taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_timeouts_apply_on_both_sides() {
    // The server side: a timeout layer of 50 ms in front of a handler that never answers
    // "slow".
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let handler = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(service_fn(|req: Request| async move {
            if req.msg() == "slow" {
                std::future::pending::<()>().await;
            }
            Ok::<_, Infallible>(req.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    // A client timeout far longer than the server's lets the server's fire: a remote error
    // that says so; a quick call goes through the same stack.
    let patient = ServiceBuilder::new()
        .timeout(Duration::from_secs(10))
        .service(req.clone());
    let slow = within(patient.clone().oneshot(Message::from("slow")))
        .await
        .map_err(Error::from);
    match slow {
        Err(Error::Remote { message, .. }) => assert!(message.contains("timed out"), "{message}"),
        other => panic!("expected the server's timeout as a remote error, got {other:?}"),
    }
    let fast = within(patient.oneshot(Message::from("fast")))
        .await
        .map_err(Error::from)
        .unwrap();
    assert_eq!(fast.payload(), "fast");

    // The client side: a server that never answers at all, so only the client's own
    // timeout layer can end the call, and its error comes back typed.
    let dropped = Payloads::default();
    let silent = serve_on_loopback(service_fn({
        let dropped = dropped.clone();
        move |req: Request| {
            let watch = DropWatch::new(req.msg(), &dropped);
            async move {
                std::future::pending::<()>().await;
                watch.answered();
                Ok::<_, Infallible>(Bytes::new())
            }
        }
    }))
    .await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(silent).await.unwrap();
    let impatient = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(req.clone());
    let gave_up = within(impatient.oneshot(Message::from("anything")))
        .await
        .map_err(Error::from);
    assert!(
        matches!(gave_up, Err(Error::Timeout { after: None })),
        "{gave_up:?}"
    );
    // And the server was told: it dropped the handler's call.
    wait_for_payloads(&dropped, b"anything", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authenticator_admits_known_tokens_and_rejects_others() {
    struct Allow;
    impl msg::Authenticator for Allow {
        fn authenticate(&self, id: &Bytes) -> bool {
            id == "client1"
        }
    }
    let mut rep = RepSocket::new(Tcp::default()).with_auth(Allow);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));

    let mut good = ReqSocket::with_options(
        Tcp::default(),
        ReqOptions::default().auth_token(Bytes::from("client1")),
    );
    within(good.connect(addr)).await.unwrap();
    assert_eq!(within(good.request(Bytes::from("hi"))).await.unwrap(), "hi");

    for options in [
        ReqOptions::default().auth_token(Bytes::from("mallory")),
        ReqOptions::default(),
    ] {
        let mut bad = ReqSocket::with_options(Tcp::default(), options);
        match within(bad.connect(addr)).await {
            Err(Error::HandshakeRejected { reason, .. }) => {
                assert!(reason.contains("authentication"))
            }
            other => panic!("expected a rejected handshake, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_request_is_refused_locally_and_the_connection_lives_on() {
    let mut rep =
        RepSocket::with_options(Tcp::default(), RepOptions::default().max_frame_len(1024));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut req =
        ReqSocket::with_options(Tcp::default(), ReqOptions::default().max_frame_len(1024));
    req.connect(addr).await.unwrap();
    assert!(matches!(
        within(req.request(Bytes::from(vec![0; 2048]))).await,
        Err(Error::FrameTooLarge {
            len: 2048,
            max: 1024
        })
    ));
    assert_eq!(
        within(req.request(Bytes::from("small"))).await.unwrap(),
        "small"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_told_apart_from_a_remote_error_however_it_was_set() {
    // The handler fails fast on "fail" and never answers "hang".
    let addr = serve_on_loopback(service_fn(|req: Request| async move {
        if req.msg() == "fail" {
            return Err::<Bytes, BoxError>("handler said no".into());
        }
        std::future::pending::<()>().await;
        unreachable!()
    }))
    .await;
    let options = ReqOptions::default().timeout(Duration::from_millis(50));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect(addr).await.unwrap();
    // The socket's own timeout.
    assert!(matches!(
        within(req.request(Bytes::from("hang"))).await,
        Err(Error::Timeout { after: Some(after) }) if after == Duration::from_millis(50)
    ));
    assert!(matches!(
        within(req.request(Bytes::from("fail"))).await,
        Err(Error::Remote { .. })
    ));
    // tower's timeout layer: its boxed error comes back typed.
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(req.clone());
    let hang = within(svc.clone().oneshot(Message::from("hang")))
        .await
        .map_err(Error::from);
    assert!(
        matches!(hang, Err(Error::Timeout { after: None })),
        "{hang:?}"
    );
    let fail = within(svc.oneshot(Message::from("fail")))
        .await
        .map_err(Error::from);
    assert!(matches!(fail, Err(Error::Remote { .. })), "{fail:?}");
}

/// More reply bytes than the server's write high-water mark (1 MiB) in flight, with
/// heartbeats off on both sides so that nothing but the data path can wake a stalled
/// connection: the server stops reading while its replies wait, and must start again once
/// a flush takes them under the mark. Before that was fixed, this stalled for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabytes_in_flight_each_way_never_stall_the_server() {
    for serve_as_stream in [false, true] {
        let mut rep = RepSocket::with_options(
            Tcp::default(),
            RepOptions::default().heartbeat(Duration::ZERO, Duration::ZERO),
        );
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        if serve_as_stream {
            tokio::spawn(async move {
                while let Some(request) = rep.next().await {
                    let payload = request.msg().clone();
                    let _ = request.respond(payload);
                }
            });
        } else {
            tokio::spawn(serve(
                rep,
                service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
            ));
        }
        let mut req = ReqSocket::with_options(
            Tcp::default(),
            ReqOptions::default().heartbeat(Duration::ZERO, Duration::ZERO),
        );
        req.connect(addr).await.unwrap();
        // 64 in flight of 256 KiB: 16 MiB each way at any moment, 64 MiB in all.
        let payload = Bytes::from(vec![5u8; 256 * 1024]);
        let requests = futures_util::stream::repeat(payload.clone()).take(256);
        let replies: Vec<_> = within_long(req.pipeline(requests, 64).collect::<Vec<_>>()).await;
        assert_eq!(replies.len(), 256);
        for reply in replies {
            assert_eq!(reply.unwrap(), payload);
        }
    }
}

/// The stream's inbox holds two requests: every connection stops reading while it is full
/// and goes on once the server takes from it. Four clients with 32 requests in flight each
/// all get their own answers; nothing is lost or crossed; and the inbox never held more
/// than its bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_stream_inbox_holds_connections_back_and_loses_nothing() {
    const INBOX: usize = 2;
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 300;
    // The server runs on a runtime of one thread of its own: its connections are tasks on
    // that thread, so while the server takes what waits without yielding, no connection
    // can add to the inbox, and what it counts is exactly what the inbox held.
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    let (most_tx, most_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let server = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            // Heartbeats off: nothing but the inbox may wake a connection held back.
            let mut options = RepOptions::default().heartbeat(Duration::ZERO, Duration::ZERO);
            options.stream_buffer = INBOX;
            let mut rep = RepSocket::with_options(Tcp::default(), options);
            rep.bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(rep.local_addr().unwrap()).unwrap();
            // The most requests found waiting at once, and how many were taken in all.
            let mut most_waiting = 0;
            let mut taken = 0;
            for round in 0.. {
                if taken == CLIENTS * REQUESTS {
                    break;
                }
                // Every few rounds the server takes nothing for a while, so that the
                // connections fill the inbox (that only makes the count below likelier
                // to meet the bound; it orders nothing).
                if round % 8 == 0 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let mut waiting = Vec::new();
                while let Some(Some(request)) = rep.next().now_or_never() {
                    waiting.push(request);
                }
                if waiting.is_empty() {
                    waiting.push(rep.next().await.expect("the socket is open"));
                }
                most_waiting = most_waiting.max(waiting.len());
                taken += waiting.len();
                for request in waiting {
                    let mut answer = request.msg().to_vec();
                    answer.reverse();
                    request.respond(Bytes::from(answer)).unwrap();
                }
            }
            let _ = most_tx.send(most_waiting);
            // The replies still have to be written: the runtime lives until the clients
            // have them all.
            let _ = done_rx.await;
        });
    });
    let addr = within(addr_rx).await.unwrap();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        clients.spawn(async move {
            let mut req = ReqSocket::with_options(
                Tcp::default(),
                ReqOptions::default().heartbeat(Duration::ZERO, Duration::ZERO),
            );
            req.connect(addr).await.unwrap();
            let requests = (0..REQUESTS).map(move |i| Bytes::from(format!("{client}:{i}")));
            let replies: Vec<_> = req
                .pipeline(futures_util::stream::iter(requests.clone()), 32)
                .collect()
                .await;
            assert_eq!(replies.len(), REQUESTS, "client {client}: replies lost");
            for (request, reply) in requests.zip(replies) {
                let mut expected = request.to_vec();
                expected.reverse();
                assert_eq!(reply.unwrap(), expected);
            }
        });
    }
    within(async {
        while let Some(done) = clients.join_next().await {
            done.unwrap();
        }
    })
    .await;
    // The connections stopped reading at the inbox's bound: the room each is told of is
    // reserved for it until its batch is handed over, so the inbox holds at most its
    // capacity across every connection, never the 128 requests the clients had in flight.
    let most_waiting = within(most_rx).await.unwrap();
    done_tx.send(()).unwrap();
    server.join().unwrap();
    eprintln!("at most {most_waiting} requests waited in the inbox at once");
    assert!(
        most_waiting <= INBOX,
        "{most_waiting} requests waited in an inbox of {INBOX} with {CLIENTS} connections"
    );
}
