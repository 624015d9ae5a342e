//! The `msg` command line, run as a user runs it: the built binary, over loopback and Unix
//! sockets in a directory of the test's own. Steps are ordered by what the commands print
//! on standard error (the address bound, a subscription made), and every wait is bounded.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The longest one step may take.
const WAIT: Duration = Duration::from_secs(30);

fn msg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_msg"))
}

/// Runs `msg args` to its end, with `stdin` as its input; fails the test if it takes longer
/// than [`WAIT`].
fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = msg()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("msg runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    finish(child, args)
}

/// Waits for `child` to end and takes its output, within [`WAIT`] (killed past it).
fn finish(child: Child, args: &[&str]) -> Output {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            // The child is the test's own, by its id.
            let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            panic!("`msg {}` did not finish in time", args.join(" "))
        }
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A command running in the background, its standard error read line by line; killed when
/// dropped.
struct Running {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    args: String,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = msg()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("msg runs");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            stdin: child.stdin.take(),
            child: Some(child),
            lines,
            args: args.join(" "),
        }
    }

    /// Waits for a line on standard error that starts with `prefix`; returns the rest.
    fn wait_for(&self, prefix: &str) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(_) => panic!("`msg {}` never said `{prefix}`", self.args),
            }
        }
    }

    fn write_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write a line");
        stdin.flush().expect("flush");
    }

    /// Closes standard input and waits for the command to end.
    fn finish(mut self) -> Output {
        drop(self.stdin.take());
        let child = self.child.take().expect("running");
        let args = self.args.clone();
        finish(child, &[&args])
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A directory of the test's own, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("msg-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        Dir(path)
    }

    fn file(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn req_gets_the_echo_of_serve() {
    let server = Running::start(&["serve", "tcp://127.0.0.1:0", "--count", "2"]);
    let addr = server.wait_for("msg: serving on ");
    assert!(addr.starts_with("tcp://127.0.0.1:"), "{addr}");

    let out = run(&["req", &addr, "hello"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hello\n");
    // `-` reads the payload from standard input.
    let out = run(&["req", &addr, "-"], b"from stdin\n");
    assert_eq!(stdout(&out), "from stdin\n");
    // Two answered: the server stops by itself.
    assert!(server.finish().status.success());
}

/// `msg req --route` names the route. `msg serve` echoes whatever the route, so a Router
/// is served in the test's own process: its handler answers the route, and a route it has
/// not fails in one line that names `not_found` and the route.
#[test]
fn req_route_reaches_the_routers_handler_and_an_unknown_route_fails() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let addr = runtime.block_on(async {
        let mut rep = msg::RepSocket::new(msg::Tcp::default());
        rep.bind("127.0.0.1:0").await.expect("bind");
        let addr = rep.local_addr().expect("bound");
        let router = msg::Router::new()
            .route(
                "users.get",
                |id: String| async move { format!("user {id}") },
            )
            .route("users.list", || async { "all" });
        tokio::spawn(msg::serve(rep, router));
        format!("tcp://{addr}")
    });

    let out = run(&["req", &addr, "--route", "users.get", "42"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "user 42\n");
    let out = run(&["req", &addr, "--route", "users.list", "-"], b"");
    assert_eq!(stdout(&out), "all\n");

    assert_fails_in_one_line(
        &["req", &addr, "--route", "users.nope", "42"],
        &format!("request to {addr} failed: the server answered not_found: no route `users.nope`"),
    );
    // A route msg cannot send (empty) fails before anything is sent.
    assert_fails_in_one_line(&["req", &addr, "--route", "", "42"], "route");
}

#[test]
fn serve_exec_answers_with_the_commands_output_over_ipc() {
    let dir = Dir::new("exec");
    let endpoint = format!("ipc://{}", dir.file("serve.sock"));
    let server = Running::start(&["serve", &endpoint, "--exec", "tr a-z A-Z", "--count", "2"]);
    server.wait_for("msg: serving on ");
    let out = run(&["req", &endpoint, "shout"], b"");
    assert_eq!(stdout(&out), "SHOUT\n");

    let failing = format!("ipc://{}", dir.file("failing.sock"));
    let bad = Running::start(&["serve", &failing, "--exec", "echo broken >&2; exit 3"]);
    bad.wait_for("msg: serving on ");
    let out = run(&["req", &failing, "x"], b"");
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("exit status: 3: broken"), "{err}");

    let out = run(&["req", &endpoint, "again"], b"");
    assert_eq!(stdout(&out), "AGAIN\n");
    assert!(server.finish().status.success());
}

#[test]
fn pub_reaches_sub() {
    let mut publisher = Running::start(&["pub", "tcp://127.0.0.1:0", "news.eu"]);
    let addr = publisher.wait_for("msg: publishing on ");
    let subscriber = Running::start(&["sub", &addr, "news.>", "--count", "2"]);
    subscriber.wait_for("msg: subscribed to news.>");
    publisher.wait_for("msg: subscribed: news.>");

    publisher.write_line("line one");
    publisher.write_line("line two");
    let out = subscriber.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "news.eu line one\nnews.eu line two\n");
    let out = publisher.finish();
    assert!(out.status.success());
}

#[test]
fn proxy_forwards_what_is_subscribed_downstream() {
    let mut publisher = Running::start(&["pub", "tcp://127.0.0.1:0", "news.eu"]);
    let upstream = publisher.wait_for("msg: publishing on ");
    let proxy = Running::start(&["proxy", &upstream, "tcp://127.0.0.1:0"]);
    let forwarding = proxy.wait_for("msg: forwarding from ");
    let downstream = forwarding
        .split(" to ")
        .nth(1)
        .expect("the address downstream")
        .to_owned();

    let subscriber = Running::start(&["sub", &downstream, "news.*", "--count", "1"]);
    subscriber.wait_for("msg: subscribed to news.*");
    // The proxy subscribed upstream in turn.
    publisher.wait_for("msg: subscribed: news.*");
    publisher.write_line("through the proxy");
    let out = subscriber.finish();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "news.eu through the proxy\n");
    // The subscriber left downstream: the proxy unsubscribes upstream.
    publisher.wait_for("msg: unsubscribed: news.*");
}

#[test]
fn bench_prints_its_figures() {
    let out = run(
        &[
            "bench",
            "--duration",
            "300ms",
            "--size",
            "100",
            "--inflight",
            "4",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(
        lines[0].starts_with("req/rep over tcp://127.0.0.1:"),
        "{text}"
    );
    assert!(lines[0].contains("100 B requests, 4 in flight"), "{text}");
    assert!(
        lines[1].contains(" req/s,") && lines[1].contains(" 0 failed)"),
        "{text}"
    );
    for latency in [lines[2], lines[5]] {
        for figure in ["p50 ", "p90 ", "p99 ", "p99.9 ", "max "] {
            assert!(latency.contains(figure), "{text}");
        }
    }
    assert!(
        lines[3].starts_with("pub/sub over tcp://127.0.0.1:"),
        "{text}"
    );
    assert!(
        lines[4].contains(" msg/s,") && lines[4].contains(" 0 dropped)"),
        "{text}"
    );
}

#[test]
fn bench_loads_a_server_already_running() {
    let server = Running::start(&["serve", "tcp://127.0.0.1:0"]);
    let addr = server.wait_for("msg: serving on ");
    let out = run(
        &[
            "bench",
            &addr,
            "--connect",
            "--mode",
            "req",
            "--duration",
            "200ms",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("req/rep over {addr}:")), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

/// An error is one line on standard error that says what failed and why, with exit code 1.
fn assert_fails_in_one_line(args: &[&str], says: &str) {
    let out = run(args, b"");
    assert_eq!(out.status.code(), Some(1), "`msg {}`", args.join(" "));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("msg: error: "), "{err}");
    assert!(err.contains(says), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_address_is_one_line_and_a_failure() {
    assert_fails_in_one_line(
        &["req", "udp://127.0.0.1:5555", "x"],
        "bad address `udp://127.0.0.1:5555`: endpoint `udp://127.0.0.1:5555`: unknown scheme `udp`",
    );
    // A port nothing listens on: bound, then let go.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = format!("tcp://{}", closed.local_addr().unwrap());
    drop(closed);
    assert_fails_in_one_line(&["req", &addr, "x"], &format!("cannot connect to {addr}: "));
    assert_fails_in_one_line(&["sub", &addr, "a.>"], "cannot connect to");
    assert_fails_in_one_line(&["pub", "tcp://127.0.0.1:0", "a.*"], "bad topic `a.*`");
    assert_fails_in_one_line(
        &["serve", "tls://127.0.0.1:0"],
        "a tls:// endpoint needs certificates",
    );
    assert_fails_in_one_line(
        &[
            "req",
            "tcp://127.0.0.1:1",
            "x",
            "--cert",
            "/nonexistent.pem",
        ],
        "bad certificate options",
    );
    // A command line that does not parse: one line too, with exit code 2.
    let out = run(&["req", "tcp://127.0.0.1:1"], b"");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("<PAYLOAD>"), "{err}");
}

#[test]
fn every_command_has_help() {
    for command in ["req", "serve", "pub", "sub", "proxy", "bench"] {
        let out = run(&[command, "--help"], b"");
        assert!(out.status.success());
        let text = stdout(&out);
        assert!(
            text.contains(&format!("Usage: msg {command} ")),
            "{command}: {text}"
        );
    }
    let out = run(&["--help"], b"");
    assert!(stdout(&out).contains("Commands:"));
}

#[test]
fn req_and_serve_over_tls_with_certificate_files() {
    let dir = Dir::new("tls");
    let pki = msg::tls::TestPki::generate(&["localhost"]).expect("a test CA");
    let (cert, key, ca) = (
        dir.file("cert.pem"),
        dir.file("key.pem"),
        dir.file("ca.pem"),
    );
    std::fs::write(&cert, &pki.server_cert_pem).unwrap();
    std::fs::write(&key, &pki.server_key_pem).unwrap();
    std::fs::write(&ca, &pki.ca_pem).unwrap();

    let server = Running::start(&[
        "serve",
        "tls://127.0.0.1:0",
        "--cert",
        &cert,
        "--key",
        &key,
        "--ca",
        &ca,
        "--count",
        "1",
    ]);
    let addr = server.wait_for("msg: serving on ");
    assert!(addr.starts_with("tls://"), "{addr}");
    let out = run(
        &[
            "req",
            &addr,
            "secret",
            "--ca",
            &ca,
            "--server-name",
            "localhost",
        ],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "secret\n");
    assert!(server.finish().status.success());
}
