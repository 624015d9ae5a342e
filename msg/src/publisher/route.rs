//! Routing: the sessions a topic goes to, found in the registry's snapshot in force and
//! cached by each socket handle for the topic it published last.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::queue::{lock, Session};
use super::registry::Registry;
use crate::topic::validate_topic;
use crate::Error;

/// A topic as shared bytes, checked, and the sessions it goes to, as found in the
/// registry's snapshot of one version. A publish holds it by reference count.
pub(super) struct Routed<A> {
    /// The version of the snapshot it was found in.
    version: u64,
    pub(super) topic: Bytes,
    pub(super) sessions: Box<[Arc<Session<A>>]>,
}

/// One socket handle's route cache: the last topic it published and the sessions that
/// topic matched. A publisher mostly repeats a few topics, and subscriptions change far
/// less often than messages go out, so the topic is checked, copied and matched once and
/// the route reused while the registry's version is the one it was found in.
///
/// Each clone of a handle has its own cache, behind a lock that only publishes through
/// that handle take; a publish reads the registry's version with one atomic load and its
/// snapshot only when the route must be found again.
pub(super) struct RouteCache<A> {
    last: Mutex<Option<Arc<Routed<A>>>>,
}

impl<A> Default for RouteCache<A> {
    fn default() -> Self {
        RouteCache {
            last: Mutex::new(None),
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
    pub(super) fn route(
        &self,
        registry: &Registry<A>,
        topic: &str,
    ) -> Result<Arc<Routed<A>>, Error> {
        let version = registry.version();
        let mut last = lock(&self.last);
        let known = match last.as_ref() {
            Some(route) if route.topic.as_ref() == topic.as_bytes() => {
                if route.version == version {
                    return Ok(route.clone());
                }
                // Only the subscriptions changed: the topic's bytes are shared again.
                Some(route.topic.clone())
            }
            _ => None,
        };
        validate_topic(topic)?;
        let snapshot = registry.load();
        let mut ids = Vec::new();
        snapshot.trie.matching(topic, &mut ids);
        let sessions = ids
            .iter()
            .filter_map(|&id| snapshot.sessions.get(id).cloned())
            .collect();
        let route = Arc::new(Routed {
            version: snapshot.version,
            topic: known.unwrap_or_else(|| Bytes::copy_from_slice(topic.as_bytes())),
            sessions,
        });
        *last = Some(route.clone());
        Ok(route)
    }
}
