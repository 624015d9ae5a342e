//! Request/Reply the tower way: a `ServiceBuilder` stack over a `ReqSocket` on the client,
//! and `msg::serve` running a `service_fn` behind tower's own layers on the server.
//!
//! Run with `cargo run -p msg-examples --example reqrep_tower`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use msg::{serve, Message, RepSocket, ReqSocket, Request, Tcp};
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The server: an uppercasing handler behind a concurrency limit and a timeout.
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");

    let handler = ServiceBuilder::new()
        .concurrency_limit(128)
        .timeout(Duration::from_secs(1))
        .service(service_fn(|req: Request<SocketAddr>| async move {
            if req.msg().is_empty() {
                return Err::<Bytes, BoxError>("empty request".into());
            }
            Ok(Bytes::from(req.msg().to_ascii_uppercase()))
        }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(rep, handler).with_graceful_shutdown(async {
        let _ = stopped.await;
    }));

    // The client: a timeout layer over the socket.
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;
    let mut client = ServiceBuilder::new()
        .timeout(Duration::from_secs(2))
        .service(req);

    for word in ["hello", "tower", "world"] {
        let reply = client.ready().await?.call(Message::from(word)).await?;
        println!("{word} -> {:?}", reply.payload());
    }
    match client.ready().await?.call(Message::from("")).await {
        Ok(reply) => println!("unexpected reply {reply:?}"),
        Err(e) => println!("empty request -> error: {e}"),
    }

    // A handler may also be a plain closure returning the payload type itself.
    let _ = service_fn(|_: Request<SocketAddr>| async { Ok::<_, Infallible>(Message::from("ok")) });

    stop.send(()).ok();
    server.await??;
    println!("server drained and stopped");
    Ok(())
}
