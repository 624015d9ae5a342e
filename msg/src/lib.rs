//! `msg`: brokerless Request/Reply and Publish/Subscribe sockets on tokio, over TCP, TLS,
//! QUIC and Unix-socket IPC, in the family of ZeroMQ and nanomsg, where every socket is a
//! [`tower::Service`].
//!
//! Timeouts, retries, concurrency limits and tracing are tower layers stacked on a socket,
//! the way they are on a tonic channel or an axum router; the server side runs any
//! `tower::Service` through [`serve`], or a [`Router`] of plain async handlers, one per
//! route a request names.
//!
//! This page is the crate's guide: getting started (the book's two first examples, run here
//! on loopback), the chapters of the book, and a map of the crate. The book itself is in
//! the repository, under `book/` (`mdbook build book` renders it); each chapter below names
//! its file.
//!
//! # Getting started
//!
//! Add `msg` to your `[dependencies]` (from a checkout of its repository, by path or git),
//! with `tokio` (features `macros` and `rt-multi-thread`), `bytes` and `tokio-stream`; the
//! build needs Rust 1.85 or later and a C compiler, for ring. A socket is made from a transport
//! ([`Tcp`] here), then binds or connects to an address, given as a string or a
//! `SocketAddr`.
//!
//! ## Request/Reply
//!
//! A [`ReqSocket`] sends a request and awaits its reply; a [`RepSocket`] is a stream of
//! requests, each answered with `respond`. The book's Request/Reply example, on loopback:
//!
//! ```
//! use bytes::Bytes;
//! use tokio_stream::StreamExt;
//!
//! use msg::{RepSocket, ReqSocket, Tcp};
//!
//! #[tokio::main]
//! async fn main() {
//!     // Initialize the reply socket (server side) with a transport
//!     let mut rep = RepSocket::new(Tcp::default());
//!     rep.bind("127.0.0.1:0").await.unwrap();
//!     let addr = rep.local_addr().unwrap();
//!
//!     // Initialize the request socket (client side) with a transport
//!     let mut req = ReqSocket::new(Tcp::default());
//!     req.connect(addr).await.unwrap();
//!
//!     tokio::spawn(async move {
//!         // Receive the request and respond with "world"
//!         // (RepSocket implements `Stream`)
//!         let req = rep.next().await.unwrap();
//!         println!("Message: {:?}", req.msg());
//!
//!         req.respond(Bytes::from("world")).unwrap();
//!     });
//!
//!     let res: Bytes = req.request(Bytes::from("hello")).await.unwrap();
//!     println!("Response: {:?}", res);
//! }
//! ```
//!
//! ## Publish/Subscribe
//!
//! A [`PubSocket`] sends each publication to the subscribers whose patterns match its
//! topic; a [`SubSocket`] is a stream of the publications it subscribed to.
//! `subscribe(..).await` returns once every connected publisher has applied the
//! subscription, so what is published after it arrives. The book's Publish/Subscribe
//! example, on loopback:
//!
//! ```
//! use bytes::Bytes;
//! use tokio_stream::StreamExt;
//!
//! use msg::{PubSocket, SubSocket, Tcp};
//!
//! #[tokio::main]
//! async fn main() {
//!     // Initialize the publisher socket (server side) with a transport
//!     let mut pub_socket = PubSocket::new(Tcp::default());
//!     pub_socket.bind("127.0.0.1:0").await.unwrap();
//!     let addr = pub_socket.local_addr().unwrap();
//!
//!     // Initialize the subscriber socket (client side) with a transport
//!     let mut sub_socket = SubSocket::new(Tcp::default());
//!     sub_socket.connect(addr).await.unwrap();
//!
//!     let topic = "some_interesting_topic".to_string();
//!
//!     // Subscribe to a topic
//!     sub_socket.subscribe(topic.clone()).await.unwrap();
//!
//!     // Values are `bytes::Bytes`
//!     pub_socket.publish(topic, Bytes::from("hello_world")).await.unwrap();
//!
//!     let msg = sub_socket.next().await.unwrap();
//!     println!("Received message: {:?}", msg);
//!     assert_eq!(msg.topic(), "some_interesting_topic");
//!     assert_eq!(msg.payload(), "hello_world");
//! }
//! ```
//!
//! The same programs run over TLS, QUIC or IPC by changing the transport
//! ([`Tls`], [`Quic`], [`Ipc`]), and from the repository with
//! `cargo run -p msg-examples --example reqrep` (or `pubsub`, `tls`, `quic`, `ipc`...).
//!
//! # Chapters of the book
//!
//! | chapter | what it covers | file |
//! |---|---|---|
//! | Introduction | what msg is and where it comes from | `book/src/introduction.md` |
//! | Getting started | adding msg, and a first Request/Reply and Publish/Subscribe program | `book/src/getting-started.md` |
//! | Request/Reply | [`ReqSocket`] and [`RepSocket`]: pipelining, [`serve`], graceful shutdown | `book/src/reqrep.md` |
//! | Publish/Subscribe | [`PubSocket`] and [`SubSocket`]: topic patterns, slow subscribers, sequence numbers | `book/src/pubsub.md` |
//! | The Router | [`Router`], [extractors](extract), `from_fn`, beside axum, HTTP and the browser | `book/src/router.md` |
//! | Transports | TCP, TLS with mTLS, QUIC, IPC, choosing one at run time, writing a transport layer | `book/src/transports.md` |
//! | Authentication and admission | `with_auth`, `auth_token`, admission services | `book/src/auth.md` |
//! | Compression | `with_compressor`, the compression layers, codecs of your own | `book/src/compression.md` |
//! | Logging and tracing | `TraceLayer`, the `msg` tracing target, levels | `book/src/tracing.md` |
//! | Metrics | `MetricsLayer`, the sockets' counters, a Prometheus endpoint | `book/src/metrics.md` |
//! | Durability | every fault, what the sockets do, and the defaults | `book/src/durability.md` |
//! | Middleware | message layers, transport layers, `from_fn`, writing your own | `book/src/middleware.md` |
//! | Many endpoints and discovery | balancing over many servers, DNS discovery, either side binds, the [`Forwarder`] | `book/src/discovery.md` |
//! | The command line | the `msg` command: `serve`, `req`, `pub`, `sub`, `proxy`, `bench` | `book/src/cli.md` |
//! | Performance | one table against the peers and the limit, and how to run the bench | `book/src/performance.md` |
//! | Reliability and limits | the limits table, fuzzing, the soak | `book/src/reliability.md` |
//! | The wire protocol | frames, the handshake, the limits, from `PROTOCOL.md` | `book/src/protocol.md` |
//! | Cargo features | which item needs which feature | `book/src/features.md` |
//! | FAQ | questions, and migrating from msg-rs and from ZeroMQ | `book/src/faq.md` |
//! | Contributing | how to build, test and send a change | `book/src/contributing.md` |
//!
//! # A map of the crate
//!
//! | to ... | use |
//! |---|---|
//! | send requests | [`ReqSocket`] ([`ReqOptions`]), or [`conn::client`] over a stream of your own |
//! | answer requests | [`RepSocket`] ([`RepOptions`]) read as a stream of [`PendingRequest`]s, or [`serve`] with a `tower::Service<`[`Request`]`>` or a [`Router`] ([`extract`], [`IntoReply`], [`Status`], [`Code`], [`middleware`]); [`conn::server`] over a stream of your own |
//! | publish | [`PubSocket`] ([`PubOptions`], [`SlowSubscriber`], [`PubStats`]) |
//! | subscribe | [`SubSocket`] ([`SubOptions`], [`SubMessage`]); patterns in [`topic`] |
//! | pick a transport | [`Tcp`], [`Tls`] ([`tls`] loads PEM files), [`Quic`] ([`quic`]), [`Ipc`] ([`ipc`]); [`AnyTransport`] and [`Endpoint`] ([`any`]) to choose at run time; [`Transport`] and [`transport`] to write one |
//! | stack layers | [`layers`] (trace, metrics, compression), [`compression`] (codecs), [`retry`] ([`RetryPolicy`](retry::RetryPolicy)) |
//! | admit clients | [`admission`], or the book's [`Authenticator`] through `with_auth` |
//! | follow many peers | [`discover`] (`discover::Dns`, feature `dns`; [`discover::list`]), [`Forwarder`] |
//! | configure and watch | [`options`] (shared by the four sockets), [`limits`], [`Backoff`], [`SocketEvent`] from each socket's `events()`, [`Error`] |
//! | carry data | [`Message`] with its [`Headers`], [`Route`] and [`Metadata`]; [`Encoding`] |
//! | speak the wire | [`wire`] (the frame codec and header), for tools |
//!
//! Behind features: `Json` (`json`, on by default), `discover::Dns` (`dns`, on by default),
//! `Router::into_axum` and `ws` (`axum`, off), the codecs (`gzip`, `zstd`, `snappy`,
//! `lz4`, on), and `fuzz` (off).
//!
//! # The two stacks
//!
//! Each socket sits between two stacks of layers.
//!
//! - **Above it, messages.** A `ReqSocket` is a `tower::Service<Message>` and a
//!   `PubSocket` a `tower::Service<Publication>`; tower's layers (timeout, retry,
//!   concurrency limit) and your own stack on them. On the server, [`serve`] runs any
//!   `tower::Service<Request>` with its own layers in front.
//! - **Below it, connections.** A transport ([`Tcp`], [`Tls`], [`Quic`], [`Ipc`]) dials,
//!   binds, and sets up what its listener accepts; a layer over a transport is a transport
//!   (see [`Transport`]), so an exchange on the raw connection (a challenge, a proxy
//!   header) or tower's `TimeoutLayer` on connect is written once and used by every socket.
//!   After msg's hello, server sockets ask their [`admission`](mod@admission) service
//!   whether to let the client in.
//!
//! Between them, the sockets' drivers own framing, id correlation, write batching,
//! back-pressure, heartbeats, cancellation, and the reconnect supervisor that keeps a
//! dialing socket connected. Each socket's [`events`](ReqSocket::events) tell what happens
//! to its connections.
//!
//! # Throughput
//!
//! On tokio's multi-thread runtime, what costs most is not the work per message but a
//! task handed from one worker to another: the worker that is woken takes over the I/O
//! driver and sleeps in it, and from then on every readiness event needs a cross-CPU
//! wake-up. A task that yields to the scheduler causes exactly that. So, for the most
//! messages per second:
//!
//! - keep many requests in flight from one task with [`ReqSocket::pipeline`]. A
//!   `FuturesUnordered` of requests yields each time it has polled a full window of fresh
//!   ones, and halves the rate; so does a request stream that yields, such as
//!   `tokio_stream::iter` (every 32 items);
//! - run clients in spawned tasks: the future given to `#[tokio::main]` runs on the main
//!   thread, outside the workers, and each of its wake-ups crosses threads.
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod accept;
pub mod admission;
mod backoff;
pub mod conn;
mod counters;
mod dial;
pub mod discover;
mod driver;
mod error;
mod events;
mod forwarder;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
mod handoff;
mod handshake;
mod io;
pub mod limits;
mod listen;
pub mod middleware;
mod offload;
pub mod options;
mod publisher;
mod rep;
mod req;
pub mod retry;
pub mod router;
mod slots;
mod status;
mod subscriber;
pub mod topic;
#[cfg(feature = "axum")]
pub mod ws;

pub use backoff::Backoff;
pub use error::Error;
pub use events::{Events, SocketEvent, EVENT_CAPACITY};
pub use forwarder::{Forwarder, ForwarderStats};
pub use msg_core::Code;
pub use msg_core::{
    Authenticator, Encoding, Headers, IntoRoute, Message, Metadata, MetadataError, Route,
    RouteError, SocketType, MAX_METADATA_LEN, MAX_ROUTE_LEN,
};
#[cfg(feature = "ipc")]
pub use msg_transports::Ipc;
#[cfg(feature = "quic")]
pub use msg_transports::Quic;
#[cfg(feature = "tls")]
pub use msg_transports::Tls;
pub use msg_transports::{AnyTransport, Endpoint, EndpointError, Tcp, Transport};
pub use options::{ConnectionOptions, DialOptions, ListenOptions};
pub use publisher::{
    PubOptions, PubSocket, PubStats, Publication, PublishFuture, SlowSubscriber, SubscriberStats,
};
pub use publisher::{SubscriptionChange, SubscriptionChanges};
pub use rep::{
    serve, PendingRequest, RepOptions, RepSocket, RepStats, Request, Serve, WithGracefulShutdown,
};
pub use req::{Pipeline, ReqOptions, ReqSocket, ReqStats, ResponseFuture};

pub use router::extract;
pub use router::reply::{self, IntoReply};
#[cfg(feature = "json")]
pub use router::Json;
pub use router::{Extensions, Router};
pub use status::Status;
pub use subscriber::{SubMessage, SubOptions, SubSocket, SubStats};

/// Compression of whole messages, the book's way (`with_compressor`): the codecs, the
/// [`Compressor`](compression::Compressor) trait for codecs of your own, and the decoders
/// every receiving socket uses, by each message's encoding header, with no configuration.
/// The tower way is in [`layers`].
///
/// The codecs are slow in a debug build (about 15x), and a library's profile settings do
/// not reach the program that uses it: a program that compresses much under `cargo run` or
/// `cargo test` should set `opt-level = 3` for the codec crates in its own `Cargo.toml`,
/// under `[profile.dev.package.zlib-rs]`, `[profile.dev.package.zstd-sys]`,
/// `[profile.dev.package.lz4_flex]` and `[profile.dev.package.snap]`.
pub mod compression {
    #[cfg(feature = "gzip")]
    pub use msg_layers::compression::GzipCompressor;
    #[cfg(feature = "lz4")]
    pub use msg_layers::compression::Lz4Compressor;
    #[cfg(feature = "snappy")]
    pub use msg_layers::compression::SnappyCompressor;
    #[cfg(feature = "zstd")]
    pub use msg_layers::compression::ZstdCompressor;
    pub use msg_layers::compression::{
        Codec, Compressor, Decoders, DecompressError, DEFAULT_MIN_LEN, OFFLOAD_MIN_LEN,
    };
}

pub mod layers {
    //! The tower layers that know about messages, to stack over a `ReqSocket`, a `PubSocket`
    //! or a [`serve`](crate::serve) handler: `ServiceBuilder::new().layer(GzipLayer::new(6))`.
    //!
    //! | layer | what it does | what it costs (1 KiB echo, 64 in flight, rate against the bare socket) |
    //! |---|---|---|
    //! | [`TraceLayer`] | a span per call (target `msg`) with its kind, size, encoding, topic or peer, outcome and latency, at DEBUG by default ([`TraceLayer::level`] to change it); a failure logged at WARN | nothing measurable while its level is off (a level check per call, no clock read); 0.23x with spans on and a `fmt` subscriber formatting them |
    //! | [`MetricsLayer`] | `msg_calls_total`, `msg_call_errors_total`, `msg_call_duration_seconds`, `msg_payload_bytes_total` by `kind`, through the `metrics` facade; its handles registered once and shared by every clone | 0.94x with the Prometheus recorder installed (two clock reads, two counters and a histogram record per call) |
    //! | [`GzipLayer`], `ZstdLayer`, `SnappyLayer`, `Lz4Layer`, [`CompressionLayer`] | compress requests, publications, or a handler's responses; receivers decode by header with no layer | the codec's own time: gzip 6 about 10 µs per 1 KiB message both ways (0.11x) |
    //! | [`SetEncodingLayer`] | marks payloads the application encoded itself | a field set |
    //! | [`StreamCompressionLayer`] | a transport layer: zstd over a whole connection's bytes, for many small, similar messages | the codec's time per read and write |
    //!
    //! tower's own `TimeoutLayer` (0.98x), `RetryLayer` with [`RetryPolicy`](crate::retry::RetryPolicy)
    //! (0.85x, within this client's ±15%), `ConcurrencyLimitLayer` and `LoadShedLayer` stack the
    //! same way. Figures: `cargo run --release -p msg-bench -- --layers`, with a `fmt`
    //! subscriber at `info` and the Prometheus recorder installed, as BENCHMARKS.md's table.
    //!
    //! # Example
    //!
    //! ```
    //! # #[cfg(feature = "gzip")] { // the codec's feature, on by default
    //! use std::time::Duration;
    //! use msg::layers::{GzipLayer, MetricsLayer, TraceLayer};
    //! use msg::retry::RetryPolicy;
    //! use msg::{ReqSocket, Tcp};
    //! use tower::ServiceBuilder;
    //!
    //! let req = ReqSocket::new(Tcp::default());
    //! let client = ServiceBuilder::new()
    //!     .layer(TraceLayer::new())
    //!     .layer(MetricsLayer::new())
    //!     .retry(RetryPolicy::default())
    //!     .timeout(Duration::from_secs(1))
    //!     .layer(GzipLayer::new(6))
    //!     .service(req);
    //! # let _ = client;
    //! # }
    //! ```

    #[cfg(feature = "gzip")]
    pub use msg_layers::compression::GzipLayer;
    #[cfg(feature = "lz4")]
    pub use msg_layers::compression::Lz4Layer;
    #[cfg(feature = "snappy")]
    pub use msg_layers::compression::SnappyLayer;
    #[cfg(feature = "zstd")]
    pub use msg_layers::compression::ZstdLayer;
    pub use msg_layers::compression::{Compress, Compression, CompressionFuture, CompressionLayer};
    pub use msg_layers::metrics::{Metrics, MetricsFuture, MetricsLayer};
    pub use msg_layers::trace::{Trace, TraceFuture, TraceLayer};
    pub use msg_layers::{SetEncoding, SetEncodingLayer};
    #[cfg(feature = "zstd")]
    pub use msg_transports::compress::{Compressed, StreamCompression, StreamCompressionLayer};
}

/// The wire protocol and its codec, for tools that speak it directly.
pub mod wire {
    pub use msg_core::wire::{
        error_response_code, error_response_encoding, header_for, parse_welcome, welcome_frame,
        Flags, Frame, FrameKind, Header, Hello, HEADER_LEN, MAGIC, MAX_TOPIC_LEN, VERSION,
    };
    pub use msg_core::{FrameCodec, FrameError, DEFAULT_MAX_FRAME_LEN};
}

/// The transport traits and their error, for writing a transport, or a layer over one, of
/// your own. [`Transport`] itself is at the crate's root.
pub mod transport {
    pub use msg_transports::{
        is_connection_error, BoxError, Connected, Listener, Traffic, Transport, TransportError,
    };
}

/// What TCP addresses can be: [`Endpoint`](tcp::Endpoint). The transport is
/// [`Tcp`].
pub mod tcp {
    pub use msg_transports::tcp::{Endpoint, Tcp, TcpAcceptor};
}

/// TLS over TCP: loading certificates and keys from PEM, and rustls's configurations. The
/// transport is [`Tls`].
#[cfg(feature = "tls")]
pub mod tls {
    #[cfg(feature = "test-util")]
    pub use msg_transports::tls::TestPki;
    pub use msg_transports::tls::{
        certs_from_pem, client_config, client_config_with_cert, key_from_pem, read_pem,
        server_config, server_config_mtls, ClientConfig, ServerConfig, Tls, TlsIo,
    };
}

/// QUIC's options and connection types. The transport is [`Quic`].
#[cfg(feature = "quic")]
pub mod quic {
    pub use msg_transports::quic::{Quic, QuicIncoming, QuicListener, QuicOptions, QuicStream};
}

/// One transport chosen at run time: [`AnyTransport`] binds and dials whatever an
/// [`Endpoint`] names (`tcp://host:port`, `tls://host:port`, `quic://host:port`,
/// `ipc://path`), so a program takes its transport from a flag or a configuration file with
/// no `match` per socket.
///
/// Sockets over an `AnyTransport` take endpoint strings where they take addresses; a string
/// that does not parse fails `bind` or `connect` with its [`EndpointError`] inside
/// [`Error::Transport`] (parse it first, `"..".parse::<Endpoint>()`, to meet it sooner). A
/// bound socket's `local_addr()` is an [`AnyAddr`](any::AnyAddr), written in the same form,
/// which a client dials as it is.
///
/// # Example
///
/// ```
/// use bytes::Bytes;
/// use msg::{AnyTransport, Endpoint, RepSocket, ReqSocket};
/// use tokio_stream::StreamExt;
///
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// // From a flag: "tcp://127.0.0.1:0", "ipc:///tmp/app.sock", "quic://127.0.0.1:0"...
/// let endpoint: Endpoint = "tcp://127.0.0.1:0".parse()?;
///
/// let mut rep = RepSocket::new(AnyTransport::new());
/// rep.bind(endpoint).await?;
/// let addr = rep.local_addr().unwrap();
/// assert!(addr.to_string().starts_with("tcp://127.0.0.1:"));
/// tokio::spawn(async move {
///     while let Some(request) = rep.next().await {
///         let _ = request.respond(Bytes::from("world"));
///     }
/// });
///
/// let mut req = ReqSocket::new(AnyTransport::new());
/// req.connect(addr.to_string()).await?; // or `addr` itself
/// let reply: Bytes = req.request(Bytes::from("hello")).await?;
/// assert_eq!(reply, "world");
///
/// // A bad endpoint is a typed error.
/// let err = ReqSocket::new(AnyTransport::new()).connect("udp://127.0.0.1:1").await;
/// assert!(err.unwrap_err().to_string().contains("unknown scheme `udp`"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
///
/// TLS needs certificates ([`AnyTransport::with_certificates`], or
/// [`with_tls`](AnyTransport::with_tls)); QUIC starts as [`Quic::default`], which encrypts
/// but does not authenticate the server, until `with_certificates` (or
/// [`with_quic`](AnyTransport::with_quic)) gives it real certificates.
pub mod any {
    pub use msg_transports::any::{
        AnyAddr, AnyConn, AnyIo, AnyListener, AnyTarget, AnyTransport, TransportConfig,
    };
    pub use msg_transports::endpoint::{Endpoint, EndpointError, Scheme};
}

/// Unix-socket addresses and listeners. The transport is [`Ipc`].
#[cfg(feature = "ipc")]
pub mod ipc {
    pub use msg_transports::ipc::{Ipc, IpcAddr, IpcListener};
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tokio_stream::StreamExt;

    use crate::transport::TransportError;
    use crate::{AnyTransport, Error, RepSocket, ReqSocket};

    /// TCP is always there; an endpoint of a transport this build leaves out (run the
    /// suite with `--no-default-features` to see them) fails with a typed error that names
    /// the Cargo feature to turn on, at bind and at connect.
    #[tokio::test]
    async fn a_transport_left_out_of_the_build_fails_naming_its_feature() {
        let mut rep = RepSocket::new(AnyTransport::new());
        rep.bind("tcp://127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(async move {
            while let Some(request) = rep.next().await {
                let _ = request.respond(Bytes::from("pong"));
            }
        });
        let mut req = ReqSocket::new(AnyTransport::new());
        req.connect(addr).await.unwrap();
        assert_eq!(req.request(Bytes::from("ping")).await.unwrap(), "pong");

        let socket = std::env::temp_dir().join(format!("msg-left-out-{}.sock", std::process::id()));
        let endpoints = [
            ("tls", cfg!(feature = "tls"), "tls://127.0.0.1:1".to_owned()),
            (
                "quic",
                cfg!(feature = "quic"),
                "quic://127.0.0.1:1".to_owned(),
            ),
            (
                "ipc",
                cfg!(feature = "ipc"),
                format!("ipc://{}", socket.display()),
            ),
        ];
        for (feature, built_in, endpoint) in endpoints {
            if built_in {
                continue;
            }
            let named = format!("`{feature}` Cargo feature");
            let err = ReqSocket::new(AnyTransport::new())
                .connect(endpoint.as_str())
                .await
                .unwrap_err();
            assert!(
                matches!(&err, Error::Transport(e) if matches!(**e, TransportError::Config { .. })),
                "{endpoint}: {err:?}"
            );
            assert!(err.to_string().contains(&named), "{endpoint}: {err}");
            let err = RepSocket::new(AnyTransport::new())
                .bind(endpoint.as_str())
                .await
                .unwrap_err();
            assert!(err.to_string().contains(&named), "{endpoint}: {err}");
            assert!(err.is_permanent(), "{endpoint}: {err}");
        }
        assert!(
            !socket.exists(),
            "nothing was bound at {}",
            socket.display()
        );
    }
}
