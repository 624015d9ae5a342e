//! [`Compression`], the service of [`CompressionLayer`](super::CompressionLayer), and the
//! [`Compress`] trait that says which way a request type's messages leave.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use metrics::{Counter, Histogram};
use msg_core::{Encoding, Message};
use tower::Service;

use super::codec::Compressor;
use super::future::CompressionFuture;

/// A compressor and the size from which it is used: what a compression layer, and a
/// socket's `with_compressor`, compress with. Cheap to clone.
#[derive(Clone)]
pub struct Codec {
    compressor: Arc<dyn Compressor>,
    min_len: usize,
    /// The ratio histogram and the plain-sent counter, registered at the first message (a
    /// label that is not a literal allocates at every naming).
    metrics: Arc<OnceLock<(Histogram, Counter)>>,
}

impl fmt::Debug for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Codec")
            .field("encoding", &self.encoding())
            .field("min_len", &self.min_len)
            .finish()
    }
}

impl Codec {
    /// `compressor`, for payloads of `min_len` bytes and up.
    pub fn new(compressor: Arc<dyn Compressor>, min_len: usize) -> Self {
        Codec {
            compressor,
            min_len,
            metrics: Arc::new(OnceLock::new()),
        }
    }

    /// The encoding of the payloads it compresses.
    pub fn encoding(&self) -> Encoding {
        self.compressor.encoding()
    }

    /// The size from which payloads are compressed.
    pub fn min_len(&self) -> usize {
        self.min_len
    }

    /// The compressor.
    pub fn compressor(&self) -> &Arc<dyn Compressor> {
        &self.compressor
    }

    /// Compresses `msg`, unless it is already encoded, shorter than the minimum, or would
    /// not shrink (or the codec fails): then it goes as it is.
    pub fn compress(&self, msg: Message) -> Message {
        if !msg.encoding().is_identity() || msg.payload().len() < self.min_len {
            return msg;
        }
        let encoding = self.encoding();
        let (ratio, skipped) = self.metrics.get_or_init(|| {
            (
                metrics::histogram!("msg_compression_ratio", "encoding" => encoding.name()),
                metrics::counter!("msg_compression_skipped_total", "encoding" => encoding.name()),
            )
        });
        match self.compressor.compress(msg.payload()) {
            Ok(packed) if packed.len() < msg.payload().len() => {
                ratio.record(packed.len() as f64 / msg.payload().len() as f64);
                // The other headers (a request's route) go as they are.
                let mut msg = msg;
                *msg.payload_mut() = Bytes::from(packed);
                msg.with_encoding(encoding)
            }
            _ => {
                skipped.increment(1);
                msg
            }
        }
    }
}

/// Which way a request type's messages leave, for a compression layer: a client's request
/// (a [`Message`], a publication) leaves with the request; a server's answer leaves with
/// the response.
pub trait Compress<Response>: Sized {
    /// What the layered service answers.
    type Output;

    /// The request as it leaves: compressed if its message leaves with it.
    fn compress_request(self, codec: &Codec) -> Self;

    /// The response as it leaves: compressed if a message leaves with it.
    fn compress_response(response: Response, codec: &Codec) -> Self::Output;
}

/// A client's request: compressed on the way out; the reply comes back decoded by the
/// socket.
impl Compress<Message> for Message {
    type Output = Message;

    fn compress_request(self, codec: &Codec) -> Self {
        codec.compress(self)
    }

    fn compress_response(response: Message, _codec: &Codec) -> Message {
        response
    }
}

/// The service of [`CompressionLayer`](super::CompressionLayer).
#[derive(Clone, Debug)]
pub struct Compression<S> {
    inner: S,
    codec: Codec,
}

impl<S> Compression<S> {
    pub(super) fn new(inner: S, codec: Codec) -> Self {
        Compression { inner, codec }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for Compression<S>
where
    S: Service<Req>,
    Req: Compress<S::Response>,
{
    type Response = Req::Output;
    type Error = S::Error;
    type Future = CompressionFuture<S::Future, Req, S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let req = req.compress_request(&self.codec);
        CompressionFuture::new(self.inner.call(req), self.codec.clone())
    }
}
