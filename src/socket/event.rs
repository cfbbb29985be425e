//! What the control socket tells the bus: clients that connect and hang up.

use crate::bus::Event;

/// A control-socket client connected or hung up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    hangup: bool,
    peer: String,
    /// The connection, for the daemon's own bookkeeping (its subscriptions end with it).
    conn: Option<crate::rpc::ConnectionId>,
}

impl SocketEvent {
    /// `daemon.socket.client.connect` from `peer`.
    pub fn connect(peer: impl Into<String>) -> Self {
        SocketEvent {
            hangup: false,
            peer: peer.into(),
            conn: None,
        }
    }

    /// `daemon.socket.client.hangup` of `peer`.
    pub fn hangup(peer: impl Into<String>) -> Self {
        SocketEvent {
            hangup: true,
            peer: peer.into(),
            conn: None,
        }
    }

    /// The same event, about the connection `conn`.
    pub(crate) fn of(mut self, conn: Option<crate::rpc::ConnectionId>) -> Self {
        self.conn = conn;
        self
    }

    /// The connection it is about, if the server said.
    pub(crate) fn connection(&self) -> Option<crate::rpc::ConnectionId> {
        self.conn
    }

    /// Whether this is a hang-up (else a connection).
    pub fn is_hangup(&self) -> bool {
        self.hangup
    }

    /// The peer, as text (a unix peer's pid and uid, or a tcp address).
    pub fn peer(&self) -> &str {
        &self.peer
    }
}

impl Event for SocketEvent {
    fn name(&self) -> &str {
        if self.hangup {
            "daemon.socket.client.hangup"
        } else {
            "daemon.socket.client.connect"
        }
    }

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"peer": self.peer}))
    }
}
