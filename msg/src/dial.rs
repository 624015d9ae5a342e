//! The way out to a peer: [`Dialer`] dials through the transport stack and plays the
//! socket's part of the hello (says it for a request or subscribe socket, answers it for a
//! reply or publish socket: see [`Part`]); [`supervise`] is the one reconnect supervisor
//! every socket that dials runs.
//!
//! The supervisor owns the redial loop: it serves a connection through the socket's
//! [`Session`] until the connection is lost, then redials with [`Backoff`], forever unless
//! told otherwise, or until a dial is answered in a way the next one would be too
//! ([`Error::is_permanent`]: the wrong socket type, admission's refusal, a peer not
//! speaking msg). The socket's own state (its slot table, its subscriptions) lives in the
//! session and outlasts every connection.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use msg_core::{HeartbeatConfig, SocketType};
use msg_transports::{Connected, Transport, TransportError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::accept::Established;
use crate::events::{EventSink, SocketEvent};
use crate::handshake::Part;
use crate::io::{heartbeat_config, FramedIo};
use crate::options::{ConnectionOptions, DialOptions};
use crate::{Backoff, Error};

/// Everything needed to make a connection to one peer.
pub(crate) struct Dialer<T: Transport> {
    pub(crate) transport: T,
    pub(crate) target: T::Target,
    pub(crate) socket_type: SocketType,
    /// The socket's part in the hello.
    pub(crate) part: Part<T::Addr>,
    pub(crate) max_frame_len: usize,
    /// Bounds the transport's exchange and the hello together.
    pub(crate) connect_timeout: Duration,
    pub(crate) heartbeat: Option<HeartbeatConfig>,
    pub(crate) backoff: Backoff,
    pub(crate) events: Arc<EventSink<T::Addr>>,
}

impl<T: Transport> Dialer<T> {
    /// A dialer to `target` with a socket's connection and dial options.
    pub(crate) fn new(
        transport: T,
        target: T::Target,
        socket_type: SocketType,
        connection: &ConnectionOptions,
        dial: DialOptions,
        events: Arc<EventSink<T::Addr>>,
    ) -> Self {
        Dialer {
            transport,
            target,
            socket_type,
            part: Part::Hello {
                token: dial.auth_token,
            },
            max_frame_len: connection.max_frame_len,
            connect_timeout: dial.connect_timeout,
            heartbeat: heartbeat_config(
                connection.heartbeat_interval,
                connection.heartbeat_timeout,
            ),
            backoff: dial.reconnect,
            events,
        }
    }

    /// The same dialer, playing `part` in the hello: a reply or publish socket that dials
    /// out answers the hello of the peer it reached.
    pub(crate) fn with_part(mut self, part: Part<T::Addr>) -> Self {
        self.part = part;
        self
    }

    /// Dials through the transport stack and completes the handshake, reporting a
    /// connection or a rejection as an event (other failures are the caller's to report).
    ///
    /// # Errors
    ///
    /// The transport's error, [`Error::HandshakeRejected`] with the server's reason (or,
    /// for a side that answers, [`Error::Refused`] with the reason the peer was given),
    /// or [`Error::ConnectTimeout`] if the transport's exchange and the hello together
    /// take longer than the connect timeout.
    pub(crate) async fn dial(&self) -> Result<Established<T::Io, T::Addr>, Error> {
        let connect = async {
            let Connected { io, peer } = self
                .transport
                .connect(self.target.clone())
                .await
                .map_err(not_msg)?;
            let mut io = FramedIo::new(io, self.max_frame_len);
            io.set_counters(self.events.counters().bytes(self.socket_type));
            crate::handshake::greet(&mut io, self.socket_type, &peer, &self.part, self.heartbeat)
                .await?;
            Ok::<_, Error>(Established { io, peer })
        };
        let after = self.connect_timeout;
        let outcome = tokio::time::timeout(after, connect)
            .await
            .unwrap_or(Err(Error::ConnectTimeout { after }));
        match &outcome {
            Ok(conn) => {
                tracing::debug!(peer = %conn.peer, socket = %self.socket_type, "connected");
                self.events
                    .counters()
                    .connections(self.socket_type)
                    .increment(1);
                self.events.emit(|| SocketEvent::Connected {
                    peer: conn.peer.clone(),
                });
            }
            Err(e @ Error::HandshakeRejected { reason, .. }) => {
                if e.is_permanent() {
                    tracing::warn!(%reason, socket = %self.socket_type, "server refused this socket");
                } else {
                    tracing::info!(%reason, socket = %self.socket_type, "server refused this socket for now");
                }
                self.events.emit(|| SocketEvent::Rejected {
                    reason: reason.clone(),
                });
            }
            Err(Error::Refused { reason }) => {
                // This side answers the hello, and turned the peer it reached away.
                tracing::info!(%reason, socket = %self.socket_type, "the dialed peer was refused");
                self.events
                    .counters()
                    .refused(self.socket_type)
                    .increment(1);
            }
            Err(e) if e.is_permanent() => {
                tracing::warn!(error = %e, socket = %self.socket_type, "dial failed");
                self.events
                    .counters()
                    .connect_failures(self.socket_type)
                    .increment(1);
            }
            Err(e) => {
                tracing::debug!(error = %e, socket = %self.socket_type, "dial failed");
                self.events
                    .counters()
                    .connect_failures(self.socket_type)
                    .increment(1);
            }
        }
        outcome
    }

    /// The first dial, for `connect`: its error goes to the caller, and the same error
    /// to the events.
    pub(crate) async fn dial_first(&self) -> Result<Established<T::Io, T::Addr>, Error> {
        let outcome = self.dial().await;
        if let Err(e) = &outcome {
            if !matches!(e, Error::HandshakeRejected { .. }) {
                self.events
                    .emit(|| SocketEvent::ConnectFailed { error: e.clone() });
            }
        }
        outcome
    }
}

/// How one connection of a dialing socket ended.
pub(crate) enum End {
    /// The socket is closed: stop.
    Closed,
    /// The connection is lost: redial.
    Lost(Error),
}

/// What a dialing socket does with its connections.
pub(crate) trait Session<T: Transport>: Send {
    /// Serves one connection until it is lost or the socket is closed.
    fn serve(&mut self, conn: Established<T::Io, T::Addr>) -> impl Future<Output = End> + Send;

    /// Whether the session reports a lost connection itself (its event and counter), as
    /// a connection served the way an accepted one is does; else the supervisor does.
    fn reports_loss(&self) -> bool {
        false
    }

    /// Called now and then while there is no connection, so that work waiting for one can
    /// expire.
    fn sweep(&mut self) {}

    /// A dial failed with `error` (a refusal too); the supervisor will dial again after
    /// its backoff, unless the error [is permanent](Error::is_permanent).
    fn dial_failed(&mut self, _error: &Error) {}

    /// The supervisor stops: the socket was closed while disconnected ([`Error::Closed`]),
    /// redialing gave up after `max_attempts` ([`Error::NotConnected`] with the last dial's
    /// error), or a dial was answered with a [permanent](Error::is_permanent) error (that
    /// error).
    fn stop(&mut self, error: Error);
}

/// The session of a socket that dials out but serves its connections as accepted ones (a
/// reply socket that connects to a request socket, a publisher to a subscriber): `hand`
/// gives each connection to the code that serves accepted ones (`false`: nobody takes it
/// any more, the socket is closed), and the session waits until that code drops it.
/// `closed` ends the wait: the socket is closed.
pub(crate) struct Handover<F> {
    pub(crate) hand: F,
    pub(crate) closed: CancellationToken,
}

impl<T, F, Fut> Session<T> for Handover<F>
where
    T: Transport,
    F: FnMut(Established<T::Io, T::Addr>) -> Fut + Send,
    Fut: Future<Output = bool> + Send,
{
    async fn serve(&mut self, mut conn: Established<T::Io, T::Addr>) -> End {
        // Cancelled when the connection is dropped, by whichever task serves it then.
        let gone = CancellationToken::new();
        conn.io.tie(gone.clone().drop_guard());
        let taken = tokio::select! {
            biased;
            _ = self.closed.cancelled() => false,
            taken = (self.hand)(conn) => taken,
        };
        if !taken {
            return End::Closed;
        }
        tokio::select! {
            _ = gone.cancelled() => {}
            _ = self.closed.cancelled() => {}
        }
        if self.closed.is_cancelled() {
            End::Closed
        } else {
            End::Lost(Error::ConnectionClosed)
        }
    }

    /// The code that serves accepted connections reports their end.
    fn reports_loss(&self) -> bool {
        true
    }

    fn stop(&mut self, error: Error) {
        if !matches!(error, Error::Closed) {
            tracing::warn!(%error, "redialing stopped");
        }
    }
}

/// A TLS client's dial that failed because the server answered with bytes that are no TLS
/// record (a plain msg server's reject, most likely): the server does not speak TLS.
#[cfg(feature = "tls")]
fn not_msg(e: TransportError) -> Error {
    let TransportError::TlsHandshake { source, .. } = &e else {
        return e.into();
    };
    let not_tls = source
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|inner| matches!(inner, rustls::Error::InvalidMessage(_)));
    if not_tls {
        return Error::NotMsg {
            hint: crate::handshake::SERVER_NOT_TLS,
        };
    }
    e.into()
}

/// Without TLS built in, no dial fails in a TLS handshake.
#[cfg(not(feature = "tls"))]
fn not_msg(e: TransportError) -> Error {
    e.into()
}

/// Runs `session` over connections to `dialer`'s server until the socket is closed
/// (`closed`) or redialing gives up. `first` is a connection already made; without one,
/// the first dial is at once. While disconnected, `session.sweep()` runs every `sweep`.
pub(crate) async fn supervise<T: Transport, S: Session<T>>(
    dialer: Dialer<T>,
    mut session: S,
    mut first: Option<Established<T::Io, T::Addr>>,
    closed: CancellationToken,
    sweep: Duration,
) {
    let mut delays = dialer.backoff.delays();
    let mut attempt: u32 = 0;
    // Why the last dial failed, for the error of a socket that gives up.
    let mut last: Option<Arc<Error>> = None;
    let mut at_once = first.is_none();
    // Sweeps count time from the start of each spell without a connection: the first one
    // a period after it, not at once (which would cost a request queued just after a
    // disconnect a period of its wait).
    let sweep = sweep.max(Duration::from_millis(1));
    let mut sweeps = tokio::time::interval_at(tokio::time::Instant::now() + sweep, sweep);
    sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let conn = match first.take() {
            Some(conn) => conn,
            None => {
                attempt = attempt.saturating_add(1);
                if dialer.backoff.max_attempts.is_some_and(|max| attempt > max) {
                    tracing::warn!(attempts = attempt - 1, "giving up redialing");
                    let error = Error::NotConnected { last: last.take() };
                    let gave_up = error.clone();
                    dialer
                        .events
                        .emit(|| SocketEvent::GaveUp { error: gave_up });
                    session.stop(error);
                    return;
                }
                let delay = if at_once {
                    Duration::ZERO
                } else {
                    delays.next().unwrap_or_default()
                };
                at_once = false;
                if !delay.is_zero() {
                    dialer
                        .events
                        .emit(|| SocketEvent::Reconnecting { attempt, delay });
                }
                let dial = async {
                    tokio::time::sleep(delay).await;
                    dialer.dial().await
                };
                let mut dial = std::pin::pin!(dial);
                let dialed = loop {
                    tokio::select! {
                        _ = closed.cancelled() => {
                            session.stop(Error::Closed);
                            return;
                        }
                        _ = sweeps.tick() => session.sweep(),
                        dialed = &mut dial => break dialed,
                    }
                };
                match dialed {
                    Ok(conn) => conn,
                    Err(error) => {
                        session.dial_failed(&error);
                        if !matches!(error, Error::HandshakeRejected { .. }) {
                            let error = error.clone();
                            dialer.events.emit(|| SocketEvent::ConnectFailed { error });
                        }
                        if error.is_permanent() {
                            // The next dial would be answered the same: stop here, and say
                            // so.
                            tracing::warn!(
                                error = %error,
                                socket = %dialer.socket_type,
                                "the server's answer will not change; redialing stopped"
                            );
                            let gave_up = error.clone();
                            dialer
                                .events
                                .emit(|| SocketEvent::GaveUp { error: gave_up });
                            session.stop(error);
                            return;
                        }
                        last = Some(Arc::new(error));
                        continue;
                    }
                }
            }
        };
        attempt = 0;
        last = None;
        delays = dialer.backoff.delays();
        let peer = conn.peer.clone();
        // The connection's span: everything its driver does.
        let span = tracing::info_span!(
            target: "msg",
            "msg.connection",
            socket = %dialer.socket_type,
            %peer,
        );
        match session.serve(conn).instrument(span).await {
            End::Closed => return,
            End::Lost(error) => {
                sweeps.reset();
                tracing::info!(%peer, %error, "connection lost; redialing");
                if session.reports_loss() {
                    continue;
                }
                dialer
                    .events
                    .counters()
                    .disconnections(dialer.socket_type)
                    .increment(1);
                dialer
                    .events
                    .emit(|| SocketEvent::Disconnected { peer, error });
            }
        }
    }
}
