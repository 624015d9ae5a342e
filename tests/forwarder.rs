//! The forwarder (issue 20, item 4): a publisher upstream, `msg::Forwarder` in between and
//! subscribers downstream, each on its own socket over loopback. Only what a subscriber
//! downstream wants crosses the link, a subscriber leaving unsubscribes upstream, and a drop
//! in the forwarder is a gap downstream.

use std::net::SocketAddr;

use bytes::Bytes;
use msg::{
    Forwarder, PubOptions, PubSocket, SlowSubscriber, SubOptions, SubSocket, SubscriptionChange,
    SubscriptionChanges, Tcp,
};
use msg_tests::{within, Relay};
use tokio_stream::StreamExt;

async fn publisher(options: PubOptions) -> PubSocket<Tcp> {
    let mut publisher = PubSocket::with_options(Tcp::default(), options);
    publisher.bind("127.0.0.1:0").await.expect("bind");
    publisher
}

/// A forwarder from the publisher at `upstream` to a publisher of its own, bound with
/// `options`.
async fn forwarder(upstream: SocketAddr, options: PubOptions) -> Forwarder<Tcp, Tcp> {
    let mut sub = SubSocket::new(Tcp::default());
    sub.connect(upstream).await.expect("connect upstream");
    Forwarder::spawn(sub, publisher(options).await)
}

async fn subscriber(forwarder: &Forwarder<Tcp, Tcp>, options: SubOptions) -> SubSocket<Tcp> {
    let mut sub = SubSocket::with_options(Tcp::default(), options);
    let addr = forwarder.local_addr().expect("bound");
    sub.connect(addr).await.expect("connect downstream");
    sub
}

/// The next change to the patterns held upstream.
async fn next_change(changes: &mut SubscriptionChanges) -> (String, bool) {
    let SubscriptionChange { pattern, added, .. } = within(changes.next())
        .await
        .expect("the publisher is alive");
    (pattern, added)
}

async fn receive(sub: &mut SubSocket<Tcp>, n: usize, topic: &str) {
    for _ in 0..n {
        let msg = within(sub.next()).await.expect("a message");
        assert_eq!(msg.topic(), topic);
    }
}

#[tokio::test]
async fn only_topics_subscribed_downstream_cross_the_link() {
    let origin = publisher(PubOptions::default()).await;
    let mut upstream_changes = origin.subscription_changes();
    // The link between the hosts, with its bytes counted.
    let link = Relay::start(origin.local_addr().unwrap()).await;
    let forwarder = forwarder(link.addr(), PubOptions::default()).await;
    let mut a = subscriber(&forwarder, SubOptions::default()).await;
    let mut b = subscriber(&forwarder, SubOptions::default()).await;
    a.subscribe("a.>").await.unwrap();
    b.subscribe("b.x").await.unwrap();
    let mut upstream = vec![
        next_change(&mut upstream_changes).await,
        next_change(&mut upstream_changes).await,
    ];
    upstream.sort();
    assert_eq!(
        upstream,
        vec![("a.>".to_owned(), true), ("b.x".to_owned(), true)]
    );
    let before = link.bytes_to_client();

    let payload = Bytes::from(vec![7u8; 1000]);
    for topic in ["a.one", "c.nobody", "b.x"] {
        for _ in 0..100 {
            origin.publish(topic, payload.clone()).await.unwrap();
        }
    }
    receive(&mut a, 100, "a.one").await;
    receive(&mut b, 100, "b.x").await;

    // The publisher upstream sent the forwarder the 200 wanted, not the 100 on "c.nobody".
    let sessions = origin.subscriber_stats();
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].sent, 200);
    let crossed = link.bytes_to_client() - before;
    assert!(
        (200_000..250_000).contains(&crossed),
        "{crossed} bytes crossed the link for 200 messages of 1000 bytes"
    );
    let stats = forwarder.stats();
    assert_eq!((stats.received, stats.subscriptions), (200, 2));
    assert_eq!(stats.downstream.published, 200);
    assert_eq!(stats.downstream.dropped, 0);
    forwarder.close().await.unwrap();
}

#[tokio::test]
async fn a_subscriber_leaving_downstream_unsubscribes_upstream() {
    let origin = publisher(PubOptions::default()).await;
    let mut upstream_changes = origin.subscription_changes();
    let forwarder = forwarder(origin.local_addr().unwrap(), PubOptions::default()).await;
    let a = subscriber(&forwarder, SubOptions::default()).await;
    let b = subscriber(&forwarder, SubOptions::default()).await;
    a.subscribe("a.>").await.unwrap();
    assert_eq!(
        next_change(&mut upstream_changes).await,
        ("a.>".into(), true)
    );
    b.subscribe("a.>").await.unwrap();
    b.subscribe("b.>").await.unwrap();
    assert_eq!(
        next_change(&mut upstream_changes).await,
        ("b.>".into(), true)
    );

    // B leaves: "b.>" was its alone; "a.>" stays, held by A.
    b.close().await;
    drop(b);
    assert_eq!(
        next_change(&mut upstream_changes).await,
        ("b.>".into(), false)
    );
    assert_eq!(origin.subscriptions(), vec!["a.>"]);
    // The last holder of "a.>" gives it up.
    a.unsubscribe("a.>").await.unwrap();
    assert_eq!(
        next_change(&mut upstream_changes).await,
        ("a.>".into(), false)
    );
    assert!(origin.subscriptions().is_empty());
    assert_eq!(upstream_changes.try_next(), None);
    forwarder.close().await.unwrap();
}

#[tokio::test]
async fn a_drop_in_the_forwarder_is_a_gap_downstream() {
    const FLOOD: u64 = 2000;
    // The origin never drops: every loss is the forwarder's.
    let origin = publisher(PubOptions::default().slow_subscriber(SlowSubscriber::Wait)).await;
    let mut upstream_changes = origin.subscription_changes();
    let forwarder = forwarder(
        origin.local_addr().unwrap(),
        PubOptions::default().high_water_mark(16),
    )
    .await;
    // A subscriber that takes nothing until the flood is over.
    let mut slow = subscriber(&forwarder, SubOptions::default().inbox(1).inbox_bytes(1)).await;
    slow.subscribe("flood").await.unwrap();
    next_change(&mut upstream_changes).await;

    let payload = Bytes::from(vec![1u8; 16 * 1024]);
    for _ in 0..FLOOD {
        origin.publish("flood", payload.clone()).await.unwrap();
    }
    within(async {
        while forwarder.stats().received < FLOOD {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // Take what the forwarder sent; what it dropped never comes.
    let mut seqs = Vec::new();
    loop {
        let session = forwarder.downstream().subscriber_stats()[0].clone();
        if session.queued == 0 && seqs.len() as u64 == session.sent {
            break;
        }
        seqs.push(within(slow.next()).await.expect("a message").seq());
    }
    // One more, with room for it: its sequence number shows the drops before it too.
    origin.publish("flood", Bytes::from("end")).await.unwrap();
    let end = within(slow.next()).await.expect("the end");
    assert_eq!(end.payload(), "end");
    assert_eq!(end.seq(), FLOOD + 1);
    seqs.push(end.seq());
    let stats = forwarder.stats();
    assert_eq!(stats.upstream.missed, 0, "the origin dropped nothing");
    assert!(stats.downstream.dropped > 0, "the forwarder dropped");
    let gaps = seqs.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert!(gaps > 0, "a gap in {seqs:?}");
    let sub = slow.stats();
    assert_eq!(sub.missed, stats.downstream.dropped);
    assert_eq!(sub.received + sub.missed, FLOOD + 1);
    forwarder.close().await.unwrap();
}

#[tokio::test]
async fn a_forwarder_dropped_unsubscribes_upstream() {
    let origin = publisher(PubOptions::default()).await;
    let mut upstream_changes = origin.subscription_changes();
    let forwarder = forwarder(origin.local_addr().unwrap(), PubOptions::default()).await;
    let sub = subscriber(&forwarder, SubOptions::default()).await;
    sub.subscribe("a").await.unwrap();
    assert_eq!(next_change(&mut upstream_changes).await, ("a".into(), true));
    // Its subscriber upstream goes with it, and its session at the origin.
    drop(forwarder);
    assert_eq!(
        next_change(&mut upstream_changes).await,
        ("a".into(), false)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publication_made_on_hearing_of_a_subscription_is_routed_by_it() {
    // What a forwarder does: it publishes upstream's messages as soon as it hears of a
    // subscription. Told before the publisher's routing holds the subscription, such a
    // publication would go nowhere.
    let origin = publisher(PubOptions::default()).await;
    let addr = origin.local_addr().expect("bound");
    let mut changes = origin.subscription_changes();
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(addr)).await.expect("connect");
    for i in 0..50 {
        let topic = format!("race.{i}");
        let publish_on_hearing = async {
            assert_eq!(next_change(&mut changes).await, (topic.clone(), true));
            within(origin.publish(&topic, Bytes::from("first")))
                .await
                .expect("publish");
        };
        let (subscribed, ()) =
            tokio::join!(within(sub.subscribe(topic.clone())), publish_on_hearing);
        subscribed.expect("subscribed");
        let msg = within(sub.next()).await.expect("a message");
        assert_eq!(
            (msg.topic(), msg.payload().as_ref()),
            (&*topic, &b"first"[..])
        );
    }
}
