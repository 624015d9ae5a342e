//! TCP: [`Tcp`], its [`Endpoint`] and its listener.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use tokio::net::{TcpListener, TcpStream};

use crate::transport::{Connected, Listener, Transport, TransportError};

/// Where a TCP socket binds or dials: a socket address, or a `host:port` to resolve.
///
/// Everything a user would pass converts into it: `"127.0.0.1:4444"`, `"localhost:4444"`,
/// `String`s, and [`SocketAddr`]s.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use msg::tcp::Endpoint;
///
/// let addr: SocketAddr = "127.0.0.1:4444".parse().unwrap();
/// assert_eq!(Endpoint::from("127.0.0.1:4444"), Endpoint::Addr(addr));
/// assert_eq!(Endpoint::from(addr), Endpoint::Addr(addr));
/// assert_eq!(Endpoint::from("localhost:4444"), Endpoint::Host("localhost:4444".into()));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A resolved address.
    Addr(SocketAddr),
    /// A `host:port` that is resolved through the system's resolver when used.
    Host(String),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(addr) => addr.fmt(f),
            Endpoint::Host(host) => f.write_str(host),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::Addr(addr)
    }
}

impl From<&SocketAddr> for Endpoint {
    fn from(addr: &SocketAddr) -> Self {
        Endpoint::Addr(*addr)
    }
}

impl From<(IpAddr, u16)> for Endpoint {
    fn from(addr: (IpAddr, u16)) -> Self {
        Endpoint::Addr(addr.into())
    }
}

impl From<&str> for Endpoint {
    fn from(target: &str) -> Self {
        match target.parse() {
            Ok(addr) => Endpoint::Addr(addr),
            Err(_) => Endpoint::Host(target.to_owned()),
        }
    }
}

impl From<String> for Endpoint {
    fn from(target: String) -> Self {
        match target.parse() {
            Ok(addr) => Endpoint::Addr(addr),
            Err(_) => Endpoint::Host(target),
        }
    }
}

impl From<&String> for Endpoint {
    fn from(target: &String) -> Self {
        Endpoint::from(target.as_str())
    }
}

impl Endpoint {
    /// Resolves the endpoint to its addresses, in the resolver's order.
    ///
    /// # Errors
    ///
    /// [`TransportError::Resolve`] if the resolver fails, [`TransportError::NoAddress`] if
    /// it returns nothing.
    pub async fn resolve(&self) -> Result<Vec<SocketAddr>, TransportError> {
        match self {
            Endpoint::Addr(addr) => Ok(vec![*addr]),
            Endpoint::Host(host) => {
                let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host.as_str())
                    .await
                    .map_err(|source| TransportError::Resolve {
                        target: host.clone(),
                        source,
                    })?
                    .collect();
                if addrs.is_empty() {
                    return Err(TransportError::NoAddress {
                        target: host.clone(),
                    });
                }
                Ok(addrs)
            }
        }
    }

    /// Resolves the endpoint and binds the first address that `bind` accepts.
    ///
    /// # Errors
    ///
    /// As [`resolve`](Self::resolve), or [`TransportError::Bind`] with the last address
    /// tried if none could be bound.
    pub(crate) async fn bind_first<L, F, Fut>(&self, mut bind: F) -> Result<L, TransportError>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: std::future::Future<Output = io::Result<L>>,
    {
        let mut last = None;
        for addr in self.resolve().await? {
            match bind(addr).await {
                Ok(bound) => return Ok(bound),
                Err(source) => last = Some((addr, source)),
            }
        }
        let (addr, source) = last.ok_or(TransportError::NoAddress {
            target: self.to_string(),
        })?;
        Err(TransportError::Bind {
            addr: addr.to_string(),
            source,
        })
    }
}

/// The TCP transport, with `TCP_NODELAY` set on every connection so that small messages
/// leave at once.
///
/// It is also a connector: a [`tower::Service`] from [`Endpoint`] to a connected stream,
/// so connection-level layers (a connect timeout, a retry with backoff) can wrap it.
///
/// # Example
///
/// ```
/// use msg::transport::Listener;
/// use msg::{Tcp, Transport};
///
/// # tokio_test_block_on(async {
/// let tcp = Tcp::default();
/// let listener = tcp.bind("127.0.0.1:0".into()).await?;
/// let addr = listener.local_addr()?;
/// assert_ne!(addr.port(), 0, "the real port is reported");
///
/// let conn = tcp.connect(addr.into()).await?;
/// assert_eq!(conn.peer, addr);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Tcp {
    _private: (),
}

impl Tcp {
    /// The TCP transport with its defaults.
    pub const fn new() -> Self {
        Tcp { _private: () }
    }
}

/// A bound TCP listener.
#[derive(Debug)]
pub struct TcpAcceptor {
    inner: TcpListener,
}

impl Listener for TcpAcceptor {
    type Conn = TcpStream;
    type Addr = SocketAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Connected<TcpStream, SocketAddr>>> {
        self.inner.poll_accept(cx).map(|res| {
            let (io, peer) = res?;
            io.set_nodelay(true)?;
            Ok(Connected { io, peer })
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

async fn connect_endpoint(
    target: Endpoint,
) -> Result<Connected<TcpStream, SocketAddr>, TransportError> {
    let addrs = target.resolve().await?;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(io) => {
                io.set_nodelay(true)?;
                return Ok(Connected { io, peer: addr });
            }
            Err(source) => last = Some((addr, source)),
        }
    }
    let (addr, source) = last.ok_or(TransportError::NoAddress {
        target: target.to_string(),
    })?;
    Err(TransportError::Connect {
        addr: addr.to_string(),
        source,
    })
}

impl Transport for Tcp {
    type Target = Endpoint;
    type Addr = SocketAddr;
    type Io = TcpStream;
    type Listener = TcpAcceptor;

    async fn bind(&self, target: Endpoint) -> Result<TcpAcceptor, TransportError> {
        let inner = target.bind_first(TcpListener::bind).await?;
        Ok(TcpAcceptor { inner })
    }

    fn connect(
        &self,
        target: Endpoint,
    ) -> impl Future<Output = Result<Connected<TcpStream, SocketAddr>, TransportError>> + Send {
        connect_endpoint(target)
    }

    /// Nothing to set up: a TCP stream is ready once accepted.
    async fn accept(
        &self,
        conn: Connected<TcpStream, SocketAddr>,
    ) -> Result<Connected<TcpStream, SocketAddr>, TransportError> {
        Ok(conn)
    }
}

crate::transport::connector_service!(Tcp);

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tower::Service;

    use super::*;

    #[tokio::test]
    async fn binds_port_zero_and_connects_by_name_addr_and_service() {
        let tcp = Tcp::new();
        let mut listener = tcp.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        assert_ne!(addr.port(), 0);

        let targets = [
            Endpoint::from(addr),
            Endpoint::from(format!("localhost:{}", addr.port())),
            Endpoint::from(addr.to_string().as_str()),
        ];
        for target in targets {
            let mut svc = tcp.clone();
            poll_fn(|cx| svc.poll_ready(cx)).await.unwrap();
            let mut client = svc.call(target.clone()).await.unwrap();
            assert!(client.io.nodelay().unwrap());
            let mut server = poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
            assert!(server.io.nodelay().unwrap());
            client.io.write_all(b"ping").await.unwrap();
            let mut buf = [0; 4];
            server.io.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"ping", "via {target}");
        }
    }

    #[tokio::test]
    async fn connect_to_closed_port_is_a_typed_error() {
        // Bound but not listening, and held while it is dialed: no other test can take the
        // port meanwhile, as it could one that was bound and released.
        let held = tokio::net::TcpSocket::new_v4().unwrap();
        held.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = held.local_addr().unwrap();
        match Tcp::new().connect(addr.into()).await {
            Err(TransportError::Connect { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::ConnectionRefused)
            }
            other => panic!("expected a connect error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unparseable_target_is_a_typed_error_before_any_lookup() {
        // Neither an address nor `host:port` with a port: refused before the resolver is
        // asked, so the test never waits on a name server.
        for target in ["not a host:port", "no port at all"] {
            let err = Tcp::new().connect(target.into()).await.unwrap_err();
            assert!(
                matches!(err, TransportError::Resolve { .. }),
                "{target}: {err:?}"
            );
        }
    }
}
