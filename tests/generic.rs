//! Code generic over the transport, as a user writes it: functions that take any
//! `T: Transport`, bind on port 0 (or a fresh path) and connect to the bound socket's
//! `local_addr()`, with a handler that names its request type through `T::Addr`. That it
//! compiles is half the test (the trait states `Target: From<Addr>`); the other half runs it
//! over every transport, the layered ones and `AnyTransport` too.

use std::convert::Infallible;
use std::fmt::Display;
use std::time::Duration;

use bytes::Bytes;
use msg::layers::StreamCompressionLayer;
use msg::{serve, AnyTransport, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Transport};
use msg_tests::fixture::{Fixture, TempDir};
use msg_tests::{each_transport, within};
use tokio_stream::StreamExt;
use tower::{service_fn, Service, ServiceBuilder};

/// A handler for requests over any transport: it answers with the payload and the peer
/// that sent it.
fn greeter<A: Display + Send + 'static>(
) -> impl Service<Request<A>, Response = Bytes, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(|req: Request<A>| async move {
        let text = String::from_utf8_lossy(req.msg()).into_owned();
        Ok::<_, Infallible>(Bytes::from(format!("{text} from {}", req.peer())))
    })
}

/// Serves [`greeter`] on `bind` over `transport` and asks it something, connecting to the
/// address the server reports.
async fn request_reply_over<T: Transport>(transport: T, bind: T::Target) {
    let mut rep = RepSocket::new(transport.clone());
    within(rep.bind(bind)).await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(rep, greeter::<T::Addr>()));

    let mut req = ReqSocket::new(transport);
    within(req.connect(addr)).await.unwrap();
    let reply = within(req.request(Bytes::from("hello"))).await.unwrap();
    let reply = String::from_utf8(reply.to_vec()).unwrap();
    assert!(reply.starts_with("hello from "), "{reply}");
}

/// Publishes on `bind` over `transport` to a subscriber connected to the address the
/// publisher reports.
async fn publish_subscribe_over<T: Transport>(transport: T, bind: T::Target) {
    let mut publisher = PubSocket::new(transport.clone());
    within(publisher.bind(bind)).await.unwrap();
    let addr = publisher.local_addr().unwrap();

    let mut sub = SubSocket::new(transport);
    within(sub.connect(addr.clone())).await.unwrap();
    within(sub.subscribe("prices.>")).await.unwrap();
    within(publisher.publish("prices.eur", Bytes::from("1.08")))
        .await
        .unwrap();
    let msg = within(sub.next()).await.expect("a publication");
    assert_eq!(msg.topic(), "prices.eur");
    assert_eq!(msg.payload(), &Bytes::from("1.08"));
    assert_eq!(msg.publisher(), &addr, "the subscriber sees whom it dialed");
}

/// Both generic bodies over one fixture's transport; the fixture gives only the transport
/// and where to bind, never where to dial.
async fn generic_code_binds_and_dials_the_bound_address<F: Fixture>(f: F) {
    request_reply_over(f.transport(), f.bind_target()).await;
    publish_subscribe_over(f.transport(), f.bind_target()).await;
}

each_transport!(generic_code_binds_and_dials_the_bound_address);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layered_transports_and_any_transport_run_the_same_generic_code() {
    let compressed = ServiceBuilder::new()
        .layer(StreamCompressionLayer::new(3))
        .service(msg::Tcp::default());
    request_reply_over(compressed.clone(), "127.0.0.1:0".into()).await;
    publish_subscribe_over(compressed, "127.0.0.1:0".into()).await;

    let bounded = ServiceBuilder::new()
        .timeout(Duration::from_secs(5))
        .service(msg::Tcp::default());
    request_reply_over(bounded.clone(), "127.0.0.1:0".into()).await;
    publish_subscribe_over(bounded, "127.0.0.1:0".into()).await;

    let dir = TempDir::new();
    let ipc = format!("ipc://{}", dir.path().join("rep.sock").display());
    request_reply_over(AnyTransport::new(), "quic://127.0.0.1:0".into()).await;
    request_reply_over(AnyTransport::new(), ipc.as_str().into()).await;
    publish_subscribe_over(AnyTransport::new(), "tcp://127.0.0.1:0".into()).await;
}
