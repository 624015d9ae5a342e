//! Transports for `msg`: the [`Transport`] and [`Listener`] traits every socket is generic
//! over, and their implementations: [`Tcp`], [`Tls`], [`Quic`] and [`Ipc`], and
//! [`AnyTransport`], which is any of them as an [`Endpoint`] (`tcp://..`, `ipc://..`)
//! names.
//!
//! A transport holds configuration only. It binds listeners, sets up what they accept
//! ([`Transport::accept`]: nothing for TCP, the handshake for TLS and QUIC) and dials
//! peers. A layer over a transport is a transport: it wraps both sides of the same
//! exchange, so one layered value serves client and server sockets alike. The built-in
//! transports are also connectors, [`tower::Service`]s from a target to a connection, so
//! tower's `Timeout` over one is a transport whose connect is bounded.
//!
//! # Example
//!
//! ```
//! use msg_transports::{Listener, Tcp, Transport};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let listener = Tcp::default().bind("127.0.0.1:0".into()).await?;
//! let addr = listener.local_addr()?;
//! let conn = Tcp::default().connect(addr.into()).await?;
//! assert_eq!(conn.peer, addr);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod any;
#[cfg(feature = "zstd")]
pub mod compress;
pub mod endpoint;
#[cfg(feature = "ipc")]
pub mod ipc;
#[cfg(feature = "quic")]
pub mod quic;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

pub use any::{AnyTransport, TransportConfig};
pub use endpoint::{Endpoint, EndpointError};
#[cfg(feature = "ipc")]
pub use ipc::Ipc;
#[cfg(feature = "quic")]
pub use quic::Quic;
pub use tcp::Tcp;
#[cfg(feature = "tls")]
pub use tls::Tls;
pub use transport::{
    is_connection_error, BoxError, ConnectFuture, Connected, Listener, Traffic, Transport,
    TransportError,
};
