//! Memory under the limits, measured: "memory under each is bounded by the configuration,
//! not by the peer". A counting global allocator tracks the bytes this process holds and the
//! most it held; each test marks the count just before a peer does its worst (a 4 GiB length
//! prefix, a 1 GiB decompression bomb of each codec, a flood of subscribe and unsubscribe
//! frames whose acks are never read, subscribers that never read), prints how far the peak
//! rose (`--nocapture` shows the figures), and bounds it.
//!
//! A test binary of its own: the allocator counts the whole process, so its tests take one
//! lock and run one at a time, each on a runtime of its own. The peers are raw TCP clients
//! or the sockets themselves; what is measured is the receiving side's code, the same on
//! every transport.

#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use msg::compression::{
    Compressor, GzipCompressor, Lz4Compressor, SnappyCompressor, ZstdCompressor,
};
use msg::wire::{Flags, Frame, FrameKind, Header};
use msg::{
    serve, Encoding, Error, Message, PubOptions, PubSocket, RepOptions, RepSocket, ReqSocket,
    Request, SocketType, SubSocket, Tcp,
};
use msg_tests::{assert_closed_by_server, encode, raw_client, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use tower::service_fn;

/// Bytes allocated and not yet freed.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
/// The most [`CURRENT`] has been since the last [`mark`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting what it hands out.
struct Counting;

fn grew(bytes: usize) {
    let now = CURRENT.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    CURRENT.fetch_sub(bytes, Ordering::Relaxed);
}

// SAFETY: every call is passed to `System` unchanged; the counters only observe.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        System.dealloc(p, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let q = System.realloc(p, layout, new_size);
        if !q.is_null() {
            if new_size > layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One test at a time: each measures the whole process.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `test` alone, on a runtime of its own.
fn alone<F: Future<Output = ()>>(test: F) {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// Starts a measurement: the peak is reset to what is held now, which is returned.
fn mark() -> usize {
    let now = CURRENT.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// How far the peak rose above `base` since [`mark`].
fn peak_since(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}

const MIB: usize = 1 << 20;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / MIB as f64
}

#[test]
fn a_4_gib_length_prefix_is_refused_without_allocating_it() {
    alone(async {
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|r: Request| async move { Ok::<_, Infallible>(r.msg().clone()) }),
        ));
        let mut raw = raw_client(addr, SocketType::Req).await.expect("welcomed");
        let header = Header {
            kind: FrameKind::Request,
            flags: Flags::NONE,
            encoding: Encoding::IDENTITY,
            id: 1,
            topic_len: 0,
            payload_len: u32::MAX,
        };
        let mut bytes = BytesMut::new();
        header.encode(&mut bytes);
        bytes.extend_from_slice(&[0u8; 4096]);
        let base = mark();
        raw.write_all(&bytes).await.unwrap();
        assert_closed_by_server(&mut raw).await;
        let peak = peak_since(base);
        println!("4 GiB length prefix: peak +{:.2} MiB", mib(peak));
        // Far under the 64 MiB frame limit, let alone 4 GiB: nothing is reserved for it.
        assert!(peak < MIB, "peak +{peak} B");
    });
}

/// A request of `codec`'s encoding that inflates to 1 GiB of zeros.
fn bomb(codec: &dyn Compressor) -> Message {
    let packed = codec.compress(&vec![0u8; 1 << 30]).unwrap();
    // Copied to its exact size: the codec's output vector may have far more capacity,
    // which freed during a measurement would hide growth.
    Message::new(Bytes::copy_from_slice(&packed)).with_encoding(codec.encoding())
}

#[test]
fn a_1_gib_bomb_of_each_codec_is_cut_at_the_frame_limit() {
    // The server's frame limit, the default: what decoding may produce at most.
    const LIMIT: usize = msg::wire::DEFAULT_MAX_FRAME_LEN;
    let codecs: Vec<Box<dyn Compressor>> = vec![
        Box::new(GzipCompressor::new(9)),
        Box::new(ZstdCompressor::new(3)),
        Box::new(SnappyCompressor::new()),
        Box::new(Lz4Compressor::new()),
    ];
    for codec in codecs {
        alone(async move {
            // Built under the lock: a gigabyte held and freed by another test's thread
            // would hide this one's growth.
            let bomb = bomb(&*codec);
            let wire = bomb.payload().len();
            let options = RepOptions::default().max_frame_len(LIMIT);
            let mut rep = RepSocket::with_options(Tcp::default(), options);
            rep.bind("127.0.0.1:0").await.unwrap();
            let addr = rep.local_addr().unwrap();
            tokio::spawn(serve(
                rep,
                service_fn(|r: Request| async move {
                    Ok::<_, Infallible>(Bytes::from(r.msg().len().to_string()))
                }),
            ));
            let mut req = ReqSocket::new(Tcp::default());
            within(req.connect(addr)).await.unwrap();
            let encoding = bomb.encoding();
            // Held here, so that the client freeing its copy does not hide growth either.
            let _held = bomb.clone();
            let base = mark();
            match within(req.send(bomb)).await {
                Err(Error::Remote { message, .. }) => {
                    assert!(message.contains("limit"), "{message}")
                }
                other => panic!("{encoding}: {other:?}"),
            }
            let peak = peak_since(base);
            println!(
                "1 GiB {encoding} bomb, {:.2} MiB on the wire, limit {} MiB: peak +{:.2} MiB",
                mib(wire),
                LIMIT / MIB,
                mib(peak)
            );
            // The payload is held by the client and the server, in their buffers and the
            // frame; decoding adds at most the limit.
            let bound = LIMIT + 4 * wire + 8 * MIB;
            assert!(
                peak < bound,
                "{encoding}: peak +{:.2} MiB, bound {:.2} MiB",
                mib(peak),
                mib(bound)
            );
            // The connection goes on.
            assert_eq!(within(req.request(Bytes::from("ab"))).await.unwrap(), "2");
        });
    }
}

/// Subscribe and unsubscribe frames, alternately, for pattern "a", ids from `first`.
fn churn(first: u64, n: u64) -> BytesMut {
    let mut bytes = BytesMut::new();
    for id in first..first + n {
        let kind = if id % 2 == 0 {
            FrameKind::Subscribe
        } else {
            FrameKind::Unsubscribe
        };
        let mut frame = Frame::new(kind, id, Bytes::new());
        frame.topic = Bytes::from_static(b"a");
        bytes.extend_from_slice(&encode(frame));
    }
    bytes
}

/// How often the process has counted `msg_limit_hits_total{limit="queued_bytes"}`, through a
/// recorder installed for the whole process at the first call.
fn queued_bytes_hits() -> u64 {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    static SNAPSHOTTER: std::sync::OnceLock<Snapshotter> = std::sync::OnceLock::new();
    let snapshotter = SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this binary");
        snapshotter
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == "msg_limit_hits_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "limit" && l.value() == "queued_bytes")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_subscriber_flooding_subscribe_frames_without_reading_acks_is_bounded() {
    // A million frames: 21 MB sent, 20 MB of acks owed, in seconds.
    const FRAMES: u64 = 1_000_000;
    const BATCH: u64 = 1_000;
    alone(async {
        let before = queued_bytes_hits();
        let mut publisher = PubSocket::new(Tcp::default());
        publisher.bind("127.0.0.1:0").await.unwrap();
        let addr = publisher.local_addr().unwrap();
        let raw = raw_client(addr, SocketType::Sub).await.expect("welcomed");
        let (mut read, mut write) = raw.into_split();
        let base = mark();
        // Written in a task of its own, which a publisher that stops reading holds up.
        let writer = tokio::spawn(async move {
            let mut first = 0;
            while first < FRAMES {
                let batch = churn(first, BATCH);
                write
                    .write_all(&batch)
                    .await
                    .expect("the publisher reads on");
                first += BATCH;
            }
            // The write half is kept: dropping it would tell the publisher we left.
            write
        });
        // No ack is read until the publisher stops reading (it counts its queued_bytes
        // limit) or every frame is written.
        until_paused_or_written(&writer, before).await;
        let peak_unread = peak_since(base);
        // Then every frame is answered.
        read_bare_acks(&mut read, FRAMES).await;
        let _write = within(writer).await.expect("the writer");
        let peak = peak_since(base);
        println!(
            "subscribe flood of {FRAMES} frames: peak +{:.2} MiB while no ack was read, +{:.2} MiB in all ({:.1} B per frame)",
            mib(peak_unread),
            mib(peak),
            peak as f64 / FRAMES as f64
        );
        drop(publisher);
        // Acks owed are held at 1 MiB, plus the frames read in the last chunk.
        assert!(peak < 4 * MIB, "peak +{:.2} MiB", mib(peak));
    });
}

/// Subscribe frames for a pattern already held and unsubscribe frames for one never held,
/// alternating, with ids from `first`: changes that change nothing.
fn idle_churn(first: u64, n: u64) -> BytesMut {
    let mut bytes = BytesMut::new();
    for id in first..first + n {
        let (kind, pattern) = if id % 2 == 0 {
            (FrameKind::Subscribe, "held")
        } else {
            (FrameKind::Unsubscribe, "never.held")
        };
        let mut frame = Frame::new(kind, id, Bytes::new());
        frame.topic = Bytes::from_static(pattern.as_bytes());
        bytes.extend_from_slice(&encode(frame));
    }
    bytes
}

#[test]
fn a_subscribe_flood_that_changes_nothing_leaves_routes_alone_and_other_subscribers_served() {
    const FRAMES: u64 = 200_000;
    const BATCH: u64 = 1_000;
    const PUBLICATIONS: u64 = 20_000;
    alone(async {
        let before = queued_bytes_hits();
        // Lossless: every publication must reach the reading subscriber.
        let options = PubOptions::default().slow_subscriber(msg::SlowSubscriber::Wait);
        let mut publisher = PubSocket::with_options(Tcp::default(), options);
        publisher.bind("127.0.0.1:0").await.unwrap();
        let addr = publisher.local_addr().unwrap();
        let mut reader = SubSocket::new(Tcp::default());
        within(reader.connect(addr)).await.unwrap();
        within(reader.subscribe("t")).await.unwrap();

        let mut raw = raw_client(addr, SocketType::Sub).await.expect("welcomed");
        let mut held = Frame::new(FrameKind::Subscribe, 0, Bytes::new());
        held.topic = Bytes::from_static(b"held");
        raw.write_all(&encode(held)).await.unwrap();
        let ack = msg_tests::read_frame(&mut raw).await.expect("an ack");
        assert_eq!(ack.kind, FrameKind::SubscriptionAck);
        assert!(ack.payload.is_empty(), "refused: {:?}", ack.payload);
        let changes = publisher.stats().subscription_changes;

        let (mut read, mut write) = raw.into_split();
        let base = mark();
        let writer = tokio::spawn(async move {
            let mut first = 1;
            while first <= FRAMES {
                write
                    .write_all(&idle_churn(first, BATCH))
                    .await
                    .expect("the publisher reads on");
                first += BATCH;
            }
            write
        });
        let publishing = tokio::spawn({
            let publisher = publisher.clone();
            async move {
                for i in 0..PUBLICATIONS {
                    publisher
                        .publish("t", Bytes::from(i.to_be_bytes().to_vec()))
                        .await
                        .expect("publish");
                }
            }
        });
        // The reading subscriber gets every publication, in order, while the flood goes on.
        tokio::time::timeout(Duration::from_secs(120), async {
            for i in 0..PUBLICATIONS {
                let msg = reader.next().await.expect("a publication");
                assert_eq!(msg.payload().as_ref(), i.to_be_bytes(), "publication {i}");
            }
        })
        .await
        .expect("every publication within 120 s");
        within(publishing).await.expect("the publishing task");
        // The flood is read until the publisher pauses on the acks it owes, or all of it.
        until_paused_or_written(&writer, before).await;
        let peak_unread = peak_since(base);
        // Then every frame is answered, each with an empty ack: nothing refused.
        read_bare_acks(&mut read, FRAMES).await;
        let _write = within(writer).await.expect("the writer");
        let peak = peak_since(base);
        let changed = publisher.stats().subscription_changes - changes;
        println!(
            "idle subscribe flood of {FRAMES} frames beside {PUBLICATIONS} publications: \
             {changed} subscription changes, peak +{:.2} MiB while no ack was read, +{:.2} MiB in all",
            mib(peak_unread),
            mib(peak)
        );
        assert_eq!(changed, 0, "changes that change nothing changed the routes");
        assert!(peak < 6 * MIB, "peak +{:.2} MiB", mib(peak));
        drop(reader);
        drop(publisher);
    });
}

#[test]
fn slow_subscribers_under_the_dropping_policy_hold_at_most_high_water_bytes_each() {
    const SUBSCRIBERS: usize = 3;
    const HIGH_WATER: usize = MIB;
    const MESSAGES: usize = 2_000;
    const SIZE: usize = 16 * 1024;
    alone(async {
        let options = PubOptions::default().high_water_bytes(HIGH_WATER);
        let mut publisher = PubSocket::with_options(Tcp::default(), options);
        publisher.bind("127.0.0.1:0").await.unwrap();
        let addr = publisher.local_addr().unwrap();
        // Subscribers that subscribe and never read again.
        let mut stalled = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let mut raw = raw_client(addr, SocketType::Sub).await.expect("welcomed");
            let mut subscribe = Frame::new(FrameKind::Subscribe, 1, Bytes::new());
            subscribe.topic = Bytes::from_static(b"t");
            raw.write_all(&encode(subscribe)).await.unwrap();
            let ack = msg_tests::read_frame(&mut raw).await.expect("an ack");
            assert_eq!(ack.kind, FrameKind::SubscriptionAck);
            stalled.push(raw);
        }
        let base = mark();
        for i in 0..MESSAGES {
            // A payload of its own each time, as an application's would be.
            let payload = Bytes::from(vec![(i % 251) as u8; SIZE]);
            publisher.publish("t", payload).await.unwrap();
        }
        let peak = peak_since(base);
        let stats = publisher.stats();
        println!(
            "{SUBSCRIBERS} stalled subscribers, {MESSAGES} x {} KiB published ({} MiB), high_water_bytes {} MiB: peak +{:.2} MiB, {} dropped",
            SIZE / 1024,
            MESSAGES * SIZE / MIB,
            HIGH_WATER / MIB,
            mib(peak),
            stats.dropped
        );
        assert!(stats.dropped > 0, "the queues filled: {stats:?}");
        for s in publisher.subscriber_stats() {
            assert!(s.queued * SIZE <= HIGH_WATER, "{s:?}");
        }
        // Each queue holds at most its high-water bytes (the payloads are shared between
        // the queues; each is counted here as if it were not), plus the frames being
        // written.
        let bound = SUBSCRIBERS * (HIGH_WATER + 2 * SIZE) + 4 * MIB;
        assert!(
            peak < bound,
            "peak +{:.2} MiB, bound {:.2} MiB",
            mib(peak),
            mib(bound)
        );
    });
}

#[test]
fn every_decompressor_allocates_at_most_its_limit_for_a_payload_that_inflates_past_it() {
    use msg::compression::{Decoders, DecompressError};
    const LIMIT: usize = 4 * MIB;
    let codecs: Vec<Box<dyn Compressor>> = vec![
        Box::new(GzipCompressor::new(6)),
        Box::new(ZstdCompressor::new(3)),
        Box::new(SnappyCompressor::new()),
        Box::new(Lz4Compressor::new()),
    ];
    alone(async move {
        for codec in codecs {
            // 64 MiB of zeros, sixteen times the limit; copied to its exact size.
            let packed = codec.compress(&vec![0u8; 64 * MIB]).unwrap().to_vec();
            let base = mark();
            let outcome = Decoders::default().decompress(codec.encoding(), &packed, LIMIT);
            let peak = peak_since(base);
            assert!(
                matches!(outcome, Err(DecompressError::TooLarge { limit: LIMIT })),
                "{}: {outcome:?}",
                codec.encoding()
            );
            println!(
                "{} of 64 MiB, limit {} MiB: peak +{:.2} MiB",
                codec.encoding(),
                LIMIT / MIB,
                mib(peak)
            );
            // The output, at most the limit and one byte, and the decoder's own state.
            let bound = LIMIT + 1 + 2 * MIB;
            assert!(
                peak < bound,
                "{}: peak +{:.2} MiB",
                codec.encoding(),
                mib(peak)
            );
        }
    });
}

/// Waits until the publisher stops reading the flood (its `queued_bytes` hits pass
/// `before`) or `writer` has written all of it.
async fn until_paused_or_written(writer: &tokio::task::JoinHandle<impl Sized>, before: u64) {
    within(async {
        while !writer.is_finished() && queued_bytes_hits() == before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// Reads `frames` acks from `read`, each a bare 20-byte header (an ack with no refusal),
/// within 120 s.
async fn read_bare_acks(read: &mut (impl tokio::io::AsyncRead + Unpin), frames: u64) {
    let mut acks = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending = 0usize;
    tokio::time::timeout(Duration::from_secs(120), async {
        while acks < frames {
            let n = read.read(&mut buf).await.unwrap();
            assert!(n > 0, "the publisher closed after {acks} acks");
            pending += n;
            acks += (pending / msg::wire::HEADER_LEN) as u64;
            pending %= msg::wire::HEADER_LEN;
        }
    })
    .await
    .expect("every ack within 120 s");
}
