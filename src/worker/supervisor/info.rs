//! What the supervisor tells of workers: their exits and their state.

use std::time::Duration;

use serde_json::{Value, json};

use crate::worker::{Restart, State};

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
    /// Its restart type.
    pub restart: Restart,
    /// Whether the exit was asked for (an administrator's stop or restart, the daemon's
    /// shutdown): such an exit is never a crash, whatever its status.
    pub requested: bool,
    /// How long the process ran.
    pub ran_for: Duration,
}

impl Exit {
    /// Whether it ended cleanly: exit code 0 (the worker stopped itself, or was asked to).
    pub fn clean(&self) -> bool {
        self.code == Some(0) && self.signal.is_none()
    }

    /// Whether it crashed: it ended abnormally without being asked to.
    pub fn crashed(&self) -> bool {
        !self.requested && !self.clean()
    }

    /// The exit as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "worker": self.name, "pid": self.pid, "code": self.code, "signal": self.signal,
            "restart": self.restart.name(), "requested": self.requested,
            "clean": self.clean(), "crashed": self.crashed(),
            "ran_for": self.ran_for.as_secs_f64(),
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
    /// Its restart type.
    pub restart: Restart,
    /// How many times it was started after the first.
    pub restarts: u32,
    /// How long the current process has run.
    pub uptime: Option<Duration>,
    /// Its heartbeat (loop turns), while running.
    pub heartbeat: Option<u64>,
    /// Frames between the daemon and its current process that the receiving end could not
    /// decode and dropped (either way).
    pub dropped: u64,
    /// Log lines of its current process that were lost: its ring was full, or it logged
    /// past its rate limit and the daemon suppressed them.
    pub lost_logs: u64,
}

impl WorkerInfo {
    /// As `worker.list` returns it.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name, "pid": self.pid, "state": self.state as u32,
            "statename": self.state.name(), "looptime": self.looptime.as_secs_f64(),
            "restart": self.restart.name(), "forever": self.restart == Restart::Permanent,
            "restarts": self.restarts,
            "uptime": self.uptime.map(|u| u.as_secs_f64()), "heartbeat": self.heartbeat,
            "dropped": self.dropped, "lost_logs": self.lost_logs,
        })
    }
}
