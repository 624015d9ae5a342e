//! Errors that say why, on both ends: a request over the server's frame limit, protocol
//! errors with their cause, a peer that does not speak msg (TLS against plain, plain
//! against TLS, an HTTP server), `NotConnected` with the last dial's error, refusals that
//! stop the redialing, and `subscribe` with no publisher connected. All over loopback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use msg::retry::RetryPolicy;
use msg::tls::client_config;
use msg::wire::{error_response_code, Frame, FrameError, FrameKind};
use msg::{
    serve, Backoff, Code, Error, PubSocket, RepOptions, RepSocket, ReqOptions, ReqSocket, Request,
    SocketEvent, SocketType, SubOptions, SubSocket, Tcp, Tls,
};
use msg_tests::{encode, raw_client, read_frame_buffered, refusing_addr, within, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::retry::RetryLayer;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// The frame limit of the servers here: 64 KiB.
const LIMIT: usize = 64 * 1024;

/// A reply socket with a 64 KiB frame limit whose handler holds every call until `gate`
/// opens, counting the calls started in `calls`; returns its address and events.
async fn gated_server(
    gate: tokio::sync::watch::Receiver<bool>,
    calls: Arc<AtomicUsize>,
) -> (SocketAddr, msg::Events<SocketAddr>) {
    let mut rep =
        RepSocket::with_options(Tcp::default(), RepOptions::default().max_frame_len(LIMIT));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let events = rep.events();
    tokio::spawn(serve(
        rep,
        service_fn(move |req: Request| {
            let mut gate = gate.clone();
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                let _ = gate.wait_for(|open| *open).await;
                Ok::<_, Infallible>(req.msg().clone())
            }
        }),
    ));
    (addr, events)
}

/// Waits until `calls` reaches `n`.
async fn calls_reach(calls: &AtomicUsize, n: usize) {
    within(async {
        while calls.load(Ordering::SeqCst) < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The events already sent on `events`, without waiting.
fn seen<A: Clone + Send + 'static>(events: &mut msg::Events<A>) -> Vec<SocketEvent<A>> {
    use futures_util::FutureExt;
    std::iter::from_fn(|| events.next().now_or_never().flatten()).collect()
}

/// Sends 25 requests through `svc` (held by the server), then `oversized`, and returns the
/// oversized one's outcome once the 25 are on the server; the 25 tasks are returned to be
/// awaited once the gate opens.
async fn bystanders_and_an_oversized_request<S>(
    svc: S,
    calls: &AtomicUsize,
    oversized: msg::Message,
) -> (
    Result<msg::Message, Error>,
    Vec<tokio::task::JoinHandle<Result<msg::Message, Error>>>,
)
where
    S: tower::Service<msg::Message, Response = msg::Message, Error = Error>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let bystanders: Vec<_> = (0..25)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(svc.oneshot(msg::Message::from(format!("bystander {i}"))))
        })
        .collect();
    calls_reach(calls, 25).await;
    let outcome = within(svc.oneshot(oversized)).await;
    (outcome, bystanders)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_servers_limit_is_refused_by_the_client_naming_it_and_costs_nothing_else(
) {
    let (open, gate) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let (addr, mut server_events) = gated_server(gate, calls.clone()).await;
    // The client's own limit is the default 64 MiB: only the server's says no.
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    within(req.connect(addr)).await.unwrap();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default().idempotent(true)))
        .service(req.clone());
    let big = msg::Message::new(Bytes::from(vec![b'x'; 100_000]));
    let asked = Instant::now();
    let (outcome, bystanders) = bystanders_and_an_oversized_request(svc, &calls, big).await;
    match &outcome {
        Err(Error::FrameTooLarge { len, max }) => assert_eq!((*len, *max), (100_000, LIMIT)),
        other => panic!("{other:?}"),
    }
    assert!(
        outcome.as_ref().unwrap_err().to_string().contains("65536"),
        "the limit is named: {outcome:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    // Nothing was sent: the 25 bystanders are still all the server saw, and they all
    // complete on the connection they started on.
    open.send_replace(true);
    for (i, bystander) in bystanders.into_iter().enumerate() {
        let reply = within(bystander).await.unwrap().unwrap();
        assert_eq!(reply.payload(), &format!("bystander {i}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 25, "not sent, not retried");
    let lost = seen(&mut events)
        .into_iter()
        .chain(seen(&mut server_events))
        .filter(|e| matches!(e, SocketEvent::Disconnected { .. }))
        .count();
    assert_eq!(lost, 0, "no connection was lost");
}

/// A TCP proxy to `server` that zeroes the id of the first frame the server sends (its
/// welcome): the client learns no frame limit, as from a server before limits were sent.
/// Returns its address and the count of bytes it passed to the server.
async fn hiding_the_limit(server: SocketAddr) -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let up = Arc::new(AtomicU64::new(0));
    let counted = up.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(upstream) = TcpStream::connect(server).await else {
                continue;
            };
            let (mut client_rx, mut client_tx) = client.into_split();
            let (mut server_rx, mut server_tx) = upstream.into_split();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = client_rx.read(&mut buf).await {
                    if n == 0 || server_tx.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    counted.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
            tokio::spawn(async move {
                // The welcome: 20 header bytes and one of body; its id is bytes 8..16.
                let mut welcome = [0u8; 21];
                if server_rx.read_exact(&mut welcome).await.is_err() {
                    return;
                }
                welcome[8..16].fill(0);
                if client_tx.write_all(&welcome).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy(&mut server_rx, &mut client_tx).await;
            });
        }
    });
    (addr, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_limit_from_a_client_that_does_not_know_it_is_answered_naming_it_and_never_retried(
) {
    let (open, gate) = tokio::sync::watch::channel(false);
    let calls = Arc::new(AtomicUsize::new(0));
    let (server, mut server_events) = gated_server(gate, calls.clone()).await;
    let (addr, up) = hiding_the_limit(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    within(req.connect(addr)).await.unwrap();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default().idempotent(true)))
        .service(req.clone());
    let big = msg::Message::new(Bytes::from(vec![b'x'; 100_000]));
    let (outcome, bystanders) = bystanders_and_an_oversized_request(svc, &calls, big).await;
    match &outcome {
        Err(Error::Remote { code, message }) => {
            assert_eq!(*code, Code::ResourceExhausted);
            assert!(
                message.contains("100000") && message.contains("65536"),
                "{message}"
            );
        }
        other => panic!("{other:?}"),
    }
    // Sent once: a retry would have sent another 100,000 bytes.
    assert!(
        up.load(Ordering::SeqCst) < 200_000,
        "{}",
        up.load(Ordering::SeqCst)
    );
    open.send_replace(true);
    for (i, bystander) in bystanders.into_iter().enumerate() {
        let reply = within(bystander).await.unwrap().unwrap();
        assert_eq!(reply.payload(), &format!("bystander {i}"));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 25);
    // The connection goes on.
    let reply = within(req.request(Bytes::from("after"))).await.unwrap();
    assert_eq!(reply, "after");
    let lost = seen(&mut events)
        .into_iter()
        .chain(seen(&mut server_events))
        .filter(|e| matches!(e, SocketEvent::Disconnected { .. }))
        .count();
    assert_eq!(lost, 0, "no connection was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_written_client_over_the_limit_gets_an_error_for_that_id_and_the_next_request_is_answered(
) {
    let (_open, gate) = tokio::sync::watch::channel(true);
    let (addr, _events) = gated_server(gate, Arc::default()).await;
    let mut stream = within(raw_client(addr, SocketType::Req)).await.unwrap();
    // Sent in pieces, as a slow link would: the body is passed over as it comes.
    let big = encode(Frame::new(
        FrameKind::Request,
        1,
        Bytes::from(vec![b'x'; 3 * LIMIT]),
    ));
    for piece in big.chunks(10_000) {
        within(stream.write_all(piece)).await.unwrap();
    }
    let after = encode(msg_tests::request_frame(2, b"after"));
    within(stream.write_all(&after)).await.unwrap();
    let mut buf = BytesMut::new();
    let error = read_frame_buffered(&mut stream, &mut buf).await.unwrap();
    assert_eq!((error.kind, error.id), (FrameKind::ErrorResponse, 1));
    assert_eq!(error_response_code(error.encoding), Code::ResourceExhausted);
    let text = String::from_utf8_lossy(&error.payload);
    assert!(
        text.contains(&(3 * LIMIT).to_string()) && text.contains("65536"),
        "{text}"
    );
    let reply = read_frame_buffered(&mut stream, &mut buf).await.unwrap();
    assert_eq!((reply.kind, reply.id), (FrameKind::Response, 2));
    assert_eq!(reply.payload, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_long_to_skip_is_answered_with_the_limit_and_a_go_away_before_the_close() {
    let (_open, gate) = tokio::sync::watch::channel(true);
    let (addr, _events) = gated_server(gate, Arc::default()).await;
    let mut stream = within(raw_client(addr, SocketType::Req)).await.unwrap();
    within(stream.write_all(&encode(msg_tests::request_frame(1, b"first"))))
        .await
        .unwrap();
    // A header announcing 4 GiB: far more than is worth passing over.
    let mut header = encode(Frame::new(FrameKind::Request, 2, Bytes::new()));
    header[16..20].copy_from_slice(&u32::MAX.to_be_bytes());
    within(stream.write_all(&header)).await.unwrap();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    while let Some(frame) = read_frame_buffered(&mut stream, &mut buf).await {
        frames.push(frame);
    }
    let kinds: Vec<_> = frames.iter().map(|f| (f.kind, f.id)).collect();
    assert!(kinds.contains(&(FrameKind::Response, 1)), "{kinds:?}");
    let error = frames
        .iter()
        .find(|f| f.kind == FrameKind::ErrorResponse)
        .expect("an error for request 2");
    assert_eq!(error.id, 2);
    assert_eq!(error_response_code(error.encoding), Code::ResourceExhausted);
    let text = String::from_utf8_lossy(&error.payload);
    assert!(
        text.contains(&u32::MAX.to_string()) && text.contains("65536"),
        "{text}"
    );
    // The reason and the go-away come before the close, which ended the loop above.
    assert_eq!(
        frames.last().map(|f| (f.kind, f.id)),
        Some((FrameKind::GoAway, 2)),
        "{kinds:?}"
    );
}

#[test]
fn protocol_errors_say_what_broke_the_protocol() {
    let cases = [
        (
            FrameError::TooLarge { len: 10, max: 4 },
            "protocol error: frame of 10 bytes exceeds the 4-byte limit",
        ),
        (
            FrameError::BadMagic { found: 0x1603 },
            "protocol error: bad magic 0x1603: the peer does not speak the msg protocol",
        ),
        (
            FrameError::ReservedFlags { flags: 0x80 },
            "protocol error: reserved flag bits 0x80 are set",
        ),
        (
            FrameError::UnknownKind { kind: 0x7f },
            "protocol error: unknown frame kind 0x7f",
        ),
    ];
    for (frame_error, text) in cases {
        assert_eq!(Error::from(frame_error).to_string(), text);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_says_in_its_events_which_protocol_error_closed_a_connection() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut events = rep.events();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut stream = within(raw_client(addr, SocketType::Req)).await.unwrap();
    let mut bad = encode(msg_tests::request_frame(1, b"x"));
    bad[4] = 0x80; // a reserved flag
    within(stream.write_all(&bad)).await.unwrap();
    let error = within(async {
        loop {
            if let Some(SocketEvent::Disconnected { error, .. }) = events.next().await {
                return error;
            }
        }
    })
    .await;
    assert_eq!(
        error.to_string(),
        "protocol error: reserved flag bits 0x80 are set"
    );
}

/// A TLS reply socket on loopback, echoing.
async fn tls_echo() -> SocketAddr {
    let (server, _) = msg_tests::fixture::tls_configs();
    let mut rep = RepSocket::new(Tls::server(server));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_against_a_tls_server_is_told_the_server_speaks_tls() {
    let addr = tls_echo().await;
    let mut req = ReqSocket::new(Tcp::default());
    let outcome = within(req.connect(addr)).await;
    match &outcome {
        Err(e @ Error::NotMsg { hint }) => {
            assert!(
                hint.contains("speaks TLS") && hint.contains("Tls transport"),
                "{hint}"
            );
            assert!(e.to_string().contains("not speaking msg"), "{e}");
            assert!(e.is_permanent());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_against_a_plain_server_is_told_the_server_does_not_speak_tls_and_the_server_says_why(
) {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut server_events = rep.events();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let pki = msg_tests::fixture::pki();
    let tls = Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
    let mut req = ReqSocket::new(tls);
    let outcome = within(req.connect(addr)).await;
    match &outcome {
        Err(Error::NotMsg { hint }) => {
            assert!(
                hint.contains("does not speak TLS") && hint.contains("Tcp"),
                "{hint}"
            )
        }
        other => panic!("{other:?}"),
    }
    // The server saw a TLS ClientHello where a hello belongs, and says so.
    let error = within(async {
        loop {
            if let Some(SocketEvent::HandshakeFailed { error, .. }) = server_events.next().await {
                return error;
            }
        }
    })
    .await;
    match &error {
        Error::NotMsg { hint } => assert!(hint.contains("client speaks TLS"), "{hint}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_against_an_http_server_is_told_it_reached_http() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = stream.read(&mut buf).await;
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                .await;
        }
    });
    let mut req = ReqSocket::new(Tcp::default());
    match within(req.connect(addr)).await {
        Err(Error::NotMsg { hint }) => assert!(hint.contains("HTTP"), "{hint}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lazy_connect_that_never_reaches_its_server_fails_requests_with_the_last_dial_error() {
    let (_held, nobody) = refusing_addr();
    let options = ReqOptions::default()
        .reconnect(
            Backoff::default()
                .initial(Duration::from_millis(10))
                .max(Duration::from_millis(20)),
        )
        .reconnect_wait(Duration::from_millis(300));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect_lazy(nobody).unwrap();
    let outcome = within(req.request(Bytes::from("hello"))).await;
    let e = outcome.unwrap_err();
    match &e {
        Error::NotConnected { last: Some(last) } => {
            assert!(matches!(**last, Error::Transport(_)), "{last:?}")
        }
        other => panic!("{other:?}"),
    }
    let text = e.to_string();
    assert!(
        text.contains("not connected")
            && text.contains("last dial failed")
            && text.contains("refused"),
        "{text}"
    );
    assert!(e.is_connection_error());
    assert!(RetryPolicy::default().is_retryable(&e));
    assert!(std::error::Error::source(&e).is_some());
}

/// Waits for the `GaveUp` event on `events`, counting the `Rejected` ones before it.
async fn gave_up<A: Clone + Send + 'static>(events: &mut msg::Events<A>) -> (Error, usize) {
    within(async {
        let mut rejected = 0;
        loop {
            match events.next().await {
                Some(SocketEvent::GaveUp { error }) => return (error, rejected),
                Some(SocketEvent::Rejected { .. }) => rejected += 1,
                Some(_) => {}
                None => panic!("the events ended"),
            }
        }
    })
    .await
}

/// Backoff for the dials here: fast, so that a socket that kept redialing would show it.
fn fast() -> Backoff {
    Backoff::default()
        .initial(Duration::from_millis(1))
        .max(Duration::from_millis(5))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_req_socket_lazily_pointed_at_a_publisher_stops_redialing_and_its_requests_say_why() {
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let addr = publisher.local_addr().unwrap();
    let options = ReqOptions::default()
        .reconnect(fast())
        .reconnect_wait(Duration::from_secs(600));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    let mut events = req.events();
    req.connect_lazy(addr).unwrap();
    let (error, rejected) = gave_up(&mut events).await;
    assert_eq!(rejected, 1, "one dial, refused, and no more");
    match &error {
        Error::HandshakeRejected { reason, code } => {
            assert!(reason.contains("req") && reason.contains("pub"), "{reason}");
            assert_eq!(*code, Code::InvalidArgument);
        }
        other => panic!("{other:?}"),
    }
    assert!(error.is_permanent());
    // The next request fails at once with the refusal, not after the wait.
    let asked = Instant::now();
    let outcome = within(req.request(Bytes::from("hello"))).await;
    assert!(
        matches!(outcome, Err(Error::HandshakeRejected { .. })),
        "{outcome:?}"
    );
    assert!(asked.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_refused_by_admission_stops_redialing_with_the_refusal() {
    let admission = service_fn(|_: msg::admission::AdmissionRequest<SocketAddr>| async {
        Ok::<_, Infallible>(msg::admission::Verdict::reject("token not on the list"))
    });
    let addr =
        msg_tests::echo_on_loopback(RepSocket::new(Tcp::default()).with_admission(admission)).await;
    let options = ReqOptions::default()
        .reconnect(fast())
        .reconnect_wait(Duration::from_secs(600));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    let mut events = req.events();
    req.connect_lazy(addr).unwrap();
    let (error, rejected) = gave_up(&mut events).await;
    assert_eq!(rejected, 1);
    assert!(
        matches!(&error, Error::HandshakeRejected { reason, code: Code::PermissionDenied } if reason == "token not on the list"),
        "{error:?}"
    );
    let outcome = within(req.request(Bytes::from("hello"))).await;
    assert!(
        matches!(outcome, Err(Error::HandshakeRejected { .. })),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_at_its_connection_limit_is_redialed_until_it_has_room() {
    let mut rep = RepSocket::with_options(Tcp::default(), RepOptions::default().max_connections(1));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut first = ReqSocket::new(Tcp::default());
    within(first.connect(addr)).await.unwrap();
    let options = ReqOptions::default().reconnect(fast());
    let mut second = ReqSocket::with_options(Tcp::default(), options);
    let mut events = second.events();
    second.connect_lazy(addr).unwrap();
    // Refused for now, and redialed.
    within(async {
        let mut rejected = 0;
        while rejected < 3 {
            match events.next().await {
                Some(SocketEvent::Rejected { .. }) => rejected += 1,
                Some(SocketEvent::GaveUp { error }) => panic!("gave up: {error:?}"),
                _ => {}
            }
        }
    })
    .await;
    first.close().await;
    drop(first);
    let reply = within(second.request(Bytes::from("room"))).await.unwrap();
    assert_eq!(reply, "room");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sub_socket_lazily_pointed_at_a_rep_stops_redialing_and_subscribe_says_why() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let options = SubOptions::default()
        .reconnect(fast())
        .reconnect_wait(Duration::from_secs(600));
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    let mut events = sub.events();
    sub.connect_lazy(addr);
    let (error, rejected) = gave_up(&mut events).await;
    assert_eq!(rejected, 1);
    assert!(
        matches!(&error, Error::HandshakeRejected { reason, .. } if reason.contains("sub") && reason.contains("rep")),
        "{error:?}"
    );
    let outcome = within(sub.subscribe("t")).await;
    assert!(
        matches!(outcome, Err(Error::HandshakeRejected { .. })),
        "{outcome:?}"
    );
    drop(rep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_with_no_publisher_connected_waits_a_bounded_time_then_says_why() {
    // Never connected: nothing to wait for.
    let never = SubSocket::new(Tcp::default());
    let outcome = within(never.subscribe("t")).await;
    assert!(
        matches!(outcome, Err(Error::NotConnected { last: None })),
        "{outcome:?}"
    );
    // Dialing a server that is not there: waits `reconnect_wait`, then fails with the last
    // dial's error.
    let (_held, nobody) = refusing_addr();
    let options = SubOptions::default()
        .reconnect(fast())
        .reconnect_wait(Duration::from_millis(300));
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    sub.connect_lazy(nobody);
    let asked = Instant::now();
    let outcome = within(sub.subscribe("t")).await;
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "{:?}",
        asked.elapsed()
    );
    match &outcome {
        Err(Error::NotConnected { last: Some(last) }) => {
            assert!(matches!(**last, Error::Transport(_)), "{last:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sub.subscriptions(), vec!["t".to_owned()], "kept for later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_while_a_lazy_connect_dials_returns_once_the_publisher_applied_it() {
    // The relay points nowhere first, so that the subscriber's dials fail, then at the
    // publisher.
    let (_held, nobody) = refusing_addr();
    let relay = Relay::start(nobody).await;
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let options = SubOptions::default().reconnect(fast());
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    let mut events = sub.events();
    sub.connect_lazy(relay.addr());
    within(async {
        while !matches!(events.next().await, Some(SocketEvent::ConnectFailed { .. })) {}
    })
    .await;
    let subscribe = tokio::spawn(async move {
        sub.subscribe("t").await?;
        Ok::<_, Error>(sub)
    });
    relay.retarget(publisher.local_addr().unwrap());
    let mut sub = within(subscribe).await.unwrap().unwrap();
    // Applied: a message published now is received.
    publisher.publish("t", Bytes::from("hi")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "hi");
}
