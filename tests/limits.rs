//! Every limit a peer can run into: what it gets (a typed error), what the server counts
//! (`msg_limit_hits_total` by `limit`), and that nothing else is lost. A test binary of its
//! own: the counters are read with a local recorder, on a current-thread runtime.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use msg::{
    serve, Error, PubOptions, PubSocket, RepOptions, RepSocket, ReqSocket, Request, SubSocket, Tcp,
};
use msg_tests::{encode, raw_client, within};
use tokio_stream::StreamExt;
use tower::service_fn;

/// Runs `test` on a current-thread runtime under a recorder of its own, and returns the
/// `msg_limit_hits_total` count of every limit.
fn with_counters<F: std::future::Future<Output = ()>>(test: F) -> Vec<(String, u64)> {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(test)
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "msg_limit_hits_total")
        .filter_map(|(key, _, _, value)| {
            let limit = key.key().labels().find(|l| l.key() == "limit")?;
            match value {
                DebugValue::Counter(n) => Some((limit.value().to_owned(), n)),
                _ => None,
            }
        })
        .collect()
}

fn hits(counters: &[(String, u64)], limit: &str) -> u64 {
    counters
        .iter()
        .filter(|(l, _)| l == limit)
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn a_client_past_the_connection_limit_is_told_why_and_a_freed_slot_is_reused() {
    let counters = with_counters(async {
        let mut rep =
            RepSocket::with_options(Tcp::default(), RepOptions::default().max_connections(2));
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
        ));
        let mut first = ReqSocket::new(Tcp::default());
        within(first.connect(addr)).await.unwrap();
        let mut second = ReqSocket::new(Tcp::default());
        within(second.connect(addr)).await.unwrap();
        let mut third = ReqSocket::new(Tcp::default());
        let refused = within(third.connect(addr)).await;
        match refused {
            Err(Error::HandshakeRejected { reason }) => {
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
                let mut again = ReqSocket::new(Tcp::default());
                if again.connect(addr).await.is_ok() {
                    assert_eq!(again.request(Bytes::from("3")).await.unwrap(), "3");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;

        // A publisher's subscribers likewise.
        let mut publisher =
            PubSocket::with_options(Tcp::default(), PubOptions::default().max_connections(1));
        publisher.bind("127.0.0.1:0").await.unwrap();
        let addr = publisher.local_addr().unwrap();
        let mut inside = SubSocket::new(Tcp::default());
        within(inside.connect(addr)).await.unwrap();
        let mut outside = SubSocket::new(Tcp::default());
        assert!(matches!(
            within(outside.connect(addr)).await,
            Err(Error::HandshakeRejected { .. })
        ));
    });
    assert!(hits(&counters, "connections") >= 2, "{counters:?}");
}

#[test]
fn subscriptions_past_the_limits_are_refused_and_the_subscriber_carries_on() {
    let counters = with_counters(async {
        let options = PubOptions::default().max_subscriptions(3, 16);
        let mut publisher = PubSocket::with_options(Tcp::default(), options);
        publisher.bind("127.0.0.1:0").await.unwrap();
        let addr = publisher.local_addr().unwrap();
        let mut sub = SubSocket::new(Tcp::default());
        within(sub.connect(addr)).await.unwrap();
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
    });
    assert_eq!(hits(&counters, "subscriptions"), 1, "{counters:?}");
    assert_eq!(hits(&counters, "pattern_len"), 1, "{counters:?}");
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
        let frame = msg::wire::Frame::new(
            msg::wire::FrameKind::Request,
            1,
            Bytes::from(vec![0u8; 4096]),
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
    assert_eq!(hits(&counters, "frame_len"), 1, "{counters:?}");
}

#[test]
fn a_connection_never_runs_more_calls_than_its_in_flight_limit() {
    let counters = with_counters(async {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut rep = RepSocket::with_options(
            Tcp::default(),
            RepOptions::default().max_in_flight_per_conn(4),
        );
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        let (r, m) = (running.clone(), most.clone());
        tokio::spawn(serve(
            rep,
            service_fn(move |req: Request| {
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
        let mut req = ReqSocket::new(Tcp::default());
        within(req.connect(addr)).await.unwrap();
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
    });
    assert!(hits(&counters, "in_flight") >= 1, "{counters:?}");
}
