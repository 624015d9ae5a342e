//! The pure-Rust `zeromq` crate: a DEALER client against a ROUTER echo server.

use std::time::Instant;

use bytes::Bytes;
use zeromq::{DealerSocket, RouterSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use crate::{Latency, Plan, System};

pub(crate) struct Zmq;

async fn connected_pair() -> DealerSocket {
    let mut router = RouterSocket::new();
    let endpoint = router.bind("tcp://127.0.0.1:0").await.expect("bind");
    tokio::spawn(async move {
        // ROUTER messages carry the peer's identity first: echo the whole message back.
        while let Ok(msg) = router.recv().await {
            if router.send(msg).await.is_err() {
                return;
            }
        }
    });
    let mut dealer = DealerSocket::new();
    dealer
        .connect(&endpoint.to_string())
        .await
        .expect("connect");
    dealer
}

impl System for Zmq {
    const NAME: &'static str = "zeromq";

    async fn latency(plan: Plan, size: usize) -> Latency {
        let mut dealer = connected_pair().await;
        let payload = Bytes::from(vec![7u8; size]);
        let mut samples = Vec::with_capacity(plan.round_trips);
        for i in 0..plan.warmup + plan.round_trips {
            let t = Instant::now();
            dealer
                .send(ZmqMessage::from(payload.clone()))
                .await
                .expect("send");
            dealer.recv().await.expect("recv");
            if i >= plan.warmup {
                samples.push(t.elapsed());
            }
        }
        Latency::from_samples(samples)
    }

    async fn throughput(plan: Plan, size: usize) -> f64 {
        let mut dealer = connected_pair().await;
        let payload = Bytes::from(vec![7u8; size]);
        let total = plan.throughput_requests;
        let t = Instant::now();
        let mut sent = 0;
        while sent < plan.in_flight.min(total) {
            dealer
                .send(ZmqMessage::from(payload.clone()))
                .await
                .expect("send");
            sent += 1;
        }
        for _ in 0..total {
            dealer.recv().await.expect("recv");
            if sent < total {
                dealer
                    .send(ZmqMessage::from(payload.clone()))
                    .await
                    .expect("send");
                sent += 1;
            }
        }
        total as f64 / t.elapsed().as_secs_f64()
    }
}
