//! The connection handshake of wire protocol v1, for both ends.
//!
//! The client sends `Hello` (its socket type and optional auth token); the server answers
//! `Welcome` (its socket type) or `Reject` (a reason) and closes.

use bytes::Bytes;
use msg_core::wire::{parse_welcome, welcome_frame, Hello};
use msg_core::{Frame, FrameError, FrameKind, SocketType};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::admission::{self, Admission, AdmissionRequest, Verdict};
use crate::io::FramedIo;
use crate::Error;

/// The client's side: says hello and waits for the verdict.
pub(crate) async fn client<Io: AsyncRead + AsyncWrite + Unpin>(
    io: &mut FramedIo<Io>,
    local: SocketType,
    auth_token: Option<Bytes>,
) -> Result<(), Error> {
    let hello = Hello {
        socket_type: local,
        auth_token,
    };
    io.queue_frame(&hello.to_frame())?;
    io.flush().await?;
    let frame = io.next_frame().await?.ok_or(Error::ConnectionClosed)?;
    match frame.kind {
        FrameKind::Welcome => {
            let remote = parse_welcome(&frame.payload)?;
            if remote != local.peer() {
                return Err(Error::SocketTypeMismatch { local, remote });
            }
            Ok(())
        }
        FrameKind::Reject => Err(Error::HandshakeRejected {
            reason: String::from_utf8_lossy(&frame.payload).into_owned(),
        }),
        kind => Err(Error::UnexpectedFrame { kind }),
    }
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
    let frame = match io.next_frame().await {
        Ok(Some(frame)) => frame,
        Ok(None) => return Err(Error::ConnectionClosed),
        Err(FrameError::Io(e)) => return Err(Error::Io(e)),
        Err(e) => {
            reject(io, &e.to_string()).await;
            return Err(Error::Protocol(e));
        }
    };
    if frame.kind != FrameKind::Hello {
        reject(io, "the first frame must be a hello").await;
        return Err(Error::UnexpectedFrame { kind: frame.kind });
    }
    let hello = match Hello::parse(&frame.payload) {
        Ok(hello) => hello,
        Err(e) => {
            reject(io, &e.to_string()).await;
            return Err(Error::Protocol(e));
        }
    };
    if hello.socket_type != local.peer() {
        let reason = format!(
            "a {} socket cannot connect to a {local} socket",
            hello.socket_type
        );
        reject(io, &reason).await;
        return Err(Error::Refused { reason });
    }
    if let Some(reason) = refuse {
        reject(io, reason).await;
        return Err(Error::Refused {
            reason: reason.to_owned(),
        });
    }
    if let Some(admission) = admission {
        let request =
            AdmissionRequest::new(peer.clone(), hello.socket_type, hello.auth_token.clone());
        if let Verdict::Reject { reason } = admission::decide(admission, request).await {
            reject(io, &reason).await;
            return Err(Error::Refused { reason });
        }
    }
    io.queue_frame(&welcome_frame(local))?;
    io.flush().await?;
    Ok(hello)
}

/// Tells the client why it is refused; best effort, as the connection closes next.
async fn reject<Io: AsyncRead + AsyncWrite + Unpin>(io: &mut FramedIo<Io>, reason: &str) {
    let frame = Frame::new(
        FrameKind::Reject,
        0,
        Bytes::copy_from_slice(reason.as_bytes()),
    );
    if io.queue_frame(&frame).is_ok() {
        let _ = std::future::poll_fn(|cx| io.poll_close(cx)).await;
    }
}
