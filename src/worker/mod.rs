//! Workers: processes forked from the daemon, each running a loop and talking to the daemon
//! over a shared-memory channel, supervised by the daemon's [`Workers`].
//!
//! A [`Worker`] has `spinup`, `tick` (the loop body; `loop` is a Rust keyword) and
//! `spindown`. Install it with [`Daemon::workers`](crate::Daemon::workers) before `init()` or
//! in `setup()`, with a looptime and a restart policy ([`Spec`]):
//!
//! ```no_run
//! use std::time::Duration;
//! use daimon::worker::{Restart, Spec, Worker, WorkerContext};
//! use daimon::{Config, Daemon};
//!
//! struct Counter { n: u64 }
//!
//! impl Worker for Counter {
//!     fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>) {
//!         self.n += 1;
//!         daimon::slog::debug!(ctx.logger(), "tick"; "n" => self.n);
//!     }
//! }
//!
//! let mut daemon = Daemon::new(Config::default());
//! daemon.workers().install("counter", Counter { n: 0 }, Duration::from_millis(500))?;
//! let job = Spec::every(Duration::from_secs(1)).restart(Restart::Transient);
//! daemon.workers().install("job", Counter { n: 0 }, job)?;
//! # Ok::<(), daimon::Error>(())
//! ```
//!
//! A restarted worker is a fresh copy of the installed value (the `n` above starts from 0
//! again): to carry state from one process to the next, install a factory with
//! [`Workers::install_with`].

mod backlog;
mod channel;
pub(crate) mod child;
mod command;
mod configure;
#[cfg(any(test, fuzzing, feature = "internals"))]
pub mod doorbell;
#[cfg(not(any(test, fuzzing, feature = "internals")))]
mod doorbell;
mod events;
pub(crate) mod frame;
mod host;
mod job;
pub(crate) mod methods;
mod process;
#[cfg(any(test, fuzzing, feature = "internals"))]
pub mod ring;
#[cfg(not(any(test, fuzzing, feature = "internals")))]
mod ring;
mod spec;
mod supervisor;

#[cfg(not(any(fuzzing, feature = "internals")))]
pub(crate) use channel::Channel;
#[cfg(any(fuzzing, feature = "internals"))]
pub use channel::{Channel, ChannelError, Header, RING_CAPACITY};
pub use command::CommandError;
pub use events::{
    RESERVED_COMMANDS, WorkerCommand, WorkerExited, WorkerFailed, WorkerLog, WorkerLoop,
    WorkerMessage, WorkerRestarting, WorkerStarted,
};
#[cfg(any(fuzzing, feature = "internals"))]
pub use frame::{Down, Up, too_deep};
pub use host::{WorkerContext, WorkerHost};
pub use job::Spawn;
pub use process::Process;
pub use spec::{GiveUp, Output, Restart, Spec};
pub(crate) use supervisor::Deadline;
pub use supervisor::{Exit, WorkerInfo, Workers};

use serde_json::Value;

use crate::error::SetupError;

/// A worker's state, with the ancestor's numbers for the first four.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// `spinup()` runs.
    Spinup = 0,
    /// Ticking.
    Looping = 1,
    /// Paused: no ticks until resumed.
    Paused = 2,
    /// `spindown()` runs.
    Spindown = 3,
    /// The process is gone (stopped, ended, or crashed and not restarted yet).
    Exited = 4,
    /// The restart policy gave up on it: not restarted until `worker.start`.
    Failed = 5,
}

impl State {
    /// The state with this number.
    pub fn from_number(n: u32) -> Option<State> {
        Some(match n {
            0 => State::Spinup,
            1 => State::Looping,
            2 => State::Paused,
            3 => State::Spindown,
            4 => State::Exited,
            5 => State::Failed,
            _ => return None,
        })
    }

    /// The state's name: `SPINUP`, `LOOPING`, `PAUSED`, `SPINDOWN`, `EXITED`, `FAILED`.
    pub fn name(self) -> &'static str {
        match self {
            State::Spinup => "SPINUP",
            State::Looping => "LOOPING",
            State::Paused => "PAUSED",
            State::Spindown => "SPINDOWN",
            State::Exited => "EXITED",
            State::Failed => "FAILED",
        }
    }
}

/// The code a worker runs in its own process.
///
/// The process is forked from the daemon: it starts with a copy of the installed value (or
/// one built by a factory, see [`Workers::install_with`]), its own reactor and bus, its
/// channel, stdio, the read end of the pipe the daemon's shutdown closes (close-on-exec;
/// never read it: it is every worker's), and the descriptors the value owns; the daemon's
/// own descriptors are closed. The daemon is single-threaded when it forks; the worker may
/// start threads of its own. A restarted worker is a fresh copy of the installed value, not
/// of the process that ended.
pub trait Worker: Sized + 'static {
    /// Runs once when the worker process starts; subscribe the worker's listeners here (on
    /// `ctx.bus()`: `daemon.worker.<command>` for the daemon's commands that
    /// [`Worker::command`] forwards). An error ends the worker as a crash.
    ///
    /// # Errors
    ///
    /// Whatever stops the worker from running.
    fn spinup(&mut self, ctx: &mut WorkerContext<'_, Self>) -> Result<(), SetupError> {
        let _ = ctx;
        Ok(())
    }

    /// The loop body, run every looptime (at a fixed rate; missed ticks are skipped).
    fn tick(&mut self, ctx: &mut WorkerContext<'_, Self>);

    /// Handles a command from the daemon: `worker.call` (and [`Workers::call`]) waits for
    /// what it returns, its value or its error (whose code and message reach the caller);
    /// `worker.send` (and [`Workers::send`]) discards it (an error is logged). It runs in
    /// the worker's loop, between ticks: a handler that blocks delays the ticks, and the
    /// caller times out.
    ///
    /// The default emits the command on the worker's own bus, as a
    /// [`WorkerCommand`] named `daemon.worker.<command>` for its listeners, and returns
    /// `null` at once ([`WorkerContext::forward`]); a worker that matches its own commands
    /// forwards the others the same way.
    ///
    /// # Examples
    ///
    /// ```
    /// use daimon::worker::{CommandError, Worker, WorkerContext};
    /// use serde_json::{Value, json};
    ///
    /// struct Copier { target: String }
    ///
    /// impl Worker for Copier {
    ///     fn tick(&mut self, _: &mut WorkerContext<'_, Self>) {}
    ///
    ///     fn command(
    ///         &mut self,
    ///         command: &str,
    ///         payload: Option<Value>,
    ///         ctx: &mut WorkerContext<'_, Self>,
    ///     ) -> Result<Value, CommandError> {
    ///         match command {
    ///             "changename" => {
    ///                 let Some(Value::String(name)) = payload else {
    ///                     return Err(CommandError::new(-32602, "payload: the new name"));
    ///                 };
    ///                 self.target = name;
    ///                 Ok(json!(self.target))
    ///             }
    ///             _ => ctx.forward(command, payload),
    ///         }
    ///     }
    /// }
    /// ```
    ///
    /// # Errors
    ///
    /// What the caller of `worker.call` gets instead of a value.
    fn command(
        &mut self,
        command: &str,
        payload: Option<Value>,
        ctx: &mut WorkerContext<'_, Self>,
    ) -> Result<Value, CommandError> {
        ctx.forward(command, payload)
    }

    /// Runs once before the worker process exits on a stop (asked by the daemon, or by the
    /// worker itself with [`WorkerContext::stop`]).
    fn spindown(&mut self, ctx: &mut WorkerContext<'_, Self>) {
        let _ = ctx;
    }
}
