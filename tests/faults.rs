//! Faults injected by the test relay between real loopback sockets: writes cut into tiny
//! pieces, delay, a corrupted byte, a half-closed link, a stalled link. Each test states
//! what must survive (nothing lost, nothing crossed) and what may be lost (only the
//! connection that was hit, with a typed error, and it comes back).
//!
//! The bodies are generic over [`Fixture`] and run over TCP, TLS and IPC, each through the
//! relay of its kind. None runs over QUIC: its relay passes whole UDP datagrams, which
//! cannot be cut into pieces, stalled without loss (UDP has no buffer to hold them),
//! corrupted without QUIC's packet protection discarding them silently, or half-closed;
//! QUIC's own faults (a frozen link, a restarted server) are in `durability.rs`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{
    serve, Error, PubSocket, RepSocket, ReqSocket, Request, SocketEvent, SubSocket, Transport,
};
use msg_tests::fixture::Fixture;
use msg_tests::{answered_again, each_transport, within};
use tower::service_fn;

/// The address type of a fixture's transport.
type Addr<F> = <<F as Fixture>::T as Transport>::Addr;

/// An echo server at a fresh address of `fixture`'s, served by `serve`, that counts the
/// requests it is given; returns its address, the count, and its events.
async fn counting_echo<F: Fixture>(
    fixture: &F,
) -> (Addr<F>, Arc<AtomicUsize>, msg::Events<Addr<F>>) {
    let mut rep = RepSocket::new(fixture.transport());
    let events = rep.events();
    rep.bind(fixture.bind_target()).await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    let started = Arc::new(AtomicUsize::new(0));
    let counted = started.clone();
    tokio::spawn(serve(
        rep,
        service_fn(move |req: Request<Addr<F>>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(req.msg().clone()) }
        }),
    ));
    (addr, started, events)
}

/// Requests of every size from 0 to 5,000 bytes, 16 in flight, answered in order.
async fn echo_sizes<T: Transport>(req: &ReqSocket<T>, count: usize) {
    let requests: Vec<Bytes> = (0..count)
        .map(|i| Bytes::from(vec![(i % 251) as u8; (i * 37) % 5001]))
        .collect();
    let replies: Vec<_> = req
        .pipeline(futures_util::stream::iter(requests.clone()), 16)
        .collect()
        .await;
    assert_eq!(replies.len(), count);
    for (request, reply) in requests.iter().zip(replies) {
        assert_eq!(&reply.expect("reply"), request);
    }
}

async fn frames_cut_into_pieces_of_one_to_seven_bytes_arrive_whole_both_ways<F: Fixture>(
    fixture: F,
) {
    let (server, _, _) = counting_echo(&fixture).await;
    // Byte by byte is slow in a debug build (and slower under TLS): fewer requests for it.
    for (piece, requests) in [(1, 30), (3, 100), (7, 200)] {
        let (relay, target) = fixture.relay(&server).await;
        relay.rechunk(piece);
        let mut req = ReqSocket::new(fixture.transport());
        within(req.connect(target)).await.unwrap();
        within(echo_sizes(&req, requests)).await;
    }

    // And a publisher's stream to its subscriber, with the subscription going the other way.
    let mut publisher = PubSocket::new(fixture.transport());
    publisher.bind(fixture.bind_target()).await.unwrap();
    let (relay, target) = fixture.relay(&publisher.local_addr().unwrap()).await;
    relay.rechunk(3);
    let mut sub = SubSocket::new(fixture.transport());
    within(sub.connect(target)).await.unwrap();
    within(sub.subscribe("t.>")).await.unwrap();
    for i in 0..200u32 {
        let payload = Bytes::from(vec![i as u8; (i as usize * 53) % 3000]);
        publisher.publish(format!("t.{i}"), payload).await.unwrap();
    }
    within(async {
        for i in 0..200u32 {
            let msg = sub.next().await.unwrap();
            assert_eq!(msg.topic(), format!("t.{i}"));
            assert_eq!(msg.payload().len(), (i as usize * 53) % 3000);
            assert!(msg.payload().iter().all(|b| *b == i as u8));
        }
    })
    .await;
}

async fn a_slow_link_slows_requests_down_and_loses_none<F: Fixture>(fixture: F) {
    let (server, _, _) = counting_echo(&fixture).await;
    let (relay, target) = fixture.relay(&server).await;
    let mut req = ReqSocket::new(fixture.transport());
    within(req.connect(target)).await.unwrap();
    relay.delay(Duration::from_millis(20));
    let started = Instant::now();
    let replies: Vec<_> = within(
        (0..64u32)
            .map(|i| {
                let req = req.clone();
                async move { (i, req.request(Bytes::from(format!("{i}"))).await) }
            })
            .collect::<FuturesUnordered<_>>()
            .collect(),
    )
    .await;
    // At least the delay each way.
    assert!(started.elapsed() >= Duration::from_millis(40));
    assert_eq!(replies.len(), 64);
    for (i, reply) in replies {
        assert_eq!(reply.unwrap(), format!("{i}"));
    }
}

async fn a_corrupted_byte_costs_only_its_own_connection_which_comes_back<F: Fixture>(fixture: F) {
    let (server, _, mut events) = counting_echo(&fixture).await;
    let (relay, target) = fixture.relay(&server).await;
    let mut hit = ReqSocket::new(fixture.transport());
    within(hit.connect(target)).await.unwrap();
    let mut bystander = ReqSocket::new(fixture.transport());
    within(bystander.connect(fixture.dial_target(&server)))
        .await
        .unwrap();
    assert_eq!(
        within(hit.request(Bytes::from("before"))).await.unwrap(),
        "before"
    );

    // The next byte the client sends is the first of the next frame's header (or, over
    // TLS, of the record that carries it).
    relay.corrupt_in(0);
    let failed = within(hit.request(Bytes::from("corrupted"))).await;
    assert!(matches!(failed, Err(Error::ConnectionClosed)), "{failed:?}");
    // The server says why it closed that connection: a broken frame, or over TLS a record
    // that fails its authentication.
    within(async {
        loop {
            if let Some(SocketEvent::Disconnected { error, .. }) = events.next().await {
                match &error {
                    Error::Protocol(_) => break,
                    Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => break,
                    other => panic!("{other:?}"),
                }
            }
        }
    })
    .await;
    // Nobody else noticed, and the client that was hit is answered again once it redials.
    assert_eq!(
        within(bystander.request(Bytes::from("fine")))
            .await
            .unwrap(),
        "fine"
    );
    within(answered_again(&hit, "after")).await;
}

async fn a_half_closed_link_is_noticed_and_the_client_redials<F: Fixture>(fixture: F) {
    let (server, _, _) = counting_echo(&fixture).await;
    let (relay, target) = fixture.relay(&server).await;
    let mut req = ReqSocket::new(fixture.transport());
    let mut events = req.events();
    within(req.connect(target)).await.unwrap();
    let mut bystander = ReqSocket::new(fixture.transport());
    within(bystander.connect(fixture.dial_target(&server)))
        .await
        .unwrap();
    assert_eq!(within(req.request(Bytes::from("a"))).await.unwrap(), "a");

    // The client reads the end of the stream; the server still hears it.
    relay.half_close();
    let error = within(async {
        loop {
            if let Some(SocketEvent::Disconnected { error, .. }) = events.next().await {
                return error;
            }
        }
    })
    .await;
    // The end of the stream, typed: over TLS, one without the peer's close_notify.
    assert!(
        match &error {
            Error::ConnectionClosed => true,
            Error::Io(e) => e.kind() == std::io::ErrorKind::UnexpectedEof,
            _ => false,
        },
        "{error:?}"
    );
    // Only the connection hit: the bystander is served as before.
    assert_eq!(
        within(bystander.request(Bytes::from("fine")))
            .await
            .unwrap(),
        "fine"
    );
    within(answered_again(&req, "b")).await;
}

async fn a_stalled_link_holds_every_byte_and_delivers_them_once_it_flows<F: Fixture>(fixture: F) {
    let (server, started, _) = counting_echo(&fixture).await;
    let (relay, target) = fixture.relay(&server).await;
    let mut req = ReqSocket::new(fixture.transport());
    within(req.connect(target)).await.unwrap();
    relay.stall();
    let calls: Vec<_> = (0..32u32)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { (i, req.request(Bytes::from(vec![i as u8; 40_000])).await) })
        })
        .collect();
    // Every request has left the client's queue for its connection before the check (or
    // something went through, which the check then reports).
    within(async {
        loop {
            let stats = req.stats();
            let through =
                started.load(Ordering::SeqCst) > 0 || calls.iter().any(|c| c.is_finished());
            if (stats.in_flight == 32 && stats.queued == 0) || through {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        started.load(Ordering::SeqCst),
        0,
        "a request through a stall"
    );
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "answered through a stall"
    );
    relay.resume();
    for call in calls {
        let (i, reply) = within(call).await.unwrap();
        assert_eq!(reply.unwrap(), vec![i as u8; 40_000]);
    }
    assert_eq!(started.load(Ordering::SeqCst), 32);
}

// Not over QUIC: see the module's doc.
each_transport!(
    frames_cut_into_pieces_of_one_to_seven_bytes_arrive_whole_both_ways:
        tcp => Tcp, tls => Tls, ipc => Ipc
);
each_transport!(
    a_slow_link_slows_requests_down_and_loses_none: tcp => Tcp, tls => Tls, ipc => Ipc
);
each_transport!(
    a_corrupted_byte_costs_only_its_own_connection_which_comes_back:
        tcp => Tcp, tls => Tls, ipc => Ipc
);
each_transport!(
    a_half_closed_link_is_noticed_and_the_client_redials: tcp => Tcp, tls => Tls, ipc => Ipc
);
each_transport!(
    a_stalled_link_holds_every_byte_and_delivers_them_once_it_flows:
        tcp => Tcp, tls => Tls, ipc => Ipc
);
