//! Metrics through a real Prometheus endpoint: the layer's counters and histogram, and the
//! sockets' own counters. A test binary of its own, as the recorder is global.

use bytes::Bytes;
use msg::layers::MetricsLayer;
use msg::{serve, Error, Message, RepSocket, ReqSocket, Request, Tcp};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_endpoint_serves_the_layer_and_socket_metrics() {
    let endpoint = example::install_exporter().unwrap();

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
        sample(&text, r#"msg_calls_total{kind="request"}"#),
        Some(23.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_calls_total{kind="handle"}"#),
        Some(23.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_call_errors_total{kind="request"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_call_errors_total{kind="handle"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_payload_bytes_total{kind="request"}"#),
        Some(20.0 * 5.0 + 3.0 * 4.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_call_duration_seconds_count{kind="request"}"#),
        Some(23.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_connections_total{socket="req"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"msg_connections_total{socket="rep"}"#),
        Some(1.0),
        "{text}"
    );
}

/// The value of the counter `name` with the label `label` = `value` in `snapshot`.
fn counter(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        metrics_util::debugging::DebugValue,
    )],
    name: &str,
    label: (&str, &str),
) -> u64 {
    snapshot
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == label.0 && l.value() == label.1)
        })
        .map(|(.., value)| match value {
            metrics_util::debugging::DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn a_test_recorder_sees_bytes_both_ways_and_errors_by_kind() {
    use metrics_util::debugging::DebuggingRecorder;

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // A local recorder covers this thread: a current-thread runtime keeps every task on it.
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
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
    });
    let snapshot = snapshotter.snapshot().into_vec();
    assert_eq!(
        counter(&snapshot, "msg_request_errors_total", ("error", "remote")),
        1
    );
    assert_eq!(
        counter(&snapshot, "msg_calls_total", ("kind", "request")),
        11
    );
    assert_eq!(
        counter(&snapshot, "msg_call_errors_total", ("kind", "request")),
        1
    );
    // Ten requests of 1,000 bytes each way, with their frame headers, and the handshakes.
    for socket in ["req", "rep"] {
        let sent = counter(&snapshot, "msg_bytes_sent_total", ("socket", socket));
        let received = counter(&snapshot, "msg_bytes_received_total", ("socket", socket));
        assert!(
            sent > 10_000 && received > 10_000,
            "{socket}: {sent} / {received}"
        );
    }
}
