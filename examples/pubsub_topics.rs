//! Several topics and wildcard subscriptions: each subscriber gets exactly what its
//! patterns match, filtered at the publisher.
//!
//! Run with `cargo run -p msg-examples --example pubsub_topics`.

use std::time::Duration;

use bytes::Bytes;
use msg::{PubSocket, SubSocket, Tcp};
use tokio_stream::StreamExt;

#[tokio::main]
async fn main() -> Result<(), msg::Error> {
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await?;
    let addr = publisher.local_addr().expect("bound");

    // `*` matches one token, a trailing `>` one or more.
    let plans: [(&str, &[&str]); 3] = [
        ("all of europe", &["prices.eu.>"]),
        ("bitcoin anywhere", &["prices.*.btc"]),
        ("exact", &["prices.us.eth"]),
    ];
    let mut subscribers = Vec::new();
    for (name, patterns) in plans {
        let mut sub = SubSocket::new(Tcp::default());
        sub.connect(addr).await?;
        for pattern in patterns {
            sub.subscribe(*pattern).await?;
        }
        subscribers.push((name, sub));
    }

    let ticks = [
        ("prices.eu.btc", "97000"),
        ("prices.eu.eth", "3400"),
        ("prices.us.btc", "98000"),
        ("prices.us.eth", "3450"),
        ("prices.eu.fx.usd", "1.08"),
    ];
    for (topic, price) in ticks {
        publisher.publish(topic, Bytes::from(price)).await?;
    }

    for (name, sub) in &mut subscribers {
        println!("{name}:");
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await
        {
            println!("  {} = {:?}", msg.topic(), msg.payload());
        }
    }
    println!("publisher stats: {:?}", publisher.stats());
    Ok(())
}
