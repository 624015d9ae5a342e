//! A request socket shared by clones under load opens one more connection per runtime worker
//! and spreads its clones over them (`ReqOptions::connections`); a socket used from one
//! handle, on a current-thread runtime, or with `connections(1)` keeps one. A connection
//! the server refuses leaves its clones on the first, with nothing lost and no event.
//!
//! The server counts the connections its requests arrive on by their peer address, and
//! answers each request with its own payload, so that a reply crossing to another caller
//! would fail.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use msg::admission::{AdmissionRequest, Verdict};
use msg::{Error, RepSocket, ReqOptions, ReqSocket, Request, SocketEvent, Tcp};
use msg_tests::{serve_socket_on_loopback, within, Relay};
use tower::service_fn;

/// Requests answered, by the peer address of the connection each came on.
type Peers = Arc<Mutex<HashMap<SocketAddr, usize>>>;

/// An echo server on `rep` that holds each request for `hold` (so that many are held at
/// once), counting requests by connection.
async fn counting_echo(rep: RepSocket<Tcp>, hold: Duration) -> (SocketAddr, Peers) {
    let peers = Peers::default();
    let seen = peers.clone();
    let echo = service_fn(move |req: Request<SocketAddr>| {
        *seen.lock().unwrap().entry(*req.peer()).or_default() += 1;
        async move {
            tokio::time::sleep(hold).await;
            Ok::<_, Infallible>(req.msg().clone())
        }
    });
    (serve_socket_on_loopback(rep, echo).await, peers)
}

/// `tasks` clones of `req`, each sending `each` requests one at a time, every reply checked
/// against its request.
async fn from_clones(req: &ReqSocket<Tcp>, tasks: usize, each: usize) {
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let req = req.clone();
        set.spawn(async move {
            for i in 0..each {
                let payload = Bytes::from(format!("task {task} request {i}"));
                assert_eq!(req.request(payload.clone()).await.unwrap(), payload);
            }
        });
    }
    within(async {
        while let Some(done) = set.join_next().await {
            done.expect("client task");
        }
    })
    .await;
}

fn connections(peers: &Peers) -> Vec<usize> {
    peers.lock().unwrap().values().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_under_load_spread_over_a_connection_per_worker() {
    let (addr, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect(addr).await.unwrap();

    from_clones(&req, 64, 40).await;
    let per_conn = connections(&peers);
    assert_eq!(per_conn.len(), 2, "one connection per worker: {per_conn:?}");
    assert_eq!(per_conn.iter().sum::<usize>(), 64 * 40);
    assert!(
        per_conn.iter().all(|&n| n >= 64 * 40 / 5),
        "both connections carry a share: {per_conn:?}"
    );
    let stats = req.stats();
    assert_eq!((stats.in_flight, stats.queued), (0, 0), "{stats:?}");
    assert!(stats.connected);

    // The second connection is the socket's own business: one Connected event, for the
    // endpoint.
    let mut connected = 0;
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        connected += usize::from(matches!(event, SocketEvent::Connected { .. }));
    }
    assert_eq!(connected, 1);

    // Closing closes both: every later request fails at once.
    within(req.close()).await;
    let late = req.clone();
    assert!(matches!(
        late.request(Bytes::from("late")).await,
        Err(Error::Closed)
    ));
}

/// One handle with 64 requests out, as a `pipeline` and as `request` futures, dials one
/// connection: the server is asked to admit one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_handle_keeps_one_connection_however_many_requests_it_has_out() {
    let admitted = Arc::new(AtomicUsize::new(0));
    let admission = {
        let admitted = admitted.clone();
        service_fn(move |_: AdmissionRequest<SocketAddr>| {
            admitted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Verdict::Admit) }
        })
    };
    let rep = RepSocket::new(Tcp::default()).with_admission(admission);
    let (addr, peers) = counting_echo(rep, Duration::from_millis(2)).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();

    let requests = futures_util::stream::iter((0..640).map(|i| Bytes::from(format!("p {i}"))));
    let replies: Vec<_> = within(req.pipeline(requests, 64).collect::<Vec<_>>()).await;
    for (i, reply) in replies.into_iter().enumerate() {
        assert_eq!(reply.unwrap(), format!("p {i}"));
    }
    let mut out: FuturesUnordered<_> = (0..64)
        .map(|i| {
            let payload = Bytes::from(format!("request {i}"));
            let reply = req.request(payload.clone());
            async move { assert_eq!(reply.await.unwrap(), payload) }
        })
        .collect();
    within(async { while out.next().await.is_some() {} }).await;
    assert_eq!(connections(&peers), vec![704]);
    // A lane is dialed at once when it is opened: give one the time to show.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(admitted.load(Ordering::SeqCst), 1, "one connection dialed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_1_keeps_zeromqs_one_connection() {
    let (addr, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let mut req = ReqSocket::with_options(Tcp::default(), ReqOptions::default().connections(1));
    req.connect(addr).await.unwrap();

    from_clones(&req, 64, 10).await;
    assert_eq!(connections(&peers), vec![640]);
}

#[tokio::test]
async fn a_current_thread_runtime_keeps_one_connection() {
    let (addr, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(addr).await.unwrap();

    from_clones(&req, 64, 10).await;
    assert_eq!(connections(&peers), vec![640]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_caps_the_lanes_below_the_workers() {
    let (addr, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let mut req = ReqSocket::with_options(Tcp::default(), ReqOptions::default().connections(3));
    req.connect(addr).await.unwrap();

    from_clones(&req, 96, 30).await;
    let per_conn = connections(&peers);
    assert_eq!(per_conn.len(), 3, "{per_conn:?}");
    assert_eq!(per_conn.iter().sum::<usize>(), 96 * 30);
}

/// A server that admits one connection per client: the second is refused for good, and
/// the clones that would use it stay on the first, with every request answered and no
/// event about it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_connection_the_server_refuses_leaves_its_clones_on_the_first() {
    let admitted = Arc::new(AtomicUsize::new(0));
    let admission = {
        let admitted = admitted.clone();
        service_fn(move |_: AdmissionRequest<SocketAddr>| {
            let first = admitted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                Ok::<_, Infallible>(match first {
                    true => Verdict::Admit,
                    false => Verdict::reject("one connection per client"),
                })
            }
        })
    };
    let rep = RepSocket::new(Tcp::default()).with_admission(admission);
    let (addr, peers) = counting_echo(rep, Duration::from_millis(2)).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect(addr).await.unwrap();

    from_clones(&req, 64, 40).await;
    assert!(
        admitted.load(Ordering::SeqCst) >= 2,
        "a second connection was tried"
    );
    assert_eq!(connections(&peers), vec![64 * 40]);
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await
    {
        assert!(
            matches!(event, SocketEvent::Connected { .. }),
            "only the endpoint's own connection is reported: {event:?}"
        );
    }
    from_clones(&req, 64, 5).await;
}

/// A socket connected through a relay to a counting echo server, its 64 clones spread over
/// two connections (checked), and the relay, which counts the links each side closed.
async fn spread_through_a_relay() -> (ReqSocket<Tcp>, Relay) {
    let (server, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let relay = Relay::start(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    req.connect(relay.addr()).await.unwrap();
    from_clones(&req, 64, 40).await;
    assert_eq!(connections(&peers).len(), 2);
    (req, relay)
}

/// Every connection of the socket goes through a relay that counts the links whose client
/// side closed: `close` closes the first connection and the lane alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_every_connection_of_the_socket() {
    let (req, relay) = spread_through_a_relay().await;
    within(req.close()).await;
    within(relay.client_closed(2)).await;
}

/// Once a second endpoint makes the socket balance, requests go on each endpoint's first
/// connection only: the first endpoint's lane closes, and every request is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lane_closes_when_the_socket_starts_balancing() {
    let (mut req, relay) = spread_through_a_relay().await;

    let (other, _) = counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    req.connect(other).await.unwrap();
    within(relay.client_closed(1)).await;
    from_clones(&req, 64, 5).await;
}

/// Both connections lost at once (the relay resets every link): the socket dials its
/// first connection again, then the lane, and its clones spread over the two new ones, every
/// request answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_connection_is_lost_the_socket_spreads_again() {
    let (server, peers) =
        counting_echo(RepSocket::new(Tcp::default()), Duration::from_millis(2)).await;
    let relay = Relay::start(server).await;
    let mut req = ReqSocket::new(Tcp::default());
    let mut events = req.events();
    req.connect(relay.addr()).await.unwrap();
    from_clones(&req, 64, 40).await;
    let before: Vec<SocketAddr> = peers.lock().unwrap().keys().copied().collect();
    assert_eq!(before.len(), 2);

    relay.cut();
    for wanted in ["disconnected", "connected again"] {
        within(async {
            loop {
                match events.next().await {
                    Some(SocketEvent::Disconnected { .. }) if wanted == "disconnected" => break,
                    Some(SocketEvent::Connected { .. }) if wanted == "connected again" => break,
                    Some(_) => {}
                    None => panic!("events ended before the socket {wanted}"),
                }
            }
        })
        .await;
    }
    // The lane redials once the first connection is back, after a backoff: rounds of
    // 64 clones x 10 requests go on until both new connections have carried requests. A
    // request that meets a connection as it is lost fails, and is sent again.
    let new_peers = || -> Vec<(SocketAddr, usize)> {
        peers
            .lock()
            .unwrap()
            .iter()
            .filter(|(peer, _)| !before.contains(peer))
            .map(|(peer, n)| (*peer, *n))
            .collect()
    };
    within(async {
        for round in 0.. {
            let after = new_peers();
            if after.len() == 2 {
                break;
            }
            assert!(
                round < 100,
                "after {round} rounds, new connections: {after:?}"
            );
            let mut set = tokio::task::JoinSet::new();
            for task in 0..64 {
                let req = req.clone();
                set.spawn(async move {
                    for i in 0..10 {
                        let payload = Bytes::from(format!("task {task} request {i}"));
                        let mut tries = 0;
                        loop {
                            match req.request(payload.clone()).await {
                                Ok(reply) => break assert_eq!(reply, payload),
                                Err(e) if tries < 50 => {
                                    tries += 1;
                                    tracing::debug!(error = %e, "retrying");
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                Err(e) => panic!("still failing after {tries} tries: {e}"),
                            }
                        }
                    }
                });
            }
            while let Some(done) = set.join_next().await {
                done.expect("client task");
            }
        }
    })
    .await;
}
