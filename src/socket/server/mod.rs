//! The control socket's accept loop and connections: reading, writing, limits, deadlines.
//!
//! Everything is non-blocking and bounded per turn: at most [`ACCEPTS_PER_TURN`] accepts and
//! [`READ_PER_TURN`] bytes per connection, so one busy client cannot starve the others.
//!
//! No client, nor a few, can lock the others out:
//!
//! - a request must arrive whole within `sockettimeout` of its first byte (bytes that
//!   trickle in do not extend it), and a refused connection is closed `sockettimeout` after
//!   it was accepted;
//! - a tcp connection that has not presented the secret is closed `socketauthtimeout` after
//!   it was accepted, and at the cap the oldest such connection makes room for a newcomer,
//!   so idle strangers never keep out the administrator who has the secret; likewise an
//!   idle unix peer that `socketpeers` lets in but is neither root nor the daemon's user
//!   makes room for one that is (authenticated and owner peers are never evicted);
//! - before an accept is refused at the cap, connections whose peer already hung up are
//!   dropped, so they stop counting; one accepted at the cap all the same is admitted or
//!   refused at its first request, when the cap is checked again (a client that connects
//!   anew for each call opens the next connection before it closes the last);
//! - out of descriptors (EMFILE, ENFILE), accepting pauses for [`ACCEPT_PAUSE`] instead of
//!   spinning on the pending connection, with one log line per episode;
//! - the error to a failed `system.auth` (or anything else that closes an unauthenticated
//!   connection) is written [`AUTH_FAILURE_DELAY`] later, the connection keeping its slot
//!   meanwhile: guesses are bounded by `socketmaxconnections` per delay, and the answer to
//!   a guess cannot be had sooner by hanging up;
//! - lines about single connections are logged at most once a second per kind.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slog::{Logger, debug, warn};

use super::SocketEvent;
use super::connection::{Connection, Limits};
use super::deadline::{Clock, Phase, Timeouts};
use super::quiet::{Noise, Quiet};
use super::subscribers::{EVENT_QUEUE, Subscribers};
use super::{Listener, Stream};
use crate::config::{Config, Peers};
use crate::driver::Due;
use crate::reactor::{Handle, Interest, Source, TimerId, Timers, Token, TokenMap};
use crate::rpc::{Engine, RpcError, Ticket};
use serde_json::Value;

/// Accepts per turn at most this many connections.
pub const ACCEPTS_PER_TURN: usize = 64;
/// Reads per turn at most this many bytes from one connection.
pub const READ_PER_TURN: usize = 64 * 1024;
/// How long accepting pauses when the process or the system is out of descriptors.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// How long the reply that ends an unauthenticated connection (a wrong secret) is held.
pub const AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

struct Client {
    source: Source<Stream>,
    conn: Connection,
    /// Counted against `socketmaxconnections` (refused connections are not).
    admitted: bool,
    /// A unix peer that is neither root nor the daemon's user (let in by `socketpeers`):
    /// while idle, it makes room for one that is.
    guest: bool,
    /// What its deadline is computed from.
    clock: Clock,
    /// Its last reply was held back once already (it is held once).
    delayed: bool,
    /// The armed deadline timer and when it fires.
    deadline: Option<(TimerId, Instant)>,
    /// It holds event subscriptions: never idle.
    subscribed: bool,
    /// Accepted at the cap (and counted as refused): admitted or refused at its first
    /// request.
    provisional: bool,
}

impl Client {
    fn phase(&self) -> Phase {
        let unsent = !self.conn.output().is_empty();
        Phase {
            admitted: self.admitted,
            waiting: self.conn.waiting_for().is_some(),
            reply_due: self.conn.reply_deadline().map(|(at, _)| at),
            subscribed: self.subscribed,
            needs_secret: self.conn.needs_secret(),
            partial: self.conn.has_partial_input(),
            writing: self.conn.is_closing() || unsent,
            unsent,
        }
    }
}

/// The listening socket and its connections.
pub struct Server {
    handle: Handle,
    /// The listening socket; `None` once the daemon stops accepting (it is stopping, and
    /// only its subscribers are still served, their events and nothing else).
    listener: Option<Source<Listener>>,
    listener_token: Token,
    clients: TokenMap<Client>,
    /// The connection that waits for each deferred reply: a reply finds its connection at
    /// once, however many connections wait.
    waiting: std::collections::HashMap<Ticket, Token>,
    admitted: usize,
    refused: usize,
    max_connections: usize,
    limits: Limits,
    chunk: usize,
    timeouts: Timeouts,
    /// While out of descriptors: the timer that resumes accepting.
    accept_paused: Option<TimerId>,
    /// Whether the current out-of-descriptors episode was logged.
    starved: bool,
    quiet: [Quiet; 4],
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
        if listener.get_ref().unix_path().is_none() && config.socketsecret.is_none() {
            warn!(logger, "tcp control socket without socketsecret: every local user may call every method";
                "socket" => %config.sockethandler);
        }
        Ok(Server {
            handle,
            listener_token: listener.token(),
            listener: Some(listener),
            clients: TokenMap::default(),
            waiting: std::collections::HashMap::new(),
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
            timeouts: Timeouts {
                request: config.sockettimeout,
                idle: config.socketidletimeout,
                auth: config.socketauthtimeout,
            },
            accept_paused: None,
            starved: false,
            quiet: [Quiet::default(); 4],
            peers: config.socketpeers.clone(),
            owner: nix::unistd::getuid().as_raw(),
            secret: config.socketsecret.as_deref().map(Arc::from),
            deadlines,
            buffer: vec![0; config.socketbuffer],
            logger,
        })
    }

    /// Takes the limits and secret of a reloaded `config` for the connections accepted from
    /// now on (a connection keeps the sizes it was accepted with: a client in the middle of a
    /// request is never cut by a reload), and its timeouts for every connection at its next
    /// deadline. The connection cap counts the current connections at once: lowered under
    /// them, the next ones are refused until enough close.
    pub(crate) fn reconfigure(&mut self, config: &Config) {
        self.max_connections = config.socketmaxconnections;
        self.limits = Limits {
            max_request: config.maxrequestsize,
            max_output: config.socketmaxoutput,
            max_batch: config.socketmaxbatch,
            max_values: config.maxrequestvalues,
        };
        self.chunk = config.socketbuffer;
        self.buffer = vec![0; config.socketbuffer];
        self.timeouts = Timeouts {
            request: config.sockettimeout,
            idle: config.socketidletimeout,
            auth: config.socketauthtimeout,
        };
        self.secret = config.socketsecret.as_deref().map(Arc::from);
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
        if token == self.listener_token && self.listener.is_some() {
            self.accept(events);
            return true;
        }
        let Some(client) = self.clients.get(&token) else {
            return false;
        };
        if client.clock.held_until.is_some() {
            return true;
        }
        if readable && client.provisional && admission::has_input(client.source.get_ref()) {
            self.admit_late(token, events);
        }
        if readable && !self.read(token, engine) {
            return self.drop_client(token, events);
        }
        if self.hold_failure(token) {
            return true;
        }
        if (writable || readable) && !self.flush_and_resume(token, engine) {
            return self.drop_client(token, events);
        }
        self.settle(token, events);
        true
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
                    let now = Instant::now();
                    client.clock.progress = now;
                    let before = client.conn.pending_input();
                    client.conn.receive(&self.buffer[..n], engine, connections);
                    let consumed = client.conn.pending_input() < before + n;
                    let partial = client.conn.has_partial_input();
                    client.clock.track_request(consumed, partial, now);
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
                    client.clock.progress = Instant::now();
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
            let partial = client.conn.has_partial_input();
            client.clock.track_request(true, partial, Instant::now());
        }
    }

    /// After reading or writing: close a finished connection, or set what it waits for and
    /// when it times out. A connection whose output is full is not read until it drains: a
    /// client that stops reading is dropped by its deadline, one that reads slowly is served.
    fn settle(&mut self, token: Token, events: &mut Vec<SocketEvent>) {
        let client = self.clients.get_mut(&token).expect("checked by the caller");
        if let Some(ticket) = client.conn.waiting_for() {
            self.waiting.insert(ticket, token);
        }
        let pending = !client.conn.output().is_empty();
        if client.conn.is_closing() && !pending {
            self.drop_client(token, events);
            return;
        }
        let interest = match (client.conn.wants_input(), pending) {
            // Takes no more requests (the daemon is stopping): only its events are written.
            (false, false) => Interest::NONE,
            (false, true) => Interest::WRITE,
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

    /// When the connection times out in its current state, if it does.
    fn due(&self, client: &Client) -> Option<Instant> {
        self.timeouts.due(&client.clock, client.phase())
    }

    /// After a read: holds the last reply of an unauthenticated connection that is closing
    /// (a wrong secret) for [`AUTH_FAILURE_DELAY`]; true if it is held.
    fn hold_failure(&mut self, token: Token) -> bool {
        let client = self.clients.get_mut(&token).expect("checked by the caller");
        let failed = client.admitted
            && !client.delayed
            && client.conn.needs_secret()
            && client.conn.is_closing()
            && !client.conn.output().is_empty();
        if !failed {
            return false;
        }
        client.clock.held_until = Some(Instant::now() + AUTH_FAILURE_DELAY);
        client.delayed = true;
        if let Err(e) = client.source.set_interest(Interest::NONE) {
            warn!(self.logger, "cannot poll a connection"; "error" => %e);
        }
        debug!(self.logger, "unauthenticated client's last reply held back";
            "peer" => client.conn.peer(), "delay_ms" => AUTH_FAILURE_DELAY.as_millis());
        self.schedule(token);
        true
    }

    /// Arms the connection's deadline if none is armed or the armed one is too late. A
    /// deadline armed too early is harmless: [`Server::expire`] re-arms it.
    fn schedule(&mut self, token: Token) {
        let Some(client) = self.clients.get(&token) else {
            return;
        };
        let Some(due) = self.due(client) else {
            return;
        };
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
        let Some(token) = self.waiting.remove(&ticket) else {
            return;
        };
        let Some(client) = self
            .clients
            .get_mut(&token)
            .filter(|c| c.conn.waiting_for() == Some(ticket))
        else {
            return;
        };
        let before = client.conn.pending_input();
        client.conn.complete(ticket, outcome, engine, connections);
        let (consumed, partial) = (
            client.conn.pending_input() < before,
            client.conn.has_partial_input(),
        );
        client
            .clock
            .track_request(consumed, partial, Instant::now());
        if !self.flush_and_resume(token, engine) {
            self.drop_client(token, events);
            return;
        }
        self.settle(token, events);
    }

    /// Writes the events published this turn to the connections subscribed to them, and
    /// notes which connections are subscribed (they are never idle).
    pub(crate) fn publish(&mut self, subs: &mut Subscribers, events: &mut Vec<SocketEvent>) {
        let mut touched: Vec<Token> = Vec::new();
        for conn in subs.take_touched() {
            if let Some(client) = self.clients.get_mut(&conn.token) {
                if client.conn.id() == Some(conn) {
                    client.subscribed = subs.is_subscribed(conn);
                    touched.push(conn.token);
                }
            }
        }
        for event in subs.take_published() {
            for &(conn, subscription) in &event.targets {
                let Some(client) = self.clients.get_mut(&conn.token) else {
                    continue;
                };
                if client.conn.id() != Some(conn) {
                    continue;
                }
                client.conn.push_event(&event, subscription, EVENT_QUEUE);
                // (Runs of one connection pushed once: the sort below dedups the rest.)
                if touched.last() != Some(&conn.token) {
                    touched.push(conn.token);
                }
            }
        }
        touched.sort_unstable_by_key(|t| t.0);
        touched.dedup();
        for token in touched {
            if !self.flush(token) {
                self.drop_client(token, events);
                continue;
            }
            self.settle(token, events);
        }
    }

    /// A deadline is due: the listener's accept pause ends; a connection's held reply is
    /// released; a connection is closed if its time is up, else its deadline is armed again.
    pub(crate) fn deadline(
        &mut self,
        token: Token,
        now: Instant,
        engine: &mut dyn Engine,
        events: &mut Vec<SocketEvent>,
    ) {
        if token == self.listener_token && self.listener.is_some() {
            self.resume_accepting();
            return;
        }
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.deadline = None;
        if let (Some(ticket), Some((due, timeout))) =
            (client.conn.waiting_for(), client.conn.reply_deadline())
        {
            if now >= due {
                let error =
                    RpcError::server_error(format!("no reply within {} ms", timeout.as_millis()));
                self.complete(ticket, Err(error), engine, events);
                return;
            }
        }
        if client.clock.held_until.is_some_and(|until| now >= until) {
            client.clock.held_until = None;
            client.clock.progress = now;
            if !self.flush(token) {
                self.drop_client(token, events);
                return;
            }
            self.settle(token, events);
            return;
        }
        let client = &self.clients[&token];
        match self.due(client) {
            Some(due) if now >= due => {
                let why = self.timeouts.why(&client.clock, client.phase(), now);
                let peer = client.conn.peer().to_owned();
                if let Some(suppressed) = self.quiet(Noise::TimedOut) {
                    warn!(self.logger, "client dropped after its timeout";
                        "peer" => peer, "why" => why, "suppressed" => suppressed);
                }
                self.drop_client(token, events);
            }
            _ => self.schedule(token),
        }
    }

    /// Forgets a connection (closing its socket); always true, for [`Server::ready`].
    fn drop_client(&mut self, token: Token, events: &mut Vec<SocketEvent>) -> bool {
        if let Some(client) = self.clients.remove(&token) {
            if let Some(ticket) = client.conn.waiting_for() {
                self.waiting.remove(&ticket);
            }
            if let Some((id, _)) = client.deadline {
                self.deadlines.cancel(id);
            }
            if client.admitted {
                self.admitted -= 1;
                debug!(self.logger, "client hung up"; "peer" => client.conn.peer());
                events.push(SocketEvent::hangup(client.conn.peer()).of(client.conn.id()));
            } else {
                self.refused -= 1;
            }
        }
        true
    }

    /// The daemon is stopping: closes the listening socket (returning the unix socket path
    /// it removed), and every connection but the subscribed ones, which take no more requests
    /// but go on receiving events (the workers' exits, `daemon.stop`) until [`Server::close`].
    pub(crate) fn stop_accepting(&mut self, events: &mut Vec<SocketEvent>) -> Option<PathBuf> {
        if let Some(id) = self.accept_paused.take() {
            self.deadlines.cancel(id);
        }
        let listener = self.listener.take()?;
        let path = listener.get_ref().unix_path().map(PathBuf::from);
        drop(listener);
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.flush(token);
            let client = self.clients.get_mut(&token).expect("listed above");
            if client.subscribed && client.admitted {
                client.conn.stop_requests();
                self.settle(token, events);
            } else {
                self.drop_client(token, events);
            }
        }
        path
    }

    /// Stops accepting, writes what it can of pending replies without waiting, closes every
    /// connection; returns the unix socket path to remove (if it was not removed already by
    /// [`Server::stop_accepting`]).
    pub fn close(mut self) -> Option<PathBuf> {
        if let Some(id) = self.accept_paused.take() {
            self.deadlines.cancel(id);
        }
        let tokens: Vec<Token> = self.clients.keys().copied().collect();
        for token in tokens {
            self.flush(token);
        }
        let path = self
            .listener
            .as_ref()
            .and_then(|l| l.get_ref().unix_path().map(PathBuf::from));
        drop(self.clients);
        drop(self.listener);
        path
    }
}

mod admission;
