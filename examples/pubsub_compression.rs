//! The book's Publish/Subscribe compression example, on loopback: the publisher compresses
//! with gzip; the subscriber, configured with nothing, decodes by each message's header.
//!
//! Run with `cargo run -p msg-examples --example pubsub_compression`.

use bytes::Bytes;
use msg::{compression::GzipCompressor, PubSocket, SubSocket, Tcp};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() {
    // Configure the publisher socket with options
    let mut pub_socket = PubSocket::new(Tcp::new())
        // Enable Gzip compression (compression level 6)
        .with_compressor(GzipCompressor::new(6));
    pub_socket.bind("127.0.0.1:0").await.unwrap();

    // Configure the subscribers with options
    let mut sub_socket = SubSocket::new(Tcp::default());
    sub_socket
        .connect(pub_socket.local_addr().unwrap())
        .await
        .unwrap();
    sub_socket.subscribe("HELLO_TOPIC").await.unwrap();

    pub_socket
        .publish("HELLO_TOPIC", Bytes::from("hello world ".repeat(100)))
        .await
        .unwrap();
    let msg = sub_socket.next().await.unwrap();
    println!(
        "received {} bytes on {}, decoded",
        msg.payload().len(),
        msg.topic()
    );
}
