//! Starting workers: the process control the supervisor needs (fork, kill, wait, the clock)
//! behind one trait, the real one over `fork()`, and `start`.

use std::io;
use std::os::fd::RawFd;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, setpgid};
use slog::{info, warn};

use super::arena::Placed;
use super::line::Line;
use super::server::{Failed, ForkServer};
use super::template::Template;
use super::{Run, Workers, worker_error};
use crate::error::{Result, WorkerError};
use crate::reactor::Interest;
use crate::worker::job::{Job, Spawn};
use crate::worker::{Channel, WorkerStarted, child};

/// Process control: fork, signal, wait, and the clock. The daemon uses [`Fork`]; the
/// supervisor's unit tests a fake.
pub(crate) trait Processes {
    /// Starts a worker process of entry `entry` running `template` with `job`, its fds 1
    /// and 2 being `stdio`. Forked by the daemon, the child runs `in_child` first (to put
    /// its output in place and drop what belongs to the daemon), then the worker, and
    /// exits; forked by a fork server, it does the same from the server's copies.
    fn spawn(
        &mut self,
        entry: usize,
        template: &mut dyn Template,
        job: Job,
        stdio: [RawFd; 2],
        in_child: &mut dyn FnMut(),
    ) -> io::Result<Spawned>;
    /// Pulls the stop line (see `line`): every worker that holds it stops. True if this call
    /// pulled it (false without a line, or once it was pulled): then the workers
    /// [`Spawned::on_line`] need no `Stop` frame.
    fn pull_line(&mut self) -> bool {
        false
    }
    /// Starts a fork server holding `templates` (entry `i`'s is `templates[i]`), where
    /// this process control has one: the later spawns of these entries fork there. The
    /// server keeps `unneeded` (the daemon's own tables, as address and length, which no
    /// worker reads) out of the workers it forks, and of `placed` (the mappings the
    /// templates are in) each worker gets the pages of its own template only.
    fn start_server(
        &mut self,
        _templates: &mut [&mut dyn Template],
        _unneeded: &[(usize, usize)],
        _placed: &[(usize, usize)],
    ) -> io::Result<()> {
        Ok(())
    }
    /// Why the fork server was given up since the last call, if it was (the daemon forks
    /// by itself from then on).
    fn server_lost(&mut self) -> Option<String> {
        None
    }
    /// Sends `signal` to `pid` (a process this supervisor started).
    fn signal(&mut self, pid: Pid, signal: Signal);
    /// Sends `signal` to the process group `pgid`: a worker and whatever it started (every
    /// worker leads a group of its own). False when the group has no process left (not
    /// even a zombie).
    fn signal_group(&mut self, pgid: Pid, signal: Signal) -> bool;
    /// Reaps `pid` if it ended: its exit code or the signal that killed it.
    fn try_wait(&mut self, pid: Pid) -> Option<(Option<i32>, Option<i32>)>;
    /// Which child ended and waits to be reaped, without reaping it, so that the
    /// supervisor reaps the workers that ended without asking each one of them.
    fn peek_exited(&mut self) -> Exited {
        Exited::Unknown
    }
    /// Reaps what ended of the process group `pgid` (a gone worker's orphans, which the
    /// daemon adopted as a subreaper), never any other child; true once no process is left
    /// in the group.
    fn reap_group(&mut self, pgid: Pid) -> bool;
    /// Makes the daemon the reaper of its workers' orphans (`PR_SET_CHILD_SUBREAPER`), so a
    /// process a worker started is reaped here, not by init, once the worker is gone.
    fn adopt_orphans(&mut self);
    /// The time now.
    fn now(&self) -> Instant;
    /// A random number, for jitter.
    fn random(&mut self) -> u64;
}

/// A worker process just started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spawned {
    pub(crate) pid: Pid,
    /// It holds the stop line: pulling it stops this worker (see `line`).
    pub(crate) on_line: bool,
}

/// What [`Processes::peek_exited`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exited {
    /// No child waits to be reaped.
    None,
    /// This child ended (the first of those that did).
    Child(Pid),
    /// It cannot tell: every process has to be asked.
    Unknown,
}

/// The real process control: forks through the fork server where it can, from the daemon
/// otherwise.
#[derive(Default)]
pub(crate) struct Fork {
    server: Option<ForkServer>,
    lost: Option<String>,
    /// The stop line, made before the first worker (or the fork server) is forked; none
    /// where the pipe could not be made (each worker is then sent its `Stop`).
    line: Option<Line>,
}

impl Fork {
    /// The stop line's read end for a worker forked now (the line is made if it is not
    /// yet), or none: no line, or it was pulled.
    fn line(&mut self) -> Option<RawFd> {
        if self.line.is_none() {
            self.line = Line::new().ok();
        }
        self.line
            .as_ref()
            .filter(|line| !line.is_pulled())
            .map(Line::reader)
    }

    /// Stops using the fork server (it is killed and reaped), for `why`.
    fn lose_server(&mut self, why: String) {
        self.server = None;
        self.lost = Some(why);
    }
}

impl Processes for Fork {
    fn spawn(
        &mut self,
        entry: usize,
        template: &mut dyn Template,
        job: Job,
        stdio: [RawFd; 2],
        in_child: &mut dyn FnMut(),
    ) -> io::Result<Spawned> {
        if let Some(server) = self.server.as_mut().filter(|s| s.has(entry)) {
            match server.spawn(entry, &job, stdio) {
                Ok(pid) => {
                    // The worker is this process's child: its group is set from here too
                    // (see the fork below), so it holds before any signal to the group.
                    let _ = setpgid(pid, pid);
                    return Ok(Spawned {
                        pid,
                        on_line: server.on_line(),
                    });
                }
                Err(Failed::Fork(e)) => return Err(e),
                Err(Failed::Server(e)) => self.lose_server(e.to_string()),
            }
        }
        crate::process::ensure_single_threaded().map_err(io::Error::other)?;
        // Read before the fork, for the child's title (see `arg_area`).
        let _ = crate::worker::process::arg_area();
        // The child keeps the line's read end (and closes the write end with the daemon's
        // other descriptors, see `child::serve`).
        let mut job = job;
        job.line = self.line();
        let on_line = job.line.is_some();
        // Every signal blocked across the fork; the mask comes back when `blocked` drops (in
        // the parent when this returns). A signal reaching the child before it reset the
        // daemon's wiring waits, then takes the disposition from before daimon.
        let blocked = crate::reactor::BlockedSignals::new()?;
        // SAFETY: the daemon is single-threaded (checked above), so the child's copy of the
        // address space has no lock held by a thread that does not exist there: it may run
        // ordinary Rust (allocation included). The child never returns into the daemon's
        // code: whatever happens, it ends in `_exit`.
        match unsafe { fork() }? {
            ForkResult::Child => {
                // Its own process group, at once (the parent sets it too, so whichever runs
                // first, it holds before the parent signals the group): the worker and what
                // it starts are signalled and reaped together, and a terminal's Ctrl-C
                // reaches the daemon only, which stops its workers. setpgid is
                // async-signal-safe.
                let _ = setpgid(Pid::from_raw(0), Pid::from_raw(0));
                crate::reactor::reset_after_fork();
                // SAFETY: this child has one thread (the daemon was single-threaded at the
                // fork, checked above).
                unsafe { crate::daemon::notify::forget_in_worker() };
                // The daemon's mask back (pthread_sigmask, async-signal-safe): what arrived
                // since the fork is delivered now, with the dispositions just put back.
                drop(blocked);
                let code = catch_unwind(AssertUnwindSafe(|| {
                    in_child();
                    template.run(job)
                }))
                .unwrap_or(child::exit::PANIC);
                // What the worker printed without a newline is in std's buffer: `_exit`
                // would lose it.
                let _ = std::io::Write::flush(&mut std::io::stdout());
                child::exit_now(code)
            }
            ForkResult::Parent { child } => {
                // The same as the child does; fails harmlessly if the child did it already
                // and went on (EACCES after an exec, ESRCH once it is a zombie).
                let _ = setpgid(child, child);
                Ok(Spawned {
                    pid: child,
                    on_line,
                })
            }
        }
    }

    fn start_server(
        &mut self,
        templates: &mut [&mut dyn Template],
        unneeded: &[(usize, usize)],
        placed: &[(usize, usize)],
    ) -> io::Result<()> {
        // Its workers become the daemon's children only by the daemon being their
        // subreaper (see `server`).
        if !nix::sys::prctl::get_child_subreaper().unwrap_or(false) {
            return Err(io::Error::other("the daemon is not a subreaper"));
        }
        if self.server.is_none() {
            // The line first: the server holds its read end for every worker it forks.
            let line = self.line();
            self.server = Some(ForkServer::start(templates, unneeded, placed, line)?);
        }
        Ok(())
    }

    fn server_lost(&mut self) -> Option<String> {
        self.lost.take()
    }

    fn pull_line(&mut self) -> bool {
        self.line.as_mut().is_some_and(Line::pull)
    }

    fn signal(&mut self, pid: Pid, signal: Signal) {
        let _ = kill(pid, signal);
    }

    fn signal_group(&mut self, pgid: Pid, signal: Signal) -> bool {
        // The group only, never the pid alone: once the worker is reaped, its pid may be
        // another process's, but no new process takes a pid that is still a group's id.
        killpg(pgid, signal) != Err(Errno::ESRCH)
    }

    fn reap_group(&mut self, pgid: Pid) -> bool {
        // No process at all in the group, not even a zombie (most often: the worker started
        // nothing): done, without the wait below, which the kernel answers by going through
        // every child of the daemon.
        if killpg(pgid, None::<Signal>) == Err(Errno::ESRCH) {
            return true;
        }
        // Only children in this group: a child the user's code spawned is left to its owner.
        loop {
            match waitpid(Pid::from_raw(-pgid.as_raw()), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return false,
                Ok(_) => {}
                Err(Errno::EINTR) => {}
                // None of ours left in it: done once no process at all is (a member that is
                // not our child yet, its parent still exiting, becomes ours soon).
                Err(_) => return killpg(pgid, None::<Signal>) == Err(Errno::ESRCH),
            }
        }
    }

    fn adopt_orphans(&mut self) {
        let _ = nix::sys::prctl::set_child_subreaper(true);
    }

    fn try_wait(&mut self, pid: Pid) -> Option<(Option<i32>, Option<i32>)> {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Some((Some(code), None)),
            Ok(WaitStatus::Signaled(_, sig, _)) => Some((None, Some(sig as i32))),
            // Not ours any more (someone else reaped it): report it gone.
            Err(nix::errno::Errno::ECHILD) => Some((None, None)),
            _ => None,
        }
    }

    fn peek_exited(&mut self) -> Exited {
        use nix::sys::wait::{Id, waitid};
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            return match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => Exited::None,
                Ok(status) => match status.pid() {
                    // The fork server ended (it is not a worker): reaped with its handle.
                    Some(pid) if self.server.as_ref().is_some_and(|s| s.pid() == pid) => {
                        self.lose_server("it ended".into());
                        continue;
                    }
                    Some(pid) => Exited::Child(pid),
                    None => Exited::Unknown,
                },
                Err(Errno::EINTR) => continue,
                Err(_) => Exited::Unknown,
            };
        }
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn random(&mut self) -> u64 {
        // Enough for jitter: the clock's low bits mixed (splitmix64).
        let mut z = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Workers {
    /// Starts every installed worker (at the daemon's start).
    pub(crate) fn start_all(&mut self) -> Result<()> {
        if !self.entries.is_empty() {
            self.procs.adopt_orphans();
            // The fork server, while the daemon is small (see `server`); without it, the
            // daemon forks its workers itself. The table of entries (a KiB each) is the
            // daemon's alone, as are its index of names (the server and its workers look none
            // up) and the names, in the arena: the workers go without them. So do they
            // without the server's own list of the templates: a worker is handed its own.
            let table = self.entries.mapping();
            let index = self.by_name.table();
            let mut templates = super::mapped::MapVec::new();
            let listed = self
                .entries
                .iter_mut()
                .try_for_each(|e| templates.try_push(e.template.get()));
            let list = templates.mapping();
            let placed = self.arena.ranges();
            let started = listed.and_then(|()| {
                self.procs
                    .start_server(&mut templates, &[table, index, list], placed)
            });
            if let Err(e) = started {
                warn!(self.logger, "no fork server: the daemon forks its workers"; "error" => %e);
            }
        }
        for i in 0..self.entries.len() {
            self.spawn(i)?;
        }
        Ok(())
    }

    /// Starts a worker that is not running (also one that is `FAILED` or was stopped). Its
    /// restart count starts again from zero. A worker still stopping starts again once gone.
    ///
    /// # Errors
    ///
    /// [`Error::Worker`](crate::Error::Worker) if there is no such worker, it runs already,
    /// the daemon is stopping, or the fork fails.
    pub fn start(&mut self, name: &str) -> Result<()> {
        let i = self.index(name)?;
        if self.shutting_down {
            return Err(worker_error(name, WorkerError::ShuttingDown));
        }
        let entry = &mut self.entries[i];
        entry.admin_stopped = false;
        entry.restarts.clear();
        entry.quick = 0;
        match &entry.run {
            Some(run) if run.stopping => {
                entry.restart_when_gone = true;
                Ok(())
            }
            Some(_) => Err(worker_error(name, WorkerError::Running)),
            None => self.spawn(i),
        }
    }

    /// Forks entry `i`, which does not run.
    pub(super) fn spawn(&mut self, i: usize) -> Result<()> {
        let name = self.entries[i].name.as_str().to_owned();
        let fail = |e: io::Error| worker_error(&name, WorkerError::Spawn(e.to_string()));
        let handle = self
            .handle
            .clone()
            .ok_or_else(|| worker_error(&name, WorkerError::NotStarted))?;
        let mut channel = Channel::new().map_err(fail)?;
        let pipes = super::output::Pipes::new(self.entries[i].spec.output).map_err(fail)?;
        let entry = &mut self.entries[i];
        // A pending backoff restart is superseded by this start.
        entry.epoch += 1;
        entry.restart_pending = false;
        let job = Job {
            name: name.clone(),
            channel: channel.worker_end(),
            looptime: entry.spec.looptime,
            parent: crate::process::pid(),
            level: self.level,
            spawn: Spawn {
                restarts: entry.starts,
                previous: entry.last_exit.clone(),
            },
            process: entry.spec.process.clone(),
            line: None,
        };
        let mut template = std::mem::replace(&mut entry.template, Placed::gone());
        let entries = &mut self.entries;
        let copied = self.copied_regions;
        let mut in_child = || {
            // Its stdout and stderr are its pipes to the daemon (dup2 and close only).
            pipes.install_in_child();
            // The other workers' channels and pipes are not this worker's business. Their
            // descriptors are daimon's: the worker closes them with the daemon's others.
            // Their regions were kept out of this fork (see `unshared`), but for those
            // that could not be: unmap these, leaving the daemon's registrations in the
            // shared poller alone. Nothing else of the daemon's is touched (each write
            // would copy a page of the daemon's memory into the child).
            if copied == 0 {
                return;
            }
            for (j, e) in entries.iter_mut().enumerate() {
                if j == i || e.run.as_ref().is_none_or(|r| r.unshared) {
                    continue;
                }
                if let Some(run) = e.run.take() {
                    std::mem::forget(run.output);
                    run.source.leak_registration().forget_in_child();
                }
            }
        };
        let stdio = pipes.stdio();
        let spawned = self
            .procs
            .spawn(i, template.get(), job, stdio, &mut in_child);
        self.entries[i].template = template;
        if let Some(why) = self.procs.server_lost() {
            warn!(self.logger, "the fork server is given up: the daemon forks its workers"; "error" => why);
        }
        let Spawned { pid, on_line } = spawned.map_err(fail)?;
        // The worker holds its socket now; the daemon needs only its own.
        channel.release_peer();
        let registered = handle
            .register(channel, Interest::READ)
            .and_then(|source| Ok((source, pipes.register(&handle)?)));
        let (source, output) = match registered {
            Ok(done) => done,
            Err(e) => {
                self.procs.signal(pid, Signal::SIGKILL);
                return Err(fail(e));
            }
        };
        // From now on, forks leave this worker's region out.
        let unshared = super::unshared::keep_out_of_forks(source.get_ref());
        if !unshared {
            self.copied_regions += 1;
        }
        self.by_pid.insert(pid, i);
        self.by_token.insert(source.token(), i);
        for (which, pipe) in output.iter().enumerate() {
            if let Some(pipe) = pipe {
                self.by_pipe.insert(pipe.token(), (i, which));
            }
        }
        let now = self.procs.now();
        let generation = self.next_generation;
        self.next_generation += 1;
        let entry = &mut self.entries[i];
        entry.run = Some(Run {
            pid,
            source,
            started: now,
            generation,
            stopping: false,
            sigterm_sent: false,
            dropped: 0,
            killed: false,
            hung_up: false,
            logs: super::inbox::LogBudget::new(now),
            output,
            calls: std::collections::HashMap::new(),
            unshared,
            on_line,
        });
        entry.starts += 1;
        entry.restart_when_gone = false;
        let restarts = entry.starts - 1;
        info!(self.logger, "worker started"; "worker" => &name, "pid" => pid.as_raw());
        self.emit(WorkerStarted {
            worker: name,
            pid: pid.as_raw(),
            restarts,
        });
        Ok(())
    }
}
