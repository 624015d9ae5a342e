//! Publish/Subscribe over real loopback TCP: the book's example, topic filtering, fan-out,
//! slow subscribers, back-pressure, reconnects and bad subscription frames.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use msg::wire::{Frame, FrameKind};
use msg::{
    Error, PubOptions, PubSocket, RepSocket, SlowSubscriber, SocketType, SubOptions, SubSocket, Tcp,
};
use msg_tests::{assert_closed_by_server, encode, raw_client, within, Relay};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

/// The bound on a volume test as a whole: hundreds of thousands of publications in a debug
/// build, on a host that may be busy with other tests. No speed is asserted; a test that
/// stalls still fails.
const WAIT_LONG: Duration = Duration::from_secs(120);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT_LONG`].
async fn within_long<F: std::future::Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT_LONG, fut)
        .await
        .expect("volume step did not finish in time")
}

async fn publisher(options: PubOptions) -> (PubSocket<Tcp>, SocketAddr) {
    let mut socket = PubSocket::with_options(Tcp::default(), options);
    socket.bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    (socket, addr)
}

async fn subscriber(addr: SocketAddr, patterns: &[&str]) -> SubSocket<Tcp> {
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(addr)).await.unwrap();
    for p in patterns {
        within(sub.subscribe(*p)).await.unwrap();
    }
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn book_example_delivers_a_published_message() {
    let mut pub_socket = PubSocket::new(Tcp::default());
    pub_socket.bind("127.0.0.1:0").await.unwrap();
    let addr = pub_socket.local_addr().unwrap();

    let mut sub_socket = SubSocket::new(Tcp::default());
    sub_socket.connect(addr).await.unwrap();

    let topic = "some_interesting_topic".to_string();
    sub_socket.subscribe(topic.clone()).await.unwrap();

    pub_socket
        .publish(topic, Bytes::from("hello_world"))
        .await
        .unwrap();

    let msg = within(sub_socket.next()).await.unwrap();
    assert_eq!(msg.topic(), "some_interesting_topic");
    assert_eq!(msg.payload(), &Bytes::from("hello_world"));
    assert_eq!(msg.seq(), 1);
    // The publisher lived until the message arrived; now it goes.
    within(pub_socket.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_subscribers_each_receive_exactly_their_topics_in_order() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let subscriptions: [&[&str]; 8] = [
        &["a.b.c"],
        &["a.*.d"],
        &["a.>"],
        &["*.b.*"],
        &["a.b.c", "a.*.c"],
        &["x"],
        &[">"],
        &[],
    ];
    let topics = [
        "a.b.c", "a.x.d", "a.b.d", "x", "y.b.z", "a", "a.b.c.d", "q.r",
    ];
    // The topics each subscriber gets, worked out by hand from the grammar (`*` one token,
    // `>` one or more at the end), not by the library's own matcher.
    let expected: [&[&str]; 8] = [
        &["a.b.c"],
        &["a.x.d", "a.b.d"],
        &["a.b.c", "a.x.d", "a.b.d", "a.b.c.d"],
        &["a.b.c", "a.b.d", "y.b.z"],
        // Two patterns matching one topic: delivered once.
        &["a.b.c"],
        &["x"],
        &topics,
        &[],
    ];
    let mut subs = Vec::new();
    for patterns in subscriptions {
        let mut all: Vec<&str> = patterns.to_vec();
        all.push("end");
        subs.push(subscriber(addr, &all).await);
    }
    let sent: Vec<(String, Bytes)> = (0..400)
        .map(|i| {
            (
                topics[i % topics.len()].to_owned(),
                Bytes::from(format!("message {i}")),
            )
        })
        .collect();
    for (topic, payload) in &sent {
        publisher.publish(topic, payload.clone()).await.unwrap();
    }
    publisher.publish("end", Bytes::from("end")).await.unwrap();

    for ((sub, patterns), topics) in subs.iter_mut().zip(subscriptions).zip(expected) {
        let want: Vec<&(String, Bytes)> = sent
            .iter()
            .filter(|(t, _)| topics.contains(&t.as_str()))
            .collect();
        let mut got = Vec::new();
        within(async {
            loop {
                let msg = sub.next().await.unwrap();
                if msg.topic() == "end" {
                    break;
                }
                got.push((msg.topic().to_owned(), msg.payload().clone()));
            }
        })
        .await;
        let want: Vec<(String, Bytes)> = want.into_iter().cloned().collect();
        assert_eq!(got, want, "subscriber to {patterns:?}");
    }
    assert_eq!(publisher.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_delivery() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut sub = subscriber(addr, &["a", "b"]).await;
    publisher.publish("a", Bytes::from("1")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "1");

    within(sub.unsubscribe("a")).await.unwrap();
    assert_eq!(sub.subscriptions(), vec!["b".to_owned()]);
    publisher.publish("a", Bytes::from("2")).await.unwrap();
    publisher.publish("b", Bytes::from("3")).await.unwrap();
    let next = within(sub.next()).await.unwrap();
    assert_eq!(
        (next.topic(), next.payload().clone()),
        ("b", Bytes::from("3"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_connected_to_two_publishers_receives_from_both() {
    let (first, first_addr) = publisher(PubOptions::default()).await;
    let (second, second_addr) = publisher(PubOptions::default()).await;
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(first_addr)).await.unwrap();
    within(sub.connect(second_addr)).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    assert_eq!(sub.stats().publishers, 2);

    first.publish("t", Bytes::from("from first")).await.unwrap();
    second
        .publish("t", Bytes::from("from second"))
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let msg = within(sub.next()).await.unwrap();
        got.push((*msg.publisher(), msg.payload().clone()));
    }
    got.sort();
    let mut want = vec![
        (first_addr, Bytes::from("from first")),
        (second_addr, Bytes::from("from second")),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_right_after_subscribe_is_received_without_sleeping() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut sub = subscriber(addr, &[]).await;
    for i in 0..100 {
        let topic = format!("topic.{i}");
        within(sub.subscribe(topic.clone())).await.unwrap();
        publisher
            .publish(&topic, Bytes::from(format!("{i}")))
            .await
            .unwrap();
        let msg = within(sub.next()).await.unwrap();
        assert_eq!(msg.topic(), topic);
    }
    assert_eq!(publisher.stats().dropped, 0);
}

/// Reads `sub` until it has received `N` messages less those its session dropped, the
/// count of which comes through `dropped` once everything is published: the stream ends on
/// that condition, never on a silence. Checks that the payloads (`u64` counters) only go up,
/// and the sequence numbers too. Returns how many it received and the last sequence number.
async fn read_all_kept(
    sub: &mut SubSocket<Tcp>,
    total: u64,
    mut dropped: tokio::sync::watch::Receiver<Option<u64>>,
) -> (u64, u64) {
    let mut received = 0u64;
    let mut last = 0u64;
    let mut last_seq = 0u64;
    loop {
        if let Some(dropped) = *dropped.borrow_and_update() {
            assert!(
                received <= total - dropped,
                "{received} received, {dropped} of {total} dropped"
            );
            if received == total - dropped {
                return (received, last_seq);
            }
        }
        tokio::select! {
            msg = sub.next() => {
                let msg = msg.expect("the subscriber is open");
                let i = u64::from_be_bytes(msg.payload()[..8].try_into().unwrap());
                assert!(i > last, "reordered or duplicated: {i} after {last}");
                assert!(msg.seq() > last_seq, "sequence went backwards");
                last = i;
                last_seq = msg.seq();
                received += 1;
            }
            _ = dropped.changed() => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_never_stops_the_publisher_and_every_loss_is_counted() {
    const N: u64 = 200_000;
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let small_inbox = SubOptions::default().inbox(16);
    let mut stalled = SubSocket::with_options(Tcp::default(), small_inbox.clone());
    within(stalled.connect(addr)).await.unwrap();
    within(stalled.subscribe("t")).await.unwrap();
    // The publisher's session of each subscriber, told apart by the subscriber's address.
    let sessions = publisher.subscriber_stats();
    assert_eq!(sessions.len(), 1);
    let stalled_peer = sessions[0].peer;
    let mut reading = SubSocket::with_options(Tcp::default(), small_inbox);
    within(reading.connect(addr)).await.unwrap();
    within(reading.subscribe("t")).await.unwrap();
    let session_of = |peer_is_stalled: bool| {
        let sessions = publisher.subscriber_stats();
        assert_eq!(sessions.len(), 2, "{sessions:?}");
        sessions
            .into_iter()
            .find(|s| (s.peer == stalled_peer) == peer_is_stalled)
            .expect("a session of each subscriber")
    };

    let (reader_dropped_tx, reader_dropped) = tokio::sync::watch::channel(None);
    let reader = tokio::spawn(async move {
        let (received, last_seq) = read_all_kept(&mut reading, N, reader_dropped).await;
        // The socket is handed back, so that its session outlives this task.
        (received, last_seq, reading.stats(), reading)
    });

    within_long(async {
        for i in 1..=N {
            publisher
                .publish("t", Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
        }
    })
    .await;
    // Everything is published: the drops are final, and each subscriber reads until what
    // it received and what was dropped for it make up all N.
    reader_dropped_tx.send_replace(Some(session_of(false).dropped));
    let (reader_received, reader_last_seq, reader_stats, _reading) =
        within_long(reader).await.unwrap();
    assert_eq!(reader_stats.received, reader_received);

    // Now the stalled subscriber reads what was kept for it.
    // (The sender is kept: a closed channel would wake the reader for nothing.)
    let (_stalled_dropped_tx, stalled_dropped) =
        tokio::sync::watch::channel(Some(session_of(true).dropped));
    let (stalled_received, stalled_last_seq) =
        within_long(read_all_kept(&mut stalled, N, stalled_dropped)).await;
    // Its losses show as gaps in the sequence numbers it received.
    let stalled_stats = stalled.stats();
    assert!(
        stalled_stats.missed > 0,
        "no gap seen by the stalled subscriber"
    );
    assert_eq!(
        stalled_stats.received + stalled_stats.missed,
        stalled_last_seq
    );

    let stats = publisher.stats();
    assert_eq!(stats.published, N);
    let (reader_session, stalled_session) = (session_of(false), session_of(true));
    assert!(
        stalled_session.dropped > 0,
        "the stalled subscriber lost nothing: {stalled_session:?}"
    );
    // Every copy was either sent to the subscriber it was meant for, and received, or
    // counted as dropped for it; nothing is left queued.
    for (session, received) in [
        (&reader_session, reader_received),
        (&stalled_session, stalled_received),
    ] {
        assert_eq!(session.sent, received, "{session:?}");
        assert_eq!(session.sent + session.dropped, N, "{session:?}");
        assert_eq!(session.queued, 0, "{session:?}");
    }
    assert_eq!(
        stats.dropped,
        reader_session.dropped + stalled_session.dropped
    );
    // The reading subscriber saw its losses as gaps: every sequence number up to the last
    // one it got was either received or counted missing, and none was missed but dropped.
    assert_eq!(reader_stats.received + reader_stats.missed, reader_last_seq);
    assert!(reader_stats.missed <= N - reader_received);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_policy_delivers_every_message_in_order_to_every_reader() {
    const N: u64 = 200_000;
    let (publisher, addr) =
        publisher(PubOptions::default().slow_subscriber(SlowSubscriber::Wait)).await;
    let mut readers = Vec::new();
    for _ in 0..2 {
        let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(64));
        within(sub.connect(addr)).await.unwrap();
        within(sub.subscribe("t")).await.unwrap();
        readers.push(tokio::spawn(async move {
            for want in 1..=N {
                let msg = sub.next().await.unwrap();
                let got = u64::from_be_bytes(msg.payload()[..8].try_into().unwrap());
                assert_eq!(got, want, "lost, reordered or duplicated");
            }
            sub.stats()
        }));
    }
    within_long(async {
        for i in 1..=N {
            publisher
                .publish("t", Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
        }
    })
    .await;
    for reader in readers {
        let stats = within_long(reader).await.unwrap();
        assert_eq!(stats.received, N);
        assert_eq!(stats.missed, 0);
    }
    assert_eq!(publisher.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_replayed_after_a_reconnect() {
    let (first, first_addr) = publisher(PubOptions::default()).await;
    // The subscriber dials a relay, whose address stays while the publisher restarts on
    // another port: no port is released and bound again.
    let relay = Relay::start(first_addr).await;
    let options = SubOptions::default().reconnect(
        msg::Backoff::default()
            .initial(Duration::from_millis(10))
            .max(Duration::from_millis(100)),
    );
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    within(sub.connect(relay.addr())).await.unwrap();
    within(sub.subscribe("news.>")).await.unwrap();
    first
        .publish("news.a", Bytes::from("before"))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "before");

    let mut events = sub.events();
    let (second, second_addr) = publisher(PubOptions::default()).await;
    relay.retarget(second_addr);
    within(first.close()).await;
    drop(first);
    // The subscriber loses the first publisher and connects to the second.
    within(async {
        while !matches!(
            events.next().await,
            Some(msg::SocketEvent::Disconnected { .. })
        ) {}
        while !matches!(
            events.next().await,
            Some(msg::SocketEvent::Connected { .. })
        ) {}
    })
    .await;
    within(async {
        while sub.stats().publishers == 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // A subscription made now is sent after the replayed ones, on the same connection, and
    // acknowledged after them: once it is, the replay is in place.
    within(sub.subscribe("other")).await.unwrap();
    // So every message of a burst published once, from now on, arrives: none is published
    // until one gets through.
    for i in 0..100u32 {
        second
            .publish("news.b", Bytes::from(i.to_string()))
            .await
            .unwrap();
    }
    for i in 0..100u32 {
        let msg = within(sub.next()).await.unwrap();
        assert_eq!(
            (msg.topic(), msg.payload().clone()),
            ("news.b", Bytes::from(i.to_string()))
        );
    }
    assert_eq!(second.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_subscription_frames_close_only_that_connection() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut good = subscriber(addr, &["t"]).await;

    let bad_patterns: [&[u8]; 3] = [b"a..b", b"a.>.b", b"\xff\xfe"];
    for pattern in bad_patterns {
        let mut bad = raw_client(addr, SocketType::Sub).await.unwrap();
        let mut frame = Frame::new(FrameKind::Subscribe, 1, Bytes::new());
        frame.topic = Bytes::copy_from_slice(pattern);
        bad.write_all(&encode(frame)).await.unwrap();
        assert_closed_by_server(&mut bad).await;
    }
    // A request frame has no place on a publisher either.
    let mut bad = raw_client(addr, SocketType::Sub).await.unwrap();
    bad.write_all(&encode(Frame::new(FrameKind::Request, 1, Bytes::new())))
        .await
        .unwrap();
    assert_closed_by_server(&mut bad).await;

    publisher
        .publish("t", Bytes::from("still here"))
        .await
        .unwrap();
    assert_eq!(within(good.next()).await.unwrap().payload(), "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_topics_and_wrong_peers_are_typed_errors() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    assert!(matches!(
        publisher.publish("a.*", Bytes::new()).await,
        Err(Error::InvalidTopic(_))
    ));
    assert!(matches!(
        publisher.publish("a..b", Bytes::new()).await,
        Err(Error::InvalidTopic(_))
    ));
    let sub = subscriber(addr, &[]).await;
    assert!(matches!(
        sub.subscribe("a.>.b").await,
        Err(Error::InvalidTopic(_))
    ));

    let unbound = PubSocket::new(Tcp::default());
    assert!(matches!(
        unbound.publish("t", Bytes::new()).await,
        Err(Error::NotBound)
    ));

    // A subscriber dialing a reply socket is refused with a reason.
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(Tcp::default());
    match within(sub.connect(rep.local_addr().unwrap())).await {
        Err(Error::HandshakeRejected { reason, .. }) => {
            assert!(reason.contains("sub") && reason.contains("rep"), "{reason}")
        }
        other => panic!("expected a rejected handshake, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriber_that_catches_up_receives_new_messages_again() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(16));
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    // Flood it while it does not read, until its queue overflows.
    let payload = Bytes::from(vec![0u8; 1024]);
    let mut published = 0u64;
    within(async {
        while publisher.stats().dropped == 0 {
            for _ in 0..1000 {
                publisher.publish("t", payload.clone()).await.unwrap();
                published += 1;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // It catches up on everything kept for it: all that was published but what was
    // dropped for it, read to the last one, whatever pauses the delivery takes.
    let session = publisher.subscriber_stats().remove(0);
    let kept = published - session.dropped;
    within(async {
        for _ in 0..kept {
            assert_eq!(sub.next().await.unwrap().payload().len(), 1024);
        }
    })
    .await;
    let session = publisher.subscriber_stats().remove(0);
    assert_eq!(
        session.queued, 0,
        "messages stuck in the subscriber's queue"
    );
    assert_eq!(session.sent, kept, "{session:?}");
    // And a fresh message gets through, right after them.
    publisher.publish("t", Bytes::from("fresh")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "fresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_publisher_is_not_ready_while_a_subscriber_queue_is_full() {
    use tower::{Service, ServiceExt};

    let options = PubOptions::default()
        .slow_subscriber(SlowSubscriber::Wait)
        .high_water_mark(4);
    let (mut publisher, addr) = publisher(options).await;
    let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(1));
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("big")).await.unwrap();

    // Publish until the subscriber, which reads nothing, has filled its socket buffers and
    // then its queue: from then on the publisher is not ready.
    let payload = Bytes::from(vec![7u8; 64 * 1024]);
    let mut published = 0;
    let full = within(async {
        for _ in 0..10_000 {
            match tokio::time::timeout(Duration::from_millis(200), publisher.ready()).await {
                Err(_) => {
                    // Not ready: because the subscriber's queue is full, and for no other
                    // reason.
                    let queued = publisher.subscriber_stats()[0].queued;
                    assert_eq!(queued, 4, "not ready with {queued} of 4 queued");
                    return true;
                }
                Ok(ready) => ready.unwrap(),
            };
            publisher
                .call(msg::Publication::new("big", payload.clone()))
                .await
                .unwrap();
            published += 1;
        }
        false
    })
    .await;
    assert!(
        full,
        "the publisher stayed ready after {published} publications"
    );
    // The subscriber reads, and the publisher is ready again.
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while sub.next().await.is_some() {
            n += 1;
        }
        n
    });
    within(publisher.ready()).await.unwrap();
    reader.abort();
}

/// The publisher keeps the last topic's route; every subscription change, a new subscriber
/// and one that leaves must each be seen by the very next publish, under both policies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_publish_sees_every_subscription_change() {
    for policy in [SlowSubscriber::Drop, SlowSubscriber::Wait] {
        let (publisher, addr) = publisher(PubOptions::default().slow_subscriber(policy)).await;
        // Routed to nobody, and that route kept.
        publisher.publish("t.x", Bytes::from("0")).await.unwrap();
        let mut first = subscriber(addr, &["t.x"]).await;
        publisher.publish("t.x", Bytes::from("1")).await.unwrap();
        assert_eq!(within(first.next()).await.unwrap().payload(), "1");
        let mut second = subscriber(addr, &["t.*"]).await;
        publisher.publish("t.x", Bytes::from("2")).await.unwrap();
        assert_eq!(within(first.next()).await.unwrap().payload(), "2");
        assert_eq!(within(second.next()).await.unwrap().payload(), "2");
        within(first.unsubscribe("t.x")).await.unwrap();
        publisher.publish("t.x", Bytes::from("3")).await.unwrap();
        assert_eq!(within(second.next()).await.unwrap().payload(), "3");
        drop(second);
        // The second one's session goes away: publishing to its route must not fail.
        publisher.publish("t.x", Bytes::from("4")).await.unwrap();
        within(first.subscribe("t.>")).await.unwrap();
        publisher.publish("t.x", Bytes::from("5")).await.unwrap();
        let next = within(first.next()).await.unwrap();
        assert_eq!(
            next.payload(),
            "5",
            "nothing between: 3 and 4 were not for it"
        );
    }
}

/// Subscription changes that arrive together are applied together: a subscriber that sends
/// many at once costs the publisher a few new snapshots of its subscriptions, not one each,
/// and every one of them is in force once its ack is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_changes_sent_together_are_applied_together() {
    const PATTERNS: u64 = 500;
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let mut raw = raw_client(addr, SocketType::Sub).await.expect("welcomed");
    let before = publisher.stats().subscription_changes;
    let mut frames = bytes::BytesMut::new();
    for id in 0..PATTERNS {
        let mut frame = Frame::new(FrameKind::Subscribe, id, Bytes::new());
        frame.topic = Bytes::from(format!("p.{id}"));
        frames.extend_from_slice(&encode(frame));
    }
    within(raw.write_all(&frames)).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    for id in 0..PATTERNS {
        let ack = msg_tests::read_frame_buffered(&mut raw, &mut buf)
            .await
            .expect("an ack");
        assert_eq!((ack.kind, ack.id), (FrameKind::SubscriptionAck, id));
        assert!(ack.payload.is_empty(), "refused: {:?}", ack.payload);
    }
    let changed = publisher.stats().subscription_changes - before;
    assert!(
        (1..PATTERNS / 10).contains(&changed),
        "{changed} snapshots for {PATTERNS} changes sent at once"
    );
    for topic in ["p.0", "p.499"] {
        publisher.publish(topic, Bytes::from(topic)).await.unwrap();
        let publication = msg_tests::read_frame_buffered(&mut raw, &mut buf)
            .await
            .expect("a publication");
        assert_eq!(publication.kind, FrameKind::Publish);
        assert_eq!(publication.topic, topic);
    }
}

/// Each clone of a publisher keeps a route of its own: clones publishing on different
/// topics in turn reach exactly their subscribers, and each sees a subscription change
/// made after its route was cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_route_on_their_own_and_all_see_subscription_changes() {
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let other = publisher.clone();
    let mut a = subscriber(addr, &["a"]).await;
    let mut b = subscriber(addr, &["b"]).await;
    for round in 0..3u8 {
        publisher
            .publish("a", Bytes::from(vec![round]))
            .await
            .unwrap();
        other.publish("b", Bytes::from(vec![round])).await.unwrap();
        assert_eq!(within(a.next()).await.unwrap().payload().as_ref(), [round]);
        assert_eq!(within(b.next()).await.unwrap().payload().as_ref(), [round]);
    }
    // Both routes are cached; a change must reach both clones.
    within(a.subscribe("b")).await.unwrap();
    within(b.unsubscribe("b")).await.unwrap();
    within(b.subscribe("a")).await.unwrap();
    other.publish("b", Bytes::from("to a")).await.unwrap();
    publisher
        .publish("a", Bytes::from("to both"))
        .await
        .unwrap();
    assert_eq!(within(a.next()).await.unwrap().payload(), "to a");
    assert_eq!(within(a.next()).await.unwrap().payload(), "to both");
    assert_eq!(within(b.next()).await.unwrap().payload(), "to both");
    assert_eq!(publisher.stats().published, 8);
}
