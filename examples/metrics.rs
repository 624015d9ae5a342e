//! Metrics in Prometheus text format from a real HTTP endpoint: `MetricsLayer` on the client
//! and in front of the handler, the sockets' own counters, and `metrics-exporter-prometheus`
//! serving them all on loopback. The program scrapes its own endpoint and prints what a
//! Prometheus server would see.
//!
//! Run with `cargo run -p msg-examples --example metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use metrics_exporter_prometheus::{BuildError, PrometheusBuilder};
use msg::layers::MetricsLayer;
use msg::{serve, Message, RepSocket, ReqSocket, Request, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// Installs the Prometheus exporter with its HTTP endpoint on a free loopback port, and
/// returns the port's address. Must run within a tokio runtime, once per process.
///
/// The exporter binds the address itself, so a free port is found by binding one and
/// letting it go; another program may take it in between, so a failed bind is tried again
/// on a fresh port (the recorder is installed only once the listener is bound).
pub fn install_exporter() -> Result<SocketAddr, Box<dyn std::error::Error>> {
    let mut tries = 0;
    loop {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        match PrometheusBuilder::new().with_http_listener(addr).install() {
            Ok(()) => return Ok(addr),
            Err(BuildError::FailedToCreateHTTPListener(_)) if tries < 10 => tries += 1,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fetches `/metrics` from `addr` with a plain HTTP/1.1 request; returns the body.
pub async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    Ok(match response.split_once("\r\n\r\n") {
        Some((_, body)) => body.to_owned(),
        None => response,
    })
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = install_exporter()?;

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    let handler = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(service_fn(|req: Request<SocketAddr>| async move {
            Ok::<_, Infallible>(req.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;
    let client = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(req);
    for i in 0..100u32 {
        client
            .clone()
            .oneshot(Message::new(Bytes::from(i.to_string())))
            .await?;
    }

    println!("GET http://{endpoint}/metrics");
    for line in scrape(endpoint).await?.lines() {
        if line.starts_with("msg_") {
            println!("{line}");
        }
    }
    Ok(())
}
