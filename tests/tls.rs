//! TLS over TCP through the sockets: trust, mutual TLS, and failures that are typed and
//! bounded in time.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use msg::tls::{
    client_config, client_config_with_cert, server_config, server_config_mtls, TestPki,
};
use msg::transport::TransportError;
use msg::{serve, Error, RepSocket, ReqSocket, Request, Tls};
use msg_tests::within;
use tower::service_fn;

async fn echo(transport: Tls) -> SocketAddr {
    let mut rep = RepSocket::new(transport);
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_that_does_not_trust_the_server_gets_a_typed_handshake_error() {
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let stranger = TestPki::generate(&["localhost"]).unwrap();
    let addr = echo(Tls::server(
        server_config(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap(),
    ))
    .await;

    let untrusting = Tls::client(
        client_config(stranger.ca_pem.as_bytes()).unwrap(),
        "localhost",
    )
    .unwrap();
    let mut req = ReqSocket::new(untrusting);
    match within(req.connect(addr)).await {
        Err(Error::Transport(e)) if matches!(*e, TransportError::TlsHandshake { .. }) => {}
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }

    // A client for the wrong name fails the same way.
    let wrong_name =
        Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "example.org").unwrap();
    let mut req = ReqSocket::new(wrong_name);
    assert!(matches!(
        within(req.connect(addr)).await,
        Err(Error::Transport(e)) if matches!(*e, TransportError::TlsHandshake { .. })
    ));

    // The server is unharmed and serves a trusting client.
    let trusting = Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
    let mut req = ReqSocket::new(trusting);
    within(req.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("hi"))).await.unwrap(), "hi");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_a_client_certificate_and_refuses_its_absence() {
    let pki = TestPki::generate(&["localhost"]).unwrap();
    let addr = echo(Tls::server(
        server_config_mtls(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
            pki.ca_pem.as_bytes(),
        )
        .unwrap(),
    ))
    .await;

    let with_cert = Tls::client(
        client_config_with_cert(
            pki.ca_pem.as_bytes(),
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )
        .unwrap(),
        "localhost",
    )
    .unwrap();
    let mut req = ReqSocket::new(with_cert);
    within(req.connect(addr)).await.unwrap();
    assert_eq!(
        within(req.request(Bytes::from("mtls"))).await.unwrap(),
        "mtls"
    );

    // Without a certificate the server refuses; the client learns it at once, typed. Under
    // TLS 1.3 the client's side of the handshake is done before the server checks for its
    // certificate, so the refusal comes as the server's alert, read where msg's hello
    // answer is awaited: an I/O error of kind InvalidData that names the alert.
    let without = Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
    let mut req = ReqSocket::new(without);
    let asked = Instant::now();
    let err = within(req.connect(addr)).await.unwrap_err();
    assert!(
        matches!(&err, Error::Io(e) if e.kind() == std::io::ErrorKind::InvalidData
            && e.to_string().contains("CertificateRequired")),
        "unexpected error {err:?}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_client_that_verifies_refuses_a_self_signed_server() {
    let mut rep = RepSocket::new(msg::Quic::default());
    rep.bind("127.0.0.1:0").await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request| async move { Ok::<_, Infallible>(req.msg().clone()) }),
    ));

    let pki = TestPki::generate(&["localhost"]).unwrap();
    let verifying = msg::Quic::with_tls(
        None,
        client_config(pki.ca_pem.as_bytes()).unwrap(),
        "localhost",
    )
    .unwrap();
    let mut req = ReqSocket::new(verifying);
    match within(req.connect(addr)).await {
        Err(Error::Transport(e)) if matches!(*e, TransportError::TlsHandshake { .. }) => {}
        other => panic!("expected a TLS handshake error, got {other:?}"),
    }

    // The default client accepts it: encrypted, not authenticated.
    let mut req = ReqSocket::new(msg::Quic::default());
    within(req.connect(addr)).await.unwrap();
    assert_eq!(within(req.request(Bytes::from("q"))).await.unwrap(), "q");
}
