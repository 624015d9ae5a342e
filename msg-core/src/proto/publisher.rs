//! [`Publisher`]: the publishing side of publish/subscribe, for one subscriber.

use bytes::Bytes;

use super::{unexpected, Link};
use crate::{Encoding, Frame, FrameError, FrameKind, SharedHead};

/// A subscription change a subscriber asked for; answer it with [`Publisher::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The id its ack must echo.
    pub id: u64,
    /// Subscribe (or unsubscribe).
    pub subscribe: bool,
    /// The pattern, checked to be UTF-8.
    topic: Bytes,
}

impl Change {
    /// The pattern.
    pub fn pattern(&self) -> &str {
        // Checked when the change was received.
        std::str::from_utf8(&self.topic).unwrap_or_default()
    }
}

/// The publishing side of publish/subscribe on one subscriber's connection: reads its
/// subscription changes, acks each, and writes publications with this connection's
/// sequence numbers.
///
/// Rules: a publisher receives only (un)subscribe frames, with UTF-8 patterns; every
/// change is acked, a refusal with its reason; sequence numbers start at 1 and go up by one
/// per publication written, so that a gap tells the subscriber how many were dropped.
#[derive(Debug, Default)]
pub struct Publisher {
    _private: (),
}

impl Publisher {
    /// A publisher.
    pub fn new() -> Self {
        Publisher { _private: () }
    }

    /// The change a received frame asks for.
    ///
    /// # Errors
    ///
    /// A pattern that is not UTF-8, or a frame a publisher never receives.
    #[inline]
    pub fn receive(&mut self, frame: Frame) -> Result<Change, FrameError> {
        let subscribe = match frame.kind {
            FrameKind::Subscribe => true,
            FrameKind::Unsubscribe => false,
            kind => return Err(unexpected(kind)),
        };
        if std::str::from_utf8(&frame.topic).is_err() {
            return Err(FrameError::Malformed {
                kind: frame.kind.name(),
                reason: "pattern is not UTF-8",
            });
        }
        Ok(Change {
            id: frame.id,
            subscribe,
            topic: frame.topic,
        })
    }

    /// Queues the ack of change `id`: applied, or refused with `refusal` as the reason.
    ///
    /// # Errors
    ///
    /// A reason too long for the frame limit: nothing is queued.
    pub fn ack(
        &mut self,
        id: u64,
        refusal: Option<&str>,
        link: &mut Link,
    ) -> Result<(), FrameError> {
        let reason = refusal
            .map(|r| Bytes::copy_from_slice(r.as_bytes()))
            .unwrap_or_default();
        link.queue(
            FrameKind::SubscriptionAck,
            Encoding::IDENTITY,
            id,
            b"",
            &reason,
        )
    }

    /// Queues a publication with sequence number `seq`: its header and topic encoded once
    /// for every subscriber (`head`), the sequence number patched in.
    #[inline]
    pub fn publish(&mut self, seq: u64, head: &SharedHead, payload: &Bytes, link: &mut Link) {
        link.queue_shared(head, seq, payload);
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn change(kind: FrameKind, topic: &'static [u8]) -> Frame {
        let mut frame = Frame::new(kind, 9, Bytes::new());
        frame.topic = Bytes::from_static(topic);
        frame
    }

    #[test]
    fn subscribes_and_unsubscribes_are_read_with_their_pattern() {
        let mut publisher = Publisher::new();
        let c = publisher
            .receive(change(FrameKind::Subscribe, b"a.*"))
            .unwrap();
        assert_eq!((c.id, c.subscribe, c.pattern()), (9, true, "a.*"));
        let c = publisher
            .receive(change(FrameKind::Unsubscribe, b"a.*"))
            .unwrap();
        assert!(!c.subscribe);
    }

    #[test]
    fn a_pattern_that_is_not_utf8_or_a_foreign_frame_breaks_the_protocol() {
        let mut publisher = Publisher::new();
        assert!(publisher
            .receive(change(FrameKind::Subscribe, b"\xff"))
            .is_err());
        for kind in [
            FrameKind::Request,
            FrameKind::Publish,
            FrameKind::SubscriptionAck,
        ] {
            assert!(matches!(
                publisher.receive(Frame::new(kind, 1, Bytes::new())),
                Err(FrameError::Unexpected { .. })
            ));
        }
    }

    #[test]
    fn publications_carry_each_subscribers_sequence_number_on_one_shared_head() {
        let head = SharedHead::new(
            FrameKind::Publish,
            Encoding::IDENTITY,
            Bytes::from_static(b"a.b"),
            1,
            1024,
        )
        .unwrap();
        let (mut one, mut other) = (Link::new(1024), Link::new(1024));
        let mut publisher = Publisher::new();
        publisher.publish(1, &head, &Bytes::from("x"), &mut one);
        publisher.publish(9, &head, &Bytes::from("x"), &mut other);
        for (link, seq) in [(&mut one, 1), (&mut other, 9)] {
            let mut rbuf = BytesMut::from(&link.take_transmit()[..]);
            let frame = Link::new(1024).decode(&mut rbuf).unwrap().unwrap();
            assert_eq!((frame.kind, frame.id), (FrameKind::Publish, seq));
            assert_eq!(
                (&frame.topic[..], &frame.payload[..]),
                (&b"a.b"[..], &b"x"[..])
            );
        }
    }

    #[test]
    fn an_ack_echoes_the_id_and_carries_a_refusal_as_its_payload() {
        let (mut publisher, mut link) = (Publisher::new(), Link::new(1024));
        publisher.ack(4, None, &mut link).unwrap();
        publisher.ack(5, Some("too many"), &mut link).unwrap();
        let mut rbuf = BytesMut::from(&link.take_transmit()[..]);
        let mut peer = Link::new(1024);
        let acks: Vec<Frame> = std::iter::from_fn(|| peer.decode(&mut rbuf).unwrap()).collect();
        assert_eq!((acks[0].id, acks[0].payload.len()), (4, 0));
        assert_eq!((acks[1].id, &acks[1].payload[..]), (5, &b"too many"[..]));
    }
}
