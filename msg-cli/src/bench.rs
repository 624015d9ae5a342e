//! `msg bench`: request/reply and publish/subscribe throughput, with latency percentiles
//! from an HDR histogram, over any endpoint: msg-rs's iperf.
//!
//! Request/reply runs `--inflight` loops of one request at a time on one socket for
//! `--duration`, each timing its own requests. Publish/subscribe publishes as fast as the
//! subscriber takes (the lossless policy), each payload carrying the time it was published,
//! and the subscriber in the same process times its arrival.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use msg::any::AnyAddr;
use msg::{
    AnyTransport, Endpoint, PubOptions, PubSocket, RepSocket, ReqSocket, Request, SlowSubscriber,
    SubSocket,
};
use tokio_stream::StreamExt;

use crate::progress::Progress;
use crate::transport::endpoint;
use crate::{describe, BenchArgs, Mode};

/// Longest the last messages may take to arrive once publishing stops.
const DRAIN: Duration = Duration::from_secs(10);

/// Runs the measurements `args` asks for and prints their figures on standard output.
pub(crate) async fn run(transport: AnyTransport, args: BenchArgs) -> Result<(), String> {
    let addr = endpoint(&args.addr)?;
    if args.connect && args.mode == Mode::Pub {
        return Err(
            "--connect loads a request/reply server; publish/subscribe binds its own".into(),
        );
    }
    if matches!(args.mode, Mode::All | Mode::Req) {
        reqrep(&transport, &addr, &args).await?;
    }
    if !args.connect && matches!(args.mode, Mode::All | Mode::Pub) {
        pubsub(&transport, &addr, &args).await?;
    }
    Ok(())
}

/// Latencies from 1 µs to 60 s, to three significant figures.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds are valid")
}

fn record(hist: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    hist.saturating_record(micros.max(1));
}

/// `p50 0.123 ms, p90 ..., p99 ..., p99.9 ..., max ...`.
fn percentiles(hist: &Histogram<u64>) -> String {
    let ms = |micros: u64| micros as f64 / 1000.0;
    format!(
        "p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
        ms(hist.value_at_quantile(0.50)),
        ms(hist.value_at_quantile(0.90)),
        ms(hist.value_at_quantile(0.99)),
        ms(hist.value_at_quantile(0.999)),
        ms(hist.max()),
    )
}

/// Mebibytes a second for `count` payloads of `size` bytes in `elapsed`.
fn mib_per_s(count: u64, size: usize, elapsed: Duration) -> f64 {
    count as f64 * size as f64 / elapsed.as_secs_f64() / (1024.0 * 1024.0)
}

async fn reqrep(transport: &AnyTransport, addr: &Endpoint, args: &BenchArgs) -> Result<(), String> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (target, server) = if args.connect {
        (addr.to_string(), None)
    } else {
        let mut rep = RepSocket::new(transport.clone());
        rep.bind(addr)
            .await
            .map_err(|e| format!("cannot bind {addr}: {}", describe(&e)))?;
        let local = rep.local_addr().map_or(addr.to_string(), |a| a.to_string());
        let echo = tower::service_fn(|req: Request<AnyAddr>| async move {
            Ok::<_, std::convert::Infallible>(req.msg().clone())
        });
        let server = msg::serve(rep, echo).with_graceful_shutdown(async {
            let _ = stopped.await;
        });
        (local, Some(tokio::spawn(server)))
    };
    let target = endpoint(&target)?;
    let mut socket = ReqSocket::new(transport.clone());
    socket
        .connect(&target)
        .await
        .map_err(|e| format!("cannot connect to {target}: {}", describe(&e)))?;
    let payload = Bytes::from(vec![b'x'; args.size]);
    // One first, so that a server that does not answer fails here, with its reason.
    socket
        .request(payload.clone())
        .await
        .map_err(|e| format!("request to {target} failed: {}", describe(&e)))?;

    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let progress = Progress::start("req/rep", args.duration, done.clone());
    let started = Instant::now();
    let deadline = started + args.duration;
    let workers: Vec<_> = (0..args.inflight)
        .map(|_| {
            let (socket, payload) = (socket.clone(), payload.clone());
            let (done, failed, first_error) = (done.clone(), failed.clone(), first_error.clone());
            tokio::spawn(async move {
                let mut hist = histogram();
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match socket.request(payload.clone()).await {
                        Ok(_) => {
                            record(&mut hist, sent.elapsed());
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            let mut first = first_error.lock().unwrap_or_else(|e| e.into_inner());
                            first.get_or_insert_with(|| describe(&e));
                        }
                    }
                }
                hist
            })
        })
        .collect();
    let mut hist = histogram();
    for worker in workers {
        let part = worker
            .await
            .map_err(|e| format!("a request loop failed: {e}"))?;
        hist.add(part).map_err(|e| format!("{e}"))?;
    }
    let elapsed = started.elapsed();
    progress.finish();
    socket.close().await;
    let _ = stop.send(());
    if let Some(server) = server {
        let _ = server.await;
    }

    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!(
        "req/rep over {target}: {} B requests, {} in flight, {:.1} s",
        args.size,
        args.inflight,
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} req/s, {:.2} MiB/s each way ({done} answered, {failed} failed)",
        done as f64 / elapsed.as_secs_f64(),
        mib_per_s(done, args.size, elapsed)
    );
    println!("  latency: {}", percentiles(&hist));
    if let Some(first) = first_error.lock().unwrap_or_else(|e| e.into_inner()).take() {
        println!("  first failure: {first}");
    }
    Ok(())
}

async fn pubsub(transport: &AnyTransport, addr: &Endpoint, args: &BenchArgs) -> Result<(), String> {
    // Room for the time each message was published.
    let size = args.size.max(8);
    let options = PubOptions::default().slow_subscriber(SlowSubscriber::Wait);
    let mut publisher = PubSocket::with_options(transport.clone(), options);
    publisher
        .bind(addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {}", describe(&e)))?;
    let local = publisher
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    let mut subscriber = SubSocket::new(transport.clone());
    subscriber
        .connect(endpoint(&local)?)
        .await
        .map_err(|e| format!("cannot connect to {local}: {}", describe(&e)))?;
    subscriber
        .subscribe("bench.>")
        .await
        .map_err(|e| format!("cannot subscribe at {local}: {}", describe(&e)))?;

    let base = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let received = received.clone();
        tokio::spawn(async move {
            let mut hist = histogram();
            while let Some(msg) = subscriber.next().await {
                if msg.topic() == "bench.end" {
                    break;
                }
                let Some(stamp) = msg.payload().get(..8) else {
                    continue;
                };
                let mut nanos = [0u8; 8];
                nanos.copy_from_slice(stamp);
                let sent = base + Duration::from_nanos(u64::from_le_bytes(nanos));
                record(&mut hist, sent.elapsed());
                received.fetch_add(1, Ordering::Relaxed);
            }
            let missed = subscriber.stats().missed;
            subscriber.close().await;
            (hist, missed)
        })
    };

    let progress = Progress::start("pub/sub", args.duration, received.clone());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut published = 0u64;
    let mut buf = BytesMut::with_capacity(size * 64);
    while Instant::now() < deadline {
        buf.reserve(size);
        let nanos = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        buf.put_u64_le(nanos);
        buf.put_bytes(b'x', size - 8);
        let payload = buf.split().freeze();
        publisher
            .publish("bench.data", payload)
            .await
            .map_err(|e| format!("cannot publish: {}", describe(&e)))?;
        published += 1;
    }
    publisher
        .publish("bench.end", Bytes::new())
        .await
        .map_err(|e| format!("cannot publish: {}", describe(&e)))?;
    let outcome = tokio::time::timeout(DRAIN, reader).await;
    let elapsed = started.elapsed();
    progress.finish();
    publisher.close().await;
    let (hist, missed) = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(format!("the subscriber failed: {e}")),
        Err(_) => {
            return Err(format!(
                "the subscriber took more than {} s to receive what was published",
                DRAIN.as_secs()
            ))
        }
    };
    let received = received.load(Ordering::Relaxed);
    println!(
        "pub/sub over {local}: {size} B messages, one subscriber, {:.1} s",
        elapsed.as_secs_f64()
    );
    println!(
        "  throughput: {:.0} msg/s, {:.2} MiB/s ({published} published, {received} received, {missed} dropped)",
        received as f64 / elapsed.as_secs_f64(),
        mib_per_s(received, size, elapsed)
    );
    println!("  latency: {}", percentiles(&hist));
    Ok(())
}
