//! The daemon's host: what its listeners and methods reach with `ctx.host()`.

use std::time::{Duration, Instant};

use slog::Logger;

use super::LoopSignal;
use crate::bus::Host;
use crate::driver::{Due, LoopHost};
use crate::reactor::{Reactor, TimerId, Token};
use crate::worker::Workers;

/// The daemon's own deadlines on its one timer queue, besides the listeners' timers.
#[derive(Debug, Clone)]
pub(crate) enum Deadline {
    /// The supervisor's: an escalation, a restart after its backoff, an overdue ack.
    Worker(crate::worker::Deadline),
    /// A connection's: idle, slow or not reading.
    Connection(Token),
    /// systemd's: readiness, watchdog, status.
    Notify(super::notify::Timer),
}

impl From<Token> for Deadline {
    fn from(token: Token) -> Deadline {
        Deadline::Connection(token)
    }
}

/// The daemon process's [`Host`]: its workers, its logger, its stop signal. Listeners get it
/// from `ctx.host()`, typed: `ctx.host().workers().restart("w0")`.
pub struct DaemonHost {
    pub(super) reactor: Reactor<Due<Deadline>>,
    pub(super) workers: Workers,
    pub(super) logger: Logger,
    pub(super) signal: LoopSignal,
    pub(super) started: Instant,
    pub(super) socket: String,
    /// The log file of the default detached logger, to reopen.
    pub(super) log_file: Option<crate::log::LogFile>,
    /// The log's format and ring size, changed at run time; the daemon's own ring.
    pub(super) log_control: crate::log::Control,
}

impl DaemonHost {
    /// The daemon's workers.
    pub fn workers(&mut self) -> &mut Workers {
        &mut self.workers
    }

    /// The signal that stops the daemon.
    pub fn loop_signal(&self) -> LoopSignal {
        self.signal.clone()
    }

    /// The control socket's address.
    pub fn socket(&self) -> &str {
        &self.socket
    }

    /// Reopens the log file at its path (after logrotate moved it): `Ok(true)` when done,
    /// `Ok(false)` when the daemon logs to no file of its own (in the foreground, with a
    /// custom logger, without `logfile`).
    ///
    /// # Errors
    ///
    /// [`Error::Path`](crate::Error::Path) when the path cannot be opened; the daemon goes
    /// on logging to the old file.
    pub fn reopen_log(&mut self) -> crate::Result<bool> {
        match &self.log_file {
            Some(file) => file.reopen().map(|()| true),
            None => Ok(false),
        }
    }

    /// The log file the daemon writes, if it writes one of its own.
    pub fn log_path(&self) -> Option<&std::path::Path> {
        self.log_file.as_ref().map(crate::log::LogFile::path)
    }

    /// Changes the daemon's log at run time: its format, its rings' size.
    pub fn log_control(&self) -> &crate::log::Control {
        &self.log_control
    }

    /// How long the daemon has been ready.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Host for DaemonHost {
    fn logger(&self) -> &Logger {
        &self.logger
    }

    fn stop(&mut self, code: i32) {
        self.signal.stop_with(code);
    }

    fn arm_timer(&mut self, after: Duration, period: Option<Duration>, name: String) -> TimerId {
        self.arm_listener_timer(after, period, name)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.reactor.cancel(id).is_some()
    }
}

impl LoopHost for DaemonHost {
    type Deadline = Deadline;

    fn reactor(&mut self) -> &mut Reactor<Due<Deadline>> {
        &mut self.reactor
    }
}
