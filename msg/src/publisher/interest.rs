//! [`SubscriptionChanges`]: the patterns a publisher's subscribers hold, taken together, as
//! they change; what ZeroMQ's XPUB socket reads as subscription messages. A forwarder
//! subscribes upstream to exactly these.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::task::AtomicWaker;

use super::queue::lock;

/// A pattern that the first of a publisher's subscribers took (`added`), or that the last
/// one holding it gave up or took away by leaving (not `added`). See
/// [`PubSocket::subscription_changes`](super::PubSocket::subscription_changes).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct SubscriptionChange {
    /// The pattern, as the subscribers sent it.
    pub pattern: String,
    /// Whether some subscriber holds it now.
    pub added: bool,
}

/// The changes to the set of patterns a publisher's subscribers hold, taken together: a
/// [`Stream`] of [`SubscriptionChange`]s, from
/// [`PubSocket::subscription_changes`](super::PubSocket::subscription_changes).
///
/// It first yields every pattern held when it was made, as added; then each pattern that
/// the first subscriber takes, and each that the last one gives up. Changes not yet read are
/// kept as the difference from what was read, one entry per pattern at most: a pattern
/// taken and given up again before it is read is no change. So it never loses the set and
/// its memory is bounded by the patterns held, however far behind its reader is. Patterns
/// come out sorted within what is waiting. It ends once the publisher (every handle of it,
/// and every subscriber's session) is gone.
pub struct SubscriptionChanges {
    watch: Arc<Watch>,
}

impl fmt::Debug for SubscriptionChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionChanges")
            .field("waiting", &lock(&self.watch.pending).len())
            .finish_non_exhaustive()
    }
}

impl SubscriptionChanges {
    /// Takes the next change waiting, if there is one, without waiting for one.
    pub fn try_next(&mut self) -> Option<SubscriptionChange> {
        let (pattern, added) = lock(&self.watch.pending).pop_first()?;
        Some(SubscriptionChange {
            pattern: pattern.into(),
            added,
        })
    }
}

impl Stream for SubscriptionChanges {
    type Item = SubscriptionChange;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(change) = this.try_next() {
            return Poll::Ready(Some(change));
        }
        this.watch.waker.register(cx.waker());
        // Looked at again once registered, so that a change made in between is not missed.
        if let Some(change) = this.try_next() {
            return Poll::Ready(Some(change));
        }
        if this.watch.closed.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

/// One [`SubscriptionChanges`]' share: the changes it has not read yet.
#[derive(Default)]
struct Watch {
    /// Each pattern whose state differs from what was read, with its state now.
    pending: Mutex<BTreeMap<Box<str>, bool>>,
    waker: AtomicWaker,
    /// The publisher is gone: nothing more will change.
    closed: AtomicBool,
}

impl Watch {
    fn tell(&self, pattern: &str, added: bool) {
        {
            let mut pending = lock(&self.pending);
            // An opposite change not yet read means the reader's view is right again.
            if pending.remove(pattern).is_none() {
                pending.insert(pattern.into(), added);
            }
        }
        self.waker.wake();
    }
}

/// How many subscribers hold each pattern, and the watchers told when a pattern is first
/// taken or last given up. Changed only under the registry's lock, in the order the
/// snapshots are made.
#[derive(Default)]
pub(super) struct Interest {
    holders: HashMap<Box<str>, usize>,
    watchers: Vec<Weak<Watch>>,
    /// Changes made to the next snapshot, told to the watchers by
    /// [`tell_watchers`](Self::tell_watchers) once it is in force: a watcher that
    /// publishes on a change it was told of is routed by the change.
    untold: Vec<(Box<str>, bool)>,
}

impl Interest {
    /// One more subscriber holds `pattern`.
    pub(super) fn add(&mut self, pattern: &str) {
        let holders = self.holders.entry(pattern.into()).or_insert(0);
        *holders += 1;
        if *holders == 1 {
            self.untold.push((pattern.into(), true));
        }
    }

    /// One subscriber fewer holds `pattern`.
    pub(super) fn remove(&mut self, pattern: &str) {
        let Some(holders) = self.holders.get_mut(pattern) else {
            return;
        };
        *holders -= 1;
        if *holders == 0 {
            self.holders.remove(pattern);
            self.untold.push((pattern.into(), false));
        }
    }

    /// Tells the watchers the changes made since they were last told: called once the
    /// snapshot holding them is in force.
    pub(super) fn tell_watchers(&mut self) {
        if self.untold.is_empty() {
            return;
        }
        let untold = std::mem::take(&mut self.untold);
        self.watchers.retain(|watcher| match watcher.upgrade() {
            Some(watcher) => {
                for (pattern, added) in &untold {
                    watcher.tell(pattern, *added);
                }
                true
            }
            None => false,
        });
    }

    /// A new watcher, with every pattern held now waiting for it as added.
    pub(super) fn watch(&mut self) -> SubscriptionChanges {
        // The new watcher starts from the patterns held; the others hear of the changes
        // that made them first.
        self.tell_watchers();
        let pending = self.holders.keys().map(|p| (p.clone(), true)).collect();
        let watch = Arc::new(Watch {
            pending: Mutex::new(pending),
            ..Watch::default()
        });
        self.watchers.push(Arc::downgrade(&watch));
        SubscriptionChanges { watch }
    }

    /// The patterns held now, sorted.
    pub(super) fn patterns(&self) -> Vec<String> {
        let mut patterns: Vec<String> = self.holders.keys().map(|p| p.to_string()).collect();
        patterns.sort();
        patterns
    }
}

impl Drop for Interest {
    fn drop(&mut self) {
        for watcher in self.watchers.drain(..).filter_map(|w| w.upgrade()) {
            watcher.closed.store(true, Ordering::Release);
            watcher.waker.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(pattern: &str, added: bool) -> Option<SubscriptionChange> {
        Some(SubscriptionChange {
            pattern: pattern.into(),
            added,
        })
    }

    #[test]
    fn only_the_first_holder_and_the_last_one_change_the_set() {
        let mut interest = Interest::default();
        interest.add("a");
        let mut changes = interest.watch();
        assert_eq!(changes.try_next(), change("a", true));
        interest.add("a");
        interest.add("b");
        interest.remove("a");
        assert_eq!(
            changes.try_next(),
            None,
            "told once the snapshot is in force"
        );
        interest.tell_watchers();
        assert_eq!(changes.try_next(), change("b", true));
        assert_eq!(changes.try_next(), None);
        interest.remove("a");
        interest.tell_watchers();
        assert_eq!(changes.try_next(), change("a", false));
        assert_eq!(interest.patterns(), vec!["b"]);
    }

    #[test]
    fn a_change_undone_before_it_is_read_is_none() {
        let mut interest = Interest::default();
        let mut changes = interest.watch();
        interest.add("a");
        interest.remove("a");
        interest.remove("never held");
        interest.tell_watchers();
        assert_eq!(changes.try_next(), None);
        drop(interest);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(Pin::new(&mut changes).poll_next(&mut cx), Poll::Ready(None));
    }
}
