//! Discovery over loopback: `msg::discover::Dns` against a real DNS server in the test
//! (`dns_server.rs`, UDP on 127.0.0.1), and a `SubSocket` fed by discovery receiving from
//! publishers that appear after it started.

mod dns_server;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use msg::discover::{Change, Dns, DnsError};
use msg::{PubSocket, SubSocket, Tcp};
use msg_tests::within;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use dns_server::DnsServer;

type Item = Result<Change<SocketAddr, SocketAddr>, DnsError>;

const NAME: &str = "replicas.msg.test";

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

fn three() -> [IpAddr; 3] {
    [ip(1), ip(2), ip(3)]
}

/// A `Dns` source for `target` asking only `server`, with short backoffs.
fn dns(server: &DnsServer, target: &str) -> Dns {
    server.source(target)
}

/// Polls the source in a task of its own (it resolves only while polled) and hands its
/// items over a channel, so that a test can see that none came.
fn drive(mut dns: Dns) -> mpsc::UnboundedReceiver<Item> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(item) = dns.next().await {
            if tx.send(item).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits, polling every few milliseconds within [`WAIT`](msg_tests::WAIT), until `ready`
/// holds (a counter of another task's); the failure names the caller's line.
#[track_caller]
fn until(mut ready: impl FnMut() -> bool) -> impl std::future::Future<Output = ()> {
    let step = std::panic::Location::caller();
    async move {
        let waited = tokio::time::timeout(msg_tests::WAIT, async {
            while !ready() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        waited
            .await
            .unwrap_or_else(|_| panic!("the condition at {step} never held"));
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Item>) -> Item {
    within(rx.recv()).await.expect("the source never ends")
}

/// The next `n` items, all of which must be changes, in a set (their order within one
/// resolution is the source's business).
async fn changes(rx: &mut mpsc::UnboundedReceiver<Item>, n: usize) -> Vec<String> {
    let mut seen = Vec::new();
    for _ in 0..n {
        match next(rx).await {
            Ok(Change::Insert(key, addr)) => {
                assert_eq!(key, addr, "keyed by the address");
                seen.push(format!("+{addr}"));
            }
            Ok(Change::Remove(addr)) => seen.push(format!("-{addr}")),
            Err(e) => panic!("unexpected error item: {e}"),
        }
    }
    seen.sort();
    seen
}

fn inserts(port: u16, ips: &[IpAddr]) -> Vec<String> {
    let mut v: Vec<_> = ips
        .iter()
        .map(|ip| format!("+{}", SocketAddr::new(*ip, port)))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn dns_inserts_every_address_of_the_name() {
    let server = DnsServer::start(1).await;
    server.set(NAME, &three());
    let mut rx = drive(dns(&server, &format!("{NAME}:5555")));
    assert_eq!(changes(&mut rx, 3).await, inserts(5555, &three()));
}

#[tokio::test]
async fn an_address_removed_from_the_zone_is_removed_after_the_next_resolution() {
    let server = DnsServer::start(1).await;
    server.set(NAME, &three());
    let mut rx = drive(dns(&server, &format!("{NAME}:5555")));
    assert_eq!(changes(&mut rx, 3).await, inserts(5555, &three()));

    server.set(NAME, &[ip(1), ip(2)]);
    assert_eq!(
        changes(&mut rx, 1).await,
        vec!["-127.0.0.3:5555".to_string()]
    );

    // And one that comes back is inserted again.
    server.set(NAME, &three());
    assert_eq!(
        changes(&mut rx, 1).await,
        vec!["+127.0.0.3:5555".to_string()]
    );
}

#[tokio::test]
async fn an_unchanged_zone_emits_nothing() {
    let server = DnsServer::start(1).await;
    server.set(NAME, &three());
    let mut rx = drive(dns(&server, &format!("{NAME}:5555")));
    assert_eq!(changes(&mut rx, 3).await, inserts(5555, &three()));

    // Each resolution asks A and AAAA. Once a third one has started, the second (the zone
    // unchanged) is done: it must have given nothing.
    let asked = server.queries(NAME);
    within(server.asked_more_than(NAME, asked + 2)).await;
    assert!(
        matches!(rx.try_recv(), Err(mpsc::error::TryRecvError::Empty)),
        "an unchanged answer gives no change"
    );
}

#[tokio::test]
async fn an_unknown_name_gives_a_typed_error_and_is_asked_again_until_it_appears() {
    let server = DnsServer::start(1).await;
    let mut rx = drive(dns(&server, &format!("{NAME}:5555")));

    match next(&mut rx).await {
        Err(DnsError::NotFound { name }) => assert!(name.starts_with(NAME), "{name}"),
        other => panic!("expected NotFound, got {other:?}"),
    }
    // The source goes on: the server sees the name asked for again.
    let asked = server.queries(NAME);
    within(server.asked_more_than(NAME, asked)).await;

    server.set(NAME, &three());
    // Errors until the next resolution sees the name, bounded; then the three inserts.
    let mut seen = Vec::new();
    for _ in 0..100 {
        match next(&mut rx).await {
            Err(DnsError::NotFound { .. }) => continue,
            Ok(Change::Insert(_, addr)) => {
                seen.push(format!("+{addr}"));
                if seen.len() == 3 {
                    break;
                }
            }
            other => panic!("unexpected item: {other:?}"),
        }
    }
    seen.sort();
    assert_eq!(seen, inserts(5555, &three()));
}

#[tokio::test]
async fn a_and_aaaa_records_both_give_endpoints() {
    let server = DnsServer::start(1).await;
    let v6: IpAddr = "::1".parse().unwrap();
    server.set(NAME, &[ip(1), v6]);
    let mut rx = drive(dns(&server, &format!("{NAME}:5555")));
    assert_eq!(changes(&mut rx, 2).await, inserts(5555, &[ip(1), v6]));
}

#[tokio::test]
async fn a_name_server_that_stops_answering_gives_errors_and_the_endpoints_stay() {
    let server = DnsServer::start(1).await;
    server.set(NAME, &three());
    let source = Dns::builder(&format!("{NAME}:5555"))
        .unwrap()
        .name_server(server.addr())
        .timeout(Duration::from_millis(200))
        .backoff(msg::Backoff::default().initial(Duration::from_millis(50)))
        .build();
    let mut rx = drive(source);
    assert_eq!(changes(&mut rx, 3).await, inserts(5555, &three()));

    server.silence();
    // Errors, each resolution's, and no remove among them: a name server that does not
    // answer says nothing about the endpoints.
    for _ in 0..2 {
        match next(&mut rx).await {
            Err(DnsError::Resolve { name, .. }) => assert!(name.starts_with(NAME), "{name}"),
            other => panic!("expected a resolve error, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn srv_records_give_each_host_with_its_port() {
    let server = DnsServer::start(1).await;
    server.set("a.msg.test", &[ip(1)]);
    server.set("b.msg.test", &[ip(2), ip(3)]);
    server.set_srv(
        "_pub._tcp.msg.test",
        &[("a.msg.test", 7001), ("b.msg.test", 7002)],
    );
    let source = Dns::srv_builder("_pub._tcp.msg.test")
        .unwrap()
        .name_server(server.addr())
        .build();
    let mut rx = drive(source);
    let mut want = vec![
        "+127.0.0.1:7001".to_string(),
        "+127.0.0.2:7002".to_string(),
        "+127.0.0.3:7002".to_string(),
    ];
    want.sort();
    assert_eq!(changes(&mut rx, 3).await, want);
}

#[tokio::test]
async fn a_refresh_resolves_again_before_the_ttl_runs_out() {
    // A TTL of an hour: clamped to `MAX_TTL`, 5 minutes, far past the test's bound.
    let server = DnsServer::start(3600).await;
    server.set(NAME, &three());
    let source = dns(&server, &format!("{NAME}:5555"));
    let refresh = source.refresher();
    let mut rx = drive(source);
    assert_eq!(changes(&mut rx, 3).await, inserts(5555, &three()));

    server.set(NAME, &[ip(1)]);
    // Many asks, one resolution a second at most.
    for _ in 0..10 {
        refresh.refresh();
    }
    assert_eq!(
        changes(&mut rx, 2).await,
        vec!["-127.0.0.2:5555".to_string(), "-127.0.0.3:5555".to_string()]
    );
}

/// A `SubSocket` fed by a channel of changes connects to publishers that are bound after it
/// started, and receives from each; a removed one is disconnected.
#[tokio::test]
async fn a_subscriber_fed_by_discovery_receives_from_publishers_that_appear_later() {
    let (tx, rx) = mpsc::unbounded_channel::<Result<Change<SocketAddr, SocketAddr>, DnsError>>();
    let mut sub = SubSocket::new(Tcp::default());
    sub.discover(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    assert_eq!(sub.stats().publishers, 0);

    let mut publishers = Vec::new();
    for last in [2u8, 3] {
        let mut publisher = PubSocket::new(Tcp::default());
        publisher.bind(SocketAddr::new(ip(last), 0)).await.unwrap();
        let addr = publisher.local_addr().unwrap();
        tx.send(Ok(Change::Insert(addr, addr))).unwrap();
        publishers.push((publisher, addr));
    }
    within(sub.subscribe("prices.>")).await.unwrap();
    // Both connected, and the subscription applied on both (one of them may have come up
    // after `subscribe` returned, and had it replayed).
    until(|| {
        publishers
            .iter()
            .all(|(p, _)| p.subscriptions().contains(&"prices.>".to_string()))
    })
    .await;
    assert_eq!(sub.stats().publishers, 2);

    for (publisher, addr) in &publishers {
        publisher
            .publish("prices.eur", Bytes::from(addr.to_string()))
            .await
            .unwrap();
    }
    let mut from = Vec::new();
    for _ in 0..2 {
        let msg = within(sub.next()).await.unwrap();
        assert_eq!(msg.payload(), &Bytes::from(msg.publisher().to_string()));
        from.push(*msg.publisher());
    }
    from.sort();
    let mut want: Vec<_> = publishers.iter().map(|(_, a)| *a).collect();
    want.sort();
    // The publisher's address as the subscriber sees it is the one it dialed.
    assert_eq!(from, want);

    // Removed: disconnected, and its publisher sees its subscriber go.
    let (gone, gone_addr) = &publishers[0];
    tx.send(Ok(Change::Remove(*gone_addr))).unwrap();
    until(|| gone.stats().subscribers == 0).await;
    assert_eq!(sub.stats().publishers, 1);
    // The other one still delivers.
    let (kept, kept_addr) = &publishers[1];
    kept.publish("prices.eur", Bytes::from("still"))
        .await
        .unwrap();
    let msg = within(sub.next()).await.unwrap();
    assert_eq!(
        (msg.publisher(), msg.payload()),
        (kept_addr, &Bytes::from("still"))
    );
}

/// The same with `Dns`: the publishers behind a name, on 127.0.0.2 and 127.0.0.3.
#[tokio::test]
async fn a_subscriber_fed_by_dns_receives_from_every_publisher_behind_the_name() {
    let server = DnsServer::start(1).await;
    // One port for both: bind the first on a free port, the second on the same port.
    let mut first = PubSocket::new(Tcp::default());
    first.bind(SocketAddr::new(ip(2), 0)).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut second = PubSocket::new(Tcp::default());
    second.bind(SocketAddr::new(ip(3), port)).await.unwrap();

    let mut sub = SubSocket::new(Tcp::default());
    sub.discover(dns(&server, &format!("{NAME}:{port}")));
    // The name appears after the socket started.
    server.set(NAME, &[ip(2), ip(3)]);
    within(sub.subscribe("prices.>")).await.unwrap();
    until(|| {
        [&first, &second]
            .iter()
            .all(|p| p.subscriptions().contains(&"prices.>".to_string()))
    })
    .await;

    for (publisher, tag) in [(&first, "2"), (&second, "3")] {
        publisher
            .publish("prices.eur", Bytes::from(tag))
            .await
            .unwrap();
    }
    let mut tags = Vec::new();
    for _ in 0..2 {
        tags.push(within(sub.next()).await.unwrap().into_payload());
    }
    tags.sort();
    assert_eq!(tags, vec![Bytes::from("2"), Bytes::from("3")]);
}

/// `msg_subscriber_discovery_changes_total` counts the changes by kind, and
/// `msg_subscriber_endpoints` the publishers by state: connected, or still connecting (a
/// dial refused), and no longer counted once removed or the socket closed.
///
/// Recorded under a recorder of the test's own, on a current-thread runtime. The debugging
/// recorder's snapshot takes what it reads, gauges too (they read as what they gained since
/// the last snapshot), so every value is summed here: the endpoints' gauge only ever moves
/// by increments and decrements.
#[test]
fn discovery_counts_changes_by_kind_and_publishers_by_state() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let totals: Arc<Mutex<HashMap<(String, String), f64>>> = Arc::default();
    // The sum of everything recorded for `name` with a label of value `value`.
    let read = {
        let totals = totals.clone();
        move |name: &str, value: &str| {
            let mut totals = totals.lock().unwrap();
            for (key, _, _, recorded) in snapshotter.snapshot().into_vec() {
                let Some(label) = key.key().labels().next() else {
                    continue;
                };
                let gained = match recorded {
                    DebugValue::Counter(n) => n as f64,
                    DebugValue::Gauge(g) => g.into_inner(),
                    DebugValue::Histogram(_) => continue,
                };
                *totals
                    .entry((key.key().name().to_owned(), label.value().to_owned()))
                    .or_default() += gained;
            }
            totals
                .get(&(name.to_owned(), value.to_owned()))
                .copied()
                .unwrap_or(0.0)
        }
    };
    let gauge = |state| read("msg_subscriber_endpoints", state);
    metrics::with_local_recorder(&recorder, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tx, rx) =
                mpsc::unbounded_channel::<Result<Change<SocketAddr, SocketAddr>, &str>>();
            let mut sub = SubSocket::new(Tcp::default());
            sub.discover(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));

            let mut publisher = PubSocket::new(Tcp::default());
            publisher.bind(SocketAddr::new(ip(2), 0)).await.unwrap();
            let live = publisher.local_addr().unwrap();
            let (_held, refusing) = msg_tests::refusing_addr();
            tx.send(Ok(Change::Insert(live, live))).unwrap();
            tx.send(Ok(Change::Insert(refusing, refusing))).unwrap();
            tx.send(Err("the registry is down")).unwrap();
            until(|| gauge("connected") == 1.0).await;
            assert_eq!(gauge("connecting"), 1.0);

            tx.send(Ok(Change::Remove(live))).unwrap();
            until(|| gauge("connected") == 0.0).await;
            assert_eq!(gauge("connecting"), 1.0);
            sub.close().await;
            until(|| gauge("connecting") == 0.0).await;
        });
    });
    let changes = |kind| read("msg_subscriber_discovery_changes_total", kind);
    assert_eq!(
        (changes("insert"), changes("remove"), changes("error")),
        (2.0, 1.0, 1.0)
    );
}

/// Three reply sockets on 127.0.0.1, .2 and .3, one port, each answering with its address.
async fn three_repliers() -> (u16, Vec<tokio_util::sync::CancellationToken>) {
    let mut stops = Vec::new();
    let mut port = 0;
    for last in 1..=3 {
        let mut rep = msg::RepSocket::new(Tcp::default());
        within(rep.bind(SocketAddr::new(ip(last), port)))
            .await
            .expect("bind");
        port = rep.local_addr().expect("bound").port();
        let stop = tokio_util::sync::CancellationToken::new();
        let answer = tower::service_fn(move |_: msg::Request| async move {
            Ok::<_, std::convert::Infallible>(Bytes::from(format!("127.0.0.{last}")))
        });
        tokio::spawn(
            msg::serve(rep, answer).with_graceful_shutdown(stop.clone().cancelled_owned()),
        );
        stops.push(stop);
    }
    (port, stops)
}

/// Sends `n` requests, 64 at a time, and counts the answers by who gave them.
async fn spread(req: &msg::ReqSocket<Tcp>, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut by = std::collections::BTreeMap::new();
    for _ in 0..n.div_ceil(64) {
        let replies =
            futures_util::future::join_all((0..64).map(|_| req.request(Bytes::from("x")))).await;
        for reply in replies {
            let reply = reply.expect("reply");
            *by.entry(String::from_utf8_lossy(&reply).into_owned())
                .or_default() += 1;
        }
    }
    by
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_socket_fed_by_dns_balances_over_every_address_and_drops_a_removed_one() {
    let server = DnsServer::start(1).await;
    let (port, _stops) = three_repliers().await;
    server.set(NAME, &three());
    let req = msg::ReqSocket::new(Tcp::default());
    req.discover(dns(&server, &format!("{NAME}:{port}")));
    // Until all three answer (their connections come up one by one).
    within(async {
        while spread(&req, 64).await.len() < 3 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let by = within(spread(&req, 1920)).await;
    assert_eq!(by.len(), 3, "{by:?}");
    for (who, n) in &by {
        assert!(*n >= 1920 / 6, "{who} answered {n} of 1920: {by:?}");
    }
    // Removed from the zone: after the next resolution (TTL 1 s), it gets no more.
    server.set(NAME, &[ip(1), ip(2)]);
    within(async {
        while spread(&req, 64).await.contains_key("127.0.0.3") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let by = within(spread(&req, 640)).await;
    assert!(!by.contains_key("127.0.0.3"), "{by:?}");
    assert_eq!(by.len(), 2, "{by:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_does_not_resolve_fails_requests_with_a_typed_error_until_it_does() {
    let server = DnsServer::start(1).await;
    let (port, _stops) = three_repliers().await;
    let req = msg::ReqSocket::with_options(
        Tcp::default(),
        msg::ReqOptions::default().reconnect_wait(Duration::from_millis(300)),
    );
    req.discover(dns(&server, &format!("{NAME}:{port}")));
    match within(req.request(Bytes::from("x"))).await {
        Err(msg::Error::NotConnected { .. }) => {}
        other => panic!("expected NotConnected, got {other:?}"),
    }
    // The source keeps asking; once the name exists, requests are answered.
    within(server.asked_more_than(NAME, 1)).await;
    server.set(NAME, &[ip(2)]);
    within(async {
        while req.request(Bytes::from("x")).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(
        within(spread(&req, 64)).await.keys().collect::<Vec<_>>(),
        ["127.0.0.2"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_endpoint_down_the_name_is_resolved_again_before_its_ttl() {
    // A TTL of a minute: only the socket's asking can find the new address in time.
    let server = DnsServer::start(60).await;
    let (port, stops) = three_repliers().await;
    server.set(NAME, &[ip(1)]);
    let req = msg::ReqSocket::new(Tcp::default());
    req.discover(dns(&server, &format!("{NAME}:{port}")));
    assert_eq!(
        within(req.request(Bytes::from("x"))).await.unwrap(),
        "127.0.0.1"
    );
    // The one replier goes, and the name now says .2.
    server.set(NAME, &[ip(2)]);
    stops[0].cancel();
    within(async {
        loop {
            if let Ok(reply) = req.request(Bytes::from("x")).await {
                if reply == "127.0.0.2" {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_with_no_publisher_left_has_the_name_resolved_again_before_its_ttl() {
    // A TTL of a minute: only the socket's asking can find the new address in time.
    let server = DnsServer::start(60).await;
    let mut first = PubSocket::new(Tcp::default());
    first.bind(SocketAddr::new(ip(1), 0)).await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut second = PubSocket::new(Tcp::default());
    second.bind(SocketAddr::new(ip(2), port)).await.unwrap();
    server.set(NAME, &[ip(1)]);

    let mut sub = SubSocket::new(Tcp::default());
    sub.discover(dns(&server, &format!("{NAME}:{port}")));
    within(sub.subscribe("prices.>")).await.unwrap();
    within(first.publish("prices.eur", Bytes::from("1")))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "1");

    // The publisher goes, and the name now says .2.
    server.set(NAME, &[ip(2)]);
    first.close().await;
    drop(first);
    until(|| second.subscriptions().contains(&"prices.>".to_string())).await;
    within(second.publish("prices.eur", Bytes::from("2")))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "2");
}
