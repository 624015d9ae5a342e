//! The accept loop shared by the server-side sockets: accept, set up, handshake, admit, hand
//! over.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use msg_core::{HeartbeatConfig, SocketType};
use msg_transports::{is_connection_error, Connected, Listener, Transport};
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::admission::Admission;
use crate::events::{EventSink, SocketEvent};
use crate::handshake::Part;
use crate::io::{heartbeat_config, FramedIo};
use crate::options::{ConnectionOptions, ListenOptions};
use crate::Error;

pub(crate) use crate::options::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_HANDSHAKES};

/// A welcomed connection, waiting to be served.
pub(crate) struct Established<Io, Addr> {
    pub(crate) io: FramedIo<Io>,
    pub(crate) peer: Addr,
}

/// What the accept loop needs to know of its socket.
pub(crate) struct AcceptConfig<A> {
    pub(crate) socket_type: SocketType,
    pub(crate) max_frame_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) max_handshakes: usize,
    pub(crate) heartbeat: Option<HeartbeatConfig>,
    /// The socket's part in the hello: a reply or publish socket answers the hello (with
    /// its admission and connection limit), a request or subscribe socket says it.
    pub(crate) part: Part<A>,
    pub(crate) events: Arc<EventSink<A>>,
}

impl<A> AcceptConfig<A> {
    /// What the accept loop of a socket with these connection and listen options needs.
    pub(crate) fn new(
        socket_type: SocketType,
        connection: &ConnectionOptions,
        listen: &ListenOptions,
        admission: Option<Admission<A>>,
        events: Arc<EventSink<A>>,
    ) -> Self {
        AcceptConfig {
            socket_type,
            max_frame_len: connection.max_frame_len,
            handshake_timeout: listen.handshake_timeout,
            max_handshakes: listen.max_handshakes,
            heartbeat: heartbeat_config(
                connection.heartbeat_interval,
                connection.heartbeat_timeout,
            ),
            part: Part::answer(admission, listen.max_connections),
            events,
        }
    }

    /// The same, playing `part` in the hello instead.
    pub(crate) fn with_part(mut self, part: Part<A>) -> Self {
        self.part = part;
        self
    }
}

impl<A> Clone for AcceptConfig<A> {
    fn clone(&self) -> Self {
        AcceptConfig {
            socket_type: self.socket_type,
            max_frame_len: self.max_frame_len,
            handshake_timeout: self.handshake_timeout,
            max_handshakes: self.max_handshakes,
            heartbeat: self.heartbeat,
            part: self.part.clone(),
            events: self.events.clone(),
        }
    }
}

/// Accepts connections until `stop` completes. Each connection is set up by the transport,
/// then says hello and is admitted, in a task of its own under the handshake timeout, so a
/// peer that says nothing holds up no one. At most `max_handshakes` run at once: a new
/// connection beyond that evicts the oldest handshake still running, so that silent
/// connections cannot lock good ones out. A welcomed connection is given to `welcome`.
pub(crate) async fn accept_loop<T, S, W, F>(
    transport: T,
    mut listener: T::Listener,
    config: AcceptConfig<T::Addr>,
    stop: S,
    welcome: W,
) where
    T: Transport,
    S: Future<Output = ()>,
    W: Fn(Established<T::Io, T::Addr>) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let mut stop = std::pin::pin!(stop);
    let mut handshakes = JoinSet::new();
    // Running handshakes, oldest first.
    let mut running: VecDeque<(T::Addr, AbortHandle)> = VecDeque::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.as_mut() => return,
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
            accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => accepted,
        };
        let conn = match accepted {
            Ok(conn) => conn,
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                // Out of file descriptors and the like: retrying at once would spin.
                tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                tokio::select! {
                    _ = stop.as_mut() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        running.retain(|(_, handle)| !handle.is_finished());
        if running.len() >= config.max_handshakes.max(1) {
            if let Some((peer, oldest)) = running.pop_front() {
                oldest.abort();
                crate::limits::hit(crate::limits::HANDSHAKES);
                tracing::info!(%peer, "handshake evicted to make room for a newer connection");
                let max = config.max_handshakes.max(1);
                config.events.emit(|| SocketEvent::HandshakeFailed {
                    peer,
                    error: Error::HandshakeEvicted { max },
                });
            }
        }
        let peer = conn.peer.clone();
        let handle = handshakes.spawn(handshake(
            transport.clone(),
            conn,
            config.clone(),
            welcome.clone(),
        ));
        running.push_back((peer, handle));
    }
}

/// One connection's way in: the transport's setup, the socket's part of the hello
/// (admission, for a side that answers); then the welcome in a task of its own.
async fn handshake<T, W, F>(
    transport: T,
    conn: Connected<<T::Listener as Listener>::Conn, T::Addr>,
    config: AcceptConfig<T::Addr>,
    welcome: W,
) where
    T: Transport,
    W: Fn(Established<T::Io, T::Addr>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let peer = conn.peer.clone();
    // The connection's span: its handshake's outcome, and everything its driver does.
    let span = tracing::info_span!(
        target: "msg",
        "msg.connection",
        socket = %config.socket_type,
        %peer,
        outcome = tracing::field::Empty,
    );
    let setup = async {
        let Connected { io, peer } = transport.accept(conn).await?;
        let mut io = FramedIo::new(io, config.max_frame_len);
        io.set_counters(config.events.counters().bytes(config.socket_type));
        crate::handshake::greet(
            &mut io,
            config.socket_type,
            &peer,
            &config.part,
            config.heartbeat,
        )
        .await?;
        Ok::<_, Error>(Established { io, peer })
    };
    let after = config.handshake_timeout;
    let outcome = tokio::time::timeout(after, setup)
        .instrument(span.clone())
        .await
        .unwrap_or(Err(Error::HandshakeTimeout { after }));
    let _entered = span.enter();
    match outcome {
        Ok(established) => {
            tracing::debug!(%peer, socket = %config.socket_type, "connection accepted");
            config
                .events
                .counters()
                .connections(config.socket_type)
                .increment(1);
            config.events.emit(|| SocketEvent::Accepted { peer });
            span.record("outcome", "accepted");
            tokio::spawn(welcome(established).instrument(span.clone()));
        }
        Err(Error::HandshakeRejected { reason, .. }) => {
            // A socket that says hello to whoever connects: the peer turned it away.
            span.record("outcome", "rejected");
            tracing::info!(%peer, %reason, "the peer rejected this socket");
            config.events.emit(|| SocketEvent::Rejected { reason });
        }
        Err(Error::Refused { reason }) => {
            span.record("outcome", "refused");
            tracing::info!(%peer, %reason, "peer refused");
            config
                .events
                .counters()
                .refused(config.socket_type)
                .increment(1);
            config.events.emit(|| SocketEvent::Refused { peer, reason });
        }
        Err(e) => {
            span.record("outcome", "failed");
            tracing::info!(%peer, error = %e, "handshake failed; connection closed");
            config
                .events
                .emit(|| SocketEvent::HandshakeFailed { peer, error: e });
        }
    }
}
