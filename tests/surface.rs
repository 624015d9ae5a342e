//! The public surface as a user meets it, over real sockets on loopback: a request's
//! payload under both its names, errors that reach events as they are, and the retry
//! policy's refusal to retry what no retry can fix.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use msg::retry::RetryPolicy;
use msg::tls::{client_config, TestPki};
use msg::{
    serve, Error, Message, Quic, RepSocket, ReqOptions, ReqSocket, Request, SocketEvent, Tls,
};
use msg_tests::fixture::tls_configs;
use msg_tests::within;
use tokio_stream::StreamExt;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// A TLS reply socket on loopback, with the test PKI's certificate, that echoes.
async fn tls_echo() -> SocketAddr {
    let (server, _) = tls_configs();
    let mut rep = RepSocket::new(Tls::server(server));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.payload().clone()) }),
    ));
    addr
}

/// A TLS client that trusts another CA than the test PKI's: it refuses the server.
fn untrusting_client() -> Tls {
    let stranger = TestPki::generate(&["localhost"]).unwrap();
    Tls::client(
        client_config(stranger.ca_pem.as_bytes()).unwrap(),
        "localhost",
    )
    .unwrap()
}

/// Counts the calls that reach `inner`: the attempts a retry layer above it makes.
fn counted<T: msg::Transport>(
    inner: ReqSocket<T>,
    calls: Arc<AtomicUsize>,
) -> impl tower::Service<Message, Response = Message, Error = Error, Future: Send> + Clone {
    service_fn(move |msg: Message| {
        calls.fetch_add(1, Ordering::SeqCst);
        inner.clone().oneshot(msg)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_gives_the_same_bytes_as_payload_and_as_the_books_msg() {
    let mut rep = RepSocket::new(msg::Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::new(msg::Tcp::default());
    req.connect(addr).await.unwrap();
    let server = tokio::spawn(async move {
        let pending = within(rep.next()).await.unwrap();
        assert_eq!(pending.payload(), pending.msg());
        assert_eq!(pending.request().payload(), pending.request().msg());
        let echoed = pending.payload().clone();
        pending.respond(echoed).unwrap();
    });
    let reply = within(req.request(Bytes::from_static(b"same bytes")))
        .await
        .unwrap();
    assert_eq!(reply, "same bytes");
    within(server).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_dial_reaches_the_events_as_the_transport_error_itself() {
    let addr = tls_echo().await;
    let mut req = ReqSocket::new(untrusting_client());
    let mut events = req.events();
    let returned = within(req.connect(addr)).await.unwrap_err();
    assert_eq!(returned.kind(), "transport", "{returned:?}");
    let event = within(events.next()).await.unwrap();
    let SocketEvent::ConnectFailed { error } = event else {
        panic!("{event:?}");
    };
    // The same error as the caller's, not a copy of its text as an I/O error.
    assert_eq!(error.kind(), "transport", "{error:?}");
    assert_eq!(error.to_string(), returned.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_policy_never_retries_a_server_certificate_the_client_does_not_trust() {
    let addr = tls_echo().await;
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(500));
    let mut req = ReqSocket::with_options(untrusting_client(), options);
    req.connect_lazy(addr).unwrap();
    let (error, calls) = under_an_idempotent_retry_policy(req).await;
    assert_eq!(error.kind(), "transport", "{error:?}");
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(calls, 1, "one attempt, no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_policy_never_retries_a_transport_without_the_configuration_to_dial() {
    let addr = tls_echo().await;
    // A TLS transport with a server side only cannot dial.
    let (server, _) = tls_configs();
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(500));
    let mut req = ReqSocket::with_options(Tls::server(server), options);
    req.connect_lazy(addr).unwrap();
    let (error, calls) = under_an_idempotent_retry_policy(req).await;
    assert_eq!(error.kind(), "transport", "{error:?}");
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(calls, 1, "one attempt, no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_policy_never_retries_a_quic_server_certificate_the_client_does_not_trust() {
    let (server, client) = tls_configs();
    let mut rep = RepSocket::new(Quic::with_tls(Some(server), client, "localhost").unwrap());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.payload().clone()) }),
    ));
    let stranger = TestPki::generate(&["localhost"]).unwrap();
    let untrusting = client_config(stranger.ca_pem.as_bytes()).unwrap();
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(500));
    let mut req = ReqSocket::with_options(
        Quic::with_tls(None, untrusting, "localhost").unwrap(),
        options,
    );
    req.connect_lazy(addr).unwrap();
    let (error, calls) = under_an_idempotent_retry_policy(req).await;
    assert_eq!(error.kind(), "transport", "{error:?}");
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(calls, 1, "one attempt, no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_policy_never_retries_a_client_the_server_refuses_for_its_missing_certificate() {
    // Mutual TLS: the server requires a client certificate, and this client has none. Under
    // TLS 1.3 the refusal comes after the client's side of the handshake, as an I/O error.
    let pki = msg_tests::fixture::pki();
    let server = msg::tls::server_config_mtls(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        pki.ca_pem.as_bytes(),
    )
    .unwrap();
    let mut rep = RepSocket::new(Tls::server(server));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.payload().clone()) }),
    ));
    let without = Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
    let options = ReqOptions::default().reconnect_wait(Duration::from_millis(500));
    let mut req = ReqSocket::with_options(without, options);
    req.connect_lazy(addr).unwrap();
    let (error, calls) = under_an_idempotent_retry_policy(req).await;
    assert!(error.is_permanent(), "{error:?}");
    assert_eq!(calls, 1, "one attempt, no retry");
}

/// The book's authentication example, with its imports as the book writes them
/// (`tcp::{self, Tcp}`), on loopback: the token reaches the server's authenticator.
#[tokio::test]
async fn the_books_authentication_example_compiles_with_its_imports_and_runs() {
    use msg::{
        tcp::{self, Tcp},
        Authenticator, RepSocket, ReqSocket,
    };

    struct Auth(std::sync::mpsc::Sender<Bytes>);

    impl Authenticator for Auth {
        fn authenticate(&self, id: &Bytes) -> bool {
            let _ = self.0.send(id.clone());
            true
        }
    }

    let _: Option<tcp::Endpoint> = None;
    let (seen, ids) = std::sync::mpsc::channel();
    let mut rep = RepSocket::new(Tcp::default()).with_auth(Auth(seen));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::with_options(
        Tcp::default(),
        msg::ReqOptions::default().auth_token(Bytes::from("client1")),
    );
    req.connect(addr).await.unwrap();
    tokio::spawn(async move {
        let request = rep.next().await.unwrap();
        request.respond(Bytes::from("world")).unwrap();
    });
    let reply = within(req.request(Bytes::from("hello"))).await.unwrap();
    assert_eq!(reply, "world");
    assert_eq!(ids.try_recv().unwrap(), "client1");
}

/// Sends one request through `req` under a retry policy that retries anything retryable
/// (idempotent, three retries, short backoff); returns the error it ended with and how many
/// attempts reached the socket.
async fn under_an_idempotent_retry_policy<T: msg::Transport>(req: ReqSocket<T>) -> (Error, usize) {
    let calls = Arc::new(AtomicUsize::new(0));
    let policy = RetryPolicy::default()
        .idempotent(true)
        .max_retries(3)
        .backoff(msg::Backoff::default().max(Duration::from_millis(20)));
    let svc = ServiceBuilder::new()
        .layer(tower::retry::RetryLayer::new(policy))
        .service(counted(req, calls.clone()));
    let outcome = within(svc.oneshot(Message::from("never sent"))).await;
    (outcome.unwrap_err(), calls.load(Ordering::SeqCst))
}

/// The doc examples a user of `msg` reads import from `msg`: no `///` code block in the
/// library crates names `msg_core::`, `msg_layers::` or `msg_transports::` (a user of `msg`
/// cannot compile those), nor does a module doc of `msg` itself. The modules `msg` does not
/// re-export (the sans-IO roles, the write buffer, the heartbeat) keep their crate's paths.
#[test]
fn doc_examples_import_from_msg_only() {
    const INNER: [&str; 3] = ["msg_core::", "msg_layers::", "msg_transports::"];
    const NOT_REEXPORTED: [&str; 3] = ["msg-core/src/proto/", "write_buf.rs", "heartbeat.rs"];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    let mut dirs: Vec<_> = ["msg", "msg-core", "msg-layers", "msg-transports"]
        .iter()
        .map(|krate| root.join(krate).join("src"))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 40, "the crates' sources were not found");
    let mut found = Vec::new();
    for path in &files {
        let name = path.to_string_lossy().replace('\\', "/");
        if NOT_REEXPORTED.iter().any(|skip| name.contains(skip)) {
            continue;
        }
        let in_msg = name.contains("/msg/src/");
        let text = std::fs::read_to_string(path).unwrap();
        let mut in_code = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            let doc = match line.strip_prefix("///") {
                Some(doc) => doc,
                None if in_msg => match line.strip_prefix("//!") {
                    Some(doc) => doc,
                    None => continue,
                },
                None => continue,
            };
            if doc.trim_start().starts_with("```") {
                in_code = !in_code;
            } else if in_code && INNER.iter().any(|inner| doc.contains(inner)) {
                found.push(format!("{name}:{}: {}", n + 1, doc.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "doc examples a user of msg cannot compile:\n{}",
        found.join("\n")
    );
}
