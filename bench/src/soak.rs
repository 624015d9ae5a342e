//! `--soak SECS` (600 by default): everything at once for a long time, with memory watched.
//!
//! One reply socket and one publisher. Four long-lived clients keep requests of random size
//! (0 to 64 KiB, mostly small) in flight; every 100 ms a wave of short-lived clients
//! connects, sends a few requests and leaves, and a short-lived subscriber joins with a
//! random pattern and leaves a while later; the publisher sends messages of random size on
//! random topics throughout. The process's RSS is sampled every 10 s. It fails (exit code 1)
//! if any request fails, or if memory keeps growing: the slope over the second half of the
//! run above 1 MiB a minute, or the last sample 50% above the one at a quarter of the run.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use msg::{serve, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Tcp};
use tower::service_fn;

use crate::load::rss;

/// Payload sizes: mostly small, some large.
fn size(rng: &mut u64) -> usize {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    match *rng % 100 {
        0..=79 => (*rng >> 8) as usize % 512,
        80..=97 => (*rng >> 8) as usize % 8192,
        _ => (*rng >> 8) as usize % 65536,
    }
}

/// Counts a failure and prints the first few.
fn failed(tally: &Tally, what: std::fmt::Arguments<'_>) {
    if tally.failures.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("failure: {what}");
    }
}

#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    failures: AtomicU64,
    short_clients: AtomicU64,
    subscribers: AtomicU64,
    published: AtomicU64,
    received: AtomicU64,
}

/// Runs the soak for `secs`; returns whether it passed.
pub(crate) fn run(secs: u64) -> bool {
    crate::growth::raise_fd_limit();
    crate::run_on_workers(soak(Duration::from_secs(secs)))
}

async fn soak(duration: Duration) -> bool {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let rep_addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.expect("bind");
    let pub_addr = publisher.local_addr().expect("bound");

    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();

    // Long-lived clients, 16 requests in flight each.
    for c in 0..4u64 {
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut req = ReqSocket::new(Tcp::default());
            req.connect(rep_addr).await.expect("connect");
            let mut rng = 0x1234_5678 + c;
            while !stop.load(Ordering::Relaxed) {
                let batch: Vec<Bytes> = (0..256)
                    .map(|_| Bytes::from(vec![c as u8; size(&mut rng)]))
                    .collect();
                let mut replies = req.pipeline(futures_util::stream::iter(batch.clone()), 16);
                let mut i = 0;
                while let Some(reply) = replies.next().await {
                    match reply {
                        Ok(reply) if reply == batch[i] => {
                            tally.requests.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(_) => {
                            failed(&tally, format_args!("a long-lived client's reply crossed"))
                        }
                        Err(e) => failed(&tally, format_args!("a long-lived client: {e}")),
                    }
                    i += 1;
                }
            }
        });
    }

    // The publisher, on random topics at about 20,000 messages a second. It stops last, once
    // no subscriber is dialing it any more.
    let publisher_stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (tally, stop) = (tally.clone(), publisher_stop.clone());
        tokio::spawn(async move {
            let mut rng = 0xdead_beef_u64;
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                for _ in 0..20 {
                    let topic = format!("t.{}", rng % 8);
                    let payload = Bytes::from(vec![1u8; size(&mut rng)]);
                    if publisher.publish(topic, payload).await.is_ok() {
                        tally.published.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    };

    // Waves of short-lived clients and subscribers.
    {
        let (tally, stop) = (tally.clone(), stop.clone());
        tasks.spawn(async move {
            let mut rng = 0x0bad_cafe_u64;
            let mut wave = tokio::time::interval(Duration::from_millis(100));
            let mut churn = tokio::task::JoinSet::new();
            while !stop.load(Ordering::Relaxed) {
                wave.tick().await;
                while churn.try_join_next().is_some() {}
                for _ in 0..10 {
                    let tally = tally.clone();
                    let payload = Bytes::from(vec![2u8; size(&mut rng)]);
                    churn.spawn(async move {
                        let mut req = ReqSocket::new(Tcp::default());
                        if let Err(e) = req.connect(rep_addr).await {
                            failed(&tally, format_args!("a short-lived client's dial: {e}"));
                            return;
                        }
                        for _ in 0..5 {
                            match req.request(payload.clone()).await {
                                Ok(reply) if reply == payload => {
                                    tally.requests.fetch_add(1, Ordering::Relaxed);
                                }
                                Ok(_) => failed(
                                    &tally,
                                    format_args!("a short-lived client's reply crossed"),
                                ),
                                Err(e) => failed(&tally, format_args!("a short-lived client: {e}")),
                            }
                        }
                        tally.short_clients.fetch_add(1, Ordering::Relaxed);
                    });
                }
                let tally = tally.clone();
                let pattern = match size(&mut rng) % 3 {
                    0 => "t.>".to_owned(),
                    1 => format!("t.{}", rng % 8),
                    _ => "*.*".to_owned(),
                };
                let stay = Duration::from_millis(200 + rng % 800);
                churn.spawn(async move {
                    let mut sub = SubSocket::new(Tcp::default());
                    if let Err(e) = sub.connect(pub_addr).await {
                        failed(&tally, format_args!("a subscriber's dial: {e}"));
                        return;
                    }
                    if let Err(e) = sub.subscribe(pattern).await {
                        failed(&tally, format_args!("a subscription: {e}"));
                        return;
                    }
                    let until = tokio::time::Instant::now() + stay;
                    while let Ok(Some(_)) = tokio::time::timeout_at(until, sub.next()).await {
                        tally.received.fetch_add(1, Ordering::Relaxed);
                    }
                    tally.subscribers.fetch_add(1, Ordering::Relaxed);
                });
            }
            while churn.join_next().await.is_some() {}
        });
    }

    println!("soak for {} s: RSS every 10 s", duration.as_secs());
    println!(
        "{:>6} {:>9} {:>12} {:>9} {:>9} {:>10} {:>12} {:>9}",
        "secs", "RSS MiB", "requests", "failed", "clients", "subscribers", "received", "published"
    );
    let mut samples: Vec<(f64, u64)> = Vec::new();
    let mut sample = tokio::time::interval(Duration::from_secs(10));
    sample.tick().await;
    while start.elapsed() < duration {
        sample.tick().await;
        let at = start.elapsed().as_secs_f64();
        let now = rss();
        samples.push((at, now));
        println!(
            "{:>6.0} {:>9.1} {:>12} {:>9} {:>9} {:>10} {:>12} {:>9}",
            at,
            now as f64 / 1048576.0,
            tally.requests.load(Ordering::Relaxed),
            tally.failures.load(Ordering::Relaxed),
            tally.short_clients.load(Ordering::Relaxed),
            tally.subscribers.load(Ordering::Relaxed),
            tally.received.load(Ordering::Relaxed),
            tally.published.load(Ordering::Relaxed),
        );
    }
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    publisher_stop.store(true, Ordering::Relaxed);
    publishing.await.expect("publisher");

    // Least-squares slope of RSS over the second half, in MiB a minute.
    let half: Vec<(f64, f64)> = samples[samples.len() / 2..]
        .iter()
        .map(|(t, r)| (*t, *r as f64 / 1048576.0))
        .collect();
    let n = half.len() as f64;
    let (mt, mr) = (
        half.iter().map(|p| p.0).sum::<f64>() / n,
        half.iter().map(|p| p.1).sum::<f64>() / n,
    );
    let cov: f64 = half.iter().map(|(t, r)| (t - mt) * (r - mr)).sum();
    let var: f64 = half.iter().map(|(t, _)| (t - mt).powi(2)).sum();
    let slope = if var > 0.0 { cov / var * 60.0 } else { 0.0 };
    let quarter = samples[samples.len() / 4].1 as f64;
    let last = samples.last().map_or(0.0, |s| s.1 as f64);
    let failures = tally.failures.load(Ordering::Relaxed);
    println!(
        "RSS slope over the second half: {slope:+.2} MiB/min; last sample {:.2}x the one at a \
         quarter of the run; {failures} failure(s)",
        last / quarter
    );
    let passed = failures == 0 && slope <= 1.0 && last <= quarter * 1.5;
    println!("{}", if passed { "PASS" } else { "FAIL" });
    passed
}
