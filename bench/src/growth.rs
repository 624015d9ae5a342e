//! How cost grows: with connections, subscribers, subscription patterns and message size.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use msg::{PubOptions, PubSocket, ReqSocket, SlowSubscriber, SubSocket, Tcp};

/// Raises this process's open-file limit to its hard limit, for a thousand connections.
pub(crate) fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Total requests per second over `connections` client sockets (one connection each) to
/// one server, 64 B echo, `total` requests, each socket pipelining its share with a window
/// of `64 / connections` (at least 1).
pub(crate) async fn reqrep_connections(connections: usize, total: usize) -> f64 {
    let first = crate::msg_rs::connected_pair().await;
    // The rest connect to the same server.
    let addr = first.peer_addr().expect("connected");
    let mut sockets = vec![first];
    for _ in 1..connections {
        let mut req = ReqSocket::new(Tcp::default());
        req.connect(addr).await.expect("connect");
        sockets.push(req);
    }
    let window = (64 / connections).max(1);
    let each = total / connections;
    let payload = Bytes::from(vec![7u8; 64]);
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for req in sockets {
        let payload = payload.clone();
        set.spawn(crate::msg_rs::pipelined(req, payload, window, each));
    }
    while let Some(done) = set.join_next().await {
        done.expect("client");
    }
    (each * connections) as f64 / t.elapsed().as_secs_f64()
}

/// Request/Reply throughput at `size`, 64 in flight, about 256 MB moved each way.
pub(crate) async fn reqrep_size(size: usize) -> f64 {
    let req = crate::msg_rs::connected_pair().await;
    let total = (256 * 1024 * 1024 / size).clamp(256, 200_000);
    crate::msg_rs::pipelined(req, Bytes::from(vec![7u8; size]), 64, total).await
}

/// A publisher and `subscribers` subscribers on topic `bench`, the lossless policy; the
/// first subscriber also holds `extra_patterns` patterns that match nothing published.
/// Publishes `size` B flat out for `duration`; returns messages received per second,
/// summed over the subscribers, and messages published per second.
pub(crate) async fn pubsub(
    size: usize,
    subscribers: usize,
    extra_patterns: usize,
    duration: Duration,
) -> (f64, f64) {
    let mut publisher = PubSocket::with_options(
        Tcp::default(),
        PubOptions::default()
            .slow_subscriber(SlowSubscriber::Wait)
            .max_subscriptions(extra_patterns + 1, 1024),
    );
    publisher.bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = publisher.local_addr().expect("bound");
    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..subscribers {
        let mut sub = SubSocket::new(Tcp::default());
        sub.connect(addr).await.expect("connect");
        sub.subscribe("bench").await.expect("subscribe");
        if i == 0 {
            // In concurrent chunks: each subscribe waits for the publisher's ack.
            let mut next = 0;
            while next < extra_patterns {
                let chunk = (extra_patterns - next).min(512);
                futures_util::future::join_all(
                    (next..next + chunk).map(|p| sub.subscribe(format!("other.{p}.*"))),
                )
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()
                .expect("subscribe");
                next += chunk;
            }
        }
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut sub = sub;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(500), sub.next()).await
            {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let payload = Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < duration {
        for _ in 0..64 {
            publisher
                .publish("bench", payload.clone())
                .await
                .expect("publish");
        }
        published += 64;
        tokio::task::yield_now().await;
    }
    let publish_secs = start.elapsed().as_secs_f64();
    // Everything published reaches every subscriber under the lossless policy; the run
    // ends once each has it all.
    let expected = published * subscribers as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    drop(publisher);
    for r in readers {
        r.abort();
    }
    (got as f64 / secs, published as f64 / publish_secs)
}
