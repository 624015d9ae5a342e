//! `Router::into_axum` over real HTTP on loopback, with hyper-util's client: the same
//! handlers answer HTTP clients and msg clients, and the codes become HTTP statuses.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{header, Method, Request, StatusCode};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use msg::extract::Peer;
use msg::{serve, Code, Json, RepSocket, ReqSocket, Router, Status, Tcp};
use msg_tests::within;

#[derive(serde::Deserialize, serde::Serialize)]
struct User {
    id: u64,
    name: String,
}

async fn get_user(id: String) -> String {
    format!("user {id}")
}

async fn create(Json(user): Json<User>) -> Json<User> {
    Json(User {
        id: user.id + 1,
        name: user.name,
    })
}

async fn forbidden() -> Result<&'static str, Status> {
    Err(Status::new(Code::PermissionDenied, "not you"))
}

async fn whoami(Peer(peer): Peer<SocketAddr>) -> String {
    peer.ip().to_string()
}

fn app() -> Router {
    Router::new()
        .route("users.get", get_user)
        .route("users.create", create)
        .route("forbidden", forbidden)
        .route("whoami", whoami)
        .route("slow", std::future::pending::<&'static str>)
        .route_layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(50)))
}

/// Serves `app` over HTTP on loopback, with the clients' addresses.
async fn http_server(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    addr
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// POSTs `body` to `path`, and gives the status, the headers named and the body.
async fn post(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    content_type: Option<&str>,
    body: &'static str,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"));
    if let Some(content_type) = content_type {
        request = request.header(header::CONTENT_TYPE, content_type);
    }
    let request = request.body(Full::new(Bytes::from(body))).unwrap();
    let response = within(client.request(request)).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = within(body.collect()).await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_over_http_maps_replies_and_codes_to_statuses() {
    let addr = http_server(app().into_axum()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let (status, headers, body) = post(&client, addr, "/users.get", None, "7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "user 7");
    assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");

    let (status, headers, body) = post(
        &client,
        addr,
        "/users.create",
        Some("application/json"),
        r#"{"id": 1, "name": "ada"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let user: User = serde_json::from_slice(&body).unwrap();
    assert_eq!((user.id, user.name.as_str()), (2, "ada"));

    // The extractor's failure: 400, with the code and serde's reason.
    let (status, headers, body) = post(
        &client,
        addr,
        "/users.create",
        Some("application/json"),
        "{not json",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(headers[msg::router::CODE_HEADER], "invalid_argument");
    assert!(String::from_utf8_lossy(&body).contains("JSON"), "{body:?}");

    // No such route: 404.
    let (status, headers, body) = post(&client, addr, "/users.delete", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[msg::router::CODE_HEADER], "not_found");
    assert!(String::from_utf8_lossy(&body).contains("users.delete"));

    // The route layer's timeout: 504.
    let (status, headers, _) = post(&client, addr, "/slow", None, "").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(headers[msg::router::CODE_HEADER], "deadline_exceeded");

    // Any other code: 500, the code named.
    let (status, headers, body) = post(&client, addr, "/forbidden", None, "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers[msg::router::CODE_HEADER], "permission_denied");
    assert_eq!(body, "not you");

    // The HTTP client's address, through `Peer<SocketAddr>`.
    let (status, _, body) = post(&client, addr, "/whoami", None, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "127.0.0.1");

    // A route too long for msg's wire: 400 before any handler.
    let long = format!("/{}", "r".repeat(msg::MAX_ROUTE_LEN + 1));
    let (status, _, _) = post(&client, addr, &long, None, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_router_answers_msg_clients_and_http_clients_side_by_side() {
    let router = app();
    let http = http_server(
        axum::Router::new()
            .route("/health", axum::routing::get(|| async { "ok" }))
            .merge(router.clone().into_axum()),
    )
    .await;
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(rep, router));
    let mut req = ReqSocket::new(Tcp::default());
    within(req.connect(addr)).await.unwrap();

    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let (status, _, body) = post(&client, http, "/users.get", None, "3").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("user 3")));
    assert_eq!(
        within(req.request_to("users.get", "3")).await.unwrap(),
        "user 3"
    );
    // The same peer extractor answers each with its own client's address type.
    assert_eq!(
        within(req.request_to("whoami", "")).await.unwrap(),
        "127.0.0.1"
    );
    let health = Request::get(format!("http://{http}/health"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = within(client.request(health)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_headers_and_authorization_reach_the_handler_as_metadata_and_cookies_do_not() {
    async fn seen(metadata: msg::Metadata) -> String {
        let mut names: Vec<String> = metadata
            .iter()
            .map(|(name, value)| format!("{name}={}", String::from_utf8_lossy(value)))
            .collect();
        names.sort();
        names.join(",")
    }
    let addr = http_server(Router::new().route("seen", seen).into_axum()).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}/seen"))
        .header("x-api-key", "secret")
        .header(header::AUTHORIZATION, "Bearer t")
        .header(header::COOKIE, "session=1")
        .header(header::USER_AGENT, "test")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = within(client.request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = within(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(body, "authorization=Bearer t,x-api-key=secret");
}
