//! [`CompressionFuture`]: the response of a compressed call.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use super::service::{Codec, Compress};

pin_project_lite::pin_project! {
    /// The response of a call through [`Compression`](super::Compression): the inner
    /// service's, compressed if a message leaves with it.
    pub struct CompressionFuture<F, Req, Resp> {
        #[pin]
        inner: F,
        codec: Codec,
        _types: PhantomData<fn(Req) -> Resp>,
    }
}

impl<F, Req, Resp> CompressionFuture<F, Req, Resp> {
    pub(super) fn new(inner: F, codec: Codec) -> Self {
        CompressionFuture {
            inner,
            codec,
            _types: PhantomData,
        }
    }
}

impl<F, Req, Resp> std::fmt::Debug for CompressionFuture<F, Req, Resp> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompressionFuture").finish_non_exhaustive()
    }
}

impl<F, Req, Resp, E> Future for CompressionFuture<F, Req, Resp>
where
    F: Future<Output = Result<Resp, E>>,
    Req: Compress<Resp>,
{
    type Output = Result<Req::Output, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx))?;
        Poll::Ready(Ok(Req::compress_response(response, this.codec)))
    }
}
