//! Load: eight thousand client connections at once on one `RepSocket`, each answered, and
//! an active client served throughout. (Memory per idle connection and the active client's
//! latency are measured by `msg-bench --load`, not asserted here.)

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use msg::{serve, RepOptions, RepSocket, ReqSocket, Request, Tcp};
use msg_tests::within;
use tower::service_fn;

/// Raises the open-file limit as far as the hard limit allows; returns the limit in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the one struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        let soft = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            return soft;
        }
    }
    limit.rlim_cur
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_thousand_connections_on_one_socket_are_each_answered() {
    // Both ends are in this process: two descriptors per connection, and some to spare.
    let needed = 2 * 8_000 + 256;
    let fds = raise_fd_limit();
    if fds < needed {
        // A host that cannot open this many files cannot run the test; that is not a
        // failure of the library.
        eprintln!(
            "skipped: the open-file limit is {fds} (hard limit included), and 8,000 \
             connections need {needed}"
        );
        return;
    }
    let n = 8_000;
    let mut rep =
        RepSocket::with_options(Tcp::default(), RepOptions::default().max_connections(n + 1));
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    let mut active = ReqSocket::new(Tcp::default());
    within(active.connect(addr)).await.unwrap();

    let clients = tokio::time::timeout(Duration::from_secs(120), async {
        let mut clients = Vec::with_capacity(n);
        let mut dials = tokio::task::JoinSet::new();
        let mut next = 0;
        while clients.len() < n {
            while dials.len() < 256 && next < n {
                next += 1;
                dials.spawn(async move {
                    let mut req = ReqSocket::new(Tcp::default());
                    req.connect(addr).await.map(|()| req)
                });
            }
            clients.push(
                dials
                    .join_next()
                    .await
                    .unwrap()
                    .unwrap()
                    .expect("connected"),
            );
            // The active client is served while the others pile in.
            if clients.len() % 1000 == 0 {
                assert_eq!(active.request(Bytes::from("a")).await.unwrap(), "a");
            }
        }
        clients
    })
    .await
    .expect("8,000 connections within two minutes");

    // Every one of them is answered, 256 at a time.
    tokio::time::timeout(Duration::from_secs(120), async {
        for chunk in clients.chunks(256) {
            let calls: Vec<_> = chunk
                .iter()
                .enumerate()
                .map(|(i, req)| {
                    let req = req.clone();
                    tokio::spawn(async move { (i, req.request(Bytes::from(i.to_string())).await) })
                })
                .collect();
            for call in calls {
                let (i, reply) = call.await.unwrap();
                assert_eq!(reply.unwrap(), i.to_string());
            }
        }
    })
    .await
    .expect("every connection answered within two minutes");
    assert_eq!(within(active.request(Bytes::from("b"))).await.unwrap(), "b");
}
