//! The [`Event`] trait and daimon's typed events.

use std::any::Any;
use std::fmt;

use crate::reactor::{Signal, TimerId};

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

    /// The event's data as JSON, the `data` a control-socket subscriber receives
    /// (`daemon.subscribe`); `None` (the default) for an event that has none to show, which
    /// subscribers receive with `data: null`. Every daimon event has a stable form, listed in
    /// `PROTOCOL.md`; an event of yours that derives `Serialize` can return
    /// `serde_json::to_value(self).ok()`.
    ///
    /// Called only when some subscriber wants the event.
    fn data(&self) -> Option<serde_json::Value> {
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

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"signal": self.signal.name(), "number": self.signal.number()}))
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

impl DaemonEvent {
    /// The name of [`DaemonEvent::Start`].
    pub const START: &'static str = "daemon.start";
    /// The name of [`DaemonEvent::Ready`].
    pub const READY: &'static str = "daemon.ready";
    /// The name of [`DaemonEvent::Stopping`].
    pub const STOPPING: &'static str = "daemon.stopping";
    /// The name of [`DaemonEvent::Stop`].
    pub const STOP: &'static str = "daemon.stop";
}

impl Event for DaemonEvent {
    fn name(&self) -> &str {
        match self {
            DaemonEvent::Start => Self::START,
            DaemonEvent::Ready => Self::READY,
            DaemonEvent::Stopping => Self::STOPPING,
            DaemonEvent::Stop => Self::STOP,
        }
    }

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({}))
    }
}

/// `daemon.reload`: the configuration file was read again and its run-time keys applied
/// (SIGHUP or `daemon.reload`); a listener reloads the application's own state here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadEvent {
    /// The keys whose new values now apply.
    pub applied: Vec<String>,
    /// The keys that changed in the file but take effect only at a restart.
    pub restart_needed: Vec<String>,
}

impl ReloadEvent {
    /// Its name, `daemon.reload`.
    pub const NAME: &'static str = "daemon.reload";
}

impl Event for ReloadEvent {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"applied": self.applied, "restart_needed": self.restart_needed}))
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

    fn data(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({"timer": self.id.as_u64()}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_event_has_canonical_name_and_number_alias() {
        let e = PosixEvent::new(Signal::TERM);
        assert_eq!(e.name(), "daemon.posix.SIGTERM");
        assert_eq!(e.alias(), Some("daemon.posix.15"));
    }

    #[test]
    fn downcast_to_the_concrete_type() {
        let e: Box<dyn Event> = Box::new(TimerEvent::new("myapp.tick", TimerId(7)));
        assert_eq!(e.name(), "myapp.tick");
        assert_eq!(e.downcast_ref::<TimerEvent>().unwrap().id(), TimerId(7));
        assert!(e.downcast_ref::<PosixEvent>().is_none());
        assert!(e.is::<TimerEvent>());
    }
}
