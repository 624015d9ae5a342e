//! The book's Publish/Subscribe example, bound to loopback.
//!
//! Run with `cargo run -p msg-examples --example pubsub`.

use bytes::Bytes;
use tokio_stream::StreamExt;

use msg::{PubSocket, SubSocket, Tcp};

#[tokio::main]
async fn main() {
    // Initialize the publisher socket (server side) with a transport
    let mut pub_socket = PubSocket::new(Tcp::default());
    pub_socket.bind("127.0.0.1:4444").await.unwrap();

    // Initialize the subscriber socket (client side) with a transport
    let mut sub_socket = SubSocket::new(Tcp::default());
    sub_socket.connect("127.0.0.1:4444").await.unwrap();

    let topic = "some_interesting_topic".to_string();

    // Subscribe to a topic
    sub_socket.subscribe(topic.clone()).await.unwrap();

    tokio::spawn(async move {
        // Values are `bytes::Bytes`
        pub_socket
            .publish(topic, Bytes::from("hello_world"))
            .await
            .unwrap();
        // Keep the publisher up while the message is on its way.
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    });

    let msg = sub_socket.next().await.unwrap();
    println!("Received message: {:?}", msg);
}
