//! What a `msg::Router` costs on the server: one route and a fallback, against `msg::serve`
//! with a bare `service_fn` echo, 64 B requests, in the same run (`--profile router`).
//!
//! Both servers get the same bytes: every request names the route `echo` (the bare handler
//! ignores it), so that the rows differ only by the router on the server. The client is the
//! same in both: 64 `oneshot` calls in flight from one task, refilled as they finish.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::{serve, Message, RepSocket, ReqSocket, Request, Route, Router, Tcp};
use tower::{service_fn, ServiceExt};

/// A client connected to a server of the kind asked: the router or the bare handler.
async fn connected(routed: bool) -> ReqSocket<Tcp> {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    if routed {
        let router = Router::new()
            .route("echo", |body: Bytes| async move { body })
            .fallback(|| async { "no route" });
        tokio::spawn(serve(rep, router));
    } else {
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
        ));
    }
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.expect("connect");
    req
}

/// Requests per second of `total` routed requests of `size` bytes, 64 in flight.
pub(crate) async fn rate(routed: bool, size: usize, total: usize) -> f64 {
    let req = connected(routed).await;
    let route = Route::from_static("echo");
    let payload = Bytes::from(vec![b'x'; size]);
    let request = || Message::new(payload.clone()).with_route(route.clone());
    // Warm-up: the connection, the router's table.
    for _ in 0..1_000 {
        req.clone().oneshot(request()).await.expect("reply");
    }
    let t = Instant::now();
    let mut calls = FuturesUnordered::new();
    let (mut sent, mut done) = (0, 0);
    while done < total {
        while sent < total && calls.len() < 64 {
            calls.push(req.clone().oneshot(request()));
            sent += 1;
        }
        if let Some(reply) = calls.next().await {
            assert_eq!(reply.expect("reply").payload().len(), size);
            done += 1;
        }
    }
    total as f64 / t.elapsed().as_secs_f64()
}
