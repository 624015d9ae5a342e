//! Helpers shared by the integration tests: bounded waits, an echo server, and a raw
//! client that speaks the wire protocol by hand.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use msg::wire::{Frame, FrameCodec, FrameKind, Hello};
use msg::{serve, Message, RepSocket, Request, SocketType, Tcp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};
use tower::{service_fn, BoxError, Service};

/// The longest any single step of a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Awaits `fut`, failing the test if it takes longer than [`WAIT`].
pub async fn within<F: Future>(fut: F) -> F::Output {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("step did not finish in time")
}

/// Binds a reply socket on loopback and serves `service` on it with `msg::serve`, in a task
/// of its own. Returns the socket's address.
pub async fn serve_on_loopback<S, R>(service: S) -> SocketAddr
where
    S: Service<Request<SocketAddr>, Response = R> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + 'static,
    R: Into<Message> + 'static,
{
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.expect("bind");
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(rep, service));
    addr
}

/// Binds a reply socket on loopback that echoes every request, served by `msg::serve`.
pub async fn echo_server() -> SocketAddr {
    serve_on_loopback(service_fn(|req: Request| async move {
        Ok::<_, Infallible>(req.msg().clone())
    }))
    .await
}

/// Encodes one frame as it goes on the wire.
pub fn encode(frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    FrameCodec::new()
        .encode(frame, &mut buf)
        .expect("encodable");
    buf
}

/// A raw TCP client that has completed the handshake as `socket_type`, or the server's
/// answer if it was not a welcome.
pub async fn raw_client(addr: SocketAddr, socket_type: SocketType) -> Result<TcpStream, Frame> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let hello = Hello {
        socket_type,
        auth_token: None,
    };
    stream
        .write_all(&encode(hello.to_frame()))
        .await
        .expect("write hello");
    let answer = read_frame(&mut stream).await.expect("an answer to hello");
    if answer.kind == FrameKind::Welcome {
        Ok(stream)
    } else {
        Err(answer)
    }
}

/// Reads one frame, or `None` if the server closed the connection first.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Frame> {
    read_frame_buffered(stream, &mut BytesMut::new()).await
}

/// Reads one frame, keeping bytes of later frames in `buf` for the next call.
pub async fn read_frame_buffered(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    let mut codec = FrameCodec::new();
    loop {
        if let Some(frame) = codec.decode(buf).expect("server sends valid frames") {
            return Some(frame);
        }
        match within(stream.read_buf(buf)).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Waits until the server closes `stream`, discarding what it sends first; panics if it
/// stays open past [`WAIT`].
pub async fn assert_closed_by_server(stream: &mut TcpStream) {
    let mut sink = vec![0u8; 4096];
    loop {
        match within(stream.read(&mut sink)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A request frame.
pub fn request_frame(id: u64, payload: &'static [u8]) -> Frame {
    Frame::new(FrameKind::Request, id, Bytes::from_static(payload))
}
