//! The sockets as one thing (issue 17, item 6): what every socket shares (one options
//! vocabulary, validated once; a connect bounded by default; one connection per socket and
//! every clone), and the defects that were found there, each over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use msg::tls::{client_config, TestPki};
use msg::{
    serve, Error, PubOptions, PubSocket, RepOptions, RepSocket, ReqOptions, ReqSocket, Request,
    SubOptions, SubSocket, Tcp, Tls,
};
use msg_tests::within;
use tokio_stream::StreamExt;
use tower::service_fn;

/// Waits, polling every few milliseconds within [`WAIT`](msg_tests::WAIT), until `ready`
/// holds; the failure names the caller's line.
#[track_caller]
fn until(mut ready: impl FnMut() -> bool) -> impl std::future::Future<Output = ()> {
    let step = std::panic::Location::caller();
    async move {
        let waited = tokio::time::timeout(msg_tests::WAIT, async {
            while !ready() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        waited
            .await
            .unwrap_or_else(|_| panic!("the condition at {step} never held"));
    }
}

async fn publisher(options: PubOptions) -> (PubSocket<Tcp>, SocketAddr) {
    let mut socket = PubSocket::with_options(Tcp::default(), options);
    within(socket.bind("127.0.0.1:0")).await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

/// Publishes `n` messages on `topic`, numbered from `from`.
async fn publish_n(publisher: &PubSocket<Tcp>, topic: &str, from: usize, n: usize) {
    for i in from..from + n {
        within(publisher.publish(topic, Bytes::from(i.to_string())))
            .await
            .unwrap();
    }
}

/// `subscribe().await` from the loop that reads the socket, while the inbox is full, used
/// to wait forever: the connection stopped reading at the full inbox, before the ack, and
/// the only task that would make room was the one waiting for the ack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_from_the_reading_loop_completes_while_the_inbox_is_full() {
    const INBOX: usize = 4;
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(INBOX));
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("a")).await.unwrap();

    // The inbox fills.
    publish_n(&publisher, "a", 0, INBOX).await;
    until(|| sub.stats().received == INBOX as u64).await;
    // More wait in the connection: the first take hands them to the inbox, full again.
    publish_n(&publisher, "a", INBOX, INBOX).await;
    let first = within(sub.next()).await.expect("a message");
    assert_eq!(first.payload(), "0");
    until(|| sub.stats().received == 2 * INBOX as u64).await;
    // And more behind them, which the connection holds with nowhere to put them.
    publish_n(&publisher, "a", 2 * INBOX, INBOX).await;
    // Written to the connection, so ahead of the ack to come.
    until(|| {
        publisher
            .subscriber_stats()
            .iter()
            .any(|s| s.sent == 3 * INBOX as u64)
    })
    .await;

    // The reading loop follows one more topic.
    within(sub.subscribe("b")).await.unwrap();
    within(publisher.publish("b", Bytes::from("on b")))
        .await
        .unwrap();

    // Everything arrives, in order, and the new topic's message after it.
    let mut payloads = Vec::new();
    while payloads.len() < 3 * INBOX {
        let msg = within(sub.next()).await.expect("a message");
        payloads.push(msg.payload().clone());
    }
    let expected: Vec<Bytes> = (1..3 * INBOX + 1)
        .map(|i| Bytes::from(i.to_string()))
        .collect();
    assert_eq!(payloads[..3 * INBOX - 1], expected[..3 * INBOX - 1]);
    assert_eq!(payloads[3 * INBOX - 1], "on b");
}

/// The same with thousands of publications between the full inbox and the ack: the
/// connection used to stop reading once it held one batch (256 messages) past the inbox,
/// so an ack behind more waited for the reading loop that was waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_from_the_reading_loop_completes_behind_thousands_of_held_messages() {
    const INBOX: usize = 4;
    const BEHIND: usize = 3_000;
    let (publisher, addr) = publisher(PubOptions::default().high_water_mark(2 * BEHIND)).await;
    let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(INBOX));
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("a")).await.unwrap();

    // The inbox fills, and thousands more wait behind it, all written to the connection.
    publish_n(&publisher, "a", 0, INBOX + BEHIND).await;
    until(|| {
        publisher
            .subscriber_stats()
            .iter()
            .any(|s| s.sent == (INBOX + BEHIND) as u64)
    })
    .await;
    // The inbox took what it could (a first batch may overfill it) and is full.
    until(|| sub.stats().received >= INBOX as u64).await;

    // The reading loop follows one more topic, without reading.
    within(sub.subscribe("b")).await.unwrap();
    within(publisher.publish("b", Bytes::from("on b")))
        .await
        .unwrap();

    // Everything arrives, in order, and the new topic's message after it.
    for i in 0..INBOX + BEHIND {
        let msg = within(sub.next()).await.expect("a message");
        assert_eq!(msg.payload(), &Bytes::from(i.to_string()));
    }
    let last = within(sub.next()).await.expect("the message on b");
    assert_eq!(last.payload(), "on b");
}

/// `RepOptions::stream_buffer` bounded each connection, not the socket: a connection kept
/// the room it was told of, so N connections could queue N times the buffer. Here the
/// room each connection was told of is set up step by step, then every client sends more
/// than the buffer: once every connection has stopped reading, at most the buffer waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_buffer_bounds_the_requests_of_every_connection_together() {
    const BUFFER: usize = 4;
    const CLIENTS: usize = 4;
    let mut options = RepOptions::default().heartbeat(Duration::ZERO, Duration::ZERO);
    options.stream_buffer = BUFFER;
    let mut rep = RepSocket::with_options(Tcp::default(), options);
    within(rep.bind("127.0.0.1:0")).await.unwrap();
    let addr = rep.local_addr().unwrap();

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut req = ReqSocket::new(Tcp::default());
        within(req.connect(addr)).await.unwrap();
        clients.push(req);
    }
    // The stream serves the connections once polled; nothing is sent yet to be taken.
    within(async {
        while rep.stats().connections < CLIENTS {
            assert!(rep.next().now_or_never().is_none(), "nothing was sent yet");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    let mut replies = tokio::task::JoinSet::new();
    let mut send = |req: &ReqSocket<Tcp>, payload: String| {
        let req = req.clone();
        replies.spawn(async move {
            let reply = req.request(Bytes::from(payload.clone())).await;
            (payload, reply)
        });
    };
    // One request from each client in turn, each taken into the buffer before the next:
    // the buffer fills, one request from each connection.
    for (i, req) in clients.iter().enumerate() {
        send(req, format!("{i}:0"));
        until(|| rep.stats().queued == i + 1).await;
    }
    // Then more from every client than the buffer holds.
    for (i, req) in clients.iter().enumerate() {
        for n in 1..=BUFFER {
            send(req, format!("{i}:{n}"));
        }
    }
    until(|| rep.stats().held_back == CLIENTS).await;
    let stats = rep.stats();
    assert!(
        stats.queued <= BUFFER,
        "{} requests wait in a stream buffer of {BUFFER} ({CLIENTS} connections)",
        stats.queued
    );

    // Nothing is lost: every request is taken and answered.
    let total = CLIENTS * (BUFFER + 1);
    for _ in 0..total {
        let request = within(rep.next()).await.expect("a request");
        let payload = request.msg().clone();
        request.respond(payload).unwrap();
    }
    let mut answered = 0;
    while let Some(done) = within(replies.join_next()).await {
        let (payload, reply) = done.unwrap();
        assert_eq!(reply.unwrap(), payload);
        answered += 1;
    }
    assert_eq!(answered, total);
}

/// A public field set to zero bypassed the clamps of the builders: a client with
/// `max_in_flight` 0 waited forever for a slot, and `max_frame_len` 0 refused every frame.
/// Validated when the socket is made, each is raised to the least value with a meaning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_with_zero_fields_still_works() {
    let mut server_options = RepOptions::default();
    server_options.max_frame_len = 0;
    server_options.max_in_flight_per_conn = 0;
    server_options.stream_buffer = 0;
    server_options.backlog = 0;
    server_options.max_connections = 0;
    server_options.max_handshakes = 0;
    let mut rep = RepSocket::with_options(Tcp::default(), server_options);
    within(rep.bind("127.0.0.1:0")).await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(
            |req: Request| async move { Ok::<_, std::convert::Infallible>(req.msg().clone()) },
        ),
    ));

    let mut options = ReqOptions::default();
    options.max_frame_len = 0;
    options.max_in_flight = 0;
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    within(req.connect(addr)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("zero"))).await.unwrap(),
        "zero"
    );
    assert_eq!(req.options().max_in_flight, 1);
    assert!(req.options().max_frame_len > 0);
}

/// The same for Pub/Sub: `high_water_mark` or `high_water_bytes` 0 dropped every message,
/// `inbox_bytes` 0 held every message back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_with_zero_fields_still_works() {
    let mut options = PubOptions::default();
    options.high_water_mark = 0;
    options.high_water_bytes = 0;
    options.max_frame_len = 0;
    let (publisher, addr) = publisher(options).await;

    let mut options = SubOptions::default();
    options.inbox = 0;
    options.inbox_bytes = 0;
    options.max_frame_len = 0;
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    for i in 0..3 {
        within(publisher.publish("t", Bytes::from(format!("m{i}"))))
            .await
            .unwrap();
        let msg = within(sub.next()).await.expect("a message");
        assert_eq!(msg.payload(), format!("m{i}").as_str());
    }
    assert_eq!(publisher.stats().dropped, 0);
}

/// A loopback listener that accepts every connection and never says a word: a black hole.
async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    addr
}

/// A client's connect had no default bound: the server counts the transport's exchange
/// against its handshake timeout, the client did not, so a TLS client dialing a server
/// that accepts and never answers waited forever. Now the default connect timeout covers
/// the transport's exchange and the hello together, for both sockets that dial.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_to_a_black_hole_fails_within_the_default_connect_timeout() {
    let addr = black_hole().await;
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let tls = Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
    let default = msg::DialOptions::default().connect_timeout;

    let mut req = ReqSocket::new(tls.clone());
    let mut sub = SubSocket::new(tls);
    let (req_outcome, sub_outcome) =
        within(async { tokio::join!(req.connect(addr), sub.connect(addr)) }).await;
    for outcome in [req_outcome, sub_outcome] {
        match outcome {
            Err(Error::ConnectTimeout { after }) => assert_eq!(after, default),
            other => panic!("expected a connect timeout, got {other:?}"),
        }
    }
}

/// A second `connect` on a socket, or on any clone of it, made a second connection for
/// that handle alone (and left the clones on the first one). Each socket has one set of
/// endpoints, shared by every clone: a second `connect` adds to it (issue 20; it was
/// refused with `Error::AlreadyConnected` before), and every handle keeps being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connect_on_a_socket_or_any_clone_adds_an_endpoint() {
    let addr = msg_tests::echo_server().await;
    let other = msg_tests::echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut early = req.clone();
    within(req.connect(addr)).await.unwrap();
    let mut late = req.clone();
    for handle in [&mut req, &mut early, &mut late] {
        within(handle.connect(other)).await.unwrap();
        // The first endpoint added, and up.
        assert_eq!(handle.peer_addr(), Some(addr));
        assert_eq!(
            within(handle.request(Bytes::from("one"))).await.unwrap(),
            "one"
        );
    }
}

/// `connect_lazy` adds to the endpoints every clone shares, taken before or after, as
/// `connect` does (both were refused with `Error::AlreadyConnected` once the socket had a
/// connection, before issue 20); a `connect` that fails adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_lazy_and_a_failed_connect_act_on_the_state_every_clone_shares() {
    let addr = msg_tests::echo_server().await;
    let (_held, nobody) = msg_tests::refusing_addr();

    // A first connect that fails claims nothing.
    let mut req = ReqSocket::new(Tcp::default());
    let mut early = req.clone();
    assert!(within(req.connect(nobody)).await.is_err());
    within(early.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("a"))).await.unwrap(), "a");
    req.connect_lazy(addr).unwrap();

    // connect_lazy on a clone serves the original, and a later connect anywhere adds to it.
    let mut lazy = ReqSocket::new(Tcp::default());
    let mut clone = lazy.clone();
    clone.connect_lazy(addr).unwrap();
    let mut late = lazy.clone();
    for handle in [&mut lazy, &mut clone, &mut late] {
        within(handle.connect(addr)).await.unwrap();
        handle.connect_lazy(addr).unwrap();
        assert_eq!(within(handle.request(Bytes::from("b"))).await.unwrap(), "b");
    }
}

/// `SubSocket::close` was a plain function that only asked the connections to stop, so a
/// caller could not know when they had. It is async now, like the other sockets' `close`:
/// when it returns, every publisher connection is closed (cleanly, within the linger).
#[tokio::test(flavor = "current_thread")]
async fn sub_close_returns_once_its_connections_are_closed() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut sub = SubSocket::with_options(
        Tcp::default(),
        SubOptions::default().linger(Duration::from_secs(2)),
    );
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    within(publisher.publish("t", Bytes::from("before close")))
        .await
        .unwrap();
    until(|| sub.stats().received == 1).await;
    assert_eq!(sub.stats().publishers, 1);

    within(sub.close()).await;
    assert_eq!(sub.stats().publishers, 0, "a connection outlived close");
    // The publisher sees it leave; what was received is still taken, then the stream ends.
    until(|| publisher.stats().subscribers == 0).await;
    let kept = within(sub.next())
        .await
        .expect("the message received before close");
    assert_eq!(kept.payload(), "before close");
    assert!(within(sub.next()).await.is_none());
}

/// A `connect` given up by its caller (its future dropped mid-dial) claims nothing either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_given_up_mid_dial_leaves_the_socket_free_to_connect() {
    let hole = black_hole().await;
    let addr = msg_tests::echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    // The black hole never answers the hello: the dial cannot end before this bound.
    let given_up = tokio::time::timeout(Duration::from_millis(100), req.connect(hole)).await;
    assert!(given_up.is_err(), "{given_up:?}");
    within(req.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("c"))).await.unwrap(), "c");
}
