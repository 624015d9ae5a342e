//! The transport matrix: the same Req/Rep and Pub/Sub test bodies run over every
//! transport, with only the transport value and the addresses changing.

use std::convert::Infallible;

use bytes::Bytes;
use msg::transport::{Connected, Listener, Traffic, TransportError};
use msg::{serve, PubSocket, RepSocket, ReqSocket, Request, SubSocket, Transport};
use msg_tests::fixture::{Fixture, Ipc, Quic, RelayedTcp, RelayedTls, Tcp, Tls, VerifiedQuic};
use msg_tests::{echo_on_loopback, subscribed_on_loopback, within};
use tokio_stream::StreamExt;
use tower::service_fn;

async fn request_reply<F: Fixture>(f: &F) {
    let mut rep = RepSocket::new(f.transport());
    rep.bind(f.bind_target()).await.unwrap();
    let addr = rep.local_addr().unwrap();
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<<F::T as Transport>::Addr>| async move {
            Ok::<_, Infallible>(Bytes::from([&b"echo "[..], req.msg()].concat()))
        }),
    ));
    let mut req = ReqSocket::new(f.transport());
    within(req.connect(f.dial_target(&addr))).await.unwrap();
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

async fn stream_request_reply<F: Fixture>(f: &F) {
    let mut rep = RepSocket::new(f.transport());
    rep.bind(f.bind_target()).await.unwrap();
    let addr = rep.local_addr().unwrap();
    let mut req = ReqSocket::new(f.transport());
    within(req.connect(f.dial_target(&addr))).await.unwrap();
    tokio::spawn(async move {
        let req = rep.next().await.unwrap();
        req.respond(Bytes::from("world")).unwrap();
    });
    let res = within(req.request(Bytes::from("hello"))).await.unwrap();
    assert_eq!(res, Bytes::from("world"));
}

async fn publish_subscribe<F: Fixture>(f: &F) {
    let mut publisher = PubSocket::new(f.transport());
    publisher.bind(f.bind_target()).await.unwrap();
    let addr = publisher.local_addr().unwrap();
    let mut subs = Vec::new();
    for pattern in ["a.>", "a.b", "*.c"] {
        let mut sub = SubSocket::new(f.transport());
        within(sub.connect(f.dial_target(&addr))).await.unwrap();
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
                    let f = <$fixture>::new();
                    request_reply(&f).await;
                    stream_request_reply(&f).await;
                }
            )*
        }
        mod pub_sub {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    publish_subscribe(&<$fixture>::new()).await;
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

/// TCP that remembers what the socket owning it said of its traffic.
#[derive(Clone, Default)]
struct Told {
    tcp: msg::Tcp,
    traffic: std::sync::Arc<std::sync::Mutex<Vec<Traffic>>>,
}

impl Told {
    fn said(&self) -> Vec<Traffic> {
        self.traffic.lock().unwrap().clone()
    }
}

impl Transport for Told {
    type Target = <msg::Tcp as Transport>::Target;
    type Addr = <msg::Tcp as Transport>::Addr;
    type Io = <msg::Tcp as Transport>::Io;
    type Listener = <msg::Tcp as Transport>::Listener;

    async fn bind(&self, target: Self::Target) -> Result<Self::Listener, TransportError> {
        self.tcp.bind(target).await
    }

    async fn connect(
        &self,
        target: Self::Target,
    ) -> Result<Connected<Self::Io, Self::Addr>, TransportError> {
        self.tcp.connect(target).await
    }

    async fn accept(
        &self,
        conn: Connected<<Self::Listener as Listener>::Conn, Self::Addr>,
    ) -> Result<Connected<Self::Io, Self::Addr>, TransportError> {
        self.tcp.accept(conn).await
    }

    fn set_traffic(&mut self, traffic: Traffic) {
        self.traffic.lock().unwrap().push(traffic);
    }
}

/// Each socket tells its transport, once, how its traffic flows (what QUIC picks its send
/// batch by), and then works over it as over any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_socket_tells_its_transport_how_its_traffic_flows() {
    let (publishing, subscribing) = (Told::default(), Told::default());
    let (publisher, mut sub) = subscribed_on_loopback(
        PubSocket::new(publishing.clone()),
        SubSocket::new(subscribing.clone()),
        "t",
    )
    .await;
    publisher
        .publish("t", Bytes::from("one way"))
        .await
        .unwrap();
    let got = within(sub.next()).await.unwrap();
    assert_eq!(got.payload(), &Bytes::from("one way"));
    assert_eq!(publishing.said(), [Traffic::Send]);
    assert_eq!(subscribing.said(), [Traffic::Receive]);

    let (replying, requesting) = (Told::default(), Told::default());
    let addr = echo_on_loopback(RepSocket::new(replying.clone())).await;
    let mut req = ReqSocket::new(requesting.clone());
    within(req.connect(addr)).await.unwrap();
    let reply = within(req.request(Bytes::from("there and back")))
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from("there and back"));
    assert_eq!(replying.said(), [Traffic::Exchange]);
    assert_eq!(requesting.said(), [Traffic::Exchange]);
}
