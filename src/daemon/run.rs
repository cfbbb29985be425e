//! The running daemon: start-up, the driver loop, and the controlled shutdown.

use std::path::Path;
use std::time::{Duration, Instant};

use slog::{Logger, debug, error, info, warn};

use super::host::Deadline;
use super::notify::Notifier;
use super::{Daemon, DaemonHost};
use crate::bus::{Bus, DaemonEvent, Host};
use crate::driver::{self, Driven, Due, LoopHost};
use crate::error::Result;
use crate::log;
use crate::pidfile::{PidFile, Previous};
use crate::privs::Identity;
use crate::process::{self, Readiness};
use crate::reactor::{Reactor, Token};
use crate::rpc::{DaemonEngine, Methods, RpcError, Ticket};
use crate::socket::{Leftover, Listener, SocketEvent, server::Server};

/// What the daemon process owns while it runs.
struct Running {
    bus: Bus<DaemonHost>,
    methods: Methods<DaemonHost>,
    server: Option<Server>,
    host: DaemonHost,
    socket_events: Vec<SocketEvent>,
    /// While stopping: reap at least this often (SIGCHLD may not be caught).
    reap_every: Option<Duration>,
    /// systemd's notify protocol and the `-d` launcher's readiness.
    notify: Notifier,
    /// The control socket came from systemd (socket activation): its file stays at stop.
    inherited: bool,
}

/// See [`Running::serving`].
type Serving<'a> = (
    &'a mut Server,
    DaemonEngine<'a, DaemonHost>,
    &'a mut Vec<SocketEvent>,
);

impl Running {
    /// The server (if it runs), the engine that answers its calls and where it tells of
    /// connections, borrowed apart.
    fn serving(&mut self) -> Option<Serving<'_>> {
        let server = self.server.as_mut()?;
        let engine = DaemonEngine {
            methods: &mut self.methods,
            bus: &mut self.bus,
            host: &mut self.host,
        };
        Some((server, engine, &mut self.socket_events))
    }

    /// Moves what the supervisor produced where it belongs: events to the bus, deadlines to
    /// the timer queue, resolved tickets to the answers.
    fn take_outbox(&mut self) {
        while self.host.workers.has_outbox() {
            let out = self.host.workers.take_outbox();
            for event in out.events {
                self.bus.emit_boxed(event);
            }
            for (at, deadline) in out.deadlines {
                self.host
                    .reactor()
                    .timers()
                    .insert(at, None, Due::Own(Deadline::Worker(deadline)));
            }
            if let Some(code) = out.stop {
                self.host.stop(code);
            }
            let resolved = out.resolved.into_iter();
            self.host.answers.extend(
                resolved.map(|(id, outcome)| (Ticket(id), outcome.map_err(RpcError::from))),
            );
        }
    }
}

impl Driven for Running {
    type Host = DaemonHost;

    fn bus_and_host(&mut self) -> (&mut Bus<DaemonHost>, &mut DaemonHost) {
        (&mut self.bus, &mut self.host)
    }

    fn io(&mut self, token: Token, readable: bool, writable: bool) {
        // Connections first (the hot path), then the workers' channels.
        if let Some((server, mut engine, events)) = self.serving() {
            if server.ready(token, readable, writable, &mut engine, events) {
                return;
            }
        }
        self.host.workers.ready(token);
    }

    fn deadline(&mut self, deadline: Deadline, now: Instant) {
        match deadline {
            Deadline::Worker(d) => self.host.workers.deadline(d),
            Deadline::Connection(token) => {
                if let Some((server, mut engine, events)) = self.serving() {
                    server.deadline(token, now, &mut engine, events);
                }
            }
            Deadline::Notify(timer) => {
                if self.notify.due(timer, self.host.workers.readiness()) {
                    self.host.reactor().timers().insert(
                        Notifier::next_check(),
                        None,
                        Due::Own(Deadline::Notify(timer)),
                    );
                }
            }
        }
    }

    fn settle(&mut self) {
        // Workers' lines become `daemon.log.<worker>` events only while someone may get them.
        let tapped = self
            .bus
            .may_receive::<crate::worker::WorkerLog>(crate::worker::WorkerLog::PREFIX);
        self.host.workers.set_log_listeners(tapped);
        if let Some((config, event)) = self.host.reloaded.take() {
            // systemd hears of the reload once it is done: RELOADING=1 (with the time) then
            // READY=1 at once, which Type=notify-reload accepts.
            let tell = self.notify.is_ready();
            if tell {
                self.notify.reloading();
            }
            if let Some(server) = &mut self.server {
                server.reconfigure(&config);
            }
            self.methods.set_max_multicall(config.socketmaxbatch);
            self.bus.emit(event);
            if tell {
                self.notify.ready();
            }
        }
        // (An answer may let a connection serve calls it buffered, which may hand the
        // supervisor more work or answer more: until both are done.)
        while self.host.workers.has_outbox() || !self.host.answers.is_empty() {
            self.take_outbox();
            for (ticket, outcome) in std::mem::take(&mut self.host.answers) {
                if let Some((server, mut engine, events)) = self.serving() {
                    server.complete(ticket, outcome, &mut engine, events);
                }
            }
        }
        match &mut self.server {
            Some(server) => server.publish(&mut self.host.subscribers, &mut self.socket_events),
            // No connection to write to: nothing may wait for one.
            None => drop(self.host.subscribers.take_published()),
        }
        for e in self.socket_events.drain(..) {
            if let (true, Some(conn)) = (e.is_hangup(), e.connection()) {
                self.host.subscribers.forget(conn);
            }
            self.bus.emit(e);
        }
        super::subscribe::renew(&mut self.bus, &mut self.host.subscribers);
    }

    fn max_wait(&mut self) -> Option<Duration> {
        if self.host.workers.has_left() {
            return Some(Duration::ZERO);
        }
        self.reap_every
    }

    fn after_turn(&mut self, _now: Instant) {
        self.host.workers.drain_left();
    }
}

impl Daemon {
    /// Where the default logger writes.
    pub(super) fn log_output(&self) -> log::Output {
        log::Output::choose(
            self.console.daemon,
            self.config.logfile.as_deref(),
            &self.config.description,
        )
    }

    fn default_logger(&self, control: &log::Control) -> Result<(Logger, Option<log::LogFile>)> {
        log::build(&self.log_output(), self.console.verbose, control)
    }

    pub(super) fn run(
        &mut self,
        mut pidfile: PidFile,
        previous: Previous,
        mut readiness: Option<&mut Readiness>,
    ) -> Result<i32> {
        // A failure before the loop runs removes the pid file too.
        let prelude = (|| -> Result<_> {
            pidfile.write_pid(process::pid())?;
            let mut log_file = None;
            let control = log::Control::new(self.config.logformat, self.config.loglines);
            control.set_level(if self.console.verbose {
                slog::Level::Debug
            } else {
                self.config.loglevel
            });
            if self.custom_logger {
                self.logger = log::tee_custom(self.logger.clone(), &control);
            } else {
                (self.logger, log_file) = self.default_logger(&control)?;
            }
            Ok((log_file, control, Reactor::new()?))
        })();
        let (log_file, log_control, reactor) = match prelude {
            Ok(done) => done,
            Err(e) => {
                let _ = pidfile.remove();
                return Err(e);
            }
        };
        let logger = self.logger.clone();
        if let Previous::Stale(pid) = previous {
            warn!(logger, "took over a stale pid file"; "path" => %self.config.pidfile.display(),
                "previous_pid" => pid);
        }
        self.signal.attach(reactor.handle());
        self.methods.set_max_multicall(self.config.socketmaxbatch);
        self.workers.attach_log(log_control.clone());
        let mut running = Running {
            bus: std::mem::take(&mut self.bus),
            methods: std::mem::take(&mut self.methods),
            server: None,
            host: DaemonHost {
                reactor,
                workers: std::mem::take(&mut self.workers),
                logger: logger.clone(),
                signal: self.signal.clone(),
                started: Instant::now(),
                socket: self.config.sockethandler.to_string(),
                log_file,
                log_control,
                config: self.config.clone(),
                reload: std::mem::take(&mut self.reload),
                reloaded: None,
                app: self.app.clone(),
                app_defaults: std::mem::take(&mut self.app_defaults),
                answers: Vec::new(),
                subscribers: Default::default(),
            },
            socket_events: Vec::new(),
            reap_every: None,
            notify: Notifier::new(logger.clone(), readiness.as_mut().map(|r| r.take())),
            inherited: false,
        };
        let outcome = self.serve(&mut running);
        // Never told (a failure first): the caller reports the failure on it.
        if let (Some(back), Some(r)) = (running.notify.take_launcher(), readiness) {
            *r = back;
        }
        if let Err(e) = &outcome {
            error!(logger, "daemon failed"; "error" => %e);
        }
        release(&mut running.host);
        if let Err(e) = pidfile.remove() {
            warn!(logger, "cannot remove the pid file"; "error" => %e);
        }
        outcome
    }

    fn serve(&mut self, r: &mut Running) -> Result<i32> {
        if let Some(n) = self.config.niceness {
            process::set_niceness(n)?;
        }
        // Resolved and checked before anything runs, so an unknown user is an error at start;
        // the limits are applied while still root (raising a hard limit needs it).
        let identity = match &self.config.user {
            Some(user) => {
                let id = Identity::resolve("", user, self.config.group.as_deref())?;
                id.check_switchable("user")?;
                Some(id)
            }
            None => None,
        };
        self.config.rlimits.apply("rlimits")?;
        // Unless the configuration says otherwise, as many descriptors as the hard limit
        // allows (the workers get the soft limit back).
        if !self.config.rlimits.0.contains_key("nofile") {
            if let Some((from, to)) = crate::privs::raise_nofile() {
                debug!(r.host.logger, "descriptor limit raised"; "from" => from, "to" => to);
            }
        }
        // Signals are caught from the start, so none sent once the daemon is ready is lost.
        let mut seen = None;
        crate::bus::catch_subscribed_signals(&mut r.host.reactor, &r.bus, &mut seen)?;
        r.bus.emit(DaemonEvent::Start);
        r.bus.dispatch(&mut r.host);
        // The setup steps see the daemon as the user built it: give the bus and methods back
        // for the time they run.
        std::mem::swap(&mut self.bus, &mut r.bus);
        std::mem::swap(&mut self.methods, &mut r.methods);
        std::mem::swap(&mut self.workers, &mut r.host.workers);
        let setup = std::mem::take(&mut self.setup);
        let mut outcome = Ok(());
        for step in setup {
            if let Err(e) = step(self) {
                outcome = Err(crate::Error::Setup(e.to_string()));
                break;
            }
        }
        std::mem::swap(&mut self.bus, &mut r.bus);
        std::mem::swap(&mut self.methods, &mut r.methods);
        std::mem::swap(&mut self.workers, &mut r.host.workers);
        outcome?;
        crate::bus::catch_subscribed_signals(&mut r.host.reactor, &r.bus, &mut seen)?;
        // What setup() changed, and the `workers` key over the installed workers.
        r.host.workers.configure(&self.config.workers)?;
        r.host.config = self.config.clone();
        check_worker_users(identity.as_ref(), &r.host.workers)?;
        let address = self.config.sockethandler.to_string();
        let listener = match super::activation::inherited()? {
            // systemd's socket activation: its socket, not bound here, never unlinked here.
            Some((listener, passed)) => {
                if passed != address {
                    info!(r.host.logger, "socket activation: serving on the passed socket";
                        "socket" => &passed, "configured" => &address);
                }
                r.inherited = true;
                r.host.socket = passed;
                listener
            }
            None => {
                let (listener, leftover) = Listener::bind(
                    &self.config.sockethandler,
                    self.config.socketmode,
                    self.console.hardstart,
                )?;
                if leftover == Leftover::RemovedStale {
                    warn!(r.host.logger, "removed a stale socket file"; "socket" => &address);
                }
                listener
            }
        };
        if let Some(id) = identity.filter(|id| !id.is_current()) {
            // A passed socket is systemd's (SocketUser= sets its owner): not chowned here.
            let path = if r.inherited {
                None
            } else {
                listener.unix_path()
            };
            self.drop_privileges(&id, path, r)?;
        }
        let handle = r.host.reactor.handle();
        r.server = Some(Server::new(
            handle.clone(),
            listener,
            &self.config,
            r.host.logger.clone(),
            Box::new(r.host.reactor.queue()),
        )?);
        let level = r.host.log_control.level();
        r.host.workers.attach(
            handle,
            r.host.logger.clone(),
            level,
            self.config.shutdowntimeout,
            self.config.sockettimeout.max(Duration::from_secs(5)),
        );
        r.host.workers.start_all()?;
        // READY (systemd's and the launcher's) once every worker is up: the notifier's timers.
        for (at, period, timer) in r.notify.timers() {
            r.host
                .reactor()
                .timers()
                .insert(at, period, Due::Own(Deadline::Notify(timer)));
        }
        r.host.started = Instant::now();
        info!(r.host.logger, "ready"; "pid" => process::pid(), "socket" => &r.host.socket);
        r.bus.emit(DaemonEvent::Ready);
        let signal = self.signal.clone();
        let outcome = driver::drive(r, |_| signal.is_stopped());
        let code = self.shutdown(r);
        outcome.map(|()| code)
    }

    /// The controlled shutdown: `daemon.stopping`, stop accepting, remove the socket file,
    /// stop every worker in parallel (the stop line pulled for all, or `stop` on the channel
    /// of one forked without it; then SIGTERM, then SIGKILL after `shutdowntimeout`) while
    /// the loop goes on serving signals and the workers' channels, then `daemon.stop`.
    fn shutdown(&mut self, r: &mut Running) -> i32 {
        let code = self.signal.code();
        info!(r.host.logger, "stopping"; "exit_code" => code);
        // Workers are given up on by `hard` (below), plus the kill and its reap.
        r.notify
            .stopping(Instant::now() + self.config.shutdowntimeout + Duration::from_secs(3));
        r.bus.emit(DaemonEvent::Stopping);
        drain_bus(r);
        // The listener removes its socket file as it closes (a guard, so every failure path
        // after the bind removes it too). Subscribers stay, to hear the workers stop.
        let closed = r
            .server
            .as_mut()
            .and_then(|s| s.stop_accepting(&mut r.socket_events));
        if let Some(path) = closed {
            if path.exists() && !r.inherited {
                warn!(r.host.logger, "the socket file is still there after closing";
                    "path" => %path.display());
            }
        }
        // The workers are reaped as their channels close and every 50 ms (`reap_every`):
        // SIGCHLD adds nothing meanwhile, and its delivery, one a worker in a stop of
        // thousands (a signal frame, the handler's write to the self-pipe, `rt_sigreturn`),
        // was a tenth of the daemon's time. It stays pending, and is delivered once after.
        let quiet = crate::reactor::BlockedSignals::only(crate::reactor::Signal::CHLD);
        if let Err(e) = &quiet {
            debug!(r.host.logger, "SIGCHLD not blocked while stopping"; "error" => %e);
        }
        r.host.workers.shutdown();
        r.reap_every = Some(Duration::from_millis(50));
        let hard = Instant::now() + self.config.shutdowntimeout + Duration::from_secs(1);
        let mut killed = false;
        let outcome = driver::drive(r, |r| {
            r.host.workers.reap();
            r.settle();
            if r.host.workers.all_gone() {
                return true;
            }
            if Instant::now() >= hard {
                if killed {
                    warn!(r.host.logger, "workers still not reaped; giving up on them");
                    return true;
                }
                r.host.workers.kill_all();
                killed = true;
            }
            false
        });
        drop(quiet);
        if let Err(e) = outcome {
            error!(r.host.logger, "the loop failed while stopping"; "error" => %e);
        }
        drain_bus(r);
        r.bus.emit(DaemonEvent::Stop);
        drain_bus(r);
        if let Some(server) = r.server.take() {
            server.close();
        }
        info!(r.host.logger, "stopped");
        code
    }
}

impl Daemon {
    /// Hands the socket file, the pid file and the log file to `id`, then becomes it for good.
    /// Called after the bind and before the server is made (so `socketpeers: owner` means
    /// the new user) and before any worker is forked.
    fn drop_privileges(&self, id: &Identity, socket: Option<&Path>, r: &Running) -> Result<()> {
        let log = &r.host.logger;
        let logfile = r.host.log_file.as_ref().and(self.config.logfile.as_deref());
        let files = [
            ("socket", socket),
            ("pidfile", Some(self.config.pidfile.as_path())),
            ("logfile", logfile),
        ];
        for (key, path) in files {
            let Some(path) = path else { continue };
            id.chown(path)?;
            // Removing (the socket and pid file at stop) and re-creating (the log after a
            // rotation) need write permission on the directory, which chown cannot give.
            if !id.can_remove(path) {
                warn!(log, "the daemon's user cannot write the directory of this file: \
                    it will not be removed at stop (or re-created after a rotation)";
                    "key" => key, "path" => %path.display(), "user" => &id.name);
            }
        }
        id.become_it("user")?;
        info!(log, "dropped privileges"; "user" => &id.name, "uid" => id.uid, "gid" => id.gid,
            "groups" => ?id.groups);
        Ok(())
    }
}

/// A worker may have a user of its own only when the daemon keeps root, or when it is the
/// daemon's user: after the drop nothing can switch to someone else. Checked at start (after
/// the setup steps, which install the workers), so the error names the worker's key.
fn check_worker_users(daemon: Option<&Identity>, workers: &crate::worker::Workers) -> Result<()> {
    for (name, process) in workers.processes() {
        let Some(user) = process.user() else { continue };
        let key = format!("workers.{name}.");
        let id = Identity::resolve(&key, user, process.group())?;
        match daemon {
            Some(d) if d.uid != id.uid || d.gid != id.gid => {
                return Err(crate::Error::config(
                    format!("{key}user"),
                    format!(
                        "the daemon drops to user {} (uid {}) before forking its workers: a worker \
                         cannot then become {} (uid {}); remove the daemon's user or this one",
                        d.name, d.uid, id.name, id.uid
                    ),
                ));
            }
            Some(_) => {}
            None => id.check_switchable(&format!("{key}user"))?,
        }
    }
    Ok(())
}

/// Dispatches until the queue is empty, within a bound (listeners that keep emitting cannot
/// hold up a stop).
fn drain_bus(r: &mut Running) {
    let deadline = Instant::now() + Duration::from_secs(1);
    r.settle();
    while r.bus.has_pending() && Instant::now() < deadline {
        r.bus.dispatch(&mut r.host);
        r.settle();
    }
}

/// Kills workers still running (a start that failed half-way) and reaps them, briefly.
fn release(host: &mut DaemonHost) {
    if host.workers.all_gone() {
        return;
    }
    host.workers.kill_all();
    let deadline = Instant::now() + Duration::from_secs(2);
    while !host.workers.all_gone() && Instant::now() < deadline {
        host.workers.reap();
        std::thread::sleep(Duration::from_millis(5));
    }
}
