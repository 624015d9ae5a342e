//! Either side binds or connects (issue 20, item 3): a `PubSocket` that connects to a
//! `SubSocket` that binds, a `RepSocket` that connects to a request side that binds, each
//! with a restart of the side that binds; the hello follows the socket type, so the side
//! that answers it checks admission whoever dialed.
//!
//! Most tests stand in for the request side that binds with a loopback listener whose
//! connections say the request socket's hello with `msg::conn::client::handshake` (the same
//! hello and driver a `ReqSocket` runs), to restart it at will; `ReqSocket::bind` itself is
//! pinned at the end, with the reply sockets that connect to it balanced as endpoints.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use msg::conn::client::{self, SendRequest};
use msg::{
    serve, Backoff, Code, DialOptions, Error, PubSocket, RepSocket, ReqOptions, ReqSocket, Request,
    SocketEvent, SubSocket, Tcp, Transport,
};
use msg_tests::fixture::Fixture;
use msg_tests::{each_transport, within};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tower::service_fn;

/// Redials at once, then every 10 ms: a restart is found quickly.
fn fast_redial() -> DialOptions {
    DialOptions::default().reconnect(
        Backoff::default()
            .initial(Duration::from_millis(10))
            .max(Duration::from_millis(50)),
    )
}

/// Binds `sub` to `target`, again and again (at most 500 times, 10 ms apart) while the
/// listener of the socket just closed still holds the address.
async fn rebind<T: Transport>(sub: &mut SubSocket<T>, target: T::Target) {
    within(async {
        for _ in 0..500 {
            match sub.bind(target.clone()).await {
                Ok(()) => return,
                Err(e) => assert!(matches!(e, Error::Transport(_)), "{e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the address never came free");
    })
    .await
}

/// Waits until the publisher whose `changes` these are holds `pattern` from `sub`, replayed
/// to it when it connected, then subscribes again: with the publisher connected, that
/// waits for its ack, so the pattern is in force for the next publish (the change alone
/// may be seen a moment before the publisher routes by it).
async fn until_subscribed<T: Transport>(
    sub: &SubSocket<T>,
    changes: &mut msg::SubscriptionChanges,
    pattern: &str,
) {
    within(async {
        loop {
            let change = changes.next().await.expect("the publisher lives");
            if change.pattern == pattern && change.added {
                return;
            }
        }
    })
    .await;
    within(sub.subscribe(pattern)).await.unwrap();
}

/// A `PubSocket` connects to a `SubSocket` that binds: the subscriber says hello, its
/// subscription is applied on the publisher, publications on it arrive in order and the
/// others are filtered out; the subscriber restarted on the same address is redialed, its
/// subscription replayed, and publications arrive again.
async fn publisher_connects_to_a_bound_subscriber<F: Fixture>(fixture: F) {
    let target = fixture.bind_target();
    let mut sub = SubSocket::new(fixture.transport());
    sub.bind(target.clone()).await.unwrap();
    // Bound and with no publisher yet: the pattern is kept, not waited on.
    within(sub.subscribe("prices.>")).await.unwrap();
    let bound = sub.local_addr().expect("bound");

    let mut publisher = PubSocket::new(fixture.transport()).with_dial(fast_redial());
    let mut changes = publisher.subscription_changes();
    let mut events = publisher.events();
    within(publisher.connect(fixture.dial_target(&bound)))
        .await
        .unwrap();
    until_subscribed(&sub, &mut changes, "prices.>").await;
    assert_eq!(publisher.stats().subscribers, 1);

    publisher
        .publish("news.eu", Bytes::from("n"))
        .await
        .unwrap();
    for i in 0..10u8 {
        publisher
            .publish("prices.eu.btc", Bytes::from(vec![i]))
            .await
            .unwrap();
    }
    let mut seqs = Vec::new();
    for i in 0..10u8 {
        let msg = within(sub.next()).await.expect("a message");
        assert_eq!(msg.topic(), "prices.eu.btc", "the news are filtered out");
        assert_eq!(&msg.payload()[..], &[i]);
        seqs.push(msg.seq());
    }
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(sub.stats().missed, 0);
    assert_eq!(sub.stats().publishers, 1);

    // The side that binds restarts on the same address.
    sub.close().await;
    drop(sub);
    within(async {
        while !matches!(events.next().await, Some(SocketEvent::Disconnected { .. })) {}
    })
    .await;
    let mut sub = SubSocket::new(fixture.transport());
    rebind(&mut sub, fixture.dial_target(&bound)).await;
    within(sub.subscribe("prices.>")).await.unwrap();
    until_subscribed(&sub, &mut changes, "prices.>").await;
    publisher
        .publish("prices.eu.eth", Bytes::from("again"))
        .await
        .unwrap();
    let msg = within(sub.next())
        .await
        .expect("a message after the restart");
    assert_eq!(msg.topic(), "prices.eu.eth");
    assert_eq!(msg.payload(), "again");
}

// Not over QUIC: a QUIC stream reaches the peer only with its first bytes, and the side
// that dials here waits for the other's hello first (see README, "Either side binds").
each_transport!(publisher_connects_to_a_bound_subscriber: tcp => Tcp, tls => Tls, ipc => Ipc);

/// The request side that binds: accepts on `listener` and says the request socket's hello
/// (with `options`' token) on the next connection, driven in a task of its own (aborting
/// it drops the connection).
async fn accept_request_side(
    listener: &TcpListener,
    options: ReqOptions,
) -> Result<(SendRequest, tokio::task::JoinHandle<()>), Error> {
    let (stream, _) = within(listener.accept()).await.unwrap();
    let (send, conn) = within(client::handshake(stream, options)).await?;
    let driving = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((send, driving))
}

/// A reply socket that answers each request with its payload reversed, served by
/// `msg::serve`.
fn reversing(rep: RepSocket<Tcp>) {
    let reverse = service_fn(|req: Request| async move {
        let reversed: Vec<u8> = req.msg().iter().rev().copied().collect();
        Ok::<_, Infallible>(Bytes::from(reversed))
    });
    tokio::spawn(serve(rep, reverse));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_socket_connects_to_a_bound_request_side_and_is_redialed_after_its_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut rep = RepSocket::new(Tcp::default()).with_dial(fast_redial());
    let mut events = rep.events();
    let accepted = tokio::spawn(async move {
        let send = accept_request_side(&listener, ReqOptions::default()).await;
        (listener, send)
    });
    within(rep.connect(addr)).await.unwrap();
    reversing(rep);
    let (listener, send) = within(accepted).await.unwrap();
    let (send, driving) = send.unwrap();
    for i in 0..20u8 {
        let answer = within(send.request(Bytes::from(vec![i, 1, 2])))
            .await
            .unwrap();
        assert_eq!(&answer[..], &[2, 1, i]);
    }

    // The side that binds restarts: its listener and its connection go, a new listener
    // binds the same address.
    drop(listener);
    driving.abort();
    within(async {
        while !matches!(events.next().await, Some(SocketEvent::Disconnected { .. })) {}
    })
    .await;
    let listener = TcpListener::bind(addr).await.unwrap();
    let (send, _driving) = accept_request_side(&listener, ReqOptions::default())
        .await
        .unwrap();
    let answer = within(send.request(Bytes::from("again"))).await.unwrap();
    assert_eq!(answer, "niaga");
}

/// Admits the one token it holds.
struct Only(&'static str);

impl msg::Authenticator for Only {
    fn authenticate(&self, id: &Bytes) -> bool {
        id == self.0.as_bytes()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_socket_with_auth_that_connects_out_refuses_a_request_side_with_the_wrong_token() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let mut rep = RepSocket::new(Tcp::default()).with_auth(Only("right"));
    let accepted = tokio::spawn(async move {
        let send = accept_request_side(&listener, ReqOptions::default().auth_token("wrong")).await;
        (listener, send)
    });
    // Both sides get a typed error: the request side is rejected with admission's code,
    // the reply socket refused it.
    let refused = within(rep.connect(addr)).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    let (listener, rejected) = within(accepted).await.unwrap();
    match rejected {
        Err(e @ Error::HandshakeRejected { .. }) => {
            assert!(
                matches!(
                    e,
                    Error::HandshakeRejected {
                        code: Code::PermissionDenied,
                        ..
                    }
                ),
                "{e:?}"
            );
            assert!(e.is_permanent());
        }
        other => panic!("{other:?}"),
    }

    // The right token is welcomed by the same socket.
    let accepted = tokio::spawn(async move {
        accept_request_side(&listener, ReqOptions::default().auth_token("right")).await
    });
    within(rep.connect(addr)).await.unwrap();
    reversing(rep);
    let (send, _driving) = within(accepted).await.unwrap().unwrap();
    assert_eq!(within(send.request(Bytes::from("ab"))).await.unwrap(), "ba");
}

/// A reply socket that binds and connects serves both; so does a publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_may_bind_and_connect_both() {
    // Reply: a request socket dials it, and it dials a request side.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let bound = rep.local_addr().unwrap();
    let accepted =
        tokio::spawn(async move { accept_request_side(&listener, ReqOptions::default()).await });
    within(rep.connect(addr)).await.unwrap();
    reversing(rep);
    let (dialed, _driving) = within(accepted).await.unwrap().unwrap();
    let mut req = msg::ReqSocket::new(Tcp::default());
    within(req.connect(bound)).await.unwrap();
    assert_eq!(
        within(dialed.request(Bytes::from("xy"))).await.unwrap(),
        "yx"
    );
    assert_eq!(within(req.request(Bytes::from("uv"))).await.unwrap(), "vu");

    // Publisher: one subscriber dials it, it dials another that binds.
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut changes = publisher.subscription_changes();
    let mut bound_sub = SubSocket::new(Tcp::default());
    bound_sub.bind("127.0.0.1:0").await.unwrap();
    within(bound_sub.subscribe("a")).await.unwrap();
    within(publisher.connect(bound_sub.local_addr().unwrap()))
        .await
        .unwrap();
    until_subscribed(&bound_sub, &mut changes, "a").await;
    let mut dialing_sub = SubSocket::new(Tcp::default());
    within(dialing_sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(dialing_sub.subscribe("a")).await.unwrap();
    assert_eq!(publisher.stats().subscribers, 2);
    publisher.publish("a", Bytes::from("both")).await.unwrap();
    assert_eq!(within(bound_sub.next()).await.unwrap().payload(), "both");
    assert_eq!(within(dialing_sub.next()).await.unwrap().payload(), "both");
}

/// The heartbeat of a connection a reply socket dialed is the one an accepted connection
/// has: a request side gone silent (its link frozen) is given up after the heartbeat
/// timeout, and redialed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_socket_that_dialed_gives_up_a_silent_request_side_after_its_heartbeat_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = msg_tests::Relay::start(listener.local_addr().unwrap()).await;
    let options =
        msg::RepOptions::default().heartbeat(Duration::from_millis(50), Duration::from_millis(300));
    let mut rep = RepSocket::with_options(Tcp::default(), options).with_dial(fast_redial());
    let mut events = rep.events();
    let accepted = tokio::spawn(async move {
        let send = accept_request_side(&listener, ReqOptions::default()).await;
        (listener, send)
    });
    within(rep.connect(relay.addr())).await.unwrap();
    reversing(rep);
    let (_listener, send) = within(accepted).await.unwrap();
    let (send, _driving) = send.unwrap();
    assert_eq!(within(send.request(Bytes::from("ab"))).await.unwrap(), "ba");

    relay.freeze();
    let error = within(async {
        loop {
            if let Some(SocketEvent::Disconnected { error, .. }) = events.next().await {
                return error;
            }
        }
    })
    .await;
    assert!(matches!(error, Error::HeartbeatTimeout { .. }), "{error:?}");
    // And it dials again.
    within(async {
        while !matches!(events.next().await, Some(SocketEvent::Reconnecting { .. })) {}
    })
    .await;
}

/// A reply socket that dialed counts the connection against its connection limit, as
/// its listener does: at the limit, the request side it reached is refused with the
/// limit's code (one that may pass later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_socket_at_its_connection_limit_refuses_the_request_side_it_dialed() {
    let mut rep = RepSocket::with_options(
        Tcp::default(),
        msg::RepOptions::default().max_connections(1),
    );
    rep.bind("127.0.0.1:0").await.unwrap();
    let mut req = msg::ReqSocket::new(Tcp::default());
    within(req.connect(rep.local_addr().unwrap()))
        .await
        .unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted =
        tokio::spawn(async move { accept_request_side(&listener, ReqOptions::default()).await });
    let refused = within(rep.connect(addr)).await;
    assert!(matches!(refused, Err(Error::Refused { .. })), "{refused:?}");
    match within(accepted).await.unwrap() {
        Err(
            e @ Error::HandshakeRejected {
                code: Code::ResourceExhausted,
                ..
            },
        ) => assert!(!e.is_permanent()),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

/// A connection a reply socket dialed goes away on a graceful shutdown as an accepted one
/// does: the request in flight is answered, the connection then closes, and the socket,
/// shut down, does not dial again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialed_connection_goes_away_on_a_graceful_shutdown_and_is_not_redialed() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut rep = RepSocket::new(Tcp::default()).with_dial(fast_redial());
    let accepted = tokio::spawn(async move {
        let send = accept_request_side(&listener, ReqOptions::default()).await;
        (listener, send)
    });
    within(rep.connect(addr)).await.unwrap();
    // The handler tells when it has started, then waits for the gate.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let handler = {
        let gate = gate.clone();
        service_fn(move |req: Request| {
            let (gate, started_tx) = (gate.clone(), started_tx.clone());
            async move {
                let _ = started_tx.send(());
                let _permit = gate.acquire().await;
                let reversed: Vec<u8> = req.msg().iter().rev().copied().collect();
                Ok::<_, Infallible>(Bytes::from(reversed))
            }
        })
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(rep, handler).with_graceful_shutdown(async {
        let _ = stopped.await;
    }));
    let (listener, send) = within(accepted).await.unwrap();
    let (send, driving) = send.unwrap();
    let in_flight = tokio::spawn(async move { send.request(Bytes::from("ab")).await });
    within(started.recv()).await.unwrap();

    stop.send(()).unwrap();
    gate.add_permits(1);
    assert_eq!(within(in_flight).await.unwrap().unwrap(), "ba");
    within(server).await.unwrap().unwrap();
    // The connection closed; nothing dials the request side again.
    within(driving).await.unwrap();
    let redialed = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(redialed.is_err(), "the shut-down socket dialed again");
}

/// `connect_lazy` dials in the background until the side that binds is there: a publisher
/// and a reply socket started first find their peers once they bind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_lazy_finds_the_side_that_binds_once_it_is_there() {
    // Addresses free now, bound below.
    let (pub_target, rep_target) = {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        (a.local_addr().unwrap(), b.local_addr().unwrap())
    };
    let mut publisher = PubSocket::new(Tcp::default()).with_dial(fast_redial());
    let mut changes = publisher.subscription_changes();
    publisher.connect_lazy(pub_target);
    let mut rep = RepSocket::new(Tcp::default()).with_dial(fast_redial());
    rep.connect_lazy(rep_target);
    reversing(rep);

    let mut sub = SubSocket::new(Tcp::default());
    sub.bind(pub_target).await.unwrap();
    within(sub.subscribe("late")).await.unwrap();
    until_subscribed(&sub, &mut changes, "late").await;
    publisher
        .publish("late", Bytes::from("found"))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "found");

    let listener = TcpListener::bind(rep_target).await.unwrap();
    let (send, _driving) = accept_request_side(&listener, ReqOptions::default())
        .await
        .unwrap();
    assert_eq!(within(send.request(Bytes::from("cd"))).await.unwrap(), "dc");
}

/// A reply socket that connects to `addr` and answers every request with `name`, until
/// the token it returns is cancelled (a graceful shutdown).
async fn replier_named(
    addr: SocketAddr,
    name: &'static str,
) -> tokio_util::sync::CancellationToken {
    let mut rep = RepSocket::new(Tcp::default()).with_dial(fast_redial());
    within(rep.connect(addr)).await.expect("connect");
    let stop = tokio_util::sync::CancellationToken::new();
    let answer =
        service_fn(move |_: Request| async move { Ok::<_, Infallible>(Bytes::from(name)) });
    tokio::spawn(serve(rep, answer).with_graceful_shutdown(stop.clone().cancelled_owned()));
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_socket_that_binds_balances_over_the_reply_sockets_that_connect() {
    let mut req = ReqSocket::new(Tcp::default());
    within(req.bind("127.0.0.1:0")).await.expect("bind");
    let addr = req.local_addr().expect("bound");
    // A request made before any reply socket is there waits for the first.
    let early = {
        let req = req.clone();
        tokio::spawn(async move { req.request(Bytes::from("early")).await })
    };
    let a = replier_named(addr, "a").await;
    assert_eq!(within(early).await.expect("task").expect("reply"), "a");
    let b = replier_named(addr, "b").await;
    // Both are used: 64 requests in flight at a time, until each has answered some.
    let (mut from_a, mut from_b) = (0, 0);
    within(async {
        for _ in 0..100 {
            let replies =
                futures_util::future::join_all((0..64).map(|_| req.request(Bytes::from("x"))))
                    .await;
            for reply in replies {
                match &reply.expect("reply")[..] {
                    b"a" => from_a += 1,
                    b"b" => from_b += 1,
                    other => panic!("{other:?}"),
                }
            }
            if from_a >= 64 && from_b >= 64 {
                return;
            }
        }
    })
    .await;
    assert!(from_a >= 64 && from_b >= 64, "a {from_a}, b {from_b}");
    // One shuts down: the other answers everything.
    a.cancel();
    within(async {
        loop {
            let from_b = |r: &Result<Bytes, Error>| matches!(r, Ok(reply) if reply == "b");
            if from_b(&req.request(Bytes::from("x")).await) {
                let all_b =
                    futures_util::future::join_all((0..64).map(|_| req.request(Bytes::from("x"))))
                        .await;
                if all_b.iter().all(from_b) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    b.cancel();
}
