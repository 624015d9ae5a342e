//! A [`Tap`]: a TCP relay on loopback that passes every byte on unchanged and reads the
//! frames going by, both ways, so that a test can see what went on the wire (each frame's
//! kind, encoding header and payload length) without trusting the receiver's decoding.

use std::net::SocketAddr;

use bytes::BytesMut;
use msg::wire::{FrameCodec, FrameKind};
use msg::Encoding;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Decoder;

/// One frame seen on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// It went from the dialing side (client, subscriber) to the bound side.
    pub to_server: bool,
    /// Its kind.
    pub kind: FrameKind,
    /// Its encoding header.
    pub encoding: Encoding,
    /// The length of its payload as sent, encoded.
    pub payload_len: usize,
}

/// A relay between clients and one TCP server that records every frame it passes.
pub struct Tap {
    addr: SocketAddr,
    seen: watch::Sender<Vec<Seen>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Tap {
    /// Starts a tap in front of `server` on a free loopback port.
    pub async fn start(server: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tap");
        let addr = listener.local_addr().expect("tap address");
        let (seen, _) = watch::channel(Vec::new());
        let record = seen.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(server).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = upstream.into_split();
                tokio::spawn(pass(client_read, server_write, true, record.clone()));
                tokio::spawn(pass(server_read, client_write, false, record.clone()));
            }
        });
        Tap { addr, seen, accept }
    }

    /// The address clients dial.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every frame seen so far, in the order each direction carried them.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.borrow().clone()
    }

    /// Waits (within [`crate::WAIT`]) until `n` frames of `kind` have been seen, and returns
    /// those seen so far.
    pub async fn frames_of(&self, kind: FrameKind, n: usize) -> Vec<Seen> {
        let mut seen = self.seen.subscribe();
        crate::within(seen.wait_for(|s| s.iter().filter(|f| f.kind == kind).count() >= n))
            .await
            .expect("the tap is running");
        self.seen
            .borrow()
            .iter()
            .filter(|f| f.kind == kind)
            .cloned()
            .collect()
    }
}

/// Copies `from` to `to` unchanged, recording each whole frame that went by.
async fn pass(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    to_server: bool,
    seen: watch::Sender<Vec<Seen>>,
) {
    // Frames up to 1 GiB are read (a test's bomb may be large); past that the tap stops
    // reading frames but keeps passing bytes.
    let mut codec = FrameCodec::with_max_frame_len(1 << 30);
    let mut pending = BytesMut::new();
    let mut parsing = true;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
        if !parsing {
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        loop {
            match codec.decode(&mut pending) {
                Ok(Some(frame)) => seen.send_modify(|s| {
                    s.push(Seen {
                        to_server,
                        kind: frame.kind,
                        encoding: frame.encoding,
                        payload_len: frame.payload.len(),
                    })
                }),
                Ok(None) => break,
                Err(_) => {
                    parsing = false;
                    pending = BytesMut::new();
                    break;
                }
            }
        }
    }
}
