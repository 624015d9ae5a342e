//! Latency under load: requests sent at a fixed rate whatever the replies do (an open loop),
//! by 64 callers, with each request's latency measured from the moment it was meant to be
//! sent, so that a stall delays the requests queued behind it and shows in the figures
//! (coordinated omission corrected).
//!
//! A pacer thread hands each caller the intended send time of its next request, on an exact
//! schedule of `rate` requests per second. It wakes every [`TICK`] and hands out what has come
//! due, so each request also carries the pacer's own lag; that lag is measured too and
//! reported as the floor under every figure.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// How often the pacer hands out the requests that have come due.
const TICK: Duration = Duration::from_micros(20);

/// What one open-loop run found, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OpenLoop {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
    pub(crate) max: f64,
    /// The pacer's own lag behind the schedule, p50 and p99: the floor under the figures.
    pub(crate) floor_p50: f64,
    pub(crate) floor_p99: f64,
    /// Requests answered per second.
    pub(crate) achieved: f64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

fn micros(d: Duration) -> u64 {
    (d.as_nanos() / 1000).clamp(1, 60_000_000) as u64
}

/// Runs the pacer on a thread of its own: request `k` is due at `start + k / rate`, and goes
/// to caller `k % callers`. Returns the pacer's lag. Dropping the senders at the end tells
/// the callers to stop.
fn pace(
    rate: f64,
    duration: Duration,
    callers: Vec<mpsc::UnboundedSender<Instant>>,
) -> std::thread::JoinHandle<Histogram<u64>> {
    std::thread::spawn(move || {
        // Linux rounds sleeps up by the thread's timer slack, 50 µs by default.
        // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
        }
        let mut lag = histogram();
        let start = Instant::now() + Duration::from_millis(5);
        let mut k = 0u64;
        loop {
            let now = Instant::now();
            if now >= start + duration {
                break;
            }
            let due = (now.saturating_duration_since(start).as_secs_f64() * rate) as u64;
            while k < due {
                let intended = start + Duration::from_secs_f64(k as f64 / rate);
                let _ = callers[(k % callers.len() as u64) as usize].send(intended);
                let _ = lag.record(micros(now.saturating_duration_since(intended)));
                k += 1;
            }
            std::thread::sleep(TICK);
        }
        lag
    })
}

fn summary(h: &Histogram<u64>, lag: &Histogram<u64>, answered: u64, secs: f64) -> OpenLoop {
    OpenLoop {
        p50: h.value_at_quantile(0.50) as f64,
        p99: h.value_at_quantile(0.99) as f64,
        p999: h.value_at_quantile(0.999) as f64,
        max: h.max() as f64,
        floor_p50: lag.value_at_quantile(0.50) as f64,
        floor_p99: lag.value_at_quantile(0.99) as f64,
        achieved: answered as f64 / secs,
    }
}

/// `msg`: 64 tasks sharing one `ReqSocket` (the book's client), against `msg::serve`.
pub(crate) async fn msg(rate: f64, duration: Duration, callers: usize) -> OpenLoop {
    let req = crate::msg_rs::connected_pair().await;
    let payload = Bytes::from(vec![7u8; 64]);
    let mut senders = Vec::new();
    let mut tasks = Vec::new();
    // The pacer starts once every caller has run and holds its histogram, so that neither
    // the callers' first polls nor their histograms' 27 MB fall within the run's first
    // requests.
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(callers + 1));
    for _ in 0..callers {
        let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
        senders.push(tx);
        let req = req.clone();
        let payload = payload.clone();
        let ready = ready.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            ready.wait().await;
            while let Some(intended) = rx.recv().await {
                req.request(payload.clone()).await.expect("reply");
                let _ = h.record(micros(intended.elapsed()));
            }
            h
        }));
    }
    // The pacer hands the tickets to one task on the runtime, which passes them on: a
    // wake-up from outside the runtime costs far more than one from inside it.
    let (to_dispatch, mut dispatch) = mpsc::unbounded_channel::<Instant>();
    tokio::spawn(async move {
        let mut k = 0usize;
        let mut batch = Vec::with_capacity(256);
        while dispatch.recv_many(&mut batch, 256).await > 0 {
            for intended in batch.drain(..) {
                let _ = senders[k % senders.len()].send(intended);
                k += 1;
            }
        }
    });
    ready.wait().await;
    let t = Instant::now();
    let pacer = pace(rate, duration, vec![to_dispatch]);
    let mut all = histogram();
    for task in tasks {
        all.add(task.await.expect("caller")).expect("same bounds");
    }
    let secs = t.elapsed().as_secs_f64();
    let lag = pacer.join().expect("pacer");
    summary(&all, &lag, all.len(), secs)
}

/// The plain-tokio limit at the same rate: one task owns the connection, writes every
/// request that has come due in one write, and matches replies in order.
pub(crate) async fn baseline(rate: f64, duration: Duration) -> OpenLoop {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let mut buf = BytesMut::with_capacity(64 * 1024);
        loop {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            // Echo every complete frame at once.
            let mut end = 0;
            while buf.len() >= end + 4 {
                let len = u32::from_be_bytes([buf[end], buf[end + 1], buf[end + 2], buf[end + 3]])
                    as usize;
                if buf.len() < end + 4 + len {
                    break;
                }
                end += 4 + len;
            }
            let out = buf.split_to(end);
            if stream.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (tx, mut rx) = mpsc::unbounded_channel::<Instant>();
    let t = Instant::now();
    let pacer = pace(rate, duration, vec![tx]);
    let payload = [7u8; 64];
    let mut out = BytesMut::with_capacity(64 * 1024);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut waiting = std::collections::VecDeque::new();
    let mut h = histogram();
    let mut tickets_done = false;
    while !(tickets_done && waiting.is_empty()) {
        tokio::select! {
            biased;
            read = stream.read_buf(&mut buf) => {
                assert!(read.expect("read") > 0, "server closed");
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        break;
                    }
                    let _ = buf.split_to(4 + len);
                    let intended: Instant = waiting.pop_front().expect("a reply to a request");
                    let _ = h.record(micros(intended.elapsed()));
                }
            }
            ticket = rx.recv(), if !tickets_done => {
                let Some(intended) = ticket else {
                    tickets_done = true;
                    continue;
                };
                let mut next = Some(intended);
                while let Some(intended) = next {
                    out.put_u32(payload.len() as u32);
                    out.extend_from_slice(&payload);
                    waiting.push_back(intended);
                    next = rx.try_recv().ok();
                }
                stream.write_all(&out).await.expect("write");
                out.clear();
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let lag = pacer.join().expect("pacer");
    summary(&h, &lag, h.len(), secs)
}

/// `msg`'s pipelined maximum at 64 B, measured now: the open loop runs at shares of it.
pub(crate) async fn pipelined_max() -> f64 {
    let req = crate::msg_rs::connected_pair().await;
    crate::msg_rs::pipelined(req, Bytes::from(vec![7u8; 64]), 64, 400_000).await
}
