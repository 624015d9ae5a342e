//! Endpoint strings: `tcp://host:port`, `tls://host:port`, `quic://host:port` and
//! `ipc://path`, parsed into an [`Endpoint`] that names the transport and its target, so
//! that a program can take its transport from a flag or a configuration file. Bind and dial
//! one with [`AnyTransport`](crate::AnyTransport).
//!
//! | form | transport | target |
//! |---|---|---|
//! | `tcp://127.0.0.1:5555`, `tcp://[::1]:5555`, `tcp://localhost:5555` | TCP | an IP address, or a host name resolved when used; port 0 binds a free port |
//! | `tls://localhost:5555` | TLS over TCP | as `tcp://` |
//! | `quic://127.0.0.1:5555` | QUIC | as `tcp://` |
//! | `ipc:///tmp/app.sock` | Unix socket | the absolute path `/tmp/app.sock` |
//! | `ipc://app.sock` | Unix socket | the path `app.sock`, relative to the working directory |
//!
//! As in ZeroMQ, what follows `ipc://` is the path as written: a third slash makes it
//! absolute. Schemes are case-insensitive; an endpoint is written back (`Display`) with the
//! scheme in lower case, and parses again to the same value.
//!
//! # Example
//!
//! ```
//! use msg::{Endpoint, EndpointError};
//!
//! let endpoint: Endpoint = "tcp://127.0.0.1:5555".parse()?;
//! assert_eq!(endpoint.to_string(), "tcp://127.0.0.1:5555");
//!
//! let ipc: Endpoint = "ipc:///tmp/app.sock".parse()?;
//! assert_eq!(ipc, Endpoint::Ipc("/tmp/app.sock".into()));
//!
//! assert!(matches!(
//!     "udp://127.0.0.1:5555".parse::<Endpoint>(),
//!     Err(EndpointError::UnknownScheme { .. })
//! ));
//! # Ok::<(), EndpointError>(())
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::tcp;

/// The transport an endpoint names: the part before `://`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scheme {
    /// `tcp://`: [`Tcp`](crate::Tcp).
    Tcp,
    /// `tls://`: [`Tls`](crate::Tls), TLS over TCP.
    Tls,
    /// `quic://`: [`Quic`](crate::Quic).
    Quic,
    /// `ipc://`: [`Ipc`](crate::Ipc), Unix domain sockets.
    Ipc,
}

impl Scheme {
    /// Every scheme, in the order error messages list them.
    pub const ALL: [Scheme; 4] = [Scheme::Tcp, Scheme::Tls, Scheme::Quic, Scheme::Ipc];

    /// The scheme as written in an endpoint, in lower case: `"tcp"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Tls => "tls",
            Scheme::Quic => "quic",
            Scheme::Ipc => "ipc",
        }
    }

    fn parse(scheme: &str) -> Option<Scheme> {
        Scheme::ALL
            .into_iter()
            .find(|known| known.as_str().eq_ignore_ascii_case(scheme))
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a socket binds or dials, and over which transport: a parsed `tcp://host:port`,
/// `tls://host:port`, `quic://host:port` or `ipc://path`. See the [module](self) docs for
/// the forms.
///
/// `Display` writes the endpoint form back, which parses to the same value.
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use msg::Endpoint;
///
/// let endpoint: Endpoint = "quic://[::1]:4433".parse().unwrap();
/// let addr: SocketAddr = "[::1]:4433".parse().unwrap();
/// assert_eq!(endpoint, Endpoint::Quic(addr.into()));
/// assert_eq!(endpoint.to_string().parse::<Endpoint>().unwrap(), endpoint);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// `tcp://host:port`.
    Tcp(tcp::Endpoint),
    /// `tls://host:port`.
    Tls(tcp::Endpoint),
    /// `quic://host:port`.
    Quic(tcp::Endpoint),
    /// `ipc://path`.
    Ipc(PathBuf),
}

impl Endpoint {
    /// The transport the endpoint names.
    pub fn scheme(&self) -> Scheme {
        match self {
            Endpoint::Tcp(_) => Scheme::Tcp,
            Endpoint::Tls(_) => Scheme::Tls,
            Endpoint::Quic(_) => Scheme::Quic,
            Endpoint::Ipc(_) => Scheme::Ipc,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(target) | Endpoint::Tls(target) | Endpoint::Quic(target) => {
                write!(f, "{}://{target}", self.scheme())
            }
            Endpoint::Ipc(path) => write!(f, "ipc://{}", path.display()),
        }
    }
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(endpoint: &str) -> Result<Endpoint, EndpointError> {
        if endpoint.is_empty() {
            return Err(EndpointError::Empty);
        }
        let Some((scheme, rest)) = endpoint.split_once("://") else {
            return Err(EndpointError::NoScheme {
                endpoint: endpoint.to_owned(),
            });
        };
        let Some(scheme) = Scheme::parse(scheme) else {
            return Err(EndpointError::UnknownScheme {
                scheme: scheme.to_owned(),
                endpoint: endpoint.to_owned(),
            });
        };
        match scheme {
            Scheme::Tcp => host_port(endpoint, rest).map(Endpoint::Tcp),
            Scheme::Tls => host_port(endpoint, rest).map(Endpoint::Tls),
            Scheme::Quic => host_port(endpoint, rest).map(Endpoint::Quic),
            Scheme::Ipc if rest.is_empty() => Err(EndpointError::EmptyPath {
                endpoint: endpoint.to_owned(),
            }),
            Scheme::Ipc => Ok(Endpoint::Ipc(PathBuf::from(rest))),
        }
    }
}

impl TryFrom<&str> for Endpoint {
    type Error = EndpointError;

    fn try_from(endpoint: &str) -> Result<Endpoint, EndpointError> {
        endpoint.parse()
    }
}

/// Parses the `host:port` after a network scheme: an IP address (IPv6 in brackets) or a
/// host name, then a port from 0 to 65535.
fn host_port(endpoint: &str, rest: &str) -> Result<tcp::Endpoint, EndpointError> {
    let owned = || endpoint.to_owned();
    let bad_host = |host: &str| EndpointError::BadHost {
        host: host.to_owned(),
        endpoint: owned(),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (ip, after) = bracketed.split_once(']').ok_or_else(|| bad_host(rest))?;
        let ip: Ipv6Addr = ip.parse().map_err(|_| bad_host(&format!("[{ip}]")))?;
        let port = match after.strip_prefix(':') {
            Some(port) => port,
            None if after.is_empty() => {
                return Err(EndpointError::MissingPort { endpoint: owned() })
            }
            None => {
                return Err(EndpointError::BadPort {
                    port: after.to_owned(),
                    endpoint: owned(),
                })
            }
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let Some((host, port)) = rest.rsplit_once(':') else {
            return Err(match rest.is_empty() {
                true => EndpointError::EmptyHost { endpoint: owned() },
                false => EndpointError::MissingPort { endpoint: owned() },
            });
        };
        let host = match host.parse::<IpAddr>() {
            _ if host.is_empty() => return Err(EndpointError::EmptyHost { endpoint: owned() }),
            Ok(IpAddr::V4(ip)) => Host::Ip(IpAddr::V4(ip)),
            // An IPv6 address needs its brackets, or its last group would read as the port.
            Ok(IpAddr::V6(_)) => return Err(bad_host(host)),
            Err(_) if is_host_name(host) => Host::Name(host),
            Err(_) => return Err(bad_host(host)),
        };
        (host, port)
    };
    if port.is_empty() {
        return Err(EndpointError::MissingPort { endpoint: owned() });
    }
    // Digits only: `u16::from_str` also takes a leading `+`, which would not round-trip.
    let port: u16 = Some(port)
        .filter(|port| port.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| EndpointError::BadPort {
            port: port.to_owned(),
            endpoint: owned(),
        })?;
    Ok(match host {
        Host::Ip(ip) => tcp::Endpoint::Addr(SocketAddr::new(ip, port)),
        Host::Name(name) => tcp::Endpoint::Host(format!("{name}:{port}")),
    })
}

/// The host of a `host:port`: an address, or a name to resolve.
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// Whether `host` is a name the resolver could be asked about: dot-separated labels of
/// letters, digits, `-` and `_`, none empty.
fn is_host_name(host: &str) -> bool {
    host.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The list of known schemes, for error messages: `tcp://, tls://, quic://, ipc://`.
struct KnownSchemes;

impl fmt::Display for KnownSchemes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scheme) in Scheme::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{scheme}://")?;
        }
        Ok(())
    }
}

/// Why an endpoint string does not parse. Each message quotes the endpoint and says what a
/// good one looks like.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The string is empty.
    #[error(
        "empty endpoint: expected tcp://host:port, tls://host:port, quic://host:port or ipc://path"
    )]
    Empty,
    /// No `scheme://` in front.
    #[error(
        "endpoint `{endpoint}` has no scheme: begin it with one of {}",
        KnownSchemes
    )]
    NoScheme {
        /// The endpoint as given.
        endpoint: String,
    },
    /// A scheme no transport answers to.
    #[error(
        "endpoint `{endpoint}`: unknown scheme `{scheme}`, expected one of {}",
        KnownSchemes
    )]
    UnknownScheme {
        /// The scheme as given.
        scheme: String,
        /// The endpoint as given.
        endpoint: String,
    },
    /// Nothing between `://` and the port.
    #[error("endpoint `{endpoint}` has no host: expected scheme://host:port")]
    EmptyHost {
        /// The endpoint as given.
        endpoint: String,
    },
    /// A host that is neither an IP address nor a host name.
    #[error(
        "endpoint `{endpoint}`: `{host}` is not an IP address or host name \
         (an IPv6 address goes in brackets, as in tcp://[::1]:5555)"
    )]
    BadHost {
        /// The host as given.
        host: String,
        /// The endpoint as given.
        endpoint: String,
    },
    /// A network endpoint without `:port`.
    #[error(
        "endpoint `{endpoint}` has no port: expected scheme://host:port (port 0 binds a free one)"
    )]
    MissingPort {
        /// The endpoint as given.
        endpoint: String,
    },
    /// A port that is not a number from 0 to 65535.
    #[error("endpoint `{endpoint}`: port `{port}` is not a number from 0 to 65535")]
    BadPort {
        /// The port as given.
        port: String,
        /// The endpoint as given.
        endpoint: String,
    },
    /// `ipc://` with nothing after it.
    #[error(
        "endpoint `{endpoint}` has no path: expected ipc:///absolute/path or ipc://relative/path"
    )]
    EmptyPath {
        /// The endpoint as given.
        endpoint: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(endpoint: &str) -> Result<Endpoint, EndpointError> {
        endpoint.parse()
    }

    fn addr(addr: &str) -> tcp::Endpoint {
        tcp::Endpoint::Addr(addr.parse().unwrap())
    }

    #[test]
    fn every_scheme_parses_into_its_transport_and_target() {
        let cases = [
            (
                "tcp://127.0.0.1:5555",
                Endpoint::Tcp(addr("127.0.0.1:5555")),
            ),
            ("tcp://[::1]:0", Endpoint::Tcp(addr("[::1]:0"))),
            (
                "tcp://localhost:80",
                Endpoint::Tcp(tcp::Endpoint::Host("localhost:80".into())),
            ),
            (
                "tls://db.example.com:443",
                Endpoint::Tls(tcp::Endpoint::Host("db.example.com:443".into())),
            ),
            (
                "quic://127.0.0.1:4433",
                Endpoint::Quic(addr("127.0.0.1:4433")),
            ),
            ("ipc:///tmp/app.sock", Endpoint::Ipc("/tmp/app.sock".into())),
            ("ipc://app.sock", Endpoint::Ipc("app.sock".into())),
            ("ipc://run/app.sock", Endpoint::Ipc("run/app.sock".into())),
            ("TCP://127.0.0.1:1", Endpoint::Tcp(addr("127.0.0.1:1"))),
            (
                "Quic://127.0.0.1:65535",
                Endpoint::Quic(addr("127.0.0.1:65535")),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse(text), Ok(expected.clone()), "{text}");
            assert_eq!(parse(text).unwrap().scheme(), expected.scheme(), "{text}");
        }
    }

    #[test]
    fn display_writes_the_endpoint_form_that_parses_back_to_the_same_value() {
        for text in [
            "tcp://127.0.0.1:5555",
            "tcp://[::1]:5555",
            "tcp://[fe80::1:2]:1",
            "tcp://localhost:0",
            "tls://localhost:443",
            "tls://10.0.0.1:443",
            "quic://[::]:4433",
            "quic://my_host.internal:1",
            "ipc:///tmp/app.sock",
            "ipc://app.sock",
            "ipc:///tmp/with space.sock",
        ] {
            let endpoint = parse(text).unwrap();
            assert_eq!(endpoint.to_string(), text);
            assert_eq!(parse(&endpoint.to_string()), Ok(endpoint), "{text}");
        }
        // The scheme is written back in lower case, and still parses to the same value.
        let upper = parse("TLS://localhost:1").unwrap();
        assert_eq!(upper.to_string(), "tls://localhost:1");
        assert_eq!(parse(&upper.to_string()), Ok(upper));
    }

    #[test]
    fn an_unknown_or_missing_scheme_is_a_typed_error_that_lists_the_known_ones() {
        let err = parse("udp://127.0.0.1:5555").unwrap_err();
        assert_eq!(
            err,
            EndpointError::UnknownScheme {
                scheme: "udp".into(),
                endpoint: "udp://127.0.0.1:5555".into()
            }
        );
        let text = err.to_string();
        for scheme in ["tcp://", "tls://", "quic://", "ipc://", "`udp`"] {
            assert!(text.contains(scheme), "{text}");
        }
        for text in ["127.0.0.1:5555", "localhost", "/tmp/app.sock", "tcp:/x:1"] {
            let err = parse(text).unwrap_err();
            assert_eq!(
                err,
                EndpointError::NoScheme {
                    endpoint: text.into()
                }
            );
            assert!(err.to_string().contains("tcp://, tls://, quic://, ipc://"));
        }
        assert!(matches!(
            parse("://127.0.0.1:1"),
            Err(EndpointError::UnknownScheme { scheme, .. }) if scheme.is_empty()
        ));
        assert_eq!(parse(""), Err(EndpointError::Empty));
    }

    #[test]
    fn a_bad_host_port_is_a_typed_error_naming_what_is_wrong() {
        let missing_port = [
            "tcp://127.0.0.1",
            "tcp://localhost",
            "tls://localhost:",
            "quic://[::1]",
            "tcp://[::1]:",
        ];
        for text in missing_port {
            assert!(
                matches!(parse(text), Err(EndpointError::MissingPort { .. })),
                "{text}: {:?}",
                parse(text)
            );
        }
        let bad_port = [
            ("tcp://127.0.0.1:65536", "65536"),
            ("tcp://127.0.0.1:http", "http"),
            ("tcp://127.0.0.1:+1", "+1"),
            ("tcp://127.0.0.1:-1", "-1"),
            ("tcp://localhost:80/path", "80/path"),
            ("tcp://[::1]x", "x"),
        ];
        for (text, port) in bad_port {
            assert_eq!(
                parse(text),
                Err(EndpointError::BadPort {
                    port: port.into(),
                    endpoint: text.into()
                }),
                "{text}"
            );
        }
        for text in ["tcp://", "tcp://:5555", "quic://:0"] {
            assert!(
                matches!(parse(text), Err(EndpointError::EmptyHost { .. })),
                "{text}: {:?}",
                parse(text)
            );
        }
        let bad_host = [
            ("tcp://::1:5555", "::1"),
            ("tcp://user@host:1", "user@host"),
            ("tcp://a..b:1", "a..b"),
            ("tcp://white space:1", "white space"),
            ("tcp://[not-v6]:1", "[not-v6]"),
            ("tcp://[127.0.0.1]:1", "[127.0.0.1]"),
            ("tcp://[::1:1", "[::1:1"),
        ];
        for (text, host) in bad_host {
            assert_eq!(
                parse(text),
                Err(EndpointError::BadHost {
                    host: host.into(),
                    endpoint: text.into()
                }),
                "{text}"
            );
        }
        let err = parse("tcp://::1:5555").unwrap_err().to_string();
        assert!(err.contains("tcp://[::1]:5555"), "{err}");
    }

    #[test]
    fn ipc_without_a_path_is_a_typed_error() {
        assert_eq!(
            parse("ipc://"),
            Err(EndpointError::EmptyPath {
                endpoint: "ipc://".into()
            })
        );
        assert!(parse("ipc://")
            .unwrap_err()
            .to_string()
            .contains("ipc:///absolute/path"));
    }

    #[test]
    fn try_from_str_is_parse() {
        assert_eq!(
            Endpoint::try_from("tcp://127.0.0.1:1"),
            parse("tcp://127.0.0.1:1")
        );
        assert_eq!(Endpoint::try_from(""), Err(EndpointError::Empty));
    }
}
