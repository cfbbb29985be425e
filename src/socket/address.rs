//! Where the control socket listens: a Unix socket path or a TCP host and port.
//!
//! Addresses are written as URLs, as in the ancestor comodojo/daemon's `sockethandler` key:
//! `unix://daemon.sock`, `unix:///run/echo.sock`, `tcp://127.0.0.1:10042`, `tcp://[::1]:8080`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The configuration key an address comes from, named in every parse error.
const KEY: &str = "sockethandler";

/// What an address looks like, for error messages.
const EXPECTED: &str = "expected unix://PATH or tcp://HOST:PORT";

/// The address of the control socket.
///
/// # Examples
///
/// ```
/// use daimon::socket::Address;
///
/// let a: Address = "tcp://[::1]".parse()?;
/// assert_eq!(a, Address::Tcp { host: "::1".into(), port: 10042 });
/// assert_eq!(a.to_string(), "tcp://[::1]:10042");
/// assert!(a.is_loopback());
/// # Ok::<(), daimon::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix domain socket at this path (`unix://PATH`); a relative path is relative to
    /// the daemon's working directory until [`Address::make_absolute`] is called.
    Unix(PathBuf),
    /// A TCP socket (`tcp://HOST:PORT`).
    Tcp {
        /// A host name or an IP address; IPv6 addresses are stored without brackets.
        host: String,
        /// The port, never 0.
        port: u16,
    },
}

impl Address {
    /// The TCP port used when a `tcp://` address gives none (the ancestor's default).
    pub const DEFAULT_TCP_PORT: u16 = 10042;

    /// Joins a relative Unix socket path to `cwd`; absolute paths and TCP addresses are
    /// left as they are.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::path::Path;
    /// use daimon::socket::Address;
    ///
    /// let mut a: Address = "unix://daemon.sock".parse()?;
    /// a.make_absolute(Path::new("/srv/echo"));
    /// assert_eq!(a.unix_path(), Some(Path::new("/srv/echo/daemon.sock")));
    /// # Ok::<(), daimon::Error>(())
    /// ```
    pub fn make_absolute(&mut self, cwd: &Path) {
        if let Address::Unix(path) = self {
            if path.is_relative() {
                *path = cwd.join(&*path);
            }
        }
    }

    /// The socket path of a Unix address, `None` for TCP.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Address::Unix(path) => Some(path),
            Address::Tcp { .. } => None,
        }
    }

    /// Whether only this machine can connect: always for a Unix socket; for TCP, when the
    /// host is `localhost`, an address in 127.0.0.0/8 or `::1`.
    pub fn is_loopback(&self) -> bool {
        match self {
            Address::Unix(_) => true,
            Address::Tcp { host, .. } => {
                host.eq_ignore_ascii_case("localhost")
                    || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
            }
        }
    }

    /// Checks an address, possibly built by hand, against the rules [`FromStr`] applies.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] on the `sockethandler` key for an empty Unix path or one holding a
    /// NUL byte, an empty or malformed host, or port 0.
    pub fn validate(&self) -> Result<()> {
        match self.problem() {
            Some(expected) => Err(refuse(expected, self)),
            None => Ok(()),
        }
    }

    /// What is wrong with this address, as the "expected ..." part of an error message.
    fn problem(&self) -> Option<&'static str> {
        match self {
            Address::Unix(path) => {
                let bytes = path.as_os_str().as_encoded_bytes();
                if bytes.is_empty() {
                    Some("expected unix://PATH with a non-empty path")
                } else if bytes.contains(&0) {
                    Some("expected unix://PATH with no NUL byte in the path")
                } else {
                    None
                }
            }
            Address::Tcp { host, port } => {
                if host.is_empty() {
                    Some("expected tcp://HOST:PORT with a non-empty host")
                } else if !host_is_valid(host) {
                    Some(
                        "expected tcp://HOST:PORT with a host name or an IP address \
                         (IPv6 in brackets)",
                    )
                } else if *port == 0 {
                    Some(PORT_EXPECTED)
                } else {
                    None
                }
            }
        }
    }
}

/// The error message for a bad port.
const PORT_EXPECTED: &str = "expected tcp://HOST:PORT with a port in 1..=65535";

/// A host is an IPv6 address (if it holds a colon) or a name of letters, digits, `-`, `.`
/// and `_` (which covers IPv4 addresses).
fn host_is_valid(host: &str) -> bool {
    if host.contains(':') {
        host.parse::<Ipv6Addr>().is_ok()
    } else {
        host.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    }
}

/// The `sockethandler` error for `got`.
fn refuse(expected: &str, got: impl fmt::Display) -> Error {
    Error::config(KEY, format!("{expected}, got '{got}'"))
}

/// Splits `HOST[:PORT]` or `[IPV6][:PORT]` into the host and the port text, if any; an
/// error is the "expected ..." part of the message.
fn split_host_port(rest: &str) -> Result<(&str, Option<&str>), &'static str> {
    if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or(EXPECTED)?;
        if !host.is_empty() && !host.contains(':') {
            return Err("expected tcp://[IPV6]:PORT with an IPv6 address in the brackets");
        }
        if after.is_empty() {
            Ok((host, None))
        } else {
            Ok((host, Some(after.strip_prefix(':').ok_or(EXPECTED)?)))
        }
    } else if rest.matches(':').count() > 1 {
        // `::1:80` is a valid IPv6 address too: the port cannot be told apart.
        Err("expected tcp://[IPV6]:PORT with the IPv6 address in brackets")
    } else {
        Ok(rest
            .split_once(':')
            .map_or((rest, None), |(h, p)| (h, Some(p))))
    }
}

impl FromStr for Address {
    type Err = Error;

    /// Parses `unix://PATH`, `tcp://HOST:PORT`, `tcp://[IPV6]:PORT` or `tcp://HOST` (port
    /// 10042).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] on the `sockethandler` key for another scheme, a missing scheme, an
    /// empty path or host, or a port that is 0, above 65535 or not a number.
    fn from_str(s: &str) -> Result<Self> {
        let address = if let Some(path) = s.strip_prefix("unix://") {
            Address::Unix(PathBuf::from(path))
        } else if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = split_host_port(rest).map_err(|expected| refuse(expected, s))?;
            let port = match port {
                None => Address::DEFAULT_TCP_PORT,
                Some(port) if port.bytes().all(|b| b.is_ascii_digit()) => {
                    port.parse().map_err(|_| refuse(PORT_EXPECTED, s))?
                }
                Some(_) => return Err(refuse(PORT_EXPECTED, s)),
            };
            Address::Tcp {
                host: host.to_owned(),
                port,
            }
        } else {
            return Err(refuse(EXPECTED, s));
        };
        match address.problem() {
            Some(expected) => Err(refuse(expected, s)),
            None => Ok(address),
        }
    }
}

impl fmt::Display for Address {
    /// Writes the address in the form [`FromStr`] reads, IPv6 hosts in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(path) => write!(f, "unix://{}", path.display()),
            Address::Tcp { host, port } if host.contains(':') => {
                write!(f, "tcp://[{host}]:{port}")
            }
            Address::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Address {
        Address::Tcp {
            host: host.to_owned(),
            port,
        }
    }

    fn parse(s: &str) -> Result<Address> {
        s.parse()
    }

    fn refused(s: &str) -> String {
        let e = parse(s).expect_err(s).to_string();
        assert!(e.contains("sockethandler"), "{e}");
        assert!(e.contains(&format!("got '{s}'")), "{e}");
        e
    }

    #[test]
    fn parses_unix() {
        let a = parse("unix://daemon.sock").unwrap();
        assert_eq!(a, Address::Unix("daemon.sock".into()));
        assert_eq!(a.unix_path(), Some(Path::new("daemon.sock")));
        assert_eq!(
            parse("unix:///run/d.sock").unwrap(),
            Address::Unix("/run/d.sock".into())
        );
    }

    #[test]
    fn parses_tcp() {
        assert_eq!(
            parse("tcp://127.0.0.1:10042").unwrap(),
            tcp("127.0.0.1", 10042)
        );
        assert_eq!(parse("tcp://example.org:1").unwrap(), tcp("example.org", 1));
        assert_eq!(parse("tcp://[::1]:8080").unwrap(), tcp("::1", 8080));
        assert_eq!(
            parse("tcp://localhost:65535").unwrap(),
            tcp("localhost", 65535)
        );
    }

    #[test]
    fn tcp_port_defaults_to_10042() {
        assert_eq!(parse("tcp://localhost").unwrap(), tcp("localhost", 10042));
        assert_eq!(parse("tcp://[::1]").unwrap(), tcp("::1", 10042));
    }

    #[test]
    fn refuses_bad_schemes() {
        let e = refused("udp://x");
        assert!(e.contains("expected unix://PATH or tcp://HOST:PORT"), "{e}");
        refused("daemon.sock");
        refused("");
        refused("UNIX://daemon.sock");
        refused("unix:/daemon.sock");
    }

    #[test]
    fn refuses_empty_parts() {
        assert!(refused("unix://").contains("non-empty path"));
        assert!(refused("tcp://").contains("non-empty host"));
        assert!(refused("tcp://:80").contains("non-empty host"));
        assert!(refused("tcp://[]:80").contains("non-empty host"));
    }

    #[test]
    fn refuses_bad_ports() {
        for s in [
            "tcp://h:0",
            "tcp://h:65536",
            "tcp://h:99999999999",
            "tcp://h:x",
            "tcp://h:",
            "tcp://h:+80",
            "tcp://h:-1",
            "tcp://[::1]:",
        ] {
            assert!(refused(s).contains("port in 1..=65535"), "{s}");
        }
    }

    #[test]
    fn refuses_bad_hosts() {
        for s in [
            "tcp://::1",
            "tcp://::1:80",
            "tcp://[::1]80",
            "tcp://[::1",
            "tcp://[nope]:80",
            "tcp://a b:80",
            "tcp://a/b:80",
        ] {
            assert!(parse(s).is_err(), "{s}");
            refused(s);
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "unix://daemon.sock",
            "unix:///run/d.sock",
            "tcp://127.0.0.1:10042",
            "tcp://[::1]:8080",
            "tcp://[fe80::1]:1",
            "tcp://localhost:9",
        ] {
            let a = parse(s).unwrap();
            assert_eq!(a.to_string(), s);
            assert_eq!(parse(&a.to_string()).unwrap(), a);
        }
        assert_eq!(parse("tcp://h").unwrap().to_string(), "tcp://h:10042");
    }

    #[test]
    fn make_absolute_joins_relative_unix_paths() {
        let cwd = Path::new("/srv/d");
        let mut a = parse("unix://run/d.sock").unwrap();
        a.make_absolute(cwd);
        assert_eq!(a, Address::Unix("/srv/d/run/d.sock".into()));
        let mut b = parse("unix:///tmp/d.sock").unwrap();
        b.make_absolute(cwd);
        assert_eq!(b, Address::Unix("/tmp/d.sock".into()));
        let mut c = tcp("h", 1);
        c.make_absolute(cwd);
        assert_eq!(c, tcp("h", 1));
        assert_eq!(c.unix_path(), None);
    }

    #[test]
    fn loopback() {
        assert!(parse("unix://x").unwrap().is_loopback());
        for host in ["localhost", "LocalHost", "127.0.0.1", "127.1.2.3", "::1"] {
            assert!(tcp(host, 1).is_loopback(), "{host}");
        }
        for host in ["0.0.0.0", "10.0.0.1", "::", "example.org", "128.0.0.1"] {
            assert!(!tcp(host, 1).is_loopback(), "{host}");
        }
    }

    #[test]
    fn validate_checks_hand_built_addresses() {
        assert!(tcp("h", 1).validate().is_ok());
        assert!(Address::Unix("x".into()).validate().is_ok());
        let e = tcp("h", 0).validate().unwrap_err().to_string();
        assert!(
            e.contains("sockethandler") && e.contains("tcp://h:0"),
            "{e}"
        );
        assert!(tcp("", 1).validate().is_err());
        assert!(tcp("a b", 1).validate().is_err());
        assert!(Address::Unix(PathBuf::new()).validate().is_err());
        assert!(Address::Unix("a\0b".into()).validate().is_err());
    }
}
