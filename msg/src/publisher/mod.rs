//! [`PubSocket`]: the publishing side of Publish/Subscribe.
//!
//! One concern a file:
//!
//! | file | what it holds |
//! |---|---|
//! | `options.rs` | [`PubOptions`], [`SlowSubscriber`] |
//! | `publication.rs` | [`Publication`], what the socket takes as a [`tower::Service`] |
//! | `socket.rs` | [`PubSocket`], the handle: bind, publish, close, readiness |
//! | `hub.rs` | what handles, accept loop and sessions share; a publication's way into the queues |
//! | `interest.rs` | [`SubscriptionChanges`]: the patterns held across the subscribers, as they change |
//! | `registry.rs` | sessions and subscriptions: changed under a lock, read as immutable snapshots |
//! | `route.rs` | the sessions a topic goes to, cached per handle |
//! | `queue.rs` | a subscriber's bounded queue, and the count of full ones |
//! | `session.rs` | a subscriber's session: applies its subscriptions, writes its queue |
//! | `stats.rs` | [`PubStats`], [`SubscriberStats`] |
//!
//! A publish takes no lock shared by the whole socket: its handle finds the sessions in
//! the registry's snapshot in force (read without a lock) or in its own cache of the last
//! topic, encodes the frame's header once, and hands the frame to each session's queue.

mod hub;
mod interest;
mod options;
mod publication;
mod queue;
mod registry;
mod route;
mod session;
mod socket;
mod stats;

pub use interest::{SubscriptionChange, SubscriptionChanges};
pub use options::{PubOptions, SlowSubscriber};
pub use publication::Publication;
pub use socket::{PubSocket, PublishFuture};
pub use stats::{PubStats, SubscriberStats};

use hub::Hub;
use queue::{OutFrame, Session};
