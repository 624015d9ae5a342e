//! The transport every command uses, from the certificate options, and the endpoints it
//! binds and dials.

use std::path::PathBuf;

use clap::Args;
use msg::any::TransportConfig;
use msg::{AnyTransport, Endpoint};

use crate::describe;

/// Certificates for `tls://` and `quic://` endpoints; without them, `quic://` encrypts with
/// a certificate it does not check and `tls://` cannot be used.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TransportArgs {
    /// This side's certificate chain (PEM), presented when it binds tls:// or quic://.
    #[arg(long, global = true, value_name = "PEM")]
    cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, global = true, value_name = "PEM")]
    key: Option<PathBuf>,
    /// The roots (PEM) that servers dialed over tls:// or quic:// must chain to.
    #[arg(long, global = true, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// The name servers' certificates must carry [default: localhost].
    #[arg(long, global = true, value_name = "NAME")]
    server_name: Option<String>,
}

impl TransportArgs {
    /// The transport these options describe.
    pub(crate) fn transport(&self) -> Result<AnyTransport, String> {
        let config = TransportConfig {
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            server_name: self.server_name.clone(),
        };
        AnyTransport::from_config(&config)
            .map_err(|e| format!("bad certificate options: {}", describe(&e)))
    }
}

/// The endpoint `arg` names; `host:port` alone is `tcp://host:port`.
pub(crate) fn endpoint(arg: &str) -> Result<Endpoint, String> {
    let full = if arg.contains("://") {
        arg.to_owned()
    } else {
        format!("tcp://{arg}")
    };
    full.parse()
        .map_err(|e: msg::EndpointError| format!("bad address `{arg}`: {}", describe(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_address_is_tcp() {
        assert_eq!(
            endpoint("127.0.0.1:5555").unwrap().to_string(),
            "tcp://127.0.0.1:5555"
        );
        assert_eq!(
            endpoint("ipc:///tmp/a.sock").unwrap().to_string(),
            "ipc:///tmp/a.sock"
        );
        let bad = endpoint("udp://127.0.0.1:1").unwrap_err();
        assert!(
            bad.starts_with("bad address `udp://127.0.0.1:1`: "),
            "{bad}"
        );
    }
}
