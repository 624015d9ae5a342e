//! The transport matrix: the same Req/Rep and Pub/Sub test bodies run over every
//! transport, with only the transport value and the addresses changing.

use std::convert::Infallible;
use std::path::PathBuf;

use bytes::Bytes;
use msg::{serve, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Transport};
use msg_tests::within;
use tokio_stream::StreamExt;
use tower::service_fn;

/// How a test gets a transport and the addresses to bind and dial.
trait Fixture {
    type T: Transport;
    fn transport() -> Self::T;
    fn bind_target() -> <Self::T as Transport>::Target;
    fn dial_target(bound: &<Self::T as Transport>::Addr) -> <Self::T as Transport>::Target;
}

/// A fixture for a transport that binds and dials socket addresses on loopback.
macro_rules! loopback_fixture {
    ($name:ident, $transport:ty, $make:expr) => {
        struct $name;

        impl Fixture for $name {
            type T = $transport;
            fn transport() -> $transport {
                $make
            }
            fn bind_target() -> msg::tcp::Endpoint {
                "127.0.0.1:0".into()
            }
            fn dial_target(bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
                (*bound).into()
            }
        }
    };
}

/// One PKI for the whole test process: generating keys is the slow part.
fn pki() -> &'static msg::tls::TestPki {
    static PKI: std::sync::OnceLock<msg::tls::TestPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| msg::tls::TestPki::generate(&["localhost"]).expect("test PKI"))
}

/// A server configuration with the test PKI's certificate, and a client one that trusts it.
fn tls_configs() -> (msg::tls::ServerConfig, msg::tls::ClientConfig) {
    let pki = pki();
    let server = msg::tls::server_config(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .expect("server config");
    let client = msg::tls::client_config(pki.ca_pem.as_bytes()).expect("client config");
    (server, client)
}

loopback_fixture!(Tcp, msg::Tcp, msg::Tcp::default());
loopback_fixture!(Quic, msg::Quic, msg::Quic::default());
loopback_fixture!(Tls, msg::Tls, {
    let (server, client) = tls_configs();
    msg::Tls::server(server)
        .with_client(client, "localhost")
        .expect("client side")
});
// QUIC with real certificates: the server verified, as in production.
loopback_fixture!(VerifiedQuic, msg::Quic, {
    let (server, client) = tls_configs();
    msg::Quic::with_tls(Some(server), client, "localhost").expect("QUIC with TLS")
});

/// A TCP-based fixture dialed through the test relay, which cuts every write into pieces
/// of at most 61 bytes: frames, TLS records and handshakes all arrive split at arbitrary
/// places.
macro_rules! relayed_fixture {
    ($name:ident, $inner:ty) => {
        struct $name;

        impl Fixture for $name {
            type T = <$inner as Fixture>::T;
            fn transport() -> Self::T {
                <$inner>::transport()
            }
            fn bind_target() -> msg::tcp::Endpoint {
                <$inner>::bind_target()
            }
            fn dial_target(bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
                let relay = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(msg_tests::Relay::start(*bound))
                });
                relay.rechunk(61);
                let addr = relay.addr();
                // The relay lives as long as the test process.
                std::mem::forget(relay);
                addr.into()
            }
        }
    };
}

relayed_fixture!(RelayedTcp, Tcp);
relayed_fixture!(RelayedTls, Tls);

struct Ipc;

impl Fixture for Ipc {
    type T = msg::Ipc;
    fn transport() -> msg::Ipc {
        msg::Ipc::default()
    }
    fn bind_target() -> PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!("msg-matrix-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir.join(format!("{}.sock", N.fetch_add(1, Ordering::Relaxed)))
    }
    fn dial_target(bound: &msg::ipc::IpcAddr) -> PathBuf {
        bound.into()
    }
}

async fn request_reply<F: Fixture>() {
    let mut rep = RepSocket::new(F::transport());
    rep.bind(F::bind_target()).await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<<F::T as Transport>::Addr>| async move {
            Ok::<_, Infallible>(Bytes::from([&b"echo "[..], req.msg()].concat()))
        }),
    ));
    let mut req = ReqSocket::new(F::transport());
    within(req.connect(F::dial_target(&addr))).await.unwrap();
    within(async {
        for i in 0..1000u32 {
            let payload = Bytes::from(format!("{i}"));
            let reply = req.request(payload).await.unwrap();
            assert_eq!(reply, Bytes::from(format!("echo {i}")));
        }
        // Large payloads travel beside their headers, not copied.
        let big = Bytes::from(vec![9u8; 1 << 20]);
        let reply = req.request(big.clone()).await.unwrap();
        assert_eq!(&reply[5..], &big[..]);
    })
    .await;
}

async fn stream_request_reply<F: Fixture>() {
    let mut rep = RepSocket::new(F::transport());
    rep.bind(F::bind_target()).await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::new(F::transport());
    within(req.connect(F::dial_target(&addr))).await.unwrap();
    tokio::spawn(async move {
        let req = rep.next().await.unwrap();
        req.respond(Bytes::from("world")).unwrap();
    });
    let res = within(req.request(Bytes::from("hello"))).await.unwrap();
    assert_eq!(res, Bytes::from("world"));
}

async fn publish_subscribe<F: Fixture>() {
    let mut publisher = PubSocket::new(F::transport());
    publisher.bind(F::bind_target()).await.unwrap();
    let addr = publisher.local_addr().unwrap();
    let mut subs = Vec::new();
    for pattern in ["a.>", "a.b", "*.c"] {
        let mut sub = SubSocket::new(F::transport());
        within(sub.connect(F::dial_target(&addr))).await.unwrap();
        within(sub.subscribe(pattern)).await.unwrap();
        within(sub.subscribe("end")).await.unwrap();
        subs.push(sub);
    }
    for topic in ["a.b", "a.c", "x.c", "end"] {
        publisher.publish(topic, Bytes::from(topic)).await.unwrap();
    }
    let expected: [&[&str]; 3] = [&["a.b", "a.c"], &["a.b"], &["a.c", "x.c"]];
    for (sub, want) in subs.iter_mut().zip(expected) {
        let mut got = Vec::new();
        within(async {
            loop {
                let msg = sub.next().await.unwrap();
                if msg.topic() == "end" {
                    break;
                }
                assert_eq!(msg.payload(), msg.topic());
                got.push(msg.topic().to_owned());
            }
        })
        .await;
        assert_eq!(got, want);
    }
}

macro_rules! matrix {
    ($($name:ident: $fixture:ty),* $(,)?) => {
        mod req_rep {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    request_reply::<$fixture>().await;
                    stream_request_reply::<$fixture>().await;
                }
            )*
        }
        mod pub_sub {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    publish_subscribe::<$fixture>().await;
                }
            )*
        }
    };
}

matrix!(
    tcp: Tcp,
    tls: Tls,
    quic: Quic,
    quic_verified: VerifiedQuic,
    ipc: Ipc,
    tcp_through_a_rechunking_relay: RelayedTcp,
    tls_through_a_rechunking_relay: RelayedTls,
);
