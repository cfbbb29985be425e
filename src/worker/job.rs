//! What a forked worker process is given to become the worker.

use std::time::Duration;

use slog::Level;

use super::{Channel, Exit};

/// What a worker's factory learns of the process it builds the worker for.
#[derive(Debug, Clone)]
pub struct Spawn {
    /// How many processes of this worker started before this one (0 for the first).
    pub restarts: u32,
    /// How the previous process ended, if there was one.
    pub previous: Option<Exit>,
}

/// What the child needs to become the worker.
pub(crate) struct Job {
    pub(crate) name: String,
    pub(crate) channel: Channel,
    pub(crate) looptime: Duration,
    pub(crate) parent: i32,
    pub(crate) level: Level,
    pub(crate) spawn: Spawn,
    /// User, limits, niceness, environment and title, applied before the worker is built.
    pub(crate) process: super::process::Process,
    /// The read end of the daemon's stop line (see `supervisor::line`), open in the child
    /// at this number (inherited at its fork): the daemon's shutdown, for every worker at
    /// once.
    pub(crate) line: Option<std::os::fd::RawFd>,
}
