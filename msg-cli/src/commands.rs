//! `msg req`, `msg serve`, `msg pub`, `msg sub` and `msg proxy`.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use msg::any::AnyAddr;
use msg::{
    AnyTransport, Code, Forwarder, PubSocket, RepSocket, ReqOptions, ReqSocket, Request, Status,
    SubOptions, SubSocket,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;

use crate::transport::endpoint;
use crate::{describe, ProxyArgs, PubArgs, ReqArgs, ServeArgs, SubArgs};

/// `msg req ADDR [--route R] PAYLOAD`: one request, naming route `R` if given; the reply on
/// standard output, with a line break after it unless it ends with one.
pub(crate) async fn req(transport: AnyTransport, args: ReqArgs) -> Result<(), String> {
    let addr = endpoint(&args.addr)?;
    let payload = if args.payload == "-" {
        let mut stdin = Vec::new();
        tokio::io::stdin()
            .read_to_end(&mut stdin)
            .await
            .map_err(|e| format!("cannot read the payload from standard input: {e}"))?;
        Bytes::from(stdin)
    } else {
        Bytes::from(args.payload)
    };
    let options = ReqOptions::default()
        .timeout(args.timeout)
        .connect_timeout(args.timeout)
        .reconnect_wait(args.timeout);
    let mut socket = ReqSocket::with_options(transport, options);
    socket
        .connect(&addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", describe(&e)))?;
    let reply = match &args.route {
        Some(route) => socket.request_to(route.clone(), payload).await,
        None => socket.request(payload).await,
    }
    .map_err(|e| match e {
        // The server's code named, as `not_found` for a route no handler serves.
        msg::Error::Remote { code, message } => {
            format!("request to {addr} failed: the server answered {code}: {message}")
        }
        e => format!("request to {addr} failed: {}", describe(&e)),
    })?;
    let mut stdout = tokio::io::stdout();
    let mut out = reply.to_vec();
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    stdout
        .write_all(&out)
        .await
        .and(stdout.flush().await)
        .map_err(|e| format!("cannot write the reply: {e}"))?;
    socket.close().await;
    Ok(())
}

/// `msg serve ADDR [--exec CMD] [--count N]`: echoes each request, or answers it with the
/// output of `CMD`; stops on Ctrl-C, or after `N` answers.
pub(crate) async fn serve(transport: AnyTransport, args: ServeArgs) -> Result<(), String> {
    let addr = endpoint(&args.addr)?;
    let mut socket = RepSocket::new(transport);
    socket
        .bind(&addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {}", describe(&e)))?;
    let local = socket
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    eprintln!("msg: serving on {local}");

    let (done, stop) = tokio::sync::watch::channel(false);
    let answered = Arc::new(AtomicU64::new(0));
    let count = args.count;
    let exec = args.exec.map(Arc::<str>::from);
    let handler = tower::service_fn(move |req: Request<AnyAddr>| {
        let exec = exec.clone();
        let answered = answered.clone();
        let done = done.clone();
        async move {
            let reply = match &exec {
                Some(cmd) => run_command(cmd, req.msg().clone()).await,
                None => Ok(req.msg().clone()),
            };
            let n = answered.fetch_add(1, Ordering::SeqCst) + 1;
            if count.is_some_and(|count| n >= count) {
                let _ = done.send(true);
            }
            reply
        }
    });
    let mut stop_count = stop.clone();
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = stop_count.wait_for(|done| *done) => {}
        }
    };
    msg::serve(socket, handler)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| format!("serving on {local} failed: {}", describe(&e)))
}

/// Runs `cmd` with `request` on its standard input; its standard output is the reply.
async fn run_command(cmd: &str, request: Bytes) -> Result<Bytes, Status> {
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Status::new(Code::Internal, format!("cannot run `{cmd}`: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // Written beside the reading, so that a command that answers before it has read
        // everything does not stall on a full pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(&request).await;
        });
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| Status::new(Code::Internal, format!("`{cmd}` failed: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("");
        return Err(Status::new(
            Code::Internal,
            format!("`{cmd}` {}: {first}", output.status),
        ));
    }
    Ok(Bytes::from(output.stdout))
}

/// `msg pub ADDR TOPIC`: binds and publishes each line of standard input; says on standard
/// error when the subscribers' patterns change, so that a script can wait for them.
pub(crate) async fn publish(transport: AnyTransport, args: PubArgs) -> Result<(), String> {
    let addr = endpoint(&args.addr)?;
    msg::topic::validate_topic(&args.topic)
        .map_err(|e| format!("bad topic `{}`: {}", args.topic, describe(&e)))?;
    let mut socket = PubSocket::new(transport);
    socket
        .bind(&addr)
        .await
        .map_err(|e| format!("cannot bind {addr}: {}", describe(&e)))?;
    let local = socket
        .local_addr()
        .map_or(addr.to_string(), |a| a.to_string());
    let mut changes = socket.subscription_changes();
    eprintln!("msg: publishing on {local}");
    tokio::spawn(async move {
        while let Some(change) = changes.next().await {
            let what = if change.added {
                "subscribed"
            } else {
                "unsubscribed"
            };
            eprintln!("msg: {what}: {}", change.pattern);
        }
    });
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut published = 0u64;
    loop {
        let line = lines
            .next_line()
            .await
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        let Some(line) = line else { break };
        socket
            .publish(&args.topic, Bytes::from(line))
            .await
            .map_err(|e| format!("cannot publish on {}: {}", args.topic, describe(&e)))?;
        published += 1;
    }
    // Writes what is queued for the subscribers before it goes.
    socket.close().await;
    let stats = socket.stats();
    eprintln!(
        "msg: published {published} lines, {} copies queued for subscribers, {} dropped",
        stats.queued, stats.dropped
    );
    Ok(())
}

/// `msg sub ADDR PATTERN [--count N]`: prints `topic payload`, one message a line.
pub(crate) async fn subscribe(transport: AnyTransport, args: SubArgs) -> Result<(), String> {
    let addr = endpoint(&args.addr)?;
    msg::topic::validate_pattern(&args.pattern)
        .map_err(|e| format!("bad pattern `{}`: {}", args.pattern, describe(&e)))?;
    let mut socket = SubSocket::with_options(transport, SubOptions::default());
    socket
        .connect(&addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {}", describe(&e)))?;
    socket
        .subscribe(args.pattern.clone())
        .await
        .map_err(|e| format!("cannot subscribe to {}: {}", args.pattern, describe(&e)))?;
    eprintln!("msg: subscribed to {} at {addr}", args.pattern);
    let mut stdout = tokio::io::stdout();
    let mut seen = 0u64;
    while args.count.is_none_or(|count| seen < count) {
        let Some(msg) = socket.next().await else {
            break;
        };
        let mut line = Vec::with_capacity(msg.topic().len() + msg.payload().len() + 2);
        line.extend_from_slice(msg.topic().as_bytes());
        line.push(b' ');
        line.extend_from_slice(msg.payload());
        line.push(b'\n');
        stdout
            .write_all(&line)
            .await
            .and(stdout.flush().await)
            .map_err(|e| format!("cannot write a message: {e}"))?;
        seen += 1;
    }
    let missed = socket.stats().missed;
    if missed > 0 {
        eprintln!("msg: {missed} messages were dropped on the way");
    }
    socket.close().await;
    Ok(())
}

/// `msg proxy UPSTREAM DOWNSTREAM`: a [`Forwarder`] until Ctrl-C.
pub(crate) async fn proxy(transport: AnyTransport, args: ProxyArgs) -> Result<(), String> {
    let up = endpoint(&args.upstream)?;
    let down = endpoint(&args.downstream)?;
    let mut upstream = SubSocket::new(transport.clone());
    upstream
        .connect(&up)
        .await
        .map_err(|e| format!("cannot connect to {up}: {}", describe(&e)))?;
    let mut downstream = PubSocket::new(transport);
    downstream
        .bind(&down)
        .await
        .map_err(|e| format!("cannot bind {down}: {}", describe(&e)))?;
    let forwarder = Forwarder::spawn(upstream, downstream);
    let local = forwarder
        .local_addr()
        .map_or(down.to_string(), |a| a.to_string());
    eprintln!("msg: forwarding from {up} to {local}");
    tokio::signal::ctrl_c()
        .await
        .map_err(|e| format!("cannot wait for Ctrl-C: {e}"))?;
    let stats = forwarder.stats();
    forwarder
        .close()
        .await
        .map_err(|e| format!("forwarding stopped: {}", describe(&e)))?;
    eprintln!(
        "msg: forwarded {} messages; {} dropped upstream, {} dropped here",
        stats.received, stats.upstream.missed, stats.downstream.dropped
    );
    Ok(())
}
