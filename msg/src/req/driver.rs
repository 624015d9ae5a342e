//! The connection driver of a [`ReqSocket`](super::ReqSocket): one task per connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use msg_core::{Frame, FrameKind, Message};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::frame_refused;
use crate::ids::IdMap;
use crate::io::FramedIo;
use crate::Error;

pub(crate) type Reply = Result<Message, Error>;

/// A request on its way to the driver.
pub(crate) struct Outgoing {
    msg: Message,
    tx: oneshot::Sender<Reply>,
    permit: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Queue {
    items: Vec<Outgoing>,
    /// No handle is left: finish what is in flight, then close.
    closed: bool,
    /// The connection is gone: refuse new requests at once.
    failed: bool,
}

/// What the socket handles and the driver share: a queue the handles push to and the driver
/// drains whole, the driver's waker, and the semaphore that bounds requests in flight.
pub(crate) struct Shared {
    queue: Mutex<Queue>,
    waker: AtomicWaker,
    pub(crate) in_flight: Arc<Semaphore>,
    max_frame_len: usize,
}

impl Shared {
    pub(crate) fn new(max_in_flight: usize, max_frame_len: usize) -> Self {
        Shared {
            queue: Mutex::new(Queue::default()),
            waker: AtomicWaker::new(),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_frame_len,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is left consistent at every step, so a panic elsewhere cannot poison it
        // into a wrong state.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands a request to the driver and returns where its reply will arrive.
    pub(crate) fn enqueue(
        &self,
        msg: Message,
        permit: OwnedSemaphorePermit,
    ) -> Result<oneshot::Receiver<Reply>, Error> {
        let len = msg.payload().len();
        if len > self.max_frame_len {
            return Err(Error::FrameTooLarge {
                len: len as u64,
                max: self.max_frame_len,
            });
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut queue = self.lock();
            if queue.failed {
                return Err(Error::ConnectionClosed);
            }
            queue.items.push(Outgoing { msg, tx, permit });
        }
        self.waker.wake();
        Ok(rx)
    }

    /// The last handle is gone.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.waker.wake();
    }
}

struct InFlight {
    tx: oneshot::Sender<Reply>,
    _permit: OwnedSemaphorePermit,
}

/// Drives one client connection: writes queued requests, reads responses, and completes
/// each request's reply by id, in whatever order the responses come.
pub(crate) struct ReqDriver<Io> {
    io: FramedIo<Io>,
    shared: Arc<Shared>,
    in_flight: IdMap<InFlight>,
    next_id: u64,
    batch: Vec<Outgoing>,
    closing: bool,
}

impl<Io: AsyncRead + AsyncWrite + Unpin> ReqDriver<Io> {
    pub(crate) fn new(io: FramedIo<Io>, shared: Arc<Shared>) -> Self {
        ReqDriver {
            io,
            shared,
            in_flight: IdMap::default(),
            next_id: 1,
            batch: Vec::new(),
            closing: false,
        }
    }

    /// Step: moves every queued request into the write buffer. Returns how many it took.
    fn take_queued(&mut self) -> usize {
        {
            let mut queue = self.shared.lock();
            std::mem::swap(&mut queue.items, &mut self.batch);
            self.closing = queue.closed;
        }
        let taken = self.batch.len();
        for Outgoing { msg, tx, permit } in self.batch.drain(..) {
            if tx.is_closed() {
                continue; // the caller gave up before the request left
            }
            let id = self.next_id;
            self.next_id += 1;
            match self
                .io
                .queue(FrameKind::Request, msg.encoding(), id, msg.payload())
            {
                Ok(()) => {
                    self.in_flight.insert(
                        id,
                        InFlight {
                            tx,
                            _permit: permit,
                        },
                    );
                }
                Err(e) => {
                    let _ = tx.send(Err(frame_refused(e)));
                }
            }
        }
        taken
    }

    /// Step: reads and completes every response that has arrived.
    fn read_responses(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            while let Some(frame) = self.io.decode()? {
                self.complete(frame)?;
            }
            if !std::task::ready!(self.io.poll_fill(cx))? {
                if let Some(frame) = self.io.decode()? {
                    self.complete(frame)?;
                    continue;
                }
                return Poll::Ready(Err(Error::ConnectionClosed));
            }
        }
    }

    fn complete(&mut self, frame: Frame) -> Result<(), Error> {
        let reply = match frame.kind {
            FrameKind::Response => Ok(Message::new(frame.payload).with_encoding(frame.encoding)),
            FrameKind::ErrorResponse => Err(Error::Remote {
                message: String::from_utf8_lossy(&frame.payload).into_owned(),
            }),
            kind => return Err(Error::UnexpectedFrame { kind }),
        };
        let Some(slot) = self.in_flight.remove(&frame.id) else {
            tracing::warn!(id = frame.id, "response to a request that was never sent");
            return Err(Error::UnexpectedFrame { kind: frame.kind });
        };
        let _ = slot.tx.send(reply);
        Ok(())
    }

    /// Fails everything in flight or queued, and every later request.
    fn fail(&mut self, cause: &Error) {
        let queued = {
            let mut queue = self.shared.lock();
            queue.failed = true;
            std::mem::take(&mut queue.items)
        };
        self.shared.in_flight.close();
        if !self.in_flight.is_empty() || !queued.is_empty() {
            tracing::debug!(
                error = %cause,
                in_flight = self.in_flight.len(),
                queued = queued.len(),
                "request connection failed"
            );
        }
        for (_, slot) in self.in_flight.drain() {
            let _ = slot.tx.send(Err(Error::ConnectionClosed));
        }
        for item in queued {
            let _ = item.tx.send(Err(Error::ConnectionClosed));
        }
    }
}

impl<Io: AsyncRead + AsyncWrite + Unpin> Future for ReqDriver<Io> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.shared.waker.register(cx.waker());
        // Two passes: requests queued while the first pass wrote and read leave without
        // another trip through the scheduler.
        for _ in 0..2 {
            let taken = this.take_queued();
            if let Poll::Ready(Err(e)) = this.io.poll_flush(cx) {
                this.fail(&Error::Io(e));
                return Poll::Ready(());
            }
            if let Poll::Ready(Err(e)) = this.read_responses(cx) {
                this.fail(&e);
                return Poll::Ready(());
            }
            if this.closing && this.in_flight.is_empty() && this.io.queued_len() == 0 {
                let _ = this.io.poll_close(cx);
                this.fail(&Error::ConnectionClosed);
                return Poll::Ready(());
            }
            if taken == 0 {
                break;
            }
        }
        Poll::Pending
    }
}
