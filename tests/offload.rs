//! Codec work off the executor, over real sockets: a long request being decoded, or a long
//! reply being compressed, holds up no other request on its connection; a request
//! cancelled while it is decoded is never called nor answered.
//!
//! The codec is gzip behind a gate: its call tells the test it has begun, then waits for
//! the test to let it go on. A codec that ran on the connection's task would hold that
//! task, and every other request on the connection with it, until then.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use msg::compression::{Compressor, DecompressError, GzipCompressor};
use msg::{serve, Encoding, RepSocket, ReqSocket, Request, Tcp};
use msg_tests::{within, WAIT};
use tokio::sync::mpsc;
use tower::service_fn;

/// A long, compressible payload: JSON-like records, 4 MiB.
fn long_payload() -> Bytes {
    let mut out = Vec::with_capacity(4 << 20);
    let mut i = 0u64;
    while out.len() < 4 << 20 {
        out.extend_from_slice(format!("{{\"id\":{i},\"user\":\"user{}\"}},", i % 97).as_bytes());
        i += 1;
    }
    out.truncate(4 << 20);
    Bytes::from(out)
}

/// gzip whose every call waits at a gate.
struct Gated {
    gzip: GzipCompressor,
    /// Told when a call begins.
    begun: mpsc::UnboundedSender<()>,
    /// Lets a call go on.
    go: Mutex<std::sync::mpsc::Receiver<()>>,
    /// Set if a call went on because nobody let it: the test was held up meanwhile.
    held_up: Arc<AtomicBool>,
}

/// The gate's handles: a call has begun, and let it go on.
struct Gate {
    begun: mpsc::UnboundedReceiver<()>,
    go: std::sync::mpsc::Sender<()>,
    held_up: Arc<AtomicBool>,
}

impl Drop for Gate {
    /// The test held up by a codec call fails, even where the step it waited in finished
    /// (a runtime whose one worker was held has no timer to end the step with).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(
                !self.held_up.load(Ordering::SeqCst),
                "the test was held up behind a codec call"
            );
        }
    }
}

fn gated() -> (Gated, Gate) {
    let (begun_tx, begun) = mpsc::unbounded_channel();
    let (go, go_rx) = std::sync::mpsc::channel();
    let held_up = Arc::new(AtomicBool::new(false));
    let codec = Gated {
        gzip: GzipCompressor::new(1),
        begun: begun_tx,
        go: Mutex::new(go_rx),
        held_up: held_up.clone(),
    };
    (codec, Gate { begun, go, held_up })
}

impl Gated {
    fn wait(&self) {
        let _ = self.begun.send(());
        // Past the test's own bound, so that a test held up fails on its step first.
        let waited = self
            .go
            .lock()
            .unwrap()
            .recv_timeout(WAIT + Duration::from_secs(10));
        if waited.is_err() {
            self.held_up.store(true, Ordering::SeqCst);
        }
    }
}

impl Compressor for Gated {
    fn encoding(&self) -> Encoding {
        Encoding::GZIP
    }

    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.wait();
        self.gzip.compress(data)
    }

    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        self.wait();
        self.gzip.decompress(data, limit)
    }
}

/// A handler that answers with the length of the request, and counts the long ones.
fn length_of(
    long_calls: Arc<AtomicUsize>,
) -> impl Fn(Request) -> std::future::Ready<Result<Bytes, std::convert::Infallible>> + Clone {
    move |req: Request| {
        if req.msg().len() > 1024 {
            long_calls.fetch_add(1, Ordering::SeqCst);
        }
        std::future::ready(Ok(Bytes::from(req.msg().len().to_string())))
    }
}

/// A handler that answers "long" with the long payload and echoes anything else.
async fn long_or_echo(req: Request) -> Result<Bytes, std::convert::Infallible> {
    Ok(if req.msg() == "long" {
        long_payload()
    } else {
        req.msg().clone()
    })
}

/// Sends `long` and, once the gated codec holds it, a short request, which is answered
/// `short_answer` meanwhile; then lets the long one go on, and returns its answer.
async fn short_answered_while_long_is_held(
    req: &ReqSocket<Tcp>,
    gate: &mut Gate,
    long: Bytes,
    short_answer: &str,
) -> Bytes {
    let long = {
        let req = req.clone();
        tokio::spawn(async move { req.request(long).await })
    };
    within(gate.begun.recv()).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("short"))).await.unwrap(),
        short_answer
    );
    gate.go.send(()).unwrap();
    within(long).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_request_being_decoded_holds_up_no_other_request_on_its_connection() {
    let (codec, mut gate) = gated();
    let mut rep = RepSocket::new(Tcp::default()).with_decompressor(codec);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let long_calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(rep, service_fn(length_of(long_calls.clone()))));

    let mut req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(1));
    within(req.connect(addr)).await.unwrap();
    // The server is decoding the long request: the short one is answered meanwhile.
    let long = short_answered_while_long_is_held(&req, &mut gate, long_payload(), "5").await;
    assert_eq!(long, (4 << 20).to_string().as_str());
    assert_eq!(long_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_reply_being_compressed_holds_up_no_other_request_on_its_connection() {
    let (codec, mut gate) = gated();
    let mut rep = RepSocket::new(Tcp::default()).with_compressor(codec);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(rep, service_fn(long_or_echo)));

    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();
    // The server is compressing the long reply: the short request is answered meanwhile.
    let long = short_answered_while_long_is_held(&req, &mut gate, "long".into(), "short").await;
    assert_eq!(long, long_payload());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_cancelled_while_it_is_decoded_is_never_called_nor_answered() {
    let (codec, mut gate) = gated();
    let mut rep = RepSocket::new(Tcp::default()).with_decompressor(codec);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let long_calls = Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        serve(rep, service_fn(length_of(long_calls.clone()))).with_graceful_shutdown(async {
            stopped.await.ok();
        }),
    );

    let mut req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(1));
    within(req.connect(addr)).await.unwrap();
    let long = {
        let req = req.clone();
        tokio::spawn(async move { req.request(long_payload()).await })
    };
    within(gate.begun.recv()).await.unwrap();
    // The caller gives up while the server decodes; the cancel goes out before the short
    // request, so once that is answered, the server has read the cancel.
    long.abort();
    let _ = long.await;
    assert_eq!(
        within(req.request(Bytes::from("short"))).await.unwrap(),
        "5"
    );
    gate.go.send(()).unwrap();
    // A graceful shutdown ends only once no codec work is left on the connection.
    stop.send(()).unwrap();
    within(server).await.unwrap().unwrap();
    assert_eq!(
        long_calls.load(Ordering::SeqCst),
        0,
        "the cancelled request was called"
    );
    assert_eq!(
        req.stats().late_replies,
        0,
        "the cancelled request was answered"
    );
}

// The client's codec work runs in its caller's task. On a runtime of one worker, a caller
// compressing or decoding inline would hold the worker, and with it the connection's
// driver and the server: the short request below runs on the test's own thread, outside
// the worker, and would wait for the gate.

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_decoding_a_long_reply_holds_up_no_other_request() {
    let (codec, mut gate) = gated();
    let mut rep = RepSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(1));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(rep, service_fn(long_or_echo)));

    let mut req = ReqSocket::new(Tcp::default()).with_decompressor(codec);
    within(req.connect(addr)).await.unwrap();
    let long = short_answered_while_long_is_held(&req, &mut gate, "long".into(), "short").await;
    assert_eq!(long, long_payload());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_client_compressing_a_long_request_holds_up_no_other_request() {
    let (codec, mut gate) = gated();
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let long_calls = Arc::new(AtomicUsize::new(0));
    tokio::spawn(serve(rep, service_fn(length_of(long_calls.clone()))));

    let mut req = ReqSocket::new(Tcp::default()).with_compressor(codec);
    within(req.connect(addr)).await.unwrap();
    // Through tower's `call`, and through `request`.
    let long_call = {
        let mut svc = req.clone();
        tokio::spawn(async move {
            use tower::{Service, ServiceExt};
            svc.ready()
                .await?
                .call(msg::Message::new(long_payload()))
                .await
        })
    };
    within(gate.begun.recv()).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("short"))).await.unwrap(),
        "5"
    );
    gate.go.send(()).unwrap();
    let reply = within(long_call).await.unwrap().unwrap();
    assert_eq!(reply.payload(), (4 << 20).to_string().as_str());

    let long = short_answered_while_long_is_held(&req, &mut gate, long_payload(), "5").await;
    assert_eq!(long, (4 << 20).to_string().as_str());
    assert_eq!(long_calls.load(Ordering::SeqCst), 2);
}

/// A subscriber decoding a long publication holds no worker: on a runtime of one, a round
/// trip to a server runs meanwhile; the publications still come out in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_subscriber_decoding_a_long_publication_holds_up_no_other_task() {
    use msg::{PubSocket, SubSocket};
    use tokio_stream::StreamExt;

    let (codec, mut gate) = gated();
    let mut publisher = PubSocket::new(Tcp::new()).with_compressor(GzipCompressor::new(1));
    publisher.bind("127.0.0.1:0").await.unwrap();
    let addr = publisher.local_addr().unwrap();
    let mut sub = SubSocket::new(Tcp::default()).with_decompressor(codec);
    within(sub.connect(addr)).await.unwrap();
    within(sub.subscribe("news")).await.unwrap();
    let received = tokio::spawn(async move {
        let long = sub.next().await.unwrap();
        let short = sub.next().await.unwrap();
        (long.payload().clone(), short.payload().clone())
    });
    within(publisher.publish("news", long_payload()))
        .await
        .unwrap();
    within(publisher.publish("news", Bytes::from("short")))
        .await
        .unwrap();
    within(gate.begun.recv()).await.unwrap();

    let server = msg_tests::echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(server)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("meanwhile"))).await.unwrap(),
        "meanwhile"
    );
    gate.go.send(()).unwrap();
    let (long, short) = within(received).await.unwrap();
    assert_eq!(long, long_payload());
    assert_eq!(short, "short");
}
