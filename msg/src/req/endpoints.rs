//! Many endpoints on one [`ReqSocket`](super::ReqSocket): the set every clone shares, and
//! the balancer over it.
//!
//! A socket with one endpoint sends straight to that endpoint's slot table, as it always
//! did: no lock, task or allocation more per request. Once a second endpoint is added (or
//! one is removed), every request goes through [`Balanced`]: tower's p2c balancer over one
//! [`EndpointService`] per endpoint, whose load is the requests it holds, and which is
//! ready only while its connection is up.
//!
//! tower's `Balance` keeps the index `poll_ready` chose for the next `call`, and a removal
//! of an endpoint between the two would leave that index pointing at another endpoint, or
//! past the end (tower #856, not fixed in any release up to 0.5.3). Here `poll_ready` and
//! `call` are made together under the balancer's lock, the message in hand before
//! `poll_ready` is asked: no removal comes between them, and `poll_ready` never starts with
//! an index left from before.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures_core::Stream;
use msg_core::Message;
use msg_layers::compression::Codec;
use msg_transports::Transport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::Load;
use tower::Service;

use super::{Client, Handle, ResponseFuture};
use crate::counters::ErrorCounters;
use crate::Error;

/// An endpoint's key in the set and in the balancer.
pub(crate) type Key = u64;

/// Locks `mutex`, whose every holder leaves it consistent, through a poison.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `msg_req_endpoints{state}`: endpoints of request sockets by state.
fn endpoints_gauge(state: &'static str) -> metrics::Gauge {
    metrics::gauge!("msg_req_endpoints", "state" => state)
}

/// `msg_req_endpoint_changes_total{kind}`: endpoints inserted into and removed from
/// request sockets.
fn changes_counter(kind: &'static str) -> metrics::Counter {
    metrics::counter!("msg_req_endpoint_changes_total", "kind" => kind)
}

/// `msg_req_endpoint_requests_total{endpoint}`: requests written to the server at
/// `endpoint`.
pub(crate) fn requests_counter(endpoint: String) -> metrics::Counter {
    metrics::counter!("msg_req_endpoint_requests_total", "endpoint" => endpoint)
}

/// What the endpoints of one socket share: how many are up, why the last dial failed,
/// and the requests waiting for one to be ready. It is the waker the balancer is polled
/// with, which wakes every waiting request: the balancer keeps one waker, and many
/// requests may wait on it.
#[derive(Default)]
pub(crate) struct Watch {
    /// Endpoints whose connection is up.
    up: AtomicUsize,
    /// Why the last dial of any endpoint failed.
    last_dial: Mutex<Option<Arc<Error>>>,
    /// Requests waiting for the balancer.
    waiters: Mutex<Vec<Waker>>,
    /// Wakes so far: a request that saw none between its poll and its registration
    /// missed none.
    wakes: AtomicU64,
    /// Called when the last endpoint up goes down, and at each failed dial while none is
    /// up: a discovery source asked to look again (a `Dns` resolves at once, rate
    /// limited).
    all_down: Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Watch {
    /// Registers `waker` for the next wake.
    fn register(&self, waker: &Waker) {
        let mut waiters = lock(&self.waiters);
        if !waiters.iter().any(|w| w.will_wake(waker)) {
            waiters.push(waker.clone());
        }
    }

    /// Keeps `error` as why the last dial failed.
    pub(crate) fn dial_failed(&self, error: &Error) {
        *lock(&self.last_dial) = Some(Arc::new(error.clone()));
        if self.up.load(Ordering::SeqCst) == 0 {
            self.tell_all_down();
        }
    }

    /// Calls `f` whenever every endpoint is down: see `all_down`.
    #[cfg(feature = "dns")]
    pub(crate) fn on_all_down(&self, f: impl Fn() + Send + Sync + 'static) {
        lock(&self.all_down).push(Box::new(f));
    }

    fn tell_all_down(&self) {
        for f in lock(&self.all_down).iter() {
            f();
        }
    }

    fn last_dial(&self) -> Option<Arc<Error>> {
        lock(&self.last_dial).clone()
    }
}

impl Wake for Watch {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        let waiters = std::mem::take(&mut *lock(&self.waiters));
        for waker in waiters {
            waker.wake();
        }
    }
}

/// One endpoint's state for the gauges and the socket's count of endpoints up.
pub(crate) struct Health {
    /// (up, removed).
    state: Mutex<(bool, bool)>,
    watch: Arc<Watch>,
}

impl Health {
    /// A new endpoint, down until its first connection.
    pub(crate) fn new(watch: Arc<Watch>) -> Arc<Self> {
        endpoints_gauge("down").increment(1.0);
        changes_counter("insert").increment(1);
        Arc::new(Health {
            state: Mutex::new((false, false)),
            watch,
        })
    }

    /// Whether its connection is up.
    pub(crate) fn is_up(&self) -> bool {
        lock(&self.state).0
    }

    /// Its connection came up, or went down.
    pub(crate) fn set_up(&self, up: bool) {
        {
            let mut state = lock(&self.state);
            if state.1 || state.0 == up {
                return;
            }
            state.0 = up;
            if up {
                self.watch.up.fetch_add(1, Ordering::SeqCst);
                endpoints_gauge("down").decrement(1.0);
                endpoints_gauge("ready").increment(1.0);
            } else {
                if self.watch.up.fetch_sub(1, Ordering::SeqCst) == 1 {
                    self.watch.tell_all_down();
                }
                endpoints_gauge("ready").decrement(1.0);
                endpoints_gauge("down").increment(1.0);
            }
        }
        if !up {
            // A request waiting for a ready endpoint starts its `reconnect_wait` when the
            // last one goes.
            Waker::from(self.watch.clone()).wake();
        }
    }

    /// It left the socket.
    fn removed(&self) {
        let mut state = lock(&self.state);
        if state.1 {
            return;
        }
        state.1 = true;
        if state.0 {
            self.watch.up.fetch_sub(1, Ordering::SeqCst);
            endpoints_gauge("ready").decrement(1.0);
        } else {
            endpoints_gauge("down").decrement(1.0);
        }
        changes_counter("remove").increment(1);
    }
}

/// One endpoint to the balancer: ready while its connection is up and it has a slot free;
/// its load is the requests it holds.
pub(crate) struct EndpointService {
    client: Client,
    codec: Option<Codec>,
    errors: Arc<ErrorCounters>,
}

impl EndpointService {
    pub(crate) fn new(
        handle: Arc<Handle>,
        codec: Option<Codec>,
        errors: Arc<ErrorCounters>,
    ) -> Self {
        EndpointService {
            client: Client::new(handle, 0),
            codec,
            errors,
        }
    }
}

impl Service<Message> for EndpointService {
    type Response = Message;
    type Error = Error;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        std::task::ready!(self.client.handle().slots.poll_connected(cx))?;
        self.client.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> ResponseFuture {
        self.client.call(msg, &self.codec, &self.errors)
    }
}

impl Load for EndpointService {
    type Metric = usize;

    /// The requests this endpoint holds: queued, on the wire, or reserved.
    fn load(&self) -> usize {
        self.client.handle().slots.load()
    }
}

/// The balancer's discovery: the changes the set sends it.
pub(crate) struct Changes(mpsc::UnboundedReceiver<Change<Key, EndpointService>>);

impl Stream for Changes {
    type Item = Result<Change<Key, EndpointService>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|change| change.map(Ok))
    }
}

type Balancer = Balance<Changes, Message>;
type BalancedFuture = <Balancer as Service<Message>>::Future;

/// The balancer over a socket's endpoints, once it has had more than one.
pub(crate) struct Balanced {
    balance: Mutex<Balancer>,
    changes: mpsc::UnboundedSender<Change<Key, EndpointService>>,
    watch: Arc<Watch>,
    /// The balancer is polled with this: it wakes every waiting request.
    waker: Waker,
    closed: CancellationToken,
    reconnect_wait: Duration,
}

impl Balanced {
    fn new(watch: Arc<Watch>, closed: CancellationToken, reconnect_wait: Duration) -> Self {
        let (changes, discover) = mpsc::unbounded_channel();
        Balanced {
            balance: Mutex::new(Balance::new(Changes(discover))),
            changes,
            waker: Waker::from(watch.clone()),
            watch,
            closed,
            reconnect_wait,
        }
    }

    fn insert(&self, key: Key, service: EndpointService) {
        // The receiver lives as long as `self`.
        let _ = self.changes.send(Change::Insert(key, service));
    }

    fn remove(&self, key: Key) {
        let _ = self.changes.send(Change::Remove(key));
    }

    /// Chooses an endpoint for `msg` and sends it there, the choice and the call under one
    /// lock (see the module's docs); or registers `cx` to be woken when one may be ready.
    fn poll_call(
        &self,
        msg: &mut Option<Message>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<BalancedFuture, Error>> {
        // Bounded: a wake during each attempt sends it round again, and some futures wake
        // themselves at once (tokio's budget); after a few, yield instead.
        for _ in 0..3 {
            if self.closed.is_cancelled() {
                return Poll::Ready(Err(Error::Closed));
            }
            if msg.is_none() {
                return Poll::Ready(Err(Error::PolledAfterCompletion));
            }
            let seen = self.watch.wakes.load(Ordering::SeqCst);
            let mut balance = lock(&self.balance);
            match balance.poll_ready(&mut Context::from_waker(&self.waker)) {
                Poll::Ready(Ok(())) => {
                    let Some(msg) = msg.take() else {
                        unreachable!("checked before poll_ready")
                    };
                    return Poll::Ready(Ok(balance.call(msg)));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Error::from(e))),
                Poll::Pending => {}
            }
            drop(balance);
            self.watch.register(cx.waker());
            if self.watch.wakes.load(Ordering::SeqCst) == seen {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// A request through the balancer: waits for a ready endpoint (up to `reconnect_wait` while
/// none is up), then for the reply.
pub(crate) struct Balancing {
    balanced: Arc<Balanced>,
    msg: Option<Message>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    call: Option<BalancedFuture>,
    errors: Arc<ErrorCounters>,
}

impl Balancing {
    pub(crate) fn new(balanced: Arc<Balanced>, msg: Message, errors: Arc<ErrorCounters>) -> Self {
        Balancing {
            balanced,
            msg: Some(msg),
            deadline: None,
            call: None,
            errors,
        }
    }

    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Result<Message, Error>> {
        if self.call.is_none() {
            match self.balanced.poll_call(&mut self.msg, cx) {
                Poll::Ready(Ok(call)) => self.call = Some(call),
                Poll::Ready(Err(e)) => {
                    self.errors.count(&e);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    if self.balanced.watch.up.load(Ordering::SeqCst) > 0 {
                        // Some endpoint is up: wait for it, however long it is busy.
                        self.deadline = None;
                        return Poll::Pending;
                    }
                    let wait = self.balanced.reconnect_wait;
                    let deadline = self
                        .deadline
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(wait)));
                    if deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let e = Error::NotConnected {
                        last: self.balanced.watch.last_dial(),
                    };
                    self.errors.count(&e);
                    return Poll::Ready(Err(e));
                }
            }
        }
        let Some(call) = self.call.as_mut() else {
            return Poll::Ready(Err(Error::PolledAfterCompletion));
        };
        // The endpoint's own future counts its failures.
        Pin::new(call).poll(cx).map_err(Error::from)
    }
}

/// One endpoint of a socket.
pub(crate) struct Entry<T: Transport> {
    pub(crate) key: Key,
    /// What it dials; none for a connection accepted by a bound socket.
    pub(crate) target: Option<T::Target>,
    pub(crate) handle: Arc<Handle>,
    /// The server it is, or was last, connected to.
    pub(crate) peer: Arc<Mutex<Option<T::Addr>>>,
    pub(crate) health: Arc<Health>,
}

/// The endpoints every clone of a socket shares.
pub(crate) struct Shared<T: Transport> {
    /// The first endpoint, while it is the only one the socket has had: requests go
    /// straight to it.
    pub(crate) first: OnceLock<Arc<Handle>>,
    /// The balancer, from the moment a second endpoint is added or one is removed: every
    /// request goes through it from then on.
    pub(crate) balanced: OnceLock<Arc<Balanced>>,
    entries: Mutex<Vec<Entry<T>>>,
    next_key: AtomicU64,
    /// Clones made so far: each takes the next lane number (see `super::lanes`).
    clones: AtomicUsize,
    pub(crate) watch: Arc<Watch>,
    /// Cancelled when the socket closes: ends its discovery.
    pub(crate) closed: CancellationToken,
}

impl<T: Transport> Default for Shared<T> {
    fn default() -> Self {
        Shared {
            first: OnceLock::new(),
            balanced: OnceLock::new(),
            entries: Mutex::new(Vec::new()),
            next_key: AtomicU64::new(0),
            clones: AtomicUsize::new(0),
            watch: Arc::default(),
            closed: CancellationToken::new(),
        }
    }
}

impl<T: Transport> Drop for Shared<T> {
    fn drop(&mut self) {
        self.closed.cancel();
        for entry in lock(&self.entries).iter() {
            entry.health.removed();
        }
        self.wake_waiting();
    }
}

impl<T: Transport> Shared<T> {
    /// Wakes the requests waiting for the balancer, to see the socket closed.
    pub(crate) fn wake_waiting(&self) {
        Waker::from(self.watch.clone()).wake();
    }

    /// The lane number of a new clone of the socket: 1 for the first.
    pub(crate) fn next_lane(&self) -> usize {
        self.clones.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(crate) fn next_key(&self) -> Key {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// The entries, locked.
    pub(crate) fn entries(&self) -> MutexGuard<'_, Vec<Entry<T>>> {
        lock(&self.entries)
    }

    /// The balancer, made now over the endpoints in `entries` if there is none yet.
    fn balanced(
        &self,
        entries: &[Entry<T>],
        service: &dyn Fn(&Arc<Handle>) -> EndpointService,
        reconnect_wait: Duration,
    ) -> &Arc<Balanced> {
        self.balanced.get_or_init(|| {
            let balanced = Balanced::new(self.watch.clone(), self.closed.clone(), reconnect_wait);
            for entry in entries {
                entry.handle.lanes.retire();
                entry.handle.slots.set_balanced();
                balanced.insert(entry.key, service(&entry.handle));
            }
            Arc::new(balanced)
        })
    }

    /// Balances from now on, over the endpoints there are: a request made before any is
    /// added waits for one (up to `reconnect_wait`) instead of failing at once.
    pub(crate) fn balance(
        &self,
        service: &dyn Fn(&Arc<Handle>) -> EndpointService,
        reconnect_wait: Duration,
    ) {
        let entries = self.entries();
        self.balanced(&entries, service, reconnect_wait);
    }

    /// Adds `entry`: the socket's one endpoint if it is the first, or one more for the
    /// balancer. `service` makes an endpoint's service for the balancer.
    pub(crate) fn insert(
        &self,
        entry: Entry<T>,
        service: &dyn Fn(&Arc<Handle>) -> EndpointService,
        reconnect_wait: Duration,
    ) {
        let mut entries = self.entries();
        if entries.is_empty() && self.balanced.get().is_none() && self.first.get().is_none() {
            let _ = self.first.set(entry.handle.clone());
            entries.push(entry);
            return;
        }
        let balanced = self.balanced(&entries, service, reconnect_wait);
        entry.handle.slots.set_balanced();
        balanced.insert(entry.key, service(&entry.handle));
        entries.push(entry);
    }

    /// Takes out the endpoints `which` picks; the socket balances from now on. Each is
    /// closed: its requests in flight get `linger` to finish, then fail with
    /// [`Error::Closed`]. Returns how many were taken.
    pub(crate) fn remove(
        &self,
        mut which: impl FnMut(&Entry<T>) -> bool,
        service: &dyn Fn(&Arc<Handle>) -> EndpointService,
        reconnect_wait: Duration,
        linger: Duration,
    ) -> usize {
        let removed: Vec<Entry<T>> = {
            let mut entries = self.entries();
            let mut removed = Vec::new();
            let mut i = 0;
            while i < entries.len() {
                if which(&entries[i]) {
                    removed.push(entries.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            if removed.is_empty() {
                return 0;
            }
            let balanced = self.balanced(&entries, service, reconnect_wait);
            for entry in &removed {
                balanced.remove(entry.key);
            }
            removed
        };
        let count = removed.len();
        for entry in removed {
            entry.health.removed();
            close_endpoint(entry.handle, linger);
        }
        count
    }
}

/// Closes one endpoint that left its socket, in the background: its requests get `linger`
/// to finish, then fail with [`Error::Closed`].
fn close_endpoint(handle: Arc<Handle>, linger: Duration) {
    for lane in handle.lanes.opened() {
        close_endpoint(lane.clone(), linger);
    }
    handle.slots.close();
    if handle.done.is_cancelled() {
        return;
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if tokio::time::timeout(linger, handle.done.cancelled())
                .await
                .is_err()
            {
                handle.slots.stop(Error::Closed);
            }
        });
    } else {
        handle.slots.stop(Error::Closed);
    }
}

impl Balanced {
    /// Whether the socket takes requests: [`Error::Closed`] once it is closed.
    pub(crate) fn check_open(&self) -> Result<(), Error> {
        if self.closed.is_cancelled() {
            return Err(Error::Closed);
        }
        Ok(())
    }
}
