//! [`AnyPeer`]: a peer's address of whatever transport, as a router's handlers get it.

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// The address of a request's peer, whatever its transport: what lets one
/// [`Router`](crate::Router) serve TCP, TLS, QUIC and IPC sockets alike, its handlers
/// and layers written once.
///
/// A handler that wants the address asks for it by its type with
/// [`Peer<A>`](crate::extract::Peer) (`Peer<SocketAddr>` over TCP, TLS and QUIC,
/// `Peer<IpcAddr>` over IPC, `Peer<AnyAddr>` over an `AnyTransport`); a layer reads it
/// with [`downcast_ref`](Self::downcast_ref). A socket address is kept as it is; an address
/// of another type is shared behind an [`Arc`].
///
/// # Example
///
/// ```
/// use std::net::SocketAddr;
/// use msg::router::AnyPeer;
///
/// let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
/// let peer = AnyPeer::new(addr);
/// assert_eq!(peer.downcast_ref::<SocketAddr>(), Some(&addr));
/// assert!(peer.downcast_ref::<std::path::PathBuf>().is_none());
/// ```
#[derive(Clone)]
pub struct AnyPeer(Repr);

#[derive(Clone)]
enum Repr {
    Socket(SocketAddr),
    Other {
        addr: Arc<dyn Any + Send + Sync>,
        type_name: &'static str,
        debug: fn(&(dyn Any + Send + Sync), &mut fmt::Formatter<'_>) -> fmt::Result,
    },
}

fn debug_as<A: fmt::Debug + 'static>(
    addr: &(dyn Any + Send + Sync),
    f: &mut fmt::Formatter<'_>,
) -> fmt::Result {
    match addr.downcast_ref::<A>() {
        Some(addr) => fmt::Debug::fmt(addr, f),
        None => f.write_str("?"),
    }
}

impl AnyPeer {
    /// The address `addr`, of any type.
    pub fn new<A: fmt::Debug + Clone + Send + Sync + 'static>(addr: A) -> AnyPeer {
        let any: &dyn Any = &addr;
        if let Some(socket) = any.downcast_ref::<SocketAddr>() {
            return AnyPeer(Repr::Socket(*socket));
        }
        if let Some(peer) = any.downcast_ref::<AnyPeer>() {
            return peer.clone();
        }
        AnyPeer(Repr::Other {
            addr: Arc::new(addr),
            type_name: std::any::type_name::<A>(),
            debug: debug_as::<A>,
        })
    }

    /// The address, if it is of type `A`.
    pub fn downcast_ref<A: 'static>(&self) -> Option<&A> {
        match &self.0 {
            Repr::Socket(addr) => (addr as &dyn Any).downcast_ref(),
            Repr::Other { addr, .. } => addr.downcast_ref(),
        }
    }

    /// The name of the address's type, for errors.
    pub fn type_name(&self) -> &'static str {
        match &self.0 {
            Repr::Socket(_) => std::any::type_name::<SocketAddr>(),
            Repr::Other { type_name, .. } => type_name,
        }
    }
}

impl fmt::Debug for AnyPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Socket(addr) => fmt::Debug::fmt(addr, f),
            Repr::Other { addr, debug, .. } => debug(&**addr, f),
        }
    }
}
