//! IPC over Unix domain sockets: [`Ipc`], its address and its listener.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::task::{Context, Poll};

use tokio::net::{UnixListener, UnixStream};

use crate::transport::{Connected, Listener, Transport, TransportError};

/// The address of an IPC endpoint: the socket file's path, and for an accepted peer a
/// number that tells it from the listener's other peers (Unix sockets give clients no
/// address of their own).
///
/// # Example
///
/// ```
/// use msg::ipc::IpcAddr;
///
/// let listener = IpcAddr::new("/tmp/app.sock");
/// assert_eq!(listener.to_string(), "/tmp/app.sock");
/// assert_eq!(listener.peer(3).to_string(), "/tmp/app.sock#3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcAddr {
    path: PathBuf,
    peer: Option<u64>,
}

impl IpcAddr {
    /// The address of the socket file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        IpcAddr {
            path: path.into(),
            peer: None,
        }
    }

    /// The address of the `n`th peer accepted on this socket file.
    pub fn peer(&self, n: u64) -> Self {
        IpcAddr {
            path: self.path.clone(),
            peer: Some(n),
        }
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The peer's number, for an accepted peer.
    pub fn peer_number(&self) -> Option<u64> {
        self.peer
    }
}

impl fmt::Display for IpcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.peer {
            Some(n) => write!(f, "{}#{n}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

impl From<IpcAddr> for PathBuf {
    fn from(addr: IpcAddr) -> Self {
        addr.path
    }
}

impl From<&IpcAddr> for PathBuf {
    fn from(addr: &IpcAddr) -> Self {
        addr.path.clone()
    }
}

/// The IPC transport: Unix domain sockets, named by a path in the file system.
///
/// Binding over a socket file left behind by a process that died works: the stale file is
/// replaced. Binding over a socket that a live process still listens on fails with
/// [`TransportError::Bind`] and leaves that socket alone. The file is removed when the
/// listener is dropped.
///
/// # Example
///
/// ```
/// use msg::transport::Listener;
/// use msg::{Ipc, Transport};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let dir = std::env::temp_dir().join(format!("msg-ipc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let path = dir.join("app.sock");
///
/// let listener = Ipc::default().bind(path.clone()).await?;
/// let conn = Ipc::default().connect(path.clone()).await?;
/// assert_eq!(conn.peer.path(), path.as_path());
/// drop(listener);
/// assert!(!path.exists(), "the socket file goes with the listener");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Default)]
pub struct Ipc {
    _private: (),
}

impl Ipc {
    /// The IPC transport with its defaults.
    pub const fn new() -> Self {
        Ipc { _private: () }
    }
}

/// A bound IPC listener. Dropping it removes its socket file.
#[derive(Debug)]
pub struct IpcListener {
    inner: UnixListener,
    addr: IpcAddr,
    accepted: u64,
}

impl Listener for IpcListener {
    type Conn = UnixStream;
    type Addr = IpcAddr;

    fn poll_accept(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<Connected<UnixStream, IpcAddr>>> {
        self.inner.poll_accept(cx).map(|res| {
            let (io, _) = res?;
            self.accepted += 1;
            Ok(Connected {
                io,
                peer: self.addr.peer(self.accepted),
            })
        })
    }

    fn local_addr(&self) -> io::Result<IpcAddr> {
        Ok(self.addr.clone())
    }
}

impl Drop for IpcListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.addr.path);
    }
}

async fn bind_path(path: PathBuf) -> Result<IpcListener, TransportError> {
    let bind_error = |source| TransportError::Bind {
        addr: path.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(&path).is_ok() {
        match UnixStream::connect(&path).await {
            Ok(_) => {
                return Err(bind_error(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "a live socket is listening on this path",
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // Nobody listens: the file was left by a process that is gone.
                std::fs::remove_file(&path).map_err(bind_error)?;
            }
            Err(e) => return Err(bind_error(e)),
        }
    }
    let inner = UnixListener::bind(&path).map_err(bind_error)?;
    Ok(IpcListener {
        inner,
        addr: IpcAddr::new(path),
        accepted: 0,
    })
}

async fn connect_path(path: PathBuf) -> Result<Connected<UnixStream, IpcAddr>, TransportError> {
    let io = UnixStream::connect(&path)
        .await
        .map_err(|source| TransportError::Connect {
            addr: path.display().to_string(),
            source,
        })?;
    Ok(Connected {
        io,
        peer: IpcAddr::new(path),
    })
}

impl Transport for Ipc {
    type Target = PathBuf;
    type Addr = IpcAddr;
    type Io = UnixStream;
    type Listener = IpcListener;

    fn bind(
        &self,
        path: PathBuf,
    ) -> impl Future<Output = Result<IpcListener, TransportError>> + Send {
        bind_path(path)
    }

    fn connect(
        &self,
        path: PathBuf,
    ) -> impl Future<Output = Result<Connected<UnixStream, IpcAddr>, TransportError>> + Send {
        connect_path(path)
    }

    /// Nothing to set up: a Unix socket is ready once accepted.
    async fn accept(
        &self,
        conn: Connected<UnixStream, IpcAddr>,
    ) -> Result<Connected<UnixStream, IpcAddr>, TransportError> {
        Ok(conn)
    }
}

crate::transport::connector_service!(Ipc);

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory of one test's own, removed with its contents when dropped. Its
    /// name is short, so that socket paths in it stay well under the 108 bytes a Unix
    /// socket address holds, and fresh, so that no file left by an earlier run is in it.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir()
                .join(format!("msg-ipc-{}-{name}-{nanos:x}", std::process::id()));
            std::fs::create_dir(&dir).expect("a fresh temporary directory");
            TempDir(dir)
        }

        /// The socket path `s.sock` in the directory.
        fn socket(&self) -> PathBuf {
            self.0.join("s.sock")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[tokio::test]
    async fn stale_socket_file_is_replaced_and_live_one_is_not_stolen() {
        let dir = TempDir::new("stale");
        let path = dir.socket();
        // A socket file whose listener is gone, as a crashed process leaves it.
        let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
        drop(stale);
        assert!(path.exists());
        let live = Ipc::new()
            .bind(path.clone())
            .await
            .expect("stale file replaced");

        match Ipc::new().bind(path.clone()).await {
            Err(TransportError::Bind { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::AddrInUse)
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
        // The live listener still works.
        let conn = Ipc::new().connect(path.clone()).await.unwrap();
        assert_eq!(conn.peer, IpcAddr::new(&path));
        drop(live);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn accepted_peers_get_their_own_identities() {
        let dir = TempDir::new("peers");
        let path = dir.socket();
        let mut listener = Ipc::new().bind(path.clone()).await.unwrap();
        let _a = Ipc::new().connect(path.clone()).await.unwrap();
        let _b = Ipc::new().connect(path.clone()).await.unwrap();
        let first = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .unwrap();
        let second = std::future::poll_fn(|cx| listener.poll_accept(cx))
            .await
            .unwrap();
        assert_ne!(first.peer, second.peer);
        assert_ne!(first.peer, listener.local_addr().unwrap());
    }

    #[tokio::test]
    async fn connect_to_a_missing_path_is_a_typed_error() {
        let dir = TempDir::new("missing");
        let path = dir.socket();
        assert!(matches!(
            Ipc::new().connect(path).await,
            Err(TransportError::Connect { .. })
        ));
    }
}
