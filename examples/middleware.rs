//! Middleware as async functions: `msg::middleware::from_fn` for an API-key check that
//! refuses a request before the handler, and `from_fn_with_state` for a request log that
//! counts requests in a state of its own. Run with `cargo run -p msg-examples --example
//! middleware`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use msg::layers::TraceLayer;
use msg::middleware::{from_fn, from_fn_with_state, Next};
use msg::{serve, Code, Message, RepSocket, ReqSocket, Request, Status, Tcp};
use tower::{service_fn, BoxError, ServiceBuilder};

/// Refuses a request without the API key in its metadata (`x-api-key: secret`, which an
/// HTTP client sends as a header through `Router::into_axum`): the client gets
/// `Error::Remote` with `Code::Unauthenticated`, and the handler never runs.
async fn api_key(req: Request<SocketAddr>, next: Next<SocketAddr>) -> Result<Message, BoxError> {
    if req.message().metadata().get_str("x-api-key") != Some("secret") {
        return Err(Status::new(Code::Unauthenticated, "no API key").into());
    }
    next.run(req).await
}

/// Logs each request, its outcome and its time, and counts them.
async fn log(
    served: Arc<AtomicU64>,
    req: Request<SocketAddr>,
    next: Next<SocketAddr>,
) -> Result<Message, BoxError> {
    let n = served.fetch_add(1, Ordering::Relaxed) + 1;
    let peer = *req.peer();
    let size = req.payload().len();
    let start = Instant::now();
    let outcome = next.run(req).await;
    let outcome_text = match &outcome {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("failed: {e}"),
    };
    println!(
        "request #{n} from {peer}, {size} B: {outcome_text} in {:?}",
        start.elapsed()
    );
    outcome
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let served = Arc::new(AtomicU64::new(0));
    let handler = ServiceBuilder::new()
        .layer(TraceLayer::new())
        .layer(from_fn_with_state(served.clone(), log))
        .layer(from_fn(api_key))
        .service(service_fn(|req: Request<SocketAddr>| async move {
            Ok::<_, BoxError>(Bytes::from(format!(
                "hello, {}",
                String::from_utf8_lossy(req.payload())
            )))
        }));

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, handler));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;

    let keyed = Message::from("world").with_metadata("x-api-key", "secret")?;
    let reply = req.send(keyed).await?;
    println!("with the key: {}", String::from_utf8_lossy(reply.payload()));

    match req.request(Bytes::from("world")).await {
        Err(msg::Error::Remote { code, message }) => {
            println!("without it: refused, {code:?}: {message}");
            assert_eq!(code, Code::Unauthenticated);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(served.load(Ordering::Relaxed), 2);
    Ok(())
}
