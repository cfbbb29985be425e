//! What the manager tells of workers: their exits and their state.

use std::time::Duration;

use serde_json::{Value, json};

use crate::worker::State;

/// A worker process that ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Exit {
    /// The worker's name.
    pub name: String,
    /// Its pid.
    pub pid: i32,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
    /// Whether it was installed with `forever`.
    pub forever: bool,
    /// Whether the exit was asked for (an administrator's stop, or the daemon's shutdown):
    /// such an exit is never a crash, whatever its status.
    pub requested: bool,
}

impl Exit {
    /// Whether the worker crashed: it ended without being asked to.
    pub fn crashed(&self) -> bool {
        !self.requested
    }

    /// The exit as the payload of `daemon.worker.exited`.
    pub fn to_json(&self) -> Value {
        json!({
            "pid": self.pid, "code": self.code, "signal": self.signal,
            "forever": self.forever, "requested": self.requested, "crashed": self.crashed(),
        })
    }
}

/// What `worker.list` says of a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    /// The name.
    pub name: String,
    /// The pid, while running.
    pub pid: Option<i32>,
    /// The state.
    pub state: State,
    /// The looptime.
    pub looptime: Duration,
    /// Whether it is restarted when it crashes.
    pub forever: bool,
    /// How many times it was started after the first.
    pub restarts: u32,
    /// How long the current process has run.
    pub uptime: Option<Duration>,
    /// Its heartbeat (loop turns), while running.
    pub heartbeat: Option<u64>,
}

impl WorkerInfo {
    /// As `worker.list` returns it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "pid": self.pid, "state": self.state as u32,
            "statename": self.state.name(), "looptime": self.looptime.as_secs_f64(),
            "forever": self.forever, "restarts": self.restarts,
            "uptime": self.uptime.map(|u| u.as_secs_f64()), "heartbeat": self.heartbeat,
        })
    }
}
