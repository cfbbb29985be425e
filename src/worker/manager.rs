//! The daemon's side: installed workers, forking them, their channels, stops and acks.
//!
//! The policy (when to restart a crashed worker, when to give up) is not here: it belongs to
//! listeners (`ReapChild`, `Watchdog` in `daimon-listeners`), which drive this manager through
//! its public methods, as a user's own policy could.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork};
use serde_json::{Value, json};
use slog::{Level, Logger, crit, debug, error, info, trace, warn};

use super::{Channel, Message, State, Worker, child};
use crate::bus::WorkerEvent;
use crate::error::{Error, Result};
use crate::reactor::{Handle, Interest, Source, Timers, Token, TokenMap};
use crate::rpc::{RpcError, Ticket};

mod acks;
mod info;
mod stop;

use acks::Ack;
pub use info::{Exit, WorkerInfo};

/// Messages read from one worker per turn at most.
const MESSAGES_PER_TURN: usize = 1024;

struct Run {
    pid: Pid,
    source: Source<Channel>,
    started: Instant,
    /// Set when a stop was asked: the escalation deadline (SIGTERM, then SIGKILL).
    stopping: Option<Instant>,
    sigterm_sent: bool,
}

struct Entry {
    /// The template every fork copies: the daemon never runs it.
    worker: Box<dyn Worker>,
    looptime: Duration,
    forever: bool,
    run: Option<Run>,
    /// The state when no process runs: `Exited` or `Failed`.
    outside: State,
    starts: u32,
    /// An administrator stopped it: no restart policy applies until it is started again.
    admin_stopped: bool,
    /// Start again as soon as the current process is gone (`worker.restart`).
    restart_when_gone: bool,
}

#[derive(Clone)]
enum Deadline {
    Ack(Ticket),
    Escalate(String),
}

/// The workers of a daemon. Reach it in `setup()` with
/// [`Daemon::workers`](crate::Daemon::workers), and from a listener with
/// [`Context::workers`](crate::bus::Context::workers).
pub struct Workers {
    entries: Vec<(String, Entry)>,
    handle: Option<Handle>,
    logger: Logger,
    level: Level,
    stop_timeout: Duration,
    ack_timeout: Duration,
    acks: Vec<Ack>,
    resolved: Vec<(Ticket, std::result::Result<Value, RpcError>)>,
    deadlines: Timers<Deadline>,
    next_ticket: u64,
    shutting_down: bool,
    /// The entry of each running worker's channel token: readiness is matched in O(1).
    by_token: TokenMap<usize>,
    buffer: Vec<u8>,
    events: Vec<WorkerEvent>,
}

impl Default for Workers {
    fn default() -> Self {
        Workers {
            entries: Vec::new(),
            handle: None,
            logger: Logger::root(slog::Discard, slog::o!()),
            level: Level::Info,
            stop_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(5),
            acks: Vec::new(),
            resolved: Vec::new(),
            deadlines: Timers::default(),
            next_ticket: 1,
            shutting_down: false,
            by_token: TokenMap::default(),
            buffer: Vec::new(),
            events: Vec::new(),
        }
    }
}

impl Workers {
    /// Installs a worker: it starts with the daemon, ticking every `looptime`. With
    /// `forever`, a crash restarts it (by the `Watchdog` policy); without, a crash stops the
    /// whole daemon.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a duplicate name, an empty name, or a zero looptime.
    pub fn install(
        &mut self,
        worker: impl Worker,
        looptime: Duration,
        forever: bool,
    ) -> Result<()> {
        let name = worker.name().to_owned();
        if name.is_empty() || self.find(&name).is_some() {
            return Err(Error::config(
                "workers",
                format!("a worker named '{name}' is already installed, or the name is empty"),
            ));
        }
        if looptime.is_zero() {
            return Err(Error::config(
                "workers",
                format!("worker '{name}': looptime must be more than 0"),
            ));
        }
        self.entries.push((
            name,
            Entry {
                worker: Box::new(worker),
                looptime,
                forever,
                run: None,
                outside: State::Exited,
                starts: 0,
                admin_stopped: false,
                restart_when_gone: false,
            },
        ));
        Ok(())
    }

    pub(crate) fn configure(
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

    fn find(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|(n, _)| n == name)
    }

    fn entry(&mut self, name: &str) -> std::result::Result<&mut Entry, RpcError> {
        match self.find(name) {
            Some(i) => Ok(&mut self.entries[i].1),
            None => Err(RpcError::server_error(format!("no worker named '{name}'"))),
        }
    }

    /// The names, in installation order.
    pub fn names(&self) -> Vec<&str> {
        self.entries.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The number of installed workers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is installed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn info_of(name: &str, e: &Entry) -> WorkerInfo {
        let header = e.run.as_ref().map(|r| r.source.get_ref().header());
        let state = match header {
            Some(h) => State::from_number(h.state.load(Ordering::Acquire)).unwrap_or(State::Spinup),
            None => e.outside,
        };
        WorkerInfo {
            name: name.to_owned(),
            pid: e.run.as_ref().map(|r| r.pid.as_raw()),
            state,
            looptime: e.looptime,
            forever: e.forever,
            restarts: e.starts.saturating_sub(1),
            uptime: e.run.as_ref().map(|r| r.started.elapsed()),
            heartbeat: header.map(|h| h.heartbeat.load(Ordering::Relaxed)),
        }
    }

    /// Every worker, in installation order.
    pub fn list(&self) -> Vec<WorkerInfo> {
        self.entries
            .iter()
            .map(|(n, e)| Self::info_of(n, e))
            .collect()
    }

    /// One worker.
    ///
    /// # Errors
    ///
    /// `-32000 no worker named ...`.
    pub fn info(&self, name: &str) -> std::result::Result<WorkerInfo, RpcError> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(n, e)| Self::info_of(n, e))
            .ok_or_else(|| RpcError::server_error(format!("no worker named '{name}'")))
    }

    /// Starts every installed worker (at the daemon's start).
    pub(crate) fn start_all(&mut self) -> Result<()> {
        let names: Vec<String> = self.entries.iter().map(|(n, _)| n.clone()).collect();
        for name in names {
            self.start(&name)
                .map_err(|e| Error::Setup(format!("starting worker '{name}': {}", e.message)))?;
        }
        Ok(())
    }

    /// Starts a worker that is not running (also one that `FAILED` or was stopped): forks it.
    ///
    /// # Errors
    ///
    /// `-32000` if there is no such worker, it runs already, the daemon is stopping, or the
    /// fork fails.
    pub fn start(&mut self, name: &str) -> std::result::Result<(), RpcError> {
        if self.shutting_down {
            return Err(RpcError::server_error("the daemon is stopping"));
        }
        let handle = self
            .handle
            .clone()
            .ok_or_else(|| RpcError::server_error("workers start with the daemon"))?;
        let (level, parent) = (self.level, crate::process::pid());
        let me = self
            .find(name)
            .ok_or_else(|| RpcError::server_error(format!("no worker named '{name}'")))?;
        if self.entries[me].1.run.is_some() {
            return Err(RpcError::server_error(format!(
                "worker '{name}' is running"
            )));
        }
        let channel =
            Channel::new().map_err(|e| RpcError::server_error(format!("worker '{name}': {e}")))?;
        crate::process::ensure_single_threaded()
            .map_err(|e| RpcError::server_error(e.to_string()))?;
        // SAFETY: the daemon is single-threaded (checked above); the child only makes
        // async-signal-safe calls until its loop starts (see `child`), and never returns.
        match unsafe { fork() } {
            Err(e) => Err(RpcError::server_error(format!(
                "forking worker '{name}': {e}"
            ))),
            Ok(ForkResult::Child) => {
                // Unmap the other workers' channels, so this one cannot touch them.
                for (i, (_, entry)) in self.entries.iter_mut().enumerate() {
                    if let (true, Some(run)) = (i != me, entry.run.take()) {
                        run.source.leak_registration().forget_in_child();
                    }
                }
                let entry = &mut self.entries[me].1;
                let worker = std::mem::replace(&mut entry.worker, Box::new(Gone));
                child::become_worker(worker, channel, entry.looptime, parent, level)
            }
            Ok(ForkResult::Parent { child }) => {
                let source = handle
                    .register(channel, Interest::READ)
                    .map_err(|e| RpcError::server_error(format!("polling worker '{name}': {e}")))?;
                self.by_token.insert(source.token(), me);
                let entry = &mut self.entries[me].1;
                entry.run = Some(Run {
                    pid: child,
                    source,
                    started: Instant::now(),
                    stopping: None,
                    sigterm_sent: false,
                });
                entry.starts += 1;
                entry.admin_stopped = false;
                entry.restart_when_gone = false;
                info!(self.logger, "worker started"; "worker" => name, "pid" => child.as_raw());
                self.events.push(
                    WorkerEvent::new("started", name)
                        .with_payload(Some(json!({"pid": child.as_raw()}))),
                );
                Ok(())
            }
        }
    }

    /// Sends a command (with an optional payload) to a worker, where it becomes
    /// `daemon.worker.<command>` on the worker's bus.
    ///
    /// # Errors
    ///
    /// `-32000` if there is no such worker, it is not running, or its ring is full.
    pub fn send(
        &mut self,
        name: &str,
        command: &str,
        payload: Option<Value>,
    ) -> std::result::Result<(), RpcError> {
        let entry = self.entry(name)?;
        let run = entry
            .run
            .as_ref()
            .ok_or_else(|| RpcError::server_error(format!("worker '{name}' is not running")))?;
        let message = Message {
            command: command.to_owned(),
            payload,
        };
        run.source
            .get_ref()
            .send(&message)
            .map_err(|e| RpcError::server_error(format!("worker '{name}': {e}")))
    }

    /// The events to emit on the daemon's bus: `daemon.worker.started`, and the messages
    /// workers sent up.
    pub(crate) fn take_events(&mut self) -> Vec<WorkerEvent> {
        std::mem::take(&mut self.events)
    }

    /// Sends a signal to a worker's process.
    ///
    /// # Errors
    ///
    /// `-32000` if there is no such worker or it is not running.
    pub fn kill(
        &mut self,
        name: &str,
        signal: crate::reactor::Signal,
    ) -> std::result::Result<(), RpcError> {
        let signal =
            Signal::try_from(signal.number()).map_err(|e| RpcError::server_error(e.to_string()))?;
        let entry = self.entry(name)?;
        let run = entry
            .run
            .as_ref()
            .ok_or_else(|| RpcError::server_error(format!("worker '{name}' is not running")))?;
        let _ = kill(run.pid, signal);
        Ok(())
    }

    /// Marks a worker `FAILED` (the restart policy gave up on it).
    pub fn fail(&mut self, name: &str) {
        if let Some(i) = self.find(name) {
            self.entries[i].1.outside = State::Failed;
        }
    }

    /// Whether an administrator stopped the worker (no restart policy applies).
    pub fn is_admin_stopped(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|i| self.entries[i].1.admin_stopped)
    }

    /// Whether the daemon is stopping its workers.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Reaps every child that exited (a `waitpid(-1, WNOHANG)` loop: SIGCHLD coalesces) and
    /// returns the workers among them. A worker asked to restart is started again here.
    pub fn reap(&mut self) -> Vec<Exit> {
        let mut exits = Vec::new();
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => status,
            };
            let (pid, code, signal) = match status {
                WaitStatus::Exited(pid, code) => (pid, Some(code), None),
                WaitStatus::Signaled(pid, sig, _) => (pid, None, Some(sig as i32)),
                _ => continue,
            };
            if let Some(exit) = self.gone(pid, code, signal) {
                exits.push(exit);
            }
        }
        exits
    }

    fn gone(&mut self, pid: Pid, code: Option<i32>, signal: Option<i32>) -> Option<Exit> {
        let i = self
            .entries
            .iter()
            .position(|(_, e)| e.run.as_ref().is_some_and(|r| r.pid == pid))?;
        // What the worker sent just before it exited (its last log lines, an ack) is still
        // in the ring: read it before the channel goes.
        let token = self.entries[i]
            .1
            .run
            .as_ref()
            .expect("matched")
            .source
            .token();
        self.ready(token);
        self.by_token.remove(&token);
        let shutting_down = self.shutting_down;
        let (name, entry) = &mut self.entries[i];
        let run = entry.run.take().expect("matched above");
        let lost = run
            .source
            .get_ref()
            .header()
            .lost_logs
            .load(Ordering::Relaxed);
        if entry.outside != State::Failed {
            entry.outside = State::Exited;
        }
        let exit = Exit {
            name: name.clone(),
            pid: pid.as_raw(),
            code,
            signal,
            forever: entry.forever,
            requested: run.stopping.is_some() || entry.admin_stopped || shutting_down,
        };
        let restart = entry.restart_when_gone && !shutting_down;
        let name = name.clone();
        if exit.crashed() {
            warn!(self.logger, "worker crashed"; "worker" => &name, "pid" => exit.pid, "code" => code, "signal" => signal);
        } else {
            info!(self.logger, "worker exited"; "worker" => &name, "pid" => exit.pid, "code" => code, "signal" => signal);
        }
        if lost > 0 {
            warn!(self.logger, "the worker's ring was full: log lines lost"; "worker" => &name, "lost" => lost);
        }
        let pending: Vec<Ticket> = self
            .acks
            .iter()
            .filter(|a| a.waiting.contains(&name))
            .map(|a| a.ticket)
            .collect();
        for ticket in pending {
            self.fail_ack(
                ticket,
                RpcError::server_error(format!("worker '{name}' exited")),
            );
        }
        drop(run);
        if restart {
            if let Err(e) = self.start(&name) {
                error!(self.logger, "cannot restart the worker"; "worker" => &name, "error" => %e);
            }
        }
        Some(exit)
    }

    /// Handles readiness of a worker's channel: acks resolve tickets, log lines are logged,
    /// other messages become `daemon.worker.<command>` events. A worker whose channel is
    /// corrupt is killed (it is then handled as crashed). Returns false for a token that is
    /// not a worker's.
    pub(crate) fn ready(&mut self, token: Token) -> bool {
        let Some(&i) = self.by_token.get(&token) else {
            return false;
        };
        let mut buffer = std::mem::take(&mut self.buffer);
        let name = self.entries[i].0.clone();
        for _ in 0..MESSAGES_PER_TURN {
            let run = self.entries[i].1.run.as_ref().expect("found above");
            let channel = run.source.get_ref();
            channel.clear_wakeup();
            let message = if channel.header_ok() {
                channel.receive(&mut buffer).map_err(|e| e.to_string())
            } else {
                Err("the header's magic or version was overwritten".to_owned())
            };
            match message {
                Ok(Some(m)) => self.message(&name, m),
                Ok(None) => break,
                Err(why) => {
                    error!(self.logger, "worker killed: its channel is corrupt"; "worker" => &name, "error" => why);
                    let _ = kill(run.pid, Signal::SIGKILL);
                    break;
                }
            }
        }
        self.buffer = buffer;
        true
    }

    fn message(&mut self, name: &str, message: Message) {
        match message.command.as_str() {
            "ack" => {
                let seq = message
                    .payload
                    .as_ref()
                    .and_then(|p| p.get("seq"))
                    .and_then(Value::as_u64);
                let state = message
                    .payload
                    .as_ref()
                    .and_then(|p| p.get("state"))
                    .cloned();
                if let Some(seq) = seq {
                    self.acknowledged(Ticket(seq), name, state.unwrap_or(Value::Null));
                }
            }
            "log" => self.log(name, message.payload),
            _ => self
                .events
                .push(WorkerEvent::new(&message.command, name).with_payload(message.payload)),
        }
    }

    fn log(&self, name: &str, payload: Option<Value>) {
        let (level, text) = match &payload {
            Some(Value::Array(parts)) if parts.len() == 2 => (
                parts[0]
                    .as_u64()
                    .and_then(|n| Level::from_usize(n as usize))
                    .unwrap_or(Level::Info),
                parts[1].as_str().unwrap_or_default(),
            ),
            _ => (Level::Warning, "(a malformed log line)"),
        };
        let log = &self.logger;
        match level {
            Level::Critical => crit!(log, "{}", text; "worker" => name),
            Level::Error => error!(log, "{}", text; "worker" => name),
            Level::Warning => warn!(log, "{}", text; "worker" => name),
            Level::Info => info!(log, "{}", text; "worker" => name),
            Level::Debug => debug!(log, "{}", text; "worker" => name),
            Level::Trace => trace!(log, "{}", text; "worker" => name),
        }
    }

    /// How long the daemon may wait before an acknowledgement or a stop escalation is due.
    pub(crate) fn next_timeout(&mut self) -> Option<Duration> {
        self.deadlines
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Times out acknowledgements and escalates stops that are due.
    pub(crate) fn expire(&mut self, now: Instant) {
        let mut due = Vec::new();
        self.deadlines.expire(now, &mut due);
        for (_, deadline) in due {
            match deadline {
                Deadline::Ack(ticket) => {
                    if let Some(ack) = self.acks.iter().find(|a| a.ticket == ticket) {
                        let message = format!(
                            "worker {} did not acknowledge {} within {:?}",
                            ack.waiting.join(", "),
                            ack.command,
                            self.ack_timeout
                        );
                        self.fail_ack(ticket, RpcError::server_error(message));
                    }
                }
                Deadline::Escalate(name) => self.escalate(&name, now),
            }
        }
    }

    /// A summary for `daemon.status`: how many workers are in each state.
    pub fn summary(&self) -> Value {
        let mut counts: HashMap<&str, u32> = HashMap::new();
        for info in self.list() {
            *counts.entry(info.state.name()).or_default() += 1;
        }
        json!({"installed": self.entries.len(), "states": counts})
    }
}

/// What stays in a forked child's copy of the manager where the worker was taken out.
struct Gone;

impl Worker for Gone {
    fn name(&self) -> &str {
        ""
    }

    fn tick(&mut self, _: &mut super::WorkerContext<'_>) {}
}
