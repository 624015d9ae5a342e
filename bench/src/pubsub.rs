//! Publish/Subscribe workloads: one publisher sending flat out to 1 or 4 subscribers.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What one run found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PubSubRun {
    /// Messages the publisher sent, each counted once.
    pub(crate) published: u64,
    /// Messages received, summed over the subscribers.
    pub(crate) received: u64,
    /// Drops the system itself reported, where it reports them.
    pub(crate) reported_drops: Option<u64>,
    /// From the first publish to the last message received.
    pub(crate) secs: f64,
    /// Peak resident set size of the process during the run, in bytes.
    pub(crate) peak_rss: u64,
}

impl PubSubRun {
    /// The run as one line, for a parent process to read.
    pub(crate) fn to_line(self) -> String {
        format!(
            "{} {} {} {} {}",
            self.published,
            self.received,
            self.reported_drops.map_or(-1, |d| d as i64),
            self.secs,
            self.peak_rss
        )
    }

    fn from_line(line: &str) -> Option<PubSubRun> {
        let mut parts = line.split_whitespace();
        let published = parts.next()?.parse().ok()?;
        let received = parts.next()?.parse().ok()?;
        let drops: i64 = parts.next()?.parse().ok()?;
        let secs = parts.next()?.parse().ok()?;
        let peak_rss = parts.next()?.parse().ok()?;
        Some(PubSubRun {
            published,
            received,
            reported_drops: u64::try_from(drops).ok(),
            secs,
            peak_rss,
        })
    }
}

/// Runs one workload of `system` in a child process (this binary with `--pubsub-child`).
pub(crate) fn run_in_child(system: &str, plan: PubSubPlan) -> PubSubRun {
    let out = std::process::Command::new(std::env::current_exe().expect("own path"))
        .arg("--pubsub-child")
        .arg(system)
        .arg(plan.size.to_string())
        .arg(plan.subscribers.to_string())
        .arg(plan.duration.as_millis().to_string())
        .output()
        .expect("run a child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .last()
        .and_then(PubSubRun::from_line)
        .unwrap_or_else(|| {
            panic!(
                "child for {system} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// A workload: payload size, subscribers, and how long the publisher sends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PubSubPlan {
    pub(crate) size: usize,
    pub(crate) subscribers: usize,
    pub(crate) duration: Duration,
}

/// The kernel's peak-RSS mark for this process, in bytes.
pub(crate) fn peak_rss() -> u64 {
    memory_status("VmHWM:")
}

/// A size field of `/proc/self/status` (`VmRSS:`, `VmHWM:`), in bytes; 0 if unreadable.
pub(crate) fn memory_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Counts messages at the subscribers and remembers when the last one came.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    last_nanos: AtomicU64,
}

impl Tally {
    fn add(&self, n: u64, start: Instant) {
        self.received.fetch_add(n, Ordering::Relaxed);
        self.last_nanos
            .fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
    }

    fn secs(&self) -> f64 {
        self.last_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }
}

/// Counts what `next` yields until a whole [`IDLE`] passes without any, reading the clock
/// only when the timer fires, not once per message.
async fn count_until_idle<S>(
    mut messages: S,
    tally: &Tally,
    start_cell: &tokio::sync::OnceCell<Instant>,
) where
    S: futures_util::Stream + Unpin,
{
    use futures_util::StreamExt;

    let idle = tokio::time::sleep(IDLE);
    tokio::pin!(idle);
    let mut count = 0u64;
    let mut counted_at_arm = 0u64;
    let mut pending = 0u64;
    loop {
        tokio::select! {
            biased;
            item = messages.next() => {
                if item.is_none() {
                    break;
                }
                count += 1;
                pending += 1;
                if pending == 1024 {
                    if let Some(start) = start_cell.get() {
                        tally.add(pending, *start);
                    }
                    pending = 0;
                }
            }
            _ = &mut idle => {
                if count == counted_at_arm {
                    break;
                }
                counted_at_arm = count;
                idle.as_mut().reset(tokio::time::Instant::now() + IDLE);
            }
        }
    }
    if let Some(start) = start_cell.get() {
        tally.add(pending, *start);
    }
}

/// How long a subscriber waits for more before it counts the run as over.
pub(crate) const IDLE: Duration = Duration::from_millis(300);

pub(crate) async fn baseline(plan: PubSubPlan) -> PubSubRun {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tally = Arc::new(Tally::default());
    let start_cell = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut readers = Vec::new();
    for _ in 0..plan.subscribers {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let tally = tally.clone();
        let start_cell = start_cell.clone();
        readers.push(tokio::spawn(async move {
            let mut stream = stream;
            let mut buf = BytesMut::with_capacity(256 * 1024);
            loop {
                match tokio::time::timeout(IDLE * 4, stream.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => return,
                }
                let mut frames = 0;
                while buf.len() >= 4 {
                    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
                    if buf.len() < 4 + len {
                        buf.reserve(4 + len - buf.len());
                        break;
                    }
                    buf.advance(4 + len);
                    frames += 1;
                }
                if let Some(start) = start_cell.get() {
                    tally.add(frames, *start);
                }
            }
        }));
    }
    let mut subs = Vec::new();
    for _ in 0..plan.subscribers {
        let (s, _) = listener.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        subs.push(s);
    }
    // The publisher writes batches of ready frames to each subscriber in turn.
    let payload = vec![7u8; plan.size];
    let per_batch = (64 * 1024 / (plan.size + 4)).max(1);
    let mut batch = BytesMut::with_capacity(per_batch * (plan.size + 4));
    for _ in 0..per_batch {
        batch.put_u32(plan.size as u32);
        batch.extend_from_slice(&payload);
    }
    let start = Instant::now();
    start_cell.set(start).expect("set once");
    let mut published = 0u64;
    while start.elapsed() < plan.duration {
        for s in &mut subs {
            s.write_all(&batch).await.expect("write");
        }
        published += per_batch as u64;
    }
    drop(subs);
    for r in readers {
        let _ = r.await;
    }
    PubSubRun {
        published,
        received: tally.received.load(Ordering::Relaxed),
        reported_drops: Some(0),
        secs: tally.secs(),
        peak_rss: peak_rss(),
    }
}

pub(crate) async fn msg(plan: PubSubPlan, policy: msg::SlowSubscriber) -> PubSubRun {
    use msg::{PubOptions, PubSocket, SubSocket, Tcp};

    let mut publisher = PubSocket::with_options(
        Tcp::default(),
        PubOptions::default().slow_subscriber(policy),
    );
    publisher.bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = publisher.local_addr().expect("bound");
    let tally = Arc::new(Tally::default());
    let start_cell = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut readers = Vec::new();
    for _ in 0..plan.subscribers {
        let mut sub = SubSocket::new(Tcp::default());
        sub.connect(addr).await.expect("connect");
        sub.subscribe("bench").await.expect("subscribe");
        let tally = tally.clone();
        let start_cell = start_cell.clone();
        readers.push(tokio::spawn(async move {
            count_until_idle(sub, &tally, &start_cell).await;
        }));
    }
    let payload = Bytes::from(vec![7u8; plan.size]);
    let start = Instant::now();
    start_cell.set(start).expect("set once");
    let mut published = 0u64;
    while start.elapsed() < plan.duration {
        for _ in 0..256 {
            publisher
                .publish("bench", payload.clone())
                .await
                .expect("publish");
        }
        published += 256;
        // Every publisher gives way now and then, so a flat-out loop shares its worker.
        tokio::task::yield_now().await;
    }
    for r in readers {
        let _ = r.await;
    }
    PubSubRun {
        published,
        received: tally.received.load(Ordering::Relaxed),
        reported_drops: Some(publisher.stats().dropped),
        secs: tally.secs(),
        peak_rss: peak_rss(),
    }
}

pub(crate) async fn msg_dropping(plan: PubSubPlan) -> PubSubRun {
    msg(plan, msg::SlowSubscriber::Drop).await
}

pub(crate) async fn msg_waiting(plan: PubSubPlan) -> PubSubRun {
    msg(plan, msg::SlowSubscriber::Wait).await
}

pub(crate) async fn zeromq(plan: PubSubPlan) -> PubSubRun {
    use zeromq::{Socket, SocketRecv, SocketSend, ZmqMessage};

    let mut publisher = zeromq::PubSocket::new();
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.expect("bind");
    let tally = Arc::new(Tally::default());
    let start_cell = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut readers = Vec::new();
    for _ in 0..plan.subscribers {
        let mut sub = zeromq::SubSocket::new();
        sub.connect(&endpoint.to_string()).await.expect("connect");
        sub.subscribe("").await.expect("subscribe");
        let tally = tally.clone();
        let start_cell = start_cell.clone();
        readers.push(tokio::spawn(async move {
            let messages = futures_util::stream::unfold(sub, |mut sub| async move {
                sub.recv().await.ok().map(|m| (m, sub))
            });
            count_until_idle(Box::pin(messages), &tally, &start_cell).await;
        }));
    }
    // zeromq has no subscription acknowledgement: give the subscriptions time to land
    // (the "slow joiner"), outside the measurement.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let payload = Bytes::from(vec![7u8; plan.size]);
    let start = Instant::now();
    start_cell.set(start).expect("set once");
    let mut published = 0u64;
    while start.elapsed() < plan.duration {
        for _ in 0..256 {
            publisher
                .send(ZmqMessage::from(payload.clone()))
                .await
                .expect("send");
        }
        published += 256;
        tokio::task::yield_now().await;
    }
    for r in readers {
        let _ = r.await;
    }
    PubSubRun {
        published,
        received: tally.received.load(Ordering::Relaxed),
        reported_drops: None,
        secs: tally.secs(),
        peak_rss: peak_rss(),
    }
}

/// Publishes flat out for the plan's duration to its subscribers over loopback TCP,
/// lossless: `xpub_nodrop` makes the publisher wait for a subscriber at its high-water
/// mark instead of dropping (omq's PUB drops by default, like libzmq's).
pub(crate) async fn omq(plan: PubSubPlan) -> PubSubRun {
    use omq_tokio::{Message, Options, Socket, SocketType};

    let options = Options {
        xpub_nodrop: true,
        ..Options::default()
    };
    let publisher = Socket::new(SocketType::Pub, options);
    let endpoint = publisher.bind("tcp://127.0.0.1:0").await.expect("bind");
    let mut subs = Vec::new();
    for _ in 0..plan.subscribers {
        let sub = Socket::new(SocketType::Sub, Options::default());
        sub.connect(endpoint.clone()).await.expect("connect");
        sub.subscribe(Bytes::new()).await.expect("subscribe");
        subs.push(sub);
    }
    crate::omq::wait_connected(&subs.iter().collect::<Vec<_>>()).await;
    // ZMTP has no subscription acknowledgement: publish empty probes until every
    // subscriber has one (as omq's own benchmarks do), so that none of the measured
    // messages goes to a subscription still on its way. Probes are not counted.
    let deadline = Instant::now() + crate::omq::SETUP;
    let mut pending: Vec<&Socket> = subs.iter().collect();
    while !pending.is_empty() {
        assert!(Instant::now() < deadline, "omq: subscriptions never landed");
        publisher.send(Message::single("")).await.expect("probe");
        let mut still = Vec::new();
        for sub in pending {
            if tokio::time::timeout(Duration::from_millis(20), sub.recv())
                .await
                .is_err()
            {
                still.push(sub);
            }
        }
        pending = still;
    }

    let tally = Arc::new(Tally::default());
    let start_cell = Arc::new(tokio::sync::OnceCell::<Instant>::new());
    let mut readers = Vec::new();
    for sub in subs {
        let tally = tally.clone();
        let start_cell = start_cell.clone();
        readers.push(tokio::spawn(async move {
            // Every message the publisher sends from now on has the plan's size; a late
            // probe is empty and skipped.
            let messages = futures_util::stream::unfold(sub, |sub| async move {
                loop {
                    match sub.recv().await {
                        Ok(m) if m.byte_len() == 0 => continue,
                        Ok(m) => return Some((m, sub)),
                        Err(_) => return None,
                    }
                }
            });
            count_until_idle(Box::pin(messages), &tally, &start_cell).await;
        }));
    }
    let payload = Bytes::from(vec![7u8; plan.size]);
    let start = Instant::now();
    start_cell.set(start).expect("set once");
    let mut published = 0u64;
    while start.elapsed() < plan.duration {
        for _ in 0..256 {
            publisher
                .send(Message::single(payload.clone()))
                .await
                .expect("send");
        }
        published += 256;
        tokio::task::yield_now().await;
    }
    for r in readers {
        let _ = r.await;
    }
    PubSubRun {
        published,
        received: tally.received.load(Ordering::Relaxed),
        // omq counts no drops; with xpub_nodrop there are none to count.
        reported_drops: None,
        secs: tally.secs(),
        peak_rss: peak_rss(),
    }
}
