//! An axum HTTP server and a msg server in one process, on one runtime: they share one
//! application state (a visit counter both increment) and stop on one signal, a
//! `CancellationToken` that drives both graceful shutdowns, each finishing the requests it
//! has started. Run with `cargo run -p msg-examples --example axum_side_by_side`; it
//! serves, calls each server once, fires the token as a program's Ctrl-C handler would,
//! and waits for both servers to end.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use msg::{RepSocket, ReqSocket, Router, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// What both servers share.
#[derive(Clone, Default)]
struct AppState {
    visits: Arc<AtomicU64>,
}

impl AppState {
    fn visit(&self) -> u64 {
        self.visits.fetch_add(1, Ordering::SeqCst) + 1
    }
}

/// The HTTP side: `GET /visit`.
async fn http_visit(State(state): State<AppState>) -> String {
    format!("visit {} (over HTTP)", state.visit())
}

/// The msg side: the route `visit`, with the same state through msg's own extractor.
async fn msg_visit(msg::extract::State(state): msg::extract::State<AppState>) -> String {
    format!("visit {} (over msg)", state.visit())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = AppState::default();
    let shutdown = CancellationToken::new();

    // axum, on its own listener.
    let app = axum::Router::new()
        .route("/visit", get(http_visit))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http_addr = listener.local_addr()?;
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    // msg, a Router on a RepSocket, with the same state.
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let msg_addr = rep.local_addr().expect("bound");
    let router = Router::new()
        .route("visit", msg_visit)
        .with_state(state.clone());
    let msg = tokio::spawn(
        msg::serve(rep, router).with_graceful_shutdown(shutdown.clone().cancelled_owned()),
    );

    // One call to each.
    println!("{}", http_get(http_addr, "/visit").await?);
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(msg_addr).await?;
    let reply = req.request_to("visit", Bytes::new()).await?;
    println!("{}", String::from_utf8_lossy(&reply));

    // A program would do this on Ctrl-C (`tokio::signal::ctrl_c()`): one signal, both
    // servers stop accepting, finish what they started, and end.
    shutdown.cancel();
    http.await??;
    msg.await??;
    println!(
        "both servers stopped; {} visits in all",
        state.visits.load(Ordering::SeqCst)
    );
    Ok(())
}

/// A plain HTTP/1.1 GET on loopback; returns the response body.
async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response))
}
