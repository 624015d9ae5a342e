//! The sockets as one thing (issue 17, item 6): what every socket shares (one options
//! vocabulary, validated once; a connect bounded by default; one connection per socket and
//! every clone), and the defects that were found there, each over real loopback sockets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use msg::{PubOptions, PubSocket, SubOptions, SubSocket, Tcp};
use msg_tests::within;
use tokio_stream::StreamExt;

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
