//! Every limit of the README's table a peer can run into: what it gets (a typed error), what
//! is counted (`msg_limit_hits_total` by `limit`), and that nothing else is lost. A test
//! binary of its own: the counters are read with a local recorder, on a current-thread
//! runtime. The bodies that go through the sockets run over TCP, TLS, QUIC and IPC; those
//! that speak raw wire bytes (silent handshakes, an oversized frame, unread replies) or
//! stall a link through the TCP relay run over TCP, the limit being the same code on every
//! transport.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use msg::compression::{
    Compressor, DecompressError, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};
use msg::{
    serve, Error, Message, PubOptions, PubSocket, RepOptions, RepSocket, ReqOptions, ReqSocket,
    Request, SubOptions, SubSocket, Tcp,
};
use msg_tests::fixture::Fixture;
use msg_tests::recorded::{recorded, Recorded};
use msg_tests::{encode, raw_client, within};
use tokio_stream::StreamExt;
use tower::service_fn;

/// Runs `test` on a current-thread runtime under a recorder of its own, and returns what
/// it recorded.
fn with_counters<F: std::future::Future<Output = ()>>(test: F) -> Recorded {
    recorded(|_| test).1
}

/// As [`with_counters`], handing `test` the recording so far.
fn with_live_counters<F: std::future::Future<Output = ()>>(
    test: impl FnOnce(Recorded) -> F,
) -> Recorded {
    recorded(test).1
}

#[test]
fn a_frame_past_the_limit_closes_only_its_connection_and_is_counted() {
    let counters = with_counters(async {
        let mut rep =
            RepSocket::with_options(Tcp::default(), RepOptions::default().max_frame_len(1024));
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
        ));
        let mut bystander = ReqSocket::new(Tcp::default());
        within(bystander.connect(addr)).await.unwrap();
        let mut raw = raw_client(addr, msg::SocketType::Req)
            .await
            .expect("welcomed");
        // Past four times the limit: a request only a little over it would be answered
        // with an error and skipped, the connection going on (`errors.rs`).
        let frame = msg::wire::Frame::new(
            msg::wire::FrameKind::Request,
            1,
            Bytes::from(vec![0u8; 16 * 1024]),
        );
        let bytes = encode(frame);
        tokio::io::AsyncWriteExt::write_all(&mut raw, &bytes)
            .await
            .unwrap();
        msg_tests::assert_closed_by_server(&mut raw).await;
        assert_eq!(
            within(bystander.request(Bytes::from("ok"))).await.unwrap(),
            "ok"
        );
    });
    assert_eq!(counters.limit_hits("frame_len"), 1, "{counters:?}");
}

/// Runs the transport-generic `body` over TCP, TLS, QUIC and IPC, each a test of its own
/// in a module named after the body, under [`with_counters`], and hands the counters to
/// `check`.
macro_rules! each_transport_counted {
    ($body:ident, $check:path) => {
        mod $body {
            use msg_tests::fixture::{Fixture, Ipc, Quic, Tcp, Tls};

            #[test]
            fn tcp() {
                $check(&super::with_counters(super::$body(Tcp::new())));
            }
            #[test]
            fn tls() {
                $check(&super::with_counters(super::$body(Tls::new())));
            }
            #[test]
            fn quic() {
                $check(&super::with_counters(super::$body(Quic::new())));
            }
            #[test]
            fn ipc() {
                $check(&super::with_counters(super::$body(Ipc::new())));
            }
        }
    };
}

#[test]
fn silent_connections_past_max_handshakes_evict_the_oldest_and_a_real_client_gets_in() {
    // Raw TCP connections that never say hello: the transport is not what is tested.
    let counters = with_counters(async {
        let options = RepOptions::default()
            .max_handshakes(2)
            .handshake_timeout(Duration::from_secs(600));
        let mut rep = RepSocket::with_options(Tcp::default(), options);
        let mut events = rep.events();
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
        ));
        let mut silent = Vec::new();
        for _ in 0..3 {
            silent.push(within(tokio::net::TcpStream::connect(addr)).await.unwrap());
        }
        // The third evicts the first; with a 600 s handshake timeout nothing else closes it.
        msg_tests::assert_closed_by_server(&mut silent[0]).await;
        // And the server's events say so.
        let evicted = within(async {
            loop {
                match events.next().await.expect("the events go on") {
                    msg::SocketEvent::HandshakeFailed { error, .. } => return error,
                    msg::SocketEvent::Accepted { .. } => {}
                    other => panic!("{other:?}"),
                }
            }
        })
        .await;
        assert!(
            matches!(evicted, Error::HandshakeEvicted { max: 2 }),
            "{evicted:?}"
        );
        // Two silent connections cannot lock a real client out: it evicts the second.
        let mut req = ReqSocket::new(Tcp::default());
        within(req.connect(addr)).await.unwrap();
        assert_eq!(within(req.request(Bytes::from("in"))).await.unwrap(), "in");
        msg_tests::assert_closed_by_server(&mut silent[1]).await;
    });
    assert_eq!(counters.limit_hits("handshakes"), 2, "{counters:?}");
}

/// The frame limit of the receivers in the decompression tests.
const LIMIT: usize = 64 << 10;

/// The four built-in codecs.
fn codecs() -> Vec<Box<dyn Compressor>> {
    vec![
        Box::new(GzipCompressor::new(9)),
        Box::new(ZstdCompressor::new(19)),
        Box::new(SnappyCompressor::new()),
        Box::new(Lz4Compressor::new()),
    ]
}

/// A message of `codec`'s encoding that fits one frame under [`LIMIT`] and inflates to
/// 1 MiB of zeros, sixteen times the limit.
fn bomb(codec: &dyn Compressor) -> Message {
    let packed = codec.compress(&vec![0u8; 1 << 20]).unwrap();
    assert!(
        packed.len() < LIMIT,
        "{}: {} B",
        codec.encoding(),
        packed.len()
    );
    Message::new(Bytes::from(packed)).with_encoding(codec.encoding())
}

/// A bomb of every codec in each direction: a request (the client gets the server's
/// error), a reply (`Error::Decompress`), a publication (dropped, counted in
/// `SubStats::undecodable`); each time that message alone fails and the connection goes on.
async fn bombs_fail_alone_in_every_direction<F: Fixture>(f: F) {
    let mut rep =
        RepSocket::with_options(f.transport(), RepOptions::default().max_frame_len(LIMIT));
    rep.bind(f.bind_target()).await.unwrap();
    let target = f.dial_target(&rep.local_addr().unwrap());
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<_>| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut req = ReqSocket::new(f.transport());
    within(req.connect(target)).await.unwrap();
    for codec in codecs() {
        match within(req.send(bomb(&*codec))).await {
            Err(Error::Remote { message, .. }) => assert!(message.contains("limit"), "{message}"),
            other => panic!("{}: {other:?}", codec.encoding()),
        }
    }
    assert_eq!(within(req.request(Bytes::from("ok"))).await.unwrap(), "ok");

    // A server that answers request "i" with a bomb of codec i.
    let mut bomber = RepSocket::new(f.transport());
    bomber.bind(f.bind_target()).await.unwrap();
    let target = f.dial_target(&bomber.local_addr().unwrap());
    tokio::spawn(async move {
        let codecs = codecs();
        while let Some(request) = bomber.next().await {
            let answer = match std::str::from_utf8(request.msg()).unwrap().parse::<usize>() {
                Ok(i) => bomb(&*codecs[i]),
                Err(_) => request.request().message().clone(),
            };
            request.respond_message(answer).unwrap();
        }
    });
    let mut client =
        ReqSocket::with_options(f.transport(), ReqOptions::default().max_frame_len(LIMIT));
    within(client.connect(target)).await.unwrap();
    for i in 0..codecs().len() {
        match within(client.request(Bytes::from(i.to_string()))).await {
            Err(Error::Decompress(DecompressError::TooLarge { limit })) => {
                assert_eq!(limit, LIMIT)
            }
            other => panic!("codec {i}: {other:?}"),
        }
    }
    assert_eq!(
        within(client.request(Bytes::from("plain"))).await.unwrap(),
        "plain"
    );

    let mut publisher = PubSocket::new(f.transport());
    publisher.bind(f.bind_target()).await.unwrap();
    let mut options = SubOptions::default();
    options.max_frame_len = LIMIT;
    let mut sub = SubSocket::with_options(f.transport(), options);
    within(sub.connect(f.dial_target(&publisher.local_addr().unwrap())))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    for codec in codecs() {
        publisher
            .publish_message("t", &bomb(&*codec))
            .await
            .unwrap();
    }
    publisher.publish("t", Bytes::from("plain")).await.unwrap();
    let next = within(sub.next()).await.unwrap();
    assert_eq!(next.payload(), "plain");
    assert_eq!(sub.stats().undecodable, 4);
}

/// Four codecs, three directions.
fn twelve_decompressed_len_hits(counters: &Recorded) {
    assert_eq!(counters.limit_hits("decompressed_len"), 12, "{counters:?}");
}

each_transport_counted!(
    bombs_fail_alone_in_every_direction,
    super::twelve_decompressed_len_hits
);

/// `frame_len` where pub/sub meets it: a publication over the publisher's limit fails with
/// `Error::FrameTooLarge` and sends nothing; a frame over the subscriber's limit closes its
/// connection, and the subscriber redials and goes on.
async fn publications_past_the_frame_limit_fail_or_close_the_connection<F: Fixture>(f: F) {
    let mut publisher =
        PubSocket::with_options(f.transport(), PubOptions::default().max_frame_len(LIMIT));
    publisher.bind(f.bind_target()).await.unwrap();
    let mut options = SubOptions::default();
    options.max_frame_len = 1024;
    options.reconnect = msg::Backoff::default().max(Duration::from_millis(100));
    let mut sub = SubSocket::with_options(f.transport(), options);
    let mut events = sub.events();
    within(sub.connect(f.dial_target(&publisher.local_addr().unwrap())))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();

    match publisher
        .publish("t", Bytes::from(vec![0u8; LIMIT + 1]))
        .await
    {
        Err(Error::FrameTooLarge { max, .. }) => assert_eq!(max, LIMIT),
        other => panic!("{other:?}"),
    }
    publisher.publish("t", Bytes::from("before")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "before");

    // Past the subscriber's limit: its connection closes, it redials and subscribes again.
    publisher
        .publish("t", Bytes::from(vec![0u8; 2048]))
        .await
        .unwrap();
    within(async {
        let mut lost = false;
        while let Some(event) = events.next().await {
            match event {
                msg::SocketEvent::Disconnected { error, .. } => {
                    assert!(matches!(error, Error::Protocol(_)), "{error:?}");
                    lost = true;
                }
                msg::SocketEvent::Connected { .. } if lost => return,
                _ => {}
            }
        }
        panic!("events ended");
    })
    .await;
    // The ack of a new subscription, sent after the replay on the same connection, says
    // the publisher holds the replayed one.
    within(sub.subscribe("u")).await.unwrap();
    publisher.publish("t", Bytes::from("after")).await.unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "after");
}

/// Counted once, by the subscriber that received the long frame.
fn one_frame_len_hit(counters: &Recorded) {
    assert_eq!(counters.limit_hits("frame_len"), 1, "{counters:?}");
}

each_transport_counted!(
    publications_past_the_frame_limit_fail_or_close_the_connection,
    super::one_frame_len_hit
);

#[test]
fn a_server_stops_reading_a_client_that_leaves_its_replies_unread_and_loses_nothing() {
    // A raw TCP client, the one kind that can leave replies unread: the transport is not
    // what is tested.
    const N: u64 = 1024;
    const SIZE: usize = 64 * 1024;
    let counters = with_live_counters(|live| async move {
        let handled = Arc::new(AtomicUsize::new(0));
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        let count = handled.clone();
        tokio::spawn(serve(
            rep,
            service_fn(move |req: Request| {
                count.fetch_add(1, Ordering::SeqCst);
                async move { Ok::<_, Infallible>(req.msg().clone()) }
            }),
        ));
        let raw = raw_client(addr, msg::SocketType::Req)
            .await
            .expect("welcomed");
        let (mut read, mut write) = raw.into_split();
        let payload = Bytes::from(vec![3u8; SIZE]);
        // Requests are written, no reply read, until the socket stays full for a second
        // after the server counted its queued_bytes limit: it stopped reading. A server
        // that reads on lets the client write all N (64 MiB), which fails the test; a slow
        // host can only make the client wait more, never write more. The frame being
        // written then is finished later.
        let (sent, rest) = within(async {
            let mut id = 0u64;
            loop {
                id += 1;
                assert!(
                    id <= N,
                    "the server read {N} requests of {SIZE} B with every reply unread"
                );
                let frame =
                    msg::wire::Frame::new(msg::wire::FrameKind::Request, id, payload.clone());
                let mut bytes = encode(frame);
                let mut at = 0;
                while at < bytes.len() {
                    match write.try_write(&bytes[at..]) {
                        Ok(n) => at += n,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            let room = write.writable();
                            match tokio::time::timeout(Duration::from_secs(1), room).await {
                                Ok(room) => room.unwrap(),
                                Err(_) if live.limit_hits("queued_bytes") > 0 => {
                                    return (id, bytes.split_off(at));
                                }
                                // Full, and not counted yet: wait on.
                                Err(_) => {}
                            }
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        })
        .await;
        let at_stop = handled.load(Ordering::SeqCst);
        assert!((at_stop as u64) < sent, "{at_stop} handled of {sent} sent");
        let finish = tokio::spawn(async move {
            tokio::io::AsyncWriteExt::write_all(&mut write, &rest)
                .await
                .unwrap();
            write
        });
        // Every request written is answered, with its own id.
        let mut buf = bytes::BytesMut::new();
        let mut ids = Vec::new();
        while (ids.len() as u64) < sent {
            let reply = within(read_reply(&mut read, &mut buf)).await;
            assert_eq!(reply.kind, msg::wire::FrameKind::Response);
            assert_eq!(reply.payload.len(), SIZE);
            ids.push(reply.id);
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=sent).collect::<Vec<_>>());
        let _write = within(finish).await.unwrap();
        println!("reading stopped after {sent} requests of {SIZE} B sent, {at_stop} handled");
    });
    assert!(counters.limit_hits("queued_bytes") >= 1, "{counters:?}");
}

/// A server whose replies a client leaves unread starts no new call for it, but still
/// reads its cancels: it used to stop reading at the write high-water mark, so a client
/// could not cancel a call that hung while the replies of the others piled up.
#[test]
fn a_server_over_its_write_high_water_still_reads_cancels() {
    // A raw TCP client, the one kind that can leave replies unread.
    const LARGE: usize = 1024 * 1024;
    const REQUESTS: u64 = 48;
    with_live_counters(|live| async move {
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
        // The large replies wait for the gate, until every request has been read.
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let started = Arc::new(AtomicUsize::new(0));
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        let (gate_in, started_in) = (gate.clone(), started.clone());
        tokio::spawn(serve(
            rep,
            service_fn(move |req: Request| {
                let (dropped_tx, gate) = (dropped_tx.clone(), gate_in.clone());
                started_in.fetch_add(1, Ordering::SeqCst);
                async move {
                    if req.msg().as_ref() == b"hang" {
                        // Tells the test when the call is dropped: cancelled.
                        struct Tell(
                            Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>,
                        );
                        impl Drop for Tell {
                            fn drop(&mut self) {
                                if let Some(tx) = self.0.lock().unwrap().take() {
                                    let _ = tx.send(());
                                }
                            }
                        }
                        let _tell = Tell(dropped_tx);
                        std::future::pending::<()>().await;
                    }
                    let _pass = gate.acquire().await.unwrap();
                    Ok::<_, Infallible>(Bytes::from(vec![1u8; LARGE]))
                }
            }),
        ));
        let raw = raw_client(addr, msg::SocketType::Req)
            .await
            .expect("welcomed");
        let (_read, mut write) = raw.into_split();
        let send = |kind, id, payload: &'static [u8]| {
            encode(msg::wire::Frame::new(kind, id, Bytes::from_static(payload)))
        };
        use tokio::io::AsyncWriteExt;
        write
            .write_all(&send(msg::wire::FrameKind::Request, 1, b"hang"))
            .await
            .unwrap();
        for id in 2..=REQUESTS + 1 {
            write
                .write_all(&send(msg::wire::FrameKind::Request, id, b"large"))
                .await
                .unwrap();
        }
        within(async {
            while started.load(Ordering::SeqCst) < REQUESTS as usize + 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // 48 MiB of replies, none read: past the sockets' buffers and the server's write
        // high-water mark.
        gate.add_permits(REQUESTS as usize);
        within(async {
            while live.limit_hits("queued_bytes") == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        // Over the mark, the client cancels the call that hangs: the server reads the
        // cancel and drops the call.
        write
            .write_all(&send(msg::wire::FrameKind::Cancel, 1, b""))
            .await
            .unwrap();
        within(dropped_rx)
            .await
            .expect("the hanging call was dropped");
    });
}

/// Reads one frame from `read`, keeping bytes of later frames in `buf`.
async fn read_reply(
    read: &mut tokio::net::tcp::OwnedReadHalf,
    buf: &mut bytes::BytesMut,
) -> msg::wire::Frame {
    use tokio_util::codec::Decoder;
    let mut codec = msg::wire::FrameCodec::new();
    loop {
        if let Some(frame) = codec.decode(buf).expect("valid frames") {
            return frame;
        }
        let n = tokio::io::AsyncReadExt::read_buf(read, buf).await.unwrap();
        assert!(n > 0, "the server closed");
    }
}

thread_local! {
    /// Messages the last body on this thread saw dropped, for its check.
    static DROPPED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// `queued_bytes` for a subscriber: one that reads nothing holds at most its
/// `high_water_bytes` queued at the publisher, and what comes past it is dropped for it.
async fn messages_past_high_water_bytes_are_dropped_for_a_subscriber_that_reads_nothing<
    F: Fixture,
>(
    f: F,
) {
    const HIGH_WATER: usize = 64 * 1024;
    const SIZE: usize = 16 * 1024;
    // The message count stays far from the high-water mark (1,024): only bytes fill it.
    let options = PubOptions::default().high_water_bytes(HIGH_WATER);
    let mut publisher = PubSocket::with_options(f.transport(), options);
    publisher.bind(f.bind_target()).await.unwrap();
    let mut options = SubOptions::default();
    options.inbox = 1;
    let mut sub = SubSocket::with_options(f.transport(), options);
    within(sub.connect(f.dial_target(&publisher.local_addr().unwrap())))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    let payload = Bytes::from(vec![5u8; SIZE]);
    for _ in 0..2_000 {
        publisher.publish("t", payload.clone()).await.unwrap();
        let queued = publisher.subscriber_stats()[0].queued;
        assert!(queued * SIZE <= HIGH_WATER, "{queued} queued");
    }
    let dropped = publisher.stats().dropped;
    assert!(
        dropped > 0,
        "32 MiB published to a subscriber that reads nothing"
    );
    assert_eq!(publisher.subscriber_stats()[0].dropped, dropped);
    // The subscriber is still served.
    assert_eq!(within(sub.next()).await.unwrap().payload(), &payload);
    DROPPED.with(|d| d.set(dropped));
}

/// One queued_bytes hit per message dropped.
fn a_queued_bytes_hit_per_drop(counters: &Recorded) {
    let dropped = DROPPED.with(|d| d.get());
    assert_eq!(counters.limit_hits("queued_bytes"), dropped, "{counters:?}");
}

each_transport_counted!(
    messages_past_high_water_bytes_are_dropped_for_a_subscriber_that_reads_nothing,
    super::a_queued_bytes_hit_per_drop
);

#[test]
fn requests_on_a_stalled_client_connection_wait_are_counted_and_all_answered() {
    // Through the test relay, which stalls a TCP link: the transport is not what is tested.
    const N: usize = 256;
    const SIZE: usize = 64 * 1024;
    let counters = with_live_counters(|live| async move {
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let relay = msg_tests::Relay::start(rep.local_addr().unwrap()).await;
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move {
                Ok::<_, Infallible>(Bytes::from(req.msg().len().to_string()))
            }),
        ));
        let mut req = ReqSocket::new(Tcp::default());
        within(req.connect(relay.addr())).await.unwrap();
        // Nothing gets through: 16 MiB of requests fill the kernel's buffers and the
        // client's write buffer, and wait.
        relay.stall();
        let calls: Vec<_> = (0..N)
            .map(|i| {
                let req = req.clone();
                tokio::spawn(async move { req.request(Bytes::from(vec![i as u8; SIZE])).await })
            })
            .collect();
        within(async {
            while live.limit_hits("queued_bytes") == 0 || req.stats().in_flight < N {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            calls.iter().all(|call| !call.is_finished()),
            "no request fails or is answered while the link is stalled"
        );
        // Not checked: that only 1 MiB of them was taken into the write buffer. The driver
        // takes every request queued since its last pass in one batch, and checks the bound
        // only before it: 256 requests made at once all went into it (ReqStats::queued 0).
        relay.resume();
        for call in calls {
            let reply = within(call).await.unwrap().unwrap();
            assert_eq!(reply, SIZE.to_string());
        }
    });
    assert!(counters.limit_hits("queued_bytes") >= 1, "{counters:?}");
}

/// `connections` on a reply socket and a publisher: a client past the limit is refused with
/// the reason; the ones inside are served; a freed slot goes to the next.
async fn a_client_past_the_connection_limit_is_told_why_and_a_freed_slot_is_reused<F: Fixture>(
    f: F,
) {
    let mut rep = RepSocket::with_options(f.transport(), RepOptions::default().max_connections(2));
    rep.bind(f.bind_target()).await.unwrap();
    let addr = f.dial_target(&rep.local_addr().unwrap());
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<_>| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut first = ReqSocket::new(f.transport());
    within(first.connect(addr.clone())).await.unwrap();
    let mut second = ReqSocket::new(f.transport());
    within(second.connect(addr.clone())).await.unwrap();
    let mut third = ReqSocket::new(f.transport());
    let refused = within(third.connect(addr.clone())).await;
    match refused {
        Err(Error::HandshakeRejected { reason, .. }) => {
            assert!(reason.contains("connection limit"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // The two inside are served as before.
    assert_eq!(within(first.request(Bytes::from("1"))).await.unwrap(), "1");
    assert_eq!(within(second.request(Bytes::from("2"))).await.unwrap(), "2");
    // One leaves: its slot goes to the next client.
    within(first.close()).await;
    within(async {
        loop {
            let mut again = ReqSocket::new(f.transport());
            if again.connect(addr.clone()).await.is_ok() {
                assert_eq!(again.request(Bytes::from("3")).await.unwrap(), "3");
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // A publisher's subscribers likewise.
    let mut publisher =
        PubSocket::with_options(f.transport(), PubOptions::default().max_connections(1));
    publisher.bind(f.bind_target()).await.unwrap();
    let addr = f.dial_target(&publisher.local_addr().unwrap());
    let mut inside = SubSocket::new(f.transport());
    within(inside.connect(addr.clone())).await.unwrap();
    let mut outside = SubSocket::new(f.transport());
    assert!(matches!(
        within(outside.connect(addr.clone())).await,
        Err(Error::HandshakeRejected { .. })
    ));
}

/// Both refusals, and perhaps a retry of the freed slot that came too early, counted.
fn connections_counted(counters: &Recorded) {
    assert!(counters.limit_hits("connections") >= 2, "{counters:?}");
}

each_transport_counted!(
    a_client_past_the_connection_limit_is_told_why_and_a_freed_slot_is_reused,
    super::connections_counted
);

/// `subscriptions` and `pattern_len`: a subscribe past either is refused, and the
/// subscriber carries on with what it holds.
async fn subscriptions_past_the_limits_are_refused_and_the_subscriber_carries_on<F: Fixture>(f: F) {
    let options = PubOptions::default().max_subscriptions(3, 16);
    let mut publisher = PubSocket::with_options(f.transport(), options);
    publisher.bind(f.bind_target()).await.unwrap();
    let addr = f.dial_target(&publisher.local_addr().unwrap());
    let mut sub = SubSocket::new(f.transport());
    within(sub.connect(addr.clone())).await.unwrap();
    for pattern in ["a", "b", "c"] {
        within(sub.subscribe(pattern)).await.unwrap();
    }
    // Subscribing again to a pattern held takes no more room.
    within(sub.subscribe("a")).await.unwrap();
    match within(sub.subscribe("d")).await {
        Err(Error::Refused { reason }) => assert!(reason.contains("at most 3"), "{reason}"),
        other => panic!("{other:?}"),
    }
    within(sub.unsubscribe("c")).await.unwrap();
    let long = "x".repeat(17);
    assert!(matches!(
        within(sub.subscribe(long.clone())).await,
        Err(Error::Refused { .. })
    ));
    within(sub.subscribe("d")).await.unwrap();
    let mut held = sub.subscriptions();
    held.sort();
    assert_eq!(held, ["a", "b", "d"]);
    // The connection is fine: what it holds is delivered.
    for topic in ["c", long.as_str(), "d"] {
        publisher
            .publish(topic, Bytes::from(topic.to_owned()))
            .await
            .unwrap();
    }
    let next = within(sub.next()).await.unwrap();
    assert_eq!(next.topic(), "d");
}

/// One refusal of each.
fn one_subscriptions_and_one_pattern_len_hit(counters: &Recorded) {
    assert_eq!(counters.limit_hits("subscriptions"), 1, "{counters:?}");
    assert_eq!(counters.limit_hits("pattern_len"), 1, "{counters:?}");
}

each_transport_counted!(
    subscriptions_past_the_limits_are_refused_and_the_subscriber_carries_on,
    super::one_subscriptions_and_one_pattern_len_hit
);

/// `in_flight`: a connection never runs more calls at once than its limit.
async fn a_connection_never_runs_more_calls_than_its_in_flight_limit<F: Fixture>(f: F) {
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut rep = RepSocket::with_options(
        f.transport(),
        RepOptions::default().max_in_flight_per_conn(4),
    );
    rep.bind(f.bind_target()).await.unwrap();
    let addr = f.dial_target(&rep.local_addr().unwrap());
    let (r, m) = (running.clone(), most.clone());
    tokio::spawn(serve(
        rep,
        service_fn(move |req: Request<_>| {
            let (running, most) = (r.clone(), m.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(req.msg().clone())
            }
        }),
    ));
    let mut req = ReqSocket::new(f.transport());
    within(req.connect(addr.clone())).await.unwrap();
    let replies: Vec<_> = within(
        req.pipeline(
            futures_util::stream::iter((0..40u32).map(|i| Bytes::from(i.to_string()))),
            40,
        )
        .collect::<Vec<_>>(),
    )
    .await;
    assert!(replies.iter().all(Result::is_ok));
    assert_eq!(most.load(Ordering::SeqCst), 4);
}

/// The limit was reached at least once.
fn in_flight_counted(counters: &Recorded) {
    assert!(counters.limit_hits("in_flight") >= 1, "{counters:?}");
}

each_transport_counted!(
    a_connection_never_runs_more_calls_than_its_in_flight_limit,
    super::in_flight_counted
);

/// A publisher's session whose subscriber has stopped reading used to spin: with its write
/// buffer over the high-water mark and messages still queued, each pass asked for another
/// at once, so the session ran flat out (and counted a `queued_bytes` hit per pass) until
/// the subscriber read again. It now sleeps until the stream takes more.
#[test]
fn a_publisher_session_stalled_on_its_subscriber_sleeps_until_the_stream_takes_more() {
    const SIZE: usize = 64 * 1024;
    with_live_counters(|counters| async move {
        let mut publisher = PubSocket::new(Tcp::default());
        publisher.bind("127.0.0.1:0").await.unwrap();
        let mut options = SubOptions::default();
        options.inbox = 1;
        let mut sub = SubSocket::with_options(Tcp::default(), options);
        within(sub.connect(publisher.local_addr().unwrap()))
            .await
            .unwrap();
        within(sub.subscribe("t")).await.unwrap();
        // 32 MiB: past what the subscriber holds, the sockets' buffers and the write
        // buffer's high-water mark, with messages still queued behind them.
        let payload = Bytes::from(vec![5u8; SIZE]);
        for _ in 0..512 {
            publisher.publish("t", payload.clone()).await.unwrap();
            tokio::task::yield_now().await;
        }
        let stalled = publisher.subscriber_stats().remove(0);
        assert!(stalled.queued > 0, "{stalled:?}");
        // The session has nothing it can do until the subscriber reads.
        let before = counters.limit_hits("queued_bytes");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let during = counters.limit_hits("queued_bytes") - before;
        assert!(
            during < 100,
            "{during} passes over the write high-water in 200 ms of a stalled subscriber"
        );
        // Nothing is lost by sleeping: the subscriber reads again and is served.
        assert_eq!(within(sub.next()).await.unwrap().payload(), &payload);
    });
}
