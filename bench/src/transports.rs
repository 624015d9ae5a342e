//! `msg` over each transport: TCP, TLS over TCP, QUIC and IPC, with the same workloads.

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use msg::{serve, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Transport};

use crate::Latency;

/// A transport with the addresses to bind and dial.
pub(crate) trait Setup: Send + 'static {
    type T: Transport;
    const NAME: &'static str;
    fn transport() -> Self::T;
    fn bind_target() -> <Self::T as Transport>::Target;
    fn dial_target(bound: &<Self::T as Transport>::Addr) -> <Self::T as Transport>::Target;
}

pub(crate) struct Tcp;
pub(crate) struct Tls;
pub(crate) struct Quic;
pub(crate) struct Ipc;

impl Setup for Tcp {
    type T = msg::Tcp;
    const NAME: &'static str = "tcp";
    fn transport() -> msg::Tcp {
        msg::Tcp::default()
    }
    fn bind_target() -> msg::tcp::Endpoint {
        "127.0.0.1:0".into()
    }
    fn dial_target(bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
        (*bound).into()
    }
}

fn pki() -> &'static msg::tls::TestPki {
    static PKI: std::sync::OnceLock<msg::tls::TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| msg::tls::TestPki::generate(&["localhost"]).expect("test PKI"))
}

impl Setup for Tls {
    type T = msg::Tls;
    const NAME: &'static str = "tls";
    fn transport() -> msg::Tls {
        let pki = pki();
        let server = msg::tls::server_config(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .expect("server config");
        let client = msg::tls::client_config(pki.ca_pem.as_bytes()).expect("client config");
        msg::Tls::server(server)
            .with_client(client, "localhost")
            .expect("client config")
    }
    fn bind_target() -> msg::tcp::Endpoint {
        "127.0.0.1:0".into()
    }
    fn dial_target(bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
        (*bound).into()
    }
}

impl Setup for Quic {
    type T = msg::Quic;
    const NAME: &'static str = "quic";
    fn transport() -> msg::Quic {
        msg::Quic::default()
    }
    fn bind_target() -> msg::tcp::Endpoint {
        "127.0.0.1:0".into()
    }
    fn dial_target(bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
        (*bound).into()
    }
}

impl Setup for Ipc {
    type T = msg::Ipc;
    const NAME: &'static str = "ipc";
    fn transport() -> msg::Ipc {
        msg::Ipc::default()
    }
    fn bind_target() -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        std::env::temp_dir().join(format!(
            "msg-bench-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }
    fn dial_target(bound: &msg::ipc::IpcAddr) -> PathBuf {
        bound.into()
    }
}

async fn pair<S: Setup>() -> ReqSocket<S::T> {
    let mut rep = RepSocket::new(S::transport());
    rep.bind(S::bind_target()).await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        tower::service_fn(|req: Request<<S::T as Transport>::Addr>| async move {
            Ok::<_, Infallible>(req.msg().clone())
        }),
    ));
    let mut req = ReqSocket::new(S::transport());
    req.connect(S::dial_target(&addr)).await.expect("connect");
    req
}

/// 64 B round trips, one at a time.
pub(crate) async fn latency<S: Setup>(warmup: usize, round_trips: usize) -> Latency {
    let req = pair::<S>().await;
    let payload = Bytes::from(vec![7u8; 64]);
    let mut samples = Vec::with_capacity(round_trips);
    for i in 0..warmup + round_trips {
        let t = Instant::now();
        req.request(payload.clone()).await.expect("reply");
        if i >= warmup {
            samples.push(t.elapsed());
        }
    }
    Latency::from_samples(samples)
}

/// Requests per second with `in_flight` outstanding.
pub(crate) async fn throughput<S: Setup>(size: usize, in_flight: usize, total: usize) -> f64 {
    let req = pair::<S>().await;
    crate::msg_rs::pipelined(req, Bytes::from(vec![7u8; size]), in_flight, total).await
}

/// Messages per second received by one subscriber, the publisher waiting for room so that
/// nothing is dropped.
pub(crate) async fn pubsub<S: Setup>(size: usize, duration: Duration) -> f64 {
    let mut publisher = PubSocket::with_options(
        S::transport(),
        msg::PubOptions::default().slow_subscriber(msg::SlowSubscriber::Wait),
    );
    publisher.bind(S::bind_target()).await.expect("bind");
    let addr = publisher.local_addr().expect("bound");
    let mut sub = SubSocket::new(S::transport());
    sub.connect(S::dial_target(&addr)).await.expect("connect");
    sub.subscribe("t").await.expect("subscribe");
    sub.subscribe("end").await.expect("subscribe");
    let payload = Bytes::from(vec![7u8; size]);
    let start = Instant::now();
    let publishing = tokio::spawn(async move {
        let mut published = 0u64;
        while start.elapsed() < duration {
            for _ in 0..256 {
                publisher
                    .publish("t", payload.clone())
                    .await
                    .expect("publish");
            }
            published += 256;
            tokio::task::yield_now().await;
        }
        publisher.publish("end", Bytes::new()).await.ok();
        (published, publisher)
    });
    let mut received = 0u64;
    while let Some(msg) = sub.next().await {
        if msg.topic() == "end" {
            break;
        }
        received += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = publishing.await;
    received as f64 / secs
}
