//! The main job, on loopback with no set-up: Request/Reply and Publish/Subscribe, printing
//! what happened and the rates reached.
//!
//! Run with `cargo run --release -p msg-examples --example demo`.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use load::drive_in_flight;
use msg::{serve, RepSocket, ReqSocket, Request, Tcp};
use tower::service_fn;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), msg::Error> {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    println!("reply socket bound on {addr}");

    let handler = service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) });
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

    // 64 requests in flight on one connection: throughput.
    for size in [64usize, 1024] {
        let payload = Bytes::from(vec![7u8; size]);
        let total = 200_000;
        let t = Instant::now();
        drive_in_flight(&req, payload, total, 64).await?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{total} requests of {size} B, 64 in flight: {:.0} req/s, {:.1} MB/s each way",
            total as f64 / secs,
            (total * size) as f64 / secs / 1e6
        );
    }

    pubsub().await
}

/// A publisher sending flat out for a second to two subscribers, one of which reads only
/// one topic.
async fn pubsub() -> Result<(), msg::Error> {
    use msg::{PubSocket, SubSocket};
    use tokio_stream::StreamExt;

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

mod load {
    use bytes::Bytes;
    use msg::{ReqSocket, Tcp};
    use tokio::task::JoinSet;

    /// Sends `total` requests with `in_flight` outstanding at any moment.
    pub(crate) async fn drive_in_flight(
        req: &ReqSocket<Tcp>,
        payload: Bytes,
        total: usize,
        in_flight: usize,
    ) -> Result<(), msg::Error> {
        let mut set = JoinSet::new();
        for worker in 0..in_flight {
            let req = req.clone();
            let payload = payload.clone();
            let count = total / in_flight + usize::from(worker < total % in_flight);
            set.spawn(async move {
                for _ in 0..count {
                    req.request(payload.clone()).await?;
                }
                Ok::<_, msg::Error>(())
            });
        }
        while let Some(done) = set.join_next().await {
            done.expect("worker panicked")?;
        }
        Ok(())
    }
}
