//! Metric handles are registered once per socket and kept: a recorder that counts its
//! registrations sees one per socket and metric, however many requests fail and however
//! many connections come and go. (A registration is a look-up in the recorder's registry,
//! under its lock in most recorders.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use msg::{
    serve, Error, PubOptions, PubSocket, RepSocket, ReqSocket, Request, SocketEvent, SubSocket, Tcp,
};
use msg_tests::within;
use tokio_stream::StreamExt;
use tower::{service_fn, BoxError};

/// A recorder that records nothing and counts how often each metric, with its labels, is
/// registered.
#[derive(Clone, Default)]
struct Registrations(Arc<Mutex<HashMap<String, usize>>>);

impl Registrations {
    fn count(&self, key: &Key) {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        *self.0.lock().unwrap().entry(name).or_default() += 1;
    }

    fn of(&self, name: &str) -> usize {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Recorder for Registrations {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        self.count(key);
        Counter::noop()
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        self.count(key);
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        self.count(key);
        Histogram::noop()
    }
}

const CLIENTS: usize = 8;
const FAILURES: usize = 20;

#[test]
fn a_socket_registers_each_metric_once_however_many_requests_fail_and_connections_end() {
    let registrations = Registrations::default();
    metrics::with_local_recorder(&registrations, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut rep = RepSocket::new(Tcp::default());
                rep.bind("127.0.0.1:0").await.unwrap();
                let addr = rep.local_addr().unwrap();
                let mut server_events = rep.events();
                tokio::spawn(serve(
                    rep,
                    service_fn(|_: Request| async { Err::<Bytes, BoxError>("no".into()) }),
                ));
                // One client whose requests all fail, and more that connect and leave.
                let mut req = ReqSocket::new(Tcp::default());
                within(req.connect(addr)).await.unwrap();
                for _ in 0..FAILURES {
                    let failed = within(req.request(Bytes::from("x"))).await;
                    assert!(matches!(failed, Err(Error::Remote { .. })), "{failed:?}");
                }
                for _ in 1..CLIENTS {
                    let mut other = ReqSocket::new(Tcp::default());
                    within(other.connect(addr)).await.unwrap();
                    within(other.close()).await;
                }
                drop(req);
                // The server has seen every connection end.
                let mut ended = 0;
                within(async {
                    while ended < CLIENTS {
                        if let Some(SocketEvent::Disconnected { .. }) = server_events.next().await {
                            ended += 1;
                        }
                    }
                })
                .await;
            })
    });
    let once = [
        "msg_request_errors_total{error=remote}",
        "msg_connections_total{socket=rep}",
        "msg_disconnections_total{socket=rep}",
        "msg_bytes_received_total{socket=rep}",
        "msg_bytes_sent_total{socket=rep}",
    ];
    for name in once {
        assert_eq!(registrations.of(name), 1, "{name}: {:?}", registrations.0);
    }
    // Each client socket registers its own, once.
    assert_eq!(
        registrations.of("msg_connections_total{socket=req}"),
        CLIENTS,
        "{:?}",
        registrations.0
    );
}

/// A publisher that drops for a slow subscriber counted each drop by looking its two
/// counters up; they are registered at the first drop and kept.
#[test]
fn a_publisher_registers_its_drop_counters_once_however_many_messages_it_drops() {
    const PUBLISHES: usize = 5_000;
    let registrations = Registrations::default();
    let dropped = metrics::with_local_recorder(&registrations, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let mut publisher = PubSocket::with_options(
                    Tcp::default(),
                    PubOptions::default().high_water_mark(1),
                );
                publisher.bind("127.0.0.1:0").await.unwrap();
                let addr = publisher.local_addr().unwrap();
                let mut sub = SubSocket::new(Tcp::default());
                within(sub.connect(addr)).await.unwrap();
                within(sub.subscribe("t")).await.unwrap();
                // On one thread, the subscriber's session runs only when the loop gives way:
                // its queue of one is full for most of these.
                for _ in 0..PUBLISHES {
                    publisher.publish("t", Bytes::from("x")).await.unwrap();
                }
                publisher.stats().dropped
            })
    });
    assert!(dropped > 100, "only {dropped} dropped");
    for name in [
        "msg_publish_dropped_total{}",
        "msg_limit_hits_total{limit=queued_bytes}",
    ] {
        assert_eq!(registrations.of(name), 1, "{name}: {:?}", registrations.0);
    }
}
