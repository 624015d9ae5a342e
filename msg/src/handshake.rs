//! The connection handshake of wire protocol v1, for both ends: the states are
//! `msg_core::proto`'s, the waiting is here.
//!
//! The client sends `Hello` (its socket type and optional auth token); the server answers
//! `Welcome` (its socket type) or `Reject` (a reason) and closes.

use bytes::Bytes;
use msg_core::proto::{ClientHandshake, HandshakeError, ServerHandshake};
use msg_core::wire::Hello;
use msg_core::{FrameError, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{self, Admission, AdmissionRequest, Verdict};
use crate::io::FramedIo;
use crate::Error;

/// A handshake's failure as the socket reports it.
pub(crate) fn error(e: HandshakeError) -> Error {
    match e {
        HandshakeError::Rejected { reason } => Error::HandshakeRejected { reason },
        HandshakeError::Mismatch { local, remote } => Error::SocketTypeMismatch { local, remote },
        HandshakeError::Refused { reason } => Error::Refused { reason },
        HandshakeError::Protocol(e) => e.into(),
        _ => Error::Protocol(FrameError::Malformed {
            kind: "hello",
            reason: "handshake failed",
        }),
    }
}

/// The client's side: says hello and waits for the verdict.
pub(crate) async fn client<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<Io>,
    local: SocketType,
    auth_token: Option<Bytes>,
) -> Result<(), Error> {
    let handshake = ClientHandshake::start(local, auth_token, &mut io.link);
    io.flush().await?;
    let frame = io.next_frame().await?.ok_or(Error::ConnectionClosed)?;
    handshake.receive(frame).map_err(error)
}

/// The server's side: reads the hello, checks it, asks admission, and welcomes or rejects
/// the client.
pub(crate) async fn server<Io: AsyncRead + AsyncWrite + Unpin, A: Clone + Send + 'static>(
    io: &mut FramedIo<Io>,
    local: SocketType,
    peer: &A,
    admission: Option<&Admission<A>>,
    refuse: Option<&str>,
) -> Result<Hello, Error> {
    let handshake = ServerHandshake::new(local);
    let frame = match io.next_frame().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Error::ConnectionClosed),
        Err(FrameError::Io(e)) => return Err(Error::Io(e)),
        Err(e) => {
            handshake.broken(&e, &mut io.link);
            close(io).await;
            return Err(Error::Protocol(e));
        }
    };
    let hello = match handshake.receive(frame, &mut io.link) {
        Ok(hello) => hello,
        Err(e) => {
            close(io).await;
            return Err(error(e));
        }
    };
    if let Some(reason) = refuse {
        let e = handshake.refuse(reason, &mut io.link);
        close(io).await;
        return Err(error(e));
    }
    if let Some(admission) = admission {
        let request =
            AdmissionRequest::new(peer.clone(), hello.socket_type, hello.auth_token.clone());
        if let Verdict::Reject { reason } = admission::decide(admission, request).await {
            let e = handshake.refuse(&reason, &mut io.link);
            close(io).await;
            return Err(error(e));
        }
    }
    handshake.welcome(&mut io.link);
    io.flush().await?;
    Ok(hello)
}

/// Writes the reject queued for the client and closes; best effort, as the connection is
/// dropped next.
async fn close<Io: AsyncRead + AsyncWrite + Unpin>(io: &mut FramedIo<Io>) {
    let _ = std::future::poll_fn(|cx| io.poll_close(cx)).await;
}
