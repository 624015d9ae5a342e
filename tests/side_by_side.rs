//! An axum HTTP server and a msg `Router` on one runtime, sharing one application state
//! (each side's handlers take it with its own `State` extractor) and stopped by one
//! `CancellationToken`: each drains the request it has in flight, and both end, within a
//! bound.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use bytes::Bytes;
use msg::{RepOptions, RepSocket, ReqSocket, Tcp};
use msg_tests::{within, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// What both servers share: a counter each request increments, and, for the test, a
/// channel to say a slow request has started and a gate that holds it until opened.
#[derive(Clone)]
struct AppState {
    hits: Arc<AtomicU64>,
    started: mpsc::UnboundedSender<&'static str>,
    gate: watch::Receiver<bool>,
}

impl AppState {
    /// Counts a request; a slow one says it started and waits at the gate.
    async fn hit(mut self, slow: bool, side: &'static str) -> u64 {
        let n = self.hits.fetch_add(1, Ordering::SeqCst) + 1;
        if slow {
            self.started.send(side).expect("the test listens");
            self.gate.wait_for(|open| *open).await.expect("gate");
        }
        n
    }
}

async fn http_fast(State(state): State<AppState>) -> String {
    format!("hit {}", state.hit(false, "http").await)
}

async fn http_slow(State(state): State<AppState>) -> String {
    format!("slow hit {}", state.hit(true, "http").await)
}

/// The msg side's handlers: the same state, through msg's own `State` extractor.
async fn msg_fast(msg::extract::State(state): msg::extract::State<AppState>) -> String {
    format!("hit {}", state.hit(false, "msg").await)
}

async fn msg_slow(msg::extract::State(state): msg::extract::State<AppState>) -> String {
    format!("hit {}", state.hit(true, "msg").await)
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
async fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Returns once a connection to `addr` is refused: its listener is closed.
async fn refused(addr: SocketAddr) {
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_stops_axum_and_msg_each_after_its_request_in_flight() {
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let (open_gate, gate) = watch::channel(false);
    let state = AppState {
        hits: Arc::new(AtomicU64::new(0)),
        started: started_tx,
        gate,
    };
    let shutdown = CancellationToken::new();

    let app = axum::Router::new()
        .route("/hit", get(http_fast))
        .route("/slow", get(http_slow))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind HTTP");
    let http_addr = listener.local_addr().expect("bound");
    let http = tokio::spawn(
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned())
            .into_future(),
    );

    // The linger is longer than the test waits: the msg server must drain, not drop.
    let mut rep = RepSocket::with_options(Tcp::default(), RepOptions::default().linger(WAIT * 2));
    within(rep.bind("127.0.0.1:0")).await.expect("bind msg");
    let msg_addr = rep.local_addr().expect("bound");
    let router = msg::Router::new()
        .route("hit", msg_fast)
        .route("slow", msg_slow)
        .with_state(state.clone());
    let msg = tokio::spawn(
        msg::serve(rep, router).with_graceful_shutdown(shutdown.clone().cancelled_owned()),
    );

    // Both serve, and count in the one state.
    let (status, body) = within(http_get(http_addr, "/hit")).await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body, "hit 1");
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(msg_addr)).await.expect("connect");
    let reply = within(req.request_to("hit", Bytes::new()))
        .await
        .expect("reply");
    assert_eq!(reply, "hit 2");

    // A slow request on each, both started before the signal.
    let slow_http = tokio::spawn(http_get(http_addr, "/slow"));
    let client = req.clone();
    let slow_msg = tokio::spawn(async move { client.request_to("slow", Bytes::new()).await });
    let mut sides = vec![
        within(started.recv()).await.expect("a slow request starts"),
        within(started.recv()).await.expect("the other starts"),
    ];
    sides.sort_unstable();
    assert_eq!(sides, ["http", "msg"]);

    shutdown.cancel();
    // Both stop accepting, and neither ends while its request runs.
    within(refused(http_addr)).await;
    within(refused(msg_addr)).await;
    assert!(!http.is_finished(), "axum ended before its request did");
    assert!(!msg.is_finished(), "msg ended before its request did");

    // Let them finish: each answers its request, then ends.
    open_gate.send(true).expect("gate");
    let (status, body) = within(slow_http).await.expect("task");
    assert!(status.contains("200"), "{status}");
    assert!(body.starts_with("slow hit "), "{body}");
    let reply = within(slow_msg).await.expect("task").expect("slow reply");
    assert!(reply.starts_with(b"hit "), "{reply:?}");
    within(http)
        .await
        .expect("task")
        .expect("axum ended cleanly");
    within(msg).await.expect("task").expect("msg ended cleanly");
    assert_eq!(state.hits.load(Ordering::SeqCst), 4);
}
