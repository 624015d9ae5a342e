//! [`PubStats`] and [`SubscriberStats`]: a publisher's counters.

/// Counters of a [`PubSocket`](super::PubSocket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PubStats {
    /// Messages published.
    pub published: u64,
    /// Copies queued for subscribers (one per matching subscriber per message).
    pub queued: u64,
    /// Copies dropped because a subscriber's queue was full or it left with messages
    /// still queued.
    pub dropped: u64,
    /// Subscribers connected now.
    pub subscribers: usize,
    /// Times the subscriptions in force changed, a subscriber coming or leaving included.
    /// Each change makes every handle match its next topic afresh; changes read from one
    /// subscriber together count once, and a change that changes nothing (subscribing to
    /// a pattern held, unsubscribing from one not held) does not count.
    pub subscription_changes: u64,
}

/// Counters of one subscriber of a [`PubSocket`](super::PubSocket).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberStats<A> {
    /// The subscriber's address.
    pub peer: A,
    /// Messages written to its connection.
    pub sent: u64,
    /// Messages dropped for it.
    pub dropped: u64,
    /// Messages waiting in its queue.
    pub queued: usize,
}
