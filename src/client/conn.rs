//! The socket under a [`super::Client`]: unix or tcp, with the deadline of the call (or
//! the wait) in progress applied to every read and write.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::socket::Address;

/// Opens the socket; for TCP, tries each address `host` resolves to.
pub(super) fn open(address: &Address, timeout: Option<Duration>) -> io::Result<Stream> {
    match address {
        Address::Unix(path) => UnixStream::connect(path).map(Stream::Unix),
        Address::Tcp { host, port } => {
            let mut last = io::Error::new(ErrorKind::NotFound, "the host resolves to no address");
            for addr in (host.as_str(), *port).to_socket_addrs()? {
                let stream = match timeout {
                    Some(t) => TcpStream::connect_timeout(&addr, t),
                    None => TcpStream::connect(addr),
                };
                match stream {
                    Ok(s) => {
                        s.set_nodelay(true)?;
                        return Ok(Stream::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(last)
        }
    }
}

pub(super) enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

/// The socket, with the deadline of the call in progress applied to every read and write.
pub(super) struct Conn {
    pub(super) stream: Stream,
    pub(super) deadline: Option<Instant>,
}

impl Conn {
    /// What is left of the deadline: `Ok(None)` without one, `TimedOut` once it passed.
    fn left(&self) -> io::Result<Option<Duration>> {
        match self.deadline {
            None => Ok(None),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Ok(Some(left)),
                _ => Err(ErrorKind::TimedOut.into()),
            },
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.left()?;
        match &mut self.stream {
            Stream::Unix(s) => s.set_read_timeout(left).and_then(|()| s.read(buf)),
            Stream::Tcp(s) => s.set_read_timeout(left).and_then(|()| s.read(buf)),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let left = self.left()?;
        match &mut self.stream {
            Stream::Unix(s) => s.set_write_timeout(left).and_then(|()| s.write(buf)),
            Stream::Tcp(s) => s.set_write_timeout(left).and_then(|()| s.write(buf)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
