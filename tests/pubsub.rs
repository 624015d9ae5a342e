//! Publish/Subscribe over real loopback TCP: the book's example, topic filtering, fan-out,
//! slow subscribers, back-pressure, reconnects and bad subscription frames.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use msg::topic::matches;
use msg::wire::{Frame, FrameKind};
use msg::{
    Error, PubOptions, PubSocket, RepSocket, SlowSubscriber, SocketType, SubOptions, SubSocket, Tcp,
};
use msg_tests::{assert_closed_by_server, encode, raw_client, within};
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

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

    tokio::spawn(async move {
        pub_socket
            .publish(topic, Bytes::from("hello_world"))
            .await
            .unwrap();
        // Keep the publisher alive until the message has left.
        tokio::time::sleep(Duration::from_secs(5)).await;
    });

    let msg = within(sub_socket.next()).await.unwrap();
    assert_eq!(msg.topic(), "some_interesting_topic");
    assert_eq!(msg.payload(), &Bytes::from("hello_world"));
    assert_eq!(msg.seq(), 1);
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
    let mut subs = Vec::new();
    for patterns in subscriptions {
        let mut all: Vec<&str> = patterns.to_vec();
        all.push("end");
        subs.push(subscriber(addr, &all).await);
    }
    let topics = [
        "a.b.c", "a.x.d", "a.b.d", "x", "y.b.z", "a", "a.b.c.d", "q.r",
    ];
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

    for (sub, patterns) in subs.iter_mut().zip(subscriptions) {
        let want: Vec<&(String, Bytes)> = sent
            .iter()
            .filter(|(t, _)| patterns.iter().any(|p| matches(p, t)))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscriber_never_stops_the_publisher_and_every_loss_is_counted() {
    const N: u64 = 200_000;
    let (publisher, addr) = publisher(PubOptions::default()).await;
    let small_inbox = SubOptions::default().inbox(16);
    let mut stalled = SubSocket::with_options(Tcp::default(), small_inbox.clone());
    within(stalled.connect(addr)).await.unwrap();
    within(stalled.subscribe("t")).await.unwrap();
    let mut reading = SubSocket::with_options(Tcp::default(), small_inbox);
    within(reading.connect(addr)).await.unwrap();
    within(reading.subscribe("t")).await.unwrap();

    let reader = tokio::spawn(async move {
        let mut received = 0u64;
        let mut last = 0u64;
        let mut last_seq = 0u64;
        // Stops when nothing more arrives for a second once everything was published.
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(1), reading.next()).await
        {
            let i = u64::from_be_bytes(msg.payload()[..8].try_into().unwrap());
            assert!(
                i > last || received == 0,
                "reordered or duplicated: {i} after {last}"
            );
            assert!(msg.seq() > last_seq, "sequence went backwards");
            last = i;
            last_seq = msg.seq();
            received += 1;
        }
        // The socket is handed back, so that its session outlives this task.
        (received, last_seq, reading.stats(), reading)
    });

    within(async {
        for i in 1..=N {
            publisher
                .publish("t", Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
        }
    })
    .await;
    let (reader_received, reader_last_seq, reader_stats, _reading) = within(reader).await.unwrap();
    assert_eq!(reader_stats.received, reader_received);

    // Now the stalled subscriber reads what was kept for it.
    let mut stalled_received = 0u64;
    let mut stalled_last_seq = 0u64;
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(1), stalled.next()).await {
        stalled_received += 1;
        stalled_last_seq = msg.seq();
    }
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
    let sessions = publisher.subscriber_stats();
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions.iter().any(|s| s.dropped > 0),
        "the stalled subscriber lost nothing: {sessions:?}"
    );
    // Every copy not received was counted as dropped, for the subscriber it was meant for.
    let mut lost: Vec<u64> = sessions.iter().map(|s| s.dropped).collect();
    let mut missing = vec![N - reader_received, N - stalled_received];
    lost.sort_unstable();
    missing.sort_unstable();
    assert_eq!(lost, missing, "sessions {sessions:?}");
    assert_eq!(stats.dropped, lost.iter().sum::<u64>());
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
    within(async {
        for i in 1..=N {
            publisher
                .publish("t", Bytes::copy_from_slice(&i.to_be_bytes()))
                .await
                .unwrap();
        }
    })
    .await;
    for reader in readers {
        let stats = within(reader).await.unwrap();
        assert_eq!(stats.received, N);
        assert_eq!(stats.missed, 0);
    }
    assert_eq!(publisher.stats().dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_replayed_after_a_reconnect() {
    let (first, addr) = publisher(PubOptions::default()).await;
    let options = SubOptions::default().reconnect(
        msg::Backoff::default()
            .initial(Duration::from_millis(10))
            .max(Duration::from_millis(100)),
    );
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("news.>")).await.unwrap();
    first
        .publish("news.a", Bytes::from("before"))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "before");

    drop(first);
    let mut second = PubSocket::new(Tcp::default());
    within(async {
        loop {
            match second.bind(addr).await {
                Ok(()) => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    // Published until the replayed subscription is in place; nothing else is needed.
    let msg = within(async {
        loop {
            second
                .publish("news.b", Bytes::from("after"))
                .await
                .unwrap();
            if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(20), sub.next()).await
            {
                return msg;
            }
        }
    })
    .await;
    assert_eq!(msg.payload(), "after");
    assert_eq!(msg.topic(), "news.b");
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
        Err(Error::HandshakeRejected { reason }) => {
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
    within(async {
        while publisher.stats().dropped == 0 {
            for _ in 0..1000 {
                publisher.publish("t", payload.clone()).await.unwrap();
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    // It catches up on everything kept for it: the session drains its whole queue.
    let mut drained = 0u64;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), sub.next()).await {
        drained += 1;
    }
    assert!(
        drained >= 64,
        "only {drained} of the queued messages arrived"
    );
    let queued: usize = publisher.subscriber_stats().iter().map(|s| s.queued).sum();
    assert_eq!(queued, 0, "messages stuck in the subscriber's queue");
    // And a fresh message gets through.
    publisher.publish("t", Bytes::from("fresh")).await.unwrap();
    within(async {
        loop {
            if sub.next().await.unwrap().payload() == "fresh" {
                return;
            }
        }
    })
    .await;
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
                Err(_) => return true,
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
