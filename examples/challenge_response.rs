//! A transport layer of your own: an HMAC challenge-response on every new connection, before
//! msg's hello, written once and used unchanged by all four sockets.
//!
//! The server sends a random 32-byte challenge; the client answers with
//! HMAC-SHA256(key, challenge); the server checks it in constant time and sends one byte to
//! admit the client, or closes the connection. Only then does msg's own handshake start, so a
//! peer without the key never reaches a socket.
//!
//! [`ChallengeResponseLayer`] is a `tower::Layer`; the service it makes is a
//! [`Transport`]: a layer over a transport is a transport. It also implements
//! `tower::Service<Target>`, which lets tower's own middleware (a connect timeout) stack on
//! top of it.
//!
//! Run with `cargo run -p msg-examples --example challenge_response`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use msg::transport::{Connected, Listener, Traffic, TransportError};
use msg::{serve, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Tcp, Transport};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tower::{service_fn, Layer, ServiceBuilder};

/// The challenge's length, and the answer's (HMAC-SHA256).
const LEN: usize = 32;
/// What the server sends to admit a client.
const ADMITTED: u8 = 1;

/// Makes [`ChallengeResponse`] transports that share `key`.
#[derive(Clone)]
pub struct ChallengeResponseLayer {
    key: hmac::Key,
}

impl ChallengeResponseLayer {
    /// A layer for peers that share `secret`.
    pub fn new(secret: &[u8]) -> Self {
        ChallengeResponseLayer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }
}

impl<T> Layer<T> for ChallengeResponseLayer {
    type Service = ChallengeResponse<T>;

    fn layer(&self, inner: T) -> ChallengeResponse<T> {
        ChallengeResponse {
            inner,
            key: self.key.clone(),
        }
    }
}

/// A transport whose connections must pass an HMAC challenge before they are used.
#[derive(Clone)]
pub struct ChallengeResponse<T> {
    inner: T,
    key: hmac::Key,
}

fn refused(peer: &impl std::fmt::Display, why: &'static str) -> TransportError {
    TransportError::Handshake {
        addr: peer.to_string(),
        source: why.into(),
    }
}

impl<T: Transport> Transport for ChallengeResponse<T> {
    type Target = T::Target;
    type Addr = T::Addr;
    type Io = T::Io;
    type Listener = T::Listener;

    async fn bind(&self, target: T::Target) -> Result<T::Listener, TransportError> {
        self.inner.bind(target).await
    }

    /// The client's half: answer the challenge, wait to be admitted.
    async fn connect(
        &self,
        target: T::Target,
    ) -> Result<Connected<T::Io, T::Addr>, TransportError> {
        let mut conn = self.inner.connect(target).await?;
        let mut challenge = [0u8; LEN];
        conn.io.read_exact(&mut challenge).await?;
        let answer = hmac::sign(&self.key, &challenge);
        conn.io.write_all(answer.as_ref()).await?;
        conn.io.flush().await?;
        match conn.io.read_u8().await {
            Ok(ADMITTED) => Ok(conn),
            _ => Err(refused(&conn.peer, "the server refused our answer")),
        }
    }

    /// The server's half: challenge, check the answer, admit or close.
    async fn accept(
        &self,
        conn: Connected<<T::Listener as Listener>::Conn, T::Addr>,
    ) -> Result<Connected<T::Io, T::Addr>, TransportError> {
        let mut conn = self.inner.accept(conn).await?;
        let mut challenge = [0u8; LEN];
        SystemRandom::new()
            .fill(&mut challenge)
            .map_err(|_| refused(&conn.peer, "no randomness for a challenge"))?;
        conn.io.write_all(&challenge).await?;
        conn.io.flush().await?;
        let mut answer = [0u8; LEN];
        conn.io.read_exact(&mut answer).await?;
        if hmac::verify(&self.key, &challenge, &answer).is_err() {
            return Err(refused(&conn.peer, "wrong answer to the challenge"));
        }
        conn.io.write_u8(ADMITTED).await?;
        conn.io.flush().await?;
        Ok(conn)
    }

    /// What the socket says of its traffic is for the transport underneath.
    fn set_traffic(&mut self, traffic: Traffic) {
        self.inner.set_traffic(traffic);
    }
}

/// The connector side as a `tower::Service`, so that tower's middleware (a connect timeout,
/// say) stacks on top: `ServiceBuilder::new().timeout(d).layer(cr).service(Tcp::default())`.
impl<T: Transport> tower::Service<T::Target> for ChallengeResponse<T> {
    type Response = Connected<T::Io, T::Addr>;
    type Error = TransportError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, TransportError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), TransportError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, target: T::Target) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(target).await })
    }
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One layered value, for every socket.
    let transport = ServiceBuilder::new()
        .layer(ChallengeResponseLayer::new(
            b"a secret both sides were given",
        ))
        .service(Tcp::default());

    // Request/Reply.
    let mut rep = RepSocket::new(transport.clone());
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        service_fn(
            |req: Request<SocketAddr>| async move { Ok::<_, Infallible>(req.msg().clone()) },
        ),
    ));
    let mut req = ReqSocket::new(transport.clone());
    req.connect(addr).await?;
    let reply = req
        .request(Bytes::from("hello through the challenge"))
        .await?;
    println!("req/rep: {:?}", reply);

    // Publish/Subscribe, with the same transport value.
    let mut publisher = PubSocket::new(transport.clone());
    publisher.bind("127.0.0.1:0").await?;
    let mut subscriber = SubSocket::new(transport.clone());
    subscriber
        .connect(publisher.local_addr().expect("bound"))
        .await?;
    subscriber.subscribe("news.>").await?;
    publisher
        .publish("news.today", Bytes::from("all is well"))
        .await?;
    let msg = subscriber.next().await.expect("a message");
    println!("pub/sub: {} {:?}", msg.topic(), msg.payload());

    // A client with the wrong key never reaches the server's socket.
    let intruder = ServiceBuilder::new()
        .layer(ChallengeResponseLayer::new(b"a guess"))
        .service(Tcp::default());
    let mut req = ReqSocket::new(intruder);
    let refused = tokio::time::timeout(Duration::from_secs(5), req.connect(addr)).await?;
    println!("wrong key: {}", refused.expect_err("refused"));
    Ok(())
}
