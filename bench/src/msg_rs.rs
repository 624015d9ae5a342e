//! `msg`: a `ReqSocket` against `msg::serve` with an echo `service_fn`.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{serve, RepSocket, ReqSocket, Request, Tcp};
use tower::service_fn;

use crate::{Latency, Plan, System};

pub(crate) struct Msg;

async fn connected_pair() -> ReqSocket<Tcp> {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.expect("connect");
    req
}

impl System for Msg {
    const NAME: &'static str = "msg";

    async fn latency(plan: Plan, size: usize) -> Latency {
        let req = connected_pair().await;
        let payload = Bytes::from(vec![7u8; size]);
        let mut samples = Vec::with_capacity(plan.round_trips);
        for i in 0..plan.warmup + plan.round_trips {
            let t = Instant::now();
            let reply = req.request(payload.clone()).await.expect("reply");
            debug_assert_eq!(reply.len(), size);
            if i >= plan.warmup {
                samples.push(t.elapsed());
            }
        }
        Latency::from_samples(samples)
    }

    async fn throughput(plan: Plan, size: usize) -> f64 {
        let req = connected_pair().await;
        let payload = Bytes::from(vec![7u8; size]);
        let total = plan.throughput_requests;
        let t = Instant::now();
        let mut in_flight = FuturesUnordered::new();
        let mut sent = 0;
        while sent < plan.in_flight.min(total) {
            in_flight.push(req.request(payload.clone()));
            sent += 1;
        }
        while let Some(reply) = in_flight.next().await {
            reply.expect("reply");
            if sent < total {
                in_flight.push(req.request(payload.clone()));
                sent += 1;
            }
        }
        total as f64 / t.elapsed().as_secs_f64()
    }
}
