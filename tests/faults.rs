//! Faults injected by the test relay between real loopback sockets: writes cut into tiny
//! pieces, delay, a corrupted byte, a half-closed link, a stalled link. Each test states
//! what must survive (nothing lost, nothing crossed) and what may be lost (only the
//! connection that was hit, with a typed error, and it comes back).

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{serve, Error, PubSocket, RepSocket, ReqSocket, Request, SocketEvent, SubSocket, Tcp};
use msg_tests::{echo_server, within, Relay};
use tower::service_fn;

/// Requests of every size from 0 to 5,000 bytes, 16 in flight, answered in order.
async fn echo_sizes(req: &ReqSocket<Tcp>, count: usize) {
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

/// Retries `payload` until the client, redialing, is answered again (at most 200 tries).
async fn answered_again(req: &ReqSocket<Tcp>, payload: &'static str) {
    for _ in 0..200 {
        if let Ok(reply) = req.request(Bytes::from(payload)).await {
            assert_eq!(reply, payload);
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the client never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cut_into_pieces_of_one_to_seven_bytes_arrive_whole_both_ways() {
    let server = echo_server().await;
    // Byte by byte is slow in a debug build: fewer requests for it.
    for (piece, requests) in [(1, 30), (3, 100), (7, 200)] {
        let relay = Relay::start(server).await;
        relay.rechunk(piece);
        let mut req = ReqSocket::new(Tcp::default());
        within(req.connect(relay.addr())).await.unwrap();
        within(echo_sizes(&req, requests)).await;
    }

    // And a publisher's stream to its subscriber, with the subscription going the other way.
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let relay = Relay::start(publisher.local_addr().unwrap()).await;
    relay.rechunk(3);
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(relay.addr())).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_link_slows_requests_down_and_loses_none() {
    let server = echo_server().await;
    let relay = Relay::start(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(relay.addr())).await.unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_byte_costs_only_its_own_connection_which_comes_back() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let server = rep.local_addr().unwrap();
    let mut events = rep.events();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let relay = Relay::start(server).await;
    let mut hit = ReqSocket::new(Tcp::default());
    within(hit.connect(relay.addr())).await.unwrap();
    let mut bystander = ReqSocket::new(Tcp::default());
    within(bystander.connect(server)).await.unwrap();
    assert_eq!(
        within(hit.request(Bytes::from("before"))).await.unwrap(),
        "before"
    );

    // The next byte the client sends is the first of the next frame's header.
    relay.corrupt_in(0);
    let failed = within(hit.request(Bytes::from("corrupted"))).await;
    assert!(
        matches!(&failed, Err(e) if e.is_connection_error()),
        "{failed:?}"
    );
    // The server says why it closed that connection.
    within(async {
        loop {
            if let Some(SocketEvent::Disconnected { error, .. }) = events.next().await {
                if matches!(*error, Error::Protocol(_)) {
                    break;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_closed_link_is_noticed_and_the_client_redials() {
    let server = echo_server().await;
    let relay = Relay::start(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    within(req.connect(relay.addr())).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("a"))).await.unwrap(), "a");

    // The client reads the end of the stream; the server still hears it.
    relay.half_close();
    within(async {
        loop {
            if let Some(SocketEvent::Disconnected { .. }) = events.next().await {
                break;
            }
        }
    })
    .await;
    within(answered_again(&req, "b")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_link_holds_every_byte_and_delivers_them_once_it_flows() {
    let server = echo_server().await;
    let relay = Relay::start(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(relay.addr())).await.unwrap();
    relay.stall();
    let calls: Vec<_> = (0..32u32)
        .map(|i| {
            let req = req.clone();
            tokio::spawn(async move { (i, req.request(Bytes::from(vec![i as u8; 40_000])).await) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls.iter().all(|c| !c.is_finished()),
        "answered through a stall"
    );
    relay.resume();
    for call in calls {
        let (i, reply) = within(call).await.unwrap();
        assert_eq!(reply.unwrap(), vec![i as u8; 40_000]);
    }
}
