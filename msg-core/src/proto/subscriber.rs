//! [`Subscriber`]: the subscribing side of publish/subscribe.

use bytes::Bytes;

use super::ids::IdMap;
use super::{unexpected, Link};
use crate::{Encoding, Frame, FrameError, FrameKind};

/// What a received frame delivers to a subscriber.
#[derive(Debug)]
pub enum Delivery<W> {
    /// A publication, with the count of those the publisher dropped for this subscriber
    /// since the last one received (the gap in the sequence numbers).
    Publication {
        /// The publish frame: topic, payload, encoding, and its sequence number in `id`.
        frame: Frame,
        /// Publications missed just before this one.
        missed: u64,
    },
    /// The publisher applied (or refused, with the reason) the change `waiter` asked for.
    Applied {
        /// Who asked for the change.
        waiter: W,
        /// Why the publisher refused it, if it did.
        refusal: Option<String>,
    },
}

/// The subscribing side of publish/subscribe on one connection: numbers the subscription
/// changes it sends and matches each ack to whoever asked (`W`, such as the sender of a
/// channel), and checks the publications' sequence numbers.
///
/// Rules: sequence numbers only go up, and a gap counts the publications the publisher
/// dropped; topics are UTF-8; an ack answers a change this side sent and not yet acked.
#[derive(Debug)]
pub struct Subscriber<W> {
    /// Changes sent and not yet acknowledged, by ack id.
    pending: IdMap<W>,
    next_ack: u64,
    /// Sequence number of the last publication received.
    last_seq: u64,
}

impl<W> Default for Subscriber<W> {
    fn default() -> Self {
        Subscriber::new()
    }
}

impl<W> Subscriber<W> {
    /// A subscriber with nothing sent or received.
    pub fn new() -> Self {
        Subscriber {
            pending: IdMap::default(),
            next_ack: 1,
            last_seq: 0,
        }
    }

    /// Queues a subscribe (or, `subscribe` false, an unsubscribe) for `pattern`; its ack
    /// goes to `waiter`.
    ///
    /// # Errors
    ///
    /// The pattern does not fit a frame: nothing is queued.
    pub fn change(
        &mut self,
        subscribe: bool,
        pattern: &str,
        waiter: W,
        link: &mut Link,
    ) -> Result<(), FrameError> {
        let kind = if subscribe {
            FrameKind::Subscribe
        } else {
            FrameKind::Unsubscribe
        };
        let id = self.next_ack;
        link.queue(
            kind,
            Encoding::IDENTITY,
            id,
            pattern.as_bytes(),
            &Bytes::new(),
        )?;
        self.next_ack += 1;
        self.pending.insert(id, waiter);
        Ok(())
    }

    /// Changes sent and not yet acknowledged.
    pub fn unacked(&self) -> usize {
        self.pending.len()
    }

    /// What a received frame delivers.
    ///
    /// # Errors
    ///
    /// A sequence number that did not go up, a topic that is not UTF-8, an ack for no
    /// change sent, or a frame a subscriber never receives.
    #[inline]
    pub fn receive(&mut self, frame: Frame) -> Result<Delivery<W>, FrameError> {
        match frame.kind {
            FrameKind::Publish => {
                if frame.id <= self.last_seq {
                    return Err(FrameError::Malformed {
                        kind: "publish",
                        reason: "sequence number went backwards",
                    });
                }
                if std::str::from_utf8(&frame.topic).is_err() {
                    return Err(FrameError::Malformed {
                        kind: "publish",
                        reason: "topic is not UTF-8",
                    });
                }
                let missed = frame.id - self.last_seq - 1;
                self.last_seq = frame.id;
                Ok(Delivery::Publication { frame, missed })
            }
            FrameKind::SubscriptionAck => {
                let waiter = self
                    .pending
                    .remove(&frame.id)
                    .ok_or(FrameError::Malformed {
                        kind: "subscription-ack",
                        reason: "acknowledges no subscription change sent",
                    })?;
                let refusal = (!frame.payload.is_empty())
                    .then(|| String::from_utf8_lossy(&frame.payload).into_owned());
                Ok(Delivery::Applied { waiter, refusal })
            }
            kind => Err(unexpected(kind)),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn publish(seq: u64, topic: &'static [u8]) -> Frame {
        let mut frame = Frame::new(FrameKind::Publish, seq, Bytes::from("p"));
        frame.topic = Bytes::from_static(topic);
        frame
    }

    fn ack(id: u64, refusal: &'static str) -> Frame {
        Frame::new(FrameKind::SubscriptionAck, id, Bytes::from(refusal))
    }

    #[test]
    fn a_gap_in_sequence_numbers_counts_the_publications_dropped() {
        let mut sub = Subscriber::<()>::new();
        let missed = |d| match d {
            Ok(Delivery::Publication { missed, .. }) => missed,
            other => panic!("{other:?}"),
        };
        assert_eq!(missed(sub.receive(publish(1, b"a"))), 0);
        assert_eq!(missed(sub.receive(publish(2, b"a"))), 0);
        assert_eq!(missed(sub.receive(publish(7, b"a"))), 4);
    }

    #[test]
    fn a_sequence_number_that_does_not_go_up_breaks_the_protocol() {
        let mut sub = Subscriber::<()>::new();
        sub.receive(publish(5, b"a")).unwrap();
        assert!(sub.receive(publish(5, b"a")).is_err());
        assert!(sub.receive(publish(3, b"a")).is_err());
        assert!(sub.receive(publish(0, b"a")).is_err());
    }

    #[test]
    fn a_topic_that_is_not_utf8_breaks_the_protocol() {
        let mut sub = Subscriber::<()>::new();
        assert!(matches!(
            sub.receive(publish(1, b"\xff\xfe")),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[test]
    fn each_ack_reaches_who_asked_and_a_refusal_carries_its_reason() {
        let (mut sub, mut link) = (Subscriber::new(), Link::new(1024));
        sub.change(true, "a.>", "first", &mut link).unwrap();
        sub.change(false, "b", "second", &mut link).unwrap();
        let mut rbuf = BytesMut::from(&link.take_transmit()[..]);
        let mut peer = Link::new(1024);
        let sent: Vec<Frame> = std::iter::from_fn(|| peer.decode(&mut rbuf).unwrap()).collect();
        assert_eq!(sent[0].kind, FrameKind::Subscribe);
        assert_eq!(sent[0].topic, "a.>");
        assert_eq!(sent[1].kind, FrameKind::Unsubscribe);
        let Ok(Delivery::Applied { waiter, refusal }) = sub.receive(ack(sent[1].id, "no")) else {
            panic!("an ack")
        };
        assert_eq!((waiter, refusal.as_deref()), ("second", Some("no")));
        let Ok(Delivery::Applied { waiter, refusal }) = sub.receive(ack(sent[0].id, "")) else {
            panic!("an ack")
        };
        assert_eq!((waiter, refusal), ("first", None));
        assert_eq!(sub.unacked(), 0);
    }

    #[test]
    fn an_ack_for_no_change_sent_breaks_the_protocol() {
        let (mut sub, mut link) = (Subscriber::new(), Link::new(1024));
        sub.change(true, "a", (), &mut link).unwrap();
        assert!(sub.receive(ack(2, "")).is_err());
        assert!(sub.receive(ack(1, "")).is_ok());
        assert!(sub.receive(ack(1, "")).is_err(), "acked twice");
    }

    #[test]
    fn frames_a_subscriber_never_receives_break_the_protocol() {
        let mut sub = Subscriber::<()>::new();
        for kind in [
            FrameKind::Request,
            FrameKind::Subscribe,
            FrameKind::Response,
        ] {
            assert!(matches!(
                sub.receive(Frame::new(kind, 1, Bytes::new())),
                Err(FrameError::Unexpected { .. })
            ));
        }
    }
}
