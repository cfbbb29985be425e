//! A blocking client for the control socket, in any of the three framings the daemon
//! serves (see `PROTOCOL.md`): newline-delimited JSON-RPC 2.0, JSON-RPC 2.0 with
//! `Content-Length` headers, and MessagePack-RPC.
//!
//! Every call has a deadline (5 s unless changed) covering both sending the request and
//! reading the whole reply, and no reply may be larger than 64 MiB. After an I/O or protocol
//! error the connection is out of step with the daemon and every later call fails: connect
//! again. An error reply ([`Error::Rpc`]) leaves the connection usable.
//!
//! A client can also subscribe to the daemon's bus ([`Client::subscribe`]): the events come
//! as notifications between the replies, and [`Client::next_event`] (or the iterator
//! [`Client::events`]) returns them in order, those that arrived while a call waited for its
//! reply first.
//!
//! # Examples
//!
//! ```no_run
//! use daimon::Client;
//! use serde_json::json;
//!
//! let mut client = Client::connect("unix:///run/echo.sock")?;
//! let reply = client.call("examples.echo", json!(["hello"]))?;
//! assert_eq!(reply, json!("hello"));
//! # Ok::<(), daimon::Error>(())
//! ```

use std::fmt;
use std::io::{self, ErrorKind, Write};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};
use crate::socket::Address;
use conn::{Conn, open};
use events::Queue;
pub use events::{Event, Events};
use wire::{Framer, Incoming, decode, encode, reply_result};

/// The timeout of [`Client::connect`].
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest reply the client reads, in bytes; a longer one is a protocol error.
const MAX_REPLY: usize = 64 << 20;

/// The longest `Content-Length` header line, and the most header lines, of a reply.
const MAX_HEADER_LINE: u64 = 1024;
const MAX_HEADERS: usize = 32;

/// The framing a [`Client`] speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// JSON-RPC 2.0, one compact JSON value per line.
    #[default]
    Json,
    /// JSON-RPC 2.0, each message preceded by `Content-Length: N\r\n\r\n` (as LSP).
    ContentLength,
    /// MessagePack-RPC.
    MessagePack,
}

/// A connection to a daemon's control socket.
///
/// Calls are made one at a time, each waiting for its reply. Request ids count up from 1
/// (JSON-RPC) or 0 (MessagePack-RPC), and every reply must carry the id of its request.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use daimon::client::{Client, Protocol};
/// use serde_json::json;
///
/// let address = "tcp://127.0.0.1:10042".parse()?;
/// let mut client = Client::connect_with(&address, Protocol::MessagePack, Duration::from_secs(1))?;
/// client.auth("s3cret")?;
/// let status = client.call("daemon.status", serde_json::Value::Null)?;
/// println!("pid {}", status["pid"]);
/// # Ok::<(), daimon::Error>(())
/// ```
pub struct Client {
    conn: Conn,
    /// What was read and is not yet a whole message.
    framer: Framer,
    protocol: Protocol,
    /// The deadline of each call, from its start; `None` waits forever.
    timeout: Option<Duration>,
    /// The deadline of the call or the wait in progress, for its timeout error.
    waiting: Option<Duration>,
    /// The id of the next request.
    next_id: u64,
    /// The events that arrived while a call waited for its reply, for [`Client::next_event`].
    events: Queue,
    /// The address, for error messages.
    address: String,
    /// Why the connection can no longer be used, after an I/O or protocol error.
    broken: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("protocol", &self.protocol)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `address` (`unix://PATH` or `tcp://HOST:PORT`), speaking newline-delimited
    /// JSON-RPC with a 5 s timeout.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed address, [`Error::Io`] (naming the address) when
    /// the connection fails.
    pub fn connect(address: &str) -> Result<Client> {
        Client::connect_with(&address.parse()?, Protocol::Json, DEFAULT_TIMEOUT)
    }

    /// Connects to `address` speaking `protocol`; `timeout` bounds the TCP connect and then
    /// every call, as [`Client::set_timeout`] does. A zero timeout never times out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use daimon::client::{Client, Protocol};
    ///
    /// let address = "unix://daemon.sock".parse()?;
    /// let client = Client::connect_with(&address, Protocol::ContentLength, Duration::from_secs(2))?;
    /// assert_eq!(client.protocol(), Protocol::ContentLength);
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`], naming the address, when the connection fails or times out.
    pub fn connect_with(
        address: &Address,
        protocol: Protocol,
        timeout: Duration,
    ) -> Result<Client> {
        let timeout = (!timeout.is_zero()).then_some(timeout);
        let stream = open(address, timeout).map_err(|e| {
            let hint = match e.kind() {
                ErrorKind::NotFound | ErrorKind::ConnectionRefused => " (is the daemon running?)",
                _ => "",
            };
            Error::Io(io::Error::new(
                e.kind(),
                format!("connecting to {address}: {e}{hint}"),
            ))
        })?;
        let conn = Conn {
            stream,
            deadline: None,
        };
        Ok(Client {
            conn,
            framer: Framer::new(protocol),
            protocol,
            timeout,
            waiting: timeout,
            next_id: match protocol {
                Protocol::MessagePack => 0,
                Protocol::Json | Protocol::ContentLength => 1,
            },
            events: Queue::default(),
            address: address.to_string(),
            broken: None,
        })
    }

    /// Sets the deadline of every later call: sending the request and reading the whole
    /// reply must take no longer. A zero timeout never times out.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = (!timeout.is_zero()).then_some(timeout);
    }

    /// The framing this client speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Calls `method` and returns its result.
    ///
    /// `params` is an array (positional parameters), an object (named ones) or
    /// `Value::Null` (none); any other value is sent as the one positional parameter, so
    /// a single array parameter must be wrapped: `json!([[1, 2]])`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use serde_json::json;
    ///
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// let methods = client.call("system.listMethods", json!(null))?;
    /// let help = client.call("system.methodHelp", json!(["examples.echo"]))?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// - [`Error::Rpc`] when the daemon answers with an error (the connection stays usable);
    /// - [`Error::Io`] of kind [`ErrorKind::TimedOut`] when the reply does not come within
    ///   the timeout, [`ErrorKind::UnexpectedEof`] when the daemon closes the connection
    ///   first, or another I/O error;
    /// - [`Error::Protocol`] for a malformed reply, one with another id, or one over 64 MiB.
    ///
    /// The events of the client's subscriptions that arrive before the reply are kept for
    /// [`Client::next_event`] (at most 1024; past that they are counted, and reported as one
    /// `daemon.events.dropped` event once the kept ones are read).
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.call_within(method, params, self.timeout)
    }

    /// [`Client::call`] with its own deadline, `None` for none.
    fn call_within(
        &mut self,
        method: &str,
        params: Value,
        timeout: Option<Duration>,
    ) -> Result<Value> {
        self.usable()?;
        let id = self.next_id;
        self.next_id = match self.protocol {
            Protocol::MessagePack => (id + 1) & u64::from(u32::MAX),
            Protocol::Json | Protocol::ContentLength => id + 1,
        };
        let request = encode(self.protocol, method, params, Some(id))?;
        self.start_deadline(timeout);
        let result = self
            .send(method, &request)
            .and_then(|()| self.reply(id, method));
        if let Err(e) = &result {
            if !matches!(e, Error::Rpc { .. }) {
                self.broken = Some(e.to_string());
            }
        }
        result
    }

    /// Reads until the reply to request `id`, keeping the events that come first.
    fn reply(&mut self, id: u64, method: &str) -> Result<Value> {
        let what = format!("reply to {method}");
        loop {
            match self.receive(&what)? {
                Incoming::Reply(reply) => return reply_result(self.protocol, reply, id, method),
                Incoming::Notification { method, params } => {
                    self.events.push_notification(&method, params)?;
                }
            }
        }
    }

    /// Sends a notification: `method` is called, but the daemon never replies, not even
    /// with an error. `params` is as for [`Client::call`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut client = daimon::Client::connect("unix://daemon.sock")?;
    /// client.notify("examples.echo", serde_json::json!(["nobody listens"]))?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the request cannot be sent within the timeout.
    pub fn notify(&mut self, method: &str, params: Value) -> Result<()> {
        self.usable()?;
        let request = encode(self.protocol, method, params, None)?;
        self.start_deadline(self.timeout);
        let result = self.send(method, &request);
        if let Err(e) = &result {
            self.broken = Some(e.to_string());
        }
        result
    }

    /// Authenticates with `system.auth(secret)`, which a TCP daemon with `socketsecret`
    /// requires before any other call.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut client = daimon::Client::connect("tcp://127.0.0.1:10042")?;
    /// client.auth("s3cret")?;
    /// # Ok::<(), daimon::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Rpc`] `-32000` `authentication failed` for a wrong secret (the daemon then
    /// closes the connection), [`Error::Protocol`] if the result is not `true`, and the
    /// errors of [`Client::call`].
    pub fn auth(&mut self, secret: &str) -> Result<()> {
        match self.call("system.auth", Value::Array(vec![secret.into()]))? {
            Value::Bool(true) => Ok(()),
            other => Err(Error::Protocol(format!(
                "system.auth returned {other}, expected true"
            ))),
        }
    }

    /// Fails if an earlier error left the connection out of step.
    fn usable(&self) -> Result<()> {
        match &self.broken {
            None => Ok(()),
            Some(why) => Err(Error::Io(io::Error::new(
                ErrorKind::NotConnected,
                format!(
                    "the connection to {} is unusable after an earlier error ({why}); connect again",
                    self.address
                ),
            ))),
        }
    }

    /// Starts the deadline of what comes next (a call, a wait for an event).
    fn start_deadline(&mut self, timeout: Option<Duration>) {
        self.waiting = timeout;
        self.conn.deadline = timeout.map(|t| Instant::now() + t);
    }

    fn send(&mut self, method: &str, request: &[u8]) -> Result<()> {
        let conn = &mut self.conn;
        conn.write_all(request)
            .and_then(|()| conn.flush())
            .map_err(|e| self.io_error(e, || format!("sending {method} to {}", self.address)))
    }

    /// Reads one message before the connection's deadline; `what` names what is awaited
    /// (`reply to M`, `event`), for the errors. A timeout keeps what was read so far.
    fn receive(&mut self, what: &str) -> Result<Incoming> {
        let frame = self
            .framer
            .read(&mut self.conn)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidData => Error::Protocol(format!("{what}: {e}")),
                ErrorKind::UnexpectedEof => Error::Io(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "{} closed the connection (waiting for {what})",
                        self.address
                    ),
                )),
                _ => self.io_error(e, || format!("no {what} from {}", self.address)),
            })?;
        decode(self.protocol, &frame, what)
    }

    /// Adds what was being done to an I/O error; a timeout (a socket's `WouldBlock` too)
    /// becomes `TimedOut`.
    fn io_error(&self, e: io::Error, doing: impl FnOnce() -> String) -> Error {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                let after = self.waiting.unwrap_or_default();
                Error::Io(io::Error::new(
                    ErrorKind::TimedOut,
                    format!("{}: timed out after {after:?}", doing()),
                ))
            }
            kind => Error::Io(io::Error::new(kind, format!("{}: {e}", doing()))),
        }
    }
}

mod conn;
mod events;
mod wire;

#[cfg(test)]
mod tests;
