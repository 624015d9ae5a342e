//! Compression over real loopback sockets, checked on the wire: every codec and every layer
//! compresses requests, responses (stream and `serve`) and publications, with the codec's
//! header and fewer bytes, and unconfigured receivers decode them; publications are
//! compressed once for all subscribers; short and incompressible payloads go plain (and are
//! counted); undecodable replies and publications fail alone; custom codecs on every
//! receiver; `SetEncodingLayer`; a decompression bomb. The wire is read by a
//! [`Tap`](msg_tests::tap::Tap) over TCP: what these tests check is the codec, the same on
//! every transport.

use std::convert::Infallible;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use msg::compression::{
    Compressor, DecompressError, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};
use msg::layers::{
    CompressionLayer, GzipLayer, Lz4Layer, SetEncodingLayer, SnappyLayer, ZstdLayer,
};
use msg::wire::FrameKind;
use msg::{
    serve, Encoding, Error, Message, PubSocket, Publication, RepOptions, RepSocket, ReqSocket,
    Request, SubSocket, Tcp,
};
use msg_tests::recorded::recorded;
use msg_tests::tap::{Seen, Tap};
use msg_tests::{echo_server, within, Relay};
use tokio_stream::StreamExt;
use tower::{service_fn, Layer, Service, ServiceBuilder, ServiceExt};

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

/// A payload of `n` bytes of text, which every codec shrinks to a small fraction.
fn text(n: usize) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| b"the quick brown fox "[i % 20])
            .collect::<Vec<u8>>(),
    )
}

/// `n` bytes no codec can shrink (xorshift noise).
fn noise(n: usize) -> Bytes {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    Bytes::from(
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect::<Vec<u8>>(),
    )
}

/// Asserts what a frame carrying a `plain`-byte payload looked like on the wire: under the
/// 256-byte threshold, plain and whole; from it on, with `encoding` and in under a quarter of
/// the bytes.
fn assert_on_wire(frame: &Seen, encoding: Encoding, plain: usize, what: &str) {
    if plain < msg::compression::DEFAULT_MIN_LEN {
        assert!(
            frame.encoding.is_identity(),
            "{what}: {plain} B sent as {}",
            frame.encoding
        );
        assert_eq!(frame.payload_len, plain, "{what}");
    } else {
        assert!(
            frame.encoding == encoding,
            "{what}: {plain} B sent as {}, not {encoding}",
            frame.encoding
        );
        assert!(
            frame.payload_len * 4 < plain,
            "{what}: {plain} B sent in {} B",
            frame.payload_len
        );
    }
}

/// A `serve` handler that answers with the request's payload.
async fn echo(request: Request) -> Result<Bytes, Infallible> {
    Ok(request.msg().clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_reqrep_compression_example_compresses_both_ways_on_the_wire() {
    let mut rep = RepSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    rep.bind("127.0.0.1:0").await.unwrap();
    let tap = Tap::start(rep.local_addr().unwrap()).await;
    let mut req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
    req.connect(tap.addr()).await.unwrap();
    let big = Bytes::from(vec![b'x'; 10_000]);
    let expected = big.clone();
    let server = tokio::spawn(async move {
        let request = rep.next().await.expect("a request");
        assert_eq!(
            request.msg(),
            &expected,
            "the server sees the plain request"
        );
        assert!(request.request().message().encoding().is_identity());
        request.respond(expected).unwrap();
        rep
    });
    assert_eq!(within(req.request(big.clone())).await.unwrap(), big);
    let _rep = within(server).await.expect("the server's checks hold");
    let request = &tap.frames_of(FrameKind::Request, 1).await[0];
    assert_on_wire(request, Encoding::GZIP, big.len(), "request");
    let response = &tap.frames_of(FrameKind::Response, 1).await[0];
    assert_on_wire(response, Encoding::GZIP, big.len(), "response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_books_pubsub_compression_example_compresses_on_the_wire() {
    let mut pub_socket = PubSocket::new(Tcp::new()).with_compressor(GzipCompressor::new(6));
    pub_socket.bind("127.0.0.1:0").await.unwrap();
    let tap = Tap::start(pub_socket.local_addr().unwrap()).await;
    let mut sub_socket = SubSocket::new(Tcp::default());
    within(sub_socket.connect(tap.addr())).await.unwrap();
    within(sub_socket.subscribe("news")).await.unwrap();
    let big = Bytes::from(vec![b'y'; 10_000]);
    pub_socket.publish("news", big.clone()).await.unwrap();
    let msg = within(sub_socket.next()).await.unwrap();
    assert_eq!(msg.payload(), &big);
    assert!(msg.encoding().is_identity());
    let publication = &tap.frames_of(FrameKind::Publish, 1).await[0];
    assert_on_wire(publication, Encoding::GZIP, big.len(), "publication");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_compresses_requests_responses_and_publications_on_the_wire_for_unconfigured_receivers(
) {
    for make in codecs() {
        let encoding = make().encoding();
        // Requests compressed by the client; the echo server is not configured.
        let requests = Tap::start(echo_server().await).await;
        let mut req = ReqSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        req.connect(requests.addr()).await.unwrap();
        // Responses compressed by a server answering from its stream; the client is not
        // configured.
        let mut stream_rep = RepSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        stream_rep.bind("127.0.0.1:0").await.unwrap();
        let streamed = Tap::start(stream_rep.local_addr().unwrap()).await;
        let stream_server = tokio::spawn(async move {
            while let Some(request) = stream_rep.next().await {
                let payload = request.msg().clone();
                request.respond(payload).unwrap();
            }
        });
        let mut to_stream = ReqSocket::new(Tcp::default());
        to_stream.connect(streamed.addr()).await.unwrap();
        // Responses compressed by a served socket.
        let mut served_rep = RepSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        served_rep.bind("127.0.0.1:0").await.unwrap();
        let served = Tap::start(served_rep.local_addr().unwrap()).await;
        tokio::spawn(serve(served_rep, service_fn(echo)));
        let mut to_served = ReqSocket::new(Tcp::default());
        to_served.connect(served.addr()).await.unwrap();
        // Publications compressed by the publisher; the subscriber is not configured.
        let mut publisher = PubSocket::new(Tcp::default()).with_compressor(Boxed(make()));
        publisher.bind("127.0.0.1:0").await.unwrap();
        let published = Tap::start(publisher.local_addr().unwrap()).await;
        let mut sub = SubSocket::new(Tcp::default());
        within(sub.connect(published.addr())).await.unwrap();
        within(sub.subscribe("t")).await.unwrap();

        let payloads = payloads();
        for payload in &payloads {
            let what = format!("{encoding}, {} B", payload.len());
            let reply = within(req.request(payload.clone())).await.unwrap();
            assert_eq!(&reply, payload, "request, {what}");
            let reply = within(to_stream.request(payload.clone())).await.unwrap();
            assert_eq!(&reply, payload, "stream response, {what}");
            let reply = within(to_served.request(payload.clone())).await.unwrap();
            assert_eq!(&reply, payload, "served response, {what}");
            publisher.publish("t", payload.clone()).await.unwrap();
            let message = within(sub.next()).await.unwrap();
            assert_eq!(message.payload(), payload, "publication, {what}");
            assert!(message.encoding().is_identity(), "decoded, {what}");
        }
        let n = payloads.len();
        for (frames, what) in [
            (requests.frames_of(FrameKind::Request, n).await, "request"),
            (
                streamed.frames_of(FrameKind::Response, n).await,
                "stream response",
            ),
            (
                served.frames_of(FrameKind::Response, n).await,
                "served response",
            ),
            (
                published.frames_of(FrameKind::Publish, n).await,
                "publication",
            ),
        ] {
            assert_eq!(frames.len(), n, "{what}");
            for (frame, payload) in frames.iter().zip(&payloads) {
                assert_on_wire(frame, encoding, payload.len(), what);
            }
        }
        assert_eq!(sub.stats().undecodable, 0);
        stream_server.abort();
    }
}

/// A handler that answers with the request's message: a named type, so that a layer in
/// front of it can be named in a bound.
#[derive(Clone)]
struct Echo;

impl Service<Request> for Echo {
    type Response = Message;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Message, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        std::future::ready(Ok(request.into_message()))
    }
}

/// Checks on the wire that `layer` compresses with `encoding` what leaves through each
/// place a message layer goes: requests over a `ReqSocket`, a handler's responses in front
/// of `serve`, and publications over a `PubSocket`.
async fn layer_compresses_on_the_wire<L>(layer: L, encoding: Encoding)
where
    L: Layer<ReqSocket<Tcp>> + Layer<Echo> + Layer<PubSocket<Tcp>>,
    <L as Layer<ReqSocket<Tcp>>>::Service: Service<Message, Response = Message, Error = Error>,
    <L as Layer<Echo>>::Service:
        Service<Request, Response = Message, Error = Infallible> + Clone + Send + 'static,
    <<L as Layer<Echo>>::Service as Service<Request>>::Future: Send + 'static,
    <L as Layer<PubSocket<Tcp>>>::Service: Service<Publication, Response = (), Error = Error>,
{
    let payload = text(64 * 1024);

    let requests = Tap::start(echo_server().await).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(requests.addr()).await.unwrap();
    let mut client = Layer::<ReqSocket<Tcp>>::layer(&layer, req);
    let reply = within(async {
        ServiceExt::<Message>::ready(&mut client)
            .await?
            .call(Message::new(payload.clone()))
            .await
    })
    .await
    .unwrap();
    assert_eq!(reply.payload(), &payload);
    let frame = &requests.frames_of(FrameKind::Request, 1).await[0];
    assert_on_wire(frame, encoding, payload.len(), "request through the layer");

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let responses = Tap::start(rep.local_addr().unwrap()).await;
    tokio::spawn(serve(rep, Layer::<Echo>::layer(&layer, Echo)));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(responses.addr()).await.unwrap();
    assert_eq!(within(req.request(payload.clone())).await.unwrap(), payload);
    let frame = &responses.frames_of(FrameKind::Response, 1).await[0];
    assert_on_wire(frame, encoding, payload.len(), "response through the layer");

    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let publications = Tap::start(publisher.local_addr().unwrap()).await;
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(publications.addr())).await.unwrap();
    within(sub.subscribe("t")).await.unwrap();
    let mut publish = Layer::<PubSocket<Tcp>>::layer(&layer, publisher);
    within(async {
        ServiceExt::<Publication>::ready(&mut publish)
            .await?
            .call(Publication::new("t", payload.clone()))
            .await
    })
    .await
    .unwrap();
    let message = within(sub.next()).await.unwrap();
    assert_eq!(message.payload(), &payload);
    let frame = &publications.frames_of(FrameKind::Publish, 1).await[0];
    assert_on_wire(
        frame,
        encoding,
        payload.len(),
        "publication through the layer",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_layer_compresses_requests_handler_responses_and_publications_on_the_wire() {
    layer_compresses_on_the_wire(GzipLayer::new(6), Encoding::GZIP).await;
    layer_compresses_on_the_wire(ZstdLayer::new(3), Encoding::ZSTD).await;
    layer_compresses_on_the_wire(SnappyLayer::new(), Encoding::SNAPPY).await;
    layer_compresses_on_the_wire(Lz4Layer::new(), Encoding::LZ4).await;
    for make in codecs() {
        let encoding = make().encoding();
        layer_compresses_on_the_wire(CompressionLayer::new(Boxed(make())), encoding).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_and_server_may_use_different_codecs_and_layers() {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let tap = Tap::start(rep.local_addr().unwrap()).await;
    // The server answers with zstd, through a layer in front of its handler.
    let handler = ServiceBuilder::new()
        .layer(CompressionLayer::new(ZstdCompressor::new(3)))
        .service(service_fn(|r: Request| async move {
            Ok::<_, Infallible>(r.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    // The client sends gzip, through a layer over the socket.
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(tap.addr()).await.unwrap();
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
    let request = &tap.frames_of(FrameKind::Request, 1).await[0];
    assert_on_wire(request, Encoding::GZIP, payload.len(), "request");
    let response = &tap.frames_of(FrameKind::Response, 1).await[0];
    assert_on_wire(response, Encoding::ZSTD, payload.len(), "response");
}

/// Gzip that counts its calls to `compress`.
struct CountingGzip(Arc<AtomicUsize>);

impl Compressor for CountingGzip {
    fn encoding(&self) -> Encoding {
        Encoding::GZIP
    }
    fn compress(&self, data: &[u8]) -> io::Result<Vec<u8>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        GzipCompressor::new(6).compress(data)
    }
    fn decompress(&self, data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
        GzipCompressor::new(6).decompress(data, limit)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publications_are_compressed_once_for_all_subscribers() {
    const PUBLISHED: usize = 10;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut publisher = PubSocket::new(Tcp::default()).with_compressor(CountingGzip(calls.clone()));
    publisher.bind("127.0.0.1:0").await.unwrap();
    let tap = Tap::start(publisher.local_addr().unwrap()).await;
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut sub = SubSocket::new(Tcp::default());
        within(sub.connect(tap.addr())).await.unwrap();
        within(sub.subscribe("t")).await.unwrap();
        subs.push(sub);
    }
    let payload = text(4096);
    for _ in 0..PUBLISHED {
        publisher.publish("t", payload.clone()).await.unwrap();
    }
    for sub in &mut subs {
        for _ in 0..PUBLISHED {
            assert_eq!(within(sub.next()).await.unwrap().payload(), &payload);
        }
    }
    let frames = tap.frames_of(FrameKind::Publish, 3 * PUBLISHED).await;
    for frame in &frames {
        assert_on_wire(frame, Encoding::GZIP, payload.len(), "publication");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        PUBLISHED,
        "one compression per publication, for 3 subscribers"
    );
}

#[test]
fn short_and_incompressible_payloads_go_plain_and_the_compression_metrics_count_them() {
    let ((), recording) = recorded(|_| async {
        let tap = Tap::start(echo_server().await).await;
        let mut req = ReqSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
        req.connect(tap.addr()).await.unwrap();
        let mut publisher = PubSocket::new(Tcp::default()).with_compressor(GzipCompressor::new(6));
        publisher.bind("127.0.0.1:0").await.unwrap();
        let published = Tap::start(publisher.local_addr().unwrap()).await;
        let mut sub = SubSocket::new(Tcp::default());
        within(sub.connect(published.addr())).await.unwrap();
        within(sub.subscribe("t")).await.unwrap();

        let (short, threshold, random) = (text(255), text(256), noise(4096));
        for payload in [&short, &threshold, &random] {
            let reply = within(req.request(payload.clone())).await.unwrap();
            assert_eq!(&reply, payload);
            publisher.publish("t", payload.clone()).await.unwrap();
            let message = within(sub.next()).await.unwrap();
            assert_eq!(message.payload(), payload);
        }
        for frames in [
            tap.frames_of(FrameKind::Request, 3).await,
            published.frames_of(FrameKind::Publish, 3).await,
        ] {
            assert!(frames[0].encoding.is_identity(), "255 B: {:?}", frames[0]);
            assert_eq!(frames[0].payload_len, 255);
            assert!(frames[1].encoding == Encoding::GZIP, "{:?}", frames[1]);
            assert!(frames[1].payload_len < 128, "{:?}", frames[1]);
            assert!(frames[2].encoding.is_identity(), "noise: {:?}", frames[2]);
            assert_eq!(frames[2].payload_len, random.len());
        }
    });
    // The 256-byte payloads, one request and one publication, compressed to under half.
    let ratios = recording.values("msg_compression_ratio", Some(("encoding", "gzip")));
    assert_eq!(ratios.len(), 2, "{ratios:?}");
    assert!(ratios.iter().all(|r| *r < 0.5), "{ratios:?}");
    // The noise, sent plain both times; the short payloads are not even tried.
    let skipped = recording.values("msg_compression_skipped_total", Some(("encoding", "gzip")));
    assert_eq!(skipped.iter().sum::<f64>(), 2.0, "{skipped:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_encoding_marks_a_payload_the_application_compressed_itself() {
    let tap = Tap::start(echo_server().await).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(tap.addr()).await.unwrap();
    let plain = text(8192);
    let packed = Bytes::from(GzipCompressor::new(6).compress(&plain).unwrap());
    let mut svc = ServiceBuilder::new()
        .layer(SetEncodingLayer::new(Encoding::GZIP))
        .service(req);
    let reply = within(async {
        svc.ready()
            .await
            .unwrap()
            .call(Message::new(packed.clone()))
            .await
    })
    .await
    .unwrap();
    // The server decoded it by its header, and echoed the plain payload.
    assert_eq!(reply.payload(), &plain);
    let frame = &tap.frames_of(FrameKind::Request, 1).await[0];
    assert!(frame.encoding == Encoding::GZIP, "{frame:?}");
    assert_eq!(
        frame.payload_len,
        packed.len(),
        "sent as the application packed it"
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
        Err(Error::Remote { message, .. }) => assert!(message.contains("200"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within(req.request(Bytes::from("still"))).await.unwrap(),
        "still"
    );
}

/// The bomb's memory is measured in `tests/memory.rs` (1 GiB of each codec, under a
/// counting allocator), and its counter, in every direction and over every transport, in
/// `tests/limits.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_request_gets_an_error_and_every_connection_goes_on() {
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
        Err(Error::Remote { message, .. }) => assert!(message.contains("limit"), "{message}"),
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

/// The payload "secret" encoded with the [`Xor`] codec, code 200.
fn xored_secret() -> Message {
    let xored = Bytes::from(Xor(0x5a).compress(b"secret").unwrap());
    Message::new(xored).with_encoding(Encoding::custom(200).unwrap())
}

/// A payload that claims to be gzip and is not.
fn corrupt_gzip() -> Message {
    Message::new(Bytes::from_static(b"not gzip at all")).with_encoding(Encoding::GZIP)
}

/// Binds a reply socket that answers "xor" with [`xored_secret`], "corrupt" with
/// [`corrupt_gzip`], and anything else with itself, from its stream; returns its address.
async fn answering_encoded() -> std::net::SocketAddr {
    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(request) = rep.next().await {
            let answer = match &request.msg()[..] {
                b"xor" => xored_secret(),
                b"corrupt" => corrupt_gzip(),
                other => Message::new(Bytes::copy_from_slice(other)),
            };
            request.respond_message(answer).unwrap();
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_codec_is_decoded_by_a_client_and_a_subscriber_once_registered() {
    let server = answering_encoded().await;
    let mut req = ReqSocket::new(Tcp::default()).with_decompressor(Xor(0x5a));
    req.connect(server).await.unwrap();
    let reply = within(req.request(Bytes::from("xor"))).await.unwrap();
    assert_eq!(reply, "secret");

    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(Tcp::default()).with_decompressor(Xor(0x5a));
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    publisher
        .publish_message("t", &xored_secret())
        .await
        .unwrap();
    let message = within(sub.next()).await.unwrap();
    assert_eq!(message.payload(), "secret");
    assert!(message.encoding().is_identity());
    assert_eq!(sub.stats().undecodable, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_reply_fails_only_its_call_and_the_connection_goes_on() {
    let tap = Tap::start(answering_encoded().await).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(tap.addr()).await.unwrap();
    match within(req.request(Bytes::from("corrupt"))).await {
        Err(Error::Decompress(DecompressError::Corrupt { encoding, .. })) => {
            assert!(encoding == Encoding::GZIP, "{encoding}")
        }
        other => panic!("{other:?}"),
    }
    match within(req.request(Bytes::from("xor"))).await {
        Err(Error::UnsupportedEncoding { encoding }) => assert_eq!(encoding.code(), 200),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        within(req.request(Bytes::from("still"))).await.unwrap(),
        "still"
    );
    // All three over the one connection the client made.
    let hellos = tap.frames_of(FrameKind::Hello, 1).await;
    assert_eq!(hellos.len(), 1, "{:?}", tap.seen());
    assert!(req.stats().connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_publication_is_dropped_and_counted_and_the_next_one_arrives() {
    let mut publisher = PubSocket::new(Tcp::default());
    publisher.bind("127.0.0.1:0").await.unwrap();
    let mut sub = SubSocket::new(Tcp::default());
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    // A codec the subscriber does not know, then a corrupt payload, then a plain one.
    publisher
        .publish_message("t", &xored_secret())
        .await
        .unwrap();
    publisher
        .publish_message("t", &corrupt_gzip())
        .await
        .unwrap();
    publisher.publish("t", Bytes::from("plain")).await.unwrap();
    let message = within(sub.next()).await.unwrap();
    assert_eq!(message.payload(), "plain");
    assert_eq!(
        message.seq(),
        3,
        "the two before it were received and dropped"
    );
    assert_eq!(sub.stats().undecodable, 2);
}
