//! Message layers stacked over real sockets: tracing spans captured and checked, and a stack
//! of several layers on both the client and the handler.

use std::convert::Infallible;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use msg::layers::{GzipLayer, TraceLayer};
use msg::{serve, Error, Message, PubSocket, Publication, RepSocket, ReqSocket, Request, Tcp};
use msg_tests::within;
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::MakeWriter;

/// What the test subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

/// Closed spans and debug events of target `msg`, written to `captured`, on this thread.
fn capture(captured: &Captured) -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_env_filter("msg=debug")
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_default(subscriber)
}

// One thread, so that every task's spans reach this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn trace_layer_spans_carry_kind_size_peer_topic_and_outcome() {
    let captured = Captured::default();
    let _guard = capture(&captured);

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let handler = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .service(service_fn(|req: Request| async move {
            if req.msg() == "fail" {
                return Err::<Bytes, BoxError>("refused by the handler".into());
            }
            Ok(req.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let mut client = ServiceBuilder::new().layer(TraceLayer::new()).service(req);
    within(client.ready().await.unwrap().call(Message::from("hello")))
        .await
        .unwrap();
    let failed = within(client.ready().await.unwrap().call(Message::from("fail"))).await;
    assert!(matches!(failed, Err(Error::Remote { .. })), "{failed:?}");

    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut publish = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .service(publisher);
    within(
        publish
            .ready()
            .await
            .unwrap()
            .call(Publication::new("prices.eu", "42")),
    )
    .await
    .unwrap();

    let text = captured.text();
    let lines = |kind: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("close") && l.contains(&format!("kind=\"{kind}\"")))
            .map(str::to_owned)
            .collect()
    };
    let requests = lines("request");
    assert_eq!(requests.len(), 2, "{text}");
    assert!(
        requests[0].contains("size=5") && requests[0].contains("outcome=\"ok\""),
        "{text}"
    );
    assert!(requests[1].contains("outcome=\"error\""), "{text}");
    let handled = lines("handle");
    assert_eq!(handled.len(), 2, "{text}");
    assert!(
        handled.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{text}"
    );
    assert!(
        handled.iter().any(|l| l.contains("refused by the handler")),
        "{text}"
    );
    let published = lines("publish");
    assert_eq!(published.len(), 1, "{text}");
    assert!(
        published[0].contains("topic=\"prices.eu\"") && published[0].contains("size=2"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stack_of_layers_works_over_the_socket_and_in_front_of_the_handler() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let handler = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .concurrency_limit(64)
        .timeout(Duration::from_secs(5))
        .layer(GzipLayer::new(6))
        .service(service_fn(|req: Request| async move {
            Ok::<_, Infallible>(req.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let client = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .timeout(Duration::from_secs(5))
        .layer(GzipLayer::new(6))
        .service(req);
    let payload = Bytes::from(vec![b'a'; 64 * 1024]);
    for _ in 0..10 {
        let reply = within(client.clone().oneshot(Message::new(payload.clone())))
            .await
            .map_err(Error::from)
            .unwrap();
        assert_eq!(reply.payload(), &payload);
    }
}
