//! systemd's socket activation: with `LISTEN_FDS`/`LISTEN_PID` naming this process, the
//! control socket is the descriptor systemd passed (not bound anew, and its file is never
//! removed by the daemon: the `.socket` unit owns it).
//!
//! Which descriptor: the only one, or among several the one named `control` in
//! `LISTEN_FDNAMES` (`FileDescriptorName=control` in the `.socket` unit). It must be a
//! listening stream socket, unix or tcp (checked with `SO_TYPE`, `SO_ACCEPTCONN` and
//! `getsockname`): anything else is refused with an error naming the descriptor. The
//! configured `sockethandler` is overridden by it (logged when they differ).
//!
//! The variables are read by the `sd-notify` crate (`listen_fds_with_names`, which also
//! sets `FD_CLOEXEC` so nothing the daemon execs inherits them), then removed from the
//! environment so workers never see them.

use std::io;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};

use crate::error::{Error, Result};
use crate::socket::{Listener, SocketFile};

/// The name a `.socket` unit gives the control socket among several.
pub(crate) const CONTROL_NAME: &str = "control";

/// The passed control socket with a description of it, or `None` without socket activation.
///
/// # Errors
///
/// Malformed variables, several descriptors none named `control`, or a descriptor that is not
/// a listening unix or tcp stream socket.
pub(crate) fn inherited() -> Result<Option<(Listener, String)>> {
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(|e| refused(format!("LISTEN_FDS/LISTEN_FDNAMES: {e}")))?
        .collect();
    for var in ["LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"] {
        // SAFETY: the daemon is single-threaded (it checks before it forks and never starts
        // threads), so nothing reads the environment concurrently.
        unsafe { std::env::remove_var(var) };
    }
    let (fd, name) = match fds.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        many => many
            .iter()
            .find(|(_, n)| n == CONTROL_NAME)
            .cloned()
            .ok_or_else(|| {
                let names: Vec<&str> = many.iter().map(|(_, n)| n.as_str()).collect();
                refused(format!(
                    "{} descriptors passed ({}), none named {CONTROL_NAME:?}",
                    many.len(),
                    names.join(", ")
                ))
            })?,
    };
    listener_of(fd, &name).map(Some)
}

fn refused(message: String) -> Error {
    Error::Io(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("socket activation: {message}"),
    ))
}

/// Takes `fd` as the listener if it is one.
fn listener_of(fd: RawFd, name: &str) -> Result<(Listener, String)> {
    // SAFETY: systemd passed `fd` to this process for it to own (sd_listen_fds(3)); it is
    // taken once, here. A wrong kind is refused before it becomes a typed socket, and the
    // OwnedFd closes it then.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let what = format!("fd {fd} ({name})");
    let kind = nix::sys::socket::getsockopt(&owned, sockopt::SockType)
        .map_err(|e| refused(format!("{what} is not a socket: {e}")))?;
    if kind != SockType::Stream {
        return Err(refused(format!(
            "{what} is a {kind:?} socket, not a stream listener (ListenStream= in the .socket unit)"
        )));
    }
    let listening = nix::sys::socket::getsockopt(&owned, sockopt::AcceptConn).unwrap_or(false);
    if !listening {
        return Err(refused(format!(
            "{what} is a stream socket that does not listen"
        )));
    }
    let addr: SockaddrStorage =
        nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&owned))
            .map_err(|e| refused(format!("{what}: getsockname: {e}")))?;
    match addr.family() {
        Some(AddressFamily::Unix) => {
            let listener = UnixListener::from(owned);
            listener.set_nonblocking(true)?;
            let local = listener.local_addr()?;
            let path = local
                .as_pathname()
                .map(std::path::Path::to_owned)
                .ok_or_else(|| refused(format!("{what} is an unnamed or abstract unix socket")))?;
            let desc = format!("unix://{}", path.display());
            Ok((Listener::Unix(listener, SocketFile::inherited(&path)), desc))
        }
        Some(AddressFamily::Inet | AddressFamily::Inet6) => {
            let listener = TcpListener::from(owned);
            listener.set_nonblocking(true)?;
            let desc = format!("tcp://{}", listener.local_addr()?);
            Ok((Listener::Tcp(listener), desc))
        }
        other => Err(refused(format!(
            "{what} is a {other:?} socket, neither unix nor tcp"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    #[test]
    fn a_datagram_socket_is_refused_by_name() {
        let (a, _b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let err = listener_of(a.into_raw_fd(), "control")
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("socket activation") && err.contains("(control)"),
            "{err}"
        );
        assert!(err.contains("not a stream listener"), "{err}");
    }

    #[test]
    fn a_stream_that_does_not_listen_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = listener_of(a.into_raw_fd(), "x").err().unwrap().to_string();
        assert!(err.contains("does not listen"), "{err}");
    }

    #[test]
    fn a_listening_tcp_socket_is_taken() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let (listener, desc) = listener_of(l.into_raw_fd(), "control").unwrap();
        assert_eq!(desc, format!("tcp://127.0.0.1:{port}"));
        assert!(matches!(listener, Listener::Tcp(_)));
    }
}
