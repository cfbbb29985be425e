//! The [`Event`] trait and daimon's typed events.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;

use crate::reactor::{Signal, TimerId};
use crate::rpc::RpcError;

/// Something that happened, with a dotted name listeners subscribe to.
///
/// Implement it for your own types to put them on the bus; a listener gets `&dyn Event` and
/// uses [`downcast_ref`](trait.Event.html#method.downcast_ref) to reach the concrete type.
///
/// # Examples
///
/// ```
/// use daimon::bus::Event;
///
/// #[derive(Debug)]
/// struct Reloaded { files: usize }
///
/// impl Event for Reloaded {
///     fn name(&self) -> &str { "myapp.reloaded" }
/// }
///
/// let e: &dyn Event = &Reloaded { files: 3 };
/// assert_eq!(e.downcast_ref::<Reloaded>().unwrap().files, 3);
/// ```
pub trait Event: Any + fmt::Debug {
    /// The event's dotted name, e.g. `daemon.posix.SIGTERM`.
    fn name(&self) -> &str;

    /// A second name the event also answers to (`daemon.posix.15` for SIGTERM).
    fn alias(&self) -> Option<&str> {
        None
    }
}

impl dyn Event {
    /// The concrete event, if it is an `E`.
    pub fn downcast_ref<E: Event>(&self) -> Option<&E> {
        (self as &dyn Any).downcast_ref::<E>()
    }

    /// Whether the event is an `E`.
    pub fn is<E: Event>(&self) -> bool {
        (self as &dyn Any).is::<E>()
    }
}

/// A POSIX signal, named `daemon.posix.<NAME>` (canonical name) with the alias
/// `daemon.posix.<number>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PosixEvent {
    signal: Signal,
    name: String,
    alias: String,
}

impl PosixEvent {
    /// The prefix of every signal event's name.
    pub const PREFIX: &'static str = "daemon.posix.";

    /// The event for `signal`.
    pub fn new(signal: Signal) -> Self {
        PosixEvent {
            signal,
            name: format!("{}{}", Self::PREFIX, signal.name()),
            alias: format!("{}{}", Self::PREFIX, signal.number()),
        }
    }

    /// The signal.
    pub fn signal(&self) -> Signal {
        self.signal
    }
}

impl Event for PosixEvent {
    fn name(&self) -> &str {
        &self.name
    }

    fn alias(&self) -> Option<&str> {
        Some(&self.alias)
    }
}

/// A step of the daemon's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonEvent {
    /// `daemon.start`: the daemon process runs, before `setup()`.
    Start,
    /// `daemon.ready`: the pid file is locked, the socket bound, the workers started.
    Ready,
    /// `daemon.stopping`: a stop was requested; the daemon stops accepting and winds down.
    Stopping,
    /// `daemon.stop`: everything is released; the process exits next.
    Stop,
}

impl Event for DaemonEvent {
    fn name(&self) -> &str {
        match self {
            DaemonEvent::Start => "daemon.start",
            DaemonEvent::Ready => "daemon.ready",
            DaemonEvent::Stopping => "daemon.stopping",
            DaemonEvent::Stop => "daemon.stop",
        }
    }
}

/// A control-socket client connected or hung up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketEvent {
    hangup: bool,
    peer: String,
}

impl SocketEvent {
    /// `daemon.socket.client.connect` from `peer`.
    pub fn connect(peer: impl Into<String>) -> Self {
        SocketEvent {
            hangup: false,
            peer: peer.into(),
        }
    }

    /// `daemon.socket.client.hangup` of `peer`.
    pub fn hangup(peer: impl Into<String>) -> Self {
        SocketEvent {
            hangup: true,
            peer: peer.into(),
        }
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
}

/// An RPC call about to run, named `daemon.rpc.<method>`.
///
/// Listeners get it before the handler runs; one may refuse the call with
/// [`RpcEvent::refuse`], and the client then gets that error instead.
#[derive(Debug, Clone)]
pub struct RpcEvent {
    name: String,
    params: serde_json::Value,
    peer: String,
    refusal: RefCell<Option<RpcError>>,
}

impl RpcEvent {
    /// The prefix of every RPC event's name.
    pub const PREFIX: &'static str = "daemon.rpc.";

    /// The event for a call of `method` with `params` (by name) from `peer`.
    pub fn new(method: &str, params: serde_json::Value, peer: &str) -> Self {
        RpcEvent {
            name: format!("{}{method}", Self::PREFIX),
            params,
            peer: peer.to_owned(),
            refusal: RefCell::new(None),
        }
    }

    /// The method called.
    pub fn method(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// The params, as an object by name.
    pub fn params(&self) -> &serde_json::Value {
        &self.params
    }

    /// Who called: a unix peer's pid and uid, or a tcp address.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// Refuses the call: the client gets `error` and the handler does not run. The first
    /// refusal wins.
    pub fn refuse(&self, error: RpcError) {
        let mut refusal = self.refusal.borrow_mut();
        if refusal.is_none() {
            *refusal = Some(error);
        }
    }

    /// The refusal, if a listener refused the call.
    pub fn refusal(&self) -> Option<RpcError> {
        self.refusal.borrow().clone()
    }
}

impl Event for RpcEvent {
    fn name(&self) -> &str {
        &self.name
    }
}

/// Something about a worker, named `daemon.worker.<what>`: on the daemon's bus its life
/// (`started`, `exited`, `restarting`, `failed`) and the messages it sends up; on the worker's
/// own bus the commands it receives (`pause`, `changename`...) and `loopstart`/`loopstop`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerEvent {
    name: String,
    worker: String,
    payload: Option<serde_json::Value>,
}

impl WorkerEvent {
    /// The event `daemon.worker.<what>` about the worker named `worker`.
    pub fn new(what: &str, worker: impl Into<String>) -> Self {
        WorkerEvent {
            name: format!("{}{what}", Self::PREFIX),
            worker: worker.into(),
            payload: None,
        }
    }

    /// The same event carrying `payload`.
    pub fn with_payload(mut self, payload: Option<serde_json::Value>) -> Self {
        self.payload = payload;
        self
    }

    /// The prefix of every worker event's name.
    pub const PREFIX: &'static str = "daemon.worker.";

    /// The worker's name.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// What happened: `started`, `exited`, or the command (`pause`, `changename`...).
    pub fn what(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// The payload: a command's, or the facts of an exit (`pid`, `status`, `forever`...).
    pub fn payload(&self) -> Option<&serde_json::Value> {
        self.payload.as_ref()
    }
}

impl Event for WorkerEvent {
    fn name(&self) -> &str {
        &self.name
    }
}

/// A timer armed by a listener through its [`Context`](super::Context) fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimerEvent {
    name: String,
    id: TimerId,
}

impl TimerEvent {
    /// The event `name` for the timer `id`.
    pub fn new(name: impl Into<String>, id: TimerId) -> Self {
        TimerEvent {
            name: name.into(),
            id,
        }
    }

    /// The timer that fired.
    pub fn id(&self) -> TimerId {
        self.id
    }
}

impl Event for TimerEvent {
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_event_has_canonical_name_and_number_alias() {
        let e = PosixEvent::new(Signal::from_number(15).unwrap());
        assert_eq!(e.name(), "daemon.posix.SIGTERM");
        assert_eq!(e.alias(), Some("daemon.posix.15"));
    }

    #[test]
    fn downcast_to_the_concrete_type() {
        let e: Box<dyn Event> =
            Box::new(RpcEvent::new("examples.echo", serde_json::json!({}), "me"));
        assert_eq!(e.name(), "daemon.rpc.examples.echo");
        assert_eq!(
            e.downcast_ref::<RpcEvent>().unwrap().method(),
            "examples.echo"
        );
        assert!(e.downcast_ref::<PosixEvent>().is_none());
        assert!(e.is::<RpcEvent>());
    }
}
