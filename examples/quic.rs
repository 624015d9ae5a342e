//! The book's QUIC example, bound to loopback, then a round trip.
//!
//! `Quic::default()` encrypts with a self-signed certificate and does not authenticate the
//! server; use `Quic::with_tls` with real certificates in production.
//!
//! Run with `cargo run -p msg-examples --example quic`.

use bytes::Bytes;
use msg::{Quic, RepSocket, ReqSocket};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() {
    // Initialize the reply socket (server side) with default QUIC
    let mut rep = RepSocket::new(Quic::default());
    // Bind the socket to the address. This will start listening for incoming connections.
    // This method does DNS resolution internally, so you can use hostnames here.
    rep.bind("127.0.0.1:4444").await.unwrap();

    // Initialize the request socket (client side) with default QUIC
    let mut req = ReqSocket::new(Quic::default());
    // Connect the socket to the address. This will initiate a connection to the server.
    // This method does DNS resolution internally, so you can use hostnames here.
    req.connect("127.0.0.1:4444").await.unwrap();

    tokio::spawn(async move {
        let req = rep.next().await.unwrap();
        req.respond(Bytes::from("world")).unwrap();
    });
    let res = req.request(Bytes::from("hello")).await.unwrap();
    println!("Response over QUIC: {:?}", res);
}
