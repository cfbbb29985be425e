//! The control socket's accept loop and connections: reading, writing, limits, deadlines.
//!
//! Everything is non-blocking and bounded per turn: at most [`ACCEPTS_PER_TURN`] accepts and
//! [`READ_PER_TURN`] bytes per connection, so one busy client cannot starve the others.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slog::{Logger, debug, warn};

use super::SocketEvent;
use super::connection::{Admission, Connection, Limits};
use super::{Listener, Peer, Stream};
use crate::config::{Config, Peers};
use crate::driver::Due;
use crate::reactor::{Handle, Interest, Source, TimerId, Timers, Token, TokenMap};
use crate::rpc::{Engine, RpcError, Ticket};
use serde_json::Value;

/// Accepts per turn at most this many connections.
pub const ACCEPTS_PER_TURN: usize = 64;
/// Reads per turn at most this many bytes from one connection.
pub const READ_PER_TURN: usize = 64 * 1024;

struct Client {
    source: Source<Stream>,
    conn: Connection,
    /// Counted against `socketmaxconnections` (refused connections are not).
    admitted: bool,
    /// The last time bytes moved either way.
    progress: Instant,
    /// The armed deadline timer and when it fires.
    deadline: Option<(TimerId, Instant)>,
}

/// The listening socket and its connections.
pub struct Server {
    handle: Handle,
    listener: Source<Listener>,
    clients: TokenMap<Client>,
    admitted: usize,
    refused: usize,
    max_connections: usize,
    limits: Limits,
    chunk: usize,
    timeout: Duration,
    idle_timeout: Duration,
    peers: Peers,
    owner: u32,
    secret: Option<Arc<str>>,
    deadlines: Box<dyn Deadlines>,
    buffer: Vec<u8>,
    logger: Logger,
}

/// Where the server arms its connections' deadlines: the daemon's one timer queue, where a
/// due deadline comes back to [`Server::deadline`].
pub(crate) trait Deadlines {
    fn arm(&mut self, at: Instant, token: Token) -> TimerId;
    fn cancel(&mut self, id: TimerId);
}

impl<D: From<Token> + Clone> Deadlines for Rc<RefCell<Timers<Due<D>>>> {
    fn arm(&mut self, at: Instant, token: Token) -> TimerId {
        self.borrow_mut().insert(at, None, Due::Own(D::from(token)))
    }

    fn cancel(&mut self, id: TimerId) {
        self.borrow_mut().cancel(id);
    }
}

impl Server {
    /// Starts serving `listener` in the reactor behind `handle`, arming its connections'
    /// deadlines on `deadlines`.
    ///
    /// # Errors
    ///
    /// The poller's error registering the listener.
    pub(crate) fn new(
        handle: Handle,
        listener: Listener,
        config: &Config,
        logger: Logger,
        deadlines: Box<dyn Deadlines>,
    ) -> io::Result<Server> {
        let listener = handle.register(listener, Interest::READ)?;
        Ok(Server {
            handle,
            listener,
            clients: TokenMap::default(),
            admitted: 0,
            refused: 0,
            max_connections: config.socketmaxconnections,
            limits: Limits {
                max_request: config.maxrequestsize,
                max_output: config.socketmaxoutput,
                max_batch: config.socketmaxbatch,
                max_values: config.maxrequestvalues,
            },
            chunk: config.socketbuffer,
            timeout: config.sockettimeout,
            idle_timeout: config.socketidletimeout,
            peers: config.socketpeers.clone(),
            owner: nix::unistd::getuid().as_raw(),
            secret: config.socketsecret.as_deref().map(Arc::from),
            deadlines,
            buffer: vec![0; config.socketbuffer],
            logger,
        })
    }

    /// Handles readiness for `token` if it is the server's; returns false if it is not.
    pub fn ready(
        &mut self,
        token: Token,
        readable: bool,
        writable: bool,
        engine: &mut dyn Engine,
        events: &mut Vec<SocketEvent>,
    ) -> bool {
        if token == self.listener.token() {
            self.accept(events);
            return true;
        }
        if !self.clients.contains_key(&token) {
            return false;
        }
        if readable && !self.read(token, engine) {
            return self.drop_client(token, events);
        }
        if (writable || readable) && !self.flush_and_resume(token, engine) {
            return self.drop_client(token, events);
        }
        self.settle(token, events);
        true
    }

    fn accept(&mut self, events: &mut Vec<SocketEvent>) {
        for _ in 0..ACCEPTS_PER_TURN {
            let (stream, peer) = match self.listener.get_ref().accept() {
                Ok(Some(accepted)) => accepted,
                Ok(None) => break,
                Err(e) => {
                    // EMFILE and friends: the backlog keeps the client; retry next turn.
                    warn!(self.logger, "accept failed"; "error" => %e);
                    break;
                }
            };
            let admission = self.admission(&peer);
            let admitted = admission == Admission::Open;
            if !admitted && self.refused >= self.max_connections {
                warn!(self.logger, "connection closed at once: too many refused connections"; "peer" => &peer.name);
                continue;
            }
            let source = match self.handle.register(stream, Interest::READ) {
                Ok(source) => source,
                Err(e) => {
                    warn!(self.logger, "cannot poll a connection"; "error" => %e);
                    continue;
                }
            };
            let token = source.token();
            // Unix peers are trusted by their credentials; tcp ones need the secret.
            let secret = peer.uid.is_none().then(|| self.secret.clone()).flatten();
            let conn = Connection::new(peer.name.clone(), self.limits, admission, secret);
            if admitted {
                self.admitted += 1;
                debug!(self.logger, "client connected"; "peer" => &peer.name);
                events.push(SocketEvent::connect(peer.name));
            } else {
                self.refused += 1;
            }
            self.clients.insert(
                token,
                Client {
                    source,
                    conn,
                    admitted,
                    progress: Instant::now(),
                    deadline: None,
                },
            );
            self.schedule(token);
        }
    }

    fn admission(&self, peer: &Peer) -> Admission {
        if let Some(uid) = peer.uid {
            if !self.peers.allows(uid, self.owner) {
                warn!(self.logger, "connection refused: permission denied"; "peer" => &peer.name);
                return Admission::Refused(RpcError::server_error("permission denied"));
            }
        }
        if self.admitted >= self.max_connections {
            warn!(self.logger, "connection refused: too many connections";
                "peer" => &peer.name, "socketmaxconnections" => self.max_connections);
            return Admission::Refused(RpcError::server_error("too many connections"));
        }
        Admission::Open
    }

    /// Reads what is there (bounded) and answers it; false if the connection is dead.
    fn read(&mut self, token: Token, engine: &mut dyn Engine) -> bool {
        let connections = self.admitted;
        let client = self.clients.get_mut(&token).expect("checked by the caller");
        let mut total = 0;
        while total < READ_PER_TURN && client.conn.wants_input() {
            match client.source.get_mut().read(&mut self.buffer[..self.chunk]) {
                Ok(0) => {
                    if client.conn.has_partial_input() {
                        debug!(self.logger, "client hung up in the middle of a request"; "peer" => client.conn.peer());
                    }
                    client.conn.hangup();
                    break;
                }
                Ok(n) => {
                    total += n;
                    client.progress = Instant::now();
                    client.conn.receive(&self.buffer[..n], engine, connections);
                    if n < self.chunk {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(self.logger, "read failed"; "peer" => client.conn.peer(), "error" => %e);
                    return false;
                }
            }
        }
        true
    }

    /// Writes what it can of the pending output; false if the connection is dead.
    fn flush(&mut self, token: Token) -> bool {
        let client = self.clients.get_mut(&token).expect("checked by the caller");
        while !client.conn.output().is_empty() {
            match client.source.get_mut().write(client.conn.output()) {
                Ok(0) => return false,
                Ok(n) => {
                    client.conn.consume_output(n);
                    client.progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!(self.logger, "write failed"; "peer" => client.conn.peer(), "error" => %e);
                    return false;
                }
            }
        }
        true
    }

    /// Writes what it can, then lets the connection answer what it buffered while its output
    /// was full, for as long as the socket takes the replies; false if the connection is dead.
    fn flush_and_resume(&mut self, token: Token, engine: &mut dyn Engine) -> bool {
        let connections = self.admitted;
        loop {
            if !self.flush(token) {
                return false;
            }
            let client = self.clients.get_mut(&token).expect("checked by the caller");
            if !client.conn.output().is_empty() || !client.conn.resume(engine, connections) {
                return true;
            }
        }
    }

    /// After reading or writing: close a finished connection, or set what it waits for and
    /// when it times out. A connection whose output is full is not read until it drains: a
    /// client that stops reading is dropped by its deadline, one that reads slowly is served.
    fn settle(&mut self, token: Token, events: &mut Vec<SocketEvent>) {
        let client = self.clients.get_mut(&token).expect("checked by the caller");
        let pending = !client.conn.output().is_empty();
        if client.conn.is_closing() && !pending {
            self.drop_client(token, events);
            return;
        }
        let interest = match (client.conn.wants_input(), pending) {
            (false, _) => Interest::WRITE,
            (true, true) => Interest::BOTH,
            (true, false) => Interest::READ,
        };
        if let Err(e) = client.source.set_interest(interest) {
            warn!(self.logger, "cannot poll a connection"; "error" => %e);
            self.drop_client(token, events);
            return;
        }
        self.schedule(token);
    }

    /// How long the connection may go without progress in its current state.
    fn allowance(&self, client: &Client) -> Option<Duration> {
        if client.conn.waiting_for().is_some() {
            // Waiting for the daemon (a worker's acknowledgement, which times out itself).
            return None;
        }
        let busy = !client.admitted
            || client.conn.is_closing()
            || client.conn.has_partial_input()
            || !client.conn.output().is_empty();
        if busy {
            Some(self.timeout)
        } else if self.idle_timeout.is_zero() {
            None
        } else {
            Some(self.idle_timeout)
        }
    }

    /// Arms the connection's deadline if none is armed or the armed one is too late. A
    /// deadline armed too early is harmless: [`Server::expire`] re-arms it.
    fn schedule(&mut self, token: Token) {
        let Some(client) = self.clients.get(&token) else {
            return;
        };
        let Some(allowance) = self.allowance(client) else {
            return;
        };
        let due = client.progress + allowance;
        if client.deadline.is_some_and(|(_, at)| at <= due) {
            return;
        }
        let client = self.clients.get_mut(&token).expect("present above");
        if let Some((old, _)) = client.deadline.take() {
            self.deadlines.cancel(old);
        }
        let id = self.deadlines.arm(due, token);
        client.deadline = Some((id, due));
    }

    /// Writes the reply a connection was waiting for (a worker's acknowledgement), then
    /// serves what that connection sent meanwhile.
    pub fn complete(
        &mut self,
        ticket: Ticket,
        outcome: Result<Value, RpcError>,
        engine: &mut dyn Engine,
        events: &mut Vec<SocketEvent>,
    ) {
        let connections = self.admitted;
        let Some((&token, client)) = self
            .clients
            .iter_mut()
            .find(|(_, c)| c.conn.waiting_for() == Some(ticket))
        else {
            return;
        };
        client.conn.complete(ticket, outcome, engine, connections);
        if !self.flush_and_resume(token, engine) {
            self.drop_client(token, events);
            return;
        }
        self.settle(token, events);
    }

    /// A connection's deadline is due: it is closed if it made no progress since, else its
    /// deadline is armed again.
    pub(crate) fn deadline(&mut self, token: Token, now: Instant, events: &mut Vec<SocketEvent>) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.deadline = None;
        let client = &self.clients[&token];
        match self.allowance(client) {
            Some(allowance) if now >= client.progress + allowance => {
                let why = if !client.admitted {
                    "refused connection sent nothing"
                } else if !client.conn.output().is_empty() {
                    "does not read its replies"
                } else if client.conn.has_partial_input() {
                    "stalled in the middle of a request"
                } else {
                    "idle"
                };
                warn!(self.logger, "client dropped after its timeout"; "peer" => client.conn.peer(), "why" => why);
                self.drop_client(token, events);
            }
            _ => self.schedule(token),
        }
    }

    /// Forgets a connection (closing its socket); always true, for [`Server::ready`].
    fn drop_client(&mut self, token: Token, events: &mut Vec<SocketEvent>) -> bool {
        if let Some(client) = self.clients.remove(&token) {
            if let Some((id, _)) = client.deadline {
                self.deadlines.cancel(id);
            }
            if client.admitted {
                self.admitted -= 1;
                debug!(self.logger, "client hung up"; "peer" => client.conn.peer());
                events.push(SocketEvent::hangup(client.conn.peer()));
            } else {
                self.refused -= 1;
            }
        }
        true
    }

    /// Stops accepting, writes what it can of pending replies without waiting, closes every
    /// connection; returns the unix socket path to remove.
    pub fn close(mut self) -> Option<PathBuf> {
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.flush(token);
        }
        let path = self.listener.get_ref().unix_path().map(PathBuf::from);
        drop(self.clients);
        drop(self.listener);
        path
    }
}
