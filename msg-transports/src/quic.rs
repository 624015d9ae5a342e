//! QUIC: [`Quic`], on quinn and rustls (ring). Each connection carries one bidirectional
//! stream, on which the sockets speak the same wire protocol as over TCP.
//!
//! [`Quic::default`] needs no configuration, as the book promises: the server makes itself
//! a self-signed certificate, and the client accepts any certificate. **That default
//! encrypts but does not authenticate the server**: anyone on the path can pretend to be it.
//! For production, build the transport with [`Quic::with_tls`] from real certificates
//! (see [`tls`](crate::tls)), which verifies the server and can require client certificates.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{Connection, Endpoint, RecvStream, SendStream, TransportConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::tcp::Endpoint as Target;
use crate::tls::CertificateRejected;
use crate::transport::{Connected, Listener, Traffic, Transport, TransportError};

/// The largest UDP payload a connection sends or accepts, where the path carries it.
///
/// quinn starts at 1,200 bytes and finds the path's limit by probing; its default ceiling,
/// 1,452, fits Ethernet. Loopback and jumbo-frame links carry far more, and each datagram
/// costs a system call's share, an encryption and a trip through the kernel's UDP path
/// whatever its size: at 1 KiB requests, 6,500-byte datagrams send a quarter as many
/// datagrams as 1,452-byte ones. A path that carries less costs only the lost probes.
///
/// A segmentation-offload send of many datagrams is one UDP send to the kernel, which
/// refuses one of more than [`MAX_SEND`] bytes; [`Capped`] keeps every batch under it, and
/// under [`QuicOptions::send_batch`] datagrams.
const MAX_DATAGRAM: u16 = 6_500;

/// The largest UDP payload the kernel takes in one send (65,535 less the IPv4 and UDP
/// headers), offloaded or not.
const MAX_SEND: usize = 65_507;

/// The UDP receive buffer asked for, as a limit on what may wait unread (the system caps it
/// at `net.core.rmem_max`). The default, about 208 KiB, overflows under a burst of full
/// windows both ways, and every datagram dropped there is a loss the sender backs off for.
const RECV_BUFFER: usize = 2 * 1024 * 1024;

/// A UDP endpoint bound to `addr` that accepts datagrams up to [`MAX_DATAGRAM`], with
/// `server` to accept connections, on the runtime quinn finds (tokio's).
///
/// The socket is bound as quinn's own constructors bind it: a client's IPv6 socket is made
/// dual-stack where the platform allows, so that it reaches IPv4-mapped addresses too.
fn udp_endpoint(
    server: Option<quinn::ServerConfig>,
    addr: SocketAddr,
    send_batch: usize,
) -> io::Result<Endpoint> {
    let mut config = quinn::EndpointConfig::default();
    config
        .max_udp_payload_size(MAX_DATAGRAM)
        .map_err(io::Error::other)?;
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if addr.is_ipv6() && server.is_none() {
        if let Err(e) = socket.set_only_v6(false) {
            tracing::debug!(error = %e, "this IPv6 socket reaches IPv6 addresses only");
        }
    }
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER) {
        tracing::debug!(error = %e, "the UDP receive buffer keeps the system's size");
    }
    socket.bind(&addr.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| io::Error::other("QUIC needs a tokio runtime, and none is running"))?;
    let socket = Arc::new(Capped {
        socket: runtime.wrap_udp_socket(socket.into())?,
        most: batch_cap(send_batch),
    });
    Endpoint::new_with_abstract_socket(config, server, socket, runtime)
}

/// The most datagrams per send for [`QuicOptions::send_batch`] `asked`: at least 1, and no
/// more than [`MAX_SEND`] holds at [`MAX_DATAGRAM`] each.
fn batch_cap(asked: usize) -> usize {
    asked.clamp(1, MAX_SEND / usize::from(MAX_DATAGRAM))
}

/// A UDP socket that hands the kernel at most `most` datagrams in one offloaded send, and
/// never more than [`MAX_SEND`] bytes, whatever number per send quinn asks for: a larger
/// send fails, and every batch that fails counts as lost, which collapses the connection's
/// sending rate.
#[derive(Debug)]
struct Capped {
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    most: usize,
}

impl quinn::AsyncUdpSocket for Capped {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.socket.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> io::Result<()> {
        self.socket.try_send(transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [io::IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.socket.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.socket.max_transmit_segments().min(self.most)
    }

    fn max_receive_segments(&self) -> usize {
        self.socket.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.socket.may_fragment()
    }
}

/// The protocol name both sides announce in the TLS handshake.
const ALPN: &[u8] = b"msg/1";

/// Connection-level settings of [`Quic`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicOptions {
    /// How often an idle connection sends a keep-alive. Default: 10 s, well inside the idle
    /// timeout and the 30 s that NAT bindings commonly last.
    pub keep_alive: Duration,
    /// How long a connection may stay silent before it is closed. Default: 30 s, as
    /// RFC 9308 suggests.
    pub idle_timeout: Duration,
    /// The most datagrams sent to the kernel in one segmentation-offload send, where the
    /// system has it. Default: `None`, for the socket to choose: 10 for a publisher's
    /// connections ([`Traffic::Send`]), 2 for every other socket's.
    ///
    /// Fewer per send cost more system calls; more per send hold the first datagram back
    /// until the whole batch is encrypted, and a peer on another core waits for all of
    /// them. On loopback, 2 keeps request/reply flowing both ways (1 KiB requests, 64 in
    /// flight: 1.6-1.75x the rate of 10 per send) at the cost of a third of one-way
    /// streaming, which 10 serves best (see `BENCHMARKS.md`). At least 1; at most what fits
    /// in one UDP send.
    pub send_batch: Option<usize>,
}

/// The send batch of a socket that sends and waits in turn: see [`QuicOptions::send_batch`].
const EXCHANGE_BATCH: usize = 2;

/// The send batch of a socket that streams one way: see [`QuicOptions::send_batch`].
const ONE_WAY_BATCH: usize = 10;

impl Default for QuicOptions {
    fn default() -> Self {
        QuicOptions {
            keep_alive: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            send_batch: None,
        }
    }
}

impl QuicOptions {
    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval;
        self
    }

    /// Sets [`idle_timeout`](Self::idle_timeout).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`send_batch`](Self::send_batch) for every socket, whatever its traffic; at
    /// least 1.
    pub fn send_batch(mut self, datagrams: usize) -> Self {
        self.send_batch = Some(datagrams.max(1));
        self
    }

    fn transport(&self) -> Result<Arc<TransportConfig>, TransportError> {
        let mut transport = TransportConfig::default();
        transport.keep_alive_interval(Some(self.keep_alive));
        let idle = quinn::IdleTimeout::try_from(self.idle_timeout).map_err(|e| {
            TransportError::Config {
                reason: format!("bad idle timeout: {e}"),
            }
        })?;
        transport.max_idle_timeout(Some(idle));
        let mut discovery = quinn::MtuDiscoveryConfig::default();
        discovery.upper_bound(MAX_DATAGRAM);
        transport.mtu_discovery_config(Some(discovery));
        Ok(Arc::new(transport))
    }
}

fn certificate_error(what: &str, e: impl fmt::Display) -> TransportError {
    TransportError::Certificate {
        reason: format!("{what}: {e}"),
    }
}

#[derive(Clone)]
enum ServerSide {
    /// Make a self-signed certificate at bind time.
    SelfSigned,
    Configured(Arc<rustls::ServerConfig>),
}

#[derive(Clone)]
enum ClientSide {
    /// Accept any certificate: encrypted, not authenticated.
    AcceptAny,
    Configured(Arc<rustls::ClientConfig>, String),
}

/// The QUIC transport.
///
/// # Example
///
/// ```
/// use msg::transport::Listener;
/// use msg::{Quic, Transport};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let listener = Quic::default().bind("127.0.0.1:0".into()).await?;
/// let addr = listener.local_addr()?;
/// assert_ne!(addr.port(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Quic {
    server: ServerSide,
    client: ClientSide,
    options: QuicOptions,
    /// What the owning socket said of its traffic; it picks the send batch when the
    /// options leave it open.
    traffic: Traffic,
}

impl Default for Quic {
    /// Self-signed on the server, any certificate accepted on the client: encrypted, but
    /// the server is **not** authenticated. See [`Quic::with_tls`] for production.
    fn default() -> Self {
        Quic {
            server: ServerSide::SelfSigned,
            client: ClientSide::AcceptAny,
            options: QuicOptions::default(),
            traffic: Traffic::Exchange,
        }
    }
}

impl fmt::Debug for Quic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quic")
            .field(
                "self_signed",
                &matches!(self.server, ServerSide::SelfSigned),
            )
            .field(
                "verifies_server",
                &matches!(self.client, ClientSide::Configured(..)),
            )
            .field("options", &self.options)
            .field("traffic", &self.traffic)
            .finish()
    }
}

impl Quic {
    /// The default transport; see [`Quic::default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A transport with real certificates: `server` (if this side binds) presents its chain
    /// and may require client certificates; `client` (for dialing) verifies that the server
    /// presents a certificate for `server_name`. Build both with [`tls`](crate::tls)'s
    /// helpers; ALPN is set here.
    ///
    /// # Errors
    ///
    /// [`TransportError::Certificate`] if a configuration cannot do TLS 1.3, which QUIC
    /// requires.
    pub fn with_tls(
        server: Option<rustls::ServerConfig>,
        client: rustls::ClientConfig,
        server_name: &str,
    ) -> Result<Self, TransportError> {
        let server = match server {
            Some(mut config) => {
                config.alpn_protocols = vec![ALPN.to_vec()];
                QuicServerConfig::try_from(config.clone())
                    .map_err(|e| certificate_error("server configuration cannot do QUIC", e))?;
                ServerSide::Configured(Arc::new(config))
            }
            None => ServerSide::SelfSigned,
        };
        let mut client = client;
        client.alpn_protocols = vec![ALPN.to_vec()];
        QuicClientConfig::try_from(client.clone())
            .map_err(|e| certificate_error("client configuration cannot do QUIC", e))?;
        Ok(Quic {
            server,
            client: ClientSide::Configured(Arc::new(client), server_name.to_owned()),
            ..Quic::default()
        })
    }

    /// Sets the connection-level options.
    pub fn options(mut self, options: QuicOptions) -> Self {
        self.options = options;
        self
    }

    /// The most datagrams per send for this transport's endpoints: the options' choice, or
    /// else the one for the owning socket's traffic.
    fn send_batch(&self) -> usize {
        self.options.send_batch.unwrap_or(match self.traffic {
            Traffic::Send => ONE_WAY_BATCH,
            Traffic::Exchange | Traffic::Receive => EXCHANGE_BATCH,
        })
    }

    fn server_config(&self) -> Result<quinn::ServerConfig, TransportError> {
        let rustls_config = match &self.server {
            ServerSide::Configured(config) => config.clone(),
            ServerSide::SelfSigned => {
                let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                    .map_err(|e| certificate_error("self-signed certificate", e))?;
                let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                    certified.signing_key.serialize_der(),
                ));
                let mut config =
                    rustls::ServerConfig::builder_with_provider(crate::tls::provider())
                        .with_protocol_versions(&[&rustls::version::TLS13])
                        .map_err(|e| certificate_error("server configuration", e))?
                        .with_no_client_auth()
                        .with_single_cert(vec![certified.cert.der().clone()], key)
                        .map_err(|e| certificate_error("self-signed certificate", e))?;
                config.alpn_protocols = vec![ALPN.to_vec()];
                Arc::new(config)
            }
        };
        let crypto = QuicServerConfig::try_from(rustls_config)
            .map_err(|e| certificate_error("server configuration cannot do QUIC", e))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(self.options.transport()?);
        Ok(config)
    }

    fn client_config(&self) -> Result<(quinn::ClientConfig, String), TransportError> {
        let (rustls_config, name) = match &self.client {
            ClientSide::Configured(config, name) => (config.clone(), name.clone()),
            ClientSide::AcceptAny => {
                let provider = crate::tls::provider();
                let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| certificate_error("client configuration", e))?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider)))
                    .with_no_client_auth();
                config.alpn_protocols = vec![ALPN.to_vec()];
                (Arc::new(config), "localhost".to_owned())
            }
        };
        let crypto = QuicClientConfig::try_from(rustls_config)
            .map_err(|e| certificate_error("client configuration cannot do QUIC", e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(self.options.transport()?);
        Ok((config, name))
    }
}

/// Accepts any server certificate, but still checks that the server holds its key.
#[derive(Debug)]
struct AcceptAnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How long a dropped stream may take to deliver what it still has buffered before its
/// connection is closed.
const LINGER: Duration = Duration::from_secs(5);

/// One QUIC connection's bidirectional stream, as one byte stream. Dropping it finishes the
/// stream and keeps the connection open until the peer has everything that was written
/// (at most 5 s), so that a last reply is never cut off.
pub struct QuicStream {
    /// Always `Some` until the stream is dropped.
    send: Option<SendStream>,
    recv: RecvStream,
    connection: Connection,
    /// A client's own endpoint, kept alive as long as its connection.
    _endpoint: Option<Endpoint>,
}

impl fmt::Debug for QuicStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicStream")
            .field("peer", &self.connection.remote_address())
            .finish_non_exhaustive()
    }
}

impl QuicStream {
    /// The QUIC connection the stream belongs to.
    pub fn connection(&self) -> &Connection {
        &self.connection
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl QuicStream {
    fn send(&mut self) -> io::Result<&mut SendStream> {
        self.send
            .as_mut()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "stream dropped"))
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(self.send()?), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(self.send()?), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(self.send()?), cx)
    }
}

impl Drop for QuicStream {
    fn drop(&mut self) {
        let Some(mut send) = self.send.take() else {
            return;
        };
        let _ = send.finish();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let connection = self.connection.clone();
        let endpoint = self._endpoint.take();
        runtime.spawn(async move {
            let _ = tokio::time::timeout(LINGER, send.stopped()).await;
            drop(connection);
            drop(endpoint);
        });
    }
}

type NextIncoming = Pin<Box<dyn Future<Output = Option<quinn::Incoming>> + Send>>;

/// A bound QUIC endpoint accepting connections. What it yields is a connection still
/// handshaking; [`Quic`]'s [`accept`](Transport::accept) finishes it.
pub struct QuicListener {
    endpoint: Endpoint,
    next: Option<NextIncoming>,
}

impl fmt::Debug for QuicListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuicListener")
            .field("local_addr", &self.endpoint.local_addr().ok())
            .finish()
    }
}

/// A QUIC connection attempt the listener has accepted, its handshake not yet run.
pub struct QuicIncoming(quinn::Incoming);

impl fmt::Debug for QuicIncoming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QuicIncoming")
            .field(&self.0.remote_address())
            .finish()
    }
}

impl Listener for QuicListener {
    type Conn = QuicIncoming;
    type Addr = SocketAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Connected<QuicIncoming, SocketAddr>>> {
        let next = self.next.get_or_insert_with(|| {
            let endpoint = self.endpoint.clone();
            Box::pin(async move { endpoint.accept().await })
        });
        let incoming = std::task::ready!(next.as_mut().poll(cx));
        self.next = None;
        Poll::Ready(match incoming {
            Some(incoming) => {
                let peer = incoming.remote_address();
                Ok(Connected {
                    io: QuicIncoming(incoming),
                    peer,
                })
            }
            None => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "QUIC endpoint closed",
            )),
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }
}

impl Drop for QuicListener {
    /// Stops accepting; connections already made carry on, as over TCP.
    fn drop(&mut self) {
        self.endpoint.set_server_config(None);
    }
}

impl Transport for Quic {
    type Target = Target;
    type Addr = SocketAddr;
    type Io = QuicStream;
    type Listener = QuicListener;

    async fn bind(&self, target: Target) -> Result<QuicListener, TransportError> {
        let config = self.server_config()?;
        let endpoint = target
            .bind_first(|addr| {
                std::future::ready(udp_endpoint(Some(config.clone()), addr, self.send_batch()))
            })
            .await?;
        Ok(QuicListener {
            endpoint,
            next: None,
        })
    }

    /// Runs the connection's handshake and waits for the client's stream.
    async fn accept(
        &self,
        conn: Connected<QuicIncoming, SocketAddr>,
    ) -> Result<Connected<QuicStream, SocketAddr>, TransportError> {
        let Connected { io, peer } = conn;
        let failed = |e: &dyn fmt::Display| TransportError::TlsHandshake {
            addr: peer.to_string(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        };
        let connection = io.0.await.map_err(|e| failed(&e))?;
        let (send, recv) = connection.accept_bi().await.map_err(|e| failed(&e))?;
        Ok(Connected {
            io: QuicStream {
                send: Some(send),
                recv,
                connection,
                _endpoint: None,
            },
            peer,
        })
    }

    fn connect(
        &self,
        target: Target,
    ) -> impl Future<Output = Result<Connected<QuicStream, SocketAddr>, TransportError>> + Send
    {
        let this = self.clone();
        async move {
            let (config, name) = this.client_config()?;
            let addr = *target
                .resolve()
                .await?
                .first()
                .ok_or(TransportError::NoAddress {
                    target: target.to_string(),
                })?;
            let connect_error = |e: &dyn fmt::Display| TransportError::Connect {
                addr: addr.to_string(),
                source: io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string()),
            };
            let local: SocketAddr = if addr.is_ipv6() {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let endpoint = udp_endpoint(None, local, this.send_batch()).map_err(|source| {
                TransportError::Connect {
                    addr: addr.to_string(),
                    source,
                }
            })?;
            let connecting = endpoint
                .connect_with(config, addr, &name)
                .map_err(|e| connect_error(&e))?;
            let connection = connecting.await.map_err(|e| {
                // QUIC carries a TLS alert as a crypto error code, 0x100 + the alert.
                let code = match &e {
                    quinn::ConnectionError::TransportError(te) => Some(te.code),
                    quinn::ConnectionError::ConnectionClosed(close) => Some(close.error_code),
                    _ => None,
                };
                match code {
                    Some(code) => {
                        let text = e.to_string();
                        let source = if (0x100..0x200).contains(&u64::from(code)) {
                            io::Error::new(io::ErrorKind::InvalidData, CertificateRejected(text))
                        } else {
                            io::Error::new(io::ErrorKind::InvalidData, text)
                        };
                        TransportError::TlsHandshake {
                            addr: addr.to_string(),
                            source,
                        }
                    }
                    None => connect_error(&e),
                }
            })?;
            let (send, recv) = connection.open_bi().await.map_err(|e| connect_error(&e))?;
            Ok(Connected {
                io: QuicStream {
                    send: Some(send),
                    recv,
                    connection,
                    _endpoint: Some(endpoint),
                },
                peer: addr,
            })
        }
    }

    /// Picks the send batch for connections made from now on, where the options leave it
    /// open (see [`QuicOptions::send_batch`]).
    fn set_traffic(&mut self, traffic: Traffic) {
        self.traffic = traffic;
    }
}

crate::transport::connector_service!(Quic);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use quinn::AsyncUdpSocket as _;

    use super::*;

    type EchoStats = Result<quinn::ConnectionStats, Box<dyn std::error::Error + Send + Sync>>;

    /// A QUIC echo server on loopback and a client connected to it. The server's task ends
    /// with its connection's counters once the client finishes its stream.
    async fn echo_pair() -> (QuicStream, tokio::task::JoinHandle<EchoStats>) {
        echo_pair_over(Quic::default()).await
    }

    /// As [`echo_pair`], both ends made with `quic`.
    async fn echo_pair_over(quic: Quic) -> (QuicStream, tokio::task::JoinHandle<EchoStats>) {
        let mut listener = quic.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = quic.clone();
        let echo = tokio::spawn(async move {
            let conn = std::future::poll_fn(|cx| listener.poll_accept(cx)).await?;
            let Connected { io: mut stream, .. } = server.accept(conn).await?;
            let mut buf = vec![0; 64 * 1024];
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    return Ok(stream.connection().stats());
                }
                stream.write_all(&buf[..n]).await?;
            }
        });
        let Connected { io: client, .. } = quic.connect(addr.into()).await.unwrap();
        (client, echo)
    }

    /// A send batch is what was asked for, within 1 and what one UDP send holds, and the
    /// socket offers quinn no more than that per send.
    #[tokio::test]
    async fn the_send_batch_caps_the_datagrams_per_send() {
        assert_eq!(batch_cap(0), 1);
        assert_eq!(batch_cap(2), 2);
        assert_eq!(batch_cap(1_000), MAX_SEND / usize::from(MAX_DATAGRAM));
        let runtime = quinn::default_runtime().unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = runtime.wrap_udp_socket(udp).unwrap();
        let system = socket.max_transmit_segments();
        for most in [1, 2, 10] {
            let capped = Capped {
                socket: socket.clone(),
                most,
            };
            assert_eq!(capped.max_transmit_segments(), system.min(most));
        }
    }

    /// The send batch follows what the owning socket says of its traffic, unless the
    /// options set one; the batch chosen is what the endpoints' sockets are capped at.
    #[tokio::test]
    async fn the_send_batch_follows_the_sockets_traffic_unless_the_options_set_it() {
        let told = |options: QuicOptions, traffic: Option<Traffic>| {
            let mut quic = Quic::default().options(options);
            if let Some(traffic) = traffic {
                quic.set_traffic(traffic);
            }
            quic.send_batch()
        };
        let open = QuicOptions::default();
        assert_eq!(told(open, None), EXCHANGE_BATCH);
        assert_eq!(told(open, Some(Traffic::Exchange)), EXCHANGE_BATCH);
        assert_eq!(told(open, Some(Traffic::Receive)), EXCHANGE_BATCH);
        assert_eq!(told(open, Some(Traffic::Send)), ONE_WAY_BATCH);
        for traffic in [None, Some(Traffic::Send), Some(Traffic::Exchange)] {
            assert_eq!(told(open.send_batch(3), traffic), 3);
        }
        assert_eq!(
            batch_cap(ONE_WAY_BATCH),
            ONE_WAY_BATCH,
            "ten fit in one send"
        );
        // Both ends of a publisher's connection carry data over the batch it picked.
        let mut publishing = Quic::default();
        publishing.set_traffic(Traffic::Send);
        let (mut client, echo) = echo_pair_over(publishing).await;
        let sent = vec![5u8; 256 * 1024];
        let mut back = vec![0; sent.len()];
        let (mut from, mut to) = tokio::io::split(&mut client);
        tokio::time::timeout(Duration::from_secs(20), async {
            tokio::try_join!(to.write_all(&sent), from.read_exact(&mut back)).unwrap();
        })
        .await
        .expect("the burst came back in time");
        assert!(back == sent, "the burst came back changed");
        echo.abort();
    }

    /// A connection that sends one datagram at a time and one that sends the most one UDP
    /// send holds both carry a burst both ways whole.
    #[tokio::test]
    async fn a_burst_crosses_whole_at_either_end_of_the_send_batch() {
        for batch in [1, 1_000] {
            let quic = Quic::default().options(QuicOptions::default().send_batch(batch));
            let (client, echo) = echo_pair_over(quic).await;
            let (mut from, mut to) = tokio::io::split(client);
            let sent: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
            let mut back = vec![0; sent.len()];
            let exchange = async {
                tokio::try_join!(to.write_all(&sent), from.read_exact(&mut back)).unwrap();
            };
            tokio::time::timeout(Duration::from_secs(20), exchange)
                .await
                .expect("the burst came back in time");
            assert!(back == sent, "batch {batch}: the burst came back changed");
            echo.abort();
        }
    }

    /// Over loopback a connection finds that datagrams far larger than Ethernet's pass,
    /// climbs to the ceiling, and sends full batches at that size both ways without losing
    /// a datagram (a batch over the kernel's limit for one send would be lost whole).
    #[tokio::test]
    async fn a_loopback_connection_raises_its_datagram_size_and_loses_nothing() {
        let (mut client, echo) = echo_pair().await;
        let connection = client.connection().clone();
        let run = async {
            // 64 KiB a round, one way then the other: full batches of datagrams, and no
            // more than the smallest receive buffer holds. MTU discovery probes a step at a
            // time, the ceiling last: at most 400 rounds, then 16 at the ceiling.
            let chunk = vec![7u8; 64 * 1024];
            let mut back = vec![0; chunk.len()];
            let mut rounds = 0;
            let mut at_ceiling = 0;
            while at_ceiling < 16 {
                let mtu = connection.stats().path.current_mtu;
                assert!(
                    rounds < 400,
                    "the datagram size stayed at {mtu} after {rounds} rounds"
                );
                client.write_all(&chunk).await.unwrap();
                client.read_exact(&mut back).await.unwrap();
                assert_eq!(back, chunk);
                rounds += 1;
                if mtu == MAX_DATAGRAM {
                    at_ceiling += 1;
                }
            }
            client.shutdown().await.unwrap();
            (connection.stats(), echo.await.unwrap().unwrap())
        };
        let (client, server) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the echo finished in time");
        for stats in [client, server] {
            assert_eq!(stats.path.current_mtu, MAX_DATAGRAM, "{stats:?}");
            assert_eq!(stats.path.lost_packets, 0, "{stats:?}");
        }
    }

    /// 256 KiB written and echoed at once, 32 times: windows full both ways, which
    /// overflow a receive buffer of the usual 208 KiB. Where the system lets a socket have
    /// [`RECV_BUFFER`], no datagram is lost; elsewhere the data still arrives whole.
    #[tokio::test]
    async fn a_burst_both_ways_loses_nothing_where_the_receive_buffer_is_allowed() {
        let (client, echo) = echo_pair().await;
        let connection = client.connection().clone();
        let (mut from, mut to) = tokio::io::split(client);
        let run = async {
            let chunk = vec![7u8; 256 * 1024];
            let mut back = vec![0; chunk.len()];
            for _ in 0..32 {
                let (written, read) =
                    tokio::join!(to.write_all(&chunk), from.read_exact(&mut back));
                written.unwrap();
                read.unwrap();
                assert_eq!(back, chunk);
            }
            to.shutdown().await.unwrap();
            (connection.stats(), echo.await.unwrap().unwrap())
        };
        let (client, server) = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .expect("the echo finished in time");
        // Linux grants twice what is asked, up to twice `rmem_max`.
        let allowed = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|max| max.trim().parse::<usize>().ok())
            .is_some_and(|max| max >= RECV_BUFFER);
        if allowed {
            for stats in [client, server] {
                assert_eq!(stats.path.lost_packets, 0, "{stats:?}");
            }
        }
    }
}
