//! Publications in the browser: one axum app serves a static page and the WebSocket bridge
//! (`msg::ws`) that the page opens; a `PubSocket` on loopback feeds it a tick every 100 ms
//! on `ticks.clock` and `ticks.count`. Open the address it prints; the page shows each
//! publication as it arrives.
//!
//! ```sh
//! cargo run -p msg-examples --example live_page -- 127.0.0.1:3000
//! ```
//!
//! The HTTP address is the first argument (default `127.0.0.1:3000`); the page's own query
//! string picks the pattern, `/?pattern=ticks.count`. It serves until it is stopped.
//! `scripts/live_page_check.sh` runs it under headless Chromium.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::response::Html;
use axum::routing::get;
use bytes::Bytes;
use msg::ws::{subscribe_route, SubscribeBridge};
use msg::{PubSocket, Tcp};

/// The page, with its script, compiled in.
const PAGE: &str = include_str!("live_page.html");

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let http_addr: SocketAddr = match std::env::args().nth(1) {
        Some(addr) => addr.parse()?,
        None => "127.0.0.1:3000".parse()?,
    };

    // The publisher, on a loopback port of its own.
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await?;
    let publisher_addr = publisher.local_addr().expect("bound");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_millis(100));
        for n in 1u64.. {
            ticks.tick().await;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let clock = format!(
                "{}.{:03} s since the epoch",
                now.as_secs(),
                now.subsec_millis()
            );
            let published = async {
                publisher.publish("ticks.clock", Bytes::from(clock)).await?;
                publisher
                    .publish("ticks.count", Bytes::from(format!("tick {n}")))
                    .await
            };
            if let Err(e) = published.await {
                eprintln!("publish failed: {e}");
                return;
            }
        }
    });

    // The page and the bridge, in one axum app.
    let bridge = SubscribeBridge::new(Tcp::default(), publisher_addr);
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/live", subscribe_route(bridge));
    let listener = tokio::net::TcpListener::bind(http_addr).await?;
    println!("live page on http://{}/", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
