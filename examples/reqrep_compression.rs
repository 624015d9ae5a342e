//! The book's Request/Reply compression example, on loopback: both sides compress with
//! gzip at level 6; neither needs to know what the other uses, as every message says how it
//! is encoded.
//!
//! Run with `cargo run -p msg-examples --example reqrep_compression`.

use bytes::Bytes;
use msg::{compression::GzipCompressor, RepSocket, ReqSocket, Tcp};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() {
    // Initialize the reply socket (server side) with a transport
    let mut rep = RepSocket::new(Tcp::default())
        // Enable Gzip compression (compression level 6).
        .with_compressor(GzipCompressor::new(6));

    rep.bind("127.0.0.1:4444").await.unwrap();

    // Initialize the request socket (client side) with a transport
    let mut req = ReqSocket::new(Tcp::default())
        // Enable Gzip compression (compression level 6).
        // The request and response sockets *don't have to*
        // use the same compression algorithm or level.
        .with_compressor(GzipCompressor::new(6));

    req.connect("127.0.0.1:4444").await.unwrap();

    tokio::spawn(async move {
        let request = rep.next().await.unwrap();
        println!(
            "server: {} bytes, decoded for the handler",
            request.msg().len()
        );
        request.respond(Bytes::from(vec![b'r'; 64 * 1024])).unwrap();
    });
    let reply = req
        .request(Bytes::from(vec![b'q'; 64 * 1024]))
        .await
        .unwrap();
    println!("client: {} bytes of reply, decoded", reply.len());
}
