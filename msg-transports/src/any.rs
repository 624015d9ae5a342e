//! [`AnyTransport`]: one transport value that binds and dials every scheme of
//! [`Endpoint`], so that a program takes its transport from a flag or a configuration file
//! with no `match` per socket per transport.
//!
//! Its target is an [`AnyTarget`], which `&str`, `String` and [`Endpoint`] convert into:
//! a socket is given `"tcp://127.0.0.1:5555"`, `"ipc:///tmp/app.sock"` and the like
//! directly, and a string that does not parse fails `bind` or `connect` with
//! [`TransportError::Endpoint`]. The addresses it reports ([`AnyAddr`]) are written in the
//! endpoint form, and a client dials them as they are.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
#[cfg(feature = "ipc")]
use tokio::net::UnixStream;

use crate::endpoint::{Endpoint, EndpointError, Scheme};
#[cfg(feature = "ipc")]
use crate::ipc::{IpcAddr, IpcListener};
#[cfg(feature = "quic")]
use crate::quic::{QuicIncoming, QuicListener, QuicStream};
use crate::tcp::TcpAcceptor;
#[cfg(feature = "tls")]
use crate::tls::{ClientConfig, ServerConfig, TlsIo};
use crate::transport::{Connected, Listener, Transport, TransportError};
#[cfg(feature = "ipc")]
use crate::Ipc;
#[cfg(feature = "quic")]
use crate::Quic;
use crate::Tcp;
#[cfg(feature = "tls")]
use crate::Tls;

/// A transport for every scheme: each endpoint it binds or dials picks TCP, TLS, QUIC or
/// IPC by its scheme (`tcp://`, `tls://`, `quic://`, `ipc://`).
///
/// TCP and IPC need no configuration. QUIC starts as [`Quic::default`], which encrypts but
/// does **not** authenticate the server; give it real certificates with
/// [`with_quic`](Self::with_quic). TLS needs certificates: without
/// [`with_tls`](Self::with_tls) (or [`with_certificates`](Self::with_certificates), for
/// both), a `tls://` endpoint fails with [`TransportError::Config`].
///
/// # Example
///
/// A server and a client over whatever endpoint the program was given:
///
/// ```
/// use msg::transport::{Listener, Transport};
/// use msg::AnyTransport;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // From a flag or a configuration file; port 0 binds a free port.
/// let endpoint = "tcp://127.0.0.1:0";
/// let transport = AnyTransport::new();
/// let listener = transport.bind(endpoint.into()).await?;
/// let addr = listener.local_addr()?;
/// assert!(addr.to_string().starts_with("tcp://127.0.0.1:"));
///
/// let conn = transport.connect(addr.clone().into()).await?;
/// assert_eq!(conn.peer, addr);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct AnyTransport {
    tcp: Tcp,
    #[cfg(feature = "ipc")]
    ipc: Ipc,
    #[cfg(feature = "quic")]
    quic: Quic,
    #[cfg(feature = "tls")]
    tls: Option<Tls>,
}

impl AnyTransport {
    /// TCP, IPC and QUIC with their defaults, and no TLS.
    pub fn new() -> Self {
        Self::default()
    }

    #[cfg(feature = "tls")]
    /// Serves `tls://` endpoints with `tls`: its server side binds, its client side dials.
    pub fn with_tls(mut self, tls: Tls) -> Self {
        self.tls = Some(tls);
        self
    }

    #[cfg(feature = "quic")]
    /// Serves `quic://` endpoints with `quic` instead of [`Quic::default`].
    pub fn with_quic(mut self, quic: Quic) -> Self {
        self.quic = quic;
        self
    }

    /// Serves `tls://` and `quic://` endpoints with one set of certificates, as a program
    /// reads them from its configuration: `server` (if this side binds) presents its chain,
    /// `client` verifies that every server dialed presents a certificate for `server_name`
    /// (the name given here, not the host of the endpoint dialed). Build both with the
    /// [`tls`](crate::tls) helpers, from PEM.
    ///
    /// # Example
    ///
    /// ```
    /// # #[cfg(feature = "test-util")] {
    /// use msg::tls::{client_config, server_config, TestPki};
    /// use msg::AnyTransport;
    ///
    /// // A throwaway CA (the `test-util` feature); real deployments load their PEM files.
    /// let pki = TestPki::generate(&["localhost"])?;
    /// let server = server_config(pki.server_cert_pem.as_bytes(), pki.server_key_pem.as_bytes())?;
    /// let client = client_config(pki.ca_pem.as_bytes())?;
    /// let transport = AnyTransport::new().with_certificates(Some(server), client, "localhost")?;
    /// # }
    /// # Ok::<(), msg::transport::TransportError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TransportError::Certificate`] if `server_name` is not a DNS name or IP address, or
    /// a configuration cannot do TLS 1.3, which QUIC requires.
    #[cfg(feature = "tls")]
    pub fn with_certificates(
        self,
        server: Option<ServerConfig>,
        client: ClientConfig,
        server_name: &str,
    ) -> Result<Self, TransportError> {
        let tls = match &server {
            Some(server) => Tls::server(server.clone()).with_client(client.clone(), server_name)?,
            None => Tls::client(client.clone(), server_name)?,
        };
        #[cfg(feature = "quic")]
        let quic = Quic::with_tls(server, client, server_name)?;
        let this = self.with_tls(tls);
        #[cfg(feature = "quic")]
        let this = this.with_quic(quic);
        Ok(this)
    }

    /// The transport a program's configuration describes: TCP, IPC and QUIC always, and
    /// TLS (with QUIC on the same certificates) when `config` names a CA; see
    /// [`TransportConfig`]. The files are read here, once.
    ///
    /// # Example
    ///
    /// ```
    /// use msg::any::TransportConfig;
    /// use msg::{AnyTransport, ReqSocket};
    ///
    /// // Read from a file or flags; no certificates: tcp://, ipc:// and quic:// endpoints.
    /// let config = TransportConfig::default();
    /// let req = ReqSocket::new(AnyTransport::from_config(&config)?);
    /// # let _ = req;
    /// # Ok::<(), msg::transport::TransportError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`TransportError::Certificate`] if a file cannot be read or parsed, and
    /// [`TransportError::Config`] for a configuration that is incomplete: a certificate
    /// without its key (or the other way round), or certificates with no CA.
    pub fn from_config(config: &TransportConfig) -> Result<Self, TransportError> {
        #[cfg(feature = "tls")]
        return Self::from_pem_files(config);
        #[cfg(not(feature = "tls"))]
        match config.cert.is_some() || config.key.is_some() || config.ca.is_some() {
            true => Err(left_out(Scheme::Tls)),
            false => Ok(Self::new()),
        }
    }

    /// [`from_config`](Self::from_config) with TLS built in: reads the PEM files named.
    #[cfg(feature = "tls")]
    fn from_pem_files(config: &TransportConfig) -> Result<Self, TransportError> {
        let incomplete = |reason: &str| TransportError::Config {
            reason: reason.into(),
        };
        let server = match (&config.cert, &config.key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(
                &crate::tls::read_pem(cert)?,
                &crate::tls::read_pem(key)?,
            )?),
            (None, None) => None,
            _ => {
                return Err(incomplete(
                    "a certificate needs its key, and a key its certificate",
                ))
            }
        };
        let Some(ca) = &config.ca else {
            if server.is_some() {
                return Err(incomplete(
                    "certificates need a CA to verify the servers this side dials: set `ca`",
                ));
            }
            return Ok(Self::new());
        };
        let client = crate::tls::client_config(&crate::tls::read_pem(ca)?)?;
        let name = config.server_name.as_deref().unwrap_or("localhost");
        Self::new().with_certificates(server, client, name)
    }

    #[cfg(feature = "tls")]
    fn tls(&self) -> Result<&Tls, TransportError> {
        self.tls.as_ref().ok_or_else(|| TransportError::Config {
            reason: "a tls:// endpoint needs certificates: build the transport with \
                     AnyTransport::with_certificates (or with_tls)"
                .into(),
        })
    }
}

/// What a program's configuration says about its transport, for
/// [`AnyTransport::from_config`]: PEM files, as a configuration file or flags name them.
/// All empty (the default), the transport serves `tcp://`, `ipc://` and `quic://` (QUIC
/// with a self-signed certificate that clients do not verify).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportConfig {
    /// This side's certificate chain (PEM), presented when it binds `tls://` or `quic://`.
    pub cert: Option<std::path::PathBuf>,
    /// The private key of `cert` (PEM).
    pub key: Option<std::path::PathBuf>,
    /// The roots (PEM) that servers dialed over `tls://` or `quic://` must chain to.
    pub ca: Option<std::path::PathBuf>,
    /// The name servers' certificates must carry. Default: `localhost`.
    pub server_name: Option<String>,
}

/// What [`AnyTransport`] binds and dials: an [`Endpoint`], or a string parsed into one.
///
/// A string that does not parse is kept with its error, which `bind` or `connect` returns
/// as [`TransportError::Endpoint`]: `From<&str>` cannot fail, and sockets take their
/// targets as `impl Into<Target>`. Parse the string first (`"..".parse::<Endpoint>()`) to
/// meet the error sooner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnyTarget(Result<Endpoint, EndpointError>);

impl AnyTarget {
    /// The endpoint, or why the string given does not parse.
    ///
    /// # Errors
    ///
    /// The [`EndpointError`] of the string given.
    pub fn endpoint(&self) -> Result<&Endpoint, &EndpointError> {
        self.0.as_ref()
    }
}

impl From<Endpoint> for AnyTarget {
    fn from(endpoint: Endpoint) -> Self {
        AnyTarget(Ok(endpoint))
    }
}

impl From<&Endpoint> for AnyTarget {
    fn from(endpoint: &Endpoint) -> Self {
        AnyTarget(Ok(endpoint.clone()))
    }
}

impl From<&str> for AnyTarget {
    fn from(endpoint: &str) -> Self {
        AnyTarget(endpoint.parse())
    }
}

impl From<String> for AnyTarget {
    fn from(endpoint: String) -> Self {
        AnyTarget(endpoint.parse())
    }
}

impl From<&String> for AnyTarget {
    fn from(endpoint: &String) -> Self {
        AnyTarget(endpoint.parse())
    }
}

impl From<AnyAddr> for AnyTarget {
    fn from(addr: AnyAddr) -> Self {
        AnyTarget(Ok(addr.into()))
    }
}

impl From<&AnyAddr> for AnyTarget {
    fn from(addr: &AnyAddr) -> Self {
        AnyTarget(Ok(addr.into()))
    }
}

/// An address [`AnyTransport`] reports, for a bound listener or a peer, tagged with its
/// transport. `Display` writes it in the endpoint form (`tcp://127.0.0.1:5555`,
/// `ipc:///tmp/app.sock`); an accepted IPC peer adds its number (`ipc:///tmp/app.sock#3`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnyAddr {
    /// Over TCP.
    Tcp(SocketAddr),
    /// Over TLS.
    Tls(SocketAddr),
    /// Over QUIC.
    Quic(SocketAddr),
    /// Over a Unix socket.
    #[cfg(feature = "ipc")]
    Ipc(IpcAddr),
}

impl fmt::Display for AnyAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnyAddr::Tcp(addr) => write!(f, "tcp://{addr}"),
            AnyAddr::Tls(addr) => write!(f, "tls://{addr}"),
            AnyAddr::Quic(addr) => write!(f, "quic://{addr}"),
            #[cfg(feature = "ipc")]
            AnyAddr::Ipc(addr) => write!(f, "ipc://{addr}"),
        }
    }
}

impl From<AnyAddr> for Endpoint {
    /// The endpoint to dial to reach the address (an IPC peer's number dropped).
    fn from(addr: AnyAddr) -> Self {
        match addr {
            AnyAddr::Tcp(addr) => Endpoint::Tcp(addr.into()),
            AnyAddr::Tls(addr) => Endpoint::Tls(addr.into()),
            AnyAddr::Quic(addr) => Endpoint::Quic(addr.into()),
            #[cfg(feature = "ipc")]
            AnyAddr::Ipc(addr) => Endpoint::Ipc(addr.into()),
        }
    }
}

impl From<&AnyAddr> for Endpoint {
    fn from(addr: &AnyAddr) -> Self {
        addr.clone().into()
    }
}

/// A connection made or accepted by [`AnyTransport`]: the stream of the transport its
/// endpoint named. Reads and writes go to that stream.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyIo {
    /// A TCP stream.
    Tcp(TcpStream),
    /// A TLS stream (boxed: rustls's state is large).
    #[cfg(feature = "tls")]
    Tls(Box<TlsIo>),
    /// A QUIC connection's stream.
    #[cfg(feature = "quic")]
    Quic(QuicStream),
    /// A Unix socket.
    #[cfg(feature = "ipc")]
    Ipc(UnixStream),
}

/// Calls `$method` on the stream inside an [`AnyIo`], whichever it is.
macro_rules! delegate {
    ($io:expr, $method:ident($($arg:expr),*)) => {
        match $io.get_mut() {
            AnyIo::Tcp(io) => Pin::new(io).$method($($arg),*),
            #[cfg(feature = "tls")]
            AnyIo::Tls(io) => Pin::new(&mut **io).$method($($arg),*),
            #[cfg(feature = "quic")]
            AnyIo::Quic(io) => Pin::new(io).$method($($arg),*),
            #[cfg(feature = "ipc")]
            AnyIo::Ipc(io) => Pin::new(io).$method($($arg),*),
        }
    };
}

impl AsyncRead for AnyIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, poll_read(cx, buf))
    }
}

impl AsyncWrite for AnyIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            AnyIo::Tcp(io) => io.is_write_vectored(),
            #[cfg(feature = "tls")]
            AnyIo::Tls(io) => io.is_write_vectored(),
            #[cfg(feature = "quic")]
            AnyIo::Quic(io) => io.is_write_vectored(),
            #[cfg(feature = "ipc")]
            AnyIo::Ipc(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, poll_shutdown(cx))
    }
}

/// A listener bound by [`AnyTransport`]: the listener of the transport its endpoint named.
#[derive(Debug)]
#[non_exhaustive]
pub enum AnyListener {
    /// Accepts TCP connections.
    Tcp(TcpAcceptor),
    /// Accepts TCP connections that [`AnyTransport`]'s `accept` runs the TLS handshake on.
    #[cfg(feature = "tls")]
    Tls(TcpAcceptor),
    /// Accepts QUIC connections.
    #[cfg(feature = "quic")]
    Quic(QuicListener),
    /// Accepts Unix socket connections.
    #[cfg(feature = "ipc")]
    Ipc(IpcListener),
}

/// A connection an [`AnyListener`] accepted, before [`AnyTransport`]'s `accept` sets it up.
#[derive(Debug)]
pub struct AnyConn(Accepted);

#[derive(Debug)]
enum Accepted {
    Tcp(Connected<TcpStream, SocketAddr>),
    #[cfg(feature = "tls")]
    Tls(Connected<TcpStream, SocketAddr>),
    /// Boxed: quinn's incoming connection is large, and lives only until `accept`.
    #[cfg(feature = "quic")]
    Quic(Box<Connected<QuicIncoming, SocketAddr>>),
    #[cfg(feature = "ipc")]
    Ipc(Connected<UnixStream, IpcAddr>),
}

impl Listener for AnyListener {
    type Conn = AnyConn;
    type Addr = AnyAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Connected<AnyConn, AnyAddr>>> {
        /// Tags what the inner listener accepted with its transport.
        fn tag<C, A: Clone>(
            conn: Connected<C, A>,
            addr: fn(A) -> AnyAddr,
            accepted: fn(Connected<C, A>) -> Accepted,
        ) -> Connected<AnyConn, AnyAddr> {
            let peer = addr(conn.peer.clone());
            Connected {
                io: AnyConn(accepted(conn)),
                peer,
            }
        }
        Poll::Ready(Ok(match self {
            AnyListener::Tcp(l) => tag(ready!(l.poll_accept(cx))?, AnyAddr::Tcp, Accepted::Tcp),
            #[cfg(feature = "tls")]
            AnyListener::Tls(l) => tag(ready!(l.poll_accept(cx))?, AnyAddr::Tls, Accepted::Tls),
            #[cfg(feature = "quic")]
            AnyListener::Quic(l) => tag(ready!(l.poll_accept(cx))?, AnyAddr::Quic, |conn| {
                Accepted::Quic(Box::new(conn))
            }),
            #[cfg(feature = "ipc")]
            AnyListener::Ipc(l) => tag(ready!(l.poll_accept(cx))?, AnyAddr::Ipc, Accepted::Ipc),
        }))
    }

    fn local_addr(&self) -> io::Result<AnyAddr> {
        Ok(match self {
            AnyListener::Tcp(l) => AnyAddr::Tcp(l.local_addr()?),
            #[cfg(feature = "tls")]
            AnyListener::Tls(l) => AnyAddr::Tls(l.local_addr()?),
            #[cfg(feature = "quic")]
            AnyListener::Quic(l) => AnyAddr::Quic(l.local_addr()?),
            #[cfg(feature = "ipc")]
            AnyListener::Ipc(l) => AnyAddr::Ipc(l.local_addr()?),
        })
    }
}

/// Gives an inner transport's connection [`AnyTransport`]'s types.
fn tagged<Io, A>(
    conn: Connected<Io, A>,
    io: impl FnOnce(Io) -> AnyIo,
    addr: impl FnOnce(A) -> AnyAddr,
) -> Connected<AnyIo, AnyAddr> {
    Connected {
        io: io(conn.io),
        peer: addr(conn.peer),
    }
}

#[cfg(feature = "tls")]
fn tls_io(io: TlsIo) -> AnyIo {
    AnyIo::Tls(Box::new(io))
}

impl Transport for AnyTransport {
    type Target = AnyTarget;
    type Addr = AnyAddr;
    type Io = AnyIo;
    type Listener = AnyListener;

    /// Binds the listener of the transport the endpoint names.
    async fn bind(&self, target: AnyTarget) -> Result<AnyListener, TransportError> {
        Ok(match target.0? {
            Endpoint::Tcp(target) => AnyListener::Tcp(self.tcp.bind(target).await?),
            #[cfg(feature = "tls")]
            Endpoint::Tls(target) => AnyListener::Tls(self.tls()?.bind(target).await?),
            #[cfg(feature = "quic")]
            Endpoint::Quic(target) => AnyListener::Quic(self.quic.bind(target).await?),
            #[cfg(feature = "ipc")]
            Endpoint::Ipc(path) => AnyListener::Ipc(self.ipc.bind(path).await?),
            #[allow(unreachable_patterns)]
            other => return Err(left_out(other.scheme())),
        })
    }

    /// Dials with the transport the endpoint names.
    async fn connect(
        &self,
        target: AnyTarget,
    ) -> Result<Connected<AnyIo, AnyAddr>, TransportError> {
        Ok(match target.0? {
            Endpoint::Tcp(target) => {
                tagged(self.tcp.connect(target).await?, AnyIo::Tcp, AnyAddr::Tcp)
            }
            #[cfg(feature = "tls")]
            Endpoint::Tls(target) => {
                tagged(self.tls()?.connect(target).await?, tls_io, AnyAddr::Tls)
            }
            #[cfg(feature = "quic")]
            Endpoint::Quic(target) => {
                tagged(self.quic.connect(target).await?, AnyIo::Quic, AnyAddr::Quic)
            }
            #[cfg(feature = "ipc")]
            Endpoint::Ipc(path) => tagged(self.ipc.connect(path).await?, AnyIo::Ipc, AnyAddr::Ipc),
            #[allow(unreachable_patterns)]
            other => return Err(left_out(other.scheme())),
        })
    }

    /// Runs the setup of the transport whose listener accepted the connection.
    async fn accept(
        &self,
        conn: Connected<AnyConn, AnyAddr>,
    ) -> Result<Connected<AnyIo, AnyAddr>, TransportError> {
        Ok(match conn.io.0 {
            Accepted::Tcp(conn) => tagged(self.tcp.accept(conn).await?, AnyIo::Tcp, AnyAddr::Tcp),
            #[cfg(feature = "tls")]
            Accepted::Tls(conn) => tagged(self.tls()?.accept(conn).await?, tls_io, AnyAddr::Tls),
            #[cfg(feature = "quic")]
            Accepted::Quic(conn) => {
                tagged(self.quic.accept(*conn).await?, AnyIo::Quic, AnyAddr::Quic)
            }
            #[cfg(feature = "ipc")]
            Accepted::Ipc(conn) => tagged(self.ipc.accept(conn).await?, AnyIo::Ipc, AnyAddr::Ipc),
        })
    }

    /// Passes the hint on to every transport it may dial or bind with.
    fn set_traffic(&mut self, traffic: crate::Traffic) {
        self.tcp.set_traffic(traffic);
        #[cfg(feature = "ipc")]
        self.ipc.set_traffic(traffic);
        #[cfg(feature = "quic")]
        self.quic.set_traffic(traffic);
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.set_traffic(traffic);
        }
    }
}

crate::transport::connector_service!(AnyTransport);

/// The error for an endpoint whose transport this build of msg leaves out: its Cargo
/// feature is off.
fn left_out(scheme: Scheme) -> TransportError {
    TransportError::Config {
        reason: format!(
            "{scheme}:// endpoints need msg's `{scheme}` Cargo feature, which this build leaves out"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_endpoints_that_dial_them() {
        let addr: SocketAddr = "[::1]:4433".parse().unwrap();
        for any in [AnyAddr::Tcp(addr), AnyAddr::Tls(addr), AnyAddr::Quic(addr)] {
            let endpoint: Endpoint = any.to_string().parse().unwrap();
            assert_eq!(endpoint, Endpoint::from(&any), "{any}");
        }
        let listener = AnyAddr::Ipc(IpcAddr::new("/tmp/app.sock"));
        assert_eq!(listener.to_string(), "ipc:///tmp/app.sock");
        assert_eq!(
            listener.to_string().parse::<Endpoint>().unwrap(),
            Endpoint::from(&listener)
        );
        // An accepted IPC peer is told apart by its number, and dialing it dials the path.
        let peer = AnyAddr::Ipc(IpcAddr::new("/tmp/app.sock").peer(3));
        assert_eq!(peer.to_string(), "ipc:///tmp/app.sock#3");
        assert_eq!(Endpoint::from(peer), Endpoint::Ipc("/tmp/app.sock".into()));
    }

    #[tokio::test]
    async fn a_target_that_does_not_parse_fails_bind_and_connect_with_its_error() {
        let transport = AnyTransport::new();
        let target = AnyTarget::from("tcp://localhost");
        assert!(matches!(
            target.endpoint(),
            Err(EndpointError::MissingPort { .. })
        ));
        for outcome in [
            transport.bind(target.clone()).await.map(drop),
            transport.connect(target).await.map(drop),
        ] {
            match outcome {
                Err(e @ TransportError::Endpoint(EndpointError::MissingPort { .. })) => {
                    assert!(e.is_permanent());
                    assert!(e.to_string().contains("tcp://localhost"), "{e}");
                }
                other => panic!("expected an endpoint error, got {other:?}"),
            }
        }
    }
}
