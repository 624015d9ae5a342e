//! Transports for `msg`: the [`Transport`] and [`Listener`] traits every socket is generic
//! over, and their implementations. [`Tcp`] is the first.
//!
//! A transport holds configuration only. It binds listeners and dials peers, and it is also
//! a connector: a [`tower::Service`] from a target to a connection, so connection-level
//! layers (timeouts, backoff, authentication) wrap it like any other service.
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

pub mod ipc;
pub mod quic;
pub mod tcp;
pub mod tls;
mod transport;

pub use ipc::Ipc;
pub use quic::Quic;
pub use tcp::Tcp;
pub use tls::Tls;
pub use transport::{
    is_connection_error, BoxError, ConnectFuture, Connected, Listener, Transport, TransportError,
};
