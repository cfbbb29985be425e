//! The events of workers, typed: the supervisor's on the daemon's bus (a worker started,
//! exited, is restarting, failed), the messages workers send up (in their own namespace and
//! type, so no worker can pose as the supervisor), and on a worker's own bus the commands it
//! receives and the edges of its ticks.

use std::time::Duration;

use serde_json::Value;

use super::Exit;
use super::backlog::Charge;
use crate::bus::Event;

/// `daemon.worker.started`: the supervisor forked a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStarted {
    /// The worker's name.
    pub worker: String,
    /// Its new process.
    pub pid: i32,
    /// How many times it was started before (0 for the first start).
    pub restarts: u32,
}

impl WorkerStarted {
    /// The event's name.
    pub const NAME: &'static str = "daemon.worker.started";
}

impl Event for WorkerStarted {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn data(&self) -> Option<Value> {
        Some(serde_json::json!({"worker": self.worker, "pid": self.pid, "restarts": self.restarts}))
    }
}

/// `daemon.worker.exited`: a worker's process ended and was reaped, with the facts of its end.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerExited {
    /// How it ended.
    pub exit: Exit,
}

impl WorkerExited {
    /// The event's name.
    pub const NAME: &'static str = "daemon.worker.exited";
}

impl Event for WorkerExited {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn data(&self) -> Option<Value> {
        Some(self.exit.to_json())
    }
}

/// `daemon.worker.restarting`: the restart policy restarts a worker that ended, after `delay`
/// (zero: at once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRestarting {
    /// The worker's name.
    pub worker: String,
    /// The backoff before the new process (zero for a worker that ran stably).
    pub delay: Duration,
}

impl WorkerRestarting {
    /// The event's name.
    pub const NAME: &'static str = "daemon.worker.restarting";
}

impl Event for WorkerRestarting {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn data(&self) -> Option<Value> {
        Some(serde_json::json!({"worker": self.worker, "delay": self.delay.as_secs_f64()}))
    }
}

/// `daemon.worker.failed`: the restart policy gave up on a worker (too many restarts within
/// its window); it stays `FAILED` until `worker.start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerFailed {
    /// The worker's name.
    pub worker: String,
    /// The restarts counted within the window.
    pub restarts: usize,
    /// Whether its policy stops the daemon for it ([`GiveUp::StopDaemon`](super::GiveUp)).
    pub stops_daemon: bool,
}

impl WorkerFailed {
    /// The event's name.
    pub const NAME: &'static str = "daemon.worker.failed";
}

impl Event for WorkerFailed {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn data(&self) -> Option<Value> {
        Some(
            serde_json::json!({"worker": self.worker, "restarts": self.restarts, "stops_daemon": self.stops_daemon}),
        )
    }
}

/// A message a worker sent up with `ctx.send(command, payload)`, named
/// `daemon.worker.message.<worker>.<command>` on the daemon's bus.
///
/// While it waits on the bus, the memory it holds counts against the supervisor's backlog:
/// above a high-water mark, the daemon reads no worker's ring until the bus has caught up.
/// (A clone a listener keeps does not count.)
#[derive(Debug)]
pub struct WorkerMessage {
    name: String,
    worker_len: usize,
    payload: Option<Value>,
    charge: Option<Charge>,
}

impl Clone for WorkerMessage {
    fn clone(&self) -> Self {
        WorkerMessage {
            name: self.name.clone(),
            worker_len: self.worker_len,
            payload: self.payload.clone(),
            charge: None,
        }
    }
}

impl PartialEq for WorkerMessage {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.worker_len, &self.payload)
            == (&other.name, other.worker_len, &other.payload)
    }
}

impl WorkerMessage {
    /// The prefix of every worker message's name.
    pub const PREFIX: &'static str = "daemon.worker.message.";

    /// The message `command` from the worker `worker`.
    pub fn new(worker: &str, command: &str, payload: Option<Value>) -> WorkerMessage {
        WorkerMessage {
            name: format!("{}{worker}.{command}", Self::PREFIX),
            worker_len: worker.len(),
            payload,
            charge: None,
        }
    }

    /// The message, its memory counted in the supervisor's backlog until it is dropped.
    pub(crate) fn charged(mut self, charge: Charge) -> WorkerMessage {
        self.charge = Some(charge);
        self
    }

    /// The pattern of every message from `worker`.
    pub fn pattern(worker: &str) -> String {
        format!("{}{worker}.*", Self::PREFIX)
    }

    /// The worker that sent it.
    pub fn worker(&self) -> &str {
        &self.name[Self::PREFIX.len()..Self::PREFIX.len() + self.worker_len]
    }

    /// The command it names.
    pub fn command(&self) -> &str {
        &self.name[Self::PREFIX.len() + self.worker_len + 1..]
    }

    /// Its payload.
    pub fn payload(&self) -> Option<&Value> {
        self.payload.as_ref()
    }
}

impl Event for WorkerMessage {
    fn name(&self) -> &str {
        &self.name
    }

    fn data(&self) -> Option<Value> {
        Some(
            serde_json::json!({"worker": self.worker(), "command": self.command(), "payload": self.payload}),
        )
    }
}

/// `daemon.log.<worker>`: a line a worker wrote on its standard output or error, or logged
/// with its own logger, as the daemon received it (the daemon logs it and keeps it for
/// `worker.log` too).
///
/// Only built while some listener or subscription could receive it, and bounded: while
/// those already waiting on the bus hold too much memory, further lines are not emitted
/// (they are still logged and kept).
#[derive(Debug)]
pub struct WorkerLog {
    name: String,
    stream: crate::log::Stream,
    line: String,
    charge: Option<Charge>,
}

impl Clone for WorkerLog {
    fn clone(&self) -> Self {
        WorkerLog {
            name: self.name.clone(),
            stream: self.stream,
            line: self.line.clone(),
            charge: None,
        }
    }
}

impl PartialEq for WorkerLog {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, self.stream, &self.line) == (&other.name, other.stream, &other.line)
    }
}

impl WorkerLog {
    /// The prefix of every worker log event's name.
    pub const PREFIX: &'static str = "daemon.log.";

    /// The line `line` of `worker` on `stream`.
    pub fn new(worker: &str, stream: crate::log::Stream, line: &str) -> WorkerLog {
        WorkerLog {
            name: format!("{}{worker}", Self::PREFIX),
            stream,
            line: line.to_owned(),
            charge: None,
        }
    }

    /// The event, its memory counted until it is dropped.
    pub(crate) fn charged(mut self, charge: Charge) -> WorkerLog {
        self.charge = Some(charge);
        self
    }

    /// The worker that wrote it.
    pub fn worker(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// Where it came from: `stdout`, `stderr` or `log` (its logger).
    pub fn stream(&self) -> crate::log::Stream {
        self.stream
    }

    /// The line, without its newline.
    pub fn line(&self) -> &str {
        &self.line
    }
}

impl Event for WorkerLog {
    fn name(&self) -> &str {
        &self.name
    }

    fn data(&self) -> Option<Value> {
        Some(
            serde_json::json!({"worker": self.worker(), "stream": self.stream.name(), "line": self.line}),
        )
    }
}

/// On a worker's own bus: a command the daemon sent with `worker.send` or `worker.call` (or
/// [`Workers::send`](super::Workers::send), [`Workers::call`](super::Workers::call)) that
/// the worker's [`Worker::command`](super::Worker::command) forwarded (the default), named
/// `daemon.worker.<command>`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    name: String,
    payload: Option<Value>,
}

impl WorkerCommand {
    /// The prefix of every command's name.
    pub const PREFIX: &'static str = "daemon.worker.";

    /// The command `command` with `payload`.
    pub fn new(command: &str, payload: Option<Value>) -> WorkerCommand {
        WorkerCommand {
            name: format!("{}{command}", Self::PREFIX),
            payload,
        }
    }

    /// The command.
    pub fn command(&self) -> &str {
        &self.name[Self::PREFIX.len()..]
    }

    /// Its payload.
    pub fn payload(&self) -> Option<&Value> {
        self.payload.as_ref()
    }
}

impl Event for WorkerCommand {
    fn name(&self) -> &str {
        &self.name
    }

    fn data(&self) -> Option<Value> {
        Some(serde_json::json!({"command": self.command(), "payload": self.payload}))
    }
}

/// On a worker's own bus: a tick is about to run (`daemon.worker.loopstart`) or has run
/// (`daemon.worker.loopstop`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerLoop {
    /// Before `tick`.
    Start,
    /// After `tick`.
    Stop,
}

impl WorkerLoop {
    /// The name of [`WorkerLoop::Start`].
    pub const START: &'static str = "daemon.worker.loopstart";
    /// The name of [`WorkerLoop::Stop`].
    pub const STOP: &'static str = "daemon.worker.loopstop";
}

impl Event for WorkerLoop {
    fn name(&self) -> &str {
        match self {
            WorkerLoop::Start => Self::START,
            WorkerLoop::Stop => Self::STOP,
        }
    }

    fn data(&self) -> Option<Value> {
        Some(serde_json::json!({}))
    }
}

/// The command names the supervisor keeps for itself: [`Workers::send`](super::Workers::send)
/// and [`Workers::call`](super::Workers::call) refuse them (use `stop`, `pause`, `resume`).
pub const RESERVED_COMMANDS: [&str; 5] = ["stop", "pause", "resume", "loopstart", "loopstop"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_message_has_its_own_namespace() {
        let m = WorkerMessage::new("w0", "exited", None);
        assert_eq!(m.name(), "daemon.worker.message.w0.exited");
        assert_eq!((m.worker(), m.command()), ("w0", "exited"));
        assert_ne!(m.name(), WorkerExited::NAME);
        let dotted = WorkerMessage::new("a.b", "c.d", None);
        assert_eq!((dotted.worker(), dotted.command()), ("a.b", "c.d"));
    }

    #[test]
    fn a_worker_log_line_has_its_name_and_data() {
        let l = WorkerLog::new("w.0", crate::log::Stream::Stderr, "oops");
        assert_eq!(l.name(), "daemon.log.w.0");
        assert_eq!(l.worker(), "w.0");
        assert_eq!(
            l.data(),
            Some(serde_json::json!({"worker": "w.0", "stream": "stderr", "line": "oops"}))
        );
    }
}
