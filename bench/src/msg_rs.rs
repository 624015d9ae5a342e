//! `msg`: a `ReqSocket` against `msg::serve` with an echo `service_fn`.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{serve, RepSocket, ReqSocket, Request, Tcp, Transport};
use tower::service_fn;

use crate::{Latency, Plan, System};

pub(crate) async fn connected_pair() -> ReqSocket<Tcp> {
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

/// As [`connected_pair`], with the server written the book's way: the reply socket read as
/// a stream, each request answered with `respond`.
async fn connected_to_stream_server() -> ReqSocket<Tcp> {
    use futures_util::StreamExt as _;
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Some(request) = rep.next().await {
            let payload = request.msg().clone();
            let _ = request.respond(payload);
        }
    });
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.expect("connect");
    req
}

/// Sends `total` requests of `payload`, `in_flight` at a time, and returns requests per
/// second.
///
/// The client is [`ReqSocket::pipeline`]: one task, a window of requests in flight,
/// replies in order.
pub(crate) async fn pipelined<T: Transport>(
    req: ReqSocket<T>,
    payload: Bytes,
    in_flight: usize,
    total: usize,
) -> f64 {
    let t = Instant::now();
    let requests = futures_util::stream::repeat(payload).take(total);
    let mut replies = req.pipeline(requests, in_flight);
    let mut received = 0;
    while let Some(reply) = replies.next().await {
        reply.expect("reply");
        received += 1;
    }
    assert_eq!(received, total);
    total as f64 / t.elapsed().as_secs_f64()
}

/// As [`pipelined`], with the client most users would write first: `request` futures in a
/// `FuturesUnordered`.
///
/// A `FuturesUnordered` yields to the scheduler whenever it has polled every future it
/// holds without one finishing, as it does after each refill here. Each such yield wakes
/// the other worker, which takes over the I/O driver and sleeps in it, so that every
/// readiness event after that needs a cross-CPU wake-up.
pub(crate) async fn unordered<T: Transport>(
    req: ReqSocket<T>,
    payload: Bytes,
    in_flight: usize,
    total: usize,
) -> f64 {
    let t = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    while sent < in_flight.min(total) {
        pending.push(req.request(payload.clone()));
        sent += 1;
    }
    while let Some(reply) = pending.next().await {
        reply.expect("reply");
        if sent < total {
            pending.push(req.request(payload.clone()));
            sent += 1;
        }
    }
    total as f64 / t.elapsed().as_secs_f64()
}

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

/// As [`pipelined`], with the socket shared by `in_flight` tasks, each sending one request
/// at a time.
pub(crate) async fn tasks<T: Transport>(
    req: ReqSocket<T>,
    payload: Bytes,
    in_flight: usize,
    total: usize,
) -> f64 {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for task in 0..in_flight {
        let req = req.clone();
        let payload = payload.clone();
        let count = total / in_flight + usize::from(task < total % in_flight);
        set.spawn(async move {
            for _ in 0..count {
                req.request(payload.clone()).await.expect("reply");
            }
        });
    }
    while let Some(done) = set.join_next().await {
        done.expect("client task panicked");
    }
    total as f64 / t.elapsed().as_secs_f64()
}

/// Declares `msg` as a system under test, with one of the throughput clients above.
macro_rules! msg_system {
    ($(#[$doc:meta])* $name:ident, $label:literal, $client:ident) => {
        msg_system!($(#[$doc])* $name, $label, $client, connected_pair);
    };
    ($(#[$doc:meta])* $name:ident, $label:literal, $client:ident, $pair:ident) => {
        $(#[$doc])*
        pub(crate) struct $name;

        impl System for $name {
            const NAME: &'static str = $label;

            async fn latency(plan: Plan, size: usize) -> Latency {
                latency(plan, size).await
            }

            async fn throughput(plan: Plan, size: usize) -> f64 {
                let req = $pair().await;
                let payload = Bytes::from(vec![7u8; size]);
                $client(req, payload, plan.in_flight, plan.throughput_requests).await
            }
        }
    };
}

msg_system!(
    /// `msg` with the throughput client of [`pipelined`].
    Msg,
    "msg",
    pipelined
);
msg_system!(
    /// `msg` with the throughput client of [`unordered`].
    MsgUnordered,
    "msg/fu",
    unordered
);
msg_system!(
    /// `msg` with the throughput client of [`tasks`].
    MsgTasks,
    "msg/tasks",
    tasks
);
msg_system!(
    /// `msg` with the throughput client of [`tasks`], against a server written the book's
    /// way ([`connected_to_stream_server`]): both halves as the book writes them.
    MsgTasksStream,
    "msg/tasks+stream",
    tasks,
    connected_to_stream_server
);
msg_system!(
    /// `msg` with the throughput client of [`pipelined`], against a server written the
    /// book's way ([`connected_to_stream_server`]).
    MsgStream,
    "msg/stream",
    pipelined,
    connected_to_stream_server
);
