//! Publications to the browser: a WebSocket endpoint of axum that bridges a
//! [`SubSocket`] to each browser that opens it. Needs the `axum` feature.
//!
//! [`subscribe_route`] makes the endpoint of a [`SubscribeBridge`] (the publishers to
//! subscribe to, and how much to queue per browser), to mount on any `axum::Router`. A
//! browser opens it with the patterns in the query string,
//! `new WebSocket("ws://host/live?pattern=prices.>")` (`pattern` may be given up to
//! [`BridgeOptions::max_patterns`] times; `>` is `%3E` once encoded), and gets one
//! WebSocket text message per publication, a JSON object:
//!
//! ```text
//! {"type":"message","topic":"prices.eu","seq":42,"encoding":"utf8","payload":"101.5"}
//! {"type":"message","topic":"blobs.1","seq":43,"encoding":"base64","payload":"/wAQ"}
//! {"type":"dropped","count":17}
//! ```
//!
//! - `message`: one publication. `payload` is the payload as text when it is UTF-8
//!   (`"encoding":"utf8"`), base64 otherwise (`"encoding":"base64"`, `atob` reads it).
//!   `seq` is its number in the publisher's session with the bridge, consecutive unless
//!   messages were dropped.
//! - with `format=binary` in the query string, each publication is a binary WebSocket
//!   message instead: the topic's length (u16, big endian), the topic, `seq` (u64, big
//!   endian), then the payload as it is, unencoded (a `DataView` reads it). `dropped`
//!   stays a JSON text message. `format=json` is the default; any other value is refused.
//! - `dropped`: `count` messages on the browser's patterns were lost since the one it got
//!   last, because the browser read too slowly (its queue was full) or the publisher
//!   dropped them for the bridge (a slow subscriber's gap). It comes before the next
//!   `message`, or alone when nothing follows yet.
//!
//! The bridge subscribes before it answers the upgrade: once the browser's WebSocket is
//! open, every publication on its patterns reaches it. A request without a pattern, or
//! with one that breaks the topic grammar (see [`topic`](crate::topic)), is answered
//! `400 Bad Request` with the reason; one the bridge cannot subscribe for (no publisher
//! within [`SubOptions::reconnect_wait`], a pattern a publisher refused) `503 Service
//! Unavailable`; neither is upgraded. [`SubscribeBridge::shutdown`] closes every browser's
//! WebSocket with a close frame (1001, going away).
//!
//! # Slow browsers
//!
//! Each browser has its own `SubSocket` (one connection to each publisher) and its own
//! queue between that socket and its WebSocket, bounded by [`BridgeOptions::queue`] frames
//! and [`BridgeOptions::queue_bytes`] bytes. The socket is read at once whatever the browser
//! does, so a publisher never sees the bridge as a slow subscriber because of one browser;
//! what does not fit in a full queue is dropped, counted in [`BridgeStats::dropped`], and
//! told to the browser as a `dropped` count. Memory per browser is bounded by the queue,
//! the socket's inbox ([`BridgeOptions::subscriber`]) and the one frame being written.
//!
//! # Example
//!
//! ```
//! use msg::ws::{subscribe_route, SubscribeBridge};
//! use msg::{PubSocket, Tcp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut publisher = PubSocket::new(Tcp::default());
//! publisher.bind("127.0.0.1:0").await?;
//! let addr = publisher.local_addr().unwrap();
//!
//! let bridge = SubscribeBridge::new(Tcp::default(), addr);
//! let app = axum::Router::new().route("/live", subscribe_route(bridge.clone()));
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let server = tokio::spawn(async move {
//!     axum::serve(listener, app)
//!         .with_graceful_shutdown(async { stopped.await.ok(); })
//!         .await
//! });
//! // Browsers open ws://.../live?pattern=prices.%3E
//! assert_eq!(bridge.stats().browsers, 0);
//!
//! // axum's graceful shutdown does not see upgraded connections: the bridge closes its own.
//! bridge.shutdown();
//! stop.send(()).ok();
//! server.await??;
//! # Ok(())
//! # }
//! ```

mod json;
mod outbox;

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{
    close_code, CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade,
};
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use futures_util::StreamExt;
use msg_transports::Transport;
use tokio_util::sync::CancellationToken;

use crate::topic::validate_pattern;
use crate::{SubOptions, SubSocket};
use outbox::{Body, Out, Outbox};

/// Longest a browser is given to take its close frame when the bridge shuts down.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The query parameter that carries the browser's patterns.
pub const PATTERN_PARAM: &str = "pattern";

/// The query string's parameter that chooses how publications are sent: `json` (the
/// default) or `binary`.
pub const FORMAT_PARAM: &str = "format";

/// How a browser gets its publications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Binary,
}

/// The format a query string asks for, or why it is refused.
fn format(query: Option<&str>) -> Result<Format, String> {
    let mut format = Format::Json;
    for value in json::query_values(query.unwrap_or(""), FORMAT_PARAM) {
        format = match value.as_deref() {
            Some("json") => Format::Json,
            Some("binary") => Format::Binary,
            _ => return Err("`format` is `json` or `binary`".into()),
        };
    }
    Ok(format)
}

/// Options of a [`SubscribeBridge`].
///
/// # Example
///
/// ```
/// use msg::ws::BridgeOptions;
///
/// let options = BridgeOptions::default().queue(64).queue_bytes(256 * 1024);
/// assert_eq!(options.queue, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BridgeOptions {
    /// Frames queued for one browser and not yet sent; past it, publications are dropped
    /// for that browser and counted. Default: 256, a few seconds of a live page's updates,
    /// so that a browser tab's hiccup loses nothing and a stalled one holds little.
    pub queue: usize,
    /// Bytes of frames queued for one browser, the other bound of the queue, so that large
    /// publications cannot make the frame count a loose bound on memory. A frame larger
    /// than this is still queued when the queue is empty. Default: 1 MiB.
    pub queue_bytes: usize,
    /// The options of each browser's `SubSocket`. Default: [`SubOptions::default`] with an
    /// inbox of 256 messages and 256 KiB: the bridge reads it at once, so it need not be
    /// large.
    pub subscriber: SubOptions,
    /// Most patterns one browser may ask for. Default: 16.
    pub max_patterns: usize,
}

impl Default for BridgeOptions {
    fn default() -> Self {
        BridgeOptions {
            queue: 256,
            queue_bytes: 1024 * 1024,
            subscriber: SubOptions::default().inbox(256).inbox_bytes(256 * 1024),
            max_patterns: 16,
        }
    }
}

impl BridgeOptions {
    /// Sets [`queue`](Self::queue).
    pub fn queue(mut self, frames: usize) -> Self {
        self.queue = frames;
        self
    }

    /// Sets [`queue_bytes`](Self::queue_bytes).
    pub fn queue_bytes(mut self, bytes: usize) -> Self {
        self.queue_bytes = bytes;
        self
    }

    /// Sets [`subscriber`](Self::subscriber).
    pub fn subscriber(mut self, options: SubOptions) -> Self {
        self.subscriber = options;
        self
    }

    /// Sets [`max_patterns`](Self::max_patterns).
    pub fn max_patterns(mut self, patterns: usize) -> Self {
        self.max_patterns = patterns;
        self
    }
}

/// Counters of a [`SubscribeBridge`], over every browser it has served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Browsers connected now.
    pub browsers: usize,
    /// Publications sent to browsers.
    pub delivered: u64,
    /// Publications dropped because a browser's queue was full.
    pub dropped: u64,
    /// Publications the publishers dropped for the bridge's sockets (their sequence gaps).
    pub missed: u64,
    /// Most frames one browser's queue has held.
    pub peak_queued: usize,
    /// Most bytes one browser's queue has held.
    pub peak_queued_bytes: usize,
}

/// The counters every browser's tasks update.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    browsers: AtomicUsize,
    delivered: AtomicU64,
    dropped: AtomicU64,
    missed: AtomicU64,
    peak_queued: AtomicUsize,
    peak_queued_bytes: AtomicUsize,
}

impl Counters {
    /// A queue holds `frames` frames of `bytes` bytes.
    pub(crate) fn queued(&self, frames: usize, bytes: usize) {
        self.peak_queued.fetch_max(frames, Ordering::Relaxed);
        self.peak_queued_bytes.fetch_max(bytes, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> BridgeStats {
        BridgeStats {
            browsers: self.browsers.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            missed: self.missed.load(Ordering::Relaxed),
            peak_queued: self.peak_queued.load(Ordering::Relaxed),
            peak_queued_bytes: self.peak_queued_bytes.load(Ordering::Relaxed),
        }
    }
}

/// Counts a browser as connected while it lives.
struct Browser<'a>(&'a Counters);

impl<'a> Browser<'a> {
    fn new(counters: &'a Counters) -> Self {
        counters.browsers.fetch_add(1, Ordering::Relaxed);
        Browser(counters)
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        self.0.browsers.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a WebSocket endpoint subscribes its browsers to: the transport and the publishers,
/// and the [`BridgeOptions`]. A cheap `Clone` handle: clones share the counters.
///
/// # Example
///
/// ```
/// use msg::ws::{BridgeOptions, SubscribeBridge};
/// use msg::Tcp;
///
/// let bridge = SubscribeBridge::new(Tcp::default(), "127.0.0.1:5556")
///     .publisher("127.0.0.1:5557")
///     .options(BridgeOptions::default().queue(64));
/// assert_eq!(bridge.stats().delivered, 0);
/// ```
pub struct SubscribeBridge<T: Transport> {
    shared: Arc<Shared<T>>,
}

struct Shared<T: Transport> {
    transport: T,
    publishers: Vec<T::Target>,
    options: BridgeOptions,
    counters: Counters,
    stop: CancellationToken,
}

impl<T: Transport> Clone for SubscribeBridge<T> {
    fn clone(&self) -> Self {
        SubscribeBridge {
            shared: self.shared.clone(),
        }
    }
}

impl<T: Transport> fmt::Debug for SubscribeBridge<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeBridge")
            .field("publishers", &self.shared.publishers.len())
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish()
    }
}

impl<T: Transport> SubscribeBridge<T> {
    /// A bridge to the publisher at `publisher`, over `transport`, with default options.
    /// Nothing is dialed until a browser connects.
    pub fn new(transport: T, publisher: impl Into<T::Target>) -> Self {
        SubscribeBridge {
            shared: Arc::new(Shared {
                transport,
                publishers: vec![publisher.into()],
                options: BridgeOptions::default(),
                counters: Counters::default(),
                stop: CancellationToken::new(),
            }),
        }
    }

    /// Adds a publisher: each browser's socket connects to every one.
    pub fn publisher(self, publisher: impl Into<T::Target>) -> Self {
        self.change(|shared| shared.publishers.push(publisher.into()))
    }

    /// Sets the options.
    pub fn options(self, options: BridgeOptions) -> Self {
        self.change(|shared| shared.options = options)
    }

    fn change(self, f: impl FnOnce(&mut Shared<T>)) -> Self {
        let mut shared = match Arc::try_unwrap(self.shared) {
            Ok(shared) => shared,
            // Configured after it was cloned: the clones keep the old configuration.
            Err(shared) => Shared {
                transport: shared.transport.clone(),
                publishers: shared.publishers.clone(),
                options: shared.options.clone(),
                counters: Counters::default(),
                stop: CancellationToken::new(),
            },
        };
        f(&mut shared);
        SubscribeBridge {
            shared: Arc::new(shared),
        }
    }

    /// Shuts the bridge down: every browser's WebSocket is closed with a close frame
    /// (1001, going away) and its socket dropped, and new ones are answered `503 Service
    /// Unavailable`. Returns at once; a browser that reads nothing is closed within a
    /// second all the same. Call it beside the HTTP server's graceful shutdown, which does
    /// not see upgraded connections.
    pub fn shutdown(&self) {
        self.shared.stop.cancel();
    }

    /// The counters, over every browser served.
    pub fn stats(&self) -> BridgeStats {
        self.shared.counters.snapshot()
    }

    /// The patterns of a query string, or why they are refused.
    fn patterns(&self, query: Option<&str>) -> Result<Vec<String>, String> {
        let mut patterns = Vec::new();
        for value in json::query_values(query.unwrap_or(""), PATTERN_PARAM) {
            let pattern = value.ok_or("a `pattern` that is not percent-encoded UTF-8")?;
            validate_pattern(&pattern).map_err(|e| format!("invalid pattern: {e}"))?;
            if patterns.len() == self.shared.options.max_patterns {
                return Err(format!(
                    "more than {} patterns",
                    self.shared.options.max_patterns
                ));
            }
            patterns.push(pattern);
        }
        if patterns.is_empty() {
            return Err("no `pattern` in the query string: ?pattern=topic.>".into());
        }
        Ok(patterns)
    }

    /// A socket for one browser, connected to every publisher and subscribed to
    /// `patterns`: each is in force at every publisher connected when this returns.
    async fn subscribe(&self, patterns: Vec<String>) -> Result<SubSocket<T>, crate::Error> {
        let shared = &self.shared;
        let mut sub =
            SubSocket::with_options(shared.transport.clone(), shared.options.subscriber.clone());
        for publisher in &shared.publishers {
            sub.connect_lazy(publisher.clone());
        }
        for pattern in patterns {
            sub.subscribe(pattern).await?;
        }
        Ok(sub)
    }

    /// Serves one browser on `ws`, with its subscribed socket, until it leaves or the
    /// bridge shuts down.
    async fn serve(self, mut ws: WebSocket, sub: SubSocket<T>, format: Format) {
        let shared = &self.shared;
        let _browser = Browser::new(&shared.counters);
        let outbox = Arc::new(Outbox::new(
            shared.options.queue,
            shared.options.queue_bytes,
        ));
        let reader = tokio::spawn(read(sub, outbox.clone(), self.shared.clone(), format));
        loop {
            tokio::select! {
                _ = shared.stop.cancelled() => {
                    let close = WsMessage::Close(Some(CloseFrame {
                        code: close_code::AWAY,
                        reason: "the server is shutting down".into(),
                    }));
                    // A browser that reads nothing does not hold the shutdown.
                    let _ = tokio::time::timeout(CLOSE_WAIT, ws.send(close)).await;
                    break;
                }
                incoming = ws.recv() => match incoming {
                    // The browser has nothing to say but goodbye; pings are answered by the
                    // WebSocket itself.
                    Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                    Some(Ok(_)) => {}
                },
                out = outbox.next() => {
                    if send(&mut ws, out, &shared.counters).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping the socket closes its publisher connections.
        reader.abort();
    }
}

/// Sends one thing from the queue to the browser.
async fn send(ws: &mut WebSocket, out: Out, counters: &Counters) -> Result<(), axum::Error> {
    match out {
        Out::Frame(frame) => {
            if frame.dropped_before > 0 {
                ws.send(WsMessage::text(json::dropped(frame.dropped_before)))
                    .await?;
            }
            let message = match frame.body {
                Body::Text(text) => WsMessage::text(text),
                Body::Binary(bytes) => WsMessage::binary(bytes),
            };
            ws.send(message).await?;
            counters.delivered.fetch_add(1, Ordering::Relaxed);
        }
        Out::Dropped(count) => ws.send(WsMessage::text(json::dropped(count))).await?,
    }
    Ok(())
}

/// Reads a browser's socket into its queue, as fast as publications come.
async fn read<T: Transport>(
    mut sub: SubSocket<T>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared<T>>,
    format: Format,
) {
    // The last sequence number seen from each publisher: a gap is what it dropped.
    let mut last: HashMap<T::Addr, u64> = HashMap::new();
    while let Some(msg) = sub.next().await {
        let seq = msg.seq();
        let previous = last.insert(msg.publisher().clone(), seq);
        // A session starts at 1; a number not above the last is a new session.
        let missed = match previous {
            Some(previous) if seq > previous => seq - previous - 1,
            _ => seq.saturating_sub(1),
        };
        let counters = &shared.counters;
        counters.missed.fetch_add(missed, Ordering::Relaxed);
        let body = match format {
            Format::Json => Body::Text(json::publication(msg.topic(), seq, msg.payload())),
            Format::Binary => {
                Body::Binary(json::binary_publication(msg.topic(), seq, msg.payload()))
            }
        };
        if !outbox.push(missed, body, counters) {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The WebSocket endpoint of `bridge`, to mount on an `axum::Router` of any state:
/// `Router::new().route("/live", subscribe_route(bridge))`. See the [module](self) for
/// what the browser sends and gets.
///
/// # Errors
///
/// A request that is not a WebSocket upgrade gets axum's rejection (`400`, `405` or
/// `426`); one without a valid pattern gets `400 Bad Request` with the reason.
pub fn subscribe_route<T, S>(bridge: SubscribeBridge<T>) -> MethodRouter<S>
where
    T: Transport,
    S: Clone + Send + Sync + 'static,
{
    axum::routing::get(
        move |upgrade: WebSocketUpgrade, RawQuery(query): RawQuery| {
            let bridge = bridge.clone();
            async move { bridge.upgrade(upgrade, query.as_deref()).await }
        },
    )
}

impl<T: Transport> SubscribeBridge<T> {
    async fn upgrade(self, upgrade: WebSocketUpgrade, query: Option<&str>) -> Response {
        if self.shared.stop.is_cancelled() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the server is shutting down",
            )
                .into_response();
        }
        let (patterns, format) = match self.patterns(query).and_then(|p| Ok((p, format(query)?))) {
            Ok(asked) => asked,
            Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
        };
        // Subscribed before the upgrade is answered: once the browser's WebSocket is open,
        // it gets every publication on its patterns.
        let sub = match self.subscribe(patterns).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket bridge: subscribe failed");
                let reason = format!("cannot subscribe: {e}");
                return (StatusCode::SERVICE_UNAVAILABLE, reason).into_response();
            }
        };
        upgrade
            // A browser sends nothing but control frames: a large message is no browser of
            // this page's.
            .max_message_size(64 * 1024)
            .on_upgrade(move |ws| self.serve(ws, sub, format))
    }
}
