//! Connections of your own: msg's Request/Reply protocol over any stream, in the manner of
//! hyper's `client::conn` and `server::conn`.
//!
//! [`client::handshake`] says msg's hello over any `AsyncRead + AsyncWrite` stream and
//! returns a [`SendRequest`](client::SendRequest), a [`tower::Service`] like a
//! [`ReqSocket`](crate::ReqSocket), and the [`Connection`](client::Connection) future that
//! drives the stream; [`server::serve_connection`] serves every request on a stream with a
//! `tower::Service`, as [`serve`](crate::serve) does on each connection it accepts. With
//! them, an accept loop, a connection pool or an in-process test of your own needs no
//! socket. A `ReqSocket` is a dialer and a reconnect supervisor over the same connection;
//! a `RepSocket` is an accept loop over the same.
//!
//! # Example
//!
//! Both ends in one process, over an in-memory pipe:
//!
//! ```
//! use bytes::Bytes;
//! use msg::conn::{client, server};
//! use msg::{ReqOptions, Request};
//! use tower::service_fn;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), msg::Error> {
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//!
//! let echo = service_fn(|req: Request<&'static str>| async move {
//!     Ok::<_, std::convert::Infallible>(req.msg().clone())
//! });
//! tokio::spawn(server::serve_connection(server_io, "in-process", echo));
//!
//! let (sender, conn) = client::handshake(client_io, ReqOptions::default()).await?;
//! tokio::spawn(conn);
//! assert_eq!(sender.request(Bytes::from("hello")).await?, "hello");
//! # Ok(())
//! # }
//! ```

pub mod client;
pub mod server;
