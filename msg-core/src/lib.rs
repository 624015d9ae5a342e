//! The vocabulary of `msg`: the [`Message`] that flows through sockets and layers, wire
//! protocol v1 ([`wire`]) with its sans-IO [`FrameCodec`] and [`WriteBuf`], the
//! [`Authenticator`] trait, and the protocol's error type, [`FrameError`].
//!
//! Nothing here touches a socket or a clock: bytes go in, frames come out, and the other way
//! round. The sockets live in the `msg` crate.
//!
//! # Example
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use msg_core::{Frame, FrameCodec, FrameError, FrameKind};
//! use tokio_util::codec::{Decoder, Encoder};
//!
//! let mut codec = FrameCodec::with_max_frame_len(1024);
//! let mut wire = BytesMut::new();
//! codec.encode(Frame::new(FrameKind::Request, 1, Bytes::from("ping")), &mut wire)?;
//!
//! let frame = codec.decode(&mut wire)?.expect("a whole frame");
//! assert_eq!(frame.kind, FrameKind::Request);
//! assert_eq!(frame.payload, "ping");
//!
//! // A hostile length prefix is refused before anything is reserved for it.
//! let mut evil = BytesMut::from(&b"ms\x01\x10\x00\x00\x00\x00\0\0\0\0\0\0\0\x01\xff\xff\xff\xff"[..]);
//! assert!(matches!(codec.decode(&mut evil), Err(FrameError::TooLarge { .. })));
//! # Ok::<(), FrameError>(())
//! ```
#![warn(missing_docs, unreachable_pub)]
#![forbid(unsafe_code)]

mod auth;
mod code;
mod codec;
mod error;
mod heartbeat;
mod message;
mod metadata;
pub mod proto;
mod route;
pub mod wire;
mod write_buf;

pub use auth::Authenticator;
pub use code::Code;
pub use codec::{FrameCodec, DEFAULT_MAX_FRAME_LEN};
pub use error::FrameError;
pub use heartbeat::{Beat, Heartbeat, HeartbeatConfig};
pub use message::{Encoding, Headers, Message};
pub use metadata::{Metadata, MetadataError, MAX_METADATA_LEN, MAX_METADATA_NAME_LEN};
pub use route::{IntoRoute, Route, RouteError, MAX_ROUTE_LEN};
pub use wire::{Flags, Frame, FrameKind, SocketType};
pub use write_buf::{SharedHead, WriteBuf, COPY_THRESHOLD, MAX_IO_SLICES};
