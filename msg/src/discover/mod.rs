//! Discovery: where a socket's peers are, as a stream of changes.
//!
//! A discovery source is any [`Stream`](futures_core::Stream) of
//! `Result<`[`Change`]`<K, Target>, E>`: [`Change::Insert`] when an endpoint appears,
//! [`Change::Remove`] when it goes, an error item when the source failed for now (it keeps
//! going). [`ReqSocket::discover`](crate::ReqSocket::discover) (requests balanced over the
//! endpoints) and [`SubSocket::discover`](crate::SubSocket::discover) (every publisher) take
//! one, so users plug in their own registry; [`list`] makes a static list one; [`Dns`] is
//! the one msg ships: a DNS name (a Kubernetes headless
//! service, a round robin, an SRV record) resolved again on its records' TTL, giving the
//! difference from the last answer (feature `dns`, on by default).
//!
//! # Example
//!
//! ```no_run
//! # #[cfg(feature = "dns")]
//! # mod doc {
//! use msg::discover::Dns;
//! use msg::{SubSocket, Tcp};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut sub = SubSocket::new(Tcp::default());
//! // Every publisher behind the name, as they come and go.
//! sub.discover(Dns::new("prices.internal:9000")?);
//! sub.subscribe("eur.>").await?;
//! # Ok(())
//! # }
//! # }
//! # fn main() {}
//! ```

#[cfg(feature = "dns")]
mod dns;

pub use crate::req::list::list;
#[cfg(feature = "dns")]
pub use dns::{Dns, DnsBuilder, DnsError, DnsRefresh, MAX_TTL, MIN_REFRESH_INTERVAL, MIN_TTL};
pub use tower::discover::Change;
