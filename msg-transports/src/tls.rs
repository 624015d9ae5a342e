//! TLS over TCP: [`Tls`], a transport that wraps [`Tcp`] in rustls, with
//! helpers to load certificates from PEM and, for tests, to make a whole PKI with rcgen.
//!
//! The crypto provider is ring, the only one compiled in, so the build needs nothing but a C
//! compiler.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::RootCertStore;
/// rustls's configurations, which the helpers here build and [`Tls`] takes.
pub use rustls::{ClientConfig, ServerConfig};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

use crate::tcp::{Endpoint, Tcp, TcpAcceptor};
use crate::transport::{Connected, Transport, TransportError};

fn certificate_error(what: &str, e: impl fmt::Display) -> TransportError {
    TransportError::Certificate {
        reason: format!("{what}: {e}"),
    }
}

/// Reads a chain of certificates from PEM.
///
/// # Errors
///
/// [`TransportError::Certificate`] if the PEM holds no certificate or does not parse.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| certificate_error("bad certificate PEM", e))?;
    if certs.is_empty() {
        return Err(certificate_error("no certificate in PEM", "empty"));
    }
    Ok(certs)
}

/// Reads a private key (PKCS#8, PKCS#1 or SEC1) from PEM.
///
/// # Errors
///
/// [`TransportError::Certificate`] if the PEM holds no key or does not parse.
pub fn key_from_pem(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TransportError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| certificate_error("bad private key PEM", e))
}

/// The crypto provider every configuration built here uses: ring, with its cipher suites
/// in the order that costs least per byte on hardware with AES instructions.
///
/// ring offers AES-256-GCM first. AES-128-GCM runs 10 AES rounds to AES-256's 14, for the
/// same authentication, and is the first choice of Go's TLS and BoringSSL; over loopback
/// at 1 KiB per message, the cipher is a quarter of the work. So the AES-128 suites come
/// first here, then AES-256, then ChaCha20-Poly1305, within each TLS version. A peer that
/// prefers another suite can still pick it.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::CipherSuite as S;
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            S::TLS13_AES_128_GCM_SHA256 => 0,
            S::TLS13_AES_256_GCM_SHA384 => 1,
            S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
            S::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | S::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 4,
            _ => 5,
        });
    Arc::new(provider)
}

fn server_builder(
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TransportError> {
    ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| certificate_error("server configuration", e))
}

fn client_builder(
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, TransportError> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| certificate_error("client configuration", e))
}

fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for cert in certs_from_pem(pem)? {
        roots
            .add(cert)
            .map_err(|e| certificate_error("bad root certificate", e))?;
    }
    Ok(roots)
}

/// A server configuration from a certificate chain and its key, in PEM, without client
/// certificates.
///
/// # Errors
///
/// [`TransportError::Certificate`] if either does not parse or they do not match.
pub fn server_config(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<ServerConfig, TransportError> {
    server_builder()?
        .with_no_client_auth()
        .with_single_cert(certs_from_pem(cert_chain_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| certificate_error("server certificate refused", e))
}

/// Reads a PEM file, for the configuration helpers.
///
/// # Example
///
/// ```no_run
/// use msg::tls::{read_pem, server_config};
///
/// let config = server_config(&read_pem("server.crt")?, &read_pem("server.key")?)?;
/// # Ok::<(), msg::transport::TransportError>(())
/// ```
///
/// # Errors
///
/// [`TransportError::Certificate`] if the file cannot be read.
pub fn read_pem(path: impl AsRef<std::path::Path>) -> Result<Vec<u8>, TransportError> {
    let path = path.as_ref();
    std::fs::read(path)
        .map_err(|e| certificate_error(&format!("cannot read {}", path.display()), e))
}

/// A server configuration that requires every client to present a certificate issued by
/// one of the roots in `client_roots_pem` (mutual TLS).
///
/// # Errors
///
/// [`TransportError::Certificate`] if any PEM does not parse or the key does not match.
pub fn server_config_mtls(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
    client_roots_pem: &[u8],
) -> Result<ServerConfig, TransportError> {
    let verifier =
        rustls::server::WebPkiClientVerifier::builder(Arc::new(roots_from_pem(client_roots_pem)?))
            .build()
            .map_err(|e| certificate_error("client verifier", e))?;
    server_builder()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs_from_pem(cert_chain_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| certificate_error("server certificate refused", e))
}

/// A client configuration that trusts the roots in `roots_pem` and presents no certificate.
///
/// # Errors
///
/// [`TransportError::Certificate`] if the PEM does not parse.
pub fn client_config(roots_pem: &[u8]) -> Result<ClientConfig, TransportError> {
    Ok(client_builder()?
        .with_root_certificates(roots_from_pem(roots_pem)?)
        .with_no_client_auth())
}

/// A client configuration that trusts the roots in `roots_pem` and presents a certificate
/// (mutual TLS).
///
/// # Errors
///
/// [`TransportError::Certificate`] if any PEM does not parse or the key does not match.
pub fn client_config_with_cert(
    roots_pem: &[u8],
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<ClientConfig, TransportError> {
    client_builder()?
        .with_root_certificates(roots_from_pem(roots_pem)?)
        .with_client_auth_cert(certs_from_pem(cert_chain_pem)?, key_from_pem(key_pem)?)
        .map_err(|e| certificate_error("client certificate refused", e))
}

/// Whether `e`, the error inside a failed TLS handshake's I/O error, is about
/// certificates or configurations that will fail the same way next time: rustls refused the
/// peer's certificate, the peer sent an alert refusing this side's, or the two share no
/// TLS version or cipher suite. QUIC's handshakes say the same with a [`CertificateRejected`].
pub(crate) fn is_certificate_error(e: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
    use rustls::AlertDescription as Alert;
    if e.is::<CertificateRejected>() {
        return true;
    }
    match e.downcast_ref::<rustls::Error>() {
        Some(
            rustls::Error::InvalidCertificate(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::UnsupportedNameType
            | rustls::Error::InvalidCertRevocationList(_)
            | rustls::Error::PeerIncompatible(_),
        ) => true,
        Some(rustls::Error::AlertReceived(alert)) => matches!(
            alert,
            Alert::BadCertificate
                | Alert::UnsupportedCertificate
                | Alert::CertificateRevoked
                | Alert::CertificateExpired
                | Alert::CertificateUnknown
                | Alert::UnknownCA
                | Alert::AccessDenied
                | Alert::CertificateRequired
                | Alert::ProtocolVersion
                | Alert::InsufficientSecurity
                | Alert::HandshakeFailure
        ),
        _ => false,
    }
}

/// Whether an I/O error on a TLS connection is a refusal of a certificate or of the TLS
/// configuration, which the next connection will meet again: under TLS 1.3 the server checks
/// a client's certificate after the client's side of the handshake is done, so the client
/// reads the server's refusal (an alert) as an I/O error on its first read.
pub fn is_certificate_refusal(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(is_certificate_error)
}

/// A handshake refused on a certificate or TLS configuration, where the error is only text
/// (QUIC's crypto errors): the inner error of a [`TransportError::TlsHandshake`]'s source.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct CertificateRejected(pub(crate) String);

/// A throwaway PKI for tests and examples: a CA, a server certificate for the given names
/// and a client certificate, all signed by the CA, in PEM. Only with the `test-util`
/// feature.
///
/// # Example
///
/// ```
/// use msg::tls::{client_config, server_config, TestPki};
///
/// let pki = TestPki::generate(&["localhost", "127.0.0.1"]).unwrap();
/// server_config(pki.server_cert_pem.as_bytes(), pki.server_key_pem.as_bytes()).unwrap();
/// client_config(pki.ca_pem.as_bytes()).unwrap();
/// ```
#[cfg(any(test, feature = "test-util"))]
#[derive(Clone)]
#[non_exhaustive]
pub struct TestPki {
    /// The CA's certificate: the root both sides trust.
    pub ca_pem: String,
    /// The server's certificate.
    pub server_cert_pem: String,
    /// The server's private key.
    pub server_key_pem: String,
    /// The client's certificate, for mutual TLS.
    pub client_cert_pem: String,
    /// The client's private key.
    pub client_key_pem: String,
}

#[cfg(any(test, feature = "test-util"))]
impl fmt::Debug for TestPki {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestPki").finish_non_exhaustive()
    }
}

#[cfg(any(test, feature = "test-util"))]
impl TestPki {
    /// Makes a CA and the server and client certificates it signs. Names that parse as IP
    /// addresses become IP subject names, the others DNS names.
    ///
    /// # Errors
    ///
    /// [`TransportError::Certificate`] if rcgen fails.
    pub fn generate(server_names: &[&str]) -> Result<TestPki, TransportError> {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

        let rcgen_error = |e: rcgen::Error| certificate_error("rcgen", e);
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "msg test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(rcgen_error)?)
            .map_err(rcgen_error)?;

        let names: Vec<String> = server_names.iter().map(|n| n.to_string()).collect();
        let server_key = KeyPair::generate().map_err(rcgen_error)?;
        let server = CertificateParams::new(names)
            .map_err(rcgen_error)?
            .signed_by(&server_key, &ca)
            .map_err(rcgen_error)?;

        let client_key = KeyPair::generate().map_err(rcgen_error)?;
        let client = CertificateParams::new(vec!["msg-client".to_owned()])
            .map_err(rcgen_error)?
            .signed_by(&client_key, &ca)
            .map_err(rcgen_error)?;

        Ok(TestPki {
            ca_pem: ca.pem(),
            server_cert_pem: server.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_pem: client.pem(),
            client_key_pem: client_key.serialize_pem(),
        })
    }
}

/// TLS over TCP, with rustls.
///
/// A `Tls` value carries a server configuration (for `bind`), a client configuration and
/// the name to verify the server by (for `connect`), or both.
///
/// # Example
///
/// ```
/// # #[cfg(feature = "test-util")] {
/// use msg::tls::{client_config, server_config, TestPki, Tls};
/// use msg::transport::{Listener, Transport};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // A throwaway CA (the `test-util` feature); real deployments load their PEM files.
/// let pki = TestPki::generate(&["localhost"])?;
/// let server = Tls::server(server_config(
///     pki.server_cert_pem.as_bytes(),
///     pki.server_key_pem.as_bytes(),
/// )?);
/// let client = Tls::client(client_config(pki.ca_pem.as_bytes())?, "localhost")?;
///
/// let mut listener = server.bind("127.0.0.1:0".into()).await?;
/// let addr = listener.local_addr()?;
/// tokio::spawn(async move {
///     // What the listener accepts is TCP; `accept` runs the TLS handshake on it.
///     let tcp = std::future::poll_fn(|cx| listener.poll_accept(cx)).await.unwrap();
///     let _tls = server.accept(tcp).await;
/// });
/// client.connect(addr.into()).await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # }
/// ```
#[derive(Clone)]
pub struct Tls {
    tcp: Tcp,
    acceptor: Option<TlsAcceptor>,
    connector: Option<(TlsConnector, ServerName<'static>)>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("server", &self.acceptor.is_some())
            .field(
                "server_name",
                &self.connector.as_ref().map(|(_, name)| name),
            )
            .finish()
    }
}

impl Tls {
    /// A transport that binds TLS servers with `config`.
    pub fn server(config: ServerConfig) -> Self {
        Tls {
            tcp: Tcp::new(),
            acceptor: Some(TlsAcceptor::from(Arc::new(config))),
            connector: None,
        }
    }

    /// A transport that dials TLS servers with `config`, verifying that each presents a
    /// certificate for `server_name`.
    ///
    /// # Errors
    ///
    /// [`TransportError::Certificate`] if `server_name` is not a DNS name or IP address.
    pub fn client(config: ClientConfig, server_name: &str) -> Result<Self, TransportError> {
        Tls {
            tcp: Tcp::new(),
            acceptor: None,
            connector: None,
        }
        .with_client(config, server_name)
    }

    /// Adds a client side to this transport; see [`client`](Self::client).
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub fn with_client(
        mut self,
        config: ClientConfig,
        server_name: &str,
    ) -> Result<Self, TransportError> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| certificate_error("bad server name", e))?;
        self.connector = Some((TlsConnector::from(Arc::new(config)), name));
        Ok(self)
    }
}

/// How much ciphertext is read from the socket at once. rustls asks for at most 4 KiB per
/// read, which on a busy connection costs a system call per 4 KiB; the buffer underneath
/// turns those into one read of up to this much.
const READ_BUFFER: usize = 64 * 1024;

/// A TLS connection's stream: rustls over TCP, with reads buffered underneath.
pub type TlsIo = TlsStream<BufReader<TcpStream>>;

impl Transport for Tls {
    type Target = Endpoint;
    type Addr = SocketAddr;
    type Io = TlsIo;
    type Listener = TcpAcceptor;

    async fn bind(&self, target: Endpoint) -> Result<TcpAcceptor, TransportError> {
        if self.acceptor.is_none() {
            return Err(TransportError::Config {
                reason: "this Tls transport has no server configuration".into(),
            });
        }
        self.tcp.bind(target).await
    }

    /// Runs the server side of the TLS handshake.
    fn accept(
        &self,
        conn: Connected<TcpStream, SocketAddr>,
    ) -> impl Future<Output = Result<Connected<TlsIo, SocketAddr>, TransportError>> + Send {
        let acceptor = self.acceptor.clone();
        async move {
            let Connected { io, peer } = conn;
            let acceptor = acceptor.ok_or_else(|| TransportError::Config {
                reason: "this Tls transport has no server configuration".into(),
            })?;
            let stream = acceptor
                .accept(BufReader::with_capacity(READ_BUFFER, io))
                .await
                .map_err(|source| TransportError::TlsHandshake {
                    addr: peer.to_string(),
                    source,
                })?;
            Ok(Connected {
                io: TlsStream::Server(stream),
                peer,
            })
        }
    }

    fn connect(
        &self,
        target: Endpoint,
    ) -> impl Future<Output = Result<Connected<Self::Io, SocketAddr>, TransportError>> + Send {
        let tcp = self.tcp.clone();
        let connector = self.connector.clone();
        async move {
            let (connector, name) = connector.ok_or_else(|| TransportError::Config {
                reason: "this Tls transport has no client configuration".into(),
            })?;
            let Connected { io, peer } = tcp.connect(target).await?;
            let io = BufReader::with_capacity(READ_BUFFER, io);
            let stream = connector.connect(name, io).await.map_err(|source| {
                TransportError::TlsHandshake {
                    addr: peer.to_string(),
                    source,
                }
            })?;
            Ok(Connected {
                io: TlsStream::Client(stream),
                peer,
            })
        }
    }
}

crate::transport::connector_service!(Tls);

#[cfg(test)]
mod tests {
    use std::io;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::transport::Listener;

    use super::*;

    async fn accept_one(
        tls: Tls,
        mut listener: TcpAcceptor,
    ) -> Result<Connected<TlsIo, SocketAddr>, TransportError> {
        let conn = std::future::poll_fn(|cx| listener.poll_accept(cx)).await?;
        tls.accept(conn).await
    }

    /// A server with `pki`'s certificate, bound on loopback, and the address to dial.
    async fn bound_server(pki: &TestPki) -> (Tls, TcpAcceptor, SocketAddr) {
        let server = Tls::server(
            server_config(
                pki.server_cert_pem.as_bytes(),
                pki.server_key_pem.as_bytes(),
            )
            .unwrap(),
        );
        let listener = server.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        (server, listener, addr)
    }

    /// The cipher suite a connection's side agreed on.
    fn suite(io: &TlsIo) -> rustls::CipherSuite {
        io.get_ref().1.negotiated_cipher_suite().unwrap().suite()
    }

    #[tokio::test]
    async fn round_trip_over_tls_with_a_generated_pki() {
        let pki = TestPki::generate(&["localhost"]).unwrap();
        let (server, listener, addr) = bound_server(&pki).await;
        let client =
            Tls::client(client_config(pki.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
        let server_side = tokio::spawn(async move {
            let mut conn = accept_one(server, listener).await.unwrap();
            let mut buf = [0; 4];
            conn.io.read_exact(&mut buf).await.unwrap();
            conn.io.write_all(&buf).await.unwrap();
            conn.io.flush().await.unwrap();
        });
        let mut conn = client.connect(addr.into()).await.unwrap();
        conn.io.write_all(b"ping").await.unwrap();
        conn.io.flush().await.unwrap();
        let mut buf = [0; 4];
        conn.io.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server_side.await.unwrap();
    }

    /// The suite a handshake between a client built from `client` and a server built with
    /// [`server_config`] agrees on.
    async fn negotiated(pki: &TestPki, client: ClientConfig) -> rustls::CipherSuite {
        let (server, listener, addr) = bound_server(pki).await;
        let server_side = tokio::spawn(accept_one(server, listener));
        let conn = Tls::client(client, "localhost")
            .unwrap()
            .connect(addr.into())
            .await
            .unwrap();
        let server_conn = server_side.await.unwrap().unwrap();
        assert_eq!(suite(&conn.io), suite(&server_conn.io));
        suite(&conn.io)
    }

    #[tokio::test]
    async fn the_helpers_agree_on_aes_128_and_a_peer_that_prefers_aes_256_gets_it() {
        let pki = TestPki::generate(&["localhost"]).unwrap();
        let ours = client_config(pki.ca_pem.as_bytes()).unwrap();
        assert_eq!(
            negotiated(&pki, ours).await,
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
        );
        // A client built on rustls's own defaults asks for AES-256 first, and gets it.
        let theirs =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots_from_pem(pki.ca_pem.as_bytes()).unwrap())
                .with_no_client_auth();
        assert_eq!(
            negotiated(&pki, theirs).await,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384
        );
    }

    #[tokio::test]
    async fn client_that_does_not_trust_the_server_fails_the_handshake() {
        let pki = TestPki::generate(&["localhost"]).unwrap();
        let other = TestPki::generate(&["localhost"]).unwrap();
        let (server, listener, addr) = bound_server(&pki).await;
        tokio::spawn(accept_one(server, listener));
        let untrusting =
            Tls::client(client_config(other.ca_pem.as_bytes()).unwrap(), "localhost").unwrap();
        match untrusting.connect(addr.into()).await {
            Err(TransportError::TlsHandshake { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::InvalidData, "{source}")
            }
            other => panic!("expected a TLS handshake error, got {other:?}"),
        }
    }

    #[test]
    fn garbage_pem_is_a_typed_error() {
        assert!(matches!(
            certs_from_pem(b"not a certificate"),
            Err(TransportError::Certificate { .. })
        ));
        assert!(matches!(
            key_from_pem(b"no key here"),
            Err(TransportError::Certificate { .. })
        ));
        // A key block that is not a key is refused when the configuration is built.
        let pki = TestPki::generate(&["localhost"]).unwrap();
        assert!(matches!(
            server_config(
                pki.server_cert_pem.as_bytes(),
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
            ),
            Err(TransportError::Certificate { .. })
        ));
        // And a key that does not match the certificate too.
        assert!(matches!(
            server_config(
                pki.server_cert_pem.as_bytes(),
                pki.client_key_pem.as_bytes()
            ),
            Err(TransportError::Certificate { .. })
        ));
    }
}
