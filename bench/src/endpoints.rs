//! Requests over 1, 2 and 3 endpoints of one `ReqSocket` in one process (`--endpoints`, or
//! `--profile endpoints`): issue 20's many endpoints, and what balancing costs.
//!
//! Rows, each against echo servers (`msg::serve` over a bare `service_fn`) in the same
//! process, 64 B requests, 64 in flight from one task (`request` futures in a
//! `FuturesUnordered`, refilled as they finish), rate and p99 of each request's time:
//! - `1 endpoint, plain`: one `connect`, the socket's direct path (every other row of the
//!   bench runs this way);
//! - `1 endpoint, balanced`: the same one server behind the balancer (a second endpoint
//!   added and removed again), so that this row against the plain one is the cost of
//!   balancing itself;
//! - `2 endpoints` and `3 endpoints`: as many servers, balanced by p2c.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{serve, RepSocket, ReqSocket, Request, Tcp};
use tower::service_fn;

use crate::{median, run_on_workers, us, Latency};

/// One row's set-up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Setup {
    /// One endpoint, on the direct path.
    Plain,
    /// One endpoint, through the balancer.
    BalancedOne,
    /// `n` endpoints, balanced.
    Endpoints(usize),
}

impl Setup {
    pub(crate) const ROWS: [Setup; 4] = [
        Setup::Plain,
        Setup::BalancedOne,
        Setup::Endpoints(2),
        Setup::Endpoints(3),
    ];

    pub(crate) fn name(self) -> String {
        match self {
            Setup::Plain => "1 endpoint, plain".to_owned(),
            Setup::BalancedOne => "1 endpoint, balanced".to_owned(),
            Setup::Endpoints(n) => format!("{n} endpoints"),
        }
    }
}

/// One row's figures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row {
    /// Requests per second.
    pub(crate) rate: f64,
    pub(crate) p99: Duration,
}

/// An echo server on loopback; its address.
async fn echo() -> SocketAddr {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    addr
}

/// A socket set up as `setup` says.
async fn socket(setup: Setup) -> ReqSocket<Tcp> {
    let servers = match setup {
        Setup::Plain | Setup::BalancedOne => 1,
        Setup::Endpoints(n) => n,
    };
    let mut req = ReqSocket::new(Tcp::default());
    for _ in 0..servers {
        req.connect(echo().await).await.expect("connect");
    }
    if let Setup::BalancedOne = setup {
        let extra = echo().await;
        req.connect(extra).await.expect("connect");
        assert_eq!(req.disconnect(extra), 1);
    }
    req
}

/// `total` requests of `size` bytes, 64 in flight, after a warm-up.
pub(crate) async fn run(setup: Setup, size: usize, total: usize) -> Row {
    let req = socket(setup).await;
    let payload = Bytes::from(vec![b'x'; size]);
    for _ in 0..2_000 {
        req.request(payload.clone()).await.expect("reply");
    }
    let mut samples = Vec::with_capacity(total);
    let mut calls = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    let t = Instant::now();
    while done < total {
        while sent < total && calls.len() < 64 {
            let (req, payload) = (&req, payload.clone());
            calls.push(async move {
                let start = Instant::now();
                let reply = req.request(payload).await;
                (start.elapsed(), reply)
            });
            sent += 1;
        }
        if let Some((took, reply)) = calls.next().await {
            assert_eq!(reply.expect("reply").len(), size);
            samples.push(took);
            done += 1;
        }
    }
    let rate = total as f64 / t.elapsed().as_secs_f64();
    drop(calls);
    req.close().await;
    Row {
        rate,
        p99: Latency::from_samples(samples).p99,
    }
}

/// Every row, medians of `runs` runs each, the rows alternating from run to run; the
/// table, with each row's rate against the plain one.
pub(crate) fn report(runs: usize, total: usize) {
    let mut all: Vec<Vec<Row>> = vec![Vec::new(); Setup::ROWS.len()];
    for _ in 0..runs.max(1) {
        for (i, setup) in Setup::ROWS.into_iter().enumerate() {
            all[i].push(run_on_workers(run(setup, 64, total)));
        }
    }
    println!();
    println!("## Many endpoints: 64 B requests, 64 in flight, {total} requests, medians of {runs}");
    println!();
    println!("| socket | req/s | p99 µs | rate / plain |");
    println!("|---|---:|---:|---:|");
    let rows: Vec<Row> = all
        .into_iter()
        .map(|runs| Row {
            rate: median(runs.clone(), |r| r.rate).rate,
            p99: median(runs, |r| r.p99).p99,
        })
        .collect();
    let plain = rows[0].rate;
    for (setup, row) in Setup::ROWS.into_iter().zip(&rows) {
        println!(
            "| {} | {:.0} | {:.1} | {:.3}x |",
            setup.name(),
            row.rate,
            us(row.p99),
            row.rate / plain
        );
    }
}
