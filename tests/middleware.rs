//! `msg::middleware::from_fn` and `from_fn_with_state` over real sockets: a check that
//! refuses a request before the handler with a typed code, a request log with a state of
//! its own, the middleware beside `TraceLayer`, under a concurrency limit, and over every
//! transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, Bytes};
use msg::layers::TraceLayer;
use msg::middleware::{from_fn, from_fn_with_state, Next};
use msg::{serve, Code, Error, Message, RepSocket, ReqSocket, Request, Status, Tcp};
use msg_tests::fixture::Fixture;
use msg_tests::{each_transport, serve_on_loopback, within};
use tokio::sync::{mpsc, oneshot};
use tower::{service_fn, BoxError, ServiceBuilder};

/// What a request must start with to reach the handler.
const KEY: &[u8] = b"key=secret\n";

/// Refuses a request that does not start with [`KEY`], and hands the handler the rest.
async fn api_key<A>(mut req: Request<A>, next: Next<A>) -> Result<Message, BoxError> {
    if !req.payload().starts_with(KEY) {
        return Err(Status::new(Code::Unauthenticated, "no API key").into());
    }
    req.message_mut().payload_mut().advance(KEY.len());
    next.run(req).await
}

fn keyed(body: &str) -> Bytes {
    let mut payload = KEY.to_vec();
    payload.extend_from_slice(body.as_bytes());
    Bytes::from(payload)
}

/// An echo handler that counts its calls.
fn counted_echo<A: Send + 'static>(
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<Request<A>, Response = Bytes, Error = BoxError, Future = impl Send + 'static>
       + Clone
       + Send
       + 'static {
    service_fn(move |req: Request<A>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, BoxError>(req.payload().clone()) }
    })
}

async fn connected(addr: SocketAddr) -> ReqSocket<Tcp> {
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.expect("connect");
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_fn_refuses_a_request_without_the_api_key_before_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = ServiceBuilder::new()
        .layer(from_fn(api_key))
        .service(counted_echo(calls.clone()));
    let req = connected(serve_on_loopback(handler).await).await;

    match within(req.request(Bytes::from("hello"))).await {
        Err(Error::Remote { code, message }) => {
            assert_eq!(code, Code::Unauthenticated);
            assert_eq!(message, "no API key");
        }
        other => panic!("expected the middleware's refusal, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the handler was reached");

    // With the key, the handler gets the request without it.
    let reply = within(req.request(keyed("hello"))).await.expect("reply");
    assert_eq!(reply, "hello");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// One line of the request log: the payload, and the code of the failure if it failed.
type Logged = (Bytes, Option<Code>);

/// Logs every request and its outcome into the state it is given.
async fn log_requests<A>(
    log: Arc<Mutex<Vec<Logged>>>,
    req: Request<A>,
    next: Next<A>,
) -> Result<Message, BoxError> {
    let payload = req.payload().clone();
    let outcome = next.run(req).await;
    let code = outcome
        .as_ref()
        .err()
        .map(|e| match e.downcast_ref::<Status>() {
            Some(status) => status.code(),
            None => Code::Internal,
        });
    log.lock().expect("log").push((payload, code));
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_fn_with_state_logs_each_request_and_passes_the_handlers_code_on() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let handler = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(from_fn_with_state(log.clone(), log_requests))
        .layer(from_fn(api_key))
        .service(service_fn(|req: Request<SocketAddr>| async move {
            match req.payload().as_ref() {
                b"missing" => Err(BoxError::from(Status::new(Code::NotFound, "no such key"))),
                _ => Ok(req.payload().clone()),
            }
        }));
    let req = connected(serve_on_loopback(handler).await).await;

    let reply = within(req.request(keyed("found"))).await.expect("reply");
    assert_eq!(reply, "found");
    match within(req.request(keyed("missing"))).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, Code::NotFound),
        other => panic!("expected the handler's NotFound, got {other:?}"),
    }
    match within(req.request(Bytes::from("found"))).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("expected the refusal, got {other:?}"),
    }

    // The log sits above the key check: it sees every request, as it came, with its outcome.
    let log = log.lock().expect("log").clone();
    assert_eq!(
        log,
        vec![
            (keyed("found"), None),
            (keyed("missing"), Some(Code::NotFound)),
            (Bytes::from("found"), Some(Code::Unauthenticated)),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_fn_keeps_the_back_pressure_of_a_concurrency_limit_below_it() {
    // The handler holds each call until the test lets it go, and says when it starts.
    let (started_tx, mut started) = mpsc::unbounded_channel::<oneshot::Sender<()>>();
    let handler = ServiceBuilder::new()
        .layer(from_fn(api_key))
        .concurrency_limit(1)
        .service(service_fn(move |req: Request<SocketAddr>| {
            let started_tx = started_tx.clone();
            async move {
                let (release, released) = oneshot::channel();
                started_tx.send(release).expect("the test listens");
                released.await.expect("released");
                Ok::<_, BoxError>(req.payload().clone())
            }
        }));
    let req = connected(serve_on_loopback(handler).await).await;

    let client = req.clone();
    let first = tokio::spawn(async move { client.request(keyed("first")).await });
    let release_first = within(started.recv()).await.expect("the first call starts");
    let client = req.clone();
    let second = tokio::spawn(async move { client.request(keyed("second")).await });
    // The limit holds the second call back while the first runs.
    assert!(
        tokio::time::timeout(Duration::from_millis(200), started.recv())
            .await
            .is_err(),
        "a second call started under a limit of one"
    );
    release_first.send(()).expect("first call waits");
    let release_second = within(started.recv())
        .await
        .expect("the second call starts");
    release_second.send(()).expect("second call waits");
    assert_eq!(within(first).await.expect("task").expect("reply"), "first");
    assert_eq!(
        within(second).await.expect("task").expect("reply"),
        "second"
    );
}

/// The same middleware function, generic over the address, over each transport.
async fn middleware_serves_every_transport<F: Fixture>(fixture: F) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut rep = RepSocket::new(fixture.transport());
    within(rep.bind(fixture.bind_target())).await.expect("bind");
    let bound = rep.local_addr().expect("bound");
    let handler = ServiceBuilder::new()
        .layer(from_fn(api_key))
        .service(counted_echo(calls.clone()));
    tokio::spawn(serve(rep, handler));

    let mut req = ReqSocket::new(fixture.transport());
    within(req.connect(fixture.dial_target(&bound)))
        .await
        .expect("connect");
    match within(req.request(Bytes::from("hello"))).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("expected the refusal, got {other:?}"),
    }
    let reply = within(req.request(keyed("hello"))).await.expect("reply");
    assert_eq!(reply, "hello");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

each_transport!(middleware_serves_every_transport);
