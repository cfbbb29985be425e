//! Reaping: a worker's process ended; what the restart policy makes of it.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use slog::{error, info, warn};

use super::spawn::Exited;
use super::{Deadline, Workers, worker_error};
use crate::error::WorkerError;
use crate::worker::{Exit, GiveUp, Restart, State, WorkerExited, WorkerFailed, WorkerRestarting};

/// Below this many running workers, every reap walks the daemon's children (it costs
/// microseconds); from it on, walks are paced by [`Walks`].
pub(super) const REAP_BY_WALK_BELOW: usize = 256;

/// How long a large daemon's walk waits after the last walk and after the last worker
/// reaped by its pid.
pub(super) const WALK_EVERY: Duration = Duration::from_millis(25);

/// How long, at most, a walk a large daemon wants waits (while workers go on being reaped
/// by their pids).
pub(super) const WALK_PATIENCE: Duration = Duration::from_millis(500);

/// How many ended children a large daemon's walk reaps one by one before it asks every
/// worker instead (each is named by a walk from the first child on).
const WALK_STEPS: usize = 16;

/// The pace of a large daemon's walks over its children.
#[derive(Debug, Default)]
pub(super) struct Walks {
    /// The last walk.
    done_at: Option<Instant>,
    /// The last worker reaped by its pid (see `reap_ending`).
    progress_at: Option<Instant>,
    /// Since when a walk is wanted (a reap that did not walk).
    wanted_since: Option<Instant>,
    /// Whether `Deadline::Walk` is armed.
    armed: bool,
}

impl Walks {
    /// When the wanted walk is due: [`WALK_EVERY`] after the last walk and after the last
    /// reap by pid, at most [`WALK_PATIENCE`] after it was wanted.
    fn due(&self, wanted: Instant) -> Instant {
        let quiet = self
            .done_at
            .max(self.progress_at)
            .map_or(wanted, |t| t + WALK_EVERY);
        quiet.min(wanted + WALK_PATIENCE)
    }
}

/// What the policy does with a process that ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Nothing: it stays `EXITED` (or `FAILED`).
    Rest,
    /// Start it again now (an administrator's restart).
    StartNow,
    /// The policy restarts it after this delay.
    Restart(Duration),
    /// The policy gives up.
    GiveUp,
}

impl Workers {
    /// Reaps every worker whose process ended (only the daemon's own workers: a child the
    /// user's code spawned is left to its owner) and applies the restart policy. Run on
    /// SIGCHLD; the events (`daemon.worker.exited`...) follow on the bus.
    ///
    /// A worker's socket closes as its process ends, a moment before it can be reaped: such
    /// a worker is asked by its pid, which costs the kernel nothing more. Any other child
    /// is found by a walk over the daemon's children (see `walk`), which the kernel does
    /// from the first child on, for each child it names. With thousands of workers ending
    /// together, walking at each reap made a stop quadratic (and each walk holds the
    /// kernel's task list, which every exiting process waits for); so a large daemon walks
    /// once its workers stop being reaped by their pids for a moment (`WALK_EVERY`), or
    /// after `WALK_PATIENCE` at the latest, and arms the walk it puts off.
    pub fn reap(&mut self) {
        let reaped = self.reap_ending();
        if self.by_pid.len() < REAP_BY_WALK_BELOW {
            return self.walk(usize::MAX);
        }
        let now = self.procs.now();
        if reaped {
            self.walks.progress_at = Some(now);
        }
        let wanted = *self.walks.wanted_since.get_or_insert(now);
        let due = self.walks.due(wanted);
        if due > now {
            if !self.walks.armed {
                self.walks.armed = true;
                self.arm(due - now, Deadline::Walk);
            }
            return self.reap_groups();
        }
        self.walks.done_at = Some(now);
        self.walks.wanted_since = None;
        self.walk(WALK_STEPS);
    }

    /// The armed walk is due (or was put off again: it is armed anew).
    pub(super) fn walk_due(&mut self) {
        self.walks.armed = false;
        self.reap();
    }

    /// Reaps the ending workers (their socket closed) that can be; true if it reaped one.
    fn reap_ending(&mut self) -> bool {
        let mut reaped = false;
        let mut k = 0;
        while let Some(&(i, generation)) = self.ending.get(k) {
            let pid = match &self.entries[i].run {
                Some(run) if run.generation == generation => run.pid,
                // Reaped already (by a walk), or gone by now.
                _ => {
                    self.ending.swap_remove(k);
                    continue;
                }
            };
            match self.procs.try_wait(pid) {
                Some((code, signal)) => {
                    self.ending.swap_remove(k);
                    self.gone(i, code, signal);
                    reaped = true;
                }
                // Not yet (or it shut its socket and runs on: killed after a grace).
                None => k += 1,
            }
        }
        reaped
    }

    /// Reaps what a walk over the daemon's children finds ended, at most `steps` of them one
    /// by one (then every worker is asked).
    fn walk(&mut self, steps: usize) {
        // The workers that ended, one by one as the kernel names them: a reap costs what
        // ended, not the number of workers. A child that is not a worker (a gone worker's
        // orphan, a child of the user's code) stops this: then every worker is asked. So
        // does a reap that goes on past one exit per worker (workers that restart and end
        // again at once: this one reap never spins), or past `steps` (each step costs the
        // kernel a walk up to the child it names).
        let mut budget = steps.min(self.entries.len() + 1);
        loop {
            if budget == 0 {
                return self.reap_each();
            }
            budget -= 1;
            let pid = match self.procs.peek_exited() {
                Exited::None => break,
                Exited::Child(pid) => pid,
                Exited::Unknown => return self.reap_each(),
            };
            let Some(&i) = self.by_pid.get(&pid) else {
                return self.reap_each();
            };
            match self.procs.try_wait(pid) {
                Some((code, signal)) => self.gone(i, code, signal),
                None => return self.reap_each(),
            }
        }
        self.reap_groups();
    }

    /// Asks every running worker whether it ended, and reaps the orphans of gone ones.
    fn reap_each(&mut self) {
        for i in 0..self.entries.len() {
            let Some(pid) = self.entries[i].run.as_ref().map(|r| r.pid) else {
                continue;
            };
            if let Some((code, signal)) = self.procs.try_wait(pid) {
                self.gone(i, code, signal);
            }
        }
        self.reap_groups();
    }

    /// Reaps the orphans of gone workers, forgetting each group once it is empty.
    fn reap_groups(&mut self) {
        let procs = &mut self.procs;
        self.groups.retain(|&pgid| !procs.reap_group(pgid));
    }

    fn gone(&mut self, i: usize, code: Option<i32>, signal: Option<i32>) {
        // What the worker sent just before it exited (its last log lines, an ack) is still
        // in the ring: read it all before the channel goes.
        if let Some(token) = self.entries[i].run.as_ref().map(|r| r.source.token()) {
            while self.drain(i, usize::MAX, false) == super::inbox::Drained::Left {}
            self.by_token.remove(&token);
            self.finish_output(i);
        }
        let now = self.procs.now();
        let shutting_down = self.shutting_down;
        let entry = &mut self.entries[i];
        let Some(mut run) = entry.run.take() else {
            return;
        };
        self.by_pid.remove(&run.pid);
        if !run.unshared {
            self.copied_regions -= 1;
        }
        // Its replies were read above: the calls left are the ones it never answered.
        let unanswered = std::mem::take(&mut run.calls);
        let lost = run.channel().header().lost_logs.load(Ordering::Relaxed);
        let suppressed = run.logs.suppressed;
        let exit = Exit {
            name: entry.name.as_str().to_owned(),
            pid: run.pid.as_raw(),
            code,
            signal,
            restart: entry.spec.restart,
            requested: run.stopping || entry.admin_stopped || shutting_down,
            ran_for: now.saturating_duration_since(run.started),
        };
        let dropped = run.dropped + run.channel().header().dropped.load(Ordering::Relaxed);
        drop(run);
        entry.last_exit = Some(exit.clone());
        if entry.outside != State::Failed {
            entry.outside = State::Exited;
        }
        let name = entry.name.as_str().to_owned();
        if exit.crashed() {
            warn!(self.logger, "worker crashed"; "worker" => &name, "pid" => exit.pid, "code" => code, "signal" => signal);
        } else {
            info!(self.logger, "worker exited"; "worker" => &name, "pid" => exit.pid, "code" => code, "signal" => signal);
        }
        if lost > 0 {
            warn!(self.logger, "the worker's ring was full: log lines lost"; "worker" => &name, "lost" => lost);
        }
        if suppressed > 0 {
            warn!(self.logger, "worker logged past its rate limit: log lines suppressed"; "worker" => &name, "suppressed" => suppressed);
        }
        if dropped > 0 {
            warn!(self.logger, "frames that could not be decoded were dropped"; "worker" => &name, "dropped" => dropped);
        }
        // Whatever the worker started goes with it (its process group; the worker leads
        // it), and is reaped here as it ends.
        // (Most often nothing is left: then there is nothing to reap either.)
        let pgid = nix::unistd::Pid::from_raw(exit.pid);
        let left = self
            .procs
            .signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
        if left && !self.groups.contains(&pgid) {
            self.groups.push(pgid);
        }
        self.reap_groups();
        self.fail_acks_of(&name);
        self.fail_calls(&name, unanswered);
        let next = self.decide(i, &exit);
        self.emit(WorkerExited { exit });
        match next {
            Next::Rest => {}
            Next::StartNow => {
                if let Err(e) = self.spawn(i) {
                    error!(self.logger, "cannot restart the worker"; "worker" => &name, "error" => %e);
                }
            }
            Next::Restart(delay) => {
                self.emit(WorkerRestarting {
                    worker: name.clone(),
                    delay,
                });
                if delay.is_zero() {
                    match self.spawn(i) {
                        Ok(()) => info!(self.logger, "worker restarted"; "worker" => &name),
                        Err(e) => {
                            error!(self.logger, "cannot restart the worker"; "worker" => &name, "error" => %e)
                        }
                    }
                } else {
                    warn!(self.logger, "worker restarts after a backoff"; "worker" => &name, "delay_ms" => delay.as_millis() as u64);
                    let entry = &mut self.entries[i];
                    entry.restart_pending = true;
                    let epoch = entry.epoch;
                    self.arm(delay, Deadline::Restart { worker: i, epoch });
                }
            }
            Next::GiveUp => {
                let entry = &mut self.entries[i];
                entry.outside = State::Failed;
                let stops_daemon = entry.spec.give_up == GiveUp::StopDaemon;
                let restarts = entry.restarts.len();
                error!(self.logger, "worker failed: too many restarts";
                    "worker" => &name, "restarts" => restarts,
                    "window_s" => entry.spec.window.as_secs_f64());
                self.emit(WorkerFailed {
                    worker: name.clone(),
                    restarts,
                    stops_daemon,
                });
                if stops_daemon {
                    error!(self.logger, "the daemon cannot go on without the worker: stopping"; "worker" => &name);
                    self.out.stop.get_or_insert(1);
                }
            }
        }
    }

    /// The restart policy.
    fn decide(&mut self, i: usize, exit: &Exit) -> Next {
        let now = self.procs.now();
        let jitter = self.procs.random();
        let shutting_down = self.shutting_down;
        let entry = &mut self.entries[i];
        if shutting_down {
            return Next::Rest;
        }
        if exit.requested {
            return if entry.restart_when_gone && !entry.admin_stopped {
                Next::StartNow
            } else {
                Next::Rest
            };
        }
        let restart = match entry.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => !exit.clean(),
            Restart::Temporary => false,
        };
        if !restart {
            return Next::Rest;
        }
        let spec = entry.spec.clone();
        while entry
            .restarts
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > spec.window)
        {
            entry.restarts.pop_front();
        }
        if entry.restarts.len() >= spec.max_restarts {
            return Next::GiveUp;
        }
        entry.restarts.push_back(now);
        if exit.ran_for >= spec.stable_after {
            entry.quick = 0;
        }
        entry.quick = entry.quick.saturating_add(1);
        let delay = spec.backoff_for(entry.quick);
        // Up to a quarter more, so that workers that crash together do not restart together.
        let spread = delay.as_nanos() as u64 / 4;
        let delay = match spread {
            0 => delay,
            s => delay + Duration::from_nanos(jitter % s),
        };
        Next::Restart(delay)
    }

    /// The backoff of a restart is over: start it, unless something superseded it (an
    /// administrator's stop or start, the shutdown).
    pub(super) fn restart_due(&mut self, i: usize, epoch: u64) {
        let Some(entry) = self.entries.get_mut(i) else {
            return;
        };
        if entry.epoch != epoch || !entry.restart_pending || entry.run.is_some() {
            return;
        }
        entry.restart_pending = false;
        if self.shutting_down || entry.admin_stopped {
            return;
        }
        let name = entry.name.as_str().to_owned();
        match self.spawn(i) {
            Ok(()) => info!(self.logger, "worker restarted"; "worker" => &name),
            Err(e) => {
                error!(self.logger, "cannot restart the worker"; "worker" => &name, "error" => %e)
            }
        }
    }

    /// Cancels a pending backoff restart; true if there was one.
    pub(super) fn cancel_restart(&mut self, i: usize) -> bool {
        let entry = &mut self.entries[i];
        let pending = entry.restart_pending;
        entry.epoch += 1;
        entry.restart_pending = false;
        pending
    }

    /// Whether a worker waits for its backoff restart.
    pub fn is_restart_pending(&self, name: &str) -> bool {
        self.find(name)
            .is_some_and(|i| self.entries[i].restart_pending)
    }

    pub(super) fn not_running(&self, i: usize) -> crate::Error {
        worker_error(&self.entries[i].name, WorkerError::NotRunning)
    }
}
