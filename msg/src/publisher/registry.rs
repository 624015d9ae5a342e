//! The subscriber sessions and their subscriptions: changed under one lock by the sessions
//! as subscribers come, go and (un)subscribe, read by publishers with none, as immutable
//! snapshots swapped in whole.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::queue::{lock, Session};
use crate::ids::IdMap;
use crate::topic::Trie;

pub(super) type SessionMap<A> = IdMap<Arc<Session<A>>>;

/// The subscriptions and sessions in force at one time. Never changed once made: a
/// change makes the next one, sharing what it did not touch.
pub(crate) struct Snapshot<A> {
    /// Counts the snapshots made: a route found in this one is current while this is.
    pub(super) version: u64,
    pub(super) trie: Trie,
    pub(super) sessions: Arc<SessionMap<A>>,
}

impl<A> Clone for Snapshot<A> {
    fn clone(&self) -> Self {
        Snapshot {
            version: self.version,
            trie: self.trie.clone(),
            sessions: self.sessions.clone(),
        }
    }
}

/// The sessions and subscriptions of a publisher.
pub(crate) struct Registry<A> {
    /// What the next snapshot is made from. Only changes take this lock, never a publish.
    next: Mutex<Snapshot<A>>,
    /// The snapshot in force, read by publishers without a lock.
    current: ArcSwap<Snapshot<A>>,
}

impl<A> Default for Registry<A> {
    fn default() -> Self {
        let empty = Snapshot {
            version: 0,
            trie: Trie::default(),
            sessions: Arc::default(),
        };
        Registry {
            next: Mutex::new(empty.clone()),
            current: ArcSwap::from_pointee(empty),
        }
    }
}

impl<A> Registry<A> {
    /// The snapshot in force. Hold it briefly: it is for reading, not for keeping.
    pub(super) fn load(&self) -> Guard<Arc<Snapshot<A>>> {
        self.current.load()
    }

    /// Makes one change to the next snapshot, then swaps it in.
    fn change(&self, f: impl FnOnce(&mut Trie, &mut Arc<SessionMap<A>>)) {
        let mut guard = lock(&self.next);
        let next = &mut *guard;
        f(&mut next.trie, &mut next.sessions);
        next.version += 1;
        // Swapped under the lock, so that snapshots come in the order they were made.
        self.current.store(Arc::new(next.clone()));
    }

    /// Registers a new subscriber's session.
    pub(super) fn add(&self, session: Arc<Session<A>>) {
        self.change(|_, sessions| {
            Arc::make_mut(sessions).insert(session.id, session);
        });
    }

    /// Unregisters a session and everything `subscriptions` holds or changed for it.
    pub(super) fn remove(&self, id: u64, subscriptions: &Subscriptions) {
        self.change(|trie, sessions| {
            for pattern in subscriptions
                .held
                .iter()
                .chain(subscriptions.pending.keys())
            {
                trie.remove(pattern, id);
            }
            Arc::make_mut(sessions).remove(&id);
        });
    }

    /// Applies the changes `subscriptions` has pending for session `id`, all in one new
    /// snapshot; with none pending, touches nothing.
    pub(super) fn apply(&self, id: u64, subscriptions: &mut Subscriptions) {
        if subscriptions.pending.is_empty() {
            return;
        }
        let pending = &mut subscriptions.pending;
        self.change(|trie, _| {
            for (pattern, subscribe) in pending.drain() {
                if subscribe {
                    trie.insert(&pattern, id);
                } else {
                    trie.remove(&pattern, id);
                }
            }
        });
    }
}

/// The patterns one subscriber holds, kept by its session: whether a change changes
/// anything is known here, with no lock, and the changes that do are gathered until
/// [`Registry::apply`] makes them one snapshot.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// The patterns held, changes not yet applied included. At most the publisher's
    /// `max_subscriptions`, each at most its `max_pattern_len`.
    held: HashSet<Box<str>>,
    /// Changes since the last [`Registry::apply`]: the pattern and whether it is now held.
    /// A change undone before it was applied is no change.
    pending: HashMap<Box<str>, bool>,
}

impl Subscriptions {
    /// How many patterns are held.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }

    /// Whether `pattern` is held.
    pub(super) fn holds(&self, pattern: &str) -> bool {
        self.held.contains(pattern)
    }

    /// Subscribes to `pattern`, or unsubscribes from it: recorded for the next
    /// [`Registry::apply`] if it changes anything.
    pub(super) fn set(&mut self, pattern: &str, subscribe: bool) {
        let changed = if subscribe {
            !self.held.contains(pattern) && self.held.insert(pattern.into())
        } else {
            self.held.remove(pattern)
        };
        if !changed {
            return;
        }
        match self.pending.entry(pattern.into()) {
            // The change before was the opposite one: together they change nothing.
            Entry::Occupied(undone) => {
                undone.remove();
            }
            Entry::Vacant(change) => {
                change.insert(subscribe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_that_change_nothing_leave_the_snapshot_in_force() {
        let registry: Registry<()> = Registry::default();
        let mut subs = Subscriptions::default();
        subs.set("a", true);
        registry.apply(1, &mut subs);
        let version = registry.load().version;
        subs.set("a", true);
        subs.set("b", false);
        subs.set("c", true);
        subs.set("c", false);
        registry.apply(1, &mut subs);
        assert_eq!(registry.load().version, version);
        assert!(subs.holds("a") && !subs.holds("c"));
    }

    #[test]
    fn changes_gathered_together_become_one_snapshot() {
        let registry: Registry<()> = Registry::default();
        let mut subs = Subscriptions::default();
        let version = registry.load().version;
        for p in ["a", "b.*", "c.>"] {
            subs.set(p, true);
        }
        subs.set("a", false);
        registry.apply(7, &mut subs);
        let snapshot = registry.load();
        assert_eq!(snapshot.version, version + 1);
        let mut out = Vec::new();
        snapshot.trie.matching("a", &mut out);
        assert!(out.is_empty());
        snapshot.trie.matching("b.x", &mut out);
        assert_eq!(out, vec![7]);
        assert_eq!(subs.len(), 2);
    }
}
