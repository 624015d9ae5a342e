//! Durability over real loopback sockets: servers that restart, links that are cut or
//! freeze (through the test relay), requests that time out by the thousand, admission,
//! transport layers, graceful close, and the events that tell of it all.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::admission::{AdmissionRequest, Verdict};
use msg::transport::TransportError;
use msg::{
    serve, Error, PubSocket, RepOptions, RepSocket, ReqOptions, ReqSocket, Request, SocketEvent,
    SubSocket, Tcp,
};
use msg_tests::{echo_server, within, Relay};
use tokio::sync::{oneshot, watch};
use tower::{service_fn, ServiceBuilder};

#[allow(dead_code)]
#[path = "../examples/challenge_response.rs"]
mod challenge_response;
use challenge_response::ChallengeResponseLayer;

/// Fast heartbeats for the tests that freeze a link.
const BEAT: Duration = Duration::from_millis(100);
const SILENCE: Duration = Duration::from_millis(500);

/// An echo server run by `serve` that stops when the returned sender is dropped or sent to;
/// the join handle finishes once it has.
async fn stoppable_echo(addr: SocketAddr) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let mut rep = RepSocket::new(Tcp::default());
    within(async {
        // The port of a server that just went away may take a moment to be free.
        while rep.bind(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let service =
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) });
        let _ = serve(rep, service)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, server)
}

/// A loopback address nobody listens on (yet).
fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

/// Takes events until one matches, returning those seen on the way and the match.
async fn until<A: Clone + Send + 'static>(
    events: &mut msg::Events<A>,
    mut wanted: impl FnMut(&SocketEvent<A>) -> bool,
) -> Vec<SocketEvent<A>> {
    within(async {
        let mut seen = Vec::new();
        while let Some(event) = events.next().await {
            let done = wanted(&event);
            seen.push(event);
            if done {
                return seen;
            }
        }
        panic!("the event stream ended");
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn req_socket_recovers_within_a_second_of_its_server_returning_and_no_request_hangs() {
    let addr = free_addr();
    let (stop, server) = stoppable_echo(addr).await;
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(400));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect(addr).await.unwrap();
    let clone = req.clone();
    assert_eq!(within(req.request(Bytes::from("1"))).await.unwrap(), "1");

    stop.send(()).unwrap();
    within(server).await.unwrap();
    // While the server is away, requests fail with typed errors; none hangs.
    for _ in 0..3 {
        let outcome = within(req.request(Bytes::from("away"))).await;
        assert!(
            matches!(outcome, Err(ref e) if e.is_connection_error()),
            "{outcome:?}"
        );
    }

    let (_stop, _server) = stoppable_echo(addr).await;
    let back = Instant::now();
    let reply = within(async {
        loop {
            // A clone made before the restart follows the socket to its new connection.
            match clone.request(Bytes::from("again")).await {
                Ok(reply) => return reply,
                Err(e) => assert!(e.is_connection_error(), "{e:?}"),
            }
        }
    })
    .await;
    assert_eq!(reply, "again");
    // Backoff caps redials at 1 s; the rest is slack for a loaded machine.
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "{:?}",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_socket_recovers_its_subscriptions_when_its_publisher_returns_on_the_same_port() {
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let addr = publisher.local_addr().unwrap();
    let mut sub = SubSocket::new(Tcp::default());
    let mut events = sub.events();
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("ticks.>")).await.unwrap();
    publisher
        .publish("ticks.a", Bytes::from("before"))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "before");

    publisher.close().await;
    drop(publisher);
    until(&mut events, |e| {
        matches!(e, SocketEvent::Disconnected { .. })
    })
    .await;

    let mut publisher = PubSocket::new(Tcp::default());
    within(async {
        while publisher.bind(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let back = Instant::now();
    // The subscription is replayed on the new connection before anything flows: publish
    // until it arrives.
    let received = within(async {
        loop {
            publisher
                .publish("ticks.b", Bytes::from("after"))
                .await
                .unwrap();
            if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await
            {
                return msg;
            }
        }
    })
    .await;
    assert_eq!(received.payload(), "after");
    assert!(
        back.elapsed() < Duration::from_secs(3),
        "{:?}",
        back.elapsed()
    );
}

/// A server whose handlers wait for `gate` to open, counting the calls started and the
/// calls dropped unfinished.
struct Gated {
    addr: SocketAddr,
    gate: watch::Sender<bool>,
    started: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// Counts a call dropped before it finished.
struct DropCount(Arc<AtomicUsize>, bool);

impl Drop for DropCount {
    fn drop(&mut self) {
        if !self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn gated_server(options: RepOptions) -> Gated {
    let mut rep = RepSocket::with_options(Tcp::default(), options);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let (gate, open) = watch::channel(false);
    let started = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(AtomicUsize::new(0));
    let (s, d) = (started.clone(), dropped.clone());
    tokio::spawn(serve(
        rep,
        service_fn(move |req: Request| {
            let mut open = open.clone();
            s.fetch_add(1, Ordering::SeqCst);
            let guard = DropCount(d.clone(), false);
            async move {
                let mut guard = guard;
                let _ = open.wait_for(|open| *open).await;
                guard.1 = true;
                Ok::<_, Infallible>(req.msg().clone())
            }
        }),
    ));
    Gated {
        addr,
        gate,
        started,
        dropped,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_cut_mid_flight_fails_the_requests_at_once_and_the_socket_redials_by_itself() {
    let server = gated_server(RepOptions::default()).await;
    let relay = Relay::start(server.addr).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect(relay.addr()).await.unwrap();
    until(&mut events, |e| matches!(e, SocketEvent::Connected { .. })).await;
    let in_flight: Vec<_> = (0..10)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { req.request(Bytes::from(format!("{i}"))).await })
        })
        .collect();
    within(async {
        while server.started.load(Ordering::SeqCst) < 10 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    relay.cut();
    for request in in_flight {
        let outcome = within(request).await.unwrap();
        assert!(
            matches!(outcome, Err(Error::ConnectionClosed)),
            "{outcome:?}"
        );
    }
    let seen = until(&mut events, |e| matches!(e, SocketEvent::Connected { .. })).await;
    assert!(
        seen.iter()
            .any(|e| matches!(e, SocketEvent::Disconnected { .. })),
        "{seen:?}"
    );
    server.gate.send(true).unwrap();
    assert_eq!(
        within(req.request(Bytes::from("after"))).await.unwrap(),
        "after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_link_is_found_by_heartbeats_on_both_sides_within_the_timeout() {
    let server = gated_server(RepOptions::default().heartbeat(BEAT, SILENCE)).await;
    let relay = Relay::start(server.addr).await;
    let options = ReqOptions::default().heartbeat(BEAT, SILENCE);
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    let mut events = req.events();
    req.connect(relay.addr()).await.unwrap();
    // A quiet connection stays up through many heartbeat intervals.
    tokio::time::sleep(SILENCE * 2).await;
    assert!(req.stats().connected);
    let request = {
        let req = req.clone();
        tokio::spawn(async move { req.request(Bytes::from("into the void")).await })
    };
    within(async {
        while server.started.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    relay.freeze();
    let frozen = Instant::now();
    let bound = SILENCE + Duration::from_secs(2);
    // The client gives the link up: the request fails, the event says why.
    let outcome = tokio::time::timeout(bound, request)
        .await
        .expect("the client noticed the frozen link in time")
        .unwrap();
    assert!(
        matches!(outcome, Err(Error::ConnectionClosed)),
        "{outcome:?}"
    );
    let seen = until(&mut events, |e| {
        matches!(e, SocketEvent::Disconnected { .. })
    })
    .await;
    match seen.last() {
        Some(SocketEvent::Disconnected { error, .. }) => {
            assert!(
                matches!(**error, Error::HeartbeatTimeout { .. }),
                "{error:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    // Silence is counted from the last frame heard, which may be up to an interval (and a
    // ping's round trip) before the freeze.
    assert!(
        frozen.elapsed() >= SILENCE - BEAT * 2,
        "given up before the timeout"
    );
    // The server drops its side too, and the call with it.
    tokio::time::timeout(bound, relay.server_closed(1))
        .await
        .expect("the server noticed the frozen link in time");
    within(async {
        while server.dropped.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_thousand_requests_timing_out_leave_both_sides_their_full_capacity() {
    let server = gated_server(RepOptions::default()).await;
    let options = ReqOptions::default().timeout(Duration::from_millis(30));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect(server.addr).await.unwrap();

    let mut calls: FuturesUnordered<_> = (0..3000)
        .map(|i| req.request(Bytes::from(format!("{i}"))))
        .collect();
    let mut timeouts = 0;
    within(async {
        while let Some(outcome) = calls.next().await {
            assert!(matches!(outcome, Err(Error::Timeout { .. })), "{outcome:?}");
            timeouts += 1;
        }
    })
    .await;
    assert_eq!(timeouts, 3000);
    drop(calls);
    // The client freed every slot at once, and the server dropped every call it started.
    assert_eq!(req.stats().in_flight, 0, "{:?}", req.stats());
    within(async {
        while server.dropped.load(Ordering::SeqCst) < server.started.load(Ordering::SeqCst) {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(server.started.load(Ordering::SeqCst) >= 1024);

    // Full capacity on both sides: a full window of requests is answered.
    server.gate.send(true).unwrap();
    let replies: Vec<_> = within(
        (0..1024)
            .map(|i| {
                let req = req.clone();
                async move { req.request(Bytes::from(format!("{i}"))).await }
            })
            .collect::<FuturesUnordered<_>>()
            .collect(),
    )
    .await;
    assert_eq!(replies.len(), 1024);
    assert!(replies.iter().all(Result::is_ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_request_says_so_and_its_answer_goes_nowhere() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let options = ReqOptions::default().timeout(Duration::from_millis(50));
    let mut req = ReqSocket::with_options(Tcp::default(), options);
    req.connect(addr).await.unwrap();
    let timed_out = within(req.request(Bytes::from("slow"))).await;
    assert!(
        matches!(timed_out, Err(Error::Timeout { .. })),
        "{timed_out:?}"
    );
    let pending = within(rep.next()).await.unwrap();
    within(async {
        while !pending.is_cancelled() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(pending.respond(Bytes::from("too late")).is_err());
    // The connection is fine: the next request is answered.
    let next = tokio::spawn(async move { req.request(Bytes::from("next")).await });
    let pending = within(rep.next()).await.unwrap();
    pending.respond(Bytes::from("answered")).unwrap();
    assert_eq!(within(next).await.unwrap().unwrap(), "answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_lazy_before_the_server_binds_is_answered_once_it_does() {
    let addr = free_addr();
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect_lazy(addr);
    let request = {
        let req = req.clone();
        tokio::spawn(async move { req.request(Bytes::from("early")).await })
    };
    // The server is not there yet.
    until(&mut events, |e| {
        matches!(e, SocketEvent::ConnectFailed { .. })
    })
    .await;
    let (_stop, _server) = stoppable_echo(addr).await;
    assert_eq!(within(request).await.unwrap().unwrap(), "early");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_that_refuses_gives_the_client_its_reason_on_every_server_socket() {
    let admission = service_fn(|req: AdmissionRequest<SocketAddr>| async move {
        Ok::<_, Infallible>(match req.token() {
            Some(token) if token == "on-the-list" => Verdict::Admit,
            _ => Verdict::reject("token not on the list"),
        })
    });
    let mut rep = RepSocket::new(Tcp::default()).with_admission(admission);
    let mut server_events = rep.events();
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));

    let mut stranger = ReqSocket::new(Tcp::default());
    match within(stranger.connect(addr)).await {
        Err(Error::HandshakeRejected { reason }) => assert_eq!(reason, "token not on the list"),
        other => panic!("{other:?}"),
    }
    let seen = until(&mut server_events, |e| {
        matches!(e, SocketEvent::Refused { .. })
    })
    .await;
    assert!(
        matches!(seen.last(), Some(SocketEvent::Refused { reason, .. }) if reason == "token not on the list")
    );
    let mut friend = ReqSocket::with_options(
        Tcp::default(),
        ReqOptions::default().auth_token("on-the-list"),
    );
    within(friend.connect(addr)).await.unwrap();
    assert_eq!(
        within(friend.request(Bytes::from("hi"))).await.unwrap(),
        "hi"
    );

    // The same on a publisher.
    let mut publisher = PubSocket::new(Tcp::default()).with_admission(admission);
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(Tcp::default());
    match within(sub.connect(publisher.local_addr().unwrap())).await {
        Err(Error::HandshakeRejected { reason }) => assert_eq!(reason, "token not on the list"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenge_response_layer_serves_all_four_sockets() {
    let layer = ChallengeResponseLayer::new(b"shared secret");
    let transport = ServiceBuilder::new().layer(layer).service(Tcp::default());

    let mut rep = RepSocket::new(transport.clone());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut req = ReqSocket::new(transport.clone());
    within(req.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("ok"))).await.unwrap(), "ok");

    let mut publisher = PubSocket::new(transport.clone());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(transport.clone());
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    publisher.publish("t", Bytes::from("news")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "news");

    // The wrong key, or no layer at all, does not get in.
    let wrong = ServiceBuilder::new()
        .layer(ChallengeResponseLayer::new(b"guess"))
        .service(Tcp::default());
    let mut intruder = ReqSocket::new(wrong);
    match within(intruder.connect(addr)).await {
        Err(Error::Transport(TransportError::Handshake { .. })) => {}
        other => panic!("{other:?}"),
    }
    let mut plain = ReqSocket::with_options(
        Tcp::default(),
        ReqOptions::default().handshake_timeout(Duration::from_millis(300)),
    );
    let outcome = within(plain.connect(addr)).await;
    assert!(outcome.is_err(), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn towers_timeout_layer_over_a_transport_bounds_connect() {
    // A server that accepts and then says nothing: the challenge never comes.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let _held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let transport = ServiceBuilder::new()
        .timeout(Duration::from_millis(200))
        .layer(ChallengeResponseLayer::new(b"secret"))
        .service(Tcp::default());
    let mut req = ReqSocket::new(transport);
    match within(req.connect(addr)).await {
        Err(Error::Transport(TransportError::TimedOut)) => {}
        other => panic!("{other:?}"),
    }
    // And a timeout over a bare transport is a transport too.
    let addr = echo_server().await;
    let transport = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .service(Tcp::default());
    let mut req = ReqSocket::new(transport);
    within(req.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("x"))).await.unwrap(), "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_drains_what_is_in_flight_then_refuses_new_requests() {
    let server = gated_server(RepOptions::default()).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(server.addr).await.unwrap();
    let in_flight: Vec<_> = (0..5)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { req.request(Bytes::from(format!("{i}"))).await })
        })
        .collect();
    within(async {
        while server.started.load(Ordering::SeqCst) < 5 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let mut closing = Box::pin({
        let req = req.clone();
        async move { req.close().await }
    });
    // Its first step stops the socket taking new requests.
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(closing.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    let closing = tokio::spawn(closing);
    // New work is refused at once, while the old is still being answered.
    let refused = within(req.request(Bytes::from("new"))).await;
    assert!(matches!(refused, Err(Error::Closed)), "{refused:?}");
    server.gate.send(true).unwrap();
    for (i, request) in in_flight.into_iter().enumerate() {
        assert_eq!(within(request).await.unwrap().unwrap(), format!("{i}"));
    }
    within(closing).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_events_of_a_restart_arrive_in_order() {
    let addr = free_addr();
    let (stop, server) = stoppable_echo(addr).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect(addr).await.unwrap();
    stop.send(()).unwrap();
    within(server).await.unwrap();
    // Let at least one redial fail before the server returns.
    let mut seen = until(&mut events, |e| {
        matches!(e, SocketEvent::ConnectFailed { .. })
    })
    .await;
    let (_stop, _server) = stoppable_echo(addr).await;
    seen.extend(until(&mut events, |e| matches!(e, SocketEvent::Connected { .. })).await);

    let names: Vec<&str> = seen
        .iter()
        .map(|e| match e {
            SocketEvent::Connected { .. } => "connected",
            SocketEvent::Disconnected { .. } => "disconnected",
            SocketEvent::Reconnecting { .. } => "reconnecting",
            SocketEvent::ConnectFailed { .. } => "connect-failed",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        names[..4],
        [
            "connected",
            "disconnected",
            "reconnecting",
            "connect-failed"
        ]
    );
    assert_eq!(names.last(), Some(&"connected"));
    // Between, only failed attempts and the waits before them, attempts counted from 1.
    let attempts: Vec<u32> = seen
        .iter()
        .filter_map(|e| match e {
            SocketEvent::Reconnecting { attempt, .. } => Some(*attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, (1..=attempts.len() as u32).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_link_between_publisher_and_subscriber_is_found_on_both_sides() {
    let options = msg::PubOptions::default().heartbeat(BEAT, SILENCE);
    let mut publisher = PubSocket::with_options(Tcp::default(), options);
    let mut publisher_events = publisher.events();
    publisher.bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(publisher.local_addr().unwrap()).await;
    let options = msg::SubOptions::default().heartbeat(BEAT, SILENCE);
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    let mut sub_events = sub.events();
    within(sub.connect(relay.addr())).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    publisher.publish("t", Bytes::from("live")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "live");

    relay.freeze();
    let bound = SILENCE + Duration::from_secs(2);
    let seen = tokio::time::timeout(
        bound,
        until(&mut sub_events, |e| {
            matches!(e, SocketEvent::Disconnected { .. })
        }),
    )
    .await
    .expect("the subscriber noticed the frozen link in time");
    assert!(
        matches!(seen.last(), Some(SocketEvent::Disconnected { error, .. }) if matches!(**error, Error::HeartbeatTimeout { .. }))
    );
    let seen = tokio::time::timeout(
        bound,
        until(&mut publisher_events, |e| {
            matches!(e, SocketEvent::Disconnected { .. })
        }),
    )
    .await
    .expect("the publisher noticed the frozen link in time");
    assert!(
        matches!(seen.last(), Some(SocketEvent::Disconnected { error, .. }) if matches!(**error, Error::HeartbeatTimeout { .. }))
    );
    // The link thaws: the subscriber redials through it and gets what is published.
    relay.resume();
    let received = within(async {
        loop {
            publisher.publish("t", Bytes::from("again")).await.unwrap();
            if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await
            {
                return msg;
            }
        }
    })
    .await;
    assert_eq!(received.payload(), "again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_close_writes_what_is_queued_before_it_closes() {
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    for i in 0..500u32 {
        publisher
            .publish("t", Bytes::copy_from_slice(&i.to_be_bytes()))
            .await
            .unwrap();
    }
    within(publisher.close()).await;
    assert!(matches!(
        publisher.publish("t", Bytes::from("late")).await,
        Err(Error::Closed)
    ));
    for i in 0..500u32 {
        let msg = within(sub.next()).await.unwrap();
        assert_eq!(msg.payload()[..], i.to_be_bytes());
    }
    assert_eq!(publisher.stats().dropped, 0);
}
