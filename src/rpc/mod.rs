//! RPC: methods with typed signatures, JSON-RPC 2.0 and MessagePack-RPC, introspection.
//!
//! Register methods in `setup()` with [`Daemon::rpc`](crate::Daemon::rpc):
//!
//! ```no_run
//! use daimon::rpc::{Method, Type};
//! use daimon::{Config, Daemon};
//!
//! let daemon = Daemon::new(Config::default()).setup(|daemon| {
//!     daemon.rpc().register(
//!         Method::new("examples.echo", |params, _ctx| Ok(params.str("message")?.into()))
//!             .description("I'm here to reply your data")
//!             .param(Type::String, "message")
//!             .returns(Type::String),
//!     )?;
//!     Ok(())
//! });
//! ```
//!
//! The wire protocols are described in `PROTOCOL.md`.

pub mod base64;
#[cfg(any(fuzzing, feature = "internals"))]
pub mod bounded;
#[cfg(not(any(fuzzing, feature = "internals")))]
pub(crate) mod bounded;
mod error;
mod event;
pub(crate) mod jsonrpc;
mod method;
pub mod msgpack;
mod signature;

pub use error::RpcError;
pub use event::{CallEvent, CallOutcome, RpcEvent};
pub(crate) use method::DaemonEngine;
pub use method::{CallContext, Method, Methods};
pub use signature::{Params, Signature, Type};

/// How deeply arrays and maps (objects) may nest in one value: the one limit of the control
/// socket (a whole JSON or MessagePack message) and of the workers' channels (each payload),
/// so that whatever the socket accepts a worker can receive, and what a worker may send the
/// daemon can decode. `send` refuses a deeper payload before writing anything.
pub const MAX_DEPTH: usize = 128;

use serde_json::Value;

/// Who a call comes from, as the connection layer knows it (an internal of the server,
/// public for fuzzing).
#[derive(Debug, Clone, Copy)]
pub struct Meta<'a> {
    /// The peer: a unix peer's pid and uid, or a tcp address.
    pub peer: &'a str,
    /// How many connections are open.
    pub connections: usize,
    /// Whether the caller can wait for a reply that comes later (a single request; not a
    /// batch, a multicall or a notification).
    pub deferrable: bool,
    /// The caller's connection (none outside the control socket: tests, fuzzing).
    pub connection: Option<ConnectionId>,
}

/// One control-socket connection, unique for the daemon's life (a closed connection's id
/// is never reused, unlike its poll token).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnectionId {
    pub(crate) token: crate::reactor::Token,
    pub(crate) serial: u64,
}

impl ConnectionId {
    pub(crate) fn new(token: crate::reactor::Token) -> ConnectionId {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        ConnectionId {
            token,
            serial: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The id as a number, for logs.
    pub fn as_u64(self) -> u64 {
        self.serial
    }
}

/// Identifies a reply that comes later (a deferred call), unique in the process: the
/// supervisor's acknowledgements, `worker.call` and the user's deferred methods all take
/// theirs from [`Ticket::next`], so none is ever used twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ticket(pub u64);

impl Ticket {
    /// A ticket never handed out before in this process.
    pub fn next() -> Ticket {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Ticket(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// The promise of a reply to a call, made by [`CallContext::defer`]: answer it later with
/// [`DaemonHost::reply`](crate::DaemonHost::reply) (from a listener, a timer, or a worker's
/// answer with [`Workers::call`](crate::worker::Workers::call)). Unanswered by its deadline,
/// the caller gets an error (-32000, "no reply within N ms") instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Reply {
    ticket: Ticket,
    deadline: std::time::Instant,
}

impl Reply {
    pub(crate) fn new(ticket: Ticket, deadline: std::time::Instant) -> Reply {
        Reply { ticket, deadline }
    }

    /// Its ticket.
    pub fn ticket(&self) -> Ticket {
        self.ticket
    }

    /// When the caller stops waiting: it gets a timeout error then.
    pub fn deadline(&self) -> std::time::Instant {
        self.deadline
    }
}

/// What runs the calls a connection decodes: the daemon's methods, or a stand-in (tests,
/// fuzzing).
pub trait Engine {
    /// Runs `method` with `params` (an array, an object, or null when absent).
    fn call(&mut self, meta: &Meta<'_>, method: &str, params: Value) -> Result<Value, RpcError>;

    /// Tells of a call the connection answered itself, without running it (refused by the
    /// connection's admission or its missing secret, or `system.auth`).
    fn answered(&mut self, meta: &Meta<'_>, method: &str, outcome: &Result<Value, RpcError>) {
        let _ = (meta, method, outcome);
    }
}
