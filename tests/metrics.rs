//! Metrics through a real Prometheus endpoint: the layer's counters and histogram, and the
//! sockets' own counters; and every socket counter the README lists, provoked and read.
//!
//! A test binary of its own: the Prometheus test installs the process's global recorder
//! (once per process) and reads its counters as differences from a first scrape. Every
//! other test here must record into a local recorder of its own, on a current-thread
//! runtime (so that every task records on the thread it is set on), as those below do:
//! then nothing they do reaches the global recorder.

use bytes::Bytes;
use msg::layers::MetricsLayer;
use msg::{serve, Error, Message, RepSocket, ReqSocket, Request, Tcp};
use msg_tests::recorded::recorded;
use msg_tests::within;
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

#[allow(dead_code)]
#[path = "../examples/metrics.rs"]
mod example;

/// The value of the sample named exactly `series` (name and labels), if any.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// How much the sample `series` rose from the scrape `before` to the scrape `after`.
fn grew(before: &str, after: &str, series: &str) -> f64 {
    sample(after, series).unwrap_or(0.0) - sample(before, series).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_serves_the_layer_and_socket_metrics() {
    let endpoint = example::install_exporter().unwrap();
    let before = within(example::scrape(endpoint)).await.unwrap();

    let mut rep = RepSocket::new(Tcp::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    let handler = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(service_fn(|req: Request| async move {
            if req.msg() == "fail" {
                return Err::<Bytes, BoxError>("no".into());
            }
            Ok(req.msg().clone())
        }));
    tokio::spawn(serve(rep, handler));
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();
    let client = ServiceBuilder::new()
        .layer(MetricsLayer::new())
        .service(req);
    for _ in 0..20 {
        within(client.clone().oneshot(Message::from("12345")))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let failed = within(client.clone().oneshot(Message::from("fail"))).await;
        assert!(matches!(failed, Err(Error::Remote { .. })));
    }

    let text = within(example::scrape(endpoint)).await.unwrap();
    assert_eq!(
        grew(&before, &text, r#"msg_calls_total{kind="request"}"#),
        23.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_calls_total{kind="handle"}"#),
        23.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_call_errors_total{kind="request"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_call_errors_total{kind="handle"}"#),
        3.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_payload_bytes_total{kind="request"}"#),
        20.0 * 5.0 + 3.0 * 4.0,
        "{text}"
    );
    assert_eq!(
        grew(
            &before,
            &text,
            r#"msg_call_duration_seconds_count{kind="request"}"#
        ),
        23.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_connections_total{socket="req"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        grew(&before, &text, r#"msg_connections_total{socket="rep"}"#),
        1.0,
        "{text}"
    );
}

#[test]
fn a_test_recorder_sees_bytes_both_ways_and_errors_by_kind() {
    let ((), recording) = recorded(|_| async {
        let mut rep = RepSocket::new(Tcp::default());
        rep.bind("127.0.0.1:0").await.unwrap();
        let addr = rep.local_addr().unwrap();
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move {
                if req.msg() == "fail" {
                    return Err::<Bytes, BoxError>("no".into());
                }
                Ok(req.msg().clone())
            }),
        ));
        let mut req = ReqSocket::new(Tcp::default());
        req.connect(addr).await.unwrap();
        let client = ServiceBuilder::new()
            .layer(MetricsLayer::new())
            .service(req);
        for _ in 0..10 {
            within(client.clone().oneshot(Message::from(vec![7u8; 1000])))
                .await
                .unwrap();
        }
        let failed = within(client.clone().oneshot(Message::from("fail"))).await;
        assert!(matches!(failed, Err(Error::Remote { .. })));
    });
    assert_eq!(
        recording.counter("msg_request_errors_total", ("error", "remote")),
        1
    );
    assert_eq!(
        recording.counter("msg_calls_total", ("kind", "request")),
        11
    );
    assert_eq!(
        recording.counter("msg_call_errors_total", ("kind", "request")),
        1
    );
    // Ten requests of 1,000 bytes each way, with their frame headers, and the handshakes.
    for socket in ["req", "rep"] {
        let sent = recording.counter("msg_bytes_sent_total", ("socket", socket));
        let received = recording.counter("msg_bytes_received_total", ("socket", socket));
        assert!(
            sent > 10_000 && received > 10_000,
            "{socket}: {sent} / {received}"
        );
    }
}

/// Waits for the first event `wanted` picks out.
async fn event<A: Clone + Send + 'static>(
    events: &mut msg::Events<A>,
    wanted: impl Fn(&msg::SocketEvent<A>) -> bool,
) {
    use tokio_stream::StreamExt;
    within(async {
        while let Some(event) = events.next().await {
            if wanted(&event) {
                return;
            }
        }
        panic!("events ended");
    })
    .await
}

#[test]
fn every_socket_counter_the_readme_lists_counts_what_it_names() {
    use msg::{PubOptions, PubSocket, RepOptions, SocketEvent, SubOptions, SubSocket};
    use tokio_stream::StreamExt;

    let ((dropped, missed), recording) = recorded(|_| async {
        // A dial nobody answers: a connect failure.
        let (_held, nobody) = msg_tests::refusing_addr();
        let mut lost = ReqSocket::new(Tcp::default());
        assert!(matches!(
            within(lost.connect(nobody)).await,
            Err(Error::Transport(_))
        ));

        // A client past the connection limit: refused.
        let mut rep =
            RepSocket::with_options(Tcp::default(), RepOptions::default().max_connections(1));
        rep.bind("127.0.0.1:0").await.unwrap();
        let mut rep_events = rep.events();
        let relay = msg_tests::Relay::start(rep.local_addr().unwrap()).await;
        tokio::spawn(serve(
            rep,
            service_fn(|req: Request| async move { Ok::<_, BoxError>(req.msg().clone()) }),
        ));
        let mut req = ReqSocket::new(Tcp::default());
        let mut req_events = req.events();
        within(req.connect(relay.addr())).await.unwrap();
        let mut refused = ReqSocket::new(Tcp::default());
        assert!(matches!(
            within(refused.connect(relay.addr())).await,
            Err(Error::HandshakeRejected { .. })
        ));

        // A cut link: a disconnection on each side.
        relay.cut();
        event(&mut req_events, |e| {
            matches!(e, SocketEvent::Disconnected { .. })
        })
        .await;
        event(&mut rep_events, |e| {
            matches!(e, SocketEvent::Disconnected { .. })
        })
        .await;

        // A subscriber that reads nothing for a while: the publisher drops for it,
        // and the subscriber, reading again, sees the gap.
        let options = PubOptions::default().high_water_mark(4);
        let mut publisher = PubSocket::with_options(Tcp::default(), options);
        publisher.bind("127.0.0.1:0").await.unwrap();
        let mut sub = SubSocket::with_options(Tcp::default(), SubOptions::default().inbox(4));
        within(sub.connect(publisher.local_addr().unwrap()))
            .await
            .unwrap();
        within(sub.subscribe("t")).await.unwrap();
        let payload = Bytes::from(vec![7u8; 16 * 1024]);
        for _ in 0..2_000 {
            publisher.publish("t", payload.clone()).await.unwrap();
        }
        let dropped = publisher.stats().dropped;
        assert!(dropped > 0, "the subscriber's queue filled");
        // Read until the queue has drained, then one last message shows any gap
        // at the end.
        let reading = async {
            loop {
                let message = sub.next().await.expect("the subscription goes on");
                if message.payload() == "end" {
                    return;
                }
            }
        };
        let ending = async {
            while publisher.subscriber_stats()[0].queued > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            publisher.publish("t", Bytes::from("end")).await.unwrap();
        };
        within(futures_util::future::join(reading, ending)).await;
        let missed = sub.stats().missed;
        assert_eq!(missed, dropped, "every drop seen as a gap");
        (dropped, missed)
    });
    let unlabelled =
        |name: &str| -> u64 { recording.values(name, None).iter().sum::<f64>() as u64 };
    assert_eq!(
        recording.counter("msg_connect_failures_total", ("socket", "req")),
        1
    );
    assert_eq!(recording.counter("msg_refused_total", ("socket", "rep")), 1);
    assert_eq!(
        recording.counter("msg_disconnections_total", ("socket", "req")),
        1
    );
    assert_eq!(
        recording.counter("msg_disconnections_total", ("socket", "rep")),
        1
    );
    assert_eq!(unlabelled("msg_publish_dropped_total"), dropped);
    assert_eq!(unlabelled("msg_subscriber_missed_total"), missed);
}

/// A recorder that counts how often each metric is registered (by name), and records into
/// a debugging recorder.
#[derive(Default)]
struct Registrations {
    inner: metrics_util::debugging::DebuggingRecorder,
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl Registrations {
    fn count(&self, key: &metrics::Key) {
        let mut counts = self.counts.lock().unwrap();
        *counts.entry(key.name().to_owned()).or_default() += 1;
    }

    /// How many times the metric `name` was registered.
    fn of(&self, name: &str) -> usize {
        self.counts.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl metrics::Recorder for Registrations {
    fn describe_counter(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_counter(key, unit, description)
    }

    fn describe_gauge(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_gauge(key, unit, description)
    }

    fn describe_histogram(
        &self,
        key: metrics::KeyName,
        unit: Option<metrics::Unit>,
        description: metrics::SharedString,
    ) {
        self.inner.describe_histogram(key, unit, description)
    }

    fn register_counter(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Counter {
        self.count(key);
        self.inner.register_counter(key, meta)
    }

    fn register_gauge(&self, key: &metrics::Key, meta: &metrics::Metadata<'_>) -> metrics::Gauge {
        self.count(key);
        self.inner.register_gauge(key, meta)
    }

    fn register_histogram(
        &self,
        key: &metrics::Key,
        meta: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        self.count(key);
        self.inner.register_histogram(key, meta)
    }
}

// Calls made as the README and most code make them, `client.clone().oneshot(..)`, each on a
// fresh clone of the layer's service: the layer registers its metrics once, not per clone
// (it did per clone: each clone registered its four metrics at its first call, building
// keys and looking them up in the recorder, most of what the layer cost with a recorder
// installed), and counts every call.
#[test]
fn metrics_layer_registers_its_metrics_once_for_every_clone_of_its_service() {
    use metrics_util::debugging::DebugValue;

    let recorder = Registrations::default();
    let snapshotter = recorder.inner.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut rep = RepSocket::new(Tcp::default());
                rep.bind("127.0.0.1:0").await.unwrap();
                let addr = rep.local_addr().unwrap();
                tokio::spawn(serve(
                    rep,
                    service_fn(|req: Request| async move { Ok::<_, BoxError>(req.msg().clone()) }),
                ));
                let mut req = ReqSocket::new(Tcp::default());
                req.connect(addr).await.unwrap();
                let client = ServiceBuilder::new()
                    .layer(MetricsLayer::new())
                    .service(req);
                for _ in 0..50 {
                    within(client.clone().oneshot(Message::from("x")))
                        .await
                        .unwrap();
                }
            })
    });
    for name in [
        "msg_calls_total",
        "msg_call_errors_total",
        "msg_payload_bytes_total",
        "msg_call_duration_seconds",
    ] {
        assert_eq!(recorder.of(name), 1, "{name} registered once");
    }
    let calls: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == "msg_calls_total")
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(calls, 50);
}
