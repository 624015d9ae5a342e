//! One program whose transport comes from an endpoint string: `AnyTransport` binds a
//! `RepSocket` and a `PubSocket` where the strings say and connects a `ReqSocket` and a
//! `SubSocket` to the addresses they report, over `tcp://`, `tls://`, `quic://` and
//! `ipc://` alike; and endpoint strings that do not parse, or name a transport with no
//! configuration, fail with typed errors and cost the socket nothing.

use std::convert::Infallible;

use bytes::Bytes;
use msg::any::AnyAddr;
use msg::transport::TransportError;
use msg::{
    serve, AnyTransport, Endpoint, EndpointError, Error, PubSocket, RepSocket, ReqSocket, Request,
    SubSocket,
};
use msg_tests::fixture::{tls_configs, TempDir};
use msg_tests::within;
use tokio_stream::StreamExt;
use tower::service_fn;

/// An `AnyTransport` for every scheme: TLS and QUIC with the test PKI, the server verified.
fn transport() -> AnyTransport {
    let (server, client) = tls_configs();
    AnyTransport::new()
        .with_certificates(Some(server), client, "localhost")
        .expect("TLS and QUIC configurations")
}

/// The program: a reply socket bound at `rep_at` and a publisher at `pub_at`, a request
/// socket and a subscriber connected to the addresses they report, written out as strings
/// (as a program would pass them on to another process).
async fn program(transport: AnyTransport, rep_at: &str, pub_at: &str) {
    let scheme = rep_at.parse::<Endpoint>().unwrap().scheme();
    let mut rep = RepSocket::new(transport.clone());
    within(rep.bind(rep_at)).await.unwrap();
    let rep_addr = rep.local_addr().unwrap();
    assert!(
        rep_addr.to_string().starts_with(&format!("{scheme}://")),
        "{rep_addr} for {rep_at}"
    );
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<AnyAddr>| async move {
            let text = String::from_utf8_lossy(req.msg()).into_owned();
            Ok::<_, Infallible>(Bytes::from(format!("{text} from {}", req.peer())))
        }),
    ));

    let mut publisher = PubSocket::new(transport.clone());
    within(publisher.bind(pub_at)).await.unwrap();
    let pub_addr = publisher.local_addr().unwrap();

    let mut req = ReqSocket::new(transport.clone());
    within(req.connect(rep_addr.to_string().as_str()))
        .await
        .unwrap();
    for i in 0..3 {
        let reply = within(req.request(Bytes::from(format!("hello {i}"))))
            .await
            .unwrap();
        let reply = String::from_utf8(reply.to_vec()).unwrap();
        assert!(
            reply.starts_with(&format!("hello {i} from {scheme}://")),
            "{reply}"
        );
    }

    let mut sub = SubSocket::new(transport);
    within(sub.connect(pub_addr.to_string())).await.unwrap();
    within(sub.subscribe("prices.>")).await.unwrap();
    within(publisher.publish("prices.eur", Bytes::from("1.08")))
        .await
        .unwrap();
    let msg = within(sub.next()).await.expect("a publication");
    assert_eq!(msg.topic(), "prices.eur");
    assert_eq!(msg.payload(), &Bytes::from("1.08"));
    assert_eq!(msg.publisher(), &pub_addr);
    within(publisher.close()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_program_runs_over_tcp() {
    program(transport(), "tcp://127.0.0.1:0", "tcp://127.0.0.1:0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_program_runs_over_tls() {
    program(transport(), "tls://127.0.0.1:0", "tls://127.0.0.1:0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_program_runs_over_quic() {
    program(transport(), "quic://127.0.0.1:0", "quic://127.0.0.1:0").await;
    // And with QUIC's default (self-signed, the server not verified), over IPv6 loopback
    // where the machine has it.
    if std::net::UdpSocket::bind("[::1]:0").is_ok() {
        program(AnyTransport::new(), "quic://[::1]:0", "quic://[::1]:0").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_program_runs_over_ipc() {
    let dir = TempDir::new();
    let rep_at = format!("ipc://{}", dir.path().join("rep.sock").display());
    let pub_at = format!("ipc://{}", dir.path().join("pub.sock").display());
    program(transport(), &rep_at, &pub_at).await;
}

/// The endpoint error inside a socket's error, or a panic that says what came instead.
fn endpoint_error(outcome: Result<(), Error>) -> EndpointError {
    match outcome {
        Err(Error::Transport(e)) => match &*e {
            TransportError::Endpoint(e) => e.clone(),
            other => panic!("expected an endpoint error, got {other:?}"),
        },
        other => panic!("expected an endpoint error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_are_typed_errors_on_every_socket_and_cost_it_nothing() {
    let mut rep = RepSocket::new(AnyTransport::new());
    let outcome = within(rep.bind("udp://127.0.0.1:0")).await;
    let Err(err) = &outcome else {
        panic!("udp:// bound")
    };
    assert!(err.is_permanent(), "{err}");
    let text = err.to_string();
    for part in ["`udp`", "tcp://", "tls://", "quic://", "ipc://"] {
        assert!(text.contains(part), "{text}");
    }
    assert!(matches!(
        endpoint_error(outcome),
        EndpointError::UnknownScheme { scheme, .. } if scheme == "udp"
    ));

    let mut publisher = PubSocket::new(AnyTransport::new());
    assert!(matches!(
        endpoint_error(within(publisher.bind("tcp://127.0.0.1:70000")).await),
        EndpointError::BadPort { port, .. } if port == "70000"
    ));
    let mut req = ReqSocket::new(AnyTransport::new());
    assert!(matches!(
        endpoint_error(within(req.connect("tcp://127.0.0.1")).await),
        EndpointError::MissingPort { .. }
    ));
    let mut sub = SubSocket::new(AnyTransport::new());
    assert!(matches!(
        endpoint_error(within(sub.connect("ipc://")).await),
        EndpointError::EmptyPath { .. }
    ));
    assert!(matches!(
        endpoint_error(within(sub.connect("127.0.0.1:5555")).await),
        EndpointError::NoScheme { .. }
    ));

    // Each socket is as good as new: the same values bind and connect right after.
    within(rep.bind("tcp://127.0.0.1:0")).await.unwrap();
    let rep_addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<AnyAddr>| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    within(req.connect(rep_addr)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("still here")))
            .await
            .unwrap(),
        "still here"
    );
    within(publisher.bind("tcp://127.0.0.1:0")).await.unwrap();
    within(sub.connect(publisher.local_addr().unwrap()))
        .await
        .unwrap();
    within(sub.subscribe("t")).await.unwrap();
    within(publisher.publish("t", Bytes::from("p")))
        .await
        .unwrap();
    assert_eq!(within(sub.next()).await.unwrap().payload(), "p");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_endpoint_without_certificates_is_a_configuration_error() {
    let mut rep = RepSocket::new(AnyTransport::new());
    let mut req = ReqSocket::new(AnyTransport::new());
    for outcome in [
        within(rep.bind("tls://127.0.0.1:0")).await,
        within(req.connect("tls://127.0.0.1:1")).await,
    ] {
        match outcome {
            Err(Error::Transport(e)) => {
                assert!(matches!(*e, TransportError::Config { .. }), "{e:?}");
                assert!(
                    e.to_string().contains("AnyTransport::with_certificates"),
                    "{e}"
                );
                assert!(e.is_permanent());
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}

/// The transport from a configuration naming PEM files, as a program reads it from a file or
/// flags: the same program over `tls://` and `quic://`; an incomplete configuration is a
/// typed error that says what is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_from_a_configuration_of_pem_files_runs_the_program() {
    use msg::any::TransportConfig;
    use msg_tests::fixture::pki;

    let dir = TempDir::new();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let config = TransportConfig {
        cert: Some(write("server.crt", &pki().server_cert_pem)),
        key: Some(write("server.key", &pki().server_key_pem)),
        ca: Some(write("ca.crt", &pki().ca_pem)),
        server_name: Some("localhost".into()),
    };
    let transport = AnyTransport::from_config(&config).unwrap();
    program(transport.clone(), "tls://127.0.0.1:0", "tls://127.0.0.1:0").await;
    program(transport, "quic://127.0.0.1:0", "quic://127.0.0.1:0").await;

    // Nothing configured: TCP and IPC (and QUIC's default) only.
    let plain = AnyTransport::from_config(&TransportConfig::default()).unwrap();
    program(plain, "tcp://127.0.0.1:0", "tcp://127.0.0.1:0").await;

    let incomplete = [
        TransportConfig {
            key: None,
            ..config.clone()
        },
        TransportConfig {
            ca: None,
            ..config.clone()
        },
    ];
    for config in incomplete {
        match AnyTransport::from_config(&config) {
            Err(TransportError::Config { reason }) => assert!(!reason.is_empty()),
            other => panic!("{config:?} gave {other:?}"),
        }
    }
    let missing = TransportConfig {
        ca: Some(dir.path().join("no-such.crt")),
        ..TransportConfig::default()
    };
    match AnyTransport::from_config(&missing) {
        Err(e @ TransportError::Certificate { .. }) => {
            assert!(e.to_string().contains("no-such.crt"), "{e}")
        }
        other => panic!("a missing file gave {other:?}"),
    }
}
