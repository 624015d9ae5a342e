//! What a server connection hands its requests to: [`Calls`], with one implementation per
//! way of serving — a tower service run inside the connection's task ([`ServiceCalls`],
//! for [`serve`](crate::serve)), or the socket's stream ([`Mailbox`](super::mailbox)).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::task::AtomicWaker;
use msg_core::{Code, FrameError, Message};
use tower::{BoxError, Service};

use crate::error::frame_refused;
use crate::status::code_of;

use super::Request;

/// How a call ended: the response, or the error the client gets.
pub(crate) type Outcome = Result<Message, Failure>;

/// A call that failed, as the client will get it: the kind of failure and its text.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: Code,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A handler's error: its text, and the code it carries (see [`code_of`]).
    pub(crate) fn handler(e: BoxError) -> Failure {
        Failure::new(code_of(&*e), e.to_string())
    }

    /// A reply the connection could not send: over the frame limit, most likely.
    pub(crate) fn reply_refused(e: FrameError) -> Failure {
        let code = match e {
            FrameError::TooLarge { .. } => Code::ResourceExhausted,
            _ => Code::Internal,
        };
        Failure::new(code, frame_refused(e).to_string())
    }
}

/// The calls of one connection's requests.
pub(crate) trait Calls<A> {
    /// Whether another call may start now; an error ends the connection.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>>;

    /// Starts the call of request `id`; an outcome known at once is returned.
    fn start(&mut self, id: u64, request: Request<A>, cx: &mut Context<'_>) -> Option<Outcome>;

    /// The calls started since the last flush are all there are for now.
    fn flush(&mut self) {}

    /// Moves the outcome of every call that has finished into `done`; when none has,
    /// `cx` is woken once one does.
    fn poll_finished(&mut self, cx: &mut Context<'_>, done: &mut Vec<(u64, Outcome)>);

    /// Drops the call of request `id`, if it is running: the client gave up on it.
    fn cancel(&mut self, id: u64) -> bool;

    /// Calls running.
    fn len(&self) -> usize;
}

/// Spare call boxes kept for reuse.
const SPARE_CALLS: usize = 64;
/// Rounds of polling the running calls in one wake-up while they keep waking each other.
const CALL_ROUNDS: usize = 4;

/// The waker the running calls see.
///
/// It passes their wake-ups on to the connection's task, except while the task is polling
/// them itself. `FuturesUnordered` wakes its parent to ask for another poll when it has
/// polled every call without one finishing, as it does with each batch of calls that wait
/// on something. To tokio that is a yield: the task goes to the back of the queue and
/// another worker is woken to take it, which then sleeps in the I/O driver and makes every
/// later readiness event a cross-CPU wake-up. Those wake-ups are noted instead, and the
/// calls polled again at once.
struct CallsWaker {
    task: AtomicWaker,
    polling: AtomicBool,
    woken: AtomicBool,
}

impl Wake for CallsWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Noted first, so that a poll ending now sees it, or the task is woken.
        self.woken.store(true, Ordering::SeqCst);
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }
}

pin_project_lite::pin_project! {
    /// One handler call, tagged with the id of its request. It lives in a box that outlasts
    /// it: once the call finishes, the box is empty and can carry the next one.
    struct Call<F> {
        #[pin]
        fut: Option<F>,
        id: u64,
        // The waker of the last poll that left the call pending: a cancellation wakes it,
        // so that the set of running calls polls the emptied call and lets it go.
        waker: Option<Waker>,
    }
}

impl<F: Future> Call<F> {
    fn boxed() -> Pin<Box<Self>> {
        Box::pin(Call {
            fut: None,
            id: 0,
            waker: None,
        })
    }

    /// Puts a new call in an empty box.
    fn start(self: Pin<&mut Self>, id: u64, fut: F) {
        let mut this = self.project();
        this.fut.set(Some(fut));
        *this.id = id;
    }

    /// Drops the handler's future if this is the call of request `id`; the call then
    /// finishes without a reply. Returns whether it was.
    fn cancel(self: Pin<&mut Self>, id: u64) -> bool {
        let mut this = self.project();
        if *this.id != id || this.fut.is_none() {
            return false;
        }
        this.fut.set(None);
        if let Some(waker) = this.waker.take() {
            waker.wake();
        }
        true
    }
}

impl<F: Future> Future for Call<F> {
    /// The request id and the handler's outcome; `None` for a cancelled call.
    type Output = Option<(u64, F::Output)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else {
            *this.waker = None;
            return Poll::Ready(None);
        };
        match fut.poll(cx) {
            Poll::Ready(out) => {
                this.fut.set(None);
                *this.waker = None;
                Poll::Ready(Some((*this.id, out)))
            }
            Poll::Pending => {
                match this.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => *this.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
        }
    }
}

/// A tower service's calls, run concurrently inside the connection's task; none gets a
/// task of its own, and a call that finishes at once costs no allocation.
pub(crate) struct ServiceCalls<S: Service<Request<A>>, A> {
    service: S,
    /// Calls that did not finish when first polled.
    running: FuturesUnordered<Pin<Box<Call<S::Future>>>>,
    /// Empty call boxes, for reuse.
    spare: Vec<Pin<Box<Call<S::Future>>>>,
    /// What the running calls wake, and the same as a [`Waker`].
    waker: Arc<CallsWaker>,
    waker_handle: Waker,
}

impl<S: Service<Request<A>>, A> ServiceCalls<S, A> {
    pub(crate) fn new(service: S) -> Self {
        let waker = Arc::new(CallsWaker {
            task: AtomicWaker::new(),
            polling: AtomicBool::new(false),
            woken: AtomicBool::new(false),
        });
        ServiceCalls {
            service,
            running: FuturesUnordered::new(),
            spare: Vec::new(),
            waker: waker.clone(),
            waker_handle: Waker::from(waker),
        }
    }
}

/// The outcome of a service call, as the client will get it.
fn outcome<R: Into<Message>, E: Into<BoxError>>(result: Result<R, E>) -> Outcome {
    match result {
        Ok(reply) => Ok(reply.into()),
        Err(e) => Err(Failure::handler(e.into())),
    }
}

impl<S, A, R> Calls<A> for ServiceCalls<S, A>
where
    S: Service<Request<A>, Response = R>,
    S::Error: Into<BoxError>,
    R: Into<Message>,
{
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.service.poll_ready(cx).map_err(Into::into)
    }

    fn start(&mut self, id: u64, request: Request<A>, cx: &mut Context<'_>) -> Option<Outcome> {
        let mut call = self.spare.pop().unwrap_or_else(Call::boxed);
        call.as_mut().start(id, self.service.call(request));
        // Most handlers answer at once: those never enter the set of running calls.
        match call.as_mut().poll(cx) {
            Poll::Ready(done) => {
                if self.spare.len() < SPARE_CALLS {
                    self.spare.push(call);
                }
                done.map(|(_, result)| outcome(result))
            }
            Poll::Pending => {
                self.running.push(call);
                None
            }
        }
    }

    fn poll_finished(&mut self, cx: &mut Context<'_>, done: &mut Vec<(u64, Outcome)>) {
        if self.running.is_empty() {
            return;
        }
        self.waker.task.register(cx.waker());
        let waker = self.waker_handle.clone();
        let mut calls_cx = Context::from_waker(&waker);
        for _ in 0..CALL_ROUNDS {
            self.waker.woken.store(false, Ordering::SeqCst);
            self.waker.polling.store(true, Ordering::SeqCst);
            while let Poll::Ready(Some(finished)) = self.running.poll_next_unpin(&mut calls_cx) {
                if let Some((id, result)) = finished {
                    done.push((id, outcome(result)));
                }
            }
            self.waker.polling.store(false, Ordering::SeqCst);
            if !self.waker.woken.load(Ordering::SeqCst) {
                return;
            }
        }
        // The calls keep waking one another: let other tasks run first.
        cx.waker().wake_by_ref();
    }

    fn cancel(&mut self, id: u64) -> bool {
        self.running.iter_mut().any(|call| call.as_mut().cancel(id))
    }

    fn len(&self) -> usize {
        self.running.len()
    }
}
