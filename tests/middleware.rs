//! `msg::middleware::from_fn` and `from_fn_with_state` over real sockets: a check that
//! refuses a request before the handler with a typed code, a request log with a state of
//! its own, the middleware beside `TraceLayer`, under a concurrency limit, and over every
//! transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use msg::layers::TraceLayer;
use msg::middleware::{from_fn, from_fn_with_state, Next};
use msg::{serve, Code, Error, Message, RepSocket, ReqSocket, Request, Status, Tcp, Transport};
use msg_tests::fixture::Fixture;
use msg_tests::{each_transport, serve_on_loopback, within};
use tokio::sync::{mpsc, oneshot};
use tower::{service_fn, BoxError, ServiceBuilder};

/// The metadata entry a request must carry to reach the handler, and its value.
const KEY: (&str, &str) = ("x-api-key", "secret");

/// Refuses a request without the API key in its metadata.
async fn api_key<A>(req: Request<A>, next: Next<A>) -> Result<Message, BoxError> {
    if req.message().metadata().get_str(KEY.0) != Some(KEY.1) {
        return Err(Status::new(Code::Unauthenticated, "no API key").into());
    }
    next.run(req).await
}

/// Sends `body` with the API key in the request's metadata.
async fn keyed<T: Transport>(req: &ReqSocket<T>, body: &'static str) -> Result<Bytes, Error> {
    let msg = Message::from(body).with_metadata(KEY.0, KEY.1)?;
    Ok(req.send(msg).await?.into_payload())
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

    // With the key in the metadata, the handler gets the request.
    let reply = within(keyed(&req, "hello")).await.expect("reply");
    assert_eq!(reply, "hello");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// One line of the request log: the payload, whether it carried the key, and the code of
/// the failure if it failed.
type Logged = (Bytes, bool, Option<Code>);

/// Logs every request and its outcome into the state it is given.
async fn log_requests<A>(
    log: Arc<Mutex<Vec<Logged>>>,
    req: Request<A>,
    next: Next<A>,
) -> Result<Message, BoxError> {
    let payload = req.payload().clone();
    let keyed = req.message().metadata().get(KEY.0).is_some();
    let outcome = next.run(req).await;
    let code = outcome
        .as_ref()
        .err()
        .map(|e| match e.downcast_ref::<Status>() {
            Some(status) => status.code(),
            None => Code::Internal,
        });
    log.lock().expect("log").push((payload, keyed, code));
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

    let reply = within(keyed(&req, "found")).await.expect("reply");
    assert_eq!(reply, "found");
    match within(keyed(&req, "missing")).await {
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
            (Bytes::from("found"), true, None),
            (Bytes::from("missing"), true, Some(Code::NotFound)),
            (Bytes::from("found"), false, Some(Code::Unauthenticated)),
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
    let first = tokio::spawn(async move { keyed(&client, "first").await });
    let release_first = within(started.recv()).await.expect("the first call starts");
    let client = req.clone();
    let second = tokio::spawn(async move { keyed(&client, "second").await });
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
    let reply = within(keyed(&req, "hello")).await.expect("reply");
    assert_eq!(reply, "hello");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

each_transport!(middleware_serves_every_transport);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_fn_refuses_a_wrong_key_and_the_key_is_not_the_payloads() {
    let calls = Arc::new(AtomicUsize::new(0));
    let handler = ServiceBuilder::new()
        .layer(from_fn(api_key))
        .service(counted_echo(calls.clone()));
    let req = connected(serve_on_loopback(handler).await).await;
    let wrong = Message::from("hello")
        .with_metadata(KEY.0, "guess")
        .unwrap();
    match within(req.send(wrong)).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("expected the refusal, got {other:?}"),
    }
    // The key in the payload is only payload.
    match within(req.request(Bytes::from("x-api-key: secret"))).await {
        Err(Error::Remote { code, .. }) => assert_eq!(code, Code::Unauthenticated),
        other => panic!("expected the refusal, got {other:?}"),
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // The echo gets the payload alone: the metadata does not leak into it.
    assert_eq!(within(keyed(&req, "hello")).await.unwrap(), "hello");
}
