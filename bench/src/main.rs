//! Benchmarks `msg` side by side with a plain-tokio baseline and the `zeromq` and `omq`
//! crates, on loopback, in one run.
//!
//! Workloads (each repeated `--runs` times, default 3, and the median reported):
//! - latency: 64 B echo with one request outstanding, 20,000 round trips after 2,000
//!   warm-up, p50 / p99 / p99.9;
//! - throughput: 64 requests in flight on one client, 64 B and 1 KiB. `msg` runs three
//!   times: with `ReqSocket::pipeline`, with `request` futures in a `FuturesUnordered`
//!   (`msg/fu`), and with the socket shared by 64 tasks (`msg/tasks`); `msg/stream` is the
//!   first of those against a server written the book's way (the reply socket read as a
//!   stream, each request answered with `respond`) instead of `msg::serve`;
//! - pub/sub: one publisher sending flat out for 2 s to 1 subscriber (64 B, 1 KiB,
//!   64 KiB) and to 4 subscribers (1 KiB): messages and MB per second received, the share
//!   dropped, whether the drops the system reports match sent minus received, and the
//!   process's peak RSS. `msg` runs with its default policy, dropping for a subscriber
//!   that falls behind; `msg/wait` with the policy that waits for it instead;
//! - latency under load (`--open-loop`): 64 B requests at a fixed rate, 50% and 25% of
//!   `msg`'s pipelined maximum, from 64 tasks sharing one `ReqSocket`, latency from the
//!   intended send time (coordinated omission corrected, hdrhistogram), beside the
//!   plain-tokio limit at the same rate;
//! - per transport (TCP, TLS over TCP, QUIC, IPC): `msg`'s latency, 1 KiB throughput with
//!   64 in flight, and 1 KiB pub/sub to one subscriber;
//! - per message layer (`--layers`, alone): a `ReqSocket` bare and with each layer over
//!   it, 1 KiB, with a `fmt` subscriber at `info` and the Prometheus recorder installed
//!   (`--uninstrumented`: with neither).
//!
//! Every measurement gets a fresh tokio multi-thread runtime with 2 workers, client and
//! server in one process. Before each throughput run, and around a `--profile` run, the
//! bench measures how long a cache line takes to pass between two CPUs ([`cores`]) and
//! prints it beside the row: on a host that moves its vCPUs about, that cost, not the
//! build, decides whether work shared between the workers runs fast or slow.
//!
//! The peers: the `zeromq` crate and `omq` (`omq-tokio`), each with a row in the latency,
//! throughput and pub/sub tables; omq as REQ to REP for latency, DEALER to ROUTER for
//! throughput, and PUB to SUB with `xpub_nodrop` (lossless). Built with `--features libzmq`
//! (off by default: it compiles libzmq's C++ source), libzmq 4.3 itself has a row in each
//! table too, the same three ways, and `--profile libzmq` runs its throughput alone.
//!
//! Run with `cargo run --release -p msg-bench`; `--runs N` and `--quick` change the effort,
//! `BENCH_WORKERS=N` the number of workers, `--reqrep`, `--pubsub` and `--transports` run
//! those sections alone. For a profiler, `--profile SYSTEM` runs one system's 64 B
//! throughput alone (2 M requests; `--size N` for another size), `--profile tcp|tls|quic|ipc` `msg`'s 1 KiB throughput
//! over that transport (1 M requests), and `--profile pubsub-SIZE` msg's pub/sub with the
//! waiting policy, one subscriber, for 3 s, and `--profile layer-ROW` one row of `--layers`
//! (`layer-bare`, `layer-trace`, `layer-metrics`...; 1 M requests, observers installed), and
//! `--profile router` a `msg::Router` (one route, a fallback) against `serve` with a bare
//! `service_fn`, 64 B, medians of 5 runs of each, alternating. Built with
//! `RUSTFLAGS="--cfg tokio_unstable"`, it also prints tokio's per-worker metrics.
//! `--endpoints` (alone) runs requests over 1, 2 and 3 endpoints of one `ReqSocket`, and
//! one endpoint behind the balancer against the plain one (`--profile endpoints`: 1 M
//! requests a row, medians of 3).
//! `--profile omq` is omq's throughput (`--size N` too), `--profile omq-pubsub-SIZE` its
//! lossless pub/sub to one subscriber for 3 s, `--profile omq-latency` its latency row.
//! `--profile open-msg` and `--profile open-baseline` run one open-loop row alone for 3 s,
//! at `--rate R` requests per second (default 400,000).

mod baseline;
mod codecs;
mod cores;
mod endpoints;
mod fuzz;
mod growth;
mod layers;
#[cfg(feature = "libzmq")]
mod libzmq;
mod load;
mod msg_rs;
mod omq;
mod open_loop;
mod pubsub;
mod router;
mod soak;
mod transports;
mod zmq;

use std::future::Future;
use std::time::Duration;

/// What one latency measurement found.
#[derive(Debug, Clone, Copy)]
struct Latency {
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

impl Latency {
    fn from_samples(mut samples: Vec<Duration>) -> Latency {
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
        Latency {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
        }
    }
}

/// The work a system under test must do.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warmup: usize,
    round_trips: usize,
    in_flight: usize,
    throughput_requests: usize,
}

/// One system under test.
trait System {
    const NAME: &'static str;
    fn latency(plan: Plan, size: usize) -> impl Future<Output = Latency> + Send + 'static;
    /// Requests per second.
    fn throughput(plan: Plan, size: usize) -> impl Future<Output = f64> + Send + 'static;
}

/// Worker threads of each benchmark runtime: 2, or `BENCH_WORKERS` if set.
fn workers() -> usize {
    std::env::var("BENCH_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(2)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers())
        .enable_all()
        .build()
        .expect("runtime")
}

/// Runs `fut` as a task on a fresh runtime's workers, not on the calling thread, so that
/// client and server share the 2 workers as they would in a service.
fn run_on_workers<F>(fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let rt = runtime();
    let out = rt.block_on(async move { tokio::spawn(fut).await.expect("benchmark task panicked") });
    // Built with `--cfg tokio_unstable`, show how the work spread over the workers.
    #[cfg(tokio_unstable)]
    {
        let m = rt.metrics();
        for w in 0..m.num_workers() {
            eprintln!(
                "worker {w}: polls {} steals {} parks {} noops {} local {} overflow {} forced_yield {} remote {}",
                m.worker_poll_count(w),
                m.worker_steal_count(w),
                m.worker_park_count(w),
                m.worker_noop_count(w),
                m.worker_local_schedule_count(w),
                m.worker_overflow_count(w),
                m.budget_forced_yield_count(),
                m.remote_schedule_count(),
            );
        }
    }
    out
}

fn median<T: Copy, K: PartialOrd>(mut runs: Vec<T>, key: impl Fn(&T) -> K) -> T {
    runs.sort_by(|a, b| key(a).partial_cmp(&key(b)).expect("comparable"));
    runs[runs.len() / 2]
}

fn measure_latency<S: System>(plan: Plan, runs: usize) -> Latency {
    let all: Vec<Latency> = (0..runs)
        .map(|_| run_on_workers(S::latency(plan, 64)))
        .collect();
    Latency {
        p50: median(all.clone(), |l| l.p50).p50,
        p99: median(all.clone(), |l| l.p99).p99,
        p999: median(all, |l| l.p999).p999,
    }
}

fn measure_throughput<S: System>(plan: Plan, size: usize, runs: usize) -> f64 {
    measure_throughput_runs::<S>(plan, size, runs).median
}

/// The runs of one throughput row: the median, and the slowest and fastest run.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    slowest: f64,
    fastest: f64,
    /// The core-to-core hop measured before each run (see [`cores`]), the median.
    hop: Option<f64>,
}

fn measure_throughput_runs<S: System>(plan: Plan, size: usize, runs: usize) -> Spread {
    let mut hops = Vec::new();
    let all: Vec<f64> = (0..runs)
        .map(|_| {
            hops.extend(cores::hop_ns());
            run_on_workers(S::throughput(plan, size))
        })
        .collect();
    Spread {
        hop: (!hops.is_empty()).then(|| median(hops, |h| *h)),
        median: median(all.clone(), |r| *r),
        slowest: all.iter().copied().fold(f64::INFINITY, f64::min),
        fastest: all.iter().copied().fold(0.0, f64::max),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The value after `flag` in `args`, parsed, if it is there and parses.
fn flag_value<T: std::str::FromStr>(args: &[String], flag: &str) -> Option<T> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let runs = flag_value(&args, "--runs").unwrap_or(if quick { 1 } else { 3 });
    let plan = if quick {
        Plan {
            warmup: 200,
            round_trips: 2_000,
            in_flight: 64,
            throughput_requests: 20_000,
        }
    } else {
        Plan {
            warmup: 2_000,
            round_trips: 20_000,
            in_flight: 64,
            throughput_requests: 400_000,
        }
    };
    if let Some(i) = args.iter().position(|a| a == "--profile") {
        // Runs one system's 64 B throughput alone, for a profiler.
        let name = args.get(i + 1).map(String::as_str).unwrap_or("msg");
        let plan = Plan {
            throughput_requests: 2_000_000,
            ..plan
        };
        if let Some(system) = name.strip_prefix("open-") {
            // One open-loop run alone, 3 s at `--rate R` (default 400,000/s).
            let rate = flag_value(&args, "--rate").unwrap_or(400_000.0);
            let duration = Duration::from_secs(3);
            let r = match system {
                "baseline" => run_on_workers(open_loop::baseline(rate, duration)),
                "msg" => run_on_workers(open_loop::msg(rate, duration, 64)),
                other => {
                    eprintln!("no open-loop row {other:?}: open-msg or open-baseline");
                    std::process::exit(2);
                }
            };
            println!(
                "open loop {system} at {rate:.0}/s: p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, \
                 floor p99 {:.0} µs, answered {:.0}/s",
                r.p50, r.p99, r.p999, r.floor_p99, r.achieved
            );
            return;
        }
        if name == "endpoints" {
            // Requests over 1, 2 and 3 endpoints of one socket, 1 M each, medians of 3.
            endpoints::report(3, 1_000_000);
            return;
        }
        if name == "router" {
            // The Router against a bare `service_fn`, 64 B, alternating, medians of 5.
            let (mut bare, mut routed) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                bare.push(run_on_workers(router::rate(false, 64, 500_000)));
                routed.push(run_on_workers(router::rate(true, 64, 500_000)));
            }
            let (bare, routed) = (median(bare, |r| *r), median(routed, |r| *r));
            println!("serve + service_fn: {bare:.0} req/s");
            println!("serve + Router (one route, a fallback): {routed:.0} req/s");
            println!("Router / service_fn: {:.3}x", routed / bare);
            return;
        }
        if let Some(row) = name.strip_prefix("layer-") {
            layers::install_observers();
            let rate = run_on_workers(layers::row(row.to_owned(), 1024, 1_000_000));
            println!("{name}: {rate:.0} req/s");
            return;
        }
        if name == "omq-latency" {
            // omq's row of the latency table alone: REQ to REP, 64 B, one outstanding.
            let l = run_on_workers(<omq::Omq as System>::latency(plan, 64));
            println!(
                "omq latency 64 B: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
                us(l.p50),
                us(l.p99),
                us(l.p999)
            );
            return;
        }
        if let Some(size) = name
            .strip_prefix("omq-pubsub-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            let plan = pubsub::PubSubPlan {
                size,
                subscribers: 1,
                duration: Duration::from_secs(3),
            };
            let r = run_on_workers(pubsub::omq(plan));
            println!(
                "omq pub/sub {size} B: {:.0} msg/s, {:.1} MB/s, {} of {} received",
                r.received as f64 / r.secs,
                r.received as f64 * size as f64 / r.secs / 1e6,
                r.received,
                r.published
            );
            return;
        }
        if let Some(size) = name
            .strip_prefix("pubsub-")
            .and_then(|s| s.parse::<usize>().ok())
        {
            let plan = pubsub::PubSubPlan {
                size,
                subscribers: 1,
                duration: Duration::from_secs(3),
            };
            let r = run_on_workers(pubsub::msg_waiting(plan));
            println!(
                "msg pub/sub {size} B: {:.0} msg/s, {:.1} MB/s",
                r.received as f64 / r.secs,
                r.received as f64 * size as f64 / r.secs / 1e6
            );
            return;
        }
        let size = flag_value(&args, "--size").unwrap_or(64);
        let hop_before = cores::hop_ns();
        let rate = match name {
            "baseline" => measure_throughput::<baseline::Baseline>(plan, size, 1),
            "zeromq" => measure_throughput::<zmq::Zmq>(plan, size, 1),
            "omq" => measure_throughput::<omq::Omq>(plan, size, 1),
            #[cfg(feature = "libzmq")]
            "libzmq" => measure_throughput::<libzmq::Libzmq>(plan, size, 1),
            "msg/fu" => measure_throughput::<msg_rs::MsgUnordered>(plan, size, 1),
            "msg/tasks" => measure_throughput::<msg_rs::MsgTasks>(plan, size, 1),
            "msg/sized" => run_on_workers(growth::reqrep_size(size)),
            "msg/stream" => measure_throughput::<msg_rs::MsgStream>(plan, size, 1),
            "msg/tasks+stream" => measure_throughput::<msg_rs::MsgTasksStream>(plan, size, 1),
            // One transport's 1 KiB throughput.
            "tcp" => run_on_workers(transports::throughput::<transports::Tcp>(
                1024, 64, 1_000_000,
            )),
            "tls" => run_on_workers(transports::throughput::<transports::Tls>(
                1024, 64, 1_000_000,
            )),
            "quic" => run_on_workers(transports::throughput::<transports::Quic>(
                1024, 64, 1_000_000,
            )),
            "ipc" => run_on_workers(transports::throughput::<transports::Ipc>(
                1024, 64, 1_000_000,
            )),
            _ => measure_throughput::<msg_rs::Msg>(plan, size, 1),
        };
        println!(
            "{name}: {rate:.0} req/s (core-to-core hop {} ns before, {} ns after)",
            cores::show(hop_before),
            cores::show(cores::hop_ns())
        );
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--pubsub-child") {
        // One pub/sub run, asked for by `pubsub::run_in_child`.
        let arg = |k: usize| args.get(i + k).map(String::as_str).unwrap_or_default();
        let plan = pubsub::PubSubPlan {
            size: arg(2).parse().expect("size"),
            subscribers: arg(3).parse().expect("subscribers"),
            duration: Duration::from_millis(arg(4).parse().expect("duration")),
        };
        let run = match arg(1) {
            "baseline" => run_on_workers(pubsub::baseline(plan)),
            "msg" => run_on_workers(pubsub::msg_dropping(plan)),
            "msg-wait" => run_on_workers(pubsub::msg_waiting(plan)),
            "omq" => run_on_workers(pubsub::omq(plan)),
            #[cfg(feature = "libzmq")]
            "libzmq" => libzmq::pubsub(plan),
            _ => run_on_workers(pubsub::zeromq(plan)),
        };
        println!("{}", run.to_line());
        return;
    }
    if args.iter().any(|a| a == "--endpoints") {
        endpoints::report(runs, plan.throughput_requests);
        return;
    }
    if args.iter().any(|a| a == "--codecs") {
        codecs::report();
        return;
    }
    if args.iter().any(|a| a == "--layers") {
        let observed = !args.iter().any(|a| a == "--uninstrumented");
        if observed {
            layers::install_observers();
        }
        layers_section(runs, observed);
        return;
    }
    if args.iter().any(|a| a == "--pubsub") {
        pubsub_section(runs, quick);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--fuzz") {
        let inputs = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(10_000_000);
        let only: Vec<String> = args
            .iter()
            .position(|a| a == "--targets")
            .and_then(|i| args.get(i + 1))
            .map(|t| t.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let findings = fuzz::report(inputs, &only);
        if findings > 0 {
            eprintln!("{findings} finding(s), saved under target/fuzz-findings");
            std::process::exit(1);
        }
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--soak") {
        let secs = args.get(i + 1).and_then(|n| n.parse().ok()).unwrap_or(600);
        if !soak::run(secs) {
            std::process::exit(1);
        }
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--load-clients") {
        let n = args.get(i + 1).and_then(|n| n.parse().ok()).expect("count");
        let addr = args
            .get(i + 2)
            .and_then(|a| a.parse().ok())
            .expect("address");
        load::clients(n, addr);
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--load") {
        let n = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(8_000);
        load::report(n);
        return;
    }
    if args.iter().any(|a| a == "--growth") {
        growth_section(runs, quick);
        return;
    }
    if args.iter().any(|a| a == "--open-loop") {
        open_loop_section(runs, quick);
        return;
    }
    if args.iter().any(|a| a == "--transports") {
        transports_section(runs, quick);
        return;
    }
    reqrep_section(plan, runs);
    if args.iter().any(|a| a == "--reqrep") {
        return;
    }
    open_loop_section(runs, quick);
    pubsub_section(runs, quick);
    transports_section(runs, quick);
}

/// The cost of each message layer over a `ReqSocket`, 1 KiB requests; medians of `runs`.
fn layers_section(runs: usize, observed: bool) {
    let (size, round_trips, total) = (1024, 5_000, 200_000);
    let installed = if observed {
        "a tracing_subscriber::fmt subscriber at info (writing to a sink) and the Prometheus \
         recorder installed"
    } else {
        "no tracing subscriber or metrics recorder installed"
    };
    println!(
        "message layers over a ReqSocket, {size} B echo: p50 of {round_trips} sequential calls, \
         and req/s of {total} calls 64 in flight (oneshot calls in a FuturesUnordered); \
         median of {runs} run(s), {installed}"
    );
    let all: Vec<_> = (0..runs.max(1))
        .map(|_| run_on_workers(layers::rows(size, round_trips, total)))
        .collect();
    println!(
        "{:<12} {:>9} {:>10} {:>12} {:>10}",
        "stack", "p50 µs", "p50/bare", "req/s", "rate/bare"
    );
    let row = |i: usize| {
        let p50 = median(all.iter().map(|r| r[i].1).collect(), |d| *d);
        let rate = median(all.iter().map(|r| r[i].2).collect(), |r| *r);
        (all[0][i].0, p50, rate)
    };
    let (_, bare_p50, bare_rate) = row(0);
    for i in 0..all[0].len() {
        let (name, p50, rate) = row(i);
        println!(
            "{:<12} {:>9.1} {:>9.2}x {:>12.0} {:>9.2}x",
            name,
            us(p50),
            p50.as_secs_f64() / bare_p50.as_secs_f64(),
            rate,
            rate / bare_rate
        );
    }
}

/// Request/Reply over TCP: latency, and throughput with many requests in flight.
fn reqrep_section(plan: Plan, runs: usize) {
    println!(
        "msg bench: loopback TCP, tokio multi-thread runtime with {} worker(s), client and \
         server in one process; median of {runs} run(s)\n",
        workers()
    );

    println!(
        "latency, 64 B echo, 1 outstanding, {} round trips after {} warm-up",
        plan.round_trips, plan.warmup
    );
    println!(
        "{:<10} {:>9} {:>9} {:>10} {:>10} {:>10}",
        "system", "p50 µs", "p99 µs", "p99.9 µs", "p50/base", "p99/base"
    );
    let base = measure_latency::<baseline::Baseline>(plan, runs);
    #[allow(unused_mut)] // pushed to with the `libzmq` feature
    let mut rows = vec![
        (baseline::Baseline::NAME, base),
        (
            msg_rs::Msg::NAME,
            measure_latency::<msg_rs::Msg>(plan, runs),
        ),
        (zmq::Zmq::NAME, measure_latency::<zmq::Zmq>(plan, runs)),
        (omq::Omq::NAME, measure_latency::<omq::Omq>(plan, runs)),
    ];
    #[cfg(feature = "libzmq")]
    rows.push((
        libzmq::Libzmq::NAME,
        measure_latency::<libzmq::Libzmq>(plan, runs),
    ));
    for (name, l) in rows {
        println!(
            "{:<10} {:>9.1} {:>9.1} {:>10.1} {:>9.2}x {:>9.2}x",
            name,
            us(l.p50),
            us(l.p99),
            us(l.p999),
            l.p50.as_secs_f64() / base.p50.as_secs_f64(),
            l.p99.as_secs_f64() / base.p99.as_secs_f64(),
        );
    }

    for size in [64usize, 1024] {
        println!(
            "\nthroughput, {size} B echo, {} in flight on one client, {} requests; the slowest \
             run against the median, and the fastest; hop: the core-to-core cache-line \
             hop before each run, ns, median (a slow hop slows every row that shares work \
             between the workers)",
            plan.in_flight, plan.throughput_requests
        );
        println!(
            "{:<17} {:>12} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>7}",
            "system",
            "req/s",
            "MB/s",
            "vs base",
            "vs zeromq",
            "vs omq",
            "slowest",
            "fastest",
            "hop ns"
        );
        let base = measure_throughput_runs::<baseline::Baseline>(plan, size, runs);
        #[allow(unused_mut)] // pushed to with the `libzmq` feature
        let mut rows = vec![
            (baseline::Baseline::NAME, base),
            (
                msg_rs::Msg::NAME,
                measure_throughput_runs::<msg_rs::Msg>(plan, size, runs),
            ),
            (
                msg_rs::MsgUnordered::NAME,
                measure_throughput_runs::<msg_rs::MsgUnordered>(plan, size, runs),
            ),
            (
                msg_rs::MsgTasks::NAME,
                measure_throughput_runs::<msg_rs::MsgTasks>(plan, size, runs),
            ),
            (
                msg_rs::MsgStream::NAME,
                measure_throughput_runs::<msg_rs::MsgStream>(plan, size, runs),
            ),
            (
                msg_rs::MsgTasksStream::NAME,
                measure_throughput_runs::<msg_rs::MsgTasksStream>(plan, size, runs),
            ),
            (
                zmq::Zmq::NAME,
                measure_throughput_runs::<zmq::Zmq>(plan, size, runs),
            ),
            (
                omq::Omq::NAME,
                measure_throughput_runs::<omq::Omq>(plan, size, runs),
            ),
        ];
        #[cfg(feature = "libzmq")]
        rows.push((
            libzmq::Libzmq::NAME,
            measure_throughput_runs::<libzmq::Libzmq>(plan, size, runs),
        ));
        let peer = |name: &str| {
            rows.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, r)| r.median)
                .expect("a peer's row")
        };
        let zmq = peer(zmq::Zmq::NAME);
        let omq = peer(omq::Omq::NAME);
        for (name, r) in rows {
            println!(
                "{:<17} {:>12.0} {:>10.1} {:>9.2}x {:>9.2}x {:>8.2}x {:>8.2}x {:>8.2}x {:>7}",
                name,
                r.median,
                r.median * size as f64 / 1e6,
                r.median / base.median,
                r.median / zmq,
                r.median / omq,
                r.slowest / r.median,
                r.fastest / r.median,
                cores::show(r.hop),
            );
        }
    }
}

/// Latency under load: 64 callers at a fixed rate, half of `msg`'s pipelined maximum,
/// coordinated omission corrected; `msg` and the plain-tokio limit at the same rate.
fn open_loop_section(runs: usize, quick: bool) {
    let max = median(
        (0..runs.max(1))
            .map(|_| run_on_workers(open_loop::pipelined_max()))
            .collect(),
        |r| *r,
    );
    for share in [0.5, 0.25] {
        open_loop_rows(runs, quick, max * share, share);
    }
}

fn open_loop_rows(runs: usize, quick: bool, rate: f64, share: f64) {
    let duration = Duration::from_millis(if quick { 500 } else { 3000 });
    println!(
        "\nlatency under load: 64 B requests at {rate:.0}/s ({:.0}% of msg's pipelined maximum, \
         measured now) for {:.1} s, open loop, latency from the intended send time; \
         median of {runs} run(s). msg: 64 tasks sharing one ReqSocket, against serve; \
         baseline: one task, the plain-tokio limit. floor: the pacer's own lag",
        share * 100.0,
        duration.as_secs_f64()
    );
    println!(
        "{:<10} {:>9} {:>9} {:>10} {:>10} {:>11} {:>11} {:>12}",
        "system", "p50 µs", "p99 µs", "p99.9 µs", "max µs", "floor p50", "floor p99", "answered/s"
    );
    let mut base_runs = Vec::new();
    let mut msg_runs = Vec::new();
    for _ in 0..runs.max(1) {
        base_runs.push(run_on_workers(open_loop::baseline(rate, duration)));
        msg_runs.push(run_on_workers(open_loop::msg(rate, duration, 64)));
    }
    let med = |runs: &[open_loop::OpenLoop]| open_loop::OpenLoop {
        p50: median(runs.to_vec(), |r| r.p50).p50,
        p99: median(runs.to_vec(), |r| r.p99).p99,
        p999: median(runs.to_vec(), |r| r.p999).p999,
        max: median(runs.to_vec(), |r| r.max).max,
        floor_p50: median(runs.to_vec(), |r| r.floor_p50).floor_p50,
        floor_p99: median(runs.to_vec(), |r| r.floor_p99).floor_p99,
        achieved: median(runs.to_vec(), |r| r.achieved).achieved,
    };
    let (base, msg) = (med(&base_runs), med(&msg_runs));
    for (name, r) in [("baseline", base), ("msg", msg)] {
        println!(
            "{:<10} {:>9.0} {:>9.0} {:>10.0} {:>10.0} {:>11.0} {:>11.0} {:>12.0}",
            name, r.p50, r.p99, r.p999, r.max, r.floor_p50, r.floor_p99, r.achieved
        );
    }
    println!(
        "msg / baseline: p50 {:.2}x, p99 {:.2}x, p99.9 {:.2}x",
        msg.p50 / base.p50,
        msg.p99 / base.p99,
        msg.p999 / base.p999
    );
}

/// How cost grows with connections, subscribers, subscription patterns and message size.
fn growth_section(runs: usize, quick: bool) {
    growth::raise_fd_limit();
    let runs = runs.max(1);
    let duration = Duration::from_millis(if quick { 300 } else { 1000 });
    let med = |f: &dyn Fn() -> f64| median((0..runs).map(|_| f()).collect(), |r| *r);
    println!("how cost grows; median of {runs} run(s), loopback TCP, 2 workers\n");

    println!("req/rep, 64 B echo, 200000 requests over N connections to one RepSocket (serve)");
    println!("{:>12} {:>12} {:>10}", "connections", "req/s", "vs 1");
    let mut first = None;
    for n in [1usize, 10, 100, 1000] {
        let rate = med(&|| run_on_workers(growth::reqrep_connections(n, 200_000)));
        let one = *first.get_or_insert(rate);
        println!("{n:>12} {rate:>12.0} {:>9.2}x", rate / one);
    }

    println!(
        "\npub/sub fan-out, 64 B, lossless policy, publishing for {:.1} s",
        duration.as_secs_f64()
    );
    println!(
        "{:>12} {:>14} {:>14} {:>10}",
        "subscribers", "received/s", "published/s", "vs 1"
    );
    let mut first = None;
    for n in [1usize, 10, 100] {
        let runs: Vec<(f64, f64)> = (0..runs)
            .map(|_| run_on_workers(growth::pubsub(64, n, 0, duration)))
            .collect();
        let (received, published) = median(runs, |r| r.0);
        let one = *first.get_or_insert(received);
        println!(
            "{n:>12} {received:>14.0} {published:>14.0} {:>9.2}x",
            received / one
        );
    }

    println!(
        "\npublish cost with N subscription patterns held by the subscriber (none of them \
         matching what is published but one), 64 B, one subscriber"
    );
    println!("{:>12} {:>14} {:>10}", "patterns", "published/s", "vs 1");
    let mut first = None;
    for n in [1usize, 1_000, 100_000] {
        let runs: Vec<(f64, f64)> = (0..runs)
            .map(|_| run_on_workers(growth::pubsub(64, 1, n - 1, duration)))
            .collect();
        let (_, published) = median(runs, |r| r.1);
        let one = *first.get_or_insert(published);
        println!("{n:>12} {published:>14.0} {:>9.2}x", published / one);
    }

    println!("\nthroughput by message size: req/rep 64 in flight (pipeline + serve); pub/sub to one subscriber, lossless policy");
    println!(
        "{:>8} {:>12} {:>10} {:>12} {:>10}",
        "size", "req/s", "MB/s", "pub msg/s", "MB/s"
    );
    for size in [64usize, 1024, 16 * 1024, 256 * 1024, 1024 * 1024] {
        let rr = med(&|| run_on_workers(growth::reqrep_size(size)));
        let ps: Vec<(f64, f64)> = (0..runs)
            .map(|_| run_on_workers(growth::pubsub(size, 1, 0, duration)))
            .collect();
        let (ps, _) = median(ps, |r| r.0);
        println!(
            "{:>8} {rr:>12.0} {:>10.1} {ps:>12.0} {:>10.1}",
            human(size),
            rr * size as f64 / 1e6,
            ps * size as f64 / 1e6
        );
    }
}

/// `msg` over every transport, with TCP as the reference.
fn transports_section(runs: usize, quick: bool) {
    use transports::{Ipc, Quic, Setup, Tcp, Tls};

    let (round_trips, requests, duration) = if quick {
        (1_000, 20_000, Duration::from_millis(300))
    } else {
        (10_000, 200_000, Duration::from_secs(1))
    };
    println!(
        "\nmsg per transport: 64 B latency ({round_trips} round trips), 1 KiB with 64 in flight \
         ({requests} requests), pub/sub 1 KiB to one subscriber for {:.1} s (waiting policy)",
        duration.as_secs_f64()
    );
    println!(
        "{:<6} {:>9} {:>9} {:>12} {:>9} {:>12} {:>9}",
        "", "p50 µs", "p99 µs", "req/s 1KiB", "vs tcp", "pub/sub msg/s", "vs tcp"
    );
    fn row<S: Setup>(
        runs: usize,
        round_trips: usize,
        requests: usize,
        duration: Duration,
    ) -> (Latency, f64, f64) {
        let lat: Vec<Latency> = (0..runs)
            .map(|_| run_on_workers(transports::latency::<S>(round_trips / 10, round_trips)))
            .collect();
        let lat = Latency {
            p50: median(lat.clone(), |l| l.p50).p50,
            p99: median(lat, |l| l.p99).p99,
            p999: Duration::ZERO,
        };
        let tput = median(
            (0..runs)
                .map(|_| run_on_workers(transports::throughput::<S>(1024, 64, requests)))
                .collect(),
            |r| *r,
        );
        let ps = median(
            (0..runs)
                .map(|_| run_on_workers(transports::pubsub::<S>(1024, duration)))
                .collect(),
            |r| *r,
        );
        (lat, tput, ps)
    }
    let rows = [
        (Tcp::NAME, row::<Tcp>(runs, round_trips, requests, duration)),
        (Tls::NAME, row::<Tls>(runs, round_trips, requests, duration)),
        (
            Quic::NAME,
            row::<Quic>(runs, round_trips, requests, duration),
        ),
        (Ipc::NAME, row::<Ipc>(runs, round_trips, requests, duration)),
    ];
    let (_, (_, tcp_tput, tcp_ps)) = rows[0];
    for (name, (lat, tput, ps)) in rows {
        println!(
            "{:<6} {:>9.1} {:>9.1} {:>12.0} {:>8.2}x {:>12.0} {:>8.2}x",
            name,
            us(lat.p50),
            us(lat.p99),
            tput,
            tput / tcp_tput,
            ps,
            ps / tcp_ps
        );
    }
}

fn pubsub_section(runs: usize, quick: bool) {
    use pubsub::{PubSubPlan, PubSubRun};

    let duration = Duration::from_millis(if quick { 300 } else { 2000 });
    println!(
        "\npub/sub, one publisher flat out for {:.1} s; rates are messages received per second, \
         summed over the subscribers",
        duration.as_secs_f64()
    );
    println!(
        "{:<16} {:<9} {:>11} {:>9} {:>8} {:>12} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "system",
        "msg/s",
        "MB/s",
        "drop %",
        "drops exact",
        "RSS MiB",
        "vs base",
        "vs zmq",
        "vs omq"
    );
    let workloads = [(64, 1), (1024, 1), (64 * 1024, 1), (1024, 4)];
    for (size, subscribers) in workloads {
        let plan = PubSubPlan {
            size,
            subscribers,
            duration,
        };
        // Each run is a child process of its own, so that its peak RSS is its own and not
        // what earlier runs left in this process's heap.
        let measure = |system: &str| {
            let all: Vec<PubSubRun> = (0..runs)
                .map(|_| pubsub::run_in_child(system, plan))
                .collect();
            median(all, |r| r.received as f64 / r.secs.max(1e-9))
        };
        let base = measure("baseline");
        let msg = measure("msg");
        let msg_wait = measure("msg-wait");
        let zmq = measure("zeromq");
        let omq = measure("omq");
        #[cfg(feature = "libzmq")]
        let libzmq = measure("libzmq");
        let rate = |r: &PubSubRun| r.received as f64 / r.secs.max(1e-9);
        let label = format!("{subscribers} sub, {}", human(size));
        #[allow(unused_mut)] // pushed to with the `libzmq` feature
        let mut rows = vec![
            ("baseline", &base),
            ("msg", &msg),
            ("msg/wait", &msg_wait),
            ("zeromq", &zmq),
            ("omq", &omq),
        ];
        #[cfg(feature = "libzmq")]
        rows.push(("libzmq", &libzmq));
        for (name, r) in rows {
            let expected = r.published * subscribers as u64;
            let dropped = expected.saturating_sub(r.received);
            let exact = match r.reported_drops {
                Some(reported) if reported == dropped => "yes",
                Some(_) => "NO",
                None => "n/a",
            };
            println!(
                "{:<16} {:<9} {:>11.0} {:>9.1} {:>7.2}% {:>12} {:>9.1} {:>8.2}x {:>8.2}x {:>8.2}x",
                label,
                name,
                rate(r),
                rate(r) * size as f64 / 1e6,
                100.0 * dropped as f64 / expected.max(1) as f64,
                exact,
                r.peak_rss as f64 / (1024.0 * 1024.0),
                rate(r) / rate(&base),
                rate(r) / rate(&zmq),
                rate(r) / rate(&omq),
            );
        }
    }
}

fn human(size: usize) -> String {
    if size >= 1024 {
        format!("{} KiB", size / 1024)
    } else {
        format!("{size} B")
    }
}
