//! A [`SubSocket`](super::SubSocket) that binds: publishers connect to it, it says its
//! hello to each (the subscribe side always does), replays its subscriptions to it, and
//! receives from it as from a publisher it dialed, on the same connection code.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use msg_core::SocketType;
use msg_transports::Transport;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{conn, lock, ConnHandle, Dialing, Mailbox, CHANGES};
use crate::accept::Established;
use crate::dial::{End, Session};
use crate::events::{EventSink, SocketEvent};
use crate::listen::Listening;
use crate::Error;

/// Serves every publisher `listening` welcomes, each in a task of `tasks`, until `stop`.
pub(super) async fn serve_publishers<T: Transport>(
    mut listening: Listening<T::Io, T::Addr>,
    shared: Arc<Mailbox<T::Addr>>,
    events: Arc<EventSink<T::Addr>>,
    stop: CancellationToken,
    linger: Duration,
    tasks: TaskTracker,
) {
    loop {
        let conn = tokio::select! {
            _ = stop.cancelled() => return,
            conn = listening.incoming.recv() => match conn {
                Some(conn) => conn,
                None => return,
            },
        };
        tasks.spawn(serve_publisher::<T>(
            conn,
            shared.clone(),
            events.clone(),
            stop.clone(),
            linger,
        ));
    }
}

/// One accepted publisher: known to `subscribe` while it lives (its subscriptions replayed
/// first), served by the session a dialed publisher's connection runs, forgotten when it
/// leaves (the publisher redials, not this side).
async fn serve_publisher<T: Transport>(
    conn: Established<T::Io, T::Addr>,
    shared: Arc<Mailbox<T::Addr>>,
    events: Arc<EventSink<T::Addr>>,
    stop: CancellationToken,
    linger: Duration,
) {
    let (changes, changes_rx) = mpsc::channel(CHANGES);
    let connected = Arc::new(AtomicBool::new(false));
    let dialing = Arc::new(Mutex::new(Dialing::default()));
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let stop = stop.child_token();
    lock(&shared.conns).push(ConnHandle {
        id,
        stop: stop.clone(),
        changes,
        connected: connected.clone(),
        dialing: dialing.clone(),
    });
    let mut session = conn::SubSession {
        shared: shared.clone(),
        changes: changes_rx,
        connected: connected.clone(),
        dialing,
        ready: None,
        stop,
        linger,
        state: conn::EndpointState::new(),
    };
    let peer = conn.peer.clone();
    let end = Session::<T>::serve(&mut session, conn).await;
    lock(&shared.conns).retain(|c| !Arc::ptr_eq(&c.connected, &connected));
    shared.links.notify_waiters();
    let error = match end {
        End::Closed => Error::Closed,
        End::Lost(e) => e,
    };
    tracing::debug!(%peer, %error, "publisher gone");
    events
        .counters()
        .disconnections(SocketType::Sub)
        .increment(1);
    events.emit(|| SocketEvent::Disconnected { peer, error });
}
