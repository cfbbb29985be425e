//! The supervisor: the daemon's side of its workers.
//!
//! Split along its concepts: the registry of installed workers (this file), forking them
//! behind the [`Processes`] trait (`spawn`), reaping and the restart policy (`reap`), what
//! they send up (`inbox`), stops and their escalation (`stop`), acknowledged commands
//! (`acks`), calls that wait for a worker's reply (`calls`), and the workers' output
//! (`output`). Everything that happens to a worker goes through one state machine here, and
//! every deadline it arms names the process (or the restart) it belongs to, so a deadline
//! that outlives its process is ignored instead of hitting the next one.
//!
//! The supervisor talks to the rest of the daemon through an outbox: the events it emits,
//! the deadlines it arms (on the daemon's one timer queue), the acknowledgements it resolves.
//! Its unit tests drive it with a fake [`Processes`], without forking.

mod acks;
mod arena;
mod calls;
mod inbox;
mod info;
mod line;
mod mapped;
mod names;
mod output;
mod reap;
mod server;
mod spawn;
mod stop;
mod tap;
mod template;
#[cfg(test)]
mod tests;
mod unshared;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use serde_json::{Value, json};
use slog::{Level, Logger};

use super::{Channel, Spawn, Spec, State, Worker};
use crate::bus::Event;
use crate::error::{Error, Result, WorkerError};
use crate::reactor::{Handle, Source, TokenMap};

use crate::worker::backlog::Backlog;
use acks::Ack;
pub(crate) use acks::Toggle;
pub use info::{Exit, WorkerInfo};
pub(crate) use spawn::{Fork, Processes};
pub(crate) use template::Template;

/// A deadline the supervisor armed, with what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deadline {
    /// Escalate the stop of this process (SIGTERM, then SIGKILL).
    Escalate { worker: usize, generation: u64 },
    /// The backoff of this restart is over.
    Restart { worker: usize, epoch: u64 },
    /// An acknowledgement is overdue.
    Ack(u64),
    /// Calls whose replies are overdue fail (a sweep armed for this instant).
    Calls(Instant),
    /// This process's wake-up socket closed a while ago: it should be gone by now.
    HungUp { worker: usize, generation: u64 },
    /// A walk over the daemon's children was put off (see `Workers::reap`): due now.
    Walk,
}

/// What the supervisor hands to the daemon: events, deadlines, resolved acknowledgements, a
/// stop of the daemon.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) events: Vec<Box<dyn Event>>,
    pub(crate) deadlines: Vec<(Instant, Deadline)>,
    pub(crate) resolved: Vec<(u64, Result<Value>)>,
    pub(crate) stop: Option<i32>,
}

/// One running process of a worker.
struct Run {
    pid: Pid,
    source: Source<Channel>,
    started: Instant,
    /// Unique to this process: its deadlines carry it.
    generation: u64,
    /// A stop was asked for (by an administrator, a restart, the shutdown).
    stopping: bool,
    sigterm_sent: bool,
    /// Frames from it that could not be decoded, dropped.
    dropped: u64,
    /// Killed for a corrupt channel (once).
    killed: bool,
    /// Its wake-up socket was closed (end of file): no longer watched.
    hung_up: bool,
    /// What it may still log, and how many lines were suppressed past it.
    logs: inbox::LogBudget,
    /// Its stdout and stderr pipes, until each reaches EOF or the process is reaped.
    output: [Option<output::Pipe>; 2],
    /// The calls that wait for its reply, by the id sent with each.
    calls: HashMap<u64, calls::Pending>,
    /// Its region is left out of later forks (see `unshared`).
    unshared: bool,
    /// It holds the stop line (see `line`): the shutdown stops it by pulling the line.
    on_line: bool,
}

impl Run {
    fn channel(&self) -> &Channel {
        self.source.get_ref()
    }

    fn state(&self) -> State {
        let header = self.channel().header();
        State::from_number(header.state.load(Ordering::Acquire)).unwrap_or(State::Spinup)
    }
}

struct Entry {
    /// In `Workers::arena`.
    name: arena::Name,
    /// What each fork copies: the daemon never runs it. In `Workers::arena`.
    template: arena::Placed,
    spec: Spec,
    /// The spec as the code installed it, which the `workers` configuration key overrides
    /// (again from this one at each reload).
    installed: Spec,
    run: Option<Run>,
    /// The state when no process runs: `Exited` or `Failed`.
    outside: State,
    starts: u32,
    /// An administrator stopped it: no policy applies until it is started again.
    admin_stopped: bool,
    /// Start again as soon as the current process is gone (`worker.restart`).
    restart_when_gone: bool,
    /// A backoff restart is armed for this epoch; bumped to cancel it.
    epoch: u64,
    restart_pending: bool,
    /// When the policy restarted it, within the window.
    restarts: VecDeque<Instant>,
    /// Crashes in a row soon after their start.
    quick: u32,
    last_exit: Option<Exit>,
    /// Its last output and log lines, across its processes (`worker.log`).
    ring: crate::log::ring::Ring,
}

/// The workers of a daemon: install them in `setup()` with
/// [`Daemon::workers`](crate::Daemon::workers); a listener or a method reaches them through
/// the daemon's host, `ctx.host().workers()`.
///
/// A restarted worker is a fresh copy of the installed value, as it was at `install`: what
/// one process of it changed in itself is gone with that process. To carry state across
/// restarts, install a factory with [`Workers::install_with`].
pub struct Workers {
    /// A mapping of its own, which the fork server leaves whole out of its workers.
    entries: mapped::MapVec<Entry>,
    /// Where the entries' templates are: declared after them, so dropped after them.
    arena: arena::Arena,
    /// The entry of each name (entries are never removed).
    by_name: names::NameIndex,
    procs: Box<dyn Processes>,
    handle: Option<Handle>,
    logger: Logger,
    level: Level,
    stop_timeout: Duration,
    ack_timeout: Duration,
    shutting_down: bool,
    /// The shutdown pulled the stop line: a worker on it needs no `Stop` frame.
    line_pulled: bool,
    acks: Vec<Ack>,
    next_generation: u64,
    /// The entry of each running worker's channel token.
    by_token: TokenMap<usize>,
    /// The entry of each running worker's pid.
    by_pid: HashMap<Pid, usize>,
    /// Running workers whose region later forks still copy (it could not be marked).
    copied_regions: usize,
    buffer: Vec<u8>,
    /// Entries whose channel had frames left when their turn's budget ran out, this turn
    /// and the turn before: read again after the next turn, and the daemon's wait does not
    /// block meanwhile (see [`Workers::drain_left`]).
    left: Vec<usize>,
    left_due: Vec<usize>,
    /// The memory held by this supervisor's worker messages still waiting on the bus.
    backlog: Backlog,
    /// The process groups of workers that are gone but may have left processes behind:
    /// reaped until empty.
    groups: Vec<Pid>,
    /// Running workers whose wake-up socket closed (entry and generation): their processes
    /// are ending, and each is reaped by its pid.
    ending: Vec<(usize, u64)>,
    /// The pace of walks over the daemon's children (a large daemon's).
    walks: reap::Walks,
    out: Outbox,
    /// The entry and stream (0 stdout, 1 stderr) of each open output pipe's token.
    by_pipe: TokenMap<(usize, usize)>,
    pipe_buffer: Vec<u8>,
    /// The ring size (and the daemon's log format), changed at run time.
    log_control: crate::log::Control,
    /// Where workers' lines become `daemon.log.<worker>` events.
    tap: tap::LogTap,
    /// The deadlines of the calls that wait for replies.
    call_clock: calls::CallClock,
}

impl Default for Workers {
    fn default() -> Self {
        Workers::with_processes(Box::new(Fork::default()))
    }
}

impl Workers {
    pub(crate) fn with_processes(procs: Box<dyn Processes>) -> Workers {
        Workers {
            entries: mapped::MapVec::new(),
            arena: arena::Arena::default(),
            by_name: names::NameIndex::default(),
            procs,
            handle: None,
            logger: Logger::root(slog::Discard, slog::o!()),
            level: Level::Info,
            stop_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(5),
            shutting_down: false,
            line_pulled: false,
            acks: Vec::new(),
            next_generation: 1,
            by_token: TokenMap::default(),
            by_pid: HashMap::new(),
            copied_regions: 0,
            buffer: Vec::new(),
            left: Vec::new(),
            left_due: Vec::new(),
            backlog: Backlog::default(),
            groups: Vec::new(),
            ending: Vec::new(),
            walks: reap::Walks::default(),
            out: Outbox::default(),
            by_pipe: TokenMap::default(),
            pipe_buffer: Vec::new(),
            log_control: crate::log::Control::default(),
            tap: tap::LogTap::default(),
            call_clock: calls::CallClock::default(),
        }
    }

    /// Installs `worker` under `name`: it starts with the daemon, ticking every looptime,
    /// restarted by its [`Spec`] (a bare `Duration` is a permanent worker with the default
    /// policy). Every process of it is a fresh copy of `worker` as it is now.
    ///
    /// The value is copied into each worker process by `fork()`. Descriptors it owns (a
    /// file, a socket opened in `setup()`) stay open and valid in the worker: the worker
    /// closes only the daemon's own descriptors (its poller, control socket, connections,
    /// pid file, log file, the other workers' channels). Like any forked copy, they are
    /// shared with the daemon's: a socket both ends use needs its own protocol; open a
    /// private one in [`Worker::spinup`] instead.
    ///
    /// # Errors
    ///
    /// [`Error::DuplicateWorker`] for a name in use or empty, [`Error::Worker`] for a zero
    /// looptime.
    pub fn install<W: Worker>(
        &mut self,
        name: &str,
        worker: W,
        spec: impl Into<Spec>,
    ) -> Result<()> {
        self.add(name, template::Value(Some(worker)), spec.into())
    }

    /// Installs a worker built by `factory` in each new worker process, before `spinup`:
    /// what it opens stays open, and it learns which start this is ([`Spawn`]), so it can
    /// carry state across restarts (read back what the last process saved, count restarts).
    ///
    /// # Errors
    ///
    /// As [`Workers::install`].
    pub fn install_with<W, F>(
        &mut self,
        name: &str,
        factory: F,
        spec: impl Into<Spec>,
    ) -> Result<()>
    where
        W: Worker,
        F: FnMut(&Spawn) -> W + 'static,
    {
        self.add(
            name,
            template::Factory(factory, std::marker::PhantomData),
            spec.into(),
        )
    }

    fn add(&mut self, name: &str, template: impl Template, spec: Spec) -> Result<()> {
        if name.is_empty() || self.find(name).is_some() {
            return Err(Error::DuplicateWorker(name.to_owned()));
        }
        if spec.looptime.is_zero() {
            return Err(worker_error(
                name,
                WorkerError::Invalid("its looptime must be more than 0".into()),
            ));
        }
        let template = self.arena.place(template)?;
        let placed_name = self.arena.place_str(name)?;
        let entries = &self.entries;
        self.by_name.reserve_one(|e| entries[e].name.as_str())?;
        self.entries.try_push(Entry {
            name: placed_name,
            template,
            installed: spec.clone(),
            spec,
            run: None,
            outside: State::Exited,
            starts: 0,
            admin_stopped: false,
            restart_when_gone: false,
            epoch: 0,
            restart_pending: false,
            restarts: VecDeque::new(),
            quick: 0,
            last_exit: None,
            ring: crate::log::ring::Ring::default(),
        })?;
        self.by_name.insert(name, self.entries.len() - 1);
        Ok(())
    }

    pub(crate) fn attach(
        &mut self,
        handle: Handle,
        logger: Logger,
        level: Level,
        stop_timeout: Duration,
        ack_timeout: Duration,
    ) {
        self.handle = Some(handle);
        self.logger = logger;
        self.level = level;
        self.stop_timeout = stop_timeout;
        self.ack_timeout = ack_timeout;
    }

    /// Applies the `workers` configuration key: each worker's spec is the installed one with
    /// the settings of its entry in `section` on top (none: the installed one). All or
    /// nothing: the first bad entry is the error and no spec changes. The new policy applies
    /// from the next exit; process settings from the next start.
    pub(crate) fn configure(
        &mut self,
        section: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<()> {
        if let Some(name) = section.keys().find(|n| self.find(n).is_none()) {
            return Err(crate::Error::config(
                format!("workers.{name}"),
                format!(
                    "no installed worker has this name; installed: {}",
                    self.names().join(", ")
                ),
            ));
        }
        let specs = self
            .entries
            .iter()
            .map(|e| match section.get(e.name.as_str()) {
                Some(settings) => super::configure::spec(&e.name, e.installed.clone(), settings),
                None => Ok(e.installed.clone()),
            })
            .collect::<Result<Vec<_>>>()?;
        for (entry, spec) in self.entries.iter_mut().zip(specs) {
            entry.spec = spec;
        }
        Ok(())
    }

    /// The level the workers started from now on log at (the running ones keep theirs).
    pub(crate) fn set_level(&mut self, level: Level) {
        self.level = level;
    }

    /// The time a stopping worker gets before SIGKILL (`shutdowntimeout`), from now on.
    pub(crate) fn set_stop_timeout(&mut self, timeout: Duration) {
        self.stop_timeout = timeout;
    }

    /// Whether some listener or subscription could receive a
    /// [`WorkerLog`](crate::worker::WorkerLog) now: the workers' lines become events only
    /// then (the daemon says so each turn).
    pub(crate) fn set_log_listeners(&mut self, listening: bool) {
        self.tap.listening = listening;
    }

    /// The control of the daemon's log: its rings' size.
    pub(crate) fn attach_log(&mut self, control: crate::log::Control) {
        self.log_control = control;
    }

    fn find(&self, name: &str) -> Option<usize> {
        self.by_name.find(name, |e| self.entries[e].name.as_str())
    }

    fn index(&self, name: &str) -> Result<usize> {
        self.find(name)
            .ok_or_else(|| worker_error(name, WorkerError::Unknown))
    }

    /// The names, in installation order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.name.as_str()).collect()
    }

    /// Each worker's name and process settings.
    pub(crate) fn processes(&self) -> impl Iterator<Item = (&str, &crate::worker::Process)> {
        self.entries
            .iter()
            .map(|e| (e.name.as_str(), &e.spec.process))
    }

    /// The number of installed workers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is installed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn info_of(e: &Entry) -> WorkerInfo {
        let header = e.run.as_ref().map(|r| r.channel().header());
        WorkerInfo {
            name: e.name.as_str().to_owned(),
            pid: e.run.as_ref().map(|r| r.pid.as_raw()),
            state: e.run.as_ref().map_or(e.outside, Run::state),
            looptime: e.spec.looptime,
            restart: e.spec.restart,
            restarts: e.starts.saturating_sub(1),
            uptime: e.run.as_ref().map(|r| r.started.elapsed()),
            heartbeat: header.map(|h| h.heartbeat.load(Ordering::Relaxed)),
            dropped: e.run.as_ref().map_or(0, |r| {
                r.dropped + r.channel().header().dropped.load(Ordering::Relaxed)
            }),
            lost_logs: e.run.as_ref().map_or(0, |r| {
                r.logs.suppressed_total + r.channel().header().lost_logs.load(Ordering::Relaxed)
            }),
        }
    }

    /// Every worker, in installation order.
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.entries.iter().map(Self::info_of).collect()
    }

    /// One worker.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] if there is no such worker.
    pub fn info(&self, name: &str) -> Result<WorkerInfo> {
        Ok(Self::info_of(&self.entries[self.index(name)?]))
    }

    /// How its last process ended, if one did.
    pub fn last_exit(&self, name: &str) -> Option<&Exit> {
        self.find(name)
            .and_then(|i| self.entries[i].last_exit.as_ref())
    }

    /// Whether an administrator stopped the worker (no restart policy applies).
    pub fn is_admin_stopped(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|i| self.entries[i].admin_stopped)
    }

    /// Whether the daemon is stopping its workers.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// A summary for `daemon.status`: how many workers are in each state.
    pub fn summary(&self) -> Value {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for e in &self.entries {
            let state = e.run.as_ref().map_or(e.outside, Run::state);
            *counts.entry(state.name()).or_default() += 1;
        }
        json!({"installed": self.entries.len(), "states": counts})
    }

    /// How far the installed workers are on their way up, for the daemon's readiness.
    pub(crate) fn readiness(&self) -> crate::daemon::notify::Picture {
        let mut p = crate::daemon::notify::Picture::default();
        for e in &self.entries {
            let state = e.run.as_ref().map_or(e.outside, Run::state);
            let said_ready = e
                .run
                .as_ref()
                .is_some_and(|r| r.channel().header().ready.load(Ordering::Acquire) == 1);
            match state {
                State::Spinup if said_ready => p.looping += 1,
                State::Spinup if e.restart_pending => p.restarting += 1,
                State::Spinup => p.starting += 1,
                State::Looping | State::Paused => p.looping += 1,
                State::Spindown => p.stopping += 1,
                State::Exited if e.restart_pending => p.restarting += 1,
                State::Exited => p.exited += 1,
                State::Failed if e.restart_pending => p.restarting += 1,
                State::Failed => p.failed += 1,
            }
        }
        p
    }

    /// Sends a signal to a worker's process.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`] if there is no such worker or it is not running.
    pub fn kill(&mut self, name: &str, signal: crate::reactor::Signal) -> Result<()> {
        let i = self.index(name)?;
        let pid = self.entries[i]
            .run
            .as_ref()
            .map(|r| r.pid)
            .ok_or_else(|| worker_error(name, WorkerError::NotRunning))?;
        let signal = nix::sys::signal::Signal::try_from(signal.number())
            .map_err(|e| worker_error(name, WorkerError::Invalid(e.to_string())))?;
        self.procs.signal(pid, signal);
        Ok(())
    }

    /// What the supervisor has for the daemon since the last call.
    pub(crate) fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.out)
    }

    /// Whether the outbox holds something.
    pub(crate) fn has_outbox(&self) -> bool {
        let o = &self.out;
        !o.events.is_empty()
            || !o.deadlines.is_empty()
            || !o.resolved.is_empty()
            || o.stop.is_some()
    }

    fn emit(&mut self, event: impl Event) {
        self.out.events.push(Box::new(event));
    }

    /// Arms `deadline` `after` from now (capped: a huge timeout or backoff never overflows
    /// the clock).
    fn arm(&mut self, after: Duration, deadline: Deadline) {
        let now = self.procs.now();
        let at = now
            .checked_add(after.min(crate::reactor::LONGEST_DELAY))
            .unwrap_or(now);
        self.out.deadlines.push((at, deadline));
    }

    /// Handles a deadline it armed; one whose process or restart is gone does nothing.
    pub(crate) fn deadline(&mut self, deadline: Deadline) {
        match deadline {
            Deadline::Escalate { worker, generation } => self.escalate(worker, generation),
            Deadline::Restart { worker, epoch } => self.restart_due(worker, epoch),
            Deadline::Ack(id) => self.ack_overdue(id),
            Deadline::Calls(at) => self.sweep_calls(at),
            Deadline::HungUp { worker, generation } => self.hung_up(worker, generation),
            Deadline::Walk => self.walk_due(),
        }
    }
}

pub(crate) fn worker_error(name: &str, kind: WorkerError) -> Error {
    Error::Worker {
        name: name.to_owned(),
        kind,
    }
}
