//! The main job, on loopback with no set-up: Request/Reply and Publish/Subscribe, printing
//! what happened and the rates reached.
//!
//! Run with `cargo run --release -p msg-examples --example demo`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;
use msg::{serve, RepSocket, ReqSocket, Request, Tcp};
use tokio_stream::StreamExt;
use tower::service_fn;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), msg::Error> {
    // The future given to `#[tokio::main]` runs on the main thread, outside the pool of
    // workers, so that each of its wake-ups would cross threads (about 50 µs a round trip
    // on a small VM). As a task, the demo runs on the workers beside the sockets.
    tokio::spawn(reqrep()).await.expect("demo task panicked")?;
    tokio::spawn(pubsub()).await.expect("demo task panicked")
}

/// A reply socket serving an echo handler, and a request socket measuring it.
async fn reqrep() -> Result<(), msg::Error> {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    println!("reply socket bound on {addr}");

    let handler =
        service_fn(
            |req: Request<SocketAddr>| async move { Ok::<_, Infallible>(req.msg().clone()) },
        );
    tokio::spawn(serve(rep, handler));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;
    println!("request socket connected to {addr}");

    let reply = req.request(Bytes::from("hello")).await?;
    println!("request \"hello\" -> reply {reply:?}");

    // One request at a time: round-trip latency.
    let payload = Bytes::from(vec![7u8; 64]);
    let n = 20_000;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let reply = req.request(payload.clone()).await?;
        samples.push(t.elapsed());
        assert_eq!(reply.len(), payload.len());
    }
    samples.sort();
    println!(
        "{n} sequential 64 B round trips: p50 {:?}, p99 {:?}",
        samples[n / 2],
        samples[n * 99 / 100]
    );

    // 64 requests in flight on one connection, from one task: throughput.
    for size in [64usize, 1024] {
        let payload = Bytes::from(vec![7u8; size]);
        let total = 400_000;
        let t = Instant::now();
        // `futures_util`'s `iter`, which never yields: `tokio_stream::iter` yields to the
        // scheduler every 32 items, and each yield hands the task to the other worker.
        let requests = futures_util::stream::iter(std::iter::repeat_n(payload, total));
        let mut replies = req.pipeline(requests, 64);
        while let Some(reply) = replies.next().await {
            assert_eq!(reply?.len(), size);
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{total} requests of {size} B, 64 in flight: {:.0} req/s, {:.1} MB/s each way",
            total as f64 / secs,
            (total * size) as f64 / secs / 1e6
        );
    }
    Ok(())
}

/// A publisher sending flat out for a second to two subscribers, one of which reads only
/// one topic.
async fn pubsub() -> Result<(), msg::Error> {
    use msg::{PubSocket, SubSocket};

    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await?;
    let addr = publisher.local_addr().expect("bound");
    println!("\npublisher bound on {addr}");

    let mut everything = SubSocket::new(Tcp::default());
    everything.connect(addr).await?;
    everything.subscribe("ticks.>").await?;
    let mut only_btc = SubSocket::new(Tcp::default());
    only_btc.connect(addr).await?;
    only_btc.subscribe("ticks.*.btc").await?;
    println!("subscribers on \"ticks.>\" and \"ticks.*.btc\"");

    let readers: Vec<_> = [everything, only_btc]
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut received = 0u64;
                while let Ok(Some(_)) =
                    tokio::time::timeout(std::time::Duration::from_millis(300), sub.next()).await
                {
                    received += 1;
                }
                (received, sub.stats())
            })
        })
        .collect();

    let topics = [
        "ticks.eu.btc",
        "ticks.eu.eth",
        "ticks.us.btc",
        "ticks.us.eth",
    ];
    let payload = Bytes::from(vec![7u8; 64]);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < std::time::Duration::from_secs(1) {
        for _ in 0..1000 {
            publisher
                .publish(topics[sent as usize % topics.len()], payload.clone())
                .await?;
            sent += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "published {sent} messages of 64 B in {secs:.2} s: {:.0} msg/s",
        sent as f64 / secs
    );
    for (name, reader) in ["ticks.>", "ticks.*.btc"].iter().zip(readers) {
        let (received, stats) = reader.await.expect("reader panicked");
        println!(
            "subscriber {name:>12}: received {received}, gaps seen {}",
            stats.missed
        );
    }
    let stats = publisher.stats();
    println!(
        "publisher: {} published, {} copies queued, {} dropped for slow subscribers",
        stats.published, stats.queued, stats.dropped
    );
    Ok(())
}
