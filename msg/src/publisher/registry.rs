//! The subscriber sessions and their subscriptions: changed under one lock by the sessions
//! as subscribers come, go and (un)subscribe, read by publishers with none, as immutable
//! snapshots swapped in whole.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, Guard};

use super::interest::{Interest, SubscriptionChanges};
use super::queue::{lock, Session};
use crate::topic::Trie;
use msg_core::proto::IdMap;

/// Shards of the session table: a subscriber coming or going copies one shard (and this
/// many pointers), not every session.
const SHARDS: usize = 64;

type Shard<A> = IdMap<Arc<Session<A>>>;

/// The sessions by id, split in shards shared between snapshots.
pub(crate) struct Sessions<A> {
    shards: Vec<Arc<Shard<A>>>,
    len: usize,
}

impl<A> Clone for Sessions<A> {
    fn clone(&self) -> Self {
        Sessions {
            shards: self.shards.clone(),
            len: self.len,
        }
    }
}

impl<A> Default for Sessions<A> {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }
}

impl<A> Sessions<A> {
    fn shard(id: u64) -> usize {
        (id % SHARDS as u64) as usize
    }

    /// The session `id`, if it is registered.
    pub(super) fn get(&self, id: u64) -> Option<&Arc<Session<A>>> {
        self.shards[Self::shard(id)].get(&id)
    }

    /// How many sessions are registered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Every session, in no order.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Arc<Session<A>>> {
        self.shards.iter().flat_map(|shard| shard.values())
    }

    fn insert(&mut self, session: Arc<Session<A>>) {
        let shard = Arc::make_mut(&mut self.shards[Self::shard(session.id)]);
        if shard.insert(session.id, session).is_none() {
            self.len += 1;
        }
    }

    fn remove(&mut self, id: u64) {
        let shard = &mut self.shards[Self::shard(id)];
        if shard.contains_key(&id) {
            Arc::make_mut(shard).remove(&id);
            self.len -= 1;
        }
    }
}

/// The subscriptions and sessions in force at one time. Never changed once made: a
/// change makes the next one, sharing what it did not touch.
pub(crate) struct Snapshot<A> {
    /// Counts the snapshots made: a route found in this one is current while this is.
    pub(super) version: u64,
    pub(super) trie: Trie,
    pub(super) sessions: Arc<Sessions<A>>,
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

/// What the next snapshot is made from, and the patterns held across the sessions.
struct Next<A> {
    snapshot: Snapshot<A>,
    interest: Interest,
}

/// The sessions and subscriptions of a publisher.
pub(crate) struct Registry<A> {
    /// What the next snapshot is made from. Only changes take this lock, never a publish.
    next: Mutex<Next<A>>,
    /// The snapshot in force, read by publishers without a lock.
    current: ArcSwap<Snapshot<A>>,
    /// The version of `current`, set once it is swapped in: a publisher whose cached route
    /// is of this version needs nothing else (see [`version`](Self::version)).
    version: AtomicU64,
}

impl<A> Default for Registry<A> {
    fn default() -> Self {
        let empty = Snapshot {
            version: 0,
            trie: Trie::default(),
            sessions: Arc::default(),
        };
        Registry {
            next: Mutex::new(Next {
                snapshot: empty.clone(),
                interest: Interest::default(),
            }),
            current: ArcSwap::from_pointee(empty),
            version: AtomicU64::new(0),
        }
    }
}

impl<A> Registry<A> {
    /// The snapshot in force. Hold it briefly: it is for reading, not for keeping.
    pub(super) fn load(&self) -> Guard<Arc<Snapshot<A>>> {
        self.current.load()
    }

    /// The version of the snapshot in force. It is set after the snapshot is swapped in
    /// and before the change that made it is acknowledged, so a publisher that reads it
    /// after an acknowledgement sees that change or a later one.
    pub(super) fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Makes one change to the next snapshot, then swaps it in.
    fn change(&self, f: impl FnOnce(&mut Trie, &mut Arc<Sessions<A>>, &mut Interest)) {
        let mut guard = lock(&self.next);
        let Next {
            snapshot: next,
            interest,
        } = &mut *guard;
        f(&mut next.trie, &mut next.sessions, interest);
        next.version += 1;
        // Swapped under the lock, so that snapshots come in the order they were made.
        self.current.store(Arc::new(next.clone()));
        self.version.store(next.version, Ordering::Release);
        // Told once the snapshot is in force: a publication made on hearing of a new
        // subscription is routed by it.
        interest.tell_watchers();
    }

    /// Registers a new subscriber's session.
    pub(super) fn add(&self, session: Arc<Session<A>>) {
        self.change(|_, sessions, _| Arc::make_mut(sessions).insert(session));
    }

    /// Unregisters session `id` and every pattern it holds.
    pub(super) fn remove(&self, id: u64) {
        self.change(|trie, sessions, interest| {
            for pattern in trie.patterns_of(id) {
                interest.remove(&pattern);
            }
            trie.remove_all(id);
            Arc::make_mut(sessions).remove(id);
        });
    }

    /// Applies the changes `subscriptions` has pending, all in one new snapshot; with
    /// none pending, touches nothing.
    pub(super) fn apply(&self, subscriptions: &mut Subscriptions) {
        if subscriptions.pending.is_empty() {
            return;
        }
        let id = subscriptions.id;
        let pending = &mut subscriptions.pending;
        self.change(|trie, _, interest| {
            for (pattern, subscribe) in pending.drain() {
                if subscribe {
                    if trie.insert(&pattern, id) {
                        interest.add(&pattern);
                    }
                } else if trie.remove(&pattern, id) {
                    interest.remove(&pattern);
                }
            }
        });
    }

    /// The changes to the patterns held across the sessions, from those held now on.
    pub(super) fn watch(&self) -> SubscriptionChanges {
        lock(&self.next).interest.watch()
    }

    /// The patterns held across the sessions now, sorted.
    pub(super) fn patterns(&self) -> Vec<String> {
        lock(&self.next).interest.patterns()
    }
}

/// One subscriber's subscriptions as its session sees them: the snapshot in force (it is
/// the only one that changes its own patterns there) and the changes read since, not yet
/// applied. Whether a change changes anything is known from these with no lock; the
/// changes that do wait for [`Registry::apply`] to make them one snapshot.
#[derive(Debug)]
pub(crate) struct Subscriptions {
    /// The session's id in the trie.
    id: u64,
    /// Patterns held, changes not yet applied included.
    held: usize,
    /// Changes since the last [`Registry::apply`]: the pattern and whether it is now held.
    /// A change undone before it was applied is no change.
    pending: HashMap<Box<str>, bool>,
}

impl Subscriptions {
    /// The subscriptions of session `id`: none yet.
    pub(super) fn new(id: u64) -> Self {
        Subscriptions {
            id,
            held: 0,
            pending: HashMap::new(),
        }
    }

    /// How many patterns are held.
    pub(super) fn len(&self) -> usize {
        self.held
    }

    /// Whether `pattern` is held, changes not yet applied included.
    pub(super) fn holds<A>(&self, registry: &Registry<A>, pattern: &str) -> bool {
        match self.pending.get(pattern) {
            Some(held) => *held,
            None => registry.load().trie.contains(pattern, self.id),
        }
    }

    /// Subscribes to `pattern`, or unsubscribes from it: recorded for the next
    /// [`Registry::apply`] if it changes anything.
    pub(super) fn set<A>(&mut self, registry: &Registry<A>, pattern: &str, subscribe: bool) {
        if self.holds(registry, pattern) == subscribe {
            return;
        }
        if subscribe {
            self.held += 1;
        } else {
            self.held -= 1;
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
        let mut subs = Subscriptions::new(1);
        subs.set(&registry, "a", true);
        registry.apply(&mut subs);
        let version = registry.load().version;
        subs.set(&registry, "a", true);
        subs.set(&registry, "b", false);
        subs.set(&registry, "c", true);
        subs.set(&registry, "c", false);
        registry.apply(&mut subs);
        assert_eq!(registry.load().version, version);
        assert!(subs.holds(&registry, "a") && !subs.holds(&registry, "c"));
        assert_eq!(subs.len(), 1);
    }

    #[test]
    fn changes_gathered_together_become_one_snapshot() {
        let registry: Registry<()> = Registry::default();
        let mut subs = Subscriptions::new(7);
        let version = registry.load().version;
        for p in ["a", "b.*", "c.>"] {
            subs.set(&registry, p, true);
        }
        subs.set(&registry, "a", false);
        registry.apply(&mut subs);
        let snapshot = registry.load();
        assert_eq!(snapshot.version, version + 1);
        let mut out = Vec::new();
        snapshot.trie.matching("a", &mut out);
        assert!(out.is_empty());
        snapshot.trie.matching("b.x", &mut out);
        assert_eq!(out, vec![7]);
        assert_eq!(subs.len(), 2);
        // Unsubscribing from an applied pattern is a change; from one never held, none.
        subs.set(&registry, "c.>", false);
        subs.set(&registry, "z", false);
        assert_eq!(subs.len(), 1);
        registry.apply(&mut subs);
        assert_eq!(registry.load().version, version + 2);
        assert!(!registry.load().trie.contains("c.>", 7));
    }

    #[test]
    fn a_session_coming_and_going_copies_one_shard() {
        let registry: Registry<()> = Registry::default();
        let options = super::super::PubOptions::default();
        let pressure = Arc::default();
        for id in 0..200 {
            registry.add(Arc::new(Session::new(id, (), &options, &pressure)));
        }
        let before = Guard::into_inner(registry.load());
        registry.remove(5);
        let after = registry.load();
        assert_eq!((before.sessions.len(), after.sessions.len()), (200, 199));
        assert!(after.sessions.get(5).is_none() && after.sessions.get(6).is_some());
        let shared = (0..SHARDS)
            .filter(|&i| Arc::ptr_eq(&before.sessions.shards[i], &after.sessions.shards[i]))
            .count();
        assert_eq!(shared, SHARDS - 1);
    }
}
