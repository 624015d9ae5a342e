//! `--load N`: N idle client connections on one `RepSocket` (8,000 by default), held by a
//! child process, so that this process's memory is the server's alone. Reports the server's
//! memory per idle connection, the child's per client socket, and the latency of one active
//! client before and while the idle connections are held (through at least one round of
//! their heartbeats).

use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use msg::{serve, RepOptions, RepSocket, ReqSocket, Request, Tcp};
use tower::service_fn;

use crate::growth::raise_fd_limit;
use crate::Latency;

/// This process's resident set size now, in bytes.
pub(crate) fn rss() -> u64 {
    crate::pubsub::memory_status("VmRSS:")
}

async fn latency(req: &ReqSocket<Tcp>, round_trips: usize) -> Latency {
    let payload = Bytes::from(vec![7u8; 64]);
    let mut samples = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let t = Instant::now();
        req.request(payload.clone()).await.expect("reply");
        samples.push(t.elapsed());
    }
    Latency::from_samples(samples)
}

/// The child: connects `n` client sockets to `addr`, says so with its RSS, and holds them
/// until its standard input closes.
pub(crate) fn clients(n: usize, addr: SocketAddr) {
    raise_fd_limit();
    let runtime = crate::runtime();
    runtime.block_on(async move {
        let before = rss();
        let mut sockets = Vec::with_capacity(n);
        let mut set = tokio::task::JoinSet::new();
        let mut next = 0;
        while next < n {
            // A few hundred dials at once: the listener's backlog is finite.
            while set.len() < 256 && next < n {
                set.spawn(async move {
                    let mut req = ReqSocket::new(Tcp::default());
                    for _ in 0..50 {
                        if req.connect(addr).await.is_ok() {
                            return req;
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    panic!("could not connect");
                });
                next += 1;
            }
            sockets.push(set.join_next().await.expect("a dial").expect("connected"));
        }
        while let Some(req) = set.join_next().await {
            sockets.push(req.expect("connected"));
        }
        println!(
            "connected {} {}",
            sockets.len(),
            rss().saturating_sub(before)
        );
        // Held until the parent is done.
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
        })
        .await
        .expect("stdin");
        drop(sockets);
    });
}

/// The parent: the server, the active client, and the report.
pub(crate) fn report(n: usize) {
    raise_fd_limit();
    // On the runtime's workers, as a service would run: not on the thread that blocks on it.
    crate::run_on_workers(async move {
        let options = RepOptions::default().max_connections(n + 16);
        let mut rep = RepSocket::with_options(Tcp::default(), options);
        rep.bind("127.0.0.1:0").await.expect("bind");
        let addr = rep.local_addr().expect("bound");
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
        ));
        let mut active = ReqSocket::new(Tcp::default());
        active.connect(addr).await.expect("connect");
        let _ = latency(&active, 5_000).await;
        let quiet = latency(&active, 20_000).await;
        let base_rss = rss();

        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .arg("--load-clients")
            .arg(n.to_string())
            .arg(addr.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the clients");
        let stdout = child.stdout.take().expect("piped");
        let started = Instant::now();
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).expect("read");
            line
        })
        .await
        .expect("the child's report");
        let connect_secs = started.elapsed().as_secs_f64();
        let mut words = line.split_whitespace().skip(1);
        let held: usize = words.next().and_then(|w| w.parse().ok()).expect("count");
        let client_bytes: u64 = words.next().and_then(|w| w.parse().ok()).expect("rss");
        // Past the first heartbeat interval (5 s), so that the idle connections' pings are
        // part of what the active client shares the server with.
        tokio::time::sleep(Duration::from_secs(6)).await;
        let loaded_rss = rss();
        let loaded = latency(&active, 20_000).await;
        drop(child.stdin.take());
        let _ = child.wait();

        println!(
            "{held} idle connections on one RepSocket (the clients in a child process), \
             connected in {connect_secs:.1} s"
        );
        println!(
            "server RSS: {:.1} MiB before, {:.1} MiB with them: {:.1} KiB per idle connection",
            base_rss as f64 / 1048576.0,
            loaded_rss as f64 / 1048576.0,
            loaded_rss.saturating_sub(base_rss) as f64 / held as f64 / 1024.0
        );
        println!(
            "client process: {:.1} KiB per idle ReqSocket",
            client_bytes as f64 / held as f64 / 1024.0
        );
        println!(
            "active client, 64 B, 20000 round trips: p50 {:.1} µs, p99 {:.1} µs before; \
             p50 {:.1} µs, p99 {:.1} µs with {held} idle connections ({:.2}x, {:.2}x)",
            crate::us(quiet.p50),
            crate::us(quiet.p99),
            crate::us(loaded.p50),
            crate::us(loaded.p99),
            loaded.p50.as_secs_f64() / quiet.p50.as_secs_f64(),
            loaded.p99.as_secs_f64() / quiet.p99.as_secs_f64(),
        );
    });
}
