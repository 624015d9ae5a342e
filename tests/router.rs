//! `msg::Router` over real sockets: routes on the wire, handlers as async functions with
//! extractors, state, nesting, layers on every route or on the matched ones only, the
//! fallback, `Cancelled`, and one handler over every transport.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg::extract::{Cancelled, Extension, Headers, Metadata, Peer, Route, State};
use msg::router::{AnyPeer, RouteService};
use msg::{
    serve, Code, Error, Json, Message, RepSocket, ReqSocket, Request, RouteError, Router, Status,
    Tcp,
};
use msg_tests::fixture::Fixture;
use msg_tests::{answered_again, each_transport, encode, read_frame_buffered, within};
use tokio::sync::mpsc;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// Serves `router` on a TCP loopback socket, and gives a client connected to it.
async fn served(router: Router) -> ReqSocket<Tcp> {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, router));
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.expect("connect");
    req
}

/// The code of the remote error `result` must be.
#[track_caller]
fn remote_code<T: std::fmt::Debug>(result: Result<T, Error>) -> Code {
    match result {
        Err(Error::Remote { code, .. }) => code,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

async fn get_user(id: String) -> String {
    format!("user {id}")
}

async fn list_users() -> &'static str {
    "ada, grace"
}

async fn fallback(route: Option<Route>, body: Bytes) -> String {
    match route {
        Some(route) => format!("fallback for {route}: {}", body.len()),
        None => format!("fallback without a route: {}", body.len()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_routes_and_a_fallback_share_one_socket() {
    let router = Router::new()
        .route("users.get", get_user)
        .route("users.list", list_users)
        .fallback(fallback);
    let req = served(router).await;
    assert_eq!(
        within(req.request_to("users.get", "7")).await.unwrap(),
        "user 7"
    );
    assert_eq!(
        within(req.request_to("users.list", "")).await.unwrap(),
        "ada, grace"
    );
    assert_eq!(
        within(req.request_to("users.delete", "xyz")).await.unwrap(),
        "fallback for users.delete: 3"
    );
    // A request without a route, the book's way, reaches the fallback too.
    assert_eq!(
        within(req.request(Bytes::from("ab"))).await.unwrap(),
        "fallback without a route: 2"
    );
    // The tower way: a message naming its route.
    let mut client = req.clone();
    let msg = Message::from("9").with_route(msg::Route::from_static("users.get"));
    let reply = within(client.ready().await.unwrap().call(msg))
        .await
        .unwrap();
    assert_eq!(reply.payload(), "user 9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_route_fails_with_not_found_without_a_fallback() {
    let req = served(Router::new().route("users.get", get_user)).await;
    let err = within(req.request_to("users.delete", "7"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code: Code::NotFound, message } if message.contains("users.delete")),
        "{err:?}"
    );
    let err = within(req.request(Bytes::from("7"))).await.unwrap_err();
    assert_eq!(remote_code::<Bytes>(Err(err)), Code::NotFound);
    // The socket serves on.
    assert_eq!(
        within(req.request_to("users.get", "1")).await.unwrap(),
        "user 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_over_the_limit_is_refused_on_the_client_and_nothing_is_sent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let router = Router::new().fallback(move || {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            "fallback"
        }
    });
    let req = served(router).await;
    let long = "r".repeat(msg::MAX_ROUTE_LEN + 1);
    let err = within(req.request_to(long, "x")).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidRoute(RouteError::TooLong { len: 256, max: 255 })
        ),
        "{err:?}"
    );
    let err = within(req.request_to(String::new(), "x"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidRoute(RouteError::Empty)),
        "{err:?}"
    );
    // The longest route passes, and the connection was never touched by the refusals.
    let longest = "r".repeat(msg::MAX_ROUTE_LEN);
    assert_eq!(
        within(req.request_to(longest, "x")).await.unwrap(),
        "fallback"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(req.stats().connected);
}

#[derive(Clone, Default)]
struct Counter {
    hits: Arc<AtomicUsize>,
}

async fn hit(State(counter): State<Counter>) -> String {
    (counter.hits.fetch_add(1, Ordering::SeqCst) + 1).to_string()
}

async fn read(State(counter): State<Counter>) -> Json<usize> {
    Json(counter.hits.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_shared_by_the_routes_and_the_clones_of_the_router() {
    let counter = Counter::default();
    let router = Router::new()
        .route("hit", hit)
        .route("read", read)
        .with_state(counter.clone());
    let one = served(router.clone()).await;
    let two = served(router).await;
    for _ in 0..3 {
        within(one.request_to("hit", "")).await.unwrap();
        within(two.request_to("hit", "")).await.unwrap();
    }
    assert_eq!(within(one.request_to("read", "")).await.unwrap(), "6");
    assert_eq!(counter.hits.load(Ordering::SeqCst), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_router_answers_under_its_prefix_with_its_own_fallback() {
    async fn users_fallback(route: Route) -> String {
        format!("no such user operation: {route}")
    }
    let users = Router::new()
        .route("get", get_user)
        .route("list", list_users)
        .fallback(users_fallback);
    let admin = Router::new().route("list", || async { "root" });
    let router = Router::new()
        .nest("users", users)
        .nest("admin.", admin)
        .route("health", || async { "ok" });
    assert_eq!(
        router.routes(),
        vec!["admin.list", "health", "users.get", "users.list"]
    );
    let req = served(router).await;
    assert_eq!(
        within(req.request_to("users.get", "3")).await.unwrap(),
        "user 3"
    );
    assert_eq!(
        within(req.request_to("admin.list", "")).await.unwrap(),
        "root"
    );
    assert_eq!(within(req.request_to("health", "")).await.unwrap(), "ok");
    // The prefix alone is no route.
    assert_eq!(
        remote_code(within(req.request_to("get", "3")).await),
        Code::NotFound
    );
    // An unknown route under the prefix: the nested router's fallback.
    assert_eq!(
        within(req.request_to("users.delete", "")).await.unwrap(),
        "no such user operation: users.delete"
    );
    // Elsewhere: the outer router's (none: not found).
    assert_eq!(
        remote_code(within(req.request_to("admin.delete", "")).await),
        Code::NotFound
    );
}

/// A layer that refuses every request with `PermissionDenied`, counting what it saw.
#[derive(Clone)]
struct Deny(Arc<AtomicUsize>);

impl Layer<RouteService> for Deny {
    type Service = Denied;

    fn layer(&self, _inner: RouteService) -> Denied {
        Denied(self.0.clone())
    }
}

#[derive(Clone)]
struct Denied(Arc<AtomicUsize>);

impl Service<Request<AnyPeer>> for Denied {
    type Response = Message;
    type Error = Status;
    type Future = std::future::Ready<Result<Message, Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<AnyPeer>) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Err(Status::new(Code::PermissionDenied, "denied")))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_layer_wraps_the_matched_routes_only_and_layer_the_fallback_too() {
    let seen = Arc::new(AtomicUsize::new(0));
    let req = served(
        Router::new()
            .route("users.get", get_user)
            .route_layer(Deny(seen.clone()))
            // Added after the route layer: not wrapped by it.
            .route("health", || async { "ok" }),
    )
    .await;
    assert_eq!(
        remote_code(within(req.request_to("users.get", "1")).await),
        Code::PermissionDenied
    );
    // An unknown route is not found: the route layer never saw it.
    assert_eq!(
        remote_code(within(req.request_to("users.delete", "1")).await),
        Code::NotFound
    );
    assert_eq!(within(req.request_to("health", "")).await.unwrap(), "ok");
    assert_eq!(seen.load(Ordering::SeqCst), 1);

    let seen = Arc::new(AtomicUsize::new(0));
    let req = served(
        Router::new()
            .route("users.get", get_user)
            .layer(Deny(seen.clone())),
    )
    .await;
    assert_eq!(
        remote_code(within(req.request_to("users.get", "1")).await),
        Code::PermissionDenied
    );
    // `layer` wraps the fallback too: the unknown route meets it.
    assert_eq!(
        remote_code(within(req.request_to("users.delete", "1")).await),
        Code::PermissionDenied
    );
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extractor_that_fails_answers_with_its_code_and_the_handler_never_runs() {
    #[derive(serde::Deserialize)]
    struct NewUser {
        name: String,
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let create = {
        let runs = runs.clone();
        move |Json(user): Json<NewUser>| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                format!("created {}", user.name)
            }
        }
    };
    let echo_text = {
        let runs = runs.clone();
        move |text: String| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                text
            }
        }
    };
    let who = |Extension(user): Extension<&'static str>| async move { user };
    let req = served(
        Router::new()
            .route("users.create", create)
            .route("echo", echo_text)
            .route("who", who),
    )
    .await;
    let err = within(req.request_to("users.create", "{\"nom\": 1}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code: Code::InvalidArgument, message } if message.contains("name")),
        "{err:?}"
    );
    assert_eq!(
        remote_code(within(req.request_to("users.create", "not json")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        remote_code(within(req.request_to("echo", Bytes::from_static(b"\xff\xfe"))).await),
        Code::InvalidArgument
    );
    // No layer attached the extension: the server's mistake, internal.
    assert_eq!(
        remote_code(within(req.request_to("who", "")).await),
        Code::Internal
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no handler ran");
    assert_eq!(
        within(req.request_to("users.create", "{\"name\": \"ada\"}"))
            .await
            .unwrap(),
        "created ada"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractors_read_the_peer_the_headers_and_the_extensions_a_layer_attached() {
    let describe = |Peer(peer): Peer<SocketAddr>,
                    headers: Headers,
                    route: Route,
                    Extension(tag): Extension<&'static str>,
                    msg: Message| async move {
        format!(
            "{} {} {route} {tag} {}",
            peer.ip(),
            headers.encoding,
            msg.payload().len()
        )
    };
    let wrong_peer = |Peer(path): Peer<std::path::PathBuf>| async move { format!("{path:?}") };
    let req = served(
        Router::new()
            .route("describe", describe)
            .route("wrong", wrong_peer)
            .layer(Extension("tagged")),
    )
    .await;
    assert_eq!(
        within(req.request_to("describe", "four")).await.unwrap(),
        "127.0.0.1 identity describe tagged 4"
    );
    // A peer address of another type than the socket's is the server's mistake.
    let err = within(req.request_to("wrong", "")).await.unwrap_err();
    assert!(
        matches!(&err, Error::Remote { code: Code::Internal, message } if message.contains("SocketAddr")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_fires_when_the_client_gives_up_and_not_when_the_call_finishes() {
    let (started_tx, mut started) = mpsc::channel::<()>(4);
    let (fired_tx, mut fired) = mpsc::channel::<&'static str>(4);
    let slow = {
        let (started_tx, fired_tx) = (started_tx.clone(), fired_tx.clone());
        move |cancelled: Cancelled| {
            let (started_tx, fired_tx) = (started_tx.clone(), fired_tx.clone());
            async move {
                tokio::spawn(async move {
                    cancelled.await;
                    let _ = fired_tx.send("slow").await;
                });
                let _ = started_tx.send(()).await;
                std::future::pending::<()>().await;
            }
        }
    };
    let quick = move |cancelled: Cancelled| {
        let fired_tx = fired_tx.clone();
        async move {
            tokio::spawn(async move {
                cancelled.await;
                let _ = fired_tx.send("quick").await;
            });
            "done"
        }
    };
    let req = served(Router::new().route("slow", slow).route("quick", quick)).await;
    // A call that finishes: its `Cancelled` never fires.
    assert_eq!(within(req.request_to("quick", "")).await.unwrap(), "done");
    // A call the client gives up on once it has started.
    {
        let request = req.request_to("slow", "");
        tokio::pin!(request);
        tokio::select! {
            reply = &mut request => panic!("the slow call answered: {reply:?}"),
            _ = within(started.recv()) => {}
        }
        // Dropped here: the client sends a cancel.
    }
    assert_eq!(within(fired.recv()).await, Some("slow"));
    // Only the given-up call fired: the server's connection still serves, and another
    // finished call adds nothing.
    assert_eq!(within(req.request_to("quick", "")).await.unwrap(), "done");
    assert!(
        fired.try_recv().is_err(),
        "a finished call's Cancelled fired"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_keeps_its_route_through_compression_both_ways() {
    let router = Router::new().route("echo", |body: Bytes| async move { body });
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        ServiceBuilder::new()
            .layer(msg::layers::GzipLayer::new(6))
            .service(router),
    ));
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();
    let mut client = ServiceBuilder::new()
        .layer(msg::layers::GzipLayer::new(6))
        .service(req);
    let payload = Bytes::from("compressible ".repeat(1000));
    let msg = Message::new(payload.clone()).with_route(msg::Route::from_static("echo"));
    let reply = within(client.ready().await.unwrap().call(msg))
        .await
        .unwrap();
    assert_eq!(reply.payload(), &payload);
}

/// One router, written once with no address type, served over each transport.
fn any_transport_router() -> Router {
    async fn whoami(route: Route, peer: AnyPeer, text: String) -> String {
        let _ = format!("{peer:?}");
        format!("{route}: {text}")
    }
    Router::new().route("whoami", whoami)
}

async fn the_same_router_serves_every_transport<F: Fixture>(fixture: F) {
    let mut rep = RepSocket::new(fixture.transport());
    rep.bind(fixture.bind_target()).await.expect("bind");
    let bound = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, any_transport_router()));
    let mut req = ReqSocket::new(fixture.transport());
    within(req.connect(fixture.dial_target(&bound)))
        .await
        .expect("connect");
    assert_eq!(
        within(req.request_to("whoami", "hi")).await.unwrap(),
        "whoami: hi"
    );
    assert_eq!(
        remote_code(within(req.request_to("nobody", "hi")).await),
        Code::NotFound
    );
}

each_transport!(the_same_router_serves_every_transport);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_serves_a_connection_of_your_own_and_send_request_names_routes() {
    use msg::conn::{client, server};
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    tokio::spawn(server::serve_connection(
        server_io,
        "in-process",
        Router::new().route("users.get", get_user),
    ));
    let (sender, conn) = within(client::handshake(client_io, msg::ReqOptions::default()))
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_eq!(
        within(sender.request_to("users.get", "5")).await.unwrap(),
        "user 5"
    );
    assert_eq!(
        remote_code(within(sender.request_to("users.put", "5")).await),
        Code::NotFound
    );
    let err = within(sender.request_to("x".repeat(300), "5"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRoute(_)), "{err:?}");
}

/// A server from before routes, as the wire sees it: it welcomes a req client and echoes
/// its requests, and at a request with a topic (a route) its header check fails, and it
/// closes the connection, as such a server does on any protocol error.
async fn server_from_before_routes() -> SocketAddr {
    use msg::wire::{welcome_frame, FrameKind, HEADER_LEN};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = bytes::BytesMut::new();
                if read_frame_buffered(&mut stream, &mut buf).await.is_none() {
                    return;
                }
                let welcome = encode(welcome_frame(msg::SocketType::Rep));
                if stream.write_all(&welcome).await.is_err() {
                    return;
                }
                loop {
                    while buf.len() < HEADER_LEN {
                        match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                    if buf[6..8] != [0, 0] {
                        // "bad topic: this frame kind carries no topic": closed.
                        return;
                    }
                    let Some(frame) = read_frame_buffered(&mut stream, &mut buf).await else {
                        return;
                    };
                    if frame.kind == FrameKind::Request {
                        let reply =
                            msg::wire::Frame::new(FrameKind::Response, frame.id, frame.payload);
                        if stream.write_all(&encode(reply)).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routed_request_to_a_server_from_before_routes_fails_at_once_and_the_client_comes_back() {
    let addr = server_from_before_routes().await;
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("plain"))).await.unwrap(),
        "plain"
    );
    let err = within(req.request_to("users.get", "1")).await.unwrap_err();
    assert!(matches!(err, Error::ConnectionClosed), "{err:?}");
    // The client redials, and requests without a route are served as before.
    answered_again(&req, "again").await;
}

async fn tenant(metadata: Metadata, route: Route) -> String {
    format!(
        "{route} for {}",
        metadata.get_str("x-tenant").unwrap_or("nobody")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_reads_the_metadata_its_request_carried_beside_the_route() {
    let req = served(Router::new().route("users.get", tenant)).await;
    let msg = Message::from("1")
        .with_route(Route::from_static("users.get"))
        .with_metadata("X-Tenant", "acme")
        .unwrap();
    let reply = within(req.send(msg)).await.unwrap();
    assert_eq!(reply.payload(), "users.get for acme");
    // Without metadata, the same route, nothing carried.
    assert_eq!(
        within(req.request_to("users.get", "1")).await.unwrap(),
        "users.get for nobody"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_over_its_limit_fails_that_request_alone_and_nothing_is_sent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let router = Router::new().route("users.get", move |metadata: Metadata| {
        let counted = counted.clone();
        async move {
            counted.fetch_add(1, Ordering::SeqCst);
            format!("{} entries", metadata.len())
        }
    });
    let req = served(router).await;
    let mut msg = Message::from("1").with_route(Route::from_static("users.get"));
    for name in ["a", "b", "c"] {
        msg.metadata_mut().insert(name, vec![b'v'; 3000]).unwrap();
    }
    let err = within(req.send(msg.clone())).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidMetadata(msg::MetadataError::TooLong { max: 8192, .. })
        ),
        "{err:?}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    // Two of the three fit: sent and answered, on the connection the refusal left alone.
    msg.metadata_mut().remove("c");
    let reply = within(req.send(msg)).await.unwrap();
    assert_eq!(reply.payload(), "2 entries");
    assert!(req.stats().connected);
}
