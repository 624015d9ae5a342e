//! The protocol roles, sans-IO: what each end of a connection does with the frames it
//! receives and the commands its socket gives, with no socket, no task and no clock of its
//! own.
//!
//! A connection is a [`Link`] (the prelude every role shares: the frame codec, the write
//! buffer, the heartbeat, pings and pongs) and one role over it:
//!
//! | role | socket | receives | commands |
//! |---|---|---|---|
//! | [`Requester`] | `ReqSocket` | responses, error-responses | send, cancel |
//! | [`Replier`] | `RepSocket` | requests, cancels | respond, fail |
//! | [`Publisher`] | `PubSocket` | (un)subscribes | ack, publish |
//! | [`Subscriber`] | `SubSocket` | publications, acks | subscribe, unsubscribe |
//!
//! before which [`ClientHandshake`] and [`ServerHandshake`] run the hello exchange.
//!
//! A driver feeds the link the bytes it read, hands each frame the link decodes to the
//! role, writes what the link has queued, and calls [`Link::handle_timeout`] when
//! [`Link::poll_timeout`] says. Time is always an argument. Every rule of the protocol a
//! role enforces (a reply to a request never sent, a sequence number going backwards, an
//! ack nobody asked for, a frame the role never receives) is a typed [`FrameError`], and the
//! connection that broke it is closed by the driver.
//!
//! # Example
//!
//! A requester and a replier, wired back to back in memory:
//!
//! ```
//! use bytes::{Bytes, BytesMut};
//! use msg_core::proto::{Answer, Caller, Incoming, Link, Replier, Requester};
//! use msg_core::Message;
//!
//! let (mut client, mut server) = (Link::new(1024), Link::new(1024));
//! let (mut req, mut rep) = (Requester::new(), Replier::new());
//!
//! let caller = Caller { slot: 0, generation: 7 };
//! req.send(caller, &Message::from("ping"), &mut client)?;
//!
//! // The client's bytes reach the server.
//! let mut wire = BytesMut::from(&client.take_transmit()[..]);
//! let frame = server.decode(&mut wire)?.expect("a whole frame");
//! let Incoming::Request { id, msg } = rep.receive(frame)? else { panic!("a request") };
//! assert_eq!(msg.payload(), "ping");
//! rep.respond(id, &Message::from("pong"), &mut server)?;
//!
//! // And the server's back to the client.
//! let mut wire = BytesMut::from(&server.take_transmit()[..]);
//! let frame = client.decode(&mut wire)?.expect("a whole frame");
//! let (to, answer) = req.receive(frame)?.expect("the caller still waits");
//! assert_eq!(to, caller);
//! assert!(matches!(answer, Answer::Reply(msg) if msg.payload() == "pong"));
//! # Ok::<(), msg_core::FrameError>(())
//! ```

mod handshake;
mod ids;
mod link;
mod publisher;
mod replier;
mod requester;
mod subscriber;

pub use handshake::{ClientHandshake, HandshakeError, ServerHandshake, Welcome};
pub use ids::{IdHasher, IdMap};
pub use link::{Link, PeerSilent, WRITE_HIGH_WATER};
pub use publisher::{Change, Publisher};
pub use replier::{Incoming, Replier};
pub use requester::{Answer, Caller, Requester};
pub use subscriber::{Delivery, Subscriber};

use crate::{FrameError, FrameKind};

/// A frame the role never receives: the peer broke the protocol.
pub(crate) fn unexpected(kind: FrameKind) -> FrameError {
    FrameError::Unexpected { kind }
}
