//! Routing: the sessions a topic goes to, found in the registry's snapshot in force and
//! cached by each socket handle for the topic it published last.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use bytes::Bytes;

use super::queue::Session;
use super::registry::Registry;
use crate::topic::validate_topic;
use crate::Error;

/// The sessions a topic goes to.
pub(super) type Sessions<A> = Arc<[Arc<Session<A>>]>;

/// A topic as shared bytes, checked, and the sessions it goes to.
pub(super) struct Routed<A> {
    pub(super) topic: Bytes,
    pub(super) sessions: Sessions<A>,
}

/// The last topic published and the sessions it matched: a publisher mostly repeats a few
/// topics, and subscriptions change far less often than messages go out, so the topic is
/// checked, copied and matched once and the result reused while the snapshot it was found
/// in is in force.
struct Route<A> {
    /// The version of the snapshot it was found in.
    version: u64,
    topic: Bytes,
    sessions: Sessions<A>,
}

/// One socket handle's route cache. Each clone of a handle has its own, so handles never
/// contend on it, and a publish reads it and the registry without a lock.
pub(super) struct RouteCache<A> {
    last: ArcSwapOption<Route<A>>,
}

impl<A> Default for RouteCache<A> {
    fn default() -> Self {
        RouteCache {
            last: ArcSwapOption::empty(),
        }
    }
}

impl<A> RouteCache<A> {
    /// The topic as shared bytes and the sessions whose subscriptions match it, from the
    /// cached route while it is current.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTopic`] for a topic that breaks the grammar.
    pub(super) fn route(&self, registry: &Registry<A>, topic: &str) -> Result<Routed<A>, Error> {
        let snapshot = registry.load();
        let cached = self.last.load();
        if let Some(route) = cached.as_deref() {
            if route.version == snapshot.version && route.topic.as_ref() == topic.as_bytes() {
                return Ok(Routed {
                    topic: route.topic.clone(),
                    sessions: route.sessions.clone(),
                });
            }
        }
        validate_topic(topic)?;
        let mut ids = Vec::new();
        snapshot.trie.matching(topic, &mut ids);
        let sessions: Sessions<A> = ids
            .iter()
            .filter_map(|&id| snapshot.sessions.get(id).cloned())
            .collect();
        let topic = match cached.as_deref() {
            // Only the subscriptions changed: the topic's bytes are shared again.
            Some(route) if route.topic.as_ref() == topic.as_bytes() => route.topic.clone(),
            _ => Bytes::copy_from_slice(topic.as_bytes()),
        };
        self.last.store(Some(Arc::new(Route {
            version: snapshot.version,
            topic: topic.clone(),
            sessions: sessions.clone(),
        })));
        Ok(Routed { topic, sessions })
    }
}
