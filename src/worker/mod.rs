//! Workers: processes forked from the daemon, each running a loop and talking to the daemon
//! over a shared-memory channel.
//!
//! A [`Worker`] has `spinup`, `tick` (the loop body; `loop` is a Rust keyword) and
//! `spindown`. Install it with [`Daemon::workers`](crate::Daemon::workers) before `init()` or
//! in `setup()`:
//!
//! ```no_run
//! use std::time::Duration;
//! use daimon::worker::{Worker, WorkerContext};
//! use daimon::{Config, Daemon};
//!
//! struct Counter { name: String, n: u64 }
//!
//! impl Worker for Counter {
//!     fn name(&self) -> &str { &self.name }
//!     fn tick(&mut self, ctx: &mut WorkerContext<'_>) {
//!         self.n += 1;
//!         daimon::slog::debug!(ctx.logger(), "tick"; "n" => self.n);
//!     }
//! }
//!
//! let mut daemon = Daemon::new(Config::default());
//! let counter = Counter { name: "counter".into(), n: 0 };
//! daemon.workers().install(counter, Duration::from_millis(500), true)?;
//! # Ok::<(), daimon::Error>(())
//! ```

mod channel;
mod child;
mod manager;
pub mod ring;

use std::any::Any;
use std::sync::Arc;

use slog::Logger;

pub use channel::{Channel, ChannelError, Header, Message, RING_CAPACITY, decode};
pub use manager::{Exit, WorkerInfo, Workers};

use crate::bus::{Bus, Host};
use crate::daemon::SetupError;
use crate::reactor::TimerId;

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
    /// The process is gone (stopped, or crashed and not restarted yet).
    Exited = 4,
    /// Crashed too often: not restarted any more.
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
pub trait Worker: Any {
    /// The worker's name, unique in its daemon (`handyman`).
    fn name(&self) -> &str;

    /// Runs once when the worker process starts; subscribe the worker's listeners here. An
    /// error ends the worker as a crash.
    ///
    /// # Errors
    ///
    /// Whatever stops the worker from running.
    fn spinup(&mut self, ctx: &mut WorkerContext<'_>) -> Result<(), SetupError> {
        let _ = ctx;
        Ok(())
    }

    /// The loop body, run every looptime (at a fixed rate; missed ticks are skipped).
    fn tick(&mut self, ctx: &mut WorkerContext<'_>);

    /// Runs once before the worker process exits on a stop.
    fn spindown(&mut self, ctx: &mut WorkerContext<'_>) {
        let _ = ctx;
    }
}

/// The worker process's [`Host`]: what its listeners reach with
/// [`Context::host`](crate::bus::Context::host), the worker itself included.
pub struct WorkerHost {
    name: String,
    logger: Logger,
    worker: Option<Box<dyn Worker>>,
    channel: Arc<Channel>,
    stop: bool,
    timers: crate::reactor::Timers<String>,
}

impl WorkerHost {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker as its concrete type `W` (the seed's `getWorker()->getInstance()`); `None`
    /// while its own `tick` runs.
    pub fn worker<W: Worker>(&mut self) -> Option<&mut W> {
        let worker: &mut dyn Any = self.worker.as_deref_mut()?;
        worker.downcast_mut::<W>()
    }

    /// Sends a message up to the daemon, where it becomes `daemon.worker.<command>`.
    ///
    /// # Errors
    ///
    /// [`ChannelError`] when the ring is full or the message too large.
    pub fn send(&self, message: &Message) -> Result<(), ChannelError> {
        self.channel.send(message)
    }
}

impl WorkerHost {
    /// For tests of the daemon's defences only: writes garbage into this worker's channel
    /// (an undecodable frame, or with `header` an overwritten header). The daemon kills the
    /// worker and handles it as crashed.
    #[doc(hidden)]
    pub fn scribble_on_channel(&self, header: bool) {
        self.channel.scribble(header);
    }
}

impl Host for WorkerHost {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, _code: i32) {
        self.stop = true;
    }

    fn arm_timer(
        &mut self,
        after: std::time::Duration,
        period: Option<std::time::Duration>,
        name: String,
    ) -> TimerId {
        self.timers
            .insert(std::time::Instant::now() + after, period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id).is_some()
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// What `spinup`, `tick` and `spindown` get: the worker's logger, bus, and channel.
pub struct WorkerContext<'a> {
    host: &'a mut WorkerHost,
    bus: &'a mut Bus,
}

impl WorkerContext<'_> {
    /// The worker's name.
    pub fn name(&self) -> &str {
        &self.host.name
    }

    /// The worker's logger: its lines reach the daemon's log, tagged with the worker's name.
    pub fn logger(&self) -> &Logger {
        &self.host.logger
    }

    /// The worker's own bus, to subscribe listeners for commands (`daemon.worker.<command>`).
    pub fn bus(&mut self) -> &mut Bus {
        self.bus
    }

    /// Asks the worker to stop after this turn (spindown, then exit).
    pub fn stop(&mut self) {
        self.host.stop = true;
    }

    /// Sends a message up to the daemon, where it becomes `daemon.worker.<command>`.
    ///
    /// # Errors
    ///
    /// [`ChannelError`] when the ring is full or the message too large.
    pub fn send(&self, message: &Message) -> Result<(), ChannelError> {
        self.host.send(message)
    }
}
