//! The book's IPC example, with the socket in a temporary directory, then a round trip.
//!
//! Run with `cargo run -p msg-examples --example ipc`.

use bytes::Bytes;
use msg::{Ipc, RepSocket, ReqSocket};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() {
    let path = std::env::temp_dir().join(format!("msg-example-{}.sock", std::process::id()));
    let path = path.to_str().expect("a UTF-8 temp path");

    // Initialize the reply socket (server side) with default IPC
    let mut rep = RepSocket::new(Ipc::default());
    // Bind the socket to the address. This will start listening for incoming connections.
    // You can use any path that is valid for a Unix Domain Socket.
    rep.bind(path).await.unwrap();

    // Initialize the request socket (client side) with default IPC
    let mut req = ReqSocket::new(Ipc::default());
    // Connect the socket to the address. This will initiate a connection to the server.
    req.connect(path).await.unwrap();

    tokio::spawn(async move {
        let req = rep.next().await.unwrap();
        println!("Request from {}: {:?}", req.peer(), req.msg());
        req.respond(Bytes::from("world")).unwrap();
    });
    let res = req.request(Bytes::from("hello")).await.unwrap();
    println!("Response: {:?}", res);
}
