//! `omq` (crate `omq-tokio`, pure Rust, ZeroMQ wire-compatible): a DEALER client against
//! a ROUTER echo server for throughput, REQ against REP for latency, and PUB/SUB with
//! `xpub_nodrop` (the publisher waits for a full subscriber instead of dropping; that
//! workload is `pubsub::omq`).
//!
//! Every socket is made with `Socket::new`, which spawns its driver on the calling tokio
//! runtime: the bench's 2-worker runtime, client and server in one process, like the
//! other rows. omq's author benchmarks it on its own `Context` (IO threads of its own,
//! each a current-thread runtime); options are the defaults his benchmarks use.

use std::time::{Duration, Instant};

use bytes::Bytes;
use omq_tokio::{Message, Options, Socket, SocketType};

use crate::{Latency, Plan, System};

pub(crate) struct Omq;

/// How long setting up a pair (connecting, subscribing) may take before the run fails.
pub(crate) const SETUP: Duration = Duration::from_secs(10);

/// Waits until every socket has a peer past the ZMTP handshake, as omq's own benchmarks
/// do before measuring; panics after [`SETUP`].
pub(crate) async fn wait_connected(sockets: &[&Socket]) {
    let deadline = Instant::now() + SETUP;
    loop {
        let mut pending = 0;
        for s in sockets {
            let conns = s.connections().await.unwrap_or_default();
            if !conns.iter().any(|c| c.peer_info.is_some()) {
                pending += 1;
            }
        }
        if pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "omq: {pending} socket(s) not connected"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A server socket of `server` type bound on loopback, echoing every message back, and a
/// connected client socket of `client` type.
async fn echo_pair(server: SocketType, client: SocketType) -> Socket {
    let server = Socket::new(server, Options::default());
    let endpoint = server.bind("tcp://127.0.0.1:0").await.expect("bind");
    tokio::spawn(async move {
        // ROUTER messages carry the peer's identity first: echo the whole message back.
        while let Ok(msg) = server.recv().await {
            if server.send(msg).await.is_err() {
                return;
            }
        }
    });
    let client = Socket::new(client, Options::default());
    client.connect(endpoint).await.expect("connect");
    wait_connected(&[&client]).await;
    client
}

impl System for Omq {
    const NAME: &'static str = "omq";

    async fn latency(plan: Plan, size: usize) -> Latency {
        let req = echo_pair(SocketType::Rep, SocketType::Req).await;
        let payload = Bytes::from(vec![7u8; size]);
        let mut samples = Vec::with_capacity(plan.round_trips);
        for i in 0..plan.warmup + plan.round_trips {
            let t = Instant::now();
            req.send(Message::single(payload.clone()))
                .await
                .expect("send");
            req.recv().await.expect("recv");
            if i >= plan.warmup {
                samples.push(t.elapsed());
            }
        }
        Latency::from_samples(samples)
    }

    async fn throughput(plan: Plan, size: usize) -> f64 {
        let dealer = echo_pair(SocketType::Router, SocketType::Dealer).await;
        let payload = Bytes::from(vec![7u8; size]);
        let total = plan.throughput_requests;
        let t = Instant::now();
        let mut sent = 0;
        while sent < plan.in_flight.min(total) {
            dealer
                .send(Message::single(payload.clone()))
                .await
                .expect("send");
            sent += 1;
        }
        for _ in 0..total {
            dealer.recv().await.expect("recv");
            if sent < total {
                dealer
                    .send(Message::single(payload.clone()))
                    .await
                    .expect("send");
                sent += 1;
            }
        }
        total as f64 / t.elapsed().as_secs_f64()
    }
}
