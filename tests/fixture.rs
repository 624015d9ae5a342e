//! The transports a test body runs over: one [`Fixture`] per transport, giving the
//! transport value and the addresses to bind and dial, so that one generic body is run over
//! TCP, TLS, QUIC and IPC alike.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use msg::Transport;

use crate::{Relay, Upstream};

/// How a test gets a transport and the addresses to bind and dial. A fixture value lives as
/// long as the test: it owns what the addresses need (the IPC fixture's directory).
pub trait Fixture: Send + Sync + 'static {
    /// The transport under test.
    type T: Transport;
    /// Sets the fixture up for one test.
    fn new() -> Self;
    /// A transport value; every call gives one that can talk to every other.
    fn transport(&self) -> Self::T;
    /// Where a server binds: a fresh address each call.
    fn bind_target(&self) -> <Self::T as Transport>::Target;
    /// Where a client dials to reach the server bound at `bound`.
    fn dial_target(&self, bound: &<Self::T as Transport>::Addr) -> <Self::T as Transport>::Target;
    /// What a [`Relay`] passes links on to, to reach the server bound at `bound`.
    fn upstream(&self, bound: &<Self::T as Transport>::Addr) -> Upstream;
    /// Starts a relay in front of the server bound at `bound` (over TCP, a Unix socket or
    /// UDP, as the transport runs), and gives the target a client dials to go through it.
    /// A test cuts, freezes and resumes the relay, and retargets it to a restarted server
    /// (with [`upstream`](Self::upstream)), while its clients dial the same target.
    fn relay(
        &self,
        bound: &<Self::T as Transport>::Addr,
    ) -> impl std::future::Future<Output = (Relay, <Self::T as Transport>::Target)> + Send;
}

/// One PKI for the whole test process: generating keys is the slow part.
pub fn pki() -> &'static msg::tls::TestPki {
    static PKI: OnceLock<msg::tls::TestPki> = OnceLock::new();
    PKI.get_or_init(|| msg::tls::TestPki::generate(&["localhost"]).expect("test PKI"))
}

/// A server configuration with the test PKI's certificate, and a client one that trusts it.
pub fn tls_configs() -> (msg::tls::ServerConfig, msg::tls::ClientConfig) {
    let pki = pki();
    let server = msg::tls::server_config(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .expect("server config");
    let client = msg::tls::client_config(pki.ca_pem.as_bytes()).expect("client config");
    (server, client)
}

/// A fixture for a transport that binds and dials socket addresses on loopback.
macro_rules! loopback_fixture {
    ($(#[$doc:meta])* $name:ident, $transport:ty, $make:expr) => {
        loopback_fixture!($(#[$doc])* $name, $transport, $make, Tcp, start);
    };
    ($(#[$doc:meta])* $name:ident, $transport:ty, $make:expr, $upstream:ident, $start:ident) => {
        $(#[$doc])*
        pub struct $name;

        impl Fixture for $name {
            type T = $transport;
            fn new() -> Self {
                $name
            }
            fn transport(&self) -> $transport {
                $make
            }
            fn bind_target(&self) -> msg::tcp::Endpoint {
                "127.0.0.1:0".into()
            }
            fn dial_target(&self, bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
                (*bound).into()
            }
            fn upstream(&self, bound: &std::net::SocketAddr) -> Upstream {
                Upstream::$upstream(*bound)
            }
            async fn relay(&self, bound: &std::net::SocketAddr) -> (Relay, msg::tcp::Endpoint) {
                let relay = Relay::$start(*bound).await;
                let addr = relay.addr();
                (relay, addr.into())
            }
        }
    };
}

loopback_fixture!(
    /// Plain TCP.
    Tcp,
    msg::Tcp,
    msg::Tcp::default()
);
loopback_fixture!(
    /// QUIC with its default self-signed certificate.
    Quic,
    msg::Quic,
    msg::Quic::default(),
    Udp,
    start_udp
);
loopback_fixture!(
    /// TLS over TCP with the test PKI, the server verified.
    Tls,
    msg::Tls,
    {
        let (server, client) = tls_configs();
        msg::Tls::server(server)
            .with_client(client, "localhost")
            .expect("client side")
    }
);
loopback_fixture!(
    /// QUIC with real certificates: the server verified, as in production.
    VerifiedQuic,
    msg::Quic,
    {
        let (server, client) = tls_configs();
        msg::Quic::with_tls(Some(server), client, "localhost").expect("QUIC with TLS")
    },
    Udp,
    start_udp
);

/// A TCP-based fixture dialed through the test relay, which cuts every write into pieces
/// of at most 61 bytes: frames, TLS records and handshakes all arrive split at arbitrary
/// places.
macro_rules! relayed_fixture {
    ($(#[$doc:meta])* $name:ident, $inner:ty) => {
        $(#[$doc])*
        pub struct $name {
            relays: std::sync::Mutex<Vec<crate::Relay>>,
        }

        impl Fixture for $name {
            type T = <$inner as Fixture>::T;
            fn new() -> Self {
                $name {
                    relays: std::sync::Mutex::new(Vec::new()),
                }
            }
            fn transport(&self) -> Self::T {
                <$inner>::new().transport()
            }
            fn bind_target(&self) -> msg::tcp::Endpoint {
                <$inner>::new().bind_target()
            }
            fn dial_target(&self, bound: &std::net::SocketAddr) -> msg::tcp::Endpoint {
                let relay = tokio::task::block_in_place(|| {
                    tokio::runtime::Handle::current().block_on(crate::Relay::start(*bound))
                });
                relay.rechunk(61);
                let addr = relay.addr();
                // The relay lives as long as the fixture.
                self.relays.lock().unwrap().push(relay);
                addr.into()
            }
            fn upstream(&self, bound: &std::net::SocketAddr) -> Upstream {
                <$inner>::new().upstream(bound)
            }
            async fn relay(&self, bound: &std::net::SocketAddr) -> (Relay, msg::tcp::Endpoint) {
                <$inner>::new().relay(bound).await
            }
        }
    };
}

relayed_fixture!(
    /// TCP through a relay that cuts every write into 61-byte pieces.
    RelayedTcp,
    Tcp
);
relayed_fixture!(
    /// TLS through a relay that cuts every write into 61-byte pieces.
    RelayedTls,
    Tls
);

/// Unix-domain sockets, in a temporary directory of the test's own.
pub struct Ipc {
    dir: TempDir,
    next: AtomicU64,
}

impl Fixture for Ipc {
    type T = msg::Ipc;
    fn new() -> Self {
        Ipc {
            dir: TempDir::new(),
            next: AtomicU64::new(0),
        }
    }
    fn transport(&self) -> msg::Ipc {
        msg::Ipc::default()
    }
    fn bind_target(&self) -> PathBuf {
        self.dir.path().join(format!(
            "{}.sock",
            self.next.fetch_add(1, Ordering::Relaxed)
        ))
    }
    fn dial_target(&self, bound: &msg::ipc::IpcAddr) -> PathBuf {
        bound.into()
    }
    fn upstream(&self, bound: &msg::ipc::IpcAddr) -> Upstream {
        Upstream::Unix(bound.into())
    }
    async fn relay(&self, bound: &msg::ipc::IpcAddr) -> (Relay, PathBuf) {
        let front = self.bind_target();
        let relay = Relay::start_unix(front.clone(), bound.into());
        (relay, front)
    }
}

/// A directory of its own under the system's temporary directory, removed with everything
/// in it when dropped. Its name is short, so that socket paths in it stay well under the
/// 108 bytes a Unix socket address holds.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh, empty directory.
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "msg-{}-{}-{nanos:x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).expect("a fresh temporary directory");
        TempDir(path)
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs one generic test body over every transport, each as a test of its own in a module
/// named after the body: `each_transport!(body)` makes `body::tcp`, `body::tls`,
/// `body::quic` and `body::ipc`, each calling `body::<Fixture>(Fixture::new())`.
///
/// `each_transport!(body: tcp => Tcp, ipc => Ipc)` runs it over the fixtures listed only,
/// for a case that cannot apply to the others (say why beside it).
#[macro_export]
macro_rules! each_transport {
    ($body:ident: $($test:ident => $fixture:ident),+ $(,)?) => {
        mod $body {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let fixture = <$crate::fixture::$fixture as $crate::fixture::Fixture>::new();
                    super::$body(fixture).await;
                }
            )+
        }
    };
    ($($body:ident),* $(,)?) => {
        $(
            mod $body {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tcp() {
                    let fixture = <$crate::fixture::Tcp as $crate::fixture::Fixture>::new();
                    super::$body(fixture).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn tls() {
                    let fixture = <$crate::fixture::Tls as $crate::fixture::Fixture>::new();
                    super::$body(fixture).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn quic() {
                    let fixture = <$crate::fixture::Quic as $crate::fixture::Fixture>::new();
                    super::$body(fixture).await;
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn ipc() {
                    let fixture = <$crate::fixture::Ipc as $crate::fixture::Fixture>::new();
                    super::$body(fixture).await;
                }
            }
        )*
    };
}
