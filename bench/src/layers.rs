//! The cost of each message layer: a `ReqSocket` bare, and with one layer at a time over
//! it, against `msg::serve` with an echo handler. Same client shape in every row (64
//! `oneshot` calls in a `FuturesUnordered`, refilled as they finish), so that the rows
//! compare the layers, not the clients.
//!
//! Measured as users pay it: `--layers` first installs what an application has installed
//! ([`install_observers`]), a `tracing_subscriber::fmt` subscriber at `info` and the
//! Prometheus recorder; `--layers --uninstrumented` runs without them, as the table was
//! first measured.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::layers::{GzipLayer, MetricsLayer, TraceLayer};
use msg::retry::RetryPolicy;
use msg::Message;
use tower::retry::RetryLayer;
use tower::timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::Level;

use crate::msg_rs::connected_pair;

/// Installs, for the whole process, what an application observing msg installs: a
/// `tracing_subscriber::fmt` subscriber at `info` (as `RUST_LOG=info` sets it), writing to a
/// sink so that writing does not weigh on the rows, and `metrics-exporter-prometheus`'s
/// recorder (its recorder only, no HTTP listener), upkept every 5 s as its exporter would.
pub(crate) fn install_observers() {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
        .with_writer(std::io::sink)
        .finish();
    tracing::subscriber::set_global_default(subscriber).expect("no subscriber installed yet");
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("no recorder installed yet");
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(5));
        handle.run_upkeep();
    });
}

/// The p50 of `round_trips` sequential calls of `size` bytes, and the rate of `total`
/// calls with 64 in flight.
async fn measure<S>(svc: S, size: usize, round_trips: usize, total: usize) -> (Duration, f64)
where
    S: Service<Message, Response = Message> + Clone + Send + 'static,
    S::Error: Debug,
    S::Future: Send,
{
    // Compressible, so that the gzip row does its work.
    let payload = Bytes::from((0..size).map(|i| b"abcdefgh"[i % 8]).collect::<Vec<u8>>());
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        svc.clone()
            .oneshot(Message::new(payload.clone()))
            .await
            .expect("reply");
        samples.push(t.elapsed());
    }
    samples.sort();
    let p50 = samples[samples.len() / 2];

    let t = Instant::now();
    let mut calls = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < total {
        while sent < total && calls.len() < 64 {
            calls.push(svc.clone().oneshot(Message::new(payload.clone())));
            sent += 1;
        }
        if let Some(reply) = calls.next().await {
            reply.expect("reply");
            done += 1;
        }
    }
    (p50, total as f64 / t.elapsed().as_secs_f64())
}

/// The rate of one row alone, by name (`bare`, `trace`, `trace-info`, `metrics`,
/// `timeout`, `retry`, `gzip`), for a profiler: `total` calls, 64 in flight.
pub(crate) async fn row(name: String, size: usize, total: usize) -> f64 {
    let pair = connected_pair().await;
    let (_, rate) = match name.as_str() {
        "bare" => measure(pair, size, 1, total).await,
        "trace" => measure(TraceLayer::new().layer(pair), size, 1, total).await,
        "trace-info" => {
            let layer = TraceLayer::new().level(Level::INFO);
            measure(layer.layer(pair), size, 1, total).await
        }
        "metrics" => measure(MetricsLayer::new().layer(pair), size, 1, total).await,
        "timeout" => {
            let layer = TimeoutLayer::new(Duration::from_secs(10));
            measure(layer.layer(pair), size, 1, total).await
        }
        "retry" => {
            let layer = RetryLayer::new(RetryPolicy::default());
            measure(layer.layer(pair), size, 1, total).await
        }
        "gzip" => measure(GzipLayer::new(6).layer(pair), size, 1, total).await,
        other => panic!("no layer row {other}"),
    };
    rate
}

/// Measures every row once: (name, p50, req/s).
pub(crate) async fn rows(
    size: usize,
    round_trips: usize,
    total: usize,
) -> Vec<(&'static str, Duration, f64)> {
    let mut out = Vec::new();
    let (p50, rate) = measure(connected_pair().await, size, round_trips, total).await;
    out.push(("bare", p50, rate));
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+trace", p50, rate));
    // The spans and `call ok` events at the subscriber's level: what tracing costs when on.
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new().level(Level::INFO))
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+trace info", p50, rate));
    let svc = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+metrics", p50, rate));
    let svc = ServiceBuilder::new()
        .timeout(Duration::from_secs(10))
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+timeout", p50, rate));
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(RetryPolicy::default()))
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+retry", p50, rate));
    let svc = ServiceBuilder::new()
        .layer(GzipLayer::new(6))
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("+gzip", p50, rate));
    let svc = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(MetricsLayer::new())
        .timeout(Duration::from_secs(10))
        .layer(RetryLayer::new(RetryPolicy::default()))
        .layer(GzipLayer::new(6))
        .service(connected_pair().await);
    let (p50, rate) = measure(svc, size, round_trips, total).await;
    out.push(("all five", p50, rate));
    out
}
