//! Request/Reply over TLS with mutual authentication: the server proves itself with a
//! certificate the client trusts, and admits only clients with a certificate of its CA.
//! The certificates come from a throwaway PKI made with rcgen; in production, load your own
//! with `msg::tls::server_config_mtls` and `client_config_with_cert` from PEM.
//!
//! Run with `cargo run -p msg-examples --example tls`.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use msg::tls::{client_config, client_config_with_cert, server_config_mtls, TestPki};
use msg::{serve, RepSocket, ReqSocket, Request, Tls};
use tower::service_fn;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pki = TestPki::generate(&["localhost"])?;

    let server = Tls::server(server_config_mtls(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
        pki.ca_pem.as_bytes(),
    )?);
    let mut rep = RepSocket::new(server);
    rep.bind("127.0.0.1:0").await?;
    let addr = rep.local_addr().expect("bound");
    tokio::spawn(serve(
        rep,
        service_fn(|req: Request<SocketAddr>| async move {
            println!("server: request from {} over mutual TLS", req.peer());
            Ok::<_, Infallible>(Bytes::from([&b"secret "[..], req.msg()].concat()))
        }),
    ));

    let client = Tls::client(
        client_config_with_cert(
            pki.ca_pem.as_bytes(),
            pki.client_cert_pem.as_bytes(),
            pki.client_key_pem.as_bytes(),
        )?,
        "localhost",
    )?;
    let mut req = ReqSocket::new(client);
    req.connect(addr).await?;
    println!("client: {:?}", req.request(Bytes::from("hello")).await?);

    // A client without a certificate is turned away.
    let anonymous = Tls::client(client_config(pki.ca_pem.as_bytes())?, "localhost")?;
    let mut req = ReqSocket::new(anonymous);
    match req.connect(addr).await {
        Ok(()) => println!("anonymous client: unexpectedly admitted"),
        Err(e) => println!("anonymous client refused: {e}"),
    }
    Ok(())
}
