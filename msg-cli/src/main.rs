//! `msg`: the command line of the msg messaging library. Requests and a server, publish and
//! subscribe, a forwarder between publishers and subscribers, and a benchmark, over every
//! transport msg speaks, each named by its endpoint (`tcp://127.0.0.1:5555`,
//! `ipc:///tmp/app.sock`, `quic://127.0.0.1:5555`, `tls://localhost:5555`).
//!
//! ```text
//! msg serve tcp://127.0.0.1:5555 &
//! msg req tcp://127.0.0.1:5555 hello          # prints: hello
//! ```
//!
//! Every command has `--help`. An error is one line on standard error, naming what failed
//! and why, and the exit code is 1 (2 for a command line that does not parse).

#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod bench;
mod commands;
mod progress;
mod transport;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use transport::TransportArgs;

/// Requests, a server, publish and subscribe, a forwarder and a benchmark over msg sockets.
///
/// Addresses are endpoints: tcp://host:port, tls://host:port, quic://host:port or ipc://path
/// (host:port alone means tcp://). Port 0 binds a free port; the address bound is printed on
/// standard error.
#[derive(Debug, Parser)]
#[command(name = "msg", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sends one request and prints the reply.
    Req(ReqArgs),
    /// Serves requests: echoes each one, or answers with a command's output.
    Serve(ServeArgs),
    /// Binds a publisher and publishes each line read from standard input on TOPIC.
    Pub(PubArgs),
    /// Subscribes to PATTERN at a publisher and prints each message as `topic payload`.
    Sub(SubArgs),
    /// Forwards publications from a publisher upstream to subscribers downstream, and only
    /// what they subscribe to.
    Proxy(ProxyArgs),
    /// Measures request/reply and publish/subscribe throughput and latency.
    Bench(BenchArgs),
}

/// `msg req`.
#[derive(Debug, Args)]
struct ReqArgs {
    /// The server's endpoint.
    addr: String,
    /// The request's payload; `-` reads it from standard input, to its end.
    payload: String,
    /// The route the request names (such as users.get), for a server that dispatches on
    /// it, a msg Router; without it, the request names none.
    #[arg(long, value_name = "R")]
    route: Option<String>,
    /// Longest wait for the connection, and then for the reply (e.g. 500ms, 10s, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
}

/// `msg serve`.
#[derive(Debug, Args)]
struct ServeArgs {
    /// The endpoint to bind.
    addr: String,
    /// Answers each request with the standard output of this shell command (run by
    /// `sh -c`), which reads the request on its standard input. A command that exits with
    /// an error fails the request, with its first line of standard error.
    #[arg(long, value_name = "CMD")]
    exec: Option<String>,
    /// Stops, gracefully, once this many requests are answered.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// `msg pub`.
#[derive(Debug, Args)]
struct PubArgs {
    /// The endpoint to bind; subscribers connect to it.
    addr: String,
    /// The topic every line is published on (tokens separated by dots, no wildcards).
    topic: String,
}

/// `msg sub`.
#[derive(Debug, Args)]
struct SubArgs {
    /// The publisher's endpoint.
    addr: String,
    /// The pattern to subscribe to: a topic, `*` for one token, `>` for the rest.
    pattern: String,
    /// Stops after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

/// `msg proxy`.
#[derive(Debug, Args)]
struct ProxyArgs {
    /// The publisher's endpoint, to subscribe to.
    upstream: String,
    /// The endpoint to bind for subscribers downstream.
    downstream: String,
}

/// What `msg bench` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Request/reply, then publish/subscribe.
    All,
    /// Request/reply only.
    Req,
    /// Publish/subscribe only.
    Pub,
}

/// `msg bench`.
#[derive(Debug, Args)]
struct BenchArgs {
    /// Where the bench binds its own echo server and publisher; with --connect, the server
    /// to load instead.
    #[arg(default_value = "tcp://127.0.0.1:0")]
    addr: String,
    /// What to measure.
    #[arg(long, value_enum, default_value = "all")]
    mode: Mode,
    /// How long each measurement runs (e.g. 500ms, 3s).
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    duration: Duration,
    /// Payload bytes per request or message (publish/subscribe takes at least 8, for the
    /// timestamp).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=65536))]
    inflight: u32,
    /// Loads the echo server already at ADDR (`msg serve ADDR`) instead of binding one:
    /// request/reply only.
    #[arg(long)]
    connect: bool,
}

/// A duration as `500ms`, `10s`, `2m`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (like 500ms, 10s, 2m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit is ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Runs the command line, printing an error as one line.
fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    let transport = cli.transport.transport()?;
    match cli.command {
        Command::Req(args) => commands::req(transport, args).await,
        Command::Serve(args) => commands::serve(transport, args).await,
        Command::Pub(args) => commands::publish(transport, args).await,
        Command::Sub(args) => commands::subscribe(transport, args).await,
        Command::Proxy(args) => commands::proxy(transport, args).await,
        Command::Bench(args) => bench::run(transport, args).await,
    }
}

/// Prints `message` as the one line of an error, and gives the exit code of one.
fn fail(message: &str) -> ExitCode {
    eprintln!("msg: error: {}", one_line(message));
    ExitCode::FAILURE
}

/// clap's help and version go to standard output as they are; its errors become one line.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let cause: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|line| !line.starts_with("Usage:"))
        .filter(|line| !line.is_empty())
        .collect();
    let cause = cause.join(" ");
    let cause = cause.strip_prefix("error: ").unwrap_or(&cause);
    eprintln!("msg: error: {cause} (see msg --help)");
    ExitCode::from(2)
}

/// `text` on one line: line breaks become spaces.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `e` and the causes under it that its message does not already say, joined by `: `.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
