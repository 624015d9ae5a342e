//! Compression over real loopback sockets: the book's examples, every codec both ways with
//! the receiver unconfigured, mixed codecs, bytes on the wire, a custom codec, and a
//! decompression bomb.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use msg::compression::{
    Compressor, DecompressError, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};
use msg::layers::{CompressionLayer, GzipLayer};
use msg::{
    serve, Encoding, Error, Message, PubSocket, RepOptions, RepSocket, ReqSocket, Request,
    SubSocket, Tcp,
};
use msg_tests::{echo_server, within, Relay};
use tokio_stream::StreamExt;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};

fn codecs() -> Vec<Arc<dyn Fn() -> Box<dyn Compressor>>> {
    vec![
        Arc::new(|| Box::new(GzipCompressor::new(6))),
        Arc::new(|| Box::new(ZstdCompressor::new(3))),
        Arc::new(|| Box::new(SnappyCompressor::new())),
        Arc::new(|| Box::new(Lz4Compressor::new())),
    ]
}

/// Compressible payloads of the sizes the issue names.
fn payloads() -> Vec<Bytes> {
    [0usize, 1, 1024, 4 << 20]
        .iter()
        .map(|&n| Bytes::from((0..n).map(|i| b"abcdefgh"[i % 7]).collect::<Vec<u8>>()))
        .collect()
}

/// A boxed compressor as a value a socket takes.
struct Boxed(Box<dyn Compressor>);

impl Compressor for Boxed {
    fn encoding(&self) -> Encoding {
        self.0.encoding()
    }
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.0.compress(data)
    }
    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        self.0.decompress(data, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_reqrep_compression_example_works_as_written() {
    let mut rep = RepSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    req.connect(addr).await.unwrap();
    let big = Bytes::from(vec![b'x'; 10_000]);
    let expected = big.clone();
    tokio::spawn(async move {
        let request = rep.next().await.unwrap();
        assert_eq!(
            request.msg(),
            &expected,
            "the server sees the plain request"
        );
        request.respond(expected).unwrap();
    });
    assert_eq!(within(req.request(big.clone())).await.unwrap(), big);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_pubsub_compression_example_works_as_written() {
    let mut pub_socket = PubSocket::new(Tcp::new()).with_compressor(GzipCompressor::new(6));
    pub_socket.bind("127.0.0.1:0").await.unwrap();
    let mut sub_socket = SubSocket::new(Tcp::default());
    within(sub_socket.connect(pub_socket.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub_socket.subscribe("news")).await.unwrap();
    let big = Bytes::from(vec![b'y'; 10_000]);
    pub_socket.publish("news", big.clone()).await.unwrap();
    let msg = within(sub_socket.next()).await.unwrap();
    assert_eq!(msg.payload(), &big);
    assert!(msg.encoding().is_identity());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_round_trips_requests_responses_and_publications_to_unconfigured_receivers() {
    for make in codecs() {
        let encoding = make().encoding();
        // Requests compressed by the client; the echo server is not configured.
        let addr = echo_server().await;
        let mut req = ReqSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        req.connect(addr).await.unwrap();
        // Responses compressed by the server; the client is not configured.
        let mut rep = RepSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        rep.bind("127.0.0.1:0").await.unwrap();
        let rep_addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|r: Request| async move { Ok::<_, Infallible>(r.msg().clone()) }),
        ));
        let mut plain = ReqSocket::new(Tcp::default());
        plain.connect(rep_addr).await.unwrap();
        // Publications compressed by the publisher; the subscriber is not configured.
        let mut publisher = PubSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        publisher.bind("127.0.0.1:0").await.unwrap();
        let mut sub = SubSocket::new(Tcp::default());
        within(sub.connect(publisher.local_addr().unwrap()))
            .await
            .unwrap();
        within(sub.subscribe("t")).await.unwrap();

        for payload in payloads() {
            let n = payload.len();
            assert_eq!(
                within(req.request(payload.clone())).await.unwrap(),
                payload,
                "{encoding} request of {n} B"
            );
            assert_eq!(
                within(plain.request(payload.clone())).await.unwrap(),
                payload,
                "{encoding} response of {n} B"
            );
            publisher.publish("t", payload.clone()).await.unwrap();
            assert_eq!(
                within(sub.next()).await.unwrap().payload(),
                &payload,
                "{encoding} publication of {n} B"
            );
        }
        assert_eq!(sub.stats().undecodable, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_may_use_different_codecs_and_layers() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    // The server answers with zstd, through a layer in front of its handler.
    let handler = ServiceBuilder::new()
        .layer(CompressionLayer::new(ZstdCompressor::new(3)))
        .service(service_fn(|r: Request| async move {
            Ok::<_, Infallible>(r.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    // The client sends gzip, through a layer over the socket.
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let mut svc = ServiceBuilder::new().layer(GzipLayer::new(6)).service(req);
    let payload = Bytes::from(vec![b'z'; 8192]);
    let reply = within(async {
        svc.ready()
            .await
            .unwrap()
            .call(Message::new(payload.clone()))
            .await
    })
    .await
    .unwrap();
    assert_eq!(reply.payload(), &payload);
    assert!(reply.encoding().is_identity(), "decoded by the socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_payload_really_is_smaller_on_the_wire() {
    let addr = echo_server().await;
    let mut sent = Vec::new();
    for compress in [false, true] {
        let relay = Relay::start(addr).await;
        let mut req = ReqSocket::new(Tcp::default());
        if compress {
            req = req.with_compressor(GzipCompressor::new(6));
        }
        req.connect(relay.addr()).await.unwrap();
        let payload = Bytes::from(vec![b'w'; 1 << 20]);
        assert_eq!(within(req.request(payload.clone())).await.unwrap(), payload);
        sent.push(relay.bytes_to_server());
    }
    assert!(sent[0] > 1 << 20, "{sent:?}");
    assert!(
        sent[1] < sent[0] / 20,
        "gzip of 1 MiB of one byte: {sent:?}"
    );
}

/// A codec of the application's own: XOR with a key byte, code 200.
struct Xor(u8);

impl Compressor for Xor {
    fn encoding(&self) -> Encoding {
        Encoding::custom(200).unwrap()
    }
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        // Not smaller: a layer would send it plain; the test sends it by hand.
        Ok(data.iter().map(|b| b ^ self.0).collect())
    }
    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        if data.len() > limit {
            return Err(DecompressError::TooLarge { limit });
        }
        Ok(data.iter().map(|b| b ^ self.0).collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_codec_is_decoded_once_registered_and_refused_before() {
    let xored = Bytes::from(Xor(0x5a).compress(b"secret").unwrap());
    let encoded = Message::new(xored).with_encoding(Encoding::custom(200).unwrap());

    let mut rep = RepSocket::new(Tcp::default()).with_decompressor(Xor(0x5a));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|r: Request| async move { Ok::<_, Infallible>(r.msg().clone()) }),
    ));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let reply = within(req.send(encoded.clone())).await.unwrap();
    assert_eq!(reply.payload(), "secret");

    // A server that does not know the codec refuses the request, and only it.
    let plain_addr = echo_server().await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(plain_addr).await.unwrap();
    match within(req.send(encoded)).await {
        Err(Error::Remote { message }) => assert!(message.contains("200"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within(req.request(Bytes::from("still"))).await.unwrap(),
        "still"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_is_refused_and_every_other_client_is_served() {
    const LIMIT: usize = 1 << 20;
    let mut rep =
        RepSocket::with_options(Tcp::default(), RepOptions::default().max_frame_len(LIMIT));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|r: Request| async move {
            Ok::<_, Infallible>(Bytes::from(r.msg().len().to_string()))
        }),
    ));
    // 64 MiB of zeros, 64 KiB once gzipped, sent as is.
    let bomb = GzipCompressor::new(9)
        .compress(&vec![0u8; 64 << 20])
        .unwrap();
    assert!(bomb.len() < LIMIT);
    let bomb = Message::new(Bytes::from(bomb)).with_encoding(Encoding::GZIP);

    let mut attacker = ReqSocket::new(Tcp::default());
    attacker.connect(addr).await.unwrap();
    let mut honest = ReqSocket::new(Tcp::default());
    honest.connect(addr).await.unwrap();
    match within(attacker.send(bomb)).await {
        Err(Error::Remote { message }) => assert!(message.contains("limit"), "{message}"),
        other => panic!("{other:?}"),
    }
    // The attacker's connection and everyone else's go on.
    assert_eq!(
        within(attacker.request(Bytes::from("ab"))).await.unwrap(),
        "2"
    );
    assert_eq!(
        within(honest.request(Bytes::from("abc"))).await.unwrap(),
        "3"
    );
}

/// A small JSON message, much like its neighbours.
fn order(i: u32) -> Bytes {
    Bytes::from(format!(r#"{{"symbol":"BTC-EUR","side":"buy","qty":{i}}}"#))
}

/// Binds an echo server over `transport` behind a relay; returns the relay.
async fn echo_behind_relay<T>(transport: T) -> Relay
where
    T: msg::Transport<Target = msg::tcp::Endpoint, Addr = std::net::SocketAddr>,
{
    let mut rep = RepSocket::new(transport);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|r: Request| async move { Ok::<_, Infallible>(r.msg().clone()) }),
    ));
    Relay::start(addr).await
}

/// Sends 2,000 orders through `req`, 16 in flight, checking every echo.
async fn send_orders<T: msg::Transport>(req: &ReqSocket<T>) {
    let mut replies = req.pipeline(tokio_stream::iter((0..2000).map(order)), 16);
    let mut n = 0;
    while let Some(reply) = within(replies.next()).await {
        assert_eq!(reply.unwrap(), order(n));
        n += 1;
    }
    assert_eq!(n, 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_compression_shrinks_a_link_of_small_similar_messages_for_every_socket() {
    use msg::layers::StreamCompressionLayer;

    let transport = ServiceBuilder::new()
        .layer(StreamCompressionLayer::new(3))
        .service(Tcp::default());

    let plain = echo_behind_relay(Tcp::default()).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(plain.addr()).await.unwrap();
    send_orders(&req).await;

    let compressed = echo_behind_relay(transport.clone()).await;
    let mut req = ReqSocket::new(transport.clone());
    req.connect(compressed.addr()).await.unwrap();
    send_orders(&req).await;

    let (plain, compressed) = (plain.bytes_to_server(), compressed.bytes_to_server());
    assert!(
        compressed * 3 < plain,
        "{compressed} bytes compressed against {plain} plain"
    );

    // Publish/Subscribe over the same layered transport.
    let mut publisher = PubSocket::new(transport.clone());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(transport);
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    for i in 0..100 {
        publisher.publish("t", order(i)).await.unwrap();
    }
    for i in 0..100 {
        assert_eq!(within(sub.next()).await.unwrap().payload(), &order(i));
    }
}
