//! A message layer of your own: HMAC-SHA256 request signing. The client's `SignLayer` appends
//! a tag to every request; the server's `VerifyLayer`, in front of the handler, checks and
//! strips it, and refuses a request without a good one before the handler sees it.
//!
//! A message layer is an ordinary `tower::Layer`: over a `ReqSocket` it sees `Message`s, in
//! front of a `serve` handler it sees `Request`s. It needs no access to the socket.
//!
//! Run with `cargo run -p msg-examples --example custom_layer`.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::net::SocketAddr;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::future::{Either, MapErr, TryFutureExt};
use msg::{serve, Error, Message, RepSocket, ReqSocket, Request, Tcp};
use ring::hmac;
use tower::{service_fn, BoxError, Layer, Service, ServiceBuilder, ServiceExt};

/// HMAC-SHA256 tags are 32 bytes.
const TAG: usize = 32;

/// Signs every request with a key the server shares.
#[derive(Clone)]
pub struct SignLayer {
    key: hmac::Key,
}

impl SignLayer {
    /// Signs with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        SignLayer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

impl<S> Layer<S> for SignLayer {
    type Service = Sign<S>;

    fn layer(&self, inner: S) -> Sign<S> {
        Sign {
            inner,
            key: self.key.clone(),
        }
    }
}

/// The service of [`SignLayer`].
#[derive(Clone)]
pub struct Sign<S> {
    inner: S,
    key: hmac::Key,
}

impl<S: Service<Message>> Service<Message> for Sign<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, msg: Message) -> S::Future {
        let tag = hmac::sign(&self.key, msg.payload());
        let mut signed = BytesMut::with_capacity(msg.payload().len() + TAG);
        signed.extend_from_slice(msg.payload());
        signed.extend_from_slice(tag.as_ref());
        self.inner
            .call(Message::new(signed.freeze()).with_encoding(msg.encoding()))
    }
}

/// Checks and strips the tag of every request before the handler sees it.
#[derive(Clone)]
pub struct VerifyLayer {
    key: hmac::Key,
}

impl VerifyLayer {
    /// Verifies with `secret`.
    pub fn new(secret: &[u8]) -> Self {
        VerifyLayer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

impl<S> Layer<S> for VerifyLayer {
    type Service = Verify<S>;

    fn layer(&self, inner: S) -> Verify<S> {
        Verify {
            inner,
            key: self.key.clone(),
        }
    }
}

/// The service of [`VerifyLayer`].
#[derive(Clone)]
pub struct Verify<S> {
    inner: S,
    key: hmac::Key,
}

/// A request whose signature does not check out.
#[derive(Debug)]
pub struct BadSignature;

impl std::fmt::Display for BadSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad request signature")
    }
}

impl std::error::Error for BadSignature {}

impl<S, A> Service<Request<A>> for Verify<S>
where
    S: Service<Request<A>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future =
        Either<MapErr<S::Future, fn(S::Error) -> BoxError>, Ready<Result<S::Response, BoxError>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<A>) -> Self::Future {
        let payload = req.msg().clone();
        let Some(split) = payload.len().checked_sub(TAG) else {
            return Either::Right(ready(Err(Box::new(BadSignature))));
        };
        let (body, tag) = payload.split_at(split);
        if hmac::verify(&self.key, body, tag).is_err() {
            return Either::Right(ready(Err(Box::new(BadSignature))));
        }
        *req.message_mut() = Message::new(payload.slice(..split));
        Either::Left(
            self.inner
                .call(req)
                .map_err(Into::into as fn(S::Error) -> BoxError),
        )
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = b"a key both sides were given";
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    let handler = ServiceBuilder::new()
        .layer(VerifyLayer::new(secret))
        .service(service_fn(|req: Request<SocketAddr>| async move {
            println!("handler: {:?}, signature checked and stripped", req.msg());
            Ok::<_, Infallible>(Bytes::from("signed and delivered"))
        }));
    tokio::spawn(serve(rep, handler));

    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await?;
    let signed = ServiceBuilder::new()
        .layer(SignLayer::new(secret))
        .service(req.clone());
    let reply = signed.oneshot(Message::from("transfer 10")).await?;
    println!("signed request: {:?}", reply.payload());

    // Without the layer, the handler never sees the request.
    let refused: Result<Message, Error> = req.clone().oneshot(Message::from("transfer 1000")).await;
    println!("unsigned request: {}", refused.expect_err("refused"));
    Ok(())
}
