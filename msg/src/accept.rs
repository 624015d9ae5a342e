//! The accept loop shared by the server-side sockets: accept, handshake, hand over.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use msg_core::{Authenticator, SocketType};
use msg_transports::{is_connection_error, Connected, Listener};

use crate::handshake;
use crate::io::FramedIo;

/// A welcomed connection, waiting to be served.
pub(crate) struct Established<Io, Addr> {
    pub(crate) io: FramedIo<Io>,
    pub(crate) peer: Addr,
}

/// What the accept loop needs to know of its socket.
#[derive(Clone)]
pub(crate) struct AcceptConfig {
    pub(crate) socket_type: SocketType,
    pub(crate) max_frame_len: usize,
    pub(crate) handshake_timeout: Duration,
    pub(crate) auth: Option<Arc<dyn Authenticator>>,
}

/// Accepts connections until `stop` completes. Each connection's handshake runs in a task
/// of its own, so a peer that says nothing holds up no one; a welcomed connection is given
/// to `welcome`.
pub(crate) async fn accept_loop<L, S, W, F>(
    mut listener: L,
    config: AcceptConfig,
    stop: S,
    welcome: W,
) where
    L: Listener,
    S: Future<Output = ()>,
    W: Fn(Established<L::Io, L::Addr>) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send,
{
    let mut stop = std::pin::pin!(stop);
    loop {
        let accepted = tokio::select! {
            biased;
            _ = stop.as_mut() => return,
            accepted = std::future::poll_fn(|cx| listener.poll_accept(cx)) => accepted,
        };
        let Connected { io, peer } = match accepted {
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
        let config = config.clone();
        let welcome = welcome.clone();
        tokio::spawn(async move {
            let mut io = FramedIo::new(io, config.max_frame_len);
            let welcomed = handshake::within(
                config.handshake_timeout,
                handshake::server(&mut io, config.socket_type, config.auth.as_deref()),
            )
            .await;
            match welcomed {
                Ok(_) => {
                    tracing::debug!(%peer, "connection accepted");
                    welcome(Established { io, peer }).await;
                }
                Err(e) => tracing::info!(%peer, error = %e, "handshake failed; connection closed"),
            }
        });
    }
}
