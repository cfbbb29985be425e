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
    /// The running configuration (a reload changes it).
    pub(super) config: crate::Config,
    /// Where a reload reads from.
    pub(super) reload: super::reload::Source,
    /// A reload's news for the loop: the socket's new limits, the event to fire.
    pub(super) reloaded: Option<(crate::Config, crate::bus::ReloadEvent)>,
    /// The application's name and version (`Daemon::app`).
    pub(super) app: (String, Option<String>),
    /// The declared application keys' defaults (`Daemon::app_key`).
    pub(super) app_defaults: serde_json::Map<String, serde_json::Value>,
    /// The control socket's event subscriptions.
    pub(super) subscribers: crate::socket::subscribers::Subscribers,
    /// Deferred replies answered with [`DaemonHost::reply`], for the loop to write.
    pub(super) answers: Vec<(
        crate::rpc::Ticket,
        Result<serde_json::Value, crate::rpc::RpcError>,
    )>,
}

impl DaemonHost {
    /// Answers a call whose reply was deferred ([`CallContext::defer`](crate::rpc::CallContext::defer)):
    /// the caller gets `outcome` once the current event or call is handled. A reply answered
    /// twice, or after its deadline, or whose caller hung up, is ignored.
    pub fn reply(
        &mut self,
        reply: crate::rpc::Reply,
        outcome: Result<serde_json::Value, crate::rpc::RpcError>,
    ) {
        self.answers.push((reply.ticket(), outcome));
    }

    /// The running configuration: the file and the command line, with what `setup()` and
    /// the reloads since changed.
    pub fn config(&self) -> &crate::Config {
        &self.config
    }

    /// The application key `key` (declared with [`Daemon::app_key`](crate::Daemon::app_key)):
    /// its value in the configuration file's `app` object, else its declared default; `None`
    /// for a key never declared or not a `T`.
    pub fn app_value<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        let value = self
            .config
            .app
            .get(key)
            .or_else(|| self.app_defaults.get(key))?;
        T::deserialize(value).ok()
    }

    /// The application's name and version, as given to [`Daemon::app`](crate::Daemon::app).
    pub fn app(&self) -> (&str, Option<&str>) {
        (&self.app.0, self.app.1.as_deref())
    }

    /// Reads the `--config` file again (SIGHUP and `daemon.reload` call this): the keys
    /// that can change at run time are applied (the socket's limits and timeouts to the
    /// connections accepted from now on, `shutdowntimeout`, `description`, `loglevel`, `logformat`,
    /// `loglines`, `socketsecret`, the workers' restart policy and process settings, the
    /// application's keys), the others that changed are reported as needing a restart and
    /// keep their running value; `daemon.reload` fires on the bus once the call returns. A
    /// key removed from the file keeps its running value. Without `--config`, only the
    /// command line is applied again (nothing changes).
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) naming the key, or
    /// [`Error::Path`](crate::Error::Path) naming the file, when the file is unreadable or
    /// invalid (or a `workers` entry does not fit the installed workers): nothing is
    /// applied, the running configuration stays.
    pub fn reload(&mut self) -> crate::Result<crate::bus::ReloadEvent> {
        let outcome = self.reload.reload(&self.config)?;
        if outcome.applied.iter().any(|k| k == "workers") {
            self.workers.configure(&outcome.config.workers)?;
        }
        let config = outcome.config;
        self.log_control.set_format(config.logformat);
        self.log_control.set_lines(config.loglines);
        let level = if self.reload.verbose {
            slog::Level::Debug
        } else {
            config.loglevel
        };
        self.log_control.set_level(level);
        self.workers.set_level(level);
        self.workers.set_stop_timeout(config.shutdowntimeout);
        let event = crate::bus::ReloadEvent {
            applied: outcome.applied,
            restart_needed: outcome.restart_needed,
        };
        self.config = config.clone();
        self.reloaded = Some((config, event.clone()));
        Ok(event)
    }

    /// Whether the daemon was started with a configuration file to reload.
    pub fn has_config_file(&self) -> bool {
        self.reload.has_file()
    }

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
