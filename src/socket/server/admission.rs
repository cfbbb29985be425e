//! Who gets a slot: accepting (paused while out of descriptors), the credentials check and
//! the cap, and making room at the cap (hung-up connections first, then the oldest stranger).

use std::io;
use std::time::Instant;

use slog::{debug, info, warn};

use super::{ACCEPT_PAUSE, ACCEPTS_PER_TURN, Client, Server};
use crate::config::Peers;
use crate::reactor::{Interest, Token};
use crate::rpc::RpcError;
use crate::socket::connection::{Admission, Connection};
use crate::socket::deadline::Clock;
use crate::socket::quiet::Noise;
use crate::socket::{Peer, SocketEvent, Stream};

impl Server {
    pub(super) fn accept(&mut self, events: &mut Vec<SocketEvent>) {
        if self.accept_paused.is_some() {
            return;
        }
        // A sweep costs a syscall per connection: sweep again in this batch only while
        // sweeping finds hang-ups.
        let mut sweep = true;
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = &self.listener else {
                return;
            };
            let accepted = listener.get_ref().accept();
            // The episode ends when the backlog is drained, not at the first accept that
            // a freed descriptor lets through.
            if matches!(accepted, Ok(None)) && self.starved {
                self.starved = false;
                info!(self.logger, "accepting connections again");
            }
            let (stream, peer) = match accepted {
                Ok(Some(accepted)) => accepted,
                Ok(None) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE and friends: the connection stays in the backlog, and the
                    // listener stays readable. Stop polling it for a while instead of
                    // spinning on it.
                    self.pause_accepting(&e);
                    break;
                }
            };
            let allowed = peer
                .uid
                .is_none_or(|uid| self.peers.allows(uid, self.owner));
            let full = if allowed {
                self.admitted >= self.max_connections
            } else {
                self.refused >= self.max_connections
            };
            if full && sweep {
                sweep = self.sweep_hangups(events) > 0;
            }
            let owner = peer
                .uid
                .is_some_and(|uid| Peers::Owner.allows(uid, self.owner));
            if allowed && self.admitted >= self.max_connections {
                self.make_room(&peer, owner, events);
            }
            // Still full after that: the connection waits for its first request to be
            // admitted or refused, when the cap is checked again (a client that connects
            // anew for each call has hung up its last connection by then).
            let provisional = allowed && self.admitted >= self.max_connections;
            let admission = if provisional {
                Admission::Open
            } else {
                self.admission(&peer)
            };
            let admitted = admission == Admission::Open && !provisional;
            if !admitted && self.refused >= self.max_connections {
                if let Some(suppressed) = self.quiet(Noise::ClosedAtOnce) {
                    warn!(self.logger, "connection closed at once: too many refused connections";
                        "peer" => &peer.name, "suppressed" => suppressed);
                }
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
            let mut conn = Connection::new(peer.name.clone(), self.limits, admission, secret);
            conn.set_id(crate::rpc::ConnectionId::new(token));
            if admitted {
                self.admitted += 1;
                debug!(self.logger, "client connected"; "peer" => &peer.name);
                events.push(SocketEvent::connect(peer.name));
            } else {
                self.refused += 1;
            }
            let now = Instant::now();
            self.clients.insert(
                token,
                Client {
                    source,
                    conn,
                    admitted,
                    guest: peer.uid.is_some() && !owner,
                    clock: Clock::new(now),
                    delayed: false,
                    deadline: None,
                    subscribed: false,
                    provisional,
                },
            );
            self.schedule(token);
        }
    }

    /// Stops polling the listener for [`ACCEPT_PAUSE`] after an accept error, logging the
    /// first of an episode only.
    fn pause_accepting(&mut self, e: &io::Error) {
        if !self.starved {
            self.starved = true;
            warn!(self.logger, "cannot accept connections; pausing accepts until it can";
                "error" => %e, "retry_ms" => ACCEPT_PAUSE.as_millis());
        }
        let Some(listener) = &mut self.listener else {
            return;
        };
        let token = listener.token();
        if let Err(e) = listener.set_interest(Interest::NONE) {
            warn!(self.logger, "cannot poll the listener"; "error" => %e);
        }
        let id = self.deadlines.arm(Instant::now() + ACCEPT_PAUSE, token);
        self.accept_paused = Some(id);
    }

    pub(super) fn resume_accepting(&mut self) {
        if self.accept_paused.take().is_none() {
            return;
        }
        let Some(listener) = &mut self.listener else {
            return;
        };
        if let Err(e) = listener.set_interest(Interest::READ) {
            warn!(self.logger, "cannot poll the listener"; "error" => %e);
        }
    }

    /// The first bytes of a connection accepted at the cap (counted as refused meanwhile):
    /// admitted if a slot is free now, once the connections whose peer hung up are gone;
    /// refused otherwise.
    pub(super) fn admit_late(&mut self, token: Token, events: &mut Vec<SocketEvent>) {
        if self.admitted >= self.max_connections {
            self.sweep_hangups(events);
        }
        let full = self.admitted >= self.max_connections;
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        client.provisional = false;
        if full {
            let peer = client.conn.peer().to_owned();
            client
                .conn
                .refuse_admission(RpcError::server_error("too many connections"));
            if let Some(suppressed) = self.quiet(Noise::Refused) {
                warn!(self.logger, "connection refused: too many connections";
                    "peer" => peer, "socketmaxconnections" => self.max_connections,
                    "suppressed" => suppressed);
            }
            return;
        }
        client.admitted = true;
        self.refused -= 1;
        self.admitted += 1;
        debug!(self.logger, "client connected"; "peer" => client.conn.peer());
        events.push(SocketEvent::connect(client.conn.peer().to_owned()));
    }

    /// Drops the connections whose peer hung up and that have nothing left to do (the read
    /// of their end of file may not have come yet), so they stop counting against a cap.
    fn sweep_hangups(&mut self, events: &mut Vec<SocketEvent>) -> usize {
        let gone: Vec<Token> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.clock.held_until.is_none()
                    && c.conn.waiting_for().is_none()
                    && c.conn.output().is_empty()
                    && hung_up(c.source.get_ref())
            })
            .map(|(&token, _)| token)
            .collect();
        for &token in &gone {
            debug!(self.logger, "client hung up before its end of file was read";
                "peer" => self.clients[&token].conn.peer());
            self.drop_client(token, events);
        }
        gone.len()
    }

    /// At the cap, closes the oldest connection that has not presented the secret (and is
    /// not serving a failure delay), so strangers cannot keep the administrator out; for a
    /// newcomer that is root or the daemon's user, failing that, the oldest idle unix peer
    /// that is neither (let in by `socketpeers`).
    fn make_room(&mut self, newcomer: &Peer, owner: bool, events: &mut Vec<SocketEvent>) {
        let oldest = |pick: &dyn Fn(&Client) -> bool| {
            self.clients
                .iter()
                .filter(|(_, c)| c.admitted && c.clock.held_until.is_none() && pick(c))
                .min_by_key(|(_, c)| c.clock.accepted)
                .map(|(&token, _)| token)
        };
        let stranger = |c: &Client| c.conn.needs_secret() && !c.conn.is_closing();
        let idle_guest = |c: &Client| {
            c.guest
                && !c.conn.is_closing()
                && !c.conn.has_partial_input()
                && c.conn.output().is_empty()
                && c.conn.waiting_for().is_none()
        };
        let oldest = oldest(&stranger).or_else(|| if owner { oldest(&idle_guest) } else { None });
        if let Some(token) = oldest {
            if let Some(suppressed) = self.quiet(Noise::Evicted) {
                warn!(self.logger, "client dropped to make room";
                    "peer" => self.clients[&token].conn.peer(), "for" => &newcomer.name,
                    "suppressed" => suppressed);
            }
            self.drop_client(token, events);
        }
    }

    fn admission(&mut self, peer: &Peer) -> Admission {
        if let Some(uid) = peer.uid {
            if !self.peers.allows(uid, self.owner) {
                if let Some(suppressed) = self.quiet(Noise::Refused) {
                    warn!(self.logger, "connection refused: permission denied";
                        "peer" => &peer.name, "suppressed" => suppressed);
                }
                return Admission::Refused(RpcError::server_error("permission denied"));
            }
        }
        if self.admitted >= self.max_connections {
            if let Some(suppressed) = self.quiet(Noise::Refused) {
                warn!(self.logger, "connection refused: too many connections";
                    "peer" => &peer.name, "socketmaxconnections" => self.max_connections,
                    "suppressed" => suppressed);
            }
            return Admission::Refused(RpcError::server_error("too many connections"));
        }
        Admission::Open
    }

    /// `Some(lines held back)` if a line of this kind may be logged now.
    pub(super) fn quiet(&mut self, noise: Noise) -> Option<u64> {
        self.quiet[noise as usize].allow(Instant::now())
    }
}

/// Whether `stream` has bytes to read (a non-blocking peek).
pub(super) fn has_input(stream: &Stream) -> bool {
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    matches!(recv(stream.as_fd().as_raw_fd(), &mut byte, flags), Ok(n) if n > 0)
}

/// Whether the peer of `stream` has closed its end and nothing it sent is left unread (a
/// non-blocking peek that reads end of file), or the connection failed.
fn hung_up(stream: &Stream) -> bool {
    use nix::errno::Errno;
    use nix::sys::socket::{MsgFlags, recv};
    use std::os::fd::{AsFd, AsRawFd};
    let mut byte = [0u8; 1];
    let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
    match recv(stream.as_fd().as_raw_fd(), &mut byte, flags) {
        Ok(0) => true,
        Ok(_) | Err(Errno::EAGAIN | Errno::EINTR) => false,
        Err(_) => true,
    }
}
