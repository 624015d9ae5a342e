//! A [`ReqSocket`](super::ReqSocket)'s side of one connection: the requester role between
//! the socket's slot table and the [`Driver`](crate::driver::Driver).

use std::sync::Arc;
use std::task::{Context, Poll};

use msg_core::proto::{Answer, Caller, Link, Requester};
use msg_core::Frame;

use super::slots::{Batch, Completions, Flow, SlotTable};
use crate::dial::End;
use crate::driver::{Ending, Endpoint};
use crate::error::frame_refused;
use crate::Error;

/// Writes queued requests and cancellations, and completes each request's slot by id when
/// its answer comes, in whatever order the answers come.
pub(crate) struct ReqEndpoint {
    slots: Arc<SlotTable>,
    /// The protocol: wire ids, answers matched to their callers, cancels.
    role: Requester,
    batch: Batch,
    done: Completions,
    flow: Flow,
    /// The last batch taken was one request from a caller awaiting it, with others of
    /// earlier batches still on the wire: the sign of callers sending one by one, each
    /// woken on its own.
    lone: bool,
    /// Requests written on this connection: `msg_req_endpoint_requests_total` of its
    /// server, counted once per batch.
    sent: metrics::Counter,
}

impl ReqEndpoint {
    pub(crate) fn new(slots: Arc<SlotTable>) -> Self {
        slots.connected();
        ReqEndpoint {
            slots,
            role: Requester::new(),
            batch: Batch::default(),
            done: Completions::default(),
            flow: Flow::Open,
            lone: false,
            sent: metrics::Counter::noop(),
        }
    }

    /// Counts the requests written in `sent`.
    pub(crate) fn counting(mut self, sent: metrics::Counter) -> Self {
        self.sent = sent;
        self
    }
}

impl Endpoint for ReqEndpoint {
    fn send(&mut self, link: &mut Link, cx: &mut Context<'_>) -> Result<bool, Error> {
        if self.role.going_away().is_some() {
            // The server takes nothing more on this connection: what is queued waits for
            // the next one.
            return Ok(false);
        }
        self.flow = self.slots.take(&mut self.batch, cx);
        let took = !self.batch.requests.is_empty() || !self.batch.cancels.is_empty();
        self.lone = self.batch.requests.len() == 1
            && self.batch.requests[0].awaited
            && self.role.in_flight() > 0;
        if !self.batch.requests.is_empty() {
            self.sent.increment(self.batch.requests.len() as u64);
        }
        // Cancellations first: they are for requests sent in earlier batches (one given up
        // before it was taken leaves the queue instead), and a request of this batch may
        // reuse the slot.
        for (slot, generation) in self.batch.cancels.drain(..) {
            self.role.cancel(Caller { slot, generation }, link);
        }
        for queued in self.batch.requests.drain(..) {
            let caller = Caller {
                slot: queued.slot,
                generation: queued.generation,
            };
            if let Err(e) = self.role.send(caller, &queued.msg, link) {
                self.done
                    .push(queued.slot, queued.generation, Err(frame_refused(e)));
            }
        }
        self.slots.complete(&mut self.done);
        Ok(took)
    }

    fn defer(&mut self, took: bool) -> bool {
        // The first of the callers just handed their replies woke this driver as it sent
        // again; the others are queued to run and most will send too. Written now, each
        // request would go in a write of its own, the driver woken by each caller in turn.
        // Instead the driver goes to the back of the run queue once and writes them
        // together: a third of the CPU per request when requests come from many tasks
        // (`msg-bench --open-loop`). The same for one request taken alone while others are
        // on the wire, from a caller awaiting it: callers woken one by one from elsewhere
        // (an open loop, a service's handlers) send in bursts too. A first request, with
        // nothing on the wire, goes at once, so a lone caller's latency pays nothing; so
        // does one through `Service::call` (a pipeline sends its window from one task, and
        // no neighbour is coming). Once per write, so a caller that never comes back
        // delays nobody.
        took && (self.batch.callers_pending || self.lone)
    }

    fn poll_end(&mut self, _link: &Link, _cx: &mut Context<'_>) -> Option<Ending> {
        match self.flow {
            Flow::Open => None,
            // Closed, and the linger is over: what is still on the wire fails.
            Flow::Stopped => Some(Ending::Now(End::Closed)),
            Flow::Closing if self.role.in_flight() == 0 && !self.slots.has_queued() => {
                Some(Ending::Graceful)
            }
            Flow::Closing => None,
        }
    }

    /// Matches an answer to its request. One to a request that was given up on is dropped;
    /// one to a request never sent breaks the protocol.
    #[inline]
    fn receive(
        &mut self,
        frame: Frame,
        _link: &mut Link,
        _cx: &mut Context<'_>,
    ) -> Result<(), Error> {
        match self.role.receive(frame)? {
            Some((caller, answer)) => {
                let reply = match answer {
                    Answer::Reply(msg) => Ok(msg),
                    Answer::Failed(code, frame) => Err(Error::Remote {
                        code,
                        message: String::from_utf8_lossy(&frame.payload).into_owned(),
                    }),
                };
                self.done.push(caller.slot, caller.generation, reply);
            }
            None if self.role.going_away().is_some() => {
                // The server goes away: the requests after the last it processes never
                // ran, and say so.
                for caller in self.role.drain_unprocessed() {
                    self.done
                        .push(caller.slot, caller.generation, Err(Error::NotProcessed));
                }
            }
            None => tracing::trace!("late reply to a cancelled request dropped"),
        }
        Ok(())
    }

    fn poll_deliver(&mut self, _link: &mut Link, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.slots.complete(&mut self.done);
        Poll::Ready(Ok(()))
    }

    fn read_paused(&self, _link: &Link) -> bool {
        // Answers only free slots: they are always read.
        false
    }

    fn finish(&mut self, end: &End, _cx: &mut Context<'_>) {
        let error: fn() -> Error = match end {
            End::Closed => || Error::Closed,
            End::Lost(_) => || Error::ConnectionClosed,
        };
        if let End::Lost(cause) = end {
            if self.role.in_flight() > 0 {
                tracing::debug!(
                    error = %cause,
                    in_flight = self.role.in_flight(),
                    "request connection failed"
                );
            }
        }
        self.slots.complete(&mut self.done);
        self.slots
            .disconnected(self.role.drain().map(|c| (c.slot, c.generation)), error);
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use msg_core::Message;
    use msg_layers::compression::Decoders;

    use super::*;

    /// Queues one request in `table`, as a caller awaiting `request` does.
    fn request(table: &SlotTable) {
        let mut cx = Context::from_waker(Waker::noop());
        let (mut msg, mut ticket) = (Some(Message::from("x")), None);
        assert!(table.poll_send(&mut msg, &mut ticket, &mut cx).is_ready());
    }

    /// Queues one request in `table`, as `Service::call` does.
    fn call(table: &SlotTable) {
        let mut cx = Context::from_waker(Waker::noop());
        let slot = match table.poll_reserve(&mut None, &mut cx) {
            Poll::Ready(Ok(slot)) => slot,
            other => panic!("{other:?}"),
        };
        table.enqueue(slot, Message::from("x")).unwrap();
    }

    /// The driver puts a write off once for a lone awaited request that finds others on
    /// the wire: other callers woken one by one are about to send too. A first request, a
    /// batch, or a request through `Service::call` goes at once.
    #[test]
    fn a_lone_request_behind_others_on_the_wire_waits_for_its_neighbours() {
        let table = Arc::new(SlotTable::new(8, 1024, Decoders::default()));
        let mut endpoint = ReqEndpoint::new(table.clone());
        let mut link = Link::new(1024);
        let mut cx = Context::from_waker(Waker::noop());

        request(&table);
        let took = endpoint.send(&mut link, &mut cx).unwrap();
        assert!(took && !endpoint.defer(took), "nothing else on the wire");

        request(&table);
        let took = endpoint.send(&mut link, &mut cx).unwrap();
        assert!(endpoint.defer(took), "one request, with one on the wire");

        call(&table);
        let took = endpoint.send(&mut link, &mut cx).unwrap();
        assert!(
            took && !endpoint.defer(took),
            "a call: no neighbour is coming"
        );

        request(&table);
        request(&table);
        let took = endpoint.send(&mut link, &mut cx).unwrap();
        assert!(!endpoint.defer(took), "a batch goes at once");

        let took = endpoint.send(&mut link, &mut cx).unwrap();
        assert!(!took && !endpoint.defer(took), "nothing taken");
    }
}
