//! libzmq 4.3 itself, through the `zmq` crate (feature `libzmq`, off by default: the crate
//! builds libzmq from its C++ source): a DEALER client against a ROUTER echo server for
//! throughput, REQ against REP for latency, and PUB to SUB with `ZMQ_XPUB_NODROP`, the
//! publisher waiting for a subscriber at its high-water mark instead of dropping.
//!
//! libzmq has no async API: the client (or the publisher) is a thread on tokio's blocking
//! pool, the server and each subscriber a thread of its own. Each side has a context of its
//! own, with libzmq's default of one I/O thread, as it would in a process of its own (libzmq's
//! own throughput tools run each side as a process). Every option is libzmq's default but
//! linger (0, so that a run's end does not wait) and the nodrop option above. The runtime's
//! workers sit idle meanwhile, so the row competes for the same 2 cores as the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::pubsub::{PubSubPlan, PubSubRun};
use crate::{Latency, Plan, System};

pub(crate) struct Libzmq;

/// How long the echo server's blocking receive waits before it checks whether to stop.
const POLL: Duration = Duration::from_millis(50);

/// How long setting up (the first round trip, a subscription landing) may take.
const SETUP: Duration = Duration::from_secs(10);

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

/// A socket of `kind` on `ctx`, with linger 0.
fn socket(ctx: &zmq::Context, kind: zmq::SocketType) -> zmq::Socket {
    let socket = ctx.socket(kind).expect("libzmq socket");
    socket.set_linger(0).expect("linger");
    socket
}

/// Binds `socket` to a free loopback port and returns the endpoint to connect to.
fn bind_loopback(socket: &zmq::Socket) -> String {
    socket.bind("tcp://127.0.0.1:*").expect("bind");
    socket
        .get_last_endpoint()
        .expect("last endpoint")
        .expect("endpoint is UTF-8")
}

/// An echo server of `kind` (ROUTER or REP) on a thread and a context of its own, echoing
/// every part of every message, until dropped.
struct Echo {
    endpoint: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    // Dropped after the thread has closed the socket: dropping a context waits for that.
    _ctx: zmq::Context,
}

impl Echo {
    fn start(kind: zmq::SocketType) -> Echo {
        let ctx = zmq::Context::new();
        let server = socket(&ctx, kind);
        server.set_rcvtimeo(millis(POLL)).expect("rcvtimeo");
        let endpoint = bind_loopback(&server);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut part = zmq::Message::new();
            while !stopping.load(Ordering::Relaxed) {
                // A ROUTER's message is the peer's identity, then the payload; a REP's, the
                // payload alone. Each part goes back as it came, the last without SNDMORE.
                match server.recv(&mut part, 0) {
                    Ok(()) => {}
                    Err(zmq::Error::EAGAIN) => continue,
                    Err(_) => return,
                }
                let flags = if part.get_more() { zmq::SNDMORE } else { 0 };
                let out = std::mem::replace(&mut part, zmq::Message::new());
                if server.send(out, flags).is_err() {
                    return;
                }
            }
        });
        Echo {
            endpoint,
            stop,
            thread: Some(thread),
            _ctx: ctx,
        }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client of `kind` connected to a fresh echo server of `server`, past one round trip,
/// with the client's context. Drop them in that order: dropping a context waits for every
/// socket on it to close.
fn echo_pair(
    server: zmq::SocketType,
    client: zmq::SocketType,
) -> (zmq::Socket, Echo, zmq::Context) {
    let ctx = zmq::Context::new();
    let echo = Echo::start(server);
    let client = socket(&ctx, client);
    client.set_rcvtimeo(millis(SETUP)).expect("rcvtimeo");
    client.connect(&echo.endpoint).expect("connect");
    client.send(&b"hello"[..], 0).expect("first send");
    client
        .recv_msg(0)
        .expect("first reply within the set-up time");
    client.set_rcvtimeo(-1).expect("rcvtimeo");
    (client, echo, ctx)
}

impl System for Libzmq {
    const NAME: &'static str = "libzmq";

    async fn latency(plan: Plan, size: usize) -> Latency {
        tokio::task::spawn_blocking(move || {
            let (req, echo, ctx) = echo_pair(zmq::REP, zmq::REQ);
            let payload = vec![7u8; size];
            let mut reply = zmq::Message::new();
            let mut samples = Vec::with_capacity(plan.round_trips);
            for i in 0..plan.warmup + plan.round_trips {
                let t = Instant::now();
                req.send(&payload[..], 0).expect("send");
                req.recv(&mut reply, 0).expect("recv");
                if i >= plan.warmup {
                    samples.push(t.elapsed());
                }
            }
            drop((req, echo, ctx));
            Latency::from_samples(samples)
        })
        .await
        .expect("libzmq latency")
    }

    async fn throughput(plan: Plan, size: usize) -> f64 {
        tokio::task::spawn_blocking(move || {
            let (dealer, echo, ctx) = echo_pair(zmq::ROUTER, zmq::DEALER);
            let payload = vec![7u8; size];
            let mut reply = zmq::Message::new();
            let total = plan.throughput_requests;
            let t = Instant::now();
            let mut sent = 0;
            while sent < plan.in_flight.min(total) {
                dealer.send(&payload[..], 0).expect("send");
                sent += 1;
            }
            for _ in 0..total {
                dealer.recv(&mut reply, 0).expect("recv");
                assert_eq!(reply.len(), size, "an echo of the request");
                if sent < total {
                    dealer.send(&payload[..], 0).expect("send");
                    sent += 1;
                }
            }
            let rate = total as f64 / t.elapsed().as_secs_f64();
            drop((dealer, echo, ctx));
            rate
        })
        .await
        .expect("libzmq throughput")
    }
}

/// Sets `ZMQ_XPUB_NODROP`, which the `zmq` crate does not wrap: a PUB at a subscriber's
/// high-water mark then waits instead of dropping.
fn set_nodrop(publisher: &mut zmq::Socket) {
    let on: std::ffi::c_int = 1;
    // SAFETY: the socket pointer is live for the call (the socket is borrowed), and the
    // option value is a c_int read for its size, as libzmq's ZMQ_XPUB_NODROP takes.
    let rc = unsafe {
        zmq_sys::zmq_setsockopt(
            publisher.as_mut_ptr(),
            zmq_sys::ZMQ_XPUB_NODROP as std::ffi::c_int,
            (&on as *const std::ffi::c_int).cast(),
            std::mem::size_of::<std::ffi::c_int>(),
        )
    };
    assert_eq!(rc, 0, "ZMQ_XPUB_NODROP refused");
}

/// Publishes flat out for the plan's duration to its subscribers over loopback TCP,
/// lossless (see [`set_nodrop`]). Each subscriber counts on a thread and a context of its
/// own until it has heard nothing for the other rows' idle time.
pub(crate) fn pubsub(plan: PubSubPlan) -> PubSubRun {
    let idle = crate::pubsub::IDLE;
    let ctx = zmq::Context::new();
    let mut publisher = socket(&ctx, zmq::PUB);
    set_nodrop(&mut publisher);
    let endpoint = bind_loopback(&publisher);
    let subs: Vec<(zmq::Socket, zmq::Context)> = (0..plan.subscribers)
        .map(|_| {
            let ctx = zmq::Context::new();
            let sub = socket(&ctx, zmq::SUB);
            sub.set_subscribe(b"").expect("subscribe");
            sub.connect(&endpoint).expect("connect");
            (sub, ctx)
        })
        .collect();
    // ZMTP has no subscription acknowledgement: publish empty probes until every
    // subscriber has one, so that no measured message goes to a subscription still on its
    // way. Probes are not counted; a late one is skipped by its size.
    let deadline = Instant::now() + SETUP;
    let mut heard = vec![false; subs.len()];
    while heard.contains(&false) {
        assert!(
            Instant::now() < deadline,
            "libzmq: subscriptions never landed"
        );
        publisher.send(&b""[..], 0).expect("probe");
        std::thread::sleep(Duration::from_millis(2));
        for ((sub, _), heard) in subs.iter().zip(heard.iter_mut()) {
            while sub.recv_msg(zmq::DONTWAIT).is_ok() {
                *heard = true;
            }
        }
    }

    let readers: Vec<JoinHandle<(u64, Option<Instant>)>> = subs
        .into_iter()
        .map(|(sub, ctx)| {
            std::thread::spawn(move || {
                sub.set_rcvtimeo(millis(idle)).expect("rcvtimeo");
                let mut msg = zmq::Message::new();
                let mut received = 0u64;
                // Reads until a whole `idle` passes without a message: the last one came
                // that long before the read gave up, without a clock read per message.
                while sub.recv(&mut msg, 0).is_ok() {
                    if !msg.is_empty() {
                        received += 1;
                    }
                }
                let last = (received > 0).then(|| Instant::now() - idle);
                drop((sub, ctx));
                (received, last)
            })
        })
        .collect();
    let payload = vec![7u8; plan.size];
    let start = Instant::now();
    let mut published = 0u64;
    while start.elapsed() < plan.duration {
        for _ in 0..256 {
            publisher.send(&payload[..], 0).expect("send");
        }
        published += 256;
    }
    let mut received = 0;
    let mut last = start;
    for reader in readers {
        let (count, at) = reader.join().expect("subscriber thread");
        received += count;
        last = last.max(at.unwrap_or(start));
    }
    drop(publisher);
    drop(ctx);
    PubSubRun {
        published,
        received,
        // libzmq counts no drops; with ZMQ_XPUB_NODROP there are none to count.
        reported_drops: None,
        secs: last.duration_since(start).as_secs_f64(),
        peak_rss: crate::pubsub::peak_rss(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan {
            warmup: 10,
            round_trips: 100,
            in_flight: 64,
            throughput_requests: 2_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_come_back_echoed_through_router_and_rep() {
        // `throughput` asserts that each reply is the request's size.
        for size in [64, 1024] {
            let rate = Libzmq::throughput(plan(), size).await;
            assert!(rate.is_finite() && rate > 0.0, "{rate} req/s at {size} B");
        }
        let latency = Libzmq::latency(plan(), 64).await;
        assert!(latency.p50 > Duration::ZERO && latency.p50 <= latency.p99);
    }

    #[test]
    fn the_publisher_waits_for_its_subscribers_and_loses_nothing() {
        for subscribers in [1, 3] {
            let run = pubsub(PubSubPlan {
                size: 64,
                subscribers,
                duration: Duration::from_millis(200),
            });
            assert!(run.published >= 256, "{run:?}");
            assert_eq!(run.received, run.published * subscribers as u64, "{run:?}");
            assert!(run.secs > 0.0 && run.secs < 30.0, "{run:?}");
        }
    }
}
