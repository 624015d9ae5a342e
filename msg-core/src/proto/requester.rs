//! [`Requester`]: the client's side of request/reply.

use bytes::Bytes;

use super::ids::IdMap;
use super::{unexpected, Link};
use crate::{Encoding, Frame, FrameError, FrameKind, Message};

/// Who waits for a reply: a slot of the socket's table, and which request made in that
/// slot (a slot is reused; each request in it gets the next generation, so that a reply or
/// a cancel meant for an earlier one is told apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The slot.
    pub slot: u32,
    /// The request made in it.
    pub generation: u64,
}

/// What came back for a request.
#[derive(Debug)]
pub enum Answer {
    /// The server's reply.
    Reply(Message),
    /// The server's handler failed: its code, and the error-response frame, whose payload
    /// says why.
    Failed(crate::Code, Frame),
}

/// The client's side of request/reply on one connection: numbers the requests it sends,
/// matches each answer to its caller whatever the order, and turns a caller's giving up
/// into a cancel frame for the request it had on the wire.
///
/// Rules: an answer to a request this side never sent breaks the protocol; one to a
/// request given up on (or answered already) is late and dropped; a cancel goes out only
/// for the request the caller still has on the wire, never for an older one in its slot.
#[derive(Debug)]
pub struct Requester {
    /// The caller of each request on the wire, by wire id.
    in_flight: IdMap<Caller>,
    /// The last request sent from each slot, as (generation, wire id): what a cancel is for.
    sent: Vec<(u64, u64)>,
    next_wire: u64,
    /// The server said it goes away after this request: nothing more is sent.
    last_processed: Option<u64>,
}

impl Default for Requester {
    fn default() -> Self {
        Requester::new()
    }
}

impl Requester {
    /// A requester with nothing sent.
    pub fn new() -> Self {
        Requester {
            in_flight: IdMap::default(),
            sent: Vec::new(),
            next_wire: 1,
            last_processed: None,
        }
    }

    /// Queues `msg` on `link` as the request of `caller`; returns its wire id.
    ///
    /// # Errors
    ///
    /// The frame does not fit the link's limit: nothing is queued or remembered.
    #[inline]
    pub fn send(
        &mut self,
        caller: Caller,
        msg: &Message,
        link: &mut Link,
    ) -> Result<u64, FrameError> {
        let wire = self.next_wire;
        link.queue_message(FrameKind::Request, wire, msg)?;
        self.next_wire += 1;
        self.in_flight.insert(wire, caller);
        let i = caller.slot as usize;
        if self.sent.len() <= i {
            self.sent.resize(i + 1, (0, 0));
        }
        self.sent[i] = (caller.generation, wire);
        Ok(wire)
    }

    /// `caller` gave up: queues a cancel for its request if that request is still on the
    /// wire, and forgets it, so that its answer will be dropped as late. Returns whether a
    /// cancel was queued.
    pub fn cancel(&mut self, caller: Caller, link: &mut Link) -> bool {
        let Some(&(generation, wire)) = self.sent.get(caller.slot as usize) else {
            return false;
        };
        if generation != caller.generation || self.in_flight.remove(&wire).is_none() {
            return false;
        }
        // A bodiless frame always fits.
        link.queue(
            FrameKind::Cancel,
            Encoding::IDENTITY,
            wire,
            b"",
            &Bytes::new(),
        )
        .is_ok()
    }

    /// Matches a received frame to its caller. `Ok(None)` is a late answer, dropped, or
    /// the server's go-away (see [`going_away`](Self::going_away)).
    ///
    /// # Errors
    ///
    /// A frame a requester never receives, an answer to a request never sent, or a second
    /// go-away that takes back requests the first promised.
    #[inline]
    pub fn receive(&mut self, frame: Frame) -> Result<Option<(Caller, Answer)>, FrameError> {
        let (id, kind) = (frame.id, frame.kind);
        let answer = match kind {
            FrameKind::GoAway => {
                if self.last_processed.is_some_and(|last| id < last) {
                    return Err(FrameError::Malformed {
                        kind: kind.name(),
                        reason: "takes back requests an earlier go-away promised",
                    });
                }
                self.last_processed = Some(id);
                return Ok(None);
            }
            FrameKind::Response => {
                Answer::Reply(Message::new(frame.payload).with_encoding(frame.encoding))
            }
            FrameKind::ErrorResponse => {
                Answer::Failed(crate::wire::error_response_code(frame.encoding), frame)
            }
            kind => return Err(unexpected(kind)),
        };
        match self.in_flight.remove(&id) {
            Some(caller) => Ok(Some((caller, answer))),
            None if id != 0 && id < self.next_wire => Ok(None),
            None => Err(FrameError::Malformed {
                kind: kind.name(),
                reason: "answers a request that was never sent",
            }),
        }
    }

    /// The last request the server processes, once it said it goes away: nothing more is
    /// to be sent on this connection.
    pub fn going_away(&self) -> Option<u64> {
        self.last_processed
    }

    /// The callers of the requests the server will never process (those after its
    /// go-away), forgotten: they are safe to send again.
    pub fn drain_unprocessed(&mut self) -> Vec<Caller> {
        let Some(last) = self.last_processed else {
            return Vec::new();
        };
        let mut unprocessed = Vec::new();
        self.in_flight.retain(|&wire, caller| {
            let keep = wire <= last;
            if !keep {
                unprocessed.push(*caller);
            }
            keep
        });
        unprocessed
    }

    /// Requests on the wire and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The connection is gone: the callers of every request still on the wire, forgotten.
    pub fn drain(&mut self) -> impl Iterator<Item = Caller> + '_ {
        self.in_flight.drain().map(|(_, caller)| caller)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    const A: Caller = Caller {
        slot: 0,
        generation: 1,
    };
    const B: Caller = Caller {
        slot: 1,
        generation: 2,
    };

    /// What `link` queued, decoded.
    fn sent(link: &mut Link) -> Vec<Frame> {
        let mut rbuf = BytesMut::from(&link.take_transmit()[..]);
        let mut peer = Link::new(1 << 20);
        std::iter::from_fn(|| peer.decode(&mut rbuf).unwrap()).collect()
    }

    fn response(id: u64, body: &'static str) -> Frame {
        Frame::new(FrameKind::Response, id, Bytes::from(body))
    }

    #[test]
    fn answers_reach_their_callers_in_whatever_order_they_come() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        let a = req.send(A, &Message::from("a"), &mut link).unwrap();
        let b = req.send(B, &Message::from("b"), &mut link).unwrap();
        assert_ne!(a, b);
        let (to, _) = req.receive(response(b, "for b")).unwrap().unwrap();
        assert_eq!(to, B);
        let (to, answer) = req.receive(response(a, "for a")).unwrap().unwrap();
        assert_eq!(to, A);
        assert!(matches!(answer, Answer::Reply(m) if m.payload() == "for a"));
        assert_eq!(req.in_flight(), 0);
    }

    #[test]
    fn an_answer_to_a_request_never_sent_breaks_the_protocol() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        req.send(A, &Message::from("a"), &mut link).unwrap();
        for id in [0, 2, 99] {
            assert!(matches!(
                req.receive(response(id, "?")),
                Err(FrameError::Malformed { .. })
            ));
        }
    }

    #[test]
    fn a_second_answer_to_one_request_is_late_and_dropped() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        let a = req.send(A, &Message::from("a"), &mut link).unwrap();
        assert!(req.receive(response(a, "1")).unwrap().is_some());
        assert!(req.receive(response(a, "2")).unwrap().is_none());
    }

    #[test]
    fn a_cancel_goes_out_for_the_request_on_the_wire_and_its_answer_is_then_late() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        let a = req.send(A, &Message::from("a"), &mut link).unwrap();
        link.take_transmit();
        assert!(req.cancel(A, &mut link));
        let frames = sent(&mut link);
        assert_eq!(frames.len(), 1);
        assert_eq!((frames[0].kind, frames[0].id), (FrameKind::Cancel, a));
        assert!(req.receive(response(a, "late")).unwrap().is_none());
        // Cancelled once: a second cancel sends nothing.
        assert!(!req.cancel(A, &mut link));
        assert!(link.take_transmit().is_empty());
    }

    #[test]
    fn a_cancel_for_an_older_request_in_a_reused_slot_sends_nothing() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        let newer = Caller {
            slot: A.slot,
            generation: A.generation + 1,
        };
        req.send(A, &Message::from("old"), &mut link).unwrap();
        let wire = req.send(newer, &Message::from("new"), &mut link).unwrap();
        link.take_transmit();
        assert!(!req.cancel(A, &mut link), "the slot holds a newer request");
        assert!(link.take_transmit().is_empty());
        let (to, _) = req.receive(response(wire, "new")).unwrap().unwrap();
        assert_eq!(to, newer);
    }

    #[test]
    fn a_request_over_the_limit_is_refused_and_nothing_is_remembered() {
        let (mut req, mut link) = (Requester::new(), Link::new(4));
        assert!(matches!(
            req.send(A, &Message::from("too long"), &mut link),
            Err(FrameError::TooLarge { .. })
        ));
        assert_eq!(req.in_flight(), 0);
        let wire = req.send(B, &Message::from("ok"), &mut link).unwrap();
        assert_eq!(wire, 1, "the refused request took no id");
    }

    #[test]
    fn frames_a_requester_never_receives_break_the_protocol() {
        let mut req = Requester::new();
        for kind in [
            FrameKind::Request,
            FrameKind::Cancel,
            FrameKind::Publish,
            FrameKind::SubscriptionAck,
            FrameKind::Welcome,
        ] {
            let frame = Frame::new(kind, 1, Bytes::new());
            assert!(matches!(
                req.receive(frame),
                Err(FrameError::Unexpected { kind: k }) if k == kind
            ));
        }
    }

    #[test]
    fn a_go_away_hands_back_the_requests_after_it_and_the_ones_before_are_still_answered() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        let callers: Vec<Caller> = (0..4)
            .map(|slot| Caller {
                slot,
                generation: u64::from(slot),
            })
            .collect();
        let wires: Vec<u64> = callers
            .iter()
            .map(|&c| req.send(c, &Message::from("x"), &mut link).unwrap())
            .collect();
        assert!(req.going_away().is_none());
        let go_away = Frame::new(FrameKind::GoAway, wires[1], Bytes::new());
        assert!(req.receive(go_away).unwrap().is_none());
        assert_eq!(req.going_away(), Some(wires[1]));
        let mut unprocessed = req.drain_unprocessed();
        unprocessed.sort_by_key(|c| c.slot);
        assert_eq!(unprocessed, callers[2..].to_vec());
        for (i, &wire) in wires[..2].iter().enumerate() {
            let (to, _) = req.receive(response(wire, "done")).unwrap().unwrap();
            assert_eq!(to, callers[i]);
        }
        // A second go-away may promise less, never take back what was promised.
        let back = Frame::new(FrameKind::GoAway, wires[0], Bytes::new());
        assert!(req.receive(back).is_err());
    }

    #[test]
    fn a_lost_connection_hands_back_every_caller_on_the_wire() {
        let (mut req, mut link) = (Requester::new(), Link::new(1024));
        req.send(A, &Message::from("a"), &mut link).unwrap();
        req.send(B, &Message::from("b"), &mut link).unwrap();
        let mut lost: Vec<Caller> = req.drain().collect();
        lost.sort_by_key(|c| c.slot);
        assert_eq!(lost, vec![A, B]);
        assert_eq!(req.in_flight(), 0);
    }
}
