//! The listening socket and accepted streams, unix or tcp.

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, umask};

use super::Address;
use crate::error::{Error, Result};

/// What [`Listener::bind`] did with a socket file left at the unix path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leftover {
    /// There was none.
    None,
    /// A stale socket file (nobody answered on it) was removed.
    RemovedStale,
}

/// A bound, listening, non-blocking control socket.
#[derive(Debug)]
pub enum Listener {
    /// A unix socket and its file (removed when the listener drops).
    Unix(UnixListener, SocketFile),
    /// A tcp socket.
    Tcp(TcpListener),
}

impl Listener {
    /// Binds `address`. A unix socket file is created with mode `mode` (0600 by default),
    /// and removed again when the listener drops (on every path: a start that fails later,
    /// a clean stop), unless something else replaced it meanwhile. A socket file left at the
    /// path is removed only when connecting to it is refused (nobody serves it); one a live
    /// process answers on, or one whose liveness cannot be told (a full backlog, no
    /// permission), is refused. `force` (`-s`) changes none of this: a live daemon's socket
    /// is never taken.
    ///
    /// # Errors
    ///
    /// [`Error::SocketInUse`] when a live process serves the unix path; [`Error::Path`] when
    /// the path exists and is not a socket, or the bind fails; the bind's error for tcp.
    pub fn bind(address: &Address, mode: u32, force: bool) -> Result<(Listener, Leftover)> {
        let _ = force;
        match address {
            Address::Unix(path) => {
                let leftover = clear_unix_path(path, address)?;
                // Binding creates the file with the process umask: narrow it for the call.
                let old = umask(Mode::from_bits_truncate(!mode & 0o777));
                let bound = UnixListener::bind(path);
                umask(old);
                let listener = bound.map_err(|e| Error::path(path, "binding socket", e))?;
                // From here on, the file goes with the listener whatever fails next.
                let file = SocketFile::bound(path);
                listener.set_nonblocking(true)?;
                Ok((Listener::Unix(listener, file), leftover))
            }
            Address::Tcp { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| Error::SocketInUse(format!("{address} ({e})")))?
                    .collect();
                let listener = TcpListener::bind(&addrs[..]).map_err(|e| {
                    if e.kind() == io::ErrorKind::AddrInUse {
                        Error::SocketInUse(address.to_string())
                    } else {
                        Error::Io(io::Error::new(e.kind(), format!("binding {address}: {e}")))
                    }
                })?;
                listener.set_nonblocking(true)?;
                Ok((Listener::Tcp(listener), Leftover::None))
            }
        }
    }

    /// Accepts one pending connection, non-blocking; `Ok(None)` when none is pending.
    ///
    /// # Errors
    ///
    /// The accept error (other than "would block").
    pub fn accept(&self) -> io::Result<Option<(Stream, Peer)>> {
        let accepted = match self {
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let peer = peer_of(&s);
                (Stream::Unix(s), peer)
            }),
            Listener::Tcp(l) => l.accept().map(|(s, addr)| {
                let peer = Peer {
                    name: addr.to_string(),
                    uid: None,
                };
                (Stream::Tcp(s), peer)
            }),
        };
        match accepted {
            Ok((stream, peer)) => {
                stream.set_nonblocking()?;
                Ok(Some((stream, peer)))
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The unix socket's path, if it is one.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Listener::Unix(_, f) => Some(f.path()),
            Listener::Tcp(_) => None,
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Listener::Unix(l, _) => l.as_fd(),
            Listener::Tcp(l) => l.as_fd(),
        }
    }
}

/// The file of a bound unix socket: removed on drop if the path still names the socket
/// this process bound (not one another daemon bound there since).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    /// The device and inode of the file bound, `None` when it could not be read.
    id: Option<(u64, u64)>,
}

impl SocketFile {
    fn bound(path: &Path) -> SocketFile {
        SocketFile {
            path: path.to_owned(),
            id: file_id(path),
        }
    }

    /// A socket someone else bound (systemd's socket activation): never removed by us.
    pub(crate) fn inherited(path: &Path) -> SocketFile {
        SocketFile {
            path: path.to_owned(),
            id: None,
        }
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        if self.id.is_some() && file_id(&self.path) == self.id {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn clear_unix_path(path: &Path, address: &Address) -> Result<Leftover> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Leftover::None),
        Err(e) => return Err(Error::path(path, "inspecting socket path", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::path(
            path,
            "binding socket",
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            ),
        ));
    }
    match UnixStream::connect(path) {
        // Nobody listens: a stale file.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        Ok(_) => return Err(Error::SocketInUse(address.to_string())),
        // A full backlog (EAGAIN) is a live daemon too; no permission tells nothing.
        Err(e) => {
            return Err(Error::SocketInUse(format!(
                "{address} (probably: connecting fails with {e})"
            )));
        }
    }
    std::fs::remove_file(path).map_err(|e| Error::path(path, "removing stale socket", e))?;
    Ok(Leftover::RemovedStale)
}

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// A unix peer's pid and uid, or a tcp address, for logs and `RpcEvent::peer`.
    pub name: String,
    /// A unix peer's uid (from `SO_PEERCRED`); `None` for tcp.
    pub uid: Option<u32>,
}

fn peer_of(stream: &UnixStream) -> Peer {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(c) => Peer {
            name: format!("pid {} uid {}", c.pid(), c.uid()),
            uid: Some(c.uid()),
        },
        Err(_) => Peer {
            name: "unix peer".to_owned(),
            uid: None,
        },
    }
}

/// An accepted connection, unix or tcp, non-blocking.
#[derive(Debug)]
pub enum Stream {
    /// A unix stream.
    Unix(UnixStream),
    /// A tcp stream.
    Tcp(TcpStream),
}

impl Stream {
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_nonblocking(true),
            Stream::Tcp(s) => {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)
            }
        }
    }
}

impl AsFd for Stream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Stream::Unix(s) => s.as_fd(),
            Stream::Tcp(s) => s.as_fd(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("daimon-sock-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn unix_socket_is_0600_and_a_live_one_is_refused() {
        let d = dir("live");
        let addr = Address::Unix(d.join("s.sock"));
        let (l, leftover) = Listener::bind(&addr, 0o600, false).unwrap();
        assert_eq!(leftover, Leftover::None);
        let mode = std::fs::metadata(d.join("s.sock"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let err = Listener::bind(&addr, 0o600, false).unwrap_err();
        assert!(matches!(err, Error::SocketInUse(_)), "{err}");
        let _client = UnixStream::connect(d.join("s.sock")).unwrap();
        // The liveness probe of the refused bind is pending too, then our client.
        assert!(l.accept().unwrap().is_some());
        assert!(l.accept().unwrap().is_some());
        assert!(
            l.accept().unwrap().is_none(),
            "non-blocking when nothing is pending"
        );
        drop(l);
        assert!(!d.join("s.sock").exists(), "removed with the listener");
        // A file left behind by a process that died, and nobody answers: a stale socket,
        // removed on bind.
        drop(UnixListener::bind(d.join("s.sock")).unwrap());
        let (_l, leftover) = Listener::bind(&addr, 0o600, false).unwrap();
        assert_eq!(leftover, Leftover::RemovedStale);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn force_never_takes_a_live_socket_and_the_file_goes_with_the_listener() {
        let d = dir("force");
        let path = d.join("s.sock");
        let addr = Address::Unix(path.clone());
        let (live, _) = Listener::bind(&addr, 0o600, false).unwrap();
        let err = Listener::bind(&addr, 0o600, true).unwrap_err();
        assert!(matches!(err, Error::SocketInUse(_)), "{err}");
        assert!(err.to_string().contains("s.sock"), "{err}");
        drop(live);
        assert!(!path.exists(), "the socket file goes with the listener");
        // A file another process bound at the path since is not ours to remove.
        let (ours, _) = Listener::bind(&addr, 0o600, false).unwrap();
        std::fs::remove_file(&path).unwrap();
        let theirs = UnixListener::bind(&path).unwrap();
        drop(ours);
        assert!(path.exists(), "someone else's socket file was removed");
        drop(theirs);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_regular_file_at_the_path_is_refused() {
        let d = dir("file");
        std::fs::write(d.join("s.sock"), "x").unwrap();
        let err = Listener::bind(&Address::Unix(d.join("s.sock")), 0o600, true).unwrap_err();
        assert!(err.to_string().contains("not a socket"), "{err}");
        assert!(d.join("s.sock").exists());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn tcp_binds_loopback_and_busy_port_is_in_use() {
        let addr = Address::Tcp {
            host: "127.0.0.1".into(),
            port: 0,
        };
        let (l, _) = Listener::bind(&addr, 0o600, false).unwrap();
        let Listener::Tcp(t) = &l else { panic!() };
        let port = t.local_addr().unwrap().port();
        let busy = Address::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        assert!(matches!(
            Listener::bind(&busy, 0o600, false),
            Err(Error::SocketInUse(_))
        ));
    }
}
