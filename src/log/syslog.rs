//! Syslog over the local datagram socket (`/dev/log`), for a detached daemon without a
//! `logfile`.
//!
//! Our own few lines rather than a crate: all it takes is one `sendto` of
//! `<PRI>IDENT[PID]: MESSAGE` per record (the local syslog daemon, journald or rsyslog,
//! adds the time and host), and the crates that do it (`syslog`, `slog-syslog`) bring their
//! own formatting, a blocking socket and, for some, threads; the daemon must never block on
//! its log, so the socket is non-blocking and a record the receiver cannot take now is
//! dropped and counted like any failed log write.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use slog::{Drain, OwnedKVList, Record};

use super::drains::{record_text, severity};

/// Where the local syslog daemon listens.
pub(crate) const DEV_LOG: &str = "/dev/log";

/// The `daemon` facility (3), as syslog numbers it.
const FACILITY_DAEMON: u8 = 3;

/// A drain sending each record as one syslog datagram.
pub(crate) struct Syslog {
    socket: UnixDatagram,
    ident: String,
}

impl Syslog {
    /// Connects to the syslog socket at `path`; `ident` names the daemon in each message.
    pub(crate) fn connect(path: &Path, ident: &str) -> io::Result<Syslog> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(path)?;
        socket.set_nonblocking(true)?;
        // SOCK_CLOEXEC is std's default; recorded as daimon's so a forked worker closes it.
        crate::sys::own(std::os::fd::AsRawFd::as_raw_fd(&socket));
        Ok(Syslog {
            socket,
            ident: ident_of(ident),
        })
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        crate::sys::disown(std::os::fd::AsRawFd::as_raw_fd(&self.socket));
    }
}

/// An ident syslog accepts: no spaces, colons or brackets, at most 48 bytes.
fn ident_of(name: &str) -> String {
    let ident: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && !matches!(c, ':' | '[' | ']') {
                c
            } else {
                '-'
            }
        })
        .take(48)
        .collect();
    if ident.is_empty() {
        "daimon".to_owned()
    } else {
        ident
    }
}

/// One message: `<PRI>IDENT[PID]: TEXT` (RFC 3164's form as local syslog daemons take it).
pub(crate) fn message(ident: &str, pid: u32, record: &Record<'_>, values: &OwnedKVList) -> String {
    let priority = FACILITY_DAEMON * 8 + severity(record.level());
    let text = record_text(record, values).text;
    format!("<{priority}>{ident}[{pid}]: {text}")
}

impl Drain for Syslog {
    type Ok = ();
    type Err = io::Error;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> io::Result<()> {
        let line = message(&self.ident, std::process::id(), record, values);
        self.socket.send(line.as_bytes()).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slog::{Logger, o};

    #[test]
    fn each_record_is_one_datagram_with_its_priority() {
        let dir = std::env::temp_dir().join(format!("daimon-syslog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let listener = UnixDatagram::bind(&path).unwrap();
        let drain = Syslog::connect(&path, "my daemon:x").unwrap();
        let log = Logger::root(drain.fuse(), o!());
        slog::info!(log, "ready"; "pid" => 7);
        slog::error!(log, "broke");
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).unwrap();
        let first = String::from_utf8_lossy(&buf[..n]).into_owned();
        let pid = std::process::id();
        assert_eq!(first, format!("<30>my-daemon-x[{pid}]: ready pid=7"));
        let n = listener.recv(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("<27>my-daemon-x["));
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Syslog::connect(&path, "x").is_err(), "nobody listens there");
    }
}
