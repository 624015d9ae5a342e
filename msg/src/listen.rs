//! Listeners of the sockets that say hello: a request or subscribe socket that binds, to
//! which reply or publish sockets connect. The hello follows the socket type, not the
//! direction (see [`Part`]): such a listener accepts a connection, says its hello on it,
//! and yields it once the peer (which answers, as its own listener would) welcomes it.

use std::sync::Arc;

use bytes::Bytes;
use msg_core::SocketType;
use msg_transports::{Listener, Transport};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::accept::{accept_loop, AcceptConfig, Established};
use crate::events::EventSink;
use crate::handshake::Part;
use crate::options::{ConnectionOptions, ListenOptions};
use crate::Error;

/// A listener bound and accepting: its address, and its welcomed connections.
pub(crate) struct Listening<Io, A> {
    /// The address bound, with the real port.
    pub(crate) local_addr: A,
    /// The connections whose hello is done, in the order they were welcomed. It ends once
    /// the listener stops.
    pub(crate) incoming: mpsc::Receiver<Established<Io, A>>,
}

/// What the listener of a `socket_type` socket that says hello (with `token`) needs: the
/// connection options of its connections, the listen options of its accept loop.
pub(crate) fn hello_config<A>(
    socket_type: SocketType,
    connection: &ConnectionOptions,
    listen: &ListenOptions,
    token: Option<Bytes>,
    events: Arc<EventSink<A>>,
) -> AcceptConfig<A> {
    AcceptConfig::new(socket_type, connection, listen, None, events)
        .with_part(Part::Hello { token })
}

/// Binds `transport` to `target` and accepts connections until `stop` is cancelled or the
/// receiver of the connections is dropped. Each connection plays `config`'s part of the
/// hello in a task of its own, under the handshake timeout, as a reply socket's accept
/// loop does (the same loop); at most `backlog` welcomed connections wait to be taken.
///
/// # Errors
///
/// [`Error::Transport`] if `target` does not resolve or cannot be bound.
pub(crate) async fn listen<T: Transport>(
    transport: &T,
    target: T::Target,
    config: AcceptConfig<T::Addr>,
    stop: CancellationToken,
    backlog: usize,
) -> Result<Listening<T::Io, T::Addr>, Error> {
    let listener = transport.bind(target).await?;
    let local_addr = listener.local_addr()?;
    let (tx, incoming) = mpsc::channel(backlog.max(1));
    let stopped = {
        let tx = tx.clone();
        async move {
            tokio::select! {
                _ = tx.closed() => {}
                _ = stop.cancelled() => {}
            }
        }
    };
    tracing::debug!(addr = %local_addr, socket = %config.socket_type, "listening");
    tokio::spawn(accept_loop(
        transport.clone(),
        listener,
        config,
        stopped,
        move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn).await;
            }
        },
    ));
    Ok(Listening {
        local_addr,
        incoming,
    })
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use tokio_stream::StreamExt;

    use super::*;
    use crate::events::SocketEvent;
    use crate::{RepSocket, ReqOptions, Tcp};

    const WAIT: Duration = Duration::from_secs(10);

    /// Admits the one token it holds.
    struct Only(&'static str);

    impl msg_core::Authenticator for Only {
        fn authenticate(&self, id: &Bytes) -> bool {
            id == self.0.as_bytes()
        }
    }

    /// A request socket's listener on a free loopback port, saying hello with `token`.
    async fn request_side(
        token: Option<&'static str>,
        stop: &CancellationToken,
    ) -> (
        Listening<tokio::net::TcpStream, SocketAddr>,
        Arc<EventSink<SocketAddr>>,
    ) {
        let events = EventSink::new();
        let config = hello_config(
            SocketType::Req,
            &ConnectionOptions::default(),
            &ListenOptions::default(),
            token.map(|t| Bytes::from_static(t.as_bytes())),
            events.clone(),
        );
        let target = "127.0.0.1:0".parse::<SocketAddr>().unwrap();
        let listening = listen(&Tcp::default(), target.into(), config, stop.clone(), 8)
            .await
            .unwrap();
        (listening, events)
    }

    /// Answers every request of `rep` with its payload reversed, in a task of its own.
    fn reverse(mut rep: RepSocket<Tcp>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(req) = rep.next().await {
                let reversed: Vec<u8> = req.msg().iter().rev().copied().collect();
                let _ = req.respond(Bytes::from(reversed));
            }
        })
    }

    #[tokio::test]
    async fn a_request_side_listener_says_hello_to_a_connecting_reply_socket_and_its_requests_are_answered(
    ) {
        let stop = CancellationToken::new();
        let (mut listening, _events) = request_side(None, &stop).await;
        let mut rep = RepSocket::new(Tcp::default());
        tokio::time::timeout(WAIT, rep.connect(listening.local_addr))
            .await
            .unwrap()
            .unwrap();
        let server = reverse(rep);
        let conn = tokio::time::timeout(WAIT, listening.incoming.recv())
            .await
            .unwrap()
            .expect("the reply socket's connection, welcomed");
        let (send, driver) =
            crate::conn::client::Builder::new(ReqOptions::default()).welcomed(conn.io);
        tokio::spawn(driver);
        for i in 0..10u8 {
            let answer = tokio::time::timeout(WAIT, send.request(Bytes::from(vec![i, 0])))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&answer[..], &[0, i]);
        }
        server.abort();
        stop.cancel();
    }

    #[tokio::test]
    async fn a_reply_socket_that_connects_out_checks_the_token_of_the_request_side_as_its_listener_would(
    ) {
        let stop = CancellationToken::new();
        let (mut listening, events) = request_side(Some("wrong"), &stop).await;
        let mut seen = events.subscribe();
        let mut rep = RepSocket::new(Tcp::default()).with_auth(Only("right"));
        let refused = tokio::time::timeout(WAIT, rep.connect(listening.local_addr))
            .await
            .unwrap();
        assert!(
            matches!(refused, Err(crate::Error::Refused { .. })),
            "{refused:?}"
        );
        // The request side is told why, with the code of admission's refusal.
        let event = tokio::time::timeout(WAIT, seen.next())
            .await
            .unwrap()
            .unwrap();
        match event {
            SocketEvent::Rejected { reason } => assert!(!reason.is_empty()),
            other => panic!("{other:?}"),
        }
        assert!(listening.incoming.try_recv().is_err(), "nothing welcomed");
        stop.cancel();
    }
}
