//! [`Lanes`]: more connections to one endpoint, opened under load, and the handles of a
//! socket spread over them.
//!
//! Many tasks that share a socket through clones, each awaiting its request, all meet at
//! one connection: one driver writes every request and wakes every caller, so the callers'
//! wake-ups pile onto the worker that runs it, and the other workers steal them back, one
//! cross-core hand-off after another. A connection per worker splits that: each clone of
//! the socket keeps to one connection (its *lane*), so that half the callers meet at each
//! of two drivers, and each driver, woken by its own callers, mostly stays on the worker
//! they run on.
//!
//! The first connection is the endpoint's own; the others are opened the first time a
//! request from a clone finds [`GROW_AT`] requests held on its connection, up to
//! [`ReqOptions::connections`](super::ReqOptions::connections) (default: the runtime's
//! workers, at most [`DEFAULT_MAX`]). A socket used one request at a time, or from one
//! task, keeps one connection. A lane that is not connected (still dialing, lost, or
//! refused) sends its clones' requests to the first connection instead; it redials on its
//! own, and reports no events: the endpoint's events are the first connection's. A lost
//! lane redials only once the first connection is up, and gives up after a few failed
//! dials; a lane that gave up is not opened again. Lanes close with the first connection,
//! and when the socket starts balancing over many endpoints.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use super::slots::SlotTable;
use super::Handle;

/// Requests held on one connection, with the socket shared by more than one clone, from
/// which the next lane is opened.
pub(crate) const GROW_AT: usize = 16;

/// Opens one more lane to the endpoint whose first connection's table is the one given,
/// and returns its handle.
pub(crate) type Open = Box<dyn Fn(&Arc<SlotTable>) -> Arc<Handle> + Send + Sync>;

/// The most lanes an endpoint opens by default, whatever the runtime's workers.
pub(crate) const DEFAULT_MAX: usize = 4;

/// The lanes of one endpoint past its first connection.
#[derive(Default)]
pub(crate) struct Lanes {
    /// Lanes `1..`, each set once, when opened.
    more: Box<[OnceLock<Arc<Handle>>]>,
    /// Lanes asked for so far: the index in `more` of the next to open.
    opened: AtomicUsize,
    /// How to open one; `None` for an endpoint that has one connection only.
    open: Option<Open>,
}

impl Lanes {
    /// Up to `extra` lanes past the first, opened with `open`.
    pub(crate) fn new(extra: usize, open: Open) -> Self {
        Lanes {
            more: (0..extra).map(|_| OnceLock::new()).collect(),
            opened: AtomicUsize::new(0),
            open: Some(open),
        }
    }

    /// The lane a handle numbered `lane` uses now: its own, if it is open and connected,
    /// or else the first (`0`).
    pub(crate) fn pick(&self, lane: usize) -> usize {
        let count = self.more.len() + 1;
        let own = lane % count;
        if own == 0 {
            return 0;
        }
        match self.more[own - 1].get() {
            Some(handle) if handle.slots.is_connected() => own,
            _ => 0,
        }
    }

    /// The slot table of lane `index`, as [`pick`](Self::pick) chose it; `first` is lane
    /// 0's.
    pub(crate) fn table<'a>(
        &'a self,
        index: usize,
        first: &'a Arc<SlotTable>,
    ) -> &'a Arc<SlotTable> {
        match index.checked_sub(1).and_then(|i| self.more.get(i)?.get()) {
            Some(handle) => &handle.slots,
            None => first,
        }
    }

    /// A request from the handle numbered `lane` found `held` requests on its connection:
    /// opens the next lane if that is the sign of load, from a clone (see [`GROW_AT`]), and
    /// one is left to open. The socket made first is numbered 0, and its clones from 1: a
    /// request from a clone means the socket is shared.
    /// `first` is the endpoint's first connection's table: a lane is not opened once it
    /// is closing, and closes when it does.
    pub(crate) fn note_load(&self, held: usize, lane: usize, first: &Arc<SlotTable>) {
        if held < GROW_AT || lane == 0 {
            return;
        }
        let Some(open) = &self.open else {
            return;
        };
        let next = self.opened.load(Ordering::Relaxed);
        // Checked after the count, which is all a request pays once every lane is open:
        // the token's check takes a lock.
        if next >= self.more.len()
            || first.closed_token().is_cancelled()
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        if self
            .opened
            .compare_exchange(next, next + 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let _ = self.more[next].set(open(first));
    }

    /// Opens no more lanes, and closes those open: for an endpoint that is one of many,
    /// whose requests the balancer sends on its first connection only. Their requests in
    /// flight are answered first.
    pub(crate) fn retire(&self) {
        self.opened.store(self.more.len(), Ordering::Release);
        for lane in self.opened() {
            lane.slots.close();
        }
    }

    /// The lanes opened past the first.
    pub(crate) fn opened(&self) -> impl Iterator<Item = &Arc<Handle>> {
        self.more.iter().filter_map(OnceLock::get)
    }
}

/// The lanes an endpoint opens at most, `connections` asked for or, if `None`, one per
/// worker of the runtime it is made on, up to [`DEFAULT_MAX`] (one outside a runtime).
pub(crate) fn count(connections: Option<usize>) -> usize {
    connections
        .unwrap_or_else(|| {
            tokio::runtime::Handle::try_current()
                .map(|rt| rt.metrics().num_workers().min(DEFAULT_MAX))
                .unwrap_or(1)
        })
        .max(1)
}
