//! `msg::ws`, the WebSocket bridge from a `SubSocket` to browsers, with a real WebSocket
//! client (tokio-tungstenite) over loopback: publications arrive as JSON on the client's
//! patterns from the moment the WebSocket is open, a bad pattern or a publisher that cannot
//! be reached is refused before the upgrade, a client slower than the publisher is told
//! exactly what it missed while the bridge's queue stays within its bound and the bridge
//! keeps going, a client that leaves takes its subscriber with it, and a shutdown closes
//! every client with "going away".

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use msg::ws::{subscribe_route, BridgeOptions, SubscribeBridge};
use msg::{PubSocket, SubOptions, Tcp};
use msg_tests::within;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

type Client = WebSocketStream<TcpStream>;

/// A publisher on loopback.
async fn publisher() -> (PubSocket<Tcp>, SocketAddr) {
    let mut publisher = PubSocket::new(Tcp::default());
    within(publisher.bind("127.0.0.1:0")).await.expect("bind");
    let addr = publisher.local_addr().expect("bound");
    (publisher, addr)
}

/// Serves `bridge` at `/live` with axum on loopback; returns the HTTP address.
async fn serve_bridge(bridge: SubscribeBridge<Tcp>) -> SocketAddr {
    let app = axum::Router::new().route("/live", subscribe_route(bridge));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind HTTP");
    let addr = listener.local_addr().expect("bound");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Opens the bridge's WebSocket with `query`, over a connection whose receive buffer is
/// `recv_buffer` bytes (small, for a client that is to fall behind soon).
async fn open(
    http: SocketAddr,
    query: &str,
    recv_buffer: Option<u32>,
) -> Result<Client, tungstenite::Error> {
    let socket = TcpSocket::new_v4().expect("socket");
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
    }
    let stream = within(socket.connect(http)).await.expect("connect");
    let url = format!("ws://{http}/live?{query}");
    within(tokio_tungstenite::client_async(url, stream))
        .await
        .map(|(client, _)| client)
}

/// Publishes a probe on `topic` until the publisher queues it for a subscriber: from then
/// on, the bridge's subscription is in force. Exactly one probe reaches the client.
async fn until_subscribed(publisher: &PubSocket<Tcp>, topic: &str) {
    within(async {
        for _ in 0..1000 {
            let before = publisher.stats().queued;
            publisher
                .publish(topic, Bytes::from("probe"))
                .await
                .expect("publish");
            if publisher.stats().queued > before {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the bridge never subscribed");
    })
    .await
}

/// The next text frame from the bridge.
async fn next_text(client: &mut Client) -> String {
    loop {
        match within(client.next()).await {
            Some(Ok(Message::Text(text))) => return text.as_str().to_owned(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

fn message(topic: &str, seq: u64, encoding: &str, payload: &str) -> String {
    format!(
        r#"{{"type":"message","topic":"{topic}","seq":{seq},"encoding":"{encoding}","payload":{payload}}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_gets_each_publication_on_its_patterns_as_json() {
    let (publisher, addr) = publisher().await;
    let bridge = SubscribeBridge::new(Tcp::default(), addr);
    let http = serve_bridge(bridge.clone()).await;
    // Two patterns; `>` percent-encoded as a browser sends it. Open means subscribed: what
    // is published from now on arrives.
    let mut client = open(http, "pattern=prices.%3E&pattern=blobs.*", None)
        .await
        .expect("upgraded");
    for (topic, payload) in [
        ("prices.eu", &b"101.5"[..]),
        ("news.today", b"not subscribed"),
        ("blobs.1", &[0xff, 0x00, 0x10]),
        ("prices.us", b"say \"hi\""),
    ] {
        within(publisher.publish(topic, Bytes::copy_from_slice(payload)))
            .await
            .expect("publish");
    }
    assert_eq!(
        next_text(&mut client).await,
        message("prices.eu", 1, "utf8", r#""101.5""#)
    );
    assert_eq!(
        next_text(&mut client).await,
        message("blobs.1", 2, "base64", r#""/wAQ""#)
    );
    assert_eq!(
        next_text(&mut client).await,
        message("prices.us", 3, "utf8", r#""say \"hi\"""#)
    );
    // Counted once the frame is written, which may be just after the client has it.
    let stats = within(async {
        loop {
            let stats = bridge.stats();
            if stats.delivered >= 3 {
                return stats;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!((stats.browsers, stats.delivered), (1, 3));
    assert_eq!((stats.dropped, stats.missed), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_valid_pattern_is_refused_before_the_upgrade() {
    let (_publisher, addr) = publisher().await;
    let bridge = SubscribeBridge::new(Tcp::default(), addr);
    let http = serve_bridge(bridge.clone()).await;
    for query in [
        "",
        "other=1",
        "pattern=a..b",
        "pattern=%zz",
        "pattern=a.%3E.b",
    ] {
        match open(http, query, None).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "query {query:?}");
                let body = response.body().as_deref().unwrap_or_default();
                assert!(
                    std::str::from_utf8(body).is_ok_and(|b| b.contains("pattern")),
                    "query {query:?}: {body:?}"
                );
            }
            other => panic!("query {query:?}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(bridge.stats().browsers, 0);
}

/// What a client read: messages, and the drops it was told of.
#[derive(Debug, Default)]
struct Tally {
    messages: u64,
    told_dropped: u64,
    /// The seq of the last message read.
    last_seq: u64,
}

impl Tally {
    /// Reads one frame, checking that every seq skipped since the last message was told
    /// as dropped. Returns the topic of a message.
    fn read(&mut self, frame: &str, dropped_since: &mut u64) -> Option<String> {
        if let Some(count) = frame
            .strip_prefix(r#"{"type":"dropped","count":"#)
            .and_then(|rest| rest.strip_suffix('}'))
        {
            let count: u64 = count.parse().expect("a count");
            assert!(count > 0, "a drop of nothing told");
            *dropped_since += count;
            self.told_dropped += count;
            return None;
        }
        let rest = frame
            .strip_prefix(r#"{"type":"message","topic":""#)
            .unwrap_or_else(|| panic!("unexpected frame {frame}"));
        let (topic, rest) = rest.split_once('"').expect("topic");
        let seq: u64 = rest
            .strip_prefix(r#","seq":"#)
            .and_then(|rest| rest.split_once(','))
            .and_then(|(seq, _)| seq.parse().ok())
            .expect("seq");
        assert_eq!(
            seq,
            self.last_seq + 1 + *dropped_since,
            "seq {seq} after {} with {dropped_since} told dropped",
            self.last_seq
        );
        *dropped_since = 0;
        self.last_seq = seq;
        self.messages += 1;
        Some(topic.to_owned())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_websocket_client_is_told_what_it_missed_and_the_bridge_keeps_going() {
    const QUEUE: usize = 16;
    const QUEUE_BYTES: usize = 64 * 1024;
    let (publisher, addr) = publisher().await;
    let publisher = Arc::new(publisher);
    let bridge = SubscribeBridge::new(Tcp::default(), addr).options(
        BridgeOptions::default()
            .queue(QUEUE)
            .queue_bytes(QUEUE_BYTES),
    );
    let http = serve_bridge(bridge.clone()).await;
    let mut client = open(http, "pattern=load.%3E", Some(4096))
        .await
        .expect("upgraded");
    until_subscribed(&publisher, "load.probe").await;

    // The client reads nothing while the publisher sends far more than the socket buffers
    // and the bridge's queue hold: the bridge has to drop.
    let payload = Bytes::from(vec![b'x'; 1024]);
    within(async {
        for _ in 0..200_000 {
            publisher
                .publish("load.data", payload.clone())
                .await
                .expect("publish");
            if bridge.stats().dropped >= 1000 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the bridge dropped nothing for a stalled client");
    })
    .await;
    let stats = bridge.stats();
    assert!(stats.peak_queued <= QUEUE, "{stats:?}");
    assert!(stats.peak_queued_bytes <= QUEUE_BYTES, "{stats:?}");

    // Now the client reads everything; the publisher goes on, until the client has seen a
    // message published after it started reading.
    let reading = Arc::new(AtomicBool::new(true));
    let feeder = {
        let publisher = publisher.clone();
        let reading = reading.clone();
        tokio::spawn(async move {
            for _ in 0..2000 {
                if !reading.load(Ordering::SeqCst) {
                    return;
                }
                publisher
                    .publish("load.after", Bytes::from("after"))
                    .await
                    .expect("publish");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let mut tally = Tally::default();
    let mut dropped_since = 0;
    // The probe.
    assert_eq!(
        tally.read(&next_text(&mut client).await, &mut dropped_since),
        Some("load.probe".to_owned())
    );
    within(async {
        loop {
            let frame = next_text(&mut client).await;
            if tally.read(&frame, &mut dropped_since).as_deref() == Some("load.after") {
                return;
            }
        }
    })
    .await;
    reading.store(false, Ordering::SeqCst);
    within(feeder).await.expect("feeder");

    let stats = bridge.stats();
    assert!(tally.told_dropped >= 1000, "{tally:?}");
    // Every drop the client was told of is one the bridge or the publisher counted.
    assert!(
        tally.told_dropped <= stats.dropped + stats.missed,
        "{tally:?} {stats:?}"
    );
    assert!(stats.delivered >= tally.messages, "{stats:?}");
    assert!(stats.peak_queued <= QUEUE, "{stats:?}");
    assert!(stats.peak_queued_bytes <= QUEUE_BYTES, "{stats:?}");
    assert_eq!(stats.browsers, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_takes_its_subscriber_with_it() {
    let (publisher, addr) = publisher().await;
    let bridge = SubscribeBridge::new(Tcp::default(), addr);
    let http = serve_bridge(bridge.clone()).await;
    let mut client = open(http, "pattern=t", None).await.expect("upgraded");
    until_subscribed(&publisher, "t").await;
    assert_eq!(
        next_text(&mut client).await,
        message("t", 1, "utf8", r#""probe""#)
    );
    assert_eq!(bridge.stats().browsers, 1);
    assert_eq!(publisher.stats().subscribers, 1);

    drop(client);
    within(async {
        while bridge.stats().browsers > 0 || publisher.stats().subscribers > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_that_cannot_subscribe_answers_503_before_the_upgrade() {
    let (_held, nobody) = msg_tests::refusing_addr();
    let bridge = SubscribeBridge::new(Tcp::default(), nobody).options(
        BridgeOptions::default()
            .subscriber(SubOptions::default().reconnect_wait(Duration::from_millis(200))),
    );
    let http = serve_bridge(bridge.clone()).await;
    match open(http, "pattern=t", None).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body = response.body().as_deref().unwrap_or_default();
            let body = String::from_utf8_lossy(body);
            assert!(body.starts_with("cannot subscribe: "), "{body}");
        }
        other => panic!("expected 503, got {other:?}"),
    }
    assert_eq!(bridge.stats().browsers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_client_going_away_and_refuses_new_ones() {
    let (publisher, addr) = publisher().await;
    let bridge = SubscribeBridge::new(Tcp::default(), addr);
    let http = serve_bridge(bridge.clone()).await;
    let mut first = open(http, "pattern=t", None).await.expect("upgraded");
    let mut second = open(http, "pattern=u", None).await.expect("upgraded");
    within(async {
        while bridge.stats().browsers < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    bridge.shutdown();
    for client in [&mut first, &mut second] {
        match within(client.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    within(async {
        while bridge.stats().browsers > 0 || publisher.stats().subscribers > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    match open(http, "pattern=t", None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503 after the shutdown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn format_binary_sends_each_publication_as_one_binary_message() {
    let (publisher, addr) = publisher().await;
    let bridge = SubscribeBridge::new(Tcp::default(), addr);
    let http = serve_bridge(bridge.clone()).await;
    let mut client = open(http, "pattern=blobs.*&format=binary", None)
        .await
        .expect("upgraded");
    for payload in [&[0xff, 0x00, 0x10][..], b"text too"] {
        within(publisher.publish("blobs.1", Bytes::copy_from_slice(payload)))
            .await
            .expect("publish");
    }
    for (seq, payload) in [(1u64, &[0xff, 0x00, 0x10][..]), (2, b"text too")] {
        let frame = loop {
            match within(client.next()).await {
                Some(Ok(Message::Binary(bytes))) => break bytes,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a binary frame, got {other:?}"),
            }
        };
        // topic len (u16 BE), topic, seq (u64 BE), payload.
        let mut expected = 7u16.to_be_bytes().to_vec();
        expected.extend_from_slice(b"blobs.1");
        expected.extend_from_slice(&seq.to_be_bytes());
        expected.extend_from_slice(payload);
        assert_eq!(&frame[..], &expected[..]);
    }
    // Any other format is refused before the upgrade.
    match open(http, "pattern=blobs.*&format=xml", None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 400),
        other => panic!("expected a refusal, got {other:?}"),
    }
}
