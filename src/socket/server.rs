//! The control socket's accept loop and connection table.
//!
//! For now a connection is accepted, counted against `socketmaxconnections`, read and
//! discarded until the peer hangs up; the RPC layer plugs in here.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::PathBuf;

use slog::{Logger, debug, warn};

use super::{Listener, Stream};
use crate::bus::SocketEvent;
use crate::config::Config;
use crate::reactor::{Handle, Interest, Source, Token};

/// Accepts per turn at most this many connections, so a connection storm cannot starve the
/// rest of the reactor.
const ACCEPTS_PER_TURN: usize = 64;

struct Connection {
    source: Source<Stream>,
    peer: String,
}

/// The listening socket and its connections.
pub struct Server {
    handle: Handle,
    listener: Source<Listener>,
    connections: HashMap<Token, Connection>,
    max_connections: usize,
    buffer: Vec<u8>,
    logger: Logger,
}

impl Server {
    /// Starts serving `listener` in the reactor behind `handle`.
    ///
    /// # Errors
    ///
    /// The poller's error registering the listener.
    pub fn new(
        handle: Handle,
        listener: Listener,
        config: &Config,
        logger: Logger,
    ) -> io::Result<Server> {
        let listener = handle.register(listener, Interest::READ)?;
        Ok(Server {
            handle,
            listener,
            connections: HashMap::new(),
            max_connections: config.socketmaxconnections,
            buffer: vec![0; config.socketbuffer],
            logger,
        })
    }

    /// The number of open connections.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Handles readiness for `token` if it is the server's; socket events go to `events`.
    /// Returns false for a token that is not the server's.
    pub fn ready(&mut self, token: Token, events: &mut Vec<SocketEvent>) -> bool {
        if token == self.listener.token() {
            self.accept(events);
            return true;
        }
        let Some(conn) = self.connections.get_mut(&token) else {
            return false;
        };
        match conn.source.get_mut().read(&mut self.buffer) {
            Ok(0) => self.hangup(token, events),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                debug!(self.logger, "connection error"; "peer" => &conn.peer, "error" => %e);
                self.hangup(token, events);
            }
        }
        true
    }

    fn accept(&mut self, events: &mut Vec<SocketEvent>) {
        for _ in 0..ACCEPTS_PER_TURN {
            match self.listener.get_ref().accept() {
                Ok(Some((stream, peer))) => {
                    if self.connections.len() >= self.max_connections {
                        warn!(self.logger, "connection refused: too many connections";
                            "peer" => &peer, "socketmaxconnections" => self.max_connections);
                        continue;
                    }
                    match self.handle.register(stream, Interest::READ) {
                        Ok(source) => {
                            debug!(self.logger, "client connected"; "peer" => &peer);
                            events.push(SocketEvent::connect(peer.clone()));
                            self.connections
                                .insert(source.token(), Connection { source, peer });
                        }
                        Err(e) => warn!(self.logger, "cannot poll a connection"; "error" => %e),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // EMFILE and friends: log and let the next turn retry.
                    warn!(self.logger, "accept failed"; "error" => %e);
                    break;
                }
            }
        }
    }

    fn hangup(&mut self, token: Token, events: &mut Vec<SocketEvent>) {
        if let Some(conn) = self.connections.remove(&token) {
            debug!(self.logger, "client hung up"; "peer" => &conn.peer);
            events.push(SocketEvent::hangup(conn.peer));
        }
    }

    /// Stops accepting and closes every connection; returns the unix socket path to remove.
    pub fn close(self) -> Option<PathBuf> {
        let path = self.listener.get_ref().unix_path().map(PathBuf::from);
        drop(self.connections);
        drop(self.listener);
        path
    }
}
